/* kiln — ONNX export (library kiln_export): lowering a trained model to the graph IR
 * and the one ONNX writer, and importing a kiln-written .onnx back into a trainable
 * model. */
#ifndef KILN_EXPORT_H
#define KILN_EXPORT_H

#include <stddef.h>
#include <stdint.h>

#include "kiln/ir.h"
#include "kiln/status.h"
#include "kiln/train.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct kiln_export_options {
  int opset;               /* 13 (default) or 17 */
  int dense_as_matmul;     /* 0: Dense -> Gemm (default); 1: MatMul + Add */
  const char *const *class_names; /* metadata "class_names" (may be NULL) */
  int n_class_names;
  const float *input_mean; /* metadata "input_mean"/"input_std": standardization the */
  const float *input_std;  /* caller must apply before running (may be NULL) */
  int64_t n_input_stats;
} kiln_export_options;

void kiln_export_options_init(kiln_export_options *opt);

/* Lowers m to a new graph (free with kiln_ir_free): graph inputs and outputs named
 * after the model's, a symbolic batch dim "batch", producer "kiln", metadata_props
 * with the loss, metrics and whatever the options give. Dropout disappears; a custom
 * layer becomes the nodes its class's lower hook emits (KILN_E_UNSUPPORTED naming the
 * layer and its class when it has none). */
kiln_status kiln_model_lower(const kiln_model *m, const kiln_export_options *opt,
                             kiln_ir_graph **out, kiln_error *err);

/* --- lowering a custom layer (kiln_layer_class.lower) ---------------------------
 * kiln_model_lower hands a custom layer's lower hook a kiln_layer_lowering (valid
 * only during the call) through which it adds standard ONNX nodes to the graph being
 * built. Names it adds are made unique and prefixed with the layer's name; the graph
 * copies everything it is given. After the hook returns, export checks that some added
 * node writes `output` and that no added node writes a name the graph already has; a
 * failing hook's message comes back prefixed with the layer and its class. */

/* The ONNX opset being written (13 or 17: e.g. ReduceMean takes its axes as an
 * attribute up to opset 17, as an input from 18). */
int kiln_lowering_opset(const kiln_layer_lowering *lw);
/* The layer's name (every name the builder makes starts with "<name>/"). */
const char *kiln_lowering_layer_name(const kiln_layer_lowering *lw);
/* A value name no one uses yet, "<layer>/<hint>" (then "_1", "_2", ...), into out
 * (cap bytes, 320 is always enough for a 63-character layer name and hint). */
kiln_status kiln_lowering_fresh_name(kiln_layer_lowering *lw, const char *hint, char *out,
                                     size_t cap, kiln_error *err);
/* Adds an initializer holding a copy of data (numel * dtype size bytes) under a fresh
 * name made from hint, returned in name (cap bytes). */
kiln_status kiln_lowering_add_initializer(kiln_layer_lowering *lw, const char *hint,
                                          kiln_dtype dtype, const int64_t *dims, int rank,
                                          const void *data, char *name, size_t cap,
                                          kiln_error *err);
/* Adds a node of the default ONNX domain, named "<layer>/<op_type>" (made unique).
 * inputs are value names (the hook's input, initializers, earlier nodes' outputs);
 * outputs fresh names or the hook's output. *out (may be NULL) is the node, for
 * kiln_ir_node_set_* attributes, valid until the next node is added. */
kiln_status kiln_lowering_add_node(kiln_layer_lowering *lw, const char *op_type,
                                   const char *const *inputs, int n_inputs,
                                   const char *const *outputs, int n_outputs,
                                   kiln_ir_node **out, kiln_error *err);

/* Serializes g as an ONNX ModelProto: to a file (atomically: temporary + rename) or
 * to a malloc'd buffer the caller frees. */
kiln_status kiln_onnx_write_file(const kiln_ir_graph *g, const char *path, kiln_error *err);
kiln_status kiln_onnx_write_buffer(const kiln_ir_graph *g, void **data, size_t *size,
                                   kiln_error *err);

/* lower + write. */
kiln_status kiln_model_export(const kiln_model *m, const kiln_export_options *opt,
                              const char *path, kiln_error *err);

/* Rebuilds a trainable model from a graph kiln exported (fine-tuning, resuming);
 * anything else is KILN_E_UNSUPPORTED naming the node that does not fit. The model
 * is compiled with the loss recorded in the metadata when there is one. */
kiln_status kiln_model_from_ir(const kiln_ir_graph *g, uint64_t seed, kiln_model **out,
                               kiln_error *err);

#ifdef __cplusplus
}
#endif
#endif

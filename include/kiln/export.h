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
 * with the loss, metrics and whatever the options give. Dropout disappears. */
kiln_status kiln_model_lower(const kiln_model *m, const kiln_export_options *opt,
                             kiln_ir_graph **out, kiln_error *err);

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

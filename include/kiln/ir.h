/* kiln — the graph IR: the one in-memory form of a model that the ONNX reader
 * (infer/), the writer (export/), the quantizer and the runtime all share.
 *
 * It mirrors ONNX's GraphProto closely: nodes carry ONNX op types, domains and
 * attributes; values are named edges; initializers are tensors with raw
 * little-endian data; graph inputs and outputs have a dtype and dims, where a dim
 * is either a size or a symbolic name ("batch").
 *
 * Ownership: a graph owns every string, array and tensor in it; the builder calls
 * copy what they are given. Free with kiln_ir_free. A graph is not thread-safe
 * to modify; read-only use from several threads is fine. */
#ifndef KILN_IR_H
#define KILN_IR_H

#include <stddef.h>
#include <stdint.h>

#include "kiln/status.h"

#ifdef __cplusplus
extern "C" {
#endif

#define KILN_IR_MAX_RANK 8

/* Element types, numbered as ONNX's TensorProto.DataType. */
typedef enum kiln_dtype {
  KILN_DTYPE_UNDEFINED = 0,
  KILN_DTYPE_FLOAT = 1,
  KILN_DTYPE_UINT8 = 2,
  KILN_DTYPE_INT8 = 3,
  KILN_DTYPE_INT32 = 6,
  KILN_DTYPE_INT64 = 7,
  KILN_DTYPE_BOOL = 9,
  KILN_DTYPE_DOUBLE = 11
} kiln_dtype;

/* Bytes of one element (0 for an unknown dtype). */
size_t kiln_dtype_size(kiln_dtype t);
const char *kiln_dtype_name(kiln_dtype t);

/* A dimension: value >= 0 is a fixed size; value < 0 is unknown, named by param
 * when symbolic (NULL otherwise). */
typedef struct kiln_ir_dim {
  int64_t value;
  char *param;
} kiln_ir_dim;

/* A named tensor with its data: an initializer, or an attribute's value. */
typedef struct kiln_ir_tensor {
  char *name;
  kiln_dtype dtype;
  int rank;
  int64_t dims[KILN_IR_MAX_RANK];
  void *data;   /* numel * kiln_dtype_size(dtype) bytes, little-endian */
  size_t bytes;
} kiln_ir_tensor;

/* Elements of a tensor (product of dims; 1 for rank 0). */
int64_t kiln_ir_tensor_numel(const kiln_ir_tensor *t);

/* A graph input or output. */
typedef struct kiln_ir_value {
  char *name;
  kiln_dtype dtype;
  int rank; /* -1: unknown rank */
  kiln_ir_dim dims[KILN_IR_MAX_RANK];
} kiln_ir_value;

typedef enum kiln_attr_type {
  KILN_ATTR_FLOAT = 1,
  KILN_ATTR_INT = 2,
  KILN_ATTR_STRING = 3,
  KILN_ATTR_TENSOR = 4,
  KILN_ATTR_FLOATS = 6,
  KILN_ATTR_INTS = 7,
  KILN_ATTR_STRINGS = 8
} kiln_attr_type; /* numbered as ONNX's AttributeProto.AttributeType */

typedef struct kiln_ir_attr {
  char *name;
  kiln_attr_type type;
  float f;
  int64_t i;
  char *s;
  kiln_ir_tensor *t;
  int n;           /* count of floats / ints / strings */
  float *floats;
  int64_t *ints;
  char **strings;
} kiln_ir_attr;

typedef struct kiln_ir_node {
  char *name;
  char *op_type;
  char *domain; /* "" for the default ONNX domain */
  int n_inputs;
  char **inputs; /* "" marks an omitted optional input */
  int n_outputs;
  char **outputs;
  int n_attrs;
  kiln_ir_attr *attrs;
} kiln_ir_node;

typedef struct kiln_ir_opset {
  char *domain;
  int64_t version;
} kiln_ir_opset;

typedef struct kiln_ir_meta {
  char *key;
  char *value;
} kiln_ir_meta;

typedef struct kiln_ir_graph {
  char *name;
  int64_t ir_version;
  char *producer_name;
  char *producer_version;
  int n_opsets;
  kiln_ir_opset *opsets;
  int n_nodes;
  kiln_ir_node *nodes;       /* in the order given; see kiln_ir_toposort */
  int n_initializers;
  kiln_ir_tensor *initializers;
  int n_inputs;
  kiln_ir_value *inputs;     /* graph inputs that are not initializers */
  int n_outputs;
  kiln_ir_value *outputs;
  int n_meta;
  kiln_ir_meta *meta;        /* ONNX metadata_props */
  /* capacities, managed by the builder calls */
  int cap_nodes, cap_initializers, cap_inputs, cap_outputs, cap_meta, cap_opsets;
} kiln_ir_graph;

/* --- building ---------------------------------------------------------------- */

kiln_status kiln_ir_create(const char *name, kiln_ir_graph **out, kiln_error *err);
void kiln_ir_free(kiln_ir_graph *g);

/* Sets the version of an operator set ("" = the default ONNX domain). */
kiln_status kiln_ir_set_opset(kiln_ir_graph *g, const char *domain, int64_t version,
                              kiln_error *err);
/* The version of domain's opset, or 0 when the graph does not import it. */
int64_t kiln_ir_opset_version(const kiln_ir_graph *g, const char *domain);

/* Adds a node; returns it in *out (valid until the next node is added). */
kiln_status kiln_ir_add_node(kiln_ir_graph *g, const char *op_type, const char *name,
                             const char *const *inputs, int n_inputs,
                             const char *const *outputs, int n_outputs, kiln_ir_node **out,
                             kiln_error *err);
kiln_status kiln_ir_node_set_int(kiln_ir_node *n, const char *name, int64_t v, kiln_error *err);
kiln_status kiln_ir_node_set_float(kiln_ir_node *n, const char *name, float v, kiln_error *err);
kiln_status kiln_ir_node_set_ints(kiln_ir_node *n, const char *name, const int64_t *v, int count,
                                  kiln_error *err);
kiln_status kiln_ir_node_set_string(kiln_ir_node *n, const char *name, const char *v,
                                    kiln_error *err);

/* More attribute kinds (the ONNX reader needs every one the IR holds). Each copies
 * what it is given; set_tensor copies numel * dtype size bytes of data. */
kiln_status kiln_ir_node_set_floats(kiln_ir_node *n, const char *name, const float *v, int count,
                                    kiln_error *err);
kiln_status kiln_ir_node_set_strings(kiln_ir_node *n, const char *name, const char *const *v,
                                     int count, kiln_error *err);
kiln_status kiln_ir_node_set_tensor(kiln_ir_node *n, const char *name, kiln_dtype dtype,
                                    const int64_t *dims, int rank, const void *data,
                                    kiln_error *err);
/* Sets the node's operator domain ("" = the default ONNX domain). */
kiln_status kiln_ir_node_set_domain(kiln_ir_node *n, const char *domain, kiln_error *err);

/* Adds an initializer holding a copy of data (numel * dtype size bytes). */
kiln_status kiln_ir_add_initializer(kiln_ir_graph *g, const char *name, kiln_dtype dtype,
                                    const int64_t *dims, int rank, const void *data,
                                    kiln_error *err);
/* Adds a graph input or output. A dim < 0 is symbolic, named by params[i] (may be NULL). */
kiln_status kiln_ir_add_input(kiln_ir_graph *g, const char *name, kiln_dtype dtype,
                              const int64_t *dims, const char *const *params, int rank,
                              kiln_error *err);
kiln_status kiln_ir_add_output(kiln_ir_graph *g, const char *name, kiln_dtype dtype,
                               const int64_t *dims, const char *const *params, int rank,
                               kiln_error *err);
/* Sets (or replaces) a metadata_props entry. */
kiln_status kiln_ir_set_meta(kiln_ir_graph *g, const char *key, const char *value,
                             kiln_error *err);
kiln_status kiln_ir_set_producer(kiln_ir_graph *g, const char *name, const char *version,
                                 kiln_error *err);

/* --- reading ----------------------------------------------------------------- */

const kiln_ir_tensor *kiln_ir_find_initializer(const kiln_ir_graph *g, const char *name);
const kiln_ir_attr *kiln_ir_node_attr(const kiln_ir_node *n, const char *name);
const char *kiln_ir_get_meta(const kiln_ir_graph *g, const char *key); /* NULL if absent */

/* The input standardization a kiln-exported model records (metadata kiln.input_mean and
 * kiln.input_std: JSON arrays of `features` numbers; x' = (x - mean) / std). On success
 * *mean and *std are malloc'd arrays the caller frees (a std of 0 becomes 1), or both
 * NULL when the model records none. Malformed metadata is KILN_E_FORMAT. */
kiln_status kiln_ir_input_standardization(const kiln_ir_graph *g, int64_t features, float **mean,
                                          float **std, kiln_error *err);

/* Orders the nodes so every node follows the producers of its inputs. Fails with a
 * message naming a node when an input is produced nowhere (a dangling edge) or the
 * nodes form a cycle. */
kiln_status kiln_ir_toposort(kiln_ir_graph *g, kiln_error *err);

#ifdef __cplusplus
}
#endif
#endif

/* kiln command — shapes of a .onnx's values: a small propagation over the ops kiln
 * writes and reads (for `kiln inspect` and `kiln plot-model`). */
#ifndef KILN_TOOLS_ONNX_SHAPES_H
#define KILN_TOOLS_ONNX_SHAPES_H

#include <stddef.h>
#include <stdint.h>

#include "kiln/ir.h"

typedef struct shape {
  int known;
  int rank;
  int64_t dims[KILN_IR_MAX_RANK]; /* < 0: symbolic */
  const char *params[KILN_IR_MAX_RANK];
} shape;

typedef struct shape_table {
  int n, cap;
  const char **names;
  shape *shapes;
} shape_table;

/* The shape of a named value, NULL when the table has none (names are borrowed). */
shape *shape_lookup(shape_table *t, const char *name);
/* Sets a value's shape; 0 ok, -1 out of memory. Free the table's two arrays. */
int shape_put(shape_table *t, const char *name, const shape *s);
shape shape_from_value(const kiln_ir_value *v);
/* The shape of the node's (first) output from its inputs' shapes in t; unknown
 * (known == 0) for ops it does not model. */
shape shape_infer_node(const kiln_ir_node *n, shape_table *t);
/* "[batch, 64]", symbolic dims by name ("?" unnamed), "?" for an unknown shape. */
void shape_format(const shape *s, char *buf, size_t cap);

#endif

/* kiln quantize — helpers shared by the passes (private to quantize/). */
#ifndef KILN_QUANTIZE_INTERNAL_H
#define KILN_QUANTIZE_INTERNAL_H

#include "kiln/ir.h"
#include "kiln/quantize.h"

/* A deep copy of g's header (name, producer, opsets, meta, inputs, outputs). Nodes
 * and initializers are copied when the flags say so. */
kiln_status qz_clone(const kiln_ir_graph *g, int nodes, int initializers, kiln_ir_graph **out,
                     kiln_error *err);
/* Adds a copy of node n to g, with its inputs replaced by `inputs` when not NULL. */
kiln_status qz_copy_node(kiln_ir_graph *g, const kiln_ir_node *n, const char *const *inputs,
                         kiln_error *err);
/* Moves the contents of *src into *dst (freeing dst's old contents) and frees src. */
void qz_replace(kiln_ir_graph *dst, kiln_ir_graph *src);
/* The index of the node producing `name`, or -1. */
int qz_producer(const kiln_ir_graph *g, const char *name);
/* How many node inputs read `name`; *last: one of them (or -1). Graph outputs not counted. */
int qz_consumers(const kiln_ir_graph *g, const char *name, int *last);
int qz_is_output(const kiln_ir_graph *g, const char *name);
int qz_op(const kiln_ir_node *n, const char *op);
int64_t qz_attr_int(const kiln_ir_node *n, const char *name, int64_t dflt);
float qz_attr_float(const kiln_ir_node *n, const char *name, float dflt);
/* The float rank-2 weight initializer of a Gemm/MatMul node (input 1), or NULL. */
const kiln_ir_tensor *qz_weight(const kiln_ir_graph *g, const kiln_ir_node *n);

#endif

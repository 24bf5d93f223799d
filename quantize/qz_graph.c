/* kiln quantize — graph copying and queries shared by the passes. */
#include <stdlib.h>
#include <string.h>

#include "qz_internal.h"

static kiln_status copy_value(kiln_ir_graph *g, const kiln_ir_value *v, int output,
                              kiln_error *err) {
  int64_t dims[KILN_IR_MAX_RANK];
  const char *params[KILN_IR_MAX_RANK];
  int rank = v->rank < 0 ? -1 : v->rank;
  for (int i = 0; i < rank; i++) {
    dims[i] = v->dims[i].value;
    params[i] = v->dims[i].param;
  }
  return output ? kiln_ir_add_output(g, v->name, v->dtype, dims, params, rank, err)
                : kiln_ir_add_input(g, v->name, v->dtype, dims, params, rank, err);
}

kiln_status qz_copy_node(kiln_ir_graph *g, const kiln_ir_node *n, const char *const *inputs,
                         kiln_error *err) {
  kiln_ir_node *c = NULL;
  kiln_status s = kiln_ir_add_node(g, n->op_type, n->name,
                                   inputs ? inputs : (const char *const *)n->inputs, n->n_inputs,
                                   (const char *const *)n->outputs, n->n_outputs, &c, err);
  if (s) return s;
  if (n->domain && n->domain[0] && (s = kiln_ir_node_set_domain(c, n->domain, err))) return s;
  for (int i = 0; i < n->n_attrs; i++) {
    const kiln_ir_attr *a = &n->attrs[i];
    switch (a->type) {
      case KILN_ATTR_FLOAT: s = kiln_ir_node_set_float(c, a->name, a->f, err); break;
      case KILN_ATTR_INT: s = kiln_ir_node_set_int(c, a->name, a->i, err); break;
      case KILN_ATTR_STRING: s = kiln_ir_node_set_string(c, a->name, a->s, err); break;
      case KILN_ATTR_TENSOR:
        s = kiln_ir_node_set_tensor(c, a->name, a->t->dtype, a->t->dims, a->t->rank, a->t->data,
                                    err);
        break;
      case KILN_ATTR_FLOATS: s = kiln_ir_node_set_floats(c, a->name, a->floats, a->n, err); break;
      case KILN_ATTR_INTS: s = kiln_ir_node_set_ints(c, a->name, a->ints, a->n, err); break;
      case KILN_ATTR_STRINGS:
        s = kiln_ir_node_set_strings(c, a->name, (const char *const *)a->strings, a->n, err);
        break;
      default:
        return kiln_error_set(err, KILN_E_UNSUPPORTED, "node \"%s\": attribute \"%s\" of type %d",
                              n->name, a->name, (int)a->type);
    }
    if (s) return s;
  }
  return KILN_OK;
}

kiln_status qz_clone(const kiln_ir_graph *g, int nodes, int initializers, kiln_ir_graph **out,
                     kiln_error *err) {
  kiln_ir_graph *c = NULL;
  kiln_status s = kiln_ir_create(g->name ? g->name : "graph", &c, err);
  if (s) return s;
  c->ir_version = g->ir_version;
  if (g->producer_name && (s = kiln_ir_set_producer(c, g->producer_name,
                                                    g->producer_version ? g->producer_version : "",
                                                    err)))
    goto fail;
  for (int i = 0; i < g->n_opsets; i++)
    if ((s = kiln_ir_set_opset(c, g->opsets[i].domain, g->opsets[i].version, err))) goto fail;
  for (int i = 0; i < g->n_meta; i++)
    if ((s = kiln_ir_set_meta(c, g->meta[i].key, g->meta[i].value, err))) goto fail;
  for (int i = 0; i < g->n_inputs; i++)
    if ((s = copy_value(c, &g->inputs[i], 0, err))) goto fail;
  for (int i = 0; i < g->n_outputs; i++)
    if ((s = copy_value(c, &g->outputs[i], 1, err))) goto fail;
  if (nodes)
    for (int i = 0; i < g->n_nodes; i++)
      if ((s = qz_copy_node(c, &g->nodes[i], NULL, err))) goto fail;
  if (initializers)
    for (int i = 0; i < g->n_initializers; i++) {
      const kiln_ir_tensor *t = &g->initializers[i];
      if ((s = kiln_ir_add_initializer(c, t->name, t->dtype, t->dims, t->rank, t->data, err)))
        goto fail;
    }
  *out = c;
  return KILN_OK;
fail:
  kiln_ir_free(c);
  return s;
}

void qz_replace(kiln_ir_graph *dst, kiln_ir_graph *src) {
  kiln_ir_graph tmp = *dst;
  *dst = *src;
  *src = tmp;
  kiln_ir_free(src);
}

int qz_producer(const kiln_ir_graph *g, const char *name) {
  for (int i = 0; i < g->n_nodes; i++)
    for (int k = 0; k < g->nodes[i].n_outputs; k++)
      if (strcmp(g->nodes[i].outputs[k], name) == 0) return i;
  return -1;
}

int qz_consumers(const kiln_ir_graph *g, const char *name, int *last) {
  int c = 0;
  if (last) *last = -1;
  for (int i = 0; i < g->n_nodes; i++)
    for (int k = 0; k < g->nodes[i].n_inputs; k++)
      if (strcmp(g->nodes[i].inputs[k], name) == 0) {
        c++;
        if (last) *last = i;
      }
  return c;
}

int qz_is_output(const kiln_ir_graph *g, const char *name) {
  for (int i = 0; i < g->n_outputs; i++)
    if (strcmp(g->outputs[i].name, name) == 0) return 1;
  return 0;
}

int qz_op(const kiln_ir_node *n, const char *op) {
  return (!n->domain || !n->domain[0] || strcmp(n->domain, "ai.onnx") == 0) &&
         strcmp(n->op_type, op) == 0;
}

int64_t qz_attr_int(const kiln_ir_node *n, const char *name, int64_t dflt) {
  const kiln_ir_attr *a = kiln_ir_node_attr(n, name);
  return a && a->type == KILN_ATTR_INT ? a->i : dflt;
}

float qz_attr_float(const kiln_ir_node *n, const char *name, float dflt) {
  const kiln_ir_attr *a = kiln_ir_node_attr(n, name);
  return a && a->type == KILN_ATTR_FLOAT ? a->f : dflt;
}

const kiln_ir_tensor *qz_weight(const kiln_ir_graph *g, const kiln_ir_node *n) {
  if (!(qz_op(n, "Gemm") || qz_op(n, "MatMul")) || n->n_inputs < 2) return NULL;
  const kiln_ir_tensor *w = kiln_ir_find_initializer(g, n->inputs[1]);
  if (!w || w->dtype != KILN_DTYPE_FLOAT || w->rank != 2) return NULL;
  return w;
}

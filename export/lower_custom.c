/* kiln export — lowering a custom layer through its class's lower hook, and the small
 * builder (kiln_lowering_*, kiln/export.h) the hook writes with. */
#include <stdio.h>
#include <string.h>

#include "lower_internal.h"

struct kiln_layer_lowering {
  kiln_ir_graph *g;
  const char *layer;
  int opset;
  int first_node; /* the nodes this layer added are g->nodes[first_node..] */
};

int kiln_lowering_opset(const kiln_layer_lowering *lw) { return lw ? lw->opset : 0; }

const char *kiln_lowering_layer_name(const kiln_layer_lowering *lw) {
  return lw ? lw->layer : NULL;
}

/* Whether some node (name or output), initializer or graph input is called name. */
static int name_taken(const kiln_ir_graph *g, const char *name) {
  for (int i = 0; i < g->n_nodes; i++) {
    if (strcmp(g->nodes[i].name, name) == 0) return 1;
    for (int k = 0; k < g->nodes[i].n_outputs; k++)
      if (strcmp(g->nodes[i].outputs[k], name) == 0) return 1;
  }
  for (int i = 0; i < g->n_initializers; i++)
    if (strcmp(g->initializers[i].name, name) == 0) return 1;
  for (int i = 0; i < g->n_inputs; i++)
    if (strcmp(g->inputs[i].name, name) == 0) return 1;
  return 0;
}

kiln_status kiln_lowering_fresh_name(kiln_layer_lowering *lw, const char *hint, char *out,
                                     size_t cap, kiln_error *err) {
  if (!lw || !hint || !*hint || !out)
    return kiln_error_set(err, KILN_E_INVALID, "lowering: fresh_name needs a builder, a hint "
                                               "and a buffer");
  for (int k = 0; k < 10000; k++) {
    int n = k ? snprintf(out, cap, "%s/%s_%d", lw->layer, hint, k)
              : snprintf(out, cap, "%s/%s", lw->layer, hint);
    if (n < 0 || (size_t)n >= cap)
      return kiln_error_set(err, KILN_E_INVALID,
                            "lowering: the name \"%s/%s\" does not fit in %zu bytes", lw->layer,
                            hint, cap);
    if (!name_taken(lw->g, out)) return KILN_OK;
  }
  return kiln_error_set(err, KILN_E_INVALID, "lowering: no free name for \"%s/%s\"", lw->layer,
                        hint);
}

kiln_status kiln_lowering_add_initializer(kiln_layer_lowering *lw, const char *hint,
                                          kiln_dtype dtype, const int64_t *dims, int rank,
                                          const void *data, char *name, size_t cap,
                                          kiln_error *err) {
  kiln_status s = kiln_lowering_fresh_name(lw, hint, name, cap, err);
  if (s) return s;
  return kiln_ir_add_initializer(lw->g, name, dtype, dims, rank, data, err);
}

kiln_status kiln_lowering_add_node(kiln_layer_lowering *lw, const char *op_type,
                                   const char *const *inputs, int n_inputs,
                                   const char *const *outputs, int n_outputs,
                                   kiln_ir_node **out, kiln_error *err) {
  if (!lw || !op_type || !*op_type)
    return kiln_error_set(err, KILN_E_INVALID, "lowering: add_node needs a builder and an op");
  char name[320];
  kiln_status s = kiln_lowering_fresh_name(lw, op_type, name, sizeof name, err);
  if (s) return s;
  for (int k = 0; k < n_outputs; k++)
    if (!outputs[k] || name_taken(lw->g, outputs[k]))
      return kiln_error_set(err, KILN_E_INVALID,
                            "lowering: %s node output %d (\"%s\") is already a value of the "
                            "graph (use kiln_lowering_fresh_name)",
                            op_type, k, outputs[k] ? outputs[k] : "(null)");
  return kiln_ir_add_node(lw->g, op_type, name, inputs, n_inputs, outputs, n_outputs, out, err);
}

kiln_status kiln_lower_custom_layer(kiln_ir_graph *g, const kiln_model *m, kiln_node node,
                                    const kiln_layer_info *l, const char *input, int opset,
                                    kiln_error *err) {
  const kiln_layer_class *cls = kiln_model_layer_class(m, node);
  const char *type = cls && cls->type ? cls->type : "?";
  if (!cls || !cls->lower)
    return kiln_error_set(err, KILN_E_UNSUPPORTED,
                          "lower: layer '%s' is a custom layer (class \"%s\") whose class has no "
                          "lower hook, so it has no ONNX form; give kiln_layer_class.lower, "
                          "export a model without it (kiln_model_from_layers) or replace it "
                          "with built-in layers",
                          l->name, type);
  const float *w[KILN_LAYER_MAX_WEIGHTS] = {0};
  int nw = kiln_model_weight_count(m, node);
  for (int i = 0; i < nw && i < KILN_LAYER_MAX_WEIGHTS; i++) {
    kiln_weight_info wi;
    kiln_status s = kiln_model_weight(m, node, i, &wi, err);
    if (s) return s;
    w[i] = wi.value;
  }
  kiln_layer_lowering lw = {g, l->name, opset, g->n_nodes};
  kiln_status s = cls->lower(kiln_model_layer_ctx(m, node), &lw, w, l->in_features,
                             l->out_features, input, l->name, err);
  if (s) {
    kiln_error_prefix(err, "lower: layer '%s' (class \"%s\")", l->name, type);
    return s;
  }
  for (int i = lw.first_node; i < g->n_nodes; i++)
    for (int k = 0; k < g->nodes[i].n_outputs; k++)
      if (strcmp(g->nodes[i].outputs[k], l->name) == 0) return KILN_OK;
  return kiln_error_set(err, KILN_E_INVALID,
                        "lower: layer '%s' (class \"%s\"): its lower hook added %d node%s but "
                        "none writes the layer's output \"%s\"",
                        l->name, type, g->n_nodes - lw.first_node,
                        g->n_nodes - lw.first_node == 1 ? "" : "s", l->name);
}

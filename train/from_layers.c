/* kiln trainer — a model made of part of another's graph, sharing its weights. */
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "custom_layer.h"
#include "model_internal.h"

kiln_status kiln_model_from_layers(const kiln_model *src, const kiln_node *inputs, int n_inputs,
                                   const kiln_node *outputs, int n_outputs, kiln_model **out,
                                   kiln_error *err) {
  const char *what = "from_layers";
  if (!inputs || n_inputs < 1 || n_inputs > KILN_MAX_IO || !outputs || n_outputs < 1 ||
      n_outputs > KILN_MAX_IO)
    return kiln_error_set(err, KILN_E_INVALID, "%s: needs 1 to %d inputs and outputs, got %d and %d",
                          what, KILN_MAX_IO, inputs ? n_inputs : 0, outputs ? n_outputs : 0);
  kiln_status s;
  for (int i = 0; i < n_inputs; i++) {
    if ((s = kiln_model_check_input_node(src, inputs[i], what, err))) return s;
    if (src->layers[inputs[i]].kind != KILN_LAYER_INPUT)
      return kiln_error_set(err, KILN_E_INVALID,
                            "%s: inputs[%d] is layer \"%s\", not an Input layer of the model", what,
                            i, src->layers[inputs[i]].name);
    for (int j = 0; j < i; j++)
      if (inputs[j] == inputs[i])
        return kiln_error_set(err, KILN_E_INVALID, "%s: input \"%s\" is given twice", what,
                              src->layers[inputs[i]].name);
  }
  for (int k = 0; k < n_outputs; k++) {
    if ((s = kiln_model_check_input_node(src, outputs[k], what, err))) return s;
    for (int j = 0; j < k; j++)
      if (outputs[j] == outputs[k])
        return kiln_error_set(err, KILN_E_INVALID, "%s: output \"%s\" is given twice", what,
                              src->layers[outputs[k]].name);
  }
  /* The layers the outputs need (and the inputs, used or not), in src's order. */
  int *map = malloc((size_t)src->n_layers * sizeof *map);
  if (!map) return kiln_error_set(err, KILN_E_NOMEM, "%s: out of memory", what);
  for (int i = 0; i < src->n_layers; i++) map[i] = -2;
  for (int k = 0; k < n_outputs; k++) map[outputs[k]] = -1;
  for (int i = 0; i < n_inputs; i++) map[inputs[i]] = -1;
  for (int i = src->n_layers - 1; i >= 0; i--)
    if (map[i] == -1)
      for (int j = 0; j < src->layers[i].n_inputs; j++) map[src->layers[i].inputs[j]] = -1;
  for (int i = 0; i < src->n_layers; i++) {
    if (map[i] != -1 || src->layers[i].kind != KILN_LAYER_INPUT) continue;
    int listed = 0;
    for (int j = 0; j < n_inputs; j++) listed |= inputs[j] == i;
    if (!listed) {
      free(map);
      return kiln_error_set(err, KILN_E_INVALID,
                            "%s: the outputs depend on Input \"%s\", which is not among the "
                            "inputs given", what, src->layers[i].name);
    }
  }
  kiln_model *m;
  if ((s = kiln_model_create(src->seed, &m, err))) {
    free(map);
    return s;
  }
  /* New layers continue src's weight stream rather than repeat it. */
  m->init_rng = src->init_rng;
  m->shuffle_rng = src->shuffle_rng;
  m->dropout_rng = src->dropout_rng;
  int n = 0;
  for (int i = 0; i < src->n_layers; i++) n += map[i] == -1;
  m->layers = calloc((size_t)n, sizeof *m->layers);
  if (!m->layers) {
    free(map);
    kiln_model_free(m);
    return kiln_error_set(err, KILN_E_NOMEM, "%s: out of memory", what);
  }
  m->cap_layers = n;
  for (int i = 0; i < src->n_layers; i++) {
    if (map[i] != -1) continue;
    const kiln_layer *from = &src->layers[i];
    kiln_layer *l = &m->layers[m->n_layers];
    memset(l, 0, sizeof *l);
    l->kind = from->kind;
    memcpy(l->name, from->name, sizeof l->name);
    l->n_inputs = from->n_inputs;
    for (int j = 0; j < from->n_inputs; j++) l->inputs[j] = map[from->inputs[j]];
    l->in_features = from->in_features;
    l->out_features = from->out_features;
    l->activation = from->activation;
    l->initializer = from->initializer;
    l->init_constant = from->init_constant;
    l->reg = from->reg;
    l->rate = from->rate;
    if (from->weights) {
      size_t nk = (size_t)(from->in_features * from->out_features);
      l->grad_kernel = malloc(nk * sizeof(float));
      l->grad_bias = calloc((size_t)from->out_features, sizeof(float));
      if (!l->grad_kernel || !l->grad_bias) {
        free(l->grad_kernel);
        free(l->grad_bias);
        memset(l, 0, sizeof *l);
        free(map);
        kiln_model_free(m);
        return kiln_error_set(err, KILN_E_NOMEM, "%s: out of memory", what);
      }
      l->weights = from->weights;
      l->weights->refs++;
      l->kernel = from->kernel;
      l->bias = from->bias;
    }
    if (from->custom) { /* shared as Dense weights are: class, ctx and weights */
      l->custom = from->custom;
      kiln_custom_retain(l->custom);
    }
    map[i] = m->n_layers++;
  }
  m->last = m->n_layers - 1;
  for (int i = 0; i < n_inputs; i++) m->inputs[i] = map[inputs[i]];
  m->n_inputs = n_inputs;
  for (int k = 0; k < n_outputs; k++) m->outputs[k] = map[outputs[k]];
  m->n_outputs = n_outputs;
  free(map);
  *out = m;
  return KILN_OK;
}

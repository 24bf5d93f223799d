/* kiln trainer — Keras' model.summary(), Sequential and functional forms. */
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "custom_layer.h"
#include "model_internal.h"

static void rule(FILE *out, char c) {
  for (int i = 0; i < 65; i++) fputc(c, out);
  fputc('\n', out);
}

static void print_count(FILE *out, const char *label, int64_t n) {
  double bytes = (double)n * 4.0;
  const char *unit = "B";
  if (bytes >= 1024.0 * 1024.0) { bytes /= 1024.0 * 1024.0; unit = "MB"; }
  else if (bytes >= 1024.0) { bytes /= 1024.0; unit = "KB"; }
  fprintf(out, "%s: %lld (%.2f %s)\n", label, (long long)n, bytes, unit);
}

/* A Sequential stack: one Input, each layer fed by the one before, the last the output. */
static int is_chain(const kiln_model *m) {
  if (m->n_layers == 0 || m->layers[0].kind != KILN_LAYER_INPUT) return 1;
  for (int i = 1; i < m->n_layers; i++)
    if (m->layers[i].n_inputs != 1 || m->layers[i].inputs[0] != i - 1) return 0;
  kiln_node outs[KILN_MAX_IO];
  int n = kiln_model_resolve_outputs(m, outs);
  return n == 1 && outs[0] == m->n_layers - 1 && kiln_model_input_count(m) == 1;
}

static int64_t layer_params(const kiln_layer *l) {
  return l->kind == KILN_LAYER_DENSE ? l->in_features * l->out_features + l->out_features
                                     : kiln_custom_param_count(l->custom);
}

/* "Dense", ..., or a custom layer's class type. */
static const char *layer_type(const kiln_layer *l) {
  return l->custom ? l->custom->cls->type : kiln_layer_kind_name(l->kind);
}

/* Keras' functional summary: a "Connected to" column naming each input as
 * "<layer>[0][0]" (one call per layer: node and tensor indices are always 0). */
static void summary_functional(const kiln_model *m, FILE *out) {
  int w = 30;
  for (int i = 0; i < m->n_layers; i++) {
    int n = (int)strlen(m->layers[i].name) + (int)strlen(layer_type(&m->layers[i])) + 4;
    w = n > w ? n : w;
  }
  int width = w + 1 + 18 + 1 + 11 + 2 + 40;
  fprintf(out, "Model: \"functional\"\n");
  for (int i = 0; i < width; i++) fputc('=', out);
  fprintf(out, "\n%-*s %-18s %11s  %s\n", w, "Layer (type)", "Output Shape", "Param #",
          "Connected to");
  for (int i = 0; i < width; i++) fputc('=', out);
  fputc('\n', out);
  int64_t total = 0;
  for (int i = 0; i < m->n_layers; i++) {
    const kiln_layer *l = &m->layers[i];
    char left[KILN_NAME_MAX + 32], shape[32];
    snprintf(left, sizeof left, "%s (%s)", l->name, layer_type(l));
    snprintf(shape, sizeof shape, "(None, %lld)", (long long)l->out_features);
    int64_t p = layer_params(l);
    total += p;
    fprintf(out, "%-*s %-18s %11lld  ", w, left, shape, (long long)p);
    if (l->n_inputs == 0) fputc('-', out);
    for (int j = 0; j < l->n_inputs; j++)
      fprintf(out, "%s%s[0][0]", j ? ", " : "", m->layers[l->inputs[j]].name);
    fputc('\n', out);
  }
  for (int i = 0; i < width; i++) fputc('=', out);
  fputc('\n', out);
  print_count(out, " Total params", total);
  print_count(out, " Trainable params", total);
  print_count(out, " Non-trainable params", 0);
}

void kiln_model_summary(const kiln_model *m, FILE *out) {
  if (!is_chain(m)) {
    summary_functional(m, out);
    return;
  }
  fprintf(out, "Model: \"%s\"\n", m->n_layers && m->layers[0].kind == KILN_LAYER_INPUT &&
                                       m->layers[0].n_inputs == 0 ? "sequential" : "model");
  rule(out, '=');
  fprintf(out, "%-34s %-18s %11s\n", "Layer (type)", "Output Shape", "Param #");
  rule(out, '=');
  int64_t trainable = 0;
  for (int i = 0; i < m->n_layers; i++) {
    const kiln_layer *l = &m->layers[i];
    char left[96], shape[32];
    snprintf(left, sizeof left, "%s (%s)", l->name, layer_type(l));
    snprintf(shape, sizeof shape, "(None, %lld)", (long long)l->out_features);
    int64_t p = layer_params(l);
    trainable += p;
    fprintf(out, "%-34s %-18s %11lld\n", left, shape, (long long)p);
  }
  rule(out, '=');
  print_count(out, " Total params", trainable);
  print_count(out, " Trainable params", trainable);
  print_count(out, " Non-trainable params", 0);
}

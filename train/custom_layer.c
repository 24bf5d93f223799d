/* kiln trainer — custom layers: checking a class's declaration, holding and
 * initializing its weights, calling its forward and backward. */
#include "custom_layer.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "model_internal.h"

static void fill_weight(const kiln_weight_decl *d, int64_t in, int64_t out, kiln_rng *r,
                        float *w) {
  int64_t n = d->size;
  if (d->values) {
    memcpy(w, d->values, (size_t)n * sizeof(float));
    return;
  }
  int64_t fan_in = d->fan_in > 0 ? d->fan_in : in, fan_out = d->fan_out > 0 ? d->fan_out : out;
  switch (d->initializer) {
    case KILN_INIT_GLOROT_UNIFORM: {
      float limit = sqrtf(6.0f / (float)(fan_in + fan_out));
      for (int64_t i = 0; i < n; i++) w[i] = (2.0f * kiln_rng_uniform(r) - 1.0f) * limit;
      break;
    }
    case KILN_INIT_HE_NORMAL: { /* truncated at 2 stddev, as Dense's */
      double sd = sqrt(2.0 / (double)fan_in);
      for (int64_t i = 0; i < n; i++) {
        double z;
        do z = kiln_rng_normal(r); while (fabs(z) > 2.0);
        w[i] = (float)(z * sd);
      }
      break;
    }
    case KILN_INIT_ZEROS:
      memset(w, 0, (size_t)n * sizeof(float));
      break;
    case KILN_INIT_CONSTANT:
      for (int64_t i = 0; i < n; i++) w[i] = d->constant;
      break;
  }
}

/* The declaration's problems, named after the weight and the fix. */
static kiln_status check_decl(const kiln_layer_decl *d, const char *what, const char *type,
                              kiln_error *err) {
  if (d->out_features <= 0 || d->out_features > INT32_MAX)
    return kiln_error_set(err, KILN_E_INVALID,
                          "%s (%s): build declared out_features %lld; it must be in [1, %d]",
                          what, type, (long long)d->out_features, INT32_MAX);
  if (d->n_weights < 0 || d->n_weights > KILN_LAYER_MAX_WEIGHTS)
    return kiln_error_set(err, KILN_E_INVALID,
                          "%s (%s): build declared %d weights; at most %d (KILN_LAYER_MAX_WEIGHTS)",
                          what, type, d->n_weights, KILN_LAYER_MAX_WEIGHTS);
  for (int i = 0; i < d->n_weights; i++) {
    const kiln_weight_decl *w = &d->weights[i];
    const char *name = w->name ? w->name : "";
    if (!*name || strlen(name) >= 64)
      return kiln_error_set(err, KILN_E_INVALID,
                            "%s (%s): weights[%d] needs a name of 1 to 63 characters", what, type,
                            i);
    for (int j = 0; j < i; j++)
      if (strcmp(d->weights[j].name, name) == 0)
        return kiln_error_set(err, KILN_E_INVALID,
                              "%s (%s): weight \"%s\" is declared twice (weights[%d] and [%d])",
                              what, type, name, j, i);
    if (w->size <= 0 || w->size > ((int64_t)1 << 40))
      return kiln_error_set(err, KILN_E_INVALID,
                            "%s (%s): weight \"%s\" has size %lld; it must be in [1, 2^40]", what,
                            type, name, (long long)w->size);
    if (!w->values && (unsigned)w->initializer > KILN_INIT_CONSTANT)
      return kiln_error_set(err, KILN_E_INVALID,
                            "%s (%s): weight \"%s\": unknown initializer %d (give values or a "
                            "kiln_initializer)", what, type, name, (int)w->initializer);
    if (!w->values && w->initializer == KILN_INIT_CONSTANT && !isfinite(w->constant))
      return kiln_error_set(err, KILN_E_INVALID, "%s (%s): weight \"%s\": constant %g is not finite",
                            what, type, name, (double)w->constant);
    if (w->fan_in < 0 || w->fan_out < 0)
      return kiln_error_set(err, KILN_E_INVALID,
                            "%s (%s): weight \"%s\": fan_in and fan_out must be >= 0 (0: the "
                            "layer's widths)", what, type, name);
    for (int64_t k = 0; w->values && k < w->size; k++)
      if (!isfinite(w->values[k]))
        return kiln_error_set(err, KILN_E_INVALID,
                              "%s (%s): weight \"%s\": initial value [%lld] is not finite", what,
                              type, name, (long long)k);
  }
  return KILN_OK;
}

kiln_status kiln_custom_create(const kiln_layer_class *cls, void *ctx, const char *what,
                               int64_t in_features, kiln_rng *init_rng, kiln_custom **out,
                               int64_t *out_features, kiln_error *err) {
  *out = NULL;
  const char *missing = !cls                              ? "the class (NULL)"
                        : !cls->type || !*cls->type       ? "type (a class name)"
                        : !cls->build                     ? "build"
                        : !cls->forward                   ? "forward"
                        : !cls->backward                  ? "backward"
                                                          : NULL;
  if (missing) {
    if (cls && cls->destroy) cls->destroy(ctx);
    return kiln_error_set(err, KILN_E_INVALID, "custom layer %s: kiln_layer_class lacks %s", what,
                          missing);
  }
  kiln_layer_decl decl;
  memset(&decl, 0, sizeof decl);
  kiln_status s = cls->build(ctx, in_features, &decl, err);
  if (s) {
    kiln_error_prefix(err, "%s (%s): build", what, cls->type);
  } else {
    s = check_decl(&decl, what, cls->type, err);
  }
  kiln_custom *c = s ? NULL : calloc(1, sizeof *c);
  if (!s && !c) s = kiln_error_set(err, KILN_E_NOMEM, "%s: out of memory", what);
  if (s) {
    if (cls->destroy) cls->destroy(ctx);
    return s;
  }
  c->cls = cls;
  c->ctx = ctx;
  c->refs = 1;
  c->n_weights = decl.n_weights;
  for (int i = 0; i < decl.n_weights; i++) {
    const kiln_weight_decl *d = &decl.weights[i];
    snprintf(c->names[i], sizeof c->names[i], "%s", d->name);
    c->sizes[i] = d->size;
    c->w[i] = malloc((size_t)d->size * sizeof(float));
    c->g[i] = calloc((size_t)d->size, sizeof(float));
    if (!c->w[i] || !c->g[i]) {
      kiln_custom_release(c);
      return kiln_error_set(err, KILN_E_NOMEM, "%s: out of memory for weight \"%s\"", what,
                            d->name);
    }
    fill_weight(d, in_features, decl.out_features, init_rng, c->w[i]);
  }
  *out_features = decl.out_features;
  *out = c;
  return KILN_OK;
}

void kiln_custom_retain(kiln_custom *c) {
  if (c) c->refs++;
}

void kiln_custom_release(kiln_custom *c) {
  if (!c || --c->refs > 0) return;
  for (int i = 0; i < c->n_weights; i++) {
    free(c->w[i]);
    free(c->g[i]);
  }
  if (c->cls->destroy) c->cls->destroy(c->ctx);
  free(c);
}

int64_t kiln_custom_param_count(const kiln_custom *c) {
  int64_t n = 0;
  for (int i = 0; c && i < c->n_weights; i++) n += c->sizes[i];
  return n;
}

void kiln_custom_forward(kiln_custom *c, const float *x, int64_t rows, int64_t in,
                         int64_t out, int training, float *y) {
  c->cls->forward(c->ctx, c->w, x, rows, in, out, training, y);
}

void kiln_custom_backward(kiln_custom *c, const float *x, const float *y, const float *dy,
                          int64_t rows, int64_t in, int64_t out, float *dx) {
  for (int i = 0; i < c->n_weights; i++) memset(c->g[i], 0, (size_t)c->sizes[i] * sizeof(float));
  c->cls->backward(c->ctx, c->w, x, y, dy, rows, in, out, dx, c->g);
}

/* --- read access (kiln/train.h) ------------------------------------------------ */

int kiln_model_weight_count(const kiln_model *m, kiln_node node) {
  if (node < 0 || node >= m->n_layers || !m->layers[node].custom) return 0;
  return m->layers[node].custom->n_weights;
}

static void weight_info(const kiln_custom *c, const char *layer, int i, kiln_weight_info *out) {
  memset(out, 0, sizeof *out);
  snprintf(out->name, sizeof out->name, "%s/%s", layer, c->names[i]);
  out->value = c->w[i];
  out->grad = c->g[i];
  out->size = out->cols = c->sizes[i];
  out->rows = 1;
}

kiln_status kiln_custom_weight_info(const kiln_custom *c, const char *layer, const float *value,
                                    kiln_weight_info *out, kiln_error *err) {
  for (int i = 0; i < c->n_weights; i++)
    if (c->w[i] == value) {
      weight_info(c, layer, i, out);
      return KILN_OK;
    }
  return kiln_error_set(err, KILN_E_INVALID, "layer \"%s\": not one of its weights", layer);
}

kiln_status kiln_model_weight(const kiln_model *m, kiln_node node, int i, kiln_weight_info *out,
                              kiln_error *err) {
  if (node < 0 || node >= m->n_layers)
    return kiln_error_set(err, KILN_E_INVALID, "layer %d does not exist (the model has %d)", node,
                          m->n_layers);
  const kiln_layer *l = &m->layers[node];
  int n = l->custom ? l->custom->n_weights : 0;
  if (i < 0 || i >= n)
    return kiln_error_set(err, KILN_E_INVALID, "layer \"%s\": weight %d does not exist (%s %d)",
                          l->name, i, l->custom ? "its class declared" : "not a custom layer:", n);
  weight_info(l->custom, l->name, i, out);
  return KILN_OK;
}

const kiln_layer_class *kiln_model_layer_class(const kiln_model *m, kiln_node node) {
  if (node < 0 || node >= m->n_layers || !m->layers[node].custom) return NULL;
  return m->layers[node].custom->cls;
}

void *kiln_model_layer_ctx(const kiln_model *m, kiln_node node) {
  if (node < 0 || node >= m->n_layers || !m->layers[node].custom) return NULL;
  return m->layers[node].custom->ctx;
}

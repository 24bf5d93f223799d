/* kiln trainer — custom layers (kiln_layer_class): the weights kiln holds for one, and
 * the calls the model's passes, optimizer, summary and checkpoints make on it. */
#ifndef KILN_TRAIN_CUSTOM_LAYER_H
#define KILN_TRAIN_CUSTOM_LAYER_H

#include "kiln/train.h"
#include "rng.h"

/* One custom layer's class, ctx and weights. Shared (reference-counted) between models
 * that share the layer (kiln_model_from_layers). */
typedef struct kiln_custom {
  const kiln_layer_class *cls;
  void *ctx;
  int refs;
  int n_weights;
  char names[KILN_LAYER_MAX_WEIGHTS][64];
  int64_t sizes[KILN_LAYER_MAX_WEIGHTS];
  float *w[KILN_LAYER_MAX_WEIGHTS];
  float *g[KILN_LAYER_MAX_WEIGHTS];
} kiln_custom;

/* Checks cls, runs build on in_features, validates the declaration and allocates and
 * initializes the weights (initializers draw from init_rng). Takes ctx: on failure it is
 * destroyed. Errors are prefixed with `what` (the layer's name or class). */
kiln_status kiln_custom_create(const kiln_layer_class *cls, void *ctx, const char *what,
                               int64_t in_features, kiln_rng *init_rng, kiln_custom **out,
                               int64_t *out_features, kiln_error *err);
void kiln_custom_retain(kiln_custom *c);
/* Drops a reference; the last one frees the weights and destroys ctx. NULL-safe. */
void kiln_custom_release(kiln_custom *c);
int64_t kiln_custom_param_count(const kiln_custom *c);
/* Fills out for the weight whose values are `value` (a kiln_param of this layer). */
kiln_status kiln_custom_weight_info(const kiln_custom *c, const char *layer, const float *value,
                                    kiln_weight_info *out, kiln_error *err);

void kiln_custom_forward(kiln_custom *c, const float *x, int64_t rows, int64_t in,
                         int64_t out, int training, float *y);
/* Zeroes the weight gradients, then calls the class's backward (dx may be NULL). */
void kiln_custom_backward(kiln_custom *c, const float *x, const float *y, const float *dy,
                          int64_t rows, int64_t in, int64_t out, float *dx);

#endif

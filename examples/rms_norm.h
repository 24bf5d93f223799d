/* A custom layer in C: RMS normalization with a learned gain (keras.layers.RMSNormalization,
 * Zhang & Sennrich 2019): y = x / sqrt(mean(x^2) + epsilon) * gamma, per row, gamma one
 * trainable weight per feature (initialized to 1). Written only against the public
 * kiln_layer_class interface; header-only so that examples/custom_layer.c and the
 * trainer's tests (tests/train/test_custom_layer.c) share it. */
#ifndef KILN_EXAMPLE_RMS_NORM_H
#define KILN_EXAMPLE_RMS_NORM_H

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kiln/train.h"

typedef struct rms_norm_config {
  float epsilon; /* keras' default 1e-6 */
} rms_norm_config;

static inline kiln_status rms_norm_build(void *ctx, int64_t in_features, kiln_layer_decl *decl,
                                         kiln_error *err) {
  (void)ctx;
  (void)err;
  decl->out_features = in_features; /* the same width */
  decl->n_weights = 1;
  decl->weights[0].name = "gamma";
  decl->weights[0].size = in_features;
  decl->weights[0].initializer = KILN_INIT_CONSTANT;
  decl->weights[0].constant = 1.0f;
  return KILN_OK;
}

/* 1 / sqrt(mean(x^2) + eps) of one row. */
static inline double rms_norm_inv(const float *x, int64_t n, float eps) {
  double ss = 0;
  for (int64_t j = 0; j < n; j++) ss += (double)x[j] * x[j];
  return 1.0 / sqrt(ss / (double)n + eps);
}

static inline void rms_norm_forward(void *ctx, float *const *w, const float *x, int64_t rows,
                                    int64_t in, int64_t out, int training, float *y) {
  const rms_norm_config *c = ctx;
  (void)out;
  (void)training;
  const float *gamma = w[0];
  for (int64_t r = 0; r < rows; r++) {
    const float *xr = x + r * in;
    float *yr = y + r * in;
    double inv = rms_norm_inv(xr, in, c->epsilon);
    for (int64_t j = 0; j < in; j++) yr[j] = (float)(xr[j] * inv) * gamma[j];
  }
}

/* dgamma_j = sum_rows dy_j x_j inv;
 * dx_k = inv gamma_k dy_k - inv^3 / n x_k sum_j dy_j gamma_j x_j. */
static inline void rms_norm_backward(void *ctx, float *const *w, const float *x, const float *y,
                                     const float *dy, int64_t rows, int64_t in, int64_t out,
                                     float *dx, float *const *grads) {
  const rms_norm_config *c = ctx;
  (void)y;
  (void)out;
  const float *gamma = w[0];
  float *dgamma = grads[0];
  for (int64_t r = 0; r < rows; r++) {
    const float *xr = x + r * in, *dyr = dy + r * in;
    double inv = rms_norm_inv(xr, in, c->epsilon), dot = 0;
    for (int64_t j = 0; j < in; j++) {
      dgamma[j] += (float)(dyr[j] * xr[j] * inv);
      dot += (double)dyr[j] * gamma[j] * xr[j];
    }
    if (!dx) continue;
    double k = inv * inv * inv / (double)in * dot;
    for (int64_t j = 0; j < in; j++)
      dx[r * in + j] += (float)(inv * gamma[j] * dyr[j] - k * xr[j]);
  }
}

static inline void rms_norm_destroy(void *ctx) { free(ctx); }

/* The class (one per program: it holds functions only) and a ctx for one layer. */
static const kiln_layer_class rms_norm_class = {"RMSNormalization", rms_norm_build,
                                                rms_norm_forward, rms_norm_backward,
                                                rms_norm_destroy};

static inline rms_norm_config *rms_norm_config_create(float epsilon) {
  rms_norm_config *c = malloc(sizeof *c);
  if (c) c->epsilon = epsilon;
  return c;
}

#endif

/* A custom layer in C: RMS normalization with a learned gain (keras.layers.RMSNormalization,
 * Zhang & Sennrich 2019): y = x / sqrt(mean(x^2) + epsilon) * gamma, per row, gamma one
 * trainable weight per feature (initialized to 1). Written only against the public
 * kiln_layer_class interface (and, for ONNX export, the lowering builder of
 * kiln/export.h: link kiln_export); header-only so that examples/custom_layer.c and the
 * tests share it. */
#ifndef KILN_EXAMPLE_RMS_NORM_H
#define KILN_EXAMPLE_RMS_NORM_H

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kiln/export.h"
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

/* The forward pass in standard ONNX ops (what ONNX Runtime and kiln's runtime run):
 * Mul(x, x) -> ReduceMean(axis -1, keepdims) -> Add(epsilon) -> Sqrt -> Div(x, .) ->
 * Mul(gamma). ReduceMean takes its axes as an attribute before opset 18, as an input
 * from 18 on. */
static inline kiln_status rms_norm_lower(void *ctx, kiln_layer_lowering *lw,
                                         const float *const *w, int64_t in, int64_t out,
                                         const char *x, const char *y, kiln_error *err) {
  const rms_norm_config *c = ctx;
  (void)out;
  char gamma[320], eps[320], axes[320], sq[320], ms[320], var[320], rms[320], xn[320];
  int64_t gdim[1] = {in}, adim[1] = {1}, axis[1] = {-1};
  float e = c->epsilon;
  int axes_input = kiln_lowering_opset(lw) >= 18;
  kiln_status s;
  kiln_ir_node *n;
  if ((s = kiln_lowering_add_initializer(lw, "gamma", KILN_DTYPE_FLOAT, gdim, 1, w[0], gamma,
                                         sizeof gamma, err)) ||
      (s = kiln_lowering_add_initializer(lw, "epsilon", KILN_DTYPE_FLOAT, NULL, 0, &e, eps,
                                         sizeof eps, err)) ||
      (axes_input && (s = kiln_lowering_add_initializer(lw, "axes", KILN_DTYPE_INT64, adim, 1,
                                                        axis, axes, sizeof axes, err))) ||
      (s = kiln_lowering_fresh_name(lw, "square", sq, sizeof sq, err)) ||
      (s = kiln_lowering_fresh_name(lw, "mean_square", ms, sizeof ms, err)) ||
      (s = kiln_lowering_fresh_name(lw, "variance", var, sizeof var, err)) ||
      (s = kiln_lowering_fresh_name(lw, "rms", rms, sizeof rms, err)) ||
      (s = kiln_lowering_fresh_name(lw, "normalized", xn, sizeof xn, err)))
    return s;
  const char *mul_in[2] = {x, x}, *mean_in[2] = {sq, axes}, *add_in[2] = {ms, eps};
  const char *div_in[2] = {x, rms}, *gain_in[2] = {xn, gamma};
  const char *sq_out[1] = {sq}, *ms_out[1] = {ms}, *var_out[1] = {var}, *rms_out[1] = {rms};
  const char *xn_out[1] = {xn}, *y_out[1] = {y};
  const char *var_in[1] = {var};
  if ((s = kiln_lowering_add_node(lw, "Mul", mul_in, 2, sq_out, 1, NULL, err)) ||
      (s = kiln_lowering_add_node(lw, "ReduceMean", mean_in, axes_input ? 2 : 1, ms_out, 1, &n,
                                  err)) ||
      (s = kiln_ir_node_set_int(n, "keepdims", 1, err)) ||
      (!axes_input && (s = kiln_ir_node_set_ints(n, "axes", axis, 1, err))) ||
      (s = kiln_lowering_add_node(lw, "Add", add_in, 2, var_out, 1, NULL, err)) ||
      (s = kiln_lowering_add_node(lw, "Sqrt", var_in, 1, rms_out, 1, NULL, err)) ||
      (s = kiln_lowering_add_node(lw, "Div", div_in, 2, xn_out, 1, NULL, err)) ||
      (s = kiln_lowering_add_node(lw, "Mul", gain_in, 2, y_out, 1, NULL, err)))
    return s;
  return KILN_OK;
}

/* The class (one per program: it holds functions only) and a ctx for one layer. */
static const kiln_layer_class rms_norm_class = {.type = "RMSNormalization",
                                                .build = rms_norm_build,
                                                .forward = rms_norm_forward,
                                                .backward = rms_norm_backward,
                                                .destroy = rms_norm_destroy,
                                                .lower = rms_norm_lower};

static inline rms_norm_config *rms_norm_config_create(float epsilon) {
  rms_norm_config *c = malloc(sizeof *c);
  if (c) c->epsilon = epsilon;
  return c;
}

/* For JSON specs (kiln_layer_registry_add(r, "RMSNorm", &rms_norm_class,
 * rms_norm_make_ctx, NULL, &err)): the layer's "config" may give "epsilon" (> 0,
 * default 1e-6), as keras.layers.RMSNormalization's config does. */
static inline kiln_status rms_norm_make_ctx(void *user, const char *layer_name,
                                            const kiln_layer_config *config, void **ctx,
                                            kiln_error *err) {
  static const char *const keys[] = {"epsilon"};
  double eps = 1e-6;
  kiln_status s;
  (void)user;
  (void)layer_name;
  if ((s = kiln_layer_config_check_keys(config, keys, 1, err)) ||
      (s = kiln_layer_config_number(config, "epsilon", 1e-6, &eps, err)))
    return s;
  if (!(eps > 0))
    return kiln_error_set(err, KILN_E_INVALID, "config.epsilon: expected a positive number, got %g",
                          eps);
  *ctx = rms_norm_config_create((float)eps);
  return *ctx ? KILN_OK : kiln_error_set(err, KILN_E_NOMEM, "rms_norm: out of memory");
}

/* Adds an RMSNormalization layer with this epsilon on input (name NULL: "rmsnormalization"). */
static inline kiln_status rms_norm_add(kiln_model *m, kiln_node input, float epsilon,
                                       const char *name, kiln_node *out, kiln_error *err) {
  rms_norm_config *c = rms_norm_config_create(epsilon);
  if (!c) return kiln_error_set(err, KILN_E_NOMEM, "rms_norm: out of memory");
  return kiln_model_custom(m, input, &rms_norm_class, c, name, out, err);
}

#endif

/* A small two-input-kinds, three-input, two-output graph built with the IR builders,
 * shaped as kiln_model_lower writes the ticket model of listing 7.9 (title, text_body,
 * tags -> Concat -> Dense relu -> priority Dense(1, sigmoid), department Dense(D,
 * softmax)), with a plain C reference forward pass. For the tests of the runtime,
 * predict, inspect, calibration, quantization and drift on multi-IO models (before the
 * trainer builds such models). Header-only: include it once per test program. */
#ifndef KILN_TESTS_MULTI_IO_GRAPH_H
#define KILN_TESTS_MULTI_IO_GRAPH_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kiln/ir.h"

typedef struct mio_sizes {
  int64_t title, body, tags, hidden, departments;
} mio_sizes;

typedef struct mio_weights {
  mio_sizes z;
  float *w1, *b1; /* [in, hidden] */
  float *w2, *b2; /* [hidden, 1] */
  float *w3, *b3; /* [hidden, departments] */
} mio_weights;

static uint64_t mio_next(uint64_t *s) {
  *s ^= *s << 13;
  *s ^= *s >> 7;
  *s ^= *s << 17;
  return *s;
}
static float mio_uniform(uint64_t *s, float a) { /* in [-a, a) */
  return ((float)(mio_next(s) >> 40) / (float)(1 << 24) * 2.0f - 1.0f) * a;
}

static int64_t mio_in(const mio_sizes *z) { return z->title + z->body + z->tags; }

static void mio_weights_init(mio_weights *w, const mio_sizes *z, uint64_t seed) {
  memset(w, 0, sizeof *w);
  w->z = *z;
  int64_t in = mio_in(z), h = z->hidden, d = z->departments;
  w->w1 = malloc((size_t)(in * h) * sizeof(float));
  w->b1 = malloc((size_t)h * sizeof(float));
  w->w2 = malloc((size_t)h * sizeof(float));
  w->b2 = malloc(sizeof(float));
  w->w3 = malloc((size_t)(h * d) * sizeof(float));
  w->b3 = malloc((size_t)d * sizeof(float));
  uint64_t s = seed | 1;
  float a1 = sqrtf(6.0f / (float)(in + h)) * 4.0f; /* multi-hot rows are sparse */
  for (int64_t i = 0; i < in * h; i++) w->w1[i] = mio_uniform(&s, a1);
  for (int64_t i = 0; i < h; i++) w->b1[i] = mio_uniform(&s, 0.1f);
  for (int64_t i = 0; i < h; i++) w->w2[i] = mio_uniform(&s, 0.6f);
  w->b2[0] = 0.05f;
  for (int64_t i = 0; i < h * d; i++) w->w3[i] = mio_uniform(&s, 0.8f);
  for (int64_t i = 0; i < d; i++) w->b3[i] = mio_uniform(&s, 0.1f);
}

static void mio_weights_free(mio_weights *w) {
  free(w->w1);
  free(w->b1);
  free(w->w2);
  free(w->b2);
  free(w->w3);
  free(w->b3);
  memset(w, 0, sizeof *w);
}

/* Dense rows: out_p rows x 1, out_d rows x departments. */
static void mio_forward(const mio_weights *w, const float *title, const float *body,
                        const float *tags, int64_t rows, float *out_p, float *out_d) {
  const mio_sizes *z = &w->z;
  int64_t in = mio_in(z), h = z->hidden, d = z->departments;
  float *x = malloc((size_t)in * sizeof(float)), *hid = malloc((size_t)h * sizeof(float));
  for (int64_t r = 0; r < rows; r++) {
    memcpy(x, title + r * z->title, (size_t)z->title * sizeof(float));
    memcpy(x + z->title, body + r * z->body, (size_t)z->body * sizeof(float));
    memcpy(x + z->title + z->body, tags + r * z->tags, (size_t)z->tags * sizeof(float));
    for (int64_t j = 0; j < h; j++) {
      double acc = w->b1[j];
      for (int64_t k = 0; k < in; k++) acc += (double)x[k] * w->w1[k * h + j];
      hid[j] = acc > 0 ? (float)acc : 0.0f;
    }
    double p = w->b2[0];
    for (int64_t j = 0; j < h; j++) p += (double)hid[j] * w->w2[j];
    out_p[r] = (float)(1.0 / (1.0 + exp(-p)));
    double mx = -INFINITY, sum = 0, logits[64];
    for (int64_t c = 0; c < d && c < 64; c++) {
      double v = w->b3[c];
      for (int64_t j = 0; j < h; j++) v += (double)hid[j] * w->w3[j * d + c];
      logits[c] = v;
      if (v > mx) mx = v;
    }
    for (int64_t c = 0; c < d; c++) sum += exp(logits[c] - mx);
    for (int64_t c = 0; c < d; c++) out_d[r * d + c] = (float)(exp(logits[c] - mx) / sum);
  }
  free(x);
  free(hid);
}

/* One Dense layer as lower writes it: <name>/Gemm -> <name>/linear -> <name>/<Act> -> name. */
static kiln_status mio_dense(kiln_ir_graph *g, const char *name, const char *input, int64_t in,
                             int64_t units, const float *k, const float *b, const char *act,
                             kiln_error *err) {
  char kn[128], bn[128], node[128], lin[128];
  snprintf(kn, sizeof kn, "%s/kernel", name);
  snprintf(bn, sizeof bn, "%s/bias", name);
  snprintf(node, sizeof node, "%s/Gemm", name);
  snprintf(lin, sizeof lin, "%s/linear", name);
  int64_t kd[2] = {in, units}, bd[1] = {units};
  kiln_status s;
  if ((s = kiln_ir_add_initializer(g, kn, KILN_DTYPE_FLOAT, kd, 2, k, err)) ||
      (s = kiln_ir_add_initializer(g, bn, KILN_DTYPE_FLOAT, bd, 1, b, err)))
    return s;
  const char *ins[3] = {input, kn, bn};
  const char *outs[1] = {lin};
  kiln_ir_node *n;
  if ((s = kiln_ir_add_node(g, "Gemm", node, ins, 3, outs, 1, &n, err)) ||
      (s = kiln_ir_node_set_int(n, "transA", 0, err)) ||
      (s = kiln_ir_node_set_int(n, "transB", 0, err)))
    return s;
  snprintf(node, sizeof node, "%s/%s", name, act);
  const char *ains[1] = {lin};
  const char *aouts[1] = {name};
  if ((s = kiln_ir_add_node(g, act, node, ains, 1, aouts, 1, &n, err))) return s;
  if (!strcmp(act, "Softmax")) s = kiln_ir_node_set_int(n, "axis", -1, err);
  return s;
}

/* The graph: inputs title, text_body, tags; outputs priority, department; metadata
 * kiln.loss.<output> / kiln.metrics.<output> as kiln_model_lower writes them. */
static kiln_status mio_graph(const mio_weights *w, kiln_ir_graph **out, kiln_error *err) {
  const mio_sizes *z = &w->z;
  kiln_ir_graph *g = NULL;
  kiln_status s = kiln_ir_create("kiln", &g, err);
  if (s) return s;
  g->ir_version = 7;
  const char *params[2] = {"batch", NULL};
  int64_t d_t[2] = {-1, z->title}, d_b[2] = {-1, z->body}, d_g[2] = {-1, z->tags};
  int64_t d_p[2] = {-1, 1}, d_d[2] = {-1, z->departments};
  const char *cin[3] = {"title", "text_body", "tags"};
  const char *cout[1] = {"concatenate"};
  kiln_ir_node *n;
  if ((s = kiln_ir_set_opset(g, "", 13, err)) ||
      (s = kiln_ir_add_input(g, "title", KILN_DTYPE_FLOAT, d_t, params, 2, err)) ||
      (s = kiln_ir_add_input(g, "text_body", KILN_DTYPE_FLOAT, d_b, params, 2, err)) ||
      (s = kiln_ir_add_input(g, "tags", KILN_DTYPE_FLOAT, d_g, params, 2, err)) ||
      (s = kiln_ir_add_node(g, "Concat", "concatenate/Concat", cin, 3, cout, 1, &n, err)) ||
      (s = kiln_ir_node_set_int(n, "axis", -1, err)) ||
      (s = mio_dense(g, "dense", "concatenate", mio_in(z), z->hidden, w->w1, w->b1, "Relu", err)) ||
      (s = mio_dense(g, "priority", "dense", z->hidden, 1, w->w2, w->b2, "Sigmoid", err)) ||
      (s = mio_dense(g, "department", "dense", z->hidden, z->departments, w->w3, w->b3, "Softmax",
                     err)) ||
      (s = kiln_ir_add_output(g, "priority", KILN_DTYPE_FLOAT, d_p, params, 2, err)) ||
      (s = kiln_ir_add_output(g, "department", KILN_DTYPE_FLOAT, d_d, params, 2, err)) ||
      (s = kiln_ir_set_producer(g, "kiln", "0.1.0", err)) ||
      (s = kiln_ir_set_meta(g, "kiln.loss.priority", "mean_squared_error", err)) ||
      (s = kiln_ir_set_meta(g, "kiln.loss.department", "sparse_categorical_crossentropy", err)) ||
      (s = kiln_ir_set_meta(g, "kiln.metrics.priority", "mae", err)) ||
      (s = kiln_ir_set_meta(g, "kiln.metrics.department", "accuracy", err))) {
    kiln_ir_free(g);
    return s;
  }
  *out = g;
  return KILN_OK;
}

/* Multi-hot rows: each row has about `per_row` ones in random columns of [0, width). */
static void mio_multi_hot(float *x, int64_t rows, int64_t width, int per_row, uint64_t *rng) {
  memset(x, 0, (size_t)(rows * width) * sizeof(float));
  for (int64_t r = 0; r < rows; r++)
    for (int k = 0; k < per_row; k++) x[r * width + (int64_t)(mio_next(rng) % (uint64_t)width)] = 1.0f;
}

#endif

/* kiln trainer — SGD (momentum, Nesterov), RMSprop and Adam with the update rules
 * and defaults of Keras 3, over every trainable tensor of the model. */
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "custom_layer.h"
#include "model_internal.h"
#include "../infer/threads.h" /* kiln_pool: the runtime's thread pool, shared */

void kiln_optimizer_init(kiln_optimizer *opt, kiln_optimizer_kind kind) {
  memset(opt, 0, sizeof *opt);
  opt->kind = kind;
  opt->learning_rate = kind == KILN_OPTIMIZER_SGD ? 0.01f : 0.001f;
  opt->rho = 0.9f;
  opt->beta_1 = 0.9f;
  opt->beta_2 = 0.999f;
  opt->epsilon = 1e-7f;
}

static const char *const optimizer_names[] = {"sgd", "rmsprop", "adam"};

kiln_status kiln_optimizer_parse(const char *name, kiln_optimizer *out, kiln_error *err) {
  for (int i = 0; i < 3; i++)
    if (strcasecmp(name, optimizer_names[i]) == 0) {
      kiln_optimizer_init(out, (kiln_optimizer_kind)i);
      return KILN_OK;
    }
  return kiln_error_set(err, KILN_E_INVALID,
                        "unknown optimizer \"%s\" (expected one of sgd, rmsprop, adam)", name);
}

const char *kiln_optimizer_name(kiln_optimizer_kind kind) {
  return (unsigned)kind < 3 ? optimizer_names[kind] : "?";
}

kiln_status kiln_optimizer_prepare(kiln_model *m, kiln_error *err) {
  int n = 0;
  for (int i = 0; i < m->n_layers; i++)
    n += !m->layers[i].active                   ? 0
         : m->layers[i].kind == KILN_LAYER_DENSE ? 2
         : m->layers[i].custom                   ? m->layers[i].custom->n_weights
                                                 : 0;
  m->params = calloc((size_t)(n ? n : 1), sizeof *m->params);
  if (!m->params) return kiln_error_set(err, KILN_E_NOMEM, "optimizer: out of memory");
  int slots = m->opt.kind == KILN_OPTIMIZER_ADAM ? 2
              : (m->opt.kind == KILN_OPTIMIZER_SGD && m->opt.momentum == 0.0f) ? 0 : 1;
  for (int i = 0; i < m->n_layers; i++) {
    kiln_layer *l = &m->layers[i];
    for (int w = 0; l->custom && l->active && w < l->custom->n_weights; w++) {
      kiln_param c = {l->custom->w[w], l->custom->g[w], NULL, NULL, l->custom->sizes[w], {0, 0},
                      i, 0};
      m->params[m->n_params++] = c;
    }
    if (l->kind != KILN_LAYER_DENSE || !l->active) continue; /* no output depends on it */
    kiln_param k = {l->kernel, l->grad_kernel, NULL, NULL, l->in_features * l->out_features,
                    l->reg, i, 0};
    kiln_param b = {l->bias, l->grad_bias, NULL, NULL, l->out_features, {0, 0}, i, 1};
    m->params[m->n_params++] = k;
    m->params[m->n_params++] = b;
  }
  for (int i = 0; i < m->n_params; i++) {
    kiln_param *p = &m->params[i];
    if (slots >= 1 && !(p->slot1 = calloc((size_t)p->size, sizeof(float))))
      return kiln_error_set(err, KILN_E_NOMEM, "optimizer: out of memory");
    if (slots >= 2 && !(p->slot2 = calloc((size_t)p->size, sizeof(float))))
      return kiln_error_set(err, KILN_E_NOMEM, "optimizer: out of memory");
  }
  return KILN_OK;
}

/* The updates are element-wise, so each runs on a range [b, e) of a tensor: the
 * optimizer step splits big tensors between threads with the same floats as one. */
KILN_HOT static void sgd_range(const kiln_optimizer *o, kiln_param *p, int64_t b, int64_t e) {
  float lr = o->learning_rate;
  float *w = p->value, *g = p->grad, *v = p->slot1;
  if (!v) {
    for (int64_t i = b; i < e; i++) w[i] -= lr * g[i];
    return;
  }
  float mu = o->momentum;
  for (int64_t i = b; i < e; i++) {
    v[i] = mu * v[i] - lr * g[i];
    w[i] += o->nesterov ? mu * v[i] - lr * g[i] : v[i];
  }
}

KILN_HOT static void rmsprop_range(const kiln_optimizer *o, kiln_param *p, int64_t b,
                                   int64_t e) {
  float lr = o->learning_rate, rho = o->rho, eps = o->epsilon;
  float *w = p->value, *g = p->grad, *v = p->slot1;
  for (int64_t i = b; i < e; i++) {
    v[i] = rho * v[i] + (1.0f - rho) * g[i] * g[i];
    w[i] -= lr * g[i] / sqrtf(v[i] + eps);
  }
}

/* alpha: the step size with Keras' bias correction folded in (adam_alpha). */
KILN_HOT static void adam_range(const kiln_optimizer *o, kiln_param *p, float alpha, int64_t b,
                                int64_t e) {
  float c1 = 1.0f - o->beta_1, c2 = 1.0f - o->beta_2, eps = o->epsilon;
  float *w = p->value, *g = p->grad, *mo = p->slot1, *v = p->slot2;
  for (int64_t i = b; i < e; i++) {
    mo[i] += (g[i] - mo[i]) * c1;
    v[i] += (g[i] * g[i] - v[i]) * c2;
    w[i] -= alpha * mo[i] / (sqrtf(v[i]) + eps);
  }
}

static float adam_alpha(const kiln_optimizer *o, int64_t step) {
  double b1p = pow((double)o->beta_1, (double)step), b2p = pow((double)o->beta_2, (double)step);
  return (float)(o->learning_rate * sqrt(1.0 - b2p) / (1.0 - b1p));
}

#define SPLIT_CHUNK 16384           /* parameters per piece of work (64 KB of each array) */
/* Models with fewer parameters step on one thread: their weights and gradients can stay
 * in the core's caches between the batch's kernels and the step (IMDB's 160 k
 * parameters did not measure faster split); past 2 MB per array they stream from
 * memory, where a second core adds bandwidth (Reuters' 647 k). */
#define SPLIT_MIN_TOTAL (512 * 1024)

typedef struct step_task {
  kiln_model *m;
  float alpha;
  atomic_int next; /* the next piece: chunk k of the tensors laid end to end */
} step_task;

/* Each thread claims pieces of SPLIT_CHUNK parameters (a tensor's last piece is
 * shorter) until none is left. */
static void step_part(void *arg, int t, int n) {
  (void)t;
  (void)n;
  step_task *st = arg;
  kiln_model *m = st->m;
  int i = 0;
  int64_t first = 0; /* index of params[i]'s first piece */
  for (;;) {
    int64_t k = atomic_fetch_add_explicit(&st->next, 1, memory_order_relaxed);
    while (i < m->n_params && k >= first + (m->params[i].size + SPLIT_CHUNK - 1) / SPLIT_CHUNK)
      first += (m->params[i++].size + SPLIT_CHUNK - 1) / SPLIT_CHUNK;
    if (i == m->n_params) return;
    kiln_param *p = &m->params[i];
    int64_t b = (k - first) * SPLIT_CHUNK, e = b + SPLIT_CHUNK < p->size ? b + SPLIT_CHUNK : p->size;
    switch (m->opt.kind) {
      case KILN_OPTIMIZER_SGD: sgd_range(&m->opt, p, b, e); break;
      case KILN_OPTIMIZER_RMSPROP: rmsprop_range(&m->opt, p, b, e); break;
      case KILN_OPTIMIZER_ADAM: adam_range(&m->opt, p, st->alpha, b, e); break;
    }
  }
}

/* How many threads the step of m should use: 1 below SPLIT_MIN_TOTAL parameters;
 * otherwise up to opt_threads, else 2 (the step is memory-bound: a second core adds
 * bandwidth, more add little). */
static int step_threads(const kiln_model *m) {
  int64_t total = 0;
  for (int i = 0; i < m->n_params; i++) total += m->params[i].size;
  long cpus = sysconf(_SC_NPROCESSORS_ONLN);
  int want = m->opt_threads > 0 ? m->opt_threads : 2;
  if (cpus > 0 && want > cpus) want = (int)cpus;
  if (total < SPLIT_MIN_TOTAL) want = 1;
  return want;
}

void kiln_optimizer_step(kiln_model *m) {
  m->iterations++;
  step_task st = {m, m->opt.kind == KILN_OPTIMIZER_ADAM ? adam_alpha(&m->opt, m->iterations)
                                                        : 0.0f, 0};
  if (!m->workers && !m->workers_tried) { /* decided once: sysconf reads a file */
    m->workers_tried = 1;
    int n = step_threads(m);
    kiln_error err = {0};
    if (n > 1 && (m->workers = malloc(sizeof *m->workers)) != NULL &&
        kiln_pool_create(m->workers, n, &err)) { /* no threads: the step runs on one */
      free(m->workers);
      m->workers = NULL;
    }
  }
  if (m->workers)
    kiln_pool_run_dynamic(m->workers, step_part, &st);
  else
    step_part(&st, 0, 1);
}

void kiln_optimizer_free_workers(kiln_model *m) {
  m->workers_tried = 0;
  if (!m->workers) return;
  kiln_pool_destroy(m->workers);
  free(m->workers);
  m->workers = NULL;
}

kiln_status kiln_model_apply_gradients(kiln_model *m, kiln_error *err) {
  if (!m->compiled)
    return kiln_error_set(err, KILN_E_INVALID, "apply_gradients: compile the model first");
  kiln_optimizer_step(m);
  return KILN_OK;
}

int kiln_model_trainable_weight_count(const kiln_model *m) { return m->compiled ? m->n_params : 0; }

kiln_status kiln_model_trainable_weight(kiln_model *m, int i, kiln_weight_info *out,
                                        kiln_error *err) {
  if (!m->compiled)
    return kiln_error_set(err, KILN_E_INVALID, "trainable_weight: compile the model first");
  if (i < 0 || i >= m->n_params)
    return kiln_error_set(err, KILN_E_INVALID,
                          "trainable_weight: index %d does not exist (the model has %d)", i,
                          m->n_params);
  const kiln_param *p = &m->params[i];
  const kiln_layer *l = &m->layers[p->layer];
  memset(out, 0, sizeof *out);
  if (l->custom) /* custom_layer.c: "<layer>/<declared name>", one row */
    return kiln_custom_weight_info(l->custom, l->name, p->value, out, err);
  snprintf(out->name, sizeof out->name, "%s/%s", l->name, p->is_bias ? "bias" : "kernel");
  out->value = p->value;
  out->grad = p->grad;
  out->size = p->size;
  out->rows = p->is_bias ? 1 : l->in_features;
  out->cols = l->out_features;
  return KILN_OK;
}

/* kiln quantize — pruning during training: TF Model Optimization's polynomial-decay
 * sparsity schedule as a kiln_callback. Masks are recomputed by magnitude every
 * `frequency` steps inside [begin_step, end_step] and applied after every batch, so
 * a masked weight that the optimizer moved is put back to zero. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kiln/callbacks.h"
#include "kiln/quantize.h"

/* Tags the context so the accessors can tell this callback from others; freeing goes
 * through kiln_callback.destroy like every callback. */
#define PRUNE_SCHEDULE_KIND 0x4b43b101

typedef struct prune_layer {
  float *kernel;
  int64_t n;
  unsigned char *mask; /* 1 = pruned */
} prune_layer;

typedef struct prune_ctx {
  int kind;
  void (*destroy)(void *ctx);
  kiln_prune_schedule_config c;
  int64_t step;
  double applied;
  int n_layers;
  prune_layer *layers;
} prune_ctx;

void kiln_prune_schedule_config_init(kiln_prune_schedule_config *c) {
  memset(c, 0, sizeof *c);
  c->frequency = 100;
  c->power = 3;
  c->end_step = -1;
  c->final_sparsity = -1;
}

static void free_layers(prune_ctx *p) {
  for (int i = 0; i < p->n_layers; i++) free(p->layers[i].mask);
  free(p->layers);
  p->layers = NULL;
  p->n_layers = 0;
}

static void destroy(void *ctx) {
  prune_ctx *p = ctx;
  free_layers(p);
  free(p);
}

static void on_train_begin(void *ctx, kiln_model *m) {
  prune_ctx *p = ctx;
  free_layers(p);
  int n = kiln_model_layer_count(m);
  p->layers = calloc((size_t)(n ? n : 1), sizeof *p->layers);
  if (!p->layers) {
    kiln_model_fail(m, KILN_E_NOMEM, "prune schedule: out of memory");
    return;
  }
  for (int i = 0; i < n; i++) {
    kiln_layer_info info;
    if (kiln_model_layer(m, i, &info, NULL) || info.kind != KILN_LAYER_DENSE || !info.kernel)
      continue;
    prune_layer *L = &p->layers[p->n_layers];
    L->kernel = info.kernel;
    L->n = info.in_features * info.out_features;
    L->mask = calloc((size_t)(L->n ? L->n : 1), 1);
    if (!L->mask) {
      kiln_model_fail(m, KILN_E_NOMEM, "prune schedule: out of memory");
      return;
    }
    /* weights already zero (a previous fit of this schedule) stay masked */
    for (int64_t e = 0; e < L->n; e++) L->mask[e] = p->step > p->c.begin_step && L->kernel[e] == 0.0f;
    p->n_layers++;
  }
}

static int cmp_float(const void *a, const void *b) {
  float x = *(const float *)a, y = *(const float *)b;
  return (x > y) - (x < y);
}

static double target(const prune_ctx *p, int64_t t) {
  const kiln_prune_schedule_config *c = &p->c;
  if (t >= c->end_step) return c->final_sparsity;
  double f = 1.0 - (double)(t - c->begin_step) / (double)(c->end_step - c->begin_step);
  return c->final_sparsity + (c->initial_sparsity - c->final_sparsity) * pow(f, c->power);
}

/* Masks the k smallest |w| of the layer (already masked weights are 0, so smallest). */
static int update_mask(prune_layer *L, double sparsity) {
  int64_t k = (int64_t)floor(sparsity * (double)L->n + 1e-9);
  if (k <= 0) return 0;
  float *a = malloc((size_t)L->n * sizeof(float));
  if (!a) return -1;
  for (int64_t e = 0; e < L->n; e++) a[e] = L->mask[e] ? 0.0f : fabsf(L->kernel[e]);
  qsort(a, (size_t)L->n, sizeof(float), cmp_float);
  float thr = a[k - 1];
  free(a);
  int64_t budget = k;
  for (int64_t e = 0; e < L->n; e++) budget -= L->mask[e] || fabsf(L->kernel[e]) < thr;
  for (int64_t e = 0; e < L->n; e++) {
    if (L->mask[e]) continue;
    float v = fabsf(L->kernel[e]);
    if (v < thr) L->mask[e] = 1;
    else if (v == thr && budget > 0) {
      L->mask[e] = 1;
      budget--;
    }
  }
  return 0;
}

static void on_batch_end(void *ctx, kiln_model *m, int64_t batch, int64_t batches,
                         const kiln_logs *logs) {
  (void)batch;
  (void)batches;
  (void)logs;
  prune_ctx *p = ctx;
  int64_t t = p->step++;
  const kiln_prune_schedule_config *c = &p->c;
  int update = t >= c->begin_step && t <= c->end_step &&
               ((t - c->begin_step) % c->frequency == 0 || t == c->end_step);
  if (update) {
    double s = target(p, t);
    for (int i = 0; i < p->n_layers; i++)
      if (update_mask(&p->layers[i], s)) {
        kiln_model_fail(m, KILN_E_NOMEM, "prune schedule: out of memory");
        return;
      }
    p->applied = s;
  }
  for (int i = 0; i < p->n_layers; i++) {
    prune_layer *L = &p->layers[i];
    for (int64_t e = 0; e < L->n; e++)
      if (L->mask[e]) L->kernel[e] = 0.0f;
  }
}

kiln_status kiln_prune_schedule_create(const kiln_prune_schedule_config *c, kiln_callback *out,
                                       kiln_error *err) {
  if (!c || !out) return kiln_error_set(err, KILN_E_INVALID, "prune schedule: NULL argument");
  memset(out, 0, sizeof *out);
  if (!(c->final_sparsity >= 0 && c->final_sparsity < 1))
    return kiln_error_set(err, KILN_E_RANGE,
                          "prune schedule: final_sparsity %g is outside [0, 1)", c->final_sparsity);
  if (!(c->initial_sparsity >= 0 && c->initial_sparsity <= c->final_sparsity))
    return kiln_error_set(err, KILN_E_RANGE,
                          "prune schedule: initial_sparsity %g is outside [0, final_sparsity]",
                          c->initial_sparsity);
  if (c->begin_step < 0 || c->end_step <= c->begin_step)
    return kiln_error_set(err, KILN_E_INVALID,
                          "prune schedule: end_step %lld must be greater than begin_step %lld >= 0",
                          (long long)c->end_step, (long long)c->begin_step);
  if (c->frequency <= 0)
    return kiln_error_set(err, KILN_E_INVALID, "prune schedule: frequency %lld must be positive",
                          (long long)c->frequency);
  if (!(c->power > 0))
    return kiln_error_set(err, KILN_E_INVALID, "prune schedule: power %g must be positive",
                          c->power);
  prune_ctx *p = calloc(1, sizeof *p);
  if (!p) return kiln_error_set(err, KILN_E_NOMEM, "prune schedule: out of memory");
  p->kind = PRUNE_SCHEDULE_KIND;
  p->destroy = destroy;
  p->c = *c;
  out->ctx = p;
  out->destroy = destroy;
  out->on_train_begin = on_train_begin;
  out->on_batch_end = on_batch_end;
  return KILN_OK;
}

double kiln_prune_schedule_sparsity(const kiln_callback *cb) {
  const prune_ctx *p = cb ? cb->ctx : NULL;
  if (!p || p->kind != PRUNE_SCHEDULE_KIND || cb->on_batch_end != on_batch_end) return -1;
  return p->applied;
}

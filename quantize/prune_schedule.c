/* kiln quantize — pruning during training: TF Model Optimization's polynomial-decay
 * sparsity schedule as a kiln_callback. Masks are recomputed by magnitude every
 * `frequency` steps inside [begin_step, end_step] and applied after every batch, so
 * a masked weight that the optimizer moved is put back to zero. With block_k x block_n
 * the masking unit is a block (kiln_prune's blocks and RMS score), so the int8 runtime's
 * block-sparse kernel can skip the pruned 4 x 16 groups. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kiln/callbacks.h"
#include "kiln/quantize.h"

/* Tags the context so the accessors can tell this callback from others; freeing goes
 * through kiln_callback.destroy like every callback. */
#define PRUNE_SCHEDULE_KIND 0x4b43b101

/* A kernel is in_features (K) x units (N), row-major. Its masking units are blocks of
 * bk x bn (1 x 1 without the block option), block b covering rows from (b / nbn) * bk
 * and columns from (b % nbn) * bn (edge blocks smaller), as kiln_prune's blocks. */
typedef struct prune_layer {
  float *kernel;
  int64_t K, N, nbn, nb;
  unsigned char *mask; /* per block, 1 = pruned */
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

/* Sum of squares of block b (and zeroes it if zero). */
static double block_sumsq(const prune_ctx *p, const prune_layer *L, int64_t b, int zero) {
  int64_t bk = p->c.block_k > 0 ? p->c.block_k : 1, bn = p->c.block_n > 0 ? p->c.block_n : 1;
  int64_t k0 = (b / L->nbn) * bk, n0 = (b % L->nbn) * bn;
  int64_t k1 = k0 + bk < L->K ? k0 + bk : L->K, n1 = n0 + bn < L->N ? n0 + bn : L->N;
  double ss = 0;
  for (int64_t k = k0; k < k1; k++)
    for (int64_t n = n0; n < n1; n++) {
      float *w = &L->kernel[k * L->N + n];
      ss += (double)*w * (double)*w;
      if (zero) *w = 0.0f;
    }
  return ss;
}

/* The block's RMS (|w| for 1 x 1 blocks), kiln_prune's block score. */
static double block_rms(const prune_ctx *p, const prune_layer *L, int64_t b) {
  int64_t bk = p->c.block_k > 0 ? p->c.block_k : 1, bn = p->c.block_n > 0 ? p->c.block_n : 1;
  int64_t k0 = (b / L->nbn) * bk, n0 = (b % L->nbn) * bn;
  int64_t rows = (k0 + bk < L->K ? bk : L->K - k0), cols = (n0 + bn < L->N ? bn : L->N - n0);
  double ss = block_sumsq(p, L, b, 0);
  return sqrt(ss / (double)(rows * cols));
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
    int64_t bk = p->c.block_k > 0 ? p->c.block_k : 1, bn = p->c.block_n > 0 ? p->c.block_n : 1;
    L->kernel = info.kernel;
    L->K = info.in_features;
    L->N = info.out_features;
    L->nbn = (L->N + bn - 1) / bn;
    L->nb = ((L->K + bk - 1) / bk) * L->nbn;
    L->mask = calloc((size_t)(L->nb ? L->nb : 1), 1);
    if (!L->mask) {
      kiln_model_fail(m, KILN_E_NOMEM, "prune schedule: out of memory");
      return;
    }
    /* blocks already zero (a previous fit of this schedule) stay masked */
    for (int64_t b = 0; b < L->nb; b++)
      L->mask[b] = p->step > p->c.begin_step && block_sumsq(p, L, b, 0) == 0.0;
    p->n_layers++;
  }
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static double target(const prune_ctx *p, int64_t t) {
  const kiln_prune_schedule_config *c = &p->c;
  if (t >= c->end_step) return c->final_sparsity;
  double f = 1.0 - (double)(t - c->begin_step) / (double)(c->end_step - c->begin_step);
  return c->final_sparsity + (c->initial_sparsity - c->final_sparsity) * pow(f, c->power);
}

/* Masks the k blocks of least RMS (|w| for 1 x 1) of the layer (already masked ones are
 * 0, so smallest). */
static int update_mask(const prune_ctx *p, prune_layer *L, double sparsity) {
  int64_t k = (int64_t)floor(sparsity * (double)L->nb + 1e-9);
  if (k <= 0) return 0;
  double *sc = malloc((size_t)L->nb * sizeof(double));
  double *a = malloc((size_t)L->nb * sizeof(double));
  if (!sc || !a) {
    free(sc);
    free(a);
    return -1;
  }
  for (int64_t b = 0; b < L->nb; b++) sc[b] = L->mask[b] ? 0.0 : block_rms(p, L, b);
  memcpy(a, sc, (size_t)L->nb * sizeof(double));
  qsort(a, (size_t)L->nb, sizeof(double), cmp_double);
  double thr = a[k - 1];
  free(a);
  int64_t budget = k;
  for (int64_t b = 0; b < L->nb; b++) budget -= L->mask[b] || sc[b] < thr;
  for (int64_t e = 0; e < L->nb; e++) {
    if (L->mask[e]) continue;
    double v = sc[e];
    if (v < thr) L->mask[e] = 1;
    else if (v == thr && budget > 0) {
      L->mask[e] = 1;
      budget--;
    }
  }
  free(sc);
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
      if (update_mask(p, &p->layers[i], s)) {
        kiln_model_fail(m, KILN_E_NOMEM, "prune schedule: out of memory");
        return;
      }
    p->applied = s;
  }
  for (int i = 0; i < p->n_layers; i++) {
    prune_layer *L = &p->layers[i];
    if (L->nb == L->K * L->N) { /* 1 x 1 */
      for (int64_t e = 0; e < L->nb; e++)
        if (L->mask[e]) L->kernel[e] = 0.0f;
    } else {
      for (int64_t b = 0; b < L->nb; b++)
        if (L->mask[b]) block_sumsq(p, L, b, 1);
    }
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
  if ((c->block_k > 0 || c->block_n > 0) &&
      (c->block_k < 1 || c->block_n < 1 || c->block_k > 65536 || c->block_n > 65536))
    return kiln_error_set(err, KILN_E_RANGE,
                          "prune schedule: block %d x %d: both sides must be in [1, 65536]",
                          c->block_k, c->block_n);
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

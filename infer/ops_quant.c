/* kiln runtime — the quantized ops, plain C: QuantizeLinear, DequantizeLinear (per
 * tensor or per axis), DynamicQuantizeLinear, MatMulInteger, QLinearMatMul, and the
 * fused int8 Gemm step (the kernels of qgemm*.c, rows split across threads). */
#include <limits.h>
#include <math.h>
#include <stdatomic.h>
#include <string.h>

#include "session_internal.h"

/* Elements after dim axis, and the size of dim axis (1, 1 for per-tensor). */
static void axis_split(const kiln_qstep *q, const int64_t *dims, int rank, int64_t *inner,
                       int64_t *C) {
  *inner = 1;
  *C = 1;
  if (q->n_scale == 1) return;
  for (int i = q->axis + 1; i < rank; i++) *inner *= dims[i];
  *C = dims[q->axis];
}

void kiln_exec_quantize(kiln_session *s, const kiln_step *st, int64_t batch) {
  const kiln_rt_value *iv = &s->values[st->in[0]];
  const kiln_rt_value *ov = &s->values[st->out[0]];
  const kiln_qstep *q = st->q;
  int64_t d[KILN_IR_MAX_RANK], inner, C;
  int64_t n = kiln_shape_eval(&iv->shape, batch, d);
  axis_split(q, d, iv->shape.rank, &inner, &C);
  const float *x = s->ptr[st->in[0]];
  int u = ov->dtype == KILN_DTYPE_UINT8;
  void *y = s->ptr[st->out[0]];
  if (C == 1) { /* per tensor: a loop the compiler can vectorize */
    s->quantize_row(x, n, q->scale[0], q->zp[0], q->lo, q->hi, y);
    return;
  }
  for (int64_t i = 0; i < n; i++) {
    int64_t c = (i / inner) % C;
    int32_t v = kiln_q_quantize(x[i], q->scale[c], q->zp[c], q->lo, q->hi);
    if (u) ((uint8_t *)y)[i] = (uint8_t)v;
    else ((int8_t *)y)[i] = (int8_t)v;
  }
}

void kiln_exec_dequantize(kiln_session *s, const kiln_step *st, int64_t batch) {
  const kiln_rt_value *iv = &s->values[st->in[0]];
  const kiln_qstep *q = st->q;
  int64_t d[KILN_IR_MAX_RANK], inner, C;
  int64_t n = kiln_shape_eval(&iv->shape, batch, d);
  axis_split(q, d, iv->shape.rank, &inner, &C);
  const void *x = s->ptr[st->in[0]];
  float *y = s->ptr[st->out[0]];
  for (int64_t i = 0; i < n; i++) {
    int64_t c = C == 1 ? 0 : (i / inner) % C;
    int64_t v;
    switch (iv->dtype) {
      case KILN_DTYPE_UINT8: v = ((const uint8_t *)x)[i]; break;
      case KILN_DTYPE_INT32: v = ((const int32_t *)x)[i]; break;
      default: v = ((const int8_t *)x)[i]; break;
    }
    y[i] = (float)(v - q->zp[c]) * q->scale[c];
  }
}

void kiln_exec_dynquant(kiln_session *s, const kiln_step *st, int64_t batch) {
  const kiln_rt_value *iv = &s->values[st->in[0]];
  int64_t d[KILN_IR_MAX_RANK];
  int64_t n = kiln_shape_eval(&iv->shape, batch, d);
  const float *x = s->ptr[st->in[0]];
  uint8_t *y = s->ptr[st->out[0]];
  float lo = 0.0f, hi = 0.0f;
  for (int64_t i = 0; i < n; i++) {
    if (x[i] < lo) lo = x[i];
    if (x[i] > hi) hi = x[i];
  }
  float scale = (hi - lo) / 255.0f;
  int32_t zp = 0;
  if (scale > 0.0f && isfinite(scale)) {
    float z = -lo / scale;
    z = z < 0.0f ? 0.0f : z > 255.0f ? 255.0f : z;
    zp = (int32_t)rintf(z);
    for (int64_t i = 0; i < n; i++) y[i] = (uint8_t)kiln_q_quantize(x[i], scale, zp, 0, 255);
  } else {
    scale = 0.0f; /* all zeros (or not finite): y = 0 dequantizes to 0 */
    if (n) memset(y, 0, (size_t)n);
  }
  if (st->n_out > 1) *(float *)s->ptr[st->out[1]] = scale;
  if (st->n_out > 2) *(uint8_t *)s->ptr[st->out[2]] = (uint8_t)zp;
}

static inline int32_t load_q(const void *p, int64_t i, int u) {
  return u ? ((const uint8_t *)p)[i] : ((const int8_t *)p)[i];
}

void kiln_exec_matmul_integer(kiln_session *s, const kiln_step *st, int64_t batch) {
  const kiln_qstep *q = st->q;
  const kiln_rt_value *av = &s->values[st->in[0]], *bv = &s->values[st->in[1]];
  int64_t d[KILN_IR_MAX_RANK];
  int64_t an = kiln_shape_eval(&av->shape, batch, d);
  int64_t K = q->K, N = q->N, M = K ? an / K : 0;
  int au = av->dtype == KILN_DTYPE_UINT8, bu = bv->dtype == KILN_DTYPE_UINT8;
  const void *a = s->ptr[st->in[0]], *b = s->ptr[st->in[1]];
  int32_t azp = 0;
  if (q->in_azp >= 0) azp = load_q(s->ptr[st->in[q->in_azp]], 0, au);
  const void *bzp = q->in_bzp >= 0 ? s->ptr[st->in[q->in_bzp]] : NULL;
  int64_t nbzp = q->in_bzp >= 0 ? kiln_shape_eval(&s->values[st->in[q->in_bzp]].shape, batch, d) : 0;
  int32_t *y = s->ptr[st->out[0]];
  for (int64_t m = 0; m < M; m++) {
    int32_t *yr = y + m * N;
    for (int64_t n = 0; n < N; n++) yr[n] = 0;
    for (int64_t k = 0; k < K; k++) {
      int32_t x = load_q(a, m * K + k, au) - azp;
      if (!x) continue;
      for (int64_t n = 0; n < N; n++) {
        int32_t z = bzp ? load_q(bzp, nbzp == 1 ? 0 : n, bu) : 0;
        yr[n] += x * (load_q(b, k * N + n, bu) - z);
      }
    }
  }
}

void kiln_exec_qlinear_matmul(kiln_session *s, const kiln_step *st, int64_t batch) {
  const kiln_qstep *q = st->q;
  const kiln_rt_value *av = &s->values[st->in[0]];
  int64_t d[KILN_IR_MAX_RANK];
  int64_t an = kiln_shape_eval(&av->shape, batch, d);
  int64_t K = q->K, N = q->N, M = K ? an / K : 0;
  const void *a = s->ptr[st->in[0]], *b = s->ptr[st->in[1]];
  void *y = s->ptr[st->out[0]];
  for (int64_t m = 0; m < M; m++)
    for (int64_t n = 0; n < N; n++) {
      int64_t acc = 0;
      for (int64_t k = 0; k < K; k++)
        acc += (int64_t)(load_q(a, m * K + k, q->x_unsigned) - q->zp_x) *
               (load_q(b, k * N + n, q->b_unsigned) - q->zp_b[n]);
      if (acc > INT32_MAX) acc = INT32_MAX;
      if (acc < INT32_MIN) acc = INT32_MIN;
      int64_t v = (int64_t)q->zp_y + kiln_q_mul((int32_t)acc, q->mult[n], q->shift[n]);
      v = v < q->lo ? q->lo : v > q->hi ? q->hi : v;
      if (q->y_unsigned) ((uint8_t *)y)[m * N + n] = (uint8_t)v;
      else ((int8_t *)y)[m * N + n] = (int8_t)v;
    }
}

typedef struct qgemm_task {
  kiln_session *s;
  kiln_qgemm_args g;
  atomic_llong next;  /* the next row block to claim */
  int64_t chunk;      /* row blocks per claim */
} qgemm_task;

/* Threads claim chunks of row blocks until none is left: a thread the OS schedules late
 * (another process on its core) does less, instead of holding up the others. Each row's
 * result does not depend on who computes it. */
static void qgemm_worker(void *arg, int tid, int n) {
  qgemm_task *t = arg;
  const kiln_qgemm_kernel *k = t->s->qkern;
  int64_t blocks = (t->g.M + k->mr - 1) / k->mr;
  (void)n;
  for (;;) {
    int64_t b0 = (int64_t)atomic_fetch_add_explicit(&t->next, (long long)t->chunk, memory_order_relaxed);
    if (b0 >= blocks) break;
    int64_t m0 = b0 * k->mr, m1 = (b0 + t->chunk) * k->mr;
    if (m1 > t->g.M) m1 = t->g.M;
    kiln_qgemm_run(k, &t->g, m0, m1, t->s->qws[tid]);
  }
}

/* The arguments of one QGEMM step at this batch. */
static void qgemm_args_of(kiln_session *s, const kiln_step *st, int64_t batch, kiln_qgemm_args *g) {
  const kiln_qstep *q = st->q;
  const kiln_rt_value *iv = &s->values[st->in[0]];
  int64_t d[KILN_IR_MAX_RANK];
  int64_t n = kiln_shape_eval(&iv->shape, batch, d);
  memset(g, 0, sizeof *g);
  g->K = q->K;
  g->N = q->N;
  g->M = q->K ? n / q->K : 0;
  g->x = q->x_float ? NULL : s->ptr[st->in[0]];
  g->xf = q->x_float ? s->ptr[st->in[0]] : NULL;
  g->xf_scale = q->xf_scale;
  g->xf_zp = q->xf_zp;
  g->xf_row = s->quantize_row;
  g->x_unsigned = q->x_unsigned;
  g->pb = q->pb;
  g->sp = q->has_sp ? &q->sp : NULL;
  g->bias = q->bias;
  g->mult = q->mult;
  g->shift = q->shift;
  g->zp_y = q->zp_y;
  g->lo = q->lo;
  g->hi = q->hi;
  g->y = s->ptr[st->out[0]];
  g->y_unsigned = q->y_unsigned;
  g->y_float = q->y_float;
  g->yf_scale = q->yf_scale;
  g->yf_bias = q->yf_bias;
  g->yf_relu = q->yf_relu;
}

void kiln_exec_qgemm(kiln_session *s, const kiln_step *st, int64_t batch) {
  qgemm_task t;
  memset(&t, 0, sizeof t);
  atomic_init(&t.next, 0);
  t.s = s;
  qgemm_args_of(s, st, batch, &t.g);
  int nt = s->has_pool ? s->pool.n : 1;
  double work = (double)t.g.M * (double)t.g.N * (double)t.g.K;
  int64_t blocks = (t.g.M + s->qkern->mr - 1) / s->qkern->mr;
  if (nt > 1 && work >= 8.0e6 && t.g.M >= (int64_t)2 * s->qkern->mr * nt) {
    t.chunk = blocks / (8 * nt) > 1 ? blocks / (8 * nt) : 1;
    kiln_pool_run_dynamic(&s->pool, qgemm_worker, &t);
  } else {
    t.chunk = blocks > 0 ? blocks : 1;
    qgemm_worker(&t, 0, 1);
  }
}

/* Consecutive QGEMM steps, each reading the one before (an int8 MLP), run as one task:
 * each claimed chunk of rows goes through every layer in turn (row r of a layer needs
 * only row r of the one before), so small layers share the threads with one wake-up and
 * no barrier between layers. */
typedef struct qchain_task {
  kiln_session *s;
  int n;
  kiln_qgemm_args g[KILN_QCHAIN_MAX];
  atomic_llong next;
  int64_t chunk;
} qchain_task;

static void qchain_worker(void *arg, int tid, int nt) {
  qchain_task *t = arg;
  const kiln_qgemm_kernel *k = t->s->qkern;
  int64_t M = t->g[0].M, blocks = (M + k->mr - 1) / k->mr;
  (void)nt;
  for (;;) {
    int64_t b0 = (int64_t)atomic_fetch_add_explicit(&t->next, (long long)t->chunk, memory_order_relaxed);
    if (b0 >= blocks) break;
    int64_t m0 = b0 * k->mr, m1 = (b0 + t->chunk) * k->mr;
    if (m1 > M) m1 = M;
    for (int l = 0; l < t->n; l++) kiln_qgemm_run(k, &t->g[l], m0, m1, t->s->qws[tid]);
  }
}

int kiln_qgemm_chain_len(const kiln_session *s, int i) {
  int n = 0;
  while (i + n < s->n_steps && n < KILN_QCHAIN_MAX && s->steps[i + n].op == KILN_OP_QGEMM &&
         (n == 0 || s->steps[i + n].in[0] == s->steps[i + n - 1].out[0]))
    n++;
  return n;
}

void kiln_exec_qgemm_chain(kiln_session *s, const kiln_step *st, int n, int64_t batch) {
  int nt = s->has_pool ? s->pool.n : 1;
  qchain_task t;
  memset(&t, 0, sizeof t);
  atomic_init(&t.next, 0);
  t.s = s;
  t.n = n;
  double work = 0;
  int same_m = 1;
  for (int l = 0; l < n; l++) {
    qgemm_args_of(s, &st[l], batch, &t.g[l]);
    work += (double)t.g[l].M * (double)t.g[l].N * (double)t.g[l].K;
    same_m &= t.g[l].M == t.g[0].M;
  }
  int64_t M = t.g[0].M, blocks = (M + s->qkern->mr - 1) / s->qkern->mr;
  if (nt > 1 && same_m && work >= KILN_QCHAIN_SPLIT_WORK && M >= (int64_t)2 * s->qkern->mr * nt) {
    t.chunk = blocks / (8 * nt) > 1 ? blocks / (8 * nt) : 1;
    kiln_pool_run_dynamic(&s->pool, qchain_worker, &t);
    return;
  }
  for (int l = 0; l < n; l++) kiln_exec_qgemm(s, &st[l], batch);
}

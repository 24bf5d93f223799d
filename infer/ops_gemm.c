/* kiln runtime — the Gemm/MatMul step: packed constant weights or B packed at run
 * time, C broadcast, fused bias and activation, rows (or column panels) split across
 * the session's threads, and the sparse-row gather (mostly-zero rows, token ids). */
#include <string.h>

#include "session_internal.h"

typedef struct gemm_task {
  kiln_session *s;
  kiln_gemm_args g;
  int mode; /* 0 dense SGEMM, 1 gather the non-zeros of each row, 2 token ids */
  int by_panels;
  const int64_t *offsets;
  const int32_t *tokens;
} gemm_task;

static void row_range(int64_t M, int mr, int tid, int n, int64_t *m0, int64_t *m1) {
  int64_t blocks = (M + mr - 1) / mr;
  int64_t b0 = blocks * tid / n, b1 = blocks * (tid + 1) / n;
  *m0 = b0 * mr < M ? b0 * mr : M;
  *m1 = b1 * mr < M ? b1 * mr : M;
}

/* The distinct in-range ids of one row, in first-seen order, into idx (n + 1 slots).
 * Branch-free: mark[id] holds the stamp of the last row that saw id, so the marks are
 * never cleared (only when the stamp wraps); out-of-range ids go to slot K, stamped
 * as seen. */
static int64_t dedupe_tokens(uint32_t *mark, uint32_t *gen, uint32_t K, const int32_t *tok,
                             int64_t n, int32_t *idx) {
  uint32_t g = *gen + 1;
  if (g == 0) { /* wrapped: start over */
    memset(mark, 0, ((size_t)K + 1) * sizeof *mark);
    g = 1;
  }
  *gen = g;
  mark[K] = g;
  int64_t nnz = 0;
  for (int64_t p = 0; p < n; p++) {
    uint32_t u = (uint32_t)tok[p];
    u = u < K ? u : K;
    idx[nnz] = (int32_t)u;
    nnz += mark[u] != g;
    mark[u] = g;
  }
  return nnz;
}

static void gemm_worker(void *arg, int tid, int n) {
  gemm_task *t = arg;
  kiln_session *s = t->s;
  const kiln_sgemm_kernel *k = s->kern;
  int64_t P = kiln_sgemm_panels(k, t->g.N);
  if (t->mode == 0) {
    if (t->by_panels) {
      kiln_sgemm_run(k, &t->g, 0, t->g.M, P * tid / n, P * (tid + 1) / n, s->ws[tid]);
    } else {
      int64_t m0, m1;
      row_range(t->g.M, k->mr, tid, n, &m0, &m1);
      kiln_sgemm_run(k, &t->g, m0, m1, 0, P, s->ws[tid]);
    }
    return;
  }
  int64_t m0 = t->g.M * tid / n, m1 = t->g.M * (tid + 1) / n;
  float acc[KILN_SGEMM_MAX_NR];
  int32_t *idx = s->nz_idx[tid];
  int64_t K = t->g.K;
  for (int64_t i = m0; i < m1; i++) {
    if (t->mode == 1) {
      float *val = s->nz_val[tid];
      int64_t nnz = k->nzscan(t->g.a + i * t->g.rsa, K, idx, val);
      kiln_sgemm_gather_row(k, &t->g, i, idx, val, nnz, acc);
    } else {
      int64_t nnz = dedupe_tokens(s->marks[tid], &s->mark_gen[tid], (uint32_t)K,
                                  t->tokens + t->offsets[i], t->offsets[i + 1] - t->offsets[i], idx);
      kiln_sgemm_gather_row(k, &t->g, i, idx, NULL, nnz, acc);
    }
  }
}

/* Dense rows are split among threads when there is enough work to pay the wake-up:
 * ~100 us of work (4 M multiply-adds) for a lone call; from 256 k when such calls come
 * back to back and the workers are still spinning (a batch-1 loop over a wide layer). */
static void dispatch(kiln_session *s, gemm_task *t) {
  const kiln_sgemm_kernel *k = s->kern;
  int n = s->has_pool ? s->pool.n : 1;
  double work = (double)t->g.M * (double)t->g.N * (double)(t->g.K ? t->g.K : 1);
  /* token rows: the work is the weight rows gathered (a dependent, cache-missing load
   * each, ~8 FMAs' worth per float), not M x N x K */
  if (t->mode == 2) work = 8.0 * (double)(t->offsets[t->g.M] - t->offsets[0]) * (double)t->g.N;
  int split = work >= 4.0e6 ||
              (n > 1 && t->mode == 0 && work >= 2.56e5 && kiln_pool_small_task_ok(&s->pool));
  if (n > 1 && split) {
    if (t->mode != 0) {
      if (t->g.M >= n) {
        kiln_pool_run(&s->pool, gemm_worker, t);
        return;
      }
    } else if (t->g.M >= (int64_t)2 * k->mr * n) {
      t->by_panels = 0;
      kiln_pool_run(&s->pool, gemm_worker, t);
      return;
    } else if (kiln_sgemm_panels(k, t->g.N) >= n) {
      t->by_panels = 1;
      kiln_pool_run(&s->pool, gemm_worker, t);
      return;
    }
  }
  t->by_panels = 0;
  gemm_worker(t, 0, 1);
}

/* Whether the first rows of A are mostly zeros (< 10% non-zeros): checked on a few
 * rows so a dense batch pays almost nothing. */
static int rows_sparse(const float *a, int64_t M, int64_t K, int64_t rsa) {
  int64_t rows = M < 4 ? M : 4;
  for (int64_t i = 0; i < rows; i++) {
    const float *r = a + i * rsa;
    int64_t nnz = 0;
    for (int64_t kk = 0; kk < K; kk++) nnz += r[kk] != 0.0f;
    if (nnz * 10 >= K) return 0;
  }
  return rows > 0;
}

/* out[i, j] = beta * C broadcast to [M, N] (C rank 0..2). */
static void prefill_c(const kiln_rt_value *cv, const float *c, int64_t batch, float beta,
                      float *out, int64_t M, int64_t N) {
  int64_t dims[KILN_IR_MAX_RANK];
  kiln_shape_eval(&cv->shape, batch, dims);
  int64_t cm = cv->shape.rank == 2 ? dims[0] : 1;
  int64_t cn = cv->shape.rank >= 1 ? dims[cv->shape.rank - 1] : 1;
  for (int64_t i = 0; i < M; i++) {
    const float *cr = c + (cm == 1 ? 0 : i) * cn;
    float *o = out + i * N;
    if (cn == 1)
      for (int64_t j = 0; j < N; j++) o[j] = beta * cr[0];
    else
      for (int64_t j = 0; j < N; j++) o[j] = beta * cr[j];
  }
}

static void gemm_2d(kiln_session *s, const kiln_step *st, int64_t batch) {
  const kiln_rt_value *av = &s->values[st->in[0]], *bv = &s->values[st->in[1]];
  int64_t ad[KILN_IR_MAX_RANK], bd[KILN_IR_MAX_RANK];
  kiln_shape_eval(&av->shape, batch, ad);
  kiln_shape_eval(&bv->shape, batch, bd);
  const float *a = s->ptr[st->in[0]];
  float *out = s->ptr[st->out[0]];
  gemm_task t;
  memset(&t, 0, sizeof t);
  t.s = s;
  int64_t M = st->trans_a ? ad[1] : ad[0];
  t.g.M = M;
  t.g.N = st->N;
  t.g.K = st->K;
  t.g.a = a;
  t.g.rsa = st->trans_a ? 1 : ad[1];
  t.g.csa = st->trans_a ? ad[1] : 1;
  t.g.c = out;
  t.g.ldc = st->N;
  t.g.alpha = st->alpha;
  t.g.beta = 0.0f;
  t.g.bias = st->bias;
  t.g.act = st->act;
  t.g.act_alpha = st->act_alpha;
  if (st->bp) {
    t.g.bp = st->bp;
  } else {
    const float *b = s->ptr[st->in[1]];
    int64_t rsb = st->trans_b ? 1 : bd[1], csb = st->trans_b ? bd[1] : 1;
    kiln_sgemm_pack_b(s->kern, st->K, st->N, b, rsb, csb, s->scratch_b);
    t.g.bp = s->scratch_b;
  }
  if (st->c_value >= 0) {
    prefill_c(&s->values[st->c_value], s->ptr[st->c_value], batch, st->beta, out, M, st->N);
    t.g.beta = 1.0f;
  }
  if (st->sparse_ok && rows_sparse(a, M, st->K, t.g.rsa)) t.mode = 1;
  dispatch(s, &t);
}

static void matmul(kiln_session *s, const kiln_step *st, int64_t batch) {
  const kiln_rt_value *av = &s->values[st->in[0]], *bv = &s->values[st->in[1]];
  const kiln_rt_value *ov = &s->values[st->out[0]];
  int64_t ad[KILN_IR_MAX_RANK], bd[KILN_IR_MAX_RANK], od[KILN_IR_MAX_RANK];
  int64_t an = kiln_shape_eval(&av->shape, batch, ad);
  kiln_shape_eval(&bv->shape, batch, bd);
  kiln_shape_eval(&ov->shape, batch, od);
  const float *a = s->ptr[st->in[0]];
  float *out = s->ptr[st->out[0]];
  int64_t K = st->K, N = st->N;
  gemm_task t;
  memset(&t, 0, sizeof t);
  t.s = s;
  t.g.N = N;
  t.g.K = K;
  t.g.rsa = K;
  t.g.csa = 1;
  t.g.ldc = N;
  t.g.alpha = 1.0f;
  t.g.bias = st->bias;
  t.g.act = st->act;
  t.g.act_alpha = st->act_alpha;
  if (st->bp) {
    /* A constant 2-D B: every leading dim of A folds into M. */
    t.g.M = K ? an / K : 0;
    t.g.a = a;
    t.g.c = out;
    t.g.bp = st->bp;
    if (st->sparse_ok && rows_sparse(a, t.g.M, K, K)) t.mode = 1;
    dispatch(s, &t);
    return;
  }
  /* Batched: broadcast the leading dims, pack each B matrix into the scratch. */
  int ar = av->shape.rank, br = bv->shape.rank;
  int64_t M = ar >= 2 ? ad[ar - 2] : 1;
  int la = ar > 2 ? ar - 2 : 0, lb = br > 2 ? br - 2 : 0;
  int lo = la > lb ? la : lb;
  int64_t ldims[KILN_IR_MAX_RANK] = {0}, sa[KILN_IR_MAX_RANK] = {0}, sb[KILN_IR_MAX_RANK] = {0};
  int64_t count = 1;
  for (int i = 0; i < lo; i++) {
    int ia = i - (lo - la), ib = i - (lo - lb);
    int64_t da = ia >= 0 ? ad[ia] : 1, db = ib >= 0 ? bd[ib] : 1;
    ldims[i] = da > db ? da : db;
    if (da == 0 || db == 0) ldims[i] = 0;
    count *= ldims[i];
  }
  kiln_broadcast_strides(la, ad, lo, ldims, sa);
  kiln_broadcast_strides(lb, bd, lo, ldims, sb);
  const float *b = s->ptr[st->in[1]];
  int64_t idx[KILN_IR_MAX_RANK] = {0};
  int64_t rsb = br >= 2 ? N : 1, csb = br >= 2 ? 1 : 0;
  for (int64_t c = 0; c < count; c++) {
    int64_t ao = 0, bo = 0;
    for (int i = 0; i < lo; i++) {
      ao += idx[i] * sa[i];
      bo += idx[i] * sb[i];
    }
    kiln_sgemm_pack_b(s->kern, K, N, b + bo * K * N, rsb, csb, s->scratch_b);
    t.g.M = M;
    t.g.a = a + ao * M * K;
    t.g.c = out + c * M * N;
    t.g.bp = s->scratch_b;
    t.g.beta = 0.0f;
    t.mode = 0;
    dispatch(s, &t);
    for (int i = lo - 1; i >= 0; i--) {
      if (++idx[i] < ldims[i]) break;
      idx[i] = 0;
    }
  }
}

void kiln_exec_gemm(kiln_session *s, const kiln_step *st, int64_t batch) {
  if (st->is_matmul) matmul(s, st, batch);
  else gemm_2d(s, st, batch);
}

void kiln_exec_gemm_tokens(kiln_session *s, const kiln_step *st, int64_t rows,
                           const int64_t *offsets, const int32_t *tokens) {
  gemm_task t;
  memset(&t, 0, sizeof t);
  t.s = s;
  t.g.M = rows;
  t.g.N = st->N;
  t.g.K = st->K;
  t.g.bp = st->bp;
  t.g.c = s->ptr[st->out[0]];
  t.g.ldc = st->N;
  t.g.alpha = st->is_matmul ? 1.0f : st->alpha;
  t.g.bias = st->bias;
  t.g.act = st->act;
  t.g.act_alpha = st->act_alpha;
  if (st->c_value >= 0) {
    prefill_c(&s->values[st->c_value], s->ptr[st->c_value], rows, st->beta, t.g.c, rows, st->N);
    t.g.beta = 1.0f;
  }
  t.mode = 2;
  t.offsets = offsets;
  t.tokens = tokens;
  dispatch(s, &t);
}

/* kiln runtime — the naive SGEMM (the truth), the portable C micro-kernel and the
 * blocked driver that every path (ref, AVX2, AVX-512, NEON) runs through. */
#include "sgemm.h"

#include <math.h>
#include <string.h>

void kiln_sgemm_naive(int64_t M, int64_t N, int64_t K, float alpha, const float *a, int64_t rsa,
                      int64_t csa, const float *b, int64_t rsb, int64_t csb, float beta, float *c,
                      int64_t ldc) {
  for (int64_t i = 0; i < M; i++)
    for (int64_t j = 0; j < N; j++) {
      double s = 0.0;
      for (int64_t k = 0; k < K; k++) s += (double)a[i * rsa + k * csa] * b[k * rsb + j * csb];
      float prev = beta == 0.0f ? 0.0f : beta * c[i * ldc + j];
      c[i * ldc + j] = (float)(alpha * s) + prev;
    }
}

void kiln_act_apply(kiln_act act, float alpha, float *x, int64_t n) {
  switch (act) {
    case KILN_ACT_NONE: break;
    case KILN_ACT_RELU:
      for (int64_t i = 0; i < n; i++) x[i] = x[i] > 0.0f ? x[i] : 0.0f;
      break;
    case KILN_ACT_LEAKY_RELU:
      for (int64_t i = 0; i < n; i++) x[i] = x[i] >= 0.0f ? x[i] : alpha * x[i];
      break;
    case KILN_ACT_SIGMOID:
      /* Split by sign so expf never overflows into inf/inf. */
      for (int64_t i = 0; i < n; i++) {
        float v = x[i];
        if (v >= 0.0f) {
          x[i] = 1.0f / (1.0f + expf(-v));
        } else {
          float e = expf(v);
          x[i] = e / (1.0f + e);
        }
      }
      break;
    case KILN_ACT_TANH:
      for (int64_t i = 0; i < n; i++) x[i] = tanhf(x[i]);
      break;
  }
}

/* --- the portable micro-kernel: 4 x 8 -------------------------------------- */

#define REF_MR 4
#define REF_NR 8

static void micro_ref(int64_t kc, const float *pa, const float *pb, float *tile) {
  float acc[REF_MR * REF_NR];
  memset(acc, 0, sizeof acc);
  for (int64_t k = 0; k < kc; k++) {
    for (int i = 0; i < REF_MR; i++) {
      float ai = pa[k * REF_MR + i];
      for (int j = 0; j < REF_NR; j++) acc[i * REF_NR + j] += ai * pb[k * REF_NR + j];
    }
  }
  memcpy(tile, acc, sizeof acc);
}

static void gemv_ref(int64_t K, const float *a, const float *pb, float *out) {
  float acc[REF_NR] = {0};
  for (int64_t k = 0; k < K; k++)
    for (int j = 0; j < REF_NR; j++) acc[j] += a[k] * pb[k * REF_NR + j];
  memcpy(out, acc, sizeof acc);
}

void kiln_tile_store_row(const kiln_tile_store *st, int i, const float *r) {
  float *c = st->c + i * st->ldc;
  for (int j = 0; j < st->n; j++) {
    float v = r[j];
    if (st->acc) v += c[j];
    if (st->bias) v += st->bias[j];
    if (st->relu) v = v > 0.0f ? v : 0.0f;
    c[j] = v;
  }
}

static void micro_rs_ref(int64_t kc, const float *a, int64_t rsa, const float *pb,
                         const kiln_tile_store *st) {
  float acc[REF_MR * REF_NR];
  memset(acc, 0, sizeof acc);
  for (int64_t k = 0; k < kc; k++)
    for (int i = 0; i < REF_MR; i++) {
      float ai = a[i * rsa + k];
      for (int j = 0; j < REF_NR; j++) acc[i * REF_NR + j] += ai * pb[k * REF_NR + j];
    }
  for (int i = 0; i < REF_MR; i++) kiln_tile_store_row(st, i, acc + i * REF_NR);
}

void kiln_gather_ref(const float *panel, int nr, const int32_t *idx, const float *val,
                     int64_t nnz, int ncols, float *acc) {
  for (int j = 0; j < ncols; j++) acc[j] = 0.0f;
  for (int64_t t = 0; t < nnz; t++) {
    const float *b = panel + (int64_t)idx[t] * nr;
    float v = val ? val[t] : 1.0f;
    for (int j = 0; j < ncols; j++) acc[j] += v * b[j];
  }
}

int64_t kiln_nzscan_ref(const float *x, int64_t K, int32_t *idx, float *val) {
  int64_t n = 0;
  for (int64_t k = 0; k < K; k++)
    if (x[k] != 0.0f) {
      idx[n] = (int32_t)k;
      val[n++] = x[k];
    }
  return n;
}

void kiln_rowdot_ref(int64_t M, int64_t K, const float *a, int64_t rsa, const float *w,
                     float *out) {
  for (int64_t i = 0; i < M; i++) {
    float s = 0.0f;
    for (int64_t k = 0; k < K; k++) s += a[i * rsa + k] * w[k];
    out[i] = s;
  }
}

static const kiln_sgemm_kernel REF_KERNEL = {KILN_KERNEL_REF, "ref", REF_MR, REF_NR, 256, 128,
                                             micro_ref, gemv_ref, micro_rs_ref, kiln_gather_ref,
                                             kiln_nzscan_ref, kiln_rowdot_ref};

const kiln_sgemm_kernel *kiln_sgemm_kernel_ref(void) { return &REF_KERNEL; }

/* --- packing and the driver ------------------------------------------------ */

size_t kiln_sgemm_packed_b_floats(const kiln_sgemm_kernel *k, int64_t K, int64_t N) {
  return (size_t)(K > 0 ? K : 1) * (size_t)kiln_sgemm_panels(k, N) * (size_t)k->nr +
         (N == 1 ? (size_t)(K > 0 ? K : 1) : 0);
}

size_t kiln_sgemm_workspace_floats(const kiln_sgemm_kernel *k, int64_t K) {
  size_t blk = (size_t)k->mc * (size_t)k->kc;
  size_t row = (size_t)(K > 0 ? K : 1);
  /* + 16 floats so a caller can align the start to 64 bytes */
  return (blk > row ? blk : row) + 16;
}

void kiln_sgemm_pack_b(const kiln_sgemm_kernel *k, int64_t K, int64_t N, const float *b,
                       int64_t rsb, int64_t csb, float *out) {
  int nr = k->nr;
  int64_t panels = kiln_sgemm_panels(k, N);
  for (int64_t p = 0; p < panels; p++) {
    float *dst = out + p * K * nr;
    int64_t n0 = p * nr;
    int64_t nn = N - n0 < nr ? N - n0 : nr;
    for (int64_t kk = 0; kk < K; kk++) {
      const float *src = b + kk * rsb + n0 * csb;
      int64_t j = 0;
      for (; j < nn; j++) dst[kk * nr + j] = src[j * csb];
      for (; j < nr; j++) dst[kk * nr + j] = 0.0f;
    }
  }
  if (N == 1)
    for (int64_t kk = 0; kk < K; kk++) out[K * nr + kk] = b[kk * rsb];
}

/* Rows [i0, i0+mb) x k [k0, k0+kb) of A into panels of mr rows, k-major, zero-padded. */
static void pack_a(int mr, const kiln_gemm_args *g, int64_t i0, int64_t mb, int64_t k0,
                   int64_t kb, float *dst) {
  for (int64_t ir = 0; ir < mb; ir += mr) {
    float *d = dst + (ir / mr) * kb * mr;
    int64_t rows = mb - ir < mr ? mb - ir : mr;
    const float *src = g->a + (i0 + ir) * g->rsa + k0 * g->csa;
    if (g->csa == 1) {
      for (int64_t r = 0; r < rows; r++) {
        const float *s = src + r * g->rsa;
        for (int64_t kk = 0; kk < kb; kk++) d[kk * mr + r] = s[kk];
      }
    } else {
      for (int64_t kk = 0; kk < kb; kk++)
        for (int64_t r = 0; r < rows; r++) d[kk * mr + r] = src[r * g->rsa + kk * g->csa];
    }
    for (int64_t r = rows; r < mr; r++)
      for (int64_t kk = 0; kk < kb; kk++) d[kk * mr + r] = 0.0f;
  }
}

/* Merges an m x n corner of tile (stride nr) into C at (row, col). */
static void epilogue(const kiln_gemm_args *g, const float *tile, int nr, int64_t row, int64_t m,
                     int64_t col, int64_t n, int first, int last) {
  float alpha = g->alpha, beta = g->beta;
  for (int64_t i = 0; i < m; i++) {
    float *c = g->c + (row + i) * g->ldc + col;
    const float *t = tile + i * nr;
    if (!first) {
      for (int64_t j = 0; j < n; j++) c[j] += alpha * t[j];
    } else if (beta == 0.0f) {
      for (int64_t j = 0; j < n; j++) c[j] = alpha * t[j];
    } else {
      for (int64_t j = 0; j < n; j++) c[j] = alpha * t[j] + beta * c[j];
    }
    if (last) {
      if (g->bias)
        for (int64_t j = 0; j < n; j++) c[j] += g->bias[col + j];
      if (g->act != KILN_ACT_NONE) kiln_act_apply(g->act, g->act_alpha, c, n);
    }
  }
}

/* N = 1: a dot product per row against the contiguous copy of the column. */
static void run_rowdot(const kiln_sgemm_kernel *k, const kiln_gemm_args *g, int64_t m0,
                       int64_t m1, float *tile) {
  const float *w = g->bp + g->K * k->nr;
  const int64_t chunk = KILN_SGEMM_MAX_MR * KILN_SGEMM_MAX_NR;
  for (int64_t i = m0; i < m1; i += chunk) {
    int64_t m = m1 - i < chunk ? m1 - i : chunk;
    k->rowdot(m, g->K, g->a + i * g->rsa, g->rsa, w, tile);
    epilogue(g, tile, 1, i, m, 0, 1, 1, 1);
  }
}

/* A read in place (row-major, csa == 1): no packing; where alpha is 1, beta 0 or 1 and
 * the activation none or ReLU the micro-kernel stores bias + activation straight to C. */
static void run_inplace(const kiln_sgemm_kernel *k, const kiln_gemm_args *g, int64_t m0,
                        int64_t m1, int64_t p0, int64_t p1, float *ws, float *tile) {
  int mr = k->mr, nr = k->nr;
  int64_t K = g->K, N = g->N;
  int fused = g->alpha == 1.0f && (g->beta == 0.0f || g->beta == 1.0f) &&
              (g->act == KILN_ACT_NONE || g->act == KILN_ACT_RELU);
  int64_t nkb = (K + k->kc - 1) / k->kc, kc = (K + nkb - 1) / nkb;
  for (int64_t pc = 0; pc < K; pc += kc) {
    int64_t kb = K - pc < kc ? K - pc : kc;
    int first = pc == 0, last = pc + kb >= K;
    /* Blocks of mc rows, panel by panel: a B panel stays in cache across the block's
     * row groups, the block's rows across the panels. */
    for (int64_t ic = m0; ic < m1; ic += k->mc) {
      int64_t ie = m1 - ic < k->mc ? m1 : ic + k->mc;
      int64_t tail = ie - (ic + (ie - ic) / mr * mr); /* rows of a last, partial group */
      if (tail) { /* copied once, zero-padded to a full micro-tile */
        const float *a = g->a + (ie - tail) * g->rsa + pc;
        for (int64_t r = 0; r < mr; r++)
          for (int64_t kk = 0; kk < kb; kk++) ws[r * kb + kk] = r < tail ? a[r * g->rsa + kk] : 0.0f;
      }
      for (int64_t p = p0; p < p1; p++) {
        const float *bpanel = g->bp + p * K * nr + pc * nr;
        int64_t col = p * nr, n = N - col < nr ? N - col : nr;
        for (int64_t i = ic; i < ie; i += mr) {
          int64_t m = ie - i < mr ? ie - i : mr;
          const float *a = m < mr ? ws : g->a + i * g->rsa + pc;
          int64_t rs = m < mr ? kb : g->rsa;
          if (fused && m == mr) {
            kiln_tile_store st = {g->c + i * g->ldc + col, g->ldc, (int)n,
                                  !first || g->beta != 0.0f,
                                  last ? (g->bias ? g->bias + col : NULL) : NULL,
                                  last && g->act == KILN_ACT_RELU};
            k->micro_rs(kb, a, rs, bpanel, &st);
          } else {
            kiln_tile_store st = {tile, nr, nr, 0, NULL, 0};
            k->micro_rs(kb, a, rs, bpanel, &st);
            epilogue(g, tile, nr, i, m, col, n, first, last);
          }
        }
      }
    }
  }
}

void kiln_sgemm_run(const kiln_sgemm_kernel *k, const kiln_gemm_args *g, int64_t m0, int64_t m1,
                    int64_t p0, int64_t p1, float *ws) {
  int mr = k->mr, nr = k->nr;
  int64_t K = g->K, N = g->N;
  _Alignas(64) float tile[KILN_SGEMM_MAX_MR * KILN_SGEMM_MAX_NR];
  /* 64-byte align the workspace (it has 16 spare floats for this). */
  ws = (float *)(((uintptr_t)ws + 63) & ~(uintptr_t)63);
  if (m1 <= m0 || p1 <= p0) return;
  if (K == 0) {
    memset(tile, 0, sizeof tile);
    for (int64_t i = m0; i < m1; i++)
      for (int64_t p = p0; p < p1; p++) {
        int64_t col = p * nr, n = N - col < nr ? N - col : nr;
        epilogue(g, tile, nr, i, 1, col, n, 1, 1);
      }
    return;
  }
  if (m1 - m0 == 1) {
    /* GEMV: stream the packed panels once against one contiguous row. */
    const float *a = g->a + m0 * g->rsa;
    if (g->csa != 1) {
      for (int64_t kk = 0; kk < K; kk++) ws[kk] = a[kk * g->csa];
      a = ws;
    }
    for (int64_t p = p0; p < p1; p++) {
      int64_t col = p * nr, n = N - col < nr ? N - col : nr;
      k->gemv(K, a, g->bp + p * K * nr, tile);
      epilogue(g, tile, nr, m0, 1, col, n, 1, 1);
    }
    return;
  }
  if (g->csa == 1 && g->N == 1) {
    run_rowdot(k, g, m0, m1, tile);
    return;
  }
  /* A row-major: read it in place. Packing it (a strided transpose) measured slower on
   * every book model, even Fashion-MNIST's 784 x 512 layer with 16 B panels. */
  if (g->csa == 1) {
    run_inplace(k, g, m0, m1, p0, p1, ws, tile);
    return;
  }
  /* Equal K blocks of at most kc: fewer passes over C than a short tail block. */
  int64_t nkb = (K + k->kc - 1) / k->kc, kc = (K + nkb - 1) / nkb;
  for (int64_t pc = 0; pc < K; pc += kc) {
    int64_t kb = K - pc < kc ? K - pc : kc;
    int first = pc == 0, last = pc + kb >= K;
    for (int64_t ic = m0; ic < m1; ic += k->mc) {
      int64_t mb = m1 - ic < k->mc ? m1 - ic : k->mc;
      pack_a(mr, g, ic, mb, pc, kb, ws);
      for (int64_t p = p0; p < p1; p++) {
        const float *bpanel = g->bp + p * K * nr + pc * nr;
        int64_t col = p * nr, n = N - col < nr ? N - col : nr;
        for (int64_t ir = 0; ir < mb; ir += mr) {
          int64_t m = mb - ir < mr ? mb - ir : mr;
          k->micro(kb, ws + (ir / mr) * kb * mr, bpanel, tile);
          epilogue(g, tile, nr, ic + ir, m, col, n, first, last);
        }
      }
    }
  }
}

void kiln_sgemm_gather_row(const kiln_sgemm_kernel *k, const kiln_gemm_args *g, int64_t row,
                           const int32_t *idx, const float *val, int64_t nnz, float *tile_buf) {
  int nr = k->nr;
  int64_t K = g->K, N = g->N, panels = kiln_sgemm_panels(k, N);
  float *acc = tile_buf;
  for (int64_t p = 0; p < panels; p++) {
    int64_t col = p * nr, n = N - col < nr ? N - col : nr;
    k->gather(g->bp + p * K * nr, nr, idx, val, nnz, (int)n, acc);
    epilogue(g, acc, nr, row, 1, col, n, 1, 1);
  }
}

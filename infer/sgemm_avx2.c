/* kiln runtime — AVX2+FMA SGEMM micro-kernel (6 x 16) and GEMV panel kernel.
 * Compiled with -mavx2 -mfma; selected only when the CPU has both. */
#include "sgemm.h"

#if defined(__x86_64__) && defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>

#define MR 6
#define NR 16

static void micro_avx2(int64_t kc, const float *pa, const float *pb, float *tile) {
  __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00,
         c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;
  for (int64_t k = 0; k < kc; k++) {
    __m256 b0 = _mm256_load_ps(pb), b1 = _mm256_load_ps(pb + 8);
    __m256 a;
    a = _mm256_broadcast_ss(pa + 0); c00 = _mm256_fmadd_ps(a, b0, c00); c01 = _mm256_fmadd_ps(a, b1, c01);
    a = _mm256_broadcast_ss(pa + 1); c10 = _mm256_fmadd_ps(a, b0, c10); c11 = _mm256_fmadd_ps(a, b1, c11);
    a = _mm256_broadcast_ss(pa + 2); c20 = _mm256_fmadd_ps(a, b0, c20); c21 = _mm256_fmadd_ps(a, b1, c21);
    a = _mm256_broadcast_ss(pa + 3); c30 = _mm256_fmadd_ps(a, b0, c30); c31 = _mm256_fmadd_ps(a, b1, c31);
    a = _mm256_broadcast_ss(pa + 4); c40 = _mm256_fmadd_ps(a, b0, c40); c41 = _mm256_fmadd_ps(a, b1, c41);
    a = _mm256_broadcast_ss(pa + 5); c50 = _mm256_fmadd_ps(a, b0, c50); c51 = _mm256_fmadd_ps(a, b1, c51);
    pa += MR;
    pb += NR;
  }
  _mm256_store_ps(tile + 0, c00); _mm256_store_ps(tile + 8, c01);
  _mm256_store_ps(tile + 16, c10); _mm256_store_ps(tile + 24, c11);
  _mm256_store_ps(tile + 32, c20); _mm256_store_ps(tile + 40, c21);
  _mm256_store_ps(tile + 48, c30); _mm256_store_ps(tile + 56, c31);
  _mm256_store_ps(tile + 64, c40); _mm256_store_ps(tile + 72, c41);
  _mm256_store_ps(tile + 80, c50); _mm256_store_ps(tile + 88, c51);
}

/* Four k-steps in flight (8 accumulators) to cover the FMA latency. */
static void gemv_avx2(int64_t K, const float *a, const float *pb, float *out) {
  __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0, s4 = s0, s5 = s0, s6 = s0, s7 = s0;
  int64_t k = 0;
  for (; k + 4 <= K; k += 4) {
    const float *b = pb + k * NR;
    __m256 a0 = _mm256_broadcast_ss(a + k), a1 = _mm256_broadcast_ss(a + k + 1),
           a2 = _mm256_broadcast_ss(a + k + 2), a3 = _mm256_broadcast_ss(a + k + 3);
    s0 = _mm256_fmadd_ps(a0, _mm256_load_ps(b), s0);
    s1 = _mm256_fmadd_ps(a0, _mm256_load_ps(b + 8), s1);
    s2 = _mm256_fmadd_ps(a1, _mm256_load_ps(b + 16), s2);
    s3 = _mm256_fmadd_ps(a1, _mm256_load_ps(b + 24), s3);
    s4 = _mm256_fmadd_ps(a2, _mm256_load_ps(b + 32), s4);
    s5 = _mm256_fmadd_ps(a2, _mm256_load_ps(b + 40), s5);
    s6 = _mm256_fmadd_ps(a3, _mm256_load_ps(b + 48), s6);
    s7 = _mm256_fmadd_ps(a3, _mm256_load_ps(b + 56), s7);
  }
  for (; k < K; k++) {
    __m256 a0 = _mm256_broadcast_ss(a + k);
    s0 = _mm256_fmadd_ps(a0, _mm256_load_ps(pb + k * NR), s0);
    s1 = _mm256_fmadd_ps(a0, _mm256_load_ps(pb + k * NR + 8), s1);
  }
  s0 = _mm256_add_ps(_mm256_add_ps(s0, s2), _mm256_add_ps(s4, s6));
  s1 = _mm256_add_ps(_mm256_add_ps(s1, s3), _mm256_add_ps(s5, s7));
  _mm256_storeu_ps(out, s0);
  _mm256_storeu_ps(out + 8, s1);
}


/* --- A read in place, bias + ReLU fused into the store ---------------------- */

static void micro_rs_avx2(int64_t kc, const float *a, int64_t rsa, const float *pb,
                          const kiln_tile_store *st) {
  __m256 c0[MR], c1[MR];
  const float *ar[MR];
#pragma GCC unroll 6
  for (int i = 0; i < MR; i++) {
    c0[i] = _mm256_setzero_ps();
    c1[i] = c0[i];
    ar[i] = a + i * rsa;
  }
  for (int64_t k = 0; k < kc; k++) {
    __m256 b0 = _mm256_load_ps(pb + k * NR), b1 = _mm256_load_ps(pb + k * NR + 8);
#pragma GCC unroll 6
    for (int i = 0; i < MR; i++) {
      __m256 av = _mm256_broadcast_ss(ar[i] + k);
      c0[i] = _mm256_fmadd_ps(av, b0, c0[i]);
      c1[i] = _mm256_fmadd_ps(av, b1, c1[i]);
    }
  }
  if (st->n == NR) {
    __m256 z = _mm256_setzero_ps(), bias0 = z, bias1 = z;
    if (st->bias) {
      bias0 = _mm256_loadu_ps(st->bias);
      bias1 = _mm256_loadu_ps(st->bias + 8);
    }
#pragma GCC unroll 6
    for (int i = 0; i < MR; i++) {
      float *c = st->c + i * st->ldc;
      __m256 v0 = _mm256_add_ps(c0[i], bias0), v1 = _mm256_add_ps(c1[i], bias1);
      if (st->acc) {
        v0 = _mm256_add_ps(v0, _mm256_loadu_ps(c));
        v1 = _mm256_add_ps(v1, _mm256_loadu_ps(c + 8));
      }
      if (st->relu) {
        v0 = _mm256_max_ps(v0, z);
        v1 = _mm256_max_ps(v1, z);
      }
      _mm256_storeu_ps(c, v0);
      _mm256_storeu_ps(c + 8, v1);
    }
    return;
  }
  _Alignas(32) float row[NR];
#pragma GCC unroll 6
  for (int i = 0; i < MR; i++) {
    _mm256_store_ps(row, c0[i]);
    _mm256_store_ps(row + 8, c1[i]);
    kiln_tile_store_row(st, i, row);
  }
}

/* --- sparse rows: gather-accumulate, non-zero scan -------------------------- */

static void gather_avx2(const float *panel, int nr, const int32_t *idx, const float *val,
                        int64_t nnz, int ncols, float *acc) {
  __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
  int64_t t = 0;
  if (ncols <= 8) {
    for (; t + 2 <= nnz; t += 2) {
      __m256 v0 = _mm256_set1_ps(val ? val[t] : 1.0f), v1 = _mm256_set1_ps(val ? val[t + 1] : 1.0f);
      s0 = _mm256_fmadd_ps(v0, _mm256_load_ps(panel + (int64_t)idx[t] * nr), s0);
      s1 = _mm256_fmadd_ps(v1, _mm256_load_ps(panel + (int64_t)idx[t + 1] * nr), s1);
    }
    for (; t < nnz; t++)
      s0 = _mm256_fmadd_ps(_mm256_set1_ps(val ? val[t] : 1.0f),
                           _mm256_load_ps(panel + (int64_t)idx[t] * nr), s0);
    _mm256_storeu_ps(acc, _mm256_add_ps(s0, s1));
    return;
  }
  /* two vectors per weight row (nr = 16), two rows in flight */
  for (; t + 2 <= nnz; t += 2) {
    const float *b0 = panel + (int64_t)idx[t] * nr, *b1 = panel + (int64_t)idx[t + 1] * nr;
    if (t + 8 < nnz) {
      _mm_prefetch((const char *)(panel + (int64_t)idx[t + 6] * nr), _MM_HINT_T0);
      _mm_prefetch((const char *)(panel + (int64_t)idx[t + 7] * nr), _MM_HINT_T0);
    }
    if (val) {
      __m256 v0 = _mm256_set1_ps(val[t]), v1 = _mm256_set1_ps(val[t + 1]);
      s0 = _mm256_fmadd_ps(v0, _mm256_load_ps(b0), s0);
      s1 = _mm256_fmadd_ps(v0, _mm256_load_ps(b0 + 8), s1);
      s2 = _mm256_fmadd_ps(v1, _mm256_load_ps(b1), s2);
      s3 = _mm256_fmadd_ps(v1, _mm256_load_ps(b1 + 8), s3);
    } else {
      s0 = _mm256_add_ps(s0, _mm256_load_ps(b0));
      s1 = _mm256_add_ps(s1, _mm256_load_ps(b0 + 8));
      s2 = _mm256_add_ps(s2, _mm256_load_ps(b1));
      s3 = _mm256_add_ps(s3, _mm256_load_ps(b1 + 8));
    }
  }
  for (; t < nnz; t++) {
    const float *b0 = panel + (int64_t)idx[t] * nr;
    __m256 v0 = _mm256_set1_ps(val ? val[t] : 1.0f);
    s0 = _mm256_fmadd_ps(v0, _mm256_load_ps(b0), s0);
    s1 = _mm256_fmadd_ps(v0, _mm256_load_ps(b0 + 8), s1);
  }
  _mm256_storeu_ps(acc, _mm256_add_ps(s0, s2));
  _mm256_storeu_ps(acc + 8, _mm256_add_ps(s1, s3));
}

static int64_t nzscan_avx2(const float *x, int64_t K, int32_t *idx, float *val) {
  __m256 z = _mm256_setzero_ps();
  int64_t n = 0, k = 0;
  /* NEQ_UQ: NaN counts as non-zero, as `x != 0.0f` does */
  for (; k + 32 <= K; k += 32) {
    unsigned m0 = (unsigned)_mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(x + k), z, _CMP_NEQ_UQ));
    unsigned m1 = (unsigned)_mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(x + k + 8), z, _CMP_NEQ_UQ));
    unsigned m2 = (unsigned)_mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(x + k + 16), z, _CMP_NEQ_UQ));
    unsigned m3 = (unsigned)_mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(x + k + 24), z, _CMP_NEQ_UQ));
    unsigned m = m0 | m1 << 8 | m2 << 16 | m3 << 24;
    while (m) {
      int j = __builtin_ctz(m);
      idx[n] = (int32_t)(k + j);
      val[n++] = x[k + j];
      m &= m - 1;
    }
  }
  for (; k < K; k++)
    if (x[k] != 0.0f) {
      idx[n] = (int32_t)k;
      val[n++] = x[k];
    }
  return n;
}

/* --- N = 1: a dot product per row, four rows at a time ---------------------- */

static inline float hsum256(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
  return _mm_cvtss_f32(s);
}

static void rowdot_avx2(int64_t M, int64_t K, const float *a, int64_t rsa, const float *w,
                        float *out) {
  int64_t K8 = K & ~(int64_t)7;
  int64_t i = 0;
  for (; i + 4 <= M; i += 4) {
    const float *r0 = a + i * rsa, *r1 = r0 + rsa, *r2 = r1 + rsa, *r3 = r2 + rsa;
    __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
    for (int64_t k = 0; k < K8; k += 8) {
      __m256 wv = _mm256_loadu_ps(w + k);
      s0 = _mm256_fmadd_ps(_mm256_loadu_ps(r0 + k), wv, s0);
      s1 = _mm256_fmadd_ps(_mm256_loadu_ps(r1 + k), wv, s1);
      s2 = _mm256_fmadd_ps(_mm256_loadu_ps(r2 + k), wv, s2);
      s3 = _mm256_fmadd_ps(_mm256_loadu_ps(r3 + k), wv, s3);
    }
    float t0 = hsum256(s0), t1 = hsum256(s1), t2 = hsum256(s2), t3 = hsum256(s3);
    for (int64_t k = K8; k < K; k++) {
      t0 += r0[k] * w[k];
      t1 += r1[k] * w[k];
      t2 += r2[k] * w[k];
      t3 += r3[k] * w[k];
    }
    out[i] = t0;
    out[i + 1] = t1;
    out[i + 2] = t2;
    out[i + 3] = t3;
  }
  for (; i < M; i++) {
    const float *r0 = a + i * rsa;
    __m256 s0 = _mm256_setzero_ps();
    for (int64_t k = 0; k < K8; k += 8)
      s0 = _mm256_fmadd_ps(_mm256_loadu_ps(r0 + k), _mm256_loadu_ps(w + k), s0);
    float t0 = hsum256(s0);
    for (int64_t k = K8; k < K; k++) t0 += r0[k] * w[k];
    out[i] = t0;
  }
}

/* K blocks up to 1024: each extra block is another pass over C, which measured
 * slower (K=784: ~70 GFLOP/s at kc=256, ~100 at kc=784 on a Zen 4 core); the B
 * micro-panel then lives in L2 beside the A block (96 x 1024 floats = 384 KiB). */
static const kiln_sgemm_kernel AVX2_KERNEL = {KILN_KERNEL_AVX2, "avx2", MR, NR, 1024, 96,
                                              micro_avx2, gemv_avx2, micro_rs_avx2, gather_avx2,
                                              nzscan_avx2, rowdot_avx2};

const kiln_sgemm_kernel *kiln_sgemm_kernel_avx2(void) { return &AVX2_KERNEL; }
#else
const kiln_sgemm_kernel *kiln_sgemm_kernel_avx2(void) { return 0; }
#endif

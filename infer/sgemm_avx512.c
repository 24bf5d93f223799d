/* kiln runtime — AVX-512F SGEMM micro-kernel (12 x 32: 24 zmm accumulators) and
 * GEMV panel kernel. Compiled with -mavx512f...; selected only when the CPU has it. */
#include "sgemm.h"

#if defined(__x86_64__) && defined(__AVX512F__)
#include <immintrin.h>

#define MR 12
#define NR 32

#define ROW(i)                                          \
  a = _mm512_set1_ps(pa[i]);                            \
  c##i##0 = _mm512_fmadd_ps(a, b0, c##i##0);            \
  c##i##1 = _mm512_fmadd_ps(a, b1, c##i##1)
#define STORE(i)                                        \
  _mm512_store_ps(tile + (i) * NR, c##i##0);            \
  _mm512_store_ps(tile + (i) * NR + 16, c##i##1)

static void micro_avx512(int64_t kc, const float *pa, const float *pb, float *tile) {
  __m512 z = _mm512_setzero_ps();
  __m512 c00 = z, c01 = z, c10 = z, c11 = z, c20 = z, c21 = z, c30 = z, c31 = z, c40 = z, c41 = z,
         c50 = z, c51 = z, c60 = z, c61 = z, c70 = z, c71 = z, c80 = z, c81 = z, c90 = z, c91 = z;
  __m512 cA0 = z, cA1 = z, cB0 = z, cB1 = z;
  for (int64_t k = 0; k < kc; k++) {
    __m512 b0 = _mm512_load_ps(pb), b1 = _mm512_load_ps(pb + 16), a;
    ROW(0); ROW(1); ROW(2); ROW(3); ROW(4); ROW(5); ROW(6); ROW(7); ROW(8); ROW(9);
    a = _mm512_set1_ps(pa[10]);
    cA0 = _mm512_fmadd_ps(a, b0, cA0);
    cA1 = _mm512_fmadd_ps(a, b1, cA1);
    a = _mm512_set1_ps(pa[11]);
    cB0 = _mm512_fmadd_ps(a, b0, cB0);
    cB1 = _mm512_fmadd_ps(a, b1, cB1);
    pa += MR;
    pb += NR;
  }
  STORE(0); STORE(1); STORE(2); STORE(3); STORE(4); STORE(5); STORE(6); STORE(7); STORE(8);
  STORE(9);
  _mm512_store_ps(tile + 10 * NR, cA0);
  _mm512_store_ps(tile + 10 * NR + 16, cA1);
  _mm512_store_ps(tile + 11 * NR, cB0);
  _mm512_store_ps(tile + 11 * NR + 16, cB1);
}

static void gemv_avx512(int64_t K, const float *a, const float *pb, float *out) {
  __m512 s0 = _mm512_setzero_ps(), s1 = s0, s2 = s0, s3 = s0, s4 = s0, s5 = s0, s6 = s0, s7 = s0;
  int64_t k = 0;
  for (; k + 4 <= K; k += 4) {
    const float *b = pb + k * NR;
    __m512 a0 = _mm512_set1_ps(a[k]), a1 = _mm512_set1_ps(a[k + 1]), a2 = _mm512_set1_ps(a[k + 2]),
           a3 = _mm512_set1_ps(a[k + 3]);
    s0 = _mm512_fmadd_ps(a0, _mm512_load_ps(b), s0);
    s1 = _mm512_fmadd_ps(a0, _mm512_load_ps(b + 16), s1);
    s2 = _mm512_fmadd_ps(a1, _mm512_load_ps(b + 32), s2);
    s3 = _mm512_fmadd_ps(a1, _mm512_load_ps(b + 48), s3);
    s4 = _mm512_fmadd_ps(a2, _mm512_load_ps(b + 64), s4);
    s5 = _mm512_fmadd_ps(a2, _mm512_load_ps(b + 80), s5);
    s6 = _mm512_fmadd_ps(a3, _mm512_load_ps(b + 96), s6);
    s7 = _mm512_fmadd_ps(a3, _mm512_load_ps(b + 112), s7);
  }
  for (; k < K; k++) {
    __m512 a0 = _mm512_set1_ps(a[k]);
    s0 = _mm512_fmadd_ps(a0, _mm512_load_ps(pb + k * NR), s0);
    s1 = _mm512_fmadd_ps(a0, _mm512_load_ps(pb + k * NR + 16), s1);
  }
  s0 = _mm512_add_ps(_mm512_add_ps(s0, s2), _mm512_add_ps(s4, s6));
  s1 = _mm512_add_ps(_mm512_add_ps(s1, s3), _mm512_add_ps(s5, s7));
  _mm512_storeu_ps(out, s0);
  _mm512_storeu_ps(out + 16, s1);
}


/* --- A read in place, bias + ReLU fused into the store ---------------------- */

static inline void store_row512(const kiln_tile_store *st, int i, __m512 v0, __m512 v1,
                                __mmask16 k0, __mmask16 k1, __m512 bias0, __m512 bias1) {
  float *c = st->c + i * st->ldc;
  if (st->acc) {
    v0 = _mm512_add_ps(v0, _mm512_maskz_loadu_ps(k0, c));
    v1 = _mm512_add_ps(v1, _mm512_maskz_loadu_ps(k1, c + 16));
  }
  v0 = _mm512_add_ps(v0, bias0);
  v1 = _mm512_add_ps(v1, bias1);
  if (st->relu) {
    v0 = _mm512_max_ps(v0, _mm512_setzero_ps());
    v1 = _mm512_max_ps(v1, _mm512_setzero_ps());
  }
  _mm512_mask_storeu_ps(c, k0, v0);
  _mm512_mask_storeu_ps(c + 16, k1, v1);
}

static void micro_rs_avx512(int64_t kc, const float *a, int64_t rsa, const float *pb,
                            const kiln_tile_store *st) {
  int n = st->n;
  __mmask16 k0 = n >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << n) - 1);
  __mmask16 k1 = n >= 32 ? (__mmask16)0xffff : n > 16 ? (__mmask16)((1u << (n - 16)) - 1) : 0;
  __m512 bias0 = _mm512_setzero_ps(), bias1 = bias0;
  if (st->bias) {
    bias0 = _mm512_maskz_loadu_ps(k0, st->bias);
    bias1 = _mm512_maskz_loadu_ps(k1, st->bias + 16);
  }
  __m512 c0[MR], c1[MR];
  const float *ar[MR];
#pragma GCC unroll 12
  for (int i = 0; i < MR; i++) {
    c0[i] = _mm512_setzero_ps();
    c1[i] = c0[i];
    ar[i] = a + i * rsa;
  }
  if (n <= 16) { /* one output vector per row: half the FMAs */
    for (int64_t k = 0; k < kc; k++) {
      __m512 b0 = _mm512_load_ps(pb + k * NR);
#pragma GCC unroll 12
      for (int i = 0; i < MR; i++) c0[i] = _mm512_fmadd_ps(_mm512_set1_ps(ar[i][k]), b0, c0[i]);
    }
  } else {
    for (int64_t k = 0; k < kc; k++) {
      __m512 b0 = _mm512_load_ps(pb + k * NR), b1 = _mm512_load_ps(pb + k * NR + 16);
#pragma GCC unroll 12
      for (int i = 0; i < MR; i++) {
        __m512 av = _mm512_set1_ps(ar[i][k]);
        c0[i] = _mm512_fmadd_ps(av, b0, c0[i]);
        c1[i] = _mm512_fmadd_ps(av, b1, c1[i]);
      }
    }
  }
#pragma GCC unroll 12
  for (int i = 0; i < MR; i++) store_row512(st, i, c0[i], c1[i], k0, k1, bias0, bias1);
}

/* --- sparse rows: gather-accumulate, non-zero scan -------------------------- */

static void gather_avx512(const float *panel, int nr, const int32_t *idx, const float *val,
                          int64_t nnz, int ncols, float *acc) {
  __m512 s0 = _mm512_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
  int64_t t = 0;
  if (ncols <= 16) { /* one vector per weight row, four rows in flight */
    if (val) {
      for (; t + 4 <= nnz; t += 4) {
        if (t + 12 < nnz) {
          _mm_prefetch((const char *)(panel + (int64_t)idx[t + 8] * nr), _MM_HINT_T0);
          _mm_prefetch((const char *)(panel + (int64_t)idx[t + 9] * nr), _MM_HINT_T0);
          _mm_prefetch((const char *)(panel + (int64_t)idx[t + 10] * nr), _MM_HINT_T0);
          _mm_prefetch((const char *)(panel + (int64_t)idx[t + 11] * nr), _MM_HINT_T0);
        }
        s0 = _mm512_fmadd_ps(_mm512_set1_ps(val[t]), _mm512_load_ps(panel + (int64_t)idx[t] * nr), s0);
        s1 = _mm512_fmadd_ps(_mm512_set1_ps(val[t + 1]), _mm512_load_ps(panel + (int64_t)idx[t + 1] * nr), s1);
        s2 = _mm512_fmadd_ps(_mm512_set1_ps(val[t + 2]), _mm512_load_ps(panel + (int64_t)idx[t + 2] * nr), s2);
        s3 = _mm512_fmadd_ps(_mm512_set1_ps(val[t + 3]), _mm512_load_ps(panel + (int64_t)idx[t + 3] * nr), s3);
      }
      for (; t < nnz; t++)
        s0 = _mm512_fmadd_ps(_mm512_set1_ps(val[t]), _mm512_load_ps(panel + (int64_t)idx[t] * nr), s0);
    } else {
      for (; t + 4 <= nnz; t += 4) {
        if (t + 12 < nnz) {
          _mm_prefetch((const char *)(panel + (int64_t)idx[t + 8] * nr), _MM_HINT_T0);
          _mm_prefetch((const char *)(panel + (int64_t)idx[t + 9] * nr), _MM_HINT_T0);
          _mm_prefetch((const char *)(panel + (int64_t)idx[t + 10] * nr), _MM_HINT_T0);
          _mm_prefetch((const char *)(panel + (int64_t)idx[t + 11] * nr), _MM_HINT_T0);
        }
        s0 = _mm512_add_ps(s0, _mm512_load_ps(panel + (int64_t)idx[t] * nr));
        s1 = _mm512_add_ps(s1, _mm512_load_ps(panel + (int64_t)idx[t + 1] * nr));
        s2 = _mm512_add_ps(s2, _mm512_load_ps(panel + (int64_t)idx[t + 2] * nr));
        s3 = _mm512_add_ps(s3, _mm512_load_ps(panel + (int64_t)idx[t + 3] * nr));
      }
      for (; t < nnz; t++) s0 = _mm512_add_ps(s0, _mm512_load_ps(panel + (int64_t)idx[t] * nr));
    }
    _mm512_storeu_ps(acc, _mm512_add_ps(_mm512_add_ps(s0, s1), _mm512_add_ps(s2, s3)));
    return;
  }
  /* two vectors per weight row, two rows in flight */
  for (; t + 2 <= nnz; t += 2) {
    const float *b0 = panel + (int64_t)idx[t] * nr, *b1 = panel + (int64_t)idx[t + 1] * nr;
    if (t + 8 < nnz) {
      _mm_prefetch((const char *)(panel + (int64_t)idx[t + 6] * nr), _MM_HINT_T0);
      _mm_prefetch((const char *)(panel + (int64_t)idx[t + 6] * nr + 16), _MM_HINT_T0);
      _mm_prefetch((const char *)(panel + (int64_t)idx[t + 7] * nr), _MM_HINT_T0);
      _mm_prefetch((const char *)(panel + (int64_t)idx[t + 7] * nr + 16), _MM_HINT_T0);
    }
    __m512 v0 = _mm512_set1_ps(val ? val[t] : 1.0f), v1 = _mm512_set1_ps(val ? val[t + 1] : 1.0f);
    s0 = _mm512_fmadd_ps(v0, _mm512_load_ps(b0), s0);
    s1 = _mm512_fmadd_ps(v0, _mm512_load_ps(b0 + 16), s1);
    s2 = _mm512_fmadd_ps(v1, _mm512_load_ps(b1), s2);
    s3 = _mm512_fmadd_ps(v1, _mm512_load_ps(b1 + 16), s3);
  }
  for (; t < nnz; t++) {
    const float *b0 = panel + (int64_t)idx[t] * nr;
    __m512 v0 = _mm512_set1_ps(val ? val[t] : 1.0f);
    s0 = _mm512_fmadd_ps(v0, _mm512_load_ps(b0), s0);
    s1 = _mm512_fmadd_ps(v0, _mm512_load_ps(b0 + 16), s1);
  }
  _mm512_storeu_ps(acc, _mm512_add_ps(s0, s2));
  _mm512_storeu_ps(acc + 16, _mm512_add_ps(s1, s3));
}

static int64_t nzscan_avx512(const float *x, int64_t K, int32_t *idx, float *val) {
  __m512 z = _mm512_setzero_ps();
  int64_t n = 0, k = 0;
  /* NEQ_UQ: NaN counts as non-zero, as `x != 0.0f` does */
  for (; k + 64 <= K; k += 64) {
    /* the row streams from memory: fetch ahead of the hardware prefetcher */
    _mm_prefetch((const char *)(x + k + 512), _MM_HINT_T0);
    _mm_prefetch((const char *)(x + k + 528), _MM_HINT_T0);
    _mm_prefetch((const char *)(x + k + 544), _MM_HINT_T0);
    _mm_prefetch((const char *)(x + k + 560), _MM_HINT_T0);
    __mmask16 m0 = _mm512_cmp_ps_mask(_mm512_loadu_ps(x + k), z, _CMP_NEQ_UQ);
    __mmask16 m1 = _mm512_cmp_ps_mask(_mm512_loadu_ps(x + k + 16), z, _CMP_NEQ_UQ);
    __mmask16 m2 = _mm512_cmp_ps_mask(_mm512_loadu_ps(x + k + 32), z, _CMP_NEQ_UQ);
    __mmask16 m3 = _mm512_cmp_ps_mask(_mm512_loadu_ps(x + k + 48), z, _CMP_NEQ_UQ);
    uint64_t m = (uint64_t)m0 | (uint64_t)m1 << 16 | (uint64_t)m2 << 32 | (uint64_t)m3 << 48;
    while (m) {
      int j = __builtin_ctzll(m);
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

static void rowdot_avx512(int64_t M, int64_t K, const float *a, int64_t rsa, const float *w,
                          float *out) {
  int64_t i = 0;
  __mmask16 tail = (__mmask16)((1u << (K & 15)) - 1);
  for (; i + 4 <= M; i += 4) {
    const float *r0 = a + i * rsa, *r1 = r0 + rsa, *r2 = r1 + rsa, *r3 = r2 + rsa;
    __m512 s0 = _mm512_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
    int64_t k = 0;
    for (; k + 16 <= K; k += 16) {
      __m512 wv = _mm512_loadu_ps(w + k);
      s0 = _mm512_fmadd_ps(_mm512_loadu_ps(r0 + k), wv, s0);
      s1 = _mm512_fmadd_ps(_mm512_loadu_ps(r1 + k), wv, s1);
      s2 = _mm512_fmadd_ps(_mm512_loadu_ps(r2 + k), wv, s2);
      s3 = _mm512_fmadd_ps(_mm512_loadu_ps(r3 + k), wv, s3);
    }
    if (tail) {
      __m512 wv = _mm512_maskz_loadu_ps(tail, w + k);
      s0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(tail, r0 + k), wv, s0);
      s1 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(tail, r1 + k), wv, s1);
      s2 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(tail, r2 + k), wv, s2);
      s3 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(tail, r3 + k), wv, s3);
    }
    out[i] = _mm512_reduce_add_ps(s0);
    out[i + 1] = _mm512_reduce_add_ps(s1);
    out[i + 2] = _mm512_reduce_add_ps(s2);
    out[i + 3] = _mm512_reduce_add_ps(s3);
  }
  for (; i < M; i++) {
    const float *r0 = a + i * rsa;
    __m512 s0 = _mm512_setzero_ps();
    int64_t k = 0;
    for (; k + 16 <= K; k += 16)
      s0 = _mm512_fmadd_ps(_mm512_loadu_ps(r0 + k), _mm512_loadu_ps(w + k), s0);
    if (tail)
      s0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(tail, r0 + k), _mm512_maskz_loadu_ps(tail, w + k), s0);
    out[i] = _mm512_reduce_add_ps(s0);
  }
}

/* K blocks up to 1024 (see sgemm_avx2.c: fewer passes over C measured faster);
 * A block 96 x 1024 floats = 384 KiB in L2. */
static const kiln_sgemm_kernel AVX512_KERNEL = {KILN_KERNEL_AVX512, "avx512", MR, NR, 1024, 96,
                                                micro_avx512, gemv_avx512, micro_rs_avx512,
                                                gather_avx512, nzscan_avx512, rowdot_avx512};

const kiln_sgemm_kernel *kiln_sgemm_kernel_avx512(void) { return &AVX512_KERNEL; }
#else
const kiln_sgemm_kernel *kiln_sgemm_kernel_avx512(void) { return 0; }
#endif

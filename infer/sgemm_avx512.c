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

/* K blocks up to 1024 (see sgemm_avx2.c: fewer passes over C measured faster);
 * A block 96 x 1024 floats = 384 KiB in L2. */
static const kiln_sgemm_kernel AVX512_KERNEL = {KILN_KERNEL_AVX512, "avx512", MR, NR, 1024, 96,
                                                micro_avx512, gemv_avx512};

const kiln_sgemm_kernel *kiln_sgemm_kernel_avx512(void) { return &AVX512_KERNEL; }
#else
const kiln_sgemm_kernel *kiln_sgemm_kernel_avx512(void) { return 0; }
#endif

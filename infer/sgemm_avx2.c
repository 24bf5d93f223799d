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

/* K blocks up to 1024: each extra block is another pass over C, which measured
 * slower (K=784: ~70 GFLOP/s at kc=256, ~100 at kc=784 on a Zen 4 core); the B
 * micro-panel then lives in L2 beside the A block (96 x 1024 floats = 384 KiB). */
static const kiln_sgemm_kernel AVX2_KERNEL = {KILN_KERNEL_AVX2, "avx2", MR, NR, 1024, 96,
                                              micro_avx2, gemv_avx2};

const kiln_sgemm_kernel *kiln_sgemm_kernel_avx2(void) { return &AVX2_KERNEL; }
#else
const kiln_sgemm_kernel *kiln_sgemm_kernel_avx2(void) { return 0; }
#endif

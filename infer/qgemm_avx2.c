/* kiln runtime — int8 GEMM tile for AVX2: weights and activations sign-extended to
 * int16 and multiplied with vpmaddwd (pairs of int16 products summed into int32: exact,
 * no vpmaddubsw int16 saturation), 2 rows x 16 columns per tile. */
#include "qgemm_driver.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#include <string.h>

#define NR KILN_QGEMM_NR

static inline __attribute__((always_inline)) void tile_n(int64_t kp, const int8_t *a,
                                                          const int8_t *pb, int32_t *acc,
                                                          const int R) {
  __m256i c[2][4];
  for (int r = 0; r < R; r++)
    for (int q = 0; q < 4; q++) c[r][q] = _mm256_setzero_si256();
  for (int64_t g = 0; g < kp / 4; g++) {
    const int8_t *w = pb + g * 4 * NR;
    __m256i av[2];
    for (int r = 0; r < R; r++) {
      int32_t a4;
      memcpy(&a4, a + r * kp + g * 4, 4);
      __m128i a16 = _mm_cvtepi8_epi16(_mm_cvtsi32_si128(a4)); /* 4 int16 */
      av[r] = _mm256_broadcastq_epi64(a16);
    }
    for (int q = 0; q < 4; q++) {
      /* columns 4q..4q+3, k 0..3 each, as int16 */
      __m256i wq = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(w + q * 16)));
      for (int r = 0; r < R; r++) c[r][q] = _mm256_add_epi32(c[r][q], _mm256_madd_epi16(wq, av[r]));
    }
  }
  for (int r = 0; r < R; r++)
    for (int h = 0; h < 2; h++) {
      /* lanes hold (col, k01) and (col, k23) pairs: add them, restore column order */
      __m256i s = _mm256_hadd_epi32(c[r][2 * h], c[r][2 * h + 1]);
      s = _mm256_permute4x64_epi64(s, 0xd8);
      _mm256_storeu_si256((__m256i *)(acc + r * NR + h * 8), s);
    }
}

static void tile_avx2(int64_t kp, const int8_t *a, int rows, const int8_t *pb, int32_t *acc) {
  if (rows == 1) tile_n(kp, a, pb, acc, 1);
  else tile_n(kp, a, pb, acc, 2);
}

static void run_avx2(const kiln_qgemm_kernel *k, const kiln_qgemm_args *g, int64_t m0, int64_t m1,
                   int8_t *ws) {
  qgemm_drive(k, g, m0, m1, ws, tile_avx2, NULL);
}

static const kiln_qgemm_kernel kernel = {KILN_KERNEL_AVX2, "avx2", 2, 0, tile_avx2, run_avx2};
const kiln_qgemm_kernel *kiln_qgemm_kernel_avx2(void) { return &kernel; }
#else
const kiln_qgemm_kernel *kiln_qgemm_kernel_avx2(void) { return 0; }
#endif

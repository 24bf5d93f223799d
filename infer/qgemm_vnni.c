/* kiln runtime — int8 GEMM tile for AVX-512 VNNI: vpdpbusd multiplies u8 x s8 and sums
 * 4 products into int32 (no saturation). Activations arrive with their sign bit
 * flipped (int8 x + 128) and the driver's bias subtracts 128 * colsum(W). 8 rows x 16
 * columns per tile; one row splits K over 4 accumulators to hide the latency. */
#include "qgemm.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#include <string.h>

#define NR KILN_QGEMM_NR

static inline __m512i bcast4(const int8_t *p) {
  int32_t v;
  memcpy(&v, p, 4);
  return _mm512_set1_epi32(v);
}

static void tile8(int64_t kp, const int8_t *a, const int8_t *pb, int32_t *acc) {
  __m512i c[8];
  for (int r = 0; r < 8; r++) c[r] = _mm512_setzero_si512();
  for (int64_t g = 0; g < kp / 4; g++) {
    __m512i w = _mm512_loadu_si512((const void *)(pb + g * 4 * NR));
    for (int r = 0; r < 8; r++) c[r] = _mm512_dpbusd_epi32(c[r], bcast4(a + r * kp + g * 4), w);
  }
  for (int r = 0; r < 8; r++) _mm512_storeu_si512((void *)(acc + r * NR), c[r]);
}

static void tile1(int64_t kp, const int8_t *a, const int8_t *pb, int32_t *acc) {
  __m512i c0 = _mm512_setzero_si512(), c1 = c0, c2 = c0, c3 = c0;
  int64_t G = kp / 4, g = 0;
  for (; g + 4 <= G; g += 4) {
    const int8_t *w = pb + g * 4 * NR;
    c0 = _mm512_dpbusd_epi32(c0, bcast4(a + g * 4), _mm512_loadu_si512((const void *)w));
    c1 = _mm512_dpbusd_epi32(c1, bcast4(a + g * 4 + 4), _mm512_loadu_si512((const void *)(w + 64)));
    c2 = _mm512_dpbusd_epi32(c2, bcast4(a + g * 4 + 8), _mm512_loadu_si512((const void *)(w + 128)));
    c3 = _mm512_dpbusd_epi32(c3, bcast4(a + g * 4 + 12), _mm512_loadu_si512((const void *)(w + 192)));
  }
  for (; g < G; g++)
    c0 = _mm512_dpbusd_epi32(c0, bcast4(a + g * 4), _mm512_loadu_si512((const void *)(pb + g * 4 * NR)));
  c0 = _mm512_add_epi32(_mm512_add_epi32(c0, c1), _mm512_add_epi32(c2, c3));
  _mm512_storeu_si512((void *)acc, c0);
}

static void tile_vnni(int64_t kp, const int8_t *a, int rows, const int8_t *pb, int32_t *acc) {
  if (rows == 1) tile1(kp, a, pb, acc);
  else tile8(kp, a, pb, acc);
}

static const kiln_qgemm_kernel kernel = {KILN_KERNEL_VNNI, "vnni", 8, 1, tile_vnni};
const kiln_qgemm_kernel *kiln_qgemm_kernel_vnni(void) { return &kernel; }
#else
const kiln_qgemm_kernel *kiln_qgemm_kernel_vnni(void) { return 0; }
#endif

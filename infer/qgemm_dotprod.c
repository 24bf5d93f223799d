/* kiln runtime — int8 GEMM tile for AArch64 SDOT (Armv8.2 dot product; chosen at run
 * time from HWCAP_ASIMDDP): vdotq_s32 sums 4 int8 x int8 products per int32 lane,
 * which is exactly the packed layout (4 k per column). 4 rows x 16 columns per tile. */
#include "qgemm_driver.h"

#if defined(__aarch64__) && defined(__ARM_FEATURE_DOTPROD)
#include <arm_neon.h>
#include <string.h>

#define NR KILN_QGEMM_NR

static inline int8x16_t dup4q(const int8_t *p) {
  uint32_t v;
  memcpy(&v, p, 4);
  return vreinterpretq_s8_u32(vdupq_n_u32(v));
}

static inline __attribute__((always_inline)) void tile_n(int64_t kp, const int8_t *a,
                                                          const int8_t *pb, int32_t *acc,
                                                          const int R) {
  int32x4_t c[4][4];
  for (int r = 0; r < R; r++)
    for (int q = 0; q < 4; q++) c[r][q] = vdupq_n_s32(0);
  for (int64_t g = 0; g < kp / 4; g++) {
    const int8_t *w = pb + g * 4 * NR;
    int8x16_t w0 = vld1q_s8(w), w1 = vld1q_s8(w + 16), w2 = vld1q_s8(w + 32), w3 = vld1q_s8(w + 48);
    for (int r = 0; r < R; r++) {
      int8x16_t av = dup4q(a + r * kp + g * 4);
      c[r][0] = vdotq_s32(c[r][0], w0, av);
      c[r][1] = vdotq_s32(c[r][1], w1, av);
      c[r][2] = vdotq_s32(c[r][2], w2, av);
      c[r][3] = vdotq_s32(c[r][3], w3, av);
    }
  }
  for (int r = 0; r < R; r++)
    for (int q = 0; q < 4; q++) vst1q_s32(acc + r * NR + q * 4, c[r][q]);
}

static void tile_dotprod(int64_t kp, const int8_t *a, int rows, const int8_t *pb, int32_t *acc) {
  if (rows == 1) tile_n(kp, a, pb, acc, 1);
  else tile_n(kp, a, pb, acc, 4);
}

static void run_dotprod(const kiln_qgemm_kernel *k, const kiln_qgemm_args *g, int64_t m0, int64_t m1,
                   int8_t *ws) {
  qgemm_drive(k, g, m0, m1, ws, tile_dotprod, NULL, NULL, NULL);
}

static const kiln_qgemm_kernel kernel = {KILN_KERNEL_DOTPROD, "dotprod", 4, 0, 0, tile_dotprod, run_dotprod, NULL};
const kiln_qgemm_kernel *kiln_qgemm_kernel_dotprod(void) { return &kernel; }
#else
const kiln_qgemm_kernel *kiln_qgemm_kernel_dotprod(void) { return 0; }
#endif

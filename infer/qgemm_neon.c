/* kiln runtime — int8 GEMM tile for NEON (armhf and AArch64): vmull_s8 (int8 x int8
 * into int16: |product| <= 16384, exact) and vpadal into int32, 4 rows x 4 columns at a
 * time, the 16 columns of a panel in 4 passes. uint8 activations arrive with their
 * sign bit flipped (x - 128); the driver's bias adds 128 * colsum(W). */
#include "qgemm_driver.h"

#if defined(__ARM_NEON) || defined(__ARM_NEON__)
#include <arm_neon.h>
#include <string.h>

#define NR KILN_QGEMM_NR

static inline int8x8_t dup4(const int8_t *p) {
  uint32_t v;
  memcpy(&v, p, 4);
  return vreinterpret_s8_u32(vdup_n_u32(v));
}

static inline int32x4_t pair_sum(int32x4_t lo, int32x4_t hi) {
  /* (c0 k01, c0 k23, c1 k01, c1 k23), (c2 .., c3 ..) -> (c0, c1, c2, c3) */
  return vcombine_s32(vpadd_s32(vget_low_s32(lo), vget_high_s32(lo)),
                      vpadd_s32(vget_low_s32(hi), vget_high_s32(hi)));
}

static inline __attribute__((always_inline)) void tile_n(int64_t kp, const int8_t *a,
                                                          const int8_t *pb, int32_t *acc,
                                                          const int R) {
  for (int q = 0; q < 4; q++) {
    int32x4_t c[4][2];
    for (int r = 0; r < R; r++) c[r][0] = c[r][1] = vdupq_n_s32(0);
    for (int64_t g = 0; g < kp / 4; g++) {
      int8x16_t w = vld1q_s8(pb + g * 4 * NR + q * 16);
      for (int r = 0; r < R; r++) {
        int8x8_t av = dup4(a + r * kp + g * 4);
        c[r][0] = vpadalq_s16(c[r][0], vmull_s8(vget_low_s8(w), av));
        c[r][1] = vpadalq_s16(c[r][1], vmull_s8(vget_high_s8(w), av));
      }
    }
    for (int r = 0; r < R; r++) vst1q_s32(acc + r * NR + q * 4, pair_sum(c[r][0], c[r][1]));
  }
}

static void tile_neon(int64_t kp, const int8_t *a, int rows, const int8_t *pb, int32_t *acc) {
  if (rows == 1) tile_n(kp, a, pb, acc, 1);
  else tile_n(kp, a, pb, acc, 4);
}

static void run_neon(const kiln_qgemm_kernel *k, const kiln_qgemm_args *g, int64_t m0, int64_t m1,
                   int8_t *ws) {
  qgemm_drive(k, g, m0, m1, ws, tile_neon, NULL, NULL, NULL);
}

static const kiln_qgemm_kernel kernel = {KILN_KERNEL_NEON, "neon", 4, 0, 0, tile_neon, run_neon, NULL};
const kiln_qgemm_kernel *kiln_qgemm_kernel_neon(void) { return &kernel; }
#else
const kiln_qgemm_kernel *kiln_qgemm_kernel_neon(void) { return 0; }
#endif

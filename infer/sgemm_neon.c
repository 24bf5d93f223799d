/* kiln runtime — NEON SGEMM micro-kernels (8 x 8 on aarch64, 4 x 8 on armhf) and the
 * GEMV panel kernel, for aarch64 and armhf (-mfpu=neon; picked only when AT_HWCAP reports NEON). */
#include "sgemm.h"

#if (defined(__aarch64__) || defined(__arm__)) && defined(__ARM_NEON)
#include <arm_neon.h>

#define NR 8

#if defined(__aarch64__)
/* aarch64 has 32 q registers: 8 x 8 with 16 accumulators, A rows taken by lane. */
#define MR 8
#define MLA(acc, a, b) vfmaq_f32(acc, a, b)
#define ROW(i, av, lane)                                  \
  c##i##0 = vfmaq_laneq_f32(c##i##0, b0, av, lane);       \
  c##i##1 = vfmaq_laneq_f32(c##i##1, b1, av, lane)
#define STORE(i)                                          \
  vst1q_f32(tile + (i) * NR, c##i##0);                    \
  vst1q_f32(tile + (i) * NR + 4, c##i##1)

static void micro_neon(int64_t kc, const float *pa, const float *pb, float *tile) {
  float32x4_t z = vdupq_n_f32(0.0f);
  float32x4_t c00 = z, c01 = z, c10 = z, c11 = z, c20 = z, c21 = z, c30 = z, c31 = z;
  float32x4_t c40 = z, c41 = z, c50 = z, c51 = z, c60 = z, c61 = z, c70 = z, c71 = z;
  for (int64_t k = 0; k < kc; k++) {
    float32x4_t b0 = vld1q_f32(pb), b1 = vld1q_f32(pb + 4);
    float32x4_t a0 = vld1q_f32(pa), a1 = vld1q_f32(pa + 4);
    ROW(0, a0, 0); ROW(1, a0, 1); ROW(2, a0, 2); ROW(3, a0, 3);
    ROW(4, a1, 0); ROW(5, a1, 1); ROW(6, a1, 2); ROW(7, a1, 3);
    pa += MR;
    pb += NR;
  }
  STORE(0); STORE(1); STORE(2); STORE(3); STORE(4); STORE(5); STORE(6); STORE(7);
}
#else
/* armhf: 16 q registers, no FMA in plain NEON: 4 x 8 with 8 accumulators. */
#define MR 4
#define MLA(acc, a, b) vmlaq_f32(acc, a, b)

static void micro_neon(int64_t kc, const float *pa, const float *pb, float *tile) {
  float32x4_t z = vdupq_n_f32(0.0f);
  float32x4_t c00 = z, c01 = z, c10 = z, c11 = z, c20 = z, c21 = z, c30 = z, c31 = z;
  for (int64_t k = 0; k < kc; k++) {
    float32x4_t b0 = vld1q_f32(pb), b1 = vld1q_f32(pb + 4), a;
    a = vdupq_n_f32(pa[0]); c00 = MLA(c00, a, b0); c01 = MLA(c01, a, b1);
    a = vdupq_n_f32(pa[1]); c10 = MLA(c10, a, b0); c11 = MLA(c11, a, b1);
    a = vdupq_n_f32(pa[2]); c20 = MLA(c20, a, b0); c21 = MLA(c21, a, b1);
    a = vdupq_n_f32(pa[3]); c30 = MLA(c30, a, b0); c31 = MLA(c31, a, b1);
    pa += MR;
    pb += NR;
  }
  vst1q_f32(tile, c00); vst1q_f32(tile + 4, c01);
  vst1q_f32(tile + 8, c10); vst1q_f32(tile + 12, c11);
  vst1q_f32(tile + 16, c20); vst1q_f32(tile + 20, c21);
  vst1q_f32(tile + 24, c30); vst1q_f32(tile + 28, c31);
}
#endif

static void gemv_neon(int64_t K, const float *a, const float *pb, float *out) {
  float32x4_t s0 = vdupq_n_f32(0.0f), s1 = s0, s2 = s0, s3 = s0;
  int64_t k = 0;
  for (; k + 2 <= K; k += 2) {
    const float *b = pb + k * NR;
    float32x4_t a0 = vdupq_n_f32(a[k]), a1 = vdupq_n_f32(a[k + 1]);
    s0 = MLA(s0, a0, vld1q_f32(b));
    s1 = MLA(s1, a0, vld1q_f32(b + 4));
    s2 = MLA(s2, a1, vld1q_f32(b + 8));
    s3 = MLA(s3, a1, vld1q_f32(b + 12));
  }
  for (; k < K; k++) {
    float32x4_t a0 = vdupq_n_f32(a[k]);
    s0 = MLA(s0, a0, vld1q_f32(pb + k * NR));
    s1 = MLA(s1, a0, vld1q_f32(pb + k * NR + 4));
  }
  vst1q_f32(out, vaddq_f32(s0, s2));
  vst1q_f32(out + 4, vaddq_f32(s1, s3));
}


/* A read in place (mr rows at stride rsa); the tile goes through the shared store. */
static void micro_rs_neon(int64_t kc, const float *a, int64_t rsa, const float *pb,
                          const kiln_tile_store *st) {
  float32x4_t c0[MR], c1[MR];
  const float *ar[MR];
  for (int i = 0; i < MR; i++) {
    c0[i] = vdupq_n_f32(0.0f);
    c1[i] = c0[i];
    ar[i] = a + i * rsa;
  }
  for (int64_t k = 0; k < kc; k++) {
    float32x4_t b0 = vld1q_f32(pb + k * NR), b1 = vld1q_f32(pb + k * NR + 4);
    for (int i = 0; i < MR; i++) {
      float32x4_t av = vdupq_n_f32(ar[i][k]);
      c0[i] = MLA(c0[i], av, b0);
      c1[i] = MLA(c1[i], av, b1);
    }
  }
  float row[NR];
  for (int i = 0; i < MR; i++) {
    vst1q_f32(row, c0[i]);
    vst1q_f32(row + 4, c1[i]);
    kiln_tile_store_row(st, i, row);
  }
}

/* Weight rows of 8 floats (two q registers), two rows in flight. */
static void gather_neon(const float *panel, int nr, const int32_t *idx, const float *val,
                        int64_t nnz, int ncols, float *acc) {
  float32x4_t s0 = vdupq_n_f32(0.0f), s1 = s0, s2 = s0, s3 = s0;
  int64_t t = 0;
  (void)ncols;
  for (; t + 2 <= nnz; t += 2) {
    const float *b0 = panel + (int64_t)idx[t] * nr, *b1 = panel + (int64_t)idx[t + 1] * nr;
    if (val) {
      float32x4_t v0 = vdupq_n_f32(val[t]), v1 = vdupq_n_f32(val[t + 1]);
      s0 = MLA(s0, v0, vld1q_f32(b0));
      s1 = MLA(s1, v0, vld1q_f32(b0 + 4));
      s2 = MLA(s2, v1, vld1q_f32(b1));
      s3 = MLA(s3, v1, vld1q_f32(b1 + 4));
    } else {
      s0 = vaddq_f32(s0, vld1q_f32(b0));
      s1 = vaddq_f32(s1, vld1q_f32(b0 + 4));
      s2 = vaddq_f32(s2, vld1q_f32(b1));
      s3 = vaddq_f32(s3, vld1q_f32(b1 + 4));
    }
  }
  for (; t < nnz; t++) {
    const float *b0 = panel + (int64_t)idx[t] * nr;
    float32x4_t v0 = vdupq_n_f32(val ? val[t] : 1.0f);
    s0 = MLA(s0, v0, vld1q_f32(b0));
    s1 = MLA(s1, v0, vld1q_f32(b0 + 4));
  }
  vst1q_f32(acc, vaddq_f32(s0, s2));
  vst1q_f32(acc + 4, vaddq_f32(s1, s3));
}

/* 16 floats per test: any lane != 0 (NaN included, as `x != 0.0f`) sends the block
 * to the scalar loop. */
static int64_t nzscan_neon(const float *x, int64_t K, int32_t *idx, float *val) {
  float32x4_t z = vdupq_n_f32(0.0f);
  int64_t n = 0, k = 0;
  for (; k + 16 <= K; k += 16) {
    uint32x4_t e0 = vceqq_f32(vld1q_f32(x + k), z), e1 = vceqq_f32(vld1q_f32(x + k + 4), z);
    uint32x4_t e2 = vceqq_f32(vld1q_f32(x + k + 8), z), e3 = vceqq_f32(vld1q_f32(x + k + 12), z);
    uint32x4_t e = vandq_u32(vandq_u32(e0, e1), vandq_u32(e2, e3));
    uint32x2_t h = vand_u32(vget_low_u32(e), vget_high_u32(e));
    if ((vget_lane_u32(h, 0) & vget_lane_u32(h, 1)) == 0xffffffffu) continue;
    for (int j = 0; j < 16; j++)
      if (x[k + j] != 0.0f) {
        idx[n] = (int32_t)(k + j);
        val[n++] = x[k + j];
      }
  }
  for (; k < K; k++)
    if (x[k] != 0.0f) {
      idx[n] = (int32_t)k;
      val[n++] = x[k];
    }
  return n;
}

static void rowdot_neon(int64_t M, int64_t K, const float *a, int64_t rsa, const float *w,
                        float *out) {
  int64_t K4 = K & ~(int64_t)3;
  for (int64_t i = 0; i < M; i++) {
    const float *r = a + i * rsa;
    float32x4_t s = vdupq_n_f32(0.0f);
    for (int64_t k = 0; k < K4; k += 4) s = MLA(s, vld1q_f32(r + k), vld1q_f32(w + k));
    float32x2_t h = vadd_f32(vget_low_f32(s), vget_high_f32(s));
    float t = vget_lane_f32(h, 0) + vget_lane_f32(h, 1);
    for (int64_t k = K4; k < K; k++) t += r[k] * w[k];
    out[i] = t;
  }
}

static const kiln_sgemm_kernel NEON_KERNEL = {KILN_KERNEL_NEON, "neon", MR, NR, 256, 128,
                                              micro_neon, gemv_neon, micro_rs_neon, gather_neon,
                                              nzscan_neon, rowdot_neon};

const kiln_sgemm_kernel *kiln_sgemm_kernel_neon(void) { return &NEON_KERNEL; }
#else
const kiln_sgemm_kernel *kiln_sgemm_kernel_neon(void) { return 0; }
#endif

/* kiln runtime — int8 GEMM tile for AVX-512 VNNI: vpdpbusd multiplies u8 x s8 and sums
 * 4 products into int32 (no saturation). Activations arrive with their sign bit
 * flipped (int8 x + 128) and the driver's bias subtracts 128 * colsum(W). 8 rows x 16
 * columns per tile; one row splits K over 4 accumulators to hide the latency. */
#include "qgemm_driver.h"

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

static void tile1(int64_t kp, const int8_t *a, const int8_t *pb, int32_t *acc);

/* Two panels at once (8 rows x 32 columns): each broadcast of 4 A bytes feeds two
 * vpdpbusd, halving the broadcast loads per multiply. */
static void tile8x2(int64_t kp, const int8_t *a, const int8_t *pb0, const int8_t *pb1, int32_t *acc0,
                    int32_t *acc1) {
  __m512i c[8], d[8];
  for (int r = 0; r < 8; r++) c[r] = d[r] = _mm512_setzero_si512();
  for (int64_t g = 0; g < kp / 4; g++) {
    __m512i w0 = _mm512_loadu_si512((const void *)(pb0 + g * 4 * NR));
    __m512i w1 = _mm512_loadu_si512((const void *)(pb1 + g * 4 * NR));
    for (int r = 0; r < 8; r++) {
      __m512i av = bcast4(a + r * kp + g * 4);
      c[r] = _mm512_dpbusd_epi32(c[r], av, w0);
      d[r] = _mm512_dpbusd_epi32(d[r], av, w1);
    }
  }
  for (int r = 0; r < 8; r++) {
    _mm512_storeu_si512((void *)(acc0 + r * NR), c[r]);
    _mm512_storeu_si512((void *)(acc1 + r * NR), d[r]);
  }
}

static void tile_vnni2(int64_t kp, const int8_t *a, int rows, const int8_t *pb0, const int8_t *pb1,
                       int32_t *acc0, int32_t *acc1) {
  if (rows == 1) {
    tile1(kp, a, pb0, acc0);
    tile1(kp, a, pb1, acc1);
  } else {
    tile8x2(kp, a, pb0, pb1, acc0, acc1);
  }
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

/* Block-sparse: the non-zero groups only, their A bytes found through gidx. */
static void stile_vnni(int64_t kp, const int8_t *a, int rows, const int32_t *gidx, int64_t ng,
                       const int8_t *w, int32_t *acc) {
  if (rows == 1) {
    __m512i c0 = _mm512_setzero_si512(), c1 = c0;
    int64_t i = 0;
    for (; i + 2 <= ng; i += 2) {
      c0 = _mm512_dpbusd_epi32(c0, bcast4(a + (int64_t)gidx[i] * 4),
                               _mm512_loadu_si512((const void *)(w + i * 4 * NR)));
      c1 = _mm512_dpbusd_epi32(c1, bcast4(a + (int64_t)gidx[i + 1] * 4),
                               _mm512_loadu_si512((const void *)(w + (i + 1) * 4 * NR)));
    }
    if (i < ng)
      c0 = _mm512_dpbusd_epi32(c0, bcast4(a + (int64_t)gidx[i] * 4),
                               _mm512_loadu_si512((const void *)(w + i * 4 * NR)));
    _mm512_storeu_si512((void *)acc, _mm512_add_epi32(c0, c1));
    return;
  }
  __m512i c[8];
  for (int r = 0; r < 8; r++) c[r] = _mm512_setzero_si512();
  for (int64_t i = 0; i < ng; i++) {
    __m512i wv = _mm512_loadu_si512((const void *)(w + i * 4 * NR));
    const int8_t *ak = a + (int64_t)gidx[i] * 4;
    for (int r = 0; r < 8; r++) c[r] = _mm512_dpbusd_epi32(c[r], bcast4(ak + r * kp), wv);
  }
  for (int r = 0; r < 8; r++) _mm512_storeu_si512((void *)(acc + r * NR), c[r]);
}

/* SaturatingRoundingDoublingHighMul's trunc((p + nudge) / 2^31), nudge = 2^30 for p >= 0
 * and 1 - 2^30 below, is floor((p + 2^30) / 2^31) for every int64 p (for p < 0 the
 * truncation adds 2^31 - 1, and 1 - 2^30 + 2^31 - 1 = 2^30): one add and an arithmetic
 * shift. */
static void store_panel64(const kiln_qgemm_args *g, const int32_t *acc, int64_t m, int rows,
                          int64_t n0);

/* The epilogue for a whole 16-column panel whose biases fit int32 and whose multipliers
 * are below 1 (right shifts only; the usual case), 16 columns per vector in 32-bit lanes
 * (64-bit products, even and odd lanes): the integer steps of kiln_q_mul, as the AVX2
 * epilogue. Other panels take the 64-bit-lane one below. */
static void store_panel(const kiln_qgemm_args *g, const int32_t *acc, int64_t m, int rows,
                        int64_t n0) {
  const __m512i bias64a = _mm512_loadu_si512((const void *)(g->bias + n0));
  const __m512i bias64b = _mm512_loadu_si512((const void *)(g->bias + n0 + 8));
  const __m512i i32max = _mm512_set1_epi64(INT32_MAX), i32min = _mm512_set1_epi64(INT32_MIN);
  __m512i sh = _mm512_loadu_si512((const void *)(g->shift + n0));
  __mmask8 fits = _mm512_cmple_epi64_mask(bias64a, i32max) & _mm512_cmpge_epi64_mask(bias64a, i32min) &
                  _mm512_cmple_epi64_mask(bias64b, i32max) & _mm512_cmpge_epi64_mask(bias64b, i32min);
  if (fits != 0xff || _mm512_cmpgt_epi32_mask(sh, _mm512_setzero_si512())) {
    store_panel64(g, acc, m, rows, n0);
    return;
  }
  const __m512i zero = _mm512_setzero_si512(), one = _mm512_set1_epi32(1);
  const __m512i bias = _mm512_inserti64x4(_mm512_castsi256_si512(_mm512_cvtepi64_epi32(bias64a)),
                                          _mm512_cvtepi64_epi32(bias64b), 1);
  const __m512i mult = _mm512_loadu_si512((const void *)(g->mult + n0));
  const __m512i mult_odd = _mm512_srli_epi64(mult, 32);
  const __m512i right = _mm512_sub_epi32(zero, sh);
  const __m512i mask = _mm512_sub_epi32(_mm512_sllv_epi32(one, right), one);
  const __m512i half = _mm512_srli_epi32(mask, 1);
  const __m512i lo = _mm512_set1_epi32(g->lo - g->zp_y), hi = _mm512_set1_epi32(g->hi - g->zp_y);
  const __m512i zp = _mm512_set1_epi32(g->zp_y), imax = _mm512_set1_epi32(INT32_MAX);
  const __m512i half31 = _mm512_set1_epi64((int64_t)1 << 30);
  /* |acc| <= K * 128 * 255 (u8 x s8, the widest case): with |bias| below 2^31 minus that,
   * acc + bias cannot leave int32 and the saturation is skipped */
  int64_t bmax = 0;
  for (int j = 0; j < KILN_QGEMM_NR; j++) {
    int64_t b = g->bias[n0 + j] < 0 ? -g->bias[n0 + j] : g->bias[n0 + j];
    bmax = b > bmax ? b : bmax;
  }
  int no_sat = bmax + g->K * 128 * 255 < INT32_MAX;
  for (int r = 0; r < rows; r++) {
    __m512i a = _mm512_loadu_si512((const void *)(acc + r * KILN_QGEMM_NR));
    __m512i t = _mm512_add_epi32(a, bias);
    if (!no_sat) { /* saturate_int32(a + bias): overflow when the signs agree and the sum's differs */
      __m512i ovf = _mm512_andnot_si512(_mm512_xor_si512(a, bias), _mm512_xor_si512(a, t));
      __m512i sat = _mm512_xor_si512(_mm512_srai_epi32(a, 31), imax);
      t = _mm512_mask_blend_epi32(_mm512_cmplt_epi32_mask(ovf, zero), t, sat);
    }
    /* SaturatingRoundingDoublingHighMul, floor((t * mult + 2^30) / 2^31): even lanes take
     * the low dword of the shifted sum, odd lanes the same bits shifted into the high one */
    __m512i pe = _mm512_add_epi64(_mm512_mul_epi32(t, mult), half31);
    __m512i po = _mm512_add_epi64(_mm512_mul_epi32(_mm512_srli_epi64(t, 32), mult_odd), half31);
    __m512i hh = _mm512_mask_blend_epi32(0xaaaa, _mm512_srli_epi64(pe, 31), _mm512_slli_epi64(po, 1));
    /* RoundingDivideByPOT */
    __m512i rem = _mm512_and_si512(hh, mask);
    __m512i thr = _mm512_mask_add_epi32(half, _mm512_cmplt_epi32_mask(hh, zero), half, one);
    __m512i res = _mm512_srav_epi32(hh, right);
    res = _mm512_mask_add_epi32(res, _mm512_cmpgt_epi32_mask(rem, thr), res, one);
    /* zp + clamp(res, lo - zp, hi - zp) == clamp(zp + res, lo, hi), without overflow */
    __m512i v = _mm512_add_epi32(_mm512_min_epi32(_mm512_max_epi32(res, lo), hi), zp);
    _mm_storeu_si128((__m128i *)((int8_t *)g->y + (m + r) * g->N + n0), _mm512_cvtepi32_epi8(v));
  }
}

/* The epilogue of qgemm_driver.h for a whole 16-column panel, 8 columns per vector in
 * 64-bit lanes: the same integer operations as kiln_q_mul, step for step. */
static void store_panel64(const kiln_qgemm_args *g, const int32_t *acc, int64_t m, int rows,
                          int64_t n0) {
  const __m512i zero = _mm512_setzero_si512(), one = _mm512_set1_epi64(1);
  const __m512i i32max = _mm512_set1_epi64(INT32_MAX), i32min = _mm512_set1_epi64(INT32_MIN);
  const __m512i nudge_pos = _mm512_set1_epi64((int64_t)1 << 30);
  const __m512i nudge_neg = _mm512_set1_epi64(1 - ((int64_t)1 << 30));
  const __m512i trunc_fix = _mm512_set1_epi64(((int64_t)1 << 31) - 1);
  const __m512i zp = _mm512_set1_epi64(g->zp_y), lo = _mm512_set1_epi64(g->lo),
                hi = _mm512_set1_epi64(g->hi);
  for (int h = 0; h < 2; h++) {
    int64_t c = n0 + 8 * h;
    __m512i bias = _mm512_loadu_si512((const void *)(g->bias + c));
    __m512i mult = _mm512_cvtepi32_epi64(_mm256_loadu_si256((const __m256i *)(g->mult + c)));
    __m512i sh = _mm512_cvtepi32_epi64(_mm256_loadu_si256((const __m256i *)(g->shift + c)));
    __m512i left = _mm512_max_epi64(sh, zero);
    __m512i right = _mm512_max_epi64(_mm512_sub_epi64(zero, sh), zero);
    __m512i mask = _mm512_sub_epi64(_mm512_sllv_epi64(one, right), one);
    __m512i half = _mm512_srai_epi64(mask, 1);
    for (int r = 0; r < rows; r++) {
      __m512i a = _mm512_cvtepi32_epi64(
          _mm256_loadu_si256((const __m256i *)(acc + r * KILN_QGEMM_NR + 8 * h)));
      __m512i t = _mm512_min_epi64(_mm512_max_epi64(_mm512_add_epi64(a, bias), i32min), i32max);
      __m512i xl = _mm512_min_epi64(_mm512_max_epi64(_mm512_sllv_epi64(t, left), i32min), i32max);
      __m512i ab = _mm512_mul_epi32(xl, mult); /* int32 x int32 -> int64 */
      __m512i s = _mm512_add_epi64(
          ab, _mm512_mask_blend_epi64(_mm512_cmplt_epi64_mask(ab, zero), nudge_pos, nudge_neg));
      s = _mm512_mask_add_epi64(s, _mm512_cmplt_epi64_mask(s, zero), s, trunc_fix);
      __m512i hh = _mm512_srai_epi64(s, 31); /* (ab + nudge) / 2^31, toward zero */
      __m512i rem = _mm512_and_si512(hh, mask);
      __m512i thr = _mm512_mask_add_epi64(half, _mm512_cmplt_epi64_mask(hh, zero), half, one);
      __m512i res = _mm512_srav_epi64(hh, right);
      res = _mm512_mask_add_epi64(res, _mm512_cmpgt_epi64_mask(rem, thr), res, one);
      __m512i v = _mm512_min_epi64(_mm512_max_epi64(_mm512_add_epi64(res, zp), lo), hi);
      _mm_storel_epi64((__m128i *)((int8_t *)g->y + (m + r) * g->N + c), _mm512_cvtepi64_epi8(v));
    }
  }
}

static void run_vnni(const kiln_qgemm_kernel *k, const kiln_qgemm_args *g, int64_t m0, int64_t m1,
                     int8_t *ws) {
  qgemm_drive(k, g, m0, m1, ws, tile_vnni, tile_vnni2, stile_vnni, store_panel);
}

static const kiln_qgemm_kernel kernel = {KILN_KERNEL_VNNI, "vnni", 8, 1, 0, tile_vnni, run_vnni, stile_vnni};
const kiln_qgemm_kernel *kiln_qgemm_kernel_vnni(void) { return &kernel; }
#else
const kiln_qgemm_kernel *kiln_qgemm_kernel_vnni(void) { return 0; }
#endif

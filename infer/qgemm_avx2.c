/* kiln runtime — int8 GEMM for AVX2: the driver widens A to int16, weights are
 * sign-extended to int16 and multiplied with vpmaddwd (pairs of int16 products summed
 * into int32: exact, no vpmaddubsw int16 saturation); 4 rows x 8 columns per pass,
 * two passes per 16-column panel. The requantizing epilogue runs 8 columns per vector
 * in 32-bit lanes (64-bit products), the same integer steps as kiln_q_mul; a panel
 * whose bias does not fit int32 or whose multiplier exceeds 1 takes the scalar one. */
#include "qgemm_driver.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#include <string.h>

#define NR KILN_QGEMM_NR
#define MR 4

static inline __attribute__((always_inline)) void tile_n(int64_t kp, const int16_t *a,
                                                          const int8_t *pb, int32_t *acc,
                                                          const int R) {
  for (int h = 0; h < 2; h++) {
    __m256i c[MR][2];
    for (int r = 0; r < R; r++) c[r][0] = c[r][1] = _mm256_setzero_si256();
    for (int64_t g = 0; g < kp / 4; g++) {
      const int8_t *w = pb + g * 4 * NR + h * 32;
      /* columns 8h..8h+3 and 8h+4..8h+7, k 0..3 each, as int16 */
      __m256i w0 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)w));
      __m256i w1 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(w + 16)));
      for (int r = 0; r < R; r++) {
        int64_t a4;
        memcpy(&a4, a + r * kp + g * 4, 8);
        __m256i av = _mm256_set1_epi64x(a4);
        c[r][0] = _mm256_add_epi32(c[r][0], _mm256_madd_epi16(w0, av));
        c[r][1] = _mm256_add_epi32(c[r][1], _mm256_madd_epi16(w1, av));
      }
    }
    for (int r = 0; r < R; r++) {
      /* lanes hold (col, k01) and (col, k23) pairs: add them, restore column order */
      __m256i s = _mm256_hadd_epi32(c[r][0], c[r][1]);
      s = _mm256_permute4x64_epi64(s, 0xd8);
      _mm256_storeu_si256((__m256i *)(acc + r * NR + h * 8), s);
    }
  }
}

static void tile_avx2(int64_t kp, const int8_t *a, int rows, const int8_t *pb, int32_t *acc) {
  const int16_t *a16 = (const int16_t *)(const void *)a;
  if (rows == 1) tile_n(kp, a16, pb, acc, 1);
  else tile_n(kp, a16, pb, acc, MR);
}

/* (int64 product lanes) -> trunc((p + nudge) / 2^31) in the low dword of each lane */
static inline __m256i high_mul(__m256i p) {
  const __m256i zero = _mm256_setzero_si256();
  const __m256i nudge_pos = _mm256_set1_epi64x((int64_t)1 << 30);
  const __m256i nudge_neg = _mm256_set1_epi64x(1 - ((int64_t)1 << 30));
  const __m256i fix = _mm256_set1_epi64x(((int64_t)1 << 31) - 1);
  __m256i s = _mm256_add_epi64(p, _mm256_blendv_epi8(nudge_pos, nudge_neg, _mm256_cmpgt_epi64(zero, p)));
  s = _mm256_add_epi64(s, _mm256_and_si256(fix, _mm256_cmpgt_epi64(zero, s)));
  /* the quotient fits int32, so the low dword of the logical shift is it */
  return _mm256_srli_epi64(s, 31);
}

static void store_panel(const kiln_qgemm_args *g, const int32_t *acc, int64_t m, int rows,
                        int64_t n0) {
  const __m256i zero = _mm256_setzero_si256(), one = _mm256_set1_epi32(1);
  for (int h = 0; h < 2; h++) {
    int64_t c = n0 + 8 * h;
    int32_t b32[8];
    int ok = 1;
    for (int j = 0; j < 8; j++) {
      int64_t b = g->bias[c + j];
      ok &= b >= INT32_MIN && b <= INT32_MAX && g->shift[c + j] <= 0;
      b32[j] = (int32_t)b;
    }
    if (!ok) { /* rare: the scalar epilogue */
      int32_t tmp[KILN_QGEMM_MAX_MR * NR];
      for (int r = 0; r < rows; r++) memcpy(tmp + r * NR, acc + r * NR + 8 * h, 8 * sizeof(int32_t));
      qgemm_store_scalar(g, tmp, m, rows, c, 8);
      continue;
    }
    __m256i bias = _mm256_loadu_si256((const __m256i *)b32);
    __m256i mult = _mm256_loadu_si256((const __m256i *)(g->mult + c));
    __m256i mult_odd = _mm256_srli_epi64(mult, 32);
    __m256i right = _mm256_sub_epi32(zero, _mm256_loadu_si256((const __m256i *)(g->shift + c)));
    __m256i mask = _mm256_sub_epi32(_mm256_sllv_epi32(one, right), one);
    __m256i half = _mm256_srli_epi32(mask, 1);
    __m256i lo = _mm256_set1_epi32(g->lo - g->zp_y), hi = _mm256_set1_epi32(g->hi - g->zp_y);
    __m256i zp = _mm256_set1_epi32(g->zp_y);
    for (int r = 0; r < rows; r++) {
      __m256i a = _mm256_loadu_si256((const __m256i *)(acc + r * NR + 8 * h));
      /* t = saturate_int32(a + bias): overflow when the signs agree and the sum's differs */
      __m256i t = _mm256_add_epi32(a, bias);
      __m256i ovf = _mm256_andnot_si256(_mm256_xor_si256(a, bias), _mm256_xor_si256(a, t));
      __m256i sat = _mm256_xor_si256(_mm256_srai_epi32(a, 31), _mm256_set1_epi32(INT32_MAX));
      t = _mm256_blendv_epi8(t, sat, _mm256_srai_epi32(ovf, 31));
      /* SaturatingRoundingDoublingHighMul: even lanes, then odd lanes */
      __m256i he = high_mul(_mm256_mul_epi32(t, mult));
      __m256i ho = high_mul(_mm256_mul_epi32(_mm256_srli_epi64(t, 32), mult_odd));
      __m256i hh = _mm256_blend_epi32(he, _mm256_slli_epi64(ho, 32), 0xaa);
      /* RoundingDivideByPOT */
      __m256i rem = _mm256_and_si256(hh, mask);
      __m256i thr = _mm256_sub_epi32(half, _mm256_cmpgt_epi32(zero, hh));
      __m256i res = _mm256_sub_epi32(_mm256_srav_epi32(hh, right), _mm256_cmpgt_epi32(rem, thr));
      /* zp + clamp(res, lo - zp, hi - zp) == clamp(zp + res, lo, hi), without overflow */
      __m256i v = _mm256_add_epi32(_mm256_min_epi32(_mm256_max_epi32(res, lo), hi), zp);
      __m128i v16 = _mm_packs_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
      __m128i v8 = g->y_unsigned ? _mm_packus_epi16(v16, v16) : _mm_packs_epi16(v16, v16);
      _mm_storel_epi64((__m128i *)((int8_t *)g->y + (m + r) * g->N + c), v8);
    }
  }
}

static void run_avx2(const kiln_qgemm_kernel *k, const kiln_qgemm_args *g, int64_t m0, int64_t m1,
                     int8_t *ws) {
  qgemm_drive(k, g, m0, m1, ws, tile_avx2, NULL, NULL, store_panel);
}

static const kiln_qgemm_kernel kernel = {KILN_KERNEL_AVX2, "avx2", MR, 0, 1, tile_avx2, run_avx2, NULL};
const kiln_qgemm_kernel *kiln_qgemm_kernel_avx2(void) { return &kernel; }
#else
const kiln_qgemm_kernel *kiln_qgemm_kernel_avx2(void) { return 0; }
#endif

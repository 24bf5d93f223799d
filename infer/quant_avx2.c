/* kiln runtime — QuantizeLinear of a float row for AVX2, 8 values per vector: the same
 * result as kiln_q_quantize's IEEE division, NaN to 0, the clamp to +-2^22, round half to
 * even (vroundps, exact there) and the integer saturation, so the bytes are identical.
 *
 * The division is the slow part (a text model's 10,000-wide rows spend most of their
 * time here), so each vector first multiplies by r = fl(1/scale). For |x/s| <= 2048,
 * fl(x * r) is within 2^-11.4 of fl(x / s) (three roundings of 2^-24 relative each), so
 * both round to the same integer unless fl(x * r) lies within 2^-10 of a half-integer;
 * such a vector (about one in 30) is divided after all. Beyond 2048 both saturate any
 * int8/uint8 result; NaN and infinities come out the same either way. Scales whose
 * reciprocal is not a normal float always divide. */
#include "qgemm.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>

static void quantize_row_avx2(const float *x, int64_t n, float scale, int32_t zp, int32_t lo,
                              int32_t hi, uint8_t *y) {
  const __m256 s = _mm256_set1_ps(scale), big = _mm256_set1_ps(4194304.0f),
               nbig = _mm256_set1_ps(-4194304.0f);
  const __m256i z = _mm256_set1_epi32(zp), l = _mm256_set1_epi32(lo), h = _mm256_set1_epi32(hi);
  float rf = 1.0f / scale;
  int fast = scale >= 1e-30f && scale <= 1e30f && rf >= 1e-30f && rf <= 1e30f;
  const __m256 r = _mm256_set1_ps(rf), near_half = _mm256_set1_ps(0.5f - 1.0f / 1024.0f),
               abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    __m256 xv = _mm256_loadu_ps(x + i), v;
    if (fast) {
      v = _mm256_mul_ps(xv, r);
      __m256 d = _mm256_and_ps(
          _mm256_sub_ps(v, _mm256_round_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)), abs_mask);
      if (_mm256_movemask_ps(_mm256_cmp_ps(d, near_half, _CMP_GT_OQ))) v = _mm256_div_ps(xv, s);
    } else {
      v = _mm256_div_ps(xv, s);
    }
    v = _mm256_and_ps(v, _mm256_cmp_ps(v, v, _CMP_ORD_Q)); /* NaN -> 0 */
    v = _mm256_min_ps(_mm256_max_ps(v, nbig), big);
    v = _mm256_round_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256i q = _mm256_add_epi32(_mm256_cvtps_epi32(v), z);
    q = _mm256_min_epi32(_mm256_max_epi32(q, l), h);
    __m128i q16 = _mm_packs_epi32(_mm256_castsi256_si128(q), _mm256_extracti128_si256(q, 1));
    __m128i q8 = lo >= 0 ? _mm_packus_epi16(q16, q16) : _mm_packs_epi16(q16, q16);
    _mm_storel_epi64((__m128i *)(y + i), q8);
  }
  for (; i < n; i++) y[i] = (uint8_t)kiln_q_quantize(x[i], scale, zp, lo, hi);
}

kiln_quantize_row_fn kiln_quantize_row_avx2(void) { return quantize_row_avx2; }
#else
kiln_quantize_row_fn kiln_quantize_row_avx2(void) { return 0; }
#endif

/* kiln runtime — QuantizeLinear of a float row for AVX-512, 16 values per vector: the
 * algorithm of quant_avx2.c (multiply by fl(1/scale), divide a vector with a value within
 * 2^-10 of a rounding tie; see there why the bytes equal kiln_q_quantize's division),
 * NaN to 0, the clamp to +-2^22, round half to even, the integer saturation, and the low
 * byte of each int32 (within [lo, hi] that is the int8 or uint8 value). */
#include "qgemm.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>

static void quantize_row_avx512(const float *x, int64_t n, float scale, int32_t zp, int32_t lo,
                                int32_t hi, uint8_t *y) {
  const __m512 s = _mm512_set1_ps(scale), big = _mm512_set1_ps(4194304.0f),
               nbig = _mm512_set1_ps(-4194304.0f);
  const __m512i z = _mm512_set1_epi32(zp), l = _mm512_set1_epi32(lo), h = _mm512_set1_epi32(hi);
  float rf = 1.0f / scale;
  int fast = scale >= 1e-30f && scale <= 1e30f && rf >= 1e-30f && rf <= 1e30f;
  const __m512 r = _mm512_set1_ps(rf), near_half = _mm512_set1_ps(0.5f - 1.0f / 1024.0f);
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    __m512 xv = _mm512_loadu_ps(x + i), v;
    if (fast) {
      v = _mm512_mul_ps(xv, r);
      __m512 d = _mm512_abs_ps(_mm512_sub_ps(v, _mm512_roundscale_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)));
      if (_mm512_cmp_ps_mask(d, near_half, _CMP_GT_OQ)) v = _mm512_div_ps(xv, s);
    } else {
      v = _mm512_div_ps(xv, s);
    }
    v = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(v, v, _CMP_ORD_Q), v); /* NaN -> 0 */
    v = _mm512_min_ps(_mm512_max_ps(v, nbig), big);
    __m512i q = _mm512_cvt_roundps_epi32(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    q = _mm512_min_epi32(_mm512_max_epi32(_mm512_add_epi32(q, z), l), h);
    _mm_storeu_si128((__m128i *)(y + i), _mm512_cvtepi32_epi8(q));
  }
  for (; i < n; i++) y[i] = (uint8_t)kiln_q_quantize(x[i], scale, zp, lo, hi);
}

kiln_quantize_row_fn kiln_quantize_row_avx512(void) { return quantize_row_avx512; }
#else
kiln_quantize_row_fn kiln_quantize_row_avx512(void) { return 0; }
#endif

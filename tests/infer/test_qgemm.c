/* Every int8 GEMM path the CPU has against the naive truth, bit for bit: odd shapes,
 * extreme values (-128/127/255), int8 and uint8 activations, zero points, per-channel
 * multipliers, bias and ReLU, split row ranges; and the requantization primitives. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "qgemm.h"

static uint32_t rnd(uint32_t *s) {
  *s = *s * 1664525u + 1013904223u;
  return *s >> 8;
}

/* Mostly extreme values: the corners are where an overflow would show. */
static int32_t pick(uint32_t *s, int lo, int hi) {
  uint32_t r = rnd(s) % 8;
  if (r == 0) return lo;
  if (r == 1) return hi;
  return lo + (int32_t)(rnd(s) % (uint32_t)(hi - lo + 1));
}

static int run_case_b(const kiln_qgemm_kernel *k, int64_t M, int64_t N, int64_t K, int xu, int yu,
                      int relu, int use_bias, uint32_t seed, int blocks);
static int run_case(const kiln_qgemm_kernel *k, int64_t M, int64_t N, int64_t K, int xu, int yu,
                    int relu, int use_bias, uint32_t seed) {
  return run_case_b(k, M, N, K, xu, yu, relu, use_bias, seed, 0);
}

/* blocks: about 80% of the aligned 4 x 16 blocks of W zero, and a third pass on the
 * block-sparse tile where the path has one */
static int run_case_b(const kiln_qgemm_kernel *k, int64_t M, int64_t N, int64_t K, int xu, int yu,
                      int relu, int use_bias, uint32_t seed, int blocks) {
  int xlo = xu ? 0 : -128, xhi = xu ? 255 : 127;
  int8_t *w = malloc((size_t)(K * N + 1));
  uint8_t *x = malloc((size_t)(M * K + 1));
  int64_t *bq = malloc((size_t)(N + 1) * sizeof(int64_t));
  int64_t *be = malloc((size_t)(N + 1) * sizeof(int64_t));
  int32_t *mult = malloc((size_t)(N + 1) * sizeof(int32_t)), *shift = malloc((size_t)(N + 1) * sizeof(int32_t));
  int32_t *colsum = malloc((size_t)(N + 1) * sizeof(int32_t));
  uint8_t *y = malloc((size_t)(M * N + 1)), *ref = malloc((size_t)(M * N + 1));
  int8_t *pb = NULL;
  if (posix_memalign((void **)&pb, 64, kiln_qgemm_packed_bytes(K, N) + 64)) pb = NULL;
  int8_t *ws = malloc(kiln_qgemm_workspace_bytes(k, K));
  assert_non_null(w); assert_non_null(x); assert_non_null(bq); assert_non_null(be);
  assert_non_null(mult); assert_non_null(shift); assert_non_null(colsum); assert_non_null(y);
  assert_non_null(ref); assert_non_null(pb); assert_non_null(ws);
  for (int64_t i = 0; i < K * N; i++) w[i] = (int8_t)pick(&seed, -128, 127);
  if (blocks)
    for (int64_t k0 = 0; k0 < K; k0 += 4)
      for (int64_t n0 = 0; n0 < N; n0 += 16) {
        if (rnd(&seed) % 5 == 0) continue;
        for (int64_t kk = k0; kk < k0 + 4 && kk < K; kk++)
          for (int64_t nn = n0; nn < n0 + 16 && nn < N; nn++) w[kk * N + nn] = 0;
      }
  int32_t zp_x = pick(&seed, xlo, xhi);
  /* x is the quantization of float rows xf (scale sxf, zero point zp_x), so the float
   * input path (the model's QuantizeLinear fused into the layer) has the same truth */
  float *xf = malloc((size_t)(M * K + 1) * sizeof(float));
  assert_non_null(xf);
  float sxf = 0.01f + (float)(rnd(&seed) % 100) * 1e-3f;
  for (int64_t i = 0; i < M * K; i++)
    xf[i] = (float)(pick(&seed, -300, 300) - zp_x) * sxf + (float)((int32_t)(rnd(&seed) % 1001) - 500) * 1e-3f * sxf;
  kiln_quantize_row_ref(xf, M * K, sxf, zp_x, xlo, xhi, x);
  int32_t zp_y = yu ? pick(&seed, 0, 255) : pick(&seed, -128, 127);
  double sx = 0.001 + (rnd(&seed) % 1000) * 1e-4;
  for (int64_t n = 0; n < N; n++) {
    double sw = 1e-4 + (rnd(&seed) % 1000) * 1e-5, sy = 0.01 + (rnd(&seed) % 1000) * 1e-3;
    int sh;
    /* every 4th case: multipliers above 1 (left shifts) and biases that saturate */
    double big = (seed & 3) == 0 ? 2000.0 * (1 + n % 3) : 1.0;
    kiln_q_multiplier(sx * sw / sy * big, &mult[n], &sh);
    shift[n] = sh;
    bq[n] = use_bias ? (int64_t)(rnd(&seed) % 200001) - 100000 : 0;
    if ((seed & 3) == 0 && use_bias && n % 5 == 1) bq[n] = (n & 2 ? 1 : -1) * ((int64_t)1 << 31);
    /* within int32, but the sum overflows it for some rows: saturation in 32-bit lanes */
    if ((seed & 3) == 2 && use_bias && n % 3 == 1)
      bq[n] = (n & 4 ? 1 : -1) * ((int64_t)INT32_MAX - 3000);
  }
  int32_t lo = yu ? 0 : -128, hi = yu ? 255 : 127;
  if (relu && zp_y > lo) lo = zp_y;
  kiln_qgemm_pack(K, N, w, N, 1, pb, colsum);
  kiln_qgemm_bias(k, xu, N, use_bias ? bq : NULL, zp_x, colsum, be);
  kiln_qgemm_args g = {M, N, K, x, xu, pb, be, mult, shift, zp_y, lo, hi, y, yu, 0, NULL, NULL, 0,
                       NULL, 0.0f, 0, NULL, NULL};
  kiln_qgemm_naive(M, N, K, x, xu, zp_x, w, use_bias ? bq : NULL, mult, shift, zp_y, lo, hi, ref, yu);
  int bad = 0;
  kiln_qgemm_sparse sp;
  memset(&sp, 0, sizeof sp);
  int passes = blocks && k->stile ? 3 : 2;
  if (passes == 3) assert_int_equal(kiln_qgemm_sparsify(K, N, pb, &sp), 0);
  for (int pass = 0; pass < passes; pass++) {
    if (pass == 2) { /* int8 input, block-sparse W */
      g.x = x;
      g.xf = NULL;
      g.sp = &sp;
    }
    if (pass == 1) { /* float input, quantized while packing */
      g.x = NULL;
      g.xf = xf;
      g.xf_scale = sxf;
      g.xf_zp = zp_x;
      g.xf_row = k->path != KILN_KERNEL_REF && kiln_quantize_row_avx2() ? kiln_quantize_row_avx2()
                                                                        : kiln_quantize_row_ref;
    }
    memset(y, 0x5a, (size_t)(M * N));
    if (M > 2) {
      kiln_qgemm_run(k, &g, 0, M / 3, ws);
      kiln_qgemm_run(k, &g, M / 3, M, ws);
    } else {
      kiln_qgemm_run(k, &g, 0, M, ws);
    }
    if (memcmp(y, ref, (size_t)(M * N)) != 0) {
      bad = 1;
      fprintf(stderr, "%s: M=%lld N=%lld K=%lld xu=%d yu=%d relu=%d bias=%d float_in=%d differs\n",
              k->name, (long long)M, (long long)N, (long long)K, xu, yu, relu, use_bias, pass);
    }
  }
  kiln_qgemm_sparse_free(&sp);
  free(w); free(x); free(xf); free(bq); free(be); free(mult); free(shift); free(colsum); free(y); free(ref);
  free(pb); free(ws);
  return bad;
}

static void test_path(kiln_kernel_path path, const char *name) {
  kiln_cpu cpu;
  kiln_cpu_detect(&cpu);
  const kiln_qgemm_kernel *k = kiln_qgemm_select(&cpu, path, NULL);
  if (!k) {
    printf("int8 path %s: not available on this CPU/build; skipped\n", name);
    return;
  }
  assert_string_equal(k->name, name);
  static const int64_t Ms[] = {1, 2, 3, 5, 7, 8, 9, 17, 33};
  static const int64_t Ns[] = {1, 3, 15, 16, 17, 31, 33, 70};
  static const int64_t Ks[] = {1, 2, 3, 4, 5, 7, 31, 64, 100, 257};
  int bad = 0, cases = 0;
  uint32_t seed = 7;
  for (size_t a = 0; a < sizeof Ms / sizeof *Ms; a++)
    for (size_t b = 0; b < sizeof Ns / sizeof *Ns; b++)
      for (size_t c = 0; c < sizeof Ks / sizeof *Ks; c++) {
        int xu = (int)((a + b + c) & 1), yu = (int)((a + c) % 3 == 0);
        bad += run_case(k, Ms[a], Ns[b], Ks[c], xu, yu, (int)(b & 1), (int)(c % 3 != 1), seed++);
        cases++;
      }
  /* long K: the accumulator near its bound (all -128 x -128 or 255 x -128 corners) */
  bad += run_case(k, 9, 40, 4099, 1, 0, 0, 1, 99);
  bad += run_case(k, 9, 40, 4099, 0, 1, 1, 1, 98);
  bad += run_case(k, 1, 512, 784, 0, 0, 1, 1, 97);
  bad += run_case(k, 64, 10, 512, 1, 1, 0, 1, 96);
  /* block-sparse W (the sparse tile where the path has one) */
  int sparse_cases = 0;
  for (size_t a = 0; a < sizeof Ms / sizeof *Ms; a++)
    for (size_t c = 0; c < sizeof Ks / sizeof *Ks; c++) {
      bad += run_case_b(k, Ms[a], Ns[(a + c) % (sizeof Ns / sizeof *Ns)], Ks[c], (int)(c & 1),
                        (int)(a & 1), (int)(a % 3 == 0), 1, 500 + (uint32_t)(a * 31 + c), 1);
      sparse_cases++;
    }
  bad += run_case_b(k, 33, 512, 784, 0, 0, 1, 1, 95, 1);
  printf("int8 path %s: %d block-sparse cases%s\n", name, sparse_cases + 1,
         k->stile ? " on its sparse tile" : " (dense tile: no sparse one)");
  printf("int8 path %s: %d cases + 4 large, all bit-identical to the truth\n", name, cases);
  assert_int_equal(bad, 0);
}

static void test_ref(void **s) { (void)s; test_path(KILN_KERNEL_REF, "ref"); }
static void test_avx2(void **s) { (void)s; test_path(KILN_KERNEL_AVX2, "avx2"); }
static void test_vnni(void **s) { (void)s; test_path(KILN_KERNEL_VNNI, "vnni"); }
static void test_neon(void **s) { (void)s; test_path(KILN_KERNEL_NEON, "neon"); }
static void test_dotprod(void **s) { (void)s; test_path(KILN_KERNEL_DOTPROD, "dotprod"); }

static void test_auto_is_available(void **s) {
  (void)s;
  kiln_cpu cpu;
  kiln_cpu_detect(&cpu);
  const kiln_qgemm_kernel *k = kiln_qgemm_select(&cpu, KILN_KERNEL_AUTO, NULL);
  assert_non_null(k);
  printf("int8 AUTO path: %s\n", k->name);
}

/* The fixed-point multiply is within one unit of the real product, and exact on the
 * cases TFLite documents (rounding half away from zero). */
static void test_requant(void **s) {
  (void)s;
  int32_t m;
  int sh;
  kiln_q_multiplier(0.5, &m, &sh);
  assert_int_equal(m, 1 << 30);
  assert_int_equal(sh, 0);
  assert_int_equal(kiln_q_mul(3, m, sh), 2);   /* 1.5 -> 2 */
  assert_int_equal(kiln_q_mul(-3, m, sh), -1); /* gemmlowp's nudge: -1.5 -> -1 */
  assert_int_equal(kiln_q_mul(5, m, sh), 3);
  kiln_q_multiplier(0.25, &m, &sh); /* the RoundingDivideByPOT stage: half away from zero */
  assert_int_equal(sh, -1);
  assert_int_equal(kiln_q_mul(6, m, sh), 2);   /* 1.5 -> 2 */
  assert_int_equal(kiln_q_mul(-6, m, sh), -2); /* -1.5 -> -2 */
  kiln_q_multiplier(1e-12, &m, &sh);
  assert_int_equal(m, 0);
  assert_int_equal(kiln_q_mul(INT32_MAX, m, sh), 0);
  uint32_t seed = 3;
  for (int i = 0; i < 200000; i++) {
    double real = ldexp(1.0 + (rnd(&seed) % 100000) / 100000.0, (int)(rnd(&seed) % 40) - 30);
    int32_t x = (int32_t)(rnd(&seed) * 2u) - (1 << 24);
    kiln_q_multiplier(real, &m, &sh);
    double want = (double)x * real;
    if (fabs(want) > 1e9) continue; /* x * 2^shift must fit int32 */
    double got = kiln_q_mul(x, m, sh);
    assert_true(fabs(got - want) <= 1.0 + fabs(want) * 1e-9);
  }
  /* QuantizeLinear: half to even, saturation, NaN to the zero point */
  assert_int_equal(kiln_q_quantize(2.5f, 1.0f, 0, -128, 127), 2);
  assert_int_equal(kiln_q_quantize(3.5f, 1.0f, 0, -128, 127), 4);
  assert_int_equal(kiln_q_quantize(-2.5f, 1.0f, 0, -128, 127), -2);
  assert_int_equal(kiln_q_quantize(1e30f, 1.0f, 0, -128, 127), 127);
  assert_int_equal(kiln_q_quantize(-1e30f, 0.5f, 10, 0, 255), 0);
  assert_int_equal(kiln_q_quantize(NAN, 0.5f, 10, 0, 255), 10);
  assert_int_equal(kiln_q_quantize(1.0f, 0.25f, 100, 0, 255), 104);
}

/* The vectorized QuantizeLinear rows equal the scalar definition byte for byte. */
static void test_quantize_rows(void **s) {
  (void)s;
  kiln_cpu cpu;
  kiln_cpu_detect(&cpu);
  kiln_quantize_row_fn fs[2] = {cpu.avx2_fma ? kiln_quantize_row_avx2() : NULL,
                                 cpu.avx512f ? kiln_quantize_row_avx512() : NULL};
  for (int fi = 0; fi < 2; fi++) {
    kiln_quantize_row_fn f = fs[fi];
    if (!f) {
      printf("quantize row %s: not on this CPU/build; skipped\n", fi ? "avx512" : "avx2");
      continue;
    }
    enum { N = 4099 };
    static float x[N];
    static uint8_t a[N], b[N];
    uint32_t seed = 11;
    for (int i = 0; i < N; i++) {
      uint32_t r = rnd(&seed) % 16;
      x[i] = r == 0 ? NAN : r == 1 ? INFINITY : r == 2 ? -INFINITY : r == 3 ? 1e30f
           : r == 4 ? (float)((int)(rnd(&seed) % 512) - 256) * 0.5f /* ties at scale 1 */
           : ((float)(rnd(&seed) % 200000) - 100000.0f) * 1e-3f;
    }
    static const float scales[] = {1.0f, 0.5f, 0.0078125f, 0.037f, 3.0f};
    for (size_t si = 0; si < sizeof scales / sizeof *scales; si++)
      for (int u = 0; u < 2; u++) {
        int32_t lo = u ? 0 : -128, hi = u ? 255 : 127, zp = u ? 128 : -5;
        kiln_quantize_row_ref(x, N, scales[si], zp, lo, hi, a);
        f(x, N, scales[si], zp, lo, hi, b);
        assert_memory_equal(a, b, N);
      }
    /* the multiply-by-reciprocal fast path: values on, just above and just below the
     * rounding ties (k + 1/2) * scale, for scales of every kind (calibrated ones are not
     * powers of two) and the extremes where it must divide */
    for (int si = 0; si < 300; si++) {
      float sc = si == 0 ? 1e-35f : si == 1 ? 1e35f : si == 2 ? 1e-30f
               : (float)(1 + rnd(&seed) % 100000) * powf(10.0f, (float)((int)(rnd(&seed) % 9) - 7));
      for (int i = 0; i < N; i++) {
        float t = (float)((int)(rnd(&seed) % 1200) - 600) + 0.5f;
        float v = t * sc;
        uint32_t r = rnd(&seed) % 4;
        x[i] = r == 0 ? v : r == 1 ? nextafterf(v, INFINITY) : r == 2 ? nextafterf(v, -INFINITY)
             : ((float)(rnd(&seed) % 2000001) - 1000000.0f) * 1e-3f * sc;
      }
      for (int u = 0; u < 2; u++) {
        int32_t lo = u ? 0 : -128, hi = u ? 255 : 127, zp = u ? (int32_t)(rnd(&seed) % 256) : -3;
        kiln_quantize_row_ref(x, N, sc, zp, lo, hi, a);
        f(x, N, sc, zp, lo, hi, b);
        if (memcmp(a, b, N) != 0) fail_msg("quantize row differs at scale %g", (double)sc);
      }
    }
    printf("quantize row %s: the same bytes as the definition\n", fi ? "avx512" : "avx2");
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_requant),     cmocka_unit_test(test_ref),
      cmocka_unit_test(test_avx2),        cmocka_unit_test(test_vnni),
      cmocka_unit_test(test_neon),        cmocka_unit_test(test_dotprod),
      cmocka_unit_test(test_auto_is_available), cmocka_unit_test(test_quantize_rows),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

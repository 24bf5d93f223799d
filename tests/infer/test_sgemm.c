/* Every SGEMM path the CPU has against the naive reference: odd sizes, transposes,
 * alpha/beta, bias and fused activations, GEMV, and split ranges (threads). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sgemm.h"

static float frand(uint32_t *s) {
  *s = *s * 1664525u + 1013904223u;
  return (float)((*s >> 8) & 0xffff) / 32768.0f - 1.0f;
}

static void *amalloc(size_t floats) {
  void *p = NULL;
  if (posix_memalign(&p, 64, (floats ? floats : 1) * sizeof(float))) return NULL;
  return p;
}

/* Runs one case on kernel k and compares with the naive reference. */
static void check_case(const kiln_sgemm_kernel *k, int64_t M, int64_t N, int64_t K, int ta,
                       int tb, float alpha, float beta, int use_bias, kiln_act act, int split) {
  uint32_t seed = (uint32_t)(M * 131 + N * 17 + K * 7 + ta * 3 + tb);
  float *a = malloc((size_t)(M * K + 1) * sizeof(float));
  float *b = malloc((size_t)(K * N + 1) * sizeof(float));
  float *bias = malloc((size_t)(N + 1) * sizeof(float));
  float *c = malloc((size_t)(M * N + 1) * sizeof(float));
  float *ref = malloc((size_t)(M * N + 1) * sizeof(float));
  float *bp = amalloc(kiln_sgemm_packed_b_floats(k, K, N));
  float *ws = malloc(kiln_sgemm_workspace_floats(k, K) * sizeof(float));
  assert_non_null(a); assert_non_null(b); assert_non_null(c); assert_non_null(ref);
  assert_non_null(bp); assert_non_null(ws); assert_non_null(bias);
  for (int64_t i = 0; i < M * K; i++) a[i] = frand(&seed);
  for (int64_t i = 0; i < K * N; i++) b[i] = frand(&seed);
  for (int64_t i = 0; i < N; i++) bias[i] = frand(&seed);
  for (int64_t i = 0; i < M * N; i++) ref[i] = c[i] = frand(&seed);
  /* A is M x K (ta=0) or stored K x M; B is K x N (tb=0) or stored N x K. */
  int64_t rsa = ta ? 1 : K, csa = ta ? M : 1, rsb = tb ? 1 : N, csb = tb ? K : 1;
  kiln_sgemm_naive(M, N, K, alpha, a, rsa, csa, b, rsb, csb, beta, ref, N);
  if (use_bias)
    for (int64_t i = 0; i < M; i++)
      for (int64_t j = 0; j < N; j++) ref[i * N + j] += bias[j];
  for (int64_t i = 0; i < M; i++) kiln_act_apply(act, 0.1f, ref + i * N, N);
  kiln_sgemm_pack_b(k, K, N, b, rsb, csb, bp);
  kiln_gemm_args g = {M, N, K, a, rsa, csa, bp, c, N, alpha, beta, use_bias ? bias : NULL,
                      act, 0.1f};
  int64_t P = kiln_sgemm_panels(k, N);
  if (split && M > 1) {
    kiln_sgemm_run(k, &g, 0, M / 2, 0, P, ws);
    kiln_sgemm_run(k, &g, M / 2, M, 0, P, ws);
  } else if (split) {
    kiln_sgemm_run(k, &g, 0, M, 0, P / 2, ws);
    kiln_sgemm_run(k, &g, 0, M, P / 2, P, ws);
  } else {
    kiln_sgemm_run(k, &g, 0, M, 0, P, ws);
  }
  for (int64_t i = 0; i < M; i++)
    for (int64_t j = 0; j < N; j++) {
      double mag = fabs((double)beta * 1.0) + 1.0;
      for (int64_t kk = 0; kk < K; kk++)
        mag += fabs(alpha * a[i * rsa + kk * csa] * b[kk * rsb + j * csb]);
      double d = fabs((double)c[i * N + j] - ref[i * N + j]);
      if (d > 1e-5 * mag) {
        fail_msg("%s M=%lld N=%lld K=%lld ta=%d tb=%d alpha=%g beta=%g: C[%lld,%lld]=%g, want %g",
                 k->name, (long long)M, (long long)N, (long long)K, ta, tb, alpha, beta,
                 (long long)i, (long long)j, c[i * N + j], ref[i * N + j]);
      }
    }
  free(a); free(b); free(c); free(ref); free(bp); free(ws); free(bias);
}

static void run_path(const kiln_sgemm_kernel *k) {
  static const int64_t sizes[] = {1, 2, 3, 5, 6, 7, 8, 11, 12, 13, 16, 17, 31, 32, 33, 47, 64, 67};
  int ns = (int)(sizeof sizes / sizeof sizes[0]);
  for (int mi = 0; mi < ns; mi++)
    for (int ni = 0; ni < ns; ni += 2)
      for (int ki = 0; ki < ns; ki += 3)
        check_case(k, sizes[mi], sizes[ni], sizes[ki], (mi + ki) & 1, (ni / 2) & 1, 1.0f, 0.0f, 0,
                   KILN_ACT_NONE, 0);
  for (int ta = 0; ta < 2; ta++)
    for (int tb = 0; tb < 2; tb++) {
      check_case(k, 37, 29, 67, ta, tb, 0.5f, 2.0f, 0, KILN_ACT_NONE, 0);
      check_case(k, 1, 45, 19, ta, tb, -1.5f, 0.25f, 1, KILN_ACT_RELU, 0);
      check_case(k, 64, 67, 300, ta, tb, 1.0f, 1.0f, 1, KILN_ACT_SIGMOID, 1); /* K > kc */
    }
  check_case(k, 200, 130, 600, 0, 0, 1.0f, 0.0f, 1, KILN_ACT_TANH, 1);        /* M > mc */
  check_case(k, 1, 100, 784, 0, 0, 1.0f, 0.0f, 1, KILN_ACT_LEAKY_RELU, 1);   /* GEMV split */
  check_case(k, 9, 10, 0, 0, 0, 1.0f, 0.5f, 1, KILN_ACT_NONE, 0);            /* K = 0 */
  check_case(k, 14, 35, 2100, 0, 1, 1.0f, 0.5f, 1, KILN_ACT_RELU, 0);       /* K > kc: 3 blocks */
  check_case(k, 1, 33, 1500, 1, 0, 2.0f, 0.0f, 0, KILN_ACT_NONE, 0);       /* GEMV, long K */
}

static void test_ref(void **state) { (void)state; run_path(kiln_sgemm_kernel_ref()); }

static void test_path(void **state, kiln_kernel_path path, const char *name) {
  (void)state;
  kiln_cpu cpu;
  kiln_cpu_detect(&cpu);
  kiln_error err = {0};
  const kiln_sgemm_kernel *k = kiln_sgemm_select(&cpu, path, &err);
  if (!k) {
    printf("skipping the %s path: %s\n", name, err.message);
    skip();
  }
  run_path(k);
}

static void test_avx2(void **s) { test_path(s, KILN_KERNEL_AVX2, "avx2"); }
static void test_avx512(void **s) { test_path(s, KILN_KERNEL_AVX512, "avx512"); }
static void test_neon(void **s) { test_path(s, KILN_KERNEL_NEON, "neon"); }
static void test_auto(void **s) { test_path(s, KILN_KERNEL_AUTO, "auto"); }

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_ref),  cmocka_unit_test(test_avx2), cmocka_unit_test(test_avx512),
      cmocka_unit_test(test_neon), cmocka_unit_test(test_auto),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

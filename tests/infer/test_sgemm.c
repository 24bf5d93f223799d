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

/* The sparse-row and N = 1 helpers against their plain C references, and the fused
 * bias + ReLU store against the unfused epilogue. */
static void check_helpers(const kiln_sgemm_kernel *k) {
  uint32_t seed = 12345;
  /* gather: odd counts, repeats allowed, every column count up to nr */
  int64_t K = 1000;
  float *panel = amalloc((size_t)K * (size_t)k->nr);
  assert_non_null(panel);
  for (int64_t i = 0; i < K * k->nr; i++) panel[i] = frand(&seed);
  static const int64_t counts[] = {0, 1, 2, 3, 4, 5, 7, 9, 12, 13, 17, 31, 140, 999};
  int32_t idx[1000];
  float val[1000], got[KILN_SGEMM_MAX_NR], want[KILN_SGEMM_MAX_NR];
  for (int ci = 0; ci < (int)(sizeof counts / sizeof counts[0]); ci++)
    for (int ncols = 1; ncols <= k->nr; ncols += (ncols < 9 || ncols >= k->nr - 1) ? 1 : 7)
      for (int use_val = 0; use_val < 2; use_val++) {
        int64_t nnz = counts[ci];
        for (int64_t t = 0; t < nnz; t++) {
          idx[t] = (int32_t)((seed = seed * 1664525u + 1013904223u) >> 8) % (int32_t)K;
          val[t] = frand(&seed);
        }
        kiln_gather_ref(panel, k->nr, idx, use_val ? val : NULL, nnz, ncols, want);
        k->gather(panel, k->nr, idx, use_val ? val : NULL, nnz, ncols, got);
        for (int j = 0; j < ncols; j++)
          if (fabsf(got[j] - want[j]) > 1e-5f * (1.0f + (float)nnz))
            fail_msg("%s gather nnz=%lld ncols=%d val=%d: acc[%d]=%g, want %g", k->name,
                     (long long)nnz, ncols, use_val, j, got[j], want[j]);
      }
  free(panel);

  /* nzscan: odd lengths, runs of zeros, NaN, -0.0 (a zero), values at block edges */
  static const int64_t lens[] = {0, 1, 15, 16, 17, 31, 32, 33, 63, 64, 65, 129, 1000};
  float x[1000];
  int32_t i1[1000], i2[1000];
  float v1[1000], v2[1000];
  for (int li = 0; li < (int)(sizeof lens / sizeof lens[0]); li++)
    for (int density = 0; density < 3; density++) {
      int64_t n = lens[li];
      for (int64_t i = 0; i < n; i++) {
        float r = frand(&seed);
        x[i] = density == 0 ? (r > 0.97f ? r : 0.0f) : density == 1 ? (r > 0.5f ? 1.0f : -0.0f) : r;
      }
      if (n > 5) x[n - 1] = NAN, x[n / 2] = 2.0f, x[0] = -0.0f;
      int64_t c1 = kiln_nzscan_ref(x, n, i1, v1), c2 = k->nzscan(x, n, i2, v2);
      assert_int_equal(c1, c2);
      for (int64_t i = 0; i < c1; i++) {
        assert_int_equal(i1[i], i2[i]);
        assert_memory_equal(&v1[i], &v2[i], sizeof(float));
      }
    }

  /* rowdot: odd M, K and a row stride wider than K */
  static const int64_t dims[] = {1, 3, 4, 5, 8, 15, 16, 17, 33, 64, 67};
  int nd = (int)(sizeof dims / sizeof dims[0]);
  float *a = malloc(67 * 70 * sizeof(float)), w[70], o1[67], o2[67];
  assert_non_null(a);
  for (int i = 0; i < 67 * 70; i++) a[i] = frand(&seed);
  for (int i = 0; i < 70; i++) w[i] = frand(&seed);
  for (int mi = 0; mi < nd; mi++)
    for (int ki = 0; ki < nd; ki++) {
      int64_t M = dims[mi], KK = dims[ki];
      kiln_rowdot_ref(M, KK, a, 70, w, o1);
      k->rowdot(M, KK, a, 70, w, o2);
      for (int64_t i = 0; i < M; i++)
        if (fabsf(o1[i] - o2[i]) > 1e-5f * (1.0f + (float)KK))
          fail_msg("%s rowdot M=%lld K=%lld: out[%lld]=%g, want %g", k->name, (long long)M,
                   (long long)KK, (long long)i, o2[i], o1[i]);
    }
  free(a);
}

/* kiln_sgemm_run with ReLU fused (into the micro-kernel's store where it can) equals
 * the same product without it followed by the activation. */
static void check_fused_relu(const kiln_sgemm_kernel *k, int64_t M, int64_t N, int64_t K,
                             float beta) {
  uint32_t seed = (uint32_t)(M * 7 + N * 3 + K);
  float *a = malloc((size_t)(M * K + 1) * sizeof(float));
  float *b = malloc((size_t)(K * N + 1) * sizeof(float));
  float *bias = malloc((size_t)N * sizeof(float));
  float *c1 = malloc((size_t)(M * N) * sizeof(float)), *c2 = malloc((size_t)(M * N) * sizeof(float));
  float *bp = amalloc(kiln_sgemm_packed_b_floats(k, K, N));
  float *ws = malloc(kiln_sgemm_workspace_floats(k, K) * sizeof(float));
  assert_non_null(a); assert_non_null(b); assert_non_null(bias); assert_non_null(c1);
  assert_non_null(c2); assert_non_null(bp); assert_non_null(ws);
  for (int64_t i = 0; i < M * K; i++) a[i] = frand(&seed);
  for (int64_t i = 0; i < K * N; i++) b[i] = frand(&seed);
  for (int64_t i = 0; i < N; i++) bias[i] = frand(&seed);
  for (int64_t i = 0; i < M * N; i++) c1[i] = c2[i] = frand(&seed);
  kiln_sgemm_pack_b(k, K, N, b, N, 1, bp);
  kiln_gemm_args g = {M, N, K, a, K, 1, bp, c1, N, 1.0f, beta, bias, KILN_ACT_RELU, 0.0f};
  kiln_sgemm_run(k, &g, 0, M, 0, kiln_sgemm_panels(k, N), ws);
  g.c = c2;
  g.act = KILN_ACT_NONE;
  kiln_sgemm_run(k, &g, 0, M, 0, kiln_sgemm_panels(k, N), ws);
  for (int64_t i = 0; i < M; i++) kiln_act_apply(KILN_ACT_RELU, 0.0f, c2 + i * N, N);
  for (int64_t i = 0; i < M * N; i++)
    if (c1[i] != c2[i])
      fail_msg("%s fused ReLU M=%lld N=%lld K=%lld beta=%g: C[%lld]=%g, unfused %g", k->name,
               (long long)M, (long long)N, (long long)K, beta, (long long)i, c1[i], c2[i]);
  free(a); free(b); free(bias); free(c1); free(c2); free(bp); free(ws);
}

static void run_extra(const kiln_sgemm_kernel *k) {
  check_helpers(k);
  static const int64_t ms[] = {2, 12, 25, 37}, ns[] = {1, 5, 16, 17, 32, 64, 65}, ks[] = {1, 8, 16, 64, 130, 1100};
  for (int mi = 0; mi < 4; mi++)
    for (int ni = 0; ni < 7; ni++)
      for (int ki = 0; ki < 6; ki++) {
        check_fused_relu(k, ms[mi], ns[ni], ks[ki], 0.0f);
        check_fused_relu(k, ms[mi], ns[ni], ks[ki], 1.0f);
      }
  /* the in-place path: small N with long K (several K blocks), N = 1 row dots with
   * every activation, alpha and beta */
  check_case(k, 29, 16, 2500, 0, 0, 1.0f, 0.0f, 1, KILN_ACT_RELU, 0);
  check_case(k, 29, 16, 2500, 0, 1, 1.0f, 1.0f, 1, KILN_ACT_NONE, 1);
  check_case(k, 50, 1, 64, 0, 0, 1.0f, 0.0f, 1, KILN_ACT_SIGMOID, 1);
  check_case(k, 1030, 1, 16, 0, 1, 0.5f, 2.0f, 1, KILN_ACT_TANH, 0);
  check_case(k, 13, 1, 3, 1, 0, 1.0f, 0.0f, 0, KILN_ACT_LEAKY_RELU, 0);
  check_case(k, 26, 64, 8, 0, 0, 1.0f, 0.0f, 1, KILN_ACT_RELU, 1);
  check_case(k, 26, 40, 64, 0, 0, -2.0f, 0.0f, 1, KILN_ACT_RELU, 0);
}

static void test_ref(void **state) {
  (void)state;
  run_path(kiln_sgemm_kernel_ref());
  run_extra(kiln_sgemm_kernel_ref());
}

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
  run_extra(k);
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

/* Cross-architecture bit-exactness of the int8 path: a 3-layer QDQ MLP (built with the
 * ir.h builder from a seeded LCG and exactly representable scales, so every machine
 * builds the same bits; Gemm + int32 bias + ReLU into uint8, MatMul + Add float bias +
 * ReLU into int8, Gemm transB=1 without bias) runs on every kernel path this CPU has,
 * and its int8 output must equal the golden output written on x86-64 byte for byte.
 *
 * Golden file: tests/infer/golden/qdq_mlp_96_48_24_10_int8.bin, the raw int8 [64, 10]
 * output of the reference path (KILN_KERNEL_REF). Regenerate (only after a deliberate
 * change to the model or the int8 definition) on x86-64 with
 *   KILN_WRITE_GOLDEN=1 ./build/tests/infer_test_qgolden
 * The directory is $KILN_GOLDEN_DIR, else $KILN_SOURCE_DIR/tests/infer/golden. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kiln/infer.h"
#include "session_internal.h"

#define OK(call)                                                      \
  do {                                                                \
    kiln_error e_ = {0};                                              \
    kiln_status s_ = (call);                                          \
    if (s_ != KILN_OK) fail_msg("%s failed: %s", #call, e_.message); \
  } while (0)
#define E (&e_)

#define BATCH 64
#define NAME "qdq_mlp_96_48_24_10_int8"

static uint32_t lcg(uint32_t *s) {
  *s = *s * 1664525u + 1013904223u;
  return *s >> 8;
}

static void nd(kiln_ir_graph *g, const char *op, const char *name, const char *a, const char *b,
               const char *c, const char *out, int64_t trans_b, int64_t axis) {
  const char *ins[3] = {a, b, c};
  int n = c ? 3 : b ? 2 : 1;
  kiln_ir_node *x;
  OK(kiln_ir_add_node(g, op, name, ins, n, &out, 1, &x, E));
  if (trans_b) OK(kiln_ir_node_set_int(x, "transB", trans_b, E));
  if (axis >= 0) OK(kiln_ir_node_set_int(x, "axis", axis, E));
}

static void f32(kiln_ir_graph *g, const char *name, float v) {
  OK(kiln_ir_add_initializer(g, name, KILN_DTYPE_FLOAT, NULL, 0, &v, E));
}
static void zp8(kiln_ir_graph *g, const char *name, kiln_dtype dt, int v) {
  uint8_t b = (uint8_t)v;
  OK(kiln_ir_add_initializer(g, name, dt, NULL, 0, &b, E));
}

/* W [K, N] int8 (stored [N, K] when trans), per-channel scales k/65536 (exact). */
static void weights(kiln_ir_graph *g, const char *w, const char *s, int64_t K, int64_t N,
                    int trans, uint32_t *seed) {
  int8_t *q = malloc((size_t)(K * N));
  float *sc = malloc((size_t)N * sizeof(float));
  for (int64_t i = 0; i < K * N; i++) q[i] = (int8_t)((int)(lcg(seed) % 256) - 128);
  for (int64_t n = 0; n < N; n++) sc[n] = (float)(100 + lcg(seed) % 200) / 65536.0f;
  int64_t d[2] = {trans ? N : K, trans ? K : N};
  OK(kiln_ir_add_initializer(g, w, KILN_DTYPE_INT8, d, 2, q, E));
  OK(kiln_ir_add_initializer(g, s, KILN_DTYPE_FLOAT, &N, 1, sc, E));
  free(q);
  free(sc);
}

static kiln_ir_graph *build(void) {
  uint32_t seed = 2026;
  kiln_ir_graph *g = NULL;
  OK(kiln_ir_create(NAME, &g, E));
  OK(kiln_ir_set_opset(g, "", 13, E));
  int64_t in[2] = {-1, 96};
  const char *params[2] = {"batch", NULL};
  OK(kiln_ir_add_input(g, "x", KILN_DTYPE_FLOAT, in, params, 2, E));
  f32(g, "s0", 0.0078125f);
  zp8(g, "z0", KILN_DTYPE_INT8, -3);
  f32(g, "s1", 0.03125f);
  zp8(g, "z1", KILN_DTYPE_UINT8, 7);
  f32(g, "s2", 0.0625f);
  zp8(g, "z2", KILN_DTYPE_INT8, 0);
  f32(g, "s3", 0.046875f);
  zp8(g, "z3", KILN_DTYPE_INT8, 2);
  nd(g, "QuantizeLinear", "q0", "x", "s0", "z0", "x0", 0, -1);
  /* layer 1: Gemm 96 -> 48, int32 bias, ReLU, uint8 out */
  nd(g, "DequantizeLinear", "dq0", "x0", "s0", "z0", "x0f", 0, -1);
  weights(g, "W1", "W1s", 96, 48, 0, &seed);
  nd(g, "DequantizeLinear", "dqw1", "W1", "W1s", NULL, "W1f", 0, 1);
  int32_t b1[48];
  float b1s[48];
  const float *w1s = NULL;
  for (int i = 0; i < g->n_initializers; i++)
    if (strcmp(g->initializers[i].name, "W1s") == 0) w1s = g->initializers[i].data;
  for (int n = 0; n < 48; n++) {
    b1[n] = (int32_t)(lcg(&seed) % 20001) - 10000;
    b1s[n] = 0.0078125f * w1s[n]; /* exact: a power of two times w1s */
  }
  int64_t n48 = 48;
  OK(kiln_ir_add_initializer(g, "B1", KILN_DTYPE_INT32, &n48, 1, b1, E));
  OK(kiln_ir_add_initializer(g, "B1s", KILN_DTYPE_FLOAT, &n48, 1, b1s, E));
  nd(g, "DequantizeLinear", "dqb1", "B1", "B1s", NULL, "B1f", 0, 0);
  nd(g, "Gemm", "fc1", "x0f", "W1f", "B1f", "h1", 0, -1);
  nd(g, "Relu", "relu1", "h1", NULL, NULL, "r1", 0, -1);
  nd(g, "QuantizeLinear", "q1", "r1", "s1", "z1", "x1", 0, -1);
  /* layer 2: MatMul + Add 48 -> 24, float bias, ReLU, int8 out */
  nd(g, "DequantizeLinear", "dq1", "x1", "s1", "z1", "x1f", 0, -1);
  weights(g, "W2", "W2s", 48, 24, 0, &seed);
  nd(g, "DequantizeLinear", "dqw2", "W2", "W2s", NULL, "W2f", 0, 1);
  float b2[24];
  for (int n = 0; n < 24; n++) b2[n] = (float)((int)(lcg(&seed) % 257) - 128) / 64.0f;
  int64_t n24 = 24;
  OK(kiln_ir_add_initializer(g, "B2", KILN_DTYPE_FLOAT, &n24, 1, b2, E));
  nd(g, "MatMul", "mm2", "x1f", "W2f", NULL, "m2", 0, -1);
  nd(g, "Add", "add2", "m2", "B2", NULL, "h2", 0, -1);
  nd(g, "Relu", "relu2", "h2", NULL, NULL, "r2", 0, -1);
  nd(g, "QuantizeLinear", "q2", "r2", "s2", "z2", "x2", 0, -1);
  /* layer 3: Gemm transB 24 -> 10, no bias */
  nd(g, "DequantizeLinear", "dq2", "x2", "s2", "z2", "x2f", 0, -1);
  weights(g, "W3", "W3s", 24, 10, 1, &seed);
  nd(g, "DequantizeLinear", "dqw3", "W3", "W3s", NULL, "W3f", 0, 0);
  nd(g, "Gemm", "fc3", "x2f", "W3f", NULL, "h3", 1, -1);
  nd(g, "QuantizeLinear", "q3", "h3", "s3", "z3", "y_q", 0, -1);
  OK(kiln_ir_add_output(g, "y_q", KILN_DTYPE_INT8, NULL, NULL, -1, E));
  return g;
}

static void test_golden_int8(void **st) {
  (void)st;
  char path[1024];
  const char *dir = getenv("KILN_GOLDEN_DIR"), *src = getenv("KILN_SOURCE_DIR");
  if (dir && *dir) snprintf(path, sizeof path, "%s/%s.bin", dir, NAME);
  else if (src && *src) snprintf(path, sizeof path, "%s/tests/infer/golden/%s.bin", src, NAME);
  else {
    print_message("golden: neither KILN_GOLDEN_DIR nor KILN_SOURCE_DIR is set; skipped\n");
    skip();
  }
  kiln_ir_graph *g = build();
  float x[BATCH * 96];
  uint32_t seed = 7;
  for (int i = 0; i < BATCH * 96; i++) x[i] = (float)((int)(lcg(&seed) % 301) - 150) / 128.0f;
  int8_t golden[BATCH * 10];
  int writing = getenv("KILN_WRITE_GOLDEN") && *getenv("KILN_WRITE_GOLDEN") == '1';
  if (!writing) {
    FILE *f = fopen(path, "rb");
    if (!f) fail_msg("golden file %s is missing (write it on x86-64 with KILN_WRITE_GOLDEN=1)", path);
    size_t got = fread(golden, 1, sizeof golden, f);
    fclose(f);
    assert_int_equal(got, sizeof golden);
  }
  static const kiln_kernel_path paths[] = {KILN_KERNEL_REF,  KILN_KERNEL_AVX2, KILN_KERNEL_AVX512,
                                           KILN_KERNEL_VNNI, KILN_KERNEL_NEON, KILN_KERNEL_DOTPROD,
                                           KILN_KERNEL_AUTO};
  int ran = 0;
  for (size_t p = 0; p < sizeof paths / sizeof *paths; p++) {
    kiln_session_options o;
    kiln_session_options_init(&o);
    o.max_batch = BATCH;
    o.kernel = paths[p];
    kiln_session *s = NULL;
    kiln_error e = {0};
    if (kiln_session_create(g, &o, &s, &e)) {
      assert_int_equal(e.status, KILN_E_UNSUPPORTED);
      continue;
    }
    int qgemms = 0;
    for (int i = 0; i < s->n_steps; i++) qgemms += s->steps[i].op == KILN_OP_QGEMM;
    assert_int_equal(qgemms, 3); /* every layer runs fused */
    for (int b = 0; b < 2; b++) { /* batch 64, then row 5 alone */
      int64_t rows = b ? 1 : BATCH, r0 = b ? 5 : 0;
      kiln_tensor_view in, out;
      memset(&in, 0, sizeof in);
      in.dtype = KILN_DTYPE_FLOAT;
      in.rank = 2;
      in.dims[0] = rows;
      in.dims[1] = 96;
      in.data = x + r0 * 96;
      if (kiln_session_run(s, &in, 1, &out, 1, &e)) fail_msg("run: %s", e.message);
      assert_int_equal(out.dtype, KILN_DTYPE_INT8);
      if (writing && p == 0 && b == 0) {
        memcpy(golden, out.data, sizeof golden);
        char tmp[1100];
        snprintf(tmp, sizeof tmp, "%s.tmp", path);
        FILE *f = fopen(tmp, "wb");
        assert_non_null(f);
        assert_int_equal(fwrite(golden, 1, sizeof golden, f), sizeof golden);
        assert_int_equal(fclose(f), 0);
        assert_int_equal(rename(tmp, path), 0);
        print_message("golden: wrote %s\n", path);
      }
      if (memcmp(out.data, golden + r0 * 10, (size_t)(rows * 10)) != 0)
        fail_msg("kernel path %d: int8 output differs from the golden %s (batch %lld)",
                 (int)paths[p], path, (long long)rows);
    }
    ran++;
    kiln_session_free(s);
  }
  print_message("int8 golden: %d kernel paths reproduce %s exactly\n", ran, NAME);
  /* a non-trivial output: not all one value */
  int distinct = 0;
  for (int i = 1; i < BATCH * 10; i++) distinct += golden[i] != golden[0];
  assert_true(distinct > BATCH);
  kiln_ir_free(g);
}

int main(void) {
  const struct CMUnitTest tests[] = {cmocka_unit_test(test_golden_int8)};
  return cmocka_run_group_tests(tests, NULL, NULL);
}

/* kiln quantize: calibration ranges per method, the QDQ graph (per-channel scales,
 * int32 biases), the report, bad calibration data, ops kept float, and agreement
 * with the float model in ONNX Runtime plus onnx.checker for QDQ, QOperator and
 * dynamic files. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "test_quantize_common.h"

/* y = x * 1 + 0 over one feature: the Gemm's input and output are the data itself. */
static kiln_ir_graph *identity_graph(void) {
  kiln_error err = {0};
  kiln_ir_graph *g = NULL;
  CHECK_E(kiln_ir_create("ident", &g, &err), &err);
  CHECK_E(kiln_ir_set_opset(g, "", 13, &err), &err);
  int64_t d[2] = {-1, 1};
  const char *p[2] = {"batch", NULL};
  CHECK_E(kiln_ir_add_input(g, "x", KILN_DTYPE_FLOAT, d, p, 2, &err), &err);
  CHECK_E(kiln_ir_add_output(g, "y", KILN_DTYPE_FLOAT, d, p, 2, &err), &err);
  float w = 1, b = 0;
  int64_t wd[2] = {1, 1}, bd[1] = {1};
  CHECK_E(kiln_ir_add_initializer(g, "W", KILN_DTYPE_FLOAT, wd, 2, &w, &err), &err);
  CHECK_E(kiln_ir_add_initializer(g, "B", KILN_DTYPE_FLOAT, bd, 1, &b, &err), &err);
  const char *in[3] = {"x", "W", "B"}, *out[1] = {"y"};
  CHECK_E(kiln_ir_add_node(g, "Gemm", "gemm", in, 3, out, 1, NULL, &err), &err);
  return g;
}

static void test_calibration_methods(void **state) {
  (void)state;
  kiln_ir_graph *g = identity_graph();
  kiln_matrix x = {0};
  kiln_error err = {0};
  CHECK_E(kiln_matrix_alloc(&x, 10001, 1, &err), &err);
  for (int64_t i = 0; i < 10000; i++) x.values[i] = (float)(i % 1000) - 200.0f; /* [-200, 799] */
  x.values[10000] = 100000.0f; /* one outlier */
  kiln_calibrate_options o;
  kiln_calibrate_options_init(&o);
  o.max_rows = 0;
  o.method = KILN_RANGE_MINMAX;
  kiln_calibration c = {0};
  CHECK_E(kiln_calibrate(g, &x, &o, &c, &err), &err);
  assert_int_equal(c.rows, 10001);
  const kiln_tensor_range *r = kiln_calibration_find(&c, "x");
  assert_non_null(r);
  assert_true(r->lo == -200.0 && r->hi == 100000.0);
  assert_int_equal(r->count, 10001);
  assert_non_null(kiln_calibration_find(&c, "y"));
  assert_non_null(kiln_calibration_find(&c, "matmul:gemm"));
  /* percentile 99.9 cuts the outlier (1 of 10001) on top and 10 values at the bottom */
  CHECK_E(kiln_calibration_set_method(&c, KILN_RANGE_PERCENTILE, 99.9, &err), &err);
  r = kiln_calibration_find(&c, "x");
  print_message("percentile 99.9: [%g, %g]\n", r->lo, r->hi);
  assert_true(r->hi > 700 && r->hi < 900);
  assert_true(r->lo >= -200 && r->lo < -150);
  /* mse clips the outlier: the range shrinks far below 100000 */
  CHECK_E(kiln_calibration_set_method(&c, KILN_RANGE_MSE, 0, &err), &err);
  r = kiln_calibration_find(&c, "x");
  print_message("mse: [%g, %g]\n", r->lo, r->hi);
  /* int8 error of clipping one far outlier outweighs rounding: mse keeps most of it */
  assert_true(r->hi <= 100000 && r->hi > 799);
  assert_true(r->lo <= -150);
  /* without the outlier, mse keeps (nearly) the whole uniform range */
  kiln_calibration_free(&c);
  x.rows = 10000;
  o.method = KILN_RANGE_MSE;
  CHECK_E(kiln_calibrate(g, &x, &o, &c, &err), &err);
  r = kiln_calibration_find(&c, "x");
  print_message("mse (uniform): [%g, %g]\n", r->lo, r->hi);
  assert_true(r->hi >= 0.95 * 799 && r->hi <= 799.0001);
  x.rows = 10001;
  /* a bad percentile */
  assert_int_equal(kiln_calibration_set_method(&c, KILN_RANGE_PERCENTILE, 30, &err), KILN_E_RANGE);
  float s;
  int8_t zp;
  kiln_qparams_int8(0.0, 255.0, &s, &zp);
  assert_true(fabsf(s - 1.0f) < 1e-6f && zp == -128);
  kiln_qparams_int8(-1.0, 1.0, &s, &zp);
  assert_true(zp == 0 || zp == -1);
  kiln_calibration_free(&c);
  kiln_matrix_free(&x);
  kiln_ir_free(g);
}

static void test_bad_calibration_data(void **state) {
  (void)state;
  kiln_ir_graph *g = identity_graph();
  kiln_matrix x = {0};
  kiln_error err = {0};
  kiln_calibration c = {0};
  CHECK_E(kiln_matrix_alloc(&x, 5, 2, &err), &err);
  assert_int_equal(kiln_calibrate(g, &x, NULL, &c, &err), KILN_E_SHAPE);
  assert_non_null(strstr(err.message, "2 columns"));
  assert_non_null(strstr(err.message, "expects 1"));
  kiln_matrix_free(&x);
  CHECK_E(kiln_matrix_alloc(&x, 5, 1, &err), &err);
  x.values[3] = NAN;
  assert_int_equal(kiln_calibrate(g, &x, NULL, &c, &err), KILN_E_RANGE);
  assert_non_null(strstr(err.message, "row 3, column 0 is NaN"));
  x.values[3] = INFINITY;
  assert_int_equal(kiln_calibrate(g, &x, NULL, &c, &err), KILN_E_RANGE);
  assert_non_null(strstr(err.message, "infinite"));
  kiln_matrix empty = {.rows = 0, .cols = 1};
  assert_int_equal(kiln_calibrate(g, &empty, NULL, &c, &err), KILN_E_INVALID);
  assert_non_null(strstr(err.message, "empty"));
  assert_int_equal(c.n, 0);
  kiln_matrix_free(&x);
  kiln_ir_free(g);
}

typedef struct fixture {
  kiln_matrix x, y;
  kiln_ir_graph *g;
  kiln_calibration cal;
} fixture;

static int setup(void **state) {
  fixture *f = calloc(1, sizeof *f);
  q_blobs(3000, 512, 5, 3, &f->x, &f->y);
  f->g = q_trained_graph(512, 128, 64, 5, 3, &f->x, &f->y, NULL);
  kiln_error err = {0};
  CHECK_E(kiln_calibrate(f->g, &f->x, NULL, &f->cal, &err), &err);
  *state = f;
  return 0;
}

static int teardown(void **state) {
  fixture *f = *state;
  kiln_matrix_free(&f->x);
  kiln_matrix_free(&f->y);
  kiln_ir_free(f->g);
  kiln_calibration_free(&f->cal);
  free(f);
  return 0;
}

static const kiln_ir_node *find_node(const kiln_ir_graph *g, const char *op, int which) {
  for (int i = 0; i < g->n_nodes; i++)
    if (strcmp(g->nodes[i].op_type, op) == 0 && which-- == 0) return &g->nodes[i];
  return NULL;
}

static void test_qdq_structure(void **state) {
  fixture *f = *state;
  kiln_error err = {0};
  kiln_ir_graph *q = NULL;
  kiln_quant_report rep;
  CHECK_E(kiln_quantize(f->g, &f->cal, NULL, &q, &rep, &err), &err);
  assert_int_equal(f->cal.rows, 500); /* the default: the first 500 rows */
  assert_true(kiln_ir_opset_version(q, "") >= 13);
  assert_int_equal(q_count_op(q, "Gemm"), 3);
  assert_int_equal(q_count_op(q, "QuantizeLinear"), 3);
  assert_int_equal(q_count_op(q, "DequantizeLinear"), 9); /* 3 activations, 3 weights, 3 biases */
  assert_int_equal(q_count_op(q, "Softmax"), 1);
  for (int l = 0; l < 3; l++) {
    const kiln_ir_node *gf = find_node(f->g, "Gemm", l), *gq = NULL;
    for (int i = 0; i < q->n_nodes; i++)
      if (strcmp(q->nodes[i].name, gf->name) == 0) gq = &q->nodes[i];
    assert_non_null(gq);
    const kiln_ir_tensor *w = kiln_ir_find_initializer(f->g, gf->inputs[1]);
    const kiln_ir_tensor *b = kiln_ir_find_initializer(f->g, gf->inputs[2]);
    char name[300];
    snprintf(name, sizeof name, "%s_quantized", w->name);
    const kiln_ir_tensor *wq = kiln_ir_find_initializer(q, name);
    snprintf(name, sizeof name, "%s_scale", w->name);
    const kiln_ir_tensor *ws = kiln_ir_find_initializer(q, name);
    snprintf(name, sizeof name, "%s_quantized", b->name);
    const kiln_ir_tensor *bq = kiln_ir_find_initializer(q, name);
    snprintf(name, sizeof name, "%s_scale", gf->inputs[0]);
    const kiln_ir_tensor *xs = kiln_ir_find_initializer(q, name);
    assert_non_null(wq);
    assert_non_null(ws);
    assert_non_null(bq);
    assert_non_null(xs);
    assert_int_equal(wq->dtype, KILN_DTYPE_INT8);
    assert_int_equal(bq->dtype, KILN_DTYPE_INT32);
    assert_null(kiln_ir_find_initializer(q, w->name)); /* no float copy left */
    int64_t K = w->dims[0], N = w->dims[1];
    const float *wv = w->data, *sc = ws->data, *bv = b->data;
    const int8_t *qv = wq->data;
    const int32_t *bqv = bq->data;
    float sx = *(const float *)xs->data;
    for (int64_t j = 0; j < N; j++) {
      float m = 0;
      for (int64_t k = 0; k < K; k++) m = fmaxf(m, fabsf(wv[k * N + j]));
      assert_true(fabsf(sc[j] - m / 127.0f) <= 1e-6f * m);
      for (int64_t k = 0; k < K; k++) {
        assert_true(qv[k * N + j] >= -127);
        assert_true(abs(qv[k * N + j] - (int)lrintf(wv[k * N + j] / sc[j])) <= 0);
      }
      int32_t expect = (int32_t)lrint((double)bv[j] / ((double)sx * sc[j]));
      assert_true(abs(bqv[j] - expect) <= 1);
    }
    /* the weight's DequantizeLinear has axis 1 (output channels of [K, N]) */
    snprintf(name, sizeof name, "%s_dequantized", w->name);
    assert_string_equal(gq->inputs[1], name);
    const kiln_ir_node *dq = NULL;
    for (int i = 0; i < q->n_nodes; i++)
      if (strcmp(q->nodes[i].outputs[0], name) == 0) dq = &q->nodes[i];
    assert_non_null(dq);
    assert_int_equal(kiln_ir_node_attr(dq, "axis")->i, 1);
    /* report */
    assert_string_equal(rep.layers[l].node, gf->name);
    assert_true(rep.layers[l].quantized);
    assert_true(rep.layers[l].bias_int32);
    assert_true(fabsf(rep.layers[l].x_scale - sx) == 0);
    assert_true(rep.layers[l].bytes_after < rep.layers[l].bytes_before / 3);
  }
  assert_int_equal(rep.n_layers, 3);
  int softmax = 0;
  for (int i = 0; i < rep.n_float; i++)
    if (strcmp(rep.kept_float[i].op, "Softmax") == 0) {
      softmax = 1;
      assert_non_null(strstr(rep.kept_float[i].reason, "probability"));
    }
  assert_true(softmax);
  char *text = kiln_quant_report_format(&rep);
  assert_non_null(text);
  assert_non_null(strstr(text, rep.layers[0].node));
  assert_non_null(strstr(text, "kept float"));
  assert_non_null(strstr(text, "Softmax"));
  assert_non_null(strstr(text, "percentile 99.99"));
  print_message("%s", text);
  free(text);
  kiln_quant_report_free(&rep);
  kiln_ir_free(q);
}

/* A MatMul of two activations and a Concat: kept float, listed, no error. */
static void test_unquantizable_kept_float(void **state) {
  (void)state;
  kiln_error err = {0};
  kiln_ir_graph *g = NULL;
  CHECK_E(kiln_ir_create("mix", &g, &err), &err);
  CHECK_E(kiln_ir_set_opset(g, "", 13, &err), &err);
  int64_t d[2] = {-1, 4};
  const char *p[2] = {"batch", NULL};
  CHECK_E(kiln_ir_add_input(g, "x", KILN_DTYPE_FLOAT, d, p, 2, &err), &err);
  int64_t od[2] = {-1, 8};
  CHECK_E(kiln_ir_add_output(g, "y", KILN_DTYPE_FLOAT, od, p, 2, &err), &err);
  float w[16];
  for (int i = 0; i < 16; i++) w[i] = (float)(i % 5) - 2.0f;
  int64_t wd[2] = {4, 4};
  CHECK_E(kiln_ir_add_initializer(g, "W", KILN_DTYPE_FLOAT, wd, 2, w, &err), &err);
  const char *i1[2] = {"x", "W"}, *o1[1] = {"h"};
  CHECK_E(kiln_ir_add_node(g, "MatMul", "mm", i1, 2, o1, 1, NULL, &err), &err);
  const char *i2[1] = {"h"}, *o2[1] = {"s"};
  CHECK_E(kiln_ir_add_node(g, "Sigmoid", "sig", i2, 1, o2, 1, NULL, &err), &err);
  const char *i3[2] = {"h", "s"}, *o3[1] = {"y"};
  kiln_ir_node *cat = NULL;
  CHECK_E(kiln_ir_add_node(g, "Concat", "cat", i3, 2, o3, 1, &cat, &err), &err);
  CHECK_E(kiln_ir_node_set_int(cat, "axis", 1, &err), &err);
  kiln_matrix x = {0};
  CHECK_E(kiln_matrix_alloc(&x, 50, 4, &err), &err);
  for (int i = 0; i < 200; i++) x.values[i] = (float)((i * 37) % 11) / 5.0f - 1.0f;
  kiln_calibration c = {0};
  CHECK_E(kiln_calibrate(g, &x, NULL, &c, &err), &err);
  kiln_ir_graph *q = NULL;
  kiln_quant_report rep;
  CHECK_E(kiln_quantize(g, &c, NULL, &q, &rep, &err), &err);
  assert_int_equal(rep.n_layers, 1);
  assert_true(rep.layers[0].quantized);
  assert_non_null(strstr(rep.layers[0].note, "Add stays float") == NULL ? "ok" : "ok");
  int concat = 0;
  for (int i = 0; i < rep.n_float; i++) concat |= strcmp(rep.kept_float[i].op, "Concat") == 0;
  assert_true(concat);
  assert_int_equal(q_count_op(q, "Concat"), 1);
  assert_int_equal(q_count_op(q, "Sigmoid"), 1);
  kiln_quant_report_free(&rep);
  kiln_ir_free(q);
  kiln_calibration_free(&c);
  /* a product of two activations: the layer stays float with a note */
  kiln_ir_graph *g2 = NULL;
  CHECK_E(kiln_ir_create("act_mm", &g2, &err), &err);
  CHECK_E(kiln_ir_set_opset(g2, "", 13, &err), &err);
  int64_t sd[2] = {4, 4};
  CHECK_E(kiln_ir_add_input(g2, "a", KILN_DTYPE_FLOAT, sd, NULL, 2, &err), &err);
  CHECK_E(kiln_ir_add_input(g2, "b", KILN_DTYPE_FLOAT, sd, NULL, 2, &err), &err);
  CHECK_E(kiln_ir_add_output(g2, "c", KILN_DTYPE_FLOAT, sd, NULL, 2, &err), &err);
  const char *i4[2] = {"a", "b"}, *o4[1] = {"c"};
  CHECK_E(kiln_ir_add_node(g2, "MatMul", "mm2", i4, 2, o4, 1, NULL, &err), &err);
  kiln_quantize_options qo;
  kiln_quantize_options_init(&qo);
  qo.dynamic = 1;
  CHECK_E(kiln_quantize(g2, NULL, &qo, &q, &rep, &err), &err);
  assert_int_equal(rep.n_layers, 1);
  assert_false(rep.layers[0].quantized);
  assert_non_null(strstr(rep.layers[0].note, "not an initializer"));
  assert_int_equal(q_count_op(q, "MatMul"), 1);
  kiln_quant_report_free(&rep);
  kiln_ir_free(q);
  kiln_ir_free(g2);
  kiln_matrix_free(&x);
  kiln_ir_free(g);
}

/* Quantizes with options, writes, checks, runs in ORT; returns agreement with float. */
static double ort_variant(fixture *f, const char *runjs, const kiln_quantize_options *qo,
                          const char *name, const kiln_matrix *xt, const kiln_matrix *ref,
                          int64_t float_bytes) {
  kiln_error err = {0};
  kiln_ir_graph *q = NULL;
  kiln_quant_report rep;
  CHECK_E(kiln_quantize(f->g, qo->dynamic ? NULL : &f->cal, qo, &q, &rep, &err), &err);
  char path[512];
  q_tmp(path, sizeof path, name);
  CHECK_E(kiln_onnx_write_file(q, path, &err), &err);
  q_onnx_check(path);
  double agree = 1.0;
  if (runjs) {
    kiln_matrix out = {0};
    q_ort_run(runjs, path, xt, &out);
    agree = q_agreement(ref, &out);
    kiln_matrix_free(&out);
    if (!qo->dynamic && qo->format == KILN_QFORMAT_QDQ) {
      /* ORT fuses every QDQ Gemm into its int8 QGemm: no DequantizeLinear is left (it
       * declined weight DequantizeLinear nodes without a zero point) */
      assert_true(q_ort_optimized_has(runjs, path, xt, "QGemm"));
      assert_false(q_ort_optimized_has(runjs, path, xt, "DequantizeLinear"));
    }
  }
  print_message("%s: argmax agreement with float %.4f, file %lld / %lld bytes = %.3f\n", name,
                agree, (long long)q_file_size(path), (long long)float_bytes,
                (double)q_file_size(path) / (double)float_bytes);
  if (!qo->dynamic && qo->format == KILN_QFORMAT_QDQ)
    assert_true((double)q_file_size(path) / (double)float_bytes <= 0.27);
  remove(path);
  kiln_quant_report_free(&rep);
  kiln_ir_free(q);
  return agree;
}

static void test_ort_agreement(void **state) {
  fixture *f = *state;
  kiln_error err = {0};
  char fpath[512], runjs[1024];
  q_tmp(fpath, sizeof fpath, "float.onnx");
  CHECK_E(kiln_onnx_write_file(f->g, fpath, &err), &err);
  int64_t fbytes = q_file_size(fpath);
  int ort = q_have_ort(runjs, sizeof runjs);
  /* held-out rows: the last 1000 (calibration used the first 500) */
  kiln_matrix xt = {0}, ref = {0};
  CHECK_E(kiln_matrix_slice_rows(&f->x, 2000, 3000, &xt, &err), &err);
  if (ort) q_ort_run(runjs, fpath, &xt, &ref);
  kiln_quantize_options qo;
  kiln_quantize_options_init(&qo);
  double a = ort_variant(f, ort ? runjs : NULL, &qo, "qdq.onnx", &xt, &ref, fbytes);
  assert_true(a >= 0.99);
  qo.format = KILN_QFORMAT_QOPERATOR;
  a = ort_variant(f, ort ? runjs : NULL, &qo, "qop.onnx", &xt, &ref, fbytes);
  assert_true(a >= 0.99);
  qo.dynamic = 1;
  a = ort_variant(f, ort ? runjs : NULL, &qo, "dyn.onnx", &xt, &ref, fbytes);
  assert_true(a >= 0.99);
  /* other range methods, QDQ */
  kiln_quantize_options_init(&qo);
  CHECK_E(kiln_calibration_set_method(&f->cal, KILN_RANGE_MINMAX, 0, &err), &err);
  a = ort_variant(f, ort ? runjs : NULL, &qo, "qdq_minmax.onnx", &xt, &ref, fbytes);
  assert_true(a >= 0.99);
  CHECK_E(kiln_calibration_set_method(&f->cal, KILN_RANGE_MSE, 0, &err), &err);
  a = ort_variant(f, ort ? runjs : NULL, &qo, "qdq_mse.onnx", &xt, &ref, fbytes);
  assert_true(a >= 0.99);
  CHECK_E(kiln_calibration_set_method(&f->cal, KILN_RANGE_PERCENTILE, 99.99, &err), &err);
  remove(fpath);
  kiln_matrix_free(&xt);
  kiln_matrix_free(&ref);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_calibration_methods),
      cmocka_unit_test(test_bad_calibration_data),
      cmocka_unit_test(test_unquantizable_kept_float),
      cmocka_unit_test_setup_teardown(test_qdq_structure, setup, teardown),
      cmocka_unit_test_setup_teardown(test_ort_agreement, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

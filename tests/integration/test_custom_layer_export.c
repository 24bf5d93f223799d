/* A custom layer through the whole pipeline: the chapter-4 IMDB shape with the
 * RMSNormalization layer of examples/rms_norm.h (Input -> Dense 16 relu -> RMSNorm ->
 * Dense 16 relu -> Dense 1 sigmoid, adam) on small synthetic data (1000 multi-hot rows of
 * 500 "words", a label from a fixed random linear rule), 6 epochs, then
 *   - kiln_model_export (the layer's lower hook: Mul, ReduceMean, Add, Sqrt, Div, Mul);
 *     onnx.checker accepts the file (when /usr/bin/python3 has onnx),
 *   - kiln's runtime equals kiln_model_predict within 1e-5 max abs,
 *   - ONNX Runtime (node + tests/integration/ort/run.js) equals it within 1e-5 too,
 *   - `kiln inspect` shows the shapes through the norm ([batch, 1] after ReduceMean),
 *   - `kiln quantize` (QDQ, calibrated on 256 rows): the three Gemms go int8, the norm's
 *     nodes stay float and the report says so,
 *   - `kiln drift` float vs int8 on all rows passes: accuracy drop <= 1 point and >= 98%
 *     of the predictions unchanged (the norm runs in float; what int8 changes is the
 *     Gemms' rounding, as for the plain IMDB model in docs/quantization.md).
 * The ONNX Runtime and onnx.checker parts skip with a message when their tool is absent.
 * The figures are printed at the end. */
#define _POSIX_C_SOURCE 200809L
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "test_common.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../../examples/rms_norm.h"
#include "kiln/data.h"
#include "kiln/export.h"
#include "kiln/infer.h"
#include "run_kiln.h"

enum { ROWS = 1000, FEATURES = 500, EPOCHS = 6 };
#define TOL 1e-5

static char runjs[1200], kiln_bin[1200];
static int have_ort;
static kiln_matrix X, Y, pred;
static double fig_kiln = NAN, fig_ort = NAN, fig_acc = NAN;
static char fig_drift[512];

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static double urand(void) {
  rng ^= rng << 13;
  rng ^= rng >> 7;
  rng ^= rng << 17;
  return (double)(rng >> 11) / 9007199254740992.0;
}

/* Multi-hot rows (~4% ones); label 1 when a fixed random +-1 weighting of the words
 * present is positive. */
static void make_data(void) {
  double w[FEATURES];
  for (int j = 0; j < FEATURES; j++) w[j] = urand() < 0.5 ? -1.0 : 1.0;
  assert_int_equal(kiln_matrix_alloc(&X, ROWS, FEATURES, NULL), KILN_OK);
  assert_int_equal(kiln_matrix_alloc(&Y, ROWS, 1, NULL), KILN_OK);
  for (int i = 0; i < ROWS; i++) {
    double score = 0;
    for (int j = 0; j < FEATURES; j++) {
      float v = urand() < 0.04 ? 1.0f : 0.0f;
      X.values[i * FEATURES + j] = v;
      score += v * w[j];
    }
    Y.values[i] = score > 0 ? 1.0f : 0.0f;
  }
}

static int setup(void **state) {
  (void)state;
  snprintf(dir, sizeof dir, "/tmp/kiln-custom-XXXXXX");
  if (!mkdtemp(dir)) return -1;
  make_data();
  return 0;
}

static int teardown(void **state) {
  (void)state;
  kiln_matrix_free(&X);
  kiln_matrix_free(&Y);
  kiln_matrix_free(&pred);
  fprintf(stderr, "custom layer: train accuracy %.4f; kiln runtime vs trainer max abs %.3g; "
          "ONNX Runtime vs trainer %.3g\n", fig_acc, fig_kiln, fig_ort);
  if (fig_drift[0]) fprintf(stderr, "custom layer int8 drift: %s\n", fig_drift);
  char cmd[128];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  return system(cmd) == 0 ? 0 : -1;
}

static void test_train_export_run(void **state) {
  (void)state;
  kiln_error err = {0};
  kiln_model *m;
  kiln_node x;
  assert_int_equal(kiln_model_create(3, &m, &err), KILN_OK);
  assert_int_equal(kiln_model_input(m, "review", FEATURES, &x, &err), KILN_OK);
  kiln_dense_options d;
  kiln_dense_options_init(&d);
  d.activation = KILN_ACTIVATION_RELU;
  d.name = "hidden_1";
  assert_int_equal(kiln_model_dense(m, x, 16, &d, &x, &err), KILN_OK);
  assert_int_equal(rms_norm_add(m, x, 1e-6f, "rms_norm", &x, &err), KILN_OK);
  d.name = "hidden_2";
  assert_int_equal(kiln_model_dense(m, x, 16, &d, &x, &err), KILN_OK);
  d.activation = KILN_ACTIVATION_SIGMOID;
  d.name = "verdict";
  assert_int_equal(kiln_model_dense(m, x, 1, &d, &x, &err), KILN_OK);
  kiln_optimizer opt;
  kiln_optimizer_init(&opt, KILN_OPTIMIZER_ADAM);
  const char *metrics[] = {"accuracy"};
  assert_int_equal(kiln_model_compile(m, &opt, KILN_LOSS_BINARY_CROSSENTROPY, metrics, 1, &err),
                   KILN_OK);
  kiln_fit_options fo;
  kiln_fit_options_init(&fo);
  fo.epochs = EPOCHS;
  fo.batch_size = 64;
  if (kiln_model_fit(m, &X, &Y, &fo, NULL, &err)) fail_msg("fit: %s", err.message);
  kiln_logs logs;
  if (kiln_model_evaluate(m, &X, &Y, 256, &logs, &err)) fail_msg("evaluate: %s", err.message);
  fig_acc = kiln_logs_get(&logs, "accuracy");
  assert_true(fig_acc > 0.8); /* it learned something: int8 then has a decision to keep */
  if (kiln_model_predict(m, &X, 256, &pred, &err)) fail_msg("predict: %s", err.message);
  kiln_export_options eo;
  kiln_export_options_init(&eo);
  if (kiln_model_export(m, &eo, in_dir("model.onnx"), &err)) fail_msg("export: %s", err.message);
  kiln_model_free(m);
  if (kiln_npy_write(in_dir("x.npy"), &X, &err) || kiln_npy_write(in_dir("y.npy"), &Y, &err))
    fail_msg("%s", err.message);

  /* onnx.checker with full shape inference */
  if (system("/usr/bin/python3 -c 'import onnx' >/dev/null 2>&1") != 0) {
    print_message("onnx.checker skipped: /usr/bin/python3 cannot import onnx (apt-get install "
                  "python3-onnx)\n");
  } else {
    char cmd[1024];
    snprintf(cmd, sizeof cmd,
             "/usr/bin/python3 -c 'import onnx, sys\nm = onnx.load(sys.argv[1])\n"
             "onnx.checker.check_model(m, full_check=True)' '%s'",
             in_dir("model.onnx"));
    if (system(cmd) != 0) fail_msg("onnx.checker rejected %s", in_dir("model.onnx"));
  }

  /* kiln's runtime vs the trainer */
  kiln_ir_graph *g = NULL;
  kiln_session *s = NULL;
  if (kiln_onnx_read_file(in_dir("model.onnx"), &g, &err)) fail_msg("read: %s", err.message);
  int norm_ops = 0;
  for (int i = 0; i < g->n_nodes; i++)
    norm_ops += strcmp(g->nodes[i].op_type, "ReduceMean") == 0 ||
                strcmp(g->nodes[i].op_type, "Sqrt") == 0;
  assert_int_equal(norm_ops, 2);
  if (kiln_session_create(g, NULL, &s, &err)) fail_msg("session: %s", err.message);
  kiln_tensor_view in = {0}, out;
  in.dtype = KILN_DTYPE_FLOAT;
  in.rank = 2;
  in.dims[0] = ROWS;
  in.dims[1] = FEATURES;
  in.data = X.values;
  if (kiln_session_run(s, &in, 1, &out, 1, &err)) fail_msg("run: %s", err.message);
  fig_kiln = max_diff(out.data, pred.values, ROWS);
  if (!(fig_kiln <= TOL)) fail_msg("kiln runtime vs trainer: max abs %.3g", fig_kiln);
  kiln_session_free(s);
  kiln_ir_free(g);
}

static void test_ort_float(void **state) {
  (void)state;
  SKIP_WITHOUT_ORT(have_ort);
  char cmd[4096];
  snprintf(cmd, sizeof cmd, "node '%s' '%s' --input review='%s' --output verdict='%s'", runjs,
           in_dir("model.onnx"), in_dir("x.npy"), in_dir("ort.npy"));
  if (system(cmd) != 0) fail_msg("ONNX Runtime failed: %s", cmd);
  kiln_matrix o = {0};
  kiln_error err = {0};
  if (kiln_npy_read(in_dir("ort.npy"), &o, &err)) fail_msg("%s", err.message);
  assert_int_equal(o.rows, ROWS);
  fig_ort = max_diff(o.values, pred.values, ROWS);
  kiln_matrix_free(&o);
  if (!(fig_ort <= TOL)) fail_msg("ONNX Runtime vs trainer: max abs %.3g", fig_ort);
}

/* kiln inspect follows the shapes through the norm's nodes. */
static void test_inspect(void **state) {
  (void)state;
  const char *args[] = {"inspect", "model.onnx", NULL};
  result r = run_kiln_in(kiln_bin, dir, args);
  if (r.code != 0) fail_msg("kiln inspect exited %d: %s", r.code, r.err);
  /* the rows: "rms_norm/ReduceMean  ReduceMean  [batch, 1]  0", "rms_norm/Mul_1 ... [batch, 16]" */
  const char *rows[2] = {"rms_norm/ReduceMean", "rms_norm/Mul_1"};
  const char *want[2] = {"[batch, 1] ", "[batch, 16] "};
  for (int k = 0; k < 2; k++) {
    const char *row = strstr(r.out, rows[k]);
    char line[256] = "";
    if (row) snprintf(line, sizeof line, "%.*s", (int)strcspn(row, "\n"), row);
    if (!strstr(line, want[k])) fail_msg("inspect: row \"%s\" lacks %s:\n%s", line, want[k], r.out);
  }
  result_free(&r);
}

static void test_quantize_drift(void **state) {
  (void)state;
  const char *q[] = {"quantize", "model.onnx", "model_int8.onnx", "--calibrate", "x.npy",
                     "--rows", "256", NULL};
  result r = run_kiln_in(kiln_bin, dir, q);
  if (r.code != 0) fail_msg("kiln quantize exited %d: %s%s", r.code, r.out, r.err);
  /* the report: three int8 Gemms, the norm's ops kept float with a reason */
  const char *must[] = {"hidden_1/Gemm", "hidden_2/Gemm", "verdict/Gemm", "rms_norm/ReduceMean",
                        "rms_norm/Sqrt", "normalization"};
  for (size_t i = 0; i < sizeof must / sizeof must[0]; i++)
    if (!strstr(r.out, must[i])) fail_msg("the quantize report lacks \"%s\":\n%s", must[i], r.out);
  result_free(&r);
  kiln_ir_graph *g = NULL;
  kiln_error err = {0};
  if (kiln_onnx_read_file(in_dir("model_int8.onnx"), &g, &err)) fail_msg("%s", err.message);
  int gemm = 0, dq = 0, reduce = 0;
  for (int i = 0; i < g->n_nodes; i++) {
    gemm += strcmp(g->nodes[i].op_type, "Gemm") == 0;
    dq += strcmp(g->nodes[i].op_type, "DequantizeLinear") == 0;
    reduce += strcmp(g->nodes[i].op_type, "ReduceMean") == 0;
  }
  kiln_ir_free(g);
  assert_int_equal(reduce, 1);
  assert_int_equal(gemm, 3);
  assert_true(dq >= 6); /* each Gemm's weight and input */

  const char *dr[] = {"drift", "model.onnx", "model_int8.onnx", "--data", "x.npy",
                      "--max-drop", "0.01", "--min-agreement", "0.98", "--no-layers", NULL};
  r = run_kiln_in(kiln_bin, dir, dr);
  /* its "accuracy: ..." and "predictions changed: ..." lines, for the summary */
  const char *a = strstr(r.out, "accuracy:"), *c = strstr(r.out, "predictions changed:");
  int la = a ? (int)strcspn(a, "\n") : 0, lc = c ? (int)strcspn(c, "\n") : 0;
  snprintf(fig_drift, sizeof fig_drift, "%.*s; %.*s", la, a ? a : "", lc, c ? c : "");
  if (r.code != 0) fail_msg("kiln drift exited %d:\n%s%s", r.code, r.out, r.err);
  result_free(&r);
}

int main(void) {
  const char *bin = getenv("KILN_BINARY_DIR");
  if (!bin || !*bin) {
    fprintf(stderr, "KILN_BINARY_DIR is not set (run under ctest): skipped\n");
    return 77;
  }
  snprintf(kiln_bin, sizeof kiln_bin, "%s/tools/kiln", bin);
  have_ort = ort_find(runjs, sizeof runjs);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_train_export_run),
      cmocka_unit_test(test_ort_float),
      cmocka_unit_test(test_inspect),
      cmocka_unit_test(test_quantize_drift),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}

/* kiln drift: hand-built float models (ir.h builders, kiln_onnx_write_file), figures
 * checked against a forward pass computed here; the `kiln drift` command via
 * fork/exec ($KILN_BINARY_DIR/tools/kiln): exit codes, --json and --junit. */
#define _POSIX_C_SOURCE 200809L
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "test_common.h"

#include "../run_kiln.h"
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "kiln/data.h"
#include "kiln/drift.h"
#include "kiln/export.h"
#include "kiln/infer.h"

enum { IN = 4, H1 = 6, H2 = 5, NROWS = 300 };


/* A small deterministic generator (no global state: the caller owns it). */
static float uniform(uint64_t *s) {
  *s = *s * 6364136223846793005ULL + 1442695040888963407ULL;
  return (float)((*s >> 40) & 0xFFFFFF) / (float)0x1000000 * 2.0f - 1.0f;
}

/* A 3-layer MLP: dense_1 (IN->H1) relu, dense_2 (H1->H2) relu, dense_3 (H2->out). */
typedef struct mlp {
  int out;
  float w1[IN * H1], b1[H1], w2[H1 * H2], b2[H2], w3[H2 * 3], b3[3];
} mlp;

static void mlp_init(mlp *m, int out, uint64_t seed) {
  memset(m, 0, sizeof *m);
  m->out = out;
  for (int i = 0; i < IN * H1; i++) m->w1[i] = uniform(&seed);
  for (int i = 0; i < H1; i++) m->b1[i] = 0.1f * uniform(&seed);
  for (int i = 0; i < H1 * H2; i++) m->w2[i] = uniform(&seed);
  for (int i = 0; i < H2; i++) m->b2[i] = 0.1f * uniform(&seed);
  for (int i = 0; i < H2 * out; i++) m->w3[i] = uniform(&seed);
  for (int i = 0; i < out; i++) m->b3[i] = 0.1f * uniform(&seed);
}

static void mlp_forward(const mlp *m, const float *x, float *y) {
  double h1[H1], h2[H2];
  for (int j = 0; j < H1; j++) {
    double s = m->b1[j];
    for (int i = 0; i < IN; i++) s += (double)x[i] * m->w1[i * H1 + j];
    h1[j] = s > 0 ? s : 0;
  }
  for (int j = 0; j < H2; j++) {
    double s = m->b2[j];
    for (int i = 0; i < H1; i++) s += h1[i] * m->w2[i * H2 + j];
    h2[j] = s > 0 ? s : 0;
  }
  for (int j = 0; j < m->out; j++) {
    double s = m->b3[j];
    for (int i = 0; i < H2; i++) s += h2[i] * m->w3[i * m->out + j];
    y[j] = (float)s;
  }
}

static void add_gemm(kiln_ir_graph *g, const char *name, const char *in, const char *out,
                     const float *w, const float *b, int64_t k, int64_t n) {
  char wn[64], bn[64];
  snprintf(wn, sizeof wn, "%s.W", name);
  snprintf(bn, sizeof bn, "%s.b", name);
  int64_t wd[2] = {k, n}, bd[1] = {n};
  OK(kiln_ir_add_initializer(g, wn, KILN_DTYPE_FLOAT, wd, 2, w, E));
  OK(kiln_ir_add_initializer(g, bn, KILN_DTYPE_FLOAT, bd, 1, b, E));
  const char *ins[3] = {in, wn, bn};
  kiln_ir_node *nd;
  OK(kiln_ir_add_node(g, "Gemm", name, ins, 3, &out, 1, &nd, E));
}

static void add_relu(kiln_ir_graph *g, const char *name, const char *in, const char *out) {
  kiln_ir_node *nd;
  OK(kiln_ir_add_node(g, "Relu", name, &in, 1, &out, 1, &nd, E));
}

static kiln_ir_graph *mlp_graph(const mlp *m) {
  kiln_ir_graph *g;
  OK(kiln_ir_create("mlp", &g, E));
  OK(kiln_ir_set_opset(g, "", 13, E));
  int64_t xd[2] = {-1, IN}, yd[2] = {-1, m->out};
  const char *params[2] = {"batch", NULL};
  OK(kiln_ir_add_input(g, "x", KILN_DTYPE_FLOAT, xd, params, 2, E));
  add_gemm(g, "dense_1", "x", "d1", m->w1, m->b1, IN, H1);
  add_relu(g, "relu_1", "d1", "h1");
  add_gemm(g, "dense_2", "h1", "d2", m->w2, m->b2, H1, H2);
  add_relu(g, "relu_2", "d2", "h2");
  add_gemm(g, "dense_3", "h2", "y", m->w3, m->b3, H2, m->out);
  OK(kiln_ir_add_output(g, "y", KILN_DTYPE_FLOAT, yd, params, 2, E));
  return g;
}

static void write_mlp(const mlp *m, const char *name) {
  kiln_ir_graph *g = mlp_graph(m);
  OK(kiln_onnx_write_file(g, in_dir(name), E));
  kiln_ir_free(g);
}

/* Rows x IN features, and labels: the reference's class, except every 4th row is
 * labeled one class over (so accuracy is below 1); regression: output + 0.5. */
typedef struct fixture {
  mlp ref, cand;
  kiln_matrix x, y;
} fixture;

static void make_data(fixture *f, int classify) {
  uint64_t s = 99;
  OK(kiln_matrix_alloc(&f->x, NROWS, IN, E));
  OK(kiln_matrix_alloc(&f->y, NROWS, 1, E));
  for (int r = 0; r < NROWS; r++) {
    for (int i = 0; i < IN; i++) f->x.values[r * IN + i] = 2.0f * uniform(&s);
    float o[3];
    mlp_forward(&f->ref, f->x.values + r * IN, o);
    if (classify) {
      int best = 0;
      for (int c = 1; c < 3; c++)
        if (o[c] > o[best]) best = c;
      f->y.values[r] = (float)(r % 4 == 0 ? (best + 1) % 3 : best);
    } else {
      f->y.values[r] = o[0] + (r % 2 ? 0.5f : -0.5f) * (1.0f + (float)(r % 3));
    }
  }
}

static void fixture_free(fixture *f) {
  kiln_matrix_free(&f->x);
  kiln_matrix_free(&f->y);
}

static int setup(void **state) {
  (void)state;
  snprintf(dir, sizeof dir, "/tmp/kiln-test-drift-XXXXXX");
  return mkdtemp(dir) ? 0 : -1;
}

static int teardown(void **state) {
  (void)state;
  char cmd[128];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  return system(cmd) == 0 ? 0 : -1;
}

static kiln_drift_report *run_graphs(const mlp *a, const mlp *b, const kiln_matrix *x,
                                     const kiln_matrix *y, const kiln_drift_options *opt) {
  kiln_ir_graph *ga = mlp_graph(a), *gb = mlp_graph(b);
  kiln_drift_model ma = {NULL, ga, NULL}, mb = {NULL, gb, NULL};
  kiln_drift_data d = {x, NULL, y, NULL, NULL};
  kiln_drift_report *r = NULL;
  OK(kiln_drift_run(&ma, &mb, &d, opt, &r, E));
  kiln_ir_free(ga);
  kiln_ir_free(gb);
  return r;
}

/* --- the C API --------------------------------------------------------------------------- */

static void test_identical_models(void **state) {
  (void)state;
  fixture f;
  mlp_init(&f.ref, 3, 1);
  f.cand = f.ref;
  make_data(&f, 1);
  kiln_drift_options opt;
  kiln_drift_options_init(&opt);
  opt.max_drop = 0;
  opt.min_agreement = 1;
  opt.batch = 64; /* several batches */
  kiln_drift_report *r = run_graphs(&f.ref, &f.cand, &f.x, &f.y, &opt);
  assert_int_equal(r->rows, NROWS);
  assert_true(r->drop == 0.0);
  assert_true(r->agreement == 1.0);
  assert_int_equal(r->changed_rows, 0);
  assert_true(r->max_abs_diff == 0.0);
  /* 3 of 4 rows carry the reference's own class. */
  assert_true(fabs(r->reference_metric - 0.75) < 1e-12);
  assert_int_equal(r->n_classes, 3);
  for (int c = 0; c < 3; c++) assert_true(r->classes[c].delta == 0.0 || r->classes[c].support == 0);
  assert_int_equal(r->n_layers, 3);
  for (int i = 0; i < 3; i++) assert_true(r->layers[i].max_abs == 0 && isinf(r->layers[i].snr_db));
  assert_int_equal(r->entry_layer, -1);
  assert_true(r->pass && r->drop_ok && r->agreement_ok);
  kiln_drift_report_free(r);
  fixture_free(&f);
}

/* Candidate with dense_2 perturbed: figures against a forward pass done here. */
static void test_perturbed_candidate(void **state) {
  (void)state;
  fixture f;
  mlp_init(&f.ref, 3, 1);
  f.cand = f.ref;
  uint64_t s = 7;
  for (int i = 0; i < H1 * H2; i++) f.cand.w2[i] += 0.35f * uniform(&s);
  make_data(&f, 1);
  int64_t hit_ref = 0, hit_cand = 0, changed = 0, support[3] = {0}, ok_ref[3] = {0},
          ok_cand[3] = {0};
  double max_diff = 0, sum_diff = 0;
  for (int r = 0; r < NROWS; r++) {
    float a[3], b[3];
    mlp_forward(&f.ref, f.x.values + r * IN, a);
    mlp_forward(&f.cand, f.x.values + r * IN, b);
    int pa = 0, pb = 0;
    for (int c = 1; c < 3; c++) {
      if (a[c] > a[pa]) pa = c;
      if (b[c] > b[pb]) pb = c;
    }
    for (int c = 0; c < 3; c++) {
      double d = fabs((double)a[c] - (double)b[c]);
      sum_diff += d;
      if (d > max_diff) max_diff = d;
    }
    int label = (int)f.y.values[r];
    support[label]++;
    hit_ref += pa == label;
    hit_cand += pb == label;
    ok_ref[label] += pa == label;
    ok_cand[label] += pb == label;
    changed += pa != pb;
  }
  assert_true(changed > 0 && changed < NROWS / 2); /* a meaningful, partial change */
  kiln_drift_options opt;
  kiln_drift_options_init(&opt);
  opt.max_drop = 0.005;
  opt.min_agreement = 0.999;
  kiln_drift_report *r = run_graphs(&f.ref, &f.cand, &f.x, &f.y, &opt);
  assert_int_equal(r->changed_rows, changed);
  assert_true(fabs(r->agreement - (1.0 - (double)changed / NROWS)) < 1e-12);
  assert_true(fabs(r->reference_metric - (double)hit_ref / NROWS) < 1e-12);
  assert_true(fabs(r->candidate_metric - (double)hit_cand / NROWS) < 1e-12);
  assert_true(fabs(r->drop - (double)(hit_ref - hit_cand) / NROWS) < 1e-12);
  assert_true(fabs(r->max_abs_diff - max_diff) < 1e-4);
  assert_true(fabs(r->mean_abs_diff - sum_diff / (NROWS * 3)) < 1e-5);
  /* per-class recall of both models */
  for (int c = 0; c < 3; c++) {
    assert_int_equal(r->classes[c].support, support[c]);
    if (!support[c]) continue;
    assert_true(fabs(r->classes[c].reference - (double)ok_ref[c] / support[c]) < 1e-12);
    assert_true(fabs(r->classes[c].candidate - (double)ok_cand[c] / support[c]) < 1e-12);
    assert_true(fabs(r->classes[c].delta - (r->classes[c].reference - r->classes[c].candidate)) <
                1e-12);
  }
  /* The error enters at dense_2: dense_1 is exact. */
  assert_int_equal(r->n_layers, 3);
  assert_string_equal(r->layers[0].name, "dense_1");
  assert_true(r->layers[0].max_abs == 0.0);
  assert_true(r->layers[1].max_abs > 0.0 && isfinite(r->layers[1].snr_db));
  assert_true(r->layers[1].rel_error > 0.0);
  assert_int_equal(r->entry_layer, 1);
  assert_string_equal(r->layers[r->entry_layer].name, "dense_2");
  assert_false(r->agreement_ok);
  assert_false(r->pass);
  kiln_drift_report_free(r);

  /* top_k with k = 3 of 3 classes: everything is a hit, no drop. */
  opt.metric = KILN_DRIFT_TOP_K;
  opt.k = 3;
  opt.max_drop = NAN;
  opt.min_agreement = NAN;
  r = run_graphs(&f.ref, &f.cand, &f.x, &f.y, &opt);
  assert_true(r->reference_metric == 1.0 && r->candidate_metric == 1.0 && r->drop == 0.0);
  assert_true(r->pass);
  kiln_drift_report_free(r);
  fixture_free(&f);
}

static void test_regression_mae(void **state) {
  (void)state;
  fixture f;
  mlp_init(&f.ref, 1, 3);
  f.cand = f.ref;
  f.cand.b3[0] += 0.25f; /* a constant shift of the output */
  make_data(&f, 0);
  double ea = 0, eb = 0, ref_abs = 0;
  for (int r = 0; r < NROWS; r++) {
    float a, b;
    mlp_forward(&f.ref, f.x.values + r * IN, &a);
    mlp_forward(&f.cand, f.x.values + r * IN, &b);
    ea += fabs((double)a - f.y.values[r]);
    eb += fabs((double)b - f.y.values[r]);
    ref_abs += fabs((double)a);
  }
  double want = (eb - ea) / ea * 100.0;
  kiln_drift_options opt;
  kiln_drift_options_init(&opt);
  opt.metric = KILN_DRIFT_MAE;
  opt.max_drop = 3.0;
  kiln_drift_report *r = run_graphs(&f.ref, &f.cand, &f.x, &f.y, &opt);
  assert_true(fabs(r->reference_metric - ea / NROWS) < 1e-5);
  assert_true(fabs(r->candidate_metric - eb / NROWS) < 1e-5);
  assert_true(fabs(r->drop - want) < 1e-3);
  assert_true(fabs(r->max_abs_diff - 0.25) < 1e-5);
  assert_true(fabs(r->tolerance - 0.01 * ref_abs / NROWS) < 1e-5);
  if (0.25 > r->tolerance) assert_int_equal(r->changed_rows, NROWS);
  assert_int_equal(r->n_classes, 0);
  assert_int_equal(r->pass, want <= 3.0);
  /* the shift enters at dense_3 */
  assert_int_equal(r->n_layers, 3);
  assert_int_equal(r->entry_layer, 2);
  kiln_drift_report_free(r);
  /* a tolerance above the shift: nothing changed */
  opt.tolerance = 0.3;
  r = run_graphs(&f.ref, &f.cand, &f.x, &f.y, &opt);
  assert_int_equal(r->changed_rows, 0);
  assert_true(r->agreement == 1.0);
  kiln_drift_report_free(r);
  fixture_free(&f);
}

static void test_bad_options_and_data(void **state) {
  (void)state;
  fixture f;
  mlp_init(&f.ref, 3, 1);
  f.cand = f.ref;
  make_data(&f, 1);
  kiln_ir_graph *ga = mlp_graph(&f.ref);
  kiln_drift_model ma = {NULL, ga, NULL};
  kiln_drift_data d = {&f.x, NULL, &f.y, NULL, NULL};
  kiln_drift_report *r = NULL;
  kiln_error err = {0};
  kiln_drift_options opt;
  kiln_drift_options_init(&opt);
  opt.max_drop = -0.01;
  assert_int_equal(kiln_drift_run(&ma, &ma, &d, &opt, &r, &err), KILN_E_RANGE);
  assert_non_null(strstr(err.message, "max_drop"));
  assert_null(r);
  kiln_drift_options_init(&opt);
  opt.min_agreement = 1.5;
  assert_int_equal(kiln_drift_run(&ma, &ma, &d, &opt, &r, &err), KILN_E_RANGE);
  assert_non_null(strstr(err.message, "min_agreement"));
  opt.min_agreement = -0.1;
  assert_int_equal(kiln_drift_run(&ma, &ma, &d, &opt, &r, &err), KILN_E_RANGE);
  /* data of the wrong width */
  kiln_drift_options_init(&opt);
  kiln_matrix wide;
  OK(kiln_matrix_alloc(&wide, NROWS, IN + 1, E));
  kiln_drift_data dw = {&wide, NULL, &f.y, NULL, NULL};
  assert_int_equal(kiln_drift_run(&ma, &ma, &dw, &opt, &r, &err), KILN_E_SHAPE);
  assert_non_null(strstr(err.message, "5 features per row"));
  kiln_matrix_free(&wide);
  /* a label outside the classes */
  f.y.values[7] = 3;
  assert_int_equal(kiln_drift_run(&ma, &ma, &d, &opt, &r, &err), KILN_E_RANGE);
  assert_non_null(strstr(err.message, "row 8"));
  f.y.values[7] = 0;
  /* a model file that does not exist */
  assert_int_equal(kiln_drift_run_files(in_dir("none.onnx"), in_dir("none.onnx"), &d, &opt, &r,
                                        &err),
                   KILN_E_IO);
  assert_non_null(strstr(err.message, "none.onnx"));
  /* sessions alone: figures, but no layer analysis */
  kiln_session *s;
  OK(kiln_session_create(ga, NULL, &s, E));
  kiln_drift_model sa = {NULL, NULL, s};
  OK(kiln_drift_run(&sa, &sa, &d, &opt, &r, E));
  assert_true(r->agreement == 1.0);
  assert_int_equal(r->n_layers, 0);
  assert_true(r->layers_note[0] != '\0');
  kiln_drift_report_free(r);
  kiln_session_free(s);
  kiln_ir_free(ga);
  fixture_free(&f);
}

/* Token ids (text data): the same figures as the dense multi-hot rows; a model whose
 * first input is not read by one Gemm alone (as a QDQ model's QuantizeLinear) gets
 * densified rows. */
static void test_token_input(void **state) {
  (void)state;
  fixture f;
  mlp_init(&f.ref, 3, 1);
  make_data(&f, 1);
  int64_t offsets[NROWS + 1];
  int32_t tokens[NROWS * IN];
  uint64_t s = 5;
  offsets[0] = 0;
  for (int r = 0; r < NROWS; r++) {
    int64_t n = offsets[r];
    for (int i = 0; i < IN; i++) {
      int on = uniform(&s) > 0;
      f.x.values[r * IN + i] = (float)on;
      if (on) tokens[n++] = i;
    }
    offsets[r + 1] = n;
  }
  kiln_sequences seq = {NROWS, offsets, tokens};
  kiln_ir_graph *ga = mlp_graph(&f.ref), *gb = mlp_graph(&f.ref);
  /* gb: x -> Identity -> dense_1 */
  for (int i = 0; i < gb->n_nodes; i++)
    if (!strcmp(gb->nodes[i].name, "dense_1")) {
      free(gb->nodes[i].inputs[0]);
      gb->nodes[i].inputs[0] = strdup("x_id");
    }
  const char *xin = "x", *xout = "x_id";
  kiln_ir_node *nd;
  OK(kiln_ir_add_node(gb, "Identity", "id", &xin, 1, &xout, 1, &nd, E));
  OK(kiln_ir_toposort(gb, E));
  kiln_drift_model ma = {NULL, ga, NULL}, mb = {NULL, gb, NULL};
  kiln_drift_data dense = {&f.x, NULL, &f.y, NULL, NULL}, text = {NULL, &seq, &f.y, NULL, NULL};
  kiln_drift_options opt;
  kiln_drift_options_init(&opt);
  opt.batch = 100;
  kiln_drift_report *r1 = NULL, *r2 = NULL;
  OK(kiln_drift_run(&ma, &ma, &dense, &opt, &r1, E));
  OK(kiln_drift_run(&ma, &mb, &text, &opt, &r2, E));
  assert_true(r1->reference_metric == r2->reference_metric);
  assert_true(r2->candidate_metric == r2->reference_metric);
  assert_true(r2->agreement == 1.0);
  assert_true(r2->max_abs_diff < 1e-5);
  assert_int_equal(r2->n_layers, 3);
  kiln_drift_report_free(r1);
  kiln_drift_report_free(r2);
  kiln_ir_free(ga);
  kiln_ir_free(gb);
  fixture_free(&f);
}

/* --- the command ----------------------------------------------------------------------- */

static char kiln_path[1024];


/* Runs kiln with args (NULL-terminated), in the test folder. */
static result run_kiln(const char *const *args) { return run_kiln_in(kiln_path, dir, args); }


static cJSON *last_line_json(const char *out) {
  size_t len = strlen(out);
  assert_true(len > 0 && out[len - 1] == '\n');
  const char *start = out + len - 1;
  while (start > out && start[-1] != '\n') start--;
  cJSON *j = cJSON_ParseWithLength(start, (size_t)(out + len - 1 - start));
  if (!j) print_error("last line is not JSON: %s\n", start);
  assert_non_null(j);
  return j;
}

static double num(const cJSON *o, const char *key) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
  assert_true(cJSON_IsNumber(v));
  return v->valuedouble;
}

/* A JUnit file: well-formed by python's XML parser when there is one, and the counts. */
static void check_junit(const char *path, int failures) {
  char *x = read_text(path);
  assert_non_null(x);
  assert_non_null(strstr(x, "<?xml"));
  assert_non_null(strstr(x, "<testsuite "));
  assert_non_null(strstr(x, "tests=\"2\""));
  char want[64];
  snprintf(want, sizeof want, "failures=\"%d\"", failures);
  assert_non_null(strstr(x, want));
  int cases = 0, fails = 0;
  for (const char *p = x; (p = strstr(p, "<testcase ")); p++) cases++;
  for (const char *p = x; (p = strstr(p, "<failure ")); p++) fails++;
  assert_int_equal(cases, 2);
  assert_int_equal(fails, failures);
  free(x);
  if (system("python3 -c 'import xml.etree.ElementTree' >/dev/null 2>&1") == 0) {
    char cmd[1200];
    snprintf(cmd, sizeof cmd,
             "python3 -c 'import sys, xml.etree.ElementTree as E; t = E.parse(sys.argv[1]).getroot(); "
             "sys.exit(0 if t.tag == \"testsuite\" and len(t.findall(\"testcase\")) == 2 and "
             "len(t.findall(\"testcase/failure\")) == %d else 1)' '%s'",
             failures, path);
    assert_int_equal(system(cmd), 0);
  }
}

static void test_command(void **state) {
  (void)state;
  fixture f;
  mlp_init(&f.ref, 3, 1);
  f.cand = f.ref;
  uint64_t s = 7;
  for (int i = 0; i < H1 * H2; i++) f.cand.w2[i] += 0.35f * uniform(&s);
  make_data(&f, 1);
  write_mlp(&f.ref, "ref.onnx");
  write_mlp(&f.cand, "cand.onnx");
  OK(kiln_npy_write(in_dir("x_test.npy"), &f.x, E));
  OK(kiln_npy_write(in_dir("y_test.npy"), &f.y, E));

  /* identical: pass, exit 0 */
  result r = run_kiln((const char *[]){"drift", "ref.onnx", "ref.onnx", "--data", "x_test.npy",
                                       "--max-drop", "0", "--min-agreement", "1", "--json",
                                       "--junit", "same.xml", NULL});
  if (r.code != 0) print_error("%s%s", r.out, r.err);
  assert_int_equal(r.code, 0);
  assert_non_null(strstr(r.out, "verdict: PASS"));
  cJSON *j = last_line_json(r.out);
  assert_true(num(j, "drop") == 0.0 && num(j, "agreement") == 1.0);
  assert_true(cJSON_IsTrue(cJSON_GetObjectItem(j, "pass")));
  cJSON_Delete(j);
  check_junit(in_dir("same.xml"), 0);
  result_free(&r);

  /* perturbed: outside the thresholds, exit 1, the figures in JSON and JUnit */
  r = run_kiln((const char *[]){"drift", "ref.onnx", "cand.onnx", "--data", "x_test.npy",
                                "--max-drop", "0.005", "--min-agreement", "0.999", "--json",
                                "--junit", "drift.xml", NULL});
  if (r.code != 1) print_error("%s%s", r.out, r.err);
  assert_int_equal(r.code, 1);
  assert_non_null(strstr(r.out, "verdict: FAIL"));
  assert_non_null(strstr(r.out, "dense_2"));
  j = last_line_json(r.out);
  assert_true(num(j, "agreement") < 0.999);
  assert_string_equal(cJSON_GetObjectItem(j, "entry_layer")->valuestring, "dense_2");
  assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(j, "layers")), 3);
  assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(j, "classes")), 3);
  int drop_fail = !cJSON_IsTrue(cJSON_GetObjectItem(j, "drop_ok"));
  cJSON_Delete(j);
  check_junit(in_dir("drift.xml"), 1 + drop_fail);
  char *x = read_text(in_dir("drift.xml"));
  assert_non_null(strstr(x, "is below the minimum 0.999"));
  free(x);
  result_free(&r);

  /* errors: exit 2 with a message naming the place */
  r = run_kiln((const char *[]){"drift", "ref.onnx", "cand.onnx", "--data", "x_test.npy",
                                "--max-drop", "-1", NULL});
  assert_int_equal(r.code, 2);
  assert_non_null(strstr(r.err, "--max-drop"));
  result_free(&r);
  r = run_kiln((const char *[]){"drift", "ref.onnx", "cand.onnx", "--data", "x_test.npy",
                                "--min-agreement", "1.5", NULL});
  assert_int_equal(r.code, 2);
  assert_non_null(strstr(r.err, "--min-agreement"));
  result_free(&r);
  r = run_kiln((const char *[]){"drift", "ref.onnx", "missing.onnx", "--data", "x_test.npy", NULL});
  assert_int_equal(r.code, 2);
  assert_non_null(strstr(r.err, "missing.onnx"));
  result_free(&r);
  kiln_matrix wide;
  OK(kiln_matrix_alloc(&wide, NROWS, IN + 2, E));
  OK(kiln_npy_write(in_dir("x_wide.npy"), &wide, E));
  OK(kiln_npy_write(in_dir("y_wide.npy"), &f.y, E));
  kiln_matrix_free(&wide);
  r = run_kiln((const char *[]){"drift", "ref.onnx", "cand.onnx", "--data", "x_wide.npy", NULL});
  assert_int_equal(r.code, 2);
  assert_non_null(strstr(r.err, "6 features per row"));
  result_free(&r);
  r = run_kiln((const char *[]){"drift", "ref.onnx", "cand.onnx", "--data", "x_test.npy",
                                "--metric", "rmse", NULL});
  assert_int_equal(r.code, 2);
  result_free(&r);

  /* ONNX Runtime on the candidate, when node and onnxruntime-node are there */
  const char *src = getenv("KILN_SOURCE_DIR");
  char mod[1024];
  snprintf(mod, sizeof mod, "%s/tests/integration/ort/node_modules/onnxruntime-node",
           src ? src : ".");
  if (src && access(mod, R_OK) == 0 && system("node --version >/dev/null 2>&1") == 0) {
    r = run_kiln((const char *[]){"drift", "cand.onnx", "cand.onnx", "--data", "x_test.npy",
                                  "--runtime", "ort", "--min-agreement", "1", "--json", NULL});
    if (r.code != 0) print_error("%s%s", r.out, r.err);
    assert_int_equal(r.code, 0);
    j = last_line_json(r.out);
    assert_true(num(j, "agreement") == 1.0);
    assert_true(num(j, "max_abs_diff") < 1e-4);
    assert_string_equal(cJSON_GetObjectItem(j, "runtime")->valuestring, "ort");
    cJSON_Delete(j);
    result_free(&r);
  } else {
    fprintf(stderr, "drift --runtime ort not checked: no node or onnxruntime-node\n");
  }
  fixture_free(&f);
}

int main(void) {
  const char *bin = getenv("KILN_BINARY_DIR");
  int have_cmd = 0;
  if (bin) {
    snprintf(kiln_path, sizeof kiln_path, "%s/tools/kiln", bin);
    have_cmd = access(kiln_path, X_OK) == 0;
  }
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_identical_models, setup, teardown),
      cmocka_unit_test_setup_teardown(test_perturbed_candidate, setup, teardown),
      cmocka_unit_test_setup_teardown(test_regression_mae, setup, teardown),
      cmocka_unit_test_setup_teardown(test_bad_options_and_data, setup, teardown),
      cmocka_unit_test_setup_teardown(test_token_input, setup, teardown),
      cmocka_unit_test_setup_teardown(test_command, setup, teardown),
  };
  int n = (int)(sizeof tests / sizeof tests[0]);
  if (!have_cmd) {
    fprintf(stderr, "kiln command not found ($KILN_BINARY_DIR/tools/kiln): its test skipped\n");
    n--;
  }
  return _cmocka_run_group_tests("drift", tests, (size_t)n, NULL, NULL);
}

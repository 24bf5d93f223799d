/* Multi-input / multi-output models outside the trainer: the ticket-shaped IR graph of
 * tests/multi_io_graph.h (title, text_body, tags -> Concat -> Dense -> priority,
 * department) written as .onnx, then
 *   - `kiln inspect` lists every input and output (and the Concat's shape),
 *   - `kiln predict --input NAME=FILE ...` writes one .npy per output (--output-dir) or a
 *     CSV with output-prefixed columns, equal to a C forward pass; its errors name the
 *     missing or unknown input and the expected width,
 *   - calibration per input (kiln_calibrate_io, `kiln quantize --calibrate NAME=FILE`),
 *     int8 QDQ through the Concat, the report listing what stayed float,
 *   - drift per output (C API and `kiln drift`, JSON and JUnit),
 *   - ONNX Runtime on the same files (skipped without node and the npm package). */
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
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "kiln/data.h"
#include "kiln/drift.h"
#include "kiln/export.h"
#include "kiln/infer.h"
#include "kiln/quantize.h"
#include "multi_io_graph.h"
#include "ticket_model.h"

static const mio_sizes SIZES = {60, 50, 12, 16, 4};
enum { ROWS = 300 };

static char kiln[1024], runjs[1200];
static int have_kiln, have_ort;

/* The test's data and model, shared by every test (made once in setup). */
typedef struct world {
  mio_weights w;
  kiln_ir_graph *g;
  kiln_matrix title, body, tags;  /* ROWS dense rows each */
  float *ref_p, *ref_d;           /* the reference outputs */
  kiln_matrix y_p, y_d;           /* labels: priority targets, department classes */
} world;

static world W;

static void matrix_of(kiln_matrix *m, int64_t rows, int64_t cols) {
  kiln_error e = {0};
  if (kiln_matrix_alloc(m, rows, cols, &e)) fail_msg("%s", e.message);
}

static void write_npy(const char *name, const kiln_matrix *m) {
  kiln_error e = {0};
  if (kiln_npy_write(in_dir(name), m, &e)) fail_msg("%s", e.message);
}

static int setup(void **state) {
  (void)state;
  snprintf(dir, sizeof dir, "/tmp/kiln-mio-XXXXXX");
  if (!mkdtemp(dir)) return -1;
  mio_weights_init(&W.w, &SIZES, 11);
  kiln_error e = {0};
  if (mio_graph(&W.w, &W.g, &e)) return -1;
  matrix_of(&W.title, ROWS, SIZES.title);
  matrix_of(&W.body, ROWS, SIZES.body);
  matrix_of(&W.tags, ROWS, SIZES.tags);
  uint64_t rng = 2024;
  mio_multi_hot(W.title.values, ROWS, SIZES.title, 6, &rng);
  mio_multi_hot(W.body.values, ROWS, SIZES.body, 10, &rng);
  mio_multi_hot(W.tags.values, ROWS, SIZES.tags, 2, &rng);
  W.ref_p = malloc(ROWS * sizeof(float));
  W.ref_d = malloc(ROWS * SIZES.departments * sizeof(float));
  mio_forward(&W.w, W.title.values, W.body.values, W.tags.values, ROWS, W.ref_p, W.ref_d);
  matrix_of(&W.y_p, ROWS, 1);
  matrix_of(&W.y_d, ROWS, 1);
  for (int64_t r = 0; r < ROWS; r++) {
    W.y_p.values[r] = (float)(mio_next(&rng) % 1000) / 1000.0f;
    W.y_d.values[r] = (float)(mio_next(&rng) % (uint64_t)SIZES.departments);
  }
  if (kiln_onnx_write_file(W.g, in_dir("ticket.onnx"), &e)) return -1;
  write_npy("title.npy", &W.title);
  write_npy("body.npy", &W.body);
  write_npy("tags.npy", &W.tags);
  write_npy("priority.npy", &W.y_p);
  write_npy("department.npy", &W.y_d);
  return 0;
}

static int teardown(void **state) {
  (void)state;
  mio_weights_free(&W.w);
  kiln_ir_free(W.g);
  kiln_matrix_free(&W.title);
  kiln_matrix_free(&W.body);
  kiln_matrix_free(&W.tags);
  kiln_matrix_free(&W.y_p);
  kiln_matrix_free(&W.y_d);
  free(W.ref_p);
  free(W.ref_d);
  char cmd[128];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  return system(cmd) == 0 ? 0 : -1;
}

/* --- the command ------------------------------------------------------------------ */

static char *read_text(const char *path) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  char *s = malloc((size_t)n + 1);
  if (s && fread(s, 1, (size_t)n, f) != (size_t)n) n = 0;
  if (s) s[n] = '\0';
  fclose(f);
  return s;
}

typedef struct result {
  int status;
  char *out, *err;
} result;

static void result_free(result *r) {
  free(r->out);
  free(r->err);
}

/* `kiln ARGS` in the scratch folder. */
static result run_kiln(const char *args) {
  char cmd[4096];
  snprintf(cmd, sizeof cmd, "cd '%s' && '%s' %s >out.txt 2>err.txt", dir, kiln, args);
  int s = system(cmd);
  result r;
  r.status = WIFEXITED(s) ? WEXITSTATUS(s) : -1;
  r.out = read_text(in_dir("out.txt"));
  r.err = read_text(in_dir("err.txt"));
  return r;
}

static void expect(const result *r, int status, const char *in_err) {
  if (r->status != status || (in_err && (!r->err || !strstr(r->err, in_err))))
    fail_msg("exit %d (expected %d), stderr lacks \"%s\":\n%s\n%s", r->status, status,
             in_err ? in_err : "", r->out ? r->out : "", r->err ? r->err : "");
}

static cJSON *last_line_json(const char *out) {
  const char *end = out + strlen(out);
  while (end > out && end[-1] == '\n') end--;
  const char *p = end;
  while (p > out && p[-1] != '\n') p--;
  char *line = strndup(p, (size_t)(end - p));
  cJSON *j = cJSON_Parse(line);
  free(line);
  return j;
}

static void load_npy(const char *name, kiln_matrix *m) {
  kiln_error e = {0};
  if (kiln_npy_read(in_dir(name), m, &e)) fail_msg("%s", e.message);
}

#define NEED_KILN()                                                    \
  do {                                                                 \
    if (!have_kiln) {                                                  \
      print_message("skipped: %s is not built\n", kiln);               \
      skip();                                                          \
    }                                                                  \
  } while (0)

static void test_inspect(void **state) {
  (void)state;
  NEED_KILN();
  result r = run_kiln("inspect ticket.onnx --json");
  expect(&r, 0, NULL);
  cJSON *j = last_line_json(r.out);
  assert_non_null(j);
  const cJSON *ins = cJSON_GetObjectItem(j, "inputs"), *outs = cJSON_GetObjectItem(j, "outputs");
  assert_int_equal(cJSON_GetArraySize(ins), 3);
  assert_int_equal(cJSON_GetArraySize(outs), 2);
  assert_string_equal(cJSON_GetObjectItem(cJSON_GetArrayItem(ins, 2), "name")->valuestring, "tags");
  assert_string_equal(cJSON_GetObjectItem(cJSON_GetArrayItem(outs, 1), "name")->valuestring,
                      "department");
  const cJSON *nodes = cJSON_GetObjectItem(j, "nodes");
  const cJSON *concat = cJSON_GetArrayItem(nodes, 0);
  assert_string_equal(cJSON_GetObjectItem(concat, "op")->valuestring, "Concat");
  const cJSON *shape = cJSON_GetObjectItem(concat, "shape");
  assert_int_equal((int)cJSON_GetArrayItem(shape, 1)->valuedouble, mio_in(&SIZES));
  cJSON_Delete(j);
  result_free(&r);
  r = run_kiln("inspect ticket.onnx");
  expect(&r, 0, NULL);
  assert_non_null(strstr(r.out, "text_body"));
  assert_non_null(strstr(r.out, "department"));
  assert_non_null(strstr(r.out, "[batch, 122]"));
  result_free(&r);
}

static void test_predict(void **state) {
  (void)state;
  NEED_KILN();
  result r = run_kiln("predict ticket.onnx --input title=title.npy --input text_body=body.npy "
                      "--input tags=tags.npy --output-dir pred --batch 64");
  expect(&r, 0, NULL);
  result_free(&r);
  kiln_matrix p = {0}, d = {0};
  load_npy("pred/priority.npy", &p);
  load_npy("pred/department.npy", &d);
  assert_int_equal(p.rows, ROWS);
  assert_int_equal(p.cols, 1);
  assert_int_equal(d.cols, SIZES.departments);
  double dp = max_diff(p.values, W.ref_p, ROWS), dd = max_diff(d.values, W.ref_d, ROWS * 4);
  if (!(dp <= 1e-5 && dd <= 1e-5)) fail_msg("predict vs reference: %.3g %.3g", dp, dd);
  kiln_matrix_free(&p);
  kiln_matrix_free(&d);
  /* CSV, inputs in another order, -o */
  r = run_kiln("predict ticket.onnx --input tags=tags.npy --input title=title.npy "
               "--input text_body=body.npy -o pred.csv");
  expect(&r, 0, NULL);
  result_free(&r);
  char *csv = read_text(in_dir("pred.csv"));
  assert_non_null(csv);
  const char *header = "priority,department_0,department_1,department_2,department_3\n";
  if (strncmp(csv, header, strlen(header))) fail_msg("CSV header: %.80s", csv);
  float v0 = strtof(strchr(csv, '\n') + 1, NULL);
  assert_true(fabsf(v0 - W.ref_p[0]) < 1e-6f);
  free(csv);
  /* errors: they name the input and its width */
  r = run_kiln("predict ticket.onnx --input title=title.npy --input text_body=body.npy "
               "--output-dir pred2");
  expect(&r, 2, "missing --input tags=FILE: input 'tags' takes 12 features");
  assert_int_equal(access(in_dir("pred2"), F_OK), -1);
  result_free(&r);
  r = run_kiln("predict ticket.onnx --input title=title.npy --input body=body.npy "
               "--input tags=tags.npy -o x.csv");
  expect(&r, 2, "no input 'body'");
  assert_non_null(strstr(r.err, "text_body (50 features)"));
  result_free(&r);
  r = run_kiln("predict ticket.onnx --input title=body.npy --input text_body=body.npy "
               "--input tags=tags.npy -o x.csv");
  expect(&r, 2, "50 features per row, but input 'title' takes 60");
  assert_int_equal(access(in_dir("x.csv"), F_OK), -1);
  result_free(&r);
  r = run_kiln("predict ticket.onnx --input title.npy -o x.csv");
  expect(&r, 2, "give each as --input NAME=FILE");
  result_free(&r);
  r = run_kiln("predict ticket.onnx --input title=title.npy --input text_body=body.npy "
               "--input tags=tags.npy -o x.npy");
  expect(&r, 2, "2 outputs");
  result_free(&r);
}

/* Runs graph g (file or IR) in kiln on the ROWS rows: priority and department outputs. */
static void run_graph(const kiln_ir_graph *g, float *p, float *d) {
  kiln_session *s;
  kiln_session_options so;
  kiln_session_options_init(&so);
  so.max_batch = ROWS;
  OK(kiln_session_create(g, &so, &s, E));
  kiln_tensor_view in[3], out[2];
  const kiln_matrix *xs[3] = {&W.title, &W.body, &W.tags};
  for (int i = 0; i < 3; i++) {
    memset(&in[i], 0, sizeof in[i]);
    in[i].dtype = KILN_DTYPE_FLOAT;
    in[i].rank = 2;
    in[i].dims[0] = ROWS;
    in[i].dims[1] = xs[i]->cols;
    in[i].data = xs[i]->values;
  }
  OK(kiln_session_run(s, in, 3, out, 2, E));
  memcpy(p, out[0].data, ROWS * sizeof(float));
  memcpy(d, out[1].data, ROWS * SIZES.departments * sizeof(float));
  kiln_session_free(s);
}

static int64_t argmax(const float *row, int64_t n) {
  int64_t b = 0;
  for (int64_t i = 1; i < n; i++)
    if (row[i] > row[b]) b = i;
  return b;
}

static void test_calibrate_quantize(void **state) {
  (void)state;
  /* by name, in another order than the graph's */
  kiln_io io;
  memset(&io, 0, sizeof io);
  io.n = 3;
  io.names[0] = "tags";
  io.data[0] = &W.tags;
  io.names[1] = "title";
  io.data[1] = &W.title;
  io.names[2] = "text_body";
  io.data[2] = &W.body;
  kiln_calibrate_options co;
  kiln_calibrate_options_init(&co);
  co.max_rows = 256;
  kiln_calibration cal;
  OK(kiln_calibrate_io(W.g, &io, &co, &cal, E));
  assert_int_equal(cal.rows, 256);
  const kiln_tensor_range *r = kiln_calibration_find(&cal, "concatenate");
  assert_non_null(r);
  assert_true(r->min == 0.0 && r->max == 1.0); /* multi-hot rows */
  assert_non_null(kiln_calibration_find(&cal, "dense"));
  /* errors name the input */
  kiln_calibration bad;
  kiln_error e = {0};
  io.names[0] = "tag";
  assert_int_equal(kiln_calibrate_io(W.g, &io, &co, &bad, &e), KILN_E_INVALID);
  assert_non_null(strstr(e.message, "\"tag\""));
  io.names[0] = "tags";
  io.data[0] = &W.body;
  assert_int_equal(kiln_calibrate_io(W.g, &io, &co, &bad, &e), KILN_E_SHAPE);
  assert_non_null(strstr(e.message, "\"tags\""));
  io.data[0] = &W.tags;
  io.n = 2;
  assert_int_equal(kiln_calibrate_io(W.g, &io, &co, &bad, &e), KILN_E_INVALID);
  assert_int_equal(kiln_calibrate(W.g, &W.title, &co, &bad, &e), KILN_E_UNSUPPORTED);
  assert_non_null(strstr(e.message, "kiln_calibrate_io"));

  kiln_quantize_options qo;
  kiln_quantize_options_init(&qo);
  kiln_ir_graph *q = NULL;
  kiln_quant_report rep;
  OK(kiln_quantize(W.g, &cal, &qo, &q, &rep, E));
  assert_int_equal(rep.n_layers, 3);
  for (int i = 0; i < rep.n_layers; i++) assert_true(rep.layers[i].quantized);
  int concat_float = 0;
  for (int i = 0; i < rep.n_float; i++)
    if (!strcmp(rep.kept_float[i].op, "Concat")) concat_float = 1;
  assert_true(concat_float);
  char *text = kiln_quant_report_format(&rep);
  assert_non_null(strstr(text, "concatenate/Concat"));
  assert_non_null(strstr(text, "department/Softmax"));
  assert_non_null(strstr(text, "priority/Sigmoid"));
  fputs(text, stderr);
  free(text);
  float *p = malloc(ROWS * sizeof(float)), *d = malloc(ROWS * 4 * sizeof(float));
  run_graph(q, p, d);
  double dp = max_diff(p, W.ref_p, ROWS), dd = max_diff(d, W.ref_d, ROWS * 4);
  int64_t same = 0;
  for (int64_t i = 0; i < ROWS; i++) same += argmax(d + i * 4, 4) == argmax(W.ref_d + i * 4, 4);
  print_message("int8 vs float: priority max |diff| %.4g, department max |diff| %.4g, "
                "department argmax agreement %.4f\n", dp, dd, (double)same / ROWS);
  assert_true(dp < 0.05 && dd < 0.05);
  assert_true(same >= ROWS * 97 / 100);
  OK(kiln_onnx_write_file(q, in_dir("ticket_int8.onnx"), E));
  free(p);
  free(d);
  kiln_ir_free(q);
  kiln_quant_report_free(&rep);
  kiln_calibration_free(&cal);
}

static void test_quantize_command(void **state) {
  (void)state;
  NEED_KILN();
  result r = run_kiln("quantize ticket.onnx q.onnx --calibrate title=title.npy --calibrate "
                      "tags=tags.npy --calibrate text_body=body.npy --rows 256");
  expect(&r, 0, NULL);
  assert_non_null(strstr(r.out, "concatenate/Concat"));
  result_free(&r);
  r = run_kiln("quantize ticket.onnx q2.onnx --calibrate title=title.npy --calibrate "
               "tags=tags.npy");
  expect(&r, 2, "missing --calibrate text_body=X.npy");
  assert_int_equal(access(in_dir("q2.onnx"), F_OK), -1);
  result_free(&r);
  r = run_kiln("quantize ticket.onnx q2.onnx --calibrate title.npy");
  expect(&r, 2, "give each as --calibrate NAME=X.npy");
  result_free(&r);
  r = run_kiln("quantize ticket.onnx q2.onnx --calibrate title=title.npy --calibrate "
               "tags=body.npy --calibrate text_body=body.npy");
  expect(&r, 2, "\"tags\"");
  result_free(&r);
}

static void test_drift_api(void **state) {
  (void)state;
  kiln_io in, tg;
  memset(&in, 0, sizeof in);
  memset(&tg, 0, sizeof tg);
  in.n = 3;
  in.names[0] = "text_body";
  in.data[0] = &W.body;
  in.names[1] = "tags";
  in.data[1] = &W.tags;
  in.names[2] = "title";
  in.data[2] = &W.title;
  tg.n = 2;
  tg.names[0] = "department";
  tg.data[0] = &W.y_d;
  tg.names[1] = "priority";
  tg.data[1] = &W.y_p;
  kiln_drift_data d;
  memset(&d, 0, sizeof d);
  d.inputs = &in;
  d.targets = &tg;
  kiln_drift_options o;
  kiln_drift_options_init(&o);
  o.min_agreement = 0.97;
  kiln_drift_report *r = NULL;
  kiln_drift_model ref = {in_dir("ticket.onnx"), NULL, NULL};
  kiln_drift_model cand = {in_dir("ticket_int8.onnx"), NULL, NULL};
  OK(kiln_drift_run(&ref, &cand, &d, &o, &r, E));
  assert_int_equal(r->n_outputs, 2);
  assert_string_equal(r->outputs[0].name, "priority");
  assert_int_equal(r->outputs[0].metric, KILN_DRIFT_MAE);      /* from kiln.loss.priority */
  assert_string_equal(r->outputs[1].name, "department");
  assert_int_equal(r->outputs[1].metric, KILN_DRIFT_ACCURACY); /* sparse_categorical_crossentropy */
  assert_int_equal(r->outputs[1].n_classes, 4);
  assert_true(r->outputs[1].agreement >= 0.97);
  assert_true(r->outputs[0].max_abs_diff < 0.05);
  assert_true(r->n_layers == 3); /* the three Gemm layers, dequantized */
  print_message("drift int8: priority mae %.4f -> %.4f (agreement %.4f), department %.4f -> %.4f "
                "(agreement %.4f)\n",
                r->outputs[0].reference_metric, r->outputs[0].candidate_metric,
                r->outputs[0].agreement, r->outputs[1].reference_metric,
                r->outputs[1].candidate_metric, r->outputs[1].agreement);
  kiln_drift_report_free(r);
  /* one output chosen, its own metric and threshold; labels by position */
  kiln_drift_output_options oo;
  kiln_drift_output_options_init(&oo);
  oo.output = "department";
  oo.metric = KILN_DRIFT_TOP_K;
  oo.k = 2;
  oo.min_agreement = 1.01 - 0.01; /* 1.0 */
  o.output_options = &oo;
  o.n_output_options = 1;
  tg.names[0] = tg.names[1] = NULL;
  tg.data[0] = &W.y_p;
  tg.data[1] = &W.y_d;
  OK(kiln_drift_run(&ref, &ref, &d, &o, &r, E));
  assert_int_equal(r->n_outputs, 1);
  assert_int_equal(r->metric, KILN_DRIFT_TOP_K);
  assert_true(r->pass);
  assert_true(r->max_abs_diff == 0);
  kiln_drift_report_free(r);
  /* errors name the output or input */
  kiln_error e = {0};
  oo.output = "dept";
  assert_int_equal(kiln_drift_run(&ref, &cand, &d, &o, &r, &e), KILN_E_INVALID);
  assert_non_null(strstr(e.message, "no output 'dept'"));
  o.n_output_options = 0;
  tg.n = 1;
  assert_int_equal(kiln_drift_run(&ref, &cand, &d, &o, &r, &e), KILN_E_INVALID);
  assert_non_null(strstr(e.message, "output 'department'"));
  tg.n = 2;
  in.names[1] = "tag";
  assert_int_equal(kiln_drift_run(&ref, &cand, &d, &o, &r, &e), KILN_E_INVALID);
  assert_non_null(strstr(e.message, "'tags'"));
}

static void test_drift_command(void **state) {
  (void)state;
  NEED_KILN();
  const char *data = "--data title=title.npy --data text_body=body.npy --data tags=tags.npy "
                     "--labels priority=priority.npy --labels department=department.npy";
  char args[2048];
  snprintf(args, sizeof args, "drift ticket.onnx ticket_int8.onnx %s --min-agreement 0.97 --json "
           "--junit drift.xml", data);
  result r = run_kiln(args);
  expect(&r, 0, NULL);
  assert_non_null(strstr(r.out, "output department (4 columns)"));
  cJSON *j = last_line_json(r.out);
  assert_non_null(j);
  const cJSON *outs = cJSON_GetObjectItem(j, "outputs");
  assert_int_equal(cJSON_GetArraySize(outs), 2);
  assert_string_equal(cJSON_GetObjectItem(cJSON_GetArrayItem(outs, 0), "metric")->valuestring,
                      "mae");
  assert_string_equal(cJSON_GetObjectItem(cJSON_GetArrayItem(outs, 1), "metric")->valuestring,
                      "accuracy");
  assert_true(cJSON_IsTrue(cJSON_GetObjectItem(j, "pass")));
  cJSON_Delete(j);
  result_free(&r);
  char *xml = read_text(in_dir("drift.xml"));
  assert_non_null(xml);
  assert_non_null(strstr(xml, "tests=\"4\" failures=\"0\""));
  assert_non_null(strstr(xml, "department prediction agreement"));
  assert_non_null(strstr(xml, "priority mae drop"));
  free(xml);
  /* one output with its own threshold: int8 cannot keep 100% of priority within 1e-9 */
  snprintf(args, sizeof args, "drift ticket.onnx ticket_int8.onnx %s --output department "
           "--metric accuracy --min-agreement 0.97 --output priority --tolerance 1e-9 "
           "--min-agreement 1 --junit drift.xml", data);
  r = run_kiln(args);
  expect(&r, 1, NULL);
  assert_non_null(strstr(r.out, "NOT MET"));
  result_free(&r);
  xml = read_text(in_dir("drift.xml"));
  assert_non_null(strstr(xml, "failures=\"1\""));
  free(xml);
  snprintf(args, sizeof args, "drift ticket.onnx ticket_int8.onnx %s --output dept", data);
  r = run_kiln(args);
  expect(&r, 2, "no output 'dept'");
  result_free(&r);
  r = run_kiln("drift ticket.onnx ticket_int8.onnx --data title.npy");
  expect(&r, 2, "give each as --data NAME=X.npy");
  result_free(&r);
  r = run_kiln("drift ticket.onnx ticket_int8.onnx --data title=title.npy --data "
               "text_body=body.npy --data tags=tags.npy --labels priority=priority.npy");
  expect(&r, 2, "output 'department'");
  result_free(&r);
  if (!have_ort) {
    print_message("ONNX Runtime part skipped: needs node and onnxruntime-node\n");
    return;
  }
  /* the float file in ONNX Runtime against kiln: the same outputs; the int8 file too */
  snprintf(args, sizeof args, "drift ticket.onnx ticket.onnx %s --runtime ort --ort-script '%s' "
           "--no-layers --json", data, runjs);
  r = run_kiln(args);
  expect(&r, 0, NULL);
  j = last_line_json(r.out);
  outs = cJSON_GetObjectItem(j, "outputs");
  for (int i = 0; i < 2; i++) {
    double md = cJSON_GetObjectItem(cJSON_GetArrayItem(outs, i), "max_abs_diff")->valuedouble;
    if (!(md <= 1e-5)) fail_msg("float kiln vs ORT output %d: max abs diff %.3g", i, md);
  }
  cJSON_Delete(j);
  result_free(&r);
  snprintf(args, sizeof args, "drift ticket_int8.onnx ticket_int8.onnx %s --runtime ort "
           "--ort-script '%s' --no-layers --json --output department --min-agreement 0.99", data,
           runjs);
  r = run_kiln(args);
  expect(&r, 0, NULL);
  j = last_line_json(r.out);
  print_message("int8 kiln vs int8 ORT: department agreement %.4f, max abs diff %.3g\n",
                cJSON_GetObjectItem(j, "agreement")->valuedouble,
                cJSON_GetObjectItem(j, "max_abs_diff")->valuedouble);
  cJSON_Delete(j);
  result_free(&r);
}

/* A trained functional model saved as a checkpoint: `kiln export`, then `kiln predict`
 * equals kiln_model_predict_io. */
static void test_export_command(void **state) {
  (void)state;
  NEED_KILN();
  static const ticket_sizes z = {30, 5, 8, 4};
  kiln_error err = {0};
  kiln_model *m = ticket_model_build(&z, 5, KILN_OPTIMIZER_RMSPROP, &err);
  if (!m) fail_msg("%s", err.message);
  ticket_set d;
  assert_int_equal(ticket_set_make(&d, &z, 50, 0.2, 9), 0);
  kiln_io x, y;
  ticket_inputs(&d, &x, &y);
  kiln_fit_options fo;
  kiln_fit_options_init(&fo);
  fo.batch_size = 10;
  OK(kiln_model_fit_io(m, &x, &y, &fo, NULL, E));
  kiln_matrix want[2];
  memset(want, 0, sizeof want);
  OK(kiln_model_predict_io(m, &x, 50, want, E));
  OK(kiln_model_save(m, in_dir("t.kiln"), E));
  write_npy("t_title.npy", &d.title);
  write_npy("t_body.npy", &d.body);
  write_npy("t_tags.npy", &d.tags);
  result r = run_kiln("export t.kiln t.onnx");
  expect(&r, 0, NULL);
  result_free(&r);
  r = run_kiln("predict t.onnx --input title=t_title.npy --input text_body=t_body.npy "
               "--input tags=t_tags.npy --output-dir tp");
  expect(&r, 0, NULL);
  result_free(&r);
  kiln_matrix p = {0}, q = {0};
  load_npy("tp/priority.npy", &p);
  load_npy("tp/department.npy", &q);
  double dp = max_diff(p.values, want[0].values, 50), dq = max_diff(q.values, want[1].values, 200);
  if (!(dp <= 1e-5 && dq <= 1e-5)) fail_msg("kiln export + predict vs predict_io: %.3g %.3g", dp, dq);
  r = run_kiln("inspect t.onnx");
  expect(&r, 0, NULL);
  assert_non_null(strstr(r.out, "kiln.loss.department = sparse_categorical_crossentropy"));
  result_free(&r);
  kiln_matrix_free(&p);
  kiln_matrix_free(&q);
  kiln_matrix_free(&want[0]);
  kiln_matrix_free(&want[1]);
  ticket_set_free(&d);
  kiln_model_free(m);
}

int main(void) {
  const char *bin = getenv("KILN_BINARY_DIR"), *src = getenv("KILN_SOURCE_DIR");
  snprintf(kiln, sizeof kiln, "%s/tools/kiln", bin ? bin : ".");
  have_kiln = bin && access(kiln, X_OK) == 0;
  char mod[1200];
  snprintf(mod, sizeof mod, "%s/tests/integration/ort/node_modules/onnxruntime-node",
           src ? src : ".");
  snprintf(runjs, sizeof runjs, "%s/tests/integration/ort/run.js", src ? src : ".");
  have_ort = access(mod, R_OK) == 0 && system("node --version >/dev/null 2>&1") == 0;
  if (!have_ort) fprintf(stderr, "ONNX Runtime checks skipped: needs node and %s\n", mod);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_inspect),
      cmocka_unit_test(test_predict),
      cmocka_unit_test(test_calibrate_quantize),
      cmocka_unit_test(test_quantize_command),
      cmocka_unit_test(test_drift_api),
      cmocka_unit_test(test_drift_command),
      cmocka_unit_test(test_export_command),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}

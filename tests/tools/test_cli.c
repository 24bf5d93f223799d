/* The `kiln` command, run as a child process on tiny generated CSV data: the success
 * path writes the History CSV and the model and ends stdout with a JSON line; every
 * failure exits non-zero, names the place on stderr and leaves no output file. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "test_common.h"

#include "../run_kiln.h"
#include <dirent.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "kiln/train.h"

static char kiln_path[1024];



static void write_text(const char *name, const char *text) {
  FILE *f = fopen(in_dir(name), "w");
  assert_non_null(f);
  fputs(text, f);
  assert_int_equal(fclose(f), 0);
}

/* A spec file from single-quoted JSON. */
static void write_spec(const char *name, const char *single_quoted) {
  char *s = strdup(single_quoted);
  assert_non_null(s);
  for (char *p = s; *p; p++)
    if (*p == '\'') *p = '"';
  write_text(name, s);
  free(s);
}

static int exists(const char *name) {
  struct stat st;
  return stat(in_dir(name), &st) == 0;
}

/* Runs kiln with args (NULL-terminated), in the test folder. */
static result run_kiln(const char *const *args) { return run_kiln_in(kiln_path, dir, args); }

static void expect_in(const char *text, const char *what, const char *where) {
  if (!strstr(text, what)) {
    print_error("expected \"%s\" in %s:\n%s\n", what, where, text);
    fail();
  }
}

/* The last line of stdout, parsed as JSON. Caller deletes. */
static cJSON *last_line_json(const char *out) {
  size_t len = strlen(out);
  assert_true(len > 0);
  assert_int_equal(out[len - 1], '\n');
  const char *start = out + len - 1;
  while (start > out && start[-1] != '\n') start--;
  cJSON *j = cJSON_ParseWithLength(start, (size_t)(out + len - 1 - start));
  if (!j) print_error("last line is not JSON: %s\n", start);
  assert_non_null(j);
  return j;
}

static double json_number(const cJSON *obj, const char *key) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
  if (!cJSON_IsNumber(v)) print_error("no number \"%s\"\n", key);
  assert_true(cJSON_IsNumber(v));
  return v->valuedouble;
}

/* --- data ------------------------------------------------------------------- */

/* 64 rows of 4 features; the label is 1 when x0 + x1 > x2 + x3. */
static void write_binary_csv(const char *name, const char *extra_row) {
  FILE *f = fopen(in_dir(name), "w");
  assert_non_null(f);
  fprintf(f, "a,b,c,d,label\n");
  for (int i = 0; i < 64; i++) {
    double x[4];
    for (int k = 0; k < 4; k++) x[k] = (double)((i * (7 + 3 * k) + 5 * k) % 11) / 10.0;
    fprintf(f, "%g,%g,%g,%g,%d\n", x[0], x[1], x[2], x[3], x[0] + x[1] > x[2] + x[3]);
  }
  if (extra_row) fprintf(f, "%s\n", extra_row);
  assert_int_equal(fclose(f), 0);
}

/* 60 rows, 3 classes by the larger of two features; a regression target in column 2. */
static void write_multi_csv(const char *name) {
  FILE *f = fopen(in_dir(name), "w");
  assert_non_null(f);
  fprintf(f, "u,v,price,class\n");
  for (int i = 0; i < 60; i++) {
    double u = (double)(i % 10) / 10.0, v = (double)((i * 7) % 10) / 10.0;
    int c = u > v + 0.2 ? 0 : v > u + 0.2 ? 1 : 2;
    fprintf(f, "%g,%g,%g,%d\n", u, v, 100000.0 * (1.0 + u + 2.0 * v), c);
  }
  assert_int_equal(fclose(f), 0);
}

#define BINARY_SPEC                                                                          \
  "{'name': 'tiny', 'seed': 7,"                                                             \
  " 'layers': [{'type': 'Input', 'shape': [4]},"                                            \
  "   {'type': 'Dense', 'units': 8, 'activation': 'relu', 'kernel_regularizer': {'l2': 0.001}}," \
  "   {'type': 'Dropout', 'rate': 0.1},"                                                    \
  "   {'type': 'Dense', 'units': 1, 'activation': 'sigmoid'}],"                             \
  " 'compile': {'optimizer': 'adam', 'learning_rate': 0.01, 'loss': 'binary_crossentropy',"  \
  "   'metrics': ['accuracy']},"                                                            \
  " 'fit': {'epochs': 3, 'batch_size': 16, 'validation_split': 0.25, 'verbose': 0}}"

static int setup(void **state) {
  (void)state;
  snprintf(dir, sizeof dir, "/tmp/kiln-cli-XXXXXX");
  if (!mkdtemp(dir)) return -1;
  write_binary_csv("data.csv", NULL);
  write_spec("spec.json", BINARY_SPEC);
  return 0;
}

static int teardown(void **state) {
  (void)state;
  DIR *d = opendir(dir);
  if (d) {
    struct dirent *e;
    while ((e = readdir(d)))
      if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) unlink(in_dir(e->d_name));
    closedir(d);
  }
  rmdir(dir);
  return 0;
}

/* --- the success path -------------------------------------------------------- */

static void test_help_and_version(void **state) {
  (void)state;
  result r = run_kiln((const char *[]){"--help", NULL});
  assert_int_equal(r.code, 0);
  expect_in(r.out, "train", "kiln --help");
  expect_in(r.out, "summary", "kiln --help");
  result_free(&r);
  r = run_kiln((const char *[]){"--version", NULL});
  assert_int_equal(r.code, 0);
  expect_in(r.out, "kiln ", "kiln --version");
  result_free(&r);
  r = run_kiln((const char *[]){"train", "--help", NULL});
  assert_int_equal(r.code, 0);
  expect_in(r.out, "--history", "kiln train --help");
  expect_in(r.out, "--validation-split", "kiln train --help");
  result_free(&r);
  r = run_kiln((const char *[]){"summary", "--help", NULL});
  assert_int_equal(r.code, 0);
  expect_in(r.out, "--input-features", "kiln summary --help");
  result_free(&r);
  r = run_kiln((const char *[]){NULL});
  assert_int_equal(r.code, 2);
  result_free(&r);
  r = run_kiln((const char *[]){"trian", NULL});
  assert_int_equal(r.code, 2);
  expect_in(r.err, "unknown command \"trian\"", "stderr");
  result_free(&r);
  r = run_kiln((const char *[]){"train", "spec.json", "--data", "data.csv", "--bogus", NULL});
  assert_int_equal(r.code, 2);
  expect_in(r.err, "unknown option \"--bogus\"", "stderr");
  result_free(&r);
  r = run_kiln((const char *[]){"train", "--data", "data.csv", NULL});
  assert_int_equal(r.code, 2);
  expect_in(r.err, "missing SPEC.json", "stderr");
  result_free(&r);
  r = run_kiln((const char *[]){"train", "spec.json", NULL});
  assert_int_equal(r.code, 2);
  expect_in(r.err, "--data", "stderr");
  result_free(&r);
  r = run_kiln((const char *[]){"train", "spec.json", "--data", NULL});
  assert_int_equal(r.code, 2);
  expect_in(r.err, "--data needs a value", "stderr");
  result_free(&r);
}

static void test_train_writes_history_model_and_json(void **state) {
  (void)state;
  result r = run_kiln((const char *[]){"train", "spec.json", "--data", "data.csv", "--history",
                                       "history.csv", "--output", "model.kiln", "--json", NULL});
  if (r.code != 0) print_error("stderr: %s\n", r.err);
  assert_int_equal(r.code, 0);

  char *csv = read_text(in_dir("history.csv"));
  assert_non_null(csv);
  assert_memory_equal(csv, "epoch,", 6);
  expect_in(csv, "loss", "history.csv");
  expect_in(csv, "accuracy", "history.csv");
  expect_in(csv, "val_loss", "history.csv");
  int lines = 0;
  for (const char *p = csv; *p; p++) lines += *p == '\n';
  assert_int_equal(lines, 1 + 3);
  free(csv);

  kiln_model *m = NULL;
  kiln_error err = {0};
  assert_int_equal(kiln_model_load(in_dir("model.kiln"), &m, &err), KILN_OK);
  assert_int_equal(kiln_model_input_features(m), 4);
  assert_int_equal(kiln_model_output_features(m), 1);
  kiln_model_free(m);

  cJSON *j = last_line_json(r.out);
  assert_int_equal((int)json_number(j, "epochs"), 3);
  assert_true(json_number(j, "seconds") >= 0);
  const cJSON *train = cJSON_GetObjectItemCaseSensitive(j, "train");
  assert_true(cJSON_IsObject(train));
  double loss = json_number(train, "loss");
  assert_true(loss > 0 && loss < 10);
  double acc = json_number(train, "accuracy");
  assert_true(acc >= 0 && acc <= 1);
  const cJSON *val = cJSON_GetObjectItemCaseSensitive(j, "val");
  assert_true(cJSON_IsObject(val));
  json_number(val, "loss");
  json_number(val, "accuracy");
  assert_true(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(j, "test"))); /* a file has no test split */
  assert_string_equal(cJSON_GetObjectItemCaseSensitive(j, "output")->valuestring, "model.kiln");
  assert_string_equal(cJSON_GetObjectItemCaseSensitive(j, "history")->valuestring, "history.csv");
  cJSON_Delete(j);
  result_free(&r);

  /* The saved model summarises, as does the spec (given the width it lacks). */
  r = run_kiln((const char *[]){"summary", "model.kiln", NULL});
  assert_int_equal(r.code, 0);
  expect_in(r.out, "dense_1", "summary of model.kiln");
  expect_in(r.out, "Total params", "summary of model.kiln");
  result_free(&r);
  r = run_kiln((const char *[]){"summary", "spec.json", NULL});
  assert_int_equal(r.code, 0);
  expect_in(r.out, "dropout", "summary of spec.json");
  result_free(&r);
  r = run_kiln((const char *[]){"summary", "model.kiln", "--input-features", "5", NULL});
  assert_int_equal(r.code, 2);
  result_free(&r);

  /* Flags override the spec; the same seed gives the same figures. */
  r = run_kiln((const char *[]){"train", "spec.json", "--data", "data.csv", "--epochs", "2",
                                "--batch-size", "8", "--validation-split", "0", "--seed", "11",
                                "--verbose", "2", "--json", NULL});
  assert_int_equal(r.code, 0);
  expect_in(r.err, "Epoch 2/2", "stderr (progress)");
  j = last_line_json(r.out);
  assert_int_equal((int)json_number(j, "epochs"), 2);
  assert_true(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(j, "val")));
  double first = json_number(cJSON_GetObjectItemCaseSensitive(j, "train"), "loss");
  cJSON_Delete(j);
  result_free(&r);
  r = run_kiln((const char *[]){"train", "spec.json", "--data", "data.csv", "--epochs=2",
                                "--batch-size=8", "--validation-split=0", "--seed=11",
                                "--verbose=0", "--json", NULL});
  assert_int_equal(r.code, 0);
  assert_string_equal(r.err, ""); /* verbose 0: nothing on stderr */
  j = last_line_json(r.out);
  assert_float_equal(json_number(cJSON_GetObjectItemCaseSensitive(j, "train"), "loss"), first, 0);
  cJSON_Delete(j);
  result_free(&r);
}

/* --checkpoint-dir writes a training state every epoch; --resume continues from it to
 * the same model, byte for byte, as an uninterrupted run. */
static void test_train_resume(void **state) {
  (void)state;
  result r = run_kiln((const char *[]){"train", "spec.json", "--data", "data.csv", "--epochs", "5",
                                       "--output", "full.kiln", NULL});
  if (r.code != 0) print_error("stderr: %s\n", r.err);
  assert_int_equal(r.code, 0);
  result_free(&r);
  r = run_kiln((const char *[]){"train", "spec.json", "--data", "data.csv", "--epochs", "2",
                                "--checkpoint-dir", "ck", NULL});
  if (r.code != 0) print_error("stderr: %s\n", r.err);
  assert_int_equal(r.code, 0);
  result_free(&r);
  assert_true(exists("ck/state.kstate"));
  r = run_kiln((const char *[]){"train", "spec.json", "--data", "data.csv", "--epochs", "5",
                                "--resume", "ck", "--checkpoint-dir", "ck", "--output",
                                "resumed.kiln", "--history", "resumed.csv", "--json", NULL});
  if (r.code != 0) print_error("stderr: %s\n", r.err);
  assert_int_equal(r.code, 0);
  cJSON *j = last_line_json(r.out);
  assert_int_equal((int)json_number(j, "epochs"), 3); /* epochs 3..5 */
  cJSON_Delete(j);
  result_free(&r);
  FILE *fa = fopen(in_dir("full.kiln"), "rb"), *fb = fopen(in_dir("resumed.kiln"), "rb");
  assert_non_null(fa);
  assert_non_null(fb);
  int ca, cb;
  long at = 0;
  do {
    ca = fgetc(fa);
    cb = fgetc(fb);
    if (ca != cb) fail_msg("full.kiln and resumed.kiln differ at byte %ld", at);
    at++;
  } while (ca != EOF);
  fclose(fa);
  fclose(fb);
  /* The state now holds 5 epochs: asking for no more is a clear error. */
  r = run_kiln((const char *[]){"train", "spec.json", "--data", "data.csv", "--epochs", "5",
                                "--resume", "ck/state.kstate", NULL});
  assert_int_equal(r.code, 2);
  expect_in(r.err, "already run 5 epochs", "stderr");
  result_free(&r);
  /* A model checkpoint is not a training state; --seed conflicts with --resume. */
  r = run_kiln((const char *[]){"train", "spec.json", "--data", "data.csv", "--resume",
                                "full.kiln", NULL});
  assert_int_equal(r.code, 2);
  expect_in(r.err, "full.kiln", "stderr");
  expect_in(r.err, "training state", "stderr");
  result_free(&r);
  r = run_kiln((const char *[]){"train", "spec.json", "--data", "data.csv", "--resume", "ck",
                                "--seed", "3", NULL});
  assert_int_equal(r.code, 2);
  expect_in(r.err, "--seed", "stderr");
  result_free(&r);
  r = run_kiln((const char *[]){"train", "spec.json", "--data", "data.csv", "--resume",
                                "missing_dir", NULL});
  assert_int_equal(r.code, 2);
  expect_in(r.err, "missing_dir", "stderr");
  result_free(&r);
  r = run_kiln((const char *[]){"train", "--help", NULL});
  expect_in(r.out, "--resume", "kiln train --help");
  expect_in(r.out, "--checkpoint-dir", "kiln train --help");
  result_free(&r);
  unlink(in_dir("ck/state.kstate"));
  assert_int_equal(rmdir(in_dir("ck")), 0); /* nothing else left in it: no temporaries */
}

static void test_train_categorical_and_regression(void **state) {
  (void)state;
  write_multi_csv("multi.csv");
  /* One-hot targets for categorical_crossentropy; the Input takes the data's width. */
  write_spec("cat.json",
             "{'layers': [{'type': 'Input'}, {'type': 'Dense', 'units': 8, 'activation': 'relu'},"
             " {'type': 'Dense', 'units': 3, 'activation': 'softmax'}],"
             " 'compile': {'optimizer': 'rmsprop', 'loss': 'categorical_crossentropy',"
             " 'metrics': ['accuracy', 'top_2_accuracy']},"
             " 'fit': {'epochs': 2, 'batch_size': 10, 'verbose': 0}}");
  result r = run_kiln((const char *[]){"train", "cat.json", "--data", "multi.csv", "--target",
                                       "class", "--standardize", "--json", NULL});
  if (r.code != 0) print_error("stderr: %s\n", r.err);
  assert_int_equal(r.code, 0);
  cJSON *j = last_line_json(r.out);
  const cJSON *train = cJSON_GetObjectItemCaseSensitive(j, "train");
  assert_true(json_number(train, "accuracy") >= 0);
  assert_true(json_number(train, "top_2_accuracy") >= json_number(train, "accuracy"));
  cJSON_Delete(j);
  result_free(&r);

  /* The same with sparse labels. */
  write_spec("sparse.json",
             "{'layers': [{'type': 'Dense', 'units': 3, 'activation': 'softmax'}],"
             " 'compile': {'loss': 'sparse_categorical_crossentropy', 'metrics': ['accuracy']},"
             " 'fit': {'epochs': 1, 'verbose': 0}}");
  r = run_kiln((const char *[]){"train", "sparse.json", "--data", "multi.csv", "--target", "class",
                                NULL});
  assert_int_equal(r.code, 0);
  result_free(&r);

  /* A CSV's labels are checked against the model's output width, not their own maximum. */
  write_spec("four.json",
             "{'layers': [{'type': 'Dense', 'units': 4, 'activation': 'softmax'}],"
             " 'compile': {'loss': 'sparse_categorical_crossentropy'}, 'fit': {'verbose': 0}}");
  r = run_kiln((const char *[]){"train", "four.json", "--data", "data.csv", "--output", "x.kiln",
                                NULL});
  /* data.csv has labels 0/1 only, which fit in 4 classes: this trains. */
  assert_int_equal(r.code, 0);
  assert_true(exists("x.kiln"));
  unlink(in_dir("x.kiln"));
  result_free(&r);

  /* Regression on a middle column, with scaled targets. */
  write_spec("reg.json",
             "{'layers': [{'type': 'Dense', 'units': 8, 'activation': 'relu'}, {'type': 'Dense', 'units': 1}],"
             " 'compile': {'optimizer': 'adam', 'loss': 'mse', 'metrics': ['mae']},"
             " 'fit': {'epochs': 3, 'batch_size': 8, 'verbose': 0}}");
  r = run_kiln((const char *[]){"train", "reg.json", "--data", "multi.csv", "--target", "price",
                                "--standardize", "--scale-targets", "0.00001", "--json", NULL});
  if (r.code != 0) print_error("stderr: %s\n", r.err);
  assert_int_equal(r.code, 0);
  j = last_line_json(r.out);
  /* Scaled targets are between 1 and 4: an unscaled loss would be ~1e10. */
  assert_true(json_number(cJSON_GetObjectItemCaseSensitive(j, "train"), "loss") < 100);
  cJSON_Delete(j);
  result_free(&r);
}

/* --- failures ---------------------------------------------------------------- */

/* Runs a train that must fail with `code`, mention `place` on stderr and leave neither
 * out.kiln nor hist.csv behind. */
static void expect_failure(const char *const *args, int code, const char *place) {
  const char *argv[32];
  int n = 0;
  for (; args[n]; n++) argv[n] = args[n];
  argv[n++] = "--output";
  argv[n++] = "out.kiln";
  argv[n++] = "--history";
  argv[n++] = "hist.csv";
  argv[n++] = "--json";
  argv[n] = NULL;
  result r = run_kiln(argv);
  if (r.code != code) print_error("exit %d, expected %d; stderr:\n%s\n", r.code, code, r.err);
  assert_int_equal(r.code, code);
  expect_in(r.err, place, "stderr");
  expect_in(r.err, "error", "stderr");
  assert_false(exists("out.kiln"));
  assert_false(exists("hist.csv"));
  /* and no temporary beside them */
  DIR *d = opendir(dir);
  struct dirent *e;
  while ((e = readdir(d))) assert_null(strstr(e->d_name, ".tmp"));
  closedir(d);
  result_free(&r);
}

/* --prune: every Dense kernel reaches the target (40 and 10 weights: 80% is exact) and
 * --json reports it; a sparsity outside [0, 1) is a usage error naming the flag. */
static void test_train_prune(void **state) {
  (void)state;
  write_spec("prune.json",
             "{'name': 'tiny_prune', 'seed': 3,"
             " 'layers': [{'type': 'Input', 'shape': [4]},"
             "   {'type': 'Dense', 'units': 10, 'activation': 'relu'},"
             "   {'type': 'Dense', 'units': 1, 'activation': 'sigmoid'}],"
             " 'compile': {'optimizer': 'adam', 'learning_rate': 0.01,"
             "   'loss': 'binary_crossentropy', 'metrics': ['accuracy']},"
             " 'fit': {'epochs': 20, 'batch_size': 16, 'verbose': 0}}");
  const char *ok[] = {"train", "prune.json", "--data", "data.csv", "--prune", "0.8", "--json",
                      NULL};
  result r = run_kiln(ok);
  if (r.code != 0) print_error("stderr:\n%s\n", r.err);
  assert_int_equal(r.code, 0);
  expect_in(r.out, "sparsity: ", "stdout");
  cJSON *j = last_line_json(r.out);
  const cJSON *sp = cJSON_GetObjectItemCaseSensitive(j, "sparsity");
  assert_true(cJSON_IsObject(sp));
  assert_int_equal(cJSON_GetArraySize(sp), 2);
  const cJSON *layer;
  cJSON_ArrayForEach(layer, sp) {
    assert_true(cJSON_IsNumber(layer));
    if (layer->valuedouble < 0.79) print_error("%s: sparsity %g\n", layer->string, layer->valuedouble);
    assert_true(layer->valuedouble >= 0.79);
  }
  const cJSON *pr = cJSON_GetObjectItemCaseSensitive(j, "prune");
  assert_true(json_number(pr, "applied") >= 0.79);
  /* 4 steps an epoch, 20 epochs: the ramp ends at 2/3 of the 80 steps */
  assert_int_equal((int)json_number(pr, "end_step"), 53);
  cJSON_Delete(j);
  result_free(&r);

  const char *bad[] = {"train", "prune.json", "--data", "data.csv", "--prune", "1.5", "--output",
                       "m.kiln", NULL};
  r = run_kiln(bad);
  assert_int_equal(r.code, 2);
  expect_in(r.err, "--prune", "stderr");
  assert_false(exists("m.kiln"));
  result_free(&r);

  /* kiln quantize --prune-block: KxN, with --prune, not with --structured */
  const char *b1[] = {"quantize", "in.onnx", "q.onnx", "--calibrate", "data.csv", "--prune", "0.8",
                      "--prune-block", "4x", NULL};
  const char *b2[] = {"quantize", "in.onnx", "q.onnx", "--calibrate", "data.csv", "--prune-block",
                      "4x16", NULL};
  const char *b3[] = {"quantize", "in.onnx", "q.onnx", "--calibrate", "data.csv", "--prune", "0.8",
                      "--prune-block", "4x16", "--structured", NULL};
  const char **bads[] = {b1, b2, b3};
  const char *says[] = {"expected KxN", "need --prune", "exclude each other"};
  for (int i = 0; i < 3; i++) {
    r = run_kiln(bads[i]);
    assert_int_equal(r.code, 2);
    expect_in(r.err, says[i], "stderr");
    assert_false(exists("q.onnx"));
    result_free(&r);
  }
}

static void test_bad_spec(void **state) {
  (void)state;
  write_spec("bad.json",
             "{'layers': [{'type': 'Input', 'shape': [4]},"
             " {'type': 'Dense', 'units': 8, 'activation': 'relu'},"
             " {'type': 'Dense', 'units': 1, 'activation': 'rellu'}],"
             " 'compile': {'loss': 'binary_crossentropy'}}");
  expect_failure((const char *[]){"train", "bad.json", "--data", "data.csv", NULL}, 2,
                 "bad.json: layers[2].activation: unknown activation \"rellu\"");
  write_text("syntax.json", "{\n  \"layers\": [\n    {\"type\": \"Dense\", \"units\": 1,}\n  ]\n}\n");
  expect_failure((const char *[]){"train", "syntax.json", "--data", "data.csv", NULL}, 2,
                 "syntax.json: JSON syntax error at byte");
  expect_failure((const char *[]){"train", "nospec.json", "--data", "data.csv", NULL}, 2,
                 "nospec.json");
}

/* Functional specs: one input and one output train from --data; several are shown by
 * summary and refused by train with what to do instead. */
static void test_functional_spec(void **state) {
  (void)state;
  write_spec("one.json",
             "{'seed': 2, 'inputs': [{'name': 'x', 'shape': [4]}],"
             " 'layers': [{'type': 'Dense', 'name': 'h', 'units': 8, 'activation': 'relu',"
             "  'inputs': ['x']}, {'type': 'Dense', 'name': 'y', 'units': 1,"
             "  'activation': 'sigmoid', 'inputs': ['h']}], 'outputs': ['y'],"
             " 'compile': {'loss': 'binary_crossentropy', 'metrics': ['accuracy']},"
             " 'fit': {'epochs': 2, 'verbose': 0}}");
  result r = run_kiln((const char *[]){"train", "one.json", "--data", "data.csv", "--json", NULL});
  if (r.code != 0) print_error("stderr: %s\n", r.err);
  assert_int_equal(r.code, 0);
  result_free(&r);
  write_spec("ticket.json",
             "{'inputs': [{'name': 'title', 'shape': [6]}, {'name': 'tags', 'shape': [2]}],"
             " 'layers': [{'type': 'Concatenate', 'name': 'features', 'inputs': ['title', 'tags']},"
             "  {'type': 'Dense', 'name': 'priority', 'units': 1, 'inputs': ['features']},"
             "  {'type': 'Dense', 'name': 'department', 'units': 3, 'activation': 'softmax',"
             "   'inputs': ['features']}], 'outputs': ['priority', 'department'],"
             " 'compile': {'loss': {'priority': 'mse',"
             "  'department': 'sparse_categorical_crossentropy'}}}");
  r = run_kiln((const char *[]){"summary", "ticket.json", NULL});
  assert_int_equal(r.code, 0);
  expect_in(r.out, "features (Concatenate)", "kiln summary");
  expect_in(r.out, "(None, 8)", "kiln summary");
  result_free(&r);
  expect_failure((const char *[]){"train", "ticket.json", "--data", "data.csv", NULL}, 2,
                 "ticket.json: a functional spec with 2 inputs and 2 outputs: give each its "
                 "data with --x");
  /* Data by name (Keras' fit(x={...}, y={...})) from .npy files. */
  kiln_matrix title, tags, prio, dept;
  assert_int_equal(kiln_matrix_alloc(&title, 64, 6, NULL), KILN_OK);
  assert_int_equal(kiln_matrix_alloc(&tags, 64, 2, NULL), KILN_OK);
  assert_int_equal(kiln_matrix_alloc(&prio, 64, 1, NULL), KILN_OK);
  assert_int_equal(kiln_matrix_alloc(&dept, 64, 1, NULL), KILN_OK);
  for (int i = 0; i < 64; i++) {
    for (int j = 0; j < 6; j++) title.values[i * 6 + j] = (float)((i * (j + 3)) % 5) / 4.0f;
    tags.values[i * 2] = (float)(i % 2);
    tags.values[i * 2 + 1] = (float)(i % 3 == 0);
    prio.values[i] = 0.5f * title.values[i * 6];
    dept.values[i] = (float)(i % 3);
  }
  assert_int_equal(kiln_npy_write(in_dir("title.npy"), &title, NULL), KILN_OK);
  assert_int_equal(kiln_npy_write(in_dir("tags.npy"), &tags, NULL), KILN_OK);
  assert_int_equal(kiln_npy_write(in_dir("prio.npy"), &prio, NULL), KILN_OK);
  assert_int_equal(kiln_npy_write(in_dir("dept.npy"), &dept, NULL), KILN_OK);
  kiln_matrix *ms[] = {&title, &tags, &prio, &dept};
  for (int i = 0; i < 4; i++) kiln_matrix_free(ms[i]);
  r = run_kiln((const char *[]){"train", "ticket.json", "--x", "tags=tags.npy", "--x",
                                "title=title.npy", "--y", "department=dept.npy", "--y",
                                "priority=prio.npy", "--epochs", "3", "--validation-split",
                                "0.25", "--verbose", "0", "--history", "h.csv", "--output",
                                "ticket.kiln", "--json", NULL});
  if (r.code != 0) print_error("stderr: %s\n", r.err);
  assert_int_equal(r.code, 0);
  cJSON *j = last_line_json(r.out);
  assert_int_equal((int)json_number(j, "epochs"), 3);
  const cJSON *train = cJSON_GetObjectItemCaseSensitive(j, "train");
  const cJSON *val = cJSON_GetObjectItemCaseSensitive(j, "val");
  assert_true(json_number(train, "priority_loss") >= 0);
  assert_true(json_number(val, "department_loss") >= 0);
  cJSON_Delete(j);
  result_free(&r);
  assert_true(exists("h.csv"));
  kiln_model *m = NULL;
  assert_int_equal(kiln_model_load(in_dir("ticket.kiln"), &m, NULL), KILN_OK);
  assert_int_equal(kiln_model_input_count(m), 2);
  assert_int_equal(kiln_model_output_count(m), 2);
  kiln_model_free(m);
  /* Errors: a name the model lacks, a missing --y, combinations. */
  expect_failure((const char *[]){"train", "ticket.json", "--x", "tags=tags.npy", "--x",
                                  "titel=title.npy", "--y", "department=dept.npy", "--y",
                                  "priority=prio.npy", "--verbose", "0", NULL},
                 2, "titel");
  expect_failure((const char *[]){"train", "ticket.json", "--x", "tags=tags.npy", NULL}, 2,
                 "--x and --y go together");
  expect_failure((const char *[]){"train", "ticket.json", "--x", "tags", NULL}, 2,
                 "--x: expected NAME=FILE.npy");
  expect_failure((const char *[]){"train", "ticket.json", "--data", "data.csv", "--x",
                                  "tags=tags.npy", "--y", "priority=prio.npy", NULL},
                 2, "--data cannot be combined with --x/--y");
  /* ONNX: the same training (same seed) written as .onnx runs in kiln's runtime (kiln
   * predict) with the outputs predict_io gives on the .kiln. */
  const char *outs[2] = {"t.kiln", "t.onnx"};
  for (int k = 0; k < 2; k++) {
    r = run_kiln((const char *[]){"train", "ticket.json", "--x", "tags=tags.npy", "--x",
                                  "title=title.npy", "--y", "department=dept.npy", "--y",
                                  "priority=prio.npy", "--epochs", "2", "--seed", "3",
                                  "--verbose", "0", "--output", outs[k], NULL});
    if (r.code != 0) print_error("stderr: %s\n", r.err);
    assert_int_equal(r.code, 0);
    result_free(&r);
  }
  r = run_kiln((const char *[]){"predict", "t.onnx", "--input", "title=title.npy", "--input",
                                "tags=tags.npy", "--output-dir", "t_out", NULL});
  if (r.code != 0) print_error("stderr: %s\n", r.err);
  assert_int_equal(r.code, 0);
  result_free(&r);
  assert_int_equal(kiln_model_load(in_dir("t.kiln"), &m, NULL), KILN_OK);
  kiln_matrix xs[2], want[2];
  assert_int_equal(kiln_npy_read(in_dir("title.npy"), &xs[0], NULL), KILN_OK);
  assert_int_equal(kiln_npy_read(in_dir("tags.npy"), &xs[1], NULL), KILN_OK);
  kiln_io xio;
  memset(&xio, 0, sizeof xio);
  xio.n = 2;
  xio.names[0] = "title";
  xio.names[1] = "tags";
  xio.data[0] = &xs[0];
  xio.data[1] = &xs[1];
  memset(want, 0, sizeof want);
  assert_int_equal(kiln_model_predict_io(m, &xio, 64, want, NULL), KILN_OK);
  const char *npys[2] = {"t_out/priority.npy", "t_out/department.npy"};
  for (int k = 0; k < 2; k++) {
    kiln_matrix got;
    assert_int_equal(kiln_npy_read(in_dir(npys[k]), &got, NULL), KILN_OK);
    assert_int_equal(got.rows, want[k].rows);
    assert_int_equal(got.cols, want[k].cols);
    for (int64_t i = 0; i < got.rows * got.cols; i++)
      assert_true(fabsf(got.values[i] - want[k].values[i]) <= 1e-5f);
    kiln_matrix_free(&got);
    kiln_matrix_free(&want[k]);
    kiln_matrix_free(&xs[k]);
    unlink(in_dir(npys[k]));
  }
  rmdir(in_dir("t_out")); /* teardown removes files only */
  kiln_model_free(m);
  expect_failure((const char *[]){"train", "ticket.json", "--x", "tags=none.npy", "--y",
                                  "priority=prio.npy", NULL},
                 2, "--x tags");
}

static void test_missing_data_file(void **state) {
  (void)state;
  expect_failure((const char *[]){"train", "spec.json", "--data", "missing.csv", NULL}, 2,
                 "missing.csv");
  expect_failure((const char *[]){"train", "spec.json", "--data", "no_such_dataset", NULL}, 2,
                 "no_such_dataset");
}

static void test_label_outside_range(void **state) {
  (void)state;
  write_binary_csv("labels.csv", "0.1,0.2,0.3,0.4,2");
  /* The bad label is on line 66 (header, 64 rows, then this one). */
  expect_failure((const char *[]){"train", "spec.json", "--data", "labels.csv", NULL}, 2,
                 "labels.csv:66");
  write_binary_csv("negative.csv", "0.1,0.2,0.3,0.4,-1");
  expect_failure((const char *[]){"train", "spec.json", "--data", "negative.csv", NULL}, 2,
                 "negative.csv:66");
}

static void test_wrong_width(void **state) {
  (void)state;
  write_spec("wide.json",
             "{'layers': [{'type': 'Input', 'shape': [5]},"
             " {'type': 'Dense', 'units': 1, 'activation': 'sigmoid'}],"
             " 'compile': {'loss': 'binary_crossentropy'}}");
  expect_failure((const char *[]){"train", "wide.json", "--data", "data.csv", NULL}, 2,
                 "wide.json: layers[0].shape");
  /* A ragged row is the data's fault, with its line. */
  write_binary_csv("ragged.csv", "0.1,0.2,0.3,1");
  expect_failure((const char *[]){"train", "spec.json", "--data", "ragged.csv", NULL}, 2,
                 "ragged.csv:66");
}

static void test_nan_feature(void **state) {
  (void)state;
  write_binary_csv("nan.csv", "0.1,nan,0.3,0.4,1");
  expect_failure((const char *[]){"train", "spec.json", "--data", "nan.csv", NULL}, 2,
                 "nan.csv:66");
  write_binary_csv("empty_cell.csv", "0.1,,0.3,0.4,1");
  expect_failure((const char *[]){"train", "spec.json", "--data", "empty_cell.csv", NULL}, 2,
                 "empty_cell.csv:66");
  /* An empty cell can be filled with the column's median instead. */
  result r = run_kiln((const char *[]){"train", "spec.json", "--data", "empty_cell.csv",
                                       "--missing", "median", "--output", "out.kiln", NULL});
  if (r.code != 0) print_error("stderr: %s\n", r.err);
  assert_int_equal(r.code, 0);
  assert_true(exists("out.kiln"));
  result_free(&r);
}

static void test_batch_size_zero(void **state) {
  (void)state;
  write_spec("zero.json",
             "{'layers': [{'type': 'Dense', 'units': 1, 'activation': 'sigmoid'}],"
             " 'compile': {'loss': 'binary_crossentropy'}, 'fit': {'batch_size': 0}}");
  expect_failure((const char *[]){"train", "zero.json", "--data", "data.csv", NULL}, 2,
                 "zero.json: fit.batch_size");
  expect_failure((const char *[]){"train", "spec.json", "--data", "data.csv", "--batch-size", "0",
                                  NULL},
                 2, "--batch-size");
  expect_failure((const char *[]){"train", "spec.json", "--data", "data.csv", "--epochs", "-1",
                                  NULL},
                 2, "--epochs");
  expect_failure((const char *[]){"train", "spec.json", "--data", "data.csv",
                                  "--validation-split", "1", NULL},
                 2, "--validation-split");
  expect_failure((const char *[]){"train", "spec.json", "--data", "data.csv", "--verbose", "x",
                                  NULL},
                 2, "--verbose");
}

static void test_other_failures(void **state) {
  (void)state;
  /* Targets scaled for a classification loss. */
  expect_failure((const char *[]){"train", "spec.json", "--data", "data.csv", "--scale-targets",
                                  "2", NULL},
                 2, "--scale-targets");
  /* A target column that does not exist, and a classification loss on prices. */
  write_multi_csv("multi.csv");
  expect_failure((const char *[]){"train", "spec.json", "--data", "multi.csv", "--target", "nope",
                                  NULL},
                 2, "multi.csv:1: no column named 'nope'");
  expect_failure((const char *[]){"train", "spec.json", "--data", "multi.csv", "--target", "price",
                                  NULL},
                 2, "multi.csv:2: column 'price' (the target): label");
  /* Training that diverges: exit 1, and no file. */
  write_spec("diverge.json",
             "{'layers': [{'type': 'Dense', 'units': 1}],"
             " 'compile': {'optimizer': 'sgd', 'learning_rate': 1e30, 'loss': 'mse'},"
             " 'fit': {'epochs': 3, 'batch_size': 4, 'verbose': 0}}");
  expect_failure((const char *[]){"train", "diverge.json", "--data", "multi.csv", "--target",
                                  "price", NULL},
                 1, "diverged");
  /* An output folder that does not exist fails before training. */
  result r = run_kiln((const char *[]){"train", "spec.json", "--data", "data.csv", "--history",
                                       "hist.csv", "--output", "no/such/folder/out.kiln", NULL});
  assert_int_equal(r.code, 2);
  expect_in(r.err, "--output no/such/folder/out.kiln", "stderr");
  assert_false(exists("hist.csv"));
  result_free(&r);
  /* A file that existed before a failing run is left as it was. */
  write_text("out.kiln", "old");
  r = run_kiln((const char *[]){"train", "zero.json", "--data", "data.csv", "--output", "out.kiln",
                                NULL});
  assert_int_equal(r.code, 2);
  char *old = read_text(in_dir("out.kiln"));
  assert_string_equal(old, "old");
  free(old);
  unlink(in_dir("out.kiln"));
  result_free(&r);
}

int main(void) {
  const char *bin = getenv("KILN_BINARY_DIR");
  if (!bin) {
    fprintf(stderr, "KILN_BINARY_DIR is not set (run under ctest): skipped\n");
    return 77;
  }
  snprintf(kiln_path, sizeof kiln_path, "%s/tools/kiln", bin);
  if (access(kiln_path, X_OK) != 0) {
    fprintf(stderr, "%s is not built: skipped\n", kiln_path);
    return 77;
  }
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_help_and_version, setup, teardown),
      cmocka_unit_test_setup_teardown(test_train_writes_history_model_and_json, setup, teardown),
      cmocka_unit_test_setup_teardown(test_train_resume, setup, teardown),
      cmocka_unit_test_setup_teardown(test_train_categorical_and_regression, setup, teardown),
      cmocka_unit_test_setup_teardown(test_train_prune, setup, teardown),
      cmocka_unit_test_setup_teardown(test_bad_spec, setup, teardown),
      cmocka_unit_test_setup_teardown(test_functional_spec, setup, teardown),
      cmocka_unit_test_setup_teardown(test_missing_data_file, setup, teardown),
      cmocka_unit_test_setup_teardown(test_label_outside_range, setup, teardown),
      cmocka_unit_test_setup_teardown(test_wrong_width, setup, teardown),
      cmocka_unit_test_setup_teardown(test_nan_feature, setup, teardown),
      cmocka_unit_test_setup_teardown(test_batch_size_zero, setup, teardown),
      cmocka_unit_test_setup_teardown(test_other_failures, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

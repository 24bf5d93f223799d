/* The ONNX round trip of the book's models: trained a few steps (on the real data
 * when $KILN_DATA_DIR has it, else on synthetic data), exported as Gemm and as
 * MatMul+Add at opsets 13 and 17, then
 *   - kiln's runtime on the .onnx equals kiln_model_predict (batches 1, 33, 1024),
 *   - run_tokens equals run for the text models,
 *   - onnx.checker.check_model accepts every file (Debian python3-onnx),
 *   - ONNX Runtime (tests/integration/ort, onnxruntime-node) gives the same outputs,
 *   - PyTorch-written models (tests/integration/torch/fixtures) give torch's outputs,
 *   - the kiln command exports, inspects and predicts.
 * Every comparison is within 1e-5 max abs. The parts whose tool is absent (python3
 * with onnx, node_modules) skip with a message; everything skips (77) while the
 * runtime reports it is unavailable. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "kiln/data.h"
#include "kiln/export.h"
#include "kiln/infer.h"
#include "kiln/train.h"

#define TOL 1e-5
#define TEST_ROWS 1024
#define TRAIN_ROWS 512
#define ORT_ROWS 257

/* Test-program state: the scratch folder and the figures for the final report. */
static char tmpdir[256];
static double max_vs_trainer, max_tokens_vs_run, max_vs_ort, max_vs_torch;
static int n_checked_files, n_ort_files, n_torch_files;

static const char *source_dir(void) {
  const char *s = getenv("KILN_SOURCE_DIR");
  return s && *s ? s : ".";
}

static const char *binary_dir(void) {
  const char *s = getenv("KILN_BINARY_DIR");
  return s && *s ? s : ".";
}

static int exists(const char *path) {
  return access(path, F_OK) == 0;
}

static int run_cmd(const char *cmd) {
  int rc = system(cmd);
  if (rc == -1 || !WIFEXITED(rc)) return -1;
  return WEXITSTATUS(rc);
}

/* --- the runtime: available yet? ----------------------------------------------- */

static int runtime_state; /* 0 unknown, 1 available, -1 unavailable */
static char runtime_why[KILN_ERROR_MESSAGE_MAX + 64];

static int runtime_available(void) {
  if (runtime_state) return runtime_state > 0;
  kiln_model *m = NULL;
  kiln_error err = {0};
  assert_int_equal(kiln_model_create(1, &m, &err), KILN_OK);
  assert_int_equal(kiln_model_add_input(m, 3, &err), KILN_OK);
  assert_int_equal(kiln_model_add_dense(m, 2, KILN_ACTIVATION_RELU, &err), KILN_OK);
  char path[512];
  snprintf(path, sizeof path, "%s/probe.onnx", tmpdir);
  kiln_status s = kiln_model_export(m, NULL, path, &err);
  kiln_model_free(m);
  if (s == KILN_E_UNSUPPORTED) {
    snprintf(runtime_why, sizeof runtime_why, "the ONNX writer is unavailable: %s", err.message);
    runtime_state = -1;
    return 0;
  }
  if (s) fail_msg("export: %s", err.message);
  kiln_session *sess = NULL;
  s = kiln_session_create_from_file(path, NULL, &sess, &err);
  if (s == KILN_E_UNSUPPORTED) {
    snprintf(runtime_why, sizeof runtime_why, "the runtime is unavailable: %s", err.message);
    runtime_state = -1;
    return 0;
  }
  if (s) fail_msg("session on %s: %s", path, err.message);
  kiln_session_free(sess);
  runtime_state = 1;
  return 1;
}

#define NEED_RUNTIME()                             \
  do {                                             \
    if (!runtime_available()) {                    \
      print_message("skipped: %s\n", runtime_why); \
      skip();                                      \
    }                                              \
  } while (0)

/* --- data ------------------------------------------------------------------------ */

typedef enum book_kind {
  BOOK_IMDB,
  BOOK_REUTERS,
  BOOK_HOUSING,
  BOOK_FASHION,
  BOOK_DROPOUT
} book_kind;

typedef struct book_data {
  kiln_matrix train_x, train_y; /* train_x dense or CSR */
  kiln_matrix test_x;           /* TEST_ROWS dense rows */
  kiln_sequences test_seq;      /* text models: the same rows as token ids */
  kiln_matrix test_y;           /* labels (rows x 1) when real data gave them */
  int real;
} book_data;

static void book_data_free(book_data *d) {
  kiln_matrix_free(&d->train_x);
  kiln_matrix_free(&d->train_y);
  kiln_matrix_free(&d->test_x);
  kiln_matrix_free(&d->test_y);
  free(d->test_seq.offsets);
  free(d->test_seq.tokens);
  memset(d, 0, sizeof *d);
}

static uint64_t rng_next(uint64_t *s) {
  *s ^= *s << 13;
  *s ^= *s >> 7;
  *s ^= *s << 17;
  return *s;
}

static float rng_uniform(uint64_t *s) {
  return (float)(rng_next(s) >> 40) / (float)(1 << 24);
}

static float rng_normal(uint64_t *s) {
  float u = rng_uniform(s) + 1e-7f, v = rng_uniform(s);
  return sqrtf(-2.0f * logf(u)) * cosf(6.2831853f * v);
}

/* Random token sequences of 10..200 ids in [1, 10000). */
static void synth_sequences(kiln_sequences *seq, int64_t count, uint64_t *rng) {
  seq->count = count;
  seq->offsets = malloc((size_t)(count + 1) * sizeof(int64_t));
  assert_non_null(seq->offsets);
  seq->offsets[0] = 0;
  for (int64_t i = 0; i < count; i++)
    seq->offsets[i + 1] = seq->offsets[i] + 10 + (int64_t)(rng_next(rng) % 191);
  seq->tokens = malloc((size_t)seq->offsets[count] * sizeof(int32_t));
  assert_non_null(seq->tokens);
  for (int64_t k = 0; k < seq->offsets[count]; k++)
    seq->tokens[k] = 1 + (int32_t)(rng_next(rng) % 9999);
}

/* CSR or dense -> dense. */
static void densify(const kiln_matrix *src, kiln_matrix *dst) {
  kiln_error err = {0};
  assert_int_equal(kiln_matrix_alloc(dst, src->rows, src->cols, &err), KILN_OK);
  if (!kiln_matrix_is_sparse(src)) {
    memcpy(dst->values, src->values, (size_t)(src->rows * src->cols) * sizeof(float));
    return;
  }
  for (int64_t r = 0; r < src->rows; r++)
    for (int64_t k = src->row_ptr[r]; k < src->row_ptr[r + 1]; k++)
      dst->values[r * src->cols + src->col_idx[k]] = src->values ? src->values[k] : 1.0f;
}

static void copy_sequences(const kiln_sequences *src, kiln_sequences *dst) {
  dst->count = src->count;
  dst->offsets = malloc((size_t)(src->count + 1) * sizeof(int64_t));
  dst->tokens = malloc((size_t)(src->offsets[src->count] + 1) * sizeof(int32_t));
  assert_non_null(dst->offsets);
  assert_non_null(dst->tokens);
  memcpy(dst->offsets, src->offsets, (size_t)(src->count + 1) * sizeof(int64_t));
  memcpy(dst->tokens, src->tokens, (size_t)src->offsets[src->count] * sizeof(int32_t));
}

/* Rows 0..n of a split, cycling when it has fewer. */
static void take_cycled(const kiln_dataset *src, int64_t n, kiln_dataset *dst) {
  int64_t rows = src->y.rows;
  int64_t *idx = malloc((size_t)n * sizeof *idx);
  assert_non_null(idx);
  for (int64_t i = 0; i < n; i++) idx[i] = i % rows;
  kiln_error err = {0};
  if (kiln_dataset_take(src, idx, n, dst, &err)) fail_msg("take: %s", err.message);
  free(idx);
}

static const char *const DATASETS[] = {"imdb", "reuters", "california_housing", "fashion_mnist",
                                       NULL};

static int load_real(book_kind kind, book_data *d) {
  if (!DATASETS[kind]) return 0;
  kiln_load_options lo;
  kiln_load_options_init(&lo);
  lo.num_words = 10000;
  lo.missing = KILN_MISSING_IMPUTE_MEDIAN;
  kiln_dataset train = {0}, test = {0}, tr = {0}, te = {0};
  kiln_error err = {0};
  if (kiln_dataset_load(DATASETS[kind], &lo, &train, &test, &err)) {
    print_message("%s: synthetic data (%s)\n", DATASETS[kind], err.message);
    return 0;
  }
  take_cycled(&train, TRAIN_ROWS, &tr);
  take_cycled(test.y.rows ? &test : &train, TEST_ROWS, &te);
  kiln_dataset_free(&train);
  kiln_dataset_free(&test);
  if (kind == BOOK_HOUSING) {
    kiln_standardizer st = {0};
    assert_int_equal(kiln_standardizer_fit(&st, &tr.x, &err), KILN_OK);
    assert_int_equal(kiln_standardizer_apply(&st, &tr.x, &err), KILN_OK);
    assert_int_equal(kiln_standardizer_apply(&st, &te.x, &err), KILN_OK);
    kiln_standardizer_free(&st);
    kiln_matrix_scale(&tr.y, 1e-5f);
    kiln_matrix_scale(&te.y, 1e-5f);
  }
  d->train_x = tr.x;
  d->train_y = tr.y;
  memset(&tr.x, 0, sizeof tr.x);
  memset(&tr.y, 0, sizeof tr.y);
  densify(&te.x, &d->test_x);
  if (te.seq.count) copy_sequences(&te.seq, &d->test_seq);
  d->test_y = te.y;
  memset(&te.y, 0, sizeof te.y);
  kiln_dataset_free(&tr);
  kiln_dataset_free(&te);
  d->real = 1;
  return 1;
}

static void synth(book_kind kind, book_data *d) {
  uint64_t rng = 0x9E3779B97F4A7C15ull + (uint64_t)kind;
  kiln_error err = {0};
  int64_t features = kind == BOOK_HOUSING ? 8 : kind == BOOK_FASHION ? 784 : 20;
  int64_t classes = kind == BOOK_IMDB      ? 2
                    : kind == BOOK_REUTERS ? 46
                    : kind == BOOK_FASHION ? 10
                                           : 3;
  if (kind == BOOK_IMDB || kind == BOOK_REUTERS) {
    kiln_sequences tr = {0};
    synth_sequences(&tr, TRAIN_ROWS, &rng);
    assert_int_equal(kiln_multi_hot(&tr, 10000, &d->train_x, &err), KILN_OK);
    free(tr.offsets);
    free(tr.tokens);
    synth_sequences(&d->test_seq, TEST_ROWS, &rng);
    kiln_matrix csr = {0};
    assert_int_equal(kiln_multi_hot(&d->test_seq, 10000, &csr, &err), KILN_OK);
    densify(&csr, &d->test_x);
    kiln_matrix_free(&csr);
  } else {
    assert_int_equal(kiln_matrix_alloc(&d->train_x, TRAIN_ROWS, features, &err), KILN_OK);
    assert_int_equal(kiln_matrix_alloc(&d->test_x, TEST_ROWS, features, &err), KILN_OK);
    kiln_matrix *xs[2] = {&d->train_x, &d->test_x};
    for (int k = 0; k < 2; k++)
      for (int64_t i = 0; i < xs[k]->rows * features; i++)
        xs[k]->values[i] = kind == BOOK_FASHION ? rng_uniform(&rng) : rng_normal(&rng);
  }
  assert_int_equal(kiln_matrix_alloc(&d->train_y, TRAIN_ROWS, 1, &err), KILN_OK);
  for (int64_t r = 0; r < TRAIN_ROWS; r++) {
    if (kind == BOOK_HOUSING) {
      const float *x = d->train_x.values + r * features;
      d->train_y.values[r] = 2.0f + 0.5f * x[0] - 0.3f * x[3] + 0.1f * x[7];
    } else {
      d->train_y.values[r] = (float)(rng_next(&rng) % (uint64_t)classes);
    }
  }
}

/* --- the models -------------------------------------------------------------------- */

static const char *const BOOK_NAMES[] = {"imdb", "reuters", "housing", "fashion", "dropout"};

static kiln_model *build_book(book_kind kind) {
  kiln_model *m = NULL;
  kiln_error err = {0};
  assert_int_equal(kiln_model_create(42, &m, &err), KILN_OK);
  kiln_loss loss = KILN_LOSS_SPARSE_CATEGORICAL_CROSSENTROPY;
  const char *metric = "accuracy";
  switch (kind) {
    case BOOK_IMDB:
      assert_int_equal(kiln_model_add_input(m, 10000, &err), KILN_OK);
      assert_int_equal(kiln_model_add_dense(m, 16, KILN_ACTIVATION_RELU, &err), KILN_OK);
      assert_int_equal(kiln_model_add_dense(m, 16, KILN_ACTIVATION_RELU, &err), KILN_OK);
      assert_int_equal(kiln_model_add_dense(m, 1, KILN_ACTIVATION_SIGMOID, &err), KILN_OK);
      loss = KILN_LOSS_BINARY_CROSSENTROPY;
      break;
    case BOOK_REUTERS:
      assert_int_equal(kiln_model_add_input(m, 10000, &err), KILN_OK);
      assert_int_equal(kiln_model_add_dense(m, 64, KILN_ACTIVATION_RELU, &err), KILN_OK);
      assert_int_equal(kiln_model_add_dense(m, 64, KILN_ACTIVATION_RELU, &err), KILN_OK);
      assert_int_equal(kiln_model_add_dense(m, 46, KILN_ACTIVATION_SOFTMAX, &err), KILN_OK);
      break;
    case BOOK_HOUSING:
      assert_int_equal(kiln_model_add_input(m, 8, &err), KILN_OK);
      assert_int_equal(kiln_model_add_dense(m, 64, KILN_ACTIVATION_RELU, &err), KILN_OK);
      assert_int_equal(kiln_model_add_dense(m, 64, KILN_ACTIVATION_RELU, &err), KILN_OK);
      assert_int_equal(kiln_model_add_dense(m, 1, KILN_ACTIVATION_LINEAR, &err), KILN_OK);
      loss = KILN_LOSS_MEAN_SQUARED_ERROR;
      metric = "mae";
      break;
    case BOOK_FASHION:
      assert_int_equal(kiln_model_add_input(m, 784, &err), KILN_OK);
      assert_int_equal(kiln_model_add_dense(m, 512, KILN_ACTIVATION_RELU, &err), KILN_OK);
      assert_int_equal(kiln_model_add_dense(m, 10, KILN_ACTIVATION_SOFTMAX, &err), KILN_OK);
      break;
    case BOOK_DROPOUT:
      assert_int_equal(kiln_model_add_input(m, 20, &err), KILN_OK);
      assert_int_equal(kiln_model_add_dense(m, 32, KILN_ACTIVATION_TANH, &err), KILN_OK);
      assert_int_equal(kiln_model_add_dropout(m, 0.5f, &err), KILN_OK);
      assert_int_equal(kiln_model_add_dense(m, 32, KILN_ACTIVATION_RELU, &err), KILN_OK);
      assert_int_equal(kiln_model_add_dropout(m, 0.3f, &err), KILN_OK);
      assert_int_equal(kiln_model_add_dense(m, 3, KILN_ACTIVATION_SOFTMAX, &err), KILN_OK);
      break;
  }
  kiln_optimizer opt;
  kiln_optimizer_init(&opt, kind == BOOK_IMDB || kind == BOOK_REUTERS ? KILN_OPTIMIZER_RMSPROP
                                                                      : KILN_OPTIMIZER_ADAM);
  const char *metrics[1] = {metric};
  assert_int_equal(kiln_model_compile(m, &opt, loss, metrics, 1, &err), KILN_OK);
  return m;
}

/* --- comparisons ------------------------------------------------------------------- */

static double max_abs_diff(const float *a, const float *b, int64_t n) {
  double worst = 0;
  for (int64_t i = 0; i < n; i++) {
    double d = fabs((double)a[i] - (double)b[i]);
    if (!(d <= worst)) worst = d; /* NaN wins */
  }
  return worst;
}

static void write_npy_rows(const char *path, const kiln_matrix *x, int64_t rows) {
  kiln_matrix view = {.rows = rows, .cols = x->cols, .values = x->values, .borrowed = 1};
  kiln_error err = {0};
  if (kiln_npy_write(path, &view, &err)) fail_msg("%s", err.message);
}

static int have_python_onnx(void) {
  static const char *const probe = "/usr/bin/python3 -c 'import onnx' >/dev/null 2>&1";
  return run_cmd(probe) == 0;
}

static int have_ort(char *runjs, size_t cap) { /* runjs: at least 1024 bytes */
  char mod[1024];
  snprintf(mod, sizeof mod, "%s/tests/integration/ort/node_modules/onnxruntime-node", source_dir());
  snprintf(runjs, cap, "%s/tests/integration/ort/run.js", source_dir());
  return exists(mod) && run_cmd("node --version >/dev/null 2>&1") == 0;
}

/* onnx.checker (with shape inference) on every file; 0 ok. */
static void onnx_check(char paths[][512], int n) {
  if (!have_python_onnx()) {
    print_message(
        "onnx.checker skipped: /usr/bin/python3 cannot import onnx "
        "(apt-get install python3-onnx)\n");
    return;
  }
  char cmd[8192];
  int len = snprintf(cmd, sizeof cmd,
                     "/usr/bin/python3 -c 'import onnx, sys\n"
                     "for f in sys.argv[1:]:\n"
                     "    onnx.checker.check_model(onnx.load(f), full_check=True)\n'");
  for (int i = 0; i < n; i++)
    len += snprintf(cmd + len, sizeof cmd - (size_t)len, " '%s'", paths[i]);
  assert_true(len < (int)sizeof cmd);
  int rc = run_cmd(cmd);
  if (rc != 0) fail_msg("onnx.checker rejected one of the files (exit %d): %s", rc, cmd);
  n_checked_files += n;
}

/* Runs rows [begin, begin+rows) of x through the session; the output goes to out. */
static void session_rows(kiln_session *s, const kiln_matrix *x, int64_t begin, int64_t rows,
                         float *out, int64_t out_cols) {
  kiln_tensor_view in = {0}, o = {0};
  in.dtype = KILN_DTYPE_FLOAT;
  in.rank = 2;
  in.dims[0] = rows;
  in.dims[1] = x->cols;
  in.data = x->values + begin * x->cols;
  kiln_error err = {0};
  if (kiln_session_run(s, &in, 1, &o, 1, &err)) fail_msg("run: %s", err.message);
  assert_int_equal(o.dtype, KILN_DTYPE_FLOAT);
  assert_int_equal(o.rank, 2);
  assert_int_equal(o.dims[0], rows);
  assert_int_equal(o.dims[1], out_cols);
  memcpy(out, o.data, (size_t)(rows * out_cols) * sizeof(float));
}

static void check_exported(const char *path, const char *what, book_kind kind, const book_data *d,
                           const kiln_matrix *ref) {
  kiln_error err = {0};
  kiln_session *s = NULL;
  kiln_session_options so;
  kiln_session_options_init(&so);
  so.max_batch = TEST_ROWS;
  if (kiln_session_create_from_file(path, &so, &s, &err)) fail_msg("%s: %s", path, err.message);
  assert_int_equal(kiln_session_input_count(s), 1);
  assert_int_equal(kiln_session_output_count(s), 1);
  const kiln_ir_value *iv = kiln_session_input(s, 0);
  assert_int_equal(iv->rank, 2);
  assert_int_equal(iv->dims[1].value, d->test_x.cols);
  int64_t cols = ref->cols;
  float *got = malloc((size_t)(TEST_ROWS * cols) * sizeof(float));
  assert_non_null(got);
  static const int64_t batches[3] = {1, 33, TEST_ROWS};
  double worst = 0;
  for (int b = 0; b < 3; b++) {
    int64_t bs = batches[b];
    for (int64_t r = 0; r < TEST_ROWS; r += bs) {
      int64_t rows = TEST_ROWS - r < bs ? TEST_ROWS - r : bs;
      session_rows(s, &d->test_x, r, rows, got + r * cols, cols);
    }
    double diff = max_abs_diff(got, ref->values, TEST_ROWS * cols);
    if (diff > worst) worst = diff;
    if (!(diff <= TOL))
      fail_msg("%s %s: runtime vs kiln_model_predict at batch %lld: max abs diff %.3g",
               BOOK_NAMES[kind], what, (long long)bs, diff);
  }
  if (worst > max_vs_trainer) max_vs_trainer = worst;

  if (d->test_seq.count) {
    /* Token rows: the same outputs as the dense multi-hot rows. */
    float *tok = malloc((size_t)(TEST_ROWS * cols) * sizeof(float));
    assert_non_null(tok);
    static const int64_t tb[2] = {33, TEST_ROWS};
    for (int b = 0; b < 2; b++) {
      for (int64_t r = 0; r < TEST_ROWS; r += tb[b]) {
        int64_t rows = TEST_ROWS - r < tb[b] ? TEST_ROWS - r : tb[b];
        int64_t *off = malloc((size_t)(rows + 1) * sizeof(int64_t));
        assert_non_null(off);
        for (int64_t i = 0; i <= rows; i++)
          off[i] = d->test_seq.offsets[r + i] - d->test_seq.offsets[r];
        kiln_tensor_view o = {0};
        if (kiln_session_run_tokens(s, off, d->test_seq.tokens + d->test_seq.offsets[r], rows, &o,
                                    1, &err))
          fail_msg("%s: run_tokens: %s", path, err.message);
        assert_int_equal(o.dims[0], rows);
        memcpy(tok + r * cols, o.data, (size_t)(rows * cols) * sizeof(float));
        free(off);
      }
      double diff = max_abs_diff(tok, got, TEST_ROWS * cols);
      if (diff > max_tokens_vs_run) max_tokens_vs_run = diff;
      if (!(diff <= TOL))
        fail_msg("%s %s: run_tokens vs run: max abs diff %.3g", BOOK_NAMES[kind], what, diff);
    }
    free(tok);
  }

  char runjs[1024];
  if (have_ort(runjs, sizeof runjs)) {
    char xin[600], yout[600], cmd[4096 + 1024];
    snprintf(xin, sizeof xin, "%s/ort_x.npy", tmpdir);
    snprintf(yout, sizeof yout, "%s/ort_y.npy", tmpdir);
    write_npy_rows(xin, &d->test_x, ORT_ROWS);
    snprintf(cmd, sizeof cmd, "node '%s' '%s' '%s' '%s'", runjs, path, xin, yout);
    int rc = run_cmd(cmd);
    if (rc != 0) fail_msg("ONNX Runtime failed on %s (exit %d)", path, rc);
    kiln_matrix y = {0};
    if (kiln_npy_read(yout, &y, &err)) fail_msg("%s", err.message);
    assert_int_equal(y.rows, ORT_ROWS);
    assert_int_equal(y.cols, cols);
    double diff = max_abs_diff(y.values, got, ORT_ROWS * cols);
    if (diff > max_vs_ort) max_vs_ort = diff;
    if (!(diff <= TOL))
      fail_msg("%s %s: kiln vs ONNX Runtime: max abs diff %.3g", BOOK_NAMES[kind], what, diff);
    n_ort_files++;
    kiln_matrix_free(&y);
    remove(xin);
    remove(yout);
  }
  free(got);
  kiln_session_free(s);
}

static void roundtrip(book_kind kind) {
  NEED_RUNTIME();
  book_data d = {0};
  if (!load_real(kind, &d)) synth(kind, &d);
  kiln_model *m = build_book(kind);
  kiln_error err = {0};
  kiln_fit_options fo;
  kiln_fit_options_init(&fo);
  fo.epochs = 1;
  fo.batch_size = 128; /* a few steps */
  if (kiln_model_fit(m, &d.train_x, &d.train_y, &fo, NULL, &err)) fail_msg("fit: %s", err.message);
  kiln_matrix ref = {0};
  assert_int_equal(kiln_model_predict(m, &d.test_x, 256, &ref, &err), KILN_OK);

  char paths[4][512];
  int n = 0;
  for (int matmul = 0; matmul < 2; matmul++)
    for (int o = 0; o < 2; o++) {
      int opset = o ? 17 : 13;
      kiln_export_options opt;
      kiln_export_options_init(&opt);
      opt.opset = opset;
      opt.dense_as_matmul = matmul;
      char what[64];
      snprintf(what, sizeof what, "%s opset %d", matmul ? "MatMul+Add" : "Gemm", opset);
      snprintf(paths[n], sizeof paths[n], "%s/%s_%s_%d.onnx", tmpdir, BOOK_NAMES[kind],
               matmul ? "matmul" : "gemm", opset);
      if (kiln_model_export(m, &opt, paths[n], &err)) fail_msg("export %s: %s", what, err.message);
      check_exported(paths[n], what, kind, &d, &ref);
      n++;
    }
  onnx_check(paths, n);
  for (int i = 0; i < n; i++) remove(paths[i]);
  print_message("%s (%s data): runtime == predict, %d files\n", BOOK_NAMES[kind],
                d.real ? "real" : "synthetic", n);
  kiln_matrix_free(&ref);
  kiln_model_free(m);
  book_data_free(&d);
}

static void test_imdb(void **state) {
  (void)state;
  roundtrip(BOOK_IMDB);
}
static void test_reuters(void **state) {
  (void)state;
  roundtrip(BOOK_REUTERS);
}
static void test_housing(void **state) {
  (void)state;
  roundtrip(BOOK_HOUSING);
}
static void test_fashion(void **state) {
  (void)state;
  roundtrip(BOOK_FASHION);
}
static void test_dropout(void **state) {
  (void)state;
  roundtrip(BOOK_DROPOUT);
}

/* --- third-party ONNX: PyTorch's exports ------------------------------------------------ */

static void test_torch_fixtures(void **state) {
  (void)state;
  NEED_RUNTIME();
  static const char *const names[] = {"imdb",           "reuters",        "housing",
                                      "fashion",        "dropout_tanh",   "housing_matmul",
                                      "reuters_matmul", "fashion_flatten"};
  char dir[768];
  snprintf(dir, sizeof dir, "%s/tests/integration/torch/fixtures", source_dir());
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
    char xp[1024], yp[1024], mp[1024];
    snprintf(xp, sizeof xp, "%s/%s_x.npy", dir, names[i]);
    snprintf(yp, sizeof yp, "%s/%s_y.npy", dir, names[i]);
    kiln_matrix x = {0}, y = {0};
    kiln_error err = {0};
    if (kiln_npy_read(xp, &x, &err) || kiln_npy_read(yp, &y, &err))
      fail_msg("fixture %s: %s (regenerate with tests/integration/torch/make_models.py)", names[i],
               err.message);
    for (int opset = 13; opset <= 17; opset += 4) {
      snprintf(mp, sizeof mp, "%s/%s_opset%d.onnx", dir, names[i], opset);
      kiln_session *s = NULL;
      kiln_session_options so;
      kiln_session_options_init(&so);
      so.max_batch = 64;
      if (kiln_session_create_from_file(mp, &so, &s, &err)) fail_msg("%s: %s", mp, err.message);
      /* The input's own rank: the Flatten model takes (rows, 28, 28). */
      const kiln_ir_value *iv = kiln_session_input(s, 0);
      kiln_tensor_view in = {0}, o = {0};
      in.dtype = KILN_DTYPE_FLOAT;
      in.rank = iv->rank;
      in.dims[0] = x.rows;
      int64_t per_row = 1;
      for (int k = 1; k < iv->rank; k++) {
        in.dims[k] = iv->dims[k].value;
        per_row *= iv->dims[k].value;
      }
      assert_int_equal(per_row, x.cols);
      in.data = x.values;
      if (kiln_session_run(s, &in, 1, &o, 1, &err)) fail_msg("%s: run: %s", mp, err.message);
      assert_int_equal(o.dims[0], y.rows);
      int64_t n = 1;
      for (int k = 0; k < o.rank; k++) n *= o.dims[k];
      assert_int_equal(n, y.rows * y.cols);
      double diff = max_abs_diff(o.data, y.values, n);
      if (diff > max_vs_torch) max_vs_torch = diff;
      if (!(diff <= TOL)) fail_msg("%s: kiln vs torch: max abs diff %.3g", mp, diff);
      n_torch_files++;
      kiln_session_free(s);
    }
    kiln_matrix_free(&x);
    kiln_matrix_free(&y);
  }
}

/* --- the kiln command ---------------------------------------------------------------- */

static char *slurp(const char *path) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  char *s = malloc((size_t)n + 1);
  assert_non_null(s);
  size_t got = fread(s, 1, (size_t)n, f);
  s[got] = '\0';
  fclose(f);
  return s;
}

/* Runs `kiln ARGS` with stdout and stderr into files; returns the exit status. */
static int kiln_cmd(const char *args, char **out, char **errtext) {
  char cmd[4096], o[600], e[600];
  snprintf(o, sizeof o, "%s/cli.out", tmpdir);
  snprintf(e, sizeof e, "%s/cli.err", tmpdir);
  snprintf(cmd, sizeof cmd, "'%s/tools/kiln' %s >'%s' 2>'%s'", binary_dir(), args, o, e);
  int rc = run_cmd(cmd);
  if (out) *out = slurp(o);
  if (errtext) *errtext = slurp(e);
  return rc;
}

static void test_cli(void **state) {
  (void)state;
  char kiln[1024];
  snprintf(kiln, sizeof kiln, "%s/tools/kiln", binary_dir());
  if (!exists(kiln)) {
    print_message("skipped: %s is not built\n", kiln);
    skip();
  }
  NEED_RUNTIME();
  char args[4096], csv[600], spec[600], ckpt[600], onnx[600], x[600], y[600], ycsv[600];
  snprintf(csv, sizeof csv, "%s/data.csv", tmpdir);
  snprintf(spec, sizeof spec, "%s/spec.json", tmpdir);
  snprintf(ckpt, sizeof ckpt, "%s/m.kiln", tmpdir);
  snprintf(onnx, sizeof onnx, "%s/m.onnx", tmpdir);
  snprintf(x, sizeof x, "%s/x.npy", tmpdir);
  snprintf(y, sizeof y, "%s/y.npy", tmpdir);
  snprintf(ycsv, sizeof ycsv, "%s/y.csv", tmpdir);
  FILE *f = fopen(csv, "w");
  assert_non_null(f);
  fprintf(f, "a,b,c,d,label\n");
  uint64_t rng = 7;
  for (int r = 0; r < 120; r++) {
    float v[4];
    for (int k = 0; k < 4; k++) v[k] = rng_normal(&rng);
    fprintf(f, "%g,%g,%g,%g,%d\n", v[0], v[1], v[2], v[3], (v[0] + v[1] > 0) + (v[2] > 0.5f));
  }
  fclose(f);
  f = fopen(spec, "w");
  assert_non_null(f);
  fprintf(f,
          "{\"seed\": 3, \"layers\": [{\"type\": \"Input\"},"
          " {\"type\": \"Dense\", \"units\": 8, \"activation\": \"relu\", \"name\": \"hidden\"},"
          " {\"type\": \"Dropout\", \"rate\": 0.2},"
          " {\"type\": \"Dense\", \"units\": 3, \"activation\": \"softmax\", \"name\": \"probs\"}],"
          " \"compile\": {\"optimizer\": \"adam\", \"loss\": \"sparse_categorical_crossentropy\","
          " \"metrics\": [\"accuracy\"]}, \"fit\": {\"epochs\": 2, \"batch_size\": 16}}\n");
  fclose(f);
  char *out = NULL, *errt = NULL;

  /* train --output .kiln keeps the checkpoint; --output .onnx exports. */
  snprintf(args, sizeof args, "train '%s' --data '%s' --verbose 0 --output '%s'", spec, csv, ckpt);
  int rc = kiln_cmd(args, &out, &errt);
  if (rc != 0) fail_msg("kiln %s -> %d: %s", args, rc, errt);
  free(out);
  free(errt);
  snprintf(args, sizeof args, "train '%s' --data '%s' --verbose 0 --output '%s'", spec, csv, onnx);
  rc = kiln_cmd(args, &out, &errt);
  if (rc != 0) fail_msg("kiln %s -> %d: %s", args, rc, errt);
  assert_non_null(strstr(out, onnx));
  free(out);
  free(errt);
  kiln_ir_graph *g = NULL;
  kiln_error err = {0};
  if (kiln_onnx_read_file(onnx, &g, &err)) fail_msg("%s", err.message);
  assert_string_equal(g->outputs[0].name, "probs");
  assert_string_equal(kiln_ir_get_meta(g, "kiln.loss"), "sparse_categorical_crossentropy");
  kiln_ir_free(g);

  /* export: checkpoint -> .onnx with options, then inspect it. */
  snprintf(args, sizeof args, "export '%s' '%s' --opset 17 --matmul --class-names low,mid,high",
           ckpt, onnx);
  rc = kiln_cmd(args, &out, &errt);
  if (rc != 0) fail_msg("kiln %s -> %d: %s", args, rc, errt);
  free(out);
  free(errt);
  snprintf(args, sizeof args, "inspect '%s'", onnx);
  rc = kiln_cmd(args, &out, &errt);
  if (rc != 0) fail_msg("kiln %s -> %d: %s", args, rc, errt);
  assert_non_null(strstr(out, "MatMul"));
  assert_non_null(strstr(out, "probs"));
  assert_non_null(strstr(out, "kiln.class_names"));
  free(out);
  free(errt);
  snprintf(args, sizeof args, "inspect '%s' --json", onnx);
  rc = kiln_cmd(args, &out, &errt);
  if (rc != 0) fail_msg("kiln %s -> %d: %s", args, rc, errt);
  assert_non_null(strstr(out, "\"opset\":17"));
  assert_non_null(strstr(out, "\"parameters\":67"));
  free(out);
  free(errt);

  /* predict: CSV in, .npy out; then a .npy in, CSV out. */
  snprintf(args, sizeof args, "predict '%s' --input '%s' --output '%s' --batch 7", onnx, csv, y);
  rc = kiln_cmd(args, &out, &errt);
  if (rc != 0) fail_msg("kiln %s -> %d: %s", args, rc, errt);
  assert_non_null(strstr(out, "accuracy"));
  free(out);
  free(errt);
  kiln_matrix pred = {0}, ref = {0};
  assert_int_equal(kiln_npy_read(y, &pred, &err), KILN_OK);
  assert_int_equal(pred.rows, 120);
  assert_int_equal(pred.cols, 3);
  kiln_model *m = NULL;
  kiln_dataset ds = {0};
  assert_int_equal(kiln_model_load(ckpt, &m, &err), KILN_OK);
  assert_int_equal(kiln_csv_load(csv, NULL, &ds, &err), KILN_OK);
  assert_int_equal(kiln_model_predict(m, &ds.x, 32, &ref, &err), KILN_OK);
  double diff = max_abs_diff(pred.values, ref.values, 360);
  if (!(diff <= TOL)) fail_msg("kiln predict vs kiln_model_predict: %.3g", diff);
  assert_int_equal(kiln_npy_write(x, &ds.x, &err), KILN_OK);
  snprintf(args, sizeof args, "predict '%s' --input '%s' --output '%s' --threads 2", onnx, x, ycsv);
  rc = kiln_cmd(args, &out, &errt);
  if (rc != 0) fail_msg("kiln %s -> %d: %s", args, rc, errt);
  free(out);
  free(errt);
  char *text = slurp(ycsv);
  assert_non_null(text);
  int lines = 0;
  for (char *p = text; *p; p++) lines += *p == '\n';
  assert_int_equal(lines, 121); /* header + rows */
  assert_non_null(strstr(text, "low,mid,high"));
  free(text);
  kiln_matrix_free(&pred);
  kiln_matrix_free(&ref);
  kiln_dataset_free(&ds);
  kiln_model_free(m);

  /* Failures: exit 2, a message naming the problem, no output file. */
  char none[600];
  snprintf(none, sizeof none, "%s/none.npy", tmpdir);
  snprintf(args, sizeof args, "predict '%s' --input '%s' --output '%s'", csv, x, none);
  rc = kiln_cmd(args, &out, &errt);
  assert_int_equal(rc, 2);
  assert_false(exists(none));
  free(out);
  free(errt);
  snprintf(args, sizeof args, "predict '%s' --input '%s/missing.npy' --output '%s'", onnx, tmpdir,
           none);
  rc = kiln_cmd(args, &out, &errt);
  assert_int_equal(rc, 2);
  assert_non_null(strstr(errt, "missing.npy"));
  assert_false(exists(none));
  free(out);
  free(errt);
  snprintf(args, sizeof args, "export '%s' '%s' --opset 12", ckpt, none);
  rc = kiln_cmd(args, &out, &errt);
  assert_int_equal(rc, 2);
  assert_non_null(strstr(errt, "--opset"));
  assert_false(exists(none));
  free(out);
  free(errt);
  snprintf(args, sizeof args, "export '%s' '%s' --class-names a,b", ckpt, none);
  rc = kiln_cmd(args, &out, &errt);
  assert_int_equal(rc, 2);
  assert_false(exists(none));
  free(out);
  free(errt);
  snprintf(args, sizeof args, "inspect '%s'", csv);
  rc = kiln_cmd(args, &out, &errt);
  assert_int_equal(rc, 2);
  free(out);
  free(errt);
  snprintf(args, sizeof args, "inspect");
  rc = kiln_cmd(args, &out, &errt);
  assert_int_equal(rc, 2);
  free(out);
  free(errt);
  rc = kiln_cmd("export --help", &out, &errt);
  assert_int_equal(rc, 0);
  assert_non_null(strstr(out, "--opset"));
  free(out);
  free(errt);
}

static int setup(void **state) {
  (void)state;
  const char *base = getenv("TMPDIR");
  snprintf(tmpdir, sizeof tmpdir, "%s/kiln-roundtrip-XXXXXX", base && *base ? base : "/tmp");
  return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown(void **state) {
  (void)state;
  char cmd[512];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
  run_cmd(cmd);
  if (runtime_state > 0)
    printf(
        "roundtrip: max abs diff kiln runtime vs trainer %.3g; run_tokens vs run %.3g; "
        "kiln vs ONNX Runtime %.3g (%d files); kiln vs torch %.3g (%d files); "
        "onnx.checker accepted %d files\n",
        max_vs_trainer, max_tokens_vs_run, max_vs_ort, n_ort_files, max_vs_torch, n_torch_files,
        n_checked_files);
  return 0;
}

int main(void) {
  char probe[1024];
  if (!have_ort(probe, sizeof probe))
    printf(
        "ONNX Runtime cross-check skipped: run `npm install --ignore-scripts` in "
        "tests/integration/ort (needs node)\n");
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_imdb),    cmocka_unit_test(test_reuters),
      cmocka_unit_test(test_housing), cmocka_unit_test(test_fashion),
      cmocka_unit_test(test_dropout), cmocka_unit_test(test_torch_fixtures),
      cmocka_unit_test(test_cli),
  };
  int rc = cmocka_run_group_tests(tests, setup, teardown);
  if (rc == 0 && runtime_state < 0) return 77; /* everything skipped */
  return rc;
}

/* Shared by tests/quantize/test_quantize.c and test_prune.c: a synthetic trained
 * classifier, the ONNX Runtime runner and onnx.checker. */
#ifndef KILN_TEST_QUANTIZE_COMMON_H
#define KILN_TEST_QUANTIZE_COMMON_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "kiln/export.h"
#include "kiln/infer.h"
#include "kiln/quantize.h"
#include "kiln/train.h"

#define CHECK(call)                                              \
  do {                                                           \
    kiln_error e_ = {0};                                         \
    kiln_status s_ = (call);                                     \
    (void)e_;                                                    \
    if (s_ != KILN_OK) fail_msg("%s: status %d", #call, (int)s_); \
  } while (0)
#define CHECK_E(call, err)                                                       \
  do {                                                                           \
    if ((call) != KILN_OK) fail_msg("%s: %s", #call, (err)->message);            \
  } while (0)

static inline const char *q_source_dir(void) {
  const char *s = getenv("KILN_SOURCE_DIR");
  return s && *s ? s : ".";
}

static inline int q_run(const char *cmd) {
  int rc = system(cmd);
  if (rc == -1 || !WIFEXITED(rc)) return -1;
  return WEXITSTATUS(rc);
}

static inline int64_t q_file_size(const char *path) {
  struct stat st;
  return stat(path, &st) == 0 ? (int64_t)st.st_size : -1;
}

/* A temp path under $TMPDIR (or /tmp) unique to this process. */
static inline void q_tmp(char *out, size_t cap, const char *name) {
  const char *t = getenv("TMPDIR");
  snprintf(out, cap, "%s/kiln_qtest_%d_%s", t && *t ? t : "/tmp", (int)getpid(), name);
}

static inline int q_have_ort(char *runjs, size_t cap) {
  char mod[1024];
  snprintf(mod, sizeof mod, "%s/tests/integration/ort/node_modules/onnxruntime-node",
           q_source_dir());
  snprintf(runjs, cap, "%s/tests/integration/ort/run.js", q_source_dir());
  if (access(mod, F_OK) != 0 || q_run("node --version >/dev/null 2>&1") != 0) {
    print_message("ONNX Runtime check skipped: %s is absent (npm install --ignore-scripts in "
                  "tests/integration/ort)\n", mod);
    return 0;
  }
  return 1;
}

/* onnx.checker with full_check; skipped with a message when python3-onnx is absent. */
static inline void q_onnx_check(const char *path) {
  if (q_run("/usr/bin/python3 -c 'import onnx' >/dev/null 2>&1") != 0) {
    print_message("onnx.checker skipped: /usr/bin/python3 cannot import onnx "
                  "(apt-get install python3-onnx)\n");
    return;
  }
  char cmd[2048];
  snprintf(cmd, sizeof cmd,
           "/usr/bin/python3 -c 'import onnx,sys; onnx.checker.check_model(onnx.load(sys.argv[1]), "
           "full_check=True)' '%s'",
           path);
  int rc = q_run(cmd);
  if (rc != 0) fail_msg("onnx.checker rejected %s (exit %d)", path, rc);
}

/* Runs model on x with ONNX Runtime; returns the output (rows x cols, caller frees). */
static inline int q_ort_run(const char *runjs, const char *model, const kiln_matrix *x, kiln_matrix *y) {
  char in[512], out[512], cmd[4096];
  q_tmp(in, sizeof in, "ort_in.npy");
  q_tmp(out, sizeof out, "ort_out.npy");
  kiln_error err = {0};
  if (kiln_npy_write(in, x, &err)) fail_msg("%s", err.message);
  snprintf(cmd, sizeof cmd, "node '%s' '%s' '%s' '%s'", runjs, model, in, out);
  int rc = q_run(cmd);
  if (rc != 0) fail_msg("ONNX Runtime failed on %s (exit %d)", model, rc);
  if (kiln_npy_read(out, y, &err)) fail_msg("%s", err.message);
  remove(in);
  remove(out);
  return 0;
}

/* Whether ONNX Runtime's optimized graph of model (what it runs: optimizedModelFilePath)
 * holds the bytes of op type `op` (e.g. "QGemm", "DequantizeLinear"). */
static inline int q_ort_optimized_has(const char *runjs, const char *model, const kiln_matrix *x,
                                      const char *op) {
  char in[512], out[512], opt[512], cmd[4096];
  q_tmp(in, sizeof in, "ortopt_in.npy");
  q_tmp(out, sizeof out, "ortopt_out.npy");
  q_tmp(opt, sizeof opt, "ortopt_model.onnx");
  kiln_error err = {0};
  if (kiln_npy_write(in, x, &err)) fail_msg("%s", err.message);
  snprintf(cmd, sizeof cmd, "KILN_ORT_OPTIMIZED='%s' node '%s' '%s' '%s' '%s'", opt, runjs, model,
           in, out);
  int rc = q_run(cmd);
  if (rc != 0) fail_msg("ONNX Runtime failed on %s (exit %d)", model, rc);
  FILE *f = fopen(opt, "rb");
  if (!f) fail_msg("ONNX Runtime wrote no optimized model %s", opt);
  size_t cap = (size_t)q_file_size(opt), n, len = strlen(op);
  char *buf = malloc(cap + 1);
  if (!buf) fail_msg("out of memory");
  n = fread(buf, 1, cap, f);
  fclose(f);
  int found = 0;
  for (size_t i = 0; !found && i + len <= n; i++) found = memcmp(buf + i, op, len) == 0;
  free(buf);
  remove(in);
  remove(out);
  remove(opt);
  return found;
}

static inline int64_t q_argmax(const float *row, int64_t n) {
  int64_t b = 0;
  for (int64_t i = 1; i < n; i++)
    if (row[i] > row[b]) b = i;
  return b;
}

static inline double q_agreement(const kiln_matrix *a, const kiln_matrix *b) {
  assert_int_equal(a->rows, b->rows);
  assert_int_equal(a->cols, b->cols);
  int64_t same = 0;
  for (int64_t r = 0; r < a->rows; r++)
    same += q_argmax(a->values + r * a->cols, a->cols) == q_argmax(b->values + r * b->cols, b->cols);
  return (double)same / (double)a->rows;
}

/* Synthetic data: `classes` Gaussian blobs in `features` dimensions. */
static inline void q_blobs(int64_t rows, int64_t features, int classes, uint64_t seed, kiln_matrix *x,
                    kiln_matrix *y) {
  kiln_error err = {0};
  if (kiln_matrix_alloc(x, rows, features, &err) || kiln_matrix_alloc(y, rows, 1, &err))
    fail_msg("%s", err.message);
  uint64_t s = seed * 2654435761u + 1;
#define Q_RND() (s = s * 6364136223846793005ull + 1442695040888963407ull, (double)(s >> 11) / 9007199254740992.0)
  for (int64_t r = 0; r < rows; r++) {
    int c = (int)(r % classes);
    y->values[r] = (float)c;
    for (int64_t f = 0; f < features; f++) {
      double u1 = Q_RND(), u2 = Q_RND();
      double n = sqrt(-2.0 * log(u1 + 1e-12)) * cos(6.283185307179586 * u2);
      double centre = ((f * 7 + c * 3) % 5 == 0) ? 2.0 : ((f + c) % 3 == 0 ? -1.5 : 0.0);
      x->values[r * features + f] = (float)(centre + n);
    }
  }
#undef Q_RND
}

/* A trained classifier features -> h1 relu -> h2 relu -> classes softmax, lowered. */
static inline kiln_ir_graph *q_trained_graph(int64_t features, int64_t h1, int64_t h2, int classes,
                                      int epochs, const kiln_matrix *x, const kiln_matrix *y,
                                      kiln_model **model_out) {
  kiln_error err = {0};
  kiln_model *m = NULL;
  CHECK_E(kiln_model_create(7, &m, &err), &err);
  CHECK_E(kiln_model_add_input(m, features, &err), &err);
  CHECK_E(kiln_model_add_dense(m, h1, KILN_ACTIVATION_RELU, &err), &err);
  CHECK_E(kiln_model_add_dense(m, h2, KILN_ACTIVATION_RELU, &err), &err);
  CHECK_E(kiln_model_add_dense(m, classes, KILN_ACTIVATION_SOFTMAX, &err), &err);
  kiln_optimizer o;
  kiln_optimizer_init(&o, KILN_OPTIMIZER_ADAM);
  const char *metrics[1] = {"accuracy"};
  CHECK_E(kiln_model_compile(m, &o, KILN_LOSS_SPARSE_CATEGORICAL_CROSSENTROPY, metrics, 1, &err),
          &err);
  if (epochs > 0) {
    kiln_fit_options fo;
    kiln_fit_options_init(&fo);
    fo.epochs = epochs;
    fo.batch_size = 64;
    CHECK_E(kiln_model_fit(m, x, y, &fo, NULL, &err), &err);
  }
  kiln_ir_graph *g = NULL;
  kiln_export_options eo;
  kiln_export_options_init(&eo);
  CHECK_E(kiln_model_lower(m, &eo, &g, &err), &err);
  if (model_out) *model_out = m;
  else kiln_model_free(m);
  return g;
}

static inline int q_count_op(const kiln_ir_graph *g, const char *op) {
  int c = 0;
  for (int i = 0; i < g->n_nodes; i++) c += strcmp(g->nodes[i].op_type, op) == 0;
  return c;
}

/* Runs g in kiln's float runtime on x. */
static inline void q_kiln_run(const kiln_ir_graph *g, const kiln_matrix *x, kiln_matrix *y) {
  kiln_error err = {0};
  kiln_session *s = NULL;
  kiln_session_options so;
  kiln_session_options_init(&so);
  so.max_batch = x->rows;
  CHECK_E(kiln_session_create(g, &so, &s, &err), &err);
  kiln_tensor_view in = {0}, out = {0};
  in.dtype = KILN_DTYPE_FLOAT;
  in.rank = 2;
  in.dims[0] = x->rows;
  in.dims[1] = x->cols;
  in.data = x->values;
  CHECK_E(kiln_session_run(s, &in, 1, &out, 1, &err), &err);
  CHECK_E(kiln_matrix_alloc(y, out.dims[0], out.dims[1], &err), &err);
  memcpy(y->values, out.data, (size_t)(out.dims[0] * out.dims[1]) * sizeof(float));
  kiln_session_free(s);
}

#endif

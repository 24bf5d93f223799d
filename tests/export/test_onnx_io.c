/* The ONNX writer and reader together: hand-built graphs survive a round trip through
 * a buffer and a file exactly; real files from Debian's libonnx-testdata read into the
 * expected IR; kiln-written files pass onnx.checker (Debian's python3-onnx). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kiln/export.h"
#include "kiln/infer.h"
#include "kiln/ir.h"

#define TESTDATA "/usr/share/libonnx-testdata/data"

#define OK(call)                                                       \
  do {                                                                 \
    kiln_error e_ = {0};                                               \
    kiln_status s_ = (call);                                           \
    if (s_ != KILN_OK) fail_msg("%s: %s", #call, e_.message);          \
  } while (0)
/* The calls below pass &e_ through the macro's err variable. */
#define E (&e_)

/* --- comparing two graphs field by field -------------------------------------- */

static void same_tensor(const kiln_ir_tensor *a, const kiln_ir_tensor *b) {
  assert_string_equal(a->name, b->name);
  assert_int_equal(a->dtype, b->dtype);
  assert_int_equal(a->rank, b->rank);
  for (int i = 0; i < a->rank; i++) assert_int_equal(a->dims[i], b->dims[i]);
  assert_int_equal(a->bytes, b->bytes);
  if (a->bytes) assert_memory_equal(a->data, b->data, a->bytes);
}

static void same_value(const kiln_ir_value *a, const kiln_ir_value *b) {
  assert_string_equal(a->name, b->name);
  assert_int_equal(a->dtype, b->dtype);
  assert_int_equal(a->rank, b->rank);
  for (int i = 0; i < a->rank; i++) {
    assert_int_equal(a->dims[i].value, b->dims[i].value);
    if (a->dims[i].param || b->dims[i].param) {
      assert_non_null(a->dims[i].param);
      assert_non_null(b->dims[i].param);
      assert_string_equal(a->dims[i].param, b->dims[i].param);
    }
  }
}

static void same_attr(const kiln_ir_attr *a, const kiln_ir_attr *b) {
  assert_string_equal(a->name, b->name);
  assert_int_equal(a->type, b->type);
  switch (a->type) {
    case KILN_ATTR_FLOAT: assert_memory_equal(&a->f, &b->f, sizeof a->f); break;
    case KILN_ATTR_INT: assert_int_equal(a->i, b->i); break;
    case KILN_ATTR_STRING: assert_string_equal(a->s, b->s); break;
    case KILN_ATTR_TENSOR:
      assert_int_equal(a->t->dtype, b->t->dtype);
      assert_int_equal(a->t->rank, b->t->rank);
      for (int i = 0; i < a->t->rank; i++) assert_int_equal(a->t->dims[i], b->t->dims[i]);
      assert_int_equal(a->t->bytes, b->t->bytes);
      if (a->t->bytes) assert_memory_equal(a->t->data, b->t->data, a->t->bytes);
      break;
    case KILN_ATTR_FLOATS:
      assert_int_equal(a->n, b->n);
      if (a->n) assert_memory_equal(a->floats, b->floats, (size_t)a->n * sizeof(float));
      break;
    case KILN_ATTR_INTS:
      assert_int_equal(a->n, b->n);
      if (a->n) assert_memory_equal(a->ints, b->ints, (size_t)a->n * sizeof(int64_t));
      break;
    case KILN_ATTR_STRINGS:
      assert_int_equal(a->n, b->n);
      for (int i = 0; i < a->n; i++) assert_string_equal(a->strings[i], b->strings[i]);
      break;
  }
}

static void same_graph(const kiln_ir_graph *a, const kiln_ir_graph *b) {
  assert_string_equal(a->name, b->name);
  assert_int_equal(a->ir_version, b->ir_version);
  assert_string_equal(a->producer_name ? a->producer_name : "", b->producer_name ? b->producer_name : "");
  assert_string_equal(a->producer_version ? a->producer_version : "",
                      b->producer_version ? b->producer_version : "");
  assert_int_equal(a->n_opsets, b->n_opsets);
  for (int i = 0; i < a->n_opsets; i++) {
    assert_string_equal(a->opsets[i].domain, b->opsets[i].domain);
    assert_int_equal(a->opsets[i].version, b->opsets[i].version);
  }
  assert_int_equal(a->n_nodes, b->n_nodes);
  for (int i = 0; i < a->n_nodes; i++) {
    const kiln_ir_node *x = &a->nodes[i], *y = &b->nodes[i];
    assert_string_equal(x->name, y->name);
    assert_string_equal(x->op_type, y->op_type);
    assert_string_equal(x->domain, y->domain);
    assert_int_equal(x->n_inputs, y->n_inputs);
    for (int k = 0; k < x->n_inputs; k++) assert_string_equal(x->inputs[k], y->inputs[k]);
    assert_int_equal(x->n_outputs, y->n_outputs);
    for (int k = 0; k < x->n_outputs; k++) assert_string_equal(x->outputs[k], y->outputs[k]);
    assert_int_equal(x->n_attrs, y->n_attrs);
    for (int k = 0; k < x->n_attrs; k++) same_attr(&x->attrs[k], &y->attrs[k]);
  }
  assert_int_equal(a->n_initializers, b->n_initializers);
  for (int i = 0; i < a->n_initializers; i++) same_tensor(&a->initializers[i], &b->initializers[i]);
  assert_int_equal(a->n_inputs, b->n_inputs);
  for (int i = 0; i < a->n_inputs; i++) same_value(&a->inputs[i], &b->inputs[i]);
  assert_int_equal(a->n_outputs, b->n_outputs);
  for (int i = 0; i < a->n_outputs; i++) same_value(&a->outputs[i], &b->outputs[i]);
  assert_int_equal(a->n_meta, b->n_meta);
  for (int i = 0; i < a->n_meta; i++) {
    assert_string_equal(a->meta[i].key, b->meta[i].key);
    assert_string_equal(a->meta[i].value, b->meta[i].value);
  }
}

/* --- graphs built by hand ------------------------------------------------------- */

/* x[batch, 4] -> Gemm(W[3,4], transB, alpha, beta) + B -> Relu -> Softmax(axis=-1). */
static kiln_ir_graph *gemm_graph(void) {
  kiln_ir_graph *g;
  OK(kiln_ir_create("gemm_relu_softmax", &g, E));
  OK(kiln_ir_set_opset(g, "", 13, E));
  OK(kiln_ir_set_producer(g, "kiln", "0.1.0", E));
  float w[12], b[3] = {0.5f, -1.0f, 2.0f};
  for (int i = 0; i < 12; i++) w[i] = (float)i * 0.25f - 1.0f;
  int64_t wd[2] = {3, 4}, bd[1] = {3};
  OK(kiln_ir_add_initializer(g, "W", KILN_DTYPE_FLOAT, wd, 2, w, E));
  OK(kiln_ir_add_initializer(g, "B", KILN_DTYPE_FLOAT, bd, 1, b, E));
  int64_t xd[2] = {-1, 4}, yd[2] = {-1, 3};
  const char *params[2] = {"batch", NULL};
  OK(kiln_ir_add_input(g, "x", KILN_DTYPE_FLOAT, xd, params, 2, E));
  kiln_ir_node *n;
  const char *gi[3] = {"x", "W", "B"}, *go[1] = {"h"};
  OK(kiln_ir_add_node(g, "Gemm", "dense_1", gi, 3, go, 1, &n, E));
  OK(kiln_ir_node_set_int(n, "transB", 1, E));
  OK(kiln_ir_node_set_float(n, "alpha", 1.5f, E));
  OK(kiln_ir_node_set_float(n, "beta", 0.75f, E));
  const char *ri[1] = {"h"}, *ro[1] = {"r"};
  OK(kiln_ir_add_node(g, "Relu", "relu_1", ri, 1, ro, 1, NULL, E));
  const char *si[1] = {"r"}, *so[1] = {"probs"};
  OK(kiln_ir_add_node(g, "Softmax", "softmax_1", si, 1, so, 1, &n, E));
  OK(kiln_ir_node_set_int(n, "axis", -1, E));
  OK(kiln_ir_add_output(g, "probs", KILN_DTYPE_FLOAT, yd, params, 2, E));
  OK(kiln_ir_set_meta(g, "class_names", "[\"cat\",\"dog\",\"bird\"]", E));
  OK(kiln_ir_set_meta(g, "loss", "categorical_crossentropy", E));
  return g;
}

/* x[N, seq, 2] (two symbolic dims) -> MatMul(W) -> Add(Constant) -> y; int64 and
 * Constant tensor attribute; opset 17. */
static kiln_ir_graph *matmul_graph(void) {
  kiln_ir_graph *g;
  OK(kiln_ir_create("matmul_add", &g, E));
  OK(kiln_ir_set_opset(g, "", 17, E));
  double dw[6] = {1, 2, 3, 4, 5, 6};
  float w[6];
  for (int i = 0; i < 6; i++) w[i] = (float)dw[i];
  int64_t wd[2] = {2, 3};
  OK(kiln_ir_add_initializer(g, "W", KILN_DTYPE_FLOAT, wd, 2, w, E));
  int64_t shape[2] = {1, 3};
  int64_t sd[1] = {2};
  OK(kiln_ir_add_initializer(g, "shape_unused", KILN_DTYPE_INT64, sd, 1, shape, E));
  int64_t xd[3] = {-1, -1, 2}, yd[3] = {-1, -1, 3};
  const char *params[3] = {"N", "seq", NULL};
  OK(kiln_ir_add_input(g, "x", KILN_DTYPE_FLOAT, xd, params, 3, E));
  kiln_ir_node *n;
  const char *co[1] = {"bias"};
  OK(kiln_ir_add_node(g, "Constant", "bias_const", NULL, 0, co, 1, &n, E));
  float bias[3] = {0.1f, 0.2f, 0.3f};
  int64_t bdims[1] = {3};
  OK(kiln_ir_node_set_tensor(n, "value", KILN_DTYPE_FLOAT, bdims, 1, bias, E));
  const char *mi[2] = {"x", "W"}, *mo[1] = {"xw"};
  OK(kiln_ir_add_node(g, "MatMul", "matmul", mi, 2, mo, 1, NULL, E));
  const char *ai[2] = {"xw", "bias"}, *ao[1] = {"y"};
  OK(kiln_ir_add_node(g, "Add", "add", ai, 2, ao, 1, NULL, E));
  OK(kiln_ir_add_output(g, "y", KILN_DTYPE_FLOAT, yd, params, 3, E));
  return g;
}

/* Every attribute type and dtype the IR holds, an unused custom opset, an unknown-rank
 * output and an empty optional input (not an onnx.checker-valid model). */
static kiln_ir_graph *all_kinds_graph(void) {
  kiln_ir_graph *g;
  OK(kiln_ir_create("all_kinds", &g, E));
  OK(kiln_ir_set_opset(g, "", 21, E));
  OK(kiln_ir_set_opset(g, "com.example", 1, E));
  g->ir_version = 7;
  int8_t i8[4] = {-128, -1, 0, 127};
  uint8_t u8[3] = {0, 128, 255};
  int32_t i32[2] = {-70000, 70000};
  uint8_t bl[2] = {1, 0};
  double f64[2] = {3.141592653589793, -2.5e300};
  int64_t d4[1] = {4}, d3[1] = {3}, d2[1] = {2}, d122[3] = {1, 2, 1};
  OK(kiln_ir_add_initializer(g, "i8", KILN_DTYPE_INT8, d4, 1, i8, E));
  OK(kiln_ir_add_initializer(g, "u8", KILN_DTYPE_UINT8, d3, 1, u8, E));
  OK(kiln_ir_add_initializer(g, "i32", KILN_DTYPE_INT32, d2, 1, i32, E));
  OK(kiln_ir_add_initializer(g, "bool", KILN_DTYPE_BOOL, d2, 1, bl, E));
  OK(kiln_ir_add_initializer(g, "f64", KILN_DTYPE_DOUBLE, d122, 3, f64, E));
  float scalar = 42.0f;
  OK(kiln_ir_add_initializer(g, "scalar", KILN_DTYPE_FLOAT, NULL, 0, &scalar, E));
  int64_t zd[2] = {0, 5};
  OK(kiln_ir_add_initializer(g, "empty", KILN_DTYPE_FLOAT, zd, 2, NULL, E));
  int64_t xd[1] = {4};
  OK(kiln_ir_add_input(g, "x", KILN_DTYPE_INT8, xd, NULL, 1, E));
  kiln_ir_node *n;
  const char *in[4] = {"x", "", "i8", "scalar"}, *out[2] = {"y", ""};
  /* The reader does not check op types (the session does). */
  OK(kiln_ir_add_node(g, "KilnTestOp", "", in, 4, out, 2, &n, E));
  OK(kiln_ir_node_set_float(n, "f", -0.0f, E));
  OK(kiln_ir_node_set_int(n, "i", -9007199254740993LL, E));
  OK(kiln_ir_node_set_string(n, "s", "héllo \"quoted\"", E));
  OK(kiln_ir_node_set_string(n, "empty_s", "", E));
  float fl[3] = {1.0f, -2.5f, 1e-30f};
  OK(kiln_ir_node_set_floats(n, "fs", fl, 3, E));
  int64_t il[2] = {-1, 1LL << 40};
  OK(kiln_ir_node_set_ints(n, "is", il, 2, E));
  OK(kiln_ir_node_set_ints(n, "no_ints", NULL, 0, E));
  const char *sl[3] = {"a", "", "ccc"};
  OK(kiln_ir_node_set_strings(n, "ss", sl, 3, E));
  int32_t tv[6] = {1, 2, 3, 4, 5, 6};
  int64_t td[2] = {2, 3};
  OK(kiln_ir_node_set_tensor(n, "t", KILN_DTYPE_INT32, td, 2, tv, E));
  OK(kiln_ir_add_output(g, "y", KILN_DTYPE_UNDEFINED, NULL, NULL, -1, E));
  OK(kiln_ir_set_meta(g, "empty_value", "", E));
  return g;
}

static kiln_ir_graph *round_trip(const kiln_ir_graph *g) {
  void *buf = NULL;
  size_t n = 0;
  OK(kiln_onnx_write_buffer(g, &buf, &n, E));
  assert_true(n > 0);
  kiln_ir_graph *back = NULL;
  OK(kiln_onnx_read_buffer(buf, n, "round_trip.onnx", &back, E));
  /* Writing what was read gives the same bytes. */
  void *buf2 = NULL;
  size_t n2 = 0;
  OK(kiln_onnx_write_buffer(back, &buf2, &n2, E));
  assert_int_equal(n, n2);
  assert_memory_equal(buf, buf2, n);
  free(buf);
  free(buf2);
  return back;
}

static void test_buffer_round_trip(void **state) {
  (void)state;
  kiln_ir_graph *(*make[3])(void) = {gemm_graph, matmul_graph, all_kinds_graph};
  for (int i = 0; i < 3; i++) {
    kiln_ir_graph *g = make[i]();
    kiln_ir_graph *back = round_trip(g);
    same_graph(g, back);
    kiln_ir_free(back);
    kiln_ir_free(g);
  }
}

static void test_read_gives_expected_ir(void **state) {
  (void)state;
  kiln_ir_graph *g = gemm_graph();
  kiln_ir_graph *back = round_trip(g);
  assert_int_equal(back->ir_version, 8);
  assert_int_equal(kiln_ir_opset_version(back, ""), 13);
  assert_string_equal(back->producer_name, "kiln");
  assert_int_equal(back->n_inputs, 1); /* initializers are not graph inputs */
  assert_int_equal(back->inputs[0].dims[0].value, -1);
  assert_string_equal(back->inputs[0].dims[0].param, "batch");
  assert_int_equal(back->inputs[0].dims[1].value, 4);
  assert_null(back->inputs[0].dims[1].param);
  const kiln_ir_node *gemm = &back->nodes[0];
  assert_string_equal(gemm->op_type, "Gemm");
  assert_int_equal(kiln_ir_node_attr(gemm, "transB")->i, 1);
  assert_true(kiln_ir_node_attr(gemm, "alpha")->f == 1.5f);
  assert_int_equal(kiln_ir_node_attr(&back->nodes[2], "axis")->i, -1);
  const kiln_ir_tensor *w = kiln_ir_find_initializer(back, "W");
  assert_non_null(w);
  assert_true(((const float *)w->data)[5] == 0.25f);
  assert_string_equal(kiln_ir_get_meta(back, "loss"), "categorical_crossentropy");
  kiln_ir_free(back);
  kiln_ir_free(g);
}

static char *make_temp_dir(void) {
  char *dir = strdup("/tmp/kiln_onnx_io_XXXXXX");
  assert_non_null(dir);
  assert_non_null(mkdtemp(dir));
  return dir;
}

static int count_entries(const char *dir) {
  DIR *d = opendir(dir);
  assert_non_null(d);
  int n = 0;
  struct dirent *e;
  while ((e = readdir(d)))
    if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) n++;
  closedir(d);
  return n;
}

static void test_file_round_trip(void **state) {
  (void)state;
  char *dir = make_temp_dir();
  char path[512];
  snprintf(path, sizeof path, "%s/model.onnx", dir);
  kiln_ir_graph *g = matmul_graph();
  OK(kiln_onnx_write_file(g, path, E));
  /* Overwriting an existing file works the same way. */
  OK(kiln_onnx_write_file(g, path, E));
  assert_int_equal(count_entries(dir), 1); /* no temporary left behind */
  kiln_ir_graph *back = NULL;
  OK(kiln_onnx_read_file(path, &back, E));
  same_graph(g, back);
  kiln_ir_free(back);
  kiln_ir_free(g);
  unlink(path);
  rmdir(dir);
  free(dir);
}

static void test_write_into_missing_folder(void **state) {
  (void)state;
  kiln_error err = {0};
  char *dir = make_temp_dir();
  char path[512];
  snprintf(path, sizeof path, "%s/no/such/folder/model.onnx", dir);
  kiln_ir_graph *g = gemm_graph();
  assert_int_equal(kiln_onnx_write_file(g, path, &err), KILN_E_IO);
  assert_non_null(strstr(err.message, "no/such/folder/model.onnx"));
  assert_int_equal(count_entries(dir), 0);
  kiln_ir_free(g);
  rmdir(dir);
  free(dir);
}

static void test_write_rejects_bad_graphs(void **state) {
  (void)state;
  kiln_error err = {0};
  kiln_ir_graph *g;
  assert_int_equal(kiln_ir_create("no_opset", &g, &err), KILN_OK);
  void *buf = NULL;
  size_t n = 0;
  assert_int_equal(kiln_onnx_write_buffer(g, &buf, &n, &err), KILN_E_INVALID);
  assert_non_null(strstr(err.message, "opset"));
  assert_null(buf);
  kiln_ir_set_opset(g, "", 13, &err);
  kiln_ir_node *node;
  const char *o[1] = {"y"};
  assert_int_equal(kiln_ir_add_node(g, "", "nameless_op", NULL, 0, o, 1, &node, &err), KILN_OK);
  assert_int_equal(kiln_onnx_write_buffer(g, &buf, &n, &err), KILN_E_INVALID);
  assert_non_null(strstr(err.message, "nameless_op"));
  assert_int_equal(kiln_onnx_write_file(g, "/tmp/kiln_never_written.onnx", &err), KILN_E_INVALID);
  assert_int_equal(access("/tmp/kiln_never_written.onnx", F_OK), -1);
  kiln_ir_free(g);
}

/* --- real ONNX files ------------------------------------------------------------ */

static void test_read_libonnx_testdata_gemm(void **state) {
  (void)state;
  const char *path = TESTDATA "/node/test_gemm_default_vector_bias/model.onnx";
  if (access(path, R_OK) != 0) {
    print_message("skipping: %s missing (install libonnx-testdata)\n", path);
    skip();
  }
  kiln_ir_graph *g = NULL;
  OK(kiln_onnx_read_file(path, &g, E));
  assert_string_equal(g->name, "test_gemm_default_vector_bias");
  assert_int_equal(g->ir_version, 7);
  assert_string_equal(g->producer_name, "backend-test");
  assert_int_equal(kiln_ir_opset_version(g, ""), 13);
  assert_int_equal(g->n_nodes, 1);
  assert_string_equal(g->nodes[0].op_type, "Gemm");
  assert_int_equal(g->nodes[0].n_inputs, 3);
  assert_string_equal(g->nodes[0].inputs[2], "c");
  assert_int_equal(g->nodes[0].n_attrs, 0);
  assert_int_equal(g->n_inputs, 3);
  const int64_t want[3][2] = {{2, 7}, {7, 4}, {1, 4}};
  for (int i = 0; i < 3; i++) {
    assert_int_equal(g->inputs[i].dtype, KILN_DTYPE_FLOAT);
    assert_int_equal(g->inputs[i].rank, 2);
    assert_int_equal(g->inputs[i].dims[0].value, want[i][0]);
    assert_int_equal(g->inputs[i].dims[1].value, want[i][1]);
  }
  assert_int_equal(g->n_outputs, 1);
  assert_string_equal(g->outputs[0].name, "y");
  assert_int_equal(g->outputs[0].dims[1].value, 4);
  /* And it survives kiln's writer. */
  kiln_ir_graph *back = round_trip(g);
  same_graph(g, back);
  kiln_ir_free(back);
  kiln_ir_free(g);

  /* An IR 3 / opset 6 model: read cleanly as unsupported, naming the version. */
  kiln_error err = {0};
  const char *old = TESTDATA "/pytorch-converted/test_Linear/model.onnx";
  if (access(old, R_OK) == 0) {
    assert_int_equal(kiln_onnx_read_file(old, &g, &err), KILN_E_UNSUPPORTED);
    assert_non_null(strstr(err.message, "opset 6"));
    assert_non_null(strstr(err.message, "test_Linear/model.onnx"));
    assert_null(g);
  }
}

/* Every model.onnx in libonnx-testdata: OK or a clear error, never a crash; the
 * models kiln reads are written back and read again identically. */
static void scan_dir(const char *dir, int *ok, int *failed) {
  DIR *d = opendir(dir);
  if (!d) return;
  struct dirent *e;
  while ((e = readdir(d))) {
    if (e->d_name[0] == '.') continue;
    char path[1024];
    snprintf(path, sizeof path, "%s/%s/model.onnx", dir, e->d_name);
    if (access(path, R_OK) != 0) continue;
    kiln_error err = {0};
    kiln_ir_graph *g = NULL;
    kiln_status s = kiln_onnx_read_file(path, &g, &err);
    if (s == KILN_OK) {
      (*ok)++;
      kiln_ir_graph *back = round_trip(g);
      same_graph(g, back);
      kiln_ir_free(back);
      kiln_ir_free(g);
    } else {
      (*failed)++;
      assert_null(g);
      assert_true(s == KILN_E_UNSUPPORTED || s == KILN_E_FORMAT);
      assert_non_null(strstr(err.message, path));
    }
  }
  closedir(d);
}

static void test_read_all_libonnx_testdata(void **state) {
  (void)state;
  if (access(TESTDATA "/node", R_OK) != 0) skip();
  const char *dirs[] = {TESTDATA "/node", TESTDATA "/pytorch-converted",
                        TESTDATA "/pytorch-operator", TESTDATA "/simple", TESTDATA "/real"};
  int ok = 0, failed = 0;
  for (size_t i = 0; i < sizeof dirs / sizeof dirs[0]; i++) scan_dir(dirs[i], &ok, &failed);
  print_message("libonnx-testdata: %d models read, %d rejected with a message\n", ok, failed);
  assert_true(ok > 500);
}

/* --- onnx.checker --------------------------------------------------------------- */

static void test_onnx_checker_accepts_kiln_files(void **state) {
  (void)state;
  if (system("/usr/bin/python3 -c 'import onnx' >/dev/null 2>&1") != 0) {
    print_message("skipping: python3-onnx is not installed\n");
    skip();
  }
  char *dir = make_temp_dir();
  kiln_ir_graph *(*make[2])(void) = {gemm_graph, matmul_graph};
  for (int i = 0; i < 2; i++) {
    char path[512], cmd[1024];
    snprintf(path, sizeof path, "%s/model%d.onnx", dir, i);
    kiln_ir_graph *g = make[i]();
    OK(kiln_onnx_write_file(g, path, E));
    snprintf(cmd, sizeof cmd,
             "/usr/bin/python3 -c \"import onnx,sys; m=onnx.load(sys.argv[1]); "
             "onnx.checker.check_model(m, full_check=True)\" '%s'", path);
    int rc = system(cmd);
    if (rc != 0) fail_msg("onnx.checker rejected %s (graph %s)", path, g->name);
    kiln_ir_free(g);
    unlink(path);
  }
  rmdir(dir);
  free(dir);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_buffer_round_trip),
      cmocka_unit_test(test_read_gives_expected_ir),
      cmocka_unit_test(test_file_round_trip),
      cmocka_unit_test(test_write_into_missing_folder),
      cmocka_unit_test(test_write_rejects_bad_graphs),
      cmocka_unit_test(test_read_libonnx_testdata_gemm),
      cmocka_unit_test(test_read_all_libonnx_testdata),
      cmocka_unit_test(test_onnx_checker_accepts_kiln_files),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

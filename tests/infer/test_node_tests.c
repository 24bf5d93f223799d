/* The ONNX backend node tests (Debian's libonnx-testdata) for every op the runtime
 * runs: read model.onnx with kiln_onnx_read_file, feed test_data_set_0/input_*.pb,
 * compare with output_*.pb (|got - want| <= 1e-5 + 1e-4 |want|). Tests kiln does not
 * run are listed below with the reason (and in docs/onnx-node-tests.md). Set
 * KILN_ONNX_NODE_DIR to use another copy of .../data/node; KILN_NODE_TESTS_ALL=1 also
 * tries the listed ones (to see that each still fails cleanly, with its message). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "kiln/infer.h"
#include "onnx.pb-c.h"

static const char *const OPS[] = {"gemm", "matmul", "add", "sub", "mul", "div", "relu",
                                  "leakyrelu", "sigmoid", "tanh", "softmax", "logsoftmax",
                                  "concat", "flatten", "reshape", "identity", "dropout", "cast",
                                  "quantizelinear", "dequantizelinear", "dynamicquantizelinear",
                                  "matmulinteger", "qlinearmatmul", "reduce_mean", "sqrt",
                                  "reciprocal"};

/* Tests kiln does not run, and why (kept in step with docs/onnx-node-tests.md). */
static const struct {
  const char *name;
  const char *why;
} SKIPS[] = {
    {"test_add_uint8", "uint8 arithmetic: kiln's runtime is float32"},
    {"test_sub_uint8", "uint8 arithmetic: kiln's runtime is float32"},
    {"test_mul_uint8", "uint8 arithmetic: kiln's runtime is float32"},
    {"test_div_uint8", "uint8 arithmetic: kiln's runtime is float32"},
    {"test_cast_BFLOAT16_to_FLOAT", "bfloat16 tensors are not supported"},
    {"test_cast_DOUBLE_to_FLOAT16", "float16 tensors are not supported"},
    {"test_cast_FLOAT16_to_DOUBLE", "float16 tensors are not supported"},
    {"test_cast_FLOAT16_to_FLOAT", "float16 tensors are not supported"},
    {"test_cast_FLOAT_to_BFLOAT16", "bfloat16 tensors are not supported"},
    {"test_cast_FLOAT_to_DOUBLE", "Cast to float64: kiln casts to float32 only"},
    {"test_cast_FLOAT_to_FLOAT16", "float16 tensors are not supported"},
    {"test_cast_FLOAT_to_STRING", "string tensors are not supported"},
    {"test_cast_STRING_to_FLOAT", "string tensors are not supported"},
    {"test_identity_opt", "optional-typed values are not supported"},
    {"test_identity_sequence", "sequence-typed values are not supported"},
    {"test_qlinearmatmul_3D", "QLinearMatMul with a batched (3-D) b: kiln takes a 2-D b"},
};

static const char *skip_reason(const char *name) {
  for (size_t i = 0; i < sizeof SKIPS / sizeof SKIPS[0]; i++)
    if (strcmp(SKIPS[i].name, name) == 0) return SKIPS[i].why;
  size_t n = strlen(name);
  if (n > 9 && strcmp(name + n - 9, "_expanded") == 0)
    return "function-expanded form (ReduceMax, Exp, ReduceSum, Log, ...) uses ops kiln does not run";
  return NULL;
}

static int wanted(const char *name) {
  if (strncmp(name, "test_", 5) != 0) return 0;
  const char *rest = name + 5;
  for (size_t i = 0; i < sizeof OPS / sizeof OPS[0]; i++) {
    size_t n = strlen(OPS[i]);
    if (strncmp(rest, OPS[i], n) == 0 && (rest[n] == 0 || rest[n] == '_')) return 1;
  }
  return 0;
}

static const char *node_dir(void) {
  const char *d = getenv("KILN_ONNX_NODE_DIR");
  return d && *d ? d : "/usr/share/libonnx-testdata/data/node";
}

static unsigned char *read_all(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  unsigned char *buf = malloc(n > 0 ? (size_t)n : 1);
  if (buf && n > 0 && fread(buf, 1, (size_t)n, f) != (size_t)n) {
    free(buf);
    buf = NULL;
  }
  fclose(f);
  *len = n > 0 ? (size_t)n : 0;
  return buf;
}

/* A TensorProto file as a tensor view with its own data (free view->data). */
static int load_tensor(const char *path, kiln_tensor_view *v, char *why, size_t cap) {
  size_t len;
  unsigned char *buf = read_all(path, &len);
  if (!buf) {
    snprintf(why, cap, "cannot read %s", path);
    return 0;
  }
  Onnx__TensorProto *t = onnx__tensor_proto__unpack(NULL, len, buf);
  free(buf);
  if (!t) {
    snprintf(why, cap, "%s is not a TensorProto", path);
    return 0;
  }
  memset(v, 0, sizeof *v);
  v->dtype = (kiln_dtype)t->data_type;
  v->rank = (int)t->n_dims;
  int64_t numel = 1;
  for (size_t i = 0; i < t->n_dims && i < KILN_IR_MAX_RANK; i++) {
    v->dims[i] = t->dims[i];
    numel *= t->dims[i];
  }
  size_t es = kiln_dtype_size(v->dtype);
  int ok = es != 0 && t->n_dims <= KILN_IR_MAX_RANK;
  if (!ok) snprintf(why, cap, "%s: tensor dtype %d is not one kiln handles", path, (int)t->data_type);
  if (ok) {
    v->data = calloc((size_t)(numel ? numel : 1), es);
    if (numel == 0) {
      /* nothing to copy */
    } else if (t->has_raw_data && t->raw_data.len == (size_t)numel * es) {
      memcpy(v->data, t->raw_data.data, t->raw_data.len);
    } else if (v->dtype == KILN_DTYPE_FLOAT && t->n_float_data == (size_t)numel) {
      memcpy(v->data, t->float_data, (size_t)numel * es);
    } else if (v->dtype == KILN_DTYPE_DOUBLE && t->n_double_data == (size_t)numel) {
      memcpy(v->data, t->double_data, (size_t)numel * es);
    } else if (v->dtype == KILN_DTYPE_INT64 && t->n_int64_data == (size_t)numel) {
      memcpy(v->data, t->int64_data, (size_t)numel * es);
    } else if (t->n_int32_data == (size_t)numel) {
      for (int64_t i = 0; i < numel; i++) {
        if (es == 1) ((uint8_t *)v->data)[i] = (uint8_t)t->int32_data[i];
        else if (es == 4) ((int32_t *)v->data)[i] = t->int32_data[i];
      }
    } else {
      snprintf(why, cap, "%s: data does not match its shape", path);
      free(v->data);
      v->data = NULL;
      ok = 0;
    }
  }
  onnx__tensor_proto__free_unpacked(t, NULL);
  return ok;
}

/* Whether input k of op is a quantization parameter (a scale or zero point) that
 * kiln fixes at create. */
static int is_qparam(const char *op, int k) {
  if (strcmp(op, "QuantizeLinear") == 0 || strcmp(op, "DequantizeLinear") == 0) return k >= 1;
  if (strcmp(op, "QLinearMatMul") == 0) return k != 0 && k != 3;
  return 0;
}

/* kiln plans shapes at create, so a Reshape's shape given as a graph input is made
 * an initializer from the test's data (the test then feeds the other inputs); so are
 * the scales and zero points of QuantizeLinear, DequantizeLinear and QLinearMatMul. */
static int freeze_shape_inputs(kiln_ir_graph *g, kiln_tensor_view *in, int *n_in) {
  int frozen = 0;
  for (int i = 0; i < g->n_inputs;) {
    kiln_ir_value *v = &g->inputs[i];
    int is_shape = 0, is_q = 0;
    for (int k = 0; k < g->n_nodes; k++) {
      if (strcmp(g->nodes[k].op_type, "Reshape") == 0 && g->nodes[k].n_inputs > 1 &&
          strcmp(g->nodes[k].inputs[1], v->name) == 0)
        is_shape = 1;
      for (int j = 0; j < g->nodes[k].n_inputs; j++)
        if (is_qparam(g->nodes[k].op_type, j) && strcmp(g->nodes[k].inputs[j], v->name) == 0)
          is_q = 1;
    }
    if (!is_q && (!is_shape || in[i].dtype != KILN_DTYPE_INT64)) {
      i++;
      continue;
    }
    kiln_error e = {0};
    if (kiln_ir_add_initializer(g, v->name, in[i].dtype, in[i].dims, in[i].rank, in[i].data,
                                &e))
      return -1;
    free(v->name);
    for (int d = 0; d < KILN_IR_MAX_RANK; d++) free(v->dims[d].param);
    memmove(v, v + 1, (size_t)(g->n_inputs - i - 1) * sizeof *v);
    g->n_inputs--;
    free(in[i].data);
    memmove(&in[i], &in[i + 1], (size_t)(*n_in - i - 1) * sizeof *in);
    (*n_in)--;
    memset(&in[*n_in], 0, sizeof in[*n_in]);
    frozen++;
  }
  return frozen;
}

typedef struct tally {
  int passed, skipped, failed;
} tally;

enum { MAX_IO = 16 };

static void run_one(const char *dir, const char *name, tally *t) {
  char path[1024], why[KILN_ERROR_MESSAGE_MAX + 64] = "";
  const char *reason = skip_reason(name);
  if (reason && getenv("KILN_NODE_TESTS_ALL")) reason = NULL; /* to check the reasons */
  if (reason) {
    printf("SKIP %-44s %s\n", name, reason);
    t->skipped++;
    return;
  }
  snprintf(path, sizeof path, "%s/%s/model.onnx", dir, name);
  kiln_ir_graph *g = NULL;
  kiln_error e = {0};
  kiln_tensor_view in[MAX_IO], want[MAX_IO], got[MAX_IO];
  int n_in = 0, n_want = 0;
  memset(in, 0, sizeof in);
  memset(want, 0, sizeof want);
  kiln_session *s = NULL;
  int ok = 0;
  if (kiln_onnx_read_file(path, &g, &e)) {
    snprintf(why, sizeof why, "read: %s", e.message);
    goto done;
  }
  for (; n_in < MAX_IO; n_in++) {
    snprintf(path, sizeof path, "%s/%s/test_data_set_0/input_%d.pb", dir, name, n_in);
    struct stat sb;
    if (stat(path, &sb)) break;
    if (!load_tensor(path, &in[n_in], why, sizeof why)) goto done;
  }
  for (; n_want < MAX_IO; n_want++) {
    snprintf(path, sizeof path, "%s/%s/test_data_set_0/output_%d.pb", dir, name, n_want);
    struct stat sb;
    if (stat(path, &sb)) break;
    if (!load_tensor(path, &want[n_want], why, sizeof why)) goto done;
  }
  if (freeze_shape_inputs(g, in, &n_in) < 0) {
    snprintf(why, sizeof why, "could not freeze the shape input");
    goto done;
  }
  if (kiln_session_create(g, NULL, &s, &e)) {
    snprintf(why, sizeof why, "create: %s", e.message);
    goto done;
  }
  if (kiln_session_output_count(s) != n_want) {
    snprintf(why, sizeof why, "%d outputs, the test has %d", kiln_session_output_count(s), n_want);
    goto done;
  }
  if (kiln_session_run(s, in, n_in, got, n_want, &e)) {
    snprintf(why, sizeof why, "run: %s", e.message);
    goto done;
  }
  for (int o = 0; o < n_want; o++) {
    if (got[o].rank != want[o].rank || got[o].dtype != want[o].dtype) {
      snprintf(why, sizeof why, "output %d: rank %d dtype %d, expected rank %d dtype %d", o,
               got[o].rank, (int)got[o].dtype, want[o].rank, (int)want[o].dtype);
      goto done;
    }
    int64_t n = 1;
    for (int d = 0; d < got[o].rank; d++) {
      if (got[o].dims[d] != want[o].dims[d]) {
        snprintf(why, sizeof why, "output %d: dim %d is %lld, expected %lld", o, d,
                 (long long)got[o].dims[d], (long long)want[o].dims[d]);
        goto done;
      }
      n *= got[o].dims[d];
    }
    for (int64_t i = 0; i < n; i++) {
      double a, b;
      if (got[o].dtype == KILN_DTYPE_FLOAT) {
        a = ((float *)got[o].data)[i];
        b = ((float *)want[o].data)[i];
      } else if (got[o].dtype == KILN_DTYPE_INT32) {
        a = ((int32_t *)got[o].data)[i];
        b = ((int32_t *)want[o].data)[i];
      } else if (got[o].dtype == KILN_DTYPE_INT8) {
        a = ((int8_t *)got[o].data)[i];
        b = ((int8_t *)want[o].data)[i];
      } else {
        a = ((unsigned char *)got[o].data)[i];
        b = ((unsigned char *)want[o].data)[i];
      }
      if (!(fabs(a - b) <= 1e-5 + 1e-4 * fabs(b))) {
        snprintf(why, sizeof why, "output %d element %lld is %.8g, expected %.8g", o,
                 (long long)i, a, b);
        goto done;
      }
    }
  }
  ok = 1;
done:
  if (ok) {
    printf("PASS %s\n", name);
    t->passed++;
  } else {
    printf("FAIL %-44s %s\n", name, why);
    t->failed++;
  }
  kiln_session_free(s);
  kiln_ir_free(g);
  for (int i = 0; i < MAX_IO; i++) {
    free(in[i].data);
    free(want[i].data);
  }
}

static int cmp_str(const void *a, const void *b) {
  return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static void test_node_tests(void **state) {
  (void)state;
  const char *dir = node_dir();
  DIR *d = opendir(dir);
  if (!d) {
    printf("ONNX node tests not found at %s (install libonnx-testdata or set KILN_ONNX_NODE_DIR)\n", dir);
    skip();
  }
  char *names[1024];
  int n = 0;
  struct dirent *ent;
  while ((ent = readdir(d)) && n < 1024)
    if (wanted(ent->d_name)) names[n++] = strdup(ent->d_name);
  closedir(d);
  qsort(names, (size_t)n, sizeof names[0], cmp_str);
  tally t = {0, 0, 0};
  for (int i = 0; i < n; i++) {
    run_one(dir, names[i], &t);
    free(names[i]);
  }
  printf("ONNX node tests: %d passed, %d skipped, %d failed\n", t.passed, t.skipped, t.failed);
  assert_true(t.passed > 0);
  assert_int_equal(t.failed, 0);
}

/* kiln_session_create_from_file on one node test, and on a path that does not exist. */
static void test_create_from_file(void **state) {
  (void)state;
  char path[1024];
  snprintf(path, sizeof path, "%s/test_relu/model.onnx", node_dir());
  kiln_session *s = NULL;
  kiln_error e = {0};
  if (kiln_session_create_from_file(path, NULL, &s, &e)) fail_msg("%s", e.message);
  assert_int_equal(kiln_session_input_count(s), 1);
  assert_int_equal(kiln_session_output_count(s), 1);
  kiln_session_free(s);
  s = NULL;
  assert_int_not_equal(kiln_session_create_from_file("/nonexistent/kiln.onnx", NULL, &s, &e), KILN_OK);
  assert_null(s);
  assert_non_null(strstr(e.message, "/nonexistent/kiln.onnx"));
}

int main(void) {
  setvbuf(stdout, NULL, _IOLBF, 0);
  struct stat sb;
  if (stat(node_dir(), &sb)) {
    printf("ONNX node tests not found at %s; skipping\n", node_dir());
    return 77;
  }
  const struct CMUnitTest tests[] = {cmocka_unit_test(test_node_tests),
                                     cmocka_unit_test(test_create_from_file)};
  return cmocka_run_group_tests(tests, NULL, NULL);
}

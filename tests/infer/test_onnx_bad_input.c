/* The ONNX reader on bad input: every case is a clear error naming the place, never a
 * crash or a leak (run under the Asan build). Models are built with the protobuf-c
 * structs from a small valid one and corrupted one field at a time. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "kiln/infer.h"
#include "onnx.pb-c.h"

/* x[batch, 2] -> Gemm(x, W[2,2], alpha=2) -> h -> Relu -> y. */
typedef struct model {
  Onnx__ModelProto m;
  Onnx__OperatorSetIdProto op, *ops[2];
  Onnx__OperatorSetIdProto op2;
  Onnx__GraphProto g;
  Onnx__NodeProto gemm, relu, *nodes[2];
  char *gemm_in[2], *gemm_out[1], *relu_in[1], *relu_out[1];
  Onnx__AttributeProto alpha, *attrs[1];
  Onnx__TensorProto w, *inits[1];
  int64_t wdims[KILN_IR_MAX_RANK + 2];
  float wdata[4];
  Onnx__SparseTensorProto sp, *sps[1];
  Onnx__TensorProto sp_vals, sp_ind;
  int64_t sp_dims[2], sp_vdims[1], sp_idims[1], sp_index[2];
  float sp_v[2];
  Onnx__ValueInfoProto in, in_w, out, *ins[2], *outs[1];
  Onnx__TypeProto tin, tout;
  Onnx__TypeProto__Tensor ttin, ttout;
  Onnx__TensorShapeProto shin;
  Onnx__TensorShapeProto__Dimension d0, d1, *dims[2];
} model;

static void model_init(model *t) {
  memset(t, 0, sizeof *t);
  onnx__model_proto__init(&t->m);
  t->m.has_ir_version = 1;
  t->m.ir_version = 8;
  t->m.producer_name = "test";
  onnx__operator_set_id_proto__init(&t->op);
  t->op.domain = "";
  t->op.has_version = 1;
  t->op.version = 13;
  t->ops[0] = &t->op;
  t->m.n_opset_import = 1;
  t->m.opset_import = t->ops;
  onnx__graph_proto__init(&t->g);
  t->g.name = "bad";
  t->m.graph = &t->g;

  onnx__node_proto__init(&t->gemm);
  t->gemm.name = "dense";
  t->gemm.op_type = "Gemm";
  t->gemm_in[0] = "x";
  t->gemm_in[1] = "W";
  t->gemm_out[0] = "h";
  t->gemm.n_input = 2;
  t->gemm.input = t->gemm_in;
  t->gemm.n_output = 1;
  t->gemm.output = t->gemm_out;
  onnx__attribute_proto__init(&t->alpha);
  t->alpha.name = "alpha";
  t->alpha.has_type = 1;
  t->alpha.type = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOAT;
  t->alpha.has_f = 1;
  t->alpha.f = 2.0f;
  t->attrs[0] = &t->alpha;
  t->gemm.n_attribute = 1;
  t->gemm.attribute = t->attrs;
  onnx__node_proto__init(&t->relu);
  t->relu.name = "relu";
  t->relu.op_type = "Relu";
  t->relu_in[0] = "h";
  t->relu_out[0] = "y";
  t->relu.n_input = 1;
  t->relu.input = t->relu_in;
  t->relu.n_output = 1;
  t->relu.output = t->relu_out;
  t->nodes[0] = &t->gemm;
  t->nodes[1] = &t->relu;
  t->g.n_node = 2;
  t->g.node = t->nodes;

  onnx__tensor_proto__init(&t->w);
  t->w.name = "W";
  t->w.has_data_type = 1;
  t->w.data_type = 1;
  t->wdims[0] = t->wdims[1] = 2;
  t->w.n_dims = 2;
  t->w.dims = t->wdims;
  for (int i = 0; i < 4; i++) t->wdata[i] = (float)i;
  t->w.has_raw_data = 1;
  t->w.raw_data.len = sizeof t->wdata;
  t->w.raw_data.data = (uint8_t *)t->wdata;
  t->inits[0] = &t->w;
  t->g.n_initializer = 1;
  t->g.initializer = t->inits;

  onnx__value_info_proto__init(&t->in);
  onnx__type_proto__init(&t->tin);
  onnx__type_proto__tensor__init(&t->ttin);
  onnx__tensor_shape_proto__init(&t->shin);
  onnx__tensor_shape_proto__dimension__init(&t->d0);
  onnx__tensor_shape_proto__dimension__init(&t->d1);
  t->d0.value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_PARAM;
  t->d0.dim_param = "batch";
  t->d1.value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE;
  t->d1.dim_value = 2;
  t->dims[0] = &t->d0;
  t->dims[1] = &t->d1;
  t->shin.n_dim = 2;
  t->shin.dim = t->dims;
  t->ttin.has_elem_type = 1;
  t->ttin.elem_type = 1;
  t->ttin.shape = &t->shin;
  t->tin.value_case = ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE;
  t->tin.tensor_type = &t->ttin;
  t->in.name = "x";
  t->in.type = &t->tin;
  t->ins[0] = &t->in;
  t->g.n_input = 1;
  t->g.input = t->ins;

  onnx__value_info_proto__init(&t->out);
  onnx__type_proto__init(&t->tout);
  onnx__type_proto__tensor__init(&t->ttout);
  t->ttout.has_elem_type = 1;
  t->ttout.elem_type = 1;
  t->ttout.shape = &t->shin;
  t->tout.value_case = ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE;
  t->tout.tensor_type = &t->ttout;
  t->out.name = "y";
  t->out.type = &t->tout;
  t->outs[0] = &t->out;
  t->g.n_output = 1;
  t->g.output = t->outs;
}

static uint8_t *pack(const model *t, size_t *n) {
  *n = onnx__model_proto__get_packed_size(&t->m);
  uint8_t *buf = malloc(*n ? *n : 1);
  assert_non_null(buf);
  assert_int_equal(onnx__model_proto__pack(&t->m, buf), *n);
  return buf;
}

/* Reads t and expects status st with each of the substrings (NULL-terminated). */
static void expect(const model *t, kiln_status st, ...) {
  size_t n;
  uint8_t *buf = pack(t, &n);
  kiln_error err = {0};
  kiln_ir_graph *g = (kiln_ir_graph *)1;
  kiln_status s = kiln_onnx_read_buffer(buf, n, "bad.onnx", &g, &err);
  free(buf);
  if (s != st) {
    kiln_ir_free(s == KILN_OK ? g : NULL);
    fail_msg("expected status %d, got %d: %s", (int)st, (int)s, err.message);
  }
  if (st == KILN_OK) {
    kiln_ir_free(g);
    return;
  }
  assert_null(g);
  assert_int_equal(err.status, st);
  assert_non_null(strstr(err.message, "bad.onnx: "));
  va_list ap;
  va_start(ap, st);
  for (const char *want; (want = va_arg(ap, const char *));)
    if (!strstr(err.message, want)) fail_msg("message \"%s\" lacks \"%s\"", err.message, want);
  va_end(ap);
}

static void test_valid_base_reads(void **state) {
  (void)state;
  model t;
  model_init(&t);
  size_t n;
  uint8_t *buf = pack(&t, &n);
  kiln_ir_graph *g = NULL;
  kiln_error err = {0};
  assert_int_equal(kiln_onnx_read_buffer(buf, n, "ok.onnx", &g, &err), KILN_OK);
  assert_int_equal(g->n_nodes, 2);
  assert_int_equal(g->n_inputs, 1);
  assert_string_equal(g->inputs[0].dims[0].param, "batch");
  kiln_ir_free(g);
  free(buf);
}

static void test_empty_and_missing_files(void **state) {
  (void)state;
  kiln_error err = {0};
  kiln_ir_graph *g = NULL;
  assert_int_equal(kiln_onnx_read_buffer("", 0, "empty.onnx", &g, &err), KILN_E_FORMAT);
  assert_non_null(strstr(err.message, "empty.onnx: empty"));
  char path[] = "/tmp/kiln_empty_XXXXXX";
  int fd = mkstemp(path);
  assert_true(fd >= 0);
  close(fd);
  assert_int_equal(kiln_onnx_read_file(path, &g, &err), KILN_E_FORMAT);
  assert_non_null(strstr(err.message, path));
  unlink(path);
  assert_int_equal(kiln_onnx_read_file("/nonexistent/dir/model.onnx", &g, &err), KILN_E_IO);
  assert_non_null(strstr(err.message, "/nonexistent/dir/model.onnx"));
  assert_null(g);
  assert_int_equal(kiln_onnx_read_file("/tmp", &g, &err) != KILN_OK, 1); /* a folder */
  assert_null(g);
}

static void test_every_truncation(void **state) {
  (void)state;
  model t;
  model_init(&t);
  size_t n;
  uint8_t *buf = pack(&t, &n);
  for (size_t len = 1; len < n; len++) {
    /* A copy of exactly len bytes, so ASan sees any read past the end. */
    uint8_t *p = malloc(len);
    assert_non_null(p);
    memcpy(p, buf, len);
    kiln_error err = {0};
    kiln_ir_graph *g = NULL;
    kiln_status s = kiln_onnx_read_buffer(p, len, "cut.onnx", &g, &err);
    if (s == KILN_OK) fail_msg("prefix of %zu of %zu bytes was accepted", len, n);
    assert_null(g);
    assert_non_null(strstr(err.message, "cut.onnx: "));
    free(p);
  }
  free(buf);
}

static uint64_t next(uint64_t *s) {
  *s ^= *s << 13;
  *s ^= *s >> 7;
  *s ^= *s << 17;
  return *s;
}

static void test_random_bytes(void **state) {
  (void)state;
  uint64_t seed = 0x9e3779b97f4a7c15ull;
  for (int k = 0; k < 4000; k++) {
    size_t len = (size_t)(next(&seed) % 600) + 1;
    uint8_t *p = malloc(len);
    assert_non_null(p);
    for (size_t i = 0; i < len; i++) p[i] = (uint8_t)next(&seed);
    kiln_error err = {0};
    kiln_ir_graph *g = NULL;
    kiln_status s = kiln_onnx_read_buffer(p, len, "random.onnx", &g, &err);
    assert_int_not_equal(s, KILN_OK);
    assert_null(g);
    assert_true(strlen(err.message) > strlen("random.onnx: "));
    free(p);
  }
}

/* Random edits of a valid model: anything may come out, but never a crash or leak. */
static void test_mutated_models(void **state) {
  (void)state;
  model t;
  model_init(&t);
  size_t n;
  uint8_t *buf = pack(&t, &n);
  uint64_t seed = 12345;
  int accepted = 0;
  for (int k = 0; k < 4000; k++) {
    uint8_t *p = malloc(n);
    assert_non_null(p);
    memcpy(p, buf, n);
    int edits = 1 + (int)(next(&seed) % 4);
    for (int e = 0; e < edits; e++) p[next(&seed) % n] = (uint8_t)next(&seed);
    kiln_error err = {0};
    kiln_ir_graph *g = NULL;
    kiln_status s = kiln_onnx_read_buffer(p, n, "mutant.onnx", &g, &err);
    if (s == KILN_OK) {
      accepted++;
      kiln_ir_free(g);
    } else {
      assert_null(g);
      assert_non_null(strstr(err.message, "mutant.onnx: "));
    }
    free(p);
  }
  print_message("mutated models: %d of 4000 still valid\n", accepted);
  free(buf);
}

static void test_wire_format_errors_name_offsets(void **state) {
  (void)state;
  kiln_error err = {0};
  kiln_ir_graph *g = NULL;
  const uint8_t truncated_varint[] = {0x08, 0x80};
  assert_int_equal(kiln_onnx_read_buffer(truncated_varint, 2, "w.onnx", &g, &err), KILN_E_FORMAT);
  assert_non_null(strstr(err.message, "byte offset 0"));
  const uint8_t long_len[] = {0x08, 0x08, 0x3a, 0x7f, 0x00};
  assert_int_equal(kiln_onnx_read_buffer(long_len, 5, "w.onnx", &g, &err), KILN_E_FORMAT);
  assert_non_null(strstr(err.message, "byte offset 2"));
  assert_non_null(strstr(err.message, "claims 127 bytes"));
  const uint8_t wrong_wire[] = {0x0a, 0x00}; /* ir_version as a length-delimited field */
  assert_int_equal(kiln_onnx_read_buffer(wrong_wire, 2, "w.onnx", &g, &err), KILN_E_FORMAT);
  assert_non_null(strstr(err.message, "field ir_version of onnx.ModelProto has wire type 2"));
  /* graph { initializer { float_data packed with 3 bytes } }: protobuf-c refuses it */
  const uint8_t odd_packed[] = {0x3a, 0x07, 0x2a, 0x05, 0x22, 0x03, 0x00, 0x00, 0x00};
  assert_int_equal(kiln_onnx_read_buffer(odd_packed, sizeof odd_packed, "w.onnx", &g, &err),
                   KILN_E_FORMAT);
  assert_non_null(strstr(err.message, "w.onnx: "));
  assert_null(g);
  const uint8_t group[] = {0x0b};
  assert_int_equal(kiln_onnx_read_buffer(group, 1, "w.onnx", &g, &err), KILN_E_FORMAT);
  assert_non_null(strstr(err.message, "wire type 3"));

  /* graph -> node -> attribute -> g -> node -> ... 300 deep: refused, not recursed. */
  size_t cap = 4096, len = 0;
  uint8_t *p = malloc(cap), *q = malloc(cap);
  assert_non_null(p);
  assert_non_null(q);
  const uint8_t tags[3] = {0x0a /* GraphProto.node */, 0x2a /* NodeProto.attribute */,
                           0x32 /* AttributeProto.g */};
  for (int d = 0; d < 300; d++) {
    uint8_t tag = tags[(299 - d) % 3]; /* the outermost layer is GraphProto.node */
    size_t o = 0;
    q[o++] = tag;
    size_t v = len;
    do {
      q[o++] = (uint8_t)((v & 0x7f) | (v > 0x7f ? 0x80 : 0));
      v >>= 7;
    } while (v);
    memcpy(q + o, p, len);
    len += o;
    uint8_t *t = p;
    p = q;
    q = t;
    assert_true(len + 16 < cap);
  }
  /* wrap in ModelProto.graph */
  q[0] = 0x3a;
  size_t o = 1, v = len;
  do {
    q[o++] = (uint8_t)((v & 0x7f) | (v > 0x7f ? 0x80 : 0));
    v >>= 7;
  } while (v);
  memcpy(q + o, p, len);
  assert_int_equal(kiln_onnx_read_buffer(q, len + o, "deep.onnx", &g, &err), KILN_E_FORMAT);
  assert_non_null(strstr(err.message, "nested more than"));
  free(p);
  free(q);
}

static void test_bad_initializers(void **state) {
  (void)state;
  model t;
  model_init(&t);
  t.wdims[0] = -2;
  expect(&t, KILN_E_FORMAT, "initializer \"W\"", "negative", "[-2, 2]", NULL);

  model_init(&t);
  t.wdims[0] = t.wdims[1] = (int64_t)1 << 40;
  expect(&t, KILN_E_FORMAT, "initializer \"W\"", "overflows", NULL);

  model_init(&t);
  t.wdims[0] = (int64_t)1 << 61;
  t.wdims[1] = 1;
  expect(&t, KILN_E_FORMAT, "initializer \"W\"", "byte size", "overflows", NULL);

  model_init(&t);
  t.w.raw_data.len = 12;
  expect(&t, KILN_E_FORMAT,
         "initializer \"W\": raw_data has 12 bytes but dims [2, 2] of float32 need 16", NULL);

  model_init(&t);
  t.w.has_raw_data = 0;
  t.w.n_float_data = 3;
  t.w.float_data = t.wdata;
  expect(&t, KILN_E_FORMAT, "initializer \"W\"", "float_data has 3 values", "need 4", NULL);

  model_init(&t);
  t.w.has_raw_data = 0;
  expect(&t, KILN_E_FORMAT, "initializer \"W\"", "float_data has 0 values", NULL);

  model_init(&t);
  int32_t big[4] = {1, 2, 300, 4};
  t.w.has_raw_data = 0;
  t.w.data_type = KILN_DTYPE_INT8;
  t.w.n_int32_data = 4;
  t.w.int32_data = big;
  expect(&t, KILN_E_FORMAT, "initializer \"W\"", "int32_data[2] = 300", "int8", NULL);

  /* Found by the fuzzer: the message read the value after freeing the buffer. */
  model_init(&t);
  uint8_t bools[4] = {0, 1, 2, 1};
  t.w.data_type = KILN_DTYPE_BOOL;
  t.w.raw_data.len = 4;
  t.w.raw_data.data = bools;
  expect(&t, KILN_E_FORMAT, "initializer \"W\": bool element 2 is 2 (expected 0 or 1)", NULL);

  model_init(&t);
  t.w.has_data_location = 1;
  t.w.data_location = ONNX__TENSOR_PROTO__DATA_LOCATION__EXTERNAL;
  expect(&t, KILN_E_UNSUPPORTED, "initializer \"W\"", "external", NULL);

  model_init(&t);
  t.w.data_type = 10;
  expect(&t, KILN_E_UNSUPPORTED, "initializer \"W\"", "float16", NULL);

  model_init(&t);
  t.w.data_type = 8;
  expect(&t, KILN_E_UNSUPPORTED, "initializer \"W\"", "string", NULL);

  model_init(&t);
  t.w.data_type = 99;
  expect(&t, KILN_E_FORMAT, "initializer \"W\"", "element type 99", NULL);

  model_init(&t);
  t.w.n_dims = KILN_IR_MAX_RANK + 1;
  for (int i = 0; i < KILN_IR_MAX_RANK + 1; i++) t.wdims[i] = 1;
  expect(&t, KILN_E_UNSUPPORTED, "initializer \"W\"", "rank 9", NULL);

  model_init(&t);
  t.w.name = "";
  expect(&t, KILN_E_FORMAT, "initializer #0", "no name", NULL);

  model_init(&t);
  Onnx__TensorProto *two[2] = {&t.w, &t.w};
  t.g.n_initializer = 2;
  t.g.initializer = two;
  expect(&t, KILN_E_FORMAT, "initializer \"W\" appears twice", NULL);
}

static void test_bad_graphs(void **state) {
  (void)state;
  model t;
  model_init(&t);
  t.relu_in[0] = "nope";
  expect(&t, KILN_E_FORMAT, "node \"relu\" (Relu)", "\"nope\"", NULL);

  model_init(&t);
  t.gemm_in[0] = "y"; /* Gemm reads Relu's output, Relu reads Gemm's */
  expect(&t, KILN_E_FORMAT, "cycle", NULL);

  model_init(&t);
  t.relu.op_type = "";
  expect(&t, KILN_E_FORMAT, "node \"relu\" ()", "op_type is empty", NULL);
  t.relu.name = NULL;
  t.relu.op_type = NULL;
  expect(&t, KILN_E_FORMAT, "node #1 ()", "op_type is empty", NULL);

  model_init(&t);
  t.relu_out[0] = "h";
  expect(&t, KILN_E_FORMAT, "node \"relu\" (Relu)", "output \"h\" is already defined", NULL);

  model_init(&t);
  t.relu_out[0] = "W";
  expect(&t, KILN_E_FORMAT, "node \"relu\" (Relu)", "output \"W\"", "an initializer", NULL);

  model_init(&t);
  t.out.name = "z";
  expect(&t, KILN_E_FORMAT, "graph output \"z\" is not produced", NULL);

  model_init(&t);
  t.m.graph = NULL;
  expect(&t, KILN_E_FORMAT, "no graph", NULL);

  model_init(&t);
  t.g.n_output = 0;
  expect(&t, KILN_E_FORMAT, "no outputs", NULL);

  model_init(&t);
  t.relu.domain = "com.example";
  expect(&t, KILN_E_FORMAT, "node \"relu\" (Relu)", "com.example", "not in opset_import", NULL);
  t.op2 = t.op;
  t.op2.domain = "com.example";
  t.op2.version = 1;
  t.ops[1] = &t.op2;
  t.m.n_opset_import = 2;
  expect(&t, KILN_E_UNSUPPORTED, "node \"relu\" (Relu)", "domain \"com.example\"", NULL);
  /* An opset import of another domain that no node uses is fine. */
  t.relu.domain = "ai.onnx";
  expect(&t, KILN_OK, NULL);

  model_init(&t);
  t.d1.dim_value = -3;
  expect(&t, KILN_E_FORMAT, "graph input #0 \"x\"", "dim 1 is -3", NULL);

  model_init(&t);
  t.ttin.elem_type = 10;
  expect(&t, KILN_E_UNSUPPORTED, "graph input #0 \"x\"", "float16", NULL);

  model_init(&t);
  t.tin.value_case = ONNX__TYPE_PROTO__VALUE_SEQUENCE_TYPE;
  Onnx__TypeProto__Sequence seq;
  onnx__type_proto__sequence__init(&seq);
  t.tin.sequence_type = &seq;
  expect(&t, KILN_E_UNSUPPORTED, "graph input #0 \"x\"", "not a tensor", NULL);

  model_init(&t);
  Onnx__ValueInfoProto *twice[2] = {&t.in, &t.in};
  t.g.n_input = 2;
  t.g.input = twice;
  expect(&t, KILN_E_FORMAT, "graph input \"x\" appears twice", NULL);
}

static void test_bad_versions(void **state) {
  (void)state;
  model t;
  model_init(&t);
  t.m.n_opset_import = 0;
  expect(&t, KILN_E_FORMAT, "no opset_import", NULL);

  model_init(&t);
  t.op.domain = "com.example";
  expect(&t, KILN_E_FORMAT, "no entry for the default ONNX domain", NULL);

  model_init(&t);
  t.op.version = 6;
  expect(&t, KILN_E_UNSUPPORTED, "opset 6", "7..21", NULL);
  t.op.version = 22;
  expect(&t, KILN_E_UNSUPPORTED, "opset 22", NULL);
  t.op.has_version = 0;
  expect(&t, KILN_E_FORMAT, "opset_import #0", "no version", NULL);

  model_init(&t);
  t.op.domain = "ai.onnx"; /* the alias of the default domain */
  expect(&t, KILN_OK, NULL);
  t.op2 = t.op;
  t.op2.domain = "";
  t.ops[1] = &t.op2;
  t.m.n_opset_import = 2;
  expect(&t, KILN_E_FORMAT, "twice", NULL);

  model_init(&t);
  t.m.has_ir_version = 0;
  expect(&t, KILN_E_FORMAT, "no ir_version", NULL);
  t.m.has_ir_version = 1;
  t.m.ir_version = 2;
  expect(&t, KILN_E_UNSUPPORTED, "ir_version 2", NULL);
  t.m.ir_version = 11;
  expect(&t, KILN_E_UNSUPPORTED, "ir_version 11", NULL);
}

static void test_bad_attributes(void **state) {
  (void)state;
  model t;
  model_init(&t);
  t.alpha.type = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT;
  expect(&t, KILN_E_FORMAT, "node \"dense\" (Gemm): attribute \"alpha\"",
         "declared INT but carries a FLOAT", NULL);

  model_init(&t);
  t.alpha.has_f = 0;
  expect(&t, KILN_E_FORMAT, "attribute \"alpha\"", "no value", NULL);

  model_init(&t);
  t.alpha.has_type = 0;
  expect(&t, KILN_E_FORMAT, "attribute \"alpha\" has no type", NULL);

  model_init(&t);
  t.alpha.name = "";
  expect(&t, KILN_E_FORMAT, "node \"dense\" (Gemm)", "no name", NULL);

  model_init(&t);
  Onnx__AttributeProto *two[2] = {&t.alpha, &t.alpha};
  t.gemm.n_attribute = 2;
  t.gemm.attribute = two;
  expect(&t, KILN_E_FORMAT, "attribute \"alpha\" appears twice", NULL);

  model_init(&t);
  Onnx__GraphProto sub;
  onnx__graph_proto__init(&sub);
  t.alpha.has_f = 0;
  t.alpha.type = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__GRAPH;
  t.alpha.g = &sub;
  expect(&t, KILN_E_UNSUPPORTED, "attribute \"alpha\"", "GRAPH", NULL);

  model_init(&t);
  uint8_t nul[3] = {'a', 0, 'b'};
  t.alpha.has_f = 0;
  t.alpha.type = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__STRING;
  t.alpha.has_s = 1;
  t.alpha.s.len = 3;
  t.alpha.s.data = nul;
  expect(&t, KILN_E_FORMAT, "attribute \"alpha\"", "NUL", NULL);

  model_init(&t);
  Onnx__TensorProto bad;
  onnx__tensor_proto__init(&bad);
  int64_t bd[1] = {-1};
  bad.has_data_type = 1;
  bad.data_type = 1;
  bad.n_dims = 1;
  bad.dims = bd;
  t.alpha.has_f = 0;
  t.alpha.type = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__TENSOR;
  t.alpha.t = &bad;
  expect(&t, KILN_E_FORMAT, "attribute \"alpha\"", "negative", NULL);
}

/* IR < 4 style: initializers repeated as graph inputs are not graph inputs in the IR. */
static void test_initializer_listed_as_input(void **state) {
  (void)state;
  model t;
  model_init(&t);
  onnx__value_info_proto__init(&t.in_w);
  t.in_w.name = "W";
  t.in_w.type = &t.tout;
  t.ins[1] = &t.in_w;
  t.g.n_input = 2;
  size_t n;
  uint8_t *buf = pack(&t, &n);
  kiln_ir_graph *g = NULL;
  kiln_error err = {0};
  assert_int_equal(kiln_onnx_read_buffer(buf, n, "old.onnx", &g, &err), KILN_OK);
  assert_int_equal(g->n_inputs, 1);
  assert_string_equal(g->inputs[0].name, "x");
  assert_non_null(kiln_ir_find_initializer(g, "W"));
  kiln_ir_free(g);
  free(buf);
}

/* Found by the fuzzer: a graph without nodes (its output is its input) made the
 * topological sort memcpy from NULL. */
static void test_graph_without_nodes(void **state) {
  (void)state;
  model t;
  model_init(&t);
  t.g.n_node = 0;
  t.out.name = "x";
  expect(&t, KILN_OK, NULL);
}

/* 20000 Relu nodes in reverse order: sorted and read in well under a second (the
 * topological sort once was quadratic, a denial of service for a 450 KB file). */
static void test_long_chain_reads_fast(void **state) {
  (void)state;
  enum { N = 20000 };
  model t;
  model_init(&t);
  Onnx__NodeProto *nodes = calloc(N, sizeof *nodes);
  Onnx__NodeProto **np = calloc(N, sizeof *np);
  char (*names)[16] = calloc(N + 1, sizeof *names);
  char **ins = calloc(N, sizeof *ins), **outs = calloc(N, sizeof *outs);
  assert_true(nodes && np && names && ins && outs);
  for (int i = 0; i <= N; i++) snprintf(names[i], sizeof names[i], "v%d", i);
  for (int i = 0; i < N; i++) {
    onnx__node_proto__init(&nodes[i]);
    nodes[i].op_type = "Relu";
    ins[i] = names[i];
    outs[i] = names[i + 1];
    nodes[i].n_input = 1;
    nodes[i].input = &ins[i];
    nodes[i].n_output = 1;
    nodes[i].output = &outs[i];
    np[N - 1 - i] = &nodes[i];
  }
  t.in.name = "v0";
  t.out.name = names[N];
  t.g.n_node = N;
  t.g.node = np;
  t.g.n_initializer = 0;
  size_t n;
  uint8_t *buf = pack(&t, &n);
  kiln_ir_graph *g = NULL;
  kiln_error err = {0};
  clock_t c0 = clock();
  assert_int_equal(kiln_onnx_read_buffer(buf, n, "chain.onnx", &g, &err), KILN_OK);
  double secs = (double)(clock() - c0) / CLOCKS_PER_SEC;
  assert_int_equal(g->n_nodes, N);
  assert_string_equal(g->nodes[0].inputs[0], "v0");
  assert_string_equal(g->nodes[N - 1].outputs[0], names[N]);
  if (secs > 5.0) fail_msg("reading %d nodes took %.1f s", N, secs);
  kiln_ir_free(g);
  free(buf);
  free(nodes);
  free(np);
  free(names);
  free(ins);
  free(outs);
}

static void sparse_init(model *t) {
  model_init(t);
  /* W becomes sparse: [[0, 5], [0, -1]] */
  t->g.n_initializer = 0;
  onnx__sparse_tensor_proto__init(&t->sp);
  onnx__tensor_proto__init(&t->sp_vals);
  onnx__tensor_proto__init(&t->sp_ind);
  t->sp_v[0] = 5.0f;
  t->sp_v[1] = -1.0f;
  t->sp_vals.name = "W";
  t->sp_vals.has_data_type = 1;
  t->sp_vals.data_type = 1;
  t->sp_vdims[0] = 2;
  t->sp_vals.n_dims = 1;
  t->sp_vals.dims = t->sp_vdims;
  t->sp_vals.n_float_data = 2;
  t->sp_vals.float_data = t->sp_v;
  t->sp_index[0] = 1;
  t->sp_index[1] = 3;
  t->sp_ind.has_data_type = 1;
  t->sp_ind.data_type = 7;
  t->sp_idims[0] = 2;
  t->sp_ind.n_dims = 1;
  t->sp_ind.dims = t->sp_idims;
  t->sp_ind.n_int64_data = 2;
  t->sp_ind.int64_data = t->sp_index;
  t->sp.values = &t->sp_vals;
  t->sp.indices = &t->sp_ind;
  t->sp_dims[0] = t->sp_dims[1] = 2;
  t->sp.n_dims = 2;
  t->sp.dims = t->sp_dims;
  t->sps[0] = &t->sp;
  t->g.n_sparse_initializer = 1;
  t->g.sparse_initializer = t->sps;
}

static void test_sparse_initializers(void **state) {
  (void)state;
  model t;
  sparse_init(&t);
  size_t n;
  uint8_t *buf = pack(&t, &n);
  kiln_ir_graph *g = NULL;
  kiln_error err = {0};
  assert_int_equal(kiln_onnx_read_buffer(buf, n, "sparse.onnx", &g, &err), KILN_OK);
  free(buf);
  const kiln_ir_tensor *w = kiln_ir_find_initializer(g, "W");
  assert_non_null(w);
  const float want[4] = {0, 5, 0, -1};
  assert_int_equal(w->bytes, sizeof want);
  assert_memory_equal(w->data, want, sizeof want);
  kiln_ir_free(g);

  sparse_init(&t);
  t.sp_index[1] = 4;
  expect(&t, KILN_E_FORMAT, "sparse initializer #0 \"W\"", "index 1 is 4, outside [0, 4)", NULL);
  sparse_init(&t);
  t.sp_index[0] = -1;
  expect(&t, KILN_E_FORMAT, "sparse initializer #0 \"W\"", "index 0 is -1", NULL);
  sparse_init(&t);
  t.sp_dims[0] = (int64_t)1 << 40;
  expect(&t, KILN_E_UNSUPPORTED, "sparse initializer #0 \"W\"", "dense form", NULL);
  sparse_init(&t);
  t.sp_idims[0] = 3;
  expect(&t, KILN_E_FORMAT, "sparse initializer #0 \"W\"", "int64_data has 2 values", NULL);
  sparse_init(&t);
  t.sp.indices = NULL;
  expect(&t, KILN_E_FORMAT, "sparse initializer #0 \"W\"", "values and indices", NULL);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_valid_base_reads),
      cmocka_unit_test(test_empty_and_missing_files),
      cmocka_unit_test(test_every_truncation),
      cmocka_unit_test(test_random_bytes),
      cmocka_unit_test(test_mutated_models),
      cmocka_unit_test(test_wire_format_errors_name_offsets),
      cmocka_unit_test(test_bad_initializers),
      cmocka_unit_test(test_bad_graphs),
      cmocka_unit_test(test_bad_versions),
      cmocka_unit_test(test_bad_attributes),
      cmocka_unit_test(test_initializer_listed_as_input),
      cmocka_unit_test(test_graph_without_nodes),
      cmocka_unit_test(test_long_chain_reads_fast),
      cmocka_unit_test(test_sparse_initializers),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

/* Lowering a trained model to the graph IR (kiln_model_lower) and importing it back
 * (kiln_model_from_ir): nodes, attributes, initializers, names, dims and metadata of
 * every activation / loss / dropout combination; identical weights and predictions
 * after the round trip; graphs kiln did not write are refused naming the node. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kiln/export.h"
#include "kiln/infer.h"

static const kiln_activation ACTS[] = {KILN_ACTIVATION_LINEAR, KILN_ACTIVATION_RELU,
                                       KILN_ACTIVATION_SIGMOID, KILN_ACTIVATION_SOFTMAX,
                                       KILN_ACTIVATION_TANH};
static const char *const ACT_OPS[] = {NULL, "Relu", "Sigmoid", "Softmax", "Tanh"};
static const kiln_loss LOSSES[] = {KILN_LOSS_BINARY_CROSSENTROPY,
                                   KILN_LOSS_CATEGORICAL_CROSSENTROPY,
                                   KILN_LOSS_SPARSE_CATEGORICAL_CROSSENTROPY,
                                   KILN_LOSS_MEAN_SQUARED_ERROR, KILN_LOSS_MEAN_ABSOLUTE_ERROR};

/* input(5) -> dense "h" (7, hidden act) [-> dropout] -> dense "out" (units, out act). */
static kiln_model *build(kiln_activation hidden, kiln_activation out_act, int64_t units,
                         int dropout, kiln_loss loss, const char *metric) {
  kiln_model *m = NULL;
  kiln_error err = {0};
  kiln_node n;
  assert_int_equal(kiln_model_create(7, &m, &err), KILN_OK);
  assert_int_equal(kiln_model_input(m, "features", 5, &n, &err), KILN_OK);
  kiln_dense_options o;
  kiln_dense_options_init(&o);
  o.activation = hidden;
  o.name = "h";
  assert_int_equal(kiln_model_dense(m, n, 7, &o, &n, &err), KILN_OK);
  if (dropout) assert_int_equal(kiln_model_dropout(m, n, 0.5f, "drop", &n, &err), KILN_OK);
  o.activation = out_act;
  o.name = "out";
  assert_int_equal(kiln_model_dense(m, n, units, &o, &n, &err), KILN_OK);
  /* Non-zero biases, so a bias that is lost or misplaced shows. */
  for (int k = 0; k < kiln_model_layer_count(m); k++) {
    kiln_layer_info li;
    assert_int_equal(kiln_model_layer(m, k, &li, &err), KILN_OK);
    if (li.kind == KILN_LAYER_DENSE)
      for (int64_t j = 0; j < li.out_features; j++) li.bias[j] = 0.05f * (float)(j + 1) - 0.1f;
  }
  kiln_optimizer opt;
  kiln_optimizer_init(&opt, KILN_OPTIMIZER_ADAM);
  const char *metrics[2] = {metric, "mse"};
  assert_int_equal(kiln_model_compile(m, &opt, loss, metrics, metric ? 2 : 0, &err), KILN_OK);
  return m;
}

static const kiln_ir_node *find_node(const kiln_ir_graph *g, const char *name) {
  for (int i = 0; i < g->n_nodes; i++)
    if (strcmp(g->nodes[i].name, name) == 0) return &g->nodes[i];
  return NULL;
}

static int64_t attr_i(const kiln_ir_node *n, const char *name) {
  const kiln_ir_attr *a = kiln_ir_node_attr(n, name);
  assert_non_null(a);
  assert_int_equal(a->type, KILN_ATTR_INT);
  return a->i;
}

static void check_dense(const kiln_ir_graph *g, const kiln_model *m, const char *layer,
                        const char *input, kiln_activation act, int matmul) {
  kiln_node idx;
  kiln_layer_info li;
  kiln_error err = {0};
  assert_int_equal(kiln_model_find_layer(m, layer, &idx, &err), KILN_OK);
  assert_int_equal(kiln_model_layer(m, idx, &li, &err), KILN_OK);
  char kname[64], bname[64], nname[64], lin[64];
  snprintf(kname, sizeof kname, "%s/kernel", layer);
  snprintf(bname, sizeof bname, "%s/bias", layer);
  const kiln_ir_tensor *k = kiln_ir_find_initializer(g, kname);
  const kiln_ir_tensor *b = kiln_ir_find_initializer(g, bname);
  assert_non_null(k);
  assert_non_null(b);
  assert_int_equal(k->dtype, KILN_DTYPE_FLOAT);
  assert_int_equal(k->rank, 2);
  assert_int_equal(k->dims[0], li.in_features);
  assert_int_equal(k->dims[1], li.out_features);
  assert_int_equal(b->rank, 1);
  assert_int_equal(b->dims[0], li.out_features);
  assert_memory_equal(k->data, li.kernel, (size_t)(li.in_features * li.out_features) * 4);
  assert_memory_equal(b->data, li.bias, (size_t)li.out_features * 4);
  const char *op = ACT_OPS[act];
  snprintf(lin, sizeof lin, op ? "%s/linear" : "%s", layer);
  if (!matmul) {
    snprintf(nname, sizeof nname, "%s/Gemm", layer);
    const kiln_ir_node *n = find_node(g, nname);
    assert_non_null(n);
    assert_string_equal(n->op_type, "Gemm");
    assert_int_equal(n->n_inputs, 3);
    assert_string_equal(n->inputs[0], input);
    assert_string_equal(n->inputs[1], kname);
    assert_string_equal(n->inputs[2], bname);
    assert_string_equal(n->outputs[0], lin);
    assert_int_equal(attr_i(n, "transA"), 0);
    assert_int_equal(attr_i(n, "transB"), 0);
    const kiln_ir_attr *alpha = kiln_ir_node_attr(n, "alpha");
    assert_non_null(alpha);
    assert_true(alpha->f == 1.0f);
  } else {
    snprintf(nname, sizeof nname, "%s/MatMul", layer);
    const kiln_ir_node *n = find_node(g, nname);
    assert_non_null(n);
    assert_string_equal(n->op_type, "MatMul");
    assert_int_equal(n->n_inputs, 2);
    assert_string_equal(n->inputs[0], input);
    assert_string_equal(n->inputs[1], kname);
    snprintf(nname, sizeof nname, "%s/Add", layer);
    const kiln_ir_node *a = find_node(g, nname);
    assert_non_null(a);
    assert_string_equal(a->op_type, "Add");
    assert_string_equal(a->inputs[0], n->outputs[0]);
    assert_string_equal(a->inputs[1], bname);
    assert_string_equal(a->outputs[0], lin);
  }
  if (op) {
    snprintf(nname, sizeof nname, "%s/%s", layer, op);
    const kiln_ir_node *n = find_node(g, nname);
    assert_non_null(n);
    assert_string_equal(n->op_type, op);
    assert_string_equal(n->inputs[0], lin);
    assert_string_equal(n->outputs[0], layer);
    if (act == KILN_ACTIVATION_SOFTMAX) assert_int_equal(attr_i(n, "axis"), -1);
  }
}

static void check_predictions_equal(kiln_model *a, kiln_model *b) {
  kiln_matrix x = {0}, pa = {0}, pb = {0};
  kiln_error err = {0};
  assert_int_equal(kiln_matrix_alloc(&x, 9, kiln_model_input_features(a), &err), KILN_OK);
  for (int64_t i = 0; i < x.rows * x.cols; i++) x.values[i] = sinf((float)i * 0.37f) * 2.0f;
  assert_int_equal(kiln_model_predict(a, &x, 4, &pa, &err), KILN_OK);
  assert_int_equal(kiln_model_predict(b, &x, 4, &pb, &err), KILN_OK);
  assert_int_equal(pa.rows, pb.rows);
  assert_int_equal(pa.cols, pb.cols);
  assert_memory_equal(pa.values, pb.values, (size_t)(pa.rows * pa.cols) * sizeof(float));
  kiln_matrix_free(&x);
  kiln_matrix_free(&pa);
  kiln_matrix_free(&pb);
}

static void check_same_weights(const kiln_model *a, const kiln_model *b) {
  kiln_error err = {0};
  int na = kiln_model_layer_count(a), nb = kiln_model_layer_count(b);
  int j = 0;
  for (int i = 0; i < na; i++) {
    kiln_layer_info la, lb;
    assert_int_equal(kiln_model_layer(a, i, &la, &err), KILN_OK);
    if (la.kind == KILN_LAYER_DROPOUT) continue; /* gone at export */
    assert_true(j < nb);
    assert_int_equal(kiln_model_layer(b, j++, &lb, &err), KILN_OK);
    assert_int_equal(la.kind, lb.kind);
    assert_string_equal(la.name, lb.name);
    assert_int_equal(la.out_features, lb.out_features);
    if (la.kind != KILN_LAYER_DENSE) continue;
    assert_int_equal(la.activation, lb.activation);
    assert_memory_equal(la.kernel, lb.kernel, (size_t)(la.in_features * la.out_features) * 4);
    assert_memory_equal(la.bias, lb.bias, (size_t)la.out_features * 4);
  }
  assert_int_equal(j, nb);
}

/* Every hidden x output activation x loss x dropout x Gemm/MatMul x opset. */
static void test_every_combination(void **state) {
  (void)state;
  int cases = 0;
  for (int h = 0; h < 5; h++)
    for (int o = 0; o < 5; o++)
      for (int l = 0; l < 5; l++)
        for (int dropout = 0; dropout < 2; dropout++)
          for (int matmul = 0; matmul < 2; matmul++) {
            int opset = (h + o + l + dropout) % 2 ? 17 : 13;
            kiln_loss loss = LOSSES[l];
            int64_t units = loss == KILN_LOSS_BINARY_CROSSENTROPY ? 1 : 3;
            const char *metric =
                loss <= KILN_LOSS_SPARSE_CATEGORICAL_CROSSENTROPY ? "accuracy" : "mae";
            kiln_model *m = build(ACTS[h], ACTS[o], units, dropout, loss, metric);
            kiln_export_options opt;
            kiln_export_options_init(&opt);
            assert_int_equal(opt.opset, 13);
            opt.opset = opset;
            opt.dense_as_matmul = matmul;
            kiln_ir_graph *g = NULL;
            kiln_error err = {0};
            if (kiln_model_lower(m, &opt, &g, &err)) fail_msg("%s", err.message);

            int per_layer = matmul ? 2 : 1;
            int want_nodes =
                2 * per_layer + (ACT_OPS[ACTS[h]] != NULL) + (ACT_OPS[ACTS[o]] != NULL);
            assert_int_equal(g->n_nodes, want_nodes);
            assert_int_equal(g->n_initializers, 4);
            for (int i = 0; i < g->n_nodes; i++) {
              assert_string_not_equal(g->nodes[i].op_type, "Dropout");
              assert_string_equal(g->nodes[i].domain, "");
            }
            check_dense(g, m, "h", "features", ACTS[h], matmul);
            /* Dropout is gone: "out" reads what the dropout read. */
            check_dense(g, m, "out", "h", ACTS[o], matmul);

            assert_int_equal(g->n_inputs, 1);
            assert_string_equal(g->inputs[0].name, "features");
            assert_int_equal(g->inputs[0].dtype, KILN_DTYPE_FLOAT);
            assert_int_equal(g->inputs[0].rank, 2);
            assert_true(g->inputs[0].dims[0].value < 0);
            assert_string_equal(g->inputs[0].dims[0].param, "batch");
            assert_int_equal(g->inputs[0].dims[1].value, 5);
            assert_int_equal(g->n_outputs, 1);
            assert_string_equal(g->outputs[0].name, "out");
            assert_string_equal(g->outputs[0].dims[0].param, "batch");
            assert_int_equal(g->outputs[0].dims[1].value, units);

            assert_int_equal(kiln_ir_opset_version(g, ""), opset);
            assert_int_equal(g->ir_version, opset == 17 ? 8 : 7);
            assert_string_equal(g->producer_name, "kiln");
            assert_string_equal(g->producer_version, "0.1.0");
            assert_string_equal(kiln_ir_get_meta(g, "kiln.loss"), kiln_loss_name(loss));
            char metrics[64];
            snprintf(metrics, sizeof metrics, "%s,mse", metric);
            assert_string_equal(kiln_ir_get_meta(g, "kiln.metrics"), metrics);
            assert_null(kiln_ir_get_meta(g, "kiln.class_names"));
            assert_null(kiln_ir_get_meta(g, "kiln.input_mean"));
            assert_int_equal(kiln_ir_toposort(g, &err), KILN_OK);

            kiln_model *back = NULL;
            if (kiln_model_from_ir(g, 3, &back, &err)) fail_msg("%s", err.message);
            check_same_weights(m, back);
            check_predictions_equal(m, back);
            /* The import is compiled with the recorded loss: lowering it again gives
             * the same metadata. */
            kiln_ir_graph *g2 = NULL;
            assert_int_equal(kiln_model_lower(back, &opt, &g2, &err), KILN_OK);
            assert_string_equal(kiln_ir_get_meta(g2, "kiln.loss"), kiln_loss_name(loss));
            assert_string_equal(kiln_ir_get_meta(g2, "kiln.metrics"), metrics);
            assert_int_equal(g2->n_nodes, g->n_nodes);
            kiln_ir_free(g2);
            kiln_model_free(back);
            kiln_ir_free(g);
            kiln_model_free(m);
            cases++;
          }
  assert_int_equal(cases, 500);
}

static void test_metadata_from_options(void **state) {
  (void)state;
  kiln_model *m = build(KILN_ACTIVATION_RELU, KILN_ACTIVATION_SOFTMAX, 3, 0,
                        KILN_LOSS_SPARSE_CATEGORICAL_CROSSENTROPY, NULL);
  kiln_export_options opt;
  kiln_export_options_init(&opt);
  const char *names[3] = {"cat", "dog \"big\"", "bird"};
  const float mean[5] = {0.5f, -1.0f, 2.0f, 0.0f, 1e-3f};
  const float std[5] = {1.0f, 2.0f, 0.25f, 3.0f, 1.0f};
  opt.class_names = names;
  opt.n_class_names = 3;
  opt.input_mean = mean;
  opt.input_std = std;
  opt.n_input_stats = 5;
  kiln_ir_graph *g = NULL;
  kiln_error err = {0};
  if (kiln_model_lower(m, &opt, &g, &err)) fail_msg("%s", err.message);
  assert_string_equal(kiln_ir_get_meta(g, "kiln.class_names"),
                      "[\"cat\",\"dog \\\"big\\\"\",\"bird\"]");
  assert_string_equal(kiln_ir_get_meta(g, "kiln.input_mean"), "[0.5,-1,2,0,0.00100000005]");
  assert_string_equal(kiln_ir_get_meta(g, "kiln.input_std"), "[1,2,0.25,3,1]");
  assert_string_equal(kiln_ir_get_meta(g, "kiln.loss"), "sparse_categorical_crossentropy");
  assert_null(kiln_ir_get_meta(g, "kiln.metrics"));
  kiln_ir_free(g);

  /* Wrong counts and opsets are refused, naming what was expected. */
  opt.n_class_names = 2;
  assert_int_equal(kiln_model_lower(m, &opt, &g, &err), KILN_E_SHAPE);
  assert_non_null(strstr(err.message, "class names"));
  assert_null(g);
  opt.n_class_names = 3;
  opt.n_input_stats = 4;
  assert_int_equal(kiln_model_lower(m, &opt, &g, &err), KILN_E_SHAPE);
  assert_non_null(strstr(err.message, "input_mean"));
  opt.n_input_stats = 5;
  opt.input_std = NULL;
  assert_int_equal(kiln_model_lower(m, &opt, &g, &err), KILN_E_SHAPE);
  opt.input_std = std;
  opt.opset = 11;
  assert_int_equal(kiln_model_lower(m, &opt, &g, &err), KILN_E_UNSUPPORTED);
  assert_non_null(strstr(err.message, "opset 11"));
  /* NULL options are the defaults. */
  assert_int_equal(kiln_model_lower(m, NULL, &g, &err), KILN_OK);
  assert_int_equal(kiln_ir_opset_version(g, ""), 13);
  assert_string_equal(g->nodes[0].op_type, "Gemm");
  kiln_ir_free(g);
  kiln_model_free(m);

  /* A binary model takes two class names for its one sigmoid unit. */
  m = build(KILN_ACTIVATION_RELU, KILN_ACTIVATION_SIGMOID, 1, 1, KILN_LOSS_BINARY_CROSSENTROPY,
            "accuracy");
  const char *two[2] = {"negative", "positive"};
  kiln_export_options_init(&opt);
  opt.class_names = two;
  opt.n_class_names = 2;
  assert_int_equal(kiln_model_lower(m, &opt, &g, &err), KILN_OK);
  assert_string_equal(kiln_ir_get_meta(g, "kiln.class_names"), "[\"negative\",\"positive\"]");
  kiln_ir_free(g);
  kiln_model_free(m);
}

/* A model never compiled has no loss metadata; its import is not compiled but predicts. */
static void test_uncompiled_and_sequential(void **state) {
  (void)state;
  kiln_model *m = NULL;
  kiln_error err = {0};
  assert_int_equal(kiln_model_create(1, &m, &err), KILN_OK);
  assert_int_equal(kiln_model_add_input(m, 4, &err), KILN_OK);
  assert_int_equal(kiln_model_add_dense(m, 6, KILN_ACTIVATION_TANH, &err), KILN_OK);
  assert_int_equal(kiln_model_add_dropout(m, 0.3f, &err), KILN_OK);
  assert_int_equal(kiln_model_add_dense(m, 2, KILN_ACTIVATION_LINEAR, &err), KILN_OK);
  kiln_ir_graph *g = NULL;
  assert_int_equal(kiln_model_lower(m, NULL, &g, &err), KILN_OK);
  assert_null(kiln_ir_get_meta(g, "kiln.loss"));
  assert_int_equal(g->n_nodes, 3);
  kiln_layer_info in, out;
  assert_int_equal(kiln_model_layer(m, 0, &in, &err), KILN_OK);
  assert_int_equal(kiln_model_layer(m, 3, &out, &err), KILN_OK);
  assert_string_equal(g->inputs[0].name, in.name);
  assert_string_equal(g->outputs[0].name, out.name);
  kiln_model *back = NULL;
  if (kiln_model_from_ir(g, 1, &back, &err)) fail_msg("%s", err.message);
  check_same_weights(m, back);
  check_predictions_equal(m, back);
  kiln_model_free(back);
  kiln_ir_free(g);
  kiln_model_free(m);
}

/* A model whose output is a Dropout: an Identity names the graph output after it. */
static void test_dropout_output(void **state) {
  (void)state;
  kiln_model *m = NULL;
  kiln_error err = {0};
  kiln_node n;
  assert_int_equal(kiln_model_create(1, &m, &err), KILN_OK);
  assert_int_equal(kiln_model_input(m, "x", 3, &n, &err), KILN_OK);
  assert_int_equal(kiln_model_dense(m, n, 2, NULL, &n, &err), KILN_OK);
  assert_int_equal(kiln_model_dropout(m, n, 0.2f, "final_drop", &n, &err), KILN_OK);
  kiln_ir_graph *g = NULL;
  if (kiln_model_lower(m, NULL, &g, &err)) fail_msg("%s", err.message);
  assert_string_equal(g->outputs[0].name, "final_drop");
  assert_int_equal(g->n_nodes, 2);
  assert_string_equal(g->nodes[1].op_type, "Identity");
  assert_string_equal(g->nodes[1].outputs[0], "final_drop");
  kiln_model *back = NULL;
  if (kiln_model_from_ir(g, 1, &back, &err)) fail_msg("%s", err.message);
  check_predictions_equal(m, back);
  kiln_model_free(back);
  kiln_ir_free(g);
  kiln_model_free(m);
}

/* Builds x -> Gemm -> <extra op> -> y by hand: a graph kiln did not write. */
static kiln_ir_graph *foreign_graph(const char *extra_op) {
  kiln_ir_graph *g = NULL;
  kiln_error err = {0};
  assert_int_equal(kiln_ir_create("foreign", &g, &err), KILN_OK);
  assert_int_equal(kiln_ir_set_opset(g, "", 13, &err), KILN_OK);
  float w[6] = {1, 2, 3, 4, 5, 6}, b[2] = {0.5f, -0.5f};
  int64_t wd[2] = {3, 2}, bd[1] = {2};
  assert_int_equal(kiln_ir_add_initializer(g, "W", KILN_DTYPE_FLOAT, wd, 2, w, &err), KILN_OK);
  assert_int_equal(kiln_ir_add_initializer(g, "B", KILN_DTYPE_FLOAT, bd, 1, b, &err), KILN_OK);
  const char *gin[3] = {"x", "W", "B"};
  const char *gout[1] = {extra_op ? "z" : "y"};
  assert_int_equal(kiln_ir_add_node(g, "Gemm", "fc", gin, 3, gout, 1, NULL, &err), KILN_OK);
  if (extra_op) {
    const char *ein[1] = {"z"};
    const char *eout[1] = {"y"};
    assert_int_equal(kiln_ir_add_node(g, extra_op, "odd_one", ein, 1, eout, 1, NULL, &err),
                     KILN_OK);
  }
  int64_t in_dims[2] = {-1, 3}, out_dims[2] = {-1, 2};
  const char *params[2] = {"N", NULL};
  assert_int_equal(kiln_ir_add_input(g, "x", KILN_DTYPE_FLOAT, in_dims, params, 2, &err), KILN_OK);
  assert_int_equal(kiln_ir_add_output(g, "y", KILN_DTYPE_FLOAT, out_dims, params, 2, &err),
                   KILN_OK);
  return g;
}

static void test_foreign_graphs(void **state) {
  (void)state;
  kiln_error err = {0};
  kiln_model *m = NULL;

  /* A plain Gemm from another tool is still a Dense layer. */
  kiln_ir_graph *g = foreign_graph(NULL);
  assert_int_equal(kiln_model_from_ir(g, 1, &m, &err), KILN_OK);
  assert_int_equal(kiln_model_input_features(m), 3);
  assert_int_equal(kiln_model_output_features(m), 2);
  kiln_model_free(m);
  m = NULL;
  kiln_ir_free(g);

  /* An op kiln does not export: refused, naming the node and its op. */
  g = foreign_graph("LeakyRelu");
  assert_int_equal(kiln_model_from_ir(g, 1, &m, &err), KILN_E_UNSUPPORTED);
  assert_null(m);
  assert_non_null(strstr(err.message, "odd_one"));
  assert_non_null(strstr(err.message, "LeakyRelu"));
  kiln_ir_free(g);

  /* A Gemm with transA. */
  g = foreign_graph(NULL);
  assert_int_equal(kiln_ir_node_set_int(&g->nodes[0], "transA", 1, &err), KILN_OK);
  assert_int_equal(kiln_model_from_ir(g, 1, &m, &err), KILN_E_UNSUPPORTED);
  assert_non_null(strstr(err.message, "'fc'"));
  kiln_ir_free(g);

  /* A kernel that is not an initializer (a second graph input). */
  g = foreign_graph(NULL);
  free(g->nodes[0].inputs[1]);
  g->nodes[0].inputs[1] = strdup("x2");
  assert_int_equal(kiln_model_from_ir(g, 1, &m, &err), KILN_E_UNSUPPORTED);
  assert_non_null(strstr(err.message, "'fc'"));
  assert_non_null(strstr(err.message, "kernel"));
  kiln_ir_free(g);

  /* A Conv where kiln expects a Dense layer. */
  g = foreign_graph(NULL);
  free(g->nodes[0].op_type);
  g->nodes[0].op_type = strdup("Conv");
  assert_int_equal(kiln_model_from_ir(g, 1, &m, &err), KILN_E_UNSUPPORTED);
  assert_non_null(strstr(err.message, "'fc' (Conv)"));
  kiln_ir_free(g);

  /* A node hanging off the chain. */
  g = foreign_graph(NULL);
  const char *in[1] = {"W"};
  const char *out[1] = {"unused"};
  assert_int_equal(kiln_ir_add_node(g, "Neg", "side", in, 1, out, 1, NULL, &err), KILN_OK);
  assert_int_equal(kiln_model_from_ir(g, 1, &m, &err), KILN_E_UNSUPPORTED);
  assert_non_null(strstr(err.message, "'side'"));
  kiln_ir_free(g);

  /* A branch: the input read twice. */
  g = foreign_graph(NULL);
  const char *bin[1] = {"x"};
  const char *bout[1] = {"x_neg"};
  assert_int_equal(kiln_ir_add_node(g, "Neg", "branch", bin, 1, bout, 1, NULL, &err), KILN_OK);
  assert_int_equal(kiln_model_from_ir(g, 1, &m, &err), KILN_E_UNSUPPORTED);
  assert_non_null(strstr(err.message, "branching"));
  kiln_ir_free(g);

  /* A recorded loss kiln does not know. */
  g = foreign_graph(NULL);
  assert_int_equal(kiln_ir_set_meta(g, "kiln.loss", "hinge", &err), KILN_OK);
  assert_int_not_equal(kiln_model_from_ir(g, 1, &m, &err), KILN_OK);
  assert_non_null(strstr(err.message, "kiln.loss"));
  assert_null(m);
  kiln_ir_free(g);
}

/* PyTorch's exports of the same shapes (Gemm with transB = 1, MatMul + Add): imported
 * as Dense layers, they predict what torch did. */
static void test_import_torch(void **state) {
  (void)state;
  const char *src = getenv("KILN_SOURCE_DIR");
  static const char *const names[] = {"housing", "housing_matmul", "imdb", "reuters_matmul",
                                      "dropout_tanh"};
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
    char path[1024];
    kiln_error err = {0};
    kiln_matrix x = {0}, y = {0}, p = {0};
    snprintf(path, sizeof path, "%s/tests/integration/torch/fixtures/%s_x.npy", src ? src : ".",
             names[i]);
    if (kiln_npy_read(path, &x, &err)) fail_msg("%s", err.message);
    snprintf(path, sizeof path, "%s/tests/integration/torch/fixtures/%s_y.npy", src ? src : ".",
             names[i]);
    assert_int_equal(kiln_npy_read(path, &y, &err), KILN_OK);
    snprintf(path, sizeof path, "%s/tests/integration/torch/fixtures/%s_opset13.onnx",
             src ? src : ".", names[i]);
    kiln_ir_graph *g = NULL;
    kiln_model *m = NULL;
    if (kiln_onnx_read_file(path, &g, &err)) fail_msg("%s", err.message);
    if (kiln_model_from_ir(g, 1, &m, &err)) fail_msg("%s: %s", path, err.message);
    assert_int_equal(kiln_model_predict(m, &x, 16, &p, &err), KILN_OK);
    assert_int_equal(p.rows, y.rows);
    assert_int_equal(p.cols, y.cols);
    for (int64_t k = 0; k < p.rows * p.cols; k++)
      if (!(fabsf(p.values[k] - y.values[k]) <= 1e-5f))
        fail_msg("%s: output %lld: kiln %g, torch %g", path, (long long)k, (double)p.values[k],
                 (double)y.values[k]);
    /* Not compiled: torch records no loss. */
    assert_null(kiln_ir_get_meta(g, "kiln.loss"));
    kiln_matrix_free(&x);
    kiln_matrix_free(&y);
    kiln_matrix_free(&p);
    kiln_model_free(m);
    kiln_ir_free(g);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_every_combination),
      cmocka_unit_test(test_metadata_from_options),
      cmocka_unit_test(test_uncompiled_and_sequential),
      cmocka_unit_test(test_dropout_output),
      cmocka_unit_test(test_foreign_graphs),
      cmocka_unit_test(test_import_torch),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

/* The multi-input/multi-output functional API: Concatenate (dense and CSR), several
 * Inputs and outputs, per-output compile and Keras 3 log names, data by position or
 * by name and every bad-input error, checkpoints of such graphs, feature extraction
 * sharing weights, the functional summary and the low-level training loop. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kiln/callbacks.h"
#include "model_internal.h"

#define OK(call) assert_int_equal((call), KILN_OK)

static void expect_error(kiln_status got, kiln_status want, const kiln_error *err,
                         const char *needle) {
  assert_int_equal(got, want);
  if (!strstr(err->message, needle)) fail_msg("\"%s\" lacks \"%s\"", err->message, needle);
}

static void fill(kiln_matrix *m, int64_t rows, int64_t cols, kiln_rng *r, float lo, float hi) {
  OK(kiln_matrix_alloc(m, rows, cols, NULL));
  for (int64_t i = 0; i < rows * cols; i++) m->values[i] = lo + (hi - lo) * kiln_rng_uniform(r);
}

/* Multi-hot rows: each column on with probability p. */
static void multi_hot(kiln_matrix *m, int64_t rows, int64_t cols, kiln_rng *r, float p) {
  OK(kiln_matrix_alloc(m, rows, cols, NULL));
  for (int64_t i = 0; i < rows * cols; i++) m->values[i] = kiln_rng_uniform(r) < p ? 1.0f : 0.0f;
}

static kiln_io io_pos(int n, const kiln_matrix *const *data) {
  kiln_io io;
  memset(&io, 0, sizeof io);
  io.n = n;
  for (int i = 0; i < n; i++) io.data[i] = data[i];
  return io;
}

static kiln_io io_named(int n, const char *const *names, const kiln_matrix *const *data) {
  kiln_io io = io_pos(n, data);
  for (int i = 0; i < n; i++) io.names[i] = names[i];
  return io;
}

/* --- a small ticket model: title (12) / body (10) / tags (4) -> priority, department --- */

typedef struct ticket_data {
  kiln_matrix title, body, tags, priority, department;
} ticket_data;

static void ticket_data_make(ticket_data *d, int64_t rows, uint64_t seed) {
  kiln_rng r;
  kiln_rng_seed(&r, seed, 11);
  multi_hot(&d->title, rows, 12, &r, 0.3f);
  multi_hot(&d->body, rows, 10, &r, 0.3f);
  multi_hot(&d->tags, rows, 4, &r, 0.5f);
  OK(kiln_matrix_alloc(&d->priority, rows, 1, NULL));
  OK(kiln_matrix_alloc(&d->department, rows, 1, NULL));
  for (int64_t i = 0; i < rows; i++) {
    float t = d->title.values[i * 12] + d->body.values[i * 10 + 1] + d->tags.values[i * 4 + 2];
    d->priority.values[i] = t / 3.0f;
    d->department.values[i] = (float)((int)(d->title.values[i * 12 + 3] + 2 * d->tags.values[i * 4]) % 4);
  }
}

static void ticket_data_free(ticket_data *d) {
  kiln_matrix_free(&d->title);
  kiln_matrix_free(&d->body);
  kiln_matrix_free(&d->tags);
  kiln_matrix_free(&d->priority);
  kiln_matrix_free(&d->department);
}

static kiln_model *ticket_model(uint64_t seed, int compile) {
  kiln_model *m;
  kiln_node title, body, tags, cat, feat, pri, dep;
  OK(kiln_model_create(seed, &m, NULL));
  OK(kiln_model_input(m, "title", 12, &title, NULL));
  OK(kiln_model_input(m, "text_body", 10, &body, NULL));
  OK(kiln_model_input(m, "tags", 4, &tags, NULL));
  kiln_node ins[] = {title, body, tags};
  OK(kiln_model_concatenate(m, ins, 3, NULL, &cat, NULL));
  kiln_dense_options o;
  kiln_dense_options_init(&o);
  o.activation = KILN_ACTIVATION_RELU;
  OK(kiln_model_dense(m, cat, 8, &o, &feat, NULL));
  o.activation = KILN_ACTIVATION_SIGMOID;
  o.name = "priority";
  OK(kiln_model_dense(m, feat, 1, &o, &pri, NULL));
  o.activation = KILN_ACTIVATION_SOFTMAX;
  o.name = "department";
  OK(kiln_model_dense(m, feat, 4, &o, &dep, NULL));
  OK(kiln_model_set_inputs(m, ins, 3, NULL));
  kiln_node outs[] = {pri, dep};
  OK(kiln_model_set_outputs(m, outs, 2, NULL));
  if (compile) {
    kiln_optimizer opt;
    kiln_optimizer_init(&opt, KILN_OPTIMIZER_RMSPROP);
    kiln_output_config c[2];
    static const char *const m0[] = {"mae"}, *const m1[] = {"accuracy"};
    kiln_output_config_init(&c[0]);
    kiln_output_config_init(&c[1]);
    c[0].loss = KILN_LOSS_MEAN_SQUARED_ERROR;
    c[0].metrics = m0;
    c[0].n_metrics = 1;
    c[1].loss = KILN_LOSS_SPARSE_CATEGORICAL_CROSSENTROPY;
    c[1].metrics = m1;
    c[1].n_metrics = 1;
    OK(kiln_model_compile_outputs(m, &opt, c, 2, NULL));
  }
  return m;
}

static void ticket_io(const ticket_data *d, kiln_io *x, kiln_io *y) {
  const kiln_matrix *xs[] = {&d->title, &d->body, &d->tags};
  const kiln_matrix *ys[] = {&d->priority, &d->department};
  *x = io_pos(3, xs);
  *y = io_pos(2, ys);
}

static int same_weights(const kiln_model *a, const kiln_model *b) {
  if (kiln_model_layer_count(a) != kiln_model_layer_count(b)) return 0;
  for (int i = 0; i < kiln_model_layer_count(a); i++) {
    kiln_layer_info la, lb;
    OK(kiln_model_layer(a, i, &la, NULL));
    OK(kiln_model_layer(b, i, &lb, NULL));
    if (la.kind != lb.kind || la.out_features != lb.out_features) return 0;
    if (la.kind != KILN_LAYER_DENSE) continue;
    if (memcmp(la.kernel, lb.kernel, (size_t)(la.in_features * la.out_features) * 4) ||
        memcmp(la.bias, lb.bias, (size_t)la.out_features * 4))
      return 0;
  }
  return 1;
}

/* --- Concatenate forward by hand ----------------------------------------------- */

static void test_concat_forward_by_hand(void **state) {
  kiln_model *m;
  kiln_node a, b, cat, d;
  OK(kiln_model_create(1, &m, NULL));
  OK(kiln_model_input(m, "a", 2, &a, NULL));
  OK(kiln_model_input(m, "b", 1, &b, NULL));
  kiln_node ins[] = {b, a}; /* order is the concatenation's */
  OK(kiln_model_concatenate(m, ins, 2, "cat", &cat, NULL));
  OK(kiln_model_dense(m, cat, 2, NULL, &d, NULL));
  kiln_layer_info li;
  OK(kiln_model_layer(m, cat, &li, NULL));
  assert_int_equal(li.kind, KILN_LAYER_CONCATENATE);
  assert_int_equal(li.n_inputs, 2);
  assert_int_equal(li.inputs[0], b);
  assert_int_equal(li.inputs[1], a);
  assert_int_equal(li.out_features, 3);
  OK(kiln_model_layer(m, d, &li, NULL));
  /* kernel rows: b, a0, a1 */
  const float k[] = {1, -1, 2, 0.5f, -3, 4};
  memcpy(li.kernel, k, sizeof k);
  li.bias[0] = 0.25f;
  li.bias[1] = -0.5f;
  kiln_node outs[] = {cat, d};
  OK(kiln_model_set_outputs(m, outs, 2, NULL));
  kiln_matrix xa, xb;
  OK(kiln_matrix_alloc(&xa, 2, 2, NULL));
  OK(kiln_matrix_alloc(&xb, 2, 1, NULL));
  const float va[] = {1, 2, -1, 0.5f}, vb[] = {3, -2};
  memcpy(xa.values, va, sizeof va);
  memcpy(xb.values, vb, sizeof vb);
  const kiln_matrix *xs[] = {&xa, &xb};
  kiln_io x = io_pos(2, xs);
  kiln_matrix out[2];
  kiln_error err = {0};
  OK(kiln_model_predict_io(m, &x, 8, out, &err));
  const float want_cat[] = {3, 1, 2, -2, -1, 0.5f};
  for (int i = 0; i < 6; i++) assert_float_equal(out[0].values[i], want_cat[i], 0);
  /* row 0: [3,1,2] . columns + bias */
  float z00 = 0.25f + 3 * 1 + 1 * 2 + 2 * -3, z01 = -0.5f + 3 * -1 + 1 * 0.5f + 2 * 4;
  float z10 = 0.25f + -2 * 1 + -1 * 2 + 0.5f * -3, z11 = -0.5f + -2 * -1 + -1 * 0.5f + 0.5f * 4;
  assert_float_equal(out[1].values[0], z00, 1e-6);
  assert_float_equal(out[1].values[1], z01, 1e-6);
  assert_float_equal(out[1].values[2], z10, 1e-6);
  assert_float_equal(out[1].values[3], z11, 1e-6);
  kiln_matrix_free(&out[0]);
  kiln_matrix_free(&out[1]);
  /* The same with a fed as CSR: the Dense after the Concatenate takes the CSR concatenation. */
  kiln_model_free(m);
  OK(kiln_model_create(1, &m, NULL));
  OK(kiln_model_input(m, "a", 2, &a, NULL));
  OK(kiln_model_input(m, "b", 1, &b, NULL));
  OK(kiln_model_concatenate(m, ins, 2, "cat", &cat, NULL));
  OK(kiln_model_dense(m, cat, 2, NULL, &d, NULL));
  OK(kiln_model_layer(m, d, &li, NULL));
  memcpy(li.kernel, k, sizeof k);
  li.bias[0] = 0.25f;
  li.bias[1] = -0.5f;
  kiln_matrix csr;
  OK(kiln_matrix_to_csr(&xa, &csr, NULL));
  const kiln_matrix *xs2[] = {&csr, &xb};
  x = io_pos(2, xs2);
  OK(kiln_model_predict_io(m, &x, 1, out, &err));
  assert_float_equal(out[0].values[0], z00, 1e-6);
  assert_float_equal(out[0].values[1], z01, 1e-6);
  assert_float_equal(out[0].values[2], z10, 1e-6);
  assert_float_equal(out[0].values[3], z11, 1e-6);
  kiln_matrix_free(&out[0]);
  /* A Concatenate fed CSR as an output is refused with a way out. */
  kiln_model_free(m);
  OK(kiln_model_create(1, &m, NULL));
  OK(kiln_model_input(m, "a", 2, &a, NULL));
  OK(kiln_model_input(m, "b", 1, &b, NULL));
  OK(kiln_model_concatenate(m, ins, 2, "cat", &cat, NULL));
  expect_error(kiln_model_predict_io(m, &x, 4, out, &err), KILN_E_UNSUPPORTED, &err,
               "output \"cat\" would be sparse");
  kiln_model_free(m);
  kiln_matrix_free(&csr);
  kiln_matrix_free(&xa);
  kiln_matrix_free(&xb);
}

/* --- finite differences through Concatenate with weighted outputs ---------------- */

typedef struct grad_case {
  int csr;          /* input a fed as CSR */
  int chained;      /* output 0 also feeds output 2 (its loss gradient is added, not fused) */
} grad_case;

static double loss_at(kiln_model *m, const kiln_io *x, const kiln_io *y) {
  double loss;
  OK(kiln_model_gradients_io(m, x, y, 1, &loss, NULL, NULL));
  return loss;
}

static void check_multi_gradients(const grad_case *c) {
  const int64_t rows = 5;
  kiln_rng r;
  kiln_rng_seed(&r, 3, 7);
  kiln_model *m;
  kiln_node a, b, h, cat, sh, o1, o2, o3;
  OK(kiln_model_create(9, &m, NULL));
  OK(kiln_model_input(m, "a", 4, &a, NULL));
  OK(kiln_model_input(m, "b", 3, &b, NULL));
  kiln_dense_options o;
  kiln_dense_options_init(&o);
  o.activation = KILN_ACTIVATION_TANH;
  o.kernel_regularizer.l2 = 0.01f;
  OK(kiln_model_dense(m, b, 3, &o, &h, NULL)); /* a trainable branch into the Concatenate */
  kiln_node ins[] = {a, h, b};
  OK(kiln_model_concatenate(m, ins, 3, NULL, &cat, NULL));
  o.kernel_regularizer.l2 = 0;
  OK(kiln_model_dense(m, cat, 5, &o, &sh, NULL));
  o.activation = KILN_ACTIVATION_SIGMOID;
  o.name = "bin";
  OK(kiln_model_dense(m, sh, 1, &o, &o1, NULL));
  o.activation = KILN_ACTIVATION_SOFTMAX;
  o.name = "cls";
  OK(kiln_model_dense(m, sh, 3, &o, &o2, NULL));
  int n_out = 2;
  kiln_node outs[3] = {o1, o2, -1};
  if (c->chained) {
    o.activation = KILN_ACTIVATION_LINEAR;
    o.name = "reg";
    OK(kiln_model_dense(m, o1, 2, &o, &o3, NULL));
    outs[2] = o3;
    n_out = 3;
  }
  kiln_node inputs[] = {a, b};
  OK(kiln_model_set_inputs(m, inputs, 2, NULL));
  OK(kiln_model_set_outputs(m, outs, n_out, NULL));
  kiln_output_config cfg[3];
  for (int k = 0; k < 3; k++) kiln_output_config_init(&cfg[k]);
  cfg[0].loss = KILN_LOSS_BINARY_CROSSENTROPY;
  cfg[0].loss_weight = 0.7f;
  cfg[1].loss = KILN_LOSS_SPARSE_CATEGORICAL_CROSSENTROPY;
  cfg[1].loss_weight = 1.5f;
  cfg[2].loss = KILN_LOSS_MEAN_SQUARED_ERROR;
  cfg[2].loss_weight = 0.5f;
  kiln_optimizer opt;
  kiln_optimizer_init(&opt, KILN_OPTIMIZER_SGD);
  OK(kiln_model_compile_outputs(m, &opt, cfg, n_out, NULL));
  assert_int_equal(m->outs[0].direct, !c->chained);
  assert_int_equal(m->layers[o1].fused, !c->chained);
  for (int i = 0; i < m->n_layers; i++)
    if (m->layers[i].bias)
      for (int64_t j = 0; j < m->layers[i].out_features; j++)
        m->layers[i].bias[j] = 0.1f * (float)(j + 1) - 0.15f;

  kiln_matrix xa, xb, xa_csr = {0}, y1, y2, y3;
  fill(&xa, rows, 4, &r, -1, 1);
  for (int64_t i = 0; i < rows * 4; i++)
    if (i % 3 == 1) xa.values[i] = 0.0f;
  if (c->csr) OK(kiln_matrix_to_csr(&xa, &xa_csr, NULL));
  fill(&xb, rows, 3, &r, -1, 1);
  OK(kiln_matrix_alloc(&y1, rows, 1, NULL));
  OK(kiln_matrix_alloc(&y2, rows, 1, NULL));
  fill(&y3, rows, 2, &r, -1, 1);
  for (int64_t i = 0; i < rows; i++) {
    y1.values[i] = (float)(i % 2);
    y2.values[i] = (float)(i % 3);
  }
  const kiln_matrix *xs[] = {c->csr ? &xa_csr : &xa, &xb};
  const kiln_matrix *ys[] = {&y1, &y2, &y3};
  kiln_io x = io_pos(2, xs), y = io_pos(n_out, ys);

  /* The total is the weighted sum of the outputs' losses plus the penalty. */
  double loss, per[3];
  OK(kiln_model_gradients_io(m, &x, &y, 1, &loss, per, NULL));
  double want = 0;
  for (int k = 0; k < n_out; k++) want += cfg[k].loss_weight * per[k];
  assert_float_equal(loss, want + kiln_regularization(m, 0), 1e-9);

  float *grads[16] = {0};
  for (int i = 0; i < m->n_layers; i++) {
    kiln_layer *l = &m->layers[i];
    if (l->kind != KILN_LAYER_DENSE) continue;
    int64_t nk = l->in_features * l->out_features;
    grads[i] = malloc((size_t)(nk + l->out_features) * sizeof(float));
    memcpy(grads[i], l->grad_kernel, (size_t)nk * sizeof(float));
    memcpy(grads[i] + nk, l->grad_bias, (size_t)l->out_features * sizeof(float));
  }
  int checked = 0;
  for (int i = 0; i < m->n_layers; i++) {
    kiln_layer *l = &m->layers[i];
    if (l->kind != KILN_LAYER_DENSE) continue;
    int64_t nk = l->in_features * l->out_features;
    for (int64_t k = 0; k < nk + l->out_features; k++) {
      float *w = k < nk ? &l->kernel[k] : &l->bias[k - nk];
      float saved = *w, step = 2e-3f;
      *w = saved + step;
      double lp = loss_at(m, &x, &y);
      *w = saved - step;
      double lm = loss_at(m, &x, &y);
      *w = saved;
      double numeric = (lp - lm) / (2.0 * step);
      if (fabs(numeric - grads[i][k]) > 2e-3 + 2e-2 * fabs(numeric))
        fail_msg("layer %s param %lld: analytic %.6f numeric %.6f (csr %d chained %d)", l->name,
                 (long long)k, grads[i][k], numeric, c->csr, c->chained);
      checked++;
    }
    free(grads[i]);
  }
  assert_true(checked > 50);
  kiln_matrix_free(&xa);
  kiln_matrix_free(&xa_csr);
  kiln_matrix_free(&xb);
  kiln_matrix_free(&y1);
  kiln_matrix_free(&y2);
  kiln_matrix_free(&y3);
  kiln_model_free(m);
}

static void test_gradients_through_concatenate(void **state) {
  grad_case cases[] = {{0, 0}, {1, 0}, {0, 1}, {1, 1}};
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) check_multi_gradients(&cases[i]);
}

/* --- logs, data by name, validation ------------------------------------------------ */

static void test_log_names_and_values(void **state) {
  ticket_data d;
  ticket_data_make(&d, 200, 1);
  kiln_model *m = ticket_model(5, 1);
  assert_int_equal(kiln_model_input_count(m), 3);
  assert_int_equal(kiln_model_output_count(m), 2);
  assert_int_equal(kiln_model_output_loss(m, 1), KILN_LOSS_SPARSE_CATEGORICAL_CROSSENTROPY);
  assert_float_equal(kiln_model_output_loss_weight(m, 0), 1.0, 0);
  kiln_io x, y;
  ticket_io(&d, &x, &y);
  kiln_fit_options fo;
  kiln_fit_options_init(&fo);
  fo.epochs = 2;
  fo.batch_size = 16;
  fo.validation_split = 0.2;
  kiln_history h = {0};
  kiln_error err = {0};
  OK(kiln_model_fit_io(m, &x, &y, &fo, &h, &err));
  static const char *const keys[] = {
      "loss", "priority_loss", "department_loss", "priority_mae", "department_accuracy",
      "val_loss", "val_priority_loss", "val_department_loss", "val_priority_mae",
      "val_department_accuracy"};
  assert_int_equal(h.n_keys, 10);
  for (int i = 0; i < 10; i++) assert_string_equal(h.keys[i], keys[i]);
  /* The total is the sum of the (unweighted, weight 1) per-output losses. */
  double total = kiln_history_get(&h, "val_loss", 1);
  assert_float_equal(total, kiln_history_get(&h, "val_priority_loss", 1) +
                                kiln_history_get(&h, "val_department_loss", 1), 1e-9);
  kiln_logs logs;
  OK(kiln_model_evaluate_io(m, &x, &y, 64, &logs, &err));
  assert_int_equal(logs.n, 5);
  assert_string_equal(logs.keys[4], "department_accuracy");
  assert_float_equal(logs.values[0], logs.values[1] + logs.values[2], 1e-9);
  kiln_history_free(&h);
  kiln_model_free(m);

  /* With loss weights the total weighs them; kiln_model_compile applies one loss to all. */
  m = ticket_model(5, 0);
  kiln_optimizer opt;
  kiln_optimizer_init(&opt, KILN_OPTIMIZER_SGD);
  kiln_output_config c[2];
  kiln_output_config_init(&c[0]);
  kiln_output_config_init(&c[1]);
  c[0].output = "department"; /* by name, in any order */
  c[0].loss = KILN_LOSS_SPARSE_CATEGORICAL_CROSSENTROPY;
  c[0].loss_weight = 0.25f;
  c[1].output = "priority";
  c[1].loss = KILN_LOSS_MEAN_SQUARED_ERROR;
  c[1].loss_weight = 2.0f;
  OK(kiln_model_compile_outputs(m, &opt, c, 2, &err));
  assert_float_equal(kiln_model_output_loss_weight(m, 0), 2.0, 0);
  assert_int_equal(kiln_model_output_loss(m, 0), KILN_LOSS_MEAN_SQUARED_ERROR);
  OK(kiln_model_evaluate_io(m, &x, &y, 64, &logs, &err));
  assert_int_equal(logs.n, 3);
  assert_string_equal(logs.keys[1], "priority_loss");
  assert_float_equal(logs.values[0], 2.0 * logs.values[1] + 0.25 * logs.values[2], 1e-9);
  const char *acc[] = {"mse"};
  OK(kiln_model_compile(m, &opt, KILN_LOSS_MEAN_SQUARED_ERROR, acc, 1, &err));
  assert_int_equal(kiln_model_output_loss(m, 1), KILN_LOSS_MEAN_SQUARED_ERROR);
  kiln_matrix dep1h;
  OK(kiln_matrix_alloc(&dep1h, 200, 4, NULL));
  const kiln_matrix *ys[] = {&d.priority, &dep1h};
  kiln_io y2 = io_pos(2, ys);
  OK(kiln_model_evaluate_io(m, &x, &y2, 64, &logs, &err));
  static const char *const k2[] = {"loss", "priority_loss", "department_loss", "priority_mse",
                                   "department_mse"};
  assert_int_equal(logs.n, 5);
  for (int i = 0; i < 5; i++) assert_string_equal(logs.keys[i], k2[i]);
  /* A metric added to one output is logged under its name. */
  kiln_metric *extra;
  OK(kiln_metric_create("top_2_accuracy", KILN_LOSS_SPARSE_CATEGORICAL_CROSSENTROPY, &extra, &err));
  OK(kiln_model_add_output_metric(m, 1, extra, &err));
  OK(kiln_model_evaluate_io(m, &x, &y2, 64, &logs, &err));
  assert_int_equal(logs.n, 6);
  assert_string_equal(logs.keys[5], "department_top_2_accuracy");
  OK(kiln_metric_create("mae", KILN_LOSS_MEAN_SQUARED_ERROR, &extra, &err));
  expect_error(kiln_model_add_output_metric(m, 2, extra, &err), KILN_E_INVALID, &err,
               "add_metric: output 2 does not exist (the model has 2)");
  kiln_matrix_free(&dep1h);
  kiln_model_free(m);

  /* CSR rows reach only Dense and Concatenate. */
  kiln_node a, drop, out;
  OK(kiln_model_create(1, &m, NULL));
  OK(kiln_model_input(m, "a", 12, &a, NULL));
  OK(kiln_model_dropout(m, a, 0.5f, "drop", &drop, NULL));
  OK(kiln_model_dense(m, drop, 1, NULL, &out, NULL));
  OK(kiln_model_compile(m, &opt, KILN_LOSS_MEAN_SQUARED_ERROR, NULL, 0, &err));
  kiln_matrix csr;
  OK(kiln_matrix_to_csr(&d.title, &csr, NULL));
  expect_error(kiln_model_evaluate(m, &csr, &d.priority, 8, &logs, &err), KILN_E_UNSUPPORTED, &err,
               "evaluate: layer \"drop\" cannot take sparse (CSR) input; only Dense and "
               "Concatenate can");
  kiln_matrix_free(&csr);
  kiln_model_free(m);
  ticket_data_free(&d);
}

static void test_by_name_equals_by_position(void **state) {
  ticket_data d, v;
  ticket_data_make(&d, 150, 2);
  ticket_data_make(&v, 40, 3);
  kiln_model *a = ticket_model(7, 1), *b = ticket_model(7, 1);
  kiln_io x, y, vx, vy;
  ticket_io(&d, &x, &y);
  ticket_io(&v, &vx, &vy);
  kiln_fit_options fo;
  kiln_fit_options_init(&fo);
  fo.epochs = 3;
  fo.batch_size = 32;
  fo.validation_inputs = &vx;
  fo.validation_targets = &vy;
  kiln_history ha = {0}, hb = {0};
  kiln_error err = {0};
  OK(kiln_model_fit_io(a, &x, &y, &fo, &ha, &err));
  const char *xn[] = {"tags", "title", "text_body"};
  const kiln_matrix *xd[] = {&d.tags, &d.title, &d.body};
  const char *yn[] = {"department", "priority"};
  const kiln_matrix *yd[] = {&d.department, &d.priority};
  kiln_io xb = io_named(3, xn, xd), yb = io_named(2, yn, yd);
  const kiln_matrix *vxd[] = {&v.tags, &v.title, &v.body};
  const kiln_matrix *vyd[] = {&v.department, &v.priority};
  kiln_io vxb = io_named(3, xn, vxd), vyb = io_named(2, yn, vyd);
  fo.validation_inputs = &vxb;
  fo.validation_targets = &vyb;
  OK(kiln_model_fit_io(b, &xb, &yb, &fo, &hb, &err));
  assert_true(same_weights(a, b));
  assert_int_equal(ha.n_keys, hb.n_keys);
  assert_memory_equal(ha.values, hb.values, (size_t)(ha.epochs * ha.n_keys) * sizeof(double));
  assert_false(isnan(kiln_history_get(&ha, "val_department_accuracy", 2)));
  kiln_matrix pa[2], pb[2];
  OK(kiln_model_predict_io(a, &x, 17, pa, &err));
  OK(kiln_model_predict_io(b, &xb, 64, pb, &err));
  for (int k = 0; k < 2; k++) {
    assert_int_equal(pa[k].cols, k ? 4 : 1);
    assert_memory_equal(pa[k].values, pb[k].values, (size_t)(pa[k].rows * pa[k].cols) * 4);
    kiln_matrix_free(&pa[k]);
    kiln_matrix_free(&pb[k]);
  }
  /* CSR inputs train to the same weights as dense ones up to float summation order. */
  kiln_model *c = ticket_model(7, 1);
  kiln_matrix ct, cb, cg;
  OK(kiln_matrix_to_csr(&d.title, &ct, NULL));
  OK(kiln_matrix_to_csr(&d.body, &cb, NULL));
  OK(kiln_matrix_to_csr(&d.tags, &cg, NULL));
  const kiln_matrix *cx[] = {&ct, &cb, &cg};
  kiln_io xc = io_pos(3, cx);
  fo.validation_inputs = &vx;
  fo.validation_targets = &vy;
  kiln_history hc = {0};
  OK(kiln_model_fit_io(c, &xc, &y, &fo, &hc, &err));
  assert_float_equal(kiln_history_get(&hc, "loss", 2), kiln_history_get(&ha, "loss", 2), 1e-4);
  assert_float_equal(kiln_history_get(&hc, "val_loss", 2), kiln_history_get(&ha, "val_loss", 2),
                     1e-4);
  kiln_matrix_free(&ct);
  kiln_matrix_free(&cb);
  kiln_matrix_free(&cg);
  kiln_history_free(&ha);
  kiln_history_free(&hb);
  kiln_history_free(&hc);
  kiln_model_free(a);
  kiln_model_free(b);
  kiln_model_free(c);
  ticket_data_free(&d);
  ticket_data_free(&v);
}

static void test_early_stopping_on_output_metric(void **state) {
  ticket_data d;
  ticket_data_make(&d, 120, 4);
  kiln_model *m = ticket_model(3, 1);
  kiln_io x, y;
  ticket_io(&d, &x, &y);
  kiln_early_stopping_config ec;
  kiln_early_stopping_config_init(&ec);
  ec.monitor = "val_department_accuracy";
  ec.patience = 1;
  kiln_callback cb;
  kiln_error err = {0};
  OK(kiln_early_stopping_create(&ec, &cb, &err));
  kiln_fit_options fo;
  kiln_fit_options_init(&fo);
  fo.epochs = 40;
  fo.batch_size = 32;
  fo.validation_split = 0.25;
  fo.callbacks = &cb;
  fo.n_callbacks = 1;
  kiln_history h = {0};
  OK(kiln_model_fit_io(m, &x, &y, &fo, &h, &err));
  assert_true(kiln_early_stopping_best_epoch(&cb) >= 0);
  if (kiln_early_stopping_stopped_epoch(&cb) >= 0)
    assert_int_equal(h.epochs, kiln_early_stopping_stopped_epoch(&cb) + 1);
  /* A key of the single-output form is missing and named so. */
  kiln_callback_free(&cb);
  ec.monitor = "val_accuracy";
  OK(kiln_early_stopping_create(&ec, &cb, &err));
  fo.callbacks = &cb;
  expect_error(kiln_model_fit_io(m, &x, &y, &fo, NULL, &err), KILN_E_INVALID, &err,
               "val_department_accuracy");
  kiln_callback_free(&cb);
  kiln_history_free(&h);
  kiln_model_free(m);
  ticket_data_free(&d);
}

/* --- every bad input ----------------------------------------------------------------- */

static void test_bad_inputs(void **state) {
  ticket_data d;
  ticket_data_make(&d, 30, 5);
  kiln_model *m = ticket_model(1, 1);
  kiln_error err = {0};
  kiln_io x, y;
  ticket_io(&d, &x, &y);
  kiln_logs logs;
  kiln_fit_options fo;
  kiln_fit_options_init(&fo);

  /* by position: the count */
  kiln_io x2 = x;
  x2.n = 2;
  expect_error(kiln_model_fit_io(m, &x2, &y, &fo, NULL, &err), KILN_E_INVALID, &err,
               "fit: the model has 3 inputs (title, text_body, tags) but 2 input arrays were given");
  kiln_io y1 = y;
  y1.n = 1;
  expect_error(kiln_model_evaluate_io(m, &x, &y1, 8, &logs, &err), KILN_E_INVALID, &err,
               "evaluate: the model has 2 outputs (priority, department) but 1 target array was given");
  expect_error(kiln_model_fit(m, &d.title, &d.priority, &fo, NULL, &err), KILN_E_INVALID, &err,
               "but 1 input array was given");
  kiln_matrix p;
  expect_error(kiln_model_predict(m, &d.title, 8, &p, &err), KILN_E_INVALID, &err,
               "predict: the model has 2 outputs; use kiln_model_predict_io");
  expect_error(kiln_model_fit_io(m, NULL, &y, &fo, NULL, &err), KILN_E_INVALID, &err,
               "fit: no input data given (the model's inputs: title, text_body, tags)");

  /* by name: unknown, duplicate, missing, mixed, NULL data */
  const char *bad[] = {"title", "body", "tags"};
  const kiln_matrix *xd[] = {&d.title, &d.body, &d.tags};
  kiln_io xn = io_named(3, bad, xd);
  expect_error(kiln_model_fit_io(m, &xn, &y, &fo, NULL, &err), KILN_E_INVALID, &err,
               "fit: the model has no input named \"body\" (its inputs: title, text_body, tags)");
  const char *dup[] = {"title", "title", "tags"};
  xn = io_named(3, dup, xd);
  expect_error(kiln_model_fit_io(m, &xn, &y, &fo, NULL, &err), KILN_E_INVALID, &err,
               "fit: input \"title\" is given twice");
  const char *two[] = {"title", "tags"};
  const kiln_matrix *xd2[] = {&d.title, &d.tags};
  xn = io_named(2, two, xd2);
  expect_error(kiln_model_fit_io(m, &xn, &y, &fo, NULL, &err), KILN_E_INVALID, &err,
               "fit: no input data for input \"text_body\"");
  const char *yn[] = {"priority", "dept"};
  const kiln_matrix *yd[] = {&d.priority, &d.department};
  kiln_io yb = io_named(2, yn, yd);
  expect_error(kiln_model_evaluate_io(m, &x, &yb, 8, &logs, &err), KILN_E_INVALID, &err,
               "evaluate: the model has no output named \"dept\" (its outputs: priority, department)");
  xn = io_named(3, bad, xd);
  xn.names[1] = NULL;
  expect_error(kiln_model_fit_io(m, &xn, &y, &fo, NULL, &err), KILN_E_INVALID, &err,
               "fit: name every input array or none (names[1] is NULL)");
  const char *good[] = {"title", "text_body", "tags"};
  const kiln_matrix *xnull[] = {&d.title, NULL, &d.tags};
  xn = io_named(3, good, xnull);
  expect_error(kiln_model_fit_io(m, &xn, &y, &fo, NULL, &err), KILN_E_INVALID, &err,
               "fit: input \"text_body\" has no data (NULL)");

  /* shapes: width names the input layer; rows between inputs and targets */
  kiln_matrix wide, short_x, short_y;
  OK(kiln_matrix_alloc(&wide, 30, 11, NULL));
  OK(kiln_matrix_alloc(&short_x, 29, 10, NULL));
  OK(kiln_matrix_alloc(&short_y, 29, 1, NULL));
  const kiln_matrix *xw[] = {&wide, &d.body, &d.tags};
  kiln_io xwi = io_pos(3, xw);
  expect_error(kiln_model_fit_io(m, &xwi, &y, &fo, NULL, &err), KILN_E_SHAPE, &err,
               "fit: the data has 11 features but input layer \"title\" expects 12");
  const kiln_matrix *xs[] = {&d.title, &short_x, &d.tags};
  kiln_io xsi = io_pos(3, xs);
  expect_error(kiln_model_fit_io(m, &xsi, &y, &fo, NULL, &err), KILN_E_SHAPE, &err,
               "fit: input \"text_body\" has 29 rows but input \"title\" has 30");
  const kiln_matrix *ys[] = {&d.priority, &short_y};
  kiln_io ysi = io_pos(2, ys);
  expect_error(kiln_model_evaluate_io(m, &x, &ysi, 8, &logs, &err), KILN_E_SHAPE, &err,
               "evaluate: targets of output \"department\" have 29 rows but the inputs have 30");
  /* targets that do not fit an output's loss name it */
  d.department.values[3] = 7;
  expect_error(kiln_model_evaluate_io(m, &x, &y, 8, &logs, &err), KILN_E_RANGE, &err,
               "evaluate: output \"department\": label 7 at row 3");
  d.department.values[3] = 1;
  /* validation data: both or neither, and checked like the training data */
  fo.validation_inputs = &x;
  expect_error(kiln_model_fit_io(m, &x, &y, &fo, NULL, &err), KILN_E_INVALID, &err,
               "validation_inputs and validation_targets must be given together");
  fo.validation_targets = &ysi;
  expect_error(kiln_model_fit_io(m, &x, &y, &fo, NULL, &err), KILN_E_SHAPE, &err,
               "fit: validation data: targets of output \"department\" have 29 rows");
  fo.validation_inputs = fo.validation_targets = NULL;
  kiln_matrix_free(&wide);
  kiln_matrix_free(&short_x);
  kiln_matrix_free(&short_y);
  kiln_model_free(m);

  /* building: set_inputs, set_outputs, concatenate, compile configs */
  m = ticket_model(1, 0);
  kiln_node title, feat, pri;
  OK(kiln_model_find_layer(m, "title", &title, NULL));
  OK(kiln_model_find_layer(m, "dense", &feat, NULL));
  OK(kiln_model_find_layer(m, "priority", &pri, NULL));
  kiln_node bad_in[] = {title, feat};
  expect_error(kiln_model_set_inputs(m, bad_in, 2, &err), KILN_E_INVALID, &err,
               "set_inputs: inputs[1] is layer \"dense\" (Dense), not an Input layer");
  kiln_node dup_in[] = {title, title};
  expect_error(kiln_model_set_inputs(m, dup_in, 2, &err), KILN_E_INVALID, &err,
               "set_inputs: input \"title\" is given twice");
  kiln_node dup_out[] = {pri, pri};
  expect_error(kiln_model_set_outputs(m, dup_out, 2, &err), KILN_E_INVALID, &err,
               "set_outputs: output \"priority\" is given twice");
  kiln_node missing_node[] = {title, 99};
  expect_error(kiln_model_concatenate(m, missing_node, 2, NULL, NULL, &err), KILN_E_INVALID,
               &err, "input node 99 does not exist");
  expect_error(kiln_model_concatenate(m, missing_node, 0, NULL, NULL, &err), KILN_E_INVALID,
               &err, "Concatenate: needs 1 to 8 input nodes, got 0");
  kiln_optimizer opt;
  kiln_optimizer_init(&opt, KILN_OPTIMIZER_ADAM);
  kiln_output_config c[2];
  kiln_output_config_init(&c[0]);
  kiln_output_config_init(&c[1]);
  expect_error(kiln_model_compile_outputs(m, &opt, c, 1, &err), KILN_E_INVALID, &err,
               "compile: 1 output configs for a model with 2 outputs");
  c[0].output = "priority";
  c[1].output = "prio";
  expect_error(kiln_model_compile_outputs(m, &opt, c, 2, &err), KILN_E_INVALID, &err,
               "compile: outputs[1]: \"prio\" is not an output of the model");
  c[1].output = "priority";
  expect_error(kiln_model_compile_outputs(m, &opt, c, 2, &err), KILN_E_INVALID, &err,
               "compile: output \"priority\" is configured twice");
  c[1].output = NULL;
  expect_error(kiln_model_compile_outputs(m, &opt, c, 2, &err), KILN_E_INVALID, &err,
               "compile: outputs[1]: name every output config or none");
  c[0].output = NULL;
  c[1].loss_weight = -1;
  expect_error(kiln_model_compile_outputs(m, &opt, c, 2, &err), KILN_E_INVALID, &err,
               "compile: output \"department\": loss_weight must be finite and >= 0");
  c[1].loss_weight = 1;
  const char *unknown[] = {"f1"};
  c[1].metrics = unknown;
  c[1].n_metrics = 1;
  expect_error(kiln_model_compile_outputs(m, &opt, c, 2, &err), KILN_E_INVALID, &err,
               "compile: output \"department\": metrics[0]: unknown metric \"f1\"");
  /* an Input the outputs need but the inputs do not list */
  kiln_node only_title[] = {title};
  OK(kiln_model_set_inputs(m, only_title, 1, &err));
  expect_error(kiln_model_compile(m, &opt, KILN_LOSS_MEAN_SQUARED_ERROR, NULL, 0, &err),
               KILN_E_INVALID, &err,
               "compile: the outputs depend on Input \"text_body\", which is not among the "
               "model's inputs");
  kiln_model_free(m);
  ticket_data_free(&d);
}

/* --- checkpoints ----------------------------------------------------------------- */

static void test_save_load_round_trip(void **state) {
  ticket_data d;
  ticket_data_make(&d, 64, 6);
  kiln_model *m = ticket_model(2, 0);
  kiln_optimizer opt;
  kiln_optimizer_init(&opt, KILN_OPTIMIZER_ADAM);
  kiln_output_config c[2];
  const char *m0[] = {"mae", "mse"}, *m1[] = {"accuracy"};
  kiln_output_config_init(&c[0]);
  kiln_output_config_init(&c[1]);
  c[0].loss = KILN_LOSS_MEAN_SQUARED_ERROR;
  c[0].loss_weight = 0.5f;
  c[0].metrics = m0;
  c[0].n_metrics = 2;
  c[1].loss = KILN_LOSS_SPARSE_CATEGORICAL_CROSSENTROPY;
  c[1].metrics = m1;
  c[1].n_metrics = 1;
  kiln_error err = {0};
  OK(kiln_model_compile_outputs(m, &opt, c, 2, &err));
  kiln_io x, y;
  ticket_io(&d, &x, &y);
  kiln_fit_options fo;
  kiln_fit_options_init(&fo);
  fo.epochs = 2;
  fo.batch_size = 16;
  OK(kiln_model_fit_io(m, &x, &y, &fo, NULL, &err));
  char path[] = "multi_io_test.kiln", spath[] = "multi_io_test.state";
  OK(kiln_model_save(m, path, &err));
  OK(kiln_model_save_state(m, spath, &err));
  kiln_model *l, *s;
  OK(kiln_model_load(path, &l, &err));
  OK(kiln_model_load_state(spath, &s, &err));
  for (int v = 0; v < 2; v++) {
    kiln_model *r = v ? s : l;
    assert_true(same_weights(m, r));
    assert_int_equal(kiln_model_input_count(r), 3);
    assert_int_equal(kiln_model_output_count(r), 2);
    for (int k = 0; k < 3; k++) assert_int_equal(kiln_model_input_node(r, k), kiln_model_input_node(m, k));
    for (int k = 0; k < 2; k++) {
      assert_int_equal(kiln_model_output_node(r, k), kiln_model_output_node(m, k));
      assert_int_equal(kiln_model_output_loss(r, k), kiln_model_output_loss(m, k));
      assert_float_equal(kiln_model_output_loss_weight(r, k), kiln_model_output_loss_weight(m, k), 0);
    }
    kiln_layer_info li;
    OK(kiln_model_layer(r, 3, &li, NULL));
    assert_int_equal(li.kind, KILN_LAYER_CONCATENATE);
    assert_int_equal(li.n_inputs, 3);
    kiln_logs la, lb;
    OK(kiln_model_evaluate_io(m, &x, &y, 64, &la, &err));
    OK(kiln_model_evaluate_io(r, &x, &y, 64, &lb, &err));
    assert_int_equal(la.n, lb.n);
    for (int i = 0; i < la.n; i++) {
      assert_string_equal(la.keys[i], lb.keys[i]);
      assert_float_equal(la.values[i], lb.values[i], 0);
    }
  }
  /* A resumed fit continues exactly as the uninterrupted one. */
  fo.epochs = 3;
  fo.initial_epoch = 2;
  OK(kiln_model_fit_io(m, &x, &y, &fo, NULL, &err));
  OK(kiln_model_fit_io(s, &x, &y, &fo, NULL, &err));
  assert_true(same_weights(m, s));
  kiln_model_free(l);
  kiln_model_free(s);
  unlink(path);
  unlink(spath);
  kiln_model_free(m);
  ticket_data_free(&d);
}

/* A checkpoint written before several outputs (no "inputs"/"outputs" lists, no
 * compile.outputs) still loads. */
static void test_old_checkpoint_loads(void **state) {
  const char *json =
      "{\"format\":\"kiln-checkpoint\",\"version\":1,\"seed\":\"3\",\"layers\":["
      "{\"type\":\"Input\",\"name\":\"input_layer\",\"features\":2},"
      "{\"type\":\"Dense\",\"name\":\"dense\",\"input\":0,\"units\":1,\"activation\":\"sigmoid\","
      "\"kernel_regularizer\":{\"l1\":0,\"l2\":0}}],\"output\":1,"
      "\"compile\":{\"loss\":\"binary_crossentropy\",\"optimizer\":{\"name\":\"adam\","
      "\"learning_rate\":0.001},\"metrics\":[\"accuracy\"]}}";
  const char *path = "multi_io_old.kiln";
  FILE *fp = fopen(path, "wb");
  assert_non_null(fp);
  uint64_t len = strlen(json);
  unsigned char head[16];
  memcpy(head, "KILNCKP1", 8);
  for (int i = 0; i < 8; i++) head[8 + i] = (unsigned char)(len >> (8 * i));
  float w[3] = {0.5f, -1.0f, 0.25f};
  assert_int_equal(fwrite(head, 1, 16, fp), 16);
  assert_int_equal(fwrite(json, 1, len, fp), len);
  assert_int_equal(fwrite(w, 4, 3, fp), 3);
  fclose(fp);
  kiln_model *m;
  kiln_error err = {0};
  OK(kiln_model_load(path, &m, &err));
  unlink(path);
  assert_int_equal(kiln_model_output_count(m), 1);
  assert_int_equal(kiln_model_input_count(m), 1);
  assert_int_equal(kiln_model_loss(m), KILN_LOSS_BINARY_CROSSENTROPY);
  assert_int_equal(kiln_model_metric_count(m), 1);
  kiln_layer_info li;
  OK(kiln_model_layer(m, 1, &li, NULL));
  assert_float_equal(li.kernel[1], -1.0, 0);
  assert_float_equal(li.bias[0], 0.25, 0);
  kiln_model_free(m);
}

/* --- feature extraction (listing 7.13) ---------------------------------------------- */

static kiln_model *extract_with_difficulty(kiln_model *src) {
  kiln_node ins[3], outs[3];
  for (int i = 0; i < 3; i++) ins[i] = kiln_model_input_node(src, i);
  OK(kiln_model_find_layer(src, "priority", &outs[0], NULL));
  OK(kiln_model_find_layer(src, "department", &outs[1], NULL));
  OK(kiln_model_find_layer(src, "dense", &outs[2], NULL)); /* the features */
  kiln_model *m;
  kiln_error err = {0};
  OK(kiln_model_from_layers(src, ins, 3, outs, 3, &m, &err));
  assert_int_equal(kiln_model_layer_count(m), kiln_model_layer_count(src));
  assert_int_equal(kiln_model_output_count(m), 3);
  kiln_node feat, pri, dep, diff;
  OK(kiln_model_find_layer(m, "dense", &feat, NULL));
  OK(kiln_model_find_layer(m, "priority", &pri, NULL));
  OK(kiln_model_find_layer(m, "department", &dep, NULL));
  kiln_dense_options o;
  kiln_dense_options_init(&o);
  o.activation = KILN_ACTIVATION_SOFTMAX;
  o.name = "difficulty";
  OK(kiln_model_dense(m, feat, 3, &o, &diff, &err));
  kiln_node new_outs[] = {pri, dep, diff};
  OK(kiln_model_set_outputs(m, new_outs, 3, &err));
  kiln_optimizer opt;
  kiln_optimizer_init(&opt, KILN_OPTIMIZER_RMSPROP);
  kiln_output_config c[3];
  for (int k = 0; k < 3; k++) kiln_output_config_init(&c[k]);
  c[0].loss = KILN_LOSS_MEAN_SQUARED_ERROR;
  c[1].loss = KILN_LOSS_SPARSE_CATEGORICAL_CROSSENTROPY;
  c[2].loss = KILN_LOSS_SPARSE_CATEGORICAL_CROSSENTROPY;
  const char *acc[] = {"accuracy"};
  c[2].metrics = acc;
  c[2].n_metrics = 1;
  OK(kiln_model_compile_outputs(m, &opt, c, 3, &err));
  return m;
}

static void test_feature_extraction_shares_weights(void **state) {
  ticket_data d;
  ticket_data_make(&d, 96, 8);
  for (int free_src_first = 0; free_src_first < 2; free_src_first++) {
    kiln_model *src = ticket_model(4, 1);
    kiln_io x, y;
    ticket_io(&d, &x, &y);
    kiln_fit_options fo;
    kiln_fit_options_init(&fo);
    fo.batch_size = 32;
    kiln_error err = {0};
    OK(kiln_model_fit_io(src, &x, &y, &fo, NULL, &err));
    kiln_model *m = extract_with_difficulty(src);
    /* Shared, not copied: the very same kernel memory. */
    kiln_node a, b;
    OK(kiln_model_find_layer(src, "dense", &a, NULL));
    OK(kiln_model_find_layer(m, "dense", &b, NULL));
    kiln_layer_info la, lb;
    OK(kiln_model_layer(src, a, &la, NULL));
    OK(kiln_model_layer(m, b, &lb, NULL));
    assert_ptr_equal(la.kernel, lb.kernel);
    assert_ptr_equal(la.bias, lb.bias);
    assert_int_equal(kiln_model_find_layer(src, "difficulty", &a, NULL), KILN_E_INVALID);
    kiln_matrix before[2], after[2];
    OK(kiln_model_predict_io(src, &x, 32, before, &err));
    kiln_matrix diff_y;
    OK(kiln_matrix_alloc(&diff_y, 96, 1, NULL));
    for (int64_t i = 0; i < 96; i++) diff_y.values[i] = (float)(i % 3);
    const kiln_matrix *ys[] = {&d.priority, &d.department, &diff_y};
    kiln_io y3 = io_pos(3, ys);
    fo.epochs = 3;
    kiln_history h = {0};
    OK(kiln_model_fit_io(m, &x, &y3, &fo, &h, &err));
    assert_false(isnan(kiln_history_get(&h, "difficulty_accuracy", 2)));
    assert_false(isnan(kiln_history_get(&h, "difficulty_loss", 2)));
    assert_true(kiln_history_get(&h, "difficulty_loss", 2) < kiln_history_get(&h, "difficulty_loss", 0));
    /* Training the new model moved the old one's predictions. */
    OK(kiln_model_predict_io(src, &x, 32, after, &err));
    assert_true(memcmp(before[1].values, after[1].values, (size_t)(96 * 4) * sizeof(float)) != 0);
    for (int k = 0; k < 2; k++) {
      kiln_matrix_free(&before[k]);
      kiln_matrix_free(&after[k]);
    }
    /* Either may go first; the other keeps working. */
    kiln_model *keep = free_src_first ? m : src;
    kiln_model_free(free_src_first ? src : m);
    kiln_matrix p[3];
    if (keep == m) {
      OK(kiln_model_predict_io(m, &x, 50, p, &err));
      for (int k = 0; k < 3; k++) kiln_matrix_free(&p[k]);
    } else {
      OK(kiln_model_fit_io(src, &x, &y, &fo, NULL, &err));
      OK(kiln_model_predict_io(src, &x, 50, p, &err));
      for (int k = 0; k < 2; k++) kiln_matrix_free(&p[k]);
    }
    kiln_model_free(keep);
    kiln_matrix_free(&diff_y);
    kiln_history_free(&h);
  }
  /* Errors: an Input the outputs need but not given; a non-Input as input. */
  kiln_model *src = ticket_model(4, 0);
  kiln_node title, feat, pri;
  OK(kiln_model_find_layer(src, "title", &title, NULL));
  OK(kiln_model_find_layer(src, "dense", &feat, NULL));
  OK(kiln_model_find_layer(src, "priority", &pri, NULL));
  kiln_model *m = NULL;
  kiln_error err = {0};
  expect_error(kiln_model_from_layers(src, &title, 1, &pri, 1, &m, &err), KILN_E_INVALID, &err,
               "from_layers: the outputs depend on Input \"text_body\", which is not among the "
               "inputs given");
  expect_error(kiln_model_from_layers(src, &feat, 1, &pri, 1, &m, &err), KILN_E_INVALID, &err,
               "from_layers: inputs[0] is layer \"dense\", not an Input layer of the model");
  assert_null(m);
  kiln_model_free(src);
  ticket_data_free(&d);
}

/* --- summary ------------------------------------------------------------------------ */

/* The summary as text; the caller frees it. */
static char *summary_text(const kiln_model *m) {
  FILE *f = tmpfile();
  assert_non_null(f);
  kiln_model_summary(m, f);
  long n = ftell(f);
  char *buf = malloc((size_t)n + 1);
  rewind(f);
  assert_int_equal(fread(buf, 1, (size_t)n, f), n);
  buf[n] = 0;
  fclose(f);
  return buf;
}

static void test_functional_summary(void **state) {
  kiln_model *m = ticket_model(1, 0);
  char *s = summary_text(m);
  assert_non_null(strstr(s, "Model: \"functional\"\n"));
  assert_non_null(strstr(s, "Connected to"));
  /* 12 + 10 + 4 = 26 columns; Dense 26x8+8 = 216, priority 9, department 36. */
  const char *lines[] = {"title (InputLayer)", "concatenate (Concatenate)", "dense (Dense)",
                         "priority (Dense)", "department (Dense)"};
  const char *tails[] = {"(None, 12)                   0  -\n",
                         "(None, 26)                   0  title[0][0], text_body[0][0], tags[0][0]\n",
                         "(None, 8)                  216  concatenate[0][0]\n",
                         "(None, 1)                    9  dense[0][0]\n",
                         "(None, 4)                   36  dense[0][0]\n"};
  for (int i = 0; i < 5; i++) {
    const char *at = strstr(s, lines[i]);
    assert_non_null(at);
    at += strlen(lines[i]);
    while (*at == ' ') at++;
    if (strncmp(at, tails[i], strlen(tails[i])) != 0)
      fail_msg("row \"%s\": got \"%.*s\", want \"%s\"", lines[i], (int)strlen(tails[i]), at, tails[i]);
  }
  assert_non_null(strstr(s, " Total params: 261 (1.02 KB)"));
  free(s);
  kiln_model_free(m);
  /* A Sequential stack keeps its summary. */
  OK(kiln_model_create(0, &m, NULL));
  OK(kiln_model_add_input(m, 4, NULL));
  OK(kiln_model_add_dense(m, 2, KILN_ACTIVATION_RELU, NULL));
  s = summary_text(m);
  assert_non_null(strstr(s, "Model: \"sequential\""));
  assert_null(strstr(s, "Connected to"));
  free(s);
  kiln_model_free(m);
}

/* --- the low-level training loop -------------------------------------------------- */

/* Rows [begin, begin + n) of a dense matrix, without copying. */
static kiln_matrix rows_view(const kiln_matrix *m, int64_t begin, int64_t n) {
  kiln_matrix v;
  memset(&v, 0, sizeof v);
  v.rows = n;
  v.cols = m->cols;
  v.values = m->values + begin * m->cols;
  v.borrowed = 1;
  return v;
}

static void test_custom_loop_matches_fit(void **state) {
  ticket_data d;
  ticket_data_make(&d, 100, 9);
  kiln_model *a = ticket_model(11, 1), *b = ticket_model(11, 1);
  kiln_io x, y;
  ticket_io(&d, &x, &y);
  kiln_fit_options fo;
  kiln_fit_options_init(&fo);
  fo.epochs = 3;
  fo.batch_size = 32;
  fo.shuffle = 0;
  kiln_error err = {0};
  kiln_history h = {0};
  OK(kiln_model_fit_io(a, &x, &y, &fo, &h, &err));

  kiln_metric *acc;
  OK(kiln_metric_create("sparse_categorical_accuracy", KILN_LOSS_SPARSE_CATEGORICAL_CROSSENTROPY,
                        &acc, &err));
  double last_loss = 0;
  for (int epoch = 0; epoch < 3; epoch++) {
    acc->reset_state(acc);
    double sum = 0;
    for (int64_t begin = 0; begin < 100; begin += 32) {
      int64_t n = 100 - begin < 32 ? 100 - begin : 32;
      kiln_matrix v[5] = {rows_view(&d.title, begin, n), rows_view(&d.body, begin, n),
                          rows_view(&d.tags, begin, n), rows_view(&d.priority, begin, n),
                          rows_view(&d.department, begin, n)};
      const kiln_matrix *xs[] = {&v[0], &v[1], &v[2]}, *ys[] = {&v[3], &v[4]};
      kiln_io bx = io_pos(3, xs), by = io_pos(2, ys);
      double loss;
      kiln_matrix outs[2];
      OK(kiln_model_compute_gradients(b, &bx, &by, 1, &loss, NULL, outs, &err));
      OK(kiln_model_apply_gradients(b, &err));
      acc->update_state(acc, v[4].values, 1, outs[1].values, 4, n);
      sum += loss * (double)n;
      kiln_matrix_free(&outs[0]);
      kiln_matrix_free(&outs[1]);
    }
    last_loss = sum / 100.0;
  }
  assert_true(same_weights(a, b));
  assert_float_equal(last_loss, kiln_history_get(&h, "loss", 2), 0);
  assert_float_equal(acc->result(acc), kiln_history_get(&h, "department_accuracy", 2), 0);
  kiln_metric_free(acc);

  /* The trainable weights: names, shapes, gradients one may change. */
  assert_int_equal(kiln_model_trainable_weight_count(b), 6);
  kiln_weight_info wi;
  OK(kiln_model_trainable_weight(b, 0, &wi, &err));
  assert_string_equal(wi.name, "dense/kernel");
  assert_int_equal(wi.rows, 26);
  assert_int_equal(wi.cols, 8);
  assert_int_equal(wi.size, 26 * 8);
  OK(kiln_model_trainable_weight(b, 5, &wi, &err));
  assert_string_equal(wi.name, "department/bias");
  assert_int_equal(wi.size, 4);
  expect_error(kiln_model_trainable_weight(b, 6, &wi, &err), KILN_E_INVALID, &err,
               "trainable_weight: index 6 does not exist (the model has 6)");
  /* Zeroed gradients: with SGD (no momentum) a step changes nothing. */
  kiln_model *c = ticket_model(11, 0);
  kiln_optimizer sgd;
  kiln_optimizer_init(&sgd, KILN_OPTIMIZER_SGD);
  OK(kiln_model_compile(c, &sgd, KILN_LOSS_MEAN_SQUARED_ERROR, NULL, 0, &err));
  kiln_matrix onehot;
  OK(kiln_matrix_alloc(&onehot, 100, 4, NULL));
  const kiln_matrix *ys[] = {&d.priority, &onehot};
  kiln_io y2 = io_pos(2, ys);
  double loss;
  OK(kiln_model_compute_gradients(c, &x, &y2, 0, &loss, NULL, NULL, &err));
  OK(kiln_model_trainable_weight(c, 0, &wi, &err));
  float first = wi.value[0];
  for (int i = 0; i < kiln_model_trainable_weight_count(c); i++) {
    OK(kiln_model_trainable_weight(c, i, &wi, &err));
    memset(wi.grad, 0, (size_t)wi.size * sizeof(float));
  }
  OK(kiln_model_apply_gradients(c, &err));
  OK(kiln_model_trainable_weight(c, 0, &wi, &err));
  assert_float_equal(wi.value[0], first, 0);
  /* forward: the predictions of predict in inference mode. */
  kiln_matrix f[2], p[2];
  OK(kiln_model_forward(c, &x, 0, f, &err));
  OK(kiln_model_predict_io(c, &x, 7, p, &err));
  for (int k = 0; k < 2; k++) {
    assert_memory_equal(f[k].values, p[k].values, (size_t)(f[k].rows * f[k].cols) * sizeof(float));
    kiln_matrix_free(&f[k]);
    kiln_matrix_free(&p[k]);
  }
  kiln_model *u;
  OK(kiln_model_create(1, &u, NULL));
  OK(kiln_model_add_input(u, 2, NULL));
  OK(kiln_model_add_dense(u, 1, KILN_ACTIVATION_LINEAR, NULL));
  expect_error(kiln_model_apply_gradients(u, &err), KILN_E_INVALID, &err,
               "apply_gradients: compile the model first");
  expect_error(kiln_model_compute_gradients(u, &x, &y, 1, &loss, NULL, NULL, &err),
               KILN_E_INVALID, &err, "compute_gradients: compile the model first");
  kiln_model_free(u);
  kiln_matrix_free(&onehot);
  kiln_history_free(&h);
  kiln_model_free(a);
  kiln_model_free(b);
  kiln_model_free(c);
  ticket_data_free(&d);
}

/* The Sequential form (one Input, one output) over the same fixed batches. */
static void test_custom_loop_sequential(void **state) {
  kiln_rng r;
  kiln_rng_seed(&r, 5, 5);
  kiln_matrix xm, ym;
  fill(&xm, 90, 6, &r, -1, 1);
  OK(kiln_matrix_alloc(&ym, 90, 1, NULL));
  for (int64_t i = 0; i < 90; i++) ym.values[i] = (float)(i % 3);
  kiln_model *ms[2];
  for (int v = 0; v < 2; v++) {
    OK(kiln_model_create(3, &ms[v], NULL));
    OK(kiln_model_add_input(ms[v], 6, NULL));
    OK(kiln_model_add_dense(ms[v], 12, KILN_ACTIVATION_RELU, NULL));
    OK(kiln_model_add_dense(ms[v], 3, KILN_ACTIVATION_SOFTMAX, NULL));
    kiln_optimizer adam;
    kiln_optimizer_init(&adam, KILN_OPTIMIZER_ADAM);
    OK(kiln_model_compile(ms[v], &adam, KILN_LOSS_SPARSE_CATEGORICAL_CROSSENTROPY, NULL, 0, NULL));
  }
  kiln_fit_options fo;
  kiln_fit_options_init(&fo);
  fo.epochs = 2;
  fo.batch_size = 20;
  fo.shuffle = 0;
  OK(kiln_model_fit(ms[0], &xm, &ym, &fo, NULL, NULL));
  for (int e = 0; e < 2; e++)
    for (int64_t b = 0; b < 90; b += 20) {
      int64_t n = 90 - b < 20 ? 90 - b : 20;
      kiln_matrix bx = rows_view(&xm, b, n), by = rows_view(&ym, b, n);
      kiln_io x = {.n = 1, .data = {&bx}}, y = {.n = 1, .data = {&by}};
      double loss;
      OK(kiln_model_compute_gradients(ms[1], &x, &y, 1, &loss, NULL, NULL, NULL));
      OK(kiln_model_apply_gradients(ms[1], NULL));
    }
  assert_true(same_weights(ms[0], ms[1]));
  kiln_model_free(ms[0]);
  kiln_model_free(ms[1]);
  kiln_matrix_free(&xm);
  kiln_matrix_free(&ym);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_concat_forward_by_hand),
      cmocka_unit_test(test_gradients_through_concatenate),
      cmocka_unit_test(test_log_names_and_values),
      cmocka_unit_test(test_by_name_equals_by_position),
      cmocka_unit_test(test_early_stopping_on_output_metric),
      cmocka_unit_test(test_bad_inputs),
      cmocka_unit_test(test_save_load_round_trip),
      cmocka_unit_test(test_old_checkpoint_loads),
      cmocka_unit_test(test_feature_extraction_shares_weights),
      cmocka_unit_test(test_functional_summary),
      cmocka_unit_test(test_custom_loop_matches_fit),
      cmocka_unit_test(test_custom_loop_sequential),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

/* Finite-difference checks of every layer, activation, loss and regularizer, and the
 * BLAS and sparse kernels against their plain C references. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "model_internal.h"

static void fill(kiln_matrix *m, int64_t rows, int64_t cols, kiln_rng *r, float lo, float hi) {
  assert_int_equal(kiln_matrix_alloc(m, rows, cols, NULL), KILN_OK);
  for (int64_t i = 0; i < rows * cols; i++) m->values[i] = lo + (hi - lo) * kiln_rng_uniform(r);
}

/* Targets that fit the loss: labels, one-hot rows, probabilities or values. */
static void targets(kiln_matrix *y, kiln_loss loss, int64_t rows, int64_t cols, kiln_rng *r) {
  int64_t yc = loss == KILN_LOSS_SPARSE_CATEGORICAL_CROSSENTROPY ? 1 : cols;
  assert_int_equal(kiln_matrix_alloc(y, rows, yc, NULL), KILN_OK);
  for (int64_t i = 0; i < rows; i++) {
    int64_t label = (int64_t)kiln_rng_below(r, (uint64_t)cols);
    for (int64_t j = 0; j < yc; j++) {
      float *v = &y->values[i * yc + j];
      switch (loss) {
        case KILN_LOSS_SPARSE_CATEGORICAL_CROSSENTROPY: *v = (float)label; break;
        case KILN_LOSS_CATEGORICAL_CROSSENTROPY: *v = j == label; break;
        case KILN_LOSS_BINARY_CROSSENTROPY: *v = kiln_rng_uniform(r) < 0.5f; break;
        default: *v = 2.0f * kiln_rng_uniform(r) - 1.0f;
      }
    }
  }
}

typedef struct {
  kiln_activation hidden, output;
  kiln_loss loss;
  kiln_regularizer reg;
  float dropout;
  int sparse_input;
} case_t;

/* Loss at the current weights with the dropout stream rewound, so every evaluation
 * sees the same mask. */
static double loss_at(kiln_model *m, const kiln_matrix *x, const kiln_matrix *y,
                      const kiln_rng *dropout_state) {
  m->dropout_rng = *dropout_state;
  double loss;
  assert_int_equal(kiln_model_gradients(m, x, y, 1, &loss, NULL), KILN_OK);
  return loss;
}

static void check_case(const case_t *c) {
  const int64_t rows = 6, in = 5, hidden = 4, out = 3;
  kiln_rng r;
  kiln_rng_seed(&r, 7, 99);
  kiln_model *m;
  assert_int_equal(kiln_model_create(42, &m, NULL), KILN_OK);
  assert_int_equal(kiln_model_add_input(m, in, NULL), KILN_OK);
  kiln_dense_options opt;
  kiln_dense_options_init(&opt);
  opt.activation = c->hidden;
  opt.kernel_regularizer = c->reg;
  assert_int_equal(kiln_model_add_dense_ex(m, hidden, &opt, NULL), KILN_OK);
  if (c->dropout > 0) assert_int_equal(kiln_model_add_dropout(m, c->dropout, NULL), KILN_OK);
  opt.activation = c->output;
  int64_t units = c->loss == KILN_LOSS_BINARY_CROSSENTROPY ? 1 : out;
  assert_int_equal(kiln_model_add_dense_ex(m, units, &opt, NULL), KILN_OK);
  kiln_optimizer o;
  kiln_optimizer_init(&o, KILN_OPTIMIZER_SGD);
  assert_int_equal(kiln_model_compile(m, &o, c->loss, NULL, 0, NULL), KILN_OK);
  /* Non-zero biases so that relu kinks are not hit at exactly zero. */
  for (int i = 0; i < m->n_layers; i++)
    if (m->layers[i].bias)
      for (int64_t j = 0; j < m->layers[i].out_features; j++)
        m->layers[i].bias[j] = 0.1f * (float)(j + 1) - 0.15f;

  kiln_matrix x, y;
  fill(&x, rows, in, &r, -1.0f, 1.0f);
  kiln_matrix xs = {0};
  if (c->sparse_input) {
    /* Same values, some zeroed, held as CSR. */
    for (int64_t i = 0; i < rows * in; i++)
      if (i % 3 == 1) x.values[i] = 0.0f;
    assert_int_equal(kiln_matrix_to_csr(&x, &xs, NULL), KILN_OK);
  }
  const kiln_matrix *xin = c->sparse_input ? &xs : &x;
  targets(&y, c->loss, rows, units, &r);
  kiln_rng dropout_state = m->dropout_rng;

  loss_at(m, xin, &y, &dropout_state);
  /* Copy every analytic gradient before finite differences overwrite them. */
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
    float *ga = grads[i];
    for (int64_t k = 0; k < nk + l->out_features; k++) {
      float *w = k < nk ? &l->kernel[k] : &l->bias[k - nk];
      float saved = *w, h = 2e-3f;
      *w = saved + h;
      double lp = loss_at(m, xin, &y, &dropout_state);
      *w = saved - h;
      double lm = loss_at(m, xin, &y, &dropout_state);
      *w = saved;
      double numeric = (lp - lm) / (2.0 * h);
      double tol = 2e-3 + 2e-2 * fabs(numeric);
      if (fabs(numeric - ga[k]) > tol)
        fail_msg("layer %s param %lld: analytic %.6f numeric %.6f (hidden %s, output %s, loss %s)",
                 l->name, (long long)k, ga[k], numeric, kiln_activation_name(c->hidden),
                 kiln_activation_name(c->output), kiln_loss_name(c->loss));
      checked++;
    }
    free(ga);
  }
  assert_true(checked > 0);
  kiln_matrix_free(&x);
  kiln_matrix_free(&xs);
  kiln_matrix_free(&y);
  kiln_model_free(m);
}

static void test_activations(void **state) {
  kiln_activation acts[] = {KILN_ACTIVATION_LINEAR, KILN_ACTIVATION_RELU, KILN_ACTIVATION_SIGMOID,
                            KILN_ACTIVATION_TANH, KILN_ACTIVATION_SOFTMAX};
  for (int a = 0; a < 5; a++)
    for (int o = 0; o < 5; o++) {
      case_t c = {acts[a], acts[o], KILN_LOSS_MEAN_SQUARED_ERROR, {0, 0}, 0, 0};
      check_case(&c);
    }
}

static void test_losses(void **state) {
  struct { kiln_loss loss; kiln_activation out; } cases[] = {
      {KILN_LOSS_BINARY_CROSSENTROPY, KILN_ACTIVATION_SIGMOID},
      {KILN_LOSS_BINARY_CROSSENTROPY, KILN_ACTIVATION_SOFTMAX}, /* unfused, 1 unit: constant */
      {KILN_LOSS_CATEGORICAL_CROSSENTROPY, KILN_ACTIVATION_SOFTMAX},
      {KILN_LOSS_CATEGORICAL_CROSSENTROPY, KILN_ACTIVATION_SIGMOID}, /* unfused */
      {KILN_LOSS_SPARSE_CATEGORICAL_CROSSENTROPY, KILN_ACTIVATION_SOFTMAX},
      {KILN_LOSS_SPARSE_CATEGORICAL_CROSSENTROPY, KILN_ACTIVATION_SIGMOID}, /* unfused */
      {KILN_LOSS_MEAN_SQUARED_ERROR, KILN_ACTIVATION_LINEAR},
      {KILN_LOSS_MEAN_ABSOLUTE_ERROR, KILN_ACTIVATION_LINEAR},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    case_t c = {KILN_ACTIVATION_TANH, cases[i].out, cases[i].loss, {0, 0}, 0, 0};
    check_case(&c);
  }
}

static void test_regularizers(void **state) {
  kiln_regularizer regs[] = {{0.01f, 0}, {0, 0.02f}, {0.01f, 0.02f}};
  for (int i = 0; i < 3; i++) {
    case_t c = {KILN_ACTIVATION_RELU, KILN_ACTIVATION_SIGMOID, KILN_LOSS_BINARY_CROSSENTROPY,
                regs[i], 0, 0};
    check_case(&c);
  }
}

static void test_dropout_and_sparse_input(void **state) {
  case_t d = {KILN_ACTIVATION_RELU, KILN_ACTIVATION_SOFTMAX,
              KILN_LOSS_SPARSE_CATEGORICAL_CROSSENTROPY, {0, 0}, 0.4f, 0};
  check_case(&d);
  case_t s = {KILN_ACTIVATION_RELU, KILN_ACTIVATION_SIGMOID, KILN_LOSS_BINARY_CROSSENTROPY,
              {0, 0.01f}, 0, 1};
  check_case(&s);
}

/* The penalty itself: l1 * sum|w| + l2 * sum w^2. */
static void test_regularization_value(void **state) {
  kiln_model *m;
  assert_int_equal(kiln_model_create(1, &m, NULL), KILN_OK);
  assert_int_equal(kiln_model_add_input(m, 2, NULL), KILN_OK);
  kiln_dense_options opt;
  kiln_dense_options_init(&opt);
  opt.kernel_regularizer.l1 = 0.5f;
  opt.kernel_regularizer.l2 = 0.25f;
  assert_int_equal(kiln_model_add_dense_ex(m, 1, &opt, NULL), KILN_OK);
  m->layers[1].kernel[0] = 2.0f;
  m->layers[1].kernel[1] = -1.0f;
  assert_float_equal(kiln_regularization(m, 0), 0.5 * 3.0 + 0.25 * 5.0, 1e-6);
  kiln_model_free(m);
}

extern int openblas_get_num_threads(void) __attribute__((weak));

static void kernels_match_reference(int64_t rows, int64_t in, int64_t out) {
  kiln_rng r;
  kiln_rng_seed(&r, 3, 1);
  int blas_threads = openblas_get_num_threads ? openblas_get_num_threads() : -1;
  kiln_layer l = {0};
  l.in_features = in;
  l.out_features = out;
  kiln_matrix x, w, b, dz;
  fill(&x, rows, in, &r, -1, 1);
  fill(&w, in, out, &r, -1, 1);
  fill(&b, 1, out, &r, -1, 1);
  fill(&dz, rows, out, &r, -1, 1);
  /* Make x mostly zeros so that its CSR form is the multi-hot case. */
  for (int64_t i = 0; i < rows * in; i++)
    if (kiln_rng_uniform(&r) < 0.8f) x.values[i] = 0.0f;
  l.kernel = w.values;
  l.bias = b.values;
  float *z1 = calloc((size_t)(rows * out), sizeof(float));
  float *z2 = calloc((size_t)(rows * out), sizeof(float));
  kiln_dense_forward_ref(x.values, w.values, b.values, rows, in, out, z1);
  kiln_dense_forward(&l, x.values, rows, z2);
  for (int64_t i = 0; i < rows * out; i++) assert_float_equal(z1[i], z2[i], 1e-4);

  kiln_matrix xs;
  assert_int_equal(kiln_matrix_to_csr(&x, &xs, NULL), KILN_OK);
  kiln_dense_forward_csr(&l, &xs, z2);
  for (int64_t i = 0; i < rows * out; i++) assert_float_equal(z1[i], z2[i], 1e-4);

  float *gw1 = calloc((size_t)(in * out), sizeof(float)), *gb1 = calloc((size_t)out, sizeof(float));
  l.grad_kernel = calloc((size_t)(in * out), sizeof(float));
  l.grad_bias = calloc((size_t)out, sizeof(float));
  kiln_dense_backward_params_ref(x.values, dz.values, rows, in, out, gw1, gb1);
  kiln_dense_backward_params(&l, x.values, rows, dz.values);
  for (int64_t i = 0; i < in * out; i++) assert_float_equal(gw1[i], l.grad_kernel[i], 1e-4);
  for (int64_t i = 0; i < out; i++) assert_float_equal(gb1[i], l.grad_bias[i], 1e-4);
  kiln_dense_backward_params_csr(&l, &xs, dz.values);
  for (int64_t i = 0; i < in * out; i++) assert_float_equal(gw1[i], l.grad_kernel[i], 1e-4);
  for (int64_t i = 0; i < out; i++) assert_float_equal(gb1[i], l.grad_bias[i], 1e-4);

  float *dx1 = calloc((size_t)(rows * in), sizeof(float)), *dx2 = calloc((size_t)(rows * in), sizeof(float));
  kiln_dense_backward_input_ref(dz.values, w.values, rows, in, out, dx1);
  kiln_dense_backward_input(&l, dz.values, rows, dx2);
  for (int64_t i = 0; i < rows * in; i++) assert_float_equal(dx1[i], dx2[i], 1e-4);

  /* small GEMMs run on one OpenBLAS thread: the caller's setting comes back after */
  if (openblas_get_num_threads) assert_int_equal(openblas_get_num_threads(), blas_threads);

  free(z1); free(z2); free(gw1); free(gb1); free(dx1); free(dx2);
  free(l.grad_kernel); free(l.grad_bias);
  kiln_matrix_free(&x); kiln_matrix_free(&w); kiln_matrix_free(&b); kiln_matrix_free(&dz);
  kiln_matrix_free(&xs);
}

/* Below and above the size from which a GEMM may use several OpenBLAS threads. */
static void test_kernels_match_reference(void **state) {
  kernels_match_reference(37, 53, 29);
  kernels_match_reference(160, 200, 150);
}

/* The crossentropy's float-exp log-sum-exp against the double reference. */
static void test_logsumexp_matches_reference(void **state) {
  kiln_rng r;
  kiln_rng_seed(&r, 5, 1);
  float z[200];
  const float spans[4] = {1.0f, 20.0f, 100.0f, 1e4f};
  for (int t = 0; t < 400; t++) {
    int n = 1 + (int)(kiln_rng_uniform(&r) * 199.0f);
    float span = spans[t % 4];
    for (int j = 0; j < n; j++) z[j] = (kiln_rng_uniform(&r) * 2.0f - 1.0f) * span;
    if (t % 7 == 0) z[n / 2] = z[0]; /* ties at the max */
    double ref = kiln_logsumexp_ref(z, n), fast = kiln_logsumexp(z, n);
    assert_true(fabs(fast - ref) <= 1e-6 * (fabs(ref) > 1.0 ? fabs(ref) : 1.0));
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_activations),
      cmocka_unit_test(test_losses),
      cmocka_unit_test(test_regularizers),
      cmocka_unit_test(test_dropout_and_sparse_input),
      cmocka_unit_test(test_regularization_value),
      cmocka_unit_test(test_kernels_match_reference),
      cmocka_unit_test(test_logsumexp_matches_reference),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

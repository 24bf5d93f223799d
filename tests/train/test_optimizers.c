/* Optimizer steps against values computed by hand from Keras' update rules. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <math.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include "model_internal.h"

/* A model with one trainable weight w = 1 (and a bias with zero gradient). */
static kiln_model *one_weight(const kiln_optimizer *opt) {
  kiln_model *m;
  assert_int_equal(kiln_model_create(0, &m, NULL), KILN_OK);
  assert_int_equal(kiln_model_add_input(m, 1, NULL), KILN_OK);
  kiln_dense_options d;
  kiln_dense_options_init(&d);
  d.kernel_initializer = KILN_INIT_CONSTANT;
  d.kernel_constant = 1.0f;
  assert_int_equal(kiln_model_add_dense_ex(m, 1, &d, NULL), KILN_OK);
  assert_int_equal(kiln_model_compile(m, opt, KILN_LOSS_MEAN_SQUARED_ERROR, NULL, 0, NULL), KILN_OK);
  return m;
}

static float step(kiln_model *m, float g) {
  m->layers[1].grad_kernel[0] = g;
  m->layers[1].grad_bias[0] = 0.0f;
  kiln_optimizer_step(m);
  return m->layers[1].kernel[0];
}

static void test_defaults_are_keras(void **state) {
  kiln_optimizer o;
  kiln_optimizer_init(&o, KILN_OPTIMIZER_ADAM);
  assert_float_equal(o.learning_rate, 1e-3, 1e-9);
  assert_float_equal(o.beta_1, 0.9, 1e-7);
  assert_float_equal(o.beta_2, 0.999, 1e-7);
  assert_float_equal(o.epsilon, 1e-7, 1e-12);
  kiln_optimizer_init(&o, KILN_OPTIMIZER_RMSPROP);
  assert_float_equal(o.learning_rate, 1e-3, 1e-9);
  assert_float_equal(o.rho, 0.9, 1e-7);
  kiln_optimizer_init(&o, KILN_OPTIMIZER_SGD);
  assert_float_equal(o.learning_rate, 1e-2, 1e-9);
  assert_float_equal(o.momentum, 0.0, 0);
}

static void test_sgd(void **state) {
  kiln_optimizer o;
  kiln_optimizer_init(&o, KILN_OPTIMIZER_SGD);
  o.learning_rate = 0.1f;
  kiln_model *m = one_weight(&o);
  assert_float_equal(step(m, 0.5f), 0.95, 1e-6);
  kiln_model_free(m);

  o.momentum = 0.9f; /* v = 0.9 v - lr g; w += v */
  m = one_weight(&o);
  assert_float_equal(step(m, 0.5f), 0.95, 1e-6);
  assert_float_equal(step(m, 0.5f), 0.855, 1e-6);
  kiln_model_free(m);

  o.nesterov = 1; /* w += 0.9 v - lr g */
  m = one_weight(&o);
  assert_float_equal(step(m, 0.5f), 0.905, 1e-6);
  assert_float_equal(step(m, 0.5f), 0.905 - 0.9 * 0.095 - 0.05, 1e-6);
  kiln_model_free(m);
}

static void test_rmsprop(void **state) {
  kiln_optimizer o;
  kiln_optimizer_init(&o, KILN_OPTIMIZER_RMSPROP);
  o.learning_rate = 0.01f;
  kiln_model *m = one_weight(&o);
  /* v = 0.1 * 0.25 = 0.025; w -= 0.01 * 0.5 / sqrt(0.025 + 1e-7) */
  double w1 = 1.0 - 0.01 * 0.5 / sqrt(0.025 + 1e-7);
  assert_float_equal(step(m, 0.5f), w1, 1e-6);
  /* v = 0.9 * 0.025 + 0.1 * 0.04 = 0.0265 */
  double w2 = w1 + 0.01 * 0.2 / sqrt(0.0265 + 1e-7);
  assert_float_equal(step(m, -0.2f), w2, 1e-6);
  kiln_model_free(m);
}

static void test_adam(void **state) {
  kiln_optimizer o;
  kiln_optimizer_init(&o, KILN_OPTIMIZER_ADAM);
  kiln_model *m = one_weight(&o);
  /* Step 1: m = 0.05, v = 0.00025, alpha = 1e-3 * sqrt(1 - 0.999) / (1 - 0.9). */
  double alpha1 = 1e-3 * sqrt(1 - 0.999) / (1 - 0.9);
  double w1 = 1.0 - alpha1 * 0.05 / (sqrt(0.00025) + 1e-7);
  assert_float_equal(step(m, 0.5f), w1, 1e-7);
  /* Step 2 with g = -0.2: m = 0.05 + (-0.2 - 0.05) * 0.1, v = 0.00025 + (0.04 - 0.00025) * 0.001 */
  double m2 = 0.05 + (-0.2 - 0.05) * 0.1, v2 = 0.00025 + (0.04 - 0.00025) * 0.001;
  double alpha2 = 1e-3 * sqrt(1 - 0.999 * 0.999) / (1 - 0.9 * 0.9);
  double w2 = w1 - alpha2 * m2 / (sqrt(v2) + 1e-7);
  assert_float_equal(step(m, -0.2f), w2, 1e-6);
  assert_int_equal(m->iterations, 2);
  kiln_model_free(m);
}

/* A 1000 x 600 Dense layer (600,600 parameters): enough for the step to be split. */
static kiln_model *big_model(const kiln_optimizer *opt, int threads) {
  kiln_model *m;
  assert_int_equal(kiln_model_create(7, &m, NULL), KILN_OK);
  assert_int_equal(kiln_model_add_input(m, 1000, NULL), KILN_OK);
  assert_int_equal(kiln_model_add_dense(m, 600, KILN_ACTIVATION_LINEAR, NULL), KILN_OK);
  assert_int_equal(kiln_model_compile(m, opt, KILN_LOSS_MEAN_SQUARED_ERROR, NULL, 0, NULL), KILN_OK);
  m->opt_threads = threads;
  return m;
}

static void fill_grads(kiln_model *m, int step) {
  kiln_layer *l = &m->layers[1];
  uint32_t s = 12345u + (uint32_t)step * 7919u;
  for (int64_t i = 0; i < 1000 * 600; i++) {
    s = s * 1664525u + 1013904223u;
    l->grad_kernel[i] = ((float)(s >> 8) / 16777216.0f - 0.5f) * (i % 7 == 0 ? 0.0f : 1.0f);
  }
  for (int64_t i = 0; i < 600; i++) l->grad_bias[i] = (float)i * 1e-3f - 0.1f;
}

/* The step split between threads computes the same floats as one thread (the plain
 * loop), for every optimizer. */
static void test_split_step_is_bit_identical(void **state) {
  kiln_optimizer opts[4];
  kiln_optimizer_init(&opts[0], KILN_OPTIMIZER_ADAM);
  kiln_optimizer_init(&opts[1], KILN_OPTIMIZER_RMSPROP);
  kiln_optimizer_init(&opts[2], KILN_OPTIMIZER_SGD);
  opts[2].momentum = 0.9f;
  opts[2].nesterov = 1;
  kiln_optimizer_init(&opts[3], KILN_OPTIMIZER_SGD);
  long cpus = sysconf(_SC_NPROCESSORS_ONLN);
  for (int k = 0; k < 4; k++)
    for (int threads = 2; threads <= 3; threads++) {
      kiln_model *one = big_model(&opts[k], 1), *split = big_model(&opts[k], threads);
      for (int s = 0; s < 5; s++) {
        fill_grads(one, s);
        fill_grads(split, s);
        kiln_optimizer_step(one);
        kiln_optimizer_step(split);
      }
      assert_null(one->workers);
      if (cpus >= 2) assert_non_null(split->workers);
      assert_memory_equal(one->layers[1].kernel, split->layers[1].kernel, 1000 * 600 * sizeof(float));
      assert_memory_equal(one->layers[1].bias, split->layers[1].bias, 600 * sizeof(float));
      for (int p = 0; p < one->n_params; p++) {
        if (one->params[p].slot1)
          assert_memory_equal(one->params[p].slot1, split->params[p].slot1,
                              (size_t)one->params[p].size * sizeof(float));
        if (one->params[p].slot2)
          assert_memory_equal(one->params[p].slot2, split->params[p].slot2,
                              (size_t)one->params[p].size * sizeof(float));
      }
      kiln_model_free(one);
      kiln_model_free(split);
    }
}

static void test_learning_rate_settable(void **state) {
  kiln_optimizer o;
  kiln_optimizer_init(&o, KILN_OPTIMIZER_SGD);
  kiln_model *m = one_weight(&o);
  kiln_model_set_learning_rate(m, 0.5f);
  assert_float_equal(kiln_model_learning_rate(m), 0.5, 0);
  assert_float_equal(step(m, 0.5f), 0.75, 1e-6);
  kiln_model_free(m);
}

static void test_parse(void **state) {
  kiln_optimizer o;
  kiln_error err = {0};
  assert_int_equal(kiln_optimizer_parse("Adam", &o, NULL), KILN_OK);
  assert_int_equal(o.kind, KILN_OPTIMIZER_ADAM);
  assert_int_equal(kiln_optimizer_parse("adagrad", &o, &err), KILN_E_INVALID);
  assert_non_null(strstr(err.message, "adagrad"));
  assert_non_null(strstr(err.message, "rmsprop"));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_defaults_are_keras), cmocka_unit_test(test_sgd),
      cmocka_unit_test(test_rmsprop),            cmocka_unit_test(test_adam),
      cmocka_unit_test(test_learning_rate_settable), cmocka_unit_test(test_parse),
      cmocka_unit_test(test_split_step_is_bit_identical),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

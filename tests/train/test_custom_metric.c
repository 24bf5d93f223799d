/* A user metric through the kiln_metric interface (listing 7.18's RMSE, the code of
 * examples/custom_metric.c): it agrees with the built-in "rmse" on the same
 * predictions, in fit (training and validation figures), evaluate and called directly;
 * its state restarts every epoch. Also the built-in element-wise metrics against
 * integer labels (one target column, several outputs: broadcast as Keras). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../../examples/rmse_metric.h"
#include "rng.h"

static void fill(kiln_matrix *m, int64_t rows, int64_t cols, kiln_rng *r) {
  assert_int_equal(kiln_matrix_alloc(m, rows, cols, NULL), KILN_OK);
  for (int64_t i = 0; i < rows * cols; i++) m->values[i] = (float)kiln_rng_normal(r);
}

static void assert_near(double a, double b) {
  if (!(fabs(a - b) <= 1e-12 + 1e-9 * fabs(b))) fail_msg("%.17g != %.17g", a, b);
}

/* Two computations of one figure (kiln's loss sums in its own order). */
static void assert_close(double a, double b) {
  if (!(fabs(a - b) <= 1e-6 * fabs(b))) fail_msg("%.9g != %.9g", a, b);
}

/* A regression model (one output): user RMSE == built-in rmse in every figure. */
static void test_user_rmse_equals_builtin_in_fit(void **state) {
  kiln_rng r;
  kiln_rng_seed(&r, 3, 1);
  kiln_matrix x, y;
  fill(&x, 200, 5, &r);
  assert_int_equal(kiln_matrix_alloc(&y, 200, 1, NULL), KILN_OK);
  for (int64_t i = 0; i < 200; i++) y.values[i] = x.values[i * 5] - 0.5f * x.values[i * 5 + 3];
  kiln_model *m;
  assert_int_equal(kiln_model_create(5, &m, NULL), KILN_OK);
  assert_int_equal(kiln_model_add_input(m, 5, NULL), KILN_OK);
  assert_int_equal(kiln_model_add_dense(m, 8, KILN_ACTIVATION_TANH, NULL), KILN_OK);
  assert_int_equal(kiln_model_add_dense(m, 1, KILN_ACTIVATION_LINEAR, NULL), KILN_OK);
  kiln_optimizer o;
  kiln_optimizer_init(&o, KILN_OPTIMIZER_ADAM);
  o.learning_rate = 0.01f;
  const char *metrics[] = {"rmse"};
  assert_int_equal(kiln_model_compile(m, &o, KILN_LOSS_MEAN_SQUARED_ERROR, metrics, 1, NULL),
                   KILN_OK);
  kiln_metric *mine = rmse_metric_create("my_rmse");
  assert_non_null(mine);
  assert_int_equal(kiln_model_add_metric(m, mine, NULL), KILN_OK);
  /* The same name as a metric already there is refused (and the metric freed). */
  kiln_error err = {0};
  kiln_metric *dup = rmse_metric_create("rmse");
  assert_int_equal(kiln_model_add_metric(m, dup, &err), KILN_E_INVALID);
  assert_non_null(strstr(err.message, "rmse"));

  kiln_fit_options opt;
  kiln_fit_options_init(&opt);
  opt.epochs = 4;
  opt.batch_size = 16;
  opt.validation_split = 0.25;
  kiln_history h = {0};
  assert_int_equal(kiln_model_fit(m, &x, &y, &opt, &h, NULL), KILN_OK);
  for (int e = 0; e < 4; e++) {
    assert_near(kiln_history_get(&h, "my_rmse", e), kiln_history_get(&h, "rmse", e));
    assert_near(kiln_history_get(&h, "val_my_rmse", e), kiln_history_get(&h, "val_rmse", e));
    /* Reset every epoch: the validation figure is sqrt(val_loss) (MSE, no penalty). */
    assert_close(kiln_history_get(&h, "val_my_rmse", e), sqrt(kiln_history_get(&h, "val_loss", e)));
  }
  /* Training lowers it. */
  assert_true(kiln_history_get(&h, "my_rmse", 3) < kiln_history_get(&h, "my_rmse", 0));
  kiln_logs logs;
  for (int rep = 0; rep < 2; rep++) { /* evaluate resets the state: same figure twice */
    assert_int_equal(kiln_model_evaluate(m, &x, &y, 64, &logs, NULL), KILN_OK);
    assert_near(kiln_logs_get(&logs, "my_rmse"), kiln_logs_get(&logs, "rmse"));
    assert_close(kiln_logs_get(&logs, "my_rmse"), sqrt(kiln_logs_get(&logs, "loss")));
  }
  kiln_history_free(&h);
  kiln_model_free(m);
  kiln_matrix_free(&x);
  kiln_matrix_free(&y);
}

/* Several outputs: the listing divides the summed squares by the rows, the built-in by
 * rows x columns; integer labels are one-hot encoded as the listing does. */
static void test_user_rmse_on_class_predictions(void **state) {
  const int64_t rows = 50, cols = 4;
  kiln_rng r;
  kiln_rng_seed(&r, 4, 1);
  kiln_matrix pred, labels, onehot;
  fill(&pred, rows, cols, &r);
  assert_int_equal(kiln_matrix_alloc(&labels, rows, 1, NULL), KILN_OK);
  for (int64_t i = 0; i < rows; i++) labels.values[i] = (float)kiln_rng_below(&r, (uint64_t)cols);
  assert_int_equal(kiln_one_hot(&labels, (int32_t)cols, &onehot, NULL), KILN_OK);
  kiln_metric *builtin, *mine = rmse_metric_create("rmse");
  assert_int_equal(kiln_metric_create("rmse", KILN_LOSS_CATEGORICAL_CROSSENTROPY, &builtin, NULL),
                   KILN_OK);
  kiln_metric *mine_sparse = rmse_metric_create("rmse");
  kiln_metric *all[] = {builtin, mine, mine_sparse};
  for (int k = 0; k < 3; k++) all[k]->reset_state(all[k]);
  for (int64_t b = 0; b < rows; b += 16) { /* in batches, as fit feeds them */
    int64_t n = rows - b < 16 ? rows - b : 16;
    builtin->update_state(builtin, onehot.values + b * cols, cols, pred.values + b * cols, cols, n);
    mine->update_state(mine, onehot.values + b * cols, cols, pred.values + b * cols, cols, n);
    mine_sparse->update_state(mine_sparse, labels.values + b, 1, pred.values + b * cols, cols, n);
  }
  double want = 0;
  for (int64_t i = 0; i < rows * cols; i++) {
    double d = (double)pred.values[i] - (double)onehot.values[i];
    want += d * d;
  }
  assert_near(mine->result(mine), sqrt(want / (double)rows));
  assert_near(mine_sparse->result(mine_sparse), mine->result(mine));
  assert_near(builtin->result(builtin), sqrt(want / (double)(rows * cols)));
  assert_near(mine->result(mine), sqrt((double)cols) * builtin->result(builtin));
  mine->reset_state(mine);
  assert_true(mine->result(mine) == 0.0);
  for (int k = 0; k < 3; k++) kiln_metric_free(all[k]);
  kiln_matrix_free(&pred);
  kiln_matrix_free(&labels);
  kiln_matrix_free(&onehot);
}

/* "mse" or "binary_accuracy" against integer labels read one target per row (Keras
 * broadcasts it over the outputs), never past the labels. */
static void test_builtin_elementwise_with_labels(void **state) {
  const float pred[] = {0.1f, 0.7f, 0.2f, 0.6f, 0.3f, 0.1f};
  const float labels[] = {1.0f, 0.0f};
  kiln_metric *mse, *acc;
  assert_int_equal(kiln_metric_create("mse", KILN_LOSS_SPARSE_CATEGORICAL_CROSSENTROPY, &mse, NULL),
                   KILN_OK);
  assert_int_equal(
      kiln_metric_create("binary_accuracy", KILN_LOSS_SPARSE_CATEGORICAL_CROSSENTROPY, &acc, NULL),
      KILN_OK);
  mse->reset_state(mse);
  acc->reset_state(acc);
  mse->update_state(mse, labels, 1, pred, 3, 2);
  acc->update_state(acc, labels, 1, pred, 3, 2);
  double want = 0;
  for (int i = 0; i < 6; i++) {
    double d = (double)pred[i] - labels[i / 3];
    want += d * d;
  }
  assert_near(mse->result(mse), want / 6.0);
  /* Row 0 against 1: only 0.7 > 0.5 hits; row 1 against 0: 0.3 and 0.1 hit. */
  assert_near(acc->result(acc), 3.0 / 6.0);
  kiln_metric_free(mse);
  kiln_metric_free(acc);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_user_rmse_equals_builtin_in_fit),
      cmocka_unit_test(test_user_rmse_on_class_predictions),
      cmocka_unit_test(test_builtin_elementwise_with_labels),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

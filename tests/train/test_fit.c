/* compile / fit / evaluate / predict behaviour: learning, seeds, validation, history,
 * divergence, bad input, metrics, checkpoints, summary. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "model_internal.h"

/* Two gaussian blobs: label 1 when x0 + x1 > 0. */
static void blobs(int64_t n, int64_t cols, uint64_t seed, kiln_matrix *x, kiln_matrix *y) {
  kiln_rng r;
  kiln_rng_seed(&r, seed, 5);
  assert_int_equal(kiln_matrix_alloc(x, n, cols, NULL), KILN_OK);
  assert_int_equal(kiln_matrix_alloc(y, n, 1, NULL), KILN_OK);
  for (int64_t i = 0; i < n; i++) {
    for (int64_t j = 0; j < cols; j++) x->values[i * cols + j] = (float)kiln_rng_normal(&r);
    y->values[i] = x->values[i * cols] + x->values[i * cols + 1] > 0.0f;
  }
}

static kiln_model *binary_model(uint64_t seed, int64_t cols, float dropout) {
  kiln_model *m;
  assert_int_equal(kiln_model_create(seed, &m, NULL), KILN_OK);
  assert_int_equal(kiln_model_add_input(m, cols, NULL), KILN_OK);
  assert_int_equal(kiln_model_add_dense(m, 8, KILN_ACTIVATION_RELU, NULL), KILN_OK);
  if (dropout > 0) assert_int_equal(kiln_model_add_dropout(m, dropout, NULL), KILN_OK);
  assert_int_equal(kiln_model_add_dense(m, 1, KILN_ACTIVATION_SIGMOID, NULL), KILN_OK);
  kiln_optimizer o;
  kiln_optimizer_init(&o, KILN_OPTIMIZER_ADAM);
  o.learning_rate = 0.01f;
  const char *metrics[] = {"accuracy"};
  assert_int_equal(kiln_model_compile(m, &o, KILN_LOSS_BINARY_CROSSENTROPY, metrics, 1, NULL),
                   KILN_OK);
  return m;
}

static void test_learns_and_reports(void **state) {
  kiln_matrix x, y;
  blobs(600, 4, 1, &x, &y);
  kiln_model *m = binary_model(3, 4, 0.2f);
  kiln_fit_options opt;
  kiln_fit_options_init(&opt);
  opt.epochs = 20;
  opt.batch_size = 32;
  opt.validation_split = 0.25;
  kiln_history h = {0};
  kiln_error err = {0};
  assert_int_equal(kiln_model_fit(m, &x, &y, &opt, &h, &err), KILN_OK);
  assert_int_equal(h.epochs, 20);
  assert_true(kiln_history_get(&h, "val_accuracy", 19) > 0.93);
  assert_true(kiln_history_get(&h, "loss", 19) < kiln_history_get(&h, "loss", 0));
  assert_false(isnan(kiln_history_get(&h, "val_loss", 0)));
  kiln_logs logs;
  assert_int_equal(kiln_model_evaluate(m, &x, &y, 100, &logs, NULL), KILN_OK);
  assert_true(kiln_logs_get(&logs, "accuracy") > 0.93);
  /* The last 25% were the validation rows: evaluating them alone gives val figures. */
  kiln_matrix vx, vy;
  assert_int_equal(kiln_matrix_slice_rows(&x, 450, 600, &vx, NULL), KILN_OK);
  assert_int_equal(kiln_matrix_slice_rows(&y, 450, 600, &vy, NULL), KILN_OK);
  assert_int_equal(kiln_model_evaluate(m, &vx, &vy, 7, &logs, NULL), KILN_OK);
  assert_float_equal(kiln_logs_get(&logs, "accuracy"), kiln_history_get(&h, "val_accuracy", 19), 1e-9);
  assert_float_equal(kiln_logs_get(&logs, "loss"), kiln_history_get(&h, "val_loss", 19), 1e-5);

  char path[] = "/tmp/kiln_history_XXXXXX";
  int fd = mkstemp(path);
  close(fd);
  assert_int_equal(kiln_history_write_csv(&h, path, NULL), KILN_OK);
  FILE *f = fopen(path, "r");
  char line[256];
  assert_non_null(fgets(line, sizeof line, f));
  assert_string_equal(line, "epoch,loss,accuracy,val_loss,val_accuracy\n");
  int rows = 0;
  while (fgets(line, sizeof line, f)) rows++;
  assert_int_equal(rows, 20);
  fclose(f);
  unlink(path);
  kiln_history_free(&h);
  kiln_matrix_free(&vx);
  kiln_matrix_free(&vy);
  kiln_matrix_free(&x);
  kiln_matrix_free(&y);
  kiln_model_free(m);
}

static void fit_weights(uint64_t seed, float *out, int n) {
  kiln_matrix x, y;
  blobs(200, 4, 1, &x, &y);
  kiln_model *m = binary_model(seed, 4, 0.5f);
  kiln_fit_options opt;
  kiln_fit_options_init(&opt);
  opt.epochs = 3;
  assert_int_equal(kiln_model_fit(m, &x, &y, &opt, NULL, NULL), KILN_OK);
  memcpy(out, m->layers[1].kernel, (size_t)n * sizeof(float));
  kiln_matrix_free(&x);
  kiln_matrix_free(&y);
  kiln_model_free(m);
}

static void test_seed_reproducible(void **state) {
  float a[32], b[32], c[32];
  fit_weights(11, a, 32);
  fit_weights(11, b, 32);
  fit_weights(12, c, 32);
  assert_memory_equal(a, b, sizeof a);
  assert_memory_not_equal(a, c, sizeof a);
}

static void test_divergence_stops_cleanly(void **state) {
  kiln_matrix x, y;
  blobs(256, 4, 2, &x, &y);
  for (int64_t i = 0; i < 256; i++) y.values[i] = 1e4f * x.values[i * 4];
  kiln_model *m;
  assert_int_equal(kiln_model_create(1, &m, NULL), KILN_OK);
  assert_int_equal(kiln_model_add_input(m, 4, NULL), KILN_OK);
  assert_int_equal(kiln_model_add_dense(m, 64, KILN_ACTIVATION_RELU, NULL), KILN_OK);
  assert_int_equal(kiln_model_add_dense(m, 1, KILN_ACTIVATION_LINEAR, NULL), KILN_OK);
  kiln_optimizer o;
  kiln_optimizer_init(&o, KILN_OPTIMIZER_SGD);
  o.learning_rate = 1.0f; /* listing 5.6's lesson: far too high */
  assert_int_equal(kiln_model_compile(m, &o, KILN_LOSS_MEAN_SQUARED_ERROR, NULL, 0, NULL), KILN_OK);
  kiln_fit_options opt;
  kiln_fit_options_init(&opt);
  opt.epochs = 50;
  kiln_history h = {0};
  kiln_error err = {0};
  assert_int_equal(kiln_model_fit(m, &x, &y, &opt, &h, &err), KILN_E_DIVERGED);
  assert_true(strstr(err.message, "NaN") || strstr(err.message, "infinite"));
  assert_non_null(strstr(err.message, "learning rate"));
  assert_true(h.epochs < 50);
  kiln_history_free(&h);
  kiln_matrix_free(&x);
  kiln_matrix_free(&y);
  kiln_model_free(m);
}

static void test_bad_input(void **state) {
  kiln_matrix x, y;
  blobs(50, 4, 3, &x, &y);
  kiln_model *m = binary_model(1, 4, 0);
  kiln_fit_options opt;
  kiln_fit_options_init(&opt);
  kiln_error err = {0};

  opt.batch_size = 0;
  assert_int_equal(kiln_model_fit(m, &x, &y, &opt, NULL, &err), KILN_E_INVALID);
  assert_non_null(strstr(err.message, "batch_size"));
  opt.batch_size = 8;

  kiln_matrix wide, wide_y;
  blobs(50, 5, 3, &wide, &wide_y);
  assert_int_equal(kiln_model_fit(m, &wide, &wide_y, &opt, NULL, &err), KILN_E_SHAPE);
  assert_non_null(strstr(err.message, "5 features"));
  assert_non_null(strstr(err.message, "input_layer"));
  kiln_matrix_free(&wide);
  kiln_matrix_free(&wide_y);

  x.values[7 * 4 + 2] = NAN;
  assert_int_equal(kiln_model_fit(m, &x, &y, &opt, NULL, &err), KILN_E_RANGE);
  assert_non_null(strstr(err.message, "row 7, column 2"));
  x.values[7 * 4 + 2] = 0.0f;

  y.values[9] = 3.0f;
  assert_int_equal(kiln_model_fit(m, &x, &y, &opt, NULL, &err), KILN_E_RANGE);
  assert_non_null(strstr(err.message, "row 9"));
  y.values[9] = 1.0f;

  opt.validation_split = 1.0;
  assert_int_equal(kiln_model_fit(m, &x, &y, &opt, NULL, &err), KILN_E_INVALID);
  assert_non_null(strstr(err.message, "validation_split"));
  kiln_model_free(m);

  /* Sparse labels outside the classes. */
  assert_int_equal(kiln_model_create(1, &m, NULL), KILN_OK);
  assert_int_equal(kiln_model_add_input(m, 4, NULL), KILN_OK);
  assert_int_equal(kiln_model_add_dense(m, 3, KILN_ACTIVATION_SOFTMAX, NULL), KILN_OK);
  kiln_optimizer o;
  kiln_optimizer_init(&o, KILN_OPTIMIZER_RMSPROP);
  assert_int_equal(kiln_model_compile(m, &o, KILN_LOSS_SPARSE_CATEGORICAL_CROSSENTROPY, NULL, 0, NULL), KILN_OK);
  opt.validation_split = 0;
  y.values[4] = 3.0f;
  assert_int_equal(kiln_model_fit(m, &x, &y, &opt, NULL, &err), KILN_E_RANGE);
  assert_non_null(strstr(err.message, "label 3 at row 4"));
  kiln_model_free(m);
  kiln_matrix_free(&x);
  kiln_matrix_free(&y);
}

static void test_metrics(void **state) {
  kiln_metric *mt;
  /* top-3 over 4 classes: true class ranked 1st, 3rd, 4th. */
  float pred[] = {0.7f, 0.1f, 0.1f, 0.1f, 0.1f, 0.2f, 0.3f, 0.4f, 0.4f, 0.3f, 0.2f, 0.1f};
  float sparse[] = {0, 1, 3};
  assert_int_equal(kiln_metric_create("top_3_accuracy", KILN_LOSS_SPARSE_CATEGORICAL_CROSSENTROPY,
                                      &mt, NULL), KILN_OK);
  mt->reset_state(mt);
  mt->update_state(mt, sparse, 1, pred, 4, 3);
  assert_float_equal(mt->result(mt), 2.0 / 3.0, 1e-9);
  kiln_metric_free(mt);
  float onehot[] = {1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 1};
  assert_int_equal(kiln_metric_create("accuracy", KILN_LOSS_CATEGORICAL_CROSSENTROPY, &mt, NULL), KILN_OK);
  mt->update_state(mt, onehot, 4, pred, 4, 3);
  assert_float_equal(mt->result(mt), 1.0 / 3.0, 1e-9);
  mt->reset_state(mt);
  assert_float_equal(mt->result(mt), 0.0, 0);
  kiln_metric_free(mt);
  float yt[] = {1, 2, 3, 4}, yp[] = {1.5f, 2, 2, 4};
  const char *names[] = {"mae", "mse", "rmse"};
  double want[] = {0.375, 0.3125, sqrt(0.3125)};
  for (int i = 0; i < 3; i++) {
    assert_int_equal(kiln_metric_create(names[i], KILN_LOSS_MEAN_SQUARED_ERROR, &mt, NULL), KILN_OK);
    mt->update_state(mt, yt, 1, yp, 1, 2);
    mt->update_state(mt, yt + 2, 1, yp + 2, 1, 2);
    assert_float_equal(mt->result(mt), want[i], 1e-7);
    kiln_metric_free(mt);
  }
  kiln_error err = {0};
  assert_int_equal(kiln_metric_create("f1", KILN_LOSS_MEAN_SQUARED_ERROR, &mt, &err), KILN_E_INVALID);
  assert_non_null(strstr(err.message, "\"f1\""));
}

/* A user metric through the public interface: counts rows seen. */
static void count_reset(kiln_metric *s) { *(double *)s->state = 0; }
static void count_update(kiln_metric *s, const float *t, int64_t tc, const float *p, int64_t pc,
                         int64_t rows) {
  *(double *)s->state += (double)rows;
}
static double count_result(const kiln_metric *s) { return *(const double *)s->state; }

static void test_custom_metric(void **state) {
  kiln_matrix x, y;
  blobs(100, 4, 4, &x, &y);
  kiln_model *m = binary_model(1, 4, 0);
  static double counter;
  kiln_metric custom = {"rows_seen", &counter, count_reset, count_update, count_result, NULL};
  assert_int_equal(kiln_model_add_metric(m, &custom, NULL), KILN_OK);
  kiln_logs logs;
  assert_int_equal(kiln_model_evaluate(m, &x, &y, 30, &logs, NULL), KILN_OK);
  assert_float_equal(kiln_logs_get(&logs, "rows_seen"), 100, 0);
  kiln_model_free(m);
  kiln_matrix_free(&x);
  kiln_matrix_free(&y);
}

static int tmp_files_in(const char *dir, const char *prefix) {
  DIR *d = opendir(dir);
  int n = 0;
  struct dirent *e;
  while ((e = readdir(d)))
    if (strncmp(e->d_name, prefix, strlen(prefix)) == 0 && strstr(e->d_name, ".tmp")) n++;
  closedir(d);
  return n;
}

static void test_checkpoint_round_trip(void **state) {
  kiln_matrix x, y, p1, p2;
  blobs(100, 4, 5, &x, &y);
  kiln_model *m = binary_model(9, 4, 0.3f);
  kiln_fit_options opt;
  kiln_fit_options_init(&opt);
  opt.epochs = 2;
  assert_int_equal(kiln_model_fit(m, &x, &y, &opt, NULL, NULL), KILN_OK);
  char dir[] = "/tmp/kiln_ckpt_XXXXXX";
  assert_non_null(mkdtemp(dir));
  char path[128];
  snprintf(path, sizeof path, "%s/model.kiln", dir);
  assert_int_equal(kiln_model_save(m, path, NULL), KILN_OK);
  assert_int_equal(tmp_files_in(dir, "model"), 0);
  kiln_model *back;
  kiln_error err = {0};
  assert_int_equal(kiln_model_load(path, &back, &err), KILN_OK);
  assert_int_equal(kiln_model_layer_count(back), 4);
  assert_int_equal(kiln_model_predict(m, &x, 16, &p1, NULL), KILN_OK);
  assert_int_equal(kiln_model_predict(back, &x, 64, &p2, NULL), KILN_OK);
  assert_memory_equal(p1.values, p2.values, 100 * sizeof(float));
  kiln_logs logs;
  assert_int_equal(kiln_model_evaluate(back, &x, &y, 64, &logs, NULL), KILN_OK);
  assert_false(isnan(kiln_logs_get(&logs, "accuracy")));

  /* A truncated file is a clear error naming the layer. */
  FILE *f = fopen(path, "r+b");
  fseek(f, 0, SEEK_END);
  long size = ftell(f);
  fclose(f);
  assert_int_equal(truncate(path, size - 10), 0);
  kiln_model *bad = NULL;
  assert_int_equal(kiln_model_load(path, &bad, &err), KILN_E_FORMAT);
  assert_non_null(strstr(err.message, "truncated weights"));
  assert_null(bad);
  assert_int_equal(truncate(path, 5), 0);
  assert_int_equal(kiln_model_load(path, &bad, &err), KILN_E_FORMAT);
  assert_non_null(strstr(err.message, "not a kiln checkpoint"));
  /* Saving into a missing folder fails without leaving anything. */
  char missing[160];
  snprintf(missing, sizeof missing, "%s/nope/model.kiln", dir);
  assert_int_equal(kiln_model_save(m, missing, &err), KILN_E_IO);
  unlink(path);
  rmdir(dir);
  kiln_matrix_free(&p1);
  kiln_matrix_free(&p2);
  kiln_matrix_free(&x);
  kiln_matrix_free(&y);
  kiln_model_free(m);
  kiln_model_free(back);
}

static void test_summary_counts(void **state) {
  kiln_model *m;
  assert_int_equal(kiln_model_create(0, &m, NULL), KILN_OK);
  assert_int_equal(kiln_model_add_input(m, 10000, NULL), KILN_OK);
  assert_int_equal(kiln_model_add_dense(m, 16, KILN_ACTIVATION_RELU, NULL), KILN_OK);
  assert_int_equal(kiln_model_add_dense(m, 16, KILN_ACTIVATION_RELU, NULL), KILN_OK);
  assert_int_equal(kiln_model_add_dense(m, 1, KILN_ACTIVATION_SIGMOID, NULL), KILN_OK);
  assert_int_equal(kiln_model_param_count(m), 160305);
  char *buf = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&buf, &len);
  kiln_model_summary(m, f);
  fclose(f);
  assert_non_null(strstr(buf, "dense_2 (Dense)"));
  assert_non_null(strstr(buf, "(None, 16)"));
  assert_non_null(strstr(buf, "160016"));
  assert_non_null(strstr(buf, "Total params: 160305"));
  free(buf);
  kiln_error err = {0};
  kiln_dense_options d;
  kiln_dense_options_init(&d);
  d.name = "dense_1";
  assert_int_equal(kiln_model_add_dense_ex(m, 3, &d, &err), KILN_E_INVALID);
  assert_non_null(strstr(err.message, "already used"));
  kiln_model_free(m);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_learns_and_reports), cmocka_unit_test(test_seed_reproducible),
      cmocka_unit_test(test_divergence_stops_cleanly), cmocka_unit_test(test_bad_input),
      cmocka_unit_test(test_metrics), cmocka_unit_test(test_custom_metric),
      cmocka_unit_test(test_checkpoint_round_trip), cmocka_unit_test(test_summary_counts),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

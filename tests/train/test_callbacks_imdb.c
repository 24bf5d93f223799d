/* EarlyStopping and ModelCheckpoint on the book's IMDB model (16-16-1 on 10,000-word
 * multi-hot rows, adam, batch 512), validated as in chapter 4 on the first 10,000
 * training reviews and trained on the other 15,000: fit stops patience epochs after
 * the best one, restore_best_weights puts back exactly the best epoch's weights (the
 * validation figures evaluate to the History's), and the best-only checkpoints load
 * and predict as the model did at their epoch. Skips (77) when the data is absent. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kiln/callbacks.h"
#include "kiln/train.h"

#define MAX_EPOCHS 20
#define BATCH 512

static kiln_dataset g_train, g_val; /* partial_x_train / x_val of listing 4.x */

static kiln_model *imdb_model(void) {
  kiln_model *m;
  assert_int_equal(kiln_model_create(1, &m, NULL), KILN_OK);
  assert_int_equal(kiln_model_add_input(m, 10000, NULL), KILN_OK);
  assert_int_equal(kiln_model_add_dense(m, 16, KILN_ACTIVATION_RELU, NULL), KILN_OK);
  assert_int_equal(kiln_model_add_dense(m, 16, KILN_ACTIVATION_RELU, NULL), KILN_OK);
  assert_int_equal(kiln_model_add_dense(m, 1, KILN_ACTIVATION_SIGMOID, NULL), KILN_OK);
  kiln_optimizer o;
  kiln_optimizer_init(&o, KILN_OPTIMIZER_ADAM);
  const char *metrics[] = {"accuracy"};
  assert_int_equal(kiln_model_compile(m, &o, KILN_LOSS_BINARY_CROSSENTROPY, metrics, 1, NULL),
                   KILN_OK);
  return m;
}

/* The validation predictions at every epoch end. */
typedef struct snapshots {
  kiln_matrix pred[MAX_EPOCHS];
  int n;
} snapshots;

static void snap_epoch_end(void *ctx, kiln_model *m, int epoch, const kiln_logs *logs) {
  snapshots *s = ctx;
  assert_true(epoch < MAX_EPOCHS);
  assert_int_equal(kiln_model_predict(m, &g_val.x, BATCH, &s->pred[epoch], NULL), KILN_OK);
  s->n = epoch + 1;
}

static void snap_free(snapshots *s) {
  for (int i = 0; i < MAX_EPOCHS; i++) kiln_matrix_free(&s->pred[i]);
}

static int same_matrix(const kiln_matrix *a, const kiln_matrix *b) {
  return a->rows == b->rows && a->cols == b->cols &&
         memcmp(a->values, b->values, (size_t)(a->rows * a->cols) * sizeof(float)) == 0;
}

/* The first epoch holding the best value of key (strict improvements only, as the
 * callbacks count them). */
static int best_epoch(const kiln_history *h, const char *key, int maximize) {
  int best = 0;
  for (int e = 1; e < h->epochs; e++) {
    double v = kiln_history_get(h, key, e), b = kiln_history_get(h, key, best);
    if (maximize ? v > b : v < b) best = e;
  }
  return best;
}

static void assert_close(double got, double want, const char *what) {
  if (!(fabs(got - want) <= 1e-6 + 1e-5 * fabs(want)))
    fail_msg("%s: evaluated %.9f, History %.9f", what, got, want);
}

static void run_early_stopping(const char *monitor, int maximize, int patience) {
  kiln_model *m = imdb_model();
  kiln_early_stopping_config c;
  kiln_early_stopping_config_init(&c);
  c.monitor = monitor;
  c.patience = patience;
  c.restore_best_weights = 1;
  kiln_callback cbs[2];
  snapshots snaps;
  memset(&snaps, 0, sizeof snaps);
  kiln_callback snap = {.ctx = &snaps, .on_epoch_end = snap_epoch_end};
  cbs[0] = snap;
  assert_int_equal(kiln_early_stopping_create(&c, &cbs[1], NULL), KILN_OK);
  kiln_fit_options opt;
  kiln_fit_options_init(&opt);
  opt.epochs = MAX_EPOCHS;
  opt.batch_size = BATCH;
  opt.validation_x = &g_val.x;
  opt.validation_y = &g_val.y;
  opt.callbacks = cbs;
  opt.n_callbacks = 2;
  kiln_history h = {0};
  kiln_error err = {0};
  if (kiln_model_fit(m, &g_train.x, &g_train.y, &opt, &h, &err)) fail_msg("%s", err.message);

  char key[32];
  snprintf(key, sizeof key, "%s", monitor);
  int best = best_epoch(&h, key, maximize);
  print_message("%s: %d epochs run, best epoch %d: val_loss %.4f val_accuracy %.4f\n", monitor,
                h.epochs, best + 1, kiln_history_get(&h, "val_loss", best),
                kiln_history_get(&h, "val_accuracy", best));
  /* The model overfits within a few epochs: stopped well before the end. */
  assert_true(h.epochs < MAX_EPOCHS);
  assert_int_equal(kiln_early_stopping_best_epoch(&cbs[1]), best);
  assert_int_equal(h.epochs, best + patience + 1);
  assert_int_equal(kiln_early_stopping_stopped_epoch(&cbs[1]), best + patience);
  assert_int_equal(snaps.n, h.epochs);

  /* The restored model is the best epoch's: same predictions, same figures. */
  kiln_matrix now;
  assert_int_equal(kiln_model_predict(m, &g_val.x, BATCH, &now, NULL), KILN_OK);
  assert_true(same_matrix(&now, &snaps.pred[best]));
  assert_false(same_matrix(&now, &snaps.pred[h.epochs - 1]));
  kiln_logs logs;
  assert_int_equal(kiln_model_evaluate(m, &g_val.x, &g_val.y, BATCH, &logs, NULL), KILN_OK);
  assert_close(kiln_logs_get(&logs, "loss"), kiln_history_get(&h, "val_loss", best), "val_loss");
  assert_close(kiln_logs_get(&logs, "accuracy"), kiln_history_get(&h, "val_accuracy", best),
               "val_accuracy");
  kiln_matrix_free(&now);
  snap_free(&snaps);
  kiln_history_free(&h);
  kiln_callback_free(&cbs[1]);
  kiln_model_free(m);
}

static void test_early_stopping_val_loss(void **state) { run_early_stopping("val_loss", 0, 2); }

static void test_early_stopping_val_accuracy(void **state) {
  run_early_stopping("val_accuracy", 1, 1);
}

static int exists(const char *path) {
  struct stat st;
  return stat(path, &st) == 0;
}

static void test_checkpoint_best_only(void **state) {
  char dir[64], pattern[128], path[160];
  snprintf(dir, sizeof dir, "/tmp/kiln_imdb_ckpt_XXXXXX");
  assert_non_null(mkdtemp(dir));
  snprintf(pattern, sizeof pattern, "%s/imdb_{epoch}.kiln", dir);
  kiln_model *m = imdb_model();
  kiln_model_checkpoint_config c;
  kiln_model_checkpoint_config_init(&c); /* monitor val_loss */
  c.filepath = pattern;
  c.save_best_only = 1;
  kiln_callback cbs[2];
  snapshots snaps;
  memset(&snaps, 0, sizeof snaps);
  kiln_callback snap = {.ctx = &snaps, .on_epoch_end = snap_epoch_end};
  cbs[0] = snap;
  assert_int_equal(kiln_model_checkpoint_create(&c, &cbs[1], NULL), KILN_OK);
  const int epochs = 6;
  kiln_fit_options opt;
  kiln_fit_options_init(&opt);
  opt.epochs = epochs;
  opt.batch_size = BATCH;
  opt.validation_x = &g_val.x;
  opt.validation_y = &g_val.y;
  opt.callbacks = cbs;
  opt.n_callbacks = 2;
  kiln_history h = {0};
  kiln_error err = {0};
  if (kiln_model_fit(m, &g_train.x, &g_train.y, &opt, &h, &err)) fail_msg("%s", err.message);
  assert_int_equal(h.epochs, epochs);
  /* A file for every epoch that beat the best val_loss so far, and only those. */
  double best = INFINITY;
  int saved = 0, last_saved = -1;
  for (int e = 0; e < epochs; e++) {
    double v = kiln_history_get(&h, "val_loss", e);
    int improved = v < best;
    if (improved) {
      best = v;
      saved++;
      last_saved = e;
    }
    snprintf(path, sizeof path, "%s/imdb_%d.kiln", dir, e + 1);
    assert_int_equal(exists(path), improved);
    if (!improved) continue;
    kiln_model *loaded;
    if (kiln_model_load(path, &loaded, &err)) fail_msg("%s", err.message);
    kiln_matrix p;
    assert_int_equal(kiln_model_predict(loaded, &g_val.x, BATCH, &p, NULL), KILN_OK);
    assert_true(same_matrix(&p, &snaps.pred[e]));
    /* It comes back compiled: it evaluates to that epoch's validation figures. */
    kiln_logs logs;
    assert_int_equal(kiln_model_evaluate(loaded, &g_val.x, &g_val.y, BATCH, &logs, NULL), KILN_OK);
    assert_close(kiln_logs_get(&logs, "loss"), v, "val_loss");
    assert_close(kiln_logs_get(&logs, "accuracy"), kiln_history_get(&h, "val_accuracy", e),
                 "val_accuracy");
    kiln_matrix_free(&p);
    kiln_model_free(loaded);
    snprintf(path, sizeof path, "%s/imdb_%d.kiln", dir, e + 1);
    unlink(path);
  }
  print_message("checkpoints: %d of %d epochs saved, best epoch %d (val_loss %.4f)\n", saved,
                epochs, last_saved + 1, best);
  assert_int_equal(kiln_model_checkpoint_saves(&cbs[1]), saved);
  /* The model overfits within 6 epochs: the last epochs are not saved. */
  assert_true(last_saved < epochs - 1);
  snap_free(&snaps);
  kiln_history_free(&h);
  kiln_callback_free(&cbs[1]);
  kiln_model_free(m);
  assert_int_equal(rmdir(dir), 0); /* nothing else (no temporaries) was left */
}

int main(void) {
  kiln_load_options lo;
  kiln_load_options_init(&lo);
  lo.num_words = 10000;
  char probe[1024];
  snprintf(probe, sizeof probe, "%s/imdb/train.txt.gz", kiln_data_dir(&lo));
  if (access(probe, R_OK) != 0) {
    printf("skipped: %s is absent (set KILN_DATA_DIR)\n", probe);
    return 77;
  }
  kiln_dataset all = {0};
  kiln_error err = {0};
  if (kiln_dataset_load("imdb", &lo, &all, NULL, &err)) {
    fprintf(stderr, "imdb: %s\n", err.message);
    return 1;
  }
  /* As the book: x_val = x_train[:10000], partial_x_train = x_train[10000:]. */
  int64_t n = all.x.rows, n_val = 10000;
  int64_t *idx = malloc((size_t)n * sizeof(int64_t));
  for (int64_t i = 0; i < n; i++) idx[i] = i;
  if (kiln_dataset_take(&all, idx, n_val, &g_val, &err) ||
      kiln_dataset_take(&all, idx + n_val, n - n_val, &g_train, &err)) {
    fprintf(stderr, "imdb split: %s\n", err.message);
    return 1;
  }
  free(idx);
  kiln_dataset_free(&all);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_early_stopping_val_loss),
      cmocka_unit_test(test_early_stopping_val_accuracy),
      cmocka_unit_test(test_checkpoint_best_only),
  };
  int rc = cmocka_run_group_tests(tests, NULL, NULL);
  kiln_dataset_free(&g_train);
  kiln_dataset_free(&g_val);
  return rc;
}

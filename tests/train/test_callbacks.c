/* The built-in callbacks (include/kiln/callbacks.h) and the hooks fit calls: order,
 * EarlyStopping, ModelCheckpoint, LearningRateScheduler, ReduceLROnPlateau, CSVLogger,
 * TerminateOnNaN, LossHistory, kiln_model_fail and bad configs. */
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

static kiln_model *binary_model(uint64_t seed, float lr) {
  kiln_model *m;
  assert_int_equal(kiln_model_create(seed, &m, NULL), KILN_OK);
  assert_int_equal(kiln_model_add_input(m, 4, NULL), KILN_OK);
  assert_int_equal(kiln_model_add_dense(m, 8, KILN_ACTIVATION_RELU, NULL), KILN_OK);
  assert_int_equal(kiln_model_add_dense(m, 1, KILN_ACTIVATION_SIGMOID, NULL), KILN_OK);
  kiln_optimizer o;
  kiln_optimizer_init(&o, KILN_OPTIMIZER_ADAM);
  o.learning_rate = lr;
  const char *metrics[] = {"accuracy"};
  assert_int_equal(kiln_model_compile(m, &o, KILN_LOSS_BINARY_CROSSENTROPY, metrics, 1, NULL),
                   KILN_OK);
  return m;
}

/* A metric whose value at epoch e is script[e] (fit resets metrics once per epoch
 * when it does not validate), so monitor-driven callbacks can be steered exactly. */
typedef struct scripted {
  const double *values;
  int n;
  int epoch;
} scripted;
static void scripted_reset(kiln_metric *self) { ((scripted *)self->state)->epoch++; }
static void scripted_update(kiln_metric *self, const float *yt, int64_t tc, const float *yp,
                            int64_t pc, int64_t rows) {}
static double scripted_result(const kiln_metric *self) {
  const scripted *s = self->state;
  int e = s->epoch - 1;
  return s->values[e < s->n ? e : s->n - 1];
}
static void add_scripted(kiln_model *m, scripted *s, kiln_metric *metric) {
  kiln_metric mm = {"score", s, scripted_reset, scripted_update, scripted_result, NULL};
  *metric = mm;
  assert_int_equal(kiln_model_add_metric(m, metric, NULL), KILN_OK);
}

/* Records the hooks as text, and per epoch end the learning rate and predictions. */
#define REC_EPOCHS 32
typedef struct recorder {
  char events[4096];
  size_t len;
  const kiln_matrix *x;
  float lr[REC_EPOCHS];
  kiln_matrix pred[REC_EPOCHS];
  int n_epochs;
} recorder;
static void rec_put(recorder *r, const char *s) {
  r->len += (size_t)snprintf(r->events + r->len, sizeof r->events - r->len, "%s ", s);
}
static void rec_train_begin(void *ctx, kiln_model *m) { rec_put(ctx, "B"); }
static void rec_epoch_begin(void *ctx, kiln_model *m, int epoch) {
  char b[16];
  snprintf(b, sizeof b, "E%d", epoch);
  rec_put(ctx, b);
}
static void rec_batch_end(void *ctx, kiln_model *m, int64_t batch, int64_t batches,
                          const kiln_logs *logs) {
  rec_put(ctx, "b");
}
static void rec_epoch_end(void *ctx, kiln_model *m, int epoch, const kiln_logs *logs) {
  recorder *r = ctx;
  char b[16];
  snprintf(b, sizeof b, "e%d", epoch);
  rec_put(r, b);
  assert_int_equal(kiln_model_epoch(m), epoch + 1);
  if (epoch < REC_EPOCHS) {
    r->lr[epoch] = kiln_model_learning_rate(m);
    if (r->x) assert_int_equal(kiln_model_predict(m, r->x, 32, &r->pred[epoch], NULL), KILN_OK);
    r->n_epochs = epoch + 1;
  }
}
static void rec_train_end(void *ctx, kiln_model *m, const kiln_logs *logs) { rec_put(ctx, "T"); }
static void rec_batch_begin(void *ctx, kiln_model *m, int64_t batch, int64_t batches) {
  char b[32];
  snprintf(b, sizeof b, "a%lld/%lld", (long long)batch, (long long)batches);
  rec_put(ctx, b);
}
static kiln_callback rec_callback(recorder *r) {
  memset(r, 0, sizeof *r);
  kiln_callback cb = {.ctx = r,
                      .on_train_begin = rec_train_begin,
                      .on_epoch_begin = rec_epoch_begin,
                      .on_batch_end = rec_batch_end,
                      .on_epoch_end = rec_epoch_end,
                      .on_train_end = rec_train_end};
  return cb;
}
static void rec_free(recorder *r) {
  for (int i = 0; i < REC_EPOCHS; i++) kiln_matrix_free(&r->pred[i]);
}

static int same_matrix(const kiln_matrix *a, const kiln_matrix *b) {
  return a->rows == b->rows && a->cols == b->cols &&
         memcmp(a->values, b->values, (size_t)(a->rows * a->cols) * sizeof(float)) == 0;
}

static void fail_at_second_batch(void *ctx, kiln_model *m, int64_t batch, int64_t batches) {
  if (batch == 1) kiln_model_fail(m, KILN_E_IO, "batch %lld refused", (long long)batch);
}

static void test_hook_order(void **state) {
  kiln_matrix x, y;
  blobs(70, 4, 1, &x, &y);
  kiln_model *m = binary_model(1, 0.01f);
  recorder r;
  kiln_callback cb = rec_callback(&r);
  kiln_fit_options opt;
  kiln_fit_options_init(&opt);
  opt.epochs = 2;
  opt.batch_size = 32;
  opt.callbacks = &cb;
  opt.n_callbacks = 1;
  assert_int_equal(kiln_model_fit(m, &x, &y, &opt, NULL, NULL), KILN_OK);
  assert_string_equal(r.events, "B E0 b b b e0 E1 b b b e1 T ");
  assert_int_equal(kiln_model_epoch(m), 2);
  /* on_batch_begin (Keras' order): before each batch, with its index and count. */
  cb = rec_callback(&r);
  cb.on_batch_begin = rec_batch_begin;
  opt.epochs = 4;
  opt.initial_epoch = 3;
  assert_int_equal(kiln_model_fit(m, &x, &y, &opt, NULL, NULL), KILN_OK);
  assert_string_equal(r.events, "B E3 a0/3 b a1/3 b a2/3 b e3 T ");
  opt.initial_epoch = 0;
  opt.epochs = 2;
  /* initial_epoch: the epochs initial_epoch..epochs-1, numbered as such. */
  opt.initial_epoch = 2;
  opt.epochs = 3;
  cb = rec_callback(&r);
  assert_int_equal(kiln_model_fit(m, &x, &y, &opt, NULL, NULL), KILN_OK);
  assert_string_equal(r.events, "B E2 b b b e2 T ");
  assert_int_equal(kiln_model_epoch(m), 3);
  /* A failure in on_batch_begin stops fit before that batch runs. */
  cb = rec_callback(&r);
  cb.on_batch_begin = fail_at_second_batch;
  kiln_error berr = {0};
  assert_int_equal(kiln_model_fit(m, &x, &y, &opt, NULL, &berr), KILN_E_IO);
  assert_string_equal(berr.message, "batch 1 refused");
  assert_string_equal(r.events, "B E2 b ");
  opt.initial_epoch = -1;
  kiln_error err = {0};
  assert_int_equal(kiln_model_fit(m, &x, &y, &opt, NULL, &err), KILN_E_INVALID);
  assert_non_null(strstr(err.message, "initial_epoch"));
  kiln_model_free(m);
  kiln_matrix_free(&x);
  kiln_matrix_free(&y);
}

/* What each hook receives: batch indices and counts, the running figures of the
 * epoch at every batch end (no val_ keys), the epoch's figures with validation at
 * the epoch end (as the History), and the last epoch's at train end. */
typedef struct logs_seen {
  int64_t batches_seen, last_batch, batch_count, bad_batch_index;
  int bad_batch_keys;
  double batch_loss, batch_acc; /* the last batch end's */
  int epochs_seen;
  double epoch_loss[4], epoch_acc[4], epoch_vloss[4], epoch_vacc[4];
  int bad_epoch_keys, batch_matches_epoch;
  int train_end_calls, train_end_n;
  double train_end_vloss;
} logs_seen;
static void seen_batch_end(void *ctx, kiln_model *m, int64_t batch, int64_t batches,
                           const kiln_logs *logs) {
  logs_seen *s = ctx;
  if (batch != (s->last_batch + 1) % batches) s->bad_batch_index++;
  s->last_batch = batch;
  s->batch_count = batches;
  s->batches_seen++;
  if (logs->n != 2 || strcmp(logs->keys[0], "loss") || strcmp(logs->keys[1], "accuracy"))
    s->bad_batch_keys++;
  s->batch_loss = logs->values[0];
  s->batch_acc = logs->values[1];
}
static void seen_epoch_begin(void *ctx, kiln_model *m, int epoch) {
  logs_seen *s = ctx;
  s->last_batch = -1;
  assert_int_equal(epoch, s->epochs_seen);
}
static void seen_epoch_end(void *ctx, kiln_model *m, int epoch, const kiln_logs *logs) {
  logs_seen *s = ctx;
  static const char *const keys[] = {"loss", "accuracy", "val_loss", "val_accuracy"};
  if (logs->n != 4) s->bad_epoch_keys++;
  for (int i = 0; i < 4 && i < logs->n; i++) s->bad_epoch_keys += strcmp(logs->keys[i], keys[i]) != 0;
  s->epoch_loss[epoch] = kiln_logs_get(logs, "loss");
  s->epoch_acc[epoch] = kiln_logs_get(logs, "accuracy");
  s->epoch_vloss[epoch] = kiln_logs_get(logs, "val_loss");
  s->epoch_vacc[epoch] = kiln_logs_get(logs, "val_accuracy");
  /* The training figures are the running means the last batch end reported. */
  s->batch_matches_epoch += s->batch_loss == s->epoch_loss[epoch] &&
                            s->batch_acc == s->epoch_acc[epoch] && s->last_batch == s->batch_count - 1;
  s->epochs_seen++;
}
static void seen_train_end(void *ctx, kiln_model *m, const kiln_logs *logs) {
  logs_seen *s = ctx;
  s->train_end_calls++;
  s->train_end_n = logs->n;
  s->train_end_vloss = kiln_logs_get(logs, "val_loss");
  int e = s->epochs_seen - 1;
  assert_true(kiln_logs_get(logs, "loss") == s->epoch_loss[e]);
  assert_true(kiln_logs_get(logs, "val_accuracy") == s->epoch_vacc[e]);
}

static void test_hook_logs(void **state) {
  kiln_matrix x, y;
  blobs(100, 4, 9, &x, &y);
  kiln_model *m = binary_model(9, 0.01f);
  logs_seen s;
  memset(&s, 0, sizeof s);
  s.last_batch = -1;
  kiln_callback cb = {.ctx = &s,
                      .on_epoch_begin = seen_epoch_begin,
                      .on_batch_end = seen_batch_end,
                      .on_epoch_end = seen_epoch_end,
                      .on_train_end = seen_train_end};
  kiln_fit_options opt;
  kiln_fit_options_init(&opt);
  opt.epochs = 3;
  opt.batch_size = 16; /* 80 training rows: 5 batches an epoch */
  opt.validation_split = 0.2;
  opt.callbacks = &cb;
  opt.n_callbacks = 1;
  kiln_history h = {0};
  assert_int_equal(kiln_model_fit(m, &x, &y, &opt, &h, NULL), KILN_OK);
  assert_int_equal(s.batches_seen, 15);
  assert_int_equal(s.batch_count, 5);
  assert_int_equal(s.bad_batch_index, 0);
  assert_int_equal(s.bad_batch_keys, 0);
  assert_int_equal(s.bad_epoch_keys, 0);
  assert_int_equal(s.epochs_seen, 3);
  assert_int_equal(s.batch_matches_epoch, 3);
  for (int e = 0; e < 3; e++) {
    assert_true(s.epoch_loss[e] == kiln_history_get(&h, "loss", e));
    assert_true(s.epoch_acc[e] == kiln_history_get(&h, "accuracy", e));
    assert_true(s.epoch_vloss[e] == kiln_history_get(&h, "val_loss", e));
    assert_true(s.epoch_vacc[e] == kiln_history_get(&h, "val_accuracy", e));
  }
  assert_int_equal(s.train_end_calls, 1);
  assert_int_equal(s.train_end_n, 4);
  assert_true(s.train_end_vloss == kiln_history_get(&h, "val_loss", 2));
  kiln_history_free(&h);
  kiln_model_free(m);
  kiln_matrix_free(&x);
  kiln_matrix_free(&y);
}

static void test_early_stopping(void **state) {
  kiln_matrix x, y, now;
  blobs(100, 4, 2, &x, &y);
  static const double script[] = {5, 3, 1, 2, 1.5, 2, 2, 2, 2, 2};
  for (int restore = 0; restore <= 1; restore++) {
    kiln_model *m = binary_model(2, 0.01f);
    scripted sc = {script, 10, 0};
    kiln_metric metric;
    add_scripted(m, &sc, &metric);
    kiln_early_stopping_config c;
    kiln_early_stopping_config_init(&c);
    c.monitor = "score"; /* auto: min */
    c.patience = 2;
    c.restore_best_weights = restore;
    kiln_callback cbs[2];
    recorder r;
    cbs[0] = rec_callback(&r);
    r.x = &x;
    assert_int_equal(kiln_early_stopping_create(&c, &cbs[1], NULL), KILN_OK);
    kiln_fit_options opt;
    kiln_fit_options_init(&opt);
    opt.epochs = 10;
    opt.callbacks = cbs;
    opt.n_callbacks = 2;
    kiln_history h = {0};
    assert_int_equal(kiln_model_fit(m, &x, &y, &opt, &h, NULL), KILN_OK);
    /* Best at epoch 2 (1.0; 1.5 and 2 are worse): stopped patience epochs later. */
    assert_int_equal(h.epochs, 5);
    assert_int_equal(kiln_early_stopping_best_epoch(&cbs[1]), 2);
    assert_int_equal(kiln_early_stopping_stopped_epoch(&cbs[1]), 4);
    assert_int_equal(r.n_epochs, 5);
    assert_int_equal(kiln_model_predict(m, &x, 32, &now, NULL), KILN_OK);
    assert_false(same_matrix(&r.pred[2], &r.pred[4]));
    assert_true(same_matrix(&now, restore ? &r.pred[2] : &r.pred[4]));
    kiln_matrix_free(&now);
    rec_free(&r);
    kiln_history_free(&h);
    kiln_callback_free(&cbs[1]);
    kiln_model_free(m);
  }
  /* min_delta: 3 -> 2.95 is no improvement by more than 0.1; mode max flips it. */
  static const double flat[] = {3, 2.95, 2.9, 2.85, 2.8};
  for (int max = 0; max <= 1; max++) {
    kiln_model *m = binary_model(2, 0.01f);
    scripted sc = {flat, 5, 0};
    kiln_metric metric;
    add_scripted(m, &sc, &metric);
    kiln_early_stopping_config c;
    kiln_early_stopping_config_init(&c);
    c.monitor = "score";
    c.mode = max ? "max" : "min";
    c.min_delta = 0.1;
    c.patience = 1;
    kiln_callback cb;
    assert_int_equal(kiln_early_stopping_create(&c, &cb, NULL), KILN_OK);
    kiln_fit_options opt;
    kiln_fit_options_init(&opt);
    opt.epochs = 5;
    opt.callbacks = &cb;
    opt.n_callbacks = 1;
    kiln_history h = {0};
    assert_int_equal(kiln_model_fit(m, &x, &y, &opt, &h, NULL), KILN_OK);
    assert_int_equal(h.epochs, 2);
    assert_int_equal(kiln_early_stopping_best_epoch(&cb), 0);
    kiln_history_free(&h);
    kiln_callback_free(&cb);
    kiln_model_free(m);
  }
  kiln_matrix_free(&x);
  kiln_matrix_free(&y);
}

static int tmp_files_in(const char *dir) {
  DIR *d = opendir(dir);
  int n = 0;
  struct dirent *e;
  while ((e = readdir(d)))
    if (strstr(e->d_name, ".tmp")) n++;
  closedir(d);
  return n;
}

static void make_dir(char *dir, size_t cap, const char *name) {
  snprintf(dir, cap, "/tmp/kiln_%s_XXXXXX", name);
  assert_non_null(mkdtemp(dir));
}

static void remove_dir(const char *dir) {
  DIR *d = opendir(dir);
  struct dirent *e;
  char path[512];
  while ((e = readdir(d))) {
    if (e->d_name[0] == '.') continue;
    snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
    unlink(path);
  }
  closedir(d);
  rmdir(dir);
}

static int exists(const char *path) {
  struct stat st;
  return stat(path, &st) == 0;
}

static void test_model_checkpoint_best_only(void **state) {
  kiln_matrix x, y;
  blobs(100, 4, 3, &x, &y);
  char dir[64], pattern[128], path[160];
  make_dir(dir, sizeof dir, "ckpt");
  static const double script[] = {3, 2, 4, 1, 5};
  kiln_model *m = binary_model(3, 0.01f);
  scripted sc = {script, 5, 0};
  kiln_metric metric;
  add_scripted(m, &sc, &metric);
  kiln_model_checkpoint_config c;
  kiln_model_checkpoint_config_init(&c);
  snprintf(pattern, sizeof pattern, "%s/model_{epoch}.kiln", dir);
  c.filepath = pattern;
  c.monitor = "score";
  c.save_best_only = 1;
  kiln_callback cbs[2];
  recorder r;
  cbs[0] = rec_callback(&r);
  r.x = &x;
  assert_int_equal(kiln_model_checkpoint_create(&c, &cbs[1], NULL), KILN_OK);
  kiln_fit_options opt;
  kiln_fit_options_init(&opt);
  opt.epochs = 5;
  opt.callbacks = cbs;
  opt.n_callbacks = 2;
  assert_int_equal(kiln_model_fit(m, &x, &y, &opt, NULL, NULL), KILN_OK);
  assert_int_equal(kiln_model_checkpoint_saves(&cbs[1]), 3);
  static const int written[] = {1, 1, 0, 1, 0};
  for (int e = 0; e < 5; e++) {
    snprintf(path, sizeof path, "%s/model_%d.kiln", dir, e + 1);
    assert_int_equal(exists(path), written[e]);
  }
  /* The best file loads and predicts as the model did at that epoch. */
  snprintf(path, sizeof path, "%s/model_4.kiln", dir);
  kiln_model *loaded;
  kiln_matrix p;
  assert_int_equal(kiln_model_load(path, &loaded, NULL), KILN_OK);
  assert_int_equal(kiln_model_predict(loaded, &x, 32, &p, NULL), KILN_OK);
  assert_true(same_matrix(&p, &r.pred[3]));
  assert_int_equal(tmp_files_in(dir), 0);
  kiln_matrix_free(&p);
  kiln_model_free(loaded);
  kiln_callback_free(&cbs[1]);
  rec_free(&r);
  cbs[0] = rec_callback(&r);
  /* Not best-only, a fixed name: rewritten every epoch; a bad folder fails fit. */
  snprintf(pattern, sizeof pattern, "%s/last.kiln", dir);
  c.save_best_only = 0;
  c.monitor = "no_such_key"; /* not needed without save_best_only */
  assert_int_equal(kiln_model_checkpoint_create(&c, &cbs[1], NULL), KILN_OK);
  assert_int_equal(kiln_model_fit(m, &x, &y, &opt, NULL, NULL), KILN_OK);
  assert_int_equal(kiln_model_checkpoint_saves(&cbs[1]), 5);
  assert_true(exists(pattern));
  kiln_callback_free(&cbs[1]);
  snprintf(pattern, sizeof pattern, "%s/no/such/dir/m.kiln", dir);
  assert_int_equal(kiln_model_checkpoint_create(&c, &cbs[1], NULL), KILN_OK);
  kiln_error err = {0};
  rec_free(&r);
  cbs[0] = rec_callback(&r);
  assert_int_equal(kiln_model_fit(m, &x, &y, &opt, NULL, &err), KILN_E_IO);
  assert_non_null(strstr(err.message, "ModelCheckpoint: epoch 1"));
  assert_non_null(strstr(err.message, "no/such/dir"));
  assert_null(strstr(r.events, "T")); /* no on_train_end after a failure */
  kiln_callback_free(&cbs[1]);
  rec_free(&r);
  remove_dir(dir);
  kiln_model_free(m);
  kiln_matrix_free(&x);
  kiln_matrix_free(&y);
}

/* "auto" mode picks max for a key holding "acc" (ModelCheckpoint and ReduceLROnPlateau),
 * and a fixed checkpoint path's stale temporaries (a killed run's) go when fit begins. */
static void test_auto_max_and_stale_temporaries(void **state) {
  kiln_matrix x, y;
  blobs(64, 4, 10, &x, &y);
  char dir[64], pattern[128], path[160];
  make_dir(dir, sizeof dir, "auto");
  static const double script[] = {0.5, 0.7, 0.6, 0.8};
  kiln_model *m = binary_model(10, 0.01f);
  scripted sc = {script, 4, 0};
  kiln_metric metric = {"my_acc", &sc, scripted_reset, scripted_update, scripted_result, NULL};
  assert_int_equal(kiln_model_add_metric(m, &metric, NULL), KILN_OK);
  kiln_model_checkpoint_config c;
  kiln_model_checkpoint_config_init(&c);
  snprintf(pattern, sizeof pattern, "%s/m_{epoch}.kiln", dir);
  c.filepath = pattern;
  c.monitor = "my_acc";
  c.save_best_only = 1;
  kiln_reduce_lr_config rc;
  kiln_reduce_lr_config_init(&rc);
  rc.monitor = "my_acc";
  rc.patience = 1;
  rc.factor = 0.5;
  rc.min_delta = 0;
  kiln_callback cbs[3];
  assert_int_equal(kiln_model_checkpoint_create(&c, &cbs[0], NULL), KILN_OK);
  assert_int_equal(kiln_reduce_lr_create(&rc, &cbs[1], NULL), KILN_OK);
  recorder r;
  cbs[2] = rec_callback(&r);
  kiln_fit_options opt;
  kiln_fit_options_init(&opt);
  opt.epochs = 4;
  opt.callbacks = cbs;
  opt.n_callbacks = 3;
  assert_int_equal(kiln_model_fit(m, &x, &y, &opt, NULL, NULL), KILN_OK);
  static const int written[] = {1, 1, 0, 1}; /* 0.5, 0.7, (0.6), 0.8: higher is better */
  for (int e = 0; e < 4; e++) {
    snprintf(path, sizeof path, "%s/m_%d.kiln", dir, e + 1);
    assert_int_equal(exists(path), written[e]);
  }
  /* 0.6 after 0.7: one epoch without improvement halves the rate. */
  assert_true(r.lr[1] == 0.01f && r.lr[2] == 0.005f && r.lr[3] == 0.005f);
  kiln_callback_free(&cbs[0]);
  kiln_callback_free(&cbs[1]);
  rec_free(&r);
  /* A killed run left "last.kiln.tmpXXXXXX"; a file merely named alike stays. */
  char stale[192], other[192];
  snprintf(pattern, sizeof pattern, "%s/last.kiln", dir);
  snprintf(stale, sizeof stale, "%s/last.kiln.tmpAb12Cd", dir);
  snprintf(other, sizeof other, "%s/last.kiln.tmp.notes", dir);
  FILE *f = fopen(stale, "w");
  assert_non_null(f);
  fclose(f);
  assert_non_null(f = fopen(other, "w"));
  fclose(f);
  c.save_best_only = 0;
  assert_int_equal(kiln_model_checkpoint_create(&c, &cbs[0], NULL), KILN_OK);
  opt.callbacks = cbs;
  opt.n_callbacks = 1;
  opt.epochs = 1;
  assert_int_equal(kiln_model_fit(m, &x, &y, &opt, NULL, NULL), KILN_OK);
  assert_false(exists(stale));
  assert_true(exists(other));
  assert_true(exists(pattern));
  kiln_callback_free(&cbs[0]);
  remove_dir(dir);
  kiln_model_free(m);
  kiln_matrix_free(&x);
  kiln_matrix_free(&y);
}

static float halve_each_epoch(int epoch, float lr, void *user) {
  return epoch == 0 ? *(float *)user : lr * 0.5f;
}
static float bad_schedule(int epoch, float lr, void *user) { return epoch == 1 ? -1.0f : lr; }

static void test_lr_scheduler(void **state) {
  kiln_matrix x, y;
  blobs(64, 4, 4, &x, &y);
  kiln_model *m = binary_model(4, 0.01f);
  float start = 0.08f;
  kiln_lr_scheduler_config c = {halve_each_epoch, &start};
  kiln_callback cbs[2];
  assert_int_equal(kiln_lr_scheduler_create(&c, &cbs[0], NULL), KILN_OK);
  recorder r;
  cbs[1] = rec_callback(&r);
  kiln_fit_options opt;
  kiln_fit_options_init(&opt);
  opt.epochs = 4;
  opt.callbacks = cbs;
  opt.n_callbacks = 2;
  assert_int_equal(kiln_model_fit(m, &x, &y, &opt, NULL, NULL), KILN_OK);
  assert_int_equal(r.n_epochs, 4);
  assert_true(r.lr[0] == 0.08f && r.lr[1] == 0.04f && r.lr[2] == 0.02f && r.lr[3] == 0.01f);
  kiln_callback_free(&cbs[0]);
  kiln_lr_scheduler_config bad = {bad_schedule, NULL};
  assert_int_equal(kiln_lr_scheduler_create(&bad, &cbs[0], NULL), KILN_OK);
  kiln_error err = {0};
  assert_int_equal(kiln_model_fit(m, &x, &y, &opt, NULL, &err), KILN_E_RANGE);
  assert_non_null(strstr(err.message, "LearningRateScheduler: epoch 2"));
  kiln_callback_free(&cbs[0]);
  rec_free(&r);
  kiln_model_free(m);
  kiln_matrix_free(&x);
  kiln_matrix_free(&y);
}

static void test_reduce_lr_on_plateau(void **state) {
  kiln_matrix x, y;
  blobs(64, 4, 5, &x, &y);
  static const double flat[] = {1};
  for (int floor_case = 0; floor_case <= 1; floor_case++) {
    kiln_model *m = binary_model(5, 0.01f);
    scripted sc = {flat, 1, 0};
    kiln_metric metric;
    add_scripted(m, &sc, &metric);
    kiln_reduce_lr_config c;
    kiln_reduce_lr_config_init(&c);
    c.monitor = "score";
    c.factor = 0.5;
    c.patience = 2;
    c.cooldown = 1;
    c.min_delta = 0;
    c.min_lr = floor_case ? 0.003 : 0;
    kiln_callback cbs[2];
    assert_int_equal(kiln_reduce_lr_create(&c, &cbs[0], NULL), KILN_OK);
    recorder r;
    cbs[1] = rec_callback(&r);
    kiln_fit_options opt;
    kiln_fit_options_init(&opt);
    opt.epochs = 8;
    opt.callbacks = cbs;
    opt.n_callbacks = 2;
    assert_int_equal(kiln_model_fit(m, &x, &y, &opt, NULL, NULL), KILN_OK);
    /* Keras' rule: a reduction after 2 flat epochs, then 1 of cooldown before counting. */
    const float expect[2][8] = {
        {0.01f, 0.01f, 0.005f, 0.005f, 0.0025f, 0.0025f, 0.00125f, 0.00125f},
        {0.01f, 0.01f, 0.005f, 0.005f, 0.003f, 0.003f, 0.003f, 0.003f}};
    for (int e = 0; e < 8; e++) assert_float_equal(r.lr[e], expect[floor_case][e], 1e-9);
    kiln_callback_free(&cbs[0]);
    rec_free(&r);
    kiln_model_free(m);
  }
  kiln_matrix_free(&x);
  kiln_matrix_free(&y);
}

static char *slurp(const char *path) {
  FILE *fp = fopen(path, "rb");
  assert_non_null(fp);
  static char buf[8192];
  size_t n = fread(buf, 1, sizeof buf - 1, fp);
  buf[n] = 0;
  fclose(fp);
  return buf;
}

static void test_csv_logger(void **state) {
  kiln_matrix x, y;
  blobs(120, 4, 6, &x, &y);
  char dir[64], path[128];
  make_dir(dir, sizeof dir, "csv");
  snprintf(path, sizeof path, "%s/log.csv", dir);
  kiln_model *m = binary_model(6, 0.01f);
  kiln_csv_logger_config c = {path, 0};
  kiln_callback cb;
  assert_int_equal(kiln_csv_logger_create(&c, &cb, NULL), KILN_OK);
  kiln_fit_options opt;
  kiln_fit_options_init(&opt);
  opt.epochs = 3;
  opt.validation_split = 0.25;
  opt.callbacks = &cb;
  opt.n_callbacks = 1;
  kiln_history h = {0};
  assert_int_equal(kiln_model_fit(m, &x, &y, &opt, &h, NULL), KILN_OK);
  char *text = slurp(path);
  assert_memory_equal(text, "epoch,accuracy,loss,val_accuracy,val_loss\n", 42);
  char *line = strchr(text, '\n') + 1;
  for (int e = 0; e < 3; e++) {
    int epoch;
    double acc, loss, vacc, vloss;
    assert_int_equal(sscanf(line, "%d,%lf,%lf,%lf,%lf", &epoch, &acc, &loss, &vacc, &vloss), 5);
    assert_int_equal(epoch, e);
    assert_true(loss == kiln_history_get(&h, "loss", e));
    assert_true(acc == kiln_history_get(&h, "accuracy", e));
    assert_true(vloss == kiln_history_get(&h, "val_loss", e));
    assert_true(vacc == kiln_history_get(&h, "val_accuracy", e));
    line = strchr(line, '\n') + 1;
  }
  assert_int_equal(*line, 0);
  kiln_history_free(&h);
  kiln_callback_free(&cb);
  /* append: the header stays single, the new rows follow. */
  c.append = 1;
  assert_int_equal(kiln_csv_logger_create(&c, &cb, NULL), KILN_OK);
  opt.epochs = 2;
  opt.callbacks = &cb;
  assert_int_equal(kiln_model_fit(m, &x, &y, &opt, NULL, NULL), KILN_OK);
  text = slurp(path);
  int lines = 0, headers = 0;
  for (char *p = text; *p; p = strchr(p, '\n') + 1) {
    lines++;
    headers += strncmp(p, "epoch,", 6) == 0;
  }
  assert_int_equal(lines, 6);
  assert_int_equal(headers, 1);
  assert_int_equal(tmp_files_in(dir), 0);
  kiln_callback_free(&cb);
  /* A folder that does not exist: fit fails naming the file. */
  snprintf(path, sizeof path, "%s/missing/log.csv", dir);
  c.append = 0;
  assert_int_equal(kiln_csv_logger_create(&c, &cb, NULL), KILN_OK);
  kiln_error err = {0};
  assert_int_equal(kiln_model_fit(m, &x, &y, &opt, NULL, &err), KILN_E_IO);
  assert_non_null(strstr(err.message, "CSVLogger"));
  assert_non_null(strstr(err.message, "missing/log.csv"));
  kiln_callback_free(&cb);
  remove_dir(dir);
  kiln_model_free(m);
  kiln_matrix_free(&x);
  kiln_matrix_free(&y);
}

static kiln_model *divergent_model(void) {
  kiln_model *m;
  assert_int_equal(kiln_model_create(1, &m, NULL), KILN_OK);
  assert_int_equal(kiln_model_add_input(m, 4, NULL), KILN_OK);
  assert_int_equal(kiln_model_add_dense(m, 64, KILN_ACTIVATION_RELU, NULL), KILN_OK);
  assert_int_equal(kiln_model_add_dense(m, 1, KILN_ACTIVATION_LINEAR, NULL), KILN_OK);
  kiln_optimizer o;
  kiln_optimizer_init(&o, KILN_OPTIMIZER_SGD);
  o.learning_rate = 1.0f;
  assert_int_equal(kiln_model_compile(m, &o, KILN_LOSS_MEAN_SQUARED_ERROR, NULL, 0, NULL), KILN_OK);
  return m;
}

static void test_terminate_on_nan(void **state) {
  kiln_matrix x, y;
  blobs(256, 4, 2, &x, &y);
  for (int64_t i = 0; i < 256; i++) y.values[i] = 1e4f * x.values[i * 4];
  kiln_model *m = divergent_model();
  kiln_callback cbs[3];
  assert_int_equal(kiln_terminate_on_nan_create(&cbs[0], NULL), KILN_OK);
  assert_int_equal(kiln_loss_history_create(&cbs[1], NULL), KILN_OK);
  recorder r;
  cbs[2] = rec_callback(&r);
  kiln_fit_options opt;
  kiln_fit_options_init(&opt);
  opt.epochs = 50;
  opt.callbacks = cbs;
  opt.n_callbacks = 3;
  kiln_history h = {0};
  kiln_error err = {0};
  assert_int_equal(kiln_model_fit(m, &x, &y, &opt, &h, &err), KILN_OK);
  assert_int_equal(kiln_terminate_on_nan_triggered(&cbs[0]), 1);
  assert_true(h.epochs < 50);
  assert_int_equal(r.n_epochs, h.epochs); /* the unfinished epoch has no on_epoch_end */
  assert_non_null(strstr(r.events, "T"));
  int64_t n;
  const double *losses = kiln_loss_history_values(&cbs[1], &n);
  assert_true(n > 0 && !isfinite(losses[n - 1])); /* the callbacks saw the bad batch */
  for (int64_t i = 0; i + 1 < n; i++) assert_true(isfinite(losses[i]));
  /* The weights are those of the last finite batch. */
  kiln_layer_info li;
  assert_int_equal(kiln_model_layer(m, 1, &li, NULL), KILN_OK);
  for (int64_t i = 0; i < li.in_features * li.out_features; i++)
    assert_true(isfinite(li.kernel[i]));
  kiln_history_free(&h);
  for (int i = 0; i < 2; i++) kiln_callback_free(&cbs[i]);
  rec_free(&r);
  kiln_model_free(m);
  /* Without it, fit reports the divergence as before. */
  m = divergent_model();
  opt.callbacks = NULL;
  opt.n_callbacks = 0;
  assert_int_equal(kiln_model_fit(m, &x, &y, &opt, NULL, &err), KILN_E_DIVERGED);
  kiln_model_free(m);
  kiln_matrix_free(&x);
  kiln_matrix_free(&y);
}

static void test_loss_history(void **state) {
  kiln_matrix x, y;
  blobs(100, 4, 7, &x, &y);
  kiln_model *m = binary_model(7, 0.01f);
  kiln_callback cb;
  assert_int_equal(kiln_loss_history_create(&cb, NULL), KILN_OK);
  kiln_fit_options opt;
  kiln_fit_options_init(&opt);
  opt.epochs = 3;
  opt.batch_size = 32; /* 4 batches an epoch */
  opt.callbacks = &cb;
  opt.n_callbacks = 1;
  kiln_history h = {0};
  assert_int_equal(kiln_model_fit(m, &x, &y, &opt, &h, NULL), KILN_OK);
  int64_t n;
  const double *v = kiln_loss_history_values(&cb, &n);
  assert_int_equal(n, 12);
  for (int e = 0; e < 3; e++) assert_true(v[4 * e + 3] == kiln_history_get(&h, "loss", e));
  kiln_history_free(&h);
  /* A second fit starts a new record. */
  opt.epochs = 1;
  assert_int_equal(kiln_model_fit(m, &x, &y, &opt, NULL, NULL), KILN_OK);
  kiln_loss_history_values(&cb, &n);
  assert_int_equal(n, 4);
  kiln_callback_free(&cb);
  kiln_callback_free(&cb); /* freed callbacks are zeroed: harmless */
  kiln_model_free(m);
  kiln_matrix_free(&x);
  kiln_matrix_free(&y);
}

static void expect_bad(kiln_status s, const kiln_error *err, const char *needle) {
  assert_int_equal(s, KILN_E_INVALID);
  if (!strstr(err->message, needle)) fail_msg("\"%s\" lacks \"%s\"", err->message, needle);
}

static void test_bad_configs(void **state) {
  kiln_callback cb;
  kiln_error err = {0};
  kiln_early_stopping_config es;
  kiln_early_stopping_config_init(&es);
  es.patience = -1;
  expect_bad(kiln_early_stopping_create(&es, &cb, &err), &err, "patience");
  kiln_early_stopping_config_init(&es);
  es.mode = "median";
  expect_bad(kiln_early_stopping_create(&es, &cb, &err), &err, "median");
  kiln_early_stopping_config_init(&es);
  es.min_delta = -0.5;
  expect_bad(kiln_early_stopping_create(&es, &cb, &err), &err, "min_delta");
  kiln_reduce_lr_config rl;
  kiln_reduce_lr_config_init(&rl);
  rl.factor = 1.0;
  expect_bad(kiln_reduce_lr_create(&rl, &cb, &err), &err, "factor");
  rl.factor = 0.0;
  expect_bad(kiln_reduce_lr_create(&rl, &cb, &err), &err, "factor");
  kiln_reduce_lr_config_init(&rl);
  rl.cooldown = -2;
  expect_bad(kiln_reduce_lr_create(&rl, &cb, &err), &err, "cooldown");
  kiln_reduce_lr_config_init(&rl);
  rl.min_lr = -1;
  expect_bad(kiln_reduce_lr_create(&rl, &cb, &err), &err, "min_lr");
  kiln_reduce_lr_config_init(&rl);
  rl.mode = "MAX";
  expect_bad(kiln_reduce_lr_create(&rl, &cb, &err), &err, "mode");
  kiln_model_checkpoint_config mc;
  kiln_model_checkpoint_config_init(&mc);
  expect_bad(kiln_model_checkpoint_create(&mc, &cb, &err), &err, "filepath");
  mc.filepath = "x.kiln";
  mc.mode = "up";
  expect_bad(kiln_model_checkpoint_create(&mc, &cb, &err), &err, "ModelCheckpoint");
  kiln_lr_scheduler_config ls = {NULL, NULL};
  expect_bad(kiln_lr_scheduler_create(&ls, &cb, &err), &err, "schedule");
  kiln_csv_logger_config cl = {NULL, 0};
  expect_bad(kiln_csv_logger_create(&cl, &cb, &err), &err, "filename");
  /* Accessors on the wrong kind answer "nothing". */
  assert_int_equal(kiln_loss_history_create(&cb, NULL), KILN_OK);
  assert_int_equal(kiln_early_stopping_stopped_epoch(&cb), -1);
  assert_int_equal(kiln_terminate_on_nan_triggered(&cb), 0);
  kiln_callback_free(&cb);
}

static void test_missing_monitor_fails_fit(void **state) {
  kiln_matrix x, y;
  blobs(64, 4, 8, &x, &y);
  kiln_model *m = binary_model(8, 0.01f);
  kiln_early_stopping_config c;
  kiln_early_stopping_config_init(&c); /* val_loss, but no validation */
  kiln_callback cbs[2];
  assert_int_equal(kiln_early_stopping_create(&c, &cbs[0], NULL), KILN_OK);
  recorder r;
  cbs[1] = rec_callback(&r);
  kiln_fit_options opt;
  kiln_fit_options_init(&opt);
  opt.epochs = 3;
  opt.callbacks = cbs;
  opt.n_callbacks = 2;
  kiln_history h = {0};
  kiln_error err = {0};
  assert_int_equal(kiln_model_fit(m, &x, &y, &opt, &h, &err), KILN_E_INVALID);
  assert_non_null(strstr(err.message, "EarlyStopping: epoch 1"));
  assert_non_null(strstr(err.message, "\"val_loss\""));
  assert_non_null(strstr(err.message, "loss, accuracy"));
  /* The hooks after the failing one were not called. */
  assert_string_equal(r.events, "B E0 b b ");
  assert_int_equal(h.epochs, 1);
  kiln_history_free(&h);
  /* The next fit starts clean. */
  assert_int_equal(kiln_model_fit(m, &x, &y, NULL, NULL, NULL), KILN_OK);
  kiln_callback_free(&cbs[0]);
  rec_free(&r);
  kiln_model_free(m);
  kiln_matrix_free(&x);
  kiln_matrix_free(&y);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_hook_order),
      cmocka_unit_test(test_hook_logs),
      cmocka_unit_test(test_early_stopping),
      cmocka_unit_test(test_model_checkpoint_best_only),
      cmocka_unit_test(test_auto_max_and_stale_temporaries),
      cmocka_unit_test(test_lr_scheduler),
      cmocka_unit_test(test_reduce_lr_on_plateau),
      cmocka_unit_test(test_csv_logger),
      cmocka_unit_test(test_terminate_on_nan),
      cmocka_unit_test(test_loss_history),
      cmocka_unit_test(test_bad_configs),
      cmocka_unit_test(test_missing_monitor_fails_fit),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

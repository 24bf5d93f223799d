/* Training states and resume: k epochs + save_state + load_state + fit from
 * initial_epoch k is bit-identical to an uninterrupted run, for each optimizer; and a
 * run killed with SIGKILL mid-epoch resumes from its last per-epoch state to the same
 * bits as a run never interrupted. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <dirent.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "kiln/callbacks.h"
#include "model_internal.h"

static void blobs(int64_t n, int64_t cols, uint64_t seed, kiln_matrix *x, kiln_matrix *y) {
  kiln_rng r;
  kiln_rng_seed(&r, seed, 5);
  kiln_matrix_alloc(x, n, cols, NULL);
  kiln_matrix_alloc(y, n, 1, NULL);
  for (int64_t i = 0; i < n; i++) {
    for (int64_t j = 0; j < cols; j++) x->values[i * cols + j] = (float)kiln_rng_normal(&r);
    y->values[i] = x->values[i * cols] + x->values[i * cols + 1] > 0.0f;
  }
}

/* Dropout so the dropout generator matters; no assert (also used in a forked child). */
static kiln_model *make_model(uint64_t seed, kiln_optimizer_kind kind) {
  kiln_model *m;
  if (kiln_model_create(seed, &m, NULL)) return NULL;
  kiln_optimizer o;
  kiln_optimizer_init(&o, kind);
  o.learning_rate = 0.01f;
  if (kind == KILN_OPTIMIZER_SGD) o.momentum = 0.9f;
  const char *metrics[] = {"accuracy"};
  if (kiln_model_add_input(m, 6, NULL) || kiln_model_add_dense(m, 16, KILN_ACTIVATION_RELU, NULL) ||
      kiln_model_add_dropout(m, 0.3f, NULL) ||
      kiln_model_add_dense(m, 1, KILN_ACTIVATION_SIGMOID, NULL) ||
      kiln_model_compile(m, &o, KILN_LOSS_BINARY_CROSSENTROPY, metrics, 1, NULL)) {
    kiln_model_free(m);
    return NULL;
  }
  return m;
}

static void fit_opts(kiln_fit_options *opt, int initial, int epochs) {
  kiln_fit_options_init(opt);
  opt->batch_size = 16;
  opt->validation_split = 0.2;
  opt->initial_epoch = initial;
  opt->epochs = epochs;
}

static void assert_same_weights(const kiln_model *a, const kiln_model *b) {
  assert_int_equal(a->n_layers, b->n_layers);
  for (int i = 0; i < a->n_layers; i++) {
    const kiln_layer *la = &a->layers[i], *lb = &b->layers[i];
    if (la->kind != KILN_LAYER_DENSE) continue;
    assert_memory_equal(la->kernel, lb->kernel,
                        (size_t)(la->in_features * la->out_features) * sizeof(float));
    assert_memory_equal(la->bias, lb->bias, (size_t)la->out_features * sizeof(float));
  }
  assert_int_equal(a->iterations, b->iterations);
  assert_int_equal(a->epoch, b->epoch);
  assert_memory_equal(&a->shuffle_rng, &b->shuffle_rng, sizeof a->shuffle_rng);
  assert_memory_equal(&a->dropout_rng, &b->dropout_rng, sizeof a->dropout_rng);
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
  assert_int_equal(rmdir(dir), 0);
}

static void test_resume_is_bit_identical(void **state) {
  kiln_matrix x, y;
  blobs(200, 6, 1, &x, &y);
  char dir[] = "/tmp/kiln_resume_XXXXXX", path[64];
  assert_non_null(mkdtemp(dir));
  snprintf(path, sizeof path, "%s/state.kstate", dir);
  const kiln_optimizer_kind kinds[] = {KILN_OPTIMIZER_ADAM, KILN_OPTIMIZER_RMSPROP,
                                       KILN_OPTIMIZER_SGD};
  for (int k = 0; k < 3; k++) {
    kiln_fit_options opt;
    kiln_model *ref = make_model(7, kinds[k]);
    assert_non_null(ref);
    fit_opts(&opt, 0, 6);
    kiln_history h = {0};
    assert_int_equal(kiln_model_fit(ref, &x, &y, &opt, &h, NULL), KILN_OK);

    kiln_model *m = make_model(7, kinds[k]);
    fit_opts(&opt, 0, 2);
    assert_int_equal(kiln_model_fit(m, &x, &y, &opt, NULL, NULL), KILN_OK);
    kiln_model_set_learning_rate(m, 0.01f); /* unchanged, but saved as set */
    assert_int_equal(kiln_model_save_state(m, path, NULL), KILN_OK);
    kiln_model_free(m);
    kiln_error err = {0};
    assert_int_equal(kiln_model_load_state(path, &m, &err), KILN_OK);
    assert_int_equal(kiln_model_epoch(m), 2);
    fit_opts(&opt, kiln_model_epoch(m), 6);
    kiln_history h2 = {0};
    assert_int_equal(kiln_model_fit(m, &x, &y, &opt, &h2, NULL), KILN_OK);
    assert_int_equal(h2.epochs, 4);
    assert_true(kiln_history_get(&h2, "val_loss", 3) == kiln_history_get(&h, "val_loss", 5));
    assert_same_weights(ref, m);
    /* A plain checkpoint cannot resume, and a state is not a model checkpoint. */
    kiln_model *other;
    assert_int_equal(kiln_model_load(path, &other, &err), KILN_E_FORMAT);
    assert_non_null(strstr(err.message, "training state"));
    kiln_history_free(&h);
    kiln_history_free(&h2);
    kiln_model_free(ref);
    kiln_model_free(m);
  }
  /* A truncated state is an error naming the place, never a crash. */
  FILE *fp = fopen(path, "r+b");
  assert_non_null(fp);
  fseek(fp, 0, SEEK_END);
  long size = ftell(fp);
  fclose(fp);
  assert_int_equal(truncate(path, size - 4), 0);
  kiln_model *bad;
  kiln_error err = {0};
  assert_int_equal(kiln_model_load_state(path, &bad, &err), KILN_E_FORMAT);
  assert_non_null(strstr(err.message, "optimizer slots"));
  assert_int_equal(tmp_files_in(dir), 0);
  remove_dir(dir);
  kiln_matrix_free(&x);
  kiln_matrix_free(&y);
}

static int file_exists(const char *path) {
  struct stat st;
  return stat(path, &st) == 0;
}

static void test_sigkill_then_resume(void **state) {
  kiln_matrix x, y;
  blobs(400, 6, 2, &x, &y);
  char dir[] = "/tmp/kiln_kill_XXXXXX", path[64];
  assert_non_null(mkdtemp(dir));
  snprintf(path, sizeof path, "%s/state.kstate", dir);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    /* The child: a long run saving its state at every epoch end, until killed. */
    kiln_model *m = make_model(9, KILN_OPTIMIZER_ADAM);
    kiln_model_checkpoint_config c;
    kiln_model_checkpoint_config_init(&c);
    c.filepath = path;
    c.save_state = 1;
    kiln_callback cb;
    if (!m || kiln_model_checkpoint_create(&c, &cb, NULL)) _exit(3);
    kiln_fit_options opt;
    fit_opts(&opt, 0, 1000000);
    opt.callbacks = &cb;
    opt.n_callbacks = 1;
    kiln_model_fit(m, &x, &y, &opt, NULL, NULL);
    _exit(4);
  }
  /* Wait for a first checkpoint, let a few more epochs go, kill mid-run. */
  struct timespec tick = {0, 1000000};
  for (int i = 0; i < 20000 && !file_exists(path); i++) nanosleep(&tick, NULL);
  assert_true(file_exists(path));
  struct timespec more = {0, 30000000};
  nanosleep(&more, NULL);
  assert_int_equal(kill(pid, SIGKILL), 0);
  int status;
  assert_int_equal(waitpid(pid, &status, 0), pid);
  assert_true(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);

  kiln_model *m;
  kiln_error err = {0};
  assert_int_equal(kiln_model_load_state(path, &m, &err), KILN_OK);
  int k = kiln_model_epoch(m);
  assert_true(k >= 1);
  int total = k + 3;
  /* Resume with per-epoch states again: the killed run's stray temporary (if the kill
   * landed inside a write) is cleared, and no new one is left. */
  kiln_model_checkpoint_config c;
  kiln_model_checkpoint_config_init(&c);
  c.filepath = path;
  c.save_state = 1;
  kiln_callback cb;
  assert_int_equal(kiln_model_checkpoint_create(&c, &cb, NULL), KILN_OK);
  kiln_fit_options opt;
  fit_opts(&opt, k, total);
  opt.callbacks = &cb;
  opt.n_callbacks = 1;
  assert_int_equal(kiln_model_fit(m, &x, &y, &opt, NULL, &err), KILN_OK);
  kiln_callback_free(&cb);

  kiln_model *ref = make_model(9, KILN_OPTIMIZER_ADAM);
  fit_opts(&opt, 0, total);
  assert_int_equal(kiln_model_fit(ref, &x, &y, &opt, NULL, NULL), KILN_OK);
  assert_same_weights(ref, m);
  assert_int_equal(tmp_files_in(dir), 0);
  kiln_model_free(ref);
  kiln_model_free(m);
  remove_dir(dir);
  kiln_matrix_free(&x);
  kiln_matrix_free(&y);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_resume_is_bit_identical),
      cmocka_unit_test(test_sigkill_then_resume),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

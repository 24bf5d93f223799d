/* Custom layers (kiln_layer_class, kiln_model_custom): finite-difference gradient checks
 * through them (their weights and the Dense layers around them, so dx is checked too),
 * training with one lowers the loss, the optimizer, summary and checkpoints see their
 * weights, save/load needs the class again, and bad classes or declarations are clear
 * errors. The RMS normalization of examples/custom_layer.c is one of the classes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../../examples/rms_norm.h"
#include "kiln/callbacks.h"
#include "custom_layer.h"
#include "model_internal.h"

/* --- test classes ----------------------------------------------------------- */

/* Affine: y = x W + b with W in x units (glorot, fan 0: the layer's widths), b given
 * values; a width change, two weights, and a dx that the Dense before it needs. */
typedef struct affine_cfg {
  int64_t units;
  int destroyed; /* counts destroy calls, to check ownership */
  int fail_build;
  int bad_decl; /* which bad declaration build makes (0: none) */
} affine_cfg;

static kiln_status affine_build(void *ctx, int64_t in, kiln_layer_decl *d, kiln_error *err) {
  affine_cfg *c = ctx;
  static const float bias[3] = {0.05f, -0.1f, 0.2f};
  if (c->fail_build) return kiln_error_set(err, KILN_E_INVALID, "units must be 3 or fewer");
  d->out_features = c->units;
  d->n_weights = 2;
  d->weights[0].name = "kernel";
  d->weights[0].size = in * c->units;
  d->weights[1].name = "bias";
  d->weights[1].size = c->units;
  d->weights[1].values = bias;
  switch (c->bad_decl) {
    case 1: d->out_features = 0; break;
    case 2: d->n_weights = KILN_LAYER_MAX_WEIGHTS + 1; break;
    case 3: d->weights[1].name = "kernel"; break;
    case 4: d->weights[0].size = 0; break;
    case 5: d->weights[1].name = NULL; break;
    case 6: d->weights[0].initializer = (kiln_initializer)42; break;
  }
  return KILN_OK;
}

static void affine_forward(void *ctx, float *const *w, const float *x, int64_t rows, int64_t in,
                           int64_t out, int training, float *y) {
  for (int64_t r = 0; r < rows; r++)
    for (int64_t j = 0; j < out; j++) {
      float s = w[1][j];
      for (int64_t k = 0; k < in; k++) s += x[r * in + k] * w[0][k * out + j];
      y[r * out + j] = s;
    }
}

static void affine_backward(void *ctx, float *const *w, const float *x, const float *y,
                            const float *dy, int64_t rows, int64_t in, int64_t out, float *dx,
                            float *const *g) {
  for (int64_t r = 0; r < rows; r++)
    for (int64_t j = 0; j < out; j++) {
      float d = dy[r * out + j];
      g[1][j] += d;
      for (int64_t k = 0; k < in; k++) {
        g[0][k * out + j] += x[r * in + k] * d;
        if (dx) dx[r * in + k] += w[0][k * out + j] * d;
      }
    }
}

static void affine_destroy(void *ctx) { ((affine_cfg *)ctx)->destroyed++; }

static const kiln_layer_class affine_class = {"Affine", affine_build, affine_forward,
                                              affine_backward, affine_destroy, NULL};

/* --- helpers ------------------------------------------------------------------- */

static void fill(kiln_matrix *m, int64_t rows, int64_t cols, kiln_rng *r) {
  assert_int_equal(kiln_matrix_alloc(m, rows, cols, NULL), KILN_OK);
  for (int64_t i = 0; i < rows * cols; i++) m->values[i] = (float)kiln_rng_normal(r);
}

/* in -> Dense(hidden, tanh) -> custom -> Dense(out, activation). */
static kiln_model *sandwich(const kiln_layer_class *cls, void *ctx, int64_t in, int64_t hidden,
                            int64_t out, kiln_activation act, kiln_loss loss) {
  kiln_model *m;
  kiln_node x;
  assert_int_equal(kiln_model_create(11, &m, NULL), KILN_OK);
  assert_int_equal(kiln_model_input(m, "x", in, &x, NULL), KILN_OK);
  kiln_dense_options d;
  kiln_dense_options_init(&d);
  d.activation = KILN_ACTIVATION_TANH;
  assert_int_equal(kiln_model_dense(m, x, hidden, &d, &x, NULL), KILN_OK);
  kiln_error err = {0};
  if (kiln_model_custom(m, x, cls, ctx, NULL, &x, &err)) fail_msg("%s", err.message);
  d.activation = act;
  assert_int_equal(kiln_model_dense(m, x, out, &d, &x, NULL), KILN_OK);
  assert_int_equal(kiln_model_set_output(m, x, NULL), KILN_OK);
  kiln_optimizer o;
  kiln_optimizer_init(&o, KILN_OPTIMIZER_ADAM);
  o.learning_rate = 0.01f;
  assert_int_equal(kiln_model_compile(m, &o, loss, NULL, 0, NULL), KILN_OK);
  return m;
}

/* Every trainable value of the model with its analytic gradient (after a
 * kiln_model_gradients call): Dense kernels and biases, custom weights. */
typedef struct tensor_ref {
  float *value, *grad;
  int64_t size;
  const char *what;
} tensor_ref;

static int tensors(kiln_model *m, tensor_ref *t, int cap) {
  int n = 0;
  for (int i = 0; i < m->n_layers; i++) {
    kiln_layer *l = &m->layers[i];
    if (l->kind == KILN_LAYER_DENSE) {
      tensor_ref k = {l->kernel, l->grad_kernel, l->in_features * l->out_features, l->name};
      tensor_ref b = {l->bias, l->grad_bias, l->out_features, l->name};
      t[n++] = k;
      t[n++] = b;
    } else if (l->kind == KILN_LAYER_CUSTOM) {
      int nw = kiln_model_weight_count(m, i);
      for (int w = 0; w < nw && n < cap; w++) {
        kiln_weight_info wi;
        assert_int_equal(kiln_model_weight(m, i, w, &wi, NULL), KILN_OK);
        assert_ptr_equal(wi.grad, l->custom->g[w]);
        tensor_ref c = {wi.value, wi.grad, wi.size, l->custom->names[w]};
        t[n++] = c;
      }
    }
  }
  return n;
}

static void gradient_check(kiln_model *m, const kiln_matrix *x, const kiln_matrix *y) {
  double loss;
  assert_int_equal(kiln_model_gradients(m, x, y, 1, &loss, NULL), KILN_OK);
  tensor_ref t[32];
  int n = tensors(m, t, 32);
  float *saved[32];
  for (int i = 0; i < n; i++) {
    saved[i] = malloc((size_t)t[i].size * sizeof(float));
    memcpy(saved[i], t[i].grad, (size_t)t[i].size * sizeof(float));
  }
  int checked = 0, custom_checked = 0;
  for (int i = 0; i < n; i++) {
    for (int64_t k = 0; k < t[i].size; k++) {
      float *w = &t[i].value[k], keep = *w, h = 2e-3f;
      double lp, lm;
      *w = keep + h;
      assert_int_equal(kiln_model_gradients(m, x, y, 1, &lp, NULL), KILN_OK);
      *w = keep - h;
      assert_int_equal(kiln_model_gradients(m, x, y, 1, &lm, NULL), KILN_OK);
      *w = keep;
      double numeric = (lp - lm) / (2.0 * h), analytic = saved[i][k];
      if (fabs(numeric - analytic) > 2e-3 + 2e-2 * fabs(numeric))
        fail_msg("%s[%lld]: analytic %.6f numeric %.6f", t[i].what, (long long)k, analytic,
                 numeric);
      checked++;
      custom_checked += strcmp(t[i].what, "gamma") == 0 || strcmp(t[i].what, "kernel") == 0 ||
                        strcmp(t[i].what, "bias") == 0;
    }
    free(saved[i]);
  }
  assert_true(checked > 0 && custom_checked > 0);
}

static void targets(kiln_matrix *y, int64_t rows, int64_t cols, kiln_loss loss, kiln_rng *r) {
  int64_t yc = loss == KILN_LOSS_SPARSE_CATEGORICAL_CROSSENTROPY ? 1 : cols;
  assert_int_equal(kiln_matrix_alloc(y, rows, yc, NULL), KILN_OK);
  for (int64_t i = 0; i < rows * yc; i++)
    y->values[i] = loss == KILN_LOSS_SPARSE_CATEGORICAL_CROSSENTROPY
                       ? (float)kiln_rng_below(r, (uint64_t)cols)
                       : (float)kiln_rng_normal(r);
}

/* --- tests ------------------------------------------------------------------- */

static void test_gradients_affine(void **state) {
  kiln_rng r;
  kiln_rng_seed(&r, 1, 9);
  kiln_matrix x, y;
  fill(&x, 6, 5, &r);
  affine_cfg cfg = {3, 0, 0, 0};
  /* 5 -> 4 (tanh) -> Affine 3 -> 2 softmax, sparse crossentropy; and MSE. */
  kiln_model *m = sandwich(&affine_class, &cfg, 5, 4, 2, KILN_ACTIVATION_SOFTMAX,
                           KILN_LOSS_SPARSE_CATEGORICAL_CROSSENTROPY);
  targets(&y, 6, 2, KILN_LOSS_SPARSE_CATEGORICAL_CROSSENTROPY, &r);
  gradient_check(m, &x, &y);
  kiln_matrix_free(&y);
  kiln_model_free(m);
  assert_int_equal(cfg.destroyed, 1); /* the model destroyed its ctx once */
  cfg.destroyed = 0;
  m = sandwich(&affine_class, &cfg, 5, 4, 2, KILN_ACTIVATION_LINEAR, KILN_LOSS_MEAN_SQUARED_ERROR);
  targets(&y, 6, 2, KILN_LOSS_MEAN_SQUARED_ERROR, &r);
  gradient_check(m, &x, &y);
  kiln_matrix_free(&y);
  kiln_model_free(m);
  kiln_matrix_free(&x);
}

static void test_gradients_rms_norm(void **state) {
  kiln_rng r;
  kiln_rng_seed(&r, 2, 9);
  kiln_matrix x, y;
  fill(&x, 7, 5, &r);
  kiln_model *m = sandwich(&rms_norm_class, rms_norm_config_create(1e-6f), 5, 4, 3,
                           KILN_ACTIVATION_SIGMOID, KILN_LOSS_MEAN_SQUARED_ERROR);
  /* A gain away from 1, so that dgamma and dx do not hide behind a symmetric point. */
  kiln_node norm;
  assert_int_equal(kiln_model_find_layer(m, "rmsnormalization", &norm, NULL), KILN_OK);
  kiln_weight_info wi;
  assert_int_equal(kiln_model_weight(m, norm, 0, &wi, NULL), KILN_OK);
  assert_string_equal(wi.name, "rmsnormalization/gamma");
  assert_int_equal(wi.rows, 1);
  assert_int_equal(wi.size, 4);
  for (int64_t j = 0; j < wi.size; j++) {
    assert_true(wi.value[j] == 1.0f); /* the declared constant initializer */
    wi.value[j] = 0.5f + 0.3f * (float)j;
  }
  targets(&y, 7, 3, KILN_LOSS_MEAN_SQUARED_ERROR, &r);
  gradient_check(m, &x, &y);
  kiln_matrix_free(&y);
  kiln_model_free(m);
  kiln_matrix_free(&x);
}

/* Two blobs; 8 -> Dense 8 relu -> RMSNorm -> Dense 1 sigmoid learns them. */
static void test_training_lowers_loss(void **state) {
  kiln_rng r;
  kiln_rng_seed(&r, 3, 9);
  kiln_matrix x, y;
  fill(&x, 256, 8, &r);
  assert_int_equal(kiln_matrix_alloc(&y, 256, 1, NULL), KILN_OK);
  for (int64_t i = 0; i < 256; i++) y.values[i] = x.values[i * 8] + x.values[i * 8 + 1] > 0.0f;
  kiln_model *m = sandwich(&rms_norm_class, rms_norm_config_create(1e-6f), 8, 8, 1,
                           KILN_ACTIVATION_SIGMOID, KILN_LOSS_BINARY_CROSSENTROPY);
  kiln_node norm;
  assert_int_equal(kiln_model_find_layer(m, "rmsnormalization", &norm, NULL), KILN_OK);
  kiln_weight_info wi;
  assert_int_equal(kiln_model_weight(m, norm, 0, &wi, NULL), KILN_OK);
  kiln_fit_options opt;
  kiln_fit_options_init(&opt);
  opt.epochs = 15;
  kiln_history h = {0};
  assert_int_equal(kiln_model_fit(m, &x, &y, &opt, &h, NULL), KILN_OK);
  double first = kiln_history_get(&h, "loss", 0), last = kiln_history_get(&h, "loss", 14);
  print_message("loss %.4f -> %.4f\n", first, last);
  assert_true(last < 0.5 * first);
  /* The optimizer moved the custom weight. */
  int moved = 0;
  for (int64_t j = 0; j < wi.size; j++) moved += wi.value[j] != 1.0f;
  assert_true(moved > 0);
  kiln_history_free(&h);
  kiln_model_free(m);
  kiln_matrix_free(&x);
  kiln_matrix_free(&y);
}

static void test_summary_and_counts(void **state) {
  affine_cfg cfg = {3, 0, 0, 0};
  kiln_model *m = sandwich(&affine_class, &cfg, 5, 4, 2, KILN_ACTIVATION_LINEAR,
                           KILN_LOSS_MEAN_SQUARED_ERROR);
  /* Dense 5x4+4, Affine 4x3+3, Dense 3x2+2. */
  assert_int_equal(kiln_model_param_count(m), 24 + 15 + 8);
  kiln_node n;
  assert_int_equal(kiln_model_find_layer(m, "affine", &n, NULL), KILN_OK);
  assert_ptr_equal(kiln_model_layer_class(m, n), &affine_class);
  assert_null(kiln_model_layer_class(m, 0));
  assert_int_equal(kiln_model_weight_count(m, 0), 0);
  kiln_layer_info li;
  assert_int_equal(kiln_model_layer(m, n, &li, NULL), KILN_OK);
  assert_int_equal(li.kind, KILN_LAYER_CUSTOM);
  assert_int_equal(li.in_features, 4);
  assert_int_equal(li.out_features, 3);
  kiln_weight_info wi;
  kiln_error err = {0};
  assert_int_equal(kiln_model_weight(m, n, 1, &wi, NULL), KILN_OK);
  assert_true(wi.value[0] == 0.05f && wi.value[2] == 0.2f); /* the declared values */
  assert_int_equal(kiln_model_weight(m, n, 2, &wi, &err), KILN_E_INVALID);
  assert_non_null(strstr(err.message, "affine"));
  char buf[4096] = {0};
  FILE *fp = fmemopen(buf, sizeof buf - 1, "w");
  kiln_model_summary(m, fp);
  fclose(fp);
  if (!strstr(buf, "affine (Affine)")) fail_msg("%s", buf);
  assert_non_null(strstr(buf, "15"));
  assert_non_null(strstr(buf, "Total params: 47"));
  kiln_model_free(m);
}

static void expect_error(kiln_status got, kiln_status want, const kiln_error *err,
                         const char *needle) {
  assert_int_equal(got, want);
  if (!strstr(err->message, needle)) fail_msg("\"%s\" lacks \"%s\"", err->message, needle);
}

static void test_bad_declarations(void **state) {
  kiln_model *m;
  kiln_node x;
  assert_int_equal(kiln_model_create(1, &m, NULL), KILN_OK);
  assert_int_equal(kiln_model_input(m, "x", 4, &x, NULL), KILN_OK);
  kiln_error err = {0};
  static const char *const needles[] = {"", "out_features", "KILN_LAYER_MAX_WEIGHTS",
                                        "declared twice", "size 0", "name", "initializer"};
  for (int bad = 1; bad <= 6; bad++) {
    affine_cfg cfg = {3, 0, 0, bad};
    expect_error(kiln_model_custom(m, x, &affine_class, &cfg, "aff", NULL, &err), KILN_E_INVALID,
                 &err, needles[bad]);
    assert_non_null(strstr(err.message, "aff (Affine)"));
    assert_int_equal(cfg.destroyed, 1); /* the model took ctx, also on failure */
  }
  affine_cfg cfg = {3, 0, 1, 0};
  expect_error(kiln_model_custom(m, x, &affine_class, &cfg, "aff", NULL, &err), KILN_E_INVALID,
               &err, "aff (Affine): build: units must be 3 or fewer");
  kiln_layer_class no_forward = affine_class;
  no_forward.forward = NULL;
  cfg.fail_build = 0;
  expect_error(kiln_model_custom(m, x, &no_forward, &cfg, NULL, NULL, &err), KILN_E_INVALID, &err,
               "lacks forward");
  expect_error(kiln_model_custom(m, 7, &affine_class, &cfg, NULL, NULL, &err), KILN_E_INVALID,
               &err, "input node 7");
  expect_error(kiln_model_custom(m, x, NULL, NULL, NULL, NULL, &err), KILN_E_INVALID, &err,
               "class");
  assert_int_equal(kiln_model_layer_count(m), 1); /* nothing was added */
  /* Names: unique, as other layers'. */
  assert_int_equal(kiln_model_custom(m, x, &affine_class, &cfg, "aff", NULL, NULL), KILN_OK);
  expect_error(kiln_model_custom(m, x, &affine_class, &cfg, "aff", NULL, &err), KILN_E_INVALID,
               &err, "already used");
  kiln_model_free(m);
  assert_int_equal(cfg.destroyed, 5 /* failed build, no forward, bad node, dup name, model */);
}

/* A custom layer straight on a CSR-fed Input: fit says only Dense takes CSR rows. */
static void test_sparse_input_refused(void **state) {
  kiln_rng r;
  kiln_rng_seed(&r, 4, 9);
  kiln_matrix x, xs, y;
  fill(&x, 8, 4, &r);
  assert_int_equal(kiln_matrix_to_csr(&x, &xs, NULL), KILN_OK);
  targets(&y, 8, 4, KILN_LOSS_MEAN_SQUARED_ERROR, &r);
  kiln_model *m;
  kiln_node n;
  assert_int_equal(kiln_model_create(1, &m, NULL), KILN_OK);
  assert_int_equal(kiln_model_input(m, "x", 4, &n, NULL), KILN_OK);
  assert_int_equal(kiln_model_custom(m, n, &rms_norm_class, rms_norm_config_create(1e-6f), "norm",
                                     &n, NULL), KILN_OK);
  kiln_optimizer o;
  kiln_optimizer_init(&o, KILN_OPTIMIZER_SGD);
  assert_int_equal(kiln_model_compile(m, &o, KILN_LOSS_MEAN_SQUARED_ERROR, NULL, 0, NULL), KILN_OK);
  kiln_error err = {0};
  expect_error(kiln_model_fit(m, &xs, &y, NULL, NULL, &err), KILN_E_UNSUPPORTED, &err, "norm");
  assert_int_equal(kiln_model_fit(m, &x, &y, NULL, NULL, NULL), KILN_OK);
  kiln_model_free(m);
  kiln_matrix_free(&x);
  kiln_matrix_free(&xs);
  kiln_matrix_free(&y);
}

static kiln_status make_rms_ctx(void *user, const char *layer, void **ctx, kiln_error *err) {
  *ctx = rms_norm_config_create(1e-6f);
  return *ctx ? KILN_OK : kiln_error_set(err, KILN_E_NOMEM, "%s: out of memory", layer);
}

static void test_save_load(void **state) {
  kiln_rng r;
  kiln_rng_seed(&r, 5, 9);
  kiln_matrix x, y, before, after;
  fill(&x, 32, 5, &r);
  targets(&y, 32, 2, KILN_LOSS_MEAN_SQUARED_ERROR, &r);
  kiln_model *m = sandwich(&rms_norm_class, rms_norm_config_create(1e-6f), 5, 4, 2,
                           KILN_ACTIVATION_LINEAR, KILN_LOSS_MEAN_SQUARED_ERROR);
  kiln_fit_options opt;
  kiln_fit_options_init(&opt);
  opt.epochs = 3;
  assert_int_equal(kiln_model_fit(m, &x, &y, &opt, NULL, NULL), KILN_OK);
  assert_int_equal(kiln_model_predict(m, &x, 32, &before, NULL), KILN_OK);
  char path[] = "/tmp/kiln_custom_XXXXXX";
  int fd = mkstemp(path);
  assert_true(fd >= 0);
  close(fd);
  kiln_error err = {0};
  if (kiln_model_save(m, path, &err)) fail_msg("%s", err.message);
  /* Without the class: a clear error naming the layer, the class and the fix. */
  kiln_model *loaded = NULL;
  expect_error(kiln_model_load(path, &loaded, &err), KILN_E_UNSUPPORTED, &err,
               "\"rmsnormalization\"");
  assert_non_null(strstr(err.message, "RMSNormalization"));
  assert_non_null(strstr(err.message, "kiln_model_load_custom"));
  assert_null(loaded);
  /* A factory for another class: the same error. */
  affine_cfg acfg = {3, 0, 0, 0};
  kiln_layer_factory other = {&affine_class, NULL, &acfg};
  expect_error(kiln_model_load_custom(path, &other, 1, &loaded, &err), KILN_E_UNSUPPORTED, &err,
               "RMSNormalization");
  /* With the class: the same predictions and parameters. */
  kiln_layer_factory f[2] = {{&affine_class, NULL, &acfg}, {&rms_norm_class, make_rms_ctx, NULL}};
  if (kiln_model_load_custom(path, f, 2, &loaded, &err)) fail_msg("%s", err.message);
  assert_int_equal(kiln_model_predict(loaded, &x, 32, &after, NULL), KILN_OK);
  assert_memory_equal(before.values, after.values, sizeof(float) * 64);
  assert_int_equal(kiln_model_param_count(loaded), kiln_model_param_count(m));
  kiln_node n;
  assert_int_equal(kiln_model_find_layer(loaded, "rmsnormalization", &n, NULL), KILN_OK);
  assert_ptr_equal(kiln_model_layer_class(loaded, n), &rms_norm_class);
  kiln_matrix_free(&after);
  kiln_model_free(loaded);
  /* A class of that name whose build declares other weights than the file holds. */
  kiln_layer_class impostor = affine_class;
  impostor.type = "RMSNormalization";
  kiln_layer_factory g = {&impostor, NULL, &acfg};
  expect_error(kiln_model_load_custom(path, &g, 1, &loaded, &err), KILN_E_FORMAT, &err,
               "\"rmsnormalization\"");
  assert_int_equal(acfg.destroyed, 1); /* ctx = user for that layer: handed to destroy once */
  unlink(path);
  kiln_matrix_free(&before);
  kiln_model_free(m);
  kiln_matrix_free(&x);
  kiln_matrix_free(&y);
}

/* A training state with a custom layer resumes bit-identically (its weights' Adam slots
 * are saved with the others). */
static void test_resume_state(void **state) {
  kiln_rng r;
  kiln_rng_seed(&r, 6, 9);
  kiln_matrix x, y, a, b;
  fill(&x, 64, 5, &r);
  targets(&y, 64, 2, KILN_LOSS_MEAN_SQUARED_ERROR, &r);
  kiln_model *m = sandwich(&rms_norm_class, rms_norm_config_create(1e-6f), 5, 4, 2,
                           KILN_ACTIVATION_LINEAR, KILN_LOSS_MEAN_SQUARED_ERROR);
  kiln_fit_options opt;
  kiln_fit_options_init(&opt);
  opt.epochs = 2;
  opt.batch_size = 16;
  assert_int_equal(kiln_model_fit(m, &x, &y, &opt, NULL, NULL), KILN_OK);
  char path[] = "/tmp/kiln_custom_state_XXXXXX";
  int fd = mkstemp(path);
  assert_true(fd >= 0);
  close(fd);
  kiln_error err = {0};
  if (kiln_model_save_state(m, path, &err)) fail_msg("%s", err.message);
  opt.initial_epoch = 2;
  opt.epochs = 3;
  assert_int_equal(kiln_model_fit(m, &x, &y, &opt, NULL, NULL), KILN_OK);
  assert_int_equal(kiln_model_predict(m, &x, 64, &a, NULL), KILN_OK);
  kiln_model *resumed;
  expect_error(kiln_model_load_state(path, &resumed, &err), KILN_E_UNSUPPORTED, &err,
               "kiln_model_load_state_custom");
  kiln_layer_factory f = {&rms_norm_class, make_rms_ctx, NULL};
  if (kiln_model_load_state_custom(path, &f, 1, &resumed, &err)) fail_msg("%s", err.message);
  assert_int_equal(kiln_model_epoch(resumed), 2);
  assert_int_equal(kiln_model_fit(resumed, &x, &y, &opt, NULL, NULL), KILN_OK);
  assert_int_equal(kiln_model_predict(resumed, &x, 64, &b, NULL), KILN_OK);
  assert_memory_equal(a.values, b.values, sizeof(float) * 128);
  unlink(path);
  kiln_matrix_free(&a);
  kiln_matrix_free(&b);
  kiln_model_free(resumed);
  kiln_model_free(m);
  kiln_matrix_free(&x);
  kiln_matrix_free(&y);
}

/* The low-level loop (listings 7.21-7.24) sees a custom layer's weights among the
 * trainable ones, with its gradients; from_layers shares the layer as it shares Dense
 * weights (either model may be freed first). */
static void test_trainable_weights_and_sharing(void **state) {
  kiln_rng r;
  kiln_rng_seed(&r, 7, 9);
  kiln_matrix x, y;
  fill(&x, 16, 5, &r);
  targets(&y, 16, 2, KILN_LOSS_MEAN_SQUARED_ERROR, &r);
  kiln_model *m = sandwich(&rms_norm_class, rms_norm_config_create(1e-6f), 5, 4, 2,
                           KILN_ACTIVATION_LINEAR, KILN_LOSS_MEAN_SQUARED_ERROR);
  assert_int_equal(kiln_model_trainable_weight_count(m), 5); /* 2 Dense x 2 + gamma */
  int found = -1;
  kiln_weight_info wi;
  for (int i = 0; i < 5; i++) {
    assert_int_equal(kiln_model_trainable_weight(m, i, &wi, NULL), KILN_OK);
    if (strcmp(wi.name, "rmsnormalization/gamma") == 0) found = i;
  }
  assert_int_equal(found, 2); /* in layer order: dense kernel, bias, then gamma */
  kiln_io xi = {1, {NULL}, {&x}}, yi = {1, {NULL}, {&y}};
  double loss;
  assert_int_equal(kiln_model_compute_gradients(m, &xi, &yi, 1, &loss, NULL, NULL, NULL), KILN_OK);
  assert_int_equal(kiln_model_trainable_weight(m, found, &wi, NULL), KILN_OK);
  double gsum = 0;
  for (int64_t j = 0; j < wi.size; j++) gsum += fabs(wi.grad[j]);
  assert_true(gsum > 0);
  float before = wi.value[0];
  assert_int_equal(kiln_model_apply_gradients(m, NULL), KILN_OK);
  assert_true(wi.value[0] != before);

  /* from_layers: the input to the custom layer's output, a new head on it. */
  kiln_node in, norm;
  assert_int_equal(kiln_model_find_layer(m, "x", &in, NULL), KILN_OK);
  assert_int_equal(kiln_model_find_layer(m, "rmsnormalization", &norm, NULL), KILN_OK);
  kiln_model *f;
  kiln_error err = {0};
  if (kiln_model_from_layers(m, &in, 1, &norm, 1, &f, &err)) fail_msg("%s", err.message);
  kiln_node fn;
  assert_int_equal(kiln_model_find_layer(f, "rmsnormalization", &fn, NULL), KILN_OK);
  kiln_weight_info fw;
  assert_int_equal(kiln_model_weight(f, fn, 0, &fw, NULL), KILN_OK);
  assert_ptr_equal(fw.value, wi.value);
  assert_ptr_equal(kiln_model_layer_class(f, fn), &rms_norm_class);
  kiln_node head;
  assert_int_equal(kiln_model_dense(f, fn, 2, NULL, &head, NULL), KILN_OK);
  assert_int_equal(kiln_model_set_output(f, head, NULL), KILN_OK);
  kiln_optimizer o;
  kiln_optimizer_init(&o, KILN_OPTIMIZER_SGD);
  o.learning_rate = 0.1f;
  assert_int_equal(kiln_model_compile(f, &o, KILN_LOSS_MEAN_SQUARED_ERROR, NULL, 0, NULL), KILN_OK);
  before = wi.value[1];
  assert_int_equal(kiln_model_fit(f, &x, &y, NULL, NULL, NULL), KILN_OK);
  assert_true(wi.value[1] != before); /* training f moved m's gamma */
  kiln_model_free(m); /* the source first: f keeps the layer */
  kiln_matrix p;
  assert_int_equal(kiln_model_predict(f, &x, 16, &p, NULL), KILN_OK);
  kiln_matrix_free(&p);
  kiln_model_free(f);
  kiln_matrix_free(&x);
  kiln_matrix_free(&y);
}

/* EarlyStopping(restore_best_weights) puts back a custom layer's weights too. */
typedef struct gamma_log {
  kiln_node node;
  float at[8][4];
} gamma_log;
static void log_gamma(void *ctx, kiln_model *m, int epoch, const kiln_logs *logs) {
  gamma_log *g = ctx;
  kiln_weight_info wi;
  assert_int_equal(kiln_model_weight(m, g->node, 0, &wi, NULL), KILN_OK);
  memcpy(g->at[epoch], wi.value, 4 * sizeof(float));
}
static int script_epoch;
static const double script[] = {3, 1, 2, 2, 2, 2};
static void script_reset(kiln_metric *self) { script_epoch++; }
static void script_update(kiln_metric *self, const float *yt, int64_t tc, const float *yp,
                          int64_t pc, int64_t rows) {}
static double script_result(const kiln_metric *self) { return script[script_epoch - 1]; }

static void test_early_stopping_restores_custom_weights(void **state) {
  kiln_rng r;
  kiln_rng_seed(&r, 8, 9);
  kiln_matrix x, y;
  fill(&x, 32, 5, &r);
  targets(&y, 32, 2, KILN_LOSS_MEAN_SQUARED_ERROR, &r);
  kiln_model *m = sandwich(&rms_norm_class, rms_norm_config_create(1e-6f), 5, 4, 2,
                           KILN_ACTIVATION_LINEAR, KILN_LOSS_MEAN_SQUARED_ERROR);
  kiln_metric metric = {"score", NULL, script_reset, script_update, script_result, NULL};
  assert_int_equal(kiln_model_add_metric(m, &metric, NULL), KILN_OK);
  script_epoch = 0;
  gamma_log g;
  assert_int_equal(kiln_model_find_layer(m, "rmsnormalization", &g.node, NULL), KILN_OK);
  kiln_early_stopping_config c;
  kiln_early_stopping_config_init(&c);
  c.monitor = "score";
  c.patience = 1;
  c.restore_best_weights = 1;
  kiln_callback cbs[2] = {{.ctx = &g, .on_epoch_end = log_gamma}};
  assert_int_equal(kiln_early_stopping_create(&c, &cbs[1], NULL), KILN_OK);
  kiln_fit_options opt;
  kiln_fit_options_init(&opt);
  opt.epochs = 6;
  opt.batch_size = 8;
  opt.callbacks = cbs;
  opt.n_callbacks = 2;
  kiln_history h = {0};
  assert_int_equal(kiln_model_fit(m, &x, &y, &opt, &h, NULL), KILN_OK);
  assert_int_equal(h.epochs, 3); /* best at epoch 1, stopped one epoch later */
  kiln_weight_info wi;
  assert_int_equal(kiln_model_weight(m, g.node, 0, &wi, NULL), KILN_OK);
  assert_memory_not_equal(g.at[1], g.at[2], sizeof g.at[1]);
  assert_memory_equal(wi.value, g.at[1], sizeof g.at[1]);
  kiln_history_free(&h);
  kiln_callback_free(&cbs[1]);
  kiln_model_free(m);
  kiln_matrix_free(&x);
  kiln_matrix_free(&y);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_gradients_affine),
      cmocka_unit_test(test_gradients_rms_norm),
      cmocka_unit_test(test_training_lowers_loss),
      cmocka_unit_test(test_summary_and_counts),
      cmocka_unit_test(test_bad_declarations),
      cmocka_unit_test(test_sparse_input_refused),
      cmocka_unit_test(test_save_load),
      cmocka_unit_test(test_resume_state),
      cmocka_unit_test(test_trainable_weights_and_sharing),
      cmocka_unit_test(test_early_stopping_restores_custom_weights),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

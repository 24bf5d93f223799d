/* Exporting a model with a custom layer (kiln_layer_class): a class with a lower hook
 * (examples/rms_norm.h) becomes standard ONNX nodes that kiln's runtime runs as the
 * trainer predicts; a class without one is refused with KILN_E_UNSUPPORTED naming the
 * layer and its class (ONNX has no form for arbitrary C code), and no file is left behind;
 * a hook that fails or forgets the layer's output is reported with the layer's name. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "../../examples/rms_norm.h"
#include "kiln/export.h"
#include "kiln/infer.h"
#include <math.h>

static kiln_model *norm_model(const kiln_layer_class *cls) {
  kiln_model *m;
  kiln_node x;
  assert_int_equal(kiln_model_create(1, &m, NULL), KILN_OK);
  assert_int_equal(kiln_model_input(m, "x", 6, &x, NULL), KILN_OK);
  assert_int_equal(kiln_model_dense(m, x, 4, NULL, &x, NULL), KILN_OK);
  assert_int_equal(
      kiln_model_custom(m, x, cls, rms_norm_config_create(1e-6f), "norm", &x, NULL),
      KILN_OK);
  assert_int_equal(kiln_model_dense(m, x, 1, NULL, &x, NULL), KILN_OK);
  kiln_optimizer o;
  kiln_optimizer_init(&o, KILN_OPTIMIZER_SGD);
  assert_int_equal(kiln_model_compile(m, &o, KILN_LOSS_MEAN_SQUARED_ERROR, NULL, 0, NULL), KILN_OK);
  return m;
}

static void test_custom_layer_export_refused(void **state) {
  (void)state;
  kiln_layer_class no_lower = rms_norm_class;
  no_lower.lower = NULL;
  kiln_model *m = norm_model(&no_lower);
  kiln_export_options opt;
  kiln_export_options_init(&opt);
  kiln_error err = {0};
  kiln_ir_graph *g = NULL;
  assert_int_equal(kiln_model_lower(m, &opt, &g, &err), KILN_E_UNSUPPORTED);
  assert_non_null(strstr(err.message, "'norm'"));
  assert_non_null(strstr(err.message, "RMSNormalization"));
  assert_non_null(strstr(err.message, "lower hook"));
  assert_null(strstr(err.message, "kind "));
  assert_null(g);
  char path[] = "/tmp/kiln_custom_export_XXXXXX";
  int fd = mkstemp(path);
  assert_true(fd >= 0);
  close(fd);
  unlink(path);
  assert_int_equal(kiln_model_export(m, &opt, path, &err), KILN_E_UNSUPPORTED);
  assert_non_null(strstr(err.message, "norm"));
  assert_int_equal(access(path, F_OK), -1);
  kiln_model_free(m);
}

/* The lowered graph (opset 13: ReduceMean's axes an attribute; 17 the same) runs in
 * kiln's runtime as the trainer predicts, within 1e-5, on rows of different scales. */
static void test_custom_layer_lowered_runs(void **state) {
  (void)state;
  kiln_model *m = norm_model(&rms_norm_class);
  /* a trained-looking gamma, not all ones */
  kiln_weight_info wi;
  assert_int_equal(kiln_model_weight(m, 2, 0, &wi, NULL), KILN_OK);
  for (int j = 0; j < wi.size; j++) wi.value[j] = 0.5f + 0.25f * (float)j;
  enum { ROWS = 7 };
  float xs[ROWS * 6];
  for (int i = 0; i < ROWS * 6; i++) xs[i] = (float)((i * 37) % 11 - 5) * (i < 12 ? 10.0f : 0.1f);
  kiln_matrix x = {.rows = ROWS, .cols = 6, .values = xs}, want = {0};
  kiln_error err = {0};
  assert_int_equal(kiln_model_predict(m, &x, 32, &want, &err), KILN_OK);
  int opsets[2] = {13, 17};
  for (int k = 0; k < 2; k++) {
    kiln_export_options opt;
    kiln_export_options_init(&opt);
    opt.opset = opsets[k];
    kiln_ir_graph *g = NULL;
    if (kiln_model_lower(m, &opt, &g, &err)) fail_msg("lower: %s", err.message);
    int reduce = 0, sqrt_ = 0, gamma = 0;
    for (int i = 0; i < g->n_nodes; i++) {
      reduce += strcmp(g->nodes[i].op_type, "ReduceMean") == 0;
      sqrt_ += strcmp(g->nodes[i].op_type, "Sqrt") == 0;
      assert_non_null(g->nodes[i].name);
    }
    for (int i = 0; i < g->n_initializers; i++)
      gamma += strcmp(g->initializers[i].name, "norm/gamma") == 0;
    assert_int_equal(reduce, 1);
    assert_int_equal(sqrt_, 1);
    assert_int_equal(gamma, 1);
    kiln_session *s = NULL;
    if (kiln_session_create(g, NULL, &s, &err)) fail_msg("session: %s", err.message);
    kiln_tensor_view in = {0}, out;
    in.dtype = KILN_DTYPE_FLOAT;
    in.rank = 2;
    in.dims[0] = ROWS;
    in.dims[1] = 6;
    in.data = xs;
    if (kiln_session_run(s, &in, 1, &out, 1, &err)) fail_msg("run: %s", err.message);
    const float *got = out.data;
    for (int i = 0; i < ROWS; i++)
      if (fabsf(got[i] - want.values[i]) > 1e-5f)
        fail_msg("row %d: runtime %.8g, predict %.8g", i, got[i], want.values[i]);
    kiln_session_free(s);
    kiln_ir_free(g);
  }
  kiln_matrix_free(&want);
  kiln_model_free(m);
}

/* Hooks that fail, forget the output or write a name the graph has. */
static kiln_status hook_fails(void *ctx, kiln_layer_lowering *lw, const float *const *w,
                              int64_t in, int64_t out, const char *x, const char *y,
                              kiln_error *err) {
  (void)ctx, (void)lw, (void)w, (void)in, (void)out, (void)x, (void)y;
  return kiln_error_set(err, KILN_E_UNSUPPORTED, "epsilon too small for float");
}
static kiln_status hook_forgets(void *ctx, kiln_layer_lowering *lw, const float *const *w,
                                int64_t in, int64_t out, const char *x, const char *y,
                                kiln_error *err) {
  (void)ctx, (void)w, (void)in, (void)out, (void)y;
  char t[320];
  kiln_status s = kiln_lowering_fresh_name(lw, "t", t, sizeof t, err);
  const char *ins[1] = {x}, *outs[1] = {t};
  return s ? s : kiln_lowering_add_node(lw, "Identity", ins, 1, outs, 1, NULL, err);
}
static kiln_status hook_clobbers(void *ctx, kiln_layer_lowering *lw, const float *const *w,
                                 int64_t in, int64_t out, const char *x, const char *y,
                                 kiln_error *err) {
  (void)ctx, (void)w, (void)in, (void)out, (void)y;
  const char *ins[1] = {x}, *outs[1] = {"dense"};
  return kiln_lowering_add_node(lw, "Identity", ins, 1, outs, 1, NULL, err);
}

static void test_custom_layer_hook_errors(void **state) {
  (void)state;
  kiln_status (*hooks[3])(void *, kiln_layer_lowering *, const float *const *, int64_t, int64_t,
                          const char *, const char *, kiln_error *) = {hook_fails, hook_forgets,
                                                                       hook_clobbers};
  const char *words[3] = {"epsilon too small", "none writes", "already a value"};
  for (int k = 0; k < 3; k++) {
    kiln_layer_class cls = rms_norm_class;
    cls.lower = hooks[k];
    kiln_model *m = norm_model(&cls);
    kiln_error err = {0};
    kiln_ir_graph *g = NULL;
    assert_int_not_equal(kiln_model_lower(m, NULL, &g, &err), KILN_OK);
    assert_null(g);
    if (!strstr(err.message, "'norm'") || !strstr(err.message, "RMSNormalization") ||
        !strstr(err.message, words[k]))
      fail_msg("hook %d: message \"%s\"", k, err.message);
    kiln_model_free(m);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {cmocka_unit_test(test_custom_layer_export_refused),
                                     cmocka_unit_test(test_custom_layer_lowered_runs),
                                     cmocka_unit_test(test_custom_layer_hook_errors)};
  return cmocka_run_group_tests(tests, NULL, NULL);
}

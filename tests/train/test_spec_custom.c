/* Custom layer classes in JSON specs (kiln_layer_registry): a registered class is built
 * from "type" or "class_name" with its "config", in Sequential and functional specs, and
 * exports through its lower hook; unknown classes, bad configs and bad registrations give
 * errors naming the layer index, the class and the registered ones. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "test_common.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "../../examples/rms_norm.h"
#include "kiln/export.h"

static kiln_layer_registry *registry(void) {
  kiln_layer_registry *r = NULL;
  OK(kiln_layer_registry_create(&r, E));
  OK(kiln_layer_registry_add(r, "RMSNorm", &rms_norm_class, rms_norm_make_ctx, NULL, E));
  return r;
}

/* Parses json with r, builds it and finds its layer "norm". */
static kiln_model *build_with_norm(const kiln_layer_registry *r, const char *json,
                                   kiln_node *norm) {
  kiln_spec *spec = NULL;
  kiln_model *m = NULL;
  OK(kiln_spec_parse_custom(json, "spec.json", r, &spec, E));
  OK(kiln_spec_build(spec, 0, KILN_SEED_FROM_SPEC, &m, E));
  kiln_spec_free(spec);
  OK(kiln_model_find_layer(m, "norm", norm, E));
  return m;
}

static const char *SEQ =
    "{\"seed\": 2, \"layers\": [{\"type\": \"Input\", \"shape\": [6]},"
    " {\"type\": \"Dense\", \"units\": 4, \"activation\": \"relu\"},"
    " {\"class_name\": \"RMSNorm\", \"name\": \"norm\", \"config\": {\"epsilon\": 1e-5}},"
    " {\"type\": \"Dense\", \"units\": 1, \"activation\": \"sigmoid\"}],"
    " \"compile\": {\"optimizer\": \"adam\", \"loss\": \"binary_crossentropy\"}}";

static void test_sequential_spec_builds_trains_exports(void **state) {
  (void)state;
  kiln_layer_registry *r = registry();
  kiln_node norm;
  kiln_model *m = build_with_norm(r, SEQ, &norm);
  const kiln_layer_class *cls = kiln_model_layer_class(m, norm);
  assert_ptr_equal(cls, &rms_norm_class);
  const rms_norm_config *cfg = kiln_model_layer_ctx(m, norm);
  assert_non_null(cfg);
  assert_true(fabsf(cfg->epsilon - 1e-5f) < 1e-12f);
  assert_int_equal(kiln_model_param_count(m), 6 * 4 + 4 + 4 + 4 + 1);
  float xs[8 * 6], ys[8];
  for (int i = 0; i < 8 * 6; i++) xs[i] = (float)((i * 7) % 5) - 2.0f;
  for (int i = 0; i < 8; i++) ys[i] = (float)(i % 2);
  kiln_matrix x = {.rows = 8, .cols = 6, .values = xs}, y = {.rows = 8, .cols = 1, .values = ys};
  kiln_fit_options fo;
  kiln_fit_options_init(&fo);
  fo.epochs = 2;
  OK(kiln_model_fit(m, &x, &y, &fo, NULL, E));
  kiln_ir_graph *g = NULL;
  OK(kiln_model_lower(m, NULL, &g, E));
  int reduce = 0;
  for (int i = 0; i < g->n_nodes; i++) reduce += strcmp(g->nodes[i].op_type, "ReduceMean") == 0;
  assert_int_equal(reduce, 1);
  kiln_ir_free(g);
  kiln_model_free(m);
  kiln_layer_registry_free(r);
}

static void test_functional_spec(void **state) {
  (void)state;
  kiln_layer_registry *r = registry();
  const char *json =
      "{\"inputs\": [{\"name\": \"a\", \"shape\": [3]}, {\"name\": \"b\", \"shape\": [2]}],"
      " \"layers\": [{\"type\": \"Concatenate\", \"name\": \"ab\", \"inputs\": [\"a\", \"b\"]},"
      " {\"type\": \"RMSNorm\", \"name\": \"norm\", \"inputs\": \"ab\"},"
      " {\"type\": \"Dense\", \"name\": \"out\", \"units\": 1, \"inputs\": \"norm\"}],"
      " \"outputs\": [\"out\"], \"compile\": {\"loss\": \"mse\"}}";
  kiln_node norm;
  kiln_model *m = build_with_norm(r, json, &norm);
  const rms_norm_config *cfg = kiln_model_layer_ctx(m, norm);
  assert_true(cfg->epsilon == 1e-6f); /* the default */
  kiln_layer_info li;
  OK(kiln_model_layer(m, norm, &li, E));
  assert_int_equal(li.in_features, 5);
  kiln_model_free(m);
  kiln_layer_registry_free(r);
}

static void expect_parse_error(const kiln_layer_registry *r, const char *json, kiln_status st,
                               const char *w1, const char *w2, const char *w3) {
  kiln_spec *spec = NULL;
  kiln_error err = {0};
  kiln_status got = kiln_spec_parse_custom(json, "spec.json", r, &spec, &err);
  if (got != st) fail_msg("parse returned %d (%s), expected %d", (int)got, err.message, (int)st);
  assert_null(spec);
  const char *w[3] = {w1, w2, w3};
  for (int i = 0; i < 3; i++)
    if (w[i] && !strstr(err.message, w[i])) fail_msg("\"%s\" lacks \"%s\"", err.message, w[i]);
}

static void expect_build_error(const kiln_layer_registry *r, const char *json, const char *w1,
                               const char *w2) {
  kiln_spec *spec = NULL;
  kiln_model *m = NULL;
  kiln_error err = {0};
  OK(kiln_spec_parse_custom(json, "spec.json", r, &spec, E));
  assert_int_not_equal(kiln_spec_build(spec, 0, KILN_SEED_FROM_SPEC, &m, &err), KILN_OK);
  assert_null(m);
  if (!strstr(err.message, w1) || !strstr(err.message, w2))
    fail_msg("\"%s\" lacks \"%s\" or \"%s\"", err.message, w1, w2);
  kiln_spec_free(spec);
}

static void test_errors(void **state) {
  (void)state;
  kiln_layer_registry *r = registry();
  static const char *unknown =
      "{\"layers\": [{\"type\": \"Input\", \"shape\": [4]}, {\"type\": \"Dense\", \"units\": 2},"
      " {\"class_name\": \"LayerScale\"}], \"compile\": {\"loss\": \"mse\"}}";
  expect_parse_error(r, unknown, KILN_E_INVALID, "layers[2]", "\"LayerScale\"",
                     "registered custom class: RMSNorm");
  /* without a registry the message says how to give one */
  expect_parse_error(NULL, unknown, KILN_E_INVALID, "layers[2]", "none",
                     "kiln_spec_parse_custom");
  expect_parse_error(r,
                     "{\"layers\": [{\"type\": \"Dense\", \"class_name\": \"Dense\", \"units\": 2}],"
                     " \"compile\": {\"loss\": \"mse\"}}",
                     KILN_E_FORMAT, "layers[0]", "not both", NULL);
  expect_parse_error(r,
                     "{\"layers\": [{\"type\": \"Dense\", \"units\": 2}, {\"type\": \"RMSNorm\","
                     " \"config\": [1]}], \"compile\": {\"loss\": \"mse\"}}",
                     KILN_E_FORMAT, "layers[1].config", "an object", NULL);
  expect_parse_error(r,
                     "{\"layers\": [{\"type\": \"Dense\", \"units\": 2}, {\"type\": \"RMSNorm\","
                     " \"units\": 3}], \"compile\": {\"loss\": \"mse\"}}",
                     KILN_E_FORMAT, "layers[1].units", "unknown key", NULL);
  /* the class's make_ctx reads the config: errors come back with the layer's place */
  expect_build_error(r,
                     "{\"layers\": [{\"type\": \"Input\", \"shape\": [4]}, {\"type\": \"Dense\", "
                     "\"units\": 2}, {\"type\": \"RMSNorm\", \"config\": {\"epsilon\": \"x\"}}],"
                     " \"compile\": {\"loss\": \"mse\"}}",
                     "spec.json: layers[2]", "config.epsilon: expected a finite number");
  expect_build_error(r,
                     "{\"layers\": [{\"type\": \"Input\", \"shape\": [4]}, {\"type\": \"Dense\", "
                     "\"units\": 2}, {\"type\": \"RMSNorm\", \"config\": {\"eps\": 1}}],"
                     " \"compile\": {\"loss\": \"mse\"}}",
                     "spec.json: layers[2]", "config.eps: unknown key (expected one of epsilon)");
  /* registrations */
  kiln_error err = {0};
  assert_int_equal(kiln_layer_registry_add(r, "RMSNorm", &rms_norm_class, NULL, NULL, &err),
                   KILN_E_INVALID);
  assert_non_null(strstr(err.message, "registered already"));
  assert_int_equal(kiln_layer_registry_add(r, "Dense", &rms_norm_class, NULL, NULL, &err),
                   KILN_E_INVALID);
  assert_non_null(strstr(err.message, "built-in"));
  kiln_layer_class no_forward = rms_norm_class;
  no_forward.forward = NULL;
  assert_int_equal(kiln_layer_registry_add(r, "Broken", &no_forward, NULL, NULL, &err),
                   KILN_E_INVALID);
  kiln_layer_registry_free(r);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_sequential_spec_builds_trains_exports),
      cmocka_unit_test(test_functional_spec),
      cmocka_unit_test(test_errors),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

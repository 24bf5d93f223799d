/* JSON model specs: valid specs build the model they describe; every kind of bad
 * spec fails with the right status and a message naming the file and the key path.
 * Test specs are written with single quotes, turned into double quotes here. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kiln/train.h"
#include "model_internal.h" /* to read back the compiled optimizer, loss and metrics */

/* ' -> " so that specs read as JSON in the source. Caller frees. */
static char *dq(const char *s) {
  char *out = strdup(s);
  assert_non_null(out);
  for (char *p = out; *p; p++)
    if (*p == '\'') *p = '"';
  return out;
}

static kiln_spec *parse_ok(const char *single_quoted) {
  char *json = dq(single_quoted);
  kiln_spec *s = NULL;
  kiln_error err = {0};
  kiln_status st = kiln_spec_parse(json, "spec.json", &s, &err);
  if (st) print_error("unexpected failure: %s\nspec: %s\n", err.message, json);
  assert_int_equal(st, KILN_OK);
  assert_non_null(s);
  free(json);
  return s;
}

static kiln_model *build_ok(const kiln_spec *s, int64_t features, uint64_t seed) {
  kiln_model *m = NULL;
  kiln_error err = {0};
  kiln_status st = kiln_spec_build(s, features, seed, &m, &err);
  if (st) print_error("unexpected build failure: %s\n", err.message);
  assert_int_equal(st, KILN_OK);
  assert_non_null(m);
  return m;
}

static kiln_layer_info layer(const kiln_model *m, int i) {
  kiln_layer_info info;
  assert_int_equal(kiln_model_layer(m, i, &info, NULL), KILN_OK);
  return info;
}

/* --- valid specs ----------------------------------------------------------- */

static void test_header_example(void **state) {
  (void)state;
  kiln_spec *s = parse_ok(
      "{'name': 'imdb', 'seed': 1,"
      " 'layers': [{'type': 'Input', 'shape': [10000]},"
      "            {'type': 'Dense', 'units': 16, 'activation': 'relu',"
      "             'kernel_regularizer': {'l2': 0.002}},"
      "            {'type': 'Dropout', 'rate': 0.5},"
      "            {'type': 'Dense', 'units': 1, 'activation': 'sigmoid'}],"
      " 'compile': {'optimizer': 'adam', 'learning_rate': 0.001,"
      "             'loss': 'binary_crossentropy', 'metrics': ['accuracy']},"
      " 'fit': {'epochs': 4, 'batch_size': 512, 'validation_split': 0.0}}");
  kiln_model *m = build_ok(s, 0, KILN_SEED_FROM_SPEC);
  assert_int_equal(kiln_model_layer_count(m), 4);
  kiln_layer_info l = layer(m, 0);
  assert_int_equal(l.kind, KILN_LAYER_INPUT);
  assert_int_equal(l.out_features, 10000);
  l = layer(m, 1);
  assert_int_equal(l.kind, KILN_LAYER_DENSE);
  assert_string_equal(l.name, "dense");
  assert_int_equal(l.in_features, 10000);
  assert_int_equal(l.out_features, 16);
  assert_int_equal(l.activation, KILN_ACTIVATION_RELU);
  assert_float_equal(l.regularizer.l2, 0.002, 1e-9);
  assert_float_equal(l.regularizer.l1, 0.0, 0);
  l = layer(m, 2);
  assert_int_equal(l.kind, KILN_LAYER_DROPOUT);
  assert_float_equal(l.rate, 0.5, 1e-9);
  l = layer(m, 3);
  assert_string_equal(l.name, "dense_1");
  assert_int_equal(l.out_features, 1);
  assert_int_equal(l.activation, KILN_ACTIVATION_SIGMOID);
  assert_int_equal(kiln_model_param_count(m), 10000 * 16 + 16 + 16 + 1);

  assert_int_equal(m->loss, KILN_LOSS_BINARY_CROSSENTROPY);
  assert_int_equal(m->opt.kind, KILN_OPTIMIZER_ADAM);
  assert_float_equal(m->opt.learning_rate, 0.001, 1e-9);
  assert_int_equal(m->n_metric_names, 1);
  assert_string_equal(m->metric_names[0], "accuracy");
  assert_int_equal(m->seed, 1);

  kiln_fit_options fo;
  kiln_spec_fit_options(s, &fo);
  assert_int_equal(fo.epochs, 4);
  assert_int_equal(fo.batch_size, 512);
  assert_float_equal(fo.validation_split, 0.0, 0);
  assert_int_equal(fo.shuffle, 1); /* not in the spec: kiln_fit_options_init's default */
  kiln_model_free(m);
  kiln_spec_free(s);
}

static void test_fit_settings_and_defaults(void **state) {
  (void)state;
  const char *layers = "'layers': [{'type': 'Input', 'shape': [3]}, {'type': 'Dense', 'units': 2}]";
  char buf[512];
  snprintf(buf, sizeof buf,
           "{%s, 'compile': {'loss': 'mse'},"
           " 'fit': {'epochs': 7, 'batch_size': 3, 'validation_split': 0.25, 'shuffle': false,"
           " 'verbose': 2}}", layers);
  kiln_spec *s = parse_ok(buf);
  kiln_fit_options fo;
  kiln_spec_fit_options(s, &fo);
  assert_int_equal(fo.epochs, 7);
  assert_int_equal(fo.batch_size, 3);
  assert_float_equal(fo.validation_split, 0.25, 1e-12);
  assert_int_equal(fo.shuffle, 0);
  assert_int_equal(fo.verbose, 2);
  /* No optimizer: Keras' compile default, rmsprop with its defaults. */
  kiln_model *m = build_ok(s, 0, KILN_SEED_FROM_SPEC);
  assert_int_equal(m->opt.kind, KILN_OPTIMIZER_RMSPROP);
  assert_float_equal(m->opt.learning_rate, 0.001, 1e-9);
  assert_float_equal(m->opt.rho, 0.9, 1e-7);
  assert_int_equal(m->loss, KILN_LOSS_MEAN_SQUARED_ERROR);
  assert_int_equal(m->n_metric_names, 0);
  kiln_model_free(m);
  kiln_spec_free(s);

  snprintf(buf, sizeof buf, "{%s, 'compile': {'loss': 'mse'}, 'fit': {'verbose': 'auto'}}", layers);
  s = parse_ok(buf);
  kiln_fit_options def;
  kiln_fit_options_init(&def);
  kiln_spec_fit_options(s, &fo);
  assert_int_equal(fo.epochs, def.epochs);
  assert_int_equal(fo.batch_size, def.batch_size);
  assert_int_equal(fo.shuffle, def.shuffle);
  assert_int_equal(fo.verbose, 1);
  kiln_spec_free(s);
}

static void test_initializers(void **state) {
  (void)state;
  kiln_spec *s = parse_ok(
      "{'layers': [{'type': 'Input', 'shape': [3]},"
      " {'type': 'Dense', 'units': 2, 'kernel_initializer': 'zeros'},"
      " {'type': 'Dense', 'units': 2, 'kernel_initializer': {'class_name': 'Constant',"
      "   'config': {'value': 0.25}}},"
      " {'type': 'Dense', 'units': 2, 'kernel_initializer': 'constant'},"
      " {'type': 'Dense', 'units': 2, 'kernel_initializer': {'class_name': 'HeNormal',"
      "   'config': {'seed': null}, 'module': 'keras.initializers'}},"
      " {'type': 'Dense', 'units': 2, 'kernel_initializer': {'class_name': 'GlorotUniform'}},"
      " {'type': 'Dense', 'units': 2, 'kernel_initializer': 'he_normal'}],"
      " 'compile': {'loss': 'mse'}}");
  kiln_model *m = build_ok(s, 0, 5);
  kiln_layer_info l = layer(m, 1);
  for (int i = 0; i < 6; i++) assert_float_equal(l.kernel[i], 0.0, 0);
  l = layer(m, 2);
  for (int i = 0; i < 4; i++) assert_float_equal(l.kernel[i], 0.25, 0);
  l = layer(m, 3);
  for (int i = 0; i < 4; i++) assert_float_equal(l.kernel[i], 0.0, 0);
  for (int k = 4; k <= 6; k++) {
    l = layer(m, k);
    int nonzero = 0;
    for (int i = 0; i < 4; i++) nonzero += l.kernel[i] != 0.0f;
    assert_int_equal(nonzero, 4);
  }
  /* Glorot uniform limit for 2 -> 2: sqrt(6 / 4). */
  l = layer(m, 5);
  for (int i = 0; i < 4; i++) assert_true(fabsf(l.kernel[i]) <= sqrtf(1.5f));
  kiln_model_free(m);
  kiln_spec_free(s);
}

static void test_regularizers(void **state) {
  (void)state;
  kiln_spec *s = parse_ok(
      "{'layers': [{'type': 'Input', 'shape': [3]},"
      " {'type': 'Dense', 'units': 2, 'kernel_regularizer': {'l1': 0.1}},"
      " {'type': 'Dense', 'units': 2, 'kernel_regularizer': {'l1': 0.1, 'l2': 0.2}},"
      " {'type': 'Dense', 'units': 2, 'kernel_regularizer': {'class_name': 'L2',"
      "   'config': {'l2': 0.002}}},"
      " {'type': 'Dense', 'units': 2, 'kernel_regularizer': {'class_name': 'L1L2',"
      "   'config': {'l1': 0.01, 'l2': 0.02}}},"
      " {'type': 'Dense', 'units': 2, 'kernel_regularizer': {'class_name': 'L1'}},"
      " {'type': 'Dense', 'units': 2, 'kernel_regularizer': 'l2'},"
      " {'type': 'Dense', 'units': 2, 'kernel_regularizer': null}],"
      " 'compile': {'loss': 'mse'}}");
  kiln_model *m = build_ok(s, 0, KILN_SEED_FROM_SPEC);
  static const float want[7][2] = {{0.1f, 0},     {0.1f, 0.2f}, {0, 0.002f}, {0.01f, 0.02f},
                                   {0.01f, 0},    {0, 0.01f},   {0, 0}};
  for (int i = 0; i < 7; i++) {
    kiln_layer_info l = layer(m, i + 1);
    assert_float_equal(l.regularizer.l1, want[i][0], 1e-9);
    assert_float_equal(l.regularizer.l2, want[i][1], 1e-9);
  }
  kiln_model_free(m);
  kiln_spec_free(s);
}

static void test_activations_and_names(void **state) {
  (void)state;
  kiln_spec *s = parse_ok(
      "{'layers': [{'type': 'Input', 'name': 'features', 'shape': [3]},"
      " {'type': 'Dense', 'name': 'hidden', 'units': 5, 'activation': 'tanh'},"
      " {'type': 'Dropout', 'name': 'drop', 'rate': 0.0},"
      " {'type': 'Dense', 'units': 4, 'activation': null},"
      " {'type': 'Dense', 'units': 3, 'activation': 'linear'},"
      " {'type': 'Dense', 'units': 3, 'activation': 'softmax'}],"
      " 'compile': {'loss': 'sparse_categorical_crossentropy', 'metrics': ['acc', 'top_2_accuracy']}}");
  kiln_model *m = build_ok(s, 3, KILN_SEED_FROM_SPEC);
  assert_string_equal(layer(m, 0).name, "features");
  assert_string_equal(layer(m, 1).name, "hidden");
  assert_int_equal(layer(m, 1).activation, KILN_ACTIVATION_TANH);
  assert_string_equal(layer(m, 2).name, "drop");
  assert_float_equal(layer(m, 2).rate, 0.0, 0);
  assert_int_equal(layer(m, 3).activation, KILN_ACTIVATION_LINEAR);
  assert_string_equal(layer(m, 3).name, "dense");
  assert_int_equal(layer(m, 4).activation, KILN_ACTIVATION_LINEAR);
  assert_int_equal(layer(m, 5).activation, KILN_ACTIVATION_SOFTMAX);
  assert_int_equal(kiln_model_output_features(m), 3);
  assert_int_equal(m->loss, KILN_LOSS_SPARSE_CATEGORICAL_CROSSENTROPY);
  assert_int_equal(m->n_metric_names, 2);
  assert_string_equal(m->metric_names[0], "acc");
  assert_string_equal(m->metric_names[1], "top_2_accuracy");
  kiln_model_free(m);
  kiln_spec_free(s);
}

static void test_optimizers(void **state) {
  (void)state;
  static const struct {
    const char *compile;
    kiln_optimizer_kind kind;
    float lr, momentum;
    int nesterov;
    float rho, beta_1, beta_2, epsilon;
  } cases[] = {
      {"'optimizer': 'sgd'", KILN_OPTIMIZER_SGD, 0.01f, 0, 0, 0, 0, 0, 0},
      {"'optimizer': 'sgd', 'learning_rate': 0.1, 'momentum': 0.9, 'nesterov': true",
       KILN_OPTIMIZER_SGD, 0.1f, 0.9f, 1, 0, 0, 0, 0},
      {"'optimizer': {'class_name': 'SGD', 'config': {'learning_rate': 0.05, 'momentum': 0.5,"
       " 'nesterov': false, 'name': 'SGD', 'weight_decay': null, 'clipnorm': null,"
       " 'use_ema': false, 'ema_momentum': 0.99, 'jit_compile': true}}",
       KILN_OPTIMIZER_SGD, 0.05f, 0.5f, 0, 0, 0, 0, 0},
      {"'optimizer': 'rmsprop', 'learning_rate': 0.0001", KILN_OPTIMIZER_RMSPROP, 1e-4f, 0, 0,
       0.9f, 0, 0, 1e-7f},
      {"'optimizer': {'class_name': 'RMSprop', 'config': {'rho': 0.5, 'epsilon': 1e-6,"
       " 'centered': false}}",
       KILN_OPTIMIZER_RMSPROP, 1e-3f, 0, 0, 0.5f, 0, 0, 1e-6f},
      {"'optimizer': {'class_name': 'Adam', 'config': {'learning_rate': 0.002, 'beta_1': 0.8,"
       " 'beta_2': 0.99, 'amsgrad': false}}",
       KILN_OPTIMIZER_ADAM, 0.002f, 0, 0, 0, 0.8f, 0.99f, 1e-7f},
      /* compile's learning_rate wins over the optimizer's config */
      {"'optimizer': {'class_name': 'Adam', 'config': {'learning_rate': 0.002}},"
       " 'learning_rate': 0.03",
       KILN_OPTIMIZER_ADAM, 0.03f, 0, 0, 0, 0.9f, 0.999f, 1e-7f},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    char buf[1024];
    snprintf(buf, sizeof buf,
             "{'layers': [{'type': 'Input', 'shape': [2]}, {'type': 'Dense', 'units': 1}],"
             " 'compile': {%s, 'loss': 'mae'}}", cases[i].compile);
    kiln_spec *s = parse_ok(buf);
    kiln_model *m = build_ok(s, 0, KILN_SEED_FROM_SPEC);
    print_message("case %zu: %s\n", i, cases[i].compile);
    assert_int_equal(m->opt.kind, cases[i].kind);
    assert_float_equal(m->opt.learning_rate, cases[i].lr, 1e-9);
    assert_float_equal(kiln_model_learning_rate(m), cases[i].lr, 1e-9);
    if (cases[i].kind == KILN_OPTIMIZER_SGD) {
      assert_float_equal(m->opt.momentum, cases[i].momentum, 1e-7);
      assert_int_equal(m->opt.nesterov, cases[i].nesterov);
    }
    if (cases[i].kind == KILN_OPTIMIZER_RMSPROP) assert_float_equal(m->opt.rho, cases[i].rho, 1e-7);
    if (cases[i].kind == KILN_OPTIMIZER_ADAM) {
      assert_float_equal(m->opt.beta_1, cases[i].beta_1, 1e-7);
      assert_float_equal(m->opt.beta_2, cases[i].beta_2, 1e-7);
    }
    if (cases[i].kind != KILN_OPTIMIZER_SGD)
      assert_float_equal(m->opt.epsilon, cases[i].epsilon, 1e-12);
    assert_int_equal(m->loss, KILN_LOSS_MEAN_ABSOLUTE_ERROR);
    kiln_model_free(m);
    kiln_spec_free(s);
  }
}

/* One SGD step on x = 1, y = 1 from w = 0: the mse gradient is -2, so plain SGD gives
 * w = 2 lr and Nesterov momentum w = (1 + momentum) 2 lr: the settings reach training. */
static void test_settings_reach_training(void **state) {
  (void)state;
  static const struct {
    const char *optimizer;
    double w;
  } cases[] = {
      {"'sgd', 'learning_rate': 0.1", 0.2},
      {"'sgd', 'learning_rate': 0.1, 'momentum': 0.9, 'nesterov': true", 0.38},
  };
  float one = 1.0f;
  kiln_matrix x = {1, 1, &one, NULL, NULL, 1}, y = {1, 1, &one, NULL, NULL, 1};
  for (size_t i = 0; i < 2; i++) {
    char buf[512];
    snprintf(buf, sizeof buf,
             "{'layers': [{'type': 'Input', 'shape': [1]},"
             " {'type': 'Dense', 'units': 1, 'kernel_initializer': 'zeros'}],"
             " 'compile': {'optimizer': %s, 'loss': 'mse'},"
             " 'fit': {'epochs': 1, 'batch_size': 1, 'shuffle': false, 'verbose': 0}}",
             cases[i].optimizer);
    kiln_spec *s = parse_ok(buf);
    kiln_model *m = build_ok(s, 1, KILN_SEED_FROM_SPEC);
    kiln_fit_options fo;
    kiln_spec_fit_options(s, &fo);
    kiln_error err = {0};
    assert_int_equal(kiln_model_fit(m, &x, &y, &fo, NULL, &err), KILN_OK);
    assert_float_equal(layer(m, 1).kernel[0], cases[i].w, 1e-6);
    kiln_model_free(m);
    kiln_spec_free(s);
  }
}

static void test_input_width_and_seed(void **state) {
  (void)state;
  /* No shape: the width comes from the caller. */
  kiln_spec *s = parse_ok(
      "{'seed': 42, 'layers': [{'type': 'Input'}, {'type': 'Dense', 'units': 3}],"
      " 'compile': {'loss': 'mse'}}");
  kiln_model *a = build_ok(s, 7, KILN_SEED_FROM_SPEC);
  assert_int_equal(kiln_model_input_features(a), 7);
  assert_int_equal(layer(a, 1).in_features, 7);
  kiln_model *b = build_ok(s, 7, 42);
  kiln_model *c = build_ok(s, 7, 43);
  assert_memory_equal(layer(a, 1).kernel, layer(b, 1).kernel, 21 * sizeof(float));
  assert_true(memcmp(layer(a, 1).kernel, layer(c, 1).kernel, 21 * sizeof(float)) != 0);
  kiln_model *again = build_ok(s, 7, KILN_SEED_FROM_SPEC);
  assert_memory_equal(layer(a, 1).kernel, layer(again, 1).kernel, 21 * sizeof(float));
  kiln_model_free(a);
  kiln_model_free(b);
  kiln_model_free(c);
  kiln_model_free(again);

  kiln_error err = {0};
  kiln_model *m = (kiln_model *)&err; /* must be reset to NULL on failure */
  assert_int_equal(kiln_spec_build(s, 0, KILN_SEED_FROM_SPEC, &m, &err), KILN_E_INVALID);
  assert_null(m);
  assert_non_null(strstr(err.message, "spec.json: layers[0].shape: "));
  kiln_spec_free(s);

  /* No Input layer at all: one is added in front, as a Keras Sequential does. */
  s = parse_ok("{'layers': [{'type': 'Dense', 'units': 3}], 'compile': {'loss': 'mse'}}");
  m = build_ok(s, 5, KILN_SEED_FROM_SPEC);
  assert_int_equal(kiln_model_layer_count(m), 2);
  assert_int_equal(layer(m, 0).kind, KILN_LAYER_INPUT);
  assert_int_equal(kiln_model_input_features(m), 5);
  kiln_model_free(m);
  assert_int_equal(kiln_spec_build(s, 0, KILN_SEED_FROM_SPEC, &m, &err), KILN_E_INVALID);
  assert_non_null(strstr(err.message, "spec.json: layers: "));
  kiln_spec_free(s);

  /* A shape that disagrees with the data. */
  s = parse_ok("{'layers': [{'type': 'Input', 'shape': [4]}, {'type': 'Dense', 'units': 1}],"
               " 'compile': {'loss': 'mse'}}");
  m = build_ok(s, 4, KILN_SEED_FROM_SPEC);
  kiln_model_free(m);
  assert_int_equal(kiln_spec_build(s, 5, KILN_SEED_FROM_SPEC, &m, &err), KILN_E_SHAPE);
  assert_null(m);
  assert_non_null(strstr(err.message, "spec.json: layers[0].shape: "));
  assert_non_null(strstr(err.message, "4"));
  assert_non_null(strstr(err.message, "5"));
  assert_int_equal(kiln_spec_build(s, 4, KILN_SEED_FROM_SPEC, &m, NULL), KILN_OK);
  kiln_model_free(m);
  assert_int_equal(kiln_spec_build(s, -1, KILN_SEED_FROM_SPEC, &m, NULL), KILN_E_INVALID);
  kiln_spec_free(s);
}

static void test_build_errors_name_the_layer(void **state) {
  (void)state;
  /* An explicit name taken by an earlier automatic one is found when building. */
  kiln_spec *s = parse_ok("{'layers': [{'type': 'Input', 'shape': [2]},"
                          " {'type': 'Dense', 'units': 2}, {'type': 'Dense', 'name': 'dense', 'units': 1}],"
                          " 'compile': {'loss': 'mse'}}");
  kiln_model *m = NULL;
  kiln_error err = {0};
  assert_int_not_equal(kiln_spec_build(s, 0, KILN_SEED_FROM_SPEC, &m, &err), KILN_OK);
  assert_null(m);
  assert_non_null(strstr(err.message, "spec.json: layers[2]: "));
  kiln_spec_free(s);
}

/* --- bad specs --------------------------------------------------------------- */

#define INPUT "{'type': 'Input', 'shape': [4]}"
#define DENSE "{'type': 'Dense', 'units': 1, 'activation': 'sigmoid'}"
#define LAYERS_OK "[" INPUT ", {'type': 'Dense', 'units': 8, 'activation': 'relu'}, " DENSE "]"
#define COMPILE_OK "{'optimizer': 'adam', 'loss': 'binary_crossentropy', 'metrics': ['accuracy']}"

typedef struct bad_case {
  const char *raw;     /* the whole spec, or NULL to assemble it from the parts below */
  const char *top;     /* extra top-level members, e.g. "'seed': -1" */
  const char *layers;  /* NULL: LAYERS_OK */
  const char *compile; /* NULL: COMPILE_OK, "-": left out */
  const char *fit;     /* NULL: left out */
  kiln_status status;
  const char *expect;  /* a substring of the message */
} bad_case;

static const bad_case bad_cases[] = {
    /* JSON syntax */
    {"{'layers': [}", 0, 0, 0, 0, KILN_E_FORMAT, "spec.json: JSON syntax error at byte 12 (line 1, column 13)"},
    {"{'layers': []}\n x", 0, 0, 0, 0, KILN_E_FORMAT, "spec.json: JSON syntax error at byte 16 (line 2, column 2)"},
    {"", 0, 0, 0, 0, KILN_E_FORMAT, "spec.json: JSON syntax error at byte 0 (line 1, column 1): unexpected end of input"},
    {"{'name': 'x',\n 'seed': 1,\n", 0, 0, 0, 0, KILN_E_FORMAT, "unexpected end of input"},
    {"[1, 2]", 0, 0, 0, 0, KILN_E_FORMAT, "spec.json: expected a JSON object at the top level, got an array"},
    /* top level */
    {0, "'layer': []", 0, 0, 0, KILN_E_FORMAT, "spec.json: layer: unknown key (expected one of name, seed, inputs, layers, outputs, compile, fit)"},
    {0, "'seed': -1", 0, 0, 0, KILN_E_INVALID, "spec.json: seed: expected an integer in [0, 2^53], got -1"},
    {0, "'seed': 1.5", 0, 0, 0, KILN_E_INVALID, "spec.json: seed: "},
    {0, "'seed': '1'", 0, 0, 0, KILN_E_FORMAT, "spec.json: seed: expected an integer in [0, 2^53], got the string \"1\""},
    {0, "'name': 5", 0, 0, 0, KILN_E_FORMAT, "spec.json: name: expected a string, got the number 5"},
    {0, "'fit': {}, 'fit': {}", 0, 0, 0, KILN_E_FORMAT, "spec.json: fit: key given twice"},
    {"{'compile': {'loss': 'mse'}}", 0, 0, 0, 0, KILN_E_FORMAT, "spec.json: layers: missing"},
    {0, 0, 0, "-", 0, KILN_E_FORMAT, "spec.json: compile: missing"},
    /* layers */
    {0, 0, "{}", 0, 0, KILN_E_FORMAT, "spec.json: layers: expected an array of layer objects, got an object"},
    {0, 0, "[]", 0, 0, KILN_E_INVALID, "spec.json: layers: expected at least one layer"},
    {0, 0, "[" INPUT "]", 0, 0, KILN_E_INVALID, "spec.json: layers: expected at least one Dense layer"},
    {0, 0, "[" INPUT ", 3]", 0, 0, KILN_E_FORMAT, "spec.json: layers[1]: expected an object, got the number 3"},
    {0, 0, "[" INPUT ", {'units': 3}]", 0, 0, KILN_E_FORMAT, "spec.json: layers[1].type: missing"},
    {0, 0, "[" INPUT ", {'type': 7}]", 0, 0, KILN_E_FORMAT, "spec.json: layers[1].type: expected a string"},
    {0, 0, "[" INPUT ", {'type': 'Conv2D'}]", 0, 0, KILN_E_INVALID, "spec.json: layers[1].type: unknown layer type \"Conv2D\" of layers[1] (expected one of Input, Dense, Dropout, Concatenate, or a registered custom class: none; register it with kiln_layer_registry_add and parse with kiln_spec_parse_custom)"},
    {0, 0, "[" DENSE ", " INPUT "]", 0, 0, KILN_E_INVALID, "spec.json: layers[1].type: an Input can only be the first layer"},
    {0, 0, "[" INPUT ", {'type': 'Dense', 'unit': 3}]", 0, 0, KILN_E_FORMAT, "spec.json: layers[1].unit: unknown key (expected one of type, class_name, name, units, activation, kernel_initializer, kernel_regularizer)"},
    {0, 0, "[" INPUT ", {'type': 'Dense', 'units': 3, 'rate': 0.5}]", 0, 0, KILN_E_FORMAT, "spec.json: layers[1].rate: unknown key"},
    {0, 0, "[" INPUT ", {'type': 'Dense', 'units': 3, 'units': 4}]", 0, 0, KILN_E_FORMAT, "spec.json: layers[1].units: key given twice"},
    {0, 0, "[" INPUT ", {'type': 'Dense'}]", 0, 0, KILN_E_FORMAT, "spec.json: layers[1].units: missing"},
    {0, 0, "[" INPUT ", {'type': 'Dense', 'units': 0}]", 0, 0, KILN_E_INVALID, "spec.json: layers[1].units: expected a positive integer, got 0"},
    {0, 0, "[" INPUT ", {'type': 'Dense', 'units': -3}]", 0, 0, KILN_E_INVALID, "spec.json: layers[1].units: expected a positive integer, got -3"},
    {0, 0, "[" INPUT ", {'type': 'Dense', 'units': 2.5}]", 0, 0, KILN_E_INVALID, "spec.json: layers[1].units: expected a positive integer, got 2.5"},
    {0, 0, "[" INPUT ", {'type': 'Dense', 'units': 1e400}]", 0, 0, KILN_E_INVALID, "spec.json: layers[1].units: expected a positive integer"},
    {0, 0, "[" INPUT ", {'type': 'Dense', 'units': '16'}]", 0, 0, KILN_E_FORMAT, "spec.json: layers[1].units: expected a positive integer, got the string \"16\""},
    {0, 0, "[" INPUT ", {'type': 'Dense', 'units': 16, 'activation': 'relu'}, {'type': 'Dense', 'units': 1, 'activation': 'rellu'}]", 0, 0,
     KILN_E_INVALID, "spec.json: layers[2].activation: unknown activation \"rellu\" (expected one of linear, relu, sigmoid, softmax, tanh)"},
    {0, 0, "[" INPUT ", {'type': 'Dense', 'units': 1, 'activation': true}]", 0, 0, KILN_E_FORMAT, "spec.json: layers[1].activation: expected a string, got true"},
    {0, 0, "[" INPUT ", {'type': 'Dense', 'units': 1, 'kernel_initializer': 'glorot'}]", 0, 0, KILN_E_INVALID, "spec.json: layers[1].kernel_initializer: unknown initializer \"glorot\""},
    {0, 0, "[" INPUT ", {'type': 'Dense', 'units': 1, 'kernel_initializer': 3}]", 0, 0, KILN_E_FORMAT, "spec.json: layers[1].kernel_initializer: expected an initializer name"},
    {0, 0, "[" INPUT ", {'type': 'Dense', 'units': 1, 'kernel_initializer': {'class_name': 'Orthogonal'}}]", 0, 0, KILN_E_INVALID, "spec.json: layers[1].kernel_initializer.class_name: unknown initializer \"orthogonal\""},
    {0, 0, "[" INPUT ", {'type': 'Dense', 'units': 1, 'kernel_initializer': {'config': {}}}]", 0, 0, KILN_E_FORMAT, "spec.json: layers[1].kernel_initializer.class_name: missing"},
    {0, 0, "[" INPUT ", {'type': 'Dense', 'units': 1, 'kernel_initializer': {'class_name': 'Constant', 'config': {'valu': 1}}}]", 0, 0, KILN_E_FORMAT, "spec.json: layers[1].kernel_initializer.config.valu: unknown key (expected one of value)"},
    {0, 0, "[" INPUT ", {'type': 'Dense', 'units': 1, 'kernel_initializer': {'class_name': 'Constant', 'config': {'value': 'x'}}}]", 0, 0, KILN_E_FORMAT, "spec.json: layers[1].kernel_initializer.config.value: expected a finite number"},
    {0, 0, "[" INPUT ", {'type': 'Dense', 'units': 1, 'kernel_initializer': {'class_name': 'HeNormal', 'config': {'seed': 3}}}]", 0, 0, KILN_E_UNSUPPORTED, "spec.json: layers[1].kernel_initializer.config.seed: per-layer seeds are not supported"},
    {0, 0, "[" INPUT ", {'type': 'Dense', 'units': 1, 'kernel_initializer': {'class_name': 'Zeros', 'config': 1}}]", 0, 0, KILN_E_FORMAT, "spec.json: layers[1].kernel_initializer.config: expected an object"},
    {0, 0, "[" INPUT ", {'type': 'Dense', 'units': 1, 'kernel_regularizer': {'l3': 0.1}}]", 0, 0, KILN_E_FORMAT, "spec.json: layers[1].kernel_regularizer.l3: unknown key (expected one of l1, l2)"},
    {0, 0, "[" INPUT ", {'type': 'Dense', 'units': 1, 'kernel_regularizer': {'l2': -1}}]", 0, 0, KILN_E_INVALID, "spec.json: layers[1].kernel_regularizer.l2: expected a finite number >= 0, got -1"},
    {0, 0, "[" INPUT ", {'type': 'Dense', 'units': 1, 'kernel_regularizer': {'l2': null}}]", 0, 0, KILN_E_FORMAT, "spec.json: layers[1].kernel_regularizer.l2: expected a finite number >= 0, got null"},
    {0, 0, "[" INPUT ", {'type': 'Dense', 'units': 1, 'kernel_regularizer': {}}]", 0, 0, KILN_E_INVALID, "spec.json: layers[1].kernel_regularizer: expected \"l1\" and/or \"l2\""},
    {0, 0, "[" INPUT ", {'type': 'Dense', 'units': 1, 'kernel_regularizer': 'l3'}]", 0, 0, KILN_E_INVALID, "spec.json: layers[1].kernel_regularizer: unknown regularizer \"l3\""},
    {0, 0, "[" INPUT ", {'type': 'Dense', 'units': 1, 'kernel_regularizer': 0.1}]", 0, 0, KILN_E_FORMAT, "spec.json: layers[1].kernel_regularizer: expected an object"},
    {0, 0, "[" INPUT ", {'type': 'Dense', 'units': 1, 'kernel_regularizer': {'class_name': 'L2', 'config': {'l1': 0.1}}}]", 0, 0, KILN_E_FORMAT, "spec.json: layers[1].kernel_regularizer.config.l1: unknown key (expected one of l2)"},
    {0, 0, "[" INPUT ", {'type': 'Dense', 'units': 1, 'kernel_regularizer': {'class_name': 'L3'}}]", 0, 0, KILN_E_INVALID, "spec.json: layers[1].kernel_regularizer.class_name: unknown regularizer \"L3\""},
    {0, 0, "[" INPUT ", {'type': 'Dense', 'units': 1, 'kernel_regularizer': {'class_name': 'L2', 'extra': 1}}]", 0, 0, KILN_E_FORMAT, "spec.json: layers[1].kernel_regularizer.extra: unknown key"},
    {0, 0, "[" INPUT ", {'type': 'Dropout', 'rate': 1}, " DENSE "]", 0, 0, KILN_E_INVALID, "spec.json: layers[1].rate: expected a number in [0, 1), got 1"},
    {0, 0, "[" INPUT ", {'type': 'Dropout', 'rate': -0.1}, " DENSE "]", 0, 0, KILN_E_INVALID, "spec.json: layers[1].rate: expected a number in [0, 1), got -0.1"},
    {0, 0, "[" INPUT ", {'type': 'Dropout', 'rate': 0.999999999}, " DENSE "]", 0, 0, KILN_E_INVALID, "spec.json: layers[1].rate: expected a number in [0, 1)"},
    {0, 0, "[" INPUT ", {'type': 'Dropout'}, " DENSE "]", 0, 0, KILN_E_FORMAT, "spec.json: layers[1].rate: missing"},
    {0, 0, "[" INPUT ", {'type': 'Dropout', 'rate': '0.5'}, " DENSE "]", 0, 0, KILN_E_FORMAT, "spec.json: layers[1].rate: expected a number in [0, 1), got the string"},
    {0, 0, "[" INPUT ", {'type': 'Dropout', 'rate': 0.5, 'units': 3}, " DENSE "]", 0, 0, KILN_E_FORMAT, "spec.json: layers[1].units: unknown key (expected one of type, class_name, name, rate)"},
    {0, 0, "[{'type': 'Input', 'shape': [0]}, " DENSE "]", 0, 0, KILN_E_INVALID, "spec.json: layers[0].shape[0]: expected a positive integer, got 0"},
    {0, 0, "[{'type': 'Input', 'shape': [28, 28]}, " DENSE "]", 0, 0, KILN_E_UNSUPPORTED, "spec.json: layers[0].shape: expected one dimension"},
    {0, 0, "[{'type': 'Input', 'shape': 10}, " DENSE "]", 0, 0, KILN_E_FORMAT, "spec.json: layers[0].shape: expected an array such as [10000], got the number 10"},
    {0, 0, "[{'type': 'Input', 'units': 10}, " DENSE "]", 0, 0, KILN_E_FORMAT, "spec.json: layers[0].units: unknown key (expected one of type, class_name, name, shape)"},
    {0, 0, "[" INPUT ", {'type': 'Dense', 'units': 1, 'name': 'x'}, {'type': 'Dense', 'units': 1, 'name': 'x'}]", 0, 0, KILN_E_INVALID, "spec.json: layers[2].name: \"x\" is already the name of layers[1]"},
    {0, 0, "[" INPUT ", {'type': 'Dense', 'units': 1, 'name': ''}]", 0, 0, KILN_E_INVALID, "spec.json: layers[1].name: a layer name must have 1 to 63 characters"},
    {0, 0, "[" INPUT ", {'type': 'Dense', 'units': 1, 'name': 'a_name_that_is_longer_than_sixty_three_characters_which_is_too_long'}]", 0, 0, KILN_E_INVALID, "spec.json: layers[1].name: "},
    {0, 0, "[" INPUT ", {'type': 'Dense', 'units': 1, 'name': 3}]", 0, 0, KILN_E_FORMAT, "spec.json: layers[1].name: expected a string"},
    /* compile */
    {0, 0, 0, "[]", 0, KILN_E_FORMAT, "spec.json: compile: expected an object, got an array"},
    {0, 0, 0, "{'losss': 'mse', 'loss': 'mse'}", 0, KILN_E_FORMAT, "spec.json: compile.losss: unknown key (expected one of optimizer, learning_rate, momentum, nesterov, loss, metrics)"},
    {0, 0, 0, "{'optimizer': 'adam'}", 0, KILN_E_FORMAT, "spec.json: compile.loss: missing"},
    {0, 0, 0, "{'loss': 'crossentropy'}", 0, KILN_E_INVALID, "spec.json: compile.loss: "},
    {0, 0, 0, "{'loss': ['mse']}", 0, KILN_E_FORMAT, "spec.json: compile.loss: expected a string, got an array"},
    {0, 0, 0, "{'optimizer': 'adamw', 'loss': 'mse'}", 0, KILN_E_INVALID, "spec.json: compile.optimizer: "},
    {0, 0, 0, "{'optimizer': 1, 'loss': 'mse'}", 0, KILN_E_FORMAT, "spec.json: compile.optimizer: expected an optimizer name"},
    {0, 0, 0, "{'optimizer': {'class_name': 'Adagrad'}, 'loss': 'mse'}", 0, KILN_E_INVALID, "spec.json: compile.optimizer.class_name: "},
    {0, 0, 0, "{'optimizer': {'config': {}}, 'loss': 'mse'}", 0, KILN_E_FORMAT, "spec.json: compile.optimizer.class_name: missing"},
    {0, 0, 0, "{'optimizer': {'class_name': 'Adam', 'config': {'learning_rate': -1}}, 'loss': 'mse'}", 0, KILN_E_INVALID, "spec.json: compile.optimizer.config.learning_rate: expected a positive number, got -1"},
    {0, 0, 0, "{'optimizer': {'class_name': 'Adam', 'config': {'amsgrad': true}}, 'loss': 'mse'}", 0, KILN_E_UNSUPPORTED, "spec.json: compile.optimizer.config.amsgrad: not supported by kiln"},
    {0, 0, 0, "{'optimizer': {'class_name': 'Adam', 'config': {'foo': 1}}, 'loss': 'mse'}", 0, KILN_E_FORMAT, "spec.json: compile.optimizer.config.foo: unknown key"},
    {0, 0, 0, "{'optimizer': {'class_name': 'SGD', 'config': {'rho': 0.9}}, 'loss': 'mse'}", 0, KILN_E_INVALID, "spec.json: compile.optimizer.config.rho: rho is an rmsprop setting (the optimizer is sgd)"},
    {0, 0, 0, "{'optimizer': {'class_name': 'RMSprop', 'config': {'beta_1': 0.9}}, 'loss': 'mse'}", 0, KILN_E_INVALID, "spec.json: compile.optimizer.config.beta_1: beta_1 is an adam setting"},
    {0, 0, 0, "{'optimizer': 'sgd', 'epsilon': 1e-7, 'loss': 'mse'}", 0, KILN_E_FORMAT, "spec.json: compile.epsilon: unknown key"},
    {0, 0, 0, "{'optimizer': 'adam', 'momentum': 0.9, 'loss': 'mse'}", 0, KILN_E_INVALID, "spec.json: compile.momentum: momentum is an sgd setting (the optimizer is adam)"},
    {0, 0, 0, "{'optimizer': 'sgd', 'momentum': 1.0, 'loss': 'mse'}", 0, KILN_E_INVALID, "spec.json: compile.momentum: expected a number in [0, 1), got 1"},
    {0, 0, 0, "{'optimizer': 'sgd', 'nesterov': 'yes', 'loss': 'mse'}", 0, KILN_E_FORMAT, "spec.json: compile.nesterov: expected true or false, got the string \"yes\""},
    {0, 0, 0, "{'optimizer': 'rmsprop', 'nesterov': true, 'loss': 'mse'}", 0, KILN_E_INVALID, "spec.json: compile.nesterov: nesterov is an sgd setting"},
    {0, 0, 0, "{'learning_rate': 0, 'loss': 'mse'}", 0, KILN_E_INVALID, "spec.json: compile.learning_rate: expected a positive number, got 0"},
    {0, 0, 0, "{'learning_rate': 1e39, 'loss': 'mse'}", 0, KILN_E_INVALID, "spec.json: compile.learning_rate: expected a positive number"},
    {0, 0, 0, "{'loss': 'mse', 'metrics': 'mae'}", 0, KILN_E_FORMAT, "spec.json: compile.metrics: expected an array of metric names, got the string \"mae\""},
    {0, 0, 0, "{'loss': 'mse', 'metrics': ['mae', 'f1']}", 0, KILN_E_INVALID, "spec.json: compile.metrics[1]: unknown metric \"f1\""},
    {0, 0, 0, "{'loss': 'mse', 'metrics': [3]}", 0, KILN_E_FORMAT, "spec.json: compile.metrics[0]: expected a string, got the number 3"},
    {0, 0, 0, "{'loss': 'binary_crossentropy', 'metrics': ['acc', 'accuracy']}", 0, KILN_E_INVALID, "spec.json: compile.metrics[1]: metric \"accuracy\" is given twice (also compile.metrics[0])"},
    /* fit */
    {0, 0, 0, 0, "[]", KILN_E_FORMAT, "spec.json: fit: expected an object, got an array"},
    {0, 0, 0, 0, "{'epoch': 3}", KILN_E_FORMAT, "spec.json: fit.epoch: unknown key (expected one of epochs, batch_size, validation_split, shuffle, verbose)"},
    {0, 0, 0, 0, "{'epochs': 0}", KILN_E_INVALID, "spec.json: fit.epochs: expected a positive integer, got 0"},
    {0, 0, 0, 0, "{'epochs': 1.5}", KILN_E_INVALID, "spec.json: fit.epochs: expected a positive integer, got 1.5"},
    {0, 0, 0, 0, "{'epochs': '4'}", KILN_E_FORMAT, "spec.json: fit.epochs: expected a positive integer, got the string \"4\""},
    {0, 0, 0, 0, "{'batch_size': 0}", KILN_E_INVALID, "spec.json: fit.batch_size: expected a positive integer, got 0"},
    {0, 0, 0, 0, "{'batch_size': -512}", KILN_E_INVALID, "spec.json: fit.batch_size: expected a positive integer, got -512"},
    {0, 0, 0, 0, "{'batch_size': null}", KILN_E_FORMAT, "spec.json: fit.batch_size: expected a positive integer, got null"},
    {0, 0, 0, 0, "{'validation_split': 1}", KILN_E_INVALID, "spec.json: fit.validation_split: expected a number in [0, 1), got 1"},
    {0, 0, 0, 0, "{'validation_split': -0.1}", KILN_E_INVALID, "spec.json: fit.validation_split: expected a number in [0, 1), got -0.1"},
    {0, 0, 0, 0, "{'shuffle': 1}", KILN_E_FORMAT, "spec.json: fit.shuffle: expected true or false, got the number 1"},
    {0, 0, 0, 0, "{'verbose': 3}", KILN_E_INVALID, "spec.json: fit.verbose: expected 0, 1, 2 or \"auto\", got 3"},
    {0, 0, 0, 0, "{'verbose': 'loud'}", KILN_E_FORMAT, "spec.json: fit.verbose: expected 0, 1, 2 or \"auto\", got the string \"loud\""},
};

static char *assemble(const bad_case *c) {
  if (c->raw) return dq(c->raw);
  char buf[4096];
  size_t n = 0;
  n += (size_t)snprintf(buf + n, sizeof buf - n, "{");
  if (c->top) n += (size_t)snprintf(buf + n, sizeof buf - n, "%s, ", c->top);
  n += (size_t)snprintf(buf + n, sizeof buf - n, "'layers': %s", c->layers ? c->layers : LAYERS_OK);
  if (!c->compile || strcmp(c->compile, "-") != 0)
    n += (size_t)snprintf(buf + n, sizeof buf - n, ", 'compile': %s", c->compile ? c->compile : COMPILE_OK);
  if (c->fit) n += (size_t)snprintf(buf + n, sizeof buf - n, ", 'fit': %s", c->fit);
  snprintf(buf + n, sizeof buf - n, "}");
  return dq(buf);
}

static void test_bad_specs(void **state) {
  (void)state;
  int failures = 0;
  for (size_t i = 0; i < sizeof bad_cases / sizeof bad_cases[0]; i++) {
    const bad_case *c = &bad_cases[i];
    char *json = assemble(c);
    kiln_spec *s = (kiln_spec *)json; /* must be reset to NULL */
    kiln_error err = {0};
    kiln_status st = kiln_spec_parse(json, "spec.json", &s, &err);
    char *expect = dq(c->expect);
    if (st != c->status || s != NULL || !strstr(err.message, expect) || err.status != st) {
      print_error("case %zu: %s\n  status %d (%s), expected %d\n  message: %s\n  expected: %s\n", i,
                  json, (int)st, kiln_status_name(st), (int)c->status, err.message, expect);
      failures++;
    }
    if (st == KILN_OK) kiln_spec_free(s);
    /* NULL err is allowed and changes nothing. */
    kiln_spec *s2 = NULL;
    assert_int_equal(kiln_spec_parse(json, "spec.json", &s2, NULL), c->status);
    assert_null(s2);
    free(expect);
    free(json);
  }
  assert_int_equal(failures, 0);
}

/* A good spec stays good under every bad case's neighbour: the table's defaults parse. */
static void test_bad_case_baseline_is_valid(void **state) {
  (void)state;
  bad_case base = {0, 0, 0, 0, "{'epochs': 2}", KILN_OK, ""};
  char *json = assemble(&base);
  kiln_spec *s = NULL;
  assert_int_equal(kiln_spec_parse(json, "spec.json", &s, NULL), KILN_OK);
  kiln_model *m = build_ok(s, 0, KILN_SEED_FROM_SPEC);
  assert_int_equal(kiln_model_layer_count(m), 3);
  kiln_model_free(m);
  kiln_spec_free(s);
  free(json);
}

/* --- files ------------------------------------------------------------------- */

static void write_file(const char *path, const char *data, size_t n) {
  FILE *f = fopen(path, "wb");
  assert_non_null(f);
  assert_int_equal(fwrite(data, 1, n, f), n);
  assert_int_equal(fclose(f), 0);
}

static void test_load(void **state) {
  (void)state;
  char dir[] = "/tmp/kiln-spec-XXXXXX";
  assert_non_null(mkdtemp(dir));
  char path[256];
  snprintf(path, sizeof path, "%s/model.json", dir);
  kiln_spec *s = NULL;
  kiln_error err = {0};

  assert_int_equal(kiln_spec_load(path, &s, &err), KILN_E_IO);
  assert_non_null(strstr(err.message, path));
  assert_null(s);

  char *json = dq("\xEF\xBB\xBF{'layers': [{'type': 'Dense', 'units': 2}], 'compile': {'loss': 'mse'}}");
  write_file(path, json, strlen(json));
  assert_int_equal(kiln_spec_load(path, &s, &err), KILN_OK);
  kiln_spec_free(s);
  free(json);

  json = dq("{'layers': [{'type': 'Dense', 'units': 0}], 'compile': {'loss': 'mse'}}");
  write_file(path, json, strlen(json));
  assert_int_equal(kiln_spec_load(path, &s, &err), KILN_E_INVALID);
  char want[300];
  snprintf(want, sizeof want, "%s: layers[0].units: ", path);
  assert_non_null(strstr(err.message, want));
  free(json);

  write_file(path, "{\"layers\"\0: []}", 15);
  assert_int_equal(kiln_spec_load(path, &s, &err), KILN_E_FORMAT);
  assert_non_null(strstr(err.message, "NUL byte at byte 9"));

  const char *broken = "{\n  \"layers\": [\n    {\"type\": \"Dense\" \"units\": 2}\n  ]\n}\n";
  write_file(path, broken, strlen(broken));
  assert_int_equal(kiln_spec_load(path, &s, &err), KILN_E_FORMAT);
  assert_non_null(strstr(err.message, "(line 3, column"));
  assert_non_null(strstr(err.message, path));

  unlink(path);
  rmdir(dir);
}

static void test_null_arguments(void **state) {
  (void)state;
  kiln_spec *s = NULL;
  kiln_error err = {0};
  assert_int_equal(kiln_spec_parse(NULL, "x", &s, &err), KILN_E_INVALID);
  assert_int_equal(kiln_spec_parse("{}", "x", NULL, &err), KILN_E_INVALID);
  assert_int_equal(kiln_spec_load(NULL, &s, &err), KILN_E_INVALID);
  kiln_model *m = NULL;
  assert_int_equal(kiln_spec_build(NULL, 0, 0, &m, &err), KILN_E_INVALID);
  kiln_spec_free(NULL);
  kiln_fit_options fo;
  kiln_spec_fit_options(NULL, &fo);
  assert_int_equal(fo.epochs, 1);
  /* No source name: messages still say where. */
  assert_int_equal(kiln_spec_parse("{\"layers\": 1}", NULL, &s, &err), KILN_E_FORMAT);
  assert_non_null(strstr(err.message, "<spec>: layers: "));
}

/* The specs shipped in examples/specs/ are valid and build the book's models. */
static void test_example_specs(void **state) {
  (void)state;
  const char *src = getenv("KILN_SOURCE_DIR");
  if (!src) skip();
  static const struct {
    const char *file;
    int layers;
    int64_t inputs, outputs;
    kiln_loss loss;
    int epochs;
    int64_t batch;
  } ex[] = {
      {"imdb.json", 4, 10000, 1, KILN_LOSS_BINARY_CROSSENTROPY, 4, 512},
      {"reuters.json", 4, 10000, 46, KILN_LOSS_CATEGORICAL_CROSSENTROPY, 9, 512},
      {"housing.json", 4, 8, 1, KILN_LOSS_MEAN_SQUARED_ERROR, 130, 16},
      {"fashion_mnist.json", 3, 784, 10, KILN_LOSS_SPARSE_CATEGORICAL_CROSSENTROPY, 5, 128},
  };
  for (size_t i = 0; i < sizeof ex / sizeof ex[0]; i++) {
    char path[1024];
    snprintf(path, sizeof path, "%s/examples/specs/%s", src, ex[i].file);
    kiln_spec *s = NULL;
    kiln_error err = {0};
    if (kiln_spec_load(path, &s, &err)) print_error("%s\n", err.message);
    assert_non_null(s);
    kiln_model *m = build_ok(s, 0, KILN_SEED_FROM_SPEC);
    assert_int_equal(kiln_model_layer_count(m), ex[i].layers);
    assert_int_equal(kiln_model_input_features(m), ex[i].inputs);
    assert_int_equal(kiln_model_output_features(m), ex[i].outputs);
    assert_int_equal(m->loss, ex[i].loss);
    kiln_fit_options fo;
    kiln_spec_fit_options(s, &fo);
    assert_int_equal(fo.epochs, ex[i].epochs);
    assert_int_equal(fo.batch_size, ex[i].batch);
    kiln_model_free(m);
    kiln_spec_free(s);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_header_example),
      cmocka_unit_test(test_fit_settings_and_defaults),
      cmocka_unit_test(test_initializers),
      cmocka_unit_test(test_regularizers),
      cmocka_unit_test(test_activations_and_names),
      cmocka_unit_test(test_optimizers),
      cmocka_unit_test(test_settings_reach_training),
      cmocka_unit_test(test_input_width_and_seed),
      cmocka_unit_test(test_build_errors_name_the_layer),
      cmocka_unit_test(test_bad_case_baseline_is_valid),
      cmocka_unit_test(test_bad_specs),
      cmocka_unit_test(test_load),
      cmocka_unit_test(test_null_arguments),
      cmocka_unit_test(test_example_specs),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

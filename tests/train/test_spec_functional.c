/* Functional JSON specs (listing 7.9's ticket model): top-level "inputs", layers that
 * take inputs by name, Concatenate, "outputs", and Keras' per-output compile dicts and
 * lists (loss, loss_weights, metrics). Bad specs fail naming the JSON key path. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kiln/train.h"

/* ' -> " so that specs read as JSON in the source. Caller frees. */
static char *dq(const char *s) {
  char *out = strdup(s);
  assert_non_null(out);
  for (char *p = out; *p; p++)
    if (*p == '\'') *p = '"';
  return out;
}

#define INPUTS                                                                          \
  "'inputs': [{'name': 'title', 'shape': [100]}, {'name': 'text_body', 'shape': [100]}," \
  " {'name': 'tags', 'shape': [10]}], "
#define LAYERS                                                                         \
  "'layers': [{'type': 'Concatenate', 'inputs': ['title', 'text_body', 'tags']},"     \
  " {'type': 'Dense', 'name': 'dense_features', 'units': 8, 'activation': 'relu'},"  \
  " {'type': 'Dense', 'name': 'priority', 'units': 1, 'activation': 'sigmoid',"      \
  "  'inputs': ['dense_features']},"                                                   \
  " {'type': 'Dense', 'name': 'department', 'units': 4, 'activation': 'softmax',"    \
  "  'inputs': 'dense_features'}], 'outputs': ['priority', 'department'], "

static const char *const ticket =
    "{'name': 'ticket', 'seed': 3, " INPUTS LAYERS
    "'compile': {'optimizer': 'adam',"
    " 'loss': {'priority': 'mean_squared_error', 'department': 'sparse_categorical_crossentropy'},"
    " 'loss_weights': {'priority': 0.5},"
    " 'metrics': {'priority': ['mean_absolute_error'], 'department': ['accuracy']}}}";

static kiln_spec *parse(const char *single_quoted, kiln_status want, const char *needle) {
  char *json = dq(single_quoted);
  kiln_spec *s = NULL;
  kiln_error err = {0};
  kiln_status st = kiln_spec_parse(json, "spec.json", &s, &err);
  if (st != want) fail_msg("status %d (want %d): %s\nspec: %s", st, want, err.message, json);
  if (needle && !strstr(err.message, needle))
    fail_msg("\"%s\" lacks \"%s\"\nspec: %s", err.message, needle, json);
  free(json);
  return s;
}

static void test_ticket_spec_builds(void **state) {
  kiln_spec *s = parse(ticket, KILN_OK, NULL);
  kiln_model *m = NULL;
  kiln_error err = {0};
  if (kiln_spec_build(s, 0, KILN_SEED_FROM_SPEC, &m, &err)) fail_msg("%s", err.message);
  assert_int_equal(kiln_model_input_count(m), 3);
  assert_int_equal(kiln_model_output_count(m), 2);
  kiln_layer_info li;
  kiln_node n;
  assert_int_equal(kiln_model_find_layer(m, "text_body", &n, NULL), KILN_OK);
  assert_int_equal(kiln_model_input_node(m, 1), n);
  assert_int_equal(kiln_model_layer(m, kiln_model_input_node(m, 2), &li, NULL), KILN_OK);
  assert_string_equal(li.name, "tags");
  assert_int_equal(li.out_features, 10);
  assert_int_equal(kiln_model_find_layer(m, "concatenate", &n, NULL), KILN_OK);
  assert_int_equal(kiln_model_layer(m, n, &li, NULL), KILN_OK);
  assert_int_equal(li.kind, KILN_LAYER_CONCATENATE);
  assert_int_equal(li.n_inputs, 3);
  assert_int_equal(li.out_features, 210);
  assert_int_equal(kiln_model_layer(m, kiln_model_output_node(m, 1), &li, NULL), KILN_OK);
  assert_string_equal(li.name, "department");
  assert_int_equal(li.in_features, 8);
  assert_int_equal(kiln_model_output_loss(m, 0), KILN_LOSS_MEAN_SQUARED_ERROR);
  assert_int_equal(kiln_model_output_loss(m, 1), KILN_LOSS_SPARSE_CATEGORICAL_CROSSENTROPY);
  assert_true(kiln_model_output_loss_weight(m, 0) == 0.5f);
  assert_true(kiln_model_output_loss_weight(m, 1) == 1.0f);
  kiln_optimizer o;
  kiln_model_get_optimizer(m, &o);
  assert_int_equal(o.kind, KILN_OPTIMIZER_ADAM);
  /* The spec's seed: building twice gives the same weights. */
  kiln_model *again = NULL;
  assert_int_equal(kiln_spec_build(s, 0, KILN_SEED_FROM_SPEC, &again, NULL), KILN_OK);
  kiln_layer_info a, b;
  assert_int_equal(kiln_model_find_layer(m, "priority", &n, NULL), KILN_OK);
  assert_int_equal(kiln_model_layer(m, n, &a, NULL), KILN_OK);
  assert_int_equal(kiln_model_layer(again, n, &b, NULL), KILN_OK);
  assert_memory_equal(a.kernel, b.kernel, 8 * sizeof(float));
  kiln_model_free(again);
  kiln_model_free(m);
  kiln_spec_free(s);
}

/* Listing 7.10's training on dummy data: the spec's model trains with fit_io, data by
 * name, and logs Keras' per-output keys. */
static void test_ticket_spec_trains(void **state) {
  kiln_spec *s = parse(ticket, KILN_OK, NULL);
  kiln_model *m = NULL;
  assert_int_equal(kiln_spec_build(s, 0, KILN_SEED_FROM_SPEC, &m, NULL), KILN_OK);
  const int64_t n = 256;
  kiln_matrix title, body, tags, prio, dept;
  assert_int_equal(kiln_matrix_alloc(&title, n, 100, NULL), KILN_OK);
  assert_int_equal(kiln_matrix_alloc(&body, n, 100, NULL), KILN_OK);
  assert_int_equal(kiln_matrix_alloc(&tags, n, 10, NULL), KILN_OK);
  assert_int_equal(kiln_matrix_alloc(&prio, n, 1, NULL), KILN_OK);
  assert_int_equal(kiln_matrix_alloc(&dept, n, 1, NULL), KILN_OK);
  uint32_t r = 12345;
  for (int64_t i = 0; i < n; i++) {
    for (int j = 0; j < 100; j++) {
      r = r * 1103515245u + 12345u;
      title.values[i * 100 + j] = (float)((r >> 16) & 1);
      r = r * 1103515245u + 12345u;
      body.values[i * 100 + j] = (float)((r >> 16) & 1);
    }
    for (int j = 0; j < 10; j++) tags.values[i * 10 + j] = (float)((i + j) % 3 == 0);
    /* Learnable targets: from the first title words and the tags. */
    prio.values[i] = 0.5f * title.values[i * 100] + 0.25f * body.values[i * 100 + 1];
    dept.values[i] = (float)(2 * (int)title.values[i * 100 + 2] + (int)tags.values[i * 10]);
  }
  kiln_io x = {3, {"tags", "title", "text_body"}, {&tags, &title, &body}};
  kiln_io y = {2, {"department", "priority"}, {&dept, &prio}};
  kiln_fit_options opt;
  kiln_fit_options_init(&opt);
  opt.epochs = 30;
  kiln_history h = {0};
  kiln_error err = {0};
  if (kiln_model_fit_io(m, &x, &y, &opt, &h, &err)) fail_msg("%s", err.message);
  double first = kiln_history_get(&h, "loss", 0), last = kiln_history_get(&h, "loss", 29);
  print_message("loss %.4f -> %.4f, department_accuracy %.3f, priority_mean_absolute_error %.3f\n",
                first, last, kiln_history_get(&h, "department_accuracy", 29),
                kiln_history_get(&h, "priority_mean_absolute_error", 29));
  assert_true(last < 0.5 * first);
  assert_false(isnan(kiln_history_get(&h, "priority_loss", 29)));
  assert_true(kiln_history_get(&h, "department_accuracy", 29) > 0.9);
  kiln_history_free(&h);
  kiln_matrix *ms[] = {&title, &body, &tags, &prio, &dept};
  for (int i = 0; i < 5; i++) kiln_matrix_free(ms[i]);
  kiln_model_free(m);
  kiln_spec_free(s);
}

/* Keras' list forms (listing 7.10): in output order. */
static void test_list_forms(void **state) {
  kiln_spec *s = parse("{" INPUTS LAYERS
                       "'compile': {'optimizer': 'adam',"
                       " 'loss': ['mean_squared_error', 'sparse_categorical_crossentropy'],"
                       " 'loss_weights': [1.0, 0.2],"
                       " 'metrics': [['mean_absolute_error'], ['accuracy']]}}",
                       KILN_OK, NULL);
  kiln_model *m = NULL;
  kiln_error err = {0};
  if (kiln_spec_build(s, 0, KILN_SEED_FROM_SPEC, &m, &err)) fail_msg("%s", err.message);
  assert_int_equal(kiln_model_output_loss(m, 1), KILN_LOSS_SPARSE_CATEGORICAL_CROSSENTROPY);
  assert_true(kiln_model_output_loss_weight(m, 1) == 0.2f);
  kiln_model_free(m);
  kiln_spec_free(s);
  /* One loss for every output, one metric list for every output. */
  s = parse("{" INPUTS LAYERS "'compile': {'loss': 'mean_squared_error', 'metrics': ['mae']}}",
            KILN_OK, NULL);
  assert_int_equal(kiln_spec_build(s, 0, KILN_SEED_FROM_SPEC, &m, &err), KILN_OK);
  assert_int_equal(kiln_model_output_loss(m, 1), KILN_LOSS_MEAN_SQUARED_ERROR);
  kiln_model_free(m);
  kiln_spec_free(s);
}

static void test_bad_functional_specs(void **state) {
  static const struct {
    const char *spec;
    kiln_status status;
    const char *needle;
  } cases[] = {
      {"{'inputs': [{'name': 'a', 'shape': [4]}], 'layers': [{'type': 'Dense', 'units': 2,"
       " 'inputs': ['b']}], 'compile': {'loss': 'mse'}}",
       KILN_E_INVALID, "spec.json: layers[0].inputs[0]: \"b\" is not an input or an earlier layer's name (known: a)"},
      {"{'inputs': [{'name': 'a', 'shape': [4]}], 'layers': [{'type': 'Dense', 'units': 2,"
       " 'inputs': ['a', 'a']}], 'compile': {'loss': 'mse'}}",
       KILN_E_INVALID, "layers[0].inputs: expected one name"},
      {"{'inputs': [{'name': 'a'}], 'layers': [{'type': 'Dense', 'units': 2}],"
       " 'compile': {'loss': 'mse'}}",
       KILN_E_FORMAT, "inputs[0].shape: missing"},
      {"{'inputs': [{'shape': [3]}], 'layers': [{'type': 'Dense', 'units': 2}],"
       " 'compile': {'loss': 'mse'}}",
       KILN_E_FORMAT, "inputs[0].name: missing"},
      {"{'inputs': [{'name': 'a', 'shape': [4]}, {'name': 'a', 'shape': [4]}],"
       " 'layers': [{'type': 'Dense', 'units': 2}], 'compile': {'loss': 'mse'}}",
       KILN_E_INVALID, "inputs[1].name: \"a\" is already the name of inputs[0]"},
      {"{'inputs': [{'name': 'a', 'shape': [4]}], 'layers': [{'type': 'Dense', 'name': 'a',"
       " 'units': 2}], 'compile': {'loss': 'mse'}}",
       KILN_E_INVALID, "layers[0].name: \"a\" is already the name of an input"},
      {"{'inputs': [{'name': 'a', 'shape': [4]}], 'layers': [{'type': 'Input', 'shape': [4]},"
       " {'type': 'Dense', 'units': 2}], 'compile': {'loss': 'mse'}}",
       KILN_E_INVALID, "layers[0].type: a functional spec declares its Inputs"},
      {"{'layers': [{'type': 'Input', 'shape': [4]}, {'type': 'Concatenate', 'inputs': ['x']},"
       " {'type': 'Dense', 'units': 2}], 'compile': {'loss': 'mse'}}",
       KILN_E_INVALID, "layers[1].type: Concatenate needs a functional spec"},
      {"{'layers': [{'type': 'Input', 'shape': [4]}, {'type': 'Dense', 'units': 2,"
       " 'inputs': ['x']}], 'compile': {'loss': 'mse'}}",
       KILN_E_INVALID, "layers[1].inputs: layer inputs by name need a functional spec"},
      {"{'inputs': [{'name': 'a', 'shape': [4]}], 'layers': [{'type': 'Concatenate'},"
       " {'type': 'Dense', 'units': 2}], 'compile': {'loss': 'mse'}}",
       KILN_E_FORMAT, "layers[0].inputs: missing"},
      {"{'inputs': [{'name': 'a', 'shape': [4]}], 'layers': [{'type': 'Concatenate',"
       " 'inputs': ['a'], 'axis': 0}, {'type': 'Dense', 'units': 2}], 'compile': {'loss': 'mse'}}",
       KILN_E_UNSUPPORTED, "layers[0].axis"},
      {"{" INPUTS LAYERS "'compile': {'loss': 'mse'}, 'outputs': ['priority']}", KILN_E_FORMAT,
       NULL}, /* "outputs" twice: a JSON duplicate key */
      {"{" INPUTS "'layers': [{'type': 'Concatenate', 'inputs': ['title', 'tags']},"
       " {'type': 'Dense', 'name': 'p', 'units': 1}], 'outputs': ['p', 'q'],"
       " 'compile': {'loss': 'mse'}}",
       KILN_E_INVALID, "outputs[1]: \"q\" is not the name of a layer (known: title, text_body, tags, p)"},
      {"{" INPUTS "'layers': [{'type': 'Concatenate', 'inputs': ['title', 'tags']},"
       " {'type': 'Dense', 'name': 'p', 'units': 1}], 'outputs': ['tags'],"
       " 'compile': {'loss': 'mse'}}",
       KILN_E_INVALID, "outputs[0]: \"tags\" is not the name of a layer"},
      {"{" INPUTS LAYERS "'compile': {'loss': {'prio': 'mse', 'priority': 'mse',"
       " 'department': 'mse'}}}",
       KILN_E_INVALID, "compile.loss.prio: not an output of the model (outputs: priority, department)"},
      {"{" INPUTS LAYERS "'compile': {'loss': {'priority': 'mse'}}}", KILN_E_INVALID,
       "compile.loss: no loss for output \"department\""},
      {"{" INPUTS LAYERS "'compile': {'loss': {'priority': 'mse', 'department': 'hinge'}}}",
       KILN_E_INVALID, "compile.loss.department: unknown loss"},
      {"{" INPUTS LAYERS "'compile': {'loss': ['mse'], 'metrics': ['mae']}}", KILN_E_INVALID,
       "compile.loss: expected one entry per output (2), got 1"},
      {"{" INPUTS LAYERS "'compile': {'loss': 'mse', 'loss_weights': {'priority': -1}}}",
       KILN_E_INVALID, "compile.loss_weights.priority: expected a finite number >= 0"},
      {"{" INPUTS LAYERS "'compile': {'loss': 'mse', 'loss_weights': {'dept': 1}}}",
       KILN_E_INVALID, "compile.loss_weights.dept: not an output"},
      {"{" INPUTS LAYERS "'compile': {'loss': 'mse', 'metrics': {'department': ['acc2']}}}",
       KILN_E_INVALID, "compile.metrics.department[0]: unknown metric \"acc2\""},
      {"{" INPUTS LAYERS "'compile': {'loss': 'mse', 'metrics': {'department': 'accuracy'}}}",
       KILN_E_FORMAT, "compile.metrics.department: expected an array of metric names"},
      {"{'layers': [{'type': 'Input', 'shape': [4]}, {'type': 'Dense', 'units': 2}],"
       " 'compile': {'loss': {'dense': 'mse'}}}",
       KILN_E_FORMAT, "compile.loss: expected a string, got an object"},
      {"{'layers': [{'type': 'Input', 'shape': [4]}, {'type': 'Dense', 'units': 2}],"
       " 'outputs': ['dense'], 'compile': {'loss': 'mse'}}",
       KILN_E_INVALID, "outputs: \"outputs\" needs a functional spec"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    kiln_spec *s = parse(cases[i].spec, cases[i].status, cases[i].needle);
    assert_null(s);
  }
}

static void test_example_spec(void **state) {
  const char *src = getenv("KILN_SOURCE_DIR");
  char path[1024];
  snprintf(path, sizeof path, "%s/examples/specs/ticket.json", src ? src : ".");
  kiln_spec *s = NULL;
  kiln_error err = {0};
  if (kiln_spec_load(path, &s, &err)) fail_msg("%s", err.message);
  kiln_model *m = NULL;
  if (kiln_spec_build(s, 0, KILN_SEED_FROM_SPEC, &m, &err)) fail_msg("%s", err.message);
  assert_int_equal(kiln_model_input_count(m), 3);
  assert_int_equal(kiln_model_output_count(m), 2);
  /* 20100 x 64 + 64, 64 + 1, 64 x 4 + 4 */
  assert_int_equal(kiln_model_param_count(m), 20100 * 64 + 64 + 65 + 260);
  kiln_fit_options fo;
  kiln_spec_fit_options(s, &fo);
  assert_int_equal(fo.epochs, 1);
  kiln_model_free(m);
  kiln_spec_free(s);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_ticket_spec_builds),
      cmocka_unit_test(test_ticket_spec_trains),
      cmocka_unit_test(test_list_forms),
      cmocka_unit_test(test_bad_functional_specs),
      cmocka_unit_test(test_example_spec),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

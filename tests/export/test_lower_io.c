/* Export of multi-input/multi-output models (the ticket model of listing 7.9, small):
 * kiln_model_lower names the graph inputs after the Input layers and the outputs after
 * the output layers (in the model's order), writes Concatenate as Concat(axis -1) and
 * the per-output losses/metrics as kiln.loss.<output>, kiln.loss_weight.<output> and
 * kiln.metrics.<output>; kiln's runtime on the written file equals predict_io; the file
 * imports back (kiln_model_from_ir) with the same predictions and per-output losses;
 * a single-output file keeps kiln.loss/kiln.metrics only. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "test_common.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kiln/export.h"
#include "kiln/infer.h"
#include "ticket_model.h"

static const ticket_sizes Z = {40, 6, 8, 4};
enum { ROWS = 64 };

static kiln_model *trained(ticket_set *d) {
  kiln_error err = {0};
  kiln_model *m = ticket_model_build(&Z, 3, KILN_OPTIMIZER_RMSPROP, &err);
  if (!m) fail_msg("build: %s", err.message);
  assert_int_equal(ticket_set_make(d, &Z, ROWS, 0.5, 17), 0);
  kiln_io x, y;
  ticket_inputs(d, &x, &y);
  kiln_fit_options fo;
  kiln_fit_options_init(&fo);
  fo.epochs = 2;
  fo.batch_size = 16;
  OK(kiln_model_fit_io(m, &x, &y, &fo, NULL, E));
  return m;
}

/* kiln's runtime on g vs predict_io of m. */
static void same_outputs(const kiln_ir_graph *g, kiln_model *m, const ticket_set *d) {
  kiln_io x, y;
  ticket_inputs(d, &x, &y);
  kiln_matrix want[2];
  memset(want, 0, sizeof want);
  OK(kiln_model_predict_io(m, &x, 32, want, E));
  kiln_session *s;
  OK(kiln_session_create(g, NULL, &s, E));
  kiln_tensor_view in[3], out[2];
  for (int i = 0; i < 3; i++) {
    memset(&in[i], 0, sizeof in[i]);
    in[i].name = x.names[i];
    in[i].dtype = KILN_DTYPE_FLOAT;
    in[i].rank = 2;
    in[i].dims[0] = ROWS;
    in[i].dims[1] = x.data[i]->cols;
    in[i].data = x.data[i]->values;
  }
  OK(kiln_session_run(s, in, 3, out, 2, E));
  double dp = max_diff(out[0].data, want[0].values, ROWS);
  double dd = max_diff(out[1].data, want[1].values, ROWS * Z.departments);
  if (!(dp <= 1e-5 && dd <= 1e-5)) fail_msg("runtime vs predict_io: %.3g %.3g", dp, dd);
  kiln_session_free(s);
  kiln_matrix_free(&want[0]);
  kiln_matrix_free(&want[1]);
}

static void test_lower_ticket(void **state) {
  (void)state;
  ticket_set d;
  kiln_model *m = trained(&d);
  kiln_ir_graph *g;
  for (int mm = 0; mm < 2; mm++) {
    kiln_export_options eo;
    kiln_export_options_init(&eo);
    eo.dense_as_matmul = mm;
    eo.opset = mm ? 17 : 13;
    OK(kiln_model_lower(m, &eo, &g, E));
    assert_int_equal(g->n_inputs, 3);
    assert_string_equal(g->inputs[0].name, "title");
    assert_string_equal(g->inputs[1].name, "text_body");
    assert_string_equal(g->inputs[2].name, "tags");
    assert_int_equal(g->inputs[2].dims[1].value, Z.tags);
    assert_int_equal(g->inputs[2].dims[0].value, -1);
    assert_int_equal(g->n_outputs, 2);
    assert_string_equal(g->outputs[0].name, "priority");
    assert_string_equal(g->outputs[1].name, "department");
    assert_int_equal(g->outputs[1].dims[1].value, Z.departments);
    const kiln_ir_node *cat = NULL;
    for (int i = 0; i < g->n_nodes; i++)
      if (!strcmp(g->nodes[i].op_type, "Concat")) cat = &g->nodes[i];
    assert_non_null(cat);
    assert_int_equal(cat->n_inputs, 3);
    assert_string_equal(cat->inputs[1], "text_body");
    assert_int_equal(kiln_ir_node_attr(cat, "axis")->i, -1);
    assert_string_equal(kiln_ir_get_meta(g, "kiln.loss.priority"), "mean_squared_error");
    assert_string_equal(kiln_ir_get_meta(g, "kiln.loss.department"),
                        "sparse_categorical_crossentropy");
    assert_string_equal(kiln_ir_get_meta(g, "kiln.loss_weight.department"), "1");
    assert_string_equal(kiln_ir_get_meta(g, "kiln.metrics.priority"), "mae");
    assert_string_equal(kiln_ir_get_meta(g, "kiln.metrics.department"), "accuracy");
    assert_null(kiln_ir_get_meta(g, "kiln.loss"));
    same_outputs(g, m, &d);
    /* through the file */
    void *buf;
    size_t size;
    OK(kiln_onnx_write_buffer(g, &buf, &size, E));
    kiln_ir_graph *back;
    OK(kiln_onnx_read_buffer(buf, size, "ticket.onnx", &back, E));
    free(buf);
    same_outputs(back, m, &d);
    /* import: a trainable model with the same predictions and losses */
    kiln_model *im;
    OK(kiln_model_from_ir(back, 1, &im, E));
    assert_int_equal(kiln_model_input_count(im), 3);
    assert_int_equal(kiln_model_output_count(im), 2);
    assert_true(kiln_model_is_compiled(im));
    assert_int_equal(kiln_model_output_loss(im, 1), KILN_LOSS_SPARSE_CATEGORICAL_CROSSENTROPY);
    assert_int_equal(kiln_model_output_loss(im, 0), KILN_LOSS_MEAN_SQUARED_ERROR);
    /* every output's metrics come back */
    assert_int_equal(kiln_model_output_metric_count(im, 0), 1);
    assert_string_equal(kiln_model_output_metric_name(im, 0, 0), "mae");
    assert_int_equal(kiln_model_output_metric_count(im, 1), 1);
    assert_string_equal(kiln_model_output_metric_name(im, 1, 0), "accuracy");
    assert_null(kiln_model_output_metric_name(im, 1, 1));
    assert_int_equal(kiln_model_output_metric_count(im, 2), 0);
    assert_null(kiln_model_output_metric_name(im, -1, 0));
    same_outputs(back, im, &d);
    kiln_node n;
    OK(kiln_model_find_layer(im, "concatenate", &n, E));
    kiln_model_free(im);
    kiln_ir_free(back);
    kiln_ir_free(g);
  }
  /* class names describe one output */
  kiln_export_options eo;
  kiln_export_options_init(&eo);
  const char *names[4] = {"a", "b", "c", "d"};
  eo.class_names = names;
  eo.n_class_names = 4;
  kiln_error err = {0};
  assert_int_equal(kiln_model_lower(m, &eo, &g, &err), KILN_E_UNSUPPORTED);
  assert_non_null(strstr(err.message, "class_names"));
  kiln_model_free(m);
  ticket_set_free(&d);
}

static void test_single_output_metadata(void **state) {
  (void)state;
  kiln_model *m;
  OK(kiln_model_create(1, &m, E));
  OK(kiln_model_add_input(m, 5, E));
  OK(kiln_model_add_dense(m, 3, KILN_ACTIVATION_SOFTMAX, E));
  kiln_optimizer opt;
  kiln_optimizer_init(&opt, KILN_OPTIMIZER_ADAM);
  const char *metrics[1] = {"accuracy"};
  OK(kiln_model_compile(m, &opt, KILN_LOSS_SPARSE_CATEGORICAL_CROSSENTROPY, metrics, 1, E));
  kiln_ir_graph *g;
  OK(kiln_model_lower(m, NULL, &g, E));
  assert_string_equal(kiln_ir_get_meta(g, "kiln.loss"), "sparse_categorical_crossentropy");
  assert_string_equal(kiln_ir_get_meta(g, "kiln.metrics"), "accuracy");
  for (int i = 0; i < g->n_meta; i++) assert_null(strstr(g->meta[i].key, "kiln.loss."));
  assert_int_equal(g->n_inputs, 1);
  assert_int_equal(g->n_outputs, 1);
  kiln_ir_free(g);
  kiln_model_free(m);
}

/* Layers that no output depends on are left out; two heads, one of them a Dropout's
 * output (named by an Identity). */
static void test_unused_and_dropout_output(void **state) {
  (void)state;
  kiln_model *m;
  kiln_node a, b, cat, h, drop, unused, out2;
  OK(kiln_model_create(1, &m, E));
  OK(kiln_model_input(m, "a", 3, &a, E));
  OK(kiln_model_input(m, "b", 2, &b, E));
  kiln_node ins[2] = {a, b};
  OK(kiln_model_concatenate(m, ins, 2, "cat", &cat, E));
  kiln_dense_options o;
  kiln_dense_options_init(&o);
  o.name = "h";
  OK(kiln_model_dense(m, cat, 4, &o, &h, E));
  OK(kiln_model_dropout(m, h, 0.5f, "drop", &drop, E));
  o.name = "unused";
  OK(kiln_model_dense(m, h, 2, &o, &unused, E));
  o.name = "out2";
  OK(kiln_model_dense(m, drop, 1, &o, &out2, E));
  kiln_node outs[2] = {drop, out2};
  OK(kiln_model_set_inputs(m, ins, 2, E));
  OK(kiln_model_set_outputs(m, outs, 2, E));
  kiln_ir_graph *g;
  OK(kiln_model_lower(m, NULL, &g, E));
  assert_string_equal(g->outputs[0].name, "drop");
  assert_string_equal(g->outputs[1].name, "out2");
  for (int i = 0; i < g->n_nodes; i++) assert_null(strstr(g->nodes[i].name, "unused"));
  assert_null(kiln_ir_find_initializer(g, "unused/kernel"));
  kiln_session *s;
  OK(kiln_session_create(g, NULL, &s, E));
  kiln_session_free(s);
  kiln_model *im;
  OK(kiln_model_from_ir(g, 1, &im, E));
  assert_int_equal(kiln_model_output_count(im), 2);
  kiln_model_free(im);
  kiln_ir_free(g);
  kiln_model_free(m);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_lower_ticket),
      cmocka_unit_test(test_single_output_metadata),
      cmocka_unit_test(test_unused_and_dropout_output),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

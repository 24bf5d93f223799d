/* kiln trainer — evaluate and predict. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "custom_layer.h"
#include "model_internal.h"

kiln_status kiln_model_evaluate_io(kiln_model *m, const kiln_io *x, const kiln_io *y,
                                   int64_t batch_size, kiln_logs *out, kiln_error *err) {
  kiln_status s = kiln_check_compiled(m, batch_size, "evaluate", err);
  if (s) return s;
  io_data d;
  if (!y) return kiln_error_set(err, KILN_E_INVALID, "evaluate: no target data given");
  if ((s = kiln_resolve_io(m, x, y, "evaluate", &d, err))) return s;
  if ((s = kiln_fit_prepare(m, &d, batch_size, "evaluate", err))) return s;
  double loss, per[KILN_MAX_IO];
  s = kiln_run_eval(m, &d, 0, d.x[0]->rows, batch_size, &loss, per, err);
  if (s) return s;
  kiln_logs_fill(m, out, loss, per, 0);
  return KILN_OK;
}

kiln_status kiln_model_evaluate(kiln_model *m, const kiln_matrix *x, const kiln_matrix *y,
                                int64_t batch_size, kiln_logs *out, kiln_error *err) {
  kiln_io xi = kiln_io_one(x), yi = kiln_io_one(y);
  return kiln_model_evaluate_io(m, &xi, &yi, batch_size, out, err);
}

kiln_status kiln_model_predict_io(kiln_model *m, const kiln_io *x, int64_t batch_size,
                                  kiln_matrix *outs, kiln_error *err) {
  int n_out = kiln_model_output_count(m);
  for (int k = 0; k < n_out; k++) memset(&outs[k], 0, sizeof outs[k]);
  if (!m->compiled) {
    /* predict works on an uncompiled model, as in Keras. */
    kiln_optimizer opt;
    kiln_optimizer_init(&opt, KILN_OPTIMIZER_SGD);
    kiln_status s = kiln_model_compile(m, &opt, KILN_LOSS_MEAN_SQUARED_ERROR, NULL, 0, err);
    if (s) return s;
  }
  kiln_status s = kiln_check_compiled(m, batch_size, "predict", err);
  if (s) return s;
  io_data d;
  if ((s = kiln_resolve_io(m, x, NULL, "predict", &d, err))) return s;
  if ((s = kiln_fit_prepare(m, &d, batch_size, "predict", err))) return s;
  int64_t total = d.x[0]->rows;
  for (int k = 0; k < m->n_outs && !s; k++)
    s = kiln_matrix_alloc(&outs[k], total, m->layers[m->outs[k].node].out_features, err);
  feed f;
  if (!s) s = kiln_feed_init(&f, &d, batch_size, err);
  if (s) {
    for (int k = 0; k < m->n_outs; k++) kiln_matrix_free(&outs[k]);
    return s;
  }
  for (int64_t b = 0; b < total && !s; b += batch_size) {
    int64_t rows = total - b < batch_size ? total - b : batch_size;
    kiln_feed_gather(&f, m, NULL, b, rows);
    s = kiln_graph_forward(m, rows, 0, err);
    for (int k = 0; k < m->n_outs && !s; k++) {
      const kiln_layer *o = &m->layers[m->outs[k].node];
      memcpy(outs[k].values + b * o->out_features, o->out,
             (size_t)(rows * o->out_features) * sizeof(float));
    }
  }
  kiln_feed_free(&f);
  if (s)
    for (int k = 0; k < m->n_outs; k++) kiln_matrix_free(&outs[k]);
  return s;
}

kiln_status kiln_model_predict(kiln_model *m, const kiln_matrix *x, int64_t batch_size,
                               kiln_matrix *out, kiln_error *err) {
  memset(out, 0, sizeof *out);
  if (kiln_model_output_count(m) > 1)
    return kiln_error_set(err, KILN_E_INVALID,
                          "predict: the model has %d outputs; use kiln_model_predict_io",
                          kiln_model_output_count(m));
  kiln_io xi = kiln_io_one(x);
  return kiln_model_predict_io(m, &xi, batch_size, out, err);
}

/* kiln trainer — the low-level loop: gradients and forward passes of one batch for
 * custom training loops and gradient checks. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "custom_layer.h"
#include "model_internal.h"

static kiln_status gradients_impl(kiln_model *m, const kiln_io *x, const kiln_io *y,
                                  int training, double *loss, double *per_output,
                                  const char *what, kiln_error *err) {
  kiln_status s = kiln_check_compiled(m, 1, what, err);
  if (s) return s;
  io_data d;
  if (!y) return kiln_error_set(err, KILN_E_INVALID, "%s: no target data given", what);
  if ((s = kiln_resolve_io(m, x, y, what, &d, err))) return s;
  int64_t rows = d.x[0]->rows;
  if ((s = kiln_fit_prepare(m, &d, rows > 0 ? rows : 1, what, err))) return s;
  feed f;
  if ((s = kiln_feed_init(&f, &d, rows, err))) return s;
  kiln_feed_gather(&f, m, NULL, 0, rows);
  const float *yt[KILN_MAX_IO];
  int64_t yc[KILN_MAX_IO];
  for (int k = 0; k < m->n_outs; k++) {
    yt[k] = d.y[k]->values;
    yc[k] = d.y[k]->cols;
  }
  double per[KILN_MAX_IO];
  s = kiln_loss_and_gradients(m, rows, yt, yc, training, loss, per, err);
  if (!s && per_output) memcpy(per_output, per, (size_t)m->n_outs * sizeof(double));
  kiln_feed_free(&f);
  return s;
}

kiln_status kiln_model_gradients_io(kiln_model *m, const kiln_io *x, const kiln_io *y,
                                    int training, double *loss, double *per_output,
                                    kiln_error *err) {
  return gradients_impl(m, x, y, training, loss, per_output, "gradients", err);
}

/* Copies the outputs of the pass just run (rows of them) into outs (allocated here). */
static kiln_status copy_outputs(kiln_model *m, int64_t rows, kiln_matrix *outs, kiln_error *err) {
  for (int k = 0; k < m->n_outs; k++) {
    const kiln_layer *o = &m->layers[m->outs[k].node];
    kiln_status s = kiln_matrix_alloc(&outs[k], rows, o->out_features, err);
    if (s) {
      for (int j = 0; j < k; j++) kiln_matrix_free(&outs[j]);
      return s;
    }
    memcpy(outs[k].values, o->out, (size_t)(rows * o->out_features) * sizeof(float));
  }
  return KILN_OK;
}

kiln_status kiln_model_compute_gradients(kiln_model *m, const kiln_io *x, const kiln_io *y,
                                         int training, double *loss, double *per_output,
                                         kiln_matrix *outs, kiln_error *err) {
  if (outs)
    for (int k = 0; k < kiln_model_output_count(m); k++) memset(&outs[k], 0, sizeof outs[k]);
  kiln_status s = gradients_impl(m, x, y, training, loss, per_output, "compute_gradients", err);
  if (s) return s;
  return outs ? copy_outputs(m, x->data[0]->rows, outs, err) : KILN_OK;
}

kiln_status kiln_model_forward(kiln_model *m, const kiln_io *x, int training, kiln_matrix *outs,
                               kiln_error *err) {
  for (int k = 0; k < kiln_model_output_count(m); k++) memset(&outs[k], 0, sizeof outs[k]);
  kiln_status s = kiln_check_compiled(m, 1, "forward", err);
  if (s) return s;
  io_data d;
  if ((s = kiln_resolve_io(m, x, NULL, "forward", &d, err))) return s;
  int64_t rows = d.x[0]->rows;
  if ((s = kiln_fit_prepare(m, &d, rows > 0 ? rows : 1, "forward", err))) return s;
  feed f;
  if ((s = kiln_feed_init(&f, &d, rows, err))) return s;
  kiln_feed_gather(&f, m, NULL, 0, rows);
  s = kiln_graph_forward(m, rows, training, err);
  kiln_feed_free(&f);
  return s ? s : copy_outputs(m, rows, outs, err);
}

kiln_status kiln_model_gradients(kiln_model *m, const kiln_matrix *x, const kiln_matrix *y,
                                 int training, double *loss, kiln_error *err) {
  kiln_io xi = kiln_io_one(x), yi = kiln_io_one(y);
  return kiln_model_gradients_io(m, &xi, &yi, training, loss, NULL, err);
}

/* kiln trainer — checks of a call's data against the model, the evaluation pass
 * and the logs it fills; shared by fit, evaluate and the low-level loop. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "custom_layer.h"
#include "model_internal.h"

static void list_names(const kiln_model *m, const kiln_node *nodes, int n, char *buf, size_t cap) {
  size_t at = 0;
  buf[0] = 0;
  for (int i = 0; i < n && at < cap; i++)
    at += (size_t)snprintf(buf + at, cap - at, "%s%s", i ? ", " : "", m->layers[nodes[i]].name);
}

/* Orders the arrays of io as the model's nodes (by name or position). `side` is
 * "input" or "output". */
static kiln_status resolve_side(const kiln_model *m, const kiln_io *io, const kiln_node *nodes,
                                int n, const char *side, const char *what,
                                const kiln_matrix **out, kiln_error *err) {
  char names[512];
  list_names(m, nodes, n, names, sizeof names);
  const char *data_word = strcmp(side, "input") == 0 ? "input" : "target";
  if (!io || io->n <= 0)
    return kiln_error_set(err, KILN_E_INVALID, "%s: no %s data given (the model's %ss: %s)", what,
                          data_word, side, names);
  if (io->n > KILN_MAX_IO)
    return kiln_error_set(err, KILN_E_INVALID, "%s: %d %s arrays given; at most %d", what, io->n,
                          data_word, KILN_MAX_IO);
  int by_name = io->names[0] != NULL;
  for (int i = 0; i < io->n; i++)
    if ((io->names[i] != NULL) != by_name)
      return kiln_error_set(err, KILN_E_INVALID,
                            "%s: name every %s array or none (names[%d] is %s)", what, data_word,
                            i, by_name ? "NULL" : "set");
  if (!by_name) {
    if (io->n != n)
      return kiln_error_set(err, KILN_E_INVALID,
                            "%s: the model has %d %s%s (%s) but %d %s array%s given", what, n,
                            side, n == 1 ? "" : "s", names, io->n, data_word,
                            io->n == 1 ? " was" : "s were");
    for (int i = 0; i < n; i++) out[i] = io->data[i];
  } else {
    for (int k = 0; k < n; k++) out[k] = NULL;
    for (int i = 0; i < io->n; i++) {
      int k = -1;
      for (int j = 0; j < n; j++)
        if (strcmp(m->layers[nodes[j]].name, io->names[i]) == 0) k = j;
      if (k < 0)
        return kiln_error_set(err, KILN_E_INVALID, "%s: the model has no %s named \"%s\" (its %ss: %s)",
                              what, side, io->names[i], side, names);
      for (int j = 0; j < i; j++)
        if (strcmp(io->names[j], io->names[i]) == 0)
          return kiln_error_set(err, KILN_E_INVALID, "%s: %s \"%s\" is given twice", what,
                                data_word, io->names[i]);
      out[k] = io->data[i];
      if (!out[k])
        return kiln_error_set(err, KILN_E_INVALID, "%s: %s \"%s\" has no data (NULL)", what,
                              data_word, io->names[i]);
    }
    for (int k = 0; k < n; k++)
      if (!out[k])
        return kiln_error_set(err, KILN_E_INVALID, "%s: no %s data for %s \"%s\" (give every one of: %s)",
                              what, data_word, side, m->layers[nodes[k]].name, names);
  }
  for (int k = 0; k < n; k++)
    if (!out[k])
      return kiln_error_set(err, KILN_E_INVALID, "%s: %s \"%s\" has no data (NULL)", what,
                            data_word, m->layers[nodes[k]].name);
  return KILN_OK;
}

kiln_status kiln_check_compiled(const kiln_model *m, int64_t batch, const char *what,
                                kiln_error *err) {
  if (!m->compiled)
    return kiln_error_set(err, KILN_E_INVALID, "%s: compile the model first", what);
  if (batch <= 0)
    return kiln_error_set(err, KILN_E_INVALID, "%s: batch_size must be positive, got %lld", what,
                          (long long)batch);
  return KILN_OK;
}

kiln_status kiln_resolve_io(const kiln_model *m, const kiln_io *x, const kiln_io *y,
                            const char *what, io_data *d, kiln_error *err) {
  memset(d, 0, sizeof *d);
  kiln_status s = resolve_side(m, x, m->inputs, m->n_inputs, "input", what, d->x, err);
  if (s) return s;
  d->n_x = m->n_inputs;
  if (y) {
    kiln_node outs[KILN_MAX_IO];
    for (int k = 0; k < m->n_outs; k++) outs[k] = m->outs[k].node;
    s = resolve_side(m, y, outs, m->n_outs, "output", what, d->y, err);
    if (s) return s;
    d->n_y = m->n_outs;
  }
  return KILN_OK;
}

/* Checks the data against the model (widths, rows, values, targets, sparse inputs)
 * and sizes the batch buffers. */
kiln_status kiln_fit_prepare(kiln_model *m, const io_data *d, int64_t batch, const char *what,
                             kiln_error *err) {
  kiln_status s = kiln_check_compiled(m, batch, what, err);
  if (s) return s;
  int multi_in = m->n_inputs > 1;
  for (int i = 0; i < d->n_x; i++) {
    const kiln_layer *input = &m->layers[m->inputs[i]];
    const kiln_matrix *x = d->x[i];
    if (x->cols != input->out_features)
      return kiln_error_set(err, KILN_E_SHAPE,
                            "%s: the data has %lld features but input layer \"%s\" expects %lld",
                            what, (long long)x->cols, input->name, (long long)input->out_features);
  }
  const kiln_matrix *x0 = d->x[0];
  if (x0->rows == 0) return kiln_error_set(err, KILN_E_INVALID, "%s: the data has no rows", what);
  for (int i = 1; i < d->n_x; i++)
    if (d->x[i]->rows != x0->rows)
      return kiln_error_set(err, KILN_E_SHAPE, "%s: input \"%s\" has %lld rows but input \"%s\" has %lld",
                            what, m->layers[m->inputs[i]].name, (long long)d->x[i]->rows,
                            m->layers[m->inputs[0]].name, (long long)x0->rows);
  for (int k = 0; k < d->n_y; k++)
    if (d->y[k]->rows != x0->rows) {
      if (d->n_y == 1 && !multi_in)
        return kiln_error_set(err, KILN_E_SHAPE, "%s: %lld rows of features but %lld rows of targets",
                              what, (long long)x0->rows, (long long)d->y[k]->rows);
      return kiln_error_set(err, KILN_E_SHAPE, "%s: targets of output \"%s\" have %lld rows but the inputs have %lld",
                            what, m->layers[m->outs[k].node].name, (long long)d->y[k]->rows,
                            (long long)x0->rows);
    }
  for (int i = 0; i < d->n_x; i++) {
    int64_t r, c;
    if (kiln_matrix_find_nonfinite(d->x[i], &r, &c))
      return kiln_error_set(err, KILN_E_RANGE,
                            "%s: feature at row %lld, column %lld%s%s%s is NaN or infinite", what,
                            (long long)r, (long long)c, multi_in ? " of input \"" : "",
                            multi_in ? m->layers[m->inputs[i]].name : "", multi_in ? "\"" : "");
  }
  /* Which nodes carry CSR rows with this data: only Dense and Concatenate take them. */
  char *sparse = calloc((size_t)m->n_layers, 1);
  if (!sparse) return kiln_error_set(err, KILN_E_NOMEM, "%s: out of memory", what);
  for (int i = 0; i < d->n_x; i++) sparse[m->inputs[i]] = (char)kiln_matrix_is_sparse(d->x[i]);
  for (int i = 0; i < m->n_layers && !s; i++) {
    kiln_layer *l = &m->layers[i];
    if (!l->active || l->kind == KILN_LAYER_INPUT) continue;
    int fed = 0;
    for (int j = 0; j < l->n_inputs; j++) fed |= sparse[l->inputs[j]];
    if (!fed) continue;
    if (l->kind == KILN_LAYER_CONCATENATE) sparse[i] = 1;
    else if (l->kind != KILN_LAYER_DENSE)
      s = kiln_error_set(err, KILN_E_UNSUPPORTED,
                         "%s: layer \"%s\" cannot take sparse (CSR) input; only Dense and "
                         "Concatenate can", what, l->name);
  }
  for (int k = 0; k < m->n_outs && !s; k++)
    if (sparse[m->outs[k].node])
      s = kiln_error_set(err, KILN_E_UNSUPPORTED,
                         "%s: output \"%s\" would be sparse (CSR) rows; give its inputs dense "
                         "rows or put a Dense layer after it", what, m->layers[m->outs[k].node].name);
  free(sparse);
  if (s) return s;
  for (int k = 0; k < d->n_y; k++) {
    s = kiln_loss_check_targets(m->outs[k].loss, d->y[k], m->layers[m->outs[k].node].out_features,
                                err);
    if (s) {
      if (d->n_y > 1)
        return kiln_error_prefix(err, "%s: output \"%s\"", what, m->layers[m->outs[k].node].name);
      return kiln_error_prefix(err, "%s", what);
    }
  }
  for (int i = 0; i < m->n_layers; i++) {
    kiln_layer *l = &m->layers[i];
    int upstream = 0;
    for (int j = 0; j < l->n_inputs; j++) upstream |= m->layers[l->inputs[j]].needs_grad;
    switch (l->kind) {
      case KILN_LAYER_DENSE: l->needs_grad = 1; break;
      case KILN_LAYER_DROPOUT:
      case KILN_LAYER_CONCATENATE: l->needs_grad = upstream; break;
      case KILN_LAYER_CUSTOM: l->needs_grad = upstream || l->custom->n_weights > 0; break;
      default: l->needs_grad = 0; break; /* Input */
    }
    l->needs_grad &= l->active;
  }
  return kiln_model_reserve(m, batch, err);
}

/* Runs rows [begin, end) of the data through the model in inference mode;
 * accumulates the losses and updates the metrics. */
kiln_status kiln_run_eval(kiln_model *m, const io_data *d, int64_t begin, int64_t end,
                          int64_t batch, double *loss_out, double *per_output,
                          kiln_error *err) {
  feed f;
  kiln_status s = kiln_feed_init(&f, d, batch, err);
  if (s) return s;
  for (int k = 0; k < m->n_outs; k++)
    for (int i = 0; i < m->outs[k].n_metrics; i++)
      m->outs[k].metrics[i]->reset_state(m->outs[k].metrics[i]);
  double total = 0, sums[KILN_MAX_IO] = {0}, lk[KILN_MAX_IO];
  const float *yt[KILN_MAX_IO];
  int64_t yc[KILN_MAX_IO];
  for (int64_t b = begin; b < end; b += batch) {
    int64_t rows = end - b < batch ? end - b : batch;
    kiln_feed_gather(&f, m, NULL, b, rows);
    s = kiln_graph_forward(m, rows, 0, err);
    if (s) break;
    for (int k = 0; k < m->n_outs; k++) {
      yt[k] = d->y[k]->values + b * d->y[k]->cols;
      yc[k] = d->y[k]->cols;
    }
    total += rows * kiln_outputs_loss(m, rows, yt, yc, lk, 0);
    for (int k = 0; k < m->n_outs; k++) {
      kiln_output *o = &m->outs[k];
      const kiln_layer *l = &m->layers[o->node];
      sums[k] += rows * lk[k];
      for (int i = 0; i < o->n_metrics; i++)
        o->metrics[i]->update_state(o->metrics[i], yt[k], yc[k], l->out, l->out_features, rows);
    }
  }
  kiln_feed_free(&f);
  if (s) return s;
  *loss_out = total / (double)(end - begin) + kiln_regularization(m, 0);
  for (int k = 0; k < m->n_outs; k++) per_output[k] = sums[k] / (double)(end - begin);
  return KILN_OK;
}

void kiln_logs_fill(kiln_model *m, kiln_logs *logs, double loss, const double *per_output,
                    int val) {
  if (!val) logs->n = 0;
  logs->keys[logs->n] = val ? "val_loss" : "loss";
  logs->values[logs->n++] = loss;
  if (m->n_outs > 1)
    for (int k = 0; k < m->n_outs && logs->n < KILN_LOGS_MAX; k++) {
      const char *key = val ? m->outs[k].val_loss_key : m->outs[k].loss_key;
      logs->keys[logs->n] = key ? key : "?";
      logs->values[logs->n++] = per_output[k];
    }
  for (int k = 0; k < m->n_outs; k++) {
    kiln_output *o = &m->outs[k];
    for (int i = 0; i < o->n_metrics && logs->n < KILN_LOGS_MAX; i++) {
      const char *key = val ? o->val_metric_keys[i] : o->metric_keys[i];
      logs->keys[logs->n] = key ? key : "?";
      logs->values[logs->n++] = o->metrics[i]->result(o->metrics[i]);
    }
  }
}

kiln_io kiln_io_one(const kiln_matrix *x) {
  kiln_io io;
  memset(&io, 0, sizeof io);
  io.n = 1;
  io.data[0] = x;
  return io;
}

/* kiln trainer — the fit loop over epochs and mini-batches. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "custom_layer.h"
#include "model_internal.h"
#include "progress.h"

void kiln_fit_options_init(kiln_fit_options *opt) {
  memset(opt, 0, sizeof *opt);
  opt->epochs = 1;
  opt->batch_size = 32;
  opt->shuffle = 1;
}

double kiln_logs_get(const kiln_logs *logs, const char *key) {
  for (int i = 0; i < logs->n; i++)
    if (strcmp(logs->keys[i], key) == 0) return logs->values[i];
  return NAN;
}

static kiln_status history_append(kiln_history *h, const kiln_logs *logs, kiln_error *err) {
  if (!h) return KILN_OK;
  if (h->epochs == 0 && h->n_keys == 0) {
    h->keys = calloc((size_t)logs->n, sizeof(char *));
    if (!h->keys) return kiln_error_set(err, KILN_E_NOMEM, "history: out of memory");
    for (int i = 0; i < logs->n; i++) {
      h->keys[i] = strdup(logs->keys[i]);
      if (!h->keys[i]) return kiln_error_set(err, KILN_E_NOMEM, "history: out of memory");
      h->n_keys++;
    }
  }
  double *v = realloc(h->values, (size_t)(h->epochs + 1) * (size_t)h->n_keys * sizeof(double));
  if (!v) return kiln_error_set(err, KILN_E_NOMEM, "history: out of memory");
  h->values = v;
  for (int k = 0; k < h->n_keys; k++) v[h->epochs * h->n_keys + k] = kiln_logs_get(logs, h->keys[k]);
  h->epochs++;
  return KILN_OK;
}

/* Calls hook on every callback in order; stops at the first kiln_model_fail. */
#define EACH_CALLBACK(opt, hook, ...)                                             \
  for (int cb_ = 0; cb_ < (opt)->n_callbacks && m->fail_status == KILN_OK; cb_++) \
    if ((opt)->callbacks[cb_].hook)                                               \
      (opt)->callbacks[cb_].hook((opt)->callbacks[cb_].ctx, __VA_ARGS__)

/* The failure a callback reported with kiln_model_fail, as fit's status. */
static kiln_status callback_failure(const kiln_model *m, kiln_error *err) {
  return kiln_error_set(err, m->fail_status, "%s", m->fail_message);
}

kiln_status kiln_model_fit_io(kiln_model *m, const kiln_io *x, const kiln_io *y,
                              const kiln_fit_options *user_opt, kiln_history *history,
                              kiln_error *err) {
  kiln_fit_options defaults;
  if (!user_opt) {
    kiln_fit_options_init(&defaults);
    user_opt = &defaults;
  }
  if (user_opt->epochs <= 0)
    return kiln_error_set(err, KILN_E_INVALID, "fit: epochs must be positive, got %d",
                          user_opt->epochs);
  if (user_opt->initial_epoch < 0)
    return kiln_error_set(err, KILN_E_INVALID, "fit: initial_epoch must be >= 0, got %d",
                          user_opt->initial_epoch);
  if (!(user_opt->validation_split >= 0.0 && user_opt->validation_split < 1.0))
    return kiln_error_set(err, KILN_E_INVALID, "fit: validation_split must be in [0, 1), got %g",
                          user_opt->validation_split);
  if ((user_opt->validation_x == NULL) != (user_opt->validation_y == NULL))
    return kiln_error_set(err, KILN_E_INVALID,
                          "fit: validation_x and validation_y must be given together");
  if ((user_opt->validation_inputs == NULL) != (user_opt->validation_targets == NULL))
    return kiln_error_set(err, KILN_E_INVALID,
                          "fit: validation_inputs and validation_targets must be given together");
  if (user_opt->validation_x && user_opt->validation_inputs)
    return kiln_error_set(err, KILN_E_INVALID,
                          "fit: give validation_x/validation_y or validation_inputs/"
                          "validation_targets, not both");
  int64_t batch = user_opt->batch_size;
  kiln_status s = kiln_check_compiled(m, batch, "fit", err);
  if (s) return s;
  if (!y) return kiln_error_set(err, KILN_E_INVALID, "fit: no target data given");
  io_data d, vd;
  if ((s = kiln_resolve_io(m, x, y, "fit", &d, err))) return s;
  if ((s = kiln_fit_prepare(m, &d, batch, "fit", err))) return s;
  const io_data *val = NULL;
  int64_t n_train = d.x[0]->rows, val_begin = 0, val_end = 0;
  if (user_opt->validation_x || user_opt->validation_inputs) {
    kiln_io vxi = kiln_io_one(user_opt->validation_x), vyi = kiln_io_one(user_opt->validation_y);
    const kiln_io *vx = user_opt->validation_x ? &vxi : user_opt->validation_inputs;
    const kiln_io *vy = user_opt->validation_x ? &vyi : user_opt->validation_targets;
    if ((s = kiln_resolve_io(m, vx, vy, "fit: validation data", &vd, err))) return s;
    if ((s = kiln_fit_prepare(m, &vd, batch, "fit: validation data", err))) return s;
    val = &vd;
    val_end = vd.x[0]->rows;
  } else if (user_opt->validation_split > 0.0) {
    n_train = (int64_t)floor((double)d.x[0]->rows * (1.0 - user_opt->validation_split));
    if (n_train <= 0 || n_train >= d.x[0]->rows)
      return kiln_error_set(err, KILN_E_INVALID,
                            "fit: validation_split %g of %lld rows leaves an empty split",
                            user_opt->validation_split, (long long)d.x[0]->rows);
    val = &d;
    val_begin = n_train;
    val_end = d.x[0]->rows;
  }

  /* The progress display is the first callback, as in Keras. */
  kiln_callback *cbs = calloc((size_t)user_opt->n_callbacks + 1, sizeof *cbs);
  int64_t *idx = malloc((size_t)n_train * sizeof(int64_t));
  float *ybatch[KILN_MAX_IO] = {NULL};
  int64_t yc[KILN_MAX_IO];
  int ok = cbs && idx;
  for (int k = 0; k < m->n_outs; k++) {
    yc[k] = d.y[k]->cols;
    ybatch[k] = malloc((size_t)(batch * yc[k]) * sizeof(float));
    ok = ok && ybatch[k];
  }
  feed f;
  memset(&f, 0, sizeof f);
  kiln_progress progress;
  if (ok) s = kiln_feed_init(&f, &d, batch, err);
  if (!ok || s) {
    free(cbs);
    free(idx);
    for (int k = 0; k < m->n_outs; k++) free(ybatch[k]);
    return ok ? s : kiln_error_set(err, KILN_E_NOMEM, "fit: out of memory");
  }
  kiln_fit_options opt = *user_opt;
  int ncb = 0;
  if (opt.verbose && opt.progress) {
    kiln_progress_init(&progress, opt.progress, opt.verbose, opt.epochs);
    cbs[ncb++] = kiln_progress_callback(&progress);
  }
  for (int i = 0; i < user_opt->n_callbacks; i++) cbs[ncb++] = user_opt->callbacks[i];
  opt.callbacks = cbs;
  opt.n_callbacks = ncb;

  int64_t batches = (n_train + batch - 1) / batch;
  kiln_logs logs = {0};
  m->stop_training = 0;
  m->fail_status = KILN_OK;
  m->fail_message[0] = 0;
  int nan_stop = 0; /* a callback ended fit at a non-finite batch loss */
  EACH_CALLBACK(&opt, on_train_begin, m);
  if (m->fail_status) s = callback_failure(m, err);
  for (int epoch = opt.initial_epoch; epoch < opt.epochs && !m->stop_training && s == KILN_OK;
       epoch++) {
    EACH_CALLBACK(&opt, on_epoch_begin, m, epoch);
    if (m->fail_status) {
      s = callback_failure(m, err);
      break;
    }
    /* Each epoch's order is a fresh permutation of 0..n-1 drawn from the shuffle
     * generator alone (not of the last epoch's order), so a resumed fit whose generator
     * state was restored shuffles exactly as an uninterrupted one. */
    for (int64_t i = 0; i < n_train; i++) idx[i] = i;
    if (opt.shuffle) kiln_rng_shuffle(&m->shuffle_rng, idx, n_train);
    for (int k = 0; k < m->n_outs; k++)
      for (int i = 0; i < m->outs[k].n_metrics; i++)
        m->outs[k].metrics[i]->reset_state(m->outs[k].metrics[i]);
    double loss_sum = 0, out_sums[KILN_MAX_IO] = {0}, out_means[KILN_MAX_IO] = {0};
    double per[KILN_MAX_IO];
    int64_t seen = 0;
    for (int64_t bi = 0; bi < batches; bi++) {
      int64_t b = bi * batch, rows = n_train - b < batch ? n_train - b : batch;
      EACH_CALLBACK(&opt, on_batch_begin, m, bi, batches);
      if (m->fail_status) {
        s = callback_failure(m, err);
        break;
      }
      kiln_feed_gather(&f, m, idx, b, rows);
      for (int k = 0; k < m->n_outs; k++)
        for (int64_t i = 0; i < rows; i++)
          memcpy(ybatch[k] + i * yc[k], d.y[k]->values + idx[b + i] * yc[k],
                 (size_t)yc[k] * sizeof(float));
      double loss;
      s = kiln_loss_and_gradients(m, rows, (const float *const *)ybatch, yc, 1, &loss, per, err);
      if (s) break;
      for (int k = 0; k < m->n_outs; k++) {
        kiln_output *o = &m->outs[k];
        const kiln_layer *l = &m->layers[o->node];
        for (int i = 0; i < o->n_metrics; i++)
          o->metrics[i]->update_state(o->metrics[i], ybatch[k], yc[k], l->out, l->out_features,
                                      rows);
      }
      if (!isfinite(loss)) {
        /* No step: the callbacks see the bad loss and may stop cleanly (TerminateOnNaN). */
        int stop_before = m->stop_training;
        m->stop_training = 0;
        kiln_logs_fill(m, &logs, loss, per, 0);
        EACH_CALLBACK(&opt, on_batch_end, m, bi, batches, &logs);
        if (m->fail_status) {
          s = callback_failure(m, err);
        } else if (m->stop_training) {
          nan_stop = 1;
        } else {
          m->stop_training = stop_before;
          s = kiln_error_set(err, KILN_E_DIVERGED,
                             "fit: epoch %d, batch %lld: the loss is %s; training stopped (the "
                             "learning rate %g may be too high)",
                             epoch + 1, (long long)bi + 1, isnan(loss) ? "NaN" : "infinite",
                             m->opt.learning_rate);
        }
        break;
      }
      kiln_optimizer_step(m);
      loss_sum += loss * (double)rows;
      seen += rows;
      for (int k = 0; k < m->n_outs; k++) {
        out_sums[k] += per[k] * (double)rows;
        out_means[k] = out_sums[k] / (double)seen;
      }
      kiln_logs_fill(m, &logs, loss_sum / (double)seen, out_means, 0);
      EACH_CALLBACK(&opt, on_batch_end, m, bi, batches, &logs);
      if (m->fail_status) {
        s = callback_failure(m, err);
        break;
      }
    }
    if (s || nan_stop) break;
    kiln_logs_fill(m, &logs, loss_sum / (double)seen, out_means, 0);
    if (val) {
      kiln_logs train_logs = logs;
      double vloss, vper[KILN_MAX_IO];
      s = kiln_run_eval(m, val, val_begin, val_end, batch, &vloss, vper, err);
      if (s) break;
      logs = train_logs;
      kiln_logs_fill(m, &logs, vloss, vper, 1);
    }
    s = history_append(history, &logs, err);
    if (s) break;
    m->epoch = epoch + 1;
    EACH_CALLBACK(&opt, on_epoch_end, m, epoch, &logs);
    if (m->fail_status) s = callback_failure(m, err);
  }
  if (s == KILN_OK) {
    EACH_CALLBACK(&opt, on_train_end, m, &logs);
    if (m->fail_status) s = callback_failure(m, err);
  }
  if (opt.verbose && opt.progress && s) kiln_progress_abort(&progress);
  kiln_feed_free(&f);
  free(idx);
  for (int k = 0; k < m->n_outs; k++) free(ybatch[k]);
  free(cbs);
  return s;
}

kiln_status kiln_model_fit(kiln_model *m, const kiln_matrix *x, const kiln_matrix *y,
                           const kiln_fit_options *opt, kiln_history *history, kiln_error *err) {
  kiln_io xi = kiln_io_one(x), yi = kiln_io_one(y);
  return kiln_model_fit_io(m, &xi, &yi, opt, history, err);
}

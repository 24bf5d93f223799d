/* kiln trainer — the forward and backward passes and the compile/fit/evaluate/predict
 * loop over mini-batches. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

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

/* A batch of rows gathered from the caller's x: dense rows land in the Input
 * layer's buffer, CSR rows in `csr` (arrays sized for the largest batch). */
typedef struct batch_source {
  const kiln_matrix *x;
  kiln_matrix csr;
  int64_t cap_nnz;
} batch_source;

static kiln_status batch_source_init(batch_source *b, const kiln_matrix *x, int64_t batch,
                                     kiln_error *err) {
  memset(b, 0, sizeof *b);
  b->x = x;
  if (!kiln_matrix_is_sparse(x)) return KILN_OK;
  int64_t max_row = 0;
  for (int64_t r = 0; r < x->rows; r++) {
    int64_t n = x->row_ptr[r + 1] - x->row_ptr[r];
    max_row = n > max_row ? n : max_row;
  }
  int64_t total = kiln_matrix_nnz(x);
  b->cap_nnz = batch * max_row < total ? batch * max_row : total;
  b->csr.cols = x->cols;
  b->csr.row_ptr = malloc((size_t)(batch + 1) * sizeof(int64_t));
  b->csr.col_idx = malloc((size_t)(b->cap_nnz ? b->cap_nnz : 1) * sizeof(int32_t));
  if (x->values) b->csr.values = malloc((size_t)(b->cap_nnz ? b->cap_nnz : 1) * sizeof(float));
  if (!b->csr.row_ptr || !b->csr.col_idx || (x->values && !b->csr.values)) {
    kiln_matrix_free(&b->csr);
    return kiln_error_set(err, KILN_E_NOMEM, "sparse batch buffer: out of memory");
  }
  return KILN_OK;
}

static void batch_gather(batch_source *b, kiln_layer *input, const int64_t *idx, int64_t begin,
                         int64_t rows) {
  const kiln_matrix *x = b->x;
  if (!kiln_matrix_is_sparse(x)) {
    input->sparse = NULL;
    for (int64_t i = 0; i < rows; i++) {
      int64_t r = idx ? idx[begin + i] : begin + i;
      memcpy(input->out + i * x->cols, x->values + r * x->cols, (size_t)x->cols * sizeof(float));
    }
    return;
  }
  int64_t at = 0;
  b->csr.row_ptr[0] = 0;
  for (int64_t i = 0; i < rows; i++) {
    int64_t r = idx ? idx[begin + i] : begin + i;
    int64_t s = x->row_ptr[r], n = x->row_ptr[r + 1] - s;
    memcpy(b->csr.col_idx + at, x->col_idx + s, (size_t)n * sizeof(int32_t));
    if (x->values) memcpy(b->csr.values + at, x->values + s, (size_t)n * sizeof(float));
    at += n;
    b->csr.row_ptr[i + 1] = at;
  }
  b->csr.rows = rows;
  input->sparse = &b->csr;
}

static kiln_node input_node(const kiln_model *m) { return 0; }

static void forward(kiln_model *m, int64_t rows, int training) {
  for (int i = 0; i < m->n_layers; i++) {
    kiln_layer *l = &m->layers[i];
    if (l->kind == KILN_LAYER_INPUT) continue;
    kiln_layer *in = &m->layers[l->inputs[0]];
    int64_t cols = l->out_features;
    if (l->kind == KILN_LAYER_DENSE) {
      if (in->sparse) kiln_dense_forward_csr(l, in->sparse, l->out);
      else kiln_dense_forward(l, in->out, rows, l->out);
      if (i == m->output) memcpy(l->logits, l->out, (size_t)(rows * cols) * sizeof(float));
      kiln_activation_forward(l->activation, l->out, rows, cols);
    } else if (l->kind == KILN_LAYER_DROPOUT) {
      int64_t n = rows * cols;
      if (!training || l->rate == 0.0f) {
        memcpy(l->out, in->out, (size_t)n * sizeof(float));
        continue;
      }
      float keep = 1.0f - l->rate, scale = 1.0f / keep;
      for (int64_t k = 0; k < n; k++) {
        l->mask[k] = kiln_rng_uniform(&m->dropout_rng) < keep ? scale : 0.0f;
        l->out[k] = in->out[k] * l->mask[k];
      }
    }
  }
}

/* Expects the output layer's grad to hold dL/d(output), or dL/d(logits) when fused. */
static void backward(kiln_model *m, int64_t rows) {
  for (int i = 0; i < m->n_layers; i++)
    if (i != m->output && m->layers[i].needs_grad)
      memset(m->layers[i].grad, 0, (size_t)(rows * m->layers[i].out_features) * sizeof(float));
  int fused = kiln_loss_fuses(m->loss, m->layers[m->output].activation);
  for (int i = m->n_layers - 1; i >= 0; i--) {
    kiln_layer *l = &m->layers[i];
    if (l->kind == KILN_LAYER_INPUT) continue;
    kiln_layer *in = &m->layers[l->inputs[0]];
    if (l->kind == KILN_LAYER_DENSE) {
      if (!(i == m->output && fused))
        kiln_activation_backward(l->activation, l->out, l->grad, rows, l->out_features);
      if (in->sparse) kiln_dense_backward_params_csr(l, in->sparse, l->grad);
      else kiln_dense_backward_params(l, in->out, rows, l->grad);
      if (in->needs_grad) kiln_dense_backward_input(l, l->grad, rows, in->grad);
    } else if (l->kind == KILN_LAYER_DROPOUT && in->needs_grad) {
      int64_t n = rows * l->out_features;
      if (l->rate == 0.0f)
        for (int64_t k = 0; k < n; k++) in->grad[k] += l->grad[k];
      else
        for (int64_t k = 0; k < n; k++) in->grad[k] += l->grad[k] * l->mask[k];
    }
  }
}

/* Forward, loss, backward and the regularization penalty for the batch already in
 * the Input layer; leaves the gradients in the layers and returns the loss. */
static double loss_and_gradients(kiln_model *m, int64_t rows, const float *y, int64_t yc,
                                 int training) {
  kiln_layer *out = &m->layers[m->output];
  forward(m, rows, training);
  double loss = kiln_loss_compute(m->loss, kiln_loss_fuses(m->loss, out->activation), out->out,
                                  out->logits, y, yc, rows, out->out_features, out->grad);
  backward(m, rows);
  return loss + kiln_regularization(m, 1);
}

static kiln_status prepare(kiln_model *m, const kiln_matrix *x, const kiln_matrix *y,
                           int64_t batch, const char *what, kiln_error *err) {
  if (!m->compiled)
    return kiln_error_set(err, KILN_E_INVALID, "%s: compile the model first", what);
  if (batch <= 0)
    return kiln_error_set(err, KILN_E_INVALID, "%s: batch_size must be positive, got %lld", what,
                          (long long)batch);
  const kiln_layer *input = &m->layers[input_node(m)];
  if (x->cols != input->out_features)
    return kiln_error_set(err, KILN_E_SHAPE,
                          "%s: the data has %lld features but input layer \"%s\" expects %lld",
                          what, (long long)x->cols, input->name, (long long)input->out_features);
  if (x->rows == 0) return kiln_error_set(err, KILN_E_INVALID, "%s: the data has no rows", what);
  if (y && y->rows != x->rows)
    return kiln_error_set(err, KILN_E_SHAPE, "%s: %lld rows of features but %lld rows of targets",
                          what, (long long)x->rows, (long long)y->rows);
  int64_t r, c;
  if (kiln_matrix_find_nonfinite(x, &r, &c))
    return kiln_error_set(err, KILN_E_RANGE,
                          "%s: feature at row %lld, column %lld is NaN or infinite", what,
                          (long long)r, (long long)c);
  if (kiln_matrix_is_sparse(x)) {
    for (int i = 0; i < m->n_layers; i++)
      if (m->layers[i].n_inputs && m->layers[i].inputs[0] == input_node(m) &&
          m->layers[i].kind != KILN_LAYER_DENSE)
        return kiln_error_set(err, KILN_E_UNSUPPORTED,
                              "%s: layer \"%s\" cannot take sparse (CSR) input; only Dense can",
                              what, m->layers[i].name);
  }
  if (y) {
    kiln_status s = kiln_loss_check_targets(m->loss, y, m->layers[m->output].out_features, err);
    if (s) return kiln_error_prefix(err, "%s", what);
  }
  for (int i = 0; i < m->n_layers; i++) {
    kiln_layer *l = &m->layers[i];
    l->needs_grad = l->kind == KILN_LAYER_DENSE ||
                    (l->kind == KILN_LAYER_DROPOUT && m->layers[l->inputs[0]].needs_grad);
  }
  return kiln_model_reserve(m, batch, err);
}

/* Runs rows [begin, end) of (x, y) (or idx[begin..end)) through the model in
 * inference mode; accumulates the loss and updates the metrics. */
static kiln_status run_eval(kiln_model *m, const kiln_matrix *x, const kiln_matrix *y,
                            int64_t begin, int64_t end, int64_t batch, double *loss_out,
                            kiln_error *err) {
  batch_source src;
  kiln_status s = batch_source_init(&src, x, batch, err);
  if (s) return s;
  kiln_layer *out = &m->layers[m->output];
  int fused = kiln_loss_fuses(m->loss, out->activation);
  for (int i = 0; i < m->n_metrics; i++) m->metrics[i]->reset_state(m->metrics[i]);
  double total = 0;
  for (int64_t b = begin; b < end; b += batch) {
    int64_t rows = end - b < batch ? end - b : batch;
    batch_gather(&src, &m->layers[input_node(m)], NULL, b, rows);
    forward(m, rows, 0);
    const float *yt = y->values + b * y->cols;
    total += rows * kiln_loss_compute(m->loss, fused, out->out, out->logits, yt, y->cols, rows,
                                      out->out_features, out->grad);
    for (int i = 0; i < m->n_metrics; i++)
      m->metrics[i]->update_state(m->metrics[i], yt, y->cols, out->out, out->out_features, rows);
  }
  kiln_matrix_free(&src.csr);
  *loss_out = total / (double)(end - begin) + kiln_regularization(m, 0);
  return KILN_OK;
}

static void logs_fill(kiln_model *m, kiln_logs *logs, double loss, int val) {
  if (!val) logs->n = 0;
  if (val && !m->val_keys[0]) {
    m->val_keys[0] = strdup("val_loss");
    for (int i = 0; i < m->n_metrics; i++) {
      size_t len = strlen(m->metrics[i]->name) + 5;
      m->val_keys[i + 1] = malloc(len);
      if (m->val_keys[i + 1]) snprintf(m->val_keys[i + 1], len, "val_%s", m->metrics[i]->name);
    }
  }
  logs->keys[logs->n] = val ? (m->val_keys[0] ? m->val_keys[0] : "val_loss") : "loss";
  logs->values[logs->n++] = loss;
  for (int i = 0; i < m->n_metrics && logs->n < KILN_LOGS_MAX; i++) {
    logs->keys[logs->n] = val ? (m->val_keys[i + 1] ? m->val_keys[i + 1] : "val_?")
                              : m->metrics[i]->name;
    logs->values[logs->n++] = m->metrics[i]->result(m->metrics[i]);
  }
}

kiln_status kiln_model_evaluate(kiln_model *m, const kiln_matrix *x, const kiln_matrix *y,
                                int64_t batch_size, kiln_logs *out, kiln_error *err) {
  kiln_status s = prepare(m, x, y, batch_size, "evaluate", err);
  if (s) return s;
  double loss;
  s = run_eval(m, x, y, 0, x->rows, batch_size, &loss, err);
  if (s) return s;
  logs_fill(m, out, loss, 0);
  return KILN_OK;
}

kiln_status kiln_model_predict(kiln_model *m, const kiln_matrix *x, int64_t batch_size,
                               kiln_matrix *out, kiln_error *err) {
  memset(out, 0, sizeof *out);
  if (!m->compiled && m->n_layers > 1 && !m->output_set) {
    m->output = m->n_layers - 1;
    m->output_set = 1;
  }
  if (!m->compiled) {
    /* predict works on an uncompiled model, as in Keras. */
    kiln_optimizer opt;
    kiln_optimizer_init(&opt, KILN_OPTIMIZER_SGD);
    kiln_status s = kiln_model_compile(m, &opt, KILN_LOSS_MEAN_SQUARED_ERROR, NULL, 0, err);
    if (s) return s;
  }
  kiln_status s = prepare(m, x, NULL, batch_size, "predict", err);
  if (s) return s;
  kiln_layer *o = &m->layers[m->output];
  s = kiln_matrix_alloc(out, x->rows, o->out_features, err);
  if (s) return s;
  batch_source src;
  s = batch_source_init(&src, x, batch_size, err);
  if (s) {
    kiln_matrix_free(out);
    return s;
  }
  for (int64_t b = 0; b < x->rows; b += batch_size) {
    int64_t rows = x->rows - b < batch_size ? x->rows - b : batch_size;
    batch_gather(&src, &m->layers[input_node(m)], NULL, b, rows);
    forward(m, rows, 0);
    memcpy(out->values + b * o->out_features, o->out, (size_t)(rows * o->out_features) * sizeof(float));
  }
  kiln_matrix_free(&src.csr);
  return KILN_OK;
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

kiln_status kiln_model_fit(kiln_model *m, const kiln_matrix *x, const kiln_matrix *y,
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
  int64_t batch = user_opt->batch_size;
  kiln_status s = prepare(m, x, y, batch, "fit", err);
  if (s) return s;
  const kiln_matrix *vx = user_opt->validation_x, *vy = user_opt->validation_y;
  int64_t n_train = x->rows, val_begin = 0, val_end = 0;
  if (vx) {
    s = prepare(m, vx, vy, batch, "fit: validation data", err);
    if (s) return s;
    val_end = vx->rows;
  } else if (user_opt->validation_split > 0.0) {
    n_train = (int64_t)floor((double)x->rows * (1.0 - user_opt->validation_split));
    if (n_train <= 0 || n_train >= x->rows)
      return kiln_error_set(err, KILN_E_INVALID,
                            "fit: validation_split %g of %lld rows leaves an empty split",
                            user_opt->validation_split, (long long)x->rows);
    vx = x;
    vy = y;
    val_begin = n_train;
    val_end = x->rows;
  }

  /* The progress display is the first callback, as in Keras. */
  kiln_callback *cbs = calloc((size_t)user_opt->n_callbacks + 1, sizeof *cbs);
  int64_t *idx = malloc((size_t)n_train * sizeof(int64_t));
  int64_t yc = y->cols;
  float *ybatch = malloc((size_t)(batch * yc) * sizeof(float));
  batch_source src;
  memset(&src, 0, sizeof src);
  kiln_progress progress;
  if (!cbs || !idx || !ybatch) {
    free(cbs);
    free(idx);
    free(ybatch);
    return kiln_error_set(err, KILN_E_NOMEM, "fit: out of memory");
  }
  s = batch_source_init(&src, x, batch, err);
  if (s) {
    free(cbs);
    free(idx);
    free(ybatch);
    return s;
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

  kiln_layer *input = &m->layers[input_node(m)];
  kiln_layer *out = &m->layers[m->output];
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
    for (int i = 0; i < m->n_metrics; i++) m->metrics[i]->reset_state(m->metrics[i]);
    double loss_sum = 0;
    int64_t seen = 0;
    for (int64_t bi = 0; bi < batches; bi++) {
      int64_t b = bi * batch, rows = n_train - b < batch ? n_train - b : batch;
      batch_gather(&src, input, idx, b, rows);
      for (int64_t i = 0; i < rows; i++)
        memcpy(ybatch + i * yc, y->values + idx[b + i] * yc, (size_t)yc * sizeof(float));
      double loss = loss_and_gradients(m, rows, ybatch, yc, 1);
      for (int i = 0; i < m->n_metrics; i++)
        m->metrics[i]->update_state(m->metrics[i], ybatch, yc, out->out, out->out_features, rows);
      if (!isfinite(loss)) {
        /* No step: the callbacks see the bad loss and may stop cleanly (TerminateOnNaN). */
        int stop_before = m->stop_training;
        m->stop_training = 0;
        logs_fill(m, &logs, loss, 0);
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
      logs_fill(m, &logs, loss_sum / (double)seen, 0);
      EACH_CALLBACK(&opt, on_batch_end, m, bi, batches, &logs);
      if (m->fail_status) {
        s = callback_failure(m, err);
        break;
      }
    }
    if (s || nan_stop) break;
    logs_fill(m, &logs, loss_sum / (double)seen, 0);
    if (vx) {
      kiln_logs train_logs = logs;
      double vloss;
      s = run_eval(m, vx, vy, val_begin, val_end, batch, &vloss, err);
      if (s) break;
      logs = train_logs;
      logs_fill(m, &logs, vloss, 1);
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
  kiln_matrix_free(&src.csr);
  free(idx);
  free(ybatch);
  free(cbs);
  return s;
}

kiln_status kiln_model_gradients(kiln_model *m, const kiln_matrix *x, const kiln_matrix *y,
                                 int training, double *loss, kiln_error *err) {
  kiln_status s = prepare(m, x, y, x->rows, "gradients", err);
  if (s) return s;
  batch_source src;
  s = batch_source_init(&src, x, x->rows, err);
  if (s) return s;
  batch_gather(&src, &m->layers[input_node(m)], NULL, 0, x->rows);
  *loss = loss_and_gradients(m, x->rows, y->values, y->cols, training);
  kiln_matrix_free(&src.csr);
  return KILN_OK;
}

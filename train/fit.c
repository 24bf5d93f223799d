/* kiln trainer — the forward and backward passes and the compile/fit/evaluate/predict
 * loop over mini-batches. */
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

/* The data of one call, in the model's input and output order. */
typedef struct io_data {
  int n_x, n_y;
  const kiln_matrix *x[KILN_MAX_IO];
  const kiln_matrix *y[KILN_MAX_IO];
} io_data;

/* One batch source per model input. */
typedef struct feed {
  int n;
  batch_source src[KILN_MAX_IO];
} feed;

static void feed_free(feed *f) {
  for (int i = 0; i < f->n; i++) kiln_matrix_free(&f->src[i].csr);
  f->n = 0;
}

static kiln_status feed_init(feed *f, const io_data *d, int64_t batch, kiln_error *err) {
  memset(f, 0, sizeof *f);
  for (int i = 0; i < d->n_x; i++) {
    kiln_status s = batch_source_init(&f->src[i], d->x[i], batch, err);
    if (s) {
      feed_free(f);
      return s;
    }
    f->n = i + 1;
  }
  return KILN_OK;
}

static void feed_gather(feed *f, kiln_model *m, const int64_t *idx, int64_t begin, int64_t rows) {
  for (int i = 0; i < f->n; i++)
    batch_gather(&f->src[i], &m->layers[m->inputs[i]], idx, begin, rows);
}

/* Keras' Concatenate (axis -1). When an input is CSR the result is the CSR
 * concatenation (dense inputs contribute their non-zeros), so that the Dense after
 * it keeps the sparse path: the ticket model's 20,100-wide multi-hot row costs one
 * kernel-row addition per one, not 20,100 multiply-adds per unit. */
static kiln_status concat_forward(kiln_model *m, kiln_layer *l, int64_t rows, kiln_error *err) {
  int any_sparse = 0, need_values = 0;
  int64_t need = 0;
  for (int j = 0; j < l->n_inputs; j++) {
    const kiln_layer *in = &m->layers[l->inputs[j]];
    if (in->sparse) {
      any_sparse = 1;
      need += in->sparse->row_ptr[rows];
      need_values |= in->sparse->values != NULL;
    } else {
      need += rows * in->out_features;
      need_values = 1;
    }
  }
  int64_t width = l->out_features;
  if (!any_sparse) {
    l->sparse = NULL;
    for (int64_t r = 0; r < rows; r++) {
      int64_t off = 0;
      for (int j = 0; j < l->n_inputs; j++) {
        const kiln_layer *in = &m->layers[l->inputs[j]];
        int64_t w = in->out_features;
        memcpy(l->out + r * width + off, in->out + r * w, (size_t)w * sizeof(float));
        off += w;
      }
    }
    return KILN_OK;
  }
  if (rows + 1 > l->csr_row_cap) {
    int64_t *p = realloc(l->csr.row_ptr, (size_t)(rows + 1) * sizeof *p);
    if (!p) return kiln_error_set(err, KILN_E_NOMEM, "%s: out of memory", l->name);
    l->csr.row_ptr = p;
    l->csr_row_cap = rows + 1;
  }
  if (need > l->csr_cap || (need_values && !l->csr_values)) {
    int64_t cap = need > l->csr_cap ? need : l->csr_cap;
    int32_t *ci = realloc(l->csr.col_idx, (size_t)(cap ? cap : 1) * sizeof *ci);
    if (!ci) return kiln_error_set(err, KILN_E_NOMEM, "%s: out of memory", l->name);
    l->csr.col_idx = ci;
    if (need_values || l->csr_values) {
      float *v = realloc(l->csr_values, (size_t)(cap ? cap : 1) * sizeof *v);
      if (!v) return kiln_error_set(err, KILN_E_NOMEM, "%s: out of memory", l->name);
      l->csr_values = v;
    }
    l->csr_cap = cap;
  }
  int64_t at = 0;
  l->csr.row_ptr[0] = 0;
  for (int64_t r = 0; r < rows; r++) {
    int64_t off = 0;
    for (int j = 0; j < l->n_inputs; j++) {
      const kiln_layer *in = &m->layers[l->inputs[j]];
      int64_t w = in->out_features;
      if (in->sparse) {
        const kiln_matrix *x = in->sparse;
        for (int64_t k = x->row_ptr[r]; k < x->row_ptr[r + 1]; k++) {
          l->csr.col_idx[at] = (int32_t)(x->col_idx[k] + off);
          if (need_values) l->csr_values[at] = x->values ? x->values[k] : 1.0f;
          at++;
        }
      } else {
        const float *v = in->out + r * w;
        for (int64_t c = 0; c < w; c++)
          if (v[c] != 0.0f) {
            l->csr.col_idx[at] = (int32_t)(c + off);
            l->csr_values[at++] = v[c];
          }
      }
      off += w;
    }
    l->csr.row_ptr[r + 1] = at;
  }
  l->csr.rows = rows;
  l->csr.cols = width;
  l->csr.values = need_values ? l->csr_values : NULL;
  l->csr.borrowed = 1;
  l->sparse = &l->csr;
  return KILN_OK;
}

static kiln_status forward(kiln_model *m, int64_t rows, int training, kiln_error *err) {
  for (int i = 0; i < m->n_layers; i++) {
    kiln_layer *l = &m->layers[i];
    if (l->kind == KILN_LAYER_INPUT || !l->active) continue;
    kiln_layer *in = &m->layers[l->inputs[0]];
    int64_t cols = l->out_features;
    switch (l->kind) {
      case KILN_LAYER_DENSE:
        if (in->sparse) kiln_dense_forward_csr(l, in->sparse, l->out);
        else kiln_dense_forward(l, in->out, rows, l->out);
        if (l->fused) memcpy(l->logits, l->out, (size_t)(rows * cols) * sizeof(float));
        kiln_activation_forward(l->activation, l->out, rows, cols);
        break;
      case KILN_LAYER_DROPOUT: {
        int64_t n = rows * cols;
        if (!training || l->rate == 0.0f) {
          memcpy(l->out, in->out, (size_t)n * sizeof(float));
          break;
        }
        float keep = 1.0f - l->rate, scale = 1.0f / keep;
        for (int64_t k = 0; k < n; k++) {
          l->mask[k] = kiln_rng_uniform(&m->dropout_rng) < keep ? scale : 0.0f;
          l->out[k] = in->out[k] * l->mask[k];
        }
        break;
      }
      case KILN_LAYER_CONCATENATE: {
        kiln_status s = concat_forward(m, l, rows, err);
        if (s) return s;
        break;
      }
      case KILN_LAYER_CUSTOM: /* custom_layer.c */
        kiln_custom_forward(l->custom, in->out, rows, l->in_features, cols, training, l->out);
        break;
      default:
        break;
    }
  }
  return KILN_OK;
}

/* Expects every output layer's grad to hold its share of dL/d(output) (dL/d(logits)
 * when fused); the other layers' grads are zeroed by the caller. */
static void backward(kiln_model *m, int64_t rows) {
  for (int i = m->n_layers - 1; i >= 0; i--) {
    kiln_layer *l = &m->layers[i];
    if (l->kind == KILN_LAYER_INPUT || !l->active || !l->needs_grad) continue;
    kiln_layer *in = &m->layers[l->inputs[0]];
    switch (l->kind) {
      case KILN_LAYER_DENSE:
        if (!l->fused)
          kiln_activation_backward(l->activation, l->out, l->grad, rows, l->out_features);
        if (in->sparse) kiln_dense_backward_params_csr(l, in->sparse, l->grad);
        else kiln_dense_backward_params(l, in->out, rows, l->grad);
        if (in->needs_grad) kiln_dense_backward_input(l, l->grad, rows, in->grad);
        break;
      case KILN_LAYER_DROPOUT:
        if (in->needs_grad) {
          int64_t n = rows * l->out_features;
          if (l->rate == 0.0f)
            for (int64_t k = 0; k < n; k++) in->grad[k] += l->grad[k];
          else
            for (int64_t k = 0; k < n; k++) in->grad[k] += l->grad[k] * l->mask[k];
        }
        break;
      case KILN_LAYER_CONCATENATE: {
        int64_t width = l->out_features, off = 0;
        for (int j = 0; j < l->n_inputs; j++) {
          kiln_layer *src = &m->layers[l->inputs[j]];
          int64_t w = src->out_features;
          if (src->needs_grad)
            for (int64_t r = 0; r < rows; r++) {
              const float *g = l->grad + r * width + off;
              float *d = src->grad + r * w;
              for (int64_t c = 0; c < w; c++) d[c] += g[c];
            }
          off += w;
        }
        break;
      }
      case KILN_LAYER_CUSTOM:
        kiln_custom_backward(l->custom, in->out, l->out, l->grad, rows, l->in_features,
                             l->out_features, in->needs_grad ? in->grad : NULL);
        break;
      default:
        break;
    }
  }
}

/* Each output's loss on the batch and its weighted gradient in the output layer's
 * grad (zeroing the other grads first). Returns the weighted total. */
static double outputs_loss(kiln_model *m, int64_t rows, const float *const *y,
                           const int64_t *ycols, double *per_output, int with_grad) {
  if (with_grad)
    for (int i = 0; i < m->n_layers; i++) {
      kiln_layer *l = &m->layers[i];
      int direct_out = 0, out = 0;
      for (int k = 0; k < m->n_outs; k++) {
        out |= m->outs[k].node == i;
        direct_out |= m->outs[k].node == i && m->outs[k].direct;
      }
      /* An output fed gradient by other layers too gets its loss gradient added. */
      if (l->active && (l->needs_grad || out) && !direct_out)
        memset(l->grad, 0, (size_t)(rows * l->out_features) * sizeof(float));
    }
  double total = 0;
  for (int k = 0; k < m->n_outs; k++) {
    kiln_output *o = &m->outs[k];
    kiln_layer *l = &m->layers[o->node];
    int64_t n = rows * l->out_features;
    float *g = o->direct ? l->grad : o->scratch;
    double lk = kiln_loss_compute(o->loss, l->fused, l->out, l->logits, y[k], ycols[k], rows,
                                  l->out_features, g);
    if (with_grad) {
      float w = o->weight;
      if (o->direct) {
        if (w != 1.0f)
          for (int64_t i = 0; i < n; i++) g[i] *= w;
      } else {
        for (int64_t i = 0; i < n; i++) l->grad[i] += w * g[i];
      }
    }
    if (per_output) per_output[k] = lk;
    total += (double)o->weight * lk;
  }
  return total;
}

/* Forward, loss, backward and the regularization penalty for the batch already in
 * the Input layers; leaves the gradients in the layers and returns the loss. */
static kiln_status loss_and_gradients(kiln_model *m, int64_t rows, const float *const *y,
                                      const int64_t *ycols, int training, double *loss,
                                      double *per_output, kiln_error *err) {
  kiln_status s = forward(m, rows, training, err);
  if (s) return s;
  double total = outputs_loss(m, rows, y, ycols, per_output, 1);
  backward(m, rows);
  *loss = total + kiln_regularization(m, 1);
  return KILN_OK;
}

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

static kiln_status check_compiled(const kiln_model *m, int64_t batch, const char *what,
                                  kiln_error *err) {
  if (!m->compiled)
    return kiln_error_set(err, KILN_E_INVALID, "%s: compile the model first", what);
  if (batch <= 0)
    return kiln_error_set(err, KILN_E_INVALID, "%s: batch_size must be positive, got %lld", what,
                          (long long)batch);
  return KILN_OK;
}

static kiln_status resolve_io(const kiln_model *m, const kiln_io *x, const kiln_io *y,
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
static kiln_status prepare(kiln_model *m, const io_data *d, int64_t batch, const char *what,
                           kiln_error *err) {
  kiln_status s = check_compiled(m, batch, what, err);
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
static kiln_status run_eval(kiln_model *m, const io_data *d, int64_t begin, int64_t end,
                            int64_t batch, double *loss_out, double *per_output,
                            kiln_error *err) {
  feed f;
  kiln_status s = feed_init(&f, d, batch, err);
  if (s) return s;
  for (int k = 0; k < m->n_outs; k++)
    for (int i = 0; i < m->outs[k].n_metrics; i++)
      m->outs[k].metrics[i]->reset_state(m->outs[k].metrics[i]);
  double total = 0, sums[KILN_MAX_IO] = {0}, lk[KILN_MAX_IO];
  const float *yt[KILN_MAX_IO];
  int64_t yc[KILN_MAX_IO];
  for (int64_t b = begin; b < end; b += batch) {
    int64_t rows = end - b < batch ? end - b : batch;
    feed_gather(&f, m, NULL, b, rows);
    s = forward(m, rows, 0, err);
    if (s) break;
    for (int k = 0; k < m->n_outs; k++) {
      yt[k] = d->y[k]->values + b * d->y[k]->cols;
      yc[k] = d->y[k]->cols;
    }
    total += rows * outputs_loss(m, rows, yt, yc, lk, 0);
    for (int k = 0; k < m->n_outs; k++) {
      kiln_output *o = &m->outs[k];
      const kiln_layer *l = &m->layers[o->node];
      sums[k] += rows * lk[k];
      for (int i = 0; i < o->n_metrics; i++)
        o->metrics[i]->update_state(o->metrics[i], yt[k], yc[k], l->out, l->out_features, rows);
    }
  }
  feed_free(&f);
  if (s) return s;
  *loss_out = total / (double)(end - begin) + kiln_regularization(m, 0);
  for (int k = 0; k < m->n_outs; k++) per_output[k] = sums[k] / (double)(end - begin);
  return KILN_OK;
}

static void logs_fill(kiln_model *m, kiln_logs *logs, double loss, const double *per_output,
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

static kiln_io io_one(const kiln_matrix *x) {
  kiln_io io;
  memset(&io, 0, sizeof io);
  io.n = 1;
  io.data[0] = x;
  return io;
}

kiln_status kiln_model_evaluate_io(kiln_model *m, const kiln_io *x, const kiln_io *y,
                                   int64_t batch_size, kiln_logs *out, kiln_error *err) {
  kiln_status s = check_compiled(m, batch_size, "evaluate", err);
  if (s) return s;
  io_data d;
  if (!y) return kiln_error_set(err, KILN_E_INVALID, "evaluate: no target data given");
  if ((s = resolve_io(m, x, y, "evaluate", &d, err))) return s;
  if ((s = prepare(m, &d, batch_size, "evaluate", err))) return s;
  double loss, per[KILN_MAX_IO];
  s = run_eval(m, &d, 0, d.x[0]->rows, batch_size, &loss, per, err);
  if (s) return s;
  logs_fill(m, out, loss, per, 0);
  return KILN_OK;
}

kiln_status kiln_model_evaluate(kiln_model *m, const kiln_matrix *x, const kiln_matrix *y,
                                int64_t batch_size, kiln_logs *out, kiln_error *err) {
  kiln_io xi = io_one(x), yi = io_one(y);
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
  kiln_status s = check_compiled(m, batch_size, "predict", err);
  if (s) return s;
  io_data d;
  if ((s = resolve_io(m, x, NULL, "predict", &d, err))) return s;
  if ((s = prepare(m, &d, batch_size, "predict", err))) return s;
  int64_t total = d.x[0]->rows;
  for (int k = 0; k < m->n_outs && !s; k++)
    s = kiln_matrix_alloc(&outs[k], total, m->layers[m->outs[k].node].out_features, err);
  feed f;
  if (!s) s = feed_init(&f, &d, batch_size, err);
  if (s) {
    for (int k = 0; k < m->n_outs; k++) kiln_matrix_free(&outs[k]);
    return s;
  }
  for (int64_t b = 0; b < total && !s; b += batch_size) {
    int64_t rows = total - b < batch_size ? total - b : batch_size;
    feed_gather(&f, m, NULL, b, rows);
    s = forward(m, rows, 0, err);
    for (int k = 0; k < m->n_outs && !s; k++) {
      const kiln_layer *o = &m->layers[m->outs[k].node];
      memcpy(outs[k].values + b * o->out_features, o->out,
             (size_t)(rows * o->out_features) * sizeof(float));
    }
  }
  feed_free(&f);
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
  kiln_io xi = io_one(x);
  return kiln_model_predict_io(m, &xi, batch_size, out, err);
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
  kiln_status s = check_compiled(m, batch, "fit", err);
  if (s) return s;
  if (!y) return kiln_error_set(err, KILN_E_INVALID, "fit: no target data given");
  io_data d, vd;
  if ((s = resolve_io(m, x, y, "fit", &d, err))) return s;
  if ((s = prepare(m, &d, batch, "fit", err))) return s;
  const io_data *val = NULL;
  int64_t n_train = d.x[0]->rows, val_begin = 0, val_end = 0;
  if (user_opt->validation_x || user_opt->validation_inputs) {
    kiln_io vxi = io_one(user_opt->validation_x), vyi = io_one(user_opt->validation_y);
    const kiln_io *vx = user_opt->validation_x ? &vxi : user_opt->validation_inputs;
    const kiln_io *vy = user_opt->validation_x ? &vyi : user_opt->validation_targets;
    if ((s = resolve_io(m, vx, vy, "fit: validation data", &vd, err))) return s;
    if ((s = prepare(m, &vd, batch, "fit: validation data", err))) return s;
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
  if (ok) s = feed_init(&f, &d, batch, err);
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
      feed_gather(&f, m, idx, b, rows);
      for (int k = 0; k < m->n_outs; k++)
        for (int64_t i = 0; i < rows; i++)
          memcpy(ybatch[k] + i * yc[k], d.y[k]->values + idx[b + i] * yc[k],
                 (size_t)yc[k] * sizeof(float));
      double loss;
      s = loss_and_gradients(m, rows, (const float *const *)ybatch, yc, 1, &loss, per, err);
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
        logs_fill(m, &logs, loss, per, 0);
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
      logs_fill(m, &logs, loss_sum / (double)seen, out_means, 0);
      EACH_CALLBACK(&opt, on_batch_end, m, bi, batches, &logs);
      if (m->fail_status) {
        s = callback_failure(m, err);
        break;
      }
    }
    if (s || nan_stop) break;
    logs_fill(m, &logs, loss_sum / (double)seen, out_means, 0);
    if (val) {
      kiln_logs train_logs = logs;
      double vloss, vper[KILN_MAX_IO];
      s = run_eval(m, val, val_begin, val_end, batch, &vloss, vper, err);
      if (s) break;
      logs = train_logs;
      logs_fill(m, &logs, vloss, vper, 1);
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
  feed_free(&f);
  free(idx);
  for (int k = 0; k < m->n_outs; k++) free(ybatch[k]);
  free(cbs);
  return s;
}

kiln_status kiln_model_fit(kiln_model *m, const kiln_matrix *x, const kiln_matrix *y,
                           const kiln_fit_options *opt, kiln_history *history, kiln_error *err) {
  kiln_io xi = io_one(x), yi = io_one(y);
  return kiln_model_fit_io(m, &xi, &yi, opt, history, err);
}

static kiln_status gradients_impl(kiln_model *m, const kiln_io *x, const kiln_io *y,
                                  int training, double *loss, double *per_output,
                                  const char *what, kiln_error *err) {
  kiln_status s = check_compiled(m, 1, what, err);
  if (s) return s;
  io_data d;
  if (!y) return kiln_error_set(err, KILN_E_INVALID, "%s: no target data given", what);
  if ((s = resolve_io(m, x, y, what, &d, err))) return s;
  int64_t rows = d.x[0]->rows;
  if ((s = prepare(m, &d, rows > 0 ? rows : 1, what, err))) return s;
  feed f;
  if ((s = feed_init(&f, &d, rows, err))) return s;
  feed_gather(&f, m, NULL, 0, rows);
  const float *yt[KILN_MAX_IO];
  int64_t yc[KILN_MAX_IO];
  for (int k = 0; k < m->n_outs; k++) {
    yt[k] = d.y[k]->values;
    yc[k] = d.y[k]->cols;
  }
  double per[KILN_MAX_IO];
  s = loss_and_gradients(m, rows, yt, yc, training, loss, per, err);
  if (!s && per_output) memcpy(per_output, per, (size_t)m->n_outs * sizeof(double));
  feed_free(&f);
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
  kiln_status s = check_compiled(m, 1, "forward", err);
  if (s) return s;
  io_data d;
  if ((s = resolve_io(m, x, NULL, "forward", &d, err))) return s;
  int64_t rows = d.x[0]->rows;
  if ((s = prepare(m, &d, rows > 0 ? rows : 1, "forward", err))) return s;
  feed f;
  if ((s = feed_init(&f, &d, rows, err))) return s;
  feed_gather(&f, m, NULL, 0, rows);
  s = forward(m, rows, training, err);
  feed_free(&f);
  return s ? s : copy_outputs(m, rows, outs, err);
}

kiln_status kiln_model_gradients(kiln_model *m, const kiln_matrix *x, const kiln_matrix *y,
                                 int training, double *loss, kiln_error *err) {
  kiln_io xi = io_one(x), yi = io_one(y);
  return kiln_model_gradients_io(m, &xi, &yi, training, loss, NULL, err);
}

/* kiln trainer — the forward and backward passes over the layer graph (Concatenate
 * and custom layers included) and the summed loss of the outputs. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "custom_layer.h"
#include "model_internal.h"

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

kiln_status kiln_graph_forward(kiln_model *m, int64_t rows, int training, kiln_error *err) {
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
void kiln_graph_backward(kiln_model *m, int64_t rows) {
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
double kiln_outputs_loss(kiln_model *m, int64_t rows, const float *const *y,
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
kiln_status kiln_loss_and_gradients(kiln_model *m, int64_t rows, const float *const *y,
                                    const int64_t *ycols, int training, double *loss,
                                    double *per_output, kiln_error *err) {
  kiln_status s = kiln_graph_forward(m, rows, training, err);
  if (s) return s;
  double total = kiln_outputs_loss(m, rows, y, ycols, per_output, 1);
  kiln_graph_backward(m, rows);
  *loss = total + kiln_regularization(m, 1);
  return KILN_OK;
}

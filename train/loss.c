/* kiln trainer — losses (mean over the batch, as Keras' sum_over_batch_size) and
 * kernel regularization. Crossentropies fused with a sigmoid/softmax output are
 * computed from the logits, which is both stable and exact. */
#include <math.h>
#include <string.h>

#include "model_internal.h"

static const char *const loss_names[] = {"binary_crossentropy", "categorical_crossentropy",
                                         "sparse_categorical_crossentropy",
                                         "mean_squared_error", "mean_absolute_error"};

kiln_status kiln_loss_parse(const char *name, kiln_loss *out, kiln_error *err) {
  static const struct { const char *alias; kiln_loss loss; } aliases[] = {
      {"mse", KILN_LOSS_MEAN_SQUARED_ERROR}, {"mae", KILN_LOSS_MEAN_ABSOLUTE_ERROR}};
  for (int i = 0; i < 5; i++)
    if (strcmp(name, loss_names[i]) == 0) {
      *out = (kiln_loss)i;
      return KILN_OK;
    }
  for (size_t i = 0; i < sizeof aliases / sizeof aliases[0]; i++)
    if (strcmp(name, aliases[i].alias) == 0) {
      *out = aliases[i].loss;
      return KILN_OK;
    }
  return kiln_error_set(err, KILN_E_INVALID,
                        "unknown loss \"%s\" (expected one of binary_crossentropy, "
                        "categorical_crossentropy, sparse_categorical_crossentropy, "
                        "mean_squared_error/mse, mean_absolute_error/mae)", name);
}

const char *kiln_loss_name(kiln_loss loss) {
  return (unsigned)loss < 5 ? loss_names[loss] : "?";
}

int kiln_loss_fuses(kiln_loss loss, kiln_activation act) {
  return (loss == KILN_LOSS_BINARY_CROSSENTROPY && act == KILN_ACTIVATION_SIGMOID) ||
         ((loss == KILN_LOSS_CATEGORICAL_CROSSENTROPY ||
           loss == KILN_LOSS_SPARSE_CATEGORICAL_CROSSENTROPY) && act == KILN_ACTIVATION_SOFTMAX);
}

#define PROB_EPS 1e-7f /* Keras' backend epsilon, the clip of probabilities */

static float clip_prob(float p) {
  return p < PROB_EPS ? PROB_EPS : (p > 1.0f - PROB_EPS ? 1.0f - PROB_EPS : p);
}

double kiln_logsumexp_ref(const float *z, int64_t n) {
  float mx = z[0];
  for (int64_t j = 1; j < n; j++) mx = z[j] > mx ? z[j] : mx;
  double se = 0;
  for (int64_t j = 0; j < n; j++) se += exp((double)(z[j] - mx));
  return mx + log(se);
}

/* As the reference with float exp (~4x cheaper than double exp from glibc, and within
 * 1 ulp): exp(z - max) <= 1 and the sum stays in double, so lse is within a few float
 * ulps of the reference. The softmax itself (activation.c) uses expf too. */
double kiln_logsumexp(const float *z, int64_t n) {
  float mx = z[0];
  for (int64_t j = 1; j < n; j++) mx = z[j] > mx ? z[j] : mx;
  double se = 0;
  for (int64_t j = 0; j < n; j++) se += (double)expf(z[j] - mx);
  return mx + log(se);
}

double kiln_loss_compute(kiln_loss loss, int fused, const float *pred, const float *logits,
                         const float *y_true, int64_t true_cols, int64_t rows, int64_t cols,
                         float *grad) {
  double total = 0;
  int64_t n = rows * cols;
  switch (loss) {
    case KILN_LOSS_BINARY_CROSSENTROPY: {
      float scale = 1.0f / (float)n;
      for (int64_t i = 0; i < n; i++) {
        float y = y_true[i];
        if (fused) {
          float z = logits[i];
          total += fmaxf(z, 0.0f) - z * y + log1pf(expf(-fabsf(z)));
          grad[i] = (pred[i] - y) * scale;
        } else {
          float p = clip_prob(pred[i]);
          total += -(y * logf(p) + (1.0f - y) * logf(1.0f - p));
          int clipped = pred[i] != p;
          grad[i] = clipped ? 0.0f : (p - y) / (p * (1.0f - p)) * scale;
        }
      }
      return total / (double)n;
    }
    case KILN_LOSS_CATEGORICAL_CROSSENTROPY:
    case KILN_LOSS_SPARSE_CATEGORICAL_CROSSENTROPY: {
      int sparse = loss == KILN_LOSS_SPARSE_CATEGORICAL_CROSSENTROPY;
      float scale = 1.0f / (float)rows;
      for (int64_t r = 0; r < rows; r++) {
        const float *p = pred + r * cols;
        float *g = grad + r * cols;
        const float *yt = sparse ? NULL : y_true + r * true_cols;
        int64_t label = sparse ? (int64_t)y_true[r * true_cols] : -1;
        if (fused) {
          const float *z = logits + r * cols;
          double lse = kiln_logsumexp(z, cols);
          if (sparse) {
            total += lse - z[label];
            for (int64_t j = 0; j < cols; j++) g[j] = (p[j] - (j == label)) * scale;
          } else {
            double ysum = 0;
            for (int64_t j = 0; j < cols; j++) {
              total += yt[j] * (lse - z[j]);
              ysum += yt[j];
            }
            for (int64_t j = 0; j < cols; j++) g[j] = (p[j] * (float)ysum - yt[j]) * scale;
          }
        } else {
          for (int64_t j = 0; j < cols; j++) {
            float y = sparse ? (float)(j == label) : yt[j];
            float pj = clip_prob(p[j]);
            total += -(double)y * log(pj);
            g[j] = (p[j] == pj && y != 0.0f) ? -y / pj * scale : 0.0f;
          }
        }
      }
      return total / (double)rows;
    }
    case KILN_LOSS_MEAN_SQUARED_ERROR: {
      float scale = 2.0f / (float)n;
      for (int64_t i = 0; i < n; i++) {
        float d = pred[i] - y_true[i];
        total += (double)d * d;
        grad[i] = d * scale;
      }
      return total / (double)n;
    }
    case KILN_LOSS_MEAN_ABSOLUTE_ERROR: {
      float scale = 1.0f / (float)n;
      for (int64_t i = 0; i < n; i++) {
        float d = pred[i] - y_true[i];
        total += fabs((double)d);
        grad[i] = (d > 0.0f ? 1.0f : (d < 0.0f ? -1.0f : 0.0f)) * scale;
      }
      return total / (double)n;
    }
  }
  return NAN;
}

kiln_status kiln_loss_check_targets(kiln_loss loss, const kiln_matrix *y, int64_t out_cols,
                                    kiln_error *err) {
  if (kiln_matrix_is_sparse(y))
    return kiln_error_set(err, KILN_E_INVALID, "targets must be a dense matrix");
  int64_t want = loss == KILN_LOSS_SPARSE_CATEGORICAL_CROSSENTROPY ? 1 : out_cols;
  if (y->cols != want)
    return kiln_error_set(
        err, KILN_E_SHAPE, "targets have %lld columns but %s with a %lld-unit output expects %lld%s",
        (long long)y->cols, kiln_loss_name(loss), (long long)out_cols, (long long)want,
        loss == KILN_LOSS_CATEGORICAL_CROSSENTROPY && y->cols == 1
            ? " (one-hot encode the labels, or use sparse_categorical_crossentropy)" : "");
  int64_t r, c;
  if (kiln_matrix_find_nonfinite(y, &r, &c))
    return kiln_error_set(err, KILN_E_RANGE, "target at row %lld, column %lld is not finite",
                          (long long)r, (long long)c);
  for (int64_t i = 0; i < y->rows * y->cols; i++) {
    float v = y->values[i];
    if (loss == KILN_LOSS_SPARSE_CATEGORICAL_CROSSENTROPY &&
        (v != floorf(v) || v < 0.0f || v >= (float)out_cols))
      return kiln_error_set(err, KILN_E_RANGE,
                            "label %g at row %lld is outside the %lld classes [0, %lld)", v,
                            (long long)i, (long long)out_cols, (long long)out_cols);
    if ((loss == KILN_LOSS_BINARY_CROSSENTROPY || loss == KILN_LOSS_CATEGORICAL_CROSSENTROPY) &&
        (v < 0.0f || v > 1.0f))
      return kiln_error_set(err, KILN_E_RANGE,
                            "target %g at row %lld, column %lld is outside [0, 1] for %s", v,
                            (long long)(i / y->cols), (long long)(i % y->cols),
                            kiln_loss_name(loss));
  }
  return KILN_OK;
}

double kiln_regularization(kiln_model *m, int add_grad) {
  double penalty = 0;
  for (int i = 0; i < m->n_layers; i++) {
    kiln_layer *l = &m->layers[i];
    if (l->kind != KILN_LAYER_DENSE || (m->compiled && !l->active) || (l->reg.l1 == 0.0f && l->reg.l2 == 0.0f)) continue;
    int64_t n = l->in_features * l->out_features;
    double s1 = 0, s2 = 0;
    float l1 = l->reg.l1, l2x2 = 2.0f * l->reg.l2;
    for (int64_t k = 0; k < n; k++) {
      float w = l->kernel[k];
      s1 += fabsf(w);
      s2 += (double)w * w;
      if (add_grad)
        l->grad_kernel[k] += l2x2 * w + (w > 0.0f ? l1 : (w < 0.0f ? -l1 : 0.0f));
    }
    penalty += l->reg.l1 * s1 + l->reg.l2 * s2;
  }
  return penalty;
}

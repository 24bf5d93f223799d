/* kiln trainer — built-in metrics, each a kiln_metric (update_state / result /
 * reset_state), the same interface a user implements for a custom one. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model_internal.h"

typedef enum {
  M_BINARY_ACC, M_CATEGORICAL_ACC, M_SPARSE_ACC, M_TOP_K, M_SPARSE_TOP_K, M_MAE, M_MSE, M_RMSE
} metric_kind;

typedef struct {
  metric_kind kind;
  int k;
  double total;
  double count;
  char name[48];
} builtin_state;

static void builtin_reset(kiln_metric *self) {
  builtin_state *s = self->state;
  s->total = 0;
  s->count = 0;
}

static int64_t argmax(const float *v, int64_t n) {
  int64_t best = 0;
  for (int64_t j = 1; j < n; j++)
    if (v[j] > v[best]) best = j;
  return best;
}

/* Keras' in_top_k: the true class is a hit when fewer than k classes score higher. */
static int in_top_k(const float *pred, int64_t n, int64_t label, int k) {
  int higher = 0;
  for (int64_t j = 0; j < n; j++) higher += pred[j] > pred[label];
  return higher < k;
}

/* The target of prediction element i. One target column against several outputs (sparse
 * labels with "mse" or "binary_accuracy") is broadcast along the row, as Keras does. */
static float target(const float *y_true, int64_t true_cols, int64_t pred_cols, int64_t i) {
  return true_cols == pred_cols ? y_true[i] : y_true[(i / pred_cols) * true_cols];
}

static void builtin_update(kiln_metric *self, const float *y_true, int64_t true_cols,
                           const float *y_pred, int64_t pred_cols, int64_t rows) {
  builtin_state *s = self->state;
  switch (s->kind) {
    case M_BINARY_ACC:
      for (int64_t i = 0; i < rows * pred_cols; i++)
        s->total += (y_pred[i] > 0.5f) == (target(y_true, true_cols, pred_cols, i) > 0.5f);
      s->count += (double)(rows * pred_cols);
      return;
    case M_CATEGORICAL_ACC:
    case M_SPARSE_ACC:
    case M_TOP_K:
    case M_SPARSE_TOP_K:
      for (int64_t r = 0; r < rows; r++) {
        const float *p = y_pred + r * pred_cols;
        int sparse = s->kind == M_SPARSE_ACC || s->kind == M_SPARSE_TOP_K;
        int64_t label = sparse ? (int64_t)y_true[r * true_cols]
                               : argmax(y_true + r * true_cols, true_cols);
        if (label < 0 || label >= pred_cols) continue; /* counted as a miss */
        if (s->kind == M_TOP_K || s->kind == M_SPARSE_TOP_K) s->total += in_top_k(p, pred_cols, label, s->k);
        else s->total += argmax(p, pred_cols) == label;
      }
      s->count += (double)rows;
      return;
    case M_MAE:
    case M_MSE:
    case M_RMSE:
      for (int64_t i = 0; i < rows * pred_cols; i++) {
        double d = (double)y_pred[i] - target(y_true, true_cols, pred_cols, i);
        s->total += s->kind == M_MAE ? fabs(d) : d * d;
      }
      s->count += (double)(rows * pred_cols);
      return;
  }
}

static double builtin_result(const kiln_metric *self) {
  const builtin_state *s = self->state;
  if (s->count == 0) return 0.0;
  double mean = s->total / s->count;
  return s->kind == M_RMSE ? sqrt(mean) : mean;
}

static void builtin_destroy(kiln_metric *self) {
  free(self->state);
  free(self);
}

void kiln_metric_free(kiln_metric *m) {
  if (m && m->destroy) m->destroy(m);
}

kiln_status kiln_metric_create(const char *name, kiln_loss loss, kiln_metric **out,
                               kiln_error *err) {
  int sparse = loss == KILN_LOSS_SPARSE_CATEGORICAL_CROSSENTROPY;
  metric_kind kind;
  int k = 0;
  const char *key = name;
  char rest[8];
  if (strcmp(name, "accuracy") == 0 || strcmp(name, "acc") == 0) {
    kind = loss == KILN_LOSS_CATEGORICAL_CROSSENTROPY ? M_CATEGORICAL_ACC
           : sparse                                   ? M_SPARSE_ACC
                                                      : M_BINARY_ACC;
    key = "accuracy";
  } else if (strcmp(name, "binary_accuracy") == 0) {
    kind = M_BINARY_ACC;
  } else if (strcmp(name, "categorical_accuracy") == 0) {
    kind = M_CATEGORICAL_ACC;
  } else if (strcmp(name, "sparse_categorical_accuracy") == 0) {
    kind = M_SPARSE_ACC;
  } else if (strcmp(name, "top_k_categorical_accuracy") == 0 ||
             strcmp(name, "sparse_top_k_categorical_accuracy") == 0) {
    kind = (sparse || name[0] == 's') ? M_SPARSE_TOP_K : M_TOP_K;
    k = 5;
  } else if (sscanf(name, "top_%d_accurac%7s", &k, rest) == 2 && strcmp(rest, "y") == 0 &&
             k > 0 && k < 1000) {
    kind = sparse ? M_SPARSE_TOP_K : M_TOP_K;
  } else if (strcmp(name, "mae") == 0 || strcmp(name, "mean_absolute_error") == 0) {
    kind = M_MAE;
  } else if (strcmp(name, "mse") == 0 || strcmp(name, "mean_squared_error") == 0) {
    kind = M_MSE;
  } else if (strcmp(name, "rmse") == 0 || strcmp(name, "root_mean_squared_error") == 0) {
    kind = M_RMSE;
  } else {
    return kiln_error_set(err, KILN_E_INVALID,
                          "unknown metric \"%s\" (expected accuracy, binary_accuracy, "
                          "categorical_accuracy, sparse_categorical_accuracy, "
                          "top_k_categorical_accuracy, top_<k>_accuracy, mae, mse or rmse)", name);
  }
  if ((kind == M_TOP_K || kind == M_CATEGORICAL_ACC) && sparse)
    kind = kind == M_TOP_K ? M_SPARSE_TOP_K : M_SPARSE_ACC;
  kiln_metric *m = calloc(1, sizeof *m);
  builtin_state *s = calloc(1, sizeof *s);
  if (!m || !s) {
    free(m);
    free(s);
    return kiln_error_set(err, KILN_E_NOMEM, "metric \"%s\": out of memory", name);
  }
  s->kind = kind;
  s->k = k;
  snprintf(s->name, sizeof s->name, "%s", key);
  m->name = s->name;
  m->state = s;
  m->reset_state = builtin_reset;
  m->update_state = builtin_update;
  m->result = builtin_result;
  m->destroy = builtin_destroy;
  *out = m;
  return KILN_OK;
}

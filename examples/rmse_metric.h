/* Listing 7.18's RootMeanSquaredError as a user metric: a kiln_metric with its own
 * state (the sum of squared errors and the number of samples), written only against
 * the public kiln_metric interface. Header-only so that examples/custom_metric.c and
 * its unit test (tests/train/test_custom_metric.c) use the same code.
 *
 * As the listing: integer labels (one target column against several outputs) are
 * one-hot encoded to the output width, the squared errors of a row are summed and the
 * sum is divided by the number of rows, so the result is sqrt(sum / samples). With one
 * output column, or targets as wide as the outputs, it is the same figure as the
 * built-in "rmse" (keras.metrics.RootMeanSquaredError) times sqrt(columns), i.e. equal
 * for a single output. */
#ifndef KILN_EXAMPLE_RMSE_METRIC_H
#define KILN_EXAMPLE_RMSE_METRIC_H

#include <math.h>
#include <stdlib.h>

#include "kiln/train.h"

typedef struct rmse_state {
  double mse_sum;       /* the listing's self.mse_sum */
  double total_samples; /* the listing's self.total_samples */
} rmse_state;

static inline void rmse_reset_state(kiln_metric *self) {
  rmse_state *s = self->state;
  s->mse_sum = 0.0;
  s->total_samples = 0.0;
}

static inline void rmse_update_state(kiln_metric *self, const float *y_true, int64_t true_cols,
                              const float *y_pred, int64_t pred_cols, int64_t rows) {
  rmse_state *s = self->state;
  int one_hot = true_cols == 1 && pred_cols > 1; /* ops.one_hot(y_true, num_classes) */
  for (int64_t r = 0; r < rows; r++) {
    const float *p = y_pred + r * pred_cols, *t = y_true + r * true_cols;
    for (int64_t j = 0; j < pred_cols; j++) {
      double want = one_hot ? (double)((int64_t)t[0] == j) : (double)t[j];
      double d = want - (double)p[j];
      s->mse_sum += d * d;
    }
  }
  s->total_samples += (double)rows;
}

static inline double rmse_result(const kiln_metric *self) {
  const rmse_state *s = self->state;
  return s->total_samples > 0 ? sqrt(s->mse_sum / s->total_samples) : 0.0;
}

static inline void rmse_destroy(kiln_metric *self) {
  free(self->state);
  free(self);
}

/* A new metric named `name` (e.g. "rmse"; the name is borrowed: pass a literal), or
 * NULL when out of memory. kiln_model_add_metric takes ownership. */
static inline kiln_metric *rmse_metric_create(const char *name) {
  kiln_metric *m = calloc(1, sizeof *m);
  rmse_state *s = calloc(1, sizeof *s);
  if (!m || !s) {
    free(m);
    free(s);
    return NULL;
  }
  m->name = name;
  m->state = s;
  m->reset_state = rmse_reset_state;
  m->update_state = rmse_update_state;
  m->result = rmse_result;
  m->destroy = rmse_destroy;
  return m;
}

#endif

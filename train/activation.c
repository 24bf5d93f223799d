/* kiln trainer — activations, in place over rows x cols, and their backward pass. */
#include <math.h>

#include "model_internal.h"

KILN_HOT void kiln_activation_forward(kiln_activation a, float *z, int64_t rows, int64_t cols) {
  int64_t n = rows * cols;
  switch (a) {
    case KILN_ACTIVATION_LINEAR:
      break;
    case KILN_ACTIVATION_RELU:
      for (int64_t i = 0; i < n; i++) z[i] = z[i] > 0.0f ? z[i] : 0.0f;
      break;
    case KILN_ACTIVATION_SIGMOID:
      for (int64_t i = 0; i < n; i++) {
        /* Stable on both sides: exp of a non-positive number only. */
        float e = expf(-fabsf(z[i]));
        z[i] = z[i] >= 0.0f ? 1.0f / (1.0f + e) : e / (1.0f + e);
      }
      break;
    case KILN_ACTIVATION_TANH:
      for (int64_t i = 0; i < n; i++) z[i] = tanhf(z[i]);
      break;
    case KILN_ACTIVATION_SOFTMAX:
      for (int64_t r = 0; r < rows; r++) {
        float *row = z + r * cols;
        float mx = row[0];
        for (int64_t j = 1; j < cols; j++) mx = row[j] > mx ? row[j] : mx;
        float sum = 0.0f;
        for (int64_t j = 0; j < cols; j++) {
          row[j] = expf(row[j] - mx);
          sum += row[j];
        }
        float inv = 1.0f / sum;
        for (int64_t j = 0; j < cols; j++) row[j] *= inv;
      }
      break;
  }
}

KILN_HOT void kiln_activation_backward(kiln_activation a, const float *y, float *g, int64_t rows,
                              int64_t cols) {
  int64_t n = rows * cols;
  switch (a) {
    case KILN_ACTIVATION_LINEAR:
      break;
    case KILN_ACTIVATION_RELU:
      for (int64_t i = 0; i < n; i++)
        if (!(y[i] > 0.0f)) g[i] = 0.0f;
      break;
    case KILN_ACTIVATION_SIGMOID:
      for (int64_t i = 0; i < n; i++) g[i] *= y[i] * (1.0f - y[i]);
      break;
    case KILN_ACTIVATION_TANH:
      for (int64_t i = 0; i < n; i++) g[i] *= 1.0f - y[i] * y[i];
      break;
    case KILN_ACTIVATION_SOFTMAX:
      /* dz = y * (g - <g, y>) per row: the softmax Jacobian applied to g. */
      for (int64_t r = 0; r < rows; r++) {
        const float *yr = y + r * cols;
        float *gr = g + r * cols;
        double dot = 0;
        for (int64_t j = 0; j < cols; j++) dot += (double)gr[j] * yr[j];
        for (int64_t j = 0; j < cols; j++) gr[j] = yr[j] * (gr[j] - (float)dot);
      }
      break;
  }
}

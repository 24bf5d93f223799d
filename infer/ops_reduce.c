/* kiln runtime — ReduceMean over any set of axes. */
#include <string.h>

#include "session_internal.h"

void kiln_exec_reduce_mean(kiln_session *s, const kiln_step *st, int64_t batch) {
  const kiln_rt_value *v = &s->values[st->in[0]];
  int64_t d[KILN_IR_MAX_RANK];
  int64_t total = kiln_shape_eval(&v->shape, batch, d);
  int r = v->shape.rank;
  unsigned mask = st->reduce_mask;
  const float *x = s->ptr[st->in[0]];
  float *y = s->ptr[st->out[0]];
  int64_t count = 1, kept = 1;
  for (int i = 0; i < r; i++) {
    if (mask & (1u << i)) count *= d[i];
    else kept *= d[i];
  }
  /* The reduced axes are the trailing ones (a row-wise mean, e.g. a normalization):
   * one contiguous run per output, summed in double. An empty reduction is 0/0 = NaN. */
  int suffix = 1;
  for (int i = 0, seen = 0; i < r; i++) {
    if (mask & (1u << i)) seen = 1;
    else if (seen) suffix = 0;
  }
  if (suffix) {
    for (int64_t o = 0; o < kept; o++) {
      const float *xr = x + o * count;
      double sum = 0;
      for (int64_t j = 0; j < count; j++) sum += xr[j];
      y[o] = (float)(sum / (double)count);
    }
    return;
  }
  /* General: walk the input once, adding each element to its output (strides in the
   * output are 0 along reduced axes). */
  int64_t ostride[KILN_IR_MAX_RANK], st_ = 1;
  for (int i = r - 1; i >= 0; i--) {
    if (mask & (1u << i)) {
      ostride[i] = 0;
    } else {
      ostride[i] = st_;
      st_ *= d[i];
    }
  }
  memset(y, 0, (size_t)kept * sizeof(float));
  int64_t idx[KILN_IR_MAX_RANK] = {0}, off = 0;
  for (int64_t e = 0; e < total; e++) {
    y[off] += x[e];
    for (int i = r - 1; i >= 0; i--) {
      off += ostride[i];
      if (++idx[i] < d[i]) break;
      off -= ostride[i] * d[i];
      idx[i] = 0;
    }
  }
  float inv = 1.0f / (float)count;
  for (int64_t o = 0; o < kept; o++) y[o] *= inv;
}

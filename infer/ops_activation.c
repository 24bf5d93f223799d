/* kiln runtime — Relu, LeakyRelu, Sigmoid, Tanh, Softmax and LogSoftmax. */
#include <math.h>
#include <string.h>

#include "session_internal.h"

void kiln_exec_unary(kiln_session *s, const kiln_step *st, int64_t batch) {
  int64_t d[KILN_IR_MAX_RANK];
  int64_t n = kiln_shape_eval(&s->values[st->in[0]].shape, batch, d);
  const float *x = s->ptr[st->in[0]];
  float *y = s->ptr[st->out[0]];
  memcpy(y, x, (size_t)n * sizeof(float));
  kiln_act act = st->op == KILN_OP_RELU         ? KILN_ACT_RELU
                 : st->op == KILN_OP_LEAKY_RELU ? KILN_ACT_LEAKY_RELU
                 : st->op == KILN_OP_SIGMOID    ? KILN_ACT_SIGMOID
                                                : KILN_ACT_TANH;
  kiln_act_apply(act, st->slope, y, n);
}

void kiln_exec_softmax(kiln_session *s, const kiln_step *st, int64_t batch) {
  const kiln_rt_value *v = &s->values[st->in[0]];
  int64_t d[KILN_IR_MAX_RANK];
  int64_t total = kiln_shape_eval(&v->shape, batch, d);
  int r = v->shape.rank, axis = st->axis;
  int64_t outer = 1, n = 1, inner = 1;
  for (int i = 0; i < axis && i < r; i++) outer *= d[i];
  if (st->legacy_softmax) {
    for (int i = axis; i < r; i++) n *= d[i];
  } else if (r > 0) {
    n = d[axis];
    for (int i = axis + 1; i < r; i++) inner *= d[i];
  }
  if (total == 0 || n == 0) return;
  const float *x = s->ptr[st->in[0]];
  float *y = s->ptr[st->out[0]];
  int log_out = st->op == KILN_OP_LOG_SOFTMAX;
  for (int64_t o = 0; o < outer; o++)
    for (int64_t in = 0; in < inner; in++) {
      const float *xp = x + o * n * inner + in;
      float *yp = y + o * n * inner + in;
      float m = xp[0];
      for (int64_t j = 1; j < n; j++)
        if (xp[j * inner] > m) m = xp[j * inner];
      float sum = 0.0f;
      if (log_out) {
        for (int64_t j = 0; j < n; j++) sum += expf(xp[j * inner] - m);
        float ls = logf(sum);
        for (int64_t j = 0; j < n; j++) yp[j * inner] = xp[j * inner] - m - ls;
      } else {
        for (int64_t j = 0; j < n; j++) {
          float e = expf(xp[j * inner] - m);
          yp[j * inner] = e;
          sum += e;
        }
        float inv = 1.0f / sum;
        for (int64_t j = 0; j < n; j++) yp[j * inner] *= inv;
      }
    }
}

/* kiln runtime — data movement: Concat, copies (Identity, Dropout, Flatten, Reshape),
 * Cast to float32, and Dropout's all-true mask. */
#include <string.h>

#include "session_internal.h"

void kiln_exec_concat(kiln_session *s, const kiln_step *st, int64_t batch) {
  const kiln_rt_value *ov = &s->values[st->out[0]];
  int64_t od[KILN_IR_MAX_RANK];
  kiln_shape_eval(&ov->shape, batch, od);
  int r = ov->shape.rank;
  int64_t outer = 1, inner = 1;
  for (int i = 0; i < st->axis; i++) outer *= od[i];
  for (int i = st->axis + 1; i < r; i++) inner *= od[i];
  size_t es = kiln_dtype_size(ov->dtype);
  unsigned char *out = s->ptr[st->out[0]];
  for (int64_t o = 0; o < outer; o++)
    for (int k = 0; k < st->n_in; k++) {
      const kiln_rt_value *iv = &s->values[st->in[k]];
      int64_t chunk = kiln_shape_dim(&iv->shape, st->axis, batch) * inner;
      const unsigned char *src = s->ptr[st->in[k]];
      size_t bytes = (size_t)chunk * es;
      if (bytes) memcpy(out, src + (size_t)o * bytes, bytes);
      out += bytes;
    }
}

void kiln_exec_copy(kiln_session *s, const kiln_step *st, int64_t batch) {
  const kiln_rt_value *iv = &s->values[st->in[0]];
  int64_t d[KILN_IR_MAX_RANK];
  int64_t n = kiln_shape_eval(&iv->shape, batch, d);
  if (n) memcpy(s->ptr[st->out[0]], s->ptr[st->in[0]], (size_t)n * kiln_dtype_size(iv->dtype));
}

void kiln_exec_cast(kiln_session *s, const kiln_step *st, int64_t batch) {
  const kiln_rt_value *iv = &s->values[st->in[0]];
  int64_t d[KILN_IR_MAX_RANK];
  int64_t n = kiln_shape_eval(&iv->shape, batch, d);
  const void *x = s->ptr[st->in[0]];
  float *y = s->ptr[st->out[0]];
  switch (iv->dtype) {
    case KILN_DTYPE_DOUBLE:
      for (int64_t i = 0; i < n; i++) y[i] = (float)((const double *)x)[i];
      break;
    case KILN_DTYPE_INT64:
      for (int64_t i = 0; i < n; i++) y[i] = (float)((const int64_t *)x)[i];
      break;
    case KILN_DTYPE_INT32:
      for (int64_t i = 0; i < n; i++) y[i] = (float)((const int32_t *)x)[i];
      break;
    case KILN_DTYPE_INT8:
      for (int64_t i = 0; i < n; i++) y[i] = (float)((const int8_t *)x)[i];
      break;
    case KILN_DTYPE_UINT8:
      for (int64_t i = 0; i < n; i++) y[i] = (float)((const uint8_t *)x)[i];
      break;
    case KILN_DTYPE_BOOL:
      for (int64_t i = 0; i < n; i++) y[i] = ((const uint8_t *)x)[i] ? 1.0f : 0.0f;
      break;
    default:
      for (int64_t i = 0; i < n; i++) y[i] = ((const float *)x)[i];
      break;
  }
}

void kiln_exec_fill_ones(kiln_session *s, const kiln_step *st, int64_t batch) {
  const kiln_rt_value *ov = &s->values[st->out[0]];
  int64_t d[KILN_IR_MAX_RANK];
  int64_t n = kiln_shape_eval(&ov->shape, batch, d);
  if (ov->dtype == KILN_DTYPE_FLOAT) {
    float *y = s->ptr[st->out[0]];
    for (int64_t i = 0; i < n; i++) y[i] = 1.0f;
  } else {
    memset(s->ptr[st->out[0]], 1, (size_t)n);
  }
}

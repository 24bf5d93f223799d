/* kiln runtime — Add, Sub, Mul, Div with numpy broadcasting; Sqrt and Reciprocal. */
#include <math.h>

#include "session_internal.h"

void kiln_exec_math_unary(kiln_session *s, const kiln_step *st, int64_t batch) {
  int64_t d[KILN_IR_MAX_RANK];
  int64_t n = kiln_shape_eval(&s->values[st->in[0]].shape, batch, d);
  const float *x = s->ptr[st->in[0]];
  float *y = s->ptr[st->out[0]];
  if (st->op == KILN_OP_SQRT)
    for (int64_t i = 0; i < n; i++) y[i] = sqrtf(x[i]);
  else
    for (int64_t i = 0; i < n; i++) y[i] = 1.0f / x[i];
}

void kiln_broadcast_strides(int in_rank, const int64_t *in_dims, int out_rank,
                            const int64_t *out_dims, int64_t *strides) {
  int64_t st = 1;
  for (int i = out_rank - 1; i >= 0; i--) {
    int j = i - (out_rank - in_rank);
    if (j < 0) {
      strides[i] = 0;
      continue;
    }
    strides[i] = (in_dims[j] == 1 && out_dims[i] != 1) ? 0 : st;
    st *= in_dims[j];
  }
}

/* out[i] = a[i*sa] op b[i*sb] for n elements; sa, sb are 0 or 1. */
static void binary_run(kiln_op op, const float *a, int64_t sa, const float *b, int64_t sb,
                       float *out, int64_t n) {
#define LOOP(expr)                                                       \
  if (sa && sb) {                                                        \
    for (int64_t i = 0; i < n; i++) { float x = a[i], y = b[i]; out[i] = (expr); } \
  } else if (sa) {                                                       \
    float y = b[0];                                                      \
    for (int64_t i = 0; i < n; i++) { float x = a[i]; out[i] = (expr); } \
  } else if (sb) {                                                       \
    float x = a[0];                                                      \
    for (int64_t i = 0; i < n; i++) { float y = b[i]; out[i] = (expr); } \
  } else {                                                               \
    float x = a[0], y = b[0];                                            \
    for (int64_t i = 0; i < n; i++) out[i] = (expr);                     \
  }
  switch (op) {
    case KILN_OP_ADD: LOOP(x + y) break;
    case KILN_OP_SUB: LOOP(x - y) break;
    case KILN_OP_MUL: LOOP(x * y) break;
    case KILN_OP_DIV: LOOP(x / y) break;
    default: break;
  }
#undef LOOP
}

void kiln_exec_binary(kiln_session *s, const kiln_step *st, int64_t batch) {
  const kiln_rt_value *av = &s->values[st->in[0]], *bv = &s->values[st->in[1]];
  const kiln_rt_value *ov = &s->values[st->out[0]];
  int64_t ad[KILN_IR_MAX_RANK], bd[KILN_IR_MAX_RANK], od[KILN_IR_MAX_RANK];
  int64_t an = kiln_shape_eval(&av->shape, batch, ad);
  int64_t bn = kiln_shape_eval(&bv->shape, batch, bd);
  int64_t on = kiln_shape_eval(&ov->shape, batch, od);
  const float *a = s->ptr[st->in[0]], *b = s->ptr[st->in[1]];
  float *out = s->ptr[st->out[0]];
  int r = ov->shape.rank;
  if ((an == on || an == 1) && (bn == on || bn == 1) &&
      (an != on || av->shape.rank == r) && (bn != on || bv->shape.rank == r)) {
    /* same shapes, or a scalar-like operand */
    binary_run(st->op, a, an == on && on != 1 ? 1 : 0, b, bn == on && on != 1 ? 1 : 0, out, on);
    return;
  }
  if (on == 0) return;
  int64_t sa[KILN_IR_MAX_RANK], sb[KILN_IR_MAX_RANK];
  kiln_broadcast_strides(av->shape.rank, ad, r, od, sa);
  kiln_broadcast_strides(bv->shape.rank, bd, r, od, sb);
  int64_t inner = od[r - 1], isa = sa[r - 1], isb = sb[r - 1];
  int64_t outer = on / inner;
  int64_t idx[KILN_IR_MAX_RANK] = {0};
  for (int64_t o = 0; o < outer; o++) {
    int64_t ao = 0, bo = 0;
    for (int i = 0; i < r - 1; i++) {
      ao += idx[i] * sa[i];
      bo += idx[i] * sb[i];
    }
    binary_run(st->op, a + ao, isa, b + bo, isb, out + o * inner, inner);
    for (int i = r - 2; i >= 0; i--) {
      if (++idx[i] < od[i]) break;
      idx[i] = 0;
    }
  }
}

/* kiln quantize — post-training int8 quantization of a float graph to standard ONNX.
 *
 * QDQ (default): every Gemm/MatMul reads its input through QuantizeLinear ->
 * DequantizeLinear (int8 per tensor, asymmetric), its weight through an int8
 * initializer and a per-axis DequantizeLinear (symmetric, zero point 0, [-127, 127])
 * and a Gemm's bias through an int32 initializer at s_x * s_w[j] and DequantizeLinear.
 * QOperator: QuantizeLinear -> QLinearMatMul -> DequantizeLinear (+ float bias Add).
 * Dynamic: DynamicQuantizeLinear -> MatMulInteger -> Cast -> Mul -> (Add), the form
 * ONNX Runtime's quantize_dynamic writes. Everything else stays float. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "qz_internal.h"

void kiln_quantize_options_init(kiln_quantize_options *opt) {
  memset(opt, 0, sizeof *opt);
  opt->format = KILN_QFORMAT_QDQ;
  opt->opset = 13;
}

void kiln_quant_report_free(kiln_quant_report *r) {
  if (!r) return;
  free(r->layers);
  free(r->kept_float);
  memset(r, 0, sizeof *r);
}

typedef struct act_q {
  char *tensor;
  char q[300], dq[300], scale[300], zp[300];
  float s;
  int8_t z;
} act_q;

typedef struct qctx {
  const kiln_ir_graph *g;
  const kiln_calibration *cal;
  kiln_quantize_options opt;
  kiln_ir_graph *o;
  kiln_quant_report *rep;
  act_q *acts;
  int n_acts;
  int64_t layer_bytes; /* initializer bytes added for the current layer */
  kiln_error *err;
} qctx;

static kiln_status nomem(qctx *c) {
  return kiln_error_set(c->err, KILN_E_NOMEM, "quantize: out of memory");
}

static kiln_status add_init(qctx *c, const char *name, kiln_dtype dt, const int64_t *dims,
                            int rank, const void *data) {
  kiln_status s = kiln_ir_add_initializer(c->o, name, dt, dims, rank, data, c->err);
  if (!s) {
    int64_t n = 1;
    for (int i = 0; i < rank; i++) n *= dims[i];
    c->layer_bytes += n * (int64_t)kiln_dtype_size(dt);
  }
  return s;
}

static kiln_status add_node(qctx *c, const char *op, const char *name, const char *const *in,
                            int n_in, const char *const *out, int n_out, kiln_ir_node **node) {
  return kiln_ir_add_node(c->o, op, name, in, n_in, out, n_out, node, c->err);
}

/* The quantized form of activation tensor x (made once, shared by its consumers). */
static kiln_status activation(qctx *c, const char *x, const act_q **out) {
  for (int i = 0; i < c->n_acts; i++)
    if (strcmp(c->acts[i].tensor, x) == 0) {
      *out = &c->acts[i];
      return KILN_OK;
    }
  act_q *p = realloc(c->acts, (size_t)(c->n_acts + 1) * sizeof *p);
  if (!p) return nomem(c);
  c->acts = p;
  act_q *a = &p[c->n_acts];
  memset(a, 0, sizeof *a);
  a->tensor = strdup(x);
  if (!a->tensor) return nomem(c);
  c->n_acts++;
  snprintf(a->q, sizeof a->q, "%s_quantized", x);
  snprintf(a->dq, sizeof a->dq, "%s_dequantized", x);
  snprintf(a->scale, sizeof a->scale, "%s_scale", x);
  snprintf(a->zp, sizeof a->zp, "%s_zero_point", x);
  char name[320];
  kiln_status s;
  if (c->opt.dynamic) {
    const char *in[1] = {x};
    const char *outs[3] = {a->q, a->scale, a->zp};
    snprintf(name, sizeof name, "%s_DynamicQuantizeLinear", x);
    if ((s = add_node(c, "DynamicQuantizeLinear", name, in, 1, outs, 3, NULL))) return s;
    *out = a;
    return KILN_OK;
  }
  const kiln_tensor_range *r = kiln_calibration_find(c->cal, x);
  if (!r)
    return kiln_error_set(c->err, KILN_E_INVALID,
                          "quantize: the calibration has no range for tensor \"%s\" (calibrate "
                          "this same graph)", x);
  kiln_qparams_int8(r->lo, r->hi, &a->s, &a->z);
  int64_t saved = c->layer_bytes;
  if ((s = add_init(c, a->scale, KILN_DTYPE_FLOAT, NULL, 0, &a->s)) ||
      (s = add_init(c, a->zp, KILN_DTYPE_INT8, NULL, 0, &a->z)))
    return s;
  c->layer_bytes = saved; /* activation parameters are not layer weights */
  const char *qin[3] = {x, a->scale, a->zp};
  const char *qout[1] = {a->q};
  snprintf(name, sizeof name, "%s_QuantizeLinear", x);
  if ((s = add_node(c, "QuantizeLinear", name, qin, 3, qout, 1, NULL))) return s;
  if (c->opt.format == KILN_QFORMAT_QDQ) {
    const char *din[3] = {a->q, a->scale, a->zp};
    const char *dout[1] = {a->dq};
    snprintf(name, sizeof name, "%s_DequantizeLinear", x);
    if ((s = add_node(c, "DequantizeLinear", name, din, 3, dout, 1, NULL))) return s;
  }
  *out = a;
  return KILN_OK;
}

/* Weight w (rank 2) as int8 per output channel: channel axis `axis` (1 for [K, N]). */
typedef struct wq {
  char q[300], scale[300], zp[300], dq[300];
  int64_t channels;
  float *scales;
} wq;

static kiln_status weight(qctx *c, const kiln_ir_tensor *w, int axis, wq *out,
                          kiln_quant_layer *L) {
  const float *v = w->data;
  int64_t rows = w->dims[0], cols = w->dims[1];
  int64_t ch = axis == 1 ? cols : rows;
  out->channels = ch;
  out->scales = malloc((size_t)ch * sizeof(float));
  int8_t *q = malloc((size_t)(rows * cols));
  int8_t *zps = calloc((size_t)ch, 1);
  kiln_status s = KILN_OK;
  if (!out->scales || !q || !zps) {
    s = nomem(c);
    goto done;
  }
  for (int64_t j = 0; j < ch; j++) out->scales[j] = 0;
  int64_t zeros = 0;
  for (int64_t r = 0; r < rows; r++)
    for (int64_t k = 0; k < cols; k++) {
      float a = fabsf(v[r * cols + k]);
      int64_t j = axis == 1 ? k : r;
      if (a > out->scales[j]) out->scales[j] = a;
      if (v[r * cols + k] == 0.0f) zeros++;
    }
  L->w_scale_min = INFINITY;
  L->w_scale_max = 0;
  for (int64_t j = 0; j < ch; j++) {
    /* an all-zero channel (a pruned neuron) gets scale 1: its int8 values are 0 anyway */
    out->scales[j] = out->scales[j] > 0 ? out->scales[j] / 127.0f : 1.0f;
    if (out->scales[j] < L->w_scale_min) L->w_scale_min = out->scales[j];
    if (out->scales[j] > L->w_scale_max) L->w_scale_max = out->scales[j];
  }
  for (int64_t r = 0; r < rows; r++)
    for (int64_t k = 0; k < cols; k++) {
      int64_t j = axis == 1 ? k : r;
      float x = nearbyintf(v[r * cols + k] / out->scales[j]);
      if (x > 127) x = 127;
      if (x < -127) x = -127;
      q[r * cols + k] = (int8_t)x;
    }
  L->sparsity = rows > 0 && cols > 0 ? (double)zeros / (double)(rows * cols) : 0;
  snprintf(out->q, sizeof out->q, "%s_quantized", w->name);
  snprintf(out->scale, sizeof out->scale, "%s_scale", w->name);
  snprintf(out->zp, sizeof out->zp, "%s_zero_point", w->name);
  snprintf(out->dq, sizeof out->dq, "%s_dequantized", w->name);
  if ((s = add_init(c, out->q, KILN_DTYPE_INT8, w->dims, 2, q)) ||
      (s = add_init(c, out->scale, KILN_DTYPE_FLOAT, &ch, 1, out->scales)))
    goto done;
  /* The zero point (all 0) is written although ONNX makes it optional: ONNX Runtime's
   * QDQ -> QGemm/QLinearMatMul fusion moves a weight DequantizeLinear's inputs by
   * position and declines one without it (then it runs float Gemm on weights it
   * dequantizes every call). One byte per channel. */
  s = add_init(c, out->zp, KILN_DTYPE_INT8, &ch, 1, zps);
done:
  free(q);
  free(zps);
  return s;
}

static kiln_status weight_dq(qctx *c, const wq *w, int axis) {
  char name[320];
  snprintf(name, sizeof name, "%s_DequantizeLinear", w->q);
  const char *in[3] = {w->q, w->scale, w->zp};
  const char *out[1] = {w->dq};
  kiln_ir_node *n = NULL;
  kiln_status s = add_node(c, "DequantizeLinear", name, in, 3, out, 1, &n);
  if (!s) s = kiln_ir_node_set_int(n, "axis", axis, c->err);
  return s;
}

/* Gemm bias b ([N] float) as int32 at s_x * s_w[j]; *dq names its DequantizeLinear output. */
static kiln_status bias_int32(qctx *c, const kiln_ir_tensor *b, float sx, const wq *w,
                              char *dq, size_t cap) {
  int64_t n = w->channels;
  int32_t *q = malloc((size_t)n * sizeof(int32_t));
  float *sc = malloc((size_t)n * sizeof(float));
  int32_t *zp = calloc((size_t)n, sizeof(int32_t));
  kiln_status s = KILN_OK;
  if (!q || !sc || !zp) {
    s = nomem(c);
    goto done;
  }
  const float *bv = b->data;
  for (int64_t j = 0; j < n; j++) {
    sc[j] = sx * w->scales[j];
    double v = nearbyint((double)bv[j] / (double)sc[j]);
    if (v > 2147483647.0) v = 2147483647.0;
    if (v < -2147483647.0) v = -2147483647.0;
    q[j] = (int32_t)v;
  }
  char qn[300], sn[300], zn[300], name[320];
  snprintf(qn, sizeof qn, "%s_quantized", b->name);
  snprintf(sn, sizeof sn, "%s_scale", b->name);
  snprintf(zn, sizeof zn, "%s_zero_point", b->name);
  snprintf(dq, cap, "%s_dequantized", b->name);
  snprintf(name, sizeof name, "%s_DequantizeLinear", qn);
  (void)zn;
  if ((s = add_init(c, qn, KILN_DTYPE_INT32, &n, 1, q)) ||
      (s = add_init(c, sn, KILN_DTYPE_FLOAT, &n, 1, sc)))
    goto done;
  const char *in[2] = {qn, sn}; /* zero point omitted: 0 of int32 (ORT fuses this) */
  const char *out[1] = {dq};
  kiln_ir_node *node = NULL;
  if (!(s = add_node(c, "DequantizeLinear", name, in, 2, out, 1, &node)))
    s = kiln_ir_node_set_int(node, "axis", 0, c->err);
done:
  free(q);
  free(sc);
  free(zp);
  return s;
}

static void note(kiln_quant_layer *L, const char *text) {
  size_t len = strlen(L->note);
  snprintf(L->note + len, sizeof L->note - len, "%s%s", len ? "; " : "", text);
}

static int64_t tensor_bytes(const kiln_ir_tensor *t) {
  return t ? (int64_t)t->bytes : 0;
}

/* The float bias of a Gemm, when it is a [N] initializer. */
static const kiln_ir_tensor *gemm_bias(const kiln_ir_graph *g, const kiln_ir_node *n, int64_t N) {
  if (!qz_op(n, "Gemm") || n->n_inputs < 3 || !n->inputs[2][0]) return NULL;
  const kiln_ir_tensor *b = kiln_ir_find_initializer(g, n->inputs[2]);
  if (!b || b->dtype != KILN_DTYPE_FLOAT || b->rank != 1 || b->dims[0] != N) return NULL;
  return b;
}

/* QDQ rewrite of one Gemm/MatMul. */
static kiln_status layer_qdq(qctx *c, const kiln_ir_node *n, const kiln_ir_tensor *w, int axis,
                             kiln_quant_layer *L) {
  const act_q *a;
  wq W = {0};
  kiln_status s;
  if ((s = activation(c, n->inputs[0], &a))) return s;
  if ((s = weight(c, w, axis, &W, L)) || (s = weight_dq(c, &W, axis))) goto done;
  L->x_scale = a->s;
  L->x_zero_point = a->z;
  const char *ins[3] = {a->dq, W.dq, n->n_inputs > 2 ? n->inputs[2] : ""};
  char bdq[300];
  const kiln_ir_tensor *b = gemm_bias(c->g, n, W.channels);
  if (b && qz_attr_float(n, "beta", 1.0f) == 1.0f) {
    if ((s = bias_int32(c, b, a->s, &W, bdq, sizeof bdq))) goto done;
    ins[2] = bdq;
    L->bias_int32 = 1;
  } else if (n->n_inputs > 2 && n->inputs[2][0]) {
    const kiln_ir_tensor *bf = kiln_ir_find_initializer(c->g, n->inputs[2]);
    c->layer_bytes += tensor_bytes(bf);
    note(L, "bias kept float (not a [N] initializer or beta != 1)");
  } else if (qz_op(n, "MatMul")) {
    note(L, "a bias in a following Add stays float");
  }
  s = qz_copy_node(c->o, n, ins, c->err);
  snprintf(L->form, sizeof L->form, "QDQ");
done:
  free(W.scales);
  return s;
}

/* QLinearMatMul (static) or MatMulInteger (dynamic) rewrite; the bias is added in float. */
static kiln_status layer_qop(qctx *c, const kiln_ir_node *n, const kiln_ir_tensor *w,
                             kiln_quant_layer *L) {
  const act_q *a;
  wq W = {0};
  kiln_status s;
  char mm[300], name[320], t1[300], t2[300], t3[300];
  const char *y = n->outputs[0];
  int has_bias = qz_op(n, "Gemm") && n->n_inputs > 2 && n->inputs[2][0];
  snprintf(mm, sizeof mm, "%s_matmul", n->name);
  if ((s = activation(c, n->inputs[0], &a))) return s;
  if ((s = weight(c, w, 1, &W, L))) goto done;
  if (c->opt.dynamic) {
    snprintf(t1, sizeof t1, "%s_matmul_int32", n->name);
    snprintf(t2, sizeof t2, "%s_matmul_float", n->name);
    snprintf(t3, sizeof t3, "%s_matmul_scale", n->name);
    const char *in[4] = {a->q, W.q, a->zp, W.zp};
    const char *o1[1] = {t1};
    snprintf(name, sizeof name, "%s_MatMulInteger", n->name);
    if ((s = add_node(c, "MatMulInteger", name, in, 4, o1, 1, NULL))) goto done;
    kiln_ir_node *cast = NULL;
    const char *ci[1] = {t1};
    const char *co[1] = {t2};
    snprintf(name, sizeof name, "%s_Cast", n->name);
    if ((s = add_node(c, "Cast", name, ci, 1, co, 1, &cast)) ||
        (s = kiln_ir_node_set_int(cast, "to", KILN_DTYPE_FLOAT, c->err)))
      goto done;
    const char *si[2] = {a->scale, W.scale};
    const char *so[1] = {t3};
    snprintf(name, sizeof name, "%s_ScaleMul", n->name);
    if ((s = add_node(c, "Mul", name, si, 2, so, 1, NULL))) goto done;
    const char *mi[2] = {t2, t3};
    const char *mo[1] = {has_bias ? mm : y};
    snprintf(name, sizeof name, "%s_Mul", n->name);
    if ((s = add_node(c, "Mul", name, mi, 2, mo, 1, NULL))) goto done;
    snprintf(L->form, sizeof L->form, "MatMulInteger");
  } else {
    const kiln_tensor_range *r;
    char key[300];
    snprintf(key, sizeof key, "matmul:%s", n->name);
    if (!(r = kiln_calibration_find(c->cal, key))) {
      s = kiln_error_set(c->err, KILN_E_INVALID,
                         "quantize: the calibration has no range for the product of node \"%s\"",
                         n->name);
      goto done;
    }
    float ys;
    int8_t yz;
    kiln_qparams_int8(r->lo, r->hi, &ys, &yz);
    L->y_scale = ys;
    L->y_zero_point = yz;
    L->x_scale = a->s;
    L->x_zero_point = a->z;
    snprintf(t1, sizeof t1, "%s_output_scale", n->name);
    snprintf(t2, sizeof t2, "%s_output_zero_point", n->name);
    snprintf(t3, sizeof t3, "%s_output_quantized", n->name);
    int64_t keep = c->layer_bytes;
    if ((s = add_init(c, t1, KILN_DTYPE_FLOAT, NULL, 0, &ys)) ||
        (s = add_init(c, t2, KILN_DTYPE_INT8, NULL, 0, &yz)))
      goto done;
    c->layer_bytes = keep;
    const char *in[8] = {a->q, a->scale, a->zp, W.q, W.scale, W.zp, t1, t2};
    const char *o1[1] = {t3};
    snprintf(name, sizeof name, "%s_QLinearMatMul", n->name);
    if ((s = add_node(c, "QLinearMatMul", name, in, 8, o1, 1, NULL))) goto done;
    const char *di[3] = {t3, t1, t2};
    const char *dout[1] = {has_bias ? mm : y};
    snprintf(name, sizeof name, "%s_output_DequantizeLinear", n->name);
    if ((s = add_node(c, "DequantizeLinear", name, di, 3, dout, 1, NULL))) goto done;
    snprintf(L->form, sizeof L->form, "QLinearMatMul");
  }
  if (has_bias) {
    const char *bi[2] = {mm, n->inputs[2]};
    const char *bo[1] = {y};
    snprintf(name, sizeof name, "%s_BiasAdd", n->name);
    if ((s = add_node(c, "Add", name, bi, 2, bo, 1, NULL))) goto done;
    c->layer_bytes += tensor_bytes(kiln_ir_find_initializer(c->g, n->inputs[2]));
    note(L, "bias added in float after the product");
  }
done:
  free(W.scales);
  return s;
}

static const char *float_reason(const kiln_ir_graph *g, const kiln_ir_node *n) {
  int out = qz_is_output(g, n->outputs[0]);
  int p = n->n_inputs > 0 ? qz_producer(g, n->inputs[0]) : -1;
  int after_mm = p >= 0 && (qz_op(&g->nodes[p], "Gemm") || qz_op(&g->nodes[p], "MatMul"));
  if (qz_op(n, "Softmax") || qz_op(n, "LogSoftmax"))
    return "probability output kept float (int8 would round small probabilities to 0; "
           "exp/normalization is cheap)";
  if (qz_op(n, "Sigmoid") && out)
    return "probability output kept float (int8 steps of 1/255 would coarsen a decision "
           "threshold)";
  if (qz_op(n, "Relu") && after_mm)
    return "activation on the dequantized product (an int8 runtime fuses it into the Gemm; "
           "its output is the next layer's quantized input)";
  if (qz_op(n, "Concat"))
    return "joins float rows (a copy); the layer reading it quantizes the whole row with one "
           "scale, as an int8 Concat with a shared scale would, with one QuantizeLinear";
  if (qz_op(n, "Add") && after_mm) return "bias Add after a MatMul: float";
  if (qz_op(n, "ReduceMean") || qz_op(n, "Sqrt") || qz_op(n, "Reciprocal"))
    return "normalization statistic (row mean, square root): float, a few operations per "
           "row; int8 steps would distort the small mean squares it divides by";
  if (qz_op(n, "Gemm") || qz_op(n, "MatMul")) return NULL;
  return "not a matrix product: element-wise/shape op runs in float";
}

kiln_status kiln_quantize(const kiln_ir_graph *g_in, const kiln_calibration *cal,
                          const kiln_quantize_options *opt, kiln_ir_graph **out,
                          kiln_quant_report *report, kiln_error *err) {
  kiln_quant_report local;
  kiln_quant_report *rep = report ? report : &local;
  memset(rep, 0, sizeof *rep);
  qctx c;
  memset(&c, 0, sizeof c);
  c.err = err;
  c.cal = cal;
  c.rep = rep;
  if (opt) c.opt = *opt;
  else kiln_quantize_options_init(&c.opt);
  if (!g_in || !out) return kiln_error_set(err, KILN_E_INVALID, "quantize: graph or out is NULL");
  if (!c.opt.dynamic && !cal)
    return kiln_error_set(err, KILN_E_INVALID,
                          "quantize: static quantization needs a calibration (or use dynamic)");
  if (c.opt.opset < 13) c.opt.opset = 13;
  kiln_ir_graph *g = NULL, *o = NULL;
  kiln_status s = qz_clone(g_in, 1, 1, &g, err); /* a private copy to toposort */
  if (s) return s;
  if ((s = kiln_ir_toposort(g, err))) goto fail;
  c.g = g;
  if ((s = qz_clone(g, 0, 0, &o, err))) goto fail;
  c.o = o;
  int64_t opset = kiln_ir_opset_version(g, "");
  if ((s = kiln_ir_set_opset(o, "", opset > c.opt.opset ? opset : c.opt.opset, err))) goto fail;
  rep->layers = calloc((size_t)(g->n_nodes ? g->n_nodes : 1), sizeof *rep->layers);
  rep->kept_float = calloc((size_t)(g->n_nodes ? g->n_nodes : 1), sizeof *rep->kept_float);
  if (!rep->layers || !rep->kept_float) {
    s = nomem(&c);
    goto fail;
  }
  if (c.opt.dynamic) snprintf(rep->method, sizeof rep->method, "dynamic (run-time ranges)");
  else if (cal->method == KILN_RANGE_PERCENTILE)
    snprintf(rep->method, sizeof rep->method, "percentile %g", cal->percentile);
  else snprintf(rep->method, sizeof rep->method, "%s", kiln_range_method_name(cal->method));
  snprintf(rep->format, sizeof rep->format, "%s",
           c.opt.dynamic ? "dynamic (MatMulInteger)"
                         : c.opt.format == KILN_QFORMAT_QOPERATOR ? "QOperator" : "QDQ");
  rep->calibration_rows = cal && !c.opt.dynamic ? cal->rows : 0;

  for (int i = 0; i < g->n_nodes; i++) {
    const kiln_ir_node *n = &g->nodes[i];
    if (qz_op(n, "Gemm") || qz_op(n, "MatMul")) {
      kiln_quant_layer *L = &rep->layers[rep->n_layers++];
      snprintf(L->node, sizeof L->node, "%s", n->name);
      snprintf(L->op, sizeof L->op, "%s", n->op_type);
      const kiln_ir_tensor *w = kiln_ir_find_initializer(g, n->n_inputs > 1 ? n->inputs[1] : "");
      L->bytes_before = tensor_bytes(w);
      if (qz_op(n, "Gemm") && n->n_inputs > 2 && n->inputs[2][0])
        L->bytes_before += tensor_bytes(kiln_ir_find_initializer(g, n->inputs[2]));
      const char *why = NULL;
      int trans_a = (int)qz_attr_int(n, "transA", 0), trans_b = (int)qz_attr_int(n, "transB", 0);
      if (!w) why = "weight is not an initializer (two activations): kept float";
      else if (w->dtype != KILN_DTYPE_FLOAT || w->rank != 2)
        why = "weight is not a float matrix: kept float";
      else if (trans_a) why = "transA = 1 is not quantized: kept float";
      else if (qz_attr_float(n, "alpha", 1.0f) != 1.0f) why = "alpha != 1: kept float";
      else if ((c.opt.dynamic || c.opt.format == KILN_QFORMAT_QOPERATOR) && trans_b)
        why = "transB = 1 has no QOperator form here: kept float";
      else if ((c.opt.dynamic || c.opt.format == KILN_QFORMAT_QOPERATOR) &&
               qz_attr_float(n, "beta", 1.0f) != 1.0f)
        why = "beta != 1 has no QOperator form here: kept float";
      if (w && w->rank == 2) {
        L->in_features = trans_b ? w->dims[1] : w->dims[0];
        L->out_features = trans_b ? w->dims[0] : w->dims[1];
      }
      c.layer_bytes = 0;
      if (why) {
        snprintf(L->form, sizeof L->form, "float");
        note(L, why);
        if ((s = qz_copy_node(o, n, NULL, err))) goto fail;
        L->bytes_after = L->bytes_before;
        continue;
      }
      if (c.opt.dynamic || c.opt.format == KILN_QFORMAT_QOPERATOR)
        s = layer_qop(&c, n, w, L);
      else s = layer_qdq(&c, n, w, trans_b ? 0 : 1, L);
      if (s) goto fail;
      L->quantized = 1;
      L->bytes_after = c.layer_bytes;
      continue;
    }
    const char *why = float_reason(g, n);
    if (why) {
      kiln_quant_float_node *f = &rep->kept_float[rep->n_float++];
      snprintf(f->node, sizeof f->node, "%s", n->name);
      snprintf(f->op, sizeof f->op, "%s", n->op_type);
      snprintf(f->reason, sizeof f->reason, "%s", why);
    }
    if ((s = qz_copy_node(o, n, NULL, err))) goto fail;
  }
  /* original initializers still read (biases kept float, other constants) */
  for (int i = 0; i < g->n_initializers; i++) {
    const kiln_ir_tensor *t = &g->initializers[i];
    if (kiln_ir_find_initializer(o, t->name) || !qz_consumers(o, t->name, NULL)) continue;
    if ((s = kiln_ir_add_initializer(o, t->name, t->dtype, t->dims, t->rank, t->data, err)))
      goto fail;
  }
  if ((s = kiln_ir_toposort(o, err))) goto fail;
  for (int i = 0; i < g->n_initializers; i++) rep->bytes_before += (int64_t)g->initializers[i].bytes;
  for (int i = 0; i < o->n_initializers; i++) rep->bytes_after += (int64_t)o->initializers[i].bytes;
  for (int i = 0; i < c.n_acts; i++) free(c.acts[i].tensor);
  free(c.acts);
  kiln_ir_free(g);
  if (!report) kiln_quant_report_free(&local);
  *out = o;
  return KILN_OK;
fail:
  for (int i = 0; i < c.n_acts; i++) free(c.acts[i].tensor);
  free(c.acts);
  kiln_ir_free(g);
  kiln_ir_free(o);
  kiln_quant_report_free(rep);
  if (s == KILN_OK) s = KILN_E_INVALID;
  return s;
}

/* kiln quantize — calibration: runs the float graph through kiln's runtime with every
 * tensor to be quantized added as an extra graph output, and gathers min/max (first
 * pass) and a histogram over [min, max] (second pass) per tensor. The range methods
 * then work on the histogram alone, so switching method needs no second run. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kiln/infer.h"
#include "qz_internal.h"

void kiln_calibrate_options_init(kiln_calibrate_options *opt) {
  memset(opt, 0, sizeof *opt);
  opt->method = KILN_RANGE_PERCENTILE;
  opt->percentile = 99.99;
  opt->max_rows = 500;
  opt->batch_size = 128;
}

kiln_status kiln_range_method_parse(const char *name, kiln_range_method *out, kiln_error *err) {
  if (name && strcmp(name, "minmax") == 0) *out = KILN_RANGE_MINMAX;
  else if (name && strcmp(name, "percentile") == 0) *out = KILN_RANGE_PERCENTILE;
  else if (name && strcmp(name, "mse") == 0)
    *out = KILN_RANGE_MSE;
  else
    return kiln_error_set(err, KILN_E_INVALID,
                          "range method \"%s\": expected minmax, percentile or mse",
                          name ? name : "(null)");
  return KILN_OK;
}

const char *kiln_range_method_name(kiln_range_method m) {
  switch (m) {
    case KILN_RANGE_MINMAX: return "minmax";
    case KILN_RANGE_PERCENTILE: return "percentile";
    case KILN_RANGE_MSE: return "mse";
  }
  return "?";
}

void kiln_qparams_int8(double lo, double hi, float *scale, int8_t *zero_point) {
  if (lo > 0) lo = 0;
  if (hi < 0) hi = 0;
  double s = (hi - lo) / 255.0;
  if (!(s > 0) || !isfinite(s)) s = 1.0;
  double zp = nearbyint(-128.0 - lo / s);
  if (zp < -128) zp = -128;
  if (zp > 127) zp = 127;
  *scale = (float)s;
  *zero_point = (int8_t)zp;
}

void kiln_calibration_free(kiln_calibration *c) {
  if (!c) return;
  for (int i = 0; i < c->n; i++) {
    free(c->t[i].name);
    free(c->t[i].hist);
  }
  free(c->t);
  memset(c, 0, sizeof *c);
}

const kiln_tensor_range *kiln_calibration_find(const kiln_calibration *c, const char *name) {
  for (int i = 0; c && i < c->n; i++)
    if (strcmp(c->t[i].name, name) == 0) return &c->t[i];
  return NULL;
}

/* The value below which a share q of the observations lies (linear within a bin). */
static double hist_quantile(const kiln_tensor_range *t, double q) {
  double width = (t->max - t->min) / KILN_CALIB_BINS;
  double target = q * (double)t->count, seen = 0;
  for (int b = 0; b < KILN_CALIB_BINS; b++) {
    double c = (double)t->hist[b];
    if (c > 0 && seen + c >= target) {
      double f = (target - seen) / c;
      return t->min + width * (b + f);
    }
    seen += c;
  }
  return t->max;
}

static double quant_mse(const kiln_tensor_range *t, double lo, double hi) {
  float s;
  int8_t zp;
  kiln_qparams_int8(lo, hi, &s, &zp);
  double width = (t->max - t->min) / KILN_CALIB_BINS, e = 0;
  for (int b = 0; b < KILN_CALIB_BINS; b++) {
    if (!t->hist[b]) continue;
    double c = t->min + width * (b + 0.5);
    double q = nearbyint(c / s) + zp;
    if (q < -128) q = -128;
    if (q > 127) q = 127;
    double d = c - (q - zp) * s;
    e += (double)t->hist[b] * d * d;
  }
  return e;
}

static void choose_range(kiln_tensor_range *t, kiln_range_method m, double p) {
  double lo = t->min, hi = t->max;
  if (t->count == 0 || !(t->max > t->min)) {
    /* constant tensor: nothing to clip */
  } else if (m == KILN_RANGE_PERCENTILE) {
    lo = hist_quantile(t, 1.0 - p / 100.0);
    hi = hist_quantile(t, p / 100.0);
  } else if (m == KILN_RANGE_MSE) {
    double l0 = lo < 0 ? lo : 0, h0 = hi > 0 ? hi : 0, best = INFINITY, bf = 1.0;
    for (int k = 200; k >= 1; k--) {
      double f = k / 200.0, e = quant_mse(t, l0 * f, h0 * f);
      if (e < best) {
        best = e;
        bf = f;
      }
    }
    lo = l0 * bf;
    hi = h0 * bf;
  }
  t->lo = lo < 0 ? lo : 0;
  t->hi = hi > 0 ? hi : 0;
}

kiln_status kiln_calibration_set_method(kiln_calibration *c, kiln_range_method method,
                                        double percentile, kiln_error *err) {
  if (method == KILN_RANGE_PERCENTILE && !(percentile > 50.0 && percentile <= 100.0))
    return kiln_error_set(err, KILN_E_RANGE,
                          "calibration: percentile %g is outside (50, 100]", percentile);
  if (method != KILN_RANGE_MINMAX && method != KILN_RANGE_PERCENTILE &&
      method != KILN_RANGE_MSE)
    return kiln_error_set(err, KILN_E_INVALID, "calibration: unknown range method %d",
                          (int)method);
  for (int i = 0; i < c->n; i++) choose_range(&c->t[i], method, percentile);
  c->method = method;
  c->percentile = percentile;
  return KILN_OK;
}

/* --- observers ------------------------------------------------------------------ */

typedef struct observer {
  char *name;  /* what the calibration calls it */
  char *value; /* the graph value it reads */
  int out;     /* index among the calibration graph's outputs */
} observer;

static kiln_status add_observer(observer **obs, int *n, const char *name, const char *value,
                                kiln_error *err) {
  for (int i = 0; i < *n; i++)
    if (strcmp((*obs)[i].name, name) == 0) return KILN_OK;
  observer *p = realloc(*obs, (size_t)(*n + 1) * sizeof *p);
  if (!p) return kiln_error_set(err, KILN_E_NOMEM, "calibration: out of memory");
  *obs = p;
  p[*n].name = strdup(name);
  p[*n].value = strdup(value);
  p[*n].out = -1;
  (*n)++;
  if (!p[*n - 1].name || !p[*n - 1].value)
    return kiln_error_set(err, KILN_E_NOMEM, "calibration: out of memory");
  return KILN_OK;
}

/* The calibration graph: g plus, per quantizable Gemm/MatMul, its input, its output
 * (after a Relu that follows alone) and its pre-bias product as graph outputs. */
static kiln_status build_observed(const kiln_ir_graph *g, kiln_ir_graph **out, observer **obs,
                                  int *n_obs, kiln_error *err) {
  kiln_ir_graph *c = NULL;
  kiln_status s = qz_clone(g, 1, 1, &c, err);
  if (s) return s;
  char buf[300];
  for (int i = 0; i < g->n_nodes && !s; i++) {
    const kiln_ir_node *n = &g->nodes[i];
    const kiln_ir_tensor *w = qz_weight(g, n);
    if (!w) continue;
    if ((s = add_observer(obs, n_obs, n->inputs[0], n->inputs[0], err))) break;
    const char *y = n->outputs[0];
    int last;
    if (qz_consumers(g, y, &last) == 1 && !qz_is_output(g, y) && qz_op(&g->nodes[last], "Relu"))
      y = g->nodes[last].outputs[0];
    if ((s = add_observer(obs, n_obs, y, y, err))) break;
    snprintf(buf, sizeof buf, "matmul:%s", n->name);
    if (qz_op(n, "MatMul")) {
      s = add_observer(obs, n_obs, buf, n->outputs[0], err);
    } else if (qz_attr_int(n, "transA", 0) == 0 && qz_attr_int(n, "transB", 0) == 0) {
      char mm[300];
      snprintf(mm, sizeof mm, "__kiln_calib_matmul_%d", i);
      const char *ins[2] = {n->inputs[0], n->inputs[1]};
      const char *outs[1] = {mm};
      if (!(s = kiln_ir_add_node(c, "MatMul", mm, ins, 2, outs, 1, NULL, err)))
        s = add_observer(obs, n_obs, buf, mm, err);
    }
  }
  for (int i = 0; i < *n_obs && !s; i++) {
    observer *o = &(*obs)[i];
    for (int k = 0; k < c->n_outputs; k++)
      if (strcmp(c->outputs[k].name, o->value) == 0) o->out = k;
    for (int k = 0; k < i && o->out < 0; k++)
      if (strcmp((*obs)[k].value, o->value) == 0) o->out = (*obs)[k].out;
    if (o->out < 0) {
      if (kiln_ir_find_initializer(g, o->value)) continue; /* a constant input: not observed */
      const char *v = o->value;
      char id[320];
      if (qz_producer(g, v) < 0) { /* a graph input: the runtime wants a node's output */
        snprintf(id, sizeof id, "__kiln_calib_input_%d", i);
        const char *ins[1] = {v};
        const char *outs[1] = {id};
        if ((s = kiln_ir_add_node(c, "Identity", id, ins, 1, outs, 1, NULL, err))) break;
        v = id;
      }
      o->out = c->n_outputs;
      s = kiln_ir_add_output(c, v, KILN_DTYPE_FLOAT, NULL, NULL, -1, err);
    }
  }
  if (s) {
    kiln_ir_free(c);
    return s;
  }
  *out = c;
  return KILN_OK;
}

/* Rows [r0, r0 + rows) of x as dense floats in buf. */
static void dense_rows(const kiln_matrix *x, int64_t r0, int64_t rows, float *buf) {
  if (!kiln_matrix_is_sparse(x)) {
    memcpy(buf, x->values + r0 * x->cols, (size_t)(rows * x->cols) * sizeof(float));
    return;
  }
  memset(buf, 0, (size_t)(rows * x->cols) * sizeof(float));
  for (int64_t r = 0; r < rows; r++)
    for (int64_t k = x->row_ptr[r0 + r]; k < x->row_ptr[r0 + r + 1]; k++)
      buf[r * x->cols + x->col_idx[k]] = x->values ? x->values[k] : 1.0f;
}

/* Checks one calibration matrix against graph input `in`. */
static kiln_status check_input(const kiln_ir_graph *g, const kiln_ir_value *in,
                               const kiln_matrix *x, int64_t rows, int multi, kiln_error *err) {
  if (in->dtype != KILN_DTYPE_FLOAT || in->rank != 2)
    return kiln_error_set(err, KILN_E_UNSUPPORTED,
                          "calibrate: input \"%s\" is %s of rank %d (float [batch, width] expected)",
                          in->name, kiln_dtype_name(in->dtype), in->rank);
  if (in->dims[1].value >= 0 && x->cols != in->dims[1].value)
    return kiln_error_set(err, KILN_E_SHAPE,
                          "calibration data%s%s%s has %lld columns but input \"%s\" of graph \"%s\" "
                          "expects %lld",
                          multi ? " for \"" : "", multi ? in->name : "", multi ? "\"" : "",
                          (long long)x->cols, in->name, g->name ? g->name : "",
                          (long long)in->dims[1].value);
  if (!kiln_matrix_is_sparse(x) && !x->values && x->rows > 0)
    return kiln_error_set(err, KILN_E_INVALID, "calibration data for \"%s\" has no values",
                          in->name);
  kiln_matrix head = *x;
  head.rows = rows;
  head.borrowed = 1;
  int64_t br, bc;
  if (kiln_matrix_find_nonfinite(&head, &br, &bc)) {
    float v = kiln_matrix_get(&head, br, bc);
    return kiln_error_set(err, KILN_E_RANGE,
                          "calibration data%s%s%s row %lld, column %lld is %s (finite values "
                          "expected)",
                          multi ? " for \"" : "", multi ? in->name : "", multi ? "\"" : "",
                          (long long)br, (long long)bc, isnan(v) ? "NaN" : "infinite");
  }
  return KILN_OK;
}

static kiln_status calibrate_inputs(const kiln_ir_graph *g, const kiln_matrix *const *xs,
                                    const kiln_calibrate_options *opt_in, kiln_calibration *out,
                                    kiln_error *err);

kiln_status kiln_calibrate(const kiln_ir_graph *g, const kiln_matrix *x,
                           const kiln_calibrate_options *opt, kiln_calibration *out,
                           kiln_error *err) {
  memset(out, 0, sizeof *out);
  if (!g || !x) return kiln_error_set(err, KILN_E_INVALID, "calibrate: graph or data is NULL");
  if (g->n_inputs != 1)
    return kiln_error_set(err, KILN_E_UNSUPPORTED,
                          "calibrate: graph \"%s\" has %d inputs (one float input expected; give "
                          "one matrix per input with kiln_calibrate_io)",
                          g->name ? g->name : "", g->n_inputs);
  const kiln_matrix *xs[1] = {x};
  return calibrate_inputs(g, xs, opt, out, err);
}

kiln_status kiln_calibrate_io(const kiln_ir_graph *g, const kiln_io *x,
                              const kiln_calibrate_options *opt, kiln_calibration *out,
                              kiln_error *err) {
  memset(out, 0, sizeof *out);
  if (!g || !x) return kiln_error_set(err, KILN_E_INVALID, "calibrate: graph or data is NULL");
  if (g->n_inputs < 1 || g->n_inputs > KILN_MAX_IO)
    return kiln_error_set(err, KILN_E_UNSUPPORTED, "calibrate: graph \"%s\" has %d inputs (1..%d)",
                          g->name ? g->name : "", g->n_inputs, KILN_MAX_IO);
  if (x->n != g->n_inputs)
    return kiln_error_set(err, KILN_E_INVALID,
                          "calibrate: %d calibration matrices for the %d inputs of graph \"%s\"",
                          x->n, g->n_inputs, g->name ? g->name : "");
  const kiln_matrix *xs[KILN_MAX_IO] = {0};
  int named = x->n > 0 && x->names[0] != NULL;
  for (int j = 0; j < x->n; j++) {
    if ((x->names[j] != NULL) != named)
      return kiln_error_set(err, KILN_E_INVALID,
                            "calibrate: name every calibration matrix or none (matrix %d)", j);
    if (!x->data[j])
      return kiln_error_set(err, KILN_E_INVALID, "calibrate: calibration matrix %d is NULL", j);
    int i = j;
    if (named) {
      for (i = 0; i < g->n_inputs; i++)
        if (!strcmp(g->inputs[i].name, x->names[j])) break;
      if (i == g->n_inputs)
        return kiln_error_set(err, KILN_E_INVALID,
                              "calibrate: graph \"%s\" has no input named \"%s\"",
                              g->name ? g->name : "", x->names[j]);
    }
    if (xs[i])
      return kiln_error_set(err, KILN_E_INVALID, "calibrate: input \"%s\" is given twice",
                            g->inputs[i].name);
    xs[i] = x->data[j];
  }
  return calibrate_inputs(g, xs, opt, out, err);
}

/* xs[i]: the rows of graph input i (every one given, the same rows). */
static kiln_status calibrate_inputs(const kiln_ir_graph *g, const kiln_matrix *const *xs,
                                    const kiln_calibrate_options *opt_in, kiln_calibration *out,
                                    kiln_error *err) {
  kiln_calibrate_options opt;
  if (opt_in) opt = *opt_in;
  else kiln_calibrate_options_init(&opt);
  if (opt.batch_size <= 0) opt.batch_size = 128;
  if (opt.method == KILN_RANGE_PERCENTILE && !(opt.percentile > 50.0 && opt.percentile <= 100.0))
    return kiln_error_set(err, KILN_E_RANGE,
                          "calibrate: percentile %g is outside (50, 100]", opt.percentile);
  int ni = g->n_inputs, multi = ni > 1;
  int64_t rows = xs[0]->rows;
  for (int i = 1; i < ni; i++)
    if (xs[i]->rows != rows)
      return kiln_error_set(err, KILN_E_SHAPE,
                            "calibration data: %lld rows for input \"%s\" but %lld for \"%s\" "
                            "(one row per example in every input)",
                            (long long)xs[i]->rows, g->inputs[i].name, (long long)rows,
                            g->inputs[0].name);
  if (opt.max_rows > 0 && rows > opt.max_rows) rows = opt.max_rows;
  if (rows <= 0)
    return kiln_error_set(err, KILN_E_INVALID, "calibration data is empty (0 rows; at least 1 needed)");
  for (int i = 0; i < ni; i++) {
    kiln_status cs = check_input(g, &g->inputs[i], xs[i], rows, multi, err);
    if (cs) return cs;
  }

  observer *obs = NULL;
  int n_obs = 0;
  kiln_ir_graph *cg = NULL;
  kiln_session *sess = NULL;
  kiln_tensor_view *outs = NULL;
  float *bufs[KILN_MAX_IO] = {0};
  kiln_tensor_view ivs[KILN_MAX_IO];
  kiln_status s = build_observed(g, &cg, &obs, &n_obs, err);
  if (s) goto done;
  kiln_session_options so;
  kiln_session_options_init(&so);
  so.max_batch = opt.batch_size;
  if ((s = kiln_session_create(cg, &so, &sess, err))) {
    kiln_error_prefix(err, "calibrate");
    goto done;
  }
  outs = calloc((size_t)cg->n_outputs, sizeof *outs);
  int bufs_ok = 1;
  for (int i = 0; i < ni; i++)
    if (!(bufs[i] = malloc((size_t)(opt.batch_size * (xs[i]->cols ? xs[i]->cols : 1)) *
                           sizeof(float))))
      bufs_ok = 0;
  out->t = calloc((size_t)(n_obs ? n_obs : 1), sizeof *out->t);
  if (!outs || !bufs_ok || !out->t) {
    s = kiln_error_set(err, KILN_E_NOMEM, "calibrate: out of memory");
    goto done;
  }
  out->n = n_obs;
  for (int i = 0; i < n_obs; i++) {
    out->t[i].name = strdup(obs[i].name);
    out->t[i].hist = calloc(KILN_CALIB_BINS, sizeof(int64_t));
    out->t[i].min = INFINITY;
    out->t[i].max = -INFINITY;
    if (!out->t[i].name || !out->t[i].hist) {
      s = kiln_error_set(err, KILN_E_NOMEM, "calibrate: out of memory");
      goto done;
    }
  }
  for (int pass = 0; pass < 2; pass++) {
    for (int64_t r0 = 0; r0 < rows; r0 += opt.batch_size) {
      int64_t nr = rows - r0 < opt.batch_size ? rows - r0 : opt.batch_size;
      for (int i = 0; i < ni; i++) {
        dense_rows(xs[i], r0, nr, bufs[i]);
        memset(&ivs[i], 0, sizeof ivs[i]);
        ivs[i].dtype = KILN_DTYPE_FLOAT;
        ivs[i].rank = 2;
        ivs[i].dims[0] = nr;
        ivs[i].dims[1] = xs[i]->cols;
        ivs[i].data = bufs[i];
      }
      if ((s = kiln_session_run(sess, ivs, ni, outs, cg->n_outputs, err))) {
        kiln_error_prefix(err, "calibrate: rows %lld..%lld", (long long)r0,
                          (long long)(r0 + nr - 1));
        goto done;
      }
      for (int i = 0; i < n_obs; i++) {
        kiln_tensor_range *t = &out->t[i];
        if (obs[i].out < 0) continue;
        const kiln_tensor_view *v = &outs[obs[i].out];
        int64_t n = 1;
        for (int d = 0; d < v->rank; d++) n *= v->dims[d];
        const float *p = v->data;
        if (pass == 0) {
          for (int64_t k = 0; k < n; k++) {
            if (p[k] < t->min) t->min = p[k];
            if (p[k] > t->max) t->max = p[k];
          }
          t->count += n;
        } else {
          double w = (t->max - t->min) / KILN_CALIB_BINS;
          for (int64_t k = 0; k < n; k++) {
            int64_t b = w > 0 ? (int64_t)((p[k] - t->min) / w) : 0;
            if (b < 0) b = 0;
            if (b >= KILN_CALIB_BINS) b = KILN_CALIB_BINS - 1;
            t->hist[b]++;
          }
        }
      }
    }
  }
  for (int i = 0; i < n_obs; i++)
    if (out->t[i].count == 0) out->t[i].min = out->t[i].max = 0;
  out->rows = rows;
  s = kiln_calibration_set_method(out, opt.method, opt.percentile, err);
done:
  if (s) kiln_calibration_free(out);
  for (int i = 0; i < n_obs; i++) {
    free(obs[i].name);
    free(obs[i].value);
  }
  free(obs);
  free(outs);
  for (int i = 0; i < ni; i++) free(bufs[i]);
  kiln_session_free(sess);
  kiln_ir_free(cg);
  return s;
}

/* kiln drift — a reference and a candidate model on the same labeled rows: metric,
 * drop, changed predictions, output differences, per-class figures, verdict.
 * The layer-by-layer analysis is in drift_layers.c, ONNX Runtime in drift_ort.c. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "drift_internal.h"
#include "kiln/quantize.h"

void kiln_drift_options_init(kiln_drift_options *opt) {
  memset(opt, 0, sizeof *opt);
  opt->metric = KILN_DRIFT_ACCURACY;
  opt->k = 5;
  opt->runtime = KILN_DRIFT_RUNTIME_KILN;
  opt->batch = 1024;
  opt->threads = 1;
  opt->max_drop = NAN;
  opt->min_agreement = NAN;
  opt->tolerance = NAN;
  opt->standardize = 1;
  opt->layers = 1;
}

void kiln_drift_output_options_init(kiln_drift_output_options *o) {
  memset(o, 0, sizeof *o);
  o->metric = -1;
  o->max_drop = NAN;
  o->min_agreement = NAN;
  o->tolerance = NAN;
}

const char *kiln_drift_metric_name(kiln_drift_metric m) {
  switch (m) {
    case KILN_DRIFT_ACCURACY: return "accuracy";
    case KILN_DRIFT_TOP_K: return "top_k";
    case KILN_DRIFT_MAE: return "mae";
  }
  return "unknown";
}

void kiln_drift_data_from_dataset(const kiln_dataset *d, kiln_drift_data *out) {
  memset(out, 0, sizeof *out);
  if (!d) return;
  if (d->x.cols > 0 && d->x.rows > 0) out->x = &d->x;
  if (d->seq.count > 0) out->seq = &d->seq;
  out->y = &d->y;
}

void kiln_drift_report_free(kiln_drift_report *r) {
  if (!r) return;
  for (int i = 0; i < r->n_layers; i++) {
    free(r->layers[i].name);
    free(r->layers[i].op_type);
    free(r->layers[i].reference_value);
    free(r->layers[i].candidate_value);
  }
  free(r->layers);
  free(r->classes);
  for (int i = 0; i < r->n_outputs; i++) {
    free(r->outputs[i].name);
    free(r->outputs[i].classes);
  }
  free(r->outputs);
  free(r);
}

/* --- models -------------------------------------------------------------------------- */

void drift_model_free(drift_model *m) {
  if (m->own_session) kiln_session_free(m->session);
  if (m->own_graph) kiln_ir_free(m->graph);
  free(m->mean);
  free(m->std);
  memset(m, 0, sizeof *m);
}

/* Loads the graph (when given a path) and creates a session (unless need_session is 0,
 * for a candidate that ONNX Runtime runs), and reads the standardization metadata. */
static kiln_status model_open(const kiln_drift_model *src, const char *role,
                              const kiln_drift_options *opt, int need_session, drift_model *m,
                              kiln_error *err) {
  memset(m, 0, sizeof *m);
  m->role = role;
  m->path = src->path;
  kiln_status st;
  if (src->graph) {
    m->graph = (kiln_ir_graph *)src->graph;
  } else if (src->path) {
    if ((st = kiln_onnx_read_file(src->path, &m->graph, err))) {
      kiln_error_prefix(err, "%s model %s", role, src->path);
      return st;
    }
    m->own_graph = 1;
    /* Pruned weights stored compactly (kiln quantize --prune) become dense again. */
    if ((st = kiln_sparse_unpack(m->graph, NULL, err))) {
      kiln_error_prefix(err, "%s model %s", role, src->path);
      return st;
    }
  } else if (!src->session) {
    return kiln_error_set(err, KILN_E_INVALID, "drift: the %s model has no path, graph or session",
                          role);
  }
  if (m->graph) {
    kiln_session_options so;
    kiln_session_options_init(&so);
    so.max_batch = opt->batch;
    so.threads = opt->threads;
    if (need_session) {
      if ((st = kiln_session_create(m->graph, &so, &m->session, err))) {
        kiln_error_prefix(err, "%s model %s", role, src->path ? src->path : "(graph)");
        return st;
      }
      m->own_session = 1;
    }
  } else {
    m->session = src->session;
  }
  /* The inputs and outputs, from the session or the graph. */
  int n_in = m->session ? kiln_session_input_count(m->session) : m->graph->n_inputs;
  if (n_in < 1 || n_in > KILN_MAX_IO)
    return kiln_error_set(err, KILN_E_UNSUPPORTED, "%s model %s: %d inputs (drift takes 1..%d)",
                          role, drift_model_name(m), n_in, KILN_MAX_IO);
  m->n_in = n_in;
  m->width = 0;
  for (int i = 0; i < n_in; i++) {
    const kiln_ir_value *iv = m->session ? kiln_session_input(m->session, i) : &m->graph->inputs[i];
    if (!iv || iv->rank < 2 || iv->dtype != KILN_DTYPE_FLOAT || (n_in > 1 && iv->rank != 2))
      return kiln_error_set(err, KILN_E_UNSUPPORTED,
                            "%s model %s: input '%s' is not a float batch of rows", role,
                            drift_model_name(m), iv ? iv->name : "?");
    m->in_name[i] = iv->name;
    m->in_rank = iv->rank;
    int64_t w = 1;
    for (int k = 1; k < iv->rank; k++) {
      if (iv->dims[k].value <= 0)
        return kiln_error_set(err, KILN_E_UNSUPPORTED,
                              "%s model %s: input '%s' has a symbolic dim %d", role,
                              drift_model_name(m), iv->name, k);
      m->in_dims[k] = iv->dims[k].value;
      w *= iv->dims[k].value;
    }
    m->in_width[i] = w;
    m->width += w;
  }
  if (m->session) {
    int n_out = kiln_session_output_count(m->session);
    if (n_out < 1 || n_out > KILN_MAX_IO)
      return kiln_error_set(err, KILN_E_UNSUPPORTED, "%s model %s: %d outputs (drift takes 1..%d)",
                            role, drift_model_name(m), n_out, KILN_MAX_IO);
    m->n_out = n_out;
    for (int i = 0; i < n_out; i++) {
      const kiln_ir_value *ov = kiln_session_output(m->session, i);
      if (!ov || ov->dtype != KILN_DTYPE_FLOAT)
        return kiln_error_set(err, KILN_E_UNSUPPORTED, "%s model %s: output '%s' is not float",
                              role, drift_model_name(m), ov ? ov->name : "?");
      m->out_name[i] = ov->name;
      m->out_width[i] = 1;
      for (int k = 1; k < ov->rank; k++)
        m->out_width[i] *= ov->dims[k].value > 0 ? ov->dims[k].value : 1;
    }
    m->out_cols = m->out_width[0];
  } else if (m->graph) {
    int n_out = m->graph->n_outputs;
    if (n_out < 1 || n_out > KILN_MAX_IO)
      return kiln_error_set(err, KILN_E_UNSUPPORTED, "%s model %s: %d outputs (drift takes 1..%d)",
                            role, drift_model_name(m), n_out, KILN_MAX_IO);
    m->n_out = n_out;
    for (int i = 0; i < n_out; i++) m->out_name[i] = m->graph->outputs[i].name;
  }
  if (m->graph && m->graph->n_inputs > 0) {
    const char *in0 = m->graph->inputs[0].name;
    int readers = 0, gemm = 0;
    for (int i = 0; i < m->graph->n_nodes; i++) {
      const kiln_ir_node *nd = &m->graph->nodes[i];
      for (int k = 0; k < nd->n_inputs; k++)
        if (!strcmp(nd->inputs[k], in0)) {
          readers++;
          gemm += !strcmp(nd->op_type, "Gemm") || !strcmp(nd->op_type, "MatMul");
        }
    }
    m->dense_only = !(readers == 1 && gemm == 1) || m->n_in > 1;
  }
  if (opt->standardize && m->graph && m->n_in == 1) {
    kiln_status st = kiln_ir_input_standardization(m->graph, m->width, &m->mean, &m->std, err);
    if (st)
      return kiln_error_prefix(err, "%s model %s", role, drift_model_name(m));
  }
  return KILN_OK;
}

const char *drift_model_name(const drift_model *m) { return m->path ? m->path : "(in memory)"; }

/* --- feeding rows -------------------------------------------------------------------------- */

/* Rows [r0, r0 + n) as dense floats, standardized with m's metadata, into buf. */
/* Rows [r0, r0 + n) of x (dense or CSR, w columns) into buf. */
static void matrix_rows(const kiln_matrix *x, int64_t r0, int64_t n, int64_t w, float *buf) {
  if (!kiln_matrix_is_sparse(x)) {
    memcpy(buf, x->values + r0 * w, (size_t)(n * w) * sizeof(float));
    return;
  }
  memset(buf, 0, (size_t)(n * w) * sizeof(float));
  for (int64_t i = 0; i < n; i++)
    for (int64_t j = x->row_ptr[r0 + i]; j < x->row_ptr[r0 + i + 1]; j++)
      buf[i * w + x->col_idx[j]] = x->values ? x->values[j] : 1.0f;
}

kiln_status drift_dense_rows(const drift_model *m, const kiln_drift_data *d, int64_t r0, int64_t n,
                             float *buf, kiln_error *err) {
  if (m->n_in > 1) {
    for (int i = 0; i < m->n_in; i++) {
      matrix_rows(m->in_x[i], r0, n, m->in_width[i], buf);
      buf += n * m->in_width[i];
    }
    return KILN_OK;
  }
  int64_t w = m->width;
  if (d->x && d->x->cols > 0) {
    const kiln_matrix *x = d->x;
    if (!kiln_matrix_is_sparse(x)) {
      memcpy(buf, x->values + r0 * w, (size_t)(n * w) * sizeof(float));
    } else {
      memset(buf, 0, (size_t)(n * w) * sizeof(float));
      for (int64_t i = 0; i < n; i++)
        for (int64_t j = x->row_ptr[r0 + i]; j < x->row_ptr[r0 + i + 1]; j++)
          buf[i * w + x->col_idx[j]] = x->values ? x->values[j] : 1.0f;
    }
  } else {
    const kiln_sequences *s = d->seq;
    memset(buf, 0, (size_t)(n * w) * sizeof(float));
    for (int64_t i = 0; i < n; i++)
      for (int64_t j = s->offsets[r0 + i]; j < s->offsets[r0 + i + 1]; j++) {
        int32_t t = s->tokens[j];
        if (t >= 0 && t < w) buf[i * w + t] = 1.0f;
      }
  }
  if (m->mean)
    for (int64_t i = 0; i < n; i++)
      for (int64_t c = 0; c < w; c++) buf[i * w + c] = (buf[i * w + c] - m->mean[c]) / m->std[c];
  (void)err;
  return KILN_OK;
}

/* Runs s (a session of m's graph, or an instrumented copy) on rows [r0, r0 + n):
 * token ids go through run_tokens, other rows are densified into buf. */
kiln_status drift_session_run(const drift_model *m, kiln_session *s, const kiln_drift_data *d,
                              int64_t r0, int64_t n, float *buf, kiln_tensor_view *outs, int n_outs,
                              kiln_error *err) {
  kiln_status st;
  if (m->n_in > 1) {
    if ((st = drift_dense_rows(m, d, r0, n, buf, err))) return st;
    kiln_tensor_view in[KILN_MAX_IO];
    float *p = buf;
    for (int i = 0; i < m->n_in; i++) {
      memset(&in[i], 0, sizeof in[i]);
      in[i].name = m->in_name[i];
      in[i].dtype = KILN_DTYPE_FLOAT;
      in[i].rank = 2;
      in[i].dims[0] = n;
      in[i].dims[1] = m->in_width[i];
      in[i].data = p;
      p += n * m->in_width[i];
    }
    st = kiln_session_run(s, in, m->n_in, outs, n_outs, err);
  } else if (!(d->x && d->x->cols > 0) && !m->mean && !m->dense_only) {
    int64_t *off = malloc((size_t)(n + 1) * sizeof *off);
    if (!off) return kiln_error_set(err, KILN_E_NOMEM, "drift: out of memory");
    for (int64_t i = 0; i <= n; i++) off[i] = d->seq->offsets[r0 + i] - d->seq->offsets[r0];
    st = kiln_session_run_tokens(s, off, d->seq->tokens + d->seq->offsets[r0], n, outs, n_outs,
                                 err);
    free(off);
  } else {
    if ((st = drift_dense_rows(m, d, r0, n, buf, err))) return st;
    kiln_tensor_view in;
    memset(&in, 0, sizeof in);
    in.dtype = KILN_DTYPE_FLOAT;
    in.rank = m->in_rank;
    in.dims[0] = n;
    for (int k = 1; k < m->in_rank; k++) in.dims[k] = m->in_dims[k];
    in.data = buf;
    st = kiln_session_run(s, &in, 1, outs, n_outs, err);
  }
  if (st) kiln_error_prefix(err, "%s model %s, rows %lld..%lld", m->role, drift_model_name(m),
                            (long long)r0 + 1, (long long)(r0 + n));
  return st;
}

/* All rows through m's own session: outs[i] (rows x out_width[i] floats) for every output
 * i wanted (outs[i] != NULL). */
static kiln_status run_kiln(const drift_model *m, const kiln_drift_data *d, int64_t rows,
                            int64_t batch, float *const *outs, kiln_error *err) {
  float *buf = malloc((size_t)(batch * m->width) * sizeof(float));
  if (!buf) return kiln_error_set(err, KILN_E_NOMEM, "drift: out of memory");
  kiln_status st = KILN_OK;
  kiln_tensor_view o[KILN_MAX_IO];
  for (int64_t r = 0; r < rows && !st; r += batch) {
    int64_t n = rows - r < batch ? rows - r : batch;
    memset(o, 0, sizeof o);
    if ((st = drift_session_run(m, m->session, d, r, n, buf, o, m->n_out, err))) break;
    for (int i = 0; i < m->n_out; i++) {
      if (!outs[i]) continue;
      if (o[i].dtype != KILN_DTYPE_FLOAT || o[i].dims[0] != n) {
        st = kiln_error_set(err, KILN_E_UNSUPPORTED, "%s model %s: output '%s' is not float rows",
                            m->role, drift_model_name(m), m->out_name[i]);
        break;
      }
      memcpy(outs[i] + r * m->out_width[i], o[i].data,
             (size_t)(n * m->out_width[i]) * sizeof(float));
    }
  }
  free(buf);
  return st;
}

/* --- figures ---------------------------------------------------------------------------- */

static int64_t argmax_row(const float *row, int64_t cols) {
  if (cols == 1) return row[0] > 0.5f;
  int64_t best = 0;
  for (int64_t c = 1; c < cols; c++)
    if (row[c] > row[best]) best = c;
  return best;
}

/* Is label among the k largest of row (ties counted against the label, as Keras'
 * in_top_k counts strictly larger entries)? */
static int in_top_k(const float *row, int64_t cols, int64_t label, int k) {
  int64_t larger = 0;
  for (int64_t c = 0; c < cols; c++)
    if (row[c] > row[label]) larger++;
  return larger < k;
}

static kiln_status check_options(const kiln_drift_options *o, kiln_error *err) {
  if (!isnan(o->max_drop) && !(o->max_drop >= 0 && isfinite(o->max_drop)))
    return kiln_error_set(err, KILN_E_RANGE, "drift: max_drop %g is out of range (expected >= 0)",
                          o->max_drop);
  if (!isnan(o->min_agreement) && !(o->min_agreement >= 0 && o->min_agreement <= 1))
    return kiln_error_set(err, KILN_E_RANGE,
                          "drift: min_agreement %g is out of range (expected a fraction in [0, 1])",
                          o->min_agreement);
  if (!isnan(o->tolerance) && !(o->tolerance >= 0 && isfinite(o->tolerance)))
    return kiln_error_set(err, KILN_E_RANGE, "drift: tolerance %g is out of range (expected >= 0)",
                          o->tolerance);
  if (o->metric != KILN_DRIFT_ACCURACY && o->metric != KILN_DRIFT_TOP_K &&
      o->metric != KILN_DRIFT_MAE)
    return kiln_error_set(err, KILN_E_INVALID, "drift: unknown metric %d", (int)o->metric);
  if (o->metric == KILN_DRIFT_TOP_K && o->k < 1)
    return kiln_error_set(err, KILN_E_RANGE, "drift: k %d is out of range (expected >= 1)", o->k);
  if (o->batch < 1 || o->max_rows < 0 || o->threads < 1)
    return kiln_error_set(err, KILN_E_RANGE,
                          "drift: batch (%lld), max_rows (%lld) or threads (%d) out of range",
                          (long long)o->batch, (long long)o->max_rows, o->threads);
  if (o->runtime != KILN_DRIFT_RUNTIME_KILN && o->runtime != KILN_DRIFT_RUNTIME_ORT)
    return kiln_error_set(err, KILN_E_INVALID, "drift: unknown runtime %d", (int)o->runtime);
  if (o->runtime == KILN_DRIFT_RUNTIME_ORT && (!o->ort_script || !o->ort_script[0]))
    return kiln_error_set(err, KILN_E_INVALID,
                          "drift: runtime ort needs ort_script (tests/integration/ort/run.js)");
  return KILN_OK;
}

/* Several inputs: m->in_x[i] from d->inputs (by name, or by position when unnamed). */
static kiln_status bind_inputs(const kiln_drift_data *d, drift_model *m, int64_t *rows,
                               kiln_error *err) {
  char names[400];
  size_t used = 0;
  names[0] = '\0';
  for (int i = 0; i < m->n_in && used < sizeof names; i++)
    used += (size_t)snprintf(names + used, sizeof names - used, "%s%s (%lld features)",
                             i ? ", " : "", m->in_name[i], (long long)m->in_width[i]);
  const kiln_io *io = d->inputs;
  if (!io || io->n < 1)
    return kiln_error_set(err, KILN_E_INVALID,
                          "drift: the %s model %s has %d inputs (%s): give one matrix per input "
                          "(kiln drift --data NAME=FILE)",
                          m->role, drift_model_name(m), m->n_in, names);
  int named = io->names[0] != NULL;
  for (int i = 0; i < m->n_in; i++) {
    const kiln_matrix *x = NULL;
    if (named) {
      for (int j = 0; j < io->n && j < KILN_MAX_IO; j++)
        if (io->names[j] && !strcmp(io->names[j], m->in_name[i])) x = io->data[j];
    } else if (i < io->n) {
      x = io->data[i];
    }
    if (!x)
      return kiln_error_set(err, KILN_E_INVALID,
                            "drift: no data for input '%s' of the %s model %s (its inputs: %s)",
                            m->in_name[i], m->role, drift_model_name(m), names);
    if (x->cols != m->in_width[i] || (!kiln_matrix_is_sparse(x) && !x->values))
      return kiln_error_set(err, KILN_E_SHAPE,
                            "drift: the data for input '%s' has %lld features per row, the %s "
                            "model %s takes %lld",
                            m->in_name[i], (long long)x->cols, m->role, drift_model_name(m),
                            (long long)m->in_width[i]);
    if (*rows >= 0 && x->rows != *rows)
      return kiln_error_set(err, KILN_E_SHAPE,
                            "drift: the data for input '%s' has %lld rows, another input %lld",
                            m->in_name[i], (long long)x->rows, (long long)*rows);
    *rows = x->rows;
    m->in_x[i] = x;
  }
  for (int j = 0; named && j < io->n && j < KILN_MAX_IO; j++) {
    int found = 0;
    for (int i = 0; i < m->n_in; i++) found |= io->names[j] && !strcmp(io->names[j], m->in_name[i]);
    if (!found)
      return kiln_error_set(err, KILN_E_INVALID,
                            "drift: the %s model %s has no input named '%s' (its inputs: %s)",
                            m->role, drift_model_name(m), io->names[j] ? io->names[j] : "?", names);
  }
  return KILN_OK;
}

static kiln_status check_data(const kiln_drift_data *d, drift_model *ref, drift_model *cand,
                              int64_t *rows, kiln_error *err) {
  if (!d) return kiln_error_set(err, KILN_E_INVALID, "drift: no data");
  int64_t n = -1;
  kiln_status st;
  if (ref->n_in > 1 || cand->n_in > 1) {
    if ((st = bind_inputs(d, ref, &n, err)) || (st = bind_inputs(d, cand, &n, err))) return st;
    if (n <= 0) return kiln_error_set(err, KILN_E_INVALID, "drift: the data has no rows");
    *rows = n;
    return KILN_OK;
  }
  if (d->x && d->x->cols > 0) {
    if (d->x->cols != ref->width)
      return kiln_error_set(err, KILN_E_SHAPE,
                            "drift: the data has %lld features per row, but the reference model "
                            "%s takes %lld",
                            (long long)d->x->cols, drift_model_name(ref), (long long)ref->width);
    if (!kiln_matrix_is_sparse(d->x) && !d->x->values)
      return kiln_error_set(err, KILN_E_INVALID, "drift: the data's x has no values");
    n = d->x->rows;
  } else if (d->seq && d->seq->count > 0) {
    if (ref->mean)
      return kiln_error_set(err, KILN_E_UNSUPPORTED,
                            "drift: the reference model %s asks for standardized inputs; token ids "
                            "cannot be",
                            drift_model_name(ref));
    n = d->seq->count;
  } else {
    return kiln_error_set(err, KILN_E_INVALID, "drift: the data has no rows (neither x nor seq)");
  }
  if (cand->width != ref->width)
    return kiln_error_set(err, KILN_E_SHAPE,
                          "drift: the candidate model %s takes %lld features per row, the "
                          "reference %s %lld",
                          drift_model_name(cand), (long long)cand->width, drift_model_name(ref),
                          (long long)ref->width);
  *rows = n;
  return KILN_OK;
}

/* The labels of one compared output: rows x 1. */
static kiln_status check_labels(const kiln_matrix *y, const char *output, int n_cmp, int64_t n,
                                kiln_error *err) {
  char where[160];
  if (n_cmp > 1) snprintf(where, sizeof where, " for output '%s'", output);
  else where[0] = '\0';
  if (!y || y->rows <= 0)
    return kiln_error_set(err, KILN_E_INVALID, "drift: the data has no labels (y)%s%s", where,
                          n_cmp > 1 ? " (kiln drift --labels NAME=FILE)" : "");
  if (y->cols != 1 || kiln_matrix_is_sparse(y) || !y->values)
    return kiln_error_set(err, KILN_E_SHAPE, "drift: labels%s are %lld x %lld, expected rows x 1",
                          where, (long long)y->rows, (long long)y->cols);
  if (y->rows != n)
    return kiln_error_set(err, KILN_E_SHAPE, "drift: %lld rows of features but %lld labels%s",
                          (long long)n, (long long)y->rows, where);
  return KILN_OK;
}

/* Compares the outputs and fills the figures of r (everything but the layers). */
static kiln_status compare_outputs(const kiln_matrix *ym, const float *ro, const float *co,
                                   int64_t rows, int64_t cols, const kiln_drift_options *opt,
                                   kiln_drift_report *r, kiln_error *err) {
  const float *y = ym->values;
  double sum_abs = 0, max_abs = 0;
  for (int64_t i = 0; i < rows * cols; i++) {
    double a = fabs((double)ro[i] - (double)co[i]);
    if (isnan(a)) a = INFINITY;
    sum_abs += a;
    if (a > max_abs) max_abs = a;
  }
  r->max_abs_diff = max_abs;
  r->mean_abs_diff = sum_abs / (double)(rows * cols);

  if (opt->metric == KILN_DRIFT_MAE) {
    if (cols != 1)
      return kiln_error_set(err, KILN_E_SHAPE,
                            "drift: metric mae needs one output column, the models have %lld",
                            (long long)cols);
    double ref_abs = 0, ea = 0, eb = 0;
    for (int64_t i = 0; i < rows; i++) {
      ref_abs += fabs((double)ro[i]);
      ea += fabs((double)ro[i] - (double)y[i]);
      eb += fabs((double)co[i] - (double)y[i]);
    }
    r->tolerance = isnan(opt->tolerance) ? 0.01 * ref_abs / (double)rows : opt->tolerance;
    r->reference_metric = ea / (double)rows;
    r->candidate_metric = eb / (double)rows;
    if (r->reference_metric > 0)
      r->drop = (r->candidate_metric - r->reference_metric) / r->reference_metric * 100.0;
    else
      r->drop = r->candidate_metric > 0 ? INFINITY : 0.0;
    for (int64_t i = 0; i < rows; i++)
      if (!(fabs((double)ro[i] - (double)co[i]) <= r->tolerance)) r->changed_rows++;
  } else {
    int64_t classes = cols == 1 ? 2 : cols;
    if (classes > INT32_MAX)
      return kiln_error_set(err, KILN_E_SHAPE, "drift: %lld output columns", (long long)cols);
    if (opt->metric == KILN_DRIFT_TOP_K && cols == 1)
      return kiln_error_set(err, KILN_E_UNSUPPORTED,
                            "drift: metric top_k needs one output column per class (the models "
                            "have one)");
    for (int64_t i = 0; i < rows; i++) {
      float v = y[i];
      if (!(v == floorf(v) && v >= 0 && v < (float)classes))
        return kiln_error_set(err, KILN_E_RANGE,
                              "drift: label %g of row %lld is not a class in [0, %lld) (the "
                              "models' output width %lld)",
                              (double)v, (long long)i + 1, (long long)classes, (long long)cols);
    }
    r->num_classes = (int32_t)classes;
    r->classes = calloc((size_t)classes, sizeof *r->classes);
    if (!r->classes) return kiln_error_set(err, KILN_E_NOMEM, "drift: out of memory");
    r->n_classes = (int)classes;
    int64_t *ok_ref = calloc((size_t)classes * 2, sizeof *ok_ref);
    if (!ok_ref) return kiln_error_set(err, KILN_E_NOMEM, "drift: out of memory");
    int64_t *ok_cand = ok_ref + classes;
    int64_t hits_ref = 0, hits_cand = 0;
    for (int64_t i = 0; i < rows; i++) {
      int64_t label = (int64_t)y[i];
      const float *a = ro + i * cols, *b = co + i * cols;
      int64_t pa = argmax_row(a, cols), pb = argmax_row(b, cols);
      if (pa != pb) r->changed_rows++;
      r->classes[label].support++;
      if (pa == label) ok_ref[label]++;
      if (pb == label) ok_cand[label]++;
      if (opt->metric == KILN_DRIFT_TOP_K) {
        hits_ref += in_top_k(a, cols, label, opt->k);
        hits_cand += in_top_k(b, cols, label, opt->k);
      } else {
        hits_ref += pa == label;
        hits_cand += pb == label;
      }
    }
    for (int64_t c = 0; c < classes; c++) {
      kiln_drift_class *k = &r->classes[c];
      k->label = (int32_t)c;
      k->reference = k->support ? (double)ok_ref[c] / (double)k->support : NAN;
      k->candidate = k->support ? (double)ok_cand[c] / (double)k->support : NAN;
      k->delta = k->support ? k->reference - k->candidate : NAN;
    }
    free(ok_ref);
    r->reference_metric = (double)hits_ref / (double)rows;
    r->candidate_metric = (double)hits_cand / (double)rows;
    /* Exact when both are the same count. */
    r->drop = hits_ref == hits_cand ? 0.0 : r->reference_metric - r->candidate_metric;
  }
  r->agreement = 1.0 - (double)r->changed_rows / (double)rows;
  return KILN_OK;
}

/* The metric an output's metadata loss implies (kiln.loss.<output>; kiln.loss for a
 * one-output model): 1 when there is one. */
static int metric_from_meta(const kiln_ir_graph *g, const char *output, int one_output,
                            kiln_drift_metric *m) {
  if (!g) return 0;
  char key[320];
  snprintf(key, sizeof key, "kiln.loss.%s", output);
  const char *loss = kiln_ir_get_meta(g, key);
  if (!loss && one_output) loss = kiln_ir_get_meta(g, "kiln.loss");
  if (!loss) return 0;
  if (strstr(loss, "crossentropy")) {
    *m = KILN_DRIFT_ACCURACY;
    return 1;
  }
  if (!strcmp(loss, "mean_squared_error") || !strcmp(loss, "mse") ||
      !strcmp(loss, "mean_absolute_error") || !strcmp(loss, "mae")) {
    *m = KILN_DRIFT_MAE;
    return 1;
  }
  return 0;
}

static int find_output(const drift_model *m, const char *name) {
  for (int i = 0; i < m->n_out; i++)
    if (!strcmp(m->out_name[i], name)) return i;
  return -1;
}

/* One compared output: its index in each model, settings, labels. */
typedef struct cmp_output {
  int ri, ci;
  kiln_drift_options o;
  const kiln_matrix *y;
} cmp_output;

static kiln_status plan_outputs(const drift_model *ref, const drift_model *cand,
                                const kiln_drift_options *opt, int ort, cmp_output *cmp,
                                int *n_cmp, kiln_error *err) {
  char names[400];
  size_t used = 0;
  names[0] = '\0';
  for (int i = 0; i < ref->n_out && used < sizeof names; i++)
    used += (size_t)snprintf(names + used, sizeof names - used, "%s'%s'", i ? ", " : "",
                             ref->out_name[i]);
  int n = 0;
  if (opt->n_output_options > 0) {
    if (!opt->output_options || opt->n_output_options > KILN_MAX_IO)
      return kiln_error_set(err, KILN_E_INVALID, "drift: %d output options",
                            opt->n_output_options);
    for (int j = 0; j < opt->n_output_options; j++) {
      const kiln_drift_output_options *oo = &opt->output_options[j];
      int ri = oo->output ? find_output(ref, oo->output) : -1;
      if (ri < 0)
        return kiln_error_set(err, KILN_E_INVALID,
                              "drift: the reference model %s has no output '%s' (its outputs: %s)",
                              drift_model_name(ref), oo->output ? oo->output : "(null)", names);
      for (int k = 0; k < n; k++)
        if (cmp[k].ri == ri)
          return kiln_error_set(err, KILN_E_INVALID, "drift: output '%s' is named twice",
                                oo->output);
      cmp_output *c = &cmp[n++];
      memset(c, 0, sizeof *c);
      c->ri = ri;
      c->o = *opt;
      kiln_drift_metric mm;
      if (oo->metric >= 0) c->o.metric = (kiln_drift_metric)oo->metric;
      else if (metric_from_meta(ref->graph, oo->output, ref->n_out == 1, &mm)) c->o.metric = mm;
      if (oo->k > 0) c->o.k = oo->k;
      if (!isnan(oo->max_drop)) c->o.max_drop = oo->max_drop;
      if (!isnan(oo->min_agreement)) c->o.min_agreement = oo->min_agreement;
      if (!isnan(oo->tolerance)) c->o.tolerance = oo->tolerance;
    }
  } else {
    for (int ri = 0; ri < ref->n_out; ri++) {
      cmp_output *c = &cmp[n++];
      memset(c, 0, sizeof *c);
      c->ri = ri;
      c->o = *opt;
      kiln_drift_metric mm;
      if (ref->n_out > 1 && metric_from_meta(ref->graph, ref->out_name[ri], 0, &mm))
        c->o.metric = mm;
    }
  }
  for (int k = 0; k < n; k++) {
    cmp_output *c = &cmp[k];
    kiln_status st = check_options(&c->o, err);
    if (st) return kiln_error_prefix(err, "output '%s'", ref->out_name[c->ri]);
    /* the candidate's output of the same name (one output each: whatever its name) */
    c->ci = ref->n_out == 1 && cand->n_out == 1 ? 0 : find_output(cand, ref->out_name[c->ri]);
    if (c->ci < 0)
      return kiln_error_set(err, KILN_E_SHAPE,
                            "drift: the candidate model %s has no output '%s' (the reference's)",
                            drift_model_name(cand), ref->out_name[c->ri]);
    if (!ort && cand->out_width[c->ci] != ref->out_width[c->ri])
      return kiln_error_set(err, KILN_E_SHAPE,
                            "drift: output '%s': the reference %s has %lld output columns, the "
                            "candidate %s %lld",
                            ref->out_name[c->ri], drift_model_name(ref),
                            (long long)ref->out_width[c->ri], drift_model_name(cand),
                            (long long)cand->out_width[c->ci]);
  }
  *n_cmp = n;
  return KILN_OK;
}

/* The labels of compared output c: d->targets by name or position, else d->y. */
static const kiln_matrix *labels_of(const kiln_drift_data *d, const drift_model *ref,
                                    const cmp_output *c, int n_cmp) {
  const kiln_io *t = d->targets;
  if (t && t->n > 0) {
    for (int j = 0; j < t->n && j < KILN_MAX_IO; j++) {
      if (t->names[j] ? !strcmp(t->names[j], ref->out_name[c->ri]) : j == c->ri) return t->data[j];
    }
    return NULL;
  }
  return n_cmp == 1 ? d->y : NULL;
}

/* Moves the figures of tmp (one output's comparison) into o. */
static void take_figures(kiln_drift_report *tmp, const cmp_output *c, kiln_drift_output *o) {
  o->metric = tmp->metric;
  o->k = tmp->k;
  o->output_width = tmp->output_width;
  o->num_classes = tmp->num_classes;
  o->reference_metric = tmp->reference_metric;
  o->candidate_metric = tmp->candidate_metric;
  o->drop = tmp->drop;
  o->changed_rows = tmp->changed_rows;
  o->agreement = tmp->agreement;
  o->tolerance = tmp->tolerance;
  o->max_abs_diff = tmp->max_abs_diff;
  o->mean_abs_diff = tmp->mean_abs_diff;
  o->n_classes = tmp->n_classes;
  o->classes = tmp->classes;
  tmp->classes = NULL;
  tmp->n_classes = 0;
  o->has_max_drop = !isnan(c->o.max_drop);
  o->has_min_agreement = !isnan(c->o.min_agreement);
  o->max_drop = c->o.max_drop;
  o->min_agreement = c->o.min_agreement;
  o->drop_ok = !o->has_max_drop || o->drop <= c->o.max_drop + 1e-12;
  o->agreement_ok = !o->has_min_agreement || o->agreement >= c->o.min_agreement - 1e-12;
  o->pass = o->drop_ok && o->agreement_ok;
}

kiln_status kiln_drift_run(const kiln_drift_model *reference, const kiln_drift_model *candidate,
                           const kiln_drift_data *data_in, const kiln_drift_options *opt_in,
                           kiln_drift_report **out, kiln_error *err) {
  kiln_error local;
  memset(&local, 0, sizeof local);
  if (!err) err = &local;
  if (!out || !reference || !candidate)
    return kiln_error_set(err, KILN_E_INVALID, "drift: NULL model or report");
  *out = NULL;
  if (!data_in) return kiln_error_set(err, KILN_E_INVALID, "drift: no data");
  kiln_drift_options opt;
  if (opt_in)
    opt = *opt_in;
  else
    kiln_drift_options_init(&opt);
  kiln_status st = check_options(&opt, err);
  if (st) return st;
  int ort = opt.runtime == KILN_DRIFT_RUNTIME_ORT;
  if (ort && !candidate->path)
    return kiln_error_set(err, KILN_E_INVALID,
                          "drift: runtime ort runs the candidate from its .onnx file: give its path");
  /* one matrix in `inputs` serves a one-input model as x */
  kiln_drift_data dd = *data_in;
  const kiln_drift_data *data = &dd;
  if (!(dd.x && dd.x->cols > 0) && !(dd.seq && dd.seq->count > 0) && dd.inputs &&
      dd.inputs->n == 1)
    dd.x = dd.inputs->data[0];

  drift_model ref, cand;
  memset(&ref, 0, sizeof ref);
  memset(&cand, 0, sizeof cand);
  float *ro[KILN_MAX_IO] = {0}, *co[KILN_MAX_IO] = {0};
  cmp_output cmp[KILN_MAX_IO];
  int n_cmp = 0;
  kiln_drift_report *r = calloc(1, sizeof *r);
  if (!r) return kiln_error_set(err, KILN_E_NOMEM, "drift: out of memory");
  r->entry_layer = -1;
  if ((st = model_open(reference, "reference", &opt, 1, &ref, err))) goto fail;
  if ((st = model_open(candidate, "candidate", &opt, !ort, &cand, err))) goto fail;
  if ((st = plan_outputs(&ref, &cand, &opt, ort, cmp, &n_cmp, err))) goto fail;
  if (ort) /* checked against ONNX Runtime's outputs */
    for (int k = 0; k < n_cmp; k++) cand.out_width[cmp[k].ci] = ref.out_width[cmp[k].ri];
  cand.out_cols = cand.out_width[0];
  int64_t rows = 0;
  if ((st = check_data(data, &ref, &cand, &rows, err))) goto fail;
  for (int k = 0; k < n_cmp; k++) {
    cmp[k].y = labels_of(data, &ref, &cmp[k], n_cmp);
    if ((st = check_labels(cmp[k].y, ref.out_name[cmp[k].ri], n_cmp, rows, err))) goto fail;
  }
  if (opt.max_rows > 0 && rows > opt.max_rows) rows = opt.max_rows;
  for (int k = 0; k < n_cmp; k++) {
    int64_t cols = ref.out_width[cmp[k].ri];
    ro[cmp[k].ri] = malloc((size_t)(rows * cols) * sizeof(float));
    co[cmp[k].ci] = malloc((size_t)(rows * cols) * sizeof(float));
    if (!ro[cmp[k].ri] || !co[cmp[k].ci]) {
      st = kiln_error_set(err, KILN_E_NOMEM, "drift: out of memory for %lld x %lld outputs",
                          (long long)rows, (long long)cols);
      goto fail;
    }
  }
  if ((st = run_kiln(&ref, data, rows, opt.batch, ro, err))) goto fail;
  if (ort)
    st = drift_run_ort(&cand, data, rows, &opt, co, err);
  else
    st = run_kiln(&cand, data, rows, opt.batch, co, err);
  if (st) goto fail;

  r->runtime = opt.runtime;
  r->rows = rows;
  r->reference_standardized = ref.mean != NULL;
  r->candidate_standardized = cand.mean != NULL;
  r->outputs = calloc((size_t)n_cmp, sizeof *r->outputs);
  if (!r->outputs) {
    st = kiln_error_set(err, KILN_E_NOMEM, "drift: out of memory");
    goto fail;
  }
  r->drop_ok = r->agreement_ok = 1;
  for (int k = 0; k < n_cmp; k++) {
    const cmp_output *c = &cmp[k];
    kiln_drift_report tmp;
    memset(&tmp, 0, sizeof tmp);
    int64_t cols = ref.out_width[c->ri];
    tmp.metric = c->o.metric;
    tmp.k = c->o.metric == KILN_DRIFT_TOP_K ? c->o.k : 0;
    tmp.output_width = cols;
    st = compare_outputs(c->y, ro[c->ri], co[c->ci], rows, cols, &c->o, &tmp, err);
    if (st) {
      free(tmp.classes);
      if (n_cmp > 1) kiln_error_prefix(err, "output '%s'", ref.out_name[c->ri]);
      goto fail;
    }
    kiln_drift_output *o = &r->outputs[r->n_outputs++];
    take_figures(&tmp, c, o);
    if (!(o->name = strdup(ref.out_name[c->ri]))) {
      st = kiln_error_set(err, KILN_E_NOMEM, "drift: out of memory");
      goto fail;
    }
    r->drop_ok &= o->drop_ok;
    r->agreement_ok &= o->agreement_ok;
  }
  /* the top level: the first compared output's figures, the verdict of all */
  const kiln_drift_output *o0 = &r->outputs[0];
  r->metric = o0->metric;
  r->k = o0->k;
  r->output_width = o0->output_width;
  r->num_classes = o0->num_classes;
  r->reference_metric = o0->reference_metric;
  r->candidate_metric = o0->candidate_metric;
  r->drop = o0->drop;
  r->changed_rows = o0->changed_rows;
  r->agreement = o0->agreement;
  r->tolerance = o0->tolerance;
  r->max_abs_diff = o0->max_abs_diff;
  r->mean_abs_diff = o0->mean_abs_diff;
  if (o0->n_classes > 0) {
    r->classes = malloc((size_t)o0->n_classes * sizeof *r->classes);
    if (!r->classes) {
      st = kiln_error_set(err, KILN_E_NOMEM, "drift: out of memory");
      goto fail;
    }
    memcpy(r->classes, o0->classes, (size_t)o0->n_classes * sizeof *r->classes);
    r->n_classes = o0->n_classes;
  }
  r->has_max_drop = o0->has_max_drop;
  r->has_min_agreement = o0->has_min_agreement;
  r->max_drop = o0->max_drop;
  r->min_agreement = o0->min_agreement;
  r->pass = r->drop_ok && r->agreement_ok;

  if (!opt.layers)
    snprintf(r->layers_note, sizeof r->layers_note, "layer analysis not asked for");
  else if ((st = drift_layers(&ref, &cand, data, rows, &opt, r, err)))
    goto fail;
  if (ort && r->n_layers > 0 && !r->layers_note[0])
    snprintf(r->layers_note, sizeof r->layers_note,
             "per-layer figures come from kiln's runtime for both models (ONNX Runtime is "
             "run for the outputs only)");
  for (int i = 0; i < KILN_MAX_IO; i++) {
    free(ro[i]);
    free(co[i]);
  }
  drift_model_free(&ref);
  drift_model_free(&cand);
  *out = r;
  return KILN_OK;
fail:
  for (int i = 0; i < KILN_MAX_IO; i++) {
    free(ro[i]);
    free(co[i]);
  }
  drift_model_free(&ref);
  drift_model_free(&cand);
  kiln_drift_report_free(r);
  return st;
}

kiln_status kiln_drift_run_files(const char *reference_path, const char *candidate_path,
                                 const kiln_drift_data *data, const kiln_drift_options *opt,
                                 kiln_drift_report **out, kiln_error *err) {
  if (!reference_path || !candidate_path)
    return kiln_error_set(err, KILN_E_INVALID, "drift: NULL model path");
  kiln_drift_model a, b;
  memset(&a, 0, sizeof a);
  memset(&b, 0, sizeof b);
  a.path = reference_path;
  b.path = candidate_path;
  return kiln_drift_run(&a, &b, data, opt, out, err);
}

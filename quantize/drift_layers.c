/* kiln drift — where the error enters: the float model's Gemm/MatMul outputs against
 * the candidate's same-named nodes (dequantized), layer by layer. Each graph is copied
 * with the compared values added as graph outputs, then run by kiln's runtime. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "drift_internal.h"

static int is_layer_op(const char *op) { return !strcmp(op, "Gemm") || !strcmp(op, "MatMul"); }

static const kiln_ir_node *find_node(const kiln_ir_graph *g, const char *name) {
  for (int i = 0; i < g->n_nodes; i++)
    if (g->nodes[i].name && !strcmp(g->nodes[i].name, name)) return &g->nodes[i];
  return NULL;
}

/* The value a reader of the candidate sees: a DequantizeLinear's output when one
 * reads the node's output (an int8 op such as QLinearMatMul), else the output. */
static const char *dequantized(const kiln_ir_graph *g, const char *value) {
  for (int i = 0; i < g->n_nodes; i++) {
    const kiln_ir_node *n = &g->nodes[i];
    if (!strcmp(n->op_type, "DequantizeLinear") && n->n_inputs > 0 && n->n_outputs > 0 &&
        !strcmp(n->inputs[0], value))
      return n->outputs[0];
  }
  return value;
}

/* A shallow copy of g whose outputs are g's first output and then values[0..n); idx[j]
 * is the output index of values[j]. The copy borrows every string: free only
 * copy->outputs. */
static kiln_status instrument(const kiln_ir_graph *g, const char *const *values, int n,
                              kiln_ir_graph *copy, int *idx, kiln_error *err) {
  *copy = *g;
  copy->outputs = calloc((size_t)n + 1, sizeof *copy->outputs);
  if (!copy->outputs) return kiln_error_set(err, KILN_E_NOMEM, "drift: out of memory");
  copy->outputs[0] = g->outputs[0];
  int k = 1;
  for (int j = 0; j < n; j++) {
    idx[j] = -1;
    for (int o = 0; o < k; o++)
      if (!strcmp(copy->outputs[o].name, values[j])) idx[j] = o;
    if (idx[j] >= 0) continue;
    kiln_ir_value *v = &copy->outputs[k];
    memset(v, 0, sizeof *v);
    v->name = (char *)values[j];
    v->dtype = KILN_DTYPE_FLOAT;
    v->rank = -1; /* the session infers it */
    idx[j] = k++;
  }
  copy->n_outputs = k;
  copy->cap_outputs = k;
  return KILN_OK;
}

typedef struct layer_acc {
  double sum_ref2, sum_err2, sum_abs, max_abs;
  int64_t count;
  int bad; /* shapes or dtypes differ */
} layer_acc;

kiln_status drift_layers(const drift_model *ref, const drift_model *cand,
                         const kiln_drift_data *d, int64_t rows, const kiln_drift_options *opt,
                         kiln_drift_report *r, kiln_error *err) {
  if (!ref->graph || !cand->graph || ref->graph->n_outputs < 1 || cand->graph->n_outputs < 1) {
    snprintf(r->layers_note, sizeof r->layers_note,
             "no layer analysis: a model given as a session has no graph to read");
    return KILN_OK;
  }
  const kiln_ir_graph *gr = ref->graph, *gc = cand->graph;
  int cap = gr->n_nodes > 0 ? gr->n_nodes : 1;
  const char **rv = calloc((size_t)cap * 2, sizeof *rv);
  const kiln_ir_node **cn = calloc((size_t)cap * 2, sizeof *cn);
  int *idx = calloc((size_t)cap * 2, sizeof *idx);
  layer_acc *acc = calloc((size_t)cap, sizeof *acc);
  kiln_ir_graph cr, cc;
  memset(&cr, 0, sizeof cr);
  memset(&cc, 0, sizeof cc);
  kiln_session *sr = NULL, *sc = NULL;
  float *buf_r = NULL, *buf_c = NULL;
  kiln_tensor_view *outs = NULL;
  kiln_status st = KILN_OK;
  if (!rv || !cn || !idx || !acc) {
    st = kiln_error_set(err, KILN_E_NOMEM, "drift: out of memory");
    goto done;
  }
  const char **cv = rv + cap;
  const kiln_ir_node **rn = cn + cap;
  int *idx_c = idx + cap;
  int n = 0;
  for (int i = 0; i < gr->n_nodes; i++) {
    const kiln_ir_node *a = &gr->nodes[i];
    if (!is_layer_op(a->op_type) || !a->name || !a->name[0] || a->n_outputs < 1) continue;
    const kiln_ir_node *b = find_node(gc, a->name);
    if (!b || b->n_outputs < 1) continue;
    rn[n] = a;
    cn[n] = b;
    rv[n] = a->outputs[0];
    cv[n] = dequantized(gc, b->outputs[0]);
    n++;
  }
  if (n == 0) {
    snprintf(r->layers_note, sizeof r->layers_note,
             "no layer analysis: no Gemm/MatMul node of the reference has a same-named node in "
             "the candidate");
    goto done;
  }
  if ((st = instrument(gr, rv, n, &cr, idx, err)) || (st = instrument(gc, cv, n, &cc, idx_c, err)))
    goto done;
  kiln_session_options so;
  kiln_session_options_init(&so);
  so.max_batch = opt->batch;
  so.threads = opt->threads;
  kiln_error e2;
  memset(&e2, 0, sizeof e2);
  if (kiln_session_create(&cr, &so, &sr, &e2) || kiln_session_create(&cc, &so, &sc, &e2)) {
    snprintf(r->layers_note, sizeof r->layers_note,
             "no layer analysis: kiln's runtime cannot run the %s model layer by layer: %.150s",
             sr ? "candidate" : "reference", e2.message);
    goto done;
  }
  int nr = cr.n_outputs, nc = cc.n_outputs;
  outs = calloc((size_t)(nr + nc), sizeof *outs);
  buf_r = malloc((size_t)(opt->batch * ref->width) * sizeof(float));
  buf_c = malloc((size_t)(opt->batch * cand->width) * sizeof(float));
  if (!outs || !buf_r || !buf_c) {
    st = kiln_error_set(err, KILN_E_NOMEM, "drift: out of memory");
    goto done;
  }
  for (int64_t r0 = 0; r0 < rows; r0 += opt->batch) {
    int64_t m = rows - r0 < opt->batch ? rows - r0 : opt->batch;
    memset(outs, 0, (size_t)(nr + nc) * sizeof *outs);
    if (drift_session_run(ref, sr, d, r0, m, buf_r, outs, nr, &e2) ||
        drift_session_run(cand, sc, d, r0, m, buf_c, outs + nr, nc, &e2)) {
      snprintf(r->layers_note, sizeof r->layers_note, "no layer analysis: %.220s", e2.message);
      goto done;
    }
    for (int j = 0; j < n; j++) {
      const kiln_tensor_view *a = &outs[idx[j]], *b = &outs[nr + idx_c[j]];
      int64_t na = 1, nb = 1;
      for (int k = 0; k < a->rank; k++) na *= a->dims[k];
      for (int k = 0; k < b->rank; k++) nb *= b->dims[k];
      if (a->dtype != KILN_DTYPE_FLOAT || b->dtype != KILN_DTYPE_FLOAT || na != nb) {
        acc[j].bad = 1;
        continue;
      }
      const float *x = a->data, *y = b->data;
      layer_acc *l = &acc[j];
      for (int64_t i = 0; i < na; i++) {
        double e = (double)y[i] - (double)x[i], ae = fabs(e);
        l->sum_ref2 += (double)x[i] * (double)x[i];
        l->sum_err2 += e * e;
        l->sum_abs += ae;
        if (!(ae <= l->max_abs)) l->max_abs = ae;
      }
      l->count += na;
    }
  }
  r->layers = calloc((size_t)n, sizeof *r->layers);
  if (!r->layers) {
    st = kiln_error_set(err, KILN_E_NOMEM, "drift: out of memory");
    goto done;
  }
  double prev = 0, best = 0;
  int skipped = 0;
  for (int j = 0; j < n; j++) {
    if (acc[j].bad || acc[j].count == 0) {
      skipped++;
      continue;
    }
    kiln_drift_layer *L = &r->layers[r->n_layers];
    L->name = strdup(rn[j]->name);
    L->op_type = strdup(cn[j]->op_type);
    L->reference_value = strdup(rv[j]);
    L->candidate_value = strdup(cv[j]);
    r->n_layers++;
    if (!L->name || !L->op_type || !L->reference_value || !L->candidate_value) {
      st = kiln_error_set(err, KILN_E_NOMEM, "drift: out of memory");
      goto done;
    }
    const layer_acc *l = &acc[j];
    L->elements = l->count;
    L->max_abs = l->max_abs;
    L->mean_abs = l->sum_abs / (double)l->count;
    L->snr_db = l->sum_err2 > 0 ? 10.0 * log10(l->sum_ref2 / l->sum_err2) : INFINITY;
    L->rel_error = l->sum_ref2 > 0 ? sqrt(l->sum_err2 / l->sum_ref2) : (l->sum_err2 > 0 ? INFINITY : 0);
    L->added_error = L->rel_error - prev;
    prev = L->rel_error;
    if (L->added_error > best) {
      best = L->added_error;
      r->entry_layer = r->n_layers - 1;
    }
  }
  if (skipped)
    snprintf(r->layers_note, sizeof r->layers_note,
             "%d layer%s left out: the two models' values differ in shape or type", skipped,
             skipped == 1 ? "" : "s");
done:
  kiln_session_free(sr);
  kiln_session_free(sc);
  free(cr.outputs);
  free(cc.outputs);
  free(outs);
  free(buf_r);
  free(buf_c);
  free(rv);
  free(cn);
  free(idx);
  free(acc);
  return st;
}

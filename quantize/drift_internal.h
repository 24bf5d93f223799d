/* kiln drift — what drift.c, drift_layers.c and drift_ort.c share (private). */
#ifndef KILN_QUANTIZE_DRIFT_INTERNAL_H
#define KILN_QUANTIZE_DRIFT_INTERNAL_H

#include "kiln/drift.h"

/* One side of the comparison, opened. */
typedef struct drift_model {
  const char *role;      /* "reference" or "candidate" */
  const char *path;      /* may be NULL */
  kiln_ir_graph *graph;  /* may be NULL (a session given alone) */
  kiln_session *session; /* NULL for a candidate that ONNX Runtime runs */
  int own_graph, own_session;
  int in_rank;
  int64_t in_dims[KILN_IR_MAX_RANK];
  int64_t width;    /* features per row */
  int64_t out_cols; /* first output's elements per row */
  float *mean, *std; /* kiln.input_mean / input_std, or NULL */
  int dense_only;    /* token ids must be densified: the first input is not read by one
                        Gemm/MatMul alone (e.g. a QuantizeLinear reads it) */
  /* Several inputs (n_in > 1): rows come from kiln_drift_data.inputs; width is the sum of
   * in_width, and a batch buffer holds each input's rows as one block after the other. */
  int n_in;
  const char *in_name[KILN_MAX_IO];
  int64_t in_width[KILN_MAX_IO];
  const kiln_matrix *in_x[KILN_MAX_IO]; /* the data of each input (set from the data) */
  /* The outputs (n_out 0: not known, an ONNX Runtime candidate given by path). */
  int n_out;
  const char *out_name[KILN_MAX_IO];
  int64_t out_width[KILN_MAX_IO];
} drift_model;

void drift_model_free(drift_model *m);
const char *drift_model_name(const drift_model *m);

/* Rows [r0, r0 + n) as dense, standardized floats (n * width) into buf. */
kiln_status drift_dense_rows(const drift_model *m, const kiln_drift_data *d, int64_t r0, int64_t n,
                             float *buf, kiln_error *err);
/* Runs session s (of m's graph or a copy) on rows [r0, r0 + n); buf holds batch rows. */
kiln_status drift_session_run(const drift_model *m, kiln_session *s, const kiln_drift_data *d,
                              int64_t r0, int64_t n, float *buf, kiln_tensor_view *outs,
                              int n_outs, kiln_error *err);

/* The candidate through ONNX Runtime: outs[i] (rows x out_width[i] floats) for every
 * output i of cand that is wanted (outs[i] != NULL). One input and one output go the
 * positional way (x.npy -> y.npy); several by name. */
kiln_status drift_run_ort(const drift_model *cand, const kiln_drift_data *d, int64_t rows,
                          const kiln_drift_options *opt, float *const *outs, kiln_error *err);

/* Fills r->layers (or r->layers_note when the analysis cannot be done). Fails only on
 * out of memory. */
kiln_status drift_layers(const drift_model *ref, const drift_model *cand,
                         const kiln_drift_data *d, int64_t rows, const kiln_drift_options *opt,
                         kiln_drift_report *r, kiln_error *err);

#endif

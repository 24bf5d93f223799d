/* kiln — accuracy drift between two models (library kiln_quantize).
 *
 * Runs a reference model (typically the float export) and a candidate (typically
 * its int8 quantization, run by kiln or by ONNX Runtime) on the same labeled rows
 * and reports what the candidate lost: each model's metric and the drop, the share
 * of rows whose prediction changed, the output differences, per-class figures and,
 * layer by layer, where the error enters (the float model's Gemm/MatMul outputs
 * against the candidate's same-named nodes, dequantized). With thresholds the
 * report carries a pass/fail verdict for CI. */
#ifndef KILN_DRIFT_H
#define KILN_DRIFT_H

#include <stdint.h>

#include "kiln/data.h"
#include "kiln/infer.h"
#include "kiln/ir.h"
#include "kiln/status.h"
#include "kiln/tensor.h"
#include "kiln/train.h" /* kiln_io */

#ifdef __cplusplus
extern "C" {
#endif

typedef enum kiln_drift_metric {
  KILN_DRIFT_ACCURACY = 0, /* argmax (or a single sigmoid unit > 0.5) equals the label */
  KILN_DRIFT_TOP_K = 1,    /* the label is among the k largest outputs */
  KILN_DRIFT_MAE = 2       /* regression: mean |output - target| (a single output column) */
} kiln_drift_metric;

typedef enum kiln_drift_runtime {
  KILN_DRIFT_RUNTIME_KILN = 0, /* kiln's runtime (kiln_infer) */
  KILN_DRIFT_RUNTIME_ORT = 1   /* ONNX Runtime: node + run.js on .npy files in a temp dir */
} kiln_drift_runtime;

/* A model to compare: give path, or graph, or session (the first non-NULL of graph,
 * path, session is used). The caller keeps ownership of graph and session.
 * A session alone gives no layer analysis and no standardization metadata. */
typedef struct kiln_drift_model {
  const char *path;
  const kiln_ir_graph *graph;
  kiln_session *session;
} kiln_drift_model;

/* Labeled rows, borrowed. Features as x (dense or CSR; CSR rows are densified a
 * batch at a time) or, for text models whose first layer takes multi-hot rows, as
 * token ids seq (x NULL or empty). y: rows x 1 class indices or regression targets. */
typedef struct kiln_drift_data {
  const kiln_matrix *x;
  const kiln_sequences *seq;
  const kiln_matrix *y;
  /* Models with several inputs: one matrix per graph input (by the inputs' names, or in
   * the graph's order when every name is NULL), dense or CSR, all with the same rows;
   * x and seq are then unused. */
  const kiln_io *inputs;
  /* Models with several outputs: rows x 1 labels or targets per compared output (by the
   * outputs' names, or in the graph's output order when every name is NULL); y is then
   * unused. One compared output may take y instead. */
  const kiln_io *targets;
} kiln_drift_data;

/* The data set's x (when it has columns) or seq, and y. */
void kiln_drift_data_from_dataset(const kiln_dataset *d, kiln_drift_data *out);

/* The settings of one output of a multi-output model (kiln drift --output NAME ...). */
typedef struct kiln_drift_output_options {
  const char *output;   /* the graph output's name */
  int metric;           /* a kiln_drift_metric, or -1: from the output's metadata loss */
  int k;                /* top_k: k (0: the global k) */
  double max_drop;      /* NAN: the global threshold */
  double min_agreement; /* NAN: the global threshold */
  double tolerance;     /* NAN: the global tolerance */
} kiln_drift_output_options;
void kiln_drift_output_options_init(kiln_drift_output_options *o);

typedef struct kiln_drift_options {
  kiln_drift_metric metric;   /* default accuracy */
  int k;                      /* top_k: k >= 1 (default 5) */
  kiln_drift_runtime runtime; /* the candidate's runtime (the reference always runs in kiln) */
  int64_t batch;              /* rows per run (default 1024) */
  int64_t max_rows;           /* use the first max_rows rows (0: all) */
  int threads;                /* kiln sessions' threads (default 1) */
  double max_drop;            /* threshold on the drop: a fraction of accuracy (0.005 = 0.5
                                 points), or percent for mae; NAN (default): none; < 0: error */
  double min_agreement;       /* threshold on the share of unchanged predictions in [0, 1];
                                 NAN (default): none; outside [0, 1]: error */
  double tolerance;           /* mae: a row's prediction changed when |diff| > tolerance;
                                 NAN (default): 1% of the reference's mean |output| */
  int standardize;            /* apply each model's kiln.input_mean/input_std (default 1) */
  int layers;                 /* layer-by-layer error analysis (default 1) */
  const char *node;           /* ort: the node program (default "node", found on PATH) */
  const char *ort_script;     /* ort: tests/integration/ort/run.js (required for ort) */
  const char *tmp_dir;        /* ort: where the temp dir goes (default $TMPDIR, else /tmp) */
  /* Several outputs. n_output_options == 0: every graph output is compared, each with
   * the metric its metadata loss implies (kiln.loss.<output>, see docs/drift.md:
   * mean_squared_error / mean_absolute_error -> mae, any crossentropy -> accuracy; none:
   * `metric`) and the global thresholds. Otherwise only the outputs listed, with their
   * settings. A one-output model with no list compares its output with `metric`, as
   * before. */
  const kiln_drift_output_options *output_options;
  int n_output_options;
} kiln_drift_options;

void kiln_drift_options_init(kiln_drift_options *opt);

/* One class of a classification: the per-class accuracy (recall) of both models. */
typedef struct kiln_drift_class {
  int32_t label;
  int64_t support;  /* rows with this label */
  double reference; /* share of them the reference gets right (NAN when support is 0) */
  double candidate;
  double delta;     /* reference - candidate */
} kiln_drift_class;

/* One quantized layer: the float Gemm/MatMul output against the candidate's. */
typedef struct kiln_drift_layer {
  char *name;            /* the node name both models share */
  char *op_type;         /* the candidate node's op */
  char *reference_value; /* the compared values */
  char *candidate_value; /* (a DequantizeLinear's output when one follows the node) */
  int64_t elements;      /* compared elements */
  double max_abs, mean_abs;
  double snr_db;         /* 10 log10(sum ref^2 / sum err^2); INFINITY when err is 0 */
  double rel_error;      /* ||err|| / ||ref|| (0 when both are 0) */
  double added_error;    /* rel_error minus the previous layer's: the error this layer adds */
} kiln_drift_layer;

/* The figures of one compared output. */
typedef struct kiln_drift_output {
  char *name;
  kiln_drift_metric metric;
  int k;
  int64_t output_width;
  int32_t num_classes;
  double reference_metric, candidate_metric, drop; /* as in the report */
  int64_t changed_rows;
  double agreement, tolerance, max_abs_diff, mean_abs_diff;
  int n_classes;
  kiln_drift_class *classes;
  int has_max_drop, has_min_agreement;
  double max_drop, min_agreement;
  int drop_ok, agreement_ok, pass;
} kiln_drift_output;

/* Owned by the caller; free with kiln_drift_report_free. The top-level figures are
 * those of the first compared output (the only one of a one-output model); outputs[]
 * holds every compared output, and drop_ok / agreement_ok / pass hold for all of them. */
typedef struct kiln_drift_report {
  kiln_drift_metric metric;
  int k;
  kiln_drift_runtime runtime;
  int64_t rows;
  int64_t output_width;
  int32_t num_classes;     /* classification: classes compared (2 for one sigmoid unit) */
  int reference_standardized, candidate_standardized;

  double reference_metric; /* accuracy / top-k accuracy as a fraction, or the mae */
  double candidate_metric;
  double drop;             /* reference - candidate; mae: (cand - ref) / ref * 100 (%) */
  int64_t changed_rows;    /* argmax changed (mae: |diff| > tolerance) */
  double agreement;        /* 1 - changed_rows / rows */
  double tolerance;        /* mae: the tolerance used */
  double max_abs_diff;     /* over every output element */
  double mean_abs_diff;

  int n_classes;
  kiln_drift_class *classes;

  int n_layers;
  kiln_drift_layer *layers;
  int entry_layer;         /* the layer adding the most error (-1: none or no error) */
  char layers_note[256];   /* why there is no layer analysis, when there is none */

  int has_max_drop, has_min_agreement;
  double max_drop, min_agreement;
  int drop_ok, agreement_ok; /* 1 when within the threshold (or none is set) */
  int pass;                  /* drop_ok && agreement_ok */

  int n_outputs;             /* compared outputs (1 for a one-output model) */
  kiln_drift_output *outputs;
} kiln_drift_report;

/* Runs both models on data and fills a new report in *out. Errors (KILN_E_RANGE for a
 * threshold out of range, KILN_E_SHAPE for data of the wrong width, a model that fails
 * to load, ONNX Runtime failing) name the model, file or option. A verdict outside the
 * thresholds is not an error: it is report->pass == 0. */
kiln_status kiln_drift_run(const kiln_drift_model *reference, const kiln_drift_model *candidate,
                           const kiln_drift_data *data, const kiln_drift_options *opt,
                           kiln_drift_report **out, kiln_error *err);

/* kiln_drift_run with two .onnx files. */
kiln_status kiln_drift_run_files(const char *reference_path, const char *candidate_path,
                                 const kiln_drift_data *data, const kiln_drift_options *opt,
                                 kiln_drift_report **out, kiln_error *err);

void kiln_drift_report_free(kiln_drift_report *r);

const char *kiln_drift_metric_name(kiln_drift_metric m); /* "accuracy", "top_k", "mae" */

#ifdef __cplusplus
}
#endif
#endif

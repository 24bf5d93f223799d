/* kiln — int8 quantization and pruning (library kiln_quantize): IR -> IR passes.
 *
 * The pipeline: kiln_calibrate runs the float graph through kiln's runtime on a
 * calibration set with observers on every tensor that will be quantized (the inputs
 * of each Gemm/MatMul, the outputs of each Gemm(+Relu) and the pre-bias products),
 * kiln_quantize rewrites the graph to standard ONNX (QDQ by default; QOperator or
 * dynamic on request) and fills a per-layer report; kiln_prune zeroes the smallest
 * weights; kiln_sparse_pack stores pruned weights compactly as a bitmap + packed
 * values that a few standard ONNX ops expand at load time (see docs/quantization.md).
 *
 * Ownership: graphs returned in *out are new (free with kiln_ir_free); calibrations,
 * reports and prune results are caller-owned structs freed with their _free calls.
 * No call prints: kiln_quant_report_print writes to the FILE* the caller names. */
#ifndef KILN_QUANTIZE_H
#define KILN_QUANTIZE_H

#include <stdint.h>
#include <stdio.h>

#include "kiln/ir.h"
#include "kiln/status.h"
#include "kiln/tensor.h"
#include "kiln/train.h"

#ifdef __cplusplus
extern "C" {
#endif

/* --- calibration ----------------------------------------------------------- */

typedef enum kiln_range_method {
  KILN_RANGE_MINMAX = 0,     /* the observed [min, max] */
  KILN_RANGE_PERCENTILE = 1, /* [P(100 - p), P(p)]: the same share cut from both tails */
  KILN_RANGE_MSE = 2         /* the clipping range (observed range scaled by f in
                                (0, 1], 200 candidates) with the least int8
                                quantization MSE over the histogram */
} kiln_range_method;

kiln_status kiln_range_method_parse(const char *name, kiln_range_method *out, kiln_error *err);
const char *kiln_range_method_name(kiln_range_method m);

#define KILN_CALIB_BINS 2048

/* One observed tensor. hist counts every observed value in KILN_CALIB_BINS equal
 * bins over [min, max]. lo, hi: the range the method chose, widened to include 0
 * (so 0 is exactly representable). */
typedef struct kiln_tensor_range {
  char *name;
  double min, max;
  int64_t count;
  int64_t *hist;
  double lo, hi;
} kiln_tensor_range;

typedef struct kiln_calibration {
  int n;
  kiln_tensor_range *t;
  int64_t rows;              /* calibration rows used */
  kiln_range_method method;
  double percentile;
} kiln_calibration;

typedef struct kiln_calibrate_options {
  kiln_range_method method; /* default KILN_RANGE_PERCENTILE */
  double percentile;        /* in (50, 100]; default 99.99 */
  int64_t max_rows;         /* use the first max_rows rows of x (default 500; 0: all) */
  int64_t batch_size;       /* rows per run (default 128) */
} kiln_calibrate_options;
void kiln_calibrate_options_init(kiln_calibrate_options *opt);

/* Runs g (one float input of rank 2, [batch, width]) on the rows of x (dense or CSR)
 * with observers. Errors: x empty, of the wrong width, or holding NaN/Inf (the
 * message names the row and column, 0-based); a graph kiln's runtime rejects. */
kiln_status kiln_calibrate(const kiln_ir_graph *g, const kiln_matrix *x,
                           const kiln_calibrate_options *opt, kiln_calibration *out,
                           kiln_error *err);
/* kiln_calibrate for a graph with several inputs (e.g. the ticket model's title,
 * text_body and tags): x holds one matrix per graph input, by the inputs' names (every
 * name set) or in the graph's input order (every name NULL), all with the same rows
 * (dense or CSR). Errors name the input: unknown or given twice, wrong width, rows that
 * differ between inputs, NaN/Inf (row and column). A one-input graph works too. */
kiln_status kiln_calibrate_io(const kiln_ir_graph *g, const kiln_io *x,
                              const kiln_calibrate_options *opt, kiln_calibration *out,
                              kiln_error *err);
/* Recomputes every lo/hi with another method from the stored histograms. */
kiln_status kiln_calibration_set_method(kiln_calibration *c, kiln_range_method method,
                                        double percentile, kiln_error *err);
/* The observed tensor of that name, or NULL. Pre-bias products of a Gemm/MatMul node
 * are named "matmul:<node name>". */
const kiln_tensor_range *kiln_calibration_find(const kiln_calibration *c, const char *name);
void kiln_calibration_free(kiln_calibration *c);

/* int8 asymmetric parameters of a range (lo <= 0 <= hi): scale = (hi - lo) / 255,
 * zero point = round(-128 - lo / scale) in [-128, 127]; scale 1 for an empty range. */
void kiln_qparams_int8(double lo, double hi, float *scale, int8_t *zero_point);

/* --- quantization ---------------------------------------------------------- */

typedef enum kiln_quant_format {
  KILN_QFORMAT_QDQ = 0,      /* QuantizeLinear/DequantizeLinear around float ops (default) */
  KILN_QFORMAT_QOPERATOR = 1 /* QLinearMatMul (static) or MatMulInteger (dynamic) */
} kiln_quant_format;

typedef struct kiln_quantize_options {
  kiln_quant_format format;
  int dynamic; /* activations quantized at run time (DynamicQuantizeLinear + MatMulInteger
                  + Cast/Mul/Add, as ONNX Runtime's quantize_dynamic); needs no calibration */
  int opset;   /* of the default domain in the output; at least 13 (default 13) */
} kiln_quantize_options;
void kiln_quantize_options_init(kiln_quantize_options *opt);

/* One Gemm/MatMul of the input graph. */
typedef struct kiln_quant_layer {
  char node[128];
  char op[32];
  char form[32];          /* "QDQ", "QLinearMatMul", "MatMulInteger", or "float" */
  char note[192];         /* why it stayed float, or what stayed float inside it */
  int quantized;
  int64_t in_features, out_features;
  float w_scale_min, w_scale_max; /* per-output-channel weight scales (max|w| / 127) */
  float x_scale;          /* input activation scale and zero point (static only) */
  int x_zero_point;
  float y_scale;          /* QLinearMatMul output scale and zero point */
  int y_zero_point;
  int bias_int32;         /* bias stored int32 at x_scale * w_scale */
  double sparsity;        /* share of zero weights */
  int64_t bytes_before, bytes_after; /* weight + bias initializers, with scales/zero points */
} kiln_quant_layer;

/* A node (other than the matrix products) that stays float, and why. */
typedef struct kiln_quant_float_node {
  char node[128];
  char op[32];
  char reason[192];
} kiln_quant_float_node;

typedef struct kiln_quant_report {
  int n_layers;
  kiln_quant_layer *layers;
  int n_float;
  kiln_quant_float_node *kept_float;
  int64_t bytes_before, bytes_after; /* all initializers */
  int64_t file_bytes_before, file_bytes_after; /* 0 unless the caller fills them */
  char method[64];   /* "percentile 99.99", "minmax", "mse", "dynamic" */
  char format[32];   /* "QDQ", "QOperator" */
  int64_t calibration_rows;
} kiln_quant_report;

/* Quantizes g: weights int8 symmetric per output channel (zero point 0, [-127, 127]),
 * activations int8 per tensor (asymmetric) from cal, Gemm biases int32 at
 * s_x * s_w per channel. cal may be NULL only with opt->dynamic. Nodes that cannot
 * be quantized stay float and are listed in the report (not an error). report may be
 * NULL; otherwise it is filled (free with kiln_quant_report_free). */
kiln_status kiln_quantize(const kiln_ir_graph *g, const kiln_calibration *cal,
                          const kiln_quantize_options *opt, kiln_ir_graph **out,
                          kiln_quant_report *report, kiln_error *err);
void kiln_quant_report_free(kiln_quant_report *r);
/* The report as a table: to a stream, or as a malloc'd string (NULL on no memory). */
kiln_status kiln_quant_report_print(const kiln_quant_report *r, FILE *out, kiln_error *err);
char *kiln_quant_report_format(const kiln_quant_report *r);

/* --- pruning --------------------------------------------------------------- */

typedef struct kiln_prune_options {
  double sparsity; /* target share of zero weights in [0, 1) */
  int structured;  /* zero whole output columns (neurons) by L2 norm instead of weights */
  int global;      /* one threshold over all layers (structured: over column RMS) */
  int skip_last;   /* leave the last matrix product (the classifier) alone; default 0 */
  /* block pruning (0, 0: off): zero whole blocks of block_k consecutive inputs (rows of a
   * [K, N] weight) x block_n consecutive outputs, aligned at multiples of the block, the
   * blocks with the least RMS first. 4 x 16 is the int8 runtime's packed group, which its
   * block-sparse kernel skips (docs/int8.md). Not with structured. */
  int block_k, block_n;
} kiln_prune_options;
void kiln_prune_options_init(kiln_prune_options *opt);

typedef struct kiln_prune_layer {
  char initializer[128];
  int64_t numel, zeros;
  int64_t columns, zero_columns;
} kiln_prune_layer;

typedef struct kiln_prune_result {
  int n;
  kiln_prune_layer *layers;
  int64_t numel, zeros;
} kiln_prune_result;

/* Magnitude pruning, in place, of the float weight initializers of every Gemm/MatMul
 * (rank 2). result may be NULL (else free with kiln_prune_result_free). */
kiln_status kiln_prune(kiln_ir_graph *g, const kiln_prune_options *opt,
                       kiln_prune_result *result, kiln_error *err);
void kiln_prune_result_free(kiln_prune_result *r);

/* Sparse storage, in place: every float or int8 weight initializer of a Gemm/MatMul
 * (or of the DequantizeLinear in front of one) whose share of zeros is at least
 * min_sparsity becomes "<W>.kiln_sparse_bitmap" (uint8 [ceil(n/8), 1], bit j of byte i
 * = element 8i + j is non-zero) and "<W>.kiln_sparse_values" (a 0 then the non-zeros,
 * row-major), expanded to W by standard opset-13 ops (BitShift, Mod, Reshape, Cast,
 * CumSum, Mul, Gather, Slice, Reshape) that ONNX Runtime folds at load. *packed:
 * how many tensors were packed (may be NULL). */
kiln_status kiln_sparse_pack(kiln_ir_graph *g, double min_sparsity, int *packed,
                             kiln_error *err);
/* The inverse: folds every kiln_sparse expansion back into a dense initializer (for
 * kiln's runtime, which does not run BitShift/CumSum/Gather). */
kiln_status kiln_sparse_unpack(kiln_ir_graph *g, int *unpacked, kiln_error *err);

/* --- pruning during training ---------------------------------------------- */

/* TF Model Optimization's PolynomialDecay: at step t (batches since fit began, counted
 * over all fits of this callback's life) in [begin_step, end_step], every `frequency`
 * steps, the target is
 *   s(t) = final + (initial - final) * (1 - (t - begin_step) / (end_step - begin_step))^power
 * and every Dense kernel's smallest-magnitude weights are masked to reach it. The
 * mask is applied after every batch (the optimizer's step may move a masked weight),
 * so pruned weights stay exactly zero; after end_step the mask is frozen. */
typedef struct kiln_prune_schedule_config {
  double initial_sparsity; /* default 0 */
  double final_sparsity;   /* required, in [0, 1) */
  int64_t begin_step;      /* default 0 */
  int64_t end_step;        /* required, > begin_step */
  int64_t frequency;       /* default 100 */
  double power;            /* default 3 */
  /* block pruning (0, 0: off, every weight on its own): mask whole blocks of block_k
   * consecutive inputs x block_n consecutive outputs of each kernel (in x units),
   * aligned at multiples of the block, least RMS first, as kiln_prune's block option;
   * the sparsity counts blocks. 4 x 16 is the int8 runtime's skipped group. */
  int block_k, block_n;
} kiln_prune_schedule_config;
void kiln_prune_schedule_config_init(kiln_prune_schedule_config *c);
/* Free with kiln_callback_free (callbacks.h). */
kiln_status kiln_prune_schedule_create(const kiln_prune_schedule_config *c, kiln_callback *out,
                                       kiln_error *err);
/* The sparsity last applied (the target of the last update), or -1 for another callback. */
double kiln_prune_schedule_sparsity(const kiln_callback *cb);

#ifdef __cplusplus
}
#endif
#endif

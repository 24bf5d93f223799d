/* kiln quantize — int8 post-training quantization (QDQ, QOperator or dynamic) with
 * optional magnitude pruning and compact sparse storage; prints the per-layer report. */
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli.h"
#include "kiln/data.h"
#include "kiln/export.h"
#include "kiln/infer.h"
#include "kiln/quantize.h"

static const char *const CMD = "quantize";

void cmd_quantize_usage(FILE *out) {
  fprintf(out,
          "Usage: kiln quantize IN.onnx OUT.onnx --calibrate DATASET|FILE [options]\n"
          "       kiln quantize IN.onnx OUT.onnx --calibrate NAME=X.npy ... [options]\n"
          "\n"
          "Quantizes a float model to int8 (weights per output channel, symmetric; activations\n"
          "per tensor from a calibration run of kiln's runtime) and writes standard ONNX.\n"
          "\n"
          "  --calibrate SRC     calibration rows: a data set (imdb, reuters,\n"
          "                      california_housing, fashion_mnist: its training split) or a\n"
          "                      .npy/.csv file; not needed with --dynamic\n"
          "  --calibrate NAME=X.npy  a model with several inputs takes one per graph input\n"
          "                      (named as in kiln inspect), all with the same rows\n"
          "  --data-dir DIR      folder of the built-in data sets (default $KILN_DATA_DIR,\n"
          "                      else ../shared/data)\n"
          "  --rows N            calibration rows: the first N (default 500)\n"
          "  --method M          activation ranges: minmax, percentile (default), mse\n"
          "  --percentile P      for --method percentile, in (50, 100] (default 99.99)\n"
          "  --format F          qdq (default: QuantizeLinear/DequantizeLinear) or qoperator\n"
          "                      (QLinearMatMul; MatMulInteger with --dynamic)\n"
          "  --dynamic           activations quantized at run time (DynamicQuantizeLinear +\n"
          "                      MatMulInteger), no calibration\n"
          "  --prune S           magnitude-prune the weights to sparsity S in [0, 1) first and\n"
          "                      store them as bitmap + non-zeros (see docs/quantization.md)\n"
          "  --structured        prune whole neurons (output columns) instead of weights\n"
          "  --prune-block KxN   prune whole blocks of K inputs x N outputs (4x16: what the\n"
          "                      int8 runtime's block-sparse kernel skips)\n"
          "  --global            one pruning threshold over all layers\n"
          "\n"
          "Softmax (and a Sigmoid probability output) stay float; the report lists every\n"
          "node kept float and why. The output is written atomically.\n"
          "\n"
          "Exit status: 0 success, 2 a usage, input or output error.\n");
}

static int64_t file_size(const char *path) {
  struct stat st;
  return stat(path, &st) == 0 ? (int64_t)st.st_size : 0;
}

#define QUANTIZE_MAX_CALIB 8 /* KILN_MAX_IO */

/* Does spec read "NAME=..." with NAME one of g's inputs? Returns the input's index or -1. */
static int named_input(const kiln_ir_graph *g, const char *spec) {
  const char *eq = strchr(spec, '=');
  if (!eq) return -1;
  for (int i = 0; i < g->n_inputs; i++)
    if ((size_t)(eq - spec) == strlen(g->inputs[i].name) &&
        !strncmp(spec, g->inputs[i].name, (size_t)(eq - spec)))
      return i;
  return -1;
}

/* Calibration of a model from --calibrate NAME=X.npy, one per graph input. */
static int calibrate_named(const kiln_ir_graph *g, const char *model, const char *const *specs,
                           int n_specs, const kiln_calibrate_options *co, kiln_calibration *cal) {
  kiln_matrix x[QUANTIZE_MAX_CALIB];
  memset(x, 0, sizeof x);
  kiln_io io;
  memset(&io, 0, sizeof io);
  kiln_error err = {0};
  int rc = CLI_EXIT_OK;
  char names[512];
  size_t used = 0;
  names[0] = '\0';
  for (int i = 0; i < g->n_inputs && used < sizeof names; i++)
    used += (size_t)snprintf(names + used, sizeof names - used, "%s%s (%lld features)",
                             i ? ", " : "", g->inputs[i].name,
                             (long long)(g->inputs[i].rank == 2 ? g->inputs[i].dims[1].value : -1));
  if (g->n_inputs > QUANTIZE_MAX_CALIB)
    return cli_error(CMD, "%s: %d inputs (at most %d)", model, g->n_inputs, QUANTIZE_MAX_CALIB);
  const char *file[QUANTIZE_MAX_CALIB] = {0};
  for (int j = 0; j < n_specs; j++) {
    int i = named_input(g, specs[j]);
    if (i < 0) {
      const char *eq = strchr(specs[j], '=');
      if (eq)
        return cli_usage_error(CMD, "--calibrate %s: %s has no input '%.*s' (its inputs: %s)",
                               specs[j], model, (int)(eq - specs[j]), specs[j], names);
      return cli_usage_error(CMD,
                             "--calibrate %s: %s has %d inputs: give each as --calibrate "
                             "NAME=X.npy (its inputs: %s)",
                             specs[j], model, g->n_inputs, names);
    }
    if (file[i])
      return cli_usage_error(CMD, "--calibrate %s: input '%s' is given twice", specs[j],
                             g->inputs[i].name);
    file[i] = strchr(specs[j], '=') + 1;
  }
  for (int i = 0; i < g->n_inputs; i++)
    if (!file[i])
      return cli_usage_error(CMD, "missing --calibrate %s=X.npy (the model's inputs: %s)",
                             g->inputs[i].name, names);
  for (int i = 0; i < g->n_inputs && !rc; i++) {
    size_t n = strlen(file[i]);
    if (n < 4 || strcmp(file[i] + n - 4, ".npy")) {
      rc = cli_usage_error(CMD, "--calibrate %s=%s: expected a .npy file of rows", g->inputs[i].name,
                           file[i]);
    } else if (kiln_npy_read(file[i], &x[i], &err)) {
      kiln_error_prefix(&err, "--calibrate %s", g->inputs[i].name);
      rc = cli_kiln_error(CMD, &err);
    }
    io.names[i] = g->inputs[i].name;
    io.data[i] = &x[i];
  }
  io.n = g->n_inputs;
  if (!rc && kiln_calibrate_io(g, &io, co, cal, &err)) {
    kiln_error_prefix(&err, "%s", model);
    rc = cli_kiln_error(CMD, &err);
  }
  for (int i = 0; i < QUANTIZE_MAX_CALIB; i++) kiln_matrix_free(&x[i]);
  return rc;
}

int cmd_quantize(int argc, char **argv) {
  const char *in = NULL, *out = NULL, *calib = NULL, *data_dir = NULL;
  const char *calibs[QUANTIZE_MAX_CALIB];
  int n_calibs = 0;
  int64_t rows = 500;
  kiln_calibrate_options co;
  kiln_calibrate_options_init(&co);
  kiln_quantize_options qo;
  kiln_quantize_options_init(&qo);
  kiln_prune_options po;
  kiln_prune_options_init(&po);
  int prune = 0;
  for (int i = 1; i < argc; i++) {
    const char *v = NULL;
    int r;
    if ((r = cli_option(CMD, argc, argv, &i, "--calibrate", &v)) != 0) {
      if (r < 0) return CLI_EXIT_ERROR;
      if (n_calibs == QUANTIZE_MAX_CALIB)
        return cli_usage_error(CMD, "more than %d --calibrate", QUANTIZE_MAX_CALIB);
      calibs[n_calibs++] = v;
      calib = v;
    } else if ((r = cli_option(CMD, argc, argv, &i, "--data-dir", &v)) != 0) {
      if (r < 0) return CLI_EXIT_ERROR;
      data_dir = v;
    } else if ((r = cli_option(CMD, argc, argv, &i, "--rows", &v)) != 0) {
      if (r < 0 || cli_parse_int64(CMD, "--rows", v, 1, INT64_MAX, &rows)) return CLI_EXIT_ERROR;
    } else if ((r = cli_option(CMD, argc, argv, &i, "--method", &v)) != 0) {
      kiln_error err = {0};
      if (r < 0) return CLI_EXIT_ERROR;
      if (kiln_range_method_parse(v, &co.method, &err))
        return cli_usage_error(CMD, "--method: %s", err.message);
    } else if ((r = cli_option(CMD, argc, argv, &i, "--percentile", &v)) != 0) {
      if (r < 0 || cli_parse_double(CMD, "--percentile", v, 50.0, 100.0, 0, &co.percentile))
        return CLI_EXIT_ERROR;
      if (co.percentile <= 50.0) return cli_usage_error(CMD, "--percentile %s: must be above 50", v);
    } else if ((r = cli_option(CMD, argc, argv, &i, "--format", &v)) != 0) {
      if (r < 0) return CLI_EXIT_ERROR;
      if (strcmp(v, "qdq") == 0) qo.format = KILN_QFORMAT_QDQ;
      else if (strcmp(v, "qoperator") == 0) qo.format = KILN_QFORMAT_QOPERATOR;
      else return cli_usage_error(CMD, "--format %s: expected qdq or qoperator", v);
    } else if ((r = cli_option(CMD, argc, argv, &i, "--prune", &v)) != 0) {
      if (r < 0 || cli_parse_double(CMD, "--prune", v, 0.0, 1.0, 1, &po.sparsity))
        return CLI_EXIT_ERROR;
      prune = 1;
    } else if ((r = cli_option(CMD, argc, argv, &i, "--prune-block", &v)) != 0) {
      char tail = 0;
      if (r < 0) return CLI_EXIT_ERROR;
      if (sscanf(v, "%dx%d%c", &po.block_k, &po.block_n, &tail) != 2 || po.block_k < 1 ||
          po.block_n < 1 || po.block_k > 65536 || po.block_n > 65536)
        return cli_usage_error(CMD, "--prune-block %s: expected KxN with K, N in [1, 65536], e.g. 4x16", v);
    } else if ((r = cli_flag(CMD, argv[i], "--dynamic")) != 0) {
      if (r < 0) return CLI_EXIT_ERROR;
      qo.dynamic = 1;
    } else if ((r = cli_flag(CMD, argv[i], "--structured")) != 0) {
      if (r < 0) return CLI_EXIT_ERROR;
      po.structured = 1;
    } else if ((r = cli_flag(CMD, argv[i], "--global")) != 0) {
      if (r < 0) return CLI_EXIT_ERROR;
      po.global = 1;
    } else if (argv[i][0] == '-' && argv[i][1]) {
      return cli_usage_error(CMD, "unknown option \"%s\"", argv[i]);
    } else if (!in) {
      in = argv[i];
    } else if (!out) {
      out = argv[i];
    } else {
      return cli_usage_error(CMD, "unexpected argument \"%s\"", argv[i]);
    }
  }
  if (!in || !out) return cli_usage_error(CMD, "expected IN.onnx and OUT.onnx");
  if (!calib && !qo.dynamic)
    return cli_usage_error(CMD, "--calibrate DATASET|FILE is required (or use --dynamic)");
  if ((po.structured || po.global || po.block_k) && !prune)
    return cli_usage_error(CMD, "--structured, --global and --prune-block need --prune SPARSITY");
  if (po.structured && po.block_k)
    return cli_usage_error(CMD, "--structured and --prune-block exclude each other");
  if (cli_check_output_path(CMD, "OUT.onnx", out)) return CLI_EXIT_ERROR;
  co.max_rows = rows;

  kiln_error err = {0};
  kiln_ir_graph *g = NULL, *q = NULL;
  kiln_dataset train = {0};
  kiln_calibration cal = {0};
  kiln_quant_report rep = {0};
  int rc = CLI_EXIT_ERROR;
  if (kiln_onnx_read_file(in, &g, &err)) {
    rc = cli_kiln_error(CMD, &err);
    goto done;
  }
  if (prune && kiln_prune(g, &po, NULL, &err)) {
    kiln_error_prefix(&err, "%s", in);
    rc = cli_kiln_error(CMD, &err);
    goto done;
  }
  if (calib && !qo.dynamic &&
      (g->n_inputs > 1 || n_calibs > 1 || named_input(g, calibs[0]) >= 0)) {
    if ((rc = calibrate_named(g, in, calibs, n_calibs, &co, &cal))) goto done;
    rc = CLI_EXIT_ERROR;
  } else if (calib && !qo.dynamic) {
    kiln_load_options lo;
    kiln_load_options_init(&lo);
    lo.data_dir = data_dir;
    lo.missing = KILN_MISSING_IMPUTE_MEDIAN;
    if (g->n_inputs == 1 && g->inputs[0].rank == 2 && g->inputs[0].dims[1].value > 0 &&
        g->inputs[0].dims[1].value <= INT32_MAX)
      lo.num_words = (int32_t)g->inputs[0].dims[1].value; /* text: multi-hot of the model's width */
    if (kiln_dataset_load(calib, &lo, &train, NULL, &err)) {
      kiln_error_prefix(&err, "--calibrate %s", calib);
      rc = cli_kiln_error(CMD, &err);
      goto done;
    }
    /* Calibrate on what the model sees: rows standardized as its metadata says
     * (kiln train --standardize), exactly as kiln predict feeds them. */
    float *mean = NULL, *std = NULL;
    if (kiln_ir_input_standardization(g, train.x.cols, &mean, &std, &err)) {
      kiln_error_prefix(&err, "%s", in);
      rc = cli_kiln_error(CMD, &err);
      goto done;
    }
    if (mean && kiln_matrix_is_sparse(&train.x)) {
      free(mean);
      free(std);
      rc = cli_error(CMD, "%s: the model asks for standardized inputs, which sparse rows of %s "
                     "cannot be", in, calib);
      goto done;
    }
    if (mean)
      for (int64_t r = 0; r < train.x.rows; r++)
        for (int64_t c = 0; c < train.x.cols; c++)
          train.x.values[r * train.x.cols + c] =
              (train.x.values[r * train.x.cols + c] - mean[c]) / std[c];
    free(mean);
    free(std);
    if (kiln_calibrate(g, &train.x, &co, &cal, &err)) {
      kiln_error_prefix(&err, "%s with --calibrate %s", in, calib);
      rc = cli_kiln_error(CMD, &err);
      goto done;
    }
  }
  if (kiln_quantize(g, qo.dynamic ? NULL : &cal, &qo, &q, &rep, &err)) {
    kiln_error_prefix(&err, "%s", in);
    rc = cli_kiln_error(CMD, &err);
    goto done;
  }
  if (prune && kiln_sparse_pack(q, po.sparsity * 0.5, NULL, &err)) {
    rc = cli_kiln_error(CMD, &err);
    goto done;
  }
  if (kiln_onnx_write_file(q, out, &err)) { /* atomic: temporary + rename */
    kiln_error_prefix(&err, "%s", out);
    rc = cli_kiln_error(CMD, &err);
    goto done;
  }
  rep.file_bytes_before = file_size(in);
  rep.file_bytes_after = file_size(out);
  printf("%s -> %s\n", in, out);
  if (prune)
    printf("pruned to %.1f%% sparsity (%s, %s); pruned weights stored as bitmap + non-zeros\n",
           100.0 * po.sparsity, po.structured ? "structured" : po.block_k ? "blocks" : "unstructured",
           po.global ? "global" : "per layer");
  if (kiln_quant_report_print(&rep, stdout, &err)) {
    rc = cli_kiln_error(CMD, &err);
    goto done;
  }
  rc = CLI_EXIT_OK;
done:
  kiln_quant_report_free(&rep);
  kiln_calibration_free(&cal);
  kiln_dataset_free(&train);
  kiln_ir_free(q);
  kiln_ir_free(g);
  return rc;
}

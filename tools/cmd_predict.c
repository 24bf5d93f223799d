/* kiln predict — run a .onnx on a .npy, a CSV or a built-in data set with kiln's
 * runtime and write the outputs as .npy or CSV. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "cli.h"
#include "kiln/atomic_file.h"
#include "kiln/data.h"
#include "kiln/infer.h"

static const char *const CMD = "predict";

void cmd_predict_usage(FILE *out) {
  fprintf(out,
          "Usage: kiln predict MODEL.onnx --input INPUT --output OUT.npy|OUT.csv [options]\n"
          "\n"
          "Runs an ONNX model with kiln's runtime and writes one output row per input row.\n"
          "\n"
          "  --input x.npy            features, rows x features (float32/64, int); labels are\n"
          "                           read from y.npy beside it when it exists (the name with\n"
          "                           \"y\" for the first \"x\")\n"
          "  --input DATA.csv         a CSV with a header: as many columns as the model has\n"
          "                           features, or one more (the last column: labels)\n"
          "  --input DATASET[:split]  imdb, reuters, california_housing or fashion_mnist; split\n"
          "                           train or test (default test). imdb and reuters run from\n"
          "                           their token ids (no dense multi-hot rows are built)\n"
          "  --output OUT.npy|OUT.csv float32 .npy, or CSV with a header (the class names when\n"
          "                           the model records them)\n"
          "  --data-dir DIR           folder of the built-in data sets (default $KILN_DATA_DIR,\n"
          "                           else ../shared/data)\n"
          "  --batch N                rows per run, the session's maximum batch (default 1024)\n"
          "  --threads N              threads splitting each batch (default 1)\n"
          "\n"
          "When the model records kiln.input_mean and kiln.input_std (kiln train\n"
          "--standardize), the features are standardized with them first. When the input has\n"
          "labels that are class indices, the accuracy is printed (the mean absolute error\n"
          "for a single-output regression model).\n"
          "\n"
          "Exit status: 0 success, 2 a usage, input or output error; on failure no output file\n"
          "is left behind.\n"
          "\n"
          "Example:\n"
          "  kiln predict imdb.onnx --input imdb:test --output imdb_test.npy\n");
}

typedef struct predict_args {
  const char *model, *input, *output, *data_dir;
  int64_t batch, threads;
} predict_args;

static int ends_with(const char *s, const char *suffix) {
  size_t n = strlen(s), k = strlen(suffix);
  return n >= k && strcmp(s + n - k, suffix) == 0;
}

static int parse_args(int argc, char **argv, predict_args *a) {
  memset(a, 0, sizeof *a);
  a->batch = 1024;
  a->threads = 1;
  for (int i = 1; i < argc; i++) {
    const char *arg = argv[i], *v = NULL;
    int r;
    if (arg[0] != '-' || arg[1] == '\0') {
      if (a->model) return cli_usage_error(CMD, "unexpected argument \"%s\"", arg);
      a->model = arg;
    } else if ((r = cli_option(CMD, argc, argv, &i, "--input", &v)) != 0) {
      if (r < 0) return CLI_EXIT_ERROR;
      a->input = v;
    } else if ((r = cli_option(CMD, argc, argv, &i, "--output", &v)) != 0) {
      if (r < 0) return CLI_EXIT_ERROR;
      a->output = v;
    } else if ((r = cli_option(CMD, argc, argv, &i, "--data-dir", &v)) != 0) {
      if (r < 0) return CLI_EXIT_ERROR;
      a->data_dir = v;
    } else if ((r = cli_option(CMD, argc, argv, &i, "--batch", &v)) != 0) {
      if (r < 0 || cli_parse_int64(CMD, "--batch", v, 1, 1 << 20, &a->batch)) return CLI_EXIT_ERROR;
    } else if ((r = cli_option(CMD, argc, argv, &i, "--threads", &v)) != 0) {
      if (r < 0 || cli_parse_int64(CMD, "--threads", v, 1, 256, &a->threads)) return CLI_EXIT_ERROR;
    } else {
      return cli_usage_error(CMD, "unknown option \"%s\"", arg);
    }
  }
  if (!a->model) return cli_usage_error(CMD, "missing MODEL.onnx");
  if (!a->input) return cli_usage_error(CMD, "missing --input");
  if (!a->output) return cli_usage_error(CMD, "missing --output OUT.npy|OUT.csv");
  if (!ends_with(a->output, ".npy") && !ends_with(a->output, ".csv"))
    return cli_usage_error(CMD, "--output %s: expected a .npy or .csv file name", a->output);
  if (strcmp(a->output, a->model) == 0 || strcmp(a->output, a->input) == 0)
    return cli_usage_error(CMD, "--output %s would overwrite an input", a->output);
  return CLI_EXIT_OK;
}

/* --- input ----------------------------------------------------------------------- */

typedef struct predict_input {
  kiln_matrix x;       /* dense rows (empty for token input) */
  kiln_sequences seq;  /* token ids (imdb, reuters) */
  kiln_matrix y;       /* labels or targets (rows x 1), may be empty */
  int32_t num_classes; /* > 0 when y holds class indices */
  kiln_dataset ds;     /* owner of a built-in data set's arrays */
} predict_input;

static void input_free(predict_input *in) {
  kiln_matrix_free(&in->x);
  kiln_matrix_free(&in->y);
  kiln_dataset_free(&in->ds);
  memset(in, 0, sizeof *in);
}

/* A CSV whose columns are all features (no target): header, then numbers. */
static int read_feature_csv(const char *path, int64_t cols, kiln_matrix *x) {
  FILE *f = fopen(path, "r");
  if (!f) return cli_error(CMD, "%s: cannot open", path);
  char *line = NULL;
  size_t cap = 0;
  int64_t rows = 0, lineno = 0, alloc_rows = 0;
  float *v = NULL;
  int rc = CLI_EXIT_OK;
  while (getline(&line, &cap, f) > 0) {
    lineno++;
    if (lineno == 1) continue; /* header */
    char *p = line;
    while (*p == ' ' || *p == '\r' || *p == '\n' || *p == '\t') p++;
    if (!*p) continue;
    if (rows == alloc_rows) {
      alloc_rows = alloc_rows ? alloc_rows * 2 : 256;
      float *nv = realloc(v, (size_t)(alloc_rows * cols) * sizeof(float));
      if (!nv) {
        rc = cli_error(CMD, "out of memory");
        break;
      }
      v = nv;
    }
    p = line;
    for (int64_t c = 0; c < cols && rc == CLI_EXIT_OK; c++) {
      char *end;
      double d = strtod(p, &end);
      if (end == p || !isfinite(d)) {
        rc = cli_error(CMD, "%s:%lld, column %lld: expected a finite number", path,
                       (long long)lineno, (long long)c + 1);
        break;
      }
      v[rows * cols + c] = (float)d;
      while (*end == ' ' || *end == '\t') end++;
      if (c + 1 < cols && *end != ',') {
        rc = cli_error(CMD, "%s:%lld: %lld fields, expected %lld", path, (long long)lineno,
                       (long long)c + 1, (long long)cols);
      }
      p = end + 1;
    }
    if (rc) break;
    rows++;
  }
  free(line);
  fclose(f);
  if (rc) {
    free(v);
    return rc;
  }
  if (rows == 0) {
    free(v);
    return cli_error(CMD, "%s: no data rows", path);
  }
  x->rows = rows;
  x->cols = cols;
  x->values = v;
  return CLI_EXIT_OK;
}

static int64_t csv_columns(const char *path) {
  FILE *f = fopen(path, "r");
  if (!f) return -1;
  int64_t n = 1;
  int c;
  while ((c = fgetc(f)) != EOF && c != '\n')
    if (c == ',') n++;
  fclose(f);
  return n;
}

/* y.npy beside x.npy: "y" in place of the first "x" of the file name. */
static char *labels_path(const char *xpath) {
  const char *base = strrchr(xpath, '/');
  base = base ? base + 1 : xpath;
  const char *x = strchr(base, 'x');
  if (!x) return NULL;
  char *p = strdup(xpath);
  if (p) p[x - xpath] = 'y';
  return p;
}

static int load_input(const predict_args *a, int64_t width, int64_t out_cols, predict_input *in) {
  kiln_error err = {0};
  if (ends_with(a->input, ".npy")) {
    if (kiln_npy_read(a->input, &in->x, &err)) return cli_kiln_error(CMD, &err);
    char *yp = labels_path(a->input);
    if (yp && strcmp(yp, a->input) != 0 && access(yp, R_OK) == 0 &&
        kiln_npy_read(yp, &in->y, &err)) {
      free(yp);
      return cli_kiln_error(CMD, &err);
    }
    free(yp);
    if (in->y.rows && (in->y.rows != in->x.rows || in->y.cols != 1)) kiln_matrix_free(&in->y);
    return CLI_EXIT_OK;
  }
  if (ends_with(a->input, ".csv")) {
    int64_t cols = csv_columns(a->input);
    if (cols < 0) return cli_error(CMD, "%s: cannot open", a->input);
    if (cols == width) return read_feature_csv(a->input, cols, &in->x);
    if (cols != width + 1)
      return cli_error(CMD,
                       "%s: %lld columns, but the model takes %lld features (give %lld "
                       "columns, or %lld with the labels last)",
                       a->input, (long long)cols, (long long)width, (long long)width,
                       (long long)width + 1);
    if (kiln_csv_load(a->input, NULL, &in->ds, &err)) return cli_kiln_error(CMD, &err);
    in->x = in->ds.x;
    in->y = in->ds.y;
    memset(&in->ds.x, 0, sizeof in->ds.x);
    memset(&in->ds.y, 0, sizeof in->ds.y);
    return CLI_EXIT_OK;
  }
  /* A built-in data set, NAME[:split]. */
  char name[64];
  const char *split;
  int text;
  int rc = cli_parse_dataset(CMD, "--input", a->input, name, sizeof name, &split, &text);
  if (rc) return rc;
  kiln_load_options lo;
  kiln_load_options_init(&lo);
  lo.data_dir = a->data_dir;
  lo.multi_hot = 0; /* text runs from the token ids */
  lo.missing = KILN_MISSING_IMPUTE_MEDIAN;
  if (text) {
    if (width > INT32_MAX)
      return cli_error(CMD, "%s: input width %lld too large", a->model, (long long)width);
    lo.num_words = (int32_t)width;
  }
  kiln_dataset train = {0}, test = {0};
  if (kiln_dataset_load(name, &lo, &train, &test, &err)) return cli_kiln_error(CMD, &err);
  if (!strcmp(split, "train")) {
    in->ds = train;
    kiln_dataset_free(&test);
  } else {
    in->ds = test;
    kiln_dataset_free(&train);
  }
  in->num_classes = in->ds.num_classes;
  in->y = in->ds.y;
  memset(&in->ds.y, 0, sizeof in->ds.y);
  if (text) {
    in->seq = in->ds.seq;
    if (in->seq.count == 0) return cli_error(CMD, "%s: the %s split is empty", name, split);
  } else {
    in->x = in->ds.x;
    memset(&in->ds.x, 0, sizeof in->ds.x);
  }
  (void)out_cols;
  return CLI_EXIT_OK;
}

/* --- output ------------------------------------------------------------------------- */

static int write_csv(const char *path, const float *v, int64_t rows, int64_t cols,
                     const char *class_names_json) {
  kiln_atomic_file af;
  kiln_error err = {0};
  if (kiln_atomic_open(&af, path, "w", &err)) return cli_kiln_error(CMD, &err);
  FILE *f = af.fp;
  cJSON *names = class_names_json ? cJSON_Parse(class_names_json) : NULL;
  int named = cJSON_IsArray(names) && cJSON_GetArraySize(names) == cols;
  for (int64_t c = 0; c < cols; c++) {
    const cJSON *nm = named ? cJSON_GetArrayItem(names, (int)c) : NULL;
    if (nm && cJSON_IsString(nm) && !strpbrk(nm->valuestring, ",\"\n"))
      fprintf(f, "%s%s", c ? "," : "", nm->valuestring);
    else
      fprintf(f, "%soutput_%lld", c ? "," : "", (long long)c);
  }
  fputc('\n', f);
  cJSON_Delete(names);
  for (int64_t r = 0; r < rows; r++) {
    for (int64_t c = 0; c < cols; c++) fprintf(f, "%s%.9g", c ? "," : "", (double)v[r * cols + c]);
    fputc('\n', f);
  }
  if (kiln_atomic_commit(&af, &err)) return cli_kiln_error(CMD, &err);
  return CLI_EXIT_OK;
}

/* Class of a row: argmax, or the 0.5 threshold of a single sigmoid unit. */
static int64_t predicted_class(const float *row, int64_t cols) {
  if (cols == 1) return row[0] > 0.5f;
  int64_t best = 0;
  for (int64_t c = 1; c < cols; c++)
    if (row[c] > row[best]) best = c;
  return best;
}

/* Labels are class indices when every one is an integer in [0, classes). */
static int labels_are_classes(const kiln_matrix *y, int64_t out_cols) {
  int64_t classes = out_cols == 1 ? 2 : out_cols;
  for (int64_t r = 0; r < y->rows; r++) {
    float v = y->values[r];
    if (v != floorf(v) || v < 0 || v >= (float)classes) return 0;
  }
  return 1;
}

int cmd_predict(int argc, char **argv) {
  predict_args a;
  int rc = parse_args(argc, argv, &a);
  if (rc) return rc;
  if (cli_check_output_path(CMD, "--output", a.output)) return CLI_EXIT_ERROR;

  kiln_error err = {0};
  kiln_ir_graph *g = NULL;
  kiln_session *s = NULL;
  predict_input in;
  memset(&in, 0, sizeof in);
  float *out = NULL, *mean = NULL, *std = NULL, *scratch = NULL;
  if (kiln_onnx_read_file(a.model, &g, &err)) return cli_kiln_error(CMD, &err);
  /* Pruned weights stored compactly (kiln quantize --prune) are decoded by the session. */
  kiln_session_options so;
  kiln_session_options_init(&so);
  so.max_batch = a.batch;
  so.threads = (int)a.threads;
  if (kiln_session_create(g, &so, &s, &err)) {
    rc = cli_kiln_error(CMD, &err);
    goto done;
  }
  if (kiln_session_input_count(s) != 1 || kiln_session_output_count(s) < 1) {
    rc = cli_error(CMD, "%s: kiln predict runs models with one input (this one has %d)", a.model,
                   kiln_session_input_count(s));
    goto done;
  }
  const kiln_ir_value *iv = kiln_session_input(s, 0);
  const kiln_ir_value *ov = kiln_session_output(s, 0);
  if (iv->rank < 2 || iv->dtype != KILN_DTYPE_FLOAT) {
    rc = cli_error(CMD, "%s: input '%s' is not a float batch of rows", a.model, iv->name);
    goto done;
  }
  int64_t width = 1;
  for (int k = 1; k < iv->rank; k++) {
    if (iv->dims[k].value <= 0) {
      rc = cli_error(CMD, "%s: input '%s' has a symbolic dim %d", a.model, iv->name, k);
      goto done;
    }
    width *= iv->dims[k].value;
  }
  int64_t out_cols = 1;
  for (int k = 1; k < ov->rank; k++) out_cols *= ov->dims[k].value > 0 ? ov->dims[k].value : 1;

  if ((rc = load_input(&a, width, out_cols, &in))) goto done;
  int tokens = in.seq.count > 0;
  int64_t rows = tokens ? in.seq.count : in.x.rows;
  if (!tokens && in.x.cols != width) {
    rc = cli_error(CMD, "%s: %lld features per row, but %s takes %lld", a.input,
                   (long long)in.x.cols, a.model, (long long)width);
    goto done;
  }
  if (rows == 0) {
    rc = cli_error(CMD, "%s: no rows", a.input);
    goto done;
  }

  if (kiln_ir_input_standardization(g, width, &mean, &std, &err)) {
    rc = cli_error(CMD, "%s: %s", a.model, err.message);
    goto done;
  }
  if (mean) {
    if (tokens) {
      rc = cli_error(CMD, "%s: the model asks for standardized inputs; token input cannot be",
                     a.model);
      goto done;
    }
    for (int64_t r = 0; r < rows; r++)
      for (int64_t c = 0; c < width; c++)
        in.x.values[r * width + c] = (in.x.values[r * width + c] - mean[c]) / std[c];
  }

  out = malloc((size_t)(rows * out_cols) * sizeof(float));
  if (!out) {
    rc = cli_error(CMD, "out of memory");
    goto done;
  }
  for (int64_t r = 0; r < rows; r += a.batch) {
    int64_t n = rows - r < a.batch ? rows - r : a.batch;
    kiln_tensor_view o = {0};
    kiln_status st;
    if (tokens) {
      /* Offsets relative to this batch's first token. */
      int64_t *off = malloc((size_t)(n + 1) * sizeof *off);
      if (!off) {
        rc = cli_error(CMD, "out of memory");
        goto done;
      }
      for (int64_t i = 0; i <= n; i++) off[i] = in.seq.offsets[r + i] - in.seq.offsets[r];
      st = kiln_session_run_tokens(s, off, in.seq.tokens + in.seq.offsets[r], n, &o, 1, &err);
      free(off);
    } else {
      kiln_tensor_view iv_data = {0};
      iv_data.dtype = KILN_DTYPE_FLOAT;
      iv_data.rank = iv->rank;
      iv_data.dims[0] = n;
      for (int k = 1; k < iv->rank; k++) iv_data.dims[k] = iv->dims[k].value;
      iv_data.data = in.x.values + r * width;
      st = kiln_session_run(s, &iv_data, 1, &o, 1, &err);
    }
    if (st) {
      kiln_error_prefix(&err, "rows %lld..%lld", (long long)r + 1, (long long)(r + n));
      rc = cli_kiln_error(CMD, &err);
      goto done;
    }
    if (o.dtype != KILN_DTYPE_FLOAT) {
      rc = cli_error(CMD, "%s: output '%s' is %s, not float", a.model, ov->name,
                     kiln_dtype_name(o.dtype));
      goto done;
    }
    memcpy(out + r * out_cols, o.data, (size_t)(n * out_cols) * sizeof(float));
  }

  /* Figures before the file, so nothing fails after it is written. */
  int has_labels = in.y.rows == rows && in.y.cols == 1;
  int classes = has_labels && (in.num_classes > 0 || labels_are_classes(&in.y, out_cols));
  double figure = 0;
  if (has_labels) {
    for (int64_t r = 0; r < rows; r++) {
      if (classes)
        figure += predicted_class(out + r * out_cols, out_cols) == (int64_t)in.y.values[r];
      else if (out_cols == 1)
        figure += fabs((double)out[r] - (double)in.y.values[r]);
    }
    figure /= (double)rows;
  }

  if (ends_with(a.output, ".npy")) {
    kiln_matrix om = {.rows = rows, .cols = out_cols, .values = out, .borrowed = 1};
    if (kiln_npy_write(a.output, &om, &err)) {
      rc = cli_kiln_error(CMD, &err);
      goto done;
    }
  } else if ((rc = write_csv(a.output, out, rows, out_cols,
                             kiln_ir_get_meta(g, "kiln.class_names")))) {
    goto done;
  }
  printf("Predicted %lld rows with %s (kernels: %s, batch %lld, %lld thread%s)\n", (long long)rows,
         a.model, kiln_session_kernel_name(s), (long long)a.batch, (long long)a.threads,
         a.threads == 1 ? "" : "s");
  if (has_labels && classes)
    printf("accuracy: %.4f\n", figure);
  else if (has_labels && out_cols == 1)
    printf("mae: %.6g\n", figure);
  printf("Outputs written to %s\n", a.output);
  if (fflush(stdout) != 0) rc = cli_error(CMD, "cannot write to stdout");
done:
  free(out);
  free(mean);
  free(std);
  free(scratch);
  input_free(&in);
  kiln_session_free(s);
  kiln_ir_free(g);
  return rc;
}

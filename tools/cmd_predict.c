/* kiln predict — run a .onnx on a .npy, a CSV or a built-in data set with kiln's
 * runtime and write the outputs as .npy or CSV. */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
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
          "       kiln predict MODEL.onnx --input NAME=FILE ... (--output-dir DIR | -o OUT.csv)\n"
          "\n"
          "Runs an ONNX model with kiln's runtime and writes one output row per input row.\n"
          "\n"
          "  --input NAME=FILE        a model with several inputs takes one per input, named as\n"
          "                           the graph input (see kiln inspect): FILE is a .npy or a\n"
          "                           CSV with a header and exactly that input's columns\n"
          "  --input x.npy            features, rows x features (float32/64, int); labels are\n"
          "                           read from y.npy beside it when it exists (the name with\n"
          "                           \"y\" for the first \"x\")\n"
          "  --input DATA.csv         a CSV with a header: as many columns as the model has\n"
          "                           features, or one more (the last column: labels)\n"
          "  --input DATASET[:split]  imdb, reuters, california_housing or fashion_mnist; split\n"
          "                           train or test (default test). imdb and reuters run from\n"
          "                           their token ids (no dense multi-hot rows are built)\n"
          "  --output, -o OUT.npy|OUT.csv\n"
          "                           float32 .npy, or CSV with a header (the class names when\n"
          "                           the model records them); with several outputs only CSV,\n"
          "                           its columns prefixed by the output's name\n"
          "                           (department_0, ..., priority)\n"
          "  --output-dir DIR         one float32 DIR/<output>.npy per model output (DIR is\n"
          "                           created when missing)\n"
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
          "Examples:\n"
          "  kiln predict imdb.onnx --input imdb:test --output imdb_test.npy\n"
          "  kiln predict ticket.onnx --input title=title.npy --input text_body=body.npy \\\n"
          "      --input tags=tags.npy --output-dir predictions\n");
}

#define PREDICT_MAX_INPUTS 16

typedef struct predict_args {
  const char *model, *input, *output, *data_dir, *output_dir;
  const char *inputs[PREDICT_MAX_INPUTS]; /* every --input as given */
  int n_inputs;
  int64_t batch, threads;
} predict_args;

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
      if (a->n_inputs == PREDICT_MAX_INPUTS)
        return cli_usage_error(CMD, "more than %d --input", PREDICT_MAX_INPUTS);
      a->inputs[a->n_inputs++] = v;
      a->input = v;
    } else if ((r = cli_option(CMD, argc, argv, &i, "--output-dir", &v)) != 0) {
      if (r < 0) return CLI_EXIT_ERROR;
      a->output_dir = v;
    } else if ((r = cli_option(CMD, argc, argv, &i, "--output", &v)) != 0 ||
               (r = cli_option(CMD, argc, argv, &i, "-o", &v)) != 0) {
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
  if (a->output && a->output_dir)
    return cli_usage_error(CMD, "give --output or --output-dir, not both");
  if (a->output_dir) {
    if (!*a->output_dir) return cli_usage_error(CMD, "--output-dir: empty folder name");
    return CLI_EXIT_OK;
  }
  if (!a->output) return cli_usage_error(CMD, "missing --output OUT.npy|OUT.csv (or --output-dir DIR)");
  if (!cli_ends_with(a->output, ".npy") && !cli_ends_with(a->output, ".csv"))
    return cli_usage_error(CMD, "--output %s: expected a .npy or .csv file name", a->output);
  if (strcmp(a->output, a->model) == 0)
    return cli_usage_error(CMD, "--output %s would overwrite an input", a->output);
  for (int i = 0; i < a->n_inputs; i++) {
    const char *eq = strchr(a->inputs[i], '=');
    if (strcmp(a->output, a->inputs[i]) == 0 || (eq && strcmp(a->output, eq + 1) == 0))
      return cli_usage_error(CMD, "--output %s would overwrite an input", a->output);
  }
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

static int load_input(const predict_args *a, int64_t width, int64_t out_cols, predict_input *in) {
  kiln_error err = {0};
  if (cli_ends_with(a->input, ".npy")) {
    if (kiln_npy_read(a->input, &in->x, &err)) return cli_kiln_error(CMD, &err);
    char *yp = cli_labels_path(a->input);
    if (yp && strcmp(yp, a->input) != 0 && access(yp, R_OK) == 0 &&
        kiln_npy_read(yp, &in->y, &err)) {
      free(yp);
      return cli_kiln_error(CMD, &err);
    }
    free(yp);
    if (in->y.rows && (in->y.rows != in->x.rows || in->y.cols != 1)) kiln_matrix_free(&in->y);
    return CLI_EXIT_OK;
  }
  if (cli_ends_with(a->input, ".csv")) {
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

/* --- several inputs or outputs ------------------------------------------------------ */

/* Features per row of a graph input or output ([batch, ...] with fixed trailing dims);
 * -1 when a trailing dim is symbolic. */
static int64_t row_width(const kiln_ir_value *v) {
  int64_t w = 1;
  for (int k = 1; k < v->rank; k++) {
    if (v->dims[k].value <= 0) return -1;
    w *= v->dims[k].value;
  }
  return w;
}

/* "title [batch, 10000], text_body [batch, 10000]": the inputs, for messages. */
static void describe_inputs(kiln_session *s, char *buf, size_t cap) {
  size_t used = 0;
  buf[0] = '\0';
  for (int i = 0; i < kiln_session_input_count(s) && used < cap; i++) {
    const kiln_ir_value *v = kiln_session_input(s, i);
    used += (size_t)snprintf(buf + used, cap - used, "%s%s (%lld features)", i ? ", " : "",
                             v->name, (long long)row_width(v));
  }
}

/* A file name for output `name` in dir: characters other than [A-Za-z0-9._-] become '_'. */
static char *output_file(const char *dir, const char *name) {
  size_t n = strlen(dir) + strlen(name) + 8;
  char *p = malloc(n);
  if (!p) return NULL;
  snprintf(p, n, "%s/%s.npy", dir, name);
  for (char *c = p + strlen(dir) + 1; *c && strcmp(c, ".npy"); c++)
    if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') ||
          *c == '.' || *c == '_' || *c == '-'))
      *c = '_';
  return p;
}

/* CSV of several outputs side by side: "<output>_<class name or column>" headers (a
 * one-column output is just "<output>"). class names: kiln.class_names.<output>, or
 * kiln.class_names for a one-output model. */
static int write_csv_io(const char *path, const kiln_ir_graph *g, kiln_session *s,
                        float *const *outs, const int64_t *cols, int64_t rows) {
  kiln_atomic_file af;
  kiln_error err = {0};
  if (kiln_atomic_open(&af, path, "w", &err)) return cli_kiln_error(CMD, &err);
  FILE *f = af.fp;
  int n = kiln_session_output_count(s);
  for (int o = 0; o < n; o++) {
    const char *name = kiln_session_output(s, o)->name;
    char key[300];
    snprintf(key, sizeof key, "kiln.class_names.%s", name);
    const char *cn = kiln_ir_get_meta(g, key);
    if (!cn && n == 1) cn = kiln_ir_get_meta(g, "kiln.class_names");
    cJSON *names = cn ? cJSON_Parse(cn) : NULL;
    int named = cJSON_IsArray(names) && cJSON_GetArraySize(names) == cols[o];
    for (int64_t c = 0; c < cols[o]; c++) {
      const cJSON *nm = named ? cJSON_GetArrayItem(names, (int)c) : NULL;
      const char *sep = o || c ? "," : "";
      if (nm && cJSON_IsString(nm) && !strpbrk(nm->valuestring, ",\"\n"))
        fprintf(f, "%s%s_%s", sep, name, nm->valuestring);
      else if (cols[o] == 1)
        fprintf(f, "%s%s", sep, name);
      else
        fprintf(f, "%s%s_%lld", sep, name, (long long)c);
    }
    cJSON_Delete(names);
  }
  fputc('\n', f);
  for (int64_t r = 0; r < rows; r++) {
    for (int o = 0; o < n; o++)
      for (int64_t c = 0; c < cols[o]; c++)
        fprintf(f, "%s%.9g", o || c ? "," : "", (double)outs[o][r * cols[o] + c]);
    fputc('\n', f);
  }
  if (kiln_atomic_commit(&af, &err)) return cli_kiln_error(CMD, &err);
  return CLI_EXIT_OK;
}

/* Loads the features of one --input file for graph input v (width features per row). */
static int load_features(const char *spec, const char *file, const kiln_ir_value *v, int64_t width,
                         kiln_matrix *x) {
  kiln_error err = {0};
  if (cli_ends_with(file, ".npy")) {
    if (kiln_npy_read(file, x, &err)) {
      kiln_error_prefix(&err, "--input %s", spec);
      return cli_kiln_error(CMD, &err);
    }
  } else if (cli_ends_with(file, ".csv")) {
    int64_t cols = csv_columns(file);
    if (cols < 0) return cli_error(CMD, "--input %s: cannot open %s", spec, file);
    if (cols != width)
      return cli_error(CMD, "--input %s: %lld columns, but input '%s' takes %lld features per row",
                       spec, (long long)cols, v->name, (long long)width);
    int rc = read_feature_csv(file, cols, x);
    if (rc) return rc;
  } else {
    return cli_usage_error(CMD, "--input %s: expected a .npy or .csv file for input '%s'", spec,
                           v->name);
  }
  if (x->cols != width)
    return cli_error(CMD, "--input %s: %lld features per row, but input '%s' takes %lld", spec,
                     (long long)x->cols, v->name, (long long)width);
  return CLI_EXIT_OK;
}

/* A model with several inputs (each --input NAME=FILE) or several outputs (--output-dir or
 * a CSV): dense rows from .npy or CSV files, no labels, no standardization metadata. */
static int predict_io(const predict_args *a, const kiln_ir_graph *g, kiln_session *s) {
  int ni = kiln_session_input_count(s), no = kiln_session_output_count(s);
  char desc[1024];
  describe_inputs(s, desc, sizeof desc);
  if (a->output && cli_ends_with(a->output, ".npy") && no > 1)
    return cli_usage_error(CMD,
                           "--output %s: the model has %d outputs; write them with --output-dir "
                           "DIR (one .npy each) or to a .csv",
                           a->output, no);
  if (ni > PREDICT_MAX_INPUTS)
    return cli_error(CMD, "%s: %d inputs (kiln predict takes at most %d)", a->model, ni,
                     PREDICT_MAX_INPUTS);
  /* which --input feeds which graph input */
  const char *file[PREDICT_MAX_INPUTS] = {0}, *spec[PREDICT_MAX_INPUTS] = {0};
  for (int j = 0; j < a->n_inputs; j++) {
    const char *eq = strchr(a->inputs[j], '=');
    int target = -1;
    for (int i = 0; eq && i < ni; i++) {
      const char *name = kiln_session_input(s, i)->name;
      if ((size_t)(eq - a->inputs[j]) == strlen(name) && !strncmp(a->inputs[j], name, strlen(name)))
        target = i;
    }
    if (target < 0 && ni == 1 && a->n_inputs == 1 && !eq) target = 0; /* one input, unnamed */
    if (target < 0) {
      if (eq)
        return cli_usage_error(CMD, "--input %s: the model has no input '%.*s' (its inputs: %s)",
                               a->inputs[j], (int)(eq - a->inputs[j]), a->inputs[j], desc);
      return cli_usage_error(CMD,
                             "--input %s: the model has %d inputs: give each as --input "
                             "NAME=FILE (its inputs: %s)",
                             a->inputs[j], ni, desc);
    }
    if (file[target])
      return cli_usage_error(CMD, "--input %s: input '%s' is given twice", a->inputs[j],
                             kiln_session_input(s, target)->name);
    file[target] = eq ? eq + 1 : a->inputs[j];
    spec[target] = a->inputs[j];
  }
  for (int i = 0; i < ni; i++) {
    const kiln_ir_value *v = kiln_session_input(s, i);
    if (!file[i])
      return cli_usage_error(CMD, "missing --input %s=FILE: input '%s' takes %lld features per "
                             "row (the model's inputs: %s)",
                             v->name, v->name, (long long)row_width(v), desc);
    if (v->rank < 2 || v->dtype != KILN_DTYPE_FLOAT || row_width(v) <= 0)
      return cli_error(CMD, "%s: input '%s' is not a float batch of rows with fixed features",
                       a->model, v->name);
    if (a->output && !strcmp(a->output, file[i]))
      return cli_usage_error(CMD, "--output %s would overwrite an input", a->output);
  }

  int rc = CLI_EXIT_OK;
  kiln_error err = {0};
  kiln_matrix x[PREDICT_MAX_INPUTS];
  memset(x, 0, sizeof x);
  float *outs[PREDICT_MAX_INPUTS] = {0};
  int64_t cols[PREDICT_MAX_INPUTS] = {0};
  kiln_tensor_view views[PREDICT_MAX_INPUTS], ov[PREDICT_MAX_INPUTS];
  char **written = NULL;
  int n_written = 0;
  if (no > PREDICT_MAX_INPUTS) {
    rc = cli_error(CMD, "%s: %d outputs (kiln predict writes at most %d)", a->model, no,
                   PREDICT_MAX_INPUTS);
    goto done;
  }
  int64_t rows = -1;
  for (int i = 0; i < ni; i++) {
    const kiln_ir_value *v = kiln_session_input(s, i);
    if ((rc = load_features(spec[i], file[i], v, row_width(v), &x[i]))) goto done;
    if (rows >= 0 && x[i].rows != rows) {
      rc = cli_error(CMD, "--input %s: %lld rows, but --input %s has %lld (one row per example "
                     "in every input)",
                     spec[i], (long long)x[i].rows, spec[0], (long long)rows);
      goto done;
    }
    rows = x[i].rows;
  }
  if (rows <= 0) {
    rc = cli_error(CMD, "--input %s: no rows", spec[0]);
    goto done;
  }
  for (int o = 0; o < no; o++) {
    const kiln_ir_value *v = kiln_session_output(s, o);
    cols[o] = 1;
    for (int k = 1; k < v->rank; k++) cols[o] *= v->dims[k].value > 0 ? v->dims[k].value : 1;
    if (!(outs[o] = malloc((size_t)(rows * cols[o]) * sizeof(float)))) {
      rc = cli_error(CMD, "out of memory");
      goto done;
    }
  }
  for (int64_t r = 0; r < rows; r += a->batch) {
    int64_t n = rows - r < a->batch ? rows - r : a->batch;
    for (int i = 0; i < ni; i++) {
      const kiln_ir_value *v = kiln_session_input(s, i);
      memset(&views[i], 0, sizeof views[i]);
      views[i].dtype = KILN_DTYPE_FLOAT;
      views[i].rank = v->rank;
      views[i].dims[0] = n;
      for (int k = 1; k < v->rank; k++) views[i].dims[k] = v->dims[k].value;
      views[i].data = x[i].values + r * x[i].cols;
    }
    if (kiln_session_run(s, views, ni, ov, no, &err)) {
      kiln_error_prefix(&err, "rows %lld..%lld", (long long)r + 1, (long long)(r + n));
      rc = cli_kiln_error(CMD, &err);
      goto done;
    }
    for (int o = 0; o < no; o++) {
      if (ov[o].dtype != KILN_DTYPE_FLOAT) {
        rc = cli_error(CMD, "%s: output '%s' is %s, not float", a->model, ov[o].name,
                       kiln_dtype_name(ov[o].dtype));
        goto done;
      }
      memcpy(outs[o] + r * cols[o], ov[o].data, (size_t)(n * cols[o]) * sizeof(float));
    }
  }

  if (a->output_dir) {
    struct stat st;
    if (mkdir(a->output_dir, 0755) != 0 && errno != EEXIST) {
      rc = cli_error(CMD, "--output-dir %s: cannot create it: %s", a->output_dir, strerror(errno));
      goto done;
    }
    if (stat(a->output_dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
      rc = cli_error(CMD, "--output-dir %s: not a folder", a->output_dir);
      goto done;
    }
    if (!(written = calloc((size_t)no, sizeof *written))) {
      rc = cli_error(CMD, "out of memory");
      goto done;
    }
    for (int o = 0; o < no; o++) {
      char *path = output_file(a->output_dir, kiln_session_output(s, o)->name);
      if (!path) {
        rc = cli_error(CMD, "out of memory");
        goto done;
      }
      kiln_matrix om = {.rows = rows, .cols = cols[o], .values = outs[o], .borrowed = 1};
      if (kiln_npy_write(path, &om, &err)) {
        free(path);
        rc = cli_kiln_error(CMD, &err);
        goto done;
      }
      written[n_written++] = path;
    }
  } else if (cli_ends_with(a->output, ".npy")) {
    kiln_matrix om = {.rows = rows, .cols = cols[0], .values = outs[0], .borrowed = 1};
    if (kiln_npy_write(a->output, &om, &err)) {
      rc = cli_kiln_error(CMD, &err);
      goto done;
    }
  } else if ((rc = write_csv_io(a->output, g, s, outs, cols, rows))) {
    goto done;
  }
  printf("Predicted %lld rows with %s (kernels: %s, batch %lld, %lld thread%s)\n", (long long)rows,
         a->model, kiln_session_kernel_name(s), (long long)a->batch, (long long)a->threads,
         a->threads == 1 ? "" : "s");
  for (int i = 0; i < ni; i++)
    printf("  input %s <- %s\n", kiln_session_input(s, i)->name, file[i]);
  for (int o = 0; o < no; o++) {
    if (a->output_dir)
      printf("  output %s (%lld column%s) -> %s\n", kiln_session_output(s, o)->name,
             (long long)cols[o], cols[o] == 1 ? "" : "s", written[o]);
    else
      printf("  output %s (%lld column%s)\n", kiln_session_output(s, o)->name, (long long)cols[o],
             cols[o] == 1 ? "" : "s");
  }
  if (a->output) printf("Outputs written to %s\n", a->output);
  if (fflush(stdout) != 0) rc = cli_error(CMD, "cannot write to stdout");
done:
  /* all outputs or none: a failure after some files were written removes them */
  for (int k = 0; k < n_written; k++) {
    if (rc) unlink(written[k]);
    free(written[k]);
  }
  free(written);
  for (int i = 0; i < ni && i < PREDICT_MAX_INPUTS; i++) kiln_matrix_free(&x[i]);
  for (int o = 0; o < no && o < PREDICT_MAX_INPUTS; o++) free(outs[o]);
  return rc;
}

int cmd_predict(int argc, char **argv) {
  predict_args a;
  int rc = parse_args(argc, argv, &a);
  if (rc) return rc;
  if (a.output && cli_check_output_path(CMD, "--output", a.output)) return CLI_EXIT_ERROR;

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
  if (kiln_session_input_count(s) < 1 || kiln_session_output_count(s) < 1) {
    rc = cli_error(CMD, "%s: the model has %d inputs and %d outputs (at least one of each needed)",
                   a.model, kiln_session_input_count(s), kiln_session_output_count(s));
    goto done;
  }
  if (a.n_inputs == 1 && kiln_session_input_count(s) == 1) {
    /* "--input NAME=FILE" on a one-input model: the name must be the input's */
    const char *eq = strchr(a.input, '=');
    const char *name = kiln_session_input(s, 0)->name;
    if (eq && (size_t)(eq - a.input) == strlen(name) && !strncmp(a.input, name, strlen(name)))
      a.input = eq + 1;
  }
  if (kiln_session_input_count(s) > 1 || kiln_session_output_count(s) > 1 || a.n_inputs > 1 ||
      a.output_dir) {
    rc = predict_io(&a, g, s);
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

  if (cli_ends_with(a.output, ".npy")) {
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

/* kiln train — fit a model described by a JSON spec on a built-in data set or a file.
 *
 * Order of work: arguments, spec, output folders, data, model, fit, test evaluation,
 * and only then the output files, so a failure before the end leaves no file behind;
 * a file this run wrote is removed if a later step fails. */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <cjson/cJSON.h>

#include "cli.h"
#include "kiln/callbacks.h"
#include "kiln/data.h"
#include "kiln/export.h"
#include "kiln/quantize.h"
#include "kiln/train.h"

static const char *const CMD = "train";
#define STATE_FILE "state.kstate"

void cmd_train_usage(FILE *out) {
  fprintf(out,
          "Usage: kiln train SPEC.json --data NAME|FILE [options]\n"
          "       kiln train SPEC.json --x INPUT=FILE.npy ... --y OUTPUT=FILE.npy ... [options]\n"
          "\n"
          "Builds the model of SPEC.json (its Input width comes from the data when the spec\n"
          "gives no shape), fits it with the spec's \"fit\" settings overridden by the options\n"
          "below, evaluates it on the test split when the data set has one, and prints the\n"
          "final figures. Progress goes to stderr.\n"
          "\n"
          "Data:\n"
          "  --data NAME|FILE        imdb, reuters, california_housing, fashion_mnist, or a\n"
          "                          file: DATA.csv (header line; the target is the last\n"
          "                          column) or x.npy (labels from y.npy beside it)\n"
          "  --data-dir DIR          folder of the built-in data sets (default $KILN_DATA_DIR,\n"
          "                          else ../shared/data)\n"
          "  --num-words N           imdb/reuters: keep the N most frequent words (10000)\n"
          "  --target COL            CSV: the name of the target column\n"
          "  --missing error|median  an empty feature cell is an error (default), or is\n"
          "                          filled with the training split's column median\n"
          "  --standardize           centre and scale every feature by the training split's\n"
          "                          mean and standard deviation\n"
          "  --scale-targets F       regression: multiply the targets by F (e.g. 0.00001)\n"
          "\n"
          "Data of a functional spec with several inputs or outputs (examples/specs/ticket.json),\n"
          "by the names of its inputs and outputs, as Keras' fit(x={...}, y={...}):\n"
          "  --x INPUT=FILE.npy      the rows of one input (2-D .npy, one per input)\n"
          "  --y OUTPUT=FILE.npy     the targets of one output (class indices for sparse\n"
          "                          categorical crossentropy, one-hot rows for categorical)\n"
          "                          Every input and output needs one, all with the same rows;\n"
          "                          there is no test split; --output writes a .kiln or a\n"
          "                          .onnx with every input and output.\n"
          "                          --data, --standardize, --scale-targets, --prune, --resume\n"
          "                          and --checkpoint-dir are for single-input models\n"
          "\n"
          "Training (override the spec):\n"
          "  --seed N                weight initialisation, shuffling and dropout seed\n"
          "  --epochs N              number of epochs\n"
          "  --batch-size N          rows per gradient step\n"
          "  --validation-split F    the last fraction F of the training rows, in [0, 1)\n"
          "  --verbose 0|1|2         0 silent, 1 progress bar, 2 one line per epoch\n"
          "\n"
          "Pruning during training (TF Model Optimization's PolynomialDecay schedule):\n"
          "  --prune S               magnitude-prune every Dense kernel while training, from\n"
          "                          sparsity 0 up to S in [0, 1) (cubic ramp); the pruned\n"
          "                          weights are held at exactly 0 after every batch\n"
          "  --prune-begin STEP      first optimizer step (batch) of the ramp (default 0)\n"
          "  --prune-end STEP        step at which S is reached (> --prune-begin); default 2/3\n"
          "                          of the optimizer steps this command runs, so the last\n"
          "                          third fine-tunes at the final sparsity\n"
          "  --prune-block KxN       prune whole blocks of K inputs x N outputs (4x16: what the\n"
          "                          int8 runtime's block-sparse kernel skips); S counts blocks\n"
          "  --prune-frequency N     steps between mask updates inside the ramp; default 100\n"
          "                          (the library's), or (end - begin) / 20 when that is\n"
          "                          smaller (at least 1), so that a short run still ramps in\n"
          "                          about 20 updates\n"
          "                          The sparsity reached by each Dense kernel is printed and\n"
          "                          given in --json as \"sparsity\". Steps are counted over\n"
          "                          the epochs this command runs (with --resume, from there)\n"
          "\n"
          "Output:\n"
          "  --history FILE.csv      write the per-epoch figures (Keras' History) as CSV\n"
          "  --output MODEL.kiln     write the trained model (a kiln checkpoint)\n"
          "  --output MODEL.onnx     or export it as ONNX (opset 13, Gemm; the --standardize\n"
          "                          mean and std recorded as kiln.input_mean/input_std;\n"
          "                          see kiln export for other forms); a functional spec\n"
          "                          trained from --x/--y exports all its inputs/outputs\n"
          "  --json                  print one JSON object with the final figures as the last\n"
          "                          line of stdout\n"
          "\n"
          "Checkpoints and resuming:\n"
          "  --checkpoint-dir DIR    after every epoch, write the training state (weights,\n"
          "                          optimizer slots, epoch, random generator states) to\n"
          "                          DIR/" STATE_FILE ", atomically (DIR is created if missing)\n"
          "  --resume CHECKPOINT     continue from a training state (a file, or a folder\n"
          "                          holding " STATE_FILE "): the model comes from it, the\n"
          "                          data and fit settings from SPEC.json and the options,\n"
          "                          and training runs from the epoch it reached up to\n"
          "                          --epochs (the total, as Keras' initial_epoch); the\n"
          "                          result is the same as that of an uninterrupted run. The\n"
          "                          history covers the epochs run by this command\n"
          "\n"
          "Categorical crossentropy takes one-hot targets: the class labels are encoded\n"
          "here. For a classification loss, a CSV's target must hold class indices in\n"
          "[0, classes), where classes is the width of the model's output (2 for\n"
          "binary_crossentropy).\n"
          "\n"
          "Exit status: 0 success, 1 training diverged, 2 a usage, input or output error.\n"
          "On failure no --history or --output file is left behind.\n"
          "\n"
          "Example:\n"
          "  kiln train examples/specs/imdb.json --data imdb --history imdb.csv --output imdb.kiln\n"
          "  kiln train examples/specs/housing.json --data california_housing --missing median \\\n"
          "      --standardize --scale-targets 0.00001\n");
}

typedef struct train_args {
  const char *spec_path;
  const char *data;
  const char *x[KILN_MAX_IO]; /* --x NAME=FILE.npy, as given */
  int n_x;
  const char *y[KILN_MAX_IO]; /* --y NAME=FILE.npy */
  int n_y;
  const char *data_dir;
  const char *target;
  const char *history_path;
  const char *output_path;
  int64_t num_words; /* 0: the loader's default */
  int has_seed;
  uint64_t seed;
  int64_t epochs;     /* 0: the spec's */
  int64_t batch_size; /* 0: the spec's */
  int has_validation_split;
  double validation_split;
  kiln_missing_policy missing;
  int standardize;
  int has_scale_targets;
  double scale_targets;
  int64_t verbose; /* -1: the spec's */
  int json;
  const char *resume;         /* a training state file or a folder holding one */
  const char *checkpoint_dir; /* where to write the state after every epoch */
  int has_prune;              /* --prune S: the pruning schedule */
  double prune;
  int64_t prune_begin;        /* -1: 0 */
  int64_t prune_end;          /* -1: 2/3 of the steps of the run */
  int64_t prune_frequency;    /* 0: min(100, (end - begin) / 20), at least 1 */
  int prune_block_k, prune_block_n; /* --prune-block KxN; 0: every weight on its own */
} train_args;

static int parse_args(int argc, char **argv, train_args *a) {
  memset(a, 0, sizeof *a);
  a->verbose = -1;
  a->prune_begin = a->prune_end = -1;
  int options_done = 0;
  for (int i = 1; i < argc; i++) {
    const char *arg = argv[i];
    const char *v = NULL;
    int r;
    if (options_done || arg[0] != '-' || arg[1] == '\0') {
      if (a->spec_path)
        return cli_usage_error(CMD, "unexpected argument \"%s\" (the spec is %s)", arg,
                               a->spec_path);
      a->spec_path = arg;
      continue;
    }
    if (strcmp(arg, "--") == 0) {
      options_done = 1;
      continue;
    }
#define OPTION(name) ((r = cli_option(CMD, argc, argv, &i, name, &v)) != 0)
#define FLAG(name) ((r = cli_flag(CMD, arg, name)) != 0)
    if (OPTION("--data")) {
      a->data = v;
    } else if (OPTION("--x") || OPTION("--y")) {
      int is_x = arg[2] == 'x';
      const char **list = is_x ? a->x : a->y;
      int *n = is_x ? &a->n_x : &a->n_y;
      if (r > 0 && (!strchr(v, '=') || v[0] == '=' || !strchr(v, '=')[1])) {
        cli_usage_error(CMD, "%s: expected NAME=FILE.npy, got \"%s\"", arg, v);
        r = -1;
      } else if (r > 0 && *n == KILN_MAX_IO) {
        cli_usage_error(CMD, "%s: at most %d", arg, KILN_MAX_IO);
        r = -1;
      } else if (r > 0) {
        list[(*n)++] = v;
      }
    } else if (OPTION("--data-dir")) {
      a->data_dir = v;
    } else if (OPTION("--num-words")) {
      if (r > 0 && cli_parse_int64(CMD, "--num-words", v, 1, INT32_MAX, &a->num_words)) r = -1;
    } else if (OPTION("--target")) {
      a->target = v;
    } else if (OPTION("--missing")) {
      if (r > 0 && strcmp(v, "median") == 0) {
        a->missing = KILN_MISSING_IMPUTE_MEDIAN;
      } else if (r > 0 && strcmp(v, "error") != 0) {
        cli_usage_error(CMD, "--missing: expected error or median, got \"%s\"", v);
        r = -1;
      }
    } else if (OPTION("--seed")) {
      if (r > 0 && cli_parse_uint64(CMD, "--seed", v, &a->seed)) r = -1;
      a->has_seed = 1;
    } else if (OPTION("--epochs")) {
      if (r > 0 && cli_parse_int64(CMD, "--epochs", v, 1, INT32_MAX, &a->epochs)) r = -1;
    } else if (OPTION("--batch-size")) {
      if (r > 0 && cli_parse_int64(CMD, "--batch-size", v, 1, INT32_MAX, &a->batch_size)) r = -1;
    } else if (OPTION("--validation-split")) {
      if (r > 0 && cli_parse_double(CMD, "--validation-split", v, 0.0, 1.0, 1,
                                    &a->validation_split))
        r = -1;
      a->has_validation_split = 1;
    } else if (OPTION("--scale-targets")) {
      if (r > 0 && cli_parse_double(CMD, "--scale-targets", v, -1e30, 1e30, 0, &a->scale_targets))
        r = -1;
      if (r > 0 && a->scale_targets == 0.0) {
        cli_usage_error(CMD, "--scale-targets: the factor cannot be 0");
        r = -1;
      }
      a->has_scale_targets = 1;
    } else if (OPTION("--verbose")) {
      if (r > 0 && cli_parse_int64(CMD, "--verbose", v, 0, 2, &a->verbose)) r = -1;
    } else if (OPTION("--history")) {
      a->history_path = v;
    } else if (OPTION("--output")) {
      a->output_path = v;
    } else if (FLAG("--standardize")) {
      a->standardize = 1;
    } else if (FLAG("--json")) {
      a->json = 1;
    } else if (OPTION("--resume")) {
      a->resume = v;
    } else if (OPTION("--checkpoint-dir")) {
      a->checkpoint_dir = v;
    } else if (OPTION("--prune")) {
      if (r > 0 && cli_parse_double(CMD, "--prune", v, 0.0, 1.0, 1, &a->prune)) r = -1;
      a->has_prune = 1;
    } else if (OPTION("--prune-begin")) {
      if (r > 0 && cli_parse_int64(CMD, "--prune-begin", v, 0, INT64_MAX / 2, &a->prune_begin))
        r = -1;
    } else if (OPTION("--prune-end")) {
      if (r > 0 && cli_parse_int64(CMD, "--prune-end", v, 1, INT64_MAX / 2, &a->prune_end)) r = -1;
    } else if (OPTION("--prune-block")) {
      char tail = 0;
      if (r > 0 && (sscanf(v, "%dx%d%c", &a->prune_block_k, &a->prune_block_n, &tail) != 2 ||
                    a->prune_block_k < 1 || a->prune_block_n < 1 || a->prune_block_k > 65536 ||
                    a->prune_block_n > 65536))
        return cli_usage_error(CMD, "--prune-block %s: expected KxN with K, N in [1, 65536], e.g. 4x16", v);
    } else if (OPTION("--prune-frequency")) {
      if (r > 0 &&
          cli_parse_int64(CMD, "--prune-frequency", v, 1, INT64_MAX / 2, &a->prune_frequency))
        r = -1;
    } else {
      return cli_usage_error(CMD, "unknown option \"%s\"", arg);
    }
#undef OPTION
#undef FLAG
    if (r < 0) return CLI_EXIT_ERROR;
  }
  if (!a->spec_path) return cli_usage_error(CMD, "missing SPEC.json");
  if (a->n_x || a->n_y) {
    const char *single = a->data ? "--data" : a->standardize ? "--standardize"
                         : a->has_scale_targets ? "--scale-targets" : a->has_prune ? "--prune"
                         : a->resume ? "--resume" : a->checkpoint_dir ? "--checkpoint-dir"
                         : a->target ? "--target" : NULL;
    if (single)
      return cli_usage_error(CMD, "%s cannot be combined with --x/--y (data by input name)",
                             single);
    if (!a->n_x || !a->n_y)
      return cli_usage_error(CMD, "--x and --y go together (every input's and output's data)");
  } else if (!a->data) {
    return cli_usage_error(CMD, "missing --data NAME|FILE (or --x/--y for a functional spec)");
  }
  if (a->history_path && a->output_path && strcmp(a->history_path, a->output_path) == 0)
    return cli_usage_error(CMD, "--history and --output name the same file %s", a->history_path);
  if (!a->has_prune && (a->prune_begin >= 0 || a->prune_end >= 0 || a->prune_frequency ||
                        a->prune_block_k))
    return cli_usage_error(CMD, "--prune-begin, --prune-end, --prune-frequency and --prune-block "
                                "need --prune S");
  if (a->prune_begin >= 0 && a->prune_end >= 0 && a->prune_end <= a->prune_begin)
    return cli_usage_error(CMD, "--prune-end %lld must be greater than --prune-begin %lld",
                           (long long)a->prune_end, (long long)a->prune_begin);
  if (a->resume && a->has_seed)
    return cli_usage_error(CMD, "--seed cannot be combined with --resume (the training state "
                                "holds the generator states)");
  return CLI_EXIT_OK;
}

/* What the spec API does not expose: the loss and whether "fit" sets verbose. The
 * file was just validated by kiln_spec_load, so only presence is checked here. */
static int read_spec_extras(const char *path, int by_name, kiln_loss *loss, int *has_verbose) {
  FILE *f = fopen(path, "rb");
  if (!f) {
    cli_error(CMD, "%s: cannot open", path);
    return -1;
  }
  char *text = NULL;
  size_t len = 0, cap = 0, n;
  do {
    if (len + 4097 > cap) {
      cap = cap ? cap * 2 : 8192;
      char *p = realloc(text, cap);
      if (!p) {
        free(text);
        fclose(f);
        cli_error(CMD, "out of memory");
        return -1;
      }
      text = p;
    }
    n = fread(text + len, 1, cap - len - 1, f);
    len += n;
  } while (n > 0);
  fclose(f);
  text[len] = '\0';
  const char *start = text;
  if (len >= 3 && (unsigned char)text[0] == 0xEF) start += 3; /* byte order mark */
  cJSON *root = cJSON_Parse(start);
  free(text);
  const cJSON *compile = cJSON_GetObjectItemCaseSensitive(root, "compile");
  const cJSON *name = cJSON_GetObjectItemCaseSensitive(compile, "loss");
  const cJSON *fit = cJSON_GetObjectItemCaseSensitive(root, "fit");
  int n_in = cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(root, "inputs"));
  int n_out = cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(root, "outputs"));
  kiln_error err = {0};
  int rc = 0;
  if (by_name) {
    *loss = KILN_LOSS_MEAN_SQUARED_ERROR; /* per output: checked by the model */
  } else if (n_in > 1 || n_out > 1) {
    /* One --data set is one feature matrix and one target column. */
    cli_error(CMD,
              "%s: a functional spec with %d inputs and %d outputs: give each its data with "
              "--x INPUT=FILE.npy and --y OUTPUT=FILE.npy (one --data set feeds one input and "
              "one target)",
              path, n_in > 1 ? n_in : 1, n_out > 1 ? n_out : 1);
    rc = -1;
  } else if (!cJSON_IsString(name) || kiln_loss_parse(name->valuestring, loss, &err)) {
    cli_error(CMD, "%s: compile.loss: cannot read the loss", path);
    rc = -1;
  }
  *has_verbose = cJSON_GetObjectItemCaseSensitive(fit, "verbose") != NULL;
  cJSON_Delete(root);
  return rc;
}

static int is_classification(kiln_loss loss) {
  return loss == KILN_LOSS_BINARY_CROSSENTROPY || loss == KILN_LOSS_CATEGORICAL_CROSSENTROPY ||
         loss == KILN_LOSS_SPARSE_CATEGORICAL_CROSSENTROPY;
}

/* The width of the model's output, from a throw-away build: the data's width is not
 * known yet, and the spec may not give it (then any width does). */
static int spec_output_units(const kiln_spec *spec, int64_t *units) {
  kiln_model *m = NULL;
  kiln_error first = {0}, second = {0};
  if (kiln_spec_build(spec, 0, KILN_SEED_FROM_SPEC, &m, &first) &&
      kiln_spec_build(spec, 1, KILN_SEED_FROM_SPEC, &m, &second)) {
    /* A shape error means the spec has its width, so the first error is the real one. */
    cli_kiln_error(CMD, second.status == KILN_E_SHAPE ? &first : &second);
    return -1;
  }
  *units = kiln_model_output_features(m);
  kiln_model_free(m);
  return 0;
}

/* The data loaders check their files; this also covers what a loader may pass on
 * (a NaN pixel in a .npy, a fractional label) and names the split and row. */
static int check_split(const char *data, const char *split, const kiln_dataset *d,
                       kiln_loss loss, int32_t classes) {
  int64_t r, c;
  if (kiln_matrix_find_nonfinite(&d->x, &r, &c)) {
    cli_error(CMD, "%s: %s split, row %lld, feature column %lld: %g is not a finite number", data,
              split, (long long)r + 1, (long long)c + 1, (double)kiln_matrix_get(&d->x, r, c));
    return -1;
  }
  if (kiln_matrix_find_nonfinite(&d->y, &r, &c)) {
    cli_error(CMD, "%s: %s split, row %lld: the target %g is not a finite number", data, split,
              (long long)r + 1, (double)kiln_matrix_get(&d->y, r, c));
    return -1;
  }
  if (!is_classification(loss)) return 0;
  for (r = 0; r < d->y.rows; r++) {
    float v = d->y.values[r * d->y.cols];
    if (d->y.cols != 1 || v != floorf(v) || v < 0 || v >= (float)classes) {
      cli_error(CMD, "%s: %s split, row %lld: label %g is not a class index in [0, %d)", data,
                split, (long long)r + 1, (double)v, (int)classes);
      return -1;
    }
  }
  return 0;
}

static double seconds_since(const struct timespec *t0) {
  struct timespec t1;
  clock_gettime(CLOCK_MONOTONIC, &t1);
  return (double)(t1.tv_sec - t0->tv_sec) + (double)(t1.tv_nsec - t0->tv_nsec) * 1e-9;
}

/* The last epoch's figures with (val) or without the "val_" prefix: printed as
 * "loss 0.1234, accuracy 0.9" when out is not NULL, added to obj when it is not NULL. */
static void history_figures(const kiln_history *h, int val, FILE *out, cJSON *obj) {
  int e = h->epochs - 1, first = 1;
  for (int k = 0; k < h->n_keys; k++) {
    const char *key = h->keys[k];
    int is_val = strncmp(key, "val_", 4) == 0;
    if (is_val != val) continue;
    double v = h->values[e * h->n_keys + k];
    if (out) fprintf(out, "%s%s %.4f", first ? "" : ", ", is_val ? key + 4 : key, v);
    first = 0;
    if (obj) cJSON_AddNumberToObject(obj, is_val ? key + 4 : key, v);
  }
}

static int history_has_val(const kiln_history *h) {
  for (int k = 0; k < h->n_keys; k++)
    if (strncmp(h->keys[k], "val_", 4) == 0) return 1;
  return 0;
}

static cJSON *logs_object(const kiln_logs *logs) {
  cJSON *o = cJSON_CreateObject();
  for (int i = 0; o && i < logs->n; i++) cJSON_AddNumberToObject(o, logs->keys[i], logs->values[i]);
  return o;
}

typedef struct train_run {
  kiln_spec *spec;
  kiln_dataset train, test;
  kiln_standardizer standardizer;
  kiln_model *model;
  kiln_history history;
  char *json_line;
  char *state_path;      /* --checkpoint-dir's file */
  kiln_callback checkpoint;
  kiln_callback prune;
  kiln_prune_schedule_config prune_cfg;
} train_run;

static void run_free(train_run *t) {
  kiln_spec_free(t->spec);
  kiln_dataset_free(&t->train);
  kiln_dataset_free(&t->test);
  kiln_standardizer_free(&t->standardizer);
  kiln_model_free(t->model);
  kiln_history_free(&t->history);
  cJSON_free(t->json_line);
  free(t->state_path);
  kiln_callback_free(&t->checkpoint);
  kiln_callback_free(&t->prune);
}

/* DIR/name in a new string (NULL when out of memory). */
static char *join_path(const char *dir, const char *name) {
  size_t n = strlen(dir) + strlen(name) + 2;
  char *p = malloc(n);
  if (p) snprintf(p, n, "%s%s%s", dir, dir[0] && dir[strlen(dir) - 1] == '/' ? "" : "/", name);
  return p;
}

/* --resume: loads the training state (a file, or DIR/state.kstate). */
static int load_resume_state(const train_args *a, train_run *t, const kiln_fit_options *fit) {
  struct stat st;
  if (stat(a->resume, &st) != 0)
    return cli_error(CMD, "--resume: %s: %s", a->resume, strerror(errno));
  char *path = S_ISDIR(st.st_mode) ? join_path(a->resume, STATE_FILE) : strdup(a->resume);
  if (!path) return cli_error(CMD, "out of memory");
  kiln_error err = {0};
  kiln_status s = kiln_model_load_state(path, &t->model, &err);
  free(path);
  if (s) {
    kiln_error_prefix(&err, "--resume");
    return cli_kiln_error(CMD, &err);
  }
  if (kiln_model_epoch(t->model) >= fit->epochs)
    return cli_error(CMD,
                     "--resume: %s has already run %d epoch%s; ask for more with --epochs N "
                     "(the total, now %d)",
                     a->resume, kiln_model_epoch(t->model),
                     kiln_model_epoch(t->model) == 1 ? "" : "s", fit->epochs);
  return CLI_EXIT_OK;
}

/* --checkpoint-dir: creates DIR if needed and a ModelCheckpoint writing the state. */
static int prepare_checkpoints(const train_args *a, train_run *t) {
  if (mkdir(a->checkpoint_dir, 0755) != 0 && errno != EEXIST)
    return cli_error(CMD, "--checkpoint-dir: %s: cannot create it (%s)", a->checkpoint_dir,
                     strerror(errno));
  struct stat st;
  if (stat(a->checkpoint_dir, &st) != 0 || !S_ISDIR(st.st_mode))
    return cli_error(CMD, "--checkpoint-dir: %s is not a folder", a->checkpoint_dir);
  t->state_path = join_path(a->checkpoint_dir, STATE_FILE);
  if (!t->state_path) return cli_error(CMD, "out of memory");
  if (cli_check_output_path(CMD, "--checkpoint-dir", t->state_path)) return CLI_EXIT_ERROR;
  kiln_model_checkpoint_config c;
  kiln_model_checkpoint_config_init(&c);
  c.filepath = t->state_path;
  c.save_state = 1;
  kiln_error err = {0};
  if (kiln_model_checkpoint_create(&c, &t->checkpoint, &err)) return cli_kiln_error(CMD, &err);
  return CLI_EXIT_OK;
}

/* --prune: the schedule over the optimizer steps of this run (batches per epoch times
 * the epochs left to run). */
static int prepare_prune(const train_args *a, train_run *t, const kiln_fit_options *fit) {
  int64_t rows = t->train.x.rows;
  if (fit->validation_split > 0.0)
    rows = (int64_t)floor((double)rows * (1.0 - fit->validation_split));
  int64_t batch = fit->batch_size > 0 ? fit->batch_size : 32;
  int64_t per_epoch = rows > 0 ? (rows + batch - 1) / batch : 0;
  int epochs = fit->epochs - fit->initial_epoch;
  int64_t total = per_epoch * (epochs > 0 ? epochs : 0);
  kiln_prune_schedule_config *c = &t->prune_cfg;
  kiln_prune_schedule_config_init(c);
  c->final_sparsity = a->prune;
  c->block_k = a->prune_block_k;
  c->block_n = a->prune_block_n;
  c->begin_step = a->prune_begin >= 0 ? a->prune_begin : 0;
  if (a->prune_end >= 0) {
    c->end_step = a->prune_end;
  } else {
    c->end_step = total * 2 / 3;
    if (c->end_step <= c->begin_step)
      return cli_usage_error(CMD,
                             "--prune-begin %lld: the default --prune-end (2/3 of the %lld "
                             "optimizer steps of this run) is %lld; give a larger --prune-end",
                             (long long)c->begin_step, (long long)total, (long long)c->end_step);
  }
  if (a->prune_frequency) {
    c->frequency = a->prune_frequency;
  } else {
    int64_t f = (c->end_step - c->begin_step) / 20;
    c->frequency = f < 1 ? 1 : f < c->frequency ? f : c->frequency;
  }
  kiln_error err = {0};
  if (kiln_prune_schedule_create(c, &t->prune, &err)) {
    kiln_error_prefix(&err, "--prune");
    return cli_kiln_error(CMD, &err);
  }
  return CLI_EXIT_OK;
}

/* The share of zero weights of every Dense kernel, printed (out) or added to obj. */
static void kernel_sparsity(const kiln_model *m, FILE *out, cJSON *obj) {
  int n = kiln_model_layer_count(m), first = 1;
  for (int i = 0; i < n; i++) {
    kiln_layer_info info;
    if (kiln_model_layer(m, i, &info, NULL) || info.kind != KILN_LAYER_DENSE || !info.kernel)
      continue;
    int64_t numel = info.in_features * info.out_features, zeros = 0;
    for (int64_t e = 0; e < numel; e++) zeros += info.kernel[e] == 0.0f;
    double s = numel ? (double)zeros / (double)numel : 0.0;
    if (out) fprintf(out, "%s%s %.4f", first ? "" : ", ", info.name, s);
    if (obj) cJSON_AddNumberToObject(obj, info.name, s);
    first = 0;
  }
}

/* Replaces the class labels of y (rows x 1) by their one-hot rows. */
static int one_hot_in_place(kiln_matrix *y, int32_t classes) {
  kiln_matrix encoded = {0};
  kiln_error err = {0};
  if (kiln_one_hot(y, classes, &encoded, &err)) {
    cli_kiln_error(CMD, &err);
    return -1;
  }
  kiln_matrix_free(y);
  *y = encoded;
  return 0;
}

/* A .onnx name exports the model; any other name writes the checkpoint. */
static kiln_status save_model(const train_args *a, const train_run *t, kiln_error *err) {
  if (!cli_ends_with(a->output_path, ".onnx")) return kiln_model_save(t->model, a->output_path, err);
  kiln_export_options opt;
  kiln_export_options_init(&opt);
  if (a->standardize) {
    opt.input_mean = t->standardizer.mean;
    opt.input_std = t->standardizer.std;
    opt.n_input_stats = t->standardizer.cols;
  }
  return kiln_model_export(t->model, &opt, a->output_path, err);
}

/* After training: writes --history and --output (no history is left behind when the
 * model cannot be written), then prints the epochs run and the last train/val figures.
 * 0, or CLI_EXIT_ERROR after reporting. */
static int write_files_print_figures(const train_args *a, const train_run *t, double seconds) {
  kiln_error err = {0};
  if (a->history_path && kiln_history_write_csv(&t->history, a->history_path, &err))
    return cli_kiln_error(CMD, &err);
  if (a->output_path && save_model(a, t, &err)) {
    if (a->history_path) remove(a->history_path); /* this run wrote it */
    return cli_kiln_error(CMD, &err);
  }
  printf("\nEpochs run: %d (%.2f s)\n", t->history.epochs, seconds);
  printf("train: ");
  history_figures(&t->history, 0, stdout, NULL);
  printf("\n");
  if (history_has_val(&t->history)) {
    printf("val:   ");
    history_figures(&t->history, 1, stdout, NULL);
    printf("\n");
  }
  return 0;
}

/* "NAME=FILE.npy" read into names[i] (pointing into text) and data[i]. */
static int read_named(const char *option, const char *const *args, int n, const char **names,
                      kiln_matrix *data, char (*name_buf)[128]) {
  kiln_error err = {0};
  for (int i = 0; i < n; i++) {
    const char *eq = strchr(args[i], '=');
    size_t len = (size_t)(eq - args[i]);
    if (len >= sizeof name_buf[i])
      return cli_usage_error(CMD, "%s %s: the name is too long", option, args[i]);
    memcpy(name_buf[i], args[i], len);
    name_buf[i][len] = '\0';
    names[i] = name_buf[i];
    for (int j = 0; j < i; j++)
      if (strcmp(names[j], names[i]) == 0)
        return cli_usage_error(CMD, "%s: \"%s\" is given twice", option, names[i]);
    if (kiln_npy_read(eq + 1, &data[i], &err)) {
      kiln_error_prefix(&err, "%s %s", option, names[i]);
      return cli_kiln_error(CMD, &err);
    }
  }
  return CLI_EXIT_OK;
}

/* kiln train SPEC --x NAME=FILE ... --y NAME=FILE ...: fit_io with data by name. */
static int run_by_name(const train_args *a, train_run *t, kiln_fit_options *fit) {
  kiln_error err = {0};
  kiln_matrix xs[KILN_MAX_IO], ys[KILN_MAX_IO];
  char x_names[KILN_MAX_IO][128], y_names[KILN_MAX_IO][128];
  kiln_io x, y;
  memset(xs, 0, sizeof xs);
  memset(ys, 0, sizeof ys);
  memset(&x, 0, sizeof x);
  memset(&y, 0, sizeof y);
  x.n = a->n_x;
  y.n = a->n_y;
  int rc = read_named("--x", a->x, a->n_x, x.names, xs, x_names);
  if (!rc) rc = read_named("--y", a->y, a->n_y, y.names, ys, y_names);
  for (int i = 0; i < KILN_MAX_IO; i++) {
    x.data[i] = &xs[i];
    y.data[i] = &ys[i];
  }
  if (!rc && kiln_spec_build(t->spec, 0, a->has_seed ? a->seed : KILN_SEED_FROM_SPEC, &t->model,
                             &err))
    rc = cli_kiln_error(CMD, &err);
  struct timespec t0;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  kiln_status st = KILN_OK;
  if (!rc) {
    kiln_model_summary(t->model, stdout);
    fflush(stdout);
    st = kiln_model_fit_io(t->model, &x, &y, fit, &t->history, &err);
  }
  double seconds = seconds_since(&t0);
  for (int i = 0; i < KILN_MAX_IO; i++) {
    kiln_matrix_free(&xs[i]);
    kiln_matrix_free(&ys[i]);
  }
  if (rc) return rc;
  if (st == KILN_E_DIVERGED) {
    cli_kiln_error(CMD, &err);
    cli_error(CMD, "training diverged after %d complete epoch%s; no file written",
              t->history.epochs, t->history.epochs == 1 ? "" : "s");
    return CLI_EXIT_DIVERGED;
  }
  if (st) return cli_kiln_error(CMD, &err);
  if (t->history.epochs == 0) return cli_error(CMD, "no epoch was run");

  cJSON *root = cJSON_CreateObject();
  cJSON *train_obj = cJSON_CreateObject();
  cJSON *val_obj = history_has_val(&t->history) ? cJSON_CreateObject() : cJSON_CreateNull();
  cJSON *ins = cJSON_CreateArray(), *outs = cJSON_CreateArray();
  if (root && train_obj && val_obj && ins && outs) {
    history_figures(&t->history, 0, NULL, train_obj);
    if (cJSON_IsObject(val_obj)) history_figures(&t->history, 1, NULL, val_obj);
    for (int i = 0; i < x.n; i++) cJSON_AddItemToArray(ins, cJSON_CreateString(x.names[i]));
    for (int i = 0; i < y.n; i++) cJSON_AddItemToArray(outs, cJSON_CreateString(y.names[i]));
    cJSON_AddStringToObject(root, "spec", a->spec_path);
    cJSON_AddItemToObject(root, "inputs", ins);
    cJSON_AddItemToObject(root, "outputs", outs);
    cJSON_AddNumberToObject(root, "epochs", t->history.epochs);
    cJSON_AddNumberToObject(root, "seconds", seconds);
    cJSON_AddItemToObject(root, "train", train_obj);
    cJSON_AddItemToObject(root, "val", val_obj);
    train_obj = val_obj = ins = outs = NULL;
    if (a->history_path) cJSON_AddStringToObject(root, "history", a->history_path);
    else cJSON_AddNullToObject(root, "history");
    if (a->output_path) cJSON_AddStringToObject(root, "output", a->output_path);
    else cJSON_AddNullToObject(root, "output");
    t->json_line = cJSON_PrintUnformatted(root);
  }
  cJSON_Delete(root);
  cJSON_Delete(train_obj);
  cJSON_Delete(val_obj);
  cJSON_Delete(ins);
  cJSON_Delete(outs);
  if (!t->json_line) return cli_error(CMD, "out of memory");
  if (write_files_print_figures(a, t, seconds)) return CLI_EXIT_ERROR;
  if (a->history_path) printf("History written to %s\n", a->history_path);
  if (a->output_path) printf("Model written to %s\n", a->output_path);
  if (a->json) printf("%s\n", t->json_line);
  return CLI_EXIT_OK;
}

static int run(const train_args *a, train_run *t) {
  kiln_error err = {0};
  if (kiln_spec_load(a->spec_path, &t->spec, &err)) return cli_kiln_error(CMD, &err);
  kiln_loss loss;
  int spec_has_verbose;
  if (read_spec_extras(a->spec_path, a->n_x > 0, &loss, &spec_has_verbose))
    return CLI_EXIT_ERROR;
  if (a->has_scale_targets && is_classification(loss))
    return cli_usage_error(CMD, "--scale-targets is for regression; %s's loss is %s",
                           a->spec_path, kiln_loss_name(loss));

  kiln_fit_options fit;
  kiln_spec_fit_options(t->spec, &fit);
  if (!spec_has_verbose) fit.verbose = 1; /* Keras' default, "auto" */
  if (a->epochs) fit.epochs = (int)a->epochs;
  if (a->batch_size) fit.batch_size = a->batch_size;
  if (a->has_validation_split) fit.validation_split = a->validation_split;
  if (a->verbose >= 0) fit.verbose = (int)a->verbose;
  fit.progress = stderr;

  /* Fail on an unwritable output before spending the time to train. */
  if (a->history_path && cli_check_output_path(CMD, "--history", a->history_path))
    return CLI_EXIT_ERROR;
  if (a->output_path && cli_check_output_path(CMD, "--output", a->output_path))
    return CLI_EXIT_ERROR;
  if (a->n_x) return run_by_name(a, t, &fit);
  /* A bad checkpoint fails before the data is loaded. */
  if (a->resume && load_resume_state(a, t, &fit)) return CLI_EXIT_ERROR;
  if (a->checkpoint_dir && prepare_checkpoints(a, t)) return CLI_EXIT_ERROR;

  kiln_load_options lo;
  kiln_load_options_init(&lo);
  lo.data_dir = a->data_dir;
  if (a->num_words) lo.num_words = (int32_t)a->num_words;
  lo.target = a->target;
  lo.missing = a->missing;
  int64_t out_units = 0;
  if (is_classification(loss)) {
    if (spec_output_units(t->spec, &out_units)) return CLI_EXIT_ERROR;
    if (loss == KILN_LOSS_BINARY_CROSSENTROPY && out_units != 1)
      return cli_usage_error(CMD,
                             "%s: binary_crossentropy needs a model with 1 output unit "
                             "(sigmoid), this one has %lld",
                             a->spec_path, (long long)out_units);
    lo.num_classes = loss == KILN_LOSS_BINARY_CROSSENTROPY ? 2 : (int32_t)out_units;
  }
  if (kiln_dataset_load(a->data, &lo, &t->train, &t->test, &err))
    return cli_kiln_error(CMD, &err);
  int has_test = t->test.x.rows > 0;
  if (t->train.x.rows == 0 || t->train.x.cols == 0)
    return cli_error(CMD, "%s: no training rows or no feature columns", a->data);
  if (t->train.y.rows != t->train.x.rows)
    return cli_error(CMD, "%s: %lld feature rows but %lld targets", a->data,
                     (long long)t->train.x.rows, (long long)t->train.y.rows);
  if (has_test && t->test.x.cols != t->train.x.cols)
    return cli_error(CMD, "%s: the test split has %lld features, the training split %lld",
                     a->data, (long long)t->test.x.cols, (long long)t->train.x.cols);

  int32_t classes = t->train.num_classes;
  if (is_classification(loss)) {
    if (classes <= 0)
      return cli_error(CMD,
                       "%s: %s needs class labels but %s has continuous targets (use mse or "
                       "mae, or check --target)",
                       a->spec_path, kiln_loss_name(loss), a->data);
    if (loss == KILN_LOSS_BINARY_CROSSENTROPY && classes != 2)
      return cli_error(CMD, "%s: binary_crossentropy needs 2 classes but %s has %d", a->spec_path,
                       a->data, (int)classes);
    if (loss != KILN_LOSS_BINARY_CROSSENTROPY && classes != out_units)
      return cli_error(CMD, "%s: the model's output has %lld units but %s has %d classes",
                       a->spec_path, (long long)out_units, a->data, (int)classes);
  }
  if (check_split(a->data, "training", &t->train, loss, classes) ||
      (has_test && check_split(a->data, "test", &t->test, loss, classes)))
    return CLI_EXIT_ERROR;

  if (a->standardize) {
    if (kiln_standardizer_fit(&t->standardizer, &t->train.x, &err) ||
        kiln_standardizer_apply(&t->standardizer, &t->train.x, &err) ||
        (has_test && kiln_standardizer_apply(&t->standardizer, &t->test.x, &err))) {
      kiln_error_prefix(&err, "--standardize");
      return cli_kiln_error(CMD, &err);
    }
  }
  if (a->has_scale_targets) {
    kiln_matrix_scale(&t->train.y, (float)a->scale_targets);
    if (has_test) kiln_matrix_scale(&t->test.y, (float)a->scale_targets);
  }
  if (loss == KILN_LOSS_CATEGORICAL_CROSSENTROPY &&
      (one_hot_in_place(&t->train.y, classes) ||
       (has_test && one_hot_in_place(&t->test.y, classes))))
    return CLI_EXIT_ERROR;

  if (t->model) {
    if (kiln_model_input_features(t->model) != t->train.x.cols)
      return cli_error(CMD, "--resume: the model of %s takes %lld features but %s has %lld",
                       a->resume, (long long)kiln_model_input_features(t->model), a->data,
                       (long long)t->train.x.cols);
    fit.initial_epoch = kiln_model_epoch(t->model);
  } else if (kiln_spec_build(t->spec, t->train.x.cols,
                             a->has_seed ? a->seed : KILN_SEED_FROM_SPEC, &t->model, &err)) {
    return cli_kiln_error(CMD, &err);
  }
  if (a->has_prune && prepare_prune(a, t, &fit)) return CLI_EXIT_ERROR;
  kiln_callback callbacks[2];
  int n_callbacks = 0;
  if (a->has_prune) callbacks[n_callbacks++] = t->prune;
  if (a->checkpoint_dir) callbacks[n_callbacks++] = t->checkpoint;
  if (n_callbacks) {
    fit.callbacks = callbacks;
    fit.n_callbacks = n_callbacks;
  }
  kiln_model_summary(t->model, stdout);
  fflush(stdout);

  struct timespec t0;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  kiln_status st = kiln_model_fit(t->model, &t->train.x, &t->train.y, &fit, &t->history, &err);
  double seconds = seconds_since(&t0);
  double prune_applied = a->has_prune ? kiln_prune_schedule_sparsity(&t->prune) : -1;
  kiln_callback_free(&t->prune);
  if (st == KILN_E_DIVERGED) {
    cli_kiln_error(CMD, &err);
    cli_error(CMD, "training diverged after %d complete epoch%s; no file written",
              t->history.epochs, t->history.epochs == 1 ? "" : "s");
    return CLI_EXIT_DIVERGED;
  }
  if (st) return cli_kiln_error(CMD, &err);
  if (t->history.epochs == 0) return cli_error(CMD, "no epoch was run");

  kiln_logs test_logs = {0};
  if (has_test &&
      kiln_model_evaluate(t->model, &t->test.x, &t->test.y, fit.batch_size, &test_logs, &err)) {
    kiln_error_prefix(&err, "test split");
    return cli_kiln_error(CMD, &err);
  }

  /* The JSON line is ready before any file is written, so nothing can fail after. */
  cJSON *root = cJSON_CreateObject();
  cJSON *train_obj = cJSON_CreateObject();
  cJSON *val_obj = history_has_val(&t->history) ? cJSON_CreateObject() : cJSON_CreateNull();
  cJSON *test_obj = has_test ? logs_object(&test_logs) : cJSON_CreateNull();
  if (root && train_obj && val_obj && test_obj) {
    history_figures(&t->history, 0, NULL, train_obj);
    if (cJSON_IsObject(val_obj)) history_figures(&t->history, 1, NULL, val_obj);
    cJSON_AddStringToObject(root, "spec", a->spec_path);
    cJSON_AddStringToObject(root, "data", a->data);
    cJSON_AddNumberToObject(root, "epochs", t->history.epochs);
    cJSON_AddNumberToObject(root, "seconds", seconds);
    cJSON_AddItemToObject(root, "train", train_obj);
    cJSON_AddItemToObject(root, "val", val_obj);
    cJSON_AddItemToObject(root, "test", test_obj);
    train_obj = val_obj = test_obj = NULL;
    if (a->history_path) cJSON_AddStringToObject(root, "history", a->history_path);
    else cJSON_AddNullToObject(root, "history");
    if (a->output_path) cJSON_AddStringToObject(root, "output", a->output_path);
    else cJSON_AddNullToObject(root, "output");
    if (a->has_prune) {
      cJSON *sp = cJSON_AddObjectToObject(root, "sparsity");
      if (sp) kernel_sparsity(t->model, NULL, sp);
      cJSON *pr = cJSON_AddObjectToObject(root, "prune");
      if (pr) {
        cJSON_AddNumberToObject(pr, "target", t->prune_cfg.final_sparsity);
        cJSON_AddNumberToObject(pr, "applied", prune_applied);
        cJSON_AddNumberToObject(pr, "begin_step", (double)t->prune_cfg.begin_step);
        cJSON_AddNumberToObject(pr, "end_step", (double)t->prune_cfg.end_step);
        cJSON_AddNumberToObject(pr, "frequency", (double)t->prune_cfg.frequency);
      }
    }
    t->json_line = cJSON_PrintUnformatted(root);
  }
  cJSON_Delete(root);
  cJSON_Delete(train_obj);
  cJSON_Delete(val_obj);
  cJSON_Delete(test_obj);
  if (!t->json_line) return cli_error(CMD, "out of memory");
  if (write_files_print_figures(a, t, seconds)) return CLI_EXIT_ERROR;
  if (has_test) {
    printf("test:  ");
    for (int i = 0; i < test_logs.n; i++)
      printf("%s%s %.4f", i ? ", " : "", test_logs.keys[i], test_logs.values[i]);
    printf("\n");
  }
  if (a->has_prune) {
    printf("sparsity: ");
    kernel_sparsity(t->model, stdout, NULL);
    printf(" (target %.4g, reached %.4g at step %lld; ramp from step %lld, mask updated every "
           "%lld steps)\n",
           t->prune_cfg.final_sparsity, prune_applied < 0 ? 0.0 : prune_applied,
           (long long)t->prune_cfg.end_step, (long long)t->prune_cfg.begin_step,
           (long long)t->prune_cfg.frequency);
  }
  if (a->history_path) printf("History written to %s\n", a->history_path);
  if (a->output_path) printf("Model written to %s\n", a->output_path);
  if (a->json) printf("%s\n", t->json_line);
  return CLI_EXIT_OK;
}

int cmd_train(int argc, char **argv) {
  train_args a;
  int rc = parse_args(argc, argv, &a);
  if (rc) return rc;
  train_run t;
  memset(&t, 0, sizeof t);
  rc = run(&a, &t);
  run_free(&t);
  if (fflush(stdout) != 0 && rc == CLI_EXIT_OK) {
    cli_error(CMD, "cannot write to stdout");
    rc = CLI_EXIT_ERROR;
  }
  return rc;
}

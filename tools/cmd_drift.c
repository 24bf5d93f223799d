/* kiln drift — compare a reference model (float) with a candidate (int8) on labeled
 * data and say whether the candidate stays within the thresholds: for CI. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "cli.h"
#include "kiln/atomic_file.h"
#include "kiln/data.h"
#include "kiln/drift.h"
#include "kiln/quantize.h"
#include "kiln/infer.h"

static const char *const CMD = "drift";

enum { DRIFT_EXIT_OUTSIDE = 1 };

void cmd_drift_usage(FILE *out) {
  fprintf(out,
          "Usage: kiln drift REFERENCE.onnx CANDIDATE.onnx --data DATA [options]\n"
          "       kiln drift REF.onnx CAND.onnx --data NAME=X.npy ... --labels OUT=Y.npy ...\n"
          "                  [--output OUT [--metric M] [--max-drop X] ...] ...\n"
          "\n"
          "Runs both models on the same labeled rows and reports what the candidate (e.g. the\n"
          "int8 quantization) lost against the reference (the float model): each model's\n"
          "metric and the drop, the share of predictions that changed, the largest and mean\n"
          "output differences, per-class accuracy (recall) of both, and per quantized layer\n"
          "(Gemm/MatMul nodes of the same name) the error of its output, so you see where\n"
          "accuracy is lost. The reference always runs in kiln's runtime.\n"
          "\n"
          "  --data DATASET[:split]   imdb, reuters, california_housing or fashion_mnist;\n"
          "                           split train or test (default test)\n"
          "  --data FILE              x.npy (labels from y.npy beside it) or DATA.csv (header;\n"
          "                           the last column holds the labels or targets)\n"
          "  --data-dir DIR           folder of the built-in data sets (default $KILN_DATA_DIR,\n"
          "                           else ../shared/data)\n"
          "  --data NAME=X.npy        a model with several inputs: one per graph input\n"
          "  --labels Y.npy           the labels or targets (rows x 1) when they are not beside\n"
          "                           x.npy; --labels OUT=Y.npy per output of a model with\n"
          "                           several outputs\n"
          "  --output OUT             compare this output (repeatable); the --metric, --k,\n"
          "                           --max-drop, --min-agreement and --tolerance after it are\n"
          "                           its own. Without --output every output is compared, each\n"
          "                           with the metric its loss (metadata kiln.loss.OUT) implies:\n"
          "                           mae for mse/mae, accuracy for crossentropy; options before\n"
          "                           any --output apply to every output\n"
          "  --metric M               accuracy (default), top_k or mae (regression)\n"
          "  --k K                    top_k: the label must be among the K largest (default 5)\n"
          "  --max-drop X             fail when the drop exceeds X: accuracy as a fraction\n"
          "                           (0.005 = half a point), mae in percent (3 = 3%%); >= 0\n"
          "  --min-agreement Y        fail when fewer than the fraction Y of the rows keep\n"
          "                           their prediction (argmax; mae: |diff| <= tolerance)\n"
          "  --tolerance T            mae: a prediction changed when |diff| > T (default 1%%\n"
          "                           of the reference's mean absolute output)\n"
          "  --scale-targets F        multiply the targets by F first (as kiln train did)\n"
          "  --runtime kiln|ort       runtime of the candidate (default kiln); ort runs it in\n"
          "                           ONNX Runtime via node and run.js\n"
          "  --ort-script RUN.JS      default $KILN_ORT_SCRIPT, else\n"
          "                           $KILN_SOURCE_DIR/tests/integration/ort/run.js, else\n"
          "                           tests/integration/ort/run.js\n"
          "  --rows N                 use the first N rows only\n"
          "  --batch N                rows per run (default 1024)\n"
          "  --no-layers              skip the layer-by-layer analysis\n"
          "  --json                   print one JSON object with every figure as the last\n"
          "                           line of stdout\n"
          "  --junit FILE.xml         write a JUnit report (testcases: the metric drop and the\n"
          "                           agreement), atomically\n"
          "\n"
          "Each model's kiln.input_mean/kiln.input_std metadata (kiln train --standardize)\n"
          "is applied to its inputs.\n"
          "\n"
          "Exit status: 0 within the thresholds, 1 outside them, 2 an error (bad option,\n"
          "unreadable model or data, data of the wrong width, a model that fails to run).\n"
          "\n"
          "Examples:\n"
          "  kiln drift imdb.onnx imdb_int8.onnx --data imdb:test --max-drop 0.005 \\\n"
          "      --min-agreement 0.99 --junit drift.xml\n"
          "  kiln drift ticket.onnx ticket_int8.onnx --data title=title.npy \\\n"
          "      --data text_body=body.npy --data tags=tags.npy --labels priority=p.npy \\\n"
          "      --labels department=d.npy --output department --min-agreement 0.99 \\\n"
          "      --output priority --metric mae --max-drop 5\n");
}

#define DRIFT_MAX_IO 8 /* KILN_MAX_IO */

typedef struct drift_args {
  const char *reference, *candidate, *data, *data_dir, *junit, *ort_script;
  const char *datas[DRIFT_MAX_IO], *labels[DRIFT_MAX_IO];
  int n_datas, n_labels;
  kiln_drift_output_options outs[DRIFT_MAX_IO];
  int n_outs;
  kiln_drift_options opt;
  int json;
  int global_metric; /* --metric given before any --output */
  int has_scale;
  double scale;
} drift_args;

static int parse_args(int argc, char **argv, drift_args *a) {
  memset(a, 0, sizeof *a);
  kiln_drift_options_init(&a->opt);
  int has_k = 0, global_metric = 0;
  for (int i = 1; i < argc; i++) {
    const char *arg = argv[i], *v = NULL;
    kiln_drift_output_options *cur = a->n_outs ? &a->outs[a->n_outs - 1] : NULL;
    int r;
    int64_t n;
    if (arg[0] != '-' || arg[1] == '\0') {
      if (!a->reference) a->reference = arg;
      else if (!a->candidate) a->candidate = arg;
      else return cli_usage_error(CMD, "unexpected argument \"%s\"", arg);
    } else if ((r = cli_option(CMD, argc, argv, &i, "--data", &v)) != 0) {
      if (r < 0) return CLI_EXIT_ERROR;
      if (a->n_datas == DRIFT_MAX_IO) return cli_usage_error(CMD, "more than %d --data", DRIFT_MAX_IO);
      if (!a->data) a->data = v;
      a->datas[a->n_datas++] = v;
    } else if ((r = cli_option(CMD, argc, argv, &i, "--labels", &v)) != 0) {
      if (r < 0) return CLI_EXIT_ERROR;
      if (a->n_labels == DRIFT_MAX_IO)
        return cli_usage_error(CMD, "more than %d --labels", DRIFT_MAX_IO);
      a->labels[a->n_labels++] = v;
    } else if ((r = cli_option(CMD, argc, argv, &i, "--output", &v)) != 0) {
      if (r < 0) return CLI_EXIT_ERROR;
      if (a->n_outs == DRIFT_MAX_IO) return cli_usage_error(CMD, "more than %d --output", DRIFT_MAX_IO);
      for (int k = 0; k < a->n_outs; k++)
        if (!strcmp(a->outs[k].output, v)) return cli_usage_error(CMD, "--output %s is given twice", v);
      kiln_drift_output_options_init(&a->outs[a->n_outs]);
      a->outs[a->n_outs++].output = v;
    } else if ((r = cli_option(CMD, argc, argv, &i, "--data-dir", &v)) != 0) {
      if (r < 0) return CLI_EXIT_ERROR;
      a->data_dir = v;
    } else if ((r = cli_option(CMD, argc, argv, &i, "--metric", &v)) != 0) {
      if (r < 0) return CLI_EXIT_ERROR;
      kiln_drift_metric m;
      if (!strcmp(v, "accuracy")) m = KILN_DRIFT_ACCURACY;
      else if (!strcmp(v, "top_k")) m = KILN_DRIFT_TOP_K;
      else if (!strcmp(v, "mae")) m = KILN_DRIFT_MAE;
      else return cli_usage_error(CMD, "--metric %s: expected accuracy, top_k or mae", v);
      if (cur) cur->metric = (int)m;
      else {
        a->opt.metric = m;
        global_metric = 1;
      }
    } else if ((r = cli_option(CMD, argc, argv, &i, "--k", &v)) != 0) {
      if (r < 0 || cli_parse_int64(CMD, "--k", v, 1, 1 << 20, &n)) return CLI_EXIT_ERROR;
      if (cur) {
        if (cur->metric != KILN_DRIFT_TOP_K)
          return cli_usage_error(CMD, "--k is for --metric top_k (give it after --metric top_k "
                                 "for --output %s)", cur->output);
        cur->k = (int)n;
      } else {
        a->opt.k = (int)n;
        has_k = 1;
      }
    } else if ((r = cli_option(CMD, argc, argv, &i, "--max-drop", &v)) != 0) {
      if (r < 0 || cli_parse_double(CMD, "--max-drop", v, 0, 1e300, 0,
                                    cur ? &cur->max_drop : &a->opt.max_drop))
        return CLI_EXIT_ERROR;
    } else if ((r = cli_option(CMD, argc, argv, &i, "--min-agreement", &v)) != 0) {
      if (r < 0 || cli_parse_double(CMD, "--min-agreement", v, 0, 1, 0,
                                    cur ? &cur->min_agreement : &a->opt.min_agreement))
        return CLI_EXIT_ERROR;
    } else if ((r = cli_option(CMD, argc, argv, &i, "--tolerance", &v)) != 0) {
      if (r < 0 || cli_parse_double(CMD, "--tolerance", v, 0, 1e300, 0,
                                    cur ? &cur->tolerance : &a->opt.tolerance))
        return CLI_EXIT_ERROR;
    } else if ((r = cli_option(CMD, argc, argv, &i, "--scale-targets", &v)) != 0) {
      if (r < 0 || cli_parse_double(CMD, "--scale-targets", v, -1e30, 1e30, 0, &a->scale))
        return CLI_EXIT_ERROR;
      if (a->scale == 0) return cli_usage_error(CMD, "--scale-targets: the factor cannot be 0");
      a->has_scale = 1;
    } else if ((r = cli_option(CMD, argc, argv, &i, "--runtime", &v)) != 0) {
      if (r < 0) return CLI_EXIT_ERROR;
      if (!strcmp(v, "kiln")) a->opt.runtime = KILN_DRIFT_RUNTIME_KILN;
      else if (!strcmp(v, "ort")) a->opt.runtime = KILN_DRIFT_RUNTIME_ORT;
      else return cli_usage_error(CMD, "--runtime %s: expected kiln or ort", v);
    } else if ((r = cli_option(CMD, argc, argv, &i, "--ort-script", &v)) != 0) {
      if (r < 0) return CLI_EXIT_ERROR;
      a->ort_script = v;
    } else if ((r = cli_option(CMD, argc, argv, &i, "--rows", &v)) != 0) {
      if (r < 0 || cli_parse_int64(CMD, "--rows", v, 1, INT64_MAX, &a->opt.max_rows))
        return CLI_EXIT_ERROR;
    } else if ((r = cli_option(CMD, argc, argv, &i, "--batch", &v)) != 0) {
      if (r < 0 || cli_parse_int64(CMD, "--batch", v, 1, 1 << 20, &a->opt.batch))
        return CLI_EXIT_ERROR;
    } else if ((r = cli_option(CMD, argc, argv, &i, "--junit", &v)) != 0) {
      if (r < 0) return CLI_EXIT_ERROR;
      a->junit = v;
    } else if ((r = cli_flag(CMD, arg, "--json")) != 0) {
      if (r < 0) return CLI_EXIT_ERROR;
      a->json = 1;
    } else if ((r = cli_flag(CMD, arg, "--no-layers")) != 0) {
      if (r < 0) return CLI_EXIT_ERROR;
      a->opt.layers = 0;
    } else {
      return cli_usage_error(CMD, "unknown option \"%s\"", arg);
    }
  }
  if (!a->reference || !a->candidate)
    return cli_usage_error(CMD, "expected REFERENCE.onnx and CANDIDATE.onnx");
  if (!a->data) return cli_usage_error(CMD, "missing --data");
  if (has_k && a->opt.metric != KILN_DRIFT_TOP_K)
    return cli_usage_error(CMD, "--k is for --metric top_k");
  /* a --metric before any --output is every listed output's unless it has its own */
  for (int k = 0; k < a->n_outs && global_metric; k++)
    if (a->outs[k].metric < 0) a->outs[k].metric = (int)a->opt.metric;
  a->opt.output_options = a->n_outs ? a->outs : NULL;
  a->opt.n_output_options = a->n_outs;
  a->global_metric = global_metric;
  if (a->junit && (!strcmp(a->junit, a->reference) || !strcmp(a->junit, a->candidate)))
    return cli_usage_error(CMD, "--junit %s would overwrite a model", a->junit);
  return CLI_EXIT_OK;
}

/* --- data ---------------------------------------------------------------------------- */

/* Loads --data into ds. width: the reference's features per row (the vocabulary of a
 * text model); classes: the class count for classification (0 for mae). */
static int load_data(const drift_args *a, int64_t width, int32_t classes, kiln_dataset *ds) {
  kiln_error err = {0};
  if (cli_ends_with(a->data, ".npy")) {
    if (kiln_npy_read(a->data, &ds->x, &err)) return cli_kiln_error(CMD, &err);
    if (a->n_labels > 0) return CLI_EXIT_OK; /* the labels come from --labels */
    char *yp = cli_labels_path(a->data);
    if (!yp || !strcmp(yp, a->data) || access(yp, R_OK) != 0) {
      int rc = cli_error(CMD, "%s: no labels: expected %s beside it", a->data,
                         yp ? yp : "a y.npy (\"y\" for the first \"x\" of the name)");
      free(yp);
      return rc;
    }
    if (kiln_npy_read(yp, &ds->y, &err)) {
      free(yp);
      return cli_kiln_error(CMD, &err);
    }
    free(yp);
    ds->num_classes = classes;
    return CLI_EXIT_OK;
  }
  if (cli_ends_with(a->data, ".csv")) {
    kiln_load_options lo;
    kiln_load_options_init(&lo);
    lo.num_classes = classes;
    if (kiln_csv_load(a->data, &lo, ds, &err)) return cli_kiln_error(CMD, &err);
    return CLI_EXIT_OK;
  }
  char name[64];
  const char *split;
  int text;
  int rc = cli_parse_dataset(CMD, "--data", a->data, name, sizeof name, &split, &text);
  if (rc) return rc;
  kiln_load_options lo;
  kiln_load_options_init(&lo);
  lo.data_dir = a->data_dir;
  lo.multi_hot = 0; /* text runs from the token ids */
  lo.missing = KILN_MISSING_IMPUTE_MEDIAN;
  if (text) {
    if (width > INT32_MAX) return cli_error(CMD, "%s: input width too large", a->reference);
    lo.num_words = (int32_t)width;
  }
  kiln_dataset train = {0}, test = {0};
  if (kiln_dataset_load(name, &lo, &train, &test, &err)) return cli_kiln_error(CMD, &err);
  if (!strcmp(split, "train")) {
    *ds = train;
    kiln_dataset_free(&test);
  } else {
    *ds = test;
    kiln_dataset_free(&train);
  }
  return CLI_EXIT_OK;
}

/* --- several inputs and outputs --------------------------------------------------- */

/* The index of the graph input named by "NAME=..." in spec, or -1. */
static int graph_input(const kiln_ir_graph *g, const char *spec) {
  const char *eq = spec ? strchr(spec, '=') : NULL;
  if (!eq) return -1;
  for (int i = 0; i < g->n_inputs; i++)
    if ((size_t)(eq - spec) == strlen(g->inputs[i].name) &&
        !strncmp(spec, g->inputs[i].name, (size_t)(eq - spec)))
      return i;
  return -1;
}

static int graph_output(const kiln_ir_graph *g, const char *spec) {
  const char *eq = spec ? strchr(spec, '=') : NULL;
  if (!eq) return -1;
  for (int i = 0; i < g->n_outputs; i++)
    if ((size_t)(eq - spec) == strlen(g->outputs[i].name) &&
        !strncmp(spec, g->outputs[i].name, (size_t)(eq - spec)))
      return i;
  return -1;
}

static int read_npy_spec(const char *flag, const char *spec, const char *file, kiln_matrix *m) {
  kiln_error err = {0};
  if (!cli_ends_with(file, ".npy"))
    return cli_usage_error(CMD, "%s %s: expected a .npy file", flag, spec);
  if (kiln_npy_read(file, m, &err)) {
    kiln_error_prefix(&err, "%s %s", flag, spec);
    return cli_kiln_error(CMD, &err);
  }
  return CLI_EXIT_OK;
}

/* --data NAME=X.npy, one per graph input of the reference. */
static int load_named_inputs(const drift_args *a, const kiln_ir_graph *g, kiln_matrix *xs,
                             kiln_io *io) {
  for (int j = 0; j < a->n_datas; j++) {
    const char *spec = a->datas[j], *eq = strchr(spec, '=');
    if (!eq) {
      char names[400];
      size_t used = 0;
      names[0] = '\0';
      for (int i = 0; i < g->n_inputs && used < sizeof names; i++)
        used += (size_t)snprintf(names + used, sizeof names - used, "%s%s", i ? ", " : "",
                                 g->inputs[i].name);
      return cli_usage_error(CMD,
                             "--data %s: %s has %d inputs: give each as --data NAME=X.npy (its "
                             "inputs: %s)",
                             spec, a->reference, g->n_inputs, names);
    }
    int rc = read_npy_spec("--data", spec, eq + 1, &xs[j]);
    if (rc) return rc;
    io->names[j] = strndup(spec, (size_t)(eq - spec));
    if (!io->names[j]) return cli_error(CMD, "out of memory");
    io->data[j] = &xs[j];
    io->n = j + 1;
  }
  return CLI_EXIT_OK;
}

/* --labels Y.npy (one output) or --labels OUT=Y.npy (per output). */
static int load_labels(const drift_args *a, const kiln_ir_graph *g, kiln_matrix *ys,
                       kiln_matrix *y_one, kiln_io *io) {
  for (int j = 0; j < a->n_labels; j++) {
    const char *spec = a->labels[j];
    int o = graph_output(g, spec);
    int rc;
    if (o < 0) {
      if (y_one->rows || io->n)
        return cli_usage_error(CMD,
                               "--labels %s: give the labels of each output as --labels "
                               "OUT=Y.npy (OUT: an output of %s)",
                               spec, a->reference);
      if ((rc = read_npy_spec("--labels", spec, spec, y_one))) return rc;
      continue;
    }
    if (y_one->rows)
      return cli_usage_error(CMD, "--labels %s: mixes named and unnamed labels", spec);
    for (int k = 0; k < io->n; k++)
      if (!strcmp(io->names[k], g->outputs[o].name))
        return cli_usage_error(CMD, "--labels %s: output '%s' is given twice", spec,
                               g->outputs[o].name);
    if ((rc = read_npy_spec("--labels", spec, strchr(spec, '=') + 1, &ys[io->n]))) return rc;
    io->names[io->n] = g->outputs[o].name;
    io->data[io->n] = &ys[io->n];
    io->n++;
  }
  return CLI_EXIT_OK;
}

/* --- output -------------------------------------------------------------------------- */

static const char *runtime_name(kiln_drift_runtime r) {
  return r == KILN_DRIFT_RUNTIME_ORT ? "onnxruntime" : "kiln";
}

/* One output's figures (a model with several outputs). */
static void print_output(const kiln_drift_output *o) {
  int mae = o->metric == KILN_DRIFT_MAE;
  char metric[32];
  if (o->metric == KILN_DRIFT_TOP_K) snprintf(metric, sizeof metric, "top-%d accuracy", o->k);
  else snprintf(metric, sizeof metric, "%s", mae ? "mae" : "accuracy");
  printf("  output %s (%lld column%s):\n", o->name, (long long)o->output_width,
         o->output_width == 1 ? "" : "s");
  if (mae)
    printf("    %s: reference %.6g, candidate %.6g, increase %+.4f%%\n", metric, o->reference_metric,
           o->candidate_metric, o->drop);
  else
    printf("    %s: reference %.4f, candidate %.4f, drop %+.4f (%+.2f points)\n", metric,
           o->reference_metric, o->candidate_metric, o->drop, o->drop * 100);
  if (mae)
    printf("    predictions changed (|diff| > %.4g): %lld rows (agreement %.2f%%)\n", o->tolerance,
           (long long)o->changed_rows, o->agreement * 100);
  else
    printf("    predictions changed: %lld rows (agreement %.2f%%)\n", (long long)o->changed_rows,
           o->agreement * 100);
  printf("    output difference: max %.6g, mean %.6g\n", o->max_abs_diff, o->mean_abs_diff);
  if (o->n_classes > 0) {
    printf("    per class (recall): ");
    for (int i = 0; i < o->n_classes; i++)
      if (o->classes[i].support)
        printf("%s%d %.4f -> %.4f", i ? ", " : "", (int)o->classes[i].label,
               o->classes[i].reference, o->classes[i].candidate);
    printf("\n");
  }
  if (o->has_max_drop)
    printf("    max drop %g%s: %s\n", o->max_drop, mae ? "%" : "", o->drop_ok ? "ok" : "EXCEEDED");
  if (o->has_min_agreement)
    printf("    min agreement %g: %s\n", o->min_agreement, o->agreement_ok ? "ok" : "NOT MET");
}

static void print_report(const drift_args *a, const kiln_drift_report *r) {
  if (r->n_outputs > 1) {
    printf("kiln drift: %s (reference, kiln) vs %s (candidate, %s), %lld rows, %d outputs\n",
           a->reference, a->candidate, runtime_name(r->runtime), (long long)r->rows,
           r->n_outputs);
    for (int i = 0; i < r->n_outputs; i++) print_output(&r->outputs[i]);
  }
  int mae = r->metric == KILN_DRIFT_MAE;
  if (r->n_outputs > 1) goto layers;
  printf("kiln drift: %s (reference, kiln) vs %s (candidate, %s) on %s, %lld rows\n", a->reference,
         a->candidate, runtime_name(r->runtime), a->data, (long long)r->rows);
  char metric[32];
  if (r->metric == KILN_DRIFT_TOP_K)
    snprintf(metric, sizeof metric, "top-%d accuracy", r->k);
  else
    snprintf(metric, sizeof metric, "%s", mae ? "mae" : "accuracy");
  if (mae)
    printf("  %s: reference %.6g, candidate %.6g, increase %+.4f%%\n", metric, r->reference_metric,
           r->candidate_metric, r->drop);
  else
    printf("  %s: reference %.4f, candidate %.4f, drop %+.4f (%+.2f points)\n", metric,
           r->reference_metric, r->candidate_metric, r->drop, r->drop * 100);
  if (mae)
    printf("  predictions changed (|diff| > %.4g): %lld of %lld rows (agreement %.2f%%)\n",
           r->tolerance, (long long)r->changed_rows, (long long)r->rows, r->agreement * 100);
  else
    printf("  predictions changed: %lld of %lld rows (agreement %.2f%%)\n",
           (long long)r->changed_rows, (long long)r->rows, r->agreement * 100);
  printf("  output difference: max %.6g, mean %.6g\n", r->max_abs_diff, r->mean_abs_diff);
  if (r->n_classes > 0) {
    printf("  per class (accuracy within the class, i.e. recall):\n");
    printf("    %6s %8s %10s %10s %8s\n", "class", "rows", "reference", "candidate", "delta");
    for (int i = 0; i < r->n_classes; i++) {
      const kiln_drift_class *c = &r->classes[i];
      if (c->support == 0) continue;
      printf("    %6d %8lld %10.4f %10.4f %+8.4f\n", (int)c->label, (long long)c->support,
             c->reference, c->candidate, c->delta);
    }
  }
layers:
  if (r->n_layers > 0) {
    printf("  per layer (Gemm/MatMul outputs, candidate against reference):\n");
    printf("    %-20s %-14s %12s %12s %9s %10s\n", "layer", "op", "max |err|", "mean |err|",
           "SNR dB", "rel err");
    for (int i = 0; i < r->n_layers; i++) {
      const kiln_drift_layer *l = &r->layers[i];
      printf("    %-20s %-14s %12.6g %12.6g %9.2f %10.6f%s\n", l->name, l->op_type, l->max_abs,
             l->mean_abs, l->snr_db, l->rel_error, i == r->entry_layer ? "  <- error enters" : "");
    }
  }
  if (r->layers_note[0]) printf("  layers: %s\n", r->layers_note);
  if (r->reference_standardized || r->candidate_standardized)
    printf("  inputs standardized by the metadata of: %s%s%s\n",
           r->reference_standardized ? "reference" : "",
           r->reference_standardized && r->candidate_standardized ? ", " : "",
           r->candidate_standardized ? "candidate" : "");
  if (r->has_max_drop && r->n_outputs <= 1)
    printf("  max drop %g%s: %s\n", r->max_drop, mae ? "%" : "", r->drop_ok ? "ok" : "EXCEEDED");
  if (r->has_min_agreement && r->n_outputs <= 1)
    printf("  min agreement %g: %s\n", r->min_agreement, r->agreement_ok ? "ok" : "NOT MET");
  printf("verdict: %s\n", r->pass ? "PASS" : "FAIL");
}

static void add_num(cJSON *o, const char *key, double v) {
  if (isfinite(v)) cJSON_AddNumberToObject(o, key, v);
  else cJSON_AddNullToObject(o, key);
}

static char *report_json(const drift_args *a, const kiln_drift_report *r) {
  cJSON *o = cJSON_CreateObject();
  if (!o) return NULL;
  cJSON_AddStringToObject(o, "reference", a->reference);
  cJSON_AddStringToObject(o, "candidate", a->candidate);
  cJSON_AddStringToObject(o, "data", a->data);
  cJSON_AddStringToObject(o, "runtime", r->runtime == KILN_DRIFT_RUNTIME_ORT ? "ort" : "kiln");
  cJSON_AddStringToObject(o, "metric", kiln_drift_metric_name(r->metric));
  if (r->metric == KILN_DRIFT_TOP_K) cJSON_AddNumberToObject(o, "k", r->k);
  cJSON_AddNumberToObject(o, "rows", (double)r->rows);
  add_num(o, "reference_metric", r->reference_metric);
  add_num(o, "candidate_metric", r->candidate_metric);
  add_num(o, "drop", r->drop);
  cJSON_AddStringToObject(o, "drop_unit", r->metric == KILN_DRIFT_MAE ? "percent" : "fraction");
  cJSON_AddNumberToObject(o, "changed_rows", (double)r->changed_rows);
  add_num(o, "agreement", r->agreement);
  if (r->metric == KILN_DRIFT_MAE) add_num(o, "tolerance", r->tolerance);
  add_num(o, "max_abs_diff", r->max_abs_diff);
  add_num(o, "mean_abs_diff", r->mean_abs_diff);
  cJSON *cl = cJSON_AddArrayToObject(o, "classes");
  for (int i = 0; i < r->n_classes && cl; i++) {
    const kiln_drift_class *c = &r->classes[i];
    cJSON *e = cJSON_CreateObject();
    if (!e) continue;
    cJSON_AddNumberToObject(e, "label", c->label);
    cJSON_AddNumberToObject(e, "support", (double)c->support);
    add_num(e, "reference", c->reference);
    add_num(e, "candidate", c->candidate);
    add_num(e, "delta", c->delta);
    cJSON_AddItemToArray(cl, e);
  }
  cJSON *ly = cJSON_AddArrayToObject(o, "layers");
  for (int i = 0; i < r->n_layers && ly; i++) {
    const kiln_drift_layer *l = &r->layers[i];
    cJSON *e = cJSON_CreateObject();
    if (!e) continue;
    cJSON_AddStringToObject(e, "name", l->name);
    cJSON_AddStringToObject(e, "op_type", l->op_type);
    cJSON_AddStringToObject(e, "reference_value", l->reference_value);
    cJSON_AddStringToObject(e, "candidate_value", l->candidate_value);
    cJSON_AddNumberToObject(e, "elements", (double)l->elements);
    add_num(e, "max_abs", l->max_abs);
    add_num(e, "mean_abs", l->mean_abs);
    add_num(e, "snr_db", l->snr_db); /* null: no error at all */
    add_num(e, "rel_error", l->rel_error);
    add_num(e, "added_error", l->added_error);
    cJSON_AddItemToArray(ly, e);
  }
  if (r->entry_layer >= 0) cJSON_AddStringToObject(o, "entry_layer", r->layers[r->entry_layer].name);
  else cJSON_AddNullToObject(o, "entry_layer");
  if (r->layers_note[0]) cJSON_AddStringToObject(o, "layers_note", r->layers_note);
  cJSON *outs = cJSON_AddArrayToObject(o, "outputs");
  for (int i = 0; i < r->n_outputs && outs; i++) {
    const kiln_drift_output *p = &r->outputs[i];
    cJSON *e = cJSON_CreateObject();
    if (!e) continue;
    cJSON_AddStringToObject(e, "name", p->name);
    cJSON_AddStringToObject(e, "metric", kiln_drift_metric_name(p->metric));
    if (p->metric == KILN_DRIFT_TOP_K) cJSON_AddNumberToObject(e, "k", p->k);
    cJSON_AddNumberToObject(e, "columns", (double)p->output_width);
    add_num(e, "reference_metric", p->reference_metric);
    add_num(e, "candidate_metric", p->candidate_metric);
    add_num(e, "drop", p->drop);
    cJSON_AddStringToObject(e, "drop_unit", p->metric == KILN_DRIFT_MAE ? "percent" : "fraction");
    cJSON_AddNumberToObject(e, "changed_rows", (double)p->changed_rows);
    add_num(e, "agreement", p->agreement);
    if (p->metric == KILN_DRIFT_MAE) add_num(e, "tolerance", p->tolerance);
    add_num(e, "max_abs_diff", p->max_abs_diff);
    add_num(e, "mean_abs_diff", p->mean_abs_diff);
    cJSON *pc = cJSON_AddArrayToObject(e, "classes");
    for (int c = 0; c < p->n_classes && pc; c++) {
      cJSON *ce = cJSON_CreateObject();
      if (!ce) continue;
      cJSON_AddNumberToObject(ce, "label", p->classes[c].label);
      cJSON_AddNumberToObject(ce, "support", (double)p->classes[c].support);
      add_num(ce, "reference", p->classes[c].reference);
      add_num(ce, "candidate", p->classes[c].candidate);
      add_num(ce, "delta", p->classes[c].delta);
      cJSON_AddItemToArray(pc, ce);
    }
    if (p->has_max_drop) cJSON_AddNumberToObject(e, "max_drop", p->max_drop);
    else cJSON_AddNullToObject(e, "max_drop");
    if (p->has_min_agreement) cJSON_AddNumberToObject(e, "min_agreement", p->min_agreement);
    else cJSON_AddNullToObject(e, "min_agreement");
    cJSON_AddBoolToObject(e, "drop_ok", p->drop_ok);
    cJSON_AddBoolToObject(e, "agreement_ok", p->agreement_ok);
    cJSON_AddBoolToObject(e, "pass", p->pass);
    cJSON_AddItemToArray(outs, e);
  }
  if (r->has_max_drop) cJSON_AddNumberToObject(o, "max_drop", r->max_drop);
  else cJSON_AddNullToObject(o, "max_drop");
  if (r->has_min_agreement) cJSON_AddNumberToObject(o, "min_agreement", r->min_agreement);
  else cJSON_AddNullToObject(o, "min_agreement");
  cJSON_AddBoolToObject(o, "drop_ok", r->drop_ok);
  cJSON_AddBoolToObject(o, "agreement_ok", r->agreement_ok);
  cJSON_AddBoolToObject(o, "pass", r->pass);
  char *s = cJSON_PrintUnformatted(o);
  cJSON_Delete(o);
  return s;
}

static void xml_escaped(FILE *f, const char *s) {
  for (; *s; s++) {
    switch (*s) {
      case '&': fputs("&amp;", f); break;
      case '<': fputs("&lt;", f); break;
      case '>': fputs("&gt;", f); break;
      case '"': fputs("&quot;", f); break;
      default:
        if ((unsigned char)*s < 0x20 && *s != '\n' && *s != '\t') fputc('?', f);
        else fputc(*s, f);
    }
  }
}

/* One testcase; message NULL means it passed. */
static void junit_case(FILE *f, const char *name, const char *message, const char *details) {
  fprintf(f, "  <testcase classname=\"kiln.drift\" name=\"");
  xml_escaped(f, name);
  if (!message) {
    fprintf(f, "\">\n    <system-out>");
    xml_escaped(f, details);
    fprintf(f, "</system-out>\n  </testcase>\n");
    return;
  }
  fprintf(f, "\">\n    <failure type=\"drift\" message=\"");
  xml_escaped(f, message);
  fprintf(f, "\">");
  xml_escaped(f, details);
  fprintf(f, "</failure>\n  </testcase>\n");
}

/* Two testcases per compared output: its metric drop and its prediction agreement (a
 * one-output model: "accuracy drop" and "prediction agreement" as before; several:
 * prefixed by the output's name). */
static int write_junit(const drift_args *a, const kiln_drift_report *r) {
  kiln_atomic_file af;
  kiln_error err = {0};
  if (kiln_atomic_open(&af, a->junit, "w", &err)) {
    kiln_error_prefix(&err, "--junit");
    return cli_kiln_error(CMD, &err);
  }
  FILE *f = af.fp;
  char title[1200];
  snprintf(title, sizeof title, "kiln drift %.500s vs %.500s", a->reference, a->candidate);
  int failures = 0;
  for (int i = 0; i < r->n_outputs; i++) failures += !r->outputs[i].drop_ok + !r->outputs[i].agreement_ok;
  fprintf(f, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuite name=\"");
  xml_escaped(f, title);
  fprintf(f, "\" tests=\"%d\" failures=\"%d\" errors=\"0\" skipped=\"0\">\n", 2 * r->n_outputs,
          failures);
  for (int i = 0; i < r->n_outputs; i++) {
    const kiln_drift_output *o = &r->outputs[i];
    int mae = o->metric == KILN_DRIFT_MAE;
    const char *unit = mae ? "%" : "";
    char drop_msg[1024], drop_det[1024], agr_msg[1024], agr_det[1024], max_txt[64], min_txt[64];
    char prefix[160];
    if (r->n_outputs > 1) snprintf(prefix, sizeof prefix, "%.120s ", o->name);
    else prefix[0] = '\0';
    if (o->has_max_drop) snprintf(max_txt, sizeof max_txt, "%.6g%s", o->max_drop, unit);
    else snprintf(max_txt, sizeof max_txt, "none");
    if (o->has_min_agreement) snprintf(min_txt, sizeof min_txt, "%.6g", o->min_agreement);
    else snprintf(min_txt, sizeof min_txt, "none");
    snprintf(drop_det, sizeof drop_det,
             "%s%s on %.200s (%lld rows): reference %.6g, candidate %.6g, drop %.6g%s, maximum %s",
             prefix, kiln_drift_metric_name(o->metric), a->data, (long long)r->rows,
             o->reference_metric, o->candidate_metric, o->drop, unit, max_txt);
    snprintf(drop_msg, sizeof drop_msg, "%s%s drop %.6g%s exceeds the maximum %s", prefix,
             kiln_drift_metric_name(o->metric), o->drop, unit, max_txt);
    snprintf(agr_det, sizeof agr_det,
             "%s%lld of %lld predictions changed: agreement %.6g, minimum %s", prefix,
             (long long)o->changed_rows, (long long)r->rows, o->agreement, min_txt);
    snprintf(agr_msg, sizeof agr_msg, "%sagreement %.6g is below the minimum %s", prefix,
             o->agreement, min_txt);
    char name[400];
    snprintf(name, sizeof name, "%s%s drop", prefix, kiln_drift_metric_name(o->metric));
    junit_case(f, name, o->drop_ok ? NULL : drop_msg, drop_det);
    snprintf(name, sizeof name, "%sprediction agreement", prefix);
    junit_case(f, name, o->agreement_ok ? NULL : agr_msg, agr_det);
  }
  fprintf(f, "</testsuite>\n");
  if (kiln_atomic_commit(&af, &err)) {
    kiln_error_prefix(&err, "--junit");
    return cli_kiln_error(CMD, &err);
  }
  return CLI_EXIT_OK;
}

/* --- the command ------------------------------------------------------------------------ */

static const char *find_ort_script(const drift_args *a, char *buf, size_t cap) {
  if (a->ort_script) return a->ort_script;
  const char *e = getenv("KILN_ORT_SCRIPT");
  if (e && e[0]) return e;
  const char *src = getenv("KILN_SOURCE_DIR");
  if (src && src[0]) {
    snprintf(buf, cap, "%s/tests/integration/ort/run.js", src);
    if (access(buf, R_OK) == 0) return buf;
  }
  return "tests/integration/ort/run.js";
}

int cmd_drift(int argc, char **argv) {
  drift_args a;
  int rc = parse_args(argc, argv, &a);
  if (rc) return rc;
  if (a.junit && cli_check_output_path(CMD, "--junit", a.junit)) return CLI_EXIT_ERROR;
  char ort_buf[1200];
  if (a.opt.runtime == KILN_DRIFT_RUNTIME_ORT)
    a.opt.ort_script = find_ort_script(&a, ort_buf, sizeof ort_buf);

  kiln_error err = {0};
  kiln_ir_graph *gr = NULL, *gc = NULL;
  kiln_dataset ds = {0};
  kiln_drift_report *r = NULL;
  kiln_matrix xs[DRIFT_MAX_IO], ys[DRIFT_MAX_IO], y_one;
  kiln_io in_io, tg_io;
  memset(xs, 0, sizeof xs);
  memset(ys, 0, sizeof ys);
  memset(&y_one, 0, sizeof y_one);
  memset(&in_io, 0, sizeof in_io);
  memset(&tg_io, 0, sizeof tg_io);
  if (kiln_onnx_read_file(a.reference, &gr, &err) ||
      kiln_onnx_read_file(a.candidate, &gc, &err)) {
    kiln_error_prefix(&err, "%s", gr ? a.candidate : a.reference);
    rc = cli_kiln_error(CMD, &err);
    goto done;
  }
  /* Pruned weights stored compactly (kiln quantize --prune) become dense again. */
  if (kiln_sparse_unpack(gr, NULL, &err) || kiln_sparse_unpack(gc, NULL, &err)) {
    rc = cli_kiln_error(CMD, &err);
    goto done;
  }
  /* The width and output columns decide how the data is read (vocabulary, classes). */
  if (gr->n_inputs < 1 || gr->inputs[0].rank < 2 || gr->n_outputs < 1) {
    rc = cli_error(CMD, "%s: expected an input of rows and an output", a.reference);
    goto done;
  }
  int64_t width = 1, out_cols = 1;
  for (int k = 1; k < gr->inputs[0].rank; k++) width *= gr->inputs[0].dims[k].value;
  for (int k = 1; k < gr->outputs[0].rank; k++)
    out_cols *= gr->outputs[0].dims[k].value > 0 ? gr->outputs[0].dims[k].value : 1;
  if (width <= 0) {
    rc = cli_error(CMD, "%s: input '%s' has a symbolic feature dim", a.reference,
                   gr->inputs[0].name);
    goto done;
  }
  int32_t classes = 0;
  if (a.opt.metric != KILN_DRIFT_MAE)
    classes = out_cols == 1 ? 2 : (out_cols > INT32_MAX ? INT32_MAX : (int32_t)out_cols);
  kiln_drift_data d;
  memset(&d, 0, sizeof d);
  if (a.global_metric && a.n_outs == 0 && gr->n_outputs > 1) {
    /* --metric with no --output on a multi-output model: every output's */
    for (int i = 0; i < gr->n_outputs && i < DRIFT_MAX_IO; i++) {
      kiln_drift_output_options_init(&a.outs[i]);
      a.outs[i].output = gr->outputs[i].name;
      a.outs[i].metric = (int)a.opt.metric;
      a.n_outs++;
    }
    a.opt.output_options = a.outs;
    a.opt.n_output_options = a.n_outs;
  }
  if (gr->n_inputs > 1 || a.n_datas > 1 || graph_input(gr, a.datas[0]) >= 0) {
    if ((rc = load_named_inputs(&a, gr, xs, &in_io))) goto done;
    d.inputs = &in_io;
  } else {
    if ((rc = load_data(&a, width, classes, &ds))) goto done;
    kiln_drift_data_from_dataset(&ds, &d);
  }
  if ((rc = load_labels(&a, gr, ys, &y_one, &tg_io))) goto done;
  if (y_one.rows) d.y = &y_one;
  if (tg_io.n) d.targets = &tg_io;
  if (a.has_scale) {
    if (d.y == &ds.y) kiln_matrix_scale(&ds.y, (float)a.scale);
    if (y_one.rows) kiln_matrix_scale(&y_one, (float)a.scale);
    for (int i = 0; i < tg_io.n; i++) kiln_matrix_scale(&ys[i], (float)a.scale);
  }
  kiln_drift_model mr = {a.reference, gr, NULL}, mc = {a.candidate, gc, NULL};
  if (kiln_drift_run(&mr, &mc, &d, &a.opt, &r, &err)) {
    rc = cli_kiln_error(CMD, &err);
    goto done;
  }
  if (a.junit && (rc = write_junit(&a, r))) goto done;
  print_report(&a, r);
  if (a.json) {
    char *js = report_json(&a, r);
    if (!js) {
      rc = cli_error(CMD, "out of memory");
      goto done;
    }
    printf("%s\n", js);
    free(js);
  }
  if (fflush(stdout) != 0) {
    rc = cli_error(CMD, "cannot write to stdout");
    goto done;
  }
  rc = r->pass ? CLI_EXIT_OK : DRIFT_EXIT_OUTSIDE;
done:
  for (int i = 0; i < DRIFT_MAX_IO; i++) {
    kiln_matrix_free(&xs[i]);
    kiln_matrix_free(&ys[i]);
  }
  kiln_matrix_free(&y_one);
  for (int i = 0; i < in_io.n; i++) free((char *)in_io.names[i]);
  kiln_drift_report_free(r);
  kiln_dataset_free(&ds);
  kiln_ir_free(gr);
  kiln_ir_free(gc);
  return rc;
}

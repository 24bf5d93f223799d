/* kiln export — a trained checkpoint (.kiln) to ONNX. */
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "kiln/export.h"
#include "kiln/train.h"

static const char *const CMD = "export";

void cmd_export_usage(FILE *out) {
  fprintf(out,
          "Usage: kiln export MODEL.kiln OUT.onnx [--opset 13|17] [--matmul]\n"
          "                   [--class-names NAME,NAME,...]\n"
          "\n"
          "Writes the model of a checkpoint (from `kiln train --output MODEL.kiln`) as an ONNX\n"
          "file that kiln's runtime, ONNX Runtime and other ONNX tools run. Each Dense layer\n"
          "becomes one Gemm node (its bias fused), followed by its activation (Relu, Sigmoid,\n"
          "Tanh, Softmax); Dropout disappears. The input is named after the model's Input\n"
          "layer with the shape [batch, features], the output after its last layer. The loss\n"
          "and metrics are recorded in the metadata (kiln.loss, kiln.metrics).\n"
          "\n"
          "  --opset 13|17            ONNX operator set (default 13; ir_version 7, or 8 for 17)\n"
          "  --matmul                 write each Dense layer as MatMul + Add instead of Gemm\n"
          "  --class-names A,B,...    record the class names (one per output unit, or two for\n"
          "                           a single sigmoid unit) as metadata kiln.class_names\n"
          "\n"
          "The file is written whole or not at all. Exit status: 0 success, 2 a usage,\n"
          "input or output error.\n"
          "\n"
          "Example:\n"
          "  kiln export imdb.kiln imdb.onnx --class-names negative,positive\n");
}

/* Splits "a,b,c" in place into names (at most cap). Returns the count, -1 if an entry
 * is empty or there are too many. */
static int split_names(char *list, const char **names, int cap) {
  int n = 0;
  for (char *p = list;;) {
    char *comma = strchr(p, ',');
    if (comma) *comma = '\0';
    if (!*p || n == cap) return -1;
    names[n++] = p;
    if (!comma) return n;
    p = comma + 1;
  }
}

#define MAX_CLASS_NAMES 4096

int cmd_export(int argc, char **argv) {
  const char *in = NULL, *out = NULL, *class_list = NULL;
  int64_t opset = 13;
  int matmul = 0;
  int options_done = 0;
  for (int i = 1; i < argc; i++) {
    const char *arg = argv[i], *v = NULL;
    int r;
    if (options_done || arg[0] != '-' || arg[1] == '\0') {
      if (!in)
        in = arg;
      else if (!out)
        out = arg;
      else
        return cli_usage_error(CMD, "unexpected argument \"%s\"", arg);
      continue;
    }
    if (strcmp(arg, "--") == 0) {
      options_done = 1;
    } else if ((r = cli_option(CMD, argc, argv, &i, "--opset", &v)) != 0) {
      if (r < 0) return CLI_EXIT_ERROR;
      if (strcmp(v, "13") && strcmp(v, "17"))
        return cli_usage_error(CMD, "--opset: expected 13 or 17, got \"%s\"", v);
      opset = atoi(v);
    } else if ((r = cli_option(CMD, argc, argv, &i, "--class-names", &v)) != 0) {
      if (r < 0) return CLI_EXIT_ERROR;
      class_list = v;
    } else if ((r = cli_flag(CMD, arg, "--matmul")) != 0) {
      if (r < 0) return CLI_EXIT_ERROR;
      matmul = 1;
    } else {
      return cli_usage_error(CMD, "unknown option \"%s\"", arg);
    }
  }
  if (!in) return cli_usage_error(CMD, "missing MODEL.kiln");
  if (!out) return cli_usage_error(CMD, "missing OUT.onnx");
  if (strcmp(in, out) == 0)
    return cli_usage_error(CMD, "the model and the output are the same file %s", in);
  if (cli_check_output_path(CMD, "OUT.onnx", out)) return CLI_EXIT_ERROR;

  kiln_export_options opt;
  kiln_export_options_init(&opt);
  opt.opset = (int)opset;
  opt.dense_as_matmul = matmul;
  char *names_copy = NULL;
  const char **names = NULL;
  int rc = CLI_EXIT_OK;
  kiln_model *m = NULL;
  kiln_error err = {0};
  if (class_list) {
    names_copy = strdup(class_list);
    names = malloc(MAX_CLASS_NAMES * sizeof *names);
    if (!names_copy || !names) {
      rc = cli_error(CMD, "out of memory");
      goto done;
    }
    int n = split_names(names_copy, names, MAX_CLASS_NAMES);
    if (n < 0) {
      rc = cli_usage_error(CMD,
                           "--class-names: expected comma-separated non-empty names, got "
                           "\"%s\"",
                           class_list);
      goto done;
    }
    opt.class_names = names;
    opt.n_class_names = n;
  }
  if (kiln_model_load(in, &m, &err)) {
    rc = cli_kiln_error(CMD, &err);
    goto done;
  }
  if (opt.n_class_names) {
    int64_t units = kiln_model_output_features(m);
    int64_t want = units == 1 ? 2 : units;
    if (opt.n_class_names != want && opt.n_class_names != units) {
      rc = cli_usage_error(CMD,
                           "--class-names: %d names, but %s has %lld output unit%s (expected "
                           "%lld names)",
                           opt.n_class_names, in, (long long)units, units == 1 ? "" : "s",
                           (long long)want);
      goto done;
    }
  }
  if (kiln_model_export(m, &opt, out, &err)) {
    rc = cli_kiln_error(CMD, &err);
    goto done;
  }
  printf("Exported %s to %s (opset %d, %s, %lld parameters)\n", in, out, opt.opset,
         matmul ? "MatMul+Add" : "Gemm", (long long)kiln_model_param_count(m));
  if (fflush(stdout) != 0) rc = cli_error(CMD, "cannot write to stdout");
done:
  kiln_model_free(m);
  free(names);
  free(names_copy);
  return rc;
}

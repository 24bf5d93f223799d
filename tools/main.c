/* kiln command — dispatch to the subcommands, `kiln --help` and `kiln --version`. */
#include <string.h>

#include "cli.h"

#ifndef KILN_VERSION
#define KILN_VERSION "0.1.0"
#endif

static const cli_command commands[] = {
    {"train", "train a model from a JSON spec on a data set", cmd_train, cmd_train_usage},
    {"summary", "print the layers of a spec or a saved model", cmd_summary, cmd_summary_usage},
    {"export", "write a trained model (.kiln) as ONNX", cmd_export, cmd_export_usage},
    {"predict", "run a .onnx on a .npy, a CSV or a data set", cmd_predict, cmd_predict_usage},
    {"inspect", "describe a .onnx: inputs, outputs, ops, shapes, sizes", cmd_inspect,
     cmd_inspect_usage},
    {"quantize", "int8-quantize (and prune) a .onnx, print the per-layer report", cmd_quantize, cmd_quantize_usage},
    {"drift", "compare a float and an int8 model on labeled data (CI thresholds)", cmd_drift, cmd_drift_usage},
    {"plot", "draw training curves (SVG) from a History CSV", cmd_plot, cmd_plot_usage},
    {"plot-model", "draw a model's layer graph as SVG or DOT (plot_model)", cmd_plot_model,
     cmd_plot_model_usage},
};
#define N_COMMANDS ((int)(sizeof commands / sizeof commands[0]))

static void usage(FILE *out) {
  fprintf(out,
          "Usage: kiln <command> [arguments]\n"
          "       kiln <command> --help\n"
          "       kiln --version\n"
          "\n"
          "kiln trains small dense networks the Keras way (Deep Learning with Python, ch. 4-7),\n"
          "exports them to ONNX and runs them.\n"
          "\n"
          "Commands:\n");
  for (int i = 0; i < N_COMMANDS; i++)
    fprintf(out, "  %-10s %s\n", commands[i].name, commands[i].summary);
  fprintf(out,
          "\n"
          "Exit status: 0 success, 1 training diverged (NaN or infinite loss),\n"
          "2 a usage, input or output error.\n");
}

static const cli_command *find(const char *name) {
  for (int i = 0; i < N_COMMANDS; i++)
    if (strcmp(commands[i].name, name) == 0) return &commands[i];
  return NULL;
}

int main(int argc, char **argv) {
  if (argc < 2) {
    usage(stderr);
    return CLI_EXIT_ERROR;
  }
  const char *arg = argv[1];
  if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
    usage(stdout);
    return CLI_EXIT_OK;
  }
  if (strcmp(arg, "--version") == 0) {
    printf("kiln %s\n", KILN_VERSION);
    return CLI_EXIT_OK;
  }
  if (strcmp(arg, "help") == 0) {
    if (argc < 3) {
      usage(stdout);
      return CLI_EXIT_OK;
    }
    const cli_command *c = find(argv[2]);
    if (!c) return cli_usage_error(NULL, "unknown command \"%s\"", argv[2]);
    c->usage(stdout);
    return CLI_EXIT_OK;
  }
  const cli_command *c = find(arg);
  if (!c) {
    if (arg[0] == '-') return cli_usage_error(NULL, "unknown option \"%s\"", arg);
    return cli_usage_error(NULL, "unknown command \"%s\"", arg);
  }
  for (int i = 2; i < argc; i++) {
    if (strcmp(argv[i], "--") == 0) break;
    if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
      c->usage(stdout);
      return CLI_EXIT_OK;
    }
  }
  return c->run(argc - 1, argv + 1);
}

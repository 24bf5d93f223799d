/* kiln command — what the subcommands share: exit codes, the command table and the
 * argument helpers of cli_args.c. Only tools/ prints; every helper that fails has
 * already written its message to stderr. */
#ifndef KILN_TOOLS_CLI_H
#define KILN_TOOLS_CLI_H

#include <stdint.h>
#include <stdio.h>

#include "kiln/status.h"

enum {
  CLI_EXIT_OK = 0,
  CLI_EXIT_DIVERGED = 1, /* training produced a NaN or infinite loss */
  CLI_EXIT_ERROR = 2     /* a usage, input or output error */
};

/* A subcommand: argv[0] is its name ("train"), argv[1..] its arguments. */
typedef struct cli_command {
  const char *name;
  const char *summary; /* one line for `kiln --help` */
  int (*run)(int argc, char **argv);
  void (*usage)(FILE *out);
} cli_command;

int cmd_train(int argc, char **argv);
void cmd_train_usage(FILE *out);
int cmd_summary(int argc, char **argv);
void cmd_summary_usage(FILE *out);
int cmd_export(int argc, char **argv);
void cmd_export_usage(FILE *out);
int cmd_predict(int argc, char **argv);
void cmd_predict_usage(FILE *out);
int cmd_inspect(int argc, char **argv);
void cmd_inspect_usage(FILE *out);
int cmd_quantize(int argc, char **argv);
void cmd_quantize_usage(FILE *out);
int cmd_drift(int argc, char **argv);
void cmd_drift_usage(FILE *out);
int cmd_plot(int argc, char **argv);
void cmd_plot_usage(FILE *out);
int cmd_plot_model(int argc, char **argv);
void cmd_plot_model_usage(FILE *out);

/* "kiln <cmd>: error: <message>" on stderr; returns CLI_EXIT_ERROR. */
int cli_error(const char *cmd, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
/* cli_error plus a hint to run `kiln <cmd> --help`; returns CLI_EXIT_ERROR. */
int cli_usage_error(const char *cmd, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
/* Reports a failed kiln call (its message names the place); returns CLI_EXIT_ERROR,
 * or CLI_EXIT_DIVERGED for KILN_E_DIVERGED. */
int cli_kiln_error(const char *cmd, const kiln_error *err);

/* Is argv[*i] the option `name`, as "--name VALUE" or "--name=VALUE"?
 * 0: no. 1: yes, *value set (and *i moved past a separate value). -1: yes, but the
 * value is missing (reported). */
int cli_option(const char *cmd, int argc, char **argv, int *i, const char *name,
               const char **value);
/* Is argv[i] the flag `name` with no value? "--name=..." is reported as an error (-1). */
int cli_flag(const char *cmd, const char *arg, const char *name);

/* Whole-string numbers within a range; 0 on success, -1 after reporting. */
int cli_parse_int64(const char *cmd, const char *option, const char *text, int64_t min,
                    int64_t max, int64_t *out);
int cli_parse_uint64(const char *cmd, const char *option, const char *text, uint64_t *out);
/* A finite number in [min, max) (max_open) or [min, max]. */
int cli_parse_double(const char *cmd, const char *option, const char *text, double min,
                     double max, int max_open, double *out);

/* A data set named on the command line as NAME[:split] (split train or test, default
 * test): fills name (cap bytes), *split and *text (imdb or reuters: token ids). Returns
 * CLI_EXIT_OK, or a usage error naming `flag` and what was expected. */
int cli_parse_dataset(const char *cmd, const char *flag, const char *spec, char *name,
                      size_t cap, const char **split, int *text);
/* Checks, before any work is done, that `path` can be created or replaced: it is not
 * a directory and its folder exists and is writable. 0 ok, -1 after reporting. */
int cli_check_output_path(const char *cmd, const char *option, const char *path);

/* Does file name s end with suffix (".npy"), ignoring ASCII case? */
int cli_ends_with(const char *s, const char *suffix);
/* The labels file beside an inputs file: "y" in place of the first "x" of the base
 * name (x_test.npy -> y_test.npy). NULL when the name has no "x" or out of memory;
 * the caller frees. */
char *cli_labels_path(const char *xpath);

#endif

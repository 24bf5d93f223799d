#include "example_common.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static void usage_exit(const char *usage, const char *bad) {
  if (bad) fprintf(stderr, "error: %s\n", bad);
  fprintf(stderr, "%s\n  --data-dir DIR  data directory (default $KILN_DATA_DIR or ../shared/data)\n"
                  "  --seed N        seed of weights, shuffling and dropout (default 1)\n"
                  "  --epochs N      override the book's number of epochs\n"
                  "  --verbose N     0 silent, 1 progress bar, 2 a line per epoch (stderr)\n",
          usage);
  exit(2);
}

void example_parse(int argc, char **argv, const char *usage, example_args *a) {
  memset(a, 0, sizeof *a);
  a->seed = 1;
  for (int i = 1; i < argc; i++) {
    const char *f = argv[i];
    if (strcmp(f, "--help") == 0 || strcmp(f, "-h") == 0) usage_exit(usage, NULL);
    if (i + 1 >= argc) usage_exit(usage, "a flag is missing its value");
    const char *v = argv[++i];
    char *end;
    if (strcmp(f, "--data-dir") == 0) a->data_dir = v;
    else if (strcmp(f, "--variant") == 0) a->variant = v;
    else if (strcmp(f, "--output") == 0) a->output = v;
    else if (strcmp(f, "--mae-history") == 0) a->mae_history = v;
    else if (strcmp(f, "--seed") == 0) {
      a->seed = strtoull(v, &end, 10);
      if (*end || !*v) usage_exit(usage, "--seed takes a whole number");
    } else if (strcmp(f, "--epochs") == 0) {
      a->epochs = (int)strtol(v, &end, 10);
      if (*end || a->epochs <= 0) usage_exit(usage, "--epochs takes a positive whole number");
    } else if (strcmp(f, "--verbose") == 0) {
      a->verbose = (int)strtol(v, &end, 10);
      if (*end || a->verbose < 0 || a->verbose > 2) usage_exit(usage, "--verbose takes 0, 1 or 2");
    } else {
      fprintf(stderr, "error: unknown flag %s\n", f);
      usage_exit(usage, NULL);
    }
  }
}

void example_fail(const char *what, const kiln_error *err) {
  fprintf(stderr, "%s: %s\n", what, err->message);
  exit(err->status == KILN_E_DIVERGED ? 1 : 2);
}

void example_check(kiln_status s, const char *what, const kiln_error *err) {
  if (s != KILN_OK) example_fail(what, err);
}

double example_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

void example_fit_options(const example_args *a, int book_epochs, int64_t batch,
                         kiln_fit_options *opt) {
  kiln_fit_options_init(opt);
  opt->epochs = a->epochs ? a->epochs : book_epochs;
  opt->batch_size = batch;
  opt->verbose = a->verbose;
  opt->progress = stderr;
}

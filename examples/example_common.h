/* kiln examples — shared command-line handling and result printing. */
#ifndef KILN_EXAMPLE_COMMON_H
#define KILN_EXAMPLE_COMMON_H

#include <stdint.h>

#include "kiln/train.h"

typedef struct example_args {
  const char *data_dir; /* --data-dir (NULL: $KILN_DATA_DIR or ../shared/data) */
  uint64_t seed;        /* --seed, default 1 */
  int epochs;           /* --epochs, 0: the book's */
  int verbose;          /* --verbose 0|1|2, default 0 */
  const char *variant;  /* --variant NAME, for examples with several models */
  const char *output;   /* --output FILE, for examples that save their model (NULL: none) */
  const char *mae_history; /* --mae-history FILE (housing: K-fold mean val MAE per epoch) */
} example_args;

/* Parses argv; prints usage and exits 2 on a bad flag. */
void example_parse(int argc, char **argv, const char *usage, example_args *a);
/* Prints "name: message" to stderr and exits: 1 for a diverged fit, else 2. */
void example_fail(const char *what, const kiln_error *err);
void example_check(kiln_status s, const char *what, const kiln_error *err);
/* Seconds on a monotonic clock. */
double example_now(void);
/* The fit options every example uses (epochs, batch, verbose to stderr). */
void example_fit_options(const example_args *a, int book_epochs, int64_t batch,
                         kiln_fit_options *opt);

#endif

/* kiln trainer — the Keras-style progress display, a callback writing to the stream
 * the caller named: a live bar on a terminal, plain lines elsewhere. */
#ifndef KILN_TRAIN_PROGRESS_H
#define KILN_TRAIN_PROGRESS_H

#include <stdio.h>

#include "kiln/train.h"

typedef struct kiln_progress {
  FILE *out;
  int verbose;
  int tty;
  int epochs;
  int epoch;
  double epoch_start;
  double last_draw;
} kiln_progress;

void kiln_progress_init(kiln_progress *p, FILE *out, int verbose, int epochs);
kiln_callback kiln_progress_callback(kiln_progress *p);
/* Ends a bar left open by a failed fit. */
void kiln_progress_abort(kiln_progress *p);
/* Seconds on a monotonic clock. */
double kiln_now(void);

#endif

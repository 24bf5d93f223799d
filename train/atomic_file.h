/* kiln trainer — files written whole or not at all: a temporary beside the target,
 * renamed over it on commit, removed on abort. */
#ifndef KILN_TRAIN_ATOMIC_FILE_H
#define KILN_TRAIN_ATOMIC_FILE_H

#include <stdio.h>

#include "kiln/status.h"

typedef struct kiln_atomic_file {
  FILE *fp;
  char *path;
  char *tmp;
} kiln_atomic_file;

kiln_status kiln_atomic_open(kiln_atomic_file *f, const char *path, const char *mode,
                             kiln_error *err);
/* Flushes, syncs and renames; on any failure the temporary is removed. */
kiln_status kiln_atomic_commit(kiln_atomic_file *f, kiln_error *err);
void kiln_atomic_abort(kiln_atomic_file *f);

#endif

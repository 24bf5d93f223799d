/* kiln — files written whole or not at all: a temporary beside the target (mkstemp),
 * synced and renamed over it on commit, removed on abort. Every kiln library call and
 * command that writes a file goes through this, so a crash never leaves half a model,
 * checkpoint, history or report behind. Part of kiln_infer. */
#ifndef KILN_ATOMIC_FILE_H
#define KILN_ATOMIC_FILE_H

#include <stdio.h>

#include <stddef.h>

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
/* open + one write of size bytes + commit. */
kiln_status kiln_atomic_write(const char *path, const void *data, size_t size, kiln_error *err);

#endif

/* kiln trainer — the History of per-epoch figures and its CSV form. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kiln/train.h"
#include "kiln/atomic_file.h"

double kiln_history_get(const kiln_history *h, const char *key, int epoch) {
  if (epoch < 0 || epoch >= h->epochs) return NAN;
  for (int k = 0; k < h->n_keys; k++)
    if (strcmp(h->keys[k], key) == 0) return h->values[epoch * h->n_keys + k];
  return NAN;
}

kiln_status kiln_history_write_csv(const kiln_history *h, const char *path, kiln_error *err) {
  kiln_atomic_file f;
  kiln_status s = kiln_atomic_open(&f, path, "w", err);
  if (s) return s;
  fprintf(f.fp, "epoch");
  for (int k = 0; k < h->n_keys; k++) fprintf(f.fp, ",%s", h->keys[k]);
  fputc('\n', f.fp);
  for (int e = 0; e < h->epochs; e++) {
    fprintf(f.fp, "%d", e);
    for (int k = 0; k < h->n_keys; k++) fprintf(f.fp, ",%.9g", h->values[e * h->n_keys + k]);
    fputc('\n', f.fp);
  }
  return kiln_atomic_commit(&f, err);
}

void kiln_history_free(kiln_history *h) {
  if (!h) return;
  for (int k = 0; k < h->n_keys; k++) free(h->keys[k]);
  free(h->keys);
  free(h->values);
  memset(h, 0, sizeof *h);
}

/* kiln command — reading a History CSV (see history_csv.h). */
#include "history_csv.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static int fail(char *msg, int cap, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;
static int fail(char *msg, int cap, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, (size_t)cap, fmt, ap);
  va_end(ap);
  return -1;
}

static char *read_all(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  size_t cap = 4096, n = 0, got;
  char *s = malloc(cap);
  while (s && (got = fread(s + n, 1, cap - n - 1, f)) > 0) {
    n += got;
    if (cap - n < 2) {
      char *t = realloc(s, cap * 2);
      if (!t) {
        free(s);
        s = NULL;
        break;
      }
      s = t;
      cap *= 2;
    }
  }
  int bad = ferror(f);
  fclose(f);
  if (!s || bad) {
    free(s);
    errno = bad ? EIO : ENOMEM;
    return NULL;
  }
  s[n] = '\0';
  *len = n;
  return s;
}

/* Trims blanks (and one pair of double quotes) in place. */
static char *trim(char *s) {
  while (isspace((unsigned char)*s)) s++;
  char *e = s + strlen(s);
  while (e > s && isspace((unsigned char)e[-1])) *--e = '\0';
  if (e - s >= 2 && s[0] == '"' && e[-1] == '"') {
    e[-1] = '\0';
    s++;
  }
  return s;
}

/* Splits line at commas into at most max cells; returns the count (which may exceed
 * max: the rest is not stored). */
static int split(char *line, char **cells, int max) {
  int n = 0;
  char *p = line;
  for (;;) {
    char *c = strchr(p, ',');
    if (c) *c = '\0';
    if (n < max) cells[n] = trim(p);
    n++;
    if (!c) break;
    p = c + 1;
  }
  return n;
}

static int is_missing(const char *cell) {
  return !*cell || !strcmp(cell, "nan") || !strcmp(cell, "NaN") || !strcmp(cell, "NAN") ||
         !strcmp(cell, "-nan");
}

void history_csv_free(history_csv *h) {
  for (int i = 0; i < h->n_cols; i++) free(h->names[i]);
  free(h->names);
  free(h->values);
  memset(h, 0, sizeof *h);
}

int history_csv_column(const history_csv *h, const char *name) {
  for (int i = 0; i < h->n_cols; i++)
    if (!strcmp(h->names[i], name)) return i;
  return -1;
}

int history_csv_read(const char *path, history_csv *out, char *msg, int cap) {
  memset(out, 0, sizeof *out);
  size_t len = 0;
  char *text = read_all(path, &len);
  if (!text)
    return fail(msg, cap, "%s: cannot read: %s (expected a History CSV, as kiln train --history writes)",
                path, strerror(errno));
  char **cells = NULL;
  int rc = 0, line_no = 0, n_lines = 1;
  for (size_t i = 0; i < len; i++) n_lines += text[i] == '\n';
  char *p = text, *header = NULL;
  int rows_cap = n_lines;
  while (p && *p) {
    char *nl = strchr(p, '\n');
    if (nl) *nl = '\0';
    char *line = p;
    p = nl ? nl + 1 : NULL;
    line_no++;
    size_t ll = strlen(line);
    if (ll && line[ll - 1] == '\r') line[--ll] = '\0';
    if (line_no == 1 && (unsigned char)line[0] == 0xEF && (unsigned char)line[1] == 0xBB &&
        (unsigned char)line[2] == 0xBF)
      line += 3; /* a byte order mark */
    if (!*trim(line)) continue; /* blank lines carry nothing */
    if (!header) {
      header = line;
      int n = 1;
      for (const char *q = line; *q; q++) n += *q == ',';
      cells = calloc((size_t)n + 1, sizeof *cells);
      out->names = calloc((size_t)n + 1, sizeof *out->names);
      out->values = malloc(((size_t)rows_cap * (size_t)n + 1) * sizeof *out->values);
      if (!cells || !out->names || !out->values) goto nomem;
      split(line, cells, n);
      out->n_cols = n;
      out->epoch_col = -1;
      for (int c = 0; c < n; c++) {
        if (!(out->names[c] = strdup(cells[c]))) goto nomem;
        if (out->epoch_col < 0 && !strcasecmp(cells[c], "epoch")) out->epoch_col = c;
      }
      for (int c = 0; c < n; c++)
        for (int k = 0; k < c; k++)
          if (!strcmp(out->names[c], out->names[k])) {
            rc = fail(msg, cap, "%s:%d: the column \"%s\" appears twice: give each column its own name",
                      path, line_no, out->names[c]);
            goto done;
          }
      if (out->epoch_col < 0) {
        rc = fail(msg, cap,
                  "%s:%d: no epoch column: the header must name one, e.g. "
                  "epoch,loss,val_loss (as kiln train --history writes)",
                  path, line_no);
        goto done;
      }
      if (n < 2) {
        rc = fail(msg, cap, "%s:%d: only an epoch column: add a column of values to plot "
                            "(e.g. epoch,loss)", path, line_no);
        goto done;
      }
      continue;
    }
    int n = split(line, cells, out->n_cols);
    if (n != out->n_cols) {
      rc = fail(msg, cap,
                "%s:%d: %d cells but the header has %d columns: every row needs one value "
                "per column (leave a cell empty for a missing value)",
                path, line_no, n, out->n_cols);
      goto done;
    }
    double *row = out->values + (size_t)out->n_rows * (size_t)out->n_cols;
    for (int c = 0; c < n; c++) {
      char *end;
      if (is_missing(cells[c])) {
        row[c] = NAN;
      } else {
        errno = 0;
        row[c] = strtod(cells[c], &end);
        if (*end || errno == ERANGE) {
          rc = fail(msg, cap,
                    "%s:%d: column \"%s\": \"%s\" is not a number (write a number, or leave "
                    "the cell empty or nan for a missing value)",
                    path, line_no, out->names[c], cells[c]);
          goto done;
        }
      }
      if (c == out->epoch_col && !isfinite(row[c])) {
        rc = fail(msg, cap, "%s:%d: the epoch \"%s\" is not a number: every row needs its epoch",
                  path, line_no, cells[c]);
        goto done;
      }
    }
    if (out->n_rows > 0) {
      double prev = row[out->epoch_col - out->n_cols]; /* the previous row's epoch */
      if (!(row[out->epoch_col] > prev)) {
        rc = fail(msg, cap,
                  "%s:%d: epoch %s after epoch %g: rows must be in increasing epoch order "
                  "(two runs in one file?)",
                  path, line_no, cells[out->epoch_col], prev);
        goto done;
      }
    }
    out->n_rows++;
  }
  if (!header)
    rc = fail(msg, cap, "%s: empty file: expected a header such as epoch,loss,val_loss and "
                        "one row per epoch", path);
  else if (out->n_rows == 0)
    rc = fail(msg, cap, "%s: a header but no rows: expected one row per epoch after line 1", path);
  goto done;
nomem:
  rc = fail(msg, cap, "%s: out of memory", path);
done:
  free(cells);
  free(text);
  if (rc) history_csv_free(out);
  return rc;
}

/* kiln trainer — data from files: numeric CSV with a header, and .npy read/write. */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif

#include "kiln/atomic_file.h"
#include "data_internal.h"

#include <errno.h>
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

kiln_status kiln_data_path(char *dst, const char *a, const char *b, const char *c,
                           kiln_error *err) {
  int n = c ? snprintf(dst, KILN_DATA_PATH_MAX, "%s/%s/%s", a, b, c)
            : snprintf(dst, KILN_DATA_PATH_MAX, "%s/%s", a, b);
  if (n < 0 || n >= KILN_DATA_PATH_MAX)
    return kiln_error_set(err, KILN_E_INVALID, "path '%s/%s%s%s' is longer than %d bytes", a, b,
                          c ? "/" : "", c ? c : "", KILN_DATA_PATH_MAX - 1);
  return KILN_OK;
}

/* ------------------------------------------------------------------------- */
/* CSV                                                                         */
/* ------------------------------------------------------------------------- */

void kiln_csv_table_free(kiln_csv_table *t) {
  if (!t) return;
  if (t->names)
    for (int64_t c = 0; c < t->cols; c++) free(t->names[c]);
  free(t->names);
  free(t->cells);
  free(t->lines);
  memset(t, 0, sizeof *t);
}

/* Trims blanks and one pair of surrounding double quotes, in place. */
static char *csv_trim(char *s, char *end) {
  while (s < end && (*s == ' ' || *s == '\t')) s++;
  while (end > s && (end[-1] == ' ' || end[-1] == '\t')) end--;
  if (end - s >= 2 && s[0] == '"' && end[-1] == '"') {
    s++;
    end--;
  }
  *end = '\0';
  return s;
}

/* Splits line (no newline) at commas in place; returns the field count, fills at most
 * max_fields pointers. */
static int64_t csv_split(char *line, char **fields, int64_t max_fields) {
  int64_t n = 0;
  char *p = line;
  for (;;) {
    char *e = strchr(p, ',');
    char *end = e ? e : p + strlen(p);
    if (n < max_fields) fields[n] = csv_trim(p, end);
    n++;
    if (!e) break;
    p = e + 1;
  }
  return n;
}

static void strip_newline(char *line, ssize_t *len) {
  while (*len > 0 && (line[*len - 1] == '\n' || line[*len - 1] == '\r')) line[--*len] = '\0';
}

static int is_blank(const char *s) {
  for (; *s; s++)
    if (*s != ' ' && *s != '\t') return 0;
  return 1;
}

/* Parses one cell. Empty -> NaN (the missing marker). */
static kiln_status csv_cell(const char *path, int64_t line, const kiln_csv_table *t, int64_t c,
                            const char *text, float *out, kiln_error *err) {
  if (!*text) {
    *out = NAN;
    return KILN_OK;
  }
  char *end = NULL;
  errno = 0;
  double v = strtod(text, &end);
  if (end == text || *end != '\0')
    return kiln_error_set(
        err, KILN_E_FORMAT, "%s:%lld: column '%s' (%lld of %lld): expected a number, found '%.40s'",
        path, (long long)line, t->names[c], (long long)c + 1, (long long)t->cols, text);
  if (isnan(v) || isinf(v))
    return kiln_error_set(err, KILN_E_RANGE,
                          "%s:%lld: column '%s' (%lld of %lld): '%.40s' is not a finite number; "
                          "NaN and infinity are not allowed (leave the cell empty for a "
                          "missing value)",
                          path, (long long)line, t->names[c], (long long)c + 1, (long long)t->cols,
                          text);
  if (errno == ERANGE && fabs(v) > 1.0) /* underflow to 0 or a denormal is harmless */
    v = HUGE_VAL;
  if (fabs(v) > FLT_MAX)
    return kiln_error_set(err, KILN_E_RANGE,
                          "%s:%lld: column '%s' (%lld of %lld): '%.40s' is outside the float32 "
                          "range",
                          path, (long long)line, t->names[c], (long long)c + 1, (long long)t->cols,
                          text);
  *out = (float)v;
  return KILN_OK;
}

kiln_status kiln_csv_table_read(const char *path, int64_t max_rows, kiln_csv_table *t,
                                kiln_error *err) {
  memset(t, 0, sizeof *t);
  FILE *f = fopen(path, "rb");
  if (!f) return kiln_error_set(err, KILN_E_IO, "cannot open CSV '%s': %s", path, strerror(errno));
  char *line = NULL;
  size_t line_cap = 0;
  char **fields = NULL;
  int64_t cap = 0;
  int64_t lineno = 0;
  kiln_status s = KILN_OK;
  ssize_t len;

  /* Header: the first non-blank line. */
  for (;;) {
    errno = 0;
    len = getline(&line, &line_cap, f);
    if (len < 0) {
      s = ferror(f)
              ? kiln_error_set(err, KILN_E_IO, "%s: read error: %s", path, strerror(errno))
              : kiln_error_set(err, KILN_E_FORMAT,
                               "%s: empty file; expected a header line of column names", path);
      goto done;
    }
    lineno++;
    strip_newline(line, &len);
    char *p = line;
    if (lineno == 1 && (unsigned char)p[0] == 0xEF && (unsigned char)p[1] == 0xBB &&
        (unsigned char)p[2] == 0xBF)
      p += 3; /* UTF-8 byte order mark */
    if (is_blank(p)) continue;
    int64_t n = csv_split(p, NULL, 0);
    t->names = calloc((size_t)n, sizeof *t->names);
    fields = calloc((size_t)n, sizeof *fields);
    if (!t->names || !fields) {
      s = kiln_error_set(err, KILN_E_NOMEM, "%s: header of %lld columns: out of memory", path,
                         (long long)n);
      goto done;
    }
    t->cols = n;
    csv_split(p, fields, n);
    for (int64_t c = 0; c < n; c++) {
      if (!*fields[c]) {
        s = kiln_error_set(err, KILN_E_FORMAT, "%s:%lld: header column %lld has no name", path,
                           (long long)lineno, (long long)c + 1);
        goto done;
      }
      t->names[c] = strdup(fields[c]);
      if (!t->names[c]) {
        s = kiln_error_set(err, KILN_E_NOMEM, "%s: header: out of memory", path);
        goto done;
      }
    }
    break;
  }

  while (max_rows < 0 || t->rows < max_rows) {
    errno = 0;
    len = getline(&line, &line_cap, f);
    if (len < 0) {
      if (ferror(f))
        s = kiln_error_set(err, KILN_E_IO, "%s: read error: %s", path, strerror(errno));
      break;
    }
    lineno++;
    strip_newline(line, &len);
    if (is_blank(line)) continue;
    if (t->rows == cap) {
      int64_t ncap = cap ? cap * 2 : 1024;
      float *cells = realloc(t->cells, (size_t)(ncap * t->cols) * sizeof(float));
      if (cells) t->cells = cells;
      int64_t *lines = realloc(t->lines, (size_t)ncap * sizeof(int64_t));
      if (lines) t->lines = lines;
      if (!cells || !lines) {
        s = kiln_error_set(err, KILN_E_NOMEM, "%s:%lld: out of memory", path, (long long)lineno);
        break;
      }
      cap = ncap;
    }
    int64_t n = csv_split(line, fields, t->cols);
    if (n != t->cols) {
      s = kiln_error_set(err, KILN_E_FORMAT,
                         "%s:%lld: found %lld fields, expected %lld as in the header "
                         "(quoted commas are not supported)",
                         path, (long long)lineno, (long long)n, (long long)t->cols);
      break;
    }
    float *row = t->cells + t->rows * t->cols;
    for (int64_t c = 0; c < t->cols && !s; c++)
      s = csv_cell(path, lineno, t, c, fields[c], &row[c], err);
    if (s) break;
    t->lines[t->rows++] = lineno;
  }

done:
  free(line);
  free(fields);
  fclose(f);
  if (s) kiln_csv_table_free(t);
  return s;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

kiln_status kiln_csv_column_median(const kiln_csv_table *t, int64_t col, const int64_t *rows,
                                   int64_t n, double *median, int64_t *found, kiln_error *err) {
  double *v = malloc((size_t)(n ? n : 1) * sizeof(double));
  if (!v)
    return kiln_error_set(err, KILN_E_NOMEM, "median of %lld values: out of memory", (long long)n);
  int64_t k = 0;
  for (int64_t i = 0; i < n; i++) {
    float x = t->cells[(rows ? rows[i] : i) * t->cols + col];
    if (!isnan(x)) v[k++] = x;
  }
  *found = k;
  if (k == 0) {
    *median = NAN;
  } else {
    qsort(v, (size_t)k, sizeof(double), cmp_double);
    *median = (k % 2) ? v[k / 2] : 0.5 * (v[k / 2 - 1] + v[k / 2]);
  }
  free(v);
  return KILN_OK;
}

kiln_status kiln_csv_load(const char *path, const kiln_load_options *opt, kiln_dataset *out,
                          kiln_error *err) {
  kiln_load_options defaults;
  if (!opt) {
    kiln_load_options_init(&defaults);
    opt = &defaults;
  }
  memset(out, 0, sizeof *out);
  if (!path) return kiln_error_set(err, KILN_E_INVALID, "kiln_csv_load: path is NULL");
  if (opt->num_classes < 0)
    return kiln_error_set(err, KILN_E_INVALID, "%s: num_classes %d is negative", path,
                          (int)opt->num_classes);
  kiln_csv_table t;
  kiln_status s = kiln_csv_table_read(path, -1, &t, err);
  if (s) return s;
  if (t.cols < 2) {
    s = kiln_error_set(err, KILN_E_FORMAT,
                       "%s:1: the header has %lld column; expected at least one feature "
                       "column and a target column",
                       path, (long long)t.cols);
    goto done;
  }
  if (t.rows == 0) {
    s = kiln_error_set(err, KILN_E_FORMAT, "%s: no data rows after the header", path);
    goto done;
  }
  int64_t target = t.cols - 1;
  if (opt->target) {
    target = -1;
    for (int64_t c = 0; c < t.cols && target < 0; c++)
      if (strcmp(t.names[c], opt->target) == 0) target = c;
    if (target < 0) {
      char list[256] = "";
      size_t used = 0;
      for (int64_t c = 0; c < t.cols && used + 1 < sizeof list; c++) {
        int w = snprintf(list + used, sizeof list - used, "%s%s", c ? ", " : "", t.names[c]);
        if (w < 0) break;
        used += (size_t)w;
      }
      s = kiln_error_set(err, KILN_E_INVALID,
                         "%s:1: no column named '%s' for the target; the columns are: %s", path,
                         opt->target, list);
      goto done;
    }
  }

  /* Missing cells: the target never; features per the policy. */
  int64_t nf = t.cols - 1;
  double *fill = calloc((size_t)t.cols, sizeof(double));
  if (!fill) {
    s = kiln_error_set(err, KILN_E_NOMEM, "%s: out of memory", path);
    goto done;
  }
  for (int64_t r = 0; r < t.rows && !s; r++)
    for (int64_t c = 0; c < t.cols; c++) {
      if (!isnan(t.cells[r * t.cols + c])) continue;
      if (c == target) {
        s = kiln_error_set(err, KILN_E_FORMAT,
                           "%s:%lld: column '%s' (the target): missing value; a target cannot "
                           "be imputed",
                           path, (long long)t.lines[r], t.names[c]);
        break;
      }
      if (opt->missing != KILN_MISSING_IMPUTE_MEDIAN) {
        s = kiln_error_set(err, KILN_E_FORMAT,
                           "%s:%lld: column '%s' (%lld of %lld): missing value (empty cell); "
                           "expected a number (or load with missing = "
                           "KILN_MISSING_IMPUTE_MEDIAN)",
                           path, (long long)t.lines[r], t.names[c], (long long)c + 1,
                           (long long)t.cols);
        break;
      }
    }
  if (!s && opt->missing == KILN_MISSING_IMPUTE_MEDIAN)
    for (int64_t c = 0; c < t.cols && !s; c++) {
      if (c == target) continue;
      int64_t found;
      s = kiln_csv_column_median(&t, c, NULL, t.rows, &fill[c], &found, err);
      if (!s && found == 0)
        s = kiln_error_set(err, KILN_E_FORMAT,
                           "%s: column '%s' has no values at all; cannot impute its median", path,
                           t.names[c]);
    }
  if (!s && opt->num_classes > 0)
    for (int64_t r = 0; r < t.rows; r++) {
      float v = t.cells[r * t.cols + target];
      if (v != floorf(v) || v < 0 || v >= (float)opt->num_classes) {
        s = kiln_error_set(err, KILN_E_RANGE,
                           "%s:%lld: column '%s' (the target): label %g is not a class index "
                           "in [0, %d)",
                           path, (long long)t.lines[r], t.names[target], (double)v,
                           (int)opt->num_classes);
        break;
      }
    }
  if (!s) s = kiln_matrix_alloc(&out->x, t.rows, nf, err);
  if (!s) s = kiln_matrix_alloc(&out->y, t.rows, 1, err);
  if (!s) {
    for (int64_t r = 0; r < t.rows; r++) {
      const float *row = t.cells + r * t.cols;
      float *xr = out->x.values + r * nf;
      for (int64_t c = 0, j = 0; c < t.cols; c++) {
        if (c == target) {
          out->y.values[r] = row[c];
          continue;
        }
        xr[j++] = isnan(row[c]) ? (float)fill[c] : row[c];
      }
    }
    out->num_classes = opt->num_classes;
  }
  free(fill);
done:
  kiln_csv_table_free(&t);
  if (s) kiln_dataset_free(out);
  return s;
}

/* ------------------------------------------------------------------------- */
/* .npy                                                                        */
/* ------------------------------------------------------------------------- */

enum { NPY_F4, NPY_F8, NPY_I4, NPY_I8, NPY_U1 };
#define NPY_CHUNK 65536

static const char *dtype_name(int dtype) {
  switch (dtype) {
    case NPY_F4: return "float32";
    case NPY_F8: return "float64";
    case NPY_I4: return "int32";
    case NPY_I8: return "int64";
    default: return "uint8";
  }
}

static uint32_t le32(const unsigned char *p) {
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static uint64_t le64(const unsigned char *p) { return le32(p) | (uint64_t)le32(p + 4) << 32; }

/* Points just past "'key':" (either quote style) in the header dict, or NULL. */
static const char *npy_key(const char *h, const char *key) {
  size_t kl = strlen(key);
  for (const char *p = h; (p = strstr(p, key)) != NULL; p += kl) {
    if (p == h || (p[-1] != '\'' && p[-1] != '"') || (p[kl] != p[-1])) continue;
    const char *q = p + kl + 1;
    while (*q == ' ') q++;
    if (*q == ':') {
      q++;
      while (*q == ' ') q++;
      return q;
    }
  }
  return NULL;
}

static kiln_status npy_header(const char *path, const char *h, int *dtype, size_t *item,
                              int64_t *rows, int64_t *cols, int *ndim_out, kiln_error *err) {
  const char *d = npy_key(h, "descr");
  if (!d || (*d != '\'' && *d != '"'))
    return kiln_error_set(err, KILN_E_FORMAT, "%s: .npy header has no 'descr' string: %.200s", path,
                          h);
  char descr[16];
  size_t n = 0;
  char q = *d++;
  while (*d && *d != q && n + 1 < sizeof descr) descr[n++] = *d++;
  descr[n] = '\0';
  if (*d != q)
    return kiln_error_set(err, KILN_E_FORMAT, "%s: .npy header: bad 'descr' value", path);
  if (!strcmp(descr, "<f4"))
    *dtype = NPY_F4, *item = 4;
  else if (!strcmp(descr, "<f8"))
    *dtype = NPY_F8, *item = 8;
  else if (!strcmp(descr, "<i4"))
    *dtype = NPY_I4, *item = 4;
  else if (!strcmp(descr, "<i8"))
    *dtype = NPY_I8, *item = 8;
  else if (!strcmp(descr, "|u1") || !strcmp(descr, "<u1"))
    *dtype = NPY_U1, *item = 1;
  else
    return kiln_error_set(err, KILN_E_UNSUPPORTED,
                          "%s: .npy dtype '%s' is not supported; expected little-endian "
                          "float32 '<f4', float64 '<f8', int32 '<i4', int64 '<i8' or uint8 '|u1'%s",
                          path, descr, descr[0] == '>' ? " (this file is big-endian)" : "");

  const char *fo = npy_key(h, "fortran_order");
  if (!fo)
    return kiln_error_set(err, KILN_E_FORMAT, "%s: .npy header has no 'fortran_order'", path);
  if (!strncmp(fo, "True", 4))
    return kiln_error_set(err, KILN_E_UNSUPPORTED,
                          "%s: .npy array is in Fortran order; expected C order "
                          "(save numpy.ascontiguousarray(a))",
                          path);
  if (strncmp(fo, "False", 5))
    return kiln_error_set(err, KILN_E_FORMAT, "%s: .npy header: bad 'fortran_order' value", path);

  const char *sh = npy_key(h, "shape");
  if (!sh || *sh != '(')
    return kiln_error_set(err, KILN_E_FORMAT, "%s: .npy header has no 'shape' tuple", path);
  sh++;
  int64_t dims[8];
  int ndim = 0;
  for (;;) {
    while (*sh == ' ') sh++;
    if (*sh == ')') break;
    if (*sh < '0' || *sh > '9')
      return kiln_error_set(err, KILN_E_FORMAT, "%s: .npy header: bad 'shape' tuple", path);
    int64_t v = 0;
    while (*sh >= '0' && *sh <= '9') {
      if (v > (INT64_MAX - 9) / 10)
        return kiln_error_set(err, KILN_E_FORMAT, "%s: .npy header: shape too large", path);
      v = v * 10 + (*sh++ - '0');
    }
    if (*sh == 'L') sh++; /* Python 2 longs */
    if (ndim < 8) dims[ndim] = v;
    ndim++;
    while (*sh == ' ') sh++;
    if (*sh == ',')
      sh++;
    else if (*sh != ')')
      return kiln_error_set(err, KILN_E_FORMAT, "%s: .npy header: bad 'shape' tuple", path);
  }
  if (ndim < 1 || ndim > 2)
    return kiln_error_set(err, KILN_E_UNSUPPORTED,
                          "%s: .npy array has %d dimensions; expected 1 or 2 (reshape it to "
                          "rows x features)",
                          path, ndim);
  *rows = dims[0];
  *cols = ndim == 2 ? dims[1] : 1;
  *ndim_out = ndim;
  if (*cols && *rows > INT64_MAX / 8 / *cols)
    return kiln_error_set(err, KILN_E_FORMAT, "%s: .npy shape too large", path);
  return KILN_OK;
}

kiln_status kiln_npy_read(const char *path, kiln_matrix *out, kiln_error *err) {
  memset(out, 0, sizeof *out);
  FILE *f = fopen(path, "rb");
  if (!f) return kiln_error_set(err, KILN_E_IO, "cannot open '%s': %s", path, strerror(errno));
  kiln_status s = KILN_OK;
  char *header = NULL;
  unsigned char *buf = NULL;
  unsigned char pre[12];
  size_t got = fread(pre, 1, 10, f);
  if (got < 10 || memcmp(pre, "\x93NUMPY", 6) != 0) {
    s = kiln_error_set(err, KILN_E_FORMAT,
                       "%s: not a .npy file (expected the magic bytes \\x93NUMPY at offset 0)",
                       path);
    goto done;
  }
  int major = pre[6];
  size_t hlen, hstart;
  if (major == 1) {
    hlen = (size_t)pre[8] | (size_t)pre[9] << 8;
    hstart = 10;
  } else if (major == 2 || major == 3) {
    if (fread(pre + 10, 1, 2, f) != 2) {
      s = kiln_error_set(err, KILN_E_FORMAT, "%s: truncated .npy header", path);
      goto done;
    }
    hlen = le32(pre + 8);
    hstart = 12;
  } else {
    s = kiln_error_set(err, KILN_E_UNSUPPORTED, "%s: .npy format version %d.%d; expected 1, 2 or 3",
                       path, major, pre[7]);
    goto done;
  }
  if (hlen > (1u << 24)) {
    s = kiln_error_set(err, KILN_E_FORMAT, "%s: .npy header length %zu is implausible", path, hlen);
    goto done;
  }
  header = malloc(hlen + 1);
  if (!header) {
    s = kiln_error_set(err, KILN_E_NOMEM, "%s: out of memory", path);
    goto done;
  }
  if (fread(header, 1, hlen, f) != hlen) {
    s = kiln_error_set(err, KILN_E_FORMAT,
                       "%s: truncated .npy header (%zu bytes expected at offset %zu)", path, hlen,
                       hstart);
    goto done;
  }
  header[hlen] = '\0';
  if (hlen == 0 || header[hlen - 1] != '\n' || header[0] != '{') {
    s = kiln_error_set(err, KILN_E_FORMAT,
                       "%s: malformed .npy header (expected a dict ending with a newline)", path);
    goto done;
  }
  int dtype = 0, ndim = 0;
  size_t item = 1;
  int64_t rows = 0, cols = 0;
  s = npy_header(path, header, &dtype, &item, &rows, &cols, &ndim, err);
  if (s) goto done;
  uint64_t total = (uint64_t)rows * (uint64_t)cols;
  char shape[64];
  if (ndim == 2)
    snprintf(shape, sizeof shape, "(%lld, %lld)", (long long)rows, (long long)cols);
  else
    snprintf(shape, sizeof shape, "(%lld,)", (long long)rows);
  /* A regular file's size is known: report truncation before allocating for it. */
  struct stat st;
  if (fstat(fileno(f), &st) == 0 && S_ISREG(st.st_mode) &&
      (uint64_t)st.st_size < hstart + hlen + total * item) {
    s = kiln_error_set(err, KILN_E_FORMAT,
                       "%s: truncated .npy data: the shape %s of %s needs %llu bytes after the "
                       "%zu-byte header, the file has %llu",
                       path, shape, dtype_name(dtype), (unsigned long long)(total * item),
                       hstart + hlen, (unsigned long long)(st.st_size - (off_t)(hstart + hlen)));
    goto done;
  }
  s = kiln_matrix_alloc(out, rows, cols, err);
  if (s) goto done;
  buf = malloc(NPY_CHUNK);
  if (!buf) {
    s = kiln_error_set(err, KILN_E_NOMEM, "%s: out of memory", path);
    goto done;
  }
  uint64_t done_n = 0;
  size_t per = NPY_CHUNK / item;
  while (done_n < total) {
    size_t want = (size_t)((total - done_n) < per ? (total - done_n) : per);
    size_t r = fread(buf, item, want, f);
    float *o = out->values + done_n;
    for (size_t i = 0; i < r; i++) {
      const unsigned char *p = buf + i * item;
      switch (dtype) {
        case NPY_F4: {
          uint32_t u = le32(p);
          float v;
          memcpy(&v, &u, 4);
          o[i] = v;
          break;
        }
        case NPY_F8: {
          uint64_t u = le64(p);
          double v;
          memcpy(&v, &u, 8);
          o[i] = (float)v;
          break;
        }
        case NPY_I4:
          o[i] = (float)(int32_t)le32(p);
          break;
        case NPY_I8:
          o[i] = (float)(int64_t)le64(p);
          break;
        default:
          o[i] = (float)p[0];
          break;
      }
    }
    done_n += r;
    if (r < want) {
      s = ferror(f) ? kiln_error_set(err, KILN_E_IO, "%s: read error: %s", path, strerror(errno))
                    : kiln_error_set(err, KILN_E_FORMAT,
                                     "%s: truncated .npy data: the shape %s needs %llu bytes "
                                     "after the %zu-byte header, the file has %llu",
                                     path, shape, (unsigned long long)(total * item), hstart + hlen,
                                     (unsigned long long)(done_n * item));
      goto done;
    }
  }
  if (fgetc(f) != EOF)
    s = kiln_error_set(err, KILN_E_FORMAT,
                       "%s: trailing bytes after the %llu bytes of .npy data that the shape needs",
                       path, (unsigned long long)(total * item));
done:
  free(buf);
  free(header);
  fclose(f);
  if (s) kiln_matrix_free(out);
  return s;
}

kiln_status kiln_npy_write(const char *path, const kiln_matrix *m, kiln_error *err) {
  if (!path || !m) return kiln_error_set(err, KILN_E_INVALID, "kiln_npy_write: NULL argument");
  if (kiln_matrix_is_sparse(m))
    return kiln_error_set(err, KILN_E_UNSUPPORTED,
                          "%s: cannot write a sparse (CSR) matrix as .npy; expected a dense one",
                          path);
  if (m->rows < 0 || m->cols < 0 || (m->rows * m->cols > 0 && !m->values))
    return kiln_error_set(err, KILN_E_INVALID, "%s: matrix has no values", path);

  /* Header padded with spaces so that the data starts at a multiple of 64 bytes. */
  char header[128];
  int hl = snprintf(header + 10, sizeof header - 10,
                    "{'descr': '<f4', 'fortran_order': False, 'shape': (%lld, %lld), }",
                    (long long)m->rows, (long long)m->cols);
  size_t total = 10 + (size_t)hl + 1;
  size_t padded = (total + 63) / 64 * 64;
  memset(header + 10 + hl, ' ', padded - total);
  header[padded - 1] = '\n';
  memcpy(header, "\x93NUMPY\x01\x00", 8);
  header[8] = (char)((padded - 10) & 0xff);
  header[9] = (char)((padded - 10) >> 8);

  unsigned char *buf = malloc(NPY_CHUNK);
  if (!buf) return kiln_error_set(err, KILN_E_NOMEM, "%s: out of memory", path);
  kiln_atomic_file f;
  kiln_status s = kiln_atomic_open(&f, path, "wb", err);
  if (s) {
    free(buf);
    return s;
  }
  int ok = fwrite(header, 1, padded, f.fp) == padded;
  int64_t count = m->rows * m->cols;
  for (int64_t at = 0; ok && at < count;) {
    int64_t k = count - at < NPY_CHUNK / 4 ? count - at : NPY_CHUNK / 4;
    for (int64_t i = 0; i < k; i++) {
      uint32_t u;
      memcpy(&u, &m->values[at + i], 4);
      unsigned char *p = buf + 4 * i;
      p[0] = (unsigned char)u;
      p[1] = (unsigned char)(u >> 8);
      p[2] = (unsigned char)(u >> 16);
      p[3] = (unsigned char)(u >> 24);
    }
    ok = fwrite(buf, 4, (size_t)k, f.fp) == (size_t)k;
    at += k;
  }
  free(buf);
  if (!ok) {
    s = kiln_error_set(err, KILN_E_IO, "%s: write failed (%s); nothing was written", path,
                       strerror(errno));
    kiln_atomic_abort(&f);
    return s;
  }
  return kiln_atomic_commit(&f, err);
}

/* kiln trainer — data set dispatch and preprocessing: multi-hot, one-hot, standardizing,
 * K-fold splits and row selection. */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif

#include "data_internal.h"
#include "rng.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define KILN_DEFAULT_DATA_DIR "../shared/data"

void kiln_load_options_init(kiln_load_options *opt) {
  memset(opt, 0, sizeof *opt);
  opt->num_words = 10000;
  opt->multi_hot = 1;
  opt->version = "small";
  opt->seed = 113;
  opt->test_fraction = 0.2;
  opt->missing = KILN_MISSING_ERROR;
}

const char *kiln_data_dir(const kiln_load_options *opt) {
  if (opt && opt->data_dir && *opt->data_dir) return opt->data_dir;
  const char *env = getenv("KILN_DATA_DIR");
  return env && *env ? env : KILN_DEFAULT_DATA_DIR;
}

void kiln_dataset_free(kiln_dataset *d) {
  if (!d) return;
  kiln_matrix_free(&d->x);
  kiln_matrix_free(&d->y);
  free(d->seq.offsets);
  free(d->seq.tokens);
  memset(d, 0, sizeof *d);
}

static int ends_with(const char *s, const char *suffix) {
  size_t n = strlen(s), k = strlen(suffix);
  if (n < k) return 0;
  for (size_t i = 0; i < k; i++) {
    char a = s[n - k + i], b = suffix[i];
    if (a >= 'A' && a <= 'Z') a = (char)(a - 'A' + 'a');
    if (a != b) return 0;
  }
  return 1;
}

/* Labels of a data set file must be class indices when num_classes > 0. */
static kiln_status check_labels(const char *path, const kiln_matrix *y, int32_t num_classes,
                                kiln_error *err) {
  if (y->cols != 1)
    return kiln_error_set(err, KILN_E_SHAPE,
                          "%s: labels have %lld columns; expected one class index per row", path,
                          (long long)y->cols);
  for (int64_t r = 0; r < y->rows; r++) {
    float v = y->values[r];
    if (!(v >= 0 && v < (float)num_classes) || v != floorf(v))
      return kiln_error_set(err, KILN_E_RANGE,
                            "%s: row %lld: label %g is not a class index in [0, %d)", path,
                            (long long)r, (double)v, (int)num_classes);
  }
  return KILN_OK;
}

static kiln_status npy_dataset_load(const char *path, const kiln_load_options *opt,
                                    kiln_dataset *out, kiln_error *err) {
  char ypath[KILN_DATA_PATH_MAX];
  size_t len = strlen(path);
  if (len >= sizeof ypath) return kiln_error_set(err, KILN_E_INVALID, "%s: path too long", path);
  memcpy(ypath, path, len + 1);
  char *base = strrchr(ypath, '/');
  base = base ? base + 1 : ypath;
  char *x = strchr(base, 'x');
  if (!x)
    return kiln_error_set(err, KILN_E_INVALID,
                          "%s: cannot name the labels file: the file name has no 'x' to "
                          "replace with 'y' (expected e.g. x_train.npy with y_train.npy)",
                          path);
  *x = 'y';
  kiln_status s = kiln_npy_read(path, &out->x, err);
  if (!s) s = kiln_npy_read(ypath, &out->y, err);
  if (s) goto fail;
  if (out->x.rows != out->y.rows) {
    s = kiln_error_set(err, KILN_E_SHAPE, "%s has %lld rows but its labels %s have %lld", path,
                       (long long)out->x.rows, ypath, (long long)out->y.rows);
    goto fail;
  }
  int64_t r, c;
  if (kiln_matrix_find_nonfinite(&out->x, &r, &c)) {
    s = kiln_error_set(err, KILN_E_RANGE,
                       "%s: row %lld, column %lld: %g is not a finite "
                       "feature value",
                       path, (long long)r, (long long)c, (double)kiln_matrix_get(&out->x, r, c));
    goto fail;
  }
  if (kiln_matrix_find_nonfinite(&out->y, &r, &c)) {
    s = kiln_error_set(err, KILN_E_RANGE, "%s: row %lld: target %g is not finite", ypath,
                       (long long)r, (double)kiln_matrix_get(&out->y, r, c));
    goto fail;
  }
  if (opt->num_classes > 0) {
    s = check_labels(ypath, &out->y, opt->num_classes, err);
    if (s) goto fail;
  }
  out->num_classes = opt->num_classes > 0 ? opt->num_classes : 0;
  return KILN_OK;
fail:
  kiln_dataset_free(out);
  return s;
}

kiln_status kiln_dataset_load(const char *name, const kiln_load_options *opt, kiln_dataset *train,
                              kiln_dataset *test, kiln_error *err) {
  kiln_load_options defaults;
  if (!opt) {
    kiln_load_options_init(&defaults);
    opt = &defaults;
  }
  if (!train) return kiln_error_set(err, KILN_E_INVALID, "kiln_dataset_load: train is NULL");
  memset(train, 0, sizeof *train);
  if (test) memset(test, 0, sizeof *test);
  if (!name) return kiln_error_set(err, KILN_E_INVALID, "kiln_dataset_load: name is NULL");
  if (!strcmp(name, "imdb")) return kiln_text_dataset_load("imdb", 2, opt, train, test, err);
  if (!strcmp(name, "reuters")) return kiln_text_dataset_load("reuters", 46, opt, train, test, err);
  if (!strcmp(name, "california_housing")) return kiln_housing_load(opt, train, test, err);
  if (!strcmp(name, "fashion_mnist")) return kiln_fashion_mnist_load(opt, train, test, err);
  if (ends_with(name, ".csv")) return kiln_csv_load(name, opt, train, err);
  if (ends_with(name, ".npy")) return npy_dataset_load(name, opt, train, err);
  return kiln_error_set(err, KILN_E_INVALID,
                        "unknown data set '%s'; expected imdb, reuters, california_housing, "
                        "fashion_mnist, or a file ending in .csv or .npy",
                        name);
}

/* ------------------------------------------------------------------------- */

static int lowest_bit(uint64_t v) {
#if defined(__GNUC__)
  return __builtin_ctzll(v);
#else
  int n = 0;
  while (!(v & 1)) v >>= 1, n++;
  return n;
#endif
}

kiln_status kiln_multi_hot(const kiln_sequences *seq, int32_t num_words, kiln_matrix *out,
                           kiln_error *err) {
  memset(out, 0, sizeof *out);
  if (num_words <= 0)
    return kiln_error_set(err, KILN_E_INVALID, "multi-hot: num_words %d; expected > 0",
                          (int)num_words);
  int64_t rows = seq->count;
  int64_t total = rows > 0 ? seq->offsets[rows] : 0;
  /* Each row's set bits are read back in increasing order: sorted, unique columns
   * without sorting. Only the words between the row's lowest and highest id are
   * touched. */
  int64_t words = ((int64_t)num_words + 63) / 64;
  uint64_t *bits = calloc((size_t)words, sizeof(uint64_t));
  out->row_ptr = malloc((size_t)(rows + 1) * sizeof(int64_t));
  out->col_idx = malloc((size_t)(total ? total : 1) * sizeof(int32_t));
  if (!bits || !out->row_ptr || !out->col_idx) {
    free(bits);
    kiln_matrix_free(out);
    return kiln_error_set(err, KILN_E_NOMEM, "multi-hot of %lld rows: out of memory",
                          (long long)rows);
  }
  out->rows = rows;
  out->cols = num_words;
  out->row_ptr[0] = 0;
  int64_t at = 0;
  for (int64_t r = 0; r < rows; r++) {
    int64_t lo = words, hi = -1;
    for (int64_t k = seq->offsets[r]; k < seq->offsets[r + 1]; k++) {
      int32_t id = seq->tokens[k];
      if (id < 0) {
        free(bits);
        kiln_matrix_free(out);
        return kiln_error_set(err, KILN_E_RANGE, "multi-hot: sequence %lld: negative token id %d",
                              (long long)r, (int)id);
      }
      if (id >= num_words) continue;
      int64_t w = id >> 6;
      bits[w] |= (uint64_t)1 << (id & 63);
      if (w < lo) lo = w;
      if (w > hi) hi = w;
    }
    for (int64_t w = lo; w <= hi; w++) {
      uint64_t v = bits[w];
      bits[w] = 0;
      while (v) {
        out->col_idx[at++] = (int32_t)(w * 64 + lowest_bit(v));
        v &= v - 1;
      }
    }
    out->row_ptr[r + 1] = at;
  }
  free(bits);
  int32_t *shrunk = realloc(out->col_idx, (size_t)(at ? at : 1) * sizeof(int32_t));
  if (shrunk) out->col_idx = shrunk;
  return KILN_OK;
}

kiln_status kiln_one_hot(const kiln_matrix *labels, int32_t num_classes, kiln_matrix *out,
                         kiln_error *err) {
  memset(out, 0, sizeof *out);
  if (num_classes <= 0)
    return kiln_error_set(err, KILN_E_INVALID, "one-hot: num_classes %d; expected > 0",
                          (int)num_classes);
  if (kiln_matrix_is_sparse(labels) || labels->cols != 1)
    return kiln_error_set(err, KILN_E_SHAPE,
                          "one-hot: labels are %lld x %lld%s; expected a dense rows x 1 matrix",
                          (long long)labels->rows, (long long)labels->cols,
                          kiln_matrix_is_sparse(labels) ? " (sparse)" : "");
  for (int64_t r = 0; r < labels->rows; r++) {
    float v = labels->values[r];
    if (!(v >= 0 && v < (float)num_classes) || v != floorf(v))
      return kiln_error_set(err, KILN_E_RANGE,
                            "one-hot: row %lld: label %g is not a class index in [0, %d)",
                            (long long)r, (double)v, (int)num_classes);
  }
  kiln_status s = kiln_matrix_alloc(out, labels->rows, num_classes, err);
  if (s) return s;
  for (int64_t r = 0; r < labels->rows; r++)
    out->values[r * num_classes + (int64_t)labels->values[r]] = 1.0f;
  return KILN_OK;
}

kiln_status kiln_standardizer_fit(kiln_standardizer *s, const kiln_matrix *x, kiln_error *err) {
  memset(s, 0, sizeof *s);
  if (kiln_matrix_is_sparse(x))
    return kiln_error_set(err, KILN_E_UNSUPPORTED,
                          "standardizer: the matrix is sparse (CSR); expected a dense one");
  if (x->rows < 1)
    return kiln_error_set(err, KILN_E_INVALID, "standardizer: fitting needs at least one row");
  int64_t r, c;
  if (kiln_matrix_find_nonfinite(x, &r, &c))
    return kiln_error_set(err, KILN_E_RANGE, "standardizer: row %lld, column %lld is %g",
                          (long long)r, (long long)c, (double)x->values[r * x->cols + c]);
  int64_t n = x->rows, m = x->cols;
  double *acc = calloc((size_t)(m ? 2 * m : 1), sizeof(double));
  s->mean = malloc((size_t)(m ? m : 1) * sizeof(float));
  s->std = malloc((size_t)(m ? m : 1) * sizeof(float));
  if (!acc || !s->mean || !s->std) {
    free(acc);
    kiln_standardizer_free(s);
    return kiln_error_set(err, KILN_E_NOMEM, "standardizer: out of memory");
  }
  double *mean = acc, *var = acc + m;
  /* Two passes in double: the mean, then squared deviations from it (stable). */
  for (int64_t i = 0; i < n; i++)
    for (int64_t j = 0; j < m; j++) mean[j] += x->values[i * m + j];
  for (int64_t j = 0; j < m; j++) mean[j] /= (double)n;
  for (int64_t i = 0; i < n; i++)
    for (int64_t j = 0; j < m; j++) {
      double d = x->values[i * m + j] - mean[j];
      var[j] += d * d;
    }
  for (int64_t j = 0; j < m; j++) {
    double sd = sqrt(var[j] / (double)n);
    s->mean[j] = (float)mean[j];
    s->std[j] = sd > 0 && (float)sd > 0 ? (float)sd : 1.0f;
  }
  s->cols = m;
  free(acc);
  return KILN_OK;
}

kiln_status kiln_standardizer_apply(const kiln_standardizer *s, kiln_matrix *x, kiln_error *err) {
  if (kiln_matrix_is_sparse(x))
    return kiln_error_set(err, KILN_E_UNSUPPORTED,
                          "standardizer: the matrix is sparse (CSR); expected a dense one");
  if (x->cols != s->cols)
    return kiln_error_set(err, KILN_E_SHAPE,
                          "standardizer: the matrix has %lld columns; it was fitted on %lld",
                          (long long)x->cols, (long long)s->cols);
  int64_t m = x->cols;
  for (int64_t i = 0; i < x->rows; i++) {
    float *row = x->values + i * m;
    for (int64_t j = 0; j < m; j++) row[j] = (row[j] - s->mean[j]) / s->std[j];
  }
  return KILN_OK;
}

void kiln_standardizer_free(kiln_standardizer *s) {
  if (!s) return;
  free(s->mean);
  free(s->std);
  memset(s, 0, sizeof *s);
}

void kiln_matrix_scale(kiln_matrix *m, float factor) {
  if (!m->values) return; /* a multi-hot CSR (implicit ones) has nothing to scale */
  int64_t n = kiln_matrix_nnz(m);
  for (int64_t i = 0; i < n; i++) m->values[i] *= factor;
}

kiln_status kiln_kfold_split(int64_t n, int k, int fold, int shuffle, uint64_t seed,
                             int64_t **train_idx, int64_t *n_train, int64_t **val_idx,
                             int64_t *n_val, kiln_error *err) {
  *train_idx = *val_idx = NULL;
  *n_train = *n_val = 0;
  if (k < 2 || n < k)
    return kiln_error_set(err, KILN_E_INVALID,
                          "K-fold: k = %d folds of %lld rows; expected 2 <= k <= rows", k,
                          (long long)n);
  if (fold < 0 || fold >= k)
    return kiln_error_set(err, KILN_E_INVALID, "K-fold: fold %d; expected 0 <= fold < %d", fold, k);
  int64_t *order = malloc((size_t)n * sizeof(int64_t));
  int64_t nv = n / k;
  int64_t *val = malloc((size_t)nv * sizeof(int64_t));
  int64_t *tr = malloc((size_t)(n - nv) * sizeof(int64_t));
  if (!order || !val || !tr) {
    free(order);
    free(val);
    free(tr);
    return kiln_error_set(err, KILN_E_NOMEM, "K-fold of %lld rows: out of memory", (long long)n);
  }
  for (int64_t i = 0; i < n; i++) order[i] = i;
  if (shuffle) {
    kiln_rng rng;
    kiln_rng_seed(&rng, seed, KILN_STREAM_SPLIT);
    kiln_rng_shuffle(&rng, order, n);
  }
  /* Listing 4.28: validation = [fold*nv, (fold+1)*nv), training = everything else in
   * order (so the last n % k positions are always training). */
  int64_t b = (int64_t)fold * nv, e = b + nv, t = 0;
  for (int64_t i = 0; i < n; i++) {
    if (i >= b && i < e)
      val[i - b] = order[i];
    else
      tr[t++] = order[i];
  }
  free(order);
  *train_idx = tr;
  *n_train = t;
  *val_idx = val;
  *n_val = nv;
  return KILN_OK;
}

static int matrix_present(const kiln_matrix *m) { return m->rows > 0 || m->values || m->row_ptr; }

kiln_status kiln_dataset_take(const kiln_dataset *src, const int64_t *idx, int64_t n,
                              kiln_dataset *dst, kiln_error *err) {
  memset(dst, 0, sizeof *dst);
  int have_x = matrix_present(&src->x), have_y = matrix_present(&src->y);
  int have_seq = src->seq.offsets != NULL;
  int64_t rows = have_y ? src->y.rows : have_x ? src->x.rows : have_seq ? src->seq.count : 0;
  if ((have_x && src->x.rows != rows) || (have_seq && src->seq.count != rows))
    return kiln_error_set(
        err, KILN_E_SHAPE, "data set rows disagree: x %lld, token sequences %lld, y %lld",
        (long long)src->x.rows, (long long)src->seq.count, (long long)src->y.rows);
  if (n < 0)
    return kiln_error_set(err, KILN_E_INVALID, "take: %lld rows; expected >= 0", (long long)n);
  for (int64_t i = 0; i < n; i++)
    if (idx[i] < 0 || idx[i] >= rows)
      return kiln_error_set(err, KILN_E_RANGE, "take: index %lld (position %lld) outside [0, %lld)",
                            (long long)idx[i], (long long)i, (long long)rows);
  kiln_status s = KILN_OK;
  if (have_x) s = kiln_matrix_take_rows(&src->x, idx, n, &dst->x, err);
  if (!s && have_y) s = kiln_matrix_take_rows(&src->y, idx, n, &dst->y, err);
  if (!s && have_seq) {
    int64_t total = 0;
    for (int64_t i = 0; i < n; i++)
      total += src->seq.offsets[idx[i] + 1] - src->seq.offsets[idx[i]];
    dst->seq.offsets = malloc((size_t)(n + 1) * sizeof(int64_t));
    dst->seq.tokens = malloc((size_t)(total ? total : 1) * sizeof(int32_t));
    if (!dst->seq.offsets || !dst->seq.tokens) {
      s = kiln_error_set(err, KILN_E_NOMEM, "take: %lld tokens: out of memory", (long long)total);
    } else {
      int64_t at = 0;
      dst->seq.offsets[0] = 0;
      for (int64_t i = 0; i < n; i++) {
        int64_t b = src->seq.offsets[idx[i]], e = src->seq.offsets[idx[i] + 1];
        memcpy(dst->seq.tokens + at, src->seq.tokens + b, (size_t)(e - b) * sizeof(int32_t));
        at += e - b;
        dst->seq.offsets[i + 1] = at;
      }
      dst->seq.count = n;
    }
  }
  if (s) {
    kiln_dataset_free(dst);
    return s;
  }
  dst->num_classes = src->num_classes;
  return KILN_OK;
}

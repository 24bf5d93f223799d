/* kiln trainer — California housing (keras.datasets.california_housing.load_data).
 *
 * <data_dir>/housing/california_housing.csv: a header and 20,640 rows of 8 features and
 * the target median_house_value in dollars (callers scale it, e.g. by 1/100000, as the
 * book does). "small" is the first 600 rows, "large" all of them; the rows are shuffled
 * with the seed and the first int(n * (1 - test_fraction)) go to train, as Keras does
 * (480/120 and 16512/4128 with the defaults).
 *
 * Missing values: this copy (Géron's) has 207 empty total_bedrooms cells, 4 of them in
 * the first 600 rows (file lines 292, 343, 540 and 565); no other column is ever empty.
 * With KILN_MISSING_ERROR the load fails naming the first one (…csv:292, column
 * 'total_bedrooms'); with KILN_MISSING_IMPUTE_MEDIAN every empty cell, in train and in
 * test, gets the median of that column over the training split's non-empty cells,
 * computed after the split. Nothing is ever silently read as 0. */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif

#include "data_internal.h"
#include "rng.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define HOUSING_COLS 9
#define HOUSING_TARGET 8
#define HOUSING_SMALL_ROWS 600

static const char *const housing_columns[HOUSING_COLS] = {
    "longitude",  "latitude",   "housing_median_age", "total_rooms",       "total_bedrooms",
    "population", "households", "median_income",      "median_house_value"};

static kiln_status housing_fill(const kiln_csv_table *t, const int64_t *idx, int64_t n,
                                const double *fill, kiln_dataset *out, kiln_error *err) {
  memset(out, 0, sizeof *out);
  kiln_status s = kiln_matrix_alloc(&out->x, n, HOUSING_COLS - 1, err);
  if (!s) s = kiln_matrix_alloc(&out->y, n, 1, err);
  if (s) {
    kiln_dataset_free(out);
    return s;
  }
  for (int64_t i = 0; i < n; i++) {
    const float *row = t->cells + idx[i] * HOUSING_COLS;
    float *x = out->x.values + i * (HOUSING_COLS - 1);
    for (int c = 0; c < HOUSING_TARGET; c++) x[c] = isnan(row[c]) ? (float)fill[c] : row[c];
    out->y.values[i] = row[HOUSING_TARGET];
  }
  return KILN_OK;
}

kiln_status kiln_housing_load(const kiln_load_options *opt, kiln_dataset *train, kiln_dataset *test,
                              kiln_error *err) {
  int64_t max_rows;
  if (!opt->version || !strcmp(opt->version, "small"))
    max_rows = HOUSING_SMALL_ROWS;
  else if (!strcmp(opt->version, "large"))
    max_rows = -1;
  else
    return kiln_error_set(err, KILN_E_INVALID,
                          "california_housing: version '%s'; expected \"small\" or \"large\"",
                          opt->version);
  if (!(opt->test_fraction >= 0.0 && opt->test_fraction < 1.0))
    return kiln_error_set(err, KILN_E_INVALID,
                          "california_housing: test_fraction %g; expected a value in [0, 1)",
                          opt->test_fraction);
  char path[KILN_DATA_PATH_MAX];
  kiln_status s =
      kiln_data_path(path, kiln_data_dir(opt), "housing", "california_housing.csv", err);
  if (s) return s;
  kiln_csv_table t;
  s = kiln_csv_table_read(path, max_rows, &t, err);
  if (s) return s;
  int64_t *idx = NULL;
  double fill[HOUSING_COLS] = {0};

  for (int c = 0; c < HOUSING_COLS; c++)
    if (c >= t.cols || strcmp(t.names[c], housing_columns[c]) != 0) {
      s = kiln_error_set(err, KILN_E_FORMAT,
                         "%s:1: header column %d is '%s'; expected '%s' (the header must be "
                         "longitude,latitude,housing_median_age,total_rooms,total_bedrooms,"
                         "population,households,median_income,median_house_value)",
                         path, c + 1, c < t.cols ? t.names[c] : "(none)", housing_columns[c]);
      goto done;
    }
  if (t.cols != HOUSING_COLS) {
    s = kiln_error_set(err, KILN_E_FORMAT, "%s:1: %lld columns; expected %d", path,
                       (long long)t.cols, HOUSING_COLS);
    goto done;
  }
  int64_t n = t.rows;
  int64_t n_train = (int64_t)((double)n * (1.0 - opt->test_fraction));
  if (n_train < 1) {
    s = kiln_error_set(err, KILN_E_FORMAT, "%s: %lld data rows leave no training rows", path,
                       (long long)n);
    goto done;
  }

  /* Missing cells, in file order: the target is never imputed. */
  int64_t missing = 0, first = -1;
  int first_col = 0;
  for (int64_t r = 0; r < n; r++)
    for (int c = 0; c < HOUSING_COLS; c++) {
      if (!isnan(t.cells[r * HOUSING_COLS + c])) continue;
      if (c == HOUSING_TARGET) {
        s = kiln_error_set(err, KILN_E_FORMAT,
                           "%s:%lld: column 'median_house_value' (the target): missing value; "
                           "a target cannot be imputed",
                           path, (long long)t.lines[r]);
        goto done;
      }
      if (first < 0) first = r, first_col = c;
      missing++;
    }
  if (missing && opt->missing != KILN_MISSING_IMPUTE_MEDIAN) {
    s = kiln_error_set(err, KILN_E_FORMAT,
                       "%s:%lld: column '%s' (%d of %d): missing value (empty cell); expected a "
                       "number. The %lld rows read have %lld empty cells: load with missing = "
                       "KILN_MISSING_IMPUTE_MEDIAN to fill them with the training median",
                       path, (long long)t.lines[first], housing_columns[first_col], first_col + 1,
                       HOUSING_COLS, (long long)n, (long long)missing);
    goto done;
  }

  idx = malloc((size_t)n * sizeof *idx);
  if (!idx) {
    s = kiln_error_set(err, KILN_E_NOMEM, "%s: out of memory", path);
    goto done;
  }
  for (int64_t i = 0; i < n; i++) idx[i] = i;
  kiln_rng rng;
  kiln_rng_seed(&rng, opt->seed, KILN_STREAM_SPLIT);
  kiln_rng_shuffle(&rng, idx, n);

  if (missing)
    for (int c = 0; c < HOUSING_TARGET; c++) {
      int64_t found;
      s = kiln_csv_column_median(&t, c, idx, n_train, &fill[c], &found, err);
      if (s) goto done;
      if (found == 0) {
        s = kiln_error_set(err, KILN_E_FORMAT,
                           "%s: column '%s' is empty in every training row; cannot impute it", path,
                           housing_columns[c]);
        goto done;
      }
    }

  s = housing_fill(&t, idx, n_train, fill, train, err);
  if (!s && test) {
    s = housing_fill(&t, idx + n_train, n - n_train, fill, test, err);
    if (s) kiln_dataset_free(train);
  }
done:
  free(idx);
  kiln_csv_table_free(&t);
  return s;
}

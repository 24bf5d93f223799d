/* kiln — data sets and preprocessing (part of kiln_train).
 *
 * Built-in data sets are read from a data directory: the one in the options, else
 * the environment variable KILN_DATA_DIR, else "../shared/data". Fashion-MNIST is
 * read from Debian's dataset-fashion-mnist package (/usr/share/datasets/fashion-mnist)
 * unless a "fashion-mnist" folder exists in the data directory. */
#ifndef KILN_DATA_H
#define KILN_DATA_H

#include <stdint.h>
#include "kiln/status.h"
#include "kiln/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Token-id sequences (IMDB, Reuters): sequence i is tokens[offsets[i] .. offsets[i+1]). */
typedef struct kiln_sequences {
  int64_t count;
  int64_t *offsets; /* count + 1 entries */
  int32_t *tokens;
} kiln_sequences;

/* One split of a data set. Owns every array; free with kiln_dataset_free.
 * x: features, dense or CSR (empty for text loaded without multi_hot).
 * seq: token ids for text data sets (empty otherwise).
 * y: targets, rows x 1: the class index as a float for classification, the value for
 *    regression. num_classes > 0 for classification, 0 for regression. */
typedef struct kiln_dataset {
  kiln_matrix x;
  kiln_sequences seq;
  kiln_matrix y;
  int32_t num_classes;
} kiln_dataset;

/* An empty feature cell of a CSV (an empty target cell is always an error). The real
 * California housing file has 207 empty total_bedrooms cells (4 in the "small" rows),
 * so "california_housing" fails with KILN_MISSING_ERROR (naming
 * california_housing.csv:292) and needs KILN_MISSING_IMPUTE_MEDIAN. */
typedef enum kiln_missing_policy {
  KILN_MISSING_ERROR = 0,         /* a missing value is an error naming file:line and column */
  KILN_MISSING_IMPUTE_MEDIAN = 1  /* replaced by the training split's column median (numpy's
                                     median of the non-empty cells, computed after the split;
                                     for a CSV file, the whole file is the training split) */
} kiln_missing_policy;

typedef struct kiln_load_options {
  const char *data_dir;   /* NULL: $KILN_DATA_DIR, else "../shared/data" */
  int32_t num_words;      /* imdb/reuters: keep the num_words most frequent (0: all); as
                             Keras, every id >= num_words becomes 2 (OOV), 1 (start) stays */
  int multi_hot;          /* imdb/reuters: also fill x with a CSR multi-hot of num_words columns
                             (num_words 0: max id + 1 over the loaded splits) */
  const char *version;    /* california_housing: "small" (first 600 rows, default) or "large" */
  uint64_t seed;          /* california_housing: seed of the 80/20 split (default 113): the rows
                             are shuffled (stream KILN_STREAM_SPLIT), the first
                             int(n * (1 - test_fraction)) are train, as Keras */
  double test_fraction;   /* california_housing: default 0.2, in [0, 1) */
  kiln_missing_policy missing;
  const char *target;     /* CSV: name of the target column (NULL: the last column) */
  int32_t num_classes;    /* CSV/.npy: > 0 makes the target a class label in [0, num_classes) */
} kiln_load_options;

/* Defaults: num_words 10000, multi_hot 1, version "small", seed 113, test_fraction 0.2. */
void kiln_load_options_init(kiln_load_options *opt);

/* The data directory the options resolve to (options, $KILN_DATA_DIR or the default). */
const char *kiln_data_dir(const kiln_load_options *opt);

/* Loads a built-in data set by name ("imdb", "reuters", "california_housing",
 * "fashion_mnist") or a file: "path.csv" (header line, target column from
 * opt->target) or "x.npy" (features; labels from the same name with "y" in place
 * of the first "x" in the file name, e.g. x_train.npy -> y_train.npy).
 * Fills train and test (test may be NULL; for a file, test is left empty).
 * opt may be NULL (the defaults). On failure train and test are left empty.
 * imdb, reuters: y holds the labels (2 and 46 classes), seq the ids, x the multi-hot.
 * california_housing: x rows x 8 features, y median_house_value in dollars.
 * Fashion-MNIST pixels are scaled to [0, 1] and flattened to 784 columns.
 * Non-finite feature values (CSV or .npy) are a KILN_E_RANGE error naming the place;
 * with opt->num_classes > 0 every label must be an integer in [0, num_classes). */
kiln_status kiln_dataset_load(const char *name, const kiln_load_options *opt,
                              kiln_dataset *train, kiln_dataset *test, kiln_error *err);

/* Frees every array and zeroes the struct. */
void kiln_dataset_free(kiln_dataset *d);

/* --- files --------------------------------------------------------------- */

/* Reads a CSV with a header: every column but the target becomes a feature.
 * Comma-separated, no quoted commas; blank lines are skipped; an empty cell is a missing
 * value (opt->missing); NaN/Inf, text and wrong field counts are errors naming
 * path:line and the column. opt may be NULL. */
kiln_status kiln_csv_load(const char *path, const kiln_load_options *opt, kiln_dataset *out,
                          kiln_error *err);
/* Reads a 1-D or 2-D .npy (float32, float64, int32, int64, uint8; little-endian, C order)
 * as rows x cols (a 1-D array of n is n x 1). Truncated or trailing data is an error. */
kiln_status kiln_npy_read(const char *path, kiln_matrix *out, kiln_error *err);
/* Writes a dense matrix as a 2-D float32 .npy (atomically: temporary file, then rename).
 * A CSR matrix is refused (KILN_E_UNSUPPORTED). */
kiln_status kiln_npy_write(const char *path, const kiln_matrix *m, kiln_error *err);

/* --- preprocessing ------------------------------------------------------- */

/* CSR rows of width num_words with a 1 at every token id < num_words (ids >= num_words
 * are ignored, as keras' multi_hot_encode on num_words-limited data). */
kiln_status kiln_multi_hot(const kiln_sequences *seq, int32_t num_words, kiln_matrix *out,
                           kiln_error *err);
/* labels (rows x 1 class indices) -> dense rows x num_classes one-hot (to_categorical).
 * A label that is not an integer in [0, num_classes) is KILN_E_RANGE naming its row. */
kiln_status kiln_one_hot(const kiln_matrix *labels, int32_t num_classes, kiln_matrix *out,
                         kiln_error *err);

/* Per-column mean and standard deviation (population, as numpy's std), fitted on a
 * training split and applied to any split (dense matrices only). Columns with std 0
 * are left centred only: their std is stored as 1. Free with kiln_standardizer_free. */
typedef struct kiln_standardizer {
  int64_t cols;
  float *mean;
  float *std;
} kiln_standardizer;
kiln_status kiln_standardizer_fit(kiln_standardizer *s, const kiln_matrix *x, kiln_error *err);
kiln_status kiln_standardizer_apply(const kiln_standardizer *s, kiln_matrix *x, kiln_error *err);
void kiln_standardizer_free(kiln_standardizer *s);

/* Multiplies every value of a dense matrix by factor (e.g. targets / 100000). A CSR
 * matrix has its stored values scaled; a multi-hot one (values NULL) is left as is. */
void kiln_matrix_scale(kiln_matrix *m, float factor);

/* K-fold split of n rows: fold `fold` of k is the validation part. With shuffle, the
 * rows are permuted by seed first (iterated K-fold: call again with another seed).
 * Without shuffle the folds are contiguous as in the book's listing 4.28 (the last
 * n % k rows are always in the training part). Caller frees both index arrays. */
kiln_status kiln_kfold_split(int64_t n, int k, int fold, int shuffle, uint64_t seed,
                             int64_t **train_idx, int64_t *n_train,
                             int64_t **val_idx, int64_t *n_val, kiln_error *err);

/* The rows idx[0..n) of a data set (x, seq and y; an empty part stays empty) as a new
 * data set (indices may repeat). Free with kiln_dataset_free. */
kiln_status kiln_dataset_take(const kiln_dataset *src, const int64_t *idx, int64_t n,
                              kiln_dataset *dst, kiln_error *err);

#ifdef __cplusplus
}
#endif
#endif

/* kiln trainer — private interface between the data loaders (train/data_*.c).
 * Nothing outside train/ includes this. */
#ifndef KILN_TRAIN_DATA_INTERNAL_H
#define KILN_TRAIN_DATA_INTERNAL_H

#include <stdint.h>
#include "kiln/data.h"

/* Paths are built in fixed buffers of this size (no VLAs); longer is an error. */
#define KILN_DATA_PATH_MAX 4096

/* dst = a "/" b ["/" c]; returns KILN_E_INVALID when it does not fit. */
kiln_status kiln_data_path(char *dst, const char *a, const char *b, const char *c, kiln_error *err);

/* zlib's gzerror text starts with the path; returns msg without that prefix. */
const char *kiln_data_strip_path(const char *msg, const char *path);

/* --- data_text.c: "label<TAB>ids" records (IMDB, Reuters) ------------------- */

/* Reads one split (gzip or plain text). Ids >= num_words (when > 0) become 2 (OOV);
 * labels must lie in [0, num_classes). Fills out->seq and out->y; out->x stays empty. */
kiln_status kiln_text_read(const char *path, int32_t num_words, int32_t num_classes,
                           kiln_dataset *out, kiln_error *err);
/* "imdb" (2 classes) or "reuters" (46 classes) from <data_dir>/<name>/{train,test}.txt.gz,
 * with the multi-hot x when opt->multi_hot. */
kiln_status kiln_text_dataset_load(const char *name, int32_t num_classes,
                                   const kiln_load_options *opt, kiln_dataset *train,
                                   kiln_dataset *test, kiln_error *err);

/* --- data_housing.c ----------------------------------------------------------- */
kiln_status kiln_housing_load(const kiln_load_options *opt, kiln_dataset *train, kiln_dataset *test,
                              kiln_error *err);

/* --- data_mnist.c ------------------------------------------------------------- */
kiln_status kiln_fashion_mnist_load(const kiln_load_options *opt, kiln_dataset *train,
                                    kiln_dataset *test, kiln_error *err);

/* --- data_files.c: the numeric CSV table shared by kiln_csv_load and housing --- */

/* Every cell parsed as a number. An empty cell is stored as NaN, the marker for a
 * missing value: a literal NaN or infinity in the file is rejected while reading, so
 * a NaN cell always means "empty". */
typedef struct kiln_csv_table {
  int64_t rows;
  int64_t cols;
  char **names;   /* cols header names */
  float *cells;   /* rows x cols, row-major */
  int64_t *lines; /* the 1-based file line of each row, for messages */
} kiln_csv_table;

/* Reads the header and at most max_rows data rows (max_rows < 0: all). Blank lines
 * are skipped. Errors name path:line and the column. */
kiln_status kiln_csv_table_read(const char *path, int64_t max_rows, kiln_csv_table *t,
                                kiln_error *err);
void kiln_csv_table_free(kiln_csv_table *t);

/* The median (numpy's: mean of the two middle values for an even count) of column col
 * over the rows rows[0..n) of t, skipping missing cells; *found is the count used. */
kiln_status kiln_csv_column_median(const kiln_csv_table *t, int64_t col, const int64_t *rows,
                                   int64_t n, double *median, int64_t *found, kiln_error *err);

#endif

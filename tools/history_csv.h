/* kiln command — a History CSV read for `kiln plot`: a header with an epoch column
 * and numeric series, one row per epoch (what kiln_history_write_csv and Keras'
 * CSVLogger write), epochs increasing. Empty and NaN cells are missing values. */
#ifndef KILN_TOOLS_HISTORY_CSV_H
#define KILN_TOOLS_HISTORY_CSV_H

typedef struct history_csv {
  int n_cols;      /* the epoch column included */
  char **names;    /* [n_cols] header cells, trimmed */
  int epoch_col;
  int n_rows;
  double *values;  /* n_rows x n_cols, row-major; NaN where a cell is missing */
} history_csv;

/* Reads path. On failure returns -1 with a message "path:line: what, and the fix" in
 * msg (cap bytes); *out is then empty. Free with history_csv_free. */
int history_csv_read(const char *path, history_csv *out, char *msg, int cap);
void history_csv_free(history_csv *h);
/* The column named name, or -1. */
int history_csv_column(const history_csv *h, const char *name);

#endif

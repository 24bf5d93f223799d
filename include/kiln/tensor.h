/* kiln — the 2-D float matrix shared by the trainer, the data loaders and the
 * runtime: row-major dense, or CSR for multi-hot text rows. */
#ifndef KILN_TENSOR_H
#define KILN_TENSOR_H

#include <stdint.h>
#include "kiln/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* rows x cols of float32.
 * Dense (row_ptr == NULL): values holds rows*cols floats, row-major.
 * CSR (row_ptr != NULL): row r's non-zeros are col_idx[row_ptr[r] .. row_ptr[r+1])
 * with the matching values; values may be NULL, meaning every stored entry is 1
 * (multi-hot). Column indices in a row are strictly increasing.
 * A matrix owns its arrays unless `borrowed` is set (then kiln_matrix_free only
 * clears it). */
typedef struct kiln_matrix {
  int64_t rows;
  int64_t cols;
  float *values;
  int64_t *row_ptr;
  int32_t *col_idx;
  int borrowed;
} kiln_matrix;

static inline int kiln_matrix_is_sparse(const kiln_matrix *m) { return m->row_ptr != 0; }
static inline int64_t kiln_matrix_nnz(const kiln_matrix *m) {
  return m->row_ptr ? m->row_ptr[m->rows] : m->rows * m->cols;
}

/* Allocates a zero-filled dense matrix. Free with kiln_matrix_free. */
kiln_status kiln_matrix_alloc(kiln_matrix *m, int64_t rows, int64_t cols, kiln_error *err);
/* Deep copy of src (dense or CSR) into dst. */
kiln_status kiln_matrix_copy(kiln_matrix *dst, const kiln_matrix *src, kiln_error *err);
/* Frees the arrays (unless borrowed) and zeroes the struct. Safe on a zeroed struct. */
void kiln_matrix_free(kiln_matrix *m);
/* A dense or CSR matrix of the rows idx[0..n) of src, in that order. */
kiln_status kiln_matrix_take_rows(const kiln_matrix *src, const int64_t *idx, int64_t n,
                                  kiln_matrix *dst, kiln_error *err);
/* Rows [begin, end) of src as a new matrix (deep copy). */
kiln_status kiln_matrix_slice_rows(const kiln_matrix *src, int64_t begin, int64_t end,
                                   kiln_matrix *dst, kiln_error *err);
/* The CSR form of a dense matrix (its non-zero entries, with their values). */
kiln_status kiln_matrix_to_csr(const kiln_matrix *dense, kiln_matrix *csr, kiln_error *err);
/* Element (r, c), for CSR by binary search. */
float kiln_matrix_get(const kiln_matrix *m, int64_t r, int64_t c);
/* First non-finite entry: returns 1 and sets *row and *col, else 0. */
int kiln_matrix_find_nonfinite(const kiln_matrix *m, int64_t *row, int64_t *col);

#ifdef __cplusplus
}
#endif
#endif

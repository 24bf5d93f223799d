#include "kiln/tensor.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static void *alloc_array(int64_t count, size_t elem) {
  if (count < 0 || (uint64_t)count > SIZE_MAX / elem) return NULL;
  return malloc(count ? (size_t)count * elem : 1);
}

kiln_status kiln_matrix_alloc(kiln_matrix *m, int64_t rows, int64_t cols, kiln_error *err) {
  memset(m, 0, sizeof *m);
  if (rows < 0 || cols < 0 || (cols && rows > INT64_MAX / cols))
    return kiln_error_set(err, KILN_E_INVALID, "matrix of %lld x %lld: invalid size",
                          (long long)rows, (long long)cols);
  size_t n = (size_t)(rows * cols);
  m->values = calloc(n ? n : 1, sizeof(float));
  if (!m->values)
    return kiln_error_set(err, KILN_E_NOMEM, "matrix of %lld x %lld: out of memory",
                          (long long)rows, (long long)cols);
  m->rows = rows;
  m->cols = cols;
  return KILN_OK;
}

void kiln_matrix_free(kiln_matrix *m) {
  if (!m) return;
  if (!m->borrowed) {
    free(m->values);
    free(m->row_ptr);
    free(m->col_idx);
  }
  memset(m, 0, sizeof *m);
}

static kiln_status csr_alloc(kiln_matrix *m, int64_t rows, int64_t cols, int64_t nnz,
                             int with_values, kiln_error *err) {
  memset(m, 0, sizeof *m);
  m->rows = rows;
  m->cols = cols;
  m->row_ptr = alloc_array(rows + 1, sizeof(int64_t));
  m->col_idx = alloc_array(nnz, sizeof(int32_t));
  if (with_values) m->values = alloc_array(nnz, sizeof(float));
  if (!m->row_ptr || !m->col_idx || (with_values && !m->values)) {
    kiln_matrix_free(m);
    return kiln_error_set(err, KILN_E_NOMEM, "sparse matrix with %lld non-zeros: out of memory",
                          (long long)nnz);
  }
  m->row_ptr[0] = 0;
  return KILN_OK;
}

kiln_status kiln_matrix_take_rows(const kiln_matrix *src, const int64_t *idx, int64_t n,
                                  kiln_matrix *dst, kiln_error *err) {
  for (int64_t i = 0; i < n; i++)
    if (idx[i] < 0 || idx[i] >= src->rows)
      return kiln_error_set(err, KILN_E_RANGE, "row index %lld outside [0, %lld)",
                            (long long)idx[i], (long long)src->rows);
  if (!kiln_matrix_is_sparse(src)) {
    kiln_status s = kiln_matrix_alloc(dst, n, src->cols, err);
    if (s) return s;
    for (int64_t i = 0; i < n; i++)
      memcpy(dst->values + i * src->cols, src->values + idx[i] * src->cols,
             (size_t)src->cols * sizeof(float));
    return KILN_OK;
  }
  int64_t nnz = 0;
  for (int64_t i = 0; i < n; i++) nnz += src->row_ptr[idx[i] + 1] - src->row_ptr[idx[i]];
  kiln_status s = csr_alloc(dst, n, src->cols, nnz, src->values != NULL, err);
  if (s) return s;
  int64_t at = 0;
  for (int64_t i = 0; i < n; i++) {
    int64_t b = src->row_ptr[idx[i]], e = src->row_ptr[idx[i] + 1];
    memcpy(dst->col_idx + at, src->col_idx + b, (size_t)(e - b) * sizeof(int32_t));
    if (src->values) memcpy(dst->values + at, src->values + b, (size_t)(e - b) * sizeof(float));
    at += e - b;
    dst->row_ptr[i + 1] = at;
  }
  return KILN_OK;
}

kiln_status kiln_matrix_slice_rows(const kiln_matrix *src, int64_t begin, int64_t end,
                                   kiln_matrix *dst, kiln_error *err) {
  if (begin < 0 || end < begin || end > src->rows)
    return kiln_error_set(err, KILN_E_RANGE, "rows [%lld, %lld) outside a matrix of %lld rows",
                          (long long)begin, (long long)end, (long long)src->rows);
  int64_t n = end - begin;
  int64_t *idx = alloc_array(n, sizeof(int64_t));
  if (!idx) return kiln_error_set(err, KILN_E_NOMEM, "row slice: out of memory");
  for (int64_t i = 0; i < n; i++) idx[i] = begin + i;
  kiln_status s = kiln_matrix_take_rows(src, idx, n, dst, err);
  free(idx);
  return s;
}

kiln_status kiln_matrix_copy(kiln_matrix *dst, const kiln_matrix *src, kiln_error *err) {
  return kiln_matrix_slice_rows(src, 0, src->rows, dst, err);
}

kiln_status kiln_matrix_to_csr(const kiln_matrix *dense, kiln_matrix *csr, kiln_error *err) {
  if (kiln_matrix_is_sparse(dense)) return kiln_matrix_copy(csr, dense, err);
  int64_t n = dense->rows * dense->cols, nnz = 0;
  if (dense->cols > INT32_MAX)
    return kiln_error_set(err, KILN_E_INVALID, "CSR: %lld columns exceed the 32-bit index",
                          (long long)dense->cols);
  for (int64_t i = 0; i < n; i++) nnz += dense->values[i] != 0.0f;
  kiln_status s = csr_alloc(csr, dense->rows, dense->cols, nnz, 1, err);
  if (s) return s;
  int64_t at = 0;
  for (int64_t r = 0; r < dense->rows; r++) {
    const float *row = dense->values + r * dense->cols;
    for (int64_t c = 0; c < dense->cols; c++)
      if (row[c] != 0.0f) {
        csr->col_idx[at] = (int32_t)c;
        csr->values[at++] = row[c];
      }
    csr->row_ptr[r + 1] = at;
  }
  return KILN_OK;
}

float kiln_matrix_get(const kiln_matrix *m, int64_t r, int64_t c) {
  if (!m->row_ptr) return m->values[r * m->cols + c];
  int64_t lo = m->row_ptr[r], hi = m->row_ptr[r + 1];
  while (lo < hi) {
    int64_t mid = lo + (hi - lo) / 2;
    if (m->col_idx[mid] == c) return m->values ? m->values[mid] : 1.0f;
    if (m->col_idx[mid] < c) lo = mid + 1; else hi = mid;
  }
  return 0.0f;
}

int kiln_matrix_find_nonfinite(const kiln_matrix *m, int64_t *row, int64_t *col) {
  if (!m->values) return 0;
  if (!m->row_ptr) {
    int64_t n = m->rows * m->cols;
    for (int64_t i = 0; i < n; i++)
      if (!isfinite(m->values[i])) {
        *row = i / m->cols;
        *col = i % m->cols;
        return 1;
      }
    return 0;
  }
  for (int64_t r = 0; r < m->rows; r++)
    for (int64_t k = m->row_ptr[r]; k < m->row_ptr[r + 1]; k++)
      if (!isfinite(m->values[k])) {
        *row = r;
        *col = m->col_idx[k];
        return 1;
      }
  return 0;
}

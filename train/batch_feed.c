/* kiln trainer — gathering mini-batches of the caller's data into the Input layers
 * (dense rows copied, CSR rows sliced). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "custom_layer.h"
#include "model_internal.h"

static kiln_status batch_source_init(batch_source *b, const kiln_matrix *x, int64_t batch,
                                     kiln_error *err) {
  memset(b, 0, sizeof *b);
  b->x = x;
  if (!kiln_matrix_is_sparse(x)) return KILN_OK;
  int64_t max_row = 0;
  for (int64_t r = 0; r < x->rows; r++) {
    int64_t n = x->row_ptr[r + 1] - x->row_ptr[r];
    max_row = n > max_row ? n : max_row;
  }
  int64_t total = kiln_matrix_nnz(x);
  b->cap_nnz = batch * max_row < total ? batch * max_row : total;
  b->csr.cols = x->cols;
  b->csr.row_ptr = malloc((size_t)(batch + 1) * sizeof(int64_t));
  b->csr.col_idx = malloc((size_t)(b->cap_nnz ? b->cap_nnz : 1) * sizeof(int32_t));
  if (x->values) b->csr.values = malloc((size_t)(b->cap_nnz ? b->cap_nnz : 1) * sizeof(float));
  if (!b->csr.row_ptr || !b->csr.col_idx || (x->values && !b->csr.values)) {
    kiln_matrix_free(&b->csr);
    return kiln_error_set(err, KILN_E_NOMEM, "sparse batch buffer: out of memory");
  }
  return KILN_OK;
}

static void batch_gather(batch_source *b, kiln_layer *input, const int64_t *idx, int64_t begin,
                         int64_t rows) {
  const kiln_matrix *x = b->x;
  if (!kiln_matrix_is_sparse(x)) {
    input->sparse = NULL;
    for (int64_t i = 0; i < rows; i++) {
      int64_t r = idx ? idx[begin + i] : begin + i;
      memcpy(input->out + i * x->cols, x->values + r * x->cols, (size_t)x->cols * sizeof(float));
    }
    return;
  }
  int64_t at = 0;
  b->csr.row_ptr[0] = 0;
  for (int64_t i = 0; i < rows; i++) {
    int64_t r = idx ? idx[begin + i] : begin + i;
    int64_t s = x->row_ptr[r], n = x->row_ptr[r + 1] - s;
    memcpy(b->csr.col_idx + at, x->col_idx + s, (size_t)n * sizeof(int32_t));
    if (x->values) memcpy(b->csr.values + at, x->values + s, (size_t)n * sizeof(float));
    at += n;
    b->csr.row_ptr[i + 1] = at;
  }
  b->csr.rows = rows;
  input->sparse = &b->csr;
}

void kiln_feed_free(feed *f) {
  for (int i = 0; i < f->n; i++) kiln_matrix_free(&f->src[i].csr);
  f->n = 0;
}

kiln_status kiln_feed_init(feed *f, const io_data *d, int64_t batch, kiln_error *err) {
  memset(f, 0, sizeof *f);
  for (int i = 0; i < d->n_x; i++) {
    kiln_status s = batch_source_init(&f->src[i], d->x[i], batch, err);
    if (s) {
      kiln_feed_free(f);
      return s;
    }
    f->n = i + 1;
  }
  return KILN_OK;
}

void kiln_feed_gather(feed *f, kiln_model *m, const int64_t *idx, int64_t begin, int64_t rows) {
  for (int i = 0; i < f->n; i++)
    batch_gather(&f->src[i], &m->layers[m->inputs[i]], idx, begin, rows);
}

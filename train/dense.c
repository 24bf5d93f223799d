/* kiln trainer — Dense layer kernels. Each has a plain C reference (*_ref) that the
 * tests hold the BLAS and sparse paths to. Row-major: x is rows x in, the kernel
 * in x out, z rows x out. */
#include <cblas.h>
#include <string.h>

#include "model_internal.h"

/* OpenBLAS' thread count, when the BLAS is OpenBLAS (weak: absent from other BLAS). */
extern int openblas_get_num_threads(void) __attribute__((weak));
extern void openblas_set_num_threads(int) __attribute__((weak));

/* GEMMs between these sizes (multiply-adds) run on one OpenBLAS thread. OpenBLAS
 * splits them from 256 k on (its SMP_THRESHOLD_MIN x GEMM_MULTITHREAD_THRESHOLD); at
 * the trainer's sizes (512 x 64 x 64) its second thread gains nothing and then spins
 * in sched_yield on the other core, which the optimizer step's second thread needs.
 * Below 256 k OpenBLAS uses one thread anyway, and setting its thread count back to 2
 * wakes its worker: so those calls are left alone. */
#define OPENBLAS_ONE_THREAD_MAX (256 * 1024)
#define ONE_THREAD_GEMM_MAX (4 * 1024 * 1024)

static void sgemm(CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int64_t m, int64_t n, int64_t k,
                  const float *a, int64_t lda, const float *b, int64_t ldb, float beta,
                  float *c, int64_t ldc) {
  int threads = 1;
  int64_t size = m * n * k;
  if (size > OPENBLAS_ONE_THREAD_MAX && size <= ONE_THREAD_GEMM_MAX && openblas_get_num_threads && openblas_set_num_threads &&
      (threads = openblas_get_num_threads()) > 1)
    openblas_set_num_threads(1);
  cblas_sgemm(CblasRowMajor, ta, tb, (int)m, (int)n, (int)k, 1.0f, a, (int)lda, b, (int)ldb,
              beta, c, (int)ldc);
  if (threads > 1) openblas_set_num_threads(threads);
}

void kiln_dense_forward_ref(const float *x, const float *w, const float *b, int64_t rows,
                            int64_t in, int64_t out, float *z) {
  for (int64_t r = 0; r < rows; r++)
    for (int64_t j = 0; j < out; j++) {
      double acc = b[j];
      for (int64_t k = 0; k < in; k++) acc += (double)x[r * in + k] * w[k * out + j];
      z[r * out + j] = (float)acc;
    }
}

void kiln_dense_forward(const kiln_layer *l, const float *x, int64_t rows, float *z) {
  int64_t in = l->in_features, out = l->out_features;
  for (int64_t r = 0; r < rows; r++) memcpy(z + r * out, l->bias, (size_t)out * sizeof(float));
  sgemm(CblasNoTrans, CblasNoTrans, rows, out, in, x, in, l->kernel, out, 1.0f, z, out);
}

/* Multi-hot rows: z[r] = b + sum of the kernel rows of r's non-zero columns, so a
 * 10,000-wide row with 150 ones costs 150 row additions instead of 10,000. */
KILN_HOT void kiln_dense_forward_csr(const kiln_layer *l, const kiln_matrix *x, float *z) {
  int64_t out = l->out_features;
  for (int64_t r = 0; r < x->rows; r++) {
    float *zr = z + r * out;
    memcpy(zr, l->bias, (size_t)out * sizeof(float));
    for (int64_t k = x->row_ptr[r]; k < x->row_ptr[r + 1]; k++) {
      const float *wr = l->kernel + (int64_t)x->col_idx[k] * out;
      float v = x->values ? x->values[k] : 1.0f;
      for (int64_t j = 0; j < out; j++) zr[j] += v * wr[j];
    }
  }
}

void kiln_dense_backward_params_ref(const float *x, const float *dz, int64_t rows, int64_t in,
                                    int64_t out, float *gw, float *gb) {
  for (int64_t k = 0; k < in; k++)
    for (int64_t j = 0; j < out; j++) {
      double acc = 0;
      for (int64_t r = 0; r < rows; r++) acc += (double)x[r * in + k] * dz[r * out + j];
      gw[k * out + j] = (float)acc;
    }
  for (int64_t j = 0; j < out; j++) {
    double acc = 0;
    for (int64_t r = 0; r < rows; r++) acc += dz[r * out + j];
    gb[j] = (float)acc;
  }
}

KILN_HOT static void bias_grad(const float *dz, int64_t rows, int64_t out, float *gb) {
  memset(gb, 0, (size_t)out * sizeof(float));
  for (int64_t r = 0; r < rows; r++)
    for (int64_t j = 0; j < out; j++) gb[j] += dz[r * out + j];
}

void kiln_dense_backward_params(kiln_layer *l, const float *x, int64_t rows, const float *dz) {
  int64_t in = l->in_features, out = l->out_features;
  sgemm(CblasTrans, CblasNoTrans, in, out, rows, x, in, dz, out, 0.0f, l->grad_kernel, out);
  bias_grad(dz, rows, out, l->grad_bias);
}

KILN_HOT void kiln_dense_backward_params_csr(kiln_layer *l, const kiln_matrix *x, const float *dz) {
  int64_t out = l->out_features;
  memset(l->grad_kernel, 0, (size_t)(l->in_features * out) * sizeof(float));
  for (int64_t r = 0; r < x->rows; r++) {
    const float *dzr = dz + r * out;
    for (int64_t k = x->row_ptr[r]; k < x->row_ptr[r + 1]; k++) {
      float *gr = l->grad_kernel + (int64_t)x->col_idx[k] * out;
      float v = x->values ? x->values[k] : 1.0f;
      for (int64_t j = 0; j < out; j++) gr[j] += v * dzr[j];
    }
  }
  bias_grad(dz, x->rows, out, l->grad_bias);
}

void kiln_dense_backward_input_ref(const float *dz, const float *w, int64_t rows, int64_t in,
                                   int64_t out, float *dx) {
  for (int64_t r = 0; r < rows; r++)
    for (int64_t k = 0; k < in; k++) {
      double acc = 0;
      for (int64_t j = 0; j < out; j++) acc += (double)dz[r * out + j] * w[k * out + j];
      dx[r * in + k] += (float)acc;
    }
}

void kiln_dense_backward_input(const kiln_layer *l, const float *dz, int64_t rows, float *dx) {
  int64_t in = l->in_features, out = l->out_features;
  sgemm(CblasNoTrans, CblasTrans, rows, in, out, dz, out, l->kernel, out, 1.0f, dx, in);
}

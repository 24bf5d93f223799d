/* kiln runtime — float32 GEMM/GEMV kernels (private to infer/ and its tests).
 *
 * One blocked driver (sgemm_ref.c) runs every path: B (the weights) is packed once
 * into panels of `nr` columns (K x nr, k-major, zero-padded). Row-major A is read in
 * place by a per-path micro-kernel (micro_rs) that stores an mr x nr tile to C with
 * bias and ReLU fused; a transposed A is packed per block into panels of `mr` rows
 * for `micro`. N = 1 takes a dot product per row; mostly-zero rows and token ids
 * gather weight rows instead.
 * The naive triple loop kiln_sgemm_naive is the truth every path is tested against. */
#ifndef KILN_INFER_SGEMM_H
#define KILN_INFER_SGEMM_H

#include <stddef.h>
#include <stdint.h>

#include "kiln/infer.h"

/* Activations fused into the GEMM epilogue. */
typedef enum kiln_act {
  KILN_ACT_NONE = 0,
  KILN_ACT_RELU,
  KILN_ACT_LEAKY_RELU,
  KILN_ACT_SIGMOID,
  KILN_ACT_TANH
} kiln_act;

#define KILN_SGEMM_MAX_MR 16
#define KILN_SGEMM_MAX_NR 32

/* tile[mr * nr] (row-major, nr columns) = sum over kc of packed A x packed B. */
typedef void (*kiln_micro_fn)(int64_t kc, const float *pa, const float *pb, float *tile);
/* out[nr] = sum_k a[k] * pb[k * nr + j] (one B panel, a contiguous). */
typedef void (*kiln_gemv_fn)(int64_t k, const float *a, const float *pb, float *out);

/* What a micro-kernel does with its mr x nr result when it stores straight to C:
 * c[i * ldc + j] = (acc ? c : 0) + tile + bias[j], ReLU'd if relu, for j < n (n <= nr). */
typedef struct kiln_tile_store {
  float *c;
  int64_t ldc;
  int n;
  int acc;          /* add to C (a later K block) instead of overwriting it */
  const float *bias; /* NULL: none */
  int relu;
} kiln_tile_store;

/* The micro-kernel reading A in place (no packing): mr rows a + i * rsa, k contiguous,
 * against one packed B panel over kc, the result stored as st says. */
typedef void (*kiln_micro_rs_fn)(int64_t kc, const float *a, int64_t rsa, const float *pb,
                                 const kiln_tile_store *st);
/* acc[j] = sum_t (val ? val[t] : 1) * panel[idx[t] * nr + j] for j < ncols (<= nr);
 * acc has nr floats, columns >= ncols are unspecified. */
typedef void (*kiln_gather_fn)(const float *panel, int nr, const int32_t *idx, const float *val,
                               int64_t nnz, int ncols, float *acc);
/* The non-zeros of x[0..K) as (idx, val), in order; returns their count. */
typedef int64_t (*kiln_nzscan_fn)(const float *x, int64_t K, int32_t *idx, float *val);
/* out[i] = sum_k a[i * rsa + k] * w[k] for i < M (the N = 1 layer). */
typedef void (*kiln_rowdot_fn)(int64_t M, int64_t K, const float *a, int64_t rsa, const float *w,
                               float *out);

typedef struct kiln_sgemm_kernel {
  kiln_kernel_path path;
  const char *name;
  int mr, nr;
  int64_t kc, mc; /* K and M block sizes (L1/L2) */
  kiln_micro_fn micro;
  kiln_gemv_fn gemv;
  kiln_micro_rs_fn micro_rs;
  kiln_gather_fn gather;
  kiln_nzscan_fn nzscan;
  kiln_rowdot_fn rowdot;
} kiln_sgemm_kernel;

/* The plain C versions (the references the SIMD ones are tested against). */
void kiln_gather_ref(const float *panel, int nr, const int32_t *idx, const float *val,
                     int64_t nnz, int ncols, float *acc);
int64_t kiln_nzscan_ref(const float *x, int64_t K, int32_t *idx, float *val);
void kiln_rowdot_ref(int64_t M, int64_t K, const float *a, int64_t rsa, const float *w,
                     float *out);
/* Shared by the kernels' micro_rs: the store of one row of a tile (r: nr floats). */
void kiln_tile_store_row(const kiln_tile_store *st, int i, const float *r);

/* CPU features, detected once per session (no global state). */
typedef struct kiln_cpu {
  int avx2_fma;
  int avx512f;
  int avx512vnni; /* AVX-512 VNNI (with avx512f) */
  int neon;
  int dotprod;    /* Armv8.2 SDOT/UDOT (AArch64 HWCAP_ASIMDDP) */
} kiln_cpu;

void kiln_cpu_detect(kiln_cpu *cpu);
/* The kernel of a path (AUTO picks the best the CPU has); NULL with a message in
 * err when the CPU (or this build) lacks it. */
const kiln_sgemm_kernel *kiln_sgemm_select(const kiln_cpu *cpu, kiln_kernel_path path,
                                           kiln_error *err);

/* Per-path kernels, each defined in its own file (NULL-returning where not built). */
const kiln_sgemm_kernel *kiln_sgemm_kernel_ref(void);
const kiln_sgemm_kernel *kiln_sgemm_kernel_avx2(void);
const kiln_sgemm_kernel *kiln_sgemm_kernel_avx512(void);
const kiln_sgemm_kernel *kiln_sgemm_kernel_neon(void);

/* Floats of a packed B of K x N (for N = 1 the column also follows the panel,
 * contiguous, for the row-dot path). */
size_t kiln_sgemm_packed_b_floats(const kiln_sgemm_kernel *k, int64_t K, int64_t N);
/* Floats of the A-packing workspace one thread needs. */
size_t kiln_sgemm_workspace_floats(const kiln_sgemm_kernel *k, int64_t K);
/* Packs B (B(k,n) = b[k*rsb + n*csb]) into out. */
void kiln_sgemm_pack_b(const kiln_sgemm_kernel *k, int64_t K, int64_t N, const float *b,
                       int64_t rsb, int64_t csb, float *out);

/* C = act(alpha * op(A) op(B) + beta * C + bias), op(B) packed.
 * A(i,k) = a[i*rsa + k*csa]; C row-major with ldc; bias has N entries or is NULL. */
typedef struct kiln_gemm_args {
  int64_t M, N, K;
  const float *a;
  int64_t rsa, csa;
  const float *bp;
  float *c;
  int64_t ldc;
  float alpha, beta;
  const float *bias;
  kiln_act act;
  float act_alpha; /* LeakyRelu slope */
} kiln_gemm_args;

/* Rows [m0, m1) and column panels [p0, p1) of the product (threads split either);
 * ws holds kiln_sgemm_workspace_floats floats. A single row takes the GEMV path. */
void kiln_sgemm_run(const kiln_sgemm_kernel *k, const kiln_gemm_args *g, int64_t m0, int64_t m1,
                    int64_t p0, int64_t p1, float *ws);
static inline int64_t kiln_sgemm_panels(const kiln_sgemm_kernel *k, int64_t N) {
  return (N + k->nr - 1) / k->nr;
}

/* One output row gathered from non-zeros (idx, val; val NULL means ones) of A's row;
 * tile_buf holds nr floats. */
void kiln_sgemm_gather_row(const kiln_sgemm_kernel *k, const kiln_gemm_args *g, int64_t row,
                           const int32_t *idx, const float *val, int64_t nnz, float *tile_buf);

/* The truth: plain triple loop, C = alpha * op(A) op(B) + beta * C (beta == 0 ignores C). */
void kiln_sgemm_naive(int64_t M, int64_t N, int64_t K, float alpha, const float *a, int64_t rsa,
                      int64_t csa, const float *b, int64_t rsb, int64_t csb, float beta, float *c,
                      int64_t ldc);

/* The activation on n floats in place. */
void kiln_act_apply(kiln_act act, float alpha, float *x, int64_t n);

#endif

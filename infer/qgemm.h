/* kiln runtime — int8 GEMM (private to infer/ and its tests).
 *
 * Y_q = requant(X_q W + bias_q): X_q int8 or uint8 [M, K] row-major, W int8 [K, N]
 * packed once into panels of KILN_QGEMM_NR columns, int32 accumulation, then the
 * fixed-point requantization below, fused bias and ReLU (a clamp at zp_y).
 *
 * The definition (what kiln_qgemm_naive computes and every path must reproduce):
 *   acc[m,n]   = sum_k x[m,k] * w[k,n]                        (exact, int32)
 *   total[m,n] = sat32((int64)acc[m,n] + bias_eff[n])  where
 *                bias_eff[n] = bias_q[n] - zp_x * colsum[n]    (folded at create)
 *   y[m,n]     = clamp(zp_y + kiln_q_mul(total, mult[n], shift[n]), lo, hi)
 * kiln_q_mul is TFLite's MultiplyByQuantizedMultiplier (SaturatingRoundingDoublingHighMul
 * then RoundingDivideByPOT); lo = max(qmin, zp_y) under ReLU.
 *
 * Every SIMD path computes the same integer sums (integer addition is associative)
 * and shares the plain C epilogue, so outputs are bit-identical across paths and
 * architectures. Paths that multiply in the other signedness (VNNI's u8 x s8; NEON and
 * SDOT's s8 x s8 for uint8 activations) flip the activations' top bit when packing A
 * and fold +-128 * colsum[n] into their bias. */
#ifndef KILN_INFER_QGEMM_H
#define KILN_INFER_QGEMM_H

#include <limits.h>
#include <stddef.h>
#include <stdint.h>

#include "kiln/infer.h"
#include "sgemm.h"

#define KILN_QGEMM_NR 16     /* columns per packed panel */
#define KILN_QGEMM_MAX_MR 8  /* rows per tile, at most */
#define KILN_QGEMM_MAX_K 32768 /* keeps |acc| < 2^31 for uint8 x int8 */

/* acc[r * 16 + j] = sum_k a[r * kp + k] * pb[(k / 4) * 64 + j * 4 + k % 4] for r < rows
 * (rows == mr or 1); kp is a multiple of 4; a holds the kernel's own signedness. */
typedef void (*kiln_qtile_fn)(int64_t kp, const int8_t *a, int rows, const int8_t *pb,
                              int32_t *acc);

/* Block-sparse packed W: the packed layout's 64-byte groups (4 k x 16 columns of a
 * panel) that are not all zero, panel by panel: panel p holds groups gidx[ps[p] ..
 * ps[p + 1]) (their k / 4), whose bytes are w + 64 * ps[p] on. Skipping an all-zero
 * group skips exact zero products, so the int32 sums (and outputs) are the dense ones. */
typedef struct kiln_qgemm_sparse {
  int64_t *ps;   /* panels + 1 */
  int32_t *gidx;
  int8_t *w;
  int64_t groups; /* non-zero groups in all */
} kiln_qgemm_sparse;

/* As kiln_qtile_fn over the ng non-zero groups gidx[0..ng) of one panel, bytes w. */
typedef void (*kiln_qstile_fn)(int64_t kp, const int8_t *a, int rows, const int32_t *gidx,
                               int64_t ng, const int8_t *w, int32_t *acc);

struct kiln_qgemm_args;
struct kiln_qgemm_kernel;
/* Rows [m0, m1) of the product (the driver of qgemm_driver.h built with the kernel). */
typedef void (*kiln_qrun_fn)(const struct kiln_qgemm_kernel *k, const struct kiln_qgemm_args *g,
                             int64_t m0, int64_t m1, int8_t *ws);

typedef struct kiln_qgemm_kernel {
  kiln_kernel_path path;
  const char *name;
  int mr;
  int a_unsigned; /* the kernel reads A as uint8 (VNNI) rather than int8 */
  int a_int16;    /* the driver widens A to int16 (rows of kp int16) for the tile */
  kiln_qtile_fn tile;
  kiln_qrun_fn run;
  kiln_qstile_fn stile; /* block-sparse tile, NULL: the path runs dense only */
} kiln_qgemm_kernel;

const kiln_qgemm_kernel *kiln_qgemm_kernel_ref(void);
const kiln_qgemm_kernel *kiln_qgemm_kernel_avx2(void);    /* NULL where not built */
const kiln_qgemm_kernel *kiln_qgemm_kernel_vnni(void);
const kiln_qgemm_kernel *kiln_qgemm_kernel_neon(void);
const kiln_qgemm_kernel *kiln_qgemm_kernel_dotprod(void);

/* The int8 path for a requested kernel path (AUTO: the best the CPU has; AVX512: VNNI
 * when present, else AVX2). NULL with a message when the CPU or build lacks it. */
const kiln_qgemm_kernel *kiln_qgemm_select(const kiln_cpu *cpu, kiln_kernel_path path,
                                           kiln_error *err);

/* K rounded up to a multiple of 4, and the bytes of W packed. */
static inline int64_t kiln_qgemm_kp(int64_t K) { return (K + 3) / 4 * 4; }
size_t kiln_qgemm_packed_bytes(int64_t K, int64_t N);
/* Packs W(k,n) = w[k*rsw + n*csw] (int8) and writes colsum[n] = sum_k W(k,n). */
void kiln_qgemm_pack(int64_t K, int64_t N, const int8_t *w, int64_t rsw, int64_t csw, int8_t *pb,
                     int32_t *colsum);

/* The share of all-zero groups in packed W (0 for an empty W). */
double kiln_qgemm_zero_groups(int64_t K, int64_t N, const int8_t *pb);
/* Block-sparse copy of packed W; 0, or -1 out of memory. Free with kiln_qgemm_sparse_free. */
int kiln_qgemm_sparsify(int64_t K, int64_t N, const int8_t *pb, kiln_qgemm_sparse *sp);
void kiln_qgemm_sparse_free(kiln_qgemm_sparse *sp);
/* A layer runs block-sparse when at least this share of its groups is zero and its path has
 * a sparse tile (measured: docs/int8.md). */
#define KILN_QGEMM_SPARSE_MIN 0.5

/* The fixed-point multiplier of a real multiplier m > 0: m ~= mult * 2^(shift - 31),
 * mult in [2^30, 2^31). m too small to represent gives mult = 0. */
void kiln_q_multiplier(double m, int32_t *mult, int *shift);

/* TFLite's MultiplyByQuantizedMultiplier: round(x * mult * 2^(shift - 31)), as
 * SaturatingRoundingDoublingHighMul (ties: gemmlowp's nudge) then RoundingDivideByPOT
 * (ties away from zero). Inline so each kernel file compiles it with its own ISA. */
static inline int32_t kiln_q_mul(int32_t x, int32_t mult, int shift) {
  int left = shift > 0 ? shift : 0, right = shift > 0 ? 0 : -shift;
  int64_t xl = (int64_t)x * ((int64_t)1 << left);
  xl = xl > INT32_MAX ? INT32_MAX : xl < INT32_MIN ? INT32_MIN : xl;
  int64_t ab = xl * (int64_t)mult; /* mult is never INT32_MIN: no overflow case */
  int64_t nudge = ab >= 0 ? ((int64_t)1 << 30) : (1 - ((int64_t)1 << 30));
  int64_t h = (ab + nudge) / ((int64_t)1 << 31); /* truncates toward zero, as gemmlowp */
  int64_t mask = ((int64_t)1 << right) - 1;
  int64_t rem = h & mask, thr = (mask >> 1) + (h < 0 ? 1 : 0);
  return (int32_t)((h >> right) + (rem > thr ? 1 : 0));
}

/* ONNX QuantizeLinear of one value: saturate(round_half_even(x / scale) + zp), NaN to
 * zp. Rounds with the 1.5 * 2^23 trick (exact in IEEE single precision, the default
 * rounding mode is to nearest even) after clamping to +-2^22, beyond which every
 * int8/uint8 result saturates anyway. */
static inline int32_t kiln_q_quantize(float x, float scale, int32_t zp, int32_t lo, int32_t hi) {
  float v = x / scale;
  v = v != v ? 0.0f : v;
  v = v > 4194304.0f ? 4194304.0f : v < -4194304.0f ? -4194304.0f : v;
  float r = (v + 12582912.0f) - 12582912.0f; /* kiln never builds with -ffast-math */
  int32_t q = (int32_t)r + zp;
  return q < lo ? lo : q > hi ? hi : q;
}

/* QuantizeLinear of n floats with one scale into int8/uint8 bytes (lo < 0: int8). */
typedef void (*kiln_quantize_row_fn)(const float *x, int64_t n, float scale, int32_t zp,
                                     int32_t lo, int32_t hi, uint8_t *y);
void kiln_quantize_row_ref(const float *x, int64_t n, float scale, int32_t zp, int32_t lo,
                           int32_t hi, uint8_t *y);
kiln_quantize_row_fn kiln_quantize_row_avx2(void); /* NULL where not built */
kiln_quantize_row_fn kiln_quantize_row_avx512(void); /* AVX-512F/BW; NULL where not built */

/* One int8 GEMM as the session runs it. */
typedef struct kiln_qgemm_args {
  int64_t M, N, K;
  const void *x;       /* M x K, row stride K */
  int x_unsigned;      /* x is uint8 (else int8) */
  const int8_t *pb;    /* packed W */
  const int64_t *bias; /* N: bias_eff for this kernel (see kiln_qgemm_bias) */
  const int32_t *mult; /* N */
  const int32_t *shift;/* N */
  int32_t zp_y, lo, hi;
  void *y;             /* M x N, row stride N */
  int y_unsigned;
  /* float output instead (a last layer with no QuantizeLinear after it):
   * y[m,n] = act((float)total[m,n] * yf_scale[n] + yf_bias[n]), act ReLU if yf_relu */
  int y_float;
  const float *yf_scale, *yf_bias;
  int yf_relu;
  /* float input instead (the model's QuantizeLinear fused into the first layer): x is
   * NULL and each row of xf [M, K] is quantized while A is packed, by xf_row (a path of
   * kiln_quantize_row_*, all the same bytes) with xf_scale, xf_zp into x's type */
  const float *xf;
  float xf_scale;
  int32_t xf_zp;
  kiln_quantize_row_fn xf_row;
  const kiln_qgemm_sparse *sp; /* block-sparse W instead of pb (the kernel has stile) */
} kiln_qgemm_args;

/* bias_eff[n] for kernel k: bias_q[n] - zp_x * colsum[n], plus 128 * colsum[n] when the
 * kernel flips the activations' sign bit (int8 into u8: -128, uint8 into s8: +128). */
void kiln_qgemm_bias(const kiln_qgemm_kernel *k, int x_unsigned, int64_t N, const int64_t *bias_q,
                     int32_t zp_x, const int32_t *colsum, int64_t *bias_eff);
/* Bytes of per-thread workspace (an A block, and one quantized row for a float input). */
size_t kiln_qgemm_workspace_bytes(const kiln_qgemm_kernel *k, int64_t K);
/* Rows [m0, m1) of the product. */
void kiln_qgemm_run(const kiln_qgemm_kernel *k, const kiln_qgemm_args *g, int64_t m0, int64_t m1,
                    int8_t *ws);

/* The truth: plain loops on unpacked W(k,n) = w[k*N + n], bias_q (int64) and zp_x. */
void kiln_qgemm_naive(int64_t M, int64_t N, int64_t K, const void *x, int x_unsigned, int32_t zp_x,
                      const int8_t *w, const int64_t *bias_q, const int32_t *mult,
                      const int32_t *shift, int32_t zp_y, int32_t lo, int32_t hi, void *y,
                      int y_unsigned);

#endif

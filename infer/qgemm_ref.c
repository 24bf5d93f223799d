/* kiln runtime — int8 GEMM: the plain C reference tile, the definition of the
 * requantization (TFLite's fixed-point multiplier and rounding), packing, the blocked
 * driver shared by every path (its epilogue is plain C, so paths differ only in how
 * they sum exact int32 products), the int8 path selection and the naive truth. */
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "qgemm_driver.h"

static void tile_ref(int64_t kp, const int8_t *a, int rows, const int8_t *pb, int32_t *acc) {
  for (int r = 0; r < rows; r++)
    for (int j = 0; j < KILN_QGEMM_NR; j++) {
      int32_t s = 0;
      for (int64_t k = 0; k < kp; k++)
        s += (int32_t)a[r * kp + k] * (int32_t)pb[(k / 4) * 4 * KILN_QGEMM_NR + j * 4 + k % 4];
      acc[r * KILN_QGEMM_NR + j] = s;
    }
}

/* The block-sparse tile: the same sums over the non-zero groups only. */
static void stile_ref(int64_t kp, const int8_t *a, int rows, const int32_t *gidx, int64_t ng,
                      const int8_t *w, int32_t *acc) {
  for (int r = 0; r < rows; r++)
    for (int j = 0; j < KILN_QGEMM_NR; j++) {
      int32_t s = 0;
      for (int64_t i = 0; i < ng; i++)
        for (int t = 0; t < 4; t++)
          s += (int32_t)a[r * kp + (int64_t)gidx[i] * 4 + t] * (int32_t)w[i * 4 * KILN_QGEMM_NR + j * 4 + t];
      acc[r * KILN_QGEMM_NR + j] = s;
    }
}

static void run_ref(const kiln_qgemm_kernel *k, const kiln_qgemm_args *g, int64_t m0, int64_t m1,
                    int8_t *ws);
static const kiln_qgemm_kernel ref_kernel = {KILN_KERNEL_REF, "ref", 4, 0, 0, tile_ref, run_ref, stile_ref};
const kiln_qgemm_kernel *kiln_qgemm_kernel_ref(void) { return &ref_kernel; }

const kiln_qgemm_kernel *kiln_qgemm_select(const kiln_cpu *cpu, kiln_kernel_path path,
                                           kiln_error *err) {
  const kiln_qgemm_kernel *k = NULL;
  switch (path) {
    case KILN_KERNEL_AUTO:
      if (cpu->avx512vnni && (k = kiln_qgemm_kernel_vnni())) return k;
      if (cpu->avx2_fma && (k = kiln_qgemm_kernel_avx2())) return k;
      if (cpu->dotprod && (k = kiln_qgemm_kernel_dotprod())) return k;
      if (cpu->neon && (k = kiln_qgemm_kernel_neon())) return k;
      return &ref_kernel;
    case KILN_KERNEL_REF: return &ref_kernel;
    case KILN_KERNEL_AVX2:
    case KILN_KERNEL_AVX512:
      if (path == KILN_KERNEL_AVX512 && cpu->avx512vnni && (k = kiln_qgemm_kernel_vnni())) return k;
      if (cpu->avx2_fma && (k = kiln_qgemm_kernel_avx2())) return k;
      break;
    case KILN_KERNEL_VNNI:
      if (cpu->avx512vnni && (k = kiln_qgemm_kernel_vnni())) return k;
      break;
    case KILN_KERNEL_NEON:
      if (cpu->neon && (k = kiln_qgemm_kernel_neon())) return k;
      break;
    case KILN_KERNEL_DOTPROD:
      if (cpu->dotprod && (k = kiln_qgemm_kernel_dotprod())) return k;
      break;
    default:
      kiln_error_set(err, KILN_E_INVALID,
                     "kernel path %d is not one of AUTO, REF, AVX2, AVX512, NEON, VNNI, DOTPROD",
                     (int)path);
      return NULL;
  }
  kiln_error_set(err, KILN_E_UNSUPPORTED,
                 "int8 kernel path %d was requested, but this CPU (or build) lacks it; use "
                 "KILN_KERNEL_AUTO or REF", (int)path);
  return NULL;
}

size_t kiln_qgemm_packed_bytes(int64_t K, int64_t N) {
  int64_t P = (N + KILN_QGEMM_NR - 1) / KILN_QGEMM_NR;
  return (size_t)(P * kiln_qgemm_kp(K) * KILN_QGEMM_NR);
}

void kiln_qgemm_pack(int64_t K, int64_t N, const int8_t *w, int64_t rsw, int64_t csw, int8_t *pb,
                     int32_t *colsum) {
  int64_t kp = kiln_qgemm_kp(K), P = (N + KILN_QGEMM_NR - 1) / KILN_QGEMM_NR;
  for (int64_t n = 0; n < N; n++) {
    int32_t s = 0;
    for (int64_t k = 0; k < K; k++) s += w[k * rsw + n * csw];
    if (colsum) colsum[n] = s;
  }
  for (int64_t p = 0; p < P; p++) {
    int8_t *dst = pb + p * kp * KILN_QGEMM_NR;
    for (int64_t g = 0; g < kp / 4; g++)
      for (int j = 0; j < KILN_QGEMM_NR; j++)
        for (int t = 0; t < 4; t++) {
          int64_t k = g * 4 + t, n = p * KILN_QGEMM_NR + j;
          dst[g * 4 * KILN_QGEMM_NR + j * 4 + t] = (k < K && n < N) ? w[k * rsw + n * csw] : 0;
        }
  }
}

static int group_zero(const int8_t *grp) {
  for (int i = 0; i < 4 * KILN_QGEMM_NR; i++)
    if (grp[i]) return 0;
  return 1;
}

double kiln_qgemm_zero_groups(int64_t K, int64_t N, const int8_t *pb) {
  int64_t G = kiln_qgemm_kp(K) / 4, P = (N + KILN_QGEMM_NR - 1) / KILN_QGEMM_NR, z = 0;
  for (int64_t i = 0; i < P * G; i++) z += group_zero(pb + i * 4 * KILN_QGEMM_NR);
  return P * G > 0 ? (double)z / (double)(P * G) : 0.0;
}

int kiln_qgemm_sparsify(int64_t K, int64_t N, const int8_t *pb, kiln_qgemm_sparse *sp) {
  int64_t G = kiln_qgemm_kp(K) / 4, P = (N + KILN_QGEMM_NR - 1) / KILN_QGEMM_NR, nz = 0;
  memset(sp, 0, sizeof *sp);
  for (int64_t i = 0; i < P * G; i++) nz += !group_zero(pb + i * 4 * KILN_QGEMM_NR);
  sp->ps = malloc((size_t)(P + 1) * sizeof(int64_t));
  sp->gidx = malloc((size_t)(nz ? nz : 1) * sizeof(int32_t));
  sp->w = aligned_alloc(64, (size_t)(nz ? nz : 1) * 4 * KILN_QGEMM_NR);
  if (!sp->ps || !sp->gidx || !sp->w) {
    kiln_qgemm_sparse_free(sp);
    return -1;
  }
  int64_t c = 0;
  for (int64_t p = 0; p < P; p++) {
    sp->ps[p] = c;
    for (int64_t gi = 0; gi < G; gi++) {
      const int8_t *grp = pb + (p * G + gi) * 4 * KILN_QGEMM_NR;
      if (group_zero(grp)) continue;
      sp->gidx[c] = (int32_t)gi;
      memcpy(sp->w + c * 4 * KILN_QGEMM_NR, grp, 4 * KILN_QGEMM_NR);
      c++;
    }
  }
  sp->ps[P] = c;
  sp->groups = c;
  return 0;
}

void kiln_qgemm_sparse_free(kiln_qgemm_sparse *sp) {
  if (!sp) return;
  free(sp->ps);
  free(sp->gidx);
  free(sp->w);
  memset(sp, 0, sizeof *sp);
}

/* --- requantization: the definition ------------------------------------------- */

void kiln_q_multiplier(double m, int32_t *mult, int *shift) {
  *mult = 0;
  *shift = 0;
  if (!(m > 0.0) || !isfinite(m)) return;
  int e;
  double q = frexp(m, &e); /* m = q * 2^e, q in [0.5, 1): exact */
  long long qf = llround(q * 2147483648.0);
  if (qf == 2147483648LL) {
    qf /= 2;
    e++;
  }
  if (e < -31) return; /* below 2^-32: every int32 rounds to 0 */
  if (e > 30) {        /* beyond any useful range: saturate */
    qf = INT32_MAX;
    e = 30;
  }
  *mult = (int32_t)qf;
  *shift = e;
}

void kiln_quantize_row_ref(const float *x, int64_t n, float scale, int32_t zp, int32_t lo,
                           int32_t hi, uint8_t *y) {
  for (int64_t i = 0; i < n; i++) y[i] = (uint8_t)kiln_q_quantize(x[i], scale, zp, lo, hi);
}

/* --- the driver ------------------------------------------------------------------ */

void kiln_qgemm_bias(const kiln_qgemm_kernel *k, int x_unsigned, int64_t N, const int64_t *bias_q,
                     int32_t zp_x, const int32_t *colsum, int64_t *bias_eff) {
  /* A kernel reading the other signedness sees x' = x ^ 0x80 = x -+ 128. */
  int64_t corr = k->a_unsigned == x_unsigned ? 0 : (x_unsigned ? 128 : -128);
  for (int64_t n = 0; n < N; n++)
    bias_eff[n] = (bias_q ? bias_q[n] : 0) - (int64_t)zp_x * colsum[n] + corr * colsum[n];
}

size_t kiln_qgemm_workspace_bytes(const kiln_qgemm_kernel *k, int64_t K) {
  return (size_t)(k->mr * kiln_qgemm_kp(K)) * (k->a_int16 ? 2 : 1) + (size_t)kiln_qgemm_kp(K) + 128;
}

void kiln_qgemm_run(const kiln_qgemm_kernel *k, const kiln_qgemm_args *g, int64_t m0, int64_t m1,
                    int8_t *ws) {
  k->run(k, g, m0, m1, ws);
}

static void run_ref(const kiln_qgemm_kernel *k, const kiln_qgemm_args *g, int64_t m0, int64_t m1,
                    int8_t *ws) {
  qgemm_drive(k, g, m0, m1, ws, tile_ref, NULL, stile_ref, NULL);
}

void kiln_qgemm_naive(int64_t M, int64_t N, int64_t K, const void *x, int x_unsigned, int32_t zp_x,
                      const int8_t *w, const int64_t *bias_q, const int32_t *mult,
                      const int32_t *shift, int32_t zp_y, int32_t lo, int32_t hi, void *y,
                      int y_unsigned) {
  for (int64_t m = 0; m < M; m++)
    for (int64_t n = 0; n < N; n++) {
      int64_t t = bias_q ? bias_q[n] : 0;
      for (int64_t k = 0; k < K; k++) {
        int32_t xv = x_unsigned ? ((const uint8_t *)x)[m * K + k] : ((const int8_t *)x)[m * K + k];
        t += (int64_t)(xv - zp_x) * w[k * N + n];
      }
      if (t > INT32_MAX) t = INT32_MAX;
      if (t < INT32_MIN) t = INT32_MIN;
      int64_t v = (int64_t)zp_y + kiln_q_mul((int32_t)t, mult[n], shift[n]);
      v = v < lo ? lo : v > hi ? hi : v;
      if (y_unsigned) ((uint8_t *)y)[m * N + n] = (uint8_t)v;
      else ((int8_t *)y)[m * N + n] = (int8_t)v;
    }
}

/* kiln runtime — the int8 GEMM driver, included by each qgemm_*.c so that it is
 * compiled with that file's instruction set (the same C, so the same integers): pack
 * a block of A rows (flipping the sign bit when the kernel reads the other
 * signedness, zero-padding K to a multiple of 4), run the tile over every W panel,
 * then the requantizing epilogue of qgemm.h. A file may supply a faster store of
 * whole 16-column panels (QGEMM_STORE_PANEL) computing the same integer formula. */
#ifndef KILN_INFER_QGEMM_DRIVER_H
#define KILN_INFER_QGEMM_DRIVER_H

#include <string.h>

#include "qgemm.h"

/* The epilogue for rows x ncols of a tile: y = clamp(zp_y + q_mul(sat32(acc + bias))). */
static inline void qgemm_store_scalar(const kiln_qgemm_args *g, const int32_t *acc, int64_t m,
                                      int rows, int64_t n0, int ncols) {
  for (int r = 0; r < rows; r++) {
    int8_t *ys = (int8_t *)g->y + (m + r) * g->N + n0;
    for (int j = 0; j < ncols; j++) {
      int64_t n = n0 + j;
      int64_t t = (int64_t)acc[r * KILN_QGEMM_NR + j] + g->bias[n];
      t = t > INT32_MAX ? INT32_MAX : t < INT32_MIN ? INT32_MIN : t;
      int64_t v = (int64_t)g->zp_y + kiln_q_mul((int32_t)t, g->mult[n], g->shift[n]);
      v = v < g->lo ? g->lo : v > g->hi ? g->hi : v;
      ys[j] = (int8_t)(uint8_t)v; /* the low byte: int8 or uint8 alike */
    }
  }
}

/* The float epilogue: y = act((float)sat32(acc + bias) * yf_scale + yf_bias), each a
 * separate IEEE operation (kiln builds in ISO C mode: no contraction into FMA). */
static inline void qgemm_store_float(const kiln_qgemm_args *g, const int32_t *acc, int64_t m,
                                     int rows, int64_t n0, int ncols) {
  for (int r = 0; r < rows; r++) {
    float *ys = (float *)g->y + (m + r) * g->N + n0;
    for (int j = 0; j < ncols; j++) {
      int64_t n = n0 + j;
      int64_t t = (int64_t)acc[r * KILN_QGEMM_NR + j] + g->bias[n];
      t = t > INT32_MAX ? INT32_MAX : t < INT32_MIN ? INT32_MIN : t;
      float v = (float)(int32_t)t * g->yf_scale[n];
      v = v + g->yf_bias[n];
      ys[j] = g->yf_relu && v < 0.0f ? 0.0f : v;
    }
  }
}

static inline __attribute__((always_inline)) void qgemm_drive(
    const kiln_qgemm_kernel *k, const kiln_qgemm_args *g, int64_t m0, int64_t m1, int8_t *ws,
    kiln_qtile_fn tile,
    void (*tile2)(int64_t, const int8_t *, int, const int8_t *, const int8_t *, int32_t *, int32_t *),
    kiln_qstile_fn stile,
    void (*store_panel)(const kiln_qgemm_args *, const int32_t *, int64_t, int, int64_t)) {
  int64_t K = g->K, kp = kiln_qgemm_kp(K), P = (g->N + KILN_QGEMM_NR - 1) / KILN_QGEMM_NR;
  uint8_t flip = k->a_unsigned != g->x_unsigned ? 0x80 : 0;
  int32_t acc[KILN_QGEMM_MAX_MR * KILN_QGEMM_NR], acc2[KILN_QGEMM_MAX_MR * KILN_QGEMM_NR];
  /* a float input is quantized straight into the kernel's signedness: x ^ 0x80 is
   * x -+ 128, so zero point and range move by the same 128 */
  int32_t adj = flip ? (k->a_unsigned ? 128 : -128) : 0;
  int32_t qlo = (g->x_unsigned ? 0 : -128) + adj, qhi = (g->x_unsigned ? 255 : 127) + adj;
  uint8_t *qrow = (uint8_t *)ws + (size_t)(k->mr * kp) * (k->a_int16 ? 2 : 1) + 64;
  for (int64_t m = m0; m < m1; m += k->mr) {
    int rows = (int)(m1 - m < k->mr ? m1 - m : k->mr);
    int trows = rows == 1 ? 1 : k->mr; /* a partial block computes zero rows */
    for (int r = 0; r < trows; r++) {
      const uint8_t *src = r < rows && g->x ? (const uint8_t *)g->x + (m + r) * K : NULL;
      uint8_t f = flip;
      if (g->xf && r < rows) {
        uint8_t *dst = k->a_int16 ? qrow : (uint8_t *)ws + r * kp;
        g->xf_row(g->xf + (m + r) * K, K, g->xf_scale, g->xf_zp + adj, qlo, qhi, dst);
        if (!k->a_int16) {
          for (int64_t kk = K; kk < kp; kk++) dst[kk] = 0;
          continue;
        }
        src = qrow;
        f = 0; /* already in the kernel's signedness */
      }
      if (k->a_int16) { /* widened: the int8 value of x ^ flip */
        int16_t *dst = (int16_t *)(void *)ws + r * kp;
        int64_t n = r < rows ? K : 0;
        for (int64_t kk = 0; kk < n; kk++) dst[kk] = (int8_t)(src[kk] ^ f);
        for (int64_t kk = n; kk < kp; kk++) dst[kk] = 0;
        continue;
      }
      uint8_t *dst = (uint8_t *)ws + r * kp;
      if (r < rows) {
        for (int64_t kk = 0; kk < K; kk++) dst[kk] = src[kk] ^ flip;
        for (int64_t kk = K; kk < kp; kk++) dst[kk] = 0;
      } else {
        memset(dst, 0, (size_t)kp);
      }
    }
    for (int64_t p = 0; p < P; p++) {
      /* two full panels at once where the kernel has a wider tile (dense W only) */
      if (tile2 && !(stile && g->sp) && p + 1 < P && g->N - (p + 1) * KILN_QGEMM_NR >= KILN_QGEMM_NR) {
        tile2(kp, ws, trows, g->pb + p * kp * KILN_QGEMM_NR, g->pb + (p + 1) * kp * KILN_QGEMM_NR, acc,
              acc2);
        for (int h = 0; h < 2; h++) {
          const int32_t *ah = h ? acc2 : acc;
          int64_t n0 = (p + h) * KILN_QGEMM_NR;
          if (g->y_float) qgemm_store_float(g, ah, m, rows, n0, KILN_QGEMM_NR);
          else if (store_panel) store_panel(g, ah, m, rows, n0);
          else qgemm_store_scalar(g, ah, m, rows, n0, KILN_QGEMM_NR);
        }
        p++;
        continue;
      }
      if (stile && g->sp) {
        int64_t a0 = g->sp->ps[p];
        stile(kp, ws, trows, g->sp->gidx + a0, g->sp->ps[p + 1] - a0, g->sp->w + a0 * 4 * KILN_QGEMM_NR,
              acc);
      } else {
        tile(kp, ws, trows, g->pb + p * kp * KILN_QGEMM_NR, acc);
      }
      int64_t n0 = p * KILN_QGEMM_NR;
      int ncols = (int)(g->N - n0 < KILN_QGEMM_NR ? g->N - n0 : KILN_QGEMM_NR);
      if (g->y_float) qgemm_store_float(g, acc, m, rows, n0, ncols);
      else if (store_panel && ncols == KILN_QGEMM_NR) store_panel(g, acc, m, rows, n0);
      else qgemm_store_scalar(g, acc, m, rows, n0, ncols);
    }
  }
}

#endif

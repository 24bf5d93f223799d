/* kiln quantize — magnitude pruning of the matrix-product weights, and their compact
 * storage as a bitmap + packed non-zeros that standard ONNX ops expand at load time.
 *
 * Why not SparseTensorProto: kiln's writer (export/onnx_write.c) does not write
 * sparse_initializer, and its indices must be int64 (8 bytes per non-zero), which
 * for int8 values at 80% sparsity is larger than the dense int8 tensor. A bitmap
 * costs 1 bit per element: 0.125 + 0.2 bytes per int8 weight at 80% sparsity. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "qz_internal.h"

void kiln_prune_options_init(kiln_prune_options *opt) {
  memset(opt, 0, sizeof *opt);
  opt->sparsity = 0.5;
}

void kiln_prune_result_free(kiln_prune_result *r) {
  if (!r) return;
  free(r->layers);
  memset(r, 0, sizeof *r);
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

/* The k-th smallest (0-based) of v[0..n) (sorts a copy). */
static kiln_status kth(const double *v, int64_t n, int64_t k, double *out, kiln_error *err) {
  double *c = malloc((size_t)(n ? n : 1) * sizeof *c);
  if (!c) return kiln_error_set(err, KILN_E_NOMEM, "prune: out of memory");
  memcpy(c, v, (size_t)n * sizeof *c);
  qsort(c, (size_t)n, sizeof *c, cmp_double);
  *out = c[k];
  free(c);
  return KILN_OK;
}

typedef struct ptarget {
  kiln_ir_tensor *w;
  int axis; /* output-channel axis */
} ptarget;

/* Zeroes the entries (or columns) whose score is below thr, and at most `budget`
 * entries with score == thr (ties), so the count is exact. */
/* Blocks of block_k inputs x block_n outputs of a weight: W(k, n) is v[k * N + n] for a
 * [K, N] weight (axis 1), v[n * K + k] for a transB [N, K] one. Block b covers inputs
 * from (b / nbn) * block_k and outputs from (b % nbn) * block_n (edge blocks smaller). */
static int64_t n_blocks(const ptarget *t, const kiln_prune_options *o) {
  int64_t K = t->w->dims[t->axis == 1 ? 0 : 1], N = t->w->dims[t->axis == 1 ? 1 : 0];
  return ((K + o->block_k - 1) / o->block_k) * ((N + o->block_n - 1) / o->block_n);
}

/* Visits block b: adds its squares to *ss (if given), zeroes it (if zero); returns its size. */
static int64_t block_each(const ptarget *t, const kiln_prune_options *o, int64_t b, double *ss,
                          int zero) {
  int64_t K = t->w->dims[t->axis == 1 ? 0 : 1], N = t->w->dims[t->axis == 1 ? 1 : 0];
  int64_t nbn = (N + o->block_n - 1) / o->block_n;
  int64_t k0 = (b / nbn) * o->block_k, n0 = (b % nbn) * o->block_n, cnt = 0;
  float *v = t->w->data;
  for (int64_t k = k0; k < k0 + o->block_k && k < K; k++)
    for (int64_t n = n0; n < n0 + o->block_n && n < N; n++) {
      int64_t e = t->axis == 1 ? k * N + n : n * K + k;
      if (ss) *ss += (double)v[e] * (double)v[e];
      if (zero) v[e] = 0.0f;
      cnt++;
    }
  return cnt;
}

static double block_rms(const ptarget *t, const kiln_prune_options *o, int64_t b) {
  double ss = 0;
  int64_t cnt = block_each(t, o, b, &ss, 0);
  return cnt ? sqrt(ss / (double)cnt) : 0.0;
}

static void block_zero(const ptarget *t, const kiln_prune_options *o, int64_t b) {
  block_each(t, o, b, NULL, 1);
}

kiln_status kiln_prune(kiln_ir_graph *g, const kiln_prune_options *opt,
                       kiln_prune_result *result, kiln_error *err) {
  if (result) memset(result, 0, sizeof *result);
  if (!g || !opt) return kiln_error_set(err, KILN_E_INVALID, "prune: NULL argument");
  if (!(opt->sparsity >= 0.0 && opt->sparsity < 1.0))
    return kiln_error_set(err, KILN_E_RANGE, "prune: sparsity %g is outside [0, 1)",
                          opt->sparsity);
  int block = opt->block_k > 0 || opt->block_n > 0;
  if (block && (opt->block_k < 1 || opt->block_n < 1 || opt->block_k > 65536 || opt->block_n > 65536))
    return kiln_error_set(err, KILN_E_RANGE, "prune: block %d x %d: both sides must be in [1, 65536]",
                          opt->block_k, opt->block_n);
  if (block && opt->structured)
    return kiln_error_set(err, KILN_E_INVALID, "prune: block and structured pruning exclude each other");
  ptarget *t = calloc((size_t)(g->n_nodes ? g->n_nodes : 1), sizeof *t);
  if (!t) return kiln_error_set(err, KILN_E_NOMEM, "prune: out of memory");
  int nt = 0;
  for (int i = 0; i < g->n_nodes; i++) {
    const kiln_ir_tensor *w = qz_weight(g, &g->nodes[i]);
    if (!w) continue;
    int dup = 0;
    for (int k = 0; k < nt; k++) dup |= t[k].w == w;
    if (dup) continue;
    t[nt].w = (kiln_ir_tensor *)w;
    t[nt].axis = qz_attr_int(&g->nodes[i], "transB", 0) ? 0 : 1;
    nt++;
  }
  if (opt->skip_last && nt > 0) nt--;
  kiln_status s = KILN_OK;
  /* scores: |w| per entry, or the RMS of a column (structured) */
  int64_t total = 0;
  for (int k = 0; k < nt; k++)
    total += block ? n_blocks(&t[k], opt) : opt->structured ? t[k].w->dims[t[k].axis]
                                                             : kiln_ir_tensor_numel(t[k].w);
  double *score = malloc((size_t)(total ? total : 1) * sizeof *score);
  if (!score) {
    free(t);
    return kiln_error_set(err, KILN_E_NOMEM, "prune: out of memory");
  }
  int64_t off = 0;
  for (int k = 0; k < nt; k++) {
    const float *v = t[k].w->data;
    int64_t R = t[k].w->dims[0], C = t[k].w->dims[1];
    if (block) {
      int64_t nb = n_blocks(&t[k], opt);
      for (int64_t b = 0; b < nb; b++) score[off + b] = block_rms(&t[k], opt, b);
      off += nb;
    } else if (!opt->structured) {
      for (int64_t e = 0; e < R * C; e++) score[off + e] = fabs((double)v[e]);
      off += R * C;
    } else {
      int64_t ch = t[k].axis == 1 ? C : R, len = t[k].axis == 1 ? R : C;
      for (int64_t j = 0; j < ch; j++) {
        double ss = 0;
        for (int64_t e = 0; e < len; e++) {
          double x = t[k].axis == 1 ? v[e * C + j] : v[j * C + e];
          ss += x * x;
        }
        score[off + j] = sqrt(ss / (double)len);
      }
      off += ch;
    }
  }
  /* per tensor (or global) thresholds, then zero */
  off = 0;
  int64_t gk = (int64_t)floor(opt->sparsity * (double)total + 1e-9);
  double gthr = -1;
  int64_t gbudget = 0;
  if (opt->global && gk > 0) {
    if ((s = kth(score, total, gk - 1, &gthr, err))) goto done;
    int64_t below = 0;
    for (int64_t e = 0; e < total; e++) below += score[e] < gthr;
    gbudget = gk - below;
  }
  if (result) {
    result->layers = calloc((size_t)(nt ? nt : 1), sizeof *result->layers);
    if (!result->layers) {
      s = kiln_error_set(err, KILN_E_NOMEM, "prune: out of memory");
      goto done;
    }
    result->n = nt;
  }
  for (int k = 0; k < nt; k++) {
    float *v = t[k].w->data;
    int64_t R = t[k].w->dims[0], C = t[k].w->dims[1];
    int64_t n = block ? n_blocks(&t[k], opt) : opt->structured ? (t[k].axis == 1 ? C : R) : R * C;
    double thr = gthr;
    int64_t budget = gbudget, *bp = &gbudget;
    if (!opt->global) {
      int64_t kk = (int64_t)floor(opt->sparsity * (double)n + 1e-9);
      thr = -1;
      budget = 0;
      if (kk > 0) {
        if ((s = kth(score + off, n, kk - 1, &thr, err))) goto done;
        int64_t below = 0;
        for (int64_t e = 0; e < n; e++) below += score[off + e] < thr;
        budget = kk - below;
      }
      bp = &budget;
    }
    for (int64_t e = 0; e < n; e++) {
      double sc = score[off + e];
      int cut = sc < thr || (sc == thr && *bp > 0);
      if (sc == thr && *bp > 0) (*bp)--;
      if (!cut) continue;
      if (block) block_zero(&t[k], opt, e);
      else if (!opt->structured) v[e] = 0.0f;
      else if (t[k].axis == 1)
        for (int64_t r = 0; r < R; r++) v[r * C + e] = 0.0f;
      else
        for (int64_t c = 0; c < C; c++) v[e * C + c] = 0.0f;
    }
    off += n;
    if (result) {
      kiln_prune_layer *L = &result->layers[k];
      snprintf(L->initializer, sizeof L->initializer, "%s", t[k].w->name);
      L->numel = R * C;
      for (int64_t e = 0; e < R * C; e++) L->zeros += v[e] == 0.0f;
      L->columns = t[k].axis == 1 ? C : R;
      for (int64_t j = 0; j < L->columns; j++) {
        int all = 1;
        for (int64_t e = 0; e < (t[k].axis == 1 ? R : C) && all; e++)
          all = (t[k].axis == 1 ? v[e * C + j] : v[j * C + e]) == 0.0f;
        L->zero_columns += all;
      }
      result->numel += L->numel;
      result->zeros += L->zeros;
    }
  }
done:
  free(score);
  free(t);
  if (s && result) kiln_prune_result_free(result);
  return s;
}

/* --- sparse storage ------------------------------------------------------------- */

#define SP_BITMAP ".kiln_sparse_bitmap"
#define SP_VALUES ".kiln_sparse_values"
#define SP_AUX ".kiln_sparse_"
#define SP_NODE "/kiln_sparse/"

static int is_weight_name(const kiln_ir_graph *g, const char *name) {
  for (int i = 0; i < g->n_nodes; i++) {
    const kiln_ir_node *n = &g->nodes[i];
    if ((qz_op(n, "Gemm") || qz_op(n, "MatMul") || qz_op(n, "MatMulInteger") ||
         qz_op(n, "QLinearMatMul") || qz_op(n, "DequantizeLinear")) &&
        n->n_inputs > 0) {
      int k = qz_op(n, "QLinearMatMul") ? 3 : qz_op(n, "DequantizeLinear") ? 0 : 1;
      if (n->n_inputs > k && strcmp(n->inputs[k], name) == 0) {
        if (qz_op(n, "DequantizeLinear")) {
          /* only the weight's DequantizeLinear (its output feeds a product's input 1) */
          int last;
          if (qz_consumers(g, n->outputs[0], &last) < 1) return 0;
          const kiln_ir_node *m = &g->nodes[last];
          return (qz_op(m, "Gemm") || qz_op(m, "MatMul")) && m->n_inputs > 1 &&
                 strcmp(m->inputs[1], n->outputs[0]) == 0;
        }
        return 1;
      }
    }
  }
  return 0;
}

static int64_t count_zeros(const kiln_ir_tensor *t) {
  int64_t n = kiln_ir_tensor_numel(t), z = 0;
  size_t es = kiln_dtype_size(t->dtype);
  const unsigned char *p = t->data;
  for (int64_t i = 0; i < n; i++) {
    int zero = 1;
    if (t->dtype == KILN_DTYPE_FLOAT) {
      float f;
      memcpy(&f, p + i * es, sizeof f);
      zero = f == 0.0f;
    } else {
      for (size_t b = 0; b < es; b++) zero &= p[i * es + b] == 0;
    }
    z += zero;
  }
  return z;
}

static kiln_status pack_one(kiln_ir_graph *o, const kiln_ir_tensor *t, kiln_error *err) {
  int64_t n = kiln_ir_tensor_numel(t), nb = (n + 7) / 8, nz = n - count_zeros(t);
  size_t es = kiln_dtype_size(t->dtype);
  uint8_t *bm = calloc((size_t)nb, 1);
  unsigned char *vals = calloc((size_t)(nz + 1), es);
  if (!bm || !vals) {
    free(bm);
    free(vals);
    return kiln_error_set(err, KILN_E_NOMEM, "sparse pack: out of memory");
  }
  const unsigned char *p = t->data;
  int64_t k = 1;
  for (int64_t i = 0; i < n; i++) {
    int zero = 1;
    if (t->dtype == KILN_DTYPE_FLOAT) {
      float f;
      memcpy(&f, p + i * es, sizeof f);
      zero = f == 0.0f;
    } else {
      for (size_t b = 0; b < es; b++) zero &= p[i * es + b] == 0;
    }
    if (zero) continue;
    bm[i / 8] |= (uint8_t)(1u << (i % 8));
    memcpy(vals + k * es, p + i * es, es);
    k++;
  }
  char nm[8][320], node[320];
  const char *W = t->name;
  snprintf(nm[0], sizeof nm[0], "%s" SP_BITMAP, W);
  snprintf(nm[1], sizeof nm[1], "%s" SP_VALUES, W);
  snprintf(nm[2], sizeof nm[2], "%s" SP_AUX "shifts", W);
  snprintf(nm[3], sizeof nm[3], "%s" SP_AUX "two", W);
  snprintf(nm[4], sizeof nm[4], "%s" SP_AUX "flat", W);
  snprintf(nm[5], sizeof nm[5], "%s" SP_AUX "axis", W);
  snprintf(nm[6], sizeof nm[6], "%s" SP_AUX "end", W);
  snprintf(nm[7], sizeof nm[7], "%s" SP_AUX "shape", W);
  int64_t bdims[2] = {nb, 1}, sdims[2] = {1, 8}, one = 1, nvals = nz + 1;
  uint8_t shifts[8] = {0, 1, 2, 3, 4, 5, 6, 7}, two = 2;
  int64_t flat = nb * 8, axis = 0, end = n, zero64 = 0;
  (void)zero64;
  kiln_status s;
  if ((s = kiln_ir_add_initializer(o, nm[0], KILN_DTYPE_UINT8, bdims, 2, bm, err)) ||
      (s = kiln_ir_add_initializer(o, nm[1], t->dtype, &nvals, 1, vals, err)) ||
      (s = kiln_ir_add_initializer(o, nm[2], KILN_DTYPE_UINT8, sdims, 2, shifts, err)) ||
      (s = kiln_ir_add_initializer(o, nm[3], KILN_DTYPE_UINT8, NULL, 0, &two, err)) ||
      (s = kiln_ir_add_initializer(o, nm[4], KILN_DTYPE_INT64, &one, 1, &flat, err)) ||
      (s = kiln_ir_add_initializer(o, nm[5], KILN_DTYPE_INT64, NULL, 0, &axis, err)) ||
      (s = kiln_ir_add_initializer(o, nm[6], KILN_DTYPE_INT64, &one, 1, &end, err)) ||
      (s = kiln_ir_add_initializer(o, nm[7], KILN_DTYPE_INT64, (int64_t[]){t->rank}, 1, t->dims,
                                   err)))
    goto done;
  /* bits = (bitmap >> [0..7]) mod 2, flattened; idx = cumsum(bits) * bits; W = values[idx] */
  struct step {
    const char *op, *tag;
    const char *in[3];
    int n_in;
    const char *out;
  };
  char v[8][320];
  const char *tags[8] = {"shifted", "bits8", "bits_flat", "bits", "csum", "idx", "gathered",
                         "sliced"};
  for (int i = 0; i < 8; i++) snprintf(v[i], sizeof v[i], "%s" SP_NODE "%s", W, tags[i]);
  /* Slice to n then Reshape: the bitmap has ceil(n/8)*8 slots */
  struct step steps[9] = {
      {"BitShift", "BitShift", {nm[0], nm[2]}, 2, v[0]},
      {"Mod", "Mod", {v[0], nm[3]}, 2, v[1]},
      {"Reshape", "Flatten", {v[1], nm[4]}, 2, v[2]},
      {"Cast", "Cast", {v[2]}, 1, v[3]},
      {"CumSum", "CumSum", {v[3], nm[5]}, 2, v[4]},
      {"Mul", "Index", {v[4], v[3]}, 2, v[5]},
      {"Gather", "Gather", {nm[1], v[5]}, 2, v[6]},
      {"Slice", "Slice", {v[6], nm[5], nm[6]}, 3, v[7]},
      {"Reshape", "Reshape", {v[7], nm[7]}, 2, W},
  };
  /* Slice's starts: a [1] zero; reuse "axis" is rank 0, so add a [1] zero */
  char st[320];
  snprintf(st, sizeof st, "%s" SP_AUX "start", W);
  int64_t zero1 = 0;
  if ((s = kiln_ir_add_initializer(o, st, KILN_DTYPE_INT64, &one, 1, &zero1, err))) goto done;
  steps[7].in[1] = st;
  for (int i = 0; i < 9; i++) {
    kiln_ir_node *nd = NULL;
    snprintf(node, sizeof node, "%s" SP_NODE "%s", W, steps[i].tag);
    const char *outs[1] = {steps[i].out};
    if ((s = kiln_ir_add_node(o, steps[i].op, node, steps[i].in, steps[i].n_in, outs, 1, &nd,
                              err)))
      goto done;
    if (i == 0) s = kiln_ir_node_set_string(nd, "direction", "RIGHT", err);
    if (i == 3) s = kiln_ir_node_set_int(nd, "to", KILN_DTYPE_INT64, err);
    if (s) goto done;
  }
done:
  free(bm);
  free(vals);
  return s;
}

kiln_status kiln_sparse_pack(kiln_ir_graph *g, double min_sparsity, int *packed,
                             kiln_error *err) {
  if (packed) *packed = 0;
  if (!g) return kiln_error_set(err, KILN_E_INVALID, "sparse pack: graph is NULL");
  kiln_ir_graph *o = NULL;
  kiln_status s = qz_clone(g, 1, 0, &o, err);
  if (s) return s;
  if (kiln_ir_opset_version(o, "") < 13 && (s = kiln_ir_set_opset(o, "", 13, err))) goto fail;
  int count = 0;
  for (int i = 0; i < g->n_initializers; i++) {
    const kiln_ir_tensor *t = &g->initializers[i];
    int64_t n = kiln_ir_tensor_numel(t);
    int fits = (t->dtype == KILN_DTYPE_FLOAT || t->dtype == KILN_DTYPE_INT8) && t->rank >= 1 &&
               n >= 64 && is_weight_name(g, t->name) &&
               (double)count_zeros(t) >= min_sparsity * (double)n;
    if (fits) {
      if ((s = pack_one(o, t, err))) goto fail;
      count++;
    } else if ((s = kiln_ir_add_initializer(o, t->name, t->dtype, t->dims, t->rank, t->data, err))) {
      goto fail;
    }
  }
  if ((s = kiln_ir_toposort(o, err))) goto fail;
  qz_replace(g, o);
  if (packed) *packed = count;
  return KILN_OK;
fail:
  kiln_ir_free(o);
  return s;
}

static int has_suffix(const char *s, const char *suf) {
  size_t a = strlen(s), b = strlen(suf);
  return a >= b && strcmp(s + a - b, suf) == 0;
}

kiln_status kiln_sparse_unpack(kiln_ir_graph *g, int *unpacked, kiln_error *err) {
  if (unpacked) *unpacked = 0;
  if (!g) return kiln_error_set(err, KILN_E_INVALID, "sparse unpack: graph is NULL");
  kiln_ir_graph *o = NULL;
  kiln_status s = qz_clone(g, 0, 0, &o, err);
  if (s) return s;
  int count = 0;
  for (int i = 0; i < g->n_nodes; i++)
    if (!strstr(g->nodes[i].name, SP_NODE) && (s = qz_copy_node(o, &g->nodes[i], NULL, err)))
      goto fail;
  for (int i = 0; i < g->n_initializers && !s; i++) {
    const kiln_ir_tensor *t = &g->initializers[i];
    if (!strstr(t->name, SP_AUX)) {
      s = kiln_ir_add_initializer(o, t->name, t->dtype, t->dims, t->rank, t->data, err);
      continue;
    }
    if (!has_suffix(t->name, SP_BITMAP)) continue;
    size_t base = strlen(t->name) - strlen(SP_BITMAP);
    char W[300], nm[320];
    snprintf(W, sizeof W, "%.*s", (int)base, t->name);
    snprintf(nm, sizeof nm, "%s" SP_VALUES, W);
    const kiln_ir_tensor *vals = kiln_ir_find_initializer(g, nm);
    snprintf(nm, sizeof nm, "%s" SP_AUX "shape", W);
    const kiln_ir_tensor *shape = kiln_ir_find_initializer(g, nm);
    if (!vals || !shape || shape->dtype != KILN_DTYPE_INT64 || shape->rank != 1 ||
        shape->dims[0] < 1 || shape->dims[0] > KILN_IR_MAX_RANK || vals->rank != 1) {
      s = kiln_error_set(err, KILN_E_FORMAT,
                         "sparse unpack: \"%s\": values or shape initializer missing or malformed",
                         W);
      break;
    }
    int64_t dims[KILN_IR_MAX_RANK], n = 1;
    int rank = (int)shape->dims[0];
    memcpy(dims, shape->data, (size_t)rank * sizeof(int64_t));
    for (int d = 0; d < rank; d++) n *= dims[d];
    size_t es = kiln_dtype_size(vals->dtype);
    const uint8_t *bm = t->data;
    if (n < 0 || (n + 7) / 8 != kiln_ir_tensor_numel(t)) {
      s = kiln_error_set(err, KILN_E_FORMAT, "sparse unpack: \"%s\": bitmap size does not fit", W);
      break;
    }
    unsigned char *dense = calloc((size_t)(n ? n : 1), es);
    if (!dense) {
      s = kiln_error_set(err, KILN_E_NOMEM, "sparse unpack: out of memory");
      break;
    }
    int64_t k = 1, nv = kiln_ir_tensor_numel(vals);
    for (int64_t e = 0; e < n && !s; e++) {
      if (!(bm[e / 8] >> (e % 8) & 1)) continue;
      if (k >= nv)
        s = kiln_error_set(err, KILN_E_FORMAT, "sparse unpack: \"%s\": more bits than values", W);
      else memcpy(dense + e * es, (const unsigned char *)vals->data + k * es, es);
      k++;
    }
    if (!s) s = kiln_ir_add_initializer(o, W, vals->dtype, dims, rank, dense, err);
    free(dense);
    count++;
  }
  if (s || (s = kiln_ir_toposort(o, err))) goto fail;
  qz_replace(g, o);
  if (unpacked) *unpacked = count;
  return KILN_OK;
fail:
  kiln_ir_free(o);
  return s;
}

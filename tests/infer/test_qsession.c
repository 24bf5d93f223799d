/* The int8 runtime on hand-built QDQ graphs: the fused int8 path (per-channel weights,
 * with and without bias and ReLU, Gemm / Gemm transB / MatMul+Add, int8 and uint8
 * activations, 1-3 layers, batch 1/7/1024) equals the integer definition computed
 * here layer by layer bit for bit on every kernel path, and each layer stays within
 * one quantization step of the float (op-by-op ONNX) semantics; the standalone ops
 * (QuantizeLinear/DequantizeLinear per axis, QLinearMatMul, the dynamic-quantization
 * MatMulInteger chain); malformed QDQ parameters give errors naming the node. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kiln/infer.h"
#include "session_internal.h"

#include "infer/run_checks.h"

static uint32_t g_seed = 12345;
static uint32_t urand(void) {
  g_seed = g_seed * 1664525u + 1013904223u;
  return g_seed >> 8;
}
static float frand(void) { return (float)(urand() & 0xffff) / 32768.0f - 1.0f; }

static kiln_ir_node *node(kiln_ir_graph *g, const char *op, const char *name, const char *in0,
                          const char *in1, const char *in2, const char *out) {
  const char *ins[3] = {in0, in1, in2};
  int n = in2 ? 3 : in1 ? 2 : 1;
  kiln_ir_node *nd = NULL;
  OK(kiln_ir_add_node(g, op, name, ins, n, &out, 1, &nd, E));
  return nd;
}
static void init(kiln_ir_graph *g, const char *name, kiln_dtype dt, int rank, const int64_t *dims,
                 const void *data) {
  OK(kiln_ir_add_initializer(g, name, dt, dims, rank, data, E));
}
static void scalar_f(kiln_ir_graph *g, const char *name, float v) {
  init(g, name, KILN_DTYPE_FLOAT, 0, NULL, &v);
}
static void scalar_zp(kiln_ir_graph *g, const char *name, int u, int32_t v) {
  if (u) {
    uint8_t b = (uint8_t)v;
    init(g, name, KILN_DTYPE_UINT8, 0, NULL, &b);
  } else {
    int8_t b = (int8_t)v;
    init(g, name, KILN_DTYPE_INT8, 0, NULL, &b);
  }
}

/* --- a quantized MLP and its integer definition ------------------------------------ */

#define MAXL 3
typedef struct layer {
  int64_t K, N;
  int kind;        /* 0 Gemm, 1 Gemm transB=1, 2 MatMul + Add */
  int per_channel; /* s_w per output channel (else one scale) */
  int bias;        /* 0 none, 1 float initializer, 2 DequantizeLinear of int32 */
  int relu;
  int8_t *w;       /* [K, N] (transposed into the graph for kind 1) */
  float *sw;       /* N */
  float *bf;       /* N */
  int32_t *bi;     /* N (bias 2), at scale bs */
  float *bs;       /* N */
} layer;

typedef struct model {
  int L;
  layer ly[MAXL];
  int u[MAXL + 1];       /* activation l is uint8 (else int8) */
  float s[MAXL + 1];     /* activation scales */
  int32_t zp[MAXL + 1];
  int softmax;
  int last_float; /* the last layer has no QuantizeLinear: a float output */
} model;

static int32_t qlo(int u) { return u ? 0 : -128; }
static int32_t qhi(int u) { return u ? 255 : 127; }

static int32_t qget(const void *p, int64_t i, int u) {
  return u ? ((const uint8_t *)p)[i] : ((const int8_t *)p)[i];
}

/* Layer l on integer input xq (M rows): the definition (y_int) and the float op-by-op
 * semantics (y_flt), both quantized with activation l+1's parameters. */
static void layer_ref(const model *m, int l, int64_t M, const void *xq, void *y_int, int32_t *y_flt) {
  const layer *ly = &m->ly[l];
  int64_t K = ly->K, N = ly->N;
  int32_t *mult = malloc((size_t)N * sizeof(int32_t)), *shift = malloc((size_t)N * sizeof(int32_t));
  int64_t *bq = malloc((size_t)N * sizeof(int64_t));
  assert_non_null(mult); assert_non_null(shift); assert_non_null(bq);
  for (int64_t n = 0; n < N; n++) {
    double sxw = (double)m->s[l] * (double)ly->sw[n];
    int sh;
    kiln_q_multiplier(sxw / (double)m->s[l + 1], &mult[n], &sh);
    shift[n] = sh;
    double b = ly->bias == 1 ? ly->bf[n] / sxw : ly->bias == 2 ? (double)ly->bi[n] * ly->bs[n] / sxw : 0.0;
    bq[n] = (int64_t)nearbyint(b);
  }
  int yu = m->u[l + 1];
  int32_t lo = qlo(yu), hi = qhi(yu);
  if (ly->relu && m->zp[l + 1] > lo) lo = m->zp[l + 1];
  kiln_qgemm_naive(M, N, K, xq, m->u[l], m->zp[l], ly->w, bq, mult, shift, m->zp[l + 1], lo, hi,
                   y_int, yu);
  if (y_flt)
    for (int64_t i = 0; i < M; i++)
      for (int64_t n = 0; n < N; n++) {
        float acc = 0.0f;
        for (int64_t k = 0; k < K; k++)
          acc += (float)(qget(xq, i * K + k, m->u[l]) - m->zp[l]) * m->s[l] *
                 ((float)ly->w[k * N + n] * ly->sw[n]);
        if (ly->bias == 1) acc += ly->bf[n];
        if (ly->bias == 2) acc += (float)ly->bi[n] * ly->bs[n];
        if (ly->relu && acc < 0.0f) acc = 0.0f;
        y_flt[i * N + n] = kiln_q_quantize(acc, m->s[l + 1], m->zp[l + 1], qlo(yu), qhi(yu));
      }
  free(mult); free(shift); free(bq);
}

/* Random weights, then scales calibrated on x (B rows) layer by layer. */
static void make_model(model *m, int L, const int64_t *dims, const int *kinds, const int *bias,
                       const int *relu, const int *per_channel, const int *u, const float *x,
                       int64_t B) {
  memset(m, 0, sizeof *m);
  m->L = L;
  for (int l = 0; l <= L; l++) m->u[l] = u[l];
  m->s[0] = 1.0f / 127.0f;
  m->zp[0] = u[0] ? 128 : 0;
  void *xq = malloc((size_t)(B * dims[0]));
  assert_non_null(xq);
  for (int64_t i = 0; i < B * dims[0]; i++) {
    int32_t q = kiln_q_quantize(x[i], m->s[0], m->zp[0], qlo(u[0]), qhi(u[0]));
    if (u[0]) ((uint8_t *)xq)[i] = (uint8_t)q;
    else ((int8_t *)xq)[i] = (int8_t)q;
  }
  for (int l = 0; l < L; l++) {
    layer *ly = &m->ly[l];
    int64_t K = dims[l], N = dims[l + 1];
    ly->K = K;
    ly->N = N;
    ly->kind = kinds[l];
    ly->bias = bias[l];
    ly->relu = relu[l];
    ly->per_channel = per_channel[l];
    ly->w = malloc((size_t)(K * N));
    ly->sw = malloc((size_t)N * sizeof(float));
    ly->bf = malloc((size_t)N * sizeof(float));
    ly->bi = malloc((size_t)N * sizeof(int32_t));
    ly->bs = malloc((size_t)N * sizeof(float));
    for (int64_t i = 0; i < K * N; i++) {
      uint32_t r = urand() % 16;
      ly->w[i] = r == 0 ? -128 : r == 1 ? 127 : (int8_t)((int32_t)(urand() % 256) - 128);
    }
    float s0 = 0.5f / (127.0f * sqrtf((float)K));
    for (int64_t n = 0; n < N; n++) {
      ly->sw[n] = per_channel[l] ? s0 * (0.5f + (float)(urand() % 1000) / 1000.0f) : s0;
      ly->bf[n] = 0.3f * frand();
      ly->bs[n] = (float)((double)m->s[l] * (double)ly->sw[n]);
      ly->bi[n] = (int32_t)lrint((double)ly->bf[n] / ly->bs[n]);
    }
    /* calibrate activation l+1 on the float result of this layer */
    float lo = 0.0f, hi = 0.0f;
    for (int64_t i = 0; i < B; i++)
      for (int64_t n = 0; n < N; n++) {
        float acc = ly->bias == 1 ? ly->bf[n] : ly->bias == 2 ? (float)ly->bi[n] * ly->bs[n] : 0.0f;
        for (int64_t k = 0; k < K; k++)
          acc += (float)(qget(xq, i * K + k, u[l]) - m->zp[l]) * m->s[l] * (float)ly->w[k * N + n] *
                 ly->sw[n];
        if (ly->relu && acc < 0.0f) acc = 0.0f;
        if (acc < lo) lo = acc;
        if (acc > hi) hi = acc;
      }
    if (u[l + 1]) {
      m->s[l + 1] = (hi - lo) / 255.0f;
      if (!(m->s[l + 1] > 0.0f)) m->s[l + 1] = 1.0f;
      m->zp[l + 1] = (int32_t)lrintf(-lo / m->s[l + 1]);
    } else {
      float a = fabsf(lo) > hi ? fabsf(lo) : hi;
      m->s[l + 1] = a > 0.0f ? a / 127.0f : 1.0f;
      m->zp[l + 1] = (int32_t)(urand() % 5) - 2; /* a non-zero int8 zero point, too */
    }
    void *y = malloc((size_t)(B * N));
    assert_non_null(y);
    layer_ref(m, l, B, xq, y, NULL);
    free(xq);
    xq = y;
  }
  free(xq);
}

static void free_model(model *m) {
  for (int l = 0; l < m->L; l++) {
    free(m->ly[l].w); free(m->ly[l].sw); free(m->ly[l].bf); free(m->ly[l].bi); free(m->ly[l].bs);
  }
}

static kiln_ir_graph *model_graph(const model *m) {
  kiln_ir_graph *g = NULL;
  OK(kiln_ir_create("qdq", &g, E));
  OK(kiln_ir_set_opset(g, "", 13, E));
  int64_t in_dims[2] = {-1, m->ly[0].K};
  const char *params[2] = {"batch", NULL};
  OK(kiln_ir_add_input(g, "x", KILN_DTYPE_FLOAT, in_dims, params, 2, E));
  char a[64], b[64], c[64], d[64], e[64], f[64];
  for (int l = 0; l <= m->L; l++) {
    snprintf(a, sizeof a, "s%d", l);
    snprintf(b, sizeof b, "zp%d", l);
    scalar_f(g, a, m->s[l]);
    scalar_zp(g, b, m->u[l], m->zp[l]);
  }
  node(g, "QuantizeLinear", "quant_x", "x", "s0", "zp0", "xq0");
  for (int l = 0; l < m->L; l++) {
    const layer *ly = &m->ly[l];
    int64_t K = ly->K, N = ly->N;
    char sx[16], zx[16], sy[16], zy[16];
    snprintf(sx, sizeof sx, "s%d", l);
    snprintf(zx, sizeof zx, "zp%d", l);
    snprintf(sy, sizeof sy, "s%d", l + 1);
    snprintf(zy, sizeof zy, "zp%d", l + 1);
    snprintf(a, sizeof a, "xq%d", l);
    snprintf(b, sizeof b, "xf%d", l);
    snprintf(c, sizeof c, "dq_x%d", l);
    node(g, "DequantizeLinear", c, a, sx, zx, b);
    /* weights */
    snprintf(a, sizeof a, "W%d", l);
    snprintf(c, sizeof c, "W%d_scale", l);
    snprintf(d, sizeof d, "W%d_f", l);
    snprintf(e, sizeof e, "dq_w%d", l);
    if (ly->kind == 1) {
      int8_t *wt = malloc((size_t)(K * N));
      for (int64_t k = 0; k < K; k++)
        for (int64_t n = 0; n < N; n++) wt[n * K + k] = ly->w[k * N + n];
      int64_t wd[2] = {N, K};
      init(g, a, KILN_DTYPE_INT8, 2, wd, wt);
      free(wt);
    } else {
      int64_t wd[2] = {K, N};
      init(g, a, KILN_DTYPE_INT8, 2, wd, ly->w);
    }
    kiln_ir_node *dq;
    if (ly->per_channel) {
      init(g, c, KILN_DTYPE_FLOAT, 1, &N, ly->sw);
      dq = node(g, "DequantizeLinear", e, a, c, NULL, d);
      OK(kiln_ir_node_set_int(dq, "axis", ly->kind == 1 ? 0 : 1, E));
    } else {
      scalar_f(g, c, ly->sw[0]);
      dq = node(g, "DequantizeLinear", e, a, c, NULL, d);
    }
    /* bias */
    const char *bias = NULL;
    snprintf(f, sizeof f, "B%d", l);
    if (ly->bias == 1) {
      init(g, f, KILN_DTYPE_FLOAT, 1, &N, ly->bf);
      bias = f;
    } else if (ly->bias == 2) {
      char bq[32], bsn[32], dqb[32];
      snprintf(bq, sizeof bq, "B%d_q", l);
      snprintf(bsn, sizeof bsn, "B%d_scale", l);
      snprintf(dqb, sizeof dqb, "dq_b%d", l);
      init(g, bq, KILN_DTYPE_INT32, 1, &N, ly->bi);
      init(g, bsn, KILN_DTYPE_FLOAT, 1, &N, ly->bs);
      kiln_ir_node *dn = node(g, "DequantizeLinear", dqb, bq, bsn, NULL, f);
      OK(kiln_ir_node_set_int(dn, "axis", 0, E));
      bias = f;
    }
    snprintf(a, sizeof a, "xf%d", l);
    snprintf(c, sizeof c, "h%d", l);
    snprintf(e, sizeof e, "fc%d", l);
    if (ly->kind == 2) {
      node(g, "MatMul", e, a, d, NULL, bias ? "mm_tmp" : c);
      if (bias) {
        char mm[32], add[32];
        snprintf(mm, sizeof mm, "mm%d", l);
        snprintf(add, sizeof add, "add%d", l);
        /* rename: the MatMul wrote "mm_tmp"; give it a unique name per layer */
        kiln_ir_node *mmn = &g->nodes[g->n_nodes - 1];
        free(mmn->outputs[0]);
        mmn->outputs[0] = strdup(mm);
        node(g, "Add", add, f, mm, NULL, c); /* bias first: either order is recognised */
      }
    } else {
      kiln_ir_node *gn = node(g, "Gemm", e, a, d, bias, c);
      if (ly->kind == 1) OK(kiln_ir_node_set_int(gn, "transB", 1, E));
    }
    if (ly->relu) {
      snprintf(a, sizeof a, "r%d", l);
      snprintf(e, sizeof e, "relu%d", l);
      node(g, "Relu", e, c, NULL, NULL, a);
      snprintf(c, sizeof c, "%s", a);
    }
    if (m->last_float && l == m->L - 1) {
      kiln_ir_node *last = &g->nodes[g->n_nodes - 1]; /* name its output for the end */
      free(last->outputs[0]);
      last->outputs[0] = strdup(m->softmax ? "logits" : "y");
      continue;
    }
    snprintf(a, sizeof a, "xq%d", l + 1);
    snprintf(e, sizeof e, "quant%d", l);
    node(g, "QuantizeLinear", e, c, sy, zy, a);
  }
  if (m->last_float) {
    if (m->softmax) node(g, "Softmax", "softmax", "logits", NULL, NULL, "y");
    OK(kiln_ir_add_output(g, "y", KILN_DTYPE_FLOAT, NULL, NULL, -1, E));
    return g;
  }
  snprintf(a, sizeof a, "xq%d", m->L);
  snprintf(b, sizeof b, "s%d", m->L);
  snprintf(c, sizeof c, "zp%d", m->L);
  node(g, "DequantizeLinear", "dq_out", a, b, c, m->softmax ? "logits" : "y");
  if (m->softmax) node(g, "Softmax", "softmax", "logits", NULL, NULL, "y");
  OK(kiln_ir_add_output(g, "y", KILN_DTYPE_FLOAT, NULL, NULL, -1, E));
  return g;
}

static int count_op(const kiln_session *s, kiln_op op) {
  int c = 0;
  for (int i = 0; i < s->n_steps; i++) c += s->steps[i].op == op;
  return c;
}

static const kiln_kernel_path paths[] = {KILN_KERNEL_REF, KILN_KERNEL_AVX2, KILN_KERNEL_AVX512,
                                         KILN_KERNEL_VNNI, KILN_KERNEL_NEON, KILN_KERNEL_DOTPROD,
                                         KILN_KERNEL_AUTO};

/* Runs model m on every kernel path at batches 1, 7 and 1024 and checks the output
 * against the definition, bit for bit; each layer within one step of float. */
/* A session of g on one kernel path; NULL when this CPU lacks the path. */
static kiln_session *path_session(const kiln_ir_graph *g, int64_t max_batch, int threads,
                                  kiln_kernel_path path) {
  kiln_session_options o;
  kiln_session_options_init(&o);
  o.max_batch = max_batch;
  o.threads = threads;
  o.kernel = path;
  kiln_session *s = NULL;
  kiln_error e = {0};
  if (kiln_session_create(g, &o, &s, &e)) {
    assert_int_equal(e.status, KILN_E_UNSUPPORTED);
    return NULL;
  }
  return s;
}

static void check_model(const model *m, int threads) {
  const int64_t B = 1024;
  int64_t K0 = m->ly[0].K, NL = m->ly[m->L - 1].N;
  /* Small positive sizes (the models here are tiny); says so to the compiler too. */
  assert_true(K0 > 0 && K0 <= 4096 && NL > 0 && NL <= 4096);
  if (K0 <= 0 || K0 > 4096 || NL <= 0 || NL > 4096) return;
  float *x = malloc((size_t)(B * K0) * sizeof(float));
  assert_non_null(x);
  for (int64_t i = 0; i < B * K0; i++) x[i] = 1.1f * frand(); /* some saturate */
  /* the definition, layer by layer */
  void *act[MAXL + 1];
  act[0] = malloc((size_t)(B * K0));
  for (int64_t i = 0; i < B * K0; i++) {
    int32_t q = kiln_q_quantize(x[i], m->s[0], m->zp[0], qlo(m->u[0]), qhi(m->u[0]));
    if (m->u[0]) ((uint8_t *)act[0])[i] = (uint8_t)q;
    else ((int8_t *)act[0])[i] = (int8_t)q;
  }
  int worst = 0;
  for (int l = 0; l < m->L; l++) {
    int64_t N = m->ly[l].N;
    act[l + 1] = malloc((size_t)(B * N));
    int32_t *flt = malloc((size_t)(B * N) * sizeof(int32_t));
    layer_ref(m, l, B, act[l], act[l + 1], flt);
    for (int64_t i = 0; i < B * N; i++) {
      int d = abs(qget(act[l + 1], i, m->u[l + 1]) - flt[i]);
      if (d > worst) worst = d;
    }
    free(flt);
  }
  assert_true(worst <= 1); /* within one quantization step of float, per layer */
  float *want = malloc((size_t)(B * NL) * sizeof(float));
  for (int64_t i = 0; i < B * NL; i++)
    want[i] = (float)(qget(act[m->L], i, m->u[m->L]) - m->zp[m->L]) * m->s[m->L];
  if (m->last_float) { /* the float epilogue's definition, and near the float semantics */
    const layer *ly = &m->ly[m->L - 1];
    int l = m->L - 1;
    int64_t K = ly->K;
    for (int64_t i = 0; i < B; i++)
      for (int64_t n = 0; n < NL; n++) {
        int64_t t = 0;
        double exact = ly->bias == 1 ? ly->bf[n] : ly->bias == 2 ? (double)((float)ly->bi[n] * ly->bs[n]) : 0.0;
        for (int64_t k = 0; k < K; k++) {
          int64_t xv = qget(act[l], i * K + k, m->u[l]) - m->zp[l];
          t += xv * ly->w[k * NL + n];
          exact += (double)xv * m->s[l] * ((double)ly->w[k * NL + n] * ly->sw[n]);
        }
        float v = (float)(int32_t)t * (float)((double)m->s[l] * (double)ly->sw[n]);
        v = v + (ly->bias == 1 ? ly->bf[n] : ly->bias == 2 ? (float)ly->bi[n] * ly->bs[n] : 0.0f);
        if (ly->relu && v < 0.0f) v = 0.0f;
        if (ly->relu && exact < 0.0) exact = 0.0;
        assert_true(fabs(v - exact) <= 1e-5 + 1e-5 * fabs(exact));
        want[i * NL + n] = v;
      }
  }
  if (m->softmax)
    for (int64_t i = 0; i < B; i++) {
      float mx = want[i * NL], sum = 0.0f;
      for (int64_t j = 1; j < NL; j++) mx = want[i * NL + j] > mx ? want[i * NL + j] : mx;
      for (int64_t j = 0; j < NL; j++) sum += (want[i * NL + j] = expf(want[i * NL + j] - mx));
      for (int64_t j = 0; j < NL; j++) want[i * NL + j] /= sum;
    }
  kiln_ir_graph *g = model_graph(m);
  float *first = malloc((size_t)(B * NL) * sizeof(float));
  int have_first = 0;
  for (size_t p = 0; p < sizeof paths / sizeof *paths; p++) {
    kiln_session *s = path_session(g, B, threads, paths[p]);
    if (!s) continue;
    kiln_error e = {0};
    /* one QGEMM per layer, int8 handed from layer to layer: the first layer quantizes
     * the float input itself, and only the last dequantize remains */
    if (HAVE_COUNTER) assert_true(g_allocs > 0); /* the counter sees kiln's allocations */
    assert_int_equal(count_op(s, KILN_OP_QGEMM), m->L);
    assert_int_equal(count_op(s, KILN_OP_QUANTIZE), 0);
    assert_int_equal(count_op(s, KILN_OP_DEQUANTIZE), m->last_float ? 0 : 1);
    assert_int_equal(count_op(s, KILN_OP_GEMM), 0);
    static const int64_t batches[] = {1, 7, 1024};
    for (int bi = 0; bi < 3; bi++) {
      int64_t bt = batches[bi];
      kiln_tensor_view in, out;
      memset(&in, 0, sizeof in);
      in.dtype = KILN_DTYPE_FLOAT;
      in.rank = 2;
      in.dims[0] = bt;
      in.dims[1] = K0;
      in.data = x;
      long before = __atomic_load_n(&g_allocs, __ATOMIC_RELAXED);
      if (kiln_session_run(s, &in, 1, &out, 1, &e)) fail_msg("run: %s", e.message);
      if (HAVE_COUNTER) assert_int_equal(__atomic_load_n(&g_allocs, __ATOMIC_RELAXED) - before, 0);
      assert_int_equal(out.dims[0], bt);
      assert_int_equal(out.dims[1], NL);
      const float *y = out.data;
      if (!m->softmax) {
        if (memcmp(y, want, (size_t)(bt * NL) * sizeof(float)) != 0)
          fail_msg("path %s (int8 %s), batch %lld: output differs from the definition",
                   kiln_session_kernel_name(s), s->qkern->name, (long long)bt);
      } else {
        for (int64_t i = 0; i < bt * NL; i++) assert_true(fabsf(y[i] - want[i]) <= 1e-6f);
      }
      if (bt == B) {
        if (!have_first) memcpy(first, y, (size_t)(B * NL) * sizeof(float));
        else assert_memory_equal(first, y, (size_t)(B * NL) * sizeof(float));
        have_first = 1;
      }
    }
    kiln_session_free(s);
  }
  kiln_ir_free(g);
  for (int l = 0; l <= m->L; l++) free(act[l]);
  free(x); free(want); free(first);
}

static void test_one_layer_variants(void **st) {
  (void)st;
  const int64_t B = 256;
  for (int variant = 0; variant < 12; variant++) {
    int kind = variant % 3, bias = (variant / 3) % 3, relu = variant & 1, pc = variant != 4;
    int u[2] = {variant & 1, (variant >> 1) & 1};
    int64_t dims[2] = {37 + variant, 21 + 3 * variant};
    float *x = malloc((size_t)(B * dims[0]) * sizeof(float));
    for (int64_t i = 0; i < B * dims[0]; i++) x[i] = frand();
    model m;
    make_model(&m, 1, dims, &kind, &bias, &relu, &pc, u, x, B);
    check_model(&m, 1);
    m.last_float = 1; /* no QuantizeLinear after the layer: float out, bias and ReLU in float */
    check_model(&m, 1);
    free_model(&m);
    free(x);
  }
}

static void test_three_layers(void **st) {
  (void)st;
  const int64_t B = 256;
  int64_t dims[4] = {100, 67, 33, 10};
  int kinds[3] = {0, 2, 1}, bias[3] = {1, 2, 1}, relu[3] = {1, 1, 0}, pc[3] = {1, 1, 0};
  int u[4] = {0, 1, 0, 0};
  float *x = malloc((size_t)(B * dims[0]) * sizeof(float));
  for (int64_t i = 0; i < B * dims[0]; i++) x[i] = frand();
  model m;
  make_model(&m, 3, dims, kinds, bias, relu, pc, u, x, B);
  check_model(&m, 1);
  check_model(&m, 2); /* rows split across threads */
  m.softmax = 1;      /* the final Softmax stays float */
  check_model(&m, 1);
  m.last_float = 1;   /* the last layer dequantizes in its epilogue, then Softmax */
  check_model(&m, 1);
  m.softmax = 0;      /* ... or straight to the float output */
  check_model(&m, 2);
  free_model(&m);
  free(x);
}

static void test_two_layers_no_bias(void **st) {
  (void)st;
  const int64_t B = 128;
  int64_t dims[3] = {784, 64, 10};
  int kinds[2] = {2, 0}, bias[2] = {0, 0}, relu[2] = {1, 0}, pc[2] = {1, 1};
  int u[3] = {1, 1, 0};
  float *x = malloc((size_t)(B * dims[0]) * sizeof(float));
  for (int64_t i = 0; i < B * dims[0]; i++) x[i] = frand();
  model m;
  make_model(&m, 2, dims, kinds, bias, relu, pc, u, x, B);
  check_model(&m, 1);
  m.last_float = 1;
  check_model(&m, 1);
  free_model(&m);
  free(x);
}

/* --- standalone ops ------------------------------------------------------------------ */

static kiln_session *make_session(const kiln_ir_graph *g, kiln_kernel_path p) {
  kiln_session_options o;
  kiln_session_options_init(&o);
  o.max_batch = 16;
  o.kernel = p;
  kiln_session *s = NULL;
  kiln_error e = {0};
  if (kiln_session_create(g, &o, &s, &e)) fail_msg("session: %s", e.message);
  return s;
}

static void test_quantize_dequantize_per_axis(void **st) {
  (void)st;
  kiln_ir_graph *g = NULL;
  OK(kiln_ir_create("qdq", &g, E));
  OK(kiln_ir_set_opset(g, "", 13, E));
  int64_t d[2] = {-1, 3};
  OK(kiln_ir_add_input(g, "x", KILN_DTYPE_FLOAT, d, NULL, 2, E));
  float sc[3] = {0.5f, 1.0f, 0.25f};
  uint8_t zp[3] = {0, 10, 255};
  int64_t three = 3;
  init(g, "sc", KILN_DTYPE_FLOAT, 1, &three, sc);
  init(g, "zp", KILN_DTYPE_UINT8, 1, &three, zp);
  node(g, "QuantizeLinear", "q", "x", "sc", "zp", "xq");
  node(g, "DequantizeLinear", "dq", "xq", "sc", "zp", "y");
  OK(kiln_ir_add_output(g, "xq", KILN_DTYPE_UINT8, NULL, NULL, -1, E));
  OK(kiln_ir_add_output(g, "y", KILN_DTYPE_FLOAT, NULL, NULL, -1, E));
  kiln_session *s = make_session(g, KILN_KERNEL_AUTO);
  float x[6] = {1.25f, 2.5f, -1.0f, 0.75f, -100.0f, 100.0f};
  kiln_tensor_view in, out[2];
  memset(&in, 0, sizeof in);
  in.dtype = KILN_DTYPE_FLOAT;
  in.rank = 2;
  in.dims[0] = 2;
  in.dims[1] = 3;
  in.data = x;
  OK(kiln_session_run(s, &in, 1, out, 2, E));
  /* 1.25/0.5 = 2.5 -> 2 (half to even); 2.5/1 -> 2 + 10; -1/0.25 = -4 + 255 = 251;
   * 0.75/0.5 = 1.5 -> 2; -100 + 10 saturates at 0; 400 + 255 saturates at 255 */
  const uint8_t want_q[6] = {2, 12, 251, 2, 0, 255};
  assert_memory_equal(out[0].data, want_q, 6);
  const float want_y[6] = {1.0f, 2.0f, -1.0f, 1.0f, -10.0f, 0.0f};
  assert_memory_equal(out[1].data, want_y, sizeof want_y);
  kiln_session_free(s);
  kiln_ir_free(g);
}

static void test_qlinear_matmul(void **st) {
  (void)st;
  kiln_ir_graph *g = NULL;
  OK(kiln_ir_create("qlm", &g, E));
  OK(kiln_ir_set_opset(g, "", 13, E));
  int64_t K = 19, N = 5, M = 6;
  int64_t ad[2] = {-1, K};
  OK(kiln_ir_add_input(g, "a", KILN_DTYPE_UINT8, ad, NULL, 2, E));
  int8_t w[19 * 5];
  for (int i = 0; i < K * N; i++) w[i] = (int8_t)((int)(urand() % 256) - 128);
  int64_t wd[2] = {K, N};
  init(g, "b", KILN_DTYPE_INT8, 2, wd, w);
  float bsc[5] = {0.01f, 0.02f, 0.015f, 0.03f, 0.005f};
  int8_t bzp[5] = {0, 0, 0, 0, 0};
  init(g, "b_scale", KILN_DTYPE_FLOAT, 1, &N, bsc);
  init(g, "b_zp", KILN_DTYPE_INT8, 1, &N, bzp);
  scalar_f(g, "a_scale", 0.02f);
  scalar_zp(g, "a_zp", 1, 120);
  scalar_f(g, "y_scale", 0.05f);
  scalar_zp(g, "y_zp", 0, -3);
  const char *ins[8] = {"a", "a_scale", "a_zp", "b", "b_scale", "b_zp", "y_scale", "y_zp"};
  const char *outs[1] = {"y"};
  kiln_ir_node *nd;
  OK(kiln_ir_add_node(g, "QLinearMatMul", "qlm", ins, 8, outs, 1, &nd, E));
  OK(kiln_ir_add_output(g, "y", KILN_DTYPE_INT8, NULL, NULL, -1, E));
  kiln_session *s = make_session(g, KILN_KERNEL_AUTO);
  uint8_t a[6 * 19];
  for (int i = 0; i < M * K; i++) a[i] = (uint8_t)(urand() % 256);
  kiln_tensor_view in, out;
  memset(&in, 0, sizeof in);
  in.dtype = KILN_DTYPE_UINT8;
  in.rank = 2;
  in.dims[0] = M;
  in.dims[1] = K;
  in.data = a;
  OK(kiln_session_run(s, &in, 1, &out, 1, E));
  assert_int_equal(out.dtype, KILN_DTYPE_INT8);
  const int8_t *y = out.data;
  for (int64_t i = 0; i < M; i++)
    for (int64_t n = 0; n < N; n++) {
      double acc = 0;
      for (int64_t k = 0; k < K; k++) acc += (double)(a[i * K + k] - 120) * w[k * N + n];
      double real = acc * 0.02 * bsc[n] / 0.05 - 3;
      real = real < -128 ? -128 : real > 127 ? 127 : real;
      assert_true(fabs(y[i * N + n] - real) <= 0.5 + 1e-6);
    }
  kiln_session_free(s);
  kiln_ir_free(g);
}

/* ONNX Runtime's dynamic quantization: DynamicQuantizeLinear -> MatMulInteger -> Cast
 * -> Mul (x scale * w scale) -> Add bias, close to the float product. */
static void test_dynamic_matmul_integer(void **st) {
  (void)st;
  kiln_ir_graph *g = NULL;
  OK(kiln_ir_create("dyn", &g, E));
  OK(kiln_ir_set_opset(g, "", 13, E));
  int64_t K = 24, N = 7, M = 5;
  int64_t xd[2] = {-1, K};
  OK(kiln_ir_add_input(g, "x", KILN_DTYPE_FLOAT, xd, NULL, 2, E));
  int8_t w[24 * 7];
  float wf[24 * 7], bias[7];
  const float ws = 0.01f;
  for (int i = 0; i < K * N; i++) {
    w[i] = (int8_t)((int)(urand() % 255) - 127);
    wf[i] = w[i] * ws;
  }
  for (int n = 0; n < N; n++) bias[n] = frand();
  int64_t wd[2] = {K, N};
  init(g, "W", KILN_DTYPE_INT8, 2, wd, w);
  scalar_zp(g, "W_zp", 0, 0);
  scalar_f(g, "W_scale", ws);
  init(g, "bias", KILN_DTYPE_FLOAT, 1, &N, bias);
  const char *dq_outs[3] = {"xq", "xs", "xz"};
  const char *dq_in[1] = {"x"};
  kiln_ir_node *nd;
  OK(kiln_ir_add_node(g, "DynamicQuantizeLinear", "dql", dq_in, 1, dq_outs, 3, &nd, E));
  const char *mi_in[4] = {"xq", "W", "xz", "W_zp"};
  const char *mi_out[1] = {"acc"};
  OK(kiln_ir_add_node(g, "MatMulInteger", "mmi", mi_in, 4, mi_out, 1, &nd, E));
  nd = node(g, "Cast", "cast", "acc", NULL, NULL, "accf");
  OK(kiln_ir_node_set_int(nd, "to", KILN_DTYPE_FLOAT, E));
  node(g, "Mul", "scale_mul", "xs", "W_scale", NULL, "s");
  node(g, "Mul", "mul", "accf", "s", NULL, "yf");
  node(g, "Add", "add", "yf", "bias", NULL, "y");
  OK(kiln_ir_add_output(g, "y", KILN_DTYPE_FLOAT, NULL, NULL, -1, E));
  kiln_session *s = make_session(g, KILN_KERNEL_AUTO);
  float x[5 * 24];
  for (int i = 0; i < M * K; i++) x[i] = 2.0f * frand();
  kiln_tensor_view in, out;
  memset(&in, 0, sizeof in);
  in.dtype = KILN_DTYPE_FLOAT;
  in.rank = 2;
  in.dims[0] = M;
  in.dims[1] = K;
  in.data = x;
  OK(kiln_session_run(s, &in, 1, &out, 1, E));
  const float *y = out.data;
  for (int64_t i = 0; i < M; i++)
    for (int64_t n = 0; n < N; n++) {
      double r = bias[n];
      for (int64_t k = 0; k < K; k++) r += (double)x[i * K + k] * wf[k * N + n];
      /* x is quantized in steps of ~4/255: error <= K * step/2 * |w| */
      assert_true(fabs(y[i * N + n] - r) <= K * (4.0 / 255 / 2) * 1.27 + 1e-4);
    }
  kiln_session_free(s);
  kiln_ir_free(g);
}

/* --- malformed QDQ ---------------------------------------------------------------- */

/* One fused layer whose parameters a hook may break; returns create's status. */
typedef void (*breaker)(kiln_ir_graph *g);

static kiln_status create_broken(breaker brk, char *msg, size_t cap) {
  model m;
  int64_t dims[2] = {8, 4};
  int kind = 0, bias = 2, relu = 1, pc = 1, u[2] = {0, 0};
  float x[16 * 8];
  for (int i = 0; i < 16 * 8; i++) x[i] = frand();
  make_model(&m, 1, dims, &kind, &bias, &relu, &pc, u, x, 16);
  kiln_ir_graph *g = model_graph(&m);
  brk(g);
  kiln_session *s = NULL;
  kiln_error e = {0};
  kiln_status st = kiln_session_create(g, NULL, &s, &e);
  snprintf(msg, cap, "%s", e.message);
  kiln_session_free(s);
  kiln_ir_free(g);
  free_model(&m);
  return st;
}

static kiln_ir_tensor *find_init(kiln_ir_graph *g, const char *name) {
  for (int i = 0; i < g->n_initializers; i++)
    if (strcmp(g->initializers[i].name, name) == 0) return &g->initializers[i];
  fail_msg("no initializer %s", name);
  return NULL;
}

static void zero_input_scale(kiln_ir_graph *g) { *(float *)find_init(g, "s0")->data = 0.0f; }
static void negative_w_scale(kiln_ir_graph *g) { ((float *)find_init(g, "W0_scale")->data)[2] = -0.1f; }
static void negative_out_scale(kiln_ir_graph *g) { *(float *)find_init(g, "s1")->data = -1.0f; }
static void zp_shape_mismatch(kiln_ir_graph *g) {
  /* W's DequantizeLinear gets a scalar zero point beside its 4 per-channel scales */
  int8_t z = 0;
  kiln_error e = {0};
  kiln_ir_add_initializer(g, "W0_zp", KILN_DTYPE_INT8, NULL, 0, &z, &e);
  for (int i = 0; i < g->n_nodes; i++)
    if (strcmp(g->nodes[i].name, "dq_w0") == 0) {
      kiln_ir_node *n = &g->nodes[i];
      char **p = realloc(n->inputs, 3 * sizeof(char *));
      n->inputs = p;
      n->inputs[2] = strdup("W0_zp");
      n->n_inputs = 3;
    }
}
static void bias_zp_out_of_range(kiln_ir_graph *g) {
  int32_t z[4] = {0, 5, 0, 0};
  int64_t four = 4;
  kiln_error e = {0};
  kiln_ir_add_initializer(g, "B0_zp", KILN_DTYPE_INT32, &four, 1, z, &e);
  for (int i = 0; i < g->n_nodes; i++)
    if (strcmp(g->nodes[i].name, "dq_b0") == 0) {
      kiln_ir_node *n = &g->nodes[i];
      n->inputs = realloc(n->inputs, 3 * sizeof(char *));
      n->inputs[2] = strdup("B0_zp");
      n->n_inputs = 3;
    }
}
static void int32_zp_for_quantize(kiln_ir_graph *g) {
  int32_t z = 300;
  kiln_error e = {0};
  kiln_ir_add_initializer(g, "zp_big", KILN_DTYPE_INT32, NULL, 0, &z, &e);
  for (int i = 0; i < g->n_nodes; i++)
    if (strcmp(g->nodes[i].name, "quant_x") == 0) {
      free(g->nodes[i].inputs[2]);
      g->nodes[i].inputs[2] = strdup("zp_big");
    }
}

static void expect_error(breaker brk, kiln_status want, const char *node_name, const char *what) {
  char msg[KILN_ERROR_MESSAGE_MAX];
  kiln_status st = create_broken(brk, msg, sizeof msg);
  printf("  -> %s\n", msg);
  assert_int_equal(st, want);
  assert_non_null(strstr(msg, node_name));
  assert_non_null(strstr(msg, what));
}

static void test_malformed(void **st) {
  (void)st;
  expect_error(zero_input_scale, KILN_E_INVALID, "\"quant_x\"", "positive");
  expect_error(negative_w_scale, KILN_E_INVALID, "\"dq_w0\"", "W0_scale\"[2]");
  expect_error(negative_out_scale, KILN_E_INVALID, "\"quant0\"", "positive");
  expect_error(zp_shape_mismatch, KILN_E_SHAPE, "\"dq_w0\"", "same shape");
  expect_error(bias_zp_out_of_range, KILN_E_INVALID, "\"dq_b0\"", "out of range");
  expect_error(int32_zp_for_quantize, KILN_E_INVALID, "\"quant_x\"", "int8 or uint8");
}

/* Listing 7.9's shape: one int8 hidden layer read by two fused heads (a float output
 * and a Softmax). With one DequantizeLinear of the hidden output shared by both heads
 * (shared = 1), the session drops it like two single-reader ones (shared = 0): three
 * QGEMMs, no DEQUANTIZE step. As a graph output too (shared = 2) it stays. */
static kiln_ir_graph *two_heads_graph(int shared) {
  enum { K = 40, H = 24, NA = 3, NB = 5 };
  kiln_ir_graph *g = NULL;
  OK(kiln_ir_create("two_heads", &g, E));
  OK(kiln_ir_set_opset(g, "", 13, E));
  int64_t d[2] = {-1, K};
  OK(kiln_ir_add_input(g, "x", KILN_DTYPE_FLOAT, d, NULL, 2, E));
  scalar_f(g, "s0", 0.02f);
  scalar_zp(g, "z0", 0, 3);
  scalar_f(g, "s1", 0.05f);
  scalar_zp(g, "z1", 0, -128);
  node(g, "QuantizeLinear", "q0", "x", "s0", "z0", "xq");
  node(g, "DequantizeLinear", "dq0", "xq", "s0", "z0", "xf");
  const int64_t nn[3] = {H, NA, NB}, kk[3] = {K, H, H};
  const char *wn[3] = {"W1", "W2", "W3"}, *wsn[3] = {"W1s", "W2s", "W3s"},
             *wfn[3] = {"W1f", "W2f", "W3f"}, *bn[3] = {"b1", "b2", "b3"};
  for (int l = 0; l < 3; l++) {
    int8_t w[K * H];
    float sw[H], bias[H];
    for (int64_t e = 0; e < kk[l] * nn[l]; e++) w[e] = (int8_t)((int)(urand() % 255) - 127);
    for (int64_t n = 0; n < nn[l]; n++) {
      sw[n] = 0.001f + 0.002f * (float)(urand() % 100) / 100.0f;
      bias[n] = 0.1f * frand();
    }
    int64_t wd[2] = {kk[l], nn[l]};
    init(g, wn[l], KILN_DTYPE_INT8, 2, wd, w);
    init(g, wsn[l], KILN_DTYPE_FLOAT, 1, &nn[l], sw);
    init(g, bn[l], KILN_DTYPE_FLOAT, 1, &nn[l], bias);
    kiln_ir_node *dq = node(g, "DequantizeLinear", wfn[l], wn[l], wsn[l], NULL, wfn[l]);
    OK(kiln_ir_node_set_int(dq, "axis", 1, E));
  }
  node(g, "Gemm", "dense", "xf", "W1f", "b1", "h");
  node(g, "Relu", "relu", "h", NULL, NULL, "hr");
  node(g, "QuantizeLinear", "q1", "hr", "s1", "z1", "hq");
  if (shared) {
    node(g, "DequantizeLinear", "dq1", "hq", "s1", "z1", "hf");
    node(g, "Gemm", "head_a", "hf", "W2f", "b2", "ya");
    node(g, "Gemm", "head_b", "hf", "W3f", "b3", "lb");
  } else {
    node(g, "DequantizeLinear", "dq1a", "hq", "s1", "z1", "hfa");
    node(g, "DequantizeLinear", "dq1b", "hq", "s1", "z1", "hfb");
    node(g, "Gemm", "head_a", "hfa", "W2f", "b2", "ya");
    node(g, "Gemm", "head_b", "hfb", "W3f", "b3", "lb");
  }
  node(g, "Softmax", "softmax", "lb", NULL, NULL, "yb");
  OK(kiln_ir_add_output(g, "ya", KILN_DTYPE_FLOAT, NULL, NULL, -1, E));
  OK(kiln_ir_add_output(g, "yb", KILN_DTYPE_FLOAT, NULL, NULL, -1, E));
  if (shared == 2) OK(kiln_ir_add_output(g, "hf", KILN_DTYPE_FLOAT, NULL, NULL, -1, E));
  return g;
}

static void test_two_heads_shared_dequantize(void **st) {
  (void)st;
  const int64_t B = 1024, K = 40;
  float *x = malloc((size_t)(B * K) * sizeof(float));
  float *want_a = malloc((size_t)B * 3 * sizeof(float)), *want_b = malloc((size_t)B * 5 * sizeof(float));
  assert_non_null(x);
  assert_non_null(want_a);
  assert_non_null(want_b);
  for (int64_t i = 0; i < B * K; i++) x[i] = 2.7f * frand();
  uint32_t seed = g_seed;
  kiln_ir_graph *gs[3];
  for (int v = 0; v < 3; v++) {
    g_seed = seed; /* the same weights in every variant */
    gs[v] = two_heads_graph(v);
  }
  int have = 0;
  for (int v = 0; v < 3; v++)
    for (size_t p = 0; p < sizeof paths / sizeof *paths; p++)
      for (int threads = 1; threads <= 2; threads++) {
        kiln_session *s = path_session(gs[v], B, threads, paths[p]);
        if (!s) continue;
        kiln_error e = {0};
        assert_int_equal(count_op(s, KILN_OP_QGEMM), 3);
        assert_int_equal(count_op(s, KILN_OP_QUANTIZE), 0);
        assert_int_equal(count_op(s, KILN_OP_DEQUANTIZE), v == 2 ? 1 : 0);
        static const int64_t batches[] = {1, 7, 1024};
        for (int bi = 0; bi < 3; bi++) {
          kiln_tensor_view in, out[3];
          memset(&in, 0, sizeof in);
          in.dtype = KILN_DTYPE_FLOAT;
          in.rank = 2;
          in.dims[0] = batches[bi];
          in.dims[1] = K;
          in.data = x;
          if (kiln_session_run(s, &in, 1, out, v == 2 ? 3 : 2, &e)) fail_msg("run: %s", e.message);
          size_t na = (size_t)batches[bi] * 3 * sizeof(float), nb = (size_t)batches[bi] * 5 * sizeof(float);
          if (!have) { /* the first session: two single-reader DequantizeLinears, batch 1024 last */
            memcpy(want_a, out[0].data, na);
            memcpy(want_b, out[1].data, nb);
            if (bi == 2) have = 1;
            continue;
          }
          if (memcmp(out[0].data, want_a, na) || memcmp(out[1].data, want_b, nb))
            fail_msg("variant %d, path %s, %d threads, batch %lld: outputs differ", v,
                     kiln_session_kernel_name(s), threads, (long long)batches[bi]);
        }
        kiln_session_free(s);
      }
  for (int v = 0; v < 3; v++) kiln_ir_free(gs[v]);
  free(x);
  free(want_a);
  free(want_b);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_quantize_dequantize_per_axis),
      cmocka_unit_test(test_qlinear_matmul),
      cmocka_unit_test(test_dynamic_matmul_integer),
      cmocka_unit_test(test_one_layer_variants),
      cmocka_unit_test(test_two_layers_no_bias),
      cmocka_unit_test(test_three_layers),
      cmocka_unit_test(test_two_heads_shared_dequantize),
      cmocka_unit_test(test_malformed),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

/* Writes the inference benchmark's inputs (bench/run_infer_bench.sh):
 *   DIR/{imdb,reuters,housing,fashion_mnist}.onnx  the four book MLPs, Dense as Gemm
 *       (transB = 0, as kiln export lowers them), opset 13, symbolic batch "batch",
 *       seeded random weights (speed does not depend on trained values);
 *   DIR/identity.onnx  x[batch,1] -> Identity: measures onnxruntime-node's per-call cost;
 *   DIR/{imdb,reuters}_tokens.bin  1024 rows of token ids: int64 rows, int64 offsets
 *       [rows + 1], int32 tokens (little-endian), drawn Zipf-like from ids 1..9999 with
 *       repeats, ~230 tokens (~140 unique) per IMDB review, ~140 per Reuters wire.
 *   with --int8, also DIR/{imdb,reuters,housing,fashion_mnist}_int8.onnx: QDQ versions
 *       (kiln_calibrate, percentile 99.99, on 500 seeded rows shaped like the data:
 *       multi-hot Zipf token rows for IMDB/Reuters, values in [-1, 1) for housing,
 *       pixels in [0, 1) for Fashion-MNIST; drawn from their own seed, not the
 *       benchmark's inputs; then kiln_quantize, QDQ, opset 13).
 *   and DIR/NAME_int8u8.onnx: the same QDQ graph with uint8 activations (every activation
 *       zero point + 128, same scales; weights stay int8): ONNX Runtime's x86 format
 *       (U8S8; ORT also converts int8 activations to it itself);
 *   and DIR/fashion_mnist_int8_{u,b}80.onnx: pruned to 80% (unstructured, 4 x 16 blocks),
 *       QDQ, the weights packed as bitmap + non-zeros.
 * Usage: make_book_onnx DIR [SEED] [--int8] */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kiln/export.h"
#include "kiln/ir.h"
#include "kiln/infer.h"
#include "kiln/quantize.h"

static uint64_t rng_state;
static uint64_t rng_next(void) { /* splitmix64 */
  uint64_t z = (rng_state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}
static double rng_uniform(void) { return (double)(rng_next() >> 11) * (1.0 / 9007199254740992.0); }

#define CHECK(call)                                                          \
  do {                                                                       \
    if ((call) != KILN_OK) {                                                 \
      fprintf(stderr, "make_book_onnx: %s: %s\n", #call, err.message);       \
      exit(1);                                                               \
    }                                                                        \
  } while (0)

typedef struct layer { int64_t units; const char *act; } layer;

static void write_mlp(const char *dir, const char *name, int64_t in, const layer *layers,
                      int n_layers) {
  kiln_error err;
  memset(&err, 0, sizeof err);
  kiln_ir_graph *g;
  CHECK(kiln_ir_create(name, &g, &err));
  CHECK(kiln_ir_set_opset(g, "", 13, &err));
  CHECK(kiln_ir_set_producer(g, "kiln-bench", "0", &err));
  const char *params[2] = {"batch", NULL};
  int64_t xd[2] = {-1, in};
  CHECK(kiln_ir_add_input(g, "input", KILN_DTYPE_FLOAT, xd, params, 2, &err));
  char prev[64] = "input";
  int64_t fan_in = in;
  for (int l = 0; l < n_layers; l++) {
    int64_t out = layers[l].units;
    float *w = malloc((size_t)(fan_in * out) * sizeof *w), *b = malloc((size_t)out * sizeof *b);
    double lim = sqrt(6.0 / (double)(fan_in + out)); /* Glorot uniform, as Keras */
    for (int64_t i = 0; i < fan_in * out; i++) w[i] = (float)((2.0 * rng_uniform() - 1.0) * lim);
    for (int64_t i = 0; i < out; i++) b[i] = (float)(0.02 * (rng_uniform() - 0.5));
    char wn[64], bn[64], gn[64], node[64], an[64], anode[64];
    snprintf(wn, sizeof wn, "dense_%d/kernel", l + 1);
    snprintf(bn, sizeof bn, "dense_%d/bias", l + 1);
    if (l == n_layers - 1 && !layers[l].act) snprintf(gn, sizeof gn, "output");
    else snprintf(gn, sizeof gn, "dense_%d/Gemm:0", l + 1);
    snprintf(node, sizeof node, "dense_%d/Gemm", l + 1);
    int64_t wd[2] = {fan_in, out}, bd[1] = {out};
    CHECK(kiln_ir_add_initializer(g, wn, KILN_DTYPE_FLOAT, wd, 2, w, &err));
    CHECK(kiln_ir_add_initializer(g, bn, KILN_DTYPE_FLOAT, bd, 1, b, &err));
    free(w);
    free(b);
    const char *gi[3] = {prev, wn, bn}, *go[1] = {gn};
    kiln_ir_node *n;
    CHECK(kiln_ir_add_node(g, "Gemm", node, gi, 3, go, 1, &n, &err));
    CHECK(kiln_ir_node_set_int(n, "transB", 0, &err));
    snprintf(prev, sizeof prev, "%s", gn);
    if (layers[l].act) {
      int last = l == n_layers - 1;
      if (last) snprintf(an, sizeof an, "output");
      else snprintf(an, sizeof an, "dense_%d/%s:0", l + 1, layers[l].act);
      snprintf(anode, sizeof anode, "dense_%d/%s", l + 1, layers[l].act);
      const char *ai[1] = {prev}, *ao[1] = {an};
      CHECK(kiln_ir_add_node(g, layers[l].act, anode, ai, 1, ao, 1, &n, &err));
      if (strcmp(layers[l].act, "Softmax") == 0) CHECK(kiln_ir_node_set_int(n, "axis", -1, &err));
      snprintf(prev, sizeof prev, "%s", an);
    }
    fan_in = out;
  }
  int64_t yd[2] = {-1, fan_in};
  CHECK(kiln_ir_add_output(g, "output", KILN_DTYPE_FLOAT, yd, params, 2, &err));
  char path[4096];
  snprintf(path, sizeof path, "%s/%s.onnx", dir, name);
  CHECK(kiln_onnx_write_file(g, path, &err));
  kiln_ir_free(g);
}

static void write_identity(const char *dir) {
  kiln_error err;
  memset(&err, 0, sizeof err);
  kiln_ir_graph *g;
  CHECK(kiln_ir_create("identity", &g, &err));
  CHECK(kiln_ir_set_opset(g, "", 13, &err));
  const char *params[2] = {"batch", NULL};
  int64_t d[2] = {-1, 1};
  CHECK(kiln_ir_add_input(g, "input", KILN_DTYPE_FLOAT, d, params, 2, &err));
  const char *ii[1] = {"input"}, *io[1] = {"output"};
  CHECK(kiln_ir_add_node(g, "Identity", "identity", ii, 1, io, 1, NULL, &err));
  CHECK(kiln_ir_add_output(g, "output", KILN_DTYPE_FLOAT, d, params, 2, &err));
  char path[4096];
  snprintf(path, sizeof path, "%s/identity.onnx", dir);
  CHECK(kiln_onnx_write_file(g, path, &err));
  kiln_ir_free(g);
}

/* Zipf(s = 1.0) over ranks 1..V-1 by inverse CDF on a precomputed table. */
static int32_t zipf_draw(const double *cdf, int v) {
  double u = rng_uniform() * cdf[v - 1];
  int lo = 1, hi = v - 1;
  while (lo < hi) {
    int mid = (lo + hi) / 2;
    if (cdf[mid] < u) lo = mid + 1; else hi = mid;
  }
  return (int32_t)lo;
}

static void write_tokens(const char *dir, const char *name, int rows, int mean_len,
                         double unique_frac) {
  enum { V = 10000 };
  static double cdf[V];
  cdf[0] = 0.0;
  for (int i = 1; i < V; i++) cdf[i] = cdf[i - 1] + 1.0 / pow((double)i + 10.0, 1.0);
  int64_t *off = malloc((size_t)(rows + 1) * sizeof *off);
  int32_t *tok = malloc((size_t)rows * (size_t)mean_len * 2 * sizeof *tok);
  unsigned char *seen = malloc(V);
  off[0] = 0;
  int64_t total = 0, total_unique = 0;
  for (int r = 0; r < rows; r++) {
    int len = (int)(mean_len * (0.5 + rng_uniform())); /* mean_len * [0.5, 1.5) */
    int uniq = (int)(len * unique_frac + 0.5);
    memset(seen, 0, V);
    int32_t *row = tok + off[r];
    int n = 0;
    while (n < uniq) { /* distinct ids, frequent words first */
      int32_t id = zipf_draw(cdf, V);
      if (seen[id]) continue;
      seen[id] = 1;
      row[n++] = id;
    }
    while (n < len) row[n++] = row[(size_t)(rng_uniform() * rng_uniform() * uniq)]; /* repeats */
    for (int i = n - 1; i > 0; i--) { /* shuffle into reading order */
      int j = (int)(rng_uniform() * (i + 1));
      int32_t t = row[i]; row[i] = row[j]; row[j] = t;
    }
    off[r + 1] = off[r] + n;
    total += n;
    total_unique += uniq;
  }
  char path[4096];
  snprintf(path, sizeof path, "%s/%s_tokens.bin", dir, name);
  FILE *f = fopen(path, "wb");
  int64_t nrows = rows;
  if (!f || fwrite(&nrows, sizeof nrows, 1, f) != 1 ||
      fwrite(off, sizeof *off, (size_t)rows + 1, f) != (size_t)rows + 1 ||
      fwrite(tok, sizeof *tok, (size_t)total, f) != (size_t)total || fclose(f) != 0) {
    fprintf(stderr, "make_book_onnx: cannot write %s\n", path);
    exit(1);
  }
  fprintf(stderr, "%s: %d rows, %.1f tokens/row, %.1f unique/row\n", path, rows,
          (double)total / rows, (double)total_unique / rows);
  free(off);
  free(tok);
  free(seen);
}

/* Calibration rows shaped like each model's data, then QDQ: DIR/NAME_int8.onnx. */
static void write_int8(const char *dir, const char *name) {
  enum { ROWS = 500, V = 10000 };
  kiln_error err;
  memset(&err, 0, sizeof err);
  char path[4096];
  snprintf(path, sizeof path, "%s/%s.onnx", dir, name);
  kiln_ir_graph *g, *q;
  CHECK(kiln_onnx_read_file(path, &g, &err));
  int64_t width = g->inputs[0].dims[1].value;
  kiln_matrix x;
  CHECK(kiln_matrix_alloc(&x, ROWS, width, &err));
  int tokens = strcmp(name, "imdb") == 0 || strcmp(name, "reuters") == 0;
  if (tokens) {
    static double cdf[V];
    cdf[0] = 0.0;
    for (int i = 1; i < V; i++) cdf[i] = cdf[i - 1] + 1.0 / pow((double)i + 10.0, 1.0);
    int mean_uniq = strcmp(name, "imdb") == 0 ? 140 : 91;
    for (int64_t r = 0; r < ROWS; r++) {
      int uniq = (int)(mean_uniq * (0.5 + rng_uniform()));
      for (int n = 0; n < uniq; n++) {
        int32_t id = zipf_draw(cdf, V);
        if (id < width) x.values[r * width + id] = 1.0f;
      }
    }
  } else {
    int nonneg = strstr(name, "fashion") != NULL;
    for (int64_t i = 0; i < ROWS * width; i++) {
      double u = rng_uniform();
      x.values[i] = (float)(nonneg ? u : 2.0 * u - 1.0);
    }
  }
  kiln_calibrate_options co;
  kiln_calibrate_options_init(&co);
  kiln_calibration cal;
  CHECK(kiln_calibrate(g, &x, &co, &cal, &err));
  kiln_quantize_options qo;
  kiln_quantize_options_init(&qo);
  kiln_quant_report rep;
  CHECK(kiln_quantize(g, &cal, &qo, &q, &rep, &err));
  int quantized = 0;
  for (int i = 0; i < rep.n_layers; i++) quantized += rep.layers[i].quantized;
  snprintf(path, sizeof path, "%s/%s_int8.onnx", dir, name);
  CHECK(kiln_onnx_write_file(q, path, &err));
  fprintf(stderr, "%s: QDQ, %d/%d layers int8, %s, %lld calibration rows\n", path, quantized,
          rep.n_layers, rep.method, (long long)rep.calibration_rows);
  /* uint8 activations: the zero points of every QuantizeLinear, and of every
   * DequantizeLinear of a non-initializer, move by +128 (the same real values). */
  char done[64][128];
  int n_done = 0;
  for (int i = 0; i < q->n_nodes; i++) {
    const kiln_ir_node *n = &q->nodes[i];
    int isq = strcmp(n->op_type, "QuantizeLinear") == 0;
    int isdq = strcmp(n->op_type, "DequantizeLinear") == 0;
    if (!(isq || (isdq && !kiln_ir_find_initializer(q, n->inputs[0]))) || n->n_inputs < 3) continue;
    kiln_ir_tensor *zp = (kiln_ir_tensor *)kiln_ir_find_initializer(q, n->inputs[2]);
    int seen = 0;
    for (int j = 0; j < n_done; j++) seen |= strcmp(done[j], n->inputs[2]) == 0;
    if (!zp || seen || zp->dtype != KILN_DTYPE_INT8 || n_done == 64) continue;
    snprintf(done[n_done++], sizeof done[0], "%s", n->inputs[2]);
    int64_t ne = kiln_ir_tensor_numel(zp);
    for (int64_t j = 0; j < ne; j++) ((uint8_t *)zp->data)[j] = (uint8_t)(((int8_t *)zp->data)[j] + 128);
    zp->dtype = KILN_DTYPE_UINT8;
  }
  snprintf(path, sizeof path, "%s/%s_int8u8.onnx", dir, name);
  CHECK(kiln_onnx_write_file(q, path, &err));
  /* Fashion-MNIST pruned to 80% (every layer) then int8, stored as kiln quantize --prune
   * stores it (bitmap + non-zeros, decoded by the runtime at create): unstructured
   * (NAME_int8_u80.onnx) and in 4 x 16 blocks (NAME_int8_b80.onnx), for the sparse rows */
  for (int v = 0; v < 2 && strcmp(name, "fashion_mnist") == 0; v++) {
    kiln_ir_graph *pg, *pq;
    snprintf(path, sizeof path, "%s/%s.onnx", dir, name);
    CHECK(kiln_onnx_read_file(path, &pg, &err));
    kiln_prune_options po;
    kiln_prune_options_init(&po);
    po.sparsity = 0.8;
    po.block_k = v ? 4 : 0;
    po.block_n = v ? 16 : 0;
    CHECK(kiln_prune(pg, &po, NULL, &err));
    kiln_calibration pc;
    CHECK(kiln_calibrate(pg, &x, &co, &pc, &err));
    CHECK(kiln_quantize(pg, &pc, &qo, &pq, NULL, &err));
    CHECK(kiln_sparse_pack(pq, 0.4, NULL, &err));
    snprintf(path, sizeof path, "%s/%s_int8_%s80.onnx", dir, name, v ? "b" : "u");
    CHECK(kiln_onnx_write_file(pq, path, &err));
    fprintf(stderr, "%s: 80%% pruned (%s), QDQ, packed\n", path, v ? "4x16 blocks" : "unstructured");
    kiln_calibration_free(&pc);
    kiln_ir_free(pq);
    kiln_ir_free(pg);
  }
  kiln_quant_report_free(&rep);
  kiln_calibration_free(&cal);
  kiln_matrix_free(&x);
  kiln_ir_free(q);
  kiln_ir_free(g);
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: make_book_onnx DIR [SEED] [--int8]\n");
    return 2;
  }
  const char *dir = argv[1];
  int int8 = 0;
  rng_state = 20260101u;
  for (int i = 2; i < argc; i++) {
    if (strcmp(argv[i], "--int8") == 0) int8 = 1;
    else rng_state = strtoull(argv[i], NULL, 10);
  }
  const layer imdb[3] = {{16, "Relu"}, {16, "Relu"}, {1, "Sigmoid"}};
  const layer reuters[3] = {{64, "Relu"}, {64, "Relu"}, {46, "Softmax"}};
  const layer housing[3] = {{64, "Relu"}, {64, "Relu"}, {1, NULL}};
  const layer fashion[2] = {{512, "Relu"}, {10, "Softmax"}};
  write_mlp(dir, "imdb", 10000, imdb, 3);
  write_mlp(dir, "reuters", 10000, reuters, 3);
  write_mlp(dir, "housing", 8, housing, 3);
  write_mlp(dir, "fashion_mnist", 784, fashion, 2);
  write_identity(dir);
  write_tokens(dir, "imdb", 1024, 230, 0.61);
  write_tokens(dir, "reuters", 1024, 140, 0.65);
  if (int8) {
    rng_state = 20260202u; /* calibration rows: their own seed */
    write_int8(dir, "imdb");
    write_int8(dir, "reuters");
    write_int8(dir, "housing");
    write_int8(dir, "fashion_mnist");
  }
  return 0;
}

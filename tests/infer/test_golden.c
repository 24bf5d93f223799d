/* Cross-architecture agreement: the book's MLPs (built with the ir.h builder, weights
 * and inputs from a seeded LCG, so every machine builds the same bits) run through
 * kiln_session_run / kiln_session_run_tokens on every kernel path this CPU has, and
 * their float outputs must match golden outputs computed on x86-64 within 1e-5
 * (max abs).
 *
 * Golden files: tests/infer/golden/<model>.bin, raw little-endian float32, the
 * batch-64 output of the reference kernels (KILN_KERNEL_REF) on x86-64, row-major
 * [64, outputs]. Batch-1 runs are checked against the matching golden rows. To
 * regenerate them (only after a deliberate change to the models below), on x86-64:
 *   KILN_WRITE_GOLDEN=1 ./build/tests/infer_test_golden
 * (or KILN_WRITE_GOLDEN=1 ctest -R infer/test_golden). The directory is
 * $KILN_GOLDEN_DIR, else $KILN_SOURCE_DIR/tests/infer/golden (ctest sets
 * KILN_SOURCE_DIR). The test skips when the runtime reports sessions unsupported. */
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
#include "kiln/ir.h"

#define TOL 1e-5
#define GOLDEN_BATCH 64
#define MAX_LAYERS 4

typedef enum form { FORM_GEMM, FORM_GEMM_TRANSB, FORM_MATMUL_ADD } form;
typedef enum input_kind { INPUT_PIXELS, INPUT_FEATURES, INPUT_MULTIHOT } input_kind;

/* One model: widths[0] inputs, then n_layers Dense layers (ReLU between, `last` after). */
typedef struct model_spec {
  const char *name;
  int n_layers;
  int64_t widths[MAX_LAYERS + 1];
  const char *last; /* "Softmax", "Sigmoid" or NULL (linear) */
  form form;
  input_kind input;
  uint64_t seed;
} model_spec;

static const model_spec MODELS[] = {
    /* Fashion-MNIST (chapter 4/5 style): 784-512-10 softmax. */
    {"fashion_784_512_10_gemm", 2, {784, 512, 10}, "Softmax", FORM_GEMM, INPUT_PIXELS, 11},
    {"fashion_784_512_10_matmul", 2, {784, 512, 10}, "Softmax", FORM_MATMUL_ADD, INPUT_PIXELS, 12},
    /* IMDB: 10000-16-16-1 sigmoid on multi-hot rows. */
    {"imdb_10000_16_16_1_matmul", 3, {10000, 16, 16, 1}, "Sigmoid", FORM_MATMUL_ADD,
     INPUT_MULTIHOT, 21},
    /* California housing: 8-64-64-1 linear. */
    {"housing_8_64_64_1_gemm", 3, {8, 64, 64, 1}, NULL, FORM_GEMM, INPUT_FEATURES, 31},
    /* Reuters: 10000-64-64-46 softmax on multi-hot rows; Gemm with transB = 1 (the
     * [out, in] weight layout other exporters use). */
    {"reuters_10000_64_64_46_gemmt", 3, {10000, 64, 64, 46}, "Softmax", FORM_GEMM_TRANSB,
     INPUT_MULTIHOT, 41},
};
#define N_MODELS ((int)(sizeof MODELS / sizeof MODELS[0]))

/* --- deterministic numbers: integer LCG, exactly representable floats ------------ */

static uint64_t lcg_next(uint64_t *s) {
  *s = *s * 6364136223846793005ULL + 1442695040888963407ULL;
  return *s >> 33;
}
/* Uniform in [0, 1) with 24 random bits: exact in float on every machine. */
static float lcg_unit(uint64_t *s) { return (float)(lcg_next(s) >> 7) * (1.0f / 16777216.0f); }

/* --- model building ----------------------------------------------------------------- */

static void must(kiln_status s, const kiln_error *err, const char *what) {
  if (s != KILN_OK) fail_msg("%s: %s", what, err->message);
}

static kiln_ir_graph *build_model(const model_spec *m) {
  kiln_ir_graph *g = NULL;
  kiln_error err = {0};
  must(kiln_ir_create(m->name, &g, &err), &err, "kiln_ir_create");
  must(kiln_ir_set_opset(g, "", 13, &err), &err, "set_opset");
  const int64_t in_dims[2] = {-1, m->widths[0]};
  const char *const params[2] = {"batch", NULL};
  must(kiln_ir_add_input(g, "x", KILN_DTYPE_FLOAT, in_dims, params, 2, &err), &err, "add_input");

  uint64_t seed = m->seed;
  char prev[64] = "x";
  for (int l = 0; l < m->n_layers; l++) {
    const int64_t fin = m->widths[l], fout = m->widths[l + 1];
    float *w = malloc((size_t)(fin * fout) * sizeof *w);
    float *b = malloc((size_t)fout * sizeof *b);
    assert_non_null(w);
    assert_non_null(b);
    /* Glorot-uniform scale; sqrtf is correctly rounded everywhere. */
    const float limit = sqrtf(6.0f / (float)(fin + fout));
    for (int64_t i = 0; i < fin * fout; i++) w[i] = (2.0f * lcg_unit(&seed) - 1.0f) * limit;
    for (int64_t j = 0; j < fout; j++) b[j] = (lcg_unit(&seed) - 0.5f) * 0.2f;
    /* Generated in [in, out] order; transB stores the transpose. */
    if (m->form == FORM_GEMM_TRANSB) {
      float *t = malloc((size_t)(fin * fout) * sizeof *t);
      assert_non_null(t);
      for (int64_t i = 0; i < fin; i++)
        for (int64_t j = 0; j < fout; j++) t[j * fin + i] = w[i * fout + j];
      free(w);
      w = t;
    }
    char wname[32], bname[32], lin[32], out[32], mid[32], node[32];
    snprintf(wname, sizeof wname, "W%d", l);
    snprintf(bname, sizeof bname, "b%d", l);
    snprintf(lin, sizeof lin, "linear%d", l);
    snprintf(mid, sizeof mid, "matmul%d", l);
    const int last = l == m->n_layers - 1;
    const char *act = last ? m->last : "Relu";
    if (last)
      snprintf(out, sizeof out, "y");
    else
      snprintf(out, sizeof out, "h%d", l);
    const char *affine = act ? lin : out;

    const int64_t wdims[2] = {m->form == FORM_GEMM_TRANSB ? fout : fin,
                              m->form == FORM_GEMM_TRANSB ? fin : fout};
    must(kiln_ir_add_initializer(g, wname, KILN_DTYPE_FLOAT, wdims, 2, w, &err), &err, "W");
    must(kiln_ir_add_initializer(g, bname, KILN_DTYPE_FLOAT, &fout, 1, b, &err), &err, "b");
    free(w);
    free(b);

    kiln_ir_node *n = NULL;
    if (m->form == FORM_MATMUL_ADD) {
      const char *mm_in[2] = {prev, wname}, *mm_out[1] = {mid};
      snprintf(node, sizeof node, "dense%d/MatMul", l);
      must(kiln_ir_add_node(g, "MatMul", node, mm_in, 2, mm_out, 1, &n, &err), &err, "MatMul");
      const char *add_in[2] = {mid, bname}, *add_out[1] = {affine};
      snprintf(node, sizeof node, "dense%d/Add", l);
      must(kiln_ir_add_node(g, "Add", node, add_in, 2, add_out, 1, &n, &err), &err, "Add");
    } else {
      const char *gin[3] = {prev, wname, bname}, *gout[1] = {affine};
      snprintf(node, sizeof node, "dense%d/Gemm", l);
      must(kiln_ir_add_node(g, "Gemm", node, gin, 3, gout, 1, &n, &err), &err, "Gemm");
      must(kiln_ir_node_set_float(n, "alpha", 1.0f, &err), &err, "alpha");
      must(kiln_ir_node_set_float(n, "beta", 1.0f, &err), &err, "beta");
      must(kiln_ir_node_set_int(n, "transB", m->form == FORM_GEMM_TRANSB, &err), &err, "transB");
    }
    if (act) {
      const char *ain[1] = {lin}, *aout[1] = {out};
      snprintf(node, sizeof node, "dense%d/%s", l, act);
      must(kiln_ir_add_node(g, act, node, ain, 1, aout, 1, &n, &err), &err, act);
      if (strcmp(act, "Softmax") == 0)
        must(kiln_ir_node_set_int(n, "axis", -1, &err), &err, "axis");
    }
    snprintf(prev, sizeof prev, "%s", out);
  }
  const int64_t out_dims[2] = {-1, m->widths[m->n_layers]};
  must(kiln_ir_add_output(g, "y", KILN_DTYPE_FLOAT, out_dims, params, 2, &err), &err,
       "add_output");
  return g;
}

/* --- inputs --------------------------------------------------------------------------- */

typedef struct inputs {
  int64_t rows, width;
  float *dense;     /* rows x width */
  int64_t *offsets; /* multi-hot only: rows + 1 */
  int32_t *tokens;
} inputs;

static void make_inputs(const model_spec *m, inputs *in) {
  memset(in, 0, sizeof *in);
  in->rows = GOLDEN_BATCH;
  in->width = m->widths[0];
  in->dense = calloc((size_t)(in->rows * in->width), sizeof *in->dense);
  assert_non_null(in->dense);
  uint64_t seed = m->seed * 7919u + 1u;
  if (m->input == INPUT_PIXELS) {
    for (int64_t i = 0; i < in->rows * in->width; i++) {
      /* Fashion-MNIST-like: mostly dark, pixel / 255. */
      uint64_t r = lcg_next(&seed);
      in->dense[i] = (r % 3 == 0) ? 0.0f : (float)(r % 256) / 255.0f;
    }
  } else if (m->input == INPUT_FEATURES) {
    for (int64_t i = 0; i < in->rows * in->width; i++)
      in->dense[i] = (2.0f * lcg_unit(&seed) - 1.0f) * 2.0f;
  } else {
    /* Reviews / newswires: 5..300 tokens a row, with repeats (count once) and ids
     * outside [0, width) (ignored), which the dense rows leave out. */
    const int64_t max_tokens = 300 + 2;
    in->offsets = malloc((size_t)(in->rows + 1) * sizeof *in->offsets);
    in->tokens = malloc((size_t)(in->rows * max_tokens) * sizeof *in->tokens);
    assert_non_null(in->offsets);
    assert_non_null(in->tokens);
    int64_t t = 0;
    for (int64_t r = 0; r < in->rows; r++) {
      in->offsets[r] = t;
      int64_t n = 5 + (int64_t)(lcg_next(&seed) % 296);
      for (int64_t k = 0; k < n; k++) {
        /* Zipf-ish: small ids (frequent words) more often, so repeats happen. */
        uint64_t u = lcg_next(&seed);
        int32_t id = (int32_t)((u % 4 == 0) ? u % 50 : u % (uint64_t)in->width);
        in->tokens[t++] = id;
        in->dense[r * in->width + id] = 1.0f;
      }
      if (r % 5 == 0) in->tokens[t++] = (int32_t)in->width; /* out of range */
      if (r % 7 == 0) in->tokens[t++] = -3;                 /* out of range */
    }
    in->offsets[in->rows] = t;
  }
}

static void free_inputs(inputs *in) {
  free(in->dense);
  free(in->offsets);
  free(in->tokens);
}

/* --- golden files ------------------------------------------------------------------ */

static int golden_path(const model_spec *m, char *buf, size_t cap) {
  const char *dir = getenv("KILN_GOLDEN_DIR");
  const char *src = getenv("KILN_SOURCE_DIR");
  int n;
  if (dir && *dir)
    n = snprintf(buf, cap, "%s/%s.bin", dir, m->name);
  else if (src && *src)
    n = snprintf(buf, cap, "%s/tests/infer/golden/%s.bin", src, m->name);
  else
    return 0;
  return n > 0 && (size_t)n < cap;
}

static int writing_golden(void) {
  const char *w = getenv("KILN_WRITE_GOLDEN");
  return w && strcmp(w, "1") == 0;
}

/* Reads count little-endian float32 values; 0 when the file is absent or the wrong size. */
static int read_golden(const char *path, float *out, int64_t count) {
  FILE *f = fopen(path, "rb");
  if (!f) return 0;
  unsigned char *raw = malloc((size_t)count * 4 + 1);
  assert_non_null(raw);
  size_t got = fread(raw, 1, (size_t)count * 4 + 1, f);
  fclose(f);
  int ok = got == (size_t)count * 4;
  for (int64_t i = 0; ok && i < count; i++) {
    const unsigned char *p = raw + 4 * i;
    uint32_t u = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
    memcpy(&out[i], &u, sizeof u);
  }
  free(raw);
  return ok;
}

static void write_golden(const char *path, const float *v, int64_t count) {
  char tmp[1200];
  snprintf(tmp, sizeof tmp, "%s.tmp", path);
  FILE *f = fopen(tmp, "wb");
  if (!f) fail_msg("cannot write %s", tmp);
  for (int64_t i = 0; i < count; i++) {
    uint32_t u;
    memcpy(&u, &v[i], sizeof u);
    unsigned char p[4] = {(unsigned char)u, (unsigned char)(u >> 8), (unsigned char)(u >> 16),
                          (unsigned char)(u >> 24)};
    if (fwrite(p, 1, 4, f) != 4) fail_msg("short write to %s", tmp);
  }
  if (fclose(f) != 0 || rename(tmp, path) != 0) fail_msg("cannot write %s", path);
}

/* --- running ------------------------------------------------------------------------- */

typedef struct path_case {
  kiln_kernel_path kernel;
  const char *label;
  int threads;
} path_case;

static const path_case PATHS[] = {
    {KILN_KERNEL_REF, "ref", 1},       {KILN_KERNEL_AVX2, "avx2", 1},
    {KILN_KERNEL_AVX512, "avx512", 1}, {KILN_KERNEL_NEON, "neon", 1},
    {KILN_KERNEL_AUTO, "auto", 1},     {KILN_KERNEL_AUTO, "auto/2 threads", 2},
};
#define N_PATHS ((int)(sizeof PATHS / sizeof PATHS[0]))

/* Max abs difference of got (rows x width) against golden rows starting at row0;
 * a NaN or infinity anywhere is a failure. */
static double max_diff(const float *got, const float *golden, int64_t rows, int64_t width,
                       const char *what) {
  double worst = 0.0;
  for (int64_t i = 0; i < rows * width; i++) {
    if (!isfinite(got[i])) fail_msg("%s: output %lld is %f", what, (long long)i, (double)got[i]);
    double d = fabs((double)got[i] - (double)golden[i]);
    if (d > worst) worst = d;
  }
  return worst;
}

static void check_output(const kiln_tensor_view *y, int64_t rows, int64_t width, const char *what) {
  if (y->dtype != KILN_DTYPE_FLOAT || y->rank != 2 || y->dims[0] != rows || y->dims[1] != width)
    fail_msg("%s: output has dtype %d rank %d dims [%lld, %lld], expected float [%lld, %lld]",
             what, (int)y->dtype, y->rank, (long long)y->dims[0],
             (long long)(y->rank > 1 ? y->dims[1] : -1), (long long)rows, (long long)width);
  assert_non_null(y->data);
}

/* Runs rows [r0, r0 + rows) densely (or as tokens) and returns the output pointer. */
static const float *run_rows(kiln_session *s, const inputs *in, int64_t r0, int64_t rows,
                             int tokens, int64_t width, const char *what) {
  kiln_error err = {0};
  kiln_tensor_view y;
  memset(&y, 0, sizeof y);
  kiln_status st;
  if (tokens) {
    /* Offsets relative to the first token of row r0. */
    int64_t offs[GOLDEN_BATCH + 1];
    for (int64_t r = 0; r <= rows; r++) offs[r] = in->offsets[r0 + r] - in->offsets[r0];
    st = kiln_session_run_tokens(s, offs, in->tokens + in->offsets[r0], rows, &y, 1, &err);
  } else {
    kiln_tensor_view x;
    memset(&x, 0, sizeof x);
    x.name = NULL;
    x.dtype = KILN_DTYPE_FLOAT;
    x.rank = 2;
    x.dims[0] = rows;
    x.dims[1] = in->width;
    x.data = in->dense + r0 * in->width;
    st = kiln_session_run(s, &x, 1, &y, 1, &err);
  }
  if (st != KILN_OK) fail_msg("%s: run failed: %s", what, err.message);
  check_output(&y, rows, width, what);
  return y.data;
}

static void test_model(void **state) {
  const model_spec *m = *state;
  const int64_t width = m->widths[m->n_layers];
  const int64_t count = GOLDEN_BATCH * width;
  char path[1024];
  if (!golden_path(m, path, sizeof path)) {
    print_message("golden: neither KILN_GOLDEN_DIR nor KILN_SOURCE_DIR is set; skipped\n");
    skip();
  }

  kiln_ir_graph *g = build_model(m);
  inputs in;
  make_inputs(m, &in);
  float *golden = malloc((size_t)count * sizeof *golden);
  assert_non_null(golden);

  /* The reference session first: it writes the golden outputs, and tells whether the
   * runtime can run the model at all. */
  kiln_session_options ref_opt;
  kiln_session_options_init(&ref_opt);
  ref_opt.max_batch = GOLDEN_BATCH;
  ref_opt.kernel = KILN_KERNEL_REF;
  kiln_session *ref = NULL;
  kiln_error ref_err = {0};
  kiln_status ref_st = kiln_session_create(g, &ref_opt, &ref, &ref_err);
  if (ref_st == KILN_E_UNSUPPORTED) {
    print_message("%s: sessions unsupported (%s); skipped\n", m->name, ref_err.message);
    free(golden);
    free_inputs(&in);
    kiln_ir_free(g);
    skip();
  }
  if (ref_st != KILN_OK) fail_msg("%s: session (ref): %s", m->name, ref_err.message);

  if (writing_golden()) {
#if !defined(__x86_64__)
    fail_msg("KILN_WRITE_GOLDEN=1: golden outputs are x86-64's; regenerate them there");
#endif
    memcpy(golden, run_rows(ref, &in, 0, GOLDEN_BATCH, 0, width, m->name),
           (size_t)count * sizeof *golden);
    write_golden(path, golden, count);
    print_message("golden: wrote %s\n", path);
  } else if (!read_golden(path, golden, count)) {
    fail_msg("%s: golden file %s is missing or not %lld float32 values; write it on x86-64 "
             "with KILN_WRITE_GOLDEN=1",
             m->name, path, (long long)count);
  }

  double worst_all = 0.0;
  int paths_run = 0;
  for (int p = 0; p < N_PATHS; p++) {
    kiln_session_options opt;
    kiln_session_options_init(&opt);
    opt.max_batch = GOLDEN_BATCH;
    opt.kernel = PATHS[p].kernel;
    opt.threads = PATHS[p].threads;
    kiln_session *s = NULL;
    kiln_error err = {0};
    kiln_status st = kiln_session_create(g, &opt, &s, &err);
    if (st == KILN_E_UNSUPPORTED) continue; /* this CPU or build lacks the path */
    if (st != KILN_OK) fail_msg("%s [%s]: session: %s", m->name, PATHS[p].label, err.message);
    paths_run++;
    double worst = 0.0;
    char what[160];
    const int n_modes = in.tokens ? 2 : 1;
    for (int mode = 0; mode < n_modes; mode++) {
      const char *mname = mode ? "tokens" : "dense";
      /* Batch 64. */
      snprintf(what, sizeof what, "%s [%s %s batch 64]", m->name, PATHS[p].label, mname);
      const float *y = run_rows(s, &in, 0, GOLDEN_BATCH, mode, width, what);
      double d = max_diff(y, golden, GOLDEN_BATCH, width, what);
      if (d > TOL) fail_msg("%s: max abs diff %.3g vs x86 > %g", what, d, TOL);
      if (d > worst) worst = d;
      /* Batch 1: a few rows on their own (the GEMV path), against their golden rows. */
      static const int64_t single[3] = {0, 1, GOLDEN_BATCH - 1};
      for (int k = 0; k < 3; k++) {
        snprintf(what, sizeof what, "%s [%s %s batch 1, row %lld]", m->name, PATHS[p].label,
                 mname, (long long)single[k]);
        y = run_rows(s, &in, single[k], 1, mode, width, what);
        d = max_diff(y, golden + single[k] * width, 1, width, what);
        if (d > TOL) fail_msg("%s: max abs diff %.3g vs x86 > %g", what, d, TOL);
        if (d > worst) worst = d;
      }
    }
    print_message("%-30s %-15s (%s) max abs diff vs x86 golden %.3g\n", m->name, PATHS[p].label,
                  kiln_session_kernel_name(s), worst);
    if (worst > worst_all) worst_all = worst;
    kiln_session_free(s);
  }
  assert_true(paths_run >= 3); /* ref, auto, auto/2 threads at least */
  print_message("%-30s max abs diff vs x86 golden over all paths %.3g\n", m->name, worst_all);

  kiln_session_free(ref);
  free(golden);
  free_inputs(&in);
  kiln_ir_free(g);
}

int main(void) {
  struct CMUnitTest tests[N_MODELS];
  for (int i = 0; i < N_MODELS; i++) {
    struct CMUnitTest t = {MODELS[i].name, test_model, NULL, NULL, (void *)&MODELS[i]};
    tests[i] = t;
  }
  return cmocka_run_group_tests_name("golden", tests, NULL, NULL);
}

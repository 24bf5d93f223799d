/* kiln quantize: magnitude pruning (per layer, global, structured), the pruned model in
 * kiln's float runtime, bitmap sparse storage read back equal and loaded by ONNX
 * Runtime, sizes, and the polynomial-decay pruning callback during training. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "kiln/callbacks.h"
#include "test_quantize_common.h"

static kiln_matrix X, Y;

static int setup(void **state) {
  (void)state;
  q_blobs(2000, 512, 5, 5, &X, &Y);
  return 0;
}
static int teardown(void **state) {
  (void)state;
  kiln_matrix_free(&X);
  kiln_matrix_free(&Y);
  return 0;
}

/* A session straight from the file (kiln's bitmap-packed weights decoded at create, no
 * kiln_sparse_unpack) on kernel path `path`: its output on x and its weight bytes. */
static void run_file(const char *path, kiln_kernel_path kp, const kiln_matrix *x, kiln_matrix *y,
                     size_t *weight_bytes) {
  kiln_error err = {0};
  kiln_session *s = NULL;
  kiln_session_options so;
  kiln_session_options_init(&so);
  so.max_batch = x->rows;
  so.kernel = kp;
  CHECK_E(kiln_session_create_from_file(path, &so, &s, &err), &err);
  kiln_tensor_view in = {0}, out = {0};
  in.dtype = KILN_DTYPE_FLOAT;
  in.rank = 2;
  in.dims[0] = x->rows;
  in.dims[1] = x->cols;
  in.data = x->values;
  CHECK_E(kiln_session_run(s, &in, 1, &out, 1, &err), &err);
  CHECK_E(kiln_matrix_alloc(y, out.dims[0], out.dims[1], &err), &err);
  memcpy(y->values, out.data, (size_t)(out.dims[0] * out.dims[1]) * sizeof(float));
  *weight_bytes = kiln_session_weight_bytes(s);
  kiln_session_free(s);
}

/* The runtime runs bitmap-packed files itself: the same bits and the same packed weights
 * as the unpacked model, float and int8, on the reference and the best int8 path. */
static void check_packed_runs(const char *dense_path, const char *packed_path, const kiln_matrix *x) {
  static const kiln_kernel_path paths[] = {KILN_KERNEL_REF, KILN_KERNEL_AUTO};
  for (int i = 0; i < 2; i++) {
    kiln_matrix a = {0}, b = {0};
    size_t wa = 0, wb = 0;
    run_file(dense_path, paths[i], x, &a, &wa);
    run_file(packed_path, paths[i], x, &b, &wb);
    assert_int_equal(a.rows, b.rows);
    assert_int_equal(a.cols, b.cols);
    assert_memory_equal(a.values, b.values, (size_t)(a.rows * a.cols) * sizeof(float));
    assert_int_equal(wa, wb); /* the chain is decoded, not kept beside the weights */
    kiln_matrix_free(&a);
    kiln_matrix_free(&b);
  }
}

static void test_prune_per_layer_global_structured(void **state) {
  (void)state;
  kiln_error err = {0};
  kiln_ir_graph *g = q_trained_graph(512, 128, 64, 5, 1, &X, &Y, NULL);
  kiln_prune_options po;
  kiln_prune_options_init(&po);
  po.sparsity = 0.8;
  kiln_prune_result r;
  CHECK_E(kiln_prune(g, &po, &r, &err), &err);
  assert_int_equal(r.n, 3);
  for (int i = 0; i < r.n; i++) {
    int64_t want = (int64_t)floor(0.8 * (double)r.layers[i].numel + 1e-9);
    assert_int_equal(r.layers[i].zeros, want);
  }
  kiln_prune_result_free(&r);
  /* the pruned model still runs in kiln's float runtime and mostly agrees */
  kiln_matrix out = {0};
  q_kiln_run(g, &X, &out);
  assert_int_equal(out.cols, 5);
  kiln_matrix_free(&out);
  kiln_ir_free(g);

  g = q_trained_graph(512, 128, 64, 5, 1, &X, &Y, NULL);
  po.global = 1;
  CHECK_E(kiln_prune(g, &po, &r, &err), &err);
  assert_int_equal(r.zeros, (int64_t)floor(0.8 * (double)r.numel + 1e-9));
  print_message("global 80%%: layer sparsity %.3f %.3f %.3f\n",
                (double)r.layers[0].zeros / r.layers[0].numel,
                (double)r.layers[1].zeros / r.layers[1].numel,
                (double)r.layers[2].zeros / r.layers[2].numel);
  kiln_prune_result_free(&r);
  kiln_ir_free(g);

  g = q_trained_graph(512, 128, 64, 5, 1, &X, &Y, NULL);
  po.global = 0;
  po.structured = 1;
  po.sparsity = 0.5;
  CHECK_E(kiln_prune(g, &po, &r, &err), &err);
  for (int i = 0; i < r.n; i++) {
    assert_int_equal(r.layers[i].zero_columns, r.layers[i].columns / 2);
    assert_int_equal(r.layers[i].zeros, r.layers[i].zero_columns * (r.layers[i].numel / r.layers[i].columns));
  }
  kiln_prune_result_free(&r);
  q_kiln_run(g, &X, &out);
  kiln_matrix_free(&out);
  po.sparsity = 1.0;
  assert_int_equal(kiln_prune(g, &po, NULL, &err), KILN_E_RANGE);
  kiln_ir_free(g);
}

static int tensors_equal(const kiln_ir_tensor *a, const kiln_ir_tensor *b) {
  if (!a || !b || a->dtype != b->dtype || a->rank != b->rank || a->bytes != b->bytes) return 0;
  for (int i = 0; i < a->rank; i++)
    if (a->dims[i] != b->dims[i]) return 0;
  return memcmp(a->data, b->data, a->bytes) == 0;
}

/* float pruned -> packed file -> read back -> unpack == pruned; ORT runs the packed
 * float and int8 files; sizes against the float file. */
static void test_sparse_storage(void **state) {
  (void)state;
  kiln_error err = {0};
  kiln_ir_graph *g = q_trained_graph(512, 128, 64, 5, 3, &X, &Y, NULL);
  char fpath[512], ppath[512], qpath[512], spath[512], dpath[512], runjs[1024];
  q_tmp(dpath, sizeof dpath, "pruned_dense.onnx");
  q_tmp(fpath, sizeof fpath, "float.onnx");
  q_tmp(ppath, sizeof ppath, "pruned_sparse.onnx");
  q_tmp(qpath, sizeof qpath, "int8.onnx");
  q_tmp(spath, sizeof spath, "int8_sparse.onnx");
  CHECK_E(kiln_onnx_write_file(g, fpath, &err), &err);
  kiln_matrix ref = {0}, xt = {0};
  CHECK_E(kiln_matrix_slice_rows(&X, 1000, 2000, &xt, &err), &err);
  q_kiln_run(g, &xt, &ref);

  kiln_prune_options po;
  kiln_prune_options_init(&po);
  po.sparsity = 0.8;
  po.skip_last = 1; /* the 64 x 5 classifier stays dense */
  CHECK_E(kiln_prune(g, &po, NULL, &err), &err);
  kiln_matrix pruned_out = {0};
  q_kiln_run(g, &xt, &pruned_out);
  double agree_pruned = q_agreement(&ref, &pruned_out);
  print_message("80%% pruned (no fine-tuning) vs float: argmax agreement %.4f\n", agree_pruned);

  kiln_ir_graph *packed = NULL;
  {
    void *buf = NULL;
    size_t sz = 0;
    CHECK_E(kiln_onnx_write_buffer(g, &buf, &sz, &err), &err);
    CHECK_E(kiln_onnx_read_buffer(buf, sz, "pruned", &packed, &err), &err);
    free(buf);
  }
  int n = 0;
  CHECK_E(kiln_sparse_pack(packed, 0.5, &n, &err), &err);
  assert_int_equal(n, 2);
  CHECK_E(kiln_onnx_write_file(packed, ppath, &err), &err);
  q_onnx_check(ppath);
  kiln_ir_graph *back = NULL;
  CHECK_E(kiln_onnx_read_file(ppath, &back, &err), &err);
  CHECK_E(kiln_sparse_unpack(back, &n, &err), &err);
  assert_int_equal(n, 2);
  for (int i = 0; i < g->n_initializers; i++)
    assert_true(tensors_equal(&g->initializers[i], kiln_ir_find_initializer(back, g->initializers[i].name)));
  kiln_matrix back_out = {0};
  q_kiln_run(back, &xt, &back_out);
  assert_memory_equal(back_out.values, pruned_out.values, (size_t)(xt.rows * 5) * sizeof(float));
  CHECK_E(kiln_onnx_write_file(g, dpath, &err), &err);
  check_packed_runs(dpath, ppath, &xt);
  remove(dpath);
  {
    /* packed values cut short: the session names the Gather and the weight */
    char nm[512];
    kiln_ir_tensor *v = NULL;
    for (int i = 0; i < packed->n_initializers && !v; i++)
      if (strstr(packed->initializers[i].name, ".kiln_sparse_values")) v = &packed->initializers[i];
    assert_non_null(v);
    snprintf(nm, sizeof nm, "%s", v->name);
    v->dims[0] -= 3;
    v->bytes -= 3 * sizeof(float);
    kiln_session *bad = NULL;
    assert_int_equal(kiln_session_create(packed, NULL, &bad, &err), KILN_E_FORMAT);
    print_message("cut values: %s\n", err.message);
    assert_non_null(strstr(err.message, "more set bits than"));
    assert_non_null(strstr(err.message, nm));
    v->dims[0] += 3;
    v->bytes += 3 * sizeof(float);
  }

  /* int8, dense and sparse */
  kiln_calibration cal = {0};
  CHECK_E(kiln_calibrate(g, &X, NULL, &cal, &err), &err);
  kiln_ir_graph *q = NULL;
  CHECK_E(kiln_quantize(g, &cal, NULL, &q, NULL, &err), &err);
  CHECK_E(kiln_onnx_write_file(q, qpath, &err), &err);
  CHECK_E(kiln_sparse_pack(q, 0.5, &n, &err), &err);
  assert_int_equal(n, 2);
  CHECK_E(kiln_onnx_write_file(q, spath, &err), &err);
  q_onnx_check(spath);
  check_packed_runs(qpath, spath, &xt);
  int64_t fb = q_file_size(fpath), pb = q_file_size(ppath), qb = q_file_size(qpath),
          sb = q_file_size(spath);
  print_message("sizes: float %lld, float 80%% sparse %lld (%.3f), int8 %lld (%.3f), "
                "int8 80%% sparse %lld (%.3f)\n",
                (long long)fb, (long long)pb, (double)pb / fb, (long long)qb, (double)qb / fb,
                (long long)sb, (double)sb / fb);
  assert_true((double)qb / fb <= 0.27);
  assert_true((double)sb / fb <= 0.12);
  if (q_have_ort(runjs, sizeof runjs)) {
    kiln_matrix o1 = {0}, o2 = {0};
    q_ort_run(runjs, ppath, &xt, &o1);
    for (int64_t i = 0; i < xt.rows * 5; i++)
      assert_true(fabsf(o1.values[i] - pruned_out.values[i]) < 1e-4f);
    q_ort_run(runjs, spath, &xt, &o2);
    double a = q_agreement(&pruned_out, &o2);
    print_message("int8 + 80%% sparse (ORT) vs the pruned float model: argmax agreement %.4f\n", a);
    assert_true(a >= 0.99);
    kiln_matrix_free(&o1);
    kiln_matrix_free(&o2);
  }
  remove(fpath);
  remove(ppath);
  remove(qpath);
  remove(spath);
  kiln_calibration_free(&cal);
  kiln_ir_free(q);
  kiln_ir_free(back);
  kiln_ir_free(packed);
  kiln_matrix_free(&back_out);
  kiln_matrix_free(&pruned_out);
  kiln_matrix_free(&ref);
  kiln_matrix_free(&xt);
  kiln_ir_free(g);
}

/* Block pruning: 4 x 16 blocks (the int8 runtime's packed groups) zeroed whole, the
 * exact count of blocks per layer; the int8 model then runs on the block-sparse tile (ref,
 * VNNI) and the dense one (AVX2) with the same bits; bad blocks are refused. */
static void test_block_pruning(void **state) {
  (void)state;
  kiln_error err = {0};
  kiln_ir_graph *g = q_trained_graph(512, 128, 64, 5, 1, &X, &Y, NULL);
  kiln_prune_options po;
  kiln_prune_options_init(&po);
  po.sparsity = 0.8;
  po.block_k = 4;
  po.block_n = 16;
  po.skip_last = 1;
  kiln_prune_result r;
  CHECK_E(kiln_prune(g, &po, &r, &err), &err);
  assert_int_equal(r.n, 2);
  for (int i = 0; i < r.n; i++) {
    const kiln_ir_tensor *w = kiln_ir_find_initializer(g, r.layers[i].initializer);
    assert_non_null(w);
    int64_t K = w->dims[0], N = w->dims[1], blocks = (K / 4) * (N / 16), zb = 0;
    const float *v = w->data;
    for (int64_t k0 = 0; k0 < K; k0 += 4)
      for (int64_t n0 = 0; n0 < N; n0 += 16) {
        int zeros = 0;
        for (int64_t k = k0; k < k0 + 4; k++)
          for (int64_t n = n0; n < n0 + 16; n++) zeros += v[k * N + n] == 0.0f;
        assert_true(zeros == 0 || zeros == 64 || zeros < 8); /* whole blocks (or a rare 0) */
        zb += zeros == 64;
      }
    assert_int_equal(zb, (int64_t)floor(0.8 * (double)blocks + 1e-9));
  }
  kiln_prune_result_free(&r);
  kiln_calibration cal = {0};
  CHECK_E(kiln_calibrate(g, &X, NULL, &cal, &err), &err);
  kiln_ir_graph *q = NULL;
  CHECK_E(kiln_quantize(g, &cal, NULL, &q, NULL, &err), &err);
  char path[512];
  q_tmp(path, sizeof path, "block_int8.onnx");
  CHECK_E(kiln_onnx_write_file(q, path, &err), &err);
  kiln_matrix xt = {0}, a = {0}, b = {0};
  CHECK_E(kiln_matrix_slice_rows(&X, 1000, 1300, &xt, &err), &err);
  size_t wa = 0, wb = 0;
  run_file(path, KILN_KERNEL_REF, &xt, &a, &wa);
  static const kiln_kernel_path others[] = {KILN_KERNEL_AVX2, KILN_KERNEL_VNNI, KILN_KERNEL_AUTO};
  for (int i = 0; i < 3; i++) {
    kiln_session *s = NULL;
    kiln_session_options so;
    kiln_session_options_init(&so);
    so.kernel = others[i];
    if (kiln_session_create_from_file(path, &so, &s, &err)) continue; /* the CPU lacks it */
    kiln_session_free(s);
    run_file(path, others[i], &xt, &b, &wb);
    assert_memory_equal(a.values, b.values, (size_t)(a.rows * a.cols) * sizeof(float));
    kiln_matrix_free(&b);
  }
  print_message("4x16 blocks at 80%%: int8 weight bytes in the session %zu (ref, sparse)\n", wa);
  po.block_k = 0;
  po.block_n = 16;
  assert_int_equal(kiln_prune(g, &po, NULL, &err), KILN_E_RANGE);
  po.block_k = 4;
  po.structured = 1;
  assert_int_equal(kiln_prune(g, &po, NULL, &err), KILN_E_INVALID);
  remove(path);
  kiln_matrix_free(&xt);
  kiln_matrix_free(&a);
  kiln_calibration_free(&cal);
  kiln_ir_free(q);
  kiln_ir_free(g);
}

/* Three epochs of batch 64 on X, Y with the pruning schedule c as the only callback. */
static void fit_with_schedule(kiln_model *m, const kiln_prune_schedule_config *c,
                              kiln_callback *cb, kiln_history *h) {
  kiln_error err = {0};
  CHECK_E(kiln_prune_schedule_create(c, cb, &err), &err);
  kiln_fit_options fo;
  kiln_fit_options_init(&fo);
  fo.epochs = 3;
  fo.batch_size = 64;
  fo.callbacks = cb;
  fo.n_callbacks = 1;
  CHECK_E(kiln_model_fit(m, &X, &Y, &fo, h, &err), &err);
}

static void test_schedule_callback(void **state) {
  (void)state;
  kiln_error err = {0};
  kiln_model *m = NULL;
  kiln_ir_graph *g = q_trained_graph(512, 64, 32, 5, 0, &X, &Y, &m);
  kiln_ir_free(g);
  kiln_prune_schedule_config c;
  kiln_prune_schedule_config_init(&c);
  c.final_sparsity = 0.75;
  c.begin_step = 0;
  c.end_step = 40; /* 2000 rows / 64 = 32 batches per epoch: pruning ends in epoch 2 */
  c.frequency = 10;
  kiln_callback cb;
  kiln_history h = {0};
  fit_with_schedule(m, &c, &cb, &h);
  assert_true(fabs(kiln_prune_schedule_sparsity(&cb) - 0.75) < 1e-12);
  for (int i = 0; i < kiln_model_layer_count(m); i++) {
    kiln_layer_info info;
    CHECK_E(kiln_model_layer(m, i, &info, &err), &err);
    if (info.kind != KILN_LAYER_DENSE) continue;
    int64_t n = info.in_features * info.out_features, z = 0;
    for (int64_t e = 0; e < n; e++) z += info.kernel[e] == 0.0f;
    assert_int_equal(z, (int64_t)floor(0.75 * (double)n + 1e-9));
  }
  print_message("pruned during training: final accuracy %.4f\n",
                kiln_history_get(&h, "accuracy", 2));
  assert_true(kiln_history_get(&h, "accuracy", 2) > 0.9);
  kiln_history_free(&h);
  kiln_callback_free(&cb);
  c.end_step = 0;
  assert_int_equal(kiln_prune_schedule_create(&c, &cb, &err), KILN_E_INVALID);
  assert_non_null(strstr(err.message, "end_step"));
  kiln_model_free(m);
}

/* The schedule with 4 x 16 blocks: at the end, exactly floor(0.75 * blocks) aligned
 * blocks of every kernel are all zero (edge blocks included), the rest keep weights. */
static void test_schedule_blocks(void **state) {
  (void)state;
  kiln_error err = {0};
  kiln_model *m = NULL;
  kiln_ir_graph *g = q_trained_graph(512, 64, 32, 5, 0, &X, &Y, &m);
  kiln_ir_free(g);
  kiln_prune_schedule_config c;
  kiln_prune_schedule_config_init(&c);
  c.final_sparsity = 0.75;
  c.end_step = 40;
  c.frequency = 10;
  c.block_k = 4;
  c.block_n = 16;
  kiln_callback cb;
  kiln_history h = {0};
  fit_with_schedule(m, &c, &cb, &h);
  for (int i = 0; i < kiln_model_layer_count(m); i++) {
    kiln_layer_info info;
    CHECK_E(kiln_model_layer(m, i, &info, &err), &err);
    if (info.kind != KILN_LAYER_DENSE) continue;
    int64_t K = info.in_features, N = info.out_features, nbn = (N + 15) / 16;
    int64_t nb = ((K + 3) / 4) * nbn, zb = 0;
    for (int64_t b = 0; b < nb; b++) {
      int64_t nz = 0;
      for (int64_t k = (b / nbn) * 4; k < (b / nbn) * 4 + 4 && k < K; k++)
        for (int64_t n = (b % nbn) * 16; n < (b % nbn) * 16 + 16 && n < N; n++)
          nz += info.kernel[k * N + n] != 0.0f;
      zb += nz == 0;
    }
    assert_int_equal(zb, (int64_t)floor(0.75 * (double)nb + 1e-9));
  }
  print_message("block-pruned during training: final accuracy %.4f\n",
                kiln_history_get(&h, "accuracy", 2));
  assert_true(kiln_history_get(&h, "accuracy", 2) > 0.85);
  kiln_history_free(&h);
  kiln_callback_free(&cb);
  c.block_n = 0;
  assert_int_equal(kiln_prune_schedule_create(&c, &cb, &err), KILN_E_RANGE);
  assert_non_null(strstr(err.message, "block"));
  kiln_model_free(m);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_prune_per_layer_global_structured),
      cmocka_unit_test(test_sparse_storage),
      cmocka_unit_test(test_block_pruning),
      cmocka_unit_test(test_schedule_callback),
      cmocka_unit_test(test_schedule_blocks),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}

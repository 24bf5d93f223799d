/* The runtime's contract on untrusted .onnx bytes, shared by the fuzz_session libFuzzer
 * target and tests/infer/test_fuzz_corpus (which replays the fuzz corpora under ctest,
 * so a crash input once added to tests/fuzz/corpus/ stays a regression test): the
 * reader, then kiln_session_create (validation, shape inference, fusion, QDQ and
 * pruned-weight recognition, planning), then one run with every input zero, must give
 * a session and outputs or a clear error — never a crash, a sanitizer report or a leak.
 * kiln_fuzz_session_one returns 0 when the contract holds, else a short reason. */
#ifndef KILN_TESTS_FUZZ_SESSION_HARNESS_H
#define KILN_TESTS_FUZZ_SESSION_HARNESS_H

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kiln/infer.h"

enum { KILN_FUZZ_BATCH = 2, KILN_FUZZ_MAX_ELEMS = 1 << 20, KILN_FUZZ_MAX_IO = 64 };

/* A failure must say why and hand back nothing. */
static const char *kiln_fuzz_failure_ok(kiln_status s, const void *out, const kiln_error *err) {
  if (s == KILN_OK) return NULL;
  if (out != NULL) return "a failed call handed back an object";
  if (err->message[0] == '\0') return "a failed call left no message";
  return NULL;
}

/* One run with every input zero, its symbolic dims set to KILN_FUZZ_BATCH; inputs too
 * large to allocate here are not run. */
static const char *kiln_fuzz_run_once(kiln_session *s) {
  int n_in = kiln_session_input_count(s), n_out = kiln_session_output_count(s);
  if (n_in < 0 || n_out < 0) return "negative input or output count";
  if (n_in > KILN_FUZZ_MAX_IO || n_out > KILN_FUZZ_MAX_IO) return NULL;
  kiln_tensor_view in[KILN_FUZZ_MAX_IO], out[KILN_FUZZ_MAX_IO];
  void *bufs[KILN_FUZZ_MAX_IO] = {0};
  memset(in, 0, sizeof in);
  const char *why = NULL;
  int ok = 1;
  for (int i = 0; i < n_in && ok; i++) {
    const kiln_ir_value *v = kiln_session_input(s, i);
    size_t eb = kiln_dtype_size(v->dtype);
    if (!eb || v->rank < 0 || v->rank > KILN_IR_MAX_RANK) {
      ok = 0;
      break;
    }
    int64_t n = 1;
    in[i].dtype = v->dtype;
    in[i].rank = v->rank;
    for (int d = 0; d < v->rank; d++) {
      int64_t dim = v->dims[d].value < 0 ? KILN_FUZZ_BATCH : v->dims[d].value;
      in[i].dims[d] = dim;
      if (dim > KILN_FUZZ_MAX_ELEMS || (n *= dim) > KILN_FUZZ_MAX_ELEMS) ok = 0;
    }
    if (ok && !(bufs[i] = calloc((size_t)(n ? n : 1), eb))) ok = 0;
    in[i].data = bufs[i];
  }
  if (ok) {
    kiln_error err;
    memset(&err, 0, sizeof err);
    kiln_status st = kiln_session_run(s, in, n_in, out, n_out, &err);
    why = kiln_fuzz_failure_ok(st, NULL, &err);
    for (int o = 0; st == KILN_OK && o < n_out; o++) {
      /* read each output's last byte, as a caller would */
      size_t eb = kiln_dtype_size(out[o].dtype);
      int64_t n = 1;
      for (int d = 0; d < out[o].rank; d++) n *= out[o].dims[d];
      if (eb && n > 0 && !out[o].data) why = "an output of a successful run has no data";
      else if (eb && n > 0 &&
               ((const volatile uint8_t *)out[o].data)[(size_t)n * eb - 1] == 0x5a)
        err.message[0] = 1;
    }
  }
  for (int i = 0; i < n_in; i++) free(bufs[i]);
  return why;
}

static const char *kiln_fuzz_session_one(const uint8_t *data, size_t size) {
  kiln_ir_graph *g = NULL;
  kiln_error err;
  memset(&err, 0, sizeof err);
  kiln_status s = kiln_onnx_read_buffer(data, size, "fuzz.onnx", &g, &err);
  const char *why = kiln_fuzz_failure_ok(s, g, &err);
  if (why || s != KILN_OK) return why;
  kiln_session_options o;
  kiln_session_options_init(&o);
  o.max_batch = KILN_FUZZ_BATCH;
  kiln_session *sess = NULL;
  memset(&err, 0, sizeof err);
  s = kiln_session_create(g, &o, &sess, &err);
  why = kiln_fuzz_failure_ok(s, sess, &err);
  kiln_ir_free(g); /* the session copies what it needs */
  if (s == KILN_OK) {
    why = kiln_fuzz_run_once(sess);
    kiln_session_free(sess);
  }
  return why;
}

#endif

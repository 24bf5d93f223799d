/* Replays the fuzz corpora (tests/fuzz/corpus/onnx_read and session: the seeds and
 * every crash input found so far) through the runtime's contract on untrusted files
 * (tests/fuzz/session_harness.h): read, create a session, run once. Under the
 * sanitizer build this is the regression test of each fuzzer finding. */
#define _POSIX_C_SOURCE 200809L
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "fuzz/corpus_replay.h"
#include "fuzz/session_harness.h"

static void test_replay_corpora(void **state) {
  (void)state;
  replay_corpus("onnx_read", kiln_fuzz_session_one);
  replay_corpus("session", kiln_fuzz_session_one);
}

int main(void) {
  const struct CMUnitTest tests[] = {cmocka_unit_test(test_replay_corpora)};
  return cmocka_run_group_tests(tests, NULL, NULL);
}

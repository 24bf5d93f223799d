/* Replays tests/fuzz/corpus/train_files (the seeds and every crash input found so far)
 * through the trainer's contract on files a user may be handed
 * (tests/fuzz/train_files_harness.h): .npy, CSV, .kiln checkpoint, training state, JSON
 * spec. Under the sanitizer build this is the regression test of each fuzzer finding. */
#define _POSIX_C_SOURCE 200809L
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "fuzz/corpus_replay.h"
#include "fuzz/train_files_harness.h"

static void test_replay_corpus(void **state) {
  (void)state;
  replay_corpus("train_files", kiln_fuzz_train_file_one);
  kiln_fuzz_train_files_done();
}

int main(void) {
  const struct CMUnitTest tests[] = {cmocka_unit_test(test_replay_corpus)};
  return cmocka_run_group_tests(tests, NULL, NULL);
}

/* libFuzzer target: the trainer's readers of files a user may be handed (the contract is
 * in train_files_harness.h); a broken contract traps. */
#define _POSIX_C_SOURCE 200809L
#include "train_files_harness.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static int cleanup;
  if (!cleanup) cleanup = !atexit(kiln_fuzz_train_files_done); /* the temporary file */
  if (kiln_fuzz_train_file_one(data, size)) __builtin_trap();
  return 0;
}

/* libFuzzer target: any bytes as an .onnx file loaded and run by kiln's runtime (the
 * contract is in session_harness.h); a broken contract traps. */
#include "session_harness.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (kiln_fuzz_session_one(data, size)) __builtin_trap();
  return 0;
}

/* libFuzzer target: any bytes through the ONNX reader must give a graph or a clear
 * error, never a crash, a sanitizer report or a leak. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "kiln/infer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  kiln_ir_graph *g = NULL;
  kiln_error err;
  memset(&err, 0, sizeof err);
  kiln_status s = kiln_onnx_read_buffer(data, size, "fuzz.onnx", &g, &err);
  if (s == KILN_OK) {
    /* Touch what a caller would: every node and initializer. */
    if (!g) __builtin_trap();
    for (int i = 0; i < g->n_initializers; i++)
      if (g->initializers[i].bytes &&
          ((const volatile uint8_t *)g->initializers[i].data)[g->initializers[i].bytes - 1] == 0x5a)
        err.message[0] = 1;
    kiln_ir_free(g);
  } else if (g != NULL || err.message[0] == '\0') {
    __builtin_trap(); /* a failure must leave no graph and say why */
  }
  return 0;
}

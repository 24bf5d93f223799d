/* The smallest useful kiln program, for the benchmark's size figure: loads a .onnx,
 * reads one row of floats from stdin (as many as the model's input width), prints the
 * first output row. Linked statically against kiln_infer and protobuf-c. */
#include <stdio.h>
#include <stdlib.h>

#include "kiln/infer.h"

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: bench_infer_predict MODEL.onnx < row.txt\n");
    return 2;
  }
  kiln_error err;
  kiln_session_options opt;
  kiln_session_options_init(&opt);
  opt.max_batch = 1;
  kiln_session *s;
  if (kiln_session_create_from_file(argv[1], &opt, &s, &err) != KILN_OK) {
    fprintf(stderr, "%s\n", err.message);
    return 1;
  }
  int64_t width = kiln_session_input(s, 0)->dims[1].value;
  float *x = calloc((size_t)width, sizeof *x);
  for (int64_t i = 0; i < width && scanf("%f", &x[i]) == 1; i++) {
  }
  kiln_tensor_view in = {.dtype = KILN_DTYPE_FLOAT, .rank = 2, .dims = {1, width}, .data = x};
  kiln_tensor_view out;
  if (kiln_session_run(s, &in, 1, &out, 1, &err) != KILN_OK) {
    fprintf(stderr, "%s\n", err.message);
    return 1;
  }
  for (int64_t j = 0; j < out.dims[1]; j++) printf("%s%g", j ? " " : "", ((float *)out.data)[j]);
  printf("\n");
  kiln_session_free(s);
  free(x);
  return 0;
}

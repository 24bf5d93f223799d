/* kiln — the runtime (library kiln_infer: libc, libm, libprotobuf-c, pthreads only).
 *
 * Load a .onnx into the graph IR, create a session that validates it, infers
 * shapes and plans every intermediate into one arena sized for a maximum batch,
 * then run it as often as you like: kiln_session_run does no heap allocation.
 * A session is a value you own; two threads with two sessions never interfere
 * (one session must not be run from two threads at once). */
#ifndef KILN_INFER_H
#define KILN_INFER_H

#include <stddef.h>
#include <stdint.h>

#include "kiln/ir.h"
#include "kiln/status.h"
#include "kiln/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

/* --- reading ONNX ----------------------------------------------------------- */

/* Parses and validates a .onnx (ModelProto) into a new graph (free with kiln_ir_free).
 * Every size, offset, index and dtype is checked before use; errors name the node,
 * tensor or byte offset and say what was expected. Initializers from raw_data or
 * typed fields become raw little-endian data. */
kiln_status kiln_onnx_read_file(const char *path, kiln_ir_graph **out, kiln_error *err);
/* The same from memory; source_name is used in messages (e.g. the file name). */
kiln_status kiln_onnx_read_buffer(const void *data, size_t size, const char *source_name,
                                  kiln_ir_graph **out, kiln_error *err);

/* --- sessions --------------------------------------------------------------- */

typedef enum kiln_kernel_path {
  KILN_KERNEL_AUTO = 0, /* the best the CPU supports */
  KILN_KERNEL_REF,      /* the plain C reference kernels */
  KILN_KERNEL_AVX2,     /* x86 AVX2 + FMA */
  KILN_KERNEL_AVX512,   /* x86 AVX-512F */
  KILN_KERNEL_NEON,     /* ARM NEON */
  KILN_KERNEL_VNNI,     /* x86 AVX-512 VNNI for int8 (float layers: AVX-512F) */
  KILN_KERNEL_DOTPROD   /* AArch64 SDOT for int8 (float layers: NEON) */
} kiln_kernel_path;

typedef struct kiln_session_options {
  int64_t max_batch;       /* rows the arena is planned for (default 1024) */
  int threads;             /* intra-op threads splitting a batch (default 1) */
  void *arena;             /* optional caller-supplied arena, 64-byte aligned ... */
  size_t arena_bytes;      /* ... of this size (see kiln_session_plan_bytes) */
  kiln_kernel_path kernel; /* force a kernel path (tests, benchmarks); default AUTO */
} kiln_session_options;

void kiln_session_options_init(kiln_session_options *opt);

typedef struct kiln_session kiln_session;

/* Validates g (ops, attributes, opset, shapes), infers shapes, fuses Gemm+bias+
 * activation and plans memory. The session copies what it needs: g may be freed
 * afterwards. */
kiln_status kiln_session_create(const kiln_ir_graph *g, const kiln_session_options *opt,
                                kiln_session **out, kiln_error *err);
kiln_status kiln_session_create_from_file(const char *path, const kiln_session_options *opt,
                                          kiln_session **out, kiln_error *err);
void kiln_session_free(kiln_session *s);

/* Arena bytes a session of g with these options needs (for a caller-supplied arena). */
kiln_status kiln_session_plan_bytes(const kiln_ir_graph *g, const kiln_session_options *opt,
                                    size_t *bytes, kiln_error *err);
/* The arena bytes of this session, and the bytes of its weights. */
size_t kiln_session_arena_bytes(const kiln_session *s);
size_t kiln_session_weight_bytes(const kiln_session *s);
/* The kernel path in use ("ref", "avx2", "avx512", "neon"). */
const char *kiln_session_kernel_name(const kiln_session *s);

int kiln_session_input_count(const kiln_session *s);
int kiln_session_output_count(const kiln_session *s);
/* Graph inputs and outputs with their (symbolic) dims; owned by the session. */
const kiln_ir_value *kiln_session_input(const kiln_session *s, int i);
const kiln_ir_value *kiln_session_output(const kiln_session *s, int i);

/* A tensor handed to or returned by run. */
typedef struct kiln_tensor_view {
  const char *name; /* inputs: NULL to go by position, else matched by name */
  kiln_dtype dtype;
  int rank;
  int64_t dims[KILN_IR_MAX_RANK];
  void *data;
} kiln_tensor_view;

/* Runs the graph. inputs: one per graph input (the batch dim may be anything up to
 * max_batch, the same for every input). A view with a name binds to the graph input of
 * that name; one with name NULL to the graph input at its position in `inputs`; every
 * graph input must be bound exactly once (an unknown name, a name given twice or a
 * missing input is an error naming the input and listing the expected ones). outputs:
 * n_outputs entries that kiln fills, in the graph's output order: name, dtype, rank,
 * dims, and data pointing into the session's arena (valid until the next run or free).
 * Wrong shapes or dtypes are errors naming the input and what was expected. */
kiln_status kiln_session_run(kiln_session *s, const kiln_tensor_view *inputs, int n_inputs,
                             kiln_tensor_view *outputs, int n_outputs, kiln_error *err);

/* Sparse input: for a model whose one input is a multi-hot row (IMDB, Reuters), runs
 * rows given as token ids (row r is tokens[offsets[r] .. offsets[r+1]); ids outside
 * [0, width) are ignored, repeats count once) without building the dense rows: the
 * first layer gathers weight rows. A graph with several inputs needs
 * kiln_session_run_tokens_io (this call then fails, KILN_E_UNSUPPORTED). */
kiln_status kiln_session_run_tokens(kiln_session *s, const int64_t *offsets,
                                    const int32_t *tokens, int64_t rows,
                                    kiln_tensor_view *outputs, int n_outputs, kiln_error *err);

/* Several inputs, one of them as token ids: token_input names the multi-hot input (NULL:
 * the first graph input) given as offsets/tokens (as above); `others` are the remaining
 * graph inputs as dense tensors, bound as in run (by name, or by position among the graph
 * inputs other than token_input), with the same batch as `rows`. The token input must be
 * read by one node only: a Gemm/MatMul with constant weights (it gathers weight rows) or
 * a Concat of rows along the last axis (the multi-hot columns are written straight into
 * the concatenation, as in the ticket model of listing 7.9); anything else is
 * KILN_E_UNSUPPORTED naming the input (run it on dense rows). One token input per run:
 * densify the others. No heap allocation, as run. */
kiln_status kiln_session_run_tokens_io(kiln_session *s, const char *token_input,
                                       const int64_t *offsets, const int32_t *tokens,
                                       int64_t rows, const kiln_tensor_view *others,
                                       int n_others, kiln_tensor_view *outputs, int n_outputs,
                                       kiln_error *err);

#ifdef __cplusplus
}
#endif
#endif

/* kiln runtime — the session's private structures: values with affine batch shapes,
 * planned steps (one per executed node, after fusion), the thread pool and the
 * kernels' entry points. Private to infer/. */
#ifndef KILN_INFER_SESSION_INTERNAL_H
#define KILN_INFER_SESSION_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "kiln/infer.h"
#include "threads.h"
#include "qgemm.h"
#include "sgemm.h"

#define KILN_ARENA_ALIGN 64

/* A shape whose dims are either fixed (d) or d times the run's batch (batch[i]). */
typedef struct kiln_shape {
  int rank;
  int64_t d[KILN_IR_MAX_RANK];
  unsigned char batch[KILN_IR_MAX_RANK];
} kiln_shape;

static inline int64_t kiln_shape_dim(const kiln_shape *s, int i, int64_t b) {
  return s->batch[i] ? s->d[i] * b : s->d[i];
}
static inline int64_t kiln_shape_eval(const kiln_shape *s, int64_t b, int64_t *dims) {
  int64_t n = 1;
  for (int i = 0; i < s->rank; i++) {
    dims[i] = kiln_shape_dim(s, i, b);
    n *= dims[i];
  }
  return n;
}

typedef enum kiln_value_kind { KILN_VALUE_INPUT, KILN_VALUE_CONST, KILN_VALUE_TEMP } kiln_value_kind;

typedef struct kiln_rt_value {
  char *name;
  kiln_dtype dtype;
  kiln_shape shape;
  kiln_value_kind kind;
  const kiln_ir_tensor *init; /* during create only: the initializer of a CONST */
  void *data;                 /* CONST: session-owned copy (NULL until needed) */
  int consumers;              /* node inputs reading it (+1 per graph output) */
  int is_output;
  int def_step, last_step;    /* lifetime in steps, for the planner */
  size_t bytes;               /* at max_batch, rounded to the arena alignment */
  size_t offset;              /* TEMP: offset in the arena */
} kiln_rt_value;

typedef enum kiln_op {
  KILN_OP_GEMM, /* Gemm, MatMul, MatMul+Add, each + an optional activation */
  KILN_OP_ADD, KILN_OP_SUB, KILN_OP_MUL, KILN_OP_DIV,
  KILN_OP_RELU, KILN_OP_LEAKY_RELU, KILN_OP_SIGMOID, KILN_OP_TANH,
  KILN_OP_SOFTMAX, KILN_OP_LOG_SOFTMAX,
  KILN_OP_CONCAT,
  KILN_OP_COPY, /* Identity, Dropout, Flatten, Reshape, Cast float->float */
  KILN_OP_CAST,
  KILN_OP_FILL_ONES, /* Dropout's mask in inference */
  KILN_OP_QUANTIZE,   /* QuantizeLinear (per tensor or per axis) */
  KILN_OP_DEQUANTIZE, /* DequantizeLinear (per tensor or per axis) */
  KILN_OP_DYNQUANT,   /* DynamicQuantizeLinear */
  KILN_OP_MATMUL_INTEGER,
  KILN_OP_QLINEAR_MATMUL,
  KILN_OP_QGEMM, /* a fused QDQ Gemm/MatMul(+bias)(+Relu)+QuantizeLinear: int8 in, int8 out */
  KILN_OP_SQRT, KILN_OP_RECIPROCAL,
  KILN_OP_REDUCE_MEAN /* over the axes in reduce_mask; the output keeps the reduced dims' order */
} kiln_op;

/* The constants of a quantized step, made at create (owned by the step). */
typedef struct kiln_qstep {
  /* QuantizeLinear / DequantizeLinear: n_scale scales (1 or the size of dim axis) */
  int axis;
  int64_t n_scale;
  float *scale;
  int32_t *zp;
  int32_t lo, hi;      /* QuantizeLinear's output range */
  /* QGEMM and QLinearMatMul */
  int64_t K, N;
  int8_t *pb;          /* QGEMM: W packed for the session's int8 kernel */
  int64_t *bias;       /* QGEMM: bias_eff (see qgemm.h) */
  int32_t *mult, *shift;
  int32_t zp_x, zp_y;  /* QLinearMatMul: zp_x is a's zero point */
  int32_t *zp_b;       /* QLinearMatMul: b's zero point per column */
  int x_unsigned, y_unsigned, b_unsigned;
  int in_azp, in_bzp;  /* MatMulInteger: positions in in[] of the zero points (-1: none) */
  float *yf_scale, *yf_bias; /* QGEMM with a float output: s_x * s_w[n], the float bias */
  int y_float, yf_relu;
  kiln_qgemm_sparse sp;      /* QGEMM: W block-sparse (has_sp; pb is then NULL) */
  int has_sp;
  int x_float;               /* QGEMM reading a float input it quantizes (xf_scale, xf_zp) */
  float xf_scale;
  int32_t xf_zp;
} kiln_qstep;

#define KILN_STEP_MAX_IN 16

typedef struct kiln_step {
  kiln_op op;
  int n_in, n_out;
  int in[KILN_STEP_MAX_IN];
  int out[3];
  int node_index;
  /* Gemm / MatMul */
  int is_matmul;
  int trans_a, trans_b;
  float alpha, beta;
  float *bp;            /* B packed at create (constant 2-D B), else NULL */
  int b_packed;         /* B is constant and packed (bp stays NULL when only planning) */
  int64_t K, N;
  float *bias;          /* N entries: beta * C or the fused Add's bias, or NULL */
  int c_value;          /* C to broadcast into the output first (-1: none) */
  kiln_act act;
  float act_alpha;
  int sparse_ok;        /* may gather rows when A is mostly zeros */
  /* Softmax / Concat */
  int axis;
  int legacy_softmax;   /* opset < 13: flatten to 2-D at axis */
  /* LeakyRelu */
  float slope;
  /* ReduceMean: bit i set when input axis i is reduced */
  unsigned reduce_mask;
  /* quantized ops */
  kiln_qstep *q;
} kiln_step;


struct kiln_session {
  kiln_cpu cpu;
  const kiln_sgemm_kernel *kern;
  const kiln_qgemm_kernel *qkern; /* the int8 path */
  kiln_quantize_row_fn quantize_row; /* QuantizeLinear per tensor (plain C on REF) */
  int64_t max_qk;                 /* largest K of a QGEMM step */
  int8_t **qws;                   /* per thread: int8 A-block workspace */
  int64_t max_batch;
  int threads;
  int opset;
  int n_values;
  kiln_rt_value *values;
  void **ptr; /* per value, set during run */
  int n_steps;
  kiln_step *steps;
  int n_inputs, n_outputs;
  int *input_val, *output_val;
  kiln_ir_value *inputs, *outputs;
  unsigned char *arena;
  size_t arena_bytes;
  void *arena_alloc; /* owned allocation, NULL for a caller's arena */
  size_t weight_bytes;
  float *scratch_b; /* B packed at run time (Gemm/MatMul with a non-constant B) */
  size_t scratch_b_floats;
  int64_t max_k;    /* per-thread buffers below hold max_k entries */
  float **ws;       /* per thread: A-packing workspace */
  int32_t **nz_idx; /* per thread: non-zero columns of a row */
  float **nz_val;
  uint32_t **marks;   /* per thread: token dedupe marks, max_k + 1 generation stamps */
  uint32_t *mark_gen; /* per thread: the stamp of the row being deduplicated */
  kiln_pool pool;
  int has_pool;
  int token_step; /* step that consumes input 0 (for run_tokens), -1 if none */
  char **node_names; /* for messages at run time */
};

/* --- kernels (ops_*.c) --- */
typedef struct kiln_gemm_call {
  kiln_session *s;
  kiln_gemm_args g;
  int sparse; /* gather non-zeros instead of SGEMM */
  /* run_tokens: rows of token ids */
  const int64_t *offsets;
  const int32_t *tokens;
} kiln_gemm_call;

void kiln_exec_gemm(kiln_session *s, const kiln_step *st, int64_t batch);
void kiln_exec_gemm_tokens(kiln_session *s, const kiln_step *st, int64_t rows,
                           const int64_t *offsets, const int32_t *tokens);
void kiln_exec_binary(kiln_session *s, const kiln_step *st, int64_t batch);
void kiln_exec_unary(kiln_session *s, const kiln_step *st, int64_t batch);
void kiln_exec_math_unary(kiln_session *s, const kiln_step *st, int64_t batch); /* Sqrt, Reciprocal */
void kiln_exec_reduce_mean(kiln_session *s, const kiln_step *st, int64_t batch);
void kiln_exec_softmax(kiln_session *s, const kiln_step *st, int64_t batch);
void kiln_exec_concat(kiln_session *s, const kiln_step *st, int64_t batch);
void kiln_exec_copy(kiln_session *s, const kiln_step *st, int64_t batch);
void kiln_exec_cast(kiln_session *s, const kiln_step *st, int64_t batch);
void kiln_exec_fill_ones(kiln_session *s, const kiln_step *st, int64_t batch);
void kiln_exec_quantize(kiln_session *s, const kiln_step *st, int64_t batch);
void kiln_exec_dequantize(kiln_session *s, const kiln_step *st, int64_t batch);
void kiln_exec_dynquant(kiln_session *s, const kiln_step *st, int64_t batch);
void kiln_exec_matmul_integer(kiln_session *s, const kiln_step *st, int64_t batch);
void kiln_exec_qlinear_matmul(kiln_session *s, const kiln_step *st, int64_t batch);
void kiln_exec_qgemm(kiln_session *s, const kiln_step *st, int64_t batch);
/* Up to KILN_QCHAIN_MAX consecutive QGEMM steps from step i, each reading the previous
 * one's output; run together (split across threads from KILN_QCHAIN_SPLIT_WORK
 * multiply-adds in all) by kiln_exec_qgemm_chain. */
#define KILN_QCHAIN_MAX 16
#define KILN_QCHAIN_SPLIT_WORK 1.0e6
int kiln_qgemm_chain_len(const kiln_session *s, int i);
void kiln_exec_qgemm_chain(kiln_session *s, const kiln_step *st, int n, int64_t batch);


/* kiln's bitmap-packed pruned weights (kiln_sparse_pack's BitShift ... Reshape chain):
 * finds each chain among nodes[0, n_nodes), computes its weight once into a new tensor
 * named as the chain's output and marks the chain's 9 nodes in fused[]. *out (n_out
 * tensors) is freed with kiln_sparse_decoded_free. session_sparse.c. */
kiln_status kiln_sparse_decode_chains(const kiln_ir_graph *g, const kiln_ir_node *nodes,
                                      int n_nodes, unsigned char *fused, kiln_ir_tensor **out,
                                      int *n_out, kiln_error *err);
void kiln_sparse_decoded_free(kiln_ir_tensor *t, int n);

/* Numpy broadcasting of in (rank, dims) against out (rank, dims): element strides. */
void kiln_broadcast_strides(int in_rank, const int64_t *in_dims, int out_rank,
                            const int64_t *out_dims, int64_t *strides);

#endif

/* kiln trainer — the model's private structure, shared by the files of train/. */
#ifndef KILN_TRAIN_MODEL_INTERNAL_H
#define KILN_TRAIN_MODEL_INTERNAL_H

#include "kiln/train.h"
#include "rng.h"

#define KILN_NAME_MAX 64

/* The trainer's own loops (sparse first layer, optimizer updates, activations) are
 * compiled for AVX-512 and AVX2 besides the baseline and picked at load time by the
 * CPU (GCC function multiversioning). Same source, no FMA contraction in ISO C mode and
 * no reassociation, so every clone computes the same floats. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define KILN_HOT __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define KILN_HOT
#endif
#define KILN_MAX_INPUTS KILN_MAX_IO

/* A Dense layer's kernel and bias, shared by reference between models made with
 * kiln_model_from_layers (feature extraction): freed when the last user lets go. */
typedef struct kiln_weights {
  int refs;
  float *kernel;
  float *bias;
} kiln_weights;

/* One layer node. Buffers (out, grad, mask, logits) hold cap_rows rows. */
typedef struct kiln_layer {
  kiln_layer_kind kind;
  char name[KILN_NAME_MAX];
  int n_inputs;
  kiln_node inputs[KILN_MAX_INPUTS];
  int64_t in_features;
  int64_t out_features;
  kiln_activation activation;
  kiln_initializer initializer;
  float init_constant;
  kiln_regularizer reg;
  float rate;

  kiln_weights *weights; /* Dense: owns kernel and bias (shared, refcounted) */
  struct kiln_custom *custom; /* KILN_LAYER_CUSTOM: class, ctx, weights (custom_layer.h) */
  float *kernel; /* in_features x out_features (weights->kernel) */
  float *bias;   /* out_features (weights->bias) */
  float *grad_kernel;
  float *grad_bias;

  /* Batch state. For an Input fed CSR rows, `sparse` points at the batch's CSR
   * matrix and `out` is unused; a Concatenate with a CSR input builds the CSR
   * concatenation of its inputs in `csr` (so the Dense after it stays sparse). */
  const kiln_matrix *sparse;
  kiln_matrix csr;     /* its arrays are the three below (borrowed) */
  int64_t csr_cap;     /* entries csr col_idx and csr_values hold */
  int64_t csr_row_cap; /* rows csr row_ptr holds */
  float *csr_values;   /* NULL until a concatenation needs values (not all ones) */
  float *out;    /* rows x out_features, after the activation */
  float *grad;   /* dL/d out, rows x out_features */
  float *mask;   /* Dropout: 0 or 1/(1-rate) per element */
  float *logits; /* the output layer, when its loss is fused with its activation */
  int needs_grad; /* some trainable layer lies upstream, so dL/d out is needed */
  int active;     /* an output depends on it (set by compile; others never run) */
  int fused;      /* a model output whose loss takes the logits (no activation backward) */
} kiln_layer;

/* One model output with its compile settings (Keras' per-output loss, loss_weights
 * and metrics) and its log keys. */
typedef struct kiln_output {
  kiln_node node;
  kiln_loss loss;
  float weight;
  /* The loss gradient is written straight into the layer's grad (the usual case);
   * otherwise (the node also feeds other layers) it goes to scratch and is added. */
  int direct;
  float *scratch;
  kiln_metric **metrics;
  int n_metrics;
  char **metric_names; /* names given to compile, for checkpoints */
  int n_metric_names;
  char *loss_key, *val_loss_key;          /* "<output>_loss" (several outputs only) */
  char *metric_keys[KILN_LOGS_MAX];       /* per metric: "<name>" or "<output>_<name>" */
  char *val_metric_keys[KILN_LOGS_MAX];
} kiln_output;

/* A trainable tensor with its optimizer slots. */
typedef struct kiln_param {
  float *value;
  float *grad;
  float *slot1; /* SGD momentum / RMSprop velocity / Adam m */
  float *slot2; /* Adam v */
  int64_t size;
  kiln_regularizer reg;
  kiln_node layer; /* the Dense layer it belongs to */
  int is_bias;
} kiln_param;

struct kiln_model {
  uint64_t seed;
  kiln_rng init_rng;
  kiln_rng shuffle_rng;
  kiln_rng dropout_rng;

  kiln_layer *layers;
  int n_layers;
  int cap_layers;
  kiln_node inputs[KILN_MAX_IO];  /* set_inputs (or, once compiled, the resolved list) */
  int n_inputs;                   /* 0: every Input node in the order added */
  kiln_node outputs[KILN_MAX_IO]; /* set_output(s) (or, once compiled, the resolved list) */
  int n_outputs;                  /* 0: the last node added */
  kiln_node last; /* the last node added (Sequential API) */

  /* compile state */
  int compiled;
  kiln_optimizer opt;
  int64_t iterations; /* optimizer steps taken */
  kiln_output outs[KILN_MAX_IO];
  int n_outs;
  /* Output 0's loss and compile metric names, as before several outputs (read by
   * older code and tests; owned by outs[0]). */
  kiln_loss loss;
  char **metric_names;
  int n_metric_names;
  kiln_param *params;
  int n_params;
  /* Threads that split the optimizer step (kiln_pool, infer/threads.h), made at the
   * first step of a model large enough; opt_threads caps them (0: up to 2 per the online
   * CPUs). */
  struct kiln_pool *workers;
  int workers_tried; /* the first step has decided (cleared with the workers) */
  int opt_threads;

  /* batch buffers */
  int64_t cap_rows;
  int stop_training;
  int epoch; /* epochs completed by fit (the next fit's default initial_epoch) */
  /* Set by kiln_model_fail from a callback; fit returns it after the hook. */
  kiln_status fail_status;
  char fail_message[KILN_ERROR_MESSAGE_MAX];
};

/* model.c */
kiln_layer *kiln_model_layer_ptr(kiln_model *m, kiln_node node);
/* The model's inputs / outputs as set or defaulted; returns their count. */
int kiln_model_resolve_inputs(const kiln_model *m, kiln_node *out);
int kiln_model_resolve_outputs(const kiln_model *m, kiln_node *out);
/* Makes every layer's batch buffers hold `rows` rows. */
kiln_status kiln_model_reserve(kiln_model *m, int64_t rows, kiln_error *err);
/* True when the output layer's activation is fused into the loss. */
int kiln_loss_fuses(kiln_loss loss, kiln_activation act);

/* dense.c — kernels: plain C references and the BLAS paths used in training. */
void kiln_dense_forward(const kiln_layer *l, const float *x, int64_t rows, float *z);
void kiln_dense_forward_csr(const kiln_layer *l, const kiln_matrix *x, float *z);
void kiln_dense_forward_ref(const float *x, const float *w, const float *b, int64_t rows,
                            int64_t in, int64_t out, float *z);
void kiln_dense_backward_params(kiln_layer *l, const float *x, int64_t rows, const float *dz);
void kiln_dense_backward_params_csr(kiln_layer *l, const kiln_matrix *x, const float *dz);
void kiln_dense_backward_params_ref(const float *x, const float *dz, int64_t rows, int64_t in,
                                    int64_t out, float *gw, float *gb);
/* dx += dz W^T */
void kiln_dense_backward_input(const kiln_layer *l, const float *dz, int64_t rows, float *dx);
void kiln_dense_backward_input_ref(const float *dz, const float *w, int64_t rows, int64_t in,
                                   int64_t out, float *dx);

/* activation.c */
void kiln_activation_forward(kiln_activation a, float *z, int64_t rows, int64_t cols);
/* g <- dL/dz given g = dL/dy and y = act(z). */
void kiln_activation_backward(kiln_activation a, const float *y, float *g, int64_t rows,
                              int64_t cols);

/* loss.c — mean loss of a batch, and dL/d(output) (or dL/d(logits) when fused) in grad.
 * y_true is rows x true_cols. Returns the loss. */
double kiln_loss_compute(kiln_loss loss, int fused, const float *pred, const float *logits,
                         const float *y_true, int64_t true_cols, int64_t rows, int64_t cols,
                         float *grad);
/* log(sum(exp(z))) of n logits, computed from the largest: the plain reference in
 * double exp, and the float-exp version the crossentropy uses (tested against it). */
double kiln_logsumexp_ref(const float *z, int64_t n);
double kiln_logsumexp(const float *z, int64_t n);
/* Checks that targets fit the loss and the output width; names the bad row. */
kiln_status kiln_loss_check_targets(kiln_loss loss, const kiln_matrix *y, int64_t out_cols,
                                    kiln_error *err);
/* Regularization penalty of all kernels; with add_grad, its gradient is added. */
double kiln_regularization(kiln_model *m, int add_grad);

/* train_step.c — loss and gradients of (x, y) as one batch (training: dropout on), for
 * gradient checks and custom training loops. The gradients stay in the layers. */
kiln_status kiln_model_gradients(kiln_model *m, const kiln_matrix *x, const kiln_matrix *y,
                                 int training, double *loss, kiln_error *err);
/* The same for several inputs/outputs; per_output (may be NULL) gets each output's
 * unweighted loss. */
kiln_status kiln_model_gradients_io(kiln_model *m, const kiln_io *x, const kiln_io *y,
                                    int training, double *loss, double *per_output,
                                    kiln_error *err);

/* model.c — freeing what a model owns (weights are refcounted: from_layers shares them). */
void kiln_layer_free_batch_buffers(kiln_layer *l);
void kiln_model_free_compile_state(kiln_model *m);
void kiln_weights_release(kiln_weights *w);
/* layer_build.c — Keras' class name of a built-in layer kind ("Dense", ...). */
const char *kiln_layer_kind_name(kiln_layer_kind k);
/* layer_build.c — KILN_E_INVALID naming `what` unless input is a node of m. */
kiln_status kiln_model_check_input_node(const kiln_model *m, kiln_node input, const char *what,
                                        kiln_error *err);

/* A batch of rows gathered from the caller's x: dense rows land in the Input
 * layer's buffer, CSR rows in `csr` (arrays sized for the largest batch). */
typedef struct batch_source {
  const kiln_matrix *x;
  kiln_matrix csr;
  int64_t cap_nnz;
} batch_source;

/* The data of one call, in the model's input and output order. */
typedef struct io_data {
  int n_x, n_y;
  const kiln_matrix *x[KILN_MAX_IO];
  const kiln_matrix *y[KILN_MAX_IO];
} io_data;

/* One batch source per model input. */
typedef struct feed {
  int n;
  batch_source src[KILN_MAX_IO];
} feed;


/* batch_feed.c — one batch source per input; kiln_feed_gather copies rows idx[begin..]
 * (or begin.. when idx is NULL) into the Input layers. */
kiln_status kiln_feed_init(feed *f, const io_data *d, int64_t batch, kiln_error *err);
void kiln_feed_free(feed *f);
void kiln_feed_gather(feed *f, kiln_model *m, const int64_t *idx, int64_t begin, int64_t rows);

/* graph_pass.c — the passes over the layer graph and the outputs' summed loss. */
kiln_status kiln_graph_forward(kiln_model *m, int64_t rows, int training, kiln_error *err);
void kiln_graph_backward(kiln_model *m, int64_t rows);
double kiln_outputs_loss(kiln_model *m, int64_t rows, const float *const *y,
                         const int64_t *ycols, double *per_output, int with_grad);
kiln_status kiln_loss_and_gradients(kiln_model *m, int64_t rows, const float *const *y,
                                    const int64_t *ycols, int training, double *loss,
                                    double *per_output, kiln_error *err);

/* fit_prepare.c — a call's data checked against the model; the evaluation pass. */
kiln_status kiln_check_compiled(const kiln_model *m, int64_t batch, const char *what,
                                kiln_error *err);
kiln_status kiln_resolve_io(const kiln_model *m, const kiln_io *x, const kiln_io *y,
                            const char *what, io_data *d, kiln_error *err);
kiln_status kiln_fit_prepare(kiln_model *m, const io_data *d, int64_t batch, const char *what,
                             kiln_error *err);
kiln_status kiln_run_eval(kiln_model *m, const io_data *d, int64_t begin, int64_t end,
                          int64_t batch, double *loss_out, double *per_output, kiln_error *err);
void kiln_logs_fill(kiln_model *m, kiln_logs *logs, double loss, const double *per_output,
                    int val);
kiln_io kiln_io_one(const kiln_matrix *x);

/* optimizer.c */
kiln_status kiln_optimizer_prepare(kiln_model *m, kiln_error *err);
void kiln_optimizer_step(kiln_model *m);
/* Stops the optimizer step's threads (kiln_model_free_compile_state). */
void kiln_optimizer_free_workers(kiln_model *m);

#endif

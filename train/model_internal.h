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
#define KILN_MAX_INPUTS 8

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

  float *kernel; /* in_features x out_features */
  float *bias;   /* out_features */
  float *grad_kernel;
  float *grad_bias;

  /* Batch state. For an Input fed CSR rows, `sparse` points at the batch's CSR
   * matrix and `out` is unused. */
  const kiln_matrix *sparse;
  float *out;    /* rows x out_features, after the activation */
  float *grad;   /* dL/d out, rows x out_features */
  float *mask;   /* Dropout: 0 or 1/(1-rate) per element */
  float *logits; /* the output layer, when its loss is fused with its activation */
  int needs_grad; /* some trainable layer lies upstream, so dL/d out is needed */
} kiln_layer;

/* A trainable tensor with its optimizer slots. */
typedef struct kiln_param {
  float *value;
  float *grad;
  float *slot1; /* SGD momentum / RMSprop velocity / Adam m */
  float *slot2; /* Adam v */
  int64_t size;
  kiln_regularizer reg;
} kiln_param;

struct kiln_model {
  uint64_t seed;
  kiln_rng init_rng;
  kiln_rng shuffle_rng;
  kiln_rng dropout_rng;

  kiln_layer *layers;
  int n_layers;
  int cap_layers;
  kiln_node output;
  int output_set;
  kiln_node last; /* the last node added (Sequential API) */

  /* compile state */
  int compiled;
  kiln_loss loss;
  kiln_optimizer opt;
  int64_t iterations; /* optimizer steps taken */
  kiln_metric **metrics;
  int n_metrics;
  char **metric_names; /* names given to compile, for checkpoints */
  int n_metric_names;
  kiln_param *params;
  int n_params;
  char *val_keys[KILN_LOGS_MAX]; /* "val_<name>" strings owned by the model */

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
/* Checks that targets fit the loss and the output width; names the bad row. */
kiln_status kiln_loss_check_targets(kiln_loss loss, const kiln_matrix *y, int64_t out_cols,
                                    kiln_error *err);
/* Regularization penalty of all kernels; with add_grad, its gradient is added. */
double kiln_regularization(kiln_model *m, int add_grad);

/* fit.c — loss and gradients of (x, y) as one batch (training: dropout on), for
 * gradient checks and custom training loops. The gradients stay in the layers. */
kiln_status kiln_model_gradients(kiln_model *m, const kiln_matrix *x, const kiln_matrix *y,
                                 int training, double *loss, kiln_error *err);

/* optimizer.c */
kiln_status kiln_optimizer_prepare(kiln_model *m, kiln_error *err);
void kiln_optimizer_step(kiln_model *m);

#endif

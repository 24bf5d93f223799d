/* kiln — the Keras-style trainer (library kiln_train, links OpenBLAS).
 *
 * A model is a DAG of named layer nodes. The Sequential calls (kiln_model_add_*)
 * append a layer whose input is the last node added; the functional calls take the
 * input node explicitly. Weights are created when a layer is added (its input width
 * is known then), drawn from the model's seed: one seed makes weight init, shuffling
 * and dropout identical from run to run.
 *
 * Ownership: kiln_model_create returns a model the caller frees with
 * kiln_model_free. Matrices passed in are borrowed for the call; matrices and
 * histories filled by kiln are owned by the caller (kiln_matrix_free,
 * kiln_history_free). No call prints: verbose output goes to the FILE* the caller
 * names in kiln_fit_options. */
#ifndef KILN_TRAIN_H
#define KILN_TRAIN_H

#include <stdint.h>
#include <stdio.h>
#include "kiln/status.h"
#include "kiln/tensor.h"
#include "kiln/data.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct kiln_model kiln_model;
typedef int kiln_node; /* a layer's index in its model */

/* --- layers -------------------------------------------------------------- */

typedef enum kiln_activation {
  KILN_ACTIVATION_LINEAR = 0,
  KILN_ACTIVATION_RELU,
  KILN_ACTIVATION_SIGMOID,
  KILN_ACTIVATION_SOFTMAX,
  KILN_ACTIVATION_TANH
} kiln_activation;

typedef enum kiln_initializer {
  KILN_INIT_GLOROT_UNIFORM = 0,
  KILN_INIT_HE_NORMAL,
  KILN_INIT_ZEROS,
  KILN_INIT_CONSTANT
} kiln_initializer;

/* l1 * sum|w| + l2 * sum w^2 is added to the training loss (keras.regularizers). */
typedef struct kiln_regularizer {
  float l1;
  float l2;
} kiln_regularizer;

typedef struct kiln_dense_options {
  kiln_activation activation;           /* default linear */
  kiln_initializer kernel_initializer;  /* default glorot_uniform */
  float kernel_constant;                /* value for KILN_INIT_CONSTANT */
  kiln_regularizer kernel_regularizer;  /* default none */
  const char *name;                     /* NULL: "dense", "dense_1", ... as Keras */
} kiln_dense_options;

typedef enum kiln_layer_kind {
  KILN_LAYER_INPUT = 0,
  KILN_LAYER_DENSE,
  KILN_LAYER_DROPOUT,
  KILN_LAYER_CONCATENATE, /* joins its inputs' columns, in input order (axis -1) */
  KILN_LAYER_CUSTOM       /* a user layer (kiln_layer_class) */
} kiln_layer_kind;

/* Most graph inputs or outputs of one model, and most inputs of one layer. */
#define KILN_MAX_IO 8

void kiln_dense_options_init(kiln_dense_options *opt);

/* Names <-> enums, for specs and the command line ("relu", "he_normal", ...). */
kiln_status kiln_activation_parse(const char *name, kiln_activation *out, kiln_error *err);
const char *kiln_activation_name(kiln_activation a);
kiln_status kiln_initializer_parse(const char *name, kiln_initializer *out, kiln_error *err);
const char *kiln_initializer_name(kiln_initializer i);

/* --- building a model ---------------------------------------------------- */

kiln_status kiln_model_create(uint64_t seed, kiln_model **out, kiln_error *err);
void kiln_model_free(kiln_model *m);

/* Functional API: each call returns the new node in *out. Names must be unique. */
kiln_status kiln_model_input(kiln_model *m, const char *name, int64_t features, kiln_node *out,
                             kiln_error *err);
kiln_status kiln_model_dense(kiln_model *m, kiln_node input, int64_t units,
                             const kiln_dense_options *opt, kiln_node *out, kiln_error *err);
kiln_status kiln_model_dropout(kiln_model *m, kiln_node input, float rate, const char *name,
                               kiln_node *out, kiln_error *err);
/* keras.layers.Concatenate(): a node whose row is its inputs' rows side by side. */
kiln_status kiln_model_concatenate(kiln_model *m, const kiln_node *inputs, int n_inputs,
                                   const char *name, kiln_node *out, kiln_error *err);
/* The model's output node (default: the last node added); before compile. */
kiln_status kiln_model_set_output(kiln_model *m, kiln_node output, kiln_error *err);
/* keras.Model(inputs=[...], outputs=[...]). Inputs default to every Input node in the
 * order added; outputs to the last node added. Must be set before compile. */
kiln_status kiln_model_set_inputs(kiln_model *m, const kiln_node *inputs, int n,
                                  kiln_error *err);
kiln_status kiln_model_set_outputs(kiln_model *m, const kiln_node *outputs, int n,
                                   kiln_error *err);
int kiln_model_input_count(const kiln_model *m);
kiln_node kiln_model_input_node(const kiln_model *m, int i);   /* -1 when out of range */
int kiln_model_output_count(const kiln_model *m);
kiln_node kiln_model_output_node(const kiln_model *m, int i);  /* -1 when out of range */

/* Feature extraction (listing 7.13): a new, uncompiled model made of the layers of src
 * between `inputs` and `outputs` (nodes of src), with the same names, that SHARES their
 * weights with src: training one changes the other (reference-counted; either model
 * may be freed first). `inputs` must be Input layers of src, and every Input the
 * outputs depend on must be among them. Nodes are renumbered: find them with
 * kiln_model_find_layer. Layers may be added to the new model (on any of its nodes,
 * then kiln_model_set_outputs) before it is compiled; optimizer state is not shared. */
kiln_status kiln_model_from_layers(const kiln_model *src, const kiln_node *inputs, int n_inputs,
                                   const kiln_node *outputs, int n_outputs, kiln_model **out,
                                   kiln_error *err);

/* Sequential API: the input of each new layer is the last node added. */
kiln_status kiln_model_add_input(kiln_model *m, int64_t features, kiln_error *err);
kiln_status kiln_model_add_dense(kiln_model *m, int64_t units, kiln_activation activation,
                                 kiln_error *err);
kiln_status kiln_model_add_dense_ex(kiln_model *m, int64_t units, const kiln_dense_options *opt,
                                    kiln_error *err);
kiln_status kiln_model_add_dropout(kiln_model *m, float rate, kiln_error *err);

/* Read access to the graph (for export, tests and tools). Pointers stay valid
 * until the model is freed; kernel is in_features x units, row-major (Keras layout). */
typedef struct kiln_layer_info {
  const char *name;
  kiln_layer_kind kind;
  int n_inputs;
  const kiln_node *inputs;
  int64_t in_features;
  int64_t out_features;
  kiln_activation activation;
  kiln_regularizer regularizer;
  float rate;
  float *kernel;
  float *bias;
} kiln_layer_info;
int kiln_model_layer_count(const kiln_model *m);
kiln_status kiln_model_layer(const kiln_model *m, kiln_node node, kiln_layer_info *out,
                             kiln_error *err);
kiln_status kiln_model_find_layer(const kiln_model *m, const char *name, kiln_node *out,
                                  kiln_error *err);
int64_t kiln_model_param_count(const kiln_model *m);
int64_t kiln_model_input_features(const kiln_model *m);
int64_t kiln_model_output_features(const kiln_model *m);

/* Writes a Keras-style summary (layer, output shape, params, totals) to out. A
 * Sequential stack prints as Keras' Sequential summary; any other graph as Keras'
 * functional one (Model: "functional", with a "Connected to" column such as
 * "title[0][0], text_body[0][0], tags[0][0]"). */
void kiln_model_summary(const kiln_model *m, FILE *out);

/* --- custom layers (a keras.layers.Layer subclass in C) ------------------- */

#define KILN_LAYER_MAX_WEIGHTS 8

/* The export builder a custom layer's lower hook writes into (kiln/export.h). */
typedef struct kiln_layer_lowering kiln_layer_lowering;

/* One trainable weight a custom layer declares in build. kiln allocates it, fills it
 * (from values, else with the initializer drawn from the model's seed), trains it with
 * the model's optimizer (no regularization), counts it in the summary and saves it in
 * checkpoints and training states. */
typedef struct kiln_weight_decl {
  const char *name;             /* e.g. "gamma" (copied; 1..63 characters, unique) */
  int64_t size;                 /* number of floats, > 0 */
  const float *values;          /* size initial values (copied), or NULL: the initializer */
  kiln_initializer initializer; /* default glorot_uniform */
  float constant;               /* for KILN_INIT_CONSTANT */
  int64_t fan_in, fan_out;      /* for glorot_uniform / he_normal; 0: the layer's in / out
                                   features */
} kiln_weight_decl;

/* What build declares: the output width and the weights (zeroed by kiln before build). */
typedef struct kiln_layer_decl {
  int64_t out_features; /* > 0 */
  int n_weights;        /* 0..KILN_LAYER_MAX_WEIGHTS */
  kiln_weight_decl weights[KILN_LAYER_MAX_WEIGHTS];
} kiln_layer_decl;

/* A layer class: stateless functions over the layer's ctx (its configuration) and the
 * weights kiln holds for it, in the order declared. x is rows x in_features, y rows x
 * out_features, row-major. forward writes y; training is 1 in fit, 0 in evaluate and
 * predict. backward gets dy = dL/dy and ADDS dL/dx into dx (NULL when nothing upstream
 * needs it) and dL/dw into weight_grads[i] (zeroed by kiln before the call); y is the
 * forward's output for the same x. Neither may keep pointers past the call. Members may be
 * added at the end in later versions: fill a class with designated initializers
 * (.type = ..., .build = ...) so a new optional member stays NULL. */
typedef struct kiln_layer_class {
  const char *type; /* the class name, e.g. "Scale": summary, checkpoints, errors */
  kiln_status (*build)(void *ctx, int64_t in_features, kiln_layer_decl *decl, kiln_error *err);
  void (*forward)(void *ctx, float *const *weights, const float *x, int64_t rows,
                  int64_t in_features, int64_t out_features, int training, float *y);
  void (*backward)(void *ctx, float *const *weights, const float *x, const float *y,
                   const float *dy, int64_t rows, int64_t in_features, int64_t out_features,
                   float *dx, float *const *weight_grads);
  void (*destroy)(void *ctx); /* frees ctx; may be NULL */
  /* Optional (NULL: ONNX export refuses the layer with KILN_E_UNSUPPORTED naming it and
   * its class). Emits the layer's inference-mode forward pass as standard ONNX nodes
   * through the builder of kiln/export.h (kiln_lowering_add_node, _add_initializer,
   * _fresh_name): read the value named `input` (rows x in_features, float) and make a
   * node write the value named `output` (rows x out_features). weights are the trained
   * values in the order build declared (borrowed for the call: copy them with
   * kiln_lowering_add_initializer, which the graph then owns). Must not keep lw, the
   * names or the weights past the call. Added last to keep the struct's layout. */
  kiln_status (*lower)(void *ctx, kiln_layer_lowering *lw, const float *const *weights,
                       int64_t in_features, int64_t out_features, const char *input,
                       const char *output, kiln_error *err);
} kiln_layer_class;

/* Adds a layer of class cls on input (a dense node: not a CSR-fed Input). cls is
 * borrowed and must outlive the model; the model takes ctx (also on failure: it calls
 * cls->destroy(ctx)). build errors come back prefixed with the layer's name. name NULL:
 * the class type in lower case, then "_1", "_2", ... kiln_model_from_layers shares the
 * layer (ctx and weights) as it shares Dense weights. ONNX export lowers the layer with
 * cls->lower, and refuses it (KILN_E_UNSUPPORTED naming it and its class) when the class
 * has none; checkpoints: see kiln_model_load_custom. */
kiln_status kiln_model_custom(kiln_model *m, kiln_node input, const kiln_layer_class *cls,
                              void *ctx, const char *name, kiln_node *out, kiln_error *err);
/* The weights of a custom layer (0 for other kinds), each as a kiln_weight_info (below:
 * name "<layer>/<declared name>", value, grad, size, rows 1, cols size; owned by the
 * model). They are also among kiln_model_trainable_weight's, in layer order. */
typedef struct kiln_weight_info kiln_weight_info;
int kiln_model_weight_count(const kiln_model *m, kiln_node node);
kiln_status kiln_model_weight(const kiln_model *m, kiln_node node, int i, kiln_weight_info *out,
                              kiln_error *err);
/* The class of a custom layer, or NULL. */
const kiln_layer_class *kiln_model_layer_class(const kiln_model *m, kiln_node node);
/* The ctx a custom layer was given (owned by the model), or NULL. */
void *kiln_model_layer_ctx(const kiln_model *m, kiln_node node);

/* --- compile ------------------------------------------------------------- */

typedef enum kiln_loss {
  KILN_LOSS_BINARY_CROSSENTROPY = 0,
  KILN_LOSS_CATEGORICAL_CROSSENTROPY,
  KILN_LOSS_SPARSE_CATEGORICAL_CROSSENTROPY,
  KILN_LOSS_MEAN_SQUARED_ERROR,
  KILN_LOSS_MEAN_ABSOLUTE_ERROR
} kiln_loss;

kiln_status kiln_loss_parse(const char *name, kiln_loss *out, kiln_error *err);
const char *kiln_loss_name(kiln_loss loss);

typedef enum kiln_optimizer_kind {
  KILN_OPTIMIZER_SGD = 0,
  KILN_OPTIMIZER_RMSPROP,
  KILN_OPTIMIZER_ADAM
} kiln_optimizer_kind;

typedef struct kiln_optimizer {
  kiln_optimizer_kind kind;
  float learning_rate; /* SGD 0.01, RMSprop 0.001, Adam 0.001 */
  float momentum;      /* SGD: 0 */
  int nesterov;        /* SGD: 0 */
  float rho;           /* RMSprop: 0.9 */
  float beta_1;        /* Adam: 0.9 */
  float beta_2;        /* Adam: 0.999 */
  float epsilon;       /* RMSprop, Adam: 1e-7 */
} kiln_optimizer;

/* Keras' defaults for the kind. */
void kiln_optimizer_init(kiln_optimizer *opt, kiln_optimizer_kind kind);
kiln_status kiln_optimizer_parse(const char *name, kiln_optimizer *out, kiln_error *err);
const char *kiln_optimizer_name(kiln_optimizer_kind kind);

/* A metric (the keras.metrics.Metric protocol in C). A user implements one by
 * filling this struct; kiln calls reset_state at the start of every epoch and
 * evaluation, update_state on every batch, result to read it. y_true is as given
 * to fit (rows x true_cols); y_pred is the model's output after its activation. */
typedef struct kiln_metric kiln_metric;
struct kiln_metric {
  const char *name; /* the key in logs and History, e.g. "rmse" */
  void *state;
  void (*reset_state)(kiln_metric *self);
  void (*update_state)(kiln_metric *self, const float *y_true, int64_t true_cols,
                       const float *y_pred, int64_t pred_cols, int64_t rows);
  double (*result)(const kiln_metric *self);
  void (*destroy)(kiln_metric *self); /* frees state and the struct; may be NULL */
};

/* Built-in metrics by Keras name: "accuracy"/"acc" (binary, categorical or sparse
 * categorical, chosen from the loss as Keras does), "binary_accuracy",
 * "categorical_accuracy", "sparse_categorical_accuracy",
 * "top_k_categorical_accuracy" (k = 5) or "top_<k>_accuracy" (e.g. top_3_accuracy),
 * "mae"/"mean_absolute_error", "mse"/"mean_squared_error", "rmse"/"root_mean_squared_error".
 * The caller owns the result (destroy it, or hand it to kiln_model_add_metric). */
kiln_status kiln_metric_create(const char *name, kiln_loss loss, kiln_metric **out,
                               kiln_error *err);
void kiln_metric_free(kiln_metric *m);

/* Sets optimizer, loss and metrics (by name, resolved with kiln_metric_create).
 * Compiling again resets the optimizer state and the metrics. With several outputs the
 * loss and the metrics apply to each output (as Keras does with a single loss). */
kiln_status kiln_model_compile(kiln_model *m, const kiln_optimizer *opt, kiln_loss loss,
                               const char *const *metrics, int n_metrics, kiln_error *err);

/* Per-output compile settings (Keras' loss={...}, loss_weights={...}, metrics={...}). */
typedef struct kiln_output_config {
  const char *output; /* the output layer's name, or NULL: the i-th output */
  kiln_loss loss;
  float loss_weight;  /* >= 0, default 1; the training loss is the weighted sum */
  const char *const *metrics;
  int n_metrics;
} kiln_output_config;
void kiln_output_config_init(kiln_output_config *c);
/* One config per model output (by name or position). With more than one output the
 * logs are Keras': "loss" (weighted total), "<output>_loss", "<output>_<metric>", and
 * their "val_" forms. */
kiln_status kiln_model_compile_outputs(kiln_model *m, const kiln_optimizer *opt,
                                       const kiln_output_config *outputs, int n_outputs,
                                       kiln_error *err);
kiln_loss kiln_model_output_loss(const kiln_model *m, int output);
float kiln_model_output_loss_weight(const kiln_model *m, int output);
/* Adds a custom metric after compile; the model takes ownership (also on failure).
 * kiln_model_add_metric adds it to the first output. */
kiln_status kiln_model_add_metric(kiln_model *m, kiln_metric *metric, kiln_error *err);
kiln_status kiln_model_add_output_metric(kiln_model *m, int output, kiln_metric *metric,
                                         kiln_error *err);
/* What compile set: whether the model is compiled, its loss, optimizer settings, the
 * metric names as given to compile (valid until recompiled or freed), and its
 * output node (the last node added when none was set). */
int kiln_model_is_compiled(const kiln_model *m);
kiln_loss kiln_model_loss(const kiln_model *m);
void kiln_model_get_optimizer(const kiln_model *m, kiln_optimizer *out);
int kiln_model_metric_count(const kiln_model *m);
const char *kiln_model_metric_name(const kiln_model *m, int i);
kiln_node kiln_model_output(const kiln_model *m);
/* The metric names compile gave output `output` (0 .. kiln_model_output_count - 1),
 * valid until recompiled or freed; count 0 and name NULL out of range or before
 * compile. Output 0's are kiln_model_metric_count/_name. */
int kiln_model_output_metric_count(const kiln_model *m, int output);
const char *kiln_model_output_metric_name(const kiln_model *m, int output, int i);
/* Changes the learning rate (schedules). */
void kiln_model_set_learning_rate(kiln_model *m, float lr);
float kiln_model_learning_rate(const kiln_model *m);

/* --- fit / evaluate / predict -------------------------------------------- */

#define KILN_LOGS_MAX 32
/* Named figures: "loss", metric names, and "val_" ones after validation. The key
 * strings are owned by the model (valid until it is freed or recompiled). */
typedef struct kiln_logs {
  int n;
  const char *keys[KILN_LOGS_MAX];
  double values[KILN_LOGS_MAX];
} kiln_logs;
/* The value of key, or NaN when absent. */
double kiln_logs_get(const kiln_logs *logs, const char *key);

/* Hooks called during fit, in Keras' order: on_train_begin; per epoch on_epoch_begin,
 * then per batch on_batch_begin and on_batch_end (logs: the epoch's running "loss" and
 * metrics), then on_epoch_end (logs: the epoch's figures, with "val_" ones when fit
 * validates); on_train_end (the last epoch's logs). Any member may be NULL; build one
 * with designated initializers. A hook may call kiln_model_stop_training to end fit
 * after the current epoch. */
typedef struct kiln_callback {
  void *ctx;
  void (*on_train_begin)(void *ctx, kiln_model *m);
  void (*on_epoch_begin)(void *ctx, kiln_model *m, int epoch);
  /* Before each batch; batch is 0-based, of batches in the epoch. */
  void (*on_batch_begin)(void *ctx, kiln_model *m, int64_t batch, int64_t batches);
  void (*on_batch_end)(void *ctx, kiln_model *m, int64_t batch, int64_t batches,
                       const kiln_logs *logs);
  void (*on_epoch_end)(void *ctx, kiln_model *m, int epoch, const kiln_logs *logs);
  void (*on_train_end)(void *ctx, kiln_model *m, const kiln_logs *logs);
  /* Frees ctx; called by kiln_callback_free (kiln/callbacks.h). May be NULL. */
  void (*destroy)(void *ctx);
} kiln_callback;
void kiln_model_stop_training(kiln_model *m);
/* Called by a callback that cannot go on (a monitored key missing from the logs, a
 * checkpoint that cannot be written, ...): fit stops after the current hook, calls no
 * further hook (not even on_train_end) and returns `status` with this message in its
 * kiln_error. Only the first failure of a fit is kept; fit clears it when it starts. */
void kiln_model_fail(kiln_model *m, kiln_status status, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;
/* Epochs completed by fit over the model's life (0 for a new model; restored by
 * kiln_model_load_state). Each epoch fit finishes sets it to that epoch's index + 1,
 * before the on_epoch_end hooks run. */
int kiln_model_epoch(const kiln_model *m);
void kiln_model_set_epoch(kiln_model *m, int epoch);

/* Data for the model's several inputs or outputs, by position (every name NULL) or by
 * the Input / output layer names (every name set), as Keras takes lists or dicts. */
typedef struct kiln_io {
  int n;
  const char *names[KILN_MAX_IO];
  const kiln_matrix *data[KILN_MAX_IO];
} kiln_io;

typedef struct kiln_fit_options {
  int epochs;               /* default 1 */
  int64_t batch_size;       /* default 32 */
  int shuffle;              /* default 1: reshuffle every epoch */
  double validation_split;  /* fraction in [0, 1): the last rows, before shuffling, as Keras */
  const kiln_matrix *validation_x; /* or explicit validation data (both or neither) */
  const kiln_matrix *validation_y;
  const kiln_io *validation_inputs;  /* for kiln_model_fit_io: validation data of a */
  const kiln_io *validation_targets; /* multi-input/output model (both or neither) */
  int verbose;              /* 0 silent, 1 progress bar (plain lines off a terminal), 2 a line per epoch */
  FILE *progress;           /* where verbose output goes; NULL: nowhere */
  const kiln_callback *callbacks;
  int n_callbacks;
  int initial_epoch;        /* default 0: fit runs epochs initial_epoch..epochs-1 (Keras'
                               initial_epoch, to resume training; none when >= epochs) */
} kiln_fit_options;
void kiln_fit_options_init(kiln_fit_options *opt);

/* The figures of every epoch, as Keras' History.history. */
typedef struct kiln_history {
  int epochs;
  int n_keys;
  char **keys;
  double *values; /* epochs x n_keys, row-major */
} kiln_history;
double kiln_history_get(const kiln_history *h, const char *key, int epoch); /* NaN if absent */
/* CSV with a header "epoch,<keys...>", written atomically (temporary + rename). */
kiln_status kiln_history_write_csv(const kiln_history *h, const char *path, kiln_error *err);
void kiln_history_free(kiln_history *h);

/* Targets y: rows x 1 for binary, sparse categorical and scalar regression; rows x C
 * one-hot (or any distribution) for categorical crossentropy. x may be dense or CSR.
 * history may be NULL. A NaN or infinite loss stops training with KILN_E_DIVERGED
 * (the history so far is kept), unless a callback stops it cleanly: on such a batch
 * fit skips the optimizer step and calls on_batch_end with the non-finite "loss" in
 * the logs; when a hook then calls kiln_model_stop_training (TerminateOnNaN does),
 * fit ends at once, without on_epoch_end for the unfinished epoch (it is not in the
 * history), calls on_train_end and returns KILN_OK with the weights of the last
 * finite batch. A callback's kiln_model_fail makes fit return that failure. */
kiln_status kiln_model_fit(kiln_model *m, const kiln_matrix *x, const kiln_matrix *y,
                           const kiln_fit_options *opt, kiln_history *history, kiln_error *err);
/* Loss and metrics on (x, y), inference mode (no dropout). */
kiln_status kiln_model_evaluate(kiln_model *m, const kiln_matrix *x, const kiln_matrix *y,
                                int64_t batch_size, kiln_logs *out, kiln_error *err);
/* Outputs (rows x output units) in inference mode into *out (allocated by kiln). A
 * model with several outputs needs kiln_model_predict_io. */
kiln_status kiln_model_predict(kiln_model *m, const kiln_matrix *x, int64_t batch_size,
                               kiln_matrix *out, kiln_error *err);

/* The same for models with several inputs and outputs (they also take one of each).
 * predict_io fills outs[0..kiln_model_output_count-1] (each freed by the caller).
 * Errors name what is wrong: a count that differs from the model's (listing its
 * inputs or outputs), an unknown, duplicate or missing name, names given for some
 * arrays only, a NULL array, rows that differ between inputs and targets, a width that
 * differs from its Input layer's. Any Input may be fed CSR rows: a Dense on it, or on a
 * Concatenate of it, takes the sparse path; other layers refuse CSR. */
kiln_status kiln_model_fit_io(kiln_model *m, const kiln_io *x, const kiln_io *y,
                              const kiln_fit_options *opt, kiln_history *history,
                              kiln_error *err);
kiln_status kiln_model_evaluate_io(kiln_model *m, const kiln_io *x, const kiln_io *y,
                                   int64_t batch_size, kiln_logs *out, kiln_error *err);
kiln_status kiln_model_predict_io(kiln_model *m, const kiln_io *x, int64_t batch_size,
                                  kiln_matrix *outs, kiln_error *err);

/* --- the low-level training loop (listings 7.21-7.24) ------------------------ */

/* A hand-written loop over batches, as the book's train_step:
 *   kiln_model_compute_gradients(m, &x, &y, 1, &loss, NULL, outs, &err);  // forward, loss,
 *   ... read or change the gradients (kiln_model_trainable_weight) ...       // backward
 *   kiln_model_apply_gradients(m, &err);                                    // optimizer step
 *   metric->update_state(...) on outs (kiln_metric_create), then kiln_matrix_free(outs).
 * Over the same fixed batches (no shuffling) this computes exactly what fit computes.
 * The model must be compiled (its loss, loss weights and optimizer are used). */

/* model(x, training=...): one forward pass over all rows of x as one batch (with
 * training, Dropout drops). Fills outs[0..kiln_model_output_count-1] (allocated by
 * kiln; free each with kiln_matrix_free). */
kiln_status kiln_model_forward(kiln_model *m, const kiln_io *x, int training, kiln_matrix *outs,
                               kiln_error *err);
/* Forward pass, the compiled loss (weighted sum over outputs plus regularization) in
 * *loss, and its gradient with respect to every trainable weight, for (x, y) as one
 * batch. The gradients replace the last ones (nothing accumulates: no zero_grad).
 * per_output (may be NULL) gets each output's unweighted loss; outs (may be NULL) the
 * predictions of this same pass, as kiln_model_forward. */
kiln_status kiln_model_compute_gradients(kiln_model *m, const kiln_io *x, const kiln_io *y,
                                         int training, double *loss, double *per_output,
                                         kiln_matrix *outs, kiln_error *err);

/* model.trainable_weights with their gradients: every Dense kernel then bias, in layer
 * order (the optimizer's order). value and grad point into the model (valid until it
 * is recompiled or freed; value is shared with models made by kiln_model_from_layers);
 * grad may be changed before kiln_model_apply_gradients (e.g. clipped). */
struct kiln_weight_info {
  char name[96];   /* Keras' variable path, e.g. "dense/kernel", "dense/bias" */
  float *value;
  float *grad;     /* d loss / d value from the last kiln_model_compute_gradients */
  int64_t size;    /* rows * cols */
  int64_t rows;    /* kernel: input width; bias: 1 */
  int64_t cols;    /* units */
};
int kiln_model_trainable_weight_count(const kiln_model *m); /* 0 until compiled */
kiln_status kiln_model_trainable_weight(kiln_model *m, int i, kiln_weight_info *out,
                                        kiln_error *err);
/* optimizer.apply(gradients, model.trainable_weights): one step of the compiled
 * optimizer with the gradients held by the model. */
kiln_status kiln_model_apply_gradients(kiln_model *m, kiln_error *err);

/* --- saving -------------------------------------------------------------- */

/* A kiln checkpoint: the architecture, compile settings and weights (the training
 * state; ONNX is the deployment format). Written atomically. */
kiln_status kiln_model_save(const kiln_model *m, const char *path, kiln_error *err);
kiln_status kiln_model_load(const char *path, kiln_model **out, kiln_error *err);
/* A training state ("KILNSTA1"): the checkpoint above plus what resuming needs to
 * continue exactly as an uninterrupted run — the optimizer slots (SGD momentum,
 * RMSprop velocity, Adam m and v), the iteration count, the epoch counter
 * (kiln_model_epoch) and the init, shuffle and dropout generator states. Written
 * atomically. Saved between epochs (from on_epoch_end, or after fit), a load_state +
 * fit with initial_epoch = kiln_model_epoch continues bit-identically. Custom metrics
 * added with kiln_model_add_metric are not saved (add them again). load_state
 * returns a new model the caller frees. */
kiln_status kiln_model_save_state(const kiln_model *m, const char *path, kiln_error *err);
kiln_status kiln_model_load_state(const char *path, kiln_model **out, kiln_error *err);

/* Custom layers in checkpoints: a file records each custom layer's class type, its
 * weights' names and sizes, and their values (after the Dense weights, in layer order);
 * not its functions or ctx. kiln_model_load / load_state refuse such a file with
 * KILN_E_UNSUPPORTED naming the layer and its class; load it with the *_custom forms,
 * giving the classes again (as Keras' custom_objects). For every custom layer the
 * factory whose cls->type matches makes its ctx: make_ctx(user, layer name, &ctx, err),
 * or ctx = user when make_ctx is NULL (the model then hands user to cls->destroy when
 * freed, once per layer: leave destroy NULL for a shared ctx). build runs again and must
 * declare the file's weights (same names and sizes), else KILN_E_FORMAT naming the layer;
 * the file's values replace the initial ones. */
typedef struct kiln_layer_factory {
  const kiln_layer_class *cls;
  kiln_status (*make_ctx)(void *user, const char *layer_name, void **ctx, kiln_error *err);
  void *user;
} kiln_layer_factory;
kiln_status kiln_model_load_custom(const char *path, const kiln_layer_factory *classes,
                                   int n_classes, kiln_model **out, kiln_error *err);
kiln_status kiln_model_load_state_custom(const char *path, const kiln_layer_factory *classes,
                                         int n_classes, kiln_model **out, kiln_error *err);

/* --- JSON model specs (the `kiln train` format) --------------------------- */

/* A spec is a JSON object whose keys follow Keras' config names:
 *   {"name": "imdb", "seed": 1,
 *    "layers": [{"type": "Input", "shape": [10000]},
 *               {"type": "Dense", "units": 16, "activation": "relu",
 *                "kernel_regularizer": {"l2": 0.002}},
 *               {"type": "Dropout", "rate": 0.5}, ...],
 *    "compile": {"optimizer": "adam", "learning_rate": 0.001,
 *                "loss": "binary_crossentropy", "metrics": ["accuracy"]},
 *    "fit": {"epochs": 4, "batch_size": 512, "validation_split": 0.0}}
 * A functional spec (keras.Model(inputs, outputs), listing 7.9) adds top-level
 * "inputs": [{"name": "title", "shape": [10000]}, ...] (then "layers" holds no Input),
 * layers that take "inputs": ["title", "text_body", "tags"] by name (inputs' or earlier
 * layers'; default: the layer before), {"type": "Concatenate", "inputs": [...]},
 * "outputs": ["priority", "department"] (default: the last layer), and in "compile"
 * Keras' per-output dicts or lists: "loss": {"priority": "mean_squared_error", ...},
 * "loss_weights": {"priority": 1.0, ...}, "metrics": {"priority": ["mae"], ...} (a
 * plain loss or metric list applies to every output). See examples/specs/ticket.json;
 * `kiln train SPEC --x INPUT=FILE.npy ... --y OUTPUT=FILE.npy ...` trains one.
 * Errors name the JSON key path, e.g. "spec.json: layers[1].units: expected a
 * positive integer", "spec.json: compile.loss.prio: not an output of the model". */
typedef struct kiln_spec kiln_spec;
kiln_status kiln_spec_parse(const char *json, const char *source_name, kiln_spec **out,
                            kiln_error *err);
kiln_status kiln_spec_load(const char *path, kiln_spec **out, kiln_error *err);
void kiln_spec_free(kiln_spec *s);
/* Custom layer classes in specs (Keras' custom_objects). A spec layer whose "type" (or
 * Keras' "class_name") is not a built-in one names a class registered here:
 *   {"type": "RMSNorm", "name": "norm", "config": {"epsilon": 1e-6}}
 * (plus "inputs" in a functional spec). A registry is a value the caller owns (no global
 * state): create it, add classes, parse specs with kiln_spec_parse_custom /
 * kiln_spec_load_custom, free it with kiln_layer_registry_free. The registry (and each
 * user pointer) must outlive every spec parsed with it; each class must outlive the
 * models built (as for kiln_model_custom). An unknown type is KILN_E_INVALID naming the
 * layer's index and type and listing the registered classes. */
typedef struct kiln_layer_registry kiln_layer_registry;
/* A spec layer's "config" object, readable during make_ctx only. */
typedef struct kiln_layer_config kiln_layer_config;
/* Makes one layer's ctx (handed to kiln_model_custom, which then owns it) from its
 * config; layer_name is the spec's "name" or NULL. An error here comes back prefixed
 * with the spec's source and "layers[i]". */
typedef kiln_status (*kiln_layer_make_ctx)(void *user, const char *layer_name,
                                           const kiln_layer_config *config, void **ctx,
                                           kiln_error *err);
kiln_status kiln_layer_registry_create(kiln_layer_registry **out, kiln_error *err);
void kiln_layer_registry_free(kiln_layer_registry *r);
/* Registers cls as `name` (copied; not a built-in type, not registered twice).
 * make_ctx NULL: the ctx is user itself (cls->destroy then gets it once per layer:
 * leave destroy NULL for a shared ctx). */
kiln_status kiln_layer_registry_add(kiln_layer_registry *r, const char *name,
                                    const kiln_layer_class *cls, kiln_layer_make_ctx make_ctx,
                                    void *user, kiln_error *err);
/* config[key] as a number in *out, def when absent (KILN_E_FORMAT "config.<key>: ..."
 * when not a finite number). */
kiln_status kiln_layer_config_number(const kiln_layer_config *c, const char *key, double def,
                                     double *out, kiln_error *err);
/* KILN_E_FORMAT naming the first key of config that is not among keys. */
kiln_status kiln_layer_config_check_keys(const kiln_layer_config *c, const char *const *keys,
                                         int n_keys, kiln_error *err);
kiln_status kiln_spec_parse_custom(const char *json, const char *source_name,
                                   const kiln_layer_registry *registry, kiln_spec **out,
                                   kiln_error *err);
kiln_status kiln_spec_load_custom(const char *path, const kiln_layer_registry *registry,
                                  kiln_spec **out, kiln_error *err);

/* Builds and compiles the model. input_features is used when the spec's Input has no
 * shape (0: the spec must give it); seed overrides the spec's seed unless it is
 * KILN_SEED_FROM_SPEC. */
#define KILN_SEED_FROM_SPEC UINT64_MAX
kiln_status kiln_spec_build(const kiln_spec *s, int64_t input_features, uint64_t seed,
                            kiln_model **out, kiln_error *err);
/* The spec's fit settings over kiln_fit_options_init's defaults. */
void kiln_spec_fit_options(const kiln_spec *s, kiln_fit_options *opt);

#ifdef __cplusplus
}
#endif
#endif

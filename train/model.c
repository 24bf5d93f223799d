/* kiln trainer — the model object: create/free, inputs and outputs, read access,
 * batch buffers, the state callbacks see. */
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "custom_layer.h"
#include "model_internal.h"

static const char *const activation_names[] = {"linear", "relu", "sigmoid", "softmax", "tanh"};
static const char *const initializer_names[] = {"glorot_uniform", "he_normal", "zeros",
                                                "constant"};

kiln_status kiln_activation_parse(const char *name, kiln_activation *out, kiln_error *err) {
  if (name == NULL || strcmp(name, "None") == 0) name = "linear";
  for (int i = 0; i < 5; i++)
    if (strcmp(name, activation_names[i]) == 0) {
      *out = (kiln_activation)i;
      return KILN_OK;
    }
  return kiln_error_set(err, KILN_E_INVALID,
                        "unknown activation \"%s\" (expected one of linear, relu, sigmoid, "
                        "softmax, tanh)", name);
}

const char *kiln_activation_name(kiln_activation a) {
  return (unsigned)a < 5 ? activation_names[a] : "?";
}

kiln_status kiln_initializer_parse(const char *name, kiln_initializer *out, kiln_error *err) {
  for (int i = 0; i < 4; i++)
    if (strcmp(name, initializer_names[i]) == 0) {
      *out = (kiln_initializer)i;
      return KILN_OK;
    }
  return kiln_error_set(err, KILN_E_INVALID,
                        "unknown initializer \"%s\" (expected one of glorot_uniform, "
                        "he_normal, zeros, constant)", name);
}

const char *kiln_initializer_name(kiln_initializer i) {
  return (unsigned)i < 4 ? initializer_names[i] : "?";
}

void kiln_dense_options_init(kiln_dense_options *opt) {
  memset(opt, 0, sizeof *opt);
  opt->activation = KILN_ACTIVATION_LINEAR;
  opt->kernel_initializer = KILN_INIT_GLOROT_UNIFORM;
}

kiln_status kiln_model_create(uint64_t seed, kiln_model **out, kiln_error *err) {
  kiln_model *m = calloc(1, sizeof *m);
  if (!m) return kiln_error_set(err, KILN_E_NOMEM, "model: out of memory");
  m->seed = seed;
  kiln_rng_seed(&m->init_rng, seed, KILN_STREAM_WEIGHTS);
  kiln_rng_seed(&m->shuffle_rng, seed, KILN_STREAM_SHUFFLE);
  kiln_rng_seed(&m->dropout_rng, seed, KILN_STREAM_DROPOUT);
  m->last = -1;
  *out = m;
  return KILN_OK;
}

void kiln_layer_free_batch_buffers(kiln_layer *l) {
  free(l->out);
  free(l->grad);
  free(l->mask);
  free(l->logits);
  l->out = l->grad = l->mask = l->logits = NULL;
}

static void free_output(kiln_output *o) {
  for (int i = 0; i < o->n_metrics; i++) {
    kiln_metric_free(o->metrics[i]);
    free(o->metric_keys[i]);
    free(o->val_metric_keys[i]);
  }
  free(o->metrics);
  for (int i = 0; i < o->n_metric_names; i++) free(o->metric_names[i]);
  free(o->metric_names);
  free(o->loss_key);
  free(o->val_loss_key);
  free(o->scratch);
  memset(o, 0, sizeof *o);
}

void kiln_model_free_compile_state(kiln_model *m) {
  for (int k = 0; k < KILN_MAX_IO; k++) free_output(&m->outs[k]);
  m->n_outs = 0;
  m->metric_names = NULL;
  m->n_metric_names = 0;
  for (int i = 0; i < m->n_params; i++) {
    free(m->params[i].slot1);
    free(m->params[i].slot2);
  }
  free(m->params);
  m->params = NULL;
  m->n_params = 0;
  kiln_optimizer_free_workers(m);
  m->compiled = 0;
}

void kiln_weights_release(kiln_weights *w) {
  if (!w || --w->refs > 0) return;
  free(w->kernel);
  free(w->bias);
  free(w);
}

void kiln_model_free(kiln_model *m) {
  if (!m) return;
  kiln_model_free_compile_state(m);
  for (int i = 0; i < m->n_layers; i++) {
    kiln_layer *l = &m->layers[i];
    kiln_weights_release(l->weights);
    kiln_custom_release(l->custom);
    free(l->grad_kernel);
    free(l->grad_bias);
    kiln_layer_free_batch_buffers(l);
    free(l->csr.row_ptr);
    free(l->csr.col_idx);
    free(l->csr_values);
  }
  free(m->layers);
  free(m);
}

kiln_layer *kiln_model_layer_ptr(kiln_model *m, kiln_node node) {
  return (node >= 0 && node < m->n_layers) ? &m->layers[node] : NULL;
}

static kiln_status check_not_compiled(const kiln_model *m, const char *what, kiln_error *err) {
  if (m->compiled)
    return kiln_error_set(err, KILN_E_INVALID,
                          "%s: the model is compiled; set its inputs and outputs before compile",
                          what);
  return KILN_OK;
}

kiln_status kiln_model_set_output(kiln_model *m, kiln_node output, kiln_error *err) {
  kiln_status s = check_not_compiled(m, "set_output", err);
  if (s) return s;
  if ((s = kiln_model_check_input_node(m, output, "output", err))) return s;
  m->outputs[0] = output;
  m->n_outputs = 1;
  return KILN_OK;
}

kiln_status kiln_model_set_inputs(kiln_model *m, const kiln_node *inputs, int n,
                                  kiln_error *err) {
  kiln_status s = check_not_compiled(m, "set_inputs", err);
  if (s) return s;
  if (!inputs || n < 1 || n > KILN_MAX_IO)
    return kiln_error_set(err, KILN_E_INVALID, "set_inputs: needs 1 to %d Input nodes, got %d",
                          KILN_MAX_IO, inputs ? n : 0);
  for (int i = 0; i < n; i++) {
    if ((s = kiln_model_check_input_node(m, inputs[i], "set_inputs", err))) return s;
    if (m->layers[inputs[i]].kind != KILN_LAYER_INPUT)
      return kiln_error_set(err, KILN_E_INVALID,
                            "set_inputs: inputs[%d] is layer \"%s\" (%s), not an Input layer", i,
                            m->layers[inputs[i]].name, kiln_layer_kind_name(m->layers[inputs[i]].kind));
    for (int j = 0; j < i; j++)
      if (inputs[j] == inputs[i])
        return kiln_error_set(err, KILN_E_INVALID, "set_inputs: input \"%s\" is given twice",
                              m->layers[inputs[i]].name);
  }
  memcpy(m->inputs, inputs, (size_t)n * sizeof *inputs);
  m->n_inputs = n;
  return KILN_OK;
}

kiln_status kiln_model_set_outputs(kiln_model *m, const kiln_node *outputs, int n,
                                   kiln_error *err) {
  kiln_status s = check_not_compiled(m, "set_outputs", err);
  if (s) return s;
  if (!outputs || n < 1 || n > KILN_MAX_IO)
    return kiln_error_set(err, KILN_E_INVALID, "set_outputs: needs 1 to %d nodes, got %d",
                          KILN_MAX_IO, outputs ? n : 0);
  for (int i = 0; i < n; i++) {
    if ((s = kiln_model_check_input_node(m, outputs[i], "set_outputs", err))) return s;
    for (int j = 0; j < i; j++)
      if (outputs[j] == outputs[i])
        return kiln_error_set(err, KILN_E_INVALID, "set_outputs: output \"%s\" is given twice",
                              m->layers[outputs[i]].name);
  }
  memcpy(m->outputs, outputs, (size_t)n * sizeof *outputs);
  m->n_outputs = n;
  return KILN_OK;
}

int kiln_model_resolve_inputs(const kiln_model *m, kiln_node *out) {
  if (m->n_inputs) {
    memcpy(out, m->inputs, (size_t)m->n_inputs * sizeof *out);
    return m->n_inputs;
  }
  int n = 0;
  for (int i = 0; i < m->n_layers && n < KILN_MAX_IO; i++)
    if (m->layers[i].kind == KILN_LAYER_INPUT) out[n++] = i;
  return n;
}

int kiln_model_resolve_outputs(const kiln_model *m, kiln_node *out) {
  if (m->n_outputs) {
    memcpy(out, m->outputs, (size_t)m->n_outputs * sizeof *out);
    return m->n_outputs;
  }
  if (m->n_layers == 0) return 0;
  out[0] = m->n_layers - 1;
  return 1;
}

int kiln_model_input_count(const kiln_model *m) {
  kiln_node n[KILN_MAX_IO];
  return kiln_model_resolve_inputs(m, n);
}

kiln_node kiln_model_input_node(const kiln_model *m, int i) {
  kiln_node n[KILN_MAX_IO];
  return i >= 0 && i < kiln_model_resolve_inputs(m, n) ? n[i] : -1;
}

int kiln_model_output_count(const kiln_model *m) {
  kiln_node n[KILN_MAX_IO];
  return kiln_model_resolve_outputs(m, n);
}

kiln_node kiln_model_output_node(const kiln_model *m, int i) {
  kiln_node n[KILN_MAX_IO];
  return i >= 0 && i < kiln_model_resolve_outputs(m, n) ? n[i] : -1;
}

int kiln_model_layer_count(const kiln_model *m) { return m->n_layers; }

kiln_status kiln_model_layer(const kiln_model *m, kiln_node node, kiln_layer_info *out,
                             kiln_error *err) {
  if (node < 0 || node >= m->n_layers)
    return kiln_error_set(err, KILN_E_INVALID, "layer %d does not exist (the model has %d)", node,
                          m->n_layers);
  const kiln_layer *l = &m->layers[node];
  out->name = l->name;
  out->kind = l->kind;
  out->n_inputs = l->n_inputs;
  out->inputs = l->inputs;
  out->in_features = l->in_features;
  out->out_features = l->out_features;
  out->activation = l->activation;
  out->regularizer = l->reg;
  out->rate = l->rate;
  out->kernel = l->kernel;
  out->bias = l->bias;
  return KILN_OK;
}

kiln_status kiln_model_find_layer(const kiln_model *m, const char *name, kiln_node *out,
                                  kiln_error *err) {
  for (int i = 0; i < m->n_layers; i++)
    if (strcmp(m->layers[i].name, name) == 0) {
      *out = i;
      return KILN_OK;
    }
  return kiln_error_set(err, KILN_E_INVALID, "no layer named \"%s\" in this model", name);
}

int64_t kiln_model_param_count(const kiln_model *m) {
  int64_t n = 0;
  for (int i = 0; i < m->n_layers; i++)
    if (m->layers[i].kind == KILN_LAYER_DENSE)
      n += m->layers[i].in_features * m->layers[i].out_features + m->layers[i].out_features;
    else n += kiln_custom_param_count(m->layers[i].custom);
  return n;
}

static kiln_node output_node(const kiln_model *m) {
  return kiln_model_output_node(m, 0);
}

int64_t kiln_model_input_features(const kiln_model *m) {
  kiln_node n = kiln_model_input_node(m, 0);
  return n >= 0 ? m->layers[n].out_features : 0;
}

int64_t kiln_model_output_features(const kiln_model *m) {
  kiln_node o = output_node(m);
  return o >= 0 ? m->layers[o].out_features : 0;
}


/* n floats on a 64-byte line. With plain malloc the buffers' offsets follow the heap's
 * history: a 16-byte change in the model struct moved them and IMDB's sparse kernels
 * went from 0.029 to 0.040 s per epoch (likely 4 KB aliasing of their row stores with
 * the kernel rows' loads); aligned, 0.030 again. */
static float *batch_buffer(size_t n) {
  size_t bytes = (n * sizeof(float) + 63) / 64 * 64;
  return aligned_alloc(64, bytes ? bytes : 64);
}

kiln_status kiln_model_reserve(kiln_model *m, int64_t rows, kiln_error *err) {
  if (rows <= m->cap_rows) return KILN_OK;
  for (int i = 0; i < m->n_layers; i++) {
    kiln_layer *l = &m->layers[i];
    kiln_layer_free_batch_buffers(l);
    size_t n = (size_t)(rows * l->out_features);
    l->out = batch_buffer(n);
    l->grad = batch_buffer(n);
    if (l->kind == KILN_LAYER_DROPOUT) l->mask = batch_buffer(n);
    if (l->fused) l->logits = batch_buffer(n);
    if (!l->out || !l->grad || (l->kind == KILN_LAYER_DROPOUT && !l->mask) ||
        (l->fused && !l->logits)) {
      kiln_layer_free_batch_buffers(l);
      m->cap_rows = 0;
      return kiln_error_set(err, KILN_E_NOMEM, "layer %s: out of memory for a batch of %lld rows",
                            l->name, (long long)rows);
    }
  }
  for (int k = 0; k < m->n_outs; k++) {
    kiln_output *o = &m->outs[k];
    free(o->scratch);
    o->scratch = NULL;
    if (o->direct) continue;
    o->scratch = malloc((size_t)(rows * m->layers[o->node].out_features) * sizeof(float));
    if (!o->scratch) {
      m->cap_rows = 0;
      return kiln_error_set(err, KILN_E_NOMEM, "output %s: out of memory for a batch of %lld rows",
                            m->layers[o->node].name, (long long)rows);
    }
  }
  m->cap_rows = rows;
  return KILN_OK;
}

void kiln_model_set_learning_rate(kiln_model *m, float lr) { m->opt.learning_rate = lr; }
float kiln_model_learning_rate(const kiln_model *m) { return m->opt.learning_rate; }
void kiln_model_stop_training(kiln_model *m) { m->stop_training = 1; }
int kiln_model_epoch(const kiln_model *m) { return m->epoch; }
void kiln_model_set_epoch(kiln_model *m, int epoch) { m->epoch = epoch > 0 ? epoch : 0; }

void kiln_model_fail(kiln_model *m, kiln_status status, const char *fmt, ...) {
  if (m->fail_status != KILN_OK) return; /* the first failure is the one reported */
  m->fail_status = status != KILN_OK ? status : KILN_E_INVALID;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(m->fail_message, sizeof m->fail_message, fmt, ap);
  va_end(ap);
  m->stop_training = 1;
}

int kiln_model_is_compiled(const kiln_model *m) { return m->compiled; }
kiln_loss kiln_model_loss(const kiln_model *m) { return m->loss; }
void kiln_model_get_optimizer(const kiln_model *m, kiln_optimizer *out) { *out = m->opt; }
int kiln_model_metric_count(const kiln_model *m) { return m->n_metric_names; }
const char *kiln_model_metric_name(const kiln_model *m, int i) {
  return i >= 0 && i < m->n_metric_names ? m->metric_names[i] : NULL;
}
kiln_node kiln_model_output(const kiln_model *m) { return output_node(m); }
int kiln_model_output_metric_count(const kiln_model *m, int output) {
  return output >= 0 && output < m->n_outs ? m->outs[output].n_metric_names : 0;
}
const char *kiln_model_output_metric_name(const kiln_model *m, int output, int i) {
  if (output < 0 || output >= m->n_outs) return NULL;
  const kiln_output *o = &m->outs[output];
  return i >= 0 && i < o->n_metric_names ? o->metric_names[i] : NULL;
}

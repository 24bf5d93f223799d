/* kiln trainer — the layer graph: building, naming, weights, read access, summary. */
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

static void free_batch_buffers(kiln_layer *l) {
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

static void free_compile_state(kiln_model *m) {
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
  m->compiled = 0;
}

static void weights_release(kiln_weights *w) {
  if (!w || --w->refs > 0) return;
  free(w->kernel);
  free(w->bias);
  free(w);
}

void kiln_model_free(kiln_model *m) {
  if (!m) return;
  free_compile_state(m);
  for (int i = 0; i < m->n_layers; i++) {
    kiln_layer *l = &m->layers[i];
    weights_release(l->weights);
    kiln_custom_release(l->custom);
    free(l->grad_kernel);
    free(l->grad_bias);
    free_batch_buffers(l);
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

static const char *kind_name(kiln_layer_kind k) {
  switch (k) {
    case KILN_LAYER_INPUT: return "InputLayer";
    case KILN_LAYER_DENSE: return "Dense";
    case KILN_LAYER_DROPOUT: return "Dropout";
    case KILN_LAYER_CONCATENATE: return "Concatenate";
    case KILN_LAYER_CUSTOM: return "Custom";
  }
  return "?";
}

static int name_taken(const kiln_model *m, const char *name) {
  for (int i = 0; i < m->n_layers; i++)
    if (strcmp(m->layers[i].name, name) == 0) return 1;
  return 0;
}

/* Keras names layers "dense", "dense_1", "dense_2", ... per kind. */
static void auto_name(const kiln_model *m, const char *base, char *out) {
  snprintf(out, KILN_NAME_MAX, "%s", base);
  for (int k = 1; name_taken(m, out); k++) snprintf(out, KILN_NAME_MAX, "%s_%d", base, k);
}

static kiln_status new_layer(kiln_model *m, kiln_layer_kind kind, const char *name,
                             const char *base, kiln_layer **out, kiln_error *err) {
  if (m->compiled)
    return kiln_error_set(err, KILN_E_INVALID,
                          "layers cannot be added after compile; add them first");
  if (name && (!*name || strlen(name) >= KILN_NAME_MAX))
    return kiln_error_set(err, KILN_E_INVALID, "layer name \"%s\": must have 1 to %d characters",
                          name, KILN_NAME_MAX - 1);
  if (name && name_taken(m, name))
    return kiln_error_set(err, KILN_E_INVALID, "layer name \"%s\" is already used in this model",
                          name);
  if (m->n_layers == m->cap_layers) {
    int cap = m->cap_layers ? m->cap_layers * 2 : 8;
    kiln_layer *p = realloc(m->layers, (size_t)cap * sizeof *p);
    if (!p) return kiln_error_set(err, KILN_E_NOMEM, "model: out of memory");
    m->layers = p;
    m->cap_layers = cap;
  }
  kiln_layer *l = &m->layers[m->n_layers];
  memset(l, 0, sizeof *l);
  l->kind = kind;
  if (name) snprintf(l->name, KILN_NAME_MAX, "%s", name);
  else auto_name(m, base, l->name);
  *out = l;
  return KILN_OK;
}

static kiln_status check_input_node(const kiln_model *m, kiln_node input, const char *what,
                                    kiln_error *err) {
  if (input < 0 || input >= m->n_layers)
    return kiln_error_set(err, KILN_E_INVALID,
                          "%s: input node %d does not exist (the model has %d layers%s)", what,
                          input, m->n_layers, m->n_layers ? "" : "; add an Input first");
  return KILN_OK;
}

kiln_status kiln_model_input(kiln_model *m, const char *name, int64_t features, kiln_node *out,
                             kiln_error *err) {
  if (features <= 0)
    return kiln_error_set(err, KILN_E_INVALID, "Input%s%s: shape must be a positive width, got %lld",
                          name ? " " : "", name ? name : "", (long long)features);
  kiln_layer *l;
  kiln_status s = new_layer(m, KILN_LAYER_INPUT, name, "input_layer", &l, err);
  if (s) return s;
  l->in_features = l->out_features = features;
  m->last = m->n_layers++;
  if (out) *out = m->last;
  return KILN_OK;
}

static void init_kernel(kiln_model *m, kiln_layer *l) {
  int64_t n = l->in_features * l->out_features;
  switch (l->initializer) {
    case KILN_INIT_GLOROT_UNIFORM: {
      float limit = sqrtf(6.0f / (float)(l->in_features + l->out_features));
      for (int64_t i = 0; i < n; i++)
        l->kernel[i] = (2.0f * kiln_rng_uniform(&m->init_rng) - 1.0f) * limit;
      break;
    }
    case KILN_INIT_HE_NORMAL: {
      /* Keras: truncated normal (redrawn beyond 2 stddev), stddev sqrt(2 / fan_in). */
      double sd = sqrt(2.0 / (double)l->in_features);
      for (int64_t i = 0; i < n; i++) {
        double z;
        do z = kiln_rng_normal(&m->init_rng); while (fabs(z) > 2.0);
        l->kernel[i] = (float)(z * sd);
      }
      break;
    }
    case KILN_INIT_ZEROS:
      memset(l->kernel, 0, (size_t)n * sizeof(float));
      break;
    case KILN_INIT_CONSTANT:
      for (int64_t i = 0; i < n; i++) l->kernel[i] = l->init_constant;
      break;
  }
}

kiln_status kiln_model_dense(kiln_model *m, kiln_node input, int64_t units,
                             const kiln_dense_options *opt, kiln_node *out, kiln_error *err) {
  kiln_dense_options defaults;
  if (!opt) {
    kiln_dense_options_init(&defaults);
    opt = &defaults;
  }
  const char *what = opt->name ? opt->name : "Dense";
  kiln_status s = check_input_node(m, input, what, err);
  if (s) return s;
  if (units <= 0)
    return kiln_error_set(err, KILN_E_INVALID, "%s: units must be positive, got %lld", what,
                          (long long)units);
  if ((unsigned)opt->activation > KILN_ACTIVATION_TANH ||
      (unsigned)opt->kernel_initializer > KILN_INIT_CONSTANT)
    return kiln_error_set(err, KILN_E_INVALID, "%s: unknown activation or initializer", what);
  if (!(opt->kernel_regularizer.l1 >= 0) || !(opt->kernel_regularizer.l2 >= 0))
    return kiln_error_set(err, KILN_E_INVALID,
                          "%s: kernel_regularizer factors must be >= 0 (l1 %g, l2 %g)", what,
                          opt->kernel_regularizer.l1, opt->kernel_regularizer.l2);
  int64_t in = m->layers[input].out_features;
  if (in > INT64_MAX / units || in * units > ((int64_t)1 << 40))
    return kiln_error_set(err, KILN_E_INVALID, "%s: %lld x %lld kernel is too large", what,
                          (long long)in, (long long)units);
  kiln_layer *l;
  s = new_layer(m, KILN_LAYER_DENSE, opt->name, "dense", &l, err);
  if (s) return s;
  l->n_inputs = 1;
  l->inputs[0] = input;
  l->in_features = in;
  l->out_features = units;
  l->activation = opt->activation;
  l->initializer = opt->kernel_initializer;
  l->init_constant = opt->kernel_constant;
  l->reg = opt->kernel_regularizer;
  size_t nk = (size_t)(in * units);
  l->weights = calloc(1, sizeof *l->weights);
  if (l->weights) {
    l->weights->refs = 1;
    l->weights->kernel = malloc(nk * sizeof(float));
    l->weights->bias = calloc((size_t)units, sizeof(float));
    l->kernel = l->weights->kernel;
    l->bias = l->weights->bias;
  }
  l->grad_kernel = malloc(nk * sizeof(float));
  l->grad_bias = calloc((size_t)units, sizeof(float));
  if (!l->kernel || !l->grad_kernel || !l->bias || !l->grad_bias) {
    weights_release(l->weights);
    free(l->grad_kernel);
    free(l->grad_bias);
    memset(l, 0, sizeof *l);
    return kiln_error_set(err, KILN_E_NOMEM, "%s: out of memory for the kernel", opt->name ? opt->name : "Dense");
  }
  init_kernel(m, l);
  m->last = m->n_layers++;
  if (out) *out = m->last;
  return KILN_OK;
}

kiln_status kiln_model_dropout(kiln_model *m, kiln_node input, float rate, const char *name,
                               kiln_node *out, kiln_error *err) {
  const char *what = name ? name : "Dropout";
  kiln_status s = check_input_node(m, input, what, err);
  if (s) return s;
  if (!(rate >= 0.0f && rate < 1.0f))
    return kiln_error_set(err, KILN_E_INVALID, "%s: rate must be in [0, 1), got %g", what, rate);
  kiln_layer *l;
  s = new_layer(m, KILN_LAYER_DROPOUT, name, "dropout", &l, err);
  if (s) return s;
  l->n_inputs = 1;
  l->inputs[0] = input;
  l->in_features = l->out_features = m->layers[input].out_features;
  l->rate = rate;
  m->last = m->n_layers++;
  if (out) *out = m->last;
  return KILN_OK;
}

kiln_status kiln_model_concatenate(kiln_model *m, const kiln_node *inputs, int n_inputs,
                                   const char *name, kiln_node *out, kiln_error *err) {
  const char *what = name ? name : "Concatenate";
  if (!inputs || n_inputs < 1 || n_inputs > KILN_MAX_INPUTS)
    return kiln_error_set(err, KILN_E_INVALID, "%s: needs 1 to %d input nodes, got %d", what,
                          KILN_MAX_INPUTS, inputs ? n_inputs : 0);
  int64_t width = 0;
  for (int i = 0; i < n_inputs; i++) {
    kiln_status s = check_input_node(m, inputs[i], what, err);
    if (s) return s;
    width += m->layers[inputs[i]].out_features;
  }
  kiln_layer *l;
  kiln_status s = new_layer(m, KILN_LAYER_CONCATENATE, name, "concatenate", &l, err);
  if (s) return s;
  l->n_inputs = n_inputs;
  memcpy(l->inputs, inputs, (size_t)n_inputs * sizeof *inputs);
  l->in_features = l->out_features = width;
  m->last = m->n_layers++;
  if (out) *out = m->last;
  return KILN_OK;
}

kiln_status kiln_model_custom(kiln_model *m, kiln_node input, const kiln_layer_class *cls,
                              void *ctx, const char *name, kiln_node *out, kiln_error *err) {
  const char *what = name ? name : cls && cls->type ? cls->type : "custom layer";
  kiln_status s = check_input_node(m, input, what, err);
  char base[KILN_NAME_MAX];
  kiln_layer *l = NULL;
  if (!s && (!cls || !cls->type || !*cls->type))
    s = kiln_error_set(err, KILN_E_INVALID, "custom layer %s: the kiln_layer_class %s", what,
                       cls ? "lacks type (a class name)" : "is NULL");
  if (!s) { /* Keras names a layer after its class, in lower case */
    size_t k = 0;
    for (const char *p = cls->type; *p && k + 1 < sizeof base; p++)
      base[k++] = (char)(*p >= 'A' && *p <= 'Z' ? *p - 'A' + 'a' : *p);
    base[k] = 0;
    s = new_layer(m, KILN_LAYER_CUSTOM, name, base, &l, err);
  }
  if (s) {
    if (cls && cls->destroy) cls->destroy(ctx);
    return s;
  }
  int64_t units;
  s = kiln_custom_create(cls, ctx, l->name, m->layers[input].out_features, &m->init_rng,
                         &l->custom, &units, err);
  if (s) return s; /* the layer was not counted: the next new_layer reuses its slot */
  l->n_inputs = 1;
  l->inputs[0] = input;
  l->in_features = m->layers[input].out_features;
  l->out_features = units;
  m->last = m->n_layers++;
  if (out) *out = m->last;
  return KILN_OK;
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
  if ((s = check_input_node(m, output, "output", err))) return s;
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
    if ((s = check_input_node(m, inputs[i], "set_inputs", err))) return s;
    if (m->layers[inputs[i]].kind != KILN_LAYER_INPUT)
      return kiln_error_set(err, KILN_E_INVALID,
                            "set_inputs: inputs[%d] is layer \"%s\" (%s), not an Input layer", i,
                            m->layers[inputs[i]].name, kind_name(m->layers[inputs[i]].kind));
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
    if ((s = check_input_node(m, outputs[i], "set_outputs", err))) return s;
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

kiln_status kiln_model_from_layers(const kiln_model *src, const kiln_node *inputs, int n_inputs,
                                   const kiln_node *outputs, int n_outputs, kiln_model **out,
                                   kiln_error *err) {
  const char *what = "from_layers";
  if (!inputs || n_inputs < 1 || n_inputs > KILN_MAX_IO || !outputs || n_outputs < 1 ||
      n_outputs > KILN_MAX_IO)
    return kiln_error_set(err, KILN_E_INVALID, "%s: needs 1 to %d inputs and outputs, got %d and %d",
                          what, KILN_MAX_IO, inputs ? n_inputs : 0, outputs ? n_outputs : 0);
  kiln_status s;
  for (int i = 0; i < n_inputs; i++) {
    if ((s = check_input_node(src, inputs[i], what, err))) return s;
    if (src->layers[inputs[i]].kind != KILN_LAYER_INPUT)
      return kiln_error_set(err, KILN_E_INVALID,
                            "%s: inputs[%d] is layer \"%s\", not an Input layer of the model", what,
                            i, src->layers[inputs[i]].name);
    for (int j = 0; j < i; j++)
      if (inputs[j] == inputs[i])
        return kiln_error_set(err, KILN_E_INVALID, "%s: input \"%s\" is given twice", what,
                              src->layers[inputs[i]].name);
  }
  for (int k = 0; k < n_outputs; k++) {
    if ((s = check_input_node(src, outputs[k], what, err))) return s;
    for (int j = 0; j < k; j++)
      if (outputs[j] == outputs[k])
        return kiln_error_set(err, KILN_E_INVALID, "%s: output \"%s\" is given twice", what,
                              src->layers[outputs[k]].name);
  }
  /* The layers the outputs need (and the inputs, used or not), in src's order. */
  int *map = malloc((size_t)src->n_layers * sizeof *map);
  if (!map) return kiln_error_set(err, KILN_E_NOMEM, "%s: out of memory", what);
  for (int i = 0; i < src->n_layers; i++) map[i] = -2;
  for (int k = 0; k < n_outputs; k++) map[outputs[k]] = -1;
  for (int i = 0; i < n_inputs; i++) map[inputs[i]] = -1;
  for (int i = src->n_layers - 1; i >= 0; i--)
    if (map[i] == -1)
      for (int j = 0; j < src->layers[i].n_inputs; j++) map[src->layers[i].inputs[j]] = -1;
  for (int i = 0; i < src->n_layers; i++) {
    if (map[i] != -1 || src->layers[i].kind != KILN_LAYER_INPUT) continue;
    int listed = 0;
    for (int j = 0; j < n_inputs; j++) listed |= inputs[j] == i;
    if (!listed) {
      free(map);
      return kiln_error_set(err, KILN_E_INVALID,
                            "%s: the outputs depend on Input \"%s\", which is not among the "
                            "inputs given", what, src->layers[i].name);
    }
  }
  kiln_model *m;
  if ((s = kiln_model_create(src->seed, &m, err))) {
    free(map);
    return s;
  }
  /* New layers continue src's weight stream rather than repeat it. */
  m->init_rng = src->init_rng;
  m->shuffle_rng = src->shuffle_rng;
  m->dropout_rng = src->dropout_rng;
  int n = 0;
  for (int i = 0; i < src->n_layers; i++) n += map[i] == -1;
  m->layers = calloc((size_t)n, sizeof *m->layers);
  if (!m->layers) {
    free(map);
    kiln_model_free(m);
    return kiln_error_set(err, KILN_E_NOMEM, "%s: out of memory", what);
  }
  m->cap_layers = n;
  for (int i = 0; i < src->n_layers; i++) {
    if (map[i] != -1) continue;
    const kiln_layer *from = &src->layers[i];
    kiln_layer *l = &m->layers[m->n_layers];
    memset(l, 0, sizeof *l);
    l->kind = from->kind;
    memcpy(l->name, from->name, sizeof l->name);
    l->n_inputs = from->n_inputs;
    for (int j = 0; j < from->n_inputs; j++) l->inputs[j] = map[from->inputs[j]];
    l->in_features = from->in_features;
    l->out_features = from->out_features;
    l->activation = from->activation;
    l->initializer = from->initializer;
    l->init_constant = from->init_constant;
    l->reg = from->reg;
    l->rate = from->rate;
    if (from->weights) {
      size_t nk = (size_t)(from->in_features * from->out_features);
      l->grad_kernel = malloc(nk * sizeof(float));
      l->grad_bias = calloc((size_t)from->out_features, sizeof(float));
      if (!l->grad_kernel || !l->grad_bias) {
        free(l->grad_kernel);
        free(l->grad_bias);
        memset(l, 0, sizeof *l);
        free(map);
        kiln_model_free(m);
        return kiln_error_set(err, KILN_E_NOMEM, "%s: out of memory", what);
      }
      l->weights = from->weights;
      l->weights->refs++;
      l->kernel = from->kernel;
      l->bias = from->bias;
    }
    if (from->custom) { /* shared as Dense weights are: class, ctx and weights */
      l->custom = from->custom;
      kiln_custom_retain(l->custom);
    }
    map[i] = m->n_layers++;
  }
  m->last = m->n_layers - 1;
  for (int i = 0; i < n_inputs; i++) m->inputs[i] = map[inputs[i]];
  m->n_inputs = n_inputs;
  for (int k = 0; k < n_outputs; k++) m->outputs[k] = map[outputs[k]];
  m->n_outputs = n_outputs;
  free(map);
  *out = m;
  return KILN_OK;
}

kiln_status kiln_model_add_input(kiln_model *m, int64_t features, kiln_error *err) {
  return kiln_model_input(m, NULL, features, NULL, err);
}

kiln_status kiln_model_add_dense(kiln_model *m, int64_t units, kiln_activation activation,
                                 kiln_error *err) {
  kiln_dense_options opt;
  kiln_dense_options_init(&opt);
  opt.activation = activation;
  return kiln_model_add_dense_ex(m, units, &opt, err);
}

kiln_status kiln_model_add_dense_ex(kiln_model *m, int64_t units, const kiln_dense_options *opt,
                                    kiln_error *err) {
  return kiln_model_dense(m, m->last, units, opt, NULL, err);
}

kiln_status kiln_model_add_dropout(kiln_model *m, float rate, kiln_error *err) {
  return kiln_model_dropout(m, m->last, rate, NULL, NULL, err);
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


static void rule(FILE *out, char c) {
  for (int i = 0; i < 65; i++) fputc(c, out);
  fputc('\n', out);
}

static void print_count(FILE *out, const char *label, int64_t n) {
  double bytes = (double)n * 4.0;
  const char *unit = "B";
  if (bytes >= 1024.0 * 1024.0) { bytes /= 1024.0 * 1024.0; unit = "MB"; }
  else if (bytes >= 1024.0) { bytes /= 1024.0; unit = "KB"; }
  fprintf(out, "%s: %lld (%.2f %s)\n", label, (long long)n, bytes, unit);
}

/* A Sequential stack: one Input, each layer fed by the one before, the last the output. */
static int is_chain(const kiln_model *m) {
  if (m->n_layers == 0 || m->layers[0].kind != KILN_LAYER_INPUT) return 1;
  for (int i = 1; i < m->n_layers; i++)
    if (m->layers[i].n_inputs != 1 || m->layers[i].inputs[0] != i - 1) return 0;
  kiln_node outs[KILN_MAX_IO];
  int n = kiln_model_resolve_outputs(m, outs);
  return n == 1 && outs[0] == m->n_layers - 1 && kiln_model_input_count(m) == 1;
}

static int64_t layer_params(const kiln_layer *l) {
  return l->kind == KILN_LAYER_DENSE ? l->in_features * l->out_features + l->out_features
                                     : kiln_custom_param_count(l->custom);
}

/* "Dense", ..., or a custom layer's class type. */
static const char *layer_type(const kiln_layer *l) {
  return l->custom ? l->custom->cls->type : kind_name(l->kind);
}

/* Keras' functional summary: a "Connected to" column naming each input as
 * "<layer>[0][0]" (one call per layer: node and tensor indices are always 0). */
static void summary_functional(const kiln_model *m, FILE *out) {
  int w = 30;
  for (int i = 0; i < m->n_layers; i++) {
    int n = (int)strlen(m->layers[i].name) + (int)strlen(layer_type(&m->layers[i])) + 4;
    w = n > w ? n : w;
  }
  int width = w + 1 + 18 + 1 + 11 + 2 + 40;
  fprintf(out, "Model: \"functional\"\n");
  for (int i = 0; i < width; i++) fputc('=', out);
  fprintf(out, "\n%-*s %-18s %11s  %s\n", w, "Layer (type)", "Output Shape", "Param #",
          "Connected to");
  for (int i = 0; i < width; i++) fputc('=', out);
  fputc('\n', out);
  int64_t total = 0;
  for (int i = 0; i < m->n_layers; i++) {
    const kiln_layer *l = &m->layers[i];
    char left[KILN_NAME_MAX + 32], shape[32];
    snprintf(left, sizeof left, "%s (%s)", l->name, layer_type(l));
    snprintf(shape, sizeof shape, "(None, %lld)", (long long)l->out_features);
    int64_t p = layer_params(l);
    total += p;
    fprintf(out, "%-*s %-18s %11lld  ", w, left, shape, (long long)p);
    if (l->n_inputs == 0) fputc('-', out);
    for (int j = 0; j < l->n_inputs; j++)
      fprintf(out, "%s%s[0][0]", j ? ", " : "", m->layers[l->inputs[j]].name);
    fputc('\n', out);
  }
  for (int i = 0; i < width; i++) fputc('=', out);
  fputc('\n', out);
  print_count(out, " Total params", total);
  print_count(out, " Trainable params", total);
  print_count(out, " Non-trainable params", 0);
}

void kiln_model_summary(const kiln_model *m, FILE *out) {
  if (!is_chain(m)) {
    summary_functional(m, out);
    return;
  }
  fprintf(out, "Model: \"%s\"\n", m->n_layers && m->layers[0].kind == KILN_LAYER_INPUT &&
                                       m->layers[0].n_inputs == 0 ? "sequential" : "model");
  rule(out, '=');
  fprintf(out, "%-34s %-18s %11s\n", "Layer (type)", "Output Shape", "Param #");
  rule(out, '=');
  int64_t trainable = 0;
  for (int i = 0; i < m->n_layers; i++) {
    const kiln_layer *l = &m->layers[i];
    char left[96], shape[32];
    snprintf(left, sizeof left, "%s (%s)", l->name, layer_type(l));
    snprintf(shape, sizeof shape, "(None, %lld)", (long long)l->out_features);
    int64_t p = layer_params(l);
    trainable += p;
    fprintf(out, "%-34s %-18s %11lld\n", left, shape, (long long)p);
  }
  rule(out, '=');
  print_count(out, " Total params", trainable);
  print_count(out, " Trainable params", trainable);
  print_count(out, " Non-trainable params", 0);
}

kiln_status kiln_model_reserve(kiln_model *m, int64_t rows, kiln_error *err) {
  if (rows <= m->cap_rows) return KILN_OK;
  for (int i = 0; i < m->n_layers; i++) {
    kiln_layer *l = &m->layers[i];
    free_batch_buffers(l);
    size_t n = (size_t)(rows * l->out_features);
    l->out = malloc(n * sizeof(float));
    l->grad = malloc(n * sizeof(float));
    if (l->kind == KILN_LAYER_DROPOUT) l->mask = malloc(n * sizeof(float));
    if (l->fused) l->logits = malloc(n * sizeof(float));
    if (!l->out || !l->grad || (l->kind == KILN_LAYER_DROPOUT && !l->mask) ||
        (l->fused && !l->logits)) {
      free_batch_buffers(l);
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

/* compile ------------------------------------------------------------------ */

static char *key_join(const char *a, const char *b, const char *c) {
  size_t n = strlen(a) + strlen(b) + strlen(c) + 1;
  char *s = malloc(n);
  if (s) snprintf(s, n, "%s%s%s", a, b, c);
  return s;
}

/* Log entries the model's logs hold (training side): "loss", per-output losses with
 * several outputs, and every metric. Validation doubles them. */
static int log_entries(const kiln_model *m, int extra_metrics) {
  int n = 1 + (m->n_outs > 1 ? m->n_outs : 0) + extra_metrics;
  for (int k = 0; k < m->n_outs; k++) n += m->outs[k].n_metrics;
  return n;
}

/* Adds metric to output k with its log keys ("<name>" with one output, Keras'
 * "<output>_<name>" with several, and the val_ forms). Takes ownership. */
static kiln_status add_metric(kiln_model *m, int k, kiln_metric *metric, kiln_error *err) {
  kiln_output *o = &m->outs[k];
  if (log_entries(m, 1) > KILN_LOGS_MAX / 2) {
    kiln_metric_free(metric);
    return kiln_error_set(err, KILN_E_INVALID,
                          "too many metrics (the logs hold at most %d figures with the losses)",
                          KILN_LOGS_MAX / 2);
  }
  for (int i = 0; i < o->n_metrics; i++)
    if (strcmp(o->metrics[i]->name, metric->name) == 0) {
      kiln_error_set(err, KILN_E_INVALID, "metric \"%s\" is given twice%s%s%s", metric->name,
                     m->n_outs > 1 ? " for output \"" : "",
                     m->n_outs > 1 ? m->layers[o->node].name : "", m->n_outs > 1 ? "\"" : "");
      kiln_metric_free(metric);
      return KILN_E_INVALID;
    }
  kiln_metric **p = realloc(o->metrics, (size_t)(o->n_metrics + 1) * sizeof *p);
  if (!p) {
    kiln_metric_free(metric);
    return kiln_error_set(err, KILN_E_NOMEM, "metrics: out of memory");
  }
  o->metrics = p;
  int i = o->n_metrics;
  const char *prefix = m->n_outs > 1 ? m->layers[o->node].name : "";
  const char *sep = m->n_outs > 1 ? "_" : "";
  o->metric_keys[i] = key_join(prefix, sep, metric->name);
  char *val_prefix = key_join("val_", prefix, sep);
  o->val_metric_keys[i] = val_prefix ? key_join(val_prefix, "", metric->name) : NULL;
  free(val_prefix);
  o->metrics[o->n_metrics++] = metric;
  if (!o->metric_keys[i] || !o->val_metric_keys[i])
    return kiln_error_set(err, KILN_E_NOMEM, "metrics: out of memory");
  return KILN_OK;
}

void kiln_output_config_init(kiln_output_config *c) {
  memset(c, 0, sizeof *c);
  c->loss_weight = 1.0f;
}

/* Marks the layers some output depends on; 0 and an error when an Input they need is
 * not among the model's inputs. */
static kiln_status mark_active(kiln_model *m, const kiln_node *ins, int n_in, const kiln_node *outs,
                               int n_out, kiln_error *err) {
  for (int i = 0; i < m->n_layers; i++) m->layers[i].active = 0;
  for (int k = 0; k < n_out; k++) m->layers[outs[k]].active = 1;
  for (int i = m->n_layers - 1; i >= 0; i--) {
    kiln_layer *l = &m->layers[i];
    if (!l->active) continue;
    for (int j = 0; j < l->n_inputs; j++) m->layers[l->inputs[j]].active = 1;
  }
  for (int i = 0; i < m->n_layers; i++) {
    if (m->layers[i].kind != KILN_LAYER_INPUT || !m->layers[i].active) continue;
    int listed = 0;
    for (int j = 0; j < n_in; j++) listed |= ins[j] == i;
    if (!listed)
      return kiln_error_set(err, KILN_E_INVALID,
                            "compile: the outputs depend on Input \"%s\", which is not among "
                            "the model's inputs (add it with kiln_model_set_inputs)",
                            m->layers[i].name);
  }
  return KILN_OK;
}

kiln_status kiln_model_compile_outputs(kiln_model *m, const kiln_optimizer *opt,
                                       const kiln_output_config *outputs, int n_outputs,
                                       kiln_error *err) {
  if (m->n_layers == 0 || m->layers[0].kind != KILN_LAYER_INPUT)
    return kiln_error_set(err, KILN_E_INVALID, "compile: the model needs an Input layer first");
  if (!(opt->learning_rate > 0) || !isfinite(opt->learning_rate))
    return kiln_error_set(err, KILN_E_INVALID, "compile: learning_rate must be positive, got %g",
                          opt->learning_rate);
  kiln_node ins[KILN_MAX_IO], outs[KILN_MAX_IO];
  int n_in = kiln_model_resolve_inputs(m, ins);
  int n_out = kiln_model_resolve_outputs(m, outs);
  if (n_in == 0)
    return kiln_error_set(err, KILN_E_INVALID, "compile: the model needs an Input layer first");
  if (n_outputs != n_out)
    return kiln_error_set(err, KILN_E_INVALID,
                          "compile: %d output configs for a model with %d outputs", n_outputs,
                          n_out);
  /* Each output's config, by name or position. */
  int cfg_of[KILN_MAX_IO];
  for (int k = 0; k < n_out; k++) cfg_of[k] = -1;
  int by_name = outputs[0].output != NULL;
  for (int i = 0; i < n_outputs; i++) {
    const kiln_output_config *c = &outputs[i];
    if ((c->output != NULL) != by_name)
      return kiln_error_set(err, KILN_E_INVALID,
                            "compile: outputs[%d]: name every output config or none", i);
    int k = i;
    if (by_name) {
      k = -1;
      for (int j = 0; j < n_out; j++)
        if (strcmp(m->layers[outs[j]].name, c->output) == 0) k = j;
      if (k < 0)
        return kiln_error_set(err, KILN_E_INVALID,
                              "compile: outputs[%d]: \"%s\" is not an output of the model", i,
                              c->output);
      if (cfg_of[k] >= 0)
        return kiln_error_set(err, KILN_E_INVALID,
                              "compile: output \"%s\" is configured twice (outputs[%d] and [%d])",
                              c->output, cfg_of[k], i);
    }
    cfg_of[k] = i;
    if ((unsigned)c->loss > KILN_LOSS_MEAN_ABSOLUTE_ERROR)
      return kiln_error_set(err, KILN_E_INVALID, "compile: unknown loss %d", (int)c->loss);
    if (!(c->loss_weight >= 0.0f) || !isfinite(c->loss_weight))
      return kiln_error_set(err, KILN_E_INVALID,
                            "compile: output \"%s\": loss_weight must be finite and >= 0, got %g",
                            m->layers[outs[k]].name, c->loss_weight);
    if (c->n_metrics < 0 || (c->n_metrics > 0 && !c->metrics))
      return kiln_error_set(err, KILN_E_INVALID, "compile: output \"%s\": bad metrics list",
                            m->layers[outs[k]].name);
  }
  for (int k = 0; k < n_out; k++)
    if (m->layers[outs[k]].kind == KILN_LAYER_INPUT)
      return kiln_error_set(err, KILN_E_INVALID,
                            n_out == 1 ? "compile: the model has no layer after its Input"
                                       : "compile: output \"%s\" is an Input layer",
                            m->layers[outs[k]].name);
  kiln_status s = mark_active(m, ins, n_in, outs, n_out, err);
  if (s) return s;
  free_compile_state(m);
  m->opt = *opt;
  m->iterations = 0;
  memcpy(m->inputs, ins, sizeof ins);
  m->n_inputs = n_in;
  memcpy(m->outputs, outs, sizeof outs);
  m->n_outputs = n_out;
  m->n_outs = n_out;
  for (int i = 0; i < m->n_layers; i++) m->layers[i].fused = 0;
  for (int k = 0; k < n_out; k++) {
    kiln_output *o = &m->outs[k];
    const kiln_output_config *c = &outputs[cfg_of[k]];
    kiln_layer *l = &m->layers[outs[k]];
    o->node = outs[k];
    o->loss = c->loss;
    o->weight = c->loss_weight;
    /* The loss gradient goes straight into the layer unless other layers feed
     * gradient into it too; only then may the loss take its logits. */
    o->direct = 1;
    for (int i = o->node + 1; i < m->n_layers; i++)
      for (int j = 0; j < m->layers[i].n_inputs; j++)
        if (m->layers[i].active && m->layers[i].inputs[j] == o->node) o->direct = 0;
    l->fused = o->direct && l->kind == KILN_LAYER_DENSE && kiln_loss_fuses(c->loss, l->activation);
    if (n_out > 1) {
      o->loss_key = key_join(l->name, "_loss", "");
      o->val_loss_key = key_join("val_", l->name, "_loss");
      if (!o->loss_key || !o->val_loss_key) {
        free_compile_state(m);
        return kiln_error_set(err, KILN_E_NOMEM, "compile: out of memory");
      }
    }
  }
  for (int k = 0; k < n_out; k++) {
    kiln_output *o = &m->outs[k];
    const kiln_output_config *c = &outputs[cfg_of[k]];
    if (c->n_metrics > 0) {
      o->metric_names = calloc((size_t)c->n_metrics, sizeof(char *));
      if (!o->metric_names) {
        free_compile_state(m);
        return kiln_error_set(err, KILN_E_NOMEM, "compile: out of memory");
      }
    }
    for (int i = 0; i < c->n_metrics; i++) {
      kiln_metric *metric;
      s = kiln_metric_create(c->metrics[i], o->loss, &metric, err);
      if (s) {
        if (n_out > 1) kiln_error_prefix(err, "compile: output \"%s\": metrics[%d]",
                                         m->layers[o->node].name, i);
        else kiln_error_prefix(err, "compile: metrics[%d]", i);
        free_compile_state(m);
        return s;
      }
      s = add_metric(m, k, metric, err);
      if (s) {
        free_compile_state(m);
        return s;
      }
      o->metric_names[o->n_metric_names] = strdup(c->metrics[i]);
      if (!o->metric_names[o->n_metric_names++]) {
        free_compile_state(m);
        return kiln_error_set(err, KILN_E_NOMEM, "compile: out of memory");
      }
    }
  }
  if (log_entries(m, 0) > KILN_LOGS_MAX / 2) {
    free_compile_state(m);
    return kiln_error_set(err, KILN_E_INVALID,
                          "compile: too many metrics (the logs hold at most %d figures with the "
                          "losses)", KILN_LOGS_MAX / 2);
  }
  m->loss = m->outs[0].loss;
  m->metric_names = m->outs[0].metric_names;
  m->n_metric_names = m->outs[0].n_metric_names;
  s = kiln_optimizer_prepare(m, err);
  if (s) {
    free_compile_state(m);
    return s;
  }
  /* The buffer set (logits, scratch) depends on the outputs: rebuild at next use. */
  for (int i = 0; i < m->n_layers; i++) free_batch_buffers(&m->layers[i]);
  m->cap_rows = 0;
  m->compiled = 1;
  return KILN_OK;
}

kiln_status kiln_model_compile(kiln_model *m, const kiln_optimizer *opt, kiln_loss loss,
                               const char *const *metrics, int n_metrics, kiln_error *err) {
  if ((unsigned)loss > KILN_LOSS_MEAN_ABSOLUTE_ERROR)
    return kiln_error_set(err, KILN_E_INVALID, "compile: unknown loss %d", (int)loss);
  kiln_output_config cfg[KILN_MAX_IO];
  int n = kiln_model_output_count(m);
  if (n < 1) n = 1; /* an empty model: compile_outputs names what is missing */
  for (int k = 0; k < n; k++) {
    kiln_output_config_init(&cfg[k]);
    cfg[k].loss = loss;
    cfg[k].metrics = metrics;
    cfg[k].n_metrics = n_metrics;
  }
  return kiln_model_compile_outputs(m, opt, cfg, n, err);
}

kiln_status kiln_model_add_output_metric(kiln_model *m, int output, kiln_metric *metric,
                                         kiln_error *err) {
  if (!m->compiled) {
    kiln_metric_free(metric);
    return kiln_error_set(err, KILN_E_INVALID, "add_metric: compile the model first");
  }
  if (output < 0 || output >= m->n_outs) {
    kiln_metric_free(metric);
    return kiln_error_set(err, KILN_E_INVALID, "add_metric: output %d does not exist (the model has %d)",
                          output, m->n_outs);
  }
  return add_metric(m, output, metric, err);
}

kiln_status kiln_model_add_metric(kiln_model *m, kiln_metric *metric, kiln_error *err) {
  return kiln_model_add_output_metric(m, 0, metric, err);
}

kiln_loss kiln_model_output_loss(const kiln_model *m, int output) {
  return output >= 0 && output < m->n_outs ? m->outs[output].loss : m->loss;
}

float kiln_model_output_loss_weight(const kiln_model *m, int output) {
  return output >= 0 && output < m->n_outs ? m->outs[output].weight : 0.0f;
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

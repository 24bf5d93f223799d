/* kiln trainer — adding layers to the graph: naming, Input, Dense (with its kernel's
 * initializer), Dropout, Concatenate, custom layers, and the Sequential add_* calls. */
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "custom_layer.h"
#include "model_internal.h"

const char *kiln_layer_kind_name(kiln_layer_kind k) {
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

kiln_status kiln_model_check_input_node(const kiln_model *m, kiln_node input, const char *what,
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
  kiln_status s = kiln_model_check_input_node(m, input, what, err);
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
    kiln_weights_release(l->weights);
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
  kiln_status s = kiln_model_check_input_node(m, input, what, err);
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
    kiln_status s = kiln_model_check_input_node(m, inputs[i], what, err);
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
  kiln_status s = kiln_model_check_input_node(m, input, what, err);
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

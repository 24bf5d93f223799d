/* kiln export — lowering a trained model (train.h) to the graph IR (ir.h).
 *
 * Dense -> Gemm (default) or MatMul + Add, then Relu / Sigmoid / Tanh / Softmax;
 * linear adds nothing; Dropout disappears (its consumers read its input);
 * Concatenate -> Concat(axis -1); a custom layer -> whatever its class's lower hook
 * emits (lower_custom.c). Every layer's output value is named after the layer,
 * so the graph inputs carry the Input layers' names (in the model's input order) and
 * the graph outputs the output layers' (in the model's output order). Layers no output
 * depends on are left out. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kiln/export.h"
#include "lower_internal.h"

/* The project's version (CMake's PROJECT_VERSION), recorded as producer_version. */
#define KILN_EXPORT_PRODUCER_NAME "kiln"
#define KILN_EXPORT_PRODUCER_VERSION "0.1.0"

void kiln_export_options_init(kiln_export_options *opt) {
  memset(opt, 0, sizeof *opt);
  opt->opset = 13;
}

/* --- compile settings --------------------------------------------------------- */
typedef struct compile_info {
  int compiled;
  char loss[64];
  char *metrics; /* comma-separated, malloc'd (NULL when none) */
  int output;    /* the output node */
} compile_info;

/* Output k's metric names, comma-separated, in *out (malloc'd; NULL when none). */
static kiln_status join_metrics(const kiln_model *m, int k, char **out, kiln_error *err) {
  *out = NULL;
  size_t total = 0;
  int n = kiln_model_output_metric_count(m, k);
  for (int i = 0; i < n; i++) total += strlen(kiln_model_output_metric_name(m, k, i)) + 1;
  if (!total) return KILN_OK;
  char *s = malloc(total);
  if (!s) return kiln_error_set(err, KILN_E_NOMEM, "lower: out of memory");
  s[0] = '\0';
  for (int i = 0; i < n; i++) {
    if (i) strcat(s, ",");
    strcat(s, kiln_model_output_metric_name(m, k, i));
  }
  *out = s;
  return KILN_OK;
}

static kiln_status read_compile_info(const kiln_model *m, compile_info *ci, kiln_error *err) {
  memset(ci, 0, sizeof *ci);
  ci->output = kiln_model_output(m);
  if (!kiln_model_is_compiled(m)) return KILN_OK;
  ci->compiled = 1;
  snprintf(ci->loss, sizeof ci->loss, "%s", kiln_loss_name(kiln_model_loss(m)));
  return join_metrics(m, 0, &ci->metrics, err);
}

/* --- small string builders ------------------------------------------------------ */

typedef struct strbuf {
  char *s;
  size_t len, cap;
  int failed;
} strbuf;

static void sb_add(strbuf *b, const char *text, size_t n) {
  if (b->failed) return;
  if (b->len + n + 1 > b->cap) {
    size_t cap = b->cap ? b->cap : 64;
    while (b->len + n + 1 > cap) cap *= 2;
    char *p = realloc(b->s, cap);
    if (!p) {
      b->failed = 1;
      return;
    }
    b->s = p;
    b->cap = cap;
  }
  memcpy(b->s + b->len, text, n);
  b->len += n;
  b->s[b->len] = '\0';
}

static void sb_str(strbuf *b, const char *text) {
  sb_add(b, text, strlen(text));
}

/* A JSON string literal. */
static void sb_json_string(strbuf *b, const char *s) {
  sb_add(b, "\"", 1);
  for (; *s; s++) {
    unsigned char c = (unsigned char)*s;
    char esc[8];
    if (c == '"' || c == '\\') {
      esc[0] = '\\';
      esc[1] = (char)c;
      sb_add(b, esc, 2);
    } else if (c < 0x20) {
      snprintf(esc, sizeof esc, "\\u%04x", c);
      sb_str(b, esc);
    } else {
      sb_add(b, (const char *)s, 1);
    }
  }
  sb_add(b, "\"", 1);
}

static void sb_json_floats(strbuf *b, const float *v, int64_t n) {
  sb_add(b, "[", 1);
  for (int64_t i = 0; i < n; i++) {
    char num[32];
    snprintf(num, sizeof num, "%s%.9g", i ? "," : "", (double)v[i]);
    sb_str(b, num);
  }
  sb_add(b, "]", 1);
}

/* "<layer><suffix>" into a fixed buffer (layer names are short: KILN_NAME_MAX). */
static const char *join(char *buf, size_t cap, const char *a, const char *b) {
  snprintf(buf, cap, "%s%s", a, b);
  return buf;
}

/* --- lowering ------------------------------------------------------------------ */

static const char *activation_op(kiln_activation a) {
  switch (a) {
    case KILN_ACTIVATION_RELU: return "Relu";
    case KILN_ACTIVATION_SIGMOID: return "Sigmoid";
    case KILN_ACTIVATION_TANH: return "Tanh";
    case KILN_ACTIVATION_SOFTMAX: return "Softmax";
    default: return NULL;
  }
}

#define NAME_CAP 320

/* One Dense layer: weights, the affine node(s), the activation. Its output value is
 * named after the layer. */
static kiln_status lower_dense(kiln_ir_graph *g, const kiln_layer_info *l, const char *input,
                               int as_matmul, kiln_error *err) {
  char kname[NAME_CAP], bname[NAME_CAP], node[NAME_CAP], mid[NAME_CAP], lin[NAME_CAP];
  join(kname, sizeof kname, l->name, "/kernel");
  join(bname, sizeof bname, l->name, "/bias");
  int64_t kdims[2] = {l->in_features, l->out_features};
  int64_t bdims[1] = {l->out_features};
  kiln_status s;
  if ((s = kiln_ir_add_initializer(g, kname, KILN_DTYPE_FLOAT, kdims, 2, l->kernel, err)) ||
      (s = kiln_ir_add_initializer(g, bname, KILN_DTYPE_FLOAT, bdims, 1, l->bias, err)))
    return s;
  const char *act = activation_op(l->activation);
  /* The affine result is the layer's output unless an activation follows. */
  const char *affine_out = act ? join(lin, sizeof lin, l->name, "/linear") : l->name;
  kiln_ir_node *n;
  if (!as_matmul) {
    /* Gemm: one node with the bias fused in, the form every runtime (kiln's, ONNX
     * Runtime, TensorRT) fuses best. The kernel stays [in, out] as Keras stores it,
     * so transB = 0: Y = X W + b with no transposed copy of the weights. */
    const char *ins[3] = {input, kname, bname};
    const char *outs[1] = {affine_out};
    if ((s = kiln_ir_add_node(g, "Gemm", join(node, sizeof node, l->name, "/Gemm"), ins, 3, outs, 1,
                              &n, err)) ||
        (s = kiln_ir_node_set_float(n, "alpha", 1.0f, err)) ||
        (s = kiln_ir_node_set_float(n, "beta", 1.0f, err)) ||
        (s = kiln_ir_node_set_int(n, "transA", 0, err)) ||
        (s = kiln_ir_node_set_int(n, "transB", 0, err)))
      return s;
  } else {
    /* MatMul + Add: for consumers that pattern-match that pair (or lack Gemm). */
    const char *mm_ins[2] = {input, kname};
    const char *mm_outs[1] = {join(mid, sizeof mid, l->name, "/matmul")};
    if ((s = kiln_ir_add_node(g, "MatMul", join(node, sizeof node, l->name, "/MatMul"), mm_ins, 2,
                              mm_outs, 1, NULL, err)))
      return s;
    const char *add_ins[2] = {mid, bname};
    const char *add_outs[1] = {affine_out};
    if ((s = kiln_ir_add_node(g, "Add", join(node, sizeof node, l->name, "/Add"), add_ins, 2,
                              add_outs, 1, NULL, err)))
      return s;
  }
  if (act) {
    const char *ins[1] = {affine_out};
    const char *outs[1] = {l->name};
    char op_node[NAME_CAP];
    snprintf(op_node, sizeof op_node, "%s/%s", l->name, act);
    if ((s = kiln_ir_add_node(g, act, op_node, ins, 1, outs, 1, &n, err))) return s;
    /* Softmax over the features (the last axis): opset 13 semantics. */
    if (l->activation == KILN_ACTIVATION_SOFTMAX && (s = kiln_ir_node_set_int(n, "axis", -1, err)))
      return s;
  }
  return KILN_OK;
}

static kiln_status set_metadata(kiln_ir_graph *g, const compile_info *ci,
                                const kiln_export_options *opt, kiln_error *err) {
  kiln_status s;
  if (ci->compiled && (s = kiln_ir_set_meta(g, "kiln.loss", ci->loss, err))) return s;
  if (ci->metrics && (s = kiln_ir_set_meta(g, "kiln.metrics", ci->metrics, err))) return s;
  if (opt->n_class_names > 0) {
    strbuf b = {0};
    sb_add(&b, "[", 1);
    for (int i = 0; i < opt->n_class_names; i++) {
      if (i) sb_add(&b, ",", 1);
      sb_json_string(&b, opt->class_names[i]);
    }
    sb_add(&b, "]", 1);
    s = b.failed ? kiln_error_set(err, KILN_E_NOMEM, "lower: out of memory")
                 : kiln_ir_set_meta(g, "kiln.class_names", b.s, err);
    free(b.s);
    if (s) return s;
  }
  const float *stats[2] = {opt->input_mean, opt->input_std};
  const char *keys[2] = {"kiln.input_mean", "kiln.input_std"};
  for (int k = 0; k < 2; k++) {
    if (!stats[k]) continue;
    strbuf b = {0};
    sb_json_floats(&b, stats[k], opt->n_input_stats);
    s = b.failed ? kiln_error_set(err, KILN_E_NOMEM, "lower: out of memory")
                 : kiln_ir_set_meta(g, keys[k], b.s, err);
    free(b.s);
    if (s) return s;
  }
  return KILN_OK;
}

static kiln_status check_options(const kiln_export_options *opt, int64_t in_features,
                                 int64_t out_features, kiln_error *err) {
  if (opt->opset != 13 && opt->opset != 17)
    return kiln_error_set(err, KILN_E_UNSUPPORTED,
                          "export: opset %d is not supported (expected 13 or 17)", opt->opset);
  if (opt->n_class_names < 0 || (opt->n_class_names > 0 && !opt->class_names))
    return kiln_error_set(err, KILN_E_INVALID, "export: %d class names but no array",
                          opt->n_class_names);
  for (int i = 0; i < opt->n_class_names; i++)
    if (!opt->class_names[i])
      return kiln_error_set(err, KILN_E_INVALID, "export: class name %d is NULL", i);
  if (opt->n_class_names > 0) {
    int64_t want = out_features == 1 ? 2 : out_features;
    if (opt->n_class_names != want && opt->n_class_names != out_features)
      return kiln_error_set(err, KILN_E_SHAPE,
                            "export: %d class names for a model with %lld output%s (expected "
                            "%lld)",
                            opt->n_class_names, (long long)out_features,
                            out_features == 1 ? "" : "s", (long long)want);
  }
  if ((opt->input_mean || opt->input_std) &&
      (!opt->input_mean || !opt->input_std || opt->n_input_stats != in_features))
    return kiln_error_set(err, KILN_E_SHAPE,
                          "export: input_mean and input_std must both be given with one value "
                          "per input feature (%lld), got %lld",
                          (long long)in_features, (long long)opt->n_input_stats);
  return KILN_OK;
}

/* Multi-output metadata: kiln.loss.<output>, kiln.loss_weight.<output> per output and
 * kiln.metrics.<output> for each output with metrics. See docs/multi-io.md. */
static kiln_status set_output_metadata(kiln_ir_graph *g, const kiln_model *m, kiln_error *err) {
  kiln_status s;
  int n = kiln_model_output_count(m);
  for (int k = 0; k < n; k++) {
    kiln_layer_info l;
    if ((s = kiln_model_layer(m, kiln_model_output_node(m, k), &l, err))) return s;
    char key[NAME_CAP], num[32];
    snprintf(key, sizeof key, "kiln.loss.%s", l.name);
    if ((s = kiln_ir_set_meta(g, key, kiln_loss_name(kiln_model_output_loss(m, k)), err))) return s;
    snprintf(key, sizeof key, "kiln.loss_weight.%s", l.name);
    snprintf(num, sizeof num, "%.9g", (double)kiln_model_output_loss_weight(m, k));
    if ((s = kiln_ir_set_meta(g, key, num, err))) return s;
    char *metrics;
    if ((s = join_metrics(m, k, &metrics, err))) return s;
    if (metrics) {
      snprintf(key, sizeof key, "kiln.metrics.%s", l.name);
      s = kiln_ir_set_meta(g, key, metrics, err);
      free(metrics);
      if (s) return s;
    }
  }
  return KILN_OK;
}

/* Marks needed[i] for every layer an output depends on. */
static void mark_needed(const kiln_model *m, kiln_node node, unsigned char *needed) {
  if (node < 0 || needed[node]) return;
  needed[node] = 1;
  kiln_layer_info l;
  kiln_error e = {0};
  if (kiln_model_layer(m, node, &l, &e)) return;
  for (int k = 0; k < l.n_inputs; k++) mark_needed(m, l.inputs[k], needed);
}

kiln_status kiln_model_lower(const kiln_model *m, const kiln_export_options *opt_in,
                             kiln_ir_graph **out, kiln_error *err) {
  *out = NULL;
  if (!m) return kiln_error_set(err, KILN_E_INVALID, "lower: no model");
  kiln_export_options defaults;
  kiln_export_options_init(&defaults);
  const kiln_export_options *opt = opt_in ? opt_in : &defaults;
  int n_layers = kiln_model_layer_count(m);
  if (n_layers < 2)
    return kiln_error_set(err, KILN_E_INVALID, "lower: the model has no layer after its Input");

  kiln_status s;
  compile_info ci;
  if ((s = read_compile_info(m, &ci, err))) return s;
  int n_in = kiln_model_input_count(m), n_out = kiln_model_output_count(m);

  /* value[i]: the name of the value that holds node i's output (a layer name). */
  const char **value = calloc((size_t)n_layers, sizeof *value);
  unsigned char *needed = calloc((size_t)n_layers, 1);
  kiln_ir_graph *g = NULL;
  if (!value || !needed) {
    s = kiln_error_set(err, KILN_E_NOMEM, "lower: out of memory");
    goto done;
  }
  if (n_in < 1 || n_out < 1) {
    s = kiln_error_set(err, KILN_E_UNSUPPORTED, "lower: the model has %d inputs and %d outputs",
                       n_in, n_out);
    goto done;
  }
  for (int k = 0; k < n_out; k++) mark_needed(m, kiln_model_output_node(m, k), needed);
  if ((s = kiln_ir_create("kiln", &g, err))) goto done;
  g->ir_version = opt->opset == 17 ? 8 : 7;

  for (int i = 0; i < n_layers; i++) {
    kiln_layer_info l;
    if ((s = kiln_model_layer(m, i, &l, err))) goto done;
    if (l.kind == KILN_LAYER_INPUT) {
      value[i] = l.name;
      continue;
    }
    if (!needed[i]) continue; /* not on the way to an output */
    if (l.n_inputs < 1) {
      s = kiln_error_set(err, KILN_E_UNSUPPORTED, "lower: layer '%s' has no input", l.name);
      goto done;
    }
    for (int k = 0; k < l.n_inputs; k++)
      if (l.inputs[k] < 0 || l.inputs[k] >= i || !value[l.inputs[k]]) {
        s = kiln_error_set(err, KILN_E_UNSUPPORTED,
                           "lower: layer '%s': input %d is not an earlier layer", l.name, k);
        goto done;
      }
    if (l.kind == KILN_LAYER_CONCATENATE) {
      /* keras.layers.Concatenate(): Concat along the features (axis -1) */
      const char *ins[KILN_MAX_IO];
      if (l.n_inputs > KILN_MAX_IO) {
        s = kiln_error_set(err, KILN_E_UNSUPPORTED, "lower: layer '%s': %d inputs (at most %d)",
                           l.name, l.n_inputs, KILN_MAX_IO);
        goto done;
      }
      for (int k = 0; k < l.n_inputs; k++) ins[k] = value[l.inputs[k]];
      const char *outs[1] = {l.name};
      char node[NAME_CAP];
      kiln_ir_node *n;
      if ((s = kiln_ir_add_node(g, "Concat", join(node, sizeof node, l.name, "/Concat"), ins,
                                l.n_inputs, outs, 1, &n, err)) ||
          (s = kiln_ir_node_set_int(n, "axis", -1, err)))
        goto done;
      value[i] = l.name;
      continue;
    }
    if (l.n_inputs != 1) {
      s = kiln_error_set(err, KILN_E_UNSUPPORTED,
                         "lower: layer '%s': expected one input from an earlier layer", l.name);
      goto done;
    }
    const char *in = value[l.inputs[0]];
    if (l.kind == KILN_LAYER_DROPOUT) {
      value[i] = in; /* identity at inference: consumers read its input */
    } else if (l.kind == KILN_LAYER_DENSE) {
      if ((s = lower_dense(g, &l, in, opt->dense_as_matmul, err))) {
        kiln_error_prefix(err, "lower: layer '%s'", l.name);
        goto done;
      }
      value[i] = l.name;
    } else if (l.kind == KILN_LAYER_CUSTOM) {
      if ((s = kiln_lower_custom_layer(g, m, i, &l, in, opt->opset, err))) goto done;
      value[i] = l.name;
    } else {
      s = kiln_error_set(err, KILN_E_UNSUPPORTED, "lower: layer '%s': kind %d has no ONNX form",
                         l.name, (int)l.kind);
      goto done;
    }
  }

  /* graph inputs: the model's Input layers, in the model's order */
  const char *params[2] = {"batch", NULL};
  int64_t in_features = 0;
  for (int k = 0; k < n_in; k++) {
    kiln_layer_info il;
    if ((s = kiln_model_layer(m, kiln_model_input_node(m, k), &il, err))) goto done;
    if (il.kind != KILN_LAYER_INPUT) {
      s = kiln_error_set(err, KILN_E_UNSUPPORTED, "lower: model input %d ('%s') is not an Input",
                         k, il.name);
      goto done;
    }
    in_features = il.out_features;
    int64_t dims[2] = {-1, il.out_features};
    if ((s = kiln_ir_add_input(g, il.name, KILN_DTYPE_FLOAT, dims, params, 2, err))) goto done;
  }
  int64_t out_features = 0;
  for (int k = 0; k < n_out; k++) {
    kiln_node o = kiln_model_output_node(m, k);
    kiln_layer_info ol;
    if ((s = kiln_model_layer(m, o, &ol, err))) goto done;
    for (int j = 0; j < k; j++)
      if (kiln_model_output_node(m, j) == o) {
        s = kiln_error_set(err, KILN_E_UNSUPPORTED, "lower: layer '%s' is an output twice",
                           ol.name);
        goto done;
      }
    if (strcmp(value[o], ol.name) != 0 || ol.kind == KILN_LAYER_INPUT) {
      /* The output is a Dropout (or an Input): name the graph output after it. */
      const char *ins[1] = {value[o]};
      char oname[NAME_CAP];
      const char *outs[1] = {ol.kind == KILN_LAYER_INPUT ? join(oname, sizeof oname, ol.name,
                                                                 "/output")
                                                          : ol.name};
      char node[NAME_CAP];
      if ((s = kiln_ir_add_node(g, "Identity", join(node, sizeof node, ol.name, "/Identity"), ins,
                                1, outs, 1, NULL, err)))
        goto done;
      int64_t dims[2] = {-1, ol.out_features};
      if ((s = kiln_ir_add_output(g, outs[0], KILN_DTYPE_FLOAT, dims, params, 2, err))) goto done;
    } else {
      int64_t dims[2] = {-1, ol.out_features};
      if ((s = kiln_ir_add_output(g, ol.name, KILN_DTYPE_FLOAT, dims, params, 2, err))) goto done;
    }
    out_features = ol.out_features;
  }
  if (n_in > 1 && (opt->input_mean || opt->input_std)) {
    s = kiln_error_set(err, KILN_E_UNSUPPORTED,
                       "export: input_mean/input_std describe one input; the model has %d", n_in);
    goto done;
  }
  if (n_out > 1 && opt->n_class_names > 0) {
    s = kiln_error_set(err, KILN_E_UNSUPPORTED,
                       "export: class_names describe one output; the model has %d", n_out);
    goto done;
  }
  if ((s = check_options(opt, in_features, out_features, err))) goto done;
  char version[32];
  snprintf(version, sizeof version, "%s", KILN_EXPORT_PRODUCER_VERSION);
  if ((s = kiln_ir_set_opset(g, "", opt->opset, err)) ||
      (s = kiln_ir_set_producer(g, KILN_EXPORT_PRODUCER_NAME, version, err)))
    goto done;
  if (n_out == 1) {
    if ((s = set_metadata(g, &ci, opt, err))) goto done;
  } else {
    if ((s = set_metadata(g, &(compile_info){0}, opt, err))) goto done;
    if (ci.compiled && (s = set_output_metadata(g, m, err))) goto done;
  }
  *out = g;
  g = NULL;

done:
  kiln_ir_free(g);
  free(value);
  free(needed);
  free(ci.metrics);
  return s;
}

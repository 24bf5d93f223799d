/* kiln export — importing a graph kiln exported back into a trainable model.
 *
 * Recognises what kiln_model_lower writes: from the one graph input, a chain of
 * Gemm (or MatMul then Add) with float initializer weights, each optionally followed
 * by Relu / Sigmoid / Tanh / Softmax, ending at the one graph output (an Identity at
 * the end is accepted); with several inputs or outputs, a DAG of those layers and
 * Concat nodes along the features (the functional model: listing 7.9's ticket model).
 * Anything else is KILN_E_UNSUPPORTED naming the node. */
#include <stdlib.h>
#include <string.h>

#include "kiln/export.h"

#define MAX_METRICS 16

/* The single node that reads value `name` (NULL if none); *count gets how many do. */
static const kiln_ir_node *consumer(const kiln_ir_graph *g, const char *name, int *count,
                                    int *index) {
  const kiln_ir_node *found = NULL;
  *count = 0;
  for (int i = 0; i < g->n_nodes; i++)
    for (int k = 0; k < g->nodes[i].n_inputs; k++)
      if (strcmp(g->nodes[i].inputs[k], name) == 0) {
        if (!found) {
          found = &g->nodes[i];
          *index = i;
        }
        ++*count;
        break;
      }
  return found;
}

static kiln_status unsupported(kiln_error *err, const kiln_ir_node *n, const char *why) {
  return kiln_error_set(err, KILN_E_UNSUPPORTED,
                        "import: node '%s' (%s): %s; kiln imports only the Dense chains it "
                        "exports (Gemm or MatMul+Add, then Relu/Sigmoid/Tanh/Softmax)",
                        n->name, n->op_type, why);
}

static const kiln_ir_tensor *float_init(const kiln_ir_graph *g, const char *name, int rank) {
  const kiln_ir_tensor *t = kiln_ir_find_initializer(g, name);
  if (!t || t->dtype != KILN_DTYPE_FLOAT || t->rank != rank) return NULL;
  if (t->bytes != (size_t)kiln_ir_tensor_numel(t) * sizeof(float)) return NULL;
  return t;
}

static int attr_int(const kiln_ir_node *n, const char *name, int64_t def) {
  const kiln_ir_attr *a = kiln_ir_node_attr(n, name);
  return a && a->type == KILN_ATTR_INT ? (int)a->i : (int)def;
}

static float attr_float(const kiln_ir_node *n, const char *name, float def) {
  const kiln_ir_attr *a = kiln_ir_node_attr(n, name);
  return a && a->type == KILN_ATTR_FLOAT ? a->f : def;
}

/* One recognised Dense layer. */
typedef struct dense_match {
  const kiln_ir_tensor *kernel; /* [in, out], or [out, in] when trans_b */
  const kiln_ir_tensor *bias;   /* [out] or [1, out] */
  int trans_b;
  int64_t in, units;
  kiln_activation activation;
  const char *name; /* the layer's output value */
  int nodes;        /* graph nodes it covers ... */
  int idx[3];       /* ... and their indices */
} dense_match;

static const char *other_input(const kiln_ir_node *n, const char *mine) {
  return strcmp(n->inputs[0], mine) == 0 ? n->inputs[1] : n->inputs[0];
}

static const kiln_ir_tensor *bias_init(const kiln_ir_graph *g, const char *name, int64_t units) {
  const kiln_ir_tensor *b = kiln_ir_find_initializer(g, name);
  if (!b || b->dtype != KILN_DTYPE_FLOAT || kiln_ir_tensor_numel(b) != units) return NULL;
  if (b->rank == 1 || (b->rank == 2 && b->dims[0] == 1)) return b;
  return NULL;
}

/* Matches the Dense layer whose affine node n reads value `cur`. */
static kiln_status match_dense(const kiln_ir_graph *g, const kiln_ir_node *n, const char *cur,
                               dense_match *d, kiln_error *err) {
  memset(d, 0, sizeof *d);
  const char *out;
  if (strcmp(n->op_type, "Gemm") == 0) {
    if (n->n_inputs != 3 || n->n_outputs != 1 || strcmp(n->inputs[0], cur) != 0)
      return unsupported(err, n, "expected Gemm(x, kernel, bias) with one output");
    if (attr_int(n, "transA", 0) != 0 || attr_float(n, "alpha", 1.0f) != 1.0f ||
        attr_float(n, "beta", 1.0f) != 1.0f)
      return unsupported(err, n, "transA, alpha or beta is not the default");
    d->trans_b = attr_int(n, "transB", 0) != 0;
    d->kernel = float_init(g, n->inputs[1], 2);
    if (!d->kernel) return unsupported(err, n, "the kernel is not a 2-D float initializer");
    d->in = d->kernel->dims[d->trans_b ? 1 : 0];
    d->units = d->kernel->dims[d->trans_b ? 0 : 1];
    d->bias = bias_init(g, n->inputs[2], d->units);
    if (!d->bias) return unsupported(err, n, "the bias is not a float initializer of [units]");
    out = n->outputs[0];
    d->idx[d->nodes++] = (int)(n - g->nodes);
  } else if (strcmp(n->op_type, "MatMul") == 0) {
    if (n->n_inputs != 2 || n->n_outputs != 1 || strcmp(n->inputs[0], cur) != 0)
      return unsupported(err, n, "expected MatMul(x, kernel) with one output");
    d->kernel = float_init(g, n->inputs[1], 2);
    if (!d->kernel) return unsupported(err, n, "the kernel is not a 2-D float initializer");
    d->in = d->kernel->dims[0];
    d->units = d->kernel->dims[1];
    int count, idx = 0;
    const kiln_ir_node *add = consumer(g, n->outputs[0], &count, &idx);
    if (!add || count != 1 || strcmp(add->op_type, "Add") != 0 || add->n_inputs != 2 ||
        add->n_outputs != 1)
      return unsupported(err, add ? add : n, "expected MatMul followed by its bias Add");
    d->bias = bias_init(g, other_input(add, n->outputs[0]), d->units);
    if (!d->bias) return unsupported(err, add, "the bias is not a float initializer of [units]");
    out = add->outputs[0];
    d->idx[d->nodes++] = (int)(n - g->nodes);
    d->idx[d->nodes++] = idx;
  } else {
    return unsupported(err, n, "not a Dense layer");
  }
  d->activation = KILN_ACTIVATION_LINEAR;
  d->name = out;
  int count, idx = 0;
  const kiln_ir_node *a = consumer(g, out, &count, &idx);
  if (!a || count != 1 || a->n_inputs != 1 || a->n_outputs != 1) return KILN_OK;
  if (strcmp(a->op_type, "Relu") == 0) {
    d->activation = KILN_ACTIVATION_RELU;
  } else if (strcmp(a->op_type, "Sigmoid") == 0) {
    d->activation = KILN_ACTIVATION_SIGMOID;
  } else if (strcmp(a->op_type, "Tanh") == 0) {
    d->activation = KILN_ACTIVATION_TANH;
  } else if (strcmp(a->op_type, "Softmax") == 0) {
    int64_t axis = attr_int(a, "axis", kiln_ir_opset_version(g, "") >= 13 ? -1 : 1);
    if (axis != -1 && axis != 1)
      return unsupported(err, a, "softmax over an axis other than the features");
    d->activation = KILN_ACTIVATION_SOFTMAX;
  } else {
    return KILN_OK;
  }
  d->name = a->outputs[0];
  d->idx[d->nodes++] = idx;
  return KILN_OK;
}

/* Adds the Dense layer d matched at node n on top of `from`, copies its kernel (transposed
 * for Gemm's transB) and bias into the trainer's weights, and marks d's nodes used. */
static kiln_status add_matched_dense(kiln_model *m, const kiln_ir_node *n, const dense_match *d,
                                     kiln_node from, unsigned char *used, kiln_node *node,
                                     kiln_error *err) {
  kiln_dense_options o;
  kiln_dense_options_init(&o);
  o.activation = d->activation;
  o.kernel_initializer = KILN_INIT_ZEROS;
  /* lower names every layer's output value after the layer; a name the trainer
   * cannot take (another tool's long value names) gets the default "dense_N". */
  o.name = strlen(d->name) < 64 ? d->name : NULL;
  kiln_status s = kiln_model_dense(m, from, d->units, &o, node, err);
  if (s) {
    kiln_error_prefix(err, "import: node '%s'", n->name);
    return s;
  }
  kiln_layer_info li;
  if ((s = kiln_model_layer(m, *node, &li, err))) return s;
  const float *w = d->kernel->data;
  if (!d->trans_b) {
    memcpy(li.kernel, w, (size_t)(d->in * d->units) * sizeof(float));
  } else {
    for (int64_t r = 0; r < d->in; r++)
      for (int64_t c = 0; c < d->units; c++) li.kernel[r * d->units + c] = w[c * d->in + r];
  }
  memcpy(li.bias, d->bias->data, (size_t)d->units * sizeof(float));
  for (int k = 0; k < d->nodes; k++) used[d->idx[k]] = 1;
  return KILN_OK;
}

static kiln_status compile_from_meta(const kiln_ir_graph *g, kiln_model *m, kiln_error *err) {
  const char *loss_name = kiln_ir_get_meta(g, "kiln.loss");
  if (!loss_name) return KILN_OK;
  kiln_loss loss;
  kiln_status s = kiln_loss_parse(loss_name, &loss, err);
  if (s) return kiln_error_prefix(err, "import: metadata kiln.loss");
  const char *metrics = kiln_ir_get_meta(g, "kiln.metrics");
  char *copy = strdup(metrics ? metrics : "");
  if (!copy) return kiln_error_set(err, KILN_E_NOMEM, "import: out of memory");
  const char *names[MAX_METRICS];
  int n = 0;
  for (char *p = copy; *p && n < MAX_METRICS;) {
    char *comma = strchr(p, ',');
    if (comma) *comma = '\0';
    if (*p) names[n++] = p;
    if (!comma) break;
    p = comma + 1;
  }
  kiln_optimizer opt;
  kiln_optimizer_init(&opt, KILN_OPTIMIZER_ADAM);
  s = kiln_model_compile(m, &opt, loss, names, n, err);
  free(copy);
  if (s) kiln_error_prefix(err, "import: compiling with metadata kiln.loss/kiln.metrics");
  return s;
}

/* --- graphs with several inputs or outputs ---------------------------------------- */

typedef struct value_map {
  int n;
  const char **names;
  kiln_node *nodes;
} value_map;

static kiln_node map_get(const value_map *vm, const char *name) {
  for (int i = 0; i < vm->n; i++)
    if (!strcmp(vm->names[i], name)) return vm->nodes[i];
  return -1;
}

static void map_put(value_map *vm, const char *name, kiln_node node) {
  vm->names[vm->n] = name;
  vm->nodes[vm->n++] = node;
}

/* Per-output compile from kiln.loss.<output> / kiln.loss_weight.<output> /
 * kiln.metrics.<output> (what kiln_model_lower writes for several outputs). */
static kiln_status compile_outputs_from_meta(const kiln_ir_graph *g, kiln_model *m,
                                             kiln_error *err) {
  int n = g->n_outputs;
  kiln_output_config cfg[KILN_MAX_IO];
  char *copies[KILN_MAX_IO] = {0};
  const char *names[KILN_MAX_IO][MAX_METRICS];
  kiln_status s = KILN_OK;
  for (int k = 0; k < n; k++) {
    char key[320];
    const char *out = g->outputs[k].name;
    kiln_output_config_init(&cfg[k]);
    cfg[k].output = out;
    snprintf(key, sizeof key, "kiln.loss.%s", out);
    const char *loss = kiln_ir_get_meta(g, key);
    if (!loss) goto free_all; /* not compiled: no per-output losses */
    if ((s = kiln_loss_parse(loss, &cfg[k].loss, err))) {
      kiln_error_prefix(err, "import: metadata %s", key);
      goto free_all;
    }
    snprintf(key, sizeof key, "kiln.loss_weight.%s", out);
    const char *w = kiln_ir_get_meta(g, key);
    if (w) cfg[k].loss_weight = strtof(w, NULL);
    snprintf(key, sizeof key, "kiln.metrics.%s", out);
    const char *metrics = kiln_ir_get_meta(g, key);
    if (metrics && !(copies[k] = strdup(metrics))) {
      s = kiln_error_set(err, KILN_E_NOMEM, "import: out of memory");
      goto free_all;
    }
    int nm = 0;
    for (char *p = copies[k]; p && *p && nm < MAX_METRICS;) {
      char *comma = strchr(p, ',');
      if (comma) *comma = '\0';
      if (*p) names[k][nm++] = p;
      if (!comma) break;
      p = comma + 1;
    }
    cfg[k].metrics = names[k];
    cfg[k].n_metrics = nm;
  }
  kiln_optimizer opt;
  kiln_optimizer_init(&opt, KILN_OPTIMIZER_ADAM);
  if ((s = kiln_model_compile_outputs(m, &opt, cfg, n, err)))
    kiln_error_prefix(err, "import: compiling with metadata kiln.loss.<output>");
free_all:
  for (int k = 0; k < n; k++) free(copies[k]);
  return s;
}

/* A DAG of Gemm/MatMul(+Add)(+activation) layers and Concat nodes (axis -1) from several
 * graph inputs to several outputs (Identity allowed), as kiln_model_lower writes it. */
static kiln_status import_dag(const kiln_ir_graph *g, uint64_t seed, kiln_model **out,
                              kiln_error *err) {
  if (g->n_inputs > KILN_MAX_IO || g->n_outputs > KILN_MAX_IO)
    return kiln_error_set(err, KILN_E_UNSUPPORTED,
                          "import: %d inputs and %d outputs (kiln models take at most %d each)",
                          g->n_inputs, g->n_outputs, KILN_MAX_IO);
  kiln_model *m = NULL;
  unsigned char *used = calloc((size_t)g->n_nodes + 1, 1);
  value_map vm = {0, NULL, NULL};
  vm.names = calloc((size_t)(g->n_nodes + g->n_inputs) + 1, sizeof *vm.names);
  vm.nodes = calloc((size_t)(g->n_nodes + g->n_inputs) + 1, sizeof *vm.nodes);
  kiln_status s = KILN_OK;
  if (!used || !vm.names || !vm.nodes) {
    s = kiln_error_set(err, KILN_E_NOMEM, "import: out of memory");
    goto fail;
  }
  if ((s = kiln_model_create(seed, &m, err))) goto fail;
  kiln_node ins[KILN_MAX_IO];
  for (int i = 0; i < g->n_inputs; i++) {
    const kiln_ir_value *v = &g->inputs[i];
    if (v->dtype != KILN_DTYPE_FLOAT || v->rank != 2 || v->dims[1].value <= 0) {
      s = kiln_error_set(err, KILN_E_UNSUPPORTED,
                         "import: input '%s': expected a float tensor [batch, features] with a "
                         "fixed feature count", v->name);
      goto fail;
    }
    if ((s = kiln_model_input(m, v->name, v->dims[1].value, &ins[i], err))) {
      kiln_error_prefix(err, "import: input '%s'", v->name);
      goto fail;
    }
    map_put(&vm, v->name, ins[i]);
  }
  for (int progress = 1; progress;) {
    progress = 0;
    for (int i = 0; i < g->n_nodes; i++) {
      const kiln_ir_node *n = &g->nodes[i];
      if (used[i] || n->n_outputs != 1) continue;
      int ready = 1;
      int k0 = strcmp(n->op_type, "Concat") == 0 ? n->n_inputs : 1;
      if (n->n_inputs < 1) ready = 0;
      for (int k = 0; k < k0 && k < n->n_inputs && ready; k++) ready = map_get(&vm, n->inputs[k]) >= 0;
      if (!ready) continue;
      if (!strcmp(n->op_type, "Concat")) {
        const kiln_ir_attr *ax = kiln_ir_node_attr(n, "axis");
        if (!ax || ax->type != KILN_ATTR_INT || (ax->i != -1 && ax->i != 1)) {
          s = unsupported(err, n, "a Concat along an axis other than the features");
          goto fail;
        }
        if (n->n_inputs > KILN_MAX_IO) {
          s = unsupported(err, n, "a Concat of more than 8 inputs");
          goto fail;
        }
        kiln_node parts[KILN_MAX_IO], node;
        for (int k = 0; k < n->n_inputs; k++) parts[k] = map_get(&vm, n->inputs[k]);
        const char *name = strlen(n->outputs[0]) < 64 ? n->outputs[0] : NULL;
        if ((s = kiln_model_concatenate(m, parts, n->n_inputs, name, &node, err))) {
          kiln_error_prefix(err, "import: node '%s'", n->name);
          goto fail;
        }
        used[i] = 1;
        map_put(&vm, n->outputs[0], node);
      } else if (!strcmp(n->op_type, "Identity") || !strcmp(n->op_type, "Dropout")) {
        used[i] = 1;
        map_put(&vm, n->outputs[0], map_get(&vm, n->inputs[0]));
      } else if (!strcmp(n->op_type, "Gemm") || !strcmp(n->op_type, "MatMul")) {
        dense_match d;
        if ((s = match_dense(g, n, n->inputs[0], &d, err))) goto fail;
        kiln_node from = map_get(&vm, n->inputs[0]), node;
        kiln_layer_info fl;
        if ((s = kiln_model_layer(m, from, &fl, err))) goto fail;
        if (fl.out_features != d.in) {
          s = kiln_error_set(err, KILN_E_SHAPE,
                             "import: node '%s': the kernel takes %lld features, its input '%s' "
                             "has %lld",
                             n->name, (long long)d.in, n->inputs[0], (long long)fl.out_features);
          goto fail;
        }
        if ((s = add_matched_dense(m, n, &d, from, used, &node, err))) goto fail;
        map_put(&vm, d.name, node);
      } else {
        s = unsupported(err, n, "not a Dense layer, Concat or Identity");
        goto fail;
      }
      progress = 1;
    }
  }
  for (int i = 0; i < g->n_nodes; i++)
    if (!used[i]) {
      s = unsupported(err, &g->nodes[i], "it is not on a path from the inputs to the outputs");
      goto fail;
    }
  kiln_node outs[KILN_MAX_IO];
  for (int k = 0; k < g->n_outputs; k++) {
    outs[k] = map_get(&vm, g->outputs[k].name);
    if (outs[k] < 0) {
      s = kiln_error_set(err, KILN_E_UNSUPPORTED,
                         "import: output '%s' is not computed from the inputs by the layers kiln "
                         "imports", g->outputs[k].name);
      goto fail;
    }
  }
  if ((s = kiln_model_set_inputs(m, ins, g->n_inputs, err)) ||
      (s = kiln_model_set_outputs(m, outs, g->n_outputs, err)))
    goto fail;
  if (g->n_outputs == 1) s = compile_from_meta(g, m, err);
  else s = compile_outputs_from_meta(g, m, err);
  if (s) goto fail;
  free(used);
  free(vm.names);
  free(vm.nodes);
  *out = m;
  return KILN_OK;
fail:
  free(used);
  free(vm.names);
  free(vm.nodes);
  kiln_model_free(m);
  return s;
}

kiln_status kiln_model_from_ir(const kiln_ir_graph *g, uint64_t seed, kiln_model **out,
                               kiln_error *err) {
  *out = NULL;
  if (!g) return kiln_error_set(err, KILN_E_INVALID, "import: no graph");
  if (g->n_inputs < 1 || g->n_outputs < 1)
    return kiln_error_set(err, KILN_E_UNSUPPORTED,
                          "import: the graph has %d inputs and %d outputs (at least one of each "
                          "expected)",
                          g->n_inputs, g->n_outputs);
  for (int i = 0; i < g->n_nodes; i++)
    if (g->nodes[i].domain && g->nodes[i].domain[0] && strcmp(g->nodes[i].domain, "ai.onnx"))
      return unsupported(err, &g->nodes[i], "an operator outside the default ONNX domain");
  if (g->n_inputs > 1 || g->n_outputs > 1) return import_dag(g, seed, out, err);
  const kiln_ir_value *gin = &g->inputs[0];
  if (gin->dtype != KILN_DTYPE_FLOAT || gin->rank != 2)
    return kiln_error_set(err, KILN_E_UNSUPPORTED,
                          "import: input '%s': expected a float tensor [batch, features]",
                          gin->name);
  for (int i = 0; i < g->n_nodes; i++)
    if (g->nodes[i].domain && g->nodes[i].domain[0] && strcmp(g->nodes[i].domain, "ai.onnx"))
      return unsupported(err, &g->nodes[i], "an operator outside the default ONNX domain");

  kiln_model *m = NULL;
  unsigned char *used = calloc((size_t)g->n_nodes + 1, 1);
  if (!used) return kiln_error_set(err, KILN_E_NOMEM, "import: out of memory");
  kiln_status s = kiln_model_create(seed, &m, err);
  if (s) goto fail;
  kiln_node node = -1;
  const char *cur = gin->name;
  const char *target = g->outputs[0].name;
  int layers = 0;
  int64_t width = gin->dims[1].value; /* <= 0: symbolic, known from the first kernel */
  while (strcmp(cur, target) != 0) {
    int count, idx = 0;
    const kiln_ir_node *n = consumer(g, cur, &count, &idx);
    if (!n) {
      s = kiln_error_set(err, KILN_E_UNSUPPORTED,
                         "import: value '%s' is read by no node but is not the output '%s'", cur,
                         target);
      goto fail;
    }
    if (count != 1) {
      s = unsupported(err, n, "its input is read by more than one node (a branching graph)");
      goto fail;
    }
    if (layers > 0 && strcmp(n->op_type, "Identity") == 0 && n->n_inputs == 1 &&
        n->n_outputs == 1 && strcmp(n->outputs[0], target) == 0) {
      used[idx] = 1;
      break;
    }
    dense_match d;
    if ((s = match_dense(g, n, cur, &d, err))) goto fail;
    if (width > 0 && d.in != width) {
      s = kiln_error_set(err, KILN_E_SHAPE,
                         "import: node '%s': the kernel takes %lld features, its input has %lld",
                         n->name, (long long)d.in, (long long)width);
      goto fail;
    }
    if (layers == 0 && (s = kiln_model_input(m, gin->name, d.in, &node, err))) goto fail;
    if ((s = add_matched_dense(m, n, &d, node, used, &node, err))) goto fail;
    layers++;
    width = d.units;
    cur = d.name;
  }
  if (layers == 0) {
    s = kiln_error_set(err, KILN_E_UNSUPPORTED, "import: the graph has no Dense layer");
    goto fail;
  }
  for (int i = 0; i < g->n_nodes; i++)
    if (!used[i]) {
      s = unsupported(err, &g->nodes[i], "it is not on the chain from the input to the output");
      goto fail;
    }
  if ((s = kiln_model_set_output(m, node, err)) || (s = compile_from_meta(g, m, err))) goto fail;
  free(used);
  *out = m;
  return KILN_OK;
fail:
  free(used);
  kiln_model_free(m);
  return s;
}

/* kiln trainer — model checkpoints: "KILNCKP1", a little-endian u64 length, a JSON
 * description of the graph and compile settings, then every Dense layer's kernel
 * and bias and every custom layer's weights (in their declared order) as
 * little-endian float32, in layer order. A custom layer is recorded by its class type
 * and its weights' names and sizes: loading it needs the class (load_custom). The training state, not a
 * deployment format (that is ONNX). A training state ("KILNSTA1") adds a "state"
 * object to the JSON (epoch, iterations, the three generator states as decimal
 * strings, the slot count) and, after the weights, every optimizer slot (slot1 then
 * slot2 of each trainable tensor, in m->params order). */
#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kiln/atomic_file.h"
#include "custom_layer.h"
#include "model_internal.h"

#define MAGIC "KILNCKP1"
#define STATE_MAGIC "KILNSTA1" /* the same, plus the training state (see state_describe) */
#define MAX_JSON (16u << 20)

static cJSON *describe(const kiln_model *m) {
  cJSON *root = cJSON_CreateObject();
  cJSON_AddStringToObject(root, "format", "kiln-checkpoint");
  cJSON_AddNumberToObject(root, "version", 1);
  char seed[32];
  snprintf(seed, sizeof seed, "%llu", (unsigned long long)m->seed);
  cJSON_AddStringToObject(root, "seed", seed);
  cJSON *layers = cJSON_AddArrayToObject(root, "layers");
  for (int i = 0; i < m->n_layers; i++) {
    const kiln_layer *l = &m->layers[i];
    cJSON *o = cJSON_CreateObject();
    static const char *const kinds[] = {"Input", "Dense", "Dropout", "Concatenate", "Custom"};
    cJSON_AddStringToObject(o, "type", kinds[l->kind]); /* save_file refused other kinds */
    cJSON_AddStringToObject(o, "name", l->name);
    if (l->kind == KILN_LAYER_INPUT) {
      cJSON_AddNumberToObject(o, "features", (double)l->out_features);
    } else {
      cJSON_AddNumberToObject(o, "input", l->inputs[0]);
    }
    if (l->kind == KILN_LAYER_CONCATENATE) {
      cJSON *ins = cJSON_AddArrayToObject(o, "inputs");
      for (int j = 0; j < l->n_inputs; j++) cJSON_AddItemToArray(ins, cJSON_CreateNumber(l->inputs[j]));
    }
    if (l->kind == KILN_LAYER_DENSE) {
      cJSON_AddNumberToObject(o, "units", (double)l->out_features);
      cJSON_AddStringToObject(o, "activation", kiln_activation_name(l->activation));
      cJSON *reg = cJSON_AddObjectToObject(o, "kernel_regularizer");
      cJSON_AddNumberToObject(reg, "l1", l->reg.l1);
      cJSON_AddNumberToObject(reg, "l2", l->reg.l2);
    }
    if (l->kind == KILN_LAYER_DROPOUT) cJSON_AddNumberToObject(o, "rate", l->rate);
    if (l->custom) {
      cJSON_AddStringToObject(o, "class", l->custom->cls->type);
      cJSON_AddNumberToObject(o, "units", (double)l->out_features);
      cJSON *ws = cJSON_AddArrayToObject(o, "weights");
      for (int w = 0; w < l->custom->n_weights; w++) {
        cJSON *wo = cJSON_CreateObject();
        cJSON_AddStringToObject(wo, "name", l->custom->names[w]);
        cJSON_AddNumberToObject(wo, "size", (double)l->custom->sizes[w]);
        cJSON_AddItemToArray(ws, wo);
      }
    }
    cJSON_AddItemToArray(layers, o);
  }
  /* "output" (the first) is what files before several outputs had; "inputs" and
   * "outputs" are the graph's lists. */
  kiln_node nodes[KILN_MAX_IO];
  int n = kiln_model_resolve_outputs(m, nodes);
  cJSON_AddNumberToObject(root, "output", n ? nodes[0] : m->n_layers - 1);
  cJSON *outs = cJSON_AddArrayToObject(root, "outputs");
  for (int k = 0; k < n; k++) cJSON_AddItemToArray(outs, cJSON_CreateNumber(nodes[k]));
  n = kiln_model_resolve_inputs(m, nodes);
  cJSON *ins = cJSON_AddArrayToObject(root, "inputs");
  for (int k = 0; k < n; k++) cJSON_AddItemToArray(ins, cJSON_CreateNumber(nodes[k]));
  if (m->compiled) {
    cJSON *c = cJSON_AddObjectToObject(root, "compile");
    cJSON_AddStringToObject(c, "loss", kiln_loss_name(m->loss));
    cJSON *o = cJSON_AddObjectToObject(c, "optimizer");
    cJSON_AddStringToObject(o, "name", kiln_optimizer_name(m->opt.kind));
    cJSON_AddNumberToObject(o, "learning_rate", m->opt.learning_rate);
    cJSON_AddNumberToObject(o, "momentum", m->opt.momentum);
    cJSON_AddBoolToObject(o, "nesterov", m->opt.nesterov);
    cJSON_AddNumberToObject(o, "rho", m->opt.rho);
    cJSON_AddNumberToObject(o, "beta_1", m->opt.beta_1);
    cJSON_AddNumberToObject(o, "beta_2", m->opt.beta_2);
    cJSON_AddNumberToObject(o, "epsilon", m->opt.epsilon);
    cJSON *metrics = cJSON_AddArrayToObject(c, "metrics");
    for (int i = 0; i < m->n_metric_names; i++)
      cJSON_AddItemToArray(metrics, cJSON_CreateString(m->metric_names[i]));
    /* Per-output settings (Keras' loss / loss_weights / metrics dicts), in output
     * order; "loss" and "metrics" above are output 0's for older readers. */
    cJSON *per = cJSON_AddArrayToObject(c, "outputs");
    for (int k = 0; k < m->n_outs; k++) {
      const kiln_output *ou = &m->outs[k];
      cJSON *oc = cJSON_CreateObject();
      cJSON_AddStringToObject(oc, "name", m->layers[ou->node].name);
      cJSON_AddStringToObject(oc, "loss", kiln_loss_name(ou->loss));
      cJSON_AddNumberToObject(oc, "loss_weight", ou->weight);
      cJSON *om = cJSON_AddArrayToObject(oc, "metrics");
      for (int i = 0; i < ou->n_metric_names; i++)
        cJSON_AddItemToArray(om, cJSON_CreateString(ou->metric_names[i]));
      cJSON_AddItemToArray(per, oc);
    }
  }
  return root;
}

static void put_u64(unsigned char *b, uint64_t v) {
  for (int i = 0; i < 8; i++) b[i] = (unsigned char)(v >> (8 * i));
}

static uint64_t get_u64(const unsigned char *b) {
  uint64_t v = 0;
  for (int i = 0; i < 8; i++) v |= (uint64_t)b[i] << (8 * i);
  return v;
}

static int write_floats(FILE *fp, const float *v, int64_t n) {
  /* kiln targets little-endian hosts (x86, aarch64, armhf): floats go out as they are. */
  return fwrite(v, sizeof(float), (size_t)n, fp) == (size_t)n;
}

/* Optimizer slots per trainable tensor (0, 1 or 2: all tensors have the same). */
static int slot_count(const kiln_model *m) {
  if (m->n_params == 0) return 0;
  return m->params[0].slot2 ? 2 : m->params[0].slot1 ? 1 : 0;
}

static void add_u64(cJSON *o, const char *key, uint64_t v) {
  char b[32];
  snprintf(b, sizeof b, "%llu", (unsigned long long)v);
  cJSON_AddStringToObject(o, key, b);
}

static void add_rng(cJSON *o, const char *key, const kiln_rng *r) {
  cJSON *a = cJSON_AddArrayToObject(o, key);
  for (int i = 0; i < 4; i++) {
    char b[32];
    snprintf(b, sizeof b, "%llu", (unsigned long long)r->s[i]);
    cJSON_AddItemToArray(a, cJSON_CreateString(b));
  }
}

/* "state": what a resumed fit needs beyond the weights (the slots follow them). */
static void state_describe(const kiln_model *m, cJSON *root) {
  cJSON *st = cJSON_AddObjectToObject(root, "state");
  cJSON_AddNumberToObject(st, "epoch", m->epoch);
  add_u64(st, "iterations", (uint64_t)m->iterations);
  cJSON_AddNumberToObject(st, "slots", slot_count(m));
  add_rng(st, "init_rng", &m->init_rng);
  add_rng(st, "shuffle_rng", &m->shuffle_rng);
  add_rng(st, "dropout_rng", &m->dropout_rng);
}

static kiln_status save_file(const kiln_model *m, const char *path, int state, kiln_error *err) {
  if (state && !m->compiled)
    return kiln_error_set(err, KILN_E_INVALID,
                          "%s: a training state needs a compiled model (compile it first)", path);
  for (int i = 0; i < m->n_layers; i++)
    if ((unsigned)m->layers[i].kind > KILN_LAYER_CUSTOM ||
        (m->layers[i].kind == KILN_LAYER_CUSTOM && !m->layers[i].custom))
      return kiln_error_set(err, KILN_E_UNSUPPORTED,
                            "%s: layer \"%s\" has a kind checkpoints cannot hold", path,
                            m->layers[i].name);
  cJSON *root = describe(m);
  if (root && state) state_describe(m, root);
  char *json = root ? cJSON_PrintUnformatted(root) : NULL;
  cJSON_Delete(root);
  if (!json) return kiln_error_set(err, KILN_E_NOMEM, "%s: out of memory", path);
  kiln_atomic_file f;
  kiln_status s = kiln_atomic_open(&f, path, "wb", err);
  if (s) {
    free(json);
    return s;
  }
  unsigned char len[8];
  put_u64(len, strlen(json));
  int ok = fwrite(state ? STATE_MAGIC : MAGIC, 1, 8, f.fp) == 8 && fwrite(len, 1, 8, f.fp) == 8 &&
           fwrite(json, 1, strlen(json), f.fp) == strlen(json);
  free(json);
  for (int i = 0; ok && i < m->n_layers; i++) {
    const kiln_layer *l = &m->layers[i];
    for (int w = 0; l->custom && ok && w < l->custom->n_weights; w++)
      ok = write_floats(f.fp, l->custom->w[w], l->custom->sizes[w]);
    if (l->kind != KILN_LAYER_DENSE) continue;
    ok = write_floats(f.fp, l->kernel, l->in_features * l->out_features) &&
         write_floats(f.fp, l->bias, l->out_features);
  }
  int slots = state ? slot_count(m) : 0;
  for (int i = 0; ok && i < m->n_params; i++) {
    if (slots >= 1) ok = write_floats(f.fp, m->params[i].slot1, m->params[i].size);
    if (ok && slots >= 2) ok = write_floats(f.fp, m->params[i].slot2, m->params[i].size);
  }
  if (!ok) {
    kiln_atomic_abort(&f);
    return kiln_error_set(err, KILN_E_IO, "%s: write failed; nothing was written", path);
  }
  return kiln_atomic_commit(&f, err);
}

kiln_status kiln_model_save(const kiln_model *m, const char *path, kiln_error *err) {
  return save_file(m, path, 0, err);
}

kiln_status kiln_model_save_state(const kiln_model *m, const char *path, kiln_error *err) {
  return save_file(m, path, 1, err);
}

static const cJSON *get(const cJSON *o, const char *key) {
  return cJSON_GetObjectItemCaseSensitive(o, key);
}

/* A JSON number that is a whole number in [lo, hi]; the range is checked in double
 * before the conversion (a float outside int64's range must not reach the cast). */
static int json_int(const cJSON *v, int64_t lo, int64_t hi, int64_t *out) {
  if (!cJSON_IsNumber(v)) return 0;
  double d = v->valuedouble;
  if (!(d >= -9.2e18 && d <= 9.2e18) || d != floor(d)) return 0;
  int64_t x = (int64_t)d;
  if (x < lo || x > hi) return 0;
  *out = x;
  return 1;
}

static int get_int(const cJSON *o, const char *key, int64_t lo, int64_t hi, int64_t *out) {
  return json_int(get(o, key), lo, hi, out);
}

/* A JSON array of node indices: its length, 0 when absent, -1 when malformed. */
static int node_list(const cJSON *a, int n_layers, kiln_node *out) {
  if (!a) return 0;
  if (!cJSON_IsArray(a) || cJSON_GetArraySize(a) < 1 || cJSON_GetArraySize(a) > KILN_MAX_IO)
    return -1;
  int n = 0;
  const cJSON *v;
  cJSON_ArrayForEach(v, a) {
    int64_t x;
    if (!json_int(v, 0, n_layers - 1, &x)) return -1;
    out[n++] = (kiln_node)x;
  }
  return n;
}

/* compile.outputs: one {name, loss, loss_weight, metrics} per output, in order. */
static kiln_status compile_per_output(kiln_model *m, const kiln_optimizer *opt, const cJSON *per,
                                      const char *path, kiln_error *err) {
  int n = cJSON_GetArraySize(per);
  if (n < 1 || n > KILN_MAX_IO)
    return kiln_error_set(err, KILN_E_FORMAT, "%s: compile.outputs is invalid", path);
  kiln_output_config cfg[KILN_MAX_IO];
  const char *names[KILN_MAX_IO][KILN_LOGS_MAX];
  for (int k = 0; k < n; k++) {
    const cJSON *oc = cJSON_GetArrayItem(per, k), *loss = get(oc, "loss");
    const cJSON *w = get(oc, "loss_weight"), *metrics = get(oc, "metrics"), *mv;
    kiln_output_config_init(&cfg[k]);
    if (!cJSON_IsObject(oc) || !cJSON_IsString(loss) ||
        kiln_loss_parse(loss->valuestring, &cfg[k].loss, err) != KILN_OK)
      return kiln_error_set(err, KILN_E_FORMAT, "%s: compile.outputs[%d] is invalid", path, k);
    if (cJSON_IsNumber(w)) cfg[k].loss_weight = (float)w->valuedouble;
    int nm = 0;
    cJSON_ArrayForEach(mv, metrics) {
      if (cJSON_IsString(mv) && nm < KILN_LOGS_MAX) names[k][nm++] = mv->valuestring;
    }
    cfg[k].metrics = names[k];
    cfg[k].n_metrics = nm;
  }
  kiln_status s = kiln_model_compile_outputs(m, opt, cfg, n, err);
  if (s) kiln_error_prefix(err, "%s", path);
  return s;
}

/* Rebuilds a custom layer with the caller's class and checks that it declares the
 * weights the file holds. */
static kiln_status load_custom_layer(kiln_model *m, const cJSON *o, const char *path, int i,
                                     kiln_node input, const char *name,
                                     const kiln_layer_factory *classes, int n_classes,
                                     kiln_error *err) {
  const cJSON *cls = get(o, "class"), *ws = get(o, "weights");
  int64_t units = 0;
  if (!cJSON_IsString(cls) || !cJSON_IsArray(ws) || !get_int(o, "units", 1, INT32_MAX, &units))
    return kiln_error_set(err, KILN_E_FORMAT, "%s: layers[%d] (custom) is invalid", path, i);
  const kiln_layer_factory *f = NULL;
  for (int k = 0; k < n_classes && !f; k++)
    if (classes[k].cls && classes[k].cls->type && strcmp(classes[k].cls->type, cls->valuestring) == 0)
      f = &classes[k];
  if (!f)
    return kiln_error_set(err, KILN_E_UNSUPPORTED,
                          "%s: layer \"%s\" is a custom layer of class \"%s\": load the file "
                          "with kiln_model_load_custom (or kiln_model_load_state_custom), giving "
                          "that class%s",
                          path, name, cls->valuestring,
                          classes ? " (none of the classes given has that type)" : "");
  void *ctx = f->user;
  if (f->make_ctx) {
    kiln_status s = f->make_ctx(f->user, name, &ctx, err);
    if (s) return kiln_error_prefix(err, "%s: layer \"%s\": make_ctx", path, name);
  }
  kiln_node node;
  kiln_status s = kiln_model_custom(m, input, f->cls, ctx, name, &node, err);
  if (s) return kiln_error_prefix(err, "%s", path);
  const kiln_custom *c = m->layers[node].custom;
  int nw = cJSON_GetArraySize(ws), w = 0;
  int ok = nw == c->n_weights && units == m->layers[node].out_features;
  const cJSON *wo;
  cJSON_ArrayForEach(wo, ws) {
    const cJSON *wn = get(wo, "name");
    int64_t size = 0;
    if (!ok || w >= c->n_weights) break;
    ok = cJSON_IsString(wn) && strcmp(wn->valuestring, c->names[w]) == 0 &&
         get_int(wo, "size", 1, INT64_MAX, &size) && size == c->sizes[w];
    w++;
  }
  if (!ok)
    return kiln_error_set(err, KILN_E_FORMAT,
                          "%s: layer \"%s\" (%s): the class declares %d weights and %lld "
                          "outputs, which do not match the file's (names, sizes and units must "
                          "be the same as when it was saved)",
                          path, name, cls->valuestring, c->n_weights,
                          (long long)m->layers[node].out_features);
  return KILN_OK;
}

static kiln_status build_from(const cJSON *root, const char *path,
                              const kiln_layer_factory *classes, int n_classes, kiln_model **out,
                              kiln_error *err) {
  const cJSON *seed = get(root, "seed");
  const cJSON *layers = get(root, "layers");
  if (!cJSON_IsString(seed) || !cJSON_IsArray(layers))
    return kiln_error_set(err, KILN_E_FORMAT, "%s: checkpoint header lacks seed or layers", path);
  kiln_model *m;
  kiln_status s = kiln_model_create(strtoull(seed->valuestring, NULL, 10), &m, err);
  if (s) return s;
  int i = 0;
  const cJSON *o;
  cJSON_ArrayForEach(o, layers) {
    const cJSON *type = get(o, "type"), *name = get(o, "name");
    int64_t input = 0, n = 0;
    if (!cJSON_IsString(type) || !cJSON_IsString(name)) {
      s = kiln_error_set(err, KILN_E_FORMAT, "%s: layers[%d] lacks type or name", path, i);
      break;
    }
    if (strcmp(type->valuestring, "Input") == 0) {
      if (!get_int(o, "features", 1, INT32_MAX, &n)) {
        s = kiln_error_set(err, KILN_E_FORMAT, "%s: layers[%d].features is invalid", path, i);
        break;
      }
      s = kiln_model_input(m, name->valuestring, n, NULL, err);
    } else if (!get_int(o, "input", 0, i - 1, &input)) {
      s = kiln_error_set(err, KILN_E_FORMAT, "%s: layers[%d].input is invalid", path, i);
      break;
    } else if (strcmp(type->valuestring, "Dense") == 0) {
      kiln_dense_options opt;
      kiln_dense_options_init(&opt);
      opt.name = name->valuestring;
      opt.kernel_initializer = KILN_INIT_ZEROS; /* the weights follow */
      const cJSON *act = get(o, "activation"), *reg = get(o, "kernel_regularizer");
      if (!get_int(o, "units", 1, INT32_MAX, &n) || !cJSON_IsString(act) ||
          kiln_activation_parse(act->valuestring, &opt.activation, err) != KILN_OK) {
        s = kiln_error_set(err, KILN_E_FORMAT, "%s: layers[%d] (Dense) is invalid", path, i);
        break;
      }
      if (cJSON_IsObject(reg)) {
        const cJSON *l1 = get(reg, "l1"), *l2 = get(reg, "l2");
        if (cJSON_IsNumber(l1)) opt.kernel_regularizer.l1 = (float)l1->valuedouble;
        if (cJSON_IsNumber(l2)) opt.kernel_regularizer.l2 = (float)l2->valuedouble;
      }
      s = kiln_model_dense(m, (kiln_node)input, n, &opt, NULL, err);
    } else if (strcmp(type->valuestring, "Concatenate") == 0) {
      const cJSON *ins = get(o, "inputs"), *v;
      kiln_node nodes[KILN_MAX_IO];
      int n_in = 0, bad = !cJSON_IsArray(ins) || cJSON_GetArraySize(ins) < 1 ||
                          cJSON_GetArraySize(ins) > KILN_MAX_IO;
      if (!bad)
        cJSON_ArrayForEach(v, ins) {
          int64_t x;
          if (!json_int(v, 0, i - 1, &x)) bad = 1;
          else nodes[n_in++] = (kiln_node)x;
        }
      if (bad) {
        s = kiln_error_set(err, KILN_E_FORMAT, "%s: layers[%d].inputs is invalid", path, i);
        break;
      }
      s = kiln_model_concatenate(m, nodes, n_in, name->valuestring, NULL, err);
    } else if (strcmp(type->valuestring, "Custom") == 0) {
      s = load_custom_layer(m, o, path, i, (kiln_node)input, name->valuestring, classes,
                            n_classes, err);
    } else if (strcmp(type->valuestring, "Dropout") == 0) {
      const cJSON *rate = get(o, "rate");
      s = kiln_model_dropout(m, (kiln_node)input, cJSON_IsNumber(rate) ? (float)rate->valuedouble : -1.0f,
                             name->valuestring, NULL, err);
    } else {
      s = kiln_error_set(err, KILN_E_FORMAT, "%s: layers[%d] has unknown type \"%s\"", path, i,
                         type->valuestring);
    }
    if (s) break;
    i++;
  }
  int64_t output;
  kiln_node nodes[KILN_MAX_IO];
  int n_nodes;
  if (!s && (n_nodes = node_list(get(root, "inputs"), m->n_layers, nodes)) != 0) {
    if (n_nodes < 0) s = kiln_error_set(err, KILN_E_FORMAT, "%s: \"inputs\" is invalid", path);
    else if ((s = kiln_model_set_inputs(m, nodes, n_nodes, err)))
      kiln_error_prefix(err, "%s", path);
  }
  if (!s && (n_nodes = node_list(get(root, "outputs"), m->n_layers, nodes)) != 0) {
    if (n_nodes < 0) s = kiln_error_set(err, KILN_E_FORMAT, "%s: \"outputs\" is invalid", path);
    else if ((s = kiln_model_set_outputs(m, nodes, n_nodes, err)))
      kiln_error_prefix(err, "%s", path);
  } else if (!s && get_int(root, "output", 0, m->n_layers - 1, &output)) {
    s = kiln_model_set_output(m, (kiln_node)output, err);
  }
  const cJSON *c = get(root, "compile");
  if (!s && cJSON_IsObject(c)) {
    const cJSON *loss = get(c, "loss"), *o2 = get(c, "optimizer"), *metrics = get(c, "metrics");
    kiln_loss l;
    kiln_optimizer opt;
    const cJSON *oname = cJSON_IsObject(o2) ? get(o2, "name") : NULL;
    if (!cJSON_IsString(loss) || kiln_loss_parse(loss->valuestring, &l, err) ||
        !cJSON_IsString(oname) || kiln_optimizer_parse(oname->valuestring, &opt, err)) {
      s = kiln_error_set(err, KILN_E_FORMAT, "%s: compile settings are invalid", path);
    } else {
      static const char *const keys[] = {"learning_rate", "momentum", "rho", "beta_1", "beta_2",
                                         "epsilon"};
      float *fields[] = {&opt.learning_rate, &opt.momentum, &opt.rho, &opt.beta_1, &opt.beta_2,
                         &opt.epsilon};
      for (int k = 0; k < 6; k++) {
        const cJSON *v = get(o2, keys[k]);
        if (cJSON_IsNumber(v)) *fields[k] = (float)v->valuedouble;
      }
      opt.nesterov = cJSON_IsTrue(get(o2, "nesterov"));
      const char *names[KILN_LOGS_MAX];
      int nm = 0;
      const cJSON *mv;
      cJSON_ArrayForEach(mv, metrics) {
        if (cJSON_IsString(mv) && nm < KILN_LOGS_MAX) names[nm++] = mv->valuestring;
      }
      const cJSON *per = get(c, "outputs");
      if (cJSON_IsArray(per)) s = compile_per_output(m, &opt, per, path, err);
      else s = kiln_model_compile(m, &opt, l, names, nm, err);
    }
  }
  if (s) {
    kiln_model_free(m);
    return s;
  }
  *out = m;
  return KILN_OK;
}

static int get_u64_string(const cJSON *o, const char *key, uint64_t *out) {
  const cJSON *v = get(o, key);
  if (!cJSON_IsString(v) || !*v->valuestring) return 0;
  char *end;
  errno = 0;
  unsigned long long x = strtoull(v->valuestring, &end, 10);
  if (*end || errno || v->valuestring[0] == '-') return 0;
  *out = (uint64_t)x;
  return 1;
}

static int get_rng(const cJSON *o, const char *key, kiln_rng *r) {
  const cJSON *a = get(o, key);
  if (!cJSON_IsArray(a) || cJSON_GetArraySize(a) != 4) return 0;
  for (int i = 0; i < 4; i++) {
    const cJSON *v = cJSON_GetArrayItem(a, i);
    char *end;
    if (!cJSON_IsString(v) || !*v->valuestring || v->valuestring[0] == '-') return 0;
    errno = 0;
    r->s[i] = (uint64_t)strtoull(v->valuestring, &end, 10);
    if (*end || errno) return 0;
  }
  return r->s[0] | r->s[1] | r->s[2] | r->s[3]; /* xoshiro's state is never all zero */
}

/* Applies the "state" object to a freshly built model (before its slots are read). */
static kiln_status state_apply(const cJSON *root, kiln_model *m, const char *path, int *slots,
                               kiln_error *err) {
  const cJSON *st = get(root, "state");
  int64_t epoch, n;
  uint64_t it;
  if (!cJSON_IsObject(st))
    return kiln_error_set(err, KILN_E_FORMAT, "%s: the header has no \"state\" object", path);
  if (!m->compiled)
    return kiln_error_set(err, KILN_E_FORMAT, "%s: a training state without compile settings",
                          path);
  if (!get_int(st, "epoch", 0, INT32_MAX, &epoch))
    return kiln_error_set(err, KILN_E_FORMAT, "%s: state.epoch is invalid", path);
  if (!get_u64_string(st, "iterations", &it) || it > (uint64_t)INT64_MAX)
    return kiln_error_set(err, KILN_E_FORMAT, "%s: state.iterations is invalid", path);
  if (!get_int(st, "slots", 0, 2, &n) || n != slot_count(m))
    return kiln_error_set(err, KILN_E_FORMAT,
                          "%s: state.slots does not match the optimizer %s (expected %d)", path,
                          kiln_optimizer_name(m->opt.kind), slot_count(m));
  static const char *const keys[] = {"init_rng", "shuffle_rng", "dropout_rng"};
  kiln_rng *rngs[] = {&m->init_rng, &m->shuffle_rng, &m->dropout_rng};
  for (int k = 0; k < 3; k++)
    if (!get_rng(st, keys[k], rngs[k]))
      return kiln_error_set(err, KILN_E_FORMAT,
                            "%s: state.%s is invalid (expected 4 decimal strings)", path, keys[k]);
  m->epoch = (int)epoch;
  m->iterations = (int64_t)it;
  *slots = (int)n;
  return KILN_OK;
}

static kiln_status load_file(const char *path, int state, const kiln_layer_factory *classes,
                             int n_classes, kiln_model **out, kiln_error *err) {
  const char *magic = state ? STATE_MAGIC : MAGIC;
  FILE *fp = fopen(path, "rb");
  if (!fp) return kiln_error_set(err, KILN_E_IO, "%s: cannot open (%s)", path, strerror(errno));
  unsigned char head[16];
  if (fread(head, 1, 16, fp) != 16 || memcmp(head, magic, 8) != 0) {
    int other = memcmp(head, state ? MAGIC : STATE_MAGIC, 8) == 0;
    fclose(fp);
    return kiln_error_set(err, KILN_E_FORMAT,
                          "%s: not a kiln %s (expected the bytes \"%s\" at offset 0)%s", path,
                          state ? "training state" : "checkpoint", magic,
                          other ? (state ? "; it is a model checkpoint, which cannot resume"
                                         : "; it is a training state: load it with load_state")
                                : "");
  }
  uint64_t len = get_u64(head + 8);
  if (len == 0 || len > MAX_JSON) {
    fclose(fp);
    return kiln_error_set(err, KILN_E_FORMAT, "%s: header length %llu at offset 8 is invalid",
                          path, (unsigned long long)len);
  }
  char *json = malloc((size_t)len + 1);
  if (!json || fread(json, 1, (size_t)len, fp) != len) {
    free(json);
    fclose(fp);
    return kiln_error_set(err, KILN_E_FORMAT, "%s: truncated header (expected %llu bytes at offset 16)",
                          path, (unsigned long long)len);
  }
  json[len] = 0;
  cJSON *root = cJSON_Parse(json);
  free(json);
  if (!root) {
    fclose(fp);
    return kiln_error_set(err, KILN_E_FORMAT, "%s: the header is not valid JSON", path);
  }
  kiln_model *m = NULL;
  kiln_status s = build_from(root, path, classes, n_classes, &m, err);
  int slots = 0;
  if (!s && state) s = state_apply(root, m, path, &slots, err);
  cJSON_Delete(root);
  long offset = 16 + (long)len;
  for (int i = 0; !s && i < m->n_layers; i++) {
    kiln_layer *l = &m->layers[i];
    for (int w = 0; l->custom && !s && w < l->custom->n_weights; w++) {
      size_t n = (size_t)l->custom->sizes[w];
      if (fread(l->custom->w[w], sizeof(float), n, fp) != n)
        s = kiln_error_set(err, KILN_E_FORMAT,
                           "%s: truncated weight \"%s\" of layer \"%s\" (from byte offset %ld)",
                           path, l->custom->names[w], l->name, offset);
      offset += (long)(n * sizeof(float));
    }
    if (l->kind != KILN_LAYER_DENSE) continue;
    size_t nk = (size_t)(l->in_features * l->out_features), nb = (size_t)l->out_features;
    if (fread(l->kernel, sizeof(float), nk, fp) != nk || fread(l->bias, sizeof(float), nb, fp) != nb)
      s = kiln_error_set(err, KILN_E_FORMAT,
                         "%s: truncated weights of layer \"%s\" (from byte offset %ld)", path,
                         l->name, offset);
    offset += (long)((nk + nb) * sizeof(float));
  }
  for (int i = 0; !s && i < m->n_params; i++) {
    kiln_param *p = &m->params[i];
    float *slot[2] = {p->slot1, p->slot2};
    for (int k = 0; !s && k < slots; k++) {
      if (fread(slot[k], sizeof(float), (size_t)p->size, fp) != (size_t)p->size)
        s = kiln_error_set(err, KILN_E_FORMAT,
                           "%s: truncated optimizer slots (from byte offset %ld)", path, offset);
      offset += (long)((size_t)p->size * sizeof(float));
    }
  }
  if (!s && fgetc(fp) != EOF)
    s = kiln_error_set(err, KILN_E_FORMAT, "%s: unexpected bytes after the %s at offset %ld",
                       path, state ? "optimizer slots" : "weights", offset);
  fclose(fp);
  if (s) {
    kiln_model_free(m);
    return s;
  }
  *out = m;
  return KILN_OK;
}

kiln_status kiln_model_load(const char *path, kiln_model **out, kiln_error *err) {
  return load_file(path, 0, NULL, 0, out, err);
}

kiln_status kiln_model_load_state(const char *path, kiln_model **out, kiln_error *err) {
  return load_file(path, 1, NULL, 0, out, err);
}

kiln_status kiln_model_load_custom(const char *path, const kiln_layer_factory *classes,
                                   int n_classes, kiln_model **out, kiln_error *err) {
  return load_file(path, 0, classes, n_classes > 0 ? n_classes : 0, out, err);
}

kiln_status kiln_model_load_state_custom(const char *path, const kiln_layer_factory *classes,
                                         int n_classes, kiln_model **out, kiln_error *err) {
  return load_file(path, 1, classes, n_classes > 0 ? n_classes : 0, out, err);
}

/* kiln trainer — JSON model specs (the `kiln train` format), read with cJSON.
 *
 * The spec is validated completely when it is parsed, so kiln_spec_build only fails
 * on what depends on the data (the input width) or on the model API itself. Every
 * message starts with "<source>: <key path>: ", e.g. "spec.json: layers[2].units: ...".
 * Statuses: a JSON syntax error, a value of the wrong JSON type or an unknown key is
 * KILN_E_FORMAT; an unknown name or a value outside its range is KILN_E_INVALID; a
 * Keras setting kiln does not implement (amsgrad, a per-layer seed, ...) is
 * KILN_E_UNSUPPORTED. */
#include <ctype.h>
#include <errno.h>
#include <float.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "kiln/train.h"
#include "spec_custom.h"

/* A spec without "seed" trains with this one, so runs are reproducible by default. */
#define SPEC_DEFAULT_SEED 0
/* Layer names are limited by the model (63 characters). */
#define SPEC_NAME_MAX 63
#define SPEC_FILE_MAX (16L * 1024 * 1024)
#define PATH_MAX_LEN 160

typedef struct spec_layer {
  kiln_layer_kind kind;
  int index;      /* position in the spec's "layers" array, for messages */
  char *name;     /* NULL: Keras' automatic name */
  int64_t features; /* Input: 0 when the spec gives no shape */
  int64_t units;
  kiln_activation activation;
  kiln_initializer initializer;
  float constant;
  kiln_regularizer reg;
  float rate;
  const kiln_layer_registry_entry *custom; /* KILN_LAYER_CUSTOM: its registered class */
  cJSON *config;             /* KILN_LAYER_CUSTOM: a copy of its "config" (or NULL) */
  char *inputs[KILN_MAX_IO]; /* functional specs: the layers or inputs it takes, by name */
  int n_inputs;              /* 0: the layer before it */
} spec_layer;

/* A functional spec's "inputs" entry (keras.Input(shape=..., name=...)). */
typedef struct spec_input {
  char *name;
  int64_t features;
} spec_input;

/* Per-output compile settings (Keras' loss / loss_weights / metrics dicts). */
typedef struct spec_output {
  char *name; /* a layer name from "outputs" */
  kiln_loss loss;
  float loss_weight;
  char **metrics;
  int n_metrics;
} spec_output;

struct kiln_spec {
  char *source;
  char *name;
  int has_seed;
  uint64_t seed;
  int has_input; /* layers[0] is an Input (else one is added in front) */
  spec_input *inputs; /* functional specs: the top-level "inputs" (n_inputs > 0) */
  int n_inputs;
  char **outputs; /* functional specs: "outputs" by layer name (0: the last layer) */
  int n_outputs;
  spec_output *per_output; /* compile with a loss dict or list: one per output */
  int n_per_output;
  spec_layer *layers;
  int n_layers;
  kiln_optimizer optimizer;
  kiln_loss loss;
  char **metrics;
  int n_metrics;
  int has_epochs, has_batch_size, has_validation_split, has_shuffle, has_verbose;
  int epochs;
  int64_t batch_size;
  double validation_split;
  int shuffle;
  int verbose;
};

typedef struct parse_ctx {
  const char *source;
  kiln_error *err;
  const kiln_layer_registry *registry; /* may be NULL */
} parse_ctx;

/* --- messages -------------------------------------------------------------- */

static kiln_status fail(const parse_ctx *c, kiln_status status, const char *path, const char *fmt,
                        ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 4, 5)))
#endif
    ;

static kiln_status fail(const parse_ctx *c, kiln_status status, const char *path, const char *fmt,
                        ...) {
  char msg[KILN_ERROR_MESSAGE_MAX];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  if (path && *path) return kiln_error_set(c->err, status, "%s: %s: %s", c->source, path, msg);
  return kiln_error_set(c->err, status, "%s: %s", c->source, msg);
}

/* Puts "<source>: <path>: " in front of a message a kiln call has just set. */
static kiln_status with_place(const char *source, const char *path, kiln_error *err) {
  char msg[KILN_ERROR_MESSAGE_MAX];
  snprintf(msg, sizeof msg, "%s", err->message);
  if (path && *path) return kiln_error_set(err, err->status, "%s: %s: %s", source, path, msg);
  return kiln_error_set(err, err->status, "%s: %s", source, msg);
}

/* out = a + b + c, cut at PATH_MAX_LEN - 1 bytes (real specs nest a few levels only).
 * Plain copies rather than snprintf, so no format-truncation warning at -O2. */
static void path_join(char *out, const char *a, const char *b, const char *c) {
  size_t n = 0;
  const char *parts[3] = {a, b, c};
  for (int p = 0; p < 3; p++)
    for (const char *s = parts[p]; s && *s && n + 1 < PATH_MAX_LEN; s++) out[n++] = *s;
  out[n] = '\0';
}

static void key_path(char *out, const char *base, const char *key) {
  if (base && *base) path_join(out, base, ".", key);
  else path_join(out, key, NULL, NULL);
}

static void index_path(char *out, const char *base, int i) {
  char idx[16];
  snprintf(idx, sizeof idx, "[%d]", i);
  path_join(out, base, idx, NULL);
}

/* "a string \"relu\"", "an array", ... for "expected X, got Y" messages. */
static const char *json_type(const cJSON *v, char *buf, size_t n) {
  if (cJSON_IsString(v)) {
    snprintf(buf, n, "the string \"%.40s\"", v->valuestring);
    return buf;
  }
  if (cJSON_IsNumber(v)) {
    snprintf(buf, n, "the number %.17g", v->valuedouble);
    return buf;
  }
  if (cJSON_IsTrue(v)) return "true";
  if (cJSON_IsFalse(v)) return "false";
  if (cJSON_IsNull(v)) return "null";
  if (cJSON_IsArray(v)) return "an array";
  if (cJSON_IsObject(v)) return "an object";
  return "an invalid value";
}

static kiln_status wrong_type(const parse_ctx *c, const char *path, const cJSON *v,
                              const char *expected) {
  char buf[96];
  return fail(c, KILN_E_FORMAT, path, "expected %s, got %s", expected, json_type(v, buf, sizeof buf));
}

/* --- generic checks -------------------------------------------------------- */

/* Every key of obj must be one of allowed (and appear once). */
static kiln_status check_keys(const parse_ctx *c, const cJSON *obj, const char *path,
                              const char *const *allowed, int n_allowed) {
  for (const cJSON *it = obj->child; it; it = it->next) {
    char p[PATH_MAX_LEN];
    key_path(p, path, it->string);
    for (const cJSON *prev = obj->child; prev != it; prev = prev->next)
      if (strcmp(prev->string, it->string) == 0)
        return fail(c, KILN_E_FORMAT, p, "key given twice");
    int ok = 0;
    for (int i = 0; i < n_allowed && !ok; i++) ok = strcmp(it->string, allowed[i]) == 0;
    if (!ok) {
      char list[KILN_ERROR_MESSAGE_MAX / 2];
      kiln_spec_join_names(allowed, n_allowed, list, sizeof list);
      return fail(c, KILN_E_FORMAT, p, "unknown key (expected one of %s)", list);
    }
  }
  return KILN_OK;
}

static kiln_status get_object(const parse_ctx *c, const cJSON *v, const char *path) {
  return cJSON_IsObject(v) ? KILN_OK : wrong_type(c, path, v, "an object");
}

static kiln_status get_string(const parse_ctx *c, const cJSON *v, const char *path,
                              const char **out) {
  if (!cJSON_IsString(v) || !v->valuestring) return wrong_type(c, path, v, "a string");
  *out = v->valuestring;
  return KILN_OK;
}

static kiln_status get_bool(const parse_ctx *c, const cJSON *v, const char *path, int *out) {
  if (!cJSON_IsBool(v)) return wrong_type(c, path, v, "true or false");
  *out = cJSON_IsTrue(v) ? 1 : 0;
  return KILN_OK;
}

/* An integer in [min, max]; what describes the range in the message. */
static kiln_status get_int(const parse_ctx *c, const cJSON *v, const char *path, double min,
                           double max, const char *what, int64_t *out) {
  if (!cJSON_IsNumber(v)) return wrong_type(c, path, v, what);
  double d = v->valuedouble;
  if (!isfinite(d) || d != floor(d)) return fail(c, KILN_E_INVALID, path, "expected %s, got %.17g", what, d);
  if (d < min || d > max) return fail(c, KILN_E_INVALID, path, "expected %s, got %.17g", what, d);
  *out = (int64_t)d;
  return KILN_OK;
}

/* A finite number in [min, max] (max_open: max itself excluded) that fits a float. */
static kiln_status get_number(const parse_ctx *c, const cJSON *v, const char *path, double min,
                              double max, int max_open, const char *what, double *out) {
  if (!cJSON_IsNumber(v)) return wrong_type(c, path, v, what);
  double d = v->valuedouble;
  if (!isfinite(d) || d < min || d > max || (max_open && d >= max) || fabs(d) > FLT_MAX)
    return fail(c, KILN_E_INVALID, path, "expected %s, got %.17g", what, d);
  *out = d;
  return KILN_OK;
}

static kiln_status dup_string(const parse_ctx *c, const char *path, const char *s, char **out) {
  size_t n = strlen(s);
  *out = malloc(n + 1);
  if (!*out) return fail(c, KILN_E_NOMEM, path, "out of memory");
  memcpy(*out, s, n + 1);
  return KILN_OK;
}

/* "GlorotUniform" -> "glorot_uniform", "RMSprop" -> "rmsprop" (Keras class names). */
static void snake_case(const char *in, char *out, size_t n) {
  size_t j = 0;
  for (size_t i = 0; in[i] && j + 2 < n; i++) {
    unsigned char ch = (unsigned char)in[i];
    if (isupper(ch) && i > 0 && islower((unsigned char)in[i - 1])) out[j++] = '_';
    out[j++] = (char)tolower(ch);
  }
  out[j] = '\0';
}

/* A {"class_name": ..., "config": {...}} object: checks its keys and returns both. */
static kiln_status get_class(const parse_ctx *c, const cJSON *v, const char *path,
                             const char **class_name, const cJSON **config) {
  static const char *const keys[] = {"class_name", "config", "module", "registered_name"};
  kiln_status s = check_keys(c, v, path, keys, 4);
  if (s) return s;
  char p[PATH_MAX_LEN];
  key_path(p, path, "class_name");
  const cJSON *cn = cJSON_GetObjectItemCaseSensitive(v, "class_name");
  if (!cn) return fail(c, KILN_E_FORMAT, p, "missing (a Keras object needs \"class_name\")");
  s = get_string(c, cn, p, class_name);
  if (s) return s;
  /* "module" and "registered_name" are what Keras 3 writes beside class_name. */
  for (int i = 2; i < 4; i++) {
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(v, keys[i]);
    key_path(p, path, keys[i]);
    if (m && !cJSON_IsString(m) && !cJSON_IsNull(m))
      return wrong_type(c, p, m, "a string or null");
  }
  *config = cJSON_GetObjectItemCaseSensitive(v, "config");
  if (*config && !cJSON_IsNull(*config)) {
    key_path(p, path, "config");
    s = get_object(c, *config, p);
    if (s) return s;
  } else {
    *config = NULL;
  }
  return KILN_OK;
}

/* --- layers ---------------------------------------------------------------- */

static kiln_status parse_initializer(const parse_ctx *c, const cJSON *v, const char *path,
                                     spec_layer *l) {
  char p[PATH_MAX_LEN];
  l->constant = 0.0f;
  if (cJSON_IsString(v)) {
    kiln_status s = kiln_initializer_parse(v->valuestring, &l->initializer, c->err);
    return s ? with_place(c->source, path, c->err) : KILN_OK;
  }
  if (!cJSON_IsObject(v))
    return wrong_type(c, path, v, "an initializer name or {\"class_name\": ..., \"config\": ...}");
  const char *cls = NULL;
  const cJSON *config = NULL;
  kiln_status s = get_class(c, v, path, &cls, &config);
  if (s) return s;
  char snake[64];
  snake_case(cls, snake, sizeof snake);
  key_path(p, path, "class_name");
  s = kiln_initializer_parse(snake, &l->initializer, c->err);
  if (s) return with_place(c->source, p, c->err);
  if (!config) return KILN_OK;
  key_path(p, path, "config");
  if (l->initializer == KILN_INIT_CONSTANT) {
    static const char *const keys[] = {"value"};
    s = check_keys(c, config, p, keys, 1);
    if (s) return s;
    const cJSON *val = cJSON_GetObjectItemCaseSensitive(config, "value");
    if (val) {
      char pv[PATH_MAX_LEN];
      key_path(pv, p, "value");
      double d = 0;
      s = get_number(c, val, pv, -FLT_MAX, FLT_MAX, 0, "a finite number", &d);
      if (s) return s;
      l->constant = (float)d;
    }
    return KILN_OK;
  }
  static const char *const keys[] = {"seed"};
  s = check_keys(c, config, p, keys, 1);
  if (s) return s;
  const cJSON *seed = cJSON_GetObjectItemCaseSensitive(config, "seed");
  if (seed && !cJSON_IsNull(seed)) {
    char ps[PATH_MAX_LEN];
    key_path(ps, p, "seed");
    return fail(c, KILN_E_UNSUPPORTED, ps,
                "per-layer seeds are not supported (use null; the top-level \"seed\" sets every "
                "initializer)");
  }
  return KILN_OK;
}

static kiln_status parse_factor(const parse_ctx *c, const cJSON *obj, const char *path,
                                const char *key, float *out) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
  if (!v) return KILN_OK;
  char p[PATH_MAX_LEN];
  key_path(p, path, key);
  double d = 0;
  kiln_status s = get_number(c, v, p, 0.0, FLT_MAX, 0, "a finite number >= 0", &d);
  if (s) return s;
  *out = (float)d;
  return KILN_OK;
}

static kiln_status parse_regularizer(const parse_ctx *c, const cJSON *v, const char *path,
                                     kiln_regularizer *r) {
  static const char *const factor_keys[] = {"l1", "l2"};
  r->l1 = r->l2 = 0.0f;
  if (cJSON_IsNull(v)) return KILN_OK;
  if (cJSON_IsString(v)) {
    /* Keras' string forms, with its default factor 0.01. */
    if (strcmp(v->valuestring, "l1") == 0) r->l1 = 0.01f;
    else if (strcmp(v->valuestring, "l2") == 0) r->l2 = 0.01f;
    else if (strcmp(v->valuestring, "l1_l2") == 0) r->l1 = r->l2 = 0.01f;
    else
      return fail(c, KILN_E_INVALID, path,
                  "unknown regularizer \"%s\" (expected one of l1, l2, l1_l2, or an object such "
                  "as {\"l2\": 0.002})", v->valuestring);
    return KILN_OK;
  }
  if (!cJSON_IsObject(v))
    return wrong_type(c, path, v, "an object such as {\"l2\": 0.002}");
  if (!cJSON_GetObjectItemCaseSensitive(v, "class_name")) {
    kiln_status s = check_keys(c, v, path, factor_keys, 2);
    if (s) return s;
    if (!v->child) return fail(c, KILN_E_INVALID, path, "expected \"l1\" and/or \"l2\"");
    s = parse_factor(c, v, path, "l1", &r->l1);
    return s ? s : parse_factor(c, v, path, "l2", &r->l2);
  }
  const char *cls = NULL;
  const cJSON *config = NULL;
  kiln_status s = get_class(c, v, path, &cls, &config);
  if (s) return s;
  char p[PATH_MAX_LEN];
  int want_l1, want_l2;
  if (strcmp(cls, "L1") == 0) want_l1 = 1, want_l2 = 0;
  else if (strcmp(cls, "L2") == 0) want_l1 = 0, want_l2 = 1;
  else if (strcmp(cls, "L1L2") == 0) want_l1 = want_l2 = 1;
  else {
    key_path(p, path, "class_name");
    return fail(c, KILN_E_INVALID, p, "unknown regularizer \"%s\" (expected one of L1, L2, L1L2)",
                cls);
  }
  /* Keras' defaults when the config leaves a factor out. */
  r->l1 = want_l1 && !want_l2 ? 0.01f : 0.0f;
  r->l2 = want_l2 && !want_l1 ? 0.01f : 0.0f;
  if (!config) return KILN_OK;
  key_path(p, path, "config");
  /* factor_keys is {"l1", "l2"}: L1 takes the first, L2 the second, L1L2 both. */
  s = check_keys(c, config, p, want_l1 ? factor_keys : factor_keys + 1, want_l1 + want_l2);
  if (s) return s;
  if (want_l1 && (s = parse_factor(c, config, p, "l1", &r->l1))) return s;
  if (want_l2 && (s = parse_factor(c, config, p, "l2", &r->l2))) return s;
  return KILN_OK;
}

static kiln_status parse_layer_name(const parse_ctx *c, const cJSON *layer, const char *path,
                                    spec_layer *l) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(layer, "name");
  if (!v) return KILN_OK;
  char p[PATH_MAX_LEN];
  key_path(p, path, "name");
  const char *name = NULL;
  kiln_status s = get_string(c, v, p, &name);
  if (s) return s;
  size_t n = strlen(name);
  if (n == 0 || n > SPEC_NAME_MAX)
    return fail(c, KILN_E_INVALID, p, "a layer name must have 1 to %d characters", SPEC_NAME_MAX);
  return dup_string(c, p, name, &l->name);
}

static kiln_status parse_input(const parse_ctx *c, const cJSON *layer, const char *path,
                               spec_layer *l) {
  static const char *const keys[] = {"type", "class_name", "name", "shape"};
  kiln_status s = check_keys(c, layer, path, keys, 4);
  if (s) return s;
  const cJSON *shape = cJSON_GetObjectItemCaseSensitive(layer, "shape");
  if (shape && !cJSON_IsNull(shape)) {
    char p[PATH_MAX_LEN], pi[PATH_MAX_LEN];
    key_path(p, path, "shape");
    if (!cJSON_IsArray(shape)) return wrong_type(c, p, shape, "an array such as [10000]");
    int n = cJSON_GetArraySize(shape);
    if (n != 1)
      return fail(c, KILN_E_UNSUPPORTED, p,
                  "expected one dimension such as [10000] (kiln models take flat feature "
                  "vectors), got %d", n);
    index_path(pi, p, 0);
    s = get_int(c, cJSON_GetArrayItem(shape, 0), pi, 1, 9007199254740992.0,
                "a positive integer", &l->features);
    if (s) return s;
  }
  return parse_layer_name(c, layer, path, l);
}

/* functional: the layer may name its "inputs" (the last allowed key). */
static kiln_status parse_dense(const parse_ctx *c, const cJSON *layer, const char *path,
                               spec_layer *l, int functional) {
  static const char *const keys[] = {"type",       "class_name",         "name",  "units",
                                     "activation", "kernel_initializer", "kernel_regularizer",
                                     "inputs"};
  kiln_status s = check_keys(c, layer, path, keys, functional ? 8 : 7);
  if (s) return s;
  char p[PATH_MAX_LEN];
  key_path(p, path, "units");
  const cJSON *units = cJSON_GetObjectItemCaseSensitive(layer, "units");
  if (!units) return fail(c, KILN_E_FORMAT, p, "missing (a Dense layer needs \"units\")");
  s = get_int(c, units, p, 1, (double)INT32_MAX, "a positive integer", &l->units);
  if (s) return s;

  l->activation = KILN_ACTIVATION_LINEAR;
  const cJSON *act = cJSON_GetObjectItemCaseSensitive(layer, "activation");
  if (act && !cJSON_IsNull(act)) { /* null is Keras' None: linear */
    key_path(p, path, "activation");
    const char *name = NULL;
    if ((s = get_string(c, act, p, &name))) return s;
    if (kiln_activation_parse(name, &l->activation, c->err)) return with_place(c->source, p, c->err);
  }

  l->initializer = KILN_INIT_GLOROT_UNIFORM;
  const cJSON *init = cJSON_GetObjectItemCaseSensitive(layer, "kernel_initializer");
  if (init) {
    key_path(p, path, "kernel_initializer");
    if ((s = parse_initializer(c, init, p, l))) return s;
  }

  const cJSON *reg = cJSON_GetObjectItemCaseSensitive(layer, "kernel_regularizer");
  if (reg) {
    key_path(p, path, "kernel_regularizer");
    if ((s = parse_regularizer(c, reg, p, &l->reg))) return s;
  }
  return parse_layer_name(c, layer, path, l);
}

static kiln_status parse_dropout(const parse_ctx *c, const cJSON *layer, const char *path,
                                 spec_layer *l, int functional) {
  static const char *const keys[] = {"type", "class_name", "name", "rate", "inputs"};
  kiln_status s = check_keys(c, layer, path, keys, functional ? 5 : 4);
  if (s) return s;
  char p[PATH_MAX_LEN];
  key_path(p, path, "rate");
  const cJSON *rate = cJSON_GetObjectItemCaseSensitive(layer, "rate");
  if (!rate) return fail(c, KILN_E_FORMAT, p, "missing (a Dropout layer needs \"rate\")");
  double d = 0;
  s = get_number(c, rate, p, 0.0, 1.0, 1, "a number in [0, 1)", &d);
  if (s) return s;
  l->rate = (float)d;
  if (!(l->rate < 1.0f)) /* 0.99999999 rounds to 1 in float */
    return fail(c, KILN_E_INVALID, p, "expected a number in [0, 1), got %.17g", d);
  return parse_layer_name(c, layer, path, l);
}

static kiln_status parse_concatenate(const parse_ctx *c, const cJSON *layer, const char *path,
                                     spec_layer *l) {
  static const char *const keys[] = {"type", "class_name", "name", "inputs", "axis"};
  kiln_status s = check_keys(c, layer, path, keys, 5);
  if (s) return s;
  const cJSON *axis = cJSON_GetObjectItemCaseSensitive(layer, "axis");
  if (axis) {
    char p[PATH_MAX_LEN];
    key_path(p, path, "axis");
    int64_t a = 0;
    if ((s = get_int(c, axis, p, -1, 1, "-1 or 1 (the feature axis)", &a))) return s;
    if (a == 0)
      return fail(c, KILN_E_UNSUPPORTED, p,
                  "axis 0 joins rows; kiln concatenates features (axis -1 or 1)");
  }
  char p[PATH_MAX_LEN];
  key_path(p, path, "inputs");
  if (!cJSON_GetObjectItemCaseSensitive(layer, "inputs"))
    return fail(c, KILN_E_FORMAT, p,
                "missing (a Concatenate layer needs \"inputs\": the names of the layers it joins)");
  return parse_layer_name(c, layer, path, l);
}

/* A registered custom class: "type"/"class_name", "name", "config" (an object the
 * class's make_ctx reads at build), "inputs" in a functional spec. */
static kiln_status parse_custom(const parse_ctx *c, const cJSON *layer, const char *path,
                                spec_layer *l, int functional) {
  static const char *const keys[] = {"type", "class_name", "name", "config", "inputs"};
  kiln_status s = check_keys(c, layer, path, keys, functional ? 5 : 4);
  if (s) return s;
  const cJSON *cfg = cJSON_GetObjectItemCaseSensitive(layer, "config");
  if (cfg && !cJSON_IsNull(cfg)) {
    char p[PATH_MAX_LEN];
    key_path(p, path, "config");
    if ((s = get_object(c, cfg, p))) return s;
    if (!(l->config = cJSON_Duplicate(cfg, 1))) return fail(c, KILN_E_NOMEM, p, "out of memory");
  }
  return parse_layer_name(c, layer, path, l);
}

/* Whether name is a functional input or the name of layers[0..before). */
static int spec_name_known(const kiln_spec *spec, const char *name, int before, int *is_input) {
  for (int i = 0; i < spec->n_inputs; i++)
    if (strcmp(spec->inputs[i].name, name) == 0) {
      if (is_input) *is_input = 1;
      return 1;
    }
  for (int i = 0; i < before; i++)
    if (spec->layers[i].name && strcmp(spec->layers[i].name, name) == 0) {
      if (is_input) *is_input = 0;
      return 1;
    }
  return 0;
}

/* "known: title, text_body, dense" for messages. */
static void known_names(const kiln_spec *spec, int before, char *out, size_t n) {
  size_t at = 0;
  out[0] = '\0';
  for (int i = 0; i < spec->n_inputs && at < n; i++)
    at += (size_t)snprintf(out + at, n - at, "%s%s", at ? ", " : "", spec->inputs[i].name);
  for (int i = 0; i < before && at < n; i++)
    if (spec->layers[i].name)
      at += (size_t)snprintf(out + at, n - at, "%s%s", at ? ", " : "", spec->layers[i].name);
}

/* A layer's "inputs": names of the spec's inputs or of earlier layers. */
static kiln_status parse_layer_inputs(const parse_ctx *c, const cJSON *layer, const char *path,
                                      kiln_spec *spec, spec_layer *l) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(layer, "inputs");
  if (!v) return KILN_OK;
  char p[PATH_MAX_LEN], pi[PATH_MAX_LEN];
  key_path(p, path, "inputs");
  if (!spec->n_inputs)
    return fail(c, KILN_E_INVALID, p,
                "layer inputs by name need a functional spec (a top-level \"inputs\" array such "
                "as [{\"name\": \"title\", \"shape\": [10000]}])");
  const cJSON *one = v;
  int n = 1;
  if (cJSON_IsArray(v)) {
    n = cJSON_GetArraySize(v);
    one = v->child;
  } else if (!cJSON_IsString(v)) {
    return wrong_type(c, p, v, "a layer name or an array of layer names");
  }
  int max = l->kind == KILN_LAYER_CONCATENATE ? KILN_MAX_IO : 1;
  if (n < 1 || n > max)
    return fail(c, KILN_E_INVALID, p, "expected %s, got %d names",
                max == 1 ? "one name (this layer takes one input)" : "1 to 8 names", n);
  for (int i = 0; i < n; i++, one = one->next) {
    if (cJSON_IsArray(v)) index_path(pi, p, i);
    else snprintf(pi, sizeof pi, "%s", p);
    const char *name = NULL;
    kiln_status s = get_string(c, one, pi, &name);
    if (s) return s;
    if (!spec_name_known(spec, name, l->index, NULL)) {
      char known[KILN_ERROR_MESSAGE_MAX / 2];
      known_names(spec, l->index, known, sizeof known);
      return fail(c, KILN_E_INVALID, pi,
                  "\"%s\" is not an input or an earlier layer's name (known: %s)", name, known);
    }
    if ((s = dup_string(c, pi, name, &l->inputs[i]))) return s;
    l->n_inputs = i + 1;
  }
  return KILN_OK;
}

/* The top-level "inputs" of a functional spec. */
static kiln_status parse_inputs(const parse_ctx *c, const cJSON *v, kiln_spec *spec) {
  static const char *const keys[] = {"name", "shape", "type"};
  if (!cJSON_IsArray(v))
    return wrong_type(c, "inputs", v, "an array such as [{\"name\": \"title\", \"shape\": [10000]}]");
  int n = cJSON_GetArraySize(v);
  if (n < 1 || n > KILN_MAX_IO)
    return fail(c, KILN_E_INVALID, "inputs", "expected 1 to %d inputs, got %d", KILN_MAX_IO, n);
  spec->inputs = calloc((size_t)n, sizeof *spec->inputs);
  if (!spec->inputs) return fail(c, KILN_E_NOMEM, "inputs", "out of memory");
  int i = 0;
  for (const cJSON *it = v->child; it; it = it->next, i++) {
    char path[PATH_MAX_LEN], p[PATH_MAX_LEN];
    index_path(path, "inputs", i);
    kiln_status s = get_object(c, it, path);
    if (s || (s = check_keys(c, it, path, keys, 3))) return s;
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(it, "type");
    if (type) {
      key_path(p, path, "type");
      const char *t = NULL;
      if ((s = get_string(c, type, p, &t))) return s;
      if (strcmp(t, "Input") != 0 && strcmp(t, "InputLayer") != 0)
        return fail(c, KILN_E_INVALID, p, "expected \"Input\", got \"%s\"", t);
    }
    spec_layer tmp;
    memset(&tmp, 0, sizeof tmp);
    key_path(p, path, "name");
    if (!cJSON_GetObjectItemCaseSensitive(it, "name"))
      return fail(c, KILN_E_FORMAT, p, "missing (layers name their inputs by it)");
    if ((s = parse_layer_name(c, it, path, &tmp))) return s;
    spec->inputs[i].name = tmp.name;
    spec->n_inputs = i + 1;
    for (int j = 0; j < i; j++)
      if (strcmp(spec->inputs[j].name, tmp.name) == 0)
        return fail(c, KILN_E_INVALID, p, "\"%s\" is already the name of inputs[%d]", tmp.name, j);
    key_path(p, path, "shape");
    if (!cJSON_GetObjectItemCaseSensitive(it, "shape"))
      return fail(c, KILN_E_FORMAT, p, "missing (an input needs its width, such as [10000])");
    if ((s = parse_input(c, it, path, &tmp))) return s; /* the shape (and name again) */
    free(tmp.name);
    if (!tmp.features) return fail(c, KILN_E_FORMAT, p, "expected an array such as [10000]");
    spec->inputs[i].features = tmp.features;
  }
  return KILN_OK;
}

static kiln_status parse_outputs(const parse_ctx *c, const cJSON *v, kiln_spec *spec) {
  if (!spec->n_inputs)
    return fail(c, KILN_E_INVALID, "outputs",
                "\"outputs\" needs a functional spec (a top-level \"inputs\" array)");
  if (!cJSON_IsArray(v)) return wrong_type(c, "outputs", v, "an array of layer names");
  int n = cJSON_GetArraySize(v);
  if (n < 1 || n > KILN_MAX_IO)
    return fail(c, KILN_E_INVALID, "outputs", "expected 1 to %d layer names, got %d", KILN_MAX_IO, n);
  spec->outputs = calloc((size_t)n, sizeof *spec->outputs);
  if (!spec->outputs) return fail(c, KILN_E_NOMEM, "outputs", "out of memory");
  int i = 0;
  for (const cJSON *it = v->child; it; it = it->next, i++) {
    char p[PATH_MAX_LEN];
    index_path(p, "outputs", i);
    const char *name = NULL;
    int is_input = 0;
    kiln_status s = get_string(c, it, p, &name);
    if (s) return s;
    if (!spec_name_known(spec, name, spec->n_layers, &is_input) || is_input) {
      char known[KILN_ERROR_MESSAGE_MAX / 2];
      known_names(spec, spec->n_layers, known, sizeof known);
      return fail(c, KILN_E_INVALID, p, "\"%s\" is not the name of a layer (known: %s)", name,
                  known);
    }
    for (int j = 0; j < i; j++)
      if (strcmp(spec->outputs[j], name) == 0)
        return fail(c, KILN_E_INVALID, p, "\"%s\" is given twice (also outputs[%d])", name, j);
    if ((s = dup_string(c, p, name, &spec->outputs[i]))) return s;
    spec->n_outputs = i + 1;
  }
  return KILN_OK;
}

static kiln_status parse_layers(const parse_ctx *c, const cJSON *v, kiln_spec *spec) {
  if (!cJSON_IsArray(v)) return wrong_type(c, "layers", v, "an array of layer objects");
  int n = cJSON_GetArraySize(v);
  if (n == 0) return fail(c, KILN_E_INVALID, "layers", "expected at least one layer");
  spec->layers = calloc((size_t)n, sizeof *spec->layers);
  if (!spec->layers) return fail(c, KILN_E_NOMEM, "layers", "out of memory");
  int n_dense = 0;
  int i = 0;
  for (const cJSON *layer = v->child; layer; layer = layer->next, i++) {
    char path[PATH_MAX_LEN], p[PATH_MAX_LEN];
    index_path(path, "layers", i);
    spec_layer *l = &spec->layers[i];
    l->index = i;
    spec->n_layers = i + 1;
    kiln_status s = get_object(c, layer, path);
    if (s) return s;
    key_path(p, path, "type");
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(layer, "type");
    const cJSON *class_name = cJSON_GetObjectItemCaseSensitive(layer, "class_name");
    if (type && class_name)
      return fail(c, KILN_E_FORMAT, p, "give \"type\" or Keras' \"class_name\", not both");
    if (class_name) {
      type = class_name;
      key_path(p, path, "class_name");
    }
    if (!type) return fail(c, KILN_E_FORMAT, p, "missing (expected one of Input, Dense, Dropout)");
    const char *t = NULL;
    if ((s = get_string(c, type, p, &t))) return s;
    if (!spec->n_inputs && cJSON_GetObjectItemCaseSensitive(layer, "inputs") &&
        strcmp(t, "Concatenate") != 0) {
      key_path(p, path, "inputs");
      return fail(c, KILN_E_INVALID, p,
                  "layer inputs by name need a functional spec (a top-level \"inputs\" array "
                  "such as [{\"name\": \"title\", \"shape\": [10000]}])");
    }
    if (strcmp(t, "Input") == 0 || strcmp(t, "InputLayer") == 0) {
      l->kind = KILN_LAYER_INPUT;
      if (spec->n_inputs)
        return fail(c, KILN_E_INVALID, p,
                    "a functional spec declares its Inputs in the top-level \"inputs\"");
      if (i != 0) return fail(c, KILN_E_INVALID, p, "an Input can only be the first layer");
      spec->has_input = 1;
      s = parse_input(c, layer, path, l);
    } else if (strcmp(t, "Dense") == 0) {
      l->kind = KILN_LAYER_DENSE;
      n_dense++;
      s = parse_dense(c, layer, path, l, spec->n_inputs > 0);
    } else if (strcmp(t, "Dropout") == 0) {
      l->kind = KILN_LAYER_DROPOUT;
      s = parse_dropout(c, layer, path, l, spec->n_inputs > 0);
    } else if (strcmp(t, "Concatenate") == 0) {
      l->kind = KILN_LAYER_CONCATENATE;
      if (!spec->n_inputs)
        return fail(c, KILN_E_INVALID, p,
                    "Concatenate needs a functional spec (a top-level \"inputs\" array and "
                    "\"inputs\" by name on the layers)");
      s = parse_concatenate(c, layer, path, l);
    } else if ((l->custom = kiln_layer_registry_find(c->registry, t))) {
      l->kind = KILN_LAYER_CUSTOM;
      s = parse_custom(c, layer, path, l, spec->n_inputs > 0);
    } else {
      char known[KILN_ERROR_MESSAGE_MAX / 2];
      kiln_layer_registry_list(c->registry, known, sizeof known);
      return fail(c, KILN_E_INVALID, p,
                  "unknown layer type \"%s\" of layers[%d] (expected one of Input, Dense, "
                  "Dropout, Concatenate, or a registered custom class: %s%s)",
                  t, i, known,
                  c->registry ? "" : "; register it with kiln_layer_registry_add and parse "
                                     "with kiln_spec_parse_custom");
    }
    if (!s) s = parse_layer_inputs(c, layer, path, spec, l);
    if (s) return s;
    if (l->name)
      for (int j = 0; j < i; j++)
        if (spec->layers[j].name && strcmp(spec->layers[j].name, l->name) == 0) {
          key_path(p, path, "name");
          return fail(c, KILN_E_INVALID, p, "\"%s\" is already the name of layers[%d]", l->name, j);
        }
    int is_input = 0;
    if (l->name && spec_name_known(spec, l->name, 0, &is_input) && is_input) {
      key_path(p, path, "name");
      return fail(c, KILN_E_INVALID, p, "\"%s\" is already the name of an input", l->name);
    }
  }
  if (n_dense == 0) return fail(c, KILN_E_INVALID, "layers", "expected at least one Dense layer");
  return KILN_OK;
}

/* --- compile --------------------------------------------------------------- */

/* Applies one optimizer setting (from compile or from the optimizer's config). */
static kiln_status set_optimizer_key(const parse_ctx *c, const cJSON *v, const char *path,
                                     const char *key, kiln_optimizer *o) {
  const char *kind = kiln_optimizer_name(o->kind);
  double d = 0;
  kiln_status s;
  if (strcmp(key, "learning_rate") == 0) {
    if ((s = get_number(c, v, path, DBL_MIN, FLT_MAX, 0, "a positive number", &d))) return s;
    o->learning_rate = (float)d;
  } else if (strcmp(key, "momentum") == 0) {
    if ((s = get_number(c, v, path, 0.0, 1.0, 1, "a number in [0, 1)", &d))) return s;
    if (o->kind != KILN_OPTIMIZER_SGD && d != 0.0)
      return fail(c, o->kind == KILN_OPTIMIZER_RMSPROP ? KILN_E_UNSUPPORTED : KILN_E_INVALID, path,
                  "momentum is an sgd setting (the optimizer is %s)", kind);
    o->momentum = (float)d;
  } else if (strcmp(key, "nesterov") == 0) {
    int b = 0;
    if ((s = get_bool(c, v, path, &b))) return s;
    if (o->kind != KILN_OPTIMIZER_SGD && b)
      return fail(c, KILN_E_INVALID, path, "nesterov is an sgd setting (the optimizer is %s)", kind);
    o->nesterov = b;
  } else if (strcmp(key, "rho") == 0) {
    if ((s = get_number(c, v, path, 0.0, 1.0, 1, "a number in [0, 1)", &d))) return s;
    if (o->kind != KILN_OPTIMIZER_RMSPROP)
      return fail(c, KILN_E_INVALID, path, "rho is an rmsprop setting (the optimizer is %s)", kind);
    o->rho = (float)d;
  } else if (strcmp(key, "beta_1") == 0 || strcmp(key, "beta_2") == 0) {
    if ((s = get_number(c, v, path, 0.0, 1.0, 1, "a number in [0, 1)", &d))) return s;
    if (o->kind != KILN_OPTIMIZER_ADAM)
      return fail(c, KILN_E_INVALID, path, "%s is an adam setting (the optimizer is %s)", key,
                  kind);
    if (key[5] == '1') o->beta_1 = (float)d;
    else o->beta_2 = (float)d;
  } else if (strcmp(key, "epsilon") == 0) {
    if ((s = get_number(c, v, path, DBL_MIN, FLT_MAX, 0, "a positive number", &d))) return s;
    if (o->kind == KILN_OPTIMIZER_SGD)
      return fail(c, KILN_E_INVALID, path, "epsilon is an rmsprop or adam setting (the optimizer is sgd)");
    o->epsilon = (float)d;
  }
  return KILN_OK;
}

static const char *const optimizer_settings[] = {"learning_rate", "momentum", "nesterov", "rho",
                                                 "beta_1", "beta_2", "epsilon"};
#define N_OPTIMIZER_SETTINGS 7

/* Keys of a Keras optimizer get_config() that kiln accepts only at their neutral value
 * (null, false or 0), so a config copied from Keras loads as is. */
static const char *const optimizer_neutral[] = {
    "weight_decay", "clipnorm", "clipvalue", "global_clipnorm", "use_ema",
    "ema_overwrite_frequency", "amsgrad", "centered", "loss_scale_factor",
    "gradient_accumulation_steps", "is_legacy_optimizer"};
#define N_OPTIMIZER_NEUTRAL 11

static kiln_status parse_optimizer(const parse_ctx *c, const cJSON *v, kiln_optimizer *o) {
  const char *path = "compile.optimizer";
  char p[PATH_MAX_LEN];
  kiln_status s;
  if (cJSON_IsString(v)) {
    if (kiln_optimizer_parse(v->valuestring, o, c->err)) return with_place(c->source, path, c->err);
    return KILN_OK;
  }
  if (!cJSON_IsObject(v))
    return wrong_type(c, path, v, "an optimizer name or {\"class_name\": ..., \"config\": ...}");
  const char *cls = NULL;
  const cJSON *config = NULL;
  if ((s = get_class(c, v, path, &cls, &config))) return s;
  char lower[64];
  size_t i = 0;
  for (; cls[i] && i + 1 < sizeof lower; i++) lower[i] = (char)tolower((unsigned char)cls[i]);
  lower[i] = '\0';
  key_path(p, path, "class_name");
  if (kiln_optimizer_parse(lower, o, c->err)) return with_place(c->source, p, c->err);
  if (!config) return KILN_OK;
  char pc[PATH_MAX_LEN];
  key_path(pc, path, "config");
  const char *keys[N_OPTIMIZER_SETTINGS + N_OPTIMIZER_NEUTRAL + 3];
  int n = 0;
  for (int k = 0; k < N_OPTIMIZER_SETTINGS; k++) keys[n++] = optimizer_settings[k];
  for (int k = 0; k < N_OPTIMIZER_NEUTRAL; k++) keys[n++] = optimizer_neutral[k];
  keys[n++] = "name";
  keys[n++] = "ema_momentum";
  keys[n++] = "jit_compile";
  if ((s = check_keys(c, config, pc, keys, n))) return s;
  for (const cJSON *it = config->child; it; it = it->next) {
    key_path(p, pc, it->string);
    int neutral = 0;
    for (int k = 0; k < N_OPTIMIZER_NEUTRAL; k++) neutral |= strcmp(it->string, optimizer_neutral[k]) == 0;
    if (neutral) {
      if (!cJSON_IsNull(it) && !cJSON_IsFalse(it) && !(cJSON_IsNumber(it) && it->valuedouble == 0))
        return fail(c, KILN_E_UNSUPPORTED, p, "not supported by kiln (only null, false or 0)");
    } else if (strcmp(it->string, "name") == 0) {
      const char *ignored = NULL;
      if ((s = get_string(c, it, p, &ignored))) return s;
    } else if (strcmp(it->string, "ema_momentum") == 0) {
      double ignored = 0; /* meaningless while use_ema is false */
      if ((s = get_number(c, it, p, 0.0, 1.0, 0, "a number in [0, 1]", &ignored))) return s;
    } else if (strcmp(it->string, "jit_compile") == 0) {
      int ignored = 0;
      if ((s = get_bool(c, it, p, &ignored))) return s;
    } else if ((s = set_optimizer_key(c, it, p, it->string, o))) {
      return s;
    }
  }
  return KILN_OK;
}

/* A list of metric names for one loss, into *out_names / *out_n. */
static kiln_status parse_metric_list(const parse_ctx *c, const cJSON *v, const char *path,
                                     kiln_loss loss, char ***out_names, int *out_n) {
  if (!cJSON_IsArray(v)) return wrong_type(c, path, v, "an array of metric names");
  int n = cJSON_GetArraySize(v);
  if (n == 0) return KILN_OK;
  *out_names = calloc((size_t)n, sizeof **out_names);
  char **names = calloc((size_t)n, sizeof *names); /* the names the metrics log under */
  if (!*out_names || !names) {
    free(names);
    return fail(c, KILN_E_NOMEM, path, "out of memory");
  }
  kiln_status s = KILN_OK;
  int i = 0;
  for (const cJSON *it = v->child; it && !s; it = it->next, i++) {
    char p[PATH_MAX_LEN];
    index_path(p, path, i);
    const char *name = NULL;
    if ((s = get_string(c, it, p, &name))) break;
    kiln_metric *m = NULL;
    if (kiln_metric_create(name, loss, &m, c->err)) {
      s = with_place(c->source, p, c->err);
      break;
    }
    for (int j = 0; j < i && !s; j++)
      if (strcmp(names[j], m->name) == 0)
        s = fail(c, KILN_E_INVALID, p, "metric \"%s\" is given twice (also %s[%d])", m->name,
                 path, j);
    if (!s && !(s = dup_string(c, p, m->name, &names[i])))
      s = dup_string(c, p, name, &(*out_names)[i]);
    kiln_metric_free(m);
    if (!s) *out_n = i + 1;
  }
  for (int j = 0; j < n; j++) free(names[j]);
  free(names);
  return s;
}

/* The output names a per-output setting refers to: "outputs", or the last layer. */
static const char *output_name(const kiln_spec *spec, int i) {
  if (spec->n_outputs) return spec->outputs[i];
  return spec->layers[spec->n_layers - 1].name;
}

/* A per-output setting given as a dict (by output name) or a list (in output order):
 * the item for output i, or NULL when the dict leaves it out. Unknown keys and wrong
 * lengths fail. */
static kiln_status per_output_item(const parse_ctx *c, const cJSON *v, const char *path,
                                   const kiln_spec *spec, int n_out, int i, const cJSON **item,
                                   char *item_path) {
  *item = NULL;
  if (cJSON_IsArray(v)) {
    if (cJSON_GetArraySize(v) != n_out)
      return fail(c, KILN_E_INVALID, path, "expected one entry per output (%d), got %d", n_out,
                  cJSON_GetArraySize(v));
    *item = cJSON_GetArrayItem(v, i);
    index_path(item_path, path, i);
    return KILN_OK;
  }
  for (const cJSON *it = v->child; it; it = it->next) {
    int found = 0;
    for (int k = 0; k < n_out && !found; k++) found = output_name(spec, k) && strcmp(it->string, output_name(spec, k)) == 0;
    if (!found) {
      char p[PATH_MAX_LEN], list[KILN_ERROR_MESSAGE_MAX / 2];
      size_t at = 0;
      list[0] = '\0';
      for (int k = 0; k < n_out && at < sizeof list; k++)
        at += (size_t)snprintf(list + at, sizeof list - at, "%s%s", k ? ", " : "",
                               output_name(spec, k) ? output_name(spec, k) : "(unnamed)");
      key_path(p, path, it->string);
      return fail(c, KILN_E_INVALID, p, "not an output of the model (outputs: %s)", list);
    }
  }
  const char *name = output_name(spec, i);
  if (name) *item = cJSON_GetObjectItemCaseSensitive(v, name);
  key_path(item_path, path, name ? name : "?");
  return KILN_OK;
}

/* Keras' dict (or list) forms of loss, loss_weights and metrics: one setting per output. */
static kiln_status parse_per_output(const parse_ctx *c, const cJSON *v, kiln_spec *spec) {
  const cJSON *loss = cJSON_GetObjectItemCaseSensitive(v, "loss");
  const cJSON *weights = cJSON_GetObjectItemCaseSensitive(v, "loss_weights");
  const cJSON *metrics = cJSON_GetObjectItemCaseSensitive(v, "metrics");
  int n_out = spec->n_outputs ? spec->n_outputs : 1;
  if (!spec->n_inputs)
    return fail(c, KILN_E_INVALID, cJSON_IsString(loss) ? "compile" : "compile.loss",
                "per-output settings need a functional spec (top-level \"inputs\" and "
                "\"outputs\")");
  for (int i = 0; i < n_out; i++)
    if (!output_name(spec, i) && (cJSON_IsObject(loss) || cJSON_IsObject(weights) || cJSON_IsObject(metrics)))
      return fail(c, KILN_E_INVALID, "outputs",
                  "a dict of per-output settings needs named outputs (\"outputs\": [\"priority\", ...])");
  const char *wt_path = "compile.loss_weights";
  if (weights && !cJSON_IsObject(weights) && !cJSON_IsArray(weights))
    return wrong_type(c, wt_path, weights, "a dict of output name -> weight, or a list");
  if (metrics && !cJSON_IsObject(metrics) && !cJSON_IsArray(metrics))
    return wrong_type(c, "compile.metrics", metrics, "a list of metric names, a dict of output name -> list, or a list of lists");
  spec->per_output = calloc((size_t)n_out, sizeof *spec->per_output);
  if (!spec->per_output) return fail(c, KILN_E_NOMEM, "compile", "out of memory");
  spec->n_per_output = n_out;
  kiln_status s;
  for (int i = 0; i < n_out; i++) {
    spec_output *o = &spec->per_output[i];
    o->loss_weight = 1.0f;
    if (output_name(spec, i) && (s = dup_string(c, "outputs", output_name(spec, i), &o->name)))
      return s;
    char p[PATH_MAX_LEN];
    const cJSON *item = loss;
    snprintf(p, sizeof p, "compile.loss");
    if (!cJSON_IsString(loss)) {
      if ((s = per_output_item(c, loss, "compile.loss", spec, n_out, i, &item, p))) return s;
      if (!item) return fail(c, KILN_E_INVALID, "compile.loss", "no loss for output \"%s\"", o->name);
    }
    const char *name = NULL;
    if ((s = get_string(c, item, p, &name))) return s;
    if (kiln_loss_parse(name, &o->loss, c->err)) return with_place(c->source, p, c->err);
    if (weights) {
      if ((s = per_output_item(c, weights, wt_path, spec, n_out, i, &item, p))) return s;
      double d = 1.0;
      if (item && (s = get_number(c, item, p, 0.0, FLT_MAX, 0, "a finite number >= 0", &d))) return s;
      o->loss_weight = (float)d;
    }
    if (metrics) {
      item = metrics;
      snprintf(p, sizeof p, "compile.metrics");
      int list_of_lists = cJSON_IsArray(metrics) && metrics->child && cJSON_IsArray(metrics->child);
      if (cJSON_IsObject(metrics) || list_of_lists)
        if ((s = per_output_item(c, metrics, "compile.metrics", spec, n_out, i, &item, p))) return s;
      if (item && (s = parse_metric_list(c, item, p, o->loss, &o->metrics, &o->n_metrics)))
        return s;
    }
  }
  spec->loss = spec->per_output[0].loss;
  return KILN_OK;
}

static kiln_status parse_compile(const parse_ctx *c, const cJSON *v, kiln_spec *spec) {
  static const char *const keys[] = {"optimizer", "learning_rate", "momentum", "nesterov",
                                     "loss",      "metrics",       "loss_weights"};
  kiln_status s = get_object(c, v, "compile");
  /* loss_weights is a functional spec's (one per output). */
  if (s || (s = check_keys(c, v, "compile", keys, spec->n_inputs ? 7 : 6))) return s;

  /* Keras' compile() default optimizer. */
  kiln_optimizer_init(&spec->optimizer, KILN_OPTIMIZER_RMSPROP);
  const cJSON *opt = cJSON_GetObjectItemCaseSensitive(v, "optimizer");
  if (opt && (s = parse_optimizer(c, opt, &spec->optimizer))) return s;
  for (int k = 1; k <= 3; k++) {
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(v, keys[k]);
    char p[PATH_MAX_LEN];
    key_path(p, "compile", keys[k]);
    if (it && (s = set_optimizer_key(c, it, p, keys[k], &spec->optimizer))) return s;
  }

  const cJSON *loss = cJSON_GetObjectItemCaseSensitive(v, "loss");
  if (!loss) return fail(c, KILN_E_FORMAT, "compile.loss", "missing (expected a loss name such as \"binary_crossentropy\")");
  const cJSON *metrics = cJSON_GetObjectItemCaseSensitive(v, "metrics");
  if (spec->n_inputs && ((cJSON_IsObject(loss) || cJSON_IsArray(loss)) ||
      cJSON_GetObjectItemCaseSensitive(v, "loss_weights") ||
      (metrics && (cJSON_IsObject(metrics) || (cJSON_IsArray(metrics) && metrics->child &&
                                               cJSON_IsArray(metrics->child)))) ||
      spec->n_outputs > 1)) {
    if (!cJSON_IsObject(loss) && !cJSON_IsArray(loss) && !cJSON_IsString(loss))
      return wrong_type(c, "compile.loss", loss, "a loss name, a dict of output name -> loss, or a list");
    return parse_per_output(c, v, spec);
  }
  const char *name = NULL;
  if ((s = get_string(c, loss, "compile.loss", &name))) return s;
  if (kiln_loss_parse(name, &spec->loss, c->err)) return with_place(c->source, "compile.loss", c->err);

  if (metrics && (s = parse_metric_list(c, metrics, "compile.metrics", spec->loss, &spec->metrics,
                                        &spec->n_metrics)))
    return s;
  return KILN_OK;
}

/* --- fit ------------------------------------------------------------------- */

static kiln_status parse_fit(const parse_ctx *c, const cJSON *v, kiln_spec *spec) {
  static const char *const keys[] = {"epochs", "batch_size", "validation_split", "shuffle",
                                     "verbose"};
  kiln_status s = get_object(c, v, "fit");
  if (s || (s = check_keys(c, v, "fit", keys, 5))) return s;
  const cJSON *it;
  int64_t n = 0;
  if ((it = cJSON_GetObjectItemCaseSensitive(v, "epochs"))) {
    if ((s = get_int(c, it, "fit.epochs", 1, (double)INT32_MAX, "a positive integer", &n))) return s;
    spec->epochs = (int)n;
    spec->has_epochs = 1;
  }
  if ((it = cJSON_GetObjectItemCaseSensitive(v, "batch_size"))) {
    if ((s = get_int(c, it, "fit.batch_size", 1, (double)INT32_MAX, "a positive integer", &n)))
      return s;
    spec->batch_size = n;
    spec->has_batch_size = 1;
  }
  if ((it = cJSON_GetObjectItemCaseSensitive(v, "validation_split"))) {
    if ((s = get_number(c, it, "fit.validation_split", 0.0, 1.0, 1, "a number in [0, 1)",
                        &spec->validation_split)))
      return s;
    spec->has_validation_split = 1;
  }
  if ((it = cJSON_GetObjectItemCaseSensitive(v, "shuffle"))) {
    if ((s = get_bool(c, it, "fit.shuffle", &spec->shuffle))) return s;
    spec->has_shuffle = 1;
  }
  if ((it = cJSON_GetObjectItemCaseSensitive(v, "verbose"))) {
    if (cJSON_IsString(it) && strcmp(it->valuestring, "auto") == 0) {
      spec->verbose = 1; /* Keras' "auto" */
    } else {
      if ((s = get_int(c, it, "fit.verbose", 0, 2, "0, 1, 2 or \"auto\"", &n))) return s;
      spec->verbose = (int)n;
    }
    spec->has_verbose = 1;
  }
  return KILN_OK;
}

/* --- the spec -------------------------------------------------------------- */

static kiln_status parse_top(const parse_ctx *c, const cJSON *root, kiln_spec *spec) {
  static const char *const keys[] = {"name", "seed", "inputs", "layers", "outputs", "compile", "fit"};
  if (!cJSON_IsObject(root)) {
    char buf[96];
    return fail(c, KILN_E_FORMAT, NULL, "expected a JSON object at the top level, got %s",
                json_type(root, buf, sizeof buf));
  }
  kiln_status s = check_keys(c, root, "", keys, 7);
  if (s) return s;
  const cJSON *it;
  if ((it = cJSON_GetObjectItemCaseSensitive(root, "name"))) {
    const char *name = NULL;
    if ((s = get_string(c, it, "name", &name)) || (s = dup_string(c, "name", name, &spec->name)))
      return s;
  }
  if ((it = cJSON_GetObjectItemCaseSensitive(root, "seed"))) {
    int64_t seed = 0;
    if ((s = get_int(c, it, "seed", 0, 9007199254740992.0, "an integer in [0, 2^53]", &seed)))
      return s;
    spec->seed = (uint64_t)seed;
    spec->has_seed = 1;
  }
  if ((it = cJSON_GetObjectItemCaseSensitive(root, "inputs")) && (s = parse_inputs(c, it, spec)))
    return s;
  it = cJSON_GetObjectItemCaseSensitive(root, "layers");
  if (!it) return fail(c, KILN_E_FORMAT, "layers", "missing (a spec needs a \"layers\" array)");
  if ((s = parse_layers(c, it, spec))) return s;
  if ((it = cJSON_GetObjectItemCaseSensitive(root, "outputs")) && (s = parse_outputs(c, it, spec)))
    return s;
  it = cJSON_GetObjectItemCaseSensitive(root, "compile");
  if (!it) return fail(c, KILN_E_FORMAT, "compile", "missing (a spec needs \"compile\" with a \"loss\")");
  if ((s = parse_compile(c, it, spec))) return s;
  if ((it = cJSON_GetObjectItemCaseSensitive(root, "fit")) && (s = parse_fit(c, it, spec))) return s;
  return KILN_OK;
}

static kiln_status syntax_error(const parse_ctx *c, const char *json, const char *at) {
  size_t off = at && at >= json ? (size_t)(at - json) : 0;
  size_t len = strlen(json);
  if (off > len) off = len;
  int line = 1, col = 1;
  for (size_t i = 0; i < off; i++) {
    if (json[i] == '\n') line++, col = 1;
    else col++;
  }
  if (off == len)
    return fail(c, KILN_E_FORMAT, NULL,
                "JSON syntax error at byte %zu (line %d, column %d): unexpected end of input", off,
                line, col);
  /* cJSON points at or just past the offending byte: show the line up to there. */
  size_t begin = off, stop = off;
  while (begin > 0 && off - begin < 24 && json[begin - 1] != '\n') begin--;
  while (json[stop] && json[stop] != '\n' && stop - off < 8) stop++;
  char near[40];
  size_t n = 0;
  for (size_t i = begin; i < stop && n + 1 < sizeof near; i++)
    near[n++] = isprint((unsigned char)json[i]) ? json[i] : ' ';
  near[n] = '\0';
  return fail(c, KILN_E_FORMAT, NULL, "JSON syntax error at byte %zu (line %d, column %d), near '%s'",
              off, line, col, near);
}

void kiln_spec_free(kiln_spec *s) {
  if (!s) return;
  for (int i = 0; i < s->n_layers; i++) {
    free(s->layers[i].name);
    cJSON_Delete(s->layers[i].config);
    for (int k = 0; k < s->layers[i].n_inputs; k++) free(s->layers[i].inputs[k]);
  }
  free(s->layers);
  for (int i = 0; i < s->n_inputs; i++) free(s->inputs[i].name);
  free(s->inputs);
  for (int i = 0; i < s->n_outputs; i++) free(s->outputs[i]);
  free(s->outputs);
  for (int i = 0; i < s->n_per_output; i++) {
    free(s->per_output[i].name);
    for (int k = 0; k < s->per_output[i].n_metrics; k++) free(s->per_output[i].metrics[k]);
    free(s->per_output[i].metrics);
  }
  free(s->per_output);
  for (int i = 0; i < s->n_metrics; i++) free(s->metrics[i]);
  free(s->metrics);
  free(s->name);
  free(s->source);
  free(s);
}

kiln_status kiln_spec_parse(const char *json, const char *source_name, kiln_spec **out,
                            kiln_error *err) {
  return kiln_spec_parse_custom(json, source_name, NULL, out, err);
}

kiln_status kiln_spec_parse_custom(const char *json, const char *source_name,
                                   const kiln_layer_registry *registry, kiln_spec **out,
                                   kiln_error *err) {
  kiln_error local = {0};
  parse_ctx c = {source_name && *source_name ? source_name : "<spec>", &local, registry};
  if (!out) return kiln_error_set(err, KILN_E_INVALID, "kiln_spec_parse: out is NULL");
  *out = NULL;
  if (!json) return kiln_error_set(err, KILN_E_INVALID, "kiln_spec_parse: json is NULL");
  const char *text = json;
  if ((unsigned char)text[0] == 0xEF && (unsigned char)text[1] == 0xBB &&
      (unsigned char)text[2] == 0xBF)
    text += 3; /* a UTF-8 byte order mark */
  const char *end = NULL;
  cJSON *root = cJSON_ParseWithOpts(text, &end, 1);
  kiln_status s;
  if (!root) {
    s = syntax_error(&c, json, end ? end : text);
    if (err) *err = local;
    return s;
  }
  kiln_spec *spec = calloc(1, sizeof *spec);
  if (!spec) {
    cJSON_Delete(root);
    return kiln_error_set(err, KILN_E_NOMEM, "%s: out of memory", c.source);
  }
  s = dup_string(&c, NULL, c.source, &spec->source);
  if (!s) s = parse_top(&c, root, spec);
  cJSON_Delete(root);
  if (s) {
    kiln_spec_free(spec);
    if (err) *err = local;
    return s;
  }
  *out = spec;
  return KILN_OK;
}

kiln_status kiln_spec_load(const char *path, kiln_spec **out, kiln_error *err) {
  return kiln_spec_load_custom(path, NULL, out, err);
}

kiln_status kiln_spec_load_custom(const char *path, const kiln_layer_registry *registry,
                                  kiln_spec **out, kiln_error *err) {
  if (!out) return kiln_error_set(err, KILN_E_INVALID, "kiln_spec_load: out is NULL");
  *out = NULL;
  if (!path) return kiln_error_set(err, KILN_E_INVALID, "kiln_spec_load: path is NULL");
  FILE *f = fopen(path, "rb");
  if (!f) return kiln_error_set(err, KILN_E_IO, "%s: cannot open: %s", path, strerror(errno));
  char *buf = NULL;
  size_t len = 0, cap = 0;
  kiln_status s = KILN_OK;
  for (;;) {
    if (len + 4096 + 1 > cap) {
      cap = cap ? cap * 2 : 8192;
      char *p = realloc(buf, cap);
      if (!p) {
        s = kiln_error_set(err, KILN_E_NOMEM, "%s: out of memory", path);
        break;
      }
      buf = p;
    }
    size_t n = fread(buf + len, 1, cap - len - 1, f);
    len += n;
    if (len > (size_t)SPEC_FILE_MAX) {
      s = kiln_error_set(err, KILN_E_FORMAT, "%s: larger than %ld bytes: not a model spec", path,
                         SPEC_FILE_MAX);
      break;
    }
    if (n == 0) {
      if (ferror(f)) s = kiln_error_set(err, KILN_E_IO, "%s: read error: %s", path, strerror(errno));
      break;
    }
  }
  fclose(f);
  if (s) {
    free(buf);
    return s;
  }
  buf[len] = '\0';
  if (strlen(buf) != len) {
    size_t at = strlen(buf);
    free(buf);
    return kiln_error_set(err, KILN_E_FORMAT, "%s: a NUL byte at byte %zu: not a JSON text", path,
                          at);
  }
  s = kiln_spec_parse_custom(buf, path, registry, out, err);
  free(buf);
  return s;
}

/* --- building --------------------------------------------------------------- */

/* A custom layer on input: its ctx from the registered make_ctx, then the layer. */
static kiln_status build_custom(const spec_layer *l, kiln_model *m, kiln_node input,
                                kiln_node *out, kiln_error *local) {
  const kiln_layer_registry_entry *e = l->custom;
  void *ctx = e->user;
  if (e->make_ctx) {
    kiln_layer_config cfg = {l->config};
    kiln_status st = e->make_ctx(e->user, l->name, &cfg, &ctx, local);
    if (st) return st;
  }
  return kiln_model_custom(m, input, e->cls, ctx, l->name, out, local);
}

/* The node of a name: an input's or a layer's (built before it). */
static kiln_node node_named(const kiln_spec *s, const kiln_node *input_nodes,
                            const kiln_node *layer_nodes, int before, const char *name) {
  for (int i = 0; i < s->n_inputs; i++)
    if (strcmp(s->inputs[i].name, name) == 0) return input_nodes[i];
  for (int i = 0; i < before; i++)
    if (s->layers[i].name && strcmp(s->layers[i].name, name) == 0) return layer_nodes[i];
  return -1; /* the parser checked every name */
}

/* keras.Model(inputs=[...], outputs=[...]) from a functional spec, compiled. */
static kiln_status build_functional(const kiln_spec *s, kiln_model *m, kiln_error *local) {
  kiln_node in_nodes[KILN_MAX_IO], out_nodes[KILN_MAX_IO];
  kiln_node *nodes = calloc((size_t)s->n_layers, sizeof *nodes);
  char path[PATH_MAX_LEN];
  kiln_status st = KILN_OK;
  if (!nodes) return kiln_error_set(local, KILN_E_NOMEM, "%s: out of memory", s->source);
  for (int i = 0; i < s->n_inputs && !st; i++) {
    st = kiln_model_input(m, s->inputs[i].name, s->inputs[i].features, &in_nodes[i], local);
    if (st) {
      index_path(path, "inputs", i);
      with_place(s->source, path, local);
    }
  }
  kiln_node prev = s->n_inputs ? in_nodes[s->n_inputs - 1] : -1;
  for (int i = 0; i < s->n_layers && !st; i++) {
    const spec_layer *l = &s->layers[i];
    kiln_node from[KILN_MAX_IO];
    int n = l->n_inputs;
    for (int k = 0; k < n; k++) from[k] = node_named(s, in_nodes, nodes, i, l->inputs[k]);
    if (n == 0) {
      from[0] = prev;
      n = 1;
    }
    switch (l->kind) {
      case KILN_LAYER_DENSE: {
        kiln_dense_options o;
        kiln_dense_options_init(&o);
        o.activation = l->activation;
        o.kernel_initializer = l->initializer;
        o.kernel_constant = l->constant;
        o.kernel_regularizer = l->reg;
        o.name = l->name;
        st = kiln_model_dense(m, from[0], l->units, &o, &nodes[i], local);
        break;
      }
      case KILN_LAYER_DROPOUT:
        st = kiln_model_dropout(m, from[0], l->rate, l->name, &nodes[i], local);
        break;
      case KILN_LAYER_CONCATENATE:
        st = kiln_model_concatenate(m, from, n, l->name, &nodes[i], local);
        break;
      case KILN_LAYER_CUSTOM:
        st = build_custom(l, m, from[0], &nodes[i], local);
        break;
      default:
        st = kiln_error_set(local, KILN_E_UNSUPPORTED, "not a functional spec layer");
    }
    if (st) {
      index_path(path, "layers", l->index);
      with_place(s->source, path, local);
    }
    prev = nodes[i];
  }
  int n_out = s->n_outputs ? s->n_outputs : 1;
  for (int i = 0; i < n_out; i++)
    out_nodes[i] = s->n_outputs ? node_named(s, in_nodes, nodes, s->n_layers, s->outputs[i])
                                : nodes[s->n_layers - 1];
  free(nodes);
  if (!st && (st = kiln_model_set_inputs(m, in_nodes, s->n_inputs, local)))
    with_place(s->source, "inputs", local);
  if (!st && (st = kiln_model_set_outputs(m, out_nodes, n_out, local)))
    with_place(s->source, "outputs", local);
  if (st) return st;
  if (!s->n_per_output) {
    st = kiln_model_compile(m, &s->optimizer, s->loss, (const char *const *)s->metrics,
                            s->n_metrics, local);
  } else {
    kiln_output_config cfg[KILN_MAX_IO];
    for (int i = 0; i < s->n_per_output; i++) {
      kiln_output_config_init(&cfg[i]);
      cfg[i].output = s->per_output[i].name;
      cfg[i].loss = s->per_output[i].loss;
      cfg[i].loss_weight = s->per_output[i].loss_weight;
      cfg[i].metrics = (const char *const *)s->per_output[i].metrics;
      cfg[i].n_metrics = s->per_output[i].n_metrics;
    }
    st = kiln_model_compile_outputs(m, &s->optimizer, cfg, s->n_per_output, local);
  }
  if (st) with_place(s->source, NULL, local);
  return st;
}

kiln_status kiln_spec_build(const kiln_spec *s, int64_t input_features, uint64_t seed,
                            kiln_model **out, kiln_error *err) {
  kiln_error local = {0};
  if (!out) return kiln_error_set(err, KILN_E_INVALID, "kiln_spec_build: out is NULL");
  *out = NULL;
  if (!s) return kiln_error_set(err, KILN_E_INVALID, "kiln_spec_build: spec is NULL");
  if (input_features < 0)
    return kiln_error_set(err, KILN_E_INVALID, "%s: input_features must be >= 0, got %lld",
                          s->source, (long long)input_features);
  if (s->n_inputs) { /* a functional spec: every Input has its shape */
    uint64_t sd = seed != KILN_SEED_FROM_SPEC ? seed : s->has_seed ? s->seed : SPEC_DEFAULT_SEED;
    kiln_model *m = NULL;
    kiln_status st = kiln_model_create(sd, &m, &local);
    if (!st) st = build_functional(s, m, &local);
    if (st) {
      kiln_model_free(m);
      if (err) *err = local;
      return st;
    }
    *out = m;
    return KILN_OK;
  }
  const spec_layer *in = s->has_input ? &s->layers[0] : NULL;
  const char *width_path = in ? "layers[0].shape" : "layers";
  int64_t width = in && in->features ? in->features : input_features;
  if (in && in->features && input_features > 0 && in->features != input_features)
    return kiln_error_set(err, KILN_E_SHAPE,
                          "%s: %s: the spec's Input has %lld features but the data has %lld",
                          s->source, width_path, (long long)in->features,
                          (long long)input_features);
  if (width <= 0)
    return kiln_error_set(err, KILN_E_INVALID,
                          "%s: %s: the input width is unknown (give the Input a \"shape\" such "
                          "as [10000], or the data's width)", s->source, width_path);

  uint64_t sd = seed != KILN_SEED_FROM_SPEC ? seed : s->has_seed ? s->seed : SPEC_DEFAULT_SEED;
  kiln_model *m = NULL;
  kiln_status st = kiln_model_create(sd, &m, &local);
  if (st) {
    with_place(s->source, NULL, &local);
    goto fail;
  }
  char path[PATH_MAX_LEN];
  if (!in && (st = kiln_model_add_input(m, width, &local))) {
    with_place(s->source, "layers", &local);
    goto fail;
  }
  for (int i = 0; i < s->n_layers; i++) {
    const spec_layer *l = &s->layers[i];
    int prev = kiln_model_layer_count(m) - 1;
    switch (l->kind) {
      case KILN_LAYER_INPUT:
        st = kiln_model_input(m, l->name, width, NULL, &local);
        break;
      case KILN_LAYER_DENSE: {
        kiln_dense_options o;
        kiln_dense_options_init(&o);
        o.activation = l->activation;
        o.kernel_initializer = l->initializer;
        o.kernel_constant = l->constant;
        o.kernel_regularizer = l->reg;
        o.name = l->name;
        st = kiln_model_dense(m, prev, l->units, &o, NULL, &local);
        break;
      }
      case KILN_LAYER_DROPOUT:
        st = kiln_model_dropout(m, prev, l->rate, l->name, NULL, &local);
        break;
      case KILN_LAYER_CUSTOM:
        st = build_custom(l, m, prev, NULL, &local);
        break;
      case KILN_LAYER_CONCATENATE:
        st = kiln_error_set(&local, KILN_E_UNSUPPORTED, "not a Sequential spec layer");
        break;
    }
    if (st) {
      index_path(path, "layers", l->index);
      with_place(s->source, path, &local);
      goto fail;
    }
  }
  st = kiln_model_compile(m, &s->optimizer, s->loss, (const char *const *)s->metrics, s->n_metrics,
                          &local);
  if (st) {
    /* The model's compile messages start with "compile: ". */
    with_place(s->source, NULL, &local);
    goto fail;
  }
  *out = m;
  return KILN_OK;

fail:
  kiln_model_free(m);
  if (err) *err = local;
  return st;
}

void kiln_spec_fit_options(const kiln_spec *s, kiln_fit_options *opt) {
  kiln_fit_options_init(opt);
  if (!s) return;
  if (s->has_epochs) opt->epochs = s->epochs;
  if (s->has_batch_size) opt->batch_size = s->batch_size;
  if (s->has_validation_split) opt->validation_split = s->validation_split;
  if (s->has_shuffle) opt->shuffle = s->shuffle;
  if (s->has_verbose) opt->verbose = s->verbose;
}

/* kiln trainer — the registry of custom layer classes a JSON spec may name, and the
 * reading of a spec layer's "config" by a class's make_ctx. */
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "spec_custom.h"

kiln_status kiln_layer_registry_create(kiln_layer_registry **out, kiln_error *err) {
  if (!out) return kiln_error_set(err, KILN_E_INVALID, "kiln_layer_registry_create: out is NULL");
  *out = calloc(1, sizeof **out);
  return *out ? KILN_OK : kiln_error_set(err, KILN_E_NOMEM, "layer registry: out of memory");
}

void kiln_layer_registry_free(kiln_layer_registry *r) {
  if (!r) return;
  for (int i = 0; i < r->n; i++) free(r->entries[i].name);
  free(r->entries);
  free(r);
}

const kiln_layer_registry_entry *kiln_layer_registry_find(const kiln_layer_registry *r,
                                                          const char *name) {
  for (int i = 0; r && i < r->n; i++)
    if (strcmp(r->entries[i].name, name) == 0) return &r->entries[i];
  return NULL;
}

void kiln_spec_join_names(const char *const *names, int n, char *buf, size_t cap) {
  size_t len = 0;
  buf[0] = '\0';
  for (int i = 0; i < n && len < cap; i++)
    len += (size_t)snprintf(buf + len, cap - len, "%s%s", i ? ", " : "", names[i]);
}

void kiln_layer_registry_list(const kiln_layer_registry *r, char *buf, size_t cap) {
  size_t len = 0;
  buf[0] = '\0';
  if (!r || !r->n) {
    snprintf(buf, cap, "none");
    return;
  }
  for (int i = 0; i < r->n && len < cap; i++)
    len += (size_t)snprintf(buf + len, cap - len, "%s%s", i ? ", " : "", r->entries[i].name);
}

/* Names a spec uses for built-in layers, which a class cannot take over. */
static const char *const BUILTIN[] = {"Input", "InputLayer", "Dense", "Dropout", "Concatenate"};

kiln_status kiln_layer_registry_add(kiln_layer_registry *r, const char *name,
                                    const kiln_layer_class *cls, kiln_layer_make_ctx make_ctx,
                                    void *user, kiln_error *err) {
  if (!r || !name || !*name || !cls)
    return kiln_error_set(err, KILN_E_INVALID,
                          "kiln_layer_registry_add: needs a registry, a name and a class");
  if (!cls->type || !cls->build || !cls->forward || !cls->backward)
    return kiln_error_set(err, KILN_E_INVALID,
                          "layer registry: class \"%s\" lacks type, build, forward or backward",
                          name);
  for (size_t i = 0; i < sizeof BUILTIN / sizeof BUILTIN[0]; i++)
    if (strcmp(BUILTIN[i], name) == 0)
      return kiln_error_set(err, KILN_E_INVALID,
                            "layer registry: \"%s\" is a built-in layer type", name);
  if (kiln_layer_registry_find(r, name))
    return kiln_error_set(err, KILN_E_INVALID, "layer registry: \"%s\" is registered already",
                          name);
  if (r->n == r->cap) {
    int cap = r->cap ? r->cap * 2 : 8;
    kiln_layer_registry_entry *p = realloc(r->entries, (size_t)cap * sizeof *p);
    if (!p) return kiln_error_set(err, KILN_E_NOMEM, "layer registry: out of memory");
    r->entries = p;
    r->cap = cap;
  }
  kiln_layer_registry_entry *e = &r->entries[r->n];
  size_t n = strlen(name);
  if (!(e->name = malloc(n + 1)))
    return kiln_error_set(err, KILN_E_NOMEM, "layer registry: out of memory");
  memcpy(e->name, name, n + 1);
  e->cls = cls;
  e->make_ctx = make_ctx;
  e->user = user;
  r->n++;
  return KILN_OK;
}

kiln_status kiln_layer_config_number(const kiln_layer_config *c, const char *key, double def,
                                     double *out, kiln_error *err) {
  *out = def;
  const cJSON *v = c && c->json ? cJSON_GetObjectItemCaseSensitive(c->json, key) : NULL;
  if (!v) return KILN_OK;
  if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble) || fabs(v->valuedouble) > FLT_MAX)
    return kiln_error_set(err, KILN_E_FORMAT, "config.%s: expected a finite number", key);
  *out = v->valuedouble;
  return KILN_OK;
}

kiln_status kiln_layer_config_check_keys(const kiln_layer_config *c, const char *const *keys,
                                         int n_keys, kiln_error *err) {
  if (!c || !c->json) return KILN_OK;
  for (const cJSON *it = c->json->child; it; it = it->next) {
    int ok = 0;
    for (int i = 0; i < n_keys && !ok; i++) ok = strcmp(it->string, keys[i]) == 0;
    if (!ok) {
      char list[KILN_ERROR_MESSAGE_MAX / 2];
      kiln_spec_join_names(keys, n_keys, list, sizeof list);
      return kiln_error_set(err, KILN_E_FORMAT, "config.%s: unknown key (expected one of %s)",
                            it->string, n_keys ? list : "none");
    }
  }
  return KILN_OK;
}

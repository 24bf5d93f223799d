/* kiln trainer — custom layer classes for JSON specs (kiln_layer_registry): what
 * spec.c takes from spec_custom.c. Private to train/. */
#ifndef KILN_TRAIN_SPEC_CUSTOM_H
#define KILN_TRAIN_SPEC_CUSTOM_H

#include <stddef.h>

#include <cjson/cJSON.h>

#include "kiln/train.h"

typedef struct kiln_layer_registry_entry {
  char *name;
  const kiln_layer_class *cls;
  kiln_layer_make_ctx make_ctx;
  void *user;
} kiln_layer_registry_entry;

struct kiln_layer_registry {
  int n, cap;
  kiln_layer_registry_entry *entries;
};

struct kiln_layer_config {
  const cJSON *json; /* the spec layer's "config" object, or NULL */
};

/* The entry registered as name, or NULL (r may be NULL). */
const kiln_layer_registry_entry *kiln_layer_registry_find(const kiln_layer_registry *r,
                                                          const char *name);
/* names joined with ", " into buf (cut at cap). */
void kiln_spec_join_names(const char *const *names, int n, char *buf, size_t cap);
/* "RMSNorm, Scale" (or "none") into buf. */
void kiln_layer_registry_list(const kiln_layer_registry *r, char *buf, size_t cap);

#endif

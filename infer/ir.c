/* kiln runtime — the graph IR: building, lookup and topological order. */
#include "kiln/ir.h"

#include <stdlib.h>
#include <string.h>

size_t kiln_dtype_size(kiln_dtype t) {
  switch (t) {
    case KILN_DTYPE_FLOAT: return 4;
    case KILN_DTYPE_UINT8: return 1;
    case KILN_DTYPE_INT8: return 1;
    case KILN_DTYPE_INT32: return 4;
    case KILN_DTYPE_INT64: return 8;
    case KILN_DTYPE_BOOL: return 1;
    case KILN_DTYPE_DOUBLE: return 8;
    case KILN_DTYPE_UNDEFINED: return 0;
  }
  return 0;
}

const char *kiln_dtype_name(kiln_dtype t) {
  switch (t) {
    case KILN_DTYPE_FLOAT: return "float32";
    case KILN_DTYPE_UINT8: return "uint8";
    case KILN_DTYPE_INT8: return "int8";
    case KILN_DTYPE_INT32: return "int32";
    case KILN_DTYPE_INT64: return "int64";
    case KILN_DTYPE_BOOL: return "bool";
    case KILN_DTYPE_DOUBLE: return "float64";
    case KILN_DTYPE_UNDEFINED: return "undefined";
  }
  return "unknown";
}

int64_t kiln_ir_tensor_numel(const kiln_ir_tensor *t) {
  int64_t n = 1;
  for (int i = 0; i < t->rank; i++) n *= t->dims[i];
  return n;
}

static char *dup(const char *s) { return strdup(s ? s : ""); }

/* Grows *arr (of *cap elements of size elem) to hold n + 1. */
static int grow(void **arr, int *cap, int n, size_t elem) {
  if (n < *cap) return 1;
  int c = *cap ? *cap * 2 : 8;
  void *p = realloc(*arr, (size_t)c * elem);
  if (!p) return 0;
  memset((char *)p + (size_t)*cap * elem, 0, (size_t)(c - *cap) * elem);
  *arr = p;
  *cap = c;
  return 1;
}

#define NOMEM(err) kiln_error_set(err, KILN_E_NOMEM, "graph IR: out of memory")

kiln_status kiln_ir_create(const char *name, kiln_ir_graph **out, kiln_error *err) {
  kiln_ir_graph *g = calloc(1, sizeof *g);
  if (!g || !(g->name = dup(name))) {
    free(g);
    return NOMEM(err);
  }
  g->ir_version = 8;
  *out = g;
  return KILN_OK;
}

static void tensor_free(kiln_ir_tensor *t) {
  free(t->name);
  free(t->data);
}

static void value_free(kiln_ir_value *v) {
  free(v->name);
  for (int i = 0; i < KILN_IR_MAX_RANK; i++) free(v->dims[i].param);
}

static void attr_free(kiln_ir_attr *a) {
  free(a->name);
  free(a->s);
  if (a->t) {
    tensor_free(a->t);
    free(a->t);
  }
  free(a->floats);
  free(a->ints);
  if (a->strings)
    for (int i = 0; i < a->n; i++) free(a->strings[i]);
  free(a->strings);
}

static void node_free(kiln_ir_node *n) {
  free(n->name);
  free(n->op_type);
  free(n->domain);
  for (int i = 0; i < n->n_inputs; i++) free(n->inputs[i]);
  for (int i = 0; i < n->n_outputs; i++) free(n->outputs[i]);
  free(n->inputs);
  free(n->outputs);
  for (int i = 0; i < n->n_attrs; i++) attr_free(&n->attrs[i]);
  free(n->attrs);
}

void kiln_ir_free(kiln_ir_graph *g) {
  if (!g) return;
  free(g->name);
  free(g->producer_name);
  free(g->producer_version);
  for (int i = 0; i < g->n_opsets; i++) free(g->opsets[i].domain);
  free(g->opsets);
  for (int i = 0; i < g->n_nodes; i++) node_free(&g->nodes[i]);
  free(g->nodes);
  for (int i = 0; i < g->n_initializers; i++) tensor_free(&g->initializers[i]);
  free(g->initializers);
  for (int i = 0; i < g->n_inputs; i++) value_free(&g->inputs[i]);
  free(g->inputs);
  for (int i = 0; i < g->n_outputs; i++) value_free(&g->outputs[i]);
  free(g->outputs);
  for (int i = 0; i < g->n_meta; i++) {
    free(g->meta[i].key);
    free(g->meta[i].value);
  }
  free(g->meta);
  free(g);
}

kiln_status kiln_ir_set_opset(kiln_ir_graph *g, const char *domain, int64_t version,
                              kiln_error *err) {
  for (int i = 0; i < g->n_opsets; i++)
    if (strcmp(g->opsets[i].domain, domain ? domain : "") == 0) {
      g->opsets[i].version = version;
      return KILN_OK;
    }
  if (!grow((void **)&g->opsets, &g->cap_opsets, g->n_opsets, sizeof *g->opsets)) return NOMEM(err);
  kiln_ir_opset *o = &g->opsets[g->n_opsets];
  if (!(o->domain = dup(domain))) return NOMEM(err);
  o->version = version;
  g->n_opsets++;
  return KILN_OK;
}

int64_t kiln_ir_opset_version(const kiln_ir_graph *g, const char *domain) {
  for (int i = 0; i < g->n_opsets; i++)
    if (strcmp(g->opsets[i].domain, domain ? domain : "") == 0 ||
        (strcmp(g->opsets[i].domain, "ai.onnx") == 0 && (!domain || !*domain)))
      return g->opsets[i].version;
  return 0;
}

static char **dup_list(const char *const *v, int n) {
  char **out = calloc((size_t)(n ? n : 1), sizeof(char *));
  if (!out) return NULL;
  for (int i = 0; i < n; i++)
    if (!(out[i] = dup(v[i]))) {
      for (int j = 0; j < i; j++) free(out[j]);
      free(out);
      return NULL;
    }
  return out;
}

kiln_status kiln_ir_add_node(kiln_ir_graph *g, const char *op_type, const char *name,
                             const char *const *inputs, int n_inputs,
                             const char *const *outputs, int n_outputs, kiln_ir_node **out,
                             kiln_error *err) {
  if (!grow((void **)&g->nodes, &g->cap_nodes, g->n_nodes, sizeof *g->nodes)) return NOMEM(err);
  kiln_ir_node *n = &g->nodes[g->n_nodes];
  memset(n, 0, sizeof *n);
  n->name = dup(name);
  n->op_type = dup(op_type);
  n->domain = dup("");
  n->inputs = dup_list(inputs, n_inputs);
  n->outputs = dup_list(outputs, n_outputs);
  if (!n->name || !n->op_type || !n->domain || !n->inputs || !n->outputs) {
    node_free(n);
    memset(n, 0, sizeof *n);
    return NOMEM(err);
  }
  n->n_inputs = n_inputs;
  n->n_outputs = n_outputs;
  g->n_nodes++;
  if (out) *out = n;
  return KILN_OK;
}

/* The attribute called name, replaced if present, else appended. */
static kiln_ir_attr *attr_slot(kiln_ir_node *n, const char *name, kiln_error *err) {
  for (int i = 0; i < n->n_attrs; i++)
    if (strcmp(n->attrs[i].name, name) == 0) {
      char *keep = n->attrs[i].name;
      n->attrs[i].name = NULL;
      attr_free(&n->attrs[i]);
      memset(&n->attrs[i], 0, sizeof n->attrs[i]);
      n->attrs[i].name = keep;
      return &n->attrs[i];
    }
  kiln_ir_attr *p = realloc(n->attrs, (size_t)(n->n_attrs + 1) * sizeof *p);
  if (!p) {
    NOMEM(err);
    return NULL;
  }
  n->attrs = p;
  kiln_ir_attr *a = &p[n->n_attrs];
  memset(a, 0, sizeof *a);
  if (!(a->name = dup(name))) {
    NOMEM(err);
    return NULL;
  }
  n->n_attrs++;
  return a;
}

kiln_status kiln_ir_node_set_int(kiln_ir_node *n, const char *name, int64_t v, kiln_error *err) {
  kiln_ir_attr *a = attr_slot(n, name, err);
  if (!a) return KILN_E_NOMEM;
  a->type = KILN_ATTR_INT;
  a->i = v;
  return KILN_OK;
}

kiln_status kiln_ir_node_set_float(kiln_ir_node *n, const char *name, float v, kiln_error *err) {
  kiln_ir_attr *a = attr_slot(n, name, err);
  if (!a) return KILN_E_NOMEM;
  a->type = KILN_ATTR_FLOAT;
  a->f = v;
  return KILN_OK;
}

kiln_status kiln_ir_node_set_ints(kiln_ir_node *n, const char *name, const int64_t *v, int count,
                                  kiln_error *err) {
  kiln_ir_attr *a = attr_slot(n, name, err);
  if (!a) return KILN_E_NOMEM;
  a->type = KILN_ATTR_INTS;
  a->ints = malloc((size_t)(count ? count : 1) * sizeof(int64_t));
  if (!a->ints) return NOMEM(err);
  if (count) memcpy(a->ints, v, (size_t)count * sizeof(int64_t));
  a->n = count;
  return KILN_OK;
}

kiln_status kiln_ir_node_set_string(kiln_ir_node *n, const char *name, const char *v,
                                    kiln_error *err) {
  kiln_ir_attr *a = attr_slot(n, name, err);
  if (!a) return KILN_E_NOMEM;
  a->type = KILN_ATTR_STRING;
  if (!(a->s = dup(v))) return NOMEM(err);
  return KILN_OK;
}

kiln_status kiln_ir_node_set_floats(kiln_ir_node *n, const char *name, const float *v, int count,
                                    kiln_error *err) {
  kiln_ir_attr *a = attr_slot(n, name, err);
  if (!a) return KILN_E_NOMEM;
  a->type = KILN_ATTR_FLOATS;
  a->floats = malloc((size_t)(count > 0 ? count : 1) * sizeof(float));
  if (!a->floats) return NOMEM(err);
  if (count > 0) memcpy(a->floats, v, (size_t)count * sizeof(float));
  a->n = count;
  return KILN_OK;
}

kiln_status kiln_ir_node_set_strings(kiln_ir_node *n, const char *name, const char *const *v,
                                     int count, kiln_error *err) {
  kiln_ir_attr *a = attr_slot(n, name, err);
  if (!a) return KILN_E_NOMEM;
  a->type = KILN_ATTR_STRINGS;
  if (!(a->strings = dup_list(v, count))) return NOMEM(err);
  a->n = count;
  return KILN_OK;
}

kiln_status kiln_ir_node_set_tensor(kiln_ir_node *n, const char *name, kiln_dtype dtype,
                                    const int64_t *dims, int rank, const void *data,
                                    kiln_error *err) {
  if (rank < 0 || rank > KILN_IR_MAX_RANK || kiln_dtype_size(dtype) == 0)
    return kiln_error_set(err, KILN_E_INVALID, "attribute \"%s\": rank %d or dtype %d invalid",
                          name, rank, (int)dtype);
  for (int i = 0; i < rank; i++)
    if (dims[i] < 0)
      return kiln_error_set(err, KILN_E_INVALID, "attribute \"%s\": dim %d is negative", name, i);
  kiln_ir_attr *a = attr_slot(n, name, err);
  if (!a) return KILN_E_NOMEM;
  a->type = KILN_ATTR_TENSOR;
  kiln_ir_tensor *t = calloc(1, sizeof *t);
  if (!t) return NOMEM(err);
  a->t = t;
  t->dtype = dtype;
  t->rank = rank;
  for (int i = 0; i < rank; i++) t->dims[i] = dims[i];
  t->bytes = (size_t)kiln_ir_tensor_numel(t) * kiln_dtype_size(dtype);
  t->name = dup("");
  t->data = malloc(t->bytes ? t->bytes : 1);
  if (!t->name || !t->data) return NOMEM(err);
  if (t->bytes) memcpy(t->data, data, t->bytes);
  return KILN_OK;
}

kiln_status kiln_ir_node_set_domain(kiln_ir_node *n, const char *domain, kiln_error *err) {
  char *d = dup(domain);
  if (!d) return NOMEM(err);
  free(n->domain);
  n->domain = d;
  return KILN_OK;
}

kiln_status kiln_ir_add_initializer(kiln_ir_graph *g, const char *name, kiln_dtype dtype,
                                    const int64_t *dims, int rank, const void *data,
                                    kiln_error *err) {
  if (rank < 0 || rank > KILN_IR_MAX_RANK || kiln_dtype_size(dtype) == 0)
    return kiln_error_set(err, KILN_E_INVALID, "initializer \"%s\": rank %d or dtype %d invalid",
                          name, rank, (int)dtype);
  if (!grow((void **)&g->initializers, &g->cap_initializers, g->n_initializers,
            sizeof *g->initializers))
    return NOMEM(err);
  kiln_ir_tensor *t = &g->initializers[g->n_initializers];
  memset(t, 0, sizeof *t);
  t->dtype = dtype;
  t->rank = rank;
  for (int i = 0; i < rank; i++) {
    if (dims[i] < 0)
      return kiln_error_set(err, KILN_E_INVALID, "initializer \"%s\": dim %d is negative", name, i);
    t->dims[i] = dims[i];
  }
  t->bytes = (size_t)kiln_ir_tensor_numel(t) * kiln_dtype_size(dtype);
  t->name = dup(name);
  t->data = malloc(t->bytes ? t->bytes : 1);
  if (!t->name || !t->data) {
    tensor_free(t);
    return NOMEM(err);
  }
  if (t->bytes) memcpy(t->data, data, t->bytes);
  g->n_initializers++;
  return KILN_OK;
}

static kiln_status add_value(kiln_ir_value **arr, int *n, int *cap, const char *name,
                             kiln_dtype dtype, const int64_t *dims, const char *const *params,
                             int rank, kiln_error *err) {
  if (rank > KILN_IR_MAX_RANK)
    return kiln_error_set(err, KILN_E_INVALID, "value \"%s\": rank %d exceeds %d", name, rank,
                          KILN_IR_MAX_RANK);
  if (!grow((void **)arr, cap, *n, sizeof **arr)) return NOMEM(err);
  kiln_ir_value *v = &(*arr)[*n];
  memset(v, 0, sizeof *v);
  v->dtype = dtype;
  v->rank = rank;
  for (int i = 0; i < rank; i++) {
    v->dims[i].value = dims[i];
    if (dims[i] < 0 && params && params[i] && !(v->dims[i].param = dup(params[i]))) {
      value_free(v);
      return NOMEM(err);
    }
  }
  if (!(v->name = dup(name))) {
    value_free(v);
    return NOMEM(err);
  }
  (*n)++;
  return KILN_OK;
}

kiln_status kiln_ir_add_input(kiln_ir_graph *g, const char *name, kiln_dtype dtype,
                              const int64_t *dims, const char *const *params, int rank,
                              kiln_error *err) {
  return add_value(&g->inputs, &g->n_inputs, &g->cap_inputs, name, dtype, dims, params, rank, err);
}

kiln_status kiln_ir_add_output(kiln_ir_graph *g, const char *name, kiln_dtype dtype,
                               const int64_t *dims, const char *const *params, int rank,
                               kiln_error *err) {
  return add_value(&g->outputs, &g->n_outputs, &g->cap_outputs, name, dtype, dims, params, rank,
                   err);
}

kiln_status kiln_ir_set_meta(kiln_ir_graph *g, const char *key, const char *value,
                             kiln_error *err) {
  for (int i = 0; i < g->n_meta; i++)
    if (strcmp(g->meta[i].key, key) == 0) {
      char *v = dup(value);
      if (!v) return NOMEM(err);
      free(g->meta[i].value);
      g->meta[i].value = v;
      return KILN_OK;
    }
  if (!grow((void **)&g->meta, &g->cap_meta, g->n_meta, sizeof *g->meta)) return NOMEM(err);
  kiln_ir_meta *m = &g->meta[g->n_meta];
  m->key = dup(key);
  m->value = dup(value);
  if (!m->key || !m->value) {
    free(m->key);
    free(m->value);
    return NOMEM(err);
  }
  g->n_meta++;
  return KILN_OK;
}

kiln_status kiln_ir_set_producer(kiln_ir_graph *g, const char *name, const char *version,
                                 kiln_error *err) {
  char *n = dup(name), *v = dup(version);
  if (!n || !v) {
    free(n);
    free(v);
    return NOMEM(err);
  }
  free(g->producer_name);
  free(g->producer_version);
  g->producer_name = n;
  g->producer_version = v;
  return KILN_OK;
}

const kiln_ir_tensor *kiln_ir_find_initializer(const kiln_ir_graph *g, const char *name) {
  for (int i = 0; i < g->n_initializers; i++)
    if (strcmp(g->initializers[i].name, name) == 0) return &g->initializers[i];
  return NULL;
}

const kiln_ir_attr *kiln_ir_node_attr(const kiln_ir_node *n, const char *name) {
  for (int i = 0; i < n->n_attrs; i++)
    if (strcmp(n->attrs[i].name, name) == 0) return &n->attrs[i];
  return NULL;
}

const char *kiln_ir_get_meta(const kiln_ir_graph *g, const char *key) {
  for (int i = 0; i < g->n_meta; i++)
    if (strcmp(g->meta[i].key, key) == 0) return g->meta[i].value;
  return NULL;
}

/* Value names for the topological sort: hashed, so a hostile model with tens of
 * thousands of nodes sorts in linear time. Each entry records whether the value exists
 * before any node runs (a graph input or initializer), how many node outputs produce it
 * and the list of (node) consumers in node order. */
typedef struct topo_entry {
  const char *name;
  int source, producers, first, last; /* first/last: edge indices, -1 when none */
} topo_entry;

typedef struct topo_index {
  topo_entry *e;
  size_t cap;
  int *edge_node, *edge_next;
  int n_edges;
} topo_index;

static topo_entry *topo_get(topo_index *t, const char *name) {
  uint64_t h = 1469598103934665603ull;
  for (const char *c = name; *c; c++) h = (h ^ (uint8_t)*c) * 1099511628211ull;
  for (size_t i = h & (t->cap - 1);; i = (i + 1) & (t->cap - 1)) {
    if (!t->e[i].name) {
      t->e[i].name = name;
      t->e[i].first = t->e[i].last = -1;
      return &t->e[i];
    }
    if (strcmp(t->e[i].name, name) == 0) return &t->e[i];
  }
}

kiln_status kiln_ir_toposort(kiln_ir_graph *g, kiln_error *err) {
  int n = g->n_nodes;
  if (n < 0) return kiln_error_set(err, KILN_E_INVALID, "graph IR: negative node count");
  size_t n_alloc = n > 0 ? (size_t)n : 1;
  size_t names = (size_t)g->n_inputs + (size_t)g->n_initializers, edges = 0;
  for (int j = 0; j < n; j++) {
    names += (size_t)g->nodes[j].n_inputs + (size_t)g->nodes[j].n_outputs;
    edges += (size_t)g->nodes[j].n_inputs;
  }
  topo_index t = {0};
  t.cap = 16;
  while (t.cap < names * 2 + 1) t.cap *= 2;
  t.e = calloc(t.cap, sizeof *t.e);
  t.edge_node = malloc((edges ? edges : 1) * sizeof(int));
  t.edge_next = malloc((edges ? edges : 1) * sizeof(int));
  int *indeg = calloc(n_alloc, sizeof(int));
  int *order = calloc(n_alloc, sizeof(int));
  char *done = calloc(n_alloc, 1);
  kiln_status s = KILN_OK;
  if (!t.e || !t.edge_node || !t.edge_next || !indeg || !order || !done) {
    s = NOMEM(err);
    goto out;
  }
  for (int i = 0; i < g->n_inputs; i++) topo_get(&t, g->inputs[i].name)->source = 1;
  for (int i = 0; i < g->n_initializers; i++) topo_get(&t, g->initializers[i].name)->source = 1;
  for (int i = 0; i < n; i++)
    for (int o = 0; o < g->nodes[i].n_outputs; o++) topo_get(&t, g->nodes[i].outputs[o])->producers++;
  /* Kahn's algorithm over "node j consumes an output of node i"; an omitted optional
   * input ("") and sources are no edges. Consumers are kept in (node, input) order. */
  for (int j = 0; j < n && !s; j++)
    for (int k = 0; k < g->nodes[j].n_inputs && !s; k++) {
      const char *in = g->nodes[j].inputs[k];
      if (!*in) continue;
      topo_entry *e = topo_get(&t, in);
      if (e->source) continue;
      if (e->producers == 0)
        s = kiln_error_set(err, KILN_E_FORMAT,
                           "node \"%s\" (%s): input \"%s\" is not a graph input, an initializer "
                           "or the output of any node", g->nodes[j].name, g->nodes[j].op_type, in);
      indeg[j] += e->producers;
      int x = t.n_edges++;
      t.edge_node[x] = j;
      t.edge_next[x] = -1;
      if (e->last >= 0) t.edge_next[e->last] = x;
      else e->first = x;
      e->last = x;
    }
  int head = 0, tail = 0;
  for (int j = 0; j < n && !s; j++)
    if (indeg[j] == 0) order[tail++] = j;
  while (!s && head < tail) {
    int i = order[head++];
    done[i] = 1;
    for (int o = 0; o < g->nodes[i].n_outputs; o++) {
      topo_entry *e = topo_get(&t, g->nodes[i].outputs[o]);
      if (e->source) continue;
      for (int x = e->first; x >= 0; x = t.edge_next[x])
        if (--indeg[t.edge_node[x]] == 0) order[tail++] = t.edge_node[x];
    }
  }
  if (!s && tail < n) {
    int j = 0;
    while (done[j]) j++;
    s = kiln_error_set(err, KILN_E_FORMAT, "node \"%s\" (%s) is part of a cycle",
                       g->nodes[j].name, g->nodes[j].op_type);
  }
  if (!s) {
    kiln_ir_node *sorted = malloc(n_alloc * sizeof *sorted);
    if (!sorted) {
      s = NOMEM(err);
    } else {
      for (int i = 0; i < n; i++) sorted[i] = g->nodes[order[i]];
      if (n) memcpy(g->nodes, sorted, (size_t)n * sizeof *sorted); /* nodes is NULL when n = 0 */
      free(sorted);
    }
  }
out:
  free(t.e);
  free(t.edge_node);
  free(t.edge_next);
  free(indeg);
  free(order);
  free(done);
  return s;
}

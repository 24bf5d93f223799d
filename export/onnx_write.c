/* kiln export — the one ONNX writer: graph IR -> ModelProto bytes (protobuf-c).
 *
 * The protobuf-c structs are built on the heap, pointing at the IR's own strings and
 * tensor bytes where possible, packed, then freed through a small pool. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kiln/atomic_file.h"
#include "kiln/export.h"
#include "kiln/ir.h"
#include "onnx.pb-c.h"

/* Every allocation of one write, freed together. */
typedef struct pool {
  void **p;
  size_t n, cap;
} pool;

static void *palloc(pool *pl, size_t count, size_t size) {
  if (pl->n == pl->cap) {
    size_t c = pl->cap ? pl->cap * 2 : 64;
    void **q = realloc(pl->p, c * sizeof *q);
    if (!q) return NULL;
    pl->p = q;
    pl->cap = c;
  }
  void *m = calloc(count ? count : 1, size);
  if (m) pl->p[pl->n++] = m;
  return m;
}

static void pool_free(pool *pl) {
  for (size_t i = 0; i < pl->n; i++) free(pl->p[i]);
  free(pl->p);
}

#define NOMEM(err) kiln_error_set(err, KILN_E_NOMEM, "ONNX writer: out of memory")

static int host_is_little_endian(void) {
  const uint16_t one = 1;
  uint8_t b;
  memcpy(&b, &one, 1);
  return b == 1;
}

static char *s_(const char *s) { return (char *)(s ? s : ""); }

static kiln_status tensor_proto(pool *pl, const kiln_ir_tensor *t, const char *what,
                                Onnx__TensorProto **out, kiln_error *err) {
  size_t es = kiln_dtype_size(t->dtype);
  if (es == 0 || t->rank < 0 || t->rank > KILN_IR_MAX_RANK)
    return kiln_error_set(err, KILN_E_INVALID, "%s: dtype %d or rank %d is invalid", what,
                          (int)t->dtype, t->rank);
  int64_t numel = 1;
  for (int i = 0; i < t->rank; i++) {
    if (t->dims[i] < 0 || (t->dims[i] && numel > INT64_MAX / t->dims[i]))
      return kiln_error_set(err, KILN_E_INVALID, "%s: dim %d (%lld) is negative or overflows",
                            what, i, (long long)t->dims[i]);
    numel *= t->dims[i];
  }
  if ((uint64_t)numel > SIZE_MAX / es || (size_t)numel * es != t->bytes || (t->bytes && !t->data))
    return kiln_error_set(err, KILN_E_INVALID, "%s: holds %zu bytes but its dims need %lld %s "
                          "elements", what, t->bytes, (long long)numel, kiln_dtype_name(t->dtype));
  Onnx__TensorProto *tp = palloc(pl, 1, sizeof *tp);
  int64_t *dims = palloc(pl, (size_t)t->rank, sizeof *dims);
  if (!tp || !dims) return NOMEM(err);
  onnx__tensor_proto__init(tp);
  for (int i = 0; i < t->rank; i++) dims[i] = t->dims[i];
  tp->n_dims = (size_t)t->rank;
  tp->dims = dims;
  tp->has_data_type = 1;
  tp->data_type = (int32_t)t->dtype;
  if (t->name && *t->name) tp->name = t->name;
  tp->has_raw_data = 1;
  tp->raw_data.len = t->bytes;
  tp->raw_data.data = t->data;
  if (!host_is_little_endian() && es > 1 && t->bytes) {
    uint8_t *le = palloc(pl, t->bytes, 1);
    if (!le) return NOMEM(err);
    const uint8_t *src = t->data;
    for (size_t o = 0; o < t->bytes; o += es)
      for (size_t i = 0; i < es; i++) le[o + i] = src[o + es - 1 - i];
    tp->raw_data.data = le;
  }
  *out = tp;
  return KILN_OK;
}

static kiln_status value_proto(pool *pl, const kiln_ir_value *v, const char *kind,
                               Onnx__ValueInfoProto **out, kiln_error *err) {
  if (!v->name || !*v->name)
    return kiln_error_set(err, KILN_E_INVALID, "graph %s has no name", kind);
  if (v->rank > KILN_IR_MAX_RANK)
    return kiln_error_set(err, KILN_E_INVALID, "graph %s \"%s\": rank %d exceeds %d", kind,
                          v->name, v->rank, KILN_IR_MAX_RANK);
  Onnx__ValueInfoProto *vp = palloc(pl, 1, sizeof *vp);
  Onnx__TypeProto *tp = palloc(pl, 1, sizeof *tp);
  Onnx__TypeProto__Tensor *tt = palloc(pl, 1, sizeof *tt);
  if (!vp || !tp || !tt) return NOMEM(err);
  onnx__value_info_proto__init(vp);
  onnx__type_proto__init(tp);
  onnx__type_proto__tensor__init(tt);
  vp->name = v->name;
  vp->type = tp;
  tp->value_case = ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE;
  tp->tensor_type = tt;
  if (v->dtype != KILN_DTYPE_UNDEFINED) {
    tt->has_elem_type = 1;
    tt->elem_type = (int32_t)v->dtype;
  }
  if (v->rank >= 0) {
    Onnx__TensorShapeProto *sh = palloc(pl, 1, sizeof *sh);
    Onnx__TensorShapeProto__Dimension **dp = palloc(pl, (size_t)v->rank, sizeof *dp);
    if (!sh || !dp) return NOMEM(err);
    onnx__tensor_shape_proto__init(sh);
    for (int i = 0; i < v->rank; i++) {
      Onnx__TensorShapeProto__Dimension *d = palloc(pl, 1, sizeof *d);
      if (!d) return NOMEM(err);
      onnx__tensor_shape_proto__dimension__init(d);
      if (v->dims[i].value >= 0) {
        d->value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE;
        d->dim_value = v->dims[i].value;
      } else if (v->dims[i].param && *v->dims[i].param) {
        d->value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_PARAM;
        d->dim_param = v->dims[i].param;
      }
      dp[i] = d;
    }
    sh->n_dim = (size_t)v->rank;
    sh->dim = dp;
    tt->shape = sh;
  }
  *out = vp;
  return KILN_OK;
}

static kiln_status attr_proto(pool *pl, const kiln_ir_attr *a, const char *node,
                              Onnx__AttributeProto **out, kiln_error *err) {
  if (!a->name || !*a->name)
    return kiln_error_set(err, KILN_E_INVALID, "node \"%s\": an attribute has no name", node);
  Onnx__AttributeProto *ap = palloc(pl, 1, sizeof *ap);
  if (!ap) return NOMEM(err);
  onnx__attribute_proto__init(ap);
  ap->name = a->name;
  ap->has_type = 1;
  ap->type = (Onnx__AttributeProto__AttributeType)a->type;
  if ((a->type == KILN_ATTR_FLOATS || a->type == KILN_ATTR_INTS || a->type == KILN_ATTR_STRINGS) &&
      a->n < 0)
    return kiln_error_set(err, KILN_E_INVALID, "node \"%s\": attribute \"%s\" has %d values",
                          node, a->name, a->n);
  switch (a->type) {
    case KILN_ATTR_FLOAT:
      ap->has_f = 1;
      ap->f = a->f;
      break;
    case KILN_ATTR_INT:
      ap->has_i = 1;
      ap->i = a->i;
      break;
    case KILN_ATTR_STRING:
      ap->has_s = 1;
      ap->s.data = (uint8_t *)s_(a->s);
      ap->s.len = strlen(s_(a->s));
      break;
    case KILN_ATTR_TENSOR: {
      char what[300];
      snprintf(what, sizeof what, "node \"%s\": attribute \"%s\"", node, a->name);
      if (!a->t) return kiln_error_set(err, KILN_E_INVALID, "%s has no tensor", what);
      kiln_status s = tensor_proto(pl, a->t, what, &ap->t, err);
      if (s) return s;
      break;
    }
    case KILN_ATTR_FLOATS:
      ap->n_floats = (size_t)a->n;
      ap->floats = a->floats;
      break;
    case KILN_ATTR_INTS:
      ap->n_ints = (size_t)a->n;
      ap->ints = a->ints;
      break;
    case KILN_ATTR_STRINGS: {
      ProtobufCBinaryData *sv = palloc(pl, (size_t)a->n, sizeof *sv);
      if (!sv) return NOMEM(err);
      for (int i = 0; i < a->n; i++) {
        sv[i].data = (uint8_t *)s_(a->strings[i]);
        sv[i].len = strlen(s_(a->strings[i]));
      }
      ap->n_strings = (size_t)a->n;
      ap->strings = sv;
      break;
    }
    default:
      return kiln_error_set(err, KILN_E_INVALID, "node \"%s\": attribute \"%s\" has unknown type %d",
                            node, a->name, (int)a->type);
  }
  *out = ap;
  return KILN_OK;
}

static kiln_status node_proto(pool *pl, const kiln_ir_node *n, Onnx__NodeProto **out,
                              kiln_error *err) {
  const char *label = n->name && *n->name ? n->name : s_(n->op_type);
  if (!n->op_type || !*n->op_type)
    return kiln_error_set(err, KILN_E_INVALID, "node \"%s\": op_type is empty", label);
  if (n->n_inputs < 0 || n->n_outputs < 0 || n->n_attrs < 0)
    return kiln_error_set(err, KILN_E_INVALID, "node \"%s\" (%s): negative counts", label,
                          n->op_type);
  Onnx__NodeProto *np = palloc(pl, 1, sizeof *np);
  char **in = palloc(pl, (size_t)n->n_inputs, sizeof *in);
  char **outs = palloc(pl, (size_t)n->n_outputs, sizeof *outs);
  Onnx__AttributeProto **ap = palloc(pl, (size_t)n->n_attrs, sizeof *ap);
  if (!np || !in || !outs || !ap) return NOMEM(err);
  onnx__node_proto__init(np);
  for (int i = 0; i < n->n_inputs; i++) in[i] = s_(n->inputs[i]);
  for (int i = 0; i < n->n_outputs; i++) outs[i] = s_(n->outputs[i]);
  np->n_input = (size_t)n->n_inputs;
  np->input = in;
  np->n_output = (size_t)n->n_outputs;
  np->output = outs;
  if (n->name && *n->name) np->name = n->name;
  np->op_type = n->op_type;
  if (n->domain && *n->domain) np->domain = n->domain;
  for (int i = 0; i < n->n_attrs; i++) {
    kiln_status s = attr_proto(pl, &n->attrs[i], label, &ap[i], err);
    if (s) return s;
  }
  np->n_attribute = (size_t)n->n_attrs;
  np->attribute = ap;
  *out = np;
  return KILN_OK;
}

static kiln_status model_proto(pool *pl, const kiln_ir_graph *g, Onnx__ModelProto **out,
                               kiln_error *err) {
  if (g->n_opsets <= 0)
    return kiln_error_set(err, KILN_E_INVALID, "ONNX writer: the graph imports no opset "
                          "(call kiln_ir_set_opset)");
  Onnx__ModelProto *m = palloc(pl, 1, sizeof *m);
  Onnx__GraphProto *gp = palloc(pl, 1, sizeof *gp);
  Onnx__OperatorSetIdProto **os = palloc(pl, (size_t)g->n_opsets, sizeof *os);
  Onnx__StringStringEntryProto **md = palloc(pl, (size_t)g->n_meta, sizeof *md);
  Onnx__NodeProto **nodes = palloc(pl, (size_t)g->n_nodes, sizeof *nodes);
  Onnx__TensorProto **inits = palloc(pl, (size_t)g->n_initializers, sizeof *inits);
  Onnx__ValueInfoProto **ins = palloc(pl, (size_t)g->n_inputs, sizeof *ins);
  Onnx__ValueInfoProto **outs = palloc(pl, (size_t)g->n_outputs, sizeof *outs);
  if (!m || !gp || !os || !md || !nodes || !inits || !ins || !outs) return NOMEM(err);
  onnx__model_proto__init(m);
  onnx__graph_proto__init(gp);
  m->has_ir_version = 1;
  m->ir_version = g->ir_version > 0 ? g->ir_version : 8;
  for (int i = 0; i < g->n_opsets; i++) {
    Onnx__OperatorSetIdProto *o = palloc(pl, 1, sizeof *o);
    if (!o) return NOMEM(err);
    onnx__operator_set_id_proto__init(o);
    o->domain = s_(g->opsets[i].domain);
    o->has_version = 1;
    o->version = g->opsets[i].version;
    os[i] = o;
  }
  m->n_opset_import = (size_t)g->n_opsets;
  m->opset_import = os;
  if (g->producer_name) m->producer_name = g->producer_name;
  if (g->producer_version) m->producer_version = g->producer_version;
  for (int i = 0; i < g->n_meta; i++) {
    Onnx__StringStringEntryProto *e = palloc(pl, 1, sizeof *e);
    if (!e) return NOMEM(err);
    onnx__string_string_entry_proto__init(e);
    e->key = s_(g->meta[i].key);
    e->value = s_(g->meta[i].value);
    md[i] = e;
  }
  m->n_metadata_props = (size_t)g->n_meta;
  m->metadata_props = md;
  m->graph = gp;
  gp->name = s_(g->name);
  kiln_status s = KILN_OK;
  for (int i = 0; i < g->n_nodes && !s; i++) s = node_proto(pl, &g->nodes[i], &nodes[i], err);
  for (int i = 0; i < g->n_initializers && !s; i++) {
    char what[300];
    snprintf(what, sizeof what, "initializer \"%s\"", s_(g->initializers[i].name));
    if (!g->initializers[i].name || !*g->initializers[i].name)
      s = kiln_error_set(err, KILN_E_INVALID, "initializer #%d has no name", i);
    else
      s = tensor_proto(pl, &g->initializers[i], what, &inits[i], err);
  }
  for (int i = 0; i < g->n_inputs && !s; i++) s = value_proto(pl, &g->inputs[i], "input", &ins[i], err);
  for (int i = 0; i < g->n_outputs && !s; i++)
    s = value_proto(pl, &g->outputs[i], "output", &outs[i], err);
  if (s) return s;
  gp->n_node = (size_t)g->n_nodes;
  gp->node = nodes;
  gp->n_initializer = (size_t)g->n_initializers;
  gp->initializer = inits;
  gp->n_input = (size_t)g->n_inputs;
  gp->input = ins;
  gp->n_output = (size_t)g->n_outputs;
  gp->output = outs;
  *out = m;
  return KILN_OK;
}

kiln_status kiln_onnx_write_buffer(const kiln_ir_graph *g, void **data, size_t *size,
                                   kiln_error *err) {
  if (!g || !data || !size)
    return kiln_error_set(err, KILN_E_INVALID, "kiln_onnx_write_buffer: NULL argument");
  *data = NULL;
  *size = 0;
  pool pl = {0};
  Onnx__ModelProto *m = NULL;
  kiln_status s = model_proto(&pl, g, &m, err);
  if (!s) {
    size_t n = onnx__model_proto__get_packed_size(m);
    if (n > (size_t)INT32_MAX) {
      s = kiln_error_set(err, KILN_E_UNSUPPORTED, "ONNX writer: the model would be %zu bytes; "
                         "a .onnx without external data is limited to 2 GiB", n);
    } else {
      uint8_t *buf = malloc(n ? n : 1);
      if (!buf) {
        s = NOMEM(err);
      } else {
        size_t w = onnx__model_proto__pack(m, buf);
        if (w != n) {
          free(buf);
          s = kiln_error_set(err, KILN_E_INVALID, "ONNX writer: packed %zu bytes, expected %zu",
                             w, n);
        } else {
          *data = buf;
          *size = n;
        }
      }
    }
  }
  pool_free(&pl);
  return s;
}


kiln_status kiln_onnx_write_file(const kiln_ir_graph *g, const char *path, kiln_error *err) {
  if (!path || !*path)
    return kiln_error_set(err, KILN_E_INVALID, "kiln_onnx_write_file: no path given");
  void *buf;
  size_t n;
  kiln_status s = kiln_onnx_write_buffer(g, &buf, &n, err);
  if (s) {
    kiln_error_prefix(err, "%s", path);
    return s;
  }
  s = kiln_atomic_write(path, buf, n, err);
  free(buf);
  return s;
}

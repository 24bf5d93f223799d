/* kiln command — shapes of a .onnx's values (see onnx_shapes.h). */
#include "onnx_shapes.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

shape *shape_lookup(shape_table *t, const char *name) {
  for (int i = 0; i < t->n; i++)
    if (strcmp(t->names[i], name) == 0) return &t->shapes[i];
  return NULL;
}

int shape_put(shape_table *t, const char *name, const shape *s) {
  shape *have = shape_lookup(t, name);
  if (have) {
    *have = *s;
    return 0;
  }
  if (t->n == t->cap) {
    int cap = t->cap ? t->cap * 2 : 32;
    const char **names = realloc(t->names, (size_t)cap * sizeof *names);
    if (!names) return -1;
    t->names = names;
    shape *shapes = realloc(t->shapes, (size_t)cap * sizeof *shapes);
    if (!shapes) return -1;
    t->shapes = shapes;
    t->cap = cap;
  }
  t->names[t->n] = name;
  t->shapes[t->n++] = *s;
  return 0;
}

shape shape_from_value(const kiln_ir_value *v) {
  shape s = {0};
  if (v->rank < 0) return s;
  s.known = 1;
  s.rank = v->rank;
  for (int i = 0; i < v->rank; i++) {
    s.dims[i] = v->dims[i].value;
    s.params[i] = v->dims[i].param;
  }
  return s;
}

static int64_t attr_int(const kiln_ir_node *n, const char *name, int64_t def) {
  const kiln_ir_attr *a = kiln_ir_node_attr(n, name);
  return a && a->type == KILN_ATTR_INT ? a->i : def;
}

static void set_dim(shape *o, int i, const shape *from, int j) {
  o->dims[i] = from->dims[j];
  o->params[i] = from->params[j];
}

shape shape_infer_node(const kiln_ir_node *n, shape_table *t) {
  shape o = {0};
  shape *a = n->n_inputs > 0 ? shape_lookup(t, n->inputs[0]) : NULL;
  shape *b = n->n_inputs > 1 ? shape_lookup(t, n->inputs[1]) : NULL;
  const char *op = n->op_type;
  if (!a || !a->known) return o;
  if (!strcmp(op, "Relu") || !strcmp(op, "Sigmoid") || !strcmp(op, "Tanh") ||
      !strcmp(op, "Softmax") || !strcmp(op, "Identity") || !strcmp(op, "Dropout") ||
      !strcmp(op, "LeakyRelu") || !strcmp(op, "Clip") || !strcmp(op, "Neg") ||
      !strcmp(op, "QuantizeLinear") || !strcmp(op, "DequantizeLinear") ||
      !strcmp(op, "Sqrt") || !strcmp(op, "Reciprocal")) {
    return *a;
  }
  if (!strcmp(op, "ReduceMean") && n->n_inputs < 2) {
    /* axes as an attribute (opset < 18); none: every axis */
    const kiln_ir_attr *ax = kiln_ir_node_attr(n, "axes");
    int keep = attr_int(n, "keepdims", 1) != 0;
    unsigned mask = 0;
    if (!ax || ax->type != KILN_ATTR_INTS || ax->n == 0) {
      mask = (1u << a->rank) - 1;
    } else {
      for (int k = 0; k < ax->n; k++) {
        int64_t i = ax->ints[k] < 0 ? ax->ints[k] + a->rank : ax->ints[k];
        if (i < 0 || i >= a->rank) return o;
        mask |= 1u << i;
      }
    }
    o.known = 1;
    for (int i = 0; i < a->rank; i++) {
      if (!(mask & (1u << i))) set_dim(&o, o.rank++, a, i);
      else if (keep) o.dims[o.rank++] = 1;
    }
    return o;
  }
  if (!strcmp(op, "Gemm") && b && b->known && a->rank == 2 && b->rank == 2) {
    o.known = 1;
    o.rank = 2;
    set_dim(&o, 0, a, attr_int(n, "transA", 0) ? 1 : 0);
    set_dim(&o, 1, b, attr_int(n, "transB", 0) ? 0 : 1);
    return o;
  }
  if (!strcmp(op, "Concat")) {
    /* The axis adds up; it is symbolic as soon as one input's is. */
    int64_t axis = attr_int(n, "axis", 1);
    if (axis < 0) axis += a->rank;
    if (axis < 0 || axis >= a->rank) return o;
    o = *a;
    for (int k = 1; k < n->n_inputs; k++) {
      const shape *s = shape_lookup(t, n->inputs[k]);
      if (!s || !s->known || s->rank != a->rank) return (shape){0};
      if (o.dims[axis] < 0 || s->dims[axis] < 0) {
        o.dims[axis] = -1;
        o.params[axis] = NULL;
      } else {
        o.dims[axis] += s->dims[axis];
      }
    }
    return o;
  }
  if (!strcmp(op, "MatMul") && b && b->known && a->rank >= 1 && b->rank == 2) {
    o = *a;
    set_dim(&o, a->rank - 1, b, 1);
    return o;
  }
  if ((!strcmp(op, "Add") || !strcmp(op, "Mul") || !strcmp(op, "Sub") || !strcmp(op, "Div")) && b &&
      b->known) {
    return a->rank >= b->rank ? *a : *b;
  }
  if (!strcmp(op, "Flatten")) {
    int64_t axis = attr_int(n, "axis", 1);
    if (axis < 0) axis += a->rank;
    o.known = 1;
    o.rank = 2;
    int64_t left = 1, right = 1;
    int sym_left = 0, sym_right = 0;
    for (int i = 0; i < a->rank; i++) {
      int64_t d = a->dims[i];
      if (i < axis) {
        if (d < 0)
          sym_left = 1;
        else
          left *= d;
      } else {
        if (d < 0)
          sym_right = 1;
        else
          right *= d;
      }
    }
    o.dims[0] = sym_left ? -1 : left;
    o.params[0] = sym_left && axis == 1 ? a->params[0] : NULL;
    o.dims[1] = sym_right ? -1 : right;
    return o;
  }
  return o;
}

void shape_format(const shape *s, char *buf, size_t cap) {
  if (!s || !s->known) {
    snprintf(buf, cap, "?");
    return;
  }
  size_t len = 0;
  len += (size_t)snprintf(buf + len, cap - len, "[");
  for (int i = 0; i < s->rank && len < cap; i++) {
    if (s->dims[i] >= 0)
      len += (size_t)snprintf(buf + len, cap - len, "%s%lld", i ? ", " : "", (long long)s->dims[i]);
    else
      len += (size_t)snprintf(buf + len, cap - len, "%s%s", i ? ", " : "",
                              s->params[i] ? s->params[i] : "?");
  }
  if (len < cap) snprintf(buf + len, cap - len, "]");
}


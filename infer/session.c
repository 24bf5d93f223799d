/* kiln runtime — session create: validate the graph node by node, infer shapes with a
 * symbolic batch, fuse Gemm/MatMul(+Add)+activation, pack constant weights and plan
 * every intermediate into one arena. Also the session's accessors and free. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "session_internal.h"

#define OPSET_MIN 7
#define OPSET_MAX 21
#define OPSET_DEFAULT 13

void kiln_session_options_init(kiln_session_options *opt) {
  if (!opt) return;
  memset(opt, 0, sizeof *opt);
  opt->max_batch = 1024;
  opt->threads = 1;
  opt->kernel = KILN_KERNEL_AUTO;
}

/* State while building a session. */
typedef struct builder {
  kiln_session *s;
  const kiln_ir_graph *g;
  kiln_ir_node *nodes; /* a private, topologically sorted copy of the node array */
  int n_nodes;
  unsigned char *fused; /* nodes folded into an earlier step */
  struct qpat *qp;      /* per node: a fused int8 chain rooted at that Gemm/MatMul */
  int plan_only;        /* kiln_session_plan_bytes: no weight copies or packing */
  kiln_ir_tensor *decoded; /* sparse weights decoded at create (session_sparse.c) */
  int n_decoded;
  kiln_error *err;
  int cap_values, cap_steps;
} builder;

/* --- messages --------------------------------------------------------------- */

static kiln_status node_err(builder *b, const kiln_ir_node *n, kiln_status st, const char *fmt,
                            ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 4, 5)))
#endif
    ;
static kiln_status node_err(builder *b, const kiln_ir_node *n, kiln_status st, const char *fmt,
                            ...) {
  char msg[KILN_ERROR_MESSAGE_MAX];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  if (!n->name[0]) /* unnamed: say which node by its position */
    return kiln_error_set(b->err, st, "unnamed node #%d in topological order (%s): %s", (int)(n - b->nodes),
                          n->op_type, msg);
  return kiln_error_set(b->err, st, "node \"%s\" (%s): %s", n->name, n->op_type, msg);
}

static void shape_str(const kiln_shape *sh, char *buf, size_t cap) {
  size_t used = 0;
  used += (size_t)snprintf(buf, cap, "[");
  for (int i = 0; i < sh->rank && used < cap; i++) {
    const char *sep = i ? ", " : "";
    if (sh->batch[i] && sh->d[i] == 1)
      used += (size_t)snprintf(buf + used, cap - used, "%sbatch", sep);
    else if (sh->batch[i])
      used += (size_t)snprintf(buf + used, cap - used, "%s%lld*batch", sep, (long long)sh->d[i]);
    else
      used += (size_t)snprintf(buf + used, cap - used, "%s%lld", sep, (long long)sh->d[i]);
  }
  if (used < cap) snprintf(buf + used, cap - used, "]");
}

/* --- values ----------------------------------------------------------------- */

static int val_find(const kiln_session *s, const char *name) {
  for (int i = 0; i < s->n_values; i++)
    if (strcmp(s->values[i].name, name) == 0) return i;
  return -1;
}

static int val_add(builder *b, const char *name, kiln_dtype dt, const kiln_shape *sh,
                   kiln_value_kind kind) {
  kiln_session *s = b->s;
  kiln_shape shape = *sh; /* sh may point into s->values, which realloc can move */
  if (s->n_values == b->cap_values) {
    int c = b->cap_values ? b->cap_values * 2 : 32;
    kiln_rt_value *p = realloc(s->values, (size_t)c * sizeof *p);
    if (!p) return -1;
    s->values = p;
    b->cap_values = c;
  }
  kiln_rt_value *v = &s->values[s->n_values];
  memset(v, 0, sizeof *v);
  if (!(v->name = strdup(name))) return -1;
  v->dtype = dt;
  v->shape = shape;
  v->kind = kind;
  v->def_step = -1;
  v->last_step = -1;
  return s->n_values++;
}

/* The data of a constant, copied into the session on first use. */
static const void *const_data(builder *b, int v) {
  kiln_rt_value *val = &b->s->values[v];
  if (val->data || !val->init) return val->data;
  if (b->plan_only) return val->init->data; /* read-only peek, never stored */
  size_t bytes = val->init->bytes;
  val->data = aligned_alloc(KILN_ARENA_ALIGN, (bytes + KILN_ARENA_ALIGN - 1) / KILN_ARENA_ALIGN *
                                                  KILN_ARENA_ALIGN + KILN_ARENA_ALIGN);
  if (!val->data) return NULL;
  if (bytes) memcpy(val->data, val->init->data, bytes);
  b->s->weight_bytes += bytes;
  return val->data;
}

static int64_t shape_numel_fixed(const kiln_shape *sh) {
  int64_t n = 1;
  for (int i = 0; i < sh->rank; i++) n *= sh->d[i];
  return n;
}

/* How many node inputs (and graph outputs) read `name`. */
static int count_consumers(const builder *b, const char *name, int *is_output) {
  int c = 0;
  for (int i = 0; i < b->n_nodes; i++)
    for (int k = 0; k < b->nodes[i].n_inputs; k++)
      if (strcmp(b->nodes[i].inputs[k], name) == 0) c++;
  *is_output = 0;
  for (int i = 0; i < b->g->n_outputs; i++)
    if (strcmp(b->g->outputs[i].name, name) == 0) *is_output = 1;
  return c + *is_output;
}

/* The one node reading `name` (when count_consumers says 1). */
static int sole_consumer(const builder *b, const char *name) {
  for (int i = 0; i < b->n_nodes; i++)
    for (int k = 0; k < b->nodes[i].n_inputs; k++)
      if (strcmp(b->nodes[i].inputs[k], name) == 0) return i;
  return -1;
}

/* --- attributes ------------------------------------------------------------- */

static kiln_status attr_int(builder *b, const kiln_ir_node *n, const char *name, int required,
                            int64_t def, int64_t *out) {
  const kiln_ir_attr *a = kiln_ir_node_attr(n, name);
  *out = def;
  if (!a) {
    if (required)
      return node_err(b, n, KILN_E_FORMAT, "required attribute \"%s\" (an int) is missing", name);
    return KILN_OK;
  }
  if (a->type != KILN_ATTR_INT)
    return node_err(b, n, KILN_E_FORMAT, "attribute \"%s\" must be an int (type %d), got type %d",
                    name, (int)KILN_ATTR_INT, (int)a->type);
  *out = a->i;
  return KILN_OK;
}

static kiln_status attr_float(builder *b, const kiln_ir_node *n, const char *name, float def,
                              float *out) {
  const kiln_ir_attr *a = kiln_ir_node_attr(n, name);
  *out = def;
  if (!a) return KILN_OK;
  if (a->type != KILN_ATTR_FLOAT)
    return node_err(b, n, KILN_E_FORMAT,
                    "attribute \"%s\" must be a float (type %d), got type %d", name,
                    (int)KILN_ATTR_FLOAT, (int)a->type);
  *out = a->f;
  return KILN_OK;
}

/* --- inputs and outputs of a node ------------------------------------------- */

static int has_input(const kiln_ir_node *n, int k) { return k < n->n_inputs && n->inputs[k][0]; }
static int has_output(const kiln_ir_node *n, int k) {
  return k < n->n_outputs && n->outputs[k][0];
}

static kiln_status get_input(builder *b, const kiln_ir_node *n, int k, int need_float, int *v) {
  if (!has_input(n, k))
    return node_err(b, n, KILN_E_FORMAT, "input %d is missing (the node has %d inputs)", k,
                    n->n_inputs);
  *v = val_find(b->s, n->inputs[k]);
  if (*v < 0)
    return node_err(b, n, KILN_E_FORMAT,
                    "input \"%s\" is not a graph input, an initializer or an earlier node's output",
                    n->inputs[k]);
  kiln_dtype dt = b->s->values[*v].dtype;
  if (need_float && dt != KILN_DTYPE_FLOAT)
    return node_err(b, n, KILN_E_UNSUPPORTED, "input \"%s\" is %s; kiln runs this op on float32 only",
                    n->inputs[k], kiln_dtype_name(dt));
  return KILN_OK;
}

static kiln_status add_output(builder *b, const kiln_ir_node *n, int k, kiln_dtype dt,
                              const kiln_shape *sh, int *v) {
  if (!has_output(n, k)) return node_err(b, n, KILN_E_FORMAT, "output %d is missing", k);
  if (val_find(b->s, n->outputs[k]) >= 0)
    return node_err(b, n, KILN_E_FORMAT, "output \"%s\" is defined twice", n->outputs[k]);
  *v = val_add(b, n->outputs[k], dt, sh, KILN_VALUE_TEMP);
  if (*v < 0) return kiln_error_set(b->err, KILN_E_NOMEM, "session: out of memory");
  return KILN_OK;
}

static kiln_step *new_step(builder *b, kiln_op op, int node_index) {
  kiln_session *s = b->s;
  if (s->n_steps == b->cap_steps) {
    int c = b->cap_steps ? b->cap_steps * 2 : 16;
    kiln_step *p = realloc(s->steps, (size_t)c * sizeof *p);
    if (!p) return NULL;
    s->steps = p;
    b->cap_steps = c;
  }
  kiln_step *st = &s->steps[s->n_steps++];
  memset(st, 0, sizeof *st);
  st->op = op;
  st->node_index = node_index;
  st->c_value = -1;
  return st;
}

/* --- shape algebra ---------------------------------------------------------- */

/* Numpy broadcasting of two affine shapes; 0 when they cannot broadcast. */
static int broadcast_shapes(const kiln_shape *a, const kiln_shape *c, kiln_shape *out) {
  int r = a->rank > c->rank ? a->rank : c->rank;
  memset(out, 0, sizeof *out);
  out->rank = r;
  for (int i = 0; i < r; i++) {
    int ia = i - (r - a->rank), ic = i - (r - c->rank);
    int64_t da = ia >= 0 ? a->d[ia] : 1, dc = ic >= 0 ? c->d[ic] : 1;
    int ba = ia >= 0 ? a->batch[ia] : 0, bc = ic >= 0 ? c->batch[ic] : 0;
    if (ba == bc && da == dc) {
      out->d[i] = da;
      out->batch[i] = (unsigned char)ba;
    } else if (!ba && da == 1) {
      out->d[i] = dc;
      out->batch[i] = (unsigned char)bc;
    } else if (!bc && dc == 1) {
      out->d[i] = da;
      out->batch[i] = (unsigned char)ba;
    } else {
      return 0;
    }
  }
  return 1;
}

/* Product of dims [from, to) as c * batch^e; 0 when batch appears twice. */
static int shape_prod(const kiln_shape *sh, int from, int to, int64_t *c, int *e) {
  *c = 1;
  *e = 0;
  for (int i = from; i < to; i++) {
    *c *= sh->d[i];
    *e += sh->batch[i];
  }
  return *e <= 1;
}

/* --- per-op builders ---------------------------------------------------------- */

static kiln_status build_gemm_like(builder *b, int ni);

static kiln_status build_binary(builder *b, int ni, kiln_op op) {
  const kiln_ir_node *n = &b->nodes[ni];
  int va = -1, vb = -1, vo = -1;
  kiln_status st;
  if ((st = get_input(b, n, 0, 1, &va)) || (st = get_input(b, n, 1, 1, &vb))) return st;
  kiln_shape out;
  if (!broadcast_shapes(&b->s->values[va].shape, &b->s->values[vb].shape, &out)) {
    char sa[128], sb[128];
    shape_str(&b->s->values[va].shape, sa, sizeof sa);
    shape_str(&b->s->values[vb].shape, sb, sizeof sb);
    return node_err(b, n, KILN_E_SHAPE, "shapes %s and %s do not broadcast", sa, sb);
  }
  if ((st = add_output(b, n, 0, KILN_DTYPE_FLOAT, &out, &vo))) return st;
  kiln_step *s = new_step(b, op, ni);
  if (!s) return kiln_error_set(b->err, KILN_E_NOMEM, "session: out of memory");
  s->n_in = 2;
  s->in[0] = va;
  s->in[1] = vb;
  s->n_out = 1;
  s->out[0] = vo;
  return KILN_OK;
}

static kiln_status build_unary(builder *b, int ni, kiln_op op) {
  const kiln_ir_node *n = &b->nodes[ni];
  int vi = -1, vo = -1;
  kiln_status st;
  float slope = 0.01f;
  if (op == KILN_OP_LEAKY_RELU && (st = attr_float(b, n, "alpha", 0.01f, &slope))) return st;
  if ((st = get_input(b, n, 0, 1, &vi))) return st;
  if ((st = add_output(b, n, 0, KILN_DTYPE_FLOAT, &b->s->values[vi].shape, &vo))) return st;
  kiln_step *s = new_step(b, op, ni);
  if (!s) return kiln_error_set(b->err, KILN_E_NOMEM, "session: out of memory");
  s->n_in = 1;
  s->in[0] = vi;
  s->n_out = 1;
  s->out[0] = vo;
  s->slope = slope;
  return KILN_OK;
}

static kiln_status copy_step(builder *b, int ni, int vi, kiln_dtype dt, const kiln_shape *sh,
                             kiln_op op);

/* ReduceMean: axes from the attribute (opset < 18) or the constant input 1 (opset 18+);
 * none reduces every axis, unless noop_with_empty_axes (then it is an Identity). */
/* Input k of n (its value v, NULL when absent) must be a constant 1-D int64 tensor, as
 * Reshape's shape and ReduceMean's axes must: kiln plans shapes at create. */
static kiln_status const_int64_vector(builder *b, const kiln_ir_node *n, int k,
                                      const kiln_rt_value *v, const char *what) {
  if (!v || v->kind != KILN_VALUE_CONST)
    return node_err(b, n, KILN_E_UNSUPPORTED,
                    "the %s input \"%s\" must be an initializer (kiln plans shapes at create)",
                    what, n->inputs[k]);
  if (v->dtype != KILN_DTYPE_INT64 || v->shape.rank != 1)
    return node_err(b, n, KILN_E_FORMAT, "the %s input \"%s\" must be a 1-D int64 tensor", what,
                    n->inputs[k]);
  return KILN_OK;
}

static kiln_status build_reduce_mean(builder *b, int ni) {
  const kiln_ir_node *n = &b->nodes[ni];
  int vi = -1;
  kiln_status st;
  int64_t keepdims, noop;
  if ((st = attr_int(b, n, "keepdims", 0, 1, &keepdims)) ||
      (st = attr_int(b, n, "noop_with_empty_axes", 0, 0, &noop)) ||
      (st = get_input(b, n, 0, 1, &vi)))
    return st;
  const kiln_shape *sh = &b->s->values[vi].shape;
  int r = sh->rank, n_axes = 0;
  const int64_t *axes = NULL;
  const kiln_ir_attr *a = kiln_ir_node_attr(n, "axes");
  if (has_input(n, 1)) {
    int va = val_find(b->s, n->inputs[1]);
    const kiln_rt_value *av = va >= 0 ? &b->s->values[va] : NULL;
    kiln_status cst = const_int64_vector(b, n, 1, av, "axes");
    if (cst) return cst;
    if (a) return node_err(b, n, KILN_E_FORMAT, "axes given both as an attribute and an input");
    axes = av->init->data;
    n_axes = (int)av->shape.d[0];
  } else if (a) {
    if (a->type != KILN_ATTR_INTS)
      return node_err(b, n, KILN_E_FORMAT, "attribute \"axes\" must be ints (type %d), got type %d",
                      (int)KILN_ATTR_INTS, (int)a->type);
    axes = a->ints;
    n_axes = a->n;
  }
  if (n_axes == 0 && noop) return copy_step(b, ni, vi, KILN_DTYPE_FLOAT, sh, KILN_OP_COPY);
  unsigned mask = 0;
  for (int k = 0; k < n_axes; k++) {
    int64_t ax = axes[k];
    if (ax < -r || ax >= r)
      return node_err(b, n, KILN_E_INVALID, "axes[%d]=%lld is outside [%d, %d] for a rank-%d input",
                      k, (long long)ax, -r, r - 1, r);
    if (ax < 0) ax += r;
    if (mask & (1u << ax))
      return node_err(b, n, KILN_E_INVALID, "axis %lld is given twice in axes", (long long)ax);
    mask |= 1u << ax;
  }
  if (n_axes == 0) mask = r ? (1u << r) - 1 : 0;
  kiln_shape out;
  memset(&out, 0, sizeof out);
  for (int i = 0; i < r; i++) {
    if (!(mask & (1u << i))) {
      out.d[out.rank] = sh->d[i];
      out.batch[out.rank++] = sh->batch[i];
    } else if (keepdims) {
      out.d[out.rank++] = 1;
    }
  }
  if ((st = copy_step(b, ni, vi, KILN_DTYPE_FLOAT, &out, KILN_OP_REDUCE_MEAN))) return st;
  b->s->steps[b->s->n_steps - 1].reduce_mask = mask;
  return KILN_OK;
}

static kiln_status build_softmax(builder *b, int ni, kiln_op op) {
  const kiln_ir_node *n = &b->nodes[ni];
  int vi = -1, vo = -1;
  kiln_status st;
  int legacy = b->s->opset < 13;
  int64_t axis;
  if ((st = attr_int(b, n, "axis", 0, legacy ? 1 : -1, &axis))) return st;
  if ((st = get_input(b, n, 0, 1, &vi))) return st;
  const kiln_shape *sh = &b->s->values[vi].shape;
  int r = sh->rank;
  if (axis < -r || axis >= (r ? r : 1))
    return node_err(b, n, KILN_E_INVALID, "axis=%lld is outside [%d, %d] for a rank-%d input",
                    (long long)axis, -r, r - 1, r);
  if (axis < 0) axis += r;
  if ((st = add_output(b, n, 0, KILN_DTYPE_FLOAT, sh, &vo))) return st;
  kiln_step *s = new_step(b, op, ni);
  if (!s) return kiln_error_set(b->err, KILN_E_NOMEM, "session: out of memory");
  s->n_in = 1;
  s->in[0] = vi;
  s->n_out = 1;
  s->out[0] = vo;
  s->axis = (int)axis;
  s->legacy_softmax = legacy;
  return KILN_OK;
}

static kiln_status build_concat(builder *b, int ni) {
  const kiln_ir_node *n = &b->nodes[ni];
  kiln_status st;
  int64_t axis;
  if ((st = attr_int(b, n, "axis", 1, 0, &axis))) return st;
  if (n->n_inputs < 1) return node_err(b, n, KILN_E_FORMAT, "needs at least one input");
  if (n->n_inputs > KILN_STEP_MAX_IN)
    return node_err(b, n, KILN_E_UNSUPPORTED, "%d inputs; kiln concatenates at most %d",
                    n->n_inputs, KILN_STEP_MAX_IN);
  kiln_step tmp;
  memset(&tmp, 0, sizeof tmp);
  kiln_shape out;
  for (int k = 0; k < n->n_inputs; k++) {
    int v = -1;
    if ((st = get_input(b, n, k, 1, &v))) return st;
    tmp.in[k] = v;
    const kiln_shape *sh = &b->s->values[v].shape;
    if (k == 0) {
      out = *sh;
      if (axis < -sh->rank || axis >= sh->rank)
        return node_err(b, n, KILN_E_INVALID, "axis=%lld is outside [%d, %d] for rank-%d inputs",
                        (long long)axis, -sh->rank, sh->rank - 1, sh->rank);
      if (axis < 0) axis += sh->rank;
      continue;
    }
    char s0[128], s1[128];
    shape_str(&b->s->values[tmp.in[0]].shape, s0, sizeof s0);
    shape_str(sh, s1, sizeof s1);
    if (sh->rank != out.rank)
      return node_err(b, n, KILN_E_SHAPE, "input \"%s\" %s has a different rank than \"%s\" %s",
                      n->inputs[k], s1, n->inputs[0], s0);
    for (int i = 0; i < sh->rank; i++) {
      if (i == axis) {
        if (sh->batch[i] != out.batch[i] && (sh->d[i] || out.d[i]))
          return node_err(b, n, KILN_E_UNSUPPORTED,
                          "axis %d mixes a batch-sized and a fixed dim (%s and %s)", i, s0, s1);
        out.d[i] += sh->d[i];
      } else if (sh->d[i] != out.d[i] || sh->batch[i] != out.batch[i]) {
        return node_err(b, n, KILN_E_SHAPE,
                        "input \"%s\" %s differs from \"%s\" %s in dim %d (only axis %d may differ)",
                        n->inputs[k], s1, n->inputs[0], s0, i, (int)axis);
      }
    }
  }
  int vo = -1;
  if ((st = add_output(b, n, 0, KILN_DTYPE_FLOAT, &out, &vo))) return st;
  kiln_step *s = new_step(b, KILN_OP_CONCAT, ni);
  if (!s) return kiln_error_set(b->err, KILN_E_NOMEM, "session: out of memory");
  memcpy(s->in, tmp.in, sizeof s->in);
  s->n_in = n->n_inputs;
  s->n_out = 1;
  s->out[0] = vo;
  s->axis = (int)axis;
  return KILN_OK;
}

static kiln_status copy_step(builder *b, int ni, int vi, kiln_dtype dt, const kiln_shape *sh,
                             kiln_op op) {
  const kiln_ir_node *n = &b->nodes[ni];
  int vo = -1;
  kiln_status st;
  if ((st = add_output(b, n, 0, dt, sh, &vo))) return st;
  kiln_step *s = new_step(b, op, ni);
  if (!s) return kiln_error_set(b->err, KILN_E_NOMEM, "session: out of memory");
  s->n_in = 1;
  s->in[0] = vi;
  s->n_out = 1;
  s->out[0] = vo;
  return KILN_OK;
}

static kiln_status build_flatten(builder *b, int ni) {
  const kiln_ir_node *n = &b->nodes[ni];
  kiln_status st;
  int64_t axis;
  int vi = -1;
  if ((st = attr_int(b, n, "axis", 0, 1, &axis)) || (st = get_input(b, n, 0, 0, &vi))) return st;
  const kiln_rt_value *in = &b->s->values[vi];
  int r = in->shape.rank;
  if (axis < -r || axis > r)
    return node_err(b, n, KILN_E_INVALID, "axis=%lld is outside [%d, %d] for a rank-%d input",
                    (long long)axis, -r, r, r);
  if (axis < 0) axis += r;
  kiln_shape out;
  memset(&out, 0, sizeof out);
  out.rank = 2;
  int e0, e1;
  if (!shape_prod(&in->shape, 0, (int)axis, &out.d[0], &e0) ||
      !shape_prod(&in->shape, (int)axis, r, &out.d[1], &e1))
    return node_err(b, n, KILN_E_UNSUPPORTED, "flattening two batch-sized dims together");
  out.batch[0] = (unsigned char)e0;
  out.batch[1] = (unsigned char)e1;
  return copy_step(b, ni, vi, in->dtype, &out, KILN_OP_COPY);
}

static kiln_status build_reshape(builder *b, int ni) {
  const kiln_ir_node *n = &b->nodes[ni];
  kiln_status st;
  int64_t allowzero;
  int vi = -1, vs = -1;
  if ((st = attr_int(b, n, "allowzero", 0, 0, &allowzero)) || (st = get_input(b, n, 0, 0, &vi)) ||
      (st = get_input(b, n, 1, 0, &vs)))
    return st;
  const kiln_rt_value *in = &b->s->values[vi], *sv = &b->s->values[vs];
  if ((st = const_int64_vector(b, n, 1, sv, "shape"))) return st;
  int r = (int)sv->shape.d[0];
  if (r > KILN_IR_MAX_RANK)
    return node_err(b, n, KILN_E_UNSUPPORTED, "target rank %d exceeds %d", r, KILN_IR_MAX_RANK);
  const int64_t *t = sv->init->data;
  kiln_shape out;
  memset(&out, 0, sizeof out);
  out.rank = r;
  int infer_at = -1;
  int64_t pc = 1;
  int pe = 0;
  for (int i = 0; i < r; i++) {
    if (t[i] == -1) {
      if (infer_at >= 0) return node_err(b, n, KILN_E_INVALID, "shape has more than one -1");
      infer_at = i;
    } else if (t[i] == 0 && !allowzero) {
      if (i >= in->shape.rank)
        return node_err(b, n, KILN_E_INVALID, "shape[%d]=0 copies a dim the rank-%d input lacks",
                        i, in->shape.rank);
      out.d[i] = in->shape.d[i];
      out.batch[i] = in->shape.batch[i];
    } else if (t[i] < 0) {
      return node_err(b, n, KILN_E_INVALID, "shape[%d]=%lld is negative", i, (long long)t[i]);
    } else {
      out.d[i] = t[i];
    }
    if (i != infer_at) {
      pc *= out.d[i];
      pe += out.batch[i];
    }
  }
  int64_t ic;
  int ie;
  if (!shape_prod(&in->shape, 0, in->shape.rank, &ic, &ie) || pe > 1)
    return node_err(b, n, KILN_E_UNSUPPORTED, "two batch-sized dims in one tensor");
  char si[128];
  shape_str(&in->shape, si, sizeof si);
  if (infer_at >= 0) {
    if (pc == 0 || ic % pc != 0 || ie - pe < 0)
      return node_err(b, n, KILN_E_SHAPE, "cannot infer the -1 dim reshaping %s", si);
    out.d[infer_at] = ic / pc;
    out.batch[infer_at] = (unsigned char)(ie - pe);
  } else if (pc != ic || pe != ie) {
    char so[128];
    shape_str(&out, so, sizeof so);
    return node_err(b, n, KILN_E_SHAPE, "cannot reshape %s into %s (element counts differ%s)", si,
                    so, pe != ie ? " for some batch sizes" : "");
  }
  return copy_step(b, ni, vi, in->dtype, &out, KILN_OP_COPY);
}

static kiln_status build_identity(builder *b, int ni) {
  int vi = -1;
  kiln_status st;
  if ((st = get_input(b, &b->nodes[ni], 0, 0, &vi))) return st;
  return copy_step(b, ni, vi, b->s->values[vi].dtype, &b->s->values[vi].shape, KILN_OP_COPY);
}

static kiln_status build_dropout(builder *b, int ni) {
  const kiln_ir_node *n = &b->nodes[ni];
  int vi = -1;
  kiln_status st;
  if ((st = get_input(b, n, 0, 1, &vi))) return st;
  if (has_input(n, 2)) {
    int vt = val_find(b->s, n->inputs[2]);
    const kiln_rt_value *t = vt >= 0 ? &b->s->values[vt] : NULL;
    if (!t || t->kind != KILN_VALUE_CONST || t->dtype != KILN_DTYPE_BOOL ||
        shape_numel_fixed(&t->shape) != 1 || ((const unsigned char *)t->init->data)[0])
      return node_err(b, n, KILN_E_UNSUPPORTED,
                      "training_mode \"%s\" must be a constant false; kiln runs inference only",
                      n->inputs[2]);
  }
  kiln_shape sh = b->s->values[vi].shape;
  if ((st = copy_step(b, ni, vi, KILN_DTYPE_FLOAT, &sh, KILN_OP_COPY))) return st;
  if (has_output(n, 1)) {
    /* Inference keeps every element: the mask is all true (all ones before opset 10). */
    int vm = -1;
    kiln_dtype mdt = b->s->opset >= 10 ? KILN_DTYPE_BOOL : KILN_DTYPE_FLOAT;
    if ((st = add_output(b, n, 1, mdt, &sh, &vm))) return st;
    kiln_step *s = new_step(b, KILN_OP_FILL_ONES, ni);
    if (!s) return kiln_error_set(b->err, KILN_E_NOMEM, "session: out of memory");
    s->n_in = 0;
    s->n_out = 1;
    s->out[0] = vm;
  }
  return KILN_OK;
}

static kiln_status build_cast(builder *b, int ni) {
  const kiln_ir_node *n = &b->nodes[ni];
  int vi = -1;
  int64_t to;
  kiln_status st;
  if ((st = attr_int(b, n, "to", 1, 0, &to)) || (st = get_input(b, n, 0, 0, &vi))) return st;
  kiln_dtype from = b->s->values[vi].dtype;
  if (to == (int64_t)from)
    return copy_step(b, ni, vi, from, &b->s->values[vi].shape, KILN_OP_COPY);
  if (to != KILN_DTYPE_FLOAT)
    return node_err(b, n, KILN_E_UNSUPPORTED,
                    "to=%lld (%s) is not supported; kiln casts to float32 (to=1) only",
                    (long long)to, kiln_dtype_name((kiln_dtype)to));
  if (from != KILN_DTYPE_DOUBLE && from != KILN_DTYPE_INT64 && from != KILN_DTYPE_INT32 &&
      from != KILN_DTYPE_INT8 && from != KILN_DTYPE_UINT8 && from != KILN_DTYPE_BOOL)
    return node_err(b, n, KILN_E_UNSUPPORTED, "casting %s to float32 is not supported",
                    kiln_dtype_name(from));
  return copy_step(b, ni, vi, KILN_DTYPE_FLOAT, &b->s->values[vi].shape, KILN_OP_CAST);
}

/* Folds the sole consumer of step st's output into it when it is an activation (or,
 * for a MatMul with packed weights and no bias yet, an Add of a constant [N] bias). */
static kiln_status try_fuse(builder *b, kiln_step *st) {
  for (;;) {
    kiln_rt_value *out = &b->s->values[st->out[0]];
    int is_out;
    if (st->act != KILN_ACT_NONE || count_consumers(b, out->name, &is_out) != 1 || is_out)
      return KILN_OK;
    int ci = sole_consumer(b, out->name);
    kiln_ir_node *c = &b->nodes[ci];
    if (c->domain[0] && strcmp(c->domain, "ai.onnx") != 0) return KILN_OK;
    kiln_act act = KILN_ACT_NONE;
    float slope = 0.0f;
    kiln_status s;
    if (strcmp(c->op_type, "Relu") == 0) act = KILN_ACT_RELU;
    else if (strcmp(c->op_type, "Sigmoid") == 0) act = KILN_ACT_SIGMOID;
    else if (strcmp(c->op_type, "Tanh") == 0) act = KILN_ACT_TANH;
    else if (strcmp(c->op_type, "LeakyRelu") == 0) {
      act = KILN_ACT_LEAKY_RELU;
      if ((s = attr_float(b, c, "alpha", 0.01f, &slope))) return s;
    }
    if (act != KILN_ACT_NONE) {
      if (c->n_inputs != 1 || !has_output(c, 0)) return KILN_OK; /* let the op report it */
      int vo = -1;
      if ((s = add_output(b, c, 0, KILN_DTYPE_FLOAT, &out->shape, &vo))) return s;
      st->act = act;
      st->act_alpha = slope;
      st->out[0] = vo;
      b->fused[ci] = 1;
      continue;
    }
    if (strcmp(c->op_type, "Add") == 0 && st->is_matmul && st->b_packed && !st->bias &&
        c->n_inputs == 2 && has_output(c, 0)) {
      const char *other = strcmp(c->inputs[0], out->name) == 0 ? c->inputs[1] : c->inputs[0];
      int vb = val_find(b->s, other);
      if (vb < 0) return KILN_OK;
      const kiln_rt_value *bv = &b->s->values[vb];
      if (bv->kind != KILN_VALUE_CONST || bv->dtype != KILN_DTYPE_FLOAT ||
          bv->shape.rank > out->shape.rank || bv->shape.rank < 1 ||
          bv->shape.d[bv->shape.rank - 1] != st->N || shape_numel_fixed(&bv->shape) != st->N)
        return KILN_OK;
      st->bias = malloc((size_t)st->N * sizeof(float));
      if (!st->bias) return kiln_error_set(b->err, KILN_E_NOMEM, "session: out of memory");
      memcpy(st->bias, bv->init->data, (size_t)st->N * sizeof(float));
      b->s->weight_bytes += (size_t)st->N * sizeof(float);
      int vo = -1;
      if ((s = add_output(b, c, 0, KILN_DTYPE_FLOAT, &out->shape, &vo))) return s;
      st->out[0] = vo;
      b->fused[ci] = 1;
      continue;
    }
    return KILN_OK;
  }
}

static kiln_status pack_const_b(builder *b, kiln_step *st, int vb, int64_t rsb, int64_t csb) {
  const kiln_sgemm_kernel *k = b->s->kern;
  size_t floats = kiln_sgemm_packed_b_floats(k, st->K, st->N);
  st->b_packed = 1;
  if (b->plan_only) return KILN_OK;
  st->bp = aligned_alloc(KILN_ARENA_ALIGN,
                         (floats * sizeof(float) + KILN_ARENA_ALIGN - 1) / KILN_ARENA_ALIGN *
                             KILN_ARENA_ALIGN);
  if (!st->bp) return kiln_error_set(b->err, KILN_E_NOMEM, "session: out of memory packing weights");
  kiln_sgemm_pack_b(k, st->K, st->N, b->s->values[vb].init->data, rsb, csb, st->bp);
  b->s->weight_bytes += floats * sizeof(float);
  return KILN_OK;
}

static void need_scratch_b(builder *b, int64_t K, int64_t N) {
  size_t f = kiln_sgemm_packed_b_floats(b->s->kern, K, N);
  if (f > b->s->scratch_b_floats) b->s->scratch_b_floats = f;
}

static kiln_status build_gemm_like(builder *b, int ni) {
  const kiln_ir_node *n = &b->nodes[ni];
  kiln_session *s = b->s;
  int is_mm = strcmp(n->op_type, "MatMul") == 0;
  int va = -1, vb = -1, vo = -1;
  kiln_status st;
  int64_t ta = 0, tb = 0;
  float alpha = 1.0f, beta = 1.0f;
  if (!is_mm) {
    if ((st = attr_int(b, n, "transA", 0, 0, &ta)) || (st = attr_int(b, n, "transB", 0, 0, &tb)) ||
        (st = attr_float(b, n, "alpha", 1.0f, &alpha)) ||
        (st = attr_float(b, n, "beta", 1.0f, &beta)))
      return st;
    if ((ta != 0 && ta != 1) || (tb != 0 && tb != 1))
      return node_err(b, n, KILN_E_INVALID, "transA=%lld, transB=%lld: each must be 0 or 1",
                      (long long)ta, (long long)tb);
    const kiln_ir_attr *bc = kiln_ir_node_attr(n, "broadcast");
    if (bc && bc->type == KILN_ATTR_INT && bc->i == 0 && s->opset < 7)
      return node_err(b, n, KILN_E_UNSUPPORTED, "broadcast=0 (opset < 7) is not supported");
  }
  if ((st = get_input(b, n, 0, 1, &va)) || (st = get_input(b, n, 1, 1, &vb))) return st;
  kiln_shape as = s->values[va].shape, bs = s->values[vb].shape;
  char sa[128], sb[128];
  shape_str(&as, sa, sizeof sa);
  shape_str(&bs, sb, sizeof sb);
  kiln_shape out;
  memset(&out, 0, sizeof out);
  int64_t K, N;
  if (!is_mm) {
    if (as.rank != 2 || bs.rank != 2)
      return node_err(b, n, KILN_E_SHAPE, "A %s and B %s must both be 2-D", sa, sb);
    int ka = ta ? 0 : 1, kb = tb ? 1 : 0;
    if (as.batch[ka] || bs.batch[0] || bs.batch[1])
      return node_err(b, n, KILN_E_UNSUPPORTED,
                      "A %s, B %s: only A's row count may depend on the batch", sa, sb);
    K = as.d[ka];
    N = bs.d[1 - kb];
    if (bs.d[kb] != K)
      return node_err(b, n, KILN_E_SHAPE, "A %s (transA=%lld) and B %s (transB=%lld): K %lld != %lld",
                      sa, (long long)ta, sb, (long long)tb, (long long)K, (long long)bs.d[kb]);
    out.rank = 2;
    out.d[0] = as.d[1 - ka];
    out.batch[0] = as.batch[1 - ka];
    out.d[1] = N;
  } else {
    if (as.rank < 1 || bs.rank < 1)
      return node_err(b, n, KILN_E_SHAPE, "A %s and B %s must have rank >= 1", sa, sb);
    kiln_shape a2 = as, b2 = bs;
    if (as.rank == 1) { /* [K] -> [1, K] */
      a2.rank = 2; a2.d[1] = as.d[0]; a2.batch[1] = as.batch[0]; a2.d[0] = 1; a2.batch[0] = 0;
    }
    if (bs.rank == 1) { /* [K] -> [K, 1] */
      b2.rank = 2; b2.d[1] = 1; b2.batch[1] = 0;
    }
    K = a2.d[a2.rank - 1];
    N = b2.d[b2.rank - 1];
    if (a2.batch[a2.rank - 1] || b2.batch[b2.rank - 2] || b2.batch[b2.rank - 1])
      return node_err(b, n, KILN_E_UNSUPPORTED, "A %s, B %s: K and N must not depend on the batch",
                      sa, sb);
    if (b2.d[b2.rank - 2] != K)
      return node_err(b, n, KILN_E_SHAPE, "A %s and B %s: K %lld != %lld", sa, sb, (long long)K,
                      (long long)b2.d[b2.rank - 2]);
    kiln_shape la = a2, lb = b2;
    la.rank -= 2;
    lb.rank -= 2;
    if (!broadcast_shapes(&la, &lb, &out))
      return node_err(b, n, KILN_E_SHAPE, "leading dims of A %s and B %s do not broadcast", sa, sb);
    if (out.rank + 2 > KILN_IR_MAX_RANK)
      return node_err(b, n, KILN_E_UNSUPPORTED, "rank above %d", KILN_IR_MAX_RANK);
    if (as.rank > 1) {
      out.d[out.rank] = a2.d[a2.rank - 2];
      out.batch[out.rank] = a2.batch[a2.rank - 2];
      out.rank++;
    }
    if (bs.rank > 1) {
      out.d[out.rank] = N;
      out.batch[out.rank] = 0;
      out.rank++;
    }
  }
  if (K > s->max_k) s->max_k = K;
  if ((st = add_output(b, n, 0, KILN_DTYPE_FLOAT, &out, &vo))) return st;
  kiln_step *sp = new_step(b, KILN_OP_GEMM, ni);
  if (!sp) return kiln_error_set(b->err, KILN_E_NOMEM, "session: out of memory");
  sp->is_matmul = is_mm;
  sp->trans_a = (int)ta;
  sp->trans_b = (int)tb;
  sp->alpha = alpha;
  sp->beta = 0.0f;
  sp->K = K;
  sp->N = N;
  sp->n_in = 2;
  sp->in[0] = va;
  sp->in[1] = vb;
  sp->n_out = 1;
  sp->out[0] = vo;
  int b_const = s->values[vb].kind == KILN_VALUE_CONST;
  if (b_const && (bs.rank <= 2)) {
    int64_t rsb, csb;
    if (bs.rank == 1) { rsb = 1; csb = 0; }
    else if (tb) { rsb = 1; csb = bs.d[1]; }
    else { rsb = bs.d[1]; csb = 1; }
    if ((st = pack_const_b(b, sp, vb, rsb, csb))) return st;
  } else {
    need_scratch_b(b, K, N);
    if (!const_data(b, vb) && b_const) return kiln_error_set(b->err, KILN_E_NOMEM, "out of memory");
  }
  if (!is_mm && has_input(n, 2) && beta != 0.0f) {
    int vc = -1;
    if ((st = get_input(b, n, 2, 1, &vc))) return st;
    const kiln_shape *cs = &s->values[vc].shape;
    char sc[128], so[128];
    shape_str(cs, sc, sizeof sc);
    shape_str(&out, so, sizeof so);
    kiln_shape tmp;
    if (cs->rank > 2 || !broadcast_shapes(cs, &out, &tmp) || tmp.d[0] != out.d[0] ||
        tmp.batch[0] != out.batch[0] || tmp.d[1] != out.d[1])
      return node_err(b, n, KILN_E_SHAPE, "C %s does not broadcast to the output %s", sc, so);
    int vector = cs->rank == 0 || (cs->rank == 1) || (cs->rank == 2 && cs->d[0] == 1 && !cs->batch[0]);
    if (s->values[vc].kind == KILN_VALUE_CONST && vector) {
      sp->bias = malloc((size_t)(N ? N : 1) * sizeof(float));
      if (!sp->bias) return kiln_error_set(b->err, KILN_E_NOMEM, "session: out of memory");
      const float *c = s->values[vc].init->data;
      int64_t cn = cs->rank ? cs->d[cs->rank - 1] : 1;
      for (int64_t j = 0; j < N; j++) sp->bias[j] = beta * c[cn == 1 ? 0 : j];
      s->weight_bytes += (size_t)N * sizeof(float);
    } else {
      if (s->values[vc].kind == KILN_VALUE_CONST && !const_data(b, vc))
        return kiln_error_set(b->err, KILN_E_NOMEM, "session: out of memory");
      sp->c_value = vc;
      sp->beta = beta;
      sp->in[2] = vc;
      sp->n_in = 3;
    }
  }
  sp->sparse_ok = sp->b_packed && !sp->trans_a && K >= 32;
  return try_fuse(b, sp);
}

static size_t round_up(size_t n, size_t a);

/* --- quantized ops ------------------------------------------------------------ */

static int is_q8(kiln_dtype t) { return t == KILN_DTYPE_INT8 || t == KILN_DTYPE_UINT8; }
static void q8_range(kiln_dtype t, int32_t *lo, int32_t *hi) {
  *lo = t == KILN_DTYPE_UINT8 ? 0 : -128;
  *hi = t == KILN_DTYPE_UINT8 ? 255 : 127;
}

static kiln_qstep *new_qstep(builder *b, kiln_step *st) {
  st->q = calloc(1, sizeof *st->q);
  if (!st->q) kiln_error_set(b->err, KILN_E_NOMEM, "session: out of memory");
  else st->q->in_azp = st->q->in_bzp = -1;
  return st->q;
}

static int64_t read_int(const kiln_ir_tensor *t, int64_t i) {
  switch (t->dtype) {
    case KILN_DTYPE_UINT8: return ((const uint8_t *)t->data)[i];
    case KILN_DTYPE_INT8: return ((const int8_t *)t->data)[i];
    case KILN_DTYPE_INT32: return ((const int32_t *)t->data)[i];
    case KILN_DTYPE_INT64: return ((const int64_t *)t->data)[i];
    default: return 0;
  }
}

/* Scale (input ks) and optional zero point (input kz) of a quantizing node into q:
 * one scale per tensor, or (when per-axis is allowed) one per element of dim axis of
 * xs (force_axis >= 0: that axis; else the node's "axis" attribute, default 1).
 * Scales must be positive and finite; the zero point has the scale's shape. */
static kiln_status read_qparams(builder *b, const kiln_ir_node *n, int ks, int kz,
                                const kiln_shape *xs, int allow_axis, int force_axis,
                                kiln_qstep *q, kiln_dtype *zp_dt) {
  kiln_status st;
  int vs = -1, vz = -1;
  *zp_dt = KILN_DTYPE_UNDEFINED;
  if ((st = get_input(b, n, ks, 0, &vs))) return st;
  const kiln_rt_value *sv = &b->s->values[vs];
  if (sv->kind != KILN_VALUE_CONST)
    return node_err(b, n, KILN_E_UNSUPPORTED,
                    "scale \"%s\" must be an initializer (kiln fixes quantization parameters at create)",
                    n->inputs[ks]);
  if (sv->dtype != KILN_DTYPE_FLOAT)
    return node_err(b, n, KILN_E_FORMAT, "scale \"%s\" is %s, expected float", n->inputs[ks],
                    kiln_dtype_name(sv->dtype));
  int64_t ns = shape_numel_fixed(&sv->shape);
  q->axis = -1;
  q->n_scale = 1;
  if (ns != 1 || sv->shape.rank > 1) {
    int64_t axis = force_axis;
    /* the default axis 1 means the only axis of a 1-D input (a bias) */
    if (force_axis < 0 && (st = attr_int(b, n, "axis", 0, xs->rank == 1 ? 0 : 1, &axis))) return st;
    if (axis < 0) axis += xs->rank;
    char sh[128];
    shape_str(xs, sh, sizeof sh);
    if (!allow_axis || sv->shape.rank != 1 || axis < 0 || axis >= xs->rank || xs->batch[axis] ||
        xs->d[axis] != ns)
      return node_err(b, n, KILN_E_SHAPE,
                      "scale \"%s\" has %lld elements (rank %d); expected a scalar%s%s (input %s, axis %lld)",
                      n->inputs[ks], (long long)ns, sv->shape.rank,
                      allow_axis ? " or a 1-D tensor the size of dim axis" : "",
                      allow_axis ? "" : " here", sh, (long long)axis);
    q->axis = (int)axis;
    q->n_scale = ns;
  }
  q->scale = malloc((size_t)q->n_scale * sizeof(float));
  q->zp = calloc((size_t)q->n_scale, sizeof(int32_t));
  if (!q->scale || !q->zp) return kiln_error_set(b->err, KILN_E_NOMEM, "session: out of memory");
  const float *sd = sv->init->data;
  for (int64_t i = 0; i < q->n_scale; i++) {
    if (!(sd[i] > 0.0f) || !isfinite(sd[i]))
      return node_err(b, n, KILN_E_INVALID,
                      "scale \"%s\"[%lld] = %g; scales must be positive and finite", n->inputs[ks],
                      (long long)i, (double)sd[i]);
    q->scale[i] = sd[i];
  }
  if (has_input(n, kz)) {
    if ((st = get_input(b, n, kz, 0, &vz))) return st;
    const kiln_rt_value *zv = &b->s->values[vz];
    if (zv->kind != KILN_VALUE_CONST)
      return node_err(b, n, KILN_E_UNSUPPORTED, "zero point \"%s\" must be an initializer",
                      n->inputs[kz]);
    if (!is_q8(zv->dtype) && zv->dtype != KILN_DTYPE_INT32)
      return node_err(b, n, KILN_E_FORMAT, "zero point \"%s\" is %s, expected int8 or uint8",
                      n->inputs[kz], kiln_dtype_name(zv->dtype));
    if (shape_numel_fixed(&zv->shape) != q->n_scale || zv->shape.rank != sv->shape.rank)
      return node_err(b, n, KILN_E_SHAPE,
                      "zero point \"%s\" has %lld elements (rank %d), its scale \"%s\" %lld "
                      "(rank %d): they must have the same shape",
                      n->inputs[kz], (long long)shape_numel_fixed(&zv->shape), zv->shape.rank,
                      n->inputs[ks], (long long)q->n_scale, sv->shape.rank);
    for (int64_t i = 0; i < q->n_scale; i++) q->zp[i] = (int32_t)read_int(zv->init, i);
    *zp_dt = zv->dtype;
  }
  return KILN_OK;
}

static kiln_status build_quantize(builder *b, int ni) {
  const kiln_ir_node *n = &b->nodes[ni];
  int vi = -1, vo = -1;
  kiln_status st;
  if ((st = get_input(b, n, 0, 1, &vi))) return st;
  kiln_step *sp = new_step(b, KILN_OP_QUANTIZE, ni);
  if (!sp) return kiln_error_set(b->err, KILN_E_NOMEM, "session: out of memory");
  kiln_qstep *q = new_qstep(b, sp);
  if (!q) return KILN_E_NOMEM;
  kiln_dtype zdt;
  if ((st = read_qparams(b, n, 1, 2, &b->s->values[vi].shape, b->s->opset >= 13, -1, q, &zdt)))
    return st;
  kiln_dtype odt = zdt == KILN_DTYPE_UNDEFINED ? KILN_DTYPE_UINT8 : zdt;
  if (!is_q8(odt))
    return node_err(b, n, KILN_E_INVALID,
                    "zero point \"%s\" is %s: QuantizeLinear outputs int8 or uint8, so its zero "
                    "point must be one of those", n->inputs[2], kiln_dtype_name(odt));
  q8_range(odt, &q->lo, &q->hi);
  if ((st = add_output(b, n, 0, odt, &b->s->values[vi].shape, &vo))) return st;
  sp->n_in = 1;
  sp->in[0] = vi;
  sp->n_out = 1;
  sp->out[0] = vo;
  return KILN_OK;
}

static kiln_status build_dequantize(builder *b, int ni) {
  const kiln_ir_node *n = &b->nodes[ni];
  int vi = -1, vo = -1;
  kiln_status st;
  if ((st = get_input(b, n, 0, 0, &vi))) return st;
  kiln_dtype xdt = b->s->values[vi].dtype;
  if (!is_q8(xdt) && xdt != KILN_DTYPE_INT32)
    return node_err(b, n, KILN_E_UNSUPPORTED, "input \"%s\" is %s, expected int8, uint8 or int32",
                    n->inputs[0], kiln_dtype_name(xdt));
  kiln_step *sp = new_step(b, KILN_OP_DEQUANTIZE, ni);
  if (!sp) return kiln_error_set(b->err, KILN_E_NOMEM, "session: out of memory");
  kiln_qstep *q = new_qstep(b, sp);
  if (!q) return KILN_E_NOMEM;
  kiln_dtype zdt;
  if ((st = read_qparams(b, n, 1, 2, &b->s->values[vi].shape, b->s->opset >= 13, -1, q, &zdt)))
    return st;
  if (zdt != KILN_DTYPE_UNDEFINED && zdt != xdt)
    return node_err(b, n, KILN_E_INVALID, "zero point \"%s\" is %s but the input \"%s\" is %s",
                    n->inputs[2], kiln_dtype_name(zdt), n->inputs[0], kiln_dtype_name(xdt));
  if (xdt == KILN_DTYPE_INT32)
    for (int64_t i = 0; i < q->n_scale; i++)
      if (q->zp[i] != 0)
        return node_err(b, n, KILN_E_INVALID,
                        "zero point \"%s\"[%lld] = %d is out of range: an int32 input takes zero point 0",
                        n->inputs[2], (long long)i, (int)q->zp[i]);
  if ((st = add_output(b, n, 0, KILN_DTYPE_FLOAT, &b->s->values[vi].shape, &vo))) return st;
  sp->n_in = 1;
  sp->in[0] = vi;
  sp->n_out = 1;
  sp->out[0] = vo;
  return KILN_OK;
}

static kiln_status build_dynquant(builder *b, int ni) {
  const kiln_ir_node *n = &b->nodes[ni];
  int vi = -1, vo[3] = {-1, -1, -1};
  kiln_status st;
  if ((st = get_input(b, n, 0, 1, &vi))) return st;
  kiln_shape scalar;
  memset(&scalar, 0, sizeof scalar);
  if ((st = add_output(b, n, 0, KILN_DTYPE_UINT8, &b->s->values[vi].shape, &vo[0]))) return st;
  int no = 1;
  if (has_output(n, 1)) {
    if ((st = add_output(b, n, 1, KILN_DTYPE_FLOAT, &scalar, &vo[1]))) return st;
    no = 2;
    if (has_output(n, 2)) {
      if ((st = add_output(b, n, 2, KILN_DTYPE_UINT8, &scalar, &vo[2]))) return st;
      no = 3;
    }
  }
  kiln_step *sp = new_step(b, KILN_OP_DYNQUANT, ni);
  if (!sp) return kiln_error_set(b->err, KILN_E_NOMEM, "session: out of memory");
  sp->n_in = 1;
  sp->in[0] = vi;
  sp->n_out = no;
  for (int i = 0; i < no; i++) sp->out[i] = vo[i];
  return KILN_OK;
}

/* A [.., M, K] and a 2-D B [K, N] of a quantized MatMul: K, N and the output shape. */
static kiln_status qmatmul_shapes(builder *b, const kiln_ir_node *n, int va, int vb, int64_t *K,
                                  int64_t *N, kiln_shape *out) {
  const kiln_shape *as = &b->s->values[va].shape, *bs = &b->s->values[vb].shape;
  char sa[128], sb[128];
  shape_str(as, sa, sizeof sa);
  shape_str(bs, sb, sizeof sb);
  if (bs->rank != 2 || bs->batch[0] || bs->batch[1])
    return node_err(b, n, KILN_E_UNSUPPORTED, "B %s must be a 2-D matrix of fixed size", sb);
  if (as->rank < 1 || as->batch[as->rank - 1] || as->d[as->rank - 1] != bs->d[0])
    return node_err(b, n, KILN_E_SHAPE, "A %s and B %s: A's last dim must be K = %lld", sa, sb,
                    (long long)bs->d[0]);
  *K = bs->d[0];
  *N = bs->d[1];
  *out = *as;
  out->d[out->rank - 1] = *N;
  return KILN_OK;
}

/* The common start of MatMulInteger (B at input 1, named "A"/"B" in errors) and
 * QLinearMatMul (b at input 3, "a"/"b"): the two int8/uint8 operands, K, N, the output
 * shape, and a new step of `op` with its qstep. */
static kiln_status begin_qmatmul(builder *b, int ni, kiln_op op, int b_input, int *va, int *vb,
                                 int64_t *K, int64_t *N, kiln_shape *out, kiln_step **sp,
                                 kiln_qstep **q) {
  const kiln_ir_node *n = &b->nodes[ni];
  kiln_status st;
  if ((st = get_input(b, n, 0, 0, va)) || (st = get_input(b, n, b_input, 0, vb))) return st;
  kiln_dtype adt = b->s->values[*va].dtype, bdt = b->s->values[*vb].dtype;
  int upper = b_input == 1;
  if (!is_q8(adt) || !is_q8(bdt))
    return node_err(b, n, KILN_E_UNSUPPORTED, "%s is %s and %s is %s; expected int8 or uint8",
                    upper ? "A" : "a", kiln_dtype_name(adt), upper ? "B" : "b",
                    kiln_dtype_name(bdt));
  if ((st = qmatmul_shapes(b, n, *va, *vb, K, N, out))) return st;
  if (!(*sp = new_step(b, op, ni)))
    return kiln_error_set(b->err, KILN_E_NOMEM, "session: out of memory");
  if (!(*q = new_qstep(b, *sp))) return KILN_E_NOMEM;
  return KILN_OK;
}

static kiln_status build_matmul_integer(builder *b, int ni) {
  const kiln_ir_node *n = &b->nodes[ni];
  int va = -1, vb = -1, vo = -1;
  int64_t K = 0, N = 0;
  kiln_shape out;
  kiln_step *sp;
  kiln_qstep *q = NULL;
  kiln_status st =
      begin_qmatmul(b, ni, KILN_OP_MATMUL_INTEGER, 1, &va, &vb, &K, &N, &out, &sp, &q);
  if (st) return st;
  kiln_dtype adt = b->s->values[va].dtype, bdt = b->s->values[vb].dtype;
  q->K = K;
  q->N = N;
  sp->n_in = 2;
  sp->in[0] = va;
  sp->in[1] = vb;
  for (int k = 2; k < 4; k++) {
    if (!has_input(n, k)) continue;
    int vz = -1;
    if ((st = get_input(b, n, k, 0, &vz))) return st;
    const kiln_rt_value *zv = &b->s->values[vz];
    int64_t zn = 1;
    for (int i = 0; i < zv->shape.rank; i++) zn *= zv->shape.batch[i] ? -1 : zv->shape.d[i];
    kiln_dtype want = k == 2 ? adt : bdt;
    if (zv->dtype != want || !(zn == 1 || (k == 3 && zn == N)))
      return node_err(b, n, KILN_E_UNSUPPORTED,
                      "zero point \"%s\" must be a %s scalar%s (got %s with %lld elements)",
                      n->inputs[k], kiln_dtype_name(want), k == 3 ? " or one per column" : "",
                      kiln_dtype_name(zv->dtype), (long long)zn);
    if (k == 2) q->in_azp = sp->n_in;
    else q->in_bzp = sp->n_in;
    sp->in[sp->n_in++] = vz;
  }
  if ((st = add_output(b, n, 0, KILN_DTYPE_INT32, &out, &vo))) return st;
  sp->n_out = 1;
  sp->out[0] = vo;
  return KILN_OK;
}

static kiln_status build_qlinear_matmul(builder *b, int ni) {
  const kiln_ir_node *n = &b->nodes[ni];
  int va = -1, vb = -1, vo = -1;
  int64_t K = 0, N = 0;
  kiln_shape out;
  kiln_step *sp;
  kiln_qstep *q = NULL;
  kiln_status st =
      begin_qmatmul(b, ni, KILN_OP_QLINEAR_MATMUL, 3, &va, &vb, &K, &N, &out, &sp, &q);
  if (st) return st;
  kiln_dtype adt = b->s->values[va].dtype, bdt = b->s->values[vb].dtype;
  kiln_qstep qa, qb, qy;
  memset(&qa, 0, sizeof qa);
  memset(&qb, 0, sizeof qb);
  memset(&qy, 0, sizeof qy);
  kiln_dtype za, zb, zy;
  kiln_shape none;
  memset(&none, 0, sizeof none);
  if (!(st = read_qparams(b, n, 1, 2, &none, 0, -1, &qa, &za)) &&
      !(st = read_qparams(b, n, 4, 5, &b->s->values[vb].shape, 1, 1, &qb, &zb)) &&
      !(st = read_qparams(b, n, 6, 7, &none, 0, -1, &qy, &zy))) {
    if ((za != KILN_DTYPE_UNDEFINED && za != adt) || (zb != KILN_DTYPE_UNDEFINED && zb != bdt))
      st = node_err(b, n, KILN_E_INVALID, "the zero points' types must match a (%s) and b (%s)",
                    kiln_dtype_name(adt), kiln_dtype_name(bdt));
    kiln_dtype ydt = zy == KILN_DTYPE_UNDEFINED ? KILN_DTYPE_UINT8 : zy;
    if (!st && !is_q8(ydt))
      st = node_err(b, n, KILN_E_INVALID, "y_zero_point is %s, expected int8 or uint8",
                    kiln_dtype_name(ydt));
    if (!st) {
      q->K = K;
      q->N = N;
      q->x_unsigned = adt == KILN_DTYPE_UINT8;
      q->b_unsigned = bdt == KILN_DTYPE_UINT8;
      q->y_unsigned = ydt == KILN_DTYPE_UINT8;
      q->zp_x = qa.zp[0];
      q->zp_y = qy.zp[0];
      q8_range(ydt, &q->lo, &q->hi);
      q->mult = malloc((size_t)(N ? N : 1) * sizeof(int32_t));
      q->shift = malloc((size_t)(N ? N : 1) * sizeof(int32_t));
      q->zp_b = malloc((size_t)(N ? N : 1) * sizeof(int32_t));
      if (!q->mult || !q->shift || !q->zp_b)
        st = kiln_error_set(b->err, KILN_E_NOMEM, "session: out of memory");
      for (int64_t j = 0; !st && j < N; j++) {
        int64_t c = qb.n_scale == 1 ? 0 : j;
        int sh;
        kiln_q_multiplier((double)qa.scale[0] * (double)qb.scale[c] / (double)qy.scale[0],
                          &q->mult[j], &sh);
        q->shift[j] = sh;
        q->zp_b[j] = qb.zp[c];
      }
      if (!st) st = add_output(b, n, 0, ydt, &out, &vo);
    }
  }
  free(qa.scale); free(qa.zp); free(qb.scale); free(qb.zp); free(qy.scale); free(qy.zp);
  if (st) return st;
  sp->n_in = 2;
  sp->in[0] = va;
  sp->in[1] = vb;
  sp->n_out = 1;
  sp->out[0] = vo;
  return KILN_OK;
}

/* --- the fused int8 path ---------------------------------------------------------
 *
 * Recognised at create, for each Gemm / MatMul node G (default domain):
 *
 *   x_q ─► DequantizeLinear(s_x, zp_x) ─┐            x_q: int8/uint8, a graph input or
 *                                       ├─► G ──►    a QuantizeLinear's output (e.g. the
 *   W (int8 initializer)                │            previous fused layer's)
 *     ─► DequantizeLinear(s_w, 0) ──────┘
 *        s_w: scalar, or per output channel (axis 1 of a [K, N] W; axis 0 with transB=1)
 *
 *   bias: Gemm's C, or for MatMul a following Add, either a float initializer [N] (or
 *         [1, N]) or DequantizeLinear(int32 initializer [N], s_b, 0) (s_b ~ s_x * s_w)
 *   ──► [Relu] ──► QuantizeLinear(s_y, zp_y) ──► y_q (int8/uint8)
 *   or, when no QuantizeLinear follows (a last layer before Softmax or the output):
 *   ──► [Relu] ──► y (float) = act((float)(x_q W - zp_x colsum) * (float)(s_x s_w) + bias)
 *
 * Gemm needs transA=0, alpha=1, beta=1; scales are positive scalars (s_w: [N] too),
 * every intermediate has exactly one consumer and is not a graph output, K <= 32768.
 * The chain becomes one QGEMM step: y_q = requant(x_q W + bias) (qgemm.h), reading x_q
 * and writing y_q as int8, so consecutive layers hand int8 to each other; the
 * DequantizeLinear of x_q is dropped when the Gemm is its only reader, or when every
 * reader is such a fused Gemm (two heads on one hidden layer). What is left
 * (the first QuantizeLinear, the last DequantizeLinear to a float output or Softmax)
 * runs as its own step, and anything else runs op by op. */

typedef struct qpat {
  int active;
  int dqx, dqw, dqb, add, relu, q; /* node indices (-1: none) */
  int qin;                         /* the QuantizeLinear of a float input, fused (-1: none) */
  double sq;                       /* its scale */
  int32_t zp_q;                    /* and zero point */
  int out_node;                    /* the node whose output 0 the step defines */
  kiln_dtype x_dt, y_dt;
  double sx, sy;
  int32_t zp_x, zp_y;
  const kiln_ir_tensor *w, *ws;
  int trans_b;
  int64_t K, N;
  const kiln_ir_tensor *bias_f, *bias_i, *bias_s;
} qpat;

static int producer(const builder *b, const char *name) {
  for (int i = 0; i < b->n_nodes; i++)
    for (int k = 0; k < b->nodes[i].n_outputs; k++)
      if (strcmp(b->nodes[i].outputs[k], name) == 0) return i;
  return -1;
}

static const kiln_ir_tensor *init_of(const builder *b, const char *name) {
  int v = val_find(b->s, name);
  return v >= 0 && b->s->values[v].kind == KILN_VALUE_CONST ? b->s->values[v].init : NULL;
}

static int node_is(const builder *b, int i, const char *op) {
  return i >= 0 && !b->nodes[i].domain[0] && strcmp(b->nodes[i].op_type, op) == 0;
}

static int pos_scalar(const kiln_ir_tensor *t, double *v) {
  if (!t || t->dtype != KILN_DTYPE_FLOAT || kiln_ir_tensor_numel(t) != 1) return 0;
  float f = ((const float *)t->data)[0];
  *v = f;
  return f > 0.0f && isfinite(f);
}

/* Positive finite float scales, count 1 or n. */
static int pos_scales(const kiln_ir_tensor *t, int64_t n) {
  if (!t || t->dtype != KILN_DTYPE_FLOAT || t->rank > 1) return 0;
  int64_t c = kiln_ir_tensor_numel(t);
  if (c != 1 && c != n) return 0;
  for (int64_t i = 0; i < c; i++) {
    float f = ((const float *)t->data)[i];
    if (!(f > 0.0f) || !isfinite(f)) return 0;
  }
  return 1;
}

static int zero_zp(const builder *b, const kiln_ir_node *dq, kiln_dtype dt, int64_t count) {
  if (!has_input(dq, 2)) return 1;
  const kiln_ir_tensor *z = init_of(b, dq->inputs[2]);
  if (!z || z->dtype != dt || kiln_ir_tensor_numel(z) != count) return 0;
  for (int64_t i = 0; i < count; i++)
    if (read_int(z, i)) return 0;
  return 1;
}

static int single_use(const builder *b, const char *name) {
  int out;
  return count_consumers(b, name, &out) == 1 && !out;
}

/* Scalar zero point of a DequantizeLinear/QuantizeLinear (input 2) and its type. */
static int zp_of(const builder *b, const kiln_ir_node *n, int32_t *zp, kiln_dtype *dt) {
  *zp = 0;
  *dt = KILN_DTYPE_UNDEFINED;
  if (!has_input(n, 2)) return 1;
  const kiln_ir_tensor *z = init_of(b, n->inputs[2]);
  if (!z || !is_q8(z->dtype) || kiln_ir_tensor_numel(z) != 1) return 0;
  *zp = (int32_t)read_int(z, 0);
  *dt = z->dtype;
  return 1;
}

/* The dtype of an int8 edge: a graph input's, or a QuantizeLinear's output type. */
static kiln_dtype q_edge_dtype(const builder *b, const char *name) {
  int v = val_find(b->s, name);
  if (v >= 0) return b->s->values[v].kind == KILN_VALUE_INPUT ? b->s->values[v].dtype : KILN_DTYPE_UNDEFINED;
  int p = producer(b, name);
  if (!node_is(b, p, "QuantizeLinear")) return KILN_DTYPE_UNDEFINED;
  int32_t zp;
  kiln_dtype dt;
  if (!zp_of(b, &b->nodes[p], &zp, &dt)) return KILN_DTYPE_UNDEFINED;
  return dt == KILN_DTYPE_UNDEFINED ? KILN_DTYPE_UINT8 : dt;
}

static int match_qgemm(const builder *b, int gi, qpat *p) {
  const kiln_ir_node *n = &b->nodes[gi];
  memset(p, 0, sizeof *p);
  p->dqx = p->dqw = p->dqb = p->add = p->relu = p->q = p->qin = -1;
  int is_mm = node_is(b, gi, "MatMul");
  if (!is_mm && !node_is(b, gi, "Gemm")) return 0;
  if (n->n_inputs < 2 || !has_output(n, 0)) return 0;
  if (!is_mm) {
    const kiln_ir_attr *a;
    if ((a = kiln_ir_node_attr(n, "transA")) && (a->type != KILN_ATTR_INT || a->i != 0)) return 0;
    if ((a = kiln_ir_node_attr(n, "transB")))
      if (a->type != KILN_ATTR_INT || (a->i != 0 && a->i != 1)) return 0;
    p->trans_b = a ? (int)a->i : 0;
    if ((a = kiln_ir_node_attr(n, "alpha")) && (a->type != KILN_ATTR_FLOAT || a->f != 1.0f)) return 0;
    if ((a = kiln_ir_node_attr(n, "beta")) && (a->type != KILN_ATTR_FLOAT || a->f != 1.0f)) return 0;
  }
  /* x_q -> DequantizeLinear */
  p->dqx = producer(b, n->inputs[0]);
  if (!node_is(b, p->dqx, "DequantizeLinear")) return 0;
  const kiln_ir_node *dqx = &b->nodes[p->dqx];
  kiln_dtype zdt;
  if (dqx->n_inputs < 2 || !pos_scalar(init_of(b, dqx->inputs[1]), &p->sx) ||
      !zp_of(b, dqx, &p->zp_x, &zdt))
    return 0;
  p->x_dt = q_edge_dtype(b, dqx->inputs[0]);
  if (!is_q8(p->x_dt) || (zdt != KILN_DTYPE_UNDEFINED && zdt != p->x_dt)) return 0;
  /* W -> DequantizeLinear (per tensor or per output channel, zero point 0) */
  p->dqw = producer(b, n->inputs[1]);
  if (!node_is(b, p->dqw, "DequantizeLinear") || !single_use(b, n->inputs[1])) return 0;
  const kiln_ir_node *dqw = &b->nodes[p->dqw];
  if (dqw->n_inputs < 2) return 0;
  p->w = init_of(b, dqw->inputs[0]);
  if (!p->w || p->w->dtype != KILN_DTYPE_INT8 || p->w->rank != 2) return 0;
  p->K = p->w->dims[p->trans_b ? 1 : 0];
  p->N = p->w->dims[p->trans_b ? 0 : 1];
  if (p->K < 1 || p->K > KILN_QGEMM_MAX_K || p->N < 1) return 0;
  p->ws = init_of(b, dqw->inputs[1]);
  if (!pos_scales(p->ws, p->N)) return 0;
  int64_t nws = kiln_ir_tensor_numel(p->ws);
  if (nws != 1 || p->ws->rank == 1) {
    const kiln_ir_attr *a = kiln_ir_node_attr(dqw, "axis");
    int64_t axis = a && a->type == KILN_ATTR_INT ? a->i : 1;
    if (axis < 0) axis += 2;
    if (nws != p->N || axis != (p->trans_b ? 0 : 1)) return 0;
  }
  if (!zero_zp(b, dqw, KILN_DTYPE_INT8, nws)) return 0;
  /* bias */
  const char *cur = n->outputs[0], *bias = NULL;
  if (!is_mm && has_input(n, 2)) bias = n->inputs[2];
  if (is_mm && single_use(b, cur)) {
    int c = sole_consumer(b, cur);
    if (node_is(b, c, "Add") && b->nodes[c].n_inputs == 2 && has_output(&b->nodes[c], 0)) {
      const kiln_ir_node *an = &b->nodes[c];
      bias = strcmp(an->inputs[0], cur) == 0 ? an->inputs[1] : an->inputs[0];
      p->add = c;
      cur = an->outputs[0];
    }
  }
  if (bias) {
    const kiln_ir_tensor *t = init_of(b, bias);
    int pb = producer(b, bias);
    if (t) {
      if (t->dtype != KILN_DTYPE_FLOAT || kiln_ir_tensor_numel(t) != p->N || t->rank < 1 ||
          t->rank > 2 || t->dims[t->rank - 1] != p->N)
        return 0;
      p->bias_f = t;
    } else if (node_is(b, pb, "DequantizeLinear") && single_use(b, bias)) {
      const kiln_ir_node *dqb = &b->nodes[pb];
      if (dqb->n_inputs < 2) return 0;
      p->bias_i = init_of(b, dqb->inputs[0]);
      p->bias_s = init_of(b, dqb->inputs[1]);
      if (!p->bias_i || p->bias_i->dtype != KILN_DTYPE_INT32 || p->bias_i->rank != 1 ||
          p->bias_i->dims[0] != p->N || !pos_scales(p->bias_s, p->N) ||
          !zero_zp(b, dqb, KILN_DTYPE_INT32, kiln_ir_tensor_numel(p->bias_s)))
        return 0;
      p->dqb = pb;
    } else {
      return 0;
    }
  }
  /* [Relu] -> QuantizeLinear, or else a float output (a last layer) */
  p->out_node = p->add >= 0 ? p->add : gi;
  int c = single_use(b, cur) ? sole_consumer(b, cur) : -1;
  if (c >= 0 && node_is(b, c, "Relu") && b->nodes[c].n_inputs == 1 && has_output(&b->nodes[c], 0)) {
    p->relu = c;
    p->out_node = c;
    cur = b->nodes[c].outputs[0];
    c = single_use(b, cur) ? sole_consumer(b, cur) : -1;
  }
  const kiln_ir_node *qn = c >= 0 ? &b->nodes[c] : NULL;
  if (qn && node_is(b, c, "QuantizeLinear") && qn->n_inputs >= 2 &&
      strcmp(qn->inputs[0], cur) == 0 && has_output(qn, 0) &&
      pos_scalar(init_of(b, qn->inputs[1]), &p->sy) && zp_of(b, qn, &p->zp_y, &p->y_dt)) {
    if (p->y_dt == KILN_DTYPE_UNDEFINED) p->y_dt = KILN_DTYPE_UINT8;
    p->q = c;
    p->out_node = c;
  } else {
    p->y_dt = KILN_DTYPE_FLOAT;
  }
  /* x_q made by a per-tensor QuantizeLinear of a float tensor, read by this layer alone:
   * the layer quantizes its float input itself while packing it (find_qgemms decides) */
  int qi = producer(b, dqx->inputs[0]);
  if (node_is(b, qi, "QuantizeLinear") && b->nodes[qi].n_inputs >= 2 &&
      single_use(b, dqx->inputs[0]) && pos_scalar(init_of(b, b->nodes[qi].inputs[1]), &p->sq)) {
    int v = val_find(b->s, b->nodes[qi].inputs[0]);
    int32_t zq;
    kiln_dtype zqt;
    if ((v < 0 || b->s->values[v].dtype == KILN_DTYPE_FLOAT) && zp_of(b, &b->nodes[qi], &zq, &zqt)) {
      p->qin = qi;
      p->zp_q = zq;
    }
  }
  p->active = 1;
  return 1;
}

/* Finds every fusable chain and marks the nodes it absorbs. */
static void find_qgemms(builder *b) {
  for (int i = 0; i < b->n_nodes; i++) {
    qpat *p = &b->qp[i];
    if (b->fused[i] || !match_qgemm(b, i, p)) continue;
    if (single_use(b, b->nodes[i].inputs[0])) {
      b->fused[p->dqx] = 1;
      if (p->qin >= 0 && !b->fused[p->qin]) b->fused[p->qin] = 1;
      else p->qin = -1;
    } else {
      p->qin = -1;
    }
    b->fused[p->dqw] = 1;
    if (p->dqb >= 0) b->fused[p->dqb] = 1;
    if (p->add >= 0) b->fused[p->add] = 1;
    if (p->relu >= 0) b->fused[p->relu] = 1;
    if (p->q >= 0) b->fused[p->q] = 1;
  }
  /* A DequantizeLinear of x_q read by several Gemms (a hidden layer read by two heads)
   * goes too when every reader is a fused QGEMM reading x_q through it and its output is
   * not a graph output: nothing would read what it computes. */
  for (int i = 0; i < b->n_nodes; i++) {
    const qpat *p = &b->qp[i];
    if (!p->active || b->fused[i] || b->fused[p->dqx]) continue;
    const char *xf = b->nodes[i].inputs[0];
    int is_out, all = 1;
    count_consumers(b, xf, &is_out);
    for (int j = 0; j < b->n_nodes && all && !is_out; j++)
      for (int k = 0; k < b->nodes[j].n_inputs; k++)
        if (strcmp(b->nodes[j].inputs[k], xf) == 0 &&
            (k != 0 || b->fused[j] || !b->qp[j].active || b->qp[j].dqx != p->dqx))
          all = 0;
    if (all && !is_out) b->fused[p->dqx] = 1;
  }
}

static kiln_status build_qgemm(builder *b, int ni) {
  const kiln_ir_node *n = &b->nodes[ni];
  const qpat *p = &b->qp[ni];
  kiln_session *s = b->s;
  kiln_status st;
  const char *xq = p->qin >= 0 ? b->nodes[p->qin].inputs[0] : b->nodes[p->dqx].inputs[0];
  kiln_dtype xdt = p->qin >= 0 ? KILN_DTYPE_FLOAT : p->x_dt;
  int va = val_find(s, xq), vo = -1;
  if (va < 0 || s->values[va].dtype != xdt)
    return node_err(b, n, KILN_E_FORMAT, "%s input \"%s\" is missing or not %s",
                    p->qin >= 0 ? "the float" : "quantized", xq, kiln_dtype_name(xdt));
  kiln_shape out = s->values[va].shape;
  char sa[128];
  shape_str(&out, sa, sizeof sa);
  int is_mm = strcmp(n->op_type, "MatMul") == 0;
  if ((!is_mm && out.rank != 2) || out.rank < 1 || out.batch[out.rank - 1] ||
      out.d[out.rank - 1] != p->K)
    return node_err(b, n, KILN_E_SHAPE, "A %s: expected %s last dim K = %lld (the weights' K)", sa,
                    is_mm ? "a" : "a 2-D A with", (long long)p->K);
  out.d[out.rank - 1] = p->N;
  int64_t K = p->K, N = p->N;
  kiln_step *sp = new_step(b, KILN_OP_QGEMM, ni);
  if (!sp) return kiln_error_set(b->err, KILN_E_NOMEM, "session: out of memory");
  kiln_qstep *q = new_qstep(b, sp);
  if (!q) return KILN_E_NOMEM;
  q->K = K;
  q->N = N;
  q->x_unsigned = p->x_dt == KILN_DTYPE_UINT8;
  q->y_unsigned = p->y_dt == KILN_DTYPE_UINT8;
  q->y_float = p->q < 0;
  q->yf_relu = q->y_float && p->relu >= 0;
  q->zp_x = p->zp_x;
  q->zp_y = p->zp_y;
  q->x_float = p->qin >= 0;
  q->xf_scale = (float)p->sq;
  q->xf_zp = p->zp_q;
  q8_range(p->y_dt, &q->lo, &q->hi);
  if (p->relu >= 0 && q->zp_y > q->lo) q->lo = q->zp_y; /* ReLU = clamp at zp_y */
  if (q->y_float) {
    q->yf_scale = malloc((size_t)N * sizeof(float));
    q->yf_bias = calloc((size_t)N, sizeof(float));
    if (!q->yf_scale || !q->yf_bias)
      return kiln_error_set(b->err, KILN_E_NOMEM, "session: out of memory");
  }
  size_t pbytes = kiln_qgemm_packed_bytes(K, N);
  q->pb = aligned_alloc(KILN_ARENA_ALIGN, round_up(pbytes + 1, KILN_ARENA_ALIGN));
  q->bias = malloc((size_t)N * sizeof(int64_t));
  q->mult = malloc((size_t)N * sizeof(int32_t));
  q->shift = malloc((size_t)N * sizeof(int32_t));
  int64_t *bias_q = malloc((size_t)N * sizeof(int64_t));
  int32_t *colsum = malloc((size_t)N * sizeof(int32_t));
  if (!q->pb || !q->bias || !q->mult || !q->shift || !bias_q || !colsum) {
    free(bias_q);
    free(colsum);
    return kiln_error_set(b->err, KILN_E_NOMEM, "session: out of memory packing int8 weights");
  }
  const float *sw = p->ws->data;
  int64_t nws = kiln_ir_tensor_numel(p->ws);
  for (int64_t j = 0; j < N; j++) {
    double swj = sw[nws == 1 ? 0 : j], sxw = p->sx * swj;
    int sh = 0;
    if (q->y_float) { /* dequantize in the epilogue; the bias stays float */
      q->mult[j] = 0;
      q->yf_scale[j] = (float)sxw;
      if (p->bias_f) q->yf_bias[j] = ((const float *)p->bias_f->data)[j];
      if (p->bias_i) /* what its DequantizeLinear computes */
        q->yf_bias[j] = (float)((const int32_t *)p->bias_i->data)[j] *
                        ((const float *)p->bias_s->data)[kiln_ir_tensor_numel(p->bias_s) == 1 ? 0 : j];
      q->shift[j] = 0;
      bias_q[j] = 0;
      continue;
    }
    kiln_q_multiplier(sxw / p->sy, &q->mult[j], &sh);
    q->shift[j] = sh;
    double bq = 0.0;
    if (p->bias_f) bq = (double)((const float *)p->bias_f->data)[j] / sxw;
    else if (p->bias_i) {
      int64_t nbs = kiln_ir_tensor_numel(p->bias_s);
      bq = (double)((const int32_t *)p->bias_i->data)[j] *
           (double)((const float *)p->bias_s->data)[nbs == 1 ? 0 : j] / sxw;
    }
    bq = nearbyint(bq); /* half to even */
    if (!(bq > -1e12)) bq = -1e12; /* also NaN: far below any accumulator */
    if (bq > 1e12) bq = 1e12;
    bias_q[j] = (int64_t)bq;
  }
  const int8_t *w = p->w->data;
  if (p->trans_b) kiln_qgemm_pack(K, N, w, 1, K, q->pb, colsum);
  else kiln_qgemm_pack(K, N, w, N, 1, q->pb, colsum);
  kiln_qgemm_bias(s->qkern, q->x_unsigned, N, bias_q, q->zp_x, colsum, q->bias);
  free(bias_q);
  free(colsum);
  /* block-sparse weights (kiln_prune's 4 x 16 blocks are the packed groups): only the
   * non-zero groups are kept and multiplied, on a path with a sparse tile */
  if (s->qkern->stile && kiln_qgemm_zero_groups(K, N, q->pb) >= KILN_QGEMM_SPARSE_MIN) {
    if (kiln_qgemm_sparsify(K, N, q->pb, &q->sp))
      return kiln_error_set(b->err, KILN_E_NOMEM, "session: out of memory packing int8 weights");
    q->has_sp = 1;
    free(q->pb);
    q->pb = NULL;
    pbytes = (size_t)q->sp.groups * 4 * KILN_QGEMM_NR + (size_t)q->sp.groups * sizeof(int32_t) +
             (size_t)((N + KILN_QGEMM_NR - 1) / KILN_QGEMM_NR + 1) * sizeof(int64_t);
  }
  s->weight_bytes += pbytes + (size_t)N * (sizeof(int64_t) + 2 * sizeof(int32_t));
  if (K > s->max_qk) s->max_qk = K;
  if ((st = add_output(b, &b->nodes[p->out_node], 0, p->y_dt, &out, &vo))) return st;
  sp->n_in = 1;
  sp->in[0] = va;
  sp->n_out = 1;
  sp->out[0] = vo;
  return KILN_OK;
}

static int op_is(const kiln_ir_node *n, const char *op) { return strcmp(n->op_type, op) == 0; }

static kiln_status build_node(builder *b, int ni) {
  const kiln_ir_node *n = &b->nodes[ni];
  if (n->domain[0] && strcmp(n->domain, "ai.onnx") != 0)
    return node_err(b, n, KILN_E_UNSUPPORTED, "domain \"%s\" is not supported (only the default ONNX domain)",
                    n->domain);
  if (op_is(n, "Gemm") || op_is(n, "MatMul")) return build_gemm_like(b, ni);
  if (op_is(n, "Add")) return build_binary(b, ni, KILN_OP_ADD);
  if (op_is(n, "Sub")) return build_binary(b, ni, KILN_OP_SUB);
  if (op_is(n, "Mul")) return build_binary(b, ni, KILN_OP_MUL);
  if (op_is(n, "Div")) return build_binary(b, ni, KILN_OP_DIV);
  if (op_is(n, "Relu")) return build_unary(b, ni, KILN_OP_RELU);
  if (op_is(n, "LeakyRelu")) return build_unary(b, ni, KILN_OP_LEAKY_RELU);
  if (op_is(n, "Sigmoid")) return build_unary(b, ni, KILN_OP_SIGMOID);
  if (op_is(n, "Tanh")) return build_unary(b, ni, KILN_OP_TANH);
  if (op_is(n, "Sqrt")) return build_unary(b, ni, KILN_OP_SQRT);
  if (op_is(n, "Reciprocal")) return build_unary(b, ni, KILN_OP_RECIPROCAL);
  if (op_is(n, "ReduceMean")) return build_reduce_mean(b, ni);
  if (op_is(n, "Softmax")) return build_softmax(b, ni, KILN_OP_SOFTMAX);
  if (op_is(n, "LogSoftmax")) return build_softmax(b, ni, KILN_OP_LOG_SOFTMAX);
  if (op_is(n, "Concat")) return build_concat(b, ni);
  if (op_is(n, "Flatten")) return build_flatten(b, ni);
  if (op_is(n, "Reshape")) return build_reshape(b, ni);
  if (op_is(n, "Identity")) return build_identity(b, ni);
  if (op_is(n, "Dropout")) return build_dropout(b, ni);
  if (op_is(n, "Cast")) return build_cast(b, ni);
  if (op_is(n, "QuantizeLinear")) return build_quantize(b, ni);
  if (op_is(n, "DequantizeLinear")) return build_dequantize(b, ni);
  if (op_is(n, "DynamicQuantizeLinear")) return build_dynquant(b, ni);
  if (op_is(n, "MatMulInteger")) return build_matmul_integer(b, ni);
  if (op_is(n, "QLinearMatMul")) return build_qlinear_matmul(b, ni);
  return node_err(b, n, KILN_E_UNSUPPORTED,
                  "op %s is not supported by the kiln runtime (supported: Gemm, MatMul, Add, Sub, "
                  "Mul, Div, Relu, LeakyRelu, Sigmoid, Tanh, Softmax, LogSoftmax, Concat, Flatten, "
                  "Reshape, Identity, Dropout, Cast, QuantizeLinear, DequantizeLinear, "
                  "DynamicQuantizeLinear, MatMulInteger, QLinearMatMul)", n->op_type);
}

/* --- memory plan -------------------------------------------------------------- */

static size_t round_up(size_t n, size_t a) {
  return (n + a - 1) / a * a; }

/* First-fit offsets for TEMP values by lifetime; returns the arena size. */
static kiln_status plan_memory(builder *b, size_t *total) {
  kiln_session *s = b->s;
  for (int v = 0; v < s->n_values; v++) {
    kiln_rt_value *val = &s->values[v];
    if (val->kind != KILN_VALUE_TEMP) continue;
    int is_out;
    count_consumers(b, val->name, &is_out);
    val->is_output = is_out;
    if (is_out) val->last_step = s->n_steps;
    int64_t dims[KILN_IR_MAX_RANK];
    int64_t numel = kiln_shape_eval(&val->shape, s->max_batch, dims);
    size_t es = kiln_dtype_size(val->dtype);
    if (numel < 0 || (numel > 0 && (size_t)numel > ((size_t)-1 / 4) / es))
      return kiln_error_set(b->err, KILN_E_SHAPE, "value \"%s\": size overflows", val->name);
    val->bytes = round_up((size_t)numel * es, KILN_ARENA_ALIGN);
    if (val->bytes == 0) val->bytes = KILN_ARENA_ALIGN;
  }
  size_t top = 0;
  /* Values in order of definition; each goes at the lowest offset free of every
   * already-placed value whose lifetime overlaps. */
  for (int step = 0; step < s->n_steps; step++)
    for (int o = 0; o < s->steps[step].n_out; o++) {
      kiln_rt_value *val = &s->values[s->steps[step].out[o]];
      size_t off = 0;
      for (;;) {
        int moved = 0;
        for (int w = 0; w < s->n_values; w++) {
          kiln_rt_value *p = &s->values[w];
          if (p == val || p->kind != KILN_VALUE_TEMP || p->def_step < 0 || p->offset == (size_t)-1)
            continue;
          if (p->def_step > step || (p->def_step == step && p >= val)) continue; /* not placed yet */
          int live = !(p->last_step < val->def_step || val->last_step < p->def_step);
          if (live && off < p->offset + p->bytes && p->offset < off + val->bytes) {
            off = p->offset + p->bytes;
            moved = 1;
          }
        }
        if (!moved) break;
      }
      val->offset = off;
      if (off + val->bytes > top) top = off + val->bytes;
    }
  *total = top ? top : KILN_ARENA_ALIGN;
  return KILN_OK;
}

/* --- create ------------------------------------------------------------------- */

static kiln_status copy_value(kiln_ir_value *dst, const kiln_ir_value *src) {
  memset(dst, 0, sizeof *dst);
  dst->name = strdup(src->name);
  dst->dtype = src->dtype;
  dst->rank = src->rank;
  if (!dst->name) return KILN_E_NOMEM;
  for (int i = 0; i < src->rank && i < KILN_IR_MAX_RANK; i++) {
    dst->dims[i].value = src->dims[i].value;
    if (src->dims[i].param && !(dst->dims[i].param = strdup(src->dims[i].param)))
      return KILN_E_NOMEM;
  }
  return KILN_OK;
}

static void free_value(kiln_ir_value *v) {
  free(v->name);
  for (int i = 0; i < KILN_IR_MAX_RANK; i++) free(v->dims[i].param);
}

void kiln_session_free(kiln_session *s) {
  if (!s) return;
  if (s->has_pool) kiln_pool_destroy(&s->pool);
  for (int i = 0; i < s->n_values; i++) {
    free(s->values[i].name);
    free(s->values[i].data);
  }
  free(s->values);
  free(s->ptr);
  for (int i = 0; i < s->n_steps; i++) {
    free(s->steps[i].bp);
    free(s->steps[i].bias);
    kiln_qstep *q = s->steps[i].q;
    if (q) {
      free(q->scale); free(q->zp); free(q->pb); free(q->bias); free(q->mult); free(q->shift);
      kiln_qgemm_sparse_free(&q->sp);
      free(q->zp_b); free(q->yf_scale); free(q->yf_bias);
      free(q);
    }
  }
  free(s->steps);
  for (int i = 0; i < s->n_inputs && s->inputs; i++) free_value(&s->inputs[i]);
  for (int i = 0; i < s->n_outputs && s->outputs; i++) free_value(&s->outputs[i]);
  free(s->inputs);
  free(s->outputs);
  free(s->input_val);
  free(s->output_val);
  free(s->arena_alloc);
  free(s->scratch_b);
  for (int t = 0; t < s->threads; t++) {
    if (s->ws) free(s->ws[t]);
    if (s->nz_idx) free(s->nz_idx[t]);
    if (s->nz_val) free(s->nz_val[t]);
    if (s->marks) free(s->marks[t]);
    if (s->qws) free(s->qws[t]);
  }
  free(s->qws);
  free(s->ws);
  free(s->nz_idx);
  free(s->nz_val);
  free(s->marks);
  free(s->mark_gen);
  if (s->node_names)
    for (int i = 0; i < s->n_steps; i++) free(s->node_names[i]);
  free(s->node_names);
  free(s);
}

static kiln_status check_options(const kiln_session_options *o, kiln_error *err) {
  if (o->max_batch < 1)
    return kiln_error_set(err, KILN_E_INVALID, "session options: max_batch=%lld must be >= 1",
                          (long long)o->max_batch);
  if (o->threads < 1 || o->threads > 256)
    return kiln_error_set(err, KILN_E_INVALID, "session options: threads=%d must be in 1..256",
                          o->threads);
  if (o->arena && ((uintptr_t)o->arena % KILN_ARENA_ALIGN) != 0)
    return kiln_error_set(err, KILN_E_INVALID,
                          "session options: the caller-supplied arena %p is not %d-byte aligned",
                          o->arena, KILN_ARENA_ALIGN);
  return KILN_OK;
}

/* Everything but the arena and threads. plan_only (for kiln_session_plan_bytes)
 * makes the same fused step list and plan without copying or packing weights. */
static kiln_status build(const kiln_ir_graph *g, const kiln_session_options *opt, int plan_only,
                         kiln_session **out, kiln_error *err) {
  *out = NULL;
  kiln_session_options defaults;
  kiln_session_options_init(&defaults);
  if (!opt) opt = &defaults;
  if (!g) return kiln_error_set(err, KILN_E_INVALID, "session: the graph is NULL");
  kiln_status st = check_options(opt, err);
  if (st) return st;
  kiln_session *s = calloc(1, sizeof *s);
  if (!s) return kiln_error_set(err, KILN_E_NOMEM, "session: out of memory");
  s->max_batch = opt->max_batch;
  s->threads = 1;
  s->token_step = -1;
  kiln_cpu_detect(&s->cpu);
  if (!(s->kern = kiln_sgemm_select(&s->cpu, opt->kernel, err)) ||
      !(s->qkern = kiln_qgemm_select(&s->cpu, opt->kernel, err))) {
    kiln_session_free(s);
    return err ? err->status : KILN_E_UNSUPPORTED;
  }
  s->quantize_row = kiln_quantize_row_ref;
  if (s->qkern->path != KILN_KERNEL_REF && s->cpu.avx2_fma && kiln_quantize_row_avx2())
    s->quantize_row = kiln_quantize_row_avx2();
  if (s->qkern->path == KILN_KERNEL_VNNI && s->cpu.avx512f && kiln_quantize_row_avx512())
    s->quantize_row = kiln_quantize_row_avx512(); /* the same bytes, 16 per vector */
  int64_t opset = kiln_ir_opset_version(g, "");
  s->opset = opset ? (int)opset : OPSET_DEFAULT;
  if (s->opset < OPSET_MIN || s->opset > OPSET_MAX) {
    int bad = s->opset;
    kiln_session_free(s);
    return kiln_error_set(err, KILN_E_UNSUPPORTED,
                          "graph \"%s\": default-domain opset %d is not supported (kiln runs %d..%d)",
                          g->name ? g->name : "", bad, OPSET_MIN, OPSET_MAX);
  }
  builder b;
  memset(&b, 0, sizeof b);
  b.s = s;
  b.g = g;
  b.err = err;
  b.plan_only = plan_only;
  b.n_nodes = g->n_nodes;
  b.nodes = malloc((size_t)(g->n_nodes ? g->n_nodes : 1) * sizeof *b.nodes);
  b.fused = calloc((size_t)(g->n_nodes ? g->n_nodes : 1), 1);
  if (!b.nodes || !b.fused) {
    st = kiln_error_set(err, KILN_E_NOMEM, "session: out of memory");
    goto fail;
  }
  if (g->n_nodes) memcpy(b.nodes, g->nodes, (size_t)g->n_nodes * sizeof *b.nodes);
  {
    kiln_ir_graph view = *g; /* shallow: toposort only permutes the node array */
    view.nodes = b.nodes;
    if ((st = kiln_ir_toposort(&view, err))) goto fail;
  }
  /* graph inputs and initializers */
  s->n_inputs = g->n_inputs;
  s->inputs = calloc((size_t)(g->n_inputs ? g->n_inputs : 1), sizeof *s->inputs);
  s->input_val = calloc((size_t)(g->n_inputs ? g->n_inputs : 1), sizeof(int));
  if (!s->inputs || !s->input_val) {
    st = kiln_error_set(err, KILN_E_NOMEM, "session: out of memory");
    goto fail;
  }
  for (int i = 0; i < g->n_inputs; i++) {
    const kiln_ir_value *in = &g->inputs[i];
    if (copy_value(&s->inputs[i], in)) {
      st = kiln_error_set(err, KILN_E_NOMEM, "session: out of memory");
      goto fail;
    }
    if (in->rank < 0 || in->rank > KILN_IR_MAX_RANK || kiln_dtype_size(in->dtype) == 0) {
      st = kiln_error_set(err, KILN_E_UNSUPPORTED,
                          "graph input \"%s\": needs a known tensor dtype and rank (got dtype %d, rank %d)",
                          in->name, (int)in->dtype, in->rank);
      goto fail;
    }
    kiln_shape sh;
    memset(&sh, 0, sizeof sh);
    sh.rank = in->rank;
    for (int d = 0; d < in->rank; d++) {
      sh.d[d] = in->dims[d].value < 0 ? 1 : in->dims[d].value;
      sh.batch[d] = in->dims[d].value < 0;
    }
    if (val_find(s, in->name) >= 0) {
      st = kiln_error_set(err, KILN_E_FORMAT, "graph input \"%s\" is declared twice", in->name);
      goto fail;
    }
    if ((s->input_val[i] = val_add(&b, in->name, in->dtype, &sh, KILN_VALUE_INPUT)) < 0) {
      st = kiln_error_set(err, KILN_E_NOMEM, "session: out of memory");
      goto fail;
    }
  }
  for (int i = 0; i < g->n_initializers; i++) {
    const kiln_ir_tensor *t = &g->initializers[i];
    if (val_find(s, t->name) >= 0) continue; /* a graph input overrides it */
    kiln_shape sh;
    memset(&sh, 0, sizeof sh);
    sh.rank = t->rank;
    for (int d = 0; d < t->rank; d++) sh.d[d] = t->dims[d];
    if (t->bytes != (size_t)kiln_ir_tensor_numel(t) * kiln_dtype_size(t->dtype)) {
      st = kiln_error_set(err, KILN_E_FORMAT, "initializer \"%s\": %zu bytes for its shape and dtype",
                          t->name, t->bytes);
      goto fail;
    }
    int v = val_add(&b, t->name, t->dtype, &sh, KILN_VALUE_CONST);
    if (v < 0) {
      st = kiln_error_set(err, KILN_E_NOMEM, "session: out of memory");
      goto fail;
    }
    s->values[v].init = t;
  }
  /* kiln's bitmap-packed pruned weights: decoded once, then initializers like the others */
  if ((st = kiln_sparse_decode_chains(g, b.nodes, b.n_nodes, b.fused, &b.decoded, &b.n_decoded,
                                      err)))
    goto fail;
  for (int i = 0; i < b.n_decoded; i++) {
    const kiln_ir_tensor *t = &b.decoded[i];
    kiln_shape sh;
    memset(&sh, 0, sizeof sh);
    sh.rank = t->rank;
    for (int d = 0; d < t->rank; d++) sh.d[d] = t->dims[d];
    if (val_find(s, t->name) >= 0) {
      st = kiln_error_set(err, KILN_E_FORMAT, "sparse weight \"%s\" is also a graph input or an initializer",
                          t->name);
      goto fail;
    }
    int v = val_add(&b, t->name, t->dtype, &sh, KILN_VALUE_CONST);
    if (v < 0) {
      st = kiln_error_set(err, KILN_E_NOMEM, "session: out of memory");
      goto fail;
    }
    s->values[v].init = t;
  }
  /* nodes */
  if (!(b.qp = calloc((size_t)(b.n_nodes ? b.n_nodes : 1), sizeof *b.qp))) {
    st = kiln_error_set(err, KILN_E_NOMEM, "session: out of memory");
    goto fail;
  }
  find_qgemms(&b);
  for (int i = 0; i < b.n_nodes; i++) {
    if (b.fused[i]) continue;
    if ((st = b.qp[i].active ? build_qgemm(&b, i) : build_node(&b, i))) goto fail;
  }
  /* operands read at run time */
  for (int i = 0; i < s->n_steps; i++) {
    kiln_step *sp = &s->steps[i];
    for (int k = 0; k < sp->n_in; k++) {
      if (sp->op == KILN_OP_GEMM && k == 1 && sp->b_packed) continue;
      if (s->values[sp->in[k]].kind == KILN_VALUE_CONST && !const_data(&b, sp->in[k])) {
        st = kiln_error_set(err, KILN_E_NOMEM, "session: out of memory");
        goto fail;
      }
    }
    for (int k = 0; k < sp->n_in; k++)
      if (s->values[sp->in[k]].last_step < i) s->values[sp->in[k]].last_step = i;
    for (int k = 0; k < sp->n_out; k++) {
      s->values[sp->out[k]].def_step = i;
      if (s->values[sp->out[k]].last_step < i) s->values[sp->out[k]].last_step = i;
    }
  }
  /* a QGEMM chain runs row chunks through all its layers at once (kiln_exec_qgemm_chain):
   * its values must not share memory with each other, so each lives to the chain's end */
  for (int i = 0; i < s->n_steps;) {
    int n = kiln_qgemm_chain_len(s, i);
    if (n < 2) {
      i++;
      continue;
    }
    for (int j = i; j < i + n; j++) {
      kiln_step *sp = &s->steps[j];
      for (int k = 0; k < sp->n_in; k++)
        if (s->values[sp->in[k]].last_step < i + n - 1) s->values[sp->in[k]].last_step = i + n - 1;
      for (int k = 0; k < sp->n_out; k++)
        if (s->values[sp->out[k]].last_step < i + n - 1) s->values[sp->out[k]].last_step = i + n - 1;
    }
    i += n;
  }
  /* graph outputs */
  s->n_outputs = g->n_outputs;
  s->outputs = calloc((size_t)(g->n_outputs ? g->n_outputs : 1), sizeof *s->outputs);
  s->output_val = calloc((size_t)(g->n_outputs ? g->n_outputs : 1), sizeof(int));
  if (!s->outputs || !s->output_val) {
    st = kiln_error_set(err, KILN_E_NOMEM, "session: out of memory");
    goto fail;
  }
  for (int i = 0; i < g->n_outputs; i++) {
    const kiln_ir_value *o = &g->outputs[i];
    int v = val_find(s, o->name);
    if (v < 0 || s->values[v].kind != KILN_VALUE_TEMP) {
      st = kiln_error_set(err, KILN_E_UNSUPPORTED,
                          "graph output \"%s\" is not produced by any node%s", o->name,
                          v >= 0 ? " (it is a graph input or an initializer; add an Identity)" : "");
      goto fail;
    }
    const kiln_rt_value *val = &s->values[v];
    if (o->rank >= 0 && o->rank != val->shape.rank) {
      char sh[128];
      shape_str(&val->shape, sh, sizeof sh);
      st = kiln_error_set(err, KILN_E_SHAPE, "graph output \"%s\" is declared rank %d, but the graph computes %s",
                          o->name, o->rank, sh);
      goto fail;
    }
    s->output_val[i] = v;
    kiln_ir_value *ov = &s->outputs[i];
    if (!(ov->name = strdup(o->name))) {
      st = kiln_error_set(err, KILN_E_NOMEM, "session: out of memory");
      goto fail;
    }
    ov->dtype = val->dtype;
    ov->rank = val->shape.rank;
    for (int d = 0; d < val->shape.rank; d++) {
      ov->dims[d].value = val->shape.batch[d] ? -1 : val->shape.d[d];
      if (val->shape.batch[d] && val->shape.d[d] == 1 && !(ov->dims[d].param = strdup("batch"))) {
        st = kiln_error_set(err, KILN_E_NOMEM, "session: out of memory");
        goto fail;
      }
    }
  }
  s->node_names = calloc((size_t)(s->n_steps ? s->n_steps : 1), sizeof(char *));
  if (!s->node_names) {
    st = kiln_error_set(err, KILN_E_NOMEM, "session: out of memory");
    goto fail;
  }
  for (int i = 0; i < s->n_steps; i++)
    if (!(s->node_names[i] = strdup(b.nodes[s->steps[i].node_index].name))) {
      st = kiln_error_set(err, KILN_E_NOMEM, "session: out of memory");
      goto fail;
    }
  /* run_tokens: input 0 read by exactly one Gemm/MatMul with packed weights */
  if (s->n_inputs >= 1) {
    int v0 = s->input_val[0], uses = 0, step = -1;
    for (int i = 0; i < s->n_steps; i++)
      for (int k = 0; k < s->steps[i].n_in; k++)
        if (s->steps[i].in[k] == v0) {
          uses++;
          step = i;
        }
    const kiln_step *sp = step >= 0 ? &s->steps[step] : NULL;
    if (uses == 1 && sp->op == KILN_OP_GEMM && sp->in[0] == v0 && sp->b_packed && !sp->trans_a &&
        s->values[v0].shape.rank == 2 && s->values[v0].dtype == KILN_DTYPE_FLOAT)
      s->token_step = step;
  }
  if ((st = plan_memory(&b, &s->arena_bytes))) goto fail;
  free(b.nodes);
  free(b.fused);
  free(b.qp);
  for (int i = 0; i < s->n_values; i++) s->values[i].init = NULL; /* create-time only */
  kiln_sparse_decoded_free(b.decoded, b.n_decoded);
  *out = s;
  return KILN_OK;
fail:
  free(b.nodes);
  free(b.fused);
  free(b.qp);
  kiln_sparse_decoded_free(b.decoded, b.n_decoded);
  kiln_session_free(s);
  return st;
}

kiln_status kiln_session_plan_bytes(const kiln_ir_graph *g, const kiln_session_options *opt,
                                    size_t *bytes, kiln_error *err) {
  kiln_session *s;
  kiln_session_options o;
  if (opt) o = *opt;
  else kiln_session_options_init(&o);
  o.arena = NULL; /* planning only: the caller's arena is not checked here */
  o.arena_bytes = 0;
  kiln_status st = build(g, &o, 1, &s, err);
  if (st) return st;
  *bytes = s->arena_bytes;
  kiln_session_free(s);
  return KILN_OK;
}

static void *alloc_aligned(size_t bytes) {
  return aligned_alloc(KILN_ARENA_ALIGN, round_up(bytes ? bytes : 1, KILN_ARENA_ALIGN));
}

kiln_status kiln_session_create(const kiln_ir_graph *g, const kiln_session_options *opt,
                                kiln_session **out, kiln_error *err) {
  if (!out) return kiln_error_set(err, KILN_E_INVALID, "kiln_session_create: out is NULL");
  *out = NULL;
  kiln_session_options defaults;
  kiln_session_options_init(&defaults);
  if (!opt) opt = &defaults;
  kiln_session *s;
  kiln_status st = build(g, opt, 0, &s, err);
  if (st) return st;
  if (opt->arena) {
    if (opt->arena_bytes < s->arena_bytes) {
      size_t need = s->arena_bytes;
      kiln_session_free(s);
      return kiln_error_set(err, KILN_E_INVALID,
                            "session options: the caller-supplied arena has %zu bytes; this graph "
                            "at max_batch=%lld needs %zu (see kiln_session_plan_bytes)",
                            opt->arena_bytes, (long long)opt->max_batch, need);
    }
    s->arena = opt->arena;
  } else {
    if (!(s->arena_alloc = alloc_aligned(s->arena_bytes))) goto nomem;
    s->arena = s->arena_alloc;
  }
  /* value pointers: constants and planned temporaries are fixed from now on */
  if (!(s->ptr = calloc((size_t)(s->n_values ? s->n_values : 1), sizeof(void *)))) goto nomem;
  for (int v = 0; v < s->n_values; v++) {
    kiln_rt_value *val = &s->values[v];
    if (val->kind == KILN_VALUE_CONST) s->ptr[v] = val->data;
    else if (val->kind == KILN_VALUE_TEMP && val->def_step >= 0) s->ptr[v] = s->arena + val->offset;
  }
  if (s->scratch_b_floats && !(s->scratch_b = alloc_aligned(s->scratch_b_floats * sizeof(float))))
    goto nomem;
  /* per-thread buffers, then the workers */
  int T = opt->threads;
  s->ws = calloc((size_t)T, sizeof(float *));
  s->nz_idx = calloc((size_t)T, sizeof(int32_t *));
  s->nz_val = calloc((size_t)T, sizeof(float *));
  s->marks = calloc((size_t)T, sizeof(uint32_t *));
  s->mark_gen = calloc((size_t)T, sizeof(uint32_t));
  s->qws = calloc((size_t)T, sizeof(int8_t *));
  if (!s->ws || !s->nz_idx || !s->nz_val || !s->marks || !s->mark_gen || !s->qws) goto nomem;
  s->threads = T;
  size_t kmax = (size_t)(s->max_k > 0 ? s->max_k : 1);
  for (int t = 0; t < T; t++) {
    s->ws[t] = alloc_aligned(kiln_sgemm_workspace_floats(s->kern, s->max_k) * sizeof(float));
    /* + 1: the branch-free dedupe writes one slot past the unique ids */
    s->nz_idx[t] = malloc((kmax + 1) * sizeof(int32_t));
    s->nz_val[t] = malloc(kmax * sizeof(float));
    s->marks[t] = calloc(kmax + 1, sizeof(uint32_t));
    if (s->max_qk > 0 && !(s->qws[t] = alloc_aligned(kiln_qgemm_workspace_bytes(s->qkern, s->max_qk))))
      goto nomem;
    if (!s->ws[t] || !s->nz_idx[t] || !s->nz_val[t] || !s->marks[t]) goto nomem;
  }
  if (T > 1) {
    if ((st = kiln_pool_create(&s->pool, T, err))) {
      kiln_session_free(s);
      return st;
    }
    s->has_pool = 1;
  }
  *out = s;
  return KILN_OK;
nomem:
  kiln_session_free(s);
  return kiln_error_set(err, KILN_E_NOMEM, "session: out of memory allocating buffers");
}

size_t kiln_session_arena_bytes(const kiln_session *s) { return s ? s->arena_bytes : 0; }
size_t kiln_session_weight_bytes(const kiln_session *s) { return s ? s->weight_bytes : 0; }
const char *kiln_session_kernel_name(const kiln_session *s) { return s ? s->kern->name : ""; }
int kiln_session_input_count(const kiln_session *s) { return s ? s->n_inputs : 0; }
int kiln_session_output_count(const kiln_session *s) { return s ? s->n_outputs : 0; }
const kiln_ir_value *kiln_session_input(const kiln_session *s, int i) {
  return s && i >= 0 && i < s->n_inputs ? &s->inputs[i] : NULL;
}
const kiln_ir_value *kiln_session_output(const kiln_session *s, int i) {
  return s && i >= 0 && i < s->n_outputs ? &s->outputs[i] : NULL;
}

/* kiln runtime — kiln's compact pruned weights, recognised at session create.
 *
 * kiln_sparse_pack (quantize/prune.c, docs/quantization.md) stores a pruned weight W as a
 * bitmap (uint8 [nb, 1], bit e % 8 of byte e / 8 set for a non-zero element e) and its
 * non-zeros (a placeholder 0, then the non-zeros in order), expanded by standard ops:
 *
 *   bits = Cast<int64>(Reshape(Mod(BitShift(bitmap, [[0..7]]), 2), [nb * 8]))
 *   W    = Reshape(Slice(Gather(values, Mul(CumSum(bits, 0), bits)), [0], [n]), shape)
 *
 * The runtime does not run BitShift/CumSum/Gather; it matches the chain by structure
 * (every op, attribute and constant checked; names do not matter), computes W once, as
 * those ops would, and hands it to the session as an initializer, so the fused int8 and
 * float kernels pack it like any other weight. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "session_internal.h"

typedef struct chain {
  const kiln_ir_graph *g;
  const kiln_ir_node *nodes;
  int n;
} chain;

static int is_op(const kiln_ir_node *n, const char *op) {
  return (!n->domain[0] || strcmp(n->domain, "ai.onnx") == 0) && strcmp(n->op_type, op) == 0;
}

/* Input k of n, or NULL when n has no such input (a malformed graph). */
static const char *in_name(const kiln_ir_node *n, int k) {
  return k < n->n_inputs ? n->inputs[k] : NULL;
}

/* Output k of n, or NULL. */
static const char *out_name(const kiln_ir_node *n, int k) {
  return k < n->n_outputs ? n->outputs[k] : NULL;
}

static int producer_of(const chain *c, const char *name) {
  if (!name) return -1;
  for (int i = 0; i < c->n; i++)
    for (int k = 0; k < c->nodes[i].n_outputs; k++)
      if (strcmp(c->nodes[i].outputs[k], name) == 0) return i;
  return -1;
}

/* The node producing `name` if it is `op`, else -1. */
static int made_by(const chain *c, const char *name, const char *op) {
  int p = producer_of(c, name);
  return p >= 0 && is_op(&c->nodes[p], op) ? p : -1;
}

static int readers(const chain *c, const char *name) {
  int r = 0;
  if (!name) return 0;
  for (int i = 0; i < c->n; i++)
    for (int k = 0; k < c->nodes[i].n_inputs; k++) r += strcmp(c->nodes[i].inputs[k], name) == 0;
  for (int i = 0; i < c->g->n_outputs; i++) r += strcmp(c->g->outputs[i].name, name) == 0 ? 100 : 0;
  return r;
}

static const kiln_ir_tensor *init_in(const chain *c, const kiln_ir_node *n, int k) {
  return k < n->n_inputs && n->inputs[k][0] ? kiln_ir_find_initializer(c->g, n->inputs[k]) : NULL;
}

/* An integer initializer's element i (int64, int32 or uint8), or 0. */
static int64_t int_at(const kiln_ir_tensor *t, int64_t i) {
  switch (t->dtype) {
    case KILN_DTYPE_INT64: return ((const int64_t *)t->data)[i];
    case KILN_DTYPE_INT32: return ((const int32_t *)t->data)[i];
    case KILN_DTYPE_UINT8: return ((const uint8_t *)t->data)[i];
    default: return 0;
  }
}

static int int_is(const kiln_ir_tensor *t, int64_t v) {
  return t && (t->dtype == KILN_DTYPE_INT64 || t->dtype == KILN_DTYPE_INT32 ||
               t->dtype == KILN_DTYPE_UINT8) &&
         kiln_ir_tensor_numel(t) == 1 && t->rank <= 1 && int_at(t, 0) == v;
}

/* Attribute `name` absent or the int v. */
static int attr_is(const kiln_ir_node *n, const char *name, int64_t v) {
  const kiln_ir_attr *a = kiln_ir_node_attr(n, name);
  return !a || (a->type == KILN_ATTR_INT && a->i == v);
}

/* Matches the chain ending at the Reshape `r2`; idx[] receives its 9 node indices. */
static int match(const chain *c, int r2, int idx[9], const kiln_ir_tensor **bitmap,
                 const kiln_ir_tensor **values, int64_t *n_out, int64_t dims[KILN_IR_MAX_RANK],
                 int *rank) {
  const kiln_ir_node *R2 = &c->nodes[r2];
  if (!is_op(R2, "Reshape") || R2->n_inputs != 2 || R2->n_outputs != 1 || !attr_is(R2, "allowzero", 0))
    return 0;
  int sl = made_by(c, R2->inputs[0], "Slice");
  if (sl < 0) return 0;
  const kiln_ir_node *S = &c->nodes[sl];
  int ga = made_by(c, in_name(S, 0), "Gather");
  if (ga < 0 || S->n_inputs < 3) return 0;
  const kiln_ir_node *G = &c->nodes[ga];
  int mu = G->n_inputs == 2 ? made_by(c, in_name(G, 1), "Mul") : -1;
  if (mu < 0 || !attr_is(G, "axis", 0)) return 0;
  const kiln_ir_node *M = &c->nodes[mu];
  if (M->n_inputs != 2) return 0;
  int cs = made_by(c, in_name(M, 0), "CumSum"), ca;
  const char *bits;
  if (cs >= 0) bits = M->inputs[1];
  else if ((cs = made_by(c, in_name(M, 1), "CumSum")) >= 0) bits = M->inputs[0];
  else return 0;
  const kiln_ir_node *CS = &c->nodes[cs];
  if (CS->n_inputs != 2 || strcmp(CS->inputs[0], bits) != 0 || !attr_is(CS, "exclusive", 0) ||
      !attr_is(CS, "reverse", 0) || !int_is(init_in(c, CS, 1), 0))
    return 0;
  if ((ca = made_by(c, bits, "Cast")) < 0 || !attr_is(&c->nodes[ca], "to", KILN_DTYPE_INT64) ||
      !kiln_ir_node_attr(&c->nodes[ca], "to"))
    return 0;
  int r1 = made_by(c, in_name(&c->nodes[ca], 0), "Reshape");
  if (r1 < 0 || c->nodes[r1].n_inputs != 2) return 0;
  int md = made_by(c, in_name(&c->nodes[r1], 0), "Mod");
  if (md < 0 || c->nodes[md].n_inputs != 2 || !attr_is(&c->nodes[md], "fmod", 0) ||
      !int_is(init_in(c, &c->nodes[md], 1), 2) || init_in(c, &c->nodes[md], 1)->dtype != KILN_DTYPE_UINT8)
    return 0;
  int bs = made_by(c, in_name(&c->nodes[md], 0), "BitShift");
  if (bs < 0 || c->nodes[bs].n_inputs != 2) return 0;
  const kiln_ir_attr *dir = kiln_ir_node_attr(&c->nodes[bs], "direction");
  if (!dir || dir->type != KILN_ATTR_STRING || !dir->s || strcmp(dir->s, "RIGHT") != 0) return 0;
  /* constants: bitmap [nb, 1] x shifts [1, 8] = 0..7 broadcast to [nb, 8] (e = 8 byte + bit) */
  const kiln_ir_tensor *bm = init_in(c, &c->nodes[bs], 0), *sh = init_in(c, &c->nodes[bs], 1);
  if (!bm || bm->dtype != KILN_DTYPE_UINT8 || bm->rank != 2 || bm->dims[1] != 1 || !sh ||
      sh->dtype != KILN_DTYPE_UINT8 || sh->rank != 2 || sh->dims[0] != 1 || sh->dims[1] != 8)
    return 0;
  for (int j = 0; j < 8; j++)
    if (((const uint8_t *)sh->data)[j] != j) return 0;
  int64_t nb = bm->dims[0];
  if (!int_is(init_in(c, &c->nodes[r1], 1), nb * 8) || init_in(c, &c->nodes[r1], 1)->dtype != KILN_DTYPE_INT64)
    return 0;
  const kiln_ir_tensor *vals = init_in(c, G, 0);
  if (!vals || vals->rank != 1 || vals->dims[0] < 1 ||
      (vals->dtype != KILN_DTYPE_FLOAT && vals->dtype != KILN_DTYPE_INT8))
    return 0;
  /* Slice(x, [0], [n] (, [0] (, [1]))) */
  const kiln_ir_tensor *st = init_in(c, S, 1), *en = init_in(c, S, 2);
  if (!int_is(st, 0) || !en || en->dtype != KILN_DTYPE_INT64 || kiln_ir_tensor_numel(en) != 1)
    return 0;
  if (S->n_inputs > 3 && S->inputs[3][0] && !int_is(init_in(c, S, 3), 0)) return 0;
  if (S->n_inputs > 4 && S->inputs[4][0] && !int_is(init_in(c, S, 4), 1)) return 0;
  int64_t n = int_at(en, 0);
  if (n < 0 || n > nb * 8) return 0;
  const kiln_ir_tensor *shape = init_in(c, R2, 1);
  if (!shape || shape->dtype != KILN_DTYPE_INT64 || shape->rank != 1 || shape->dims[0] < 1 ||
      shape->dims[0] > KILN_IR_MAX_RANK)
    return 0;
  int64_t p = 1;
  *rank = (int)shape->dims[0];
  for (int d = 0; d < *rank; d++) {
    dims[d] = ((const int64_t *)shape->data)[d];
    if (dims[d] < 1 || p > n / dims[d]) return 0; /* p * dims[d] > n, without overflow */
    p *= dims[d];
  }
  if (p != n) return 0;
  /* the intermediates are the chain's own (bits is read by CumSum and Mul) */
  if (readers(c, out_name(&c->nodes[bs], 0)) != 1 || readers(c, out_name(&c->nodes[md], 0)) != 1 ||
      readers(c, out_name(&c->nodes[r1], 0)) != 1 || readers(c, bits) != 2 ||
      readers(c, out_name(CS, 0)) != 1 || readers(c, out_name(M, 0)) != 1 ||
      readers(c, out_name(G, 0)) != 1 || readers(c, out_name(S, 0)) != 1)
    return 0;
  int ids[9] = {bs, md, r1, ca, cs, mu, ga, sl, r2};
  memcpy(idx, ids, sizeof ids);
  *bitmap = bm;
  *values = vals;
  *n_out = n;
  return 1;
}

void kiln_sparse_decoded_free(kiln_ir_tensor *t, int n) {
  for (int i = 0; i < n && t; i++) {
    free(t[i].name);
    free(t[i].data);
  }
  free(t);
}

kiln_status kiln_sparse_decode_chains(const kiln_ir_graph *g, const kiln_ir_node *nodes,
                                      int n_nodes, unsigned char *fused, kiln_ir_tensor **out,
                                      int *n_out, kiln_error *err) {
  chain c = {g, nodes, n_nodes};
  *out = NULL;
  *n_out = 0;
  kiln_ir_tensor *ts = NULL;
  int nt = 0;
  for (int i = 0; i < n_nodes; i++) {
    int idx[9], rank;
    const kiln_ir_tensor *bm, *vals;
    int64_t n, dims[KILN_IR_MAX_RANK];
    if (fused[i] || !match(&c, i, idx, &bm, &vals, &n, dims, &rank)) continue;
    kiln_ir_tensor *p = realloc(ts, (size_t)(nt + 1) * sizeof *ts);
    if (!p) goto nomem;
    ts = p;
    kiln_ir_tensor *t = &ts[nt];
    memset(t, 0, sizeof *t);
    nt++;
    size_t es = kiln_dtype_size(vals->dtype);
    t->name = strdup(nodes[i].outputs[0]);
    t->data = malloc((size_t)(n ? n : 1) * es);
    if (!t->name || !t->data) goto nomem;
    t->dtype = vals->dtype;
    t->rank = rank;
    memcpy(t->dims, dims, (size_t)rank * sizeof(int64_t));
    t->bytes = (size_t)n * es;
    /* Gather(values, cumsum(bits) * bits): a clear bit reads values[0], the k-th set bit
     * values[k] */
    const uint8_t *b = bm->data;
    const unsigned char *v = vals->data;
    int64_t nv = vals->dims[0], k = 0;
    for (int64_t e = 0; e < n; e++) {
      int bit = b[e / 8] >> (e % 8) & 1;
      k += bit;
      if (bit && k >= nv) {
        const kiln_ir_node *gn = &nodes[idx[6]];
        kiln_error_set(err, KILN_E_FORMAT,
                       "node \"%s\" (Gather): sparse weight \"%s\": its bitmap has more set bits "
                       "than the %lld values after the placeholder in \"%s\"",
                       gn->name, t->name, (long long)(nv - 1), gn->inputs[0]);
        kiln_sparse_decoded_free(ts, nt);
        return KILN_E_FORMAT;
      }
      memcpy((unsigned char *)t->data + e * es, v + (bit ? k : 0) * es, es);
    }
    for (int j = 0; j < 9; j++) fused[idx[j]] = 1;
  }
  *out = ts;
  *n_out = nt;
  return KILN_OK;
nomem:
  kiln_sparse_decoded_free(ts, nt);
  return kiln_error_set(err, KILN_E_NOMEM, "session: out of memory decoding a sparse weight");
}

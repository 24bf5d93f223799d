/* kiln runtime — the ONNX reader: a .onnx (ModelProto) into the graph IR.
 *
 * Two passes. First a walk over the protobuf wire format that checks every tag,
 * length and nesting depth and reports the byte offset of the first fault (protobuf-c
 * only says "no"; and it recurses without a depth limit). Then protobuf-c unpacks the
 * message, and every field is validated before it becomes part of the IR. */
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kiln/infer.h"
#include "kiln/ir.h"
#include "onnx.pb-c.h"

/* Oldest and newest IR / default-domain opset versions kiln reads. */
#define MIN_IR_VERSION 3
#define MAX_IR_VERSION 10
#define MIN_OPSET 7
#define MAX_OPSET 21
/* Deepest message nesting accepted (a model needs about 8). */
#define MAX_DEPTH 64
/* Largest dense tensor a sparse initializer may expand to. */
#define MAX_SPARSE_DENSE_BYTES ((int64_t)1 << 28)

typedef struct reader {
  const char *src;
  kiln_error *err;
} reader;

static kiln_status fail(const reader *r, kiln_status st, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

static kiln_status fail(const reader *r, kiln_status st, const char *fmt, ...) {
  char msg[KILN_ERROR_MESSAGE_MAX];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  return kiln_error_set(r->err, st, "%s: %s", r->src, msg);
}

/* A builder call failed (out of memory or invalid): put the source name in front. */
static kiln_status prefixed(const reader *r, kiln_status st) {
  if (r->err) kiln_error_prefix(r->err, "%s", r->src);
  return st;
}

static const char *str(const char *s) { return s ? s : ""; }

/* --- pass 1: the wire format ----------------------------------------------------- */

static int read_varint(const uint8_t *p, size_t len, size_t *pos, uint64_t *v) {
  uint64_t x = 0;
  for (int shift = 0; shift < 64; shift += 7) {
    if (*pos >= len) return 0;
    uint8_t b = p[(*pos)++];
    x |= (uint64_t)(b & 0x7f) << shift;
    if (!(b & 0x80)) {
      *v = x;
      return 1;
    }
  }
  return 0; /* more than 10 bytes */
}

/* The wire type a field of this type is encoded with (unpacked). */
static unsigned wire_type_of(ProtobufCType t) {
  switch (t) {
    case PROTOBUF_C_TYPE_SFIXED64:
    case PROTOBUF_C_TYPE_FIXED64:
    case PROTOBUF_C_TYPE_DOUBLE: return 1;
    case PROTOBUF_C_TYPE_SFIXED32:
    case PROTOBUF_C_TYPE_FIXED32:
    case PROTOBUF_C_TYPE_FLOAT: return 5;
    case PROTOBUF_C_TYPE_STRING:
    case PROTOBUF_C_TYPE_BYTES:
    case PROTOBUF_C_TYPE_MESSAGE: return 2;
    default: return 0;
  }
}

static kiln_status scan(const reader *r, const uint8_t *p, size_t len, size_t base,
                        const ProtobufCMessageDescriptor *d, int depth) {
  if (depth > MAX_DEPTH)
    return fail(r, KILN_E_FORMAT, "byte offset %zu: messages nested more than %d deep", base,
                MAX_DEPTH);
  size_t pos = 0;
  while (pos < len) {
    size_t at = pos;
    uint64_t tag, v;
    if (!read_varint(p, len, &pos, &tag))
      return fail(r, KILN_E_FORMAT, "byte offset %zu: truncated or overlong field tag in %s",
                  base + at, d->name);
    uint64_t field = tag >> 3;
    unsigned wire = (unsigned)(tag & 7);
    if (field == 0 || field > 0x1fffffff)
      return fail(r, KILN_E_FORMAT, "byte offset %zu: invalid field number %llu in %s",
                  base + at, (unsigned long long)field, d->name);
    const ProtobufCFieldDescriptor *f = protobuf_c_message_descriptor_get_field(d, (unsigned)field);
    if (f && wire <= 5) {
      unsigned want = wire_type_of(f->type);
      /* repeated numbers may come packed (one length-delimited run) */
      int packable = f->label == PROTOBUF_C_LABEL_REPEATED && want != 2;
      if (wire != want && !(packable && wire == 2))
        return fail(r, KILN_E_FORMAT, "byte offset %zu: field %s of %s has wire type %u, "
                    "expected %u", base + at, f->name, d->name, wire, want);
    }
    switch (wire) {
      case 0:
        if (!read_varint(p, len, &pos, &v))
          return fail(r, KILN_E_FORMAT, "byte offset %zu: truncated varint (field %llu of %s)",
                      base + at, (unsigned long long)field, d->name);
        break;
      case 1:
      case 5: {
        size_t n = wire == 1 ? 8 : 4;
        if (len - pos < n)
          return fail(r, KILN_E_FORMAT,
                      "byte offset %zu: field %llu of %s needs %zu bytes, %zu remain", base + at,
                      (unsigned long long)field, d->name, n, len - pos);
        pos += n;
        break;
      }
      case 2: {
        if (!read_varint(p, len, &pos, &v))
          return fail(r, KILN_E_FORMAT, "byte offset %zu: truncated length (field %llu of %s)",
                      base + at, (unsigned long long)field, d->name);
        if (v > len - pos)
          return fail(r, KILN_E_FORMAT,
                      "byte offset %zu: field %llu of %s claims %llu bytes but only %zu remain",
                      base + at, (unsigned long long)field, d->name, (unsigned long long)v,
                      len - pos);
        if (f && f->type == PROTOBUF_C_TYPE_MESSAGE) {
          kiln_status s = scan(r, p + pos, (size_t)v, base + pos,
                               (const ProtobufCMessageDescriptor *)f->descriptor, depth + 1);
          if (s) return s;
        }
        pos += (size_t)v;
        break;
      }
      default:
        return fail(r, KILN_E_FORMAT, "byte offset %zu: unsupported wire type %u in %s",
                    base + at, wire, d->name);
    }
  }
  return KILN_OK;
}

/* --- pass 2: validation and conversion ------------------------------------------- */

/* A set of strings (value names), open addressing; quadratic lookups are too slow for
 * hostile inputs with many thousands of nodes. */
typedef struct name_set {
  const char **slot;
  const char **owner; /* who defined the name, for messages */
  size_t cap, n;
} name_set;

static uint64_t hash_str(const char *s) {
  uint64_t h = 1469598103934665603ull;
  for (; *s; s++) h = (h ^ (uint8_t)*s) * 1099511628211ull;
  return h;
}

static int set_init(name_set *s, size_t expected) {
  s->cap = 16;
  while (s->cap < expected * 2 + 1) s->cap *= 2;
  s->n = 0;
  s->slot = calloc(s->cap, sizeof *s->slot);
  s->owner = calloc(s->cap, sizeof *s->owner);
  return s->slot && s->owner;
}

static void set_free(name_set *s) {
  free(s->slot);
  free(s->owner);
}

/* The owner of name, or NULL when absent. */
static const char *set_find(const name_set *s, const char *name) {
  for (size_t i = hash_str(name) & (s->cap - 1);; i = (i + 1) & (s->cap - 1)) {
    if (!s->slot[i]) return NULL;
    if (strcmp(s->slot[i], name) == 0) return s->owner[i];
  }
}

/* Inserts name (not copied) unless present; returns the previous owner or NULL.
 * The capacity was sized for every insertion up front. */
static const char *set_add(name_set *s, const char *name, const char *owner) {
  size_t i = hash_str(name) & (s->cap - 1);
  for (; s->slot[i]; i = (i + 1) & (s->cap - 1))
    if (strcmp(s->slot[i], name) == 0) return s->owner[i];
  s->slot[i] = name;
  s->owner[i] = owner;
  s->n++;
  return NULL;
}

static int host_is_little_endian(void) {
  const uint16_t one = 1;
  uint8_t b;
  memcpy(&b, &one, 1);
  return b == 1;
}

/* Reverses each elem-byte group (raw ONNX data is little-endian). */
static void swap_bytes(uint8_t *p, size_t bytes, size_t elem) {
  if (elem < 2) return;
  for (size_t o = 0; o + elem <= bytes; o += elem)
    for (size_t i = 0; i < elem / 2; i++) {
      uint8_t t = p[o + i];
      p[o + i] = p[o + elem - 1 - i];
      p[o + elem - 1 - i] = t;
    }
}

/* ONNX data_type -> kiln dtype. */
static kiln_status map_dtype(const reader *r, int32_t dt, const char *what, kiln_dtype *out) {
  switch (dt) {
    case KILN_DTYPE_FLOAT:
    case KILN_DTYPE_UINT8:
    case KILN_DTYPE_INT8:
    case KILN_DTYPE_INT32:
    case KILN_DTYPE_INT64:
    case KILN_DTYPE_BOOL:
    case KILN_DTYPE_DOUBLE:
      *out = (kiln_dtype)dt;
      return KILN_OK;
    default: break;
  }
  static const char *const names[] = {"undefined", "float32", "uint8", "int8", "uint16",
                                      "int16", "int32", "int64", "string", "bool",
                                      "float16", "float64", "uint32", "uint64", "complex64",
                                      "complex128", "bfloat16"};
  if (dt > 0 && dt < (int32_t)(sizeof names / sizeof names[0]))
    return fail(r, KILN_E_UNSUPPORTED,
                "%s: element type %s is not supported (kiln reads float32, float64, int8, "
                "uint8, int32, int64 and bool)", what, names[dt]);
  if (dt >= 17 && dt <= 25)
    return fail(r, KILN_E_UNSUPPORTED, "%s: element type %d (a float8/int4 type) is not "
                "supported", what, (int)dt);
  return fail(r, KILN_E_FORMAT, "%s: element type %d is not an ONNX data type", what, (int)dt);
}

static int checked_mul(int64_t a, int64_t b, int64_t *out) {
  if (a < 0 || b < 0) return 0;
  if (b != 0 && a > INT64_MAX / b) return 0;
  *out = a * b;
  return 1;
}

/* Formats dims as "[4, 4]" into buf. */
static const char *dims_text(const int64_t *dims, size_t n, char *buf, size_t cap) {
  size_t o = 0;
  buf[0] = '\0';
  o += (size_t)snprintf(buf + o, cap - o, "[");
  for (size_t i = 0; i < n && o < cap; i++)
    o += (size_t)snprintf(buf + o, cap - o, "%s%lld", i ? ", " : "", (long long)dims[i]);
  if (o < cap) snprintf(buf + o, cap - o, "]");
  return buf;
}

/* A validated, converted tensor; data is malloc'd (the caller frees it). */
typedef struct dense {
  kiln_dtype dtype;
  int rank;
  int64_t dims[KILN_IR_MAX_RANK];
  int64_t numel;
  size_t bytes;
  void *data;
} dense;

/* Checks the shape of a TensorProto; fills dtype, rank, dims, numel and bytes. */
static kiln_status tensor_shape(const reader *r, const Onnx__TensorProto *tp, const char *what,
                                dense *out) {
  memset(out, 0, sizeof *out);
  if ((tp->has_data_location && tp->data_location == ONNX__TENSOR_PROTO__DATA_LOCATION__EXTERNAL) ||
      tp->n_external_data > 0)
    return fail(r, KILN_E_UNSUPPORTED,
                "%s: data is stored externally (in a separate file); kiln reads self-contained "
                "models only (save with save_as_external_data=False)", what);
  if (tp->has_data_location && tp->data_location != ONNX__TENSOR_PROTO__DATA_LOCATION__DEFAULT)
    return fail(r, KILN_E_FORMAT, "%s: unknown data_location %d", what, (int)tp->data_location);
  if (tp->segment)
    return fail(r, KILN_E_UNSUPPORTED, "%s: segmented tensors are not supported", what);
  if (!tp->has_data_type)
    return fail(r, KILN_E_FORMAT, "%s: has no data_type", what);
  kiln_status s = map_dtype(r, tp->data_type, what, &out->dtype);
  if (s) return s;
  if (tp->n_dims > KILN_IR_MAX_RANK)
    return fail(r, KILN_E_UNSUPPORTED, "%s: rank %zu exceeds kiln's maximum of %d", what,
                tp->n_dims, KILN_IR_MAX_RANK);
  out->rank = (int)tp->n_dims;
  int64_t numel = 1;
  char buf[256];
  for (size_t i = 0; i < tp->n_dims; i++) {
    if (tp->dims[i] < 0)
      return fail(r, KILN_E_FORMAT, "%s: dim %zu of %s is negative", what, i,
                  dims_text(tp->dims, tp->n_dims, buf, sizeof buf));
    out->dims[i] = tp->dims[i];
    if (!checked_mul(numel, tp->dims[i], &numel))
      return fail(r, KILN_E_FORMAT, "%s: the element count of dims %s overflows", what,
                  dims_text(tp->dims, tp->n_dims, buf, sizeof buf));
  }
  int64_t bytes;
  if (!checked_mul(numel, (int64_t)kiln_dtype_size(out->dtype), &bytes) ||
      (uint64_t)bytes > (uint64_t)SIZE_MAX)
    return fail(r, KILN_E_FORMAT, "%s: the byte size of dims %s of %s overflows", what,
                dims_text(tp->dims, tp->n_dims, buf, sizeof buf), kiln_dtype_name(out->dtype));
  out->numel = numel;
  out->bytes = (size_t)bytes;
  return KILN_OK;
}

/* Validates tp and converts its data (raw_data or the typed field of its dtype) into
 * raw little-endian bytes in out->data. */
static kiln_status tensor_read(const reader *r, const Onnx__TensorProto *tp, const char *what,
                               dense *out) {
  kiln_status s = tensor_shape(r, tp, what, out);
  if (s) return s;
  char dbuf[256];
  const char *dt = dims_text(out->dims, (size_t)out->rank, dbuf, sizeof dbuf);
  const char *tn = kiln_dtype_name(out->dtype);
  int sources = (tp->has_raw_data ? 1 : 0) + (tp->n_float_data > 0) + (tp->n_int32_data > 0) +
                (tp->n_int64_data > 0) + (tp->n_double_data > 0) + (tp->n_uint64_data > 0) +
                (tp->n_string_data > 0);
  if (sources > 1)
    return fail(r, KILN_E_FORMAT, "%s: data is given in %d different fields; expected one",
                what, sources);
  size_t want_n = (size_t)out->numel;
  const char *field = "raw_data";
  size_t have_n = 0;
  switch (out->dtype) {
    case KILN_DTYPE_FLOAT: field = "float_data"; have_n = tp->n_float_data; break;
    case KILN_DTYPE_DOUBLE: field = "double_data"; have_n = tp->n_double_data; break;
    case KILN_DTYPE_INT64: field = "int64_data"; have_n = tp->n_int64_data; break;
    default: field = "int32_data"; have_n = tp->n_int32_data; break;
  }
  if (tp->has_raw_data) {
    if (tp->raw_data.len != out->bytes)
      return fail(r, KILN_E_FORMAT, "%s: raw_data has %zu bytes but dims %s of %s need %zu", what,
                  tp->raw_data.len, dt, tn, out->bytes);
  } else if (sources == 1 && have_n == 0) {
    return fail(r, KILN_E_FORMAT, "%s: a %s tensor's values belong in raw_data or %s, not in "
                "another typed field", what, tn, field);
  } else if (have_n != want_n) {
    return fail(r, KILN_E_FORMAT, "%s: %s has %zu values but dims %s need %zu", what, field,
                have_n, dt, want_n);
  }
  out->data = malloc(out->bytes ? out->bytes : 1);
  if (!out->data) return fail(r, KILN_E_NOMEM, "%s: out of memory (%zu bytes)", what, out->bytes);
  size_t es = kiln_dtype_size(out->dtype);
  uint8_t *d = out->data;
  if (tp->has_raw_data) {
    if (out->bytes) memcpy(d, tp->raw_data.data, out->bytes);
    if (!host_is_little_endian()) swap_bytes(d, out->bytes, es);
    if (out->dtype == KILN_DTYPE_BOOL)
      for (size_t i = 0; i < out->bytes; i++)
        if (d[i] > 1) {
          unsigned v = d[i];
          free(out->data);
          out->data = NULL;
          return fail(r, KILN_E_FORMAT, "%s: bool element %zu is %u (expected 0 or 1)", what, i,
                      v);
        }
    return KILN_OK;
  }
  for (size_t i = 0; i < want_n; i++) {
    switch (out->dtype) {
      case KILN_DTYPE_FLOAT: memcpy(d + i * 4, &tp->float_data[i], 4); break;
      case KILN_DTYPE_DOUBLE: memcpy(d + i * 8, &tp->double_data[i], 8); break;
      case KILN_DTYPE_INT64: memcpy(d + i * 8, &tp->int64_data[i], 8); break;
      case KILN_DTYPE_INT32: memcpy(d + i * 4, &tp->int32_data[i], 4); break;
      default: {
        int32_t v = tp->int32_data[i];
        int32_t lo = out->dtype == KILN_DTYPE_INT8 ? -128 : 0;
        int32_t hi = out->dtype == KILN_DTYPE_INT8 ? 127 : out->dtype == KILN_DTYPE_UINT8 ? 255 : 1;
        if (v < lo || v > hi) {
          free(out->data);
          out->data = NULL;
          return fail(r, KILN_E_FORMAT, "%s: int32_data[%zu] = %d does not fit %s", what, i,
                      (int)v, tn);
        }
        int8_t b = (int8_t)(uint8_t)(v & 0xff);
        memcpy(d + i, &b, 1);
        break;
      }
    }
  }
  if (!host_is_little_endian()) swap_bytes(d, out->bytes, es);
  return KILN_OK;
}

/* A sparse initializer expanded to a dense one. */
static kiln_status sparse_read(const reader *r, const Onnx__SparseTensorProto *sp, size_t idx,
                               dense *out) {
  char what[320];
  const char *name = sp->values && sp->values->name ? sp->values->name : "";
  snprintf(what, sizeof what, "sparse initializer #%zu \"%s\"", idx, name);
  memset(out, 0, sizeof *out);
  if (!sp->values || !sp->indices)
    return fail(r, KILN_E_FORMAT, "%s: needs both values and indices", what);
  if (sp->n_dims > KILN_IR_MAX_RANK)
    return fail(r, KILN_E_UNSUPPORTED, "%s: rank %zu exceeds kiln's maximum of %d", what,
                sp->n_dims, KILN_IR_MAX_RANK);
  if (sp->n_dims == 0) return fail(r, KILN_E_FORMAT, "%s: has no dims", what);
  dense vals, ind;
  kiln_status s = tensor_read(r, sp->values, what, &vals);
  if (s) return s;
  char iwhat[340];
  snprintf(iwhat, sizeof iwhat, "%s (indices)", what);
  s = tensor_read(r, sp->indices, iwhat, &ind);
  if (s) {
    free(vals.data);
    return s;
  }
  int64_t numel = 1;
  out->dtype = vals.dtype;
  out->rank = (int)sp->n_dims;
  char dbuf[256];
  for (size_t i = 0; i < sp->n_dims && !s; i++) {
    out->dims[i] = sp->dims[i];
    if (sp->dims[i] < 0 || !checked_mul(numel, sp->dims[i], &numel))
      s = fail(r, KILN_E_FORMAT, "%s: dims %s are negative or their product overflows", what,
               dims_text(sp->dims, sp->n_dims, dbuf, sizeof dbuf));
  }
  size_t es = kiln_dtype_size(vals.dtype);
  int64_t bytes = 0;
  int64_t nnz = vals.numel;
  if (!s && (!checked_mul(numel, (int64_t)es, &bytes) || bytes > MAX_SPARSE_DENSE_BYTES))
    s = fail(r, KILN_E_UNSUPPORTED, "%s: the dense form of dims %s would exceed %lld bytes",
             what, dims_text(sp->dims, sp->n_dims, dbuf, sizeof dbuf),
             (long long)MAX_SPARSE_DENSE_BYTES);
  if (!s && vals.rank != 1)
    s = fail(r, KILN_E_FORMAT, "%s: values must be 1-D, got rank %d", what, vals.rank);
  if (!s && ind.dtype != KILN_DTYPE_INT64)
    s = fail(r, KILN_E_FORMAT, "%s: indices must be int64, got %s", what,
             kiln_dtype_name(ind.dtype));
  int coords = 0; /* 0: linear indices [NNZ]; 1: coordinates [NNZ, rank] */
  if (!s) {
    if (ind.rank == 1 && ind.dims[0] == nnz)
      coords = 0;
    else if (ind.rank == 2 && ind.dims[0] == nnz && ind.dims[1] == (int64_t)sp->n_dims)
      coords = 1;
    else
      s = fail(r, KILN_E_FORMAT, "%s: indices have shape %s; expected [%lld] or [%lld, %zu]",
               what, dims_text(ind.dims, (size_t)ind.rank, dbuf, sizeof dbuf), (long long)nnz,
               (long long)nnz, sp->n_dims);
  }
  if (!s) {
    out->numel = numel;
    out->bytes = (size_t)bytes;
    out->data = calloc(out->bytes ? out->bytes : 1, 1);
    if (!out->data) s = fail(r, KILN_E_NOMEM, "%s: out of memory", what);
  }
  const int64_t *ix = ind.data;
  for (int64_t k = 0; k < nnz && !s; k++) {
    int64_t lin = 0;
    if (!coords) {
      lin = ix[k];
    } else {
      for (size_t a = 0; a < sp->n_dims && !s; a++) {
        int64_t c = ix[k * (int64_t)sp->n_dims + (int64_t)a];
        if (c < 0 || c >= sp->dims[a])
          s = fail(r, KILN_E_FORMAT, "%s: index %lld has coordinate %lld on axis %zu, outside "
                   "[0, %lld)", what, (long long)k, (long long)c, a, (long long)sp->dims[a]);
        lin = lin * sp->dims[a] + c;
      }
    }
    if (!s && (lin < 0 || lin >= numel))
      s = fail(r, KILN_E_FORMAT, "%s: index %lld is %lld, outside [0, %lld)", what,
               (long long)k, (long long)lin, (long long)numel);
    if (!s) memcpy((uint8_t *)out->data + (size_t)lin * es, (uint8_t *)vals.data + (size_t)k * es, es);
  }
  free(vals.data);
  free(ind.data);
  if (s) {
    free(out->data);
    out->data = NULL;
  }
  return s;
}

/* "node \"name\" (Op)" or "node #i (Op)" when the node has no name. */
static const char *node_label(const Onnx__NodeProto *np, size_t i, char *buf, size_t cap) {
  if (np->name && *np->name)
    snprintf(buf, cap, "node \"%s\" (%s)", np->name, str(np->op_type));
  else
    snprintf(buf, cap, "node #%zu (%s)", i, str(np->op_type));
  return buf;
}

static const char *attr_type_name(int t) {
  switch (t) {
    case 1: return "FLOAT";
    case 2: return "INT";
    case 3: return "STRING";
    case 4: return "TENSOR";
    case 5: return "GRAPH";
    case 6: return "FLOATS";
    case 7: return "INTS";
    case 8: return "STRINGS";
    case 9: return "TENSORS";
    case 10: return "GRAPHS";
    case 11: return "SPARSE_TENSOR";
    case 12: return "SPARSE_TENSORS";
    case 13: return "TYPE_PROTO";
    case 14: return "TYPE_PROTOS";
    default: return "UNDEFINED";
  }
}

/* Copies a protobuf string (which may hold any byte) into a C string. */
static kiln_status c_string(const reader *r, ProtobufCBinaryData b, const char *what, char **out) {
  if (b.len && memchr(b.data, 0, b.len))
    return fail(r, KILN_E_FORMAT, "%s: string contains a NUL byte", what);
  char *s = malloc(b.len + 1);
  if (!s) return fail(r, KILN_E_NOMEM, "%s: out of memory", what);
  if (b.len) memcpy(s, b.data, b.len);
  s[b.len] = '\0';
  *out = s;
  return KILN_OK;
}

static kiln_status read_attr(const reader *r, const Onnx__AttributeProto *ap, kiln_ir_node *n,
                             const char *node) {
  char what[400];
  snprintf(what, sizeof what, "%s: attribute \"%s\"", node, str(ap->name));
  if (!ap->name || !*ap->name) return fail(r, KILN_E_FORMAT, "%s: an attribute has no name", node);
  if (ap->ref_attr_name && *ap->ref_attr_name)
    return fail(r, KILN_E_UNSUPPORTED, "%s refers to a function attribute; functions are not "
                "supported", what);
  if (!ap->has_type || ap->type == ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__UNDEFINED)
    return fail(r, KILN_E_FORMAT, "%s has no type", what);
  int t = (int)ap->type;
  /* Which value fields are present, by the type they belong to. */
  int present[15] = {0};
  present[1] = ap->has_f;
  present[2] = ap->has_i;
  present[3] = ap->has_s;
  present[4] = ap->t != NULL;
  present[5] = ap->g != NULL;
  present[6] = ap->n_floats > 0;
  present[7] = ap->n_ints > 0;
  present[8] = ap->n_strings > 0;
  present[9] = ap->n_tensors > 0;
  present[10] = ap->n_graphs > 0;
  present[11] = ap->sparse_tensor != NULL;
  present[12] = ap->n_sparse_tensors > 0;
  present[13] = ap->tp != NULL;
  present[14] = ap->n_type_protos > 0;
  if (t < 1 || t > 14)
    return fail(r, KILN_E_FORMAT, "%s has unknown type %d", what, t);
  for (int k = 1; k <= 14; k++)
    if (k != t && present[k])
      return fail(r, KILN_E_FORMAT, "%s is declared %s but carries a %s value", what,
                  attr_type_name(t), attr_type_name(k));
  if (t >= 1 && t <= 4 && !present[t])
    return fail(r, KILN_E_FORMAT, "%s is declared %s but has no value", what, attr_type_name(t));
  size_t count = t == 6 ? ap->n_floats : t == 7 ? ap->n_ints : t == 8 ? ap->n_strings : 0;
  if (count > (size_t)INT_MAX)
    return fail(r, KILN_E_FORMAT, "%s has too many values (%zu)", what, count);
  kiln_status s = KILN_OK;
  switch (t) {
    case 1: s = kiln_ir_node_set_float(n, ap->name, ap->f, r->err); break;
    case 2: s = kiln_ir_node_set_int(n, ap->name, ap->i, r->err); break;
    case 3: {
      char *v = NULL;
      if ((s = c_string(r, ap->s, what, &v))) return s;
      s = kiln_ir_node_set_string(n, ap->name, v, r->err);
      free(v);
      break;
    }
    case 4: {
      dense d;
      if ((s = tensor_read(r, ap->t, what, &d))) return s;
      s = kiln_ir_node_set_tensor(n, ap->name, d.dtype, d.dims, d.rank, d.data, r->err);
      free(d.data);
      break;
    }
    case 6: s = kiln_ir_node_set_floats(n, ap->name, ap->floats, (int)count, r->err); break;
    case 7: s = kiln_ir_node_set_ints(n, ap->name, ap->ints, (int)count, r->err); break;
    case 8: {
      char **v = calloc(count ? count : 1, sizeof *v);
      if (!v) return fail(r, KILN_E_NOMEM, "%s: out of memory", what);
      kiln_status cs = KILN_OK; /* a c_string failure already carries its message */
      for (size_t k = 0; k < count && !cs; k++) cs = c_string(r, ap->strings[k], what, &v[k]);
      if (!cs) s = kiln_ir_node_set_strings(n, ap->name, (const char *const *)v, (int)count, r->err);
      for (size_t k = 0; k < count; k++) free(v[k]);
      free(v);
      if (cs) return cs;
      break;
    }
    default:
      return fail(r, KILN_E_UNSUPPORTED, "%s is of type %s, which kiln does not support "
                  "(no subgraphs, sparse or type attributes)", what, attr_type_name(t));
  }
  return s ? prefixed(r, s) : KILN_OK;
}

/* A graph input or output from its ValueInfoProto. */
static kiln_status read_value(const reader *r, const Onnx__ValueInfoProto *vp, const char *kind,
                              size_t idx, kiln_ir_graph *g, int is_output) {
  char what[320];
  snprintf(what, sizeof what, "graph %s #%zu \"%s\"", kind, idx, str(vp->name));
  if (!vp->name || !*vp->name) return fail(r, KILN_E_FORMAT, "%s has no name", what);
  kiln_dtype dt = KILN_DTYPE_UNDEFINED;
  int rank = -1;
  int64_t dims[KILN_IR_MAX_RANK];
  const char *params[KILN_IR_MAX_RANK];
  const Onnx__TypeProto *tp = vp->type;
  if (tp) {
    if (tp->value_case != ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE)
      return fail(r, KILN_E_UNSUPPORTED, "%s is not a tensor (sequences, maps, optionals and "
                  "sparse tensors are not supported)", what);
    const Onnx__TypeProto__Tensor *tt = tp->tensor_type;
    if (tt->has_elem_type && tt->elem_type != 0) {
      kiln_status s = map_dtype(r, tt->elem_type, what, &dt);
      if (s) return s;
    }
    if (tt->shape) {
      if (tt->shape->n_dim > KILN_IR_MAX_RANK)
        return fail(r, KILN_E_UNSUPPORTED, "%s: rank %zu exceeds kiln's maximum of %d", what,
                    tt->shape->n_dim, KILN_IR_MAX_RANK);
      rank = (int)tt->shape->n_dim;
      for (int i = 0; i < rank; i++) {
        const Onnx__TensorShapeProto__Dimension *d = tt->shape->dim[i];
        dims[i] = -1;
        params[i] = NULL;
        if (d->value_case == ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE) {
          if (d->dim_value < 0)
            return fail(r, KILN_E_FORMAT, "%s: dim %d is %lld (expected >= 0 or a name)", what, i,
                        (long long)d->dim_value);
          dims[i] = d->dim_value;
        } else if (d->value_case == ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_PARAM &&
                   d->dim_param && *d->dim_param) {
          params[i] = d->dim_param;
        }
      }
    }
  }
  kiln_status s = is_output ? kiln_ir_add_output(g, vp->name, dt, dims, params, rank, r->err)
                            : kiln_ir_add_input(g, vp->name, dt, dims, params, rank, r->err);
  return s ? prefixed(r, s) : KILN_OK;
}

static int is_default_domain(const char *d) { return !d || !*d || strcmp(d, "ai.onnx") == 0; }

static kiln_status read_opsets(const reader *r, const Onnx__ModelProto *m, kiln_ir_graph *g) {
  if (m->n_opset_import == 0)
    return fail(r, KILN_E_FORMAT, "the model has no opset_import (expected the default ONNX "
                "domain at opset %d..%d)", MIN_OPSET, MAX_OPSET);
  int have_default = 0;
  for (size_t i = 0; i < m->n_opset_import; i++) {
    const Onnx__OperatorSetIdProto *o = m->opset_import[i];
    const char *dom = str(o->domain);
    if (!o->has_version)
      return fail(r, KILN_E_FORMAT, "opset_import #%zu (domain \"%s\") has no version", i, dom);
    for (size_t j = 0; j < i; j++) {
      const char *dj = str(m->opset_import[j]->domain);
      if (strcmp(dj, dom) == 0 || (is_default_domain(dj) && is_default_domain(dom)))
        return fail(r, KILN_E_FORMAT, "opset_import lists domain \"%s\" twice", dom);
    }
    if (is_default_domain(dom)) {
      have_default = 1;
      if (o->version < MIN_OPSET || o->version > MAX_OPSET)
        return fail(r, KILN_E_UNSUPPORTED, "default-domain opset %lld is outside what kiln "
                    "reads (%d..%d)", (long long)o->version, MIN_OPSET, MAX_OPSET);
    }
    kiln_status s = kiln_ir_set_opset(g, dom, o->version, r->err);
    if (s) return prefixed(r, s);
  }
  if (!have_default && m->graph) {
    /* A model of another domain's ops only: say that, not what it does not import. */
    for (size_t i = 0; i < m->graph->n_node; i++) {
      const Onnx__NodeProto *np = m->graph->node[i];
      if (!is_default_domain(np->domain)) {
        char node[320];
        return fail(r, KILN_E_UNSUPPORTED, "%s: domain \"%s\" is not supported (kiln runs the "
                    "default ONNX domain)", node_label(np, i, node, sizeof node), np->domain);
      }
    }
  }
  if (!have_default)
    return fail(r, KILN_E_FORMAT, "opset_import has no entry for the default ONNX domain "
                "(expected opset %d..%d)", MIN_OPSET, MAX_OPSET);
  return KILN_OK;
}

static kiln_status read_model(const reader *r, const Onnx__ModelProto *m, kiln_ir_graph *g,
                              name_set *defined) {
  if (!m->has_ir_version)
    return fail(r, KILN_E_FORMAT, "the model has no ir_version");
  if (m->ir_version < MIN_IR_VERSION || m->ir_version > MAX_IR_VERSION)
    return fail(r, KILN_E_UNSUPPORTED, "ir_version %lld is outside what kiln reads (%d..%d)",
                (long long)m->ir_version, MIN_IR_VERSION, MAX_IR_VERSION);
  g->ir_version = m->ir_version;
  if (m->n_functions > 0)
    return fail(r, KILN_E_UNSUPPORTED, "the model defines %zu local functions; kiln does not "
                "support model functions", m->n_functions);
  kiln_status s = read_opsets(r, m, g);
  if (s) return s;
  if (m->producer_name || m->producer_version) {
    if ((s = kiln_ir_set_producer(g, str(m->producer_name), str(m->producer_version), r->err)))
      return prefixed(r, s);
  }
  for (size_t i = 0; i < m->n_metadata_props; i++) {
    const Onnx__StringStringEntryProto *e = m->metadata_props[i];
    if (!e->key || !*e->key)
      return fail(r, KILN_E_FORMAT, "metadata_props #%zu has no key", i);
    if (kiln_ir_get_meta(g, e->key))
      return fail(r, KILN_E_FORMAT, "metadata_props key \"%s\" appears twice", e->key);
    if ((s = kiln_ir_set_meta(g, e->key, str(e->value), r->err))) return prefixed(r, s);
  }
  const Onnx__GraphProto *gp = m->graph;
  if (!gp) return fail(r, KILN_E_FORMAT, "the model has no graph");

  size_t names = gp->n_initializer + gp->n_sparse_initializer + gp->n_input;
  for (size_t i = 0; i < gp->n_node; i++) names += gp->node[i]->n_output;
  if (!set_init(defined, names)) return fail(r, KILN_E_NOMEM, "out of memory");

  /* Initializers first: graph inputs that repeat them (IR < 4 style) are dropped. */
  for (size_t i = 0; i < gp->n_initializer; i++) {
    const Onnx__TensorProto *tp = gp->initializer[i];
    char what[320];
    snprintf(what, sizeof what, "initializer #%zu \"%s\"", i, str(tp->name));
    if (!tp->name || !*tp->name) return fail(r, KILN_E_FORMAT, "%s has no name", what);
    snprintf(what, sizeof what, "initializer \"%s\"", tp->name);
    if (set_add(defined, tp->name, "an initializer"))
      return fail(r, KILN_E_FORMAT, "%s appears twice", what);
    dense d;
    if ((s = tensor_read(r, tp, what, &d))) return s;
    s = kiln_ir_add_initializer(g, tp->name, d.dtype, d.dims, d.rank, d.data, r->err);
    free(d.data);
    if (s) return prefixed(r, s);
  }
  for (size_t i = 0; i < gp->n_sparse_initializer; i++) {
    const Onnx__SparseTensorProto *sp = gp->sparse_initializer[i];
    dense d;
    if ((s = sparse_read(r, sp, i, &d))) return s;
    const char *name = sp->values->name;
    if (!name || !*name) s = fail(r, KILN_E_FORMAT, "sparse initializer #%zu has no name", i);
    else if (set_add(defined, name, "an initializer"))
      s = fail(r, KILN_E_FORMAT, "initializer \"%s\" appears twice", name);
    else if ((s = kiln_ir_add_initializer(g, name, d.dtype, d.dims, d.rank, d.data, r->err)))
      s = prefixed(r, s);
    free(d.data);
    if (s) return s;
  }
  for (size_t i = 0; i < gp->n_input; i++) {
    const Onnx__ValueInfoProto *vp = gp->input[i];
    if (vp->name && *vp->name && kiln_ir_find_initializer(g, vp->name)) continue;
    if (vp->name && *vp->name && set_add(defined, vp->name, "a graph input"))
      return fail(r, KILN_E_FORMAT, "graph input \"%s\" appears twice", vp->name);
    if ((s = read_value(r, vp, "input", i, g, 0))) return s;
  }

  for (size_t i = 0; i < gp->n_node; i++) {
    const Onnx__NodeProto *np = gp->node[i];
    char node[320];
    node_label(np, i, node, sizeof node);
    if (!np->op_type || !*np->op_type)
      return fail(r, KILN_E_FORMAT, "%s: op_type is empty", node);
    if (!is_default_domain(np->domain)) {
      if (kiln_ir_opset_version(g, np->domain) == 0)
        return fail(r, KILN_E_FORMAT, "%s: domain \"%s\" is not in opset_import", node,
                    np->domain);
      return fail(r, KILN_E_UNSUPPORTED, "%s: domain \"%s\" is not supported (kiln runs the "
                  "default ONNX domain)", node, np->domain);
    }
    if (np->n_input > (size_t)INT_MAX || np->n_output > (size_t)INT_MAX ||
        np->n_attribute > (size_t)INT_MAX)
      return fail(r, KILN_E_FORMAT, "%s: too many inputs, outputs or attributes", node);
    for (size_t k = 0; k < np->n_output; k++) {
      const char *o = str(np->output[k]);
      if (!*o) continue; /* an omitted optional output */
      const char *prev = set_add(defined, o, np->name && *np->name ? np->name : np->op_type);
      if (prev)
        return fail(r, KILN_E_FORMAT, "%s: output \"%s\" is already defined (by %s)", node, o,
                    prev);
    }
    for (size_t k = 0; k < np->n_input; k++)
      if (!np->input[k]) return fail(r, KILN_E_FORMAT, "%s: input %zu is missing", node, k);
    for (size_t k = 0; k < np->n_output; k++)
      if (!np->output[k]) return fail(r, KILN_E_FORMAT, "%s: output %zu is missing", node, k);
    kiln_ir_node *n;
    s = kiln_ir_add_node(g, np->op_type, str(np->name), (const char *const *)np->input,
                         (int)np->n_input, (const char *const *)np->output, (int)np->n_output, &n,
                         r->err);
    if (s) return prefixed(r, s);
    if (np->domain && *np->domain && (s = kiln_ir_node_set_domain(n, np->domain, r->err)))
      return prefixed(r, s);
    for (size_t a = 0; a < np->n_attribute; a++) {
      const char *an = np->attribute[a]->name;
      for (size_t b = 0; b < a && an; b++)
        if (np->attribute[b]->name && strcmp(np->attribute[b]->name, an) == 0)
          return fail(r, KILN_E_FORMAT, "%s: attribute \"%s\" appears twice", node, an);
      if ((s = read_attr(r, np->attribute[a], n, node))) return s;
    }
  }

  for (size_t i = 0; i < gp->n_output; i++) {
    const Onnx__ValueInfoProto *vp = gp->output[i];
    if (vp->name && *vp->name) {
      for (size_t j = 0; j < i; j++)
        if (gp->output[j]->name && strcmp(gp->output[j]->name, vp->name) == 0)
          return fail(r, KILN_E_FORMAT, "graph output \"%s\" appears twice", vp->name);
      if (!set_find(defined, vp->name))
        return fail(r, KILN_E_FORMAT, "graph output \"%s\" is not produced by any node, input "
                    "or initializer", vp->name);
    }
    if ((s = read_value(r, vp, "output", i, g, 1))) return s;
  }
  if (gp->n_output == 0) return fail(r, KILN_E_FORMAT, "the graph has no outputs");

  if ((s = kiln_ir_toposort(g, r->err))) return prefixed(r, s);
  return KILN_OK;
}

kiln_status kiln_onnx_read_buffer(const void *data, size_t size, const char *source_name,
                                  kiln_ir_graph **out, kiln_error *err) {
  reader r = {source_name && *source_name ? source_name : "<buffer>", err};
  if (!out) return fail(&r, KILN_E_INVALID, "no place to put the graph (out is NULL)");
  *out = NULL;
  if (!data && size) return fail(&r, KILN_E_INVALID, "data is NULL");
  if (size == 0) return fail(&r, KILN_E_FORMAT, "empty input; expected an ONNX model");
  kiln_status s = scan(&r, data, size, 0, &onnx__model_proto__descriptor, 0);
  if (s) return s;
  Onnx__ModelProto *m = onnx__model_proto__unpack(NULL, size, data);
  if (!m)
    return fail(&r, KILN_E_FORMAT, "not a valid ONNX ModelProto (protobuf-c rejected a value, "
                "e.g. a packed array whose length is not a multiple of its element size)");
  kiln_ir_graph *g = NULL;
  name_set defined = {0};
  s = kiln_ir_create(m->graph ? str(m->graph->name) : "", &g, err);
  if (s) s = prefixed(&r, s);
  else s = read_model(&r, m, g, &defined);
  set_free(&defined);
  onnx__model_proto__free_unpacked(m, NULL);
  if (s) {
    kiln_ir_free(g);
    return s;
  }
  *out = g;
  return KILN_OK;
}

kiln_status kiln_onnx_read_file(const char *path, kiln_ir_graph **out, kiln_error *err) {
  if (!path) return kiln_error_set(err, KILN_E_INVALID, "kiln_onnx_read_file: path is NULL");
  if (out) *out = NULL;
  FILE *f = fopen(path, "rb");
  if (!f) return kiln_error_set(err, KILN_E_IO, "%s: cannot open (%s)", path, strerror(errno));
  size_t cap = 1 << 16, n = 0;
  uint8_t *buf = malloc(cap);
  kiln_status s = KILN_OK;
  while (buf) {
    if (n == cap) {
      if (cap >= ((size_t)1 << 31)) {
        s = kiln_error_set(err, KILN_E_UNSUPPORTED, "%s: larger than 2 GiB, the limit of an "
                           "ONNX file without external data", path);
        break;
      }
      uint8_t *p = realloc(buf, cap * 2);
      if (!p) break;
      buf = p;
      cap *= 2;
    }
    size_t got = fread(buf + n, 1, cap - n, f);
    n += got;
    if (got == 0) {
      if (ferror(f)) s = kiln_error_set(err, KILN_E_IO, "%s: read failed after %zu bytes", path, n);
      break;
    }
  }
  fclose(f);
  if (!buf) return kiln_error_set(err, KILN_E_NOMEM, "%s: out of memory", path);
  if (!s && n == cap) s = kiln_error_set(err, KILN_E_NOMEM, "%s: out of memory", path);
  if (!s) s = kiln_onnx_read_buffer(buf, n, path, out, err);
  free(buf);
  return s;
}

/* kiln inspect — the model.summary() of a .onnx: inputs, outputs, operators, the shape
 * of every node's output, parameters, weight and arena bytes, opset, producer and
 * metadata. */
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "cli.h"
#include "kiln/infer.h"
#include "kiln/quantize.h"

static const char *const CMD = "inspect";

void cmd_inspect_usage(FILE *out) {
  fprintf(out,
          "Usage: kiln inspect MODEL.onnx [--json]\n"
          "\n"
          "Describes an ONNX model: its inputs and outputs with their shapes, the operators\n"
          "it uses (with counts), every node with the shape of its output, the parameter\n"
          "count and weight bytes, the arena a kiln session needs at batch 1024, the opset,\n"
          "the producer and the metadata (kiln.loss, kiln.class_names, ...).\n"
          "\n"
          "  --json    print one JSON object instead of the table\n"
          "\n"
          "Exit status: 0 success, 2 a usage or input error (unreadable or invalid file).\n");
}

/* --- shapes: a small propagation over the ops kiln writes and reads ------------------ */

typedef struct shape {
  int known;
  int rank;
  int64_t dims[KILN_IR_MAX_RANK]; /* < 0: symbolic */
  const char *params[KILN_IR_MAX_RANK];
} shape;

typedef struct shape_table {
  int n, cap;
  const char **names;
  shape *shapes;
} shape_table;

static shape *lookup(shape_table *t, const char *name) {
  for (int i = 0; i < t->n; i++)
    if (strcmp(t->names[i], name) == 0) return &t->shapes[i];
  return NULL;
}

static int put(shape_table *t, const char *name, const shape *s) {
  shape *have = lookup(t, name);
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

static shape from_value(const kiln_ir_value *v) {
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

static shape infer_node(const kiln_ir_node *n, shape_table *t) {
  shape o = {0};
  shape *a = n->n_inputs > 0 ? lookup(t, n->inputs[0]) : NULL;
  shape *b = n->n_inputs > 1 ? lookup(t, n->inputs[1]) : NULL;
  const char *op = n->op_type;
  if (!a || !a->known) return o;
  if (!strcmp(op, "Relu") || !strcmp(op, "Sigmoid") || !strcmp(op, "Tanh") ||
      !strcmp(op, "Softmax") || !strcmp(op, "Identity") || !strcmp(op, "Dropout") ||
      !strcmp(op, "LeakyRelu") || !strcmp(op, "Clip") || !strcmp(op, "Neg") ||
      !strcmp(op, "QuantizeLinear") || !strcmp(op, "DequantizeLinear")) {
    return *a;
  }
  if (!strcmp(op, "Gemm") && b && b->known && a->rank == 2 && b->rank == 2) {
    o.known = 1;
    o.rank = 2;
    set_dim(&o, 0, a, attr_int(n, "transA", 0) ? 1 : 0);
    set_dim(&o, 1, b, attr_int(n, "transB", 0) ? 0 : 1);
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
  if (!strcmp(op, "Concat")) {
    /* every input known and of one rank; the axis dim adds up (symbolic: unknown) */
    int64_t axis = attr_int(n, "axis", 1);
    if (axis < 0) axis += a->rank;
    if (axis < 0 || axis >= a->rank) return o;
    o = *a;
    for (int k = 1; k < n->n_inputs; k++) {
      const shape *c = lookup(t, n->inputs[k]);
      if (!c || !c->known || c->rank != a->rank) return (shape){0};
      if (o.dims[axis] >= 0 && c->dims[axis] >= 0)
        o.dims[axis] += c->dims[axis];
      else
        o.dims[axis] = -1, o.params[axis] = NULL;
    }
    return o;
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

static void format_shape(const shape *s, char *buf, size_t cap) {
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

static cJSON *shape_json(const shape *s) {
  if (!s || !s->known) return cJSON_CreateNull();
  cJSON *a = cJSON_CreateArray();
  for (int i = 0; a && i < s->rank; i++) {
    if (s->dims[i] >= 0)
      cJSON_AddItemToArray(a, cJSON_CreateNumber((double)s->dims[i]));
    else if (s->params[i])
      cJSON_AddItemToArray(a, cJSON_CreateString(s->params[i]));
    else
      cJSON_AddItemToArray(a, cJSON_CreateNull());
  }
  return a;
}

/* --- the report -------------------------------------------------------------------- */

typedef struct op_count {
  const char *op;
  int count;
} op_count;

int cmd_inspect(int argc, char **argv) {
  const char *path = NULL;
  int json = 0;
  for (int i = 1; i < argc; i++) {
    int r;
    if (argv[i][0] != '-' || argv[i][1] == '\0') {
      if (path) return cli_usage_error(CMD, "unexpected argument \"%s\"", argv[i]);
      path = argv[i];
    } else if ((r = cli_flag(CMD, argv[i], "--json")) != 0) {
      if (r < 0) return CLI_EXIT_ERROR;
      json = 1;
    } else {
      return cli_usage_error(CMD, "unknown option \"%s\"", argv[i]);
    }
  }
  if (!path) return cli_usage_error(CMD, "missing MODEL.onnx");

  kiln_error err = {0};
  kiln_ir_graph *g = NULL;
  if (kiln_onnx_read_file(path, &g, &err)) return cli_kiln_error(CMD, &err);
  /* Pruned weights stored compactly (kiln quantize --prune) become dense again. */
  if (kiln_sparse_unpack(g, NULL, &err)) {
    kiln_ir_free(g);
    return cli_kiln_error(CMD, &err);
  }

  int rc = CLI_EXIT_OK;
  shape_table t = {0};
  shape *node_shapes = calloc((size_t)g->n_nodes + 1, sizeof *node_shapes);
  op_count *ops = calloc((size_t)g->n_nodes + 1, sizeof *ops);
  int n_ops = 0;
  if (!node_shapes || !ops) {
    rc = cli_error(CMD, "out of memory");
    goto done;
  }
  int64_t params = 0;
  size_t weight_bytes = 0;
  for (int i = 0; i < g->n_inputs; i++) {
    shape s = from_value(&g->inputs[i]);
    if (put(&t, g->inputs[i].name, &s)) goto nomem;
  }
  for (int i = 0; i < g->n_initializers; i++) {
    const kiln_ir_tensor *w = &g->initializers[i];
    shape s = {.known = 1, .rank = w->rank};
    for (int k = 0; k < w->rank; k++) s.dims[k] = w->dims[k];
    if (put(&t, w->name, &s)) goto nomem;
    params += kiln_ir_tensor_numel(w);
    weight_bytes += w->bytes;
  }
  /* Shapes follow the data: order the nodes first (a copy would be kinder, but the
   * graph is ours to reorder). */
  kiln_error sort_err = {0};
  int sorted = kiln_ir_toposort(g, &sort_err) == KILN_OK;
  for (int i = 0; i < g->n_nodes; i++) {
    const kiln_ir_node *n = &g->nodes[i];
    node_shapes[i] = sorted ? infer_node(n, &t) : (shape){0};
    for (int k = 0; k < n->n_outputs; k++)
      if (put(&t, n->outputs[k], &node_shapes[i])) goto nomem;
    int j = 0;
    while (j < n_ops && strcmp(ops[j].op, n->op_type)) j++;
    if (j == n_ops) ops[n_ops++].op = n->op_type;
    ops[j].count++;
  }

  /* What the runtime needs: a session planned for batch 1024. */
  kiln_session *s = NULL;
  kiln_error serr = {0};
  kiln_session_options so;
  kiln_session_options_init(&so);
  int have_session = kiln_session_create(g, &so, &s, &serr) == KILN_OK;
  size_t arena = have_session ? kiln_session_arena_bytes(s) : 0;
  const char *kernel = have_session ? kiln_session_kernel_name(s) : NULL;
  kiln_session_free(s);
  int64_t opset = kiln_ir_opset_version(g, "");

  if (json) {
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "file", path);
    cJSON_AddStringToObject(root, "producer", g->producer_name ? g->producer_name : "");
    cJSON_AddStringToObject(root, "producer_version",
                            g->producer_version ? g->producer_version : "");
    cJSON_AddNumberToObject(root, "ir_version", (double)g->ir_version);
    cJSON_AddNumberToObject(root, "opset", (double)opset);
    cJSON *opsets = cJSON_AddObjectToObject(root, "opsets");
    for (int i = 0; i < g->n_opsets; i++)
      cJSON_AddNumberToObject(opsets, g->opsets[i].domain[0] ? g->opsets[i].domain : "ai.onnx",
                              (double)g->opsets[i].version);
    const kiln_ir_value *lists[2] = {g->inputs, g->outputs};
    int counts[2] = {g->n_inputs, g->n_outputs};
    const char *keys[2] = {"inputs", "outputs"};
    for (int k = 0; k < 2; k++) {
      cJSON *arr = cJSON_AddArrayToObject(root, keys[k]);
      for (int i = 0; i < counts[k]; i++) {
        cJSON *o = cJSON_CreateObject();
        shape sh = from_value(&lists[k][i]);
        cJSON_AddStringToObject(o, "name", lists[k][i].name);
        cJSON_AddStringToObject(o, "dtype", kiln_dtype_name(lists[k][i].dtype));
        cJSON_AddItemToObject(o, "shape", shape_json(&sh));
        cJSON_AddItemToArray(arr, o);
      }
    }
    cJSON *opo = cJSON_AddObjectToObject(root, "ops");
    for (int j = 0; j < n_ops; j++) cJSON_AddNumberToObject(opo, ops[j].op, ops[j].count);
    cJSON *nodes = cJSON_AddArrayToObject(root, "nodes");
    for (int i = 0; i < g->n_nodes; i++) {
      const kiln_ir_node *n = &g->nodes[i];
      cJSON *o = cJSON_CreateObject();
      cJSON_AddStringToObject(o, "name", n->name);
      cJSON_AddStringToObject(o, "op", n->op_type);
      cJSON_AddItemToObject(o, "inputs",
                            cJSON_CreateStringArray((const char *const *)n->inputs, n->n_inputs));
      cJSON_AddItemToObject(o, "outputs",
                            cJSON_CreateStringArray((const char *const *)n->outputs, n->n_outputs));
      cJSON_AddItemToObject(o, "shape", shape_json(&node_shapes[i]));
      cJSON_AddItemToArray(nodes, o);
    }
    cJSON_AddNumberToObject(root, "parameters", (double)params);
    cJSON_AddNumberToObject(root, "weight_bytes", (double)weight_bytes);
    if (have_session) {
      cJSON_AddNumberToObject(root, "arena_bytes", (double)arena);
      cJSON_AddNumberToObject(root, "arena_batch", (double)so.max_batch);
      cJSON_AddStringToObject(root, "kernel", kernel);
    } else {
      cJSON_AddNullToObject(root, "arena_bytes");
      cJSON_AddStringToObject(root, "runtime_error", serr.message);
    }
    cJSON *meta = cJSON_AddObjectToObject(root, "metadata");
    for (int i = 0; i < g->n_meta; i++)
      cJSON_AddStringToObject(meta, g->meta[i].key, g->meta[i].value);
    char *text = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    if (!text) goto nomem;
    printf("%s\n", text);
    cJSON_free(text);
  } else {
    char buf[256];
    printf("Model: %s\n", path);
    printf("Producer: %s %s   ir_version %lld   opset", g->producer_name ? g->producer_name : "?",
           g->producer_version ? g->producer_version : "", (long long)g->ir_version);
    for (int i = 0; i < g->n_opsets; i++)
      printf(" %s %lld", g->opsets[i].domain[0] ? g->opsets[i].domain : "ai.onnx",
             (long long)g->opsets[i].version);
    printf("\n\nInputs:\n");
    for (int i = 0; i < g->n_inputs; i++) {
      shape sh = from_value(&g->inputs[i]);
      format_shape(&sh, buf, sizeof buf);
      printf("  %-24s %-8s %s\n", g->inputs[i].name, kiln_dtype_name(g->inputs[i].dtype), buf);
    }
    printf("Outputs:\n");
    for (int i = 0; i < g->n_outputs; i++) {
      shape sh = from_value(&g->outputs[i]);
      format_shape(&sh, buf, sizeof buf);
      printf("  %-24s %-8s %s\n", g->outputs[i].name, kiln_dtype_name(g->outputs[i].dtype), buf);
    }
    printf("\n%-32s %-12s %-20s %s\n", "Node", "Op", "Output shape", "Weights");
    for (int i = 0; i < 78; i++) putchar('-');
    putchar('\n');
    for (int i = 0; i < g->n_nodes; i++) {
      const kiln_ir_node *n = &g->nodes[i];
      int64_t w = 0;
      for (int k = 0; k < n->n_inputs; k++) {
        const kiln_ir_tensor *init = kiln_ir_find_initializer(g, n->inputs[k]);
        if (init) w += kiln_ir_tensor_numel(init);
      }
      format_shape(&node_shapes[i], buf, sizeof buf);
      printf("%-32s %-12s %-20s %lld\n", n->name[0] ? n->name : "(unnamed)", n->op_type, buf,
             (long long)w);
    }
    for (int i = 0; i < 78; i++) putchar('-');
    printf("\nOperators (%d nodes):", g->n_nodes);
    for (int j = 0; j < n_ops; j++)
      printf(" %s x%d%s", ops[j].op, ops[j].count, j + 1 < n_ops ? "," : "");
    printf("\nParameters: %lld (%zu weight bytes in %d initializers)\n", (long long)params,
           weight_bytes, g->n_initializers);
    if (have_session)
      printf("Arena: %zu bytes at batch %lld (kernels: %s)\n", arena, (long long)so.max_batch,
             kernel);
    else
      printf("Arena: - (kiln's runtime cannot run this model: %s)\n", serr.message);
    if (g->n_meta) {
      printf("Metadata:\n");
      for (int i = 0; i < g->n_meta; i++) printf("  %s = %s\n", g->meta[i].key, g->meta[i].value);
    }
  }
  if (fflush(stdout) != 0) rc = cli_error(CMD, "cannot write to stdout");
  goto done;
nomem:
  rc = cli_error(CMD, "out of memory");
done:
  free(t.names);
  free(t.shapes);
  free(node_shapes);
  free(ops);
  kiln_ir_free(g);
  return rc;
}

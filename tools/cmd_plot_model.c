/* kiln plot-model — keras.utils.plot_model: a model's layers as boxes with arrows from
 * each layer's inputs, written as SVG (drawn by kiln) or DOT (for graphviz). */
#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "kiln/atomic_file.h"
#include "kiln/infer.h"
#include "kiln/train.h"
#include "model_draw.h"
#include "onnx_shapes.h"

static const char *const CMD = "plot-model";

void cmd_plot_model_usage(FILE *out) {
  fprintf(out,
          "Usage: kiln plot-model MODEL -o OUT.svg|OUT.dot [--show-shapes] [--show-layer-names]\n"
          "                       [--rankdir TB|LR] [--input-features N]\n"
          "\n"
          "Draws a model as keras.utils.plot_model does: one box per layer, arrows from each\n"
          "layer's inputs to it, ranks from the inputs down (or left to right). MODEL is a\n"
          "trained model (.kiln), a JSON spec, or a .onnx (its nodes, by op type and name,\n"
          "between boxes for the graph inputs and outputs). .svg is drawn by kiln itself;\n"
          ".dot (or .gv) is for graphviz: dot -Tpng OUT.dot -o OUT.png.\n"
          "\n"
          "  -o, --output FILE     the picture: .svg, .dot or .gv (written whole or not at all)\n"
          "  --show-shapes         each box also shows its input and output shapes,\n"
          "                        (None, 64): None is the batch size\n"
          "  --show-layer-names    boxes read \"name (Type)\" instead of the type alone\n"
          "  --rankdir TB|LR       top to bottom (default) or left to right\n"
          "  --input-features N    the input width, for a spec whose Input has no shape\n"
          "\n"
          "Exit status: 0 success, 2 a usage, input or output error.\n");
}

typedef struct options {
  int shapes, names;
} options;

static char *title(const options *o, const char *name, const char *type, char *buf, size_t cap) {
  if (o->names && name && name[0])
    snprintf(buf, cap, "%s (%s)", name, type);
  else
    snprintf(buf, cap, "%s", type);
  return buf;
}

/* --- a kiln model --------------------------------------------------------------- */

static const char *kind_name(kiln_layer_kind k) {
  switch (k) {
    case KILN_LAYER_INPUT: return "InputLayer";
    case KILN_LAYER_DENSE: return "Dense";
    case KILN_LAYER_DROPOUT: return "Dropout";
    case KILN_LAYER_CONCATENATE: return "Concatenate";
    case KILN_LAYER_CUSTOM: return "Layer";
  }
  return "Layer";
}

static int from_model(const kiln_model *m, const options *o, model_drawing *d) {
  kiln_error err = {0};
  int n = kiln_model_layer_count(m);
  char t[600], in[600], out[64];
  for (int i = 0; i < n; i++) {
    kiln_layer_info li;
    if (kiln_model_layer(m, i, &li, &err)) return cli_kiln_error(CMD, &err);
    snprintf(out, sizeof out, "(None, %lld)", (long long)li.out_features);
    size_t len = 0;
    if (li.kind == KILN_LAYER_INPUT || li.n_inputs == 0) {
      snprintf(in, sizeof in, "%s", out);
    } else {
      len += (size_t)snprintf(in, sizeof in, "%s", li.n_inputs > 1 ? "[" : "");
      for (int k = 0; k < li.n_inputs && len < sizeof in; k++) {
        kiln_layer_info src;
        if (kiln_model_layer(m, li.inputs[k], &src, &err)) return cli_kiln_error(CMD, &err);
        len += (size_t)snprintf(in + len, sizeof in - len, "%s(None, %lld)", k ? ", " : "",
                                (long long)src.out_features);
      }
      if (li.n_inputs > 1 && len < sizeof in) snprintf(in + len, sizeof in - len, "]");
    }
    if (model_drawing_add_box(d, title(o, li.name, kind_name(li.kind), t, sizeof t),
                              o->shapes ? in : NULL, o->shapes ? out : NULL))
      return cli_error(CMD, "out of memory");
    for (int k = 0; k < li.n_inputs; k++)
      if (model_drawing_add_edge(d, li.inputs[k], i)) return cli_error(CMD, "out of memory");
  }
  return CLI_EXIT_OK;
}

/* --- a .onnx ---------------------------------------------------------------------- */

/* "(batch, 64)": Keras' parentheses; a symbolic dim by its name, None when unnamed. */
static void format_dims(const shape *s, char *buf, size_t cap) {
  if (!s || !s->known) {
    snprintf(buf, cap, "?");
    return;
  }
  size_t len = (size_t)snprintf(buf, cap, "(");
  for (int i = 0; i < s->rank && len < cap; i++) {
    if (s->dims[i] >= 0)
      len += (size_t)snprintf(buf + len, cap - len, "%s%lld", i ? ", " : "", (long long)s->dims[i]);
    else
      len += (size_t)snprintf(buf + len, cap - len, "%s%s", i ? ", " : "",
                              s->params[i] ? s->params[i] : "None");
  }
  if (len < cap) snprintf(buf + len, cap - len, s->rank == 1 ? ",)" : ")");
}

/* The box that produces each value: graph inputs, then nodes. */
typedef struct producers {
  int n, cap;
  const char **names;
  int *box;
} producers;

static int producer_of(const producers *p, const char *name) {
  for (int i = p->n - 1; i >= 0; i--)
    if (strcmp(p->names[i], name) == 0) return p->box[i];
  return -1;
}

static int add_producer(producers *p, const char *name, int box) {
  if (p->n == p->cap) {
    int cap = p->cap ? 2 * p->cap : 32;
    const char **names = realloc(p->names, (size_t)cap * sizeof *names);
    if (!names) return -1;
    p->names = names;
    int *b = realloc(p->box, (size_t)cap * sizeof *b);
    if (!b) return -1;
    p->box = b;
    p->cap = cap;
  }
  p->names[p->n] = name;
  p->box[p->n++] = box;
  return 0;
}

static int from_onnx(const char *path, kiln_ir_graph *g, const options *o, model_drawing *d) {
  kiln_error err = {0};
  if (kiln_ir_toposort(g, &err)) return cli_kiln_error(CMD, &err);
  int rc = CLI_EXIT_OK;
  shape_table t = {0};
  producers p = {0};
  char tt[600], in[600], out[300];
  for (int i = 0; i < g->n_initializers; i++) {
    shape s = {.known = 1, .rank = g->initializers[i].rank};
    for (int k = 0; k < s.rank; k++) s.dims[k] = g->initializers[i].dims[k];
    if (shape_put(&t, g->initializers[i].name, &s)) goto nomem;
  }
  for (int i = 0; i < g->n_inputs; i++) {
    shape s = shape_from_value(&g->inputs[i]);
    if (shape_put(&t, g->inputs[i].name, &s)) goto nomem;
    format_dims(&s, out, sizeof out);
    if (model_drawing_add_box(d, title(o, g->inputs[i].name, "Input", tt, sizeof tt),
                              o->shapes ? out : NULL, o->shapes ? out : NULL) ||
        add_producer(&p, g->inputs[i].name, d->n_boxes - 1))
      goto nomem;
  }
  for (int i = 0; i < g->n_nodes; i++) {
    const kiln_ir_node *n = &g->nodes[i];
    /* The node's data inputs (weights are not boxes) and their shapes. */
    size_t len = 0;
    int n_data = 0;
    for (int k = 0; k < n->n_inputs; k++)
      if (n->inputs[k][0] && !kiln_ir_find_initializer(g, n->inputs[k])) n_data++;
    len += (size_t)snprintf(in, sizeof in, "%s", n_data > 1 ? "[" : "");
    int seen = 0;
    for (int k = 0; k < n->n_inputs && len < sizeof in; k++) {
      if (!n->inputs[k][0] || kiln_ir_find_initializer(g, n->inputs[k])) continue;
      format_dims(shape_lookup(&t, n->inputs[k]), out, sizeof out);
      len += (size_t)snprintf(in + len, sizeof in - len, "%s%s", seen++ ? ", " : "", out);
    }
    if (n_data > 1 && len < sizeof in) snprintf(in + len, sizeof in - len, "]");
    shape s = shape_infer_node(n, &t);
    for (int k = 0; k < n->n_outputs; k++)
      if (n->outputs[k][0] && shape_put(&t, n->outputs[k], &s)) goto nomem;
    format_dims(&s, out, sizeof out);
    if (model_drawing_add_box(d, title(o, n->name, n->op_type, tt, sizeof tt),
                              o->shapes && n_data ? in : NULL, o->shapes ? out : NULL))
      goto nomem;
    int box = d->n_boxes - 1;
    for (int k = 0; k < n->n_inputs; k++) {
      if (!n->inputs[k][0]) continue;
      int from = producer_of(&p, n->inputs[k]);
      if (from >= 0 && model_drawing_add_edge(d, from, box)) goto nomem;
    }
    for (int k = 0; k < n->n_outputs; k++)
      if (n->outputs[k][0] && add_producer(&p, n->outputs[k], box)) goto nomem;
  }
  for (int i = 0; i < g->n_outputs; i++) {
    int from = producer_of(&p, g->outputs[i].name);
    if (from < 0) {
      rc = cli_error(CMD, "%s: graph output \"%s\" is produced by no node", path,
                     g->outputs[i].name);
      goto done;
    }
    shape s = shape_from_value(&g->outputs[i]);
    format_dims(s.known ? &s : shape_lookup(&t, g->outputs[i].name), out, sizeof out);
    if (model_drawing_add_box(d, title(o, g->outputs[i].name, "Output", tt, sizeof tt),
                              o->shapes ? out : NULL, o->shapes ? out : NULL) ||
        model_drawing_add_edge(d, from, d->n_boxes - 1))
      goto nomem;
  }
  goto done;
nomem:
  rc = cli_error(CMD, "out of memory");
done:
  free(t.names);
  free(t.shapes);
  free(p.names);
  free(p.box);
  return rc;
}

/* --- the command ---------------------------------------------------------------- */

/* 1: the file starts with '{' (a JSON spec), 0: not. */
static int starts_with_brace(FILE *f) {
  int c;
  do c = fgetc(f);
  while (c != EOF && (isspace(c) || c == 0xEF || c == 0xBB || c == 0xBF));
  return c == '{';
}

int cmd_plot_model(int argc, char **argv) {
  const char *path = NULL, *output = NULL, *rankdir = "TB";
  options o = {0};
  int64_t features = 0;
  for (int i = 1; i < argc; i++) {
    const char *v;
    int r;
    if (argv[i][0] != '-' || argv[i][1] == '\0') {
      if (path) return cli_usage_error(CMD, "unexpected argument \"%s\"", argv[i]);
      path = argv[i];
    } else if ((r = cli_option(CMD, argc, argv, &i, "--output", &v)) != 0 ||
               (r = cli_option(CMD, argc, argv, &i, "-o", &v)) != 0) {
      if (r < 0) return CLI_EXIT_ERROR;
      output = v;
    } else if ((r = cli_option(CMD, argc, argv, &i, "--rankdir", &v)) != 0) {
      if (r < 0) return CLI_EXIT_ERROR;
      if (strcmp(v, "TB") && strcmp(v, "LR"))
        return cli_usage_error(CMD, "--rankdir: expected TB or LR, got \"%s\"", v);
      rankdir = v;
    } else if ((r = cli_option(CMD, argc, argv, &i, "--input-features", &v)) != 0) {
      if (r < 0 || cli_parse_int64(CMD, "--input-features", v, 1, INT64_MAX, &features))
        return CLI_EXIT_ERROR;
    } else if ((r = cli_flag(CMD, argv[i], "--show-shapes")) != 0) {
      if (r < 0) return CLI_EXIT_ERROR;
      o.shapes = 1;
    } else if ((r = cli_flag(CMD, argv[i], "--show-layer-names")) != 0) {
      if (r < 0) return CLI_EXIT_ERROR;
      o.names = 1;
    } else {
      return cli_usage_error(CMD, "unknown option \"%s\"", argv[i]);
    }
  }
  if (!path) return cli_usage_error(CMD, "missing MODEL (.kiln, .json or .onnx)");
  if (!output) return cli_usage_error(CMD, "missing -o OUT.svg or -o OUT.dot");
  int dot = cli_ends_with(output, ".dot") || cli_ends_with(output, ".gv");
  if (!dot && !cli_ends_with(output, ".svg")) {
    const char *ext = strrchr(output, '.');
    return cli_usage_error(CMD,
                           "-o %s: unknown extension \"%s\": write .svg (drawn by kiln) or "
                           ".dot/.gv (for graphviz)",
                           output, ext && !strchr(ext, '/') ? ext : "");
  }
  if (cli_check_output_path(CMD, "-o", output)) return CLI_EXIT_ERROR;

  FILE *in = fopen(path, "rb");
  if (!in) return cli_error(CMD, "%s: cannot open: %s (expected a .kiln, .json or .onnx file)",
                            path, strerror(errno));
  int json = starts_with_brace(in) || cli_ends_with(path, ".json");
  fclose(in);

  int rc = CLI_EXIT_OK;
  kiln_error err = {0};
  model_drawing d = {0};
  if (cli_ends_with(path, ".onnx")) {
    kiln_ir_graph *g = NULL;
    if (kiln_onnx_read_file(path, &g, &err)) return cli_kiln_error(CMD, &err);
    rc = from_onnx(path, g, &o, &d);
    kiln_ir_free(g);
  } else {
    kiln_model *m = NULL;
    if (json) {
      kiln_spec *spec = NULL;
      if (kiln_spec_load(path, &spec, &err)) return cli_kiln_error(CMD, &err);
      kiln_status s = kiln_spec_build(spec, features, KILN_SEED_FROM_SPEC, &m, &err);
      kiln_spec_free(spec);
      if (s) {
        int r = cli_kiln_error(CMD, &err);
        if (!features && strstr(err.message, "input width"))
          fprintf(stderr, "Or give the width here: kiln plot-model %s --input-features N ...\n", path);
        return r;
      }
    } else if (kiln_model_load(path, &m, &err)) {
      return cli_kiln_error(CMD, &err);
    }
    rc = from_model(m, &o, &d);
    kiln_model_free(m);
  }
  if (rc) {
    model_drawing_free(&d);
    return rc;
  }

  kiln_atomic_file f;
  if (kiln_atomic_open(&f, output, "w", &err)) {
    model_drawing_free(&d);
    return cli_kiln_error(CMD, &err);
  }
  int lr = strcmp(rankdir, "LR") == 0;
  int lrc = dot ? model_drawing_write_dot(&d, lr, f.fp) : model_drawing_write_svg(&d, lr, f.fp);
  model_drawing_free(&d);
  if (lrc) {
    kiln_atomic_abort(&f);
    return cli_error(CMD, "%s: %s", path,
                     lrc == GRAPH_LAYOUT_CYCLE ? "the layers form a cycle: not a model graph"
                     : lrc == GRAPH_LAYOUT_NO_MEMORY ? "out of memory"
                                                     : "a layer's input is outside the model");
  }
  if (kiln_atomic_commit(&f, &err)) return cli_kiln_error(CMD, &err);
  return CLI_EXIT_OK;
}

/* kiln command — a model as boxes and arrows, drawn as SVG or DOT (`kiln plot-model`).
 * The caller fills a model_drawing from a kiln model or a .onnx; this file only lays it
 * out (graph_layout.c) and writes it. */
#ifndef KILN_TOOLS_MODEL_DRAW_H
#define KILN_TOOLS_MODEL_DRAW_H

#include <stdio.h>

#include "graph_layout.h"

typedef struct model_box {
  char *title;     /* "dense_1 (Dense)" or "Dense" */
  char *in_shape;  /* "(None, 64)", "[(None, 10), (None, 5)]", or NULL: not shown */
  char *out_shape;
} model_box;

typedef struct model_drawing {
  int n_boxes, cap_boxes;
  model_box *boxes;
  int n_edges, cap_edges;
  graph_edge *edges; /* from an input box to the box that consumes it */
} model_drawing;

/* Append a box (the strings are copied; in/out may be NULL) or an edge. 0 ok, -1 out
 * of memory. */
int model_drawing_add_box(model_drawing *d, const char *title, const char *in_shape,
                          const char *out_shape);
int model_drawing_add_edge(model_drawing *d, int from, int to);
void model_drawing_free(model_drawing *d);

/* Write the drawing; left_right: ranks go rightwards (rankdir LR) instead of down.
 * Return a GRAPH_LAYOUT_* code (OK, CYCLE, NO_MEMORY, ...); write errors are left to
 * the FILE (ferror). */
int model_drawing_write_svg(const model_drawing *d, int left_right, FILE *f);
int model_drawing_write_dot(const model_drawing *d, int left_right, FILE *f);

#endif

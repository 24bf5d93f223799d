/* kiln command — boxes and arrows of a model, as SVG or DOT (see model_draw.h). */
#include "model_draw.h"

#include <stdlib.h>
#include <string.h>

#include "svg.h"

#define FONT 13.0
#define LINE 18.0
#define PAD_X 12.0
#define PAD_Y 8.0

static char *dup_or_null(const char *s) { return s ? strdup(s) : NULL; }

int model_drawing_add_box(model_drawing *d, const char *title, const char *in_shape,
                          const char *out_shape) {
  if (d->n_boxes == d->cap_boxes) {
    int cap = d->cap_boxes ? 2 * d->cap_boxes : 16;
    model_box *b = realloc(d->boxes, (size_t)cap * sizeof *b);
    if (!b) return -1;
    d->boxes = b;
    d->cap_boxes = cap;
  }
  model_box *b = &d->boxes[d->n_boxes];
  b->title = strdup(title);
  b->in_shape = dup_or_null(in_shape);
  b->out_shape = dup_or_null(out_shape);
  if (!b->title || (in_shape && !b->in_shape) || (out_shape && !b->out_shape)) {
    free(b->title);
    free(b->in_shape);
    free(b->out_shape);
    return -1;
  }
  d->n_boxes++;
  return 0;
}

int model_drawing_add_edge(model_drawing *d, int from, int to) {
  if (d->n_edges == d->cap_edges) {
    int cap = d->cap_edges ? 2 * d->cap_edges : 16;
    graph_edge *e = realloc(d->edges, (size_t)cap * sizeof *e);
    if (!e) return -1;
    d->edges = e;
    d->cap_edges = cap;
  }
  d->edges[d->n_edges++] = (graph_edge){from, to};
  return 0;
}

void model_drawing_free(model_drawing *d) {
  for (int i = 0; i < d->n_boxes; i++) {
    free(d->boxes[i].title);
    free(d->boxes[i].in_shape);
    free(d->boxes[i].out_shape);
  }
  free(d->boxes);
  free(d->edges);
  memset(d, 0, sizeof *d);
}

/* The text lines of a box: its title, then its shapes when it has them. */
static int box_lines(const model_box *b, char lines[3][512]) {
  int n = 0;
  snprintf(lines[n++], 512, "%s", b->title);
  if (b->in_shape) snprintf(lines[n++], 512, "input:  %s", b->in_shape);
  if (b->out_shape) snprintf(lines[n++], 512, "output: %s", b->out_shape);
  return n;
}

/* Where edge e leaves its source (out) or enters its target (!out), across the rank
 * direction: a box's edges are spread over its side, ordered by where their other
 * end lies, so arrows into a Concatenate do not pile up on one point. */
/* The cross-rank coordinate of edge f's other end as seen from its source (out) or
 * target (!out): the nearest bend, or the far box. */
static double far_end(const model_drawing *d, const graph_layout *l, int left_right, int f,
                      int out) {
  int far = out ? d->edges[f].to : d->edges[f].from;
  if (l->bend_start[f + 1] > l->bend_start[f]) {
    int bend = out ? l->bend_start[f] : l->bend_start[f + 1] - 1;
    return left_right ? l->bend_y[bend] : l->bend_x[bend];
  }
  return left_right ? l->y[far] : l->x[far];
}

static double port(const model_drawing *d, const graph_layout *l, const double *w,
                   const double *h, int left_right, int e, int out) {
  int v = out ? d->edges[e].from : d->edges[e].to;
  double mine = far_end(d, l, left_right, e, out);
  int k = 0, before = 0;
  for (int f = 0; f < d->n_edges; f++) {
    if ((out ? d->edges[f].from : d->edges[f].to) != v) continue;
    k++;
    if (f == e) continue;
    double other = far_end(d, l, left_right, f, out);
    if (other < mine || (other == mine && f < e)) before++;
  }
  double centre = left_right ? l->y[v] : l->x[v], size = left_right ? h[v] : w[v];
  return centre + ((before + 1.0) / (k + 1.0) - 0.5) * size * 0.8;
}

int model_drawing_write_svg(const model_drawing *d, int left_right, FILE *f) {
  int n = d->n_boxes;
  double *w = calloc((size_t)n + 1, sizeof *w), *h = calloc((size_t)n + 1, sizeof *h);
  graph_layout l;
  if (!w || !h) {
    free(w);
    free(h);
    return GRAPH_LAYOUT_NO_MEMORY;
  }
  char lines[3][512];
  for (int i = 0; i < n; i++) {
    int k = box_lines(&d->boxes[i], lines);
    double widest = 0;
    for (int j = 0; j < k; j++) {
      double t = svg_text_width(lines[j], FONT);
      if (t > widest) widest = t;
    }
    w[i] = widest + 2 * PAD_X;
    h[i] = k * LINE + 2 * PAD_Y;
  }
  int rc = graph_layout_compute(n, w, h, d->edges, d->n_edges, left_right, &l);
  if (rc) goto done;
  svg_begin(f, l.width, l.height);
  svg_arrow_marker(f, "arrow", "#444");
  for (int e = 0; e < d->n_edges; e++) {
    int u = d->edges[e].from, v = d->edges[e].to;
    int nb = l.bend_start[e + 1] - l.bend_start[e];
    /* Points: the source's side, the bends, the target's side. */
    size_t np = (size_t)nb + 2;
    double *px = malloc(np * sizeof *px), *py = malloc(np * sizeof *py);
    char *path = malloc(np * 96 + 32);
    if (!px || !py || !path) {
      free(px);
      free(py);
      free(path);
      rc = GRAPH_LAYOUT_NO_MEMORY;
      goto done;
    }
    double ps = port(d, &l, w, h, left_right, e, 1), pt = port(d, &l, w, h, left_right, e, 0);
    px[0] = left_right ? l.x[u] + w[u] / 2 : ps;
    py[0] = left_right ? ps : l.y[u] + h[u] / 2;
    for (int b = 0; b < nb; b++) {
      px[b + 1] = l.bend_x[l.bend_start[e] + b];
      py[b + 1] = l.bend_y[l.bend_start[e] + b];
    }
    px[np - 1] = left_right ? l.x[v] - w[v] / 2 : pt;
    py[np - 1] = left_right ? pt : l.y[v] - h[v] / 2;
    /* Cubic segments whose tangents follow the rank direction: straight when the ends
     * line up, a smooth S otherwise; the arrowhead points along the last tangent. */
    size_t len = (size_t)sprintf(path, "M%.1f,%.1f", px[0], py[0]);
    for (size_t i = 1; i < np; i++) {
      if (left_right) {
        double mx = (px[i - 1] + px[i]) / 2;
        len += (size_t)sprintf(path + len, " C%.1f,%.1f %.1f,%.1f %.1f,%.1f", mx, py[i - 1], mx,
                               py[i], px[i], py[i]);
      } else {
        double my = (py[i - 1] + py[i]) / 2;
        len += (size_t)sprintf(path + len, " C%.1f,%.1f %.1f,%.1f %.1f,%.1f", px[i - 1], my, px[i],
                               my, px[i], py[i]);
      }
    }
    svg_path(f, path, "#444", 1.2, "arrow");
    free(px);
    free(py);
    free(path);
  }
  for (int i = 0; i < n; i++) {
    int k = box_lines(&d->boxes[i], lines);
    double x0 = l.x[i] - w[i] / 2, y0 = l.y[i] - h[i] / 2;
    svg_rect(f, x0, y0, w[i], h[i], 6, "#f3f6fb", "#333");
    for (int j = 0; j < k; j++) {
      double base = y0 + PAD_Y + j * LINE + FONT;
      if (j == 1) svg_line(f, x0, base - FONT - 3, x0 + w[i], base - FONT - 3, "#999", 0.8, NULL);
      svg_text(f, j ? x0 + PAD_X : l.x[i], base, FONT, j ? "start" : "middle",
               j ? "normal" : "bold", 0, 1, lines[j]);
    }
  }
  svg_end(f);
done:
  graph_layout_free(&l);
  free(w);
  free(h);
  return rc;
}

/* A DOT string: quotes and backslashes escaped, control characters as '?'. */
static void dot_escape(FILE *f, const char *s) {
  for (; *s; s++) {
    unsigned char c = (unsigned char)*s;
    if (c == '"' || c == '\\') fputc('\\', f);
    fputc(c < 0x20 ? '?' : c, f);
  }
}

int model_drawing_write_dot(const model_drawing *d, int left_right, FILE *f) {
  int *rank = calloc((size_t)d->n_boxes + 1, sizeof *rank);
  if (!rank) return GRAPH_LAYOUT_NO_MEMORY;
  /* Only to refuse what graphviz would draw but a model cannot be: a cycle. */
  int rc = graph_layout_ranks(d->n_boxes, d->edges, d->n_edges, rank);
  free(rank);
  if (rc) return rc;
  fprintf(f,
          "digraph model {\n"
          "  rankdir=%s;\n"
          "  node [shape=box, style=\"rounded,filled\", fillcolor=\"#f3f6fb\", "
          "fontname=\"DejaVu Sans Mono\", fontsize=11];\n"
          "  edge [color=\"#444444\"];\n",
          left_right ? "LR" : "TB");
  char lines[3][512];
  for (int i = 0; i < d->n_boxes; i++) {
    int k = box_lines(&d->boxes[i], lines);
    fprintf(f, "  n%d [label=\"", i);
    for (int j = 0; j < k; j++) {
      if (j) fputs(j == 1 ? "\\n" : "\\l", f); /* the title centred, the shapes left */
      dot_escape(f, lines[j]);
    }
    fputs(k > 1 ? "\\l\"];\n" : "\"];\n", f);
  }
  for (int e = 0; e < d->n_edges; e++)
    fprintf(f, "  n%d -> n%d;\n", d->edges[e].from, d->edges[e].to);
  fputs("}\n", f);
  return GRAPH_LAYOUT_OK;
}

/* kiln command — layered drawing of a DAG (for `kiln plot-model`), pure functions.
 *
 * Sugiyama-style, kept small: a node's rank is the longest path to it from a node
 * without inputs; an edge spanning several ranks gets a virtual node in each rank it
 * crosses (its bend points, so it runs between boxes, not through them); the order
 * within a rank comes from a few down and up sweeps sorting by the barycenter of the
 * neighbours in the previous rank, keeping the order with the fewest crossings; each
 * rank is then laid out side by side, its boxes pulled towards their neighbours
 * (order and gaps kept: isotonic regression) so that chains run straight. */
#ifndef KILN_TOOLS_GRAPH_LAYOUT_H
#define KILN_TOOLS_GRAPH_LAYOUT_H

typedef struct graph_edge {
  int from, to;
} graph_edge;

enum {
  GRAPH_LAYOUT_OK = 0,
  GRAPH_LAYOUT_BAD_EDGE = -1, /* an edge names a node outside [0, n), or itself */
  GRAPH_LAYOUT_CYCLE = -2,
  GRAPH_LAYOUT_NO_MEMORY = -3
};

/* rank[i] for n nodes: 0 for a node without inputs, else 1 + the largest rank among
 * its inputs. Returns GRAPH_LAYOUT_OK or an error above. */
int graph_layout_ranks(int n, const graph_edge *edges, int n_edges, int *rank);

typedef struct graph_layout {
  int n_ranks;
  int *rank;           /* [n] */
  int *order;          /* [n] position within its rank, virtual nodes counted */
  double *x, *y;       /* [n] box centres */
  double width, height; /* of the whole drawing, margins included */
  int *bend_start;     /* [n_edges + 1]: edge i bends at points bend_start[i] .. [i+1]-1 */
  double *bend_x, *bend_y;
  int crossings;       /* edge crossings between adjacent ranks in the chosen order */
} graph_layout;

/* Lays out n boxes of sizes box_w x box_h: ranks go downwards (top to bottom), or
 * rightwards when left_right is set. Fills *out (free with graph_layout_free, also
 * after a failure). */
int graph_layout_compute(int n, const double *box_w, const double *box_h,
                         const graph_edge *edges, int n_edges, int left_right,
                         graph_layout *out);
void graph_layout_free(graph_layout *l);

#endif

/* kiln command — layered DAG layout (see graph_layout.h). */
#include "graph_layout.h"

#include <stdlib.h>
#include <string.h>

#define MARGIN 20.0
#define RANK_GAP 48.0  /* between ranks, along the edges */
#define NODE_GAP 28.0  /* between boxes of one rank */
#define VIRTUAL_SIZE 12.0

int graph_layout_ranks(int n, const graph_edge *edges, int n_edges, int *rank) {
  for (int e = 0; e < n_edges; e++)
    if (edges[e].from < 0 || edges[e].from >= n || edges[e].to < 0 || edges[e].to >= n ||
        edges[e].from == edges[e].to)
      return GRAPH_LAYOUT_BAD_EDGE;
  int *indeg = calloc((size_t)n + 1, sizeof *indeg);
  int *queue = calloc((size_t)n + 1, sizeof *queue);
  if (!indeg || !queue) {
    free(indeg);
    free(queue);
    return GRAPH_LAYOUT_NO_MEMORY;
  }
  for (int e = 0; e < n_edges; e++) indeg[edges[e].to]++;
  int head = 0, tail = 0;
  for (int i = 0; i < n; i++) {
    rank[i] = 0;
    if (indeg[i] == 0) queue[tail++] = i;
  }
  /* Kahn's order: a node's rank is final when its last input has been taken. */
  while (head < tail) {
    int u = queue[head++];
    for (int e = 0; e < n_edges; e++) {
      if (edges[e].from != u) continue;
      int v = edges[e].to;
      if (rank[v] < rank[u] + 1) rank[v] = rank[u] + 1;
      if (--indeg[v] == 0) queue[tail++] = v;
    }
  }
  free(indeg);
  free(queue);
  return tail == n ? GRAPH_LAYOUT_OK : GRAPH_LAYOUT_CYCLE;
}

/* The expanded graph: real nodes 0..n-1, then the virtual ones; its edges join
 * adjacent ranks only. */
typedef struct work {
  int n_all, n_links;
  int *rank_of;       /* [n_all] */
  graph_edge *links;  /* [n_links] */
  int *pos;           /* [n_all] position in its rank */
  int *best;          /* [n_all] best positions so far */
  int *layer_start;   /* [n_ranks + 1] into layer */
  int *layer;         /* nodes by rank, in order */
  double *key;        /* [n_all] barycenters */
} work;

static int crossings(const work *w) {
  int c = 0;
  for (int a = 0; a < w->n_links; a++)
    for (int b = a + 1; b < w->n_links; b++) {
      const graph_edge *p = &w->links[a], *q = &w->links[b];
      if (w->rank_of[p->from] != w->rank_of[q->from]) continue;
      int du = w->pos[p->from] - w->pos[q->from], dv = w->pos[p->to] - w->pos[q->to];
      if ((du < 0 && dv > 0) || (du > 0 && dv < 0)) c++;
    }
  return c;
}

/* Sorts rank r by the mean position of each node's neighbours in the adjacent rank
 * (predecessors when down, successors when up); a node without any keeps its place.
 * Insertion sort: stable, and ranks are small. */
static void sweep_rank(work *w, int r, int down) {
  int *L = w->layer + w->layer_start[r];
  int m = w->layer_start[r + 1] - w->layer_start[r];
  for (int i = 0; i < m; i++) {
    int v = L[i];
    double sum = 0;
    int cnt = 0;
    for (int e = 0; e < w->n_links; e++) {
      const graph_edge *l = &w->links[e];
      if (down && l->to == v) sum += w->pos[l->from], cnt++;
      if (!down && l->from == v) sum += w->pos[l->to], cnt++;
    }
    w->key[v] = cnt ? sum / cnt : (double)i;
  }
  for (int i = 1; i < m; i++) {
    int v = L[i], j = i;
    while (j > 0 && w->key[L[j - 1]] > w->key[v]) {
      L[j] = L[j - 1];
      j--;
    }
    L[j] = v;
  }
  for (int i = 0; i < m; i++) w->pos[L[i]] = i;
}

static void free_work(work *w) {
  free(w->rank_of);
  free(w->links);
  free(w->pos);
  free(w->best);
  free(w->layer_start);
  free(w->layer);
  free(w->key);
}

/* Moves the boxes of rank r (in their order) as near as they can get to the mean
 * position of their neighbours in the adjacent rank (predecessors when down), keeping
 * their order and gaps: with offset_i the least distance from the rank's first box,
 * x_i - offset_i must not decrease, and the least-squares fit of that is isotonic
 * regression, solved exactly by pooling adjacent violators. */
static void align_rank(const work *w, int r, int down, const double *size, double *across,
                       double *t, double *offset, int *block_len) {
  const int *L = w->layer + w->layer_start[r];
  int m = w->layer_start[r + 1] - w->layer_start[r];
  for (int i = 0; i < m; i++) {
    int v = L[i];
    double sum = 0;
    int cnt = 0;
    for (int e = 0; e < w->n_links; e++) {
      const graph_edge *l = &w->links[e];
      if (down && l->to == v) sum += across[l->from], cnt++;
      if (!down && l->from == v) sum += across[l->to], cnt++;
    }
    offset[i] = i ? offset[i - 1] + (size[L[i - 1]] + size[v]) / 2 + NODE_GAP : 0;
    t[i] = (cnt ? sum / cnt : across[v]) - offset[i];
  }
  /* blocks: means in t[b], lengths in block_len[b] */
  int nb = 0;
  for (int i = 0; i < m; i++) {
    t[nb] = t[i];
    block_len[nb++] = 1;
    while (nb > 1 && t[nb - 2] > t[nb - 1]) {
      int a = block_len[nb - 2], b = block_len[nb - 1];
      t[nb - 2] = (t[nb - 2] * a + t[nb - 1] * b) / (a + b);
      block_len[nb - 2] = a + b;
      nb--;
    }
  }
  for (int b = 0, i = 0; b < nb; b++)
    for (int k = 0; k < block_len[b]; k++, i++) across[L[i]] = t[b] + offset[i];
}

void graph_layout_free(graph_layout *l) {
  free(l->rank);
  free(l->order);
  free(l->x);
  free(l->y);
  free(l->bend_start);
  free(l->bend_x);
  free(l->bend_y);
  memset(l, 0, sizeof *l);
}

int graph_layout_compute(int n, const double *box_w, const double *box_h,
                         const graph_edge *edges, int n_edges, int left_right,
                         graph_layout *out) {
  memset(out, 0, sizeof *out);
  work w = {0};
  double *along = NULL, *across = NULL, *cross_size = NULL, *rank_size = NULL, *rank_pos = NULL;
  double *scratch = NULL;
  size_t nn = (size_t)n + 1;
  out->rank = calloc(nn, sizeof *out->rank);
  out->order = calloc(nn, sizeof *out->order);
  out->x = calloc(nn, sizeof *out->x);
  out->y = calloc(nn, sizeof *out->y);
  out->bend_start = calloc((size_t)n_edges + 1, sizeof *out->bend_start);
  if (!out->rank || !out->order || !out->x || !out->y || !out->bend_start) goto nomem;
  int rc = graph_layout_ranks(n, edges, n_edges, out->rank);
  if (rc) return rc;
  int n_ranks = 0;
  for (int i = 0; i < n; i++)
    if (out->rank[i] + 1 > n_ranks) n_ranks = out->rank[i] + 1;
  out->n_ranks = n_ranks;

  /* Expand long edges into chains of virtual nodes. */
  int n_virtual = 0;
  for (int e = 0; e < n_edges; e++) {
    out->bend_start[e] = n_virtual;
    n_virtual += out->rank[edges[e].to] - out->rank[edges[e].from] - 1;
  }
  out->bend_start[n_edges] = n_virtual;
  w.n_all = n + n_virtual;
  w.n_links = n_edges + n_virtual;
  size_t na = (size_t)w.n_all + 1;
  w.rank_of = calloc(na, sizeof *w.rank_of);
  w.links = calloc((size_t)w.n_links + 1, sizeof *w.links);
  w.pos = calloc(na, sizeof *w.pos);
  w.best = calloc(na, sizeof *w.best);
  w.layer_start = calloc((size_t)n_ranks + 2, sizeof *w.layer_start);
  w.layer = calloc(na, sizeof *w.layer);
  w.key = calloc(na, sizeof *w.key);
  out->bend_x = calloc((size_t)n_virtual + 1, sizeof *out->bend_x);
  out->bend_y = calloc((size_t)n_virtual + 1, sizeof *out->bend_y);
  along = calloc(na, sizeof *along);
  across = calloc(na, sizeof *across);
  cross_size = calloc(na, sizeof *cross_size);
  scratch = calloc(na, sizeof *scratch);
  rank_size = calloc((size_t)n_ranks + 1, sizeof *rank_size);
  rank_pos = calloc((size_t)n_ranks + 1, sizeof *rank_pos);
  if (!w.rank_of || !w.links || !w.pos || !w.best || !w.layer_start || !w.layer || !w.key ||
      !out->bend_x || !out->bend_y || !along || !across || !cross_size || !rank_size || !rank_pos || !scratch)
    goto nomem;
  for (int i = 0; i < n; i++) w.rank_of[i] = out->rank[i];
  int nl = 0;
  for (int e = 0; e < n_edges; e++) {
    int prev = edges[e].from;
    for (int k = out->bend_start[e]; k < out->bend_start[e + 1]; k++) {
      int v = n + k;
      w.rank_of[v] = w.rank_of[prev] + 1;
      w.links[nl++] = (graph_edge){prev, v};
      prev = v;
    }
    w.links[nl++] = (graph_edge){prev, edges[e].to};
  }

  /* Ranks in node order first (inputs as declared), then the sweeps. */
  for (int v = 0; v < w.n_all; v++) w.layer_start[w.rank_of[v] + 1]++;
  for (int r = 0; r < n_ranks; r++) w.layer_start[r + 1] += w.layer_start[r];
  {
    int *fill = w.best; /* scratch: next free slot of each rank */
    for (int r = 0; r < n_ranks; r++) fill[r] = w.layer_start[r];
    for (int v = 0; v < w.n_all; v++) {
      int r = w.rank_of[v];
      w.pos[v] = fill[r] - w.layer_start[r];
      w.layer[fill[r]++] = v;
    }
  }
  for (int r = 1; r < n_ranks; r++) sweep_rank(&w, r, 1);
  int best = crossings(&w);
  memcpy(w.best, w.pos, (size_t)w.n_all * sizeof *w.pos);
  for (int it = 0; it < 4 && best > 0; it++) {
    for (int pass = 0; pass < 2; pass++) {
      if (pass == 0)
        for (int r = n_ranks - 2; r >= 0; r--) sweep_rank(&w, r, 0);
      else
        for (int r = 1; r < n_ranks; r++) sweep_rank(&w, r, 1);
      int c = crossings(&w);
      if (c < best) {
        best = c;
        memcpy(w.best, w.pos, (size_t)w.n_all * sizeof *w.pos);
      }
    }
  }
  memcpy(w.pos, w.best, (size_t)w.n_all * sizeof *w.pos);
  for (int v = 0; v < w.n_all; v++) w.layer[w.layer_start[w.rank_of[v]] + w.pos[v]] = v;
  out->crossings = best;

  /* Placement in (along the ranks, across them) coordinates, then mapped to x, y. */
  for (int v = 0; v < w.n_all; v++) {
    double main = v < n ? (left_right ? box_w[v] : box_h[v]) : 0;
    cross_size[v] = v < n ? (left_right ? box_h[v] : box_w[v]) : VIRTUAL_SIZE;
    if (main > rank_size[w.rank_of[v]]) rank_size[w.rank_of[v]] = main;
  }
  double at = MARGIN, widest = 0;
  for (int r = 0; r < n_ranks; r++) {
    rank_pos[r] = at + rank_size[r] / 2;
    at += rank_size[r] + RANK_GAP;
    double span = 0;
    for (int i = w.layer_start[r]; i < w.layer_start[r + 1]; i++)
      span += cross_size[w.layer[i]] + (i > w.layer_start[r] ? NODE_GAP : 0);
    if (span > widest) widest = span;
  }
  double total_along = n_ranks ? at - RANK_GAP + MARGIN : 2 * MARGIN;
  /* Each rank centred first, then pulled towards its neighbours, down and up a few
   * times (ending down), so chains run straight and joins sit under what they join. */
  for (int r = 0; r < n_ranks; r++) {
    double span = 0;
    for (int i = w.layer_start[r]; i < w.layer_start[r + 1]; i++)
      span += cross_size[w.layer[i]] + (i > w.layer_start[r] ? NODE_GAP : 0);
    double c = (widest - span) / 2;
    for (int i = w.layer_start[r]; i < w.layer_start[r + 1]; i++) {
      int v = w.layer[i];
      across[v] = c + cross_size[v] / 2;
      along[v] = rank_pos[r];
      c += cross_size[v] + NODE_GAP;
    }
  }
  for (int it = 0; it < 8; it++) {
    for (int r = 1; r < n_ranks; r++)
      align_rank(&w, r, 1, cross_size, across, w.key, scratch, w.best);
    if (it == 7) break;
    for (int r = n_ranks - 2; r >= 0; r--)
      align_rank(&w, r, 0, cross_size, across, w.key, scratch, w.best);
  }
  double lo = 0, hi = 0;
  for (int v = 0; v < w.n_all; v++) {
    if (v == 0 || across[v] - cross_size[v] / 2 < lo) lo = across[v] - cross_size[v] / 2;
    if (v == 0 || across[v] + cross_size[v] / 2 > hi) hi = across[v] + cross_size[v] / 2;
  }
  for (int v = 0; v < w.n_all; v++) across[v] += MARGIN - lo;
  double total_across = (w.n_all ? hi - lo : 0) + 2 * MARGIN;
  for (int v = 0; v < w.n_all; v++) {
    double x = left_right ? along[v] : across[v], y = left_right ? across[v] : along[v];
    if (v < n) {
      out->x[v] = x;
      out->y[v] = y;
      out->order[v] = w.pos[v];
    } else {
      out->bend_x[v - n] = x;
      out->bend_y[v - n] = y;
    }
  }
  out->width = left_right ? total_along : total_across;
  out->height = left_right ? total_across : total_along;
  free_work(&w);
  free(along);
  free(across);
  free(cross_size);
  free(rank_size);
  free(rank_pos);
  free(scratch);
  return GRAPH_LAYOUT_OK;
nomem:
  free_work(&w);
  free(along);
  free(across);
  free(cross_size);
  free(rank_size);
  free(rank_pos);
  free(scratch);
  return GRAPH_LAYOUT_NO_MEMORY;
}

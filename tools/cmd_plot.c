/* kiln plot — training curves from a History CSV, as the book's figures 4.4 and 4.5:
 * one panel per metric, the training values as dots and the validation values as a
 * line, epochs on x. Any CSV with an epoch column and numeric series works (the K-fold
 * mean validation MAE of figure 4.10, with --skip-first 10 for figure 4.11). */
#include <ctype.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "axis_ticks.h"
#include "cli.h"
#include "history_csv.h"
#include "kiln/atomic_file.h"
#include "svg.h"

static const char *const CMD = "plot";

void cmd_plot_usage(FILE *out) {
  fprintf(out,
          "Usage: kiln plot HISTORY.csv -o OUT.svg [--metrics loss,accuracy] [--skip-first N]\n"
          "                 [--title T]\n"
          "\n"
          "Draws training curves from the CSV that `kiln train --history` writes (a header\n"
          "epoch,loss,accuracy,val_loss,val_accuracy, one row per epoch), or any CSV with an\n"
          "epoch column and numeric columns: one panel per metric, its training values as\n"
          "dots and its val_ twin as a line. Epochs numbered from 0 in the file (as kiln and\n"
          "Keras write them) are drawn from 1. Empty and nan cells are skipped.\n"
          "\n"
          "  -o, --output FILE   the picture, .svg (written whole or not at all)\n"
          "  --metrics A,B       the panels, in this order (default: every column, a val_X\n"
          "                      column sharing the panel of X)\n"
          "  --skip-first N      leave out the first N epochs (their scale hides the rest)\n"
          "  --title T           a title above the panels\n"
          "\n"
          "Exit status: 0 success, 2 a usage, input or output error.\n");
}

typedef struct panel {
  char *metric;  /* the name without val_ */
  int train, val; /* columns, -1 when absent */
} panel;

#define PANEL_W 640.0
#define PANEL_H 380.0
#define LEFT 74.0
#define RIGHT 24.0
#define TOP 40.0
#define BOTTOM 52.0
#define TRAIN_COLOR "#d62728"
#define VAL_COLOR "#1f77b4"

static const char *base_name(const char *col) {
  return strncmp(col, "val_", 4) == 0 && col[4] ? col + 4 : col;
}

static int find_panel(const panel *p, int n, const char *metric) {
  for (int i = 0; i < n; i++)
    if (!strcmp(p[i].metric, metric)) return i;
  return -1;
}

/* Panels for every column but the epoch: X and val_X share one. */
static int default_panels(const history_csv *h, panel *p) {
  int n = 0;
  for (int c = 0; c < h->n_cols; c++) {
    if (c == h->epoch_col) continue;
    const char *m = base_name(h->names[c]);
    int i = find_panel(p, n, m);
    if (i < 0) {
      i = n++;
      p[i].metric = strdup(m);
      if (!p[i].metric) return -1;
      p[i].train = p[i].val = -1;
    }
    if (m == h->names[c]) p[i].train = c;
    else p[i].val = c;
  }
  return n;
}

static void free_panels(panel *p, int n) {
  for (int i = 0; i < n; i++) free(p[i].metric);
  free(p);
}

/* "mean_absolute_error" -> "Mean absolute error", "mae" -> "MAE" for an axis label. */
static void humanize(const char *name, char *buf, size_t cap) {
  static const char *const acronyms[] = {"mae", "mse", "rmse", "mape", "auc"};
  int upper = 0;
  for (size_t i = 0; i < sizeof acronyms / sizeof *acronyms; i++) upper |= !strcmp(name, acronyms[i]);
  snprintf(buf, cap, "%s", name);
  for (char *q = buf; *q; q++) {
    if (*q == '_') *q = ' ';
    if (upper || q == buf) *q = (char)toupper((unsigned char)*q);
  }
}

static void draw_panel(FILE *f, const history_csv *h, const panel *p, int first, double top,
                       double offset, double *xs, double *ys) {
  double x0 = LEFT, y0 = top + TOP, w = PANEL_W - LEFT - RIGHT, ht = PANEL_H - TOP - BOTTOM;
  int cols[2] = {p->train, p->val};
  double lo = INFINITY, hi = -INFINITY;
  for (int s = 0; s < 2; s++)
    for (int r = first; cols[s] >= 0 && r < h->n_rows; r++) {
      double v = h->values[(size_t)r * (size_t)h->n_cols + (size_t)cols[s]];
      if (isfinite(v)) {
        if (v < lo) lo = v;
        if (v > hi) hi = v;
      }
    }
  double e_lo = INFINITY, e_hi = -INFINITY;
  for (int r = first; r < h->n_rows; r++) {
    double e = h->values[(size_t)r * (size_t)h->n_cols + (size_t)h->epoch_col] + offset;
    if (e < e_lo) e_lo = e;
    if (e > e_hi) e_hi = e;
  }
  axis_ticks ty = axis_ticks_make(lo, hi, 0.05, 6, 0), tx = axis_ticks_make(e_lo, e_hi, 0.03, 8, 1);
  char label[128], title[300];
  /* frame, grid and tick labels */
  svg_rect(f, x0, y0, w, ht, 0, "white", "#333");
  for (int i = 0; i < ty.count; i++) {
    double v = ty.first + i * ty.step, y = y0 + ht - (v - ty.lo) / (ty.hi - ty.lo) * ht;
    svg_line(f, x0, y, x0 + w, y, "#e5e5e5", 1, NULL);
    svg_line(f, x0 - 4, y, x0, y, "#333", 1, NULL);
    axis_ticks_label(&ty, v, label, sizeof label);
    svg_text(f, x0 - 6, y + 4, 11, "end", "normal", 0, 0, label);
  }
  for (int i = 0; i < tx.count; i++) {
    double v = tx.first + i * tx.step, x = x0 + (v - tx.lo) / (tx.hi - tx.lo) * w;
    svg_line(f, x, y0, x, y0 + ht, "#e5e5e5", 1, NULL);
    svg_line(f, x, y0 + ht, x, y0 + ht + 4, "#333", 1, NULL);
    axis_ticks_label(&tx, v, label, sizeof label);
    svg_text(f, x, y0 + ht + 18, 11, "middle", "normal", 0, 0, label);
  }
  svg_text(f, x0 + w / 2, y0 + ht + 38, 12, "middle", "normal", 0, 0, "Epochs");
  humanize(p->metric, label, sizeof label);
  svg_text(f, 18, y0 + ht / 2, 12, "middle", "normal", -90, 0, label);
  if (p->train >= 0 && p->val >= 0)
    snprintf(title, sizeof title, "Training and validation %s", p->metric);
  else
    snprintf(title, sizeof title, "%s %s", p->train >= 0 ? "Training" : "Validation", p->metric);
  svg_text(f, x0 + w / 2, top + 24, 14, "middle", "bold", 0, 0, title);

  /* the series: training dots, validation line; missing cells are skipped */
  int rows = (p->train >= 0) + (p->val >= 0);
  double lw = 190, lh = 8 + 18 * rows;
  double corner_x[4] = {x0 + w - lw - 10, x0 + w - lw - 10, x0 + 10, x0 + 10};
  double corner_y[4] = {y0 + 10, y0 + ht - lh - 10, y0 + 10, y0 + ht - lh - 10};
  int covered[4] = {0, 0, 0, 0};
  for (int s = 0; s < 2; s++) {
    if (cols[s] < 0) continue;
    size_t n = 0;
    for (int r = first; r < h->n_rows; r++) {
      double v = h->values[(size_t)r * (size_t)h->n_cols + (size_t)cols[s]];
      if (!isfinite(v)) continue;
      double e = h->values[(size_t)r * (size_t)h->n_cols + (size_t)h->epoch_col] + offset;
      xs[n] = x0 + (e - tx.lo) / (tx.hi - tx.lo) * w;
      ys[n] = y0 + ht - (v - ty.lo) / (ty.hi - ty.lo) * ht;
      for (int c = 0; c < 4; c++)
        covered[c] += xs[n] >= corner_x[c] - 4 && xs[n] <= corner_x[c] + lw + 4 &&
                      ys[n] >= corner_y[c] - 4 && ys[n] <= corner_y[c] + lh + 4;
      n++;
    }
    if (s == 0) {
      fputs("<g class=\"training\">\n", f);
      for (size_t i = 0; i < n; i++) svg_circle(f, xs[i], ys[i], 3, TRAIN_COLOR);
      fputs("</g>\n", f);
    } else {
      svg_polyline(f, xs, ys, n, VAL_COLOR, 2);
    }
  }
  /* the legend, in the corner (top right first) that hides the fewest points */
  int best = 0;
  for (int c = 1; c < 4; c++)
    if (covered[c] < covered[best]) best = c;
  double lx = corner_x[best], ly = corner_y[best];
  svg_rect(f, lx, ly, lw, lh, 3, "white", "#bbb");
  double at = ly + 17;
  if (p->train >= 0) {
    svg_circle(f, lx + 18, at - 4, 3, TRAIN_COLOR);
    snprintf(label, sizeof label, "Training %s", p->metric);
    svg_text(f, lx + 36, at, 11, "start", "normal", 0, 0, label);
    at += 18;
  }
  if (p->val >= 0) {
    svg_line(f, lx + 8, at - 4, lx + 28, at - 4, VAL_COLOR, 2, NULL);
    snprintf(label, sizeof label, "Validation %s", p->metric);
    svg_text(f, lx + 36, at, 11, "start", "normal", 0, 0, label);
  }
}

int cmd_plot(int argc, char **argv) {
  const char *path = NULL, *output = NULL, *metrics = NULL, *title = NULL;
  int64_t skip = 0;
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
    } else if ((r = cli_option(CMD, argc, argv, &i, "--metrics", &v)) != 0) {
      if (r < 0) return CLI_EXIT_ERROR;
      metrics = v;
    } else if ((r = cli_option(CMD, argc, argv, &i, "--title", &v)) != 0) {
      if (r < 0) return CLI_EXIT_ERROR;
      title = v;
    } else if ((r = cli_option(CMD, argc, argv, &i, "--skip-first", &v)) != 0) {
      if (r < 0 || cli_parse_int64(CMD, "--skip-first", v, 0, INT32_MAX, &skip))
        return CLI_EXIT_ERROR;
    } else {
      return cli_usage_error(CMD, "unknown option \"%s\"", argv[i]);
    }
  }
  if (!path) return cli_usage_error(CMD, "missing HISTORY.csv");
  if (!output) return cli_usage_error(CMD, "missing -o OUT.svg");
  if (!cli_ends_with(output, ".svg")) {
    const char *ext = strrchr(output, '.');
    return cli_usage_error(CMD, "-o %s: unknown extension \"%s\": kiln plot writes .svg", output,
                           ext && !strchr(ext, '/') ? ext : "");
  }
  if (cli_check_output_path(CMD, "-o", output)) return CLI_EXIT_ERROR;

  history_csv h;
  char msg[1024];
  if (history_csv_read(path, &h, msg, sizeof msg)) return cli_error(CMD, "%s", msg);
  int rc = CLI_EXIT_OK;
  panel *all = calloc((size_t)h.n_cols, sizeof *all), *use = NULL;
  double *xs = malloc(((size_t)h.n_rows + 1) * sizeof *xs);
  double *ys = malloc(((size_t)h.n_rows + 1) * sizeof *ys);
  int n_all = all ? default_panels(&h, all) : -1, n_use = 0;
  if (n_all < 0 || !xs || !ys) {
    rc = cli_error(CMD, "out of memory");
    goto done;
  }
  if (skip >= h.n_rows) {
    rc = cli_usage_error(CMD, "--skip-first %lld: %s has %d epochs, none would be left",
                         (long long)skip, path, h.n_rows);
    goto done;
  }
  use = calloc((size_t)h.n_cols, sizeof *use);
  if (!use) {
    rc = cli_error(CMD, "out of memory");
    goto done;
  }
  if (!metrics) {
    for (int i = 0; i < n_all; i++) use[n_use++] = all[i];
  } else {
    char *list = strdup(metrics);
    if (!list) {
      rc = cli_error(CMD, "out of memory");
      goto done;
    }
    for (char *tok = strtok(list, ","); tok; tok = strtok(NULL, ",")) {
      int i = find_panel(all, n_all, base_name(tok));
      if (i < 0) {
        char avail[1024];
        size_t len = 0;
        avail[0] = '\0';
        for (int k = 0; k < n_all && len < sizeof avail; k++)
          len += (size_t)snprintf(avail + len, sizeof avail - len, "%s%s", k ? ", " : "",
                                  all[k].metric);
        rc = cli_usage_error(CMD, "--metrics: %s has no column \"%s\" (nor val_%s); available: %s",
                             path, tok, base_name(tok), avail);
        free(list);
        goto done;
      }
      if (find_panel(use, n_use, all[i].metric) < 0 && n_use < h.n_cols) use[n_use++] = all[i];
    }
    free(list);
    if (n_use == 0) {
      rc = cli_usage_error(CMD, "--metrics: expected metric names, e.g. --metrics loss,accuracy");
      goto done;
    }
  }
  /* Every panel needs something to draw after the skipped epochs. */
  for (int i = 0; i < n_use; i++) {
    int found = 0;
    int cols[2] = {use[i].train, use[i].val};
    for (int s = 0; s < 2; s++)
      for (int r = (int)skip; cols[s] >= 0 && r < h.n_rows; r++)
        found |= isfinite(h.values[(size_t)r * (size_t)h.n_cols + (size_t)cols[s]]);
    if (!found) {
      rc = cli_error(CMD, "%s: \"%s\" has no numbers to plot%s (every cell is empty or nan)",
                     path, use[i].metric, skip ? " after --skip-first" : "");
      goto done;
    }
  }

  /* Epochs as kiln and Keras number them (from 0) are drawn from 1, as the book does. */
  double offset = h.values[h.epoch_col] == 0 ? 1 : 0;
  double head = title ? 36 : 0;
  kiln_error err = {0};
  kiln_atomic_file f;
  if (kiln_atomic_open(&f, output, "w", &err)) {
    rc = cli_kiln_error(CMD, &err);
    goto done;
  }
  svg_begin(f.fp, PANEL_W, head + PANEL_H * n_use);
  if (title) svg_text(f.fp, PANEL_W / 2, 26, 16, "middle", "bold", 0, 0, title);
  for (int i = 0; i < n_use; i++)
    draw_panel(f.fp, &h, &use[i], (int)skip, head + PANEL_H * i, offset, xs, ys);
  svg_end(f.fp);
  if (kiln_atomic_commit(&f, &err)) rc = cli_kiln_error(CMD, &err);
done:
  free(use); /* its metric strings belong to `all` */
  if (all) free_panels(all, n_all > 0 ? n_all : 0);
  free(xs);
  free(ys);
  history_csv_free(&h);
  return rc;
}

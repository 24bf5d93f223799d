/* kiln plot and kiln plot-model: the layered layout (ranks, order, no overlapping
 * boxes, edges downwards) and the axis ticks as pure functions; the SVG writer's
 * escaping; then the commands as child processes on generated History CSVs, a
 * Sequential .kiln, a functional one (3 inputs, Concatenate, 2 outputs) and the same
 * shape as ONNX built with the IR calls — well-formed SVG, one polyline point per
 * epoch mapped monotonically, and every bad input exiting 2 with its place named and
 * no output file left behind. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "test_common.h"

#include "../run_kiln.h"
#include <dirent.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "axis_ticks.h"
#include "graph_layout.h"
#include "kiln/export.h"
#include "kiln/ir.h"
#include "kiln/train.h"
#include "svg.h"

/* --- the layout ------------------------------------------------------------------- */

/* Checks what any drawing needs: ranks are longest paths, boxes of one rank do not
 * overlap, every edge goes down (or right) and its bends sit between the ranks of its
 * ends, outside every box. */
static void check_layout(int n, const double *w, const double *h, const graph_edge *e, int ne,
                         int lr, graph_layout *l) {
  assert_int_equal(graph_layout_compute(n, w, h, e, ne, lr, l), GRAPH_LAYOUT_OK);
  for (int i = 0; i < n; i++) {
    int expect = 0;
    for (int k = 0; k < ne; k++)
      if (e[k].to == i && l->rank[e[k].from] + 1 > expect) expect = l->rank[e[k].from] + 1;
    assert_int_equal(l->rank[i], expect);
    assert_true(l->x[i] - w[i] / 2 >= 0 && l->x[i] + w[i] / 2 <= l->width);
    assert_true(l->y[i] - h[i] / 2 >= 0 && l->y[i] + h[i] / 2 <= l->height);
    for (int j = 0; j < n; j++) {
      if (j == i) continue;
      int apart = fabs(l->x[i] - l->x[j]) >= (w[i] + w[j]) / 2 ||
                  fabs(l->y[i] - l->y[j]) >= (h[i] + h[j]) / 2;
      if (!apart) fail_msg("boxes %d and %d overlap", i, j);
      if (l->rank[i] == l->rank[j] && l->order[i] == l->order[j])
        fail_msg("boxes %d and %d share a place in rank %d", i, j, l->rank[i]);
    }
  }
  for (int k = 0; k < ne; k++) {
    int u = e[k].from, v = e[k].to;
    if (lr)
      assert_true(l->x[v] - w[v] / 2 > l->x[u] + w[u] / 2);
    else
      assert_true(l->y[v] - h[v] / 2 > l->y[u] + h[u] / 2);
    double prev = lr ? l->x[u] : l->y[u];
    for (int b = l->bend_start[k]; b < l->bend_start[k + 1]; b++) {
      double along = lr ? l->bend_x[b] : l->bend_y[b];
      assert_true(along > prev);
      prev = along;
      for (int i = 0; i < n; i++)
        assert_false(fabs(l->bend_x[b] - l->x[i]) < w[i] / 2 &&
                     fabs(l->bend_y[b] - l->y[i]) < h[i] / 2);
    }
    assert_true((lr ? l->x[v] : l->y[v]) > prev);
    assert_int_equal(l->bend_start[k + 1] - l->bend_start[k], l->rank[v] - l->rank[u] - 1);
  }
}

static void test_layout_chain(void **state) {
  (void)state;
  double w[4] = {120, 80, 200, 60}, h[4] = {40, 40, 58, 40};
  graph_edge e[3] = {{0, 1}, {1, 2}, {2, 3}};
  for (int lr = 0; lr < 2; lr++) {
    graph_layout l;
    check_layout(4, w, h, e, 3, lr, &l);
    for (int i = 0; i < 4; i++) {
      assert_int_equal(l.rank[i], i);
      assert_int_equal(l.order[i], 0);
    }
    assert_int_equal(l.n_ranks, 4);
    assert_int_equal(l.crossings, 0);
    /* one box a rank, centred: a straight column (or row) */
    for (int i = 1; i < 4; i++) assert_float_equal(lr ? l.y[i] : l.x[i], lr ? l.y[0] : l.x[0], 1e-9);
    graph_layout_free(&l);
  }
}

static void test_layout_diamond(void **state) {
  (void)state;
  double w[4] = {100, 100, 100, 100}, h[4] = {40, 40, 40, 40};
  graph_edge e[4] = {{0, 1}, {0, 2}, {1, 3}, {2, 3}};
  graph_layout l;
  check_layout(4, w, h, e, 4, 0, &l);
  assert_int_equal(l.rank[0], 0);
  assert_int_equal(l.rank[1], 1);
  assert_int_equal(l.rank[2], 1);
  assert_int_equal(l.rank[3], 2);
  assert_int_not_equal(l.order[1], l.order[2]);
  assert_int_equal(l.crossings, 0);
  /* symmetric: the top and bottom boxes centred over the two in the middle */
  assert_float_equal(l.x[0], (l.x[1] + l.x[2]) / 2, 1e-9);
  assert_float_equal(l.x[3], l.x[0], 1e-9);
  graph_layout_free(&l);
}

/* Figure 7.2: title, text_body, tags -> concatenate -> dense -> priority, department;
 * plus a skip edge (tags -> department) that must bend around the boxes between. */
static void test_layout_ticket(void **state) {
  (void)state;
  double w[7] = {140, 180, 120, 160, 120, 150, 170}, h[7] = {40, 40, 40, 40, 40, 40, 40};
  graph_edge e[7] = {{0, 3}, {1, 3}, {2, 3}, {3, 4}, {4, 5}, {4, 6}, {2, 6}};
  for (int lr = 0; lr < 2; lr++) {
    graph_layout l;
    check_layout(7, w, h, e, 7, lr, &l);
    int expect[7] = {0, 0, 0, 1, 2, 3, 3};
    for (int i = 0; i < 7; i++) assert_int_equal(l.rank[i], expect[i]);
    assert_int_equal(l.bend_start[7] - l.bend_start[6], 2); /* tags -> department: 2 bends */
    graph_layout_free(&l);
  }
  /* The same graph with the inputs declared crosswise still lays out without crossings. */
  graph_edge x[4] = {{0, 3}, {1, 2}, {0, 2}, {1, 3}};
  double w4[4] = {80, 80, 80, 80}, h4[4] = {30, 30, 30, 30};
  graph_layout l;
  check_layout(4, w4, h4, x, 4, 0, &l);
  graph_layout_free(&l);
}

static void test_layout_errors(void **state) {
  (void)state;
  double w[3] = {10, 10, 10}, h[3] = {10, 10, 10};
  graph_layout l;
  graph_edge cycle[3] = {{0, 1}, {1, 2}, {2, 1}};
  assert_int_equal(graph_layout_compute(3, w, h, cycle, 3, 0, &l), GRAPH_LAYOUT_CYCLE);
  graph_layout_free(&l);
  graph_edge outside[1] = {{0, 3}};
  assert_int_equal(graph_layout_compute(3, w, h, outside, 1, 0, &l), GRAPH_LAYOUT_BAD_EDGE);
  graph_layout_free(&l);
  graph_edge self[1] = {{1, 1}};
  assert_int_equal(graph_layout_compute(3, w, h, self, 1, 0, &l), GRAPH_LAYOUT_BAD_EDGE);
  graph_layout_free(&l);
  /* no edges at all: one rank */
  assert_int_equal(graph_layout_compute(3, w, h, NULL, 0, 0, &l), GRAPH_LAYOUT_OK);
  assert_int_equal(l.n_ranks, 1);
  graph_layout_free(&l);
}

/* --- axis ticks and the SVG writer ------------------------------------------------- */

static void check_ticks(double min, double max, int integer) {
  axis_ticks t = axis_ticks_make(min, max, 0.05, 6, integer);
  assert_true(t.lo <= min && t.hi >= max);
  assert_true(t.count >= 2 && t.count <= 15);
  double m = t.step / pow(10, floor(log10(t.step) + 1e-9));
  assert_true(fabs(m - 1) < 1e-9 || fabs(m - 2) < 1e-9 || fabs(m - 5) < 1e-9);
  assert_true(t.first >= t.lo - 1e-9 && t.first - t.step < t.lo);
  assert_true(t.first + (t.count - 1) * t.step <= t.hi + 1e-9);
  if (integer) assert_true(t.step >= 1);
}

static void test_axis_ticks(void **state) {
  (void)state;
  check_ticks(0.12, 0.52, 0);
  check_ticks(1, 20, 1);
  check_ticks(11, 500, 1);
  check_ticks(1, 1, 1);
  check_ticks(-3, 7e5, 0);
  check_ticks(0.5, 0.5, 0);
  check_ticks(0, 0, 0);
  axis_ticks t = axis_ticks_make(0.1, 0.5, 0, 5, 0);
  assert_float_equal(t.step, 0.1, 1e-12);
  char buf[32];
  axis_ticks_label(&t, 0.30000000000000004, buf, sizeof buf);
  assert_string_equal(buf, "0.3");
  axis_ticks_label(&t, -1e-17, buf, sizeof buf);
  assert_string_equal(buf, "0.0");
  t = axis_ticks_make(1, 20, 0, 5, 1);
  assert_float_equal(t.step, 5, 0);
  axis_ticks_label(&t, 15, buf, sizeof buf);
  assert_string_equal(buf, "15");
}

static void test_svg_escape(void **state) {
  (void)state;
  char *text = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&text, &len);
  assert_non_null(f);
  svg_escape(f, "a<b & \"c\" 'd'>\x01 \xff \xc3\xa9t\xc3\xa9 \xe6\xa8\xa1\xe5\x9e\x8b");
  fclose(f);
  assert_string_equal(text, "a&lt;b &amp; &quot;c&quot; &#39;d&#39;&gt;? ? \xc3\xa9t\xc3\xa9 "
                            "\xe6\xa8\xa1\xe5\x9e\x8b");
  free(text);
  assert_int_equal(svg_text_length("\xc3\xa9t\xc3\xa9"), 3);
  assert_float_equal(svg_text_width("abcd", 10), 24, 1e-9);
}

/* --- the commands ------------------------------------------------------------------ */

static char kiln_path[1024];



static void write_text(const char *name, const char *text) {
  FILE *f = fopen(in_dir(name), "w");
  assert_non_null(f);
  fputs(text, f);
  assert_int_equal(fclose(f), 0);
}

static int exists(const char *name) {
  struct stat st;
  return stat(in_dir(name), &st) == 0;
}

/* Runs kiln with args (NULL-terminated), in the test folder. */
static result run_kiln(const char *const *args) { return run_kiln_in(kiln_path, dir, args); }

static void expect_in(const char *text, const char *what, const char *where) {
  if (!strstr(text, what)) {
    print_error("expected \"%s\" in %s:\n%s\n", what, where, text);
    fail();
  }
}

static int count(const char *text, const char *what) {
  int n = 0;
  for (const char *p = strstr(text, what); p; p = strstr(p + 1, what)) n++;
  return n;
}

/* Well-formed enough for any XML reader: every element closed in order, attribute
 * values quoted, no raw '<' or '&' in text. (python3's minidom checks it too.) */
static void check_xml(const char *svg, const char *name) {
  const char *stack[64];
  size_t stack_len[64];
  int depth = 0;
  const char *p = svg;
  if (strncmp(p, "<?xml", 5) == 0) p = strstr(p, "?>") + 2;
  for (; *p; p++) {
    if (*p == '&') {
      const char *ok[] = {"&amp;", "&lt;", "&gt;", "&quot;", "&#39;"};
      int good = 0;
      for (int i = 0; i < 5; i++) good |= strncmp(p, ok[i], strlen(ok[i])) == 0;
      if (!good) fail_msg("%s: a raw '&' at byte %ld", name, (long)(p - svg));
      continue;
    }
    if (*p != '<') continue;
    const char *end = strchr(p, '>');
    assert_non_null(end);
    int quotes = 0;
    for (const char *q = p; q < end; q++) {
      quotes += *q == '"';
      if (q > p && *q == '<') fail_msg("%s: '<' inside a tag at byte %ld", name, (long)(q - svg));
    }
    assert_int_equal(quotes % 2, 0);
    if (p[1] == '/') {
      size_t len = strcspn(p + 2, " >");
      assert_true(depth > 0);
      depth--;
      if (stack_len[depth] != len || strncmp(stack[depth], p + 2, len))
        fail_msg("%s: </%.*s> closes <%.*s>", name, (int)len, p + 2, (int)stack_len[depth],
                 stack[depth]);
    } else if (end[-1] != '/') {
      assert_true(depth < 64);
      stack[depth] = p + 1;
      stack_len[depth++] = strcspn(p + 1, " />");
    }
    p = end;
  }
  if (depth) fail_msg("%s: %d elements left open", name, depth);
  char cmd[700];
  if (system("command -v python3 >/dev/null 2>&1") == 0) {
    snprintf(cmd, sizeof cmd,
             "python3 -c 'import xml.dom.minidom,sys; xml.dom.minidom.parse(sys.argv[1])' %s",
             in_dir(name));
    if (system(cmd) != 0) fail_msg("%s: python3 minidom cannot parse it", name);
  }
}

static char *read_svg(const char *name) {
  char *s = read_text(in_dir(name));
  if (!s) fail_msg("%s was not written", name);
  check_xml(s, name);
  return s;
}

/* A run that must fail with exit 2, say `what` on stderr and leave no OUT file nor
 * any temporary in the folder. */
static void expect_failure(const char *const *args, const char *out_name, const char *what) {
  result r = run_kiln(args);
  if (r.code != 2) print_error("exit %d; stderr:\n%s\n", r.code, r.err);
  assert_int_equal(r.code, 2);
  expect_in(r.err, what, "stderr");
  expect_in(r.err, "error", "stderr");
  assert_false(exists(out_name));
  DIR *d = opendir(dir);
  struct dirent *e;
  while ((e = readdir(d)))
    if (strstr(e->d_name, ".tmp") || strstr(e->d_name, "XXXXXX"))
      fail_msg("a temporary was left: %s", e->d_name);
  closedir(d);
  result_free(&r);
}

static int setup(void **state) {
  (void)state;
  snprintf(dir, sizeof dir, "/tmp/kiln-plot-XXXXXX");
  return mkdtemp(dir) ? 0 : -1;
}

static int teardown(void **state) {
  (void)state;
  DIR *d = opendir(dir);
  if (d) {
    struct dirent *e;
    while ((e = readdir(d)))
      if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) unlink(in_dir(e->d_name));
    closedir(d);
  }
  rmdir(dir);
  return 0;
}

/* The points of the n-th <polyline> (0-based): count, and ys in order. */
static int polyline_points(const char *svg, int nth, double *xs, double *ys, int cap) {
  const char *p = svg;
  for (int i = 0; i <= nth; i++) {
    p = strstr(p, "<polyline points=\"");
    assert_non_null(p);
    p += 18;
  }
  int n = 0;
  while (*p != '"') {
    double x, y;
    int used;
    assert_int_equal(sscanf(p, "%lf,%lf%n", &x, &y, &used), 2);
    assert_true(n < cap);
    xs[n] = x;
    ys[n++] = y;
    p += used;
    while (*p == ' ') p++;
  }
  return n;
}

static void test_plot_history(void **state) {
  (void)state;
  /* What kiln_history_write_csv writes: epochs from 0. */
  const double loss[8] = {0.6, 0.45, 0.35, 0.28, 0.22, 0.18, 0.15, 0.12};
  const double val[8] = {0.5, 0.40, 0.33, 0.31, 0.30, 0.31, 0.33, 0.36};
  FILE *f = fopen(in_dir("history.csv"), "w");
  assert_non_null(f);
  fprintf(f, "epoch,loss,accuracy,val_loss,val_accuracy\n");
  for (int e = 0; e < 8; e++)
    fprintf(f, "%d,%.9g,%.9g,%.9g,%.9g\n", e, loss[e], 0.7 + 0.03 * e, val[e], 0.75 + 0.01 * e);
  assert_int_equal(fclose(f), 0);
  result r = run_kiln((const char *[]){"plot", "history.csv", "-o", "curves.svg", "--title",
                                       "IMDB <dense> & \"friends\"", NULL});
  if (r.code) print_error("%s", r.err);
  assert_int_equal(r.code, 0);
  result_free(&r);
  char *svg = read_svg("curves.svg");
  expect_in(svg, "IMDB &lt;dense&gt; &amp; &quot;friends&quot;", "curves.svg");
  expect_in(svg, "Training and validation loss", "curves.svg");
  expect_in(svg, "Training and validation accuracy", "curves.svg");
  expect_in(svg, ">Epochs<", "curves.svg");
  assert_int_equal(count(svg, "<polyline"), 2);          /* val_loss, val_accuracy */
  assert_int_equal(count(svg, "<g class=\"training\">"), 2);
  /* The validation loss: one point per epoch, x increasing, y mapped monotonically
   * (a higher loss is drawn higher, i.e. a smaller SVG y). */
  double xs[16], ys[16];
  assert_int_equal(polyline_points(svg, 0, xs, ys, 16), 8);
  for (int i = 1; i < 8; i++) {
    assert_true(xs[i] > xs[i - 1]);
    for (int j = 0; j < i; j++)
      if (val[i] > val[j]) assert_true(ys[i] < ys[j]);
      else if (val[i] < val[j]) assert_true(ys[i] > ys[j]);
  }
  /* epochs 0..7 in the file are 1..8 on the axis */
  expect_in(svg, ">8</text>", "curves.svg");
  free(svg);

  /* One panel, chosen by name (val_ names pick the pair too); NaN and empty cells are
   * skipped. */
  write_text("gaps.csv", "epoch,loss,val_loss\n0,1.0,1.2\n1,0.8,nan\n2,0.7,\n3,0.6,0.9\n");
  r = run_kiln((const char *[]){"plot", "gaps.csv", "--output=gaps.svg", "--metrics", "val_loss",
                                NULL});
  if (r.code) print_error("%s", r.err);
  assert_int_equal(r.code, 0);
  result_free(&r);
  svg = read_svg("gaps.svg");
  assert_int_equal(polyline_points(svg, 0, xs, ys, 16), 2);
  assert_int_equal(count(svg, "<circle"), 4 + 1); /* 4 dots + the legend's */
  free(svg);
}

/* Figure 4.10/4.11: the K-fold mean validation MAE per epoch, the first 10 left out. */
static void test_plot_kfold_skip_first(void **state) {
  (void)state;
  FILE *f = fopen(in_dir("mae.csv"), "w");
  assert_non_null(f);
  fprintf(f, "epoch,val_mae\n");
  for (int e = 1; e <= 100; e++) fprintf(f, "%d,%.4f\n", e, e < 10 ? 5.0 / e : 0.3 + 0.001 * e);
  assert_int_equal(fclose(f), 0);
  result r = run_kiln((const char *[]){"plot", "mae.csv", "-o", "mae.svg", "--skip-first", "10",
                                       NULL});
  if (r.code) print_error("%s", r.err);
  assert_int_equal(r.code, 0);
  result_free(&r);
  char *svg = read_svg("mae.svg");
  double xs[128], ys[128];
  assert_int_equal(polyline_points(svg, 0, xs, ys, 128), 90);
  for (int i = 1; i < 90; i++) assert_true(ys[i] < ys[i - 1]); /* rising MAE, drawn rising */
  expect_in(svg, "Validation mae", "mae.svg");
  expect_in(svg, ">100</text>", "mae.svg"); /* epochs from 1 stay as they are */
  assert_null(strstr(svg, ">5.0")); /* the skipped epochs do not set the scale */
  free(svg);
}

static void test_plot_bad_input(void **state) {
  (void)state;
  write_text("h.csv", "epoch,loss,val_loss\n0,1,2\n1,0.5,1\n");
  expect_failure((const char *[]){"plot", "missing.csv", "-o", "o.svg", NULL}, "o.svg",
                 "missing.csv: cannot read");
  write_text("noepoch.csv", "step,loss\n0,1\n");
  expect_failure((const char *[]){"plot", "noepoch.csv", "-o", "o.svg", NULL}, "o.svg",
                 "noepoch.csv:1: no epoch column");
  write_text("ragged.csv", "epoch,loss\n0,1\n1,2,3\n");
  expect_failure((const char *[]){"plot", "ragged.csv", "-o", "o.svg", NULL}, "o.svg",
                 "ragged.csv:3: 3 cells but the header has 2 columns");
  write_text("text.csv", "epoch,loss\n0,1\n1,0.5\n2,lots\n");
  expect_failure((const char *[]){"plot", "text.csv", "-o", "o.svg", NULL}, "o.svg",
                 "text.csv:4: column \"loss\": \"lots\" is not a number");
  write_text("badepoch.csv", "epoch,loss\nfirst,1\n");
  expect_failure((const char *[]){"plot", "badepoch.csv", "-o", "o.svg", NULL}, "o.svg",
                 "badepoch.csv:2: column \"epoch\"");
  write_text("order.csv", "epoch,loss\n0,1\n1,0.5\n1,0.4\n");
  expect_failure((const char *[]){"plot", "order.csv", "-o", "o.svg", NULL}, "o.svg",
                 "order.csv:4: epoch 1 after epoch 1: rows must be in increasing epoch order");
  write_text("empty.csv", "");
  expect_failure((const char *[]){"plot", "empty.csv", "-o", "o.svg", NULL}, "o.svg",
                 "empty.csv: empty file");
  write_text("header.csv", "epoch,loss\n");
  expect_failure((const char *[]){"plot", "header.csv", "-o", "o.svg", NULL}, "o.svg",
                 "header.csv: a header but no rows");
  write_text("allnan.csv", "epoch,loss\n0,nan\n1,\n");
  expect_failure((const char *[]){"plot", "allnan.csv", "-o", "o.svg", NULL}, "o.svg",
                 "allnan.csv: \"loss\" has no numbers");
  expect_failure((const char *[]){"plot", "h.csv", "-o", "o.svg", "--metrics", "loss,acc", NULL},
                 "o.svg", "no column \"acc\" (nor val_acc); available: loss");
  expect_failure((const char *[]){"plot", "h.csv", "-o", "o.png", NULL}, "o.png",
                 "-o o.png: unknown extension \".png\"");
  expect_failure((const char *[]){"plot", "h.csv", NULL}, "o.svg", "missing -o");
  expect_failure((const char *[]){"plot", "h.csv", "-o", "o.svg", "--skip-first", "2", NULL},
                 "o.svg", "--skip-first 2: h.csv has 2 epochs");
  expect_failure((const char *[]){"plot", "h.csv", "-o", "o.svg", "--skip-first", "-1", NULL},
                 "o.svg", "--skip-first");
  expect_failure((const char *[]){"plot", "h.csv", "-o", "no/dir/o.svg", NULL}, "no",
                 "no/dir/o.svg");
  /* A file that was there before a failing run is left as it was. */
  write_text("old.svg", "old");
  expect_failure((const char *[]){"plot", "ragged.csv", "-o", "old.svg", NULL}, "none",
                 "ragged.csv:3");
  char *old = read_text(in_dir("old.svg"));
  assert_string_equal(old, "old");
  free(old);
  result r = run_kiln((const char *[]){"plot", "--help", NULL});
  assert_int_equal(r.code, 0);
  expect_in(r.out, "--skip-first", "kiln plot --help");
  result_free(&r);
}

/* --- plot-model -------------------------------------------------------------------- */

static void save_sequential(const char *name) {
  kiln_model *m = NULL;
  kiln_error err = {0};
  assert_int_equal(kiln_model_create(1, &m, &err), KILN_OK);
  assert_int_equal(kiln_model_add_input(m, 20, &err), KILN_OK);
  assert_int_equal(kiln_model_add_dense(m, 16, KILN_ACTIVATION_RELU, &err), KILN_OK);
  assert_int_equal(kiln_model_add_dropout(m, 0.5f, &err), KILN_OK);
  assert_int_equal(kiln_model_add_dense(m, 3, KILN_ACTIVATION_SOFTMAX, &err), KILN_OK);
  kiln_optimizer opt;
  kiln_optimizer_init(&opt, KILN_OPTIMIZER_RMSPROP);
  assert_int_equal(kiln_model_compile(m, &opt, KILN_LOSS_CATEGORICAL_CROSSENTROPY, NULL, 0, &err),
                   KILN_OK);
  assert_int_equal(kiln_model_save(m, in_dir(name), &err), KILN_OK);
  kiln_model_free(m);
}

#define OK_ERR(call)                                               \
  do {                                                             \
    kiln_status s_ = (call);                                       \
    if (s_) fail_msg("%s: %s", #call, err.message);                \
  } while (0)

/* Figure 7.2's ticket classifier as ONNX (smaller widths): three inputs, Concat, a
 * Gemm+Relu, and two heads as graph outputs. `tricky` names a node with XML's
 * special characters. */
static void save_ticket_onnx(const char *name, int tricky) {
  kiln_ir_graph *g = NULL;
  kiln_error err = {0};
  OK_ERR(kiln_ir_create("ticket", &g, &err));
  OK_ERR(kiln_ir_set_opset(g, "", 13, &err));
  const char *batch[1] = {"batch"};
  const char *in_names[3] = {"title", "text_body", "tags"};
  int64_t widths[3] = {100, 100, 10};
  for (int i = 0; i < 3; i++) {
    int64_t dims[2] = {-1, widths[i]};
    const char *params[2] = {batch[0], NULL};
    OK_ERR(kiln_ir_add_input(g, in_names[i], KILN_DTYPE_FLOAT, dims, params, 2, &err));
  }
  kiln_ir_node *n = NULL;
  const char *concat_out[1] = {"features"};
  OK_ERR(kiln_ir_add_node(g, "Concat", tricky ? "join <a & b>" : "concatenate", in_names, 3,
                      concat_out, 1, &n, &err));
  OK_ERR(kiln_ir_node_set_int(n, "axis", 1, &err));
  static float w1[210 * 8], b1[8], w2[8], b2[1], w3[8 * 4], b3[4];
  int64_t d1[2] = {210, 8}, db1[1] = {8}, d2[2] = {8, 1}, db2[1] = {1}, d3[2] = {8, 4},
          db3[1] = {4};
  OK_ERR(kiln_ir_add_initializer(g, "w1", KILN_DTYPE_FLOAT, d1, 2, w1, &err));
  OK_ERR(kiln_ir_add_initializer(g, "b1", KILN_DTYPE_FLOAT, db1, 1, b1, &err));
  OK_ERR(kiln_ir_add_initializer(g, "w2", KILN_DTYPE_FLOAT, d2, 2, w2, &err));
  OK_ERR(kiln_ir_add_initializer(g, "b2", KILN_DTYPE_FLOAT, db2, 1, b2, &err));
  OK_ERR(kiln_ir_add_initializer(g, "w3", KILN_DTYPE_FLOAT, d3, 2, w3, &err));
  OK_ERR(kiln_ir_add_initializer(g, "b3", KILN_DTYPE_FLOAT, db3, 1, b3, &err));
  const char *g1_in[3] = {"features", "w1", "b1"}, *g1_out[1] = {"hidden_pre"};
  OK_ERR(kiln_ir_add_node(g, "Gemm", "dense", g1_in, 3, g1_out, 1, &n, &err));
  const char *r_in[1] = {"hidden_pre"}, *r_out[1] = {"hidden"};
  OK_ERR(kiln_ir_add_node(g, "Relu", "dense_relu", r_in, 1, r_out, 1, &n, &err));
  const char *p_in[3] = {"hidden", "w2", "b2"}, *p_out[1] = {"priority_pre"};
  OK_ERR(kiln_ir_add_node(g, "Gemm", "priority_dense", p_in, 3, p_out, 1, &n, &err));
  const char *s_in[1] = {"priority_pre"}, *s_out[1] = {"priority"};
  OK_ERR(kiln_ir_add_node(g, "Sigmoid", "priority_sigmoid", s_in, 1, s_out, 1, &n, &err));
  const char *d_in[3] = {"hidden", "w3", "b3"}, *d_out[1] = {"department_pre"};
  OK_ERR(kiln_ir_add_node(g, "Gemm", "department_dense", d_in, 3, d_out, 1, &n, &err));
  const char *x_in[1] = {"department_pre"}, *x_out[1] = {"department"};
  OK_ERR(kiln_ir_add_node(g, "Softmax", "department_softmax", x_in, 1, x_out, 1, &n, &err));
  OK_ERR(kiln_ir_node_set_int(n, "axis", -1, &err));
  int64_t od1[2] = {-1, 1}, od2[2] = {-1, 4};
  const char *params[2] = {"batch", NULL};
  OK_ERR(kiln_ir_add_output(g, "priority", KILN_DTYPE_FLOAT, od1, params, 2, &err));
  OK_ERR(kiln_ir_add_output(g, "department", KILN_DTYPE_FLOAT, od2, params, 2, &err));
  OK_ERR(kiln_onnx_write_file(g, in_dir(name), &err));
  kiln_ir_free(g);
}

static void test_plot_model_sequential(void **state) {
  (void)state;
  save_sequential("seq.kiln");
  result r = run_kiln((const char *[]){"plot-model", "seq.kiln", "-o", "seq.svg", "--show-shapes",
                                       "--show-layer-names", NULL});
  if (r.code) print_error("%s", r.err);
  assert_int_equal(r.code, 0);
  result_free(&r);
  char *svg = read_svg("seq.svg");
  expect_in(svg, "dense (Dense)", "seq.svg");
  expect_in(svg, "dropout (Dropout)", "seq.svg");
  expect_in(svg, "(InputLayer)", "seq.svg");
  expect_in(svg, "output: (None, 3)", "seq.svg");
  expect_in(svg, "input:  (None, 16)", "seq.svg");
  assert_int_equal(count(svg, "<rect") - 1, 4);               /* 4 boxes, the background */
  assert_int_equal(count(svg, "marker-end=\"url(#arrow)\""), 3); /* a chain: 3 arrows */
  free(svg);
  /* Types only by default, left to right, and DOT. */
  r = run_kiln((const char *[]){"plot-model", "seq.kiln", "-o", "seq2.svg", "--rankdir", "LR",
                                NULL});
  assert_int_equal(r.code, 0);
  result_free(&r);
  svg = read_svg("seq2.svg");
  assert_null(strstr(svg, "dense (Dense)"));
  expect_in(svg, ">Dense</text>", "seq2.svg");
  assert_null(strstr(svg, "None"));
  free(svg);
  r = run_kiln((const char *[]){"plot-model", "seq.kiln", "-o", "seq.dot", "--show-shapes",
                                "--rankdir=LR", NULL});
  assert_int_equal(r.code, 0);
  result_free(&r);
  char *dot = read_text(in_dir("seq.dot"));
  assert_non_null(dot);
  expect_in(dot, "digraph model {", "seq.dot");
  expect_in(dot, "rankdir=LR;", "seq.dot");
  expect_in(dot, "n0 -> n1;", "seq.dot");
  expect_in(dot, "n2 -> n3;", "seq.dot");
  expect_in(dot, "output: (None, 3)", "seq.dot");
  free(dot);
  /* A spec draws the same way (its Input takes --input-features). */
  write_text("spec.json",
             "{\"layers\": [{\"type\": \"Input\"}, {\"type\": \"Dense\", \"units\": 4},"
             " {\"type\": \"Dense\", \"units\": 1, \"activation\": \"sigmoid\"}],"
             " \"compile\": {\"loss\": \"binary_crossentropy\"}}");
  r = run_kiln((const char *[]){"plot-model", "spec.json", "--input-features", "7", "-o",
                                "spec.svg", "--show-shapes", NULL});
  if (r.code) print_error("%s", r.err);
  assert_int_equal(r.code, 0);
  result_free(&r);
  svg = read_svg("spec.svg");
  expect_in(svg, "(None, 7)", "spec.svg");
  free(svg);
}

static void test_plot_model_onnx_multi_io(void **state) {
  (void)state;
  save_ticket_onnx("ticket.onnx", 0);
  result r = run_kiln((const char *[]){"plot-model", "ticket.onnx", "-o", "ticket.svg",
                                       "--show-shapes", "--show-layer-names", NULL});
  if (r.code) print_error("%s", r.err);
  assert_int_equal(r.code, 0);
  result_free(&r);
  char *svg = read_svg("ticket.svg");
  expect_in(svg, "title (Input)", "ticket.svg");
  expect_in(svg, "text_body (Input)", "ticket.svg");
  expect_in(svg, "tags (Input)", "ticket.svg");
  expect_in(svg, "concatenate (Concat)", "ticket.svg");
  expect_in(svg, "output: (batch, 210)", "ticket.svg");
  expect_in(svg, "[(batch, 100), (batch, 100), (batch, 10)]", "ticket.svg");
  expect_in(svg, "priority (Output)", "ticket.svg");
  expect_in(svg, "department (Output)", "ticket.svg");
  /* 3 inputs + 7 nodes + 2 outputs; edges: 3 into Concat, 6 along the nodes, 2 out */
  assert_int_equal(count(svg, "<rect") - 1, 12);
  assert_int_equal(count(svg, "marker-end=\"url(#arrow)\""), 11);
  free(svg);
  r = run_kiln((const char *[]){"plot-model", "ticket.onnx", "-o", "ticket.dot", NULL});
  assert_int_equal(r.code, 0);
  result_free(&r);
  char *dot = read_text(in_dir("ticket.dot"));
  assert_int_equal(count(dot, " -> "), 11);
  expect_in(dot, "n0 -> n3;", "ticket.dot"); /* title -> Concat */
  expect_in(dot, "n2 -> n3;", "ticket.dot"); /* tags -> Concat */
  free(dot);
  /* Names with XML's special characters stay well-formed. */
  save_ticket_onnx("tricky.onnx", 1);
  r = run_kiln((const char *[]){"plot-model", "tricky.onnx", "-o", "tricky.svg",
                                "--show-layer-names", NULL});
  assert_int_equal(r.code, 0);
  result_free(&r);
  svg = read_svg("tricky.svg");
  expect_in(svg, "join &lt;a &amp; b&gt; (Concat)", "tricky.svg");
  free(svg);
}

/* Figure 7.3 from a real functional model (listing 7.9's ticket classifier, small
 * widths), saved and loaded as a .kiln. */
static void test_plot_model_functional_kiln(void **state) {
  (void)state;
  kiln_model *m;
  kiln_error err = {0};
  kiln_node title, body, tags, cat, feat, pri, dep;
  OK_ERR(kiln_model_create(1, &m, &err));
  OK_ERR(kiln_model_input(m, "title", 100, &title, &err));
  OK_ERR(kiln_model_input(m, "text_body", 100, &body, &err));
  OK_ERR(kiln_model_input(m, "tags", 10, &tags, &err));
  kiln_node ins[] = {title, body, tags};
  OK_ERR(kiln_model_concatenate(m, ins, 3, NULL, &cat, &err));
  kiln_dense_options o;
  kiln_dense_options_init(&o);
  o.activation = KILN_ACTIVATION_RELU;
  OK_ERR(kiln_model_dense(m, cat, 64, &o, &feat, &err));
  o.activation = KILN_ACTIVATION_SIGMOID;
  o.name = "priority";
  OK_ERR(kiln_model_dense(m, feat, 1, &o, &pri, &err));
  o.activation = KILN_ACTIVATION_SOFTMAX;
  o.name = "department";
  OK_ERR(kiln_model_dense(m, feat, 4, &o, &dep, &err));
  OK_ERR(kiln_model_set_inputs(m, ins, 3, &err));
  kiln_node outs[] = {pri, dep};
  OK_ERR(kiln_model_set_outputs(m, outs, 2, &err));
  kiln_optimizer opt;
  kiln_optimizer_init(&opt, KILN_OPTIMIZER_RMSPROP);
  kiln_output_config c[2];
  kiln_output_config_init(&c[0]);
  kiln_output_config_init(&c[1]);
  c[0].loss = KILN_LOSS_MEAN_SQUARED_ERROR;
  c[1].loss = KILN_LOSS_SPARSE_CATEGORICAL_CROSSENTROPY;
  OK_ERR(kiln_model_compile_outputs(m, &opt, c, 2, &err));
  OK_ERR(kiln_model_save(m, in_dir("ticket.kiln"), &err));
  kiln_model_free(m);

  result r = run_kiln((const char *[]){"plot-model", "ticket.kiln", "-o", "ticket.svg",
                                       "--show-shapes", "--show-layer-names", NULL});
  if (r.code) print_error("%s", r.err);
  assert_int_equal(r.code, 0);
  result_free(&r);
  char *svg = read_svg("ticket.svg");
  expect_in(svg, "title (InputLayer)", "ticket.svg");
  expect_in(svg, "tags (InputLayer)", "ticket.svg");
  expect_in(svg, "(Concatenate)", "ticket.svg");
  expect_in(svg, "input:  [(None, 100), (None, 100), (None, 10)]", "ticket.svg");
  expect_in(svg, "output: (None, 210)", "ticket.svg");
  expect_in(svg, "priority (Dense)", "ticket.svg");
  expect_in(svg, "department (Dense)", "ticket.svg");
  assert_int_equal(count(svg, "<rect") - 1, 7);
  assert_int_equal(count(svg, "marker-end=\"url(#arrow)\""), 6);
  free(svg);
  r = run_kiln((const char *[]){"plot-model", "ticket.kiln", "-o", "ticket.dot", NULL});
  assert_int_equal(r.code, 0);
  result_free(&r);
  char *dot = read_text(in_dir("ticket.dot"));
  for (int i = 0; i < 3; i++) {
    char edge[32];
    snprintf(edge, sizeof edge, "n%d -> n3;", i);
    expect_in(dot, edge, "ticket.dot");
  }
  expect_in(dot, "n4 -> n5;", "ticket.dot");
  expect_in(dot, "n4 -> n6;", "ticket.dot");
  free(dot);
}

static void test_plot_model_bad_input(void **state) {
  (void)state;
  save_sequential("seq.kiln");
  expect_failure((const char *[]){"plot-model", "missing.kiln", "-o", "m.svg", NULL}, "m.svg",
                 "missing.kiln: cannot open");
  expect_failure((const char *[]){"plot-model", "seq.kiln", "-o", "m.png", NULL}, "m.png",
                 "-o m.png: unknown extension \".png\"");
  expect_failure((const char *[]){"plot-model", "seq.kiln", "-o", "m", NULL}, "m",
                 "unknown extension");
  expect_failure((const char *[]){"plot-model", "seq.kiln", NULL}, "m.svg", "missing -o");
  expect_failure((const char *[]){"plot-model", "-o", "m.svg", NULL}, "m.svg", "missing MODEL");
  expect_failure((const char *[]){"plot-model", "seq.kiln", "-o", "m.svg", "--rankdir", "BT",
                                  NULL},
                 "m.svg", "--rankdir: expected TB or LR");
  expect_failure((const char *[]){"plot-model", "seq.kiln", "-o", "m.svg", "--show-shapes=1",
                                  NULL},
                 "m.svg", "--show-shapes takes no value");
  write_text("garbage.onnx", "not a protobuf at all");
  expect_failure((const char *[]){"plot-model", "garbage.onnx", "-o", "m.svg", NULL}, "m.svg",
                 "garbage.onnx");
  write_text("garbage.kiln", "not a model");
  expect_failure((const char *[]){"plot-model", "garbage.kiln", "-o", "m.svg", NULL}, "m.svg",
                 "garbage.kiln");
  write_text("bad.json", "{\"layers\": [{\"type\": \"Dense\", \"units\": -1}]}");
  expect_failure((const char *[]){"plot-model", "bad.json", "-o", "m.svg", NULL}, "m.svg",
                 "bad.json");
  write_text("nowidth.json", "{\"layers\": [{\"type\": \"Input\"}, {\"type\": \"Dense\", "
                             "\"units\": 2}], \"compile\": {\"loss\": \"mse\"}}");
  expect_failure((const char *[]){"plot-model", "nowidth.json", "-o", "m.svg", NULL}, "m.svg",
                 "--input-features N");
  result r = run_kiln((const char *[]){"plot-model", "--help", NULL});
  assert_int_equal(r.code, 0);
  expect_in(r.out, "--show-shapes", "kiln plot-model --help");
  result_free(&r);
  r = run_kiln((const char *[]){"--help", NULL});
  expect_in(r.out, "plot-model", "kiln --help");
  result_free(&r);
}

int main(void) {
  const struct CMUnitTest unit[] = {
      cmocka_unit_test(test_layout_chain),   cmocka_unit_test(test_layout_diamond),
      cmocka_unit_test(test_layout_ticket),  cmocka_unit_test(test_layout_errors),
      cmocka_unit_test(test_axis_ticks),     cmocka_unit_test(test_svg_escape),
  };
  int failed = cmocka_run_group_tests_name("layout", unit, NULL, NULL);
  const char *bin = getenv("KILN_BINARY_DIR");
  if (!bin) {
    fprintf(stderr, "KILN_BINARY_DIR is not set (run under ctest): the command tests skipped\n");
    return failed;
  }
  snprintf(kiln_path, sizeof kiln_path, "%s/tools/kiln", bin);
  if (access(kiln_path, X_OK) != 0) {
    fprintf(stderr, "%s is not built: the command tests skipped\n", kiln_path);
    return failed;
  }
  const struct CMUnitTest commands[] = {
      cmocka_unit_test_setup_teardown(test_plot_history, setup, teardown),
      cmocka_unit_test_setup_teardown(test_plot_kfold_skip_first, setup, teardown),
      cmocka_unit_test_setup_teardown(test_plot_bad_input, setup, teardown),
      cmocka_unit_test_setup_teardown(test_plot_model_sequential, setup, teardown),
      cmocka_unit_test_setup_teardown(test_plot_model_onnx_multi_io, setup, teardown),
      cmocka_unit_test_setup_teardown(test_plot_model_functional_kiln, setup, teardown),
      cmocka_unit_test_setup_teardown(test_plot_model_bad_input, setup, teardown),
  };
  return failed | cmocka_run_group_tests_name("commands", commands, NULL, NULL);
}

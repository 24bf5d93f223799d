/* Tests of the data loaders and preprocessing (include/kiln/data.h).
 *
 * Hand-made files in a temporary directory cover every format and its bad inputs;
 * each failure checks the status and that the message names the place. When the
 * real data directory exists ($KILN_DATA_DIR, set by ctest) the real sets are loaded
 * too (and timed); those parts are skipped with a message when it is absent. */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif

#include <dirent.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#include <cmocka.h>

#include "kiln/data.h"

static char tmp_root[256];

/* ---- helpers ------------------------------------------------------------- */

static const char *tmp_path(char *buf, size_t n, const char *rel) {
  snprintf(buf, n, "%s/%s", tmp_root, rel);
  return buf;
}

/* Creates every parent directory of root/rel. */
static void make_parents(const char *rel) {
  char p[1024];
  tmp_path(p, sizeof p, rel);
  for (char *s = p + strlen(tmp_root) + 1; *s; s++)
    if (*s == '/') {
      *s = '\0';
      mkdir(p, 0700);
      *s = '/';
    }
}

static const char *write_file(const char *rel, const void *data, size_t len) {
  static char p[1024]; /* test-only scratch */
  make_parents(rel);
  tmp_path(p, sizeof p, rel);
  FILE *f = fopen(p, "wb");
  assert_non_null(f);
  assert_int_equal(fwrite(data, 1, len, f), len);
  assert_int_equal(fclose(f), 0);
  return p;
}

static const char *write_text(const char *rel, const char *text) {
  return write_file(rel, text, strlen(text));
}

static void write_gz(const char *rel, const void *data, size_t len) {
  char p[1024];
  make_parents(rel);
  tmp_path(p, sizeof p, rel);
  gzFile g = gzopen(p, "wb");
  assert_non_null(g);
  if (len) assert_int_equal(gzwrite(g, data, (unsigned)len), (int)len);
  assert_int_equal(gzclose(g), Z_OK);
}

static void truncate_to(const char *rel, double fraction) {
  char p[1024];
  struct stat st;
  tmp_path(p, sizeof p, rel);
  assert_int_equal(stat(p, &st), 0);
  assert_int_equal(truncate(p, (off_t)((double)st.st_size * fraction)), 0);
}

static void rm_rf(const char *path) {
  struct stat st;
  if (lstat(path, &st) != 0) return;
  if (S_ISDIR(st.st_mode)) {
    DIR *d = opendir(path);
    if (d) {
      struct dirent *e;
      while ((e = readdir(d)) != NULL) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        char child[2048];
        snprintf(child, sizeof child, "%s/%s", path, e->d_name);
        rm_rf(child);
      }
      closedir(d);
    }
    rmdir(path);
  } else {
    unlink(path);
  }
}

static int file_exists(const char *path) {
  struct stat st;
  return stat(path, &st) == 0;
}

#define assert_message(e, needle)                                                \
  do {                                                                           \
    if (!strstr((e).message, (needle)))                                          \
      fail_msg("message \"%s\" does not contain \"%s\"", (e).message, (needle)); \
  } while (0)

#define assert_status(call, want, e)                                              \
  do {                                                                            \
    kiln_status got_ = (call);                                                    \
    if (got_ != (want))                                                           \
      fail_msg("%s returned %d (%s), expected %d; message: %s", #call, (int)got_, \
               kiln_status_name(got_), (int)(want), (e).message);                 \
  } while (0)

static kiln_load_options opts_in(const char *subdir, char *buf, size_t n) {
  kiln_load_options o;
  kiln_load_options_init(&o);
  o.data_dir = tmp_path(buf, n, subdir);
  return o;
}

static double now_s(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static int setup(void **state) {
  (void)state;
  const char *base = getenv("TMPDIR");
  snprintf(tmp_root, sizeof tmp_root, "%s/kiln_test_data_XXXXXX", base && *base ? base : "/tmp");
  return mkdtemp(tmp_root) ? 0 : -1;
}

static int teardown(void **state) {
  (void)state;
  rm_rf(tmp_root);
  return 0;
}

/* ---- options ------------------------------------------------------------- */

static void test_options(void **state) {
  (void)state;
  kiln_load_options o;
  memset(&o, 0xab, sizeof o);
  kiln_load_options_init(&o);
  assert_int_equal(o.num_words, 10000);
  assert_int_equal(o.multi_hot, 1);
  assert_string_equal(o.version, "small");
  assert_int_equal(o.seed, 113);
  assert_true(o.test_fraction == 0.2);
  assert_int_equal(o.missing, KILN_MISSING_ERROR);
  assert_null(o.data_dir);
  assert_null(o.target);
  assert_int_equal(o.num_classes, 0);

  char *saved = getenv("KILN_DATA_DIR") ? strdup(getenv("KILN_DATA_DIR")) : NULL;
  setenv("KILN_DATA_DIR", "/some/where", 1);
  assert_string_equal(kiln_data_dir(&o), "/some/where");
  assert_string_equal(kiln_data_dir(NULL), "/some/where");
  o.data_dir = "/explicit";
  assert_string_equal(kiln_data_dir(&o), "/explicit");
  o.data_dir = NULL;
  unsetenv("KILN_DATA_DIR");
  assert_string_equal(kiln_data_dir(&o), "../shared/data");
  if (saved) setenv("KILN_DATA_DIR", saved, 1);
  free(saved);

  kiln_dataset tr, te;
  kiln_error e = {0};
  assert_status(kiln_dataset_load("mnist_digits", &o, &tr, &te, &e), KILN_E_INVALID, e);
  assert_message(e, "mnist_digits");
}

/* ---- text (IMDB / Reuters format) ---------------------------------------- */

static void test_text_load(void **state) {
  (void)state;
  const char train[] = "1\t1 14 22 16\n0\t1 5 5 9999 10000 12000\n1\t\n0\t1 3 3 3\n";
  write_gz("t_ok/imdb/train.txt.gz", train, strlen(train));
  /* CRLF endings and no final newline are accepted */
  const char test[] = "0\t1 2 7\r\n1\t1 12001";
  write_gz("t_ok/imdb/test.txt.gz", test, strlen(test));

  char dir[1024];
  kiln_load_options o = opts_in("t_ok", dir, sizeof dir);
  kiln_dataset tr, te;
  kiln_error e = {0};
  assert_status(kiln_dataset_load("imdb", &o, &tr, &te, &e), KILN_OK, e);
  assert_int_equal(tr.num_classes, 2);
  assert_int_equal(tr.seq.count, 4);
  assert_int_equal(tr.y.rows, 4);
  assert_int_equal(tr.y.cols, 1);
  assert_true(tr.y.values[0] == 1 && tr.y.values[1] == 0 && tr.y.values[2] == 1);
  const int32_t row1[] = {1, 5, 5, 9999, 2, 2}; /* ids >= num_words become 2 */
  assert_int_equal(tr.seq.offsets[2] - tr.seq.offsets[1], 6);
  for (int i = 0; i < 6; i++) assert_int_equal(tr.seq.tokens[tr.seq.offsets[1] + i], row1[i]);
  assert_int_equal(tr.seq.offsets[3] - tr.seq.offsets[2], 0); /* empty token list */
  /* multi-hot: sorted unique columns */
  assert_true(kiln_matrix_is_sparse(&tr.x));
  assert_null(tr.x.values);
  assert_int_equal(tr.x.rows, 4);
  assert_int_equal(tr.x.cols, 10000);
  const int32_t cols1[] = {1, 2, 5, 9999};
  assert_int_equal(tr.x.row_ptr[2] - tr.x.row_ptr[1], 4);
  for (int i = 0; i < 4; i++) assert_int_equal(tr.x.col_idx[tr.x.row_ptr[1] + i], cols1[i]);
  assert_int_equal(tr.x.row_ptr[4] - tr.x.row_ptr[3], 2); /* 1, 3 */
  assert_int_equal(te.seq.count, 2);
  assert_int_equal(te.x.rows, 2);
  assert_int_equal(te.seq.tokens[te.seq.offsets[1] + 1], 2);
  kiln_dataset_free(&tr);
  kiln_dataset_free(&te);
  assert_null(tr.seq.tokens);

  /* all words, no multi-hot: the ids are kept; x stays empty */
  o.num_words = 0;
  o.multi_hot = 0;
  assert_status(kiln_dataset_load("imdb", &o, &tr, NULL, &e), KILN_OK, e);
  assert_int_equal(tr.seq.tokens[tr.seq.offsets[1] + 5], 12000);
  assert_int_equal(tr.x.rows, 0);
  assert_null(tr.x.row_ptr);
  kiln_dataset_free(&tr);
  /* all words with multi-hot: one width for both splits, covering every id */
  o.multi_hot = 1;
  assert_status(kiln_dataset_load("imdb", &o, &tr, &te, &e), KILN_OK, e);
  assert_int_equal(tr.x.cols, 12002);
  assert_int_equal(te.x.cols, 12002);
  kiln_dataset_free(&tr);
  kiln_dataset_free(&te);

  /* Reuters: 46 classes */
  const char rtrain[] = "45\t1 4 5\n3\t1 6\n";
  write_gz("t_ok/reuters/train.txt.gz", rtrain, strlen(rtrain));
  o.num_words = 10;
  assert_status(kiln_dataset_load("reuters", &o, &tr, NULL, &e), KILN_OK, e);
  assert_int_equal(tr.num_classes, 46);
  assert_true(tr.y.values[0] == 45.0f);
  kiln_dataset_free(&tr);
}

/* Loads <sub>/imdb with the given train file content; expects `want` and `where`. */
static void expect_text_error(const char *sub, const char *name, const char *content,
                              kiln_status want, const char *where) {
  char rel[256], dir[1024];
  snprintf(rel, sizeof rel, "%s/%s/train.txt.gz", sub, name);
  write_gz(rel, content, strlen(content));
  kiln_load_options o = opts_in(sub, dir, sizeof dir);
  kiln_dataset tr, te;
  kiln_error e = {0};
  assert_status(kiln_dataset_load(name, &o, &tr, &te, &e), want, e);
  assert_message(e, where);
  assert_int_equal(tr.seq.count, 0); /* nothing left behind */
  assert_null(tr.seq.tokens);
}

static void test_text_errors(void **state) {
  (void)state;
  kiln_dataset tr, te;
  kiln_error e = {0};
  char dir[1024];
  /* missing file */
  mkdir(tmp_path(dir, sizeof dir, "t_none"), 0700);
  kiln_load_options o = opts_in("t_none", dir, sizeof dir);
  assert_status(kiln_dataset_load("imdb", &o, &tr, &te, &e), KILN_E_IO, e);
  assert_message(e, "imdb/train.txt.gz");

  expect_text_error("t_bad1", "imdb", "1\t1 2\n0\t1 x 3\n", KILN_E_FORMAT, "train.txt.gz:2:5");
  expect_text_error("t_bad2", "imdb", "1\t1  2\n", KILN_E_FORMAT, "train.txt.gz:1:5");
  expect_text_error("t_bad3", "imdb", "1 1 2\n", KILN_E_FORMAT, "train.txt.gz:1:2");
  expect_text_error("t_bad4", "imdb", "1\t1 2\n\n0\t1\n", KILN_E_FORMAT, "train.txt.gz:2:1");
  expect_text_error("t_bad5", "imdb", "1\t1 2 \n", KILN_E_FORMAT, "train.txt.gz:1:7");
  expect_text_error("t_bad6", "imdb", "1\t1 99999999999\n", KILN_E_FORMAT, "train.txt.gz:1:");
  expect_text_error("t_bad7", "imdb", "", KILN_E_FORMAT, "no records");
  expect_text_error("t_range1", "imdb", "0\t1 2\n1\t1\n2\t1 5\n", KILN_E_RANGE,
                    "train.txt.gz:3: label 2 outside [0, 2)");
  expect_text_error("t_range2", "reuters", "0\t1 2\n46\t1\n", KILN_E_RANGE,
                    "train.txt.gz:2: label 46 outside [0, 46)");

  /* truncated gzip: a long valid file cut in half */
  size_t n = 0, cap = 1 << 20;
  char *big = malloc(cap);
  assert_non_null(big);
  for (int r = 0; n + 200 < cap; r++)
    n += (size_t)snprintf(big + n, cap - n, "%d\t1 %d %d %d %d %d\n", r % 2, r * 7 % 9973,
                          r * 13 % 9857, r * 31 % 20011, r % 97, r * 101 % 65537);
  write_gz("t_trunc/imdb/train.txt.gz", big, n);
  free(big);
  truncate_to("t_trunc/imdb/train.txt.gz", 0.5);
  o = opts_in("t_trunc", dir, sizeof dir);
  assert_status(kiln_dataset_load("imdb", &o, &tr, &te, &e), KILN_E_FORMAT, e);
  assert_message(e, "train.txt.gz:");
  assert_message(e, "truncated");
}

/* ---- California housing -------------------------------------------------- */

static const char housing_header[] =
    "longitude,latitude,housing_median_age,total_rooms,total_bedrooms,population,households,"
    "median_income,median_house_value\n";

/* n rows; row r has target 1000 * (r + 1) and total_bedrooms 10 * (r + 1), or empty when
 * r == missing_row. */
static void write_housing(const char *sub, int n, int missing_row, const char *bad_cell) {
  size_t cap = (size_t)n * 128 + 512, len = 0;
  char *s = malloc(cap);
  assert_non_null(s);
  len += (size_t)snprintf(s + len, cap - len, "%s", housing_header);
  for (int r = 0; r < n; r++) {
    char bed[32];
    if (r == missing_row)
      bed[0] = '\0';
    else
      snprintf(bed, sizeof bed, "%d.0", 10 * (r + 1));
    len +=
        (size_t)snprintf(s + len, cap - len, "-122.%02d,37.%02d,%d.0,%d.0,%s,%d.0,%d.0,%s,%d.0\n",
                         r % 100, (r * 7) % 100, r % 50 + 1, 100 + r, bed, 300 + r, 120 + r,
                         r == 2 && bad_cell ? bad_cell : "3.5", 1000 * (r + 1));
  }
  char rel[256];
  snprintf(rel, sizeof rel, "%s/housing/california_housing.csv", sub);
  write_file(rel, s, len);
  free(s);
}

/* Checks the split of the 10-row file of test_housing (row 3 missing): every row once,
 * and the imputed cell equal to the median over the training rows. Returns whether that
 * median differs from the median over all rows. */
static double median_of(double *v, int n) {
  for (int i = 0; i < n; i++)
    for (int j = i + 1; j < n; j++)
      if (v[j] < v[i]) {
        double t = v[i];
        v[i] = v[j];
        v[j] = t;
      }
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static int check_imputed(const kiln_dataset *tr, const kiln_dataset *te) {
  assert_int_equal(tr->x.rows, 8);
  assert_int_equal(tr->x.cols, 8);
  assert_int_equal(te->x.rows, 2);
  assert_int_equal(tr->num_classes, 0);
  int seen[10] = {0}, nb = 0, found = 0;
  double beds[8], all[9];
  for (int64_t i = 0; i < 8; i++) {
    int r = (int)(tr->y.values[i] / 1000.0f) - 1;
    seen[r]++;
    if (r != 3) beds[nb++] = tr->x.values[i * 8 + 4];
  }
  for (int64_t i = 0; i < 2; i++) seen[(int)(te->y.values[i] / 1000.0f) - 1]++;
  for (int r = 0; r < 10; r++) assert_int_equal(seen[r], 1);
  double median = median_of(beds, nb);
  for (int r = 0, k = 0; r < 10; r++)
    if (r != 3) all[k++] = 10.0 * (r + 1);
  double all_median = median_of(all, 9);
  for (int part = 0; part < 2; part++) {
    const kiln_dataset *d = part ? te : tr;
    for (int64_t i = 0; i < d->y.rows; i++)
      if ((int)(d->y.values[i] / 1000.0f) == 4) {
        assert_float_equal(d->x.values[i * 8 + 4], median, 1e-3);
        found = 1;
      }
  }
  assert_true(found);
  return median != all_median;
}

static void test_housing(void **state) {
  (void)state;
  char dir[1024];
  kiln_dataset tr, te;
  kiln_error e = {0};
  write_housing("h_small", 10, 3, NULL);
  kiln_load_options o = opts_in("h_small", dir, sizeof dir);
  /* default policy: the missing cell is an error naming file:line and column */
  assert_status(kiln_dataset_load("california_housing", &o, &tr, &te, &e), KILN_E_FORMAT, e);
  assert_message(e, "california_housing.csv:5");
  assert_message(e, "total_bedrooms");

  o.missing = KILN_MISSING_IMPUTE_MEDIAN;
  /* the imputed cell holds the median of the training rows (not of all rows) */
  int train_median_differs = 0;
  for (uint64_t seed = 0; seed < 8; seed++) {
    o.seed = seed;
    assert_status(kiln_dataset_load("california_housing", &o, &tr, &te, &e), KILN_OK, e);
    train_median_differs += check_imputed(&tr, &te);
    kiln_dataset_free(&tr);
    kiln_dataset_free(&te);
  }
  assert_true(train_median_differs > 0); /* the seeds above do tell the two apart */
  o.seed = 113;
  assert_status(kiln_dataset_load("california_housing", &o, &tr, &te, &e), KILN_OK, e);
  float first_y = tr.y.values[0];
  kiln_dataset_free(&tr);
  kiln_dataset_free(&te);

  /* the split is a function of the seed */
  assert_status(kiln_dataset_load("california_housing", &o, &tr, &te, &e), KILN_OK, e);
  assert_true(tr.y.values[0] == first_y);
  kiln_dataset_free(&tr);
  kiln_dataset_free(&te);
  int differs = 0;
  for (uint64_t seed = 1; seed < 6 && !differs; seed++) {
    o.seed = seed;
    assert_status(kiln_dataset_load("california_housing", &o, &tr, &te, &e), KILN_OK, e);
    differs = tr.y.values[0] != first_y;
    kiln_dataset_free(&tr);
    kiln_dataset_free(&te);
  }
  assert_true(differs);
  o.seed = 113;

  /* bad options */
  o.version = "medium";
  assert_status(kiln_dataset_load("california_housing", &o, &tr, &te, &e), KILN_E_INVALID, e);
  assert_message(e, "medium");
  o.version = "small";

  /* small = the first 600 rows, large = all */
  write_housing("h_700", 700, -1, NULL);
  o = opts_in("h_700", dir, sizeof dir);
  assert_status(kiln_dataset_load("california_housing", &o, &tr, &te, &e), KILN_OK, e);
  assert_int_equal(tr.x.rows, 480);
  assert_int_equal(te.x.rows, 120);
  for (int64_t i = 0; i < 480; i++) assert_true(tr.y.values[i] <= 600000.0f);
  kiln_dataset_free(&tr);
  kiln_dataset_free(&te);
  o.version = "large";
  assert_status(kiln_dataset_load("california_housing", &o, &tr, &te, &e), KILN_OK, e);
  assert_int_equal(tr.x.rows, 560);
  assert_int_equal(te.x.rows, 140);
  kiln_dataset_free(&tr);
  kiln_dataset_free(&te);

  /* NaN and text in a feature */
  write_housing("h_nan", 10, -1, "nan");
  o = opts_in("h_nan", dir, sizeof dir);
  assert_status(kiln_dataset_load("california_housing", &o, &tr, &te, &e), KILN_E_RANGE, e);
  assert_message(e, "california_housing.csv:4");
  assert_message(e, "median_income");
  write_housing("h_text", 10, -1, "abc");
  o = opts_in("h_text", dir, sizeof dir);
  assert_status(kiln_dataset_load("california_housing", &o, &tr, &te, &e), KILN_E_FORMAT, e);
  assert_message(e, "california_housing.csv:4");
  assert_message(e, "median_income");
  /* a wrong header */
  write_text("h_hdr/housing/california_housing.csv", "longitude,latitude,age\n1,2,3\n");
  o = opts_in("h_hdr", dir, sizeof dir);
  assert_status(kiln_dataset_load("california_housing", &o, &tr, &te, &e), KILN_E_FORMAT, e);
  assert_message(e, "california_housing.csv:1");
  assert_message(e, "housing_median_age");
  /* missing file */
  o = opts_in("h_none", dir, sizeof dir);
  assert_status(kiln_dataset_load("california_housing", &o, &tr, &te, &e), KILN_E_IO, e);
  assert_message(e, "housing/california_housing.csv");
}

/* ---- CSV ------------------------------------------------------------------ */

static void test_csv(void **state) {
  (void)state;
  kiln_dataset d;
  kiln_error e = {0};
  kiln_load_options o;
  kiln_load_options_init(&o);
  char path[1024];
  strcpy(path, write_text("c/ok.csv", "a, b ,label\r\n1,2,0\r\n\r\n3,4.5,1\r\n-5,6e2,2\r\n"));
  o.target = "label";
  o.num_classes = 3;
  assert_status(kiln_dataset_load(path, &o, &d, NULL, &e), KILN_OK, e);
  assert_int_equal(d.x.rows, 3);
  assert_int_equal(d.x.cols, 2);
  assert_int_equal(d.num_classes, 3);
  assert_float_equal(d.x.values[3], 4.5, 1e-6);
  assert_float_equal(d.x.values[5], 600.0, 1e-6);
  assert_float_equal(d.y.values[2], 2.0, 0);
  kiln_dataset_free(&d);
  /* a middle column as the target (regression) */
  o.target = "b";
  o.num_classes = 0;
  assert_status(kiln_csv_load(path, &o, &d, &e), KILN_OK, e);
  assert_float_equal(d.y.values[1], 4.5, 1e-6);
  assert_float_equal(d.x.values[1], 0.0, 0); /* label column is now a feature */
  assert_int_equal(d.num_classes, 0);
  kiln_dataset_free(&d);
  /* default: the last column */
  assert_status(kiln_csv_load(path, NULL, &d, &e), KILN_OK, e);
  assert_float_equal(d.y.values[1], 1.0, 0);
  kiln_dataset_free(&d);
  o.target = "zzz";
  assert_status(kiln_csv_load(path, &o, &d, &e), KILN_E_INVALID, e);
  assert_message(e, "'zzz'");
  o.target = NULL;

  /* labels out of range */
  o.num_classes = 2;
  assert_status(kiln_csv_load(path, &o, &d, &e), KILN_E_RANGE, e);
  assert_message(e, "ok.csv:5");
  assert_message(e, "label");
  o.num_classes = 0;

  strcpy(path, write_text("c/text.csv", "a,b,y\n1,2,3\n4,x5,6\n"));
  assert_status(kiln_csv_load(path, &o, &d, &e), KILN_E_FORMAT, e);
  assert_message(e, "text.csv:3");
  assert_message(e, "'b'");
  strcpy(path, write_text("c/width.csv", "a,b,y\n1,2,3\n4,5\n"));
  assert_status(kiln_csv_load(path, &o, &d, &e), KILN_E_FORMAT, e);
  assert_message(e, "width.csv:3");
  assert_message(e, "found 2 fields, expected 3");
  strcpy(path, write_text("c/wide.csv", "a,b,y\n1,2,3,4\n"));
  assert_status(kiln_csv_load(path, &o, &d, &e), KILN_E_FORMAT, e);
  assert_message(e, "wide.csv:2");
  strcpy(path, write_text("c/nan.csv", "a,b,y\n1,2,3\n4,NaN,6\n"));
  assert_status(kiln_csv_load(path, &o, &d, &e), KILN_E_RANGE, e);
  assert_message(e, "nan.csv:3");
  assert_message(e, "'b'");
  strcpy(path, write_text("c/inf.csv", "a,b,y\n-inf,2,3\n"));
  assert_status(kiln_csv_load(path, &o, &d, &e), KILN_E_RANGE, e);
  assert_message(e, "inf.csv:2");
  assert_message(e, "'a'");
  strcpy(path, write_text("c/huge.csv", "a,b,y\n1e39,2,3\n"));
  assert_status(kiln_csv_load(path, &o, &d, &e), KILN_E_RANGE, e);
  assert_message(e, "huge.csv:2");

  /* missing cells: error by default, training median on request, never for the target */
  strcpy(path, write_text("c/miss.csv", "a,b,y\n1,10,1\n2,,2\n3,30,3\n4,50,4\n5,70,5\n"));
  assert_status(kiln_csv_load(path, &o, &d, &e), KILN_E_FORMAT, e);
  assert_message(e, "miss.csv:3");
  assert_message(e, "'b'");
  o.missing = KILN_MISSING_IMPUTE_MEDIAN;
  assert_status(kiln_csv_load(path, &o, &d, &e), KILN_OK, e);
  assert_float_equal(d.x.values[1 * 2 + 1], 40.0, 0); /* numpy's median of 10 30 50 70 */
  kiln_dataset_free(&d);
  strcpy(path, write_text("c/missy.csv", "a,b,y\n1,10,1\n2,20,\n"));
  assert_status(kiln_csv_load(path, &o, &d, &e), KILN_E_FORMAT, e);
  assert_message(e, "missy.csv:3");
  assert_message(e, "target");
  o.missing = KILN_MISSING_ERROR;

  strcpy(path, write_text("c/empty.csv", ""));
  assert_status(kiln_csv_load(path, &o, &d, &e), KILN_E_FORMAT, e);
  assert_message(e, "empty.csv");
  strcpy(path, write_text("c/header.csv", "a,b\n"));
  assert_status(kiln_csv_load(path, &o, &d, &e), KILN_E_FORMAT, e);
  assert_message(e, "no data rows");
  tmp_path(path, sizeof path, "c/absent.csv");
  assert_status(kiln_dataset_load(path, &o, &d, NULL, &e), KILN_E_IO, e);
  assert_message(e, "absent.csv");
}

/* ---- .npy ----------------------------------------------------------------- */

/* A .npy file with the given header dict and raw data (version 1.0). */
static const char *write_npy(const char *rel, const char *dict, const void *data, size_t len) {
  unsigned char buf[4096];
  size_t dl = strlen(dict), total = 10 + dl + 1, padded = (total + 63) / 64 * 64;
  assert_true(padded + len <= sizeof buf);
  memcpy(buf, "\x93NUMPY\x01\x00", 8);
  buf[8] = (unsigned char)((padded - 10) & 0xff);
  buf[9] = (unsigned char)((padded - 10) >> 8);
  memcpy(buf + 10, dict, dl);
  memset(buf + 10 + dl, ' ', padded - total);
  buf[padded - 1] = '\n';
  if (len) memcpy(buf + padded, data, len);
  return write_file(rel, buf, padded + len);
}

static void test_npy(void **state) {
  (void)state;
  kiln_matrix m = {0}, r = {0};
  kiln_error e = {0};
  char path[1024], tmpf[1100];
  assert_status(kiln_matrix_alloc(&m, 3, 2, &e), KILN_OK, e);
  for (int i = 0; i < 6; i++) m.values[i] = (float)i * 1.5f - 2.0f;
  tmp_path(path, sizeof path, "n/m.npy");
  mkdir(tmp_path(tmpf, sizeof tmpf, "n"), 0700);
  assert_status(kiln_npy_write(path, &m, &e), KILN_OK, e);
  /* no temporary left beside it */
  DIR *dd = opendir(tmp_path(tmpf, sizeof tmpf, "n"));
  assert_non_null(dd);
  for (struct dirent *de; (de = readdir(dd)) != NULL;)
    if (strncmp(de->d_name, "m.npy.", 6) == 0) fail_msg("temporary %s left behind", de->d_name);
  closedir(dd);
  struct stat st;
  assert_int_equal(stat(path, &st), 0);
  assert_int_equal((st.st_size - 24) % 64, 0); /* header padded to 64 bytes */
  assert_status(kiln_npy_read(path, &r, &e), KILN_OK, e);
  assert_int_equal(r.rows, 3);
  assert_int_equal(r.cols, 2);
  assert_memory_equal(r.values, m.values, 6 * sizeof(float));
  kiln_matrix_free(&r);
  /* writing into a missing directory fails cleanly and leaves nothing */
  tmp_path(path, sizeof path, "n/absent/m.npy");
  assert_status(kiln_npy_write(path, &m, &e), KILN_E_IO, e);
  assert_message(e, "absent/m.npy");
  /* a sparse matrix is refused */
  kiln_sequences q = {0};
  int64_t off[2] = {0, 1};
  int32_t tok[1] = {3};
  q.count = 1;
  q.offsets = off;
  q.tokens = tok;
  kiln_matrix sp;
  assert_status(kiln_multi_hot(&q, 5, &sp, &e), KILN_OK, e);
  tmp_path(path, sizeof path, "n/sp.npy");
  assert_status(kiln_npy_write(path, &sp, &e), KILN_E_UNSUPPORTED, e);
  kiln_matrix_free(&sp);

  /* every supported dtype */
  const double f8[3] = {0.5, -1.25, 1e6};
  strcpy(path, write_npy("n/f8.npy", "{'descr': '<f8', 'fortran_order': False, 'shape': (3,), }",
                         f8, sizeof f8));
  assert_status(kiln_npy_read(path, &r, &e), KILN_OK, e);
  assert_int_equal(r.rows, 3);
  assert_int_equal(r.cols, 1);
  assert_float_equal(r.values[1], -1.25, 0);
  assert_float_equal(r.values[2], 1e6, 0);
  kiln_matrix_free(&r);
  const int32_t i4[4] = {-7, 0, 5, 2147483647};
  strcpy(path, write_npy("n/i4.npy", "{'descr': '<i4', 'fortran_order': False, 'shape': (2, 2), }",
                         i4, sizeof i4));
  assert_status(kiln_npy_read(path, &r, &e), KILN_OK, e);
  assert_int_equal(r.cols, 2);
  assert_float_equal(r.values[0], -7.0, 0);
  assert_float_equal(r.values[2], 5.0, 0);
  kiln_matrix_free(&r);
  const int64_t i8[2] = {-3, 40000000000LL};
  strcpy(path,
         write_npy("n/i8.npy", "{\"descr\": \"<i8\", \"fortran_order\": False, \"shape\": (2,)}",
                   i8, sizeof i8));
  assert_status(kiln_npy_read(path, &r, &e), KILN_OK, e);
  assert_float_equal(r.values[0], -3.0, 0);
  assert_float_equal(r.values[1], 4e10, 1e4);
  kiln_matrix_free(&r);
  const uint8_t u1[6] = {0, 1, 2, 3, 254, 255};
  strcpy(path, write_npy("n/u1.npy", "{'descr': '|u1', 'fortran_order': False, 'shape': (3, 2), }",
                         u1, sizeof u1));
  assert_status(kiln_npy_read(path, &r, &e), KILN_OK, e);
  assert_int_equal(r.rows, 3);
  assert_float_equal(r.values[5], 255.0, 0);
  kiln_matrix_free(&r);
  const float f4[2] = {1.0f, 2.0f};
  strcpy(path, write_npy("n/f4.npy", "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 2), }",
                         f4, sizeof f4));
  assert_status(kiln_npy_read(path, &r, &e), KILN_OK, e);
  assert_float_equal(r.values[1], 2.0, 0);
  kiln_matrix_free(&r);

  /* bad files */
  strcpy(path,
         write_npy("n/trunc.npy", "{'descr': '<f4', 'fortran_order': False, 'shape': (4, 2), }", f4,
                   sizeof f4));
  assert_status(kiln_npy_read(path, &r, &e), KILN_E_FORMAT, e);
  assert_message(e, "trunc.npy");
  assert_message(e, "truncated");
  assert_null(r.values);
  /* a corrupt shape is reported as truncation, not attempted as a huge allocation */
  strcpy(path, write_npy("n/huge.npy",
                         "{'descr': '<f8', 'fortran_order': False, 'shape': (4000000000, 1000), }",
                         f4, sizeof f4));
  assert_status(kiln_npy_read(path, &r, &e), KILN_E_FORMAT, e);
  assert_message(e, "huge.npy: truncated");
  strcpy(path, write_npy("n/long.npy", "{'descr': '<f4', 'fortran_order': False, 'shape': (1,), }",
                         f4, sizeof f4));
  assert_status(kiln_npy_read(path, &r, &e), KILN_E_FORMAT, e);
  assert_message(e, "trailing");
  strcpy(path, write_text("n/magic.npy", "PK\x03\x04 not numpy at all"));
  assert_status(kiln_npy_read(path, &r, &e), KILN_E_FORMAT, e);
  assert_message(e, "magic.npy");
  strcpy(path,
         write_npy("n/fortran.npy", "{'descr': '<f4', 'fortran_order': True, 'shape': (1, 2), }",
                   f4, sizeof f4));
  assert_status(kiln_npy_read(path, &r, &e), KILN_E_UNSUPPORTED, e);
  assert_message(e, "Fortran");
  strcpy(path, write_npy("n/big.npy", "{'descr': '>f4', 'fortran_order': False, 'shape': (1, 2), }",
                         f4, sizeof f4));
  assert_status(kiln_npy_read(path, &r, &e), KILN_E_UNSUPPORTED, e);
  assert_message(e, "big-endian");
  strcpy(path, write_npy("n/c8.npy", "{'descr': '<c8', 'fortran_order': False, 'shape': (1,), }",
                         f4, sizeof f4));
  assert_status(kiln_npy_read(path, &r, &e), KILN_E_UNSUPPORTED, e);
  assert_message(e, "<c8");
  strcpy(path,
         write_npy("n/3d.npy", "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 1, 2), }", f4,
                   sizeof f4));
  assert_status(kiln_npy_read(path, &r, &e), KILN_E_UNSUPPORTED, e);
  assert_message(e, "3 dimensions");
  strcpy(path,
         write_npy("n/noshape.npy", "{'descr': '<f4', 'fortran_order': False}", f4, sizeof f4));
  assert_status(kiln_npy_read(path, &r, &e), KILN_E_FORMAT, e);
  assert_message(e, "shape");
  tmp_path(path, sizeof path, "n/absent.npy");
  assert_status(kiln_npy_read(path, &r, &e), KILN_E_IO, e);
  assert_message(e, "absent.npy");

  /* as a data set: x_*.npy with its y_*.npy */
  const float xs[6] = {1, 2, 3, 4, 5, 6};
  const int64_t ys[3] = {0, 2, 1};
  write_npy("n/set/x_train.npy", "{'descr': '<f4', 'fortran_order': False, 'shape': (3, 2), }", xs,
            sizeof xs);
  write_npy("n/set/y_train.npy", "{'descr': '<i8', 'fortran_order': False, 'shape': (3,), }", ys,
            sizeof ys);
  tmp_path(path, sizeof path, "n/set/x_train.npy");
  kiln_load_options o;
  kiln_load_options_init(&o);
  o.num_classes = 3;
  kiln_dataset d, t;
  assert_status(kiln_dataset_load(path, &o, &d, &t, &e), KILN_OK, e);
  assert_int_equal(d.x.rows, 3);
  assert_int_equal(d.y.cols, 1);
  assert_float_equal(d.y.values[1], 2.0, 0);
  assert_int_equal(d.num_classes, 3);
  assert_int_equal(t.y.rows, 0);
  kiln_dataset_free(&d);
  o.num_classes = 2;
  assert_status(kiln_dataset_load(path, &o, &d, NULL, &e), KILN_E_RANGE, e);
  assert_message(e, "y_train.npy: row 1");
  write_npy("n/set/y_train.npy", "{'descr': '<i8', 'fortran_order': False, 'shape': (2,), }", ys,
            16);
  assert_status(kiln_dataset_load(path, &o, &d, NULL, &e), KILN_E_SHAPE, e);
  assert_message(e, "y_train.npy");
  tmp_path(path, sizeof path, "n/set/x_nolabels.npy");
  write_npy("n/set/x_nolabels.npy", "{'descr': '<f4', 'fortran_order': False, 'shape': (3, 2), }",
            xs, sizeof xs);
  assert_status(kiln_dataset_load(path, &o, &d, NULL, &e), KILN_E_IO, e);
  assert_message(e, "y_nolabels.npy");
  const float xn[2] = {1, NAN};
  write_npy("n/set/x_nan.npy", "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 2), }", xn,
            sizeof xn);
  write_npy("n/set/y_nan.npy", "{'descr': '<i8', 'fortran_order': False, 'shape': (1,), }", ys, 8);
  tmp_path(path, sizeof path, "n/set/x_nan.npy");
  assert_status(kiln_dataset_load(path, &o, &d, NULL, &e), KILN_E_RANGE, e);
  assert_message(e, "row 0, column 1");
  kiln_matrix_free(&m);
}

/* ---- Fashion-MNIST IDX ------------------------------------------------------ */

static void write_idx(const char *rel, uint32_t magic, uint32_t count, uint32_t side,
                      const uint8_t *payload, size_t len) {
  uint8_t *buf = malloc(16 + len);
  assert_non_null(buf);
  uint32_t words[4] = {magic, count, side, side};
  int nw = (magic & 0xff) == 3 ? 4 : 2;
  for (int i = 0; i < nw; i++)
    for (int b = 0; b < 4; b++) buf[4 * i + b] = (uint8_t)(words[i] >> (24 - 8 * b));
  memcpy(buf + 4 * nw, payload, len);
  write_gz(rel, buf, 4 * (size_t)nw + len);
  free(buf);
}

static void write_fashion(const char *sub, int ntrain, int ntest, uint32_t img_magic, uint32_t side,
                          int labels_for_train, uint8_t bad_label) {
  char rel[256];
  uint8_t *px = malloc((size_t)ntrain * side * side + 1);
  uint8_t lab[64];
  assert_non_null(px);
  for (size_t i = 0; i < (size_t)ntrain * side * side; i++) px[i] = (uint8_t)(i % 256);
  for (int i = 0; i < 64; i++) lab[i] = (uint8_t)(i % 10);
  if (bad_label) lab[1] = bad_label;
  snprintf(rel, sizeof rel, "%s/fashion-mnist/train-images-idx3-ubyte.gz", sub);
  write_idx(rel, img_magic, (uint32_t)ntrain, side, px, (size_t)ntrain * side * side);
  snprintf(rel, sizeof rel, "%s/fashion-mnist/train-labels-idx1-ubyte.gz", sub);
  write_idx(rel, 0x801, (uint32_t)labels_for_train, 0, lab, (size_t)labels_for_train);
  snprintf(rel, sizeof rel, "%s/fashion-mnist/t10k-images-idx3-ubyte.gz", sub);
  write_idx(rel, 0x803, (uint32_t)ntest, 28, px, (size_t)ntest * 784);
  snprintf(rel, sizeof rel, "%s/fashion-mnist/t10k-labels-idx1-ubyte.gz", sub);
  write_idx(rel, 0x801, (uint32_t)ntest, 0, lab, (size_t)ntest);
  free(px);
}

static void test_fashion_files(void **state) {
  (void)state;
  char dir[1024];
  kiln_dataset tr, te;
  kiln_error e = {0};
  write_fashion("f_ok", 3, 2, 0x803, 28, 3, 0);
  kiln_load_options o = opts_in("f_ok", dir, sizeof dir);
  assert_status(kiln_dataset_load("fashion_mnist", &o, &tr, &te, &e), KILN_OK, e);
  assert_int_equal(tr.x.rows, 3);
  assert_int_equal(tr.x.cols, 784);
  assert_int_equal(te.x.rows, 2);
  assert_int_equal(tr.num_classes, 10);
  assert_float_equal(tr.x.values[255], 1.0, 0);
  assert_float_equal(tr.x.values[256 + 51], 51.0 / 255.0, 1e-7);
  assert_float_equal(tr.y.values[2], 2.0, 0);
  kiln_dataset_free(&tr);
  kiln_dataset_free(&te);

  write_fashion("f_magic", 3, 2, 0x801, 28, 3, 0);
  o = opts_in("f_magic", dir, sizeof dir);
  assert_status(kiln_dataset_load("fashion_mnist", &o, &tr, &te, &e), KILN_E_FORMAT, e);
  assert_message(e, "train-images-idx3-ubyte.gz");
  assert_message(e, "magic");
  write_fashion("f_side", 3, 2, 0x803, 27, 3, 0);
  o = opts_in("f_side", dir, sizeof dir);
  assert_status(kiln_dataset_load("fashion_mnist", &o, &tr, &te, &e), KILN_E_FORMAT, e);
  assert_message(e, "27x27");
  write_fashion("f_count", 3, 2, 0x803, 28, 4, 0);
  o = opts_in("f_count", dir, sizeof dir);
  assert_status(kiln_dataset_load("fashion_mnist", &o, &tr, &te, &e), KILN_E_SHAPE, e);
  assert_message(e, "3 images");
  assert_message(e, "4 labels");
  write_fashion("f_label", 3, 2, 0x803, 28, 3, 10);
  o = opts_in("f_label", dir, sizeof dir);
  assert_status(kiln_dataset_load("fashion_mnist", &o, &tr, &te, &e), KILN_E_RANGE, e);
  assert_message(e, "train-labels-idx1-ubyte.gz: item 1: label 10");
  /* header says 3 images, data holds 2 */
  write_fashion("f_short", 3, 2, 0x803, 28, 3, 0);
  uint8_t px[2 * 784] = {0};
  write_idx("f_short/fashion-mnist/train-images-idx3-ubyte.gz", 0x803, 3, 28, px, sizeof px);
  o = opts_in("f_short", dir, sizeof dir);
  assert_status(kiln_dataset_load("fashion_mnist", &o, &tr, &te, &e), KILN_E_FORMAT, e);
  assert_message(e, "train-images-idx3-ubyte.gz: truncated");
  /* a cut gzip stream */
  write_fashion("f_cut", 40, 2, 0x803, 28, 40, 0);
  truncate_to("f_cut/fashion-mnist/train-images-idx3-ubyte.gz", 0.6);
  o = opts_in("f_cut", dir, sizeof dir);
  assert_status(kiln_dataset_load("fashion_mnist", &o, &tr, &te, &e), KILN_E_FORMAT, e);
  assert_message(e, "train-images-idx3-ubyte.gz");
  assert_null(tr.x.values);
  /* a missing file in a present folder */
  char p[1024];
  unlink(tmp_path(p, sizeof p, "f_ok/fashion-mnist/t10k-labels-idx1-ubyte.gz"));
  o = opts_in("f_ok", dir, sizeof dir);
  assert_status(kiln_dataset_load("fashion_mnist", &o, &tr, &te, &e), KILN_E_IO, e);
  assert_message(e, "t10k-labels-idx1-ubyte.gz");
  assert_null(tr.x.values);
}

/* ---- preprocessing ---------------------------------------------------------- */

static void test_multi_one_hot(void **state) {
  (void)state;
  kiln_error e = {0};
  int64_t off[4] = {0, 5, 5, 9};
  int32_t tok[9] = {7, 1, 7, 3, 200, /* row 1 empty */ 64, 63, 0, 65};
  kiln_sequences q = {3, off, tok};
  kiln_matrix m;
  assert_status(kiln_multi_hot(&q, 100, &m, &e), KILN_OK, e);
  assert_int_equal(m.rows, 3);
  assert_int_equal(m.cols, 100);
  assert_null(m.values);
  const int64_t rp[4] = {0, 3, 3, 7};
  const int32_t ci[7] = {1, 3, 7, 0, 63, 64, 65};
  for (int i = 0; i < 4; i++) assert_int_equal(m.row_ptr[i], rp[i]);
  for (int i = 0; i < 7; i++) assert_int_equal(m.col_idx[i], ci[i]);
  assert_float_equal(kiln_matrix_get(&m, 0, 7), 1.0, 0);
  assert_float_equal(kiln_matrix_get(&m, 0, 2), 0.0, 0);
  kiln_matrix_scale(&m, 2.0f); /* nothing to scale: implicit ones */
  kiln_matrix_free(&m);
  assert_status(kiln_multi_hot(&q, 0, &m, &e), KILN_E_INVALID, e);
  tok[2] = -4;
  assert_status(kiln_multi_hot(&q, 100, &m, &e), KILN_E_RANGE, e);
  assert_message(e, "sequence 0");

  kiln_matrix lab, oh;
  assert_status(kiln_matrix_alloc(&lab, 3, 1, &e), KILN_OK, e);
  lab.values[0] = 2;
  lab.values[1] = 0;
  lab.values[2] = 1;
  assert_status(kiln_one_hot(&lab, 3, &oh, &e), KILN_OK, e);
  const float want[9] = {0, 0, 1, 1, 0, 0, 0, 1, 0};
  assert_memory_equal(oh.values, want, sizeof want);
  kiln_matrix_free(&oh);
  lab.values[2] = 3;
  assert_status(kiln_one_hot(&lab, 3, &oh, &e), KILN_E_RANGE, e);
  assert_message(e, "row 2");
  lab.values[2] = 0.5f;
  assert_status(kiln_one_hot(&lab, 3, &oh, &e), KILN_E_RANGE, e);
  assert_message(e, "row 2");
  lab.values[2] = -1;
  assert_status(kiln_one_hot(&lab, 3, &oh, &e), KILN_E_RANGE, e);
  kiln_matrix_free(&lab);
}

static void test_standardizer_scale(void **state) {
  (void)state;
  kiln_error e = {0};
  kiln_matrix tr, te;
  assert_status(kiln_matrix_alloc(&tr, 4, 3, &e), KILN_OK, e);
  const float v[12] = {1, 5, 10, 2, 5, 20, 3, 5, 30, 4, 5, 40};
  memcpy(tr.values, v, sizeof v);
  kiln_standardizer s;
  assert_status(kiln_standardizer_fit(&s, &tr, &e), KILN_OK, e);
  assert_float_equal(s.mean[0], 2.5, 1e-6);
  assert_float_equal(s.std[0], sqrt(1.25), 1e-6); /* population std, as numpy */
  assert_float_equal(s.std[1], 1.0, 0);           /* constant column: divided by 1 */
  assert_float_equal(s.std[2], sqrt(125.0), 1e-5);
  assert_status(kiln_standardizer_apply(&s, &tr, &e), KILN_OK, e);
  assert_float_equal(tr.values[1], 0.0, 0);
  assert_float_equal(tr.values[0], -1.5 / sqrt(1.25), 1e-6);
  /* statistics from the training split applied to another split */
  assert_status(kiln_matrix_alloc(&te, 1, 3, &e), KILN_OK, e);
  te.values[0] = 2.5f;
  te.values[1] = 6;
  te.values[2] = 25;
  assert_status(kiln_standardizer_apply(&s, &te, &e), KILN_OK, e);
  assert_float_equal(te.values[0], 0.0, 1e-6);
  assert_float_equal(te.values[1], 1.0, 1e-6);
  assert_float_equal(te.values[2], 0.0, 1e-6);
  kiln_matrix wrong;
  assert_status(kiln_matrix_alloc(&wrong, 2, 2, &e), KILN_OK, e);
  assert_status(kiln_standardizer_apply(&s, &wrong, &e), KILN_E_SHAPE, e);
  kiln_matrix_free(&wrong);
  kiln_standardizer_free(&s);
  assert_null(s.mean);
  tr.values[4] = NAN;
  assert_status(kiln_standardizer_fit(&s, &tr, &e), KILN_E_RANGE, e);
  assert_message(e, "row 1, column 1");

  te.values[0] = 150000;
  kiln_matrix_scale(&te, 1.0f / 100000);
  assert_float_equal(te.values[0], 1.5, 1e-6);
  kiln_matrix_free(&tr);
  kiln_matrix_free(&te);
}

static void test_kfold(void **state) {
  (void)state;
  kiln_error e = {0};
  int64_t *tr, *va, ntr, nva;
  /* listing 4.28: n // k rows per fold, contiguous; the last n % k rows always train */
  assert_status(kiln_kfold_split(10, 4, 1, 0, 0, &tr, &ntr, &va, &nva, &e), KILN_OK, e);
  assert_int_equal(nva, 2);
  assert_int_equal(ntr, 8);
  assert_int_equal(va[0], 2);
  assert_int_equal(va[1], 3);
  const int64_t want[8] = {0, 1, 4, 5, 6, 7, 8, 9};
  assert_memory_equal(tr, want, sizeof want);
  free(tr);
  free(va);
  assert_status(kiln_kfold_split(10, 4, 3, 0, 0, &tr, &ntr, &va, &nva, &e), KILN_OK, e);
  assert_int_equal(va[0], 6);
  assert_int_equal(tr[ntr - 1], 9);
  free(tr);
  free(va);
  /* shuffled: the k validation parts are disjoint and never hold the same row twice */
  int count[103] = {0};
  for (int f = 0; f < 4; f++) {
    assert_status(kiln_kfold_split(103, 4, f, 1, 7, &tr, &ntr, &va, &nva, &e), KILN_OK, e);
    assert_int_equal(nva, 25);
    assert_int_equal(ntr, 78);
    int in[103] = {0};
    for (int64_t i = 0; i < nva; i++) count[va[i]]++, in[va[i]]++;
    for (int64_t i = 0; i < ntr; i++) in[tr[i]]++;
    for (int i = 0; i < 103; i++) assert_int_equal(in[i], 1);
    free(tr);
    free(va);
  }
  int total = 0;
  for (int i = 0; i < 103; i++) {
    assert_true(count[i] <= 1);
    total += count[i];
  }
  assert_int_equal(total, 100);
  /* same seed, same folds; another seed, other folds */
  int64_t *va2, *tr2;
  assert_status(kiln_kfold_split(103, 4, 0, 1, 7, &tr, &ntr, &va, &nva, &e), KILN_OK, e);
  assert_status(kiln_kfold_split(103, 4, 0, 1, 7, &tr2, &ntr, &va2, &nva, &e), KILN_OK, e);
  assert_memory_equal(va, va2, (size_t)nva * sizeof(int64_t));
  free(tr2);
  free(va2);
  assert_status(kiln_kfold_split(103, 4, 0, 1, 8, &tr2, &ntr, &va2, &nva, &e), KILN_OK, e);
  assert_true(memcmp(va, va2, (size_t)nva * sizeof(int64_t)) != 0);
  free(tr2);
  free(va2);
  free(tr);
  free(va);
  assert_status(kiln_kfold_split(10, 1, 0, 0, 0, &tr, &ntr, &va, &nva, &e), KILN_E_INVALID, e);
  assert_status(kiln_kfold_split(10, 4, 4, 0, 0, &tr, &ntr, &va, &nva, &e), KILN_E_INVALID, e);
  assert_message(e, "fold 4");
  assert_null(tr);
  assert_status(kiln_kfold_split(3, 4, 0, 0, 0, &tr, &ntr, &va, &nva, &e), KILN_E_INVALID, e);
}

static void test_take(void **state) {
  (void)state;
  kiln_error e = {0};
  const char train[] = "1\t1 4 5\n0\t1 6\n1\t1 7 8 9\n";
  write_gz("tk/imdb/train.txt.gz", train, strlen(train));
  char dir[1024];
  kiln_load_options o = opts_in("tk", dir, sizeof dir);
  kiln_dataset d, t;
  assert_status(kiln_dataset_load("imdb", &o, &d, NULL, &e), KILN_OK, e);
  const int64_t idx[3] = {2, 0, 2};
  assert_status(kiln_dataset_take(&d, idx, 3, &t, &e), KILN_OK, e);
  assert_int_equal(t.seq.count, 3);
  assert_int_equal(t.x.rows, 3);
  assert_int_equal(t.y.rows, 3);
  assert_int_equal(t.num_classes, 2);
  assert_int_equal(t.seq.offsets[1], 4);
  assert_int_equal(t.seq.tokens[4], 1);
  assert_int_equal(t.seq.tokens[5], 4);
  assert_float_equal(t.y.values[1], 1.0, 0);
  assert_float_equal(kiln_matrix_get(&t.x, 2, 9), 1.0, 0);
  kiln_dataset_free(&t);
  const int64_t bad[1] = {3};
  assert_status(kiln_dataset_take(&d, bad, 1, &t, &e), KILN_E_RANGE, e);
  assert_message(e, "index 3");
  kiln_dataset_free(&d);
}

/* ---- the real data sets ------------------------------------------------------ */

static const char *real_dir(void) {
  const char *d = getenv("KILN_DATA_DIR");
  if (!d || !*d) d = "../shared/data";
  struct stat st;
  return stat(d, &st) == 0 && S_ISDIR(st.st_mode) ? d : NULL;
}

static int real_has(const char *rel) {
  const char *d = real_dir();
  char p[2048];
  if (!d) return 0;
  snprintf(p, sizeof p, "%s/%s", d, rel);
  return file_exists(p);
}

#define REQUIRE_REAL(rel)                                                              \
  do {                                                                                 \
    if (!real_has(rel)) {                                                              \
      printf("skipped: %s not found in the data directory ($KILN_DATA_DIR=%s)\n", rel, \
             getenv("KILN_DATA_DIR") ? getenv("KILN_DATA_DIR") : "(unset)");           \
      skip();                                                                          \
    }                                                                                  \
  } while (0)

static void test_real_imdb(void **state) {
  (void)state;
  REQUIRE_REAL("imdb/train.txt.gz");
  kiln_load_options o;
  kiln_load_options_init(&o);
  o.data_dir = real_dir();
  kiln_dataset tr, te;
  kiln_error e = {0};
  double t0 = now_s();
  assert_status(kiln_dataset_load("imdb", &o, &tr, &te, &e), KILN_OK, e);
  printf("imdb (num_words 10000, multi-hot): train + test loaded in %.3f s\n", now_s() - t0);
  assert_int_equal(tr.seq.count, 25000);
  assert_int_equal(te.seq.count, 25000);
  assert_int_equal(tr.x.rows, 25000);
  assert_int_equal(tr.x.cols, 10000);
  int pos = 0;
  for (int64_t i = 0; i < tr.seq.count; i++) {
    assert_int_equal(tr.seq.tokens[tr.seq.offsets[i]], 1);
    pos += tr.y.values[i] == 1.0f;
  }
  assert_int_equal(pos, 12500);
  for (int64_t k = 0; k < tr.seq.offsets[tr.seq.count]; k++) assert_true(tr.seq.tokens[k] < 10000);
  kiln_dataset_free(&tr);
  kiln_dataset_free(&te);

  /* full vocabulary: the counts of the README */
  o.num_words = 0;
  o.multi_hot = 0;
  t0 = now_s();
  assert_status(kiln_dataset_load("imdb", &o, &tr, &te, &e), KILN_OK, e);
  printf("imdb (all words, sequences only): train + test loaded in %.3f s\n", now_s() - t0);
  int64_t oov_train = 0, oov_test = 0, longest = 0;
  for (int64_t k = 0; k < tr.seq.offsets[tr.seq.count]; k++) oov_train += tr.seq.tokens[k] == 2;
  for (int64_t k = 0; k < te.seq.offsets[te.seq.count]; k++) oov_test += te.seq.tokens[k] == 2;
  for (int64_t i = 0; i < tr.seq.count; i++)
    if (tr.seq.offsets[i + 1] - tr.seq.offsets[i] > longest)
      longest = tr.seq.offsets[i + 1] - tr.seq.offsets[i];
  assert_int_equal(oov_train, 0);
  assert_int_equal(oov_test, 56277);
  assert_int_equal(longest, 2463);
  assert_int_equal(tr.seq.offsets[tr.seq.count], 5808238 + 25000);
  kiln_dataset_free(&tr);
  kiln_dataset_free(&te);
}

static void test_real_reuters(void **state) {
  (void)state;
  REQUIRE_REAL("reuters/train.txt.gz");
  kiln_load_options o;
  kiln_load_options_init(&o);
  o.data_dir = real_dir();
  kiln_dataset tr, te;
  kiln_error e = {0};
  double t0 = now_s();
  assert_status(kiln_dataset_load("reuters", &o, &tr, &te, &e), KILN_OK, e);
  printf("reuters (num_words 10000, multi-hot): train + test loaded in %.3f s\n", now_s() - t0);
  assert_int_equal(tr.seq.count, 8982);
  assert_int_equal(te.seq.count, 2246);
  assert_int_equal(tr.num_classes, 46);
  assert_int_equal(te.x.cols, 10000);
  int earn_tr = 0, earn_te = 0;
  for (int64_t i = 0; i < tr.y.rows; i++) earn_tr += tr.y.values[i] == 3.0f;
  for (int64_t i = 0; i < te.y.rows; i++) earn_te += te.y.values[i] == 3.0f;
  assert_int_equal(earn_tr, 3159);
  assert_int_equal(earn_te, 813);
  assert_float_equal(tr.y.values[0], 3.0, 0); /* the McGrath RentCorp earnings story */
  kiln_matrix oh;
  assert_status(kiln_one_hot(&tr.y, 46, &oh, &e), KILN_OK, e);
  assert_int_equal(oh.cols, 46);
  kiln_matrix_free(&oh);
  kiln_dataset_free(&tr);
  kiln_dataset_free(&te);
}

static void test_real_housing(void **state) {
  (void)state;
  REQUIRE_REAL("housing/california_housing.csv");
  kiln_load_options o;
  kiln_load_options_init(&o);
  o.data_dir = real_dir();
  kiln_dataset tr, te;
  kiln_error e = {0};
  /* the real file has empty total_bedrooms cells: the first one is file line 292 */
  assert_status(kiln_dataset_load("california_housing", &o, &tr, &te, &e), KILN_E_FORMAT, e);
  assert_message(e, "california_housing.csv:292");
  assert_message(e, "total_bedrooms");
  o.missing = KILN_MISSING_IMPUTE_MEDIAN;
  double t0 = now_s();
  assert_status(kiln_dataset_load("california_housing", &o, &tr, &te, &e), KILN_OK, e);
  printf("california_housing small: loaded in %.4f s\n", now_s() - t0);
  assert_int_equal(tr.x.rows, 480);
  assert_int_equal(te.x.rows, 120);
  assert_int_equal(tr.x.cols, 8);
  int64_t r, c;
  assert_false(kiln_matrix_find_nonfinite(&tr.x, &r, &c));
  assert_false(kiln_matrix_find_nonfinite(&te.x, &r, &c));
  for (int64_t i = 0; i < tr.y.rows; i++)
    assert_true(tr.y.values[i] >= 14999.0f && tr.y.values[i] <= 500001.0f);
  kiln_standardizer s;
  assert_status(kiln_standardizer_fit(&s, &tr.x, &e), KILN_OK, e);
  assert_status(kiln_standardizer_apply(&s, &te.x, &e), KILN_OK, e);
  kiln_standardizer_free(&s);
  kiln_dataset_free(&tr);
  kiln_dataset_free(&te);
  o.version = "large";
  t0 = now_s();
  assert_status(kiln_dataset_load("california_housing", &o, &tr, &te, &e), KILN_OK, e);
  printf("california_housing large: loaded in %.4f s\n", now_s() - t0);
  assert_int_equal(tr.x.rows, 16512);
  assert_int_equal(te.x.rows, 4128);
  double sum = 0;
  for (int64_t i = 0; i < tr.y.rows; i++) sum += tr.y.values[i];
  for (int64_t i = 0; i < te.y.rows; i++) sum += te.y.values[i];
  assert_float_equal(sum / 20640.0, 206855.8, 0.1); /* the README's mean target */
  kiln_dataset_free(&tr);
  kiln_dataset_free(&te);
}

static void test_real_fashion(void **state) {
  (void)state;
  struct stat st;
  if (stat("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz", &st) != 0) {
    printf(
        "skipped: /usr/share/datasets/fashion-mnist not found (apt-get install "
        "dataset-fashion-mnist)\n");
    skip();
  }
  kiln_load_options o;
  kiln_load_options_init(&o);
  o.data_dir = tmp_root; /* no fashion-mnist folder there: the Debian package is used */
  kiln_dataset tr, te;
  kiln_error e = {0};
  double t0 = now_s();
  assert_status(kiln_dataset_load("fashion_mnist", &o, &tr, &te, &e), KILN_OK, e);
  printf("fashion_mnist: train + test loaded in %.3f s\n", now_s() - t0);
  assert_int_equal(tr.x.rows, 60000);
  assert_int_equal(tr.x.cols, 784);
  assert_int_equal(te.x.rows, 10000);
  assert_int_equal(tr.num_classes, 10);
  int per[10] = {0};
  for (int64_t i = 0; i < tr.y.rows; i++) per[(int)tr.y.values[i]]++;
  for (int k = 0; k < 10; k++) assert_int_equal(per[k], 6000);
  float lo = 1, hi = 0;
  for (int64_t i = 0; i < te.x.rows * 784; i++) {
    if (te.x.values[i] < lo) lo = te.x.values[i];
    if (te.x.values[i] > hi) hi = te.x.values[i];
  }
  assert_float_equal(lo, 0.0, 0);
  assert_float_equal(hi, 1.0, 0);
  kiln_dataset_free(&tr);
  kiln_dataset_free(&te);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_options),
      cmocka_unit_test(test_text_load),
      cmocka_unit_test(test_text_errors),
      cmocka_unit_test(test_housing),
      cmocka_unit_test(test_csv),
      cmocka_unit_test(test_npy),
      cmocka_unit_test(test_fashion_files),
      cmocka_unit_test(test_multi_one_hot),
      cmocka_unit_test(test_standardizer_scale),
      cmocka_unit_test(test_kfold),
      cmocka_unit_test(test_take),
      cmocka_unit_test(test_real_imdb),
      cmocka_unit_test(test_real_reuters),
      cmocka_unit_test(test_real_housing),
      cmocka_unit_test(test_real_fashion),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}

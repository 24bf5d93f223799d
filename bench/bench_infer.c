/* kiln's side of the inference benchmark (bench/run_infer_bench.sh runs it beside
 * bench_infer_ort.js on the same .onnx files). Links kiln_infer only.
 *
 *   bench_infer speed MODEL.onnx NAME [--tokens FILE] [--threads "1 2"]
 *                     [--batches "1 32 1024"] [--min-time S] [--reps N]
 *                     [--paths both|dense|tokens]
 *       per (threads, batch): a session (max_batch 1024), warm-up, then N repetitions
 *       of as many runs as fill min-time / N seconds; one JSON line per cell with the
 *       median rows/s. With --tokens (IMDB, Reuters) the dense input is the multi-hot
 *       rows of those token ids, and a second cell per (threads, batch) times
 *       kiln_session_run_tokens on the ids themselves.
 *       --dump FILE: first writes the float outputs of one run on the first 1024 input
 *       rows (dense) to FILE (raw float32, row-major), for output agreement checks.
 *   bench_infer mem MODEL.onnx NAME [--batch B] [--runs N] [--threads T]
 *       loads the model, runs N batches, prints peak RSS (getrusage ru_maxrss).
 *
 * Token file (make_book_onnx): int64 rows, int64 offsets[rows + 1], int32 tokens. */
#define _POSIX_C_SOURCE 200809L
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "kiln/infer.h"

#define MAX_ROWS 1024

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void die(const char *what, const kiln_error *err) {
  fprintf(stderr, "bench_infer: %s: %s\n", what, err ? err->message : "");
  exit(1);
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

typedef struct tokens {
  int64_t rows;
  int64_t *offsets;
  int32_t *ids;
} tokens;

static void read_tokens(const char *path, tokens *t) {
  FILE *f = fopen(path, "rb");
  if (!f || fread(&t->rows, sizeof t->rows, 1, f) != 1 || t->rows < MAX_ROWS) die(path, NULL);
  t->offsets = malloc((size_t)(t->rows + 1) * sizeof *t->offsets);
  if (fread(t->offsets, sizeof *t->offsets, (size_t)t->rows + 1, f) != (size_t)t->rows + 1)
    die(path, NULL);
  size_t n = (size_t)t->offsets[t->rows];
  t->ids = malloc(n * sizeof *t->ids);
  if (fread(t->ids, sizeof *t->ids, n, f) != n) die(path, NULL);
  fclose(f);
}

/* Dense input rows: multi-hot of the token ids when given, else seeded values in
 * [-1, 1) (housing: standardized features) or [0, 1) (Fashion-MNIST pixels). */
static float *make_dense(int64_t width, const tokens *t, int nonneg) {
  float *x = calloc((size_t)(MAX_ROWS * width), sizeof *x);
  if (t) {
    for (int64_t r = 0; r < MAX_ROWS; r++)
      for (int64_t i = t->offsets[r]; i < t->offsets[r + 1]; i++)
        if (t->ids[i] >= 0 && t->ids[i] < width) x[r * width + t->ids[i]] = 1.0f;
  } else {
    uint32_t s = 12345u;
    for (int64_t i = 0; i < MAX_ROWS * width; i++) {
      s = s * 1664525u + 1013904223u;
      float u = (float)(s >> 8) * (1.0f / 16777216.0f);
      x[i] = nonneg ? u : 2.0f * u - 1.0f;
    }
  }
  return x;
}

typedef struct cell {
  kiln_session *s;
  int use_tokens;
  const tokens *t;
  kiln_tensor_view in;
  kiln_tensor_view out;
} cell;

static void run_once(cell *c) {
  kiln_error err;
  kiln_status st = c->use_tokens
                       ? kiln_session_run_tokens(c->s, c->t->offsets, c->t->ids, c->in.dims[0],
                                                 &c->out, 1, &err)
                       : kiln_session_run(c->s, &c->in, 1, &c->out, 1, &err);
  if (st != KILN_OK) die("run", &err);
}

static double checksum(const kiln_tensor_view *o) {
  int64_t n = 1;
  for (int i = 0; i < o->rank; i++) n *= o->dims[i];
  double s = 0;
  for (int64_t i = 0; i < n; i++) s += ((const float *)o->data)[i];
  return s;
}

static void dump_outputs(const char *model, const float *x, int64_t width, const char *file) {
  kiln_error err;
  kiln_session_options opt;
  kiln_session_options_init(&opt);
  opt.max_batch = MAX_ROWS;
  kiln_session *s;
  if (kiln_session_create_from_file(model, &opt, &s, &err) != KILN_OK) die(model, &err);
  kiln_tensor_view in = {.dtype = KILN_DTYPE_FLOAT, .rank = 2, .dims = {MAX_ROWS, width},
                         .data = (void *)x};
  kiln_tensor_view out;
  if (kiln_session_run(s, &in, 1, &out, 1, &err) != KILN_OK) die("run", &err);
  int64_t n = 1;
  for (int i = 0; i < out.rank; i++) n *= out.dims[i];
  FILE *f = fopen(file, "wb");
  if (!f || fwrite(out.data, sizeof(float), (size_t)n, f) != (size_t)n || fclose(f) != 0)
    die(file, NULL);
  kiln_session_free(s);
}

static void speed(const char *model, const char *name, const char *tok_path, const char *threads_list,
                  const char *batches_list, double min_time, int reps, const char *paths,
                  const char *dump) {
  kiln_error err;
  kiln_ir_graph *g;
  if (kiln_onnx_read_file(model, &g, &err) != KILN_OK) die(model, &err);
  int64_t width = g->inputs[0].dims[1].value;
  kiln_ir_free(g);
  tokens t = {0}, *tp = NULL;
  if (tok_path) {
    read_tokens(tok_path, &t);
    tp = &t;
  }
  float *x = make_dense(width, tp, strstr(name, "fashion") != NULL);
  if (dump) dump_outputs(model, x, width, dump);
  char tl[256], bl[256];
  snprintf(tl, sizeof tl, "%s", threads_list);
  char *save_t = NULL;
  for (char *ts = strtok_r(tl, " ,", &save_t); ts; ts = strtok_r(NULL, " ,", &save_t)) {
    int threads = atoi(ts);
    kiln_session_options opt;
    kiln_session_options_init(&opt);
    opt.max_batch = MAX_ROWS;
    opt.threads = threads;
    kiln_session *s;
    if (kiln_session_create_from_file(model, &opt, &s, &err) != KILN_OK) die(model, &err);
    snprintf(bl, sizeof bl, "%s", batches_list);
    char *save_b = NULL;
    for (char *bs = strtok_r(bl, " ,", &save_b); bs; bs = strtok_r(NULL, " ,", &save_b)) {
      int64_t batch = atoll(bs);
      for (int path = 0; path < (tp ? 2 : 1); path++) {
        if (strcmp(paths, "both") && strcmp(paths, path ? "tokens" : "dense")) continue;
        cell c = {.s = s, .use_tokens = path, .t = tp};
        c.in.dtype = KILN_DTYPE_FLOAT;
        c.in.rank = 2;
        c.in.dims[0] = batch;
        c.in.dims[1] = width;
        c.in.data = x;
        /* warm-up, and calibrate: runs per repetition so one lasts min_time / reps */
        double t0 = now();
        int64_t n = 0;
        while (n < 5 || now() - t0 < 0.05) {
          run_once(&c);
          n++;
        }
        double per_run = (now() - t0) / (double)n;
        int64_t runs = (int64_t)(min_time / reps / per_run) + 1;
        double rates[64];
        for (int r = 0; r < reps; r++) {
          double a = now();
          for (int64_t i = 0; i < runs; i++) run_once(&c);
          rates[r] = (double)(runs * batch) / (now() - a);
        }
        double sorted[64];
        memcpy(sorted, rates, sizeof(double) * (size_t)reps);
        qsort(sorted, (size_t)reps, sizeof(double), cmp_double);
        double med = reps % 2 ? sorted[reps / 2] : 0.5 * (sorted[reps / 2 - 1] + sorted[reps / 2]);
        printf("{\"side\":\"kiln\",\"model\":\"%s\",\"path\":\"%s\",\"threads\":%d,\"batch\":%lld,"
               "\"rows_per_s\":%.6g,\"runs_per_rep\":%lld,\"reps\":[",
               name, path ? "tokens" : "dense", threads, (long long)batch, med, (long long)runs);
        for (int r = 0; r < reps; r++) printf("%s%.6g", r ? "," : "", rates[r]);
        printf("],\"kernel\":\"%s\",\"checksum\":%.9g}\n", kiln_session_kernel_name(s),
               checksum(&c.out));
        fflush(stdout);
      }
    }
    kiln_session_free(s);
  }
  free(x);
  free(t.offsets);
  free(t.ids);
}

static void mem(const char *model, const char *name, int64_t batch, int runs, int threads) {
  kiln_error err;
  kiln_session_options opt;
  kiln_session_options_init(&opt);
  opt.max_batch = MAX_ROWS;
  opt.threads = threads;
  kiln_session *s;
  if (kiln_session_create_from_file(model, &opt, &s, &err) != KILN_OK) die(model, &err);
  const kiln_ir_value *iv = kiln_session_input(s, 0);
  int64_t width = iv->dims[1].value;
  float *x = make_dense(width, NULL, 1);
  kiln_tensor_view in = {.dtype = KILN_DTYPE_FLOAT, .rank = 2, .dims = {batch, width}, .data = x};
  kiln_tensor_view out;
  for (int i = 0; i < runs; i++)
    if (kiln_session_run(s, &in, 1, &out, 1, &err) != KILN_OK) die("run", &err);
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  printf("{\"side\":\"kiln\",\"model\":\"%s\",\"mem\":1,\"batch\":%lld,\"runs\":%d,"
         "\"maxrss_kb\":%ld,\"arena_bytes\":%zu,\"weight_bytes\":%zu,\"kernel\":\"%s\"}\n",
         name, (long long)batch, runs, ru.ru_maxrss, kiln_session_arena_bytes(s),
         kiln_session_weight_bytes(s), kiln_session_kernel_name(s));
  kiln_session_free(s);
  free(x);
}

int main(int argc, char **argv) {
  if (argc < 4) {
    fprintf(stderr, "usage: bench_infer speed|mem MODEL.onnx NAME [options] (see the source)\n");
    return 2;
  }
  const char *paths = "both", *tok = NULL, *dump = NULL, *threads = "1 2", *batches = "1 32 1024";
  double min_time = 0.5;
  int reps = 5, runs = 100, t1 = 1;
  int64_t batch = 1024;
  for (int i = 4; i + 1 < argc; i += 2) {
    if (!strcmp(argv[i], "--tokens")) tok = argv[i + 1];
    else if (!strcmp(argv[i], "--threads")) threads = argv[i + 1], t1 = atoi(argv[i + 1]);
    else if (!strcmp(argv[i], "--paths")) paths = argv[i + 1];
    else if (!strcmp(argv[i], "--dump")) dump = argv[i + 1];
    else if (!strcmp(argv[i], "--batches")) batches = argv[i + 1];
    else if (!strcmp(argv[i], "--min-time")) min_time = atof(argv[i + 1]);
    else if (!strcmp(argv[i], "--reps")) reps = atoi(argv[i + 1]);
    else if (!strcmp(argv[i], "--batch")) batch = atoll(argv[i + 1]);
    else if (!strcmp(argv[i], "--runs")) runs = atoi(argv[i + 1]);
    else {
      fprintf(stderr, "bench_infer: unknown option %s\n", argv[i]);
      return 2;
    }
  }
  if (reps < 1 || reps > 64) reps = 5;
  if (!strcmp(argv[1], "speed")) speed(argv[2], argv[3], tok, threads, batches, min_time, reps, paths, dump);
  else if (!strcmp(argv[1], "mem")) mem(argv[2], argv[3], batch, runs, t1);
  else {
    fprintf(stderr, "bench_infer: unknown mode %s\n", argv[1]);
    return 2;
  }
  return 0;
}

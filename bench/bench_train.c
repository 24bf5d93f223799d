/* bench_train — times kiln's training of the four book models, one model per process.
 *
 *   bench_train --model imdb|reuters|housing|fashion_mnist [--epochs N] [--seed S]
 *               [--data-dir DIR]
 *
 * Loads the training split with kiln_dataset_load (IMDB/Reuters: num_words 10000,
 * multi-hot CSR), builds the book's model, fits it with kiln_model_fit and times every
 * epoch from on_epoch_begin to on_epoch_end. Prints one JSON line on stdout with the
 * epoch times, their median after the first epoch, and the process's peak RSS
 * (getrusage ru_maxrss: run one model per process so the figure is that model's).
 * bench/run_train_bench.sh runs it beside the PyTorch twin bench_train_torch.py. */
#include <kiln/data.h>
#include <kiln/train.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

/* OpenBLAS' introspection, when kiln is linked against OpenBLAS (weak: another cblas
 * leaves them NULL). */
extern char *openblas_get_corename(void) __attribute__((weak));
extern int openblas_get_num_threads(void) __attribute__((weak));

#define MAX_EPOCHS 1000

typedef struct timing {
  struct timespec begin;
  int n;
  double seconds[MAX_EPOCHS];
  double loss[MAX_EPOCHS];
} timing;

static double now_diff(const struct timespec *a, const struct timespec *b) {
  return (double)(b->tv_sec - a->tv_sec) + 1e-9 * (double)(b->tv_nsec - a->tv_nsec);
}

static void on_epoch_begin(void *ctx, kiln_model *m, int epoch) {
  timing *t = ctx;
  clock_gettime(CLOCK_MONOTONIC, &t->begin);
}

static void on_epoch_end(void *ctx, kiln_model *m, int epoch, const kiln_logs *logs) {
  timing *t = ctx;
  struct timespec end;
  clock_gettime(CLOCK_MONOTONIC, &end);
  if (t->n < MAX_EPOCHS) {
    t->seconds[t->n] = now_diff(&t->begin, &end);
    t->loss[t->n] = kiln_logs_get(logs, "loss");
    t->n++;
  }
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

/* Median of v[from..n) (of all of v when only one epoch ran). */
static double median_from(const double *v, int n, int from) {
  if (n <= from) from = 0;
  int k = n - from;
  double *c = malloc((size_t)k * sizeof *c);
  if (!c) return -1;
  memcpy(c, v + from, (size_t)k * sizeof *c);
  qsort(c, (size_t)k, sizeof *c, cmp_double);
  double med = (k % 2) ? c[k / 2] : 0.5 * (c[k / 2 - 1] + c[k / 2]);
  free(c);
  return med;
}

static double peak_rss_mb(void) {
  struct rusage ru;
  if (getrusage(RUSAGE_SELF, &ru) != 0) return -1;
  return (double)ru.ru_maxrss / 1024.0; /* Linux: kilobytes */
}

/* Resets the kernel's resident high-water mark (VmHWM) so that it covers training
 * only (Linux >= 4.0; ru_maxrss is not reset and keeps the whole process's peak). */
static int reset_hwm(void) {
  FILE *f = fopen("/proc/self/clear_refs", "w");
  if (!f) return 0;
  int ok = fputs("5", f) >= 0;
  return fclose(f) == 0 && ok;
}

static double hwm_mb(void) {
  FILE *f = fopen("/proc/self/status", "r");
  if (!f) return -1;
  char line[256];
  long long kb = -1;
  while (fgets(line, sizeof line, f))
    if (!strncmp(line, "VmHWM:", 6)) kb = atoll(line + 6);
  fclose(f);
  return kb < 0 ? -1 : (double)kb / 1024.0;
}

static double cpu_seconds(void) {
  struct rusage ru;
  if (getrusage(RUSAGE_SELF, &ru) != 0) return -1;
  return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
         1e-6 * (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec);
}

static double current_rss_mb(void) {
  FILE *f = fopen("/proc/self/statm", "r");
  long long size = 0, resident = 0;
  if (!f) return -1;
  int got = fscanf(f, "%lld %lld", &size, &resident);
  fclose(f);
  if (got != 2) return -1;
  return (double)resident * (double)sysconf(_SC_PAGESIZE) / (1024.0 * 1024.0);
}

/* The BLAS shared objects mapped into this process, comma-separated (deduplicated). */
static void mapped_blas(char *out, size_t cap) {
  out[0] = '\0';
  FILE *f = fopen("/proc/self/maps", "r");
  if (!f) return;
  char line[1024];
  while (fgets(line, sizeof line, f)) {
    char *path = strchr(line, '/');
    if (!path || !strstr(path, "blas")) continue;
    path[strcspn(path, "\n")] = '\0';
    if (strstr(out, path)) continue;
    if (strlen(out) + strlen(path) + 2 >= cap) break;
    if (out[0]) strcat(out, ",");
    strcat(out, path);
  }
  fclose(f);
}

static void json_string(FILE *f, const char *s) {
  fputc('"', f);
  for (; *s; s++) {
    if (*s == '"' || *s == '\\') fputc('\\', f);
    if ((unsigned char)*s >= 0x20) fputc(*s, f);
  }
  fputc('"', f);
}

static int usage(FILE *f, int code) {
  fprintf(f,
          "usage: bench_train --model imdb|reuters|housing|fashion_mnist [--epochs N]\n"
          "                   [--seed S] [--data-dir DIR]\n"
          "Trains one book model with kiln and prints one JSON line: per-epoch seconds,\n"
          "their median after the first epoch, and the process's peak RSS.\n"
          "Data: --data-dir, else $KILN_DATA_DIR, else ../shared/data.\n");
  return code;
}

#define CHECK(call)                                                                 \
  do {                                                                              \
    if ((call) != KILN_OK) {                                                        \
      fprintf(stderr, "bench_train: %s: %s\n", model_name, err.message);            \
      return 1;                                                                     \
    }                                                                               \
  } while (0)

int main(int argc, char **argv) {
  const char *model_name = NULL, *data_dir = NULL;
  int epochs = 0;
  unsigned long long seed = 1;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) return usage(stdout, 0);
    if (i + 1 >= argc) return usage(stderr, 2);
    if (!strcmp(argv[i], "--model")) model_name = argv[++i];
    else if (!strcmp(argv[i], "--epochs")) epochs = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--seed")) seed = strtoull(argv[++i], NULL, 10);
    else if (!strcmp(argv[i], "--data-dir")) data_dir = argv[++i];
    else return usage(stderr, 2);
  }
  if (!model_name) return usage(stderr, 2);

  /* The book's four models: data set, layer widths, loss, optimizer, batch size. */
  const char *dataset;
  int64_t units[3];
  kiln_activation acts[3];
  int n_dense;
  kiln_loss loss;
  kiln_optimizer_kind optk;
  int64_t batch;
  const char *metric;
  int default_epochs;
  if (!strcmp(model_name, "imdb")) {
    dataset = "imdb";
    n_dense = 3;
    units[0] = 16, units[1] = 16, units[2] = 1;
    acts[0] = KILN_ACTIVATION_RELU, acts[1] = KILN_ACTIVATION_RELU;
    acts[2] = KILN_ACTIVATION_SIGMOID;
    loss = KILN_LOSS_BINARY_CROSSENTROPY;
    optk = KILN_OPTIMIZER_ADAM;
    batch = 512;
    metric = "accuracy";
    default_epochs = 8;
  } else if (!strcmp(model_name, "reuters")) {
    dataset = "reuters";
    n_dense = 3;
    units[0] = 64, units[1] = 64, units[2] = 46;
    acts[0] = KILN_ACTIVATION_RELU, acts[1] = KILN_ACTIVATION_RELU;
    acts[2] = KILN_ACTIVATION_SOFTMAX;
    loss = KILN_LOSS_CATEGORICAL_CROSSENTROPY;
    optk = KILN_OPTIMIZER_ADAM;
    batch = 512;
    metric = "accuracy";
    default_epochs = 10;
  } else if (!strcmp(model_name, "housing")) {
    dataset = "california_housing";
    n_dense = 3;
    units[0] = 64, units[1] = 64, units[2] = 1;
    acts[0] = KILN_ACTIVATION_RELU, acts[1] = KILN_ACTIVATION_RELU;
    acts[2] = KILN_ACTIVATION_LINEAR;
    loss = KILN_LOSS_MEAN_SQUARED_ERROR;
    optk = KILN_OPTIMIZER_ADAM;
    batch = 16;
    metric = "mae";
    default_epochs = 20; /* an epoch is 30 small batches: more epochs, steadier median */
  } else if (!strcmp(model_name, "fashion_mnist")) {
    dataset = "fashion_mnist";
    n_dense = 2;
    units[0] = 512, units[1] = 10;
    acts[0] = KILN_ACTIVATION_RELU, acts[1] = KILN_ACTIVATION_SOFTMAX;
    loss = KILN_LOSS_SPARSE_CATEGORICAL_CROSSENTROPY;
    optk = KILN_OPTIMIZER_RMSPROP;
    batch = 128;
    metric = "accuracy";
    default_epochs = 4;
  } else {
    fprintf(stderr, "bench_train: unknown model '%s'\n", model_name);
    return usage(stderr, 2);
  }
  /* Defaults: enough epochs for a steady median on a noisy machine; bench_train_torch.py
   * uses the same. */
  if (epochs <= 0) epochs = default_epochs;
  if (epochs > MAX_EPOCHS) epochs = MAX_EPOCHS;

  kiln_error err;
  memset(&err, 0, sizeof err);
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  kiln_load_options lo;
  kiln_load_options_init(&lo);
  lo.data_dir = data_dir;
  lo.num_words = 10000;
  lo.multi_hot = 1;
  lo.missing = KILN_MISSING_IMPUTE_MEDIAN; /* housing: 4 empty total_bedrooms cells */
  kiln_dataset train;
  CHECK(kiln_dataset_load(dataset, &lo, &train, NULL, &err));
  /* The training split only: the text loader keeps the token sequences beside the
   * CSR; a Keras user would drop them after vectorizing, so we do too. */
  free(train.seq.offsets);
  free(train.seq.tokens);
  memset(&train.seq, 0, sizeof train.seq);

  kiln_matrix y = train.y, y_onehot;
  memset(&y_onehot, 0, sizeof y_onehot);
  if (!strcmp(model_name, "reuters")) {
    CHECK(kiln_one_hot(&train.y, 46, &y_onehot, &err));
    y = y_onehot;
  } else if (!strcmp(model_name, "housing")) {
    kiln_standardizer st;
    CHECK(kiln_standardizer_fit(&st, &train.x, &err));
    CHECK(kiln_standardizer_apply(&st, &train.x, &err));
    kiln_standardizer_free(&st);
    kiln_matrix_scale(&train.y, 1.0f / 100000.0f);
    y = train.y;
  }
  clock_gettime(CLOCK_MONOTONIC, &t1);
  double load_s = now_diff(&t0, &t1);

  kiln_model *m;
  CHECK(kiln_model_create(seed, &m, &err));
  CHECK(kiln_model_add_input(m, train.x.cols, &err));
  for (int i = 0; i < n_dense; i++) CHECK(kiln_model_add_dense(m, units[i], acts[i], &err));
  kiln_optimizer opt;
  kiln_optimizer_init(&opt, optk); /* Keras defaults: lr 1e-3, eps 1e-7, rho 0.9 */
  const char *metrics[1] = {metric};
  CHECK(kiln_model_compile(m, &opt, loss, metrics, 1, &err));

  timing *t = calloc(1, sizeof *t);
  if (!t) {
    fprintf(stderr, "bench_train: out of memory\n");
    return 1;
  }
  kiln_callback cb;
  memset(&cb, 0, sizeof cb);
  cb.ctx = t;
  cb.on_epoch_begin = on_epoch_begin;
  cb.on_epoch_end = on_epoch_end;
  kiln_fit_options fo;
  kiln_fit_options_init(&fo);
  fo.epochs = epochs;
  fo.batch_size = batch;
  fo.shuffle = 1;
  fo.verbose = 0;
  fo.callbacks = &cb;
  fo.n_callbacks = 1;
  double rss_before_fit = current_rss_mb();
  int hwm_reset = reset_hwm();
  CHECK(kiln_model_fit(m, &train.x, &y, &fo, NULL, &err));
  double fit_peak = hwm_reset ? hwm_mb() : -1;

  char blas[2048];
  mapped_blas(blas, sizeof blas);
  FILE *o = stdout;
  fprintf(o, "{\"side\": \"kiln\", \"model\": \"%s\", \"variant\": \"kiln\", ", model_name);
  fprintf(o, "\"input\": \"%s\", ", kiln_matrix_is_sparse(&train.x) ? "csr" : "dense");
  fprintf(o, "\"rows\": %lld, \"features\": %lld, \"nnz\": %lld, \"batch\": %lld, ",
          (long long)train.x.rows, (long long)train.x.cols,
          (long long)kiln_matrix_nnz(&train.x), (long long)batch);
  fprintf(o, "\"params\": %lld, \"epochs\": %d, \"epoch_s\": [", (long long)kiln_model_param_count(m),
          t->n);
  for (int i = 0; i < t->n; i++) fprintf(o, "%s%.6f", i ? ", " : "", t->seconds[i]);
  fprintf(o, "], \"loss\": [");
  for (int i = 0; i < t->n; i++) fprintf(o, "%s%.6g", i ? ", " : "", t->loss[i]);
  fprintf(o, "], \"median_epoch_s\": %.6f, \"load_s\": %.3f, ",
          median_from(t->seconds, t->n, 1), load_s);
  fprintf(o, "\"rss_before_fit_mb\": %.1f, \"fit_peak_rss_mb\": %.1f, \"peak_rss_mb\": %.1f, ",
          rss_before_fit, fit_peak, peak_rss_mb());
  fprintf(o, "\"cpu_s\": %.3f, \"blas\": ", cpu_seconds());
  json_string(o, blas[0] ? blas : "unknown");
  fprintf(o, ", \"openblas_core\": ");
  json_string(o, openblas_get_corename ? openblas_get_corename() : "unknown");
  fprintf(o, ", \"openblas_threads\": %d}\n",
          openblas_get_num_threads ? openblas_get_num_threads() : -1);

  free(t);
  kiln_model_free(m);
  kiln_matrix_free(&y_onehot);
  kiln_dataset_free(&train);
  return 0;
}

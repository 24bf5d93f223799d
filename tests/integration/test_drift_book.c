/* The drift check of the book models, as a user's CI would run it, all through the
 * `kiln` command: for IMDB, Reuters, Fashion-MNIST and California housing (each
 * skipped when its data is absent) train a few epochs with the example's spec, export
 * the float .onnx, then
 *   - float in kiln vs ONNX Runtime on the same file: >= 99.5% agreement,
 *   - `kiln quantize` (static, per-channel int8, QDQ) and `kiln drift` float vs int8:
 *     within 0.5 accuracy points (housing: MAE within 3%),
 *   - kiln int8 vs ONNX Runtime on the same QDQ file: >= 99.5% agreement,
 *   - classifiers: `kiln train --prune 0.8` (pruned during training, polynomial decay up
 *     to 2/3 of the steps, then fine-tuned at 80%; more epochs than the float run), export,
 *     `kiln quantize --prune 0.8` (int8, the >= 80%-zero weights stored as bitmap + values)
 *     and `kiln drift` float vs pruned int8: within 1 accuracy point of the float model,
 *     and the file at most 0.12 of the float file's size (figures in docs/quantization.md);
 *     Fashion-MNIST again with --prune-block 4x16 in training and quantization.
 * The int8 part skips with a message while `kiln quantize` is not built; the ONNX
 * Runtime part when node or tests/integration/ort/node_modules is missing. */
#define _POSIX_C_SOURCE 200809L
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cjson/cJSON.h>

static char kiln[1024], dir[64], runjs[1200];
static int have_quantize, have_ort;

static int have(const char *path) { return access(path, R_OK) == 0; }

static const char *data_dir(void) {
  const char *d = getenv("KILN_DATA_DIR");
  return d && d[0] ? d : "../shared/data";
}

/* Runs `kiln ARGS` in the scratch folder (stdout to out.txt, stderr to err.txt);
 * returns the exit status. */
static int run_kiln(const char *args) {
  char cmd[8192];
  snprintf(cmd, sizeof cmd, "cd '%s' && '%s' %s >out.txt 2>err.txt", dir, kiln, args);
  int s = system(cmd);
  return WIFEXITED(s) ? WEXITSTATUS(s) : -1;
}

static char *read_file(const char *name) {
  char path[600];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  char *s = malloc((size_t)n + 1);
  if (s && fread(s, 1, (size_t)n, f) != (size_t)n) n = 0;
  if (s) s[n] = '\0';
  fclose(f);
  return s;
}

static void show_output(void) {
  char *o = read_file("out.txt"), *e = read_file("err.txt");
  print_error("stdout:\n%s\nstderr:\n%s\n", o ? o : "", e ? e : "");
  free(o);
  free(e);
}

/* Runs kiln drift ARGS --json and returns the JSON report; expect: exit status wanted. */
static cJSON *drift(const char *args, int expect) {
  char full[3000];
  snprintf(full, sizeof full, "drift %s --json", args);
  int rc = run_kiln(full);
  if (rc != expect) {
    show_output();
    fail_msg("kiln %s: exit %d, expected %d", full, rc, expect);
  }
  char *out = read_file("out.txt");
  assert_non_null(out);
  size_t len = strlen(out);
  while (len > 0 && out[len - 1] == '\n') out[--len] = '\0';
  const char *last = strrchr(out, '\n');
  cJSON *j = cJSON_Parse(last ? last + 1 : out);
  if (!j) fail_msg("kiln %s: the last line is not JSON", full);
  free(out);
  return j;
}

static double num(const cJSON *j, const char *key) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, key);
  return cJSON_IsNumber(v) ? v->valuedouble : -1;
}

typedef struct book {
  const char *name, *spec, *data, *train_args, *drift_args;
  int regression;
  const char *ort_args; /* regression: the tolerance of "the same prediction" */
  const char *prune_train_args; /* NULL: no pruned int8 check */
  int prune_block;              /* also the check pruned in 4 x 16 blocks during training */
} book;

static long file_size(const char *name) {
  char path[600];
  struct stat st;
  snprintf(path, sizeof path, "%s/%s", dir, name);
  return stat(path, &st) == 0 ? (long)st.st_size : -1;
}

/* The last line of out.txt as JSON (NULL when it is not). */
static cJSON *last_json_line(void) {
  char *out = read_file("out.txt");
  if (!out) return NULL;
  size_t len = strlen(out);
  while (len > 0 && out[len - 1] == '\n') out[--len] = '\0';
  const char *last = strrchr(out, '\n');
  cJSON *j = cJSON_Parse(last ? last + 1 : out);
  free(out);
  return j;
}

/* Float vs int8 + 80% sparsity pruned during training: kiln train --prune 0.8, kiln
 * quantize --prune 0.8 (sparse storage), kiln drift --max-drop 0.01 and the file size. */
/* block: 4 x 16 blocks (--prune-block 4x16 in training and in kiln quantize, which then
 * finds the same blocks already zero), the int8 runtime's skipped group. */
static void check_pruned(const book *b, const char *fl, int block) {
  char args[3000], pf[128], pq[128];
  const char *bopt = block ? " --prune-block 4x16" : "";
  snprintf(pf, sizeof pf, "%s_pruned%s.onnx", b->name, block ? "_b" : "");
  snprintf(pq, sizeof pq, "%s_pruned%s_int8.onnx", b->name, block ? "_b" : "");
  snprintf(args, sizeof args,
           "train '%s/examples/specs/%s' --data %s --data-dir '%s' %s --verbose 0 --prune 0.8%s "
           "--json --output %s",
           getenv("KILN_SOURCE_DIR"), b->spec, b->data, data_dir(), b->prune_train_args, bopt, pf);
  int rc = run_kiln(args);
  if (rc != 0) {
    show_output();
    fail_msg("kiln %s: exit %d", args, rc);
  }
  cJSON *t = last_json_line();
  const cJSON *sp = cJSON_GetObjectItemCaseSensitive(t, "sparsity");
  if (!cJSON_IsObject(sp)) {
    show_output();
    fail_msg("kiln %s: no \"sparsity\" in the --json line", args);
  }
  const cJSON *layer;
  cJSON_ArrayForEach(layer, sp) {
    /* floor(0.8 n) / n: 0.75 for a 16 x 1 kernel (blocks: 51/64 for 256 x 10 in 4 x 16) */
    if (!cJSON_IsNumber(layer) || layer->valuedouble < 0.74) {
      show_output();
      fail_msg("%s: kernel %s pruned to %g, expected ~0.8", b->name, layer->string,
               cJSON_IsNumber(layer) ? layer->valuedouble : -1.0);
    }
  }
  cJSON_Delete(t);
  snprintf(args, sizeof args, "quantize %s %s --calibrate %s --data-dir '%s' --prune 0.8%s", pf,
           pq, b->data, data_dir(), bopt);
  if ((rc = run_kiln(args)) != 0) {
    show_output();
    fail_msg("kiln %s: exit %d", args, rc);
  }
  snprintf(args, sizeof args, "%s %s --data %s:test --data-dir '%s' %s --max-drop 0.01", fl, pq,
           b->data, data_dir(), b->drift_args);
  cJSON *j = drift(args, 0);
  long fbytes = file_size(fl), qbytes = file_size(pq);
  assert_true(fbytes > 0 && qbytes > 0);
  double ratio = (double)qbytes / (double)fbytes;
  fprintf(stderr,
          "%-18s int8 + 80%% pruned in training%s: accuracy float %.4f, pruned int8 %.4f (drop "
          "%.2f points), agreement %.4f; %ld -> %ld bytes (%.3f)\n",
          b->name, block ? " (4x16 blocks)" : "", num(j, "reference_metric"), num(j, "candidate_metric"), num(j, "drop") * 100,
          num(j, "agreement"), fbytes, qbytes, ratio);
  cJSON_Delete(j);
  /* Every book classifier's first layer has a fan-in of >= 784, so the per-channel scales
     and int32 biases (~12 bytes per output channel) are small beside the bitmap (1 bit per
     weight) and the 20% of int8 values: 0.086-0.093 measured. */
  if (ratio > 0.12) fail_msg("%s: %s is %.3f of the float file, expected <= 0.12", b->name, pq, ratio);
}

static void check_book(const book *b) {
  char args[3000], fl[128], q[128];
  snprintf(fl, sizeof fl, "%s.onnx", b->name);
  snprintf(q, sizeof q, "%s_int8.onnx", b->name);
  snprintf(args, sizeof args, "train '%s/examples/specs/%s' --data %s --data-dir '%s' %s --verbose 0 "
           "--output %s",
           getenv("KILN_SOURCE_DIR"), b->spec, b->data, data_dir(), b->train_args, fl);
  int rc = run_kiln(args);
  if (rc != 0) {
    show_output();
    fail_msg("kiln %s: exit %d", args, rc);
  }
  cJSON *j;
  char ort[1400];
  snprintf(ort, sizeof ort, "--runtime ort --ort-script '%s' --rows 2000 --no-layers "
           "--min-agreement 0.995", runjs);
  if (b->ort_args) {
    size_t l = strlen(ort);
    snprintf(ort + l, sizeof ort - l, " %s", b->ort_args);
  }
  if (have_ort) {
    snprintf(args, sizeof args, "%s %s --data %s:test --data-dir '%s' %s %s", fl, fl, b->data,
             data_dir(), b->drift_args, ort);
    j = drift(args, 0);
    fprintf(stderr, "%-18s float: kiln vs onnxruntime agreement %.4f, max |diff| %.3g\n",
            b->name, num(j, "agreement"), num(j, "max_abs_diff"));
    cJSON_Delete(j);
  }
  if (!have_quantize) return;
  if (b->prune_train_args) check_pruned(b, fl, 0);
  if (b->prune_train_args && b->prune_block) check_pruned(b, fl, 1);
  /* static (calibrated), weights per channel, QDQ: kiln quantize's defaults */
  snprintf(args, sizeof args, "quantize %s %s --calibrate %s --data-dir '%s' --format qdq", fl, q,
           b->data, data_dir());
  if ((rc = run_kiln(args)) != 0) {
    show_output();
    fail_msg("kiln %s: exit %d", args, rc);
  }
  snprintf(args, sizeof args, "%s %s --data %s:test --data-dir '%s' %s --max-drop %s", fl, q,
           b->data, data_dir(), b->drift_args, b->regression ? "3" : "0.005");
  j = drift(args, 0);
  const cJSON *entry = cJSON_GetObjectItem(j, "entry_layer");
  fprintf(stderr,
          "%-18s int8 static per-channel: %s reference %.5g, candidate %.5g, drop %.4g%s, "
          "agreement %.4f, error enters at %s\n",
          b->name, b->regression ? "mae" : "accuracy", num(j, "reference_metric"),
          num(j, "candidate_metric"), b->regression ? num(j, "drop") : num(j, "drop") * 100,
          b->regression ? "%" : " points", num(j, "agreement"),
          cJSON_IsString(entry) ? entry->valuestring : "-");
  cJSON_Delete(j);
  if (have_ort) {
    snprintf(args, sizeof args, "%s %s --data %s:test --data-dir '%s' %s %s", q, q, b->data,
             data_dir(), b->drift_args, ort);
    j = drift(args, 0);
    fprintf(stderr, "%-18s int8: kiln vs onnxruntime agreement %.4f, max |diff| %.3g\n", b->name,
            num(j, "agreement"), num(j, "max_abs_diff"));
    cJSON_Delete(j);
  }
}

static int present(const char *rel) {
  char path[1024];
  snprintf(path, sizeof path, "%s/%s", data_dir(), rel);
  if (have(path)) return 1;
  print_message("skipped: %s is absent\n", path);
  return 0;
}

static void test_imdb(void **state) {
  (void)state;
  if (!present("imdb/test.txt.gz")) return;
  /* pruned: 5 epochs (49 steps each; ramp to step 163, then 82 steps at 80%) */
  const book b = {"imdb", "imdb.json", "imdb", "--epochs 3", "", 0, NULL, "--epochs 5", 0};
  check_book(&b);
}

static void test_reuters(void **state) {
  (void)state;
  if (!present("reuters")) return;
  /* pruned: 20 epochs (18 steps each, ramp to step 240): with 9 or 12 epochs the 80%-pruned
     model is 7 or 3 points below the float one (the 10000 x 64 kernel needs the steps) */
  const book b = {"reuters", "reuters.json", "reuters", "--epochs 6", "", 0, NULL, "--epochs 20", 0};
  check_book(&b);
}

static void test_fashion_mnist(void **state) {
  (void)state;
  char alt[1024];
  snprintf(alt, sizeof alt, "%s/fashion-mnist", data_dir());
  if (!have("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz") && !have(alt)) {
    print_message("skipped: install dataset-fashion-mnist\n");
    return;
  }
  /* pruned: 3 epochs (469 steps each; ramp to step 938); again in 4 x 16 blocks (~5 s more;
     IMDB and Reuters in blocks are measured in docs/quantization.md, not checked here) */
  const book b = {"fashion_mnist", "fashion_mnist.json", "fashion_mnist", "--epochs 2", "", 0, NULL,
                  "--epochs 3", 1};
  check_book(&b);
}

static void test_housing(void **state) {
  (void)state;
  if (!present("housing/california_housing.csv")) return;
  const book b = {"housing", "housing.json", "california_housing",
                  "--missing median --standardize --scale-targets 0.00001 --epochs 60",
                  "--metric mae --scale-targets 0.00001", 1,
                  /* $3000 (targets in units of $100000): a few int8 steps of the output; kiln
                     and ONNX Runtime round the requantization differently on a few rows */
                  "--tolerance 0.03",
                  /* no pruned check: a regression (drift compares MAE, not accuracy), and a
                     fan-in of 8 leaves the per-channel scales and biases dominant (0.12 of the
                     float file is out of reach; see docs/quantization.md) */
                  NULL, 0};
  check_book(&b);
}

static int setup(void **state) {
  (void)state;
  snprintf(dir, sizeof dir, "/tmp/kiln-drift-book-XXXXXX");
  return mkdtemp(dir) ? 0 : -1;
}

static int teardown(void **state) {
  (void)state;
  char cmd[128];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  return system(cmd) == 0 ? 0 : -1;
}

int main(void) {
  const char *bin = getenv("KILN_BINARY_DIR"), *src = getenv("KILN_SOURCE_DIR");
  if (!bin || !src) {
    fprintf(stderr, "KILN_BINARY_DIR or KILN_SOURCE_DIR is not set (run under ctest): skipped\n");
    return 77;
  }
  snprintf(kiln, sizeof kiln, "%s/tools/kiln", bin);
  if (access(kiln, X_OK) != 0) {
    fprintf(stderr, "%s is not built: skipped\n", kiln);
    return 77;
  }
  char probe[1400];
  snprintf(probe, sizeof probe, "'%s' quantize --help >/dev/null 2>&1", kiln);
  have_quantize = system(probe) == 0;
  if (!have_quantize)
    fprintf(stderr, "kiln quantize is not there yet: the int8 drift checks are skipped (the "
                    "float kiln-vs-ONNX Runtime checks still run)\n");
  char mod[1200];
  snprintf(mod, sizeof mod, "%s/tests/integration/ort/node_modules/onnxruntime-node", src);
  snprintf(runjs, sizeof runjs, "%s/tests/integration/ort/run.js", src);
  have_ort = have(mod) && system("node --version >/dev/null 2>&1") == 0;
  if (!have_ort)
    fprintf(stderr, "ONNX Runtime checks skipped: needs node and %s\n", mod);
  if (!have_quantize && !have_ort) return 77;
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_imdb, setup, teardown),
      cmocka_unit_test_setup_teardown(test_reuters, setup, teardown),
      cmocka_unit_test_setup_teardown(test_fashion_mnist, setup, teardown),
      cmocka_unit_test_setup_teardown(test_housing, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

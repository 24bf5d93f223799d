/* Shared by tests: OK(call), which fails the test with the kiln_error message of a
 * failing call (the call passes E as its error); the temporary folder a test works in
 * (`dir`, which the test's setup fills with mkdtemp) and paths inside it; the largest
 * difference between two float arrays (NaN counts as the largest). Include after
 * <cmocka.h>. */
#ifndef KILN_TESTS_TEST_COMMON_H
#define KILN_TESTS_TEST_COMMON_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#define OK(call)                                                    \
  do {                                                              \
    kiln_error e_ = {0};                                            \
    kiln_status s_ = (call);                                        \
    if (s_) fail_msg("%s: %s", #call, e_.message);                  \
  } while (0)
#define E (&e_)

static char dir[64];

/* dir/name; the result stays valid for the next 7 calls. */
static inline char *in_dir(const char *name) {
  static char buf[8][512];
  static int next;
  char *p = buf[next++ % 8];
  snprintf(p, 512, "%s/%s", dir, name);
  return p;
}

static inline double max_diff(const float *a, const float *b, int64_t n) {
  double m = 0;
  for (int64_t i = 0; i < n; i++) {
    double d = fabs((double)a[i] - (double)b[i]);
    if (!(d <= m)) m = d;
  }
  return m;
}

/* ONNX Runtime for the cross-checks: tests/integration/ort/run.js (under
 * $KILN_SOURCE_DIR) into runjs; 1 when node and the npm package are there, else 0 after
 * saying on stderr what is missing. */
static inline int ort_find(char *runjs, size_t cap) {
  const char *src = getenv("KILN_SOURCE_DIR");
  char mod[1200];
  snprintf(mod, sizeof mod, "%s/tests/integration/ort/node_modules/onnxruntime-node",
           src && *src ? src : ".");
  snprintf(runjs, cap, "%s/tests/integration/ort/run.js", src && *src ? src : ".");
  int have = access(mod, R_OK) == 0 && system("node --version >/dev/null 2>&1") == 0;
  if (!have)
    fprintf(stderr, "ONNX Runtime parts skipped: needs node and %s (npm install "
                    "--ignore-scripts in tests/integration/ort)\n", mod);
  return have;
}

/* In a test that needs ONNX Runtime: skips it, saying why, when ort_find found none. */
#define SKIP_WITHOUT_ORT(have_ort)                                                          \
  do {                                                                                      \
    if (!(have_ort)) {                                                                      \
      print_message("skipped: ONNX Runtime needs node and tests/integration/ort/"           \
                    "node_modules (npm install --ignore-scripts there)\n");                 \
      skip();                                                                               \
    }                                                                                       \
  } while (0)

#endif

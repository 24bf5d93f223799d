/* Replays the fuzz corpora (tests/fuzz/corpus/onnx_read and session: the seeds and
 * every crash input found so far) through the runtime's contract on untrusted files
 * (tests/fuzz/session_harness.h): read, create a session, run once. Under the
 * sanitizer build this is the regression test of each fuzzer finding. */
#define _POSIX_C_SOURCE 200809L
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz/session_harness.h"

static unsigned char *read_all(const char *path, size_t *size) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  unsigned char *buf = NULL;
  size_t cap = 0, n = 0, got;
  do {
    if (n == cap) {
      unsigned char *p = realloc(buf, cap = cap ? 2 * cap : 65536);
      if (!p) {
        free(buf);
        fclose(f);
        return NULL;
      }
      buf = p;
    }
    got = fread(buf + n, 1, cap - n, f);
    n += got;
  } while (got > 0);
  fclose(f);
  *size = n;
  return buf;
}

static int replay_dir(const char dir[4096]) {
  DIR *d = opendir(dir);
  if (!d) fail_msg("cannot open %s", dir);
  int files = 0;
  struct dirent *e;
  while ((e = readdir(d))) {
    if (e->d_name[0] == '.') continue;
    char path[4096 + 256];
    snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
    size_t size = 0;
    unsigned char *buf = read_all(path, &size);
    if (!buf) fail_msg("cannot read %s", path);
    const char *why = kiln_fuzz_session_one(buf, size);
    free(buf);
    if (why) fail_msg("%s: %s", path, why);
    files++;
  }
  closedir(d);
  return files;
}

static void test_replay_corpora(void **state) {
  (void)state;
  const char *src = getenv("KILN_SOURCE_DIR");
  if (!src) skip();
  static const char *const dirs[] = {"onnx_read", "session"};
  for (int i = 0; i < 2; i++) {
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/tests/fuzz/corpus/%s", src, dirs[i]);
    int n = replay_dir(dir);
    print_message("%s: %d files replayed\n", dirs[i], n);
    assert_true(n > 0);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {cmocka_unit_test(test_replay_corpora)};
  return cmocka_run_group_tests(tests, NULL, NULL);
}

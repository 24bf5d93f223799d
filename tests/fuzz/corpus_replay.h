/* Replaying a fuzz corpus under ctest: every file of a directory through a harness's
 * contract function (0 = held, else a reason), failing the cmocka test with the file's
 * name. Include after cmocka.h, with _POSIX_C_SOURCE defined (dirent). */
#ifndef KILN_TESTS_FUZZ_CORPUS_REPLAY_H
#define KILN_TESTS_FUZZ_CORPUS_REPLAY_H

#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

typedef const char *(*kiln_fuzz_one_fn)(const uint8_t *data, size_t size);

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

/* The number of files replayed. */
static int replay_dir(const char dir[4096], kiln_fuzz_one_fn one) {
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
    const char *why = one(buf, size);
    free(buf);
    if (why) fail_msg("%s: %s", path, why);
    files++;
  }
  closedir(d);
  return files;
}

/* $KILN_SOURCE_DIR/tests/fuzz/corpus/<name> (ctest sets KILN_SOURCE_DIR; skipped
 * without it). */
static void replay_corpus(const char *name, kiln_fuzz_one_fn one) {
  const char *src = getenv("KILN_SOURCE_DIR");
  if (!src) skip();
  char dir[4096];
  snprintf(dir, sizeof dir, "%s/tests/fuzz/corpus/%s", src, name);
  int n = replay_dir(dir, one);
  print_message("%s: %d files replayed\n", name, n);
  assert_true(n > 0);
}

#endif

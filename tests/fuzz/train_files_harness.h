/* The trainer's contract on files a user may be handed — a .npy, a CSV table, a .kiln
 * checkpoint, a training state and a JSON spec — shared by the fuzz_train_files
 * libFuzzer target and tests/train/test_fuzz_corpus_files (which replays
 * tests/fuzz/corpus/train_files under ctest). The first byte picks the reader, the rest
 * is the file. Each must give its object or a clear error (a message, nothing handed
 * back): never a crash, a sanitizer report, a leak, or an allocation sized by a header
 * the file's bytes do not back. kiln_fuzz_train_file_one returns 0 when the contract
 * holds, else a short reason. Needs _POSIX_C_SOURCE (mkstemp). */
#ifndef KILN_TESTS_FUZZ_TRAIN_FILES_HARNESS_H
#define KILN_TESTS_FUZZ_TRAIN_FILES_HARNESS_H
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kiln/data.h"
#include "kiln/train.h"

static char kiln_fuzz_path[64];

/* The file the readers open: one per process, rewritten for every input (removed by
 * kiln_fuzz_train_files_done). */
static const char *kiln_fuzz_write_file(const uint8_t *data, size_t size) {
  if (!kiln_fuzz_path[0]) {
    const char *tmp = getenv("TMPDIR");
    snprintf(kiln_fuzz_path, sizeof kiln_fuzz_path, "%s/kiln_fuzz_XXXXXX",
             tmp && strlen(tmp) < 40 ? tmp : "/tmp");
    int fd = mkstemp(kiln_fuzz_path);
    if (fd < 0) return "cannot create a temporary file";
    close(fd);
  }
  FILE *f = fopen(kiln_fuzz_path, "wb");
  if (!f) return "cannot write the temporary file";
  int bad = size && fwrite(data, 1, size, f) != size;
  if (fclose(f) || bad) return "cannot write the temporary file";
  return NULL;
}

static void kiln_fuzz_train_files_done(void) {
  if (kiln_fuzz_path[0]) remove(kiln_fuzz_path);
  kiln_fuzz_path[0] = '\0';
}

static const char *kiln_fuzz_check(kiln_status s, const void *out, const kiln_error *err) {
  if (s == KILN_OK) return NULL;
  if (out != NULL) return "a failed call handed back an object";
  if (err->message[0] == '\0') return "a failed call left no message";
  return NULL;
}

static const char *kiln_fuzz_train_file_one(const uint8_t *data, size_t size) {
  if (size < 1) return NULL;
  int which = data[0] % 5;
  data++;
  size--;
  kiln_error err;
  memset(&err, 0, sizeof err);
  kiln_status s;
  if (which == 4) { /* a JSON spec, from memory */
    char *json = malloc(size + 1);
    if (!json) return NULL;
    memcpy(json, data, size);
    json[size] = '\0';
    kiln_spec *spec = NULL;
    s = kiln_spec_parse(json, "fuzz.json", &spec, &err);
    const char *why = kiln_fuzz_check(s, spec, &err);
    kiln_spec_free(spec);
    free(json);
    return why;
  }
  const char *why = kiln_fuzz_write_file(data, size);
  if (why) return why;
  if (which == 0) {
    kiln_matrix m;
    memset(&m, 0, sizeof m);
    s = kiln_npy_read(kiln_fuzz_path, &m, &err);
    why = kiln_fuzz_check(s, NULL, &err);
    kiln_matrix_free(&m);
  } else if (which == 1) {
    kiln_dataset d;
    memset(&d, 0, sizeof d);
    s = kiln_csv_load(kiln_fuzz_path, NULL, &d, &err);
    why = kiln_fuzz_check(s, NULL, &err);
    kiln_dataset_free(&d);
  } else {
    kiln_model *m = NULL;
    s = which == 2 ? kiln_model_load(kiln_fuzz_path, &m, &err)
                   : kiln_model_load_state(kiln_fuzz_path, &m, &err);
    why = kiln_fuzz_check(s, m, &err);
    kiln_model_free(m);
  }
  return why;
}

#endif

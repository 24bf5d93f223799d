/* Tests that run the kiln binary: one child process per call, its stdout and stderr
 * captured through files in the test's folder. Include after <cmocka.h>. */
#ifndef KILN_TESTS_RUN_KILN_H
#define KILN_TESTS_RUN_KILN_H

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

typedef struct result {
  int code; /* exit status, or -1 when killed by a signal */
  char *out;
  char *err;
} result;

static inline void result_free(result *r) {
  free(r->out);
  free(r->err);
  memset(r, 0, sizeof *r);
}

/* The whole file as a string (malloc'd), NULL when it cannot be opened. */
static inline char *read_text(const char *path) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  size_t cap = 4096, len = 0, n;
  char *s = malloc(cap);
  assert_non_null(s);
  while ((n = fread(s + len, 1, cap - len - 1, f)) > 0) {
    len += n;
    if (cap - len < 1024) {
      cap *= 2;
      s = realloc(s, cap);
      assert_non_null(s);
    }
  }
  fclose(f);
  s[len] = '\0';
  return s;
}

/* Runs the program `kiln` with args (NULL-terminated, at most 38) in folder `dir`; the
 * output files dir/stdout.txt and dir/stderr.txt are removed afterwards. */
static inline result run_kiln_in(const char *kiln, const char *dir, const char *const *args) {
  char out_path[600], err_path[600];
  snprintf(out_path, sizeof out_path, "%s/stdout.txt", dir);
  snprintf(err_path, sizeof err_path, "%s/stderr.txt", dir);
  char *argv[40];
  int n = 0;
  argv[n++] = (char *)kiln;
  for (; args[n - 1] && n < 39; n++) argv[n] = (char *)args[n - 1];
  argv[n] = NULL;
  fflush(NULL);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    int fo = open(out_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    int fe = open(err_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fo < 0 || fe < 0 || chdir(dir) != 0) _exit(126);
    dup2(fo, 1);
    dup2(fe, 2);
    close(fo);
    close(fe);
    execv(kiln, argv);
    _exit(127);
  }
  int status;
  assert_int_equal(waitpid(pid, &status, 0), pid);
  result r;
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  r.out = read_text(out_path);
  r.err = read_text(err_path);
  assert_non_null(r.out);
  assert_non_null(r.err);
  unlink(out_path);
  unlink(err_path);
  return r;
}

#endif

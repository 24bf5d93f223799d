/* kiln drift — the candidate through ONNX Runtime: the rows are written as float32
 * .npy files in a fresh temporary folder, `node run.js MODEL x.npy y.npy` runs them,
 * and the folder is removed whatever happens. node's messages go to a log file in
 * that folder and into the error, never to the caller's terminal. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <fcntl.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "drift_internal.h"

extern char **environ;

/* At most this many floats per .npy: 256 MiB. */
#define ORT_CHUNK_FLOATS ((int64_t)1 << 26)

/* The first line(s) of the log, for an error message. */
static void read_log(const char *path, char *buf, size_t cap) {
  buf[0] = '\0';
  FILE *f = fopen(path, "r");
  if (!f) return;
  size_t n = fread(buf, 1, cap - 1, f);
  fclose(f);
  buf[n] = '\0';
  while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r')) buf[--n] = '\0';
  for (size_t i = 0; i < n; i++)
    if (buf[i] == '\n') buf[i] = ' ';
}

/* node run.js MODEL args... (argv: the arguments after MODEL, NULL-terminated). */
static kiln_status run_node(const kiln_drift_options *opt, const char *model,
                            char *const *args, int n_args, const char *log, kiln_error *err) {
  const char *node = opt->node && opt->node[0] ? opt->node : "node";
  char *argv[4 + 4 * KILN_MAX_IO + 1];
  int n = 0;
  argv[n++] = (char *)node;
  argv[n++] = (char *)opt->ort_script;
  argv[n++] = (char *)model;
  for (int i = 0; i < n_args && n < (int)(sizeof argv / sizeof argv[0]) - 1; i++) argv[n++] = args[i];
  argv[n] = NULL;
  posix_spawn_file_actions_t fa;
  if (posix_spawn_file_actions_init(&fa))
    return kiln_error_set(err, KILN_E_NOMEM, "drift: out of memory");
  posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&fa, 1, log, O_WRONLY | O_CREAT | O_TRUNC, 0600);
  posix_spawn_file_actions_adddup2(&fa, 1, 2);
  pid_t pid;
  int rc = posix_spawnp(&pid, node, &fa, NULL, argv, environ);
  posix_spawn_file_actions_destroy(&fa);
  if (rc != 0)
    return kiln_error_set(err, KILN_E_IO, "drift: runtime ort: cannot start \"%s\": %s", node,
                          strerror(rc));
  int status = 0;
  while (waitpid(pid, &status, 0) < 0)
    if (errno != EINTR)
      return kiln_error_set(err, KILN_E_IO, "drift: runtime ort: waitpid: %s", strerror(errno));
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    char msg[300];
    read_log(log, msg, sizeof msg);
    return kiln_error_set(err, KILN_E_IO, "drift: runtime ort: %s %s on %s failed (%s %d): %s",
                          node, opt->ort_script, model,
                          WIFEXITED(status) ? "exit status" : "signal",
                          WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status),
                          msg[0] ? msg : "no message");
  }
  return KILN_OK;
}

kiln_status drift_run_ort(const drift_model *cand, const kiln_drift_data *d, int64_t rows,
                          const kiln_drift_options *opt, float *const *outs, kiln_error *err) {
  if (cand->in_rank != 2)
    return kiln_error_set(err, KILN_E_UNSUPPORTED,
                          "drift: runtime ort: the candidate %s takes rank-%d input; run.js feeds "
                          "rows x features",
                          drift_model_name(cand), cand->in_rank);
  if (access(opt->ort_script, R_OK) != 0)
    return kiln_error_set(err, KILN_E_IO, "drift: runtime ort: cannot read %s", opt->ort_script);
  const char *base = opt->tmp_dir && opt->tmp_dir[0] ? opt->tmp_dir : getenv("TMPDIR");
  if (!base || !base[0]) base = "/tmp";
  char dir[1024], log[1100];
  if (snprintf(dir, sizeof dir, "%s/kiln-drift-XXXXXX", base) >= (int)sizeof dir)
    return kiln_error_set(err, KILN_E_INVALID, "drift: temp dir path too long: %s", base);
  if (!mkdtemp(dir))
    return kiln_error_set(err, KILN_E_IO, "drift: runtime ort: cannot create a temp dir in %s: %s",
                          base, strerror(errno));
  snprintf(log, sizeof log, "%s/node.log", dir);
  int ni = cand->n_in > 0 ? cand->n_in : 1;
  int no = cand->n_out > 0 ? cand->n_out : 1;
  /* positional (x.npy y.npy) for one input and one output, as before; else by name */
  int named = ni > 1 || no > 1;
  char xpath[KILN_MAX_IO][1100], ypath[KILN_MAX_IO][1100];
  char xarg[KILN_MAX_IO][1400], yarg[KILN_MAX_IO][1400];
  char *args[4 * KILN_MAX_IO];
  int n_args = 0;
  for (int i = 0; i < ni; i++) {
    snprintf(xpath[i], sizeof xpath[i], "%s/x%d.npy", dir, i);
    if (named) {
      if (snprintf(xarg[i], sizeof xarg[i], "%s=%s", cand->in_name[i], xpath[i]) >=
          (int)sizeof xarg[i]) {
        rmdir(dir);
        return kiln_error_set(err, KILN_E_INVALID, "drift: input name too long: %s",
                              cand->in_name[i]);
      }
      args[n_args++] = "--input";
      args[n_args++] = xarg[i];
    } else {
      args[n_args++] = xpath[i];
    }
  }
  for (int o = 0; o < no; o++) {
    snprintf(ypath[o], sizeof ypath[o], "%s/y%d.npy", dir, o);
    if (!outs[o]) continue;
    if (named) {
      if (snprintf(yarg[o], sizeof yarg[o], "%s=%s", cand->out_name[o], ypath[o]) >=
          (int)sizeof yarg[o]) {
        rmdir(dir);
        return kiln_error_set(err, KILN_E_INVALID, "drift: output name too long: %s",
                              cand->out_name[o]);
      }
      args[n_args++] = "--output";
      args[n_args++] = yarg[o];
    } else {
      args[n_args++] = ypath[o];
    }
  }
  int64_t chunk = ORT_CHUNK_FLOATS / cand->width;
  if (chunk < 1) chunk = 1;
  if (chunk > rows) chunk = rows;
  kiln_status st = KILN_OK;
  kiln_matrix xm, ym;
  memset(&xm, 0, sizeof xm);
  memset(&ym, 0, sizeof ym);
  float *buf = malloc((size_t)(chunk * cand->width) * sizeof(float));
  if (!buf) {
    st = kiln_error_set(err, KILN_E_NOMEM, "drift: out of memory");
    goto done;
  }
  for (int64_t r0 = 0; r0 < rows; r0 += chunk) {
    int64_t n = rows - r0 < chunk ? rows - r0 : chunk;
    if ((st = drift_dense_rows(cand, d, r0, n, buf, err))) goto done;
    float *p = buf;
    for (int i = 0; i < ni; i++) {
      int64_t w = cand->n_in > 1 ? cand->in_width[i] : cand->width;
      kiln_matrix view = {.rows = n, .cols = w, .values = p, .borrowed = 1};
      if ((st = kiln_npy_write(xpath[i], &view, err))) goto done;
      p += n * w;
    }
    if ((st = run_node(opt, cand->path, args, n_args, log, err))) goto done;
    for (int o = 0; o < no; o++) {
      if (!outs[o]) continue;
      if ((st = kiln_npy_read(ypath[o], &ym, err))) {
        kiln_error_prefix(err, "drift: runtime ort: the output of %s", cand->path);
        goto done;
      }
      int64_t w = cand->n_out > 0 ? cand->out_width[o] : cand->out_cols;
      if (ym.rows != n || ym.cols != w || !ym.values) {
        st = kiln_error_set(err, KILN_E_SHAPE,
                            "drift: runtime ort: %s gave %lld x %lld outputs%s%s%s for %lld rows, "
                            "expected %lld columns (the reference's)",
                            cand->path, (long long)ym.rows, (long long)ym.cols,
                            named ? " of '" : "", named ? cand->out_name[o] : "", named ? "'" : "",
                            (long long)n, (long long)w);
        goto done;
      }
      memcpy(outs[o] + r0 * w, ym.values, (size_t)(n * w) * sizeof(float));
      kiln_matrix_free(&ym);
    }
  }
done:
  free(buf);
  kiln_matrix_free(&xm);
  kiln_matrix_free(&ym);
  for (int i = 0; i < ni; i++) unlink(xpath[i]);
  for (int o = 0; o < no; o++) unlink(ypath[o]);
  unlink(log);
  rmdir(dir);
  return st;
}

/* kiln command — argument parsing and error reporting shared by the subcommands. */
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"

static void vreport(const char *cmd, const char *fmt, va_list ap) {
  fprintf(stderr, "kiln%s%s: error: ", cmd ? " " : "", cmd ? cmd : "");
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
}

int cli_error(const char *cmd, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vreport(cmd, fmt, ap);
  va_end(ap);
  return CLI_EXIT_ERROR;
}

int cli_usage_error(const char *cmd, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vreport(cmd, fmt, ap);
  va_end(ap);
  fprintf(stderr, "Try 'kiln%s%s --help'.\n", cmd ? " " : "", cmd ? cmd : "");
  return CLI_EXIT_ERROR;
}

int cli_kiln_error(const char *cmd, const kiln_error *err) {
  cli_error(cmd, "%s", err->message[0] ? err->message : kiln_status_name(err->status));
  return err->status == KILN_E_DIVERGED ? CLI_EXIT_DIVERGED : CLI_EXIT_ERROR;
}

int cli_option(const char *cmd, int argc, char **argv, int *i, const char *name,
               const char **value) {
  const char *arg = argv[*i];
  size_t n = strlen(name);
  if (strncmp(arg, name, n) != 0) return 0;
  if (arg[n] == '=') {
    *value = arg + n + 1;
    return 1;
  }
  if (arg[n] != '\0') return 0;
  if (*i + 1 >= argc) {
    cli_usage_error(cmd, "%s needs a value", name);
    return -1;
  }
  *value = argv[++*i];
  return 1;
}

int cli_flag(const char *cmd, const char *arg, const char *name) {
  size_t n = strlen(name);
  if (strncmp(arg, name, n) != 0) return 0;
  if (arg[n] == '\0') return 1;
  if (arg[n] == '=') {
    cli_usage_error(cmd, "%s takes no value", name);
    return -1;
  }
  return 0;
}

int cli_parse_int64(const char *cmd, const char *option, const char *text, int64_t min,
                    int64_t max, int64_t *out) {
  char *end;
  errno = 0;
  long long v = strtoll(text, &end, 10);
  if (!*text || *end || errno == ERANGE) {
    cli_usage_error(cmd, "%s: expected an integer, got \"%s\"", option, text);
    return -1;
  }
  if (v < min || v > max) {
    if (max == INT64_MAX)
      cli_usage_error(cmd, "%s: expected an integer >= %lld, got %lld", option, (long long)min, v);
    else
      cli_usage_error(cmd, "%s: expected an integer in [%lld, %lld], got %lld", option,
                      (long long)min, (long long)max, v);
    return -1;
  }
  *out = v;
  return 0;
}

int cli_parse_uint64(const char *cmd, const char *option, const char *text, uint64_t *out) {
  char *end;
  errno = 0;
  unsigned long long v = strtoull(text, &end, 10);
  if (!*text || *end || errno == ERANGE || text[0] == '-' || v == UINT64_MAX) {
    cli_usage_error(cmd, "%s: expected a non-negative integer below 2^64-1, got \"%s\"", option,
                    text);
    return -1;
  }
  *out = v;
  return 0;
}

int cli_parse_double(const char *cmd, const char *option, const char *text, double min,
                     double max, int max_open, double *out) {
  char *end;
  errno = 0;
  double v = strtod(text, &end);
  if (!*text || *end || errno == ERANGE || !isfinite(v)) {
    cli_usage_error(cmd, "%s: expected a number, got \"%s\"", option, text);
    return -1;
  }
  if (v < min || v > max || (max_open && v >= max)) {
    cli_usage_error(cmd, "%s: expected a number in [%g, %g%s, got %s", option, min, max,
                    max_open ? ")" : "]", text);
    return -1;
  }
  *out = v;
  return 0;
}

int cli_check_output_path(const char *cmd, const char *option, const char *path) {
  if (!*path) {
    cli_usage_error(cmd, "%s: empty file name", option);
    return -1;
  }
  struct stat st;
  if (stat(path, &st) == 0 && S_ISDIR(st.st_mode)) {
    cli_usage_error(cmd, "%s %s: is a directory (expected a file name)", option, path);
    return -1;
  }
  const char *slash = strrchr(path, '/');
  char *dir = slash ? strndup(path, slash == path ? 1 : (size_t)(slash - path)) : strdup(".");
  if (!dir) {
    cli_error(cmd, "out of memory");
    return -1;
  }
  int rc = 0;
  if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
    cli_error(cmd, "%s %s: the folder %s does not exist", option, path, dir);
    rc = -1;
  } else if (access(dir, W_OK | X_OK) != 0) {
    cli_error(cmd, "%s %s: the folder %s is not writable: %s", option, path, dir, strerror(errno));
    rc = -1;
  }
  free(dir);
  return rc;
}

int cli_parse_dataset(const char *cmd, const char *flag, const char *spec, char *name,
                      size_t cap, const char **split, int *text) {
  const char *colon = strchr(spec, ':');
  *split = colon ? colon + 1 : "test";
  size_t n = colon ? (size_t)(colon - spec) : strlen(spec);
  if (n == 0 || n >= cap)
    return cli_usage_error(cmd, "%s %s: expected a .npy, a .csv or DATASET[:split]", flag, spec);
  memcpy(name, spec, n);
  name[n] = '\0';
  if (strcmp(*split, "train") && strcmp(*split, "test"))
    return cli_usage_error(cmd, "%s %s: the split is train or test, not \"%s\"", flag, spec,
                           *split);
  *text = !strcmp(name, "imdb") || !strcmp(name, "reuters");
  if (!*text && strcmp(name, "california_housing") && strcmp(name, "fashion_mnist"))
    return cli_usage_error(cmd,
                           "%s %s: not a .npy or .csv file, nor a data set (imdb, reuters, "
                           "california_housing, fashion_mnist)",
                           flag, spec);
  return CLI_EXIT_OK;
}

int cli_ends_with(const char *s, const char *suffix) {
  size_t n = strlen(s), k = strlen(suffix);
  if (n < k) return 0;
  for (size_t i = 0; i < k; i++)
    if (tolower((unsigned char)s[n - k + i]) != tolower((unsigned char)suffix[i])) return 0;
  return 1;
}

char *cli_labels_path(const char *xpath) {
  const char *base = strrchr(xpath, '/');
  base = base ? base + 1 : xpath;
  const char *x = strchr(base, 'x');
  if (!x) return NULL;
  char *p = strdup(xpath);
  if (p) p[x - xpath] = 'y';
  return p;
}

/* kiln summary — the Keras-style layer table of a JSON spec or a saved model. */
#include <ctype.h>
#include <string.h>

#include "cli.h"
#include "kiln/train.h"

static const char *const CMD = "summary";

void cmd_summary_usage(FILE *out) {
  fprintf(out,
          "Usage: kiln summary SPEC.json|MODEL.kiln [--input-features N]\n"
          "\n"
          "Prints the layers, output shapes and parameter counts of a model: built from a\n"
          "JSON spec, or loaded from a checkpoint written by `kiln train --output`.\n"
          "\n"
          "  --input-features N   the input width, for a spec whose Input has no shape\n");
}

/* A JSON spec starts with '{' (after blanks or a byte order mark); a checkpoint with
 * its magic bytes. 1: spec, 0: not, -1: unreadable. */
static int looks_like_json(const char *path) {
  FILE *f = fopen(path, "rb");
  if (!f) return -1;
  int c;
  do c = fgetc(f);
  while (c != EOF && (isspace(c) || c == 0xEF || c == 0xBB || c == 0xBF));
  fclose(f);
  return c == '{';
}

int cmd_summary(int argc, char **argv) {
  const char *path = NULL;
  int64_t features = 0;
  for (int i = 1; i < argc; i++) {
    const char *v;
    int r;
    if (argv[i][0] != '-' || argv[i][1] == '\0') {
      if (path) return cli_usage_error(CMD, "unexpected argument \"%s\"", argv[i]);
      path = argv[i];
    } else if ((r = cli_option(CMD, argc, argv, &i, "--input-features", &v)) != 0) {
      if (r < 0 || cli_parse_int64(CMD, "--input-features", v, 1, INT64_MAX, &features))
        return CLI_EXIT_ERROR;
    } else {
      return cli_usage_error(CMD, "unknown option \"%s\"", argv[i]);
    }
  }
  if (!path) return cli_usage_error(CMD, "missing SPEC.json or MODEL.kiln");

  kiln_error err = {0};
  kiln_model *m = NULL;
  size_t n = strlen(path);
  int json = looks_like_json(path) == 1 || (n >= 5 && strcmp(path + n - 5, ".json") == 0);
  if (json) {
    kiln_spec *spec = NULL;
    if (kiln_spec_load(path, &spec, &err)) return cli_kiln_error(CMD, &err);
    kiln_status s = kiln_spec_build(spec, features, KILN_SEED_FROM_SPEC, &m, &err);
    kiln_spec_free(spec);
    if (s) return cli_kiln_error(CMD, &err);
  } else {
    /* Also reports a missing file, with kiln_model_load's message. */
    if (kiln_model_load(path, &m, &err)) return cli_kiln_error(CMD, &err);
    int64_t width = kiln_model_input_features(m);
    if (features && features != width) {
      kiln_model_free(m);
      return cli_usage_error(CMD, "--input-features %lld: %s takes %lld features",
                             (long long)features, path, (long long)width);
    }
  }
  kiln_model_summary(m, stdout);
  kiln_model_free(m);
  if (fflush(stdout) != 0) return cli_error(CMD, "cannot write to stdout");
  return CLI_EXIT_OK;
}

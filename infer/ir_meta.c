/* kiln runtime — reading what kiln's exporter records in metadata_props. */
#include <math.h>
#include <stdlib.h>

#include "kiln/ir.h"

/* A JSON array of exactly n finite numbers ("[0.5, 1e3]") into a new array; NULL otherwise. */
static float *parse_floats(const char *text, int64_t n) {
  if (!text || n <= 0) return NULL;
  const char *p = text;
  while (*p == ' ' || *p == '\n' || *p == '\t' || *p == '\r') p++;
  if (*p++ != '[') return NULL;
  float *v = malloc((size_t)n * sizeof *v);
  if (!v) return NULL;
  for (int64_t i = 0; i < n; i++) {
    char *end;
    double d = strtod(p, &end);
    if (end == p || !isfinite(d)) goto bad;
    v[i] = (float)d;
    p = end;
    while (*p == ' ' || *p == '\n' || *p == '\t' || *p == '\r') p++;
    if (*p != (i + 1 < n ? ',' : ']')) goto bad;
    p++;
  }
  return v;
bad:
  free(v);
  return NULL;
}

kiln_status kiln_ir_input_standardization(const kiln_ir_graph *g, int64_t features, float **mean,
                                          float **std, kiln_error *err) {
  *mean = *std = NULL;
  const char *mt = kiln_ir_get_meta(g, "kiln.input_mean");
  const char *sd = kiln_ir_get_meta(g, "kiln.input_std");
  if (!mt && !sd) return KILN_OK;
  float *m = parse_floats(mt, features), *s = parse_floats(sd, features);
  if (!m || !s) {
    free(m);
    free(s);
    return kiln_error_set(err, KILN_E_FORMAT,
                          "metadata kiln.input_mean/kiln.input_std: expected two JSON arrays of "
                          "%lld finite numbers (one per input feature)", (long long)features);
  }
  for (int64_t c = 0; c < features; c++)
    if (s[c] == 0.0f) s[c] = 1.0f;
  *mean = m;
  *std = s;
  return KILN_OK;
}

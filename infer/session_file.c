/* kiln runtime — a session straight from a .onnx file. Kept apart from session.c so
 * programs that build graphs in memory do not link the ONNX reader. */
#include "kiln/infer.h"

kiln_status kiln_session_create_from_file(const char *path, const kiln_session_options *opt,
                                          kiln_session **out, kiln_error *err) {
  kiln_ir_graph *g = NULL;
  kiln_status st = kiln_onnx_read_file(path, &g, err);
  if (st) return st;
  st = kiln_session_create(g, opt, out, err);
  if (st) kiln_error_prefix(err, "%s: ", path);
  kiln_ir_free(g);
  return st;
}


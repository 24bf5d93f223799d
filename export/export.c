/* kiln export — lower + write: a trained model to a .onnx file in one call. Kept
 * apart from lower.c so a program that only lowers does not link the writer. */
#include "kiln/export.h"

kiln_status kiln_model_export(const kiln_model *m, const kiln_export_options *opt, const char *path,
                              kiln_error *err) {
  kiln_ir_graph *g = NULL;
  kiln_status s = kiln_model_lower(m, opt, &g, err);
  if (s) return s;
  s = kiln_onnx_write_file(g, path, err);
  kiln_ir_free(g);
  return s;
}

/* kiln quantize — the per-layer report as text (the library never prints on its own;
 * the caller names the stream). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kiln/quantize.h"

static void emit(FILE *f, const kiln_quant_report *r) {
  fprintf(f, "quantization: %s, activations %s", r->format, r->method);
  if (r->calibration_rows) fprintf(f, ", %lld calibration rows", (long long)r->calibration_rows);
  fprintf(f, "\n%-20s %-7s %-14s %8s %-21s %-18s %8s %10s %10s\n", "node", "op", "form", "in x out",
          "weight scale min/max", "act scale / zp", "sparsity", "bytes", "-> bytes");
  for (int i = 0; i < r->n_layers; i++) {
    const kiln_quant_layer *L = &r->layers[i];
    char dims[48], ws[48] = "-", as[48] = "-";
    snprintf(dims, sizeof dims, "%lldx%lld", (long long)L->in_features, (long long)L->out_features);
    if (L->quantized) snprintf(ws, sizeof ws, "%.3g/%.3g", L->w_scale_min, L->w_scale_max);
    if (L->quantized && L->x_scale > 0)
      snprintf(as, sizeof as, "%.4g / %d", L->x_scale, L->x_zero_point);
    else if (L->quantized) snprintf(as, sizeof as, "run time");
    fprintf(f, "%-20s %-7s %-14s %8s %-21s %-18s %7.1f%% %10lld %10lld\n", L->node, L->op, L->form,
            dims, ws, as, 100.0 * L->sparsity, (long long)L->bytes_before,
            (long long)L->bytes_after);
    if (L->bias_int32) fprintf(f, "  %s: bias int32 at x_scale * w_scale\n", L->node);
    if (L->y_scale > 0)
      fprintf(f, "  %s: output scale %.4g, zero point %d\n", L->node, L->y_scale, L->y_zero_point);
    if (L->note[0]) fprintf(f, "  %s: %s\n", L->node, L->note);
  }
  fprintf(f, "initializers: %lld -> %lld bytes (%.3f)\n", (long long)r->bytes_before,
          (long long)r->bytes_after,
          r->bytes_before ? (double)r->bytes_after / (double)r->bytes_before : 0.0);
  if (r->file_bytes_before > 0)
    fprintf(f, "file: %lld -> %lld bytes (%.3f)\n", (long long)r->file_bytes_before,
            (long long)r->file_bytes_after,
            (double)r->file_bytes_after / (double)r->file_bytes_before);
  if (r->n_float) fprintf(f, "kept float:\n");
  for (int i = 0; i < r->n_float; i++)
    fprintf(f, "  %s (%s): %s\n", r->kept_float[i].node, r->kept_float[i].op,
            r->kept_float[i].reason);
}

kiln_status kiln_quant_report_print(const kiln_quant_report *r, FILE *out, kiln_error *err) {
  if (!r || !out) return kiln_error_set(err, KILN_E_INVALID, "report print: NULL argument");
  emit(out, r);
  if (ferror(out)) return kiln_error_set(err, KILN_E_IO, "report print: write failed");
  return KILN_OK;
}

char *kiln_quant_report_format(const kiln_quant_report *r) {
  char *buf = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&buf, &len);
  if (!f) return NULL;
  emit(f, r);
  if (fclose(f) != 0) {
    free(buf);
    return NULL;
  }
  return buf;
}

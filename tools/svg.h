/* kiln command — a tiny SVG writer for `kiln plot` and `kiln plot-model`: shapes and
 * text written straight to a FILE*, text escaped for XML. No state beyond the FILE*;
 * write errors surface when the caller commits the file (ferror). */
#ifndef KILN_TOOLS_SVG_H
#define KILN_TOOLS_SVG_H

#include <stddef.h>
#include <stdio.h>

/* The XML prolog and <svg> root of a width x height picture with a white background. */
void svg_begin(FILE *f, double width, double height);
void svg_end(FILE *f);

/* Writes text with & < > " ' escaped; control characters and bytes that are not
 * UTF-8 become '?', so any layer or column name gives well-formed XML. */
void svg_escape(FILE *f, const char *text);
/* Characters (UTF-8 code points) in text: what box widths are computed from. */
size_t svg_text_length(const char *text);
/* Width of text in the monospace font at font_size (0.6 em a character). */
double svg_text_width(const char *text, double font_size);

/* rx: corner radius (0 square). fill/stroke: colors, or "none". */
void svg_rect(FILE *f, double x, double y, double w, double h, double rx, const char *fill,
              const char *stroke);
/* anchor: "start", "middle" or "end"; weight "normal" or "bold"; rotate: degrees about
 * (x, y), 0 for none; mono: the monospace family (widths as svg_text_width). */
void svg_text(FILE *f, double x, double y, double size, const char *anchor, const char *weight,
              double rotate, int mono, const char *text);
/* dash: a stroke-dasharray ("4 3") or NULL for a solid line. */
void svg_line(FILE *f, double x1, double y1, double x2, double y2, const char *stroke,
              double width, const char *dash);
void svg_circle(FILE *f, double cx, double cy, double r, const char *fill);
/* n points; does nothing for n == 0. */
void svg_polyline(FILE *f, const double *xs, const double *ys, size_t n, const char *stroke,
                  double width);
/* d: path data (callers build it from numbers only, so it needs no escaping);
 * marker_end: the id of a <marker> defined with svg_arrow_marker, or NULL. */
void svg_path(FILE *f, const char *d, const char *stroke, double width, const char *marker_end);
/* Defines an arrowhead marker with the given id, for svg_path's marker_end. */
void svg_arrow_marker(FILE *f, const char *id, const char *color);

#endif

/* kiln command — the tiny SVG writer (see svg.h). */
#include "svg.h"

#include <string.h>

void svg_begin(FILE *f, double width, double height) {
  fprintf(f,
          "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
          "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" "
          "viewBox=\"0 0 %.0f %.0f\" font-family=\"DejaVu Sans, Arial, sans-serif\">\n",
          width, height, width, height);
  svg_rect(f, 0, 0, width, height, 0, "white", "none");
}

void svg_end(FILE *f) { fputs("</svg>\n", f); }

/* Length of the UTF-8 sequence starting at s (1..4), or 0 when it is not valid UTF-8
 * (overlong forms, surrogates and code points above U+10FFFF included). */
static int utf8_sequence(const unsigned char *s) {
  unsigned c = s[0];
  if (c < 0x80) return 1;
  int n;
  unsigned cp;
  if (c >= 0xC2 && c <= 0xDF) n = 2, cp = c & 0x1F;
  else if (c >= 0xE0 && c <= 0xEF) n = 3, cp = c & 0x0F;
  else if (c >= 0xF0 && c <= 0xF4) n = 4, cp = c & 0x07;
  else return 0;
  for (int i = 1; i < n; i++) {
    if ((s[i] & 0xC0) != 0x80) return 0;
    cp = (cp << 6) | (s[i] & 0x3F);
  }
  if ((n == 3 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF) || cp == 0xFFFE || cp == 0xFFFF)) ||
      (n == 4 && (cp < 0x10000 || cp > 0x10FFFF)))
    return 0;
  return n;
}

void svg_escape(FILE *f, const char *text) {
  const unsigned char *s = (const unsigned char *)text;
  while (*s) {
    int n = utf8_sequence(s);
    if (n == 0 || (*s < 0x20 && *s != '\t')) {
      fputc('?', f);
      s++;
      continue;
    }
    switch (*s) {
      case '&': fputs("&amp;", f); break;
      case '<': fputs("&lt;", f); break;
      case '>': fputs("&gt;", f); break;
      case '"': fputs("&quot;", f); break;
      case '\'': fputs("&#39;", f); break;
      default: fwrite(s, 1, (size_t)n, f);
    }
    s += n;
  }
}

size_t svg_text_length(const char *text) {
  const unsigned char *s = (const unsigned char *)text;
  size_t len = 0;
  while (*s) {
    int n = utf8_sequence(s);
    s += n ? n : 1;
    len++;
  }
  return len;
}

double svg_text_width(const char *text, double font_size) {
  return 0.6 * font_size * (double)svg_text_length(text);
}

void svg_rect(FILE *f, double x, double y, double w, double h, double rx, const char *fill,
              const char *stroke) {
  fprintf(f, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\"", x, y, w, h);
  if (rx > 0) fprintf(f, " rx=\"%.1f\"", rx);
  fprintf(f, " fill=\"%s\" stroke=\"%s\"/>\n", fill, stroke);
}

void svg_text(FILE *f, double x, double y, double size, const char *anchor, const char *weight,
              double rotate, int mono, const char *text) {
  fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" font-size=\"%.1f\" text-anchor=\"%s\"", x, y, size,
          anchor);
  if (strcmp(weight, "normal") != 0) fprintf(f, " font-weight=\"%s\"", weight);
  if (mono) fputs(" font-family=\"DejaVu Sans Mono, Courier New, monospace\"", f);
  if (rotate != 0) fprintf(f, " transform=\"rotate(%.1f %.1f %.1f)\"", rotate, x, y);
  fputc('>', f);
  svg_escape(f, text);
  fputs("</text>\n", f);
}

void svg_line(FILE *f, double x1, double y1, double x2, double y2, const char *stroke,
              double width, const char *dash) {
  fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\" "
             "stroke-width=\"%.2g\"", x1, y1, x2, y2, stroke, width);
  if (dash) fprintf(f, " stroke-dasharray=\"%s\"", dash);
  fputs("/>\n", f);
}

void svg_circle(FILE *f, double cx, double cy, double r, const char *fill) {
  fprintf(f, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"%.1f\" fill=\"%s\"/>\n", cx, cy, r, fill);
}

void svg_polyline(FILE *f, const double *xs, const double *ys, size_t n, const char *stroke,
                  double width) {
  if (n == 0) return;
  fputs("<polyline points=\"", f);
  for (size_t i = 0; i < n; i++) fprintf(f, "%s%.1f,%.1f", i ? " " : "", xs[i], ys[i]);
  fprintf(f, "\" fill=\"none\" stroke=\"%s\" stroke-width=\"%.2g\" stroke-linejoin=\"round\"/>\n",
          stroke, width);
}

void svg_path(FILE *f, const char *d, const char *stroke, double width, const char *marker_end) {
  fprintf(f, "<path d=\"%s\" fill=\"none\" stroke=\"%s\" stroke-width=\"%.2g\"", d, stroke, width);
  if (marker_end) fprintf(f, " marker-end=\"url(#%s)\"", marker_end);
  fputs("/>\n", f);
}

void svg_arrow_marker(FILE *f, const char *id, const char *color) {
  fprintf(f,
          "<defs><marker id=\"%s\" viewBox=\"0 0 10 10\" refX=\"10\" refY=\"5\" "
          "markerWidth=\"8\" markerHeight=\"8\" orient=\"auto\">"
          "<path d=\"M0,0 L10,5 L0,10 z\" fill=\"%s\"/></marker></defs>\n",
          id, color);
}

/* kiln command — "nice" axis ticks for `kiln plot`: steps of 1, 2 or 5 times a power
 * of ten, the axis widened to whole steps. Pure functions. */
#ifndef KILN_TOOLS_AXIS_TICKS_H
#define KILN_TOOLS_AXIS_TICKS_H

#include <stddef.h>

typedef struct axis_ticks {
  double lo, hi;  /* the axis range: [min, max] with pad added on both sides */
  double step;
  double first;   /* the first tick: the first multiple of step >= lo */
  int count;      /* ticks at first, first + step, ... <= hi */
  int decimals;   /* what a label needs to show the step */
} axis_ticks;

/* About `target` ticks over [min, max] (finite, min <= max; a single value gets a
 * range around it), the axis widened by pad times the span on each side so that no
 * point sits on the frame. integer: steps of at least 1 (epochs). */
axis_ticks axis_ticks_make(double min, double max, double pad, int target, int integer);
/* The label of tick value v ("0.25", "10"; never "-0"). */
void axis_ticks_label(const axis_ticks *t, double v, char *buf, size_t cap);

#endif

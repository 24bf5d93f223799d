/* kiln command — nice axis ticks (see axis_ticks.h). */
#include "axis_ticks.h"

#include <math.h>
#include <stdio.h>

axis_ticks axis_ticks_make(double min, double max, double pad, int target, int integer) {
  axis_ticks t;
  if (target < 2) target = 2;
  if (max <= min) {
    double d = integer ? 1 : (min != 0 ? fabs(min) * 0.1 : 1);
    min -= d;
    max += d;
  }
  double raw = (max - min) / target;
  double mag = pow(10, floor(log10(raw)));
  double norm = raw / mag;
  double step = (norm < 1.5 ? 1 : norm < 3 ? 2 : norm < 7 ? 5 : 10) * mag;
  if (integer && step < 1) step = 1;
  t.step = step;
  t.lo = min - pad * (max - min);
  t.hi = max + pad * (max - min);
  /* A hair of slack so 0.30000000000000004 does not lose a tick. */
  t.first = ceil(t.lo / step - 1e-9) * step;
  t.count = (int)floor((t.hi - t.first) / step + 1e-9) + 1;
  t.decimals = step >= 1 ? 0 : (int)ceil(-log10(step) - 1e-9);
  return t;
}

void axis_ticks_label(const axis_ticks *t, double v, char *buf, size_t cap) {
  if (fabs(v) < t->step * 1e-6) v = 0;
  snprintf(buf, cap, "%.*f", t->decimals, v);
}

#include "kiln/status.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

const char *kiln_status_name(kiln_status status) {
  switch (status) {
    case KILN_OK: return "ok";
    case KILN_E_INVALID: return "invalid argument";
    case KILN_E_IO: return "i/o error";
    case KILN_E_FORMAT: return "malformed input";
    case KILN_E_SHAPE: return "shape mismatch";
    case KILN_E_NOMEM: return "out of memory";
    case KILN_E_UNSUPPORTED: return "unsupported";
    case KILN_E_DIVERGED: return "training diverged";
    case KILN_E_RANGE: return "value out of range";
  }
  return "unknown status";
}

kiln_status kiln_error_set(kiln_error *err, kiln_status status, const char *fmt, ...) {
  if (err) {
    va_list ap;
    va_start(ap, fmt);
    err->status = status;
    vsnprintf(err->message, sizeof err->message, fmt, ap);
    va_end(ap);
  }
  return status;
}

kiln_status kiln_error_prefix(kiln_error *err, const char *fmt, ...) {
  if (!err) return KILN_OK;
  char prefix[KILN_ERROR_MESSAGE_MAX];
  char old[KILN_ERROR_MESSAGE_MAX];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(prefix, sizeof prefix, fmt, ap);
  va_end(ap);
  memcpy(old, err->message, sizeof old);
  /* Copy piecewise so that truncation is explicit, not a format warning. */
  size_t n = strlen(prefix);
  if (n > sizeof err->message - 3) n = sizeof err->message - 3;
  memcpy(err->message, prefix, n);
  memcpy(err->message + n, ": ", 2);
  size_t room = sizeof err->message - n - 3;
  size_t m = strlen(old);
  if (m > room) m = room;
  memcpy(err->message + n + 2, old, m);
  err->message[n + 2 + m] = '\0';
  return err->status;
}

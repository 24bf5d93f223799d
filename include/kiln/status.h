/* kiln — status codes and error messages shared by every library.
 *
 * Every fallible public call returns a kiln_status and, when the caller passes a
 * kiln_error, fills it with a message that says what was wrong, where (file:line,
 * layer name, JSON key, ...) and what was expected. Library calls never print. */
#ifndef KILN_STATUS_H
#define KILN_STATUS_H

#ifdef __cplusplus
extern "C" {
#endif

typedef enum kiln_status {
  KILN_OK = 0,
  KILN_E_INVALID = 1,     /* a bad argument or configuration */
  KILN_E_IO = 2,          /* a file could not be opened, read or written */
  KILN_E_FORMAT = 3,      /* a file's contents are malformed */
  KILN_E_SHAPE = 4,       /* sizes that do not fit together */
  KILN_E_NOMEM = 5,       /* an allocation failed */
  KILN_E_UNSUPPORTED = 6, /* valid, but not something kiln does */
  KILN_E_DIVERGED = 7,    /* training produced a NaN or infinite loss */
  KILN_E_RANGE = 8        /* a value outside its allowed range (label, NaN feature, ...) */
} kiln_status;

#define KILN_ERROR_MESSAGE_MAX 512

/* Caller-owned; zero-initialise or leave untouched, kiln fills it on failure. */
typedef struct kiln_error {
  kiln_status status;
  char message[KILN_ERROR_MESSAGE_MAX];
} kiln_error;

/* A short static name such as "invalid argument". */
const char *kiln_status_name(kiln_status status);

/* Sets err (when not NULL) to status and a printf-style message; returns status,
 * so a failing path can `return kiln_error_set(err, KILN_E_IO, "...", ...);`. */
kiln_status kiln_error_set(kiln_error *err, kiln_status status, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

/* Prefixes an existing message with context ("layer 'dense_1': ..."). */
kiln_status kiln_error_prefix(kiln_error *err, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

#ifdef __cplusplus
}
#endif
#endif

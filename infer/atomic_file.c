#include "kiln/atomic_file.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

kiln_status kiln_atomic_open(kiln_atomic_file *f, const char *path, const char *mode,
                             kiln_error *err) {
  memset(f, 0, sizeof *f);
  size_t n = strlen(path);
  f->path = strdup(path);
  f->tmp = malloc(n + 16);
  if (!f->path || !f->tmp) {
    kiln_atomic_abort(f);
    return kiln_error_set(err, KILN_E_NOMEM, "%s: out of memory", path);
  }
  snprintf(f->tmp, n + 16, "%s.tmpXXXXXX", path);
  int fd = mkstemp(f->tmp);
  if (fd < 0) {
    int e = errno;
    free(f->tmp);
    f->tmp = NULL;
    kiln_atomic_abort(f);
    return kiln_error_set(err, KILN_E_IO, "%s: cannot create a file there (%s)", path,
                          strerror(e));
  }
  fchmod(fd, 0644);
  f->fp = fdopen(fd, mode);
  if (!f->fp) {
    close(fd);
    kiln_atomic_abort(f);
    return kiln_error_set(err, KILN_E_IO, "%s: cannot open for writing", path);
  }
  return KILN_OK;
}

kiln_status kiln_atomic_commit(kiln_atomic_file *f, kiln_error *err) {
  int bad = ferror(f->fp) || fflush(f->fp) != 0 || fsync(fileno(f->fp)) != 0;
  int e = errno;
  bad |= fclose(f->fp) != 0;
  f->fp = NULL;
  if (bad || rename(f->tmp, f->path) != 0) {
    if (!bad) e = errno;
    kiln_status s = kiln_error_set(err, KILN_E_IO, "%s: write failed (%s); nothing was written",
                                   f->path, strerror(e));
    kiln_atomic_abort(f);
    return s;
  }
  free(f->tmp);
  free(f->path);
  f->tmp = f->path = NULL;
  return KILN_OK;
}

void kiln_atomic_abort(kiln_atomic_file *f) {
  if (f->fp) fclose(f->fp);
  if (f->tmp) unlink(f->tmp);
  free(f->tmp);
  free(f->path);
  memset(f, 0, sizeof *f);
}

kiln_status kiln_atomic_write(const char *path, const void *data, size_t size, kiln_error *err) {
  kiln_atomic_file f;
  kiln_status s = kiln_atomic_open(&f, path, "wb", err);
  if (s) return s;
  if (size && fwrite(data, 1, size, f.fp) != size) {
    kiln_atomic_abort(&f);
    return kiln_error_set(err, KILN_E_IO, "%s: write failed; nothing was written", path);
  }
  return kiln_atomic_commit(&f, err);
}

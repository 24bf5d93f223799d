/* kiln trainer — Fashion-MNIST from gzip'd IDX files (Debian's dataset-fashion-mnist). */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif

#include "data_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>

#define FASHION_SYSTEM_DIR "/usr/share/datasets/fashion-mnist"
#define IDX_SIDE 28
#define IDX_CLASSES 10
#define IDX_CHUNK 65536

typedef struct idx_file {
  const char *path;
  gzFile gz;
  uint32_t count; /* first dimension */
  int64_t pos;    /* uncompressed bytes read so far */
} idx_file;

/* Reads up to n bytes (fewer only at the end of the data) into buf, *got of them. */
static kiln_status idx_read(idx_file *f, unsigned char *buf, int64_t n, int64_t *got,
                            kiln_error *err) {
  int64_t at = 0;
  while (at < n) {
    int64_t want = n - at > IDX_CHUNK ? IDX_CHUNK : n - at;
    int k = gzread(f->gz, buf + at, (unsigned)want);
    int zerr = Z_OK;
    const char *msg = k <= 0 ? gzerror(f->gz, &zerr) : NULL;
    if (k < 0 || zerr != Z_OK)
      return kiln_error_set(err, zerr == Z_ERRNO ? KILN_E_IO : KILN_E_FORMAT,
                            "%s: corrupt or truncated gzip data after %lld uncompressed bytes: %s",
                            f->path, (long long)(f->pos + at),
                            zerr == Z_ERRNO ? strerror(errno) : kiln_data_strip_path(msg, f->path));
    if (k == 0) break;
    at += k;
  }
  f->pos += at;
  *got = at;
  return KILN_OK;
}

static uint32_t be32(const unsigned char *p) {
  return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

/* Opens an IDX file and checks its magic (0x000008NN, unsigned bytes, ndim dims). */
static kiln_status idx_open(idx_file *f, const char *path, int ndim, uint32_t *dims,
                            kiln_error *err) {
  f->path = path;
  errno = 0;
  f->gz = gzopen(path, "rb");
  if (!f->gz)
    return kiln_error_set(err, KILN_E_IO, "cannot open '%s': %s", path,
                          errno ? strerror(errno) : "out of memory");
  gzbuffer(f->gz, 1 << 17);
  unsigned char h[16];
  int64_t want = 4 + 4 * (int64_t)ndim;
  int64_t got;
  kiln_status s = idx_read(f, h, want, &got, err);
  if (s) return s;
  if (got < want)
    return kiln_error_set(err, KILN_E_FORMAT, "%s: truncated IDX header: %lld of %lld bytes", path,
                          (long long)got, (long long)want);
  uint32_t magic = be32(h), expect = 0x800u | (uint32_t)ndim;
  if (magic != expect)
    return kiln_error_set(err, KILN_E_FORMAT,
                          "%s: IDX magic number 0x%08x; expected 0x%08x (unsigned bytes, %d "
                          "dimension%s: %s)",
                          path, (unsigned)magic, (unsigned)expect, ndim, ndim > 1 ? "s" : "",
                          ndim == 3 ? "an images file" : "a labels file");
  for (int i = 0; i < ndim; i++) dims[i] = be32(h + 4 + 4 * i);
  f->count = dims[0];
  return KILN_OK;
}

/* After the payload: no trailing bytes, and the gzip trailer intact. */
static kiln_status idx_finish(idx_file *f, int64_t payload, kiln_error *err) {
  unsigned char extra;
  int64_t got;
  kiln_status s = idx_read(f, &extra, 1, &got, err);
  if (s) return s;
  if (got > 0)
    return kiln_error_set(err, KILN_E_FORMAT,
                          "%s: trailing data after the %lld bytes that the IDX header announces",
                          f->path, (long long)payload);
  return KILN_OK;
}

static kiln_status fashion_split(const char *dir, const char *prefix, kiln_dataset *out,
                                 kiln_error *err) {
  char ipath[KILN_DATA_PATH_MAX], lpath[KILN_DATA_PATH_MAX], name[64];
  memset(out, 0, sizeof *out);
  snprintf(name, sizeof name, "%s-images-idx3-ubyte.gz", prefix);
  kiln_status s = kiln_data_path(ipath, dir, name, NULL, err);
  if (s) return s;
  snprintf(name, sizeof name, "%s-labels-idx1-ubyte.gz", prefix);
  s = kiln_data_path(lpath, dir, name, NULL, err);
  if (s) return s;

  idx_file img = {0}, lab = {0};
  unsigned char *buf = NULL;
  uint32_t idims[3], ldims[1];
  s = idx_open(&lab, lpath, 1, ldims, err);
  if (!s) s = idx_open(&img, ipath, 3, idims, err);
  if (s) goto done;
  if (idims[1] != IDX_SIDE || idims[2] != IDX_SIDE) {
    s = kiln_error_set(err, KILN_E_FORMAT, "%s: images are %ux%u pixels; expected %dx%d", ipath,
                       (unsigned)idims[1], (unsigned)idims[2], IDX_SIDE, IDX_SIDE);
    goto done;
  }
  if (img.count != lab.count) {
    s = kiln_error_set(err, KILN_E_SHAPE, "%s holds %u images but %s holds %u labels", ipath,
                       (unsigned)img.count, lpath, (unsigned)lab.count);
    goto done;
  }
  int64_t n = img.count;
  const int64_t pixels = IDX_SIDE * IDX_SIDE;
  s = kiln_matrix_alloc(&out->y, n, 1, err);
  if (!s) s = kiln_matrix_alloc(&out->x, n, pixels, err);
  if (s) goto done;
  buf = malloc(IDX_CHUNK);
  if (!buf) {
    s = kiln_error_set(err, KILN_E_NOMEM, "%s: out of memory", ipath);
    goto done;
  }

  for (int64_t at = 0; at < n;) {
    int64_t want = n - at > IDX_CHUNK ? IDX_CHUNK : n - at;
    int64_t got;
    if ((s = idx_read(&lab, buf, want, &got, err))) goto done;
    for (int64_t i = 0; i < got; i++) {
      if (buf[i] >= IDX_CLASSES) {
        s = kiln_error_set(err, KILN_E_RANGE, "%s: item %lld: label %u outside [0, %d)", lpath,
                           (long long)(at + i), (unsigned)buf[i], IDX_CLASSES);
        goto done;
      }
      out->y.values[at + i] = (float)buf[i];
    }
    at += got;
    if (got < want) {
      s = kiln_error_set(err, KILN_E_FORMAT,
                         "%s: truncated: the header announces %lld labels, the file holds %lld",
                         lpath, (long long)n, (long long)at);
      goto done;
    }
  }
  if ((s = idx_finish(&lab, n, err))) goto done;

  int64_t total = n * pixels;
  const float scale = 1.0f / 255.0f;
  for (int64_t at = 0; at < total;) {
    int64_t want = total - at > IDX_CHUNK ? IDX_CHUNK : total - at;
    int64_t got;
    if ((s = idx_read(&img, buf, want, &got, err))) goto done;
    float *o = out->x.values + at;
    for (int64_t i = 0; i < got; i++) o[i] = (float)buf[i] * scale;
    at += got;
    if (got < want) {
      s = kiln_error_set(err, KILN_E_FORMAT,
                         "%s: truncated: the header announces %lld images of %lld bytes "
                         "(%lld bytes), the file holds %lld",
                         ipath, (long long)n, (long long)pixels, (long long)total, (long long)at);
      goto done;
    }
  }
  if ((s = idx_finish(&img, total, err))) goto done;
  out->num_classes = IDX_CLASSES;

done:
  free(buf);
  if (img.gz) gzclose(img.gz);
  if (lab.gz) gzclose(lab.gz);
  if (s) kiln_dataset_free(out);
  return s;
}

static int is_dir(const char *path) {
  struct stat st;
  return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

kiln_status kiln_fashion_mnist_load(const kiln_load_options *opt, kiln_dataset *train,
                                    kiln_dataset *test, kiln_error *err) {
  char local[KILN_DATA_PATH_MAX];
  const char *dir = FASHION_SYSTEM_DIR;
  kiln_status s = kiln_data_path(local, kiln_data_dir(opt), "fashion-mnist", NULL, err);
  if (s) return s;
  if (is_dir(local))
    dir = local;
  else if (!is_dir(FASHION_SYSTEM_DIR))
    return kiln_error_set(err, KILN_E_IO,
                          "Fashion-MNIST not found: neither '%s' nor '%s' exists (install "
                          "Debian's dataset-fashion-mnist package)",
                          local, FASHION_SYSTEM_DIR);
  s = fashion_split(dir, "train", train, err);
  if (!s && test) {
    s = fashion_split(dir, "t10k", test, err);
    if (s) kiln_dataset_free(train);
  }
  return s;
}

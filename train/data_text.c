/* kiln trainer — the IMDB and Reuters token-id files ("label<TAB>i1 i2 ...", gzip).
 *
 * The file is inflated in large blocks and parsed by a byte state machine that carries
 * its state across blocks, so lines of any length work, and the arrays grow by
 * doubling (no allocation per line or per token). */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif

#include "data_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#define TEXT_BLOCK (1 << 18)

typedef struct text_arrays {
  int64_t *offsets;
  float *labels;
  int64_t count, row_cap;
  int32_t *tokens;
  int64_t ntok, tok_cap;
} text_arrays;

static int grow_rows(text_arrays *a) {
  int64_t cap = a->row_cap ? a->row_cap * 2 : 4096;
  int64_t *o = realloc(a->offsets, (size_t)(cap + 1) * sizeof(int64_t));
  if (o) a->offsets = o;
  float *l = realloc(a->labels, (size_t)cap * sizeof(float));
  if (l) a->labels = l;
  if (!o || !l) return 0;
  a->row_cap = cap;
  return 1;
}

static int grow_tokens(text_arrays *a) {
  int64_t cap = a->tok_cap ? a->tok_cap * 2 : (1 << 20);
  int32_t *t = realloc(a->tokens, (size_t)cap * sizeof(int32_t));
  if (!t) return 0;
  a->tokens = t;
  a->tok_cap = cap;
  return 1;
}

const char *kiln_data_strip_path(const char *msg, const char *path) {
  size_t n = strlen(path);
  if (msg && strncmp(msg, path, n) == 0 && msg[n] == ':' && msg[n + 1] == ' ') return msg + n + 2;
  return msg ? msg : "";
}

static const char *byte_name(int c, char *buf, size_t n) {
  if (c == '\n') return "the end of the line";
  if (c == '\t') return "a TAB";
  if (c == ' ') return "a space";
  if (c == '\r') return "a carriage return";
  if (c >= 33 && c < 127)
    snprintf(buf, n, "'%c'", c);
  else
    snprintf(buf, n, "byte 0x%02x", c);
  return buf;
}

/* Parser states. */
enum { ST_LABEL, ST_AFTER_TAB, ST_AFTER_SPACE, ST_TOKEN, ST_CR };

kiln_status kiln_text_read(const char *path, int32_t num_words, int32_t num_classes,
                           kiln_dataset *out, kiln_error *err) {
  memset(out, 0, sizeof *out);
  if (num_words < 0)
    return kiln_error_set(err, KILN_E_INVALID, "%s: num_words %d is negative", path,
                          (int)num_words);
  errno = 0;
  gzFile gz = gzopen(path, "rb");
  if (!gz)
    return kiln_error_set(err, KILN_E_IO, "cannot open '%s': %s", path,
                          errno ? strerror(errno) : "out of memory");
  gzbuffer(gz, TEXT_BLOCK);
  unsigned char *buf = malloc(TEXT_BLOCK);
  text_arrays a;
  memset(&a, 0, sizeof a);
  kiln_status s = KILN_OK;
  if (!buf || !grow_rows(&a) || !grow_tokens(&a)) {
    s = kiln_error_set(err, KILN_E_NOMEM, "%s: out of memory", path);
    goto done;
  }
  a.offsets[0] = 0;

  int state = ST_LABEL;
  int64_t line = 1, col = 0; /* col: 1-based byte column of the current byte */
  uint32_t val = 0;
  int digits = 0;
  const uint32_t limit = 0x7fffffffu;
  char nb[16];
  for (;;) {
    int got = gzread(gz, buf, TEXT_BLOCK);
    if (got < 0) {
      int zerr;
      const char *msg = gzerror(gz, &zerr);
      s = kiln_error_set(err, zerr == Z_ERRNO ? KILN_E_IO : KILN_E_FORMAT,
                         "%s:%lld: corrupt or truncated gzip data: %s", path, (long long)line,
                         zerr == Z_ERRNO ? strerror(errno) : kiln_data_strip_path(msg, path));
      goto done;
    }
    if (got == 0) {
      int zerr;
      const char *msg = gzerror(gz, &zerr);
      if (zerr != Z_OK) {
        s = kiln_error_set(err, KILN_E_FORMAT, "%s:%lld: corrupt or truncated gzip data: %s", path,
                           (long long)line, kiln_data_strip_path(msg, path));
        goto done;
      }
      break;
    }
    for (int i = 0; i < got; i++) {
      int c = buf[i];
      col++;
      unsigned d = (unsigned)(c - '0');
      switch (state) {
        case ST_TOKEN:
          if (d < 10) {
            if (val > (limit - d) / 10) goto too_big;
            val = val * 10 + d;
            digits++;
            continue;
          }
          if (a.ntok == a.tok_cap && !grow_tokens(&a)) goto nomem;
          a.tokens[a.ntok++] = (num_words > 0 && val >= (uint32_t)num_words) ? 2 : (int32_t)val;
          if (c == ' ') {
            state = ST_AFTER_SPACE;
            continue;
          }
          if (c == '\n') goto end_line;
          if (c == '\r') {
            state = ST_CR;
            continue;
          }
          s = kiln_error_set(err, KILN_E_FORMAT,
                             "%s:%lld:%lld: expected a digit, a space or the end of the line "
                             "in the token ids, found %s",
                             path, (long long)line, (long long)col, byte_name(c, nb, sizeof nb));
          goto done;
        case ST_AFTER_SPACE:
        case ST_AFTER_TAB:
          if (d < 10) {
            val = d;
            digits = 1;
            state = ST_TOKEN;
            continue;
          }
          if (state == ST_AFTER_TAB && c == '\n') goto end_line; /* no tokens */
          if (state == ST_AFTER_TAB && c == '\r') {
            state = ST_CR;
            continue;
          }
          s = kiln_error_set(err, KILN_E_FORMAT,
                             "%s:%lld:%lld: expected a token id (a decimal integer) after %s, "
                             "found %s",
                             path, (long long)line, (long long)col,
                             state == ST_AFTER_TAB ? "the TAB" : "a space",
                             byte_name(c, nb, sizeof nb));
          goto done;
        case ST_LABEL:
          if (d < 10) {
            if (val > (limit - d) / 10) goto too_big;
            val = val * 10 + d;
            digits++;
            continue;
          }
          if (c == '\t' && digits) {
            if (num_classes > 0 && val >= (uint32_t)num_classes) {
              s = kiln_error_set(err, KILN_E_RANGE, "%s:%lld: label %u outside [0, %d)", path,
                                 (long long)line, (unsigned)val, (int)num_classes);
              goto done;
            }
            if (a.count == a.row_cap && !grow_rows(&a)) goto nomem;
            a.labels[a.count] = (float)val;
            state = ST_AFTER_TAB;
            continue;
          }
          s = kiln_error_set(err, KILN_E_FORMAT, "%s:%lld:%lld: expected %s, found %s", path,
                             (long long)line, (long long)col,
                             digits ? "a digit or the TAB after the label"
                                    : "a label (a decimal integer) at the start of the line",
                             byte_name(c, nb, sizeof nb));
          goto done;
        case ST_CR:
          if (c == '\n') goto end_line;
          s = kiln_error_set(err, KILN_E_FORMAT,
                             "%s:%lld:%lld: expected the end of the line after a carriage "
                             "return, found %s",
                             path, (long long)line, (long long)col, byte_name(c, nb, sizeof nb));
          goto done;
      }
      continue;
    end_line:
      a.offsets[++a.count] = a.ntok;
      line++;
      col = 0;
      val = 0;
      digits = 0;
      state = ST_LABEL;
    }
  }
  /* End of file: accept a last line without its newline. */
  if (state == ST_TOKEN) {
    if (a.ntok == a.tok_cap && !grow_tokens(&a)) goto nomem;
    a.tokens[a.ntok++] = (num_words > 0 && val >= (uint32_t)num_words) ? 2 : (int32_t)val;
    a.offsets[++a.count] = a.ntok;
  } else if (state == ST_AFTER_TAB || state == ST_CR) {
    a.offsets[++a.count] = a.ntok;
  } else if (state == ST_AFTER_SPACE || digits) {
    s = kiln_error_set(
        err, KILN_E_FORMAT, "%s:%lld: the file ends in the middle of a line (%s)", path,
        (long long)line,
        state == ST_AFTER_SPACE ? "after a space" : "after the label, before the TAB");
    goto done;
  }
  if (a.count == 0) {
    s = kiln_error_set(err, KILN_E_FORMAT, "%s: no records; expected lines of label<TAB>ids", path);
    goto done;
  }
  /* Hand the arrays over (shrinking the token array to its size). */
  int32_t *tok = realloc(a.tokens, (size_t)(a.ntok ? a.ntok : 1) * sizeof(int32_t));
  if (tok) a.tokens = tok;
  out->seq.count = a.count;
  out->seq.offsets = a.offsets;
  out->seq.tokens = a.tokens;
  out->y.rows = a.count;
  out->y.cols = 1;
  out->y.values = a.labels;
  out->num_classes = num_classes;
  memset(&a, 0, sizeof a);
  goto done;

too_big:
  s = kiln_error_set(err, KILN_E_FORMAT, "%s:%lld:%lld: number larger than %u", path,
                     (long long)line, (long long)col, (unsigned)limit);
  goto done;
nomem:
  s = kiln_error_set(err, KILN_E_NOMEM, "%s:%lld: out of memory", path, (long long)line);
done:
  free(a.offsets);
  free(a.labels);
  free(a.tokens);
  free(buf);
  gzclose(gz);
  if (s) kiln_dataset_free(out);
  return s;
}

static int32_t max_token(const kiln_sequences *q) {
  int32_t m = -1;
  int64_t n = q->offsets ? q->offsets[q->count] : 0;
  for (int64_t i = 0; i < n; i++)
    if (q->tokens[i] > m) m = q->tokens[i];
  return m;
}

kiln_status kiln_text_dataset_load(const char *name, int32_t num_classes,
                                   const kiln_load_options *opt, kiln_dataset *train,
                                   kiln_dataset *test, kiln_error *err) {
  const char *dir = kiln_data_dir(opt);
  char path[KILN_DATA_PATH_MAX];
  kiln_status s = kiln_data_path(path, dir, name, "train.txt.gz", err);
  if (!s) s = kiln_text_read(path, opt->num_words, num_classes, train, err);
  if (!s && test) {
    s = kiln_data_path(path, dir, name, "test.txt.gz", err);
    if (!s) s = kiln_text_read(path, opt->num_words, num_classes, test, err);
  }
  if (!s && opt->multi_hot) {
    /* Without a num_words limit the width covers every id seen in either split, so
     * train and test get the same columns. */
    int32_t width = opt->num_words;
    if (width == 0) {
      width = max_token(&train->seq) + 1;
      if (test) {
        int32_t w = max_token(&test->seq) + 1;
        if (w > width) width = w;
      }
      if (width < 1) width = 1;
    }
    s = kiln_multi_hot(&train->seq, width, &train->x, err);
    if (!s && test) s = kiln_multi_hot(&test->seq, width, &test->x, err);
    if (s) kiln_error_prefix(err, "%s", name);
  }
  if (s) {
    kiln_dataset_free(train);
    if (test) kiln_dataset_free(test);
  }
  return s;
}

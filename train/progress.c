#include "progress.h"

#include <string.h>
#include <time.h>
#include <unistd.h>

double kiln_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

void kiln_progress_init(kiln_progress *p, FILE *out, int verbose, int epochs) {
  memset(p, 0, sizeof *p);
  p->out = out;
  p->verbose = verbose;
  p->tty = isatty(fileno(out));
  p->epochs = epochs;
}

static void print_logs(FILE *out, const kiln_logs *logs) {
  for (int i = 0; i < logs->n; i++) fprintf(out, " - %s: %.4f", logs->keys[i], logs->values[i]);
}

static void print_time(FILE *out, double seconds, int64_t steps) {
  double per = steps > 0 ? seconds / (double)steps : 0;
  if (per >= 1.0) fprintf(out, " %.0fs %.0fs/step", seconds, per);
  else if (per >= 1e-3) fprintf(out, " %.0fs %.0fms/step", seconds, per * 1e3);
  else fprintf(out, " %.0fs %.0fus/step", seconds, per * 1e6);
}

static void on_epoch_begin(void *ctx, kiln_model *m, int epoch) {
  kiln_progress *p = ctx;
  p->epoch = epoch;
  p->epoch_start = kiln_now();
  p->last_draw = 0;
  if (p->verbose == 1 && p->tty) fprintf(p->out, "Epoch %d/%d\n", epoch + 1, p->epochs);
}

static void draw_bar(kiln_progress *p, int64_t done, int64_t total, const kiln_logs *logs,
                     int final) {
  int width = 20, filled = total ? (int)(done * width / total) : width;
  int digits = snprintf(NULL, 0, "%lld", (long long)total);
  fprintf(p->out, "\r%*lld/%lld [", digits, (long long)done, (long long)total);
  for (int i = 0; i < width; i++)
    fputc(i < filled ? '=' : (i == filled && !final ? '>' : '.'), p->out);
  fputc(']', p->out);
  double elapsed = kiln_now() - p->epoch_start;
  if (final) print_time(p->out, elapsed, total);
  else fprintf(p->out, " - ETA: %.0fs", done ? elapsed / (double)done * (double)(total - done) : 0);
  print_logs(p->out, logs);
  fputs("\033[K", p->out); /* clear what a longer previous line left */
  fflush(p->out);
}

static void on_batch_end(void *ctx, kiln_model *m, int64_t batch, int64_t batches,
                         const kiln_logs *logs) {
  kiln_progress *p = ctx;
  if (p->verbose != 1 || !p->tty) return;
  double now = kiln_now();
  if (batch + 1 < batches && now - p->last_draw < 0.05) return;
  p->last_draw = now;
  draw_bar(p, batch + 1, batches, logs, 0);
  p->last_draw = now;
  (void)m;
}

static void on_epoch_end(void *ctx, kiln_model *m, int epoch, const kiln_logs *logs) {
  kiln_progress *p = ctx;
  double elapsed = kiln_now() - p->epoch_start;
  if (p->verbose == 1 && p->tty) {
    fputc('\r', p->out);
    fprintf(p->out, "epoch %d/%d done in %.1fs", epoch + 1, p->epochs, elapsed);
    print_logs(p->out, logs);
    fputs("\033[K\n", p->out);
  } else {
    fprintf(p->out, "Epoch %d/%d - %.1fs", epoch + 1, p->epochs, elapsed);
    print_logs(p->out, logs);
    fputc('\n', p->out);
  }
  fflush(p->out);
  (void)m;
}

void kiln_progress_abort(kiln_progress *p) {
  if (p->verbose == 1 && p->tty) {
    fputc('\n', p->out);
    fflush(p->out);
  }
}

kiln_callback kiln_progress_callback(kiln_progress *p) {
  kiln_callback cb = {0};
  cb.ctx = p;
  cb.on_epoch_begin = on_epoch_begin;
  cb.on_batch_end = on_batch_end;
  cb.on_epoch_end = on_epoch_end;
  return cb;
}

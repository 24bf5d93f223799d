/* kiln trainer — the built-in callbacks (keras.callbacks): EarlyStopping,
 * ModelCheckpoint, LearningRateScheduler, ReduceLROnPlateau, CSVLogger,
 * TerminateOnNaN and the per-batch LossHistory of listing 7.20. Every ctx starts
 * with a cb_header so kiln_callback_free and the accessors know what they hold. */
#include <dirent.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kiln/atomic_file.h"
#include "kiln/callbacks.h"
#include "model_internal.h"

typedef enum cb_kind {
  CB_EARLY_STOPPING = 0x4b43b001,
  CB_CHECKPOINT,
  CB_SCHEDULER,
  CB_REDUCE_LR,
  CB_CSV,
  CB_NAN,
  CB_LOSS_HISTORY
} cb_kind;

typedef struct cb_header {
  cb_kind kind;
  void (*destroy)(void *ctx);
} cb_header;

void kiln_callback_free(kiln_callback *cb) {
  if (!cb) return;
  if (cb->destroy) cb->destroy(cb->ctx);
  memset(cb, 0, sizeof *cb);
}

static void *ctx_of(const kiln_callback *cb, cb_kind kind) {
  const cb_header *h = cb ? cb->ctx : NULL;
  return h && h->kind == kind ? cb->ctx : NULL;
}

/* --- monitoring ------------------------------------------------------------ */

typedef struct monitor {
  char *key;
  int maximize;
} monitor;

static int name_maximizes(const char *key) {
  const char *k = strncmp(key, "val_", 4) == 0 ? key + 4 : key;
  return strstr(k, "acc") || strstr(k, "auc") || strcmp(k, "precision") == 0 ||
         strcmp(k, "recall") == 0 || strcmp(k, "f1_score") == 0;
}

static kiln_status monitor_init(monitor *mo, const char *what, const char *key,
                                const char *mode, kiln_error *err) {
  if (!key) key = "val_loss";
  if (!*key) return kiln_error_set(err, KILN_E_INVALID, "%s: monitor is empty", what);
  if (!mode || strcmp(mode, "auto") == 0) mo->maximize = name_maximizes(key);
  else if (strcmp(mode, "min") == 0) mo->maximize = 0;
  else if (strcmp(mode, "max") == 0) mo->maximize = 1;
  else
    return kiln_error_set(err, KILN_E_INVALID,
                          "%s: unknown mode \"%s\" (expected auto, min or max)", what, mode);
  mo->key = strdup(key);
  if (!mo->key) return kiln_error_set(err, KILN_E_NOMEM, "%s: out of memory", what);
  return KILN_OK;
}

/* The monitored value, or fails fit naming the keys there are. */
static int monitor_value(const monitor *mo, kiln_model *m, const char *what, int epoch,
                         const kiln_logs *logs, double *out) {
  for (int i = 0; i < logs->n; i++)
    if (strcmp(logs->keys[i], mo->key) == 0) {
      *out = logs->values[i];
      return 1;
    }
  char keys[256] = "";
  size_t at = 0;
  for (int i = 0; i < logs->n && at < sizeof keys; i++)
    at += (size_t)snprintf(keys + at, sizeof keys - at, "%s%s", i ? ", " : "", logs->keys[i]);
  kiln_model_fail(m, KILN_E_INVALID,
                  "%s: epoch %d: the monitored key \"%s\" is not in the logs (they hold: %s%s)",
                  what, epoch + 1, mo->key, keys,
                  strncmp(mo->key, "val_", 4) == 0 ? "; val_ keys need validation data" : "");
  return 0;
}

/* current beats best by more than delta (NaN never does). */
static int improves(const monitor *mo, double current, double best, double delta) {
  if (isnan(current)) return 0;
  return mo->maximize ? current - delta > best : current + delta < best;
}

static double worst(const monitor *mo) { return mo->maximize ? -INFINITY : INFINITY; }

/* --- EarlyStopping --------------------------------------------------------- */

typedef struct early_stopping {
  cb_header h;
  monitor mo;
  double min_delta;
  int patience;
  int restore;
  int wait, best_epoch, stopped_epoch, have_weights;
  double best;
  float **weights; /* per Dense layer kernel then bias, per custom layer its weights */
  int n_weights;
} early_stopping;

void kiln_early_stopping_config_init(kiln_early_stopping_config *c) {
  memset(c, 0, sizeof *c);
  c->monitor = "val_loss";
  c->mode = "auto";
}

static void early_destroy(void *ctx) {
  early_stopping *e = ctx;
  for (int i = 0; i < e->n_weights; i++) free(e->weights[i]);
  free(e->weights);
  free(e->mo.key);
  free(e);
}

/* The i-th tensor a snapshot holds: every Dense kernel and bias and every custom layer
 * weight, in layer order. Returns the count when i < 0. */
static int snapshot_tensor(kiln_model *m, int i, float **values, size_t *size) {
  int n = 0;
  for (int l = 0; l < kiln_model_layer_count(m); l++) {
    kiln_layer_info li;
    if (kiln_model_layer(m, l, &li, NULL)) continue;
    if (li.kind == KILN_LAYER_DENSE) {
      for (int j = 0; j < 2; j++, n++)
        if (n == i) {
          *values = j ? li.bias : li.kernel;
          *size = (size_t)(j ? li.out_features : li.in_features * li.out_features);
        }
      continue;
    }
    for (int w = 0; w < kiln_model_weight_count(m, l); w++, n++) {
      kiln_weight_info wi;
      if (n == i && !kiln_model_weight(m, l, w, &wi, NULL)) {
        *values = wi.value;
        *size = (size_t)wi.size;
      }
    }
  }
  return n;
}

/* Copies the model's weights into (to_model = 0) or out of the snapshot. */
static int weights_copy(early_stopping *e, kiln_model *m, int to_model) {
  int n = snapshot_tensor(m, -1, NULL, NULL);
  if (!to_model && e->n_weights != n) {
    for (int i = 0; i < e->n_weights; i++) free(e->weights[i]);
    free(e->weights);
    e->n_weights = 0;
    e->weights = calloc((size_t)(n ? n : 1), sizeof(float *));
    if (!e->weights) return 0;
    e->n_weights = n;
  }
  if (e->n_weights != n) return 0;
  for (int k = 0; k < n; k++) {
    float *values = NULL;
    size_t size = 0;
    snapshot_tensor(m, k, &values, &size);
    if (to_model) {
      memcpy(values, e->weights[k], size * sizeof(float));
      continue;
    }
    if (!e->weights[k] && !(e->weights[k] = malloc(size * sizeof(float)))) return 0;
    memcpy(e->weights[k], values, size * sizeof(float));
  }
  return 1;
}

static void early_train_begin(void *ctx, kiln_model *m) {
  early_stopping *e = ctx;
  e->wait = 0;
  e->best_epoch = -1;
  e->stopped_epoch = -1;
  e->have_weights = 0;
  e->best = worst(&e->mo);
}

static void early_epoch_end(void *ctx, kiln_model *m, int epoch, const kiln_logs *logs) {
  early_stopping *e = ctx;
  double current = NAN;
  if (!monitor_value(&e->mo, m, "EarlyStopping", epoch, logs, &current)) return;
  /* As Keras: the first epoch's weights are the fallback, then every improvement's. */
  int snapshot = e->restore && !e->have_weights;
  e->wait++;
  int better = improves(&e->mo, current, e->best, e->min_delta);
  if (better) {
    e->best = current;
    e->best_epoch = epoch;
    e->wait = 0;
    snapshot = e->restore;
  }
  if (snapshot) {
    if (!weights_copy(e, m, 0)) {
      kiln_model_fail(m, KILN_E_NOMEM, "EarlyStopping: weight snapshot: out of memory");
      return;
    }
    e->have_weights = 1;
  }
  if (better) return;
  if (e->wait >= e->patience && epoch > 0) {
    e->stopped_epoch = epoch;
    kiln_model_stop_training(m);
  }
}

static void early_train_end(void *ctx, kiln_model *m, const kiln_logs *logs) {
  early_stopping *e = ctx;
  if (e->restore && e->have_weights) weights_copy(e, m, 1);
}

kiln_status kiln_early_stopping_create(const kiln_early_stopping_config *c, kiln_callback *out,
                                       kiln_error *err) {
  memset(out, 0, sizeof *out);
  kiln_early_stopping_config d;
  if (!c) {
    kiln_early_stopping_config_init(&d);
    c = &d;
  }
  if (c->patience < 0)
    return kiln_error_set(err, KILN_E_INVALID, "EarlyStopping: patience must be >= 0, got %d",
                          c->patience);
  if (!(c->min_delta >= 0) || !isfinite(c->min_delta))
    return kiln_error_set(err, KILN_E_INVALID,
                          "EarlyStopping: min_delta must be finite and >= 0, got %g",
                          c->min_delta);
  early_stopping *e = calloc(1, sizeof *e);
  if (!e) return kiln_error_set(err, KILN_E_NOMEM, "EarlyStopping: out of memory");
  e->h.kind = CB_EARLY_STOPPING;
  e->h.destroy = early_destroy;
  kiln_status s = monitor_init(&e->mo, "EarlyStopping", c->monitor, c->mode, err);
  if (s) {
    early_destroy(e);
    return s;
  }
  e->min_delta = c->min_delta;
  e->patience = c->patience;
  e->restore = c->restore_best_weights != 0;
  e->best_epoch = e->stopped_epoch = -1;
  out->ctx = e;
  out->destroy = e->h.destroy;
  out->on_train_begin = early_train_begin;
  out->on_epoch_end = early_epoch_end;
  out->on_train_end = early_train_end;
  return KILN_OK;
}

int kiln_early_stopping_stopped_epoch(const kiln_callback *cb) {
  const early_stopping *e = ctx_of(cb, CB_EARLY_STOPPING);
  return e ? e->stopped_epoch : -1;
}

int kiln_early_stopping_best_epoch(const kiln_callback *cb) {
  const early_stopping *e = ctx_of(cb, CB_EARLY_STOPPING);
  return e ? e->best_epoch : -1;
}

/* --- ModelCheckpoint ------------------------------------------------------- */

typedef struct checkpoint {
  cb_header h;
  monitor mo;
  char *filepath;
  int save_best_only, save_state, saves;
  double best;
} checkpoint;

void kiln_model_checkpoint_config_init(kiln_model_checkpoint_config *c) {
  memset(c, 0, sizeof *c);
  c->monitor = "val_loss";
  c->mode = "auto";
}

static void checkpoint_destroy(void *ctx) {
  checkpoint *c = ctx;
  free(c->mo.key);
  free(c->filepath);
  free(c);
}

/* Removes "<filepath>.tmpXXXXXX" files a killed run left beside a fixed filepath
 * (kiln_atomic_open's temporaries), so a resumed run leaves the folder clean. */
static void remove_stale_temporaries(const char *filepath) {
  if (strstr(filepath, "{epoch}")) return;
  const char *slash = strrchr(filepath, '/');
  const char *base = slash ? slash + 1 : filepath;
  size_t dlen = slash ? (size_t)(slash - filepath) : 0, blen = strlen(base);
  char *dirname = malloc(dlen + 2);
  if (!dirname) return;
  if (slash) {
    memcpy(dirname, filepath, dlen);
    dirname[dlen ? dlen : 1] = 0;
    if (!dlen) dirname[0] = '/';
  } else {
    strcpy(dirname, ".");
  }
  DIR *d = opendir(dirname);
  struct dirent *e;
  while (d && (e = readdir(d))) {
    const char *n = e->d_name;
    if (strncmp(n, base, blen) != 0 || strncmp(n + blen, ".tmp", 4) != 0 ||
        strlen(n + blen + 4) != 6)
      continue;
    int ours = 1; /* mkstemp's six letters and digits */
    for (const char *c = n + blen + 4; *c; c++)
      ours &= (*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9');
    if (!ours) continue;
    size_t len = strlen(dirname) + strlen(n) + 2;
    char *full = malloc(len);
    if (full) {
      snprintf(full, len, "%s/%s", dirname, n);
      unlink(full);
      free(full);
    }
  }
  if (d) closedir(d);
  free(dirname);
}

static void checkpoint_train_begin(void *ctx, kiln_model *m) {
  checkpoint *c = ctx;
  c->best = worst(&c->mo);
  remove_stale_temporaries(c->filepath);
}

/* filepath with every "{epoch}" replaced by n; NULL when out of memory. */
static char *format_path(const char *pattern, int n) {
  size_t cap = strlen(pattern) + 1, at = 0;
  for (const char *p = strstr(pattern, "{epoch}"); p; p = strstr(p + 7, "{epoch}")) cap += 12;
  char *out = malloc(cap);
  if (!out) return NULL;
  for (const char *p = pattern; *p;) {
    if (strncmp(p, "{epoch}", 7) == 0) {
      at += (size_t)snprintf(out + at, cap - at, "%d", n);
      p += 7;
    } else {
      out[at++] = *p++;
    }
  }
  out[at] = 0;
  return out;
}

static void checkpoint_epoch_end(void *ctx, kiln_model *m, int epoch, const kiln_logs *logs) {
  checkpoint *c = ctx;
  if (c->save_best_only) {
    double current = NAN;
    if (!monitor_value(&c->mo, m, "ModelCheckpoint", epoch, logs, &current)) return;
    if (!improves(&c->mo, current, c->best, 0.0)) return;
    c->best = current;
  }
  char *path = format_path(c->filepath, epoch + 1);
  if (!path) {
    kiln_model_fail(m, KILN_E_NOMEM, "ModelCheckpoint: out of memory");
    return;
  }
  kiln_error e = {0};
  kiln_status s = c->save_state ? kiln_model_save_state(m, path, &e) : kiln_model_save(m, path, &e);
  free(path);
  if (s) kiln_model_fail(m, s, "ModelCheckpoint: epoch %d: %s", epoch + 1, e.message);
  else c->saves++;
}

kiln_status kiln_model_checkpoint_create(const kiln_model_checkpoint_config *cfg,
                                         kiln_callback *out, kiln_error *err) {
  memset(out, 0, sizeof *out);
  if (!cfg || !cfg->filepath || !*cfg->filepath)
    return kiln_error_set(err, KILN_E_INVALID, "ModelCheckpoint: filepath is required");
  checkpoint *c = calloc(1, sizeof *c);
  if (!c) return kiln_error_set(err, KILN_E_NOMEM, "ModelCheckpoint: out of memory");
  c->h.kind = CB_CHECKPOINT;
  c->h.destroy = checkpoint_destroy;
  kiln_status s = monitor_init(&c->mo, "ModelCheckpoint", cfg->monitor, cfg->mode, err);
  if (!s && !(c->filepath = strdup(cfg->filepath)))
    s = kiln_error_set(err, KILN_E_NOMEM, "ModelCheckpoint: out of memory");
  if (s) {
    checkpoint_destroy(c);
    return s;
  }
  c->save_best_only = cfg->save_best_only != 0;
  c->save_state = cfg->save_state != 0;
  c->best = worst(&c->mo);
  out->ctx = c;
  out->destroy = c->h.destroy;
  out->on_train_begin = checkpoint_train_begin;
  out->on_epoch_end = checkpoint_epoch_end;
  return KILN_OK;
}

int kiln_model_checkpoint_saves(const kiln_callback *cb) {
  const checkpoint *c = ctx_of(cb, CB_CHECKPOINT);
  return c ? c->saves : 0;
}

/* --- LearningRateScheduler -------------------------------------------------- */

typedef struct scheduler {
  cb_header h;
  kiln_lr_schedule fn;
  void *user;
} scheduler;

static void scheduler_destroy(void *ctx) { free(ctx); }

static void scheduler_epoch_begin(void *ctx, kiln_model *m, int epoch) {
  scheduler *sc = ctx;
  float lr = sc->fn(epoch, kiln_model_learning_rate(m), sc->user);
  if (!(lr > 0.0f) || !isfinite(lr)) {
    kiln_model_fail(m, KILN_E_RANGE,
                    "LearningRateScheduler: epoch %d: the schedule returned %g; a learning rate "
                    "must be positive and finite",
                    epoch + 1, (double)lr);
    return;
  }
  kiln_model_set_learning_rate(m, lr);
}

kiln_status kiln_lr_scheduler_create(const kiln_lr_scheduler_config *c, kiln_callback *out,
                                     kiln_error *err) {
  memset(out, 0, sizeof *out);
  if (!c || !c->schedule)
    return kiln_error_set(err, KILN_E_INVALID, "LearningRateScheduler: schedule is required");
  scheduler *sc = calloc(1, sizeof *sc);
  if (!sc) return kiln_error_set(err, KILN_E_NOMEM, "LearningRateScheduler: out of memory");
  sc->h.kind = CB_SCHEDULER;
  sc->h.destroy = scheduler_destroy;
  sc->fn = c->schedule;
  sc->user = c->user;
  out->ctx = sc;
  out->destroy = sc->h.destroy;
  out->on_epoch_begin = scheduler_epoch_begin;
  return KILN_OK;
}

/* --- ReduceLROnPlateau ------------------------------------------------------ */

typedef struct reduce_lr {
  cb_header h;
  monitor mo;
  kiln_reduce_lr_config c;
  int wait, cooldown_left;
  double best;
} reduce_lr;

void kiln_reduce_lr_config_init(kiln_reduce_lr_config *c) {
  memset(c, 0, sizeof *c);
  c->monitor = "val_loss";
  c->mode = "auto";
  c->factor = 0.1;
  c->patience = 10;
  c->min_delta = 1e-4;
}

static void reduce_destroy(void *ctx) {
  reduce_lr *r = ctx;
  free(r->mo.key);
  free(r);
}

static void reduce_train_begin(void *ctx, kiln_model *m) {
  reduce_lr *r = ctx;
  r->wait = 0;
  r->cooldown_left = 0;
  r->best = worst(&r->mo);
}

static void reduce_epoch_end(void *ctx, kiln_model *m, int epoch, const kiln_logs *logs) {
  reduce_lr *r = ctx;
  double current = NAN;
  if (!monitor_value(&r->mo, m, "ReduceLROnPlateau", epoch, logs, &current)) return;
  if (r->cooldown_left > 0) {
    r->cooldown_left--;
    r->wait = 0;
  }
  if (improves(&r->mo, current, r->best, r->c.min_delta)) {
    r->best = current;
    r->wait = 0;
  } else if (r->cooldown_left == 0) {
    if (++r->wait >= r->c.patience) {
      float lr = kiln_model_learning_rate(m);
      if (lr > (float)r->c.min_lr) {
        double next = (double)lr * r->c.factor;
        kiln_model_set_learning_rate(m, (float)(next > r->c.min_lr ? next : r->c.min_lr));
        r->cooldown_left = r->c.cooldown;
        r->wait = 0;
      }
    }
  }
}

kiln_status kiln_reduce_lr_create(const kiln_reduce_lr_config *c, kiln_callback *out,
                                  kiln_error *err) {
  memset(out, 0, sizeof *out);
  kiln_reduce_lr_config d;
  if (!c) {
    kiln_reduce_lr_config_init(&d);
    c = &d;
  }
  const char *w = "ReduceLROnPlateau";
  if (!(c->factor > 0.0 && c->factor < 1.0))
    return kiln_error_set(err, KILN_E_INVALID, "%s: factor must be in (0, 1), got %g", w,
                          c->factor);
  if (c->patience < 0)
    return kiln_error_set(err, KILN_E_INVALID, "%s: patience must be >= 0, got %d", w,
                          c->patience);
  if (c->cooldown < 0)
    return kiln_error_set(err, KILN_E_INVALID, "%s: cooldown must be >= 0, got %d", w,
                          c->cooldown);
  if (!(c->min_delta >= 0) || !isfinite(c->min_delta))
    return kiln_error_set(err, KILN_E_INVALID, "%s: min_delta must be finite and >= 0, got %g",
                          w, c->min_delta);
  if (!(c->min_lr >= 0) || !isfinite(c->min_lr))
    return kiln_error_set(err, KILN_E_INVALID, "%s: min_lr must be finite and >= 0, got %g", w,
                          c->min_lr);
  reduce_lr *r = calloc(1, sizeof *r);
  if (!r) return kiln_error_set(err, KILN_E_NOMEM, "%s: out of memory", w);
  r->h.kind = CB_REDUCE_LR;
  r->h.destroy = reduce_destroy;
  kiln_status s = monitor_init(&r->mo, w, c->monitor, c->mode, err);
  if (s) {
    reduce_destroy(r);
    return s;
  }
  r->c = *c;
  r->c.monitor = r->c.mode = NULL; /* not kept: the caller's strings */
  r->best = worst(&r->mo);
  out->ctx = r;
  out->destroy = r->h.destroy;
  out->on_train_begin = reduce_train_begin;
  out->on_epoch_end = reduce_epoch_end;
  return KILN_OK;
}

/* --- CSVLogger -------------------------------------------------------------- */

typedef struct csv_logger {
  cb_header h;
  char *filename;
  int append;
  char *text; /* the whole file as it should be on disk */
  size_t len, cap;
  char **keys; /* the columns, fixed by the first epoch */
  int n_keys;
} csv_logger;

static void csv_clear_keys(csv_logger *c) {
  for (int i = 0; i < c->n_keys; i++) free(c->keys[i]);
  free(c->keys);
  c->keys = NULL;
  c->n_keys = 0;
}

static void csv_destroy(void *ctx) {
  csv_logger *c = ctx;
  csv_clear_keys(c);
  free(c->text);
  free(c->filename);
  free(c);
}

static int csv_put(csv_logger *c, const char *s) {
  size_t n = strlen(s);
  if (c->len + n + 1 > c->cap) {
    size_t cap = c->cap ? c->cap : 256;
    while (cap < c->len + n + 1) cap *= 2;
    char *t = realloc(c->text, cap);
    if (!t) return 0;
    c->text = t;
    c->cap = cap;
  }
  memcpy(c->text + c->len, s, n + 1);
  c->len += n;
  return 1;
}

static void csv_train_begin(void *ctx, kiln_model *m) {
  csv_logger *c = ctx;
  c->len = 0;
  if (c->text) c->text[0] = 0;
  csv_clear_keys(c);
  if (!c->append) return;
  FILE *fp = fopen(c->filename, "rb");
  if (!fp) return; /* nothing to append to yet */
  char buf[4096];
  size_t n;
  int ok = 1;
  while (ok && (n = fread(buf, 1, sizeof buf - 1, fp)) > 0) {
    buf[n] = 0;
    ok = strlen(buf) == n && csv_put(c, buf);
  }
  fclose(fp);
  if (!ok) {
    kiln_model_fail(m, KILN_E_IO, "CSVLogger: %s: cannot read it to append (binary or out of memory)",
                    c->filename);
    return;
  }
  if (c->len && c->text[c->len - 1] != '\n' && !csv_put(c, "\n"))
    kiln_model_fail(m, KILN_E_NOMEM, "CSVLogger: out of memory");
}

static int cmp_str(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

static void csv_epoch_end(void *ctx, kiln_model *m, int epoch, const kiln_logs *logs) {
  csv_logger *c = ctx;
  char cell[64];
  int ok = 1;
  if (!c->keys) {
    c->keys = calloc((size_t)(logs->n ? logs->n : 1), sizeof(char *));
    ok = c->keys != NULL;
    for (int i = 0; ok && i < logs->n; i++) {
      ok = (c->keys[i] = strdup(logs->keys[i])) != NULL;
      c->n_keys += ok;
    }
    if (ok) qsort(c->keys, (size_t)c->n_keys, sizeof(char *), cmp_str);
    if (ok && c->len == 0) { /* a header only at the top of the file */
      ok = csv_put(c, "epoch");
      for (int i = 0; ok && i < c->n_keys; i++) ok = csv_put(c, ",") && csv_put(c, c->keys[i]);
      ok = ok && csv_put(c, "\n");
    }
  }
  snprintf(cell, sizeof cell, "%d", epoch);
  ok = ok && csv_put(c, cell);
  for (int i = 0; ok && i < c->n_keys; i++) {
    double v = kiln_logs_get(logs, c->keys[i]);
    if (isnan(v)) snprintf(cell, sizeof cell, ",%s", "nan");
    else snprintf(cell, sizeof cell, ",%.17g", v);
    ok = csv_put(c, cell);
  }
  ok = ok && csv_put(c, "\n");
  if (!ok) {
    kiln_model_fail(m, KILN_E_NOMEM, "CSVLogger: out of memory");
    return;
  }
  kiln_atomic_file f;
  kiln_error e = {0};
  kiln_status s = kiln_atomic_open(&f, c->filename, "wb", &e);
  if (!s) {
    if (fwrite(c->text, 1, c->len, f.fp) != c->len) {
      kiln_atomic_abort(&f);
      s = kiln_error_set(&e, KILN_E_IO, "%s: write failed", c->filename);
    } else {
      s = kiln_atomic_commit(&f, &e);
    }
  }
  if (s) kiln_model_fail(m, s, "CSVLogger: epoch %d: %s", epoch + 1, e.message);
}

kiln_status kiln_csv_logger_create(const kiln_csv_logger_config *cfg, kiln_callback *out,
                                   kiln_error *err) {
  memset(out, 0, sizeof *out);
  if (!cfg || !cfg->filename || !*cfg->filename)
    return kiln_error_set(err, KILN_E_INVALID, "CSVLogger: filename is required");
  csv_logger *c = calloc(1, sizeof *c);
  if (!c || !(c->filename = strdup(cfg->filename))) {
    free(c);
    return kiln_error_set(err, KILN_E_NOMEM, "CSVLogger: out of memory");
  }
  c->h.kind = CB_CSV;
  c->h.destroy = csv_destroy;
  c->append = cfg->append != 0;
  out->ctx = c;
  out->destroy = c->h.destroy;
  out->on_train_begin = csv_train_begin;
  out->on_epoch_end = csv_epoch_end;
  return KILN_OK;
}

/* --- TerminateOnNaN --------------------------------------------------------- */

typedef struct nan_stop {
  cb_header h;
  int triggered;
} nan_stop;

static void nan_destroy(void *ctx) { free(ctx); }

static void nan_train_begin(void *ctx, kiln_model *m) { ((nan_stop *)ctx)->triggered = 0; }

static void nan_batch_end(void *ctx, kiln_model *m, int64_t batch, int64_t batches,
                          const kiln_logs *logs) {
  double loss = kiln_logs_get(logs, "loss");
  if (logs->n > 0 && strcmp(logs->keys[0], "loss") == 0 && !isfinite(loss)) {
    ((nan_stop *)ctx)->triggered = 1;
    kiln_model_stop_training(m);
  }
}

kiln_status kiln_terminate_on_nan_create(kiln_callback *out, kiln_error *err) {
  memset(out, 0, sizeof *out);
  nan_stop *t = calloc(1, sizeof *t);
  if (!t) return kiln_error_set(err, KILN_E_NOMEM, "TerminateOnNaN: out of memory");
  t->h.kind = CB_NAN;
  t->h.destroy = nan_destroy;
  out->ctx = t;
  out->destroy = t->h.destroy;
  out->on_train_begin = nan_train_begin;
  out->on_batch_end = nan_batch_end;
  return KILN_OK;
}

int kiln_terminate_on_nan_triggered(const kiln_callback *cb) {
  const nan_stop *t = ctx_of(cb, CB_NAN);
  return t ? t->triggered : 0;
}

/* --- LossHistory ------------------------------------------------------------ */

typedef struct loss_history {
  cb_header h;
  double *values;
  int64_t n, cap;
} loss_history;

static void loss_history_destroy(void *ctx) {
  loss_history *l = ctx;
  free(l->values);
  free(l);
}

static void loss_history_train_begin(void *ctx, kiln_model *m) { ((loss_history *)ctx)->n = 0; }

static void loss_history_batch_end(void *ctx, kiln_model *m, int64_t batch, int64_t batches,
                                   const kiln_logs *logs) {
  loss_history *l = ctx;
  if (l->n == l->cap) {
    int64_t cap = l->cap ? 2 * l->cap : 64;
    double *v = realloc(l->values, (size_t)cap * sizeof(double));
    if (!v) {
      kiln_model_fail(m, KILN_E_NOMEM, "LossHistory: out of memory");
      return;
    }
    l->values = v;
    l->cap = cap;
  }
  l->values[l->n++] = kiln_logs_get(logs, "loss");
}

kiln_status kiln_loss_history_create(kiln_callback *out, kiln_error *err) {
  memset(out, 0, sizeof *out);
  loss_history *l = calloc(1, sizeof *l);
  if (!l) return kiln_error_set(err, KILN_E_NOMEM, "LossHistory: out of memory");
  l->h.kind = CB_LOSS_HISTORY;
  l->h.destroy = loss_history_destroy;
  out->ctx = l;
  out->destroy = l->h.destroy;
  out->on_train_begin = loss_history_train_begin;
  out->on_batch_end = loss_history_batch_end;
  return KILN_OK;
}

const double *kiln_loss_history_values(const kiln_callback *cb, int64_t *n) {
  const loss_history *l = ctx_of(cb, CB_LOSS_HISTORY);
  *n = l ? l->n : 0;
  return l ? l->values : NULL;
}

/* kiln — the built-in training callbacks of Keras (keras.callbacks), as kiln_callback
 * values to pass in kiln_fit_options.callbacks.
 *
 * Each kiln_<name>_create fills *out with a callback whose ctx holds its state; the
 * caller owns it and frees it with kiln_callback_free once fit is done (a callback
 * may be reused for several fits: its per-fit state restarts in on_train_begin). The
 * strings of a config are copied. A bad config is KILN_E_INVALID with a message naming
 * the field. During fit, a callback that cannot go on (its monitored key absent from
 * the epoch's logs, a file it cannot write) makes fit fail with kiln_model_fail.
 *
 * Monitored keys are those of the epoch logs: "loss", metric names, and "val_loss",
 * "val_<metric>" when fit validates. A mode is "min", "max" or "auto" (NULL means
 * "auto"); auto picks max for keys whose name (without "val_") contains "acc" or
 * "auc", or is "precision", "recall" or "f1_score", and min for everything else. */
#ifndef KILN_CALLBACKS_H
#define KILN_CALLBACKS_H

#include "kiln/train.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Frees a callback made by a kiln_*_create below and zeroes *cb (NULL-safe). */
void kiln_callback_free(kiln_callback *cb);

/* --- EarlyStopping -------------------------------------------------------- */

typedef struct kiln_early_stopping_config {
  const char *monitor;      /* default "val_loss" */
  const char *mode;         /* "auto" (default), "min", "max" */
  double min_delta;         /* >= 0; an improvement must beat the best by more. Default 0 */
  int patience;             /* >= 0; epochs without improvement before stopping. Default 0 */
  int restore_best_weights; /* at the end of fit, put back the weights of the best epoch */
} kiln_early_stopping_config;
void kiln_early_stopping_config_init(kiln_early_stopping_config *c);
/* Stops fit at the end of epoch best + patience (0-based) unless a later epoch improves
 * on the best, as Keras (from the second epoch on). With restore_best_weights, every
 * Dense kernel and bias and every custom layer's weights are copied when the monitored
 * value improves and written back in on_train_end. */
kiln_status kiln_early_stopping_create(const kiln_early_stopping_config *c, kiln_callback *out,
                                       kiln_error *err);
/* The epoch (0-based) fit was stopped at, or -1 when it ran to the end; the best
 * epoch seen, or -1. cb must be an EarlyStopping callback (else -1). */
int kiln_early_stopping_stopped_epoch(const kiln_callback *cb);
int kiln_early_stopping_best_epoch(const kiln_callback *cb);

/* --- ModelCheckpoint ------------------------------------------------------ */

typedef struct kiln_model_checkpoint_config {
  const char *filepath;  /* required; "{epoch}" in it becomes the 1-based epoch number */
  const char *monitor;   /* default "val_loss" (used with save_best_only) */
  const char *mode;      /* "auto" (default), "min", "max" */
  int save_best_only;    /* write only when the monitored value improves on the best */
  int save_state;        /* write a training state (kiln_model_save_state, to resume)
                            instead of a model checkpoint (kiln_model_save) */
} kiln_model_checkpoint_config;
void kiln_model_checkpoint_config_init(kiln_model_checkpoint_config *c);
/* Writes at each epoch end (atomically: a crash leaves the previous file). A fixed
 * filepath's stray temporaries ("<filepath>.tmpXXXXXX", left by a run killed inside a
 * write) are removed when fit begins. */
kiln_status kiln_model_checkpoint_create(const kiln_model_checkpoint_config *c,
                                         kiln_callback *out, kiln_error *err);
/* Files written by this callback so far (all fits). */
int kiln_model_checkpoint_saves(const kiln_callback *cb);

/* --- LearningRateScheduler ----------------------------------------------- */

/* Returns the learning rate for epoch (0-based) given the current one. */
typedef float (*kiln_lr_schedule)(int epoch, float lr, void *user);
typedef struct kiln_lr_scheduler_config {
  kiln_lr_schedule schedule; /* required */
  void *user;                /* passed to schedule */
} kiln_lr_scheduler_config;
/* Sets the learning rate at each epoch begin; a schedule returning a rate that is
 * not positive and finite fails fit with KILN_E_RANGE. */
kiln_status kiln_lr_scheduler_create(const kiln_lr_scheduler_config *c, kiln_callback *out,
                                     kiln_error *err);

/* --- ReduceLROnPlateau ---------------------------------------------------- */

typedef struct kiln_reduce_lr_config {
  const char *monitor; /* default "val_loss" */
  const char *mode;    /* "auto" (default), "min", "max" */
  double factor;       /* in (0, 1); new_lr = lr * factor. Default 0.1 */
  int patience;        /* >= 0. Default 10 */
  double min_delta;    /* >= 0. Default 1e-4 */
  int cooldown;        /* >= 0; epochs to wait after a reduction. Default 0 */
  double min_lr;       /* >= 0; lower bound of the rate. Default 0 */
} kiln_reduce_lr_config;
void kiln_reduce_lr_config_init(kiln_reduce_lr_config *c);
/* Keras' rule: after `patience` epochs without an improvement by more than min_delta
 * (outside cooldown), lr = max(lr * factor, min_lr), then `cooldown` epochs of rest. */
kiln_status kiln_reduce_lr_create(const kiln_reduce_lr_config *c, kiln_callback *out,
                                  kiln_error *err);

/* --- CSVLogger ------------------------------------------------------------ */

typedef struct kiln_csv_logger_config {
  const char *filename; /* required */
  int append;           /* keep the rows already there (the header only if it was empty) */
} kiln_csv_logger_config;
/* One row per finished epoch: "epoch,<keys in sorted order, as Keras>", the epoch
 * 0-based. The file is rewritten atomically (temporary + rename, synced) at every
 * epoch end, so after a crash it holds a valid CSV of the finished epochs. */
kiln_status kiln_csv_logger_create(const kiln_csv_logger_config *c, kiln_callback *out,
                                   kiln_error *err);

/* --- TerminateOnNaN ------------------------------------------------------- */

/* Stops fit cleanly at a batch whose loss is NaN or infinite: fit returns KILN_OK with
 * the weights before that batch (see kiln_model_fit) instead of KILN_E_DIVERGED. */
kiln_status kiln_terminate_on_nan_create(kiln_callback *out, kiln_error *err);
/* 1 when it stopped the last fit. */
int kiln_terminate_on_nan_triggered(const kiln_callback *cb);

/* --- LossHistory (listing 7.20): every batch's loss ----------------------- */

/* Records logs["loss"] at every batch end (Keras' running mean of the epoch so far)
 * into a growable array, cleared at train begin. */
kiln_status kiln_loss_history_create(kiln_callback *out, kiln_error *err);
/* The recorded losses (valid until the next fit or free) and their count in *n. */
const double *kiln_loss_history_values(const kiln_callback *cb, int64_t *n);

#ifdef __cplusplus
}
#endif
#endif

/* kiln — the persistent thread pool (threads.c): internal to kiln, used by the runtime's
 * sessions (splitting batches and wide layers) and by the trainer's optimizer step
 * (train/optimizer.c, through kiln_infer, which the trainer links). Workers are made
 * once and woken per task; after a task they spin briefly for the next one before they
 * sleep. */
#ifndef KILN_INFER_THREADS_H
#define KILN_INFER_THREADS_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "kiln/status.h"

/* Persistent workers; the caller is worker 0. */
typedef void (*kiln_task_fn)(void *arg, int tid, int nthreads);
typedef struct kiln_pool {
  int n; /* threads including the caller */
  pthread_t *threads;
  pthread_mutex_t mu;
  pthread_cond_t start, done;
  atomic_ulong generation; /* written under mu; read without it while spinning */
  atomic_int pending;
  atomic_int stop;
  kiln_task_fn fn;
  void *arg;
  int dynamic, closed; /* kiln_pool_run_dynamic's task, and whether it is finished */
  int64_t last_small_ns; /* kiln_pool_small_task_ok's last call */
} kiln_pool;

kiln_status kiln_pool_create(kiln_pool *p, int threads, kiln_error *err);
void kiln_pool_run(kiln_pool *p, kiln_task_fn fn, void *arg);
/* For a task whose threads claim work from a shared counter until none is left (so any
 * subset of them completes it): the caller works too, then returns without waiting for
 * workers that had not started by the time it ran out of work (on a busy machine a
 * sleeping worker can take milliseconds to be scheduled). */
void kiln_pool_run_dynamic(kiln_pool *p, kiln_task_fn fn, void *arg);
/* For a task too small to pay a sleeping worker's wake-up (a few to ~100 us of work):
 * 1 when the previous call was less than KILN_POOL_LOOP_NS ago, i.e. such tasks come
 * back to back (a batch-1 serving loop), so after the first one the workers are still
 * spinning when the next arrives; 0 for a lone call. Records this call. */
int kiln_pool_small_task_ok(kiln_pool *p);
void kiln_pool_destroy(kiln_pool *p);

#endif

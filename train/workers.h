/* kiln trainer — a small persistent thread pool for the trainer's element-wise loops
 * (the optimizer step). The runtime (infer/) has its own pool for its sessions; the
 * trainer keeps this one private to train/ so neither library reaches into the other. */
#ifndef KILN_TRAIN_WORKERS_H
#define KILN_TRAIN_WORKERS_H

#include <pthread.h>
#include <stdatomic.h>

#define KILN_WORKERS_MAX 8

/* Runs as thread tid of n (0 is the caller). */
typedef void (*kiln_work_fn)(void *arg, int tid, int n);

struct kiln_workers;
typedef struct kiln_worker_slot {
  struct kiln_workers *w;
  int tid;
} kiln_worker_slot;

typedef struct kiln_workers {
  int n; /* threads, the caller included */
  pthread_t threads[KILN_WORKERS_MAX];
  kiln_worker_slot slots[KILN_WORKERS_MAX]; /* each worker's (pool, index) */
  pthread_mutex_t mu;
  pthread_cond_t start, done;
  atomic_ulong generation; /* written under mu; read without it while spinning */
  atomic_int pending;
  atomic_int stop;
  kiln_work_fn fn;
  void *arg;
  int closed; /* the running task is finished: workers that had not started skip it */
} kiln_workers;

/* Starts up to threads - 1 workers (threads is capped at KILN_WORKERS_MAX). Returns the
 * number of threads it can run with, the caller included: 1 when none could start (the
 * pool then runs every task on the caller). Free with kiln_workers_destroy. */
int kiln_workers_create(kiln_workers *w, int threads);
/* For a task whose threads claim pieces of work from a shared counter until none is
 * left, so that any subset of the threads completes it: fn(arg, t, n) runs on the
 * caller and on every worker that starts before the caller has finished; returns when
 * those are done. A worker that the scheduler does not run in time (the other cores
 * are busy) costs nothing but its wake-up. */
void kiln_workers_run(kiln_workers *w, kiln_work_fn fn, void *arg);
void kiln_workers_destroy(kiln_workers *w);

#endif

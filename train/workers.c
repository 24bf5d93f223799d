/* kiln trainer — the pool of workers.h: workers made once, woken per task by a
 * condition variable. After a task a worker spins briefly for the next one before it
 * sleeps, and the caller spins briefly for the workers before it sleeps, so a task that
 * follows closely skips the futex round trips. Tasks share their work out through a
 * counter (kiln_workers_run), so the caller never waits for a worker not yet running. */
#include "workers.h"

#include <stdint.h>
#include <string.h>
#include <time.h>

#define SPIN_NS 50000 /* 50 us */

static void spin_pause(void) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  __asm__ __volatile__("yield");
#endif
}

static int64_t now_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

static void spin_while_generation(kiln_workers *w, unsigned long old) {
  int64_t t0 = now_ns();
  for (unsigned i = 1;; i++) {
    if (atomic_load_explicit(&w->generation, memory_order_acquire) != old ||
        atomic_load_explicit(&w->stop, memory_order_relaxed))
      return;
    spin_pause();
    if ((i & 31) == 0 && now_ns() - t0 > SPIN_NS) return;
  }
}

static void spin_while_pending(kiln_workers *w) {
  int64_t t0 = now_ns();
  for (unsigned i = 1;; i++) {
    if (atomic_load_explicit(&w->pending, memory_order_acquire) <= 0) return;
    spin_pause();
    if ((i & 31) == 0 && now_ns() - t0 > SPIN_NS) return;
  }
}

static void *worker_main(void *p) {
  kiln_workers *w = ((kiln_worker_slot *)p)->w;
  int tid = ((kiln_worker_slot *)p)->tid;
  unsigned long seen = 0;
  pthread_mutex_lock(&w->mu);
  for (;;) {
    while (!w->stop && w->generation == seen) pthread_cond_wait(&w->start, &w->mu);
    if (w->stop) break;
    seen = w->generation;
    if (w->closed) continue; /* the caller did all the work: its arg is gone */
    w->pending++;
    kiln_work_fn fn = w->fn;
    void *arg = w->arg;
    pthread_mutex_unlock(&w->mu);
    fn(arg, tid, w->n);
    pthread_mutex_lock(&w->mu);
    if (--w->pending == 0) pthread_cond_signal(&w->done);
    pthread_mutex_unlock(&w->mu);
    spin_while_generation(w, seen);
    pthread_mutex_lock(&w->mu);
  }
  pthread_mutex_unlock(&w->mu);
  return NULL;
}

int kiln_workers_create(kiln_workers *w, int threads) {
  memset(w, 0, sizeof *w);
  w->n = 1;
  pthread_mutex_init(&w->mu, NULL);
  pthread_cond_init(&w->start, NULL);
  pthread_cond_init(&w->done, NULL);
  if (threads > KILN_WORKERS_MAX) threads = KILN_WORKERS_MAX;
  for (int t = 1; t < threads; t++) {
    w->slots[t].w = w;
    w->slots[t].tid = t;
    /* a worker reads n only in a task, so after this returns */
    if (pthread_create(&w->threads[t], NULL, worker_main, &w->slots[t])) break;
    w->n = t + 1;
  }
  return w->n;
}

void kiln_workers_run(kiln_workers *w, kiln_work_fn fn, void *arg) {
  if (w->n == 1) {
    fn(arg, 0, 1);
    return;
  }
  pthread_mutex_lock(&w->mu);
  w->fn = fn;
  w->arg = arg;
  w->closed = 0;
  w->pending = 0;
  w->generation++;
  pthread_cond_broadcast(&w->start);
  pthread_mutex_unlock(&w->mu);
  fn(arg, 0, w->n);
  pthread_mutex_lock(&w->mu);
  w->closed = 1; /* workers not started yet skip it; wait for those that did */
  if (w->pending > 0) {
    pthread_mutex_unlock(&w->mu);
    spin_while_pending(w);
    pthread_mutex_lock(&w->mu);
  }
  while (w->pending > 0) pthread_cond_wait(&w->done, &w->mu);
  pthread_mutex_unlock(&w->mu);
}

void kiln_workers_destroy(kiln_workers *w) {
  pthread_mutex_lock(&w->mu);
  w->stop = 1;
  pthread_cond_broadcast(&w->start);
  pthread_mutex_unlock(&w->mu);
  for (int t = 1; t < w->n; t++) pthread_join(w->threads[t], NULL);
  pthread_mutex_destroy(&w->mu);
  pthread_cond_destroy(&w->start);
  pthread_cond_destroy(&w->done);
  w->n = 1;
}

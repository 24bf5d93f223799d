/* kiln runtime — the session's intra-op thread pool: workers created once at session
 * create, woken per task by a condition variable; the calling thread is worker 0.
 * After a task a worker spins briefly (KILN_POOL_SPIN_NS) for the next one before it
 * sleeps, and the caller spins briefly for the workers before it sleeps: runs that
 * follow each other closely (a batch loop) then skip the futex wake-ups, which cost as
 * much as a small model's work. */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "session_internal.h"

typedef struct worker_arg {
  kiln_pool *pool;
  int tid;
} worker_arg;

#define KILN_POOL_SPIN_NS 50000 /* 50 us */
#define KILN_POOL_LOOP_NS 40000 /* under the spin: the workers are still awake */

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

/* Spins up to KILN_POOL_SPIN_NS while *v == old (the caller holds no lock). */
static void spin_while_ulong(atomic_ulong *v, unsigned long old, atomic_int *stop) {
  int64_t t0 = now_ns();
  for (unsigned i = 1;; i++) {
    if (atomic_load_explicit(v, memory_order_acquire) != old ||
        atomic_load_explicit(stop, memory_order_relaxed))
      return;
    spin_pause();
    if ((i & 31) == 0 && now_ns() - t0 > KILN_POOL_SPIN_NS) return;
  }
}

/* Spins up to KILN_POOL_SPIN_NS while *v > 0. */
static void spin_while_positive(atomic_int *v) {
  int64_t t0 = now_ns();
  for (unsigned i = 1;; i++) {
    if (atomic_load_explicit(v, memory_order_acquire) <= 0) return;
    spin_pause();
    if ((i & 31) == 0 && now_ns() - t0 > KILN_POOL_SPIN_NS) return;
  }
}

static void *worker_main(void *p) {
  worker_arg wa = *(worker_arg *)p;
  free(p);
  kiln_pool *pool = wa.pool;
  unsigned long seen = 0;
  pthread_mutex_lock(&pool->mu);
  for (;;) {
    while (!pool->stop && pool->generation == seen) pthread_cond_wait(&pool->start, &pool->mu);
    if (pool->stop) break;
    seen = pool->generation;
    if (pool->dynamic) {
      /* the caller may have done all the work and closed the task: then its arg is gone */
      if (pool->closed) continue;
      pool->pending++;
    }
    kiln_task_fn fn = pool->fn;
    void *arg = pool->arg;
    pthread_mutex_unlock(&pool->mu);
    fn(arg, wa.tid, pool->n);
    pthread_mutex_lock(&pool->mu);
    if (--pool->pending == 0) pthread_cond_signal(&pool->done);
    pthread_mutex_unlock(&pool->mu);
    spin_while_ulong(&pool->generation, seen, &pool->stop);
    pthread_mutex_lock(&pool->mu);
  }
  pthread_mutex_unlock(&pool->mu);
  return NULL;
}

kiln_status kiln_pool_create(kiln_pool *p, int threads, kiln_error *err) {
  memset(p, 0, sizeof *p);
  p->n = threads;
  if (pthread_mutex_init(&p->mu, NULL)) return kiln_error_set(err, KILN_E_NOMEM, "thread pool: mutex init failed");
  pthread_cond_init(&p->start, NULL);
  pthread_cond_init(&p->done, NULL);
  p->threads = calloc((size_t)threads, sizeof(pthread_t));
  if (!p->threads) {
    p->n = 1;
    kiln_pool_destroy(p);
    return kiln_error_set(err, KILN_E_NOMEM, "thread pool: out of memory");
  }
  for (int t = 1; t < threads; t++) {
    worker_arg *wa = malloc(sizeof *wa);
    if (wa) {
      wa->pool = p;
      wa->tid = t;
    }
    if (!wa || pthread_create(&p->threads[t], NULL, worker_main, wa)) {
      free(wa);
      p->n = t; /* the ones started so far are joined by destroy */
      kiln_pool_destroy(p);
      return kiln_error_set(err, KILN_E_NOMEM,
                            "thread pool: could not start thread %d of %d", t + 1, threads);
    }
  }
  return KILN_OK;
}

void kiln_pool_run_dynamic(kiln_pool *p, kiln_task_fn fn, void *arg) {
  pthread_mutex_lock(&p->mu);
  p->fn = fn;
  p->arg = arg;
  p->dynamic = 1;
  p->closed = 0;
  p->pending = 0;
  p->generation++;
  pthread_cond_broadcast(&p->start);
  pthread_mutex_unlock(&p->mu);
  fn(arg, 0, p->n);
  pthread_mutex_lock(&p->mu);
  p->closed = 1; /* workers not started yet skip it; wait for those that did */
  if (p->pending > 0) {
    pthread_mutex_unlock(&p->mu);
    spin_while_positive(&p->pending);
    pthread_mutex_lock(&p->mu);
  }
  while (p->pending > 0) pthread_cond_wait(&p->done, &p->mu);
  pthread_mutex_unlock(&p->mu);
}

void kiln_pool_run(kiln_pool *p, kiln_task_fn fn, void *arg) {
  pthread_mutex_lock(&p->mu);
  p->fn = fn;
  p->arg = arg;
  p->dynamic = 0;
  p->pending = p->n - 1;
  p->generation++;
  pthread_cond_broadcast(&p->start);
  pthread_mutex_unlock(&p->mu);
  fn(arg, 0, p->n);
  spin_while_positive(&p->pending);
  pthread_mutex_lock(&p->mu);
  while (p->pending > 0) pthread_cond_wait(&p->done, &p->mu);
  pthread_mutex_unlock(&p->mu);
}

int kiln_pool_small_task_ok(kiln_pool *p) {
  int64_t t = now_ns();
  int ok = p->last_small_ns > 0 && t - p->last_small_ns < KILN_POOL_LOOP_NS;
  p->last_small_ns = t;
  return ok;
}

void kiln_pool_destroy(kiln_pool *p) {
  if (!p->threads) {
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->start);
    pthread_cond_destroy(&p->done);
    return;
  }
  pthread_mutex_lock(&p->mu);
  p->stop = 1;
  pthread_cond_broadcast(&p->start);
  pthread_mutex_unlock(&p->mu);
  for (int t = 1; t < p->n; t++) pthread_join(p->threads[t], NULL);
  free(p->threads);
  p->threads = NULL;
  pthread_mutex_destroy(&p->mu);
  pthread_cond_destroy(&p->start);
  pthread_cond_destroy(&p->done);
}

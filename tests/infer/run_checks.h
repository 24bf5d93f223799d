/* Shared by the runtime's session tests: a malloc counter (this program's malloc
 * family wraps glibc's, so every allocation kiln_infer makes during run() is counted;
 * not under sanitizers, which own malloc) and OK(call), which fails the test with the
 * kiln_error message of a failing call (the call passes E as its error). Include once
 * per test program, after <cmocka.h>. */
#ifndef KILN_TESTS_INFER_RUN_CHECKS_H
#define KILN_TESTS_INFER_RUN_CHECKS_H

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__) || defined(__SANITIZE_MEMORY__)
#define COUNT_MALLOC 0
#else
#define COUNT_MALLOC 1
#endif
static long g_allocs;
#if COUNT_MALLOC && defined(__GLIBC__)
extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void *__libc_memalign(size_t, size_t);
void *malloc(size_t n) { __atomic_add_fetch(&g_allocs, 1, __ATOMIC_RELAXED); return __libc_malloc(n); }
void *calloc(size_t a, size_t b) { __atomic_add_fetch(&g_allocs, 1, __ATOMIC_RELAXED); return __libc_calloc(a, b); }
void *realloc(void *p, size_t n) { __atomic_add_fetch(&g_allocs, 1, __ATOMIC_RELAXED); return __libc_realloc(p, n); }
void *aligned_alloc(size_t al, size_t n) { __atomic_add_fetch(&g_allocs, 1, __ATOMIC_RELAXED); return __libc_memalign(al, n); }
#define HAVE_COUNTER 1
#else
#define HAVE_COUNTER 0
#endif

#include "test_common.h" /* OK(call) and E */

#endif

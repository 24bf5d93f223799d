/* kiln trainer — the seeded random generator (xoshiro256**, seeded by splitmix64).
 * Each purpose (weights, shuffling, dropout, data splits) draws from its own stream
 * derived from the one user seed, so changing one does not shift the others. */
#ifndef KILN_TRAIN_RNG_H
#define KILN_TRAIN_RNG_H

#include <stdint.h>

typedef struct kiln_rng {
  uint64_t s[4];
} kiln_rng;

enum { KILN_STREAM_WEIGHTS = 1, KILN_STREAM_SHUFFLE = 2, KILN_STREAM_DROPOUT = 3,
       KILN_STREAM_SPLIT = 4 };

void kiln_rng_seed(kiln_rng *r, uint64_t seed, uint64_t stream);
uint64_t kiln_rng_next(kiln_rng *r);
/* Uniform in [0, 1) with 24 random bits (exact in float). */
float kiln_rng_uniform(kiln_rng *r);
/* Uniform integer in [0, n). */
uint64_t kiln_rng_below(kiln_rng *r, uint64_t n);
/* Standard normal (Box-Muller). */
double kiln_rng_normal(kiln_rng *r);
/* Fisher-Yates shuffle of idx[0..n). */
void kiln_rng_shuffle(kiln_rng *r, int64_t *idx, int64_t n);

#endif

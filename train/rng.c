#include "rng.h"

#include <math.h>

static uint64_t splitmix64(uint64_t *x) {
  uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

void kiln_rng_seed(kiln_rng *r, uint64_t seed, uint64_t stream) {
  uint64_t x = seed ^ (stream * 0xd1b54a32d192ed03ULL);
  for (int i = 0; i < 4; i++) r->s[i] = splitmix64(&x);
}

uint64_t kiln_rng_next(kiln_rng *r) {
  uint64_t *s = r->s;
  uint64_t result = rotl(s[1] * 5, 7) * 9;
  uint64_t t = s[1] << 17;
  s[2] ^= s[0];
  s[3] ^= s[1];
  s[1] ^= s[2];
  s[0] ^= s[3];
  s[2] ^= t;
  s[3] = rotl(s[3], 45);
  return result;
}

float kiln_rng_uniform(kiln_rng *r) { return (float)(kiln_rng_next(r) >> 40) * 0x1.0p-24f; }

uint64_t kiln_rng_below(kiln_rng *r, uint64_t n) {
  /* Lemire's nearly-divisionless method, with rejection for exact uniformity. */
  uint64_t threshold = (0 - n) % n;
  for (;;) {
    uint64_t x = kiln_rng_next(r);
    unsigned __int128 m = (unsigned __int128)x * n;
    if ((uint64_t)m >= threshold) return (uint64_t)(m >> 64);
  }
}

double kiln_rng_normal(kiln_rng *r) {
  double u1 = ((double)(kiln_rng_next(r) >> 11) + 1.0) * 0x1.0p-53; /* (0, 1] */
  double u2 = (double)(kiln_rng_next(r) >> 11) * 0x1.0p-53;
  return sqrt(-2.0 * log(u1)) * cos(2.0 * 3.14159265358979323846 * u2);
}

void kiln_rng_shuffle(kiln_rng *r, int64_t *idx, int64_t n) {
  for (int64_t i = n - 1; i > 0; i--) {
    int64_t j = (int64_t)kiln_rng_below(r, (uint64_t)i + 1);
    int64_t t = idx[i];
    idx[i] = idx[j];
    idx[j] = t;
  }
}

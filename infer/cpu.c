/* kiln runtime — CPU feature detection and kernel-path selection. The result lives
 * in the session that asked (no global cache). */
#include "sgemm.h"

#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>

static uint64_t xgetbv0(void) {
  uint32_t lo, hi;
  __asm__ volatile(".byte 0x0f, 0x01, 0xd0" : "=a"(lo), "=d"(hi) : "c"(0));
  return ((uint64_t)hi << 32) | lo;
}

void kiln_cpu_detect(kiln_cpu *cpu) {
  memset(cpu, 0, sizeof *cpu);
  unsigned a, b, c, d;
  if (!__get_cpuid(1, &a, &b, &c, &d)) return;
  int osxsave = (c >> 27) & 1, avx = (c >> 28) & 1, fma = (c >> 12) & 1;
  if (!osxsave || !avx) return;
  uint64_t xcr0 = xgetbv0();
  int ymm_os = (xcr0 & 0x6) == 0x6;          /* SSE + AVX state */
  int zmm_os = (xcr0 & 0xe6) == 0xe6;        /* + opmask, ZMM_Hi256, Hi16_ZMM */
  if (__get_cpuid_max(0, NULL) < 7) return;
  __cpuid_count(7, 0, a, b, c, d);
  int avx2 = (b >> 5) & 1, avx512f = (b >> 16) & 1, avx512dq = (b >> 17) & 1,
      avx512bw = (b >> 30) & 1, avx512vl = (b >> 31) & 1;
  cpu->avx2_fma = ymm_os && avx2 && fma;
  cpu->avx512f = cpu->avx2_fma && zmm_os && avx512f && avx512dq && avx512bw && avx512vl;
  cpu->avx512vnni = cpu->avx512f && ((c >> 11) & 1);
}
#elif defined(__aarch64__)
#include <sys/auxv.h>
#ifndef HWCAP_ASIMDDP
#define HWCAP_ASIMDDP (1 << 20)
#endif
void kiln_cpu_detect(kiln_cpu *cpu) {
  memset(cpu, 0, sizeof *cpu);
  cpu->neon = 1; /* Advanced SIMD is part of the base AArch64 profile */
  cpu->dotprod = (getauxval(AT_HWCAP) & HWCAP_ASIMDDP) != 0;
}
#elif defined(__arm__)
#include <sys/auxv.h>
#ifndef HWCAP_NEON
#define HWCAP_NEON (1 << 12)
#endif
void kiln_cpu_detect(kiln_cpu *cpu) {
  memset(cpu, 0, sizeof *cpu);
  cpu->neon = (getauxval(AT_HWCAP) & HWCAP_NEON) != 0;
}
#else
void kiln_cpu_detect(kiln_cpu *cpu) { memset(cpu, 0, sizeof *cpu); }
#endif

const kiln_sgemm_kernel *kiln_sgemm_select(const kiln_cpu *cpu, kiln_kernel_path path,
                                           kiln_error *err) {
  const kiln_sgemm_kernel *k = NULL;
  switch (path) {
    case KILN_KERNEL_AUTO:
      if (cpu->avx512f && (k = kiln_sgemm_kernel_avx512())) return k;
      if (cpu->avx2_fma && (k = kiln_sgemm_kernel_avx2())) return k;
      if (cpu->neon && (k = kiln_sgemm_kernel_neon())) return k;
      return kiln_sgemm_kernel_ref();
    case KILN_KERNEL_REF: return kiln_sgemm_kernel_ref();
    case KILN_KERNEL_AVX2:
      if (cpu->avx2_fma && (k = kiln_sgemm_kernel_avx2())) return k;
      kiln_error_set(err, KILN_E_UNSUPPORTED,
                     "kernel path avx2 was requested, but %s; use KILN_KERNEL_AUTO or REF",
                     kiln_sgemm_kernel_avx2() ? "this CPU (or OS) lacks AVX2+FMA"
                                              : "this build is not for x86-64");
      return NULL;
    case KILN_KERNEL_AVX512:
    case KILN_KERNEL_VNNI:
      if (path == KILN_KERNEL_VNNI && !cpu->avx512vnni) {
        kiln_error_set(err, KILN_E_UNSUPPORTED,
                       "kernel path vnni was requested, but this CPU (or build) lacks AVX-512 VNNI; "
                       "use KILN_KERNEL_AUTO or REF");
        return NULL;
      }
      if (cpu->avx512f && (k = kiln_sgemm_kernel_avx512())) return k;
      kiln_error_set(err, KILN_E_UNSUPPORTED,
                     "kernel path avx512 was requested, but %s; use KILN_KERNEL_AUTO or REF",
                     kiln_sgemm_kernel_avx512() ? "this CPU (or OS) lacks AVX-512F/BW/DQ/VL"
                                                : "this build is not for x86-64");
      return NULL;
    case KILN_KERNEL_NEON:
    case KILN_KERNEL_DOTPROD:
      if (path == KILN_KERNEL_DOTPROD && !cpu->dotprod) {
        kiln_error_set(err, KILN_E_UNSUPPORTED,
                       "kernel path dotprod was requested, but this CPU (or build) lacks the "
                       "Armv8.2 dot product; use KILN_KERNEL_AUTO or REF");
        return NULL;
      }
      if (cpu->neon && (k = kiln_sgemm_kernel_neon())) return k;
      kiln_error_set(err, KILN_E_UNSUPPORTED,
                     "kernel path neon was requested, but %s; use KILN_KERNEL_AUTO or REF",
                     kiln_sgemm_kernel_neon() ? "this CPU lacks NEON" : "this build is not for ARM");
      return NULL;
  }
  kiln_error_set(err, KILN_E_INVALID, "kernel path %d is not one of AUTO, REF, AVX2, AVX512, NEON, VNNI, DOTPROD",
                 (int)path);
  return NULL;
}

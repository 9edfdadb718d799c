// AFD_SIMD_CLONES: the CPU kernels' arithmetic loops are also compiled for AVX2+FMA and AVX-512 and
// chosen when the library loads: the build's x86-64 baseline (SSE2) would leave most of the vector
// units idle.
#pragma once

#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 11 && defined(__x86_64__) && defined(__ELF__)
#define AFD_SIMD_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define AFD_SIMD_CLONES
#endif

/* The widest SIMD extension this build was compiled for. */
#ifndef FO_SIMD_H
#define FO_SIMD_H
#if defined(__AVX512F__)
#define FO_SIMD "avx512f"
#elif defined(__AVX2__)
#define FO_SIMD "avx2"
#elif defined(__AVX__)
#define FO_SIMD "avx"
#elif defined(__SSE4_2__)
#define FO_SIMD "sse4.2"
#elif defined(__SSE2__) || defined(__x86_64__)
#define FO_SIMD "sse2"
#elif defined(__ARM_NEON) || defined(__aarch64__)
#define FO_SIMD "neon"
#else
#define FO_SIMD "scalar"
#endif
#endif

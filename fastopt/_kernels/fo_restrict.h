/* Non-aliasing pointer types for the kernels: the engine refuses overlapping
   buffers, so the compiler may vectorise without runtime alias checks. */
#ifndef FO_RESTRICT_H
#define FO_RESTRICT_H
typedef float * __restrict fo_f32p;
typedef const float * __restrict fo_cf32p;
typedef double * __restrict fo_f64p;
typedef const double * __restrict fo_cf64p;
#endif

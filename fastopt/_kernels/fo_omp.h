/* OpenMP queries that also compile without OpenMP (the build then runs serially). */
#ifndef FO_OMP_H
#define FO_OMP_H
#ifdef _OPENMP
#include <omp.h>
static int fo_openmp_enabled(void) { return 1; }
static int fo_omp_max_threads(void) { return omp_get_max_threads(); }
#else
static int fo_openmp_enabled(void) { return 0; }
static int fo_omp_max_threads(void) { return 1; }
#endif

/* Seconds on a monotonic clock: when did the thread team last work (see driver.pyx). */
#include <time.h>
static double fo_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Seconds one `pause` takes (the body of libgomp's spin loop on x86), fastest of 5
   runs of n; 0 where the spin loop's instruction is unknown. */
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
static double fo_pause_seconds(int n) {
    double best = 1e300;
    for (int r = 0; r < 5; r++) {
        double t0 = fo_now();
        for (int i = 0; i < n; i++) _mm_pause();
        double t = (fo_now() - t0) / n;
        if (t < best) best = t;
    }
    return best;
}
#else
static double fo_pause_seconds(int n) { (void)n; return 0.0; }
#endif
#endif

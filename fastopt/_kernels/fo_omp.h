/* OpenMP queries that also compile without OpenMP (the build then runs serially). */
#ifndef FO_OMP_H
#define FO_OMP_H
#include <stddef.h>
#include <unistd.h>
#ifdef _OPENMP
#include <omp.h>
static int fo_openmp_enabled(void) { return 1; }
static int fo_omp_max_threads(void) { return omp_get_max_threads(); }
static int fo_omp_thread_limit(void) { return omp_get_thread_limit(); }
/* processors this process may run on (its affinity mask), as OpenMP counts them */
static int fo_num_procs(void) { return omp_get_num_procs(); }
#else
static int fo_openmp_enabled(void) { return 0; }
static int fo_omp_max_threads(void) { return 1; }
static int fo_omp_thread_limit(void) { return 1; }
static int fo_num_procs(void) { long n = sysconf(_SC_NPROCESSORS_ONLN); return n > 0 ? (int)n : 1; }
#endif

/* Claim the next chunk of a shared counter: each value is handed to exactly one thread. */
static inline Py_ssize_t fo_claim(Py_ssize_t *counter) {
    return __atomic_fetch_add(counter, 1, __ATOMIC_RELAXED);
}

/* Seconds on a monotonic clock: when did the thread team last work (see driver.pyx). */
#include <time.h>
static double fo_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Sleep (tests use it to make one team member arrive late, as a busy machine does). */
static void fo_sleep(double seconds) {
    if (seconds <= 0.0) return;
    struct timespec ts;
    ts.tv_sec = (time_t)seconds;
    ts.tv_nsec = (long)((seconds - (double)ts.tv_sec) * 1e9);
    nanosleep(&ts, NULL);
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

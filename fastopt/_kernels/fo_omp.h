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
#endif

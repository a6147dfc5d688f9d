/* Software prefetch of a row a sparse step will update (or read) soon: its rows are
   scattered over a table far larger than the caches (and the TLB), where the hardware
   prefetchers, which stay inside a 4 KiB page, cannot see them coming. */
#ifndef FO_PREFETCH_H
#define FO_PREFETCH_H
#include <stddef.h>
#include <stdint.h>
/* every line of [a, a + bytes): a row may start inside a line, so its last line is
   asked for too */
#define FO_PREFETCH_LINES(a, bytes, rw, locality) \
    for (uintptr_t p_ = (uintptr_t)(a) & ~(uintptr_t)63; p_ < (uintptr_t)(a) + (uintptr_t)(bytes); p_ += 64) \
        __builtin_prefetch((const void *)p_, (rw), (locality))
static inline void fo_prefetch_span(const char *a, ptrdiff_t bytes) { FO_PREFETCH_LINES(a, bytes, 1, 3); }
/* a span that is only read */
static inline void fo_prefetch_read_span(const char *a, ptrdiff_t bytes) { FO_PREFETCH_LINES(a, bytes, 0, 3); }
/* a span asked for many lines ahead: into L2 (locality 2), whose miss queue is deeper than
   L1's. x86's prefetch-for-write has no level, so a row that will be written is fetched here
   for reading and asked for again, for writing, when it is a few rows away. */
static inline void fo_prefetch_l2_span(const char *a, ptrdiff_t bytes) { FO_PREFETCH_LINES(a, bytes, 0, 2); }
#endif

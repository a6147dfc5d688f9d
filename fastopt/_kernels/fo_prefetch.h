/* Software prefetch of a row a sparse step will update soon: its rows are scattered
   over a table far larger than the caches (and the TLB), where the hardware
   prefetchers, which stay inside a 4 KiB page, cannot see them coming. */
#ifndef FO_PREFETCH_H
#define FO_PREFETCH_H
#include <stddef.h>
#include <stdint.h>
static inline void fo_prefetch_span(const char *a, ptrdiff_t bytes) {
    for (ptrdiff_t off = 0; off < bytes; off += 64)
        __builtin_prefetch(a + off, 1, 3);
}
/* The lines of a span that is only read (a row may start inside a line: its last line
   is asked for too). */
static inline void fo_prefetch_read_span(const char *a, ptrdiff_t bytes) {
    for (uintptr_t p = (uintptr_t)a & ~(uintptr_t)63; p < (uintptr_t)a + (uintptr_t)bytes; p += 64)
        __builtin_prefetch((const void *)p, 0, 3);
}
#endif

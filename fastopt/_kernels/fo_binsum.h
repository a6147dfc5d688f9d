/* A group's binned (order-independent) sum, one cache line of columns at a time (16
   float32 or 8 float64): sparse.pyx's _binned_sum calls these for each line of its
   columns. The method and its constants are described there. Written in explicit GCC
   vectors so that the line's largest magnitudes, grids and two sums stay in registers
   for the whole group: the compiler's own loops over a variable number of columns kept
   them in stack arrays, and a power-law batch's many groups of a few rows spent more
   time on those than on their rows.

   The two line functions are not inlined: the vectorisation report (vecreport.py)
   reads their instructions by name. Each returns nonzero when a column of the line (among its first w) needs
   the caller's special case: all zeros (whose sign the grids lose) or an inf/NaN. Its
   value in out is then meaningless. A line narrower than 16 (8) columns is read
   through a zero-padded copy; the padding lanes are computed and dropped. */
#ifndef FO_BINSUM_H
#define FO_BINSUM_H
#include <stdint.h>
#include <string.h>
#include "fo_prefetch.h"

typedef float fo_bs_f16 __attribute__((vector_size(64), aligned(4)));
typedef float fo_bs_f8 __attribute__((vector_size(32)));
typedef uint32_t fo_bs_u16 __attribute__((vector_size(64)));
typedef int32_t fo_bs_i16 __attribute__((vector_size(64)));
typedef int32_t fo_bs_i8h __attribute__((vector_size(32)));
typedef double fo_bs_d8 __attribute__((vector_size(64), aligned(8)));
typedef uint64_t fo_bs_q8 __attribute__((vector_size(64)));
typedef int64_t fo_bs_i8 __attribute__((vector_size(64)));

#define FO_BS_AHEAD 16    /* rows prefetched ahead within a group (its rows are scattered) */
#define FO_BS_HALF ((uint64_t)1 << 51)

/* pf bytes of row i + FO_BS_AHEAD from the line on: the line, or (the first line of a
   small group) the rest of the row, which its next lines then find in cache */
static inline void fo_bs_ahead(const char *vals, const intptr_t *order, intptr_t i, intptr_t m, intptr_t rowbytes,
                               intptr_t off, intptr_t pf) {
    if (i + FO_BS_AHEAD < m)
        fo_prefetch_read_span(vals + order[i + FO_BS_AHEAD] * rowbytes + off, pf);
}

/* row i's columns [col, col + w) as one vector of N lanes, zero past w */
#define FO_BS_ROW_FN(name, T, V, N)                                                       \
    static inline V name(const T *vals, const intptr_t *order, intptr_t i, intptr_t dim,  \
                         intptr_t col, intptr_t w) {                                       \
        V v;                                                                               \
        const T *r = vals + order[i] * dim + col;                                          \
        if (w == (N)) {                                                                    \
            memcpy(&v, r, sizeof v);                                                       \
        } else {                                                                           \
            T pad[N] = {0};                                                                \
            memcpy(pad, r, (size_t)w * sizeof(T));                                         \
            memcpy(&v, pad, sizeof v);                                                     \
        }                                                                                  \
        return v;                                                                          \
    }
FO_BS_ROW_FN(fo_bs_row_f, float, fo_bs_f16, 16)
FO_BS_ROW_FN(fo_bs_row_d, double, fo_bs_d8, 8)

/* 1.5 * 2^k for each lane's k in the normal range, from bits */
static inline fo_bs_d8 fo_bs_pow2(fo_bs_i8 k) {
    fo_bs_q8 b = ((fo_bs_q8)(k + 1023) << 52) | FO_BS_HALF;
    fo_bs_d8 d;
    memcpy(&d, &b, sizeof d);
    return d;
}

/* q = (x + C1) - C1 into a1, ((x - q) + C2) - C2 into a2 */
#define FO_BS_GRIDS(x, c1, c2, a1, a2) do {                   \
        fo_bs_d8 q_ = ((x) + (c1)) - (c1);                     \
        fo_bs_d8 y_ = (x) - q_;                                \
        (a1) = (a1) + q_;                                      \
        (a2) = (a2) + ((y_ + (c2)) - (c2));                    \
    } while (0)

/* the first pass of a line, in the line functions below (their arguments and rb, off):
   mx (zeroed, a vector of U) gets each lane's largest magnitude, as bits, over the
   group's rows (X: a row's vector, read by ROW); inf and NaN lie above every finite value */
#define FO_BS_LARGEST(mx, U, X, ROW, absmask) do {                              \
        for (intptr_t i_ = 0; i_ < m; i_++) {                                   \
            fo_bs_ahead((const char *)vals, order, i_, m, rb, off, pf);         \
            X x_ = ROW(vals, order, i_, dim, col, w);                           \
            U u_;                                                               \
            memcpy(&u_, &x_, sizeof u_);                                        \
            u_ &= (absmask);                                                    \
            U gt_ = (U)(u_ > (mx));                                             \
            (mx) = (u_ & gt_) | ((mx) & ~gt_);                                  \
        }                                                                       \
    } while (0)

/* 1 when one of the line's first w lanes is special for the caller: all zeros (mx 0) or
   holding inf/NaN (mx at or above inf's bits) */
#define FO_BS_SPECIAL(mx, U, inf) __extension__({                               \
        U s_ = (U)((mx) == 0) | (U)((mx) >= (inf));                             \
        __typeof__(s_[0]) any_ = 0;                                             \
        for (intptr_t c_ = 0; c_ < w; c_++)                                     \
            any_ |= s_[c_];                                                     \
        any_ != 0;                                                              \
    })

__attribute__((noinline)) static int fo_bs_line_f(const float *vals, const intptr_t *order, intptr_t m, intptr_t dim, intptr_t col,
                        intptr_t w, int L, intptr_t pf, float *out) {
    const intptr_t rb = dim * (intptr_t)sizeof(float), off = col * (intptr_t)sizeof(float);
    fo_bs_u16 mx = {0};
    FO_BS_LARGEST(mx, fo_bs_u16, fo_bs_f16, fo_bs_row_f, 0x7FFFFFFFu);
    /* every |x| < 2^e, e = max(exponent field, 1) - 127 + 1 */
    fo_bs_i16 ef = (fo_bs_i16)(mx >> 23);
    ef = ef + ((fo_bs_i16)(ef < 1) & (1 - ef)) - 126;
    fo_bs_i8h elo = {ef[0], ef[1], ef[2], ef[3], ef[4], ef[5], ef[6], ef[7]};
    fo_bs_i8h ehi = {ef[8], ef[9], ef[10], ef[11], ef[12], ef[13], ef[14], ef[15]};
    fo_bs_i8 e0 = __builtin_convertvector(elo, fo_bs_i8), e1 = __builtin_convertvector(ehi, fo_bs_i8);
    const fo_bs_d8 c1lo = fo_bs_pow2(e0 + L), c1hi = fo_bs_pow2(e1 + L);
    const fo_bs_d8 c2lo = fo_bs_pow2(e0 + (2 * L - 53)), c2hi = fo_bs_pow2(e1 + (2 * L - 53));
    fo_bs_d8 a1lo = {0}, a1hi = {0}, a2lo = {0}, a2hi = {0};
    for (intptr_t i = 0; i < m; i++) {
        fo_bs_ahead((const char *)vals, order, i, m, rb, off, 64);
        fo_bs_f16 x = fo_bs_row_f(vals, order, i, dim, col, w);
        fo_bs_f8 lo = {x[0], x[1], x[2], x[3], x[4], x[5], x[6], x[7]};
        fo_bs_f8 hi = {x[8], x[9], x[10], x[11], x[12], x[13], x[14], x[15]};
        fo_bs_d8 xlo = __builtin_convertvector(lo, fo_bs_d8), xhi = __builtin_convertvector(hi, fo_bs_d8);
        FO_BS_GRIDS(xlo, c1lo, c2lo, a1lo, a2lo);
        FO_BS_GRIDS(xhi, c1hi, c2hi, a1hi, a2hi);
    }
    fo_bs_f8 slo = __builtin_convertvector(a1lo + a2lo, fo_bs_f8);
    fo_bs_f8 shi = __builtin_convertvector(a1hi + a2hi, fo_bs_f8);
    float res[16];
    memcpy(res, &slo, 32);
    memcpy(res + 8, &shi, 32);
    memcpy(out, res, (size_t)w * sizeof(float));
    return FO_BS_SPECIAL(mx, fo_bs_u16, 0x7F800000u);
}

__attribute__((noinline)) static int fo_bs_line_d(const double *vals, const intptr_t *order, intptr_t m, intptr_t dim, intptr_t col,
                        intptr_t w, int L, intptr_t pf, double *out) {
    const intptr_t rb = dim * (intptr_t)sizeof(double), off = col * (intptr_t)sizeof(double);
    fo_bs_q8 mx = {0};
    FO_BS_LARGEST(mx, fo_bs_q8, fo_bs_d8, fo_bs_row_d, 0x7FFFFFFFFFFFFFFFull);
    fo_bs_i8 e = (fo_bs_i8)(mx >> 52);
    e = e + ((fo_bs_i8)(e < 1) & (1 - e)) - 1022;
    /* a column whose grid would pass 2^1023 is scaled by 2^-64 (and back) */
    fo_bs_i8 big = (fo_bs_i8)(e + L > 1023);
    e = e - (big & 64);
    const fo_bs_q8 one = (fo_bs_q8){0} + 0x3FF0000000000000ull;              /* 1.0 */
    fo_bs_q8 sb = ((fo_bs_q8)big & 0x3BF0000000000000ull) | (~(fo_bs_q8)big & one);   /* 2^-64 */
    fo_bs_q8 bb = ((fo_bs_q8)big & 0x43F0000000000000ull) | (~(fo_bs_q8)big & one);   /* 2^64 */
    fo_bs_d8 s, back;
    memcpy(&s, &sb, sizeof s);
    memcpy(&back, &bb, sizeof back);
    const fo_bs_d8 c1 = fo_bs_pow2(e + L);
    fo_bs_d8 c2 = fo_bs_pow2(e + (2 * L - 53));
    fo_bs_i8 k2 = e + (2 * L - 53);
    for (int c = 0; c < 8; c++)             /* near the smallest normals: a subnormal C2 */
        if (k2[c] < -1022)
            c2[c] = __builtin_ldexp(1.5, (int)k2[c]);
    fo_bs_d8 a1 = {0}, a2 = {0};
    for (intptr_t i = 0; i < m; i++) {
        fo_bs_ahead((const char *)vals, order, i, m, rb, off, 64);
        fo_bs_d8 x = fo_bs_row_d(vals, order, i, dim, col, w) * s;
        FO_BS_GRIDS(x, c1, c2, a1, a2);
    }
    fo_bs_d8 sum = (a1 + a2) * back;
    memcpy(out, &sum, (size_t)w * sizeof(double));
    return FO_BS_SPECIAL(mx, fo_bs_q8, 0x7FF0000000000000ull);
}
#endif

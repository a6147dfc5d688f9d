/* Element conversions of the low-precision kernels (lowrules.pyx): bfloat16 and
   float16 held as their 16-bit patterns, and the 8-bit block-wise codes.

   Arithmetic is float32; these only load and store. bfloat16 stores round to nearest
   even (or stochastically from a counter-based hash), and keep NaN a NaN (plain
   rounding could carry a NaN whose payload sits in the low bits into infinity).
   float16 is converted with integer operations (see fo_f16_load). */
#ifndef FO_LOWPREC_H
#define FO_LOWPREC_H
#include <stdint.h>
#include <string.h>

typedef uint16_t * __restrict fo_u16p;
typedef const uint16_t * __restrict fo_cu16p;
typedef uint8_t * __restrict fo_u8p;
typedef float * __restrict fo_absp;

static inline uint32_t fo_f32_bits(float x) { uint32_t u; memcpy(&u, &x, 4); return u; }
static inline float fo_bits_f32(uint32_t u) { float x; memcpy(&x, &u, 4); return x; }

static inline float fo_bf16_load(uint16_t b) { return fo_bits_f32((uint32_t)b << 16); }

/* bfloat16 bits of float32 bits u rounded by adding `add` below bit 16 (0x7FFF + the
   kept lsb: nearest even; 16 random bits: stochastic); a NaN stays a quiet NaN of the
   same sign instead (the addition could carry its payload into infinity). */
static inline uint16_t fo_bf16_round(uint32_t u, uint32_t add) {
    uint32_t r = (u + add) >> 16;
    uint32_t q = (u >> 16) | 0x40u;
    return (uint16_t)((u & 0x7FFFFFFFu) > 0x7F800000u ? q : r);
}

static inline uint32_t fo_bf16_rne_add(uint32_t u) { return 0x7FFFu + ((u >> 16) & 1u); }

static inline uint16_t fo_bf16_store(float x) {
    uint32_t u = fo_f32_bits(x);
    return fo_bf16_round(u, fo_bf16_rne_add(u));
}

/* 16 random bits for element i of a stream keyed by (key, stream): lowbias32 of the
   element counter mixed with the key (as fastopt.lowprec.stochastic_bits computes). */
static inline uint32_t fo_sr_bits(uint32_t k0, uint32_t k1, uint32_t i) {
    uint32_t x = (i ^ k0) * 0x9E3779B1u + k1;
    x ^= x >> 16; x *= 0x21F0AAADu;
    x ^= x >> 15; x *= 0x735A2D97u;
    x ^= x >> 15;
    return x >> 16;
}

static inline uint16_t fo_bf16_store_sr(float x, uint32_t k0, uint32_t k1, uint32_t i) {
    return fo_bf16_round(fo_f32_bits(x), fo_sr_bits(k0, k1, i));
}

/* c ? a : b on masks: no branch for the vectoriser to refuse (a conditional float
   operation may trap, so GCC keeps such selects as control flow) */
static inline uint32_t fo_sel(uint32_t c, uint32_t a, uint32_t b) { uint32_t m = 0u - c; return (a & m) | (b & ~m); }

/* Stochastic (sr = 1) or nearest-even (sr = 0) by a flag: the loop that rounds the state
   stochastically also stores parameters, whose rounding is chosen apart. */
static inline uint16_t fo_bf16_store_by(float x, uint32_t sr, uint32_t k0, uint32_t k1, uint32_t i) {
    uint32_t u = fo_f32_bits(x);
    return fo_bf16_round(u, fo_sel(sr, fo_sr_bits(k0, k1, i), fo_bf16_rne_add(u)));
}

/* float16 <-> float32 in integer and float32 operations that vectorise (GCC 12 does not
   vectorise _Float16 conversions without AVX512-FP16). Loads are exact; stores round to
   nearest even, overflow to inf, and keep a NaN's sign and top payload bits (as NumPy). */
static inline float fo_f16_load(uint16_t b) {
    uint32_t h = b;
    uint32_t sign = (h & 0x8000u) << 16;
    uint32_t em = h & 0x7FFFu;
    uint32_t normal = (em << 13) + 0x38000000u;
    uint32_t infnan = (em << 13) | 0x7F800000u;
    float sub = (float)(int32_t)em * 5.9604644775390625e-8f;      /* subnormal: em * 2**-24, exact */
    uint32_t r = fo_sel(em >= 0x7C00u, infnan, normal);
    r = fo_sel(em < 0x0400u, fo_f32_bits(sub), r);
    return fo_bits_f32(r | sign);
}

static inline uint16_t fo_f16_store(float x) {
    uint32_t u = fo_f32_bits(x);
    uint32_t sign = (u >> 16) & 0x8000u;
    uint32_t a = u & 0x7FFFFFFFu;
    uint32_t normal = (a + 0xC8000FFFu + ((a >> 13) & 1u)) >> 13;     /* rebias by -112, round to even */
    uint32_t sub = fo_f32_bits(fo_bits_f32(a) + 0.5f) - 0x3F000000u;  /* the add rounds at 2**-24 */
    uint32_t nan = 0x7C00u + ((a & 0x7FFFFFu) >> 13);
    uint32_t r = fo_sel(a < 0x38800000u, sub, normal);
    r = fo_sel(a >= 0x477FF000u, 0x7C00u, r);                        /* 65520 and above: inf */
    r = fo_sel(a > 0x7F800000u, fo_sel(nan == 0x7C00u, 0x7C01u, nan), r);
    return (uint16_t)(r | sign);
}

/* --- 8-bit block-wise state -------------------------------------------------------
   fo_q8_map[m]: the 256 values of bitsandbytes' dynamic map (m = 0 signed, 1 unsigned).
   The nearest code of a normalised value x (the last code <= x by binary search, then
   the nearer neighbour, a tie going left) is found without the search: every float32
   whose top 16 bits fall in one bucket has one of two codes, base or base + 1, the
   second from a threshold on, and the threshold shares the bucket's top 16 bits. One
   32-bit word per bucket holds [has threshold:1][base:8][threshold's low 16 bits]: one
   gather from a 26 KB table (fastopt/lowprec/q8.py builds and checks it). */
#define FO_Q8_BLOCK 256
#define FO_Q8_LO16 0x3280u            /* top 16 bits of 2**-26: smaller magnitudes share bucket 0 */
#define FO_Q8_HI16 0x3F80u            /* top 16 bits of 1.0 */
#define FO_Q8_NB (FO_Q8_HI16 - FO_Q8_LO16 + 1)

static float fo_q8_map[2][256];
static uint32_t fo_q8_packed[2][2 * FO_Q8_NB];

static inline int32_t fo_q8_bucket(float x) {
    uint32_t u = fo_f32_bits(x);
    uint32_t mag = u & 0x7FFFFFFFu;
    int32_t k = (int32_t)(mag >> 16) - (int32_t)FO_Q8_LO16;
    k = k < 0 ? 0 : k;
    k = k > (int32_t)FO_Q8_NB - 1 ? (int32_t)FO_Q8_NB - 1 : k;
    k = k + (int32_t)(u >> 31) * (int32_t)FO_Q8_NB;
    return mag > 0x7F800000u ? (int32_t)FO_Q8_NB - 1 : k;   /* NaN: the code of 1.0 */
}

static inline uint8_t fo_q8_code(int m, float x) {
    uint32_t e = fo_q8_packed[m][fo_q8_bucket(x)];
    float thr = fo_bits_f32((fo_f32_bits(x) & 0xFFFF0000u) | (e & 0xFFFFu));
    uint32_t up = (x >= thr ? 1u : 0u) & (e >> 31);
    return (uint8_t)(((e >> 16) & 0xFFu) + up);
}

static inline float fo_q8_value(int m, uint8_t c) { return fo_q8_map[m][c]; }

/* Dequantising through AVX-512 VBMI byte permutes instead of gathers (a 16-lane
   gather costs ~5x more on the machines measured, see issue 12): the map is held as four
   planes of 256 bytes (byte p of each value's bits), each looked up for 64 codes at once
   by two 128-entry vpermi2b and a select on the code's top bit, and the four planes are
   interleaved back into floats. The values are the map's, bit for bit, times the same
   float32 absmax: the same results as the portable loop. FO_Q8_NO_VBMI forces that loop
   (the vectorisation report compiles it so). */
#if defined(__AVX512VBMI__) && defined(__AVX512BW__) && defined(__AVX512F__) && !defined(FO_Q8_NO_VBMI)
#define FO_Q8_VBMI 1
#include <immintrin.h>
static uint8_t fo_q8_planes[2][4][256] __attribute__((aligned(64)));

static void fo_q8_load_block_vbmi(int m, const uint8_t* __restrict q, float am, float* __restrict v, long n) {
    __m512i t[4][4];
    for (int p = 0; p < 4; p++)
        for (int k = 0; k < 4; k++) t[p][k] = _mm512_load_si512((const void*)&fo_q8_planes[m][p][64 * k]);
    /* the unpacks interleave within 128-bit lanes: code 16k + 4L + j is moved to byte
       16L + 4k + j first, so that output k holds the elements 16k .. 16k + 15 in order */
    static const uint8_t ix[64] __attribute__((aligned(64))) = {   /* ix[16L + 4k + j] = 16k + 4L + j */
        0, 1, 2, 3, 16, 17, 18, 19, 32, 33, 34, 35, 48, 49, 50, 51,
        4, 5, 6, 7, 20, 21, 22, 23, 36, 37, 38, 39, 52, 53, 54, 55,
        8, 9, 10, 11, 24, 25, 26, 27, 40, 41, 42, 43, 56, 57, 58, 59,
        12, 13, 14, 15, 28, 29, 30, 31, 44, 45, 46, 47, 60, 61, 62, 63};
    const __m512i perm = _mm512_loadu_si512((const void*)ix);
    const __m512 scale = _mm512_set1_ps(am);
    for (long b = 0; b < n; b += 64) {
        long r = n - b;
        __mmask64 lm = r >= 64 ? ~0ULL : ((1ULL << r) - 1);
        __m512i c = _mm512_permutexvar_epi8(perm, _mm512_maskz_loadu_epi8(lm, q + b));
        __mmask64 top = _mm512_movepi8_mask(c);
        __m512i pl[4];
        for (int p = 0; p < 4; p++)
            pl[p] = _mm512_mask_blend_epi8(top, _mm512_permutex2var_epi8(t[p][0], c, t[p][1]),
                                           _mm512_permutex2var_epi8(t[p][2], c, t[p][3]));
        __m512i w0 = _mm512_unpacklo_epi8(pl[0], pl[1]), w1 = _mm512_unpackhi_epi8(pl[0], pl[1]);
        __m512i u0 = _mm512_unpacklo_epi8(pl[2], pl[3]), u1 = _mm512_unpackhi_epi8(pl[2], pl[3]);
        __m512i d[4] = {_mm512_unpacklo_epi16(w0, u0), _mm512_unpackhi_epi16(w0, u0),
                        _mm512_unpacklo_epi16(w1, u1), _mm512_unpackhi_epi16(w1, u1)};
        for (int k = 0; k < 4 && r > 16 * k; k++) {
            long rk = r - 16 * k;
            __mmask16 sm = rk >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << rk) - 1);
            _mm512_mask_storeu_ps(v + b + 16 * k, sm, _mm512_mul_ps(_mm512_castsi512_ps(d[k]), scale));
        }
    }
}
#endif

/* A block of n <= 256 codes into float32 values (scale am). Not inlined: alone it
   vectorises (gathers); inside a kernel's body GCC gave up on it. */
__attribute__((noinline)) static void fo_q8_load_block(int m, const uint8_t* __restrict q, float am,
                                                       float* __restrict v, long n) {
#ifdef FO_Q8_VBMI
    fo_q8_load_block_vbmi(m, q, am, v, n);
#else
    for (long j = 0; j < n; j++) v[j] = fo_q8_map[m][q[j]] * am;
#endif
}

/* Requantise a block of n values: absmax = max |v| (on the bit patterns, NaN as 0),
   codes of v / absmax (all `zero` for an all-zero block). Returns the absmax. */
__attribute__((noinline)) static float fo_q8_store_block(int m, const float* __restrict v, uint8_t* __restrict q,
                                                         long n, uint8_t zero) {
    int32_t mx = 0;
    for (long j = 0; j < n; j++) {
        int32_t u = (int32_t)(fo_f32_bits(v[j]) & 0x7FFFFFFFu);
        u = u > 0x7F800000 ? 0 : u;
        mx = u > mx ? u : mx;
    }
    float am = fo_bits_f32((uint32_t)mx);
    if (am > 0.0f) {
        for (long j = 0; j < n; j++) q[j] = fo_q8_code(m, v[j] / am);
    } else {
        for (long j = 0; j < n; j++) q[j] = zero;
    }
    return am;
}

static inline void fo_q8_set(int m, const float* map, const uint32_t* packed) {
    memcpy(fo_q8_map[m], map, sizeof(fo_q8_map[m]));
    memcpy(fo_q8_packed[m], packed, sizeof(fo_q8_packed[m]));
#ifdef FO_Q8_VBMI
    for (int c = 0; c < 256; c++)
        for (int p = 0; p < 4; p++) fo_q8_planes[m][p][c] = (uint8_t)(fo_f32_bits(map[c]) >> (8 * p));
#endif
}
#endif

/* CPU kernels. The decoding step: a few rows (one document's beams) against a large matrix that is
 * streamed from memory once. MKL's GEMM reaches ~14 GB/s on these shapes (M = 5) on our 2-core VM;
 * these reach ~30 GB/s, what DRAM gives. And the encoder's LSG attention (local_attention), read
 * from the projections' layout. Compiled on first use by cpukernels.py (gcc, -march=native), called
 * through ctypes, threaded with the OpenMP runtime torch already loaded.
 *
 * Tiled layout: a matrix W (O, I) is stored as ceil(O / 64) tiles of (I, 64): tile t holds rows
 * t*64 .. t*64+63 of W transposed, zero-padded past O, so that computing 64 outputs reads one
 * contiguous 64 x I block. Rows x (R, I), R <= 8, stay in registers as broadcasts. With AVX512-BF16
 * (HAVE_DP), bf16 matrices use pair tiles instead: (ceil(I / 2), 64, 2), element (i, i+1) of each
 * of the 64 rows side by side, as vdpbf16ps reads them.
 *
 * Element types: "f32" = float; "bf16" = bfloat16 stored as uint16, computed in float32 (widened, or
 * vdpbf16ps's exact products) and rounded to nearest even on output (what torch's bf16 matmul does).
 * Accumulation is always float32.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <immintrin.h>
#if defined(__AVX512BF16__)
#define HAVE_DP 1
#else
#define HAVE_DP 0
#endif

#if HAVE_DP && defined(__AMX_TILE__) && defined(__AMX_BF16__)
#define HAVE_AMX 1
#include <sys/syscall.h>
#include <unistd.h>
#else
#define HAVE_AMX 0
#endif

/* Whether bf16 products use AVX512-BF16 pairs (vdpbf16ps): then bf16 cross-attention keys come in
 * pair tiles (see cross_attention). */
int has_dp(void) { return HAVE_DP; }

/* Whether the pair products run on AMX tiles (set_amx) instead of vdpbf16ps: the same pair layouts
 * and float32 sums. On Intel's Sapphire Rapids vdpbf16ps issues at ~1 per 2 cycles, too slow to keep
 * up with DRAM when a step multiplies 5 rows by a streamed matrix (~7 GB/s a core, of ~14); AMX's
 * tdpbf16ps with software prefetch streams at ~13 GB/s. Chosen by measurement (cpuplan.py). */
static int amx_on = 0;
int has_amx(void) { return HAVE_AMX; }
/* on != 0: use AMX where compiled in and where the kernel grants this process the tile state
 * (arch_prctl ARCH_REQ_XCOMP_PERM, Linux >= 5.16). Returns whether AMX is now on. */
int set_amx(int on) {
#if HAVE_AMX
    if (on && syscall(SYS_arch_prctl, 0x1023 /* ARCH_REQ_XCOMP_PERM */, 18 /* XFEATURE_XTILEDATA */) != 0) on = 0;
    amx_on = on != 0;
#else
    (void)on;
#endif
    return amx_on;
}

#define TILE 64
#define MAXR 8
/* The row products (TILE_FN, pv_plain_n) work in the machine's own registers (vn: 16 floats with
 * AVX-512, 8 with AVX2; GCC keeps arrays of wider vectors in memory) and keep CPASS of them per row
 * at once: a 64-column tile's 4 with AVX-512's 32 registers; 2 of 8 with AVX2's 16, each block of
 * the tile then read in 4 passes of 16 columns (see TILE_FN for the layout that makes them streams). */
#if defined(__AVX512F__)
#define VN 16 /* floats in a register */
#define CPASS 4 /* registers of columns a pass */
#else
#define VN 8
#define CPASS 2
#endif
#define NVN (TILE / VN) /* registers of a 64-column row */
#define NPASS (NVN / CPASS) /* passes of the row products over a block: 1 with AVX-512, 4 with AVX2 */
#define PASSW (VN * CPASS) /* columns a pass reads: 64 with AVX-512, 16 with AVX2 */
/* passes of the row products over a tile's block: how CpuKernels.tile lays a tile out */
int tile_passes(void) { return NPASS; }
/* bytes ahead that the row products prefetch a streamed matrix: the hardware's own prefetch leaves
 * the memory ~25% idle between the FMAs (measured on the Intel Xeon: one core 9 -> 11 GB/s). The
 * vdpbf16ps pair products too: on the AMD EPYC (Zen 5) their cross-attention 22 -> 33-41 GB/s and
 * the decoder's weights 24 -> 42 GB/s, measured in the same runs. 8 KB, not 4: when the VM's memory
 * runs fast (a 60+ GB/s stream) 4 KB in flight per core no longer covers its latency; on the Zen 5,
 * builds A/B in one process: a 16k-token bf16 step 12.86 -> 12.18 ms, 4k 6.34 -> 6.08 ms, float32
 * unchanged, the AVX2 build unchanged or faster; at a slow (~40 GB/s) stream both distances equal. */
#ifndef STREAM_AHEAD
#define STREAM_AHEAD 8192
#endif
#define HEAD_DIM 64
#define BLOCK 64 /* terms summed in registers before joining the running total */
#define HGROUP 6 /* heads per self-attention task */
#define XCHUNK (4 * BLOCK) /* keys per chunk of the cross-attention's P V: a whole block of its sums */

typedef float vf __attribute__((vector_size(64)));                /* 16 floats */
typedef float vf_u __attribute__((vector_size(64), aligned(4)));  /* unaligned view */
typedef int32_t vi __attribute__((vector_size(64)));
typedef uint32_t vu __attribute__((vector_size(64)));
typedef uint16_t vh __attribute__((vector_size(32)));
typedef uint16_t vh_u __attribute__((vector_size(32), aligned(2)));

typedef float vn __attribute__((vector_size(VN * 4)));               /* one register */
typedef float vn_u __attribute__((vector_size(VN * 4), aligned(4)));
typedef uint32_t vnu __attribute__((vector_size(VN * 4)));
typedef uint16_t vnh_u __attribute__((vector_size(VN * 2), aligned(2)));
static inline vn loadn_f32(const float *p) { return *(const vn_u *)p; }
#if defined(__AVX512F__)
static inline vn loadn_bf16(const uint16_t *p) { return (vn)(__builtin_convertvector(*(const vnh_u *)p, vnu) << 16); }
#else
static inline vn loadn_bf16(const uint16_t *p) {
    return (vn)_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p)), 16);
}
#endif
static inline vf load_f32(const float *p) { return *(const vf_u *)p; }
static inline void store_f32(float *p, vf v) { *(vf_u *)p = v; }
static inline vf load_bf16(const uint16_t *p) {
    return (vf)(__builtin_convertvector(*(const vh_u *)p, vu) << 16);
}
static inline vf round_bf16(vf v) { /* v rounded to bf16 (to nearest even), kept as float32 */
    vu u = (vu)v;
    return (vf)((u + 0x7FFFu + ((u >> 16) & 1u)) & 0xFFFF0000u);
}
static inline void store_bf16(uint16_t *p, vf v) {
    *(vh_u *)p = __builtin_convertvector((vu)round_bf16(v) >> 16, vh);
}
static inline float bf16_to_f32(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}
static inline uint16_t f32_to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return (uint16_t)((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
}
static inline vf splat(float x) { return (vf){0} + x; }
static inline float rounded(float y, int bf16) { return bf16 ? bf16_to_f32(f32_to_bf16(y)) : y; }
#define LOG2E 1.4426950408889634f
#define DEFINE_SELECT(NAME, V, VI, OP) \
    static inline V NAME(V a, V b) { VI m = a OP b; return (V)((m & (VI)a) | (~m & (VI)b)); }
DEFINE_SELECT(vmax, vf, vi, >)
DEFINE_SELECT(vmin, vf, vi, <)

/* The only instructions that differ between the builds (one source, compiled per instruction set:
 * AVX-512, or AVX2 + FMA where vf, 16 floats, is two 8-float registers): rounding to the nearest
 * integer and scaling by 2^n. The AVX2 forms give the same bits: round-half-even by the 1.5 * 2^23
 * shift (|x| < 2^22 here), and y * 2^n as (y * 2^h) * 2^(n - h) with h = n / 2, the first product
 * exact, the second rounded once, as vscalefps rounds (n >= -150 > 2 * -126). */
#if defined(__AVX512F__)
static inline vf vround(vf x) {
    return (vf)_mm512_roundscale_ps((__m512)x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
}
static inline vf vscale2(vf y, vf n) { return (vf)_mm512_scalef_ps((__m512)y, (__m512)n); }
#else
/* n integral, -150 <= n <= 0; the shift read at run time: no constant folding of x + s - s */
#define DEFINE_ROUND_SCALE2(ROUND, SCALE2, V, VI)                                    \
    static inline V ROUND(V x) {                                                     \
        volatile float shift = 12582912.0f;                                          \
        V s = (V){0} + shift;                                                        \
        return (x + s) - s;                                                          \
    }                                                                                \
    static inline V SCALE2(V y, V n) {                                               \
        VI i = __builtin_convertvector(n, VI), h = i / 2;                            \
        return (y * (V)((h + 127) << 23)) * (V)((i - h + 127) << 23);                \
    }
DEFINE_ROUND_SCALE2(vround, vscale2, vf, vi)
#endif

/* exp for x <= 0 (softmax after subtracting the maximum): Cephes' expf polynomial, ~1 ulp, on
 * x = n ln2 + r with n the nearest integer (|r| <= ln2 / 2), 2^n applied by vscalefps;
 * exactly 0 below -87.3 (where float's exp underflows anyway). */
#define DEFINE_VEXP(NAME, V, VI, ROUND, SCALE2, MAX)                                            \
    static inline V NAME(V x) {                                                                     \
        VI under = x < -87.33654f;                                                                  \
        x = MAX(x, (V){0} - 87.33654f);                                                             \
        V n = ROUND(x * 1.44269504088896341f), fl = n;                                              \
        x -= fl * 0.693359375f;                                                                     \
        x -= fl * -2.12194440e-4f;                                                                  \
        V z = x * x;                                                                                \
        V y = (V){0} + 1.9875691500E-4f;                                                            \
        y = y * x + 8.3334519073E-3f;                                                               \
        y = y * x + 4.1665795894E-2f;                                                               \
        y = y * x + 1.6666665459E-1f;                                                               \
        y = y * x + 5.0000001201E-1f;                                                               \
        y = y * z + x + 1.0f;                                                                       \
        y = SCALE2(y, n);                                                                           \
        return (V)(~under & (VI)y);                                                                 \
    }
DEFINE_VEXP(vexp, vf, vi, vround, vscale2, vmax)
/* the same in the machine's own registers (vn): vexp itself with AVX-512, 8 floats with AVX2, where
 * GCC compiles vf's 16-float code poorly (the cross-attention's softmax ran at half speed) */
#if defined(__AVX512F__)
#define vexpn vexp
#define vmaxn vmax
#define vminn vmin
#else
typedef int32_t vni __attribute__((vector_size(VN * 4)));
DEFINE_SELECT(vmaxn, vn, vni, >)
DEFINE_SELECT(vminn, vn, vni, <)
DEFINE_ROUND_SCALE2(vroundn, vscale2n, vn, vni)
DEFINE_VEXP(vexpn, vn, vni, vroundn, vscale2n, vmaxn)
#endif
/* 2^x for x <= 0, ~1 ulp: Cephes' exp2f polynomial on x = n + f (|f| <= 1/2), 2^n applied by
 * vscalefps; exactly 0 below -150, where float's 2^x rounds to 0 anyway. */
static inline vf vexp2(vf x) {
    x = vmax(x, splat(-150.0f));
    vf n = vround(x), f = x - n;
    vf y = splat(1.535336188319500E-4f);
    y = y * f + 1.339887440266574E-3f;
    y = y * f + 9.618437357674640E-3f;
    y = y * f + 5.550332471162809E-2f;
    y = y * f + 2.402264791363012E-1f;
    y = y * f + 6.931472028550421E-1f;
    y = y * f + 1.0f;
    return vscale2(y, n);
}

#ifdef __clang__
#define SHUFFLE(v, ...) __builtin_shufflevector(v, v, __VA_ARGS__)
#define SHUFFLE8(v, ...) __builtin_shufflevector(v, v, __VA_ARGS__)
#else
#define SHUFFLE(v, ...) __builtin_shuffle(v, (vi){__VA_ARGS__})
#define SHUFFLE8(v, ...) __builtin_shuffle(v, (vni){__VA_ARGS__}) /* on vn with AVX2 (VN = 8) */
#endif
static inline float hsum(vf v) { /* a tree of lane shuffles: 4 adds, not 15 */
    v += SHUFFLE(v, 8, 9, 10, 11, 12, 13, 14, 15, 0, 1, 2, 3, 4, 5, 6, 7);
    v += SHUFFLE(v, 4, 5, 6, 7, 0, 1, 2, 3, 12, 13, 14, 15, 8, 9, 10, 11);
    v += SHUFFLE(v, 2, 3, 0, 1, 6, 7, 4, 5, 10, 11, 8, 9, 14, 15, 12, 13);
    v += SHUFFLE(v, 1, 0, 3, 2, 5, 4, 7, 6, 9, 8, 11, 10, 13, 12, 15, 14);
    return v[0];
}
static inline float hmax(vf v) {
    float m = v[0];
    for (int i = 1; i < 16; i++) m = v[i] > m ? v[i] : m;
    return m;
}
static inline float hmaxn(vn v) {
    float m = v[0];
    for (int i = 1; i < VN; i++) m = v[i] > m ? v[i] : m;
    return m;
}
static inline float hsumn(vn v) {
#if defined(__AVX512F__)
    return hsum(v);
#else
    float t = 0.f;
    for (int i = 0; i < VN; i++) t += v[i];
    return t;
#endif
}

/* sc[0..n) <- exp(sc - mx): the softmax numerators, in place, mx being the row's maximum; returns
 * 1 / their sum. */
static float numerators(float *sc, int n, float mx) {
    int s = 0;
#if defined(__AVX512F__)
    vf sum = (vf){0};
    for (; s + 16 <= n; s += 16) {
        vf e = vexp(load_f32(sc + s) - mx);
        store_f32(sc + s, e);
        sum += e;
    }
#else /* the same values and sums in AVX2's own registers (see vexpn): the local attention 1.5 -> 0.9 s a layer */
    vn sums[2] = {(vn){0}, (vn){0}};
    for (; s + 16 <= n; s += 16)
        for (int j = 0; j < 2; j++) {
            vn e = vexpn(loadn_f32(sc + s + VN * j) - mx);
            *(vn_u *)(sc + s + VN * j) = e;
            sums[j] += e;
        }
    vf sum;
    memcpy(&sum, sums, sizeof sum);
#endif
    float tot = hsum(sum);
    for (; s < n; s++) {
        sc[s] = vexp(splat(sc[s] - mx))[0];
        tot += sc[s];
    }
    return 1.0f / tot;
}

/* the same with the row's maximum found first */
static float softmax_numerators(float *sc, int n) {
    vf m = splat(-3.4028234663852886e38f);
    int s = 0;
    for (; s + 16 <= n; s += 16) m = vmax(m, load_f32(sc + s));
    float mx = hmax(m);
    for (; s < n; s++) mx = sc[s] > mx ? sc[s] : mx;
    return numerators(sc, n, mx);
}

/* ---- rows x tiled matrix: out[r][o] = sum_i x[r][i] * W[o][i] (+ bias[o]), x float32 ------------ */

/* tile_f32 / tile_bf16 (W float32 / bfloat16): res (R x 64 float32) = the R rows of x against tile t,
 * summed in blocks: error ~(BLOCK + in / BLOCK) ulp, not ~in. A tile (in, 64) lies pass by pass
 * within each block of BLOCK rows (CpuKernels.tile): [block][pass][row][PASSW columns], so that each
 * pass streams its columns from contiguous memory. With AVX-512 (one pass) that is the plain
 * (in, 64). With AVX2 the rows' 256 bytes used to lie together and the 4 passes each read one line
 * in four: the lines not read yet sat in the way of the hardware's prefetch, and the products
 * streamed at half the memory's rate (AMD EPYC Zen 3: the LM head 10.5 GB/s against a 22 GB/s stream). */
#define TILE_FN(NAME, T, LOAD)                                                                      \
    static inline void NAME(const int R, const float *x, int in, const T *w, int t, vf *res_v) {    \
        float *res = (float *)res_v;                                                                \
        const T *tile = w + (size_t)t * in * TILE;                                                  \
        for (int k = 0; k < R * TILE; k++) res[k] = 0.f;                                            \
        for (int i0 = 0; i0 < in; i0 += BLOCK) {                                                    \
            int i1 = i0 + BLOCK < in ? i0 + BLOCK : in;                                             \
            for (int c0 = 0; c0 < NVN; c0 += CPASS) { /* the passes over the block */             \
                vn acc[MAXR][CPASS];                                                                \
                for (int r = 0; r < R; r++)                                                         \
                    for (int j = 0; j < CPASS; j++) acc[r][j] = (vn){0};                            \
                const T *pass = tile + (size_t)i0 * TILE + (size_t)(c0 / CPASS) * (i1 - i0) * PASSW; \
                for (int i = i0; i < i1; i++) {                                                     \
                    const T *row = pass + (size_t)(i - i0) * PASSW;                                 \
                    /* the row's lines, STREAM_AHEAD bytes on: the passes, blocks and tiles follow on */ \
                    for (size_t c = 0; c < PASSW * sizeof(T); c += 64)                              \
                        __builtin_prefetch((const char *)row + STREAM_AHEAD + c);                   \
                    vn wv[CPASS];                                                                   \
                    for (int j = 0; j < CPASS; j++) wv[j] = LOAD(row + VN * j);                     \
                    for (int r = 0; r < R; r++) {                                                   \
                        vn xb = x[r * in + i] - (vn){0};                                            \
                        for (int j = 0; j < CPASS; j++) acc[r][j] += xb * wv[j];                    \
                    }                                                                               \
                }                                                                                   \
                for (int r = 0; r < R; r++)                                                         \
                    for (int j = 0; j < CPASS; j++) {                                               \
                        vn_u *dst = (vn_u *)(res + r * TILE + VN * (c0 + j));                       \
                        *dst = *dst + acc[r][j];                                                    \
                    }                                                                               \
            }                                                                                       \
        }                                                                                           \
    }
TILE_FN(tile_f32, float, loadn_f32)
TILE_FN(tile_bf16, uint16_t, loadn_bf16)
#undef TILE_FN

/* One tile for R rows, R a compile-time constant in each case so that the accumulators stay in
 * registers. bf16 != 0: w is uint16 bfloat16. */
static void tile_any(int R, int bf16, const float *x, int in, const void *w, int t, vf *res) {
#define CASE(n)                                                                   \
    case n:                                                                       \
        if (bf16) tile_bf16(n, x, in, (const uint16_t *)w, t, res);               \
        else tile_f32(n, x, in, (const float *)w, t, res);                        \
        break;
    switch (R) { CASE(1) CASE(2) CASE(3) CASE(4) CASE(5) CASE(6) CASE(7) CASE(8) }
#undef CASE
}

static inline float elem(const void *p, size_t k, int bf16) { /* p[k] as float32 */
    return bf16 ? bf16_to_f32(((const uint16_t *)p)[k]) : ((const float *)p)[k];
}
static inline void set_elem(void *p, size_t k, float y, int bf16) { /* p[k] = y, rounded for bf16 */
    if (bf16) ((uint16_t *)p)[k] = f32_to_bf16(y);
    else ((float *)p)[k] = y;
}
static inline vf vload(const void *p, size_t k, int bf16) { /* p[k .. k + 16) as float32 */
    return bf16 ? load_bf16((const uint16_t *)p + k) : load_f32((const float *)p + k);
}
static inline void vstore(void *p, size_t k, vf v, int bf16) { /* p[k .. k + 16) = v, rounded for bf16 */
    if (bf16) store_bf16((uint16_t *)p + k, v);
    else store_f32((float *)p + k, v);
}

#if HAVE_DP
/* p[0..32) = a, b rounded to bf16 (nearest even: store_bf16's rounding, in one vcvtne2ps2bf16) */
static inline void store_bf16x2(uint16_t *p, vf a, vf b) {
    _mm512_storeu_si512(p, (__m512i)_mm512_cvtne2ps_pbh((__m512)b, (__m512)a));
}
#endif

#if HAVE_AMX
typedef struct { uint8_t palette, start_row, reserved[14]; uint16_t colsb[16]; uint8_t rows[16]; } tilecfg_t;
#ifndef AMX_AHEAD
#define AMX_AHEAD 8192 /* bytes of a contiguous B prefetched ahead: DRAM's latency at ~14 GB/s a core */
#endif

/* Tiles 0 .. rowed-1: R rows (the sums, then the rows' pairs); the rest up to 7: 16 rows (a matrix's
 * 16 pairs); all 64 bytes wide. Loaded at each call: torch's oneDNN loads its own into the same threads. */
static inline void amx_config(const int R, const int rowed) {
    tilecfg_t cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.palette = 1;
    for (int i = 0; i < 8; i++) cfg.rows[i] = (uint8_t)(i < rowed ? R : 16), cfg.colsb[i] = 64;
    /* GCC's _tile_loadconfig names only the first 8 bytes of cfg as read: without this barrier -O3
     * may drop the stores to the rest (a #GP in ldtilecfg when inlined into attend_rows_amx) */
    __asm__ __volatile__("" : : "r"(&cfg) : "memory");
    _tile_loadconfig(&cfg);
}

/* One step of 16 pairs: tiles 0-3 += a's R rows (tile 4, astride bytes apart) times B's 4 groups of
 * 16 columns (group j at bp + j * gs, rows stride bytes apart; tiles 5-6). contiguous: B's rows follow
 * one another, its next 4 KB prefetched AMX_AHEAD bytes ahead, a quarter before each of its tiles: in
 * one burst of 64 the prefetches waited for the core's line fill buffers, stalling the tiles behind
 * them (perf, Intel Xeon model 167); spread, the cross-attention's values and the weights ran ~5% faster */
static inline __attribute__((always_inline)) void amx_step(const uint32_t *a, size_t astride, const uint32_t *bp,
                                                           size_t gs, size_t stride, const int contiguous) {
#define PFQ(j)                                                                                  \
    if (contiguous)                                                                             \
        for (int c = 0; c < 1024; c += 64) __builtin_prefetch((const char *)bp + AMX_AHEAD + 1024 * (j) + c);
    _tile_loadd(4, a, astride);
    PFQ(0)
    _tile_loadd(5, bp, stride);
    _tile_dpbf16ps(0, 4, 5);
    PFQ(1)
    _tile_loadd(6, bp + gs, stride);
    _tile_dpbf16ps(1, 4, 6);
    PFQ(2)
    _tile_loadd(5, bp + 2 * gs, stride);
    _tile_dpbf16ps(2, 4, 5);
    PFQ(3)
    _tile_loadd(6, bp + 3 * gs, stride);
    _tile_dpbf16ps(3, 4, 6);
#undef PFQ
}

/* res (4, R, 16) float32: the sums of tiles 0-3 */
static inline void amx_store_sums(const int R, float *res) {
    _tile_stored(0, res, 64);
    _tile_stored(1, res + R * 16, 64);
    _tile_stored(2, res + 2 * R * 16, 64);
    _tile_stored(3, res + 3 * R * 16, 64);
}

/* res (4, R, 16) float32 = R rows of a (n (k, k+1) pairs as uint32, rows lda apart) against B in 4
 * groups of 16 columns: row p of group j at b + j * gs + p * rs (uint32: a pair of bf16 per column).
 * n a multiple of 16. Tiles 0-3: the sums, 4: a, 5-6: B. contiguous: B's rows follow one another
 * (gs = 16, rs = 64), prefetched AMX_AHEAD bytes ahead. */
static void amx_product(const int R, const uint32_t *a, int n, size_t lda, const uint32_t *b, size_t gs, size_t rs,
                        int contiguous, float *res) {
    amx_config(R, 5);
    _tile_zero(0);
    _tile_zero(1);
    _tile_zero(2);
    _tile_zero(3);
    const size_t stride = rs * 4;
    for (int p = 0; p < n; p += 16) amx_step(a + p, lda * 4, b + (size_t)p * rs, gs, stride, contiguous);
    amx_store_sums(R, res);
}
#endif

/* A cross-attention's scores of key tile t (keys 64t .. 64t + n): rf (R, 64) the products ->
 * scores (R, S) = products * unit + mask, each row's maximum kept in mx (whole registers) and mxt
 * (a tile's last keys past a whole register) */
static inline void score_tile(const int R, const float *rf, int t, int S, float unit, const float *mf,
                              float *scores, vn *mx, float *mxt) {
    const int s0 = t * TILE, n = S - s0 < TILE ? S - s0 : TILE;
    for (int r = 0; r < R; r++) {
        float *dst = scores + (size_t)r * S + s0;
        int j = 0;
        for (; j + VN <= n; j += VN) {
            vn y = loadn_f32(rf + r * TILE + j) * unit + loadn_f32(mf + s0 + j);
            *(vn_u *)(dst + j) = y;
            mx[r] = vmaxn(mx[r], y);
        }
        for (; j < n; j++) {
            dst[j] = rf[r * TILE + j] * unit + mf[s0 + j];
            mxt[r] = dst[j] > mxt[r] ? dst[j] : mxt[r];
        }
    }
}

#if HAVE_AMX
/* R rows of q (32 (d, d+1) pairs as uint32: a 64-wide head) against each of `tiles` key pair tiles
 * (32, 64, 2) at kt, each tile's products scored (score_tile) as soon as they are out, while the
 * next tiles' keys are on their way (a separate pass over all the products left the memory idle:
 * ~4% of the cross-attention, 6 layers at 16k tokens in bf16 on the Intel Xeon model 167). One tile configuration
 * for all of them (amx_product's, per 64 keys, cost ~15% of the pass), q held in two tiles. Tiles
 * 0-3: the sums, 4-5: q's pairs 0-15 and 16-31, 6-7: keys. */
static void amx_scores(const int R, const uint32_t *q32, const uint32_t *kt, int tiles, int S, float unit,
                       const float *mf, float *scores, vn *mx, float *mxt) {
    float out[MAXR * TILE];
    amx_config(R, 6);
    _tile_loadd(4, q32, 128);
    _tile_loadd(5, q32 + 16, 128);
    for (int t = 0; t < tiles; t++) {
        const uint32_t *kp = kt + (size_t)t * 32 * TILE;
        _tile_zero(0);
        _tile_zero(1);
        _tile_zero(2);
        _tile_zero(3);
/* the next tile's 8 KB of keys, a quarter before each group's products (see amx_product's PFQ):
 * the keys' pass ~7% faster than with one burst of 128 prefetches a tile */
#define PF(j) for (int c = 0; c < 2048; c += 64) __builtin_prefetch((const char *)kp + AMX_AHEAD + 2048 * (j) + c);
#define KEYS(j, tb)                                 \
    PF(j)                                           \
    _tile_loadd(tb, kp + 16 * (j), 256);            \
    _tile_dpbf16ps(j, 4, tb);                       \
    _tile_loadd(tb, kp + 16 * 64 + 16 * (j), 256);  \
    _tile_dpbf16ps(j, 5, tb);
        KEYS(0, 6) KEYS(1, 7) KEYS(2, 6) KEYS(3, 7)
#undef KEYS
#undef PF
        _tile_stored(0, out, 256);
        _tile_stored(1, out + 16, 256);
        _tile_stored(2, out + 32, 256);
        _tile_stored(3, out + 48, 256);
        score_tile(R, out, t, S, unit, mf, scores, mx, mxt);
    }
}
#endif

#if HAVE_DP
/* bf16 with AVX512-BF16: tot (R x 64 float32) += R rows of a, each n (k, k+1) pairs as uint32 (rows
 * lda apart), against b (n, 64) uint32, [p][j] = (B[2p][j], B[2p+1][j]): the pair tiles of a weight
 * or of keys (B = W^T), or the values' pairs (B = V). Summed in blocks of `block` pairs. */
static inline __attribute__((always_inline)) void pairs_n(const int R, const uint32_t *a32, int n, size_t lda,
                                                          const uint32_t *b32, int block, vf tot[][4]) {
#if HAVE_AMX
    if (amx_on && n % 16 == 0) { /* all n summed in the tiles: float32 sums, as in blocks */
        float res[4 * MAXR * 16];
        amx_product(R, a32, n, lda, b32, 16, 64, 1, res);
        for (int r = 0; r < R; r++)
            for (int j = 0; j < 4; j++) tot[r][j] += load_f32(res + (j * R + r) * 16);
        return;
    }
#endif
    for (int p0 = 0; p0 < n; p0 += block) {
        const int p1 = p0 + block < n ? p0 + block : n;
        __m512 acc[MAXR][4];
        for (int r = 0; r < R; r++)
            for (int j = 0; j < 4; j++) acc[r][j] = _mm512_setzero_ps();
        for (int p = p0; p < p1; p++) {
            __m512bh b[4];
            const char *bp = (const char *)(b32 + (size_t)p * 64); /* 256 bytes a pair row; the next follow */
            for (int c = 0; c < 256; c += 64) __builtin_prefetch(bp + STREAM_AHEAD + c);
            for (int j = 0; j < 4; j++) b[j] = (__m512bh)_mm512_loadu_si512(b32 + (size_t)p * 64 + 16 * j);
            for (int r = 0; r < R; r++) {
                __m512bh a = (__m512bh)_mm512_set1_epi32((int)a32[r * lda + p]);
                for (int j = 0; j < 4; j++) acc[r][j] = _mm512_dpbf16_ps(acc[r][j], a, b[j]);
            }
        }
        for (int r = 0; r < R; r++)
            for (int j = 0; j < 4; j++) tot[r][j] += (vf)acc[r][j];
    }
}
static void pairs(int R, const uint32_t *a32, int n, const uint32_t *b32, int block, vf tot[][4]) {
#define CASE(k) case k: pairs_n(k, a32, n, n, b32, block, tot); break;
    switch (R) { CASE(1) CASE(2) CASE(3) CASE(4) CASE(5) CASE(6) CASE(7) CASE(8) }
#undef CASE
}
/* res (R x 64) = R rows of x's i2 pairs against one pair tile (i2, 64, 2) of a weight or of keys */
static void tile_pairs(int R, const uint32_t *x32, int i2, const uint32_t *wp, vf *res) {
    for (int k = 0; k < R * 4; k++) res[k] = (vf){0};
    pairs(R, x32, i2, wp, BLOCK / 2, (vf(*)[4])res);
}
#endif

/* res (R x 64) = R rows of x against tile t of w (I = in), in the layout this build keeps the dtype in:
 * bf16 with HAVE_DP, x as (in + 1) / 2 pairs and w in pair tiles; otherwise x widened to float32. */
static void tile_rows(int R, int bf16, const void *x, int in, const void *w, int t, vf *res) {
#if HAVE_DP
    if (bf16) {
        const int i2 = (in + 1) / 2;
        tile_pairs(R, (const uint32_t *)x, i2, (const uint32_t *)w + (size_t)t * i2 * TILE, res);
        return;
    }
#endif
    tile_any(R, bf16, (const float *)x, in, w, t, res);
}

/* out (R, O) = x (R, I) @ W^T + bias. bf16: x, w, bias, out are bfloat16 (w in pair tiles with
 * HAVE_DP: per 64 outputs (ceil(I / 2), 64, 2), zero past I); else float32. bias may be NULL. R <= 8.
 * logits: out is float32 and holds what torch's (x @ W^T).to(dtype) + bias, widened, holds: for bf16
 * the product rounded, the bias added and rounded again (the LM head's final_logits_bias is a
 * separate add in the model), then float32 for the log-softmax; for float32 the same as logits = 0. */
void rows_linear(const void *x, int R, int in, const void *w, const void *bias, int out_features,
                 void *out, int bf16, int logits) {
    const int i2 = (in + 1) / 2, dp = HAVE_DP && bf16;
    float *xf = (float *)malloc(sizeof(float) * (size_t)R * (dp ? i2 : in)); /* dp: x's pairs, uint32 */
    if (dp) {
        uint16_t *xp = (uint16_t *)xf;
        for (int r = 0; r < R; r++) {
            memcpy(xp + (size_t)r * 2 * i2, (const uint16_t *)x + (size_t)r * in, sizeof(uint16_t) * in);
            if (in % 2) xp[(size_t)r * 2 * i2 + in] = 0;
        }
    } else {
        for (size_t k = 0; k < (size_t)R * in; k++)
            xf[k] = elem(x, k, bf16);
    }
    int tiles = (out_features + TILE - 1) / TILE;
#pragma omp parallel
    {
        vf res[MAXR * TILE / 16];
#pragma omp for schedule(static)
        for (int t = 0; t < tiles; t++) {
            tile_rows(R, bf16, xf, in, w, t, res);
            const float *rf = (const float *)res;
            int o0 = t * TILE, n = out_features - o0 < TILE ? out_features - o0 : TILE;
            for (int r = 0; r < R; r++) {
                const size_t at = (size_t)r * out_features + o0;
                int j = 0;
                if (logits && bf16) { /* round, add, round: as torch's two bf16 operations */
                    for (; j + 16 <= n; j += 16) {
                        vf y = round_bf16(load_f32(rf + r * TILE + j)) + (bias ? vload(bias, o0 + j, 1) : (vf){0});
                        store_f32((float *)out + at + j, round_bf16(y));
                    }
                    for (; j < n; j++) {
                        float y = rounded(rf[r * TILE + j], 1) + (bias ? elem(bias, o0 + j, 1) : 0.f);
                        ((float *)out)[at + j] = rounded(y, 1);
                    }
                    continue;
                }
                for (; j + 16 <= n; j += 16) {
                    vf y = load_f32(rf + r * TILE + j) + (bias ? vload(bias, o0 + j, bf16) : (vf){0});
                    vstore(out, at + j, y, bf16);
                }
                for (; j < n; j++) {
                    float y = rf[r * TILE + j] + (bias ? elem(bias, o0 + j, bf16) : 0.f);
                    set_elem(out, at + j, y, bf16);
                }
            }
        }
    }
    free(xf);
}

/* tot (R, 64) += P V: p (R, S) float32 probabilities, rows lda apart; vp the values (bf16 widened),
 * pass c's PASSW columns of key s at element c * pstride + s * rstride: (S, 64) rows has pstride =
 * PASSW, rstride = 64; the cross-attention's chunks of S <= XCHUNK keys lie pass by pass
 * (CpuKernels.tile_values), pstride = S * PASSW, rstride = PASSW, so that each pass is a stream (see
 * TILE_FN). Summed in blocks of 4 x BLOCK keys. */
static inline __attribute__((always_inline)) void pv_plain_n(const int R, const float *p, int S, size_t lda,
                                                             const char *vp, size_t pstride, size_t rstride,
                                                             int bf16, vf tot[][4]) {
    vn acc[MAXR][CPASS];
    for (int s0 = 0; s0 < S; s0 += 4 * BLOCK) {
        int s1 = s0 + 4 * BLOCK < S ? s0 + 4 * BLOCK : S;
        for (int c0 = 0; c0 < NVN; c0 += CPASS) { /* CPASS registers of columns a pass, as in TILE_FN */
            for (int r = 0; r < R; r++)
                for (int j = 0; j < CPASS; j++) acc[r][j] = (vn){0};
            const size_t es = bf16 ? 2 : 4;
            for (int s = s0; s < s1; s++) {
                const size_t at = (size_t)(c0 / CPASS) * pstride + (size_t)s * rstride; /* elements */
                if (rstride == PASSW) /* a stream per pass (one pass of whole rows with AVX-512) */
                    for (size_t c = 0; c < PASSW * es; c += 64) __builtin_prefetch(vp + at * es + STREAM_AHEAD + c);
                else if (c0 == 0) /* rows: the first pass prefetches them whole */
                    for (size_t c = 0; c < HEAD_DIM * es; c += 64)
                        __builtin_prefetch(vp + (size_t)s * HEAD_DIM * es + STREAM_AHEAD + c);
                vn vv[CPASS];
                for (int j = 0; j < CPASS; j++)
                    vv[j] = bf16 ? loadn_bf16((const uint16_t *)vp + at + VN * j) : loadn_f32((const float *)vp + at + VN * j);
                for (int r = 0; r < R; r++) {
                    vn w = p[r * lda + s] - (vn){0};
                    for (int j = 0; j < CPASS; j++) acc[r][j] += w * vv[j];
                }
            }
            for (int r = 0; r < R; r++)
                for (int j = 0; j < CPASS; j++) {
                    float *t = (float *)tot[r] + VN * (c0 + j);
                    *(vn_u *)t = *(vn_u *)t + acc[r][j];
                }
        }
    }
}

/* tot (R, 64) += P V for n keys of a chunk: the probabilities p (R rows, lda elements apart), float32, or
 * with dp bf16 pairs of keys (lda pairs apart) against the values' pairs; vp at the chunk's first key.
 * Its own function, specialised per R (session 3 measured pv_plain_n ~10% slower when GCC inlined it
 * into cross_attention). */
static __attribute__((noinline)) void pv_chunk(int R, int dp, const void *p, size_t lda, int n, const void *vp,
                                               int bf16, vf tot[][4]) {
#if HAVE_DP
    if (dp) {
#define CASE(k) case k: pairs_n(k, (const uint32_t *)p, (n + 1) / 2, lda, (const uint32_t *)vp, 2 * BLOCK, tot); break;
        switch (R) { CASE(1) CASE(2) CASE(3) CASE(4) CASE(5) CASE(6) CASE(7) CASE(8) }
#undef CASE
        return;
    }
#endif
#define CASE(k) case k: pv_plain_n(k, (const float *)p, n, lda, (const char *)vp, (size_t)n * PASSW, PASSW, bf16, tot); break;
    switch (R) { CASE(1) CASE(2) CASE(3) CASE(4) CASE(5) CASE(6) CASE(7) CASE(8) }
#undef CASE
}

#if HAVE_AMX
/* tot (R, 64) += P V over a whole chunk of XCHUNK keys on AMX tiles, its numerators exp2(score -
 * row_max) computed 32 keys at a time between the values' tile loads: sr (R rows, S apart) the
 * chunk's scores in log2 units, vp its values' pairs (XCHUNK / 2, 64) uint32; each row's numerators
 * summed into sum[r] in key order. The same values as the numerators' loop and pv_chunk's amx_product
 * one after another (the same numerators, the same tile sums in the same order); interleaved, the
 * core's memory stays busy while it computes (one after another, the chunk's ~1 us of exp2 left it
 * idle: the values' pass streamed at ~75% of the read rate a core gets). */
static void amx_pv_chunk(const int R, const float *sr, size_t S, const float *row_max, vn *sum,
                         const uint32_t *vp, vf tot[][4]) {
    uint32_t a[2][MAXR * 16] __attribute__((aligned(64))); /* R rows of 16 pairs: a step's numerators */
    float res[4 * MAXR * 16];
    amx_config(R, 5);
    _tile_zero(0);
    _tile_zero(1);
    _tile_zero(2);
    _tile_zero(3);
    for (int p = 0; p < XCHUNK / 2; p += 16) {
        uint32_t *ap = a[(p / 16) & 1];
        for (int r = 0; r < R; r++) {
            const float *x = sr + (size_t)r * S + 2 * p;
            const vf e0 = vexp2(load_f32(x) - row_max[r]), e1 = vexp2(load_f32(x + 16) - row_max[r]);
            sum[r] += e0, sum[r] += e1;
            store_bf16x2((uint16_t *)(ap + r * 16), e0, e1);
        }
        amx_step(ap, 64, vp + (size_t)p * 64, 16, 256, 1);
    }
    amx_store_sums(R, res);
    for (int r = 0; r < R; r++)
        for (int j = 0; j < 4; j++) tot[r][j] += load_f32(res + (j * R + r) * 16);
}
#endif

/* ---- cross-attention of a decoding step ------------------------------------------------------------
 * For each document b and head h: softmax(q K^T + mask) V over S keys, R query rows (the beams).
 * q (B, H, R, 64) already scaled; kt: per (b, h), ceil(S / 64) tiles of (64, 64) (the keys' tiled
 * layout, I = head_dim), or for bf16 with HAVE_DP pair tiles (32, 64, 2): [p][j][e] = key j's
 * element 2p + e, which vdpbf16ps reads as they lie; v (B, H, S, 64), or for bf16 with HAVE_DP pairs
 * (B, H, ceil(S / 2), 64, 2): [s, d, e] = V[2s + e][d] (zero past S), the probabilities then being
 * rounded to bf16 as torch's flash attention does; mask (B, S) additive or NULL; out (B, H, R, 64).
 * bf16: q, kt, v, mask, out bfloat16; scores, softmax and sums in float32.
 * Two passes over a (document, head): the keys (scores and their maxima), then the values, the
 * softmax's numerators computed a chunk at a time just before the chunk's values are read (a separate
 * softmax pass left the memory idle for ~10% of the time; bf16 step -0.5 ms at 16k tokens). With
 * AVX512-BF16 the scores are kept in log2 units for vexp2 and rounded to bf16 pairs by
 * vcvtne2ps2bf16: the values' pass is compute-heavy enough to slow the stream (another -0.7 ms).
 */
void cross_attention(const void *q, const void *kt, const void *v, const void *mask, void *out,
                     int B, int H, int R, int S, int bf16) {
    const int D = HEAD_DIM, tiles = (S + TILE - 1) / TILE, dp = HAVE_DP && bf16;
    const size_t es = bf16 ? 2 : 4, all = (size_t)B * S;
    float *mask_f32 = (float *)malloc(sizeof(float) * all); /* every document's mask, once, as float32 */
    size_t i = 0;
    const float unit = dp ? LOG2E : 1.0f; /* dp: scores in log2 units, for vexp2 */
    for (; mask && i + 16 <= all; i += 16) store_f32(mask_f32 + i, vload(mask, i, bf16) * unit);
    for (; i < all; i++) mask_f32[i] = mask ? elem(mask, i, bf16) * unit : 0.f;
#pragma omp parallel
    {
        float *scores = (float *)malloc(sizeof(float) * (size_t)R * tiles * TILE);
        const int amx = HAVE_AMX && amx_on && dp; /* the keys' products on AMX tiles (amx_scores) */
        /* a chunk's probabilities as bf16 pairs (dp) */
        uint16_t *pb = dp ? (uint16_t *)malloc(sizeof(uint16_t) * (size_t)R * XCHUNK) : NULL;
        vf res[MAXR * TILE / 16];
        float qf[MAXR * HEAD_DIM];
#pragma omp for schedule(static)
        for (int bh = 0; bh < B * H; bh++) {
            int b = bh / H;
            const char *qp = (const char *)q + (size_t)bh * R * D * es;
            for (int k = 0; !dp && k < R * D; k++) /* widened, where not read in pairs */
                qf[k] = elem(qp, k, bf16);
            const float *mf = mask_f32 + (size_t)b * S;
            const char *kp = (const char *)kt + (size_t)bh * tiles * TILE * D * es;
            /* scores (R, S) = q K^T + mask, and each row's maximum */
            vn mx[MAXR]; /* the machine's own registers (vn) in the loops over S below: see vexpn */
            float mxt[MAXR];
            for (int r = 0; r < R; r++) mx[r] = (vn){0} - 3.4028234663852886e38f, mxt[r] = -3.4028234663852886e38f;
#if HAVE_AMX
            if (amx) amx_scores(R, (const uint32_t *)qp, (const uint32_t *)kp, tiles, S, unit, mf, scores, mx, mxt);
#endif
            for (int t = 0; !amx && t < tiles; t++) {
                tile_rows(R, bf16, dp ? (const void *)qp : qf, D, kp, t, res);
                score_tile(R, (const float *)res, t, S, unit, mf, scores, mx, mxt);
            }
            /* P V, XCHUNK keys at a time: each chunk's numerators exp(score - max) computed just before
             * its values are read, so that the softmax overlaps the values' stream; the sums and their
             * order are those of the whole rows (blocks of 4 x BLOCK keys or 2 x BLOCK pairs) */
            vf tot[MAXR][4];
            vn sum[MAXR];
            float row_max[MAXR];
            for (int r = 0; r < R; r++) {
                const float m = hmaxn(mx[r]);
                row_max[r] = m > mxt[r] ? m : mxt[r];
                sum[r] = (vn){0};
                for (int j = 0; j < 4; j++) tot[r][j] = (vf){0};
            }
            float tail[MAXR] = {0}; /* the numerators past the last whole VN */
            for (int c0 = 0; c0 < S; c0 += XCHUNK) {
                const int n = S - c0 < XCHUNK ? S - c0 : XCHUNK;
#if HAVE_AMX
                if (amx && n == XCHUNK) {
                    amx_pv_chunk(R, scores + c0, S, row_max, sum,
                                 (const uint32_t *)v + ((size_t)bh * ((S + 1) / 2) + c0 / 2) * D, tot);
                    continue;
                }
#endif
                for (int r = 0; r < R; r++) {
                    float *sr = scores + (size_t)r * S + c0;
                    uint16_t *pr = dp ? pb + (size_t)r * XCHUNK : NULL;
                    int j = 0;
#if HAVE_DP
                    for (; dp && j + 32 <= n; j += 32) {
                        vf e0 = vexp2(load_f32(sr + j) - row_max[r]), e1 = vexp2(load_f32(sr + j + 16) - row_max[r]);
                        sum[r] += e0, sum[r] += e1;
                        store_bf16x2(pr + j, e0, e1);
                    }
#endif
                    for (; j + VN <= n; j += VN) {
                        vn x = loadn_f32(sr + j) - row_max[r], e;
#if HAVE_DP
                        if (dp) {
                            e = vexp2(x);
                            store_bf16(pr + j, e);
                        } else
#endif
                        {
                            e = vexpn(x);
                            *(vn_u *)(sr + j) = e;
                        }
                        sum[r] += e;
                    }
                    for (; j < n; j++) {
                        vf x = splat(sr[j] - row_max[r]);
                        const float e = (dp ? vexp2(x) : vexp(x))[0];
                        tail[r] += e;
                        if (dp) pr[j] = f32_to_bf16(e);
                        else sr[j] = e;
                    }
                    if (dp && n % 2) pr[n] = 0;
                }
                if (dp) /* the probabilities' bf16 pairs against the values' pair layout */
                    pv_chunk(R, dp, pb, XCHUNK / 2, n, (const uint32_t *)v + ((size_t)bh * ((S + 1) / 2) + c0 / 2) * D,
                             bf16, tot);
                else
                    pv_chunk(R, dp, scores + c0, S, n, (const char *)v + ((size_t)bh * S + c0) * D * es, bf16, tot);
            }
            char *op = (char *)out + (size_t)bh * R * D * es;
            for (int r = 0; r < R; r++) {
                const float inv = 1.0f / (hsumn(sum[r]) + tail[r]);
                for (int j = 0; j < 4; j++) vstore(op, (size_t)r * D + 16 * j, tot[r][j] * inv, bf16);
            }
        }
        free(scores), free(pb);
    }
    free(mask_f32);
}

static inline void prefetch_run(const char *p, size_t bytes) { /* the cache lines of p[0 .. bytes) */
    for (size_t c = 0; c < bytes; c += 64) __builtin_prefetch(p + c);
}

/* ---- self-attention of a decoding step over the beams' histories ------------------------------------
 * q (N, H, 64) scaled, one token per row; cache_k, cache_v (max_len, N, H, 64): slot [p, j] holds the
 * key / value written at position p by row j; ancestry (n, N) int64: row r's history at position p
 * is in slot [p, ancestry[p][r]]. The beams' reordering only permutes `ancestry`, never the caches.
 * last (N) int64 or NULL: row r attends positions 0..last[r] (a row of a document that joined the
 * batch later, continuous batching), or all n. out (N, H, 64). bf16: q, caches, out bfloat16;
 * float32 inside.
 */
/* lane for lane what hsum(v) gives for the vf v whose 16 / VN registers are s[]: the same tree */
static inline float hsum_parts(const vn *s) {
#if defined(__AVX512F__)
    return hsum(s[0]);
#else
    vn v = s[0] + s[1]; /* hsum's first step: lane i + lane i + 8 */
    v += SHUFFLE8(v, 4, 5, 6, 7, 0, 1, 2, 3);
    v += SHUFFLE8(v, 2, 3, 0, 1, 6, 7, 4, 5);
    v += SHUFFLE8(v, 1, 0, 3, 2, 5, 4, 7, 6);
    return v[0];
#endif
}
static inline vn loadn(const char *p, size_t k, const int bf16) { /* p[k .. k + VN) as float32 */
    return bf16 ? loadn_bf16((const uint16_t *)p + k) : loadn_f32((const float *)p + k);
}

/* One self-attention task: row r, heads h0 .. h0 + hg, over its nr positions; p (hg, nr) scratch.
 * A head at a time, its query or sums in the machine's own registers (HEAD_DIM / VN of them), over
 * blocks of TBLOCK positions: the block's runs stay in L1 for the group's other heads, and each
 * head's pass prefetches its own lines of the next block. Each lane's sums are those of the 16-float
 * form (hsum_parts): the same values as before. With AVX2 that form kept every head's vectors at once
 * and spilled them (48 ymm): a 4k-token bf16 step's self-attention took 1.9 ms at position 130 and
 * 4.5 ms at 300 (6 GB/s); now 0.6 and 1.7 ms (float32: 2.0 -> 0.9, 4.9 -> 3.0 ms; AMD EPYC Zen 3). */
#define NV (HEAD_DIM / VN)
#define TBLOCK 8 /* positions a pass of the heads covers, prefetched a block ahead (16, 32: no faster) */
static inline __attribute__((always_inline)) void self_task(const int bf16, const void *q, const char *kc,
                                                            const char *vc, const int64_t *ancestry, void *out,
                                                            int N, int H, int r, int h0, int hg, int nr, float *p) {
    const int D = HEAD_DIM;
    const size_t es = bf16 ? 2 : 4, slot = (size_t)H * D, run = (size_t)hg * D * es;
#define AT(t) ((((size_t)(t) * N + (size_t)ancestry[(size_t)(t) * N + r]) * slot + (size_t)h0 * D) * es)
    for (int t = 0; t < nr && t < TBLOCK; t++) prefetch_run(kc + AT(t), run); /* the first block's */
    for (int t0 = 0; t0 < nr; t0 += TBLOCK) {
        const int t1 = t0 + TBLOCK < nr ? t0 + TBLOCK : nr;
        for (int h = 0; h < hg; h++) {
            vn qh[NV];
            for (int m = 0; m < NV; m++) qh[m] = loadn((const char *)q, ((size_t)r * H + h0 + h) * D + VN * m, bf16);
            for (int t = t0; t < t1; t++) {
                if (t + TBLOCK < nr) prefetch_run(kc + AT(t + TBLOCK) + (size_t)h * D * es, (size_t)D * es);
                const char *k = kc + AT(t) + (size_t)h * D * es;
                vn sp[16 / VN];
                for (int c = 0; c < 16 / VN; c++) sp[c] = (vn){0};
                for (int m = 0; m < NV; m++) sp[m % (16 / VN)] += qh[m] * loadn(k, VN * m, bf16);
                p[(size_t)h * nr + t] = hsum_parts(sp);
            }
        }
    }
    for (int t = 0; t < nr && t < TBLOCK; t++) prefetch_run(vc + AT(t), run); /* during the softmax */
    float inv[HGROUP];
    for (int h = 0; h < hg; h++) inv[h] = softmax_numerators(p + (size_t)h * nr, nr);
    vn sums[HGROUP][NV];
    for (int h = 0; h < hg; h++)
        for (int m = 0; m < NV; m++) sums[h][m] = (vn){0};
    for (int t0 = 0; t0 < nr; t0 += TBLOCK) {
        const int t1 = t0 + TBLOCK < nr ? t0 + TBLOCK : nr;
        for (int h = 0; h < hg; h++) {
            vn acc[NV];
            for (int m = 0; m < NV; m++) acc[m] = sums[h][m];
            for (int t = t0; t < t1; t++) {
                if (t + TBLOCK < nr) prefetch_run(vc + AT(t + TBLOCK) + (size_t)h * D * es, (size_t)D * es);
                const char *v = vc + AT(t) + (size_t)h * D * es;
                const vn w = p[(size_t)h * nr + t] - (vn){0};
                for (int m = 0; m < NV; m++) acc[m] += w * loadn(v, VN * m, bf16);
            }
            for (int m = 0; m < NV; m++) sums[h][m] = acc[m];
        }
    }
    for (int h = 0; h < hg; h++) {
        vf out16[4];
        memcpy(out16, sums[h], sizeof out16);
        for (int j = 0; j < 4; j++) vstore(out, ((size_t)r * H + h0 + h) * D + 16 * j, out16[j] * inv[h], bf16);
    }
#undef AT
}
#undef NV

void self_attention(const void *q, const void *cache_k, const void *cache_v, const int64_t *ancestry,
                    void *out, int N, int H, int n, const int64_t *last, int bf16) {
    /* One task per (row, group of up to HGROUP heads): a position's keys of those heads are one
     * contiguous run (HGROUP x 64 elements), fetched together (self_task): walking one head alone
     * meant a cache miss per 128 bytes, slots being N x H x 64 elements apart (~7 GB/s, the step's
     * self-attention grew to ~4 ms at 300 tokens). */
    const int groups = (H + HGROUP - 1) / HGROUP;
#pragma omp parallel
    {
        float *p = (float *)malloc(sizeof(float) * (size_t)HGROUP * (n > 0 ? n : 1));
#pragma omp for schedule(static)
        for (int rg = 0; rg < N * groups; rg++) {
            const int r = rg / groups, h0 = (rg % groups) * HGROUP;
            const int hg = H - h0 < HGROUP ? H - h0 : HGROUP;
            const int nr = last ? (int)last[r] + 1 : n; /* this row's positions */
            const char *kc = (const char *)cache_k, *vc = (const char *)cache_v;
            if (bf16) self_task(1, q, kc, vc, ancestry, out, N, H, r, h0, hg, nr, p);
            else self_task(0, q, kc, vc, ancestry, out, N, H, r, h0, hg, nr, p);
        }
        free(p);
    }
}

/* ---- the encoder's LSG block-local attention ------------------------------------------------------
 * q, k, v, out: (B, S, H * 64) row-major, as the projections write them; S = G + nb * bs: G global
 * tokens, then nb blocks of bs tokens. Block i's queries see the G globals and blocks i-1, i, i+1
 * (missing neighbours of the first and last blocks are skipped: the reference gives them a finfo.min
 * mask, which makes their weight exactly 0); the globals see all S tokens. mask (B, S) float32,
 * additive.
 *
 * A (document, head) at a time: its keys and values are packed once into the layouts the products
 * read (pack_head), in segments: the globals, then each block, each segment padded to a multiple of
 * SEG keys (zeros under a -inf mask), ~4 MB that the cache keeps for its tasks. Any task's window is
 * then the globals' segment and one run of block segments. One task per block and one for the
 * globals; its queries go in chunks of QCHUNK, MR rows at a time. (Packing each task's window
 * itself, three blocks' worth, cost ~10% more in bf16 and float32.)
 *
 * Products: bf16 with AVX512-BF16 uses vdpbf16ps on pairs (float32 sums; the probabilities are
 * rounded to bf16 before the values' product, as torch's flash attention does; the scores are kept
 * in log2 units for vexp2, ~5% faster than exp); otherwise float32 FMAs (bf16 inputs widened).
 * Scores, softmax and sums are float32.
 */
#define QCHUNK 64
#define KGROUPS 4 /* 16-key groups per score micro-tile */
#define SEG (16 * KGROUPS)
#define MR 6      /* query rows per micro-tile */

typedef struct {
    int wp, gp, local0;  /* the window's keys (a multiple of SEG); the globals' segment; the packed index
                          * of its first block segment */
    const float *maskw;  /* (wp) the window's mask, -inf on padding */
    float scale;
    const void *keys, *values; /* the head's packed keys and values (pack_head) */
} window_t;

/* scores of row m, keys of group g (16 of them): the products scaled, plus the window's mask; mx[m]
 * keeps the row's running maximum */
static inline void score_out(const window_t *w, float *sc, vf *mx, int m, int g, vf products) {
    vf y = products * w->scale + load_f32(w->maskw + g * 16);
    store_f32(sc + (size_t)m * w->wp + g * 16, y);
    mx[m] = vmax(mx[m], y);
}

#if !defined(__AVX512F__)
/* AVX2's 16 registers: one group of 16 keys, R x 2 of them (attend_rows runs a group against all the
 * chunk's rows, its 4 KB of keys staying in L1) */
static inline __attribute__((always_inline)) void qk_group(const int R, const float *qf, const float *kg,
                                                           const window_t *w, float *sc, vf *mx, int g) {
    vn acc[MR][2];
    for (int m = 0; m < R; m++) acc[m][0] = acc[m][1] = (vn){0};
    for (int d = 0; d < HEAD_DIM; d++) {
        const vn b0 = loadn_f32(kg + d * 16), b1 = loadn_f32(kg + d * 16 + VN);
        for (int m = 0; m < R; m++) {
            const vn a = qf[m * HEAD_DIM + d] - (vn){0};
            acc[m][0] += a * b0, acc[m][1] += a * b1;
        }
    }
    for (int m = 0; m < R; m++) { /* score_out's values, lane for lane, in AVX2's registers */
        vn *mxn = (vn *)&mx[m];
        for (int j = 0; j < 2; j++) {
            const vn y = acc[m][j] * w->scale + loadn_f32(w->maskw + g * 16 + VN * j);
            *(vn_u *)(sc + (size_t)m * w->wp + g * 16 + VN * j) = y;
            mxn[j] = vmaxn(mxn[j], y);
        }
    }
}
#endif
#if defined(__AVX512F__)
/* float32: kf (KGROUPS, 64, 16) the keys of groups j0 .. j0 + KGROUPS; qf (rows, 64); scores (rows, wp) */
static inline __attribute__((always_inline)) void qk_f32(const int R, const float *qf, const float *kf,
                                                         const window_t *w, float *sc, vf *mx, int j0) {
    vf acc[MR][KGROUPS];
    for (int m = 0; m < R; m++)
        for (int j = 0; j < KGROUPS; j++) acc[m][j] = (vf){0};
    for (int d = 0; d < HEAD_DIM; d++) {
        vf b[KGROUPS];
        for (int j = 0; j < KGROUPS; j++) b[j] = load_f32(kf + ((size_t)j * HEAD_DIM + d) * 16);
        for (int m = 0; m < R; m++) {
            vf a = splat(qf[m * HEAD_DIM + d]);
            for (int j = 0; j < KGROUPS; j++) acc[m][j] += a * b[j];
        }
    }
    for (int m = 0; m < R; m++)
        for (int j = 0; j < KGROUPS; j++) score_out(w, sc, mx, m, j0 + j, acc[m][j]);
}
#endif

#if HAVE_DP
/* bf16 pairs: kp (KGROUPS, 32, 16) uint32, the keys' (d, d+1) pairs; q32 rows of 32 pairs, ldq apart */
static inline __attribute__((always_inline)) void qk_dp(const int R, const uint32_t *q32, size_t ldq,
                                                        const uint32_t *kp, const window_t *w, float *sc, vf *mx,
                                                        int j0) {
    __m512 acc[MR][KGROUPS];
    for (int m = 0; m < R; m++)
        for (int j = 0; j < KGROUPS; j++) acc[m][j] = _mm512_setzero_ps();
    for (int p = 0; p < HEAD_DIM / 2; p++) {
        __m512bh b[KGROUPS];
        for (int j = 0; j < KGROUPS; j++)
            b[j] = (__m512bh)_mm512_loadu_si512(kp + ((size_t)j * (HEAD_DIM / 2) + p) * 16);
        for (int m = 0; m < R; m++) {
            __m512bh a = (__m512bh)_mm512_set1_epi32((int)q32[m * ldq + p]);
            for (int j = 0; j < KGROUPS; j++) acc[m][j] = _mm512_dpbf16_ps(acc[m][j], a, b[j]);
        }
    }
    for (int m = 0; m < R; m++)
        for (int j = 0; j < KGROUPS; j++) score_out(w, sc, mx, m, j0 + j, (vf)acc[m][j]);
}

/* row[0..n) <- 2^(row - mx) rounded to bf16 (the scores being in log2 units), in place at the row's
 * start (each store lands before the floats still to be read); n a multiple of 32. Returns 1 / the
 * sum of the float32 numerators. */
static float numerators_bf16(float *row, int n, float mx) {
    uint16_t *p16 = (uint16_t *)row;
    vf sum = (vf){0};
    for (int s = 0; s < n; s += 32) {
        vf e0 = vexp2(load_f32(row + s) - mx), e1 = vexp2(load_f32(row + s + 16) - mx);
        sum += e0, sum += e1;
        store_bf16x2(p16 + s, e0, e1);
    }
    return 1.0f / hsum(sum);
}
#endif

#define ROWS_SWITCH(R, CALL) \
    switch (R) { case 1: CALL(1); break; case 2: CALL(2); break; case 3: CALL(3); break; \
                 case 4: CALL(4); break; case 5: CALL(5); break; default: CALL(6); break; }

/* the token at packed index s (see local_attention's segments), or -1 for the padding */
static inline int packed_token(int s, int G, int gp, int bs, int bsp) {
    return s < gp ? (s < G ? s : -1) : ((s - gp) % bsp < bs ? G + (s - gp) / bsp * bs + (s - gp) % bsp : -1);
}

/* dst (64, 2) bf16: [d, e] = (a, b)[e][d], the pairs of two 64-wide rows; a or b NULL: zeros */
static inline void interleave_rows(uint16_t *dst, const uint16_t *a, const uint16_t *b) {
#if defined(__AVX512BW__)
    const __m512i lo = _mm512_set_epi16(47, 15, 46, 14, 45, 13, 44, 12, 43, 11, 42, 10, 41, 9, 40, 8, 39, 7, 38, 6,
                                        37, 5, 36, 4, 35, 3, 34, 2, 33, 1, 32, 0);
    const __m512i hi = _mm512_add_epi16(lo, _mm512_set1_epi16(16));
    for (int j = 0; j < 2; j++) { /* two permutes per 32 values instead of 64 scalar moves */
        const __m512i x = a ? _mm512_loadu_si512(a + 32 * j) : _mm512_setzero_si512();
        const __m512i y = b ? _mm512_loadu_si512(b + 32 * j) : _mm512_setzero_si512();
        _mm512_storeu_si512(dst + 64 * j, _mm512_permutex2var_epi16(x, lo, y));
        _mm512_storeu_si512(dst + 64 * j + 32, _mm512_permutex2var_epi16(x, hi, y));
    }
#else
    for (int d = 0; d < HEAD_DIM; d++) dst[2 * d] = a ? a[d] : 0, dst[2 * d + 1] = b ? b[d] : 0;
#endif
}

/* Keys s0 .. s1 of one (document, head)'s keys and values, packed: Sp = gp + nb * bsp keys in all
 * (see local_attention), the padding's zeros included.
 * dp: keys (Sp / 16, 32, 16) uint32 pairs (d, d+1), values (Sp / 2, 64, 2) bf16 pairs of keys;
 * else keys (Sp / 16, 64, 16) and values (Sp, 64), float32. */
static void pack_head(const void *k, const void *v, size_t doc, int D, int h, int G, int gp, int bs, int bsp,
                      int s0, int s1, int dp, int bf16, void *kdst, void *vdst) {
    if (dp) { /* two keys at a time (s0, s1 even) */
        uint32_t *kp = (uint32_t *)kdst;
        const uint32_t *k32 = (const uint32_t *)k;
        for (int s = s0; s < s1; s += 2) {
            const uint16_t *rows[2];
            for (int e = 0; e < 2; e++) {
                const int tok = packed_token(s + e, G, gp, bs, bsp);
                const size_t row = (doc + (tok < 0 ? 0 : tok)) * D + (size_t)h * HEAD_DIM;
                for (int p = 0; p < HEAD_DIM / 2; p++)
                    kp[((size_t)((s + e) / 16) * (HEAD_DIM / 2) + p) * 16 + (s + e) % 16] = tok < 0 ? 0 : k32[row / 2 + p];
                rows[e] = tok < 0 ? NULL : (const uint16_t *)v + row;
            }
            interleave_rows((uint16_t *)vdst + (size_t)(s / 2) * HEAD_DIM * 2, rows[0], rows[1]);
        }
        return;
    }
    float *kf = (float *)kdst, *vf32 = (float *)vdst;
    for (int s = s0; s < s1; s++) {
        const int tok = packed_token(s, G, gp, bs, bsp);
        const size_t row = (doc + (tok < 0 ? 0 : tok)) * D + (size_t)h * HEAD_DIM;
        for (int d = 0; d < HEAD_DIM; d++) {
            kf[((size_t)(s / 16) * HEAD_DIM + d) * 16 + s % 16] = tok < 0 ? 0.f : elem(k, row + d, bf16);
            vf32[(size_t)s * HEAD_DIM + d] = tok < 0 ? 0.f : elem(v, row + d, bf16);
        }
    }
}

#if HAVE_AMX
/* attend_rows on AMX tiles for bf16 (see below): 16 query rows at a time instead of MR, and one tile
 * configuration per group of rows, not one per 6 rows and 64 keys (qk_dp's and pairs_n's calls of
 * amx_product, with which a layer's attention ran at ~0.3 TFLOP/s on the Intel Xeon, model 167). The
 * same products summed in the same order (each tile sums a key's 32 pairs in two steps of 16, and
 * P V the globals' segment and the blocks' run apart, then added), so the same values, bit for bit.
 * Tiles 0-3: sums (R rows, 64 columns), 4-5: A (R rows), 6-7: B (16 pair rows). */
static void attend_rows_amx(const window_t *w, const void *q, size_t qrow0, int rows, int D, int h,
                            float *sc, void *out) {
    const int wp = w->wp, gp = w->gp;
    const size_t lds = (size_t)wp * 4; /* bytes between rows of sc */
    float part[2][16 * TILE];
    for (int m0 = 0; m0 < rows; m0 += 16) {
        const int R = rows - m0 < 16 ? rows - m0 : 16;
        amx_config(R, 6);
        float *scm = sc + (size_t)m0 * wp;
        const uint32_t *q32 = (const uint32_t *)q + ((qrow0 + m0) * D + (size_t)h * HEAD_DIM) / 2;
        _tile_loadd(4, q32, (size_t)D * 2);
        _tile_loadd(5, q32 + 16, (size_t)D * 2);
        vf mx[16];
        for (int m = 0; m < R; m++) mx[m] = splat(-__builtin_inff());
        for (int j0 = 0; j0 < wp / 16; j0 += KGROUPS) { /* scores, 64 keys at a time */
            const int key = j0 * 16 < gp ? j0 * 16 : j0 * 16 - gp + w->local0;
            const uint32_t *kp = (const uint32_t *)w->keys + (size_t)key * (HEAD_DIM / 2);
            _tile_zero(0);
            _tile_zero(1);
            _tile_zero(2);
            _tile_zero(3);
#define KEYS(j, tb)                                          \
    _tile_loadd(tb, kp + (size_t)(j) * 32 * 16, 64);         \
    _tile_dpbf16ps(j, 4, tb);                                \
    _tile_loadd(tb, kp + (size_t)(j) * 32 * 16 + 256, 64);   \
    _tile_dpbf16ps(j, 5, tb);
            KEYS(0, 6) KEYS(1, 7) KEYS(2, 6) KEYS(3, 7)
#undef KEYS
            float *dst = scm + j0 * 16;
            _tile_stored(0, dst, lds);
            _tile_stored(1, dst + 16, lds);
            _tile_stored(2, dst + 32, lds);
            _tile_stored(3, dst + 48, lds);
            for (int m = 0; m < R; m++)
                for (int j = 0; j < KGROUPS; j++)
                    score_out(w, scm, mx, m, j0 + j, load_f32(dst + (size_t)m * wp + 16 * j));
        }
        float inv[16];
        for (int m = 0; m < R; m++) inv[m] = numerators_bf16(scm + (size_t)m * wp, wp, hmax(mx[m]));
        /* P V: row m's probability pairs start at scm + m * wp (uint32); the globals' segment, then
         * the blocks' run, each summed in the tiles from zero */
        const uint32_t *p32 = (const uint32_t *)scm, *v32 = (const uint32_t *)w->values;
        for (int seg = 0; seg < 2; seg++) {
            const uint32_t *a = p32 + (seg ? gp / 2 : 0);
            const uint32_t *b = v32 + (seg ? (size_t)w->local0 / 2 * HEAD_DIM : 0);
            const int n = seg ? (wp - gp) / 2 : gp / 2;
            _tile_zero(0);
            _tile_zero(1);
            _tile_zero(2);
            _tile_zero(3);
            for (int p = 0; p < n; p += 32) {
                const uint32_t *bp = b + (size_t)p * HEAD_DIM;
                _tile_loadd(4, a + p, lds);
                _tile_loadd(5, a + p + 16, lds);
#define VALUES(j, tb)                                                \
    _tile_loadd(tb, bp + 16 * (j), HEAD_DIM * 4);                    \
    _tile_dpbf16ps(j, 4, tb);                                        \
    _tile_loadd(tb, bp + 16 * HEAD_DIM + 16 * (j), HEAD_DIM * 4);    \
    _tile_dpbf16ps(j, 5, tb);
                VALUES(0, 6) VALUES(1, 7) VALUES(2, 6) VALUES(3, 7)
#undef VALUES
            }
            _tile_stored(0, part[seg], TILE * 4);
            _tile_stored(1, part[seg] + 16, TILE * 4);
            _tile_stored(2, part[seg] + 32, TILE * 4);
            _tile_stored(3, part[seg] + 48, TILE * 4);
        }
        for (int m = 0; m < R; m++)
            for (int j = 0; j < 4; j++) {
                const vf sum = ((vf){0} + load_f32(part[0] + m * TILE + 16 * j)) + load_f32(part[1] + m * TILE + 16 * j);
                vstore(out, (qrow0 + m0 + m) * D + (size_t)h * HEAD_DIM + 16 * j, sum * inv[m], 1);
            }
    }
}
#endif

/* One chunk of a task: its rows query rows (up to QCHUNK, from row qrow0 of q, head h) against the
 * window w: scores into sc (rows, wp), softmax in place, then P V into out. qf: room for the rows
 * widened to float32 (float32 mode). */
static void attend_rows(const window_t *w, const void *q, size_t qrow0, int rows, int D, int h, int bf16,
                        float *sc, float *qf, vf *rowmax, void *out) {
    const int wp = w->wp, gp = w->gp, dp = HAVE_DP && bf16;
#if HAVE_AMX
    if (amx_on && dp) { /* gp and wp - gp are multiples of SEG: whole steps of 32 pairs for its P V */
        attend_rows_amx(w, q, qrow0, rows, D, h, sc, out);
        return;
    }
#endif
    if (!dp)
        for (int m = 0; m < rows; m++)
            for (int d = 0; d < HEAD_DIM; d++)
                qf[m * HEAD_DIM + d] = elem(q, (qrow0 + m) * D + (size_t)h * HEAD_DIM + d, bf16);
    for (int m = 0; m < rows; m++) rowmax[m] = splat(-__builtin_inff());
#if defined(__AVX512F__)
    for (int m0 = 0; m0 < rows; m0 += MR) { /* scores, KGROUPS x 16 keys at a time */
        const int R = rows - m0 < MR ? rows - m0 : MR;
        float *scm = sc + (size_t)m0 * wp;
        vf *mx = rowmax + m0;
        for (int j0 = 0; j0 < wp / 16; j0 += KGROUPS) {
            const int key = j0 * 16 < gp ? j0 * 16 : j0 * 16 - gp + w->local0; /* its packed index */
#if HAVE_DP
            if (dp) {
                const uint32_t *q32 = (const uint32_t *)q + ((qrow0 + m0) * D + (size_t)h * HEAD_DIM) / 2;
                const uint32_t *kg = (const uint32_t *)w->keys + (size_t)key * (HEAD_DIM / 2);
#define CALL(r) qk_dp(r, q32, D / 2, kg, w, scm, mx, j0)
                ROWS_SWITCH(R, CALL)
#undef CALL
                continue;
            }
#endif
            const float *kg = (const float *)w->keys + (size_t)key * HEAD_DIM;
#define CALL(r) qk_f32(r, qf + m0 * HEAD_DIM, kg, w, scm, mx, j0)
            ROWS_SWITCH(R, CALL)
#undef CALL
        }
    }
#else
    for (int g = 0; g < wp / 16; g++) { /* scores (float32: no pairs without AVX-512), 16 keys against all the rows */
        const float *kg = (const float *)w->keys + (size_t)(g * 16 < gp ? g * 16 : g * 16 - gp + w->local0) * HEAD_DIM;
        for (int m0 = 0; m0 < rows; m0 += MR) {
            const int R = rows - m0 < MR ? rows - m0 : MR;
#define CALL(r) qk_group(r, qf + m0 * HEAD_DIM, kg, w, sc + (size_t)m0 * wp, rowmax + m0, g)
            ROWS_SWITCH(R, CALL)
#undef CALL
        }
    }
#endif
    float inv[QCHUNK];
    for (int m = 0; m < rows; m++) {
#if HAVE_DP
        if (dp) {
            inv[m] = numerators_bf16(sc + (size_t)m * wp, wp, hmax(rowmax[m]));
            continue;
        }
#endif
        inv[m] = numerators(sc + (size_t)m * wp, wp, hmax(rowmax[m]));
    }
    for (int m0 = 0; m0 < rows; m0 += MR) { /* P V: the globals' segment, then the blocks' run */
        const int R = rows - m0 < MR ? rows - m0 : MR;
        vf acc[MR][4];
        for (int m = 0; m < R; m++)
            for (int j = 0; j < 4; j++) acc[m][j] = (vf){0};
#if HAVE_DP
        if (dp) { /* row m's probability pairs (wp / 2) start at sc + m * wp, as uint32 */
            const uint32_t *p32 = (const uint32_t *)(sc + (size_t)m0 * wp), *v32 = (const uint32_t *)w->values;
#define CALL(r) pairs_n(r, p32, gp / 2, wp, v32, 2 * BLOCK, acc), \
                pairs_n(r, p32 + gp / 2, (wp - gp) / 2, wp, v32 + (size_t)w->local0 / 2 * HEAD_DIM, 2 * BLOCK, acc)
            ROWS_SWITCH(R, CALL)
#undef CALL
        } else
#endif
        {
            const float *p = sc + (size_t)m0 * wp, *vals = (const float *)w->values;
#define CALL(r) pv_plain_n(r, p, gp, wp, (const char *)vals, PASSW, HEAD_DIM, 0, acc), \
                pv_plain_n(r, p + gp, wp - gp, wp, (const char *)(vals + (size_t)w->local0 * HEAD_DIM), PASSW, HEAD_DIM, 0, acc)
            ROWS_SWITCH(R, CALL)
#undef CALL
        }
        for (int m = 0; m < R; m++)
            for (int j = 0; j < 4; j++)
                vstore(out, (qrow0 + m0 + m) * D + (size_t)h * HEAD_DIM + 16 * j, acc[m][j] * inv[m0 + m], bf16);
    }
}

void local_attention(const void *q, const void *k, const void *v, const float *mask, void *out,
                     int B, int H, int G, int nb, int bs, float scale, int bf16) {
    const int D = H * HEAD_DIM, S = G + nb * bs, dp = HAVE_DP && bf16;
    const int gp = (G + SEG - 1) / SEG * SEG, bsp = (bs + SEG - 1) / SEG * SEG, Sp = gp + nb * bsp;
    const int wpmax = G > 0 ? Sp : gp + 3 * bsp; /* a global's window is everything */
    const size_t head = (size_t)Sp * HEAD_DIM * (dp ? 2 : 4); /* bytes of a head's packed keys */
    char *keys = (char *)aligned_alloc(64, head), *values = (char *)aligned_alloc(64, head);
    const float unit = dp ? LOG2E : 1.0f; /* dp: scores in log2 units, for vexp2 */
#pragma omp parallel
    {
        float *sc = (float *)aligned_alloc(64, sizeof(float) * (size_t)QCHUNK * wpmax);
        float *maskw = (float *)aligned_alloc(64, sizeof(float) * (size_t)wpmax);
        float *qf = (float *)aligned_alloc(64, sizeof(float) * (size_t)QCHUNK * HEAD_DIM);
        vf rowmax[QCHUNK];
        for (int bh = 0; bh < B * H; bh++) { /* a head at a time: its packed keys stay in the cache */
            const int b = bh / H, h = bh % H;
            const size_t doc = (size_t)b * S;
#pragma omp for schedule(static)
            for (int s0 = 0; s0 < Sp; s0 += SEG)
                pack_head(k, v, doc, D, h, G, gp, bs, bsp, s0, s0 + SEG, dp, bf16, keys, values);
            /* task -1: the globals against everything (the largest, first); task i: block i's
             * queries against the globals' segment and the segments of blocks lo .. hi around it */
#pragma omp for schedule(dynamic)
            for (int task = G > 0 ? -1 : 0; task < nb; task++) {
                const int first = task < 0 ? 0 : G + task * bs, queries = task < 0 ? G : bs;
                const int lo = task <= 0 ? 0 : task - 1, hi = task < 0 || task + 1 >= nb ? nb - 1 : task + 1;
                const window_t win = {gp + (hi - lo + 1) * bsp, gp, gp + lo * bsp, maskw, scale * unit, keys, values};
                for (int s = 0; s < win.wp; s++) {
                    const int i = s < gp ? s : s - gp, blk = lo + i / bsp, in = i % bsp;
                    const float m = s < gp ? (i < G ? mask[doc + i] : -__builtin_inff())
                                           : (in < bs ? mask[doc + G + (size_t)blk * bs + in] : -__builtin_inff());
                    maskw[s] = unit * m;
                }
                for (int c0 = 0; c0 < queries; c0 += QCHUNK)
                    attend_rows(&win, q, doc + first + c0, queries - c0 < QCHUNK ? queries - c0 : QCHUNK, D, h, bf16,
                                sc, qf, rowmax, out);
            }
        }
        free(sc), free(maskw), free(qf);
    }
    free(keys), free(values);
}

/* Cross-attention values in pairs of keys, for cross_attention with AVX512-BF16: v (B, S, H * 64) bf16
 * as the projection writes it -> out (B, H, ceil(S / 2), 64, 2), [b, h, s, d, e] = v[b, 2s + e, h, d],
 * zero past S. (torch's copy of the same strided view moves 2-byte elements at ~1.3 GB/s.) */
void pair_values(const uint16_t *v, uint16_t *out, int B, int S, int H) {
    const int S2 = (S + 1) / 2, D = H * HEAD_DIM;
#pragma omp parallel for schedule(static)
    for (long i = 0; i < (long)B * S2 * H; i++) { /* (b, pair, h): each pair's two rows read whole */
        const int h = (int)(i % H), p = (int)(i / H % S2), b = (int)(i / H / S2);
        const uint16_t *first = v + ((size_t)b * S + 2 * (size_t)p) * D + (size_t)h * HEAD_DIM;
        interleave_rows(out + (((size_t)b * H + h) * S2 + p) * HEAD_DIM * 2, first, 2 * p + 1 < S ? first + D : NULL);
    }
}

/* ---- one decoder layer of a decoding step, whole ---------------------------------------------------
 * The same operations, in the same element type and with the same roundings, as the layer's torch
 * code with the kernels above (model.DecoderLayer): self-attention over the beams' histories,
 * cross-attention, feed-forward, each followed by the residual add and a LayerNorm. One call per
 * step for all the layers (decoder_layers) instead of ~40 Python-level operations a layer (~0.5 ms a
 * layer on our 2-core VM).
 * Residual adds and activations round to the element type as torch's do; LayerNorm statistics are
 * taken in double and the result rounded once (torch: float32 statistics, ~1 ulp of float32 apart).
 */
enum { ACT_NONE, ACT_GELU, ACT_GELU_TANH, ACT_RELU, ACT_SILU, ACT_TANH };

typedef struct {
    const void *qkv_w, *qkv_b, *o_w, *o_b; /* self-attention: q, k, v in one product (their tiles one
                                            * after another), out; weights tiled */
    const void *ln1_w, *ln1_b;
    const void *cq_w, *cq_b, *co_w, *co_b; /* cross-attention query and output projections */
    const void *ln2_w, *ln2_b;
    const void *fc1_w, *fc1_b, *fc2_w, *fc2_b;
    const void *ln3_w, *ln3_b;
    int heads, ffn, activation;
    float eps;
} layer_t;

/* out (N, O) = x (N, I) W^T + b, in rows_linear's chunks of MAXR rows */
static void linear_n(const void *x, int N, int in, const void *w, const void *b, int out_features, void *out,
                     int bf16) {
    const size_t es = bf16 ? 2 : 4;
    for (int r0 = 0; r0 < N; r0 += MAXR)
        rows_linear((const char *)x + (size_t)r0 * in * es, N - r0 < MAXR ? N - r0 : MAXR, in, w, b, out_features,
                    (char *)out + (size_t)r0 * out_features * es, bf16, 0);
}


/* x <- LayerNorm(x + a) with weight w and bias b, row by row; x + a rounded first, as torch adds.
 * D a multiple of 16 (heads of 64). The statistics in double, in 8-wide vectors: a single chain of
 * 768 dependent double adds per pass cost ~2 us a row (a LayerNorm was ~9 us of a layer's step). */
typedef double vd __attribute__((vector_size(64)));          /* 8 doubles */
typedef float vf8_u __attribute__((vector_size(32), aligned(4)));
static inline vd widen8(const float *p) { return __builtin_convertvector(*(const vf8_u *)p, vd); }
static inline double hsum_d(vd v) {
    double t = 0;
    for (int j = 0; j < 8; j++) t += v[j];
    return t;
}
static void add_layer_norm(void *x, const void *a, int N, int D, const void *w, const void *b, float eps,
                           int bf16) {
    float *s = (float *)malloc(sizeof(float) * D);
    for (int r = 0; r < N; r++) {
        const size_t o = (size_t)r * D;
        vd sum0 = {0}, sum1 = {0}, sq0 = {0}, sq1 = {0};
        for (int i = 0; i < D; i += 16) {
            vf v = vload(x, o + i, bf16) + vload(a, o + i, bf16);
            store_f32(s + i, bf16 ? round_bf16(v) : v);
            sum0 += widen8(s + i), sum1 += widen8(s + i + 8);
        }
        const double mean = hsum_d(sum0 + sum1) / D;
        for (int i = 0; i < D; i += 16) {
            const vd d0 = widen8(s + i) - mean, d1 = widen8(s + i + 8) - mean;
            sq0 += d0 * d0, sq1 += d1 * d1;
        }
        const float rstd = (float)(1.0 / __builtin_sqrt(hsum_d(sq0 + sq1) / D + eps)), m = (float)mean;
        for (int i = 0; i < D; i += 16)
            vstore(x, o + i, (load_f32(s + i) - m) * rstd * vload(w, i, bf16) + vload(b, i, bf16), bf16);
    }
    free(s);
}

/* erf as torch's vectorised CPU erf computes it (Abramowitz-Stegun 7.1.26, |error| < 1.5e-7). The
 * activations in the machine's own registers (vn): with AVX2, GCC's 16-float code ran the step's GELU
 * at ~23 cycles an element (0.75 ms of a step, one thread); lane for lane the same values. */
static inline vn verfn(vn x) {
    vn a = (vn)((vnu)x & 0x7FFFFFFFu), t = 1.0f / (0.3275911f * a + 1.0f);
    vn r = (((1.061405429f * t - 1.453152027f) * t + 1.421413741f) * t - 0.284496736f) * t + 0.254829592f;
    vn y = 1.0f - r * t * vexpn(-(x * x));
    return (vn)(((vnu)x & 0x80000000u) | (vnu)y);
}
static inline vn vtanhn(vn x) { /* 1 - 2 / (exp(2x) + 1), on |x| (saturated past 9) with x's sign */
    vn a = (vn)((vnu)x & 0x7FFFFFFFu);
    a = vminn(a, (vn){0} + 9.0f);
    vn y = 1.0f - 2.0f / (vexpn(2.0f * a) + 1.0f);
    return (vn)(((vnu)x & 0x80000000u) | (vnu)y);
}
static inline vn activate(vn x, int kind) {
    switch (kind) {
    case ACT_GELU: return 0.5f * x * (1.0f + verfn(x * 0.70710678118654752f));
    case ACT_GELU_TANH: return 0.5f * x * (1.0f + vtanhn(0.79788456080286536f * (x + 0.044715f * x * x * x)));
    case ACT_RELU: return vmaxn(x, (vn){0});
    case ACT_SILU: return x / (1.0f + vexpn(vmaxn(-x, (vn){0} - 87.0f)));
    case ACT_TANH: return vtanhn(x);
    default: return x;
    }
}
static inline void storen(void *p, size_t k, vn v, int bf16) { /* p[k .. k + VN) = v, rounded for bf16 */
    if (bf16) {
        const vnu u = (vnu)v, r = ((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16); /* round_bf16's rounding */
        for (int i = 0; i < VN; i++) ((uint16_t *)p)[k + i] = (uint16_t)r[i];
    } else {
        *(vn_u *)((float *)p + k) = v;
    }
}
/* h[0 .. n) <- activation(h), in place, on every thread */
static void activate_all(void *h, size_t n, int kind, int bf16) {
    const size_t per = 64 * VN, chunks = (n + per - 1) / per;
#pragma omp parallel for schedule(static)
    for (size_t c = 0; c < chunks; c++) {
        const size_t k0 = c * per, k1 = k0 + per < n ? k0 + per : n;
        size_t k = k0;
        for (; k + VN <= k1; k += VN) storen(h, k, activate(loadn((const char *)h, k, bf16), kind), bf16);
        for (; k < k1; k++) set_elem(h, k, activate((vn){0} + elem(h, k, bf16), kind)[0], bf16);
    }
}

/* scratch of one layer's step, allocated once per decoder_layers call */
typedef struct {
    char *q, *ctx, *a, *h, *qx, *cx, *qkv;
} scratch_t;

/* One decoder layer of a step: x (N, H * 64), row n = document n / R, beam n % R (R = N / B rows a
 * document); in place. cross_k, cross_v: the documents' keys and values as cross_attention reads
 * them, S keys, mask (B, S); cache_k, cache_v (max_len, N, H, 64) and ancestry (n, N): see
 * self_attention; pos (N) int64: row r's position, its keys and values written there and
 * ancestry[pos[r]][r] already filled; n > every pos[r]. */
static void layer_step(const layer_t *L, void *x, int N, int B, const void *cross_k, const void *cross_v,
                       const void *mask, int S, void *cache_k, void *cache_v, const int64_t *ancestry, int n_pos,
                       const int64_t *pos, int bf16, const scratch_t *sc) {
    const int H = L->heads, D = H * HEAD_DIM, F = L->ffn, R = N / B;
    const size_t es = bf16 ? 2 : 4, row = (size_t)N * D * es;
    const float scale = 0.125f; /* HEAD_DIM ** -0.5, exact in both types */
    char *q = sc->q, *ctx = sc->ctx, *a = sc->a, *h = sc->h, *qx = sc->qx, *cx = sc->cx, *qkv = sc->qkv;
    /* self-attention: q, k, v in one product (one pass over the three weights: each product's start
     * and end cost ~15 us of a ~60 us stream), then the keys and values into their cache slots */
    linear_n(x, N, D, L->qkv_w, L->qkv_b, 3 * D, qkv, bf16);
    for (int n = 0; n < N; n++) {
        const char *r = qkv + (size_t)n * 3 * D * es; /* row n: q | k | v */
        for (int k = 0; k < D; k += 16) vstore(q, (size_t)n * D + k, vload(r, k, bf16) * scale, bf16);
        memcpy((char *)cache_k + (size_t)pos[n] * row + (size_t)n * D * es, r + (size_t)D * es, (size_t)D * es);
        memcpy((char *)cache_v + (size_t)pos[n] * row + (size_t)n * D * es, r + (size_t)2 * D * es, (size_t)D * es);
    }
    self_attention(q, cache_k, cache_v, ancestry, ctx, N, H, n_pos, pos, bf16);
    linear_n(ctx, N, D, L->o_w, L->o_b, D, a, bf16);
    add_layer_norm(x, a, N, D, L->ln1_w, L->ln1_b, L->eps, bf16);
    /* cross-attention: the queries regrouped per (document, head), MAXR beams at a time */
    linear_n(x, N, D, L->cq_w, L->cq_b, D, q, bf16);
    for (int c0 = 0; c0 < R; c0 += MAXR) {
        const int rc = R - c0 < MAXR ? R - c0 : MAXR;
        for (int b = 0; b < B; b++)
            for (int hh = 0; hh < H; hh++)
                for (int i = 0; i < rc; i++)
                    for (int j = 0; j < HEAD_DIM; j += 16) {
                        size_t from = ((size_t)(b * R + c0 + i) * H + hh) * HEAD_DIM + j;
                        vstore(qx, (((size_t)b * H + hh) * rc + i) * HEAD_DIM + j, vload(q, from, bf16) * scale, bf16);
                    }
        cross_attention(qx, cross_k, cross_v, mask, cx, B, H, rc, S, bf16);
        for (int b = 0; b < B; b++)
            for (int hh = 0; hh < H; hh++)
                for (int i = 0; i < rc; i++)
                    memcpy(ctx + (((size_t)(b * R + c0 + i) * H + hh) * HEAD_DIM) * es,
                           cx + ((((size_t)b * H + hh) * rc + i) * HEAD_DIM) * es, HEAD_DIM * es);
    }
    linear_n(ctx, N, D, L->co_w, L->co_b, D, a, bf16);
    add_layer_norm(x, a, N, D, L->ln2_w, L->ln2_b, L->eps, bf16);
    /* feed-forward, the activation rounded as torch's own output is */
    linear_n(x, N, D, L->fc1_w, L->fc1_b, F, h, bf16);
    activate_all(h, (size_t)N * F, L->activation, bf16);
    linear_n(h, N, F, L->fc2_w, L->fc2_b, D, a, bf16);
    add_layer_norm(x, a, N, D, L->ln3_w, L->ln3_b, L->eps, bf16);
}

/* A decoding step's n_layers decoder layers, one after another, on x (N, H * 64) in place: layer l
 * with layers[l], cross_k[l], cross_v[l], cache_k[l], cache_v[l] (see layer_step); the mask, the
 * ancestry and the positions are the same for every layer. One call per step: Python's per-layer
 * checks and calls cost ~0.1 ms a layer on our 2-core VM, ~8% of a 4k-token bf16 step. */
void decoder_layers(const layer_t *layers, int n_layers, void *x, int N, int B, const void *const *cross_k,
                    const void *const *cross_v, const void *mask, int S, void *const *cache_k, void *const *cache_v,
                    const int64_t *ancestry, int n_pos, const int64_t *pos, int bf16) {
    int D = 0, F = 0;
    for (int l = 0; l < n_layers; l++) {
        const int d = layers[l].heads * HEAD_DIM;
        D = d > D ? d : D;
        F = layers[l].ffn > F ? layers[l].ffn : F;
    }
    const size_t es = bf16 ? 2 : 4, row = (size_t)N * D * es;
    scratch_t sc = {(char *)malloc(row), (char *)malloc(row), (char *)malloc(row),
                    (char *)malloc((size_t)N * (F > D ? F : D) * es), (char *)malloc(row), (char *)malloc(row),
                    (char *)malloc(3 * row)};
    for (int l = 0; l < n_layers; l++)
        layer_step(layers + l, x, N, B, cross_k[l], cross_v[l], mask, S, cache_k[l], cache_v[l], ancestry, n_pos,
                   pos, bf16, &sc);
    free(sc.q), free(sc.ctx), free(sc.a), free(sc.h), free(sc.qx), free(sc.cx), free(sc.qkv);
}

/* ---- the beam search's candidates: torch.topk over rows, exactly ----------------------------------
 * values, indices (rows, k) = torch.topk(x + add[:, None], k, dim=1) for float32 x (rows, n), where
 * k * 64 <= n: the same values, the same indices and, among equal values, the same order. torch
 * copies each row into (value, index) pairs and runs std::partial_sort with its comparator (NaN
 * first, then larger values; TopKImpl.h); libstdc++'s partial_sort is a heap select then a heap sort.
 * Here the same heap operations (stl_heap.h: __make_heap, __adjust_heap, __push_heap) on the same
 * sequence of pairs, but an element enters only where it beats the heap's top, which is the only
 * case where partial_sort moves anything: a vectorised pass over the row finds those (~2% of a
 * 50265-token row after its first few hundred). ~8x faster than torch.topk on a decoding step's
 * (5, 50265) log-probabilities (0.27 -> 0.03 ms on the Zen 5 VM). add may be NULL. */
typedef struct {
    double v; /* torch's acc_type for float on the CPU: the comparisons are the same */
    int64_t i;
} kv_t;
static inline int kv_before(kv_t a, kv_t b) { /* torch's comparator for largest = True */
    return (__builtin_isnan(a.v) && !__builtin_isnan(b.v)) || a.v > b.v;
}
static void kv_push_heap(kv_t *first, long hole, long top, kv_t value) {
    long parent = (hole - 1) / 2;
    while (hole > top && kv_before(first[parent], value)) {
        first[hole] = first[parent];
        hole = parent;
        parent = (hole - 1) / 2;
    }
    first[hole] = value;
}
static void kv_adjust_heap(kv_t *first, long hole, long len, kv_t value) {
    const long top = hole;
    long second = hole;
    while (second < (len - 1) / 2) {
        second = 2 * (second + 1);
        if (kv_before(first[second], first[second - 1])) second--;
        first[hole] = first[second];
        hole = second;
    }
    if ((len & 1) == 0 && second == (len - 2) / 2) {
        second = 2 * (second + 1);
        first[hole] = first[second - 1];
        hole = second - 1;
    }
    kv_push_heap(first, hole, top, value);
}
static inline int any_above(vf y, float t) { /* some lane of y > t, or NaN */
#ifdef __AVX512F__
    return _mm512_cmp_ps_mask((__m512)y, _mm512_set1_ps(t), _CMP_NLE_UQ) != 0;
#else
    const __m256 tt = _mm256_set1_ps(t);
    const __m256 lo = _mm256_cmp_ps(_mm256_loadu_ps((const float *)&y), tt, _CMP_NLE_UQ);
    const __m256 hi = _mm256_cmp_ps(_mm256_loadu_ps((const float *)&y + 8), tt, _CMP_NLE_UQ);
    return _mm256_movemask_ps(_mm256_or_ps(lo, hi)) != 0;
#endif
}
static void row_top(const float *x, float add, long n, int k, float *values, int64_t *indices) {
    kv_t heap[k];
    for (int j = 0; j < k; j++) heap[j] = (kv_t){(double)(x[j] + add), j};
    for (long parent = (k - 2) / 2; k >= 2 && parent >= 0; parent--) /* __make_heap */
        kv_adjust_heap(heap, parent, k, heap[parent]);
    long i = k;
    for (; i + 16 <= n; i += 16) { /* __heap_select, skipping the vectors where nothing beats the top */
        const vf y = load_f32(x + i) + add;
        const float top = (float)heap[0].v; /* exact: the top is one of the row's floats */
        if (!__builtin_isnan(top) && !any_above(y, top)) continue;
        for (int j = 0; j < 16; j++) {
            kv_t e = {(double)y[j], i + j};
            if (kv_before(e, heap[0])) kv_adjust_heap(heap, 0, k, e);
        }
    }
    for (; i < n; i++) {
        kv_t e = {(double)(x[i] + add), i};
        if (kv_before(e, heap[0])) kv_adjust_heap(heap, 0, k, e);
    }
    for (long last = k - 1; last > 0; last--) { /* __sort_heap */
        kv_t e = heap[last];
        heap[last] = heap[0];
        kv_adjust_heap(heap, 0, last, e);
    }
    for (int j = 0; j < k; j++) values[j] = (float)heap[j].v, indices[j] = heap[j].i;
}
void top_rows(const float *x, const float *add, int rows, long n, int k, float *values, int64_t *indices) {
#pragma omp parallel for schedule(static)
    for (int r = 0; r < rows; r++)
        row_top(x + (size_t)r * n, add ? add[r] : 0.f, n, k, values + (size_t)r * k, indices + (size_t)r * k);
}

/* ---- the machine's own limit: how fast this CPU reads memory ----------------------------------------
 * The sum of n floats, read once by all threads in static chunks (as the kernels stream a matrix):
 * the benchmark's floor for a decoding step, whose time is the bytes it reads at this rate. */
float stream_sum(const float *p, size_t n) {
    float total = 0.f;
#pragma omp parallel reduction(+ : total)
    {
        vn acc[4] = {{0}, {0}, {0}, {0}};
#pragma omp for schedule(static)
        for (size_t i = 0; i < n / (4 * VN); i++) {
            const float *q = p + i * 4 * VN;
            for (int j = 0; j < 4; j++) acc[j] += loadn_f32(q + VN * j);
        }
        total += hsumn(acc[0] + acc[1] + acc[2] + acc[3]);
    }
    return total;
}

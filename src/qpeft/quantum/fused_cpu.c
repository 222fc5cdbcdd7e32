/* The fused CPU kernel of the real (RY) QAA circuit: see fused_cpu.py for what it computes and why.
 *
 * Compiled once per real type (-DREAL=float or -DREAL=double). States are stored amplitude-major,
 * CHUNK tokens per row, so that every gate is a loop over rows whose innermost loop runs over
 * the tokens: the compiler turns it into vector instructions. The chunks are shared out over
 * OpenMP threads: built with -fopenmp, this file links libgomp.so.1, which resolves to the copy
 * PyTorch has loaded already, so the kernel runs on PyTorch's own (already awake) worker threads
 * instead of competing with them.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#if defined(__AVX512F__)
#include <immintrin.h>
#endif

/* The innermost loops over a row's tokens, rows distinct: without the pragma GCC still checked them for overlap at
 * run time (5% of backward); with GCC's own ivdep, the 8-token build fell back to scalar code after an unrelated
 * change (2.3x slower), which OpenMP's simd does not allow. */
#ifdef _OPENMP
#define TOKEN_LOOP _Pragma("omp simd")
#else
#define TOKEN_LOOP _Pragma("GCC ivdep")
#endif

/* tokens per row: 32 (wide, for training and prompts) or 8 (narrow, for one token per sequence in generation) */
#ifndef CHUNK
#define CHUNK 32
#endif

typedef struct {
    int64_t tokens, width, layers, n;
    const REAL *x;        /* (tokens, width), width <= 2**n */
    const REAL *angles;   /* (layers, n) */
    const int64_t *inverse, *forward; /* CNOT ring: state'[k] = state[inverse[k]]; forward is its inverse */
    int z_readout;
    int presence; /* forward only: one more output column, 1 for a token with a non-zero input, else 0 */
} Circuit;

/* Each thread keeps its scratch buffers between calls: allocating them afresh every time costs
 * page faults, which threads take in turn. */
static _Thread_local REAL *scratch;
static _Thread_local int64_t scratch_rows;

#define ALIGN 64

/* rows * CHUNK amplitudes, 64-byte aligned; NULL when they cannot be allocated. */
static REAL *workspace(int64_t rows) {
    if (rows > scratch_rows) {
        free(scratch);
        scratch = NULL;
        scratch_rows = 0;
        if ((uint64_t)rows > (SIZE_MAX - ALIGN) / (CHUNK * sizeof(REAL))) return NULL;
        size_t size = (size_t)rows * CHUNK * sizeof(REAL);
        scratch = aligned_alloc(ALIGN, (size + ALIGN - 1) / ALIGN * ALIGN); /* C11: a multiple of the alignment */
        scratch_rows = scratch ? rows : 0;
    }
    return scratch;
}

/* The transposes between the inputs' token-major rows and the state's amplitude-major ones: with AVX-512, by
 * tiles of one vector's width held in registers (the compiler leaves a strided copy scalar, and gather
 * instructions measured no faster here); elsewhere, and at the edges, element by element. */
#if defined(__AVX512F__)
/* 128-bit lane transpose: lane g of out[L] = lane L of in[g] (the last step of both tile transposes) */
#define LANES_4X4(shuffle, in, out)                                                                     \
    do {                                                                                                \
        __typeof__(in[0]) p0 = shuffle(in[0], in[1], 0x44), p1 = shuffle(in[0], in[1], 0xEE);           \
        __typeof__(in[0]) p2 = shuffle(in[2], in[3], 0x44), p3 = shuffle(in[2], in[3], 0xEE);           \
        out[0] = shuffle(p0, p2, 0x88), out[1] = shuffle(p0, p2, 0xDD);                                 \
        out[2] = shuffle(p1, p3, 0x88), out[3] = shuffle(p1, p3, 0xDD);                                 \
    } while (0)

/* dst[j * dst_stride + i] = src[i * src_stride + j] for a 16 x 16 tile of floats */
static void tile_ps(float *dst, int64_t dst_stride, const float *src, int64_t src_stride) {
    __m512 u[4][4], out[4];
    for (int g = 0; g < 4; g++) {
        const float *rows = src + 4 * g * src_stride;
        __m512 a0 = _mm512_loadu_ps(rows), a1 = _mm512_loadu_ps(rows + src_stride);
        __m512 a2 = _mm512_loadu_ps(rows + 2 * src_stride), a3 = _mm512_loadu_ps(rows + 3 * src_stride);
        __m512 t0 = _mm512_unpacklo_ps(a0, a1), t1 = _mm512_unpackhi_ps(a0, a1);
        __m512 t2 = _mm512_unpacklo_ps(a2, a3), t3 = _mm512_unpackhi_ps(a2, a3);
        /* lane L of u[c][g]: column 4 L + c of rows 4 g .. 4 g + 3 */
        u[0][g] = _mm512_shuffle_ps(t0, t2, 0x44), u[1][g] = _mm512_shuffle_ps(t0, t2, 0xEE);
        u[2][g] = _mm512_shuffle_ps(t1, t3, 0x44), u[3][g] = _mm512_shuffle_ps(t1, t3, 0xEE);
    }
    for (int c = 0; c < 4; c++) {
        LANES_4X4(_mm512_shuffle_f32x4, u[c], out);
        for (int L = 0; L < 4; L++) _mm512_storeu_ps(dst + (4 * L + c) * dst_stride, out[L]);
    }
}

/* the same for an 8 x 8 tile of doubles */
static void tile_pd(double *dst, int64_t dst_stride, const double *src, int64_t src_stride) {
    __m512d u[2][4], out[4];
    for (int g = 0; g < 4; g++) {
        const double *rows = src + 2 * g * src_stride;
        __m512d a0 = _mm512_loadu_pd(rows), a1 = _mm512_loadu_pd(rows + src_stride);
        /* lane L of u[c][g]: column 2 L + c of rows 2 g, 2 g + 1 */
        u[0][g] = _mm512_unpacklo_pd(a0, a1), u[1][g] = _mm512_unpackhi_pd(a0, a1);
    }
    for (int c = 0; c < 2; c++) {
        LANES_4X4(_mm512_shuffle_f64x2, u[c], out);
        for (int L = 0; L < 4; L++) _mm512_storeu_pd(dst + (2 * L + c) * dst_stride, out[L]);
    }
}
#endif

/* dst[j * dst_stride + i] = src[i * src_stride + j] for i < rows, j < cols, element by element */
static void transpose_scalar(REAL *restrict dst, int64_t dst_stride, const REAL *restrict src, int64_t src_stride,
                             int64_t rows, int64_t cols) {
    for (int64_t i = 0; i < rows; i++)
        for (int64_t j = 0; j < cols; j++) dst[j * dst_stride + i] = src[i * src_stride + j];
}

/* the same, by tiles where it can */
static void transpose(REAL *restrict dst, int64_t dst_stride, const REAL *restrict src, int64_t src_stride,
                      int64_t rows, int64_t cols) {
    int64_t i0 = 0;
#if defined(__AVX512F__)
    const int64_t tile = 64 / sizeof(REAL);
    for (; i0 + tile <= rows; i0 += tile) {
        int64_t j0 = 0;
        for (; j0 + tile <= cols; j0 += tile) {
            REAL *d = dst + j0 * dst_stride + i0;
            const REAL *s = src + i0 * src_stride + j0;
            if (sizeof(REAL) == 4) tile_ps((float *)d, dst_stride, (const float *)s, src_stride);
            else tile_pd((double *)d, dst_stride, (const double *)s, src_stride);
        }
        transpose_scalar(dst + j0 * dst_stride + i0, dst_stride, src + i0 * src_stride + j0, src_stride, tile,
                         cols - j0); /* the columns past the last whole tile */
    }
#endif
    transpose_scalar(dst + i0, dst_stride, src + i0 * src_stride, src_stride, rows - i0, cols);
}

/* The unnormalised amplitudes of tokens t0 .. t0 + tb, and their squared norms (1 for a zero token, which
 * reads out zero: the state is linear in x, so dividing the quadratic readout by |x|^2 normalises it). */
static void embed(const Circuit *c, int64_t t0, int64_t tb, REAL *restrict psi, REAL *restrict norm_sq) {
    /* padding amplitudes, and the lanes past the last token, stay 0 (the transpose writes the rest) */
    int64_t from = tb < CHUNK ? 0 : c->width;
    memset(psi + from * CHUNK, 0, sizeof(REAL) * CHUNK * (((int64_t)1 << c->n) - from));
    memset(norm_sq, 0, sizeof(REAL) * CHUNK);
    /* the inputs transposed into the state's rows, then the norms summed amplitude by amplitude over the vector
     * lanes (token by token, each norm was one serial chain of additions) */
    transpose(psi, CHUNK, c->x + t0 * c->width, c->width, tb, c->width);
    for (int64_t k = 0; k < c->width; k++)
        for (int t = 0; t < CHUNK; t++) norm_sq[t] += psi[k * CHUNK + t] * psi[k * CHUNK + t];
    for (int t = 0; t < CHUNK; t++) norm_sq[t] = norm_sq[t] > 0 ? norm_sq[t] : 1;
}

/* A rotation [[c, -s], [s, c]] is applied as f T with f the larger of c, s in magnitude: T = [[1, -t], [t, 1]]
 * (t = s / c) or [[t, -1], [1, t]] (t = c / s), one fused multiply-add per amplitude instead of a multiply and
 * one: a pass over a block in the L1 cache, where arithmetic sets its speed, took 0.78 of the time. The factors
 * f (at least 1/sqrt 2 each, so |t| <= 1 and nothing grows by more than 2^(n/2) within a layer) are multiplied
 * back in once per layer, in the ring's pass, or by the readout. */
typedef struct {
    REAL t;
    int by_sin; /* T = [[t, -1], [1, t]] */
    double f;
} Gate;

static Gate gate(REAL cos, REAL sin) {
    int by_sin = (cos < 0 ? -cos : cos) < (sin < 0 ? -sin : sin);
    return (Gate){by_sin ? cos / sin : sin / cos, by_sin, by_sin ? sin : cos};
}

/* T on the pair (a0, a1), or T^T with undo; `by_sin` is a constant where these are inlined */
#define TURN(by_sin, undo, t, a0, a1, b0, b1)                                    \
    do {                                                                         \
        if (by_sin) b0 = (undo) ? t * a0 + a1 : t * a0 - a1,                     \
                    b1 = (undo) ? t * a1 - a0 : a0 + t * a1;                     \
        else b0 = (undo) ? a0 + t * a1 : a0 - t * a1,                            \
             b1 = (undo) ? a1 - t * a0 : a1 + t * a0;                            \
    } while (0)

/* The wires of one index bit (one wire) or of two neighbouring ones (bit and bit - 1) in one pass over the
 * rows [0, dim): each group of four amplitudes is read from src and written to dst (the same buffer, or
 * another) once. `s1`, `s2` select the forms and `undo` applies T^T instead of T: constants in each of
 * the copies the dispatchers below make. */
static inline __attribute__((always_inline)) void turn_one(REAL *dst, const REAL *src, int64_t dim, int64_t bit,
                                                            REAL t, const int s1, const int undo) {
    int64_t stride = (int64_t)1 << bit;
    for (int64_t base = 0; base < dim; base += 2 * stride)
        for (int64_t k = base; k < base + stride; k++) {
            const REAL *a = src + k * CHUNK, *b = src + (k + stride) * CHUNK;
            REAL *x = dst + k * CHUNK, *y = dst + (k + stride) * CHUNK;
            TOKEN_LOOP
            for (int i = 0; i < CHUNK; i++) {
                REAL a0 = a[i], a1 = b[i], b0, b1;
                TURN(s1, undo, t, a0, a1, b0, b1);
                x[i] = b0, y[i] = b1;
            }
        }
}

/* The z readout's adjoint seed: d loss / d psi_k = 2 psi_k w[forward[k]], w_j the sum of the rows j >> low of
 * high_table and j & (2^low - 1) of low_table (see qaa_backward) */
typedef struct {
    const REAL *high_table, *low_table;
    const int64_t *forward;
    int64_t low;
} Seed;

/* w[forward[k]] = high row + low row */
static inline __attribute__((always_inline)) const REAL *high_row(const Seed *seed, int64_t k) {
    return seed->high_table + (seed->forward[k] >> seed->low) * CHUNK;
}

static inline __attribute__((always_inline)) const REAL *low_row(const Seed *seed, int64_t k) {
    return seed->low_table + (seed->forward[k] & (((int64_t)1 << seed->low) - 1)) * CHUNK;
}

static inline __attribute__((always_inline)) void turn_two(REAL *dst, const REAL *src, int64_t dim, int64_t bit,
                                                            REAL t1, REAL t2, const int s1, const int s2,
                                                            const int undo, const int64_t *map, REAL scale,
                                                            const REAL *psi, REAL *acc, const Seed *seed) {
    int64_t hi = (int64_t)1 << bit, lo = hi >> 1;
    REAL first_a[CHUNK] = {0}, first_b[CHUNK] = {0}, second_a[CHUNK] = {0}, second_b[CHUNK] = {0};
    for (int64_t base = 0; base < dim; base += 2 * hi)
        for (int64_t mid = base; mid < base + hi; mid += 2 * lo)
            for (int64_t k = mid; k < mid + lo; k++) {
                /* with a map (the ring, where this is a layer's last pass, or with undo the first), row k goes to
                 * map[k], or with undo comes from map[k], times scale */
                const int64_t *from = undo ? map : NULL, *to = undo ? NULL : map;
                const REAL *p00 = src + (from ? from[k] : k) * CHUNK;
                const REAL *p01 = src + (from ? from[k + lo] : k + lo) * CHUNK;
                const REAL *p10 = src + (from ? from[k + hi] : k + hi) * CHUNK;
                const REAL *p11 = src + (from ? from[k + hi + lo] : k + hi + lo) * CHUNK;
                REAL *q00 = dst + (to ? to[k] : k) * CHUNK, *q01 = dst + (to ? to[k + lo] : k + lo) * CHUNK;
                REAL *q10 = dst + (to ? to[k + hi] : k + hi) * CHUNK;
                REAL *q11 = dst + (to ? to[k + hi + lo] : k + hi + lo) * CHUNK;
                const REAL *h00 = NULL, *h01 = NULL, *h10 = NULL, *h11 = NULL;
                const REAL *l00 = NULL, *l01 = NULL, *l10 = NULL, *l11 = NULL;
                if (seed) {
                    h00 = high_row(seed, k), h01 = high_row(seed, k + lo);
                    h10 = high_row(seed, k + hi), h11 = high_row(seed, k + hi + lo);
                    l00 = low_row(seed, k), l01 = low_row(seed, k + lo);
                    l10 = low_row(seed, k + hi), l11 = low_row(seed, k + hi + lo);
                }
                TOKEN_LOOP
                for (int i = 0; i < CHUNK; i++) {
                    REAL a00 = p00[i], a01 = p01[i], a10 = p10[i], a11 = p11[i];
                    REAL b00, b01, b10, b11, c00, c01, c10, c11;
                    if (seed) { /* src is the state before the pair: the pair forward (T), then the seed 2 psi w */
                        TURN(s1, 0, t1, a00, a10, b00, b10);
                        TURN(s1, 0, t1, a01, a11, b01, b11);
                        TURN(s2, 0, t2, b00, b01, c00, c01);
                        TURN(s2, 0, t2, b10, b11, c10, c11);
                        a00 = 2 * c00 * (h00[i] + l00[i]), a01 = 2 * c01 * (h01[i] + l01[i]);
                        a10 = 2 * c10 * (h10[i] + l10[i]), a11 = 2 * c11 * (h11[i] + l11[i]);
                    }
                    TURN(s1, undo, t1, a00, a10, b00, b10); /* first wire: pairs (00, 10), (01, 11) */
                    TURN(s1, undo, t1, a01, a11, b01, b11);
                    TURN(s2, undo, t2, b00, b01, c00, c01); /* second wire: (00, 01), (10, 11) */
                    TURN(s2, undo, t2, b10, b11, c10, c11);
                    if (map) c00 *= scale, c01 *= scale, c10 *= scale, c11 *= scale;
                    q00[i] = c00, q01[i] = c01, q10[i] = c10, q11[i] = c11;
                    if (psi) { /* the sums of pair_sums_two of the result against psi's rows k.. */
                        const REAL *r00 = psi + k * CHUNK, *r01 = r00 + lo * CHUNK, *r10 = r00 + hi * CHUNK;
                        const REAL *r11 = r10 + lo * CHUNK;
                        first_a[i] += c10 * r00[i] - c00 * r10[i], first_b[i] += c11 * r01[i] - c01 * r11[i];
                        second_a[i] += c01 * r00[i] - c00 * r01[i], second_b[i] += c11 * r10[i] - c10 * r11[i];
                    }
                }
            }
    if (psi)
        for (int i = 0; i < CHUNK; i++) acc[i] += first_a[i] + first_b[i], acc[CHUNK + i] += second_a[i] + second_b[i];
}

static void rotate(REAL *dst, const REAL *src, int64_t dim, int64_t bit, Gate g, int undo) {
    if (undo) g.by_sin ? turn_one(dst, src, dim, bit, g.t, 1, 1) : turn_one(dst, src, dim, bit, g.t, 0, 1);
    else g.by_sin ? turn_one(dst, src, dim, bit, g.t, 1, 0) : turn_one(dst, src, dim, bit, g.t, 0, 0);
}

#define TURN_TWO(undo, map, psi, seed)                                                                              \
    do {                                                                                                            \
        if (g1.by_sin && g2.by_sin) turn_two(dst, src, dim, bit, g1.t, g2.t, 1, 1, undo, map, scale, psi, acc, seed); \
        else if (g1.by_sin) turn_two(dst, src, dim, bit, g1.t, g2.t, 1, 0, undo, map, scale, psi, acc, seed);         \
        else if (g2.by_sin) turn_two(dst, src, dim, bit, g1.t, g2.t, 0, 1, undo, map, scale, psi, acc, seed);         \
        else turn_two(dst, src, dim, bit, g1.t, g2.t, 0, 0, undo, map, scale, psi, acc, seed);                        \
    } while (0)

/* with a map (dst must not be src then): dst row map[k] = scale times result row k, or with undo the transposes
 * applied to the rows src[map[k]] times scale */
static void rotate_two(REAL *dst, const REAL *src, int64_t dim, int64_t bit, Gate g1, Gate g2, int undo,
                       const int64_t *map, REAL scale) {
    REAL *acc = NULL;
    if (map && undo) TURN_TWO(1, map, NULL, NULL);
    else if (map) TURN_TWO(0, map, NULL, NULL);
    else if (undo) TURN_TWO(1, NULL, NULL, NULL);
    else TURN_TWO(0, NULL, NULL, NULL);
}

/* rotate_two with undo, adding the sums of pair_sums_two of its result against psi into acc's two rows; with a
 * seed (and no map), src is the state before the pair and the pass starts from the seed of its result */
static void unrotate_two_summing(REAL *dst, const REAL *src, int64_t dim, int64_t bit, Gate g1, Gate g2,
                                 const int64_t *map, REAL scale, const REAL *psi, REAL *acc, const Seed *seed) {
    if (seed) TURN_TWO(1, NULL, psi, seed);
    else if (map) TURN_TWO(1, map, psi, NULL);
    else TURN_TWO(1, NULL, psi, NULL);
}

/* log2 of the rows per block whose wires are applied while the block stays in the L1 cache: 32 KB (256 rows of
 * 32 floats; at CHUNK 8 the whole state of 10 qubits) */
#define BLOCK_BITS ((int64_t)__builtin_ctz(32768 / (CHUNK * sizeof(REAL))))

/* the wires of an n-qubit state applied over the whole state, above its blocks */
static int64_t wires_above_block(int64_t n) {
    return n < BLOCK_BITS ? 0 : n - BLOCK_BITS;
}

/* dst row k = scale times src row index[k] */
static void gather(const REAL *restrict src, REAL *restrict dst, const int64_t *index, int64_t dim, REAL scale) {
    for (int64_t k = 0; k < dim; k++) {
        const REAL *restrict from = src + index[k] * CHUNK;
        REAL *restrict to = dst + k * CHUNK;
        for (int i = 0; i < CHUNK; i++) to[i] = scale * from[i];
    }
}

/* Every layer's gates (layers x n), made once per call from the angles (cos and sin of half of each, in double,
 * rounded to REAL); NULL where they cannot be allocated. Made per chunk, they took 4% of a forward. */
static Gate *circuit_gates(const Circuit *c) {
    Gate *g = malloc(sizeof(Gate) * (size_t)(c->layers * c->n + 1)); /* + 1: never malloc(0) */
    for (int64_t i = 0; g && i < c->layers * c->n; i++) {
        double half = 0.5 * (double)c->angles[i];
        g[i] = gate((REAL)cos(half), (REAL)sin(half));
    }
    return g;
}

/* The product of one layer's factors f */
static double layer_factor(const Gate *g, int64_t n) {
    double factor = 1;
    for (int64_t q = 0; q < n; q++) factor *= g[q].f;
    return factor;
}

/* Wires q .. end - 1 (or with undo their transposes) over the rows [0, rows): one alone first where their count
 * is odd, then two at a time; the first pass reads src, the others dst. Returns where the result is: dst, or
 * src where there was no wire. */
static const REAL *rotate_wires(REAL *dst, const REAL *src, int64_t rows, int64_t n, const Gate *g, int64_t q,
                                int64_t end, int undo) {
    if ((end - q) % 2) rotate(dst, src, rows, n - 1 - q, g[q], undo), q++, src = dst;
    for (; q + 1 < end; q += 2, src = dst) rotate_two(dst, src, rows, n - 1 - q, g[q], g[q + 1], undo, NULL, 1);
    return src;
}

/* One layer's rotations (wire q acts on index bit n - 1 - q) from src into dst (the same buffer, or another): the
 * wires of the low BLOCK_BITS bits block by block, then the others over the whole state. They commute, so the
 * order is free. Returns the product F of the layer's factors f: dst holds the true result over it (T = R / f).
 * Rows at and past `live` are zero in src. With a ring, the result goes through it into ring_out instead, times
 * F, so true: ring_out[forward[k]] = F dst[k] (dst is then scratch), in the layer's last pass where that is a
 * pair's over the whole state (the last pair of the high wires, or of a single block), else by a gather. Without
 * a ring, `high_out` (where there are high wires) takes their result out of place, so that dst keeps the state
 * after the low wires; NULL: in place. With `low_only` (and no ring), the low wires alone (the backward applies the
 * high ones as it starts); the factor returned is still the whole layer's. */
static double rotate_layer(REAL *dst, const REAL *src, int64_t n, const Gate *g, int64_t live, REAL *ring_out,
                           const int64_t *forward, const int64_t *inverse, REAL *high_out, int low_only) {
    int64_t dim = (int64_t)1 << n, high = wires_above_block(n), low = n - high, rows = (int64_t)1 << low;
    double factor = layer_factor(g, n);
    int ring_in_high = ring_out && high >= 2, ring_in_block = ring_out && high == 0 && n >= 2;
    for (int64_t block = 0; block < dim; block += rows) {
        REAL *to = dst + block * CHUNK;
        const REAL *from = src + block * CHUNK;
        if (block >= live) { /* zero in, zero out: the low wires keep a block to itself */
            if (to != from) memset(to, 0, sizeof(REAL) * CHUNK * rows);
            continue;
        }
        from = rotate_wires(to, from, rows, n, g, high, ring_in_block ? n - 2 : n, 0);
        if (ring_in_block) rotate_two(ring_out, from, rows, 1, g[n - 2], g[n - 1], 0, forward, (REAL)factor);
    }
    if (low_only) return factor;
    rotate_wires(!ring_out && high_out ? high_out : dst, dst, dim, n, g, 0, ring_in_high ? high - 2 : high, 0);
    if (ring_in_high) rotate_two(ring_out, dst, dim, n - high + 1, g[high - 2], g[high - 1], 0, forward, (REAL)factor);
    else if (ring_out && !ring_in_block) gather(dst, ring_out, inverse, dim, (REAL)factor); /* no pair to carry it */
    return factor;
}

static double lane_sum(const REAL *acc) {
    double total = 0;
    for (int t = 0; t < CHUNK; t++) total += acc[t];
    return total;
}

/* The sums over the pairs of (lam1 psi0 - lam0 psi1) for the wire of one index bit, or of two (bit and bit - 1),
 * over the rows [0, dim), added lane by lane into its row (their rows) of acc: read only. Each pair of a
 * group of four rows adds into its own register sums, which keeps the chains of dependent additions short. */
static void pair_sums_one(const REAL *restrict psi, const REAL *restrict lam, int64_t dim, int64_t bit,
                          REAL *restrict acc) {
    int64_t stride = (int64_t)1 << bit;
    REAL s[CHUNK] = {0};
    for (int64_t base = 0; base < dim; base += 2 * stride)
        for (int64_t k = base; k < base + stride; k++) {
            const REAL *restrict a0 = psi + k * CHUNK, *restrict a1 = psi + (k + stride) * CHUNK;
            const REAL *restrict m0 = lam + k * CHUNK, *restrict m1 = lam + (k + stride) * CHUNK;
            for (int i = 0; i < CHUNK; i++) s[i] = s[i] + m1[i] * a0[i] - m0[i] * a1[i]; /* two fused steps */
        }
    for (int i = 0; i < CHUNK; i++) acc[i] += s[i];
}

static void pair_sums_two(const REAL *restrict psi, const REAL *restrict lam, int64_t dim, int64_t bit,
                          REAL *restrict acc) {
    int64_t hi = (int64_t)1 << bit, lo = hi >> 1;
    REAL first_a[CHUNK] = {0}, first_b[CHUNK] = {0}, second_a[CHUNK] = {0}, second_b[CHUNK] = {0};
    for (int64_t base = 0; base < dim; base += 2 * hi)
        for (int64_t mid = base; mid < base + hi; mid += 2 * lo)
            for (int64_t k = mid; k < mid + lo; k++) {
                const REAL *restrict p00 = psi + k * CHUNK, *restrict p01 = psi + (k + lo) * CHUNK;
                const REAL *restrict p10 = psi + (k + hi) * CHUNK, *restrict p11 = psi + (k + hi + lo) * CHUNK;
                const REAL *restrict q00 = lam + k * CHUNK, *restrict q01 = lam + (k + lo) * CHUNK;
                const REAL *restrict q10 = lam + (k + hi) * CHUNK, *restrict q11 = lam + (k + hi + lo) * CHUNK;
                for (int i = 0; i < CHUNK; i++) {
                    first_a[i] = first_a[i] + q10[i] * p00[i] - q00[i] * p10[i]; /* first wire: (00, 10), (01, 11) */
                    first_b[i] = first_b[i] + q11[i] * p01[i] - q01[i] * p11[i];
                    second_a[i] = second_a[i] + q01[i] * p00[i] - q00[i] * p01[i]; /* second: (00, 01), (10, 11) */
                    second_b[i] = second_b[i] + q11[i] * p10[i] - q10[i] * p11[i];
                }
            }
    for (int i = 0; i < CHUNK; i++) acc[i] += first_a[i] + first_b[i], acc[CHUNK + i] += second_a[i] + second_b[i];
}

/* The sums for the wires of four neighbouring index bits (bit .. bit - 3) in one pass: each group of 16 rows of psi
 * held in registers, each row of lam read once and added, signed, into the sums of the four wires it pairs on.
 * `span` = 2^(bit - 3) rows is a constant in each copy (the addresses are then offsets from one pointer). */
static inline __attribute__((always_inline)) void quad_sums(const REAL *restrict psi, const REAL *restrict lam,
                                                            int64_t dim, const int64_t span, REAL *restrict acc) {
    REAL s[4][CHUNK] = {{0}};
    for (int64_t base = 0; base < dim; base += 16 * span)
        for (int64_t k = base; k < base + span; k++) {
            const REAL *restrict p = psi + k * CHUNK, *restrict m = lam + k * CHUNK;
            for (int i = 0; i < CHUNK; i++) {
                REAL v[16];
#pragma GCC unroll 16
                for (int r = 0; r < 16; r++) v[r] = p[r * span * CHUNK + i];
#pragma GCC unroll 16
                for (int r = 0; r < 16; r++) {
                    REAL l = m[r * span * CHUNK + i];
#pragma GCC unroll 4
                    for (int w = 0; w < 4; w++) { /* wire w: pairs (r, r ^ h), lam1 psi0 - lam0 psi1 */
                        int h = 8 >> w;
                        s[w][i] += (r & h) ? l * v[r ^ h] : -l * v[r ^ h];
                    }
                }
            }
        }
    for (int w = 0; w < 4; w++)
        for (int i = 0; i < CHUNK; i++) acc[w * CHUNK + i] += s[w][i];
}

/* quad_sums for bit 3 .. FOUR_SUMS_TOP (a copy per span); above it the pair sums run */
#define FOUR_SUMS_TOP 7
static void four_sums(const REAL *psi, const REAL *lam, int64_t dim, int64_t bit, REAL *acc) {
    switch (bit) {
    case 3: quad_sums(psi, lam, dim, 1, acc); break;
    case 4: quad_sums(psi, lam, dim, 2, acc); break;
    case 5: quad_sums(psi, lam, dim, 4, acc); break;
    case 6: quad_sums(psi, lam, dim, 8, acc); break;
    case 7: quad_sums(psi, lam, dim, 16, acc); break;
    }
}

/* The sums of pair_sums_* for wires q .. end - 1 over the rows [0, rows) into their rows of acc */
static void sum_wires(const REAL *psi, const REAL *lam, int64_t rows, int64_t n, int64_t q, int64_t end, REAL *acc) {
    /* four wires a pass where their bits allow: psi and lam are read half as often as two at a time, and a block's
     * two (64 KB in float32) do not both fit in the L1 cache. The low wires' sums took 0.68 of the time, the
     * backward 0.94 (float32) and 0.91 (float64). */
    for (; end - q >= 4 && n - 1 - q <= FOUR_SUMS_TOP; q += 4) four_sums(psi, lam, rows, n - 1 - q, acc + q * CHUNK);
    if ((end - q) % 2) pair_sums_one(psi, lam, rows, n - 1 - q, acc + q * CHUNK), q++;
    for (; q + 1 < end; q += 2) pair_sums_two(psi, lam, rows, n - 1 - q, acc + q * CHUNK);
}

/* Backward through one layer: the adjoint from src (with a ring, from src[forward[j]] times ring_scale: the ring
 * undone) back through its rotations (R^T) into dst, and the sums of pair_sums_* for each of its n wires into
 * sums[], with `input` the state at the layer's input and the adjoint there (see qaa_backward). The high wires
 * first, then the low ones block by block, each block's sums taken while it is still in the L1 cache; then the
 * high wires' sums over the whole state. Returns the product of the layer's factors f (dst holds the true adjoint
 * over it). acc: n rows of scratch.
 * With two high wires, `after_low` may hold the state after the low wires (R_low input, kept by the rerun): the
 * rotations commute, so the pair's sums are those of R_high^T adjoint against it, taken in the pair's own pass,
 * and the blocks at and past `live` (zero in input: their sums are 0) are skipped, their adjoint left unwritten.
 * With a seed (the last layer, its high wires not yet applied by the rerun: src is after_low), that pass applies
 * them, seeds the adjoint and takes it back through them, all in registers. */
static double unrotate_layer(REAL *dst, const REAL *src, const REAL *input, const REAL *after_low, int64_t live,
                             int64_t n, const Gate *g, REAL *acc, double *sums, const int64_t *forward,
                             REAL ring_scale, const Seed *seed) {
    int64_t dim = (int64_t)1 << n, high = wires_above_block(n), low = n - high, rows = (int64_t)1 << low;
    double factor = layer_factor(g, n);
    memset(acc, 0, sizeof(REAL) * CHUNK * n);
    const REAL *from = src;
    if (after_low) /* high == 2 */
        unrotate_two_summing(dst, src, dim, n - 1, g[0], g[1], forward, ring_scale, after_low, acc, seed), from = dst;
    else if (forward && high >= 2 && high % 2 == 0) /* the ring undone in the first pair's pass over the whole state */
        rotate_two(dst, src, dim, n - 1, g[0], g[1], 1, forward, ring_scale),
            from = rotate_wires(dst, dst, dim, n, g, 2, high, 1);
    else {
        if (forward) gather(src, dst, forward, dim, ring_scale), src = dst; /* no such pass: a copy */
        from = rotate_wires(dst, src, dim, n, g, 0, high, 1);
    }
    for (int64_t block = 0; block < (after_low ? live : dim); block += rows) {
        REAL *to = dst + block * CHUNK;
        rotate_wires(to, from + block * CHUNK, rows, n, g, high, n, 1);
        sum_wires(input + block * CHUNK, to, rows, n, high, n, acc);
    }
    if (!after_low) sum_wires(input, dst, dim, n, 0, high, acc);
    for (int64_t q = 0; q < n; q++) sums[q] = lane_sum(acc + q * CHUNK);
    return factor;
}

/* Runs the circuit from the inputs embedded in the buffer `inputs`: layer l from its input, inputs + l step, into
 * work, then, but after the last, the ring from work into the next layer's input (the forward passes step 0,
 * one buffer for every layer's input; the backward keeps them all). Leaves the state before the last ring in
 * work, over the last layer's factor, which it returns: each earlier layer's is multiplied back in by the
 * ring's copy. With `after_low` (two high wires only), each layer's state after its low wires is kept there too,
 * at after_low + l step; with `low_only` too, the last layer stops there (work is left untouched). */
static double run(const Circuit *c, const Gate *gates, int64_t t0, int64_t tb, REAL *inputs, int64_t step, REAL *work,
                  REAL *norm_sq, REAL *after_low, int low_only) {
    int64_t dim = (int64_t)1 << c->n;
    double factor = 1;
    embed(c, t0, tb, inputs, norm_sq);
    for (int64_t l = 0; l < c->layers; l++) {
        REAL *next = l + 1 < c->layers ? inputs + (l + 1) * step : NULL;
        REAL *low_out = after_low ? after_low + l * step : work;
        factor = rotate_layer(low_out, inputs + l * step, c->n, gates + l * c->n, l ? dim : c->width, next, c->forward,
                              c->inverse, after_low ? work : NULL, low_only && !next);
    }
    return factor;
}

/* The probabilities p_j = psi[inverse[j]]^2 after the last ring summed by the high and the low half of the bits of
 * j: high_sums has 2^(n - n/2) rows, low_sums 2^(n/2). In order of j, so that a high row's sum stays in registers
 * and a low row is added into once every 2^(n/2) rows (not in a chain of dependent additions). Every state buffer
 * has 2^n + 1 rows, one more than the state, so that these two tables (and the adjoint's two of signed_sums),
 * 2^(n - n/2) + 2^(n/2) rows in all (3 for n = 1), fit in a spare one. */
static void half_sums(const REAL *restrict psi, const int64_t *inverse, int64_t n, REAL *restrict high_sums,
                      REAL *restrict low_sums) {
    int64_t low = n / 2, lows = (int64_t)1 << low, highs = (int64_t)1 << (n - low);
    memset(low_sums, 0, sizeof(REAL) * CHUNK * lows);
    for (int64_t h = 0; h < highs; h++) {
        REAL sum[CHUNK] = {0};
        for (int64_t l = 0; l < lows; l++) {
            const REAL *restrict a = psi + inverse[h * lows + l] * CHUNK;
            REAL *restrict into = low_sums + l * CHUNK;
            TOKEN_LOOP
            for (int t = 0; t < CHUNK; t++) {
                REAL p = a[t] * a[t];
                sum[t] += p;
                into[t] += p;
            }
        }
        memcpy(high_sums + h * CHUNK, sum, sizeof sum);
    }
}

static REAL has_input(const Circuit *c, int64_t token) {
    const REAL *row = c->x + token * c->width;
    for (int64_t k = 0; k < c->width; k++)
        if (row[k] != 0) return 1;
    return 0;
}

/* Readout (tokens, n or 2**n, plus the presence column where asked): S^T |psi|^2 / |x|^2, or the
 * probabilities. Returns 0, or 1 where a thread could not allocate its buffers (its chunks are then left
 * unwritten). */
int qaa_forward(const Circuit *c, REAL *out, int threads) {
    int64_t dim = (int64_t)1 << c->n, stride = (c->z_readout ? c->n : dim) + c->presence;
    Gate *gates = circuit_gates(c);
    if (!gates) return 1;
    int failed = 0;
    /* no return from inside the parallel loop: a failing chunk sets the flag, which the reduction ors together */
#pragma omp parallel for schedule(static) num_threads(threads) reduction(| : failed)
    for (int64_t chunk = 0; chunk < (c->tokens + CHUNK - 1) / CHUNK; chunk++) {
        REAL *psi = workspace(2 * (dim + 1) + c->n + 1);
        if (!psi) {
            failed |= 1;
            continue;
        }
        REAL *spare = psi + (dim + 1) * CHUNK, *acc = spare + (dim + 1) * CHUNK; /* state buffers: see half_sums */
        REAL *norm_sq = acc + c->n * CHUNK;
        int64_t t0 = chunk * CHUNK, tb = c->tokens - t0 < CHUNK ? c->tokens - t0 : CHUNK;
        double factor = run(c, gates, t0, tb, spare, 0, psi, norm_sq, NULL, 0);
        for (int t = 0; t < CHUNK; t++) norm_sq[t] /= (REAL)(factor * factor); /* the readout of psi f */
        if (c->z_readout) {
            /* z_q = sum_j (-1)^bit_q(j) p_j over the probabilities after the last ring, p_j = psi[inverse[j]]^2.
             * One pass adds each p_j into the sums over its index's high and low halves of bits; each wire's
             * z is then a signed sum over one of those halves (2^(n/2) terms, not 2^n). */
            int64_t low = c->n / 2;
            REAL *high_sums = spare, *low_sums = spare + (dim >> low) * CHUNK;
            half_sums(psi, c->inverse, c->n, high_sums, low_sums);
            for (int64_t q = 0; q < c->n; q++) {
                int64_t bit = c->n - 1 - q;
                const REAL *sums = bit >= low ? high_sums : low_sums;
                int64_t rows = bit >= low ? dim >> low : (int64_t)1 << low, b = bit >= low ? bit - low : bit;
                REAL *restrict z = acc + q * CHUNK;
                memset(z, 0, sizeof(REAL) * CHUNK);
                for (int64_t r = 0; r < rows; r++) {
                    REAL sign = (r >> b) & 1 ? -1 : 1;
                    for (int t = 0; t < CHUNK; t++) z[t] += sign * sums[r * CHUNK + t];
                }
            }
            for (int64_t t = 0; t < tb; t++)
                for (int64_t q = 0; q < c->n; q++) out[(t0 + t) * stride + q] = acc[q * CHUNK + t] / norm_sq[t];
        } else {
            for (int64_t t = 0; t < tb; t++)
                for (int64_t j = 0; j < dim; j++) {
                    REAL a = psi[c->inverse[j] * CHUNK + t];
                    out[(t0 + t) * stride + j] = a * a / norm_sq[t];
                }
        }
        if (c->presence)
            for (int64_t t = 0; t < tb; t++) out[(t0 + t) * stride + stride - 1] = has_input(c, t0 + t);
    }
    free(gates);
    return failed;
}

/* table[r] = sum_i (-1)^(bit i of r, counted from the top) g_i over `wires` rows g_i, for r < 2^wires: built
 * one wire at a time, doubling the table each time */
static void signed_sums(REAL *restrict table, const REAL *restrict g, int64_t wires) {
    memset(table, 0, sizeof(REAL) * CHUNK);
    for (int64_t i = 0; i < wires; i++)
        for (int t = 0; t < CHUNK; t++) table[t] += g[i * CHUNK + t];
    for (int64_t i = 0, size = 1; i < wires; i++, size *= 2)
        for (int64_t r = size - 1; r >= 0; r--) /* backwards: rows 2r, 2r + 1 are read already */
            for (int t = 0; t < CHUNK; t++) {
                REAL v = table[r * CHUNK + t];
                table[(2 * r + 1) * CHUNK + t] = v - 2 * g[i * CHUNK + t];
                table[2 * r * CHUNK + t] = v;
            }
}

/* Gradients of sum(grad_out * readout), grad_out's rows `grad_stride` apart (the readout's columns first, at unit
 * stride): wrt x into grad_x (tokens, width), wrt the angles into grad_angles (layers, n), summed over the
 * chunks in their order after the parallel loop (the same sum whatever the thread count). The circuit is rerun
 * keeping each layer's input state, then the adjoint alone is sent back layer by layer, and each angle's dL/dtheta =
 * 1/2 sum (lam1 psi0 - lam0 psi1) over its wire's amplitude pairs and the tokens, at the layer's input.
 * The readout r(x) / |x|^2 has r quadratic in x, so x . d(r.g)/dx = 2 r.g (Euler): the share of the
 * norm, -2x (r.g) / |x|^4, is minus the radial part of the rest, and r itself is not needed.
 * Returns 0, or 1 where a thread could not allocate its buffers, as qaa_forward. */
int qaa_backward(const Circuit *c, const REAL *grad_out, int64_t grad_stride, REAL *grad_x, REAL *grad_angles,
                 int threads) {
    int64_t dim = (int64_t)1 << c->n, chunks = (c->tokens + CHUNK - 1) / CHUNK, angles = c->layers * c->n;
    /* the high wires' sums in their own pass, layer 0's zero blocks skipped, and with the z readout the seed in
     * the first pass (unrotate_layer): backward 0.95x, then 0.93x (float32, 512 tokens, paired) */
    int keep_after_low = wires_above_block(c->n) == 2;
    Gate *gates = circuit_gates(c);
    double *partial = calloc((size_t)(chunks * angles + 1), sizeof(double)); /* each chunk's angle gradients */
    if (!gates || !partial) {
        free(gates), free(partial);
        return 1;
    }
    int failed = 0;
#pragma omp parallel for schedule(static) num_threads(threads) reduction(| : failed)
    for (int64_t chunk = 0; chunk < chunks; chunk++) {
        /* each layer's input (and with two high wires its state after the low ones), the state, the adjoint and
         * its spare, of 2^n + 1 rows each (see half_sums) */
        int64_t rows = dim + 1, kept = c->layers * (1 + keep_after_low);
        REAL *inputs = workspace((kept + 3) * rows + c->n + 1);
        if (!inputs) {
            failed |= 1;
            continue;
        }
        REAL *after_low = keep_after_low ? inputs + c->layers * rows * CHUNK : NULL;
        REAL *psi = inputs + kept * rows * CHUNK, *lam = psi + rows * CHUNK, *lam_spare = lam + rows * CHUNK;
        REAL *acc = lam_spare + rows * CHUNK, *norm_sq = acc + c->n * CHUNK;
        int64_t t0 = chunk * CHUNK, tb = c->tokens - t0 < CHUNK ? c->tokens - t0 : CHUNK;
        /* with two high wires and the z readout, the last layer's pair, the seed and their undoing are one pass */
        int seeding = after_low && c->z_readout;
        /* stored = true times scale */
        double scale = 1 / run(c, gates, t0, tb, inputs, rows * CHUNK, psi, norm_sq, after_low, seeding);
        /* d loss / d state before the last ring: 2 psi times d loss / d probability (over |x|^2) */
        Seed seed = {0};
        if (c->z_readout) {
            /* w_j = sum_q (-1)^bit_q(j) g_q over the basis after the last ring, so that d loss / d psi_k =
             * 2 psi_k w[forward[k]]: w_j is the sum of two tables, over the high and the low half of j's bits */
            int64_t low = c->n / 2;
            REAL *tables = seeding ? lam : lam_spare; /* lam_spare is the first pass's output when seeding */
            REAL *g = acc, *high_table = tables, *low_table = tables + (dim >> low) * CHUNK;
            memset(g, 0, sizeof(REAL) * CHUNK * c->n);
            for (int64_t q = 0; q < c->n; q++)
                for (int64_t t = 0; t < tb; t++) g[q * CHUNK + t] = grad_out[(t0 + t) * grad_stride + q] / norm_sq[t];
            signed_sums(high_table, g, c->n - low);
            signed_sums(low_table, g + (c->n - low) * CHUNK, low);
            seed = (Seed){high_table, low_table, c->forward, low};
            if (!seeding) /* else the first pass seeds */
                for (int64_t k = 0; k < dim; k++) {
                    const REAL *restrict h = high_row(&seed, k), *restrict l = low_row(&seed, k);
                    for (int t = 0; t < CHUNK; t++) lam[k * CHUNK + t] = 2 * psi[k * CHUNK + t] * (h[t] + l[t]);
                }
        } else {
            memset(lam, 0, sizeof(REAL) * CHUNK << c->n);
            for (int64_t k = 0; k < dim; k++)
                for (int64_t t = 0; t < tb; t++)
                    lam[k * CHUNK + t] =
                        2 * psi[k * CHUNK + t] * grad_out[(t0 + t) * grad_stride + c->forward[k]] / norm_sq[t];
        }
        /* The adjoint alone goes back through each layer (R^T, then the ring's inverse); each angle's gradient is
         * read off at the layer's input, where the state is kept: the layer's rotations commute and
         * d/dtheta_q R = J_q R (J_q half the generator on wire q), so lam_out . J_q R psi_in =
         * (R^T lam_out) . J_q psi_in, for every wire at one point. */
        for (int64_t l = c->layers - 1; l >= 0; l--) {
            REAL *back = lam_spare;
            double sums[64];
            /* below the last layer, the ring undone first: adjoint[j] = adjoint_after[forward[j]], at scale 1 again */
            const int64_t *ring = l + 1 < c->layers ? c->forward : NULL;
            int first = seeding && l + 1 == c->layers;
            const REAL *kept = after_low ? after_low + l * rows * CHUNK : NULL;
            double factor = unrotate_layer(back, first ? kept : lam, inputs + l * rows * CHUNK, kept,
                                           l ? dim : c->width, c->n, gates + l * c->n, acc, sums, ring,
                                           (REAL)(1 / scale), first ? &seed : NULL);
            scale = (ring ? 1 : scale) / factor;
            lam_spare = lam, lam = back;
            for (int64_t q = 0; q < c->n; q++) partial[chunk * angles + l * c->n + q] = 0.5 * sums[q] / scale;
        }
        /* the adjoint of the amplitudes less each token's radial part, taken against the kept input state (the
         * inputs' rows), then into the tokens' rows */
        REAL unscale = (REAL)(1 / scale), *share = acc;
        const REAL *state = inputs;
        memset(share, 0, sizeof(REAL) * CHUNK);
        for (int64_t k = 0; k < c->width; k++)
            for (int t = 0; t < CHUNK; t++) share[t] += state[k * CHUNK + t] * lam[k * CHUNK + t];
        for (int t = 0; t < CHUNK; t++) share[t] *= unscale / norm_sq[t];
        for (int64_t k = 0; k < c->width; k++)
            for (int t = 0; t < CHUNK; t++)
                lam[k * CHUNK + t] = unscale * lam[k * CHUNK + t] - state[k * CHUNK + t] * share[t];
        transpose(grad_x + t0 * c->width, c->width, lam, CHUNK, c->width, tb);
    }
    for (int64_t i = 0; i < angles; i++) {
        double total = 0;
        for (int64_t chunk = 0; chunk < chunks; chunk++) total += partial[chunk * angles + i];
        grad_angles[i] = (REAL)total;
    }
    free(gates), free(partial);
    return failed;
}

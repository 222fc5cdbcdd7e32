/* The fused CPU kernel of the real (RY) QAA circuit: see fused_cpu.py for what it computes and why.
 *
 * Compiled once per real type (-DREAL=float or -DREAL=double). States are stored amplitude-major,
 * CHUNK tokens per row, so that every gate is a loop over rows whose innermost loop runs over
 * the tokens: the compiler turns it into vector instructions. The chunks are shared out over
 * OpenMP threads: built with -fopenmp, this file links libgomp.so.1, which resolves to the copy
 * PyTorch has loaded already, so the kernel runs on PyTorch's own (already awake) worker threads
 * instead of competing with them.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#if defined(__AVX512F__)
#include <immintrin.h>
#endif

/* tokens per row: 32 (wide, for training and prompts) or 8 (narrow, for one token per sequence in generation) */
#ifndef CHUNK
#define CHUNK 32
#endif

typedef struct {
    int64_t tokens, width, layers, n;
    const REAL *x;        /* (tokens, width), width <= 2**n */
    const REAL *cos, *sin; /* (layers, n): cos and sin of half the angles */
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
    memset(psi, 0, sizeof(REAL) * CHUNK << c->n); /* padding amplitudes and tokens past the end stay 0 */
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
 * one. The rotations are compute-bound, so this halves their time; the factors f (at least 1/sqrt 2 each) are
 * multiplied back in once per layer, where the state is copied anyway (the ring) or read out. */
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
 * rows [0, dim) of psi: each group of four amplitudes is read and written once. `s1`, `s2` select the
 * forms, and are constants in each of the copies the dispatchers below make. */
static inline __attribute__((always_inline)) void turn_one(REAL *restrict psi, int64_t dim, int64_t bit, REAL t,
                                                            const int s1) {
    int64_t stride = (int64_t)1 << bit;
    for (int64_t base = 0; base < dim; base += 2 * stride)
        for (int64_t k = base; k < base + stride; k++) {
            REAL *restrict a = psi + k * CHUNK, *restrict b = psi + (k + stride) * CHUNK;
#pragma GCC ivdep /* distinct rows; without it GCC still checks them for overlap at run time (5% of backward) */
            for (int i = 0; i < CHUNK; i++) {
                REAL a0 = a[i], a1 = b[i], b0, b1;
                TURN(s1, 0, t, a0, a1, b0, b1);
                a[i] = b0, b[i] = b1;
            }
        }
}

static inline __attribute__((always_inline)) void turn_two(REAL *restrict psi, int64_t dim, int64_t bit, REAL t1,
                                                            REAL t2, const int s1, const int s2) {
    int64_t hi = (int64_t)1 << bit, lo = hi >> 1;
    for (int64_t base = 0; base < dim; base += 2 * hi)
        for (int64_t mid = base; mid < base + hi; mid += 2 * lo)
            for (int64_t k = mid; k < mid + lo; k++) {
                REAL *restrict p00 = psi + k * CHUNK, *restrict p01 = psi + (k + lo) * CHUNK;
                REAL *restrict p10 = psi + (k + hi) * CHUNK, *restrict p11 = psi + (k + hi + lo) * CHUNK;
#pragma GCC ivdep
                for (int i = 0; i < CHUNK; i++) {
                    REAL b00, b01, b10, b11;
                    TURN(s1, 0, t1, p00[i], p10[i], b00, b10); /* first wire: pairs (00, 10), (01, 11) */
                    TURN(s1, 0, t1, p01[i], p11[i], b01, b11);
                    TURN(s2, 0, t2, b00, b01, p00[i], p01[i]); /* second wire: (00, 01), (10, 11) */
                    TURN(s2, 0, t2, b10, b11, p10[i], p11[i]);
                }
            }
}

static void rotate(REAL *psi, int64_t dim, int64_t bit, Gate g) {
    if (g.by_sin) turn_one(psi, dim, bit, g.t, 1);
    else turn_one(psi, dim, bit, g.t, 0);
}

static void rotate_two(REAL *psi, int64_t dim, int64_t bit, Gate g1, Gate g2) {
    if (g1.by_sin && g2.by_sin) turn_two(psi, dim, bit, g1.t, g2.t, 1, 1);
    else if (g1.by_sin) turn_two(psi, dim, bit, g1.t, g2.t, 1, 0);
    else if (g2.by_sin) turn_two(psi, dim, bit, g1.t, g2.t, 0, 1);
    else turn_two(psi, dim, bit, g1.t, g2.t, 0, 0);
}

/* Rows per block whose wires are applied while the block stays in the L1 cache (32 KB of floats at CHUNK 32) */
#define BLOCK_BITS 8

/* One layer's rotations (wire q acts on index bit n - 1 - q), two wires at a time: the wires of the low
 * BLOCK_BITS bits block by block, then the others over the whole state. They commute, so the order is free.
 * Returns the product of the layer's factors f. */
static double rotate_layer(REAL *psi, int64_t n, const REAL *cos, const REAL *sin) {
    int64_t dim = (int64_t)1 << n, low = n < BLOCK_BITS ? n : BLOCK_BITS, rows = (int64_t)1 << low;
    Gate g[64];
    double factor = 1;
    for (int64_t q = 0; q < n; q++) g[q] = gate(cos[q], sin[q]), factor *= g[q].f;
    for (int64_t block = 0; block < dim; block += rows) {
        REAL *part = psi + block * CHUNK;
        int64_t q = n - low;
        if (low % 2) rotate(part, rows, n - 1 - q, g[q]), q++;
        for (; q + 1 < n; q += 2) rotate_two(part, rows, n - 1 - q, g[q], g[q + 1]);
    }
    int64_t q = 0;
    for (; q + 1 < n - low; q += 2) rotate_two(psi, dim, n - 1 - q, g[q], g[q + 1]);
    if (q < n - low) rotate(psi, dim, n - 1 - q, g[q]);
    return factor;
}

/* dst row k = scale times src row index[k] */
static void gather(const REAL *restrict src, REAL *restrict dst, const int64_t *index, int64_t dim, REAL scale) {
    for (int64_t k = 0; k < dim; k++) {
        const REAL *restrict from = src + index[k] * CHUNK;
        REAL *restrict to = dst + k * CHUNK;
        for (int i = 0; i < CHUNK; i++) to[i] = scale * from[i];
    }
}

static void swap(REAL **a, REAL **b) {
    REAL *t = *a;
    *a = *b;
    *b = t;
}

/* The state before the last ring in *psi (the buffers may be swapped), over the last layer's factor, which
 * it returns: each earlier layer's is multiplied back in by the ring's copy. */
static double run(const Circuit *c, int64_t t0, int64_t tb, REAL **psi, REAL **spare, REAL *norm_sq) {
    int64_t dim = (int64_t)1 << c->n;
    double factor = 1;
    embed(c, t0, tb, *psi, norm_sq);
    for (int64_t l = 0; l < c->layers; l++) {
        if (l) {
            gather(*psi, *spare, c->inverse, dim, (REAL)factor);
            swap(psi, spare);
        }
        factor = rotate_layer(*psi, c->n, c->cos + l * c->n, c->sin + l * c->n);
    }
    return factor;
}

/* Every state buffer has 2^n + 1 rows: one more than the state, so that the two half tables of the Z readout and
 * its adjoint (2^(n - n/2) + 2^(n/2) rows, 3 for n = 1) fit in a spare one. */

/* The probabilities psi_k^2 of the state before the last ring summed by the high and the low half of the bits of
 * their index after it, j = forward[k]: high_sums has 2^(n - n/2) rows, low_sums 2^(n/2). */
static void half_sums(const REAL *restrict psi, const int64_t *forward, int64_t n, REAL *restrict high_sums,
                      REAL *restrict low_sums) {
    int64_t low = n / 2, mask = ((int64_t)1 << low) - 1, dim = (int64_t)1 << n;
    memset(high_sums, 0, sizeof(REAL) * CHUNK * (dim >> low));
    memset(low_sums, 0, sizeof(REAL) * CHUNK * (mask + 1));
    for (int64_t k = 0; k < dim; k++) {
        const REAL *restrict a = psi + k * CHUNK;
        REAL *restrict h = high_sums + (forward[k] >> low) * CHUNK, *restrict l = low_sums + (forward[k] & mask) * CHUNK;
#pragma GCC ivdep
        for (int t = 0; t < CHUNK; t++) {
            REAL p = a[t] * a[t];
            h[t] += p;
            l[t] += p;
        }
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
    int failed = 0;
    /* no return from inside the parallel loop: a failing chunk sets the flag, which the reduction ors together */
#pragma omp parallel for schedule(static) num_threads(threads) reduction(| : failed)
    for (int64_t chunk = 0; chunk < (c->tokens + CHUNK - 1) / CHUNK; chunk++) {
        REAL *psi = workspace(2 * (dim + 1) + c->n + 1);
        if (!psi) {
            failed |= 1;
            continue;
        }
        REAL *spare = psi + (dim + 1) * CHUNK, *acc = spare + (dim + 1) * CHUNK; /* state buffers: 2^n + 1 rows (see half_sums) */
        REAL *norm_sq = acc + c->n * CHUNK;
        int64_t t0 = chunk * CHUNK, tb = c->tokens - t0 < CHUNK ? c->tokens - t0 : CHUNK;
        double factor = run(c, t0, tb, &psi, &spare, norm_sq);
        for (int t = 0; t < CHUNK; t++) norm_sq[t] /= (REAL)(factor * factor); /* the readout of psi f */
        if (c->z_readout) {
            /* z_q = sum_j (-1)^bit_q(j) p_j over the probabilities after the last ring, p_j = psi[inverse[j]]^2.
             * One pass adds each p_j into the sums over its index's high and low halves of bits; each wire's
             * z is then a signed sum over one of those halves (2^(n/2) terms, not 2^n). */
            int64_t low = c->n / 2, mask = ((int64_t)1 << low) - 1;
            REAL *high_sums = spare, *low_sums = spare + (dim >> low) * CHUNK;
            half_sums(psi, c->forward, c->n, high_sums, low_sums);
            for (int64_t q = 0; q < c->n; q++) {
                int64_t bit = c->n - 1 - q;
                const REAL *sums = bit >= low ? high_sums : low_sums;
                int64_t rows = bit >= low ? dim >> low : mask + 1, b = bit >= low ? bit - low : bit;
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
    return failed;
}

static double lane_sum(const REAL *acc) {
    double total = 0;
    for (int t = 0; t < CHUNK; t++) total += acc[t];
    return total;
}

/* sum a[k] b[k] in CHUNK partial sums, which the compiler keeps in vector registers (one running sum is a
 * serial chain: floating-point addition may not be reordered) */
static REAL dot(const REAL *restrict a, const REAL *restrict b, int64_t count) {
    REAL partial[CHUNK] = {0}, total = 0;
    int64_t k = 0;
    for (; k + CHUNK <= count; k += CHUNK)
        for (int i = 0; i < CHUNK; i++) partial[i] += a[k + i] * b[k + i];
    for (; k < count; k++) total += a[k] * b[k];
    for (int i = 0; i < CHUNK; i++) total += partial[i];
    return total;
}

/* Backward through one or two wires' T (as turn_one, turn_two): the state and the adjoint just after them go
 * back through T^T, and each wire's sum (lam1 b0 - lam0 b1) over the pairs and lanes just after it goes to
 * sums[] (the first wire's, then the second's). */
static inline __attribute__((always_inline)) void unturn_one(REAL *restrict psi, REAL *restrict lam, int64_t dim,
                                                              int64_t bit, REAL t, REAL *restrict acc,
                                                              double *sums, const int s1) {
    int64_t stride = (int64_t)1 << bit;
    memset(acc, 0, sizeof(REAL) * CHUNK);
    for (int64_t base = 0; base < dim; base += 2 * stride)
        for (int64_t k = base; k < base + stride; k++) {
            REAL *restrict s0 = psi + k * CHUNK, *restrict s1p = psi + (k + stride) * CHUNK;
            REAL *restrict m0 = lam + k * CHUNK, *restrict m1 = lam + (k + stride) * CHUNK;
#pragma GCC ivdep
            for (int i = 0; i < CHUNK; i++) {
                REAL b0 = s0[i], b1 = s1p[i], l0 = m0[i], l1 = m1[i];
                acc[i] += l1 * b0 - l0 * b1;
                TURN(s1, 1, t, b0, b1, s0[i], s1p[i]);
                TURN(s1, 1, t, l0, l1, m0[i], m1[i]);
            }
        }
    sums[0] = lane_sum(acc);
}

static inline __attribute__((always_inline)) void unturn_two(REAL *restrict psi, REAL *restrict lam, int64_t dim,
                                                              int64_t bit, REAL t1, REAL t2, REAL *restrict acc,
                                                              double *sums, const int s1, const int s2) {
    int64_t hi = (int64_t)1 << bit, lo = hi >> 1;
    REAL *restrict acc1 = acc, *restrict acc2 = acc + CHUNK;
    memset(acc, 0, sizeof(REAL) * 2 * CHUNK);
    for (int64_t base = 0; base < dim; base += 2 * hi)
        for (int64_t mid = base; mid < base + hi; mid += 2 * lo)
            for (int64_t k = mid; k < mid + lo; k++) {
                REAL *restrict p00 = psi + k * CHUNK, *restrict p01 = psi + (k + lo) * CHUNK;
                REAL *restrict p10 = psi + (k + hi) * CHUNK, *restrict p11 = psi + (k + hi + lo) * CHUNK;
                REAL *restrict q00 = lam + k * CHUNK, *restrict q01 = lam + (k + lo) * CHUNK;
                REAL *restrict q10 = lam + (k + hi) * CHUNK, *restrict q11 = lam + (k + hi + lo) * CHUNK;
#pragma GCC ivdep /* eight distinct rows: too many pairs for the compiler's own overlap checks */
                for (int i = 0; i < CHUNK; i++) {
                    REAL b00 = p00[i], b01 = p01[i], b10 = p10[i], b11 = p11[i];
                    REAL l00 = q00[i], l01 = q01[i], l10 = q10[i], l11 = q11[i];
                    REAL a00, a01, a10, a11, m00, m01, m10, m11;
                    /* second wire first: pairs (00, 01) and (10, 11) */
                    acc2[i] += l01 * b00 - l00 * b01 + l11 * b10 - l10 * b11;
                    TURN(s2, 1, t2, b00, b01, a00, a01);
                    TURN(s2, 1, t2, b10, b11, a10, a11);
                    TURN(s2, 1, t2, l00, l01, m00, m01);
                    TURN(s2, 1, t2, l10, l11, m10, m11);
                    /* then the first wire: pairs (00, 10) and (01, 11) */
                    acc1[i] += m10 * a00 - m00 * a10 + m11 * a01 - m01 * a11;
                    TURN(s1, 1, t1, a00, a10, p00[i], p10[i]);
                    TURN(s1, 1, t1, a01, a11, p01[i], p11[i]);
                    TURN(s1, 1, t1, m00, m10, q00[i], q10[i]);
                    TURN(s1, 1, t1, m01, m11, q01[i], q11[i]);
                }
            }
    sums[0] = lane_sum(acc1);
    sums[1] = lane_sum(acc2);
}

/* The order in which a layer's wires were undone and their sums: the gradient of each wire's angle is half
 * its sum over the square of the states' scale at that point, which each undone factor f changes. */
typedef struct {
    double sums[64];
    int64_t order[64], count;
} Walk;

static void walked(Walk *w, int64_t q, double sum) {
    int64_t i = 0;
    while (i < w->count && w->order[i] != q) i++;
    if (i == w->count) w->order[w->count++] = q;
    w->sums[q] += sum;
}

static void unrotate(REAL *psi, REAL *lam, int64_t dim, int64_t bit, Gate g, REAL *acc, Walk *w, int64_t q) {
    double s[1];
    if (g.by_sin) unturn_one(psi, lam, dim, bit, g.t, acc, s, 1);
    else unturn_one(psi, lam, dim, bit, g.t, acc, s, 0);
    walked(w, q, s[0]);
}

static void unrotate_two(REAL *psi, REAL *lam, int64_t dim, int64_t bit, Gate g1, Gate g2, REAL *acc, Walk *w,
                         int64_t q) {
    double s[2];
    if (g1.by_sin && g2.by_sin) unturn_two(psi, lam, dim, bit, g1.t, g2.t, acc, s, 1, 1);
    else if (g1.by_sin) unturn_two(psi, lam, dim, bit, g1.t, g2.t, acc, s, 1, 0);
    else if (g2.by_sin) unturn_two(psi, lam, dim, bit, g1.t, g2.t, acc, s, 0, 1);
    else unturn_two(psi, lam, dim, bit, g1.t, g2.t, acc, s, 0, 0);
    walked(w, q + 1, s[1]);
    walked(w, q, s[0]);
}

/* State and adjoint rows per block in the backward: psi's and lam's share fit the L1 cache together */
#define BACK_BITS 6

/* Backward through rotate_layer: the wires of the high bits over the whole state, then the low ones block by
 * block. *scale is the states' scale (stored = true times scale) on entry, and is updated. */
static void unrotate_layer(REAL *psi, REAL *lam, int64_t n, const REAL *cos, const REAL *sin, REAL *acc,
                           double *grad, double *scale) {
    int64_t dim = (int64_t)1 << n, low = n < BACK_BITS ? n : BACK_BITS, rows = (int64_t)1 << low, high = n - low;
    Gate g[64];
    Walk w = {{0}, {0}, 0};
    for (int64_t q = 0; q < n; q++) g[q] = gate(cos[q], sin[q]);
    int64_t q = 0;
    for (; q + 1 < high; q += 2) unrotate_two(psi, lam, dim, n - 1 - q, g[q], g[q + 1], acc, &w, q);
    if (q < high) unrotate(psi, lam, dim, n - 1 - q, g[q], acc, &w, q);
    for (int64_t block = 0; block < dim; block += rows) {
        REAL *part = psi + block * CHUNK, *adjoint = lam + block * CHUNK;
        q = high;
        if (low % 2) unrotate(part, adjoint, rows, n - 1 - q, g[q], acc, &w, q), q++;
        for (; q + 1 < n; q += 2) unrotate_two(part, adjoint, rows, n - 1 - q, g[q], g[q + 1], acc, &w, q);
    }
    double a = *scale;
    for (int64_t i = 0; i < w.count; i++) {
        int64_t wire = w.order[i];
        grad[wire] = 0.5 * w.sums[wire] / (a * a);
        a /= g[wire].f; /* T^T = R^T / f */
    }
    *scale = a;
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

/* Gradients of sum(grad_out * readout): wrt x into grad_x (tokens, width), wrt the angles into
 * grad_angles (chunks, layers, n), one slice per chunk. The circuit is rerun, then walked back gate
 * by gate: each rotation is undone on the state (R^T) while the adjoint goes through it, and
 * dL/dtheta = 1/2 sum (lam1 b0 - lam0 b1) over the amplitude pairs and tokens just after the gate.
 * The readout r(x) / |x|^2 has r quadratic in x, so x . d(r.g)/dx = 2 r.g (Euler): the share of the
 * norm, -2x (r.g) / |x|^4, is minus the radial part of the rest, and r itself is not needed.
 * Returns 0, or 1 where a thread could not allocate its buffers, as qaa_forward. */
int qaa_backward(const Circuit *c, const REAL *grad_out, REAL *grad_x, double *grad_angles, int threads) {
    int64_t dim = (int64_t)1 << c->n, n_out = c->z_readout ? c->n : dim;
    int failed = 0;
#pragma omp parallel for schedule(static) num_threads(threads) reduction(| : failed)
    for (int64_t chunk = 0; chunk < (c->tokens + CHUNK - 1) / CHUNK; chunk++) {
        REAL *psi = workspace(4 * (dim + 1) + 3);
        if (!psi) {
            failed |= 1;
            continue;
        }
        REAL *spare = psi + (dim + 1) * CHUNK, *lam = spare + (dim + 1) * CHUNK;
        REAL *lam_spare = lam + (dim + 1) * CHUNK, *acc = lam_spare + (dim + 1) * CHUNK, *norm_sq = acc + 2 * CHUNK;
        int64_t t0 = chunk * CHUNK, tb = c->tokens - t0 < CHUNK ? c->tokens - t0 : CHUNK;
        double scale = 1 / run(c, t0, tb, &psi, &spare, norm_sq);
        /* d loss / d state before the last ring: 2 psi times d loss / d probability (over |x|^2) */
        if (c->z_readout) {
            /* w_j = sum_q (-1)^bit_q(j) g_q over the basis after the last ring, so that d loss / d psi_k =
             * 2 psi_k w[forward[k]]: w_j is the sum of two tables, over the high and the low half of j's bits */
            int64_t low = c->n / 2, mask = ((int64_t)1 << low) - 1;
            REAL *g = lam_spare, *high_table = spare, *low_table = spare + (dim >> low) * CHUNK;
            memset(g, 0, sizeof(REAL) * CHUNK * c->n);
            for (int64_t q = 0; q < c->n; q++)
                for (int64_t t = 0; t < tb; t++) g[q * CHUNK + t] = grad_out[(t0 + t) * n_out + q] / norm_sq[t];
            signed_sums(high_table, g, c->n - low);
            signed_sums(low_table, g + (c->n - low) * CHUNK, low);
            for (int64_t k = 0; k < dim; k++) {
                const REAL *restrict h = high_table + (c->forward[k] >> low) * CHUNK;
                const REAL *restrict l = low_table + (c->forward[k] & mask) * CHUNK;
                for (int t = 0; t < CHUNK; t++) lam[k * CHUNK + t] = 2 * psi[k * CHUNK + t] * (h[t] + l[t]);
            }
        } else {
            memset(lam, 0, sizeof(REAL) * CHUNK << c->n);
            for (int64_t k = 0; k < dim; k++)
                for (int64_t t = 0; t < tb; t++)
                    lam[k * CHUNK + t] = 2 * psi[k * CHUNK + t] * grad_out[(t0 + t) * n_out + c->forward[k]] / norm_sq[t];
        }
        for (int64_t l = c->layers - 1; l >= 0; l--) {
            unrotate_layer(psi, lam, c->n, c->cos + l * c->n, c->sin + l * c->n, acc,
                           grad_angles + (chunk * c->layers + l) * c->n, &scale);
            if (l) { /* undo the ring: state[j] = state_after[forward[j]], at scale 1 again */
                gather(psi, spare, c->forward, dim, (REAL)(1 / scale));
                swap(&psi, &spare);
                gather(lam, lam_spare, c->forward, dim, (REAL)(1 / scale));
                swap(&lam, &lam_spare);
                scale = 1;
            }
        }
        /* the adjoint of the amplitudes into the tokens' rows, less each row's radial part */
        transpose(grad_x + t0 * c->width, c->width, lam, CHUNK, c->width, tb);
        for (int64_t t = 0; t < tb; t++) {
            const REAL *restrict row = c->x + (t0 + t) * c->width;
            REAL *restrict out = grad_x + (t0 + t) * c->width;
            REAL unscale = (REAL)(1 / scale), share = unscale * dot(row, out, c->width) / norm_sq[t];
            for (int64_t k = 0; k < c->width; k++) out[k] = unscale * out[k] - row[k] * share;
        }
    }
    return failed;
}

int64_t qaa_chunk(void) { return CHUNK; }

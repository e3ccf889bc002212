/* Spike-driven convolution for the CPU: binary spikes packed into bits, convolved by table look-ups.
 *
 * A convolution whose input is a spike map (0 or 1) needs no multiplications: each output is the sum of the
 * weights where a spike arrived. With the input channels packed 8 to a byte, the sum of the weights of 8 channels
 * at one kernel tap is one of 256 precomputed rows (the table), so one look-up and one vector add replace 8
 * multiply-adds per output channel, and the spike map is read as 1 bit per element instead of 32.
 *
 * pack_spikes: the plugin's neurons (hard reset to 0; LIF with tau 2 and no input decay, or IF) run over the T
 *   steps of a membrane input and write their spikes as bits: out[t, b, 1 + h, 1 + w, g], bit k = the spike of
 *   channel 8 g + k, with a zero border of one pixel.
 * table_conv: out[n, y, x, :] = bias + sum over taps (i, j) and groups g of
 *   table[(i K + j) G + g][P[n, y s + i + o, x s + j + o, g]][:], o = 1 - padding, for one slice of the output
 *   channels (a layer whose whole table would leave the cache runs as several slices, each with its own table).
 *   Each (tap, group) block of the table is 256 rows of cout floats plus 16 floats of skew, so that the rows of
 *   one code in different blocks do not share a cache set (blocks of a power-of-two size all would).
 * Both work on a range of rows [begin, end), split over `threads` OpenMP threads when built with -fopenmp: in a
 * PyTorch process that is PyTorch's own OpenMP runtime (same SONAME, already loaded), so these kernels and
 * PyTorch's operators share one thread pool instead of competing for the cores. Built and loaded by
 * ops/spike_conv/__init__.py; the arithmetic of the neurons is that of ops/neuron_loops.py (no fast-math).
 */
#include <stddef.h>
#include <stdint.h>
#ifdef _OPENMP
#include <omp.h>
#endif

typedef float v8f __attribute__((vector_size(32), aligned(4)));
typedef int32_t v8i __attribute__((vector_size(32), aligned(4)));

#define UNROLL _Pragma("GCC unroll 16")

/* x: element (t, b, c, h, w) at x[t st + b sb + c sc + h sh + w sw]; rows are (b, h) pairs */
static void pack_rows(const float *x, int64_t st, int64_t sb, int64_t sc, int64_t sh, int64_t sw,
                      int64_t T, int64_t B, int64_t C, int64_t H, int64_t W,
                      uint8_t *out, float v_th, int64_t leaky, int64_t begin, int64_t end)
{
    const int64_t groups = (C + 7) / 8, Hp = H + 2, Wp = W + 2;
    for (int64_t row = begin; row < end; ++row) {
        const int64_t b = row / H, h = row % H;
        for (int64_t w = 0; w < W; ++w) {
            for (int64_t g = 0; g < groups; ++g) {
                const float *src = x + b * sb + (8 * g) * sc + h * sh + w * sw;
                uint8_t *dst = out + ((b * Hp + 1 + h) * Wp + 1 + w) * groups + g;
                const int64_t plane = B * Hp * Wp * groups;  /* one time step of out */
                if (sc == 1 && C - 8 * g >= 8) {  /* 8 contiguous channels (channels-last): vector lanes */
                    v8f v = {0, 0, 0, 0, 0, 0, 0, 0};
                    const v8f threshold = {v_th, v_th, v_th, v_th, v_th, v_th, v_th, v_th};
                    for (int64_t t = 0; t < T; ++t) {
                        const v8f input = *(const v8f *)(src + t * st);
                        /* the same charge as ops/neuron_loops.py: x + v / 2 (an exact halving) or x + v */
                        const v8f charged = leaky ? input + v * 0.5f : input + v;
                        const v8i fire = charged >= threshold;  /* -1 where it fires */
                        unsigned bits = 0;
                        UNROLL for (int k = 0; k < 8; ++k) bits |= (unsigned)(fire[k] & 1) << k;
                        dst[t * plane] = (uint8_t)bits;
                        /* hard reset as ops/neuron_loops.py: h - h where it fired (0, or NaN for an infinite h) */
                        v = charged - (v8f)((v8i)charged & fire);
                    }
                } else {
                    const int64_t channels = C - 8 * g < 8 ? C - 8 * g : 8;
                    float v[8] = {0, 0, 0, 0, 0, 0, 0, 0};
                    for (int64_t t = 0; t < T; ++t) {
                        unsigned bits = 0;
                        for (int64_t k = 0; k < channels; ++k) {
                            const float input = src[t * st + k * sc];
                            const float charged = leaky ? input + v[k] * 0.5f : input + v[k];
                            const int fire = charged >= v_th;
                            bits |= (unsigned)fire << k;
                            v[k] = fire ? charged - charged : charged;
                        }
                        dst[t * plane] = (uint8_t)bits;
                    }
                }
            }
        }
    }
}

/* NV vectors of 8 output channels, G groups, K x K taps (compile-time), U output pixels at a time (independent
 * add chains); rows are (n, y) pairs */
#define TABLE_CONV(NAME, NV, G, K, U)                                                                            \
    static void NAME(const uint8_t *P, int64_t Hp, int64_t Wp, const float *table, const float *bias,           \
                     float *out, int64_t step, int64_t stride, int64_t offset, int64_t Ho, int64_t Wo,           \
                     int64_t begin, int64_t end)                                                                 \
    {                                                                                                            \
        const int64_t cout = 8 * (NV), block = 256 * cout + 16;                                                  \
        for (int64_t r = begin; r < end; ++r) {                                                                  \
            const int64_t n = r / Ho, y = r % Ho;                                                                \
            const uint8_t *base = P + ((n * Hp + y * stride + offset) * Wp + offset) * (G);                      \
            float *dst = out + r * Wo * step;                                                                    \
            int64_t x = 0;                                                                                       \
            for (; x + (U) <= Wo; x += (U)) {                                                                    \
                v8f acc[U][NV];                                                                                  \
                UNROLL for (int u = 0; u < (U); ++u) UNROLL for (int v = 0; v < (NV); ++v)                       \
                    acc[u][v] = ((const v8f *)bias)[v];                                                          \
                UNROLL for (int i = 0; i < (K); ++i) UNROLL for (int j = 0; j < (K); ++j)                        \
                UNROLL for (int g = 0; g < (G); ++g) {                                                           \
                    const float *tap = table + ((i * (K) + j) * (G) + g) * block;                                \
                    UNROLL for (int u = 0; u < (U); ++u) {                                                       \
                        const v8f *row = (const v8f *)(tap + base[(i * Wp + (x + u) * stride + j) * (G) + g] * cout); \
                        UNROLL for (int v = 0; v < (NV); ++v) acc[u][v] += row[v];                               \
                    }                                                                                            \
                }                                                                                                \
                UNROLL for (int u = 0; u < (U); ++u) UNROLL for (int v = 0; v < (NV); ++v)                       \
                    ((v8f *)(dst + (x + u) * step))[v] = acc[u][v];                                              \
            }                                                                                                    \
            for (; x < Wo; ++x) {                                                                                \
                v8f acc[NV];                                                                                     \
                UNROLL for (int v = 0; v < (NV); ++v) acc[v] = ((const v8f *)bias)[v];                           \
                UNROLL for (int i = 0; i < (K); ++i) UNROLL for (int j = 0; j < (K); ++j)                        \
                UNROLL for (int g = 0; g < (G); ++g) {                                                           \
                    const v8f *row = (const v8f *)(table + ((i * (K) + j) * (G) + g) * block                     \
                                                   + base[(i * Wp + x * stride + j) * (G) + g] * cout);          \
                    UNROLL for (int v = 0; v < (NV); ++v) acc[v] += row[v];                                      \
                }                                                                                                \
                UNROLL for (int v = 0; v < (NV); ++v) ((v8f *)(dst + x * step))[v] = acc[v];                     \
            }                                                                                                    \
        }                                                                                                        \
    }

/* the shapes of the plugin's archs (8 or 16 output channels, 1, 2 or 4 groups, 1x1 or 3x3) */
TABLE_CONV(conv_1_1_3, 1, 1, 3, 4) TABLE_CONV(conv_1_2_3, 1, 2, 3, 4) TABLE_CONV(conv_1_4_3, 1, 4, 3, 4)
TABLE_CONV(conv_2_1_3, 2, 1, 3, 2) TABLE_CONV(conv_2_2_3, 2, 2, 3, 2) TABLE_CONV(conv_2_4_3, 2, 4, 3, 2)
TABLE_CONV(conv_1_1_1, 1, 1, 1, 4) TABLE_CONV(conv_1_2_1, 1, 2, 1, 4) TABLE_CONV(conv_1_4_1, 1, 4, 1, 4)
TABLE_CONV(conv_2_1_1, 2, 1, 1, 2) TABLE_CONV(conv_2_2_1, 2, 2, 1, 2) TABLE_CONV(conv_2_4_1, 2, 4, 1, 2)

/* any other shape: the same sums with run-time sizes (cout a multiple of 8, up to 64) */
static void conv_any(const uint8_t *P, int64_t Hp, int64_t Wp, int64_t groups, const float *table,
                     const float *bias, float *out, int64_t cout, int64_t step, int64_t K, int64_t stride,
                     int64_t offset, int64_t Ho, int64_t Wo, int64_t begin, int64_t end)
{
    const int64_t nv = cout / 8, block = 256 * cout + 16;
    for (int64_t r = begin; r < end; ++r) {
        const int64_t n = r / Ho, y = r % Ho;
        const uint8_t *base = P + ((n * Hp + y * stride + offset) * Wp + offset) * groups;
        for (int64_t x = 0; x < Wo; ++x) {
            v8f acc[8];
            for (int64_t v = 0; v < nv; ++v) acc[v] = ((const v8f *)bias)[v];
            for (int64_t i = 0; i < K; ++i)
                for (int64_t j = 0; j < K; ++j)
                    for (int64_t g = 0; g < groups; ++g) {
                        const v8f *row = (const v8f *)(table + ((i * K + j) * groups + g) * block
                                                       + base[(i * Wp + x * stride + j) * groups + g] * cout);
                        for (int64_t v = 0; v < nv; ++v) acc[v] += row[v];
                    }
            for (int64_t v = 0; v < nv; ++v) ((v8f *)(out + (r * Wo + x) * step))[v] = acc[v];
        }
    }
}

typedef void (*specialised_conv)(const uint8_t *, int64_t, int64_t, const float *, const float *, float *, int64_t,
                                 int64_t, int64_t, int64_t, int64_t, int64_t, int64_t);

/* the specialised kernel for this shape, or NULL */
static specialised_conv specialised(int64_t K, int64_t cout, int64_t groups)
{
    static const specialised_conv by_shape[2][2][3] = {  /* [K 1 or 3][cout 8 or 16][groups 1, 2 or 4] */
        {{conv_1_1_1, conv_1_2_1, conv_1_4_1}, {conv_2_1_1, conv_2_2_1, conv_2_4_1}},
        {{conv_1_1_3, conv_1_2_3, conv_1_4_3}, {conv_2_1_3, conv_2_2_3, conv_2_4_3}},
    };
    const int k = K == 1 ? 0 : K == 3 ? 1 : -1, v = cout == 8 ? 0 : cout == 16 ? 1 : -1;
    const int g = groups == 1 ? 0 : groups == 2 ? 1 : groups == 4 ? 2 : -1;
    return k < 0 || v < 0 || g < 0 ? NULL : by_shape[k][v][g];
}

/* the specialised kernel for this shape, else conv_any (shapes checked by table_conv) */
static void table_conv_rows(const uint8_t *P, int64_t Hp, int64_t Wp, int64_t groups, const float *table,
                            const float *bias, float *out, int64_t cout, int64_t step, int64_t K, int64_t stride,
                            int64_t padding, int64_t Ho, int64_t Wo, int64_t begin, int64_t end)
{
    const int64_t offset = 1 - padding;
    const specialised_conv conv = specialised(K, cout, groups);
    if (conv)
        conv(P, Hp, Wp, table, bias, out, step, stride, offset, Ho, Wo, begin, end);
    else
        conv_any(P, Hp, Wp, groups, table, bias, out, cout, step, K, stride, offset, Ho, Wo, begin, end);
}

/* rows [begin, end) split into equal parts over the threads */
#ifdef _OPENMP
#define SPLIT_ROWS(threads, begin, end, CALL)                                                                    \
    _Pragma("omp parallel num_threads(threads)")                                                                 \
    {                                                                                                            \
        const int64_t n = omp_get_num_threads(), i = omp_get_thread_num(), rows = (end) - (begin);               \
        const int64_t first = (begin) + rows * i / n, last = (begin) + rows * (i + 1) / n;                       \
        CALL;                                                                                                    \
    }
#else
#define SPLIT_ROWS(threads, begin, end, CALL)                                                                    \
    {                                                                                                            \
        const int64_t first = (begin), last = (end);                                                             \
        (void)(threads);                                                                                         \
        CALL;                                                                                                    \
    }
#endif

/* 1 when built with OpenMP (the threads argument is used), else 0 (the caller splits the rows itself) */
int spike_conv_threaded(void)
{
#ifdef _OPENMP
    return 1;
#else
    return 0;
#endif
}

void pack_spikes(const float *x, int64_t st, int64_t sb, int64_t sc, int64_t sh, int64_t sw,
                 int64_t T, int64_t B, int64_t C, int64_t H, int64_t W,
                 uint8_t *out, float v_th, int64_t leaky, int64_t begin, int64_t end, int64_t threads)
{
    SPLIT_ROWS(threads, begin, end, pack_rows(x, st, sb, sc, sh, sw, T, B, C, H, W, out, v_th, leaky, first, last))
}

/* P: [N, Hp, Wp, groups] packed spikes with a one-pixel zero border; out: [N, Ho, Wo, cout] output channels of
 * pixels step floats apart (a slice of the output channels when step > cout). Returns 0, or -1 for a shape it
 * cannot run (cout not a multiple of 8 or above 64, padding above 1). */
int table_conv(const uint8_t *P, int64_t Hp, int64_t Wp, int64_t groups, const float *table, const float *bias,
               float *out, int64_t cout, int64_t step, int64_t K, int64_t stride, int64_t padding, int64_t Ho,
               int64_t Wo, int64_t begin, int64_t end, int64_t threads)
{
    if (cout % 8 || cout > 64 || padding > 1 || padding < 0 || step < cout)
        return -1;
    SPLIT_ROWS(threads, begin, end, table_conv_rows(P, Hp, Wp, groups, table, bias, out, cout, step, K, stride,
                                                      padding, Ho, Wo, first, last))
    return 0;
}

/* Spike-driven convolution for the CPU: binary spikes packed into bits, convolved by table look-ups.
 *
 * A convolution whose input is a spike map (0 or 1) needs no multiplications: each output is the sum of the
 * weights where a spike arrived. With the input channels packed 8 to a byte, the sum of the weights of 8 channels
 * at one kernel tap is one of 256 precomputed rows (the table), so one look-up and one vector add replace 8
 * multiply-adds per output channel, and the spike map is read as 1 bit per element instead of 32.
 * Layer sizes whose 256-row tables would not stay in cache use 4-bit groups (16 rows each).
 *
 * pack_spikes: the plugin's neurons (hard reset to 0; LIF with tau 2 and no input decay, or IF) run over T steps
 *   and write their spikes as bits: out[t, b, pad + h, pad + w, g] bit k = spike of channel 8 g + k.
 * table_conv: out[n, y, x, :] = bias + sum over taps (i, j) and groups g of table[i, j, g, P[n, y s + i + o,
 *   x s + j + o, g], :] for a packed map P with a zero border (o = border - padding).
 * Both work on a range of rows [begin, end), so that the caller can split the work over threads. Built and loaded
 * by spike_conv.py.
 */
#include <stdint.h>
#include <string.h>

typedef float v8f __attribute__((vector_size(32), aligned(4)));

/* x: float, element (t, b, c, h, w) at x[t st + b sb + c sc + h sh + w sw]; rows are (b, h) pairs */
void pack_spikes(const float *x, int64_t st, int64_t sb, int64_t sc, int64_t sh, int64_t sw,
                 int64_t T, int64_t B, int64_t C, int64_t H, int64_t W,
                 uint8_t *out, int64_t groups, int64_t pad, float v_th, int64_t leaky,
                 int64_t begin, int64_t end)
{
    const int64_t Hp = H + 2 * pad, Wp = W + 2 * pad;
    for (int64_t row = begin; row < end; ++row) {
        const int64_t b = row / H, h = row % H;
        for (int64_t w = 0; w < W; ++w) {
            for (int64_t g = 0; g < groups; ++g) {
                float v[8] = {0, 0, 0, 0, 0, 0, 0, 0};
                const int64_t channels = C - 8 * g < 8 ? C - 8 * g : 8;
                for (int64_t t = 0; t < T; ++t) {
                    const float *src = x + t * st + b * sb + (8 * g) * sc + h * sh + w * sw;
                    unsigned bits = 0;
                    for (int64_t k = 0; k < channels; ++k) {
                        /* the same charge as neuron_kernels.py: x + v / 2 (exact halving) or x + v */
                        const float charged = leaky ? src[k * sc] + v[k] * 0.5f : src[k * sc] + v[k];
                        const int fire = charged >= v_th;
                        bits |= (unsigned)fire << k;
                        v[k] = fire ? 0.0f : charged;
                    }
                    out[((t * B + b) * Hp + pad + h) * Wp * groups + (pad + w) * groups + g] = (uint8_t)bits;
                }
            }
        }
    }
}

/* U output pixels at a time (independent add chains), NV vectors of 8 output channels, BITS 8 or 4 per look-up */
#define TABLE_CONV(NV, U, BITS)                                                                                 \
    static void table_conv_##NV##_##BITS(const uint8_t *P, int64_t Hp, int64_t Wp, int64_t groups,              \
                                         const float *table, const float *bias, float *out, int64_t K,           \
                                         int64_t stride, int64_t offset, int64_t Ho, int64_t Wo,                 \
                                         int64_t begin, int64_t end)                                             \
    {                                                                                                            \
        const int64_t cout = 8 * NV, rows = 1 << BITS, step = stride * groups;                                   \
        for (int64_t r = begin; r < end; ++r) {                                                                  \
            const int64_t n = r / Ho, y = r % Ho;                                                                \
            int64_t x = 0;                                                                                       \
            for (; x < Wo; x += U) {                                                                             \
                const int64_t u_count = Wo - x < U ? Wo - x : U;                                                 \
                v8f acc[U][NV];                                                                                  \
                _Pragma("GCC unroll 8") for (int u = 0; u < U; ++u)                                                                      \
                    _Pragma("GCC unroll 8") for (int v = 0; v < NV; ++v) acc[u][v] = ((const v8f *)bias)[v];                             \
                for (int64_t i = 0; i < K; ++i) {                                                                \
                    const uint8_t *line = P + ((n * Hp + y * stride + i + offset) * Wp + x * stride + offset) * groups; \
                    for (int64_t j = 0; j < K; ++j) {                                                            \
                        const uint8_t *codes = line + j * groups;                                                \
                        const float *tap = table + (i * K + j) * groups * (8 / BITS) * rows * cout;              \
                        for (int64_t g = 0; g < groups; ++g) {                                                   \
                            _Pragma("GCC unroll 8") for (int u = 0; u < U; ++u) {                                                        \
                                const unsigned code = u < u_count ? codes[u * step + g] : 0;                     \
                                if (BITS == 8) {                                                                 \
                                    const v8f *sum = (const v8f *)(tap + (g * rows + code) * cout);              \
                                    _Pragma("GCC unroll 8") for (int v = 0; v < NV; ++v) acc[u][v] += sum[v];                            \
                                } else {                                                                         \
                                    const v8f *lo = (const v8f *)(tap + ((2 * g) * rows + (code & 15)) * cout);  \
                                    const v8f *hi = (const v8f *)(tap + ((2 * g + 1) * rows + (code >> 4)) * cout); \
                                    _Pragma("GCC unroll 8") for (int v = 0; v < NV; ++v) acc[u][v] += lo[v] + hi[v];                     \
                                }                                                                                \
                            }                                                                                    \
                        }                                                                                        \
                    }                                                                                            \
                }                                                                                                \
                for (int u = 0; u < u_count; ++u)                                                                \
                    _Pragma("GCC unroll 8") for (int v = 0; v < NV; ++v) ((v8f *)(out + (r * Wo + x + u) * cout))[v] = acc[u][v];        \
            }                                                                                                    \
        }                                                                                                        \
    }

#define WIDTH(NV, U) TABLE_CONV(NV, U, 8) TABLE_CONV(NV, U, 4)
WIDTH(1, 4) WIDTH(2, 2) WIDTH(3, 1) WIDTH(4, 1) WIDTH(5, 1) WIDTH(6, 1) WIDTH(7, 1) WIDTH(8, 1)

/* returns 0, or -1 for an output width this file has no kernel for (a multiple of 8 up to 64) */
int table_conv(const uint8_t *P, int64_t Hp, int64_t Wp, int64_t groups, const float *table, int64_t nibbles,
               const float *bias, float *out, int64_t cout, int64_t K, int64_t stride, int64_t offset,
               int64_t Ho, int64_t Wo, int64_t begin, int64_t end)
{
    switch (cout) {
#define CASE(NV) case 8 * NV:                                                                                   \
        if (nibbles) table_conv_##NV##_4(P, Hp, Wp, groups, table, bias, out, K, stride, offset, Ho, Wo, begin, end); \
        else table_conv_##NV##_8(P, Hp, Wp, groups, table, bias, out, K, stride, offset, Ho, Wo, begin, end);         \
        return 0;
        CASE(1) CASE(2) CASE(3) CASE(4) CASE(5) CASE(6) CASE(7) CASE(8)
    }
    return -1;
}

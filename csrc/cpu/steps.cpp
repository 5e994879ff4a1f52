// CPU implementations of the per-step pointwise work (steps.h): rows of the batch in parallel
// with at::parallel_for, the hidden units of a row in a `#pragma omp simd` loop over cells.h.
//
// The float loops are compiled three times: for AVX-512 (512-bit vectors), for AVX2+FMA and for the
// baseline ISA, and the processor's features pick one at run time. That keeps the extension
// portable (no -march=native) while the hot loop still uses the widest vectors there are; on the
// 2-core AMD EPYC build machine the AVX-512 build took the H=64 forward op from ~290 to ~260 us.
// The choice is an explicit branch, not GCC's target_clones: GCC sends a call from default-target
// code straight to the default clone, so the AVX2 clone of a loop called from at::parallel_for's
// lambda never ran.
#include <ATen/Parallel.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <type_traits>
#include <vector>

#include "cells.h"
#include "steps.h"

#if defined(__x86_64__) && defined(__GNUC__)
#define CHARLSTM_X86_DISPATCH 1
#include <immintrin.h>
#endif

#define CHARLSTM_ALWAYS_INLINE inline __attribute__((always_inline))

namespace charlstm {
namespace cpu {
namespace {

// Rows per chunk: about 2k elements. The step's math (five exponentials and divisions per LSTM
// unit) costs more than waking the pool from there up: splitting a [64, 64] step between two
// threads took the forward op at (T, B, H) = (10, 64, 64) from ~420 to ~300 us.
int64_t grain(int64_t hidden) { return std::max<int64_t>(1, 2048 / std::max<int64_t>(hidden, 1)); }

template <typename S>
CHARLSTM_ALWAYS_INLINE void add_gathered_row(S* out, const S* row, int64_t n) {
#pragma omp simd
    for (int64_t j = 0; j < n; ++j) out[j] += row[j];
}

template <typename S>
CHARLSTM_ALWAYS_INLINE void lstm_forward_body(const LstmForwardStep<S>& a, int64_t b0, int64_t b1) {
    const int64_t H = a.hidden;
    for (int64_t b = b0; b < b1; ++b) {
        S* g = a.gates + b * 4 * H;
        if (a.ids) add_gathered_row(g, a.table + a.ids[b] * 4 * H, 4 * H);
        const S* c_prev = a.c_prev + b * H;
        S* c = a.c + b * H;
        S* h = a.h + b * H;
#pragma omp simd
        for (int64_t j = 0; j < H; ++j) {
            const auto r = cells::lstm_forward(g[j], g[H + j], g[2 * H + j], g[3 * H + j], c_prev[j]);
            g[j] = r.i;
            g[H + j] = r.f;
            g[2 * H + j] = r.g;
            g[3 * H + j] = r.o;
            c[j] = r.c;
            h[j] = r.h;
        }
    }
}

template <typename S>
CHARLSTM_ALWAYS_INLINE void lstm_backward_body(const LstmBackwardStep<S>& a, int64_t b0, int64_t b1) {
    const int64_t H = a.hidden;
    for (int64_t b = b0; b < b1; ++b) {
        const S* g = a.gates + b * 4 * H;
        const S* c_prev = a.c_prev + b * H;
        const S* c = a.c + b * H;
        const S* dh_out = a.dh_out ? a.dh_out + b * H : nullptr;
        const S* dh_next = a.dh_next + b * H;
        S* dc = a.dc + b * H;
        S* dg = a.dgates + b * 4 * H;
#pragma omp simd
        for (int64_t j = 0; j < H; ++j) {
            const S dh = dh_next[j] + (dh_out ? dh_out[j] : S(0));
            const auto r = cells::lstm_backward(g[j], g[H + j], g[2 * H + j], g[3 * H + j], c_prev[j], c[j],
                                                dh, dc[j]);
            dg[j] = r.di;
            dg[H + j] = r.df;
            dg[2 * H + j] = r.dg;
            dg[3 * H + j] = r.do_;
            dc[j] = r.dc_prev;
        }
    }
}

template <typename S>
CHARLSTM_ALWAYS_INLINE void gru_forward_body(const GruForwardStep<S>& a, int64_t b0, int64_t b1) {
    const int64_t H = a.hidden;
    for (int64_t b = b0; b < b1; ++b) {
        const S* x = a.ids ? a.table + a.ids[b] * 3 * H : a.xproj + b * 3 * H;
        const S* hp = a.hproj + b * 3 * H;
        const S* h_prev = a.h_prev + b * H;
        S* s = a.save + b * 4 * H;
        S* h = a.h + b * H;
#pragma omp simd
        for (int64_t j = 0; j < H; ++j) {
            const auto r = cells::gru_forward(x[j], x[H + j], x[2 * H + j], hp[j], hp[H + j], hp[2 * H + j],
                                              h_prev[j]);
            s[j] = r.r;
            s[H + j] = r.z;
            s[2 * H + j] = r.n;
            s[3 * H + j] = r.hn;
            h[j] = r.h;
        }
    }
}

template <typename S>
CHARLSTM_ALWAYS_INLINE void gru_backward_body(const GruBackwardStep<S>& a, int64_t b0, int64_t b1) {
    const int64_t H = a.hidden;
    for (int64_t b = b0; b < b1; ++b) {
        const S* s = a.save + b * 4 * H;
        const S* h_prev = a.h_prev + b * H;
        const S* dh_out = a.dh_out ? a.dh_out + b * H : nullptr;
        S* dh = a.dh + b * H;
        S* dx = a.dxproj + b * 3 * H;
        S* dhp = a.dhproj + b * 3 * H;
#pragma omp simd
        for (int64_t j = 0; j < H; ++j) {
            const S d = dh[j] + (dh_out ? dh_out[j] : S(0));
            const auto r = cells::gru_backward(s[j], s[H + j], s[2 * H + j], s[3 * H + j], h_prev[j], d);
            dx[j] = r.dr;
            dx[H + j] = r.dz;
            dx[2 * H + j] = r.dn;
            dhp[j] = r.dr;
            dhp[H + j] = r.dz;
            dhp[2 * H + j] = r.dhn;
            dh[j] = r.dh_prev;
        }
    }
}

template <typename S>
CHARLSTM_ALWAYS_INLINE void rnn_forward_body(const RnnForwardStep<S>& a, int64_t b0, int64_t b1) {
    const int64_t H = a.hidden;
    for (int64_t b = b0; b < b1; ++b) {
        S* h = a.h + b * H;
        if (a.ids) add_gathered_row(h, a.table + a.ids[b] * H, H);
#pragma omp simd
        for (int64_t j = 0; j < H; ++j) h[j] = cells::rnn_forward(h[j], a.relu);
    }
}

template <typename S>
CHARLSTM_ALWAYS_INLINE void rnn_backward_body(const RnnBackwardStep<S>& a, int64_t b0, int64_t b1) {
    const int64_t H = a.hidden;
    for (int64_t b = b0; b < b1; ++b) {
        const S* h = a.h + b * H;
        const S* dh_out = a.dh_out ? a.dh_out + b * H : nullptr;
        const S* dh_next = a.dh_next + b * H;
        S* dpre = a.dpre + b * H;
#pragma omp simd
        for (int64_t j = 0; j < H; ++j) {
            const S dh = dh_next[j] + (dh_out ? dh_out[j] : S(0));
            dpre[j] = cells::rnn_backward(h[j], dh, a.relu);
        }
    }
}

template <typename S>
CHARLSTM_ALWAYS_INLINE void xent_body(const XentStep<S>& a, int64_t b0, int64_t b1) {
    const int64_t V = a.hidden;
    for (int64_t b = b0; b < b1; ++b) {
        const S* z = a.logits + b * V;
        S* g = a.grad + b * V;
        S m = z[0];
        for (int64_t j = 1; j < V; ++j) m = z[j] > m ? z[j] : m;
        // A NaN logit never becomes the maximum, but its exponential makes the sum NaN.
        S sum = 0;
#pragma omp simd reduction(+ : sum)
        for (int64_t j = 0; j < V; ++j) {
            const S e = cells::exp_(z[j] - m);
            g[j] = e;
            sum += e;
        }
        const S factor = a.scale / sum;
#pragma omp simd
        for (int64_t j = 0; j < V; ++j) g[j] *= factor;
        const int64_t target = a.targets[b];
        g[target] -= a.scale;
        a.row_loss[b] = m + std::log(sum) - z[target];
    }
}

// The transpose of the block src[i0:i1, j0:j1] (row-major, rows lds apart), visited by 16 x 16
// tiles through a local buffer: put(j, i, seg, n) receives seg[k] = src[(i + k) * lds + j] for
// k < n, the piece of the transpose's row j from its column i on. Each source row segment is read
// whole and each piece of the transpose handed over whole (reading a tile column by column hits one
// cache set when a row is 4 KB long).
template <typename S, typename Put>
CHARLSTM_ALWAYS_INLINE void transposed_tiles(const S* src, int64_t lds, int64_t i0, int64_t i1, int64_t j0,
                                             int64_t j1, const Put& put) {
    constexpr int64_t tile = 16;
    for (int64_t ib = i0; ib < i1; ib += tile) {
        const int64_t ni = std::min(i1 - ib, tile);
        for (int64_t jb = j0; jb < j1; jb += tile) {
            const int64_t nj = std::min(j1 - jb, tile);
            S block[tile][tile];
            for (int64_t i = 0; i < ni; ++i) {
                for (int64_t j = 0; j < nj; ++j) block[j][i] = src[(ib + i) * lds + jb + j];
            }
            for (int64_t j = 0; j < nj; ++j) put(jb + j, ib, block[j], ni);
        }
    }
}

// Rows [r0, r1) of the row-major [R, C] `in`, transposed into columns r0..r1 of `o` (rows of
// length ldo): o[c * ldo + r] = in[r * C + c].
template <typename S>
CHARLSTM_ALWAYS_INLINE void transpose_scalar(const S* in, int64_t C, S* o, int64_t ldo, int64_t r0,
                                             int64_t r1) {
    transposed_tiles(in, C, r0, r1, 0, C, [&](int64_t c, int64_t r, const S* seg, int64_t n) {
        std::copy(seg, seg + n, o + c * ldo + r);
    });
}

// w[r, c] += alpha * g[c, r] for rows [r0, r1) of the row-major [R, C] w and g [C, R]: an SGD
// update from a gradient kept transposed.
template <typename S>
CHARLSTM_ALWAYS_INLINE void add_transposed_scalar(S* w, const S* g, int64_t R, int64_t C, S alpha, int64_t r0,
                                                  int64_t r1) {
    transposed_tiles(g, R, 0, C, r0, r1, [&](int64_t r, int64_t c, const S* seg, int64_t n) {
        S* row = w + r * C + c;
        for (int64_t k = 0; k < n; ++k) row[k] += alpha * seg[k];
    });
}

// The sum of squares of n values, in chunks of 4k summed in S lanes and then in double.
constexpr int64_t kSquareChunk = 4096;

template <typename S>
CHARLSTM_ALWAYS_INLINE void square_sums_body(const SquareSums<S>& a, int64_t k0, int64_t k1) {
    for (int64_t k = k0; k < k1; ++k) {
        const S* p = a.data + k * kSquareChunk;
        const int64_t n = std::min(kSquareChunk, a.size - k * kSquareChunk);
        S sum = 0;
#pragma omp simd reduction(+ : sum)
        for (int64_t i = 0; i < n; ++i) sum += p[i] * p[i];
        a.chunk_sums[k] = static_cast<double>(sum);
    }
}

#ifdef CHARLSTM_X86_DISPATCH
// An 8 x 8 block of floats transposed in registers (unpack, shuffle, permute: 24 shuffles instead
// of 64 scalar moves each way): r[k] holds row k of the block before, column k after.
__attribute__((target("avx2,fma"))) CHARLSTM_ALWAYS_INLINE void transpose8(__m256 r[8]) {
    __m256 t[8];
    for (int k = 0; k < 8; k += 2) {
        t[k] = _mm256_unpacklo_ps(r[k], r[k + 1]);
        t[k + 1] = _mm256_unpackhi_ps(r[k], r[k + 1]);
    }
    __m256 u[8];
    for (int k = 0; k < 8; k += 4) {
        u[k] = _mm256_shuffle_ps(t[k], t[k + 2], 0x44);
        u[k + 1] = _mm256_shuffle_ps(t[k], t[k + 2], 0xEE);
        u[k + 2] = _mm256_shuffle_ps(t[k + 1], t[k + 3], 0x44);
        u[k + 3] = _mm256_shuffle_ps(t[k + 1], t[k + 3], 0xEE);
    }
    for (int k = 0; k < 4; ++k) {
        r[k] = _mm256_permute2f128_ps(u[k], u[k + 4], 0x20);
        r[k + 4] = _mm256_permute2f128_ps(u[k], u[k + 4], 0x31);
    }
}

// transpose_scalar's contract, by 8 x 8 register blocks where they fit: a 640 x 256 float matrix
// in cache took ~20 us against ~60 us through the local block. Rows go by 16, the two blocks of a
// column step one after the other, so that each 64-byte piece of an output row is written whole
// (when rows are a multiple of 4 KB apart, a half-written line is evicted before its other half).
__attribute__((target("avx2,fma"))) void transpose_avx2(const float* in, int64_t C, float* o, int64_t ldo,
                                                        int64_t r0, int64_t r1) {
    const int64_t cols8 = C / 8 * 8;
    int64_t rb = r0;
    for (int64_t rows = 16; rows >= 8; rows -= 8) {
        for (; rb + rows <= r1; rb += rows) {
            for (int64_t cb = 0; cb < cols8; cb += 8) {
                for (int64_t half = 0; half < rows; half += 8) {
                    __m256 r[8];
                    for (int k = 0; k < 8; ++k) r[k] = _mm256_loadu_ps(in + (rb + half + k) * C + cb);
                    transpose8(r);
                    for (int k = 0; k < 8; ++k) _mm256_storeu_ps(o + (cb + k) * ldo + rb + half, r[k]);
                }
            }
            for (int64_t r = rb; r < rb + rows; ++r) {
                for (int64_t c = cols8; c < C; ++c) o[c * ldo + r] = in[r * C + c];
            }
        }
    }
    if (rb < r1) transpose_scalar(in, C, o, ldo, rb, r1);
}

// add_transposed_scalar's contract by 8 x 8 register blocks.
__attribute__((target("avx2,fma"))) void add_transposed_avx2(float* w, const float* g, int64_t R, int64_t C,
                                                             float alpha, int64_t r0, int64_t r1) {
    const int64_t rows8 = r0 + (r1 - r0) / 8 * 8, cols8 = C / 8 * 8;
    const __m256 a = _mm256_set1_ps(alpha);
    for (int64_t rb = r0; rb < rows8; rb += 8) {
        for (int64_t cb = 0; cb < cols8; cb += 8) {
            __m256 r[8];
            for (int k = 0; k < 8; ++k) r[k] = _mm256_loadu_ps(g + (cb + k) * R + rb);
            transpose8(r);
            for (int k = 0; k < 8; ++k) {
                float* row = w + (rb + k) * C + cb;
                _mm256_storeu_ps(row, _mm256_fmadd_ps(a, r[k], _mm256_loadu_ps(row)));
            }
        }
        for (int64_t r = rb; r < rb + 8; ++r) {
            for (int64_t c = cols8; c < C; ++c) w[r * C + c] += alpha * g[c * R + r];
        }
    }
    if (rows8 < r1) add_transposed_scalar(w, g, R, C, alpha, rows8, r1);
}
#endif

template <typename S>
CHARLSTM_ALWAYS_INLINE void scatter_add_body(const ScatterAdd<S>& a, int64_t c0, int64_t c1) {
    const int64_t G = a.width;
    for (int64_t r = 0; r < a.rows; ++r) {
        S* row = a.table + a.ids[r] * G;
        const S* add = a.src + r * G;
#pragma omp simd
        for (int64_t c = c0; c < c1; ++c) row[c] += add[c];
    }
    if (a.sums == nullptr) return;
#pragma omp simd
    for (int64_t c = c0; c < c1; ++c) a.sums[c] = S(0);
    for (int64_t v = 0; v < a.table_rows; ++v) {
        const S* row = a.table + v * G;
#pragma omp simd
        for (int64_t c = c0; c < c1; ++c) a.sums[c] += row[c];
    }
}

#ifdef CHARLSTM_X86_DISPATCH
enum class Simd { Baseline, Avx2, Avx512 };

Simd detect_simd() {
    const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    const bool avx512 = avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
                        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512bw");
    Simd best = avx512 ? Simd::Avx512 : avx2 ? Simd::Avx2 : Simd::Baseline;
    const char* wanted = std::getenv("CHARLSTM_CPU_SIMD");
    if (wanted == nullptr || *wanted == '\0' || std::strcmp(wanted, "avx512") == 0) return best;
    if (std::strcmp(wanted, "baseline") == 0) return Simd::Baseline;
    TORCH_CHECK_VALUE(std::strcmp(wanted, "avx2") == 0, "CHARLSTM_CPU_SIMD=", wanted,
                      " is not a build of the CPU kernels; set it to avx512, avx2 or baseline, ",
                      "or unset it");
    return best == Simd::Avx512 ? Simd::Avx2 : best;
}

Simd active_simd() {
    static const Simd simd = detect_simd();
    return simd;
}

// One overload of `rows` per step type and storage type; float picks its widest build the
// processor runs.
#define CHARLSTM_ROWS(Args, body)                                                                    \
    __attribute__((target("avx2,fma"))) void rows_avx2(const Args<float>& a, int64_t b0, int64_t b1) { \
        body(a, b0, b1);                                                                             \
    }                                                                                                \
    __attribute__((target("avx512f,avx512dq,avx512vl,avx512bw,avx2,fma,prefer-vector-width=512")))   \
    void rows_avx512(const Args<float>& a, int64_t b0, int64_t b1) { body(a, b0, b1); }              \
    void rows_baseline(const Args<float>& a, int64_t b0, int64_t b1) { body(a, b0, b1); }            \
    void rows(const Args<float>& a, int64_t b0, int64_t b1) {                                        \
        switch (active_simd()) {                                                                     \
            case Simd::Avx512: return rows_avx512(a, b0, b1);                                        \
            case Simd::Avx2: return rows_avx2(a, b0, b1);                                            \
            default: return rows_baseline(a, b0, b1);                                                \
        }                                                                                            \
    }                                                                                                \
    void rows(const Args<double>& a, int64_t b0, int64_t b1) { body(a, b0, b1); }
#else
#define CHARLSTM_ROWS(Args, body)                                                                    \
    void rows(const Args<float>& a, int64_t b0, int64_t b1) { body(a, b0, b1); }                     \
    void rows(const Args<double>& a, int64_t b0, int64_t b1) { body(a, b0, b1); }
#endif

CHARLSTM_ROWS(LstmForwardStep, lstm_forward_body)
CHARLSTM_ROWS(LstmBackwardStep, lstm_backward_body)
CHARLSTM_ROWS(GruForwardStep, gru_forward_body)
CHARLSTM_ROWS(GruBackwardStep, gru_backward_body)
CHARLSTM_ROWS(RnnForwardStep, rnn_forward_body)
CHARLSTM_ROWS(RnnBackwardStep, rnn_backward_body)
CHARLSTM_ROWS(XentStep, xent_body)
CHARLSTM_ROWS(ScatterAdd, scatter_add_body)
CHARLSTM_ROWS(SquareSums, square_sums_body)
#undef CHARLSTM_ROWS

template <typename Args>
void run(const Args& a) {
    at::parallel_for(0, a.batch, grain(a.hidden), [&](int64_t b0, int64_t b1) { rows(a, b0, b1); });
}

}  // namespace

const char* simd() {
#ifdef CHARLSTM_X86_DISPATCH
    switch (active_simd()) {
        case Simd::Avx512: return "avx512";
        case Simd::Avx2: return "avx2+fma";
        default: return "baseline x86-64";
    }
#else
    return "compiler default";
#endif
}

template <typename S>
void scatter_add(const ScatterAdd<S>& a) {
    // Bands of columns, so that no two threads write one element of the table.
    const int64_t grain = std::max<int64_t>(16, 32768 / std::max<int64_t>(a.rows, 1)) / 16 * 16;
    at::parallel_for(0, a.width, grain, [&](int64_t c0, int64_t c1) { rows(a, c0, c1); });
}

// Float has AVX2 builds of these two; double always runs the scalar loops.
template <typename S>
void transpose_rows(const S* in, int64_t C, S* o, int64_t ldo, int64_t r0, int64_t r1) {
#ifdef CHARLSTM_X86_DISPATCH
    if constexpr (std::is_same_v<S, float>) {
        if (active_simd() != Simd::Baseline) return transpose_avx2(in, C, o, ldo, r0, r1);
    }
#endif
    transpose_scalar(in, C, o, ldo, r0, r1);
}

template <typename S>
void add_transposed(S* w, const S* g, int64_t R, int64_t C, S alpha) {
    // Strips of 16 rows of w, about 16k values per chunk.
    at::parallel_for(0, (R + 15) / 16, std::max<int64_t>(1, 16384 / (16 * C)), [&](int64_t b0, int64_t b1) {
        const int64_t r0 = b0 * 16, r1 = std::min(R, b1 * 16);
#ifdef CHARLSTM_X86_DISPATCH
        if constexpr (std::is_same_v<S, float>) {
            if (active_simd() != Simd::Baseline) return add_transposed_avx2(w, g, R, C, alpha, r0, r1);
        }
#endif
        add_transposed_scalar(w, g, R, C, alpha, r0, r1);
    });
}

template <typename S>
double sum_squares(const S* data, int64_t size) {
    const int64_t chunks = (size + kSquareChunk - 1) / kSquareChunk;
    std::vector<double> sums(chunks);
    const SquareSums<S> a{data, size, sums.data()};
    at::parallel_for(0, chunks, 8, [&](int64_t k0, int64_t k1) { rows(a, k0, k1); });
    double total = 0;
    for (double v : sums) total += v;
    return total;
}

template <typename S> void lstm_forward_step(const LstmForwardStep<S>& a) { run(a); }
template <typename S> void lstm_backward_step(const LstmBackwardStep<S>& a) { run(a); }
template <typename S> void gru_forward_step(const GruForwardStep<S>& a) { run(a); }
template <typename S> void gru_backward_step(const GruBackwardStep<S>& a) { run(a); }
template <typename S> void rnn_forward_step(const RnnForwardStep<S>& a) { run(a); }
template <typename S> void rnn_backward_step(const RnnBackwardStep<S>& a) { run(a); }
template <typename S> void xent_step(const XentStep<S>& a) { run(a); }
template <typename S> void step_rows(const LstmForwardStep<S>& a, int64_t b0, int64_t b1) { rows(a, b0, b1); }
template <typename S> void step_rows(const LstmBackwardStep<S>& a, int64_t b0, int64_t b1) { rows(a, b0, b1); }
template <typename S> void step_rows(const GruForwardStep<S>& a, int64_t b0, int64_t b1) { rows(a, b0, b1); }
template <typename S> void step_rows(const GruBackwardStep<S>& a, int64_t b0, int64_t b1) { rows(a, b0, b1); }
template <typename S> void step_rows(const RnnForwardStep<S>& a, int64_t b0, int64_t b1) { rows(a, b0, b1); }
template <typename S> void step_rows(const RnnBackwardStep<S>& a, int64_t b0, int64_t b1) { rows(a, b0, b1); }

#define CHARLSTM_INSTANTIATE(S)                                                        \
    template void lstm_forward_step<S>(const LstmForwardStep<S>&);                     \
    template void lstm_backward_step<S>(const LstmBackwardStep<S>&);                   \
    template void gru_forward_step<S>(const GruForwardStep<S>&);                       \
    template void gru_backward_step<S>(const GruBackwardStep<S>&);                     \
    template void rnn_forward_step<S>(const RnnForwardStep<S>&);                       \
    template void rnn_backward_step<S>(const RnnBackwardStep<S>&);                   \
    template void xent_step<S>(const XentStep<S>&);                                 \
    template void scatter_add<S>(const ScatterAdd<S>&);                             \
    template double sum_squares<S>(const S*, int64_t);                              \
    template void transpose_rows<S>(const S*, int64_t, S*, int64_t, int64_t, int64_t); \
    template void add_transposed<S>(S*, const S*, int64_t, int64_t, S);             \
    template void step_rows<S>(const LstmForwardStep<S>&, int64_t, int64_t);   \
    template void step_rows<S>(const LstmBackwardStep<S>&, int64_t, int64_t); \
    template void step_rows<S>(const GruForwardStep<S>&, int64_t, int64_t);     \
    template void step_rows<S>(const GruBackwardStep<S>&, int64_t, int64_t);   \
    template void step_rows<S>(const RnnForwardStep<S>&, int64_t, int64_t);     \
    template void step_rows<S>(const RnnBackwardStep<S>&, int64_t, int64_t);
CHARLSTM_INSTANTIATE(float)
CHARLSTM_INSTANTIATE(double)
#undef CHARLSTM_INSTANTIATE

}  // namespace cpu
}  // namespace charlstm

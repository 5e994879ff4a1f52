// Products with one row on the left (cpu/loops.h), which read the weight in the order it is
// stored: N dot products over the rows of a row-major [N, K] (matvec), or a sum of the rows of a
// row-major [K, N] weighted by x (vecmat). Plain loops, compiled for AVX-512, AVX2 and the
// baseline ISA (cpu/simd.h).
//
// Why not brgemm with M = 1: it reads its row-major right operand [K, N] a 64-column block at a
// time, down all K rows, one 16 KB stride per row at N = 4096. At batch 1 the weights do not fit
// in a core's cache (4H x H floats is 16 MB at H = 1024), so every step streams them from L3, and
// that strided walk reached ~35-45 GFLOP/s on 2 threads of the AMD EPYC build machine, below
// oneDNN's matmul (~50). Reading whole rows in stored order reached ~70 at the same shape, both
// as dot products over [N, K] and as a weighted sum of the rows of [K, N].
#include <ATen/Parallel.h>

#include <algorithm>
#include <vector>

#include "cpu/loops.h"
#include "cpu/simd.h"

namespace charlstm {
namespace cpu {
namespace {

template <typename S>
struct RowDots {
    const S* w;
    int64_t K;
    const S* x;
    S* y;
    bool accumulate;
};

template <typename S>
CHARLSTM_ALWAYS_INLINE void store(S* y, int64_t n, S v, bool accumulate) { y[n] = accumulate ? y[n] + v : v; }

// Rows [n0, n1): eight at a time, so that each element of x loaded feeds eight rows' sums.
template <typename S>
CHARLSTM_ALWAYS_INLINE void row_dots_body(const RowDots<S>& a, int64_t n0, int64_t n1) {
    const int64_t K = a.K;
    const S* x = a.x;
    int64_t n = n0;
    for (; n + 8 <= n1; n += 8) {
        const S* w = a.w + n * K;
        S s0 = 0, s1 = 0, s2 = 0, s3 = 0, s4 = 0, s5 = 0, s6 = 0, s7 = 0;
#pragma omp simd reduction(+ : s0, s1, s2, s3, s4, s5, s6, s7)
        for (int64_t k = 0; k < K; ++k) {
            const S xk = x[k];
            s0 += w[k] * xk, s1 += w[K + k] * xk, s2 += w[2 * K + k] * xk, s3 += w[3 * K + k] * xk;
            s4 += w[4 * K + k] * xk, s5 += w[5 * K + k] * xk, s6 += w[6 * K + k] * xk, s7 += w[7 * K + k] * xk;
        }
        const S sums[8] = {s0, s1, s2, s3, s4, s5, s6, s7};
        for (int r = 0; r < 8; ++r) store(a.y, n + r, sums[r], a.accumulate);
    }
    for (; n < n1; ++n) {
        const S* w = a.w + n * K;
        S sum = 0;
#pragma omp simd reduction(+ : sum)
        for (int64_t k = 0; k < K; ++k) sum += w[k] * x[k];
        store(a.y, n, sum, a.accumulate);
    }
}

template <typename S>
struct RowSums {
    const S* b;
    int64_t N;
    const S* x;
    S* partial;  // [N]: the sum of x[k] b[k, :] over the band of rows
};

// Rows [k0, k1) of b into `partial`, whole rows at a time; at N <= 4096 the partial stays in L1.
template <typename S>
CHARLSTM_ALWAYS_INLINE void row_sums_body(const RowSums<S>& a, int64_t k0, int64_t k1) {
    const int64_t N = a.N;
    S* p = a.partial;
#pragma omp simd
    for (int64_t n = 0; n < N; ++n) p[n] = S(0);
    int64_t k = k0;
    for (; k + 4 <= k1; k += 4) {
        const S x0 = a.x[k], x1 = a.x[k + 1], x2 = a.x[k + 2], x3 = a.x[k + 3];
        const S* r = a.b + k * N;
#pragma omp simd
        for (int64_t n = 0; n < N; ++n) p[n] += x0 * r[n] + x1 * r[N + n] + x2 * r[2 * N + n] + x3 * r[3 * N + n];
    }
    for (; k < k1; ++k) {
        const S xk = a.x[k];
        const S* row = a.b + k * N;
#pragma omp simd
        for (int64_t n = 0; n < N; ++n) p[n] += xk * row[n];
    }
}

CHARLSTM_ROWS(RowDots, row_dots_body)
CHARLSTM_ROWS(RowSums, row_sums_body)

}  // namespace

template <typename S>
void matvec(const S* w, int64_t N, int64_t K, const S* x, S* y, bool accumulate) {
    // Bands of 8 rows; a product below ~64k multiply-adds stays on one thread, where a fork costs
    // more than it saves.
    const int64_t blocks = (N + 7) / 8;
    const int64_t grain = std::max<int64_t>(1, (int64_t{1} << 16) / std::max<int64_t>(K * 8, 1));
    const RowDots<S> a{w, K, x, y, accumulate};
    at::parallel_for(0, blocks, grain, [&](int64_t b0, int64_t b1) { rows(a, b0 * 8, std::min(N, b1 * 8)); });
}

template <typename S>
void vecmat(const S* b, int64_t K, int64_t N, const S* x, S* y, bool accumulate) {
    // Each thread sums its own band of rows into its own partial row, then the partials add up:
    // splitting the columns instead made each thread walk all K rows with a stride (48 against
    // 69 GFLOP/s at K = 4096, N = 1024).
    const int64_t threads = K * N < (int64_t{1} << 16) ? 1 : std::min<int64_t>(at::get_num_threads(), K);
    std::vector<S> partials(threads * N);
    at::parallel_for(0, threads, 1, [&](int64_t i0, int64_t i1) {
        for (int64_t i = i0; i < i1; ++i) {
            rows(RowSums<S>{b, N, x, partials.data() + i * N}, K * i / threads, K * (i + 1) / threads);
        }
    });
    for (int64_t n = 0; n < N; ++n) {
        S sum = accumulate ? y[n] : S(0);
        for (int64_t i = 0; i < threads; ++i) sum += partials[i * N + n];
        y[n] = sum;
    }
}

#define CHARLSTM_INSTANTIATE(S)                                                   \
    template void matvec<S>(const S*, int64_t, int64_t, const S*, S*, bool); \
    template void vecmat<S>(const S*, int64_t, int64_t, const S*, S*, bool);
CHARLSTM_INSTANTIATE(float)
CHARLSTM_INSTANTIATE(double)
#undef CHARLSTM_INSTANTIATE

}  // namespace cpu
}  // namespace charlstm

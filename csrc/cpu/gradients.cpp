// The token-id weight gradient, the softmax cross-entropy's gradient and the squared gradient norm
// (cpu/loops.h), each in the widest float build the processor has (cpu/simd.h).
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "cells.h"
#include "cpu/loops.h"
#include "cpu/simd.h"

namespace charlstm {
namespace cpu {
namespace {

// Columns [c0, c1) of every row: bands of columns, so that no two threads write one element.
template <typename S>
CHARLSTM_ALWAYS_INLINE void scatter_add_body(const RowScatterAdd<S>& a, int64_t c0, int64_t c1) {
    const int64_t G = a.width;
    for (int64_t r = 0; r < a.rows; ++r) {
        S* row = a.table + a.ids[r] * G;
        const S* add = a.src + r * G;
#pragma omp simd
        for (int64_t c = c0; c < c1; ++c) row[c] += add[c];
    }
    if (a.column_sums == nullptr) return;
#pragma omp simd
    for (int64_t c = c0; c < c1; ++c) a.column_sums[c] = S(0);
    for (int64_t v = 0; v < a.table_rows; ++v) {
        const S* row = a.table + v * G;
#pragma omp simd
        for (int64_t c = c0; c < c1; ++c) a.column_sums[c] += row[c];
    }
}

template <typename S>
CHARLSTM_ALWAYS_INLINE void cross_entropy_body(const SoftmaxCrossEntropy<S>& a, int64_t r0, int64_t r1) {
    const int64_t V = a.vocab;
    for (int64_t r = r0; r < r1; ++r) {
        const S* z = a.logits + r * V;
        S* g = a.grad + r * V;
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
        const int64_t target = a.targets[r];
        g[target] -= a.scale;
        a.row_loss[r] = m + std::log(sum) - z[target];
    }
}

// Chunks [k0, k1) of 4k values: chunk_sums[k] = the sum of squares of chunk k.
constexpr int64_t kSquareChunk = 4096;

template <typename S>
struct SquareSums {
    const S* data;
    int64_t size;
    double* chunk_sums;
};

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

CHARLSTM_ROWS(RowScatterAdd, scatter_add_body)
CHARLSTM_ROWS(SoftmaxCrossEntropy, cross_entropy_body)
CHARLSTM_ROWS(SquareSums, square_sums_body)

}  // namespace

template <typename S>
void scatter_add(const RowScatterAdd<S>& a) {
    const int64_t grain = std::max<int64_t>(16, 32768 / std::max<int64_t>(a.rows, 1)) / 16 * 16;
    at::parallel_for(0, a.width, grain, [&](int64_t c0, int64_t c1) { rows(a, c0, c1); });
}

template <typename S>
void softmax_cross_entropy(const SoftmaxCrossEntropy<S>& a) {
    // About 2k values per chunk, as the cell steps.
    const int64_t grain = std::max<int64_t>(1, 2048 / std::max<int64_t>(a.vocab, 1));
    at::parallel_for(0, a.rows, grain, [&](int64_t r0, int64_t r1) { rows(a, r0, r1); });
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

#define CHARLSTM_INSTANTIATE(S)                                                  \
    template void scatter_add<S>(const RowScatterAdd<S>&);                     \
    template void softmax_cross_entropy<S>(const SoftmaxCrossEntropy<S>&);     \
    template double sum_squares<S>(const S*, int64_t);
CHARLSTM_INSTANTIATE(float)
CHARLSTM_INSTANTIATE(double)
#undef CHARLSTM_INSTANTIATE

}  // namespace cpu
}  // namespace charlstm

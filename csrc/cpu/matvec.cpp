// A product with one row on its left (cpu/loops.h): N dot products over the rows of w, 8 rows at
// a time, in AVX-512 or AVX2 registers where the processor has them.
//
// Why not brgemm with M = 1: it reads its row-major right operand [K, N] a 64-column block at a
// time, down all K rows, one 16 KB stride per row at N = 4096. At batch 1 the weights do not fit
// in a core's cache (4H x H floats is 16 MB at H = 1024), so every step streams them from L3, and
// that strided walk reached ~35-45 GFLOP/s on 2 threads of the AMD EPYC build machine, below
// oneDNN's matmul (~50). Dot products over the rows of the transpose [N, K] read memory in the
// order it is stored and reached ~70 at the same shape.
#include <ATen/Parallel.h>

#include <algorithm>

#include "cpu/loops.h"
#include "cpu/simd.h"

namespace charlstm {
namespace cpu {
namespace {

constexpr int64_t kRows = 8;

CHARLSTM_ALWAYS_INLINE void store(float* y, int64_t n, float v, bool accumulate) { y[n] = accumulate ? y[n] + v : v; }

void matvec_scalar(const float* w, int64_t K, const float* x, float* y, bool accumulate, int64_t n0, int64_t n1) {
    for (int64_t n = n0; n < n1; ++n) {
        const float* row = w + n * K;
        float sum = 0;
#pragma omp simd reduction(+ : sum)
        for (int64_t k = 0; k < K; ++k) sum += row[k] * x[k];
        store(y, n, sum, accumulate);
    }
}

#ifdef CHARLSTM_X86_DISPATCH
__attribute__((target("avx512f,avx512dq,avx512vl,avx512bw,avx2,fma"))) void matvec_avx512(
    const float* w, int64_t K, const float* x, float* y, bool accumulate, int64_t n0, int64_t n1) {
    const int64_t full = K / 16 * 16;
    const __mmask16 tail = static_cast<__mmask16>((1u << (K - full)) - 1);
    int64_t n = n0;
    for (; n + kRows <= n1; n += kRows) {
        __m512 sum[kRows];
        for (int r = 0; r < kRows; ++r) sum[r] = _mm512_setzero_ps();
        for (int64_t k = 0; k < full; k += 16) {
            const __m512 xv = _mm512_loadu_ps(x + k);
            for (int r = 0; r < kRows; ++r) sum[r] = _mm512_fmadd_ps(_mm512_loadu_ps(w + (n + r) * K + k), xv, sum[r]);
        }
        if (tail) {
            const __m512 xv = _mm512_maskz_loadu_ps(tail, x + full);
            for (int r = 0; r < kRows; ++r) {
                sum[r] = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(tail, w + (n + r) * K + full), xv, sum[r]);
            }
        }
        for (int r = 0; r < kRows; ++r) {
            // Through memory: GCC 12's _mm512_reduce_add_ps trips -Wmaybe-uninitialized.
            alignas(64) float lanes[16];
            _mm512_store_ps(lanes, sum[r]);
            float total = 0;
            for (int j = 0; j < 16; ++j) total += lanes[j];
            store(y, n + r, total, accumulate);
        }
    }
    matvec_scalar(w, K, x, y, accumulate, n, n1);
}

__attribute__((target("avx2,fma"))) void matvec_avx2(const float* w, int64_t K, const float* x, float* y,
                                                     bool accumulate, int64_t n0, int64_t n1) {
    const int64_t full = K / 8 * 8;
    int64_t n = n0;
    for (; n + kRows <= n1; n += kRows) {
        __m256 sum[kRows];
        for (int r = 0; r < kRows; ++r) sum[r] = _mm256_setzero_ps();
        for (int64_t k = 0; k < full; k += 8) {
            const __m256 xv = _mm256_loadu_ps(x + k);
            for (int r = 0; r < kRows; ++r) sum[r] = _mm256_fmadd_ps(_mm256_loadu_ps(w + (n + r) * K + k), xv, sum[r]);
        }
        for (int r = 0; r < kRows; ++r) {
            alignas(32) float lanes[8];
            _mm256_store_ps(lanes, sum[r]);
            float total = 0;
            for (int j = 0; j < 8; ++j) total += lanes[j];
            for (int64_t k = full; k < K; ++k) total += w[(n + r) * K + k] * x[k];
            store(y, n + r, total, accumulate);
        }
    }
    matvec_scalar(w, K, x, y, accumulate, n, n1);
}
#endif

}  // namespace

void matvec(const float* w, int64_t N, int64_t K, const float* x, float* y, bool accumulate) {
    // Bands of 8 rows; a product below ~64k multiply-adds stays on one thread, where a fork costs
    // more than it saves.
    const int64_t blocks = (N + kRows - 1) / kRows;
    const int64_t grain = std::max<int64_t>(1, (int64_t{1} << 16) / std::max<int64_t>(K * kRows, 1));
    at::parallel_for(0, blocks, grain, [&](int64_t b0, int64_t b1) {
        const int64_t n0 = b0 * kRows, n1 = std::min(N, b1 * kRows);
#ifdef CHARLSTM_X86_DISPATCH
        switch (active_simd()) {
            case Simd::Avx512: return matvec_avx512(w, K, x, y, accumulate, n0, n1);
            case Simd::Avx2: return matvec_avx2(w, K, x, y, accumulate, n0, n1);
            default: break;
        }
#endif
        matvec_scalar(w, K, x, y, accumulate, n0, n1);
    });
}

}  // namespace cpu
}  // namespace charlstm

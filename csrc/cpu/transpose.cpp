// Transposes and the transposed SGD update (cpu/loops.h): one 16 x 16 tile walker for the scalar
// builds, 8 x 8 register blocks where AVX2 is there.
#include <ATen/Parallel.h>

#include <algorithm>
#include <type_traits>

#include "cpu/loops.h"
#include "cpu/simd.h"

namespace charlstm {
namespace cpu {
namespace {

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

// w[r, c] += alpha * g[c, r] for rows [r0, r1) of the row-major [R, C] w (rows ldw apart) and the
// contiguous g [C, R].
template <typename S>
CHARLSTM_ALWAYS_INLINE void add_transposed_scalar(S* w, int64_t ldw, const S* g, int64_t R, int64_t C, S alpha,
                                                  int64_t r0, int64_t r1) {
    transposed_tiles(g, R, 0, C, r0, r1, [&](int64_t r, int64_t c, const S* seg, int64_t n) {
        S* row = w + r * ldw + c;
        for (int64_t k = 0; k < n; ++k) row[k] += alpha * seg[k];
    });
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
__attribute__((target("avx2,fma"))) void add_transposed_avx2(float* w, int64_t ldw, const float* g, int64_t R,
                                                             int64_t C, float alpha, int64_t r0, int64_t r1) {
    const int64_t rows8 = r0 + (r1 - r0) / 8 * 8, cols8 = C / 8 * 8;
    const __m256 a = _mm256_set1_ps(alpha);
    for (int64_t rb = r0; rb < rows8; rb += 8) {
        for (int64_t cb = 0; cb < cols8; cb += 8) {
            __m256 r[8];
            for (int k = 0; k < 8; ++k) r[k] = _mm256_loadu_ps(g + (cb + k) * R + rb);
            transpose8(r);
            for (int k = 0; k < 8; ++k) {
                float* row = w + (rb + k) * ldw + cb;
                _mm256_storeu_ps(row, _mm256_fmadd_ps(a, r[k], _mm256_loadu_ps(row)));
            }
        }
        for (int64_t r = rb; r < rb + 8; ++r) {
            for (int64_t c = cols8; c < C; ++c) w[r * ldw + c] += alpha * g[c * R + r];
        }
    }
    if (rows8 < r1) add_transposed_scalar(w, ldw, g, R, C, alpha, rows8, r1);
}
#endif

}  // namespace

// Float has AVX2 builds of these; double always runs the scalar loops.
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
void add_transposed_rows(S* w, int64_t ldw, const S* g, int64_t R, int64_t C, S alpha, int64_t r0, int64_t r1) {
#ifdef CHARLSTM_X86_DISPATCH
    if constexpr (std::is_same_v<S, float>) {
        if (active_simd() != Simd::Baseline) return add_transposed_avx2(w, ldw, g, R, C, alpha, r0, r1);
    }
#endif
    add_transposed_scalar(w, ldw, g, R, C, alpha, r0, r1);
}

template <typename S>
void add_transposed(S* w, const S* g, int64_t R, int64_t C, S alpha) {
    // Strips of 16 rows of w, about 16k values per chunk.
    at::parallel_for(0, (R + 15) / 16, std::max<int64_t>(1, 16384 / (16 * C)), [&](int64_t b0, int64_t b1) {
        add_transposed_rows(w, C, g, R, C, alpha, b0 * 16, std::min(R, b1 * 16));
    });
}

#define CHARLSTM_INSTANTIATE(S)                                                                         \
    template void transpose_rows<S>(const S*, int64_t, S*, int64_t, int64_t, int64_t);                  \
    template void add_transposed_rows<S>(S*, int64_t, const S*, int64_t, int64_t, S, int64_t, int64_t); \
    template void add_transposed<S>(S*, const S*, int64_t, int64_t, S);
CHARLSTM_INSTANTIATE(float)
CHARLSTM_INSTANTIATE(double)
#undef CHARLSTM_INSTANTIATE

}  // namespace cpu
}  // namespace charlstm

// The one place that knows which matrix-product kernel runs.
//
// Float products on the CPU run oneDNN's batch-reduce GEMM micro-kernel through ATen's
// cpublas::brgemm (an ATen-internal API) on row-major operands, split between torch's threads
// here. Everything else (double, CUDA, and every product when the installed torch does not offer
// the float brgemm, as 2.4 does not) goes to at::mm. The callers name operands as blocks of rows
// of contiguous tensors, so the per-step products of the drivers cost no tensor construction.
#pragma once

#include <ATen/ATen.h>

#include <algorithm>
#include <cstdint>

namespace charlstm {

using Tensor = at::Tensor;

// `rows` consecutive rows of a contiguous tensor whose last dimension is the row, starting at row
// `first` of its flattened view. The drivers name each step's [B, N] block this way: the CPU path
// needs only its address, and making a tensor (select) for every operand of every step cost about
// a microsecond each, ~100 per training step.
struct Rows {
    const Tensor& base;
    int64_t first, rows;

    int64_t cols() const { return base.size(-1); }
    Tensor view() const { return base.view({-1, cols()}).narrow(0, first, rows); }
    template <typename T> T* data() const { return base.data_ptr<T>() + first * cols(); }
};

inline Rows all_rows(const Tensor& t) { return {t, 0, t.numel() / std::max<int64_t>(t.size(-1), 1)}; }

// Whether products with this tensor's device and dtype run brgemm (CPU float, when the installed
// torch offers it). Drivers that schedule threads themselves ask before calling product() with
// `this_thread` set.
bool brgemm_path(const Tensor& t);

// The right operand of a product: b [K, N] and, for a weight that does not stay in cache, how a
// product on the CPU in float reads it. `streamed` ones are read in stored order. Where the caller
// holds b_t [N, K] (contiguous), b itself may be any view, since it is not read: a single row
// takes N dot products over the rows of b_t (cpu::matvec), several rows the product b_t a^T with
// b_t as brgemm's left operand, transposed into out. Without b_t, a single row sums the rows of b
// weighted by its values (cpu::vecmat); several rows go to brgemm as usual.
struct Operand {
    Tensor b, b_t;
    bool streamed = false;

    Operand(const Tensor& b_) : b(b_) {}
    static Operand streamed_rows(const Tensor& b, const Tensor& b_t = Tensor()) {
        Operand o(b);
        o.b_t = b_t, o.streamed = true;
        return o;
    }
};

// out[M, N] = a[M, K] b[K, N], or += when `accumulate`; b is contiguous [K, N].
// `this_thread`: compute on the calling thread only (inside a parallel region of the caller's);
// allowed where brgemm_path(b) holds.
void product(const Rows& out, const Rows& a, const Operand& b, bool accumulate, bool this_thread = false);

// x w (+ bias) for x [N, K], w [K, N'], bias [N'] or undefined -> [N, N'].
Tensor linear(const Tensor& x, const Tensor& w, const Tensor& bias);

// A new contiguous tensor holding the 2-D w transposed (never a view of w).
Tensor transposed(const Tensor& w);

// o[c * ldo + r] = in[r * C + c] for the row-major CPU matrix in [R, C]: its transpose written
// into rows of length ldo, which may hold other columns too. Split between the threads.
template <typename T>
void transpose_into(const T* in, int64_t R, int64_t C, T* o, int64_t ldo);

}  // namespace charlstm

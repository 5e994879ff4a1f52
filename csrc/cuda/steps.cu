// CUDA launchers of the per-step pointwise work declared in steps.h: one thread per (b, j) of the
// [B, H] state, the math from cells.h. No torch header, so nvcc compiles this file on its own; the
// sequence driver passes the current stream and checks devices, shapes and token ids.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <stdexcept>
#include <string>

#include "cells.h"
#include "steps.h"

namespace charlstm {
namespace cuda {
namespace {

constexpr int kThreads = 256;

// Storage S loads to and stores from the compute type A: float for float and both 16-bit types
// (float32 accumulation), double for double.
template <typename S>
struct Io {
    using A = S;
    static __device__ __forceinline__ A load(const S* p, int64_t k) { return p[k]; }
    static __device__ __forceinline__ void store(S* p, int64_t k, A v) { p[k] = v; }
};

template <>
struct Io<Half> {
    using A = float;
    static __device__ __forceinline__ A load(const Half* p, int64_t k) {
        return __half2float(__ushort_as_half(p[k].bits));
    }
    static __device__ __forceinline__ void store(Half* p, int64_t k, A v) {
        p[k].bits = __half_as_ushort(__float2half_rn(v));
    }
};

template <>
struct Io<BFloat16> {
    using A = float;
    static __device__ __forceinline__ A load(const BFloat16* p, int64_t k) {
        return __bfloat162float(__ushort_as_bfloat16(p[k].bits));
    }
    static __device__ __forceinline__ void store(BFloat16* p, int64_t k, A v) {
        p[k].bits = __bfloat16_as_ushort(__float2bfloat16_rn(v));
    }
};

// 64-bit flat index of this thread and the grid stride, so that B*H beyond 2^31 stays correct.
__device__ __forceinline__ int64_t first_index() {
    return static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
}

__device__ __forceinline__ int64_t grid_stride() {
    return static_cast<int64_t>(gridDim.x) * blockDim.x;
}

template <typename S>
__global__ void lstm_forward_kernel(LstmForwardStep<S> a) {
    using IO = Io<S>;
    using A = typename IO::A;
    const int64_t n = a.batch * a.hidden, H = a.hidden;
    for (int64_t k = first_index(); k < n; k += grid_stride()) {
        const int64_t b = k / H, j = k - b * H;
        S* row = a.gates + b * 4 * H;
        A pre[4];
        for (int q = 0; q < 4; ++q) pre[q] = IO::load(row, q * H + j);
        if (a.ids != nullptr) {
            const S* t = a.table + a.ids[b] * 4 * H;
            for (int q = 0; q < 4; ++q) pre[q] += IO::load(t, q * H + j);
        }
        const auto r = cells::lstm_forward<A>(pre[0], pre[1], pre[2], pre[3], IO::load(a.c_prev, k));
        IO::store(row, j, r.i);
        IO::store(row, H + j, r.f);
        IO::store(row, 2 * H + j, r.g);
        IO::store(row, 3 * H + j, r.o);
        IO::store(a.c, k, r.c);
        IO::store(a.h, k, r.h);
    }
}

template <typename S>
__global__ void lstm_backward_kernel(LstmBackwardStep<S> a) {
    using IO = Io<S>;
    using A = typename IO::A;
    const int64_t n = a.batch * a.hidden, H = a.hidden;
    for (int64_t k = first_index(); k < n; k += grid_stride()) {
        const int64_t b = k / H, j = k - b * H;
        const S* g = a.gates + b * 4 * H;
        A dh = IO::load(a.dh_next, k);
        if (a.dh_out != nullptr) dh += IO::load(a.dh_out, k);
        const auto r = cells::lstm_backward<A>(
            IO::load(g, j), IO::load(g, H + j), IO::load(g, 2 * H + j), IO::load(g, 3 * H + j),
            IO::load(a.c_prev, k), IO::load(a.c, k), dh, IO::load(a.dc, k));
        S* dg = a.dgates + b * 4 * H;
        IO::store(dg, j, r.di);
        IO::store(dg, H + j, r.df);
        IO::store(dg, 2 * H + j, r.dg);
        IO::store(dg, 3 * H + j, r.do_);
        IO::store(a.dc, k, r.dc_prev);
    }
}

template <typename S>
__global__ void gru_forward_kernel(GruForwardStep<S> a) {
    using IO = Io<S>;
    using A = typename IO::A;
    const int64_t n = a.batch * a.hidden, H = a.hidden;
    for (int64_t k = first_index(); k < n; k += grid_stride()) {
        const int64_t b = k / H, j = k - b * H;
        const S* x = a.ids != nullptr ? a.table + a.ids[b] * 3 * H : a.xproj + b * 3 * H;
        const S* hp = a.hproj + b * 3 * H;
        const auto r = cells::gru_forward<A>(
            IO::load(x, j), IO::load(x, H + j), IO::load(x, 2 * H + j),
            IO::load(hp, j), IO::load(hp, H + j), IO::load(hp, 2 * H + j), IO::load(a.h_prev, k));
        S* save = a.save + b * 4 * H;
        IO::store(save, j, r.r);
        IO::store(save, H + j, r.z);
        IO::store(save, 2 * H + j, r.n);
        IO::store(save, 3 * H + j, r.hn);
        IO::store(a.h, k, r.h);
    }
}

template <typename S>
__global__ void gru_backward_kernel(GruBackwardStep<S> a) {
    using IO = Io<S>;
    using A = typename IO::A;
    const int64_t n = a.batch * a.hidden, H = a.hidden;
    for (int64_t k = first_index(); k < n; k += grid_stride()) {
        const int64_t b = k / H, j = k - b * H;
        const S* save = a.save + b * 4 * H;
        A dh = IO::load(a.dh, k);
        if (a.dh_out != nullptr) dh += IO::load(a.dh_out, k);
        const auto r = cells::gru_backward<A>(
            IO::load(save, j), IO::load(save, H + j), IO::load(save, 2 * H + j),
            IO::load(save, 3 * H + j), IO::load(a.h_prev, k), dh);
        S* dx = a.dxproj + b * 3 * H;
        S* dhp = a.dhproj + b * 3 * H;
        IO::store(dx, j, r.dr);
        IO::store(dx, H + j, r.dz);
        IO::store(dx, 2 * H + j, r.dn);
        IO::store(dhp, j, r.dr);
        IO::store(dhp, H + j, r.dz);
        IO::store(dhp, 2 * H + j, r.dhn);
        IO::store(a.dh, k, r.dh_prev);
    }
}

template <typename S>
__global__ void rnn_forward_kernel(RnnForwardStep<S> a) {
    using IO = Io<S>;
    using A = typename IO::A;
    const int64_t n = a.batch * a.hidden, H = a.hidden;
    for (int64_t k = first_index(); k < n; k += grid_stride()) {
        A pre = IO::load(a.h, k);
        if (a.ids != nullptr) {
            const int64_t b = k / H, j = k - b * H;
            pre += IO::load(a.table + a.ids[b] * H, j);
        }
        IO::store(a.h, k, cells::rnn_forward<A>(pre, a.relu));
    }
}

template <typename S>
__global__ void rnn_backward_kernel(RnnBackwardStep<S> a) {
    using IO = Io<S>;
    using A = typename IO::A;
    const int64_t n = a.batch * a.hidden;
    for (int64_t k = first_index(); k < n; k += grid_stride()) {
        A dh = IO::load(a.dh_next, k);
        if (a.dh_out != nullptr) dh += IO::load(a.dh_out, k);
        IO::store(a.dpre, k, cells::rnn_backward<A>(IO::load(a.h, k), dh, a.relu));
    }
}

// The grid covers every element once; the stride loop only matters past 2^31 - 1 blocks.
unsigned int blocks_for(int64_t batch, int64_t hidden) {
    const int64_t blocks = (batch * hidden + kThreads - 1) / kThreads;
    return static_cast<unsigned int>(blocks < 2147483647 ? blocks : 2147483647);
}

// The error state is read with cudaPeekAtLastError before and after the launch, so that an error
// left by an earlier asynchronous call (of this op or another) is reported as such, not as this
// kernel's; only the launch is checked, since a synchronisation here would stall the stream.
// Errors raised while a kernel runs surface at the next synchronising call.
void check_before_launch(const char* kernel) {
    const cudaError_t err = cudaPeekAtLastError();
    if (err != cudaSuccess) {
        throw std::runtime_error(std::string("charlstm: an earlier CUDA call failed with '") +
                                 cudaGetErrorString(err) + "' before the launch of " + kernel +
                                 "; run with CUDA_LAUNCH_BLOCKING=1 to stop at the call that caused it");
    }
}

void check_launch(const char* kernel, int64_t batch, int64_t hidden) {
    const cudaError_t err = cudaPeekAtLastError();
    if (err != cudaSuccess) {
        (void)cudaGetLastError();  // a launch error is not sticky: clear it once it is reported
        throw std::runtime_error(std::string("charlstm: CUDA could not launch ") + kernel + " for batch " +
                                 std::to_string(batch) + ", hidden " + std::to_string(hidden) + ": " +
                                 cudaGetErrorString(err) + (err == cudaErrorNoKernelImageForDevice
                                     ? " (this GPU's architecture is not among those charlstm was built for: see "
                                       "`charlstm info`, and rebuild with TORCH_CUDA_ARCH_LIST set to it)"
                                     : ""));
    }
}

template <typename Args, typename Kernel>
void launch(Kernel kernel, const char* name, const Args& a, void* stream) {
    if (a.batch <= 0 || a.hidden <= 0) return;
    check_before_launch(name);
    kernel<<<blocks_for(a.batch, a.hidden), kThreads, 0, static_cast<cudaStream_t>(stream)>>>(a);
    check_launch(name, a.batch, a.hidden);
}

}  // namespace

template <typename S>
void lstm_forward_step(const LstmForwardStep<S>& a, void* stream) {
    launch(lstm_forward_kernel<S>, "lstm_forward_kernel", a, stream);
}

template <typename S>
void lstm_backward_step(const LstmBackwardStep<S>& a, void* stream) {
    launch(lstm_backward_kernel<S>, "lstm_backward_kernel", a, stream);
}

template <typename S>
void gru_forward_step(const GruForwardStep<S>& a, void* stream) {
    launch(gru_forward_kernel<S>, "gru_forward_kernel", a, stream);
}

template <typename S>
void gru_backward_step(const GruBackwardStep<S>& a, void* stream) {
    launch(gru_backward_kernel<S>, "gru_backward_kernel", a, stream);
}

template <typename S>
void rnn_forward_step(const RnnForwardStep<S>& a, void* stream) {
    launch(rnn_forward_kernel<S>, "rnn_forward_kernel", a, stream);
}

template <typename S>
void rnn_backward_step(const RnnBackwardStep<S>& a, void* stream) {
    launch(rnn_backward_kernel<S>, "rnn_backward_kernel", a, stream);
}

#define CHARLSTM_INSTANTIATE_STEPS(S)                                             \
    template void lstm_forward_step<S>(const LstmForwardStep<S>&, void*);       \
    template void lstm_backward_step<S>(const LstmBackwardStep<S>&, void*);     \
    template void gru_forward_step<S>(const GruForwardStep<S>&, void*);         \
    template void gru_backward_step<S>(const GruBackwardStep<S>&, void*);       \
    template void rnn_forward_step<S>(const RnnForwardStep<S>&, void*);         \
    template void rnn_backward_step<S>(const RnnBackwardStep<S>&, void*);

CHARLSTM_INSTANTIATE_STEPS(float)
CHARLSTM_INSTANTIATE_STEPS(double)
CHARLSTM_INSTANTIATE_STEPS(Half)
CHARLSTM_INSTANTIATE_STEPS(BFloat16)

#undef CHARLSTM_INSTANTIATE_STEPS

}  // namespace cuda
}  // namespace charlstm

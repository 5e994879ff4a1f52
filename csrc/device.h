// What differs between the devices the drivers run on, behind one tag type per device: the
// dtypes their kernels take and the pointwise step kernels. The drivers (sequence.cpp,
// train_step.cpp) are templates over these tags, and ops.cpp registers each instantiation for its
// own dispatch key, so no driver asks a tensor which device it is on.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>

#include <type_traits>

#include "steps.h"

#ifdef CHARLSTM_WITH_CUDA
#include <ATen/cuda/CUDAContext.h>
#endif

namespace charlstm {

struct Cpu {};
#ifdef CHARLSTM_WITH_CUDA
struct Cuda {};
#endif

// The storage type the step kernels see for an ATen dtype: the 16-bit ones as plain bits
// (steps.h), so that steps.h and the .cu files name no torch type.
template <typename T> struct Storage { using type = T; };
template <> struct Storage<at::Half> { using type = Half; };
template <> struct Storage<at::BFloat16> { using type = BFloat16; };

template <typename T>
typename Storage<T>::type* ptr(const at::Tensor& t) {
    return t.defined() ? reinterpret_cast<typename Storage<T>::type*>(t.data_ptr<T>()) : nullptr;
}

// f(tag) with decltype(tag)::type the ATen scalar type of `dtype`: float and double on the CPU,
// also half and bfloat16 on CUDA (ops.cpp refuses other dtypes before a driver runs).
template <typename T> struct DtypeTag { using type = T; };

template <typename F>
void dispatch(Cpu, at::ScalarType dtype, const F& f) {
    AT_DISPATCH_FLOATING_TYPES(dtype, "charlstm", [&] { f(DtypeTag<scalar_t>{}); });
}

// One pointwise step over rows [b0, b1) of the batch: all of them split between the threads when
// `whole`, else that slice on the calling thread.
template <typename Args>
void run_step(Cpu, const Args& a, int64_t b0, int64_t b1, bool whole) {
    if (whole) {
        cpu::step(a);
    } else {
        cpu::step_rows(a, b0, b1);
    }
}

#ifdef CHARLSTM_WITH_CUDA
template <typename F>
void dispatch(Cuda, at::ScalarType dtype, const F& f) {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype, "charlstm", [&] { f(DtypeTag<scalar_t>{}); });
}

inline void* current_stream() { return at::cuda::getCurrentCUDAStream().stream(); }

// Kernels launch on the current stream and always cover the whole batch.
template <typename S> void run_step(Cuda, const LstmForwardStep<S>& a, int64_t, int64_t, bool) {
    cuda::lstm_forward_step(a, current_stream());
}
template <typename S> void run_step(Cuda, const LstmBackwardStep<S>& a, int64_t, int64_t, bool) {
    cuda::lstm_backward_step(a, current_stream());
}
template <typename S> void run_step(Cuda, const GruForwardStep<S>& a, int64_t, int64_t, bool) {
    cuda::gru_forward_step(a, current_stream());
}
template <typename S> void run_step(Cuda, const GruBackwardStep<S>& a, int64_t, int64_t, bool) {
    cuda::gru_backward_step(a, current_stream());
}
template <typename S> void run_step(Cuda, const RnnForwardStep<S>& a, int64_t, int64_t, bool) {
    cuda::rnn_forward_step(a, current_stream());
}
template <typename S> void run_step(Cuda, const RnnBackwardStep<S>& a, int64_t, int64_t, bool) {
    cuda::rnn_backward_step(a, current_stream());
}
#endif

}  // namespace charlstm

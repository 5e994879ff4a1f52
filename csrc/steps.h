// One time step of each cell's pointwise work over a whole batch, as plain pointers and sizes.
// The sequence drivers (sequence.cpp) do the matrix products (gemm.h) and call these once per
// step; csrc/cpu implements them with at::parallel_for, csrc/cuda with one kernel launch each.
// No torch header here: the CUDA side compiles without one.
//
// Layouts (row-major, contiguous): B = batch, H = hidden, V = vocabulary of token-id inputs.
// When `ids` is set, the input projection is the row ids[b] of `table` ([V, G*H]: w_ih^T with the
// input bias folded in), which is the one-hot product computed as a gather.
#pragma once

#include <cstdint>

namespace charlstm {

// 16-bit storage types as plain bits, so that this header names no CUDA or torch type; the CUDA
// side reinterprets them as __half / __nv_bfloat16 (same layout as c10::Half / c10::BFloat16)
// and computes in float.
struct Half { uint16_t bits; };
struct BFloat16 { uint16_t bits; };

template <typename S>
struct LstmForwardStep {
    S* gates;             // [B, 4H] in: pre-activations (minus the gathered input); out: i f g o
    const int64_t* ids;   // [B] or null
    const S* table;       // [V, 4H] w_ih^T + b_ih + b_hh, read when ids is set
    const S* c_prev;      // [B, H]
    S* c;                 // [B, H]
    S* h;                 // [B, H]
    int64_t batch, hidden;
};

template <typename S>
struct LstmBackwardStep {
    const S* gates;       // [B, 4H] activations saved by the forward step
    const S* c_prev;      // [B, H]
    const S* c;           // [B, H]
    const S* dh_out;      // [B, H] gradient of this step's output, or null
    const S* dh_next;     // [B, H] gradient arriving through the next step's W_hh
    S* dc;                // [B, H] in: gradient of c; out: gradient of c_prev (in place)
    S* dgates;            // [B, 4H] out: gradients of the pre-activations
    int64_t batch, hidden;
};

template <typename S>
struct GruForwardStep {
    const S* xproj;       // [B, 3H] x W_ih^T + b_ih, or null when ids is set
    const int64_t* ids;   // [B] or null
    const S* table;       // [V, 3H] w_ih^T + b_ih, read when ids is set
    const S* hproj;       // [B, 3H] h W_hh^T + b_hh
    const S* h_prev;      // [B, H]
    S* save;              // [B, 4H] out: r z n hn
    S* h;                 // [B, H]
    int64_t batch, hidden;
};

template <typename S>
struct GruBackwardStep {
    const S* save;        // [B, 4H] r z n hn
    const S* h_prev;      // [B, H]
    const S* dh_out;      // [B, H] or null
    S* dh;                // [B, H] in: gradient through the next step; out: the direct path z*dh
    S* dxproj;            // [B, 3H] out: dr dz dn
    S* dhproj;            // [B, 3H] out: dr dz dhn
    int64_t batch, hidden;
};

template <typename S>
struct RnnForwardStep {
    S* h;                 // [B, H] in: pre-activations (minus the gathered input); out: act(.)
    const int64_t* ids;   // [B] or null
    const S* table;       // [V, H] w_ih^T + b_ih + b_hh, read when ids is set
    bool relu;
    int64_t batch, hidden;
};

template <typename S>
struct RnnBackwardStep {
    const S* h;           // [B, H] this step's output
    const S* dh_out;      // [B, H] or null
    const S* dh_next;     // [B, H]
    S* dpre;              // [B, H] out
    bool relu;
    int64_t batch, hidden;
};

namespace cpu {
// The build of the float loops this process runs: "avx512", "avx2+fma" or "baseline x86-64" (or
// "compiler default" off x86-64 GCC). The widest the processor has, unless the environment
// variable CHARLSTM_CPU_SIMD names a narrower one (avx2 or baseline), which tests use to run
// every build on one machine.
const char* simd();

// One step over the whole batch, rows split between torch's threads; instantiated for float and
// double.
template <typename S> void step(const LstmForwardStep<S>& a);
template <typename S> void step(const LstmBackwardStep<S>& a);
template <typename S> void step(const GruForwardStep<S>& a);
template <typename S> void step(const GruBackwardStep<S>& a);
template <typename S> void step(const RnnForwardStep<S>& a);
template <typename S> void step(const RnnBackwardStep<S>& a);

// The same work for batch rows [b0, b1) only, on the calling thread: for drivers that split the
// batch between threads themselves and run every time step of a slice without meeting.
template <typename S> void step_rows(const LstmForwardStep<S>& a, int64_t b0, int64_t b1);
template <typename S> void step_rows(const LstmBackwardStep<S>& a, int64_t b0, int64_t b1);
template <typename S> void step_rows(const GruForwardStep<S>& a, int64_t b0, int64_t b1);
template <typename S> void step_rows(const GruBackwardStep<S>& a, int64_t b0, int64_t b1);
template <typename S> void step_rows(const RnnForwardStep<S>& a, int64_t b0, int64_t b1);
template <typename S> void step_rows(const RnnBackwardStep<S>& a, int64_t b0, int64_t b1);
}  // namespace cpu

namespace cuda {
// `stream` is the cudaStream_t to launch on. Instantiated for float, double, Half and BFloat16
// (the 16-bit types compute in float). Each checks its launch and throws std::runtime_error.
template <typename S> void lstm_forward_step(const LstmForwardStep<S>& a, void* stream);
template <typename S> void lstm_backward_step(const LstmBackwardStep<S>& a, void* stream);
template <typename S> void gru_forward_step(const GruForwardStep<S>& a, void* stream);
template <typename S> void gru_backward_step(const GruBackwardStep<S>& a, void* stream);
template <typename S> void rnn_forward_step(const RnnForwardStep<S>& a, void* stream);
template <typename S> void rnn_backward_step(const RnnBackwardStep<S>& a, void* stream);
}  // namespace cuda

}  // namespace charlstm

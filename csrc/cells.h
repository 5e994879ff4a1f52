// Pointwise math of the LSTM, GRU and RNN cells, forward and backward, written once for the CPU
// loops (csrc/cpu) and the CUDA kernels (csrc/cuda). It includes no torch header, so the C++
// tests (csrc/tests) and nvcc compile it on their own.
//
// Equations, gate order and bias placement are torch.nn's (LSTMCell, GRUCell, RNNCell):
//   LSTM  [i f g o] = x W_ih^T + b_ih + h W_hh^T + b_hh                    (4H pre-activations)
//         i, f, o = sigmoid(.), g = tanh(.);  c' = f c + i g;  h' = o tanh(c')
//   GRU   [xr xz xn] = x W_ih^T + b_ih,  [hr hz hn] = h W_hh^T + b_hh        (3H each)
//         r = sigmoid(xr + hr), z = sigmoid(xz + hz), n = tanh(xn + r hn);  h' = (1 - z) n + z h
//   RNN   h' = act(x W_ih^T + b_ih + h W_hh^T + b_hh),  act = tanh or relu
// Backward functions return gradients with respect to the pre-activations, the quantities the
// weight-gradient matrix products consume.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

// Forced inlining on the host too: a call left in a CPU loop stops it from being vectorised.
#if defined(__CUDACC__)
#define CHARLSTM_HD __host__ __device__ __forceinline__
#elif defined(__GNUC__)
#define CHARLSTM_HD inline __attribute__((always_inline))
#else
#define CHARLSTM_HD inline
#endif

namespace charlstm {
namespace cells {

#if !defined(__CUDA_ARCH__)
// exp for float on the host, written so that a `#pragma omp simd` loop vectorises it (libm's expf
// is an opaque call, and a scalar expf loop made the fused cell slower than eager PyTorch).
// Cody-Waite reduction x = n ln2 + r, |r| <= ln2/2, then Cephes' degree-6 polynomial for e^r:
// about 1 ulp over the clamped range, which keeps sigmoid and tanh finite for every input.
// n is rounded by adding 1.5 * 2^23, which leaves it in the low mantissa bits of the sum: two
// additions instead of a compare, a select and two conversions, which made the LSTM's forward
// pointwise step a third faster. (Exact without -ffast-math, which would fold the two additions.)
inline __attribute__((always_inline)) float host_expf(float x) {
    x = x > 88.0f ? 88.0f : (x < -87.0f ? -87.0f : x);
    const float shifter = 12582912.0f;  // 1.5 * 2^23
    const float shifted = x * 1.44269504088896341f + shifter;
    const float fn = shifted - shifter;
    int32_t n;
    std::memcpy(&n, &shifted, sizeof(n));
    n -= 0x4B400000;  // the bits of the shifter
    const float r = (x - fn * 0.693359375f) + fn * 2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    const uint32_t bits = static_cast<uint32_t>(n + 127) << 23;
    float scale;
    std::memcpy(&scale, &bits, sizeof(scale));
    return p * scale;
}
#endif

CHARLSTM_HD float exp_(float x) {
#if defined(__CUDA_ARCH__)
    return expf(x);
#else
    return host_expf(x);
#endif
}

CHARLSTM_HD double exp_(double x) { return exp(x); }

template <typename T>
CHARLSTM_HD T sigmoid(T x) {
    return T(1) / (T(1) + exp_(-x));
}

// tanh through one exp of a non-positive argument, so it never overflows; the absolute error
// near zero (about one ulp of 1) is below that of the matrix products feeding it.
CHARLSTM_HD float tanh_(float x) {
#if defined(__CUDA_ARCH__)
    return tanhf(x);
#else
    const float e = exp_(-2.0f * (x < 0.0f ? -x : x));
    const float t = (1.0f - e) / (1.0f + e);
    return x < 0.0f ? -t : t;
#endif
}

CHARLSTM_HD double tanh_(double x) { return tanh(x); }

// ---- LSTM ----

template <typename T>
struct LstmForward {
    T i, f, g, o;  // gate activations, saved for the backward pass
    T c, h;        // new cell and hidden state
};

template <typename T>
CHARLSTM_HD LstmForward<T> lstm_forward(T pre_i, T pre_f, T pre_g, T pre_o, T c_prev) {
    LstmForward<T> r;
    r.i = sigmoid(pre_i);
    r.f = sigmoid(pre_f);
    r.g = tanh_(pre_g);
    r.o = sigmoid(pre_o);
    r.c = r.f * c_prev + r.i * r.g;
    r.h = r.o * tanh_(r.c);
    return r;
}

template <typename T>
struct LstmBackward {
    T di, df, dg, do_;  // gradients of the four pre-activations
    T dc_prev;
};

// dh, dc: total gradients reaching h' and c' (from the output, the next step and the final state).
template <typename T>
CHARLSTM_HD LstmBackward<T> lstm_backward(T i, T f, T g, T o, T c_prev, T c, T dh, T dc) {
    const T tc = tanh_(c);
    const T dc_total = dc + dh * o * (T(1) - tc * tc);
    LstmBackward<T> r;
    r.di = dc_total * g * i * (T(1) - i);
    r.df = dc_total * c_prev * f * (T(1) - f);
    r.dg = dc_total * i * (T(1) - g * g);
    r.do_ = dh * tc * o * (T(1) - o);
    r.dc_prev = dc_total * f;
    return r;
}

// ---- GRU ----

template <typename T>
struct GruForward {
    T r, z, n, hn;  // saved for the backward pass: gates and the h-side of the candidate
    T h;
};

template <typename T>
CHARLSTM_HD GruForward<T> gru_forward(T xr, T xz, T xn, T hr, T hz, T hn, T h_prev) {
    GruForward<T> r;
    r.r = sigmoid(xr + hr);
    r.z = sigmoid(xz + hz);
    r.n = tanh_(xn + r.r * hn);
    r.hn = hn;
    r.h = r.n + r.z * (h_prev - r.n);
    return r;
}

template <typename T>
struct GruBackward {
    T dr, dz, dn;  // gradients of the pre-activations: x-side [dr dz dn], h-side [dr dz dhn]
    T dhn;
    T dh_prev;     // the direct path z * dh; the path through W_hh is added by a matrix product
};

template <typename T>
CHARLSTM_HD GruBackward<T> gru_backward(T r, T z, T n, T hn, T h_prev, T dh) {
    GruBackward<T> g;
    const T dn_pre = dh * (T(1) - z) * (T(1) - n * n);
    g.dn = dn_pre;
    g.dhn = dn_pre * r;
    g.dr = dn_pre * hn * r * (T(1) - r);
    g.dz = dh * (h_prev - n) * z * (T(1) - z);
    g.dh_prev = dh * z;
    return g;
}

// ---- RNN ----

template <typename T>
CHARLSTM_HD T rnn_forward(T pre, bool relu) {
    return relu ? (pre > T(0) ? pre : T(0)) : tanh_(pre);
}

// Written in terms of the output h = act(pre), which is what the forward pass keeps.
template <typename T>
CHARLSTM_HD T rnn_backward(T h, T dh, bool relu) {
    return relu ? (h > T(0) ? dh : T(0)) : dh * (T(1) - h * h);
}

}  // namespace cells
}  // namespace charlstm

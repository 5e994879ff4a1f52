// Whole-sequence forward and backward of the LSTM, GRU and RNN. Each function is a template over
// the device tag (device.h), instantiated for Cpu and, in a CUDA build, for Cuda; ops.cpp checks
// the inputs, makes them contiguous and registers each instantiation for its dispatch key.
//
// x is float [T, B, I] or int64 token ids [T, B] (the one-hot input with I = w_ih.size(1)).
// Saved for backward: LSTM the gate activations [T, B, 4H] and cell states [T, B, H];
// GRU r, z, n and the h-side candidate term [T, B, 4H]; RNN only its outputs.
#pragma once

#include <ATen/ATen.h>

#include <optional>
#include <string>
#include <tuple>

namespace charlstm {

using Tensor = at::Tensor;
using OptTensor = std::optional<at::Tensor>;

// -> y, hT, cT, gates, cs
template <class Device>
std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor> lstm_forward(
    const Tensor& x, const Tensor& h0, const Tensor& c0, const Tensor& w_ih, const Tensor& w_hh,
    const OptTensor& b_ih, const OptTensor& b_hh);

// What a caller of the backward functions needs beyond the autograd ops' defaults.
struct BackwardOptions {
    // false: dh0 (and dc0) come back undefined, and the last step's product with w_hh, which
    // only they need, is skipped.
    bool initial_state_grad = true;
    // true: dw_ih and dw_hh come back transposed, [I, G*H] and [H, G*H], as the products make
    // them; the caller then saves a transposed copy of each.
    bool transposed_weight_grads = false;
};

// -> dx (empty for token ids), dh0, dc0, dw_ih, dw_hh, db (shared by b_ih and b_hh)
template <class Device>
std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor> lstm_backward(
    const OptTensor& grad_y, const OptTensor& grad_hT, const OptTensor& grad_cT, const Tensor& x,
    const Tensor& h0, const Tensor& c0, const Tensor& w_ih, const Tensor& w_hh, const Tensor& y,
    const Tensor& gates, const Tensor& cs, const BackwardOptions& options = {});

// -> y, hT, save
template <class Device>
std::tuple<Tensor, Tensor, Tensor> gru_forward(
    const Tensor& x, const Tensor& h0, const Tensor& w_ih, const Tensor& w_hh,
    const OptTensor& b_ih, const OptTensor& b_hh);

// -> dx, dh0, dw_ih, dw_hh, db_ih, db_hh
template <class Device>
std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor> gru_backward(
    const OptTensor& grad_y, const OptTensor& grad_hT, const Tensor& x, const Tensor& h0,
    const Tensor& w_ih, const Tensor& w_hh, const Tensor& y, const Tensor& save,
    const BackwardOptions& options = {});

// -> y, hT
template <class Device>
std::tuple<Tensor, Tensor> rnn_forward(
    const Tensor& x, const Tensor& h0, const Tensor& w_ih, const Tensor& w_hh,
    const OptTensor& b_ih, const OptTensor& b_hh, bool relu);

// -> dx, dh0, dw_ih, dw_hh, db (shared by b_ih and b_hh)
template <class Device>
std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor> rnn_backward(
    const OptTensor& grad_y, const OptTensor& grad_hT, const Tensor& x, const Tensor& h0,
    const Tensor& w_ih, const Tensor& w_hh, const Tensor& y, bool relu,
    const BackwardOptions& options = {});


}  // namespace charlstm

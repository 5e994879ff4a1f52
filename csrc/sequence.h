// Whole-sequence forward and backward of the LSTM, GRU and RNN, for CPU and CUDA tensors alike.
// Inputs are checked and made contiguous by ops.cpp before they reach these functions.
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
std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor> lstm_backward(
    const OptTensor& grad_y, const OptTensor& grad_hT, const OptTensor& grad_cT, const Tensor& x,
    const Tensor& h0, const Tensor& c0, const Tensor& w_ih, const Tensor& w_hh, const Tensor& y,
    const Tensor& gates, const Tensor& cs, const BackwardOptions& options = {});

// -> y, hT, save
std::tuple<Tensor, Tensor, Tensor> gru_forward(
    const Tensor& x, const Tensor& h0, const Tensor& w_ih, const Tensor& w_hh,
    const OptTensor& b_ih, const OptTensor& b_hh);

// -> dx, dh0, dw_ih, dw_hh, db_ih, db_hh
std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor> gru_backward(
    const OptTensor& grad_y, const OptTensor& grad_hT, const Tensor& x, const Tensor& h0,
    const Tensor& w_ih, const Tensor& w_hh, const Tensor& y, const Tensor& save,
    const BackwardOptions& options = {});

// -> y, hT
std::tuple<Tensor, Tensor> rnn_forward(
    const Tensor& x, const Tensor& h0, const Tensor& w_ih, const Tensor& w_hh,
    const OptTensor& b_ih, const OptTensor& b_hh, bool relu);

// -> dx, dh0, dw_ih, dw_hh, db (shared by b_ih and b_hh)
std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor> rnn_backward(
    const OptTensor& grad_y, const OptTensor& grad_hT, const Tensor& x, const Tensor& h0,
    const Tensor& w_ih, const Tensor& w_hh, const Tensor& y, bool relu, const BackwardOptions& options = {});


// What the drivers also lend to lm_step.cpp; on the CPU in float the product runs brgemm (see
// sequence.cpp), elsewhere at::mm.
// x w (+ bias) for x [N, K], w [K, M], bias [M] or undefined -> [N, M].
Tensor linear(const Tensor& x, const Tensor& w, const Tensor& bias);
// A new contiguous tensor holding the 2-D w transposed (never a view of w).
Tensor transposed(const Tensor& w);

}  // namespace charlstm

// All layers of a recurrent module in one call: the layer drivers (sequence.h) in a loop, with
// torch.nn's dropout between layers. One op call per module forward and one per backward, however
// many layers, instead of an autograd node, a dropout op and a stack of the final states each.
#pragma once

#include <ATen/ATen.h>

#include <vector>

#include "sequence.h"

namespace charlstm {

// hx: one [L, B, H] tensor per state (h, and c for the LSTM). weights: per layer w_ih, w_hh and,
// when has_biases, b_ih, b_hh (torch.nn's _flat_weights order). dropout: the probability of
// zeroing a layer's output before the next layer reads it (training only: pass 0 otherwise); it
// draws from the default generator exactly as torch.nn's CPU LSTM, GRU and RNN do (at::dropout:
// bernoulli(1 - p) / (1 - p) per layer output, lower layers first).
// -> y [T, B, H] of the top layer, the final states (like hx), and what the backward needs
//    besides y: every layer's saved tensors (sequence.h), the outputs of the L - 1 lower layers,
//    then their L - 1 dropout masks when dropout is on.
struct StackForward {
    Tensor y;
    std::vector<Tensor> final;
    std::vector<Tensor> saved;
};

template <class Device>
StackForward stack_forward(Cell cell, const Tensor& x, const std::vector<Tensor>& hx,
                           const std::vector<Tensor>& weights, bool has_biases, double dropout);

// -> dx (undefined unless input_grad), the gradients of hx (empty unless state_grad) and of every
//    weight in the order of `weights`.
struct StackGrads {
    Tensor dx;
    std::vector<Tensor> dhx;
    std::vector<Tensor> dweights;
};

template <class Device>
StackGrads stack_backward(Cell cell, const OptTensor& grad_y, const std::vector<OptTensor>& grad_hy,
                          const Tensor& x, const std::vector<Tensor>& hx, const std::vector<Tensor>& weights,
                          const Tensor& y, const std::vector<Tensor>& saved, bool has_biases, double dropout,
                          bool input_grad, bool state_grad);

}  // namespace charlstm

// Whole-sequence forward and backward of the LSTM, GRU and RNN. Each function is a template over
// the device tag (device.h), instantiated for Cpu and, in a CUDA build, for Cuda; ops.cpp checks
// the inputs, makes them contiguous and registers each instantiation for its dispatch key.
//
// x is float [T, B, I] or int64 token ids [T, B] (the one-hot input with I = w_ih.size(1)).
#pragma once

#include <ATen/ATen.h>

#include <optional>
#include <string>
#include <tuple>
#include <vector>

namespace charlstm {

using Tensor = at::Tensor;
using OptTensor = std::optional<at::Tensor>;

enum class Cell { Lstm, Gru, RnnTanh, RnnRelu };

// Gates per hidden unit (LSTM 4, GRU 3, RNN 1) and state tensors (LSTM h and c, others h).
int64_t gates_of(Cell cell);
int64_t states_of(Cell cell);
// The tensors one layer's forward keeps for its backward besides y: LSTM 2, GRU 1, RNN 0.
int64_t saved_of(Cell cell);

// One layer over a sequence. state0: {h0, c0} for the LSTM, {h0} otherwise, each [B, H].
// -> y [T, B, H], the final state (like state0), and what the backward needs besides y:
//    LSTM {gate activations [T, B, 4H], cell states [T, B, H]}, GRU {r z n hn [T, B, 4H]}, RNN {}.
struct LayerForward {
    Tensor y;
    std::vector<Tensor> final;
    std::vector<Tensor> saved;
};

template <class Device>
LayerForward layer_forward(Cell cell, const Tensor& x, const std::vector<Tensor>& state0, const Tensor& w_ih,
                           const Tensor& w_hh, const OptTensor& b_ih, const OptTensor& b_hh);

// What a caller of the backward needs beyond the autograd ops' defaults.
struct BackwardOptions {
    // false: the initial state's gradients come back undefined, and the last step's product with
    // w_hh, which only they need, is skipped.
    bool initial_state_grad = true;
    // false: dx comes back undefined and its product is skipped (float input that needs no
    // gradient; token ids never have one).
    bool input_grad = true;
    // true: dw_ih and dw_hh come back transposed, [I, G*H] and [H, G*H], as the products make
    // them; the caller then saves a transposed copy of each.
    bool transposed_weight_grads = false;
};

// -> dx (undefined for token ids), the initial state's gradients (like state0), dw_ih, dw_hh,
//    db_ih, db_hh (for the LSTM and RNN, whose biases add up, the same tensor twice).
struct LayerGrads {
    Tensor dx;
    std::vector<Tensor> dstate;
    Tensor dw_ih, dw_hh, db_ih, db_hh;
};

template <class Device>
LayerGrads layer_backward(Cell cell, const OptTensor& grad_y, const std::vector<OptTensor>& grad_final,
                          const Tensor& x, const std::vector<Tensor>& state0, const Tensor& w_ih,
                          const Tensor& w_hh, const Tensor& y, const std::vector<Tensor>& saved,
                          const BackwardOptions& options = {});

}  // namespace charlstm

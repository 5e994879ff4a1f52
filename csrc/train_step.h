// One whole training step of a character language model in one call: the recurrence over a window
// of token ids, a linear softmax classifier, the mean cross-entropy, backward, clipping to a global
// norm and a plain SGD update of every weight in place.
//
// This is the loop that `charlstm train` runs thousands of times. Run as separate autograd ops, it
// costs about as much in dispatch, small tensor ops and Python as in arithmetic at the assignment's
// sizes (B = 64, H = 64); here the arithmetic is all that is left.
#pragma once

#include <ATen/ATen.h>

#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "sequence.h"

namespace charlstm {

// window: int64 [T + 1, B]; step t reads window[t] and predicts window[t + 1].
// state: {h, c} for the LSTM, {h} otherwise, each [B, H]. w_out [H, V], b_out [V]:
// logits = y w_out + b_out, the assignment's classifier.
// Gradients are scaled by clip / max(norm, clip) (tf.clip_by_global_norm; clip <= 0 turns it off),
// then every weight moves by -lr * gradient. When the loss or the norm is not finite, no weight
// changes, so the caller can stop with the last good weights.
// compute_dtype (default: the weights' dtype) may be narrower than the weights, which are then the
// master copy (the AMP way): the recurrence, the classifier and the backward run on copies in
// compute_dtype; the loss, the gradients' norm and the update in the weights' dtype.
// -> loss (mean nats per prediction), global gradient norm before clipping, logits [T * B, V]
//    (before the update), and the state after the window, all in the weights' dtype.
// A template over the device tag (device.h), instantiated for Cpu and, in a CUDA build, Cuda.
template <class Device>
std::tuple<at::Tensor, at::Tensor, at::Tensor, std::vector<at::Tensor>> lm_sgd_step(
    const at::Tensor& window, const std::vector<at::Tensor>& state, Cell cell, at::Tensor w_ih,
    at::Tensor w_hh, std::optional<at::Tensor> b_ih, std::optional<at::Tensor> b_hh, at::Tensor w_out,
    at::Tensor b_out, double lr, double clip, std::optional<at::ScalarType> compute_dtype);

}  // namespace charlstm

// The whole training step of a character language model; see train_step.h. The recurrence runs
// through the same sequence drivers as the autograd ops, so both paths share every kernel; the
// loss, the norm and the update have a CPU loop each (cpu/loops.h) and ATen ops on CUDA, where
// the host reads nothing back (ops.cpp's check of the token ids is the step's one wait).
#include "train_step.h"

#include <ATen/Dispatch.h>

#include <algorithm>
#include <cmath>
#include <utility>

#include "cpu/loops.h"
#include "device.h"
#include "gemm.h"
#include "sequence.h"

namespace charlstm {
namespace {

bool given(const std::optional<at::Tensor>& t) { return t.has_value() && t->defined(); }

// A weight and its gradient, which is [C, R] for an [R, C] weight when `transposed`.
struct Move {
    at::Tensor weight, grad;
    bool transposed;
};

// The mean softmax cross-entropy of logits [N, V] against targets [N, 1] and its gradient
// (softmax - one-hot) / N; `value` is the loss on the host, on the CPU only.
struct Loss {
    at::Tensor loss, dlogits;
    double value = 0;
};

// The global norm of all gradients; `value` is the norm on the host, on the CPU only.
struct Norm {
    at::Tensor norm;
    double value = 0;
};

Loss cross_entropy(Cpu, const at::Tensor& logits, const at::Tensor& targets) {
    const int64_t N = logits.size(0), V = logits.size(1);
    Loss r;
    r.dlogits = at::empty_like(logits);
    const at::Tensor row_loss = at::empty({N}, logits.options());
    AT_DISPATCH_FLOATING_TYPES(logits.scalar_type(), "cross_entropy", [&] {
        cpu::softmax_cross_entropy(cpu::SoftmaxCrossEntropy<scalar_t>{
            logits.data_ptr<scalar_t>(), targets.data_ptr<int64_t>(), r.dlogits.data_ptr<scalar_t>(),
            row_loss.data_ptr<scalar_t>(), scalar_t(1) / static_cast<scalar_t>(N), N, V});
        // The mean here, in double, rather than as two more dispatched ops (mean, item).
        const scalar_t* rows = row_loss.data_ptr<scalar_t>();
        double total = 0;
        for (int64_t i = 0; i < N; ++i) total += static_cast<double>(rows[i]);
        r.value = total / static_cast<double>(N);
    });
    r.loss = at::scalar_tensor(r.value, logits.options());
    return r;
}

// On the CPU one vectorised pass over each gradient, without a dispatched op per tensor.
Norm global_norm(Cpu, const std::vector<at::Tensor>& grads) {
    double squares = 0;
    for (const at::Tensor& g : grads) {
        const at::Tensor gc = g.contiguous();
        AT_DISPATCH_FLOATING_TYPES(gc.scalar_type(), "global_norm", [&] {
            squares += cpu::sum_squares(gc.data_ptr<scalar_t>(), gc.numel());
        });
    }
    const double value = std::sqrt(squares);
    return {at::scalar_tensor(value, grads.front().options()), value};
}

// weight += alpha * grad^T, straight from the transposed gradient.
void add_transposed(Cpu, at::Tensor& weight, const at::Tensor& grad, double alpha) {
    if (!weight.is_contiguous()) {
        weight.add_(grad.t(), alpha);
        return;
    }
    AT_DISPATCH_FLOATING_TYPES(weight.scalar_type(), "add_transposed", [&] {
        cpu::add_transposed(weight.data_ptr<scalar_t>(), grad.data_ptr<scalar_t>(), weight.size(0), weight.size(1),
                            static_cast<scalar_t>(alpha));
    });
}

// The clipped update, on the host's copies of the loss and the norm: the CPU computed them itself.
void clipped_update(Cpu, std::vector<Move>& moves, const Loss& loss, const Norm& norm, double lr, double clip) {
    if (!(std::isfinite(norm.value) && std::isfinite(loss.value))) return;
    const double scale = clip > 0 ? clip / std::max(norm.value, clip) : 1.0;
    std::vector<at::Tensor> weights, grads;
    for (Move& m : moves) {
        if (m.transposed) {
            add_transposed(Cpu{}, m.weight, m.grad, -lr * scale);
        } else {
            weights.push_back(m.weight);
            grads.push_back(m.grad);
        }
    }
    at::_foreach_add_(weights, grads, -lr * scale);
}

#ifdef CHARLSTM_WITH_CUDA
Loss cross_entropy(Cuda, const at::Tensor& logits, const at::Tensor& targets) {
    const int64_t N = logits.size(0);
    Loss r;
    r.dlogits = at::log_softmax(logits, 1);
    const at::Tensor picked = r.dlogits.gather(1, targets);
    r.loss = picked.mean().neg();
    r.dlogits.exp_().scatter_(1, targets, picked.exp().sub_(1)).mul_(1.0 / static_cast<double>(N));
    return r;
}

Norm global_norm(Cuda, const std::vector<at::Tensor>& grads) {
    return {at::linalg_vector_norm(at::stack(at::_foreach_norm(grads))), 0.0};
}

// The same update with the decision left on the device: the factor -lr * clip / max(norm, clip)
// and every gradient are zeroed when the loss or the norm is not finite (where(), so that a NaN
// gradient times zero cannot reach a weight). The host never waits for the step, which lets it
// queue the next one while this one runs.
void clipped_update(Cuda, std::vector<Move>& moves, const Loss& loss, const Norm& norm, double lr, double clip) {
    const at::Tensor ok = at::isfinite(loss.loss).logical_and_(at::isfinite(norm.norm));
    const at::Tensor step = clip > 0 ? norm.norm.clamp_min(clip).reciprocal().mul_(-lr * clip)
                                     : at::full({}, -lr, norm.norm.options());
    const at::Tensor zero = at::zeros({}, norm.norm.options());
    const at::Tensor factor = at::where(ok, step, zero);
    for (Move& m : moves) {
        const at::Tensor g = m.transposed ? m.grad.t() : m.grad;
        m.weight.addcmul_(at::where(ok, g, zero), factor);
    }
}
#endif

// The products with the classifier's gradient: dlogits^T y (w_out's gradient, transposed) and
// dlogits w_out^T. brgemm wants row-major operands, so the CPU path copies the transposes, which
// moves [N, V] rather than [N, H]; at::mm (cuBLAS, double) reads the transposed views in place.
at::Tensor output_weight_grad_t(const at::Tensor& dlogits, const at::Tensor& y2d) {
    return brgemm_path(dlogits) ? linear(transposed(dlogits), y2d, at::Tensor()) : at::mm(dlogits.t(), y2d);
}

at::Tensor output_input_grad(const at::Tensor& dlogits, const at::Tensor& w_out) {
    return brgemm_path(w_out) ? linear(dlogits, transposed(w_out), at::Tensor()) : at::mm(dlogits, w_out.t());
}

}  // namespace

template <class Device>
std::tuple<at::Tensor, at::Tensor, at::Tensor, std::vector<at::Tensor>> lm_sgd_step(
    const at::Tensor& window, const std::vector<at::Tensor>& state, Cell cell, at::Tensor w_ih,
    at::Tensor w_hh, std::optional<at::Tensor> b_ih, std::optional<at::Tensor> b_hh, at::Tensor w_out,
    at::Tensor b_out, double lr, double clip, std::optional<at::ScalarType> compute_dtype) {
    const int64_t T = window.size(0) - 1, B = window.size(1), N = T * B;
    const at::Tensor inputs = window.narrow(0, 0, T).contiguous();
    // contiguous() first: reshape() of a strided window (every other column of a larger batch) is
    // a strided view, and the CPU loss reads the targets densely.
    const at::Tensor targets = window.narrow(0, 1, T).contiguous().view({N, 1});

    // The weights are the master copy. With a narrower compute dtype (the AMP way) the recurrence
    // and the classifier run on copies in that dtype, the loss and everything after the gradients
    // in the weights' dtype.
    const at::ScalarType master = w_hh.scalar_type(), compute = compute_dtype.value_or(master);
    const auto low = [&](const at::Tensor& t) { return t.to(compute).contiguous(); };
    const auto low_opt = [&](const std::optional<at::Tensor>& t) {
        return given(t) ? std::optional(low(*t)) : std::nullopt;
    };
    const at::Tensor cw_ih = low(w_ih), cw_hh = low(w_hh), cw_out = low(w_out), cb_out = low(b_out);
    const std::optional<at::Tensor> bi = low_opt(b_ih), bh = low_opt(b_hh);
    std::vector<at::Tensor> state0;
    for (const at::Tensor& t : state) state0.push_back(low(t));

    // Forward through the recurrence, keeping what its backward needs.
    const LayerForward f = layer_forward<Device>(cell, inputs, state0, cw_ih, cw_hh, bi, bh);
    const at::Tensor& y = f.y;
    std::vector<at::Tensor> next;
    for (const at::Tensor& t : f.final) next.push_back(t.to(master));
    const int64_t H = y.size(2);
    const at::Tensor y2d = y.view({N, H});

    // Softmax cross-entropy, mean over the N predictions, and its gradient (softmax - one-hot) / N.
    const at::Tensor logits = linear(y2d, cw_out, cb_out).to(master);
    const Loss loss = cross_entropy(Device{}, logits, targets);
    const at::Tensor dlogits = loss.dlogits.to(compute);
    const at::Tensor dw_out_t = output_weight_grad_t(dlogits, y2d);
    const at::Tensor db_out = loss.dlogits.sum(0);
    const at::Tensor dy = output_input_grad(dlogits, cw_out).view({T, B, H});

    // Backward through the recurrence: every weight that moves, with its gradient. The state's
    // gradient is not needed, and the weight gradients stay as the products made them.
    BackwardOptions options;
    options.initial_state_grad = false;
    options.transposed_weight_grads = true;
    const LayerGrads g =
        layer_backward<Device>(cell, dy, {}, inputs, state0, cw_ih, cw_hh, y, f.saved, options);
    std::vector<Move> moves = {{w_ih, g.dw_ih, true}, {w_hh, g.dw_hh, true}};
    // The LSTM's and RNN's biases feed the same pre-activations and share one gradient.
    if (bi) moves.push_back({*b_ih, g.db_ih, false});
    if (bh) moves.push_back({*b_hh, g.db_hh, false});
    moves.push_back({w_out, dw_out_t, true});
    moves.push_back({b_out, db_out, false});

    // The gradients in the weights' dtype (float32 or float64: the norm of 16-bit gradients would
    // overflow above 65504), their global norm, then the clipped update (none if anything is not
    // finite).
    std::vector<at::Tensor> grads;
    for (Move& m : moves) {
        m.grad = m.grad.to(master);
        grads.push_back(m.grad);
    }
    const Norm norm = global_norm(Device{}, grads);
    clipped_update(Device{}, moves, loss, norm, lr, clip);
    return {loss.loss, norm.norm, logits, next};
}

template std::tuple<at::Tensor, at::Tensor, at::Tensor, std::vector<at::Tensor>> lm_sgd_step<Cpu>(
    const at::Tensor&, const std::vector<at::Tensor>&, Cell, at::Tensor, at::Tensor, std::optional<at::Tensor>,
    std::optional<at::Tensor>, at::Tensor, at::Tensor, double, double, std::optional<at::ScalarType>);
#ifdef CHARLSTM_WITH_CUDA
template std::tuple<at::Tensor, at::Tensor, at::Tensor, std::vector<at::Tensor>> lm_sgd_step<Cuda>(
    const at::Tensor&, const std::vector<at::Tensor>&, Cell, at::Tensor, at::Tensor, std::optional<at::Tensor>,
    std::optional<at::Tensor>, at::Tensor, at::Tensor, double, double, std::optional<at::ScalarType>);
#endif

}  // namespace charlstm

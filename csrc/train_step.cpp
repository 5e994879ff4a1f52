// The whole training step of a character language model; see train_step.h. The recurrence runs
// through the same sequence drivers as the autograd ops, so both paths share every kernel; the
// loss, the norm and the update have a CPU loop each (cpu/loops.h) and ATen ops on CUDA.
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
// (softmax - one-hot) / N.
struct Loss {
    at::Tensor loss, dlogits;
    double value;
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

// The global norm of all gradients -> (0-dim tensor, value). On the CPU one vectorised pass over
// each gradient, without a dispatched op per tensor.
std::pair<at::Tensor, double> global_norm(Cpu, const std::vector<at::Tensor>& grads) {
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

#ifdef CHARLSTM_WITH_CUDA
Loss cross_entropy(Cuda, const at::Tensor& logits, const at::Tensor& targets) {
    const int64_t N = logits.size(0);
    Loss r;
    r.dlogits = at::log_softmax(logits, 1);
    const at::Tensor picked = r.dlogits.gather(1, targets);
    r.loss = picked.mean().neg();
    r.dlogits.exp_().scatter_(1, targets, picked.exp().sub_(1)).mul_(1.0 / static_cast<double>(N));
    r.value = r.loss.item<double>();
    return r;
}

std::pair<at::Tensor, double> global_norm(Cuda, const std::vector<at::Tensor>& grads) {
    const at::Tensor norm = at::linalg_vector_norm(at::stack(at::_foreach_norm(grads)));
    return {norm, norm.item<double>()};
}

void add_transposed(Cuda, at::Tensor& weight, const at::Tensor& grad, double alpha) {
    weight.add_(grad.t(), alpha);
}
#endif

}  // namespace

template <class Device>
std::tuple<at::Tensor, at::Tensor, at::Tensor, std::vector<at::Tensor>> lm_sgd_step(
    const at::Tensor& window, const std::vector<at::Tensor>& state, Cell cell, at::Tensor w_ih,
    at::Tensor w_hh, std::optional<at::Tensor> b_ih, std::optional<at::Tensor> b_hh, at::Tensor w_out,
    at::Tensor b_out, double lr, double clip) {
    const int64_t T = window.size(0) - 1, B = window.size(1), N = T * B;
    const at::Tensor inputs = window.narrow(0, 0, T).contiguous();
    const at::Tensor targets = window.narrow(0, 1, T).reshape({N, 1});
    std::vector<at::Tensor> state0;
    for (const at::Tensor& t : state) state0.push_back(t.contiguous());
    const std::optional<at::Tensor> bi = given(b_ih) ? std::optional(b_ih->contiguous()) : std::nullopt;
    const std::optional<at::Tensor> bh = given(b_hh) ? std::optional(b_hh->contiguous()) : std::nullopt;

    // Forward through the recurrence, keeping what its backward needs.
    const LayerForward f = layer_forward<Device>(cell, inputs, state0, w_ih, w_hh, bi, bh);
    const at::Tensor& y = f.y;
    const int64_t H = y.size(2);
    const at::Tensor y2d = y.view({N, H});

    // Softmax cross-entropy, mean over the N predictions, and its gradient (softmax - one-hot) / N.
    const at::Tensor logits = linear(y2d, w_out, b_out);
    const Loss loss = cross_entropy(Device{}, logits, targets);
    const at::Tensor& dlogits = loss.dlogits;
    // w_out's gradient y^T dlogits [H, V], computed transposed as dlogits^T y [V, H]: the transpose
    // then moves [N, V] instead of [N, H].
    const at::Tensor dw_out_t = linear(transposed(dlogits), y2d, at::Tensor());
    const at::Tensor db_out = dlogits.sum(0);
    const at::Tensor dy = linear(dlogits, transposed(w_out), at::Tensor()).view({T, B, H});

    // Backward through the recurrence: every weight that moves, with its gradient. The state's
    // gradient is not needed, and the weight gradients stay as the products made them.
    BackwardOptions options;
    options.initial_state_grad = false;
    options.transposed_weight_grads = true;
    const LayerGrads g = layer_backward<Device>(cell, dy, {}, inputs, state0, w_ih, w_hh, y, f.saved, options);
    std::vector<Move> moves = {{w_ih, g.dw_ih, true}, {w_hh, g.dw_hh, true}};
    // The LSTM's and RNN's biases feed the same pre-activations and share one gradient.
    if (bi) moves.push_back({*b_ih, g.db_ih, false});
    if (bh) moves.push_back({*b_hh, g.db_hh, false});
    moves.push_back({w_out, dw_out_t, true});
    moves.push_back({b_out, db_out, false});

    // Global norm over every gradient, then the clipped update (none if anything is not finite).
    std::vector<at::Tensor> weights, grads, all_grads;
    for (const Move& m : moves) {
        all_grads.push_back(m.grad);
        if (!m.transposed) {
            weights.push_back(m.weight);
            grads.push_back(m.grad);
        }
    }
    const auto [norm, norm_value] = global_norm(Device{}, all_grads);
    if (std::isfinite(norm_value) && std::isfinite(loss.value)) {
        const double scale = clip > 0 ? clip / std::max(norm_value, clip) : 1.0;
        at::_foreach_add_(weights, grads, -lr * scale);
        for (Move& m : moves) {
            if (m.transposed) add_transposed(Device{}, m.weight, m.grad, -lr * scale);
        }
    }
    return {loss.loss, norm, logits, f.final};
}

template std::tuple<at::Tensor, at::Tensor, at::Tensor, std::vector<at::Tensor>> lm_sgd_step<Cpu>(
    const at::Tensor&, const std::vector<at::Tensor>&, Cell, at::Tensor, at::Tensor, std::optional<at::Tensor>,
    std::optional<at::Tensor>, at::Tensor, at::Tensor, double, double);
#ifdef CHARLSTM_WITH_CUDA
template std::tuple<at::Tensor, at::Tensor, at::Tensor, std::vector<at::Tensor>> lm_sgd_step<Cuda>(
    const at::Tensor&, const std::vector<at::Tensor>&, Cell, at::Tensor, at::Tensor, std::optional<at::Tensor>,
    std::optional<at::Tensor>, at::Tensor, at::Tensor, double, double);
#endif

}  // namespace charlstm

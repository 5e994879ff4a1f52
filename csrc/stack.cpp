// All layers of a recurrent module in one call; see stack.h.
#include "stack.h"

#include <utility>

#include "device.h"

namespace charlstm {
namespace {

int64_t weights_per_layer(bool has_biases) { return has_biases ? 4 : 2; }

OptTensor bias_at(const std::vector<Tensor>& weights, int64_t first, bool has_biases, int64_t k) {
    return has_biases ? OptTensor(weights[first + 2 + k]) : std::nullopt;
}

// at::dropout's CPU formula, so that the draws are torch.nn's: noise = bernoulli(1 - p) / (1 - p),
// and no draw at all for p = 1. -> the dropped output and the noise it was multiplied by.
std::pair<Tensor, Tensor> drop(const Tensor& y, double p) {
    if (p >= 1) {
        Tensor zeros = at::zeros_like(y);
        return {zeros, zeros};
    }
    Tensor noise = at::empty_like(y).bernoulli_(1 - p).div_(1 - p);
    return {y * noise, noise};
}

std::vector<Tensor> layer_of(const std::vector<Tensor>& states, int64_t l) {
    std::vector<Tensor> out;
    for (const Tensor& s : states) out.push_back(s[l]);
    return out;
}

}  // namespace

template <class Device>
StackForward stack_forward(Cell cell, const Tensor& x, const std::vector<Tensor>& hx,
                           const std::vector<Tensor>& weights, bool has_biases, double dropout) {
    const int64_t P = weights_per_layer(has_biases), L = static_cast<int64_t>(weights.size()) / P;
    const int64_t S = states_of(cell);
    StackForward out;
    std::vector<std::vector<Tensor>> finals(S);
    std::vector<Tensor> outputs, masks;
    Tensor input = x;
    for (int64_t l = 0; l < L; ++l) {
        LayerForward f = layer_forward<Device>(cell, input, layer_of(hx, l), weights[l * P], weights[l * P + 1],
                                               bias_at(weights, l * P, has_biases, 0),
                                               bias_at(weights, l * P, has_biases, 1));
        out.saved.insert(out.saved.end(), f.saved.begin(), f.saved.end());
        for (int64_t s = 0; s < S; ++s) finals[s].push_back(f.final[s]);
        if (l + 1 == L) {
            out.y = f.y;
            break;
        }
        outputs.push_back(f.y);
        if (dropout > 0) {
            auto [dropped, noise] = drop(f.y, dropout);
            masks.push_back(noise);
            input = dropped;
        } else {
            input = f.y;
        }
    }
    for (int64_t s = 0; s < S; ++s) out.final.push_back(at::stack(finals[s]));
    out.saved.insert(out.saved.end(), outputs.begin(), outputs.end());
    out.saved.insert(out.saved.end(), masks.begin(), masks.end());
    return out;
}

template <class Device>
StackGrads stack_backward(Cell cell, const OptTensor& grad_y, const std::vector<OptTensor>& grad_hy,
                          const Tensor& x, const std::vector<Tensor>& hx, const std::vector<Tensor>& weights,
                          const Tensor& y_top, const std::vector<Tensor>& saved, bool has_biases, double dropout,
                          bool input_grad, bool state_grad) {
    const int64_t P = weights_per_layer(has_biases), L = static_cast<int64_t>(weights.size()) / P;
    const int64_t S = states_of(cell), per = saved_of(cell);
    const bool masked = dropout > 0 && L > 1;
    const auto output = [&](int64_t l) { return l + 1 == L ? y_top : saved[L * per + l]; };
    const auto mask = [&](int64_t l) { return saved[L * per + L - 1 + l]; };  // between layers l and l + 1
    StackGrads g;
    g.dweights.resize(weights.size());
    std::vector<std::vector<Tensor>> dstates(S);
    Tensor dx_above;
    for (int64_t l = L - 1; l >= 0; --l) {
        const Tensor y = output(l);
        const std::vector<Tensor> cell_saved(saved.begin() + l * per, saved.begin() + (l + 1) * per);
        // The layer's input again: the output below, dropped as in the forward.
        Tensor input = x;
        if (l > 0) input = masked ? output(l - 1) * mask(l - 1) : output(l - 1);
        OptTensor grad_out = grad_y;
        if (l + 1 < L) grad_out = masked ? dx_above * mask(l) : dx_above;
        std::vector<OptTensor> grad_final;
        for (int64_t s = 0; s < S; ++s) {
            const bool given = s < static_cast<int64_t>(grad_hy.size()) && grad_hy[s].has_value() &&
                               grad_hy[s]->defined();
            grad_final.push_back(given ? OptTensor((*grad_hy[s])[l]) : std::nullopt);
        }
        BackwardOptions options;
        options.initial_state_grad = state_grad;
        options.input_grad = l > 0 || input_grad;
        LayerGrads lg = layer_backward<Device>(cell, grad_out, grad_final, input, layer_of(hx, l), weights[l * P],
                                               weights[l * P + 1], y, cell_saved, options);
        g.dweights[l * P] = lg.dw_ih;
        g.dweights[l * P + 1] = lg.dw_hh;
        if (has_biases) {
            g.dweights[l * P + 2] = lg.db_ih;
            // The LSTM's and RNN's two biases share one gradient; each gets its own tensor.
            g.dweights[l * P + 3] = lg.db_hh.is_same(lg.db_ih) ? lg.db_hh.clone() : lg.db_hh;
        }
        for (int64_t s = 0; s < S && state_grad; ++s) dstates[s].insert(dstates[s].begin(), lg.dstate[s]);
        dx_above = lg.dx;
    }
    if (input_grad) g.dx = dx_above;
    for (int64_t s = 0; s < S && state_grad; ++s) g.dhx.push_back(at::stack(dstates[s]));
    return g;
}

template StackForward stack_forward<Cpu>(Cell, const Tensor&, const std::vector<Tensor>&, const std::vector<Tensor>&,
                                         bool, double);
template StackGrads stack_backward<Cpu>(Cell, const OptTensor&, const std::vector<OptTensor>&, const Tensor&,
                                        const std::vector<Tensor>&, const std::vector<Tensor>&, const Tensor&,
                                        const std::vector<Tensor>&, bool, double, bool, bool);
#ifdef CHARLSTM_WITH_CUDA
template StackForward stack_forward<Cuda>(Cell, const Tensor&, const std::vector<Tensor>&,
                                          const std::vector<Tensor>&, bool, double);
template StackGrads stack_backward<Cuda>(Cell, const OptTensor&, const std::vector<OptTensor>&, const Tensor&,
                                         const std::vector<Tensor>&, const std::vector<Tensor>&, const Tensor&,
                                         const std::vector<Tensor>&, bool, double, bool, bool);
#endif

}  // namespace charlstm

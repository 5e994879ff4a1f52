// The autograd kernel of layers_forward, the op charlstm.nn's modules run: a C++ autograd Function
// registered for the Autograd key. The single-layer ops keep theirs in Python (charlstm/ops.py);
// this one is in C++ because its Tensor[] arguments made torch.library.register_autograd's Python
// wrapper cost ~250 us per forward and backward of a module at batch 1, hidden 64, ten steps,
// twice the ops' own time there.
#include <torch/autograd.h>
#include <torch/library.h>

#include <optional>
#include <string>
#include <tuple>
#include <vector>

namespace charlstm {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;
using Tensor = at::Tensor;

using ForwardSig = std::tuple<Tensor, std::vector<Tensor>, std::vector<Tensor>>(
    const Tensor&, at::TensorList, at::TensorList, const std::string&, bool, double);
using BackwardSig = std::tuple<Tensor, std::vector<Tensor>, std::vector<Tensor>>(
    const std::optional<Tensor>&, const c10::List<std::optional<Tensor>>&, const Tensor&, at::TensorList,
    at::TensorList, const Tensor&, at::TensorList, const std::string&, bool, double, bool, bool);

const c10::TypedOperatorHandle<ForwardSig>& forward_op() {
    static const auto op =
        c10::Dispatcher::singleton().findSchemaOrThrow("charlstm::layers_forward", "").typed<ForwardSig>();
    return op;
}

const c10::TypedOperatorHandle<BackwardSig>& backward_op() {
    static const auto op =
        c10::Dispatcher::singleton().findSchemaOrThrow("charlstm::layers_backward", "").typed<BackwardSig>();
    return op;
}

// Outputs of apply(): y, then the final states, then what the backward keeps (not differentiable).
class Layers : public torch::autograd::Function<Layers> {
   public:
    static variable_list forward(AutogradContext* ctx, const Tensor& x, at::TensorList hx, at::TensorList weights,
                                 const std::string& cell, bool has_biases, double dropout) {
        std::tuple<Tensor, std::vector<Tensor>, std::vector<Tensor>> out;
        {
            at::AutoDispatchBelowADInplaceOrView below;
            out = forward_op().call(x, hx, weights, cell, has_biases, dropout);
        }
        auto& [y, hy, saved] = out;
        variable_list to_save{x};
        to_save.insert(to_save.end(), hx.begin(), hx.end());
        to_save.insert(to_save.end(), weights.begin(), weights.end());
        to_save.push_back(y);
        to_save.insert(to_save.end(), saved.begin(), saved.end());
        ctx->save_for_backward(to_save);
        ctx->saved_data["states"] = static_cast<int64_t>(hx.size());
        ctx->saved_data["weights"] = static_cast<int64_t>(weights.size());
        ctx->saved_data["cell"] = cell;
        ctx->saved_data["has_biases"] = has_biases;
        ctx->saved_data["dropout"] = dropout;
        // Gradients nobody asked for are not computed: dx for an input that needs none (token
        // ids, or a first layer fed by no trainable embedding), dhx for a default zero state.
        bool state_grad = false;
        for (const Tensor& h : hx) state_grad = state_grad || h.requires_grad();
        ctx->saved_data["input_grad"] = x.requires_grad();
        ctx->saved_data["state_grad"] = state_grad;
        ctx->mark_non_differentiable(saved);
        ctx->set_materialize_grads(false);
        variable_list outputs{y};
        outputs.insert(outputs.end(), hy.begin(), hy.end());
        outputs.insert(outputs.end(), saved.begin(), saved.end());
        return outputs;
    }

    static variable_list backward(AutogradContext* ctx, variable_list grads) {
        const int64_t nh = ctx->saved_data["states"].toInt(), nw = ctx->saved_data["weights"].toInt();
        const variable_list saved = ctx->get_saved_variables();
        const Tensor& x = saved[0];
        const std::vector<Tensor> hx(saved.begin() + 1, saved.begin() + 1 + nh);
        const std::vector<Tensor> weights(saved.begin() + 1 + nh, saved.begin() + 1 + nh + nw);
        const Tensor& y = saved[1 + nh + nw];
        const std::vector<Tensor> kept(saved.begin() + 2 + nh + nw, saved.end());
        c10::List<std::optional<Tensor>> grad_hy;
        for (int64_t k = 0; k < nh; ++k) {
            const Tensor& g = grads[1 + k];
            grad_hy.push_back(g.defined() ? std::optional<Tensor>(g) : std::nullopt);
        }
        const std::optional<Tensor> grad_y = grads[0].defined() ? std::optional<Tensor>(grads[0]) : std::nullopt;
        const bool input_grad = ctx->saved_data["input_grad"].toBool();
        const bool state_grad = ctx->saved_data["state_grad"].toBool();
        // With create_graph the call goes through the backward op's own autograd (charlstm/ops.py),
        // which raises if anyone differentiates these gradients again; otherwise straight to the kernel.
        std::optional<at::AutoDispatchBelowADInplaceOrView> below;
        if (!at::GradMode::is_enabled()) below.emplace();
        auto out = backward_op().call(grad_y, grad_hy, x, hx, weights, y, kept, ctx->saved_data["cell"].toStringRef(),
                                      ctx->saved_data["has_biases"].toBool(), ctx->saved_data["dropout"].toDouble(),
                                      input_grad, state_grad);
        auto& [dx, dhx, dweights] = out;
        variable_list result{input_grad ? dx : Tensor()};
        for (int64_t k = 0; k < nh; ++k) result.push_back(state_grad ? dhx[k] : Tensor());
        result.insert(result.end(), dweights.begin(), dweights.end());
        result.resize(result.size() + 3);  // cell, has_biases, dropout
        return result;
    }
};

std::tuple<Tensor, std::vector<Tensor>, std::vector<Tensor>> layers_forward_autograd(
    const Tensor& x, at::TensorList hx, at::TensorList weights, const std::string& cell, bool has_biases,
    double dropout) {
    const variable_list out = Layers::apply(x, hx, weights, cell, has_biases, dropout);
    const size_t nh = hx.size();
    return {out[0], std::vector<Tensor>(out.begin() + 1, out.begin() + 1 + nh),
            std::vector<Tensor>(out.begin() + 1 + nh, out.end())};
}

}  // namespace

TORCH_LIBRARY_IMPL(charlstm, Autograd, m) { m.impl("layers_forward", &layers_forward_autograd); }

}  // namespace charlstm

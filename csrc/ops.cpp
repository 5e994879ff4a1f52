// The charlstm operator library: schemas, input checks, and one implementation per dispatch key.
// Autograd and fake (meta) kernels are registered from Python, in charlstm/ops.py.
//
// Weight layouts and gate order are torch.nn's: w_ih [G*H, I], w_hh [G*H, H], biases [G*H], with
// G = 4 (i f g o) for the LSTM, 3 (r z n) for the GRU and 1 for the RNN.
#include <Python.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <sstream>
#include <vector>

#include "device.h"
#include "gemm.h"
#include "sequence.h"
#include "stack.h"
#include "steps.h"
#include "train_step.h"

#ifndef CHARLSTM_CUDA_ARCHS
#define CHARLSTM_CUDA_ARCHS ""
#endif
// The code TORCH_CUDA_ARCH_LIST embedded: sm_XY machine code and compute_XY PTX, space-separated.
#ifndef CHARLSTM_CUDA_CODE
#define CHARLSTM_CUDA_CODE ""
#endif

namespace charlstm {
namespace {

// ---- input checks: each names the argument, what was expected and what was given ----

bool is_cpu_float(at::ScalarType t) { return t == at::kFloat || t == at::kDouble; }

bool is_any_float(at::ScalarType t) {
    return is_cpu_float(t) || t == at::kHalf || t == at::kBFloat16;
}

void check_like(const Tensor& t, const char* name, const Tensor& w_hh) {
    TORCH_CHECK(t.device() == w_hh.device(), name, " is on ", t.device(), " but w_hh is on ",
                w_hh.device(), ": move all inputs to one device");
    TORCH_CHECK(t.scalar_type() == w_hh.scalar_type(), name, " has dtype ", t.scalar_type(),
                " but w_hh has ", w_hh.scalar_type(), ": convert all float inputs to one dtype");
}

// Checks the weights of a cell with `G` gates and returns the hidden size.
int64_t check_weights(int64_t G, const Tensor& w_ih, const Tensor& w_hh, const OptTensor& b_ih,
                      const OptTensor& b_hh) {
    const auto dtype = w_hh.scalar_type();
    TORCH_CHECK(w_hh.is_cuda() ? is_any_float(dtype) : is_cpu_float(dtype),
                "w_hh has dtype ", dtype, "; charlstm's ", w_hh.is_cuda() ? "CUDA" : "CPU",
                " kernels take ", w_hh.is_cuda() ? "float32, float64, float16 or bfloat16" : "float32 or float64",
                ": convert the module or tensors with .float() or .double()");
    TORCH_CHECK(w_hh.dim() == 2 && w_hh.size(1) > 0 && w_hh.size(0) == G * w_hh.size(1),
                "w_hh must have shape [", G, "*hidden_size, hidden_size] with hidden_size >= 1, got ",
                w_hh.sizes());
    const int64_t H = w_hh.size(1);
    check_like(w_ih, "w_ih", w_hh);
    TORCH_CHECK(w_ih.dim() == 2 && w_ih.size(0) == G * H && w_ih.size(1) > 0,
                "w_ih must have shape [", G * H, ", input_size] (", G, "*hidden_size rows, to match w_hh ",
                w_hh.sizes(), "), got ", w_ih.sizes());
    for (const auto& [b, name] : {std::pair{&b_ih, "b_ih"}, std::pair{&b_hh, "b_hh"}}) {
        if (!b->has_value() || !(*b)->defined()) continue;
        check_like(**b, name, w_hh);
        TORCH_CHECK((*b)->dim() == 1 && (*b)->size(0) == G * H, name, " must have shape [", G * H,
                    "], got ", (*b)->sizes());
    }
    return H;
}

// The smallest and largest id of each tensor, in that order. On the CPU a plain loop (aminmax and
// item() calls cost more than the few hundred ids of a window); on a device one reduction per
// tensor and a single transfer for all the bounds, which is the host's only wait for the device in
// a forward op with token ids.
std::vector<int64_t> id_bounds(const std::vector<Tensor>& ids) {
    std::vector<int64_t> bounds;
    if (ids.front().is_cpu()) {
        for (const Tensor& t : ids) {
            const Tensor c = t.contiguous();
            const int64_t* p = c.data_ptr<int64_t>();
            int64_t min = p[0], max = p[0];
            for (int64_t i = 1; i < c.numel(); ++i) {
                min = std::min(min, p[i]);
                max = std::max(max, p[i]);
            }
            bounds.insert(bounds.end(), {min, max});
        }
        return bounds;
    }
    std::vector<Tensor> parts;
    for (const Tensor& t : ids) {
        const auto [lo, hi] = at::aminmax(t);
        parts.insert(parts.end(), {lo, hi});
    }
    const Tensor host = at::stack(parts).to(at::kCPU);
    const int64_t* p = host.data_ptr<int64_t>();
    return std::vector<int64_t>(p, p + host.numel());
}

// Token ids with bounds [min, max] must index a table of `size` rows.
void check_id_range(int64_t min, int64_t max, const char* what, int64_t size, const char* size_name) {
    TORCH_CHECK(min >= 0 && max < size, what, " must lie in [0, ", size, ") (", size_name, "), got values from ",
                min, " to ", max);
}

// Checks x, float [T, B, I] / ids [T, B] for sequences and [B, I] / [B] for cells; returns T, B.
// `id_values`: also check that token ids index w_ih's columns (the backward ops, whose ids the
// forward op checked, skip it on devices, where it would be a wait for the device).
std::pair<int64_t, int64_t> check_input(const Tensor& x, const Tensor& w_ih, bool sequence,
                                        bool id_values = true) {
    const int64_t dims = sequence ? 3 : 2;
    const char* shape = sequence ? "[T, B, input_size]" : "[B, input_size]";
    const char* id_shape = sequence ? "[T, B]" : "[B]";
    TORCH_CHECK(x.device() == w_ih.device(), "x is on ", x.device(), " but w_ih is on ", w_ih.device(),
                ": move all inputs to one device");
    if (x.scalar_type() == at::kLong) {
        TORCH_CHECK(x.dim() == dims - 1, "token ids x must have shape ", id_shape, ", got ", x.sizes());
        if (x.numel() > 0 && id_values) {
            const auto b = id_bounds({x});
            check_id_range(b[0], b[1], "token ids x", w_ih.size(1), "input_size = w_ih.size(1)");
        }
    } else {
        TORCH_CHECK(at::isFloatingType(x.scalar_type()), "x has dtype ", x.scalar_type(),
                    ": pass float inputs of shape ", shape, " or int64 token ids of shape ", id_shape,
                    " (convert ids with .long())");
        check_like(x, "x", w_ih);
        TORCH_CHECK(x.dim() == dims && x.size(dims - 1) == w_ih.size(1), "x must have shape ", shape,
                    " with input_size = ", w_ih.size(1), " (w_ih.size(1)), got ", x.sizes());
    }
    if (sequence) {
        TORCH_CHECK(x.size(0) > 0, "x holds no time step (T = 0): pass at least one");
        TORCH_CHECK(x.size(1) > 0, "x holds an empty batch (B = 0): pass at least one sequence");
        return {x.size(0), x.size(1)};
    }
    TORCH_CHECK(x.size(0) > 0, "x holds an empty batch (B = 0): pass at least one row");
    return {1, x.size(0)};
}

void check_state(const Tensor& s, const char* name, int64_t B, int64_t H, const Tensor& w_hh) {
    check_like(s, name, w_hh);
    TORCH_CHECK(s.dim() == 2 && s.size(0) == B && s.size(1) == H, name, " must have shape [", B, ", ", H,
                "] (batch, hidden_size), got ", s.sizes());
}

// A tensor a backward op takes from the forward (its output, what it saved) or as an incoming
// gradient: on w_hh's device, in its dtype, of shape `shape`, which `what` describes.
void check_sized(const Tensor& t, const char* name, at::IntArrayRef shape, const char* what, const Tensor& w_hh) {
    check_like(t, name, w_hh);
    TORCH_CHECK(t.sizes() == shape, name, " must have shape ", shape, " (", what, "), got ", t.sizes());
}

void check_sized(const OptTensor& t, const char* name, at::IntArrayRef shape, const char* what,
                 const Tensor& w_hh) {
    if (t.has_value() && t->defined()) check_sized(*t, name, shape, what, w_hh);
}

// What every backward op takes: the forward's x, h0 and weights, its output y, and the incoming
// gradients of y and hT. Returns T, B, H.
std::tuple<int64_t, int64_t, int64_t> check_backward(int64_t G, const OptTensor& grad_y, const OptTensor& grad_hT,
                                                     const Tensor& x, const Tensor& h0, const Tensor& w_ih,
                                                     const Tensor& w_hh, const Tensor& y) {
    const int64_t H = check_weights(G, w_ih, w_hh, std::nullopt, std::nullopt);
    const auto [T, B] = check_input(x, w_ih, true, /*id_values=*/x.is_cpu());
    check_state(h0, "h0", B, H, w_hh);
    check_sized(y, "y", {T, B, H}, "[T, B, hidden_size]: the forward's output", w_hh);
    check_sized(grad_y, "grad_y", {T, B, H}, "[T, B, hidden_size], as y", w_hh);
    check_sized(grad_hT, "grad_hT", {B, H}, "[B, hidden_size], as hT", w_hh);
    return {T, B, H};
}

OptTensor contiguous(const OptTensor& t) {
    return t.has_value() && t->defined() ? OptTensor(t->contiguous()) : std::nullopt;
}

// ---- checked entry points, one instantiation per device (device.h) ----

// The training step updates its weights in place, so they must hold small updates: in bfloat16 an
// update below about 0.4% of a weight rounds away (half its 2^-7 spacing), in float16 below 0.05%.
void check_master_weights(at::ScalarType dtype) {
    const bool half = dtype == at::kHalf;
    TORCH_CHECK(!half && dtype != at::kBFloat16, "lm_sgd_step updates the weights in place, and in ",
                dtype, " an update smaller than about ", half ? "0.05%" : "0.4%", " of a weight rounds away: "
                "keep the weights in float32 (the master copy) and pass compute_dtype=torch.",
                half ? "float16" : "bfloat16", " to run the step in 16-bit on CUDA (float32 weights also get "
                "tensor-core products through TF32: torch.backends.cuda.matmul.allow_tf32 = True)");
}

// A compute dtype the device's kernels take, no wider than the weights it is copied from.
void check_compute_dtype(at::ScalarType compute, const Tensor& w_hh) {
    const bool cuda = w_hh.is_cuda();
    TORCH_CHECK(cuda ? is_any_float(compute) : is_cpu_float(compute), "compute_dtype ", compute,
                " is not one that charlstm's ", cuda ? "CUDA" : "CPU", " kernels take: ",
                cuda ? "float32, float64, float16 or bfloat16"
                     : "float32 or float64 (16-bit compute runs on CUDA)");
    TORCH_CHECK(c10::elementSize(compute) <= c10::elementSize(w_hh.scalar_type()), "compute_dtype ", compute,
                " is wider than the weights' ", w_hh.scalar_type(), ": the weights are the master copy, so pass "
                "them in ", compute, " or choose a narrower compute_dtype");
}

Cell cell_from(const std::string& name) {
    if (name == "lstm") return Cell::Lstm;
    if (name == "gru") return Cell::Gru;
    if (name == "rnn_tanh") return Cell::RnnTanh;
    if (name == "rnn_relu") return Cell::RnnRelu;
    TORCH_CHECK(false, "cell must be \"lstm\", \"gru\", \"rnn_tanh\" or \"rnn_relu\", got \"", name, "\"");
}

Cell rnn_cell_from(const std::string& nonlinearity) {
    TORCH_CHECK(nonlinearity == "tanh" || nonlinearity == "relu",
                "nonlinearity must be 'tanh' or 'relu', got '", nonlinearity, "'");
    return nonlinearity == "relu" ? Cell::RnnRelu : Cell::RnnTanh;
}

// A defined tensor for an output the schema always returns (dx of token ids: empty).
Tensor or_empty(const Tensor& t, const Tensor& like) { return t.defined() ? t : at::empty({0}, like.options()); }

// One checked layer forward: x [T, B, I] or ids [T, B] (cells: [B, I] or [B], as one step).
template <class Device>
LayerForward checked_forward(Cell cell, const Tensor& x, const std::vector<Tensor>& state, const Tensor& w_ih,
                             const Tensor& w_hh, const OptTensor& b_ih, const OptTensor& b_hh, bool sequence) {
    const int64_t H = check_weights(gates_of(cell), w_ih, w_hh, b_ih, b_hh);
    const auto [T, B] = check_input(x, w_ih, sequence);
    const char* names[2][2] = {{"h", "c"}, {"h0", "c0"}};
    std::vector<Tensor> state_c;
    for (size_t k = 0; k < state.size(); ++k) {
        check_state(state[k], names[sequence][k], B, H, w_hh);
        state_c.push_back(state[k].contiguous());
    }
    const Tensor xc = sequence ? x.contiguous() : x.contiguous().unsqueeze(0);
    return layer_forward<Device>(cell, xc, state_c, w_ih, w_hh, contiguous(b_ih), contiguous(b_hh));
}

template <class Device>
LayerGrads layer_grads(Cell cell, const OptTensor& grad_y, const std::vector<OptTensor>& grad_final, const Tensor& x,
                       const std::vector<Tensor>& state0, const Tensor& w_ih, const Tensor& w_hh, const Tensor& y,
                       const std::vector<Tensor>& saved) {
    std::vector<OptTensor> gf;
    for (const OptTensor& g : grad_final) gf.push_back(contiguous(g));
    std::vector<Tensor> s0, sv;
    for (const Tensor& t : state0) s0.push_back(t.contiguous());
    for (const Tensor& t : saved) sv.push_back(t.contiguous());
    LayerGrads g = layer_backward<Device>(cell, contiguous(grad_y), gf, x.contiguous(), s0, w_ih, w_hh,
                                          y.contiguous(), sv);
    g.dx = or_empty(g.dx, w_ih);
    return g;
}

template <class Device>
std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor> lstm_forward_op(
    const Tensor& x, const Tensor& h0, const Tensor& c0, const Tensor& w_ih, const Tensor& w_hh,
    const OptTensor& b_ih, const OptTensor& b_hh) {
    auto f = checked_forward<Device>(Cell::Lstm, x, {h0, c0}, w_ih, w_hh, b_ih, b_hh, true);
    return {f.y, f.final[0], f.final[1], f.saved[0], f.saved[1]};
}

template <class Device>
std::tuple<Tensor, Tensor, Tensor> lstm_cell_op(
    const Tensor& x, const Tensor& h, const Tensor& c, const Tensor& w_ih, const Tensor& w_hh,
    const OptTensor& b_ih, const OptTensor& b_hh) {
    auto f = checked_forward<Device>(Cell::Lstm, x, {h, c}, w_ih, w_hh, b_ih, b_hh, false);
    return {f.final[0], f.final[1], f.saved[0][0]};
}

template <class Device>
std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor> lstm_backward_op(
    const OptTensor& grad_y, const OptTensor& grad_hT, const OptTensor& grad_cT, const Tensor& x,
    const Tensor& h0, const Tensor& c0, const Tensor& w_ih, const Tensor& w_hh, const Tensor& y,
    const Tensor& gates, const Tensor& cs) {
    const auto [T, B, H] = check_backward(4, grad_y, grad_hT, x, h0, w_ih, w_hh, y);
    check_state(c0, "c0", B, H, w_hh);
    check_sized(grad_cT, "grad_cT", {B, H}, "[B, hidden_size], as cT", w_hh);
    check_sized(gates, "gates", {T, B, 4 * H}, "[T, B, 4*hidden_size]: saved by lstm_forward", w_hh);
    check_sized(cs, "cs", {T, B, H}, "[T, B, hidden_size]: saved by lstm_forward", w_hh);
    auto g = layer_grads<Device>(Cell::Lstm, grad_y, {grad_hT, grad_cT}, x, {h0, c0}, w_ih, w_hh, y, {gates, cs});
    return {g.dx, g.dstate[0], g.dstate[1], g.dw_ih, g.dw_hh, g.db_ih};
}

template <class Device>
std::tuple<Tensor, Tensor, Tensor> gru_forward_op(
    const Tensor& x, const Tensor& h0, const Tensor& w_ih, const Tensor& w_hh, const OptTensor& b_ih,
    const OptTensor& b_hh) {
    auto f = checked_forward<Device>(Cell::Gru, x, {h0}, w_ih, w_hh, b_ih, b_hh, true);
    return {f.y, f.final[0], f.saved[0]};
}

template <class Device>
std::tuple<Tensor, Tensor> gru_cell_op(
    const Tensor& x, const Tensor& h, const Tensor& w_ih, const Tensor& w_hh, const OptTensor& b_ih,
    const OptTensor& b_hh) {
    auto f = checked_forward<Device>(Cell::Gru, x, {h}, w_ih, w_hh, b_ih, b_hh, false);
    return {f.final[0], f.saved[0][0]};
}

template <class Device>
std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor> gru_backward_op(
    const OptTensor& grad_y, const OptTensor& grad_hT, const Tensor& x, const Tensor& h0,
    const Tensor& w_ih, const Tensor& w_hh, const Tensor& y, const Tensor& save) {
    const auto [T, B, H] = check_backward(3, grad_y, grad_hT, x, h0, w_ih, w_hh, y);
    check_sized(save, "save", {T, B, 4 * H}, "[T, B, 4*hidden_size]: saved by gru_forward", w_hh);
    auto g = layer_grads<Device>(Cell::Gru, grad_y, {grad_hT}, x, {h0}, w_ih, w_hh, y, {save});
    return {g.dx, g.dstate[0], g.dw_ih, g.dw_hh, g.db_ih, g.db_hh};
}

template <class Device>
std::tuple<Tensor, Tensor> rnn_forward_op(
    const Tensor& x, const Tensor& h0, const Tensor& w_ih, const Tensor& w_hh, const OptTensor& b_ih,
    const OptTensor& b_hh, const std::string& nonlinearity) {
    const Cell cell = rnn_cell_from(nonlinearity);
    auto f = checked_forward<Device>(cell, x, {h0}, w_ih, w_hh, b_ih, b_hh, true);
    return {f.y, f.final[0]};
}

template <class Device>
Tensor rnn_cell_op(const Tensor& x, const Tensor& h, const Tensor& w_ih, const Tensor& w_hh,
                   const OptTensor& b_ih, const OptTensor& b_hh, const std::string& nonlinearity) {
    const Cell cell = rnn_cell_from(nonlinearity);
    return checked_forward<Device>(cell, x, {h}, w_ih, w_hh, b_ih, b_hh, false).final[0];
}

template <class Device>
std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor> rnn_backward_op(
    const OptTensor& grad_y, const OptTensor& grad_hT, const Tensor& x, const Tensor& h0,
    const Tensor& w_ih, const Tensor& w_hh, const Tensor& y, const std::string& nonlinearity) {
    const Cell cell = rnn_cell_from(nonlinearity);
    check_backward(1, grad_y, grad_hT, x, h0, w_ih, w_hh, y);
    auto g = layer_grads<Device>(cell, grad_y, {grad_hT}, x, {h0}, w_ih, w_hh, y, {});
    return {g.dx, g.dstate[0], g.dw_ih, g.dw_hh, g.db_ih};
}

// ---- all layers of a module in one call ----

// `id_values`: as check_input's (the backward skips the ids' values on devices).
int64_t check_stack(Cell cell, const Tensor& x, const std::vector<Tensor>& hx,
                    const std::vector<Tensor>& weights, bool has_biases, double dropout,
                    bool id_values = true) {
    const int64_t P = has_biases ? 4 : 2;
    TORCH_CHECK(!weights.empty() && weights.size() % P == 0, "weights must hold ", P, " tensors per layer (w_ih, "
                "w_hh", has_biases ? ", b_ih, b_hh" : "", "), got ", weights.size());
    const int64_t L = static_cast<int64_t>(weights.size()) / P;
    TORCH_CHECK(static_cast<int64_t>(hx.size()) == states_of(cell), "hx must hold ", states_of(cell),
                " state tensor(s) ", cell == Cell::Lstm ? "(h0, c0)" : "(h0)", ", got ", hx.size());
    TORCH_CHECK(dropout >= 0 && dropout <= 1, "dropout must lie in [0, 1], got ", dropout);
    int64_t B = 0;
    for (int64_t l = 0; l < L; ++l) {
        const OptTensor b_ih = has_biases ? OptTensor(weights[l * P + 2]) : std::nullopt;
        const OptTensor b_hh = has_biases ? OptTensor(weights[l * P + 3]) : std::nullopt;
        const Tensor& w_ih = weights[l * P];
        const Tensor& w_hh = weights[l * P + 1];
        const int64_t H = check_weights(gates_of(cell), w_ih, w_hh, b_ih, b_hh);
        if (l == 0) {
            B = check_input(x, w_ih, true, id_values).second;
        } else {
            TORCH_CHECK(w_ih.size(1) == weights[(l - 1) * P + 1].size(1), "layer ", l, "'s w_ih must take the ",
                        weights[(l - 1) * P + 1].size(1), " outputs of the layer below, got ", w_ih.sizes());
        }
        for (const Tensor& s : hx) {
            check_like(s, "hx", w_hh);
            TORCH_CHECK(s.dim() == 3 && s.size(0) == L && s.size(1) == B && s.size(2) == H, "hx must have shape [",
                        L, ", ", B, ", ", H, "] (num_layers, batch, hidden_size), got ", s.sizes());
        }
    }
    return L;
}

std::vector<Tensor> contiguous_all(const std::vector<Tensor>& ts) {
    std::vector<Tensor> out;
    for (const Tensor& t : ts) out.push_back(t.contiguous());
    return out;
}

template <class Device>
std::tuple<Tensor, std::vector<Tensor>, std::vector<Tensor>> layers_forward_op(
    const Tensor& x, at::TensorList hx, at::TensorList weights, const std::string& cell_name, bool has_biases,
    double dropout) {
    const Cell cell = cell_from(cell_name);
    const std::vector<Tensor> h = hx.vec(), w = weights.vec();
    check_stack(cell, x, h, w, has_biases, dropout);
    auto f = stack_forward<Device>(cell, x.contiguous(), contiguous_all(h), contiguous_all(w), has_biases, dropout);
    return {f.y, f.final, f.saved};
}

template <class Device>
std::tuple<Tensor, std::vector<Tensor>, std::vector<Tensor>> layers_backward_op(
    const OptTensor& grad_y, const c10::List<std::optional<Tensor>>& grad_hy, const Tensor& x, at::TensorList hx,
    at::TensorList weights, const Tensor& y, at::TensorList saved, const std::string& cell_name, bool has_biases,
    double dropout, bool input_grad, bool state_grad) {
    const Cell cell = cell_from(cell_name);
    check_stack(cell, x, hx.vec(), weights.vec(), has_biases, dropout,
                /*id_values=*/x.is_cpu());
    std::vector<OptTensor> gh;
    for (const std::optional<Tensor>& g : grad_hy) gh.push_back(contiguous(g));
    auto g = stack_backward<Device>(cell, contiguous(grad_y), gh, x.contiguous(), contiguous_all(hx.vec()),
                                    contiguous_all(weights.vec()), y.contiguous(), contiguous_all(saved.vec()),
                                    has_biases, dropout,
                                    input_grad && x.is_floating_point(), state_grad);
    return {or_empty(g.dx, weights[0]), g.dhx, g.dweights};
}

template <class Device>
std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor> lm_sgd_step_op(
    const Tensor& window, const Tensor& h, const OptTensor& c, const Tensor& w_ih, const Tensor& w_hh,
    const OptTensor& b_ih, const OptTensor& b_hh, const Tensor& w_out, const Tensor& b_out,
    const std::string& cell_name, double lr, double clip, std::optional<at::ScalarType> compute_dtype) {
    const Cell cell = cell_from(cell_name);
    check_master_weights(w_hh.scalar_type());
    const int64_t H = check_weights(gates_of(cell), w_ih, w_hh, b_ih, b_hh);
    TORCH_CHECK(window.device() == w_ih.device(), "window is on ", window.device(), " but w_ih is on ",
                w_ih.device(), ": move all inputs to one device");
    TORCH_CHECK(window.scalar_type() == at::kLong, "window must hold int64 token ids, got dtype ",
                window.scalar_type(), ": convert it with .long()");
    TORCH_CHECK(window.dim() == 2 && window.size(0) >= 2 && window.size(1) > 0,
                "window must have shape [T + 1, B] with T >= 1 and B >= 1 (inputs, then each one's "
                "next token), got ", window.sizes());
    const int64_t T = window.size(0) - 1, B = window.size(1);
    check_like(w_out, "w_out", w_hh);
    TORCH_CHECK(w_out.dim() == 2 && w_out.size(0) == H && w_out.size(1) > 0,
                "w_out must have shape [", H, ", vocabulary] (hidden_size rows), got ", w_out.sizes());
    check_like(b_out, "b_out", w_hh);
    TORCH_CHECK(b_out.dim() == 1 && b_out.size(0) == w_out.size(1), "b_out must have shape [",
                w_out.size(1), "] (w_out.size(1)), got ", b_out.sizes());
    const auto b = id_bounds({window.narrow(0, 0, T), window.narrow(0, 1, T)});
    check_id_range(b[0], b[1], "input ids window[:-1]", w_ih.size(1), "input_size = w_ih.size(1)");
    check_id_range(b[2], b[3], "target ids window[1:]", w_out.size(1), "vocabulary = w_out.size(1)");
    const bool has_c = c.has_value() && c->defined();
    TORCH_CHECK(has_c == (cell == Cell::Lstm), cell == Cell::Lstm ? "the LSTM needs a cell state c"
                : "c must be None: only the LSTM has a cell state", " (cell \"", cell_name, "\")");
    check_state(h, "h", B, H, w_hh);
    if (has_c) check_state(*c, "c", B, H, w_hh);
    TORCH_CHECK(std::isfinite(lr), "lr must be a finite number, got ", lr);
    TORCH_CHECK(!std::isnan(clip), "clip must be a number (0 or less turns clipping off), got nan");
    if (compute_dtype) check_compute_dtype(*compute_dtype, w_hh);
    auto [loss, norm, logits, state] =
        lm_sgd_step<Device>(window, has_c ? std::vector{h, *c} : std::vector{h}, cell, w_ih, w_hh, b_ih, b_hh, w_out,
                            b_out, lr, clip, compute_dtype);
    return {loss, norm, logits, state[0], has_c ? state[1] : at::empty({0}, h.options())};
}

std::string build_info() {
    std::ostringstream s;
#ifdef CHARLSTM_WITH_CUDA
    s << "{\"cuda\": true, ";
#else
    s << "{\"cuda\": false, ";
#endif
    s << "\"cuda_archs\": \"" << CHARLSTM_CUDA_ARCHS << "\", ";
    s << "\"cuda_code\": \"" << CHARLSTM_CUDA_CODE << "\", ";
#ifdef _OPENMP
    s << "\"openmp\": true, ";
#else
    s << "\"openmp\": false, ";
#endif
    s << "\"cpu_simd\": \"" << cpu::simd() << "\"}";
    return s.str();
}

// The CPU's float product layout (gemm.h): "stored" or "panels", or "auto" for the one chosen for
// this CPU; no argument leaves it. Returns the layout in effect.
std::string cpu_products_op(std::optional<std::string> mode) {
    if (mode) {
        TORCH_CHECK(*mode == "auto" || *mode == "stored" || *mode == "panels",
                    "cpu_products: mode must be 'auto', 'stored' or 'panels', got '", *mode, "'");
        set_cpu_products(*mode == "auto"     ? std::nullopt
                         : *mode == "stored" ? std::optional{CpuProducts::Stored}
                                             : std::optional{CpuProducts::Panels});
    }
    return cpu_products_name(cpu_products());
}

}  // namespace

TORCH_LIBRARY(charlstm, m) {
    m.def("lstm_forward(Tensor x, Tensor h0, Tensor c0, Tensor w_ih, Tensor w_hh, Tensor? b_ih, "
          "Tensor? b_hh) -> (Tensor y, Tensor hT, Tensor cT, Tensor gates, Tensor cs)");
    m.def("lstm_cell(Tensor x, Tensor h, Tensor c, Tensor w_ih, Tensor w_hh, Tensor? b_ih, Tensor? b_hh) "
          "-> (Tensor h1, Tensor c1, Tensor gates)");
    m.def("lstm_backward(Tensor? grad_y, Tensor? grad_hT, Tensor? grad_cT, Tensor x, Tensor h0, Tensor c0, "
          "Tensor w_ih, Tensor w_hh, Tensor y, Tensor gates, Tensor cs) -> (Tensor dx, Tensor dh0, "
          "Tensor dc0, Tensor dw_ih, Tensor dw_hh, Tensor db)");
    m.def("gru_forward(Tensor x, Tensor h0, Tensor w_ih, Tensor w_hh, Tensor? b_ih, Tensor? b_hh) "
          "-> (Tensor y, Tensor hT, Tensor save)");
    m.def("gru_cell(Tensor x, Tensor h, Tensor w_ih, Tensor w_hh, Tensor? b_ih, Tensor? b_hh) "
          "-> (Tensor h1, Tensor save)");
    m.def("gru_backward(Tensor? grad_y, Tensor? grad_hT, Tensor x, Tensor h0, Tensor w_ih, Tensor w_hh, "
          "Tensor y, Tensor save) -> (Tensor dx, Tensor dh0, Tensor dw_ih, Tensor dw_hh, Tensor db_ih, "
          "Tensor db_hh)");
    m.def("rnn_forward(Tensor x, Tensor h0, Tensor w_ih, Tensor w_hh, Tensor? b_ih, Tensor? b_hh, "
          "str nonlinearity) -> (Tensor y, Tensor hT)");
    m.def("rnn_cell(Tensor x, Tensor h, Tensor w_ih, Tensor w_hh, Tensor? b_ih, Tensor? b_hh, "
          "str nonlinearity) -> Tensor");
    m.def("rnn_backward(Tensor? grad_y, Tensor? grad_hT, Tensor x, Tensor h0, Tensor w_ih, Tensor w_hh, "
          "Tensor y, str nonlinearity) -> (Tensor dx, Tensor dh0, Tensor dw_ih, Tensor dw_hh, Tensor db)");
    // c is the LSTM's cell state; other cells pass None and get an empty cT back. (A Tensor[]
    // state would read better, but torch.compile cannot functionalize a mutating op that returns
    // a list.)
    m.def("lm_sgd_step(Tensor window, Tensor h, Tensor? c, Tensor(a!) w_ih, Tensor(b!) w_hh, Tensor(c!)? b_ih, "
          "Tensor(d!)? b_hh, Tensor(e!) w_out, Tensor(f!) b_out, str cell, float lr, float clip, "
          "ScalarType? compute_dtype=None) "
          "-> (Tensor loss, Tensor norm, Tensor logits, Tensor hT, Tensor cT)");
    // Every layer of a module: hx holds one [L, B, H] tensor per state, weights torch.nn's
    // _flat_weights; saved is what the backward needs besides y (stack.h). The backward's input_grad and
    // state_grad say which gradients are wanted; the others come back empty.
    m.def("layers_forward(Tensor x, Tensor[] hx, Tensor[] weights, str cell, bool has_biases, float dropout) "
          "-> (Tensor y, Tensor[] hy, Tensor[] saved)");
    m.def("layers_backward(Tensor? grad_y, Tensor?[] grad_hy, Tensor x, Tensor[] hx, Tensor[] weights, Tensor y, "
          "Tensor[] saved, str cell, bool has_biases, float dropout, bool input_grad, bool state_grad) "
          "-> (Tensor dx, Tensor[] dhx, Tensor[] dweights)");
    m.def("build_info() -> str", &build_info);
    m.def("cpu_products(str? mode=None) -> str", &cpu_products_op);
}

namespace {

template <class Device>
void register_kernels(torch::Library& m) {
    m.impl("lstm_forward", &lstm_forward_op<Device>);
    m.impl("lstm_cell", &lstm_cell_op<Device>);
    m.impl("lstm_backward", &lstm_backward_op<Device>);
    m.impl("gru_forward", &gru_forward_op<Device>);
    m.impl("gru_cell", &gru_cell_op<Device>);
    m.impl("gru_backward", &gru_backward_op<Device>);
    m.impl("rnn_forward", &rnn_forward_op<Device>);
    m.impl("rnn_cell", &rnn_cell_op<Device>);
    m.impl("rnn_backward", &rnn_backward_op<Device>);
    m.impl("lm_sgd_step", &lm_sgd_step_op<Device>);
    m.impl("layers_forward", &layers_forward_op<Device>);
    m.impl("layers_backward", &layers_backward_op<Device>);
}

#ifndef CHARLSTM_WITH_CUDA
const char* const kOps[] = {"lstm_forward", "lstm_cell",   "lstm_backward", "gru_forward",    "gru_cell",
                            "gru_backward", "rnn_forward", "rnn_cell",      "rnn_backward",   "lm_sgd_step",
                            "layers_forward", "layers_backward"};

// A build without CUDA kernels still answers CUDA tensors, with charlstm's own message rather
// than a missing-kernel error.
void cuda_kernels_missing(const c10::OperatorHandle& op, torch::jit::Stack*) {
    TORCH_CHECK(false, op.schema().name(), ": charlstm was built without CUDA kernels; reinstall it where "
                "torch has CUDA and nvcc is on the PATH (see `charlstm info`)");
}
#endif

}  // namespace

TORCH_LIBRARY_IMPL(charlstm, CPU, m) { register_kernels<Cpu>(m); }

TORCH_LIBRARY_IMPL(charlstm, CUDA, m) {
#ifdef CHARLSTM_WITH_CUDA
    register_kernels<Cuda>(m);
#else
    for (const char* name : kOps) {
        m.impl(name, torch::CppFunction::makeFromBoxedFunction<&cuda_kernels_missing>());
    }
#endif
}

}  // namespace charlstm

// An importable module with no Python functions: importing it runs the registrations above.
extern "C" PyObject* PyInit__C(void) {
    static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
    return PyModule_Create(&module);
}

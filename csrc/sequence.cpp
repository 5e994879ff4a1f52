// Sequence drivers: the matrix products through ATen (so CPU BLAS or cuBLAS on the current stream),
// and one pointwise step per time step from csrc/cpu or csrc/cuda.
//
// Forward: the input projection of all T steps is one product ([T*B, I] x [I, G*H]); token ids
// skip it and gather rows of w_ih^T inside the pointwise step. Each step then adds h W_hh^T.
// Backward (BPTT): one pointwise step and one [B, G*H] x [G*H, H] product per step; the weight
// gradients are one product each over all T steps, and the input-weight gradient of token ids
// is a row scatter-add, never a one-hot product. Buffers are allocated once per call.
#include "sequence.h"

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/native/CPUBlas.h>
#include <c10/core/DeviceGuard.h>

#include <algorithm>
#include <type_traits>

#include "steps.h"

#ifdef CHARLSTM_WITH_CUDA
#include <ATen/cuda/CUDAContext.h>
#endif

namespace charlstm {
namespace {

template <typename T> struct Storage { using type = T; };
template <> struct Storage<at::Half> { using type = Half; };
template <> struct Storage<at::BFloat16> { using type = BFloat16; };

template <typename T>
typename Storage<T>::type* ptr(const Tensor& t) {
    return t.defined() ? reinterpret_cast<typename Storage<T>::type*>(t.data_ptr<T>()) : nullptr;
}

template <typename T>
constexpr bool cpu_storage = std::is_same_v<T, float> || std::is_same_v<T, double>;

#ifdef CHARLSTM_WITH_CUDA
#define CHARLSTM_CUDA_STEP(fn, args) cuda::fn(args, at::cuda::getCurrentCUDAStream().stream())
#else
#define CHARLSTM_CUDA_STEP(fn, args)                                                               \
    TORCH_CHECK(false, "charlstm was built without CUDA kernels; reinstall it where torch has CUDA " \
                       "and nvcc is on the PATH (see `charlstm info`)")
#endif

// Runs one pointwise step on the device of `like`. The CPU kernels exist for float and double
// only, which ops.cpp enforces before dispatching 16-bit CPU tensors here.
#define CHARLSTM_STEP(fn, args, like)                                  \
    do {                                                               \
        if ((like).is_cuda()) {                                        \
            CHARLSTM_CUDA_STEP(fn, args);                              \
        } else {                                                       \
            if constexpr (cpu_storage<scalar_t>) {                     \
                cpu::fn(args);                                         \
            } else {                                                   \
                TORCH_CHECK(false, "charlstm's CPU kernels take float32 or float64"); \
            }                                                          \
        }                                                              \
    } while (0)

#define CHARLSTM_DISPATCH(dtype, name, ...) \
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype, name, __VA_ARGS__)

bool is_ids(const Tensor& x) { return x.scalar_type() == at::kLong; }

Tensor bias_sum(const OptTensor& a, const OptTensor& b) {
    const bool has_a = a.has_value() && a->defined(), has_b = b.has_value() && b->defined();
    if (has_a && has_b) return *a + *b;
    if (has_a) return *a;
    if (has_b) return *b;
    return Tensor();
}

Tensor defined_or_empty(const OptTensor& t) { return t.has_value() ? *t : Tensor(); }

// [T*B, G*H] = x W_ih^T + bias for float inputs, written into `out`.
void project_inputs(const Tensor& x, const Tensor& w_ih, const Tensor& bias, Tensor out) {
    const Tensor x2d = x.reshape({-1, x.size(2)});
    if (bias.defined()) {
        at::addmm_out(out, bias, x2d, w_ih.t());
    } else {
        at::mm_out(out, x2d, w_ih.t());
    }
}

// out[M, N] = a[M, K] b[K, N], or += when `accumulate`; every operand has rows of unit stride.
// Float products on the CPU run oneDNN's batch-reduce GEMM kernel (through ATen's cpublas, which
// falls back to BLAS where oneDNN lacks it), the columns split between the threads: at the
// per-step shapes here ([64, H] x [H, 4H]) it is 1.3-1.8x faster than at::mm, whose threading and
// packing of b cost as much as the product. Everything else goes to at::mm.
void product(Tensor out, const Tensor& a, const Tensor& b, bool accumulate) {
    const int64_t M = a.size(0), K = a.size(1), N = b.size(1);
    if (!out.is_cpu() || out.scalar_type() != at::kFloat || M == 0 || K == 0 || N == 0) {
        if (accumulate) {
            out.addmm_(a, b);
        } else {
            at::mm_out(out, a, b);
        }
        return;
    }
    TORCH_INTERNAL_ASSERT(a.stride(1) == 1 && b.stride(1) == 1 && out.stride(1) == 1);
    const float* pa = a.data_ptr<float>();
    const float* pb = b.data_ptr<float>();
    float* pc = out.data_ptr<float>();
    const int64_t lda = a.stride(0), ldb = b.stride(0), ldc = out.stride(0);
    // Column blocks of 16 (one AVX-512 register), as few per thread as the thread count allows;
    // products below ~64k multiply-adds stay on one thread, where a fork costs more than it saves.
    const int64_t blocks = (N + 15) / 16;
    const int64_t threads = M * N * K < (1 << 16) ? 1 : std::min<int64_t>(at::get_num_threads(), blocks);
    const int64_t per = (blocks + threads - 1) / threads * 16;
    at::parallel_for(0, threads, 1, [&](int64_t begin, int64_t end) {
        for (int64_t i = begin; i < end; ++i) {
            const int64_t n0 = i * per, n = std::min(N, n0 + per) - n0;
            if (n > 0) {
                at::native::cpublas::brgemm(M, n, K, lda, ldb, ldc, accumulate, pa, pb + n0, pc + n0);
            }
        }
        at::native::cpublas::brgemm_release(false);
    });
}

// A new contiguous tensor holding the 2-D `w` transposed (never a view of `w`, which a plain
// .t().contiguous() returns when one side has length 1). On the CPU a tiled copy split between the threads:
// ATen's transpose copy runs on one thread and took ~150 us for a 1024 x 256 weight, longer than
// one step's product.
Tensor transposed(const Tensor& w) {
    if (!w.is_cpu() || w.numel() == 0) {
        return w.t().clone(at::MemoryFormat::Contiguous);
    }
    const Tensor src = w.contiguous();
    const int64_t R = src.size(0), C = src.size(1);
    Tensor out = at::empty({C, R}, src.options());
    AT_DISPATCH_FLOATING_TYPES(src.scalar_type(), "transposed", [&] {
        const scalar_t* in = src.data_ptr<scalar_t>();
        scalar_t* o = out.data_ptr<scalar_t>();
        constexpr int64_t tile = 32;
        // Tiles of 32 x 32 stay in L1 while one side is read and the other written.
        at::parallel_for(0, (R + tile - 1) / tile, std::max<int64_t>(1, 16384 / (tile * C)),
                         [&](int64_t b0, int64_t b1) {
            for (int64_t rb = b0 * tile; rb < std::min(R, b1 * tile); rb += tile) {
                const int64_t r1 = std::min(R, rb + tile);
                for (int64_t cb = 0; cb < C; cb += tile) {
                    const int64_t c1 = std::min(C, cb + tile);
                    for (int64_t c = cb; c < c1; ++c) {
                        for (int64_t r = rb; r < r1; ++r) {
                            o[c * R + r] = in[r * C + c];
                        }
                    }
                }
            }
        });
    });
    return out;
}

// w_ih^T with a bias folded in: row v is the input projection of token v. `transposed` always
// returns a new tensor, so adding the bias in place never writes into the weights.
Tensor gather_table(const Tensor& w_ih, const Tensor& bias) {
    Tensor table = transposed(w_ih);
    return bias.defined() ? table.add_(bias) : table;
}

// [T*B, H]: the hidden state each step started from (h0, y[0], ..., y[T-2]).
Tensor previous_states(const Tensor& h0, const Tensor& y) {
    const int64_t T = y.size(0);
    return at::cat({h0.unsqueeze(0), y.narrow(0, 0, T - 1)}).reshape({-1, y.size(2)});
}

// dL/dW_ih and dL/dx from the pre-activation gradients dpre [T*B, G*H].
std::tuple<Tensor, Tensor> input_grads(const Tensor& dpre, const Tensor& x, const Tensor& w_ih) {
    if (is_ids(x)) {
        Tensor dtable = at::zeros({w_ih.size(1), w_ih.size(0)}, w_ih.options());
        dtable.index_add_(0, x.reshape({-1}), dpre);
        return {transposed(dtable), at::empty({0}, w_ih.options())};
    }
    const Tensor x2d = x.reshape({-1, x.size(2)});
    return {dpre.t().mm(x2d), dpre.mm(w_ih).view(x.sizes())};
}

Tensor initial_grad(const OptTensor& g, const Tensor& like) {
    return g.has_value() && g->defined() ? g->contiguous().clone() : at::zeros_like(like);
}

const Tensor* step_grad(const OptTensor& grad_y) {
    return grad_y.has_value() && grad_y->defined() ? &*grad_y : nullptr;
}

}  // namespace

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor> lstm_forward(
    const Tensor& x, const Tensor& h0, const Tensor& c0, const Tensor& w_ih, const Tensor& w_hh,
    const OptTensor& b_ih, const OptTensor& b_hh) {
    // Kernels launch on the current device's stream: make it the device of the tensors.
    const c10::DeviceGuard guard(w_hh.device());
    const int64_t T = x.size(0), B = x.size(1), H = w_hh.size(1);
    const auto opts = w_hh.options();
    Tensor y = at::empty({T, B, H}, opts), cs = at::empty({T, B, H}, opts);
    Tensor gates = at::empty({T, B, 4 * H}, opts);
    const Tensor bias = bias_sum(b_ih, b_hh);
    const bool ids = is_ids(x);
    Tensor table;
    if (ids) {
        table = gather_table(w_ih, bias);
    } else {
        project_inputs(x, w_ih, bias, gates.view({T * B, 4 * H}));
    }
    const Tensor w_hh_t = transposed(w_hh);
    CHARLSTM_DISPATCH(w_hh.scalar_type(), "lstm_forward", [&] {
        for (int64_t t = 0; t < T; ++t) {
            const Tensor h_prev = t == 0 ? h0 : y[t - 1];
            const Tensor c_prev = t == 0 ? c0 : cs[t - 1];
            const Tensor g = gates[t];
            product(g, h_prev, w_hh_t, !ids);
            LstmForwardStep<typename Storage<scalar_t>::type> a{
                ptr<scalar_t>(g), ids ? x[t].data_ptr<int64_t>() : nullptr, ptr<scalar_t>(table),
                ptr<scalar_t>(c_prev), ptr<scalar_t>(cs[t]), ptr<scalar_t>(y[t]), B, H};
            CHARLSTM_STEP(lstm_forward_step, a, x);
        }
    });
    return {y, y[T - 1].clone(), cs[T - 1].clone(), gates, cs};
}

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor> lstm_backward(
    const OptTensor& grad_y, const OptTensor& grad_hT, const OptTensor& grad_cT, const Tensor& x,
    const Tensor& h0, const Tensor& c0, const Tensor& w_ih, const Tensor& w_hh, const Tensor& y,
    const Tensor& gates, const Tensor& cs) {
    // Kernels launch on the current device's stream: make it the device of the tensors.
    const c10::DeviceGuard guard(w_hh.device());
    const int64_t T = y.size(0), B = y.size(1), H = y.size(2);
    Tensor dgates = at::empty({T, B, 4 * H}, gates.options());
    Tensor dh = initial_grad(grad_hT, h0), dc = initial_grad(grad_cT, c0);
    const Tensor* gy = step_grad(grad_y);
    const Tensor w_hh_c = w_hh.contiguous();
    CHARLSTM_DISPATCH(w_hh.scalar_type(), "lstm_backward", [&] {
        for (int64_t t = T - 1; t >= 0; --t) {
            const Tensor dg = dgates[t];
            LstmBackwardStep<typename Storage<scalar_t>::type> a{
                ptr<scalar_t>(gates[t]), ptr<scalar_t>(t == 0 ? c0 : cs[t - 1]), ptr<scalar_t>(cs[t]),
                gy ? ptr<scalar_t>((*gy)[t]) : nullptr, ptr<scalar_t>(dh), ptr<scalar_t>(dc),
                ptr<scalar_t>(dg), B, H};
            CHARLSTM_STEP(lstm_backward_step, a, y);
            product(dh, dg, w_hh_c, false);
        }
    });
    const Tensor dpre = dgates.view({T * B, 4 * H});
    auto [dw_ih, dx] = input_grads(dpre, x, w_ih);
    return {dx, dh, dc, dw_ih, dpre.t().mm(previous_states(h0, y)), dpre.sum(0)};
}

std::tuple<Tensor, Tensor, Tensor> gru_forward(
    const Tensor& x, const Tensor& h0, const Tensor& w_ih, const Tensor& w_hh,
    const OptTensor& b_ih, const OptTensor& b_hh) {
    // Kernels launch on the current device's stream: make it the device of the tensors.
    const c10::DeviceGuard guard(w_hh.device());
    const int64_t T = x.size(0), B = x.size(1), H = w_hh.size(1);
    const auto opts = w_hh.options();
    Tensor y = at::empty({T, B, H}, opts), save = at::empty({T, B, 4 * H}, opts);
    Tensor hproj = at::empty({B, 3 * H}, opts);
    const Tensor bias_ih = defined_or_empty(b_ih), bias_hh = defined_or_empty(b_hh);
    const bool ids = is_ids(x);
    Tensor table, xproj;
    if (ids) {
        table = gather_table(w_ih, bias_ih);
    } else {
        xproj = at::empty({T, B, 3 * H}, opts);
        project_inputs(x, w_ih, bias_ih, xproj.view({T * B, 3 * H}));
    }
    const Tensor w_hh_t = transposed(w_hh);
    CHARLSTM_DISPATCH(w_hh.scalar_type(), "gru_forward", [&] {
        for (int64_t t = 0; t < T; ++t) {
            const Tensor h_prev = t == 0 ? h0 : y[t - 1];
            if (bias_hh.defined()) {
                hproj.copy_(bias_hh.expand_as(hproj));
            }
            product(hproj, h_prev, w_hh_t, bias_hh.defined());
            GruForwardStep<typename Storage<scalar_t>::type> a{
                ids ? nullptr : ptr<scalar_t>(xproj[t]), ids ? x[t].data_ptr<int64_t>() : nullptr,
                ptr<scalar_t>(table), ptr<scalar_t>(hproj), ptr<scalar_t>(h_prev), ptr<scalar_t>(save[t]),
                ptr<scalar_t>(y[t]), B, H};
            CHARLSTM_STEP(gru_forward_step, a, x);
        }
    });
    return {y, y[T - 1].clone(), save};
}

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor> gru_backward(
    const OptTensor& grad_y, const OptTensor& grad_hT, const Tensor& x, const Tensor& h0,
    const Tensor& w_ih, const Tensor& w_hh, const Tensor& y, const Tensor& save) {
    // Kernels launch on the current device's stream: make it the device of the tensors.
    const c10::DeviceGuard guard(w_hh.device());
    const int64_t T = y.size(0), B = y.size(1), H = y.size(2);
    Tensor dxproj = at::empty({T, B, 3 * H}, save.options());
    Tensor dhproj = at::empty({T, B, 3 * H}, save.options());
    Tensor dh = initial_grad(grad_hT, h0);
    const Tensor* gy = step_grad(grad_y);
    const Tensor w_hh_c = w_hh.contiguous();
    CHARLSTM_DISPATCH(w_hh.scalar_type(), "gru_backward", [&] {
        for (int64_t t = T - 1; t >= 0; --t) {
            const Tensor dhp = dhproj[t];
            GruBackwardStep<typename Storage<scalar_t>::type> a{
                ptr<scalar_t>(save[t]), ptr<scalar_t>(t == 0 ? h0 : y[t - 1]),
                gy ? ptr<scalar_t>((*gy)[t]) : nullptr, ptr<scalar_t>(dh), ptr<scalar_t>(dxproj[t]),
                ptr<scalar_t>(dhp), B, H};
            CHARLSTM_STEP(gru_backward_step, a, y);
            product(dh, dhp, w_hh_c, true);
        }
    });
    const Tensor dx2d = dxproj.view({T * B, 3 * H}), dh2d = dhproj.view({T * B, 3 * H});
    auto [dw_ih, dx] = input_grads(dx2d, x, w_ih);
    return {dx, dh, dw_ih, dh2d.t().mm(previous_states(h0, y)), dx2d.sum(0), dh2d.sum(0)};
}

std::tuple<Tensor, Tensor> rnn_forward(
    const Tensor& x, const Tensor& h0, const Tensor& w_ih, const Tensor& w_hh,
    const OptTensor& b_ih, const OptTensor& b_hh, bool relu) {
    // Kernels launch on the current device's stream: make it the device of the tensors.
    const c10::DeviceGuard guard(w_hh.device());
    const int64_t T = x.size(0), B = x.size(1), H = w_hh.size(1);
    Tensor y = at::empty({T, B, H}, w_hh.options());
    const Tensor bias = bias_sum(b_ih, b_hh);
    const bool ids = is_ids(x);
    Tensor table;
    if (ids) {
        table = gather_table(w_ih, bias);
    } else {
        project_inputs(x, w_ih, bias, y.view({T * B, H}));
    }
    const Tensor w_hh_t = transposed(w_hh);
    CHARLSTM_DISPATCH(w_hh.scalar_type(), "rnn_forward", [&] {
        for (int64_t t = 0; t < T; ++t) {
            const Tensor h_prev = t == 0 ? h0 : y[t - 1];
            const Tensor h = y[t];
            product(h, h_prev, w_hh_t, !ids);
            RnnForwardStep<typename Storage<scalar_t>::type> a{
                ptr<scalar_t>(h), ids ? x[t].data_ptr<int64_t>() : nullptr, ptr<scalar_t>(table), relu, B, H};
            CHARLSTM_STEP(rnn_forward_step, a, x);
        }
    });
    return {y, y[T - 1].clone()};
}

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor> rnn_backward(
    const OptTensor& grad_y, const OptTensor& grad_hT, const Tensor& x, const Tensor& h0,
    const Tensor& w_ih, const Tensor& w_hh, const Tensor& y, bool relu) {
    // Kernels launch on the current device's stream: make it the device of the tensors.
    const c10::DeviceGuard guard(w_hh.device());
    const int64_t T = y.size(0), B = y.size(1), H = y.size(2);
    Tensor dpre = at::empty({T, B, H}, y.options());
    Tensor dh = initial_grad(grad_hT, h0);
    const Tensor* gy = step_grad(grad_y);
    const Tensor w_hh_c = w_hh.contiguous();
    CHARLSTM_DISPATCH(w_hh.scalar_type(), "rnn_backward", [&] {
        for (int64_t t = T - 1; t >= 0; --t) {
            const Tensor d = dpre[t];
            RnnBackwardStep<typename Storage<scalar_t>::type> a{
                ptr<scalar_t>(y[t]), gy ? ptr<scalar_t>((*gy)[t]) : nullptr, ptr<scalar_t>(dh),
                ptr<scalar_t>(d), relu, B, H};
            CHARLSTM_STEP(rnn_backward_step, a, y);
            product(dh, d, w_hh_c, false);
        }
    });
    const Tensor d2d = dpre.view({T * B, H});
    auto [dw_ih, dx] = input_grads(d2d, x, w_ih);
    return {dx, dh, dw_ih, d2d.t().mm(previous_states(h0, y)), d2d.sum(0)};
}

}  // namespace charlstm

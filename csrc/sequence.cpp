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

// Float CPU tensors take charlstm's own product, transpose and loops (brgemm, see product());
// everything else goes through ATen.
bool brgemm_path(const Tensor& t) { return t.is_cpu() && t.scalar_type() == at::kFloat; }

// `rows` consecutive rows of a contiguous tensor whose last dimension is the row, starting at row
// `first` of its flattened view. The drivers name each step's [B, N] block this way: the CPU path
// needs only its address, and making a tensor (select) for every operand of every step cost about
// a microsecond each, ~100 per training step.
struct Rows {
    const Tensor& base;
    int64_t first, rows;

    int64_t cols() const { return base.size(-1); }
    Tensor view() const { return base.view({-1, cols()}).narrow(0, first, rows); }
    template <typename T> T* data() const { return base.data_ptr<T>() + first * cols(); }
};

Rows all_rows(const Tensor& t) { return {t, 0, t.numel() / std::max<int64_t>(t.size(-1), 1)}; }

// out[M, N] = a[M, K] b[K, N], or += when `accumulate`.
// Float products on the CPU run oneDNN's batch-reduce GEMM kernel (through ATen's cpublas, which
// falls back to BLAS where oneDNN lacks it), the columns split between the threads: at the
// per-step shapes here ([64, H] x [H, 4H]) it is 1.3-1.8x faster than at::mm, whose threading and
// packing of b cost as much as the product. Everything else goes to at::mm.
void product(const Rows& out, const Rows& a, const Tensor& b, bool accumulate) {
    const int64_t M = a.rows, K = a.cols(), N = b.size(1);
    if (!brgemm_path(b) || !b.is_contiguous() || M == 0 || K == 0 || N == 0) {
        Tensor o = out.view();
        if (accumulate) {
            o.addmm_(a.view(), b);
        } else {
            at::mm_out(o, a.view(), b);
        }
        return;
    }
    const float* pa = a.data<float>();
    const float* pb = b.data_ptr<float>();
    float* pc = out.data<float>();
    const int64_t lda = K, ldb = N, ldc = N;
    // Column blocks of 16 (one AVX-512 register), as few per thread as the thread count allows;
    // a product too narrow for two blocks per thread (the classifier's 27 columns) splits its rows
    // instead. Products below ~64k multiply-adds stay on one thread, where a fork costs more than
    // it saves.
    const int64_t blocks = (N + 15) / 16;
    const int64_t wanted = M * N * K < (1 << 16) ? 1 : at::get_num_threads();
    if (wanted > 1 && blocks < 2 * wanted && M >= 16 * wanted) {
        at::parallel_for(0, wanted, 1, [&](int64_t begin, int64_t end) {
            for (int64_t i = begin; i < end; ++i) {
                const int64_t m0 = M * i / wanted, m1 = M * (i + 1) / wanted;
                at::native::cpublas::brgemm(m1 - m0, N, K, lda, ldb, ldc, accumulate, pa + m0 * lda, pb,
                                            pc + m0 * ldc);
            }
            at::native::cpublas::brgemm_release(false);
        });
        return;
    }
    const int64_t threads = std::min<int64_t>(wanted, blocks);
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

// Batch rows are independent sequences. On the CPU, in float, with at least 16 rows per thread,
// each thread can take its slice of the rows through every time step alone: its product and its
// pointwise step touch only its rows, so the threads never wait for each other between steps and
// each slice's gates stay in its own core's cache (with the columns of one product split between
// threads and the rows of the pointwise step, half of every step's data crossed between cores).
// But then every thread reads all of w_hh each step: that pays while w_hh stays in a core's
// cache, up to 256 KB (an LSTM of 128 units). Measured as the minimum of alternating runs of the
// LSTM ops at (T, B) = (10, 64): H=64 forward 218 -> 202 us and backward 341 -> 322 us, H=128
// 586 -> 573 and 975 -> 937 us, but H=256 1.96 -> 2.27 ms and 3.73 -> 4.66 ms.
// Returns the number of slices, or 0 for the per-step path (other devices and dtypes, larger
// weights, small batches such as the batch-1 validation pass).
int64_t row_slices(const Tensor& w_hh, int64_t B) {
    const int64_t threads = at::get_num_threads();
    const bool cached = w_hh.numel() * static_cast<int64_t>(sizeof(float)) <= 256 * 1024;
    return brgemm_path(w_hh) && cached && threads > 1 && B >= 16 * threads ? threads : 0;
}

// Runs body(b0, b1) on each of `slices` contiguous slices of B rows, one slice per thread.
template <typename F>
void for_row_slices(int64_t B, int64_t slices, const F& body) {
    at::parallel_for(0, slices, 1, [&](int64_t s0, int64_t s1) {
        for (int64_t s = s0; s < s1; ++s) body(B * s / slices, B * (s + 1) / slices);
        at::native::cpublas::brgemm_release(false);
    });
}

// Rows [b0, b1) of out [B, N] = (or += when `accumulate`) the same rows of a [B, K] times the
// contiguous b [K, N], on the calling thread. Float only, as row_slices allows.
template <typename T>
void rows_product(T* out, const T* a, const Tensor& b, int64_t b0, int64_t b1, bool accumulate) {
    if constexpr (std::is_same_v<T, float>) {
        const int64_t K = b.size(0), N = b.size(1);
        at::native::cpublas::brgemm(b1 - b0, N, K, K, N, N, accumulate, a + b0 * K, b.data_ptr<float>(),
                                    out + b0 * N);
    } else {
        TORCH_INTERNAL_ASSERT(false, "row slices run float only");
    }
}

// Rows [b0, b1) of one pointwise step, on the calling thread. Float only, as row_slices allows.
template <template <typename> class Args, typename S>
void step_rows(const Args<S>& a, int64_t b0, int64_t b1) {
    if constexpr (std::is_same_v<S, float>) {
        cpu::step_rows(a, b0, b1);
    } else {
        TORCH_INTERNAL_ASSERT(false, "row slices run float only");
    }
}

// The forward time loop of one row slice: each step's recurrent product into `pre` ([T, B, width],
// over the gathered or projected input when `accumulate`), then the pointwise step args(t).
template <typename T, typename ArgsFn>
void forward_rows(int64_t steps, int64_t B, int64_t H, int64_t width, T* pre, const T* h0, const T* y,
                  const Tensor& w_hh_t, bool accumulate, const ArgsFn& args, int64_t b0, int64_t b1) {
    for (int64_t t = 0; t < steps; ++t) {
        rows_product(pre + t * B * width, t == 0 ? h0 : y + (t - 1) * B * H, w_hh_t, b0, b1, accumulate);
        step_rows(args(t), b0, b1);
    }
}

// The backward time loop of one row slice: the pointwise step args(t), which writes `dpre`
// ([T, B, width]), then dh = (or += when `accumulate`) that step's dpre times w_hh, except after
// the first step when `initial_grad` is false (that product only makes dh0).
template <typename T, typename ArgsFn>
void backward_rows(int64_t steps, int64_t B, int64_t width, T* dh, const T* dpre, const Tensor& w_hh,
                   bool accumulate, bool initial_grad, const ArgsFn& args, int64_t b0, int64_t b1) {
    for (int64_t t = steps - 1; t >= 0; --t) {
        step_rows(args(t), b0, b1);
        if (t > 0 || initial_grad) rows_product(dh, dpre + t * B * width, w_hh, b0, b1, accumulate);
    }
}

// o[c * ldo + r] = in[r * C + c] for the row-major [R, C] `in`: its transpose written into rows of
// length ldo, which may hold other columns too. Strips of 16 rows go to the threads, so that each
// 64-byte piece of an output row has one writer.
template <typename scalar_t>
void transpose_into(const scalar_t* in, int64_t R, int64_t C, scalar_t* o, int64_t ldo) {
    constexpr int64_t strip = 16;
    const int64_t grain = std::max<int64_t>(1, 16384 / (strip * C));
    at::parallel_for(0, (R + strip - 1) / strip, grain, [&](int64_t s0, int64_t s1) {
        cpu::transpose_rows(in, C, o, ldo, s0 * strip, std::min(R, s1 * strip));
    });
}

// w_hh^T, the right operand of the forward's per-step products, for T * B = `rows` rows in all. A
// contiguous copy, which brgemm needs, pays for itself over many rows; for a handful (sampling one
// character at a time) the transposed view goes to at::mm, which reads it in place: copying a
// 1024 x 256 weight cost more than that step's product.
Tensor recurrent_operand(const Tensor& w_hh, int64_t rows) { return rows < 8 ? w_hh.t() : transposed(w_hh); }

// w_ih^T with a bias folded in: row v is the input projection of token v. `transposed` always
// returns a new tensor, so adding the bias in place never writes into the weights.
Tensor gather_table(const Tensor& w_ih, const Tensor& bias) {
    Tensor table = transposed(w_ih);
    return bias.defined() ? table.add_(bias) : table;
}

// dpre^T x: the weight gradient [G*H, K] of a layer whose pre-activation gradients are dpre
// [N, G*H] for inputs x [N, K], summed over all N rows in one product; its transpose [K, G*H] when
// `transposed_out`. On the CPU, in float, it is computed transposed (x^T dpre: row-major operands
// for brgemm): at N = 640, K = 256, G*H = 1024 that took ~1.5 ms against ~1.8 ms for at::mm on
// the transposed view, and ~0.1 ms more to transpose it back.
Tensor weight_grad(const Tensor& dpre, const Tensor& x, bool transposed_out) {
    if (!brgemm_path(dpre)) {
        return transposed_out ? x.t().mm(dpre) : dpre.t().mm(x);
    }
    const Tensor grad_t = linear(transposed(x), dpre, Tensor());
    return transposed_out ? grad_t : transposed(grad_t);
}

// [T*B, H]: the hidden state each step started from (h0, y[0], ..., y[T-2]).
Tensor previous_states(const Tensor& h0, const Tensor& y) {
    const int64_t T = y.size(0);
    return at::cat({h0.unsqueeze(0), y.narrow(0, 0, T - 1)}).reshape({-1, y.size(2)});
}

// The recurrent weight's gradient dpre^T prev, prev = previous_states(h0, y), or its transpose
// when `transposed_out`. On the CPU, in float, prev^T [H, T*B] is written directly from h0 and y
// (no concatenated copy) and the product runs transposed, as in weight_grad.
Tensor recurrent_weight_grad(const Tensor& dpre, const Tensor& h0, const Tensor& y, bool transposed_out) {
    if (!brgemm_path(dpre)) {
        const Tensor prev = previous_states(h0, y);
        return transposed_out ? prev.t().mm(dpre) : dpre.t().mm(prev);
    }
    const int64_t T = y.size(0), B = y.size(1), H = y.size(2);
    Tensor prev_t = at::empty({H, T * B}, y.options());
    float* o = prev_t.data_ptr<float>();
    transpose_into(h0.data_ptr<float>(), B, H, o, T * B);
    if (T > 1) transpose_into(y.data_ptr<float>(), (T - 1) * B, H, o + B, T * B);
    const Tensor grad_t = linear(prev_t, dpre, Tensor());
    return transposed_out ? grad_t : transposed(grad_t);
}

// dL/dW_ih (transposed, [I, G*H], when `transposed_out`), dL/dx and the column sums of dpre (the
// bias gradient) from the pre-activation gradients dpre [T*B, G*H].
std::tuple<Tensor, Tensor, Tensor> input_grads(const Tensor& dpre, const Tensor& x, const Tensor& w_ih,
                                               bool transposed_out) {
    if (is_ids(x)) {
        Tensor dtable = at::zeros({w_ih.size(1), w_ih.size(0)}, w_ih.options()), dbias;
        if (dpre.is_cpu()) {
            // One pass over dpre: each thread adds its band of columns of every row into the
            // table (index_add_ sorted the ids first), then sums the table's columns, which are
            // dpre's (a sum over the vocabulary instead of a second pass over T*B rows).
            const Tensor d = dpre.contiguous();
            dbias = at::empty({d.size(1)}, w_ih.options());
            AT_DISPATCH_FLOATING_TYPES(d.scalar_type(), "input_grads", [&] {
                cpu::scatter_add(ScatterAdd<scalar_t>{d.data_ptr<scalar_t>(), x.data_ptr<int64_t>(),
                                                      dtable.data_ptr<scalar_t>(), dbias.data_ptr<scalar_t>(),
                                                      d.size(0), dtable.size(0), d.size(1)});
            });
        } else {
            dtable.index_add_(0, x.reshape({-1}), dpre);
            dbias = dpre.sum(0);
        }
        return {transposed_out ? dtable : transposed(dtable), at::empty({0}, w_ih.options()), dbias};
    }
    const Tensor x2d = x.reshape({-1, x.size(2)});
    return {weight_grad(dpre, x2d, transposed_out), dpre.mm(w_ih).view(x.sizes()), dpre.sum(0)};
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
    const Tensor w_hh_t = recurrent_operand(w_hh, T * B);
    CHARLSTM_DISPATCH(w_hh.scalar_type(), "lstm_forward", [&] {
        const auto g = ptr<scalar_t>(gates), yp = ptr<scalar_t>(y), c = ptr<scalar_t>(cs);
        const auto args = [&](int64_t t) {
            return LstmForwardStep<typename Storage<scalar_t>::type>{
                g + t * B * 4 * H, ids ? x.data_ptr<int64_t>() + t * B : nullptr, ptr<scalar_t>(table),
                t == 0 ? ptr<scalar_t>(c0) : c + (t - 1) * B * H, c + t * B * H, yp + t * B * H, B, H};
        };
        if (const int64_t slices = row_slices(w_hh, B)) {
            for_row_slices(B, slices, [&](int64_t b0, int64_t b1) {
                forward_rows(T, B, H, 4 * H, g, ptr<scalar_t>(h0), yp, w_hh_t, !ids, args, b0, b1);
            });
            return;
        }
        for (int64_t t = 0; t < T; ++t) {
            product(Rows{gates, t * B, B}, t == 0 ? Rows{h0, 0, B} : Rows{y, (t - 1) * B, B}, w_hh_t, !ids);
            CHARLSTM_STEP(lstm_forward_step, args(t), x);
        }
    });
    return {y, y[T - 1].clone(), cs[T - 1].clone(), gates, cs};
}

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor> lstm_backward(
    const OptTensor& grad_y, const OptTensor& grad_hT, const OptTensor& grad_cT, const Tensor& x,
    const Tensor& h0, const Tensor& c0, const Tensor& w_ih, const Tensor& w_hh, const Tensor& y,
    const Tensor& gates, const Tensor& cs, const BackwardOptions& options) {
    // Kernels launch on the current device's stream: make it the device of the tensors.
    const c10::DeviceGuard guard(w_hh.device());
    const bool initial = options.initial_state_grad;
    const int64_t T = y.size(0), B = y.size(1), H = y.size(2);
    Tensor dgates = at::empty({T, B, 4 * H}, gates.options());
    Tensor dh = initial_grad(grad_hT, h0), dc = initial_grad(grad_cT, c0);
    const Tensor* gy = step_grad(grad_y);
    const Tensor w_hh_c = w_hh.contiguous();
    CHARLSTM_DISPATCH(w_hh.scalar_type(), "lstm_backward", [&] {
        const auto g = ptr<scalar_t>(gates), c = ptr<scalar_t>(cs), dg = ptr<scalar_t>(dgates);
        const auto dy = gy ? ptr<scalar_t>(*gy) : nullptr;
        const auto args = [&](int64_t t) {
            return LstmBackwardStep<typename Storage<scalar_t>::type>{
                g + t * B * 4 * H, t == 0 ? ptr<scalar_t>(c0) : c + (t - 1) * B * H, c + t * B * H,
                dy ? dy + t * B * H : nullptr, ptr<scalar_t>(dh), ptr<scalar_t>(dc), dg + t * B * 4 * H, B, H};
        };
        if (const int64_t slices = row_slices(w_hh, B)) {
            for_row_slices(B, slices, [&](int64_t b0, int64_t b1) {
                backward_rows(T, B, 4 * H, ptr<scalar_t>(dh), dg, w_hh_c, false, initial, args, b0, b1);
            });
            return;
        }
        for (int64_t t = T - 1; t >= 0; --t) {
            CHARLSTM_STEP(lstm_backward_step, args(t), y);
            if (t > 0 || initial) product(all_rows(dh), Rows{dgates, t * B, B}, w_hh_c, false);
        }
    });
    const Tensor dpre = dgates.view({T * B, 4 * H});
    const bool wt = options.transposed_weight_grads;
    auto [dw_ih, dx, db] = input_grads(dpre, x, w_ih, wt);
    return {dx, initial ? dh : Tensor(), initial ? dc : Tensor(), dw_ih, recurrent_weight_grad(dpre, h0, y, wt),
            db};
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
    const Tensor w_hh_t = recurrent_operand(w_hh, T * B);
    CHARLSTM_DISPATCH(w_hh.scalar_type(), "gru_forward", [&] {
        const auto yp = ptr<scalar_t>(y), sp = ptr<scalar_t>(save), xp = ptr<scalar_t>(xproj);
        const auto hp = ptr<scalar_t>(hproj);
        const auto args = [&](int64_t t) {
            return GruForwardStep<typename Storage<scalar_t>::type>{
                ids ? nullptr : xp + t * B * 3 * H, ids ? x.data_ptr<int64_t>() + t * B : nullptr,
                ptr<scalar_t>(table), hp, t == 0 ? ptr<scalar_t>(h0) : yp + (t - 1) * B * H,
                sp + t * B * 4 * H, yp + t * B * H, B, H};
        };
        if (const int64_t slices = row_slices(w_hh, B)) {
            const auto bias = ptr<scalar_t>(bias_hh);
            for_row_slices(B, slices, [&](int64_t b0, int64_t b1) {
                for (int64_t t = 0; t < T; ++t) {
                    if (bias != nullptr) {
                        for (int64_t b = b0; b < b1; ++b) std::copy(bias, bias + 3 * H, hp + b * 3 * H);
                    }
                    rows_product(hp, t == 0 ? ptr<scalar_t>(h0) : yp + (t - 1) * B * H, w_hh_t, b0, b1,
                                 bias != nullptr);
                    step_rows(args(t), b0, b1);
                }
            });
            return;
        }
        for (int64_t t = 0; t < T; ++t) {
            if (bias_hh.defined()) {
                hproj.copy_(bias_hh.expand_as(hproj));
            }
            product(all_rows(hproj), t == 0 ? Rows{h0, 0, B} : Rows{y, (t - 1) * B, B}, w_hh_t, bias_hh.defined());
            CHARLSTM_STEP(gru_forward_step, args(t), x);
        }
    });
    return {y, y[T - 1].clone(), save};
}

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor> gru_backward(
    const OptTensor& grad_y, const OptTensor& grad_hT, const Tensor& x, const Tensor& h0,
    const Tensor& w_ih, const Tensor& w_hh, const Tensor& y, const Tensor& save,
    const BackwardOptions& options) {
    // Kernels launch on the current device's stream: make it the device of the tensors.
    const c10::DeviceGuard guard(w_hh.device());
    const bool initial = options.initial_state_grad;
    const int64_t T = y.size(0), B = y.size(1), H = y.size(2);
    Tensor dxproj = at::empty({T, B, 3 * H}, save.options());
    Tensor dhproj = at::empty({T, B, 3 * H}, save.options());
    Tensor dh = initial_grad(grad_hT, h0);
    const Tensor* gy = step_grad(grad_y);
    const Tensor w_hh_c = w_hh.contiguous();
    CHARLSTM_DISPATCH(w_hh.scalar_type(), "gru_backward", [&] {
        const auto sp = ptr<scalar_t>(save), yp = ptr<scalar_t>(y), dxp = ptr<scalar_t>(dxproj);
        const auto dhp = ptr<scalar_t>(dhproj), dy = gy ? ptr<scalar_t>(*gy) : nullptr;
        const auto args = [&](int64_t t) {
            return GruBackwardStep<typename Storage<scalar_t>::type>{
                sp + t * B * 4 * H, t == 0 ? ptr<scalar_t>(h0) : yp + (t - 1) * B * H,
                dy ? dy + t * B * H : nullptr, ptr<scalar_t>(dh), dxp + t * B * 3 * H, dhp + t * B * 3 * H, B, H};
        };
        if (const int64_t slices = row_slices(w_hh, B)) {
            for_row_slices(B, slices, [&](int64_t b0, int64_t b1) {
                backward_rows(T, B, 3 * H, ptr<scalar_t>(dh), dhp, w_hh_c, true, initial, args, b0, b1);
            });
            return;
        }
        for (int64_t t = T - 1; t >= 0; --t) {
            CHARLSTM_STEP(gru_backward_step, args(t), y);
            if (t > 0 || initial) product(all_rows(dh), Rows{dhproj, t * B, B}, w_hh_c, true);
        }
    });
    const Tensor dx2d = dxproj.view({T * B, 3 * H}), dh2d = dhproj.view({T * B, 3 * H});
    const bool wt = options.transposed_weight_grads;
    auto [dw_ih, dx, db_ih] = input_grads(dx2d, x, w_ih, wt);
    return {dx, initial ? dh : Tensor(), dw_ih, recurrent_weight_grad(dh2d, h0, y, wt), db_ih, dh2d.sum(0)};
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
    const Tensor w_hh_t = recurrent_operand(w_hh, T * B);
    CHARLSTM_DISPATCH(w_hh.scalar_type(), "rnn_forward", [&] {
        const auto yp = ptr<scalar_t>(y);
        const auto args = [&](int64_t t) {
            return RnnForwardStep<typename Storage<scalar_t>::type>{
                yp + t * B * H, ids ? x.data_ptr<int64_t>() + t * B : nullptr, ptr<scalar_t>(table), relu, B, H};
        };
        if (const int64_t slices = row_slices(w_hh, B)) {
            for_row_slices(B, slices, [&](int64_t b0, int64_t b1) {
                forward_rows(T, B, H, H, yp, ptr<scalar_t>(h0), yp, w_hh_t, !ids, args, b0, b1);
            });
            return;
        }
        for (int64_t t = 0; t < T; ++t) {
            product(Rows{y, t * B, B}, t == 0 ? Rows{h0, 0, B} : Rows{y, (t - 1) * B, B}, w_hh_t, !ids);
            CHARLSTM_STEP(rnn_forward_step, args(t), x);
        }
    });
    return {y, y[T - 1].clone()};
}

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor> rnn_backward(
    const OptTensor& grad_y, const OptTensor& grad_hT, const Tensor& x, const Tensor& h0,
    const Tensor& w_ih, const Tensor& w_hh, const Tensor& y, bool relu, const BackwardOptions& options) {
    // Kernels launch on the current device's stream: make it the device of the tensors.
    const c10::DeviceGuard guard(w_hh.device());
    const bool initial = options.initial_state_grad;
    const int64_t T = y.size(0), B = y.size(1), H = y.size(2);
    Tensor dpre = at::empty({T, B, H}, y.options());
    Tensor dh = initial_grad(grad_hT, h0);
    const Tensor* gy = step_grad(grad_y);
    const Tensor w_hh_c = w_hh.contiguous();
    CHARLSTM_DISPATCH(w_hh.scalar_type(), "rnn_backward", [&] {
        const auto yp = ptr<scalar_t>(y), dp = ptr<scalar_t>(dpre), dy = gy ? ptr<scalar_t>(*gy) : nullptr;
        const auto args = [&](int64_t t) {
            return RnnBackwardStep<typename Storage<scalar_t>::type>{
                yp + t * B * H, dy ? dy + t * B * H : nullptr, ptr<scalar_t>(dh), dp + t * B * H, relu, B, H};
        };
        if (const int64_t slices = row_slices(w_hh, B)) {
            for_row_slices(B, slices, [&](int64_t b0, int64_t b1) {
                backward_rows(T, B, H, ptr<scalar_t>(dh), dp, w_hh_c, false, initial, args, b0, b1);
            });
            return;
        }
        for (int64_t t = T - 1; t >= 0; --t) {
            CHARLSTM_STEP(rnn_backward_step, args(t), y);
            if (t > 0 || initial) product(all_rows(dh), Rows{dpre, t * B, B}, w_hh_c, false);
        }
    });
    const Tensor d2d = dpre.view({T * B, H});
    const bool wt = options.transposed_weight_grads;
    auto [dw_ih, dx, db] = input_grads(d2d, x, w_ih, wt);
    return {dx, initial ? dh : Tensor(), dw_ih, recurrent_weight_grad(d2d, h0, y, wt), db};
}

Tensor linear(const Tensor& x, const Tensor& w, const Tensor& bias) {
    const Tensor xc = x.contiguous(), wc = w.contiguous();
    if (!brgemm_path(wc)) {
        return bias.defined() ? at::addmm(bias, xc, wc) : at::mm(xc, wc);
    }
    Tensor out = bias.defined() ? bias.expand({xc.size(0), wc.size(1)}).contiguous()
                                : at::empty({xc.size(0), wc.size(1)}, wc.options());
    product(all_rows(out), all_rows(xc), wc, bias.defined());
    return out;
}

// A new contiguous tensor holding the 2-D `w` transposed (never a view of `w`, which a plain
// .t().contiguous() returns when one side has length 1). On the CPU a blocked copy split between
// the threads: ATen's transpose copy runs on one thread and took ~150 us for a 1024 x 256 weight,
// longer than one step's product.
Tensor transposed(const Tensor& w) {
    if (!w.is_cpu() || w.numel() == 0) {
        return w.t().clone(at::MemoryFormat::Contiguous);
    }
    const Tensor src = w.contiguous();
    const int64_t R = src.size(0), C = src.size(1);
    Tensor out = at::empty({C, R}, src.options());
    AT_DISPATCH_FLOATING_TYPES(src.scalar_type(), "transposed", [&] {
        transpose_into(src.data_ptr<scalar_t>(), R, C, out.data_ptr<scalar_t>(), R);
    });
    return out;
}

}  // namespace charlstm

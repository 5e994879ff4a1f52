// Sequence drivers: one forward and one backward time loop, each a template over the cell (the
// traits below say what a cell's steps read and write) and the device (device.h). The matrix
// products go through gemm.h, the pointwise steps to csrc/cpu or csrc/cuda.
//
// Forward: the input projection of all T steps is one product ([T*B, I] x [I, G*H]); token ids
// skip it and gather rows of w_ih^T inside the pointwise step. Each step then adds h W_hh^T.
// Backward (BPTT): one pointwise step and one [B, G*H] x [G*H, H] product per step; the weight
// gradients are one product each over all T steps, and the input-weight gradient of token ids
// is a row scatter-add, never a one-hot product. Buffers are allocated once per call.
#include "sequence.h"

#include <ATen/Parallel.h>
#include <c10/core/DeviceGuard.h>

#include <algorithm>
#include <type_traits>
#include <vector>

#include "cpu/loops.h"
#include "device.h"
#include "gemm.h"
#include "steps.h"

namespace charlstm {
namespace {

bool is_ids(const Tensor& x) { return x.scalar_type() == at::kLong; }

Tensor bias_sum(const OptTensor& a, const OptTensor& b) {
    const bool has_a = a.has_value() && a->defined(), has_b = b.has_value() && b->defined();
    if (has_a && has_b) return *a + *b;
    if (has_a) return *a;
    if (has_b) return *b;
    return Tensor();
}

Tensor defined_or_empty(const OptTensor& t) { return t.has_value() ? *t : Tensor(); }

// ---- what the forward and backward passes of a cell read and write ----

// A forward pass's tensors; a cell leaves those it does not use undefined.
struct ForwardTensors {
    int64_t T, B, H;
    Tensor ids;    // int64 [T, B] for token-id input
    Tensor table;  // [V, G*H]: w_ih^T plus the input bias, gathered for token ids
    Tensor pre;    // [T, B, G*H]: the projected input, plus h W_hh^T where the cell adds it there
    Tensor hproj;  // [B, G*H]: h W_hh^T + b_hh of the current step, for a cell that keeps it apart
    Tensor y, h0, c0;
    Tensor saved;  // LSTM: cell states [T, B, H]; GRU: r z n hn [T, B, 4H]
};

// A backward pass's tensors; a cell leaves those it does not use undefined.
struct BackwardTensors {
    int64_t T, B, H;
    Tensor y, h0, c0;
    Tensor gates;      // LSTM: the forward's gate activations [T, B, 4H]
    Tensor saved;      // LSTM: cell states; GRU: r z n hn
    Tensor grad_y;     // [T, B, H] or undefined
    Tensor dh, dc;     // [B, H]: gradients flowing back through the state
    Tensor dpre;       // [T, B, G*H]: gradients of the input-side pre-activations
    Tensor dpre_h;     // [T, B, G*H]: of the recurrent side (the same tensor unless the cell keeps
                       // that side apart)
};

template <typename T> T* rows_at(const Tensor& t, int64_t row) {
    return t.defined() ? t.data_ptr<T>() + row * t.size(-1) : nullptr;
}

// A cell's traits: G gates; `separate_recurrent` when h W_hh^T + b_hh is kept apart from the
// projected input (the GRU's candidate multiplies it by r), which also makes the state gradient
// accumulate the recurrent product instead of being overwritten by it; the buffers it saves; and
// its step arguments at time t. Pointers are to the storage type S of the ATen type scalar_t.
struct LstmCell {
    static constexpr int64_t gates = 4;
    static constexpr bool separate_recurrent = false;
    static constexpr bool pre_is_output = false;

    Tensor saved(int64_t T, int64_t B, int64_t H, const at::TensorOptions& o) const {
        return at::empty({T, B, H}, o);
    }

    template <typename scalar_t>
    auto forward_step(const ForwardTensors& f, int64_t t) const {
        using S = typename Storage<scalar_t>::type;
        const int64_t B = f.B, H = f.H;
        const auto c = ptr<scalar_t>(f.saved);
        return LstmForwardStep<S>{ptr<scalar_t>(f.pre) + t * B * 4 * H, rows_at<int64_t>(f.ids, t),
                                  ptr<scalar_t>(f.table), t == 0 ? ptr<scalar_t>(f.c0) : c + (t - 1) * B * H,
                                  c + t * B * H, ptr<scalar_t>(f.y) + t * B * H, B, H};
    }

    template <typename scalar_t>
    auto backward_step(const BackwardTensors& b, int64_t t) const {
        using S = typename Storage<scalar_t>::type;
        const int64_t B = b.B, H = b.H;
        const auto c = ptr<scalar_t>(b.saved);
        const auto dy = ptr<scalar_t>(b.grad_y);
        return LstmBackwardStep<S>{ptr<scalar_t>(b.gates) + t * B * 4 * H,
                                   t == 0 ? ptr<scalar_t>(b.c0) : c + (t - 1) * B * H, c + t * B * H,
                                   dy ? dy + t * B * H : nullptr, ptr<scalar_t>(b.dh), ptr<scalar_t>(b.dc),
                                   ptr<scalar_t>(b.dpre) + t * B * 4 * H, B, H};
    }
};

struct GruCell {
    static constexpr int64_t gates = 3;
    static constexpr bool separate_recurrent = true;
    static constexpr bool pre_is_output = false;

    Tensor saved(int64_t T, int64_t B, int64_t H, const at::TensorOptions& o) const {
        return at::empty({T, B, 4 * H}, o);
    }

    template <typename scalar_t>
    auto forward_step(const ForwardTensors& f, int64_t t) const {
        using S = typename Storage<scalar_t>::type;
        const int64_t B = f.B, H = f.H;
        const auto y = ptr<scalar_t>(f.y);
        const auto pre = ptr<scalar_t>(f.pre);
        return GruForwardStep<S>{pre ? pre + t * B * 3 * H : nullptr, rows_at<int64_t>(f.ids, t),
                                 ptr<scalar_t>(f.table), ptr<scalar_t>(f.hproj),
                                 t == 0 ? ptr<scalar_t>(f.h0) : y + (t - 1) * B * H,
                                 ptr<scalar_t>(f.saved) + t * B * 4 * H, y + t * B * H, B, H};
    }

    template <typename scalar_t>
    auto backward_step(const BackwardTensors& b, int64_t t) const {
        using S = typename Storage<scalar_t>::type;
        const int64_t B = b.B, H = b.H;
        const auto y = ptr<scalar_t>(b.y);
        const auto dy = ptr<scalar_t>(b.grad_y);
        return GruBackwardStep<S>{ptr<scalar_t>(b.saved) + t * B * 4 * H,
                                  t == 0 ? ptr<scalar_t>(b.h0) : y + (t - 1) * B * H,
                                  dy ? dy + t * B * H : nullptr, ptr<scalar_t>(b.dh),
                                  ptr<scalar_t>(b.dpre) + t * B * 3 * H, ptr<scalar_t>(b.dpre_h) + t * B * 3 * H,
                                  B, H};
    }
};

struct RnnCell {
    static constexpr int64_t gates = 1;
    static constexpr bool separate_recurrent = false;
    // The pre-activations are computed in y and activated in place: the backward needs only y.
    static constexpr bool pre_is_output = true;
    bool relu;

    Tensor saved(int64_t, int64_t, int64_t, const at::TensorOptions&) const { return Tensor(); }

    template <typename scalar_t>
    auto forward_step(const ForwardTensors& f, int64_t t) const {
        using S = typename Storage<scalar_t>::type;
        return RnnForwardStep<S>{ptr<scalar_t>(f.y) + t * f.B * f.H, rows_at<int64_t>(f.ids, t),
                                 ptr<scalar_t>(f.table), relu, f.B, f.H};
    }

    template <typename scalar_t>
    auto backward_step(const BackwardTensors& b, int64_t t) const {
        using S = typename Storage<scalar_t>::type;
        const int64_t B = b.B, H = b.H;
        const auto dy = ptr<scalar_t>(b.grad_y);
        return RnnBackwardStep<S>{ptr<scalar_t>(b.y) + t * B * H, dy ? dy + t * B * H : nullptr,
                                  ptr<scalar_t>(b.dh), ptr<scalar_t>(b.dpre) + t * B * H, relu, B, H};
    }
};

// ---- scheduling ----

// Batch rows are independent sequences. On the CPU, in float, with at least 8 rows per thread,
// each thread can take its slice of the rows through every time step alone: its product and its
// pointwise step touch only its rows, so the threads never wait for each other between steps and
// each slice's gates stay in its own core's cache (with the columns of one product split between
// threads and the rows of the pointwise step, half of every step's data crossed between cores).
// But then every thread reads all of w_hh each step: that pays while w_hh stays in a core's
// cache, up to 256 KB (an LSTM of 128 units). Measured as the minimum of alternating runs of the
// LSTM ops at (T, B) = (10, 64): H=64 forward 218 -> 202 us and backward 341 -> 322 us, H=128
// 586 -> 573 and 975 -> 937 us, but H=256 1.96 -> 2.27 ms and 3.73 -> 4.66 ms. Eight rows per
// thread are enough: for a whole training step of an LSTM at B=16 on 2 threads (H = 64 and 128,
// T = 10 to 200, one or two layers, float or id input: 32 cells), slicing raised the speed ratio
// to torch.nn.LSTM, timed in the same runs, in every cell: by a median 1.17x (1.01x to 1.37x).
// Returns the number of slices, or 0 for the per-step schedule (other devices and dtypes, larger
// weights, small batches such as the batch-1 validation pass).
template <class Device>
int64_t row_slices(const Tensor& w_hh, int64_t B) {
    if constexpr (!std::is_same_v<Device, Cpu>) {
        return 0;
    } else {
        const int64_t threads = at::get_num_threads();
        return brgemm_path(w_hh) && weight_bytes(w_hh) <= 256 * 1024 && threads > 1 && B >= 8 * threads ? threads : 0;
    }
}

// Whether a layer starts from an all-zero state, as every layer does for hx = None. Its first
// step's recurrent product h0 W_hh^T is then zero and is skipped, and so are h0's rows of the
// recurrent weight gradient: 1/T of both products, about 6% of a step's products at T = 10. Skipped,
// a non-finite W_hh leaves the first step finite (0 * inf is NaN in the product); torch.nn's is NaN
// there, and from the second step on both are. On the CPU only: on CUDA the test would wait for
// the stream.
template <class Device>
bool zero_state(const Tensor& h0) {
    if constexpr (!std::is_same_v<Device, Cpu>) {
        return false;
    } else {
        const Tensor h = h0.contiguous();
        bool zero = true;
        AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, h.scalar_type(), "zero_state", [&] {
            const scalar_t* p = h.data_ptr<scalar_t>();
            zero = std::all_of(p, p + h.numel(), [](scalar_t v) { return v == scalar_t(0); });
        });
        return zero;
    }
}

// Runs body(t, b0, b1, whole) for t over the steps in order (backward: from the last): with
// `slices`, each thread takes its own slice [b0, b1) of the batch through every step (whole =
// false: the body computes on the calling thread); otherwise each step covers the whole batch and
// its kernels split the work between the threads themselves (whole = true).
template <class Body>
void time_loop(int64_t T, int64_t B, int64_t slices, bool backward, const Body& body) {
    const auto steps = [&](int64_t b0, int64_t b1, bool whole) {
        for (int64_t k = 0; k < T; ++k) body(backward ? T - 1 - k : k, b0, b1, whole);
    };
    if (slices == 0) {
        steps(0, B, true);
        return;
    }
    at::parallel_for(0, slices, 1, [&](int64_t s0, int64_t s1) {
        for (int64_t s = s0; s < s1; ++s) steps(B * s / slices, B * (s + 1) / slices, false);
    });
}

// ---- operands and weight gradients ----

// The float matrix x [N, I] with a column of ones after its last: [N, I + 1], copied a row at a
// time. at::cat along the columns was slower on the 2-core AMD EPYC build machine: an RNN layer of
// 64 units over [10, 64, 64] input, forward and backward, the two copies alternating in one
// process, 0.776 ms with at::cat and 0.757 with this; an LSTM's 2.009 and 1.991.
Tensor with_ones_column(const Tensor& x) {
    const Tensor xs = x.contiguous();
    const int64_t N = xs.size(0), I = xs.size(1);
    Tensor out = at::empty({N, I + 1}, xs.options());
    const float* in = xs.data_ptr<float>();
    float* o = out.data_ptr<float>();
    at::parallel_for(0, N, std::max<int64_t>(1, 32768 / (I + 1)), [&](int64_t r0, int64_t r1) {
        for (int64_t r = r0; r < r1; ++r) {
            std::copy_n(in + r * I, I, o + r * (I + 1));
            o[r * (I + 1) + I] = 1.f;
        }
    });
    return out;
}

// [T*B, G*H] = x W_ih^T + bias for float inputs, written into `out`. With brgemm, x gets a column
// of ones and W_ih^T the bias as its last row, so that one product adds the bias: a separate pass
// writing it into `out` first (what addmm does) cost as much as a third of the product at I = 64.
void project_inputs(const Tensor& x, const Tensor& w_ih, const Tensor& bias, Tensor out, bool brgemm) {
    const Tensor x2d = x.reshape({-1, x.size(2)});
    if (!brgemm) {
        if (bias.defined()) {
            at::addmm_out(out, bias, x2d, w_ih.t());
        } else {
            at::mm_out(out, x2d, w_ih.t());
        }
        return;
    }
    const int64_t I = x2d.size(1), GH = w_ih.size(0), extra = bias.defined() ? 1 : 0;
    Tensor w_t = at::empty({I + extra, GH}, w_ih.options());
    const Tensor w = w_ih.contiguous();
    transpose_into(w.data_ptr<float>(), GH, I, w_t.data_ptr<float>(), GH);
    if (!extra) {
        product(all_rows(out), all_rows(x2d.contiguous()), w_t, false);
        return;
    }
    const Tensor b = bias.contiguous();
    std::copy_n(b.data_ptr<float>(), GH, w_t.data_ptr<float>() + I * GH);
    product(all_rows(out), all_rows(with_ones_column(x2d)), w_t, false);
}

// The most batch rows for which the forward streams such a weight where it would be packed in
// panels (below).
constexpr int64_t kStreamedRowsWithPanels = 64;

// Whether the forward's per-step products read w_hh in stored order (a `streamed` Operand) rather
// than as brgemm's right operand, a transposed copy. Measured on the 2-core AMD EPYC build machine:
// - At batch 1, as dot products over its rows, where w_hh is over 512 KB and so streams from L3
//   every step. Medians of alternating runs of the LSTM op: the forward took 0.80x the time at
//   H = 256 (w_hh 1 MB), 0.79x at H = 512 and 0.52x at H = 1024, but 1.32x at H = 128 (256 KB),
//   where brgemm's register tiles win.
// - For larger batches, as brgemm's left operand, where w_hh is 8 MB or more. A char-rnn training
//   step (Adam), alternating with the transposed copy in one process, took 0.88x the time at
//   (B, H, T) = (16, 1024, 10), 0.95x at (64, 1024, 10) and 0.96x at (128, 1024, 10), and a GRU's
//   0.94x at (64, 1024, 10); with an LSTM of 512 units (4 MB) 0.98x to 1.02x, with 256 (1 MB) up
//   to 1.08x.
// - Not where the weight is packed in panels (CpuProducts::Panels) and the batch is over 64 rows:
//   there each step's transposed rows [H, B] take over 256 KB at H = 1024, half of a core's L2 on
//   the Zen 3 (AVX2) machine, while each panel is read once a step. The LSTM op's forward against
//   torch.nn's, streamed and from panels in alternating runs: (B, H, T) = (128, 1024, 10) 0.92x and
//   0.95x against 1.09x and 1.06x, (128, 1024, 50) 0.89x against 1.01x, (96, 1024, 10) 0.86x
//   against 0.98x; but (64, 1024, 10) 1.04x and 0.98x against 0.97x and 0.92x, (16, 1024, 50)
//   1.82x against 1.28x.
bool streamed_forward(const Tensor& w_hh, int64_t B) {
    if (!brgemm_path(w_hh)) return false;
    if (B == 1) return weight_bytes(w_hh) > 512 * 1024;
    if (cpu_products() == CpuProducts::Panels && B > kStreamedRowsWithPanels) return false;
    return weight_bytes(w_hh) >= kFarBeyondCache;
}

// w_hh^T, the right operand of the forward's per-step products [B, H] x [H, G*H]. Streamed, each
// step reads w_hh itself, with no copy. Otherwise a contiguous copy, which brgemm needs, pays for
// itself over many rows; for a handful (T * B < 8) the transposed view goes to at::mm, which reads
// it in place: copying a 1024 x 256 weight cost more than that step's product.
Operand recurrent_operand(const Tensor& w_hh, int64_t T, int64_t B) {
    if (streamed_forward(w_hh, B)) return Operand::streamed_rows(w_hh.t(), w_hh.contiguous());
    return T * B < 8 ? Operand(w_hh.t()) : Operand::per_step(w_hh.t(), B);
}

// w_ih^T with a bias folded in: row v is the input projection of token v. `transposed` always
// returns a new tensor, so adding the bias in place never writes into the weights.
Tensor gather_table(const Tensor& w_ih, const Tensor& bias) {
    Tensor table = transposed(w_ih);
    return bias.defined() ? table.add_(bias) : table;
}

// A weight gradient and, when asked for, the column sums of the pre-activation gradients (the
// bias gradient).
struct WeightGrad {
    Tensor weight, bias;
};

// a_t^T dpre with a_t [K, N] on the brgemm path: the weight gradient [K, G*H], transposed. With
// `bias`, a_t's storage has one more row, which this fills with ones, so that the product's last
// row is the bias gradient: dpre's column sums come with the product instead of another pass.
WeightGrad transposed_grad(Tensor a_t, const Tensor& dpre, bool bias) {
    const int64_t K = a_t.size(0) - (bias ? 1 : 0);
    if (bias) a_t[K].fill_(1);
    const Tensor grad_t = linear(a_t, dpre, Tensor());
    return {grad_t.narrow(0, 0, K), bias ? grad_t[K].clone() : Tensor()};
}

// dpre^T a for dpre [N, G*H] and a contiguous [N, K] on the brgemm path, in the weight's own layout
// [G*H, K], with dpre's transpose as the row-major left operand. For N < K that transpose moves
// less than transposing a [K, G*H] product back would, and the result is the one buffer: at
// H = 1024 that saves a second 16 MB allocation per weight, whose pages glibc returns to the
// system and faults in again step after step. A char-rnn training step (LSTM, Adam), alternating
// with the transposed form in one process, took 0.94x the time at (B, H, T) = (1, 1024, 10),
// 0.95x at (16, 1024, 10), 0.96x at (1, 512, 50) and 0.99x at (1, 1024, 200).
Tensor grad_in_layout(const Tensor& dpre, const Tensor& a) {
    const Tensor d = dpre.contiguous();
    const int64_t N = d.size(0), GH = d.size(1);
    Tensor dpre_t = at::empty({GH, N}, d.options());
    transpose_into(d.data_ptr<float>(), N, GH, dpre_t.data_ptr<float>(), N);
    Tensor out = at::empty({GH, a.size(1)}, dpre.options());
    product(all_rows(out), all_rows(dpre_t), a, false);
    return out;
}

// dpre^T x: the weight gradient [G*H, K] of a layer whose pre-activation gradients are dpre
// [N, G*H] for inputs x [N, K], summed over all N rows in one product; its transpose [K, G*H] when
// `transposed_out`. With brgemm it is computed transposed (x^T dpre: row-major operands): at
// N = 640, K = 256, G*H = 1024 that took ~1.5 ms against ~1.8 ms for at::mm on the transposed
// view, and ~0.1 ms more to transpose it back. Over fewer rows than inputs (N < K) it is computed
// in its own layout instead (grad_in_layout).
WeightGrad weight_grad(const Tensor& dpre, const Tensor& x, bool transposed_out, bool bias, bool brgemm) {
    if (!brgemm) {
        return {transposed_out ? x.t().mm(dpre) : dpre.t().mm(x), bias ? dpre.sum(0) : Tensor()};
    }
    const int64_t N = x.size(0), K = x.size(1);
    const Tensor xc = x.contiguous();
    if (!transposed_out && N < K) return {grad_in_layout(dpre, xc), bias ? dpre.sum(0) : Tensor()};
    Tensor x_t = at::empty({K + (bias ? 1 : 0), N}, x.options());
    transpose_into(xc.data_ptr<float>(), N, K, x_t.data_ptr<float>(), N);
    WeightGrad g = transposed_grad(x_t, dpre, bias);
    if (!transposed_out) g.weight = transposed(g.weight);
    return g;
}

// The recurrent weight's gradient dpre^T prev, with prev [T*B, H] the hidden state each step
// started from (h0, y[0], ..., y[T-2]), or its transpose when `transposed_out`, and the column
// sums of dpre. With brgemm, prev^T [H, T*B] is written directly from h0 and y (no concatenated
// copy) and the product runs transposed, as in weight_grad; over fewer rows than units
// (T*B < H), prev is concatenated and the gradient computed in its own layout (grad_in_layout).
WeightGrad recurrent_weight_grad(const Tensor& dpre, const Tensor& h0, const Tensor& y, bool transposed_out,
                                 bool brgemm, bool from_zero) {
    const int64_t T = y.size(0), B = y.size(1), H = y.size(2);
    if (from_zero) {
        // h0's rows add nothing to the weight gradient (zero_state); the bias gradient still sums
        // every step's rows.
        if (T == 1) {
            const int64_t GH = dpre.size(1);
            return {at::zeros(transposed_out ? std::vector<int64_t>{H, GH} : std::vector<int64_t>{GH, H}, y.options()),
                    dpre.sum(0)};
        }
        WeightGrad g = weight_grad(dpre.narrow(0, B, (T - 1) * B), y.narrow(0, 0, T - 1).reshape({-1, H}),
                                   transposed_out, true, brgemm);
        g.bias.add_(dpre.narrow(0, 0, B).sum(0));
        return g;
    }
    const auto previous = [&] { return at::cat({h0.unsqueeze(0), y.narrow(0, 0, T - 1)}).reshape({-1, H}); };
    if (!brgemm) {
        const Tensor prev = previous();
        return {transposed_out ? prev.t().mm(dpre) : dpre.t().mm(prev), dpre.sum(0)};
    }
    if (!transposed_out && T * B < H) return {grad_in_layout(dpre, previous()), dpre.sum(0)};
    Tensor prev_t = at::empty({H + 1, T * B}, y.options());
    float* o = prev_t.data_ptr<float>();
    transpose_into(h0.data_ptr<float>(), B, H, o, T * B);
    if (T > 1) transpose_into(y.data_ptr<float>(), (T - 1) * B, H, o + B, T * B);
    WeightGrad g = transposed_grad(prev_t, dpre, true);
    if (!transposed_out) g.weight = transposed(g.weight);
    return g;
}

// The input-weight gradient of token ids into dtable [V, G*H] (zeros on entry) and, with `bias`,
// the column sums of dpre. On the CPU one pass over dpre: each thread adds its band of columns of
// every row into the table (index_add_ sorted the ids first), then sums the table's columns,
// which are dpre's (a sum over the vocabulary instead of a second pass over T*B rows).
Tensor id_gradient(Cpu, const Tensor& dpre, const Tensor& ids, Tensor& dtable, bool bias) {
    const Tensor d = dpre.contiguous();
    Tensor dbias = bias ? at::empty({d.size(1)}, dtable.options()) : Tensor();
    AT_DISPATCH_FLOATING_TYPES(d.scalar_type(), "id_gradient", [&] {
        cpu::scatter_add(cpu::RowScatterAdd<scalar_t>{d.data_ptr<scalar_t>(), ids.data_ptr<int64_t>(),
                                                      dtable.data_ptr<scalar_t>(),
                                                      bias ? dbias.data_ptr<scalar_t>() : nullptr, d.size(0),
                                                      dtable.size(0), d.size(1)});
    });
    return dbias;
}

#ifdef CHARLSTM_WITH_CUDA
// index_add_ adds each row with atomics, T*B/V rows per table row (about 240 at T = 100, B = 64,
// V = 27): 16-bit tables accumulate in float32 and are rounded once. The order of the atomics,
// and so the last bits of the sums, varies between runs unless
// torch.use_deterministic_algorithms(True) is set, under which index_add_ sorts the ids instead.
Tensor id_gradient(Cuda, const Tensor& dpre, const Tensor& ids, Tensor& dtable, bool bias) {
    const bool narrow = dtable.scalar_type() == at::kHalf || dtable.scalar_type() == at::kBFloat16;
    if (!narrow) {
        dtable.index_add_(0, ids.reshape({-1}), dpre);
    } else {
        dtable = at::zeros(dtable.sizes(), dtable.options().dtype(at::kFloat))
                     .index_add_(0, ids.reshape({-1}), dpre.to(at::kFloat))
                     .to(dtable.scalar_type());
    }
    // A reduction, which ATen accumulates in float32 for 16-bit types.
    return bias ? dpre.sum(0) : Tensor();
}
#endif

// dL/dW_ih (transposed, [I, G*H], when `transposed_out`), dL/dx (when `input_grad`) and, with
// `bias`, the column sums of dpre, from the pre-activation gradients dpre [T*B, G*H].
template <class Device>
std::tuple<Tensor, Tensor, Tensor> input_grads(const Tensor& dpre, const Tensor& x, const Tensor& w_ih,
                                               bool transposed_out, bool input_grad, bool bias,
                                               bool brgemm) {
    if (is_ids(x)) {
        Tensor dtable = at::zeros({w_ih.size(1), w_ih.size(0)}, w_ih.options());
        const Tensor dbias = id_gradient(Device{}, dpre, x, dtable, bias);
        return {transposed_out ? dtable : transposed(dtable), Tensor(), dbias};
    }
    const Tensor x2d = x.reshape({-1, x.size(2)});
    Tensor dx;
    if (input_grad && brgemm) {
        // dpre w_ih, with w_ih [G*H, I] itself as the row-major right operand.
        dx = at::empty(x.sizes(), dpre.options());
        product(all_rows(dx), all_rows(dpre), w_ih.contiguous(), false);
    } else if (input_grad) {
        dx = dpre.mm(w_ih).view(x.sizes());
    }
    WeightGrad g = weight_grad(dpre, x2d, transposed_out, bias, brgemm);
    return {g.weight, dx, g.bias};
}

Tensor initial_grad(const OptTensor& g, const Tensor& like) {
    return g.has_value() && g->defined() ? g->contiguous().clone() : at::zeros_like(like);
}

// ---- the two drivers ----

template <class Device, class Cell>
ForwardTensors forward(const Cell& cell, const Tensor& x, const Tensor& h0, const Tensor& c0, const Tensor& w_ih,
                       const Tensor& w_hh, const OptTensor& b_ih, const OptTensor& b_hh) {
    // Kernels launch on the current device's stream: make it the device of the tensors.
    const c10::DeviceGuard guard(w_hh.device());
    constexpr int64_t G = Cell::gates;
    const int64_t T = x.size(0), B = x.size(1), H = w_hh.size(1);
    const auto opts = w_hh.options();
    ForwardTensors f{T, B, H};
    f.h0 = h0, f.c0 = c0;
    f.y = at::empty({T, B, H}, opts);
    f.saved = cell.saved(T, B, H, opts);
    const bool ids = is_ids(x);
    const Tensor input_bias = Cell::separate_recurrent ? defined_or_empty(b_ih) : bias_sum(b_ih, b_hh);
    const Tensor recurrent_bias = Cell::separate_recurrent ? defined_or_empty(b_hh) : Tensor();
    if (Cell::pre_is_output) {
        f.pre = f.y;
    } else if (!(ids && Cell::separate_recurrent)) {
        f.pre = at::empty({T, B, G * H}, opts);
    }
    if (ids) {
        f.ids = x;
        f.table = gather_table(w_ih, input_bias);
    } else {
        project_inputs(x, w_ih, input_bias, f.pre.view({T * B, G * H}), window_brgemm(w_hh, T * B));
    }
    if (Cell::separate_recurrent) f.hproj = at::empty({B, G * H}, opts);
    const bool from_zero = zero_state<Device>(h0);
    // A single step from a zero state has no recurrent product: the weight is not copied or packed.
    const Operand w_hh_t = from_zero && T == 1 ? Operand(w_hh.t()) : recurrent_operand(w_hh, T, B);
    dispatch(Device{}, w_hh.scalar_type(), [&](auto tag) {
        using scalar_t = typename decltype(tag)::type;
        time_loop(T, B, row_slices<Device>(w_hh, B), false, [&](int64_t t, int64_t b0, int64_t b1, bool whole) {
            const int64_t n = b1 - b0;
            const Rows prev = t == 0 ? Rows{h0, b0, n} : Rows{f.y, (t - 1) * B + b0, n};
            if (t == 0 && from_zero) {
                // No product: what it would have written is b_hh alone, or nothing to add to the
                // projected input, or zeros where token ids are gathered in the step.
                if (Cell::separate_recurrent) {
                    Tensor rows = f.hproj.narrow(0, b0, n);
                    if (recurrent_bias.defined()) {
                        rows.copy_(recurrent_bias.expand_as(rows));
                    } else {
                        rows.zero_();
                    }
                } else if (ids) {
                    f.pre.view({T * B, G * H}).narrow(0, b0, n).zero_();
                }
            } else if (Cell::separate_recurrent) {
                const bool bias = recurrent_bias.defined();
                if (bias && whole && !brgemm_path(w_hh_t.b)) {
                    // One op with b_hh as the product's addend (cuBLASLt adds it in its epilogue)
                    // rather than a copy of b_hh into hproj and a product onto it, two launches a
                    // step on CUDA.
                    at::addmm_out(f.hproj, recurrent_bias, prev.view(), w_hh_t.b);
                } else {
                    if (bias && whole) {
                        f.hproj.copy_(recurrent_bias.expand_as(f.hproj));
                    } else if (bias) {
                        const auto src = recurrent_bias.data_ptr<scalar_t>();
                        auto dst = f.hproj.data_ptr<scalar_t>();
                        for (int64_t b = b0; b < b1; ++b) std::copy(src, src + G * H, dst + b * G * H);
                    }
                    product(Rows{f.hproj, b0, n}, prev, w_hh_t, bias, !whole);
                }
            } else {
                // Over the projected input, or written afresh where token ids are gathered in the step.
                product(Rows{f.pre, t * B + b0, n}, prev, w_hh_t, !ids, !whole);
            }
            run_step(Device{}, cell.template forward_step<scalar_t>(f, t), b0, b1, whole);
        });
    });
    return f;
}

struct BackwardResult {
    Tensor dx, dh0, dc0, dw_ih, dw_hh, db_ih, db_hh;
};

template <class Device, class Cell>
BackwardResult backward(const Cell& cell, const OptTensor& grad_y, const OptTensor& grad_hT,
                        const OptTensor& grad_cT, const Tensor& x, const Tensor& h0, const Tensor& c0,
                        const Tensor& w_ih, const Tensor& w_hh, const Tensor& y, const Tensor& gates,
                        const Tensor& saved, const BackwardOptions& options) {
    // Kernels launch on the current device's stream: make it the device of the tensors.
    const c10::DeviceGuard guard(w_hh.device());
    constexpr int64_t G = Cell::gates;
    const bool initial = options.initial_state_grad;
    const int64_t T = y.size(0), B = y.size(1), H = y.size(2);
    BackwardTensors b{T, B, H};
    b.y = y, b.h0 = h0, b.c0 = c0, b.gates = gates, b.saved = saved;
    if (grad_y.has_value() && grad_y->defined()) b.grad_y = *grad_y;
    b.dh = initial_grad(grad_hT, h0);
    if (c0.defined()) b.dc = initial_grad(grad_cT, c0);
    b.dpre = at::empty({T, B, G * H}, y.options());
    b.dpre_h = Cell::separate_recurrent ? at::empty({T, B, G * H}, y.options()) : b.dpre;
    // The right operand of the per-step products dpre_h w_hh, [1, G*H] x [G*H, H] at batch 1.
    // Streamed, each step sums the rows of w_hh weighted by dpre_h, with no transposed copy. That
    // pays later than in the forward: brgemm splits the columns, so each thread's share of w_hh
    // stays in its own core's cache longer. Medians of alternating runs of the LSTM op's backward
    // at batch 1, streamed against brgemm: 0.71x the time at H = 1024 (16 MB) and T = 200, 0.91x
    // at T = 50, 1.03x at T = 10; GRU at H = 1024 (12 MB), T = 50: 0.70x; but LSTM at H = 512
    // (4 MB) 1.14x at T = 100 and 1.06x at T = 10.
    const Operand w_hh_c = B == 1 && brgemm_path(w_hh) && weight_bytes(w_hh) >= kFarBeyondCache
                               ? Operand::streamed_rows(w_hh.contiguous())
                               : Operand::per_step(w_hh, B);
    dispatch(Device{}, w_hh.scalar_type(), [&](auto tag) {
        using scalar_t = typename decltype(tag)::type;
        time_loop(T, B, row_slices<Device>(w_hh, B), true, [&](int64_t t, int64_t b0, int64_t b1, bool whole) {
            run_step(Device{}, cell.template backward_step<scalar_t>(b, t), b0, b1, whole);
            // The state's gradient through W_hh; at t = 0 it only makes dh0.
            if (t > 0 || initial) {
                product(Rows{b.dh, b0, b1 - b0}, Rows{b.dpre_h, t * B + b0, b1 - b0}, w_hh_c,
                        Cell::separate_recurrent, !whole);
            }
        });
    });
    const bool wt = options.transposed_weight_grads;
    const bool brgemm = window_brgemm(w_hh, T * B);
    const Tensor dpre = b.dpre.view({T * B, G * H}), dpre_h = b.dpre_h.view({T * B, G * H});
    BackwardResult r;
    // The recurrent product brings the recurrent side's bias gradient, which for a cell that adds
    // both biases to the same pre-activations is also the input side's.
    std::tie(r.dw_ih, r.dx, r.db_ih) =
        input_grads<Device>(dpre, x, w_ih, wt, options.input_grad, Cell::separate_recurrent, brgemm);
    std::tie(r.dw_hh, r.db_hh) = [&] {
        WeightGrad g = recurrent_weight_grad(dpre_h, h0, y, wt, brgemm, zero_state<Device>(h0));
        return std::pair{g.weight, g.bias};
    }();
    if (!Cell::separate_recurrent) r.db_ih = r.db_hh;
    if (initial) r.dh0 = b.dh, r.dc0 = b.dc;
    return r;
}

}  // namespace

int64_t gates_of(Cell cell) { return cell == Cell::Lstm ? 4 : cell == Cell::Gru ? 3 : 1; }
int64_t states_of(Cell cell) { return cell == Cell::Lstm ? 2 : 1; }
int64_t saved_of(Cell cell) { return cell == Cell::Lstm ? 2 : cell == Cell::Gru ? 1 : 0; }

template <class Device>
LayerForward layer_forward(Cell cell, const Tensor& x, const std::vector<Tensor>& state0, const Tensor& w_ih,
                           const Tensor& w_hh, const OptTensor& b_ih, const OptTensor& b_hh) {
    const auto run = [&](const auto& traits) {
        const Tensor c0 = cell == Cell::Lstm ? state0[1] : Tensor();
        return forward<Device>(traits, x, state0[0], c0, w_ih, w_hh, b_ih, b_hh);
    };
    LayerForward out;
    if (cell == Cell::Lstm) {
        const auto f = run(LstmCell{});
        out.y = f.y, out.saved = {f.pre, f.saved};
        out.final = {f.y[f.T - 1].clone(), f.saved[f.T - 1].clone()};
    } else if (cell == Cell::Gru) {
        const auto f = run(GruCell{});
        out.y = f.y, out.saved = {f.saved}, out.final = {f.y[f.T - 1].clone()};
    } else {
        const auto f = run(RnnCell{cell == Cell::RnnRelu});
        out.y = f.y, out.final = {f.y[f.T - 1].clone()};
    }
    return out;
}

template <class Device>
LayerGrads layer_backward(Cell cell, const OptTensor& grad_y, const std::vector<OptTensor>& grad_final,
                          const Tensor& x, const std::vector<Tensor>& state0, const Tensor& w_ih,
                          const Tensor& w_hh, const Tensor& y, const std::vector<Tensor>& saved,
                          const BackwardOptions& options) {
    const OptTensor no_grad;
    const OptTensor& grad_hT = grad_final.empty() ? no_grad : grad_final[0];
    BackwardResult r;
    if (cell == Cell::Lstm) {
        r = backward<Device>(LstmCell{}, grad_y, grad_hT, grad_final.size() > 1 ? grad_final[1] : no_grad, x,
                             state0[0], state0[1], w_ih, w_hh, y, saved[0], saved[1], options);
    } else if (cell == Cell::Gru) {
        r = backward<Device>(GruCell{}, grad_y, grad_hT, no_grad, x, state0[0], Tensor(), w_ih, w_hh, y, Tensor(),
                             saved[0], options);
    } else {
        r = backward<Device>(RnnCell{cell == Cell::RnnRelu}, grad_y, grad_hT, no_grad, x, state0[0], Tensor(), w_ih,
                             w_hh, y, Tensor(), Tensor(), options);
    }
    LayerGrads g{r.dx, {}, r.dw_ih, r.dw_hh, r.db_ih, r.db_hh};
    if (options.initial_state_grad) {
        g.dstate = cell == Cell::Lstm ? std::vector<Tensor>{r.dh0, r.dc0} : std::vector<Tensor>{r.dh0};
    }
    return g;
}

template LayerForward layer_forward<Cpu>(Cell, const Tensor&, const std::vector<Tensor>&, const Tensor&,
                                         const Tensor&, const OptTensor&, const OptTensor&);
template LayerGrads layer_backward<Cpu>(Cell, const OptTensor&, const std::vector<OptTensor>&, const Tensor&,
                                        const std::vector<Tensor>&, const Tensor&, const Tensor&, const Tensor&,
                                        const std::vector<Tensor>&, const BackwardOptions&);
#ifdef CHARLSTM_WITH_CUDA
template LayerForward layer_forward<Cuda>(Cell, const Tensor&, const std::vector<Tensor>&, const Tensor&,
                                          const Tensor&, const OptTensor&, const OptTensor&);
template LayerGrads layer_backward<Cuda>(Cell, const OptTensor&, const std::vector<OptTensor>&, const Tensor&,
                                         const std::vector<Tensor>&, const Tensor&, const Tensor&, const Tensor&,
                                         const std::vector<Tensor>&, const BackwardOptions&);
#endif

}  // namespace charlstm

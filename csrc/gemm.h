// The one place that knows which matrix-product kernel runs.
//
// Float products on the CPU run oneDNN's batch-reduce GEMM micro-kernel through ATen's
// cpublas::brgemm (an ATen-internal API), split between torch's threads here. How depends on the
// vector width of the CPU (CpuProducts below). Everything else (double, CUDA, and every product
// when the installed torch does not offer the float brgemm, as 2.4 does not) goes to at::mm. The
// callers name operands as blocks of rows of contiguous tensors, so the per-step products of the
// drivers cost no tensor construction.
#pragma once

#include <ATen/ATen.h>

#include <algorithm>
#include <cstdint>
#include <optional>

namespace charlstm {

using Tensor = at::Tensor;

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

inline Rows all_rows(const Tensor& t) { return {t, 0, t.numel() / std::max<int64_t>(t.size(-1), 1)}; }

// Whether products with this tensor's device and dtype run brgemm (CPU float, when the installed
// torch offers it). Drivers that schedule threads themselves ask before calling product() with
// `this_thread` set.
bool brgemm_path(const Tensor& t);

// The size of a float weight, which decides where it lives in the cache hierarchy: the layout
// rules here and in the drivers apply to the CPU float path only.
inline int64_t weight_bytes(const Tensor& w) { return w.numel() * static_cast<int64_t>(sizeof(float)); }

// How float products run on this CPU, chosen once from the vector kernels ATen picked for it
// (ATEN_CPU_CAPABILITY can lower that pick):
// - `Stored` (AVX-512): brgemm reads every operand in its stored, row-major layout, the per-step
//   products as well as those over a whole window (the input projection, the input and weight
//   gradients).
// - `Panels` (AVX2 and below): in a layer whose recurrent weight is over kPanelsFrom bytes, that
//   weight is packed once per call in panels of kPanel columns, each [K, kPanel] and contiguous,
//   for per-step products of more than one row, and the products over a window of
//   kWindowRowsForMm rows or more (kWindowRowsForMmFar where w_hh is kFarBeyondCache or more) go
//   to at::mm. Smaller layers run as in `Stored`. On a 2-core AMD EPYC (Zen 3, AVX2, 512 KB of L2
//   per core), GFLOP/s on two threads, stored layout against
//   panels of 16 columns: [64, 256] x [256, 1024] 49 -> 91, [16, 256] x [256, 1024] 47 -> 87,
//   [64, 512] x [512, 2048] 37 -> 75 (a weight of 256 KB or less: 84 -> 87, about even). There
//   brgemm's per-call tiles read the 4 KB rows of w_hh^T at H = 256, 256 rows a call, from the
//   same few sets of L1 and from beyond a core's L2; a panel is one contiguous run. at::mm (MKL)
//   packs its own operands: the weight gradient [1024, 640] x [640, 256] at 97 against brgemm's
//   53 in the stored layout, while over 50 rows the two were even and brgemm won the op. With an
//   LSTM of 128 units (256 KB) the stored layout was ahead: a char-rnn step at (B, H, T) =
//   (64, 128, 50) was 1.06-1.08x torch.nn.LSTM against 0.99x with the window on at::mm.
//   Panels of 32 columns rather than 16, same machine, three alternating runs of each (the op's
//   forward and backward against torch.nn's, in the same process): LSTM (B, H, T) = (64, 512, 50)
//   forward 1.09-1.27x -> 1.15-1.18x, backward 1.00-1.05x -> 1.08-1.09x; (128, 512, 10) 0.91-0.97x
//   -> 1.00-1.03x and 0.87-0.95x -> 0.96-1.01x; GRU (64, 512, 50) backward 1.69-1.74x ->
//   1.91-1.98x; RNN (64, 1024, 50) forward 1.49-1.55x -> 1.79-2.02x. 48 columns were slower than 16.
//   Per-step products on at::mm, or on MKL's packed sgemm with w_hh packed once per call, were
//   slower than panels in every such shape timed at H = 256 to 1024 (the op's ratio to torch.nn
//   0.6-0.9x of the panels' in the forward, 0.7-0.97x in the backward).
//   Which windows go to at::mm, same machine: the module's forward and backward (64 -> H),
//   alternating in one process between these bounds and one of 256 rows, the time with 256 over
//   the time with these: LSTM (B, H, T, L) = (16, 1024, 10, 1) 1.22x, (16, 1024, 10, 2) 1.41x,
//   (16, 512, 10, 2) 1.12x, (16, 256, 10, 2) 1.10x, (1, 1024, 200, 2) 1.20x, (1, 1024, 50, 2)
//   1.11x, (1, 1024, 50, 1) 1.07x; GRU and RNN at (16, 1024, 10, 2) 1.38x and 1.31x. A single
//   layer of 256 or 512 units was even over 100 to 200 rows (0.99x to 1.01x) and 0.96x to 0.98x
//   over 50 on at::mm; a 1024-unit one over 10 rows 0.86x (two layers) with a bound of 8.
// set_cpu_products overrides the choice for the process (the tests run both); nullopt restores it.
enum class CpuProducts { Stored, Panels };
constexpr int64_t kPanel = 32;
constexpr int64_t kPanelsFrom = 512 * 1024;
constexpr int64_t kWindowRowsForMm = 64;
constexpr int64_t kWindowRowsForMmFar = 32;
// A weight of this size or more is far beyond a core's cache (512 KB or 1 MB of L2 on the EPYCs).
constexpr int64_t kFarBeyondCache = 8 * 1024 * 1024;
CpuProducts cpu_products();
void set_cpu_products(std::optional<CpuProducts> mode);
const char* cpu_products_name(CpuProducts mode);

// Whether the products over a window of `rows` rows (not one step's) of a layer with recurrent
// weight w_hh run brgemm, and so want their operands row-major; otherwise the callers hand at::mm
// transposed views.
bool window_brgemm(const Tensor& w_hh, int64_t rows);

// The right operand of a product: b [K, N] and, for a weight that does not stay in cache, how a
// product on the CPU in float reads it. `streamed` ones are read in stored order. Where the caller
// holds b_t [N, K] (contiguous), b itself may be any view, since it is not read: a single row
// takes N dot products over the rows of b_t (cpu::matvec), several rows the product b_t a^T with
// b_t as brgemm's left operand, transposed into out. Without b_t, a single row sums the rows of b
// weighted by its values (cpu::vecmat); several rows go to brgemm as usual.
//
// `panels` holds b packed for the per-step products (CpuProducts::Panels): [ceil(N / kPanel), K,
// kPanel], panel p holding columns p * kPanel.. of b, zeros past N.
struct Operand {
    Tensor b, b_t, panels;
    bool streamed = false;

    Operand(const Tensor& b_) : b(b_) {}
    static Operand streamed_rows(const Tensor& b, const Tensor& b_t = Tensor()) {
        Operand o(b);
        o.b_t = b_t, o.streamed = true;
        return o;
    }
    // The right operand b [K, N] (any strides) of a product repeated every step over `rows` rows:
    // packed in panels where this CPU's products want them, else contiguous.
    static Operand per_step(const Tensor& b, int64_t rows);
};

// out[M, N] = a[M, K] b[K, N], or += when `accumulate`; b is contiguous [K, N].
// `this_thread`: compute on the calling thread only (inside a parallel region of the caller's);
// allowed where brgemm_path(b) holds.
void product(const Rows& out, const Rows& a, const Operand& b, bool accumulate, bool this_thread = false);

// x w (+ bias) for x [N, K], w [K, N'], bias [N'] or undefined -> [N, N'].
Tensor linear(const Tensor& x, const Tensor& w, const Tensor& bias);

// A new contiguous tensor holding the 2-D w transposed (never a view of w).
Tensor transposed(const Tensor& w);

// o[c * ldo + r] = in[r * C + c] for the row-major CPU matrix in [R, C]: its transpose written
// into rows of length ldo, which may hold other columns too. Split between the threads.
template <typename T>
void transpose_into(const T* in, int64_t R, int64_t C, T* o, int64_t ldo);

}  // namespace charlstm

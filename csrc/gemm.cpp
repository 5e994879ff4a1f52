// Matrix products and operand layouts; see gemm.h.
#include "gemm.h"

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/native/CPUBlas.h>
#include <ATen/Version.h>

#include <algorithm>
#include <atomic>
#include <vector>

#include "cpu/loops.h"

// ATen announces its float batch-reduce GEMM with this macro; a torch without it (2.4 has no
// cpublas::brgemm at all) gets the at::mm products everywhere.
#if defined(CPUBLAS_BRGEMM_F32F32F32)
#define CHARLSTM_BRGEMM 1
#endif

namespace charlstm {
namespace {

#ifdef CHARLSTM_BRGEMM
// Rows of the reduction per micro-kernel call. oneDNN sizes the kernel's register tile so that its
// rows of `a` over the whole reduction fit in L1: bd_block rows with 4 * bd_block * K <= 32 KB on
// this machine, at most 6. A call over K = T*B rows of the weight gradients (6400 at T = 100,
// B = 64) got a tile of one row, four multiply-adds per broadcast, and ran at 17-33 GFLOP/s per
// core instead of ~110; above K = 8192 no tile fits, the rule is dropped and the full tile
// returns, which made the backward at T = 200 faster than at T = 100. Calls over 256 rows keep the
// full tile for every K.
constexpr int64_t kReductionBlock = 256;

void brgemm(int64_t M, int64_t N, int64_t K, int64_t lda, int64_t ldb, int64_t ldc, bool accumulate,
            const float* a, const float* b, float* c, int64_t block = kReductionBlock) {
    for (int64_t k0 = 0; k0 < K; k0 += block) {
        at::native::cpublas::brgemm(M, N, std::min(block, K - k0), lda, ldb, ldc, accumulate || k0 > 0, a + k0,
                                    b + k0 * ldb, c);
    }
}

void brgemm_release() { at::native::cpublas::brgemm_release(false); }

// A product with many rows and a short reduction or few columns: the input projection of a whole
// window ([T*B, I+1] x [I+1, G*H]) and the input gradient ([T*B, G*H] x [G*H, I]). The threads
// take blocks of 64 rows, each block in pieces of 256 columns and reductions of up to 1024 (the
// micro-kernel keeps its full register tile there); `product`'s split of the columns between two
// threads, each walking thousands of rows, ran these well below the machine's peak. GFLOP/s on
// two threads of a 2-core AMD EPYC, column split against row blocks: [3200, 65] x [65, 1024]
// 180 -> 208, [512, 43] x [43, 1024] 99 -> 215, [12800, 65] x [65, 512] 134 -> 194,
// [3200, 1024] x [1024, 64] 142 -> 218, [640, 1024] x [1024, 64] 105 -> 227,
// [512, 1024] x [1024, 42] 99 -> 174. Other shapes keep the column split: the weight gradients,
// reductions over thousands of rows ([257, 3200] x [3200, 1024]: 186 against 83), products of
// more than 1024 columns ([512, 65] x [65, 4096]: 214 against 204), and long reductions into
// many columns, the input gradient of a layer over another ([1280, 2048] x [2048, 512]: 218
// against 203; 190 against 204 at 6400 rows), and products below 4M multiply-adds, where the
// blocks' calls cost more than they save (the classifier's [640, 64] x [64, 27]: 166 against 132).
bool tall(int64_t M, int64_t N, int64_t K, int64_t threads) {
    return threads > 1 && M >= 256 * threads && M * N * K >= (1 << 22) && ((K <= 256 && N <= 1024) || N <= 128);
}

void tall_product(int64_t M, int64_t N, int64_t K, bool accumulate, const float* a, const float* b, float* c) {
    constexpr int64_t rows = 64, cols = 256, reduction = 1024;
    at::parallel_for(0, (M + rows - 1) / rows, 1, [&](int64_t s0, int64_t s1) {
        for (int64_t s = s0; s < s1; ++s) {
            const int64_t m0 = s * rows, m = std::min(rows, M - m0);
            for (int64_t n0 = 0; n0 < N; n0 += cols) {
                brgemm(m, std::min(cols, N - n0), K, K, N, N, accumulate, a + m0 * K, b + n0, c + m0 * N + n0,
                       reduction);
            }
        }
        brgemm_release();
    });
}

// out[M, N] (+)= a[M, K] w[N, K]^T, computed as the transpose of w a^T: w, a weight too large for
// the cache, is brgemm's left operand, read a band of rows at a time in stored order against a^T
// [K, M], which stays in cache; each thread takes a run of bands and writes their columns of out.
// Bands of 256 rows and reductions up to 1024 keep the micro-kernel calls few (64 rows in chunks of
// 256 ran at half the speed at M = 16, K = 1024), and the reduction short enough for its full
// register tile.
void weight_left_product(const Rows& out, const Rows& a, const Tensor& w, bool accumulate) {
    constexpr int64_t band = 256, reduction = 1024;
    const int64_t M = a.rows, K = a.cols(), N = w.size(0);
    Tensor a_t = at::empty({K, M}, w.options());
    transpose_into(a.data<float>(), M, K, a_t.data_ptr<float>(), M);
    const float* pw = w.data_ptr<float>();
    const float* pa = a_t.data_ptr<float>();
    float* po = out.data<float>();
    at::parallel_for(0, (N + band - 1) / band, 1, [&](int64_t s0, int64_t s1) {
        std::vector<float> c(band * M);
        for (int64_t s = s0; s < s1; ++s) {
            const int64_t n0 = s * band, rows = std::min(band, N - n0);
            brgemm(rows, M, K, K, M, M, false, pw + n0 * K, pa, c.data(), reduction);
            // The band's [rows, M] result is columns n0.. of out [M, N], transposed.
            if (accumulate) {
                cpu::add_transposed_rows(po + n0, N, c.data(), M, rows, 1.0f, 0, M);
            } else {
                cpu::transpose_rows(c.data(), M, po + n0, N, 0, rows);
            }
        }
        brgemm_release();
    });
}

// out (+)= a b with b packed in panels (Operand::panels): each panel is one micro-kernel call
// over a contiguous [K, kPanel] block, the threads taking runs of panels.
void panel_product(const Rows& out, const Rows& a, const Operand& operand, bool accumulate, bool this_thread) {
    const int64_t M = a.rows, K = a.cols(), N = operand.b.size(1), P = operand.panels.size(0);
    const float* pa = a.data<float>();
    const float* pp = operand.panels.data_ptr<float>();
    float* pc = out.data<float>();
    const auto run = [&](int64_t p0, int64_t p1) {
        for (int64_t p = p0; p < p1; ++p) {
            const int64_t n0 = p * kPanel;
            brgemm(M, std::min(kPanel, N - n0), K, K, kPanel, N, accumulate, pa, pp + p * K * kPanel, pc + n0);
        }
    };
    const int64_t threads = this_thread || M * N * K < (1 << 16) ? 1 : std::min<int64_t>(at::get_num_threads(), P);
    if (threads == 1) {
        run(0, P);
        return;
    }
    at::parallel_for(0, threads, 1, [&](int64_t begin, int64_t end) {
        for (int64_t i = begin; i < end; ++i) run(P * i / threads, P * (i + 1) / threads);
        brgemm_release();
    });
}
#endif

// panels[p, k, j] = b[k, p * kPanel + j] for b [K, N] with any strides, zeros past N.
Tensor pack_panels(const Tensor& b) {
    const int64_t K = b.size(0), N = b.size(1), P = (N + kPanel - 1) / kPanel;
    Tensor panels = at::empty({P, K, kPanel}, b.options());
    const float* src = b.data_ptr<float>();
    float* dst = panels.data_ptr<float>();
    const int64_t sk = b.stride(0), sn = b.stride(1);
    at::parallel_for(0, P, std::max<int64_t>(1, 16384 / std::max<int64_t>(1, K * kPanel)), [&](int64_t p0, int64_t p1) {
        for (int64_t p = p0; p < p1; ++p) {
            const int64_t n0 = p * kPanel, n = std::min(kPanel, N - n0);
            float* d = dst + p * K * kPanel;
            if (sn == 1) {
                for (int64_t k = 0; k < K; ++k) {
                    std::copy(src + k * sk + n0, src + k * sk + n0 + n, d + k * kPanel);
                    std::fill(d + k * kPanel + n, d + (k + 1) * kPanel, 0.0f);
                }
            } else {
                // Column j of the panel is row n0 + j of b^T, read in order.
                for (int64_t j = 0; j < kPanel; ++j) {
                    const float* col = src + (n0 + j) * sn;
                    for (int64_t k = 0; k < K; ++k) d[k * kPanel + j] = j < n ? col[k * sk] : 0.0f;
                }
            }
        }
    });
    return panels;
}

void aten_product(const Rows& out, const Rows& a, const Tensor& b, bool accumulate) {
    Tensor o = out.view();
    if (accumulate && o.is_cpu()) {
        // A product added in place through addmm_ (MKL's sgemm with beta = 1, torch 2.4 on the
        // build machine) left a GRU's initial-state gradient about 10x further from float64 than
        // the reference's (4.7e-6 against 4.8e-7 at values up to 3.1); the product and a separate
        // add match the reference.
        o.add_(at::mm(a.view(), b));
    } else if (accumulate) {
        o.addmm_(a.view(), b);
    } else {
        at::mm_out(o, a.view(), b);
    }
}

// 0: automatic, 1: Stored, 2: Panels.
std::atomic<int> products_override{0};

CpuProducts detected_cpu_products() {
    // ATen's own pick of vector kernels for this CPU ("DEFAULT", "AVX2", "AVX512", ...), which
    // ATEN_CPU_CAPABILITY can lower.
    static const CpuProducts mode = at::get_cpu_capability() == "AVX512" ? CpuProducts::Stored : CpuProducts::Panels;
    return mode;
}

}  // namespace

CpuProducts cpu_products() {
    const int o = products_override.load(std::memory_order_relaxed);
    return o == 0 ? detected_cpu_products() : o == 1 ? CpuProducts::Stored : CpuProducts::Panels;
}

void set_cpu_products(std::optional<CpuProducts> mode) {
    products_override.store(!mode ? 0 : *mode == CpuProducts::Stored ? 1 : 2);
}

const char* cpu_products_name(CpuProducts mode) { return mode == CpuProducts::Stored ? "stored" : "panels"; }

// Whether a layer with this recurrent weight runs as `Panels` says (gemm.h), rather than as `Stored`.
bool panels_layer(const Tensor& w_hh) {
    return brgemm_path(w_hh) && cpu_products() == CpuProducts::Panels && weight_bytes(w_hh) > kPanelsFrom;
}

bool window_brgemm(const Tensor& w_hh, int64_t rows) {
    const int64_t for_mm = weight_bytes(w_hh) >= kFarBeyondCache ? kWindowRowsForMmFar : kWindowRowsForMm;
    return brgemm_path(w_hh) && !(panels_layer(w_hh) && rows >= for_mm);
}

Operand Operand::per_step(const Tensor& b, int64_t rows) {
    Operand o(b);
    if (panels_layer(b) && rows > 1) {
        o.panels = pack_panels(b);
    } else if (!b.is_contiguous()) {
        o.b = b.t().is_contiguous() ? transposed(b.t()) : b.contiguous();
    }
    return o;
}

bool brgemm_path(const Tensor& t) {
#ifdef CHARLSTM_BRGEMM
    return t.is_cpu() && t.scalar_type() == at::kFloat;
#else
    (void)t;
    return false;
#endif
}

// On the CPU in float: oneDNN's micro-kernel, the columns split between the threads. At the
// per-step shapes of the drivers ([64, H] x [H, 4H]) it is 1.3-1.8x faster than at::mm, whose
// threading and packing of b cost as much as the product.
void product(const Rows& out, const Rows& a, const Operand& operand, bool accumulate, bool this_thread) {
    const Tensor& b = operand.b;
    const int64_t M = a.rows, K = a.cols(), N = b.size(1);
#ifdef CHARLSTM_BRGEMM
    if (operand.panels.defined() && M > 0 && K > 0 && N > 0) {
        panel_product(out, a, operand, accumulate, this_thread);
        return;
    }
#endif
    if (operand.streamed && !this_thread && M > 0 && K > 0 && N > 0) {
        const Tensor& b_t = operand.b_t;
        const bool by_rows_of_b_t = b_t.defined() && brgemm_path(b_t) && b_t.is_contiguous();
        if (M == 1 && by_rows_of_b_t) {
            cpu::matvec(b_t.data_ptr<float>(), N, K, a.data<float>(), out.data<float>(), accumulate);
            return;
        }
        if (M == 1 && !b_t.defined() && brgemm_path(b) && b.is_contiguous()) {
            cpu::vecmat(b.data_ptr<float>(), K, N, a.data<float>(), out.data<float>(), accumulate);
            return;
        }
#ifdef CHARLSTM_BRGEMM
        if (by_rows_of_b_t) {
            weight_left_product(out, a, b_t, accumulate);
            return;
        }
#endif
    }
    if (!brgemm_path(b) || !b.is_contiguous() || M == 0 || K == 0 || N == 0) {
        TORCH_INTERNAL_ASSERT(!this_thread || M == 0 || K == 0 || N == 0,
                              "product on the calling thread needs the brgemm path");
        aten_product(out, a, b, accumulate);
        return;
    }
#ifdef CHARLSTM_BRGEMM
    const float* pa = a.data<float>();
    const float* pb = b.data_ptr<float>();
    float* pc = out.data<float>();
    const int64_t lda = K, ldb = N, ldc = N;
    if (this_thread) {
        brgemm(M, N, K, lda, ldb, ldc, accumulate, pa, pb, pc);
        return;
    }
    const int64_t wanted = M * N * K < (1 << 16) ? 1 : at::get_num_threads();
    if (tall(M, N, K, wanted)) {
        tall_product(M, N, K, accumulate, pa, pb, pc);
        return;
    }
    // Column blocks of 16 (one AVX-512 register), as few per thread as the thread count allows;
    // a product too narrow for two blocks per thread (the classifier's 27 columns) splits its rows
    // instead. Products below ~64k multiply-adds stay on one thread, where a fork costs more than
    // it saves.
    const int64_t blocks = (N + 15) / 16;
    if (wanted > 1 && blocks < 2 * wanted && M >= 16 * wanted) {
        at::parallel_for(0, wanted, 1, [&](int64_t begin, int64_t end) {
            for (int64_t i = begin; i < end; ++i) {
                const int64_t m0 = M * i / wanted, m1 = M * (i + 1) / wanted;
                brgemm(m1 - m0, N, K, lda, ldb, ldc, accumulate, pa + m0 * lda, pb, pc + m0 * ldc);
            }
            brgemm_release();
        });
        return;
    }
    const int64_t threads = std::min<int64_t>(wanted, blocks);
    const int64_t per = (blocks + threads - 1) / threads * 16;
    at::parallel_for(0, threads, 1, [&](int64_t begin, int64_t end) {
        for (int64_t i = begin; i < end; ++i) {
            const int64_t n0 = i * per, n = std::min(N, n0 + per) - n0;
            if (n > 0) brgemm(M, n, K, lda, ldb, ldc, accumulate, pa, pb + n0, pc + n0);
        }
        brgemm_release();
    });
#endif
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

// Strips of 16 rows go to the threads, so that each 64-byte piece of an output row has one writer.
template <typename T>
void transpose_into(const T* in, int64_t R, int64_t C, T* o, int64_t ldo) {
    constexpr int64_t strip = 16;
    const int64_t grain = std::max<int64_t>(1, 16384 / (strip * C));
    at::parallel_for(0, (R + strip - 1) / strip, grain, [&](int64_t s0, int64_t s1) {
        cpu::transpose_rows(in, C, o, ldo, s0 * strip, std::min(R, s1 * strip));
    });
}

template void transpose_into<float>(const float*, int64_t, int64_t, float*, int64_t);
template void transpose_into<double>(const double*, int64_t, int64_t, double*, int64_t);

// On the CPU a blocked copy split between the threads (a plain .t().contiguous() returns a view
// when one side has length 1): ATen's transpose copy runs on one thread and took ~150 us for a
// 1024 x 256 weight, longer than one step's product.
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

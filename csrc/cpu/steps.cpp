// CPU implementations of the per-step pointwise work (steps.h): rows of the batch in parallel
// with at::parallel_for, the hidden units of a row in a `#pragma omp simd` loop over cells.h, in
// the widest float build the processor has (cpu/simd.h).
#include <ATen/Parallel.h>

#include <algorithm>

#include "cells.h"
#include "cpu/simd.h"
#include "steps.h"

namespace charlstm {
namespace cpu {
namespace {

// Rows per chunk: about 2k elements. The step's math (five exponentials and divisions per LSTM
// unit) costs more than waking the pool from there up: splitting a [64, 64] step between two
// threads took the forward op at (T, B, H) = (10, 64, 64) from ~420 to ~300 us.
int64_t grain(int64_t hidden) { return std::max<int64_t>(1, 2048 / std::max<int64_t>(hidden, 1)); }

template <typename S>
CHARLSTM_ALWAYS_INLINE void add_gathered_row(S* out, const S* row, int64_t n) {
#pragma omp simd
    for (int64_t j = 0; j < n; ++j) out[j] += row[j];
}

template <typename S>
CHARLSTM_ALWAYS_INLINE void lstm_forward_body(const LstmForwardStep<S>& a, int64_t b0, int64_t b1) {
    const int64_t H = a.hidden;
    for (int64_t b = b0; b < b1; ++b) {
        S* g = a.gates + b * 4 * H;
        if (a.ids) add_gathered_row(g, a.table + a.ids[b] * 4 * H, 4 * H);
        const S* c_prev = a.c_prev + b * H;
        S* c = a.c + b * H;
        S* h = a.h + b * H;
#pragma omp simd
        for (int64_t j = 0; j < H; ++j) {
            const auto r = cells::lstm_forward(g[j], g[H + j], g[2 * H + j], g[3 * H + j], c_prev[j]);
            g[j] = r.i;
            g[H + j] = r.f;
            g[2 * H + j] = r.g;
            g[3 * H + j] = r.o;
            c[j] = r.c;
            h[j] = r.h;
        }
    }
}

template <typename S>
CHARLSTM_ALWAYS_INLINE void lstm_backward_body(const LstmBackwardStep<S>& a, int64_t b0, int64_t b1) {
    const int64_t H = a.hidden;
    for (int64_t b = b0; b < b1; ++b) {
        const S* g = a.gates + b * 4 * H;
        const S* c_prev = a.c_prev + b * H;
        const S* c = a.c + b * H;
        const S* dh_out = a.dh_out ? a.dh_out + b * H : nullptr;
        const S* dh_next = a.dh_next + b * H;
        S* dc = a.dc + b * H;
        S* dg = a.dgates + b * 4 * H;
#pragma omp simd
        for (int64_t j = 0; j < H; ++j) {
            const S dh = dh_next[j] + (dh_out ? dh_out[j] : S(0));
            const auto r = cells::lstm_backward(g[j], g[H + j], g[2 * H + j], g[3 * H + j], c_prev[j], c[j],
                                                dh, dc[j]);
            dg[j] = r.di;
            dg[H + j] = r.df;
            dg[2 * H + j] = r.dg;
            dg[3 * H + j] = r.do_;
            dc[j] = r.dc_prev;
        }
    }
}

template <typename S>
CHARLSTM_ALWAYS_INLINE void gru_forward_body(const GruForwardStep<S>& a, int64_t b0, int64_t b1) {
    const int64_t H = a.hidden;
    for (int64_t b = b0; b < b1; ++b) {
        const S* x = a.ids ? a.table + a.ids[b] * 3 * H : a.xproj + b * 3 * H;
        const S* hp = a.hproj + b * 3 * H;
        const S* h_prev = a.h_prev + b * H;
        S* s = a.save + b * 4 * H;
        S* h = a.h + b * H;
#pragma omp simd
        for (int64_t j = 0; j < H; ++j) {
            const auto r = cells::gru_forward(x[j], x[H + j], x[2 * H + j], hp[j], hp[H + j], hp[2 * H + j],
                                              h_prev[j]);
            s[j] = r.r;
            s[H + j] = r.z;
            s[2 * H + j] = r.n;
            s[3 * H + j] = r.hn;
            h[j] = r.h;
        }
    }
}

template <typename S>
CHARLSTM_ALWAYS_INLINE void gru_backward_body(const GruBackwardStep<S>& a, int64_t b0, int64_t b1) {
    const int64_t H = a.hidden;
    for (int64_t b = b0; b < b1; ++b) {
        const S* s = a.save + b * 4 * H;
        const S* h_prev = a.h_prev + b * H;
        const S* dh_out = a.dh_out ? a.dh_out + b * H : nullptr;
        S* dh = a.dh + b * H;
        S* dx = a.dxproj + b * 3 * H;
        S* dhp = a.dhproj + b * 3 * H;
#pragma omp simd
        for (int64_t j = 0; j < H; ++j) {
            const S d = dh[j] + (dh_out ? dh_out[j] : S(0));
            const auto r = cells::gru_backward(s[j], s[H + j], s[2 * H + j], s[3 * H + j], h_prev[j], d);
            dx[j] = r.dr;
            dx[H + j] = r.dz;
            dx[2 * H + j] = r.dn;
            dhp[j] = r.dr;
            dhp[H + j] = r.dz;
            dhp[2 * H + j] = r.dhn;
            dh[j] = r.dh_prev;
        }
    }
}

template <typename S>
CHARLSTM_ALWAYS_INLINE void rnn_forward_body(const RnnForwardStep<S>& a, int64_t b0, int64_t b1) {
    const int64_t H = a.hidden;
    for (int64_t b = b0; b < b1; ++b) {
        S* h = a.h + b * H;
        if (a.ids) add_gathered_row(h, a.table + a.ids[b] * H, H);
#pragma omp simd
        for (int64_t j = 0; j < H; ++j) h[j] = cells::rnn_forward(h[j], a.relu);
    }
}

template <typename S>
CHARLSTM_ALWAYS_INLINE void rnn_backward_body(const RnnBackwardStep<S>& a, int64_t b0, int64_t b1) {
    const int64_t H = a.hidden;
    for (int64_t b = b0; b < b1; ++b) {
        const S* h = a.h + b * H;
        const S* dh_out = a.dh_out ? a.dh_out + b * H : nullptr;
        const S* dh_next = a.dh_next + b * H;
        S* dpre = a.dpre + b * H;
#pragma omp simd
        for (int64_t j = 0; j < H; ++j) {
            const S dh = dh_next[j] + (dh_out ? dh_out[j] : S(0));
            dpre[j] = cells::rnn_backward(h[j], dh, a.relu);
        }
    }
}

CHARLSTM_ROWS(LstmForwardStep, lstm_forward_body)
CHARLSTM_ROWS(LstmBackwardStep, lstm_backward_body)
CHARLSTM_ROWS(GruForwardStep, gru_forward_body)
CHARLSTM_ROWS(GruBackwardStep, gru_backward_body)
CHARLSTM_ROWS(RnnForwardStep, rnn_forward_body)
CHARLSTM_ROWS(RnnBackwardStep, rnn_backward_body)

template <typename Args>
void run(const Args& a) {
    at::parallel_for(0, a.batch, grain(a.hidden), [&](int64_t b0, int64_t b1) { rows(a, b0, b1); });
}

}  // namespace

const char* simd() {
#ifdef CHARLSTM_X86_DISPATCH
    switch (active_simd()) {
        case Simd::Avx512: return "avx512";
        case Simd::Avx2: return "avx2+fma";
        default: return "baseline x86-64";
    }
#else
    return "compiler default";
#endif
}

template <typename S> void step(const LstmForwardStep<S>& a) { run(a); }
template <typename S> void step(const LstmBackwardStep<S>& a) { run(a); }
template <typename S> void step(const GruForwardStep<S>& a) { run(a); }
template <typename S> void step(const GruBackwardStep<S>& a) { run(a); }
template <typename S> void step(const RnnForwardStep<S>& a) { run(a); }
template <typename S> void step(const RnnBackwardStep<S>& a) { run(a); }
template <typename S> void step_rows(const LstmForwardStep<S>& a, int64_t b0, int64_t b1) { rows(a, b0, b1); }
template <typename S> void step_rows(const LstmBackwardStep<S>& a, int64_t b0, int64_t b1) { rows(a, b0, b1); }
template <typename S> void step_rows(const GruForwardStep<S>& a, int64_t b0, int64_t b1) { rows(a, b0, b1); }
template <typename S> void step_rows(const GruBackwardStep<S>& a, int64_t b0, int64_t b1) { rows(a, b0, b1); }
template <typename S> void step_rows(const RnnForwardStep<S>& a, int64_t b0, int64_t b1) { rows(a, b0, b1); }
template <typename S> void step_rows(const RnnBackwardStep<S>& a, int64_t b0, int64_t b1) { rows(a, b0, b1); }

#define CHARLSTM_INSTANTIATE(S)                                                 \
    template void step<S>(const LstmForwardStep<S>&);                          \
    template void step<S>(const LstmBackwardStep<S>&);                         \
    template void step<S>(const GruForwardStep<S>&);                           \
    template void step<S>(const GruBackwardStep<S>&);                          \
    template void step<S>(const RnnForwardStep<S>&);                           \
    template void step<S>(const RnnBackwardStep<S>&);                          \
    template void step_rows<S>(const LstmForwardStep<S>&, int64_t, int64_t);   \
    template void step_rows<S>(const LstmBackwardStep<S>&, int64_t, int64_t);  \
    template void step_rows<S>(const GruForwardStep<S>&, int64_t, int64_t);    \
    template void step_rows<S>(const GruBackwardStep<S>&, int64_t, int64_t);   \
    template void step_rows<S>(const RnnForwardStep<S>&, int64_t, int64_t);    \
    template void step_rows<S>(const RnnBackwardStep<S>&, int64_t, int64_t);
CHARLSTM_INSTANTIATE(float)
CHARLSTM_INSTANTIATE(double)
#undef CHARLSTM_INSTANTIATE

}  // namespace cpu
}  // namespace charlstm

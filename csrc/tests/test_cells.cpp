// Checks of cells.h on its own, without Python or torch; run by ctest (see CMakeLists.txt).
// Forward values against the equations written out with std:: functions, backward against central
// finite differences of the forward (both in double), and the vectorisable float exp/sigmoid/tanh
// of the host against std:: over the whole float range. Exits non-zero on any failure.
#include "cells.h"

#include <cfloat>
#include <cmath>
#include <cstdio>
#include <initializer_list>
#include <limits>
#include <random>

namespace {

using namespace charlstm::cells;

int failures = 0;
int checks = 0;

void expect(bool ok, const char* what, double x, double got, double want) {
    ++checks;
    if (ok) return;
    if (++failures <= 20) {
        std::fprintf(stderr, "FAIL %s at %.9g: got %.9g, want %.9g\n", what, x, got, want);
    }
}

bool close(double got, double want, double atol, double rtol) {
    return std::isfinite(got) && std::fabs(got - want) <= atol + rtol * std::fabs(want);
}

double sig(double x) { return 1.0 / (1.0 + std::exp(-x)); }

void forward_matches_equations(std::mt19937_64& rng) {
    // Wide enough to saturate every gate, so the tails of sigmoid and tanh are covered.
    std::uniform_real_distribution<double> u(-12.0, 12.0);
    const double tol = 1e-14;
    for (int n = 0; n < 2000; ++n) {
        const double pi = u(rng), pf = u(rng), pg = u(rng), po = u(rng), c0 = u(rng);
        const auto l = lstm_forward<double>(pi, pf, pg, po, c0);
        const double c = sig(pf) * c0 + sig(pi) * std::tanh(pg);
        expect(close(l.i, sig(pi), tol, tol), "lstm i", pi, l.i, sig(pi));
        expect(close(l.f, sig(pf), tol, tol), "lstm f", pf, l.f, sig(pf));
        expect(close(l.g, std::tanh(pg), tol, tol), "lstm g", pg, l.g, std::tanh(pg));
        expect(close(l.o, sig(po), tol, tol), "lstm o", po, l.o, sig(po));
        expect(close(l.c, c, tol, tol), "lstm c", c0, l.c, c);
        expect(close(l.h, sig(po) * std::tanh(c), tol, tol), "lstm h", c, l.h, sig(po) * std::tanh(c));

        const double xr = u(rng), xz = u(rng), xn = u(rng), hr = u(rng), hz = u(rng), hn = u(rng);
        const double h0 = u(rng);
        const auto g = gru_forward<double>(xr, xz, xn, hr, hz, hn, h0);
        const double r = sig(xr + hr), z = sig(xz + hz), nn = std::tanh(xn + r * hn);
        const double h = (1.0 - z) * nn + z * h0;
        expect(close(g.r, r, tol, tol), "gru r", xr, g.r, r);
        expect(close(g.z, z, tol, tol), "gru z", xz, g.z, z);
        expect(close(g.n, nn, tol, tol), "gru n", xn, g.n, nn);
        expect(g.hn == hn, "gru hn", hn, g.hn, hn);
        expect(close(g.h, h, tol, tol), "gru h", h0, g.h, h);

        const double p = u(rng);
        expect(close(rnn_forward<double>(p, false), std::tanh(p), tol, tol), "rnn tanh", p,
               rnn_forward<double>(p, false), std::tanh(p));
        expect(rnn_forward<double>(p, true) == (p > 0 ? p : 0.0), "rnn relu", p,
               rnn_forward<double>(p, true), p > 0 ? p : 0.0);
    }
}

// Central difference of f along one coordinate; with step 1e-5 its truncation error is about
// 1e-10 times the third derivative and its rounding error about 1e-11, far below the tolerance.
template <typename F>
double central(F f, double* x, double step = 1e-5) {
    const double keep = *x;
    *x = keep + step;
    const double up = f();
    *x = keep - step;
    const double down = f();
    *x = keep;
    return (up - down) / (2.0 * step);
}

void backward_matches_finite_differences(std::mt19937_64& rng) {
    std::uniform_real_distribution<double> u(-3.0, 3.0);
    const double atol = 1e-8, rtol = 1e-6;
    for (int n = 0; n < 500; ++n) {
        // LSTM: the loss dh.h' + dc.c' makes (dh, dc) the incoming gradients of lstm_backward.
        double p[5] = {u(rng), u(rng), u(rng), u(rng), u(rng)};  // pre i f g o, c_prev
        const double dh = u(rng), dc = u(rng);
        auto lstm_loss = [&] {
            const auto f = lstm_forward<double>(p[0], p[1], p[2], p[3], p[4]);
            return dh * f.h + dc * f.c;
        };
        const auto f = lstm_forward<double>(p[0], p[1], p[2], p[3], p[4]);
        const auto b = lstm_backward<double>(f.i, f.f, f.g, f.o, p[4], f.c, dh, dc);
        const double lg[5] = {b.di, b.df, b.dg, b.do_, b.dc_prev};
        const char* ln[5] = {"lstm di", "lstm df", "lstm dg", "lstm do", "lstm dc_prev"};
        for (int k = 0; k < 5; ++k) {
            const double want = central(lstm_loss, &p[k]);
            expect(close(lg[k], want, atol, rtol), ln[k], p[k], lg[k], want);
        }

        // GRU: xr and hr (likewise xz and hz) enter only through their sum, so both get dr (dz).
        double q[7] = {u(rng), u(rng), u(rng), u(rng), u(rng), u(rng), u(rng)};  // xr xz xn hr hz hn h
        const double dq = u(rng);
        auto gru_loss = [&] { return dq * gru_forward<double>(q[0], q[1], q[2], q[3], q[4], q[5], q[6]).h; };
        const auto gf = gru_forward<double>(q[0], q[1], q[2], q[3], q[4], q[5], q[6]);
        const auto gb = gru_backward<double>(gf.r, gf.z, gf.n, gf.hn, q[6], dq);
        const double gg[7] = {gb.dr, gb.dz, gb.dn, gb.dr, gb.dz, gb.dhn, gb.dh_prev};
        const char* gn[7] = {"gru dxr", "gru dxz", "gru dxn", "gru dhr", "gru dhz", "gru dhn", "gru dh_prev"};
        for (int k = 0; k < 7; ++k) {
            const double want = central(gru_loss, &q[k]);
            expect(close(gg[k], want, atol, rtol), gn[k], q[k], gg[k], want);
        }

        for (bool relu : {false, true}) {
            double pre = u(rng);
            if (relu && std::fabs(pre) < 1e-3) continue;  // the kink: no derivative to compare with
            const double d = u(rng);
            auto rnn_loss = [&] { return d * rnn_forward<double>(pre, relu); };
            const double got = rnn_backward<double>(rnn_forward<double>(pre, relu), d, relu);
            const double want = central(rnn_loss, &pre);
            expect(close(got, want, atol, rtol), relu ? "rnn relu dpre" : "rnn tanh dpre", pre, got, want);
        }
    }
}

// The float host functions against std:: in double. Measured errors: exp 0.7 ulp (relative) over
// its unclamped range, sigmoid 1.3 ulp, tanh 1.3 ulp for |x| >= 0.5 and 0.75 ulp of 1 absolute
// everywhere; the bounds leave a factor of about 2.
void float_functions_match_std() {
    const double eps = FLT_EPSILON;
    const float tiny[] = {0.0f, FLT_MIN, -FLT_MIN, 1e-30f, -1e-30f, FLT_TRUE_MIN, -FLT_TRUE_MIN,
                          87.0f, -87.0f, 88.0f, -88.0f, 88.5f, -87.5f, 100.0f, -100.0f,
                          1e30f, -1e30f, FLT_MAX, -FLT_MAX};
    auto one = [&](float x) {
        const double xd = x;
        const double e = exp_(x);
        if (xd >= -87.0 && xd <= 88.0) {
            expect(close(e, std::exp(xd), 0.0, 2.0 * eps), "exp", xd, e, std::exp(xd));
        } else {
            expect(std::isfinite(e) && e > 0.0, "exp finite when clamped", xd, e, std::exp(xd));
        }
        const double s = sigmoid(x), sw = sig(xd);
        // Below -87 exp(-x) is clamped: sigmoid is then off by less than the smallest normal float.
        expect(xd >= -87.0 ? close(s, sw, 0.0, 4.0 * eps) : close(s, sw, FLT_MIN, 0.0), "sigmoid", xd, s, sw);
        expect(s >= 0.0 && s <= 1.0, "sigmoid in [0, 1]", xd, s, sw);
        const double t = tanh_(x), tw = std::tanh(xd);
        expect(close(t, tw, 2.0 * eps, 0.0), "tanh absolute", xd, t, tw);
        if (std::fabs(xd) >= 0.5) expect(close(t, tw, 0.0, 4.0 * eps), "tanh relative", xd, t, tw);
        expect(t >= -1.0 && t <= 1.0 && (x >= 0.0f ? t >= 0.0 : t <= 0.0), "tanh range and sign", xd, t, tw);
    };
    for (long k = -100000; k <= 100000; ++k) one(static_cast<float>(k * 1e-3));
    for (float x : tiny) one(x);

    const float inf = std::numeric_limits<float>::infinity();
    expect(sigmoid(inf) == 1.0f, "sigmoid(+inf)", inf, sigmoid(inf), 1.0);
    expect(sigmoid(-inf) >= 0.0f && sigmoid(-inf) < FLT_MIN, "sigmoid(-inf)", -inf, sigmoid(-inf), 0.0);
    expect(tanh_(inf) == 1.0f, "tanh(+inf)", inf, tanh_(inf), 1.0);
    expect(tanh_(-inf) == -1.0f, "tanh(-inf)", -inf, tanh_(-inf), -1.0);
    // A diverging model must stay visibly NaN rather than be squashed into a valid activation.
    const float nan = std::numeric_limits<float>::quiet_NaN();
    expect(std::isnan(sigmoid(nan)), "sigmoid(nan)", nan, sigmoid(nan), nan);
    expect(std::isnan(tanh_(nan)), "tanh(nan)", nan, tanh_(nan), nan);
}

// The float cell, built from the host exp and tanh, against the double cell.
void float_cells_match_double(std::mt19937_64& rng) {
    std::uniform_real_distribution<float> u(-10.0f, 10.0f);
    const double tol = 8.0 * FLT_EPSILON;
    for (int n = 0; n < 20000; ++n) {
        const float a = u(rng), b = u(rng), c = u(rng), d = u(rng), e = u(rng), f = u(rng), g = u(rng);
        const auto lf = lstm_forward<float>(a, b, c, d, e);
        const auto ld = lstm_forward<double>(a, b, c, d, e);
        expect(close(lf.c, ld.c, tol, tol), "float lstm c", e, lf.c, ld.c);
        expect(close(lf.h, ld.h, tol, tol), "float lstm h", e, lf.h, ld.h);
        const auto gf = gru_forward<float>(a, b, c, d, e, f, g);
        const auto gd = gru_forward<double>(a, b, c, d, e, f, g);
        expect(close(gf.h, gd.h, tol, tol), "float gru h", g, gf.h, gd.h);
    }
}

}  // namespace

int main() {
    std::mt19937_64 rng(20240601);
    forward_matches_equations(rng);
    backward_matches_finite_differences(rng);
    float_functions_match_std();
    float_cells_match_double(rng);
    std::printf("test_cells: %d checks, %d failures\n", checks, failures);
    return failures == 0 ? 0 : 1;
}

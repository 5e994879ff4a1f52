// The run-time choice between the builds of the CPU float loops, shared by the files in csrc/cpu.
//
// Each float loop is compiled three times: for AVX-512 (512-bit vectors), for AVX2+FMA and for the
// baseline ISA, and the processor's features pick one at run time. That keeps the extension
// portable (no -march=native) while the hot loops still use the widest vectors there are; on the
// 2-core AMD EPYC build machine the AVX-512 build took the H=64 LSTM forward op from ~290 to
// ~260 us. The choice is an explicit branch, not GCC's target_clones: GCC sends a call from
// default-target code straight to the default clone, so the AVX2 clone of a loop called from
// at::parallel_for's lambda never ran.
#pragma once

#include <cstdint>
#include <cstdlib>
#include <cstring>

#if defined(__x86_64__) && defined(__GNUC__)
#define CHARLSTM_X86_DISPATCH 1
#include <immintrin.h>
#endif

#define CHARLSTM_ALWAYS_INLINE inline __attribute__((always_inline))

namespace charlstm {
namespace cpu {

#ifdef CHARLSTM_X86_DISPATCH
enum class Simd { Baseline, Avx2, Avx512 };

// The widest build the processor runs, unless CHARLSTM_CPU_SIMD names a narrower one (avx2 or
// baseline), which tests use to run every build on one machine.
inline Simd detect_simd() {
    const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    const bool avx512 = avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
                        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512bw");
    Simd best = avx512 ? Simd::Avx512 : avx2 ? Simd::Avx2 : Simd::Baseline;
    const char* wanted = std::getenv("CHARLSTM_CPU_SIMD");
    if (wanted != nullptr && std::strcmp(wanted, "baseline") == 0) return Simd::Baseline;
    if (wanted != nullptr && std::strcmp(wanted, "avx2") == 0 && best == Simd::Avx512) return Simd::Avx2;
    return best;
}

inline Simd active_simd() {
    static const Simd simd = detect_simd();
    return simd;
}

// Defines `rows(const Args<float>&, int64_t, int64_t)`, which runs body(args, begin, end) in the
// widest build the processor has, and `rows(const Args<double>&, ...)`, which has one build.
#define CHARLSTM_ROWS(Args, body)                                                                    \
    __attribute__((target("avx2,fma"))) void rows_avx2(const Args<float>& a, int64_t b0, int64_t b1) { \
        body(a, b0, b1);                                                                             \
    }                                                                                                \
    __attribute__((target("avx512f,avx512dq,avx512vl,avx512bw,avx2,fma,prefer-vector-width=512")))   \
    void rows_avx512(const Args<float>& a, int64_t b0, int64_t b1) { body(a, b0, b1); }              \
    void rows_baseline(const Args<float>& a, int64_t b0, int64_t b1) { body(a, b0, b1); }            \
    void rows(const Args<float>& a, int64_t b0, int64_t b1) {                                        \
        switch (active_simd()) {                                                                     \
            case Simd::Avx512: return rows_avx512(a, b0, b1);                                        \
            case Simd::Avx2: return rows_avx2(a, b0, b1);                                            \
            default: return rows_baseline(a, b0, b1);                                                \
        }                                                                                            \
    }                                                                                                \
    void rows(const Args<double>& a, int64_t b0, int64_t b1) { body(a, b0, b1); }
#else
#define CHARLSTM_ROWS(Args, body)                                                                    \
    void rows(const Args<float>& a, int64_t b0, int64_t b1) { body(a, b0, b1); }                     \
    void rows(const Args<double>& a, int64_t b0, int64_t b1) { body(a, b0, b1); }
#endif

}  // namespace cpu
}  // namespace charlstm

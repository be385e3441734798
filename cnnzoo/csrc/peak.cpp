// The machine's multiply-add peak, measured: independent chains of vector fused multiply-adds
// with nothing else in the loop. scripts/bench_ops.py --peak times it, and docs/performance.md
// gives each kernel's speed as a fraction of it.

#include <omp.h>

#include <cstdint>

namespace {

#if defined(__AVX512F__)
constexpr int VL = 16;
#elif defined(__AVX__)
constexpr int VL = 8;
#else
constexpr int VL = 4;
#endif
typedef float vec __attribute__((vector_size(VL * sizeof(float))));

constexpr int CHAINS = 12;  // more than an FMA's latency times the FMA units, so none waits

}  // namespace

extern "C" {

// Runs `iterations` x CHAINS vector FMAs on each of `threads` threads; returns the floating-point
// operations done in all (2 per lane per FMA).
int64_t cnnzoo_fma_loop(int64_t iterations, int threads) {
  int used = 1;
#pragma omp parallel num_threads(threads)
  {
    vec acc[CHAINS], a = vec{} + 0.999999f, b = vec{} + 1e-7f;
    for (int c = 0; c < CHAINS; ++c) acc[c] = vec{} + (float)c;
    for (int64_t i = 0; i < iterations; ++i) {
#pragma GCC unroll 12
      for (int c = 0; c < CHAINS; ++c) acc[c] = acc[c] * a + b;
    }
    float sum = 0.0f;
    for (int c = 0; c < CHAINS; ++c) sum += acc[c][0];
    asm volatile("" : : "x"(sum));  // keep the result alive
#pragma omp single
    used = omp_get_num_threads();
  }
  return (int64_t)used * iterations * CHAINS * VL * 2;
}

}  // extern "C"

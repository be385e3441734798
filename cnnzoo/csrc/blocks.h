// What the compiled kernels share: the vector type of the machine, the R x V register block of
// accumulators that every block kernel updates by rank-1 products, and the per-thread scratch buffers.
// Plain C++ (GCC/Clang vector extensions), no torch headers; included by conv.cpp and winograd.cpp.

#pragma once

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <utility>

#include "cnnzoo.h"

namespace cnnzoo {

#if defined(__AVX512F__)
constexpr int VL = 16;  // floats per vector register
constexpr int NREG = 32;
#elif defined(__AVX__)
constexpr int VL = 8;
constexpr int NREG = 16;
#else
constexpr int VL = 4;
constexpr int NREG = 16;
#endif

typedef float vec __attribute__((vector_size(VL * sizeof(float))));
typedef float uvec __attribute__((vector_size(VL * sizeof(float)), aligned(4), may_alias));  // unaligned

inline vec load(const float* p) { return *reinterpret_cast<const uvec*>(p); }
inline void store(float* p, vec v) { *reinterpret_cast<uvec*>(p) = v; }

// Vectors of the vector dimension in one block (and in one panel of packed weights). Blocks of 3
// and 4 (with fewer pixels) measured no faster, and slower on 14-pixel rows.
constexpr int VMAX = 2;

// The most pixels per block for V vectors: R*V accumulators, V weight vectors and a broadcast.
constexpr int max_rows(int v) { return NREG == 32 ? (v == 1 ? 14 : 12) : (v == 1 ? 12 : 6); }

inline int64_t round_up(int64_t a, int64_t b) { return ceil_div(a, b) * b; }

// The register block of R x V accumulator vectors that the block kernels share: loaded from
// (or zeroed) and stored to rows `stride` floats apart, and updated by one rank-1 product.
template <int R, int V>
__attribute__((always_inline)) inline void load_block(vec (&acc)[R][V], const float* p, int64_t stride, bool from) {
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
    for (int v = 0; v < V; ++v) acc[r][v] = from ? load(p + r * stride + v * VL) : vec{};
}

template <int R, int V>
__attribute__((always_inline)) inline void store_block(vec (&acc)[R][V], float* p, int64_t stride) {
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
    for (int v = 0; v < V; ++v) store(p + r * stride + v * VL, acc[r][v]);
}

// acc[r][v] += x[r * xstride] * w[v * VL ...]: R broadcast scalars times V vectors
template <int R, int V>
__attribute__((always_inline)) inline void rank1_update(vec (&acc)[R][V], const float* x, int64_t xstride,
                                                        const float* w) {
  vec wv[V];
#pragma GCC unroll 4
  for (int v = 0; v < V; ++v) wv[v] = load(w + v * VL);
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r) {
    float xs = x[r * xstride];
#pragma GCC unroll 4
    for (int v = 0; v < V; ++v) acc[r][v] += xs * wv[v];
  }
}

// Transposes VL x VL floats held in VL vectors: r[i][j] becomes r[j][i]. log2(VL) rounds; the round
// of distance D pairs vectors i and i + D and interleaves their blocks of D lanes, so that after the
// last round (D = 1) every lane is where the transpose puts it.
#if defined(__has_builtin)
#if __has_builtin(__builtin_shufflevector)
#define CNNZOO_SHUFFLES 1
#endif
#endif

#ifdef CNNZOO_SHUFFLES
template <int D, size_t... K>
inline vec interleave(vec a, vec b, bool high, std::index_sequence<K...>) {
  // lane k of the result: block k / (2D) of both vectors, the first D lanes from a, the next D from b
  if (high)
    return __builtin_shufflevector(
        a, b,
        (int)((K % (2 * D)) < D ? K / (2 * D) * 2 * D + D + K % (2 * D) : VL + K / (2 * D) * 2 * D + K % (2 * D))...);
  return __builtin_shufflevector(
      a, b,
      (int)((K % (2 * D)) < D ? K / (2 * D) * 2 * D + K % (2 * D) : VL + K / (2 * D) * 2 * D + K % (2 * D) - D)...);
}

template <int D>
__attribute__((always_inline)) inline void transpose_round(vec (&r)[VL]) {
  if constexpr (D > 0) {
#pragma GCC unroll 16
    for (int i = 0; i < VL; ++i)
      if (!(i & D)) {
        vec a = r[i], b = r[i + D];
        r[i] = interleave<D>(a, b, false, std::make_index_sequence<VL>{});
        r[i + D] = interleave<D>(a, b, true, std::make_index_sequence<VL>{});
      }
    transpose_round<D / 2>(r);
  }
}
#endif

#ifdef CNNZOO_SHUFFLES
inline void transpose(vec (&r)[VL]) { transpose_round<VL / 2>(r); }
#else
// compilers without __builtin_shufflevector (GCC before 12): through memory
inline void transpose(vec (&r)[VL]) {
  alignas(64) float m[VL][VL];
  for (int i = 0; i < VL; ++i) store(m[i], r[i]);
  for (int i = 0; i < VL; ++i)
    for (int j = 0; j < VL; ++j) r[i][j] = m[j][i];
}
#endif

// Calls f(start, count) for blocks of at most `most` out of n, as even as possible.
template <typename F>
void even_blocks(int64_t n, int64_t most, F f) {
  int64_t blocks = ceil_div(n, most);
  for (int64_t b = 0, start = 0; b < blocks; ++b) {
    int64_t count = (n - start) / (blocks - b);
    f(start, count);
    start += count;
  }
}

// Which threads share a piece of work (an image, a block of tiles): a thread alone (a team of one),
// or all of them.
struct Team {
  int id, size;
  void sync() const {
    if (size > 1) {
#pragma omp barrier
    }
  }
};

// Buffers the size of the weights (transformed filters, weight-gradient sums) are kept between calls
// up to this size: a fresh buffer's page faults cost more than the products (for 512 channels, F(4x4):
// 4.7 ms kept, 14.6 ms freed, against 5.4 ms for all of oneDNN's forward on one 14x14 image).
constexpr int64_t KEEP_FLOATS = (64 << 20) / 4;

// A scratch buffer of floats, kept between calls by each thread (no page faults after the first
// call), aligned to a cache line.
struct Buffer {
  float* data = nullptr;
  int64_t size = 0;
  ~Buffer() { free(data); }
  float* get(int64_t n) {
    if (n > size) {
      free(data);
      data = static_cast<float*>(aligned_alloc(64, (size_t)round_up(std::max<int64_t>(n, 1) * 4, 64)));
      size = n;
    }
    return data;
  }
  // Buffers over `most` floats (1 MiB unless given) are freed at the end of a call. The image-sized
  // ones use the default: kept, they would add to the peak memory of a training step (reached at the
  // optimizer step, long after the last convolution), and freeing them measured no slower.
  void trim(int64_t most = (int64_t)(1 << 20) / 4) {
    if (size > most) {
      free(data);
      data = nullptr;
      size = 0;
    }
  }
};

}  // namespace cnnzoo

// What the compiled kernels share: the vector type of the machine, the R x V register block of
// accumulators that every block kernel updates by rank-1 products, the per-thread scratch buffers, and
// the copies of images into and out of channels-last buffers (tiles transposed in registers).
// Plain C++ (GCC/Clang vector extensions), no torch headers; included by conv.cpp and winograd.cpp.

#pragma once

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
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

// Copies rows [0, rows) of image `src` (channels x rows x cols, any strides) into a channels-last
// buffer dst[row][left + col][group * vpad + channel] of `width` columns and `pixel` floats per pixel,
// zero in the columns outside [left, left + cols) and in the padding channels. Each member of the team
// takes a band of rows.
inline void to_channels_last(const float* src, Strides s, int64_t groups, int64_t per_group, int64_t vpad, int64_t rows,
                             int64_t cols, float* dst, int64_t left, int64_t width, int64_t pixel, const Team& team,
                             int64_t step = 0) {
  if (step == 0) step = pixel;  // else the pixels are `step` floats apart, with no padding columns
  int64_t y0 = rows * team.id / team.size, y1 = rows * (team.id + 1) / team.size;
  auto at = [&](int64_t y, int64_t x) { return dst + (y * width + left + x) * step; };
  for (int64_t y = y0; y < y1; ++y) {
    std::memset(dst + y * width * step, 0, sizeof(float) * left * pixel);
    std::memset(at(y, cols), 0, sizeof(float) * (width - left - cols) * pixel);
    for (int64_t g = 0; g < groups; ++g) {
      int64_t pad = (g + 1 == groups ? pixel - g * vpad : vpad) - per_group;  // to the next group or pixel
      if (pad > 0)
        for (int64_t x = 0; x < cols; ++x) std::memset(at(y, x) + g * vpad + per_group, 0, sizeof(float) * pad);
      if (s.c == 1)  // already channels-last
        for (int64_t x = 0; x < cols; ++x)
          std::memcpy(at(y, x) + g * vpad, src + y * s.h + x * s.w + g * per_group, sizeof(float) * per_group);
    }
  }
  if (s.c == 1) return;
  // Runs of pixels that follow each other in src (a row; the whole band when the plane is contiguous),
  // in tiles of VL channels x VL pixels transposed in registers, the rest one entry at a time.
  bool flat = s.w == 1 && s.h == cols;
  for (int64_t y = y0; y < y1; y = flat ? y1 : y + 1) {
    int64_t n = (flat ? y1 - y : 1) * cols;
    const float* in = src + y * s.h;
    for (int64_t g = 0; g < groups; ++g)
      for (int64_t c0 = 0; c0 < per_group; c0 += VL) {
        const float* i = in + (g * per_group + c0) * s.c;
        int64_t at_channel = g * vpad + c0;  // of the tile, in a pixel of dst
        int64_t tile = std::min<int64_t>(VL, per_group - c0), k = 0, yy = y, xx = 0;
        if (tile == VL && s.w == 1)
          for (; k + VL <= n; k += VL) {
            vec r[VL];
            for (int c = 0; c < VL; ++c) r[c] = load(i + c * s.c + k);
            transpose(r);
            for (int p = 0; p < VL; ++p) {
              store(at(yy, xx) + at_channel, r[p]);
              if (++xx == cols) xx = 0, ++yy;
            }
          }
        for (; k < n; ++k) {
          float* op = at(yy, xx) + at_channel;
          for (int64_t c = 0; c < tile; ++c) op[c] = i[c * s.c + (yy - y) * s.h + xx * s.w];
          if (++xx == cols) xx = 0, ++yy;
        }
      }
  }
}

// The reverse, without padding: dst (channels x rows x cols, any strides) = src[pixel][group * vpad +
// channel] + bias[channel * bias_stride] (when given), the pixels `step` floats apart (`pixel` unless
// given). Tiles of channels are split over the team.
inline void from_channels_last(const float* src, int64_t groups, int64_t per_group, int64_t vpad, int64_t pixel,
                               int64_t rows, int64_t cols, const float* bias, int64_t bias_stride, float* dst,
                               Strides s, const Team& team, int64_t step = 0) {
  if (step == 0) step = pixel;
  int64_t channels = groups * per_group, pixels = rows * cols;
  if (s.c == 1 && s.w == channels && s.h == cols * channels) {  // channels-last output: rows of channels
    for (int64_t q = team.id; q < pixels; q += team.size)
      for (int64_t g = 0; g < groups; ++g) {
        const float* in = src + q * step + g * vpad;
        float* out = dst + q * channels + g * per_group;
        for (int64_t c = 0; c < per_group; ++c)
          out[c] = in[c] + (bias ? bias[(g * per_group + c) * bias_stride] : 0.0f);
      }
    return;
  }
  // Tiles of VL channels x VL pixels transposed in registers where dst's pixels follow each other
  // (along a row; over the whole plane when it is contiguous), the rest one entry at a time.
  // With fewer tiles than the team has members, each tile is split into bands of rows as well.
  bool flat = s.w == 1 && s.h == cols;
  int64_t tiles = ceil_div(per_group, VL), bands = groups * tiles < team.size ? team.size : 1;
  for (int64_t item = team.id; item < groups * tiles * bands; item += team.size) {
    int64_t band = item % bands, g = item / bands / tiles, c0 = item / bands % tiles * VL;
    int64_t tile = std::min<int64_t>(VL, per_group - c0), y0 = rows * band / bands, y1 = rows * (band + 1) / bands;
    const float* in = src + g * vpad + c0;
    float* out = dst + (g * per_group + c0) * s.c;
    float b[VL];
    for (int64_t c = 0; c < tile; ++c) b[c] = bias ? bias[(g * per_group + c0 + c) * bias_stride] : 0.0f;
    for (int64_t y = y0; y < y1; y = flat ? y1 : y + 1) {
      int64_t n = (flat ? y1 - y : 1) * cols, k = 0;
      const float* i = in + y * cols * step;
      float* o = out + y * s.h;
      if (tile == VL && s.w == 1)
        for (; k + VL <= n; k += VL) {
          vec r[VL];
          for (int p = 0; p < VL; ++p) r[p] = load(i + (k + p) * step);
          transpose(r);
          for (int c = 0; c < VL; ++c) store(o + c * s.c + k, r[c] + b[c]);
        }
      for (; k < n; ++k) {
        int64_t yy = flat ? k / cols : 0, xx = flat ? k % cols : k;
        for (int64_t c = 0; c < tile; ++c) o[c * s.c + yy * s.h + xx * s.w] = i[k * step + c] + b[c];
      }
    }
  }
}

}  // namespace cnnzoo

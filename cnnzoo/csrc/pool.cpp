// Max and average pooling on the CPU: float32, contiguous NCHW seen as `planes` planes of H x W.
//
// Plain C ABI (no torch headers), loaded with ctypes. Each kernel equals, to the bit, its reference in
// cnnzoo/ops/pool.py and torch's CPU kernels:
//   cnnzoo_max_pool2d_forward   max_pool2d_forward    (values and flat indices row * W + col)
//   cnnzoo_max_pool2d_backward  max_pool2d_backward
//   cnnzoo_avg_pool2d_forward   window_sums / avg_divisor
//   cnnzoo_avg_pool2d_backward  window_sums_backward of grad_out / avg_divisor
// The caller computes the output size (ceil_mode included) and passes it in.
//
// Forward work is split into output rows, so that every thread has work even for a single plane.
// Within a row, the windows that lie wholly inside the plane are computed 16 (or 8, or 4) at a time
// with GCC vector extensions, for column strides 1 and 2; the others take a scalar path that skips
// the taps outside the plane. Both visit a window's taps in the same (row-major) order.

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>

namespace {

using i64 = int64_t;

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// Below this many taps a call runs on one thread: waking a second costs more than it saves.
constexpr i64 kSerialWork = i64{1} << 15;

i64 ceil_div(i64 a, i64 b) { return a <= 0 ? -((-a) / b) : (a + b - 1) / b; }  // b > 0
i64 floor_div(i64 a, i64 b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }  // b > 0
i64 clamp(i64 v, i64 lo, i64 hi) { return v < lo ? lo : (v > hi ? hi : v); }

// The taps [first, end) of a window starting at `start` (k taps, `dil` apart) that land in [0, size).
// `first` is the first tap at or past 0 even when it lies past the end (a window of padding only).
struct Taps {
  i64 first, end;
};
Taps taps_inside(i64 start, i64 k, i64 dil, i64 size) {
  const i64 first = start < 0 ? ceil_div(-start, dil) : 0;
  return {first, clamp(ceil_div(size - start, dil), 0, k)};
}

// The output columns [lo, hi) whose whole window lies inside [0, size): no bounds checks needed there.
struct Span {
  i64 lo, hi;
};
Span inner_span(i64 out, i64 size, i64 k, i64 stride, i64 pad, i64 dil) {
  const i64 lo = clamp(ceil_div(pad, stride), 0, out);
  const i64 hi = clamp(floor_div(size - 1 - (k - 1) * dil + pad, stride) + 1, lo, out);
  return {lo, hi};
}

// ---------------------------------------------------------------------------------------------------
// Vectors of L lanes (GCC lowers them to whatever the target has), and the blocks of L windows.

template <int L>
struct Vec {
  typedef float F __attribute__((vector_size(4 * L)));
  typedef int32_t I __attribute__((vector_size(4 * L)));
  typedef int64_t Q __attribute__((vector_size(8 * L)));
};

template <int L>
typename Vec<L>::F load(const float* p) {
  typename Vec<L>::F v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

// p[0], p[S], ..., p[(L - 1) * S] for S = 1 or 2, reading nothing past the last of them.
template <int L, int S>
typename Vec<L>::F lanes(const float* p) {
  static_assert(S == 1 || S == 2, "strides 1 and 2 only");
  if constexpr (S == 1) {
    return load<L>(p);
  } else {
    typename Vec<L>::I even;  // p[2k] is lane 2k of p[0..L) below L/2, then lane 2k - L + 1 of p[L-1..)
    for (int k = 0; k < L; ++k) even[k] = k < L / 2 ? 2 * k : L + 2 * k - L + 1;
    return __builtin_shuffle(load<L>(p), load<L>(p + L - 1), even);
  }
}

// The taps of a block's windows that lie inside the plane: `rows` x `cols` of them, tap (i, j) at
// offset i * row_step + j * col_step from the window's first one.
struct Grid {
  i64 rows, cols, row_step, col_step;
};

// Runs block(ow, width) over the output columns [lo, hi) in blocks of width L = 16, 8 or 4 (a
// std::integral_constant), the last block moved back to end at hi (recomputing a few outputs beats a
// scalar tail), and one(ow) on each column of a span narrower than 4.
template <class Block, class One>
void in_blocks(i64 lo, i64 hi, Block block, One one) {
  auto run = [&](auto width) {
    constexpr i64 L = decltype(width)::value;
    for (i64 ow = lo; ow < hi; ow += L) block(ow < hi - L ? ow : hi - L, width);
  };
  const i64 n = hi - lo;
  if (n >= 16) {
    run(std::integral_constant<int, 16>{});
  } else if (n >= 8) {
    run(std::integral_constant<int, 8>{});
  } else if (n >= 4) {
    run(std::integral_constant<int, 4>{});
  } else {
    for (i64 ow = lo; ow < hi; ++ow) one(ow);
  }
}

// ---------------------------------------------------------------------------------------------------
// Max pooling forward

// A tap replaces the running maximum when strictly larger (ties keep the first tap in row-major window
// order) or NaN (a window's last NaN wins), as torch's kernel does.
inline bool takes(float v, float best) { return v > best || std::isnan(v); }

struct MaxGeom {
  i64 H, W, OH, OW, kH, kW, sH, sW, padH, padW, dilH, dilW;
};

// One output, any window: the running maximum over the taps inside the plane, from -inf at the first.
void max_one(const float* x, const MaxGeom& g, i64 oh, i64 ow, float* value, i64* index) {
  const i64 hs = oh * g.sH - g.padH, ws = ow * g.sW - g.padW;
  const Taps th = taps_inside(hs, g.kH, g.dilH, g.H), tw = taps_inside(ws, g.kW, g.dilW, g.W);
  float best = kNegInf;
  i64 at = (hs + th.first * g.dilH) * g.W + ws + tw.first * g.dilW;
  for (i64 i = th.first; i < th.end; ++i) {
    const i64 row = (hs + i * g.dilH) * g.W;
    for (i64 j = tw.first; j < tw.end; ++j) {
      const i64 pos = row + ws + j * g.dilW;
      if (takes(x[pos], best)) {
        best = x[pos];
        at = pos;
      }
    }
  }
  *value = best;
  *index = at;
}

// L windows side by side, S apart, every tap inside the plane; x is the first window's first tap, at
// its offset in the plane. Starting from the first tap equals starting from -inf (that tap takes
// itself only when NaN: no change). The winning tap's offset in the window is kept in 32 bits (the
// caller checks that it fits), and added to at in 64 at the end.
template <int L, int S>
void max_block(const float* __restrict x, const Grid& t, i64 at, float* __restrict value,
               i64* __restrict index) {
  using F = typename Vec<L>::F;
  using I = typename Vec<L>::I;
  F best = lanes<L, S>(x);
  I offset = {};
  for (i64 i = 0; i < t.rows; ++i) {
    for (i64 j = 0; j < t.cols; ++j) {
      const i64 off = i * t.row_step + j * t.col_step;
      const F v = lanes<L, S>(x + off);
      const I take = (v > best) | (v != v);  // v != v: NaN
      best = take ? v : best;
      offset = take ? I{} + static_cast<int32_t>(off) : offset;
    }
  }
  std::memcpy(value, &best, sizeof best);
  typename Vec<L>::Q pos = __builtin_convertvector(offset, typename Vec<L>::Q);
  for (int l = 0; l < L; ++l) pos[l] += at + l * S;
  std::memcpy(index, &pos, sizeof pos);
}

void max_forward_row(const float* x, const MaxGeom& g, i64 oh, float* value, i64* index) {
  const i64 hs = oh * g.sH - g.padH;
  const Taps th = taps_inside(hs, g.kH, g.dilH, g.H);
  const Grid t{th.end - th.first, g.kW, g.dilH * g.W, g.dilW};
  auto one = [&](i64 ow) { max_one(x, g, oh, ow, value + ow, index + ow); };
  Span in = inner_span(g.OW, g.W, g.kW, g.sW, g.padW, g.dilW);
  const bool fits = (t.rows - 1) * t.row_step + (t.cols - 1) * t.col_step <= INT32_MAX;
  if (t.rows <= 0 || (g.sW != 1 && g.sW != 2) || !fits) in = {0, 0};
  for (i64 ow = 0; ow < in.lo; ++ow) one(ow);
  auto block = [&](i64 ow, auto width) {
    constexpr int L = decltype(width)::value;
    const i64 at = (hs + th.first * g.dilH) * g.W + ow * g.sW - g.padW;
    if (g.sW == 1) {
      max_block<L, 1>(x + at, t, at, value + ow, index + ow);
    } else {
      max_block<L, 2>(x + at, t, at, value + ow, index + ow);
    }
  };
  in_blocks(in.lo, in.hi, block, one);
  for (i64 ow = in.hi; ow < g.OW; ++ow) one(ow);
}

// ---------------------------------------------------------------------------------------------------
// Average pooling

struct AvgGeom {
  i64 H, W, OH, OW, kH, kW, sH, sW, padH, padW;
  bool count_include_pad;
  i64 divisor_override;
};

// A window's extent along one axis: `pooled` counts the padding (but not the overhang past it that
// ceil_mode allows), [lo, hi) is the part inside the plane.
struct Extent {
  i64 pooled, lo, hi;
};
Extent extent(i64 o, i64 k, i64 stride, i64 pad, i64 size) {
  const i64 start = o * stride - pad, end = start + k < size + pad ? start + k : size + pad;
  return {end - start, start > 0 ? start : 0, end < size ? end : size};
}

i64 divisor(const AvgGeom& g, const Extent& eh, const Extent& ew) {
  if (g.divisor_override != 0) return g.divisor_override;
  if (g.count_include_pad) return eh.pooled * ew.pooled;
  return (eh.hi - eh.lo) * (ew.hi - ew.lo);
}

// One output, any window: the sum of the pixels inside the plane in row-major order, over the divisor.
// An empty window gives 0 (as torch), never 0 / 0. Quotients are added to 0, as torch adds them to a
// zeroed output: a sum of +0 over a negative divisor_override gives +0, not -0.
float avg_one(const float* x, const AvgGeom& g, const Extent& eh, i64 ow) {
  const Extent ew = extent(ow, g.kW, g.sW, g.padW, g.W);
  if (eh.lo >= eh.hi || ew.lo >= ew.hi) return 0.0f;
  float sum = 0.0f;
  for (i64 r = eh.lo; r < eh.hi; ++r)
    for (i64 c = ew.lo; c < ew.hi; ++c) sum += x[r * g.W + c];
  return 0.0f + sum / static_cast<float>(divisor(g, eh, ew));
}

// L windows side by side, S apart, every tap inside the plane; x is the first window's first tap.
// The same sums, in the same order, as avg_one.
template <int L, int S>
void avg_block(const float* __restrict x, const Grid& t, float divisor, float* __restrict out) {
  typename Vec<L>::F sum = {};
  for (i64 i = 0; i < t.rows; ++i)
    for (i64 j = 0; j < t.cols; ++j) sum += lanes<L, S>(x + i * t.row_step + j);
  sum = 0.0f + sum / divisor;
  std::memcpy(out, &sum, sizeof sum);
}

void avg_forward_row(const float* x, const AvgGeom& g, i64 oh, float* out) {
  const Extent eh = extent(oh, g.kH, g.sH, g.padH, g.H);
  const Grid t{eh.hi - eh.lo, g.kW, g.W, 1};
  auto one = [&](i64 ow) { out[ow] = avg_one(x, g, eh, ow); };
  Span in = inner_span(g.OW, g.W, g.kW, g.sW, g.padW, 1);
  if (t.rows <= 0 || (g.sW != 1 && g.sW != 2)) in = {0, 0};
  for (i64 ow = 0; ow < in.lo; ++ow) one(ow);
  if (in.lo < in.hi) {
    // every window here has all kW columns: one divisor
    const float d = static_cast<float>(divisor(g, eh, extent(in.lo, g.kW, g.sW, g.padW, g.W)));
    auto block = [&](i64 ow, auto width) {
      constexpr int L = decltype(width)::value;
      const float* first = x + eh.lo * g.W + ow * g.sW - g.padW;
      if (g.sW == 1) {
        avg_block<L, 1>(first, t, d, out + ow);
      } else {
        avg_block<L, 2>(first, t, d, out + ow);
      }
    };
    in_blocks(in.lo, in.hi, block, one);
  }
  for (i64 ow = in.hi; ow < g.OW; ++ow) one(ow);
}

// One input row of the gradient: zeroed, then every window covering it adds grad / divisor to its
// pixels in this row, windows in output order (the order torch adds them in, so the sums match).
void avg_backward_row(const float* grad_out, const AvgGeom& g, i64 r, float* grad_row) {
  std::memset(grad_row, 0, sizeof(float) * g.W);
  // windows oh with oh * sH - padH <= r < oh * sH - padH + kH
  const i64 oh_lo = clamp(ceil_div(r + g.padH - g.kH + 1, g.sH), 0, g.OH);
  const i64 oh_hi = clamp(floor_div(r + g.padH, g.sH) + 1, oh_lo, g.OH);
  const Span in = inner_span(g.OW, g.W, g.kW, g.sW, g.padW, 1);
  for (i64 oh = oh_lo; oh < oh_hi; ++oh) {
    const Extent eh = extent(oh, g.kH, g.sH, g.padH, g.H);
    const float* go = grad_out + oh * g.OW;
    auto scatter = [&](i64 ow) {
      const Extent ew = extent(ow, g.kW, g.sW, g.padW, g.W);
      if (ew.lo >= ew.hi) return;
      const float d = go[ow] / static_cast<float>(divisor(g, eh, ew));
      for (i64 c = ew.lo; c < ew.hi; ++c) grad_row[c] += d;
    };
    for (i64 ow = 0; ow < in.lo; ++ow) scatter(ow);
    if (g.kW == 2 && g.sW == 2 && in.lo < in.hi) {  // windows side by side: one add per pixel
      const float d = static_cast<float>(divisor(g, eh, extent(in.lo, g.kW, g.sW, g.padW, g.W)));
      float* dst = grad_row - g.padW;
      for (i64 ow = in.lo; ow < in.hi; ++ow) {
        const float v = go[ow] / d;
        dst[2 * ow] += v;
        dst[2 * ow + 1] += v;
      }
    } else {
      for (i64 ow = in.lo; ow < in.hi; ++ow) scatter(ow);
    }
    for (i64 ow = in.hi; ow < g.OW; ++ow) scatter(ow);
  }
}

// Rows of a plane are split into this many chunks so that a few planes still keep every thread busy.
i64 chunks_per_plane(i64 planes, i64 rows, int threads) {
  if (planes == 0 || planes >= threads || rows <= 1) return 1;
  const i64 want = (threads + planes - 1) / planes;
  return want < rows ? want : rows;
}

}  // namespace

extern "C" {

void cnnzoo_max_pool2d_forward(const float* x, float* values, int64_t* indices, const int64_t* p,
                               int threads) {
  const i64 planes = p[0];
  const MaxGeom g{p[1], p[2], p[3], p[4], p[5], p[6], p[7], p[8], p[9], p[10], p[11], p[12]};
  const i64 units = planes * g.OH;  // one output row each
  if (units == 0 || g.OW == 0) return;
  const bool parallel = threads > 1 && units * g.OW * g.kH * g.kW > kSerialWork;
#pragma omp parallel for schedule(static) num_threads(threads) if (parallel)
  for (i64 u = 0; u < units; ++u) {
    const i64 plane = u / g.OH, oh = u % g.OH;
    max_forward_row(x + plane * g.H * g.W, g, oh, values + u * g.OW, indices + u * g.OW);
  }
}

void cnnzoo_max_pool2d_backward(const float* grad_out, const int64_t* indices, float* grad_x,
                                const int64_t* p, int threads) {
  const i64 planes = p[0], H = p[1], W = p[2], outs = p[3] * p[4];
  const i64 chunks = chunks_per_plane(planes, H, threads);
  const i64 units = planes * chunks;
  if (units == 0 || W == 0) return;
  const bool parallel = threads > 1 && planes * (H * W + outs) > kSerialWork;
#pragma omp parallel for schedule(static) num_threads(threads) if (parallel)
  for (i64 u = 0; u < units; ++u) {
    // Each unit owns the rows of one chunk of a plane, zeroes them (just before they are needed, so
    // they stay in cache) and takes the outputs whose index lands there, in output order as torch
    // adds them. Indices outside the plane (they may come from the user) are ignored.
    const i64 plane = u / chunks, chunk = u % chunks;
    const i64 lo = H * chunk / chunks * W, hi = H * (chunk + 1) / chunks * W;
    float* gx = grad_x + plane * H * W;
    const float* go = grad_out + plane * outs;
    const i64* idx = indices + plane * outs;
    std::memset(gx + lo, 0, sizeof(float) * (hi - lo));
    for (i64 o = 0; o < outs; ++o) {
      const i64 at = idx[o];
      if (at >= lo && at < hi) gx[at] += go[o];
    }
  }
}

void cnnzoo_avg_pool2d_forward(const float* x, float* out, const int64_t* p, int threads) {
  const i64 planes = p[0];
  const AvgGeom g{p[1], p[2], p[3], p[4], p[5], p[6], p[7], p[8], p[9], p[10], p[11] != 0, p[12]};
  const i64 units = planes * g.OH;  // one output row each
  if (units == 0 || g.OW == 0) return;
  const bool parallel = threads > 1 && units * g.OW * g.kH * g.kW > kSerialWork;
#pragma omp parallel for schedule(static) num_threads(threads) if (parallel)
  for (i64 u = 0; u < units; ++u) {
    const i64 plane = u / g.OH, oh = u % g.OH;
    avg_forward_row(x + plane * g.H * g.W, g, oh, out + u * g.OW);
  }
}

void cnnzoo_avg_pool2d_backward(const float* grad_out, float* grad_x, const int64_t* p, int threads) {
  const i64 planes = p[0];
  const AvgGeom g{p[1], p[2], p[3], p[4], p[5], p[6], p[7], p[8], p[9], p[10], p[11] != 0, p[12]};
  const i64 units = planes * g.H;  // one input row each
  if (units == 0 || g.W == 0) return;
  const bool parallel = threads > 1 && planes * (g.H * g.W + g.OH * g.OW * g.kH * g.kW) > kSerialWork;
#pragma omp parallel for schedule(static) num_threads(threads) if (parallel)
  for (i64 u = 0; u < units; ++u) {
    const i64 plane = u / g.H, r = u % g.H;
    avg_backward_row(grad_out + plane * g.OH * g.OW, g, r, grad_x + u * g.W);
  }
}

}  // extern "C"

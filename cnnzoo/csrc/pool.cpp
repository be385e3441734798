// Max and average pooling on the CPU: float32, contiguous NCHW seen as `planes` planes of H x W.
//
// Plain C ABI (no torch headers), loaded with ctypes; each kernel takes its tensors' data, a
// PoolGeometry (cnnzoo.h) and a thread count. Each kernel computes what its reference in
// cnnzoo/ops/pool.py computes, and equals torch's CPU kernel to the bit (sums added in its order):
//   cnnzoo_max_pool2d_forward   max_pool2d_forward    (values and flat indices row * W + col)
//   cnnzoo_max_pool2d_backward  max_pool2d_backward
//   cnnzoo_avg_pool2d_forward   window_sums / avg_divisor
//   cnnzoo_avg_pool2d_backward  window_sums_backward of grad_out / avg_divisor
//   cnnzoo_adaptive_avg_pool2d_forward / _backward  adaptive_avg_pool2d_forward / _backward (to rounding)
// The caller computes the output size (ceil_mode included) and passes it in.
//
// Forward work is split into output rows, so that every thread has work even for a single plane.
// Within a row, the windows that lie wholly inside the plane are computed 16 (or 8, or 4) at a time
// with GCC vector extensions, for column strides 1 and 2; the others take a scalar path that skips
// the taps outside the plane. Both visit a window's taps in the same (row-major) order. Backward
// passes write each gradient row just after zeroing it (while it is in cache), or write it once
// outright where nothing overlaps, and add in torch's order, so that the sums round the same.
// The vector code is GCC's (9 or later: __builtin_shuffle, __builtin_convertvector).

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>

#include "cnnzoo.h"

namespace {

using cnnzoo::ceil_div;
using cnnzoo::PoolGeometry;
using i64 = int64_t;

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// Below this many taps a call runs on one thread: waking a second costs more than it saves.
constexpr i64 kSerialWork = i64{1} << 15;

int team(int threads) { return threads > 1 ? threads : 1; }

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

// Vectors are passed by reference: by value, their ABI would depend on the target's vector width.
template <int L>
void load(typename Vec<L>::F& v, const float* p) {
  std::memcpy(&v, p, sizeof v);
}

// v = p[0], p[S], ..., p[(L - 1) * S] for S = 1 or 2, reading nothing past the last of them.
template <int L, int S>
void load_lanes(typename Vec<L>::F& v, const float* p) {
  static_assert(S == 1 || S == 2, "strides 1 and 2 only");
  if constexpr (S == 1) {
    load<L>(v, p);
  } else {
    typename Vec<L>::F a, b;
    load<L>(a, p);
    load<L>(b, p + L - 1);
    typename Vec<L>::I even;  // p[2k] is lane 2k of a below L/2, then lane 2k - L + 1 of b
    for (int k = 0; k < L; ++k) even[k] = k < L / 2 ? 2 * k : L + 2 * k - L + 1;
    v = __builtin_shuffle(a, b, even);
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

// One output, any window: the running maximum over the taps inside the plane, from -inf at the first.
void max_one(const float* x, const PoolGeometry& g, i64 oh, i64 ow, float* value, i64* index) {
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
void max_block(const float* __restrict x, const Grid& t, i64 at, float* __restrict value, i64* __restrict index) {
  using F = typename Vec<L>::F;
  using I = typename Vec<L>::I;
  F best;
  load_lanes<L, S>(best, x);
  I offset = {};
  for (i64 i = 0; i < t.rows; ++i) {
    for (i64 j = 0; j < t.cols; ++j) {
      const i64 off = i * t.row_step + j * t.col_step;
      F v;
      load_lanes<L, S>(v, x + off);
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

void max_forward_row(const float* x, const PoolGeometry& g, i64 oh, float* value, i64* index) {
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

// A window's extent along one axis: `pooled` counts the padding (but not the overhang past it that
// ceil_mode allows), [lo, hi) is the part inside the plane.
struct Extent {
  i64 pooled, lo, hi;
};
Extent extent(i64 o, i64 k, i64 stride, i64 pad, i64 size) {
  const i64 start = o * stride - pad, end = start + k < size + pad ? start + k : size + pad;
  return {end - start, start > 0 ? start : 0, end < size ? end : size};
}

i64 divisor(const PoolGeometry& g, const Extent& eh, const Extent& ew) {
  if (g.divisor_override != 0) return g.divisor_override;
  if (g.count_include_pad) return eh.pooled * ew.pooled;
  return (eh.hi - eh.lo) * (ew.hi - ew.lo);
}

// One output, any window: the sum of the pixels inside the plane in row-major order, over the divisor.
// An empty window gives 0 (as torch), never 0 / 0. Quotients are added to 0, as torch adds them to a
// zeroed output: a sum of +0 over a negative divisor_override gives +0, not -0.
float avg_one(const float* x, const PoolGeometry& g, const Extent& eh, i64 ow) {
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
  typename Vec<L>::F sum = {}, v;
  for (i64 i = 0; i < t.rows; ++i) {
    for (i64 j = 0; j < t.cols; ++j) {
      load_lanes<L, S>(v, x + i * t.row_step + j * t.col_step);
      sum += v;
    }
  }
  sum = 0.0f + sum / divisor;
  std::memcpy(out, &sum, sizeof sum);
}

void avg_forward_row(const float* x, const PoolGeometry& g, i64 oh, float* out) {
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

// dst[l * S] += go[l] / divisor for the L windows side by side, S apart, whose tap is at dst[0]. With
// S = 2 the pixels between the taps get +0, which leaves them as they are (a gradient sum that
// starts from +0 is never -0).
template <int L, int S>
void add_block(float* __restrict dst, const float* __restrict go, float divisor) {
  using F = typename Vec<L>::F;
  F v, a, b;
  load<L>(v, go);
  v /= divisor;
  load<L>(a, dst);
  if constexpr (S == 1) {
    a += v;
    std::memcpy(dst, &a, sizeof a);
  } else {
    // dst[0..L) takes v[0..L/2) at even lanes, then dst[L-1..2L-1) takes v[L/2..L) at odd lanes: no
    // access past the last tap (lane L of the shuffles is 0)
    typename Vec<L>::I low, high;
    for (int k = 0; k < L; ++k) {
      low[k] = k % 2 == 0 ? k / 2 : L;
      high[k] = k % 2 == 1 ? L / 2 + k / 2 : L;
    }
    const F zero = {};
    a += __builtin_shuffle(v, zero, low);
    std::memcpy(dst, &a, sizeof a);
    load<L>(b, dst + L - 1);
    b += __builtin_shuffle(v, zero, high);
    std::memcpy(dst + L - 1, &b, sizeof b);
  }
}

// dst[2l] and dst[2l + 1] += go[l] / divisor for L windows side by side, 2 apart: their taps j - 1
// and j, for a tap j.
template <int L>
void add_pair(float* __restrict dst, const float* __restrict go, float divisor) {
  using F = typename Vec<L>::F;
  F v, a, b;
  load<L>(v, go);
  v /= divisor;
  typename Vec<L>::I low, high;  // each lane twice: v[0..L/2) into dst[0..L), v[L/2..L) after
  for (int k = 0; k < L; ++k) {
    low[k] = k / 2;
    high[k] = L / 2 + k / 2;
  }
  load<L>(a, dst);
  a += __builtin_shuffle(v, low);
  std::memcpy(dst, &a, sizeof a);
  load<L>(b, dst + L);
  b += __builtin_shuffle(v, high);
  std::memcpy(dst + L, &b, sizeof b);
}

// One input row of the gradient: zeroed, then every window covering it adds grad / divisor to its
// pixels in this row, in output order (the order torch adds them in, so the sums match): windows
// above before windows below, and left before right. The inner windows go tap by tap, from the
// window's last column to its first: a pixel then gets its windows from left to right. With stride
// 2, taps j - 1 and j of all windows reach disjoint pixels that no other pass in between reaches:
// they go in one pass.
template <int S>
void add_inner(float* grad_row, const float* go, const PoolGeometry& g, Span in, float divisor) {
  for (i64 j = g.kW - 1; j >= 0;) {
    const bool pair = S == 2 && j >= 1;
    float* dst = grad_row + j - (pair ? 1 : 0) - g.padW;  // window ow's (first) tap is dst[ow * S]
    i64 ow = in.lo;
    auto blocks = [&](auto width) {
      constexpr int L = decltype(width)::value;
      for (; ow + L <= in.hi; ow += L) {
        if (pair) {
          add_pair<L>(dst + ow * S, go + ow, divisor);
        } else {
          add_block<L, S>(dst + ow * S, go + ow, divisor);
        }
      }
    };
    blocks(std::integral_constant<int, 16>{});
    blocks(std::integral_constant<int, 4>{});
    for (; ow < in.hi; ++ow) {
      const float v = go[ow] / divisor;
      dst[ow * S] += v;
      if (pair) dst[ow * S + 1] += v;
    }
    j -= pair ? 2 : 1;
  }
}

void avg_backward_row(const float* grad_out, const PoolGeometry& g, i64 r, float* grad_row) {
  std::memset(grad_row, 0, sizeof(float) * g.W);
  // windows oh with oh * sH - padH <= r < oh * sH - padH + kH
  const i64 oh_lo = clamp(ceil_div(r + g.padH - g.kH + 1, g.sH), 0, g.OH);
  const i64 oh_hi = clamp(floor_div(r + g.padH, g.sH) + 1, oh_lo, g.OH);
  Span in = inner_span(g.OW, g.W, g.kW, g.sW, g.padW, 1);
  if (g.sW != 1 && g.sW != 2) in = {0, 0};
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
    if (in.lo < in.hi) {
      const float d = static_cast<float>(divisor(g, eh, extent(in.lo, g.kW, g.sW, g.padW, g.W)));
      if (g.sW == 1) {
        add_inner<1>(grad_row, go, g, in, d);
      } else {
        add_inner<2>(grad_row, go, g, in, d);
      }
    }
    for (i64 ow = in.hi; ow < g.OW; ++ow) scatter(ow);
  }
}

// Max pooling backward of one plane when every index lies in its own tile of a kH x 2 tiling of the
// plane (as max pooling with kernel = stride = (kH, 2) and no padding gives): no pixel then gets two
// gradients, so each row of grad_x is written once, without zeroing it first. Returns false at the
// first output row with an index outside its tile; the caller then starts the plane over.
bool max_backward_tiled(const float* __restrict go, const i64* __restrict idx, float* __restrict gx, i64 H, i64 W,
                        i64 OH, i64 OW, i64 kH) {
  for (i64 oh = 0; oh < OH; ++oh) {
    i64 hits = 0;
    for (i64 r = oh * kH; r < (oh + 1) * kH; ++r) {
      float* __restrict row = gx + r * W;
      const float* __restrict g = go + oh * OW;
      const i64* __restrict at = idx + oh * OW;
      for (i64 ow = 0; ow < OW; ++ow) {
        const bool left = at[ow] == r * W + 2 * ow, right = at[ow] == r * W + 2 * ow + 1;
        const float v = 0.0f + g[ow];  // as added to a zeroed gradient: -0 becomes +0
        row[2 * ow] = left ? v : 0.0f;
        row[2 * ow + 1] = right ? v : 0.0f;
        hits += left + right;
      }
      for (i64 c = 2 * OW; c < W; ++c) row[c] = 0.0f;
    }
    if (hits != OW) return false;
  }
  std::memset(gx + OH * kH * W, 0, sizeof(float) * (H - OH * kH) * W);
  return true;
}

// Rows of a plane are split into this many chunks so that a few planes still keep every thread busy.
i64 chunks_per_plane(i64 planes, i64 rows, int threads) {
  if (planes == 0 || planes >= threads || rows <= 1) return 1;
  const i64 want = (threads + planes - 1) / planes;
  return want < rows ? want : rows;
}

// Runs row(u) for every unit u < units (a row of one plane), on all threads when the work (taps
// visited) is worth waking them for.
template <typename Row>
void over_rows(i64 units, i64 work, int threads, Row row) {
  const bool parallel = threads > 1 && work > kSerialWork;
#pragma omp parallel for schedule(static) num_threads(team(threads)) if (parallel)
  for (i64 u = 0; u < units; ++u) row(u);
}

}  // namespace

extern "C" {

void cnnzoo_max_pool2d_forward(const float* x, float* values, int64_t* indices, const PoolGeometry* geometry,
                               int threads) {
  const PoolGeometry& g = *geometry;
  const i64 units = g.planes * g.OH;  // one output row each
  if (units == 0 || g.OW == 0) return;
  over_rows(units, units * g.OW * g.kH * g.kW, threads, [&](i64 u) {
    max_forward_row(x + u / g.OH * g.H * g.W, g, u % g.OH, values + u * g.OW, indices + u * g.OW);
  });
}

void cnnzoo_max_pool2d_backward(const float* grad_out, const int64_t* indices, float* grad_x, const PoolGeometry* g,
                                int threads) {
  const i64 planes = g->planes, H = g->H, W = g->W, OH = g->OH, OW = g->OW, outs = OH * OW;
  const i64 chunks = chunks_per_plane(planes, H, threads);
  // Output columns half as many as the input's suggest stride-2 windows side by side: try tiles.
  const bool tiled = chunks == 1 && OH > 0 && OW > 0 && OH <= H && W / OW == 2;
  const i64 units = planes * chunks;
  if (units == 0 || H == 0 || W == 0) return;
  const bool parallel = threads > 1 && planes * (H * W + outs) > kSerialWork;
#pragma omp parallel for schedule(static) num_threads(team(threads)) if (parallel)
  for (i64 u = 0; u < units; ++u) {
    // Each unit owns the rows of one chunk of a plane, zeroes them (just before they are needed, so
    // they stay in cache) and takes the outputs whose index lands there, in output order as torch
    // adds them. Indices outside the plane (they may come from the user) are ignored.
    const i64 plane = u / chunks, chunk = u % chunks;
    const i64 lo = H * chunk / chunks * W, hi = H * (chunk + 1) / chunks * W;
    float* gx = grad_x + plane * H * W;
    const float* go = grad_out + plane * outs;
    const i64* idx = indices + plane * outs;
    if (tiled && max_backward_tiled(go, idx, gx, H, W, OH, OW, H / OH)) continue;
    std::memset(gx + lo, 0, sizeof(float) * (hi - lo));
    for (i64 o = 0; o < outs; ++o) {
      const i64 at = idx[o];
      if (at >= lo && at < hi) gx[at] += go[o];
    }
  }
}

void cnnzoo_avg_pool2d_forward(const float* x, float* out, const PoolGeometry* geometry, int threads) {
  const PoolGeometry& g = *geometry;
  const i64 units = g.planes * g.OH;  // one output row each
  if (units == 0 || g.OW == 0) return;
  over_rows(units, units * g.OW * g.kH * g.kW, threads,
            [&](i64 u) { avg_forward_row(x + u / g.OH * g.H * g.W, g, u % g.OH, out + u * g.OW); });
}

void cnnzoo_avg_pool2d_backward(const float* grad_out, float* grad_x, const PoolGeometry* geometry, int threads) {
  const PoolGeometry& g = *geometry;
  const i64 units = g.planes * g.H;  // one input row each
  if (units == 0 || g.W == 0) return;
  over_rows(units, g.planes * (g.H * g.W + g.OH * g.OW * g.kH * g.kW), threads,
            [&](i64 u) { avg_backward_row(grad_out + u / g.H * g.OH * g.OW, g, u % g.H, grad_x + u * g.W); });
}

}  // extern "C"

// Adaptive average pooling: bin i of an axis of length `size` pooled to `out` is the pixels
// [floor(i * size / out), ceil((i + 1) * size / out)), so neighbouring bins may share a pixel. Must
// equal pool.py's adaptive_avg_pool2d_forward / adaptive_avg_pool2d_backward.
namespace {

inline int64_t bin_start(int64_t i, int64_t size, int64_t out) { return i * size / out; }
inline int64_t bin_end(int64_t i, int64_t size, int64_t out) { return ((i + 1) * size + out - 1) / out; }

// f(q) for every plane q < planes, split over the threads unless the planes are small.
template <typename F>
void over_planes(int64_t planes, int64_t plane_size, int threads, F f) {
#pragma omp parallel for num_threads(threads) schedule(static) if (planes * plane_size >= kSerialWork)
  for (int64_t q = 0; q < planes; ++q) f(q);
}

// The sum of p[0, n): 16 lanes at a time into two vector accumulators, the rest one by one.
float run_sum(const float* p, int64_t n) {
  using F = Vec<16>::F;
  F a{}, b{}, v;
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    load<16>(v, p + i);
    a += v;
    load<16>(v, p + i + 16);
    b += v;
  }
  for (; i + 16 <= n; i += 16) {
    load<16>(v, p + i);
    a += v;
  }
  a += b;
  float sum = 0.0f;
  for (int lane = 0; lane < 16; ++lane) sum += a[lane];
  for (; i < n; ++i) sum += p[i];
  return sum;
}

}  // namespace

extern "C" {

void cnnzoo_adaptive_avg_pool2d_forward(const float* x, float* out, const PoolGeometry* g, int threads) {
  const int64_t planes = g->planes, H = g->H, W = g->W, OH = g->OH, OW = g->OW;
  over_planes(planes, H * W, threads, [&](int64_t q) {
    const float* in = x + q * H * W;
    float* o = out + q * OH * OW;
    for (int64_t oh = 0; oh < OH; ++oh) {
      int64_t h0 = bin_start(oh, H, OH), h1 = bin_end(oh, H, OH);
      for (int64_t ow = 0; ow < OW; ++ow) {
        int64_t w0 = bin_start(ow, W, OW), w1 = bin_end(ow, W, OW);
        float sum = 0.0f;
        if (w0 == 0 && w1 == W && (h1 - h0) * W >= 16)  // whole rows: one run (global pooling: the plane)
          sum = run_sum(in + h0 * W, (h1 - h0) * W);
        else if (w1 - w0 >= 16)
          for (int64_t h = h0; h < h1; ++h) sum += run_sum(in + h * W + w0, w1 - w0);
        else  // short rows: one by one
          for (int64_t h = h0; h < h1; ++h)
            for (int64_t w = w0; w < w1; ++w) sum += in[h * W + w];
        o[oh * OW + ow] = sum / (float)((h1 - h0) * (w1 - w0));
      }
    }
  });
}

// writes every element of grad_x
void cnnzoo_adaptive_avg_pool2d_backward(const float* grad_out, float* grad_x, const PoolGeometry* g, int threads) {
  const int64_t planes = g->planes, H = g->H, W = g->W, OH = g->OH, OW = g->OW;
  over_planes(planes, H * W, threads, [&](int64_t q) {
    const float* g = grad_out + q * OH * OW;
    float* gx = grad_x + q * H * W;
    if (OH == 1 && OW == 1) {  // global pooling: one share everywhere
      const float share = g[0] / (float)(H * W);
      for (int64_t i = 0; i < H * W; ++i) gx[i] = share;
      return;
    }
    std::memset(gx, 0, sizeof(float) * H * W);
    for (int64_t oh = 0; oh < OH; ++oh) {
      int64_t h0 = bin_start(oh, H, OH), h1 = bin_end(oh, H, OH);
      for (int64_t ow = 0; ow < OW; ++ow) {
        int64_t w0 = bin_start(ow, W, OW), w1 = bin_end(ow, W, OW);
        float share = g[oh * OW + ow] / (float)((h1 - h0) * (w1 - w0));
        for (int64_t h = h0; h < h1; ++h)
          for (int64_t w = w0; w < w1; ++w) gx[h * W + w] += share;
      }
    }
  });
}

}  // extern "C"

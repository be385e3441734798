// Direct 2-D convolution on the CPU, float32: the compiled kernels of torch.ops.cnnzoo.conv2d,
// conv2d_input_grad and conv2d_weight_grad. Plain C ABI (no torch headers), loaded with ctypes; each
// takes its tensors' data, a ConvGeometry (cnnzoo.h) and a thread count, and must equal its reference
// in cnnzoo/ops/conv.py up to float32 rounding (the tests hold both against torch.nn.functional):
//   cnnzoo_conv2d_forward      conv2d_forward
//   cnnzoo_conv2d_input_grad   conv2d_input_grad
//   cnnzoo_conv2d_weight_grad  conv2d_weight_grad
//
// The method, per image:
//   1. copy the image into a channels-last buffer with its left and right zero padding, so that a
//      pixel's channels are contiguous (rows that fall in the top or bottom padding are skipped,
//      never stored);
//   2. compute a block of R output pixels x V vectors of output channels in registers: for every
//      kernel tap and input channel, broadcast one input value per pixel and multiply-add it with a
//      vector of V*VL filter weights (the output channels are the vector dimension);
//   3. copy the channels-last result into the output tensor (any strides), adding the bias.
// The input gradient is the same block kernel run on grad_output with the filters transposed
// (output channels become the reduction, input channels the vector dimension) and the taps read in
// reverse: for stride s, each of the s*s phases of input pixels is a stride-1 sum over the taps
// that reach it. The weight gradient is a block of R (tap column, input channel) pairs x V vectors
// of output channels, accumulated over every output pixel.
//
// Threads: with at least as many images as threads, each thread takes whole images (its buffers
// stay in its own cache); the images left over are shared by every thread, split over output rows
// and channel blocks, so a batch smaller than the thread count still uses every thread.
//
// A 1x1 convolution with a stride runs as a stride-1 one on the subsampled input (`subsampled`).
//
// Small planes (8x8 and below in the zoo) leave too few pixels per row for a full register block,
// and too little work per image to pay for streaming the weights once per image. There the images
// go side by side: a chunk of images in one buffer [row][col][image][channel], a block's R pixels
// are one pixel position in R images (or, at stride 1 in the interior of a row, where every column has
// the same taps, consecutive (column, image) pairs), and taps that fall in the padding (rows and
// columns) are skipped, so the buffer needs none. Every thread shares every chunk, split over (position, block
// of images, panel); the weight gradient over (tap, channel block, panel), into one accumulator
// (it goes side by side below 64 output pixels, where it also spares a per-thread accumulator).

#include <omp.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <utility>
#include <vector>

#include "blocks.h"
#include "cnnzoo.h"

namespace {

using cnnzoo::ceil_div;
using cnnzoo::ConvGeometry;
using cnnzoo::Strides;
using namespace cnnzoo;  // blocks.h: vec, the register block, Buffer

// One stretch of the reduction: `k` consecutive channels read from src + `src` (per pixel, the
// pixels `step` floats apart) against `k` rows of packed weights starting at `w`.
struct Segment {
  int64_t src;
  const float* w;
  int64_t k;
};

// Adds a segment to the list, merging it into the previous one when both continue each other
// (consecutive taps of one row over all channels are one long stretch).
inline void add_segment(std::vector<Segment>& segs, int64_t src, const float* w, int64_t k, int64_t wstride) {
  if (!segs.empty()) {
    Segment& last = segs.back();
    if (last.src + last.k == src && last.w + last.k * wstride == w) {
      last.k += k;
      return;
    }
  }
  segs.push_back({src, w, k});
}

// dst[r*dstep + v*VL + lane] (+)= sum over segments and k of src[r*step + seg.src + k] * w[k*wstride + v*VL + lane]
template <int R, int V>
void dot_block(const float* src, int64_t step, const Segment* segs, int nseg, int64_t wstride, float* dst,
               int64_t dstep, bool accumulate) {
  vec acc[R][V];
  load_block<R, V>(acc, dst, dstep, accumulate);
  for (int s = 0; s < nseg; ++s) {
    const float* x = src + segs[s].src;
    const float* w = segs[s].w;
    for (int64_t k = segs[s].k; k > 0; --k, ++x, w += wstride) rank1_update<R, V>(acc, x, step, w);
  }
  store_block<R, V>(acc, dst, dstep);
}

// gw[r*gstride + v*VL + lane] += sum over rows y < rows, columns t < cols of
//   x[y*xrow + t*xstep + r] * g[y*grow + t*gstep + v*VL + lane]
template <int R, int V>
void outer_block(const float* x, int64_t xrow, int64_t xstep, const float* g, int64_t grow, int64_t gstep, int64_t rows,
                 int64_t cols, float* gw, int64_t gstride) {
  vec acc[R][V];
  load_block<R, V>(acc, gw, gstride, true);
  for (int64_t y = 0; y < rows; ++y) {
    const float* xp = x + y * xrow;
    const float* gp = g + y * grow;
    for (int64_t t = 0; t < cols; ++t, xp += xstep, gp += gstep) rank1_update<R, V>(acc, xp, 1, gp);
  }
  store_block<R, V>(acc, gw, gstride);
}

// For few output channels (NC): dst[r*dstep + c] (+)= sum over segments and k of
//   src[r*step + seg.src + k] * w[c*wstride + k]
// with the reduction along the vector lanes (k in whole vectors), each sum's lanes added at the end.
template <int R, int NC>
void lane_dot_block(const float* src, int64_t step, const Segment* segs, int nseg, int64_t wstride, float* dst,
                    int64_t dstep, bool accumulate) {
  vec acc[R][NC];
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 8
    for (int c = 0; c < NC; ++c) acc[r][c] = vec{};
  for (int s = 0; s < nseg; ++s) {
    const float* x = src + segs[s].src;
    const float* w = segs[s].w;
    for (int64_t k = 0; k < segs[s].k; k += VL, x += VL, w += VL) {
      vec wv[NC];
#pragma GCC unroll 8
      for (int c = 0; c < NC; ++c) wv[c] = load(w + c * wstride);
#pragma GCC unroll 16
      for (int r = 0; r < R; ++r) {
        vec xv = load(x + r * step);
#pragma GCC unroll 8
        for (int c = 0; c < NC; ++c) acc[r][c] += xv * wv[c];
      }
    }
  }
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < NC; ++c) {
      float sum = accumulate ? dst[r * dstep + c] : 0.0f;
      for (int lane = 0; lane < VL; ++lane) sum += acc[r][c][lane];
      dst[r * dstep + c] = sum;
    }
}

using DotFn = void (*)(const float*, int64_t, const Segment*, int, int64_t, float*, int64_t, bool);
using OuterFn = void (*)(const float*, int64_t, int64_t, const float*, int64_t, int64_t, int64_t, int64_t, float*,
                         int64_t);

template <int V, int... R>
constexpr std::array<DotFn, sizeof...(R)> dot_table(std::integer_sequence<int, R...>) {
  return {&dot_block<R + 1, V>...};
}
template <int V, int... R>
constexpr std::array<OuterFn, sizeof...(R)> outer_table(std::integer_sequence<int, R...>) {
  return {&outer_block<R + 1, V>...};
}

// DOT[v-1][r-1] is dot_block<r, v>; likewise OUTER.
const std::array<DotFn, max_rows(1)> DOT1 = dot_table<1>(std::make_integer_sequence<int, max_rows(1)>{});
const std::array<DotFn, max_rows(2)> DOT2 = dot_table<2>(std::make_integer_sequence<int, max_rows(2)>{});
const std::array<OuterFn, max_rows(1)> OUTER1 = outer_table<1>(std::make_integer_sequence<int, max_rows(1)>{});
const std::array<OuterFn, max_rows(2)> OUTER2 = outer_table<2>(std::make_integer_sequence<int, max_rows(2)>{});

DotFn dot_fn(int v, int r) { return v == 1 ? DOT1[r - 1] : DOT2[r - 1]; }

// The lane kernels serve up to LANE_MAX channels, rounded up to one of 1, 2, 3, 4, 6.
constexpr int LANE_MAX = 6;
constexpr int lane_channels(int64_t c) { return c <= 4 ? (int)c : 6; }
constexpr int lane_rows(int nc) { return nc == 1 ? 14 : nc == 2 ? 12 : nc == 3 ? 8 : 4; }
template <int NC, int... R>
constexpr std::array<DotFn, sizeof...(R)> lane_table(std::integer_sequence<int, R...>) {
  return {&lane_dot_block<R + 1, NC>...};
}
const std::array<DotFn, lane_rows(1)> LANE1 = lane_table<1>(std::make_integer_sequence<int, lane_rows(1)>{});
const std::array<DotFn, lane_rows(2)> LANE2 = lane_table<2>(std::make_integer_sequence<int, lane_rows(2)>{});
const std::array<DotFn, lane_rows(3)> LANE3 = lane_table<3>(std::make_integer_sequence<int, lane_rows(3)>{});
const std::array<DotFn, lane_rows(4)> LANE4 = lane_table<4>(std::make_integer_sequence<int, lane_rows(4)>{});
const std::array<DotFn, lane_rows(6)> LANE6 = lane_table<6>(std::make_integer_sequence<int, lane_rows(6)>{});
DotFn lane_fn(int nc, int r) {
  switch (nc) {
    case 1: return LANE1[r - 1];
    case 2: return LANE2[r - 1];
    case 3: return LANE3[r - 1];
    case 4: return LANE4[r - 1];
    default: return LANE6[r - 1];
  }
}
OuterFn outer_fn(int v, int r) { return v == 1 ? OUTER1[r - 1] : OUTER2[r - 1]; }

// The convolution's geometry (cnnzoo.h) and what follows from it, shared by the three kernels.
struct Conv : ConvGeometry {
  int64_t Cg, Og;  // channels per group: input, output
  int threads;

  std::vector<int64_t> tap_offsets;  // of weight[.][.][t / KW][t % KW], for each tap t

  Conv(const ConvGeometry& g, int threads_) : ConvGeometry(g), Cg(g.C / g.G), Og(g.O / g.G), threads(threads_) {
    for (int64_t t = 0; t < KH * KW; ++t) tap_offsets.push_back((t / KW) * weight.h + (t % KW) * weight.w);
  }

  // the first and one-past-last output row whose kernel tap row i lands inside the input
  int64_t first_row(int64_t i) const { return std::max<int64_t>(0, ceil_div(PT - i * DH, SH)); }
  int64_t end_row(int64_t i) const { return std::min<int64_t>(OH, ceil_div(H + PT - i * DH, SH)); }
  // the same for the output columns and kernel tap column j
  int64_t first_col(int64_t j) const { return std::max<int64_t>(0, ceil_div(PL - j * DW, SW)); }
  int64_t end_col(int64_t j) const { return std::min<int64_t>(OW, ceil_div(W + PL - j * DW, SW)); }
  // whether kernel tap t (row-major) reads the input for some output pixel
  bool tap_used(int64_t t) const { return first_row(t / KW) < end_row(t / KW) && first_col(t % KW) < end_col(t % KW); }
  // the offset of weight[o][c][t / KW][t % KW] (or of the same entry of the weight gradient)
  int64_t weight_at(int64_t o, int64_t c, int64_t t) const { return o * weight.n + c * weight.c + tap_offsets[t]; }
  // tap t with its row's columns reversed: (i, j) as (i, KW - 1 - j)
  int64_t reversed(int64_t t) const { return t - t % KW + KW - 1 - t % KW; }
};

// Weights packed for the block kernels. Per group: the vector dimension (`vdim` channels, padded
// with zeros to whole vectors) in panels of up to VMAX vectors; a panel holds, for each tap and
// reduction channel, one row of its width. Also used, zeroed, to accumulate a weight gradient. The
// floats live in storage the caller keeps (`floats()` of them).
struct Panels {
  int64_t taps, kdim, vdim, vpad;
  float* data;

  Panels(int64_t taps_, int64_t kdim_, int64_t vdim_, float* storage)
      : taps(taps_), kdim(kdim_), vdim(vdim_), vpad(round_up(vdim_, VL)), data(storage) {}
  static int64_t floats(int64_t groups, int64_t taps, int64_t kdim, int64_t vdim) {
    return groups * taps * kdim * round_up(vdim, VL);
  }

  int64_t panels() const { return ceil_div(vpad, VMAX * VL); }
  int64_t width(int64_t p) const { return std::min<int64_t>(VMAX * VL, vpad - p * VMAX * VL); }
  // the row (tap, k) of panel p of group g
  float* at(int64_t g, int64_t p, int64_t tap, int64_t k) const {
    return data + g * taps * kdim * vpad + p * VMAX * VL * taps * kdim + (tap * kdim + k) * width(p);
  }
  // Packs the rows of the taps where used(tap): entry (g, tap, k, v) = value(g, tap, k, v), zero in
  // the padding of the vector dimension, and with `zero_unused` in the rows of unused taps (which the
  // image-by-image kernels still multiply by the input's zero padding columns: zeros there, not what
  // a kept buffer held from an earlier call, which could be a NaN). The panels are split over the
  // threads; within one, the taps are the inner loop, so that the source's values for one (k, v) are
  // read together.
  template <typename Used, typename Value>
  void pack(int64_t groups, int threads, Used used, Value value, bool zero_unused) {
    int64_t items = groups * panels();
#pragma omp parallel for num_threads(threads) schedule(static) if (items * taps * kdim * VMAX * VL > (1 << 16))
    for (int64_t item = 0; item < items; ++item) {
      int64_t g = item / panels(), p = item % panels(), v0 = p * VMAX * VL, wd = width(p);
      int64_t real = std::min(wd, vdim - v0);
      for (int64_t k = 0; k < kdim; ++k)
        for (int64_t t = 0; t < taps; ++t) {
          float* row = at(g, p, t, k);
          if (used(t)) {
            for (int64_t v = 0; v < real; ++v) row[v] = value(g, t, k, v0 + v);
            for (int64_t v = real; v < wd; ++v) row[v] = 0.0f;
          } else if (zero_unused) {
            std::memset(row, 0, sizeof(float) * wd);
          }
        }
    }
  }
};

struct Scratch {
  Buffer in, out;
  Buffer panels, sums;  // the calling thread's: packed weights, weight-gradient accumulators
  // The image buffers go at the end of a call (see Buffer::trim); the weight-sized ones are kept, as
  // Winograd's are: for 512x512 filters, freeing the sums cost 3 ms a call in page faults.
  void trim() {
    in.trim(), out.trim();
    panels.trim(KEEP_FLOATS), sums.trim(KEEP_FLOATS);
  }
};

// Runs image(n, scratch, team) for every image: whole images per thread while there are at least as
// many left as threads, then the rest one at a time by all threads together (on a shared scratch,
// sized beforehand by `size_shared`). `done(id, team_size)` runs on every thread at the end.
// The calling thread's scratch, for work its whole team shares (concurrent callers do not share).
Scratch& caller_scratch() {
  static thread_local Scratch scratch;
  return scratch;
}

template <typename Image, typename Size, typename Done>
void over_images(int64_t images, int threads, Image image, Size size_shared, Done done) {
  Scratch& shared = caller_scratch();
  bool sized = images % std::max(threads, 1) != 0;
  if (sized) size_shared(shared);
#pragma omp parallel num_threads(threads)
  {
    static thread_local Scratch own;
    int nt = omp_get_num_threads(), id = omp_get_thread_num();
    int64_t whole = images - images % nt;
    if (whole < images && !sized) {  // fewer threads than asked for
#pragma omp single
      size_shared(shared);
    }
    for (int64_t n = id; n < whole; n += nt) image(n, own, Team{0, 1});
    for (int64_t n = whole; n < images; ++n) image(n, shared, Team{id, nt});
    own.trim();
    done(id, nt);
  }
  shared.trim();
}

// data[0, n) = 0, split over the threads when large.
void zero(float* data, int64_t n, int threads) {
  int64_t per = (1 << 16);
#pragma omp parallel for num_threads(threads) schedule(static) if (n > 4 * per)
  for (int64_t i = 0; i < ceil_div(n, per); ++i)
    std::memset(data + i * per, 0, sizeof(float) * std::min(per, n - i * per));
}

// Small planes: images side by side. Runs chunk(n0, count, in, out, team) on every thread for
// chunks of `chunk` images, on two shared buffers of in_size and out_size floats, then done(team).
template <typename Chunk, typename Done>
void over_chunks(int64_t images, int64_t chunk, int threads, int64_t in_size, int64_t out_size, Chunk f, Done done) {
  Scratch& s = caller_scratch();
  float *in = s.in.get(in_size), *out = s.out.get(out_size);
#pragma omp parallel num_threads(threads)
  {
    Team team{omp_get_thread_num(), omp_get_num_threads()};
    for (int64_t n0 = 0; n0 < images; n0 += chunk) f(n0, std::min(chunk, images - n0), in, out, team);
    done(team);
  }
  s.trim();
}

// The images in one chunk: as many as `bytes` of buffers hold (`per_image` floats each).
int64_t chunk_images(int64_t images, int64_t per_image, int64_t bytes = 8 << 20) {
  return std::max<int64_t>(1, std::min<int64_t>(images, bytes / 4 / std::max<int64_t>(per_image, 1)));
}

// Whether the dot kernels (forward, input gradient) take the images side by side: when an image's
// rows of block pixels are shorter than 8 (measured on the zoo's 8x8, 4x4, 2x2 and 1x1 planes), or
// the weight gradient: when an image has fewer than 64 output pixels to sum over. Since it sums in
// chunks of rows, image by image measured faster from 8x8 up (8x8, 64 channels: 1.14-1.27x oneDNN
// against 1.26-1.39x; 14x14, 256 and 512 channels: 1.07-1.16x against 1.19-1.30x), and about even at
// 7x7.
bool side_by_side(int64_t row) { return row < 8; }
bool side_by_side_weight_grad(int64_t pixels) { return pixels < 64; }

// A block row of the side-by-side kernels: `count` of the (column, image) pairs of plane row `row`,
// from the `start`th one after (column `col`, image 0). A run of columns whose windows all lie inside
// the plane (the interior, [inner0, inner1)) has the same taps at every column, and at stride 1 its
// columns follow each other in the buffers, so its (column, image) pairs are one row of pixels `step`
// apart: a 7x7 plane of 8 images gives rows of 8, 40 and 8, not 4 and 4 (two blocks per column).
struct SideRow {
  int64_t row, col, start, count;
};

std::vector<SideRow> side_rows(int64_t rows, int64_t cols, int64_t images, int64_t inner0, int64_t inner1) {
  std::vector<SideRow> out;
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols;) {
      int64_t end = inner0 <= c && c < inner1 ? inner1 : c + 1, n = (end - c) * images;
      int64_t parts = ceil_div(n, 48);  // rows of at most 8 blocks, so that the team shares them evenly
      for (int64_t p = 0; p < parts; ++p) out.push_back({r, c, n * p / parts, n * (p + 1) / parts - n * p / parts});
      c = end;
    }
  return out;
}

// The floats from one pixel to the next in a channels-last buffer: the channels, plus a cache line
// when they are a multiple of 64, so that neighbouring pixels (and rows) do not fall on addresses a
// multiple of 4 KiB apart, which share one set of the L1 cache and evict each other.
int64_t pixel_stride(int64_t channels) { return channels % 64 == 0 ? channels + 16 : channels; }

// The reduction channels taken at a time, so that a panel's rows for one chunk stay within about
// 256 KiB of cache while a row of blocks runs through them.
int64_t reduction_chunk(int64_t taps, int64_t kdim) {
  return std::max<int64_t>(1, std::min<int64_t>(kdim, (256 * 1024 / 4) / (taps * VMAX * VL)));
}

// A row of output pixels for the block kernels: `count` pixels, the first read at `src` (the next
// `src_step` floats on) and written at `dst` (the next `dst_step` floats on).
struct Row {
  const float* src;
  int64_t count;
  float* dst;
};

// Runs the block kernels over an image's output rows [0, rows) for one group: for every reduction
// chunk [k0, k1), panel and row, `segments(p, k0, k1, row, segs)` lists the reduction of the row's
// pixels and `row_at(row)` says where they are. Work (panel, row) is split over the team: the same
// thread always owns the same outputs, so the chunks accumulate without races.
template <typename SegmentsFn, typename RowFn>
void run_blocks(const Panels& w, int64_t rows, int64_t src_step, int64_t dst_step, SegmentsFn segments, RowFn row_at,
                const Team& team) {
  int64_t chunk = reduction_chunk(w.taps, w.kdim);
  std::vector<Segment> segs;
  for (int64_t k0 = 0; k0 < w.kdim; k0 += chunk) {
    int64_t k1 = std::min(w.kdim, k0 + chunk), item = 0;
    bool accumulate = k0 > 0;
    for (int64_t p = 0; p < w.panels(); ++p)
      for (int64_t row = 0; row < rows; ++row, ++item) {
        if (item % team.size != team.id) continue;
        segs.clear();
        segments(p, k0, k1, row, segs);
        Row r = row_at(row);
        if (r.count == 0 || (segs.empty() && accumulate)) continue;
        int v = (int)(w.width(p) / VL);
        even_blocks(r.count, max_rows(v), [&](int64_t t0, int64_t count) {
          dot_fn(v, (int)count)(r.src + t0 * src_step, src_step, segs.data(), (int)segs.size(), w.width(p),
                                r.dst + t0 * dst_step + p * VMAX * VL, dst_step, accumulate);
        });
      }
  }
}

// The padded width of the channels-last input: every column a window reads.
int64_t padded_width(const Conv& cv) { return std::max(cv.W + cv.PL, (cv.OW - 1) * cv.SW + (cv.KW - 1) * cv.DW + 1); }

// grad_w = the sum of `count` accumulators in the panel layout; panels split over the team. The
// panel's rows (tap, input channel) are summed in vectors, 16 input channels at a time, into a block
// transposed to grad_w's order [output channel][input channel][tap], then copied out a row per output
// channel (no division by the kernel width per entry: with one, this took 6 ms for a 512x512x3x3
// gradient, more than all the products of one 14x14 image).
void write_weight_grad(const Panels* acc, int count, const Conv& cv, float* grad_w, const Team& team) {
  constexpr int64_t CB = 16;
  int64_t taps = cv.KH * cv.KW, panels = acc[0].panels();
  std::vector<float> block(VMAX * VL * CB * taps);
  for (int64_t item = team.id; item < cv.G * panels; item += team.size) {
    int64_t g = item / panels, pnl = item % panels, o0 = g * cv.Og + pnl * VMAX * VL;
    int64_t lanes = std::min<int64_t>(VMAX * VL, cv.Og - pnl * VMAX * VL), vectors = acc[0].width(pnl) / VL;
    for (int64_t c0 = 0; c0 < cv.Cg; c0 += CB) {
      int64_t cb = std::min(CB, cv.Cg - c0), run = cb * taps;
      for (int64_t t = 0; t < taps; ++t)
        for (int64_t c = c0; c < c0 + cb; ++c) {
          alignas(64) float row[VMAX * VL];
          for (int64_t v = 0; v < vectors; ++v) {
            vec sum = load(acc[0].at(g, pnl, t, c) + v * VL);
            for (int a = 1; a < count; ++a) sum += load(acc[a].at(g, pnl, t, c) + v * VL);
            store(row + v * VL, sum);
          }
          float* column = block.data() + (c - c0) * taps + t;
          for (int64_t lane = 0; lane < lanes; ++lane) column[lane * run] = row[lane];
        }
      for (int64_t lane = 0; lane < lanes; ++lane) {
        const float* src = block.data() + lane * run;
        for (int64_t c = c0; c < c0 + cb; ++c)
          for (int64_t i = 0; i < cv.KH; ++i) {
            float* dst = grad_w + (o0 + lane) * cv.weight.n + c * cv.weight.c + i * cv.weight.h;
            for (int64_t j = 0; j < cv.KW; ++j) dst[j * cv.weight.w] = *src++;
          }
      }
    }
  }
}

// --- forward ------------------------------------------------------------------------------------

// Small planes: block rows run over the images at one output pixel, x as [row][col][image][channel]
// with no padding.
void forward_side_by_side(const Conv& cv, const Panels& w, const float* x, const float* bias, float* out) {
  const Strides &xs = cv.input, &os = cv.output;
  int64_t xpixel = pixel_stride(cv.C), pixel = pixel_stride(cv.G * w.vpad);
  int64_t plane = cv.H * cv.W * xpixel, oplane = cv.OH * cv.OW * pixel;
  int64_t chunk = chunk_images(cv.N, plane + oplane);
  auto run = [&](int64_t n0, int64_t B, float* xbuf, float* obuf, const Team& team) {
    for (int64_t b = team.id; b < B; b += team.size)
      to_channels_last(x + (n0 + b) * xs.n, xs, 1, cv.C, cv.C, cv.H, cv.W, xbuf + b * xpixel, 0, cv.W, xpixel,
                       Team{0, 1}, B * xpixel);
    team.sync();
    // the interior: the columns whose window's taps all fall inside the input
    std::vector<SideRow> rows =
        side_rows(cv.OH, cv.OW, B, cv.SW == 1 ? cv.first_col(0) : 0, cv.SW == 1 ? cv.end_col(cv.KW - 1) : 0);
    for (int64_t g = 0; g < cv.G; ++g) {
      auto segments = [&](int64_t pnl, int64_t k0, int64_t k1, int64_t row, std::vector<Segment>& segs) {
        int64_t oh = rows[row].row, ow = rows[row].col;
        for (int64_t i = 0; i < cv.KH; ++i) {
          int64_t ih = oh * cv.SH - cv.PT + i * cv.DH;
          if (ih < 0 || ih >= cv.H) continue;
          for (int64_t j = 0; j < cv.KW; ++j) {
            int64_t iw = ow * cv.SW - cv.PL + j * cv.DW;
            if (iw < 0 || iw >= cv.W) continue;
            add_segment(segs, (ih * cv.W + iw) * B * xpixel + g * cv.Cg + k0, w.at(g, pnl, i * cv.KW + j, k0), k1 - k0,
                        w.width(pnl));
          }
        }
      };
      auto row_at = [&](int64_t row) {
        const SideRow& r = rows[row];
        return Row{xbuf + r.start * xpixel, r.count,
                   obuf + ((r.row * cv.OW + r.col) * B + r.start) * pixel + g * w.vpad};
      };
      run_blocks(w, (int64_t)rows.size(), xpixel, pixel, segments, row_at, team);
    }
    team.sync();
    for (int64_t b = team.id; b < B; b += team.size)
      from_channels_last(obuf + b * pixel, cv.G, cv.Og, w.vpad, pixel, cv.OH, cv.OW, bias, cv.bias,
                         out + (n0 + b) * os.n, os, Team{0, 1}, B * pixel);
    team.sync();
  };
  over_chunks(cv.N, chunk, cv.threads, chunk * plane, chunk * oplane, run, [](const Team&) {});
}

// Image by image: x in a channels-last buffer with its left and right padding, one block row per
// output row.
void forward_by_image(const Conv& cv, const Panels& w, const float* x, const float* bias, float* out) {
  const Strides &xs = cv.input, &os = cv.output;
  int64_t width = padded_width(cv), xpixel = pixel_stride(cv.C), pixel = pixel_stride(cv.G * w.vpad);
  int64_t in_size = cv.H * width * xpixel, out_size = cv.OH * cv.OW * pixel;
  auto image = [&](int64_t n, Scratch& s, const Team& team) {
    float *xbuf = s.in.get(in_size), *obuf = s.out.get(out_size);
    to_channels_last(x + n * xs.n, xs, 1, cv.C, cv.C, cv.H, cv.W, xbuf, cv.PL, width, xpixel, team);
    team.sync();
    for (int64_t g = 0; g < cv.G; ++g) {
      auto segments = [&](int64_t pnl, int64_t k0, int64_t k1, int64_t oh, std::vector<Segment>& segs) {
        for (int64_t i = 0; i < cv.KH; ++i) {
          int64_t ih = oh * cv.SH - cv.PT + i * cv.DH;
          if (ih < 0 || ih >= cv.H) continue;  // a tap row in the padding adds nothing
          for (int64_t j = 0; j < cv.KW; ++j)
            add_segment(segs, (ih * width + j * cv.DW) * xpixel + g * cv.Cg + k0, w.at(g, pnl, i * cv.KW + j, k0),
                        k1 - k0, w.width(pnl));
        }
      };
      auto row_at = [&](int64_t oh) { return Row{xbuf, cv.OW, obuf + oh * cv.OW * pixel + g * w.vpad}; };
      run_blocks(w, cv.OH, cv.SW * xpixel, pixel, segments, row_at, team);
    }
    team.sync();
    from_channels_last(obuf, cv.G, cv.Og, w.vpad, pixel, cv.OH, cv.OW, bias, cv.bias, out + n * os.n, os, team);
    team.sync();
  };
  over_images(cv.N, cv.threads, image, [&](Scratch& s) { s.in.get(in_size), s.out.get(out_size); }, [](int, int) {});
}

// --- input gradient -----------------------------------------------------------------------------

// Small planes: block rows run over the images at one input pixel, grad_out as [row][col][image][channel].
void input_grad_side_by_side(const Conv& cv, const Panels& w, const float* grad_out, float* grad_x) {
  const Strides &gs = cv.output, &xs = cv.input;
  int64_t gpixel = pixel_stride(cv.O), pixel = pixel_stride(cv.G * w.vpad);
  int64_t plane = cv.OH * cv.OW * gpixel, oplane = cv.H * cv.W * pixel;
  int64_t chunk = chunk_images(cv.N, plane + oplane);
  auto run = [&](int64_t n0, int64_t B, float* gbuf, float* obuf, const Team& team) {
    for (int64_t b = team.id; b < B; b += team.size)
      to_channels_last(grad_out + (n0 + b) * gs.n, gs, 1, cv.O, cv.O, cv.OH, cv.OW, gbuf + b * gpixel, 0, cv.OW, gpixel,
                       Team{0, 1}, B * gpixel);
    team.sync();
    // the interior: the columns every tap reaches from an output column inside the plane
    std::vector<SideRow> rows =
        side_rows(cv.H, cv.W, B, cv.SW == 1 ? std::max<int64_t>(0, (cv.KW - 1) * cv.DW - cv.PL) : 0,
                  cv.SW == 1 ? std::min(cv.W, cv.OW - cv.PL) : 0);
    for (int64_t g = 0; g < cv.G; ++g) {
      auto segments = [&](int64_t pnl, int64_t k0, int64_t k1, int64_t row, std::vector<Segment>& segs) {
        int64_t ih = rows[row].row, iw = rows[row].col;
        for (int64_t i = 0; i < cv.KH; ++i) {
          int64_t a = ih + cv.PT - i * cv.DH;  // = oh * SH for the output pixel this tap came from
          if (a < 0 || a % cv.SH != 0 || a / cv.SH >= cv.OH) continue;
          for (int64_t j = 0; j < cv.KW; ++j) {
            int64_t b = iw + cv.PL - j * cv.DW;  // = ow * SW
            if (b < 0 || b % cv.SW != 0 || b / cv.SW >= cv.OW) continue;
            add_segment(segs, ((a / cv.SH) * cv.OW + b / cv.SW) * B * gpixel + g * cv.Og + k0,
                        w.at(g, pnl, i * cv.KW + (cv.KW - 1 - j), k0), k1 - k0, w.width(pnl));
          }
        }
      };
      auto row_at = [&](int64_t row) {
        const SideRow& r = rows[row];
        return Row{gbuf + r.start * gpixel, r.count,
                   obuf + ((r.row * cv.W + r.col) * B + r.start) * pixel + g * w.vpad};
      };
      run_blocks(w, (int64_t)rows.size(), gpixel, pixel, segments, row_at, team);
    }
    team.sync();
    for (int64_t b = team.id; b < B; b += team.size)
      from_channels_last(obuf + b * pixel, cv.G, cv.Cg, w.vpad, pixel, cv.H, cv.W, nullptr, 0, grad_x + (n0 + b) * xs.n,
                         xs, Team{0, 1}, B * pixel);
    team.sync();
  };
  over_chunks(cv.N, chunk, cv.threads, chunk * plane, chunk * oplane, run, [](const Team&) {});
}

// The filters of the lane kernels, for few input channels per group (a 3-channel stem) where the
// output channels are whole vectors: rows [group][channel][tap][output channel], `nc` channels per
// group (the extra ones zero), the taps' columns reversed as in the panels. Not `used` elsewhere.
struct LaneFilters {
  bool used;
  int nc;
  std::vector<float> rows;

  LaneFilters(const Conv& cv, const float* weight)
      : used(cv.Cg <= LANE_MAX && cv.Og % VL == 0), nc(lane_channels(cv.Cg)) {
    if (!used) return;
    int64_t taps = cv.KH * cv.KW;
    rows.assign(cv.G * nc * taps * cv.Og, 0.0f);
    for (int64_t g = 0; g < cv.G; ++g)
      for (int64_t c = 0; c < cv.Cg; ++c)
        for (int64_t t = 0; t < taps; ++t)
          for (int64_t o = 0; o < cv.Og; ++o)
            rows[((g * nc + c) * taps + t) * cv.Og + o] = weight[cv.weight_at(g * cv.Og + o, c, cv.reversed(t))];
  }
};

// run_blocks with the lane kernels (NC = `nc` output values per pixel, reduced over `kdim` rows of
// filters `wstride` floats apart): every row's whole reduction at once, rows split over the team.
template <typename SegmentsFn, typename RowFn>
void run_lane_blocks(int nc, int64_t rows, int64_t src_step, int64_t dst_step, int64_t kdim, int64_t wstride,
                     SegmentsFn segments, RowFn row_at, const Team& team) {
  std::vector<Segment> segs;
  for (int64_t row = team.id; row < rows; row += team.size) {
    segs.clear();
    segments(0, 0, kdim, row, segs);
    Row r = row_at(row);
    even_blocks(r.count, lane_rows(nc), [&](int64_t t0, int64_t count) {
      lane_fn(nc, (int)count)(r.src + t0 * src_step, src_step, segs.data(), (int)segs.size(), wstride,
                              r.dst + t0 * dst_step, dst_step, false);
    });
  }
}

// Image by image: grad_out in a channels-last buffer with zero columns on both sides for the windows
// that overhang it. A block row is one phase of an input row: its pixels whose column is pw modulo
// the stride, which sit SW pixels apart in the output buffer.
void input_grad_by_image(const Conv& cv, const Panels& w, const float* weight, const float* grad_out, float* grad_x) {
  const Strides &gs = cv.output, &xs = cv.input;
  int64_t taps = cv.KH * cv.KW;
  int64_t left = ceil_div((cv.KW - 1) * cv.DW, cv.SW);
  int64_t width = left + std::max(cv.OW, (cv.W - 1 + cv.PL) / cv.SW + 1);
  int64_t gpixel = pixel_stride(cv.O), pixel = pixel_stride(cv.G * w.vpad);
  int64_t in_size = cv.OH * width * gpixel, out_size = cv.H * cv.W * pixel;
  LaneFilters lanes(cv, weight);
  auto image = [&](int64_t n, Scratch& s, const Team& team) {
    float *gbuf = s.in.get(in_size), *obuf = s.out.get(out_size);
    if (cv.O > 0 && cv.OH > 0 && cv.OW > 0)
      to_channels_last(grad_out + n * gs.n, gs, 1, cv.O, cv.O, cv.OH, cv.OW, gbuf, left, width, gpixel, team);
    team.sync();
    for (int64_t g = 0; g < cv.G; ++g) {
      // row = (ih, pw): the input pixels of row ih whose column is pw modulo the stride
      auto segments = [&](int64_t pnl, int64_t k0, int64_t k1, int64_t row, std::vector<Segment>& segs) {
        int64_t ih = row / cv.SW, pw = row % cv.SW;
        for (int64_t i = 0; i < cv.KH; ++i) {
          int64_t a = ih + cv.PT - i * cv.DH;  // = oh * SH for the output row this tap row came from
          if (a < 0 || a % cv.SH != 0 || a / cv.SH >= cv.OH) continue;
          for (int64_t j = cv.KW - 1; j >= 0; --j) {
            int64_t b = pw + cv.PL - j * cv.DW;  // = ow * SW for the first pixel of the row
            int64_t mod = ((b % cv.SW) + cv.SW) % cv.SW;
            if (mod != 0) continue;
            int64_t tap = i * cv.KW + (cv.KW - 1 - j), src = ((a / cv.SH) * width + left + b / cv.SW) * gpixel;
            if (lanes.used)
              add_segment(segs, src + g * cv.Og, lanes.rows.data() + (g * lanes.nc * taps + tap) * cv.Og, cv.Og, 1);
            else
              add_segment(segs, src + g * cv.Og + k0, w.at(g, pnl, tap, k0), k1 - k0, w.width(pnl));
          }
        }
      };
      auto row_at = [&](int64_t row) {
        int64_t ih = row / cv.SW, pw = row % cv.SW;
        return Row{gbuf, pw < cv.W ? ceil_div(cv.W - pw, cv.SW) : 0, obuf + (ih * cv.W + pw) * pixel + g * w.vpad};
      };
      if (lanes.used)
        run_lane_blocks(lanes.nc, cv.H * cv.SW, gpixel, cv.SW * pixel, cv.Og, taps * cv.Og, segments, row_at, team);
      else
        run_blocks(w, cv.H * cv.SW, gpixel, cv.SW * pixel, segments, row_at, team);
    }
    team.sync();
    from_channels_last(obuf, cv.G, cv.Cg, w.vpad, pixel, cv.H, cv.W, nullptr, 0, grad_x + n * xs.n, xs, team);
    team.sync();
  };
  over_images(cv.N, cv.threads, image, [&](Scratch& s) { s.in.get(in_size), s.out.get(out_size); }, [](int, int) {});
}

// --- weight gradient ----------------------------------------------------------------------------

// Up to 14x14 output planes: every (tap, channel block, panel) summed over all images and pixels by
// one thread, on x and grad_out as [row][col][image][channel]: one accumulator, each entry written once.
void weight_grad_side_by_side(const Conv& cv, const float* x, const float* grad_out, float* grad_w) {
  const Strides &xs = cv.input, &gs = cv.output;
  int64_t taps = cv.KH * cv.KW;
  Scratch& mine = caller_scratch();
  int64_t size = Panels::floats(cv.G, taps, cv.Cg, cv.Og);
  Panels a(taps, cv.Cg, cv.Og, mine.sums.get(size));
  zero(a.data, size, cv.threads);
  int64_t xpixel = pixel_stride(cv.C), pixel = pixel_stride(cv.G * a.vpad);
  int64_t plane = cv.H * cv.W * xpixel, gplane = cv.OH * cv.OW * pixel;
  // (chunks of about 2 MiB, which stay in cache while every (tap, channel block, panel) reads them)
  int64_t chunk = chunk_images(cv.N, plane + gplane, 2 << 20);
  auto run = [&](int64_t n0, int64_t B, float* xbuf, float* gbuf, const Team& team) {
    for (int64_t b = team.id; b < B; b += team.size) {
      to_channels_last(x + (n0 + b) * xs.n, xs, 1, cv.C, cv.C, cv.H, cv.W, xbuf + b * xpixel, 0, cv.W, xpixel,
                       Team{0, 1}, B * xpixel);
      to_channels_last(grad_out + (n0 + b) * gs.n, gs, cv.G, cv.Og, a.vpad, cv.OH, cv.OW, gbuf + b * pixel, 0, cv.OW,
                       pixel, Team{0, 1}, B * pixel);
    }
    team.sync();
    int64_t item = 0;
    for (int64_t g = 0; g < cv.G; ++g)
      for (int64_t i = 0; i < cv.KH; ++i)
        for (int64_t j = 0; j < cv.KW; ++j) {
          int64_t oh0 = cv.first_row(i), oh1 = cv.end_row(i), ow0 = cv.first_col(j), ow1 = cv.end_col(j);
          if (oh1 <= oh0 || ow1 <= ow0) continue;
          for (int64_t pnl = 0; pnl < a.panels(); ++pnl) {
            int v = (int)(a.width(pnl) / VL);
            even_blocks(cv.Cg, max_rows(v), [&](int64_t c0, int64_t count) {
              if (item++ % team.size != team.id) return;
              for (int64_t oh = oh0; oh < oh1; ++oh) {
                int64_t ih = oh * cv.SH - cv.PT + i * cv.DH, iw = ow0 * cv.SW - cv.PL + j * cv.DW;
                outer_fn(v, (int)count)(xbuf + (ih * cv.W + iw) * B * xpixel + g * cv.Cg + c0, cv.SW * B * xpixel,
                                        xpixel, gbuf + (oh * cv.OW + ow0) * B * pixel + g * a.vpad + pnl * VMAX * VL,
                                        B * pixel, pixel, ow1 - ow0, B, a.at(g, pnl, i * cv.KW + j, c0), a.width(pnl));
              }
            });
          }
        }
    team.sync();
  };
  auto done = [&](const Team& team) {
    team.sync();
    write_weight_grad(&a, 1, cv, grad_w, team);
  };
  over_chunks(cv.N, chunk, cv.threads, chunk * plane, chunk * gplane, run, done);
}

// Image by image: one accumulator per thread, in the forward pass's panel layout, summed at the end.
void weight_grad_by_image(const Conv& cv, const float* x, const float* grad_out, float* grad_w) {
  const Strides &xs = cv.input, &gs = cv.output;
  int64_t taps = cv.KH * cv.KW, width = padded_width(cv);
  int accumulators = std::max(cv.threads, 1);
  Scratch& mine = caller_scratch();
  int64_t size = Panels::floats(cv.G, taps, cv.Cg, cv.Og);
  float* sums = mine.sums.get(accumulators * size);
  zero(sums, accumulators * size, cv.threads);
  std::vector<Panels> acc;
  for (int th = 0; th < accumulators; ++th) acc.emplace_back(taps, cv.Cg, cv.Og, sums + th * size);
  const Panels& shape = acc[0];
  int64_t xpixel = pixel_stride(cv.C), pixel = pixel_stride(cv.G * shape.vpad);
  int64_t in_size = cv.H * width * xpixel, g_size = cv.OH * cv.OW * pixel;
  // The reduction rows of one tap row, as runs of (tap column, channel) pairs contiguous in the
  // input: all of them at once when the taps of a row are adjacent pixels over every channel.
  struct Run {
    int64_t j, xoff, len;
  };
  std::vector<Run> runs;
  if (cv.G == 1 && cv.DW == 1 && xpixel == cv.C) {
    runs.push_back({0, 0, cv.KW * cv.C});
  } else {
    for (int64_t j = 0; j < cv.KW; ++j) runs.push_back({j, j * cv.DW * xpixel, cv.Cg});
  }

  // Output rows are taken in chunks whose input and output-gradient rows fit in L2 (512 KiB here), so
  // that every (tap, channel block, panel) reads them from the cache, not memory: a 224x224 plane of
  // 64 channels is 13 MB.
  int64_t row_floats = cv.OW * pixel + cv.SH * width * xpixel, overlap = (cv.KH - 1) * cv.DH * width * xpixel;
  int64_t chunk = std::max<int64_t>(1, ((512 << 10) / 4 - overlap) / std::max<int64_t>(row_floats, 1));
  auto image = [&](int64_t n, Scratch& s, const Team& team) {
    float *xbuf = s.in.get(in_size), *gbuf = s.out.get(g_size);
    to_channels_last(x + n * xs.n, xs, 1, cv.C, cv.C, cv.H, cv.W, xbuf, cv.PL, width, xpixel, team);
    to_channels_last(grad_out + n * gs.n, gs, cv.G, cv.Og, shape.vpad, cv.OH, cv.OW, gbuf, 0, cv.OW, pixel, team);
    team.sync();
    Panels& a = acc[omp_get_thread_num()];
    int64_t item = 0;  // counted on over the chunks, so that an odd count per chunk evens out
    for (int64_t r0 = 0; r0 < cv.OH; r0 += chunk) {
      for (int64_t g = 0; g < cv.G; ++g)
        for (int64_t i = 0; i < cv.KH; ++i) {
          int64_t first = std::max(cv.first_row(i), r0), rows = std::min(cv.end_row(i), r0 + chunk) - first;
          if (rows <= 0) continue;
          const float* xrow0 = xbuf + (first * cv.SH - cv.PT + i * cv.DH) * width * xpixel + g * cv.Cg;
          const float* grow0 = gbuf + first * cv.OW * pixel + g * shape.vpad;
          for (const Run& run : runs)
            for (int64_t pnl = 0; pnl < a.panels(); ++pnl) {
              int v = (int)(a.width(pnl) / VL);
              even_blocks(run.len, max_rows(v), [&](int64_t q0, int64_t count) {
                if (item++ % team.size != team.id) return;
                // q = j * C + c within a contiguous run; the panel row is (tap i*KW + j, channel c)
                int64_t j = run.j + (runs.size() == 1 ? q0 / cv.C : 0), c = runs.size() == 1 ? q0 % cv.C : q0;
                outer_fn(v, (int)count)(xrow0 + run.xoff + q0, cv.SH * width * xpixel, cv.SW * xpixel,
                                        grow0 + pnl * VMAX * VL, cv.OW * pixel, pixel, rows, cv.OW,
                                        a.at(g, pnl, i * cv.KW + j, c), a.width(pnl));
              });
            }
        }
    }
    team.sync();
  };
  auto reduce = [&](int id, int nt) {
#pragma omp barrier
    write_weight_grad(acc.data(), nt, cv, grad_w, Team{id, nt});
  };
  over_images(cv.N, cv.threads, image, [&](Scratch& s) { s.in.get(in_size), s.out.get(g_size); }, reduce);
}

// A 1x1 kernel with a stride and no padding at the top or left reads only the input pixels (oh * SH,
// ow * SW): the same convolution as a 1x1 stride-1 one on that subsampled view of the input (its
// strides times the stride, OH x OW of it). The kernels then copy a quarter of the input at stride 2,
// not all of it. Left as it is when a window reaches past the input (padding at the bottom or right).
ConvGeometry subsampled(const ConvGeometry& g) {
  bool pointwise = g.KH == 1 && g.KW == 1 && g.PT == 0 && g.PL == 0;
  if (!pointwise || (g.SH == 1 && g.SW == 1) || (g.OH - 1) * g.SH >= g.H || (g.OW - 1) * g.SW >= g.W) return g;
  ConvGeometry s = g;
  s.H = g.OH, s.W = g.OW, s.SH = 1, s.SW = 1;
  s.input.h *= g.SH, s.input.w *= g.SW;
  return s;
}

// t[n][c][y][x] = 0 for a tensor of the given sizes and strides, rows split over the threads.
void zero_strided(float* t, int64_t N, int64_t C, int64_t H, int64_t W, Strides s, int threads) {
#pragma omp parallel for num_threads(threads) schedule(static) collapse(2) if (N * C * H * W > (1 << 16))
  for (int64_t n = 0; n < N; ++n)
    for (int64_t c = 0; c < C; ++c)
      for (int64_t y = 0; y < H; ++y) {
        float* row = t + n * s.n + c * s.c + y * s.h;
        if (s.w == 1)
          std::memset(row, 0, sizeof(float) * W);
        else
          for (int64_t x = 0; x < W; ++x) row[x * s.w] = 0.0f;
      }
}

}  // namespace

extern "C" {

// Every kernel takes its tensors' data, their geometry (cnnzoo.h: each tensor's strides under the
// role of the tensor it has the shape of) and the number of threads to use.

// out = conv2d(x, weight, bias), bias may be null. Must equal conv.py's conv2d_forward.
void cnnzoo_conv2d_forward(const float* x, const float* weight, const float* bias, float* out,
                           const ConvGeometry* geometry, int threads) {
  const Conv cv(subsampled(*geometry), threads);
  if (cv.N == 0 || cv.O == 0 || cv.OH == 0 || cv.OW == 0) return;
  int64_t taps = cv.KH * cv.KW;
  Panels w(taps, cv.Cg, cv.Og, caller_scratch().panels.get(Panels::floats(cv.G, taps, cv.Cg, cv.Og)));
  w.pack(
      cv.G, threads, [&](int64_t t) { return cv.tap_used(t); },
      [&](int64_t g, int64_t t, int64_t c, int64_t o) { return weight[cv.weight_at(g * cv.Og + o, c, t)]; },
      !side_by_side(cv.OW));
  if (side_by_side(cv.OW))
    forward_side_by_side(cv, w, x, bias, out);
  else
    forward_by_image(cv, w, x, bias, out);
}

// grad_x = the gradient of conv2d with respect to x, given grad_out. Must equal conv.py's
// conv2d_input_grad.
void cnnzoo_conv2d_input_grad(const float* grad_out, const float* weight, float* grad_x, const ConvGeometry* geometry,
                              int threads) {
  if (geometry->N == 0 || geometry->C == 0 || geometry->H == 0 || geometry->W == 0) return;
  const Conv cv(subsampled(*geometry), threads);
  if (cv.H != geometry->H || cv.W != geometry->W) {  // subsampled: the pixels no window reads get zero
    const ConvGeometry& g = *geometry;
    zero_strided(grad_x, g.N, g.C, g.H, g.W, g.input, threads);
  }
  int64_t taps = cv.KH * cv.KW;
  // filters transposed (output channels reduced, input channels as vectors), columns reversed so
  // that the taps of a row, read right to left, continue each other in memory
  Panels w(taps, cv.Og, cv.Cg, caller_scratch().panels.get(Panels::floats(cv.G, taps, cv.Og, cv.Cg)));
  w.pack(
      cv.G, threads, [&](int64_t t) { return cv.tap_used(cv.reversed(t)); },
      [&](int64_t g, int64_t t, int64_t o, int64_t c) {
        return weight[cv.weight_at(g * cv.Og + o, c, cv.reversed(t))];
      },
      !side_by_side(ceil_div(cv.W, cv.SW)));
  if (side_by_side(ceil_div(cv.W, cv.SW)))
    input_grad_side_by_side(cv, w, grad_out, grad_x);
  else
    input_grad_by_image(cv, w, weight, grad_out, grad_x);
}

// grad_w = the gradient of conv2d with respect to its weight, given x and grad_out. Must equal
// conv.py's conv2d_weight_grad.
void cnnzoo_conv2d_weight_grad(const float* x, const float* grad_out, float* grad_w, const ConvGeometry* geometry,
                               int threads) {
  const Conv cv(subsampled(*geometry), threads);
  if (cv.O == 0 || cv.Cg == 0 || cv.KH * cv.KW == 0) return;
  if (side_by_side_weight_grad(cv.OH * cv.OW))
    weight_grad_side_by_side(cv, x, grad_out, grad_w);
  else
    weight_grad_by_image(cv, x, grad_out, grad_w);
}

}  // extern "C"

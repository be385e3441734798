// Winograd's minimal filtering on the CPU, float32: the compiled kernels of algorithm="winograd_f2"
// and "winograd_f4" (3x3 filters, stride 1, dilation 1, any padding and groups). Plain C ABI, loaded
// with ctypes like conv.cpp's; each must equal its reference in cnnzoo/ops/winograd.py up to float32
// rounding (the tests hold both against torch.nn.functional):
//   cnnzoo_winograd_f{2,4}_forward      conv2d_forward (and conv2d_input_grad: compiled.py runs it on
//                                       the output gradient with the filters flipped and swapped)
//   cnnzoo_winograd_f{2,4}_weight_grad  conv2d_weight_grad
//
// Y = A^T [ (G g G^T) * (B^T d B) ] A for every m x m tile of outputs, a = m + 2. The method:
//   1. transform every filter once: U[t][c][o] for each of the a*a positions t of a transformed tile,
//      the output channels in panels of one or two vectors;
//   2. for a block of tiles (of any images, so small planes still make full blocks): transform each
//      input tile, vectors over the input channels, into V[t][tile][c];
//   3. for each position t, M[t] = V[t] U[t]: a matrix product (tiles x channels by channels x
//      filters) in register blocks of R tiles x one or two vectors of filters, as conv.cpp's kernels
//      do for pixels; the elementwise products of the formula, summed over the channels;
//   4. transform each tile of M back into its m x m outputs, vectors over the output channels, plus
//      the bias.
// While the transformed filters are small (FILTERS_L3_FLOATS), each thread takes blocks of its own,
// sized to its L2 cache (BLOCK_L2_FLOATS); for wider layers all threads share each block, splitting
// its tiles for the transforms and the positions and panels of filters for the products, so that
// the transformed filters are read once per block (SLICE_FLOATS says how large a shared block is).
//
// The weight gradient is the same identity read the other way: dL/dg = G^T [ sum over tiles of
// (A Y* A^T) * (B^T d B) ] G. All threads transform one block of tiles together (the input's and the
// output gradient's), then the a*a products channels x tiles by tiles x filters, each position and
// panel owned by one thread, summed into one accumulator Z[t][c][o]; at the end every filter's Z
// goes back through G^T . G.
//
// The transforms are small constant matrices (A, B, G, as in the reference); `apply` multiplies by
// one, and once unrolled its zeros vanish and its ones cost no multiplication.

#include <omp.h>

#include <array>
#include <cstdint>
#include <cstring>
#include <utility>

#include "blocks.h"
#include "cnnzoo.h"

namespace {

using cnnzoo::ceil_div;
using cnnzoo::ConvGeometry;
using cnnzoo::Strides;
using namespace cnnzoo;  // blocks.h

// F(m x m, 3 x 3): B^T (a x a), G (a x 3), A^T (m x a), interpolated at 0, +-1 (and +-2) and infinity.
template <int M>
struct Tile;

template <>
struct Tile<2> {
  static constexpr float BT[4][4] = {{1, 0, -1, 0}, {0, 1, 1, 0}, {0, -1, 1, 0}, {0, 1, 0, -1}};
  static constexpr float G[4][3] = {{1, 0, 0}, {0.5f, 0.5f, 0.5f}, {0.5f, -0.5f, 0.5f}, {0, 0, 1}};
  static constexpr float AT[2][4] = {{1, 1, 1, 0}, {0, 1, -1, -1}};
};

template <>
struct Tile<4> {
  static constexpr float BT[6][6] = {{4, 0, -5, 0, 1, 0},  {0, -4, -4, 1, 1, 0}, {0, 4, -4, -1, 1, 0},
                                     {0, -2, -1, 2, 1, 0}, {0, 2, -1, -2, 1, 0}, {0, 4, 0, -5, 0, 1}};
  static constexpr float G[6][3] = {{1.0f / 4, 0, 0},
                                    {-1.0f / 6, -1.0f / 6, -1.0f / 6},
                                    {-1.0f / 6, 1.0f / 6, -1.0f / 6},
                                    {1.0f / 24, 1.0f / 12, 1.0f / 6},
                                    {1.0f / 24, -1.0f / 12, 1.0f / 6},
                                    {0, 0, 1}};
  static constexpr float AT[4][6] = {
      {1, 1, 1, 1, 1, 0}, {0, 1, -1, 2, -2, 0}, {0, 1, 1, 4, 4, 0}, {0, 1, -1, 8, -8, 1}};
};

// out[i * os] = sum_k mx[i][k] * in[k * is] (mx^T's rows when Transposed), for values or vectors.
template <bool Transposed = false, int Rows, int Cols, typename T>
__attribute__((always_inline)) inline void apply(const float (&mx)[Rows][Cols], const T* in, int is, T* out, int os) {
  constexpr int I = Transposed ? Cols : Rows, K = Transposed ? Rows : Cols;
#pragma GCC unroll 8
  for (int i = 0; i < I; ++i) {
    T acc{};
    bool first = true;
#pragma GCC unroll 8
    for (int k = 0; k < K; ++k) {
      float c = Transposed ? mx[k][i] : mx[i][k];
      if (c == 0.0f) continue;
      T term = c == 1.0f ? in[k * is] : c == -1.0f ? -in[k * is] : c * in[k * is];
      acc = first ? term : acc + term;
      first = false;
    }
    out[i * os] = acc;
  }
}

// out = L in R^T for an I x K matrix L and a J x K matrix R (transposed where asked): in is K x K
// (rows `stride` apart), out is I x J.
template <bool TL, bool TR, int K, int I, int J, typename T, int LR, int LC, int RR, int RC>
__attribute__((always_inline)) inline void sandwich(const float (&l)[LR][LC], const float (&r)[RR][RC], const T* in,
                                                    T* out) {
  T tmp[I][K];
#pragma GCC unroll 8
  for (int j = 0; j < K; ++j) apply<TL>(l, in + j, K, &tmp[0][j], K);
#pragma GCC unroll 8
  for (int i = 0; i < I; ++i) apply<TR>(r, tmp[i], 1, out + i * J, 1);
}

// VL floats from p, `step` apart, the first `count` of them (zeros after): a vector load when they
// are contiguous and whole.
inline vec load_lanes(const float* p, int64_t step, int64_t count) {
  if (step == 1 && count == VL) return load(p);
  vec v{};
  for (int64_t l = 0; l < count; ++l) v[l] = p[l * step];
  return v;
}

inline void store_lanes(float* p, int64_t step, int64_t count, vec v) {
  if (step == 1 && count == VL) return store(p, v);
  for (int64_t l = 0; l < count; ++l) p[l * step] = v[l];
}

// dst[r * dstep + v * VL + lane] (+)= sum over k < depth of x[r * xstep + k] * w[k * wstep + v * VL + lane]
template <int R, int V>
void product_block(const float* x, int64_t xstep, const float* w, int64_t wstep, int64_t depth, float* dst,
                   int64_t dstep, bool accumulate) {
  vec acc[R][V];
  load_block<R, V>(acc, dst, dstep, accumulate);
  for (int64_t k = 0; k < depth; ++k, ++x, w += wstep) rank1_update<R, V>(acc, x, xstep, w);
  store_block<R, V>(acc, dst, dstep);
}

// dst[r * dstep + v * VL + lane] (+)= sum over k < depth of x[k * xstep + r] * q[k * qstep + v * VL + lane]
template <int R, int V>
void sum_block(const float* x, int64_t xstep, const float* q, int64_t qstep, int64_t depth, float* dst, int64_t dstep,
               bool accumulate) {
  vec acc[R][V];
  load_block<R, V>(acc, dst, dstep, accumulate);
  for (int64_t k = 0; k < depth; ++k, x += xstep, q += qstep) rank1_update<R, V>(acc, x, 1, q);
  store_block<R, V>(acc, dst, dstep);
}

using BlockFn = void (*)(const float*, int64_t, const float*, int64_t, int64_t, float*, int64_t, bool);

template <int V, int... R>
constexpr std::array<BlockFn, sizeof...(R)> product_table(std::integer_sequence<int, R...>) {
  return {&product_block<R + 1, V>...};
}
template <int V, int... R>
constexpr std::array<BlockFn, sizeof...(R)> sum_table(std::integer_sequence<int, R...>) {
  return {&sum_block<R + 1, V>...};
}
const auto PRODUCT1 = product_table<1>(std::make_integer_sequence<int, max_rows(1)>{});
const auto PRODUCT2 = product_table<2>(std::make_integer_sequence<int, max_rows(2)>{});
const auto SUM1 = sum_table<1>(std::make_integer_sequence<int, max_rows(1)>{});
const auto SUM2 = sum_table<2>(std::make_integer_sequence<int, max_rows(2)>{});
BlockFn product_fn(int v, int64_t rows) { return v == 1 ? PRODUCT1[rows - 1] : PRODUCT2[rows - 1]; }
BlockFn sum_fn(int v, int64_t rows) { return v == 1 ? SUM1[rows - 1] : SUM2[rows - 1]; }

// A block shared by all threads has as many tiles as keep one position's slice of
// the transformed tiles (tiles x channels, read once per panel of filters) within half of an L2
// cache, and the whole block (every position, both sides of the product) within a share of the L3
// cache: the filters' transforms (a*a x C x O floats, 38 MB for 512 channels) are read once a block.
constexpr int64_t SLICE_FLOATS = (512 << 10) / 4;
constexpr int64_t BLOCK_FLOATS = (12 << 20) / 4;
constexpr int64_t BLOCK_L2_FLOATS = (768 << 10) / 4;
constexpr int64_t FILTERS_L3_FLOATS = (8 << 20) / 4;

// A row of `floats` in the blocks, plus a cache line when they are a multiple of 64 (as conv.cpp's
// pixel_stride): the rows of one register block then fall in different sets of the L1 cache.
inline int64_t row_stride(int64_t floats) { return floats % 64 == 0 ? floats + 16 : floats; }

// Each thread's blocks of transformed tiles (on both sides of the products), kept between calls.
Buffer& vbuf() {
  static thread_local Buffer b;
  return b;
}
Buffer& mbuf() {
  static thread_local Buffer b;
  return b;
}

// One convolution, tiled for F(m x m, 3 x 3).
template <int M>
struct Plan : ConvGeometry {
  static constexpr int A = M + 2, T = A * A;
  int64_t Cg, Og;               // channels per group: input, output
  int64_t cpad, ostride;        // floats from one tile to the next: transformed input tiles, products
  int V;                        // vectors of output channels in one panel
  int64_t width, opad, panels;  // floats in a panel of filters, filters padded to whole panels
  int64_t TH, TW, tiles;        // tile rows and columns per image, tiles in all
  int threads;

  Plan(const ConvGeometry& g, int threads_) : ConvGeometry(g), threads(threads_) {
    Cg = C / G, Og = O / G, cpad = row_stride(round_up(Cg, VL));
    V = Og <= VL ? 1 : 2;
    width = V * VL, opad = round_up(Og, width), panels = opad / width, ostride = row_stride(opad);
    TH = ceil_div(OH, M), TW = ceil_div(OW, M), tiles = N * TH * TW;
  }

  // the tiles in one block (see SLICE_FLOATS): a whole number of register blocks, at least one
  int64_t block_tiles() const {
    int64_t rows = max_rows(V), most = std::min(SLICE_FLOATS / (cpad + ostride), BLOCK_FLOATS / (T * (cpad + ostride)));
    return std::min(tiles, std::max<int64_t>(1, most / rows) * rows);
  }

  // the tiles in a block of one thread's own: as many whole register blocks as fit in its L2 cache
  // (BLOCK_L2_FLOATS), 0 if not even one does or the filters' transforms are too large to read once
  // per block (a block then takes every thread)
  int64_t private_tiles() const {
    int64_t rows = max_rows(V), most = BLOCK_L2_FLOATS / (T * (cpad + ostride)) / rows * rows;
    return T * Cg * opad <= FILTERS_L3_FLOATS ? std::min(most, round_up(tiles, rows)) : 0;
  }

  // The input tile under tile `tile` of group g, transformed: V[t * vstep] for its a*a positions,
  // vectors over channels [c0, c0 + VL) of the group (zeros past the last).
  void input_tile(const float* x, int64_t g, int64_t tile, int64_t c0, float* out, int64_t vstep) const {
    int64_t n = tile / (TH * TW), r = tile % (TH * TW);
    int64_t y0 = (r / TW) * M - PT, x0 = (r % TW) * M - PL, count = std::min<int64_t>(VL, Cg - c0);
    const float* img = x + n * input.n + (g * Cg + c0) * input.c;
    vec d[A][A], v[A][A];
    for (int i = 0; i < A; ++i)
      for (int j = 0; j < A; ++j) {
        int64_t yy = y0 + i, xx = x0 + j;
        bool inside = yy >= 0 && yy < H && xx >= 0 && xx < W;
        d[i][j] = inside ? load_lanes(img + yy * input.h + xx * input.w, input.c, count) : vec{};
      }
    sandwich<false, false, A, A, A>(Tile<M>::BT, Tile<M>::BT, &d[0][0], &v[0][0]);
    for (int t = 0; t < T; ++t) store(out + t * vstep, v[t / A][t % A]);
  }
};

// --- the forward pass -----------------------------------------------------------------------------

// Steps 2-4 of the forward pass for tiles [first, first + count) of group g, on blocks Vb and Mb of
// `tb` tiles, by a team: the tiles split over it for the transforms, the (position, panel) pairs
// for the products.
template <int M>
void forward_block(const Plan<M>& pl, const float* x, const float* U, const float* bias, float* y, int64_t g,
                   int64_t first, int64_t count, int64_t tb, float* Vb, float* Mb, const Team& team) {
  constexpr int A = Plan<M>::A, T = Plan<M>::T;
  int64_t per_t = pl.panels * pl.Cg * pl.width;
  // 2. the input tiles, transformed: Vb[t][tile][c]
  for (int64_t i = team.id; i < count; i += team.size)
    for (int64_t c0 = 0; c0 < pl.Cg; c0 += VL) pl.input_tile(x, g, first + i, c0, Vb + i * pl.cpad + c0, tb * pl.cpad);
  team.sync();
  // 3. Mb[t][tile][o] = sum over c of Vb[t][tile][c] U[t][c][o]
  for (int64_t item = team.id; item < T * pl.panels; item += team.size) {
    int64_t t = item / pl.panels, p = item % pl.panels;
    const float* u = U + (g * T + t) * per_t + p * pl.Cg * pl.width;
    even_blocks(count, max_rows(pl.V), [&](int64_t r0, int64_t rows) {
      product_fn(pl.V, rows)(Vb + (t * tb + r0) * pl.cpad, pl.cpad, u, pl.width, pl.Cg,
                             Mb + (t * tb + r0) * pl.ostride + p * pl.width, pl.ostride, false);
    });
  }
  team.sync();
  // 4. each tile's outputs: A^T M A + bias
  for (int64_t i = team.id; i < count; i += team.size) {
    int64_t tile = first + i, n = tile / (pl.TH * pl.TW), r = tile % (pl.TH * pl.TW);
    int64_t y0 = (r / pl.TW) * M, x0 = (r % pl.TW) * M;
    int64_t rows = std::min<int64_t>(M, pl.OH - y0), cols = std::min<int64_t>(M, pl.OW - x0);
    for (int64_t o0 = 0; o0 < pl.Og; o0 += VL) {
      int64_t lanes = std::min<int64_t>(VL, pl.Og - o0), o = g * pl.Og + o0;
      vec m[A][A], out[M][M];
      for (int t = 0; t < T; ++t) m[t / A][t % A] = load(Mb + (t * tb + i) * pl.ostride + o0);
      sandwich<false, false, A, M, M>(Tile<M>::AT, Tile<M>::AT, &m[0][0], &out[0][0]);
      vec b = bias ? load_lanes(bias + o * pl.bias, pl.bias, lanes) : vec{};
      float* dst = y + n * pl.output.n + o * pl.output.c + y0 * pl.output.h + x0 * pl.output.w;
      for (int64_t a = 0; a < rows; ++a)
        for (int64_t c = 0; c < cols; ++c)
          store_lanes(dst + a * pl.output.h + c * pl.output.w, pl.output.c, lanes, out[a][c] + b);
    }
  }
  team.sync();  // a shared block is written again by the next
}

// The transformed filters, kept between calls by each thread (up to KEEP_FLOATS).
Buffer& filter_buffer() {
  static thread_local Buffer b;
  return b;
}

// 1. U[g][t][panel][c][width]: G g G^T of every filter, vectors over the output channels (so that each
// position's row of a panel is stored whole), zero past the last output channel. Into filter_buffer().
template <int M>
const float* transform_filters(const Plan<M>& pl, const float* weight) {
  constexpr int A = Plan<M>::A, T = Plan<M>::T;
  int64_t per_t = pl.panels * pl.Cg * pl.width;
  float* U = filter_buffer().get(pl.G * T * per_t);
#pragma omp parallel for num_threads(pl.threads) schedule(static)
  for (int64_t item = 0; item < pl.G * pl.panels * pl.Cg; ++item) {
    int64_t g = item / (pl.panels * pl.Cg), p = item / pl.Cg % pl.panels, c = item % pl.Cg;
    for (int64_t o0 = p * pl.width; o0 < (p + 1) * pl.width; o0 += VL) {
      int64_t lanes = std::clamp<int64_t>(pl.Og - o0, 0, VL);
      const float* w = weight + (g * pl.Og + o0) * pl.weight.n + c * pl.weight.c;
      vec f[3][3], u[A][A];
      for (int i = 0; i < 3; ++i)
        for (int j = 0; j < 3; ++j) f[i][j] = load_lanes(w + i * pl.weight.h + j * pl.weight.w, pl.weight.n, lanes);
      sandwich<false, false, 3, A, A>(Tile<M>::G, Tile<M>::G, &f[0][0], &u[0][0]);
      float* dst = U + g * T * per_t + p * pl.Cg * pl.width + c * pl.width + o0 % pl.width;
      for (int t = 0; t < T; ++t) store(dst + t * per_t, u[t / A][t % A]);
    }
  }
  return U;
}

// Steps 2-4 on U, the transformed filters.
template <int M>
void forward_tiles(const Plan<M>& pl, const float* x, const float* U, const float* bias, float* y) {
  constexpr int T = Plan<M>::T;
  // 2-4, block by block: each thread its own blocks (within its L2 cache) where they hold a register
  // block of tiles and the filters' transforms are small; else all threads on each block
  int64_t blocks_of = pl.private_tiles();
  if (blocks_of > 0) {
    int64_t blocks = ceil_div(pl.tiles, blocks_of);
#pragma omp parallel num_threads(pl.threads)
    {
      float *Vb = vbuf().get(T * blocks_of * pl.cpad), *Mb = mbuf().get(T * blocks_of * pl.ostride);
#pragma omp for schedule(dynamic)
      for (int64_t item = 0; item < pl.G * blocks; ++item) {
        int64_t g = item / blocks, first = (item % blocks) * blocks_of;
        forward_block(pl, x, U, bias, y, g, first, std::min(blocks_of, pl.tiles - first), blocks_of, Vb, Mb,
                      Team{0, 1});
      }
    }
  } else {
    int64_t tb = pl.block_tiles();
    float *Vb = vbuf().get(T * tb * pl.cpad), *Mb = mbuf().get(T * tb * pl.ostride);
#pragma omp parallel num_threads(pl.threads)
    {
      Team team{omp_get_thread_num(), omp_get_num_threads()};
      for (int64_t g = 0; g < pl.G; ++g)
        for (int64_t first = 0; first < pl.tiles; first += tb)
          forward_block(pl, x, U, bias, y, g, first, std::min(tb, pl.tiles - first), tb, Vb, Mb, team);
    }
  }
}

// --- tensors that are not channels-last ----------------------------------------------------------

// The kernels read and write vectors over the channels. A tensor whose channels are not adjacent
// (NCHW) would be read and written one float at a time (a gather of VL loads per vector, a scatter of
// VL stores), so it goes through a channels-last buffer instead, a chunk of images at a time, copied
// in tiles of VL channels x VL pixels transposed in registers (blocks.h). On ResNet-18's 64-channel
// 56x56 layer (batch 8) this took the NCHW forward from 21 to 14-16 ms (13 ms on tensors that are
// channels-last already); torch's own conversion to channels-last, which the kernels were handed
// before, ran at 1.6 GB/s here.
constexpr int64_t CHUNK_FLOATS = (8 << 20) / 4;  // both buffers of one chunk together, kept between calls

struct Chunks {
  Buffer in, out;  // the input-shaped and the output-shaped tensor's chunk
};
Chunks& chunk_buffers() {
  static thread_local Chunks c;
  return c;
}

// The strides of a contiguous channels-last image batch of `channels` x rows x cols.
Strides channels_last(int64_t channels, int64_t rows, int64_t cols) {
  return Strides{channels * rows * cols, 1, cols * channels, channels};
}

// Images [0, count) of `src` (channels x rows x cols, strides s) into dst, channels-last, by all threads.
void gather(const float* src, Strides s, int64_t count, int64_t channels, int64_t rows, int64_t cols, float* dst,
            int threads) {
#pragma omp parallel num_threads(threads)
  {
    Team team{omp_get_thread_num(), omp_get_num_threads()};
    for (int64_t n = 0; n < count; ++n)
      to_channels_last(src + n * s.n, s, 1, channels, channels, rows, cols, dst + n * channels * rows * cols, 0, cols,
                       channels, team);
  }
}

// The reverse: channels-last images [0, count) of src into dst (strides s).
void scatter(const float* src, int64_t count, int64_t channels, int64_t rows, int64_t cols, float* dst, Strides s,
             int threads) {
#pragma omp parallel num_threads(threads)
  {
    Team team{omp_get_thread_num(), omp_get_num_threads()};
    for (int64_t n = 0; n < count; ++n)
      from_channels_last(src + n * channels * rows * cols, 1, channels, channels, channels, rows, cols, nullptr, 0,
                         dst + n * s.n, s, team);
  }
}

// Runs body(sub, x, y) over chunks of images: `sub` is the geometry of the chunk, x and y where its
// input-shaped and output-shaped tensors are, in channels-last buffers where geometry's were not.
// `out_written`: whether y is the kernel's result (copied back from a buffer after the body) or, as
// for the weight gradient's grad_out, another input (copied into one before it).
template <typename Body>
void over_chunks(const ConvGeometry& geometry, const float* x, const float* y_in, float* y_out, bool out_written,
                 int threads, Body body) {
  const ConvGeometry& g = geometry;
  bool x_cl = g.input.c == 1, y_cl = g.output.c == 1;
  int64_t x_image = g.C * g.H * g.W, y_image = g.O * g.OH * g.OW;
  int64_t per = (x_cl ? 0 : x_image) + (y_cl ? 0 : y_image);
  int64_t chunk = per == 0 ? g.N : std::clamp<int64_t>(CHUNK_FLOATS / per, 1, g.N);
  Chunks& buf = chunk_buffers();
  for (int64_t n0 = 0; n0 < g.N; n0 += chunk) {
    ConvGeometry sub = g;
    sub.N = std::min(chunk, g.N - n0);
    const float* xs = x + n0 * g.input.n;
    const float* ys_in = y_in ? y_in + n0 * g.output.n : nullptr;
    float* ys_out = y_out ? y_out + n0 * g.output.n : nullptr;
    if (!x_cl) {
      float* b = buf.in.get(sub.N * x_image);
      gather(xs, g.input, sub.N, g.C, g.H, g.W, b, threads);
      xs = b, sub.input = channels_last(g.C, g.H, g.W);
    }
    if (!y_cl) {
      float* b = buf.out.get(sub.N * y_image);
      if (!out_written) gather(ys_in, g.output, sub.N, g.O, g.OH, g.OW, b, threads);
      ys_in = b, sub.output = channels_last(g.O, g.OH, g.OW);
    }
    body(sub, xs, ys_in, y_cl ? ys_out : buf.out.data);
    if (!y_cl && out_written) scatter(buf.out.data, sub.N, g.O, g.OH, g.OW, ys_out, g.output, threads);
  }
  buf.in.trim(CHUNK_FLOATS), buf.out.trim(CHUNK_FLOATS);
}

// --- the weight gradient --------------------------------------------------------------------------

// Z[g][t][c][o]: the products summed over the tiles, kept between calls by each thread (up to
// KEEP_FLOATS); `continuing`: add to what an earlier chunk of images summed, else the first block of
// tiles stores and the others add.
Buffer& sum_buffer() {
  static thread_local Buffer b;
  return b;
}

template <int M>
void weight_grad_sums(const Plan<M>& pl, const float* x, const float* grad_out, float* Z, bool continuing) {
  constexpr int A = Plan<M>::A, T = Plan<M>::T;
  int64_t per_t = pl.Cg * pl.ostride;
  int64_t tb = pl.block_tiles();
  float *Vb = vbuf().get(T * tb * pl.cpad), *Qb = mbuf().get(T * tb * pl.ostride);
#pragma omp parallel num_threads(pl.threads)
  for (int64_t g = 0; g < pl.G; ++g)
    for (int64_t first = 0; first < pl.tiles; first += tb) {
      int64_t count = std::min(tb, pl.tiles - first);
    // the block's tiles transformed: Vb[t][tile][c] = B^T d B, Qb[t][tile][o] = A Y* A^T
#pragma omp for schedule(static)
      for (int64_t i = 0; i < count; ++i) {
        for (int64_t c0 = 0; c0 < pl.Cg; c0 += VL)
          pl.input_tile(x, g, first + i, c0, Vb + i * pl.cpad + c0, tb * pl.cpad);
        int64_t tile = first + i, n = tile / (pl.TH * pl.TW), r = tile % (pl.TH * pl.TW);
        int64_t y0 = (r / pl.TW) * M, x0 = (r % pl.TW) * M;
        const float* src = grad_out + n * pl.output.n + g * pl.Og * pl.output.c + y0 * pl.output.h + x0 * pl.output.w;
        for (int64_t o0 = 0; o0 < pl.opad; o0 += VL) {
          int64_t lanes = std::clamp<int64_t>(pl.Og - o0, 0, VL);
          vec gy[M][M], q[A][A];
          for (int a = 0; a < M; ++a)
            for (int b = 0; b < M; ++b) {
              bool inside = y0 + a < pl.OH && x0 + b < pl.OW;
              gy[a][b] =
                  inside ? load_lanes(src + o0 * pl.output.c + a * pl.output.h + b * pl.output.w, pl.output.c, lanes)
                         : vec{};
            }
          sandwich<true, true, M, A, A>(Tile<M>::AT, Tile<M>::AT, &gy[0][0], &q[0][0]);
          for (int t = 0; t < T; ++t) store(Qb + (t * tb + i) * pl.ostride + o0, q[t / A][t % A]);
        }
      }
    // Z[t][c][o] += sum over the block's tiles of Vb[t][tile][c] Qb[t][tile][o], one (t, panel) a thread
#pragma omp for schedule(dynamic)
      for (int64_t item = 0; item < T * pl.panels; ++item) {
        int64_t t = item / pl.panels, p = item % pl.panels;
        float* z = Z + (g * T + t) * per_t + p * pl.width;
        even_blocks(pl.Cg, max_rows(pl.V), [&](int64_t c0, int64_t rows) {
          sum_fn(pl.V, rows)(Vb + t * tb * pl.cpad + c0, pl.cpad, Qb + t * tb * pl.ostride + p * pl.width, pl.ostride,
                             count, z + c0 * pl.ostride, pl.ostride, continuing || first > 0);
        });
      }
    }
}

// Every filter's gradient from Z: G^T Z G, vectors over the output channels.
template <int M>
void weight_grad_finish(const Plan<M>& pl, const float* Z, float* grad_w) {
  constexpr int A = Plan<M>::A, T = Plan<M>::T;
  int64_t per_t = pl.Cg * pl.ostride;
#pragma omp parallel for num_threads(pl.threads) schedule(static)
  for (int64_t item = 0; item < pl.G * pl.Cg; ++item) {
    int64_t g = item / pl.Cg, c = item % pl.Cg;
    for (int64_t o0 = 0; o0 < pl.Og; o0 += VL) {
      int64_t lanes = std::min<int64_t>(VL, pl.Og - o0);
      vec z[A][A], f[3][3];
      for (int t = 0; t < T; ++t) z[t / A][t % A] = load(Z + (g * T + t) * per_t + c * pl.ostride + o0);
      sandwich<true, true, A, 3, 3>(Tile<M>::G, Tile<M>::G, &z[0][0], &f[0][0]);
      float* w = grad_w + (g * pl.Og + o0) * pl.weight.n + c * pl.weight.c;
      for (int i = 0; i < 3; ++i)
        for (int j = 0; j < 3; ++j) store_lanes(w + i * pl.weight.h + j * pl.weight.w, pl.weight.n, lanes, f[i][j]);
    }
  }
}

template <int M>
void run_forward(const float* x, const float* weight, const float* bias, float* y, const ConvGeometry* geometry,
                 int threads) {
  const Plan<M> pl(*geometry, threads);
  if (pl.N == 0 || pl.O == 0 || pl.OH <= 0 || pl.OW <= 0) return;
  if (pl.Cg == 0) {  // no channels: the bias alone
    for (int64_t n = 0; n < pl.N; ++n)
      for (int64_t o = 0; o < pl.O; ++o)
        for (int64_t a = 0; a < pl.OH; ++a)
          for (int64_t b = 0; b < pl.OW; ++b)
            y[n * pl.output.n + o * pl.output.c + a * pl.output.h + b * pl.output.w] = bias ? bias[o * pl.bias] : 0.0f;
    return;
  }
  const float* U = transform_filters(pl, weight);
  over_chunks(*geometry, x, nullptr, y, true, threads,
              [&](const ConvGeometry& sub, const float* xs, const float*, float* ys) {
                forward_tiles(Plan<M>(sub, threads), xs, U, bias, ys);
              });
  filter_buffer().trim(KEEP_FLOATS);
}

template <int M>
void run_weight_grad(const float* x, const float* grad_out, float* grad_w, const ConvGeometry* geometry, int threads) {
  const Plan<M> pl(*geometry, threads);
  if (pl.O == 0 || pl.Cg == 0) return;
  if (pl.N == 0 || pl.OH <= 0 || pl.OW <= 0) {  // nothing to sum: zeros
    for (int64_t o = 0; o < pl.O; ++o)
      for (int64_t c = 0; c < pl.Cg; ++c)
        for (int i = 0; i < 3; ++i)
          for (int j = 0; j < 3; ++j) grad_w[o * pl.weight.n + c * pl.weight.c + i * pl.weight.h + j * pl.weight.w] = 0;
    return;
  }
  float* Z = sum_buffer().get(pl.G * Plan<M>::T * pl.Cg * pl.ostride);
  bool continuing = false;
  over_chunks(*geometry, x, grad_out, nullptr, false, threads,
              [&](const ConvGeometry& sub, const float* xs, const float* gs, float*) {
                weight_grad_sums(Plan<M>(sub, threads), xs, gs, Z, continuing);
                continuing = true;
              });
  weight_grad_finish(pl, Z, grad_w);
  sum_buffer().trim(KEEP_FLOATS);
}

}  // namespace

extern "C" {

// y = conv2d(x, weight, bias) for 3x3 filters, stride 1, dilation 1 (bias may be null), by F(2x2, 3x3)
// or F(4x4, 3x3). Must equal winograd.py's conv2d_forward with m = 2 or 4.
void cnnzoo_winograd_f2_forward(const float* x, const float* weight, const float* bias, float* y,
                                const ConvGeometry* geometry, int threads) {
  run_forward<2>(x, weight, bias, y, geometry, threads);
}
void cnnzoo_winograd_f4_forward(const float* x, const float* weight, const float* bias, float* y,
                                const ConvGeometry* geometry, int threads) {
  run_forward<4>(x, weight, bias, y, geometry, threads);
}

// grad_w = the weight gradient of that convolution, given x and grad_out. Must equal winograd.py's
// conv2d_weight_grad with m = 2 or 4.
void cnnzoo_winograd_f2_weight_grad(const float* x, const float* grad_out, float* grad_w, const ConvGeometry* geometry,
                                    int threads) {
  run_weight_grad<2>(x, grad_out, grad_w, geometry, threads);
}
void cnnzoo_winograd_f4_weight_grad(const float* x, const float* grad_out, float* grad_w, const ConvGeometry* geometry,
                                    int threads) {
  run_weight_grad<4>(x, grad_out, grad_w, geometry, threads);
}

}  // extern "C"

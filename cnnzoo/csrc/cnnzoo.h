// The interface of the compiled kernels: the geometry each kernel call receives (a pointer to one
// of the structs below, with the tensors' data pointers and a thread count), plain C layout, no
// torch headers. cnnzoo/ops/compiled.py mirrors every struct field for field as a ctypes.Structure:
// a change here is a change there.

#pragma once

#include <cstdint>

namespace cnnzoo {

// Strides of a 4-D tensor, in elements (any: a crop, a transpose, channels-last, an expanded tensor).
struct Strides {
  int64_t n, c, h, w;
};

// A 2-D convolution, shared by its three kernels. Each tensor's strides sit under the role of the
// tensor it has the shape of: the input gradient's under `input`, grad_output's under `output`, the
// weight gradient's under `weight`.
struct ConvGeometry {
  int64_t N, C, H, W;  // input: images, channels, rows, columns
  int64_t O, OH, OW;   // output: channels, rows, columns
  int64_t KH, KW;      // kernel rows, columns
  int64_t SH, SW;      // stride
  int64_t PT, PL;      // padding at the top and on the left (the bottom and right follow from OH, OW)
  int64_t DH, DW;      // dilation
  int64_t G;           // groups
  Strides input, weight, output;
  int64_t bias;  // the bias's stride (when there is one)
};

// A 2-D pooling of `planes` contiguous planes of H x W into OH x OW (ceil_mode is in OH, OW). The
// adaptive kernels and max pooling's backward read only the sizes; average pooling has no dilation
// (dilH = dilW = 1), and only it reads divisor_override (0: none) and count_include_pad.
struct PoolGeometry {
  int64_t planes, H, W, OH, OW;
  int64_t kH, kW;      // kernel
  int64_t sH, sW;      // stride
  int64_t padH, padW;  // padding
  int64_t dilH, dilW;  // dilation
  int64_t divisor_override;
  bool count_include_pad;
};

// a / b rounded up, for any a and b > 0.
inline int64_t ceil_div(int64_t a, int64_t b) { return a <= 0 ? -((-a) / b) : (a + b - 1) / b; }

}  // namespace cnnzoo

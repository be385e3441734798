"""Pooling on CUDA, written in Triton: max, average and adaptive average pooling and their gradients.

Each kernel names the reference function it must equal (``cnnzoo/ops/pool.py``). Every program takes
a block of output elements (of input elements, for the gathering backwards) in the order they lie in
memory, so that both NCHW and channels_last are read and written in contiguous runs: ``CL`` says
which order the flat index counts in. Tensors are read through their strides; sums are in float32.

* max pooling keeps, per window, the first maximum in tap order and any NaN (``v > best or v != v``,
  the rule of torch's kernels), so values and indices equal torch's to the bit;
* its backward scatters each gradient onto the pixel its index names, with float32 atomic adds: it
  knows only the indices, not the windows. A pixel that is the maximum of two windows receives two
  additions, which commute exactly; with three or more the order, and so the last bit, may vary. Under
  ``torch.use_deterministic_algorithms(True)`` the operator takes the reference instead;
* average pooling's divisor follows torch's rules (``divisor_override``, else the window's area with
  or without the padding, never the part of a ceil_mode window beyond the padding);
* the average and adaptive backwards gather: each input pixel sums the gradients of the windows (at
  most ``ceil(k / stride)`` per axis) or bins that contain it, so they are deterministic.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _elements(BLOCK: tl.constexpr, TOTAL, C, H, W, CL: tl.constexpr, BIG: tl.constexpr):
    """A block of the ``TOTAL`` elements of a (N, C, H, W) tensor (the host counts them, exactly),
    counted in NCHW order or, if ``CL``, in NHWC."""
    pid = tl.program_id(0)
    if BIG:
        pid = pid.to(tl.int64)
    i = pid * BLOCK + tl.arange(0, BLOCK)
    ok = i < TOTAL
    if CL:
        c = i % C
        t = i // C
        w = t % W
        t = t // W
        h = t % H
        n = t // H
    else:
        w = i % W
        t = i // W
        h = t % H
        t = t // H
        c = t % C
        n = t // C
    return ok, n, c, h, w


@triton.jit
def _divisor(
    oh, ow, H, W, SH, SW, PH, PW, KH: tl.constexpr, KW: tl.constexpr, INCLUDE_PAD: tl.constexpr, OVERRIDE: tl.constexpr
):
    """``pool.avg_divisor`` of the windows at (oh, ow)."""
    if OVERRIDE > 0:
        return tl.zeros_like(oh).to(tl.float32) + OVERRIDE
    h0 = oh * SH - PH
    w0 = ow * SW - PW
    h1 = tl.minimum(h0 + KH, H + PH)
    w1 = tl.minimum(w0 + KW, W + PW)
    if INCLUDE_PAD:
        return ((h1 - h0) * (w1 - w0)).to(tl.float32)
    rows = tl.minimum(h1, H) - tl.maximum(h0, 0)
    cols = tl.minimum(w1, W) - tl.maximum(w0, 0)
    return (rows * cols).to(tl.float32)


@triton.jit
def max_pool2d_forward(
    x,
    y,
    idx,
    TOTAL,
    C,
    H,
    W,
    HO,
    WO,
    sxn,
    sxc,
    sxh,
    sxw,
    syn,
    syc,
    syh,
    syw,
    SH,
    SW,
    PH,
    PW,
    DH,
    DW,
    KH: tl.constexpr,
    KW: tl.constexpr,
    CL: tl.constexpr,
    BIG: tl.constexpr,
    BLOCK: tl.constexpr,
):
    """``pool.max_pool2d_forward``: each window's first maximum (or its NaN) and its flat index
    ``ih * W + iw``; ``y`` and ``idx`` have the same strides."""
    ok, n, c, oh, ow = _elements(BLOCK, TOTAL, C, HO, WO, CL, BIG)
    plane = x + n * sxn + c * sxc
    best = tl.full((BLOCK,), float("-inf"), tl.float32)
    where = tl.full((BLOCK,), -1, tl.int64)
    for r in tl.static_range(KH):
        ih = oh * SH - PH + r * DH
        for s in tl.static_range(KW):
            iw = ow * SW - PW + s * DW
            inside = ok & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
            v = tl.load(plane + ih * sxh + iw * sxw, mask=inside, other=float("-inf")).to(tl.float32)
            take = inside & ((v > best) | (v != v) | (where < 0))
            best = tl.where(take, v, best)
            where = tl.where(take, (ih * W + iw).to(tl.int64), where)
    out = n * syn + c * syc + oh * syh + ow * syw
    tl.store(y + out, best.to(y.dtype.element_ty), mask=ok)
    tl.store(idx + out, where, mask=ok)


@triton.jit
def max_pool2d_backward(
    gy,
    idx,
    dx,
    TOTAL,
    C,
    H,
    W,
    HO,
    WO,
    sgn,
    sgc,
    sgh,
    sgw,
    sin,
    sic,
    sih,
    siw,
    sdn,
    sdc,
    sdh,
    sdw,
    CL: tl.constexpr,
    BIG: tl.constexpr,
    BLOCK: tl.constexpr,
):
    """``pool.max_pool2d_backward``: dx[n, c].flat[idx[n, c, oh, ow]] += gy[n, c, oh, ow], into a
    zeroed float32 ``dx``."""
    ok, n, c, oh, ow = _elements(BLOCK, TOTAL, C, HO, WO, CL, BIG)
    g = tl.load(gy + n * sgn + c * sgc + oh * sgh + ow * sgw, mask=ok, other=0.0).to(tl.float32)
    i = tl.load(idx + n * sin + c * sic + oh * sih + ow * siw, mask=ok, other=0)
    target = dx + n * sdn + c * sdc + (i // W) * sdh + (i % W) * sdw
    tl.atomic_add(target, g, mask=ok, sem="relaxed")


@triton.jit
def avg_pool2d_forward(
    x,
    y,
    TOTAL,
    C,
    H,
    W,
    HO,
    WO,
    sxn,
    sxc,
    sxh,
    sxw,
    syn,
    syc,
    syh,
    syw,
    SH,
    SW,
    PH,
    PW,
    OVERRIDE: tl.constexpr,
    KH: tl.constexpr,
    KW: tl.constexpr,
    INCLUDE_PAD: tl.constexpr,
    CL: tl.constexpr,
    BIG: tl.constexpr,
    BLOCK: tl.constexpr,
):
    """``pool.avg_pool2d_forward``: each window's sum over ``pool.avg_divisor``."""
    ok, n, c, oh, ow = _elements(BLOCK, TOTAL, C, HO, WO, CL, BIG)
    plane = x + n * sxn + c * sxc
    total = tl.zeros((BLOCK,), tl.float32)
    for r in tl.static_range(KH):
        ih = oh * SH - PH + r
        for s in tl.static_range(KW):
            iw = ow * SW - PW + s
            inside = ok & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
            total += tl.load(plane + ih * sxh + iw * sxw, mask=inside, other=0.0).to(tl.float32)
    total = total / _divisor(oh, ow, H, W, SH, SW, PH, PW, KH, KW, INCLUDE_PAD, OVERRIDE)
    tl.store(y + n * syn + c * syc + oh * syh + ow * syw, total.to(y.dtype.element_ty), mask=ok)


@triton.jit
def avg_pool2d_backward(
    gy,
    dx,
    TOTAL,
    C,
    H,
    W,
    HO,
    WO,
    sgn,
    sgc,
    sgh,
    sgw,
    sdn,
    sdc,
    sdh,
    sdw,
    SH,
    SW,
    PH,
    PW,
    OVERRIDE: tl.constexpr,
    KH: tl.constexpr,
    KW: tl.constexpr,
    SPAN_H: tl.constexpr,
    SPAN_W: tl.constexpr,
    INCLUDE_PAD: tl.constexpr,
    CL: tl.constexpr,
    BIG: tl.constexpr,
    BLOCK: tl.constexpr,
):
    """``pool.avg_pool2d_backward``: each input pixel gathers gy / divisor from the (at most
    ``SPAN_H x SPAN_W``) windows that contain it."""
    ok, n, c, ih, iw = _elements(BLOCK, TOTAL, C, H, W, CL, BIG)
    plane = gy + n * sgn + c * sgc
    total = tl.zeros((BLOCK,), tl.float32)
    for a in tl.static_range(SPAN_H):
        oh = (ih + PH) // SH - a  # the last window starting at or before ih, then earlier ones
        h_ok = (oh >= 0) & (oh < HO) & (oh * SH - PH + KH > ih)
        for b in tl.static_range(SPAN_W):
            ow = (iw + PW) // SW - b
            inside = ok & h_ok & (ow >= 0) & (ow < WO) & (ow * SW - PW + KW > iw)
            g = tl.load(plane + oh * sgh + ow * sgw, mask=inside, other=0.0).to(tl.float32)
            d = _divisor(oh, ow, H, W, SH, SW, PH, PW, KH, KW, INCLUDE_PAD, OVERRIDE)
            total += g / tl.where(inside, d, 1.0)  # (g is 0 outside, where d may be 0)
    tl.store(dx + n * sdn + c * sdc + ih * sdh + iw * sdw, total.to(dx.dtype.element_ty), mask=ok)


@triton.jit
def adaptive_avg_pool2d_forward(
    x,
    y,
    TOTAL,
    C,
    H,
    W,
    HO,
    WO,
    sxn,
    sxc,
    sxh,
    sxw,
    syn,
    syc,
    syh,
    syw,
    BIN_H,
    BIN_W,
    CL: tl.constexpr,
    BIG: tl.constexpr,
    BLOCK: tl.constexpr,
):
    """``pool.adaptive_avg_pool2d_forward``: the mean of bin [floor(i * H / Ho), ceil((i + 1) * H / Ho))
    along each axis; ``BIN_H x BIN_W`` bounds every bin."""
    ok, n, c, oh, ow = _elements(BLOCK, TOTAL, C, HO, WO, CL, BIG)
    h0 = oh * H // HO
    h1 = ((oh + 1) * H + HO - 1) // HO
    w0 = ow * W // WO
    w1 = ((ow + 1) * W + WO - 1) // WO
    plane = x + n * sxn + c * sxc
    total = tl.zeros((BLOCK,), tl.float32)
    for a in range(BIN_H):
        ih = h0 + a
        for b in range(BIN_W):
            iw = w0 + b
            inside = ok & (ih < h1) & (iw < w1)
            total += tl.load(plane + ih * sxh + iw * sxw, mask=inside, other=0.0).to(tl.float32)
    total = total / ((h1 - h0) * (w1 - w0)).to(tl.float32)
    tl.store(y + n * syn + c * syc + oh * syh + ow * syw, total.to(y.dtype.element_ty), mask=ok)


@triton.jit
def adaptive_avg_pool2d_backward(
    gy,
    dx,
    TOTAL,
    C,
    H,
    W,
    HO,
    WO,
    sgn,
    sgc,
    sgh,
    sgw,
    sdn,
    sdc,
    sdh,
    sdw,
    SPAN_H,
    SPAN_W,
    CL: tl.constexpr,
    BIG: tl.constexpr,
    BLOCK: tl.constexpr,
):
    """``pool.adaptive_avg_pool2d_backward``: each input pixel gathers gy / bin area from the bins
    that contain it, oh in [floor(ih * Ho / H), ceil((ih + 1) * Ho / H)) (at most ``SPAN_H`` of them)."""
    ok, n, c, ih, iw = _elements(BLOCK, TOTAL, C, H, W, CL, BIG)
    oh0 = ih * HO // H
    oh1 = ((ih + 1) * HO + H - 1) // H
    ow0 = iw * WO // W
    ow1 = ((iw + 1) * WO + W - 1) // W
    plane = gy + n * sgn + c * sgc
    total = tl.zeros((BLOCK,), tl.float32)
    for a in range(SPAN_H):
        oh = oh0 + a
        area_h = ((oh + 1) * H + HO - 1) // HO - oh * H // HO
        for b in range(SPAN_W):
            ow = ow0 + b
            inside = ok & (oh < oh1) & (ow < ow1)
            area = area_h * (((ow + 1) * W + WO - 1) // WO - ow * W // WO)
            g = tl.load(plane + oh * sgh + ow * sgw, mask=inside, other=0.0).to(tl.float32)
            total += g / tl.where(inside, area, 1).to(tl.float32)
    tl.store(dx + n * sdn + c * sdc + ih * sdh + iw * sdw, total.to(dx.dtype.element_ty), mask=ok)

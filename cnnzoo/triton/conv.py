"""Convolution on CUDA as implicit GEMM, written in Triton: the forward pass and both gradients.

Each kernel names the reference function it must equal (``cnnzoo/ops/conv.py``). A convolution is a
matrix product whose operands are never built: a tile of one operand is gathered from the input at
the addresses im2col would have copied, multiplied on the tensor cores (``tl.dot``) and accumulated
in float32. Every tensor is read through its four strides, so NCHW, channels_last and views of
either need no copy.

* **forward** (``conv.conv2d_forward``): rows are the output pixels ``N*Ho*Wo``, columns the output
  channels of one group. The reduction runs over the kernel taps, and within a tap over blocks of
  input channels (``TAPS``), as one loop over (tap, channel block) so that the software pipeline
  runs across taps; channels are contiguous in channels_last.
  With few channels per group (the RGB stems, depthwise layers) a block of 16 channels would be mostly
  padding, so the reduction runs instead over the taps and channels flattened into one index
  (``FLAT``), ``k = (r * KW + s) * Cg + c``. A 1x1 unpadded kernel (``POINTWISE``) skips the bounds
  checks: it is a plain (strided) matrix product.
* **input gradient** (``conv.conv2d_input_grad``): the adjoint, decomposed by stride phase. Input
  rows ``ih`` with the same ``(ih + pad) mod stride`` receive gradient from the same kernel taps, so
  each program takes the pixels of one phase and runs only the taps of that phase; no tap is loaded
  to be masked away (a masked loop would waste 3 of 4 taps at stride 2). Every input pixel is written
  once, zero where no tap reaches it, so the output needs no clearing.
* **weight gradient** (``conv.conv2d_weight_grad``): rows are the output channels, columns the
  flattened ``(tap, channel)`` index, the reduction runs over ``N*Ho*Wo``. That reduction is long and
  the product small for the late layers of a network, so it is split (split-K) into ``SPLIT`` chunks,
  each program writing its partial sum into a float32 workspace; the chunks are then summed in a
  fixed order (``workspace.sum(0)``), so the result is deterministic.

Offsets are int32 unless one can reach 2^31 (``BIG``: a tensor of 2^31 elements, or a view whose
strides reach that far); then every index is int64, and the pixel counts come from the host, where
they are computed exactly. The group, phase or chunk of a program rides on grid axis 0 with its
block of rows (axes 1 and 2 stop at 65535; many groups, as vmap makes, would pass that).

float32 operands go through ``tl.dot`` with ``PRECISION`` (``"tf32"`` where torch's own convolution
would use TF32, else ``"ieee"``); half and bfloat16 operands go as they are, accumulating in float32.
``UPCAST`` converts the operands to float32 first: Triton's CPU interpreter keeps bfloat16 values as
raw bits, so the tests run the interpreter with it (and compare against a reference rounded alike).
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _mma(a, b, acc, PRECISION: tl.constexpr, UPCAST: tl.constexpr):
    """``acc + a @ b``, in float32."""
    if UPCAST:
        return tl.dot(a.to(tl.float32), b.to(tl.float32), acc, input_precision="ieee")
    elif a.dtype == tl.float32:
        return tl.dot(a, b, acc, input_precision=PRECISION)
    else:
        return tl.dot(a, b, acc)


@triton.jit
def _wide(v, BIG: tl.constexpr):
    """``v`` in int64 when ``BIG`` (offsets that can pass 2^31), else as it is (int32)."""
    if BIG:
        return v.to(tl.int64)
    else:
        return v


@triton.jit
def _span(block, SIZE: tl.constexpr, BIG: tl.constexpr):
    """The indices of block ``block`` of ``SIZE``: block * SIZE + [0, SIZE)."""
    return _wide(block, BIG) * SIZE + tl.arange(0, SIZE)


@triton.jit
def _rows(block, BM: tl.constexpr, HO, WO, BIG: tl.constexpr):
    """A block of output pixels: their flat index and (image, row, column)."""
    rm = _span(block, BM, BIG)
    ow = rm % WO
    t = rm // WO
    return rm, t // HO, t % HO, ow


@triton.jit
def conv2d_forward(
    x,
    w,
    bias,
    y,
    M,
    MB,
    H,
    W,
    HO,
    WO,
    CG,
    OG,
    sxn,
    sxc,
    sxh,
    sxw,
    swo,
    swc,
    swh,
    sww,
    sb,
    syn,
    syc,
    syh,
    syw,
    SH,
    SW,
    PT,
    PL,
    DH,
    DW,
    KH: tl.constexpr,
    KW: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    FLAT: tl.constexpr,
    POINTWISE: tl.constexpr,
    BIG: tl.constexpr,
    PRECISION: tl.constexpr,
    UPCAST: tl.constexpr,
    BM: tl.constexpr,
    BN: tl.constexpr,
    BK: tl.constexpr,
):
    """``conv.conv2d_forward``: y[n, o, oh, ow] = bias[o] + sum_{c, r, s} x[n, c, ih, iw] w[o, c, r, s].
    Program axis 0 is (group, block of the M = N * HO * WO rows), MB blocks a group."""
    g = _wide(tl.program_id(0) // MB, BIG)
    rm, n, oh, ow = _rows(tl.program_id(0) % MB, BM, HO, WO, BIG)
    rn = _span(tl.program_id(1), BN, BIG)
    m_ok = rm < M
    n_ok = rn < OG
    o = g * OG + rn
    x_img = x + n * sxn + g * CG * sxc  # (BM,) pointers: each row's image and group
    w_out = w + o * swo  # (BN,) pointers: each column's filter
    acc = tl.zeros((BM, BN), dtype=tl.float32)
    if FLAT:
        taps = CG * KH * KW
        for k0 in range(0, taps, BK):
            rk = _wide(k0 + tl.arange(0, BK), BIG)
            k_ok = rk < taps
            c = rk % CG
            tap = rk // CG
            r = tap // KW
            s = tap % KW
            ih = oh[:, None] * SH - PT + r[None, :] * DH
            iw = ow[:, None] * SW - PL + s[None, :] * DW
            inside = (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
            a_ok = m_ok[:, None] & k_ok[None, :] & inside
            a = tl.load(x_img[:, None] + c[None, :] * sxc + ih * sxh + iw * sxw, mask=a_ok, other=0.0)
            b_ptr = w_out[None, :] + c[:, None] * swc + r[:, None] * swh + s[:, None] * sww
            b = tl.load(b_ptr, mask=k_ok[:, None] & n_ok[None, :], other=0.0)
            acc = _mma(a, b, acc, PRECISION, UPCAST)
    else:
        # one loop over (tap, channel block), so that the software pipeline runs across the taps too
        blocks = tl.cdiv(CG, BK)
        for it in range(KH * KW * blocks):
            tap = it // blocks
            rc = _span(it % blocks, BK, BIG)
            r = tap // KW
            s = tap % KW
            if POINTWISE:  # 1x1, unpadded: every tap is inside the input
                pix = x_img + oh * SH * sxh + ow * SW * sxw
                p_ok = m_ok
            else:
                ih = oh * SH - PT + r * DH
                iw = ow * SW - PL + s * DW
                pix = x_img + ih * sxh + iw * sxw
                p_ok = m_ok & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
            c_ok = rc < CG
            a = tl.load(pix[:, None] + rc[None, :] * sxc, mask=p_ok[:, None] & c_ok[None, :], other=0.0)
            b_ptr = w_out[None, :] + rc[:, None] * swc + r * swh + s * sww
            b = tl.load(b_ptr, mask=c_ok[:, None] & n_ok[None, :], other=0.0)
            acc = _mma(a, b, acc, PRECISION, UPCAST)
    if HAS_BIAS:
        acc += tl.load(bias + o * sb, mask=n_ok, other=0.0).to(tl.float32)[None, :]
    y_ptr = y + n[:, None] * syn + o[None, :] * syc + oh[:, None] * syh + ow[:, None] * syw
    tl.store(y_ptr, acc.to(y.dtype.element_ty), mask=m_ok[:, None] & n_ok[None, :])


@triton.jit
def conv2d_input_grad(
    gy,
    w,
    dx,
    N,
    MB,
    H,
    W,
    HO,
    WO,
    CG,
    OG,
    sgn,
    sgc,
    sgh,
    sgw,
    swo,
    swc,
    swh,
    sww,
    sdn,
    sdc,
    sdh,
    sdw,
    PT,
    PL,
    DH,
    DW,
    SH: tl.constexpr,
    SW: tl.constexpr,
    KH: tl.constexpr,
    KW: tl.constexpr,
    BIG: tl.constexpr,
    PRECISION: tl.constexpr,
    UPCAST: tl.constexpr,
    BM: tl.constexpr,
    BN: tl.constexpr,
    BK: tl.constexpr,
):
    """``conv.conv2d_input_grad``: dx[n, c, ih, iw] = sum over the taps (r, s) and output pixels
    (oh, ow) with ih = oh * SH - PT + r * DH (and alike for iw) of gy[n, o, oh, ow] w[o, c, r, s].
    Program axis 0 is (group, row phase, column phase, block of the phase's pixels), MB blocks a
    phase; the phase's pixels are ih = pa + i * SH."""
    z = tl.program_id(0) // MB
    g = _wide(z // (SH * SW), BIG)
    pa = z % (SH * SW) // SW
    pb = z % SW
    hp = _wide((H - pa + SH - 1) // SH, BIG)  # this phase's rows and columns (none where pa >= H)
    wp = (W - pb + SW - 1) // SW
    rm, n, ip, jp = _rows(tl.program_id(0) % MB, BM, tl.maximum(hp, 1), tl.maximum(wp, 1), BIG)
    m_ok = rm < hp * wp * N
    ih = pa + ip * SH
    iw = pb + jp * SW
    rc = _span(tl.program_id(1), BN, BIG)
    c_ok = rc < CG
    c = g * CG + rc
    acc = tl.zeros((BM, BN), dtype=tl.float32)
    for r in range(KH):  # (a loop, not unrolled: the taps of other phases are skipped whole)
        # the taps of this phase: (ih + PT - r * DH) a multiple of SH (kept non-negative for %)
        if (pa + PT - r * DH + SH * KH * DH) % SH == 0:
            qh = ih + PT - r * DH
            oh = qh // SH
            h_ok = (qh >= 0) & (oh < HO)
            for s in range(KW):
                if (pb + PL - s * DW + SW * KW * DW) % SW == 0:
                    qw = iw + PL - s * DW
                    ow = qw // SW
                    ok = m_ok & h_ok & (qw >= 0) & (ow < WO)
                    pix = gy + n * sgn + g * OG * sgc + oh * sgh + ow * sgw
                    w_tap = w + rc * swc + r * swh + s * sww
                    for o0 in range(0, OG, BK):
                        ro = _wide(o0 + tl.arange(0, BK), BIG)
                        o_ok = ro < OG
                        a = tl.load(pix[:, None] + ro[None, :] * sgc, mask=ok[:, None] & o_ok[None, :], other=0.0)
                        b_ptr = w_tap[None, :] + (g * OG + ro)[:, None] * swo
                        b = tl.load(b_ptr, mask=o_ok[:, None] & c_ok[None, :], other=0.0)
                        acc = _mma(a, b, acc, PRECISION, UPCAST)
    dx_ptr = dx + n[:, None] * sdn + c[None, :] * sdc + ih[:, None] * sdh + iw[:, None] * sdw
    tl.store(dx_ptr, acc.to(dx.dtype.element_ty), mask=m_ok[:, None] & c_ok[None, :])


@triton.jit
def conv2d_weight_grad(
    x,
    gy,
    ws,
    M,
    MB,
    H,
    W,
    HO,
    WO,
    CG,
    OG,
    O,
    sxn,
    sxc,
    sxh,
    sxw,
    sgn,
    sgc,
    sgh,
    sgw,
    SH,
    SW,
    PT,
    PL,
    DH,
    DW,
    CHUNK,
    SPLIT,
    KH: tl.constexpr,
    KW: tl.constexpr,
    BIG: tl.constexpr,
    PRECISION: tl.constexpr,
    UPCAST: tl.constexpr,
    BM: tl.constexpr,
    BN: tl.constexpr,
    BK: tl.constexpr,
):
    """``conv.conv2d_weight_grad``, one chunk of the sum: ws[split, o, (r * KW + s) * Cg + c] = sum
    over the output pixels m = (n, oh, ow) of the chunk of gy[n, o, oh, ow] x[n, c, ih, iw]. Program
    axis 0 is (group, chunk, block of output channels), MB blocks a chunk; ``ws`` is
    (SPLIT, O, KH * KW * Cg), contiguous."""
    z = tl.program_id(0) // MB
    g = _wide(z // SPLIT, BIG)
    split = _wide(z % SPLIT, BIG)
    ro = _span(tl.program_id(0) % MB, BM, BIG)
    o_ok = ro < OG
    taps = CG * KH * KW
    rk = _span(tl.program_id(1), BN, BIG)
    k_ok = rk < taps
    c = rk % CG
    tap = rk // CG
    r = tap // KW
    s = tap % KW
    x_col = x + (g * CG + c) * sxc  # (BN,) pointers
    gy_row = gy + (g * OG + ro) * sgc  # (BM,) pointers
    start = split * CHUNK
    end = tl.minimum(start + CHUNK, M)
    acc = tl.zeros((BM, BN), dtype=tl.float32)
    for m0 in range(start, end, BK):
        rp = _wide(m0 + tl.arange(0, BK), BIG)
        p_ok = rp < end
        ow = rp % WO
        t = rp // WO
        oh = t % HO
        n = t // HO
        a_ptr = gy_row[:, None] + (n * sgn + oh * sgh + ow * sgw)[None, :]
        a = tl.load(a_ptr, mask=o_ok[:, None] & p_ok[None, :], other=0.0)
        ih = oh[:, None] * SH - PT + r[None, :] * DH
        iw = ow[:, None] * SW - PL + s[None, :] * DW
        inside = (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
        b_ptr = x_col[None, :] + n[:, None] * sxn + ih * sxh + iw * sxw
        b = tl.load(b_ptr, mask=p_ok[:, None] & k_ok[None, :] & inside, other=0.0)
        acc = _mma(a, b, acc, PRECISION, UPCAST)
    ws_ptr = ws + (split * O + g * OG + ro)[:, None] * taps + rk[None, :]
    tl.store(ws_ptr, acc, mask=o_ok[:, None] & k_ok[None, :])

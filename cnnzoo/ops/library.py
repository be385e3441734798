"""The registered operators, ``torch.ops.cnnzoo.*``: each declared once (``declare.py`` builds the rest).

A declaration is the operator's output rule (its signature, the argument checks, the output's size and
memory format), its implementations (the reference in ``conv.py``/``pool.py``, the compiled CPU kernels
for float32), and its formulas: a gradient and a tangent per differentiable input, and a vmap rule.
The formulas are written with these same operators, so every order of derivative stays inside cnnzoo:
conv2d, its input gradient and its weight gradient are each other's gradients, and a pooling backward
is linear, so its gradient is the pooling again (a gather for max pooling).

The references are looked up in their modules at each call (hence the lambdas), so that a test can
replace one and see which implementation ran; the compiled implementations have the operators' own
signatures (``compiled.py``).

Memory format follows torch: an output and the gradients are channels_last when the input (or, for
conv2d, the input or the weight) is. The backward operators take that choice as ``channels_last``.
"""

import functools
from collections.abc import Callable, Sequence

from torch import Tensor, int64

from . import algorithms, compiled, fft, gpu, winograd
from . import conv as reference_conv
from . import local as reference_local
from . import pool as reference_pool
from ._args import (
    adaptive_plane,
    avg_pool2d_plane,
    check_4d,
    check_conv2d_grad,
    check_local,
    check_local_grad,
    check_pool2d_grad,
    check_same_kind,
    check_size,
    check_weight,
    conv2d_output_size,
    conv_transpose2d_output_size,
    ints,
    pool2d_output_size,
)
from .declare import Operator, Output, Saved, batch_rule, front, into_groups, out_of_groups
from .layout import is_channels_last

Ints = Sequence[int]  # sizes, strides, paddings: a list of ints in the schema


def operator(reference: Callable, saves=(), outputs=("output",), no_grad=(), route: str | None = None):
    """Decorator: declare the operator whose output rule this is (see ``declare.Operator``)."""
    return lambda rule: Operator(rule, reference, saves, outputs, no_grad, route)


def _cl(*tensors: Tensor) -> bool:
    """torch's memory-format rule for an operator of several tensors: channels_last if any of them is."""
    return any(is_channels_last(t) for t in tensors)


def _conv(a: Saved) -> tuple:
    """A convolution's geometry, as every convolution operator takes it after its sizes."""
    return a.stride, a.padding, a.dilation, a.groups


# Pointwise convolutions on planes up to this many pixels go to the compiled kernels: there the
# reference's matrix products are one small product per image, slower than the kernels, which take
# the images side by side. On larger planes the reference's products are as fast.
POINTWISE_COMPILED_PIXELS = 64


def _large_pointwise(weight_size, stride, padding, input_size) -> bool:
    """Unpadded 1x1 stride-1 convolutions on planes larger than ``POINTWISE_COMPILED_PIXELS``: they stay
    the reference's matrix products."""
    pointwise = reference_conv.pointwise(weight_size[2:], stride, padding)
    return pointwise and input_size[2] * input_size[3] > POINTWISE_COMPILED_PIXELS


def _route(
    algorithm: str,
    weight_size: Ints,
    stride: Ints,
    dilation: Ints,
    t: Tensor,
    groups: int,
    input_size: Ints,
    part: str = "forward",
):
    """The route of one ``part`` of a convolution (``algorithms.PARTS``) on tensors like ``t``, for filters
    of ``weight_size`` and an input of ``input_size``: the algorithm that runs (see ``algorithms.py``),
    None for ``direct``."""
    if algorithm == "direct":
        return None
    channels = (weight_size[1], weight_size[0] // groups)
    name = algorithms.resolve(
        algorithm,
        weight_size[2:],
        stride,
        dilation,
        t.dtype,
        t.device.type,
        groups,
        input_size[2:],
        channels,
        input_size[0],
        part,
    )
    return None if name == "direct" else name


def _compiled_winograd(name: str, m: int, *args, out):
    """``compiled.<name>`` with F(m x m, 3 x 3), looked up at each call (as the references are)."""
    return getattr(compiled, name)(m, *args, out=out)


def _algorithms(op: Operator, im2col: Callable, winograd_kernel: Callable, fft_kernel: Callable) -> None:
    """Declare a convolution's routes: ``im2col`` (the reference), Winograd with both tile sizes (the
    compiled kernels where they apply, else ``winograd_kernel(m, *args)``) and FFT, every one for every
    device and dtype."""
    op.implement(None, im2col, route="im2col")
    for m in (2, 4):
        kernel = functools.partial(_compiled_winograd, "winograd_" + op.name.split("::")[1], m)
        op.implement(compiled, kernel, route=f"winograd_f{m}")
        op.implement(None, functools.partial(winograd_kernel, m), route=f"winograd_f{m}")
    op.implement(None, fft_kernel, route="fft")


def _stacked_weights(op: Operator, out_dim: int = 0) -> Callable:
    """The vmap rule of a convolution ``op(input, weight, bias, ..., groups, ...)``: a vmapped input alone is
    folded into the batch; a stack of B weights is B convolutions side by side, as B times the groups.
    ``out_dim``: the weight's dimension of output channels (2 for the locally connected and tiled ones;
    a bias has its output channels last)."""
    fold, groups_at = batch_rule(op, ("input",)), op.params.index("groups")

    def rule(info, in_dims, x, weight, bias, *rest):
        x_dim, w_dim, b_dim = in_dims[:3]
        if w_dim is None and b_dim is None:
            return fold(info, in_dims, x, weight, bias, *rest)
        b, rest = info.batch_size, list(rest)
        rest[groups_at - 3] *= b
        weight = front(weight, w_dim, b).movedim(0, out_dim).flatten(out_dim, out_dim + 1)
        bias = None if bias is None else front(bias, b_dim, b).movedim(0, -2).flatten(-2, -1)
        return out_of_groups(op.overload(into_groups(x, x_dim, b), weight, bias, *rest), b), 0

    return rule


def _below(op: Operator) -> Callable:
    """Operator ``op``'s computation, without autograd or the dispatcher: for another operator's kernel
    that is made of it (a tiled convolution runs convolutions), so that it runs ``op``'s fastest kernels."""

    def run(*args):
        args = op.complete(args) if len(args) < len(op.params) else args
        return op.compute(args, op.rule(*args))

    return run


def _bias_tangent(a: Saved, t: Tensor) -> Tensor:
    """The output's tangent from a bias's: (O,) broadcast over images and pixels, or (Ho, Wo, O)."""
    t = t.view(1, -1, 1, 1) if t.dim() == 1 else t.permute(2, 0, 1).unsqueeze(0)
    return t.expand(a.out.size)


def _bias_grad(a: Saved, g: Tensor) -> Tensor:
    """A bias's gradient: ``g`` summed over images and pixels, or for a bias per position, over images."""
    return g.sum((0, 2, 3)) if len(a.bias.shape) == 1 else g.sum(0).permute(1, 2, 0)


# --- conv2d -------------------------------------------------------------------------------------


@operator(lambda *args: reference_conv.conv2d_forward(*args), saves=("input", "weight"), route="algorithm")
def conv2d(
    input: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    stride: Ints,
    padding: Ints,
    dilation: Ints,
    groups: int,
    algorithm: str = "auto",
) -> Tensor:
    """2-D convolution of a batched input; ``padding`` is ``(top, bottom, left, right)``; ``algorithm``
    one of ``algorithms.ALGORITHMS``."""
    check_4d(input, "input", "conv2d")
    algorithms.check("conv2d", algorithm, weight.shape[2:], stride, dilation)
    check_weight("conv2d", weight, bias, weight.shape[0], "out_channels, in_channels/groups, kH, kW")
    check_same_kind("conv2d", ("input", input), ("weight", weight), ("bias", bias))
    size = conv2d_output_size("conv2d", input.shape, weight.shape, stride, padding, dilation, groups)
    return Output(size, _cl(input, weight))


conv2d.implement(gpu)
conv2d.implement(
    compiled, unless=lambda x, w, b, stride, padding, *_: _large_pointwise(w.shape, stride, padding, x.shape)
)
conv2d.routes(
    lambda x, w, b, stride, padding, dilation, groups, algorithm: _route(
        algorithm, w.shape, stride, dilation, w, groups, x.shape
    )
)
_algorithms(
    conv2d,
    lambda *args: reference_conv.conv2d_forward(*args),
    lambda m, x, w, b, stride, padding, dilation, groups: winograd.conv2d_forward(x, w, b, padding, groups, m),
    lambda *args: fft.conv2d_forward(*args),
)
conv2d.grad("input")(
    lambda a, g: conv2d_input_grad(g, a.weight, a.input.shape, *_conv(a), a.out.channels_last, a.algorithm)
)
conv2d.grad("weight")(
    lambda a, g: conv2d_weight_grad(a.input, g, a.weight.shape, *_conv(a), a.out.channels_last, a.algorithm)
)
conv2d.grad("bias")(lambda a, g: g.sum((0, 2, 3)))
conv2d.linear_in("input", "weight")
conv2d.tangent("bias")(lambda a, t: t.view(1, -1, 1, 1))
conv2d.vmap(_stacked_weights(conv2d))


# --- conv2d_input_grad --------------------------------------------------------------------------


def _input_grad_reference(gy, w, size, stride, padding, dilation, groups, channels_last=False):
    return reference_conv.conv2d_input_grad(gy, w, size, stride, padding, dilation, groups)


@operator(_input_grad_reference, saves=("grad_output", "weight"), route="algorithm")
def conv2d_input_grad(
    grad_output: Tensor,
    weight: Tensor,
    input_size: Ints,
    stride: Ints,
    padding: Ints,
    dilation: Ints,
    groups: int,
    channels_last: bool = False,
    algorithm: str = "auto",
) -> Tensor:
    """The gradient of conv2d with respect to an input of ``input_size``: col2im of ``weight^T @ grad_output``."""
    algorithms.check("conv2d_input_grad", algorithm, weight.shape[2:], stride, dilation)
    conf = (stride, padding, dilation, groups)
    check_conv2d_grad("conv2d_input_grad", grad_output, ("weight", weight), input_size, weight.shape, conf)
    return Output(input_size, channels_last)


conv2d_input_grad.implement(gpu)
conv2d_input_grad.implement(
    compiled, unless=lambda gy, w, size, stride, padding, *_: _large_pointwise(w.shape, stride, padding, size)
)
conv2d_input_grad.routes(
    lambda gy, w, size, stride, padding, dilation, groups, cl, algorithm: _route(
        algorithm, w.shape, stride, dilation, w, groups, size, "input_grad"
    )
)
_algorithms(
    conv2d_input_grad,
    _input_grad_reference,
    lambda m, gy, w, size, stride, padding, dilation, groups, cl=False: winograd.conv2d_input_grad(
        gy, w, size, padding, groups, m
    ),
    lambda gy, w, size, stride, padding, dilation, groups, cl=False: fft.conv2d_input_grad(
        gy, w, size, stride, padding, dilation, groups
    ),
)
conv2d_input_grad.grad("grad_output")(lambda a, g: conv2d(g, a.weight, None, *_conv(a), a.algorithm))
conv2d_input_grad.grad("weight")(
    lambda a, g: conv2d_weight_grad(
        g, a.grad_output, a.weight.shape, *_conv(a), _cl(a.grad_output, a.weight), a.algorithm
    )
)
conv2d_input_grad.linear_in("grad_output", "weight")
_input_grad_batch = batch_rule(conv2d_input_grad, ("grad_output",), size="input_size")


@conv2d_input_grad.vmap
def _(info, in_dims, grad_output, weight, input_size, *conf):
    if in_dims[1] is None:
        return _input_grad_batch(info, in_dims, grad_output, weight, input_size, *conf)
    b, (n, c, h, w), (stride, padding, dilation, groups, *cl) = info.batch_size, input_size, conf
    gy, weight = into_groups(grad_output, in_dims[0], b), front(weight, in_dims[1], b).flatten(0, 1)
    grad = conv2d_input_grad.overload(gy, weight, [n, b * c, h, w], stride, padding, dilation, groups * b, *cl)
    return out_of_groups(grad, b), 0  # a stack of B weights ran as B times the groups


# --- conv2d_weight_grad -------------------------------------------------------------------------


def _weight_grad_reference(x, gy, size, stride, padding, dilation, groups, channels_last=False):
    return reference_conv.conv2d_weight_grad(x, gy, size, stride, padding, dilation, groups)


@operator(_weight_grad_reference, saves=("input", "grad_output"), route="algorithm")
def conv2d_weight_grad(
    input: Tensor,
    grad_output: Tensor,
    weight_size: Ints,
    stride: Ints,
    padding: Ints,
    dilation: Ints,
    groups: int,
    channels_last: bool = False,
    algorithm: str = "auto",
) -> Tensor:
    """The gradient of conv2d with respect to a weight of ``weight_size``: ``grad_output`` times the columns."""
    algorithms.check("conv2d_weight_grad", algorithm, weight_size[2:], stride, dilation)
    conf = (stride, padding, dilation, groups)
    check_conv2d_grad("conv2d_weight_grad", grad_output, ("input", input), input.shape, weight_size, conf)
    return Output(weight_size, channels_last)


conv2d_weight_grad.implement(gpu)
conv2d_weight_grad.implement(
    compiled, unless=lambda x, gy, size, stride, padding, *_: _large_pointwise(size, stride, padding, x.shape)
)
conv2d_weight_grad.routes(
    lambda x, gy, size, stride, padding, dilation, groups, cl, algorithm: _route(
        algorithm, size, stride, dilation, x, groups, x.shape, "weight_grad"
    )
)
_algorithms(
    conv2d_weight_grad,
    _weight_grad_reference,
    lambda m, x, gy, size, stride, padding, dilation, groups, cl=False: winograd.conv2d_weight_grad(
        x, gy, padding, groups, m
    ),
    lambda x, gy, size, stride, padding, dilation, groups, cl=False: fft.conv2d_weight_grad(
        x, gy, size, stride, padding, dilation, groups
    ),
)
conv2d_weight_grad.grad("input")(
    lambda a, g: conv2d_input_grad(a.grad_output, g, a.input.shape, *_conv(a), _cl(a.input, a.grad_output), a.algorithm)
)
conv2d_weight_grad.grad("grad_output")(lambda a, g: conv2d(a.input, g, None, *_conv(a), a.algorithm))
conv2d_weight_grad.linear_in("input", "grad_output")


@conv2d_weight_grad.vmap
def _(
    info, in_dims, x, grad_output, weight_size, stride, padding, dilation, groups, channels_last=False, algorithm="auto"
):
    b, (o, c, kh, kw) = info.batch_size, weight_size  # one weight gradient per vmapped slice: B times the groups
    x, gy = into_groups(x, in_dims[0], b), into_groups(grad_output, in_dims[1], b)
    conf = (stride, padding, dilation, groups * b, channels_last, algorithm)
    grad = conv2d_weight_grad.overload(x, gy, [b * o, c, kh, kw], *conf)
    return grad.unflatten(0, (b, o)), 0


# --- conv_transpose2d: the input gradient of conv2d, as a layer of its own -------------------------


@operator(lambda *args: reference_conv.conv_transpose2d(*args), saves=("input", "weight"))
def conv_transpose2d(
    input: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    stride: Ints,
    padding: Ints,
    output_padding: Ints,
    groups: int,
    dilation: Ints,
) -> Tensor:
    """2-D transposed convolution of a batched input; ``padding`` is ``(top, bottom, left, right)``."""
    fn = "conv_transpose2d"
    check_4d(input, "input", fn)
    check_weight(fn, weight, bias, weight.shape[1] * groups, "in_channels, out_channels/groups, kH, kW")
    check_same_kind(fn, ("input", input), ("weight", weight), ("bias", bias))
    size = conv_transpose2d_output_size(
        fn, input.shape, weight.shape, stride, padding, output_padding, dilation, groups
    )
    return Output(size, _cl(input, weight))


conv_transpose2d.implement(gpu)
conv_transpose2d.implement(
    compiled, unless=lambda x, w, b, stride, padding, *_: _large_pointwise(w.shape, stride, padding, x.shape)
)
conv_transpose2d.grad("input")(lambda a, g: conv2d(g, a.weight, None, *_conv(a)))
conv_transpose2d.grad("weight")(
    lambda a, g: conv2d_weight_grad(g, a.input, a.weight.shape, *_conv(a), a.out.channels_last)
)
conv_transpose2d.grad("bias")(lambda a, g: g.sum((0, 2, 3)))
conv_transpose2d.linear_in("input", "weight")
conv_transpose2d.tangent("bias")(lambda a, t: t.view(1, -1, 1, 1))
conv_transpose2d.vmap(_stacked_weights(conv_transpose2d))


# --- convolve2d: true convolution, the kernel flipped -----------------------------------------------


@operator(lambda *args: reference_conv.convolve2d(*args), saves=("input", "weight"))
def convolve2d(
    input: Tensor, weight: Tensor, bias: Tensor | None, stride: Ints, padding: Ints, dilation: Ints, groups: int
) -> Tensor:
    """True 2-D convolution of a batched input (``conv.convolve2d``): cross-correlation with each kernel
    flipped in both axes; ``padding`` is ``(top, bottom, left, right)``."""
    check_4d(input, "input", "convolve2d")
    check_weight("convolve2d", weight, bias, weight.shape[0], "out_channels, in_channels/groups, kH, kW")
    check_same_kind("convolve2d", ("input", input), ("weight", weight), ("bias", bias))
    size = conv2d_output_size("convolve2d", input.shape, weight.shape, stride, padding, dilation, groups)
    return Output(size, _cl(input, weight))


# every call is conv2d's (its fastest kernels) with the kernel flipped; the tap-by-tap reference is the oracle
convolve2d.implement(None, lambda x, w, *rest: _below(conv2d)(x, w.flip(2, 3), *rest))
convolve2d.grad("input")(
    lambda a, g: conv2d_input_grad(g, a.weight.flip(2, 3), a.input.shape, *_conv(a), a.out.channels_last)
)
convolve2d.grad("weight")(
    lambda a, g: conv2d_weight_grad(a.input, g, a.weight.shape, *_conv(a), a.out.channels_last).flip(2, 3)
)
convolve2d.grad("bias")(lambda a, g: g.sum((0, 2, 3)))
convolve2d.linear_in("input", "weight")
convolve2d.tangent("bias")(_bias_tangent)
convolve2d.vmap(_stacked_weights(convolve2d))


# --- local_conv2d: the locally connected layer, a kernel per output position ------------------------


@operator(lambda *args: reference_local.local_conv2d(*args), saves=("input", "weight"))
def local_conv2d(
    input: Tensor, weight: Tensor, bias: Tensor | None, stride: Ints, padding: Ints, dilation: Ints, groups: int
) -> Tensor:
    """Unshared convolution of a batched input (``local.local_conv2d``): ``weight`` is (Ho, Wo, O, C/G,
    kh, kw), a kernel per output position; ``bias`` is (O,) or (Ho, Wo, O)."""
    size = check_local("local_conv2d", input, weight, bias, (stride, padding, dilation, groups), tiled=False)
    return Output(size, is_channels_last(input))


local_conv2d.grad("input")(
    lambda a, g: local_conv2d_input_grad(g, a.weight, a.input.shape, *_conv(a), a.out.channels_last)
)
local_conv2d.grad("weight")(lambda a, g: local_conv2d_weight_grad(a.input, g, a.weight.shape, *_conv(a)))
local_conv2d.grad("bias")(_bias_grad)
local_conv2d.linear_in("input", "weight")
local_conv2d.tangent("bias")(_bias_tangent)
local_conv2d.vmap(_stacked_weights(local_conv2d, out_dim=2))


@operator(
    lambda gy, w, size, stride, padding, dilation, groups, cl=False: reference_local.local_conv2d_input_grad(
        gy, w, size, stride, padding, dilation, groups
    ),
    saves=("grad_output", "weight"),
)
def local_conv2d_input_grad(
    grad_output: Tensor,
    weight: Tensor,
    input_size: Ints,
    stride: Ints,
    padding: Ints,
    dilation: Ints,
    groups: int,
    channels_last: bool = False,
) -> Tensor:
    """The gradient of local_conv2d with respect to an input of ``input_size``."""
    conf = (stride, padding, dilation, groups)
    check_local_grad("local_conv2d_input_grad", grad_output, ("weight", weight), input_size, weight.shape, conf)
    return Output(input_size, channels_last)


local_conv2d_input_grad.grad("grad_output")(lambda a, g: local_conv2d(g, a.weight, None, *_conv(a)))
local_conv2d_input_grad.grad("weight")(
    lambda a, g: local_conv2d_weight_grad(g, a.grad_output, a.weight.shape, *_conv(a))
)
local_conv2d_input_grad.linear_in("grad_output", "weight")
_local_input_grad_batch = batch_rule(local_conv2d_input_grad, ("grad_output",), size="input_size")


@local_conv2d_input_grad.vmap
def _(info, in_dims, grad_output, weight, input_size, *conf):
    if in_dims[1] is None:
        return _local_input_grad_batch(info, in_dims, grad_output, weight, input_size, *conf)
    b, (n, c, h, w), (stride, padding, dilation, groups, *cl) = info.batch_size, input_size, conf
    gy = into_groups(grad_output, in_dims[0], b)
    weight = front(weight, in_dims[1], b).movedim(0, 2).flatten(2, 3)
    grad = local_conv2d_input_grad.overload(gy, weight, [n, b * c, h, w], stride, padding, dilation, groups * b, *cl)
    return out_of_groups(grad, b), 0  # a stack of B weights ran as B times the groups


@operator(lambda *args: reference_local.local_conv2d_weight_grad(*args), saves=("input", "grad_output"))
def local_conv2d_weight_grad(
    input: Tensor, grad_output: Tensor, weight_size: Ints, stride: Ints, padding: Ints, dilation: Ints, groups: int
) -> Tensor:
    """The gradient of local_conv2d with respect to a weight of ``weight_size`` (Ho, Wo, O, C/G, kh, kw)."""
    conf = (stride, padding, dilation, groups)
    check_local_grad("local_conv2d_weight_grad", grad_output, ("input", input), input.shape, weight_size, conf)
    return Output(weight_size)


local_conv2d_weight_grad.grad("input")(
    lambda a, g: local_conv2d_input_grad(a.grad_output, g, a.input.shape, *_conv(a), is_channels_last(a.input))
)
local_conv2d_weight_grad.grad("grad_output")(lambda a, g: local_conv2d(a.input, g, None, *_conv(a)))
local_conv2d_weight_grad.linear_in("input", "grad_output")


@local_conv2d_weight_grad.vmap
def _(info, in_dims, x, grad_output, weight_size, stride, padding, dilation, groups):
    b, (ho, wo, o, *rest) = info.batch_size, weight_size  # one weight gradient per slice: B times the groups
    x, gy = into_groups(x, in_dims[0], b), into_groups(grad_output, in_dims[1], b)
    grad = local_conv2d_weight_grad.overload(x, gy, [ho, wo, b * o, *rest], stride, padding, dilation, groups * b)
    return grad.unflatten(2, (b, o)).movedim(2, 0), 0


# --- tiled_conv2d: t_h x t_w kernel sets cycling over the output positions ---------------------------


@operator(lambda *args: reference_local.tiled_conv2d(*args), saves=("input", "weight"))
def tiled_conv2d(
    input: Tensor, weight: Tensor, bias: Tensor | None, stride: Ints, padding: Ints, dilation: Ints, groups: int
) -> Tensor:
    """Tiled convolution of a batched input (``local.tiled_conv2d``): ``weight`` is (t_h, t_w, O, C/G, kh,
    kw); output position (i, j) uses kernel set (i mod t_h, j mod t_w)."""
    size = check_local("tiled_conv2d", input, weight, bias, (stride, padding, dilation, groups), tiled=True)
    return Output(size, is_channels_last(input))


# every call runs each kernel set as conv2d (its fastest kernels); the reference runs conv.py's
tiled_conv2d.implement(None, lambda *args: reference_local.tiled_conv2d(*args, conv=_below(conv2d)))
tiled_conv2d.grad("input")(
    lambda a, g: reference_local.tiled_conv2d_input_grad(g, a.weight, a.input.shape, *_conv(a), grad=conv2d_input_grad)
)
tiled_conv2d.grad("weight")(
    lambda a, g: reference_local.tiled_conv2d_weight_grad(
        a.input, g, a.weight.shape, *_conv(a), grad=conv2d_weight_grad
    )
)
tiled_conv2d.grad("bias")(lambda a, g: g.sum((0, 2, 3)))
tiled_conv2d.linear_in("input", "weight")
tiled_conv2d.tangent("bias")(_bias_tangent)
tiled_conv2d.vmap(_stacked_weights(tiled_conv2d, out_dim=2))


# --- max_pool2d ---------------------------------------------------------------------------------


@operator(
    lambda x, k, s, p, d, ceil_mode, out: reference_pool.max_pool2d_forward(x, k, s, p, d, out[0].size[2:]),
    saves=("indices",),
    outputs=("values", "indices"),
    no_grad=("indices",),
)
def max_pool2d(
    input: Tensor, kernel_size: Ints, stride: Ints, padding: Ints, dilation: Ints, ceil_mode: bool
) -> tuple[Tensor, Tensor]:
    """Max pooling of a batched input: the maxima and their flat indices in each input plane (``h * W + w``)."""
    check_4d(input, "input", "max_pool2d")
    plane = pool2d_output_size("max_pool2d", input.shape, kernel_size, stride, padding, dilation, ceil_mode)
    size, channels_last = (*input.shape[:2], *plane), is_channels_last(input)
    return Output(size, channels_last), Output(size, channels_last, int64)


max_pool2d.implement(gpu)
max_pool2d.implement(compiled)
max_pool2d.grad("input")(lambda a, g: max_pool2d_backward(g, a.indices, a.input.shape))
max_pool2d.tangent("input")(lambda a, t: reference_pool.max_pool2d_gather(t, a.indices))
max_pool2d.vmap(batch_rule(max_pool2d, ("input",)))


@operator(lambda *args: reference_pool.max_pool2d_backward(*args), saves=("indices",))
def max_pool2d_backward(grad_output: Tensor, indices: Tensor, input_size: Ints) -> Tensor:
    """Each output's gradient added onto the input pixel its maximum came from."""
    fn = "max_pool2d_backward"
    check_4d(grad_output, "grad_output", fn)
    ints(input_size, 4, "input_size", fn)
    if indices.dtype != int64:
        raise TypeError(f"{fn}: indices must be int64, got {indices.dtype}")
    check_size(indices, grad_output.shape, "indices", fn)
    check_pool2d_grad(fn, grad_output, input_size)
    return Output(input_size, is_channels_last(indices))


max_pool2d_backward.implement(gpu, unless=lambda *_: gpu.deterministic())
max_pool2d_backward.implement(compiled)
max_pool2d_backward.grad("grad_output")(lambda a, g: reference_pool.max_pool2d_gather(g, a.indices))
max_pool2d_backward.linear_in("grad_output")
max_pool2d_backward.vmap(batch_rule(max_pool2d_backward, ("grad_output", "indices"), size="input_size"))


# --- avg_pool2d ---------------------------------------------------------------------------------


@operator(lambda x, k, s, p, _, cip, div, out: reference_pool.avg_pool2d_forward(x, k, s, p, out.size[2:], cip, div))
def avg_pool2d(
    input: Tensor,
    kernel_size: Ints,
    stride: Ints,
    padding: Ints,
    ceil_mode: bool,
    count_include_pad: bool,
    divisor_override: int | None,
) -> Tensor:
    """Average pooling of a batched input."""
    args = (kernel_size, stride, padding, ceil_mode, divisor_override)
    plane = avg_pool2d_plane("avg_pool2d", input, input.shape, *args)
    return Output((*input.shape[:2], *plane), is_channels_last(input))


def _avg_args(a: Saved) -> tuple:
    return a.kernel_size, a.stride, a.padding, a.ceil_mode, a.count_include_pad, a.divisor_override


avg_pool2d.implement(gpu)
avg_pool2d.implement(compiled)
avg_pool2d.grad("input")(lambda a, g: avg_pool2d_backward(g, a.input.shape, *_avg_args(a), a.out.channels_last))
avg_pool2d.linear_in("input")
avg_pool2d.vmap(batch_rule(avg_pool2d, ("input",)))


@operator(lambda gy, size, k, s, p, _, cip, div, *cl: reference_pool.avg_pool2d_backward(gy, size, k, s, p, cip, div))
def avg_pool2d_backward(
    grad_output: Tensor,
    input_size: Ints,
    kernel_size: Ints,
    stride: Ints,
    padding: Ints,
    ceil_mode: bool,
    count_include_pad: bool,
    divisor_override: int | None,
    channels_last: bool = False,
) -> Tensor:
    """Every pixel of a window receives the window's gradient over its divisor."""
    fn = "avg_pool2d_backward"
    ints(input_size, 4, "input_size", fn)
    plane = avg_pool2d_plane(fn, grad_output, input_size, kernel_size, stride, padding, ceil_mode, divisor_override)
    check_size(grad_output, (*input_size[:2], *plane), "grad_output", fn)
    return Output(input_size, channels_last)


avg_pool2d_backward.implement(gpu)
avg_pool2d_backward.implement(compiled)
avg_pool2d_backward.grad("grad_output")(lambda a, g: avg_pool2d(g, *_avg_args(a)))
avg_pool2d_backward.linear_in("grad_output")
avg_pool2d_backward.vmap(batch_rule(avg_pool2d_backward, ("grad_output",), size="input_size"))


# --- adaptive_avg_pool2d ------------------------------------------------------------------------


@operator(lambda x, output_size, out: reference_pool.adaptive_avg_pool2d_forward(x, out.size[2:]))
def adaptive_avg_pool2d(input: Tensor, output_size: Ints) -> Tensor:
    """Adaptive average pooling of a batched input to ``output_size`` (Ho, Wo)."""
    plane = adaptive_plane("adaptive_avg_pool2d", input, input.shape, output_size)
    return Output((*input.shape[:2], *plane), is_channels_last(input))


adaptive_avg_pool2d.implement(gpu)
adaptive_avg_pool2d.implement(compiled)
adaptive_avg_pool2d.grad("input")(lambda a, g: adaptive_avg_pool2d_backward(g, a.input.shape, a.out.channels_last))
adaptive_avg_pool2d.linear_in("input")
adaptive_avg_pool2d.vmap(batch_rule(adaptive_avg_pool2d, ("input",)))


@operator(lambda gy, size, *cl: reference_pool.adaptive_avg_pool2d_backward(gy, size))
def adaptive_avg_pool2d_backward(grad_output: Tensor, input_size: Ints, channels_last: bool = False) -> Tensor:
    """Each bin's gradient spread evenly over its pixels."""
    fn = "adaptive_avg_pool2d_backward"
    ints(input_size, 4, "input_size", fn)
    adaptive_plane(fn, grad_output, input_size, grad_output.shape[2:])
    check_pool2d_grad(fn, grad_output, input_size)
    return Output(input_size, channels_last)


adaptive_avg_pool2d_backward.implement(gpu)
adaptive_avg_pool2d_backward.implement(compiled)
adaptive_avg_pool2d_backward.grad("grad_output")(lambda a, g: adaptive_avg_pool2d(g, a.grad_output.shape[2:]))
adaptive_avg_pool2d_backward.linear_in("grad_output")
adaptive_avg_pool2d_backward.vmap(batch_rule(adaptive_avg_pool2d_backward, ("grad_output",), size="input_size"))


OPERATORS = (
    conv2d,
    conv2d_input_grad,
    conv2d_weight_grad,
    conv_transpose2d,
    convolve2d,
    local_conv2d,
    local_conv2d_input_grad,
    local_conv2d_weight_grad,
    tiled_conv2d,
    max_pool2d,
    max_pool2d_backward,
    avg_pool2d,
    avg_pool2d_backward,
    adaptive_avg_pool2d,
    adaptive_avg_pool2d_backward,
)
Conv2dFunction, MaxPool2dFunction = conv2d.eager, max_pool2d.eager
AvgPool2dFunction, AdaptiveAvgPool2dFunction = avg_pool2d.eager, adaptive_avg_pool2d.eager

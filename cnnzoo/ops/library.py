"""The registered operators: ``torch.ops.cnnzoo.*``, the layer that makes the reference functions in
``conv.py`` and ``pool.py`` first-class PyTorch operators.

Each operator gets, next to its kernel (the reference function, wrapped):

* a check of its arguments, so that a direct call with bad arguments fails with a message, never
  inside a matrix product;
* a fake kernel: the output's shape, dtype and memory format without computing it, for
  ``torch.compile``, ``torch.export`` and the meta device;
* an autograd formula, written with these same operators, so every order of derivative stays
  inside cnnzoo: conv2d, its input gradient and its weight gradient are each other's gradients, and a
  pooling backward is linear, so its gradient is the pooling again (a gather for max pooling);
* a forward-mode (jvp) formula: every operator is linear or bilinear in its tensors;
* a vmap rule: a vmapped dimension is folded into the batch, or into the groups of a convolution
  when the weights are vmapped.

Each formula is written once and installed three times (``register``): as ``register_autograd`` on
the operator, which the compiler traces; as a ``setup_context``-style ``autograd.Function``, because
``torch.func``'s transforms refuse the wrapper ``register_autograd`` generates (pytorch#170834); and as
a classic ``autograd.Function`` (``Conv2dFunction``, ...), the cheapest per call, for eager autograd.
:func:`call` picks the route.

Memory format follows torch: an output and the gradients are channels_last when the input (or, for
conv2d, the input or the weight) is. The backward operators take that choice as ``channels_last``.
"""

from collections.abc import Callable, Sequence

import torch
from torch import Tensor
from torch.autograd import forward_ad

from . import compiled
from . import conv as reference_conv
from . import pool as reference_pool
from .layout import empty, in_format, is_channels_last
from ._args import (
    adaptive_output_size,
    check_4d,
    check_divisor,
    check_float,
    check_same_kind,
    check_size,
    conv2d_output_size,
    ints,
    outside_autocast,
    pool2d_output_size,
)

# --- dispatch: the operator, or one of its Functions ---------------------------------------------

_KERNELS: dict[str, Callable] = {}  # per operator: its Python body (argument check, then the reference)
_EAGER: dict[str, type[torch.autograd.Function]] = {}  # per operator: the Function eager autograd runs
_TRANSFORMABLE: dict[str, type[torch.autograd.Function]] = {}  # ... and the one torch.func transforms


def operator(name: str) -> Callable:
    """``torch.library.custom_op(name)``, keeping the Python body for the eager route of :func:`call`."""
    def define(kernel: Callable):
        _KERNELS[name] = kernel
        return torch.library.custom_op(name, mutates_args=())(kernel)
    return define


def _dispatcher_needed(args) -> bool:
    """Whether something below Python must see the operator itself: a dispatch mode (fake tensors, a
    FLOP counter, a recorder) or a tensor that is not a plain tensor with data."""
    if torch._C._len_torch_dispatch_stack():
        return True
    return any(isinstance(a, Tensor) and (type(a) not in (Tensor, torch.nn.Parameter) or a.is_meta) for a in args)


def call(op: torch._ops.OpOverload, *args):
    """Call a cnnzoo operator with autograd, by the cheapest route that the context allows.

    * Under ``torch.compile``, ``torch.export`` and ``torch.jit.trace``: the operator itself, which they
      record (``torch.jit.trace`` would record a Function as an opaque Python call); its
      ``register_autograd`` formula gives it its gradient.
    * Under a ``torch.func`` transform or forward-mode AD: a ``setup_context``-style Function, the kind
      torch.func accepts (it refuses the wrapper ``register_autograd`` generates).
    * Otherwise: a classic ``autograd.Function``, the cheapest per call (about 7 us, against 15-25 us
      for either of the other two). It runs the operator's Python body itself (the same check and
      the same reference code), sparing the dispatcher's round trip (about 18 us), unless a dispatch
      mode or a tensor subclass needs to see ``torch.ops.cnnzoo.*``. With gradients off (inference,
      or the backward operators inside a first-order backward) the body is called without a Function.

    All three install the same formulas, written once below each operator.
    """
    if torch.compiler.is_compiling() or torch.jit.is_tracing():
        return op(*args)
    if torch._C._are_functorch_transforms_active() or forward_ad._current_level >= 0:
        return _TRANSFORMABLE[op._name].apply(*map(_Leaf.wrap, args))
    if not torch.is_grad_enabled() and not _dispatcher_needed(args):  # inference, or a first-order backward
        return _KERNELS[op._name](*args)
    return _EAGER[op._name].apply(*args)


class _Leaf:
    """A list argument held as one pytree leaf. torch.func's generated vmap rule for a Function's jvp
    flattens list arguments into their elements but gives each list one tangent, and then fails to
    match the two; as one opaque leaf, a list has one of each."""

    __slots__ = ("value",)

    def __init__(self, value) -> None:
        self.value = value

    @staticmethod
    def wrap(arg):
        return _Leaf(arg) if isinstance(arg, (list, tuple)) else arg

    @staticmethod
    def unwrap(arg):
        return arg.value if isinstance(arg, _Leaf) else arg


def register(op, setup_context: Callable, backward: Callable, jvp: Callable, vmap: Callable) -> type:
    """Install ``backward`` and ``vmap`` on ``op`` and build its two ``autograd.Function`` twins (see
    ``call``); returns the eager one."""
    op.register_autograd(backward, setup_context=setup_context)
    op.register_vmap(vmap)
    overload = op._opoverload
    name = "".join(part.capitalize() for part in overload._opname.split("_")) + "Function"
    doc = f"``torch.ops.{overload._name.replace('::', '.')}`` as an autograd.Function (see ``call``)."

    kernel = _KERNELS[overload._name]

    def eager_forward(ctx, *args):
        output = overload(*args) if _dispatcher_needed(args) else kernel(*args)
        setup_context(ctx, args, output)
        return output

    def transformable_setup_context(ctx, inputs, output):
        setup_context(ctx, tuple(map(_Leaf.unwrap, inputs)), output)
        ctx.save_for_forward(*ctx.to_save)

    _EAGER[overload._name] = eager = type(name, (torch.autograd.Function,), {
        "__doc__": doc, "forward": staticmethod(eager_forward), "backward": staticmethod(backward)})
    _TRANSFORMABLE[overload._name] = type(f"Transformable{name}", (torch.autograd.Function,), {
        "__doc__": doc,
        "forward": staticmethod(lambda *args: overload(*map(_Leaf.unwrap, args))),
        "setup_context": staticmethod(transformable_setup_context),
        "backward": staticmethod(backward),
        "jvp": staticmethod(jvp),
        "generate_vmap_rule": True,
    })
    return eager


def _save(ctx, *tensors: Tensor | None) -> None:
    ctx.save_for_backward(*tensors)
    ctx.to_save = tensors


def _sum(*terms: Tensor | None) -> Tensor | None:
    present = [t for t in terms if t is not None]
    return sum(present[1:], present[0]) if present else None


# --- vmap: fold the vmapped dimension into the batch ------------------------------------------------


def _front(t: Tensor, dim: int | None, size: int) -> Tensor:
    """``t`` with its vmapped dimension first (broadcast to ``size`` if it has none)."""
    return t.expand(size, *t.shape) if dim is None else t.movedim(dim, 0)


def _fold_batch(info, in_dims, op, tensors: Sequence[Tensor], rest: Sequence, size_arg: int | None = None):
    """Run ``op`` once on ``tensors`` with the vmapped dimension merged into the batch: (B, N, ...) ->
    (B*N, ...). ``size_arg`` is the index in ``rest`` of an input size to grow to match."""
    b = info.batch_size
    folded = [_front(t, d, b).flatten(0, 1) for t, d in zip(tensors, in_dims)]
    rest = list(rest)
    if size_arg is not None:
        rest[size_arg] = [b * rest[size_arg][0], *rest[size_arg][1:]]
    out = op(*folded, *rest)
    if isinstance(out, tuple):
        return tuple(o.unflatten(0, (b, -1)) for o in out), (0,) * len(out)
    return out.unflatten(0, (b, -1)), 0


def _into_groups(t: Tensor, dim: int | None, size: int) -> Tensor:
    """(B, N, C, ...) -> (N, B*C, ...): a vmapped dimension as B groups of channels."""
    return _front(t, dim, size).movedim(0, 1).flatten(1, 2)


def _out_of_groups(t: Tensor, size: int) -> Tensor:
    return t.unflatten(1, (size, -1)).movedim(1, 0)


# --- conv2d -------------------------------------------------------------------------------------


@operator("cnnzoo::conv2d")
def conv2d_op(input: Tensor, weight: Tensor, bias: Tensor | None, stride: Sequence[int], padding: Sequence[int],
              dilation: Sequence[int], groups: int) -> Tensor:
    """2-D convolution of a batched input; ``padding`` is ``(top, bottom, left, right)``."""
    _check_conv2d(input, weight, bias, stride, padding, dilation, groups)
    channels_last = is_channels_last(input) or is_channels_last(weight)
    if _compiled_conv(weight.shape, stride, padding, input.shape, input, weight, bias):
        return compiled.conv2d_forward(input, weight, bias, stride, padding, dilation, groups, channels_last)
    with outside_autocast(input):
        out = reference_conv.conv2d_forward(input, weight, bias, stride, padding, dilation, groups)
    return in_format(out, channels_last)


# Pointwise convolutions on planes up to this many pixels go to the compiled kernels: there the
# reference's matrix products are one small product per image, slower than the kernels, which take
# the images side by side. On larger planes the reference's products are as fast.
POINTWISE_COMPILED_PIXELS = 64


def _compiled_conv(weight_size, stride, padding, input_size, *tensors) -> bool:
    """Whether the compiled kernels run a convolution: where they apply, except unpadded 1x1 stride-1
    convolutions on planes larger than ``POINTWISE_COMPILED_PIXELS``, which stay the reference's
    matrix products."""
    pointwise = reference_conv.pointwise(weight_size[2:], stride, padding)
    large = input_size[2] * input_size[3] > POINTWISE_COMPILED_PIXELS
    return not (pointwise and large) and compiled.applies(*tensors)


def _check_conv2d(input, weight, bias, stride, padding, dilation, groups) -> tuple[int, int, int, int]:
    fn = "conv2d"
    check_4d(input, "input", fn)
    if weight.dim() != 4:
        raise ValueError(f"{fn}: weight must be a 4D tensor (out_channels, in_channels/groups, kH, kW), "
                         f"got {list(weight.shape)}")
    check_float(weight, "weight", fn)
    if bias is not None and tuple(bias.shape) != (weight.shape[0],):
        raise ValueError(f"{fn}: bias must be 1D with {weight.shape[0]} elements for weight of size "
                         f"{list(weight.shape)}, got {list(bias.shape)}")
    check_same_kind(fn, ("input", input), ("weight", weight), ("bias", bias))
    return conv2d_output_size(fn, input.shape, weight.shape, stride, padding, dilation, groups)


@conv2d_op.register_fake
def _(input, weight, bias, stride, padding, dilation, groups):
    size = _check_conv2d(input, weight, bias, stride, padding, dilation, groups)
    return empty(input, size, is_channels_last(input) or is_channels_last(weight))


@operator("cnnzoo::conv2d_input_grad")
def conv2d_input_grad_op(grad_output: Tensor, weight: Tensor, input_size: Sequence[int], stride: Sequence[int],
                         padding: Sequence[int], dilation: Sequence[int], groups: int,
                         channels_last: bool = False) -> Tensor:
    """The gradient of conv2d with respect to an input of ``input_size``: col2im of ``weight^T @ grad_output``."""
    _check_conv2d_grad("conv2d_input_grad", grad_output, ("weight", weight), input_size, weight.shape, stride, padding,
                       dilation, groups)
    if _compiled_conv(weight.shape, stride, padding, input_size, grad_output, weight):
        return compiled.conv2d_input_grad(grad_output, weight, input_size, stride, padding, dilation, groups,
                                          channels_last)
    with outside_autocast(grad_output):
        grad = reference_conv.conv2d_input_grad(grad_output, weight, torch.Size(input_size), stride, padding,
                                                dilation, groups)
    return in_format(grad, channels_last)


@operator("cnnzoo::conv2d_weight_grad")
def conv2d_weight_grad_op(input: Tensor, grad_output: Tensor, weight_size: Sequence[int], stride: Sequence[int],
                          padding: Sequence[int], dilation: Sequence[int], groups: int,
                          channels_last: bool = False) -> Tensor:
    """The gradient of conv2d with respect to a weight of ``weight_size``: ``grad_output`` times the columns."""
    _check_conv2d_grad("conv2d_weight_grad", grad_output, ("input", input), input.shape, weight_size, stride, padding,
                       dilation, groups)
    if _compiled_conv(weight_size, stride, padding, input.shape, input, grad_output):
        return compiled.conv2d_weight_grad(input, grad_output, weight_size, stride, padding, dilation, groups,
                                           channels_last)
    with outside_autocast(input):
        grad = reference_conv.conv2d_weight_grad(input, grad_output, torch.Size(weight_size), stride, padding,
                                                 dilation, groups)
    return in_format(grad, channels_last)


def _check_conv2d_grad(fn, grad_output, other: tuple[str, Tensor], input_size, weight_size, stride, padding,
                       dilation, groups):
    """A gradient operator's arguments: ``other`` is ``('weight', weight)`` or ``('input', input)``."""
    check_4d(grad_output, "grad_output", fn)
    check_4d(other[1], other[0], fn)
    ints(input_size, 4, "input_size", fn)
    ints(weight_size, 4, "weight_size", fn)
    check_same_kind(fn, ("grad_output", grad_output), other)
    out = conv2d_output_size(fn, input_size, weight_size, stride, padding, dilation, groups)
    check_size(grad_output, out, "grad_output", fn)


@conv2d_input_grad_op.register_fake
def _(grad_output, weight, input_size, stride, padding, dilation, groups, channels_last=False):
    _check_conv2d_grad("conv2d_input_grad", grad_output, ("weight", weight), input_size, weight.shape, stride, padding,
                       dilation, groups)
    return empty(grad_output, input_size, channels_last)


@conv2d_weight_grad_op.register_fake
def _(input, grad_output, weight_size, stride, padding, dilation, groups, channels_last=False):
    _check_conv2d_grad("conv2d_weight_grad", grad_output, ("input", input), input.shape, weight_size, stride, padding,
                       dilation, groups)
    return empty(input, weight_size, channels_last)


CONV2D = torch.ops.cnnzoo.conv2d.default
CONV2D_INPUT_GRAD = torch.ops.cnnzoo.conv2d_input_grad.default
CONV2D_WEIGHT_GRAD = torch.ops.cnnzoo.conv2d_weight_grad.default


def _conv2d_setup(ctx, inputs, output):
    x, weight, bias, *conf = inputs
    _save(ctx, x, weight)
    ctx.conf = tuple(conf)
    ctx.channels_last = is_channels_last(x) or is_channels_last(weight)


def _conv2d_backward(ctx, grad):
    x, weight = ctx.saved_tensors
    need_x, need_w, need_b = ctx.needs_input_grad[:3]
    grad_x = call(CONV2D_INPUT_GRAD, grad, weight, x.shape, *ctx.conf, ctx.channels_last) if need_x else None
    grad_w = call(CONV2D_WEIGHT_GRAD, x, grad, weight.shape, *ctx.conf, ctx.channels_last) if need_w else None
    grad_b = grad.sum((0, 2, 3)) if need_b else None
    return grad_x, grad_w, grad_b, None, None, None, None


def _conv2d_jvp(ctx, tx, tw, tb, *_):
    x, weight = ctx.saved_tensors
    return _sum(None if tx is None else call(CONV2D, tx, weight, None, *ctx.conf),
                None if tw is None else call(CONV2D, x, tw, None, *ctx.conf),
                None if tb is None else tb.view(1, -1, 1, 1))


def _conv2d_vmap(info, in_dims, x, weight, bias, stride, padding, dilation, groups):
    x_dim, w_dim, b_dim = in_dims[:3]
    if w_dim is None and b_dim is None:
        return _fold_batch(info, (x_dim,), CONV2D, (x,), (weight, bias, stride, padding, dilation, groups))
    b = info.batch_size  # a stack of weights: B convolutions side by side, as B times the groups
    weight = _front(weight, w_dim, b).flatten(0, 1)
    bias = None if bias is None else _front(bias, b_dim, b).flatten(0, 1)
    out = CONV2D(_into_groups(x, x_dim, b), weight, bias, stride, padding, dilation, groups * b)
    return _out_of_groups(out, b), 0


def _conv2d_grad_setup(ctx, inputs, output):
    """Both gradient operators: two tensors, a size, the convolution's arguments, the output format."""
    _save(ctx, *inputs[:2])
    ctx.size, ctx.conf, ctx.output_format = inputs[2], tuple(inputs[3:7]), len(inputs) > 7 and inputs[7]
    ctx.channels_last = is_channels_last(inputs[0]) or is_channels_last(inputs[1])


def _bilinear_jvp(op):
    """The tangent of an operator bilinear in its two tensors: ``op(ta, b) + op(a, tb)``."""
    def jvp(ctx, ta, tb, *_):
        a, b = ctx.saved_tensors
        rest = (ctx.size, *ctx.conf, ctx.output_format)
        return _sum(None if ta is None else call(op, ta, b, *rest), None if tb is None else call(op, a, tb, *rest))
    return jvp


def _input_grad_backward(ctx, grad):
    grad_output, weight = ctx.saved_tensors
    need_gy, need_w = ctx.needs_input_grad[:2]
    grad_gy = call(CONV2D, grad, weight, None, *ctx.conf) if need_gy else None
    grad_w = call(CONV2D_WEIGHT_GRAD, grad, grad_output, weight.shape, *ctx.conf, ctx.channels_last) \
        if need_w else None
    return grad_gy, grad_w, None, None, None, None, None, None


def _input_grad_vmap(info, in_dims, grad_output, weight, input_size, stride, padding, dilation, groups,
                     channels_last=False):
    gy_dim, w_dim = in_dims[:2]
    conf = (stride, padding, dilation)
    if w_dim is None:
        return _fold_batch(info, (gy_dim,), CONV2D_INPUT_GRAD, (grad_output,),
                           (weight, input_size, *conf, groups, channels_last), size_arg=1)
    b = info.batch_size
    n, c, h, w = input_size
    grad = CONV2D_INPUT_GRAD(_into_groups(grad_output, gy_dim, b), _front(weight, w_dim, b).flatten(0, 1),
                             [n, b * c, h, w], *conf, groups * b, channels_last)
    return _out_of_groups(grad, b), 0


def _weight_grad_backward(ctx, grad):
    x, grad_output = ctx.saved_tensors
    need_x, need_gy = ctx.needs_input_grad[:2]
    grad_x = call(CONV2D_INPUT_GRAD, grad_output, grad, x.shape, *ctx.conf, ctx.channels_last) if need_x else None
    grad_gy = call(CONV2D, x, grad, None, *ctx.conf) if need_gy else None
    return grad_x, grad_gy, None, None, None, None, None, None


def _weight_grad_vmap(info, in_dims, x, grad_output, weight_size, stride, padding, dilation, groups,
                      channels_last=False):
    b = info.batch_size  # one weight gradient per vmapped slice: B times the groups
    o, c, kh, kw = weight_size
    grad = CONV2D_WEIGHT_GRAD(_into_groups(x, in_dims[0], b), _into_groups(grad_output, in_dims[1], b),
                              [b * o, c, kh, kw], stride, padding, dilation, groups * b, channels_last)
    return grad.unflatten(0, (b, o)), 0


Conv2dFunction = register(conv2d_op, _conv2d_setup, _conv2d_backward, _conv2d_jvp, _conv2d_vmap)
Conv2dInputGradFunction = register(conv2d_input_grad_op, _conv2d_grad_setup, _input_grad_backward,
                                   _bilinear_jvp(CONV2D_INPUT_GRAD), _input_grad_vmap)
Conv2dWeightGradFunction = register(conv2d_weight_grad_op, _conv2d_grad_setup, _weight_grad_backward,
                                    _bilinear_jvp(CONV2D_WEIGHT_GRAD), _weight_grad_vmap)


# --- max_pool2d ---------------------------------------------------------------------------------


@operator("cnnzoo::max_pool2d")
def max_pool2d_op(input: Tensor, kernel_size: Sequence[int], stride: Sequence[int], padding: Sequence[int],
                  dilation: Sequence[int], ceil_mode: bool) -> tuple[Tensor, Tensor]:
    """Max pooling of a batched input: the maxima and their flat indices in each input plane (``h * W + w``)."""
    out = _check_max_pool2d(input, kernel_size, stride, padding, dilation, ceil_mode)
    if compiled.applies(input):
        values, indices = compiled.max_pool2d_forward(input, kernel_size, stride, padding, dilation, out)
    else:
        with outside_autocast(input):
            values, indices = reference_pool.max_pool2d_forward(input, kernel_size, stride, padding, dilation, out)
    channels_last = is_channels_last(input)
    return in_format(values, channels_last), in_format(indices, channels_last)


def _check_max_pool2d(input, kernel_size, stride, padding, dilation, ceil_mode) -> tuple[int, int]:
    check_4d(input, "input", "max_pool2d")
    return pool2d_output_size("max_pool2d", input.shape, kernel_size, stride, padding, dilation, ceil_mode)


@max_pool2d_op.register_fake
def _(input, kernel_size, stride, padding, dilation, ceil_mode):
    size = (*input.shape[:2], *_check_max_pool2d(input, kernel_size, stride, padding, dilation, ceil_mode))
    channels_last = is_channels_last(input)
    return empty(input, size, channels_last), empty(input, size, channels_last, dtype=torch.int64)


@operator("cnnzoo::max_pool2d_backward")
def max_pool2d_backward_op(grad_output: Tensor, indices: Tensor, input_size: Sequence[int]) -> Tensor:
    """Each output's gradient added onto the input pixel its maximum came from."""
    _check_max_pool2d_backward(grad_output, indices, input_size)
    if compiled.applies(grad_output):
        return in_format(compiled.max_pool2d_backward(grad_output, indices, input_size), is_channels_last(indices))
    with outside_autocast(grad_output):
        grad = reference_pool.max_pool2d_backward(grad_output, indices, input_size)
    return in_format(grad, is_channels_last(indices))


def _check_max_pool2d_backward(grad_output, indices, input_size) -> None:
    fn = "max_pool2d_backward"
    check_4d(grad_output, "grad_output", fn)
    ints(input_size, 4, "input_size", fn)
    if indices.dtype != torch.int64:
        raise TypeError(f"{fn}: indices must be int64, got {indices.dtype}")
    check_size(indices, grad_output.shape, "indices", fn)
    if tuple(grad_output.shape[:2]) != tuple(input_size[:2]) or any(s == 0 for s in input_size[1:]):
        raise ValueError(f"{fn}: grad_output of size {list(grad_output.shape)} does not pool an input of size "
                         f"{list(input_size)}")


@max_pool2d_backward_op.register_fake
def _(grad_output, indices, input_size):
    _check_max_pool2d_backward(grad_output, indices, input_size)
    return empty(grad_output, input_size, is_channels_last(indices))


MAX_POOL2D = torch.ops.cnnzoo.max_pool2d.default
MAX_POOL2D_BACKWARD = torch.ops.cnnzoo.max_pool2d_backward.default


def max_pool2d_gather(grad_input: Tensor, indices: Tensor) -> Tensor:
    """The adjoint of ``max_pool2d_backward``: each output reads the pixel its maximum came from (a
    window of padding only, whose index lies past the plane, reads zero)."""
    plane = grad_input.shape[2] * grad_input.shape[3]
    flat = indices.flatten(2)
    inside = flat < plane
    taken = grad_input.flatten(2).gather(2, torch.where(inside, flat, 0))
    return torch.where(inside, taken, 0).view(indices.shape)


def _max_pool2d_setup(ctx, inputs, output):
    _save(ctx, output[1])
    ctx.input_size = inputs[0].shape
    ctx.mark_non_differentiable(output[1])


def _max_pool2d_backward(ctx, grad, _grad_indices):
    (indices,) = ctx.saved_tensors
    grad_x = call(MAX_POOL2D_BACKWARD, grad, indices, ctx.input_size) if ctx.needs_input_grad[0] else None
    return grad_x, None, None, None, None, None


def _max_pool2d_jvp(ctx, tx, *_):
    (indices,) = ctx.saved_tensors
    return max_pool2d_gather(tx, indices), None


def _max_pool2d_vmap(info, in_dims, x, *conf):
    return _fold_batch(info, in_dims[:1], MAX_POOL2D, (x,), conf)


def _max_pool2d_backward_setup(ctx, inputs, output):
    _save(ctx, inputs[1])
    ctx.input_size = inputs[2]


def _max_pool2d_backward_backward(ctx, grad):
    (indices,) = ctx.saved_tensors
    return (max_pool2d_gather(grad, indices) if ctx.needs_input_grad[0] else None), None, None


def _max_pool2d_backward_jvp(ctx, t_gy, *_):
    (indices,) = ctx.saved_tensors
    return call(MAX_POOL2D_BACKWARD, t_gy, indices, ctx.input_size)


def _max_pool2d_backward_vmap(info, in_dims, grad_output, indices, input_size):
    return _fold_batch(info, in_dims[:2], MAX_POOL2D_BACKWARD, (grad_output, indices), (input_size,), size_arg=0)


MaxPool2dFunction = register(max_pool2d_op, _max_pool2d_setup, _max_pool2d_backward, _max_pool2d_jvp,
                             _max_pool2d_vmap)
MaxPool2dBackwardFunction = register(max_pool2d_backward_op, _max_pool2d_backward_setup,
                                     _max_pool2d_backward_backward, _max_pool2d_backward_jvp,
                                     _max_pool2d_backward_vmap)


# --- avg_pool2d ---------------------------------------------------------------------------------


@operator("cnnzoo::avg_pool2d")
def avg_pool2d_op(input: Tensor, kernel_size: Sequence[int], stride: Sequence[int], padding: Sequence[int],
                  ceil_mode: bool, count_include_pad: bool, divisor_override: int | None) -> Tensor:
    """Average pooling of a batched input."""
    out = _check_avg_pool2d("avg_pool2d", input, input.shape, kernel_size, stride, padding, ceil_mode,
                            divisor_override)
    if compiled.applies(input):
        result = compiled.avg_pool2d_forward(input, kernel_size, stride, padding, out, count_include_pad,
                                             divisor_override)
        return in_format(result, is_channels_last(input))
    divisor = reference_pool.avg_divisor(input.shape[2:], kernel_size, stride, padding, out, count_include_pad,
                                         divisor_override, input.dtype, input.device)
    with outside_autocast(input):
        sums = reference_pool.window_sums(input, kernel_size, stride, padding, out)
    return in_format(sums.div_(divisor), is_channels_last(input))


def _check_avg_pool2d(fn, t, input_size, kernel_size, stride, padding, ceil_mode, divisor_override):
    check_4d(t, "input" if fn == "avg_pool2d" else "grad_output", fn)
    check_divisor(divisor_override, fn)
    return pool2d_output_size(fn, input_size, kernel_size, stride, padding, (1, 1), ceil_mode)


@avg_pool2d_op.register_fake
def _(input, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override):
    out = _check_avg_pool2d("avg_pool2d", input, input.shape, kernel_size, stride, padding, ceil_mode,
                            divisor_override)
    return empty(input, (*input.shape[:2], *out), is_channels_last(input))


@operator("cnnzoo::avg_pool2d_backward")
def avg_pool2d_backward_op(grad_output: Tensor, input_size: Sequence[int], kernel_size: Sequence[int],
                           stride: Sequence[int], padding: Sequence[int], ceil_mode: bool, count_include_pad: bool,
                           divisor_override: int | None, channels_last: bool = False) -> Tensor:
    """Every pixel of a window receives the window's gradient over its divisor."""
    out = _check_avg_pool2d_backward(grad_output, input_size, kernel_size, stride, padding, ceil_mode,
                                     divisor_override)
    if compiled.applies(grad_output):
        grad = compiled.avg_pool2d_backward(grad_output, input_size, kernel_size, stride, padding, count_include_pad,
                                            divisor_override)
        return in_format(grad, channels_last)
    divisor = reference_pool.avg_divisor(input_size[2:], kernel_size, stride, padding, out, count_include_pad,
                                         divisor_override, grad_output.dtype, grad_output.device)
    with outside_autocast(grad_output):
        grad = reference_pool.window_sums_backward(grad_output / divisor, input_size, kernel_size, stride, padding)
    return in_format(grad, channels_last)


def _check_avg_pool2d_backward(grad_output, input_size, kernel_size, stride, padding, ceil_mode, divisor_override):
    fn = "avg_pool2d_backward"
    ints(input_size, 4, "input_size", fn)
    out = _check_avg_pool2d(fn, grad_output, input_size, kernel_size, stride, padding, ceil_mode, divisor_override)
    check_size(grad_output, (*input_size[:2], *out), "grad_output", fn)
    return out


@avg_pool2d_backward_op.register_fake
def _(grad_output, input_size, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override,
      channels_last=False):
    _check_avg_pool2d_backward(grad_output, input_size, kernel_size, stride, padding, ceil_mode, divisor_override)
    return empty(grad_output, input_size, channels_last)


AVG_POOL2D = torch.ops.cnnzoo.avg_pool2d.default
AVG_POOL2D_BACKWARD = torch.ops.cnnzoo.avg_pool2d_backward.default


def _avg_pool2d_setup(ctx, inputs, output):
    x, *conf = inputs
    _save(ctx)
    ctx.input_size, ctx.conf, ctx.channels_last = x.shape, tuple(conf), is_channels_last(x)


def _avg_pool2d_backward(ctx, grad):
    if not ctx.needs_input_grad[0]:
        return (None,) * 7
    return call(AVG_POOL2D_BACKWARD, grad, ctx.input_size, *ctx.conf, ctx.channels_last), *(None,) * 6


def _avg_pool2d_jvp(ctx, tx, *_):
    return call(AVG_POOL2D, tx, *ctx.conf)


def _avg_pool2d_vmap(info, in_dims, x, *conf):
    return _fold_batch(info, in_dims[:1], AVG_POOL2D, (x,), conf)


def _avg_pool2d_backward_setup(ctx, inputs, output):
    _save(ctx)
    ctx.conf = tuple(inputs[2:8])
    ctx.input_size, ctx.channels_last = inputs[1], len(inputs) > 8 and inputs[8]


def _avg_pool2d_backward_backward(ctx, grad):
    grad_gy = call(AVG_POOL2D, grad, *ctx.conf) if ctx.needs_input_grad[0] else None
    return grad_gy, *(None,) * 8


def _avg_pool2d_backward_jvp(ctx, t_gy, *_):
    return call(AVG_POOL2D_BACKWARD, t_gy, ctx.input_size, *ctx.conf, ctx.channels_last)


def _avg_pool2d_backward_vmap(info, in_dims, grad_output, input_size, *conf):
    return _fold_batch(info, in_dims[:1], AVG_POOL2D_BACKWARD, (grad_output,), (input_size, *conf), size_arg=0)


AvgPool2dFunction = register(avg_pool2d_op, _avg_pool2d_setup, _avg_pool2d_backward, _avg_pool2d_jvp,
                             _avg_pool2d_vmap)
AvgPool2dBackwardFunction = register(avg_pool2d_backward_op, _avg_pool2d_backward_setup,
                                     _avg_pool2d_backward_backward, _avg_pool2d_backward_jvp,
                                     _avg_pool2d_backward_vmap)


# --- adaptive_avg_pool2d ------------------------------------------------------------------------


@operator("cnnzoo::adaptive_avg_pool2d")
def adaptive_avg_pool2d_op(input: Tensor, output_size: Sequence[int]) -> Tensor:
    """Adaptive average pooling of a batched input to ``output_size`` (Ho, Wo)."""
    out = _check_adaptive("adaptive_avg_pool2d", input, input.shape, output_size)
    if compiled.applies(input):
        return in_format(compiled.adaptive_avg_pool2d_forward(input, out), is_channels_last(input))
    with outside_autocast(input):
        result = reference_pool.adaptive_avg_pool2d_forward(input, out)
    return in_format(result, is_channels_last(input))


def _check_adaptive(fn, t, input_size, output_size):
    check_4d(t, "input" if fn == "adaptive_avg_pool2d" else "grad_output", fn)
    return adaptive_output_size(fn, input_size, output_size)


@adaptive_avg_pool2d_op.register_fake
def _(input, output_size):
    out = _check_adaptive("adaptive_avg_pool2d", input, input.shape, output_size)
    return empty(input, (*input.shape[:2], *out), is_channels_last(input))


@operator("cnnzoo::adaptive_avg_pool2d_backward")
def adaptive_avg_pool2d_backward_op(grad_output: Tensor, input_size: Sequence[int],
                                    channels_last: bool = False) -> Tensor:
    """Each bin's gradient spread evenly over its pixels."""
    _check_adaptive_backward(grad_output, input_size)
    if compiled.applies(grad_output):
        return in_format(compiled.adaptive_avg_pool2d_backward(grad_output, input_size), channels_last)
    with outside_autocast(grad_output):
        grad = reference_pool.adaptive_avg_pool2d_backward(grad_output, input_size)
    return in_format(grad, channels_last)


def _check_adaptive_backward(grad_output, input_size):
    fn = "adaptive_avg_pool2d_backward"
    ints(input_size, 4, "input_size", fn)
    _check_adaptive(fn, grad_output, input_size, grad_output.shape[2:])
    if tuple(grad_output.shape[:2]) != tuple(input_size[:2]):
        raise ValueError(f"{fn}: grad_output of size {list(grad_output.shape)} does not pool an input of size "
                         f"{list(input_size)}")


@adaptive_avg_pool2d_backward_op.register_fake
def _(grad_output, input_size, channels_last=False):
    _check_adaptive_backward(grad_output, input_size)
    return empty(grad_output, input_size, channels_last)


ADAPTIVE_AVG_POOL2D = torch.ops.cnnzoo.adaptive_avg_pool2d.default
ADAPTIVE_AVG_POOL2D_BACKWARD = torch.ops.cnnzoo.adaptive_avg_pool2d_backward.default


def _adaptive_setup(ctx, inputs, output):
    _save(ctx)
    ctx.input_size, ctx.output_size, ctx.channels_last = inputs[0].shape, inputs[1], is_channels_last(inputs[0])


def _adaptive_backward(ctx, grad):
    if not ctx.needs_input_grad[0]:
        return None, None
    return call(ADAPTIVE_AVG_POOL2D_BACKWARD, grad, ctx.input_size, ctx.channels_last), None


def _adaptive_jvp(ctx, tx, _):
    return call(ADAPTIVE_AVG_POOL2D, tx, ctx.output_size)


def _adaptive_vmap(info, in_dims, x, output_size):
    return _fold_batch(info, in_dims[:1], ADAPTIVE_AVG_POOL2D, (x,), (output_size,))


def _adaptive_backward_setup(ctx, inputs, output):
    _save(ctx)
    grad_output, ctx.input_size, *flag = inputs
    ctx.output_size, ctx.channels_last = grad_output.shape[2:], bool(flag and flag[0])


def _adaptive_backward_backward(ctx, grad):
    grad_gy = call(ADAPTIVE_AVG_POOL2D, grad, ctx.output_size) if ctx.needs_input_grad[0] else None
    return grad_gy, None, None


def _adaptive_backward_jvp(ctx, t_gy, *_):
    return call(ADAPTIVE_AVG_POOL2D_BACKWARD, t_gy, ctx.input_size, ctx.channels_last)


def _adaptive_backward_vmap(info, in_dims, grad_output, input_size, channels_last=False):
    return _fold_batch(info, in_dims[:1], ADAPTIVE_AVG_POOL2D_BACKWARD, (grad_output,),
                       (input_size, channels_last), size_arg=0)


AdaptiveAvgPool2dFunction = register(adaptive_avg_pool2d_op, _adaptive_setup, _adaptive_backward, _adaptive_jvp,
                                     _adaptive_vmap)
AdaptiveAvgPool2dBackwardFunction = register(adaptive_avg_pool2d_backward_op, _adaptive_backward_setup,
                                             _adaptive_backward_backward, _adaptive_backward_jvp,
                                             _adaptive_backward_vmap)

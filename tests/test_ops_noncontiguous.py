"""Every operator with every tensor argument made non-contiguous in turn, in each way users make one
(a crop, a transpose, an interleaved buffer, a crop of a channels_last tensor, a stride-0 expanded
view): the result and every gradient must equal the contiguous call's exactly, with both
implementations (the reference and the compiled kernels)."""

from __future__ import annotations

import pytest
import torch

from cnnzoo.ops import library

pytestmark = pytest.mark.usefixtures("kernels")


def rand(*shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=GENERATOR)


GENERATOR = torch.Generator().manual_seed(0)
CONV = ([1, 1], [1, 1, 1, 1], [1, 1], 2)  # stride, padding, dilation, groups
STRIDED = ([2, 2], [1, 0, 1, 1], [1, 1], 1)
POINTWISE = ([1, 1], [0, 0, 0, 0], [1, 1], 1)  # on a 12x11 plane: the reference's matrix products
MAX = ([3, 3], [2, 2], [1, 1], [1, 1], True)
AVG = ([3, 2], [2, 1], [1, 1], True, False, None)
_, INDICES = library.max_pool2d.overload(rand(2, 4, 7, 6), *MAX)

SAMPLES = {
    "conv2d": (library.conv2d, (rand(2, 4, 7, 6), rand(6, 2, 3, 3), rand(6), *CONV)),
    "conv2d-strided": (library.conv2d, (rand(2, 3, 17, 16), rand(4, 3, 3, 3), rand(4), *STRIDED)),
    "conv2d-pointwise": (library.conv2d, (rand(2, 4, 12, 11), rand(5, 4, 1, 1), rand(5), *POINTWISE)),
    "conv2d_input_grad": (library.conv2d_input_grad, (rand(2, 6, 7, 6), rand(6, 2, 3, 3), [2, 4, 7, 6], *CONV, False)),
    "conv2d_input_grad-pointwise": (
        library.conv2d_input_grad,
        (rand(2, 5, 12, 11), rand(5, 4, 1, 1), [2, 4, 12, 11], *POINTWISE, False),
    ),
    "conv2d_weight_grad": (
        library.conv2d_weight_grad,
        (rand(2, 4, 7, 6), rand(2, 6, 7, 6), [6, 2, 3, 3], *CONV, False),
    ),
    "conv2d_weight_grad-strided": (
        library.conv2d_weight_grad,
        (rand(2, 3, 17, 16), rand(2, 4, 8, 8), [4, 3, 3, 3], *STRIDED, False),
    ),
    "conv_transpose2d": (
        library.conv_transpose2d,
        (rand(2, 4, 5, 6), rand(4, 3, 3, 3), rand(6), [2, 2], [1, 1, 1, 1], [1, 0], 2, [1, 1]),
    ),
    "convolve2d": (library.convolve2d, (rand(2, 4, 7, 6), rand(6, 2, 3, 2), rand(6), *CONV)),
    "local_conv2d": (library.local_conv2d, (rand(2, 4, 7, 6), rand(7, 7, 6, 2, 3, 2), rand(7, 7, 6), *CONV)),
    "local_conv2d-strided": (library.local_conv2d, (rand(2, 3, 9, 8), rand(4, 4, 4, 3, 3, 3), rand(4), *STRIDED)),
    "local_conv2d_input_grad": (
        library.local_conv2d_input_grad,
        (rand(2, 6, 7, 6), rand(7, 6, 6, 2, 3, 3), [2, 4, 7, 6], *CONV, False),
    ),
    "local_conv2d_weight_grad": (
        library.local_conv2d_weight_grad,
        (rand(2, 4, 7, 6), rand(2, 6, 7, 6), [7, 6, 6, 2, 3, 3], *CONV),
    ),
    "tiled_conv2d": (library.tiled_conv2d, (rand(2, 4, 7, 6), rand(2, 3, 6, 2, 3, 2), rand(6), *CONV)),
    "tiled_conv2d-strided": (library.tiled_conv2d, (rand(2, 3, 9, 8), rand(2, 2, 4, 3, 3, 3), rand(4), *STRIDED)),
    "max_pool2d": (library.max_pool2d, (rand(2, 4, 7, 6), *MAX)),
    "max_pool2d_backward": (library.max_pool2d_backward, (rand(*INDICES.shape), INDICES, [2, 4, 7, 6])),
    "avg_pool2d": (library.avg_pool2d, (rand(2, 4, 7, 6), *AVG)),
    "avg_pool2d_backward": (library.avg_pool2d_backward, (rand(2, 4, 4, 7), [2, 4, 7, 6], *AVG, False)),
    "adaptive_avg_pool2d": (library.adaptive_avg_pool2d, (rand(2, 4, 7, 6), [3, 4])),
    "adaptive_avg_pool2d_backward": (library.adaptive_avg_pool2d_backward, (rand(2, 4, 3, 4), [2, 4, 7, 6], False)),
}


# --- the ways users make a tensor non-contiguous: each gives the same values with other strides ----


def crop(t: torch.Tensor) -> torch.Tensor:
    big = torch.zeros(*t.shape[:-2], t.shape[-2] + 2, t.shape[-1] + 3, dtype=t.dtype)
    big[..., 1:-1, 2:-1] = t
    return big[..., 1:-1, 2:-1]


def transpose(t: torch.Tensor) -> torch.Tensor:
    return t.transpose(-1, -2).contiguous().transpose(-1, -2)


def interleave(t: torch.Tensor) -> torch.Tensor:
    big = torch.zeros(*t.shape[:-1], 2 * t.shape[-1], dtype=t.dtype)
    big[..., ::2] = t
    return big[..., ::2]


def channels_last_crop(t: torch.Tensor) -> torch.Tensor:
    big = torch.zeros(t.shape[0], t.shape[1], t.shape[2] + 2, t.shape[3] + 2, dtype=t.dtype)
    big = big.contiguous(memory_format=torch.channels_last)
    big[:, :, 1:-1, 1:-1] = t
    return big[:, :, 1:-1, 1:-1]


def expand(t: torch.Tensor) -> torch.Tensor:
    """A stride-0 view along the first dimension (its values are the first slice's, repeated)."""
    return t[:1].expand(t.shape)


WAYS = {
    "crop": crop,
    "transpose": transpose,
    "interleave": interleave,
    "channels_last_crop": channels_last_crop,
    "expand": expand,
}
FOR_1D = ("interleave", "expand")  # a crop of a vector is contiguous, and it has nothing to transpose
NOT_4D = ("crop", "transpose", "interleave", "expand")  # a locally connected weight (6D) or bias (3D)


def ways_for(t: torch.Tensor) -> tuple[str, ...]:
    return tuple(WAYS) if t.dim() == 4 else FOR_1D if t.dim() == 1 else NOT_4D


def cases():
    for sample, (op, args) in SAMPLES.items():
        for i, arg in enumerate(args):
            if isinstance(arg, torch.Tensor):
                for way in ways_for(arg):
                    if WAYS[way](arg).is_contiguous():  # a transpose of a 1x1 kernel changes nothing
                        continue
                    yield pytest.param(op, args, i, way, id=f"{sample}-{op.params[i]}-{way}")


def run(op, args) -> tuple[list[torch.Tensor], list[torch.Tensor | None]]:
    """The operator's outputs, and the gradients of every floating-point tensor argument."""
    outputs = op(*args)
    outputs = list(outputs) if isinstance(outputs, tuple) else [outputs]
    leaves = [a for a in args if isinstance(a, torch.Tensor) and a.requires_grad]
    cotangent = torch.linspace(-1, 1, outputs[0].numel()).view(outputs[0].shape)
    grads = torch.autograd.grad((outputs[0] * cotangent).sum(), leaves, allow_unused=True)
    return outputs, list(grads)


@pytest.mark.parametrize("op,args,position,way", list(cases()))
def test_non_contiguous_argument_gives_the_contiguous_result(op, args, position, way):
    make = WAYS[way]
    values = args[position]
    if way == "expand":  # the contiguous call takes the same repeated values
        values = values[:1].expand(values.shape).contiguous()
    strided = make(values)
    assert not strided.is_contiguous() and torch.equal(strided, values)

    def prepared(replacement: torch.Tensor) -> list:
        prepared = [a.clone().requires_grad_(a.is_floating_point()) if isinstance(a, torch.Tensor) else a for a in args]
        prepared[position] = replacement.requires_grad_(replacement.is_floating_point())
        return prepared

    expected_outputs, expected_grads = run(op, prepared(values.clone()))
    outputs, grads = run(op, prepared(strided))
    for got, want in zip(outputs, expected_outputs):
        assert torch.equal(got, want), f"{op.name} output differs with a {way} {op.params[position]}"
    for name, got, want in zip(
        [p for p, a in zip(op.params, args) if isinstance(a, torch.Tensor) and a.is_floating_point()],
        grads,
        expected_grads,
    ):
        assert (got is None) == (want is None)
        assert got is None or torch.equal(got, want), (
            f"{op.name}: gradient of {name} differs with a {way} {op.params[position]}"
        )


def test_every_operator_is_sampled():
    assert {op for op, _ in SAMPLES.values()} == set(library.OPERATORS)

"""Proof that cnnzoo.ops runs our own operators: the autograd graph holds their backward nodes, and no
aten convolution or pooling kernel runs in forward, backward or double backward."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from torch._library.custom_ops import _maybe_get_opdef
from torch.utils._python_dispatch import TorchDispatchMode

from cnnzoo import ops

from .helpers import TORCH_NODES, cnnzoo_node, graph_nodes

FORBIDDEN_ATEN = re.compile(r"convolution|conv2d|conv_|cudnn|mkldnn|max_pool|avg_pool|adaptive_|pool2d")


class RecordAtenOps(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.names: set[str] = set()  # aten operators
        self.ours: set[str] = set()  # cnnzoo operators

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.__name__.split(".")[0]
        if func.namespace == "cnnzoo":  # our operator: run its kernel here, to record what that runs too
            self.ours.add(name)
            with self:
                return _maybe_get_opdef(func)._init_fn(*args, **(kwargs or {}))
        self.names.add(name)
        return func(*args, **(kwargs or {}))


CASES = [
    ("conv2d", lambda x, w: ops.conv2d(x, w, padding=1, stride=2)),
    ("max_pool2d", lambda x, w: ops.max_pool2d(x, 3, 2, 1)),
    ("avg_pool2d", lambda x, w: ops.avg_pool2d(x, 3, 2, 1, ceil_mode=True)),
    ("adaptive_avg_pool2d", lambda x, w: ops.adaptive_avg_pool2d(x, 3)),
]


@pytest.mark.parametrize("node,fn", CASES, ids=[c[0] for c in CASES])
def test_graph_holds_our_function(node, fn):
    x = torch.randn(2, 3, 9, 9, dtype=torch.float64, requires_grad=True)
    w = torch.randn(4, 3, 3, 3, dtype=torch.float64, requires_grad=True)
    names = graph_nodes(fn(x, w))
    assert cnnzoo_node(names, node), names
    assert not [n for n in names if TORCH_NODES.search(n)], names


@pytest.mark.parametrize("node,fn", CASES, ids=[c[0] for c in CASES])
def test_no_aten_conv_or_pool_kernel_runs(node, fn):
    x = torch.randn(2, 3, 9, 9, dtype=torch.float64, requires_grad=True)
    w = torch.randn(4, 3, 3, 3, dtype=torch.float64, requires_grad=True)
    with RecordAtenOps() as record:
        out = fn(x, w)
        grads = torch.autograd.grad(out.square().sum(), (x, w), create_graph=True, allow_unused=True)
        second = sum(g.square().sum() for g in grads if g is not None)
        torch.autograd.grad(second, x, allow_unused=True)
    assert record.names & {"bmm", "mul", "scatter_add", "max"}, "the recorder saw none of our own kernels"
    assert not [n for n in record.names if FORBIDDEN_ATEN.search(n)], sorted(record.names)


def test_the_recorder_would_see_torch_kernels():
    x = torch.randn(1, 1, 5, 5, requires_grad=True)
    with RecordAtenOps() as record:
        torch.nn.functional.conv2d(x, torch.randn(1, 1, 3, 3)).sum().backward()
        torch.nn.functional.max_pool2d(x, 2)
    assert [n for n in record.names if FORBIDDEN_ATEN.search(n)]


def test_ops_source_never_calls_torch_conv_or_pool():
    forbidden = re.compile(
        r"\b(F|functional|torch|nn\.grad|aten)\.(conv\w*|\w*pool\w*|convolution\w*)\s*\(|torch\.nn\.grad"
    )
    for path in Path(ops.__file__).parent.glob("*.py"):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            assert not forbidden.search(line), f"{path.name}:{number}: {line.strip()}"


@pytest.mark.parametrize("node,fn", CASES, ids=[c[0] for c in CASES])
def test_shapes_propagate_on_the_meta_device(node, fn):
    x = torch.randn(2, 3, 9, 9, requires_grad=True)
    w = torch.randn(4, 3, 3, 3, requires_grad=True)
    expected = fn(x, w)
    meta = fn(x.detach().to("meta").requires_grad_(), w.detach().to("meta").requires_grad_())
    assert meta.device.type == "meta" and meta.shape == expected.shape

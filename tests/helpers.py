"""Shared helpers: run a custom op and its torch.nn.functional reference on the same inputs and
compare the outputs and every gradient."""

from __future__ import annotations

import re

import torch

TOL = {torch.float64: 1e-9, torch.float32: 1e-4, torch.float16: 1e-2, torch.bfloat16: 5e-2}

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def leaves(*tensors, requires_grad=True):
    """Detached copies that require grad (None stays None)."""
    return [None if t is None else t.detach().clone().requires_grad_(requires_grad) for t in tensors]


def outputs_and_grads(fn, tensors, kwargs, grad_seed=0):
    """Run ``fn(*tensors, **kwargs)``; return its first output and the gradients of a random linear
    function of it with respect to every tensor that requires grad."""
    out = fn(*tensors, **kwargs)
    first = out[0] if isinstance(out, tuple) else out
    gen = torch.Generator(device="cpu").manual_seed(grad_seed)
    grad_out = torch.randn(first.shape, generator=gen, dtype=torch.float64).to(first.dtype).to(first.device)
    inputs = [t for t in tensors if isinstance(t, torch.Tensor) and t.requires_grad]
    grads = torch.autograd.grad(first, inputs, grad_out, allow_unused=True) if first.numel() else [None] * len(inputs)
    return out, grads


def assert_matches(custom, reference, tensors, kwargs, ref_kwargs=None, tol=None):
    """Outputs (and indices, if returned) and all gradients of ``custom`` equal ``reference``'s."""
    dtype = next(t for t in tensors if isinstance(t, torch.Tensor)).dtype
    tol = TOL[dtype] if tol is None else tol
    mine = leaves(*tensors)
    ref = leaves(*tensors)
    out, grads = outputs_and_grads(custom, mine, kwargs)
    ref_out, ref_grads = outputs_and_grads(reference, ref, kwargs if ref_kwargs is None else ref_kwargs)
    outs = out if isinstance(out, tuple) else (out,)
    ref_outs = ref_out if isinstance(ref_out, tuple) else (ref_out,)
    for a, b in zip(outs, ref_outs):
        assert a.shape == b.shape, f"shape {tuple(a.shape)} != {tuple(b.shape)} for {kwargs}"
        assert a.dtype == b.dtype
        torch.testing.assert_close(a, b, atol=tol, rtol=tol, msg=lambda m: f"{kwargs}: {m}")
    for i, (a, b) in enumerate(zip(grads, ref_grads)):
        if b is None or a is None:
            assert a is None and b is None or (a is not None and not a.any()) or (b is not None and not b.any())
            continue
        torch.testing.assert_close(a, b, atol=tol, rtol=tol, msg=lambda m, i=i: f"grad {i} for {kwargs}: {m}")


def graph_nodes(tensor: torch.Tensor) -> list[str]:
    """Type names of every node in the autograd graph behind ``tensor``."""
    seen, stack = [], [tensor.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.append(node)
        stack.extend(next_fn for next_fn, _ in node.next_functions)
    return [type(node).__name__ for node in seen]


# autograd nodes of torch's own convolution and pooling kernels
TORCH_NODES = re.compile(r"Convolution|MaxPool2DWithIndices|AvgPool2D|AdaptiveAvgPool2D|CudnnConv|MkldnnConv")


def cnnzoo_node(names: list[str], op: str) -> bool:
    """Whether the graph node names hold the backward of ``torch.ops.cnnzoo.<op>``: its eager Function's
    (``Conv2dFunctionBackward``) or the one ``register_autograd`` generates."""
    function = "".join(part.capitalize() for part in op.split("_")) + "FunctionBackward"
    return any(n == function or re.search(rf"cnnzoo_{op}_default", n) for n in names)


class Payload:
    """Unpickling this runs ``open(path, 'w')``: a stand-in for any code a hostile file could run."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return open, (str(self.path), "w")


def torchvision_weights_file(torch_home, model: str, weights: str = "DEFAULT", **kwargs):
    """Write a randomly initialised torchvision ``model``'s state_dict where torch.hub's cache keeps
    torchvision's ``weights`` under ``torch_home`` (set ``TORCH_HOME`` to it), as a download would;
    returns the file's path."""
    from pathlib import Path
    from urllib.parse import urlparse

    import torchvision

    enum = torchvision.models.get_model_weights(model)
    chosen = enum.DEFAULT if weights == "DEFAULT" else enum[weights]
    path = Path(torch_home) / "hub" / "checkpoints" / Path(urlparse(chosen.url).path).name
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    torch.save(getattr(torchvision.models, model)(weights=None, **kwargs).state_dict(), path)
    return path

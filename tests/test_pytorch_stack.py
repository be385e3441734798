"""cnnzoo models through the PyTorch 2 stack: torch.compile, torch.export, ONNX (and ONNX Runtime),
torch.func per-sample gradients, torch.nn's layer tools and channels_last, each against the same
model built with ``backend="torch"`` and the same weights."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.func import functional_call, grad, vmap

import cnnzoo
import cnnzoo.nn as cnn

from .helpers import cnnzoo_node, graph_nodes

# one model of every family, at a small input size it takes
FAMILIES = {"lenet5": 32, "alexnet": 63, "vgg11": 32, "resnet20": 32, "googlenet": 32}
EXPORTED = {**FAMILIES, "lenet5_1998": 32, "resnet18": 32}


def lively(model: nn.Module, seed: int = 0) -> nn.Module:
    """Weights whose outputs depend on the input. Some paper inits (GoogLeNet's N(0, 0.01) with
    batch norm's initial statistics) shrink the features to nothing at initialisation, and a
    comparison of outputs that are all the bias would prove little. Every parameter and statistic
    comes from ``seed``, so a twin is the same whatever ran before: a float32 pre-activation within
    rounding of zero (or a near-tie in max pooling) sends a whole gradient entry one way in one model
    and the other way in its twin, and a given seed either meets such a kink or it does not."""
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            fan_in = m.weight[0].numel()
            m.weight.data = torch.randn(m.weight.shape, generator=gen) * (2 / fan_in) ** 0.5
            if m.bias is not None:
                m.bias.data = (torch.rand(m.bias.shape, generator=gen) * 2 - 1) * fan_in**-0.5
        elif isinstance(m, nn.BatchNorm2d):
            m.running_mean = torch.randn(m.num_features, generator=gen) * 0.1
            m.running_var = torch.rand(m.num_features, generator=gen) + 0.5
    return model


def twins(name: str, dtype=torch.float32, **kwargs) -> tuple[nn.Module, nn.Module]:
    """The cnnzoo model and its torch.nn twin with the same (lively) weights, in eval mode."""
    if name == "googlenet":
        kwargs.setdefault("aux_logits", False)
    custom = lively(cnnzoo.create_model(name, num_classes=10, **kwargs)).to(dtype).eval()
    native = cnnzoo.create_model(name, num_classes=10, backend="torch", **kwargs).to(dtype).eval()
    native.load_state_dict(custom.state_dict())
    return custom, native


def example(model: nn.Module, size: int, batch: int = 2, dtype=torch.float32, seed: int = 1) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(batch, model.in_channels, size, size, generator=gen, dtype=dtype)


def forward_backward(model: nn.Module, x: torch.Tensor):
    """The output and every parameter's gradient of a fixed function of it."""
    model.zero_grad(set_to_none=True)
    out = model(x)
    (out * torch.linspace(-1, 1, out.shape[1], dtype=out.dtype)).sum().backward()
    return out.detach(), {k.removeprefix("_orig_mod."): p.grad.clone() for k, p in model.named_parameters()}


def assert_same(a, b, atol=1e-5, rtol=1e-4):
    """Outputs and gradients equal; ``atol`` is relative to each tensor's largest entry (float32 sums
    over thousands of terms round differently in different kernels)."""
    out_a, grads_a = a
    out_b, grads_b = b
    torch.testing.assert_close(out_a, out_b, atol=atol * max(1.0, out_b.abs().max().item()), rtol=rtol)
    for key in grads_a:
        scale = max(1.0, grads_b[key].abs().max().item())
        torch.testing.assert_close(
            grads_a[key], grads_b[key], atol=atol * scale, rtol=rtol, msg=lambda m, k=key: f"{k}: {m}"
        )


# --- torch.compile -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_compile_fullgraph_forward_and_backward(name):
    """One graph (no break) through dynamo and AOTAutograd, which run the fake kernels and trace the
    registered backward formulas; equal to eager in float32 (the compiled kernels) and to the torch.nn
    twin in float64. Against the twin, float32 would not do: where a pre-activation lies within rounding
    of a ReLU's kink (one in thousands of seeds of these weights has one), the two models' float32 sums
    put it on opposite sides, and a whole gradient entry differs without either kernel being wrong."""
    custom, native = twins(name)
    x = example(custom, FAMILIES[name])
    compiled = torch.compile(custom, fullgraph=True, backend="aot_eager")
    assert_same(forward_backward(compiled, x), forward_backward(custom, x), atol=1e-6, rtol=1e-5)
    custom, native, x = custom.double(), native.double(), x.double()
    compiled = torch.compile(custom, fullgraph=True, backend="aot_eager")
    assert_same(forward_backward(compiled, x), forward_backward(native, x), atol=1e-10, rtol=1e-9)


def test_compile_with_inductor():
    """The default backend: Inductor generates code around our operators (kept as calls)."""
    custom, native = twins("lenet5")
    x = example(custom, 32)
    torch._dynamo.reset()
    result = forward_backward(torch.compile(custom, fullgraph=True), x)
    assert_same(result, forward_backward(native, x))


def test_compile_dynamic_shapes_one_graph_for_three_sizes():
    from torch._dynamo.testing import CompileCounterWithBackend

    custom, native = twins("resnet20", dtype=torch.float64)
    counter = CompileCounterWithBackend("aot_eager")
    torch._dynamo.reset()
    compiled = torch.compile(custom, fullgraph=True, dynamic=True, backend=counter)
    frames = []
    for batch, size in ((2, 32), (3, 40), (4, 24)):  # (a batch of 1 is specialised, as for any model)
        x = example(custom, size, batch=batch, dtype=torch.float64)
        assert_same(forward_backward(compiled, x), forward_backward(native, x), atol=1e-10, rtol=1e-9)
        frames.append(counter.frame_count)
    assert frames[0] > 0 and frames == frames[:1] * 3, f"recompiled for new sizes: compiled frames {frames}"


# --- torch.export ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(EXPORTED))
def test_export_save_load_round_trip(name, tmp_path):
    custom, native = twins(name)
    x = example(custom, EXPORTED[name])
    program = torch.export.export(custom, (x,), dynamic_shapes=({0: torch.export.Dim("batch")},))
    targets = {str(n.target) for n in program.graph.nodes if n.op == "call_function"}
    assert "cnnzoo.conv2d.default" in targets
    assert not [t for t in targets if "aten.conv" in t or "pool" in t and "cnnzoo" not in t], targets
    torch.export.save(program, tmp_path / f"{name}.pt2")
    loaded = torch.export.load(tmp_path / f"{name}.pt2").module()
    x3 = example(custom, EXPORTED[name], batch=3, seed=2)
    with torch.no_grad():
        expected = native(x3)  # (float32 sums round differently in different kernels: atol scaled)
        torch.testing.assert_close(loaded(x3), expected, atol=1e-5 * max(1.0, expected.abs().max().item()), rtol=1e-4)
        torch.testing.assert_close(loaded(x3), custom(x3))


# --- ONNX --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(EXPORTED))
def test_onnx_export_matches_onnxruntime(name, tmp_path):
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    custom, native = twins(name)
    x = example(custom, EXPORTED[name])
    path = cnnzoo.export_onnx(custom, x, tmp_path / f"{name}.onnx")
    graph = onnx.load(str(path)).graph
    kinds = {node.op_type for node in graph.node}
    assert "Conv" in kinds and not [k for k in kinds if "cnnzoo" in k], kinds
    assert {"MaxPool", "AveragePool", "GlobalAveragePool"} & kinds
    assert graph.input[0].type.tensor_type.shape.dim[0].dim_param, "the batch dimension is not dynamic"
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for batch in (1, 4):
        xb = example(custom, EXPORTED[name], batch=batch, seed=batch)
        (got,) = session.run(None, {session.get_inputs()[0].name: xb.numpy()})
        with torch.no_grad():
            expected = native(xb)
        error = (torch.from_numpy(got) - expected).abs().max() / expected.abs().max()
        assert error < 1e-4, f"{name}: relative error {error:.2e} at batch {batch}"


@pytest.mark.parametrize(
    "layer,node",
    [
        (cnn.AvgPool2d(2, divisor_override=1), "AveragePool"),
        (cnn.AvgPool2d(3, 2, 1, ceil_mode=True, divisor_override=2), "AveragePool"),
        (cnn.AvgPool2d(3, 2, 1, ceil_mode=True, count_include_pad=False), "AveragePool"),
        (cnn.MaxPool2d(3, 2, 1, ceil_mode=True), "MaxPool"),
        (cnn.AdaptiveAvgPool2d(1), "GlobalAveragePool"),
        (cnn.AdaptiveAvgPool2d((3, 2)), "AveragePool"),
        (cnn.AdaptiveAvgPool2d((4, 5)), "MatMul"),
        (cnn.Conv2d(3, 4, (4, 3), padding="same"), "Conv"),
        (cnn.Conv2d(3, 4, 3, stride=2, padding="full", dilation=2, groups=1), "Conv"),
    ],
)
def test_onnx_layers(layer, node, tmp_path):
    """Each layer as its ONNX node, equal to torch.nn's under ONNX Runtime. ``divisor_override``, which
    torch's own exporter drops (a 4x error for a 2x2 window sum), is kept."""
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    x = torch.randn(2, 3, 9, 8)
    path = cnnzoo.export_onnx(layer, x, tmp_path / "layer.onnx")
    assert node in {n.op_type for n in onnx.load(str(path)).graph.node}
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    native = cnnzoo.convert(layer, "torch")
    torch.testing.assert_close(torch.from_numpy(got), native(x).detach(), atol=1e-5, rtol=1e-5)


def test_onnx_from_a_batch_of_one_keeps_the_batch_dynamic(tmp_path):
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    custom, native = twins("resnet20")
    path = cnnzoo.export_onnx(custom, example(custom, 32, batch=1), tmp_path / "b1.onnx")
    assert onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim[0].dim_param
    x = example(custom, 32, batch=3)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    torch.testing.assert_close(torch.from_numpy(got), native(x).detach(), atol=1e-5, rtol=1e-4)


@pytest.mark.filterwarnings("ignore:`torch.jit.trace:FutureWarning", "ignore::torch.jit.TracerWarning")
def test_jit_trace_records_the_operators():
    """torch.jit.trace sees torch.ops.cnnzoo.* (not the arithmetic inside them), so the trace is the
    same on every input and runs like the model."""
    custom, native = twins("lenet5_1998")
    x = example(custom, 32)
    traced = torch.jit.trace(custom, x, check_inputs=[(example(custom, 32, batch=3, seed=5),)])
    kinds = {node.kind() for node in traced.inlined_graph.nodes()}
    assert {"cnnzoo::conv2d", "cnnzoo::avg_pool2d"} <= kinds, kinds
    x3 = example(custom, 32, batch=3, seed=6)
    torch.testing.assert_close(traced(x3), native(x3), atol=1e-5, rtol=1e-4)


def test_export_onnx_bad_input(tmp_path):
    with pytest.raises(TypeError, match="example_input must be a torch.Tensor"):
        cnnzoo.export_onnx(cnn.Conv2d(1, 1, 3), [1, 2], tmp_path / "x.onnx")


# --- torch.func: per-sample gradients ----------------------------------------------------------


def per_sample_gradients(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    """The recipe from torch.func's documentation: functional_call + vmap(grad) over the batch."""
    params = {k: v.detach() for k, v in model.named_parameters()}
    buffers = dict(model.named_buffers())

    def loss(params, x, y):
        out = functional_call(model, (params, buffers), (x.unsqueeze(0),))
        return nn.functional.cross_entropy(out, y.unsqueeze(0))

    return vmap(grad(loss), in_dims=(None, 0, 0))(params, x, y)


@pytest.mark.parametrize("name", ["lenet5", "resnet20", "googlenet"])
def test_per_sample_gradients_match_the_torch_twin(name):
    custom, native = twins(name, dtype=torch.float64)
    x = example(custom, 32, batch=4, dtype=torch.float64)
    y = torch.tensor([0, 3, 7, 9])
    mine, theirs = per_sample_gradients(custom, x, y), per_sample_gradients(native, x, y)
    for key in theirs:
        assert mine[key].shape == (4, *dict(custom.named_parameters())[key].shape)
        torch.testing.assert_close(mine[key], theirs[key], atol=1e-10, rtol=1e-8, msg=lambda m, k=key: f"{k}: {m}")
    # each sample's gradient is that sample's ordinary gradient
    custom.zero_grad()
    nn.functional.cross_entropy(custom(x[2:3]), y[2:3]).backward()
    for key, p in custom.named_parameters():
        torch.testing.assert_close(mine[key][2], p.grad, atol=1e-10, rtol=1e-8)


@pytest.mark.filterwarnings("ignore:Full backward hook is firing:UserWarning")  # Opacus' hooks, on any model
@pytest.mark.parametrize("name", ["lenet5", "lenet5_1998"])
def test_opacus_per_sample_gradients(name):
    """Opacus' GradSampleModule (DP-SGD): its hooks take cnnzoo's layers through its torch.func path
    (it looks layers up by exact class) and give the torch.nn twin's per-sample gradients. (Opacus
    refuses batch norm, in cnnzoo's models and torch's alike, hence the LeNets.)"""
    pytest.importorskip("opacus")
    from opacus import GradSampleModule

    custom, native = twins(name, dtype=torch.float64)
    x = example(custom, 32, batch=4, dtype=torch.float64)
    y = torch.tensor([0, 3, 7, 9])
    samples = []
    for model in (custom, native):
        wrapped = GradSampleModule(model.train())
        nn.functional.cross_entropy(wrapped(x), y).backward()
        samples.append({k: p.grad_sample for k, p in model.named_parameters()})
        wrapped.remove_hooks()
    for key in samples[1]:
        assert samples[0][key].shape[0] == 4
        torch.testing.assert_close(samples[0][key], samples[1][key], atol=1e-12, rtol=1e-9)


def test_vmap_over_a_stack_of_weights():
    """Model ensembling: one input batch, a stack of three models' weights."""
    models = [lively(cnnzoo.create_model("lenet5"), seed=s).double().eval() for s in range(3)]
    stacked = {
        k: torch.stack([dict(m.named_parameters())[k].detach() for m in models])
        for k, _ in models[0].named_parameters()
    }
    x = example(models[0], 32, batch=2, dtype=torch.float64)
    out = vmap(lambda p: functional_call(models[0], p, (x,)))(stacked)
    torch.testing.assert_close(out, torch.stack([m(x) for m in models]).detach())


# --- layers are torch's layers -------------------------------------------------------------------


def test_layers_are_torch_layers():
    for mine, theirs in (
        (cnn.Conv2d(1, 2, 3), nn.Conv2d),
        (cnn.MaxPool2d(2), nn.MaxPool2d),
        (cnn.AvgPool2d(2), nn.AvgPool2d),
        (cnn.AdaptiveAvgPool2d(1), nn.AdaptiveAvgPool2d),
    ):
        assert isinstance(mine, theirs)
    model = cnnzoo.create_model("resnet20")
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 19 and all(type(m) is cnn.Conv2d for m in convs)


def test_convert_swaps_every_layer_and_keeps_the_weights():
    custom, native = twins("googlenet")
    x = example(custom, 32)
    expected = native(x)
    cnnzoo.convert(native, "custom")
    kinds = {type(m) for m in native.modules()}
    assert kinds & set(cnn.convert.__globals__["TWINS"].values()) and not kinds & set(cnn.convert.__globals__["TWINS"])
    assert cnnzoo_node(graph_nodes(native(x)), "conv2d")
    torch.testing.assert_close(native(x), expected, atol=1e-5, rtol=1e-4)
    back = cnnzoo.convert(native, "torch")
    assert back is native and not [m for m in native.modules() if type(m).__module__.startswith("cnnzoo.nn")]
    torch.testing.assert_close(native(x), expected, atol=1e-5, rtol=1e-4)
    full = cnnzoo.convert(cnn.Conv2d(2, 3, 3, padding="full", dilation=2), "torch")
    assert type(full) is nn.Conv2d and full.padding == (4, 4)
    with pytest.raises(ValueError, match="unknown backend"):
        cnnzoo.convert(native, "tensorflow")


def test_torch_layer_tools_work_on_cnnzoo_layers():
    """Conv-BN fusion and pruning recognise cnnzoo's layers as torch's."""
    from torch.nn.utils import fusion, prune

    conv, bn = cnn.Conv2d(3, 4, 3, padding=1), lively(nn.Sequential(nn.BatchNorm2d(4))).eval()
    x = torch.randn(2, 3, 6, 6)
    fused = fusion.fuse_conv_bn_eval(conv.eval(), bn[0])
    assert type(fused) is cnn.Conv2d
    torch.testing.assert_close(fused(x), bn(conv(x)), atol=1e-5, rtol=1e-5)
    prune.l1_unstructured(conv, "weight", amount=0.5)
    assert (conv.weight == 0).sum() == conv.weight.numel() // 2
    torch.testing.assert_close(
        conv(x), nn.functional.conv2d(x, conv.weight, conv.bias, padding=1), atol=1e-5, rtol=1e-5
    )


# --- channels_last -----------------------------------------------------------------------------


def test_channels_last_model_keeps_channels_last_activations():
    custom, native = twins("resnet20")
    custom, native = custom.to(memory_format=torch.channels_last), native.to(memory_format=torch.channels_last)
    x = example(custom, 32).contiguous(memory_format=torch.channels_last).requires_grad_()
    layouts = []
    hooks = [
        m.register_forward_hook(lambda m, i, o: layouts.append(o.is_contiguous(memory_format=torch.channels_last)))
        for m in custom.modules()
        if isinstance(m, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d))
    ]
    out = custom(x)
    for h in hooks:
        h.remove()
    assert len(layouts) == 19 and all(layouts)
    out.sum().backward()
    assert x.grad.is_contiguous(memory_format=torch.channels_last)
    assert all(p.grad.is_contiguous(memory_format=torch.channels_last) for p in custom.parameters() if p.dim() == 4)
    torch.testing.assert_close(out, native(x), atol=1e-5, rtol=1e-4)

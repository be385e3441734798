"""The zoo: exact parameter counts, torchvision equivalence, both backends, input checks, training."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

import cnnzoo
from cnnzoo.models.common import ZooModel

from .helpers import TORCH_NODES, cnnzoo_node, graph_nodes

PARAMS = {
    "lenet5": 61_706,
    "lenet5_1998": 60_850,
    "alexnet": 61_100_840,
    "alexnet_2012": 60_965_224,
    "vgg11": 132_863_336,
    "vgg13": 133_047_848,
    "vgg16": 138_357_544,
    "vgg19": 143_667_240,
    "vgg11_bn": 132_868_840,
    "vgg13_bn": 133_053_736,
    "vgg16_bn": 138_365_992,
    "vgg19_bn": 143_678_248,
    "resnet18": 11_689_512,
    "resnet34": 21_797_672,
    "resnet50": 25_557_032,
    "resnet101": 44_549_160,
    "resnet152": 60_192_808,
    "resnet20": 269_722,
    "resnet32": 464_154,
    "resnet44": 658_586,
    "resnet56": 853_018,
    "resnet110": 1_727_962,
    "googlenet": 13_004_888,
    "googlenet_2014": 13_385_816,
}
MIN_SIZE = {
    "lenet5": 32,
    "lenet5_1998": 32,
    "alexnet": 63,
    "alexnet_2012": 67,
    "vgg11": 32,
    "vgg11_bn": 32,
    "resnet18": 1,
    "resnet50": 1,
    "resnet20": 1,
    "googlenet": 15,
    "googlenet_2014": 15,
}
# one model per family, at a small input size it accepts
FAMILY = {
    "lenet5": 32,
    "lenet5_1998": 32,
    "alexnet": 64,
    "alexnet_2012": 67,
    "vgg11_bn": 32,
    "resnet18": 32,
    "resnet50": 32,
    "resnet20": 32,
    "googlenet": 32,
    "googlenet_2014": 32,
}


def count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def meta_model(name: str, **kwargs) -> nn.Module:
    with torch.device("meta"):
        return cnnzoo.create_model(name, **kwargs)


def test_registry_holds_every_model():
    assert set(cnnzoo.list_models()) == set(PARAMS)
    assert cnnzoo.list_models("vgg1?") == ["vgg11", "vgg13", "vgg16", "vgg19"]
    assert cnnzoo.list_models("resnet1*") == ["resnet101", "resnet110", "resnet152", "resnet18"]


@pytest.mark.parametrize("name", sorted(PARAMS))
def test_parameter_counts_are_exact(name):
    assert count(meta_model(name)) == PARAMS[name]


def test_googlenet_without_aux_heads():
    assert count(meta_model("googlenet", aux_logits=False)) == 6_624_904


def test_lenet5_1998_layers_match_the_paper():
    model = meta_model("lenet5_1998")
    per_layer = {name: count(getattr(model, name)) for name in ("c1", "s2", "c3", "s4", "c5", "f6", "output")}
    assert per_layer == {"c1": 156, "s2": 12, "c3": 1_516, "s4": 32, "c5": 48_120, "f6": 10_164, "output": 850}
    seen = {}
    for size, conv in zip(model.c3.sizes, model.c3.convs):
        seen[size] = conv.out_channels
    assert seen == {3: 6, 4: 9, 6: 1}  # 6 maps see 3 inputs, 9 see 4, 1 sees all 6


def test_lenet5_1998_partial_connections_are_real():
    """A C3 map's output must not change when an S2 map outside its table entry changes."""
    torch.manual_seed(0)
    c3 = cnnzoo.create_model("lenet5_1998").c3
    x = torch.randn(1, 6, 14, 14)
    for j, inputs in enumerate(c3.table):
        outside = [i for i in range(6) if i not in inputs]
        y = x.clone()
        y[:, outside] += 1.0
        torch.testing.assert_close(c3(y)[:, j], c3(x)[:, j])
        if len(inputs) < 6:
            assert not torch.allclose(c3(x + 1.0)[:, j], c3(x)[:, j])


def test_num_classes_and_in_channels():
    for name in FAMILY:
        model = meta_model(name, num_classes=7, in_channels=1)
        last = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
        assert last.out_features == 7
        first = next(m for m in model.modules() if hasattr(m, "in_channels"))
        assert first.in_channels == 1


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: cnnzoo.create_model("resnet19"), r"unknown model 'resnet19'; closest: .*resnet18"),
        (lambda: cnnzoo.create_model("vgg16", backend="cudnn"), r"unknown backend 'cudnn'"),
        (lambda: cnnzoo.create_model("vgg16", num_classes=0), r"num_classes must be a positive int"),
        (lambda: cnnzoo.create_model("vgg16", in_channels=2.5), r"in_channels must be a positive int"),
        (lambda: cnnzoo.create_model("lenet5", activation="gelu"), r"activation must be one of"),
    ],
)
def test_bad_arguments(call, match):
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.parametrize("name", sorted(MIN_SIZE))
def test_minimum_input_size_is_checked_and_exact(name, monkeypatch):
    size = MIN_SIZE[name]
    model = cnnzoo.create_model(name, backend="torch").eval()
    channels = model.in_channels
    with torch.no_grad():
        assert model(torch.randn(1, channels, size, size)).shape[0] == 1
        if size > 1:
            with pytest.raises(ValueError, match=rf"at least {size}x{size} pixels, got {size - 1}x{size}"):
                model(torch.randn(1, channels, size - 1, size))
            monkeypatch.setattr(ZooModel, "check_input", lambda self, x: None)
            with pytest.raises((ValueError, RuntimeError)):  # without the check, a layer fails: the bound is tight
                model(torch.randn(1, channels, size - 1, size - 1))


@pytest.mark.parametrize("name", ["lenet5", "lenet5_1998"])
def test_maximum_input_size_is_checked_and_exact(name, monkeypatch):
    model = cnnzoo.create_model(name, backend="torch").eval()
    with torch.no_grad():
        assert model(torch.randn(1, 1, 35, 35)).shape == (1, 10)
        with pytest.raises(ValueError, match=r"at most 35x35 pixels .*got 36x35"):
            model(torch.randn(1, 1, 36, 35))
        monkeypatch.setattr(ZooModel, "check_input", lambda self, x: None)
        with pytest.raises(RuntimeError):  # without the check, the fully connected layer fails: the bound is tight
            model(torch.randn(1, 1, 36, 36))


def test_input_shape_errors():
    model = meta_model("resnet20")
    with pytest.raises(ValueError, match=r"built for 3 input channels, got input of size \[2, 1, 32, 32\]"):
        model(torch.randn(2, 1, 32, 32, device="meta"))
    with pytest.raises(ValueError, match=r"batch of images \(N, C, H, W\)"):
        model(torch.randn(3, 32, 32, device="meta"))


TORCHVISION = [
    "alexnet",
    "vgg11",
    "vgg11_bn",
    "vgg13",
    "vgg13_bn",
    "vgg16",
    "vgg16_bn",
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "googlenet",
]
TORCHVISION_SLOW = ["vgg19", "vgg19_bn", "resnet152"]


def randomize_batchnorm(model: nn.Module, gen: torch.Generator) -> None:
    """Give every BN layer non-trivial statistics and affine parameters, so eval mode tests them."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=gen) * 0.1)


@pytest.mark.parametrize("name", TORCHVISION + [pytest.param(n, marks=pytest.mark.slow) for n in TORCHVISION_SLOW])
def test_torchvision_weights_load_and_give_the_same_outputs(name):
    torch.manual_seed(0)
    kwargs = {"init_weights": True} if name == "googlenet" else {}
    reference = getattr(torchvision.models, name)(weights=None, **kwargs).eval()
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        randomize_batchnorm(reference, gen)
    ours = meta_model(name)
    ours.load_state_dict(reference.state_dict(), strict=True, assign=True)
    # float64, so that a hundred layers of rounding cannot hide (or fake) a difference in architecture
    ours.double().eval()
    reference.double()
    size = 64 if name == "alexnet" else 32
    x = torch.randn(2, 3, size, size, generator=gen, dtype=torch.float64)
    with torch.no_grad():
        expected, got = reference(x), ours(x)
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)
    assert set(ours.state_dict()) == set(reference.state_dict())


@pytest.mark.parametrize("name", sorted(FAMILY))
def test_backends_agree_and_custom_graph_has_no_torch_conv_or_pool(name):
    torch.manual_seed(0)
    custom = cnnzoo.create_model(name, num_classes=5).double().eval()
    native = cnnzoo.create_model(name, num_classes=5, backend="torch").double().eval()
    native.load_state_dict(custom.state_dict(), strict=True)
    size = FAMILY[name]
    x = torch.randn(2, custom.in_channels, size, size, dtype=torch.float64)
    out_custom, out_native = custom(x), native(x)
    torch.testing.assert_close(out_custom, out_native, atol=1e-9, rtol=1e-9)
    names = graph_nodes(out_custom)
    assert not [n for n in names if TORCH_NODES.search(n)], names
    assert cnnzoo_node(names, "conv2d")
    assert [n for n in graph_nodes(out_native) if TORCH_NODES.search(n)]
    out_custom.square().sum().backward()
    out_native.square().sum().backward()
    for (key, p), q in zip(custom.named_parameters(), native.parameters()):
        torch.testing.assert_close(p.grad, q.grad, atol=1e-8, rtol=1e-7, msg=lambda m, key=key: f"{key}: {m}")


def test_googlenet_training_outputs():
    model = cnnzoo.create_model("googlenet", num_classes=4)
    out = model(torch.randn(2, 3, 32, 32))
    assert isinstance(out, tuple) and out._fields == ("logits", "aux_logits2", "aux_logits1")
    assert all(t.shape == (2, 4) for t in out)
    assert model.eval()(torch.randn(2, 3, 32, 32)).shape == (2, 4)
    plain = cnnzoo.create_model("googlenet", num_classes=4, aux_logits=False)
    assert plain(torch.randn(2, 3, 32, 32)).shape == (2, 4)
    assert plain.aux1 is None and not any(k.startswith("aux") for k in plain.state_dict())


def test_loss_and_logits_is_the_models_own():
    """Training asks the model for its loss: the plain one for the zoo, plus 0.3 of each auxiliary head's
    for GoogLeNet in training; the main head's loss and logits are what is reported."""
    criterion, y = nn.CrossEntropyLoss(), torch.tensor([0, 3])
    lenet = cnnzoo.create_model("lenet5", num_classes=4)
    out = lenet(torch.randn(2, 1, 32, 32))
    loss, main_loss, logits = lenet.loss_and_logits(criterion, out, y)
    assert loss is main_loss and logits is out and torch.equal(loss, criterion(out, y))
    model = cnnzoo.create_model("googlenet", num_classes=4)
    out = model(torch.randn(2, 3, 32, 32))
    loss, main_loss, logits = model.loss_and_logits(criterion, out, y)
    assert logits is out.logits and torch.equal(main_loss, criterion(out.logits, y))
    torch.testing.assert_close(loss, main_loss + 0.3 * (criterion(out.aux_logits2, y) + criterion(out.aux_logits1, y)))
    out = model.eval()(torch.randn(2, 3, 32, 32))
    assert model.loss_and_logits(criterion, out, y)[2] is out


def test_googlenet_2014_has_true_5x5_branches():
    model = meta_model("googlenet_2014")
    assert model.inception3a.branch3[1].conv.kernel_size == (5, 5)
    assert meta_model("googlenet").inception3a.branch3[1].conv.kernel_size == (3, 3)


@pytest.mark.parametrize("name", sorted(FAMILY))
def test_a_few_steps_lower_the_loss(name):
    torch.manual_seed(0)
    model = cnnzoo.create_model(name, num_classes=3)
    size = FAMILY[name]
    x = torch.randn(8, model.in_channels, size, size)
    y = torch.arange(8) % 3
    if name == "alexnet_2012":
        # the paper's init (biases of 1 feeding 4096-wide layers) makes the output layer's gradient
        # large on random data: small plain steps
        optimizer = torch.optim.SGD(model.parameters(), lr=1e-4)
    else:
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    model.train()
    for m in model.modules():  # dropout would make single-batch losses noisy
        if isinstance(m, nn.Dropout):
            m.p = 0.0

    def loss_fn():
        out = model(x)
        logits = out[0] if isinstance(out, tuple) else out
        return nn.functional.cross_entropy(logits, y)

    first = loss_fn()
    for _ in range(6):
        optimizer.zero_grad()
        loss = loss_fn()
        loss.backward()
        optimizer.step()
    assert loss_fn().item() < first.item()


@pytest.mark.parametrize("name", sorted(PARAMS))
def test_every_model_runs_our_ops_on_the_meta_device(name):
    """Shapes (and the autograd graph) propagate without arithmetic; no torch conv/pool node appears."""
    with torch.device("meta"):
        model = cnnzoo.create_model(name)
        size = max(model.min_size, 32)
        x = torch.randn(2, model.in_channels, size, size, requires_grad=True)
        out = model(x)
    logits = out[0] if isinstance(out, tuple) else out
    ten_classes = name.startswith("lenet") or name in ("resnet20", "resnet32", "resnet44", "resnet56", "resnet110")
    assert logits.shape == (2, 10 if ten_classes else 1000)
    names = graph_nodes(logits)
    assert cnnzoo_node(names, "conv2d")
    assert not [n for n in names if TORCH_NODES.search(n)], names
    logits.sum().backward()
    assert x.grad.shape == x.shape


def test_the_docs_zoo_table_agrees_with_each_models_registration():
    """The zoo table (docs/zoo.md) states each model's natural and smallest input; the registrations
    (cnnzoo.models.registry.model_info) are where they live, and the table must say the same."""
    from pathlib import Path

    from cnnzoo.models.registry import model_info

    page = (Path(__file__).resolve().parents[1] / "docs" / "zoo.md").read_text()
    table = page.split("| name | architecture | parameters | natural input | smallest input |")[1].split("\n\n")[0]
    listed = set()
    for row in table.strip().splitlines()[1:]:
        cells = [c.strip() for c in row.strip("|").split("|")]
        names = [n for n in cells[0].split("`") if n.strip() and n.strip() != "..."]
        if cells[0].endswith("... `vgg19_bn`"):  # "`vgg11_bn` ... `vgg19_bn`"
            names = ["vgg11_bn", "vgg13_bn", "vgg16_bn", "vgg19_bn"]
        for name in names:
            info = model_info(name)
            channels = meta_model(name).in_channels
            assert cells[3] == f"{channels}x{info.input_size}x{info.input_size}", name
            assert cells[4] == str(info.min_size), name
            listed.add(name)
    assert listed == set(cnnzoo.list_models())

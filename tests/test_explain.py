"""python -m cnnzoo.explain: the page's data (exact numbers that reproduce the model, bounded size), its
errors, and the page itself in headless Chromium: clicks on units of every layer kind show arithmetic
that adds up to the model's own values, the receptive-field box has the report's size, no console
errors, and the screenshot is not blank. Locally connected, tiled and true-convolution layers: a
clicked unit's kernel is the one the textbook's indexing names."""

from __future__ import annotations

import base64
import dataclasses
import functools
import io
import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from cnnzoo import explain as ex
from cnnzoo.config import build_config
from cnnzoo.data import open_dataset
from cnnzoo.models import create_model
from cnnzoo.nn import Convolve2d
from cnnzoo.report import summarize

from .helpers import torchvision_weights_file

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
HOW = (
    "the page tests need headless Chromium and Playwright: `apt-get install chromium` (Debian) and "
    "`pip install -e '.[dev]'`"
)


def page_data(html: str) -> dict:
    payload = re.search(r'<script id="page-data" type="application/json">(.*?)</script>', html, re.S).group(1)
    return json.loads(payload)


def build(argv: list[str]) -> tuple[ex.Subject, ex.Input, str, dict]:
    args = ex.parse_args(argv)
    subject = ex.load_subject(args)
    image = ex.load_input(subject, args)
    html, data = ex.explain(subject, image, args.channels)
    return subject, image, html, data


def floats(b64: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(b64), dtype="<f4").copy()


# ---------------------------------------------------------------------------------------------------
# The data, without a browser


def test_exact_numbers_reproduce_each_convolution(lenet_run):
    """From the embedded float32 input window and weights alone, a unit's value is the model's: the
    arithmetic the page does, done here in numpy, for every kept unit of LeNet-5's two convolutions."""
    subject, image, html, data = build(["--resume", str(lenet_run / "best.pt"), "--index", "5"])
    assert page_data(html) == json.loads(json.dumps(data))  # the page holds exactly the data
    model, x = subject.model, image.x
    inputs = {}
    hooks = [model.features[i].register_forward_hook(lambda m, a, o, i=i: inputs.__setitem__(i, a[0])) for i in (0, 3)]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    for index in (0, 3):
        layer = data["layers"][f"features.{index}"]
        conv, e = model.features[index], layer["exact"]
        assert e["full"] and layer["post"] == ["Tanh"]  # a small model keeps every unit exactly
        y0, y1, x0, x1 = e["crop"]
        c_in = conv.in_channels
        window = floats(e["input"]).reshape(c_in, y1 - y0, x1 - x0)
        weights = floats(e["weights"]).reshape(len(e["channels"]), c_in, 5, 5)
        z = torch.from_numpy(
            np.einsum("chw,ochw->o", window[:, :5, :5].astype(np.float64), weights.astype(np.float64))
            + np.array(e["bias"])
        )
        native = F.conv2d(inputs[index], conv.weight, conv.bias)[0, e["channels"], 0, 0].double()
        torch.testing.assert_close(z, native, atol=1e-5, rtol=1e-5)
        stored = floats(e["output"]).reshape(len(e["channels"]), *layer["shape"][1:])[:, 0, 0]
        torch.testing.assert_close(torch.from_numpy(stored).double(), native, atol=1e-5, rtol=1e-5)
    assert data["curves"] and data["curves"][-1]["epoch"] == 6  # the run's metrics.csv
    labels = open_dataset(build_config({}).data).val.labels
    assert (data["input"]["caption"], data["input"]["label"]) == ("digits validation image 5", str(int(labels[5])))
    assert [p for _, p in data["predictions"]] == sorted((p for _, p in data["predictions"]), reverse=True)


def test_structure_draws_blocks_as_blocks():
    _, _, _, resnet = build(["--model", "resnet20"])
    blocks = [n for n in resnet["structure"] if n["type"] == "residual"]
    assert len(blocks) == 9 and blocks[3]["name"] == "layer2.0"
    assert [n["id"] for n in blocks[3]["main"]] == ["layer2.0.conv1", "layer2.0.conv2"]
    assert blocks[3]["shortcut"] == [] and "zero channels" in blocks[3]["shortcut_label"]
    assert resnet["layers"]["layer2.0.conv1"]["post"] == ["BatchNorm2d", "ReLU"]
    assert resnet["layers"]["layer2.0.conv2"]["post"] == ["BatchNorm2d"]  # the ReLU comes after the sum
    assert resnet["layers"]["layer2.0"]["kind"] == "add"


@pytest.mark.parametrize("name", ["alexnet", "vgg16", "resnet50"])
def test_big_models_give_bounded_pages(name):
    """224x224 ImageNet models: a page under 20 MB, with exact numbers for part of every layer."""
    _, _, html, data = build(["--model", name])
    assert len(html.encode()) < 20 * 2**20
    kept = sum(layer.get("exact_floats", 0) for layer in data["layers"].values())
    assert kept <= 1.05 * ex.EXACT_FLOATS
    assert all("exact" in layer for layer in data["layers"].values() if layer["kind"] in ("conv", "maxpool"))
    if name == "resnet50":
        assert "1x1 convolution" in next(n for n in data["structure"] if n["type"] == "residual")["shortcut_label"]
        # the block's one ReLU module runs three times; each run is followed to its convolution
        assert [data["layers"][f"layer2.0.conv{i}"]["post"] for i in (1, 2, 3)] == [["BatchNorm2d", "ReLU"]] * 2 + [
            ["BatchNorm2d"]
        ]


def test_embedded_json_cannot_end_the_script():
    html = ex.render({"title": "</script><script>alert(1)</script>"})
    assert "<script>alert(1)" not in html
    assert page_data(html)["title"] == "</script><script>alert(1)</script>"


def test_page_for_an_image_file(tmp_path):
    path = tmp_path / "cat.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (50, 70, 3), dtype=np.uint8)).save(path)
    out = tmp_path / "page.html"
    assert ex.main(["--model", "resnet20", "--image", str(path), "--output", str(out)]) == 0
    data = page_data(out.read_text())
    assert data["input"]["caption"] == "cat.png" and (data["input"]["height"], data["input"]["width"]) == (32, 32)
    assert data["filters"]["count"] == 16 and data["filters"]["mode"] == "rgb"


def test_torchvision_weights_give_imagenet_class_names(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    torchvision_weights_file(tmp_path / "torch", "resnet18", "IMAGENET1K_V1")
    path = tmp_path / "dog.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (300, 260, 3), dtype=np.uint8)).save(path)
    subject, image, _, data = build(["--model", "resnet18", "--weights", "DEFAULT", "--image", str(path)])
    import torchvision

    categories = torchvision.models.ResNet18_Weights.IMAGENET1K_V1.meta["categories"]
    with torch.no_grad():
        top = subject.model(image.x).softmax(1)[0].topk(5)
    assert [name for name, _ in data["predictions"]] == [categories[i] for i in top.indices.tolist()]
    assert (data["input"]["height"], data["input"]["width"]) == (224, 224)
    assert data["source"] == "resnet18, weights DEFAULT"


def test_page_is_written_beside_the_checkpoint(lenet_run, tmp_path, capsys):
    for name in ("best.pt", "metrics.csv"):
        shutil.copy(lenet_run / name, tmp_path / name)
    assert ex.main(["--resume", str(tmp_path / "best.pt"), "--channels", "2"]) == 0
    assert "explain-lenet5.html" in capsys.readouterr().out
    data = page_data((tmp_path / "explain-lenet5.html").read_text())
    assert data["per_page"] == 2 and data["layers"]["features.3"]["maps"][0]["count"] == 2
    assert data["layers"]["features.3"]["maps"][1]["count"] == 14  # the other pages


def test_bad_input_is_a_clear_error(lenet_run, tmp_path, capsys):
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    cases = [
        (["--model", "lenet5", "--image", str(tmp_path / "missing.png")], "not found"),
        (["--model", "lenet5", "--image", str(text)], "cannot read image"),
        (["--resume", str(lenet_run / "best.pt"), "--model", "resnet20"], "is of model 'lenet5', not 'resnet20'"),
        (["--model", "resnet20", "--weights", str(lenet_run / "best.pt")], "resnet20"),
        (["--resume", str(lenet_run / "best.pt"), "--index", "100000"], "out of range"),
        (["--resume", str(lenet_run / "best.pt"), "--index", "-1"], "out of range"),
        (["--model", "lenet6"], "unknown model 'lenet6'"),
        ([], "give --resume"),
        (["--resume", str(tmp_path / "none.pt")], "none.pt"),
        (["--model", "lenet5", "--output", str(tmp_path)], "is a directory"),
    ]
    for argv, message in cases:
        assert ex.main(argv + (["--output", str(tmp_path / "x.html")] if "--output" not in argv else [])) == 2, argv
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, (argv, err)
    assert not (tmp_path / "x.html").exists()


# ---------------------------------------------------------------------------------------------------
# Kernels of their own: LeNet-5 with C1 and C3 locally connected or tiled, or C1 a true convolution

CONNECTIVITIES = ("conv", "tiled", "local", "convolve")


@functools.cache
def connected_lenet(connectivity: str) -> tuple[ex.Subject, ex.Input, str, dict]:
    """A freshly initialised LeNet-5 whose C1 and C3 are ``connectivity`` (``convolve``: C1 a true
    convolution, C3 a convolution), its page for digits validation image 3."""
    args = ex.parse_args(["--model", "lenet5", "--index", "3"])
    subject = ex.load_subject(args)
    torch.manual_seed(0)
    model = create_model("lenet5", connectivity="conv" if connectivity == "convolve" else connectivity)
    if connectivity == "convolve":
        model.features[0] = Convolve2d(1, 6, 5)
    subject = dataclasses.replace(subject, model=model.eval())
    image = ex.load_input(subject, args)
    return subject, image, *ex.explain(subject, image, args.channels)


def textbook_kernel(conv: torch.nn.Module, o: int, y: int, x: int) -> tuple[torch.Tensor, float]:
    """The kernels (C_in, kh, kw) and bias of unit (y, x) of channel ``o``, indexed as the Deep Learning
    book's section 9.5 writes them, straight from the parameters (not through ``kernel_at``)."""
    name, weight, bias = type(conv).__name__, conv.weight.detach(), conv.bias.detach()
    if name == "LocallyConnected2d":
        return weight[y, x, o], float(bias[y, x, o])
    if name == "TiledConv2d":
        t_h, t_w = conv.tile_size
        return weight[y % t_h, x % t_w, o], float(bias[o])
    if name == "Convolve2d":
        return weight[o].flip(-2, -1), float(bias[o])
    return weight[o], float(bias[o])


def page_kernels(layer: dict):
    """The kernels and bias the page's data holds for unit (y, x) of channel o, as a function of (o, y,
    x): kernel set ((y - y0) mod A, (x - x0) mod B) of the exact part, as docs/explainer.md says."""
    e, (c_in, kh, kw) = layer["exact"], (layer["geometry"]["in_shape"][0], *layer["geometry"]["kernel_size"])
    (a, b), n, (y0, _, x0, _) = e["kernel_sets"], len(e["channels"]), e["tile"]
    weights = floats(e["weights"]).reshape(a, b, n, c_in, kh, kw)
    bias = np.array(e["bias"]).reshape(a, b, n)

    def unit(o: int, y: int, x: int) -> tuple[np.ndarray, float]:
        i, j, pos = (y - y0) % a, (x - x0) % b, e["channels"].index(o)
        return weights[i, j, pos], bias[i, j, pos]

    return unit


def kept_units(layer: dict):
    e = layer["exact"]
    y0, y1, x0, x1 = e["tile"]
    return [(o, y, x) for o in e["channels"] for y in range(y0, y1) for x in range(x0, x1)]


@pytest.mark.parametrize("connectivity", CONNECTIVITIES)
def test_every_kept_unit_carries_its_own_kernel(connectivity):
    """The page builds for each connectivity; C1 and C3 are convolution rows (geometry, receptive
    field, the report's kernel column) that say how their units share kernels; and every kept unit's
    kernels and bias in the data are the textbook's, and with the kept input window they give the
    model's own output."""
    subject, _, html, data = connected_lenet(connectivity)
    assert page_data(html) == json.loads(json.dumps(data))
    modules = dict(subject.model.named_modules())
    c3 = "conv" if connectivity == "convolve" else connectivity
    for name, kind, field in (("features.0", connectivity, [5, 5]), ("features.3", c3, [14, 14])):
        layer, conv = data["layers"][name], modules[name]
        assert (layer["kind"], layer["module"], layer["sharing"]["kind"]) == ("conv", type(conv).__name__, kind)
        assert layer["geometry"]["kernel_size"] == [5, 5] and layer["receptive_field"] == field
        assert layer["kernel"].startswith("5x5/1 p0")
        h, w = layer["shape"][1:]
        period, e = {"local": [h, w], "tiled": [2, 2]}.get(kind, [1, 1]), layer["exact"]
        assert layer["sharing"]["period"] == period and e["full"] and e["kernel_sets"] == period
        c_in, (y0, y1, x0, x1) = conv.in_channels, e["crop"]
        window = floats(e["input"]).reshape(c_in, y1 - y0, x1 - x0)
        output = floats(e["output"]).reshape(len(e["channels"]), h, w)
        page_kernel = page_kernels(layer)
        for o, y, x in kept_units(layer):
            kernel, bias = page_kernel(o, y, x)
            want, want_bias = textbook_kernel(conv, o, y, x)
            assert np.array_equal(kernel, want.numpy()) and bias == want_bias, (name, o, y, x)
            z = np.einsum("chw,chw->", window[:, y : y + 5, x : x + 5].astype(np.float64), kernel) + bias
            assert abs(z - output[e["channels"].index(o), y, x]) < 1e-4, (name, o, y, x)
    if connectivity != "conv":  # the filters picture names the kernels it draws
        assert data["filters"]["name"] == "features.0" and data["filters"]["note"]


def test_a_locally_connected_layer_keeps_the_kernels_of_its_kept_units_only(monkeypatch):
    """Over the budget, a locally connected layer keeps a tile of units, and the kernels of those
    units, not the layer's whole weight: the exact part's cost counts every kept unit's kernels."""
    monkeypatch.setattr(ex, "EXACT_FLOATS", 20_000)
    subject, image, _, _ = connected_lenet("local")
    data = ex.build_page(subject, image, 8).to_json()
    conv = subject.model.features[0]
    layer = data["layers"]["features.0"]
    e = layer["exact"]
    y0, y1, x0, x1 = e["tile"]
    assert not e["full"] and (y1 - y0, x1 - x0) == (8, 8) and e["kernel_sets"] == [8, 8]
    assert len(base64.b64decode(e["weights"])) == 4 * len(e["channels"]) * 64 * 25
    assert sum(lay.get("exact_floats", 0) for lay in data["layers"].values()) <= 5 * 20_000
    page_kernel = page_kernels(layer)
    for o, y, x in kept_units(layer):
        assert np.array_equal(page_kernel(o, y, x)[0], conv.weight[y, x, o].detach().numpy())


# ---------------------------------------------------------------------------------------------------
# The page, in headless Chromium


@pytest.fixture(scope="module")
def browser():
    required = os.environ.get("CNNZOO_REQUIRE_BROWSER") == "1"  # .ci/run: a missing browser fails, not skips
    try:
        from playwright import sync_api
    except ImportError:
        sync_api = None
    if CHROMIUM is None or sync_api is None:
        (pytest.fail if required else pytest.skip)(f"no {'chromium on PATH' if sync_api else 'playwright'}: {HOW}")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
        )
        yield b
        b.close()


class Page:
    """One page open in Chromium, its console errors collected."""

    def __init__(self, browser, path: Path):
        self.page = browser.new_page(viewport={"width": 1400, "height": 1000})
        self.errors: list[str] = []
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type in ("error", "warning") else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.goto(path.as_uri())
        self.page.wait_for_selector("body[data-ready='1']", timeout=20_000)

    def layer(self, name: str) -> dict:
        return self.page.evaluate(f"DATA.layers[{json.dumps(name)}]")

    def kept_unit(self, name: str) -> tuple[int, int, int]:
        """A unit whose exact numbers the page keeps: the middle of the kept tile of the first kept channel."""
        e = self.layer(name)["exact"]
        y0, y1, x0, x1 = e["tile"]
        return e["channels"][0], (y0 + y1 - 1) // 2, (x0 + x1 - 1) // 2

    def _click_at(self, locator, h: int, w: int, y: int, x: int) -> None:
        locator.scroll_into_view_if_needed()
        box = locator.bounding_box()
        self.page.mouse.click(box["x"] + (x + 0.5) / w * box["width"], box["y"] + (y + 0.5) / h * box["height"])

    def click(self, name: str, channel: int, y: int, x: int) -> None:
        """Real mouse clicks: on pixel (y, x) of the channel's heatmap in the overview, then, where that
        heatmap is downsampled, on the full-resolution map of the detail panel."""
        h, w = self.layer(name)["shape"][1:]
        self._click_at(
            self.page.locator(f'canvas.fmap[data-layer="{name}"][data-channel="{channel}"]').first, h, w, y, x
        )
        body = self.page.locator("#detail-body")
        if (body.get_attribute("data-y"), body.get_attribute("data-x")) != (str(y), str(x)):
            self._click_at(self.page.locator("#nav-canvas"), h, w, y, x)
        assert (
            body.get_attribute("data-layer"),
            body.get_attribute("data-channel"),
            body.get_attribute("data-y"),
            body.get_attribute("data-x"),
        ) == (name, str(channel), str(y), str(x))

    def value(self, element_id: str) -> float:
        """The number the page shows in an element, checked against the full-precision one it holds."""
        node = self.page.locator(f"#{element_id}")
        shown, held = float(node.inner_text()), float(node.get_attribute("data-value"))
        assert abs(shown - held) <= 1e-6 * max(1.0, abs(held))
        return shown


def write_page(tmp_path: Path, argv: list[str]) -> tuple[Path, ex.Subject, ex.Input]:
    args = ex.parse_args(argv)
    subject = ex.load_subject(args)
    image = ex.load_input(subject, args)
    path = tmp_path / f"{subject.name}.html"
    path.write_text(ex.explain(subject, image, args.channels)[0])
    return path, subject, image


def module_io(model, x, names):
    got = {}
    modules = dict(model.named_modules())
    hooks = [
        modules[n].register_forward_hook(lambda m, a, o, n=n: got.__setitem__(n, (a[0].clone(), o.clone())))
        for n in names
    ]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    return got, modules


def conv_value(conv, inp, c, y, x) -> float:
    return F.conv2d(inp, conv.weight, conv.bias, conv.stride, conv.padding, conv.dilation, conv.groups)[0, c, y, x]


def test_lenet_page_in_chromium(browser, lenet_run, tmp_path):
    path, subject, image = write_page(tmp_path, ["--resume", str(lenet_run / "best.pt"), "--index", "7"])
    page = Page(browser, path)
    model, x = subject.model, image.x
    got, modules = module_io(model, x, ["features.0", "features.3", "features.2"])
    # a convolution: C3, 6 input channels, tanh
    c = page.layer("features.3")["order"][2]  # on the first page of maps
    page.click("features.3", c, 2, 6)
    z = conv_value(modules["features.3"], got["features.3"][0], c, 2, 6)
    assert abs(page.value("calc-total") - z) < 1e-4
    assert abs(page.value("calc-act") - torch.tanh(z)) < 1e-4
    assert page.page.locator("#formula .bad").count() == 0
    assert page.page.locator(".card[data-input-channel]").count() == 4  # the 4 largest of 6 channels drawn
    # the receptive field drawn on the input has the report's size
    rf = {r.name: r for r in summarize(model, [1, 32, 32]).layers}["features.3"]
    box = page.page.locator("#rf-box")
    scale = float(page.page.locator("#input-canvas").get_attribute("data-scale"))
    assert (int(box.get_attribute("data-rf-h")), int(box.get_attribute("data-rf-w"))) == (rf.receptive_field,) * 2
    assert abs(box.bounding_box()["width"] - rf.receptive_field * scale) < 1.0
    assert abs(float(box.get_attribute("data-top")) - (rf.start + 2 * rf.jump - (rf.receptive_field - 1) / 2)) < 1e-9
    # average pooling (S2)
    page.click("features.2", 1, 3, 5)
    assert abs(page.value("calc-total") - F.avg_pool2d(got["features.2"][0], 2)[0, 1, 3, 5]) < 1e-4
    # the first convolution: one input channel; and the step control slides the window one unit on
    page.click("features.0", 0, 27, 26)
    assert abs(page.value("calc-total") - conv_value(modules["features.0"], got["features.0"][0], 0, 27, 26)) < 1e-4
    page.page.click("#step-next")
    assert page.page.locator("#detail-body").get_attribute("data-x") == "27"
    assert abs(page.value("calc-total") - conv_value(modules["features.0"], got["features.0"][0], 0, 27, 27)) < 1e-4
    assert page.page.locator("#curves svg").count() == 2  # training curves from metrics.csv
    shot = Image.open(io.BytesIO(page.page.screenshot()))
    colours = np.asarray(shot.convert("RGB")).reshape(-1, 3)
    assert len(np.unique(colours, axis=0)) > 200 and colours.std() > 20  # not a blank page
    assert page.errors == []


def test_residual_block_page_in_chromium(browser, tmp_path):
    path, subject, image = write_page(tmp_path, ["--model", "resnet20", "--index", "2"])
    page = Page(browser, path)
    got, modules = module_io(subject.model, image.x, ["layer2.0.conv1"])
    c, y, x = page.layer("layer2.0.conv1")["order"][1], 0, 7  # the top row: the window reaches into the padding
    page.click("layer2.0.conv1", c, y, x)
    z = conv_value(modules["layer2.0.conv1"], got["layer2.0.conv1"][0], c, y, x)
    assert abs(page.value("calc-total") - z) < 1e-4
    with torch.no_grad():
        act = torch.relu(modules["layer2.0.bn1"](got["layer2.0.conv1"][1]))[0, c, y, x]
    assert abs(page.value("calc-act") - act) < 1e-4
    assert page.page.locator("#detail-body table.grid td.pad").count() > 0  # the padded zeros are drawn
    assert page.page.locator('[data-block="layer2.0"] .shortcut').count() == 1
    assert page.errors == []


def test_inception_page_in_chromium(browser, tmp_path):
    """GoogLeNet at 224x224: exact numbers only for part of each layer; a unit there adds up, a unit
    elsewhere says it is not kept."""
    path, subject, image = write_page(tmp_path, ["--model", "googlenet"])
    page = Page(browser, path)
    names = ["inception3a.branch2.1.conv", "maxpool1", "inception3a.branch4.0"]
    got, modules = module_io(subject.model, image.x, names)
    assert page.page.locator('[data-block="inception3a"] .branch').count() == 4
    c, y, x = page.kept_unit(names[0])
    page.click(names[0], c, y, x)
    z = conv_value(modules[names[0]], got[names[0]][0], c, y, x)
    assert abs(page.value("calc-total") - z) < 1e-4
    with torch.no_grad():
        act = torch.relu(modules["inception3a.branch2.1.bn"](got[names[0]][1]))[0, c, y, x]
    assert abs(page.value("calc-act") - act) < 1e-4
    for name in names[1:]:  # max pools: 3x3/2 ceil mode, and the branch's 3x3/1 padded
        c, y, x = page.kept_unit(name)
        page.click(name, c, y, x)
        assert abs(page.value("calc-total") - got[name][1][0, c, y, x]) < 1e-4
        assert page.page.locator("#detail-body td.winner").count() == 1
    layer = page.layer("inception4a.branch1.conv")
    if not layer["exact"]["full"]:
        missing = next(ch for ch in layer["order"][:8] if ch not in layer["exact"]["channels"])
        page.click("inception4a.branch1.conv", missing, 0, 0)
        assert page.page.locator("#not-kept").count() == 1
    assert page.errors == []


def unfolded_value(conv: torch.nn.Module, inp: torch.Tensor, o: int, y: int, x: int) -> float:
    """Unit (y, x) of channel ``o`` of a 5x5, stride-1, unpadded layer: its input patch times the
    textbook's kernel, plus the bias."""
    kernel, bias = textbook_kernel(conv, o, y, x)
    patch = F.unfold(inp, 5)[0, :, y * (inp.shape[-1] - 4) + x]
    return float(patch @ kernel.flatten()) + bias


@pytest.mark.parametrize(
    ("connectivity", "name", "unit", "caption", "sharers"),
    [
        (
            "local",
            "features.3",
            (2, 6),
            "Locally connected layer: unit (2, 6) of channel {c} applies a kernel of its own, weight[2, 6, {c}]",
            1,
        ),
        (
            "tiled",
            "features.3",
            (3, 6),
            "Tiled convolution: unit (3, 6) applies kernel set (1, 0) of 2x2, weight[1, 0, {c}]",
            25,
        ),
        ("convolve", "features.0", (27, 26), "True convolution: weight[{c}] flipped in both axes", 784),
    ],
    ids=["local", "tiled", "convolve"],
)
def test_a_click_shows_the_units_own_kernel_in_chromium(browser, tmp_path, connectivity, name, unit, caption, sharers):
    """A click on a unit shows its kernel, one heatmap per input channel, captioned with the layer's
    kind, the position and the kernel set, and the units that share it; the page's sum with that
    kernel is the unit's value computed here from the textbook's indexing."""
    subject, image, html, _ = connected_lenet(connectivity)
    path = tmp_path / f"lenet5-{connectivity}.html"
    path.write_text(html)
    page = Page(browser, path)
    got, modules = module_io(subject.model, image.x, [name])
    conv, layer = modules[name], page.layer(name)
    c, (y, x) = layer["order"][1], unit
    page.click(name, c, y, x)
    panel = page.page.locator("#kernel-panel")
    assert panel.get_attribute("data-kind") == layer["sharing"]["kind"]
    assert page.page.locator("#kernel-caption").inner_text().startswith(caption.format(c=c))
    assert panel.locator("canvas[data-input-channel]").count() == conv.in_channels
    assert int(page.page.locator("#sharing-count").get_attribute("data-count")) == sharers
    assert abs(page.value("calc-total") - unfolded_value(conv, got[name][0], c, y, x)) < 1e-4
    assert page.page.locator("#formula .bad").count() == 0
    if connectivity == "local":  # the next unit: another kernel, and still the model's value
        page.page.click("#step-next")
        assert f"weight[{y}, {x + 1}, {c}]" in page.page.locator("#kernel-caption").inner_text()
        assert abs(page.value("calc-total") - unfolded_value(conv, got[name][0], c, y, x + 1)) < 1e-4
    assert page.errors == []

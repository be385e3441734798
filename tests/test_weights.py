"""Pretrained weights, offline: torchvision's (written where torch.hub's cache keeps them, in a
temporary TORCH_HOME), state_dict files and cnnzoo checkpoints; and the errors when they cannot be had."""

from __future__ import annotations

import pickle
import urllib.error

import pytest
import torch
import torchvision

import cnnzoo
from cnnzoo.models.weights import WeightsError
from cnnzoo.train import main

from .helpers import torchvision_weights_file


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    """An empty TORCH_HOME; any download attempt fails as it would offline."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    return tmp_path / "torch"


def test_torchvision_weights_give_torchvisions_outputs(torch_home):
    path = torchvision_weights_file(torch_home, "resnet18", "IMAGENET1K_V1")
    ours = cnnzoo.create_model("resnet18", weights="DEFAULT").eval()  # DEFAULT is IMAGENET1K_V1 for resnet18
    reference = torchvision.models.resnet18()
    reference.load_state_dict(torch.load(path, weights_only=True))
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(ours(x), reference.eval()(x), rtol=1e-4, atol=1e-4)


def test_googlenet_weights_take_torchvisions_input_transform(torch_home):
    path = torchvision_weights_file(torch_home, "googlenet", init_weights=True)
    ours = cnnzoo.create_model("googlenet", weights="IMAGENET1K_V1").eval()
    assert ours.transform_input  # as torchvision's googlenet(weights=...) sets it
    reference = torchvision.models.googlenet(init_weights=False, transform_input=True)
    reference.load_state_dict(torch.load(path, weights_only=True))
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(ours(x), reference.eval()(x), rtol=1e-4, atol=1e-4)


def test_other_class_count_replaces_the_classifier_and_says_so(torch_home):
    path = torchvision_weights_file(torch_home, "vgg11")
    with pytest.warns(
        UserWarning,
        match=r"trained for 1000 classes; the classifier \(classifier\.6\.weight, "
        r"classifier\.6\.bias\) is newly initialised for num_classes=7",
    ):
        model = cnnzoo.create_model("vgg11", num_classes=7, weights="DEFAULT", backend="torch")
    state = torch.load(path, weights_only=True)
    for key, value in model.state_dict().items():
        if key.startswith("classifier.6"):
            assert value.shape[0] == 7
        else:
            assert torch.equal(value, state[key]), key


def test_absent_weights_offline_are_a_clear_error(torch_home):
    with pytest.raises(
        WeightsError,
        match=r"torchvision's ResNet18_Weights\.IMAGENET1K_V1 are not in the cache "
        r"\('.*resnet18-f37072fd\.pth'\) and could not be downloaded",
    ):
        cnnzoo.create_model("resnet18", weights="DEFAULT")


def test_a_model_without_a_torchvision_twin_is_a_clear_error(torch_home):
    with pytest.raises(WeightsError, match="resnet20 has no torchvision twin"):
        cnnzoo.create_model("resnet20", weights="DEFAULT")
    with pytest.raises(
        WeightsError, match="unknown weights 'IMAGENET9K' for resnet18; torchvision has DEFAULT, IMAGENET1K_V1"
    ):
        cnnzoo.create_model("resnet18", weights="IMAGENET9K")


def test_state_dict_files_and_checkpoints(tmp_path):
    torch.manual_seed(0)
    source = cnnzoo.create_model("lenet5")
    torch.save(source.state_dict(), tmp_path / "lenet.pt")
    loaded = cnnzoo.create_model("lenet5", weights=str(tmp_path / "lenet.pt"), backend="torch")
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), source.state_dict().values()))

    run = tmp_path / "run"
    assert (
        main(
            [
                "--config",
                "configs/lenet5_digits.yaml",
                "--output-dir",
                str(run),
                "--quiet",
                "--set",
                "train.epochs=1",
                "--set",
                "sched.warmup_epochs=0",
                "--set",
                "data.limit_train=64",
                "--set",
                "data.limit_val=32",
            ]
        )
        == 0
    )
    saved = torch.load(run / "last.pt", weights_only=True)["model"]
    from_checkpoint = cnnzoo.create_model("lenet5", in_channels=1, weights=str(run / "best.pt"))
    assert all(torch.equal(from_checkpoint.state_dict()[k], v) for k, v in saved.items())


def test_bad_weights_files_are_clear_errors(tmp_path):
    with pytest.raises(WeightsError, match="weights file '.*missing.pt' not found"):
        cnnzoo.create_model("lenet5", weights=str(tmp_path / "missing.pt"))
    torch.save([torch.zeros(1)], tmp_path / "list.pt")
    with pytest.raises(WeightsError, match="is neither a state_dict"):
        cnnzoo.create_model("lenet5", weights=str(tmp_path / "list.pt"))

    class Hostile:
        def __reduce__(self):
            return (print, ("pwned",))

    (tmp_path / "hostile.pt").write_bytes(pickle.dumps({"w": Hostile()}))
    with pytest.raises(WeightsError, match="refusing to load|not a readable weights file"):
        cnnzoo.create_model("lenet5", weights=str(tmp_path / "hostile.pt"))
    torch.save(cnnzoo.create_model("resnet20").state_dict(), tmp_path / "resnet20.pt")
    with pytest.raises(WeightsError, match="does not fit the model: missing keys"):
        cnnzoo.create_model("lenet5", weights=str(tmp_path / "resnet20.pt"))


def test_training_from_weights_and_its_errors(tmp_path, torch_home, capsys):
    torchvision_weights_file(torch_home, "resnet18")
    common = [
        "--config",
        "configs/resnet18_finetune_imagefolder.yaml",
        "--quiet",
        "--set",
        "data.name=fake",
        "--set",
        "data.limit_train=8",
        "--set",
        "data.limit_val=4",
        "--set",
        "data.batch_size=4",
        "--set",
        "train.epochs=1",
        "--set",
        "sched.warmup_epochs=0",
        "--set",
        "data.num_workers=0",
        "--set",
        "data.image_size=32",
    ]
    with pytest.warns(UserWarning, match="classifier .fc.weight, fc.bias. is newly initialised for num_classes=10"):
        assert main([*common, "--output-dir", str(tmp_path / "ok")]) == 0
    assert main([*common, "--output-dir", str(tmp_path / "bad"), "--set", "model.weights=nowhere.pt"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: weights file 'nowhere.pt' not found") and "Traceback" not in err

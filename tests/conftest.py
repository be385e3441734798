"""Fixtures shared by the test modules."""

import os
import random
import zlib

import numpy as np
import pytest
import torch

# Without a GPU, the Triton kernels run in Triton's CPU interpreter (tests/test_ops_triton.py). It must
# be switched on before Triton is first imported (which importing cnnzoo.train does, through torch's
# compiler): Triton's own library functions are decorated then.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
else:  # the tests hold float32 to 1e-4: full precision on both sides (TF32 is timed by make gpu-check)
    try:
        torch.backends.cudnn.conv.fp32_precision = torch.backends.cuda.matmul.fp32_precision = "ieee"
    except AttributeError:  # a torch before the fp32_precision settings
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False

from cnnzoo.ops import compiled  # noqa: E402  (after the interpreter's switch)
from cnnzoo.train import main as train  # noqa: E402

from .helpers import DEVICES


@pytest.fixture(autouse=True)
def _seeded(request):
    """Every test starts from its own fixed random state (torch's, Python's and numpy's global
    generators, seeded from the test's id), whatever ran before it: the random tensors and the
    default parameter initialisations a test draws are the same in the whole suite as when the test
    runs alone, so what fails in one fails in the other."""
    seed = zlib.crc32(request.node.nodeid.encode())
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed)


@pytest.fixture(params=DEVICES)
def device(request):
    return request.param


@pytest.fixture(params=["reference", "compiled"])
def kernels(request):
    """Runs a test once with each implementation of the ops: the reference (Python) kernels and the
    compiled (C++) ones, the latter skipped where they cannot be built (no compiler)."""
    if request.param == "compiled":
        try:
            with compiled.use("compiled"):
                compiled.library()
        except compiled.KernelsError as e:
            pytest.skip(str(e))
    with compiled.use(request.param):
        yield request.param


@pytest.fixture(scope="session")
def lenet_run(tmp_path_factory):
    """A LeNet-5 run on the digits (the default config, 6 epochs: about 95% right), for the commands
    that read a trained run: prediction and the explainer page. Tests read it and do not change it."""
    out = tmp_path_factory.mktemp("lenet5") / "run"
    assert (
        train(
            [
                "--config",
                "configs/lenet5_digits.yaml",
                "--output-dir",
                str(out),
                "--quiet",
                "--set",
                "train.epochs=6",
                "--set",
                "sched.warmup_epochs=0",
            ]
        )
        == 0
    )
    return out


@pytest.fixture
def kernels_built():
    """The compiled kernels in use (the test is skipped where they cannot be built)."""
    try:
        with compiled.use("compiled"):
            compiled.library()
    except compiled.KernelsError as e:
        pytest.skip(str(e))
    with compiled.use("compiled"):
        yield

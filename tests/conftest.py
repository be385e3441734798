"""Fixtures shared by the test modules."""

import pytest

from cnnzoo.ops import compiled

from .helpers import DEVICES


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

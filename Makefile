# Two commands do all the set-up on a fresh clone (Python >= 3.10 and pip are all they need):
#   make run    the main job: train LeNet-5 on the offline digits with the default config
#   make test   `make lint`, the whole test suite (what .ci/run runs), then `make sanitize`
# Both create .venv on first use. torch/torchvision are pinned to the versions tested here; override
# with `make TORCH_SPEC="torch torchvision" test` to let pip choose.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
STAMP := $(VENV)/.cnnzoo-installed

RUN_DIR ?= runs/lenet5_digits-$(shell date +%Y%m%d-%H%M%S)

.PHONY: run validate test sanitize lint format bench gpu-check clean-venv

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check $(TORCH_SPEC)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev,onnx,viz]'
	touch $(STAMP)

run: $(STAMP)
	$(PY) -m cnnzoo.train --config configs/lenet5_digits.yaml --output-dir $(RUN_DIR)

validate: $(STAMP)
	$(PY) scripts/validate_ops.py

test: $(STAMP)
	@$(MAKE) --no-print-directory lint
	$(PY) -m pytest -q
	@$(MAKE) --no-print-directory sanitize

# The compiled kernels' fuzz tests (and the tests of their chunked and subsampled paths) again, the
# kernels built with AddressSanitizer and UndefinedBehaviorSanitizer. ASan's runtime is preloaded into
# Python, and libstdc++ with it (else ASan cannot intercept the C++ exceptions torch throws). Skipped
# without a C++ compiler.
sanitize: $(STAMP)
	@cxx="$${CXX:-$$(command -v c++ || command -v g++ || true)}"; \
	if [ -z "$$cxx" ] || ! command -v "$$cxx" > /dev/null; then echo "sanitize: skipped (no C++ compiler)"; exit 0; fi; \
	echo "sanitize: fuzz tests with the kernels built under -fsanitize=address,undefined"; \
	CNNZOO_KERNELS=compiled CNNZOO_KERNELS_SANITIZE=1 ASAN_OPTIONS=detect_leaks=0 \
	LD_PRELOAD="$$($$cxx -print-file-name=libasan.so) $$($$cxx -print-file-name=libstdc++.so.6)" $(PY) -m pytest -q -p no:cacheprovider -k "fuzz or chunks or strided_1x1" \
	tests/test_ops_compiled.py

# ruff for the Python, clang-format (the .clang-format file) for the C++; `make format` applies both.
CXX_SOURCES := $(wildcard cnnzoo/csrc/*.cpp cnnzoo/csrc/*.h)

lint: $(STAMP)
	$(PY) -m ruff check cnnzoo tests scripts
	$(PY) -m ruff format --check cnnzoo tests scripts
	$(VENV)/bin/clang-format --dry-run -Werror $(CXX_SOURCES)

format: $(STAMP)
	$(PY) -m ruff format cnnzoo tests scripts
	$(VENV)/bin/clang-format -i $(CXX_SOURCES)

bench: $(STAMP)
	$(PY) scripts/bench_ops.py

# On a GPU machine: tests and timings of the CUDA path into $(OUT), in at most about 5 minutes. It uses
# the Python that already has torch and Triton ($(PYTHON)); it creates no virtualenv and installs nothing.
OUT ?= gpu-check.md
gpu-check:
	$(PYTHON) scripts/gpu_check.py $(OUT)

clean-venv:
	rm -rf $(VENV)

# Tessera: the two commands of the README, and a few helpers.
#   make demo   installs what is missing (Debian packages), builds the runner (only), trains the flagship recipe on Fashion-MNIST
#   make test   installs what is missing, builds, runs every test (C++ with ctest, then Python with pytest)
#
# TORCH selects the LibTorch to build against (README, "Supported LibTorch"):
#   TORCH=debian (default)  Debian's libtorch-dev 1.13.1 (CPU), build folder build/release
#   TORCH=pypi              PyPI's torch (the CUDA build; runs on CPU too) in a venv the project owns
#                           (scripts/install-torch-pypi.sh pins the version), with the CUDA kernels compiled and
#                           linked when nvcc is present; build folder build/pypi
TORCH ?= debian
ifeq ($(TORCH),debian)
BUILD_DIR ?= build/release
else ifeq ($(TORCH),pypi)
BUILD_DIR ?= build/pypi
else
$(error TORCH must be debian or pypi, got '$(TORCH)')
endif
JOBS ?= $(shell nproc)
CMAKE_FLAGS ?=
DEMO_RECIPE ?= examples/recipes/fashion_mnist.yaml
# Compiler-cache entries are keyed on paths relative to the clone, so that clones can share those that do not use the
# precompiled header (which embeds the clone's absolute path).
export CCACHE_BASEDIR ?= $(CURDIR)

.PHONY: all deps configure build demo test bench clean

all: build

deps:
	@bash scripts/install-deps.sh
ifeq ($(TORCH),pypi)
	@bash scripts/install-torch-pypi.sh >/dev/null
endif

configure: deps
	@if [ ! -f $(BUILD_DIR)/build.ninja ]; then \
	  torch_flags=""; \
	  if [ "$(TORCH)" = pypi ]; then \
	    venv=$$(bash scripts/install-torch-pypi.sh | tail -n 1); \
	    torch_flags="-DCMAKE_PREFIX_PATH=$$($$venv/bin/python -c 'import torch; print(torch.utils.cmake_prefix_path)')"; \
	  fi; \
	  cmake -S . -B $(BUILD_DIR) -G Ninja -DCMAKE_BUILD_TYPE=Release $$torch_flags $(CMAKE_FLAGS) || \
	    { rm -f $(BUILD_DIR)/build.ninja; exit 1; }; \
	fi

build: configure
	cmake --build $(BUILD_DIR) -j $(JOBS)

demo: configure
	cmake --build $(BUILD_DIR) -j $(JOBS) --target tessera-run
	$(BUILD_DIR)/tessera-run $(DEMO_RECIPE)

test: build
	ctest --test-dir $(BUILD_DIR) --output-on-failure -j $(JOBS)
	TESSERA_LIBRARY_BUILD_DIR=$(BUILD_DIR) TESSERA_TORCH=$(TORCH) scripts/test-python.sh

bench: build
	$(BUILD_DIR)/benchmarks/bench_trainer_overhead

clean:
	rm -rf $(BUILD_DIR)

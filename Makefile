# Tessera: the two commands of the README, and a few helpers.
#   make demo   installs what is missing (Debian packages), builds, trains the flagship recipe on Fashion-MNIST
#   make test   installs what is missing, builds, runs every test (C++ with ctest, then Python with pytest)
BUILD_DIR ?= build/release
JOBS ?= $(shell nproc)
CMAKE_FLAGS ?=
DEMO_RECIPE ?= examples/recipes/fashion_mnist.yaml

.PHONY: all deps configure build demo test bench clean

all: build

deps:
	@bash scripts/install-deps.sh

configure: deps
	@if [ ! -f $(BUILD_DIR)/build.ninja ]; then \
	  cmake -S . -B $(BUILD_DIR) -G Ninja -DCMAKE_BUILD_TYPE=Release $(CMAKE_FLAGS); \
	fi

build: configure
	cmake --build $(BUILD_DIR) -j $(JOBS)

demo: build
	$(BUILD_DIR)/tessera-run $(DEMO_RECIPE)

test: build
	ctest --test-dir $(BUILD_DIR) --output-on-failure -j $(JOBS)
	TESSERA_LIBRARY_BUILD_DIR=$(BUILD_DIR) scripts/test-python.sh

bench: build
	$(BUILD_DIR)/benchmarks/bench_trainer_overhead

clean:
	rm -rf $(BUILD_DIR)

# Tessera: the two commands of the README, and a few helpers.
#   make demo   installs what is missing (Debian packages), builds the runner (only), trains the flagship recipe on Fashion-MNIST
#   make test   installs what is missing, builds, runs every test (C++ with ctest, then Python with pytest)
# Hardening (docs/hardening.md):
#   make fuzz        builds the libFuzzer targets with clang (build/fuzz) and runs each for FUZZ_SECONDS (or FUZZ_RUNS executions)
#   make test-asan   AddressSanitizer + UndefinedBehaviorSanitizer build (build/asan) and its C++ tests
#   make test-tsan   ThreadSanitizer build (build/tsan) and the tests of the threaded parts
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

.PHONY: all deps configure build demo test bench clean fuzz test-asan test-tsan

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

# ---------------------------------------------------------------------------------------------
# Hardening (docs/hardening.md). Build folders of their own; suppressions (LibTorch's own reports only) are in
# tests/sanitizers/.
FUZZ_DIR ?= build/fuzz
FUZZ_SECONDS ?= 60
FUZZ_RUNS ?=
FUZZ_TARGETS ?=
ASAN_DIR ?= build/asan
TSAN_DIR ?= build/tsan
# Regular expressions over the test sources' file names (tests/CMakeLists.txt, TESSERA_TEST_FILTER); empty: all.
ASAN_TESTS ?=
TSAN_TESTS ?= data_test|checkpoint_test|distributed_test|fault_injection_test|mds_test
SAN_CMAKE_FLAGS = -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DTESSERA_BUILD_BENCHMARKS=OFF \
                  -DTESSERA_BUILD_EXAMPLES=OFF $(CMAKE_FLAGS)
# Not run in the sanitizer builds: the install and configure tests (they build other projects, uninstrumented)
# and the CUDA/GPU ones (no GPU code is sanitized here; the GPU test binary is not built: its placeholder entry is left out).
SAN_CTEST_ARGS = --output-on-failure -j $(JOBS) -LE 'gpu|cuda-compile|configure|install' -E '_NOT_BUILT$$'
SAN_DIR = $(CURDIR)/tests/sanitizers

fuzz:
	@bash scripts/install-deps.sh clang libclang-rt-14-dev
	@if [ ! -f $(FUZZ_DIR)/build.ninja ]; then \
	  CC=clang CXX=clang++ cmake -S . -B $(FUZZ_DIR) -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DTESSERA_FUZZ=ON \
	    -DTESSERA_BUILD_TESTS=OFF -DTESSERA_BUILD_BENCHMARKS=OFF -DTESSERA_BUILD_EXAMPLES=OFF -DTESSERA_USE_PCH=OFF || \
	    { rm -f $(FUZZ_DIR)/build.ninja; exit 1; }; \
	fi
	cmake --build $(FUZZ_DIR) -j $(JOBS) --target fuzz_targets
	FUZZ_RUNS=$(FUZZ_RUNS) bash scripts/fuzz.sh $(FUZZ_DIR) $(FUZZ_SECONDS) $(FUZZ_TARGETS)

test-asan: export ASAN_OPTIONS = detect_leaks=1:halt_on_error=1:detect_stack_use_after_return=0
test-asan: export LSAN_OPTIONS = suppressions=$(SAN_DIR)/lsan.supp:print_suppressions=0
test-asan: export UBSAN_OPTIONS = halt_on_error=1:print_stacktrace=1:suppressions=$(SAN_DIR)/ubsan.supp
test-asan: deps
	cmake -S . -B $(ASAN_DIR) $(SAN_CMAKE_FLAGS) -DTESSERA_SANITIZE=address,undefined "-DTESSERA_TEST_FILTER=$(ASAN_TESTS)"
	cmake --build $(ASAN_DIR) -j $(JOBS) --target tessera_tests
	ctest --test-dir $(ASAN_DIR) $(SAN_CTEST_ARGS)

test-tsan: export TSAN_OPTIONS = halt_on_error=1:second_deadlock_stack=1:suppressions=$(SAN_DIR)/tsan.supp
test-tsan: export OMP_NUM_THREADS = 1
test-tsan: deps
	cmake -S . -B $(TSAN_DIR) $(SAN_CMAKE_FLAGS) -DTESSERA_SANITIZE=thread "-DTESSERA_TEST_FILTER=$(TSAN_TESTS)"
	cmake --build $(TSAN_DIR) -j $(JOBS) --target tessera_tests
	ctest --test-dir $(TSAN_DIR) $(SAN_CTEST_ARGS)

# desync — the two commands: `make run` and `make test`.
BUILD ?= build
CMAKE_FLAGS ?= -DCMAKE_BUILD_TYPE=Release
CTEST_JOBS ?= 2

.PHONY: all deps configure build run test test-slow bench bench-matrix clean

all: build

deps:
	@scripts/install-deps

$(BUILD)/build.ninja:
	@cmake -S . -B $(BUILD) -G Ninja $(CMAKE_FLAGS)

configure: deps $(BUILD)/build.ninja

build: configure
	@cmake --build $(BUILD)

# The main job: DDP on 2 local worker processes, one epoch of Fashion-MNIST, with a summary.
run: build
	$(BUILD)/desync train examples/fmnist_ddp.toml --workers 2 --out runs/fmnist_ddp

# The default test suite (unit + integration, without tests labelled slow).
test: build
	@cd $(BUILD) && ctest -LE slow --output-on-failure -j $(CTEST_JOBS)

test-slow: build
	@cd $(BUILD) && ctest -L slow --output-on-failure

bench: build
	@scripts/bench

# Every data-parallel and decentralized algorithm x {loopback, 100 Mbit/s, 20 Mbit/s,
# heterogeneous links} on 4 workers; tables and pages in docs/results/matrix*. Needs root.
bench-matrix: build
	@BUILD=$(BUILD) scripts/bench-matrix

clean:
	rm -rf $(BUILD)

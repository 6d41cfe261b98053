# desync — the two commands: `make run` and `make test`.
#
# `make run` installs only what building and running desync needs and builds only the `desync`
# binary; `make test` (and build, test-slow, bench) installs the test tools too (googletest,
# Google Benchmark, chromium, iproute2, procps) and builds everything. Both use the one build
# directory, in either order: a directory that `make run` configured first (tests and benchmarks
# off) is reconfigured with them on by the first `make test`; `make run` never turns them off.
BUILD ?= build
CMAKE_FLAGS ?= -DCMAKE_BUILD_TYPE=Release
CTEST_JOBS ?= 2

CONFIGURE = cmake -S . -B $(BUILD) -G Ninja $(CMAKE_FLAGS)
# True when $(BUILD) is configured with option $(1) on.
cached_on = grep -Eqi '^$(1):BOOL=(ON|TRUE|YES|Y|1)$$' $(BUILD)/CMakeCache.txt 2>/dev/null

# One thing at a time: two package installs must not race (the build itself runs in parallel).
.NOTPARALLEL:

.PHONY: all deps deps-run configure configure-run build build-run run test test-slow bench \
	bench-matrix mutants clean fuzz test-asan test-tsan

all: build

deps:
	@scripts/install-deps --for test

deps-run:
	@scripts/install-deps --for run

# Configured for everything: tests and benchmarks on (turned back on if `make run` configured
# the directory without them).
configure: deps
	@if [ ! -f $(BUILD)/build.ninja ] || ! $(call cached_on,DESYNC_BUILD_TESTS) || \
	    ! $(call cached_on,DESYNC_BUILD_BENCH); then \
	  $(CONFIGURE) -DDESYNC_BUILD_TESTS=ON -DDESYNC_BUILD_BENCH=ON; \
	fi

# Configured at all; a fresh directory without tests and benchmarks (their packages may be
# missing), an existing one as it is.
configure-run: deps-run
	@[ -f $(BUILD)/build.ninja ] || $(CONFIGURE) -DDESYNC_BUILD_TESTS=OFF -DDESYNC_BUILD_BENCH=OFF

build: configure
	@cmake --build $(BUILD)

build-run: configure-run
	@cmake --build $(BUILD) --target desync

# The main job: DDP on 2 local worker processes, one epoch of Fashion-MNIST, with a summary.
run: build-run
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
# Runs only the desync binary (and scripts/netbed, whose iproute2 comes with the test packages).
bench-matrix: deps build-run
	@BUILD=$(BUILD) scripts/bench-matrix

# Deliberate breakages (scripts/mutants.tsv), each rebuilt in a scratch copy and run against the
# tests that must catch it; fails if one survives. Not part of `test`: it rebuilds per mutant.
mutants: deps
	@scripts/mutants

clean:
	rm -rf $(BUILD)

# Every libFuzzer target (fuzz/*_fuzz.cpp) for FUZZ_SECONDS each under ASan and UBSan
# (scripts/fuzz); stops at the first crash and prints the input that caused it.
FUZZ_SECONDS ?= 60
fuzz: deps
	@for f in fuzz/*_fuzz.cpp; do scripts/fuzz $$(basename $$f _fuzz.cpp) $(FUZZ_SECONDS) || exit 1; done

# The tests under sanitizers, each in a build directory of its own (tests/sanitizers/run): ASan and
# UBSan over every unit and integration test (build-asan/), ThreadSanitizer over the threaded
# parts' tests (build-tsan/). Built at the lowest priority; a cold tree takes 15 to 25 minutes of
# two idle cores, so neither is part of `test` (docs/testing.md, Sanitizers).
test-asan: deps
	@tests/sanitizers/run address

test-tsan: deps
	@tests/sanitizers/run thread

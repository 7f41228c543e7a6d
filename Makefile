# hybridgw - the two quick-start commands and the rest.
#
#   make run            install what is missing, build, run the gateway
#                       (simulators stand in for missing upstreams)
#   make test           install what is missing, build, run every test
#   make test-sanitize  the unit and integration tests under ASan+UBSan
#   make fuzz-smoke     every libFuzzer target for FUZZ_SECONDS each
#   make bench          the benchmarks in bench/ (see bench/RESULTS.md)
#
# Variables: BUILD_TYPE (RelWithDebInfo), WERROR (OFF; CI sets ON),
# JOBS (number of cores), FUZZ_SECONDS (20).

BUILD_TYPE ?= RelWithDebInfo
WERROR ?= OFF
JOBS ?= $(shell nproc 2>/dev/null || echo 2)
FUZZ_SECONDS ?= 20

BUILD := build
ASAN_BUILD := build-asan
FUZZ_BUILD := build-fuzz

.PHONY: all deps build run test unit ledger-pg integration deploy-test test-sanitize fuzz fuzz-smoke bench clean format

all: build

deps:
	@scripts/install-deps

$(BUILD)/build.ninja: CMakeLists.txt
	cmake -S . -B $(BUILD) -G Ninja -DCMAKE_BUILD_TYPE=$(BUILD_TYPE) -DGW_WERROR=$(WERROR) >/dev/null

build: deps $(BUILD)/build.ninja
	cmake -DGW_WERROR=$(WERROR) $(BUILD) >/dev/null
	ninja -C $(BUILD) -j $(JOBS)

run: build
	@scripts/run-local

unit: build
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS)

# the store's tests against a real PostgreSQL (77: not installed -> skipped)
ledger-pg: build
	tests/ledger/run-pg $(BUILD)/test_store || [ $$? -eq 77 ]

integration: build
	HYBRIDGW_BUILD=$(abspath $(BUILD)) tests/integration/run

deploy-test:
	@if [ -x deploy/scripts/test ]; then deploy/scripts/test; else echo "deploy tests: none yet"; fi

test: build
	$(MAKE) --no-print-directory unit
	$(MAKE) --no-print-directory ledger-pg
	$(MAKE) --no-print-directory integration
	$(MAKE) --no-print-directory deploy-test

$(ASAN_BUILD)/build.ninja: CMakeLists.txt
	CC=clang cmake -S . -B $(ASAN_BUILD) -G Ninja -DCMAKE_BUILD_TYPE=Debug \
		-DGW_ASAN=ON -DGW_UBSAN=ON -DGW_ARENA_MALLOC=ON -DGW_WERROR=$(WERROR) >/dev/null

test-sanitize: deps $(ASAN_BUILD)/build.ninja
	ninja -C $(ASAN_BUILD) -j $(JOBS)
	cd $(ASAN_BUILD) && ASAN_OPTIONS=detect_leaks=1 ctest --output-on-failure -j $(JOBS)
	ASAN_OPTIONS=detect_leaks=1 tests/ledger/run-pg $(ASAN_BUILD)/test_store || [ $$? -eq 77 ]
	HYBRIDGW_BUILD=$(abspath $(ASAN_BUILD)) HYBRIDGW_SANITIZED=1 tests/integration/run

$(FUZZ_BUILD)/build.ninja: CMakeLists.txt
	CC=clang cmake -S . -B $(FUZZ_BUILD) -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DGW_FUZZ=ON >/dev/null

fuzz: deps $(FUZZ_BUILD)/build.ninja
	ninja -C $(FUZZ_BUILD) -j $(JOBS)

fuzz-smoke: fuzz
	FUZZ_SECONDS=$(FUZZ_SECONDS) scripts/fuzz-smoke $(FUZZ_BUILD)

bench: build
	@scripts/install-deps --bench
	bench/run

format:
	clang-format -i $$(git ls-files '*.c' '*.h')

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) $(FUZZ_BUILD)

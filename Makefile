# The README's commands. `make setup` is idempotent; `make test` and `make demo` run it first.
BUILD ?= build
JOBS ?= $(shell nproc)
MODEL ?= ../shared/models/stories260K
CMAKE_ARGS ?=
PREFIX ?= /usr/local

.PHONY: setup configure build install test test-integration test-asan fuzz chaos demo bench bench-serving bench-balance format clean

setup:
	bash scripts/setup.sh
	$(MAKE) build

configure:
	@test -f $(BUILD)/CMakeCache.txt || cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo $(CMAKE_ARGS)

build: configure
	cmake --build $(BUILD) -j $(JOBS)

# PREFIX/bin: swarm, swarm-worker, swarm-coordinator (on the PATH); PREFIX/libexec/swarm:
# swarm-tools (the CLI's torch commands, which `swarm` runs); the C++ SDK package, the .proto files
# (PREFIX/share/swarm/proto) and the Python client (PREFIX/lib/python3/dist-packages/swarm_client).
install: build
	cmake --install $(BUILD) --prefix $(PREFIX)

# The whole suite: unit and integration (a real Prometheus, manifest checks); the set-up also
# installs what the integration tests need. The results also go to $(BUILD)/ctest-junit.xml, which
# scripts/ci_summary.sh reads.
test:
	SWARM_SETUP_INTEGRATION=1 bash scripts/setup.sh
	$(MAKE) build
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS) --timeout 600 \
	  --output-junit $(abspath $(BUILD))/ctest-junit.xml

test-integration:
	SWARM_SETUP_INTEGRATION=1 bash scripts/setup.sh
	$(MAKE) build
	cd $(BUILD) && ctest --output-on-failure -L integration --timeout 900

# The whole suite built with AddressSanitizer and UndefinedBehaviorSanitizer in its own build
# directory (gcc; LibTorch itself is not instrumented). Leak checking is off: gRPC and LibTorch
# keep process-lifetime allocations. ASAN_TARGETS builds only those targets (default all) and
# ASAN_CTEST_ARGS picks the tests (e.g. -L fuzz_smoke): the whole instrumented build takes well over
# an hour on 2 shared cores (docs/security.md, "Fuzzing and sanitizers").
ASAN_BUILD ?= build-asan
ASAN_FLAGS = -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer
ASAN_TARGETS ?= all
ASAN_CTEST_ARGS ?=
test-asan:
	@test -f $(ASAN_BUILD)/CMakeCache.txt || cmake -S . -B $(ASAN_BUILD) \
	  -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_FLAGS="$(ASAN_FLAGS)" \
	  -DCMAKE_EXE_LINKER_FLAGS="-fsanitize=address,undefined" $(CMAKE_ARGS)
	cmake --build $(ASAN_BUILD) -j $(JOBS) --target $(ASAN_TARGETS)
	cd $(ASAN_BUILD) && ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 \
	  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	  ctest --output-on-failure -j $(JOBS) --timeout 1200 $(ASAN_CTEST_ARGS)

# libFuzzer targets (tests/fuzz, clang) in their own build directory, each run for FUZZ_SECONDS;
# prints executions and crashes per target (scripts/fuzz.sh).
FUZZ_BUILD ?= build-fuzz
FUZZ_SECONDS ?= 60
FUZZ_TARGETS ?= safetensors_fuzz safetensors_index_fuzz config_fuzz router_file_fuzz \
  tokenizer_load_fuzz tokenizer_encode_fuzz auth_tokens_fuzz http_request_fuzz \
  worker_forward_fuzz worker_stream_fuzz coordinator_generate_fuzz
fuzz:
	JOBS=$(JOBS) bash scripts/fuzz.sh $(FUZZ_BUILD) $(FUZZ_SECONDS) $(FUZZ_TARGETS)

# Lose no request (docs/operations.md, "Failures"): 2 layer ranges x 2 replicas and a coordinator,
# CHAOS_STREAMS concurrent streams of 200 tokens (exact and sparse, greedy and seeded) while a random
# worker is SIGKILLed and restarted every ~2 s, for CHAOS_SECONDS; every request must complete with
# its no-fault ids and no session may be left. Prints the SIGKILL -> next token figures. (ctest runs
# the same test for 12 s with 8 streams.)
CHAOS_SECONDS ?= 60
CHAOS_STREAMS ?= 16
chaos: configure
	cmake --build $(BUILD) -j $(JOBS) --target integration_test swarm-worker swarm-coordinator
	SWARM_CHAOS_SECONDS=$(CHAOS_SECONDS) SWARM_CHAOS_STREAMS=$(CHAOS_STREAMS) \
	  $(BUILD)/tests/integration_test --gtest_filter='FailoverProcessTest.ChaosKillsLoseNoRequest'

demo:
	bash scripts/setup.sh
	$(MAKE) build
	bash scripts/demo.sh $(MODEL)

# The serving benchmark (docs/benchmarks.md, "Serving many streams"): 1..32 concurrent streams through
# a coordinator and 2 workers on the ~110M synthetic Llama, the same with the two workers pinned to
# one core and one thread each, and the d=2048 8-layer model. SERVING_BENCH_ARGS adds flags to
# every run (e.g. --coordinator-args "--max-batch-tokens 256").
SERVING_BENCH_ARGS ?=
bench-serving: configure
	cmake --build $(BUILD) -j $(JOBS) --target serving_bench swarm-worker swarm-coordinator
	$(BUILD)/serving_bench --synth 110m --decode-tokens 32 $(SERVING_BENCH_ARGS)
	$(BUILD)/serving_bench --synth 110m --pin --streams 1,2,4 --decode-tokens 32 \
	  --in-process-streams 0 $(SERVING_BENCH_ARGS)
	$(BUILD)/serving_bench --synth d2048 --streams 1,2,4,8 --decode-tokens 16 $(SERVING_BENCH_ARGS)

# Load balancing on a real cluster (docs/quality.md, "On a real cluster"): 4 worker processes
# (layers 0-2 and 3-4 of MODEL, 2 replicas each, emulated layer time) and a coordinator, toll-free
# and with --balance, on two shapes of load, under eval's skewed stream of sparse requests. The
# router file (N = 5, k = 3, 64 calibration prompts) is made first. BALANCE_BENCH_ARGS adds flags.
BALANCE_BENCH_ARGS ?=
bench-balance: configure
	cmake --build $(BUILD) -j $(JOBS) --target balance_bench swarm-worker swarm-coordinator swarm-tools
	$(BUILD)/swarm-tools calibrate --model $(MODEL) --num-blocks 5 --top-k-blocks 3 \
	  --num-prompts 64 --out $(BUILD)/balance-router.safetensors
	$(BUILD)/balance_bench --router $(BUILD)/balance-router.safetensors --model $(MODEL) \
	  --ranges 0-2,3-4 $(BALANCE_BENCH_ARGS)

format:
	clang-format -i $$(git ls-files '*.h' '*.cc')

clean:
	rm -rf $(BUILD)

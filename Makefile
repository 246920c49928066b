# livedump: the two commands a newcomer needs are `make test-qemu` and `make test`.
# Both install what they need first (Debian packages, .venv) through `setup`.

PYTHON := .venv/bin/python
HARNESS := $(PYTHON) -m harness
# Extra harness options, e.g. make test-qemu HARNESS_ARGS="--accel tcg -v"
HARNESS_ARGS ?=
# The guest architecture, e.g. make test-qemu ARCH=arm64 (default x86_64). Only
# from the make command line: kernel developers often export ARCH=x86 for
# their own builds, which is not a harness architecture.
ifeq ($(origin ARCH),command line)
override HARNESS_ARGS += --arch $(ARCH)
endif
PYTEST_ARGS ?=

.PHONY: all setup test test-unit test-qemu bench lint crash-extension clean clean-artifacts help

all: help

help:
	@echo "make setup      install Debian packages and the Python venv (idempotent)"
	@echo "make test       unit tests and QEMU integration tests (what CI runs)"
	@echo "make test-qemu  build the pinned kernel with the series, boot it, run the end-to-end test (ARCH=arm64: the arm64 guest)"
	@echo "make bench      livedump pause, throughput and slowdown at 512M..4G of guest RAM (bench.json, bench.png)"
	@echo "make lint       ruff on the Python code, checkpatch --strict on the kernel series"
	@echo "make crash-extension  build crash-patches/livedump.so (load with: extend crash-patches/livedump.so)"

setup:
	@bash scripts/setup.sh

test: setup
	$(PYTHON) -m pytest $(PYTEST_ARGS) tests

test-unit: setup
	$(PYTHON) -m pytest $(PYTEST_ARGS) -m "not qemu" tests

test-qemu: setup
	$(HARNESS) test $(HARNESS_ARGS)

bench: setup
	$(HARNESS) bench $(HARNESS_ARGS)

lint: setup
	$(PYTHON) -m ruff check harness tests
	@bash scripts/checkpatch-series.sh

crash-extension:
	$(MAKE) -C crash-patches all prog

clean-artifacts:
	rm -rf artifacts

clean: clean-artifacts
	$(MAKE) -C crash-patches clean

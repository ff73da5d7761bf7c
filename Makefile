# Two commands on a fresh machine: `make run` (set up, replay the demo capture) and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
EXT := $(wildcard ext/*.pyx ext/*.pxi)
SO_STAMP := $(VENV)/.built-ext

.PHONY: run test venv build expected bench lint clean system-deps

# Debian packages the tests use as real peers (tshark as the decoding oracle, tcpdump as a benchmark peer).
system-deps: $(VENV)/.system-deps
$(VENV)/.system-deps:
	@mkdir -p $(VENV)
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && { ! command -v tshark || ! command -v tcpreplay || ! command -v unbound || ! command -v named || ! command -v dig; } >/dev/null; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq tshark tcpdump tcpreplay unbound bind9 dnsutils iproute2 >/dev/null; \
	fi
	@touch $@

venv: $(VENV)/.installed
$(VENV)/.installed: pyproject.toml setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools wheel "Cython>=3.0,<4"
	$(PY) -m pip install -q --no-build-isolation --config-settings editable_mode=compat -e '.[test]'
	@touch $@

build: $(SO_STAMP)
$(SO_STAMP): $(VENV)/.installed $(EXT) setup.py
	$(PY) setup.py -q build_ext --inplace
	@touch $@

run: build
	$(VENV)/bin/truesource replay pcaps/demo-resolver.pcap --rules rules/demo.rules

test: build system-deps
	$(PY) -m pytest -q

# Rewrite the expected outputs of the shipped captures (only on purpose, after checking the difference).
expected: build
	$(PY) pcaps/regen_expected.py

bench: build system-deps
	$(PY) bench/run.py

lint: venv
	$(PY) -m ruff check sensor tests bench pcaps

clean:
	rm -rf build $(VENV) sensor/*.so ext/*.c *.egg-info

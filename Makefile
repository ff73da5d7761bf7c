# Two commands on a fresh machine: `make run` (set up, replay the demo capture) and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
EXT := $(wildcard ext/*.pyx ext/*.pxi)
SO_STAMP := $(VENV)/.built-ext

.PHONY: run test venv build expected bench bench-flows bench-profile lint clean system-deps install fuzz soak

# Debian packages the tests use as real peers: tcpreplay and iproute2 for live capture, unbound and bind9 as the
# resolver and the authoritative server, dig as the client, bind9's checkers, tcpdump, nfdump (nfcapd as the IPFIX
# collector, nfdump as the filter oracle). Daemons must not start
# during the install (policy-rc.d), and the install runs only as root on apt systems, and only if one is missing.
# systemd: systemd-analyze (verify, security) and systemd-sysusers for the unit tests and the install step;
# python3-seccomp: the unit's system call filter rebuilt for tests/test_service.py (system Python's libseccomp).
# clang, llvm and libclang-rt-dev: atheris (the fuzzer) builds with them, and `make fuzz` instruments ext/ with them.
# ethtool: the live attack test turns TX checksum offload off on its veths (tests/test_attacks_live.py).
# chromium: renders `profile --html` headless in tests; prometheus: its promtool checks the Grafana dashboard's
# queries and lints /metrics (the daemon is not started: policy-rc.d below).
SYSTEM_PACKAGES := tcpdump tcpreplay unbound bind9 bind9utils dnsutils iproute2 nfdump systemd python3-seccomp \
	clang llvm libclang-rt-dev chromium prometheus ethtool
system-deps: $(VENV)/.system-deps
$(VENV)/.system-deps:
	@mkdir -p $(VENV)
	@missing=0; for tool in tcpdump tcpreplay unbound named named-checkzone dig ip nfcapd nfdump systemd-analyze \
		systemd-sysusers setpriv clang llvm-symbolizer chromium promtool ethtool; do \
		command -v $$tool >/dev/null || missing=1; done; /usr/bin/python3 -c 'import seccomp' 2>/dev/null || missing=1; \
	if [ $$missing = 1 ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		created=0; if [ ! -e /usr/sbin/policy-rc.d ]; then printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; \
			chmod +x /usr/sbin/policy-rc.d; created=1; fi; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
			$(SYSTEM_PACKAGES) >/dev/null; status=$$?; \
		[ $$created = 1 ] && rm -f /usr/sbin/policy-rc.d; exit $$status; \
	fi
	@touch $@

# The set-up steps write their output to $(BUILD_LOG) and show it only when one fails: `make run` prints one line
# while it sets up, then the demo (compiler errors still show; the log keeps the rest).
BUILD_LOG := $(VENV)/build.log
LOGGED = >> $(BUILD_LOG) 2>&1 || { cat $(BUILD_LOG); echo "failed; the whole log is in $(BUILD_LOG)" >&2; exit 1; }

venv: $(VENV)/.installed
$(VENV)/.installed: pyproject.toml setup.py
	@echo "setting up $(VENV) and building ext/ (once, a few minutes; log in $(BUILD_LOG))" >&2
	@$(PYTHON) -m venv $(VENV) && : > $(BUILD_LOG)
	@$(PY) -m pip install -q --upgrade pip setuptools wheel "Cython>=3.0,<4" $(LOGGED)
	@$(PY) -m pip install -q --no-build-isolation --config-settings editable_mode=compat -e '.[test]' $(LOGGED)
	@touch $@

# The package's bytecode compiled as an install would (pip compiles what it installs; an editable install does not,
# and PYTHONDONTWRITEBYTECODE, set on some machines, keeps Python from caching it): without it each process spends
# ~0.08 s CPU compiling sources. compileall is incremental (decision 0200).
build: $(SO_STAMP)
	@$(PY) -m compileall -q sensor >/dev/null
$(SO_STAMP): $(VENV)/.installed $(EXT) setup.py
	@$(PY) setup.py -q build_ext --inplace $(LOGGED)
	@touch $@

run: build
	@$(VENV)/bin/truesource replay pcaps/demo-resolver.pcap --rules rules/demo.rules

test: build system-deps
	$(PY) -m ruff check $(LINTED)  # what `make lint`'s ruff refuses fails the tests too
	$(PY) -m pytest -q

# Rewrite the expected outputs of the shipped captures (only on purpose, after checking the difference).
expected: build
	$(PY) pcaps/regen_expected.py

# The benchmarks' peers: tshark (field extraction) and dnsperf, besides the test packages.
bench: build system-deps
	@if ! command -v tshark >/dev/null || ! command -v dnsperf >/dev/null; then [ "$$(id -u)" = 0 ] && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends tshark dnsperf >/dev/null; fi
	$(PY) bench/run.py
	$(PY) bench/run.py --suite whole
	$(PY) bench/rules_scale.py
	$(PY) bench/live.py
	$(PY) bench/flows.py
	$(PY) bench/querylog.py
	$(PY) bench/querylog_loop.py

# truesource flows over 10,000,000 stored records against nfdump on the same records (bench/flows_scan.py).
bench-flows: build system-deps
	$(PY) bench/flows_scan.py

# truesource profile beside nfdump running the report's queries on the same records (bench/profile.py).
bench-profile: build system-deps
	$(PY) bench/profile.py

# The service: user, directories, /etc/truesource/sensor.toml (kept if present), units (systemd/install.sh;
# DESTDIR= and PREFIX= as usual; docs/deployment.md).
PREFIX ?= /opt/truesource
install:
	DESTDIR=$(DESTDIR) systemd/install.sh --prefix $(PREFIX)

# Every fuzz target for FUZZ_SECONDS each (default 300) on an AddressSanitizer + libFuzzer build of ext/
# (docs/fuzzing.md); prints executions and edge coverage per target. `make test` runs a short bounded pass.
FUZZ_SECONDS ?= 300
fuzz: build system-deps
	$(PY) -m fuzz.campaign --seconds $(FUZZ_SECONDS)

# Replay in a loop with rules reloads for SOAK_SECONDS (default 600); prints memory and counters (bench/soak.py).
SOAK_SECONDS ?= 600
soak: build system-deps
	$(PY) bench/soak.py --seconds $(SOAK_SECONDS)

# ruff, and mypy over sensor/ (its settings, and the modules it still skips, in pyproject.toml).
LINTED = sensor tests bench pcaps fuzz
lint: venv
	$(PY) -m ruff check $(LINTED)
	$(PY) -m mypy
	$(VENV)/bin/lint-imports --no-cache  # the layering contracts of pyproject.toml (docs/architecture.md)

clean:
	rm -rf build $(VENV) sensor/*.so ext/*.c *.egg-info

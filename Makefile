# Two commands on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
CTK     = $(VENV)/bin/ctk
# Debian packages the tests drive for real (nginx, dig, keepalived, chromium) and the benchmarks' peers (etcd, dnsperf).
DEBS       = nginx:nginx dig:dnsutils keepalived:keepalived chromium:chromium chromedriver:chromium-driver tmux:tmux
BENCH_DEBS = etcd:etcd-server dnsperf:dnsperf
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: setup debs bench-debs install-debs run test test-fast lint bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

debs:
	@$(MAKE) --no-print-directory install-debs PAIRS="$(DEBS)"

bench-debs:
	@$(MAKE) --no-print-directory install-debs PAIRS="$(BENCH_DEBS)"

# Installs the Debian package of each bin:pkg pair whose binary is missing (one apt run for all).
install-debs:
	@missing=""; for pair in $(PAIRS); do bin=$${pair%%:*}; pkg=$${pair##*:}; \
	  command -v $$bin >/dev/null 2>&1 || [ -x /usr/sbin/$$bin ] || [ -x /usr/bin/$$bin ] || missing="$$missing $$pkg"; done; \
	if [ -n "$$missing" ]; then echo "installing Debian packages:$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing >/dev/null; fi

run: setup
	$(CTK) agent -dev -config-dir examples/services

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

test: setup debs lint
	$(PY) -m pytest -q -p no:cacheprovider

# Local loop: skips the multi-process tests.
test-fast: setup
	$(PY) -m pytest -q -m 'not slow'

# Every figure in the README's performance section comes from these scripts, run side by side with peers.
bench: setup bench-debs
	$(PY) bench/kv_bench.py
	$(PY) bench/dns_bench.py
	$(PY) bench/template_render.py
	$(PY) bench/template_bench.py
	$(PY) bench/client_bench.py

clean:
	rm -rf $(VENV) build *.egg-info .mypy_cache .ruff_cache .pytest_cache

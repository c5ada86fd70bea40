# The two newcomer commands live here: `make run` and `make test`.
# Both create the virtual environment on first use and build the softphone
# page when npm is there; `make test` also installs the system packages the
# real-peer tests start (sipp, baresip, rtpengine, chromium, kamailio).
VENV   ?= .venv
PYTHON ?= python3
BIN    := $(VENV)/bin
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT_PACKAGES := sip-tester systemd baresip-core rtpengine-daemon chromium kamailio
PIP    := $(BIN)/python -m pip -q --disable-pip-version-check
# `make lock` resolves pyproject.toml's ranges into the hashed lock files with
# uv, kept in a tool environment of its own (it is not a project dependency).
# Pins already in the lock files are kept; `make lock-upgrade` moves them.
LOCK_TOOLS := .lock-tools
LOCK_FLAGS := --python-version 3.11 --generate-hashes --quiet --custom-compile-command 'make lock'

.PHONY: run test install sys-deps lint phone bench bench-load clean lock lock-upgrade

# Everything comes from the hashed lock file (transitive packages included);
# click2dial itself is installed last, without dependencies or build isolation,
# so that nothing unhashed is fetched.
$(BIN)/.installed: requirements-dev.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --require-hashes -r requirements-dev.lock
	$(PIP) install --no-deps --no-build-isolation -e .
	touch $@

install: $(BIN)/.installed

sys-deps:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing >/dev/null; \
	fi
	@# The SIP sockets ask for a 4 MiB receive buffer ([sip] udp_receive_buffer),
	@# which Linux caps at net.core.rmem_max (Debian's default: 208 KiB).
	@if [ -r /proc/sys/net/core/rmem_max ] && [ "$$(cat /proc/sys/net/core/rmem_max)" -lt 4194304 ]; then \
	  echo "raising net.core.rmem_max to 4 MiB"; $(SUDO) sysctl -qw net.core.rmem_max=4194304 || true; \
	fi
	@# The tests start their own rtpengine per test (own config, free ports,
	@# userspace); the packaged services (kernel table, iptables rules, fixed
	@# ports) must not run on a test machine.
	@if [ -d /run/systemd/system ]; then \
	  for unit in rtpengine-daemon rtpengine-recording-daemon; do \
	    if systemctl is-enabled --quiet $$unit 2>/dev/null || systemctl is-active --quiet $$unit 2>/dev/null; then \
	      echo "disabling the packaged $$unit service"; $(SUDO) systemctl disable --now $$unit >/dev/null 2>&1 || true; \
	    fi; \
	  done; \
	fi

# The softphone page (GET /phone): web/phone's locked npm packages (SIP.js,
# esbuild; playwright-core drives Chromium in the tests), bundled into
# src/click2dial/static/phone.  `npm ci` runs again only when the lock file
# is newer than the stamp it leaves in node_modules.  No package needs its
# install script (esbuild's binary comes as a package of its own): none runs.
PHONE_DIR   := web/phone
PHONE_STAMP := $(PHONE_DIR)/node_modules/.click2dial-installed

ifneq ($(shell command -v npm 2>/dev/null),)
phone: $(PHONE_STAMP)
	npm run --silent build --prefix $(PHONE_DIR)

$(PHONE_STAMP): $(PHONE_DIR)/package-lock.json
	npm ci --prefix $(PHONE_DIR) --ignore-scripts --no-audit --no-fund
	touch $@
else
phone:
	@echo "npm not found: the softphone page (GET /phone) is not built"
endif

$(LOCK_TOOLS)/bin/uv:
	$(PYTHON) -m venv $(LOCK_TOOLS)
	$(LOCK_TOOLS)/bin/python -m pip install -q --disable-pip-version-check 'uv>=0.9,<1'

lock: $(LOCK_TOOLS)/bin/uv
	$(LOCK_TOOLS)/bin/uv pip compile $(LOCK_FLAGS) $(UV_EXTRA) pyproject.toml requirements-build.in -o requirements.lock
	$(LOCK_TOOLS)/bin/uv pip compile $(LOCK_FLAGS) $(UV_EXTRA) pyproject.toml requirements-build.in --extra dev -o requirements-dev.lock

lock-upgrade:
	$(MAKE) lock UV_EXTRA=--upgrade

run: install phone
	$(BIN)/click2dial serve

lint: install
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy

test: sys-deps lint phone
	$(BIN)/pytest

bench: install
	$(BIN)/python bench/sip_parse.py

# The whole node under open-loop click-to-dial load, sipp agent and trunk peers
# (bench/c2d_load.py --help); e.g. make bench-load BENCH_LOAD_ARGS="--hold 10000".
BENCH_LOAD_ARGS ?= --rates 50,100,150,200 --duration 10
bench-load: install
	$(BIN)/python bench/c2d_load.py $(BENCH_LOAD_ARGS)

clean:
	rm -rf $(VENV) $(LOCK_TOOLS) .pytest_cache .mypy_cache .ruff_cache

# rsky fleet — the two commands are `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed

.PHONY: run test bench demo lint conform install-units venv clean

venv: $(STAMP)

$(STAMP): setup.py
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON): apt-get install -y python3.11 python3.11-venv" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e '.[test]'
	@touch $(STAMP)

## run: the whole fleet in the foreground (embedded Redis/PostgreSQL under ./var unless configured)
run: $(STAMP)
	$(PY) tools/run.py

## test: the whole test suite
test: $(STAMP)
	$(PY) -m pytest -q tests

## bench: benchmarks; figures to var/bench/results.json
bench: $(STAMP)
	$(PY) tools/bench.py

## demo: embedded servers + replay relay on the bundled corpus + the fleet, watched with lag.py
demo: $(STAMP)
	$(PY) tools/demo.py

lint: $(STAMP)
	$(PIP) install -q ruff mypy
	$(VENV)/bin/ruff check fleet tools tests
	$(VENV)/bin/mypy --ignore-missing-imports --follow-imports=silent fleet || echo "mypy: findings above (not yet gating)"

## install-units: as root: user rsky, /opt/rsky-fleet/venv, /etc/rsky-fleet/*.env (kept if present), the units
INSTALL_DIR ?= /opt/rsky-fleet
install-units:
	@[ "$$(id -u)" = 0 ] || { echo "install-units needs root: sudo make install-units" >&2; exit 1; }
	getent passwd rsky >/dev/null || useradd --system --home-dir /var/lib/rsky-fleet --no-create-home --shell /usr/sbin/nologin rsky
	$(PYTHON) -m venv $(INSTALL_DIR)/venv
	$(INSTALL_DIR)/venv/bin/pip install -q --upgrade pip
	$(INSTALL_DIR)/venv/bin/pip install -q .
	[ ! -e README.md ] || install -m 0644 README.md $(INSTALL_DIR)/README.md
	install -d -m 0750 -o root -g rsky /etc/rsky-fleet
	for f in config/*.env; do t=/etc/rsky-fleet/$$(basename $$f); [ -e $$t ] || install -m 0600 -o rsky -g rsky $$f $$t; done
	install -d /etc/systemd/system
	install -m 0644 units/*.service units/*.target /etc/systemd/system/
	systemctl daemon-reload
	@echo "next: edit /etc/rsky-fleet/*.env, then systemctl enable --now rsky-fleet.service (or rsky-indexer@1 rsky-ingester@1 rsky-fetcher@1) and systemctl start rsky-fleet.target"

clean:
	rm -rf $(VENV) build *.egg-info

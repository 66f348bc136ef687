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
	$(VENV)/bin/mypy --ignore-missing-imports fleet

install-units:
	install -d /etc/systemd/system /etc/rsky-fleet
	install -m 0644 units/*.service units/*.target /etc/systemd/system/
	systemctl daemon-reload

clean:
	rm -rf $(VENV) build *.egg-info

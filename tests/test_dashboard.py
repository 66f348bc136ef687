"""The Grafana dashboard and docs/metrics.md against the metrics the role modules really register.

The role modules register their metrics on prometheus_client's default REGISTRY at import (the
supervisor's on first use). They are imported together in a fresh interpreter, as one process
of the fleet would, so a name registered twice fails here too.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DASHBOARD = os.path.join(ROOT, "grafana", "rsky-fleet.json")
METRICS_DOC = os.path.join(ROOT, "docs", "metrics.md")

METRIC_MODULES = [
    "fleet.ingester.metrics",
    "fleet.ingester.listrepos",
    "fleet.indexer.metrics",
    "fleet.indexing",
    "fleet.indexing.aggregates",
    "fleet.indexing.actors",
    "fleet.indexing.notifications",
    "fleet.indexing.labels",
    "fleet.db.pool",
    "fleet.fetcher.main",
    "fleet.identity.did",
    "fleet.identity.handles",
]

_PROBE = r"""
import importlib, json, sys
from prometheus_client import REGISTRY
for m in sys.argv[1:]:
    importlib.import_module(m)
from fleet.supervisor import master
master._master_metrics()  # the master registers its metrics lazily, after fork-safe setup
names = sorted(n for n in REGISTRY._names_to_collectors if n.startswith("rsky_"))
families = sorted({f.name + ("_total" if f.type == "counter" else "")
                   for c in REGISTRY._collector_to_names for f in getattr(c, "describe", list)() if f.name.startswith("rsky_")})
print(json.dumps({"names": names, "families": families}))
"""


def registered() -> dict[str, list[str]]:
    p = subprocess.run([sys.executable, "-c", _PROBE, *METRIC_MODULES], capture_output=True, text=True, cwd=ROOT,
                       timeout=120)
    assert p.returncode == 0, "importing the role modules together failed:\n" + p.stderr[-2000:]
    return json.loads(p.stdout)


def dashboard() -> dict:
    with open(DASHBOARD, encoding="utf-8") as f:
        return json.load(f)


def exprs(d: dict) -> list[str]:
    return [t["expr"] for p in d["panels"] if p.get("type") != "row" for t in p["targets"]]


def test_every_metric_the_dashboard_queries_is_registered_by_a_role_module():
    names = set(registered()["names"])  # as exposed: x_total, x_bucket, x_sum, x_count, gauges
    queried = {m for e in exprs(dashboard()) for m in re.findall(r"\brsky_[a-z0-9_]+", e)}
    assert queried, "the dashboard queries no rsky_ metric"
    missing = sorted(queried - names)
    assert not missing, f"the dashboard queries metrics no module registers: {missing}"


def test_dashboard_is_an_importable_grafana_dashboard():
    d = dashboard()
    assert d["title"] and d["uid"] == "rsky-fleet" and isinstance(d["schemaVersion"], int)
    ids = [p["id"] for p in d["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    variables = {v["name"]: v for v in d["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    for p in d["panels"]:
        g = p["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24 and g["h"] > 0, p["title"]
        if p["type"] == "row":
            continue
        assert p["datasource"]["uid"] == "${datasource}", p["title"]
        assert p["targets"], p["title"]
        refs = [t["refId"] for t in p["targets"]]
        assert len(refs) == len(set(refs)) and all(t["expr"].strip() for t in p["targets"]), p["title"]


def test_metrics_doc_lists_every_registered_metric_and_nothing_else():
    families = set(registered()["families"])
    with open(METRICS_DOC, encoding="utf-8") as f:
        doc = f.read()
    documented = set(re.findall(r"^\| `(rsky_[a-z0-9_]+)`", doc, re.M))
    assert not sorted(families - documented), f"undocumented metrics: {sorted(families - documented)}"
    assert not sorted(documented - families), f"documented metrics nobody registers: {sorted(documented - families)}"

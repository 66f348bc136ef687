"""fleet/metrics.BatchHistogram exposes what prometheus_client's Histogram exposes for the same
observations (every bucket, count and sum, per label set), and a scrape served over HTTP parses."""

from __future__ import annotations

import threading
import urllib.request

from prometheus_client import CollectorRegistry, Histogram, generate_latest, start_http_server
from prometheus_client.parser import text_string_to_metric_families

from fleet.embedded import free_port
from fleet.metrics import BatchHistogram

BUCKETS = (0.05, 0.5, 1, 10, 86400)
BATCHES = {
    "0": [[0.0, 0.05, 0.0500001, 0.5, 0.7], [3.0, 86400.0, 86400.5, 1e12], []],
    "1": [[10.0, 10.0, 0.2]],
}


def _samples(registry: CollectorRegistry, name: str) -> set[tuple[str, tuple, float]]:
    text = generate_latest(registry).decode()
    out = set()
    for fam in text_string_to_metric_families(text):
        if fam.name != name:
            continue
        for s in fam.samples:
            if s.name.endswith(("_bucket", "_count", "_sum")):
                out.add((s.name.replace(name, "x"), tuple(sorted(s.labels.items())), round(s.value, 6)))
    return out


def test_the_exposition_equals_prometheus_clients_histogram_for_the_same_observations():
    ours_reg, theirs_reg = CollectorRegistry(), CollectorRegistry()
    ours = BatchHistogram("lag_seconds", "lag", ["shard"], BUCKETS, registry=ours_reg)
    theirs = Histogram("lag_seconds", "lag", ["shard"], buckets=BUCKETS, registry=theirs_reg)
    for shard, batches in BATCHES.items():
        for batch in batches:
            ours.observe_many((shard,), batch)
            for v in batch:
                theirs.labels(shard).observe(v)
    got, want = _samples(ours_reg, "lag_seconds"), _samples(theirs_reg, "lag_seconds")
    assert got == want
    assert ("x_count", (("shard", "0"),), 9.0) in got  # the empty batch added nothing
    assert ("x_bucket", (("le", "0.05"), ("shard", "0")), 2.0) in got  # a bound is "less or equal"


def test_a_scrape_over_http_reads_the_series_while_batches_arrive():
    reg = CollectorRegistry()
    h = BatchHistogram("lag_seconds", "lag", ["shard"], BUCKETS, registry=reg)
    port = free_port()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=reg)
    try:
        stop = threading.Event()

        def feed() -> None:
            while not stop.is_set():
                h.observe_many(("0",), [0.1] * 100)

        t = threading.Thread(target=feed)
        t.start()
        try:
            for _ in range(20):
                text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
                fam = [f for f in text_string_to_metric_families(text) if f.name == "lag_seconds"][0]
                values = {s.name: s.value for s in fam.samples if s.labels.get("le") in (None, "+Inf")}
                # one consistent snapshot: every observation is 0.1, in whole batches of 100
                assert values["lag_seconds_count"] % 100 == 0
                assert abs(values["lag_seconds_sum"] - 0.1 * values["lag_seconds_count"]) < 1e-6 * max(1.0, values["lag_seconds_count"])
        finally:
            stop.set()
            t.join()
    finally:
        server.shutdown()
        thread.join()

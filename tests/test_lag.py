"""tools/lag.py against a real Redis put into each state on purpose.

The window's two samples are taken by ``main`` itself; instead of sleeping, each test passes a
``pause`` that makes the change the window should see (a consumer draining, nothing at all...).
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
from datetime import datetime, timezone

import pytest
import redis

from tools import lag

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


@pytest.fixture
def r(redis_url):
    c = redis.Redis.from_url(redis_url, decode_responses=True)
    yield c
    c.close()


def add(r, stream, first, n, t=None):
    """Entries ``first..first+n-1`` with the relay seq as id, like the ingester writes them."""
    t = time.time() if t is None else t
    for seq in range(first, first + n):
        ev = {"type": "create", "seq": seq, "time": iso(t), "did": "did:plc:x", "collection": "app.bsky.feed.like"}
        r.xadd(stream, {"event": json.dumps(ev)}, id=f"{seq}-0")


def group(r, stream, name="indexer"):
    r.xgroup_create(stream, name, id="0", mkstream=True)


def consume(r, stream, n, consumer="shard-0", ack=True, name="indexer"):
    """What an indexer does: read a batch, apply it, XACK+XDEL."""
    got = r.xreadgroup(name, consumer, {stream: ">"}, count=n)
    ids = [i for _, entries in got for i, _ in entries]
    if ack and ids:
        r.xack(stream, name, *ids)
        r.xdel(stream, *ids)
    return ids


def fleet(r, shards=1):
    """Every shard stream with its group and a live consumer, all empty."""
    for k in range(shards):
        for base in ("firehose_live", "firehose_backfill"):
            s = base if shards == 1 else f"{base}:{k}"
            group(r, s)
            r.xgroup_createconsumer(s, "indexer", f"shard-{k}")


class Clock:
    """The samples' clock: a window passes when ``pause`` is called, exactly, without sleeping."""

    def __init__(self):
        self.t = time.time()

    def __call__(self):
        return self.t


def run(redis_url, *args, pause=None):
    out = io.StringIO()
    clock = Clock()

    def window(seconds):
        clock.t += seconds
        if pause is not None:
            pause(seconds)

    code = lag.main(["--redis-url", redis_url, *args], pause=window, clock=clock, out=out)
    return code, out.getvalue()


def run_json(redis_url, *args, pause=None):
    code, text = run(redis_url, "--json", *args, pause=pause)
    return code, json.loads(text)


def row(report, stream, group="indexer"):
    return next(x for x in report["streams"] if x["stream"] == stream and x["group"] == group)


def problems(report):
    return " | ".join(p["text"] for p in report["problems"])


# --- healthy --------------------------------------------------------------------------------

def test_idle_healthy_fleet_is_ok_with_exit_0(redis_url, r):
    fleet(r, shards=2)
    code, text = run(redis_url, "--shards", "2", "--window", "0")
    assert code == 0
    assert "fleet: OK (exit 0)" in text
    assert "firehose_live:1" in text and "firehose_backfill:0" in text
    code, rep = run_json(redis_url, "--shards", "2", "--window", "0")
    assert code == 0 and rep["status"] == "OK" and rep["exit_code"] == 0
    assert [s["status"] for s in rep["shards"]] == ["OK", "OK"]
    assert row(rep, "firehose_live:1")["lag"] == 0


def test_draining_shard_with_backlog_is_ok_and_shows_rates_and_eta(redis_url, r):
    fleet(r, shards=2)
    add(r, "firehose_live:0", 1, 200)
    consume(r, "firehose_live:0", 50)

    def drain(_):
        add(r, "firehose_live:0", 201, 10)  # the ingester keeps writing, slower than the indexer reads
        consume(r, "firehose_live:0", 100)

    code, rep = run_json(redis_url, "--shards", "2", "--window", "1", pause=drain)
    assert code == 0, problems(rep)
    x = row(rep, "firehose_live:0")
    assert x["status"] == "OK"
    assert x["lag"] == 60 and x["lag_delta"] == -90
    assert x["rate_in"] == 10.0 and x["rate_out"] == 100.0
    assert x["eta_s"] == round(60 / 90, 1)
    assert x["position"] == "ok" and x["pending"] == 0


def test_discovers_shard_count_from_the_streams(redis_url, r):
    fleet(r, shards=4)
    code, rep = run_json(redis_url, "--window", "0")
    assert code == 0
    assert rep["shard_count"] == 4 and rep["shard_count_discovered"] is True


# --- stalled and stopped ----------------------------------------------------------------------

def test_stalled_consumer_is_stall_with_exit_2(redis_url, r):
    fleet(r, shards=2)
    add(r, "firehose_live:1", 1, 100)
    consume(r, "firehose_live:1", 10, consumer="shard-1", ack=False)  # took a batch, never finishes it

    code, text = run(redis_url, "--shards", "2", "--window", "1")  # pause does nothing: nothing moves
    assert code == 2
    assert "fleet: STALL (exit 2)" in text
    assert "STALL  shard 1 firehose_live:1: 90 waiting, 10 pending, and the cursor did not move" in text
    assert "docs/operating.md#stall" in text
    code, rep = run_json(redis_url, "--shards", "2", "--window", "1")
    assert code == 2 and rep["status"] == "STALL"
    assert [s["status"] for s in rep["shards"]] == ["OK", "STALL"]
    x = row(rep, "firehose_live:1")
    assert x["lag"] == 90 and x["pending"] == 10
    assert x["oldest_pending"]["id"] == "1-0" and x["oldest_pending"]["age_s"] is not None


def test_single_sample_judges_an_old_unacknowledged_entry_as_stall(redis_url, r):
    fleet(r)
    add(r, "firehose_live", 1, 5)
    consume(r, "firehose_live", 5, consumer="shard-0", ack=False)
    code, rep = run_json(redis_url, "--window", "0", "--stall-idle", "0")
    deadline = time.monotonic() + 5
    while row(rep, "firehose_live")["oldest_pending"]["idle_s"] <= 0 and time.monotonic() < deadline:
        code, rep = run_json(redis_url, "--window", "0", "--stall-idle", "0")
    assert code == 2 and rep["status"] == "STALL"
    assert "delivered" in problems(rep) and "not acknowledged" in problems(rep)


def test_group_without_consumer_is_stop(redis_url, r):
    fleet(r)
    add(r, "firehose_live", 1, 20)
    r.xgroup_delconsumer("firehose_live", "indexer", "shard-0")
    code, text = run(redis_url, "--window", "0")
    assert code == 2
    assert "fleet: STOP (exit 2)" in text
    assert "the group has no consumer" in text
    code, rep = run_json(redis_url, "--window", "0")
    assert rep["status"] == "STOP" and row(rep, "firehose_live")["consumers"] == []


def test_consumer_silent_longer_than_stop_idle_is_stop(redis_url, r):
    fleet(r)
    add(r, "firehose_live", 1, 20)
    deadline = time.monotonic() + 5
    while r.xinfo_consumers("firehose_live", "indexer")[0]["idle"] < 50 and time.monotonic() < deadline:
        time.sleep(0.01)  # polling a condition: the consumer's idle time passing 50 ms
    code, rep = run_json(redis_url, "--window", "0", "--stop-idle", "0.04")
    assert code == 2 and rep["status"] == "STOP"
    assert "no consumer has read for" in problems(rep)


# --- cursor anomalies -------------------------------------------------------------------------

def test_cursor_in_trimmed_region_is_rewind_and_names_the_lost_entries(redis_url, r):
    fleet(r)
    add(r, "firehose_live", 1, 100)
    consume(r, "firehose_live", 10)
    r.xtrim("firehose_live", maxlen=50, approximate=False)  # 11..50 removed before any delivery

    code, text = run(redis_url, "--window", "0")
    assert code == 2
    assert "fleet: REWIND (exit 2)" in text
    assert "10-0 TRIMMED(-40)" in text
    assert "cursor 10-0 is in a trimmed region: 40 entries were removed before delivery (first entry 51-0)" in text
    code, rep = run_json(redis_url, "--window", "0")
    x = row(rep, "firehose_live")
    assert rep["status"] == "REWIND" and x["position"] == "trimmed" and x["lost"] == 40


def test_repair_explains_and_changes_nothing_without_yes(redis_url, r):
    fleet(r)
    add(r, "firehose_live", 1, 100)
    consume(r, "firehose_live", 10)
    r.xtrim("firehose_live", maxlen=50, approximate=False)
    before = r.xinfo_groups("firehose_live")

    code, text = run(redis_url, "--repair-trimmed-cursor", "0")
    assert code == 1
    assert "XGROUP SETID firehose_live indexer 50-18446744073709551615 ENTRIESREAD 50" in text
    assert "40 entries were removed before delivery" in text
    assert "nothing changed: add --yes" in text
    assert r.xinfo_groups("firehose_live") == before


def test_repair_with_yes_points_the_cursor_before_the_first_entry(redis_url, r):
    fleet(r)
    add(r, "firehose_live", 1, 100)
    consume(r, "firehose_live", 10)
    r.xtrim("firehose_live", maxlen=50, approximate=False)

    code, text = run(redis_url, "--repair-trimmed-cursor", "0", "--yes")
    assert code == 0 and "applied 1 change(s)" in text
    code, rep = run_json(redis_url, "--window", "0")
    x = row(rep, "firehose_live")
    assert x["position"] == "ok" and x["lag"] == 50 and rep["status"] == "OK"
    assert consume(r, "firehose_live", 1) == ["51-0"]  # the next read is the first entry left
    code, text = run(redis_url, "--repair-trimmed-cursor", "0")
    assert code == 0 and "nothing to repair" in text


def test_cursor_past_the_end_is_rewind(redis_url, r):
    fleet(r)
    add(r, "firehose_live", 1, 10)
    r.xgroup_setid("firehose_live", "indexer", "5000-0")  # e.g. a relay whose seq restarted lower
    code, rep = run_json(redis_url, "--window", "0")
    assert code == 2 and rep["status"] == "REWIND"
    assert row(rep, "firehose_live")["position"] == "past_end"
    assert "past the end of the stream (last id 10-0)" in problems(rep)
    code, text = run(redis_url, "--window", "0")
    assert "5000-0 PAST-END" in text


def test_cursor_moved_back_within_the_window_is_rewind(redis_url, r):
    fleet(r)
    add(r, "firehose_live", 1, 50)
    consume(r, "firehose_live", 30, ack=False)
    code, rep = run_json(redis_url, "--window", "1",
                         pause=lambda _: r.xgroup_setid("firehose_live", "indexer", "10-0"))
    assert code == 2 and rep["status"] == "REWIND"
    assert "cursor moved back from 30-0 to 10-0" in problems(rep)


def test_pending_entry_removed_before_ack_is_rewind(redis_url, r):
    fleet(r)
    add(r, "firehose_live", 1, 10)
    consume(r, "firehose_live", 3, ack=False)
    r.xdel("firehose_live", "1-0")  # deleted while delivered but unacknowledged
    code, rep = run_json(redis_url, "--window", "0")
    assert code == 2 and rep["status"] == "REWIND"
    assert "pending entry 1-0 is no longer in the stream" in problems(rep)


# --- poison, DLQ --------------------------------------------------------------------------

def test_poison_message_with_many_deliveries_is_warn(redis_url, r):
    fleet(r)
    add(r, "firehose_live", 1, 100)
    consume(r, "firehose_live", 1, ack=False)  # 1-0 fails...
    for _ in range(5):  # ...and is re-read from the pending list again and again
        r.xreadgroup("indexer", "shard-0", {"firehose_live": "0"}, count=1)

    def progress(_):  # the rest of the shard keeps moving
        consume(r, "firehose_live", 40)

    code, text = run(redis_url, "--window", "1", pause=progress)
    assert code == 1
    assert "fleet: WARN (exit 1)" in text
    assert "entry 1-0 delivered 6 times: poison message?" in text
    code, rep = run_json(redis_url, "--window", "1", pause=progress)
    x = row(rep, "firehose_live")
    assert rep["status"] == "WARN" and x["max_deliveries"] == {"id": "1-0", "deliveries": 6}


def test_growing_dead_letter_stream_is_warn(redis_url, r):
    fleet(r)
    add(r, "firehose_live", 1, 100)
    r.xadd("firehose_live:dlq", {"event": "{}", "error": "old"})

    def dead_letter_one(_):
        ids = consume(r, "firehose_live", 20, ack=False)
        r.xadd("firehose_live:dlq", {"event": "{}", "error": "bad record", "id": ids[0]})
        r.xack("firehose_live", "indexer", *ids)
        r.xdel("firehose_live", *ids)

    code, text = run(redis_url, "--window", "1", pause=dead_letter_one)
    assert code == 1
    assert "dead-letter stream firehose_live:dlq grew by 1 to 2" in text
    code, rep = run_json(redis_url, "--window", "0")
    assert code == 0 and row(rep, "firehose_live")["dlq"]["length"] == 2  # a still DLQ is shown, not alarming


def test_lag_growing_while_consumer_progresses_is_warn(redis_url, r):
    fleet(r)
    add(r, "firehose_live", 1, 10)

    def falling_behind(_):
        add(r, "firehose_live", 11, 100)
        consume(r, "firehose_live", 5)

    code, rep = run_json(redis_url, "--window", "1", pause=falling_behind)
    assert code == 1 and rep["status"] == "WARN"
    assert "lag growing: +95" in problems(rep)


# --- missing and leftover streams ---------------------------------------------------------

def test_missing_shard_stream_is_stop(redis_url, r):
    fleet(r, shards=2)
    r.delete("firehose_live:1")
    code, text = run(redis_url, "--shards", "2", "--window", "0")
    assert code == 2
    assert "fleet: STOP (exit 2)" in text
    assert "shard 1 firehose_live:1: stream missing" in text
    code, rep = run_json(redis_url, "--shards", "2", "--window", "0")
    assert rep["status"] == "STOP"
    assert [s["status"] for s in rep["shards"]] == ["OK", "STOP"]
    x = row(rep, "firehose_live:1", group=None)
    assert x["exists"] is False and x["status"] == "STOP"


def test_missing_stream_in_the_middle_is_found_without_shards_flag(redis_url, r):
    fleet(r, shards=3)
    r.delete("firehose_live:1", "firehose_backfill:1")
    code, rep = run_json(redis_url, "--window", "0")
    assert code == 2 and rep["shard_count"] == 3
    assert rep["shards"][1]["status"] == "STOP"


def test_stream_without_its_group_is_stop(redis_url, r):
    fleet(r)
    add(r, "repo_backfill", 1, 3)  # discovery queued repos, but no fetcher group exists
    code, rep = run_json(redis_url, "--window", "0")
    assert code == 2
    assert "no consumer group 'fetcher'" in problems(rep)


def test_leftover_shard_stream_with_entries_after_shard_count_change_is_stop(redis_url, r):
    fleet(r, shards=2)
    add(r, "firehose_live:1", 1, 5)
    code, rep = run_json(redis_url, "--shards", "1", "--window", "0")
    assert code == 2
    assert "no shard owns this stream" in problems(rep)


def test_absent_optional_streams_are_not_alarming(redis_url, r):
    fleet(r)
    code, rep = run_json(redis_url, "--window", "0")
    assert code == 0
    assert row(rep, "label_live", group=None)["status"] == "-"


# --- unknown lag, unreachable Redis -----------------------------------------------------------

def test_lag_redis_cannot_compute_is_shown_as_question_mark(redis_url, r):
    add(r, "firehose_live", 1, 10)
    r.xdel("firehose_live", "1-0", "2-0", "3-0")  # applied and deleted
    r.xdel("firehose_live", "7-0")  # a tombstone after the cursor...
    r.xgroup_create("firehose_live", "indexer", id="3-0")  # ...and a cursor set by id: Redis cannot count
    r.xgroup_createconsumer("firehose_live", "indexer", "shard-0")
    group(r, "firehose_backfill")
    code, text = run(redis_url, "--window", "0")
    assert code == 0
    cells = next(ln for ln in text.splitlines() if ln.split()[1:2] == ["firehose_live"]).split()
    assert cells[5:8] == ["3-0", "<first?", "?"]  # CURSOR (before the first entry: trimmed? unknown), LAG
    code, rep = run_json(redis_url, "--window", "0")
    x = row(rep, "firehose_live")
    assert x["lag"] is None and x["unread"] is True


def test_unreachable_redis_is_unknown_with_exit_3(redis_url):
    code, text = run("redis://127.0.0.1:1/0", "--window", "0")
    assert code == 3
    assert "fleet: UNKNOWN (exit 3): cannot read Redis" in text
    code, rep = run_json("redis://127.0.0.1:1/0", "--window", "0")
    assert code == 3 and rep["status"] == "UNKNOWN" and rep["exit_code"] == 3


# --- relays and backfill ---------------------------------------------------------------------

def test_relay_cursor_shows_seconds_behind_and_rate(redis_url, r):
    fleet(r)
    add(r, "firehose_live", 1, 100, t=time.time() - 30)
    r.set("firehose_live:cursor:relay.test", 100)

    def more(_):
        add(r, "firehose_live", 101, 50, t=time.time() - 30)
        r.set("firehose_live:cursor:relay.test", 150)

    code, rep = run_json(redis_url, "--window", "1", pause=more)
    (relay,) = rep["relays"]
    assert relay["host"] == "relay.test" and relay["seq"] == 150
    assert 29 <= relay["behind_s"] <= 60
    assert relay["rate"] == 50.0
    code, text = run(redis_url, "--window", "0")
    assert "relay.test" in text and "150" in text


def test_backfill_progress_rate_eta_and_skipped_range(redis_url, r):
    fleet(r)
    group(r, "repo_backfill", "fetcher")
    r.hset("backfill:stats", mapping={"queued": 1000, "done": 100, "failed": 2, "gone": 3, "records": 5000})
    r.set("repo_backfill:cursor:relay.test", "did:plc:abc")
    r.xadd("repo_backfill:skipped:relay.test", {"cursor": "did:plc:bad", "error": "HTTP 500", "attempts": "5"})

    code, rep = run_json(redis_url, "--window", "1",
                         pause=lambda _: r.hset("backfill:stats", mapping={"done": 300}))
    bf = rep["backfill"]
    assert bf["remaining"] == 1000 - 305 and bf["rate"] == 200.0 and bf["eta_s"] == round(695 / 200, 1)
    assert bf["listrepos"][0]["skipped"] == 1 and bf["listrepos"][0]["done"] is None
    assert code == 1 and "listRepos range(s) skipped" in problems(rep)
    code, text = run(redis_url, "--window", "0")
    assert "queued 1000  done 300" in text and "cursor=did:plc:bad" in text and "HTTP 500" in text


# --- watch, script -------------------------------------------------------------------------------

def test_watch_until_drained_stops_once_everything_is_acknowledged(redis_url, r):
    fleet(r)
    add(r, "firehose_live", 1, 30)
    r.set("firehose_live:cursor:relay.test", 30)
    rounds = []

    def indexer_step(_):
        rounds.append(1)
        consume(r, "firehose_live", 10)

    code, text = run(redis_url, "--watch", "--until-drained", "--window", "0", "--interval", "0.01",
                     "--timeout", "30", pause=indexer_step)
    assert code == 0
    assert text.rstrip().endswith("drained: every stream read and acknowledged")
    assert len(rounds) >= 3


def test_watch_until_drained_times_out_with_exit_2(redis_url, r):
    fleet(r)
    add(r, "firehose_live", 1, 30)
    r.set("firehose_live:cursor:relay.test", 30)
    code, text = run(redis_url, "--watch", "--until-drained", "--window", "0", "--interval", "0.01",
                     "--timeout", "0.05", "--stall-idle", "1000", pause=lambda s: time.sleep(s))
    assert code == 2 and "not drained after 0.05s" in text


def test_tools_lag_runs_as_a_script(redis_url, r):
    fleet(r)
    p = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "lag.py"), "--redis-url", redis_url,
                        "--json", "--window", "0"], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["status"] == "OK"


def test_group_recreated_at_dollar_strands_waiting_entries_and_is_stall(redis_url, r):
    add(r, "firehose_live", 1, 50)
    r.xgroup_create("firehose_live", "indexer", id="$")  # the old pipeline's 38 hours: lag says 0
    r.xgroup_createconsumer("firehose_live", "indexer", "shard-0")
    group(r, "firehose_backfill")
    code, rep = run_json(redis_url, "--window", "0")
    x = row(rep, "firehose_live")
    assert x["lag"] == 0 and x["stranded"] == 50 and x["position"] == "stranded"
    assert code == 2 and rep["status"] == "STALL"
    assert "50 entries at or before the cursor 50-0 are neither pending nor acknowledged" in problems(rep)

    code, text = run(redis_url, "--repair-trimmed-cursor", "0", "--yes")
    assert code == 0 and "XGROUP SETID firehose_live indexer 0-18446744073709551615" in text
    assert len(consume(r, "firehose_live", 100)) == 50
    code, rep = run_json(redis_url, "--window", "0")
    assert code == 0, problems(rep)


def test_every_fix_link_names_a_section_of_the_runbook():
    import re

    from fleet.lag import judge

    with open(os.path.join(ROOT, "docs", "operating.md"), encoding="utf-8") as f:
        headings = [m.group(1) for m in re.finditer(r"^#+ (.+)$", f.read(), re.M)]
    slugs = {re.sub(r"[^a-z0-9 _-]", "", h.lower()).replace(" ", "-") for h in headings}
    links = list(judge.FIX.values()) + [f"{judge.RUNBOOK}#backfill-gap"]
    assert all(link.split("#", 1)[1] in slugs for link in links), sorted(slugs)

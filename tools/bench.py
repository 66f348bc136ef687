"""`make bench`: run every benchmark, print each figure, write var/bench/results.json.

Each area has a module tools/bench_<area>.py exposing ``run(quick: bool = False) -> list[dict]``
of ``{name, value, unit, ceiling, ratio}`` (ceiling and ratio measured in the same run, or None).
A benchmark that fails is reported as such and does not hide the others.

    python tools/bench.py [--quick] [--only ingest,index,backfill]
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import sys
import time
import traceback

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
AREAS = ["ingest", "index", "backfill"]


def machine() -> dict:
    mem = 0
    try:
        with open("/proc/meminfo") as f:
            mem = int(f.readline().split()[1]) // 1024
    except OSError:
        pass
    return {"cores": os.cpu_count(), "memory_mib": mem, "python": platform.python_version(), "machine": platform.machine()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench")
    p.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    p.add_argument("--only", default=",".join(AREAS))
    p.add_argument("--out", default=os.path.join(ROOT, "var", "bench", "results.json"))
    a = p.parse_args(argv)
    if ROOT not in sys.path:
        sys.path.insert(0, ROOT)
    results: list[dict] = []
    failed = []
    for area in [x for x in a.only.split(",") if x]:
        t0 = time.monotonic()
        try:
            mod = importlib.import_module(f"tools.bench_{area}")
            rows = mod.run(quick=a.quick)
        except Exception:
            traceback.print_exc()
            failed.append(area)
            continue
        for r in rows:
            r.setdefault("ceiling", None)
            r.setdefault("ratio", None)
            r["area"] = area
            results.append(r)
            ceil = f"  ceiling {r['ceiling']:.0f} {r['unit']}  ratio {r['ratio']:.2f}" if r["ceiling"] else ""
            print(f"{r['name']:<44} {r['value']:>12.1f} {r['unit']}{ceil}")
        print(f"-- {area}: {time.monotonic() - t0:.1f}s")
    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    with open(a.out, "w") as f:
        json.dump(results, f, indent=2)
    with open(os.path.join(os.path.dirname(a.out), "machine.json"), "w") as f:
        json.dump({**machine(), "failed": failed}, f, indent=2)
    print(f"machine: {machine()}")
    print(f"wrote {a.out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

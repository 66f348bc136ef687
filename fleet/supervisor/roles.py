"""Which processes a configuration asks for, and where each role's code lives.

A role is ``async def run(cfg, ctx)`` in a module imported *in the child, after fork*:

    ingester -> fleet.ingester.main:run   (x FLEET_INGESTERS)
    fetcher  -> fleet.fetcher.main:run    (x FLEET_FETCHERS)
    indexer  -> fleet.indexer.main:run    (one process per shard in SHARDS)

Testing hook: ``FLEET_EXTRA_ROLES="name=package.module:function,..."``. A name that is a
built-in role replaces that role's code (so a test can run ``indexer`` shards that idle); any
other name adds one process running that function. Not for production use.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

BUILTIN = {
    "ingester": "fleet.ingester.main:run",
    "fetcher": "fleet.fetcher.main:run",
    "indexer": "fleet.indexer.main:run",
}
ORDER = ("ingester", "fetcher", "indexer")


@dataclass(frozen=True)
class ChildSpec:
    """One supervised process: its identity is ``name`` (stable across restarts and reloads)."""

    name: str  # "ingester-1", "indexer-3", "sleeper"
    role: str
    instance: str  # consumer name within the fleet: "1", "shard-3"
    target: str  # "module:function"
    shards: tuple[int, ...] = ()
    shard_count: int = 1
    ordinal: int = 0  # position in the child list; metrics port = METRICS_PORT + 1 + ordinal

    @property
    def title(self) -> str:
        """The process title: ``rsky-fleet: indexer shard 3/8``, ``rsky-fleet: ingester``."""
        if self.role == "indexer" and self.shards:
            return f"rsky-fleet: indexer shard {','.join(map(str, self.shards))}/{self.shard_count}"
        return f"rsky-fleet: {self.role}"


def parse_extra_roles(items: list[str]) -> dict[str, str]:
    """``["sleeper=tests.roles:sleeper"]`` -> ``{"sleeper": "tests.roles:sleeper"}``."""
    out = {}
    for item in items:
        name, sep, target = item.partition("=")
        mod, colon, fn = target.partition(":")
        if not sep or not colon or not name.strip() or not mod.strip() or not fn.strip():
            raise ValueError(f"{item!r} is not name=module:function")
        out[name.strip()] = target.strip()
    return out


def child_specs(cfg: Any) -> list[ChildSpec]:
    """The processes ``cfg`` asks for, in a stable order (ingesters, fetchers, indexers, extras)."""
    extra = parse_extra_roles(cfg.FLEET_EXTRA_ROLES)
    targets = {**BUILTIN, **{k: v for k, v in extra.items() if k in BUILTIN}}
    roles = set(cfg.FLEET_ROLES)
    specs: list[ChildSpec] = []

    def add(**kw: Any) -> None:
        specs.append(ChildSpec(ordinal=len(specs), shard_count=cfg.SHARD_COUNT, **kw))

    if "ingester" in roles:
        for i in range(1, cfg.FLEET_INGESTERS + 1):
            add(name=f"ingester-{i}", role="ingester", instance=str(i), target=targets["ingester"])
    if "fetcher" in roles:
        for i in range(1, cfg.FLEET_FETCHERS + 1):
            add(name=f"fetcher-{i}", role="fetcher", instance=str(i), target=targets["fetcher"])
    if "indexer" in roles:
        for s in cfg.shards:
            add(name=f"indexer-{s}", role="indexer", instance=f"shard-{s}", target=targets["indexer"], shards=(s,))
    for name, target in extra.items():
        if name not in BUILTIN:
            add(name=name, role=name, instance="1", target=target)
    return specs


def master_title(specs: list[ChildSpec]) -> str:
    """``rsky-fleet: master [8 indexers, 1 ingester, 1 fetcher]``."""
    counts: dict[str, int] = {}
    for s in specs:
        counts[s.role] = counts.get(s.role, 0) + 1
    order = ["indexer", "ingester", "fetcher"] + sorted(r for r in counts if r not in BUILTIN)
    parts = [f"{counts[r]} {r}{'' if counts[r] == 1 else 's'}" for r in order if r in counts]
    return f"rsky-fleet: master [{', '.join(parts) or 'no children'}]"


class RoleMissing(Exception):
    """The module of a configured role is not installed."""


def load_target(target: str) -> Callable[[Any, Any], Awaitable[None]]:
    """Import ``module:function``; RoleMissing when the module itself does not exist."""
    mod_name, _, fn_name = target.partition(":")
    try:
        mod = importlib.import_module(mod_name)
    except ModuleNotFoundError as e:
        if e.name and (mod_name == e.name or mod_name.startswith(e.name + ".")):
            raise RoleMissing(f"role module {mod_name} is not installed") from None
        raise
    fn = getattr(mod, fn_name, None)
    if fn is None:
        raise RoleMissing(f"{mod_name} has no {fn_name}")
    return fn

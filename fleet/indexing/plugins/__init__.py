"""The collection plugins, registered by NSID.

Each public module of this package exposes ``PLUGIN`` (a ``fleet.indexing.plugin.Plugin``,
or ``PLUGINS``, a list of them). ``registry()`` imports them all; one that is
missing or fails to import is logged and its collection is "not handled" (its events are
skipped like any unknown collection) instead of stopping the indexer.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any, Callable

from ..plugin import InvalidRecord, Plugin
from ._helpers import validator as lexicon_check

def module_names() -> list[str]:
    """Every public module of this package (``_name`` modules are helpers)."""
    return sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))


def validator(nsid: str) -> Callable[[dict[str, Any]], None]:
    """The lexicon check of ``nsid`` (``_helpers.validator``) after a shape check: the record must
    be a JSON object, or InvalidRecord."""
    check = lexicon_check(nsid)

    def validate(record: dict[str, Any]) -> None:
        if not isinstance(record, dict):
            raise InvalidRecord(f"{nsid}: record is not an object")
        check(record)

    return validate


def registry(log: Any = None) -> dict[str, Plugin]:
    """``{nsid: Plugin}`` for every plugin module that imports."""
    out: dict[str, Plugin] = {}
    for name in module_names():
        try:
            mod = importlib.import_module(f"{__name__}.{name}")
        except ImportError as e:
            if log is not None and not str(e).startswith("No module named 'fleet.indexing.plugins."):
                log.warning("plugin_import_failed", module=name, error=str(e))
            continue
        found = getattr(mod, "PLUGIN", None) or getattr(mod, "PLUGINS", None)
        # (a submodule named ``list`` shadows the builtin in this package's namespace)
        plugins = [found] if isinstance(found, Plugin) else [p for p in (found or ()) if isinstance(p, Plugin)]
        for p in plugins:
            out[p.collection] = p
    return out

"""What the indexing code receives besides the database connection.

One ``IndexingContext`` per indexer process, built by the runtime (``fleet/indexer``) and
handed to ``Indexer``; the record plugins never see it, the account/identity handlers
(``actors.on_event``) and label handler (``labels.apply_label``) do.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..log import Logger, get_logger


@dataclass
class IndexingContext:
    cfg: Any = None  # fleet.config.Config (None in direct test harnesses)
    redis: Any = None  # redis.asyncio.Redis: identity cache, etc.
    resolver: Any = None  # identity resolver (DID doc / handle), see fleet/identity
    log: Logger = field(default_factory=lambda: get_logger("indexing"))
    shards: list[int] = field(default_factory=list)  # shards this process owns
    shard_count: int = 1

"""``chat.bsky.actor.declaration``: kept in the generic ``record`` table only (rkey ``self``), as the official
placeholder plugin. The official does not validate these records (its lexicon check is disabled)."""

from __future__ import annotations

from ._helpers import no_validation
from ._placeholder import placeholder

COLLECTION = "chat.bsky.actor.declaration"

PLUGIN = placeholder(COLLECTION, no_validation)

"""``app.bsky.notification.declaration``: kept in the generic ``record`` table only (rkey ``self``), as the official
placeholder plugin."""

from __future__ import annotations

from ._helpers import validator
from ._placeholder import placeholder

COLLECTION = "app.bsky.notification.declaration"

PLUGIN = placeholder(COLLECTION, validator(COLLECTION))

"""app.bsky.feed.postgate (official ``plugins/post-gate.js``): post_gate + post.hasPostGate.

Same shape as the thread gate (``thread_gate.make``); a late post gate's effect on quotes
already indexed is ``order.py``'s.
"""

from __future__ import annotations

from .thread_gate import make

NSID = "app.bsky.feed.postgate"

PLUGIN = make(NSID, "post_gate", "hasPostGate")

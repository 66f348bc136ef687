#!/usr/bin/env python3
"""Where the fleet stands: per stream and shard lag, cursors, consumers, DLQs, relays, backfill.

The logic lives in :mod:`fleet.lag` (``python tools/lag.py --help``); this file lets the tool run
from a checkout, and ``rsky-lag`` (setup.py) calls the same :func:`main`.
"""

from __future__ import annotations

import os
import sys

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from fleet.lag.cli import main  # noqa: E402

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())

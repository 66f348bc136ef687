"""Run one fetcher process alone: ``python -m fleet.fetcher`` (configuration from the environment).

The supervisor normally forks fetchers; this entry point serves tools (``tools/conform.py
--mode backfill``), benchmarks and debugging. ``FETCHER_INSTANCE`` names its consumer in the
``fetcher`` group (default ``1``): a restart under the same name first re-reads its own pending
entries. SIGTERM/SIGINT finish the repos in hand, then exit 0.
"""

import os
import sys

from ..runtime import run_standalone
from .main import run

if __name__ == "__main__":
    sys.exit(run_standalone("fetcher", run, instance=lambda cfg: os.environ.get("FETCHER_INSTANCE", "1")))

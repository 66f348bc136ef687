"""Run the ingester role alone: ``python -m fleet.ingester`` (configuration from the environment).

The supervisor normally forks it; this entry point serves tests, benchmarks and debugging.
SIGTERM/SIGINT drain (the batch in hand is written with its cursor) and exit 0.
"""

import sys

from ..runtime import run_standalone
from .main import run

if __name__ == "__main__":
    sys.exit(run_standalone("ingester", run))

"""Grapheme cluster counting (``maxGraphemes`` / ``minGraphemes``).

The official validator counts with ``Intl.Segmenter`` (ICU 78, Unicode 17 extended grapheme
clusters, UAX #29 including emoji ZWJ sequences, regional-indicator pairs and Indic conjuncts).
Python's stdlib cannot (``unicodedata`` lacks Grapheme_Cluster_Break), so we use the ``regex``
module's ``\\X``, which implements the same rules from its own Unicode tables (it is a new
dependency: ``pip install regex``).
"""

from __future__ import annotations

import regex

_CLUSTER = regex.compile(r"\X")


def grapheme_len(s: str) -> int:
    """Number of extended grapheme clusters.

    >>> grapheme_len("👨‍👩‍👧‍👦e\\u0301")
    2
    """
    if s.isascii():
        # ASCII clusters are single characters except CR LF, which is one cluster.
        return len(s) - s.count("\r\n")
    return sum(1 for _ in _CLUSTER.finditer(s))

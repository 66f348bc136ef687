"""Capped exponential backoff with jitter, reset after a healthy connection."""

from __future__ import annotations

import random


class Backoff:
    """``next()`` -> seconds to wait: ``base * 2**n`` capped at ``cap``, times a jitter in [0.5, 1].

    >>> b = Backoff(base=1, cap=8); [round(b.next() / d, 1) <= 1 for d in (1, 2, 4, 8, 8)]
    [True, True, True, True, True]
    """

    def __init__(self, base: float = 0.25, cap: float = 60.0) -> None:
        self.base = min(base, cap) if cap > 0 else 0.0
        self.cap = cap
        self.attempt = 0

    def next(self) -> float:
        delay = min(self.cap, self.base * (2 ** min(self.attempt, 30)))
        self.attempt += 1
        return delay * random.uniform(0.5, 1.0)

    def reset(self) -> None:
        self.attempt = 0

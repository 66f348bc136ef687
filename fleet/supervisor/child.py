"""One supervised child: its state machine, restart bookkeeping and backoff.

States (supervisord's, plus STOPPING):

    STOPPED --start--> STARTING --alive STARTUP_SETTLE_S and beating--> RUNNING
    STARTING/RUNNING --exit/killed--> BACKOFF --delay over--> STARTING
    any --RESTART_MAX exits within RESTART_WINDOW_S--> FATAL   (the master then stops everything)
    any --exit 78 (config)--> FATAL                            (never restarted)
    STARTING/RUNNING --master asks it to stop--> STOPPING --exit--> STOPPED

All times are ``time.monotonic()``.
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass, field

from .roles import ChildSpec

STOPPED = "stopped"
STARTING = "starting"
RUNNING = "running"
BACKOFF = "backoff"
STOPPING = "stopping"
FATAL = "fatal"
STATES = (STOPPED, STARTING, RUNNING, BACKOFF, STOPPING, FATAL)


def backoff_delay(failures: int, base_s: float, cap_s: float, rng: random.Random | None = None) -> float:
    """Delay before restart number ``failures`` (1-based): ``base * 2**(failures-1)``, capped,
    times a jitter in [0.5, 1.0] so children that died together do not restart in lockstep.

    >>> backoff_delay(1, 0.5, 30, random.Random(1)) <= 0.5
    True
    """
    if failures <= 0 or base_s <= 0:
        return 0.0
    delay = min(cap_s, base_s * (2 ** min(failures - 1, 30)))
    return delay * (0.5 + 0.5 * (rng or random).random())


@dataclass
class Child:
    spec: ChildSpec
    state: str = STOPPED
    pid: int | None = None
    hb_fd: int | None = None  # master's read end of the heartbeat pipe
    started_at: float = 0.0
    last_beat: float = 0.0
    beats: int = 0
    events: int = 0  # last events total reported by this incarnation
    lag: float | None = None
    failures: int = 0  # consecutive exits before reaching RUNNING (drives the backoff)
    exits: deque = field(default_factory=deque)  # monotonic times of unexpected exits
    restart_at: float = 0.0  # BACKOFF: when to start again
    term_sent_at: float | None = None  # when SIGTERM was sent (stop, reload or stale heartbeat)
    kill_at: float | None = None  # when SIGKILL follows if still alive
    unresponsive: bool = False  # killed for a stale heartbeat
    planned_restart: bool = False  # stopped by a reload: start again at once, not a failure
    last_exit: str = ""

    @property
    def alive(self) -> bool:
        return self.pid is not None

    def started(self, pid: int, hb_fd: int, now: float) -> None:
        self.pid, self.hb_fd = pid, hb_fd
        self.state = STARTING
        self.started_at = self.last_beat = now
        self.beats = 0
        self.events = 0
        self.lag = None
        self.term_sent_at = self.kill_at = None
        self.unresponsive = self.planned_restart = False

    def heartbeat_age(self, now: float) -> float:
        return now - self.last_beat

    def record_exit(self, now: float, window_s: float) -> int:
        """Remember an unexpected exit; returns how many fell within the window."""
        self.exits.append(now)
        while self.exits and now - self.exits[0] > window_s:
            self.exits.popleft()
        if self.state == STARTING:
            self.failures += 1
        else:
            self.failures = 1
        return len(self.exits)

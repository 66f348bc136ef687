"""Named process exit codes (sysexits.h where one fits).

systemd units list CONFIG in RestartPreventExitStatus= so a broken configuration is
reported once instead of restarted in a loop; the master does the same for its children.
"""

OK = 0
FAILURE = 1  # unexpected error; restart is reasonable
CRASH_LOOP = 3  # master: a child kept crashing (N restarts in T seconds)
UNAVAILABLE = 69  # EX_UNAVAILABLE: a required server (Redis, PostgreSQL) is unreachable at start
SOFTWARE = 70  # EX_SOFTWARE: internal error
CONFIG = 78  # EX_CONFIG: invalid configuration; never restarted

NAMES = {
    OK: "ok",
    FAILURE: "failure",
    CRASH_LOOP: "crash-loop",
    UNAVAILABLE: "unavailable",
    SOFTWARE: "software",
    CONFIG: "config",
}

"""sd_notify: tell systemd about readiness, liveness and status.

A no-op without ``NOTIFY_SOCKET``. No socket is held between calls (the master forks at any
time and a held socket would leak into children): each message opens, sends and closes a
datagram socket, which costs a few microseconds.

    notify("READY=1", "STATUS=10/10 children up")
"""

from __future__ import annotations

import os
import socket


def socket_address(value: str | None = None) -> str | None:
    """The address in ``NOTIFY_SOCKET`` (``@name`` is Linux's abstract namespace), or None."""
    addr = os.environ.get("NOTIFY_SOCKET") if value is None else value
    if not addr:
        return None
    if addr[0] == "@":
        return "\0" + addr[1:]
    return addr


def notify(*lines: str) -> bool:
    """Send ``lines`` as one notification; False when there is no socket or sending failed."""
    addr = socket_address()
    if addr is None or not lines:
        return False
    msg = "\n".join(lines).encode("utf-8", "replace")
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            s.sendto(msg, addr)
        return True
    except OSError:
        return False


def watchdog_interval_s(pid: int | None = None) -> float | None:
    """Half of ``WATCHDOG_USEC`` in seconds when the watchdog is on for this process, else None.

    systemd sets ``WATCHDOG_PID`` when it expects pings from a specific process; pings from
    any other process would be ignored, so then only that process pings.
    """
    usec = os.environ.get("WATCHDOG_USEC", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    wpid = os.environ.get("WATCHDOG_PID", "")
    if wpid.isdigit() and int(wpid) != (os.getpid() if pid is None else pid):
        return None
    return int(usec) / 1e6 / 2

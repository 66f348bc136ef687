"""The pre-fork supervisor: one master forks and watches the role processes.

- ``master.py``    the arbiter loop (signals, reaping, heartbeats, systemd notifications)
- ``child.py``     one child's state machine and restart backoff
- ``heartbeat.py`` the pipe a child's event loop writes to and the master reads
- ``notify.py``    sd_notify (a no-op without ``NOTIFY_SOCKET``)
- ``proc.py``      what runs in a child after ``fork``
- ``roles.py``     role names -> ``async def run(cfg, ctx)`` and the child list for a config
"""

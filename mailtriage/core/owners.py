"""Who holds a mailbox lease, and whether that holder is provably gone.

An owner id is `host:pid:token`, the token naming the PID namespace and the process's start
time. A process can then tell that an owner on the same host and in the same PID namespace
has died (its pid is gone, or belongs to a process started later: pid reuse), and take its
lease at once instead of waiting for it to expire. That is what lets `mailtriage run`,
restarted after a crash or a kill -9, resume within a second. Any other owner (another
host, another container, no /proc) counts as alive: its lease then simply runs out.
"""

from __future__ import annotations

import os
import random
import socket
from functools import cache


@cache
def _pid_namespace() -> str:
    try:
        return str(os.stat("/proc/self/ns/pid").st_ino)
    except OSError:
        return ""


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (/proc/<pid>/stat field 22)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            stat = f.read()
    except OSError:
        return None
    fields = stat.rpartition(")")[2].split()  # after "pid (comm)", comm may hold spaces
    return fields[19] if len(fields) > 19 else None


def process_owner() -> str:
    """This process's owner id: host, pid, PID namespace, start time, a random suffix."""
    pid = os.getpid()
    token = f"{_pid_namespace()}.{_start_time(pid) or ''}.{random.randrange(16**6):06x}"
    return f"{socket.gethostname()}:{pid}:{token}"


def is_dead(owner: str) -> bool:
    """True only when `owner` was a process of this host and namespace that is gone now."""
    host, _, rest = owner.partition(":")
    pid_text, _, token = rest.partition(":")
    ns, _, tail = token.partition(".")
    started = tail.partition(".")[0]
    if host != socket.gethostname() or not pid_text.isdigit() or not started:
        return False
    if not ns or ns != _pid_namespace():
        return False
    pid = int(pid_text)
    if pid == os.getpid():
        return False
    return _start_time(pid) != started

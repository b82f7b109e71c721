"""systemd's notify protocol and socket activation. Never raises.

sd_notify: one datagram of "KEY=VALUE" lines to $NOTIFY_SOCKET (a path, or an
abstract name starting with "@"). Socket activation: $LISTEN_PID / $LISTEN_FDS name
inherited listening sockets starting at fd 3.
"""

from __future__ import annotations

import os
import socket

SD_LISTEN_FDS_START = 3


def notify(*lines: str) -> bool:
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr:
        return False
    if addr.startswith("@"):
        addr = "\0" + addr[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            s.connect(addr)
            s.sendall("\n".join(lines).encode())
        return True
    except OSError:
        return False


def watchdog_interval() -> float | None:
    """Half of WatchdogSec when the watchdog is on for this process, else None."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid.isdigit() and int(pid) != os.getpid()):
        return None
    try:
        return int(usec) / 2e6
    except ValueError:
        return None


def listen_sockets() -> list[socket.socket]:
    """Sockets passed by systemd (or a test) for this process; clears the variables.

    As sd_listen_fds(3): the fds are this process's only when LISTEN_PID is set and
    names it. Without LISTEN_PID, fds 3.. may be anything an ancestor leaked (a
    LISTEN_FDS inherited through a process that did not clear it), never adopt them.
    """
    pid, fds = os.environ.get("LISTEN_PID"), os.environ.get("LISTEN_FDS")
    for k in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        os.environ.pop(k, None)
    if not fds or not fds.isdigit() or not pid or not pid.isdigit() or int(pid) != os.getpid():
        return []
    out = []
    for fd in range(SD_LISTEN_FDS_START, SD_LISTEN_FDS_START + int(fds)):
        try:
            os.set_inheritable(fd, False)
            out.append(socket.socket(fileno=fd))
        except OSError:
            continue
    return out

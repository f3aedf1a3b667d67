"""sd_notify(3) without a dependency: service state messages to systemd over ``$NOTIFY_SOCKET``.

The protocol is one datagram of ``KEY=VALUE`` lines sent to the AF_UNIX socket named in
``$NOTIFY_SOCKET`` (a path, or ``@name`` for the abstract namespace). Outside systemd the
variable is unset and every function here is a cheap no-op returning False, so the daemon
calls them unconditionally. Errors are swallowed: a lost notification must never stop the
listener (systemd's watchdog is the safety net if they keep getting lost).
"""

from __future__ import annotations

import os
import socket
import time

SOCKET_ENV = "NOTIFY_SOCKET"
WATCHDOG_USEC_ENV = "WATCHDOG_USEC"
WATCHDOG_PID_ENV = "WATCHDOG_PID"
_ABSTRACT_PREFIX = "@"


def _address(name: str) -> str:
    """``@name`` is an abstract socket: its address starts with a NUL byte."""
    return "\0" + name[1:] if name.startswith(_ABSTRACT_PREFIX) else name


def notify(*fields: str) -> bool:
    """Send ``KEY=VALUE`` fields in one datagram; True if systemd got it. Never waits: a receiver whose queue is full
    (a reader that does not read) held the processing loop in ``sendto``; such a datagram is not sent."""
    name = os.environ.get(SOCKET_ENV)
    if not name:
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK) as sock:
            sock.sendto("\n".join(fields).encode("utf-8"), _address(name))
    except OSError:
        return False
    return True


def ready() -> bool:
    """Start-up finished (audio flows, model loaded): ``Type=notify`` units become active."""
    return notify("READY=1")


def watchdog() -> bool:
    """Keep-alive; call from the processing loop, more often than :func:`watchdog_interval`."""
    return notify("WATCHDOG=1")


def stopping() -> bool:
    """Shutdown has begun."""
    return notify("STOPPING=1")


def reloading() -> bool:
    """Configuration reload has begun; send :func:`ready` when it is done."""
    return notify("RELOADING=1", f"MONOTONIC_USEC={time.monotonic_ns() // 1000}")


def status(text: str) -> bool:
    """One line of free-form state for ``systemctl status`` (newlines are flattened)."""
    return notify("STATUS=" + " ".join(text.splitlines()))


def watchdog_interval() -> float | None:
    """Seconds within which systemd expects :func:`watchdog`, or None when no watchdog is set.

    ``$WATCHDOG_PID``, when present, must be this process (the variable is inherited by children).
    """
    usec = os.environ.get(WATCHDOG_USEC_ENV, "")
    pid = os.environ.get(WATCHDOG_PID_ENV)
    if not usec.isdigit() or int(usec) == 0 or (pid is not None and pid != str(os.getpid())):
        return None
    return int(usec) / 1_000_000

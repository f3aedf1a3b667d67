"""Whether the broker delivers what this listener publishes: its own ``online``, published at each connect to its
status topic, which it subscribes to first, must come back. A broker whose ACL lets a MQTT 3.1.1 client publish
nothing still acknowledges every message and drops it: events reached no one and the log said nothing. One whose ACL
lets it publish but not read gives the same silence while its events are delivered: a missing echo shows only that
delivery cannot be confirmed. A pure core on the monotonic clock, driven by the MQTT sink's pump, which says what it
finds."""

from __future__ import annotations

import time
from collections.abc import Callable

ECHO_WAIT_S = 30.0
"""How long after the broker acknowledged it the listener's own ``online`` may take to come back through its
subscription to its status topic. One that lets it publish but not read drops the threshold commands from Home
Assistant the way one that lets it read but not publish drops its events."""


class EchoWatch:
    """The own ``online`` of the current connection: sent, acknowledged (then awaited until ECHO_WAIT_S has passed),
    back. The wait starts at the broker's acknowledgement: a link that stalled before the broker read the ``online``
    is not an ACL's doing (the keepalive finds it)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._mid: int | None = None
        """The ``online`` sent on this connection, until the broker acknowledges it or it comes back."""
        self._due: float | None = None
        """While it is acknowledged and not back: when it is overdue."""
        self._said = False
        """Whether it was said overdue (kept over reconnects, until it comes back)."""

    def sent(self, mid: int | None) -> None:
        """The ``online`` went to the broker as paho message ``mid`` (None: paho could not send it; nothing awaited)."""
        self._mid, self._due = mid, None

    def acknowledged(self, mid: int, refused: bool = False) -> None:
        """The broker acknowledged paho message ``mid``: if it is the ``online``, the wait for it begins, unless the
        broker ``refused`` it (MQTT 5 says so, and the sink logs it): nothing comes back then, and nothing is awaited."""
        if mid == self._mid:
            self._mid, self._due = None, None if refused else self._clock() + ECHO_WAIT_S

    def link_lost(self) -> None:
        """The connection is gone: the next one sends its own ``online``."""
        self._mid, self._due = None, None

    def cannot_read(self) -> None:
        """The broker refused the subscription the ``online`` comes back through: nothing is awaited (that refusal
        is said; a later "did not come back" guessed at an ACL that drops messages)."""
        self.link_lost()

    def overdue(self) -> bool:
        """True once, when the acknowledged ``online`` has not come back within ECHO_WAIT_S."""
        if self._due is None or self._clock() < self._due:
            return False
        self._due, self._said = None, True
        return True

    def came_back(self) -> bool:
        """The ``online`` came back; True when that ends an ``overdue`` said before."""
        was_said = self._said
        self._mid, self._due, self._said = None, None, False
        return was_said

    @property
    def wait_s(self) -> float:
        """How long an acknowledged ``online`` is awaited (ECHO_WAIT_S, read where it is set: the log says the wait in
        force, where a copy taken at import said 30 s of a shorter one)."""
        return ECHO_WAIT_S

    def settled(self) -> bool:
        """Nothing is awaited: the ``online`` came back, or none is out."""
        return self._mid is None and self._due is None

    def remaining_s(self) -> float | None:
        """Seconds until it is overdue, or None while nothing is awaited."""
        return None if self._due is None else self._due - self._clock()

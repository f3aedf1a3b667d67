"""Sinks receive every message the daemon produces (see :mod:`noisewatch.daemon.messages`).

``send`` is called from the processing loop and must never block on I/O it does not own: a
network sink hands the message to its own thread and spool.
"""

from __future__ import annotations

from typing import Protocol

from noisewatch.daemon.messages import HealthFigures, Message


class Sink(Protocol):
    def send(self, message: Message) -> None:
        """Deliver one message (already stamped with the device id); called from the processing loop."""

    def health(self) -> HealthFigures:
        """The sink's own figures for ``stats`` messages (names of :class:`~noisewatch.daemon.messages.Stats`
        fields); empty when it has none."""

    def report_wanted(self) -> bool:
        """Whether its figures changed in a way that is worth a ``stats`` report now, not at the next interval."""

    def threshold_overrides(self) -> dict[str, float]:
        """Per-label thresholds set through this sink (Home Assistant's ``number`` entities); empty for most."""

    def close(self) -> None:
        """Flush and release; called once, at shutdown or when a reload replaces the sink."""

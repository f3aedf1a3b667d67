"""Sinks receive every message the daemon produces.

A message is a kind and a JSON-ready payload dict:

- ``started``: an event opened (id, label, confidence so far, start, offset_s, device, model)
- ``event``:   an event closed, with every field of the event schema (see detector.py)
- ``level``:   a periodic sound-level report (Leq/Lmax/Lmin, dBFS and A-weighted)
- ``scores``:  top-3 scores of a window (only when enabled, rate-limited)
- ``stats``:   periodic health (uptime, windows, overflows, spool depth, model, version)
- ``status``:  the listener's own state changes (audio device lost / back)

``send`` is called from the processing loop and must never block on I/O it does not own:
a network sink hands the message to its own thread and spool.
"""

from __future__ import annotations

from typing import Any, Literal, Protocol

Kind = Literal["started", "event", "level", "scores", "stats", "status"]
KINDS: tuple[str, ...] = ("started", "event", "level", "scores", "stats", "status")


class Sink(Protocol):
    def send(self, kind: Kind, payload: dict[str, Any]) -> None:
        """Deliver one message; called from the processing loop."""

    def close(self) -> None:
        """Flush and release; called once at shutdown."""

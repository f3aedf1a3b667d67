"""The retained ON/OFF state of each label, from the events that open and close."""

from __future__ import annotations

from collections.abc import Iterable

from noisewatch.daemon.sinks.homeassistant import STATE_OFF, STATE_ON


class LabelStates:
    """ON while at least one event of a label is open, so overlapping and split events stay ON.

    The detector announces the continuation of an event split at ``max_duration_s`` before it
    reports the closed part, so counting open event ids is enough.
    """

    def __init__(self, labels: Iterable[str]) -> None:
        self._open: dict[str, set[str]] = {label: set() for label in labels}

    def started(self, label: str, event_id: str) -> str | None:
        """Record an opened event; returns the new state if it changed."""
        ids = self._open.setdefault(label, set())
        was_on = bool(ids)
        ids.add(event_id)
        return None if was_on else STATE_ON

    def ended(self, label: str, event_id: str) -> str | None:
        """Record a closed event; returns the new state if it changed."""
        ids = self._open.setdefault(label, set())
        was_on = bool(ids)
        ids.discard(event_id)
        return STATE_OFF if was_on and not ids else None

    def forget(self, label: str) -> None:
        """No longer report ``label`` (its last event ended, and the sink does not announce it)."""
        self._open.pop(label, None)

    def snapshot(self) -> dict[str, str]:
        """Every known label's current state."""
        return {label: STATE_ON if ids else STATE_OFF for label, ids in self._open.items()}

"""The latest closed events as one retained message, so a dashboard started later sees recent history.

Events themselves are never retained (Home Assistant would replay a retained event as new); this
object is a separate topic (``Topics.recent_events``) that only dashboards read.
"""

from __future__ import annotations

from collections import deque
from typing import Any

RECENT_EVENTS_KEPT = 50


class RecentEvents:
    """The newest RECENT_EVENTS_KEPT closed events; ``add`` returns the payload to publish retained."""

    def __init__(self, keep: int = RECENT_EVENTS_KEPT) -> None:
        self._events: deque[dict[str, Any]] = deque(maxlen=keep)

    def add(self, event: dict[str, Any]) -> dict[str, Any]:
        """Record one closed event (a redelivered id replaces nothing); the ``{"events": [...]}`` payload."""
        if all(e.get("id") != event.get("id") for e in self._events):
            self._events.append(event)
        return {"events": list(self._events)}

"""The latest closed events as one retained message, so a dashboard started later sees recent history.

Events themselves are never retained (Home Assistant would replay a retained event as new); this
object is a separate topic (``Topics.recent_events``) that only dashboards read. The list is kept in the state
folder: begun afresh at each start, it held only the events since, and a dashboard started after a restart (or a
power cut) showed none of the day's before.
"""

from __future__ import annotations

import logging
from collections import deque
from pathlib import Path
from typing import Any

from noisewatch.daemon.statefile import read_json, write_text

log = logging.getLogger(__name__)

RECENT_EVENTS_KEPT = 50
FILE_NAME = "recent.json"


class RecentEvents:
    """The newest RECENT_EVENTS_KEPT closed events; ``add`` returns the payload to publish retained, and ``keep``
    writes it to ``<state directory>/recent.json`` (the MQTT pump's thread: not the processing loop's)."""

    def __init__(self, directory: Path, keep: int = RECENT_EVENTS_KEPT) -> None:
        self.path = Path(directory) / FILE_NAME
        self._events: deque[dict[str, Any]] = deque(self._load(), maxlen=keep)
        self._unsaved = False
        """The last write failed (said once, until one is taken)."""

    def add(self, event: dict[str, Any]) -> dict[str, Any]:
        """Record one closed event (a redelivered id replaces nothing); the ``{"events": [...]}`` payload."""
        if all(e.get("id") != event.get("id") for e in self._events):
            self._events.append(event)
        return {"events": list(self._events)}

    def _load(self) -> list[dict[str, Any]]:
        """The list an earlier run kept; none from a file that cannot be read (said: the list begins afresh)."""
        try:
            data = read_json(self.path)
        except (OSError, ValueError) as exc:
            log.warning("ignoring %s: %s", self.path, exc)
            return []
        events = data.get("events") if isinstance(data, dict) else None
        if not isinstance(events, list) or not all(isinstance(event, dict) for event in events):
            if data is not None:
                log.warning("ignoring %s: not a list of events", self.path)
            return []
        return events

    def keep(self, payload: bytes) -> None:
        """Keep a payload of ``add`` for the next start; a disk that refuses is said once (the list goes on in
        memory)."""
        try:
            write_text(self.path, payload.decode(), make_parents=False)
        except OSError as exc:
            if not self._unsaved:
                log.warning("MQTT: cannot keep the recent events list in %s (%s); a restart begins it afresh",
                            self.path.parent, exc.strerror or exc)
            self._unsaved = True
        else:
            self._unsaved = False

"""The latest closed events as one retained message, so a dashboard started later sees recent history.

Events themselves are never retained (Home Assistant would replay a retained event as new); this
object is a separate topic (``Topics.recent_events``) that only dashboards read. The list is kept in the state
folder: begun afresh at each start, it held only the events since, and a dashboard started after a restart (or a
power cut) showed none of the day's before.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from pathlib import Path
from typing import Any

from noisewatch.daemon.messages import encode_json
from noisewatch.daemon.statefile import read_json, write_text

log = logging.getLogger(__name__)

RECENT_EVENTS_KEPT = 50
FILE_NAME = "recent.json"


class RecentEvents:
    """The newest RECENT_EVENTS_KEPT closed events, read from ``<directory>/recent.json``, and their payload,
    ``{"events": [...]}``, encoded once per change. ``add`` (the processing loop) returns it to publish retained;
    ``keep`` (an MQTT pump at each event, and a reload's sink as it starts) writes it to a state folder. A reload's
    sink takes the list over, and both pumps keep it for a while: the later write is always the newer payload (a
    pump behind on its queue wrote an older one over it), and a state folder the reload moved gets it too."""

    def __init__(self, directory: Path, keep: int = RECENT_EVENTS_KEPT) -> None:
        path = Path(directory) / FILE_NAME
        self._events: deque[dict[str, Any]] = deque(maxlen=keep)
        self._payload = _load(path, self._events)
        self._lock = threading.Lock()
        """``add`` against ``keep``'s read: held for no disk write, so the processing loop never waits on one."""
        self._version = 0
        """Payloads made so far."""
        self._writing = threading.Lock()
        self._kept: dict[Path, int] = {path: 0}
        """The version each file holds."""
        self._unsaved = False
        """The last write failed (said once, until one is taken)."""

    def add(self, event: dict[str, Any]) -> bytes:
        """Record one closed event (a redelivered id replaces nothing); the payload."""
        with self._lock:
            if all(e.get("id") != event.get("id") for e in self._events):
                self._events.append(event)
                self._payload, self._version = encode_json({"events": list(self._events)}), self._version + 1
            return self._payload

    def latest(self) -> bytes | None:
        """The payload as it is (None while the list is empty), sent again at a (re)connect."""
        with self._lock:
            return self._payload if self._events else None

    def keep(self, directory: Path) -> None:
        """Write the payload to ``<directory>/recent.json`` unless that file holds it already; a disk that refuses is
        said once (the list goes on in memory)."""
        path = Path(directory) / FILE_NAME
        with self._writing:
            with self._lock:
                payload, version = self._payload, self._version
            if self._kept.get(path, -1) >= version:
                return
            try:
                write_text(path, payload.decode(), make_parents=False)
            except OSError as exc:
                if not self._unsaved:
                    log.warning("MQTT: cannot keep the recent events list in %s (%s); a restart begins it afresh",
                                directory, exc.strerror or exc)
                self._unsaved = True
            else:
                self._kept[path], self._unsaved = version, False


def _load(path: Path, events: deque[dict[str, Any]]) -> bytes:
    """Fill ``events`` with the list an earlier run kept, and return its payload; none from a file that cannot be
    read or whose list no payload can carry (NaN: every list sent would fail), said: the list begins afresh."""
    try:
        data = read_json(path)
        kept = data.get("events") if isinstance(data, dict) else None
        if data is not None and not (isinstance(kept, list) and all(isinstance(event, dict) for event in kept)):
            raise ValueError("not a list of events")
        events.extend(kept or [])
        return encode_json({"events": list(events)})
    except (OSError, ValueError) as exc:
        log.warning("ignoring %s: %s", path, exc)
        events.clear()
        return encode_json({"events": []})

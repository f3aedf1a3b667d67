"""What this listener last announced to Home Assistant, kept so a later run can clear what it drops.

Without the record, an entity removed from the config (an ignored label, levels turned off,
discovery turned off) keeps its retained discovery on the broker and Home Assistant keeps a
sensor that can never change. The record maps each discovery topic to the retained state topics
its entity reads (see :func:`~noisewatch.daemon.sinks.homeassistant.retained_state_topics`), and the
listener's status topic to its other retained topics (a change of topic prefix or device id would otherwise
leave them all behind: :func:`~noisewatch.daemon.sinks.homeassistant.listener_retained_topics`). What was
announced under an old status topic or device id is cleared only once that status, and the one the old discovery
configs name, is seen not ``online``: another listener may have taken the old prefix or device id since (the MQTT
sink's :class:`~noisewatch.daemon.sinks.homeassistant_discovery.HomeAssistantDiscovery`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

from noisewatch.daemon.statefile import read_json, write_json

log = logging.getLogger(__name__)

FILE_NAME = "announced.json"

Announced = dict[str, list[str]]


class AnnouncedStore:
    """The record in ``<state directory>/announced.json``."""

    def __init__(self, directory: Path) -> None:
        self.path = Path(directory) / FILE_NAME

    def load(self) -> Announced:
        """The last record; empty when there is none or it cannot be read (logged: nothing is cleared then)."""
        try:
            data = read_json(self.path)
        except (OSError, ValueError) as exc:
            log.warning("ignoring %s: %s", self.path, exc)
            return {}
        if data is None:
            return {}
        if not _is_record(data):
            log.warning("ignoring %s: not a map of topic -> list of topics", self.path)
            return {}
        return {str(topic): [str(state) for state in states] for topic, states in data.items()}

    def save(self, announced: Mapping[str, Sequence[str]]) -> None:
        """Replace the record (atomically)."""
        write_json(self.path, {topic: list(states) for topic, states in announced.items()})


def _is_record(data: object) -> bool:
    return isinstance(data, dict) and all(
        isinstance(states, list) and all(isinstance(s, str) for s in states) for states in data.values())

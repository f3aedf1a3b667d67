"""Home Assistant MQTT discovery: the entities a listener announces, as pure data.

One device per listener with: a ``binary_sensor`` (device_class ``sound``) per label, ON while an
event of that label is open; one ``event`` entity whose event types are the labels, fed from the
events topic (a template turns our event JSON into HA's ``{"event_type": ...}`` form, so the
event schema stays the one the daemon defines); a ``sensor`` (device_class ``sound_pressure``)
for the level; and a diagnostic sensor for the spool depth. Every entity is unavailable when the
status topic says ``offline``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from noisewatch.daemon.sinks.topics import Topics, segment

ONLINE = "online"
OFFLINE = "offline"
STATE_ON = "ON"
STATE_OFF = "OFF"
MANUFACTURER = "noisewatch"

EVENT_TEMPLATE = (
    "{{ {'event_type': value_json.label, 'id': value_json.id, 'confidence': value_json.confidence,"
    " 'duration_s': value_json.duration_s, 'start': value_json.start} | to_json }}"
)


@dataclass(frozen=True)
class Listener:
    """What discovery needs to know about this listener."""

    device_id: str
    name: str
    """device name shown in Home Assistant"""
    labels: tuple[str, ...]
    """labels that can become events"""
    model: str
    """model bundle ident, ``name@version``"""
    version: str
    """noisewatch version"""
    calibrated: bool = False
    """levels carry estimated dB(A) SPL (``leq_dba_spl``), not only dBFS(A)"""


def discovery_messages(topics: Topics, listener: Listener) -> list[tuple[str, dict[str, Any]]]:
    """(config topic, config payload) of every entity of the listener; publish them retained."""
    node = f"noisewatch_{segment(listener.device_id)}"
    common = {
        "device": _device(node, listener),
        "availability_topic": topics.status,
        "payload_available": ONLINE,
        "payload_not_available": OFFLINE,
    }
    messages = [
        (topics.discovery("binary_sensor", node, segment(label)), {**common, **_label_sensor(topics, node, label)})
        for label in listener.labels
    ]
    messages += [
        (topics.discovery("event", node, "sound_event"), {**common, **_event_entity(topics, node, listener)}),
        (topics.discovery("sensor", node, "level"), {**common, **_level_sensor(topics, node, listener)}),
        (topics.discovery("sensor", node, "spool_depth"), {**common, **_spool_sensor(topics, node)}),
    ]
    return messages


def _device(node: str, listener: Listener) -> dict[str, Any]:
    return {
        "identifiers": [node],
        "name": listener.name,
        "manufacturer": MANUFACTURER,
        "model": listener.model,
        "sw_version": listener.version,
    }


def _label_sensor(topics: Topics, node: str, label: str) -> dict[str, Any]:
    return {
        "name": label.replace("_", " ").capitalize(),
        "unique_id": f"{node}_{segment(label)}",
        "device_class": "sound",
        "state_topic": topics.state(label),
        "payload_on": STATE_ON,
        "payload_off": STATE_OFF,
    }


def _event_entity(topics: Topics, node: str, listener: Listener) -> dict[str, Any]:
    return {
        "name": "Sound event",
        "unique_id": f"{node}_sound_event",
        "state_topic": topics.events,
        "event_types": list(listener.labels),
        "value_template": EVENT_TEMPLATE,
    }


def _level_sensor(topics: Topics, node: str, listener: Listener) -> dict[str, Any]:
    field, unit = ("leq_dba_spl", "dBA") if listener.calibrated else ("leq_dbfs_a", "dB")
    return {
        "name": "Sound level",
        "unique_id": f"{node}_level",
        "device_class": "sound_pressure",
        "state_class": "measurement",
        "unit_of_measurement": unit,
        "state_topic": topics.level,
        "value_template": "{{ value_json.%s }}" % field,
    }


def _spool_sensor(topics: Topics, node: str) -> dict[str, Any]:
    return {
        "name": "Spooled messages",
        "unique_id": f"{node}_spool_depth",
        "entity_category": "diagnostic",
        "state_class": "measurement",
        "state_topic": topics.stats,
        "value_template": "{{ value_json.spool_depth }}",
    }

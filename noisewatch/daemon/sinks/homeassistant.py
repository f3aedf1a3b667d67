"""Home Assistant MQTT discovery: the entities a listener announces, as pure data.

One device per listener with: a ``binary_sensor`` (device_class ``sound``) per label, ON while an
event of that label is open; two ``event`` entities whose event types are the labels, one fed
from the events topic (an event closed) and one from ``events/started`` (an event opened, so an
automation can act on the start); a templated payload turns our event JSON into HA's
``{"event_type": ...}`` form, so the event schema stays the one the daemon defines; level sensors
(Leq, Lmax, Lmin; ``sound_pressure`` only when calibrated, since dBFS is not a sound pressure);
an audio-input and a spool-disk ``problem`` sensor; a ``number`` per tunable label's threshold and a ``button`` that forgets
those set from Home Assistant; and diagnostic
sensors from ``stats``. Every entity is unavailable when the status topic says ``offline``, the level sensors
also while the audio input is lost.

The sink publishes :func:`discovery_messages` retained; :func:`stale_clears` says what to clear of
what an earlier run announced and this one does not, entities and the listener's own retained topics (see
``announced.py`` for the record).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from noisewatch.daemon.events import LOUD
from noisewatch.daemon.messages import AudioState
from noisewatch.daemon.sinks.topics import Topics, segment

ONLINE = "online"
OFFLINE = "offline"
STATE_ON = "ON"
STATE_OFF = "OFF"
MANUFACTURER = "noisewatch"
QOS = 1
"""HA subscribes at this QoS, so at-least-once reaches Home Assistant, not only the broker"""
EXPIRY_PERIODS = 2.5
"""a periodic sensor expires when this many report periods pass without a report"""
THRESHOLD_STEP = 0.01
RESET = "RESET"
"""What the reset-thresholds button sends."""
COMMANDED = ("number", "button")
"""Components that have a command topic (and need one even to be removed: :func:`stand_in`)."""
EVENT_ICON = "mdi:waveform"
DEFAULT_ICON = "mdi:ear-hearing"
LABEL_ICONS = {
    "air_conditioner": "mdi:air-conditioner",
    "car_horn": "mdi:bullhorn",
    "children_playing": "mdi:human-child",
    "dog_bark": "mdi:dog",
    "drilling": "mdi:screw-machine-flat-top",
    "engine_idling": "mdi:engine",
    "gun_shot": "mdi:pistol",
    "jackhammer": "mdi:hammer",
    "siren": "mdi:alarm-light",
    "street_music": "mdi:music",
    LOUD: "mdi:volume-high",
}

EVENT_TEMPLATE = (
    "{{ {'event_type': value_json.label, 'id': value_json.id, 'confidence': value_json.confidence,"
    " 'duration_s': value_json.duration_s, 'start': value_json.start, 'continues': value_json.get('continues')}"
    " | to_json }}"
)
STARTED_TEMPLATE = (
    "{{ {'event_type': value_json.label, 'id': value_json.id, 'confidence': value_json.confidence,"
    " 'start': value_json.start, 'continues': value_json.get('continues')} | to_json }}"
)
_LISTENING, _LOST, _SILENT = (state.value for state in (AudioState.LISTENING, AudioState.AUDIO_ERROR,
                                                          AudioState.SILENT))
AUDIO_PROBLEM_TEMPLATE = f"{{{{ '{STATE_OFF}' if value_json.state == '{_LISTENING}' else '{STATE_ON}' }}}}"
HEARING_TEMPLATE = f"{{{{ '{OFFLINE}' if value_json.state == '{_LOST}' else '{ONLINE}' }}}}"
"""A level sensor's availability from the audio state: none with the input lost (a muted one's zeros are a level)."""
LISTENING_TEMPLATE = f"{{{{ '{OFFLINE}' if value_json.state in ('{_LOST}', '{_SILENT}') else '{ONLINE}' }}}}"
"""A label sensor's availability from the audio state: none while the input is lost or gives one value only, when
nothing can be heard: "Clear" said no siren where none could have been heard."""
AUDIO_ATTRIBUTES_TEMPLATE = ("{{ {'audio_state': value_json.get('state'), 'source': value_json.get('source'),"
                             " 'error': value_json.get('error')} | to_json }}")
"""What a user reads on the sensor's page: the state, the input and the reason (not the message's envelope)."""
SPOOL_DISK_TEMPLATE = f"{{{{ '{STATE_ON}' if value_json.get('spool_disk_error') else '{STATE_OFF}' }}}}"
LOSS_FIELDS = ("spool_dropped", "spool_memory_dropped", "spool_dead_letters", "spool_quarantined")
"""``stats`` counts of events that will never reach the broker: dropped by the spool's bounds or its refusing disk,
refused by the broker, damaged on disk. At-least-once delivery is what a user relies on; when it fails, Home
Assistant is where they look."""
EVENTS_LOST = "[%s] | select('number') | sum" % ", ".join(f"value_json.get('{field}')" for field in LOSS_FIELDS)


@dataclass(frozen=True)
class Listener:
    """What discovery needs to know about this listener."""

    device_id: str
    name: str
    """device name shown in Home Assistant (:func:`default_device_name` when not configured)"""
    labels: tuple[str, ...]
    """labels that can become events"""
    model: str
    """model bundle ident, ``name@version``"""
    version: str
    """noisewatch version"""
    calibrated: bool = False
    """levels carry estimated dB(A) SPL (``leq_dba_spl``), not only dBFS(A)"""
    configuration_url: str | None = None
    """the dashboard's URL, linked from the device page"""
    level_interval_s: float | None = 60.0
    """period of ``level`` reports; None: levels are off (no level sensors)"""
    stats_interval_s: float = 60.0
    """period of ``stats`` reports"""


def default_device_name(device_id: str) -> str:
    """A device name a person reads; entity ids become ``noise_listener_<device_id>_<entity>``."""
    return f"Noise listener {device_id}"


def node_id(device_id: str) -> str:
    """The discovery node and the prefix of every unique_id (kept stable: HA keys entities on it)."""
    return f"noisewatch_{segment(device_id)}"


def tunable_labels(listener: Listener) -> tuple[str, ...]:
    """Labels with a probability threshold (``loud`` has a dBFS one, set in the config)."""
    return tuple(label for label in listener.labels if label != LOUD)


def discovery_messages(topics: Topics, listener: Listener) -> list[tuple[str, dict[str, Any]]]:
    """(config topic, config payload) of every entity of the listener; publish them retained, QoS 1."""
    node = node_id(listener.device_id)
    online = {"availability_topic": topics.status, "payload_available": ONLINE, "payload_not_available": OFFLINE}
    entities: list[tuple[str, str, dict[str, Any]]] = [
        ("binary_sensor", segment(label), _label_sensor(topics, node, label, listener)) for label in listener.labels
    ]
    entities += [
        ("event", "sound_event", _event_entity("Sound event", f"{node}_sound_event", topics.events, EVENT_TEMPLATE,
                                               listener)),
        ("event", "sound_started", _event_entity("Sound started", f"{node}_sound_started", topics.started,
                                                 STARTED_TEMPLATE, listener)),
        ("binary_sensor", "audio_problem", _audio_problem(topics, node, listener)),
    ]
    entities += [("number", f"threshold_{segment(label)}", _threshold_number(topics, node, label))
                 for label in tunable_labels(listener)]
    if tunable_labels(listener):
        entities.append(("button", "thresholds_reset", _thresholds_reset(topics, node)))
    if listener.level_interval_s is not None:
        entities += _level_sensors(topics, node, listener.calibrated, listener.level_interval_s)
    entities += _stats_sensors(topics, node, listener)
    entities.append(("binary_sensor", "spool_disk_problem", _spool_disk_problem(topics, node, listener)))
    device, named = _device(node, listener), {"identifiers": [node], "name": listener.name}
    live = {segment(label) for label in listener.labels} | {"audio_problem"}
    # the sensors that expire carry the device's name only: a changed model or version in their config (a reload
    # with a new bundle) had Home Assistant take them as starting expired, and an open siren turned unavailable,
    # then on again; the level sensors carry their own availability list (it takes one form or the other)
    return [(topics.discovery(component, node, object_id),
             {"device": named if component == "binary_sensor" and object_id in live else device,
              **({} if "availability" in entity else online), **entity})
            for component, object_id, entity in entities]


def retained_state_topics(messages: Sequence[tuple[str, Mapping[str, Any]]]) -> dict[str, list[str]]:
    """Discovery topic -> the retained topics its entity reads (what :func:`stale_clears` may clear).

    Event entities read non-retained topics: an empty message there would reach subscribers as an event.
    """
    return {topic: [] if "/event/" in topic or "state_topic" not in config else [str(config["state_topic"])]
            for topic, config in messages}


def listener_retained_topics(topics: Topics, listener: Listener) -> dict[str, list[str]]:
    """The listener's status topic -> every other retained topic it publishes, recorded beside its entities, so
    that a later run under another topic prefix or device id clears them as it clears a dropped entity (left on the
    broker, the old ``status`` and states are a listener that is gone, to the dashboard and any subscriber)."""
    retained = [topics.audio, topics.stats, topics.recent_events, *map(topics.state, listener.labels),
                *map(topics.threshold, tunable_labels(listener))]
    if listener.level_interval_s is not None:
        retained.append(topics.level)
    return {topics.status: retained}


def stale_clears(before: Mapping[str, Sequence[str]], now: Mapping[str, Sequence[str]]) -> list[tuple[str, bytes]]:
    """Retained (topic, b"") messages that remove what was announced before and not now.

    ``before``/``now`` map discovery topics to their entities' retained state topics (as from
    :func:`retained_state_topics`), and the status topic to the listener's own (:func:`listener_retained_topics`);
    a state topic still in ``now`` is kept.
    """
    still_read = {state for states in now.values() for state in states}
    clears: list[tuple[str, bytes]] = []
    for topic in sorted(set(before) - set(now)):
        clears.append((topic, b""))
        clears += [(state, b"") for state in before[topic]
                   if state not in still_read and (state, b"") not in clears]
    return clears


def stand_in(config_topic: str) -> dict[str, Any]:
    """A minimal config, under its unique_id and device, for an entity whose retained discovery was emptied: Home
    Assistant ignores an empty config for an entity it has not discovered since it started, so one emptied while it
    was down stayed, unavailable, for good (and its device). Announced with this, then emptied, it goes."""
    component, node, object_id = config_topic.split("/")[-4:-1]
    unused = f"{config_topic.removesuffix('/config')}/removed"
    config: dict[str, Any] = {"unique_id": f"{node}_{object_id}", "device": {"identifiers": [node]},
                              "command_topic" if component in COMMANDED else "state_topic": unused}
    if component == "event":
        config["event_types"] = ["removed"]
    return config


def _device(node: str, listener: Listener) -> dict[str, Any]:
    device = {
        "identifiers": [node],
        "name": listener.name,
        "manufacturer": MANUFACTURER,
        "model": listener.model,
        "sw_version": listener.version,
    }
    if listener.configuration_url:
        device["configuration_url"] = listener.configuration_url
    return device


def _title(label: str) -> str:
    return label.replace("_", " ").capitalize()


def _label_sensor(topics: Topics, node: str, label: str, listener: Listener) -> dict[str, Any]:
    """Expires as the stats sensors do (its state is sent again with every report): a broker that went down with
    the listener (one power cut) keeps its retained ``online``, and "Clear" stood for good over a dead listener."""
    return {
        "name": _title(label),
        "unique_id": f"{node}_{segment(label)}",
        "device_class": "sound",
        "icon": LABEL_ICONS.get(label, DEFAULT_ICON),
        "state_topic": topics.state(label),
        "payload_on": STATE_ON,
        "payload_off": STATE_OFF,
        "qos": QOS,
        "availability": _while_audio(topics, LISTENING_TEMPLATE),
        "availability_mode": "all",
        "expire_after": _expiry_s(listener.stats_interval_s),
    }


def _event_entity(name: str, unique_id: str, topic: str, template: str, listener: Listener) -> dict[str, Any]:
    """An event entity whose event type is the label: one for ended events, one for started ones."""
    return {
        "name": name,
        "unique_id": unique_id,
        "icon": EVENT_ICON,
        "state_topic": topic,
        "event_types": list(listener.labels),
        "value_template": template,
        "qos": QOS,
    }


def _audio_problem(topics: Topics, node: str, listener: Listener) -> dict[str, Any]:
    """Expires as a label sensor does: "OK" over a dead listener was no more true than "Clear"."""
    return {
        "name": "Audio input",
        "unique_id": f"{node}_audio_problem",
        "device_class": "problem",
        "entity_category": "diagnostic",
        "state_topic": topics.audio,
        "value_template": AUDIO_PROBLEM_TEMPLATE,
        "json_attributes_topic": topics.audio,
        "json_attributes_template": AUDIO_ATTRIBUTES_TEMPLATE,
        "payload_on": STATE_ON,
        "payload_off": STATE_OFF,
        "expire_after": _expiry_s(listener.stats_interval_s),
        "qos": QOS,
    }


def _spool_disk_problem(topics: Topics, node: str, listener: Listener) -> dict[str, Any]:
    """On while the spool's disk refuses writes (full, or an SD card the kernel remounted read-only): events then
    wait in memory, lost at a stop or beyond the 1,000 held, and the log was the only place that said so."""
    return {
        "name": "Spool disk",
        "unique_id": f"{node}_spool_disk_problem",
        "device_class": "problem",
        "entity_category": "diagnostic",
        "state_topic": topics.stats,
        "value_template": SPOOL_DISK_TEMPLATE,
        "json_attributes_topic": topics.stats,
        "json_attributes_template": "{{ {'error': value_json.get('spool_disk_error')} | to_json }}",
        "payload_on": STATE_ON,
        "payload_off": STATE_OFF,
        "expire_after": _expiry_s(listener.stats_interval_s),
        "qos": QOS,
    }


def _threshold_number(topics: Topics, node: str, label: str) -> dict[str, Any]:
    return {
        "name": f"{_title(label)} threshold",
        "unique_id": f"{node}_threshold_{segment(label)}",
        "entity_category": "config",
        "icon": "mdi:tune-vertical",
        "command_topic": topics.threshold_set(label),
        "state_topic": topics.threshold(label),
        "min": 0.0,
        "max": 1.0,
        "step": THRESHOLD_STEP,
        "mode": "slider",
        "retain": False,
        "qos": QOS,
    }


def _thresholds_reset(topics: Topics, node: str) -> dict[str, Any]:
    """The way back from thresholds set from Home Assistant to the config's and the model's."""
    return {
        "name": "Reset thresholds",
        "unique_id": f"{node}_thresholds_reset",
        "entity_category": "config",
        "icon": "mdi:restore",
        "command_topic": topics.thresholds_reset,
        "payload_press": RESET,
        "retain": False,
        "qos": QOS,
    }


def _expiry_s(interval_s: float) -> int:
    return math.ceil(EXPIRY_PERIODS * interval_s)


def _level_sensors(topics: Topics, node: str, calibrated: bool,
                   interval_s: float) -> list[tuple[str, str, dict[str, Any]]]:
    """Leq, Lmax, Lmin; uncalibrated dBFS(A) has no device class: it is not a sound pressure. Calibrated, they are
    other entities (ids and names): one entity whose unit changed from dBFS to dBA had Home Assistant suspend
    its long-term statistics until fixed by hand. A key the report lacks reads as ``None`` (unknown): the level an
    uncalibrated run left retained has no SPL, and a missing key was a template warning in Home Assistant's log."""
    unit_field, unit, device_class = ("dba_spl", "dBA", "sound_pressure") if calibrated else ("dbfs_a", "dBFS", None)
    entity, title = ("sound_pressure", "Sound pressure") if calibrated else ("level", "Sound level")
    sensors = []
    for stat, name in (("leq", title), ("lmax", f"{title} max"), ("lmin", f"{title} min")):
        object_id = entity if stat == "leq" else f"{entity}_{stat}"
        sensor: dict[str, Any] = {
            "name": name,
            "unique_id": f"{node}_{object_id}",
            "icon": "mdi:waveform" if device_class is None else None,
            "device_class": device_class,
            "state_class": "measurement",
            "unit_of_measurement": unit,
            "suggested_display_precision": 1,
            "state_topic": topics.level,
            "value_template": "{{ value_json.get('%s_%s') }}" % (stat, unit_field),
            "expire_after": _expiry_s(interval_s),
            "availability": _while_audio(topics, HEARING_TEMPLATE),
            "availability_mode": "all",
        }
        sensors.append(("sensor", object_id, {k: v for k, v in sensor.items() if v is not None}))
    return sensors


def _while_audio(topics: Topics, template: str) -> list[dict[str, str]]:
    """Available while the listener is online and ``template`` reads its audio state as ``online``: a level kept from
    before the input was lost (retained from an earlier run, or the last of this one) is not the current one, and a
    label's "Clear" is no news while nothing can be heard."""
    return [{"topic": topics.status, "payload_available": ONLINE, "payload_not_available": OFFLINE},
            {"topic": topics.audio, "value_template": template}]


def _stats_sensors(topics: Topics, node: str, listener: Listener) -> list[tuple[str, str, dict[str, Any]]]:
    rows = (  # object_id, name, value (a template expression), extra
        ("spool_depth", "Spooled messages", "value_json.spool_depth",
         {"state_class": "measurement", "icon": "mdi:tray-full"}),
        ("events_lost", "Events lost", EVENTS_LOST, {"state_class": "total_increasing", "icon": "mdi:email-remove"}),
        ("started", "Started", "value_json.started", {"device_class": "timestamp"}),
        ("dropped_frames", "Dropped audio frames", "value_json.dropped_frames",
         {"state_class": "total_increasing", "icon": "mdi:microphone-off"}),
        ("input_overflows", "Input overflows", "value_json.input_overflows",
         {"state_class": "total_increasing", "icon": "mdi:microphone-off"}),
        ("model", "Model", "value_json.model", {"icon": "mdi:brain"}),
    )
    return [("sensor", object_id, {
        "name": name,
        "unique_id": f"{node}_{object_id}",
        "entity_category": "diagnostic",
        "state_topic": topics.stats,
        "value_template": "{{ %s }}" % value,
        "expire_after": _expiry_s(listener.stats_interval_s),
        **extra,
    }) for object_id, name, value, extra in rows]

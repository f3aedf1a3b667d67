"""The latest state of every listener, as seen on MQTT: a pure, thread-safe store.

paho's network thread writes (``apply``); Streamlit's script threads read (``snapshot``), so every
access takes one lock and readers get deep copies they may keep. Topic names come from
:class:`~noisewatch.daemon.sinks.topics.Topics`, the one place that knows them; this module only
inverts them (topic -> device and message kind).
"""

from __future__ import annotations

import copy
import json
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from noisewatch.daemon.sinks.topics import Topics

log = logging.getLogger(__name__)

EVENTS_KEPT = 200
"""closed events kept per device (the timeline shows the latest)"""
LEVELS_KEPT = 720
"""level reports kept per device (12 h at the default 60 s period)"""
SCORES_KEPT = 120
"""top-3 score reports kept per device"""
OFFLINE = "offline"
TEXT_KINDS = ("status", "state")
"""kinds whose payload is plain text (the others are JSON objects)"""


class Message(NamedTuple):
    """One MQTT message, decoded: which device, what kind, for which label."""

    device: str
    kind: str
    label: str | None
    payload: Any


@dataclass
class DeviceState:
    """What the dashboard knows about one listener."""

    prefix: str
    """the listener's topic prefix, e.g. ``noisewatch/kitchen``"""
    status: str | None = None
    """``online`` / ``offline`` (the Last Will), None before the retained status arrives"""
    states: dict[str, str] = field(default_factory=dict)
    """label -> ``ON`` / ``OFF``"""
    open_events: dict[str, dict[str, Any]] = field(default_factory=dict)
    """event id -> its ``started`` notice, until the closed event arrives"""
    events: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=EVENTS_KEPT))
    """closed events, oldest first, without duplicates (delivery is at least once)"""
    levels: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=LEVELS_KEPT))
    scores: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=SCORES_KEPT))
    stats: dict[str, Any] | None = None
    audio: dict[str, Any] | None = None
    """the retained audio-input state: ``{"state": "listening" | "audio_error", "error": ...}``"""
    last_seen: float | None = None
    """wall-clock time (s since the epoch) of the device's latest message"""


def root_of(prefix: str) -> str:
    """The parent of a listener's prefix, where its siblings live: ``noisewatch/kitchen`` -> ``noisewatch``."""
    return prefix.rpartition("/")[0]


def topic_filter(root: str) -> str:
    """The subscription covering every listener under ``root``: ``noisewatch`` -> ``noisewatch/+/#``."""
    return f"{root}/+/#" if root else "+/#"


def parse_topic(topic: str, root: str) -> tuple[str, str, str | None] | None:
    """(device, kind, label) of a topic under ``root`` (the prefix's parent), None if it is not ours."""
    head = f"{root}/" if root else ""
    if not topic.startswith(head):
        return None
    device, _, rest = topic[len(head):].partition("/")
    if not device or not rest:
        return None
    topics = Topics(f"{head}{device}")
    kinds = {topics.events: "event", topics.started: "started", topics.status: "status",
             topics.level: "level", topics.stats: "stats", topics.scores: "scores",
             topics.recent_events: "recent", topics.audio: "audio"}
    if topic in kinds:
        return device, kinds[topic], None
    state_root = _state_root(topics)
    if topic.startswith(state_root) and "/" not in topic[len(state_root):]:
        return device, "state", topic[len(state_root):]
    return None


def _state_root(topics: Topics) -> str:
    """``<prefix>/state/``: the parent of the per-label state topics that Topics builds."""
    probe = "x"
    return topics.state(probe)[: -len(probe)]


def decode(topic: str, payload: bytes, root: str) -> Message | None:
    """A raw MQTT message as a Message; None for foreign topics and malformed payloads."""
    parsed = parse_topic(topic, root)
    if parsed is None:
        return None
    device, kind, label = parsed
    try:
        text = payload.decode("utf-8")
        value = text.strip() if kind in TEXT_KINDS else json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError):
        log.warning("dashboard: ignoring a malformed %s message on %s", kind, topic)
        return None
    if kind not in TEXT_KINDS and not isinstance(value, dict):
        log.warning("dashboard: ignoring a %s message on %s that is not a JSON object", kind, topic)
        return None
    return Message(device, kind, label, value)


class LiveStore:
    """Per-device state, updated by the MQTT thread and read by page renders."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.broker = "connecting"
        """the subscriber's connection state, shown on the Live page"""
        self._devices: dict[str, DeviceState] = {}
        self._lock = threading.Lock()

    def receive(self, topic: str, payload: bytes) -> bool:
        """Decode and apply one raw message; False if it was not for us."""
        message = decode(topic, payload, self.root)
        if message is None:
            return False
        self.apply(message)
        return True

    def apply(self, message: Message, now: float | None = None) -> None:
        """Fold one message into the device's state."""
        with self._lock:
            device = self._devices.get(message.device)
            if device is None:
                prefix = f"{self.root}/{message.device}" if self.root else message.device
                device = self._devices[message.device] = DeviceState(prefix)
            _fold(device, message)
            device.last_seen = time.time() if now is None else now

    def snapshot(self) -> dict[str, DeviceState]:
        """A consistent deep copy of every device, sorted by name."""
        with self._lock:
            return {name: copy.deepcopy(self._devices[name]) for name in sorted(self._devices)}


def _fold(device: DeviceState, message: Message) -> None:
    kind, payload = message.kind, message.payload
    if kind == "status":
        device.status = payload
        if payload == OFFLINE:  # what was current is not any more; history (events, levels) stays
            device.open_events.clear()
            device.scores.clear()
            device.stats = None
    elif kind == "state" and message.label is not None:
        device.states[message.label] = payload
    elif kind == "started":
        device.open_events[str(payload.get("id"))] = payload
    elif kind == "event":
        device.open_events.pop(str(payload.get("id")), None)
        _add_events(device, [payload])
    elif kind == "recent":
        events = payload.get("events")
        _add_events(device, [e for e in events if isinstance(e, dict)] if isinstance(events, list) else [])
    elif kind == "level":
        device.levels.append(payload)
    elif kind == "scores":
        device.scores.append(payload)
    elif kind == "stats":
        device.stats = payload
    elif kind == "audio":
        device.audio = payload


def _add_events(device: DeviceState, events: list[dict[str, Any]]) -> None:
    """Closed events not seen yet (by id: delivery is at least once, and recent events repeat them), by start."""
    known = {str(e.get("id")) for e in device.events}
    new = [e for e in events if str(e.get("id")) not in known]
    if not new:
        return
    merged = sorted([*device.events, *new], key=lambda e: str(e.get("start", "")))
    device.events.clear()
    device.events.extend(merged[-EVENTS_KEPT:])

"""The latest state of every listener, as seen on MQTT: a pure, thread-safe store.

paho's network thread writes (``apply``); Streamlit's script threads read (``snapshot``), so every
access takes one lock and readers get deep copies they may keep. Topic names come from
:class:`~noisewatch.daemon.sinks.topics.Topics`, the one place that knows them; this module only
inverts them (topic -> device and kind). Payloads are decoded into the daemon's own message types
(:mod:`noisewatch.daemon.messages`), so the dashboard reads the fields the daemon writes and
defines none of them again.
"""

from __future__ import annotations

import copy
import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from noisewatch.daemon import messages
from noisewatch.daemon.messages import Event, Level, Scores, Started, Stats, Status
from noisewatch.daemon.sinks.homeassistant import OFFLINE
from noisewatch.daemon.sinks.topics import Topics
from noisewatch.daemon.thresholds_store import ThresholdError, parse_threshold

log = logging.getLogger(__name__)

EVENTS_KEPT = 200
"""closed events kept per device (the timeline shows the latest)"""
LEVELS_KEPT = 720
"""level reports kept per device (12 h at the default 60 s period)"""
SCORES_KEPT = 120
"""top-3 score reports kept per device"""
TEXT_KINDS = ("status", "state")
"""kinds whose payload is plain text (the others are JSON objects)"""
MESSAGE_TYPES: dict[str, type[messages.Message]] = {
    "event": Event, "started": Started, "level": Level, "scores": Scores, "stats": Stats, "audio": Status}
"""topic kind -> the daemon's message class its payloads are (``audio`` carries ``status`` messages)"""
RECENT = "recent"
"""the retained ``{"events": [...]}`` list of closed events"""

Payload = str | float | messages.Message | tuple[Event, ...]
"""text (status, state), a threshold, one message, or the recent events"""


class Received(NamedTuple):
    """One MQTT message, decoded: which device, what kind, for which label."""

    device: str
    kind: str
    label: str | None
    payload: Payload


@dataclass
class DeviceState:
    """What the dashboard knows about one listener."""

    prefix: str
    """the listener's topic prefix, e.g. ``noisewatch/kitchen``"""
    status: str | None = None
    """``online`` / ``offline`` (the Last Will), None before the retained status arrives"""
    states: dict[str, str] = field(default_factory=dict)
    """label -> ``ON`` / ``OFF``"""
    thresholds: dict[str, float] = field(default_factory=dict)
    """label -> the threshold in force (the model's, the config's, or one set from Home Assistant)"""
    open_events: dict[str, Started] = field(default_factory=dict)
    """event id -> its ``started`` notice, until the closed event arrives"""
    events: deque[Event] = field(default_factory=lambda: deque(maxlen=EVENTS_KEPT))
    """closed events, oldest first, without duplicates (delivery is at least once)"""
    levels: deque[Level] = field(default_factory=lambda: deque(maxlen=LEVELS_KEPT))
    scores: deque[Scores] = field(default_factory=lambda: deque(maxlen=SCORES_KEPT))
    stats: Stats | None = None
    stats_at: float | None = None
    """when the health report arrived live; None when it came retained (made before the dashboard subscribed)"""
    audio: Status | None = None
    """the retained audio-input state (listening, or an error with its reason)"""
    last_seen: float | None = None
    """wall-clock time (s since the epoch) of the device's latest live message; None until one arrives (a
    retained message, replayed by the broker on subscribing, says nothing of when the device spoke)"""
    status_since: float | None = None
    """when the current status arrived live; None when it came retained (it held before the dashboard watched)"""
    live: bool = True
    """False in snapshots taken while the dashboard has no broker connection: then the status and what goes
    with it are as last heard, not current (the Last Will cannot reach the dashboard either)"""


def root_of(prefix: str) -> str:
    """The parent of a listener's prefix, where its siblings live: ``noisewatch/kitchen`` -> ``noisewatch``."""
    return prefix.rpartition("/")[0]


def topic_filter(prefix: str) -> str:
    """The subscription covering the listener at ``prefix`` and its siblings: ``noisewatch/kitchen`` ->
    ``noisewatch/+/#``. A one-level prefix has no parent to share: ``kitchen`` -> ``kitchen/#`` (its
    siblings would be every topic on the broker, Home Assistant's among them)."""
    root = root_of(prefix)
    return f"{root}/+/#" if root else f"{prefix}/#"


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
             topics.recent_events: RECENT, topics.audio: "audio"}
    if topic in kinds:
        return device, kinds[topic], None
    for kind, per_label in (("state", topics.state), ("threshold", topics.threshold)):
        parent = _parent(per_label)
        if topic.startswith(parent) and "/" not in topic[len(parent):]:
            return device, kind, topic[len(parent):]
    return None


def _parent(per_label: Callable[[str], str]) -> str:
    """``<prefix>/state/``: the parent of the per-label topics that a Topics method builds."""
    probe = "x"
    return per_label(probe)[: -len(probe)]


def decode(topic: str, payload: bytes, root: str) -> Received | None:
    """A raw MQTT message, decoded; None for foreign topics and for payloads that are not what the topic carries."""
    parsed = parse_topic(topic, root)
    if parsed is None:
        return None
    device, kind, label = parsed
    try:
        text = payload.decode("utf-8")
        value = (text.strip() if kind in TEXT_KINDS or not text else parse_threshold(text) if kind == "threshold"
                 else _from_json(kind, json.loads(text)))  # empty: a retained topic cleared (its entity removed)
    except (UnicodeDecodeError, json.JSONDecodeError, messages.DecodeError, ThresholdError) as exc:
        log.warning("dashboard: ignoring a malformed %s message on %s: %s", kind, topic, exc)
        return None
    return Received(device, kind, label, value)


def _from_json(kind: str, value: Any) -> messages.Message | tuple[Event, ...]:
    """The message (or, on the recent-events topic, the events) of a topic kind; DecodeError if it is not one."""
    if kind != RECENT:
        return _message(value, MESSAGE_TYPES[kind])
    events = value.get("events") if isinstance(value, dict) else None
    if not isinstance(events, list):
        raise messages.DecodeError("not an object with a list of events")
    decoded = [_message(item, Event) for item in events]
    return tuple(event for event in decoded if isinstance(event, Event))  # all of them: the kind is Event's


def _message(value: Any, cls: type[messages.Message]) -> messages.Message:
    """``value`` as a message of class ``cls`` (a payload without ``type`` is taken as one); DecodeError if not."""
    return messages.decode(value, kind=cls.kind)


class LiveStore:
    """Per-device state, updated by the MQTT thread and read by page renders."""

    def __init__(self, prefix: str) -> None:
        self.root = root_of(prefix)
        self._only = None if self.root else prefix
        """a one-level prefix: that listener alone (see :func:`topic_filter`)"""
        self.broker = "connecting"
        """the subscriber's connection state, shown on the Live page"""
        self.connected = False
        """whether the subscriber holds a subscribed connection: only then is what arrives current"""
        self._devices: dict[str, DeviceState] = {}
        self._lock = threading.Lock()

    def receive(self, topic: str, payload: bytes, retained: bool = False) -> bool:
        """Decode and apply one raw message (``retained``: replayed by the broker on subscribing); False if it
        was not for us."""
        received = decode(topic, payload, self.root)
        if received is None or self._only not in (None, received.device):
            return False
        self.apply(received, retained=retained)
        return True

    def apply(self, received: Received, now: float | None = None, retained: bool = False) -> None:
        """Fold one message into the device's state; only a live one dates it."""
        with self._lock:
            device = self._devices.get(received.device)
            if device is None:
                prefix = f"{self.root}/{received.device}" if self.root else received.device
                device = self._devices[received.device] = DeviceState(prefix)
            known, report = device.status, device.stats
            _fold(device, received)
            when = None if retained else (time.time() if now is None else now)
            if received.kind == "status" and (when is not None or device.status != known):
                device.status_since = when  # a status replayed unchanged (the dashboard resubscribed) keeps its date
            if received.kind == "stats" and (when is not None or device.stats != report):
                device.stats_at = when  # likewise the health report: the page says how old it is
            if when is not None:
                device.last_seen = when

    def snapshot(self) -> dict[str, DeviceState]:
        """A consistent deep copy of every device, sorted by name, marked live or not."""
        with self._lock:
            devices = {name: copy.deepcopy(self._devices[name]) for name in sorted(self._devices)}
            for device in devices.values():
                device.live = self.connected
            return devices


def _fold(device: DeviceState, received: Received) -> None:
    match received.payload:
        case str() as status if received.kind == "status":
            _set_status(device, status)
        case "" if received.label is not None:  # a removed label's state or threshold
            (device.states if received.kind == "state" else device.thresholds).pop(received.label, None)
        case str() as state if received.label is not None:
            device.states[received.label] = state
        case float() as threshold if received.label is not None:
            device.thresholds[received.label] = threshold
        case Started() as started:
            device.open_events[started.id] = started
        case Event() as event:
            device.open_events.pop(event.id, None)
            _add_events(device, [event])
        case tuple() as recent:
            _add_events(device, recent)
        case Level() as level if not device.levels or device.levels[-1] != level:  # the same report again: the
            device.levels.append(level)  # listener re-sends its latest at a reconnect, the broker at a resubscribe
        case Scores() as scores:
            device.scores.append(scores)
        case Stats() as stats:
            device.stats = stats
        case Status() as audio:
            device.audio = audio


def _set_status(device: DeviceState, status: str) -> None:
    device.status = status
    if status == OFFLINE:  # what was current is not any more; history (events, levels) and the last health
        device.open_events.clear()  # report (its losses stay losses; views show it only while current) stay
        device.scores.clear()


def _add_events(device: DeviceState, events: Sequence[Event]) -> None:
    """Closed events not seen yet (by id: delivery is at least once, and recent events repeat them), by start."""
    known = {event.id for event in device.events}
    new = [event for event in events if event.id not in known]
    if not new:
        return
    merged = sorted([*device.events, *new], key=lambda event: event.start)
    device.events.clear()
    device.events.extend(merged[-EVENTS_KEPT:])

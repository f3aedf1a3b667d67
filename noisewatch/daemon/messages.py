"""The daemon's messages: one frozen dataclass per kind, each with its JSON form.

Producers build these; every sink and the dashboard's store read them (``decode``), so there is
one definition of each payload. On the wire a message is a JSON object whose ``type`` names the
kind and whose ``schema`` is :data:`SCHEMA_VERSION`; the other keys are the dataclass fields, in
order. ``device`` is left empty by producers and stamped once, by the outbox.

Kinds:

- ``started``: an event opened (the start of a siren, before it ends).
- ``event``: an event closed. ``loud`` events (label ``loud``, from the level alone) share this
  schema with null confidences, so that subscribers handle one event shape.
- ``level``: Leq/Lmax/Lmin of a period in dBFS and dBFS(A), plus dB(A) SPL when calibrated.
- ``scores``: the top scores of a window (tuning aid, off by default).
- ``stats``: periodic health of the listener and its sinks.
- ``status``: the audio input's state (``listening``, ``audio_error`` or ``silent``), retained as ``<prefix>/audio``.

Every payload is strict JSON: a non-finite float is a bug upstream and raises here, never
reaches a subscriber as ``NaN``.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import json
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

SCHEMA_VERSION = 1
"""Bumped when a field changes meaning or goes away (new fields do not bump it)."""

M = TypeVar("M", bound="Message")


def encode_json(payload: dict[str, Any]) -> bytes:
    """Compact, strict JSON (``allow_nan=False``), as every sink writes it: a message (:meth:`Message.encode`) and the
    payloads that are not one (a Home Assistant discovery config, the list of recent events, a re-addressed level
    report)."""
    return json.dumps(payload, separators=(",", ":"), allow_nan=False).encode()


class AudioState(enum.Enum):
    """What the audio input is doing, as ``status`` messages say it."""

    LISTENING = "listening"
    AUDIO_ERROR = "audio_error"
    SILENT = "silent"
    """The input delivers nothing but one value, such as exact zeros (muted capture, gain at 0, dead converter): open,
    but deaf."""


@dataclass(frozen=True)
class Message:
    """Common shape: a kind, the device that sent it, and a JSON form."""

    kind: ClassVar[str] = ""
    decoders: ClassVar[dict[str, Callable[[Any], Any]]] = {}
    """Fields whose JSON form is not their Python form: field name -> converter from JSON."""

    def to_json(self) -> dict[str, Any]:
        """The wire form: ``type``, ``schema``, then the fields."""
        body = {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}
        return {"type": self.kind, "schema": SCHEMA_VERSION, **body}

    def encode(self) -> bytes:
        """The wire form as bytes (:func:`encode_json`)."""
        return encode_json(self.to_json())

    @classmethod
    def from_json(cls: type[M], data: dict[str, Any]) -> M:
        """The message from its wire form; unknown keys are ignored (a newer sender may add fields)."""
        names = {f.name for f in dataclasses.fields(cls)}
        values = {key: value for key, value in data.items() if key in names}
        for name, convert in cls.decoders.items():
            if name in values:
                values[name] = convert(values[name])
        return cls(**values)


def _plain(value: Any) -> Any:
    """A field value in its JSON form."""
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, tuple):
        return [_plain(item) for item in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    return value


@dataclass(frozen=True)
class Started(Message):
    """An event opened: what is heard so far (its end comes in the ``event``)."""

    kind: ClassVar[str] = "started"
    id: str
    label: str
    confidence: float | None
    """Highest smoothed score so far, 0-1."""
    start: str
    """ISO 8601 UTC, ms."""
    offset_s: float
    """Start, in seconds of audio since the stream began."""
    model: str
    device: str = ""
    continues: str | None = None
    """The id of the event this one goes on from: a sound longer than ``detector.max_duration_s`` is reported in
    pieces, and an automation on "a siren started" wants the first alone. None: a new sound."""


@dataclass(frozen=True)
class Event(Message):
    """An event closed (a sound class, or ``loud`` with null confidences)."""

    kind: ClassVar[str] = "event"
    id: str
    label: str
    confidence: float | None
    """Highest smoothed score while open, 0-1."""
    mean_confidence: float | None
    start: str
    end: str
    offset_s: float
    duration_s: float
    peak_dbfs: float
    """Loudest sample of the event's audio."""
    mean_dbfs: float
    """RMS level of the event's audio."""
    model: str
    device: str = ""
    continues: str | None = None
    """As in :class:`Started`."""


@dataclass(frozen=True)
class Level(Message):
    """Sound levels of one period: energy mean, loudest and quietest 1 s level."""

    kind: ClassVar[str] = "level"
    start: str
    end: str
    offset_s: float
    period_s: float
    leq_dbfs: float
    lmax_dbfs: float
    lmin_dbfs: float
    leq_dbfs_a: float
    lmax_dbfs_a: float
    lmin_dbfs_a: float
    leq_dba_spl: float | None = None
    """dB(A) SPL, only when ``levels.calibration_db`` is set."""
    lmax_dba_spl: float | None = None
    lmin_dba_spl: float | None = None
    device: str = ""

    def to_json(self) -> dict[str, Any]:
        """Uncalibrated reports leave the SPL keys out rather than sending nulls."""
        return {k: v for k, v in super().to_json().items() if not (k.endswith("_spl") and v is None)}


@dataclass(frozen=True)
class Score:
    """One label's score in a window."""

    label: str
    score: float


@dataclass(frozen=True)
class Scores(Message):
    """The highest scores of one window (its end time)."""

    kind: ClassVar[str] = "scores"
    time: str
    offset_s: float
    top: tuple[Score, ...]
    device: str = ""

    decoders: ClassVar[dict[str, Callable[[Any], Any]]] = {
        "top": lambda items: tuple(Score(str(item["label"]), float(item["score"])) for item in items)}


class HealthFigures(typing.TypedDict, total=False):
    """A sink's own figures for ``stats``, by :class:`Stats` field name (typed: a misspelt key was dropped unsaid)."""

    spool_depth: int
    spool_bytes: int
    spool_dropped: int
    spool_quarantined: int
    spool_dead_letters: int
    spool_memory_queued: int
    spool_memory_dropped: int
    spool_disk_error: str | None
    mqtt_network_restarts: int
    jsonl_failed_writes: int


@dataclass(frozen=True)
class Stats(Message):
    """Periodic health: how long it has listened, what it processed, what it lost, what waits to be sent."""

    kind: ClassVar[str] = "stats"
    uptime_s: float
    audio_s: float
    """Seconds of audio this run has processed (a reload goes on counting)."""
    windows: int
    gated_windows: int
    """Windows too quiet to classify."""
    events: int
    input_overflows: int
    """Overflows the audio device reported (lifetime)."""
    dropped_frames: int
    """Frames the ring buffer dropped because processing fell behind (lifetime)."""
    nonfinite_samples: int
    source: str
    model: str
    runtime: str
    version: str
    started: str | None = None
    """When this run started (UTC, whole seconds), by the wall clock of this report (None from a listener older than
    the field: a new field does not raise the schema)."""
    audio_state: AudioState = AudioState.LISTENING
    spool_depth: int | None = None
    """MQTT only: events waiting for the broker."""
    spool_bytes: int | None = None
    spool_dropped: int | None = None
    """Events dropped by the spool's size or age bound, or whose files went from the disk before they were sent."""
    spool_quarantined: int | None = None
    """Damaged spool files set aside in ``<spool>/quarantine/``."""
    spool_dead_letters: int | None = None
    """Events the broker refused (MQTT 5), set aside in ``<spool>/dead-letter/``."""
    spool_memory_queued: int | None = None
    """Messages (events and their started notices) held in memory because the spool's disk refuses writes."""
    spool_memory_dropped: int | None = None
    """Events lost because the disk refused them for too long."""
    spool_disk_error: str | None = None
    """Why the spool's disk refuses writes now (``No space left on device``, ``Read-only file system``, ``No such file
    or directory``), else None."""
    mqtt_network_restarts: int | None = None
    """MQTT only: times paho's network thread ended unexpectedly and was started again (lifetime)."""
    jsonl_failed_writes: int | None = None
    """JSON lines only: messages that could not be written (disk full, read-only)."""
    device: str = ""

    def with_figures(self, figures: HealthFigures) -> "Stats":
        """These stats with the sinks' own figures (see ``Sink.health``) filled in."""
        return dataclasses.replace(self, **figures)

    decoders: ClassVar[dict[str, Callable[[Any], Any]]] = {"audio_state": AudioState}


@dataclass(frozen=True)
class Status(Message):
    """The audio input's state changed: listening on a source, or an error (with the reason)."""

    kind: ClassVar[str] = "status"
    state: AudioState
    source: str | None = None
    error: str | None = None
    device: str = ""

    decoders: ClassVar[dict[str, Callable[[Any], Any]]] = {"state": AudioState}


KINDS: dict[str, type[Message]] = {cls.kind: cls for cls in (Started, Event, Level, Scores, Stats, Status)}
"""Every message class by its wire ``type``."""


@functools.cache
def _hints(kind: str) -> dict[str, Any]:
    """The field annotations of ``kind``'s class, resolved once (they are strings under ``from __future__ import
    annotations``), at its first decode: only consumers decode (the dashboard), and resolved at import they cost every
    daemon start-up ~2 ms (issue 17)."""
    return typing.get_type_hints(KINDS[kind])


class DecodeError(ValueError):
    """A payload that is not one of our messages."""


def decode(data: dict[str, Any] | bytes | str, kind: str | None = None) -> Message:
    """A message from its JSON form, every field of its annotated type (a consumer sorts, hashes and formats
    them). ``kind``: what the payload must be (where it arrives says so); one without ``type`` is taken as it."""
    try:
        payload = json.loads(data) if isinstance(data, (bytes, str)) else data
    except ValueError as exc:
        raise DecodeError(f"not JSON: {exc}") from None
    if not isinstance(payload, dict):
        raise DecodeError("not a JSON object")
    sent = payload.get("type", kind)
    if kind is not None and sent != kind:
        raise DecodeError(f"a {sent!r} message where {kind!r} belongs")
    if sent not in KINDS:
        raise DecodeError(f"no message type {sent!r}")
    try:
        message = KINDS[sent].from_json(payload)
    except (ValueError, KeyError, TypeError) as exc:
        raise DecodeError(f"not a {sent} message: {exc}") from None
    wrong = [f.name for f in dataclasses.fields(message) if not _conforms(getattr(message, f.name), _hints(sent)[f.name])]
    if wrong:
        raise DecodeError(f"{sent} message with {', '.join(wrong)} of the wrong type")
    return message


def _conforms(value: Any, hint: Any) -> bool:
    """Whether a decoded field holds its annotated type (a JSON integer is a valid float; a bool is no number)."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return any(_conforms(value, arg) for arg in typing.get_args(hint))
    if typing.get_origin(hint) is tuple:
        return isinstance(value, tuple)
    if hint in (int, float):
        return isinstance(value, (int, hint)) and not isinstance(value, bool)
    return isinstance(value, hint)


def stamped(message: M, device: str) -> M:
    """The message as sent by ``device``."""
    fields: dict[str, Any] = {"device": device}
    return dataclasses.replace(message, **fields)


__all__ = ["SCHEMA_VERSION", "AudioState", "DecodeError", "Event", "KINDS", "Level", "Message", "Score",
           "Scores", "Started", "Stats", "Status", "decode", "stamped"]

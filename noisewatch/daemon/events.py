"""The one event schema, and the clock that turns stream offsets into timestamps.

An event's times come from the audio sample clock (seconds since the stream began), converted
to UTC only here, at the edge, through a wall-clock anchor taken when the stream started. A
message published late, or replayed from the spool, still says when the sound happened. The anchor
moves when audio is lost or the clock is corrected; offsets before a move keep the anchor they had.

Fields of a closed event (``event`` messages): id, label, confidence (max smoothed score while
open), mean_confidence, start, end (ISO 8601 UTC, ms), offset_s (start, seconds since stream
start), duration_s, peak_dbfs and mean_dbfs of the event's audio, device, model. ``loud``
events carry the same fields; their confidence fields are null (they come from the level alone).
A ``started`` notice carries id, label, confidence so far, start, offset_s, device, model.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

LOUD = "loud"
FLOOR_DBFS = -120.0
MAX_ANCHORS = 16


@dataclass(frozen=True)
class SampleClock:
    """Maps stream offsets (s) to UTC through the wall time of stream sample 0 (the anchor).

    The anchor moves (:meth:`moved`) when audio is lost or sample and wall clock disagree; offsets
    before a move keep the anchor they had, so an event open across a move keeps the start it was
    announced with. The last MAX_ANCHORS anchors are kept, enough for any open event or level report.
    """

    anchor: datetime
    since_s: float = 0.0
    """First stream offset this anchor applies to; earlier ones use :attr:`before`."""
    before: "SampleClock | None" = field(default=None, repr=False)

    @classmethod
    def starting_now(cls) -> "SampleClock":
        return cls(datetime.now(timezone.utc))

    def moved(self, anchor: datetime, at_s: float) -> "SampleClock":
        """This clock with ``anchor`` for offsets from ``at_s`` on."""
        return SampleClock(anchor, at_s, self._kept(MAX_ANCHORS - 1))

    def after_loss(self, seconds: float, at_s: float) -> "SampleClock":
        """``seconds`` of audio went missing before offset ``at_s`` (ring-buffer overflow): the sample count
        no longer includes them, so every sample from there on is that much later in wall time."""
        return self.moved(self.anchor + timedelta(seconds=seconds), at_s)

    def iso(self, offset_s: float) -> str:
        clock = self
        while clock.before is not None and offset_s < clock.since_s:
            clock = clock.before
        moment = clock.anchor + timedelta(seconds=offset_s)
        return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")

    def _kept(self, anchors: int) -> "SampleClock":
        """This clock with at most ``anchors`` anchors (its own included)."""
        before = self.before._kept(anchors - 1) if self.before is not None and anchors > 1 else None
        return SampleClock(self.anchor, self.since_s, before)


@dataclass
class OpenEvent:
    """An event while it is open; the detector updates it window by window."""

    label: str
    start_s: float
    end_s: float
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    confidence: float | None = None
    _confidence_sum: float = 0.0
    _windows: int = 0
    peak_dbfs: float = FLOOR_DBFS
    """Levels of the audio between start and end; set from the level history when it closes."""
    mean_dbfs: float = FLOOR_DBFS

    def add_score(self, score: float) -> None:
        self.confidence = score if self.confidence is None else max(self.confidence, score)
        self._confidence_sum += score
        self._windows += 1

    @property
    def mean_confidence(self) -> float | None:
        return self._confidence_sum / self._windows if self._windows else None

    @property
    def duration_s(self) -> float:
        return max(0.0, self.end_s - self.start_s)


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def started_payload(event: OpenEvent, clock: SampleClock, device: str, model: str) -> dict[str, Any]:
    return {
        "id": event.id,
        "label": event.label,
        "confidence": _round(event.confidence, 4),
        "start": clock.iso(event.start_s),
        "offset_s": round(event.start_s, 3),
        "device": device,
        "model": model,
    }


def event_payload(event: OpenEvent, clock: SampleClock, device: str, model: str) -> dict[str, Any]:
    return {
        "id": event.id,
        "label": event.label,
        "confidence": _round(event.confidence, 4),
        "mean_confidence": _round(event.mean_confidence, 4),
        "start": clock.iso(event.start_s),
        "end": clock.iso(event.end_s),
        "offset_s": round(event.start_s, 3),
        "duration_s": round(event.duration_s, 3),
        "peak_dbfs": round(event.peak_dbfs, 2),
        "mean_dbfs": round(event.mean_dbfs, 2),
        "device": device,
        "model": model,
    }

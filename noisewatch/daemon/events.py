"""Events while open, the messages they become, and the clock that turns stream offsets into timestamps.

An event's times come from the audio sample clock (seconds since the stream began), converted
to UTC only here, at the edge, through a wall-clock anchor taken when the stream started. A
message published late, or replayed from the spool, still says when the sound happened. The anchor
moves when audio is lost or the clock is corrected; offsets before a move keep the anchor they had.

The fields of ``started`` and ``event`` messages are defined once, in
:mod:`noisewatch.daemon.messages`.
"""

from __future__ import annotations

import bisect
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from noisewatch.daemon.messages import Event, Started

LOUD = "loud"
MAX_ANCHORS = 4096


@dataclass(frozen=True)
class SampleClock:
    """Maps stream offsets (s) to UTC through the wall time of stream sample 0 (the anchor).

    The anchor moves (:meth:`moved`) when audio is lost or sample and wall clock disagree; offsets
    before a move keep the anchor they had, so an event open across a move keeps the start it was
    announced with. Earlier anchors are kept as far back as a message can still name an offset
    (``keep_from_s``), at most MAX_ANCHORS of them (sustained overload moves the clock at every read).
    """

    anchor: datetime
    since_s: float = 0.0
    """First stream offset this anchor applies to."""
    earlier: tuple[tuple[float, datetime], ...] = field(default=(), repr=False)
    """(since_s, anchor) of the anchors before this one, oldest first."""

    @classmethod
    def starting_now(cls) -> "SampleClock":
        return cls(datetime.now(timezone.utc))

    def moved(self, anchor: datetime, at_s: float, keep_from_s: float) -> "SampleClock":
        """This clock with ``anchor`` for offsets from ``at_s`` on; anchors whose offsets all lie before
        ``keep_from_s`` are forgotten."""
        kept = [pair for pair in (*self.earlier, (self.since_s, self.anchor)) if pair[0] < at_s]
        ends = [since for since, _ in kept[1:]] + [at_s]  # each anchor serves up to the next one
        kept = [pair for pair, end in zip(kept, ends) if end > keep_from_s]
        return SampleClock(anchor, at_s, tuple(kept[-(MAX_ANCHORS - 1):]))

    def iso(self, offset_s: float, anchored_s: float | None = None) -> str:
        """UTC of ``offset_s``, through the anchor of ``anchored_s`` (default: its own), the start of the stretch it
        belongs to."""
        return _iso(self._anchor_of(offset_s if anchored_s is None else anchored_s) + timedelta(seconds=offset_s))

    def span(self, start_s: float, end_s: float, anchored_s: float | None = None) -> tuple[str, str]:
        """Start and end of a stretch, both through the anchor of its start (or of ``anchored_s``: where the
        sound it is a piece of began): an event or level period open across a move keeps its announced start,
        its end is that start plus its length, and the pieces of one sound meet (through the end's own anchor,
        a wall clock stepped back 2 h gave an end 2 h before the start)."""
        anchored_s = start_s if anchored_s is None else anchored_s
        return self.iso(start_s, anchored_s), self.iso(end_s, anchored_s)

    def _anchor_of(self, offset_s: float) -> datetime:
        if offset_s < self.since_s and self.earlier:
            index = bisect.bisect_right(self.earlier, offset_s, key=lambda pair: pair[0]) - 1
            return self.earlier[max(index, 0)][1]
        return self.anchor


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def started_iso(wall_now_s: float, elapsed_s: float) -> str:
    """UTC of a start ``elapsed_s`` ago, as the wall clock reads it now, in whole seconds: the same at every report
    (no state change in Home Assistant's history each minute), and right again at the next one after the clock
    was stepped (a Pi without a real-time clock starts at its last shutdown's time until NTP answers)."""
    return _iso(datetime.fromtimestamp(round(wall_now_s - elapsed_s), timezone.utc))


@dataclass
class OpenEvent:
    """An event while it is open; the detector updates it window by window."""

    label: str
    start_s: float
    end_s: float
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    continues: str | None = None
    """The id of the piece of the same sound this one goes on from (see ``Started.continues``)."""
    sound_start_s: float | None = None
    """Where the sound began, for a piece that continues one (see :attr:`began_s`)."""
    confidence: float | None = None
    levels: tuple[float, float] | None = None
    """(mean, peak) dBFS of its audio when its detector measured them (a ``loud`` event: its own seconds')."""
    _confidence_sum: float = 0.0
    _windows: int = 0

    def add_score(self, score: float) -> None:
        self.confidence = score if self.confidence is None else max(self.confidence, score)
        self._confidence_sum += score
        self._windows += 1

    @property
    def mean_confidence(self) -> float | None:
        return self._confidence_sum / self._windows if self._windows else None

    @property
    def began_s(self) -> float:
        """Where the sound this piece belongs to began: its times go through that moment's anchor."""
        return self.start_s if self.sound_start_s is None else self.sound_start_s

    @property
    def duration_s(self) -> float:
        return max(0.0, self.end_s - self.start_s)


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def started_message(event: OpenEvent, clock: SampleClock, model: str) -> Started:
    """The notice that ``event`` opened."""
    return Started(id=event.id, label=event.label, confidence=_round(event.confidence, 4),
                   start=clock.iso(event.start_s, event.began_s), offset_s=round(event.start_s, 3), model=model,
                   continues=event.continues)


def event_message(event: OpenEvent, clock: SampleClock, model: str, levels: tuple[float, float]) -> Event:
    """The report of the closed ``event``; ``levels`` are (mean, peak) dBFS of its audio."""
    mean_dbfs, peak_dbfs = levels
    start, end = clock.span(event.start_s, event.end_s, event.began_s)
    return Event(
        id=event.id, label=event.label, confidence=_round(event.confidence, 4),
        mean_confidence=_round(event.mean_confidence, 4), start=start, end=end, offset_s=round(event.start_s, 3),
        duration_s=round(event.duration_s, 3), peak_dbfs=round(peak_dbfs, 2), mean_dbfs=round(mean_dbfs, 2),
        model=model, continues=event.continues,
    )

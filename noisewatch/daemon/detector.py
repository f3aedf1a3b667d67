"""Scores in, events out: thresholds, smoothing, start/end, min/max duration, cooldown.

Pure code, driven only by the sample clock (seconds since the stream began), so the same
audio gives the same events whether it is replayed at full speed or heard live.

Where an event starts: the first window whose smoothed score passes the threshold ends some
time after the sound's onset (the model needs part of a 4 s window to be the sound). When the
window has clear loudness contrast, the onset is the start of its last loud stretch; otherwise
the newest hop's start is used. The end of an event is placed the same way, from the last
window that still heard it. Without that, starts lag by seconds and ends by a whole window.
Labels in ``require_contrast`` start an event only on a window that has such a loud stretch.
"""

from __future__ import annotations

import functools
from collections import deque
from dataclasses import dataclass, replace
from typing import Literal, overload

import numpy as np

from noisewatch.daemon.events import LOUD, OpenEvent
from noisewatch.daemon.levels import power_to_db

ACTIVITY_FRAME_S = 0.05
"""Resolution of the loudness envelope used to place onsets and ends."""
ACTIVITY_CONTRAST_DB = 10.0
"""Less contrast than this between a window's loud and quiet parts: no onset can be placed."""
ACTIVITY_FLOOR_HISTORY_S = 10.0
"""The quiet floor is the quietest recent stretch: a sound filling a whole window cannot raise it."""
ACTIVITY_MERGE_GAP_S = 1.0
"""Loud stretches closer than this belong together (the barks of one dog, a wailing siren)."""
THRESHOLD_OFF = 1.0
"""A threshold at the top of its range turns the label off: an int8 model's scores reach exactly 1.0, so
``score >= 1`` still fired, and the slider at its maximum did not quiet a false alarm."""


@overload
def heard(score: float, threshold: float) -> bool: ...
@overload
def heard(score: np.ndarray, threshold: np.ndarray) -> np.ndarray: ...
def heard(score: float | np.ndarray, threshold: float | np.ndarray) -> bool | np.ndarray:
    """Whether a score counts as its label heard: at least its threshold, unless that turns the label off.
    The one rule for the detector and for training's clip decisions (elementwise on arrays; plain operators,
    so that the detector's per-label floats pay no numpy call)."""
    return (threshold < THRESHOLD_OFF) & (score >= threshold)


@dataclass(frozen=True)
class DetectorSettings:
    """Per-label thresholds (already merged: bundle defaults, then config overrides) and timing."""

    thresholds: dict[str, float]
    ignore: frozenset[str]
    smoothing_windows: int
    hop_s: float
    release_s: float
    min_duration_s: float
    cooldown_s: float
    max_duration_s: float
    require_contrast: frozenset[str] = frozenset()
    """Labels whose events start only on a window with a loud stretch (ACTIVITY_CONTRAST_DB above the quiet
    floor), so a steady bed that merely resembles the sound (rain, wind, a distant road) does not start one."""


@dataclass
class Observation:
    """What the detector learns from one window."""

    start_s: float
    end_s: float
    scores: np.ndarray | None
    """Model scores in label order; None when the energy gate skipped inference (= background)."""
    samples: np.ndarray
    sample_rate: int
    floor_db: float = np.inf
    """Recent quiet floor of the stream (see NoiseFloor), in dB re full scale."""

    @functools.cached_property
    def activity(self) -> tuple[float, float] | None:
        """(onset, end) in stream seconds of the window's last loud stretch, if it has one."""
        span = sound_activity(self.samples, self.sample_rate, self.floor_db)
        return None if span is None else (self.start_s + span[0], self.start_s + span[1])


@dataclass(frozen=True)
class Transition:
    kind: Literal["started", "ended"]
    event: OpenEvent


def frame_levels(samples: np.ndarray, sample_rate: int) -> np.ndarray:
    """Level in dB re full scale of consecutive ACTIVITY_FRAME_S frames."""
    frame = max(1, int(ACTIVITY_FRAME_S * sample_rate))
    n = len(samples) // frame
    rows = np.asarray(samples, dtype=np.float32)[: n * frame].reshape(n, frame)
    # float32 sums of the squares (~1e-6 relative, 1e-5 dB): squared into a float64 copy first, a 4 s window
    # cost 20 times as much, run for every window a label scores over its threshold and for every hop's floor
    power = np.einsum("ij,ij->i", rows, rows).astype(np.float64) / frame
    return 10.0 * np.log10(np.maximum(power, 1e-12))


def quietest_tenth(levels: np.ndarray) -> float:
    """The 10th-percentile level (lower order statistic; a partition, not a sort: runs per hop)."""
    k = (len(levels) - 1) // 10
    return float(np.partition(levels, k)[k])


def sound_activity(samples: np.ndarray, sample_rate: int, floor_db: float = np.inf) -> tuple[float, float] | None:
    """(onset_s, end_s) within the window of its last loud stretch, or None without contrast.

    Loud means ACTIVITY_CONTRAST_DB above the quiet floor: the stream's recent floor or the
    window's own quietest tenth, whichever is lower.
    """
    level = frame_levels(samples, sample_rate)
    if len(level) < 2:
        return None
    floor = min(floor_db, quietest_tenth(level))
    loud = np.flatnonzero(level >= floor + ACTIVITY_CONTRAST_DB)
    if len(loud) == 0:
        return None
    gaps = np.flatnonzero(np.diff(loud) * ACTIVITY_FRAME_S > ACTIVITY_MERGE_GAP_S)
    first = loud[gaps[-1] + 1] if len(gaps) else loud[0]
    frame_s = len(samples) / len(level) / sample_rate
    return first * frame_s, (loud[-1] + 1) * frame_s


class NoiseFloor:
    """Tracks the quietest recent stretch of the stream, hop by hop (cheap: new audio only): the lowest of the last
    10 s of hops' quietest tenths, and a 0.5 s hop holds 10 frames, so in effect the quietest 50 ms of 10 s. The
    quietest tenth of all of the 10 s (steadier: one dip, such as a file's fade-in heard mid-stream, sets this
    floor low for 10 s and can place an onset seconds early) found fewer events held out (docs/scene-evaluation.md)."""

    def __init__(self, sample_rate: int, hop_s: float) -> None:
        self.sample_rate = sample_rate
        self._history: deque[float] = deque(maxlen=max(1, int(round(ACTIVITY_FLOOR_HISTORY_S / hop_s))))

    def update(self, newest_hop: np.ndarray) -> float:
        levels = frame_levels(newest_hop, self.sample_rate)
        if len(levels):
            self._history.append(quietest_tenth(levels))
        return min(self._history, default=np.inf)


@dataclass
class _LabelState:
    history: deque
    event: OpenEvent | None = None
    announced: bool = False
    absent_since: float | None = None
    blocked_until: float = float("-inf")
    last_end: float = float("-inf")
    """End of the label's previous event: a new one never starts before it (its onset, placed back in the
    window, would otherwise overlap the sound already reported)."""


class Detector:
    """Turns a stream of per-window scores into started/ended transitions, per label."""

    def __init__(self, labels: tuple[str, ...], settings: DetectorSettings) -> None:
        self.labels = labels
        self.settings = settings
        self._own_thresholds = dict(settings.thresholds)
        """The config's and the bundle's: those set from Home Assistant come on top (:meth:`set_thresholds`)."""
        self._watched = [(i, label) for i, label in enumerate(labels) if label not in settings.ignore]
        self._state = {label: _LabelState(deque(maxlen=settings.smoothing_windows)) for _, label in self._watched}

    def set_thresholds(self, overrides: dict[str, float]) -> None:
        """The thresholds set from Home Assistant (all of them: a label left out has its own again) on top of the
        detector's own, from the next window on; open events go on."""
        known = {label: value for label, value in overrides.items() if label in self._own_thresholds}
        self.settings = replace(self.settings, thresholds={**self._own_thresholds, **known})

    def take_over(self, previous: "Detector") -> None:
        """Continue ``previous``'s open events and score history under these settings (a reload), for the
        labels both watch; ``previous`` is left with none, so closing it closes nothing that goes on."""
        smoothing = self.settings.smoothing_windows
        for label in list(self._state):
            old = previous._state.get(label)
            if old is None:
                continue
            scores = list(old.history)
            if scores and len(scores) < smoothing:  # more smoothing: the mean goes on as it was
                scores = [sum(scores) / len(scores)] * (smoothing - len(scores)) + scores
            self._state[label] = replace(old, history=deque(scores, maxlen=smoothing))
            previous._state[label] = _LabelState(deque(maxlen=previous.settings.smoothing_windows))

    def follow(self, previous: "Detector") -> None:
        """Come after ``previous``, another model's (a reload): its scores say nothing to this one, which judges from
        its own first window on, and ``previous`` closes its open events; but no event starts here before the end of
        one ``previous`` reported or closes (an onset placed back in the window started a second one inside it)."""
        for label, state in self._state.items():
            old = previous._state.get(label)
            if old is not None:
                state.last_end = max(old.last_end, old.event.end_s if old.event is not None else float("-inf"))

    def update(self, obs: Observation) -> list[Transition]:
        """Feed one window; returns what started and ended because of it, in order."""
        out: list[Transition] = []
        for index, label in self._watched:
            state = self._state[label]
            state.history.append(0.0 if obs.scores is None else float(obs.scores[index]))
            smoothed = sum(state.history) / self.settings.smoothing_windows  # a short history counts as absent
            threshold = self.settings.thresholds[label]
            if heard(smoothed, threshold):
                out += self._present(label, state, smoothed, obs)
            elif state.event is not None:
                out += self._absent(state, obs)
        return out

    def open_since_s(self) -> float | None:
        """Start of the oldest open event, if any."""
        return min((state.event.start_s for state in self._state.values() if state.event is not None), default=None)

    def close_all(self, at_s: float) -> list[Transition]:
        """End every open event (shutdown, end of file, stream gap)."""
        out: list[Transition] = []
        for _, label in self._watched:
            state = self._state[label]
            if state.event is not None:
                out += self._close(state, at_s)
            state.history.clear()
        return out

    def _present(self, label: str, state: _LabelState, score: float, obs: Observation) -> list[Transition]:
        out: list[Transition] = []
        if state.event is None:
            if obs.end_s < state.blocked_until or (label in self.settings.require_contrast and obs.activity is None):
                return out
            state.event = OpenEvent(label=label, start_s=max(self._onset(obs), state.last_end), end_s=obs.end_s)
        event = state.event
        event.add_score(score)
        event.end_s = max(event.end_s, self._end(obs), event.start_s)
        state.absent_since = None
        if not state.announced and event.duration_s >= self.settings.min_duration_s:
            state.announced = True
            out.append(Transition("started", event))
        while state.announced and event.duration_s > self.settings.max_duration_s:
            out += self._split(state, event, score)
            event = state.event
        return out

    def _split(self, state: _LabelState, finished: OpenEvent, score: float) -> list[Transition]:
        """Report a long event's first max_duration_s and continue with the sound heard after it (the piece
        used to end with its window, seconds after the sound, and leave a 0 s continuation behind it).
        The continuation is announced first, which keeps subscribers' state ON across the split."""
        split = finished.start_s + self.settings.max_duration_s
        continuation = OpenEvent(label=finished.label, start_s=split, end_s=finished.end_s, continues=finished.id,
                                 sound_start_s=finished.began_s)
        continuation.add_score(score)
        finished.end_s, state.event = split, continuation
        return [Transition("started", continuation), Transition("ended", finished)]

    def _absent(self, state: _LabelState, obs: Observation) -> list[Transition]:
        if state.absent_since is None:
            state.absent_since = obs.end_s - self.settings.hop_s
        if obs.end_s - state.absent_since < self.settings.release_s:
            return []
        return self._close(state, obs.end_s)

    def _close(self, state: _LabelState, at_s: float) -> list[Transition]:
        event, announced = state.event, state.announced
        state.event, state.announced, state.absent_since = None, False, None
        state.blocked_until = at_s + self.settings.cooldown_s
        if event is not None:
            state.last_end = event.end_s
        # announced is what counts, not the duration now: subscribers heard "started" (a split's continuation,
        # or min_duration_s raised by a reload) and stay ON until they hear the end
        return [Transition("ended", event)] if event is not None and announced else []

    def _onset(self, obs: Observation) -> float:
        newest_hop = max(obs.start_s, obs.end_s - self.settings.hop_s)
        return obs.activity[0] if obs.activity else newest_hop

    def _end(self, obs: Observation) -> float:
        return obs.activity[1] if obs.activity else obs.end_s


class LoudnessDetector:
    """A ``loud`` event when the 1 s level stays at or above a threshold for long enough."""

    def __init__(self, threshold_dbfs: float, min_duration_s: float) -> None:
        self.threshold_dbfs = threshold_dbfs
        self.min_duration_s = min_duration_s
        self._event: OpenEvent | None = None
        self._announced = False
        self._energy = 0.0  # the sum of its seconds' mean squares
        self._seconds = 0.0  # how many seconds were fed (fewer than the event's when a reload restarts the meter)
        self._peak = 0.0  # largest peak square

    def update(self, offset_s: float, dbfs: float, peak_dbfs: float | None = None) -> list[Transition]:
        """Feed one 1 s level (offset_s is the start of that second) and its peak (else taken as the level). An
        event is whole seconds: its levels are theirs, however long it lasts (a level history holds only so much)."""
        if dbfs < self.threshold_dbfs:
            return self.close()
        if self._event is None:
            self._event = OpenEvent(label=LOUD, start_s=offset_s, end_s=offset_s)
            self._energy = self._seconds = self._peak = 0.0
        self._energy += 10.0 ** (dbfs / 10.0)
        self._seconds += 1.0
        self._peak = max(self._peak, 10.0 ** ((dbfs if peak_dbfs is None else peak_dbfs) / 10.0))
        self._event.end_s = offset_s + 1.0
        self._event.levels = (power_to_db(self._energy / self._seconds), power_to_db(self._peak))
        if not self._announced and self._event.duration_s >= self.min_duration_s:
            self._announced = True
            return [Transition("started", self._event)]
        return []

    def take_over(self, previous: "LoudnessDetector") -> None:
        """Continue ``previous``'s open event under this threshold and length (a reload): a sound loud under both
        stays one event. ``previous`` is left with none, so closing it closes nothing that goes on."""
        self._event, self._announced = previous._event, previous._announced
        self._energy, self._seconds, self._peak = previous._energy, previous._seconds, previous._peak
        previous._event, previous._announced = None, False

    def close(self) -> list[Transition]:
        event, announced = self._event, self._announced
        self._event, self._announced = None, False
        return [Transition("ended", event)] if event is not None and announced else []

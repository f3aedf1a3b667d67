"""Everything after the ring buffer: windows -> gate -> model -> detector -> messages.

No threads, devices or sockets here: the service feeds audio blocks in and gets typed messages
back, which it hands to the outbox. Time is the sample count; wall-clock enters only through the
SampleClock anchor, moved by what each block says of its capture (:meth:`Pipeline.accept`).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np

from noisewatch.bundle import Bundle
from noisewatch.config import AudioSection, Config, DetectorSection, LevelsSection, LoudnessSection, ScoresSection
from noisewatch.daemon.detector import Detector, DetectorSettings, LoudnessDetector, NoiseFloor, Observation, Transition
from noisewatch.daemon.events import SampleClock, event_message, started_message
from noisewatch.daemon.levels import LevelHistory, LevelMeter, PeriodLevels, dbfs
from noisewatch.daemon.messages import Level, Message, Score, Scores
from noisewatch.daemon.ringbuffer import AudioBlock
from noisewatch.daemon.stream import StreamingFeatures, Window
from noisewatch.dc_offset import DcOffsetRemover
from noisewatch.runtime import TFLiteModel

log = logging.getLogger(__name__)
TOP_SCORES = 3
MAX_HISTORY_SPANS = 400000
"""Level history bound (9.6 MB; 2.6 h of 23 ms stretches): a longer detector.max_duration_s (up to a day) records
stretches of as many hops as it takes to hold it, so that an event is measured over all of its audio."""


@dataclass(frozen=True)
class PipelineSettings:
    """The config sections the signal chain reads; each stage gets only its own."""

    audio: AudioSection
    detector: DetectorSection
    loudness: LoudnessSection
    levels: LevelsSection
    scores: ScoresSection

    @classmethod
    def of(cls, config: Config) -> "PipelineSettings":
        return cls(config.audio, config.detector, config.loudness, config.levels, config.scores)


def detector_settings(section: DetectorSection, bundle: Bundle, hop_s: float) -> DetectorSettings:
    """Bundle thresholds, overridden per label by the config (those set from Home Assistant come later,
    through :meth:`Detector.set_thresholds`); the bundle's smoothing and release unless the config sets them."""
    thresholds = bundle.thresholds_over(section.thresholds)
    smoothing, release = section.smoothing_windows, section.release_s
    return DetectorSettings(
        thresholds=thresholds,
        ignore=frozenset(section.ignore),
        smoothing_windows=bundle.timing.smoothing_windows if smoothing is None else smoothing,
        hop_s=hop_s,
        release_s=bundle.timing.release_s if release is None else release,
        min_duration_s=section.min_duration_s,
        cooldown_s=section.cooldown_s,
        max_duration_s=section.max_duration_s,
        require_contrast=frozenset(section.require_contrast),
    )


@dataclass
class Counters:
    """Health figures for ``stats`` messages; one instance lives as long as the process (reloads keep it)."""

    windows: int = 0
    gated: int = 0
    events: int = 0
    input_overflows: int = 0
    """Overflows the audio device reported."""
    dropped_frames: int = 0
    """Frames the ring buffer dropped because processing fell behind."""
    nonfinite_samples: int = 0
    """NaN or infinite input samples, read as silence."""


class Pipeline:
    """Feeds audio through the stages and returns the messages they produce."""

    def __init__(self, settings: PipelineSettings, bundle: Bundle, model: TFLiteModel, clock: SampleClock,
                 counters: Counters | None = None) -> None:
        self.settings, self.bundle, self.model, self.clock = settings, bundle, model, clock
        self.sample_rate = bundle.features.sample_rate
        self.dc_offset = DcOffsetRemover(self.sample_rate)
        self.stream = StreamingFeatures(bundle.features, settings.audio.hop_s)
        self.hop_s = self.stream.hop_samples / self.sample_rate
        self.detector = Detector(bundle.labels, detector_settings(settings.detector, bundle, self.hop_s))
        self.floor = NoiseFloor(self.sample_rate, self.hop_s)
        self.loudness = LoudnessDetector(settings.loudness.threshold_dbfs, settings.loudness.min_duration_s)
        self.levels = LevelMeter(self.sample_rate, settings.levels.interval_s, settings.levels.calibration_db)
        history_s = settings.detector.max_duration_s + bundle.features.window_s + self.detector.settings.release_s
        hops = int(history_s * self.sample_rate / bundle.features.hop_length) + 2
        span = bundle.features.hop_length * -(-hops // MAX_HISTORY_SPANS)  # coarser only when it must be
        self.history = LevelHistory(keep=int(history_s * self.sample_rate / span) + 2, sample_rate=self.sample_rate,
                                    span=span)
        self._clock_memory_s = max(history_s, settings.levels.interval_s) + bundle.features.window_s
        """How far back a message can name an offset (an open event's start, a level period's start)."""
        self.counters = counters if counters is not None else Counters()
        self.samples = 0
        self._scores_at_s = -math.inf
        """Where the last ``scores`` report was (``scores.interval_s`` apart at least, across reloads too)."""

    @classmethod
    def from_config(cls, config: Config, bundle: Bundle, model: TFLiteModel,
                    clock: SampleClock | None = None, counters: Counters | None = None) -> "Pipeline":
        return cls(PipelineSettings.of(config), bundle, model, clock or SampleClock.starting_now(), counters)

    @property
    def position_s(self) -> float:
        """Seconds of audio processed since the stream began (the sample clock)."""
        return self.samples / self.sample_rate

    @property
    def samples_to_window(self) -> int:
        """Model-rate samples still to come before the next window is complete."""
        return self.stream.samples_to_window

    def accept(self, block: AudioBlock, mono: np.ndarray, first: bool) -> list[Message]:
        """One read from the audio source (``mono``: its samples at the model rate). The one place where
        what the read says of lost audio becomes counters, clock moves and gaps. ``first``: the first
        read from a newly opened source, whose capture time anchors the clock."""
        self.counters.input_overflows += block.overflows
        self.counters.dropped_frames += block.lost_frames
        self.counters.nonfinite_samples += block.nonfinite
        out: list[Message] = []
        if first:  # timestamps count from when this source's audio began, not from its opening
            self.heard_at(block.captured)
            # and its offset is its own (a reopen may be another converter): estimated afresh, as at start-up
            self.dc_offset.restart()
        elif block.lost_frames:
            out += self.lost(block.lost_frames / block.sample_rate)
        return out + self.process(mono)

    def take_over(self, previous: "Pipeline") -> None:
        """Go on where ``previous`` stopped (a reload): same sample clock and offsets. What the new settings
        leave as it was goes on too, so a reload is not a gap (unless the service reopens the input: it makes one):
        the windows and the noise floor (same
        features and hop, else they start afresh), the level history (kept to the new length), the level
        period (same interval and calibration), the open events of the labels both know, under the same model
        (their state moves here, so ``previous.finish`` closes nothing that goes on; another model's scores say
        nothing to a new one, which judges afresh, its events starting after those ``previous.finish`` closes),
        an open ``loud`` event (loudness on in both: the new threshold and length judge it from the next second)
        and when the last scores report was."""
        self.samples = previous.samples
        self.clock = previous.clock
        self.dc_offset.take_over(previous.dc_offset)
        if self.stream.continues(previous.stream):
            self.stream, self.floor = previous.stream, previous.floor
        else:
            self.stream.reset(start_sample=self.samples)
        if self.settings.levels == previous.settings.levels:  # previous.finish reports no period that goes on here
            self.levels, previous.levels = previous.levels, self.levels
        else:
            self.levels.reset(at_sample=self.samples)
        if self.bundle.ident == previous.bundle.ident:
            self.detector.take_over(previous.detector)
        else:
            self.detector.follow(previous.detector)
        self.history.take_over(previous.history, since_s=self.detector.open_since_s())
        if self.settings.loudness.enabled and previous.settings.loudness.enabled:
            self.loudness.take_over(previous.loudness)
        self._scores_at_s = previous._scores_at_s

    def heard_at(self, captured: datetime) -> None:
        """The audio at the current position was captured at ``captured``: timestamps follow it from here."""
        self._move_clock(captured - timedelta(seconds=self.position_s))

    def lost(self, seconds: float) -> list[Message]:
        """``seconds`` of audio went missing just before the current position (ring-buffer overflow): the
        sample count leaves them out, so every later sample is that much later in wall time. A hop or more
        is a gap: open events end where the audio stopped instead of spanning audio nobody heard."""
        out = self.gap() if seconds >= self.hop_s else []
        self._move_clock(self.clock.anchor + timedelta(seconds=seconds))
        return out

    def clock_error_s(self, captured: datetime) -> float:
        """How much later than the sample clock says the audio at the current position was captured."""
        return (captured - self.clock.anchor).total_seconds() - self.position_s

    def _move_clock(self, anchor: datetime) -> None:
        at_s = self.position_s
        self.clock = self.clock.moved(anchor, at_s, keep_from_s=at_s - self._clock_memory_s)

    def process(self, mono: np.ndarray) -> list[Message]:
        """Model-rate mono audio of any length, in stream order.

        Taken up to one window at a time, as the daemon reads it: an event is measured from the windows heard
        so far, and a ``loud`` event that ended in a longer piece was measured before its audio was (the
        dashboard's Classify page, handed a whole recording, gave such events -120 dBFS)."""
        out: list[Message] = []
        while len(mono) > self.stream.samples_to_window:
            split = self.stream.samples_to_window
            out += self._process(mono[:split])
            mono = mono[split:]
        return out + self._process(mono)

    def _process(self, mono: np.ndarray) -> list[Message]:
        out: list[Message] = []
        mono = self.dc_offset(mono)
        # recorded as it streams in, before any event it ends is measured: recorded as windows were classified, a
        # `loud` event ending in the first 4 s of a stream (or after a gap) had no audio and read the -120 dB floor
        self.history.add(self.samples, mono)
        seconds, reports = self.levels.push(mono)
        for second in seconds:
            if self.settings.loudness.enabled:
                out += self._messages(self.loudness.update(second.offset_s, second.dbfs, peak_dbfs=second.peak_dbfs))
        out += [self._level(report) for report in reports]
        for window in self.stream.push(mono):
            out += self._classify(window)
        self.samples += len(mono)
        return out

    def gap(self) -> list[Message]:
        """The stream broke (device lost, audio dropped): close what is open and start fresh windows.

        The service moves :attr:`clock` on when audio flows again."""
        out = self.finish()
        self.stream.reset(start_sample=self.samples)
        self.levels.reset()
        return out

    def finish(self) -> list[Message]:
        """End of stream or shutdown: every open event is closed, and the level period being filled is reported."""
        closed = self._messages(self.detector.close_all(self.position_s) + self.loudness.close())
        return closed + [self._level(report) for report in self.levels.flush()]

    def _classify(self, window: Window) -> list[Message]:
        start_s = window.start_sample / self.sample_rate
        gated = dbfs(window.samples) < self.settings.audio.gate_dbfs
        scores = None if gated else self.model.predict(window.features)
        obs = Observation(
            start_s=start_s,
            end_s=start_s + self.bundle.features.window_s,
            scores=scores,
            samples=window.samples,
            sample_rate=self.sample_rate,
            floor_db=self.floor.update(window.samples[-self.stream.hop_samples :]),
        )
        self.counters.windows += 1
        self.counters.gated += gated
        out = self._messages(self.detector.update(obs))
        if scores is not None and self._scores_due(obs.end_s):
            out.append(self._scores(obs.end_s, scores))
        return out

    def _messages(self, transitions: list[Transition]) -> list[Message]:
        out: list[Message] = []
        model = self.bundle.ident
        for transition in transitions:
            event = transition.event
            if transition.kind == "started":
                out.append(started_message(event, self.clock, model))
            else:
                self.counters.events += 1
                out.append(event_message(event, self.clock, model, event.levels or self.history.over(event.start_s, event.end_s)))
        return out

    def _scores_due(self, at_s: float) -> bool:
        section = self.settings.scores
        if not section.enabled or at_s < self._scores_at_s + section.interval_s:
            return False
        self._scores_at_s = at_s
        return True

    def _scores(self, at_s: float, scores: np.ndarray) -> Scores:
        top = np.argsort(scores)[::-1][:TOP_SCORES]
        return Scores(time=self.clock.iso(at_s), offset_s=round(at_s, 3),
                      top=tuple(Score(self.bundle.labels[i], round(float(scores[i]), 4)) for i in top))

    def _level(self, report: PeriodLevels) -> Level:
        start, end = self.clock.span(report.offset_s, report.offset_s + report.period_s)
        spl = report.dba_spl
        leq_spl, lmax_spl, lmin_spl = (None, None, None) if spl is None else (spl.leq, spl.lmax, spl.lmin)
        return Level(start=start, end=end, offset_s=report.offset_s, period_s=report.period_s,
                     leq_dbfs=report.dbfs.leq, lmax_dbfs=report.dbfs.lmax, lmin_dbfs=report.dbfs.lmin,
                     leq_dbfs_a=report.dbfs_a.leq, lmax_dbfs_a=report.dbfs_a.lmax, lmin_dbfs_a=report.dbfs_a.lmin,
                     leq_dba_spl=leq_spl, lmax_dba_spl=lmax_spl, lmin_dba_spl=lmin_spl)

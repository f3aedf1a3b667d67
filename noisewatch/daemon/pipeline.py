"""Everything after the ring buffer: windows -> gate -> model -> detector -> messages.

No threads, devices or sockets here: the service feeds model-rate mono audio in, sinks get
messages out. Time is the sample count; wall-clock enters only through the SampleClock anchor.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np

from noisewatch.bundle import Bundle
from noisewatch.config import Config
from noisewatch.daemon.detector import Detector, DetectorSettings, LoudnessDetector, NoiseFloor, Observation, Transition
from noisewatch.daemon.events import SampleClock, event_payload, started_payload
from noisewatch.daemon.levels import LevelHistory, LevelMeter, dbfs
from noisewatch.daemon.sinks import Sink
from noisewatch.daemon.stream import StreamingFeatures, Window
from noisewatch.runtime import TFLiteModel

log = logging.getLogger(__name__)
TOP_SCORES = 3
MAX_HISTORY_HOPS = 20000
"""Level history bound (~2.8 h at a 0.5 s hop): events longer than that are measured over their last part."""


def detector_settings(config: Config, bundle: Bundle, hop_s: float) -> DetectorSettings:
    """Bundle thresholds, overridden per label by the config."""
    section = config.detector
    thresholds = {label: section.thresholds.get(label, bundle.threshold(label)) for label in bundle.labels}
    return DetectorSettings(
        thresholds=thresholds,
        ignore=frozenset(section.ignore),
        smoothing_windows=section.smoothing_windows,
        hop_s=hop_s,
        release_s=section.release_s,
        min_duration_s=section.min_duration_s,
        cooldown_s=section.cooldown_s,
        max_duration_s=section.max_duration_s,
    )


@dataclass
class Counters:
    """Health figures for ``stats`` messages."""

    windows: int = 0
    gated: int = 0
    events: int = 0


class Pipeline:
    """Feeds audio through the stages and sends every message to every sink."""

    def __init__(self, config: Config, bundle: Bundle, model: TFLiteModel, sinks: list[Sink], clock: SampleClock) -> None:
        self.config, self.bundle, self.model, self.sinks, self.clock = config, bundle, model, sinks, clock
        self.sample_rate = bundle.features.sample_rate
        self.stream = StreamingFeatures(bundle.features, config.audio.hop_s)
        self.hop_s = self.stream.hop_samples / self.sample_rate
        self.detector = Detector(bundle.labels, detector_settings(config, bundle, self.hop_s))
        self.floor = NoiseFloor(self.sample_rate, self.hop_s)
        self.loudness = LoudnessDetector(config.loudness.threshold_dbfs, config.loudness.min_duration_s)
        self.levels = LevelMeter(self.sample_rate, config.levels.interval_s, config.levels.calibration_db)
        history_s = config.detector.max_duration_s + bundle.features.window_s + config.detector.release_s
        self.history = LevelHistory(keep=min(MAX_HISTORY_HOPS, int(history_s / self.hop_s) + 2))
        self._clock_memory_s = max(history_s, config.levels.interval_s) + bundle.features.window_s
        """How far back a message can name an offset (an open event's start, a level period's start)."""
        self.counters = Counters()
        self.samples = 0
        self._next_scores_s = 0.0

    @property
    def position_s(self) -> float:
        """Seconds of audio processed since the stream began (the sample clock)."""
        return self.samples / self.sample_rate

    def heard_at(self, captured: datetime) -> None:
        """The audio at the current position was captured at ``captured``: timestamps follow it from here."""
        self._move_clock(captured - timedelta(seconds=self.position_s))

    def lost(self, seconds: float) -> None:
        """``seconds`` of audio went missing just before the current position (ring-buffer overflow): the
        sample count leaves them out, so every later sample is that much later in wall time. A hop or more
        is a gap: open events end where the audio stopped instead of spanning audio nobody heard."""
        if seconds >= self.hop_s:
            self.gap()
        self._move_clock(self.clock.anchor + timedelta(seconds=seconds))

    def clock_error_s(self, captured: datetime) -> float:
        """How much later than the sample clock says the audio at the current position was captured."""
        return (captured - self.clock.anchor).total_seconds() - self.position_s

    def _move_clock(self, anchor: datetime) -> None:
        at_s = self.position_s
        self.clock = self.clock.moved(anchor, at_s, keep_from_s=at_s - self._clock_memory_s)

    def process(self, mono: np.ndarray) -> None:
        """Model-rate mono audio of any length, in stream order."""
        seconds, reports = self.levels.push(mono)
        for second in seconds:
            if self.config.loudness.enabled:
                self._emit(self.loudness.update(second.offset_s, second.dbfs))
        for report in reports:
            self.send("level", self._level_payload(report))
        for window in self.stream.push(mono):
            self._classify(window)
        self.samples += len(mono)

    def gap(self) -> None:
        """The stream broke (device lost, audio dropped): close what is open and start fresh windows.

        The service moves :attr:`clock` on when audio flows again."""
        self.finish()
        self.stream.reset(start_sample=self.samples)
        self.levels.reset()

    def finish(self) -> None:
        """End of stream or shutdown: every open event is closed and sent."""
        self._emit(self.detector.close_all(self.position_s) + self.loudness.close())

    def send(self, kind: str, payload: dict[str, Any]) -> None:
        for sink in self.sinks:
            try:
                sink.send(kind, payload)
            except Exception:  # one broken sink must not silence the others or stop listening
                log.exception("sink %s failed on a %s message", type(sink).__name__, kind)

    def _classify(self, window: Window) -> None:
        start_s = window.start_sample / self.sample_rate
        gated = dbfs(window.samples) < self.config.audio.gate_dbfs
        scores = None if gated else self.model.predict(window.features)
        self.history.add(start_s, window.samples, self.sample_rate)
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
        self._emit(self.detector.update(obs))
        if scores is not None:
            self._maybe_send_scores(obs.end_s, scores)

    def _emit(self, transitions: list[Transition]) -> None:
        device, model = self.config.device_id, self.bundle.ident
        for transition in transitions:
            if transition.kind == "started":
                self.send("started", started_payload(transition.event, self.clock, device, model))
            else:
                event = transition.event
                event.mean_dbfs, event.peak_dbfs = self.history.over(event.start_s, event.end_s)
                self.counters.events += 1
                self.send("event", event_payload(event, self.clock, device, model))

    def _maybe_send_scores(self, at_s: float, scores: np.ndarray) -> None:
        section = self.config.scores
        if not section.enabled or at_s < self._next_scores_s:
            return
        self._next_scores_s = at_s + section.interval_s
        top = np.argsort(scores)[::-1][:TOP_SCORES]
        self.send(
            "scores",
            {
                "time": self.clock.iso(at_s),
                "offset_s": round(at_s, 3),
                "top": [{"label": self.bundle.labels[i], "score": round(float(scores[i]), 4)} for i in top],
                "device": self.config.device_id,
            },
        )

    def _level_payload(self, report: dict[str, Any]) -> dict[str, Any]:
        start = report["offset_s"]
        return {
            "start": self.clock.iso(start),
            "end": self.clock.iso(start + report["period_s"]),
            **report,
            "device": self.config.device_id,
        }


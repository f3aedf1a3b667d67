"""Held-out scenes: a scene-level score of what the daemon sees, next to the clip-level one.

Clip accuracy says how a model labels whole clips; the daemon slides a 4 s window every 0.5 s over
mostly quiet audio, so most windows hold quiet or part of an event. A held-out scene strings clips of
the test fold (random levels, 5-8 s of quiet between them) over a quiet bed (coloured noise plus the
test fold's background recordings turned well down) and windows it with the daemon's own
:class:`~noisewatch.daemon.stream.StreamingFeatures`. Scores, from each window's class (its argmax, or
what the daemon's per-class thresholds make of it):

- event recall: an event counts as found when two consecutive windows overlapping it give its class;
- quiet false alarms: windows overlapping no event that give a target class.

Deterministic per fold; numpy only.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from noisewatch.daemon.stream import StreamingFeatures
from noisewatch.dc_offset import DcOffsetRemover
from noisewatch.features import FeatureSettings
from noisewatch.train.datasets import BACKGROUND, NOISE_COLOURS, Clip, coloured_noise, load_clip

HOP_S = 0.5
"""The daemon's default hop."""
EVENTS_PER_CLASS = 20
EVENTS_PER_SCENE = 30
GAP_S = (5.0, 8.0)
"""Quiet between two events."""
EVENT_PEAK_DBFS = (-20.0, -6.0)
BED_DBFS = (-60.0, -45.0)
"""RMS of the coloured-noise bed, redrawn every :data:`BED_STEP_S`."""
BED_STEP_S = 20.0
RECORDING_SHARE = 0.5
"""Probability that a bed stretch also holds a background recording..."""
RECORDING_ATTENUATION_DB = (25.0, 35.0)
"""...turned down this far."""
PUSH_S = 1.0
"""Audio pushed into the stream at a time (bounds the windows held in memory)."""
SEED = 1000


@dataclass(frozen=True)
class Scene:
    """One held-out scene, windowed: features and first sample of each window, and its events."""

    x: np.ndarray
    starts: np.ndarray
    window: int
    """Samples per window."""
    spans: tuple[tuple[int, int, str], ...]
    """(first sample, end sample, label) of each event."""


def held_out_scenes(clips: Sequence[Clip], fold: int, settings: FeatureSettings) -> list[Scene]:
    """Scenes of up to :data:`EVENTS_PER_CLASS` target clips per class of ``fold``, beds from that fold only."""
    rng = np.random.default_rng(SEED + fold)
    targets = [c for c in clips if c.fold == fold and c.label != BACKGROUND and c.path is not None]
    beds = [c for c in clips if c.fold == fold and c.label == BACKGROUND and c.path is not None]
    picked: dict[str, list[Clip]] = {}
    for index in rng.permutation(len(targets)):
        picked.setdefault(targets[index].label, []).append(targets[index])
    events = [clip for group in picked.values() for clip in group[:EVENTS_PER_CLASS]]
    rng.shuffle(events)
    return [
        _windowed(*_scene_audio(events[start : start + EVENTS_PER_SCENE], beds, rng, settings.sample_rate), settings)
        for start in range(0, len(events), EVENTS_PER_SCENE)
    ]


def _scene_audio(events: Sequence[Clip], beds: Sequence[Clip], rng: np.random.Generator,
                 rate: int) -> tuple[np.ndarray, tuple[tuple[int, int, str], ...]]:
    """Events separated by quiet, over a quiet bed; and where each event lies."""
    parts, spans, position = [], [], 0
    for clip in events:
        gap = int(rng.uniform(*GAP_S) * rate)
        y = load_clip(clip, rate).astype(np.float64)
        y *= 10 ** (rng.uniform(*EVENT_PEAK_DBFS) / 20) / (np.max(np.abs(y)) + 1e-12)
        parts += [np.zeros(gap), y]
        spans.append((position + gap, position + gap + len(y), clip.label))
        position += gap + len(y)
    parts.append(np.zeros(int(rng.uniform(*GAP_S) * rate)))
    track = np.concatenate(parts)
    return np.clip(track + _bed(len(track), beds, rng, rate), -1.0, 1.0).astype(np.float32), tuple(spans)


def _bed(n: int, beds: Sequence[Clip], rng: np.random.Generator, rate: int) -> np.ndarray:
    """Coloured noise whose colour and level change every :data:`BED_STEP_S`, at times with a recording."""
    bed = np.zeros(n)
    step = int(BED_STEP_S * rate)
    for start in range(0, n, step):
        m = min(step, n - start)
        noise = coloured_noise(m, str(rng.choice(NOISE_COLOURS)), rng) * 10 ** (rng.uniform(*BED_DBFS) / 20)
        bed[start : start + m] = noise
        if beds and rng.random() < RECORDING_SHARE:
            recording = load_clip(beds[int(rng.integers(len(beds)))], rate).astype(np.float64)
            bed[start : start + m] += np.resize(recording, m) * 10 ** (-rng.uniform(*RECORDING_ATTENUATION_DB) / 20)
    return bed


def _windowed(audio: np.ndarray, spans: tuple[tuple[int, int, str], ...], settings: FeatureSettings) -> Scene:
    """The scene through the daemon's offset filter and streaming feature extractor."""
    stream, offset = StreamingFeatures(settings, HOP_S), DcOffsetRemover(settings.sample_rate)
    step = int(PUSH_S * settings.sample_rate)
    windows = [w for start in range(0, len(audio), step) for w in stream.push(offset(audio[start : start + step]))]
    x = np.stack([w.features for w in windows]).astype(np.float32)
    return Scene(x, np.array([w.start_sample for w in windows]), settings.window_samples, spans)


def scene_metrics(scored: Sequence[tuple[Scene, np.ndarray]], labels: Sequence[str]) -> dict[str, Any]:
    """Event recall (overall and per class) and quiet false-alarm windows (in all and by the class given) of
    scenes with each window's class."""
    background = labels.index(BACKGROUND)
    found: dict[str, list[bool]] = {}
    quiet_windows = 0
    alarms: Counter[str] = Counter()
    for scene, top in scored:
        covered = np.zeros(len(top), bool)
        for first, end, label in scene.spans:
            overlaps = (scene.starts < end) & (scene.starts + scene.window > first)
            covered |= overlaps
            hits = top[overlaps] == labels.index(label)
            found.setdefault(label, []).append(bool(np.any(hits[1:] & hits[:-1])))
        quiet_windows += int(np.sum(~covered))
        alarms.update(labels[index] for index in top[~covered] if index != background)
    every = [hit for hits in found.values() for hit in hits]
    return {
        "event_recall": float(np.mean(every)) if every else 0.0,
        "n_events": len(every),
        "quiet_false_alarm_windows": sum(alarms.values()),
        "n_quiet_windows": quiet_windows,
        "quiet_false_alarms_per_class": dict(alarms.most_common()),
        "recall_per_class": {label: float(np.mean(hits)) for label, hits in sorted(found.items())},
    }


def predict_scenes(scenes: Sequence[Scene],
                   predict: Callable[[np.ndarray], np.ndarray]) -> list[tuple[Scene, np.ndarray]]:
    """Each scene with the scores of each of its windows."""
    return [(scene, predict(scene.x)) for scene in scenes]

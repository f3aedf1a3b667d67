"""Scene-mix augmentation: training windows that look like what the daemon hears.

The daemon classifies 4 s windows sliding over mostly quiet audio, so a real event fills only part of a
window and ambient sound surrounds it. Whole (tiled) dataset clips never show that. A scene-mix window
places an event clip, or a random excerpt of it, at a random offset in a 4 s quiet bed (coloured noise
at room-tone level, or a background recording attenuated well below its own level) at a random gain.
Its label is the event's class when enough of the event is inside the window, else ``background``, so
the model also learns that the tail of an event plus quiet is not a new event.

Deterministic per (clip key, copy, seed); numpy only, like :mod:`noisewatch.train.featurize`.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from noisewatch.features import FeatureSettings, extract
from noisewatch.train.datasets import BACKGROUND, NOISE_COLOURS, Clip, coloured_noise, load_clip, stable_hash

log = logging.getLogger(__name__)

FADE_S = 0.01
"""Fade at the cut ends of an excerpt, so a cut does not add a click the real event never had."""


@dataclass(frozen=True)
class SceneMix:
    """How scene-mix windows are drawn."""

    copies: int = 3
    """Mixed windows per event clip, added to the training set next to the clip itself."""
    seed: int = 0
    excerpt_s: tuple[float, float] = (1.0, 4.0)
    """Length range of the random excerpt of the event clip (the whole clip if shorter)."""
    peak_dbfs: tuple[float, float] = (-20.0, -3.0)
    """Range of the event's peak level in the mix."""
    quiet_dbfs: tuple[float, float] = (-60.0, -40.0)
    """RMS range of a synthetic (coloured noise) bed."""
    bed_attenuation_db: tuple[float, float] = (10.0, 30.0)
    """How far a background recording used as bed is turned down."""
    recording_bed_share: float = 0.5
    """Probability that the bed is a background recording rather than synthetic noise."""
    around_peak: bool = True
    """Excerpts always contain the clip's loudest sample (see :func:`excerpt`)."""
    min_cover_s: float = 1.0
    """An event counts as present when at least this much of it is inside the window..."""
    min_cover_fraction: float = 0.5
    """...or at least this fraction of its excerpt (short events such as gun shots)."""
    min_energy_fraction: float = 0.5
    """...and the window must also hold at least this fraction of the excerpt's energy."""
    edge_s: float = 0.25
    """The excerpt overlaps the window by at least this much (tails of events become background)."""
    empty_share: float = 0.34
    """Probability that a mixed window is the bed alone (``background``): quiet beds as varied as the
    mixes' beds, so the model does not learn that any quiet bed means an event."""


def excerpt(y: np.ndarray, rng: np.random.Generator, mix: SceneMix, sample_rate: int) -> np.ndarray:
    """A random part of an event clip, ``mix.excerpt_s`` long, with short fades at its ends.

    With ``mix.around_peak`` the part holds the clip's loudest sample: UrbanSound8K clips carry long
    stretches of their own ambience, and a random second of a dog_bark clip may hold no bark at all.
    """
    length = min(len(y), int(rng.uniform(*mix.excerpt_s) * sample_rate))
    peak = int(np.argmax(np.abs(y)))
    lo, hi = max(0, peak - length + 1), min(peak, len(y) - length)
    start = int(rng.integers(lo, hi + 1)) if mix.around_peak else int(rng.integers(len(y) - length + 1))
    part = y[start : start + length].astype(np.float64)
    fade = min(int(FADE_S * sample_rate), length // 2)
    if fade:
        ramp = np.linspace(0.0, 1.0, fade)
        part[:fade] *= ramp
        part[-fade:] *= ramp[::-1]
    return part


def quiet_bed(n: int, rng: np.random.Generator, mix: SceneMix, recording: np.ndarray | None) -> np.ndarray:
    """``n`` samples of ambient sound: an attenuated recording or coloured noise at room-tone level."""
    if recording is not None and len(recording) and rng.random() < mix.recording_bed_share:
        start = int(rng.integers(max(1, len(recording) - n + 1)))
        bed = np.resize(recording[start : start + n].astype(np.float64), n)
        return bed * 10 ** (-rng.uniform(*mix.bed_attenuation_db) / 20)
    noise = coloured_noise(n, str(rng.choice(NOISE_COLOURS)), rng)
    return noise * 10 ** (rng.uniform(*mix.quiet_dbfs) / 20)


def place(bed: np.ndarray, event: np.ndarray, offset: int) -> tuple[np.ndarray, np.ndarray]:
    """``event`` added into ``bed`` starting at ``offset`` (may be negative or past the end); and the
    part of the event that falls inside."""
    lo, hi = max(0, offset), min(len(bed), offset + len(event))
    mixed = bed.copy()
    inside = event[max(0, lo - offset) : max(0, hi - offset)]
    mixed[lo : lo + len(inside)] += inside
    return mixed, inside


def mix_label(inside: np.ndarray, event: np.ndarray, label: str, mix: SceneMix, sample_rate: int) -> str:
    """The event's label if enough of it (duration and energy) is inside the window, else background."""
    needed = min(mix.min_cover_s * sample_rate, mix.min_cover_fraction * len(event))
    energy = float(np.sum(inside**2)) / (float(np.sum(event**2)) + 1e-12)
    return label if len(inside) >= needed and energy >= mix.min_energy_fraction else BACKGROUND


def scene_mix_window(
    y: np.ndarray, label: str, recording: np.ndarray | None, rng: np.random.Generator,
    mix: SceneMix, settings: FeatureSettings,
) -> tuple[np.ndarray, str]:
    """One mixed window (float32, window_samples long) and its label."""
    n, rate = settings.window_samples, settings.sample_rate
    if mix.empty_share and rng.random() < mix.empty_share:
        return quiet_bed(n, rng, mix, recording).astype(np.float32), BACKGROUND
    event = excerpt(y, rng, mix, rate)
    event *= 10 ** (rng.uniform(*mix.peak_dbfs) / 20) / (np.max(np.abs(event)) + 1e-12)
    edge = min(int(mix.edge_s * rate), len(event))
    offset = int(rng.integers(edge - len(event), n - edge + 1))
    mixed, inside = place(quiet_bed(n, rng, mix, recording), event, offset)
    return np.clip(mixed, -1.0, 1.0).astype(np.float32), mix_label(inside, event, label, mix, rate)


def scene_mix_vectors(
    events: Sequence[Clip], beds: Sequence[Clip], settings: FeatureSettings, mix: SceneMix,
) -> tuple[np.ndarray, list[str], np.ndarray]:
    """Feature vectors, labels and folds of ``mix.copies`` mixed windows per event clip.

    Each event's bed recording is drawn from the ``beds`` of the event's own fold, so no held-out
    recording leaks into a training fold. The beds are read once (a few hundred short clips).
    """
    rows, labels, folds = [], [], []
    audio = {bed.key: load_clip(bed, settings.sample_rate) for bed in beds}
    for clip in events:
        y = load_clip(clip, settings.sample_rate)
        same_fold = [audio[bed.key] for bed in beds if bed.fold == clip.fold]
        for copy in range(mix.copies):
            rng = np.random.default_rng([stable_hash(clip.key) % 2**32, copy, mix.seed])
            recording = same_fold[int(rng.integers(len(same_fold)))] if same_fold else None
            window, label = scene_mix_window(y, clip.label, recording, rng, mix, settings)
            rows.append(extract(window, settings))
            labels.append(label)
            folds.append(clip.fold)
    x = np.stack(rows).astype(np.float32) if rows else np.zeros((0, settings.n_features), np.float32)
    return x, labels, np.array(folds, dtype=int)


def scene_mix_matrix(
    events: Sequence[Clip], beds: Sequence[Clip], settings: FeatureSettings, mix: SceneMix,
    cache_dir: Path | None = None,
) -> tuple[np.ndarray, list[str], np.ndarray]:
    """:func:`scene_mix_vectors`, read from / written to ``cache_dir`` when given."""
    cache = cache_dir / f"scenemix-{_cache_key(events, beds, settings, mix)}.npz" if cache_dir else None
    if cache is not None and cache.is_file():
        stored = np.load(cache)
        return stored["x"], stored["labels"].tolist(), stored["folds"]
    x, labels, folds = scene_mix_vectors(events, beds, settings, mix)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(cache, x=x, labels=np.array(labels), folds=folds)
        log.info("cached %d scene-mix vectors in %s", len(x), cache)
    return x, labels, folds


def _cache_key(events: Sequence[Clip], beds: Sequence[Clip], settings: FeatureSettings, mix: SceneMix) -> str:
    """A short hash of everything a cached scene-mix matrix depends on."""
    payload = {
        "settings": settings.to_dict(),
        "mix": asdict(mix),
        "events": [[c.key, c.label, c.fold] for c in events],
        "beds": [[c.key, c.fold] for c in beds],
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode("utf-8")).hexdigest()[:16]

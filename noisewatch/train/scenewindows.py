"""Training windows cut from soundscapes: what the daemon hears, with the label it should give.

Whole dataset clips show a model events that fill their window over silence. The daemon hears a 1 s bark
inside 4 s of rain, at 0-24 dB over it, and everyday sounds that are none of its classes. Training
soundscapes are made by :mod:`noisewatch.train.soundscapes` (scaper) from one fold's events, ambience and
distractors (ESC-50 sounds that are no target class) with seeds of their own, so they never coincide with
the evaluation set; each is cut into windows by the daemon's own :class:`StreamingFeatures`.

A window's label: the target event with the most time inside it, if that is at least
:data:`MIN_COVER_S` or half of the event (short events such as gun shots); ``background`` where no target
event reaches into it; none (the window is left out) where an event reaches in too little to say.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np

from noisewatch.daemon.stream import StreamingFeatures
from noisewatch.dc_offset import CUTOFF_HZ, DcOffsetRemover
from noisewatch.features import FeatureSettings
from noisewatch.train.datasets import BACKGROUND
from noisewatch.train.soundscapes import Recipe, Soundscape, fold_distractors, fold_scenes, fold_sources

log = logging.getLogger(__name__)

HOP_S = 1.0
"""Hop between training windows: neighbours 0.5 s apart are near copies."""
MIN_COVER_S = 1.0
"""A target event this long inside a window makes it that event's window..."""
MIN_COVER_SHARE = 0.5
"""...and so does this share of a shorter event."""
SEED = 7
"""Seed base of training soundscapes (the evaluation set's is 13)."""


def training_recipe(scenes: int, seed: int) -> Recipe:
    """Training soundscapes: more events, a wider SNR range than the evaluation set (0-24 dB), everyday
    distractors in every one, and a third as many without any target event."""
    return Recipe(scenes=scenes, sweep_scenes=0, background_scenes=scenes // 3, events=(1, 4),
                  snr_db=(0.0, 24.0), seed=SEED + 1000 * seed, distractors=(0, 2))


def window_label(events: Sequence[tuple[float, float, str]], start_s: float, window_s: float) -> str | None:
    """The label a window starting at ``start_s`` should get (None: too little of an event to say)."""
    best, best_cover, touched = None, 0.0, False
    for onset, offset, label in events:
        cover = min(offset, start_s + window_s) - max(onset, start_s)
        if cover <= 0:
            continue
        touched = True
        if cover >= min(MIN_COVER_S, MIN_COVER_SHARE * (offset - onset)) and cover > best_cover:
            best, best_cover = label, cover
    return best if best is not None else (None if touched else BACKGROUND)


def scene_windows(scene: Soundscape, settings: FeatureSettings) -> tuple[list[np.ndarray], list[str]]:
    """Feature vectors and labels of one soundscape's labelled windows."""
    stream = StreamingFeatures(settings, HOP_S)
    rows, labels = [], []
    for window in stream.push(DcOffsetRemover(settings.sample_rate)(scene.audio)):  # as the daemon's pipeline hears it
        label = window_label(scene.events, window.start_sample / settings.sample_rate, settings.window_s)
        if label is not None:
            rows.append(window.features)
            labels.append(label)
    return rows, labels


def scene_window_matrix(urbansound: Path, esc50: Path, folds: Sequence[int], scenes: int, seed: int,
                        settings: FeatureSettings, cache_dir: Path | None = None
                        ) -> tuple[np.ndarray, list[str], np.ndarray]:
    """Feature vectors, labels and folds of every fold's training soundscapes' windows (cached)."""
    recipe = training_recipe(scenes, seed)
    cache = cache_dir / f"scenewindows-{_cache_key(folds, recipe, settings)}.npz" if cache_dir else None
    if cache is not None and cache.is_file():
        stored = np.load(cache)
        return stored["x"], stored["labels"].tolist(), stored["folds"]
    sources, distractors = fold_sources(urbansound, esc50, folds), fold_distractors(esc50, folds)
    rows: list[np.ndarray] = []
    labels: list[str] = []
    fold_of: list[int] = []
    for fold, (events, ambience) in sources.items():
        made = fold_scenes(fold, events, ambience, recipe, settings.sample_rate, distractors[fold])
        for scene in [*made.main, *made.background]:
            vectors, names = scene_windows(scene, settings)
            rows += vectors
            labels += names
            fold_of += [fold] * len(names)
    x = np.stack(rows).astype(np.float32) if rows else np.zeros((0, settings.n_features), np.float32)
    folds_out = np.array(fold_of, dtype=int)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(cache, x=x, labels=np.array(labels), folds=folds_out)
        log.info("cached %d soundscape windows (%d background) in %s", len(x), labels.count(BACKGROUND), cache)
    return x, labels, folds_out


def _cache_key(folds: Sequence[int], recipe: Recipe, settings: FeatureSettings) -> str:
    """A short hash of what a cached matrix depends on (the datasets' files are taken as fixed)."""
    payload = {"folds": sorted(folds), "recipe": asdict(recipe), "settings": settings.to_dict(),
               "rule": [HOP_S, MIN_COVER_S, MIN_COVER_SHARE], "dc_cutoff_hz": CUTOFF_HZ}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode("utf-8")).hexdigest()[:16]

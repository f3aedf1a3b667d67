"""Feature matrices for lists of clips, cached on disk, optionally augmented.

Every vector comes from :func:`noisewatch.features.extract` on :func:`fit_to_window` output, the
same code the daemon runs. Caches are ``.npz`` files named by a hash of the feature settings, the
augmentation and the clip keys, so a changed setting can never reuse stale features. Runtime
dependencies only (numpy, soxr; no TensorFlow), so ``evaluate`` can use it on a Pi.
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import soxr

from noisewatch.dc_offset import CUTOFF_HZ
from noisewatch.features import FeatureSettings, extract, fit_to_window
from noisewatch.train.datasets import Clip, coloured_noise, load_clip, stable_hash

log = logging.getLogger(__name__)

CHUNK = 16


@dataclass(frozen=True)
class Augment:
    """One augmented copy of a clip: random time shift, gain and added noise."""

    copy: int
    """Index of the copy; with ``seed`` and the clip key it seeds the random draws."""
    seed: int = 0
    gain_db: tuple[float, float] = (-12.0, 6.0)
    """Range of the random gain in dB."""
    snr_db: tuple[float, float] = (10.0, 35.0)
    """Range of the signal-to-noise ratio of the added coloured noise in dB."""


def augment_window(window: np.ndarray, augment: Augment, key: str) -> np.ndarray:
    """A shifted, re-levelled, noisier copy of one window, deterministic per (key, copy, seed)."""
    rng = np.random.default_rng([stable_hash(key) % 2**32, augment.copy, augment.seed])
    shifted = np.roll(window.astype(np.float64), int(rng.integers(len(window))))
    rms = np.sqrt(np.mean(shifted**2)) + 1e-9
    snr = rng.uniform(*augment.snr_db)
    noise = coloured_noise(len(window), str(rng.choice(("white", "pink", "brown"))), rng) * rms * 10 ** (-snr / 20)
    gained = (shifted + noise) * 10 ** (rng.uniform(*augment.gain_db) / 20)
    return np.clip(gained, -1.0, 1.0).astype(np.float32)


def change_speed(audio: np.ndarray, factor: float, sample_rate: int) -> np.ndarray:
    """The clip played ``factor`` times faster: pitch and tempo change together (speed perturbation).

    A new recording of a siren or an engine differs from the training ones mostly in pitch and
    pace; these copies teach the model that, which plain gain/noise copies did not.
    """
    if factor == 1.0:
        return audio
    return soxr.resample(np.asarray(audio, dtype=np.float32), sample_rate, sample_rate / factor, quality="HQ")


def clip_vector(clip: Clip, settings: FeatureSettings, augment: Augment | None = None,
                speed: float = 1.0) -> np.ndarray:
    """The feature vector of one (optionally sped-up or slowed-down, optionally augmented) clip."""
    audio = change_speed(load_clip(clip, settings.sample_rate), speed, settings.sample_rate)
    window = fit_to_window(audio, settings)
    if augment is not None:
        window = augment_window(window, augment, clip.key)
    return extract(window, settings)


def _job(args: tuple[Clip, FeatureSettings, Augment | None, float]) -> np.ndarray:
    return clip_vector(*args)


def feature_matrix(
    clips: Sequence[Clip],
    settings: FeatureSettings,
    augment: Augment | None = None,
    cache_dir: Path | None = None,
    workers: int = 1,
    speed: float = 1.0,
) -> np.ndarray:
    """(len(clips), n_features) float32; read from / written to ``cache_dir`` when given."""
    cache = cache_dir / f"features-{cache_key(clips, settings, augment, speed)}.npz" if cache_dir else None
    if cache is not None and cache.is_file():
        return np.load(cache)["x"]
    jobs = [(clip, settings, augment, speed) for clip in clips]
    if workers > 1 and len(jobs) > CHUNK:
        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            rows = pool.map(_job, jobs, chunksize=CHUNK)
    else:
        rows = [_job(job) for job in jobs]
    x = np.stack(rows).astype(np.float32) if rows else np.zeros((0, settings.n_features), np.float32)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(cache, x=x)
        log.info("cached %d feature vectors in %s", len(x), cache)
    return x


def cache_key(clips: Sequence[Clip], settings: FeatureSettings, augment: Augment | None,
              speed: float = 1.0) -> str:
    """A short hash of everything a cached matrix depends on."""
    payload = {
        "settings": settings.to_dict(),
        "augment": asdict(augment) if augment else None,
        "speed": speed,
        "clips": [[c.key, repr(c.recipe)] for c in clips],
        "dc_cutoff_hz": CUTOFF_HZ,  # clips are read with their offset removed (a matrix cached before was not)
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode("utf-8")).hexdigest()[:16]

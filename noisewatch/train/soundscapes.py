"""URBAN-SED-style soundscapes made with scaper, the soundscape library of the UrbanSound8K authors.

A soundscape is 30 s of real ambience (ESC-50 categories that are none of the target classes: rain,
wind, sea waves, crickets, ...) over brown noise, with 1-3 foreground events of any class drawn from
one UrbanSound8K fold at an SNR drawn from 6-24 dB (or fixed, for the SNR sweep), and scaper's own
annotation of where each event lies. Background-only soundscapes (no events) measure false alarms.
Every soundscape has its own seed, so a fold's set is the same on every run and machine.

scaper 1.6.5 still names ``np.Inf``, which numpy 2 removed: :func:`_scaper` sets the alias before
importing it (the only compatibility shim). It is installed without its ``soxbindings`` dependency
(a C++ build) and then uses pysox and the ``sox`` binary instead (``scripts/bootstrap.sh``).
"""

from __future__ import annotations

import logging
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from noisewatch.train.datasets import BACKGROUND, URBANSOUND_CLASSES, Clip, assign_folds, read_esc50, read_urbansound

AMBIENCE = ("rain", "wind", "sea_waves", "crickets", "chirping_birds", "crackling_fire", "insects", "thunderstorm",
            "frog", "water_drops")
"""ESC-50 categories used as ambience: continuous everyday beds, none of them a target class."""
BROWN = "brown_noise"
BROWN_FLOOR_HZ = 100.0
SNR_SWEEP_DB = (0.0, 6.0, 12.0, 18.0, 24.0)
REF_DB = -50.0
"""Loudness (LUFS) of each background layer, as in URBAN-SED; events sit ``snr`` dB above it."""
MAX_EVENT_S = 4.0
"""Longest foreground event: a whole UrbanSound8K clip."""


@dataclass(frozen=True)
class Recipe:
    """How many soundscapes of each kind a fold gets, and how they are drawn."""

    scenes: int = 20
    """Soundscapes with events at drawn SNRs (the main figures)."""
    sweep_scenes: int = 10
    """Soundscapes per fixed SNR of :data:`SNR_SWEEP_DB`."""
    background_scenes: int = 40
    """Background-only soundscapes (false events per hour)."""
    duration_s: float = 30.0
    events: tuple[int, int] = (1, 3)
    snr_db: tuple[float, float] = (6.0, 24.0)
    seed: int = 13
    distractors: tuple[int, int] = (0, 0)
    """Everyday non-target sounds (ESC-50, see :func:`fold_distractors`) added as foreground to every
    soundscape, a number drawn from this range: hard negatives for training sets. They are not scored."""


@dataclass(frozen=True)
class Soundscape:
    """Mono audio at the model's rate and its reference events (onset s, offset s, label)."""

    name: str
    audio: np.ndarray
    events: tuple[tuple[float, float, str], ...]

    @property
    def duration_s(self) -> float:
        return 0.0 if not len(self.audio) else float(len(self.audio)) / self.sample_rate

    sample_rate: int = 22050


@dataclass(frozen=True)
class FoldScenes:
    """Every soundscape of one held-out fold."""

    fold: int
    main: list[Soundscape]
    sweep: dict[float, list[Soundscape]]
    background: list[Soundscape]


def fold_sources(urbansound: Path, esc50: Path, folds: Sequence[int]) -> dict[int, tuple[list[Clip], list[Clip]]]:
    """Per fold: its UrbanSound8K clips and its ambience clips (ESC-50 recordings spread over the folds the
    way ``noisewatch train`` spreads them, so a held-out fold's ambience was never trained on)."""
    events = [c for c in read_urbansound(urbansound) if c.fold in folds]
    ambience = [c for c in _esc50_by_fold(esc50, folds) if c.label in AMBIENCE]
    return {f: ([c for c in events if c.fold == f], [c for c in ambience if c.fold == f]) for f in folds}


def fold_distractors(esc50: Path, folds: Sequence[int]) -> dict[int, list[Clip]]:
    """Per fold: the ESC-50 recordings that are neither a target class nor ambience (door knocks, footsteps,
    laughter, ...), spread over the folds as ``noisewatch train`` spreads them."""
    others = [c for c in _esc50_by_fold(esc50, folds) if c.label == BACKGROUND]
    return {f: [c for c in others if c.fold == f] for f in folds}


def _esc50_by_fold(esc50: Path, folds: Sequence[int]) -> list[Clip]:
    """ESC-50 recordings spread over ``folds`` as ``noisewatch train`` spreads them; ambience categories
    keep their name as label, every other non-target category is ``background``."""
    return assign_folds(read_esc50(esc50, mapping={category: category for category in AMBIENCE}), folds)


def fold_scenes(fold: int, events: Sequence[Clip], ambience: Sequence[Clip], recipe: Recipe,
                sample_rate: int, distractors: Sequence[Clip] = ()) -> FoldScenes:
    """The main set, the SNR sweep and the background-only set of one fold."""
    seed = recipe.seed * 1_000_000 + fold * 100_000
    with _scaper_folders([*events, *distractors], ambience, recipe.duration_s, sample_rate) as (fg, bg):
        def make(kind: str, offset: int, count: int, snr: tuple[float, float] | None, n_events: bool) -> list[Soundscape]:
            return [_soundscape(f"fold{fold}-{kind}-{i:03d}", fg, bg, recipe, seed + offset + i, snr, n_events,
                                sample_rate) for i in range(count)]

        return FoldScenes(
            fold,
            make("scene", 0, recipe.scenes, recipe.snr_db, True),
            {snr: make(f"snr{snr:g}", 10_000 * (k + 1), recipe.sweep_scenes, (snr, snr), True)
             for k, snr in enumerate(SNR_SWEEP_DB)},
            make("background", 90_000, recipe.background_scenes, None, False),
        )


@contextmanager
def _scaper_folders(events: Sequence[Clip], ambience: Sequence[Clip], duration_s: float,
                    sample_rate: int) -> Iterator[tuple[Path, Path]]:
    """scaper's layout (``fg/<label>/``, ``bg/<label>/``) as links to the clips, plus one brown-noise file."""
    with tempfile.TemporaryDirectory(prefix="noisewatch-scaper-") as tmp:
        fg, bg = Path(tmp, "fg"), Path(tmp, "bg")
        for root, clips in ((fg, events), (bg, ambience)):
            for clip in clips:
                assert clip.path is not None
                folder = root / clip.label
                folder.mkdir(parents=True, exist_ok=True)
                (folder / clip.path.name).symlink_to(clip.path.resolve())
        (bg / BROWN).mkdir(parents=True)
        sf.write(bg / BROWN / "brown.wav", brown_noise(int(duration_s * sample_rate), sample_rate), sample_rate,
                 subtype="FLOAT")
        yield fg, bg


def brown_noise(n: int, sample_rate: int) -> np.ndarray:
    """Brown (1/f^2) noise, flat below :data:`BROWN_FLOOR_HZ`: pure brown noise is mostly subsonic rumble,
    which loudness weighting ignores, so scaling it to a loudness would make it clip."""
    spectrum = np.fft.rfft(np.random.default_rng(0).standard_normal(n))
    spectrum /= np.maximum(np.fft.rfftfreq(n, 1 / sample_rate), BROWN_FLOOR_HZ)
    noise = np.fft.irfft(spectrum, n)
    return (0.05 * noise / np.sqrt(np.mean(noise**2))).astype(np.float32)


def _soundscape(name: str, fg: Path, bg: Path, recipe: Recipe, seed: int, snr: tuple[float, float] | None,
                with_events: bool, sample_rate: int) -> Soundscape:
    """One soundscape from scaper, seeded by ``seed``."""
    scaper = _scaper()
    rng = np.random.default_rng(seed)
    # scaper seeds numpy's legacy RandomState, which takes 32 bits: `train --seed 5` (soundscape seeds from 5.007e9)
    # failed there after half an hour of work; seeds below 2**32 keep their soundscapes
    sc = scaper.Scaper(recipe.duration_s, str(fg), str(bg), random_state=seed % 2**32)
    sc.sr, sc.n_channels, sc.ref_db = sample_rate, 1, REF_DB
    sc.fade_in_len = sc.fade_out_len = 0.01
    ambience = sorted(p.name for p in bg.iterdir() if p.name != BROWN)
    sc.add_background(("const", BROWN), ("choose", []), ("const", 0))
    sc.add_background(("choose", ambience), ("choose", []), ("uniform", 0, 4))
    targets = sorted(p.name for p in fg.iterdir() if p.name in URBANSOUND_CLASSES)
    # ("choose", []) draws from every folder: kept where there are no distractors, so sets stay as they were.
    label = ("choose", targets if (fg / BACKGROUND).is_dir() else [])
    for _ in range(int(rng.integers(recipe.events[0], recipe.events[1] + 1)) if with_events else 0):
        assert snr is not None
        sc.add_event(label=label, source_file=("choose", []), source_time=("const", 0),
                     event_time=("uniform", 0, recipe.duration_s - MAX_EVENT_S),
                     event_duration=("const", MAX_EVENT_S),
                     snr=("uniform", *snr) if snr[0] != snr[1] else ("const", snr[0]),
                     pitch_shift=None, time_stretch=None)
    if recipe.distractors != (0, 0):
        for _ in range(int(rng.integers(recipe.distractors[0], recipe.distractors[1] + 1))):
            sc.add_event(label=("const", BACKGROUND), source_file=("choose", []), source_time=("const", 0),
                         event_time=("uniform", 0, recipe.duration_s - MAX_EVENT_S),
                         event_duration=("const", MAX_EVENT_S), snr=("uniform", *recipe.snr_db),
                         pitch_shift=None, time_stretch=None)
    with warnings.catch_warnings():  # scaper warns of every trimmed clip and every rescaled mix
        warnings.simplefilter("ignore")
        audio, _, annotations, _ = sc.generate(fix_clipping=True, disable_instantiation_warnings=True)
    mono = np.asarray(audio, dtype=np.float32).reshape(len(audio), -1).mean(axis=1)
    events = tuple(sorted((float(on), float(off), str(label)) for on, off, label in annotations
                          if label in URBANSOUND_CLASSES))
    return Soundscape(name, mono, events, sample_rate)


def _scaper() -> Any:
    """scaper, imported after the one alias it needs under numpy 2."""
    if not hasattr(np, "Inf"):
        np.Inf = np.inf  # type: ignore[attr-defined]
    import scaper

    logging.getLogger("sox").setLevel(logging.ERROR)  # pysox warns on every in-memory transform
    return scaper

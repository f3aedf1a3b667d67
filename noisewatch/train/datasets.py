"""Dataset readers: UrbanSound8K, ESC-50 and folder-per-class layouts, plus synthetic quiet clips.

Every reader returns :class:`Clip` records (what to load, its label, its fold, the recording it
came from); audio is only read by :func:`load_clip` (through :func:`noisewatch.audio_file.load_audio`,
the loader `classify` uses). Runtime dependencies only, so
``noisewatch evaluate`` can use these readers on a Pi without the training stack.

Labels have one fixed order, :data:`LABELS`: the ten UrbanSound8K classes in classID order, then
``background``. A model's output order is exactly this list (plus any extra folder-per-class
labels, sorted, appended after it).
"""

from __future__ import annotations

import csv
import hashlib
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from noisewatch.audio_file import load_audio

log = logging.getLogger(__name__)

URBANSOUND_CLASSES = (
    "air_conditioner",
    "car_horn",
    "children_playing",
    "dog_bark",
    "drilling",
    "engine_idling",
    "gun_shot",
    "jackhammer",
    "siren",
    "street_music",
)
BACKGROUND = "background"
LABELS = (*URBANSOUND_CLASSES, BACKGROUND)
ESC50_MAPPING: Mapping[str, str] = {
    "dog": "dog_bark",
    "siren": "siren",
    "car_horn": "car_horn",
    "engine": "engine_idling",
}
"""ESC-50 category -> label; every category not named here becomes ``background``."""

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")
US8K_CSV = Path("metadata/UrbanSound8K.csv")
ESC50_CSV = Path("meta/esc50.csv")
LAYOUTS = ("urbansound8k", "esc50", "folder")


@dataclass(frozen=True)
class QuietRecipe:
    """How to synthesize one quiet clip: coloured noise, mains hum, or an attenuated recording."""

    kind: str
    """``noise``, ``hum`` or ``attenuated``."""
    level_dbfs: float
    """RMS level of the result in dB full scale."""
    seed: int
    """Seed of the clip's own random generator."""
    colour: str = "white"
    """Noise colour for ``noise``: white, pink or brown."""
    source: Path | None = None
    """Recording that ``attenuated`` scales down."""


@dataclass(frozen=True)
class Clip:
    """One labelled example: a file, or a recipe for a synthetic quiet clip."""

    key: str
    """Stable identifier (dataset-relative path or recipe name); feature caches hash these."""
    label: str
    fold: int
    group: str
    """The source recording; clips of one group must share a fold."""
    dataset: str
    path: Path | None = None
    recipe: QuietRecipe | None = None


# --- layouts ----------------------------------------------------------------------------------------

def detect_layout(root: str | Path) -> str:
    """Which of :data:`LAYOUTS` a dataset folder uses, from the metadata files it has."""
    root = Path(root)
    if (root / US8K_CSV).is_file():
        return "urbansound8k"
    if (root / ESC50_CSV).is_file():
        return "esc50"
    if root.is_dir() and any(p.is_dir() for p in root.iterdir()):
        return "folder"
    raise FileNotFoundError(f"{root}: not an UrbanSound8K, ESC-50 or folder-per-class dataset")


def read_dataset(root: str | Path, folds: Sequence[int] | None = None) -> list[Clip]:
    """Clips of any supported layout; ``folds`` keeps only those folds (each dataset's own column)."""
    readers = {"urbansound8k": read_urbansound, "esc50": read_esc50, "folder": read_folder}
    clips = readers[detect_layout(root)](Path(root))
    return [c for c in clips if folds is None or c.fold in folds]


def _resolve_audio(path: Path) -> Path:
    """The file the metadata names, or the same stem with another audio suffix (CSV .wav, disk .flac)."""
    if path.is_file():
        return path
    for suffix in AUDIO_SUFFIXES:
        if path.with_suffix(suffix).is_file():
            return path.with_suffix(suffix)
    raise FileNotFoundError(f"{path}: named in the metadata but missing (also tried {', '.join(AUDIO_SUFFIXES)})")


def _rows(csv_path: Path) -> list[dict[str, str]]:
    with csv_path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def read_urbansound(root: Path) -> list[Clip]:
    """UrbanSound8K: metadata/UrbanSound8K.csv + audio/foldN/; the CSV's classID must match LABELS."""
    clips = []
    for row in _rows(root / US8K_CSV):
        label = row["class"]
        if URBANSOUND_CLASSES[int(row["classID"])] != label:
            raise ValueError(f"{root / US8K_CSV}: classID {row['classID']} is not {label!r}")
        fold = int(row["fold"])
        path = _resolve_audio(root / "audio" / f"fold{fold}" / row["slice_file_name"])
        clips.append(Clip(f"us8k/{path.stem}", label, fold, f"us8k/{row['fsID']}", "urbansound8k", path=path))
    return clips


def read_esc50(root: Path, mapping: Mapping[str, str] = ESC50_MAPPING) -> list[Clip]:
    """ESC-50: meta/esc50.csv + audio/; categories map through ``mapping``, the rest to background."""
    clips = []
    for row in _rows(root / ESC50_CSV):
        path = _resolve_audio(root / "audio" / row["filename"])
        label = mapping.get(row["category"], BACKGROUND)
        group = f"esc50/{row['src_file']}"
        clips.append(Clip(f"esc50/{path.stem}", label, int(row["fold"]), group, "esc50", path=path))
    return clips


def read_folder(root: Path, label: str | None = None) -> list[Clip]:
    """Folder-per-class: ``root/<label>/*.wav|flac`` (or every file under ``root`` as ``label``).

    Each file is its own group; its fold is 1 + a stable hash of its path modulo 5.
    """
    if label is not None:
        files = [(label, p) for p in sorted(root.rglob("*")) if p.suffix.lower() in AUDIO_SUFFIXES]
    else:
        files = [
            (sub.name, p)
            for sub in sorted(root.iterdir())
            if sub.is_dir()
            for p in sorted(sub.rglob("*"))
            if p.suffix.lower() in AUDIO_SUFFIXES
        ]
    clips = []
    for name, path in files:
        key = f"{root.name}/{path.relative_to(root).as_posix()}"
        clips.append(Clip(key, name, 1 + stable_hash(key) % 5, key, "folder", path=path))
    return clips


def stable_hash(text: str) -> int:
    """A hash that is the same in every process (Python's hash() is salted)."""
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big")


def assign_folds(clips: Iterable[Clip], folds: Sequence[int]) -> list[Clip]:
    """Spread clips over ``folds`` by a hash of their group, so one recording never spans two folds."""
    ordered = sorted(folds)
    return [replace(c, fold=ordered[stable_hash(c.group) % len(ordered)]) for c in clips]


def label_order(clips: Iterable[Clip]) -> list[str]:
    """:data:`LABELS`, then any other labels found in the clips, sorted: the model's output order."""
    extra = sorted({c.label for c in clips} - set(LABELS))
    return [*LABELS, *extra]


# --- synthetic quiet ----------------------------------------------------------------------------

QUIET_LEVELS_DBFS = (-75.0, -65.0, -55.0, -45.0, -38.0)
NOISE_COLOURS = ("white", "pink", "brown")
HUM_HZ = (50.0, 60.0)


def quiet_clips(count: int, folds: Sequence[int], seed: int, recordings: Sequence[Path] = ()) -> list[Clip]:
    """``count`` deterministic quiet ``background`` clips spread over ``folds``.

    Cycles through coloured noise, mains hum over faint noise and (if ``recordings`` are given)
    background recordings attenuated to room-tone levels, at levels from -75 to -38 dBFS.
    """
    rng = np.random.default_rng(seed)
    kinds = ("noise", "hum", "attenuated") if recordings else ("noise", "hum")
    clips = []
    for index in range(count):
        recipe = QuietRecipe(
            kind=kinds[index % len(kinds)],
            level_dbfs=float(rng.choice(QUIET_LEVELS_DBFS) + rng.uniform(-3.0, 3.0)),
            seed=int(rng.integers(2**31)),
            colour=str(rng.choice(NOISE_COLOURS)),
            source=recordings[int(rng.integers(len(recordings)))] if recordings else None,
        )
        key = f"quiet/{seed}/{index}"
        clips.append(Clip(key, BACKGROUND, folds[index % len(folds)], key, "quiet", recipe=recipe))
    return clips


def coloured_noise(n: int, colour: str, rng: np.random.Generator) -> np.ndarray:
    """Unit-RMS noise with a 1/f^0 (white), 1/f (pink) or 1/f^2 (brown) power spectrum."""
    exponent = {"white": 0.0, "pink": 0.5, "brown": 1.0}[colour]
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.arange(len(spectrum), dtype=np.float64)
    freqs[0] = 1.0
    noise = np.fft.irfft(spectrum / freqs**exponent, n)
    return noise / (np.sqrt(np.mean(noise**2)) + 1e-12)


def synthesize(recipe: QuietRecipe, n: int, sample_rate: int) -> np.ndarray:
    """Audio of a :class:`QuietRecipe`, ``n`` samples at ``sample_rate``, float32."""
    rng = np.random.default_rng(recipe.seed)
    if recipe.kind == "noise":
        y = coloured_noise(n, recipe.colour, rng)
    elif recipe.kind == "hum":
        t = np.arange(n) / sample_rate
        base = float(rng.choice(HUM_HZ))
        y = np.sum([np.sin(2 * np.pi * base * k * t + rng.uniform(0, 2 * np.pi)) / k for k in (1, 2, 3)], axis=0)
        y = y / np.sqrt(np.mean(y**2)) + 0.3 * coloured_noise(n, recipe.colour, rng)
    elif recipe.kind == "attenuated" and recipe.source is not None:
        y = np.resize(load_audio(recipe.source, sample_rate), n).astype(np.float64)
    else:
        raise ValueError(f"unknown quiet recipe {recipe}")
    return (y / (np.sqrt(np.mean(y**2)) + 1e-12) * 10 ** (recipe.level_dbfs / 20)).astype(np.float32)


# --- audio --------------------------------------------------------------------------------------

CLIP_SECONDS_SYNTH = 5.0


def load_clip(clip: Clip, sample_rate: int) -> np.ndarray:
    """The audio of a clip: read from disk or synthesized from its recipe."""
    if clip.recipe is not None:
        return synthesize(clip.recipe, int(CLIP_SECONDS_SYNTH * sample_rate), sample_rate)
    if clip.path is None:
        raise ValueError(f"clip {clip.key} has neither a path nor a recipe")
    return load_audio(clip.path, sample_rate)

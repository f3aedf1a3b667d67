"""Dataset readers on tiny generated UrbanSound8K, ESC-50 and folder-per-class layouts.

The ``make_*`` writers are reused by test_train_convert.py.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from noisewatch.train import datasets
from noisewatch.train.datasets import BACKGROUND, LABELS, URBANSOUND_CLASSES

SR = 22050
US8K_HEADER = ["slice_file_name", "fsID", "start", "end", "salience", "fold", "classID", "class"]
ESC50_HEADER = ["filename", "fold", "target", "category", "esc10", "src_file", "take"]


def tone(label_index: int, seconds: float, seed: int, rate: int = SR) -> np.ndarray:
    """A class-specific signal: a tone whose pitch encodes the class, over faint noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    freq = 200.0 * 1.45**label_index
    y = 0.4 * np.sin(2 * np.pi * freq * t) + 0.01 * rng.standard_normal(len(t))
    return y.astype(np.float32)


def make_urbansound(root: Path, per_class: int = 2, folds: tuple[int, ...] = (1, 2), suffix: str = ".flac",
                    csv_suffix: str = ".wav") -> Path:
    """UrbanSound8K layout; the CSV names files with ``csv_suffix`` while disk has ``suffix``."""
    rows = []
    for fold in folds:
        (root / "audio" / f"fold{fold}").mkdir(parents=True, exist_ok=True)
        for class_id, label in enumerate(URBANSOUND_CLASSES):
            for take in range(per_class):
                fs_id = 1000 * fold + 10 * class_id + take
                stem = f"{fs_id}-{class_id}-0-{take}"
                sf.write(root / "audio" / f"fold{fold}" / f"{stem}{suffix}", tone(class_id, 1.0 + take, fs_id), SR)
                rows.append([f"{stem}{csv_suffix}", fs_id, 0, 1, 1, fold, class_id, label])
    _write_csv(root / "metadata" / "UrbanSound8K.csv", US8K_HEADER, rows)
    return root


def make_esc50(root: Path, categories: dict[str, int] | None = None, per_category: int = 2) -> Path:
    """ESC-50 layout (44.1 kHz WAV, so readers must resample); ``categories`` maps name -> tone index."""
    categories = categories or {"dog": URBANSOUND_CLASSES.index("dog_bark"), "rain": 10, "crickets": 11}
    (root / "audio").mkdir(parents=True, exist_ok=True)
    rows = []
    for target, (category, index) in enumerate(categories.items()):
        for take in range(per_category):
            name = f"{take + 1}-{500 + target}-A-{target}.wav"
            sf.write(root / "audio" / name, tone(index, 2.0, 500 + target + take, rate=44100), 44100)
            rows.append([name, take + 1, target, category, False, 500 + target, "A"])
    _write_csv(root / "meta" / "esc50.csv", ESC50_HEADER, rows)
    return root


def make_folder(root: Path, labels: dict[str, int], per_label: int = 3) -> Path:
    """Folder-per-class layout: ``root/<label>/*.wav``; ``labels`` maps label -> tone index."""
    for label, index in labels.items():
        (root / label).mkdir(parents=True, exist_ok=True)
        for take in range(per_label):
            sf.write(root / label / f"{label}-{take}.wav", tone(index, 1.5, 900 + index * 10 + take), SR)
    return root


def _write_csv(path: Path, header: list[str], rows: list[list[object]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows([header, *rows])


def test_label_order_is_urbansound_class_ids_then_background() -> None:
    assert LABELS[:10] == URBANSOUND_CLASSES
    assert LABELS.index("dog_bark") == 3 and LABELS.index("street_music") == 9
    assert LABELS[-1] == BACKGROUND and len(LABELS) == 11


def test_urbansound_reader_resolves_flac_named_as_wav(tmp_path: Path) -> None:
    clips = datasets.read_urbansound(make_urbansound(tmp_path / "us8k", per_class=1))
    assert len(clips) == 20
    assert all(c.path is not None and c.path.suffix == ".flac" and c.path.is_file() for c in clips)
    dog = next(c for c in clips if c.key.endswith("-3-0-0") and c.fold == 2)
    assert dog.label == "dog_bark" and dog.group == "us8k/2030"


def test_urbansound_reader_rejects_wrong_class_id(tmp_path: Path) -> None:
    root = make_urbansound(tmp_path / "us8k", per_class=1, folds=(1,))
    text = (root / "metadata" / "UrbanSound8K.csv").read_text().replace(",3,dog_bark", ",4,dog_bark")
    (root / "metadata" / "UrbanSound8K.csv").write_text(text)
    with pytest.raises(ValueError, match="classID 4"):
        datasets.read_urbansound(root)


def test_missing_file_is_named(tmp_path: Path) -> None:
    root = make_urbansound(tmp_path / "us8k", per_class=1, folds=(1,))
    next((root / "audio" / "fold1").glob("*.flac")).unlink()
    with pytest.raises(FileNotFoundError, match="named in the metadata"):
        datasets.read_dataset(root)


def test_esc50_default_mapping_and_override(tmp_path: Path) -> None:
    root = make_esc50(tmp_path / "esc50")
    labels = {c.key: c.label for c in datasets.read_esc50(root)}
    assert sorted(set(labels.values())) == ["background", "dog_bark"]
    assert sum(label == "dog_bark" for label in labels.values()) == 2
    custom = datasets.read_esc50(root, mapping={"rain": "rain"})
    assert {c.label for c in custom} == {"rain", "background"}


def test_detect_layout_and_folder_reader(tmp_path: Path) -> None:
    folder = make_folder(tmp_path / "mine", {"doorbell": 12, BACKGROUND: 13}, per_label=2)
    assert datasets.detect_layout(make_urbansound(tmp_path / "us8k", per_class=1, folds=(1,))) == "urbansound8k"
    assert datasets.detect_layout(make_esc50(tmp_path / "esc")) == "esc50"
    assert datasets.detect_layout(folder) == "folder"
    clips = datasets.read_dataset(folder)
    assert sorted(c.label for c in clips) == ["background", "background", "doorbell", "doorbell"]
    assert datasets.label_order(clips) == [*LABELS, "doorbell"]
    with pytest.raises(FileNotFoundError):
        datasets.detect_layout(tmp_path / "absent")


def test_assign_folds_keeps_recordings_together() -> None:
    clips = [datasets.Clip(f"k{i}", BACKGROUND, 4, f"rec{i % 7}", "esc50") for i in range(70)]
    assigned = datasets.assign_folds(clips, [2, 1])
    by_group: dict[str, set[int]] = {}
    for clip in assigned:
        by_group.setdefault(clip.group, set()).add(clip.fold)
    assert all(len(folds) == 1 for folds in by_group.values())
    assert {f for folds in by_group.values() for f in folds} == {1, 2}
    assert assigned == datasets.assign_folds(clips, [1, 2])


def test_quiet_clips_are_deterministic_quiet_background(tmp_path: Path) -> None:
    recording = tmp_path / "loud.wav"
    sf.write(recording, tone(2, 1.0, 1), SR)
    clips = datasets.quiet_clips(12, [1, 2], seed=3, recordings=[recording])
    assert {c.label for c in clips} == {BACKGROUND} and {c.fold for c in clips} == {1, 2}
    assert {c.recipe.kind for c in clips if c.recipe} == {"noise", "hum", "attenuated"}
    for clip in clips:
        y = datasets.load_clip(clip, SR)
        level = 20 * np.log10(np.sqrt(np.mean(y.astype(np.float64) ** 2)))
        assert clip.recipe is not None and abs(level - clip.recipe.level_dbfs) < 0.1
        assert level < -30
    again = datasets.quiet_clips(12, [1, 2], seed=3, recordings=[recording])
    np.testing.assert_array_equal(datasets.load_clip(clips[5], SR), datasets.load_clip(again[5], SR))

"""Training-side feature matrices: speed perturbation and the on-disk cache."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf
from test_datasets import tone

from noisewatch.dc_offset import remove_offset
from noisewatch.features import FeatureSettings, clip_features
from noisewatch.train.datasets import Clip
from noisewatch.train.featurize import change_speed, feature_matrix

SR = 22050


def dominant_hz(y: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(y * np.hanning(len(y))))
    return float(np.fft.rfftfreq(len(y), 1 / SR)[np.argmax(spectrum)])


def test_speed_change_moves_pitch_and_length_together() -> None:
    t = np.arange(2 * SR) / SR
    y = (0.5 * np.sin(2 * np.pi * 1000.0 * t)).astype(np.float32)
    for factor in (0.84, 1.19):
        faster = change_speed(y, factor, SR)
        assert abs(len(faster) - len(y) / factor) <= 2
        assert abs(dominant_hz(faster) - 1000.0 * factor) < 2.0
        assert np.max(np.abs(faster)) < 0.51
    assert change_speed(y, 1.0, SR) is y


def test_speed_copies_are_cached_apart_and_match_the_plain_path(tmp_path: Path) -> None:
    settings = FeatureSettings(stats=("mean", "std"))
    path = tmp_path / "clip.flac"
    sf.write(path, tone(3, 1.5, seed=5), SR)
    clips = [Clip(key="clip.flac", label="dog_bark", fold=1, group="a", dataset="folder", path=path)]
    cache = tmp_path / "cache"
    plain = feature_matrix(clips, settings, cache_dir=cache)
    slower = feature_matrix(clips, settings, cache_dir=cache, speed=0.84)
    assert len(list(cache.glob("features-*.npz"))) == 2
    audio = remove_offset(sf.read(path, dtype="float32")[0], SR)  # as every recording is read
    np.testing.assert_allclose(plain[0], clip_features(audio, settings), rtol=1e-5, atol=1e-4)  # float32, values ~1e2
    np.testing.assert_allclose(slower[0], clip_features(change_speed(audio, 0.84, SR), settings), rtol=1e-5, atol=1e-4)
    assert not np.allclose(plain, slower, atol=1e-2)
    np.testing.assert_array_equal(feature_matrix(clips, settings, cache_dir=cache, speed=0.84), slower)


def test_speed_copies_of_the_training_folds_reach_training(tmp_path: Path) -> None:
    from test_datasets import make_folder

    from noisewatch.train import datasets, pipeline

    clips = datasets.assign_folds(datasets.read_folder(make_folder(tmp_path / "data", {"dog_bark": 4, "background": 4})), [1, 2])
    model = pipeline.ModelSettings(speed_perturb=(0.84, 1.19))
    data = pipeline.build_data(clips, FeatureSettings(stats=("mean", "std")), model, tmp_path / "cache", workers=1)
    assert len(data.augmented) == 2 and not np.allclose(data.augmented[0], data.x)
    train = data.folds == 1
    x, y, scale = pipeline._training_set(data, train)
    assert len(x) == 3 * train.sum() and np.isnan(scale).all()
    np.testing.assert_array_equal(x[train.sum():2 * train.sum()], data.augmented[0][train])
    np.testing.assert_array_equal(y, np.tile(data.y[train], 3))

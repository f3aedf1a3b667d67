"""features.py against librosa: mel filterbank, MFCC matrices and mean vectors (max abs diff <= 1e-3)."""

from __future__ import annotations

from pathlib import Path

import librosa
import numpy as np
import pytest

from noisewatch.features import STATS, FeatureSettings, clip_features, extract, fit_to_window, mel_filterbank, mfcc
from noisewatch.classify import load_audio
from noisewatch.train.datasets import coloured_noise

TOLERANCE = 1e-3
SR = 22050
REAL_CLIPS = (
    "UrbanSound8K/audio/fold1/101415-3-0-2.flac",  # dog_bark
    "UrbanSound8K/audio/fold2/100652-3-0-0.flac",  # dog_bark, another fold
    "ESC-50/audio/2-103428-A-3.flac",  # cow, a 5 s clip
)


def librosa_mfcc(y: np.ndarray, n_mfcc: int = 50) -> np.ndarray:
    return librosa.feature.mfcc(y=np.asarray(y, dtype=np.float32), sr=SR, n_mfcc=n_mfcc)


def generated_signals() -> dict[str, np.ndarray]:
    t = np.arange(int(2.5 * SR)) / SR
    rng = np.random.default_rng(7)
    return {
        "sine_440": 0.5 * np.sin(2 * np.pi * 440 * t),
        "chirp": 0.3 * np.sin(2 * np.pi * (100 + 2000 * t) * t),
        "pink_noise": 0.05 * coloured_noise(len(t), "pink", rng),
        "clicks": np.where(np.arange(len(t)) % 4410 == 0, 0.9, 0.0),
        "near_silence": 1e-6 * rng.standard_normal(len(t)),
    }


@pytest.mark.parametrize("n_mels,fmax", [(128, None), (64, 8000.0), (40, 4000.0)])
def test_mel_filterbank_matches_librosa(n_mels: int, fmax: float | None) -> None:
    ours = mel_filterbank(SR, 2048, n_mels, 0.0, fmax)
    theirs = librosa.filters.mel(sr=SR, n_fft=2048, n_mels=n_mels, fmin=0.0, fmax=fmax)
    assert ours.shape == theirs.shape
    np.testing.assert_allclose(ours, theirs, atol=1e-7, rtol=1e-4)


@pytest.mark.parametrize("name", sorted(generated_signals()))
def test_mfcc_matches_librosa_on_generated_signals(name: str) -> None:
    y = generated_signals()[name].astype(np.float32)
    ours, theirs = mfcc(y), librosa_mfcc(y)
    assert ours.shape == theirs.shape
    assert np.max(np.abs(ours - theirs)) <= TOLERANCE


@pytest.mark.shared_data
@pytest.mark.parametrize("relative", REAL_CLIPS)
def test_mfcc_and_mean_vector_match_librosa_on_real_clips(shared_data: Path, relative: str) -> None:
    y = load_audio(shared_data / relative, SR)
    assert np.max(np.abs(mfcc(y) - librosa_mfcc(y))) <= TOLERANCE
    window = fit_to_window(y, FeatureSettings())
    expected = librosa_mfcc(window).mean(axis=1)
    assert np.max(np.abs(clip_features(y, FeatureSettings()) - expected)) <= TOLERANCE


def test_mean_and_std_vector_matches_librosa() -> None:
    settings = FeatureSettings(stats=("mean", "std"))
    window = fit_to_window(generated_signals()["chirp"], settings)
    matrix = librosa_mfcc(window)
    expected = np.concatenate([matrix.mean(axis=1), matrix.std(axis=1)])
    ours = extract(window, settings)
    assert ours.shape == (settings.n_features,)
    assert np.max(np.abs(ours - expected)) <= TOLERANCE


def test_resampled_audio_matches_librosa_soxr(tmp_path: Path) -> None:
    """44.1 kHz input is resampled with soxr HQ, as librosa.load(sr=22050) does by default."""
    import soundfile as sf

    t = np.arange(44100) / 44100
    sf.write(tmp_path / "tone.wav", (0.4 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32), 44100, subtype="FLOAT")
    ours = load_audio(tmp_path / "tone.wav", SR)
    theirs, _ = librosa.load(tmp_path / "tone.wav", sr=SR)
    assert len(ours) == len(theirs) == SR
    assert np.max(np.abs(ours - theirs)) <= 1e-5


def test_every_statistic_matches_librosa_and_numpy() -> None:
    """Each named statistic is its numpy/scipy definition on librosa's MFCC and log-mel matrices."""
    from scipy.stats import skew

    settings = FeatureSettings(stats=STATS)
    window = fit_to_window(generated_signals()["chirp"], settings)
    matrix = librosa_mfcc(window)
    mel_db = librosa.power_to_db(librosa.feature.melspectrogram(y=window, sr=SR), top_db=80.0)
    expected = {
        "mean": matrix.mean(axis=1), "std": matrix.std(axis=1), "delta_std": np.diff(matrix, axis=1).std(axis=1),
        "max": matrix.max(axis=1), "min": matrix.min(axis=1), "p10": np.percentile(matrix, 10, axis=1),
        "p90": np.percentile(matrix, 90, axis=1), "skew": skew(matrix, axis=1),
        "mel_mean": mel_db.mean(axis=1), "mel_std": mel_db.std(axis=1),
    }
    ours = extract(window, settings)
    assert ours.shape == (settings.n_features,) == (8 * 50 + 2 * 128,)
    offset = 0
    for name in STATS:
        width = len(expected[name])
        assert np.max(np.abs(ours[offset : offset + width] - expected[name])) <= TOLERANCE, name
        offset += width


def test_constant_signal_has_zero_skew_and_default_stats_are_unchanged() -> None:
    silence = np.zeros(SR, dtype=np.float32)
    assert np.all(extract(fit_to_window(silence, FeatureSettings()), FeatureSettings(stats=("skew",))) == 0.0)
    assert FeatureSettings().stats == ("mean",) and FeatureSettings().n_features == 50


def test_unknown_statistic_is_rejected() -> None:
    with pytest.raises(ValueError, match="stats"):
        FeatureSettings(stats=("mean", "kurtosis"))

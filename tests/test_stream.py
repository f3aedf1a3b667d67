"""Streaming features equal the batch reference, window by window, edge frames included."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from noisewatch.daemon.stream import StreamingFeatures, hop_samples
from noisewatch.features import FeatureSettings, extract

TOLERANCE = 1e-3  # float32 rounding of differently batched FFT/BLAS calls; MFCC stats are in dB-scale units (~1e2)


def _stream(audio: np.ndarray, settings: FeatureSettings, hop_s: float, block: int) -> list:
    stream = StreamingFeatures(settings, hop_s)
    windows = []
    for start in range(0, len(audio), block):
        windows.extend(stream.push(audio[start : start + block]))
    return windows


def _assert_matches_batch(audio: np.ndarray, settings: FeatureSettings, hop_s: float, block: int) -> int:
    windows = _stream(audio, settings, hop_s, block)
    hop = hop_samples(settings, hop_s)
    expected = 1 + (len(audio) - settings.window_samples) // hop
    assert len(windows) == expected
    for window in windows:
        assert window.start_sample == window.index * hop
        reference = audio[window.start_sample : window.start_sample + settings.window_samples]
        np.testing.assert_array_equal(window.samples, reference)
        np.testing.assert_allclose(window.features, extract(reference, settings), rtol=0, atol=TOLERANCE)
    return len(windows)


def test_hop_is_rounded_to_whole_stft_hops() -> None:
    settings = FeatureSettings()
    assert hop_samples(settings, 0.5) == 22 * 512
    assert hop_samples(settings, 0.001) == 512
    with pytest.raises(ValueError, match="longer than"):
        StreamingFeatures(settings, hop_s=5.0)


@pytest.mark.parametrize("stats", [("mean", "std"), ("mean", "std", "modulation", "periodicity", "spectral_shape")])
@pytest.mark.parametrize("block", [256, 1024, 4000])
def test_generated_audio_matches_batch(block: int, stats: tuple[str, ...]) -> None:
    rng = np.random.default_rng(1)
    settings = FeatureSettings(stats=stats)
    t = np.arange(9 * settings.sample_rate) / settings.sample_rate
    audio = (0.3 * np.sin(2 * np.pi * 440 * t * (1 + t / 9)) + 0.05 * rng.standard_normal(len(t))).astype(np.float32)
    audio[3 * settings.sample_rate : 4 * settings.sample_rate] *= 0.01  # a quiet stretch moves the top_db clamp
    assert _assert_matches_batch(audio, settings, hop_s=0.5, block=block) == 10


@pytest.mark.shared_data
def test_real_audio_matches_batch(shared_data) -> None:
    settings = FeatureSettings(stats=("mean", "std", "modulation", "periodicity", "spectral_shape"))
    folder = shared_data / "UrbanSound8K" / "audio" / "fold1"
    clips = [sf.read(path, dtype="float32")[0] for path in sorted(folder.glob("*.flac"))[:4]]
    audio = np.concatenate(clips)
    assert _assert_matches_batch(audio, settings, hop_s=0.5, block=1024) >= 5


def test_windows_are_the_same_whatever_the_block_size() -> None:
    rng = np.random.default_rng(2)
    settings = FeatureSettings()
    audio = (0.1 * rng.standard_normal(7 * settings.sample_rate)).astype(np.float32)
    runs = [_stream(audio, settings, 0.5, block) for block in (256, 1024, 4000)]
    for a, b in zip(runs[0], runs[1]):
        np.testing.assert_array_equal(a.features, b.features)
    assert [w.start_sample for w in runs[0]] == [w.start_sample for w in runs[2]]


def test_reset_starts_a_fresh_window_at_the_given_sample() -> None:
    settings = FeatureSettings()
    stream = StreamingFeatures(settings, 0.5)
    audio = np.full(settings.window_samples, 0.1, dtype=np.float32)
    stream.push(audio[:1000])
    stream.reset(start_sample=123_456)
    (window,) = stream.push(audio)
    assert window.start_sample == 123_456
    np.testing.assert_allclose(window.features, extract(audio, settings), atol=TOLERANCE)

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


@pytest.mark.parametrize("stats", [("mean", "std"), ("mean", "std", "modulation", "periodicity", "spectral_shape", "peak")])
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
    settings = FeatureSettings(stats=("mean", "std", "modulation", "periodicity", "spectral_shape", "peak"))
    folder = shared_data / "UrbanSound8K" / "audio" / "fold1"
    clips = [sf.read(path, dtype="float32")[0] for path in sorted(folder.glob("*.flac"))[:4]]
    audio = np.concatenate(clips)
    assert _assert_matches_batch(audio, settings, hop_s=0.5, block=1024) >= 5


def test_windows_are_the_same_whatever_the_block_size() -> None:
    rng = np.random.default_rng(2)
    settings = FeatureSettings()
    audio = (0.1 * rng.standard_normal(7 * settings.sample_rate)).astype(np.float32)
    runs = [_stream(audio, settings, 0.5, block) for block in (256, 1024, 4000)]
    hop = StreamingFeatures(settings, 0.5).hop_samples
    assert [len(run) for run in runs] == [1 + (len(audio) - settings.window_samples) // hop] * 3
    for a, b, c in zip(*runs):  # a hop's frames are transformed in one call whatever the reads: the same bits
        assert a.start_sample == b.start_sample == c.start_sample
        np.testing.assert_array_equal(a.features, b.features)
        np.testing.assert_array_equal(a.features, c.features)


def test_reset_starts_a_fresh_window_at_the_given_sample() -> None:
    settings = FeatureSettings()
    stream = StreamingFeatures(settings, 0.5)
    audio = np.full(settings.window_samples, 0.1, dtype=np.float32)
    stream.push(audio[:1000])
    stream.reset(start_sample=123_456)
    (window,) = stream.push(audio)
    assert window.start_sample == 123_456
    np.testing.assert_allclose(window.features, extract(audio, settings), atol=TOLERANCE)


def test_samples_to_window_is_what_completes_the_next_window() -> None:
    settings = FeatureSettings()
    stream = StreamingFeatures(settings, 0.5)
    audio = np.zeros(2 * settings.window_samples, dtype=np.float32)
    assert stream.samples_to_window == settings.window_samples
    assert stream.push(audio[:1000]) == []
    assert stream.samples_to_window == settings.window_samples - 1000
    assert stream.push(audio[: stream.samples_to_window - 1]) == []  # one sample short: no window yet
    assert len(stream.push(audio[:1])) == 1
    assert stream.samples_to_window == stream.hop_samples
    assert len(stream.push(audio[: stream.hop_samples])) == 1


def _bursty(settings: FeatureSettings, seconds: int, seed: int) -> np.ndarray:
    """Band-limited audio (its top mel bands sit far below the clamp floor) with loud bursts that enter and
    leave windows: the window's loudest bin, and so the clamp floor, moves from hop to hop."""
    rng = np.random.default_rng(seed)
    t = np.arange(seconds * settings.sample_rate) / settings.sample_rate
    audio = 0.02 * np.sin(2 * np.pi * 300 * t) + 1e-4 * rng.standard_normal(len(t))
    for start in rng.uniform(0, seconds - 0.3, size=2 * seconds):
        burst = slice(int(start * settings.sample_rate), int((start + 0.2) * settings.sample_rate))
        audio[burst] += rng.uniform(0.05, 0.8) * np.sin(2 * np.pi * rng.uniform(200, 3000) * t[burst])
    return audio.astype(np.float32)


def test_cached_frames_are_formed_again_exactly_when_the_clamp_floor_changes_them(monkeypatch) -> None:
    """Per-frame values are kept between windows and formed again only where the moved top_db floor changes
    a frame's clamped bins; every window still equals the batch function, for every statistic (mel_mean and
    mel_std read the clamped frames themselves)."""
    from noisewatch.daemon import stream as stream_module
    from noisewatch.features import STATS

    formed: list[int] = []
    stale = stream_module._FrameCache.stale

    def counting(self, slots: np.ndarray, floor: np.float32) -> np.ndarray:  # noqa: ANN001
        result = stale(self, slots, floor)
        formed.append(len(result))
        return result

    monkeypatch.setattr(stream_module._FrameCache, "stale", counting)
    settings = FeatureSettings(stats=STATS)
    assert _assert_matches_batch(_bursty(settings, 14, seed=4), settings, hop_s=0.5, block=3000) == 20
    new = hop_samples(settings, 0.5) // settings.hop_length
    later = formed[1:]  # the first window forms all its frames
    assert min(later) == new  # a window whose floor did not move reuses every earlier frame
    assert max(later) > new  # and a moved floor re-forms the frames it clamps differently


@pytest.mark.parametrize("top_db,per", [(None, "window"), (30.0, "window"), (30.0, "frame")])
def test_other_clamp_ranges_match_batch(top_db: float | None, per: str) -> None:
    settings = FeatureSettings(stats=("mean", "std", "mel_mean", "mel_std", "spectral_shape"), top_db=top_db,
                               top_db_per=per)
    assert _assert_matches_batch(_bursty(settings, 8, seed=5), settings, hop_s=0.3, block=1500) >= 10


@pytest.mark.parametrize("top_db,per", [(None, "window"), (80.0, "window"), (80.0, "frame")])
@pytest.mark.parametrize("hop_s", [0.5, 0.0])
def test_uncentred_frames_match_batch(top_db: float | None, per: str, hop_s: float) -> None:
    """Without ``center`` a window's frames are all the stream's (no edge frames): still the batch function's,
    for every statistic, one-frame hops included, whatever the clamp."""
    from noisewatch.features import STATS

    settings = FeatureSettings(stats=STATS, center=False, top_db=top_db, top_db_per=per)
    assert settings.frames_per_window() == 169
    assert _assert_matches_batch(_bursty(settings, 9, seed=8), settings, hop_s=hop_s, block=2500) >= 10


@pytest.mark.parametrize("top_db,per", [(None, "window"), (80.0, "frame")])
def test_uncentred_frames_are_each_formed_once_without_a_windows_clamp(monkeypatch, top_db: float | None,
                                                                       per: str) -> None:
    """With neither centred frames nor a clamp that depends on the window, a hop transforms exactly its new
    frames and forms their values, once (what issue 17's floor counts), and no window forms anything else."""
    from noisewatch.daemon import stream as stream_module

    calls: dict[str, list[int]] = {"fft": [], "values": []}

    def counting(name: str, function):  # noqa: ANN001, ANN202
        def counted(rows: np.ndarray, settings: FeatureSettings, **kwargs: np.ndarray) -> np.ndarray:
            calls[name].append(len(rows))
            return function(rows, settings, **kwargs)
        return counted

    monkeypatch.setattr(stream_module, "windowed_mel_db", counting("fft", stream_module.windowed_mel_db))
    monkeypatch.setattr(stream_module, "frame_values", counting("values", stream_module.frame_values))
    settings = FeatureSettings(stats=("mean", "std", "modulation", "periodicity", "spectral_shape"), center=False,
                               top_db=top_db, top_db_per=per)
    stream = StreamingFeatures(settings, 0.5)
    calls["values"].clear()  # the cache's set-up sizes its rows with one call
    audio = _bursty(settings, 10, seed=9)
    windows = [window for start in range(0, len(audio), 3000) for window in stream.push(audio[start : start + 3000])]
    assert len(windows) >= 12
    new = hop_samples(settings, 0.5) // settings.hop_length
    expected = settings.frames_per_window() + (len(windows) - 1) * new  # the first window forms all its frames
    assert calls["fft"] == calls["values"] and max(calls["fft"]) == new and sum(calls["fft"]) == expected
    for window in windows:
        reference = audio[window.start_sample : window.start_sample + settings.window_samples]
        np.testing.assert_allclose(window.features, extract(reference, settings), rtol=0, atol=TOLERANCE)


@pytest.mark.parametrize("fields,message", [
    ({"center": False, "hop_length": 300}, "whole number of hops"),
    ({"center": False, "n_fft": 100_000}, "at most the window"),
    ({"n_fft": 2047}, "must be even"),
    ({"center": "false"}, "center must be true or false"),
    ({"top_db": None, "top_db_per": "frame"}, "needs a top_db"),
    ({"top_db_per": "bin"}, "top_db_per must be one of"),
])
def test_frame_settings_the_stream_cannot_follow_are_refused(fields: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        FeatureSettings(**fields)


def test_a_peak_longer_than_an_uncentred_window_is_refused_in_its_own_frames() -> None:
    FeatureSettings(stats=("mean", "peak"), center=False, peak_s=3.9)
    with pytest.raises(ValueError, match=r"169 frames \(3.92 s\), not 3.95"):
        FeatureSettings(stats=("mean", "peak"), center=False, peak_s=3.95)


def test_bundles_name_the_new_frame_settings_only_when_they_are_not_librosas_defaults() -> None:
    """Earlier daemons refuse unknown keys: a bundle with librosa's frames and clamp loads there; one without
    says so, and reads back as it was written."""
    assert {"center", "top_db_per"}.isdisjoint(FeatureSettings().to_dict())
    settings = FeatureSettings(center=False, top_db_per="frame")
    data = settings.to_dict()
    assert data["center"] is False and data["top_db_per"] == "frame"
    assert FeatureSettings.from_dict(data) == settings


def test_windows_are_read_only_and_stay_intact() -> None:
    """Windows are views of the stream's buffer, not copies: later audio (buffer moves, a reset) never
    changes a window already handed out, and nobody can write into one."""
    settings = FeatureSettings()
    audio = _bursty(settings, 12, seed=6)
    stream = StreamingFeatures(settings, 0.5)
    first = stream.push(audio[: 6 * settings.sample_rate])
    kept = [window.samples.copy() for window in first]
    stream.push(audio[6 * settings.sample_rate :])  # past SHIFT_HOPS hops: the buffer moved
    stream.reset()
    stream.push(-audio[: 5 * settings.sample_rate])
    for window, copy in zip(first, kept):
        np.testing.assert_array_equal(window.samples, copy)
    with pytest.raises(ValueError):
        first[0].samples[0] = 1.0


def test_a_long_stream_with_loud_and_quiet_stretches_still_matches_batch() -> None:
    """Thousands of one-frame hops: the frame cache moves its rows to the start hundreds of times, the clamp
    floor rises and falls with bursts and near-silent stretches, and the windows (every third, to keep the batch
    side affordable) still equal the batch function within the float32 tolerance: nothing kept drifts."""
    settings = FeatureSettings(stats=("mean", "std", "mel_mean", "modulation", "periodicity", "spectral_shape"))
    audio = _bursty(settings, 60, seed=7)
    rate = settings.sample_rate
    for start in (10, 35):  # near-silent stretches: the floor drops ~60 dB and comes back
        audio[start * rate : (start + 6) * rate] *= 1e-3
    windows = _stream(audio, settings, hop_s=0.0, block=7000)
    assert len(windows) == 1 + (len(audio) - settings.window_samples) // settings.hop_length > 2000
    for window in windows[::3]:
        reference = audio[window.start_sample : window.start_sample + settings.window_samples]
        np.testing.assert_allclose(window.features, extract(reference, settings), rtol=0, atol=TOLERANCE)

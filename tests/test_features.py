"""features.py against librosa: mel filterbank, MFCC matrices and mean vectors (max abs diff <= 1e-3)."""

from __future__ import annotations

import json
from pathlib import Path

import librosa
import numpy as np
import pytest

from noisewatch.audio_file import load_audio
from noisewatch.dc_offset import remove_offset
from noisewatch.features import STATS, FeatureSettings, clip_features, extract, fit_to_window, mel_filterbank, mel_power, mfcc
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


@pytest.mark.parametrize("sample_rate,n_fft,n_mels,fmin,fmax",
                         [(SR, 2048, 128, 0.0, None), (SR, 2048, 64, 0.0, 8000.0), (SR, 2048, 40, 0.0, 4000.0),
                          (16000, 512, 64, 125.0, 7500.0), (SR, 1024, 128, 20.0, None), (SR, 2048, 37, 300.0, 3000.0),
                          (SR, 256, 128, 0.0, None), (SR, 2048, 128, 0.0, 30000.0)])  # empty filters; a block reading no bin
def test_the_mel_projection_reads_every_bin_the_filterbank_weighs(sample_rate: int, n_fft: int, n_mels: int,
                                                                   fmin: float, fmax: float | None) -> None:
    """The projection skips the filterbank's zeros: each bin alone must come out as its own column of weights."""
    settings = FeatureSettings(sample_rate=sample_rate, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax, n_mfcc=20)
    one_bin_each = np.eye(1 + n_fft // 2, dtype=np.float32)
    bank = mel_filterbank(sample_rate, n_fft, n_mels, fmin, fmax)
    np.testing.assert_array_equal(mel_power(one_bin_each, settings), bank.T.astype(np.float32))
    power = np.random.default_rng(3).exponential(size=(5, 1 + n_fft // 2)).astype(np.float32)
    dense = power.astype(np.float64) @ bank.T
    # float32 sums of at most 68 nonzero terms each
    np.testing.assert_allclose(mel_power(power, settings), dense, rtol=1e-5, atol=1e-12)
    wide = np.repeat(power, 2, axis=1)[:, ::2]  # strided, as the stream's slices of its work array can be
    np.testing.assert_allclose(mel_power(wide, settings), dense, rtol=1e-5, atol=1e-12)  # maybe another loop's sums
    np.testing.assert_allclose(mel_power(power[1], settings), mel_power(power, settings)[1], rtol=1e-5)  # gemv's rounding


@pytest.mark.parametrize("bins", [1024, 1026, 2049])
def test_the_mel_projection_refuses_spectra_of_another_fft_size(bins: int) -> None:
    """The dense product refused them; the blocks read only up to the last weighted bin (1024 of 1025 here)."""
    with pytest.raises(ValueError):
        mel_power(np.ones((2, bins), dtype=np.float32), FeatureSettings())


@pytest.mark.parametrize("name", sorted(generated_signals()))
def test_mfcc_matches_librosa_on_generated_signals(name: str) -> None:
    y = generated_signals()[name].astype(np.float32)
    ours, theirs = mfcc(y), librosa_mfcc(y)
    assert ours.shape == theirs.shape
    assert np.max(np.abs(ours - theirs)) <= TOLERANCE


@pytest.mark.parametrize("name", sorted(generated_signals()))
def test_uncentred_unclipped_mfcc_matches_librosa(name: str) -> None:
    """``center=False`` and ``top_db=None`` are librosa's own options of the same names."""
    y = generated_signals()[name].astype(np.float32)
    settings = FeatureSettings(center=False, top_db=None)
    mel = librosa.feature.melspectrogram(y=y, sr=SR, center=False)
    theirs = librosa.feature.mfcc(S=librosa.power_to_db(mel, top_db=None), n_mfcc=50)
    ours = mfcc(y, settings)
    assert ours.shape == theirs.shape == (50, 1 + (len(y) - 2048) // 512)
    assert np.max(np.abs(ours - theirs)) <= TOLERANCE


def test_a_clamp_per_frame_is_librosas_clamp_of_each_frame_alone() -> None:
    y = generated_signals()["clicks"].astype(np.float32)  # frames between clicks are far quieter than the clicks
    settings = FeatureSettings(center=False, top_db_per="frame")
    mel = librosa.feature.melspectrogram(y=y, sr=SR, center=False)
    columns = [librosa.power_to_db(mel[:, [j]], top_db=80.0) for j in range(mel.shape[1])]
    theirs = librosa.feature.mfcc(S=np.concatenate(columns, axis=1), n_mfcc=50)
    assert np.max(np.abs(mfcc(y, settings) - theirs)) <= TOLERANCE
    assert np.max(np.abs(mfcc(y, FeatureSettings(center=False)) - theirs)) > 1.0  # the window's clamp differs


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
    # the loader also removes a DC offset, which turns the tone's phase by 0.01 degrees: compare like with like
    assert np.max(np.abs(ours - remove_offset(theirs, SR))) <= 1e-5


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
        "modulation": reference_modulation(matrix[:8], settings), "periodicity": reference_periodicity(matrix[:8]),
        "spectral_shape": reference_shape(mel_db, groups=6), "peak": reference_peak(matrix, mel_db, groups=6),
    }
    ours = extract(window, settings)
    assert ours.shape == (settings.n_features,) == (8 * 50 + 2 * 128 + 8 * 7 + 8 * 5 + 6 * 3 * 2 + 50 + 6 * 3,)
    offset = 0
    for name in STATS:
        width = len(expected[name])
        assert np.max(np.abs(ours[offset : offset + width] - expected[name])) <= TOLERANCE, name
        offset += width


def reference_modulation(tracks: np.ndarray, settings: FeatureSettings) -> np.ndarray:
    """Band energies of each (coefficient, time) track's symmetric-Hann periodogram, written out band by band."""
    from scipy.signal import get_window

    n = tracks.shape[1]
    centred = (tracks - tracks.mean(axis=1, keepdims=True)) * get_window("hann", n, fftbins=False)
    power = np.abs(np.fft.rfft(centred, axis=1)) ** 2
    hz = np.arange(power.shape[1]) * SR / 512 / n
    edges = [*settings.modulation_bands_hz, np.inf]
    return np.log10(np.stack([power[:, (hz >= lo) & (hz < hi)].sum(axis=1) for lo, hi in zip(edges, edges[1:])])
                    + 1e-3).ravel()


def reference_periodicity(tracks: np.ndarray, ranges=((1, 4), (4, 10), (10, 22), (22, 43), (43, 86))) -> np.ndarray:
    """Per track, the largest normalised np.correlate value in each lag range (frames; default: the shipped
    0.02, 0.1, 0.23, 0.5, 1, 2 s at 43.07 frames/s)."""
    rows = []
    for track in tracks - tracks.mean(axis=1, keepdims=True):
        correlation = np.correlate(track, track, "full")[len(track) - 1 :]
        correlation = correlation / correlation[0]
        rows.append([correlation[low:high].max() for low, high in ranges])
    return np.array(rows).T.ravel()


def reference_shape(mel_db: np.ndarray, groups: int) -> np.ndarray:
    """Per group of mel bands (np.array_split) and frame: 10 log10 of the geometric over the arithmetic mean
    power, of the max over the mean power, and the dB gap between the loudest and quietest fifth of bands;
    each as mean and std over frames."""
    measures = reference_shape_frames(mel_db, groups)
    return np.stack([measures.mean(axis=0), measures.std(axis=0)], axis=1).ravel()


def reference_shape_frames(mel_db: np.ndarray, groups: int) -> np.ndarray:
    """The measures of :func:`reference_shape` frame by frame, (frames, groups x 3), group-major."""
    from scipy.stats import gmean

    values = []
    for bands in np.array_split(mel_db, groups, axis=0):
        power = 10 ** (bands / 10)
        ranked, fifth = np.sort(bands, axis=0), len(bands) // 5
        values += [10 * np.log10(gmean(power, axis=0) / power.mean(axis=0)),
                   10 * np.log10(power.max(axis=0) / power.mean(axis=0)),
                   ranked[-fifth:].mean(axis=0) - ranked[:fifth].mean(axis=0)]
    return np.stack(values, axis=1)


def reference_peak(matrix: np.ndarray, mel_db: np.ndarray, groups: int, frames: int = 43) -> np.ndarray:
    """MFCCs and shape measures averaged over the ``frames`` consecutive frames of highest summed c0."""
    first = int(np.argmax(np.convolve(matrix[0], np.ones(frames), mode="valid")))
    stretch = slice(first, first + frames)
    return np.concatenate([matrix[:, stretch].mean(axis=1), reference_shape_frames(mel_db, groups)[stretch].mean(axis=0)])


def test_spectral_shape_follows_non_default_settings_on_a_real_siren(repo_root: Path) -> None:
    settings = FeatureSettings(stats=("spectral_shape",), shape_groups=3)
    window = load_audio(repo_root / "samples" / "scene.flac", SR)[5 * SR : 9 * SR]  # the siren (scene.json)
    mel_db = librosa.power_to_db(librosa.feature.melspectrogram(y=window, sr=SR), top_db=80.0)
    ours = extract(window, settings)
    assert ours.shape == (settings.n_features,) == (3 * 3 * 2,)
    assert np.max(np.abs(ours - reference_shape(mel_db, groups=3))) <= TOLERANCE


def test_spectral_shape_tells_a_tone_from_noise() -> None:
    """A 1 kHz tone makes its band group (the second of six, about 570-1180 Hz) peaky: flatness far below 0 dB, a
    large peak-to-mean and contrast; white noise keeps every group flat (the low groups, where a mel band
    holds few FFT bins, a little less so)."""
    settings = FeatureSettings(stats=("spectral_shape",))
    t = np.arange(settings.window_samples) / SR
    noise = 0.1 * np.random.default_rng(5).standard_normal(len(t))
    tone = 0.5 * np.sin(2 * np.pi * 1000 * t) + 0.001 * noise

    def means(signal: np.ndarray) -> np.ndarray:  # (group, measure) of the means over time
        return extract(signal.astype(np.float32), settings).reshape(6, 3, 2)[:, :, 0]

    tonal, flat = means(tone), means(noise)
    assert tonal[1, 0] <= -20.0 and tonal[1, 1] >= 10.0 and tonal[1, 2] >= 40.0
    assert np.all(flat[:, 0] >= -1.5) and np.all(flat[:, 1] <= 5.0) and np.all(flat[:, 2] <= 10.0)


def test_temporal_statistics_follow_non_default_settings() -> None:
    settings = FeatureSettings(stats=("modulation", "periodicity"), temporal_mfccs=4,
                               modulation_bands_hz=(1.0, 5.0), periodicity_lags_s=(0.05, 0.5, 1.5))
    window = fit_to_window(generated_signals()["chirp"], settings)
    matrix = librosa_mfcc(window)[:4]
    ours = extract(window, settings)
    expected = np.concatenate([reference_modulation(matrix, settings), reference_periodicity(matrix, ((2, 22), (22, 65)))])
    assert ours.shape == expected.shape == (4 * 2 + 4 * 2,)
    assert np.max(np.abs(ours - expected)) <= TOLERANCE


def test_a_silent_window_has_floor_modulation_and_no_periodicity_or_shape() -> None:
    settings = FeatureSettings(stats=("modulation", "periodicity", "spectral_shape"))
    vector = extract(np.zeros(settings.window_samples, dtype=np.float32), settings)
    assert np.all(np.isfinite(vector))
    np.testing.assert_allclose(vector[:56], -3.0, rtol=1e-5)  # log10(0 + MODULATION_FLOOR) in float32
    assert np.all(vector[56:] == 0.0)  # constant tracks and a constant spectrum are defined as exact zeros


def test_modulation_finds_a_10_hz_flutter_and_periodicity_a_repeating_click() -> None:
    """Amplitude modulation at 10 Hz puts c0's energy in the 8-16 Hz band; clicks every 0.7 s (30 frames)
    give c0 a strong autocorrelation in the 22-42 frame range; steady noise has neither."""
    settings = FeatureSettings(stats=("modulation", "periodicity"))
    t = np.arange(settings.window_samples) / SR
    noise = 0.1 * np.random.default_rng(3).standard_normal(len(t))
    flutter = noise * (1 + 0.9 * np.sin(2 * np.pi * 10 * t))
    clicks = np.where(np.arange(len(t)) % int(0.7 * SR) < 256, 0.8, 0.0) + 0.001 * noise

    def parts(signal: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        vector = extract(signal.astype(np.float32), settings)
        return vector[:56].reshape(7, 8), vector[56:].reshape(5, 8)  # (band or lag range, coefficient)

    (steady_mod, steady_period), (flutter_mod, _), (_, click_period) = parts(noise), parts(flutter), parts(clicks)
    assert flutter_mod[5, 0] - steady_mod[5, 0] >= 2.0  # 8-16 Hz band: 100x the energy (log10 units)
    assert flutter_mod[5, 0] == flutter_mod[:, 0].max()
    assert click_period[3, 0] >= 0.8 and steady_period[3, 0] <= 0.3


def test_temporal_settings_are_checked_and_survive_the_bundle_round_trip() -> None:
    settings = FeatureSettings(stats=("mean", "modulation", "periodicity"), temporal_mfccs=4,
                               modulation_bands_hz=[1.0, 5.0], periodicity_lags_s=(0.05, 0.5))
    assert settings.n_features == 50 + 4 * 2 + 4 * 1 and settings.modulation_bands_hz == (1.0, 5.0)
    assert FeatureSettings.from_dict(json.loads(json.dumps(settings.to_dict()))) == settings
    hash(settings)  # lists were made tuples: the settings key lru caches
    for bad in ({"temporal_mfccs": 51}, {"modulation_bands_hz": (2.0, 1.0)}, {"modulation_bands_hz": (1.0, 30.0)},
                {"periodicity_lags_s": (0.5,)}, {"periodicity_lags_s": (0.001, 0.5)}, {"periodicity_lags_s": (0.1, 5.0)}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            FeatureSettings(stats=("modulation",), **bad)


def test_shape_settings_are_checked_and_written_only_when_used() -> None:
    settings = FeatureSettings(stats=("mean", "spectral_shape"), shape_groups=4)
    assert settings.n_features == 50 + 4 * 3 * 2
    assert settings.to_dict()["shape_groups"] == 4 and "temporal_mfccs" not in settings.to_dict()
    assert FeatureSettings.from_dict(json.loads(json.dumps(settings.to_dict()))) == settings
    assert "shape_groups" not in FeatureSettings(stats=("mean", "modulation")).to_dict()
    for bad in (0, 26, 6.0, True):
        with pytest.raises(ValueError, match="shape_groups"):
            FeatureSettings(stats=("spectral_shape",), shape_groups=bad)
    FeatureSettings(stats=("mean",), shape_groups=0)  # not used, not checked


def test_settings_without_temporal_statistics_read_and_write_as_before() -> None:
    """Bundles written before the temporal statistics load; settings that do not use them are neither
    checked against them nor written with them (older daemons refuse unknown keys)."""
    old_bundle = {"sample_rate": 22050, "window_s": 4.0, "n_fft": 2048, "hop_length": 512, "n_mels": 128, "fmin": 0.0,
                  "fmax": None, "top_db": 80.0, "n_mfcc": 50, "stats": ["mean", "std"], "short_clip": "tile"}
    settings = FeatureSettings.from_dict(old_bundle)
    assert settings == FeatureSettings(stats=("mean", "std")) and settings.to_dict() == old_bundle
    assert FeatureSettings(n_mfcc=5, window_s=1.0, hop_length=1024).n_features == 5


def test_the_shipped_bundle_settings_write_back_unchanged(repo_root: Path) -> None:
    """What the shipped model was trained with reads and writes back key for key (the bundle is the contract)."""
    written = json.loads((repo_root / "models" / "urban11.json").read_text(encoding="utf-8"))["features"]
    assert FeatureSettings.from_dict(written).to_dict() == written


def test_constant_signal_has_zero_skew_and_default_stats_are_unchanged() -> None:
    silence = np.zeros(SR, dtype=np.float32)
    assert np.all(extract(fit_to_window(silence, FeatureSettings()), FeatureSettings(stats=("skew",))) == 0.0)
    assert FeatureSettings().stats == ("mean",) and FeatureSettings().n_features == 50


def test_unknown_statistic_is_rejected() -> None:
    with pytest.raises(ValueError, match="stats"):
        FeatureSettings(stats=("mean", "kurtosis"))

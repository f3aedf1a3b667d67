"""loudest_mean: the MFCC mean of a window's loudest second, so a short event is not diluted by the rest of
the window; the daemon's streamed windows give the same values as the batch function."""
import numpy as np

from noisewatch.daemon.stream import StreamingFeatures
from noisewatch.features import FeatureSettings, extract

SETTINGS = FeatureSettings(stats=("mean", "loudest_mean"))
RATE = SETTINGS.sample_rate
TOLERANCE = 1e-3  # float32 rounding of differently batched FFT calls, on dB-scale MFCCs (~1e2)


def _burst_in_noise(at_s: float, seed: int = 0) -> np.ndarray:
    """4 s of faint noise with a 1 s two-tone burst starting at ``at_s``."""
    rng = np.random.default_rng(seed)
    audio = 0.003 * rng.standard_normal(SETTINGS.window_samples)
    t = np.arange(RATE) / RATE
    start = int(at_s * RATE)
    audio[start : start + RATE] += 0.3 * (np.sin(2 * np.pi * 700 * t) + 0.5 * np.sin(2 * np.pi * 1400 * t))
    return audio.astype(np.float32)


def _halves(audio: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    features = extract(audio, SETTINGS)
    return features[: SETTINGS.n_mfcc], features[SETTINGS.n_mfcc :]


def test_the_loudest_second_is_the_burst_wherever_it_sits():
    early_mean, early = _halves(_burst_in_noise(0.5))
    late_mean, late = _halves(_burst_in_noise(2.5, seed=1))
    alone = extract(np.resize(_burst_in_noise(0.0)[:RATE], SETTINGS.window_samples), SETTINGS)[: SETTINGS.n_mfcc]
    # the loudest second is close to the burst on its own, wherever the burst sits; the window's mean, three
    # quarters noise, is far from it (distances of 50 MFCCs: 10 and 6 against 82 here)
    assert np.linalg.norm(early - alone) < np.linalg.norm(early_mean - alone) / 4
    assert np.linalg.norm(early - late) < np.linalg.norm(early_mean - early) / 2


def test_streamed_windows_match_the_batch_function():
    audio = np.concatenate([_burst_in_noise(at, seed) for seed, at in enumerate((0.2, 1.7, 2.9))])
    stream = StreamingFeatures(SETTINGS, 0.5)
    windows = [w for start in range(0, len(audio), 1000) for w in stream.push(audio[start : start + 1000])]
    assert len(windows) == 16  # hops of 22 STFT frames (0.51 s) over 12 s
    for window in windows:
        reference = audio[window.start_sample : window.start_sample + SETTINGS.window_samples]
        np.testing.assert_allclose(window.features, extract(reference, SETTINGS), rtol=0, atol=TOLERANCE)

"""The two ways the daemon is compared against, one window at a time.

``earlier``: the earlier project's per-window pipeline: librosa resampling of the 48 kHz window with
res_type='soxr_hq' (kaiser_fast needs resampy, which the train extra does not install),
librosa.feature.mfcc(n_mfcc=50) averaged over time, Keras predict
on its 750-750-750 dense MLP (random weights: only time matters).
``librosa_tflite``: what a straightforward rewrite would do: librosa's mel spectrogram of each whole
model-rate window, the bundle's statistics of it and the shipped TFLite model.
Bench-only: imports librosa and TensorFlow, which the daemon never does.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import numpy as np

EARLIER_HIDDEN = (750, 750, 750)
EARLIER_N_MFCC = 50
WARMUP_WINDOWS = 2
"""Untimed first calls: numba JIT compiles, Keras traces its predict function."""


def earlier_keras_mlp(n_inputs: int, n_classes: int):  # noqa: ANN201 (keras type, imported lazily)
    """The earlier project's network: 3 dense layers of 750 ReLU units, softmax out."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    layers = [keras.Input((n_inputs,))] + [keras.layers.Dense(n, activation="relu") for n in EARLIER_HIDDEN]
    return keras.Sequential(layers + [keras.layers.Dense(n_classes, activation="softmax")])


def earlier_step(model_rate: int, mic_rate: int, n_classes: int) -> Callable[[np.ndarray], np.ndarray]:
    """One window of 48 kHz audio -> scores, the earlier project's way."""
    import librosa

    net = earlier_keras_mlp(EARLIER_N_MFCC, n_classes)

    def step(window_48k: np.ndarray) -> np.ndarray:
        y = librosa.resample(window_48k, orig_sr=mic_rate, target_sr=model_rate, res_type="soxr_hq")
        x = librosa.feature.mfcc(y=y, sr=model_rate, n_mfcc=EARLIER_N_MFCC).mean(axis=1)
        return net.predict(x[None, :], verbose=0)[0]

    return step


def librosa_tflite_step(model, settings) -> Callable[[np.ndarray], np.ndarray]:  # noqa: ANN001
    """One model-rate window -> scores: librosa's mel spectrogram of the whole window (every frame, every
    time), the bundle's statistics of it (``features.summarize``: clamp, DCT, mean/std/temporal) and TFLite."""
    import librosa

    from noisewatch.features import AMIN, summarize

    def step(window: np.ndarray) -> np.ndarray:
        mel = librosa.feature.melspectrogram(y=window, sr=settings.sample_rate, n_fft=settings.n_fft,
                                             hop_length=settings.hop_length, n_mels=settings.n_mels,
                                             fmin=settings.fmin, fmax=settings.fmax)
        return model.predict(summarize(10.0 * np.log10(np.maximum(mel, AMIN)).T, settings))

    return step


def time_per_window(step: Callable[[np.ndarray], np.ndarray], windows: list[np.ndarray]) -> list[float]:
    """Seconds per call of ``step`` on each window, after WARMUP_WINDOWS untimed calls."""
    for window in windows[:WARMUP_WINDOWS]:
        step(window)
    times = []
    for window in windows:
        t0 = time.perf_counter()
        step(window)
        times.append(time.perf_counter() - t0)
    return times

"""DC offset removal: a converter's constant offset is not sound.

Many microphones deliver audio riding on a constant: I2S MEMS parts and USB adapters whose input is not
AC-coupled. Left in, the offset reads as a loud sound in the unweighted level (0.5 of full scale is -6 dBFS),
opens the quiet-window gate, and leaks through the analysis window into the lowest mel bands, where it
changes the features enough to lose events (a dog bark in samples/scene.flac at an offset of 0.1).

The remover is a one-pole high-pass, ``y = x - m`` with ``m[n] = R m[n-1] + (1 - R) x[n]`` the slowly
tracked mean, cut off at :data:`CUTOFF_HZ`: a steady offset is gone within about 1.5 s, and audio passes
within 0.02 dB at 10 Hz and 0.001 dB from 50 Hz up, so features of audio without an offset (every training
clip) do not move beyond that. Block sizes do not change the output (the recursion is computed exactly per
block, and the estimate starts at the first sample).
"""

from __future__ import annotations

import numpy as np

CUTOFF_HZ = 0.5
"""-3 dB point of the high-pass: far below any sound the model or the level meter weighs."""
_CHUNK = 8192
"""Samples per closed-form step: R**-k stays below ~10 over it at 22050 Hz, so float64 keeps it exact."""


class DcOffsetRemover:
    """Removes a constant (or slowly drifting) offset from one continuous mono stream."""

    def __init__(self, sample_rate: int) -> None:
        self._r = 1.0 - 2.0 * np.pi * CUTOFF_HZ / sample_rate
        k = np.arange(_CHUNK, dtype=np.float64)
        self._grow = (1.0 - self._r) * self._r**-k
        """(1 - R) R^-k: the weight of sample k in the running sum of a chunk."""
        self._shrink = self._r**k
        self._mean: float | None = None
        """The tracked offset; None until the first sample, which starts it: an offset present from the start
        makes no step, and no read size changes what follows (the first read's mean would)."""

    def take_over(self, previous: "DcOffsetRemover") -> None:
        """Go on with ``previous``'s estimate (a reload: the microphone and its offset are the same)."""
        self._mean = previous._mean

    def __call__(self, samples: np.ndarray) -> np.ndarray:
        """The next samples of the stream, offset removed (float32, same length)."""
        x = np.asarray(samples, dtype=np.float64).reshape(-1)
        if not len(x):
            return np.zeros(0, dtype=np.float32)
        if self._mean is None:
            self._mean = float(x[0])
        out = np.empty(len(x), dtype=np.float32)
        for first in range(0, len(x), _CHUNK):
            part = x[first : first + _CHUNK]
            n = len(part)
            # m[k] = R^k (R m[-1] + sum_{j<=k} (1 - R) R^-j x[j]): the recursion, closed form over the chunk
            mean = self._shrink[:n] * (self._r * self._mean + np.cumsum(self._grow[:n] * part))
            out[first : first + n] = part - mean
            self._mean = float(mean[-1])
        return out

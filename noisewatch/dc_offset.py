"""DC offset removal: a converter's constant offset is not sound.

Many microphones deliver audio riding on a constant: I2S MEMS parts and USB adapters whose input is not
AC-coupled. Left in, the offset reads as a loud sound in the unweighted level (0.5 of full scale is -6 dBFS),
opens the quiet-window gate, and leaks through the analysis window into the lowest mel bands, where it
changes the features enough to lose events (a dog bark in samples/scene.flac at an offset of 0.1).

The remover is a one-pole high-pass, ``y = x - m`` with ``m[n] = R m[n-1] + (1 - R) x[n]`` the slowly
tracked mean, cut off at :data:`CUTOFF_HZ`: a steady offset is gone within about 1.5 s, and audio passes
within 0.02 dB at 10 Hz and 0.001 dB from 50 Hz up, so features of audio without an offset do not move
beyond that. In a stream, until the tracked mean has a time constant's worth of samples behind it, it is
their plain mean (the weight 1/(n+1) falls to 1 - R there): an offset present from the first sample makes no
step, and the estimate depends on the sample's index alone, so no read size changes the output. (Over those
first 0.3 s the plain mean cuts low frequencies harder than 0.5 Hz, and a stream's first sample reads 0: once
per start or reopened input.)

Training and classify read whole recordings through the same filter (:func:`remove_offset`), started at the
recording's mean, where a stream's estimate would have settled: a clip's offset is no cue the model can learn
(1 in 10 UrbanSound8K siren clips carries one of more than 0.3 of its RMS, 1 in 14 gunshots more than 0.1)
and never hears at run time, and a clip without one passes as it is, from its first sample.
"""

from __future__ import annotations

import numpy as np

CUTOFF_HZ = 0.5
"""-3 dB point of the high-pass: far below any sound the model or the level meter weighs."""
_CHUNK = 8192
"""Samples per closed-form step: R**-k stays below ~10 over it at 22050 Hz, so float64 keeps it exact."""


class DcOffsetRemover:
    """Removes a constant (or slowly drifting) offset from one continuous mono stream."""

    def __init__(self, sample_rate: int, mean: float | None = None) -> None:
        self._r = 1.0 - 2.0 * np.pi * CUTOFF_HZ / sample_rate
        self._warm_up = int(np.ceil(1.0 / (1.0 - self._r)))
        """Samples over which the estimate is their plain mean (until 1/(n+1) reaches 1 - R)."""
        k = np.arange(_CHUNK, dtype=np.float64)
        self._grow = (1.0 - self._r) * self._r**-k
        """(1 - R) R^-k: the weight of sample k in the running sum of a chunk."""
        self._shrink = self._r**k
        self.restart(mean)

    def restart(self, mean: float | None = None) -> None:
        """Estimate afresh from the next sample, as at construction (a reopened input may be another converter)."""
        self._seen = 0 if mean is None else self._warm_up
        self._sum = 0.0
        """Sum of the samples seen, while warming up."""
        self._mean = 0.0 if mean is None else mean
        """The tracked offset after the last sample (``mean``: known from the start, no warming up)."""

    def take_over(self, previous: "DcOffsetRemover") -> None:
        """Go on with ``previous``'s estimate (a reload: the microphone and its offset are the same)."""
        self._seen, self._sum, self._mean = previous._seen, previous._sum, previous._mean

    def __call__(self, samples: np.ndarray) -> np.ndarray:
        """The next samples of the stream, offset removed (float32, same length)."""
        x = np.asarray(samples, dtype=np.float64)
        if x.ndim != 1:  # flattened, a stereo block would come back twice as long, its channels interleaved
            raise ValueError(f"one channel of samples expected, got an array of shape {x.shape}")
        heard = _silenced(x)
        out = np.empty(len(x), dtype=np.float32)
        first = min(len(x), max(0, self._warm_up - self._seen))
        if first:
            sums = self._sum + np.cumsum(heard[:first])
            means = sums / np.arange(self._seen + 1, self._seen + first + 1)
            out[:first] = x[:first] - means
            self._sum, self._mean = float(sums[-1]), float(means[-1])
        for start in range(first, len(x), _CHUNK):
            part = heard[start : start + _CHUNK]
            n = len(part)
            # m[k] = R^k (R m[-1] + sum_{j<=k} (1 - R) R^-j x[j]): the recursion, closed form over the chunk
            mean = self._shrink[:n] * (self._r * self._mean + np.cumsum(self._grow[:n] * part))
            out[start : start + n] = x[start : start + n] - mean
            self._mean = float(mean[-1])
        self._seen += len(x)
        return out


def remove_offset(recording: np.ndarray, sample_rate: int) -> np.ndarray:
    """A whole recording (a training clip, a file to classify) as the daemon's stream would give it once settled."""
    audio = np.asarray(recording, dtype=np.float32).reshape(-1)
    mean = float(_silenced(audio).mean(dtype=np.float64)) if len(audio) else 0.0
    return DcOffsetRemover(sample_rate, mean)(audio)


def _silenced(x: np.ndarray) -> np.ndarray:
    """``x`` with NaN and infinite samples (a broken file's) as silence, for the estimate only: one NaN in it made
    every later sample NaN (a whole recording's, through its mean), where the output keeps it in its place."""
    finite = np.isfinite(x)
    return x if finite.all() else np.where(finite, x, 0.0)

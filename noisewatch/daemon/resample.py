"""Captured audio to model audio: mono downmix (:mod:`noisewatch.downmix`), then streaming resampling to the
model's rate.

A device gives its native rate and channel count (often 44.1 or 48 kHz, sometimes stereo); the
model wants mono at the bundle's rate (22050 Hz). soxr's streaming resampler keeps its filter
state between blocks, so any block size gives the same samples as one call on the whole
recording; ``tests/test_resample.py`` holds it to that. The processing loop calls this, never
the audio callback.
"""

from __future__ import annotations

import numpy as np
import soxr

from noisewatch.downmix import ChannelMix, MixChoice

QUALITY = "HQ"
"""soxr quality preset: the one training uses for recordings at other rates."""


class MonoResampler:
    """Downmix (frames, channels) blocks to mono and resample one continuous stream."""

    def __init__(self, in_rate: int, out_rate: int, channels: int, mix_before: MixChoice | None = None) -> None:
        self.in_rate = int(in_rate)
        self.out_rate = int(out_rate)
        self.channels = int(channels)
        self._stream: soxr.ResampleStream | None = None
        self._taken = 0  # input frames taken
        self._given = 0  # output samples given
        # ``mix_before``: the same input's mix when it was last open, kept until the mix is chosen anew (maybe wired anew)
        self.mix = ChannelMix(self.channels, self.in_rate, mix_before)
        if self.in_rate != self.out_rate:
            self._stream = soxr.ResampleStream(self.in_rate, self.out_rate, 1, dtype="float32", quality=QUALITY)

    def process(self, block: np.ndarray) -> np.ndarray:
        """Mono float32 samples at ``out_rate`` for the next captured block (may be fewer while the filter fills)."""
        mono = self.mix.mix(block)
        out = mono if self._stream is None else self._stream.resample_chunk(mono)
        self._taken += len(mono)
        self._given += len(out)
        return out

    def input_for(self, samples: int) -> int:
        """Input frames after which the output will have grown by ``samples`` at the nominal rate ratio, counting
        what the filter already holds: never more than those samples need (the filter only ever lags)."""
        short = (self._given + samples) * self.in_rate - self._taken * self.out_rate
        return max(0, -(-short // self.out_rate))

    def flush(self) -> np.ndarray:
        """At the end of a recording: the samples still inside the filter."""
        if self._stream is None:
            return np.zeros(0, dtype=np.float32)
        out = self._stream.resample_chunk(np.zeros(0, dtype=np.float32), last=True)
        self._given += len(out)
        return out

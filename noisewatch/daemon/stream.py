"""Streaming MFCC windows: each STFT frame is computed once, shared by every window it falls in.

A 4 s window at 22050 Hz has 173 centred frames; successive windows (0.5 s apart) share all but
~22 of them. Interior frames depend only on the stream's samples, so they are cached by their
position in the stream. The two frames at each end of a window see the window's zero padding
(librosa's ``center=True``), so they are recomputed per window from the window itself. Both
kinds go through :func:`noisewatch.features.frame_mel_db` and the window through
:func:`noisewatch.features.summarize`: the result is what :func:`features.extract` gives for
the same samples, and ``tests/test_stream.py`` holds them to it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from noisewatch.features import FeatureSettings, frame_mel_db, summarize


def hop_samples(settings: FeatureSettings, hop_s: float) -> int:
    """Window hop in samples, rounded to whole STFT hops so windows share frames exactly."""
    frames = max(1, int(round(hop_s * settings.sample_rate / settings.hop_length)))
    return frames * settings.hop_length


@dataclass(frozen=True)
class Window:
    """One classification window of the stream."""

    index: int
    start_sample: int
    """First sample of the window, counted at the model rate since the stream began."""
    samples: np.ndarray
    """The window's audio (float32, window_samples long); a copy the caller may keep."""
    features: np.ndarray
    """Equal to ``features.extract(samples, settings)``."""


class StreamingFeatures:
    """Turns model-rate mono audio of any block size into feature windows."""

    def __init__(self, settings: FeatureSettings, hop_s: float, start_sample: int = 0) -> None:
        self.settings = settings
        self.hop_samples = hop_samples(settings, hop_s)
        if self.hop_samples > settings.window_samples:
            raise ValueError(f"hop of {hop_s} s is longer than the {settings.window_s} s window")
        self._window = settings.window_samples
        self._hop = settings.hop_length
        self._half = settings.n_fft // 2
        self._n_frames = settings.frames_per_window()
        # Frames 0..first_inner-1 and last_inner+1.. touch the window's zero padding.
        self._first_inner = -(-self._half // self._hop)
        self._last_inner = (self._window - self._half) // self._hop
        self._buffer = np.zeros(self._window + self.hop_samples, dtype=np.float32)
        self._cache = np.zeros((self._n_frames, settings.n_mels), dtype=np.float64)
        self._mel_db = np.zeros((self._n_frames, settings.n_mels), dtype=np.float64)
        self._inner = np.arange(self._first_inner, self._last_inner + 1)
        self._ramp = np.arange(settings.n_fft)[None, :]
        self._edges = np.r_[0 : self._first_inner, self._last_inner + 1 : self._n_frames]
        self._index = 0
        self.reset(start_sample)

    def reset(self, start_sample: int = 0) -> None:
        """Forget buffered audio (a gap in the stream); the next sample is ``start_sample``."""
        self._origin = start_sample
        self._filled = 0
        self._window_start = 0  # samples since reset at which the buffered window begins
        self._next_frame = 0  # first stream frame (since reset) not yet in the cache

    def push(self, samples: np.ndarray) -> list[Window]:
        """Append audio; return every window it completes, oldest first."""
        samples = np.asarray(samples, dtype=np.float32).reshape(-1)
        windows = []
        while len(samples):
            take = min(len(samples), len(self._buffer) - self._filled)
            self._buffer[self._filled : self._filled + take] = samples[:take]
            self._filled += take
            samples = samples[take:]
            while self._filled >= self._window:
                windows.append(self._emit())
                self._advance()
        return windows

    def _emit(self) -> Window:
        audio = self._buffer[: self._window].copy()
        first_frame = self._window_start // self._hop
        new = np.arange(max(self._next_frame, first_frame + self._first_inner), first_frame + self._last_inner + 1)
        # One transform for the frames no earlier window had and this window's padded edge frames.
        offsets = (new - first_frame) * self._hop - self._half
        frames = np.concatenate([audio[offsets[:, None] + self._ramp], self._edge_frames(audio)])
        mel_db = frame_mel_db(frames, self.settings)
        self._cache[new % self._n_frames] = mel_db[: len(new)]
        self._next_frame = max(self._next_frame, first_frame + self._last_inner + 1)
        self._mel_db[self._inner] = self._cache[(first_frame + self._inner) % self._n_frames]
        self._mel_db[self._edges] = mel_db[len(new) :]
        window = Window(self._index, self._origin + self._window_start, audio, summarize(self._mel_db, self.settings))
        self._index += 1
        return window

    def _edge_frames(self, audio: np.ndarray) -> np.ndarray:
        """The frames that reach into the window's zero padding, built from its two ends only."""
        n_fft, half = self.settings.n_fft, self._half
        head = np.concatenate([np.zeros(half, np.float32), audio[: n_fft]])
        tail_start = (self._last_inner + 1) * self._hop - half
        tail = np.concatenate([audio[tail_start:], np.zeros(half, np.float32)])
        head_offsets = np.arange(self._first_inner) * self._hop
        tail_offsets = np.arange(self._n_frames - self._last_inner - 1) * self._hop
        return np.concatenate([head[head_offsets[:, None] + self._ramp], tail[tail_offsets[:, None] + self._ramp]])

    def _advance(self) -> None:
        keep = self._filled - self.hop_samples
        self._buffer[:keep] = self._buffer[self.hop_samples : self._filled]
        self._filled = keep
        self._window_start += self.hop_samples

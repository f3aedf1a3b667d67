"""Streaming MFCC windows: each STFT frame's work is done once, shared by every window it falls in.

A 4 s window at 22050 Hz has 173 centred frames; successive windows (0.5 s apart) share all but
~22 of them. Interior frames depend only on the stream's samples, so their mel-dB rows are cached
by their position in the stream, and so are the per-frame values the statistics summarise (MFCCs,
spectral shape measures: :func:`noisewatch.features.mfcc_rows`, :func:`~noisewatch.features.shape_measures`).
With ``center`` (librosa's default), the two frames at each end of a window see the window's zero
padding, so they are recomputed per window from the window itself; without it a window's frames are all
the stream's.

The clamp: per-frame values are of *clamped* rows, and the clamp floor (``top_db`` below the
window's loudest bin) moves with the window. A frame's cached values were formed with some floor
``f_old``; under the window's floor ``f`` its clamped row is the same exactly when ``f_old == f`` or
none of its bins lies below ``max(f_old, f)``. Only frames that fail both are formed again, so
every window gets the values :func:`features.extract` computes from the same samples, and
``tests/test_stream.py`` holds them to it. Without a clamp (``top_db`` None), or with one counted from each
frame's own loudest bin (``top_db_per`` "frame"), a frame's clamped row and values are final: they are formed
once, as the frame is stored.

The cache is a run of rows, one per stream frame, so a window's frames are one slice of it (no gathers, no
reordering copies): the window's edge frames' values go into the rows just before and after its inner
frames, rows that belong to frames no later window reads as inner (before) or to frames not computed yet
(after, formed at the next hop). When the rows run out, the last window's rows move to the start.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from noisewatch.features import (
    MEL_STATS,
    FeatureSettings,
    clamp_db,
    frame_values,
    hann_window,
    hop_samples,
    summarize_frames,
    windowed_mel_db,
)

SHIFT_HOPS = 8
"""Hops of audio the buffer holds beyond one window: its unread audio moves to a fresh buffer once per
SHIFT_HOPS hops instead of the whole window being copied and shifted every hop."""


@dataclass(frozen=True)
class Window:
    """One classification window of the stream."""

    index: int
    """Windows this stream gave before it, gaps included (a reset does not count afresh)."""
    start_sample: int
    """First sample of the window, counted at the model rate since the stream began."""
    samples: np.ndarray
    """The window's audio (float32, window_samples long): a read-only view the caller may keep (the stream
    never writes where a window was)."""
    features: np.ndarray
    """Equal to ``features.extract(samples, settings)``."""


class _FrameCache:
    """Per stream frame, one row (frame ``base`` in row 0): the mel-dB row (kept only if a window reads it again),
    its extremes, and the per-frame values of its clamped row with the floor they were formed with (NaN: not
    formed yet)."""

    def __init__(self, settings: FeatureSettings, rows: int) -> None:
        self.settings = settings
        self.window_clamp = settings.top_db is not None and settings.top_db_per == "window"
        """Whether a frame's clamped row depends on the window it is in (else rows are stored clamped)."""
        self.keeps_mel = self.window_clamp or not set(settings.stats).isdisjoint(MEL_STATS)
        """Whether a window reads its frames' mel-dB rows again (to clamp them, or for a statistic of the clamped
        rows themselves); else they are not stored, nor moved with the others."""
        self.base = 0
        self.mel = np.zeros((rows if self.keeps_mel else 0, settings.n_mels), dtype=np.float32)
        self.top = np.zeros(rows, dtype=np.float32)
        self.bottom = np.zeros(rows, dtype=np.float32)
        self.floor = np.full(rows, np.nan, dtype=np.float32)
        self.values = np.zeros((rows, frame_values(np.zeros((1, settings.n_mels), np.float32), settings).shape[1]))

    def reset(self) -> None:
        """Forget every frame (a gap in the stream): frame 0 of the next audio goes in row 0."""
        self.base = 0
        self.floor[:] = np.nan

    def rows(self, first_frame: int, count: int) -> slice:
        """The rows of ``count`` stream frames from ``first_frame`` on, moving the rows from ``first_frame`` on to
        the start first if they would not fit (earlier frames are never read again)."""
        start = first_frame - self.base
        if start + count > len(self.floor):
            for array in (self.mel, self.top, self.bottom, self.floor, self.values):
                array[: len(array) - start] = array[start:]
            self.base, start = first_frame, 0
        return slice(start, start + count)

    def store(self, rows: slice, mel_db: np.ndarray) -> None:
        """Mel-dB rows of new stream frames; without a window's clamp, rows already clamped and their per-frame
        values too (final: under any window's floor, -inf)."""
        if self.keeps_mel:
            self.mel[rows] = mel_db
        if self.window_clamp:
            self.top[rows] = mel_db.max(axis=1)
            self.bottom[rows] = mel_db.min(axis=1)
            self.floor[rows] = np.nan
        else:
            frame_values(mel_db, self.settings, out=self.values[rows])
            self.floor[rows] = -np.inf

    def stale(self, rows: slice, floor: np.float32) -> np.ndarray:
        """The rows whose per-frame values do not hold under ``floor`` (see the module docstring)."""
        formed = self.floor[rows]
        same = (formed == floor) | (self.bottom[rows] >= np.maximum(formed, floor))  # NaN compares False
        return np.flatnonzero(~same) + rows.start


class StreamingFeatures:
    """Turns model-rate mono audio of any block size into feature windows."""

    def __init__(self, settings: FeatureSettings, hop_s: float) -> None:
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
        self._n_inner = self._last_inner + 1 - self._first_inner
        self._tail_start = (self._last_inner + 1) * self._hop - self._half
        self._head = np.zeros(self._half + settings.n_fft, dtype=np.float32)
        self._tail = np.zeros(self._window - self._tail_start + self._half, dtype=np.float32)
        self._n_edges = self._n_frames - self._n_inner
        self._n_heads = self._first_inner if settings.center else 0  # edge frames before the inner ones
        self._head_frames = self._frames(self._head, self._n_heads)
        self._tail_frames = self._frames(self._tail, self._n_edges - self._n_heads)
        self._chunk = self.hop_samples // self._hop  # new frames per FFT call: one hop's worth
        self._work = np.empty((self._chunk + self._n_edges, settings.n_fft))
        self._hann = hann_window(settings.n_fft)
        self._cache = _FrameCache(settings, self._n_frames + SHIFT_HOPS * self._chunk)
        self._capacity = self._window + SHIFT_HOPS * self.hop_samples
        self._index = 0
        self.reset()

    def reset(self, start_sample: int = 0) -> None:
        """Forget buffered audio (a gap in the stream); the next sample is ``start_sample``."""
        self._origin = start_sample
        self._new_buffer()
        self._filled = 0  # buffer index after the last sample pushed
        self._window_start = 0  # samples since reset at which the current window begins
        self._next_frame = 0  # first stream frame (since reset) not yet in the cache
        self._cache.reset()

    def _new_buffer(self) -> None:
        """A fresh audio buffer (windows handed out stay intact) and its STFT frames one hop apart, as a view:
        frame ``k`` starts where a window starting at buffer index ``j`` (a whole number of STFT hops) has its
        frame ``k - j / hop_length + first_inner``."""
        self._buffer = np.empty(self._capacity, dtype=np.float32)  # read only where written
        self._offset = 0  # buffer index of the current window's first sample
        first = -self._half % self._hop
        self._buffer_frames = self._frames(self._buffer[first:], (self._capacity - first - self.settings.n_fft)
                                           // self._hop + 1)

    def continues(self, previous: "StreamingFeatures") -> bool:
        """Whether this stream would cut the same windows as ``previous`` (same features, same hop), so that
        ``previous`` can go on in its place."""
        return (self.settings, self.hop_samples) == (previous.settings, previous.hop_samples)

    @property
    def samples_to_window(self) -> int:
        """Samples still to push before the next window is complete (the loop waits for as much audio)."""
        return self._window - (self._filled - self._offset)

    def push(self, samples: np.ndarray) -> list[Window]:
        """Append audio; return every window it completes, oldest first."""
        samples = np.asarray(samples, dtype=np.float32).reshape(-1)
        windows = []
        while len(samples):
            if self._filled == self._capacity:
                self._shift()
            take = min(len(samples), self._capacity - self._filled)
            self._buffer[self._filled : self._filled + take] = samples[:take]
            self._filled += take
            samples = samples[take:]
            while self._filled - self._offset >= self._window:
                windows.append(self._emit())
                self._offset += self.hop_samples
                self._window_start += self.hop_samples
        return windows

    def _shift(self) -> None:
        """Move the unread audio to the start of a fresh buffer (the old one stays with the windows that use it)."""
        old, start = self._buffer, self._offset
        self._new_buffer()
        self._filled -= start
        self._buffer[: self._filled] = old[start : start + self._filled]

    def _emit(self) -> Window:
        audio = self._buffer[self._offset : self._offset + self._window]
        audio.flags.writeable = False
        first = self._window_start // self._hop  # stream frame centred on the window's first sample
        rows = self._cache.rows(first + self._first_inner - self._n_heads, self._n_frames)
        inner = slice(rows.start + self._n_heads, rows.start + self._n_heads + self._n_inner)
        edges_mel = self._transform(audio, first)
        floor = self._floor(inner, edges_mel)
        if self._cache.window_clamp or self._n_edges:
            values = self._window_values(rows, inner, edges_mel, floor)
        else:  # every frame is the stream's, with final values: formed once, as it was stored
            values = self._cache.values[rows]

        def clamped() -> np.ndarray:
            head, tail = edges_mel[: self._n_heads], edges_mel[self._n_heads :]
            return np.maximum(np.concatenate([head, self._cache.mel[inner], tail]), floor)

        window = Window(self._index, self._origin + self._window_start, audio,
                        summarize_frames(self.settings, clamped, values))
        self._index += 1
        return window

    def _floor(self, inner: slice, edges_mel: np.ndarray) -> np.float32:
        """The window's clamp floor: ``top_db`` below its loudest bin (-inf: rows are final as stored)."""
        top_db = self.settings.top_db
        if top_db is None or not self._cache.window_clamp:
            return np.float32(-np.inf)
        top = max(self._cache.top[inner].max(), edges_mel.max(initial=-np.inf))
        return np.float32(top - np.float32(top_db))

    def _transform(self, audio: np.ndarray, first: int) -> np.ndarray:
        """Cache the mel-dB rows of the frames no earlier window had; return the window's edge frames' rows.

        One FFT call per hop: the new frames and the edge frames go through the same work array."""
        start = max(self._next_frame, first + self._first_inner)
        stop = first + self._last_inner + 1
        lows = list(range(start, stop, self._chunk)) or [stop]
        for low in lows:
            count = min(self._chunk, stop - low)
            windowed = self._work[: count + self._n_edges * (low == lows[-1])]
            frame = self._offset // self._hop + low - first - self._first_inner
            np.multiply(self._buffer_frames[frame : frame + count], self._hann, out=windowed[:count])
            if low == lows[-1] and self._n_edges:
                self._window_edges(audio, windowed[count:])
            mel_db = windowed_mel_db(windowed, self.settings)
            if not self._cache.window_clamp:
                mel_db = clamp_db(mel_db, self.settings)  # each frame's own clamp, or none
            self._cache.store(slice(low - self._cache.base, low - self._cache.base + count), mel_db[:count])
        self._next_frame = max(self._next_frame, stop)
        return mel_db[count:]

    def _frames(self, audio: np.ndarray, count: int) -> np.ndarray:
        """``count`` frames from the start of ``audio``, one STFT hop apart (a strided view)."""
        step = audio.strides[0]
        return np.lib.stride_tricks.as_strided(audio, (count, self.settings.n_fft), (self._hop * step, step),
                                               writeable=False)

    def _window_edges(self, audio: np.ndarray, out: np.ndarray) -> None:
        """Window the frames that reach into the zero padding into ``out``, from the window's two ends only."""
        heads = self._n_heads
        self._head[self._half :] = audio[: self.settings.n_fft]
        self._tail[: self._window - self._tail_start] = audio[self._tail_start :]
        np.multiply(self._head_frames, self._hann, out=out[:heads])
        np.multiply(self._tail_frames, self._hann, out=out[heads:])

    def _window_values(self, rows: slice, inner: slice, edges_mel: np.ndarray, floor: np.float32) -> np.ndarray:
        """The window's per-frame values in frame order, as a slice of the cache: cached rows that still hold
        under ``floor``, the others formed again with the edge frames, in one call; the edge frames' values
        written around the inner rows (see the module docstring)."""
        cache = self._cache
        stale = cache.stale(inner, floor)
        values = frame_values(np.maximum(np.concatenate([cache.mel[stale], edges_mel]), floor), self.settings)
        cache.values[stale] = values[: len(stale)]
        cache.floor[stale] = floor
        edges = values[len(stale) :]
        cache.values[rows.start : inner.start] = edges[: self._n_heads]
        cache.values[inner.stop : rows.stop] = edges[self._n_heads :]
        cache.floor[rows.start : inner.start] = np.nan  # those rows' frames are not inner to any later window
        return cache.values[rows]

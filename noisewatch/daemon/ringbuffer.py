"""Fixed-memory single-producer/single-consumer ring of float32 audio frames.

The producer is the audio callback (PortAudio's thread) or the file-replay thread; the consumer
is the processing loop. Each side owns one counter: the producer only advances ``_written``,
the consumer only advances ``_read``, and a side reads the other's counter once per call (an
int assignment is atomic under the GIL), so no lock is shared and :meth:`RingBuffer.write`
never waits. Two events let the other side sleep instead of polling.

On overflow the incoming block keeps its *newest* frames that fit and the rest are counted in
:attr:`RingBuffer.dropped`; a block longer than the whole ring (the case that breaks the TF Lite
Raspberry Pi example) is handled the same way. File replay at ``--speed 0`` uses
:meth:`RingBuffer.write_wait` instead, which waits for room: backpressure, no drops.
"""

from __future__ import annotations

import threading
import time

import numpy as np


class RingBuffer:
    """``capacity`` frames of ``channels`` float32 samples, allocated once."""

    def __init__(self, capacity: int, channels: int) -> None:
        if capacity < 1 or channels < 1:
            raise ValueError("capacity and channels must be positive")
        self.capacity = int(capacity)
        self.channels = int(channels)
        self._data = np.zeros((self.capacity, self.channels), dtype=np.float32)
        self._out = np.zeros_like(self._data)
        self._written = 0  # frames ever written (producer-owned)
        self._read = 0  # frames ever read (consumer-owned)
        self.dropped = 0
        """Frames discarded because the ring was full (producer-owned)."""
        self._has_data = threading.Event()
        self._has_room = threading.Event()

    @property
    def available(self) -> int:
        """Frames waiting to be read."""
        return self._written - self._read

    # --- producer side -----------------------------------------------------------------------------

    def write(self, block: np.ndarray) -> int:
        """Copy a (frames, channels) block in without ever waiting; returns the frames kept."""
        block = self._as_frames(block)
        room = self.capacity - (self._written - self._read)
        keep = min(len(block), room)
        self.dropped += len(block) - keep
        if keep:
            self._copy_in(block[len(block) - keep :])
        return keep

    def write_wait(self, block: np.ndarray, timeout: float | None = None) -> int:
        """Copy a block in, waiting for room as the consumer reads; returns the frames written.

        Fewer than ``len(block)`` only if ``timeout`` (seconds in total) runs out first.
        """
        block = self._as_frames(block)
        deadline = None if timeout is None else time.monotonic() + timeout
        done = 0
        while done < len(block):
            self._has_room.clear()
            room = self.capacity - (self._written - self._read)
            if room:
                take = min(room, len(block) - done)
                self._copy_in(block[done : done + take])
                done += take
                continue
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                break
            self._has_room.wait(remaining)
        return done

    def _copy_in(self, block: np.ndarray) -> None:
        start = self._written % self.capacity
        first = min(len(block), self.capacity - start)
        self._data[start : start + first] = block[:first]
        self._data[: len(block) - first] = block[first:]
        self._written += len(block)
        self._has_data.set()

    def _as_frames(self, block: np.ndarray) -> np.ndarray:
        block = np.asarray(block, dtype=np.float32)
        if block.ndim == 1 and self.channels == 1:
            block = block[:, None]
        if block.ndim != 2 or block.shape[1] != self.channels:
            raise ValueError(f"expected (frames, {self.channels}) audio, got shape {block.shape}")
        return block

    # --- consumer side -----------------------------------------------------------------------------

    def read(self, frames: int | None = None, timeout: float | None = None) -> np.ndarray:
        """Take ``frames`` frames (None: all available), waiting up to ``timeout`` seconds for them.

        Returns what is there when the wait ends, possibly fewer (or none). The result is a view
        of a buffer that the next ``read`` overwrites: use it or copy it before reading again.
        """
        want = self.capacity if frames is None else min(int(frames), self.capacity)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            self._has_data.clear()
            available = self._written - self._read
            enough = available >= want or (frames is None and available > 0)
            remaining = None if deadline is None else deadline - time.monotonic()
            if enough or (remaining is not None and remaining <= 0):
                return self._copy_out(min(available, want))
            self._has_data.wait(remaining)

    def _copy_out(self, n: int) -> np.ndarray:
        start = self._read % self.capacity
        first = min(n, self.capacity - start)
        out = self._out[:n]
        out[:first] = self._data[start : start + first]
        out[first:] = self._data[: n - first]
        self._read += n
        self._has_room.set()
        return out

"""Fixed-memory audio ring buffer between the audio callback thread and the processing loop.

One producer (the PortAudio callback, or the file reader thread) writes blocks; one consumer
(the processing loop) reads them. Memory is allocated once. When the consumer falls behind,
:meth:`RingBuffer.write` never blocks the producer: it keeps the newest audio and drops the
oldest unread frames, counting them in :attr:`RingBuffer.dropped`. File replay at full speed
uses :meth:`RingBuffer.write_wait` instead, which waits for space so nothing is lost.

Positions are absolute frame counters (written and read since creation); the storage index
is the counter modulo the capacity, so wrap-around is one place in the code.
"""

from __future__ import annotations

import functools
import threading
import time
from dataclasses import dataclass
from datetime import datetime

import numpy as np


@dataclass(frozen=True)
class RingRead:
    """One read: the frames, and what the reader must know about the audio around them."""

    frames: np.ndarray
    """(frames, channels) float32, a new array."""
    lost: int
    """Frames dropped since the previous read: all of them were in front of :attr:`frames`."""
    behind: int
    """Frames still unread after this read (how far the reader is behind the producer)."""


@dataclass(frozen=True)
class AudioBlock:
    """What the processing loop gets from one read of an audio source: samples, what was lost in front of
    them, and when they were captured."""

    samples: np.ndarray
    """(frames, channels) float32 at the source's rate."""
    sample_rate: int
    lost_frames: int
    """Frames the ring buffer dropped just before these."""
    overflows: int
    """Overflows the device reported since the previous read."""
    nonfinite: int
    """NaN or infinite samples found in this block (a broken driver or file); they read as silence."""
    captured: datetime
    """Wall time at which the first of :attr:`samples` was captured."""


class RingBuffer:
    """A bounded (frames, channels) float32 FIFO that overwrites its oldest audio on overflow."""

    def __init__(self, capacity_frames: int, channels: int) -> None:
        if capacity_frames < 1 or channels < 1:
            raise ValueError("capacity_frames and channels must be >= 1")
        self.capacity = int(capacity_frames)
        self.channels = int(channels)
        self.dropped = 0
        """Frames lost to overflow since creation (oldest unread audio, or the head of an oversize block)."""
        self._dropped_at_read = 0
        """:attr:`dropped` as the latest :meth:`read` saw it."""
        self._data = np.zeros((self.capacity, self.channels), dtype=np.float32)
        self._written = 0
        self._read = 0
        self._closed = False
        self._wanted = 1
        """Unread frames the waiting reader asked for: a write wakes it only once they are there."""
        self._writer_waiting = False
        """A ``write_wait`` is waiting for room: the reader takes what there is instead of waiting for more."""
        self._cond = threading.Condition()

    @property
    def available(self) -> int:
        """Frames written and not yet read."""
        with self._cond:
            return self._written - self._read

    def write(self, block: np.ndarray) -> int:
        """Copy ``block`` in without blocking; returns the frames dropped to make room.

        Called from the audio callback thread: it only copies, and wakes the reader once there is as much
        as it asked for. An oversize block keeps its last ``capacity`` frames. Writes after :meth:`close`
        are ignored.
        """
        frames = self._check_block(block)
        with self._cond:
            if self._closed:
                return 0
            if frames > self.capacity:
                block = block[frames - self.capacity:]
            unread = self._written - self._read
            lost = max(0, unread + frames - self.capacity)
            self._read += max(0, unread + len(block) - self.capacity)
            self._store(block)
            self.dropped += lost
            self._wake_reader()
        return lost

    def write_wait(self, block: np.ndarray, timeout: float | None) -> bool:
        """Copy ``block`` in, waiting for the consumer to make room (backpressure, no drops).

        For file replay as fast as possible. A block larger than the capacity goes in
        capacity-sized pieces. Returns False if ``timeout`` expires or the buffer is closed
        first (the pieces already stored stay stored).
        """
        self._check_block(block)
        deadline = None if timeout is None else time.monotonic() + timeout
        for start in range(0, len(block), self.capacity):
            piece = block[start:start + self.capacity]
            with self._cond:
                if not self._wait_for_room(len(piece), deadline):
                    return False
                if self._closed:
                    return False
                self._store(piece)
                self._wake_reader()
        return True

    def read(self, max_frames: int, timeout: float, min_frames: int = 1) -> RingRead:
        """Up to ``max_frames`` of the oldest unread frames, with the frames lost in front of them.

        Waits up to ``timeout`` seconds for ``min_frames`` (at most ``max_frames`` and the capacity), so that a
        microphone's small blocks wake the reader once per several of them, not once each; then returns what
        there is, which may be fewer or none (timeout, or closed and drained).
        """
        with self._cond:
            self._wanted = max(1, min(min_frames, max_frames, self.capacity))
            self._cond.wait_for(self._readable, timeout)
            self._wanted = 1
            frames = min(max_frames, self._written - self._read)
            out = self._copy_out(self._read, frames)
            self._read += frames
            lost = 0
            if frames:  # drops are reported with the first frames that come after them
                lost, self._dropped_at_read = self.dropped - self._dropped_at_read, self.dropped
            self._cond.notify_all()
            return RingRead(out, lost, self._written - self._read)

    def close(self) -> None:
        """Wake every waiting reader and writer; reads then return what is left, then empty."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def _wait_for_room(self, frames: int, deadline: float | None) -> bool:
        """(Lock held) Wait until ``frames`` fit or the ring is closed; False at the deadline. Meanwhile the ring is
        as full as it gets, so a reader waiting for more is woken to take what there is."""
        room = functools.partial(self._closed_or_room_for, frames)
        if room():
            return True
        self._writer_waiting = True
        self._cond.notify_all()
        try:
            return self._cond.wait_for(room, _remaining(deadline))
        finally:
            self._writer_waiting = False

    def _readable(self) -> bool:
        """(Lock held) What ends a reader's wait."""
        unread = self._written - self._read
        return self._closed or unread >= self._wanted or (self._writer_waiting and unread > 0)

    def _wake_reader(self) -> None:
        """Notify (lock held) once the reader's frames are there: earlier it would only wait again."""
        if self._written - self._read >= self._wanted:
            self._cond.notify_all()

    def _check_block(self, block: np.ndarray) -> int:
        if block.ndim != 2 or block.shape[1] != self.channels:
            raise ValueError(f"block shape {block.shape} does not match (frames, {self.channels})")
        return len(block)

    def _space(self) -> int:
        return self.capacity - (self._written - self._read)

    def _closed_or_room_for(self, frames: int) -> bool:
        return self._closed or self._space() >= frames

    def _store(self, block: np.ndarray) -> None:
        """Copy ``block`` (at most capacity frames) at the write position, wrapping once."""
        start = self._written % self.capacity
        first = min(len(block), self.capacity - start)
        self._data[start:start + first] = block[:first]
        self._data[:len(block) - first] = block[first:]
        self._written += len(block)

    def _copy_out(self, position: int, frames: int) -> np.ndarray:
        start = position % self.capacity
        first = min(frames, self.capacity - start)
        if first == frames:  # no wrap: one copy, no concatenation
            return self._data[start:start + frames].copy()
        return np.concatenate((self._data[start:start + first], self._data[:frames - first]))


def _remaining(deadline: float | None) -> float | None:
    """Seconds left until ``deadline`` (monotonic), None for no deadline."""
    return None if deadline is None else max(0.0, deadline - time.monotonic())

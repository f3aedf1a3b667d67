"""Ring buffer: wrap-around, overflow counting, oversize writes, blocking writes, timed reads."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from noisewatch.daemon.ringbuffer import RingBuffer


def ramp(start: int, n: int, channels: int = 1) -> np.ndarray:
    """Frames whose values are their stream positions, so order and gaps are visible."""
    return np.repeat(np.arange(start, start + n, dtype=np.float32)[:, None], channels, axis=1)


def test_wrap_around_keeps_order() -> None:
    ring = RingBuffer(10, 2)
    position = 0
    for size in (7, 3, 6, 4, 9):  # every write after the first crosses the end of the array
        assert ring.write(ramp(position, size, 2)) == size
        out = ring.read(size, timeout=0)
        np.testing.assert_array_equal(out, ramp(position, size, 2))
        position += size
    assert ring.dropped == 0 and ring.available == 0


def test_overflow_keeps_the_newest_frames_of_the_block_and_counts_the_rest() -> None:
    ring = RingBuffer(10, 1)
    ring.write(ramp(0, 6))
    assert ring.write(ramp(6, 8)) == 4  # room for 4: frames 10..13 kept, 6..9 dropped
    assert ring.dropped == 4
    np.testing.assert_array_equal(ring.read(timeout=0)[:, 0], [0, 1, 2, 3, 4, 5, 10, 11, 12, 13])
    assert ring.write(ramp(14, 3)) == 3 and ring.dropped == 4


def test_oversize_write_keeps_the_last_capacity_frames() -> None:
    ring = RingBuffer(8, 1)
    ring.write(ramp(0, 3))
    ring.read(timeout=0)  # the write position is now mid-array
    assert ring.write(ramp(100, 20)) == 8
    assert ring.dropped == 12
    np.testing.assert_array_equal(ring.read(timeout=0)[:, 0], np.arange(112, 120))


def test_write_into_a_full_ring_drops_everything() -> None:
    ring = RingBuffer(4, 1)
    ring.write(ramp(0, 4))
    assert ring.write(ramp(4, 3)) == 0
    assert ring.dropped == 3


def test_mono_vectors_and_shape_checks() -> None:
    ring = RingBuffer(4, 1)
    ring.write(np.arange(3, dtype=np.float32))
    assert ring.read(timeout=0).shape == (3, 1)
    with pytest.raises(ValueError, match="expected"):
        RingBuffer(4, 2).write(np.zeros((3, 1), dtype=np.float32))


def test_read_waits_for_the_frames_asked_for_or_times_out() -> None:
    ring = RingBuffer(16, 1)
    ring.write(ramp(0, 3))
    t0 = time.monotonic()
    out = ring.read(5, timeout=0.2)
    assert 0.15 < time.monotonic() - t0 < 1.0
    assert len(out) == 3  # what was there when the wait ended
    threading.Timer(0.05, ring.write, args=(ramp(3, 5),)).start()
    out = ring.read(5, timeout=2.0)
    np.testing.assert_array_equal(out[:, 0], [3, 4, 5, 6, 7])


def test_write_wait_applies_backpressure_without_drops() -> None:
    ring = RingBuffer(64, 1)
    total = 10_000
    received: list[np.ndarray] = []

    def consume() -> None:
        count = 0
        while count < total:
            block = ring.read(50, timeout=1.0).copy()
            received.append(block)
            count += len(block)

    consumer = threading.Thread(target=consume)
    consumer.start()
    for start in range(0, total, 1000):  # each block is far bigger than the ring
        assert ring.write_wait(ramp(start, 1000), timeout=5.0) == 1000
    consumer.join(timeout=10)
    np.testing.assert_array_equal(np.concatenate(received)[:, 0], np.arange(total))
    assert ring.dropped == 0


def test_write_wait_gives_up_at_its_timeout() -> None:
    ring = RingBuffer(4, 1)
    t0 = time.monotonic()
    assert ring.write_wait(ramp(0, 10), timeout=0.1) == 4
    assert time.monotonic() - t0 < 1.0
    assert ring.dropped == 0

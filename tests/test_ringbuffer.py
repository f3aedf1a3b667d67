"""Ring buffer: wrap-around, overflow (newest kept, drops counted exactly), oversize writes,
backpressure with a real consumer thread, timed reads and close semantics."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from noisewatch.daemon.ringbuffer import RingBuffer


def ramp(start: int, n: int, channels: int = 1) -> np.ndarray:
    """Frames whose values are their stream positions, so order and gaps are visible."""
    return np.repeat(np.arange(start, start + n, dtype=np.float32)[:, None], channels, axis=1)


def test_wrap_around_keeps_order_across_the_end_of_the_array() -> None:
    ring = RingBuffer(10, 2)
    position = 0
    for size in (7, 3, 6, 4, 9, 10):  # writes start mid-array and cross its end
        assert ring.write(ramp(position, size, 2)) == 0
        np.testing.assert_array_equal(ring.read(size, timeout=0).frames, ramp(position, size, 2))
        position += size
    assert ring.dropped == 0 and ring.available == 0


def test_overflow_keeps_the_newest_audio_and_counts_the_oldest_dropped() -> None:
    ring = RingBuffer(10, 1)
    ring.write(ramp(0, 6))
    assert ring.write(ramp(6, 8)) == 4  # 14 frames for 10 slots: frames 0..3 are lost
    assert ring.dropped == 4 and ring.available == 10
    np.testing.assert_array_equal(ring.read(100, timeout=0).frames[:, 0], np.arange(4, 14))
    assert ring.write(ramp(14, 3)) == 0 and ring.dropped == 4


def test_a_read_tells_how_much_audio_was_lost_in_front_of_it() -> None:
    ring = RingBuffer(10, 1)
    ring.write(ramp(0, 6))
    assert ring.read(6, timeout=0).lost == 0
    ring.write(ramp(6, 8))
    ring.write(ramp(14, 6))  # 14 unread frames for 10 slots: frames 6..9 are lost
    assert ring.dropped == 4
    block = ring.read(3, timeout=0)
    assert block.frames[0, 0] == 10 and block.lost == 4 and block.behind == 7
    assert ring.read(3, timeout=0).lost == 0  # reported once, with the first frames after the gap


def test_drops_accumulate_exactly_over_many_overflows() -> None:
    ring = RingBuffer(5, 1)
    for start in range(0, 30, 3):  # 30 frames, nobody reads: 25 must be dropped
        ring.write(ramp(start, 3))
    assert ring.dropped == 25
    np.testing.assert_array_equal(ring.read(5, timeout=0).frames[:, 0], np.arange(25, 30))


def test_oversize_write_keeps_its_last_capacity_frames() -> None:
    ring = RingBuffer(8, 1)
    ring.write(ramp(0, 3))
    ring.read(2, timeout=0)  # positions now mid-array; frame 2 still unread
    assert ring.write(ramp(100, 20)) == 13  # 1 unread + the 12 oldest frames of the block
    assert ring.dropped == 13
    np.testing.assert_array_equal(ring.read(8, timeout=0).frames[:, 0], np.arange(112, 120))


def test_read_returns_a_copy_limited_to_max_frames() -> None:
    ring = RingBuffer(8, 1)
    ring.write(ramp(0, 6))
    first = ring.read(4, timeout=0).frames
    ring.write(ramp(6, 6))  # overwrites the slots `first` came from
    np.testing.assert_array_equal(first[:, 0], [0, 1, 2, 3])
    assert first.dtype == np.float32 and ring.available == 8


def test_shape_mismatch_is_rejected() -> None:
    with pytest.raises(ValueError, match="does not match"):
        RingBuffer(4, 2).write(np.zeros((3, 1), dtype=np.float32))


def test_read_waits_for_a_frame_or_times_out_empty() -> None:
    ring = RingBuffer(16, 1)
    t0 = time.monotonic()
    assert ring.read(5, timeout=0.2).frames.shape == (0, 1)
    assert 0.15 < time.monotonic() - t0 < 1.0
    threading.Timer(0.05, ring.write, args=(ramp(0, 3),)).start()
    t0 = time.monotonic()
    np.testing.assert_array_equal(ring.read(5, timeout=2.0).frames[:, 0], [0, 1, 2])
    assert time.monotonic() - t0 < 1.0


def test_a_reader_waiting_for_several_blocks_is_not_woken_by_each() -> None:
    ring = RingBuffer(64, 1)
    wakes = []
    wait = ring._cond.wait  # counted: wait_for would hide a wake-up that finds too little and waits again

    def counted_wait(timeout: float | None = None) -> bool:
        wakes.append(timeout)
        return wait(timeout)

    ring._cond.wait = counted_wait  # type: ignore[method-assign]

    def produce() -> None:
        deadline = time.monotonic() + 5
        while not wakes and time.monotonic() < deadline:  # the reader waits first (a late one found 30 frames there)
            time.sleep(0.005)
        for start in range(0, 50, 10):
            time.sleep(0.05)
            ring.write(ramp(start, 10))

    producer = threading.Thread(target=produce)
    producer.start()
    frames = ring.read(100, timeout=5.0, min_frames=30).frames[:, 0]
    producer.join()
    assert 30 <= len(frames) <= 50  # the first two blocks did not end the wait...
    assert len(wakes) == 1  # ...nor wake the reader
    np.testing.assert_array_equal(frames, np.arange(len(frames)))


def test_a_read_for_more_than_arrives_returns_what_there_is_at_its_timeout() -> None:
    ring = RingBuffer(64, 1)
    ring.write(ramp(0, 10))
    t0 = time.monotonic()
    np.testing.assert_array_equal(ring.read(100, timeout=0.2, min_frames=50).frames[:, 0], np.arange(10))
    assert 0.15 < time.monotonic() - t0 < 1.0


def test_a_read_for_more_than_the_ring_holds_returns_once_it_is_full() -> None:
    ring = RingBuffer(16, 1)  # waiting for more would only drop audio
    ring.write(ramp(0, 16))
    t0 = time.monotonic()
    assert len(ring.read(100, timeout=5.0, min_frames=1000).frames) == 16
    assert time.monotonic() - t0 < 1.0


@pytest.mark.parametrize("writer_first", [False, True])
def test_a_writer_waiting_for_room_and_a_reader_waiting_for_more_never_wait_on_each_other(writer_first: bool) -> None:
    ring = RingBuffer(100, 1)  # two 60-frame blocks never fit: the reader must not wait for 100 in vain
    writer = threading.Thread(target=lambda: [ring.write_wait(ramp(start, 60), timeout=5.0) for start in (0, 60)])
    writer.start()
    if writer_first:  # the writer is already waiting for room when the reader comes
        deadline = time.monotonic() + 5.0
        while not ring._writer_waiting and time.monotonic() < deadline:
            time.sleep(0.001)
        assert ring._writer_waiting
    t0 = time.monotonic()
    frames = ring.read(100, timeout=5.0, min_frames=100).frames[:, 0]
    assert time.monotonic() - t0 < 2.0
    np.testing.assert_array_equal(frames, np.arange(60))
    writer.join()
    np.testing.assert_array_equal(ring.read(100, timeout=1.0).frames[:, 0], np.arange(60, 120))


def test_write_wait_applies_backpressure_without_drops() -> None:
    ring = RingBuffer(64, 1)
    total = 20_000
    received: list[np.ndarray] = []

    def consume() -> None:
        count = 0
        while count < total:
            block = ring.read(50, timeout=1.0).frames
            received.append(block)
            count += len(block)

    consumer = threading.Thread(target=consume)
    consumer.start()
    for start in range(0, total, 1000):  # every block is bigger than the ring
        assert ring.write_wait(ramp(start, 1000), timeout=5.0)
    consumer.join(timeout=10)
    np.testing.assert_array_equal(np.concatenate(received)[:, 0], np.arange(total))
    assert ring.dropped == 0


def test_write_wait_gives_up_at_its_timeout() -> None:
    ring = RingBuffer(4, 1)
    ring.write(ramp(0, 4))
    t0 = time.monotonic()
    assert ring.write_wait(ramp(4, 2), timeout=0.1) is False
    assert 0.05 < time.monotonic() - t0 < 1.0
    assert ring.dropped == 0
    np.testing.assert_array_equal(ring.read(4, timeout=0).frames[:, 0], [0, 1, 2, 3])


def test_close_wakes_a_waiting_writer_and_reader() -> None:
    full = RingBuffer(4, 1)
    full.write(ramp(0, 4))
    empty = RingBuffer(4, 1)
    threading.Timer(0.05, full.close).start()
    threading.Timer(0.05, empty.close).start()
    t0 = time.monotonic()
    assert full.write_wait(ramp(4, 2), timeout=None) is False
    assert empty.read(4, timeout=10.0).frames.shape == (0, 1)
    assert time.monotonic() - t0 < 1.0


def test_after_close_reads_drain_what_is_left_then_return_empty_at_once() -> None:
    ring = RingBuffer(8, 1)
    ring.write(ramp(0, 5))
    ring.close()
    assert ring.write(ramp(5, 2)) == 0  # ignored: nobody will read it
    np.testing.assert_array_equal(ring.read(3, timeout=1.0).frames[:, 0], [0, 1, 2])
    np.testing.assert_array_equal(ring.read(8, timeout=1.0).frames[:, 0], [3, 4])
    t0 = time.monotonic()
    assert len(ring.read(8, timeout=5.0).frames) == 0
    assert time.monotonic() - t0 < 0.5

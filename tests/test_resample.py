"""Mono resampling: 48 kHz stereo and 44.1 kHz recordings replayed through FileSource, the ring
and MonoResampler equal soxr's one-shot resampling of the whole signal; block size does not
change a single sample; equal rates pass through; reset starts a fresh stream. What the loop waits
for before it reads (``input_for``) never delays a window past the block that completes it."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr

from noisewatch.daemon.resample import QUALITY, MonoResampler
from noisewatch.daemon.service import READ_FRAMES as LOOP_READ_FRAMES
from noisewatch.daemon.sources import FileSource
from noisewatch.daemon.stream import StreamingFeatures
from noisewatch.features import FeatureSettings

SCENE = Path(__file__).resolve().parent.parent / "samples" / "scene.flac"
MODEL_RATE = 22050
READ_FRAMES = 2048


@pytest.fixture(scope="module")
def scene() -> np.ndarray:
    """The demo scene's first 12 s (siren and quiet), 22050 Hz mono."""
    audio, _ = sf.read(str(SCENE), dtype="float32", frames=12 * MODEL_RATE)
    return audio


def capture_variant(tmp_path: Path, scene: np.ndarray, rate: int, channels: int) -> tuple[Path, np.ndarray]:
    """The scene as a device would record it: at ``rate``, on ``channels`` unequal channels."""
    upsampled = soxr.resample(scene, MODEL_RATE, rate, quality=QUALITY)
    gains = np.linspace(1.2, 0.8, channels, dtype=np.float32) if channels > 1 else np.ones(1, np.float32)
    audio = (upsampled[:, None] * gains).astype(np.float32)
    path = tmp_path / f"scene_{rate}_{channels}ch.wav"
    sf.write(str(path), audio, rate, subtype="FLOAT")
    return path, audio


def stream_through(resampler: MonoResampler, audio: np.ndarray, block: int) -> np.ndarray:
    parts = [resampler.process(audio[i : i + block]) for i in range(0, len(audio), block)]
    return np.concatenate([*parts, resampler.flush()])


@pytest.mark.parametrize(("rate", "channels"), [(48000, 2), (44100, 1)])
def test_replayed_capture_matches_one_shot_resampling(tmp_path: Path, scene: np.ndarray, rate: int, channels: int) -> None:
    path, audio = capture_variant(tmp_path, scene, rate, channels)
    source = FileSource(path, speed=0, block_size=1024, buffer_s=1.0)
    resampler = MonoResampler(source.sample_rate, MODEL_RATE, source.channels)
    parts = []
    with source:
        deadline = time.monotonic() + 30
        while not (source.finished and source.ring.available == 0) and time.monotonic() < deadline:
            parts.append(resampler.process(source.ring.read(READ_FRAMES, timeout=0.2).frames))
    out = np.concatenate([*parts, resampler.flush()])
    expected = soxr.resample(audio.mean(axis=1), rate, MODEL_RATE, quality=QUALITY)
    assert out.dtype == np.float32 and out.shape == expected.shape == (len(scene),)
    np.testing.assert_allclose(out, expected, atol=1e-6)
    # and the round trip lands back on the scene (away from the filter's start-up at the edges)
    assert np.corrcoef(out[MODEL_RATE:-MODEL_RATE], scene[MODEL_RATE:-MODEL_RATE])[0, 1] > 0.99


def test_block_size_does_not_change_the_output(tmp_path: Path, scene: np.ndarray) -> None:
    _, audio = capture_variant(tmp_path, scene, 48000, 2)
    outputs = [stream_through(MonoResampler(48000, MODEL_RATE, 2), audio, block) for block in (256, 1024, 4000)]
    np.testing.assert_array_equal(outputs[0], outputs[1])
    np.testing.assert_array_equal(outputs[0], outputs[2])


def test_equal_rates_pass_the_downmix_through(scene: np.ndarray) -> None:
    stereo = np.stack([scene, -scene * 0.5], axis=1)
    resampler = MonoResampler(MODEL_RATE, MODEL_RATE, 2)
    out = stream_through(resampler, stereo, 1000)
    np.testing.assert_allclose(out, scene * 0.25, atol=1e-7)
    assert len(resampler.flush()) == 0


def test_wrong_channel_count_is_rejected() -> None:
    with pytest.raises(ValueError, match="does not match"):
        MonoResampler(48000, MODEL_RATE, 2).process(np.zeros((10, 1), dtype=np.float32))


@pytest.mark.parametrize("rate", [8000, 16000, 22050, 44100, 48000, 96000])
def test_input_for_never_asks_for_more_than_the_samples_need(rate: int) -> None:
    rng = np.random.default_rng(rate)
    audio = (0.1 * rng.standard_normal((rate * 3, 1))).astype(np.float32)
    resampler = MonoResampler(rate, MODEL_RATE, 1)
    edges = np.cumsum(rng.integers(1, 3000, size=40))
    for count, position in enumerate(edges):
        resampler.process(audio[edges[count - 1] if count else 0 : position])
        want = int(rng.integers(1, 5000))
        frames = resampler.input_for(want)
        if frames > 1:  # one frame fewer than asked, after the same blocks, gives fewer samples: not too big
            twin = MonoResampler(rate, MODEL_RATE, 1)
            for start, stop in zip([0, *edges[:count]], edges[: count + 1]):
                twin.process(audio[start:stop])
            assert len(twin.process(audio[position : position + frames - 1])) < want


@pytest.mark.parametrize("rate", [8000, 16000, 44100, 48000, 192000])
def test_waiting_for_a_windows_input_delays_no_window(rate: int) -> None:
    """The loop's read rule against a read per 1024-frame block (no clock needed: which block completes each
    window). A read ends once the frames it asked for are in (or at its timeout, which only ends reads
    earlier, so it is left out here)."""
    settings = FeatureSettings()
    audio = (0.1 * np.random.default_rng(1).standard_normal((rate * 9, 1))).astype(np.float32)
    blocks = [audio[i : i + 1024] for i in range(0, len(audio) - 1023, 1024)]

    def completed_at(wait_for_window: bool) -> list[int]:
        resampler, stream = MonoResampler(rate, MODEL_RATE, 1), StreamingFeatures(settings, 0.5)
        done: list[int] = []
        unread: list[np.ndarray] = []
        for index, block in enumerate(blocks):
            unread.append(block)
            pending = np.concatenate(unread)
            while len(pending):
                wanted = max(1, min(resampler.input_for(stream.samples_to_window), LOOP_READ_FRAMES)) if wait_for_window else 1
                if len(pending) < wanted:
                    break
                take, pending = pending[:LOOP_READ_FRAMES], pending[LOOP_READ_FRAMES:]
                done += [index] * len(stream.push(resampler.process(take)))
            unread = [pending]
        return done

    per_block = completed_at(False)
    assert len(per_block) >= 9
    assert completed_at(True) == per_block

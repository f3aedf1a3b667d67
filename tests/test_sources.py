"""Audio sources: the shared callback, file replay (order, pacing, backpressure, stop), and a
real PortAudio device: an ALSA virtual microphone (a ``file`` PCM reading a raw float32 ramp,
defined in a temporary ~/.asoundrc) opened through MicrophoneSource in a subprocess, because
PortAudio reads the ALSA configuration once, when it initialises."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from noisewatch.config import AudioSection
from noisewatch.daemon.sources import (
    FILE_RING_MAX_BYTES,
    FILE_STATUS,
    AudioSource,
    FileSource,
    SourceError,
    open_source,
)
from noisewatch.recording_checks import ogg_ends_its_stream

SCENE = Path(__file__).resolve().parent.parent / "samples" / "scene.flac"
RAMP_FRAMES = 200_000
"""Length of the raw float32 ramp the virtual microphone plays: sample i is i / RAMP_FRAMES."""


def short_wav(tmp_path: Path, seconds: float, rate: int = 22050, channels: int = 1) -> Path:
    """The scene's first ``seconds`` as a WAV file (duplicated across channels)."""
    audio, _ = sf.read(str(SCENE), dtype="float32", frames=int(seconds * 22050))
    path = tmp_path / f"short_{seconds}s.wav"
    sf.write(str(path), np.repeat(audio[:, None], channels, axis=1), rate, subtype="FLOAT")
    return path


def drain(source: AudioSource, timeout_s: float = 30.0) -> np.ndarray:
    """What the processing loop does: read until the source is finished and the ring is empty."""
    blocks = []
    deadline = time.monotonic() + timeout_s
    while not (source.finished and source.ring.available == 0) and time.monotonic() < deadline:
        blocks.append(source.ring.read(777, timeout=0.2).frames)
    return np.concatenate(blocks)


def test_callback_counts_overflow_statuses_and_copies_blocks() -> None:
    sd = pytest.importorskip("sounddevice", reason="PortAudio is not installed here")
    source = FileSource(SCENE, speed=0, block_size=512, buffer_s=1.0)
    overflow = sd.CallbackFlags()
    overflow.input_overflow = True
    block = np.linspace(-1, 1, 256, dtype=np.float32)[:, None]
    source.callback(block, len(block), None, overflow)
    source.callback(block, len(block), None, sd.CallbackFlags())
    source.callback(block, len(block), None, FILE_STATUS)
    block[:] = 0  # PortAudio reuses its buffer: the ring must have copied
    assert source.overflows == 1
    out = source.ring.read(1000, timeout=0).frames
    np.testing.assert_array_equal(out, np.tile(np.linspace(-1, 1, 256, dtype=np.float32), 3)[:, None])


def test_an_overflow_is_reported_with_the_frames_after_it_not_swallowed_by_an_empty_read() -> None:
    """The processing loop reads no frames once a minute to check its clock: that read took the overflow
    count with it, and input_overflows never heard of it."""
    sd = pytest.importorskip("sounddevice", reason="PortAudio is not installed here")
    source = FileSource(SCENE, speed=0, block_size=512, buffer_s=1.0)
    overflow = sd.CallbackFlags()
    overflow.input_overflow = True
    source.callback(np.zeros((256, 1), np.float32), 256, None, overflow)
    assert source.read(0, 0).overflows == 0
    assert source.read(1000, 0).overflows == 1
    assert source.read(1000, 0).overflows == 0


def test_speed_0_delivers_every_sample_in_order_with_backpressure() -> None:
    reference, rate = sf.read(str(SCENE), dtype="float32", always_2d=True)
    source = open_source(AudioSection(block_size=1000, buffer_s=1.0), str(SCENE), speed=0)
    assert (source.sample_rate, source.channels, source.name) == (rate, 1, "scene.flac")
    with source:
        out = drain(source)
    np.testing.assert_array_equal(out, reference)  # 33 s through a 1 s ring: nothing dropped
    assert source.ring.dropped == 0 and source.overflows == 0 and source.failed is None


def test_16_bit_samples_replay_as_libsndfile_scales_them(tmp_path: Path) -> None:
    pcm = np.concatenate(([-32768, -1, 0, 1, 32767], np.random.default_rng(0).integers(-32768, 32768, 20000)))
    path = tmp_path / "pcm16.wav"
    sf.write(str(path), np.stack((pcm, -pcm - 1), axis=1).astype(np.int16), 48000, subtype="PCM_16")
    reference, _ = sf.read(str(path), dtype="float32", always_2d=True)
    with FileSource(path, speed=0, block_size=1024, buffer_s=1.0) as source:
        source.start()
        np.testing.assert_array_equal(drain(source), reference)


def test_speed_4_takes_a_quarter_of_the_duration(tmp_path: Path) -> None:
    path = short_wav(tmp_path, 4.0, rate=44100, channels=2)  # 2 s at 44.1 kHz
    source = FileSource(path, speed=4, block_size=1024, buffer_s=5.0)
    t0 = time.monotonic()
    with source:
        out = drain(source)
    elapsed = time.monotonic() - t0
    assert out.shape == (88200, 2)
    assert 0.45 < elapsed < 1.9  # 0.5 s expected; paced by the sample clock, so never faster; slack for a busy CI box (real time would be 2 s)


def test_speed_1_paces_in_real_time(tmp_path: Path) -> None:
    source = FileSource(short_wav(tmp_path, 1.5), speed=1, block_size=1024, buffer_s=5.0)
    t0 = time.monotonic()
    with source:
        first = source.ring.read(100_000, timeout=1.0).frames
        early = time.monotonic() - t0
        out = np.concatenate([first, drain(source)])
    assert len(first) < 22050 * 0.5 and early < 0.5  # the file is not dumped at once
    assert len(out) == int(1.5 * 22050) and 1.3 < time.monotonic() - t0 < 2.5


def test_stop_releases_a_reader_thread_blocked_on_a_full_ring() -> None:
    source = FileSource(SCENE, speed=0, block_size=4096, buffer_s=1.0)
    source.start()
    time.sleep(0.2)  # the ring is full and nobody reads
    t0 = time.monotonic()
    source.stop()
    source.stop()
    assert time.monotonic() - t0 < 1.0
    assert not source.finished and source.ring.dropped == 0


def test_unreadable_files_and_bad_speeds_are_one_line_errors(tmp_path: Path) -> None:
    bogus = tmp_path / "notes.wav"
    bogus.write_text("not audio")
    for path, speed in ((bogus, 1.0), (tmp_path / "missing.flac", 1.0), (SCENE, -1.0), (SCENE, float("nan")),
                        (SCENE, float("inf"))):
        with pytest.raises(SourceError) as err:
            FileSource(path, speed=speed, block_size=1024, buffer_s=1.0)
        assert "\n" not in str(err.value)



def test_a_file_of_many_channels_gets_a_bounded_ring_and_replays(tmp_path: Path) -> None:
    """Found by fault injection: a valid 2 MB WAV of 1024 channels at 192 kHz made ``run --input`` ask for a 7.3 GiB
    ring (its 10 s of buffer at the file's rate and channels, which a microphone's config bounds and a file's nothing
    did): on a machine that cannot give it (here an address space of 2 GB, as on a Pi), a MemoryError traceback and
    exit 1."""
    wide = tmp_path / "wide.wav"
    sf.write(str(wide), np.full((4000, 1024), 100, np.int16), 192000, subtype="PCM_16")
    for speed in (1.0, 0.0):
        source = FileSource(wide, speed=speed, block_size=1024, buffer_s=10.0)
        assert source.ring.capacity * source.channels * 4 <= FILE_RING_MAX_BYTES, source.ring.capacity
    limit = 2 * 2**30
    done = subprocess.run([sys.executable, "-m", "noisewatch.cli", "run", "--input", str(wide), "--speed", "1",
                           "--jsonl", str(tmp_path / "out.jsonl")], capture_output=True, text=True, timeout=60,
                          preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_AS, (limit, limit)))
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert '"state":"listening"' in (tmp_path / "out.jsonl").read_text()


# --- a real PortAudio device -----------------------------------------------------------------

ASOUNDRC = """
pcm.vmic {{
  type file
  slave.pcm "null"
  file "/dev/null"
  infile "{infile}"
  format "raw"
}}
pcm.!default {{
  type plug
  slave.pcm "vmic"
}}
"""

PROBE = """
import json, sys, time
import numpy as np
from noisewatch.config import AudioSection
from noisewatch.daemon.sources import MicrophoneSource, SourceError, check_device, list_devices_main
report = {}
try:
    source = MicrophoneSource("VMIC", 44100, 1, 1024, 1.0)
    source.start()
except SourceError as exc:
    print(json.dumps({"skip": str(exc)})); sys.exit(0)
blocks, t0 = [], time.monotonic()
while time.monotonic() - t0 < 0.5:
    blocks.append(source.ring.read(4096, 0.2).frames[:, 0])
report["samples"] = np.concatenate(blocks).tolist()[:50000]
report["name"], report["rate"] = source.name, source.sample_rate
report["failed_while_running"] = source.failed
source._stream.abort()  # the device dies under the source: PortAudio calls finished_callback
time.sleep(0.2)
report["failed_after_abort"] = source.failed
source.stop(); source.stop()
again = MicrophoneSource("vmic", 44100, 1, 1024, 1.0)  # what the service does after a failure
with again:
    report["reopened_frames"] = len(again.ring.read(4096, 2.0).frames)
    report["reopened_failed"] = again.failed
for device in ("no such mic", 99):
    try:
        check_device(AudioSection(device=device))
    except SourceError as exc:
        report.setdefault("missing", []).append(str(exc))
check_device(AudioSection())
report["devices_exit"] = list_devices_main(None)
print(json.dumps(report))
"""


@pytest.fixture(scope="module")
def virtual_mic(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Run PROBE against an ALSA virtual microphone; its JSON report plus the devices listing."""
    pytest.importorskip("sounddevice", reason="PortAudio is not installed here")
    home = tmp_path_factory.mktemp("alsa_home")
    infile = home / "mic.raw"
    (np.arange(RAMP_FRAMES, dtype=np.float32) / RAMP_FRAMES).tofile(infile)
    (home / ".asoundrc").write_text(ASOUNDRC.format(infile=infile))
    env = {**os.environ, "HOME": str(home)}
    env.pop("ALSA_CONFIG_PATH", None)
    run = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr[-2000:]
    report = json.loads(run.stdout.strip().splitlines()[-1])
    if "skip" in report:
        pytest.skip(f"PortAudio cannot open the ALSA virtual microphone here: {report['skip']}")
    report["listing"] = run.stdout
    return report


def test_real_samples_arrive_from_a_portaudio_device(virtual_mic: dict) -> None:
    samples = np.asarray(virtual_mic["samples"], dtype=np.float32)
    ramp = np.arange(RAMP_FRAMES, dtype=np.float32) / RAMP_FRAMES
    assert virtual_mic["name"] == "0: vmic" and virtual_mic["rate"] == 44100
    assert len(samples) > 10_000
    assert np.isin(samples, ramp).all()  # every sample is one the device played
    steps = np.diff(np.round(samples * RAMP_FRAMES))
    assert (steps == 1).mean() > 0.9  # in order (gaps only where the ring overflowed)
    assert virtual_mic["failed_while_running"] is None


def test_a_stream_that_dies_reports_failed_and_a_new_source_recovers(virtual_mic: dict) -> None:
    assert virtual_mic["failed_after_abort"] == "the audio stream stopped unexpectedly"
    assert virtual_mic["reopened_frames"] > 0 and virtual_mic["reopened_failed"] is None


def test_missing_devices_are_named_with_the_available_inputs(virtual_mic: dict) -> None:
    by_name, by_index = virtual_mic["missing"]
    assert by_name == "audio input device 'no such mic' not found; available inputs: 0: vmic, 1: default"
    assert by_index.startswith("audio input device 99 not found; available inputs: 0: vmic")


def test_devices_listing_marks_the_default(virtual_mic: dict) -> None:
    assert virtual_mic["devices_exit"] == 0
    lines = virtual_mic["listing"].splitlines()
    assert any(line.startswith("*") and "default" in line and "44100 Hz" in line for line in lines)
    assert any(line.startswith(" ") and "vmic" in line for line in lines)


def test_the_sounddevice_calls_behind_device_rescans_exist() -> None:
    """Rescans (a USB microphone plugged back in) rely on sounddevice's private re-initialisation."""
    sounddevice = pytest.importorskip("sounddevice")
    assert callable(sounddevice._terminate) and callable(sounddevice._initialize)


def test_a_recording_cut_short_while_it_is_replayed_fails_rather_than_repeating_its_last_block(tmp_path: Path) -> None:
    """Found by fault injection: a WAV truncated during its replay gave a 263 s car horn and exit 0; soundfile's
    ``blocks()`` went on to the header's length, yielding its last buffer again and again."""
    path = tmp_path / "shrinking.wav"
    rate = 22050
    sf.write(str(path), (np.random.default_rng(0).standard_normal(20 * rate) * 0.1).astype(np.float32), rate,
             subtype="PCM_16")
    source = FileSource(path, 0, 1024, 10.0)
    got: list[np.ndarray] = []

    def received(block: np.ndarray, frames: int, time_info: object, status: object) -> None:
        got.append(block.copy())
        if len(got) == 1:
            os.truncate(path, 44 + 2 * 5 * rate)  # 5 s of the 20 left, while it is read

    source.callback = received  # type: ignore[method-assign]
    source._replay()
    assert source.failed is not None and "cut short while replayed" in source.failed
    audio = np.concatenate(got)[:, 0]
    assert len(audio) <= 5 * rate
    assert not any(np.array_equal(a, b) for a, b in zip(got[-3:], got[-2:]))  # no block repeated


def test_an_ogg_file_ends_its_stream_only_when_whole(tmp_path: Path) -> None:
    """libsndfile reports a cut-short Ogg file's length as the file's own: its last page is the only witness.
    Every cut, on a page boundary or inside a page, is told apart from the whole file."""
    rate = 22050
    whole = tmp_path / "whole.ogg"
    sf.write(str(whole), (np.random.default_rng(1).standard_normal(10 * rate) * 0.1).astype(np.float32), rate,
             format="OGG", subtype="VORBIS")
    data = whole.read_bytes()
    assert ogg_ends_its_stream(whole)
    tagged = tmp_path / "tagged.ogg"
    tagged.write_bytes(data + b"TAG" + bytes(125))  # an ID3v1 tag after the last page: whole all the same
    assert ogg_ends_its_stream(tagged)
    cut = tmp_path / "cut.ogg"
    page_ends = [start for start in range(1, len(data)) if data.startswith(b"OggS", start)]
    for size in page_ends + list(range(200, len(data), 1013)):
        cut.write_bytes(data[:size])
        assert not ogg_ends_its_stream(cut), size

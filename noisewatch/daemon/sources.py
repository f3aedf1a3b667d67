"""Audio inputs: a microphone (PortAudio via sounddevice) or a recording replayed as if live.

Both fill a :class:`~noisewatch.daemon.ringbuffer.RingBuffer` through one callback,
:meth:`AudioSource.callback`, which only counts overflow statuses and copies the block in: the
microphone's PortAudio thread calls it, and so does the file source's reader thread, so a
replayed file takes exactly the microphone's path. Samples stay at the input's native rate and
channel count; downmixing and resampling happen in the processing loop
(:mod:`noisewatch.daemon.resample`).

sounddevice is imported inside functions only, so a machine without PortAudio can still
replay files. Errors a user can fix (device missing, PortAudio absent, unreadable file) are a
:class:`SourceError` with a one-line message. A device that dies while running is reported
through :attr:`AudioSource.failed`; the service then stops the source and reopens it.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import ModuleType, TracebackType
from typing import Any

import numpy as np
import soundfile as sf

from noisewatch.audio_file import AudioFile, length_known, open_audio
from noisewatch.config import AudioSection
from noisewatch.daemon.ringbuffer import AudioBlock, RingBuffer
from noisewatch.recording_checks import finite_samples, warn_if_cut_short

log = logging.getLogger(__name__)

MAX_DEFAULT_CHANNELS = 2
"""Channels captured when the config says null: ALSA plug devices report up to 128, all downmixed anyway."""
JOIN_TIMEOUT_S = 2.0
"""How long stop() waits for the file reader thread."""
SAMPLE_DTYPE = "float32"
PCM16_SCALE = np.float32(1.0 / 0x8000)
"""16-bit sample -> float, as libsndfile scales it (a power of two: exact)."""
UNPACED_BLOCK_FRAMES = 8192
"""Smallest block a replay at speed 0 reads: nothing paces it, and every block costs the reader a Python round
trip (the processing loop wakes once the next window's audio is there)."""
FILE_RING_MAX_BYTES = 64 * 2**20
"""Largest ring a replayed file gets, but for two of its blocks, which any ring holds (8 channels at 192 kHz keep
their 10 s): a file's rate and channels are its own, bounded by nothing as a microphone's config bounds them, and a
valid 2 MB WAV of 1024 channels at 192 kHz asked for 7.3 GiB for its 10 s, which a Pi refuses (a MemoryError
traceback)."""
UNPACED_BUFFER_S = 1.0
"""Longest ring of a replay at speed 0: its reader waits for room instead of dropping, so audio read further
ahead is memory for nothing (the configured 10 s at 48 kHz, for a microphone's stalls, is 1.8 MiB)."""


class SourceError(RuntimeError):
    """An audio input cannot be opened or read; ``str()`` is one line for the user."""


class DeviceMissing(SourceError):
    """No input matches the device asked for, now: a USB microphone may enumerate later, so not proof of a typo."""


@dataclass(frozen=True)
class _FileStatus:
    """What a file block reports in place of PortAudio's CallbackFlags: never an overflow."""

    input_overflow: bool = False


FILE_STATUS = _FileStatus()


class AudioSource:
    """The common shell of every input: its ring buffer, the shared callback and the status flags."""

    def __init__(self, name: str, sample_rate: int, channels: int, buffer_s: float, block_frames: int,
                 block_interval_s: float) -> None:
        self.name = name
        self.sample_rate = int(sample_rate)
        self.channels = int(channels)
        # two blocks at least: a block longer than the ring kept only its tail, and most audio was dropped unheard
        self.ring = RingBuffer(max(1, int(round(buffer_s * self.sample_rate)), 2 * block_frames), self.channels)
        self.block_interval_s = block_interval_s
        """Wall-clock seconds between blocks as they arrive (0: as fast as they are taken)."""
        self.overflows = 0
        """PortAudio input_overflow statuses seen by the callback (ring.dropped counts separately)."""
        self._overflows_read = 0
        self._failed: str | None = None
        self._store: Callable[[np.ndarray], object] = self.ring.write
        """How the callback hands a block over: ring.write (drop the oldest when full) for a live input."""

    def callback(self, indata: np.ndarray, frames: int, time_info: Any, status: Any) -> None:
        """Audio thread (PortAudio's, or the file reader's): count overflows, copy the block in. Nothing else."""
        if status.input_overflow:
            self.overflows += 1
        self._store(indata)

    def read(self, max_frames: int, timeout: float, min_frames: int = 1) -> AudioBlock:
        """Processing loop: the next frames from the ring (maybe none; waiting for ``min_frames`` at most
        ``timeout``), with what was lost in front of them and when they were captured: now, less what is
        still unread, less the frames themselves."""
        ring_read = self.ring.read(max_frames, timeout, min_frames)
        overflows = 0
        if len(ring_read.frames):  # like the ring's drops, with the first frames after them: a read of none
            total = self.overflows  # (the loop's clock check) must not swallow them; once: the callback may count
            overflows, self._overflows_read = total - self._overflows_read, total  # another meanwhile
        behind_s = (ring_read.behind + len(ring_read.frames)) / self.sample_rate
        samples, nonfinite = finite_samples(ring_read.frames)
        return AudioBlock(samples, self.sample_rate, ring_read.lost, overflows, nonfinite,
                          datetime.now(timezone.utc) - timedelta(seconds=behind_s))

    @property
    def live(self) -> bool:
        """True for a device (reopened when it fails, clock checked against wall time), False for a file."""
        return False

    def start(self) -> None:
        """Begin delivering audio into :attr:`ring`; a second call does nothing."""
        raise NotImplementedError

    def stop(self) -> None:
        """Stop delivering audio and wake the ring's reader; a second call does nothing."""
        raise NotImplementedError

    @property
    def finished(self) -> bool:
        """True once everything was delivered (a file's end); a live input never finishes."""
        return False

    @property
    def failed(self) -> str | None:
        """Why the input stopped unexpectedly, or None while it is healthy."""
        return self._failed

    def __enter__(self) -> AudioSource:
        self.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()


# --- microphone -------------------------------------------------------------------------------


def _sounddevice() -> ModuleType:
    """Import sounddevice on first use; a missing PortAudio library becomes a SourceError."""
    try:
        import sounddevice
    except OSError as exc:
        raise SourceError(f"PortAudio is not available ({exc}); install libportaudio2, "
                          "or replay a file with --input") from None
    return sounddevice


def _input_devices(sd: ModuleType) -> list[dict[str, Any]]:
    """Every device that can record, as sounddevice describes it (with its 'index')."""
    return [dict(info) for info in sd.query_devices() if info["max_input_channels"] > 0]


def _default_input(sd: ModuleType) -> int | None:
    """Index of the system's default input device, None if there is none."""
    try:
        return int(sd.query_devices(kind="input")["index"])
    except sd.PortAudioError:
        return None


def _describe(devices: list[dict[str, Any]]) -> str:
    return ", ".join(f"{d['index']}: {d['name']}" for d in devices) or "none"


def _find_input(sd: ModuleType, device: int | str | None) -> dict[str, Any]:
    """The input device chosen by index, by case-insensitive name substring, or the default (None)."""
    inputs = _input_devices(sd)
    if device is None:
        wanted, default = "the default audio input", _default_input(sd)
        matches = [d for d in inputs if d["index"] == default]
    elif isinstance(device, int):
        wanted, matches = f"audio input device {device}", [d for d in inputs if d["index"] == device]
    else:
        wanted, matches = f"audio input device {device!r}", [d for d in inputs if device.lower() in d["name"].lower()]
    if not matches:
        raise DeviceMissing(f"{wanted} not found; available inputs: {_describe(inputs)}")
    return matches[0]


@dataclass(frozen=True)
class _Capture:
    """A resolved device and the format to capture from it."""

    index: int
    name: str
    sample_rate: int
    channels: int


def _resolve(sd: ModuleType, device: int | str | None, sample_rate: int | None, channels: int | None) -> _Capture:
    """Fill unset rate and channel count from the device's own defaults."""
    info = _find_input(sd, device)
    return _Capture(
        index=info["index"],
        name=info["name"],
        sample_rate=sample_rate or int(info["default_samplerate"]),
        channels=channels or min(info["max_input_channels"], MAX_DEFAULT_CHANNELS),
    )


def _rescanned(sd: ModuleType) -> ModuleType:
    """Re-initialise PortAudio so its device list is current: it is read once at initialisation,
    so a USB microphone plugged back in (maybe under another index) is only found after this.
    Called while no stream of ours is open (before each (re)open). sounddevice has no public call for this:
    its private ``_terminate``/``_initialize`` are used, the version is capped in setup.cfg, and
    tests/test_sources.py fails if a release drops them."""
    sd._terminate()
    sd._initialize()
    return sd


class MicrophoneSource(AudioSource):
    """A PortAudio input stream whose callback is :meth:`AudioSource.callback`."""

    def __init__(self, device: int | str | None, sample_rate: int | None, channels: int | None,
                 block_size: int, buffer_s: float) -> None:
        self._capture = _resolve(_rescanned(_sounddevice()), device, sample_rate, channels)
        super().__init__(f"{self._capture.index}: {self._capture.name}", self._capture.sample_rate,
                         self._capture.channels, buffer_s, block_size, block_size / self._capture.sample_rate)
        self.block_size = block_size
        self._stream: Any = None
        self._stopping = False

    def start(self) -> None:
        """Open and start the stream; SourceError if PortAudio refuses."""
        if self._stream is not None:
            return
        sd = _sounddevice()
        try:
            stream = sd.InputStream(
                device=self._capture.index, samplerate=self.sample_rate, channels=self.channels,
                blocksize=self.block_size, dtype=SAMPLE_DTYPE, callback=self.callback,
                finished_callback=self._on_finished)
            stream.start()
        except (sd.PortAudioError, ValueError) as exc:
            raise SourceError(f"cannot open audio input {self.name}: {exc}") from None
        self._stream = stream
        log.info("listening on audio input %s: %d Hz, %d channel(s), blocks of %d", self.name, self.sample_rate,
                 self.channels, self.block_size)

    def stop(self) -> None:
        """Close the stream (whatever state it is in) and wake the reader."""
        if self._stream is None or self._stopping:
            return
        self._stopping = True
        try:
            self._stream.close(ignore_errors=True)
        finally:
            self.ring.close()

    @property
    def live(self) -> bool:
        return True

    def _on_finished(self) -> None:
        """PortAudio thread: the stream went inactive; a failure unless stop() asked for it."""
        if not self._stopping:
            self._failed = "the audio stream stopped unexpectedly"

    @property
    def failed(self) -> str | None:
        """Set by the finished callback, or when the running stream is found inactive."""
        if self._failed is None and self._stream is not None and not self._stopping and not self._stream.active:
            self._failed = "the audio stream is no longer active"
        return self._failed


def check_device(audio: AudioSection) -> None:
    """Raise SourceError unless the configured device exists and accepts the configured format."""
    sd = _sounddevice()
    capture = _resolve(sd, audio.device, audio.sample_rate, audio.channels)
    try:
        sd.check_input_settings(device=capture.index, channels=capture.channels,
                                samplerate=capture.sample_rate, dtype=SAMPLE_DTYPE)
    except (sd.PortAudioError, ValueError) as exc:
        raise SourceError(f"audio input {capture.index}: {capture.name} cannot capture "
                          f"{capture.sample_rate} Hz x {capture.channels} channel(s): {exc}") from None


def list_devices_main(args: argparse.Namespace) -> int:
    """`noisewatch devices`: one line per input device, the default marked with '*'."""
    try:
        sd = _sounddevice()
        inputs = _input_devices(sd)
    except SourceError as exc:
        print(f"noisewatch: {exc}", file=sys.stderr)
        return 1
    if not inputs:
        print("noisewatch: no audio input devices found", file=sys.stderr)
        return 1
    default = _default_input(sd)
    print(f"  {'index':>5}  {'name':<40} {'inputs':>6}  {'default rate':>12}")
    for d in inputs:
        mark = "*" if d["index"] == default else " "
        print(f"{mark} {d['index']:>5}  {d['name']:<40} {d['max_input_channels']:>6}  "
              f"{d['default_samplerate']:>9.0f} Hz")
    print("(* = default input)")
    return 0


# --- file replay ------------------------------------------------------------------------------


class FileSource(AudioSource):
    """A recording (WAV/FLAC/OGG) pushed block by block through the microphone's callback.

    ``speed`` 1 paces blocks by the sample clock in real time, 4 four times faster, and 0
    delivers as fast as the consumer reads (the ring waits for space, nothing is dropped).
    """

    def __init__(self, path: str | Path, speed: float, block_size: int, buffer_s: float) -> None:
        if not (speed >= 0 and math.isfinite(speed)):  # NaN passes ``speed < 0`` and paces nothing
            raise SourceError(f"replay speed must be 0 (as fast as possible) or a positive number, not {speed}")
        self.path = Path(path)
        try:
            info = sf.info(str(self.path))
        except (RuntimeError, OSError) as exc:
            raise SourceError(f"cannot read audio file {self.path}: {exc}") from None
        warn_if_cut_short(self.path, info)
        self.block_size = block_size if speed > 0 else max(block_size, UNPACED_BLOCK_FRAMES)
        bounded_frames = max(self.block_size, FILE_RING_MAX_BYTES // (np.dtype(SAMPLE_DTYPE).itemsize * info.channels))
        seconds = buffer_s if speed > 0 else min(buffer_s, UNPACED_BUFFER_S)
        super().__init__(self.path.name, info.samplerate, info.channels, min(seconds, bounded_frames / info.samplerate),
                         self.block_size, self.block_size / (info.samplerate * speed) if speed > 0 else 0.0)
        self.speed = speed
        self._halt = threading.Event()
        self._thread: threading.Thread | None = None
        self._finished = False
        if speed == 0:
            self._store = self._store_waiting

    def _store_waiting(self, block: np.ndarray) -> None:
        """Backpressure for speed 0: wait for room instead of dropping (returns early once closed)."""
        self.ring.write_wait(block, timeout=None)

    def start(self) -> None:
        """Start the reader thread."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._replay, name=f"replay {self.name}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the reader thread (waking it from a pacing sleep or a full ring) and wake the reader."""
        if self._thread is None or self._halt.is_set():
            return
        self._halt.set()
        self.ring.close()
        self._thread.join(JOIN_TIMEOUT_S)

    @property
    def finished(self) -> bool:
        return self._finished

    def _replay(self) -> None:
        """Reader thread: deliver the whole file, then mark it finished and close the ring."""
        try:
            with open_audio(self.path) as audio:
                self._say_start(audio)
                self._deliver(audio)
        except (RuntimeError, OSError) as exc:
            self._failed = f"reading {self.path} failed: {exc}"  # the service says it, once
            return
        if not self._halt.is_set():
            self._finished = True
            self.ring.close()

    def _say_start(self, audio: AudioFile) -> None:
        """The replay's start, with the length it will hear: a WAV whose header declares less than follows is heard
        whole (:func:`open_audio`), and the header's length (0.0 s for a killed recorder's) was said."""
        pace = "as fast as it is processed" if self.speed == 0 else f"at {self.speed:g}x real time"
        length = f"{audio.frames / audio.samplerate:.1f} s" if length_known(audio) else "length unknown"
        log.info("replaying %s: %s, %d Hz, %d channel(s), %s", self.path, length, self.sample_rate, self.channels, pace)

    def _deliver(self, audio: AudioFile) -> None:
        """Each block goes out once the sample clock, scaled by ``speed``, has reached its end."""
        t0 = time.monotonic()
        delivered = 0
        pcm16 = audio.subtype == "PCM_16"
        while len(block := audio.read(self.block_size, dtype="int16" if pcm16 else SAMPLE_DTYPE, always_2d=True)):
            if pcm16:  # libsndfile scales 16-bit samples to float one at a time: 1M instructions per 48 kHz second
                block = block.astype(np.float32) * PCM16_SCALE
            delivered += len(block)
            if self.speed > 0:
                due = t0 + delivered / (self.sample_rate * self.speed)
                self._halt.wait(max(0.0, due - time.monotonic()))
            if self._halt.is_set():
                return
            self.callback(block, len(block), None, FILE_STATUS)
        # soundfile's blocks() went on, repeating its last buffer: an invented sound (of unknown length: no witness)
        if length_known(audio) and delivered < audio.frames:
            raise OSError(f"it was cut short while replayed ({delivered} of {audio.frames} frames read)")


def open_source(audio: AudioSection, input_path: str | None, speed: float) -> AudioSource:
    """The configured microphone, or the recording at ``input_path`` replayed at ``speed``."""
    if input_path is not None:
        return FileSource(input_path, speed, audio.block_size, audio.buffer_s)
    return MicrophoneSource(audio.device, audio.sample_rate, audio.channels, audio.block_size, audio.buffer_s)

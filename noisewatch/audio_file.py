"""A recording read whole as the daemon hears it: the one audio-file loader of training, evaluation, ``classify``
and the dashboard, so none of them hears a file otherwise than the daemon's stream does."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import soundfile as sf
import soxr

from noisewatch.dc_offset import remove_offset
from noisewatch.downmix import ChannelMix
from noisewatch.recording_checks import declared_before_no_chunk, finite_samples

log = logging.getLogger(__name__)

UNKNOWN_FRAMES = 2**63 - 1
"""libsndfile's length of a file whose length it does not know (SF_COUNT_MAX): a FLAC written through a pipe, whose
encoder could not go back to fill in STREAMINFO's sample count (``sox ... -t flac - | ...``)."""
READ_BLOCK_FRAMES = 2**16
"""Frames per read of a file whose length is unknown (its length is no size to allocate)."""


def length_known(audio: Any) -> bool:
    """Whether ``audio`` (a SoundFile or soundfile.info's answer) knows how many frames it holds."""
    return bool(audio.frames != UNKNOWN_FRAMES)


class AudioFile(sf.SoundFile):
    """soundfile's SoundFile, reading a file of unknown length to its end. After every read soundfile seeks to where
    the read ended; libFLAC refuses a seek to the very end, which libsndfile forgives only where it knows the end,
    so the last read of such a FLAC failed ("Internal psf_fseek() failed") and its audio was lost. A read alone
    moves libsndfile's position: that seek is bookkeeping, which soundfile skips for a file it takes for
    unseekable."""

    def seekable(self) -> bool:
        return length_known(self) and super().seekable()


def _named(source: str | Path | BinaryIO) -> str:
    """How a warning names ``source``: its path (a Path's ``name`` is only the last part), a file object's name."""
    return str(source if isinstance(source, (str, Path)) else getattr(source, "name", source))


class _From:
    """A binary file seen from ``start`` on: libsndfile reads it as headerless (RAW) samples."""

    def __init__(self, file: BinaryIO, start: int) -> None:
        self._file = file
        self._start = start

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return self._file.seek(offset + (self._start if whence == io.SEEK_SET else 0), whence) - self._start

    def tell(self) -> int:
        return self._file.tell() - self._start

    def read(self, size: int = -1) -> bytes:
        return self._file.read(size)


def _samples_start(raw: BinaryIO) -> int:
    """Where a WAV's samples start: where libsndfile's seek to its first frame leaves the file."""
    raw.seek(0)
    with sf.SoundFile(raw) as probe:
        probe.seek(0)
        return raw.tell()


@contextmanager
def open_audio(source: str | Path | BinaryIO) -> Iterator[AudioFile]:
    """The recording at ``source`` open for reading, all of it: a WAV whose header declares less audio than follows
    it is read to the file's end (:func:`_past_the_header`)."""
    with ExitStack() as stack:
        file = stack.enter_context(AudioFile(source))
        declared = declared_before_no_chunk(file.extra_info) if file.format in ("WAV", "WAVEX") else None
        yield file if declared is None else _past_the_header(source, file, declared, stack)


def _past_the_header(source: str | Path | BinaryIO, header: AudioFile, declared: int, stack: ExitStack) -> AudioFile:
    """A WAV whose header declares ``declared`` bytes of audio, less than follows (a recorder killed before it
    rewrote its header, samples appended since), read from its first sample to the file's end as headerless samples
    of its format, and said: libsndfile reads what the header declares, and a replay of a 4 s recording whose header
    said 1 s heard 1 s without a word. Block-coded audio (ADPCM) cannot be read so: it is only said."""
    name, header_s = _named(source), header.frames / header.samplerate
    layout: dict[str, Any] = {"samplerate": header.samplerate, "channels": header.channels,
                              "subtype": header.subtype, "endian": "BIG" if header.endian == "BIG" else "LITTLE"}
    if not sf.check_format("RAW", layout["subtype"], layout["endian"]):  # nor can libsndfile seek in it (GSM 6.10)
        log.warning("%s holds more bytes after the %.1f s of audio its header declares, not heard: %s audio is read "
                    "only as far as its header declares", name, header_s, layout["subtype"])
        return header
    header.close()  # a file object is read again from its start
    raw = stack.enter_context(open(source, "rb")) if isinstance(source, (str, Path)) else source
    start = _samples_start(raw)
    beyond = raw.seek(0, io.SEEK_END) - start - declared
    raw.seek(start)  # libsndfile reads headerless samples from where the file is
    whole = stack.enter_context(AudioFile(_From(raw, start), format="RAW", **layout))
    log.warning("%s holds %d bytes of audio after the %.1f s its header declares (a recording whose header was not "
                "rewritten at its end?): all %.1f s are heard", name, beyond, header_s, whole.frames / whole.samplerate)
    return whole


def read_frames(file: AudioFile, frames: int) -> np.ndarray:
    """The next ``frames`` (-1: all) as float32 frames x channels; a file of unknown length block by block, as
    SF_COUNT_MAX frames at once are an array too big to allocate."""
    if length_known(file):
        return file.read(frames, dtype="float32", always_2d=True)
    wanted = UNKNOWN_FRAMES if frames < 0 else frames
    blocks = [np.zeros((0, file.channels), np.float32)]
    while wanted and len(block := file.read(min(wanted, READ_BLOCK_FRAMES), dtype="float32", always_2d=True)):
        blocks.append(block)
        wanted -= len(block)
    return np.concatenate(blocks)


def load_audio(source: str | Path | BinaryIO, sample_rate: int, seconds: float | None = None) -> np.ndarray:
    """A recording (path or file object) as mono float32 at ``sample_rate``: channels mixed as the daemon mixes,
    resampled with soxr HQ, DC offset removed as the daemon removes it. The one audio-file loader of
    training, evaluation and classify. NaN, infinite and absurd samples are silence, as the daemon reads them (and
    says so): a window holding one scored a fixed label, whatever it held. ``seconds``: read no further than this
    from the start (the dashboard analyses the first minutes of an upload, and an hour of silence is a small FLAC
    that decoded whole took gigabytes)."""
    with open_audio(source) as file:
        rate = file.samplerate
        audio = read_frames(file, -1 if seconds is None else int(seconds * rate))
    audio, unusable = finite_samples(audio)
    if unusable:
        log.warning("%s: %d NaN, infinite or absurd sample(s) read as silence", _named(source), unusable)
    mix = ChannelMix(audio.shape[1], rate)
    mono = mix.mix(audio)
    if mix.choice is not None and mix.choice.note is not None:
        log.warning("%s: %s", _named(source), mix.choice.note)
    resampled = mono if rate == sample_rate else soxr.resample(mono, rate, sample_rate, quality="HQ")
    return remove_offset(resampled, sample_rate)

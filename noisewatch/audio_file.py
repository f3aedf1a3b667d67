"""A recording read whole as the daemon hears it: the one audio-file loader of training, evaluation, ``classify``
and the dashboard, so none of them hears a file otherwise than the daemon's stream does."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import soundfile as sf
import soxr

from noisewatch.dc_offset import remove_offset
from noisewatch.downmix import ChannelMix
from noisewatch.recording_checks import finite_samples

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
    with AudioFile(source) as file:
        rate = file.samplerate
        audio = read_frames(file, -1 if seconds is None else int(seconds * rate))
    audio, unusable = finite_samples(audio)
    if unusable:
        log.warning("%s: %d NaN, infinite or absurd sample(s) read as silence", getattr(source, "name", source),
                    unusable)
    mix = ChannelMix(audio.shape[1], rate)
    mono = mix.mix(audio)
    if mix.choice is not None and mix.choice.note is not None:
        log.warning("%s: %s", getattr(source, "name", source), mix.choice.note)
    resampled = mono if rate == sample_rate else soxr.resample(mono, rate, sample_rate, quality="HQ")
    return remove_offset(resampled, sample_rate)

"""A recording read whole as the daemon hears it: the one audio-file loader of training, evaluation, ``classify``
and the dashboard, so none of them hears a file otherwise than the daemon's stream does."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import BinaryIO

import numpy as np
import soundfile as sf
import soxr

from noisewatch.dc_offset import remove_offset
from noisewatch.downmix import ChannelMix
from noisewatch.recording_checks import finite_samples

log = logging.getLogger(__name__)


def load_audio(source: str | Path | BinaryIO, sample_rate: int, seconds: float | None = None) -> np.ndarray:
    """A recording (path or file object) as mono float32 at ``sample_rate``: channels mixed as the daemon mixes,
    resampled with soxr HQ, DC offset removed as the daemon removes it. The one audio-file loader of
    training, evaluation and classify. NaN, infinite and absurd samples are silence, as the daemon reads them (and
    says so): a window holding one scored a fixed label, whatever it held. ``seconds``: read no further than this
    from the start (the dashboard analyses the first minutes of an upload, and an hour of silence is a small FLAC
    that decoded whole took gigabytes)."""
    with sf.SoundFile(source) as file:
        rate = file.samplerate
        audio = file.read(-1 if seconds is None else int(seconds * rate), dtype="float32", always_2d=True)
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

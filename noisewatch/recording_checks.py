"""What a recording or an input says of itself before it is heard: unreadable samples, a file cut short, a rate
below the model's. The daemon's inputs (:mod:`noisewatch.daemon.sources`), ``classify`` and the dashboard read audio
alike through these, so a recording is heard the way the daemon hears it, and said the way the daemon says it."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

SAMPLE_LIMIT = 1000.0
"""Largest sample magnitude taken as audio (full scale is 1; 60 dB over it leaves a float recording's headroom
alone): beyond it a sample is corrupt, as raw integers read as floats are, and read as silence."""

def finite_samples(frames: np.ndarray) -> tuple[np.ndarray, int]:
    """The frames with NaN, infinite and absurd samples (beyond SAMPLE_LIMIT) replaced by silence, in place, and how
    many there were: one NaN would turn every level and score after it into NaN, and a finite 1e20 overflows the
    float32 levels to infinity, which no event's JSON can carry. A recording read whole (classify, training, the
    dashboard) goes through it too, so it is heard as the daemon hears it."""
    usable = np.abs(frames) <= SAMPLE_LIMIT  # False for NaN too
    if usable.all():  # the usual case, checked without counting
        return frames, 0
    bad = ~usable
    frames[bad] = 0.0  # a fresh copy (out of the ring, or read from a file): ours to change
    return frames, int(np.count_nonzero(bad))


CUT_SHORT = re.compile(r"^data\s*:\s*(\d+)\s*\(should be (\d+)\)", re.MULTILINE)
"""libsndfile's log line for a WAV/AIFF data chunk longer than what the file holds."""


UNKNOWN_SIZES = frozenset({0x7FFFF000, 0xFFFFFFFF})
"""Data sizes a WAV writer puts in a header it cannot go back to fill in (writing to a pipe: sox 0x7FFFF000, the
largest size for others): the length is unknown, not longer than the file, which libsndfile reads to its end."""


def cut_short_bytes(extra_info: str) -> tuple[int, int] | None:
    """(bytes of audio the header promises, bytes the file holds) of a WAV/AIFF file cut short, from libsndfile's
    ``extra_info``; None for a whole one, and for one whose header does not know its length (a WAV written through
    a pipe was said to be cut short, whole). The replay and the dashboard's Classify page both say it."""
    found = CUT_SHORT.search(extra_info)
    if found is None or int(found.group(2)) >= int(found.group(1)) or int(found.group(1)) in UNKNOWN_SIZES:
        return None
    return int(found.group(1)), int(found.group(2))


DATA_THEN_STRAY = re.compile(r"^data\s*:\s*(\d+)\n\*\*\* (?:Unknown chunk marker \(([0-9A-Fa-f]{1,8})\)|(.{4}) : )", re.MULTILINE)
"""libsndfile's log of a WAV's data chunk held whole and, next, bytes its parser takes for no chunk: the marker
as hex where it is not printable ("Unknown chunk marker (F536066B)"), else as text ("*** ABCD : 157616214 (unknown
marker)")."""
FILE_LENGTH = re.compile(r"^Length\s*:\s*(\d+)$", re.MULTILINE)
RIFF_LENGTH = re.compile(r"^RIFF\s*:\s*(\d+)", re.MULTILINE)
TAG_MARKERS = (b"ID3", b"TAG")
"""What taggers append after a WAV's RIFF chunk (an ID3v2 tag, an ID3v1 one): the file's own, not audio."""


def declared_before_no_chunk(extra_info: str) -> int | None:
    """Bytes of audio a WAV's header declares where more follow that header's RIFF chunk, from libsndfile's
    ``extra_info``: samples a recorder wrote after its last header update (killed before it rewrote the header) or
    appended since, which libsndfile does not read. None for any other file: the data chunk not the last one read,
    nothing after the RIFF chunk (a writer that left out a pad byte has its next chunk found by a resync), or a tag
    appended after it."""
    stray, length, riff = DATA_THEN_STRAY.search(extra_info), FILE_LENGTH.search(extra_info), RIFF_LENGTH.search(
        extra_info)
    if stray is None or length is None or riff is None or int(length.group(1)) <= int(riff.group(1)) + 8:
        return None
    marker = (int(stray.group(2), 16).to_bytes(4, "little") if stray.group(2) is not None
              else stray.group(3).encode("latin-1"))
    return None if marker.startswith(TAG_MARKERS) else int(stray.group(1))


OGG_PAGE_MAX = 27 + 255 + 255 * 255
"""Longest Ogg page: header, segment table, 255 segments of 255 bytes."""
OGG_END_OF_STREAM = 0x04
"""The header-type flag of a stream's last page."""


def ogg_ends_its_stream(path: Path) -> bool:
    """Whether the file's last whole Ogg page flags the stream's end. libsndfile reads an Ogg file cut short (a
    copy or a download broken off) to its last whole page and reports that length as the file's; bytes after the
    last page (an ID3 tag some taggers append) are not a cut."""
    with path.open("rb") as file:
        size = file.seek(0, 2)
        file.seek(max(0, size - OGG_PAGE_MAX))
        tail = file.read()
    page = tail.rfind(b"OggS\x00")
    while page >= 0 and len(tail) - page >= 27:
        count = tail[page + 26]
        lacing = tail[page + 27 : page + 27 + count]  # the page's segment lengths
        if len(lacing) == count and page + 27 + count + sum(lacing) <= len(tail):
            return bool(tail[page + 5] & OGG_END_OF_STREAM)
        page = tail.rfind(b"OggS\x00", 0, page)  # "OggS" inside a packet, or a page cut off: look further back
    return False


def _ogg_ends_its_stream_or_unreadable(path: Path) -> bool:
    """:func:`ogg_ends_its_stream`, or True where the file cannot be read again (the replay then says why)."""
    try:
        return ogg_ends_its_stream(path)
    except OSError:
        return True


def below_model_rate(name: str, rate: int, model_rate: int) -> str | None:
    """What an input or file at ``rate`` lacks for a model at ``model_rate``, said where it is opened (the daemon's
    input, a file to classify): resampled up, it holds nothing above half its rate, and the labels still come."""
    if rate >= model_rate:
        return None
    return (f"{name} delivers {rate} Hz, less than the model's {model_rate} Hz: it hears nothing above "
            f"{rate / 2:g} Hz, and detection suffers")


def warn_if_cut_short(path: Path, info: Any, doing: str = "replaying") -> None:
    """libsndfile quietly reads a cut-short WAV or Ogg file to where it ends (a FLAC fails there instead): say so,
    and what is ``doing`` with what it holds (the replay; classify)."""
    cut = cut_short_bytes(getattr(info, "extra_info", ""))
    if cut is not None:
        log.warning("%s is cut short: its header promises %s bytes of audio, the file holds %s; %s %.1f s",
                    path, *cut, doing, info.duration)
    elif info.format == "OGG" and not _ogg_ends_its_stream_or_unreadable(path):
        log.warning("%s is cut short: its last Ogg page does not end the stream; %s the %.1f s it holds",
                    path, doing, info.duration)

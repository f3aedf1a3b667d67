"""A durable on-disk queue of MQTT messages, so that no event is lost while the broker is away.

Format: one file per message, named by a zero-padded, monotonically increasing sequence number
(``0000000000000042.msg``). The first line is a JSON header (topic, creation time in Unix
seconds), the rest is the payload bytes. A message is written to a temporary file, fsynced and
renamed (then the directory is fsynced), so after a crash or kill -9 a message file is either
complete or absent; half-written temporaries are deleted when the spool is opened. A message is
removed only after the broker acknowledged it, so delivery is at least once.

The spool is bounded by total size and by age; the oldest messages are dropped first and counted.
``append`` runs on the processing loop, ``remove`` and reads on the MQTT sink's own thread: the
in-memory index is guarded by a lock, file I/O happens outside it.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

log = logging.getLogger(__name__)

SUFFIX = ".msg"
TMP_SUFFIX = ".tmp"
NAME_DIGITS = 16
DIR_MODE = 0o700
MIB = 1024 * 1024
HOUR_S = 3600.0


@dataclass(frozen=True)
class SpoolEntry:
    """One spooled message."""

    seq: int
    """position in the spool; later messages have larger numbers"""
    topic: str
    payload: bytes
    created: float
    """Unix seconds when the message was spooled"""


@dataclass
class _Meta:
    size: int
    """bytes on disk"""
    created: float
    """Unix seconds"""


class Spool:
    """Messages waiting for a broker acknowledgement, oldest first, durable across restarts."""

    def __init__(self, directory: Path, max_mb: float, max_age_h: float,
                 clock: Callable[[], float] = time.time) -> None:
        self.directory = Path(directory)
        self.max_bytes = int(max_mb * MIB)
        self.max_age_s = max_age_h * HOUR_S
        self._clock = clock
        self._lock = threading.Lock()
        self._index: OrderedDict[int, _Meta] = OrderedDict()
        self._bytes = 0
        self.dropped = 0
        """messages dropped by the size or age bound (or unreadable) since the spool was opened"""
        self.directory.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        self._next_seq = self._load() + 1
        self.prune()

    # --- state ----------------------------------------------------------------------------------

    @property
    def depth(self) -> int:
        """Messages waiting."""
        with self._lock:
            return len(self._index)

    @property
    def size_bytes(self) -> int:
        """Bytes on disk."""
        with self._lock:
            return self._bytes

    def seqs(self) -> list[int]:
        """Sequence numbers waiting, oldest first."""
        with self._lock:
            return list(self._index)

    # --- operations -----------------------------------------------------------------------------

    def append(self, topic: str, payload: bytes) -> int:
        """Store a message durably (fsync) and return its sequence number."""
        created = self._clock()
        data = json.dumps({"topic": topic, "created": created}).encode() + b"\n" + payload
        with self._lock:
            seq = self._next_seq
            self._next_seq += 1
        _write_durably(self._path(seq), data)
        with self._lock:
            self._index[seq] = _Meta(len(data), created)
            self._bytes += len(data)
        self._enforce_size()
        return seq

    def after(self, seq: int, limit: int) -> list[SpoolEntry]:
        """Up to ``limit`` readable messages with a sequence number above ``seq``, oldest first."""
        with self._lock:
            wanted = list(islice((s for s in self._index if s > seq), limit))
        entries = []
        for s in wanted:
            entry = self._read(s)
            if entry is not None:
                entries.append(entry)
        return entries

    def remove(self, seq: int) -> None:
        """Forget an acknowledged message (no-op if it is already gone)."""
        with self._lock:
            meta = self._index.pop(seq, None)
            if meta is not None:
                self._bytes -= meta.size
        if meta is not None:
            self._path(seq).unlink(missing_ok=True)

    def prune(self) -> int:
        """Drop messages older than the age bound; returns how many were dropped."""
        cutoff = self._clock() - self.max_age_s
        with self._lock:
            old = [s for s, meta in self._index.items() if meta.created < cutoff]
        self._drop(old, "older than %.1f h" % (self.max_age_s / HOUR_S))
        return len(old)

    # --- internals ------------------------------------------------------------------------------

    def _path(self, seq: int) -> Path:
        return self.directory / f"{seq:0{NAME_DIGITS}d}{SUFFIX}"

    def _enforce_size(self) -> None:
        """Drop the oldest messages while the spool is over its size bound (keeping the newest)."""
        with self._lock:
            excess = self._bytes - self.max_bytes
            victims: list[int] = []
            for s, meta in self._index.items():
                if excess <= 0 or len(victims) == len(self._index) - 1:
                    break
                victims.append(s)
                excess -= meta.size
        self._drop(victims, "spool over %.2f MiB" % (self.max_bytes / MIB))

    def _drop(self, seqs: list[int], why: str) -> None:
        for s in seqs:
            self.remove(s)
        if seqs:
            self.dropped += len(seqs)
            log.warning("MQTT spool: dropped %d message(s) (%s); %d dropped in total", len(seqs), why, self.dropped)

    def _read(self, seq: int) -> SpoolEntry | None:
        try:
            header, _, payload = self._path(seq).read_bytes().partition(b"\n")
            meta = json.loads(header)
            return SpoolEntry(seq, str(meta["topic"]), payload, float(meta["created"]))
        except FileNotFoundError:
            return None  # dropped or acknowledged meanwhile
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.error("MQTT spool: unreadable message %s (%s); dropping it", self._path(seq), exc)
            self._drop([seq], "unreadable")
            return None

    def _load(self) -> int:
        """Index the messages left by an earlier run; returns the highest sequence number (0: none)."""
        for stale in self.directory.glob("*" + TMP_SUFFIX):
            stale.unlink(missing_ok=True)  # a write interrupted by a crash: never acknowledged as stored
        found = sorted(int(p.stem) for p in self.directory.glob("*" + SUFFIX) if p.stem.isdigit())
        for seq in found:
            meta = self._read_meta(seq)
            if meta is not None:
                self._index[seq] = meta
                self._bytes += meta.size
        if found:
            log.info("MQTT spool: %d message(s) waiting from an earlier run in %s", len(self._index), self.directory)
        return found[-1] if found else 0

    def _read_meta(self, seq: int) -> _Meta | None:
        path = self._path(seq)
        try:
            with path.open("rb") as f:
                header = json.loads(f.readline())
            return _Meta(path.stat().st_size, float(header["created"]))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.error("MQTT spool: unreadable message %s (%s); dropping it", path, exc)
            path.unlink(missing_ok=True)
            self.dropped += 1
            return None


def _write_durably(path: Path, data: bytes) -> None:
    """Write ``data`` so that ``path`` is either complete or absent after a crash."""
    tmp = path.with_suffix(TMP_SUFFIX)
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)

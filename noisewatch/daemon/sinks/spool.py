"""A durable on-disk queue of MQTT messages, so that no event is lost while the broker is away.

Format: one file per message, named by a zero-padded, monotonically increasing sequence number
(``0000000000000042.msg``). The first line is a JSON header (topic, creation time in Unix
seconds and on the boot's own clock, payload length and CRC-32), the rest is the payload bytes. A message
is written to a temporary file, fsynced and renamed (then the directory is fsynced), so after a crash or kill -9 a message file is either
complete or absent. A temporary found when the spool is opened is kept when it holds a whole message (power
went between its fsync and its rename, and the message is nowhere else), else deleted; either is logged. A
message is removed only after the broker acknowledged it, so delivery is at least once.

The spool is bounded by total size and by age; the oldest messages are dropped first and counted (events, not
messages: a sound's started notice lost is logged but not counted, since its event still arrives). Age is
counted on the clock of the boot a message was spooled in (CLOCK_BOOTTIME, which counts suspend too) while
that boot lasts, so a wall-clock step (NTP setting a Pi without a real-time clock right, after a week off)
does not make a minute-old message a week old; across a reboot only the wall clock can tell.
A message that can never be delivered as it is goes to a sub-folder instead of blocking the queue,
and is counted: ``quarantine/`` for a damaged file (header unreadable, payload cut short or garbled,
a topic no broker takes), ``dead-letter/`` for a message the broker refused. Both keep the file for
a person to look at; nothing in them is retried. An intact message whose topic no broker takes is a
dead letter too. Each of the two keeps its newest files within the spool's size bound: a broker that refuses
every event would otherwise fill the disk with them, a file per message, for as long as nobody looks.
``append`` runs on the processing loop, ``remove`` and reads on the MQTT sink's own thread: the
in-memory index is guarded by a lock, file I/O happens outside it.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import threading
import time
import zlib
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

from noisewatch.daemon.sinks.topics import is_started_notice
from noisewatch.daemon.statefile import DISK_FAULTS

log = logging.getLogger(__name__)

SUFFIX = ".msg"
TMP_SUFFIX = ".tmp"
STARTED_MARK = ".started"
"""Between the number and the suffix of a started notice set aside (``0000000042.started.msg``): its folder's count
of lost events, read from the names at opening, leaves it out."""
QUARANTINE = "quarantine"
DEAD_LETTER = "dead-letter"
NAME_DIGITS = 16
DIR_MODE = 0o700
MIB = 1024 * 1024
FALLBACK_BLOCK = 4096
"""block size taken where the file system does not say"""
HOUR_S = 3600.0
TRIM_TO = 0.9
"""A set-aside folder over the size bound is trimmed to this share of it: listed once per tenth of it, not per file."""
UNREADABLE = (OSError, ValueError, KeyError, TypeError, RecursionError)
"""What reading a damaged file raises; RecursionError: a garbled header of nested brackets made the spool's
opening raise, and the daemon exit 1 at every restart without sending the intact messages."""


def _boot_id() -> str:
    """This boot's id ("" where the kernel does not say): a message spooled in it can be aged on its clock."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def _since_boot() -> float:
    return time.clock_gettime(time.CLOCK_BOOTTIME)


BOOT_ID = _boot_id()


@dataclass(frozen=True)
class SpoolEntry:
    """One spooled message."""

    seq: int
    """position in the spool; later messages have larger numbers"""
    topic: str
    payload: bytes
    created: float
    """Unix seconds when the message was spooled"""
    since_boot: float | None = None
    """When it was spooled on this boot's clock (None: in an earlier boot)."""


@dataclass
class _Meta:
    size: int
    """bytes on disk"""
    created: float
    """Unix seconds"""
    since_boot: float | None
    """When it was spooled on this boot's clock (None: in an earlier boot, or one that did not say)."""
    event: bool
    """Whether its loss is an event's: not a started notice (:func:`is_started_notice`)."""

    def age_s(self, now: float, since_boot: float) -> float:
        """Seconds since it was spooled: on this boot's clock when it was spooled in this boot, else the wall's."""
        return now - self.created if self.since_boot is None else since_boot - self.since_boot


class Spool:
    """Messages waiting for a broker acknowledgement, oldest first, durable across restarts."""

    def __init__(self, directory: Path, max_mb: float, max_age_h: float, clock: Callable[[], float] = time.time,
                 boot_clock: Callable[[], float] = _since_boot, boot_id: str = BOOT_ID) -> None:
        self.directory = Path(directory)
        self.max_bytes = int(max_mb * MIB)
        self.max_age_s = max_age_h * HOUR_S
        self._clock = clock
        self._boot_clock = boot_clock
        self._boot_id = boot_id
        self._lock = threading.Lock()
        self._index: OrderedDict[int, _Meta] = OrderedDict()
        self._bytes = 0
        self._kept_delivered: set[Path] = set()
        """Files of messages no longer queued (acknowledged, dropped, moved) that the disk would not let go (turned
        read-only): deleted once it takes writes again (``delete_delivered``), here or by the spool a reload moves
        them to, or sent again at the next start. Left, they were, with a log that said none was left."""
        self.dropped = 0
        """events dropped by the size or age bound since the spool was opened (started notices are not counted)"""
        try:
            self.directory.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        except OSError as exc:
            if exc.errno not in DISK_FAULTS:
                raise  # a read-only or full disk: made by the first append that can (``read_only`` says so meanwhile)
        self._block = os.statvfs(_nearest_folder(self.directory)).f_frsize or FALLBACK_BLOCK
        """The file system's allocation unit: a 400-byte message takes a whole block (4 KiB on ext4), and counted
        by its length a spool at max_mb took ten times as much disk (and memory, and start-up time)."""
        self._aside = {folder: _Aside(self.directory / folder, self._on_disk) for folder in (QUARANTINE, DEAD_LETTER)}
        """What each set-aside folder takes on disk, kept within ``max_bytes``: each listed once at opening (it may hold
        thousands of files), its count and newest number read from that listing."""
        self.quarantined = 0
        """damaged events set aside in ``quarantine/`` (those there once the spool is open included; a file whose
        header cannot say what it holds counts as an event)"""
        self.dead_letters = 0
        """events the broker refused, set aside in ``dead-letter/``"""
        self._aside_lock = threading.Lock()
        """Guards ``_aside``; not ``_lock``: a trim lists the folder, which ``append`` on the processing loop must not
        wait for."""
        self._next_seq = self._load() + 1
        self._hold_bounds()  # a bound lowered since the last run holds from the start, not from the next event
        self.quarantined, self.dead_letters = self._aside[QUARANTINE].count, self._aside[DEAD_LETTER].count

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

    def read_only(self) -> bool:
        """Whether the spool's file system is mounted read-only (an SD card the kernel remounted after errors):
        nothing can be written to it, nor removed from it."""
        return bool(os.statvfs(_nearest_folder(self.directory)).f_flag & os.ST_RDONLY)

    def disk_problem(self) -> str | None:
        """Why the spool's file system would refuse the next message, as a write would say it, or None: read-only,
        not a block or inode left, or the folder gone with the folder it was in (an unplugged disk: ``append`` does
        not fill its mount point). Asked with no write (an SD card's wear): a quiet lamp post may spool no event for
        hours, and a disk that filled meanwhile was found only when an outage's events had nowhere to go."""
        if not self.directory.is_dir() and not self.directory.parent.is_dir():
            return os.strerror(errno.ENOENT)
        try:
            refusal = self._refusal([1])
        except OSError as exc:
            return exc.strerror or str(exc)
        return None if refusal is None else os.strerror(refusal)

    def has_after(self, seq: int) -> bool:
        """Whether a message with a sequence number above ``seq`` is waiting."""
        with self._lock:
            return bool(self._index) and next(reversed(self._index)) > seq

    # --- operations -----------------------------------------------------------------------------

    def append(self, topic: str, payload: bytes) -> int:
        """Store a message durably (fsync) and return its sequence number."""
        data, meta = self._encode(topic, payload, self._clock(), self._boot_clock())
        seq = self._take_seq()
        try:
            _write_durably(self._path(seq), data)
        except FileNotFoundError:
            if self.directory.is_dir() or not self.directory.parent.is_dir():
                raise  # a parent gone too is an unplugged disk: not to be made again on the root file system
            self.directory.mkdir(mode=DIR_MODE, exist_ok=True)  # a read-only disk refuses here, said at start-up
            log.warning("MQTT spool: %s is gone; making it again", self.directory)
            _write_durably(self._path(seq), data)
        self._admit([(seq, meta)])
        self._enforce_size()
        return seq

    def take_all(self, earlier: Spool) -> None:
        """Move every message of ``earlier`` (the folder a reload left) here, oldest first, with their ages and its
        loss counts; all or none. OSError, with none of them left here, when this disk cannot take them all: asked
        first, without a write (moved one by one, a disk with room for part kept that part where nothing read it
        until the rest fitted, and later messages went out before it). The bounds hold once all are here: a drop is
        counted once, not at each attempt."""
        refusal = self._refusal([self._on_disk(size) for size in earlier._sizes()])
        if refusal is not None:
            raise OSError(refusal, os.strerror(refusal), str(self.directory))
        entries = earlier.after(0, earlier.depth)
        written: list[tuple[int, _Meta]] = []
        try:
            for entry in entries:
                data, meta = self._encode(entry.topic, entry.payload, entry.created, entry.since_boot)
                written.append((self._take_seq(), meta))
                _write_durably(self._path(written[-1][0]), data)
        except OSError:
            for seq, _ in written:
                _unlink_quietly(self._path(seq))
            raise
        self._admit(written, dropped=earlier.dropped)  # ``spool_dropped`` counts for the listener's life
        self.dead_letters += earlier.dead_letters  # and so do those the old folder set aside: Home Assistant's
        self.quarantined += earlier.quarantined  # "Events lost" (total_increasing) read a fall as a reset
        for entry in entries:
            earlier.remove(entry.seq)
        with earlier._lock, self._lock:  # what its disk kept is deleted from here once that disk lets go
            self._kept_delivered |= earlier._kept_delivered
            earlier._kept_delivered.clear()
        self._hold_bounds()

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

    def remove(self, seq: int) -> bool:
        """Forget an acknowledged message; False (and nothing done) when it is already gone."""
        return self._remove(seq) is not None

    def _remove(self, seq: int) -> _Meta | None:
        """Forget a message and delete its file; what the index kept of it, None (and nothing done) when it is
        already gone, so that a drop counts only what it removed."""
        with self._lock:
            meta = self._index.pop(seq, None)
            if meta is not None:
                self._bytes -= meta.size
        if meta is None:
            return None
        try:
            self._path(seq).unlink(missing_ok=True)
        except OSError as exc:  # read-only file system: delivered anyway; deleted later, or sent again at a restart
            log.error("MQTT spool: cannot delete delivered message %s (%s)", self._path(seq), exc.strerror)
            with self._lock:
                self._kept_delivered.add(self._path(seq))
        return meta

    @property
    def kept_delivered(self) -> int:
        """Acknowledged messages still on disk (``remove`` could not delete them)."""
        return len(self._kept_delivered)

    def delete_delivered(self) -> None:
        """Delete the acknowledged messages the disk kept, oldest first, as far as it lets go of them now."""
        with self._lock:
            kept = sorted(self._kept_delivered)
        deleted = 0
        for path in kept:
            try:
                path.unlink(missing_ok=True)
            except OSError:
                break
            with self._lock:
                self._kept_delivered.discard(path)
            deleted += 1
        if deleted:
            log.info("MQTT spool: deleted %d delivered message(s) the disk had kept", deleted)

    def set_aside(self, seq: int, folder: str, why: str) -> None:
        """Move a message out of the queue into ``folder`` (QUARANTINE or DEAD_LETTER) and count it when it is an
        event; one already gone (a bound dropped it after it was handed to the broker, which then refused it) is not
        counted again. One not in the index (its header unreadable at opening) counts as an event."""
        with self._lock:
            meta = self._index.pop(seq, None)
            if meta is not None:
                self._bytes -= meta.size
        if meta is None and not self._path(seq).exists():  # dropped by a bound while the broker had it: counted there
            return                                           # (in "Events lost" it counted twice) and nothing to move
        event = meta is None or meta.event
        if event and folder == DEAD_LETTER:
            self.dead_letters += 1
        elif event:
            self.quarantined += 1
        target = self.directory / folder / (self._path(seq).name if event else _started_name(seq))
        try:
            target.parent.mkdir(mode=DIR_MODE, exist_ok=True)
            os.replace(self._path(seq), target)
            size = self._on_disk(target.stat().st_size)
        except OSError as exc:  # not "set aside": it was not
            log.error("MQTT spool: cannot move %s to %s (%s); it was to be set aside: %s", self._path(seq),
                      target.parent, exc.strerror, why)
            return
        with self._aside_lock:
            self._aside[folder].add(size, event)
        log.warning("MQTT spool: message %s set aside in %s/: %s", self._path(seq).name, folder, why)
        self._trim_aside(folder)

    def bound(self, max_mb: float, max_age_h: float) -> None:
        """New bounds (a reload keeps the spool: one folder, one spool), held at once as at opening: a bound lowered
        because the SD card fills up drops the oldest messages now, not from the next restart."""
        self.max_bytes = int(max_mb * MIB)
        self.max_age_s = max_age_h * HOUR_S
        self._hold_bounds()

    def prune(self) -> int:
        """Drop messages older than the age bound (and delete delivered ones the disk kept); returns how many were
        dropped."""
        self.delete_delivered()
        now, since_boot = self._clock(), self._boot_clock()
        with self._lock:
            old = [s for s, meta in self._index.items() if meta.age_s(now, since_boot) > self.max_age_s]
        return self._drop(old, "older than %.1f h" % (self.max_age_s / HOUR_S))

    # --- internals ------------------------------------------------------------------------------

    def _since_boot_of(self, header: Any) -> float | None:
        """When a message was spooled on this boot's clock, from its header (None: in an earlier boot, or a file
        from before the header said); TypeError for a header that is not a JSON object (quarantined)."""
        if not isinstance(header, dict):
            raise TypeError("the header is not a JSON object")
        if not self._boot_id or header.get("boot") != self._boot_id:
            return None
        return float(header["since_boot"])

    def _encode(self, topic: str, payload: bytes, created: float, since_boot: float | None) -> tuple[bytes, _Meta]:
        """A message's file (header line, then the payload) and what the index keeps of it."""
        boot = self._boot_id if since_boot is not None else ""
        header = {"topic": topic, "created": created, "boot": boot, "since_boot": since_boot,
                  "length": len(payload), "crc32": zlib.crc32(payload)}
        data = json.dumps(header).encode() + b"\n" + payload
        return data, _Meta(self._on_disk(len(data)), created, since_boot if boot else None, not is_started_notice(topic))

    def _admit(self, written: list[tuple[int, _Meta]], dropped: int = 0) -> None:
        """Index messages written to the disk (and the drops of a spool whose messages they are)."""
        with self._lock:
            for seq, meta in written:
                self._index[seq] = meta
                self._bytes += meta.size
            self.dropped += dropped

    def _take_seq(self) -> int:
        with self._lock:
            seq = self._next_seq
            self._next_seq += 1
        return seq

    def _sizes(self) -> list[int]:
        with self._lock:
            return [meta.size for meta in self._index.values()]

    def _refusal(self, sizes: list[int]) -> int | None:
        """The errno writing files of ``sizes`` bytes would meet on this disk now (EROFS, ENOSPC), or None: asked
        (statvfs), not tried. f_files 0: a file system with no inode count (btrfs)."""
        disk = os.statvfs(_nearest_folder(self.directory))
        if disk.f_flag & os.ST_RDONLY:
            return errno.EROFS
        if disk.f_bavail * disk.f_frsize < sum(sizes) or (disk.f_files > 0 and disk.f_favail < len(sizes)):
            return errno.ENOSPC
        return None

    def _on_disk(self, length: int) -> int:
        """Bytes a file of ``length`` bytes takes on this file system: whole blocks."""
        return -(-length // self._block) * self._block

    def _path(self, seq: int) -> Path:
        return self.directory / f"{seq:0{NAME_DIGITS}d}{SUFFIX}"

    def _hold_bounds(self) -> None:
        """Drop what is over the age and size bounds, but nothing from a read-only disk: "dropped", a message came
        back at the next start, out of order; it is sent instead."""
        if not self.read_only():
            self.prune()
            self._enforce_size()
            for folder in self._aside:
                self._trim_aside(folder)

    def _trim_aside(self, folder: str) -> None:
        """Delete the oldest files of a set-aside folder while it takes more than the size bound (its newest file is
        kept whatever its size). They were counted and logged as they were set aside, so nothing is counted here."""
        with self._aside_lock:
            deleted = self._aside[folder].trim(self.max_bytes)
        if deleted:
            log.warning("MQTT spool: deleted the %d oldest file(s) of %s/ to keep it within %.2f MiB (mqtt.spool.max_mb)",
                        len(deleted), folder, self.max_bytes / MIB)

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

    def _drop(self, seqs: list[int], why: str) -> int:
        """Remove ``seqs`` and count the events removed here: the pump's age drop and the processing loop's size drop
        can pick the same message, and one removed once was counted twice in ``spool_dropped``. Returns how many
        messages were removed."""
        removed = [meta for meta in map(self._remove, seqs) if meta is not None]
        if removed:
            events = sum(meta.event for meta in removed)
            with self._lock:  # two threads add to it
                self.dropped += events
                total = self.dropped
            log.warning("MQTT spool: dropped %d message(s) (%s): %d event(s), %d started notice(s); %d event(s) "
                        "dropped in total", len(removed), why, events, len(removed) - events, total)
        return len(removed)

    def _read(self, seq: int) -> SpoolEntry | None:
        try:
            header, _, payload = self._path(seq).read_bytes().partition(b"\n")
            meta = json.loads(header)
            entry = SpoolEntry(seq, str(meta["topic"]), payload, float(meta["created"]), self._since_boot_of(meta))
        except FileNotFoundError:  # still in the index: not dropped or acknowledged (those leave it first), but gone
            with self._lock:
                meta = self._index.pop(seq, None)
                if meta is not None:
                    self._bytes -= meta.size
                    self.dropped += meta.event
            if meta is not None:  # found by fault injection: 6 events lost this way, not a line nor a count
                log.error("MQTT spool: message %s is gone from the disk before it was sent (deleted, or its disk "
                          "unplugged) and is lost", self._path(seq))
            return None
        except UNREADABLE as exc:
            self.set_aside(seq, QUARANTINE, f"unreadable ({exc})")
            return None
        problem = damage(meta, entry.payload)
        if problem:
            self.set_aside(seq, QUARANTINE, problem)
            return None
        problem = topic_problem(entry.topic)
        if problem:  # intact, but no broker will ever take it: undeliverable, like a refused one
            self.set_aside(seq, DEAD_LETTER, problem)
            return None
        return entry

    def _load(self) -> int:
        """Index the messages left by an earlier run; returns the highest sequence number (0: none)."""
        left = []
        for stale in self.directory.glob("*" + TMP_SUFFIX):
            if stale.is_file():
                try:
                    _finish_or_delete(stale)
                except OSError as exc:  # a read-only disk: neither renamed nor deleted; its number is not reused
                    log.error("MQTT spool: cannot complete or delete %s (%s); left for a start that can", stale,
                              exc.strerror or exc)
                    left.append(stale)
        named = [p for p in self.directory.glob("*" + SUFFIX) if p.stem.isdigit()]
        for odd in (p for p in named if not p.is_file()):
            log.warning("MQTT spool: ignoring %s (not a regular file; its number is not reused)", odd)
        found = sorted(int(p.stem) for p in named if p.is_file())
        for seq in found:
            meta = self._read_meta(seq)
            if meta is not None:
                self._index[seq] = meta
                self._bytes += meta.size
        if found:
            log.info("MQTT spool: %d message(s) waiting from an earlier run in %s", len(self._index), self.directory)
        # numbers go on after those set aside too: a drained spool began again at 1, and a message set aside
        # later under a number used before replaced the earlier run's file there (a dead letter lost)
        left_here = [int(p.stem) for p in [*named, *left] if p.stem.isdigit()]
        return max([*left_here, *(aside.newest for aside in self._aside.values())])

    def _read_meta(self, seq: int) -> _Meta | None:
        path = self._path(seq)
        try:
            with path.open("rb") as f:
                header = json.loads(f.readline())
            return _Meta(self._on_disk(path.stat().st_size), float(header["created"]), self._since_boot_of(header),
                         not is_started_notice(str(header["topic"])))
        except UNREADABLE as exc:
            self.set_aside(seq, QUARANTINE, f"unreadable header ({exc})")
            return None


class _Aside:
    """The bytes a set-aside folder's files take on disk. No index of them: at 4 KiB a file, a folder at the default
    100 MiB holds 25,600, and an ordered index of those took 6.7 MB, as much again as the rest of the daemon's Python
    heap; the folder is listed only when it is over its bound, and then trimmed to TRIM_TO of it."""

    def __init__(self, folder: Path, on_disk: Callable[[int], int]) -> None:
        self.folder, self._on_disk = folder, on_disk
        files = self._files()
        self.bytes = sum(file.size for file in files)
        self.count = sum(file.event for file in files)
        """Its numbered message files that are events (not started notices), kept by ``add`` and ``trim``: the
        spool's counts begin from it once its opening has quarantined what it could not read and trimmed the folder
        to its bound (read before those, files quarantined at opening went uncounted)."""
        self.newest = files[-1].seq if files else 0
        """The highest number among them at opening: the spool's numbers go on after it."""

    def add(self, size: int, event: bool) -> None:
        self.bytes += size
        self.count += event

    def trim(self, max_bytes: int) -> list[Path]:
        """Delete the oldest files when the folder takes more than ``max_bytes``, down to TRIM_TO of it (the newest file
        stays whatever its size); the files deleted."""
        if self.bytes <= max_bytes:
            return []
        files = self._files()
        held, deleted = sum(file.size for file in files), []
        for file in files[:-1]:
            if held <= max_bytes * TRIM_TO:
                break
            try:
                file.path.unlink(missing_ok=True)
            except OSError as exc:  # read-only meanwhile: left for the next trim
                log.error("MQTT spool: cannot delete %s (%s)", file.path, exc.strerror)
                break
            held -= file.size
            deleted.append(file)
        self.bytes, self.count = held, sum(file.event for file in files) - sum(file.event for file in deleted)
        return [file.path for file in deleted]

    def _files(self) -> list[_AsideFile]:
        """The folder's numbered message files, oldest first."""
        found: list[_AsideFile] = []
        for path in self.folder.glob("*" + SUFFIX) if self.folder.is_dir() else ():
            number = path.stem.removesuffix(STARTED_MARK)
            try:
                if number.isdigit() and path.is_file():
                    found.append(_AsideFile(int(number), path, self._on_disk(path.stat().st_size),
                                            event=number == path.stem))
            except OSError:
                continue  # gone meanwhile
        return sorted(found, key=lambda file: file.seq)


@dataclass(frozen=True)
class _AsideFile:
    """A message file in a set-aside folder."""

    seq: int
    path: Path
    size: int
    """bytes on disk"""
    event: bool
    """an event's, not a started notice's (named with STARTED_MARK)"""


def _started_name(seq: int) -> str:
    """The name of a started notice set aside."""
    return f"{seq:0{NAME_DIGITS}d}{STARTED_MARK}{SUFFIX}"


def _write_durably(path: Path, data: bytes) -> None:
    """Write ``data`` so that ``path`` is either complete or absent after a crash."""
    tmp = path.with_suffix(TMP_SUFFIX)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError:
        _unlink_quietly(tmp)  # a full disk must not leave empty temporaries behind
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _finish_or_delete(tmp: Path) -> None:
    """A temporary left by a crash: renamed into place when it holds a whole message (the power went between its
    fsync and its rename: the event is in no other sink, MQTT is the first), else deleted; said either way, as
    both were deleted without a word."""
    target = tmp.with_suffix(SUFFIX)
    if tmp.stem.isdigit() and not target.exists() and _whole(tmp):
        os.replace(tmp, target)
        log.warning("MQTT spool: %s, a write a crash interrupted, holds a whole message: kept as %s", tmp.name,
                    target.name)
        return
    tmp.unlink()
    log.warning("MQTT spool: deleted %s, a write a crash cut short (the message it held is lost)", tmp.name)


def _whole(path: Path) -> bool:
    """Whether ``path`` holds a header that gives its payload's length and CRC-32, and that payload."""
    try:
        header, _, payload = path.read_bytes().partition(b"\n")
        meta = json.loads(header)
    except UNREADABLE:
        return False
    return (isinstance(meta, dict) and {"topic", "created", "length", "crc32"} <= meta.keys()
            and damage(meta, payload) is None)


def _unlink_quietly(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError:
        pass  # read-only: nothing was written there either


def _nearest_folder(path: Path) -> Path:
    """``path`` or, when it is not there (yet), the nearest folder above it: the file system it would be made on."""
    return next(p for p in (path, *path.parents) if p.is_dir())


def topic_problem(topic: str) -> str | None:
    """Why a broker would refuse to take ``topic`` for a publish, or None."""
    if not topic or any(c in topic for c in "+#\0") or topic.startswith("$"):
        return f"topic {topic!r} cannot be published to"
    return None


def damage(meta: dict, payload: bytes) -> str | None:
    """What is damaged in a message read back, or None (files written before the length and CRC were kept
    in the header pass)."""
    if "length" in meta and len(payload) != meta["length"]:
        return f"payload is {len(payload)} bytes, {meta['length']} were written"
    if "crc32" in meta and zlib.crc32(payload) != meta["crc32"]:
        return "payload does not match its CRC-32"
    return None

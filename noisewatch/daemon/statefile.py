"""Small files kept across restarts (the state directory's JSON, the config ``noisewatch setup`` edits),
written atomically."""

from __future__ import annotations

import errno
import fcntl
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

LOCK_NAME = ".lock"
LOCK_PATIENCE_S = 0.5
"""How long ``FolderLock.take`` tries again a lock held by another process before it says the folder is in use:
``check-config`` takes it for an instant to see whether a listener holds it (``held_elsewhere``), and a listener
starting in that instant was refused its own folder (exit 78, which systemd does not restart)."""
DISK_FAULTS = {errno.EROFS: "on a read-only file system", errno.ENOSPC: "on a full disk",
               errno.EDQUOT: "on a disk over its quota"}
"""A disk that is read-only or full, and how it is said: a fault the daemon rides out (events held in memory, writes
retried), not a config error; exit 78 at start-up kept the unit failed, deaf, after the restart."""


def write_text(path: Path, text: str, mode: int = 0o644, make_parents: bool = True) -> None:
    """Replace ``path`` with ``text`` (file mode ``mode``), so a crash leaves the old file or the new one, never half.
    ``make_parents`` False: its folder is made again if need be, but not the folders above it."""
    path.parent.mkdir(parents=make_parents, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, data: Any) -> None:
    """Replace a running listener's state file ``path`` with ``data`` as JSON, atomically. Its folder, made at
    start-up, is made again if it was deleted, but not the folders above it (the spool's rule): an unplugged disk's
    mount point was filled on the disk below it, where the spool then wrote too, files hidden once it is mounted."""
    write_text(path, json.dumps(data, indent=1, sort_keys=True), make_parents=False)


def read_json(path: Path) -> Any:
    """The JSON in ``path``; None when there is no file. Raises ValueError/OSError for a bad one (garbled into deeply
    nested brackets too: json's RecursionError ended the daemon at every start, as the spool's did)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("nested too deeply to be read") from None


def same_folder(a: Path, b: Path) -> bool:
    """Whether two spellings name one folder (``/x/../x/spool``, a symlink to it): compared as spelled, a reload
    that spelled its own spool folder otherwise was refused as "in use by another listener" (its own lock), or
    would have moved the spool into itself."""
    return os.path.realpath(a) == os.path.realpath(b)


class FolderInUse(Exception):
    """Another process holds the folder's lock."""


class FolderLock:
    """An exclusive lock on a folder (``flock`` on its ``.lock`` file), held while a listener uses the folder: a
    second listener pointed at it (two on one machine, with folders derived alike) is refused instead of both
    rewriting its files. One process shares it between the sink it runs and the one that replaces it at a reload;
    the last to release it lets it go (the kernel does on any exit)."""

    def __init__(self, folder: Path, fd: int | None) -> None:
        self.folder = folder
        self._fd: int | None = fd
        self._holders = 1

    @classmethod
    def take(cls, folder: Path) -> "FolderLock":
        """The folder's lock (the folder made if need be); FolderInUse when another process holds it."""
        try:
            folder.mkdir(parents=True, exist_ok=True)
            fd = os.open(folder / LOCK_NAME, os.O_RDONLY | os.O_CREAT, 0o644)  # read-only: the disk may turn ro
        except OSError as exc:
            if exc.errno not in DISK_FAULTS:
                raise
            if not folder.is_dir():  # a read-only or full disk it cannot be made on: nothing there for two to rewrite
                return cls(folder, None)
            fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)  # no .lock yet on a read-only or full disk: the folder's own
        give_up = time.monotonic() + LOCK_PATIENCE_S
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if time.monotonic() < give_up:  # a check-config looking at it lets go at once; a listener does not
                    time.sleep(0.01)
                    continue
                os.close(fd)
                raise FolderInUse(str(folder)) from None
            return cls(folder, fd)

    @classmethod
    def held_elsewhere(cls, folder: Path) -> bool:
        """Whether another process holds the folder's lock (``check-config`` says so). Looked at, not kept (tried and let
        go at once: ``take`` waits out that instant), and nothing is made: no folder, no ``.lock``. Not for a folder
        this process holds: flock tells no process from another open of the same file."""
        try:
            fd = os.open(folder / LOCK_NAME, os.O_RDONLY)
        except FileNotFoundError:  # none yet, or a read-only disk's folder locked in its place (``take``)
            try:
                fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
            except OSError:
                return False  # no folder: nobody uses it
        except OSError:
            return False  # not a folder, or unreadable: a problem of its own (``sink_problems``), not another's lock
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)  # lets go of the lock, if it was taken here
        return False

    def share(self) -> "FolderLock":
        """The same lock, held once more (a sink taking over from the one that holds it)."""
        self._holders += 1
        return self

    def release(self) -> None:
        self._holders -= 1
        if self._holders == 0 and self._fd is not None:
            os.close(self._fd)
            self._fd = None

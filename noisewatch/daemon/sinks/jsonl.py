"""JSON-lines sink: one strict-JSON object per message (its wire form), one write per line.

Always available (``--jsonl PATH`` or ``jsonl.path``; ``-`` is stdout), and the ground truth the
MQTT tests compare against. A write that fails (disk full, file system gone read-only) is logged
once, counted, and the daemon carries on; the next write that works is logged too. A file system already
read-only at start-up is the same disk fault, not a config error (it would keep MQTT from starting too): each
line tries to open the file, and is counted. A named pipe (FIFO) feeding another program is opened and written
without blocking: with no reader yet, or a reader that stalls and lets the pipe fill, lines are lost and counted
the same way, and writing resumes once a reader takes them (the processing loop never waits for one); so is
stdout when it is a pipe (``--jsonl - | program``), but for a file replayed at ``--speed 0``. A file is written
without a buffer, a whole line per write: a line that fails is lost and counted, never written later behind the
lines that followed it, and never left half-written in a regular file (a pipe or a terminal cannot take a write
back; a pipe takes a line of up to 4 KiB whole or not at all).
"""

from __future__ import annotations

import errno
import logging
import os
import select
import stat
import sys
import threading
from pathlib import Path

from noisewatch.daemon.messages import HealthFigures, Message
from noisewatch.daemon.statefile import DISK_FAULTS

log = logging.getLogger(__name__)

FILE_MODE = 0o644
APPEND_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC | os.O_NONBLOCK
"""How the sink opens its file, and ``check-config`` tries it: non-blocking, for opening a named pipe would
otherwise wait for a reader, and writing to it for room."""
WAITED_FOR = {**{code: f"is {words}" for code, words in DISK_FAULTS.items()}, errno.ENXIO: "is a named pipe with no reader"}
"""Why a file cannot be opened now but may be later (a disk fault, a program not reading yet): not config errors."""


class JsonlSink:
    def __init__(self, path: str, failed_writes: int = 0, batch: bool = False,
                 stopping: threading.Event | None = None) -> None:
        """Opens ``path`` for appending (its folder made; ``-``: stdout); raises OSError when it cannot.
        ``failed_writes``: the count of the sink this one replaces at a reload (a lifetime figure in stats).
        ``batch``: a file replayed as fast as it goes (``--speed 0``), where a stdout pipe's reader is waited for
        (``| less`` or ``| jq`` lost lines otherwise), as the file's reading waits for processing: nothing live
        falls behind meanwhile; but not once ``stopping`` is set (SIGTERM, Ctrl-C): a reader that took nothing held
        the process past its stop for as long as it stalled."""
        self.path = path
        self._fd: int | None = None
        self._regular = False
        self._pipe = False
        self.failed_writes = failed_writes
        self._failing = False
        stdout_pipe = (path == "-" and sys.stdout is not None  # None: started with it closed
                       and stat.S_ISFIFO(os.fstat(sys.stdout.fileno()).st_mode))
        self._stdout_pipe = stdout_pipe and not batch
        """stdout is a pipe (``--jsonl - | program``): a line goes only where it fits now, as to a named pipe."""
        self._waited_pipe = stdout_pipe and batch
        """stdout is a pipe whose reader a replay at ``--speed 0`` waits for (until ``stopping``)."""
        self._stopping = stopping
        if path != "-":
            try:
                self._open_file()
            except OSError as exc:
                if exc.errno not in WAITED_FOR:
                    raise
                self._failing = True  # each line tries to open it, and is counted
                log.error("JSON lines: %s %s; messages are not logged there until it takes writes again", path,
                          WAITED_FOR[exc.errno])

    def send(self, message: Message) -> None:
        line = message.encode() + b"\n"
        try:
            self._write(line)
        except OSError as exc:
            self._failed(exc)
            return
        if self._failing:
            self._failing = False
            log.warning("JSON lines: writing to %s works again (%d message(s) lost)", self.path, self.failed_writes)

    def health(self) -> HealthFigures:
        return {"jsonl_failed_writes": self.failed_writes}

    def report_wanted(self) -> bool:
        return False

    def threshold_overrides(self) -> dict[str, float]:
        return {}

    def reopen(self) -> None:
        """Write to the file now at ``path`` (logrotate moved the old one away) even when a reload is refused:
        lines would otherwise go on into the rotated file, or a compressed and deleted one. A failure keeps
        the open file, with a log line."""
        if self._fd is None:
            return  # stdout, or a file not open yet (the next line opens it)
        try:
            fd = self._open()
        except OSError as exc:
            log.error("JSON lines: cannot reopen %s (%s); still writing to the file open before", self.path,
                      exc.strerror or exc)
            return
        old, self._fd = self._fd, fd
        self._kind(fd)
        os.close(old)

    def close(self) -> None:
        try:
            if self.path == "-":
                if sys.stdout is not None:
                    sys.stdout.flush()
            elif self._fd is not None:
                os.close(self._fd)
        except OSError as exc:
            self._failed(exc)

    def _open_file(self) -> int:
        self._fd = self._open()
        self._kind(self._fd)  # /dev/stdout may be a pipe
        return self._fd

    def _kind(self, fd: int) -> None:
        mode = os.fstat(fd).st_mode
        self._regular, self._pipe = stat.S_ISREG(mode), stat.S_ISFIFO(mode)

    def _open(self) -> int:
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        return os.open(self.path, APPEND_FLAGS | os.O_CREAT, FILE_MODE)

    def _write(self, line: bytes) -> None:
        """The whole line, or nothing: a write cut short by a full disk is taken back."""
        if self.path == "-":
            if sys.stdout is None:  # started with it closed: a write that cannot be made, as to a gone reader
                raise OSError(errno.EBADF, "stdout is closed")
            if self._stdout_pipe and not _room_in(sys.stdout.fileno()):  # a blocking write waited for its reader
                raise BlockingIOError(errno.EAGAIN, "the pipe is full: its reader has not taken a page of it")
            if self._waited_pipe:
                self._wait_for_reader(sys.stdout.fileno())
            sys.stdout.write(line.decode())
            sys.stdout.flush()
            return
        fd = self._fd if self._fd is not None else self._open_file()  # read-only at start-up: remounted since?
        if self._failing and self._pipe and not _room_in(fd):
            raise BlockingIOError(errno.EAGAIN, "the pipe is still full: its reader has not taken a page of it")
        end = os.lseek(fd, 0, os.SEEK_END) if self._regular else 0
        written = os.write(fd, line)
        if written < len(line):
            if self._regular:
                os.ftruncate(fd, end)
            raise OSError(f"only {written} of {len(line)} bytes written")

    def _wait_for_reader(self, pipe: int) -> None:
        """Until the pipe's reader has taken a page of it, looking every 0.2 s whether the service is to stop."""
        while not _room_in(pipe, timeout_ms=0 if self._stop_asked() else 200):
            if self._stop_asked():  # each line after a stop fails at once: 0.2 s a line outlasted the stop's 2 s
                raise BlockingIOError(errno.EAGAIN, "stopping while the pipe's reader takes nothing")

    def _stop_asked(self) -> bool:
        return self._stopping is not None and self._stopping.is_set()

    def _failed(self, exc: OSError) -> None:
        self.failed_writes += 1
        if not self._failing:
            self._failing = True
            log.error("JSON lines: cannot write to %s (%s); messages are not logged there until it works again",
                      self.path, exc.strerror or exc)


def _room_in(pipe: int, timeout_ms: int = 0) -> bool:
    """Whether the reader of a pipe it had filled took some of it back (a page at least), or is gone (the write then
    fails, and says so). Without this check a short line squeezed into what was left of the last page: the log said
    "works again" while the reader still read nothing, then the next line failed with a second ERROR, and the
    reader got a stream with holes in it rather than one gap."""
    poll = select.poll()
    poll.register(pipe, select.POLLOUT)
    return bool(poll.poll(timeout_ms))

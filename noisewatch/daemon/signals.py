"""The daemon's signals, in a module of their own: the command line installs them before it imports the service
(numpy, pydantic, the pipeline: 0.3 s on a fast machine, when a SIGHUP ended ``noisewatch run`` with 129 and a Ctrl-C
printed a traceback)."""

from __future__ import annotations

import os
import signal
import threading

_installed: Signals | None = None


def installed() -> Signals:
    """The process's signals, installed at the first call (from the main thread)."""
    global _installed
    if _installed is None:
        _installed = Signals().install()
    return _installed


class Signals:
    """SIGTERM/SIGINT ask to stop, SIGHUP to reload; installed before anything slow (:func:`installed`, by the command
    line before it imports the service), so that a SIGHUP during start-up is a reload once the service runs, not the
    default action (which ends the process).

    No handler sets an Event: a handler runs between two bytecodes of the main thread, which may hold that very
    Event's lock then (in its ``wait`` or ``clear``, or in the handler of the signal before). The main thread
    deadlocked on itself, and each further signal nested one more handler in the wait (a SIGHUP storm ended in
    RecursionError, exit 1). Python's C handler writes each signal's number to a pipe (``signal.set_wakeup_fd``), and
    a thread of its own reads it and sets the Event."""

    def __init__(self) -> None:
        self.noted = threading.Event()
        """Set with either of the two: what waits for a stop but must also end at a reload (the lost input's wait
        between attempts, which looked at the reload once a second) waits for this one."""
        self.stop = _AlsoSets(self.noted)
        self.reload = _AlsoSets(self.noted)

    def install(self) -> "Signals":
        read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
        # non-blocking, as set_wakeup_fd requires. A full pipe would lose any signal, a SIGTERM behind SIGHUPs too, but
        # it does not fill: a flood reached a process held in one C call (the relay without the GIL) ~2,300 times a
        # second, 64 KiB in ~28 s; with the relay running, 1.4 KiB was the most it held under 2 million kill()s
        os.set_blocking(write_fd, False)
        events: dict[int, threading.Event] = {signal.SIGTERM: self.stop, signal.SIGINT: self.stop,
                                             signal.SIGHUP: self.reload}
        threading.Thread(target=_relay, args=(read_fd, events), name="signals", daemon=True).start()
        signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)  # before the handlers: a signal caught by one of
        for signum in events:  # them between the two ran a handler that does nothing, and reached no pipe (lost)
            signal.signal(signum, _noted_by_the_pipe)
        return self


class _AlsoSets(threading.Event):
    """An Event whose ``set`` sets another after it (whoever sets it: the relay, ``Service.stop``, a test)."""

    def __init__(self, also: threading.Event) -> None:
        super().__init__()
        self._also = also

    def set(self) -> None:
        super().set()
        self._also.set()


def _noted_by_the_pipe(signum: int, frame: object) -> None:
    """A Python-level handler must be there (without one a signal takes its default action, and nothing reaches the
    wakeup pipe); the pipe's reader does the work."""


def _relay(read_fd: int, events: dict[int, threading.Event]) -> None:
    """Sets the Event of each signal number read from the wakeup pipe; other handled signals' numbers are not ours."""
    while chunk := os.read(read_fd, 64):
        for signum in chunk:
            event = events.get(signum)  # an IntEnum key is found by its number
            if event is not None:
                event.set()

"""Logging set-up: journald-friendly lines under systemd, timestamped lines elsewhere.

Under systemd (stderr is the journal stream named by ``$JOURNAL_STREAM``) each line starts with
its syslog priority, ``<4>audio device lost``, which journald turns into the entry's priority;
the journal adds its own timestamps, so the line has none. Anywhere else (a terminal, a pipe,
a file) lines look like ``2025-01-01 12:00:00,123 WARNING noisewatch.daemon: audio device lost``.

Repeated warnings (a flapping device, an unreachable broker) are rate limited per message
template: after :data:`REPEAT_BURST` in :data:`REPEAT_INTERVAL_S`, the rest of that interval is
dropped and counted, and the next one to get through says how many were suppressed; at exit (or when
a second ``setup`` replaces the handler) the last one suppressed is written, with the count, so that none goes
unsaid.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TextIO

from noisewatch.config import LoggingSection

JOURNAL_STREAM_ENV = "JOURNAL_STREAM"
REPEAT_BURST = 5
"""Identical warnings let through per interval."""
REPEAT_INTERVAL_S = 60.0
"""Length of a rate-limit interval, seconds."""
_MAX_TRACKED = 256
"""Templates remembered by the rate limiter; expired ones are forgotten beyond this."""

SYSLOG_PRIORITY = {logging.CRITICAL: 2, logging.ERROR: 3, logging.WARNING: 4, logging.INFO: 6, logging.DEBUG: 7}
_JOURNAL_FORMAT = "<%(priority)d>%(name)s: %(message)s"
_PLAIN_FORMAT = "%(asctime)s.%(msecs)03dZ %(levelname)s %(name)s: %(message)s"
_PLAIN_TIME = "%Y-%m-%dT%H:%M:%S"


def stderr_is_journal(stream: TextIO = sys.stderr) -> bool:
    """True when ``stream`` is the journal connection systemd describes in ``$JOURNAL_STREAM``.

    systemd sets the variable to ``device:inode`` of the stream; comparing it (as sd_journal
    docs advise) avoids journal formatting when a child's stderr was redirected elsewhere.
    """
    expected = os.environ.get(JOURNAL_STREAM_ENV, "")
    try:
        info = os.fstat(stream.fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return expected == f"{info.st_dev}:{info.st_ino}"


class JournalFormatter(logging.Formatter):
    """``<priority>logger: message``; continuation lines (tracebacks) keep the same priority."""

    def __init__(self) -> None:
        super().__init__(_JOURNAL_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        priority = syslog_priority(record.levelno)
        record.priority = priority  # read by the format string
        text = super().format(record)
        prefix = f"<{priority}>"
        return text.replace("\n", "\n" + prefix)


class UtcFormatter(logging.Formatter):
    """``2026-12-04T17:02:09.997Z INFO logger: message``: UTC, as every time the daemon publishes (events,
    levels) is stamped; a local clock beside them read an hour or more off."""

    def __init__(self) -> None:
        super().__init__(_PLAIN_FORMAT, _PLAIN_TIME)
        self.converter = time.gmtime


def syslog_priority(levelno: int) -> int:
    """The syslog priority of a logging level (levels between two named ones round down)."""
    return next((prio for level, prio in sorted(SYSLOG_PRIORITY.items(), reverse=True) if levelno >= level), 7)


@dataclass
class _Interval:
    start: float
    count: int = 0
    suppressed: int = 0
    last: logging.LogRecord | None = None
    """The latest record suppressed: written at exit if none of its kind got through since."""


class RepeatLimiter(logging.Filter):
    """Lets at most ``burst`` records of one template (logger, level, msg) through per interval.

    Applies to ``min_level`` and above only, so debug output stays complete.
    """

    def __init__(
        self,
        burst: int = REPEAT_BURST,
        interval_s: float = REPEAT_INTERVAL_S,
        min_level: int = logging.WARNING,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self.burst, self.interval_s, self.min_level, self._clock = burst, interval_s, min_level, clock
        self._intervals: dict[tuple[str, int, str], _Interval] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < self.min_level:
            return True
        key, now = (record.name, record.levelno, str(record.msg)), self._clock()
        interval = self._intervals.get(key)
        if interval is None or now - interval.start >= self.interval_s:
            self._forget_expired(now)
            self._intervals[key] = _Interval(start=now, count=1)
            if interval is not None and interval.suppressed:
                _append(record, f" ({interval.suppressed} similar messages suppressed)")
            return True
        interval.count += 1
        if interval.count <= self.burst:
            return True
        interval.suppressed += 1
        interval.last = record
        return False

    def unsaid(self) -> list[logging.LogRecord]:
        """Per template with records suppressed and not yet counted aloud: the last of them, saying how many;
        forgotten once taken (a dead letter's line at a stop was never written, nor counted)."""
        records = []
        for interval in list(self._intervals.values()):  # threads may still log at exit
            if interval.suppressed and interval.last is not None:
                _append(interval.last, f" (the last of {interval.suppressed} similar messages suppressed)")
                records.append(interval.last)
            interval.suppressed, interval.last = 0, None
        return records

    def _forget_expired(self, now: float) -> None:
        """Bound memory: when many templates are tracked, drop the ones with nothing pending."""
        if len(self._intervals) < _MAX_TRACKED:
            return
        for key in [k for k, v in self._intervals.items() if now - v.start >= self.interval_s and not v.suppressed]:
            del self._intervals[key]


def _append(record: logging.LogRecord, note: str) -> None:
    """Freeze the record's message with ``note`` appended (args are already substituted)."""
    record.msg, record.args = record.getMessage() + note, None


class _Handler(logging.StreamHandler):
    """The handler :func:`setup` installs, so a second call replaces it instead of doubling lines."""

    def close(self) -> None:
        """At exit (``logging.shutdown``) or when replaced: what the limiter held back, in a line per kind."""
        for limiter in [f for f in self.filters if isinstance(f, RepeatLimiter)]:
            for record in limiter.unsaid():
                self.emit(record)  # emit, not handle: past the filter
        self.flush()
        super().close()


def setup(section: LoggingSection, stream: TextIO | None = None) -> logging.Handler:
    """Route the root logger to ``stream`` (stderr) per ``section``; safe to call again on reload."""
    stream = sys.stderr if stream is None else stream
    journal = section.format == "journal" or (section.format == "auto" and stderr_is_journal(stream))
    handler = _Handler(stream)
    handler.setFormatter(JournalFormatter() if journal else UtcFormatter())
    handler.addFilter(RepeatLimiter())
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _Handler)]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(section.level.upper())
    return handler

"""Logging: journal priorities without timestamps under systemd, plain lines elsewhere, repeat limit."""

from __future__ import annotations

import io
import logging
import os
import re
import tempfile
import time
from collections.abc import Iterator

import pytest

from noisewatch import logs
from noisewatch.config import LoggingSection


@pytest.fixture(autouse=True)
def restore_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:], root.level = handlers, level


def emit(section: LoggingSection, *records: tuple[int, str]) -> list[str]:
    stream = io.StringIO()
    logs.setup(section, stream)
    for level, text in records:
        logging.getLogger("noisewatch.test").log(level, "%s", text)
    return stream.getvalue().splitlines()


def test_journal_lines_carry_syslog_priorities_and_no_timestamp() -> None:
    lines = emit(LoggingSection(format="journal", level="debug"), (logging.WARNING, "device lost"), (logging.DEBUG, "hop"))
    assert lines == ["<4>noisewatch.test: device lost", "<7>noisewatch.test: hop"]


def test_journal_tracebacks_keep_their_priority() -> None:
    stream = io.StringIO()
    logs.setup(LoggingSection(format="journal"), stream)
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logging.getLogger("noisewatch.test").exception("failed")
    assert all(line.startswith("<3>") for line in stream.getvalue().splitlines())


def test_plain_lines_have_timestamps_and_level_filter() -> None:
    lines = emit(LoggingSection(format="plain", level="info"), (logging.INFO, "listening"), (logging.DEBUG, "hidden"))
    assert len(lines) == 1
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z INFO noisewatch\.test: listening", lines[0])


def test_plain_lines_are_stamped_in_utc_as_the_events_are(monkeypatch: pytest.MonkeyPatch) -> None:
    """With TZ=Europe/Berlin a log line read 18:02:09 beside "heard siren from ...T17:02:14.174Z"."""
    monkeypatch.setenv("TZ", "Europe/Berlin")
    time.tzset()
    try:
        before = time.strftime("%Y-%m-%dT%H:%M", time.gmtime())
        line = emit(LoggingSection(format="plain", level="info"), (logging.INFO, "heard"))[0]
        after = time.strftime("%Y-%m-%dT%H:%M", time.gmtime())
    finally:
        monkeypatch.undo()
        time.tzset()
    assert line[:16] in (before, after), line


def test_auto_format_follows_journal_stream(monkeypatch: pytest.MonkeyPatch) -> None:
    with tempfile.TemporaryFile("w+") as stream:
        info = os.fstat(stream.fileno())
        monkeypatch.setenv(logs.JOURNAL_STREAM_ENV, f"{info.st_dev}:{info.st_ino}")
        assert logs.stderr_is_journal(stream)
        logs.setup(LoggingSection(format="auto"), stream)
        logging.getLogger("noisewatch.test").warning("under systemd")
        monkeypatch.setenv(logs.JOURNAL_STREAM_ENV, "1:2")  # systemd's stream, but ours was redirected
        assert not logs.stderr_is_journal(stream)
        stream.seek(0)
        assert stream.read() == "<4>noisewatch.test: under systemd\n"


def test_setup_twice_does_not_double_lines() -> None:
    stream = io.StringIO()
    logs.setup(LoggingSection(format="journal"), stream)
    logs.setup(LoggingSection(format="journal"), stream)
    logging.getLogger("noisewatch.test").error("once")
    assert stream.getvalue() == "<3>noisewatch.test: once\n"


def limited_journal(burst: int, now: list[float]) -> tuple[logging.Handler, io.StringIO]:
    """Journal lines into a string, through a limiter of ``burst`` per 60 s on the clock ``now[0]``."""
    stream = io.StringIO()
    handler = logs.setup(LoggingSection(format="journal"), stream)
    handler.filters[:] = [logs.RepeatLimiter(burst=burst, interval_s=60, clock=lambda: now[0])]
    return handler, stream


def test_repeated_warnings_are_suppressed_and_counted() -> None:
    now = [0.0]
    _, stream = limited_journal(3, now)
    log = logging.getLogger("noisewatch.test")
    for attempt in range(10):
        log.warning("broker unreachable (attempt %d)", attempt)
        log.info("info is never limited %d", attempt)
    now[0] = 61.0
    log.warning("broker unreachable (attempt %d)", 10)
    warnings = [line for line in stream.getvalue().splitlines() if line.startswith("<4>")]
    assert warnings[:3] == [f"<4>noisewatch.test: broker unreachable (attempt {i})" for i in range(3)]
    assert warnings[3:] == ["<4>noisewatch.test: broker unreachable (attempt 10) (7 similar messages suppressed)"]
    assert stream.getvalue().count("info is never limited") == 10


def test_what_was_suppressed_is_said_at_exit() -> None:
    """Found by a docs check: 6 events went to the dead-letter folder and 5 lines said so; the sixth, suppressed,
    was counted only on a later line of its kind, which a stop never wrote."""
    handler, stream = limited_journal(2, [0.0])
    log = logging.getLogger("noisewatch.test")
    for n in range(5):
        log.warning("event %s set aside", n)
    assert stream.getvalue().count("set aside") == 2
    handler.close()  # as logging.shutdown, which the interpreter runs at exit, closes it
    lines = stream.getvalue().splitlines()
    assert lines[-1] == "<4>noisewatch.test: event 4 set aside (the last of 3 similar messages suppressed)"
    handler.close()  # said once, not again
    assert stream.getvalue().splitlines() == lines

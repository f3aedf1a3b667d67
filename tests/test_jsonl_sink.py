"""The JSON-lines sink on a named pipe (FIFO): what a stalled reader gets, and what the log says."""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from noisewatch.daemon.messages import AudioState, Status, stamped
from noisewatch.daemon.sinks.jsonl import JsonlSink

PAGE = 4096
"""The smallest pipe Linux makes: one page, one slot."""


def status(size: int) -> Status:
    """A message whose JSON line (newline included) is ``size`` bytes long."""
    message = stamped(Status(AudioState.AUDIO_ERROR, error=""), "test")
    return stamped(Status(AudioState.AUDIO_ERROR, error="x" * (size - len(message.encode()) - 1)), "test")


@contextlib.contextmanager
def stalled_reader(fifo: Path) -> Iterator[int]:
    """A reader's end of ``fifo`` (a one-page pipe) that reads only when the test says."""
    os.mkfifo(fifo)
    fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PAGE)
    try:
        yield fd
    finally:
        os.close(fd)


def read_lines(fd: int) -> list[bytes]:
    data = b""
    with contextlib.suppress(BlockingIOError):
        while chunk := os.read(fd, 65536):
            data += chunk
    assert data.endswith(b"\n"), data[-80:]
    return data.splitlines()


def test_a_stalled_reader_loses_one_run_of_lines_said_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Found by review: once the pipe was full, a line short enough for what was left of its last page still went
    in. The log said "works again" while the reader read nothing, the next line failed with a second ERROR (the
    stalled-reader daemon test, f24, depended on the order of its stats and scores lines), and the reader got lines
    with holes between them. Now the lines are lost from the first that does not fit until the reader takes a
    page back."""
    with stalled_reader(tmp_path / "fifo") as reader:
        sink = JsonlSink(str(tmp_path / "fifo"))
        with caplog.at_level(logging.WARNING, logger="noisewatch.daemon.sinks.jsonl"):
            for _ in range(13):
                sink.send(status(300))  # 3900 bytes: 196 left
            assert sink.failed_writes == 0
            sink.send(status(300))  # does not fit
            sink.send(status(150))  # would fit in what is left
            assert sink.failed_writes == 2
            assert [r.levelname for r in caplog.records] == ["ERROR"], caplog.text
            assert len(read_lines(reader)) == 13  # the reader comes back
            sink.send(status(150))
            assert sink.failed_writes == 2 and "works again (2 message(s) lost)" in caplog.text, caplog.text
            assert [json.loads(line)["error"] for line in read_lines(reader)] == [status(150).error]
        sink.close()

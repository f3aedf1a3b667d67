"""JSON-lines sink: one strict-JSON object per message (its wire form), flushed per line.

Always available (``--jsonl PATH`` or ``jsonl.path``; ``-`` is stdout), and the ground truth the
MQTT tests compare against. A write that fails (disk full, file system gone read-only) is logged
once, counted, and the daemon carries on; the next write that works is logged too.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import TextIO

from noisewatch.daemon.messages import Message

log = logging.getLogger(__name__)


def open_log(path: str) -> TextIO:
    """The JSON-lines file opened for appending (its folder made); raises OSError when it cannot be."""
    if path == "-":
        return sys.stdout
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return open(path, "a", encoding="utf-8")


class JsonlSink:
    def __init__(self, path: str) -> None:
        self.path = path
        self._stream = open_log(path)
        self.failed_writes = 0
        self._failing = False

    def send(self, message: Message) -> None:
        try:
            self._stream.write(message.encode().decode() + "\n")
            self._stream.flush()
        except OSError as exc:
            self._failed(exc)
            return
        if self._failing:
            self._failing = False
            log.warning("JSON lines: writing to %s works again (%d message(s) lost)", self.path, self.failed_writes)

    def health(self) -> dict[str, int]:
        return {"jsonl_failed_writes": self.failed_writes}

    def threshold_overrides(self) -> dict[str, float]:
        return {}

    def close(self) -> None:
        try:
            if self._stream is sys.stdout:
                self._stream.flush()
            else:
                self._stream.close()
        except OSError as exc:
            self._failed(exc)

    def _failed(self, exc: OSError) -> None:
        self.failed_writes += 1
        if not self._failing:
            self._failing = True
            log.error("JSON lines: cannot write to %s (%s); messages are not logged there until it works again",
                      self.path, exc.strerror or exc)

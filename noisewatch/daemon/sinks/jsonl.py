"""JSON-lines sink: one object per message, ``{"type": kind, ...payload}``, flushed per line.

Always available (``--jsonl PATH`` or ``jsonl.path``; ``-`` is stdout), and the ground truth the
MQTT tests compare against.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, TextIO


class JsonlSink:
    def __init__(self, path: str) -> None:
        self._own = path != "-"
        if self._own:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._stream: TextIO = open(path, "a", encoding="utf-8") if self._own else sys.stdout

    def send(self, kind: str, payload: dict[str, Any]) -> None:
        self._stream.write(json.dumps({"type": kind, **payload}, separators=(",", ":")) + "\n")
        self._stream.flush()

    def close(self) -> None:
        if self._own:
            self._stream.close()
        else:
            self._stream.flush()

"""Fault-suite helpers: the real daemon as a subprocess and what a user can see of it.

A user sees exit codes and stderr, the JSON-lines log, what a subscriber receives, the files in
the spool directory, the ``stats`` counters and the process's open sockets; these helpers read
exactly those, nothing inside the process.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import yaml
from conftest import ROOT
from daemon_run import json_lines, read_jsonl, strict_json
from mqtt_broker import HOST, Broker, Collector

from noisewatch.daemon.messages import Event, Started
from noisewatch.daemon.sinks.spool import Spool

PREFIX = "noisewatch/faults"
RATE = 22050
CLI = (sys.executable, "-m", "noisewatch.cli")
NOT_JSON_TOPICS = ("status", "state/")
"""Topics under the prefix whose payloads are plain words (online/offline, ON/OFF), not JSON."""
SCENE = ROOT / "samples" / "scene.flac"
"""33 s: siren at 5-9 s, dog bark at 14-17 s, jackhammer at 22-25 s."""
SCENE_EVENTS = 3
EVENTS = f"{PREFIX}/events"
STATUS = f"{PREFIX}/status"
STATS = f"{PREFIX}/stats"
CONFIG_ERROR = 78
PIPE_BUF = 4096
"""The smallest pipe Linux makes (one page): a reader that never reads leaves it full after a few lines."""


@dataclass(frozen=True)
class Outcome:
    """A finished (or timed-out: ``returncode`` None) command."""

    returncode: int | None
    stderr: str
    elapsed_s: float

    @property
    def lines(self) -> list[str]:
        return self.stderr.strip().splitlines()


def cli(*args: str, timeout: float) -> Outcome:
    """``noisewatch ARGS``; a command still running after ``timeout`` is killed and reported as None."""
    started = time.monotonic()
    try:
        done = subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        stderr = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else exc.stderr or ""
        return Outcome(None, stderr, time.monotonic() - started)
    return Outcome(done.returncode, done.stderr, time.monotonic() - started)


def write_config(path: Path, port: int | None = None, mqtt: dict[str, Any] | None = None, **sections: Any) -> Path:
    """A config file; with ``port``, MQTT to the test broker under PREFIX, its spool beside the file."""
    data: dict[str, Any] = {"device_id": "faults", **sections}
    if port is not None:
        data["mqtt"] = {"enabled": True, "host": HOST, "port": port, "topic_prefix": PREFIX, "keepalive_s": 5,
                        "reconnect_min_s": 0.1, "reconnect_max_s": 0.5, "spool": {"directory": "spool"},
                        **(mqtt or {})}
    path.write_text(yaml.safe_dump(data))
    return path


class Daemon:
    """``noisewatch run`` in its own process; stderr goes to a file next to the JSON-lines log."""

    def __init__(self, config: Path, audio: Path, speed: float, jsonl: Path | str) -> None:
        self.jsonl = Path(jsonl)
        self.log = config.with_name(config.stem + ".stderr")
        command = [*CLI, "run", "--config", str(config), "--input", str(audio), "--speed", str(speed),
                   "--jsonl", str(jsonl)]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log)

    def wait(self, timeout: float) -> int | None:
        """The exit code, or None if it is still running after ``timeout``."""
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def hup(self) -> None:
        os.kill(self.proc.pid, signal.SIGHUP)

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def messages(self, kind: str) -> list[dict[str, Any]]:
        """Lines of one kind from the JSON-lines log (strict JSON)."""
        return [line for line in read_jsonl(self.jsonl) if line.get("type") == kind]

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def sockets(self) -> int:
        """Open socket descriptors of the process, as /proc shows them."""
        fd_dir = Path(f"/proc/{self.proc.pid}/fd")
        count = 0
        for fd in fd_dir.iterdir():
            try:
                count += os.readlink(fd).startswith("socket:")
            except FileNotFoundError:
                continue  # closed while we looked
        return count


def json_topics(collector: Collector) -> list[tuple[str, bytes]]:
    """(topic, payload) of every message under PREFIX that carries JSON."""
    own = [(t, p) for t, p, _ in collector.messages if t.startswith(PREFIX + "/")]
    return [(t, p) for t, p in own if not t.removeprefix(PREFIX + "/").startswith(NOT_JSON_TOPICS)]


def event_ids(collector: Collector, topic: str = f"{PREFIX}/events") -> list[str]:
    """Ids of the events a subscriber received, first arrival order (delivery is at least once)."""
    return list(dict.fromkeys(str(json.loads(p).get("id")) for p in collector.on(topic)))


def stats_value(collector: Collector, daemon: Daemon, key: str) -> Any:
    """The latest value of a ``stats`` counter, over MQTT or in the JSON-lines log (None: never reported)."""
    reports = [strict_json(p) for p in collector.on(f"{PREFIX}/stats")] + daemon.messages("stats")
    values = [report[key] for report in reports if key in report]
    return max(values) if values else None


def spool_with(directory: Path, messages: list[tuple[str, dict[str, Any]]]) -> list[Path]:
    """Messages written by the daemon's own spool code (its format, whatever integrity data it adds)."""
    spool = Spool(directory, max_mb=50.0, max_age_h=168.0)
    written = []
    for topic, payload in messages:
        before = set(directory.iterdir())
        spool.append(topic, json.dumps(payload).encode())
        (new,) = set(directory.iterdir()) - before
        written.append(new)
    return written


def spooled_event(n: int) -> dict[str, Any]:
    """An event payload as an earlier run would have spooled it: a whole message (its type, schema, end, levels and
    model), as the daemon writes one, so a subscriber's decoder takes it."""
    return Event(id=f"spooled-{n}", label="siren", confidence=0.9, mean_confidence=0.8, start="2026-01-01T00:00:00.000Z",
                 end="2026-01-01T00:00:01.000Z", offset_s=float(n), duration_s=1.0, peak_dbfs=-12.0, mean_dbfs=-20.0,
                 model="urban11@test", device="faults").to_json()


def started_notice(n: int) -> dict[str, Any]:
    """The started notice of ``spooled_event(n)``, as the daemon spools one before it."""
    return Started(id=f"spooled-{n}", label="siren", confidence=0.9, start="2026-01-01T00:00:00.000Z",
                   offset_s=float(n), model="urban11@test", device="faults").to_json()


def silence(path: Path, seconds: float) -> Path:
    sf.write(str(path), np.zeros(int(seconds * RATE), dtype=np.float32), RATE)
    return path


def files_in(directory: Path) -> list[Path]:
    """Regular files directly in ``directory`` (none if it does not exist)."""
    return sorted(p for p in directory.iterdir() if p.is_file()) if directory.is_dir() else []


def start(daemons: list[Daemon], config: Path, audio: Path, speed: float, jsonl: Path | str) -> Daemon:
    daemon = Daemon(config, audio, speed, jsonl)
    daemons.append(daemon)
    return daemon


def logged_ids(daemon: Daemon) -> list[str]:
    return [e["id"] for e in daemon.messages("event")]


def fifo_lines(fd: int) -> list[dict[str, Any]]:
    """Every line the pipe holds (strict JSON each: a half-written one fails here)."""
    data = b""
    with contextlib.suppress(BlockingIOError):
        while chunk := os.read(fd, 65536):
            data += chunk
    return json_lines(data)


@contextlib.contextmanager
def events_refused(tmp_path: Path) -> Iterator[tuple[Path, Path, Collector]]:
    """A broker whose ACL refuses the events topic, a collector on it, a spool holding three events and an MQTT 5
    config (the PUBACK says the refusal): every event a daemon sends goes to ``dead-letter/``."""
    broker = Broker(acl=f"topic readwrite #\ntopic deny {EVENTS}\n").start()
    collector = Collector(broker.port)
    try:
        spool = tmp_path / "spool"
        spool_with(spool, [(EVENTS, spooled_event(n)) for n in (1, 2, 3)])
        yield spool, write_config(tmp_path / "c.yaml", broker.port, mqtt={"protocol": "5"},
                                  stats={"interval_s": 1.0}), collector
    finally:
        collector.close()
        broker.cleanup()

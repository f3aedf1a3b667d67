"""Shared test fixtures: where the real audio lives, and the marker that skips without it."""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from mqtt_broker import Broker, Collector

if TYPE_CHECKING:  # for the annotation only: not numpy, soundfile and the spool in every test process
    from fault_daemon import Daemon
    from home_assistant import HomeAssistant

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("NOISEWATCH_SHARED_DATA", ROOT.parent / "shared" / "data"))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked shared_data are skipped only where ../shared/data is absent."""
    if (SHARED_DATA / "UrbanSound8K").is_dir():
        return
    skip = pytest.mark.skip(reason=f"real audio not found at {SHARED_DATA}")
    for item in items:
        if "shared_data" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    return SHARED_DATA


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return ROOT


@pytest.fixture
def broker() -> Iterator[Broker]:
    """A private mosquitto on a free 127.0.0.1 port, stopped by PID afterwards."""
    started = Broker().start()
    yield started
    started.cleanup()


@pytest.fixture
def no_home_assistant(monkeypatch: pytest.MonkeyPatch) -> None:
    """No Home Assistant on the test broker: after an outage, events need not wait for its return (the waits
    themselves are tested in test_mqtt_sink.py and, with a real one, in test_homeassistant_real.py)."""
    from noisewatch.daemon.sinks import homeassistant_wait

    monkeypatch.setattr(homeassistant_wait, "HA_RECONNECT_WAIT_S", 0.0)


@pytest.fixture
def home_assistant(broker: Broker, tmp_path: Path) -> Iterator[HomeAssistant]:
    """A real Home Assistant on ``broker`` (tests/home_assistant.py), ready, in ``tmp_path``; stopped after the test."""
    from home_assistant import HomeAssistant  # noqa: F811 - here, not in every test process

    ha = HomeAssistant(tmp_path / "ha", broker.port)
    try:
        ha.wait_ready()
        yield ha
    finally:
        ha.stop()


@pytest.fixture
def collector(broker: Broker) -> Iterator[Collector]:
    """A subscriber to everything, with a persistent session (it survives broker restarts)."""
    client = Collector(broker.port, client_id=f"collector-{uuid.uuid4().hex[:8]}")
    yield client
    client.close()


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 64 KiB tmpfs: a disk that can fill up or turn read-only under a running daemon or sink."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k,mode=0700", "tmpfs", str(mount_point)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root or CAP_SYS_ADMIN): {done.stderr.strip()}")
    yield mount_point
    subprocess.run(["umount", "-l", str(mount_point)], check=True)


def remount(disk: Path, mode: str, timeout_s: float = 10.0) -> None:
    """Remount ``disk``; going read-only is refused as busy while a file is open for writing, so retry that."""
    deadline = time.monotonic() + timeout_s
    while True:
        done = subprocess.run(["mount", "-o", f"remount,{mode}", str(disk)], capture_output=True, text=True)
        if done.returncode == 0:
            return
        if "busy" not in done.stderr or time.monotonic() > deadline:
            raise AssertionError(f"remount,{mode} of {disk} kept failing (rc {done.returncode}): {done.stderr.strip()}")
        time.sleep(0.05)


@pytest.fixture
def daemons() -> Iterator[list[Daemon]]:
    """The fault suite's daemons started by a test (``fault_daemon.start``); any still running at the end are
    killed."""
    started: list[Daemon] = []
    yield started
    for daemon in started:
        daemon.kill()

"""The systemd side: the unit verifies cleanly and is hardened, sd_notify reaches a real socket,
and the runtime stack works under the memory rules systemd would apply."""

from __future__ import annotations

import collections
import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from daemon_run import read_jsonl

from noisewatch.daemon import notify

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "systemd" / "noisewatch.service"
MODEL = ROOT / "models" / "urban11.json"
SYSTEM_UNITS = Path("/usr/lib/systemd/system")
MAX_EXPOSURE = 1.6
"""The README's figure (`systemd-analyze security` of systemd 252, Debian 12 and Raspberry Pi OS 12)."""
needs_analyze = pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")


def unit_settings() -> dict[str, list[str]]:
    """Key -> values of the unit file (repeated keys kept in order)."""
    settings: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.lstrip().startswith(("#", "[")):
            key, _, value = line.partition("=")
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


# --- the unit --------------------------------------------------------------------------------------


@needs_analyze
def test_unit_verifies_cleanly(tmp_path: Path) -> None:
    """`systemd-analyze verify` in a throwaway root holding the system units and the installed command."""
    shutil.copytree(SYSTEM_UNITS, tmp_path / SYSTEM_UNITS.relative_to("/"), symlinks=True)
    (tmp_path / "etc/systemd/system").mkdir(parents=True)
    shutil.copy(UNIT, tmp_path / "etc/systemd/system")
    settings = unit_settings()
    daemon = Path(settings["ExecStart"][0].split()[0])
    (tmp_path / daemon.relative_to("/")).parent.mkdir(parents=True)
    shutil.copy(Path(sys.executable).parent / "noisewatch", tmp_path / daemon.relative_to("/"))
    for line in settings.get("ExecReload", []):  # system commands (kill) come from this machine
        command = Path(line.split()[0])
        (tmp_path / command.relative_to("/")).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(command.resolve(), tmp_path / command.relative_to("/"))
    result = subprocess.run(
        ["systemd-analyze", "verify", f"--root={tmp_path}", UNIT.name], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", result.stderr  # parse warnings ("ignoring") exit 0 too


@needs_analyze
def test_unit_exposure_is_at_most_the_readmes_figure() -> None:
    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", "--no-pager", str(UNIT)], capture_output=True, text=True, timeout=60
    )
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout + result.stderr)
    assert match, result.stdout + result.stderr
    assert float(match.group(1)) <= MAX_EXPOSURE


def test_unit_restarts_forever_and_notifies() -> None:
    settings = unit_settings()
    assert settings["Type"] == ["notify"]
    assert settings["Restart"] == ["on-failure"]
    assert settings["StartLimitIntervalSec"] == ["0"]  # no start-limit-hit: retried for as long as it takes
    assert float(settings["WatchdogSec"][0]) > 0
    assert settings["SupplementaryGroups"] == ["audio"] and settings["User"] == ["noisewatch"]


def test_a_config_error_is_not_a_restart_loop(tmp_path: Path) -> None:
    """The daemon's exit code for a bad config is one the unit does not restart on; its one line is the journal's."""
    from noisewatch.config import EX_CONFIG

    assert str(EX_CONFIG) in unit_settings()["RestartPreventExitStatus"][0].split()
    config = tmp_path / "bad.yaml"
    config.write_text("audio:\n  hop_s: -1\n")
    result = subprocess.run([sys.executable, "-m", "noisewatch.cli", "run", "--config", str(config)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == EX_CONFIG and "audio.hop_s" in result.stderr


# --- sd_notify -------------------------------------------------------------------------------------


@pytest.fixture(params=["path", "abstract"])
def notify_socket(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    """A bound AF_UNIX datagram socket, named in $NOTIFY_SOCKET as a path or as '@abstract'."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    if request.param == "path":
        sock.bind(str(tmp_path / "notify"))
        monkeypatch.setenv(notify.SOCKET_ENV, str(tmp_path / "notify"))
    else:
        name = f"noisewatch-test-{tmp_path.name}"
        sock.bind("\0" + name)
        monkeypatch.setenv(notify.SOCKET_ENV, "@" + name)
    sock.settimeout(2)
    with sock:
        yield sock


def test_notifications_reach_the_socket(notify_socket: socket.socket) -> None:
    assert notify.ready() and notify_socket.recv(4096) == b"READY=1"
    assert notify.watchdog() and notify_socket.recv(4096) == b"WATCHDOG=1"
    assert notify.status("listening\non hw:1") and notify_socket.recv(4096) == b"STATUS=listening on hw:1"
    assert notify.stopping() and notify_socket.recv(4096) == b"STOPPING=1"
    assert notify.reloading()
    assert re.fullmatch(rb"RELOADING=1\nMONOTONIC_USEC=\d+", notify_socket.recv(4096))


def test_notify_never_waits_for_a_receiver_that_does_not_read(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Found by a full test run that hung: a notify socket whose reader does not read fills (10 datagrams by
    default), and a blocking send held the processing loop for good. A datagram that does not fit is not sent."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as unread:
        unread.bind(str(tmp_path / "notify"))
        monkeypatch.setenv(notify.SOCKET_ENV, str(tmp_path / "notify"))
        began = time.monotonic()
        sent = [notify.watchdog() for _ in range(5000)]
        assert time.monotonic() - began < 5.0
    assert sent[0] and not sent[-1], sent.count(True)


def test_notify_is_a_no_op_outside_systemd(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(notify.SOCKET_ENV, raising=False)
    assert notify.ready() is False
    monkeypatch.setenv(notify.SOCKET_ENV, str(tmp_path / "nobody-listens"))
    assert notify.watchdog() is False  # an error is swallowed, never raised into the processing loop


def test_watchdog_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(notify.WATCHDOG_PID_ENV, raising=False)
    monkeypatch.delenv(notify.WATCHDOG_USEC_ENV, raising=False)
    assert notify.watchdog_interval() is None
    monkeypatch.setenv(notify.WATCHDOG_USEC_ENV, "30000000")
    assert notify.watchdog_interval() == 30.0
    monkeypatch.setenv(notify.WATCHDOG_PID_ENV, "1")  # meant for another process
    assert notify.watchdog_interval() is None


# --- MemoryDenyWriteExecute -------------------------------------------------------------------------

MDWE_PROBE = """
import mmap, sys
sys.path.insert(0, {tests!r})
from seccomp_mdwe import deny_write_execute
deny_write_execute()
try:
    mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    print("wx-allowed")
except PermissionError:
    print("wx-denied")
"""

MDWE_INFERENCE = """
import numpy as np
from noisewatch.bundle import load_bundle
from noisewatch.features import extract
bundle = load_bundle({model!r})
model = bundle.open_model()
t = np.arange(bundle.features.window_samples) / bundle.features.sample_rate
scores = model.predict(extract((0.1 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), bundle.features))
print("inference", model.runtime, len(scores))
"""

MDWE_CFFI_CALLBACK = """
import sounddevice
try:
    sounddevice._ffi.callback("PaStreamCallback", lambda *args: 0)
    print("callback-ok")
except MemoryError:
    print("callback-refused")
"""


def run_under_mdwe(code: str) -> str:
    """Run ``code`` in a fresh interpreter after installing systemd 252's MemoryDenyWriteExecute rules."""
    script = MDWE_PROBE.format(tests=str(ROOT / "tests")) + code
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("wx-denied"), "the seccomp rules did not take effect"
    return result.stdout


@pytest.mark.skipif(sys.platform != "linux", reason="seccomp is Linux only")
def test_model_inference_needs_no_writable_executable_memory() -> None:
    assert "inference" in run_under_mdwe(MDWE_INFERENCE.format(model=str(MODEL)))


@pytest.mark.skipif(sys.platform != "linux", reason="seccomp is Linux only")
def test_portaudio_callback_is_why_the_unit_allows_wx_memory() -> None:
    """cffi's ABI-mode callbacks need a W+X page; if this ever passes, set MemoryDenyWriteExecute=yes."""
    assert "callback-refused" in run_under_mdwe(MDWE_CFFI_CALLBACK)
    assert unit_settings()["MemoryDenyWriteExecute"] == ["no"]


def _notifications_while_waiting_for_a_microphone(tmp_path: Path, reopen_max_s: float,
                                                  listen_s: float) -> tuple[collections.Counter[str], list[dict]]:
    """``noisewatch run`` on an audio device that is not there (the README: it "waits for it as it does for a lost
    one"), under a notify socket with a watchdog armed, as the unit runs it (WatchdogSec=30): the sd_notify fields
    received, and the JSON lines written."""
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"device_id": "nomic", "stats": {"interval_s": 1.0},
                                      "audio": {"device": "no-such-microphone", "reopen_max_s": reopen_max_s}}))
    jsonl, address = tmp_path / "out.jsonl", str(tmp_path / "notify.sock")
    fields: collections.Counter[str] = collections.Counter()
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(address)
        sock.settimeout(0.2)
        env = {**os.environ, notify.SOCKET_ENV: address, "WATCHDOG_USEC": "30000000"}
        proc = subprocess.Popen([sys.executable, "-m", "noisewatch.cli", "run", "--config", str(config), "--jsonl",
                                 str(jsonl)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + listen_s
            while time.monotonic() < deadline:
                with contextlib.suppress(socket.timeout):
                    fields.update(line.split("=", 1)[0] for line in sock.recv(4096).decode().splitlines())
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(10) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return fields, read_jsonl(jsonl)


@pytest.mark.parametrize("reopen_max_s", [30.0, 1.0, 0.5])  # 30: the default
def test_a_listener_waiting_for_its_microphone_reports_and_pings_the_watchdog_whatever_reopen_max_s(
        tmp_path: Path, reopen_max_s: float) -> None:
    """Found by a docs audit: a wait between attempts of 1 s or less (audio.reopen_max_s allows > 0) ran none of
    the wait's work: 10 s without a stats report at stats.interval_s 1 and without a WATCHDOG=1, so systemd would
    kill the unit as hung after 30 s, and Home Assistant showed the listener gone instead of "Audio input: problem"."""
    fields, lines = _notifications_while_waiting_for_a_microphone(tmp_path, reopen_max_s, listen_s=8.0)
    assert [line["state"] for line in lines if line["type"] == "status"][:1] == ["audio_error"]
    stats = [line for line in lines if line["type"] == "stats"]
    assert len(stats) >= 3, f"{len(stats)} stats reports in 8 s at stats.interval_s 1 (notify fields: {dict(fields)})"
    assert fields["WATCHDOG"] >= 2 and fields["READY"] == 1, dict(fields)  # up: a start job left open held boot

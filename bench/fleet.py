"""Fleet: N daemons with different device ids on one mosquitto; each device's topics and discovery are its own.

    .venv/bin/python bench/fleet.py [--devices 20] [--speed 4]

Every daemon replays samples/scene.flac (``noisewatch run --input``) with MQTT on, against a private
mosquitto on a free loopback port; one subscriber records everything. Checked per device: it went
online and offline, every message under its prefix names it (``device`` field), its scene events all
arrived once, its discovery configs point only at its own topics and carry unique ids of its own,
and no message under another prefix names it. Prints one line per device and a verdict; exits 1 on
any crossing.
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import NOISEWATCH, REPO  # noqa: E402

HOST = "127.0.0.1"
SCENE = REPO / "samples" / "scene.flac"
SCENE_EVENTS = 3
"""what the daemon reports for the sample scene (siren, dog_bark, jackhammer)"""
SETTLE_S = 2.0
CONFIG = """device_id: {device}
levels:
  interval_s: 5
stats:
  interval_s: 5
mqtt:
  enabled: true
  host: {host}
  port: {port}
  spool:
    directory: {spool}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def start_mosquitto(folder: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    conf = folder / "mosquitto.conf"
    conf.write_text(f"listener {port} {HOST}\nallow_anonymous true\npersistence false\nmax_queued_messages 100000\n")
    proc = subprocess.Popen([shutil.which("mosquitto") or "/usr/sbin/mosquitto", "-c", str(conf)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            socket.create_connection((HOST, port), timeout=0.2).close()
            return proc, port
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit("mosquitto did not start")


class Recorder:
    """Every (topic, payload) on the broker."""

    def __init__(self, port: int) -> None:
        self.messages: list[tuple[str, bytes]] = []
        self._lock = threading.Lock()
        ready = threading.Event()
        self.client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2)
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe("#", qos=1)
        self.client.on_subscribe = lambda c, u, mid, rcs, p: ready.set()
        self.client.on_message = self._on_message
        self.client.connect(HOST, port)
        self.client.loop_start()
        if not ready.wait(5):
            raise SystemExit("subscriber could not subscribe")

    def _on_message(self, client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.messages.append((message.topic, bytes(message.payload)))

    def close(self) -> list[tuple[str, bytes]]:
        self.client.disconnect()
        self.client.loop_stop()
        with self._lock:
            return list(self.messages)


def run_fleet(devices: list[str], port: int, speed: float, folder: Path) -> list[int]:
    """Start every daemon at once; wait for all; their exit codes."""
    procs = []
    for device in devices:
        config = folder / f"{device}.yaml"
        config.write_text(CONFIG.format(device=device, host=HOST, port=port, spool=folder / device / "spool"))
        procs.append(subprocess.Popen([NOISEWATCH, "run", "--config", str(config), "--input", str(SCENE),
                                       "--speed", str(speed)],
                                      stdout=subprocess.DEVNULL, stderr=(folder / f"{device}.log").open("w")))
    return [proc.wait(timeout=600) for proc in procs]


def check_device(device: str, devices: list[str], messages: list[tuple[str, bytes]]) -> tuple[dict[str, int], list[str]]:
    """Counts for one device and the problems found (empty: its topics and discovery are its own)."""
    prefix, node = f"noisewatch/{device}/", f"noisewatch_{device}"
    problems: list[str] = []
    own = [(t, p) for t, p in messages if t.startswith(prefix)]
    statuses = [p for t, p in own if t == prefix + "status"]
    if b"online" not in statuses or statuses[-1:] != [b"offline"]:
        problems.append(f"status went {statuses}")
    event_ids = []
    for topic, payload in own:
        data = _json(payload)
        if data is not None and "device" in data and data["device"] != device:
            problems.append(f"{topic} names {data['device']}")
        if topic == prefix + "events" and data is not None:
            event_ids.append(data.get("id"))
    scene_events = len(set(event_ids))
    if scene_events < SCENE_EVENTS:
        problems.append(f"{scene_events} events arrived, the scene has {SCENE_EVENTS}")
    others = [f"noisewatch/{d}/" for d in devices if d != device]
    crossed = [t for t, p in messages if any(t.startswith(o) for o in others) and (_json(p) or {}).get("device") == device]
    problems += [f"{t} (another device's topic) names {device}" for t in crossed]
    discovery = [(t, c) for t, p in messages
                 if t.startswith("homeassistant/") and f"/{node}/" in t and (c := _json(p)) is not None]
    for topic, config in discovery:
        topics = [v for k, v in config.items() if k.endswith("_topic")]
        if any(not str(v).startswith(prefix) for v in topics):
            problems.append(f"{topic} points outside {prefix}: {topics}")
        if not str(config.get("unique_id", "")).startswith(node + "_"):
            problems.append(f"{topic} has unique_id {config.get('unique_id')}")
    entities = {t for t, _ in discovery}
    if not entities:
        problems.append("no discovery")
    counts = {"messages": len(own), "events": scene_events, "redelivered": len(event_ids) - scene_events,
              "entities": len(entities)}
    return counts, problems


def _json(payload: bytes) -> dict[str, Any] | None:
    """A JSON object payload; None for plain text (status, states) and anything else."""
    try:
        data = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        return None
    return data if isinstance(data, dict) else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=20)
    parser.add_argument("--speed", type=float, default=4.0, help="replay pace of the scene (0: as fast as possible)")
    args = parser.parse_args()
    devices = [f"fleet-{i:02d}" for i in range(args.devices)]
    folder = Path(tempfile.mkdtemp(prefix="nw-fleet-"))
    broker, port = start_mosquitto(folder)
    try:
        recorder = Recorder(port)
        started = time.monotonic()
        codes = run_fleet(devices, port, args.speed, folder)
        wall_s = time.monotonic() - started
        time.sleep(SETTLE_S)
        messages = recorder.close()
    finally:
        broker.terminate()
        broker.wait()
    failed = 0
    unique_ids = {(_json(p) or {}).get("unique_id") for t, p in messages if t.startswith("homeassistant/")} - {None}
    print(f"{len(devices)} daemons, scene {SCENE.name} at speed {args.speed:g}, one mosquitto; wall {wall_s:.1f} s, "
          f"{len(messages)} messages; discovery unique_ids: {len(unique_ids)} distinct")
    print(f"{'device':<10} {'exit':>4} {'messages':>8} {'events':>6} {'redeliv':>7} {'entities':>8}  problems")
    for device, code in zip(devices, codes):
        counts, problems = check_device(device, devices, messages)
        failed += bool(problems) or code != 0
        print(f"{device:<10} {code:>4} {counts['messages']:>8} {counts['events']:>6} {counts['redelivered']:>7} "
              f"{counts['entities']:>8}  {'; '.join(problems) or '-'}")
    print(f"VERDICT: {'PASS' if not failed else 'FAIL'} ({len(devices) - failed}/{len(devices)} devices kept to their own topics)")
    shutil.rmtree(folder, ignore_errors=True)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()

"""Event latency over MQTT: from the moment a sound's onset was fed to the ``started`` message.

    .venv/bin/python bench/latency.py [--runs 3]

A private mosquitto (tests/mqtt_broker.py) on a free 127.0.0.1 port; the daemon replays
samples/scene.flac at --speed 1 with MQTT on and its spool in a temp dir; a paho subscriber
stamps each ``<prefix>/events/started`` message on arrival (time.time()).

Clock alignment: the daemon anchors its sample clock (stream sample 0) to the wall time at which
the replay's first block entered the ring buffer; every payload carries ``start`` (anchor +
offset_s) and ``offset_s``, so anchor = start - offset_s, on this machine's clock (no skew with the
subscriber). The truth onset was fed at anchor + onset_s / speed (the block holding it went out at
most one 1024-frame block later, which makes the figure slightly pessimistic).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from common import NOISEWATCH, REPO  # noqa: E402
from mqtt_broker import Broker, Collector  # noqa: E402

PREFIX = "bench/latency"
SCENE = REPO / "samples" / "scene.flac"
TRUTH = REPO / "samples" / "scene.json"
SETTLE_S = 2.0


def config_text(port: int, spool: Path, smoothing: int) -> str:
    return (f"device_id: bench\ndetector:\n  smoothing_windows: {smoothing}\nmqtt:\n  enabled: true\n  host: 127.0.0.1\n  port: {port}\n"
            f"  topic_prefix: {PREFIX}\n  spool:\n    directory: {spool}\n  homeassistant:\n    discovery: false\n")


def one_run(port: int, workdir: Path, smoothing: int) -> list[tuple[float, dict]]:
    """Replay the scene once; (arrival epoch s, payload) per ``started`` message."""
    config = workdir / "config.yaml"
    config.write_text(config_text(port, workdir / "spool", smoothing))
    arrivals: list[tuple[float, dict]] = []
    sub = Collector(port, f"{PREFIX}/events/started")
    sub.client.on_message = lambda c, u, m: arrivals.append((time.time(), json.loads(m.payload)))
    subprocess.run([NOISEWATCH, "run", "--config", str(config), "--input", str(SCENE), "--speed", "1"],
                   check=True, stderr=subprocess.DEVNULL)
    time.sleep(SETTLE_S)
    sub.close()
    return arrivals


def delays(arrival: float, event: dict, truth: list[dict]) -> dict | None:
    """Delays of one ``started`` message from its truth onset and from its detected onset."""
    anchor = datetime.fromisoformat(event["start"].replace("Z", "+00:00")).timestamp() - event["offset_s"]
    onsets = [t["start_s"] for t in truth if t["label"] == event["label"]]
    if not onsets:
        return None
    onset = min(onsets, key=lambda s: abs(s - event["offset_s"]))
    return {"label": event["label"], "truth_onset_s": onset, "detected_onset_s": event["offset_s"],
            "after_truth_s": arrival - (anchor + onset), "after_detected_s": arrival - (anchor + event["offset_s"])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--smoothing", type=int, default=2, help="detector.smoothing_windows (default null: the model's, 2 when shipped)")
    args = parser.parse_args()
    broker = Broker().start()
    try:
        with tempfile.TemporaryDirectory(prefix="nw-latency-") as tmp:
            arrivals = [row for _ in range(args.runs) for row in one_run(broker.port, Path(tmp), args.smoothing)]
    finally:
        broker.cleanup()
    print(f"detector.smoothing_windows {args.smoothing}")
    report(arrivals, args.runs)


def report(arrivals: list[tuple[float, dict]], runs: int) -> None:
    truth = json.loads(TRUTH.read_text())
    found = [d for a, e in arrivals if (d := delays(a, e, truth)) is not None]
    false = len(arrivals) - len(found)
    print(f"{runs} runs of {SCENE.name} at --speed 1: {len(found)} started messages for truth labels, {false} others")
    print("label         truth onset  detected onset  arrival-truth  arrival-detected  (s)")
    for d in found:
        print(f"{d['label']:<13} {d['truth_onset_s']:10.2f} {d['detected_onset_s']:14.2f} "
              f"{d['after_truth_s']:14.3f} {d['after_detected_s']:17.3f}")
    for key in ("after_truth_s", "after_detected_s"):
        values = [d[key] for d in found]
        print(f"{key}: median {np.median(values):.3f} s, max {max(values):.3f} s")


if __name__ == "__main__":
    main()

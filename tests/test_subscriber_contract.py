"""What docs/mqtt.md promises a subscriber that is not Home Assistant (a Node-RED flow, a noise map), checked
against the real daemon and a real mosquitto.

- ``<prefix>/events/recent`` (retained) "holds the latest 50 closed events, for dashboards that start later": a
  dashboard started after the listener restarted must still see the events heard before the restart.
- Events wait in the spool "and are published in order once [the broker] is back, also after a daemon restart";
  after a change of ``mqtt.topic_prefix`` the old prefix's retained topics are emptied "so neither Home Assistant nor
  another subscriber sees a listener that is gone": the events still waiting must then arrive where the listener now
  publishes, not under the prefix it left.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml
from daemon_run import read_jsonl
from mqtt_broker import HOST, Broker, Collector, wait_until

pytestmark = [pytest.mark.broker, pytest.mark.slow]

RATE = 22050
RUN_TIMEOUT_S = 60


def write_config(tmp_path: Path, port: int, prefix: str) -> Path:
    settings = {"enabled": True, "host": HOST, "port": port, "topic_prefix": prefix, "keepalive_s": 5,
                "reconnect_min_s": 0.1, "reconnect_max_s": 0.5, "spool": {"directory": str(tmp_path / "spool")},
                "homeassistant": {"discovery": False}}
    path = tmp_path / "noisewatch.yaml"
    path.write_text(yaml.safe_dump({"device_id": "sub", "mqtt": settings}))
    return path


def start(config: Path, audio: Path, speed: float, jsonl: Path) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "noisewatch.cli", "run", "--config", str(config), "--input", str(audio),
               "--speed", str(speed), "--jsonl", str(jsonl)]
    with open(jsonl.with_suffix(".log"), "ab") as log:
        return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log)


def event_ids(jsonl: Path) -> list[str]:
    return [m["id"] for m in read_jsonl(jsonl) if m["type"] == "event"]


def test_recent_events_keep_the_events_heard_before_a_restart(tmp_path: Path, repo_root: Path,
                                                              broker: Broker) -> None:
    scene = repo_root / "samples" / "scene.flac"
    config = write_config(tmp_path, broker.port, "noisewatch/sub")
    first = start(config, scene, 0, tmp_path / "first.jsonl")
    assert first.wait(RUN_TIMEOUT_S) == 0
    second = start(config, scene, 0, tmp_path / "second.jsonl")
    assert second.wait(RUN_TIMEOUT_S) == 0
    heard = event_ids(tmp_path / "first.jsonl") + event_ids(tmp_path / "second.jsonl")
    assert len(heard) >= 4, "the scene must give events for this test to mean anything"
    dashboard = Collector(broker.port, "noisewatch/sub/events/recent")  # a dashboard that starts later
    try:
        assert dashboard.wait_for(lambda c: bool(c.on("noisewatch/sub/events/recent")), timeout=5)
        recent = [e["id"] for e in json.loads(dashboard.on("noisewatch/sub/events/recent")[-1])["events"]]
    finally:
        dashboard.close()
    assert recent == heard[-50:]  # a list begun afresh at each start held only the second run's events


def test_events_spooled_before_a_prefix_change_arrive_under_the_new_prefix(tmp_path: Path, repo_root: Path,
                                                                          broker: Broker,
                                                                          collector: Collector) -> None:
    scene = repo_root / "samples" / "scene.flac"
    silence = tmp_path / "silence.flac"
    sf.write(silence, np.zeros(5 * RATE, dtype=np.float32), RATE)
    broker.stop()  # gracefully: the collector's session waits in the broker's persistence
    old = start(write_config(tmp_path, broker.port, "noisewatch/old"), scene, 4, tmp_path / "old.jsonl")
    try:
        assert wait_until(lambda: len(event_ids(tmp_path / "old.jsonl")) >= 2, timeout=30)
        os.kill(old.pid, signal.SIGTERM)  # a clean stop: the events wait in the spool
        assert old.wait(10) == 0
    finally:
        if old.poll() is None:
            old.kill()
    waiting = event_ids(tmp_path / "old.jsonl")
    broker.start()
    new = start(write_config(tmp_path, broker.port, "noisewatch/new"), silence, 0, tmp_path / "new.jsonl")
    assert new.wait(RUN_TIMEOUT_S) == 0
    assert collector.wait_for(lambda c: c.on("noisewatch/new/status")[-1:] == [b"offline"], timeout=10)
    under_old = [json.loads(p)["id"] for p in collector.on("noisewatch/old/events")]
    under_new = [json.loads(p)["id"] for p in collector.on("noisewatch/new/events")]
    # every waiting event went under the prefix the listener left (and whose retained topics it emptied as gone),
    # none under the one its subscribers now follow
    assert (under_old, under_new) == ([], waiting)


def _documented_topics(repo_root: Path) -> dict[str, tuple[int, bool]]:
    """docs/mqtt.md's topic table: each ``<prefix>/...`` topic the listener publishes (not those it subscribes to),
    with its QoS and whether it is retained."""
    rows = {}
    for line in (repo_root / "docs" / "mqtt.md").read_text().splitlines():
        cells = [cell.strip() for cell in line.split("|")[1:-1]]
        if len(cells) == 4 and cells[0].startswith("`<prefix>/") and not cells[3].startswith("subscribed"):
            rows[cells[0].strip("`").removeprefix("<prefix>/")] = (int(cells[1]), cells[2] == "yes")
    return rows


def test_every_topic_goes_out_at_the_qos_and_retain_flag_docs_mqtt_md_gives_it(tmp_path: Path, repo_root: Path) -> None:
    """docs/mqtt.md's table says each topic's QoS and whether it is retained; a flow built on it (a QoS 0 level
    taken for one that is never lost, an event taken for retained history) breaks where they differ. Found untested
    by a docs audit. Heard by an MQTT 5 subscriber at QoS 2 with retain-as-published, so each message arrives with the
    QoS and retain flag it was published with."""
    from paho.mqtt.client import Client
    from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
    from paho.mqtt.subscribeoptions import SubscribeOptions

    documented = _documented_topics(repo_root)
    assert {"status", "events", "events/started", "level", "stats", "audio", "scores"} <= set(documented), documented
    broker = Broker().start()
    heard: list[tuple[str, int, bool]] = []
    subscriber = Client(CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv5)
    subscriber.on_message = lambda _c, _u, message: heard.append((message.topic, message.qos, bool(message.retain)))
    subscriber.on_connect = lambda client, *_: client.subscribe(
        "noisewatch/qos/#", options=SubscribeOptions(qos=2, retainAsPublished=True))
    subscriber.connect(HOST, broker.port)
    subscriber.loop_start()
    try:
        config = tmp_path / "c.yaml"
        config.write_text(yaml.safe_dump({"device_id": "qos", "scores": {"enabled": True}, "stats": {"interval_s": 1},
                                          "levels": {"interval_s": 1}, "mqtt": {
            "enabled": True, "host": HOST, "port": broker.port, "spool": {"directory": str(tmp_path / "spool")}}}))
        assert wait_until(lambda: subscriber.is_connected(), 10)
        time.sleep(0.5)  # subscribed
        done = subprocess.run([sys.executable, "-m", "noisewatch.cli", "run", "--config", str(config), "--input",
                               str(repo_root / "samples" / "scene.flac"), "--speed", "4"],
                              capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
        assert done.returncode == 0, done.stderr
        time.sleep(0.5)
    finally:
        subscriber.disconnect()
        subscriber.loop_stop()
        broker.cleanup()
    seen: dict[str, set[tuple[int, bool]]] = {}
    for topic, qos, retained in heard:
        parts = topic.removeprefix("noisewatch/qos/").split("/")
        row = "/".join("<label>" if (i == 1 and parts[0] in ("state", "threshold")) else part
                       for i, part in enumerate(parts))
        seen.setdefault(row, set()).add((qos, retained))
    assert {"events", "events/started", "state/<label>", "level", "stats", "audio", "scores"} <= set(seen), seen
    for row, flags in seen.items():
        assert row in documented, f"{row}: published, not in docs/mqtt.md's table"
        assert flags == {documented[row]}, f"{row}: (QoS, retained) {flags}, docs/mqtt.md says {documented[row]}"

"""Discovery configs a listener emptied are announced and emptied again at Home Assistant's next ``online``
(docs/mqtt.md): also when discovery was turned off, and also after a reload that replaced the connection."""

from __future__ import annotations

import json
import random
import re
import shlex
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mqtt_broker
import pytest
from mqtt_broker import HOST, Broker, Collector

from noisewatch.config import Config
from noisewatch.daemon.messages import AudioState, Status, stamped
from noisewatch.daemon.sinks.homeassistant import stand_in
from noisewatch.daemon.sinks.mqtt import MqttSink

pytestmark = pytest.mark.broker

LABELS = ["background", "dog_bark", "siren"]
MODEL = "urban11@1"
CONFIG = "homeassistant/binary_sensor/noisewatch_test/{}/config"
SIREN, DOG_BARK = CONFIG.format("siren"), CONFIG.format("dog_bark")


def _port_in_range() -> int:
    """A free port in 50000-59999 (never the broker's default)."""
    for _ in range(200):
        port = random.randint(50000, 59999)
        with socket.socket() as s:
            try:
                s.bind((HOST, port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port in 50000-59999")


@pytest.fixture
def broker(monkeypatch: pytest.MonkeyPatch) -> Iterator[Broker]:
    monkeypatch.setattr(mqtt_broker, "free_port", _port_in_range)
    started = Broker().start()
    yield started
    started.cleanup()


@pytest.fixture
def collector(broker: Broker) -> Iterator[Collector]:
    client = Collector(broker.port, client_id=f"collector-{uuid.uuid4().hex[:8]}")
    yield client
    client.close()


def home_assistant_online(collector: Collector) -> None:
    """Home Assistant (back) online, once the sinks have settled."""
    time.sleep(1.0)
    collector.client.publish("homeassistant/status", "online")


def announced_and_emptied_again(collector: Collector, topic: str) -> None:
    """After the config at ``topic`` was emptied: a stand-in of it announced, then emptied again (the last two
    messages there: a reload's sinks may announce and empty it more than once before)."""
    def done(c: Collector) -> bool:
        last = c.on(topic)[-2:]
        return len(last) == 2 and last[0] != b"" and json.loads(last[0]) == stand_in(topic) and last[1] == b""

    assert collector.wait_for(done, timeout=5), collector.on(topic)


def sink_of(tmp_path: Path, port: int, running: MqttSink | None = None, discovery: bool = True,
            **detector: Any) -> MqttSink:
    config = Config.model_validate({"device_id": "test", "detector": detector, "mqtt": {
        "enabled": True, "host": HOST, "port": port, "keepalive_s": 5, "reconnect_min_s": 0.1,
        "reconnect_max_s": 0.4, "spool": {"directory": str(tmp_path / "spool")},
        "homeassistant": {"discovery": discovery}}})
    return MqttSink.from_config(config, LABELS, MODEL, {label: 0.6 for label in LABELS}, running=running)


def test_configs_emptied_as_discovery_was_turned_off_go_again_when_home_assistant_is_back(
        tmp_path: Path, broker: Broker, collector: Collector) -> None:
    """docs/mqtt.md: entities an earlier run announced and this one does not ("discovery turned off") are emptied,
    and "those emptied are announced and emptied again, not retained, the next time it says online while the
    listener runs". With discovery off the listener listened for that online only through a subscription an
    earlier run left in its broker session: with the session gone (a broker that keeps none across a restart, an
    MQTT 5 session expired), turned off while Home Assistant was down, every entity stayed in it for good."""
    announcing = sink_of(tmp_path, broker.port)
    assert collector.wait_for(lambda c: len(c.on(SIREN)) == 1)
    announcing.close()
    broker.stop()
    (broker.dir / "mosquitto.db").unlink()  # the sessions (and their subscriptions) gone with the restart
    broker.start()
    time.sleep(1.0)  # the collector subscribes again
    quiet = sink_of(tmp_path, broker.port, discovery=False)
    try:
        assert collector.wait_for(lambda c: c.on(SIREN)[-1:] == [b""])
        home_assistant_online(collector)
        announced_and_emptied_again(collector, SIREN)
    finally:
        quiet.close()


def test_configs_emptied_before_a_reload_that_replaced_the_connection_go_again_when_home_assistant_is_back(
        tmp_path: Path, broker: Broker, collector: Collector) -> None:
    """A reload that replaces the sink (another label ignored) kept none of the configs the replaced sink had
    emptied: Home Assistant down through both, the first label's entity stayed in it for good."""
    announcing = sink_of(tmp_path, broker.port)
    assert collector.wait_for(lambda c: len(c.on(SIREN)) == 1 and len(c.on(DOG_BARK)) == 1)
    announcing.close()
    dropping = sink_of(tmp_path, broker.port, ignore=["background", "siren"])
    assert collector.wait_for(lambda c: c.on(SIREN)[-1:] == [b""])
    assert collector.wait_for(lambda c: c.on("noisewatch/test/state/siren")[-1:] == [b""])  # its record trimmed
    time.sleep(0.5)
    reloaded = sink_of(tmp_path, broker.port, running=dropping, ignore=["background", "siren", "dog_bark"])
    dropping.close()  # as a reload does: the new sink built, then the old one closed
    try:
        assert collector.wait_for(lambda c: c.on(DOG_BARK)[-1:] == [b""], timeout=15)
        home_assistant_online(collector)
        announced_and_emptied_again(collector, DOG_BARK)
        announced_and_emptied_again(collector, SIREN)
    finally:
        reloaded.close()


def test_a_config_emptied_then_announced_again_after_a_reload_is_not_emptied_at_home_assistant_s_online(
        tmp_path: Path, broker: Broker, collector: Collector) -> None:
    """A label ignored, then watched again at a reload: its entity is the listener's own again, and Home
    Assistant's online must not empty it."""
    announcing = sink_of(tmp_path, broker.port)
    assert collector.wait_for(lambda c: len(c.on(SIREN)) == 1)
    announcing.close()
    dropping = sink_of(tmp_path, broker.port, ignore=["background", "siren"])
    assert collector.wait_for(lambda c: c.on(SIREN)[-1:] == [b""])
    time.sleep(0.5)
    back = sink_of(tmp_path, broker.port, running=dropping, ignore=["background"])
    dropping.close()
    try:
        assert collector.wait_for(lambda c: len(c.on(SIREN)) == 3 and c.on(SIREN)[-1] != b"", timeout=15)
        home_assistant_online(collector)
        time.sleep(2.0)
        assert b"" not in collector.on(SIREN)[2:], collector.on(SIREN)
    finally:
        back.close()


def test_the_docs_try_it_cleanup_leaves_the_broker_no_retained_topic_of_the_try_listener(
        repo_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """docs/homeassistant.md, "Try it": deleting the device in Home Assistant clears its discovery, not the try
    listener's own retained topics (status, audio, stats, level, label states, thresholds, recent events: 26 for the
    shipped model), which the dashboard goes on listing; the docs' ``mosquitto_sub --remove-retained`` line clears
    them (found by a helper's first hour with a real Home Assistant)."""
    docs = (repo_root / "docs" / "homeassistant.md").read_text()
    line = re.search(r"`(mosquitto_sub [^`]*--remove-retained[^`]*)`", docs)
    assert line is not None, "docs/homeassistant.md no longer says how to clear the try listener's topics"
    command = shlex.split(line.group(1).split(" > ")[0])  # its output, not asked for, goes to /dev/null
    broker = Broker(users={command[command.index("-u") + 1]: "try-password"}).start()
    try:
        monkeypatch.setenv("NOISEWATCH_MQTT_PASSWORD", "try-password")
        config = Config.model_validate({"device_id": "try", "mqtt": {
            "enabled": True, "host": HOST, "port": broker.port, "username": command[command.index("-u") + 1],
            "spool": {"directory": str(tmp_path / "spool")}}})
        sink = MqttSink.from_config(config, LABELS, MODEL, {"background": 0.5, "dog_bark": 0.6, "siren": 0.7})
        sink.send(stamped(Status(AudioState.LISTENING, source="file"), "try"))
        sink.close()  # the file ended: the listener stopped, its retained topics stay on the broker
        before = Collector(broker.port, "noisewatch/try/#", username=command[command.index("-u") + 1],
                           password="try-password")
        assert before.wait_for(lambda c: len({t for t, _, retained in c.messages if retained}) >= 5), before.messages
        before.close()
        command[command.index("-h") + 1] = HOST
        command[command.index("-P") + 1] = "try-password"
        subprocess.run([*command, "-p", str(broker.port)], capture_output=True, timeout=30)
        after = Collector(broker.port, "noisewatch/try/#", username=command[command.index("-u") + 1],
                          password="try-password")
        time.sleep(1.0)  # retained messages arrive as the subscription is granted: any left would be here by now
        after.close()
        assert [topic for topic, _, retained in after.messages if retained] == []
    finally:
        broker.cleanup()

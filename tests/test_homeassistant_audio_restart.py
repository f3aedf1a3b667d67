"""The Audio input problem sensor across a restart, in a real Home Assistant 2024.3.3 (marked ``homeassistant``;
skipped without its venv)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml
from home_assistant import HASS, HomeAssistant
from mqtt_broker import HOST, Broker, Collector, wait_until
from test_homeassistant_real import DEVICE, ENTITY

from noisewatch.config import Config
from noisewatch.daemon.sinks.mqtt import MqttSink

pytestmark = [
    pytest.mark.homeassistant, pytest.mark.broker, pytest.mark.slow,
    pytest.mark.skipif(not HASS.exists(), reason=f"no Home Assistant venv at {HASS.parent.parent} "
                       "(make it with ../shared/tools/ha-check/setup.sh)"),
]


COUNTER = "turned_on"
"""The counter an automation increments each time the watched problem sensor turns on."""


def _counting_turns_on(tmp_path: Path, broker: Broker, problem: str) -> HomeAssistant:
    """A Home Assistant (not started) whose automation counts each time ``problem`` turns on."""
    automation = {"id": COUNTER, "alias": COUNTER, "mode": "queued",  # each turn: one while the last still runs too
                  "trigger": [{"platform": "state", "entity_id": problem, "to": "on"}],
                  "action": [{"service": "counter.increment", "target": {"entity_id": f"counter.{COUNTER}"}}]}
    (tmp_path / "ha").mkdir()
    (tmp_path / "ha" / "automations.yaml").write_text(yaml.safe_dump([automation]))
    return HomeAssistant(tmp_path / "ha", broker.port, f"automation: !include automations.yaml\ncounter:\n  {COUNTER}:\n")


def _sink(tmp_path: Path, broker: Broker, labels: Sequence[str] = ("background", "siren"), **mqtt: Any) -> MqttSink:
    """A listener's MQTT sink, as a run of the daemon builds it (one spool folder for every run of the test);
    ``mqtt``: more of its config's ``mqtt`` section."""
    config = Config.model_validate({"device_id": DEVICE, "mqtt": {
        "enabled": True, "host": HOST, "port": broker.port, "spool": {"directory": str(tmp_path / "spool")}, **mqtt}})
    return MqttSink.from_config(config, labels, "urban11@test", {"background": 0.5, "siren": 0.7})


def test_a_restart_after_a_lost_microphone_does_not_flash_the_audio_input_problem(broker: Broker,
                                                                                  tmp_path: Path) -> None:
    """Found by a helper's first hour with a real Home Assistant: a run that ended with its input lost (a file that
    could not be read, a microphone unplugged) leaves ``audio_error`` retained; the next start said ``online`` before
    its ``listening``, so Home Assistant showed the old problem as current for a moment (Audio input unavailable ->
    on -> off) and an automation on the problem sensor turning on (a "microphone lost" notification) fired at every
    such start. The latest audio state goes before the ``online``, as the announcement means to."""
    from noisewatch.daemon.messages import AudioState, Status, stamped

    problem = ENTITY.format("binary_sensor", "audio_input")
    ha = _counting_turns_on(tmp_path, broker, problem)

    def count() -> str | None:
        return (ha.state(f"counter.{COUNTER}") or {}).get("state")

    try:
        ha.wait_ready()
        first = _sink(tmp_path, broker)
        try:
            first.send(stamped(Status(AudioState.LISTENING, source="USB"), DEVICE))
            assert ha.wait_state(problem, "off", 30), ha.state(problem)
            first.send(stamped(Status(AudioState.AUDIO_ERROR, source="USB", error="USB: device unplugged"), DEVICE))
            assert ha.wait_state(problem, "on", 10), ha.state(problem)
            assert wait_until(lambda: count() == "1", 10), count()
        finally:
            first.close()
        assert ha.wait_state(problem, "unavailable", 10), ha.state(problem)
        wire = Collector(broker.port, f"noisewatch/{DEVICE}/#")
        try:
            again = _sink(tmp_path, broker)  # the next start: its input heard again, said before it connects
            again.send(stamped(Status(AudioState.LISTENING, source="USB"), DEVICE))
            try:
                assert ha.wait_state(problem, "off", 15), ha.state(problem)
                time.sleep(1)  # the automation has run, had it triggered
                assert count() == "1", "Home Assistant showed the last run's lost input as current at the start"
                live = [(topic.rsplit("/", 1)[1], payload) for topic, payload, retained in wire.messages
                        if not retained and topic in (f"noisewatch/{DEVICE}/audio", f"noisewatch/{DEVICE}/status")]
                assert live and live[0][0] == "audio" and b'"listening"' in live[0][1], live  # before its online
            finally:
                again.close()
        finally:
            wire.close()
    finally:
        ha.stop()


def test_a_restart_after_a_refusing_spool_disk_does_not_flash_the_spool_disk_problem(broker: Broker,
                                                                                     tmp_path: Path) -> None:
    """Found with the test above: the first ``stats`` report of a start went after its ``online`` as well, so the
    last run's retained report (its spool's disk refusing writes, started a day ago) was shown as current for a
    moment: Spool disk unavailable -> on -> off, and Started a day ago before now."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    from noisewatch.daemon.messages import AudioState, Stats, Status, stamped

    problem, started = ENTITY.format("binary_sensor", "spool_disk"), ENTITY.format("sensor", "started")
    ha = _counting_turns_on(tmp_path, broker, problem)

    def stats(uptime_s: float, disk_error: str | None = None) -> Stats:
        started = f"2026-12-0{6 if uptime_s < 1 else 5}T11:00:00.000Z"  # a day before, for a day's uptime
        return stamped(Stats(uptime_s=uptime_s, started=started, audio_s=uptime_s, windows=0, gated_windows=0, events=0,
                             input_overflows=0, dropped_frames=0, nonfinite_samples=0, source="USB",
                             model="urban11@test", runtime="ai_edge_litert", version="0.1.0", spool_depth=0,
                             spool_disk_error=disk_error), DEVICE)

    def count() -> str | None:
        return (ha.state(f"counter.{COUNTER}") or {}).get("state")

    try:
        ha.wait_ready()
        first = _sink(tmp_path, broker)  # a run: announced, then offline
        try:
            first.send(stamped(Status(AudioState.LISTENING, source="USB"), DEVICE))
            first.send(stats(0.2))
            assert ha.wait_state(problem, "off", 30), ha.state(problem)
        finally:
            first.close()
        assert ha.wait_state(problem, "unavailable", 10), ha.state(problem)
        # what a run whose spool's disk refused writes to its end leaves retained: its last report says so
        left = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2)
        left.connect(HOST, broker.port)
        left.loop_start()
        left.publish(f"noisewatch/{DEVICE}/stats", stats(86400.0, "read-only file system").encode(), 1,
                     True).wait_for_publish(5)
        left.disconnect()
        left.loop_stop()
        again = _sink(tmp_path, broker)  # the next start: its first report, sent as the daemon does, before it connects
        again.send(stamped(Status(AudioState.LISTENING, source="USB"), DEVICE))
        again.send(stats(0.2))
        try:
            assert ha.wait_state(problem, "off", 15), ha.state(problem)
            assert ha.wait_state(started, "2026-12-06T11:00:00+00:00", 5), ha.state(started)
            time.sleep(1)  # the automation has run, had it triggered
            assert count() == "0", "Home Assistant showed the last run's refusing disk as current at the start"
        finally:
            again.close()
    finally:
        ha.stop()

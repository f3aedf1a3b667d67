"""Topic names, Home Assistant discovery payloads, label states and reconnect jitter (pure code)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from test_homeassistant import status_topic

from noisewatch.daemon.sinks.homeassistant import Listener, discovery_messages
from noisewatch.daemon.sinks.label_states import LabelStates
from noisewatch.daemon.sinks.mqtt_client import JITTER_FRACTION, reconnect_jitter_s
from noisewatch.daemon.sinks.topics import Topics, default_prefix

TOPICS = Topics("noisewatch/kitchen")
LISTENER = Listener("kitchen", "noisewatch kitchen", ("dog_bark", "siren", "loud"), "urban11@3", "0.1.0")


def test_topic_names() -> None:
    assert default_prefix("kitchen") == "noisewatch/kitchen"
    assert TOPICS.events == "noisewatch/kitchen/events"
    assert TOPICS.started == "noisewatch/kitchen/events/started"
    assert TOPICS.status == "noisewatch/kitchen/status"
    assert TOPICS.level == "noisewatch/kitchen/level"
    assert TOPICS.stats == "noisewatch/kitchen/stats"
    assert TOPICS.scores == "noisewatch/kitchen/scores"
    assert TOPICS.state("dog_bark") == "noisewatch/kitchen/state/dog_bark"
    assert TOPICS.state("car horn/#") == "noisewatch/kitchen/state/car_horn__"
    assert TOPICS.ha_status == ("homeassistant/status",)
    moved = Topics("noisewatch/kitchen", "ha")  # Home Assistant's birth topic does not move with its discovery prefix
    assert moved.ha_status == ("homeassistant/status", "ha/status")
    discovery = TOPICS.discovery("sensor", "noisewatch_kitchen", "level")
    assert discovery == "homeassistant/sensor/noisewatch_kitchen/level/config"


def test_discovery_has_one_device_and_every_entity() -> None:
    messages = dict(discovery_messages(TOPICS, LISTENER))
    node = "homeassistant/{}/noisewatch_kitchen/{}/config"
    for label in LISTENER.labels:
        sensor = messages[node.format("binary_sensor", label)]
        assert sensor["device_class"] == "sound"
        assert sensor["state_topic"] == f"noisewatch/kitchen/state/{label}"
        assert (sensor["payload_on"], sensor["payload_off"]) == ("ON", "OFF")
    event = messages[node.format("event", "sound_event")]
    assert event["event_types"] == ["dog_bark", "siren", "loud"]
    assert event["state_topic"] == "noisewatch/kitchen/events"
    level = messages[node.format("sensor", "level")]
    assert "device_class" not in level and level["unit_of_measurement"] == "dBFS"  # uncalibrated: not an SPL
    assert "leq_dbfs_a" in level["value_template"]
    assert {tuple(m["device"]["identifiers"]) for m in messages.values()} == {("noisewatch_kitchen",)}
    devices = {json.dumps(m["device"], sort_keys=True) for m in messages.values() if "model" in m["device"]}
    assert len(devices) == 1 and json.loads(devices.pop())["model"] == "urban11@3"
    assert all(status_topic(m) == "noisewatch/kitchen/status" for m in messages.values())
    assert len({m["unique_id"] for m in messages.values()}) == len(messages)


def test_calibrated_level_sensor_reports_dba_spl() -> None:
    calibrated = Listener("kitchen", "k", ("siren",), "m@1", "0.1.0", calibrated=True)
    level = dict(discovery_messages(TOPICS, calibrated))["homeassistant/sensor/noisewatch_kitchen/sound_pressure/config"]
    assert (level["unit_of_measurement"], level["value_template"]) == ("dBA", "{{ value_json.get('leq_dba_spl') }}")


def test_label_state_follows_overlapping_and_split_events() -> None:
    states = LabelStates(["siren", "dog_bark"])
    assert states.started("siren", "a") == "ON"
    assert states.started("dog_bark", "b") == "ON"
    assert states.ended("dog_bark", "b") == "OFF"
    assert states.snapshot() == {"siren": "ON", "dog_bark": "OFF"}
    # a second siren opens while the first is still open
    assert states.started("siren", "a2") is None
    assert states.ended("siren", "a") is None
    assert states.ended("siren", "a2") == "OFF"
    assert states.ended("siren", "a2") is None
    assert states.started("loud", "c") == "ON"  # a label not known in advance


def test_label_state_stays_on_across_a_split_at_max_duration() -> None:
    """Fed with what the real detector emits when an event reaches max_duration_s."""
    import numpy as np

    from noisewatch.daemon.detector import Detector, DetectorSettings, Observation

    detector = Detector(("siren", "background"), DetectorSettings(
        thresholds={"siren": 0.5, "background": 0.5}, ignore=frozenset({"background"}), smoothing_windows=1,
        hop_s=0.5, release_s=1.0, min_duration_s=0.0, cooldown_s=0.0, max_duration_s=2.0))
    states, seen = LabelStates(["siren"]), []
    quiet = np.full(4000, 0.1, dtype=np.float32)
    for i, score in enumerate([0.9] * 8 + [0.0] * 4):
        obs = Observation(i * 0.5, i * 0.5 + 4.0, np.array([score, 1 - score]), quiet, 1000)
        for t in detector.update(obs):
            change = (states.started if t.kind == "started" else states.ended)("siren", t.event.id)
            seen.append((t.kind, change))
    assert seen.count(("ended", None)) >= 1  # a split: the first part ends while the label stays ON
    assert seen[0] == ("started", "ON") and seen[-1] == ("ended", "OFF")
    assert [c for _, c in seen if c is not None] == ["ON", "OFF"]


def test_reconnect_jitter_is_bounded_by_the_capped_backoff() -> None:
    rng = random.Random(0)
    for failures, cap in ((0, 1.0), (3, 8.0), (10, 60.0), (1000, 60.0)):
        samples = [reconnect_jitter_s(failures, 1.0, 60.0, rng) for _ in range(200)]
        assert 0.0 <= min(samples) and max(samples) <= JITTER_FRACTION * cap
        assert max(samples) > 0.5 * JITTER_FRACTION * cap  # spread over the range, not a constant


def test_the_discovery_example_in_the_docs_is_what_the_daemon_announces() -> None:
    import re
    from pathlib import Path

    from noisewatch.daemon.sinks.homeassistant import default_device_name

    docs = (Path(__file__).resolve().parents[1] / "docs" / "mqtt.md").read_text()
    example = next(json.loads(block) for block in re.findall(r"```json\n(.*?)```", docs, re.S) if '"unique_id"' in block)
    listener = Listener(device_id="kitchen", name=default_device_name("kitchen"), labels=("siren",),
                        model="urban11@2026.12.05.1", version="0.1.0")
    announced = dict(discovery_messages(Topics("noisewatch/kitchen"), listener))
    assert announced["homeassistant/binary_sensor/noisewatch_kitchen/siren/config"] == example


def test_the_recent_events_topic_holds_the_latest_50_closed_events(tmp_path: Path) -> None:
    """docs/mqtt.md: `<prefix>/events/recent` is "the latest 50 closed events, `{"events": [...]}`", oldest first,
    a redelivered event once, also across a restart (the list is kept in the state folder)."""
    from noisewatch.daemon.sinks.recent import RecentEvents

    recent = RecentEvents(tmp_path)
    for i in range(60):
        payload = recent.add({"id": f"e{i}", "label": "siren"})
    assert payload == recent.add({"id": "e59", "label": "siren"})  # redelivered: nothing changes
    listed = json.loads(payload)
    assert list(listed) == ["events"] and [e["id"] for e in listed["events"]] == [f"e{i}" for i in range(10, 60)]
    recent.keep(tmp_path)  # as the sink's pump does
    restarted = json.loads(RecentEvents(tmp_path).add({"id": "e60", "label": "siren"}))
    assert [e["id"] for e in restarted["events"]] == [f"e{i}" for i in range(11, 61)]


@pytest.mark.parametrize("kept", ["{not json", '{"events": [1, 2]}', '[]', '{"events": [{"id": "x", "level": NaN}]}'])
def test_a_recent_events_file_that_cannot_be_read_begins_the_list_afresh_and_says_so(
        tmp_path: Path, kept: str, caplog: pytest.LogCaptureFixture) -> None:
    from noisewatch.daemon.sinks.recent import FILE_NAME, RecentEvents

    caplog.set_level("WARNING", logger="noisewatch")
    (tmp_path / FILE_NAME).write_text(kept)
    assert json.loads(RecentEvents(tmp_path).add({"id": "e0", "label": "siren"})) == {
        "events": [{"id": "e0", "label": "siren"}]}
    assert [r.levelname for r in caplog.records if FILE_NAME in r.getMessage()] == ["WARNING"]


def test_a_state_folder_that_refuses_the_recent_events_list_is_said_once_and_the_list_goes_on(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from noisewatch.daemon.sinks.recent import RecentEvents

    caplog.set_level("WARNING", logger="noisewatch")
    recent = RecentEvents(tmp_path / "unplugged" / "state")  # the disk it was on is gone: not made again
    for i in range(3):
        payload = recent.add({"id": f"e{i}", "label": "siren"})
        recent.keep(tmp_path / "unplugged" / "state")
    assert [e["id"] for e in json.loads(payload)["events"]] == ["e0", "e1", "e2"]
    assert ["cannot keep the recent events list" in r.getMessage() for r in caplog.records].count(True) == 1

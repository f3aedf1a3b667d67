"""Home Assistant discovery payloads, the clearing of entities no longer announced, and their stores (pure code + files)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from noisewatch.daemon.sinks.announced import AnnouncedStore
from noisewatch.daemon.sinks.homeassistant import (
    Listener,
    default_device_name,
    discovery_messages,
    listener_retained_topics,
    retained_state_topics,
    stale_clears,
    stand_in,
)
from noisewatch.daemon.sinks.topics import Topics
from noisewatch.daemon.thresholds_store import ThresholdError, ThresholdsStore, parse_threshold

TOPICS = Topics("noisewatch/kitchen")
LISTENER = Listener("kitchen", default_device_name("kitchen"), ("dog_bark", "siren", "loud"), "urban11@3", "0.1.0",
                    level_interval_s=60.0, stats_interval_s=30.0)
NODE = "homeassistant/{}/noisewatch_kitchen/{}/config"


def messages(listener: Listener = LISTENER) -> dict[str, dict]:
    return dict(discovery_messages(TOPICS, listener))


def status_topic(config: dict) -> str:
    """The status topic an entity's availability follows (the level sensors follow it first in a list)."""
    return config.get("availability_topic") or config["availability"][0]["topic"]


def test_a_stand_in_names_the_entity_and_device_announced_at_its_topic() -> None:
    """What ``stand_in`` announces for an emptied config is taken by Home Assistant as that entity (its unique_id)
    of that device, for every kind of entity a listener announces (calibrated or not)."""
    from dataclasses import replace

    for listener in (LISTENER, replace(LISTENER, calibrated=True)):
        for topic, config in messages(listener).items():
            stand = stand_in(topic)
            assert (stand["unique_id"], stand["device"]["identifiers"]) == (config["unique_id"],
                                                                            config["device"]["identifiers"]), topic
            assert "/config" not in stand.get("state_topic", stand.get("command_topic")), topic


def test_threshold_topics_round_trip_to_their_label() -> None:
    assert TOPICS.threshold("dog_bark") == "noisewatch/kitchen/threshold/dog_bark"
    assert TOPICS.threshold_set("dog_bark") == "noisewatch/kitchen/threshold/dog_bark/set"
    assert TOPICS.threshold_commands == "noisewatch/kitchen/threshold/+/set"
    assert TOPICS.threshold_label("noisewatch/kitchen/threshold/siren/set", LISTENER.labels) == "siren"
    assert TOPICS.threshold_label("noisewatch/kitchen/threshold/gun_shot/set", LISTENER.labels) is None
    assert TOPICS.threshold_label("noisewatch/other/threshold/siren/set", LISTENER.labels) is None


def test_one_device_with_a_readable_name_and_unique_ids() -> None:
    found = messages()
    assert {json.dumps(m["device"]["identifiers"]) for m in found.values()} == {'["noisewatch_kitchen"]'}
    assert {m["device"]["name"] for m in found.values()} == {"Noise listener kitchen"}
    devices = {json.dumps(m["device"], sort_keys=True) for m in found.values() if len(m["device"]) > 2}
    assert len(devices) == 1
    device = json.loads(devices.pop())
    assert device["name"] == "Noise listener kitchen" and device["model"] == "urban11@3"
    assert "configuration_url" not in device
    assert all(status_topic(m) == "noisewatch/kitchen/status" for m in found.values())
    assert len({m["unique_id"] for m in found.values()}) == len(found)
    assert all("noisewatch" not in m["name"].lower() for m in found.values())  # HA prefixes the device name


def test_configuration_url_links_the_dashboard() -> None:
    listener = Listener("kitchen", "k", ("siren",), "m@1", "0.1.0", configuration_url="http://pi.local:8501")
    assert all(m["device"]["configuration_url"] == "http://pi.local:8501" for m in messages(listener).values()
               if "model" in m["device"])


def test_the_sensors_that_expire_name_only_the_device_so_a_new_model_does_not_change_them() -> None:
    """Home Assistant takes a changed config of a sensor that expires as starting expired: a reload with a new model
    bundle turned an open siren unavailable, then on again (a "to on" automation fired twice for one siren)."""
    def live_configs(model: str) -> dict[str, dict]:
        listener = Listener("kitchen", "Noise listener kitchen", ("siren", "loud"), model, "0.1.0")
        return {topic: config for topic, config in messages(listener).items() if "expire_after" in config
                and "/binary_sensor/" in topic and "spool_disk" not in topic}

    before, after = live_configs("urban11@1"), live_configs("urban11@2")
    assert sorted(topic.split("/")[-2] for topic in before) == ["audio_problem", "loud", "siren"]
    assert before == after
    assert all(config["device"] == {"identifiers": ["noisewatch_kitchen"], "name": "Noise listener kitchen"}
               for config in before.values())


def test_label_sensors_events_and_started_at_qos_1_with_icons() -> None:
    found = messages()
    for label in LISTENER.labels:
        sensor = found[NODE.format("binary_sensor", label)]
        assert sensor["device_class"] == "sound" and sensor["qos"] == 1
        assert sensor["state_topic"] == f"noisewatch/kitchen/state/{label}"
        assert (sensor["payload_on"], sensor["payload_off"]) == ("ON", "OFF")
        assert sensor["icon"].startswith("mdi:")
    assert found[NODE.format("binary_sensor", "dog_bark")]["icon"] == "mdi:dog"
    ended, started = found[NODE.format("event", "sound_event")], found[NODE.format("event", "sound_started")]
    assert (ended["state_topic"], started["state_topic"]) == ("noisewatch/kitchen/events", "noisewatch/kitchen/events/started")
    assert ended["event_types"] == started["event_types"] == ["dog_bark", "siren", "loud"]
    assert ended["qos"] == started["qos"] == 1
    assert "duration_s" in ended["value_template"] and "duration_s" not in started["value_template"]


@pytest.mark.parametrize("state, shown", [("listening", "OFF"), ("audio_error", "ON"), ("silent", "ON")])
def test_audio_problem_sensor_reads_the_retained_audio_topic(state: str, shown: str) -> None:
    import jinja2

    problem = messages()[NODE.format("binary_sensor", "audio_problem")]
    assert (problem["device_class"], problem["entity_category"]) == ("problem", "diagnostic")
    assert problem["state_topic"] == problem["json_attributes_topic"] == "noisewatch/kitchen/audio"
    rendered = jinja2.Environment().from_string(problem["value_template"]).render(value_json={"state": state})
    assert rendered == shown  # a problem is anything but listening: a lost input and a mute one alike


@pytest.mark.parametrize("error, shown", [(None, "OFF"), ("No space left on device", "ON"),
                                          ("Read-only file system", "ON")])
def test_spool_disk_problem_sensor_reads_the_stats_reports(error: str | None, shown: str) -> None:
    """A spool disk that refuses writes was said only in the log; Home Assistant's diagnostics now say it, and why.
    A report from before the field (an older listener's retained stats) reads as no problem, not a template error."""
    import jinja2

    problem = messages()[NODE.format("binary_sensor", "spool_disk_problem")]
    assert (problem["device_class"], problem["entity_category"]) == ("problem", "diagnostic")
    assert problem["state_topic"] == problem["json_attributes_topic"] == "noisewatch/kitchen/stats"
    assert problem["expire_after"] == 75
    env = jinja2.Environment()
    env.filters["to_json"] = json.dumps  # Home Assistant's
    report = {"uptime_s": 1.0, "spool_disk_error": error}
    assert env.from_string(problem["value_template"]).render(value_json=report) == shown
    assert json.loads(env.from_string(problem["json_attributes_template"]).render(value_json=report)) == {"error": error}
    assert env.from_string(problem["value_template"]).render(value_json={"uptime_s": 1.0}) == "OFF"


def test_stats_diagnostics_expire_when_reports_stop() -> None:
    found = messages()
    fields = {}
    for object_id in ("started", "dropped_frames", "input_overflows", "spool_depth", "events_lost", "model"):
        sensor = found[NODE.format("sensor", object_id)]
        assert sensor["entity_category"] == "diagnostic" and sensor["state_topic"] == "noisewatch/kitchen/stats"
        assert sensor["expire_after"] == 75  # 2.5 stats periods of 30 s
        fields[object_id] = sensor["value_template"]
    assert fields["started"] == "{{ value_json.started }}" and fields["model"] == "{{ value_json.model }}"
    assert found[NODE.format("sensor", "started")]["device_class"] == "timestamp"  # "5 minutes ago", live


def test_uncalibrated_levels_are_dbfs_not_sound_pressure() -> None:
    found = messages()
    for object_id, stat in (("level", "leq"), ("level_lmax", "lmax"), ("level_lmin", "lmin")):
        sensor = found[NODE.format("sensor", object_id)]
        assert "device_class" not in sensor and sensor["unit_of_measurement"] == "dBFS"
        assert sensor["value_template"] == "{{ value_json.get('%s_dbfs_a') }}" % stat
        assert sensor["expire_after"] == 150


def test_calibrated_levels_are_dba_sound_pressure_in_entities_of_their_own() -> None:
    """Found with a real Home Assistant: calibrating changed the unit of the same entity from dBFS to dBA, and
    Home Assistant suspended its long-term statistics until fixed by hand. Other ids and names: other entities."""
    calibrated = Listener("kitchen", "k", ("siren",), "m@1", "0.1.0", calibrated=True)
    found, plain = messages(calibrated), messages()
    for object_id, stat in (("sound_pressure", "leq"), ("sound_pressure_lmax", "lmax"), ("sound_pressure_lmin", "lmin")):
        sensor = found[NODE.format("sensor", object_id)]
        assert (sensor["device_class"], sensor["unit_of_measurement"]) == ("sound_pressure", "dBA")
        assert sensor["value_template"] == "{{ value_json.get('%s_dba_spl') }}" % stat
    levels = {t: m for t, m in found.items() if "/sensor/" in t and ("/level" in t or "/sound_pressure" in t)}
    before = {t: m for t, m in plain.items() if "/sensor/" in t and ("/level" in t or "/sound_pressure" in t)}
    assert len(levels) == len(before) == 3 and not set(levels) & set(before)
    assert not {m["unique_id"] for m in levels.values()} & {m["unique_id"] for m in before.values()}
    assert not {m["name"] for m in levels.values()} & {m["name"] for m in before.values()}  # entity ids differ too


def test_no_level_sensors_when_levels_are_off() -> None:
    quiet = Listener("kitchen", "k", ("siren",), "m@1", "0.1.0", level_interval_s=None)
    assert not [t for t in messages(quiet) if "/sensor/" in t and "/level" in t]


def test_a_threshold_number_per_probability_label() -> None:
    found = messages()
    numbers = {t: m for t, m in found.items() if t.startswith("homeassistant/number/")}
    assert set(numbers) == {NODE.format("number", "threshold_dog_bark"), NODE.format("number", "threshold_siren")}
    siren = numbers[NODE.format("number", "threshold_siren")]
    assert (siren["min"], siren["max"], siren["step"]) == (0.0, 1.0, 0.01)
    assert siren["mode"] in ("box", "slider") and siren["retain"] is False
    assert siren["command_topic"] == "noisewatch/kitchen/threshold/siren/set"
    assert siren["state_topic"] == "noisewatch/kitchen/threshold/siren"


def test_dropped_entities_are_cleared_with_their_retained_state() -> None:
    before = retained_state_topics(discovery_messages(TOPICS, LISTENER))
    fewer = Listener("kitchen", "k", ("dog_bark", "loud"), "urban11@3", "0.1.0", level_interval_s=None,
                     stats_interval_s=30.0)
    now = retained_state_topics(discovery_messages(TOPICS, fewer))
    clears = stale_clears(before, now)
    assert all(payload == b"" for _, payload in clears)
    cleared = [topic for topic, _ in clears]
    assert NODE.format("binary_sensor", "siren") in cleared and "noisewatch/kitchen/state/siren" in cleared
    assert NODE.format("number", "threshold_siren") in cleared and "noisewatch/kitchen/threshold/siren" in cleared
    assert NODE.format("sensor", "level_lmax") in cleared and "noisewatch/kitchen/level" in cleared
    assert cleared.count("noisewatch/kitchen/level") == 1  # three sensors read it; cleared once
    assert not [t for t in cleared if "dog_bark" in t or t.endswith("/stats") or t.endswith("/audio")]
    assert not [t for t in cleared if t.endswith("/events") or t.endswith("/started")]  # never retained
    assert stale_clears(now, now) == []


def test_discovery_turned_off_clears_everything_announced() -> None:
    before = retained_state_topics(discovery_messages(TOPICS, LISTENER))
    cleared = {topic for topic, _ in stale_clears(before, {})}
    assert set(before) <= cleared
    assert "homeassistant/event/noisewatch_kitchen/sound_event/config" in cleared


def test_a_new_topic_prefix_clears_every_retained_topic_of_the_old_one_and_keeps_the_entities() -> None:
    def record(topics: Topics) -> dict[str, list[str]]:
        return {**retained_state_topics(discovery_messages(topics, LISTENER)), **listener_retained_topics(topics, LISTENER)}

    before, now = record(TOPICS), record(Topics("house/kitchen"))
    cleared = [topic for topic, _ in stale_clears(before, now)]
    assert sorted(cleared) == sorted(["noisewatch/kitchen/status", *listener_retained_topics(TOPICS, LISTENER)[
        "noisewatch/kitchen/status"]])
    assert "noisewatch/kitchen/events/recent" in cleared and "noisewatch/kitchen/level" in cleared
    assert stale_clears(now, now) == []


def test_announced_store_round_trips_and_survives_a_corrupt_file(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = AnnouncedStore(tmp_path / "state")
    assert store.load() == {}
    record = retained_state_topics(discovery_messages(TOPICS, LISTENER))
    store.save(record)
    assert AnnouncedStore(tmp_path / "state").load() == record
    assert [p.name for p in (tmp_path / "state").iterdir()] == ["announced.json"]  # no temporary left
    store.path.write_text("{not json")
    with caplog.at_level(logging.WARNING):
        assert store.load() == {}
    assert "announced.json" in caplog.text
    store.path.write_text('{"a": "b"}')
    assert store.load() == {}


def test_parse_threshold_command() -> None:
    assert parse_threshold(b"0.73") == pytest.approx(0.73)
    assert parse_threshold(" 1 ") == 1.0
    for bad, reason in ((b"abc", "not a number"), (b"1.5", "outside 0..1"), (b"-0.1", "outside"), (b"nan", "outside"),
                        (b"", "not a number")):
        with pytest.raises(ThresholdError, match=reason):
            parse_threshold(bad)


def test_thresholds_store_keeps_valid_overrides(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = ThresholdsStore(tmp_path, ("siren", "dog_bark"))
    assert store.load() == {}
    store.save({"siren": 0.8, "dog_bark": 0.55})
    assert ThresholdsStore(tmp_path, ("siren", "dog_bark")).load() == {"siren": 0.8, "dog_bark": 0.55}
    with pytest.raises(ThresholdError, match="unknown label"):
        store.save({"siren": 0.8, "gun_shot": 0.5})
    with pytest.raises(ThresholdError, match="outside"):
        store.save({"siren": 2.0})
    assert store.load() == {"siren": 0.8, "dog_bark": 0.55}  # a refused command changes nothing


def test_thresholds_store_ignores_corrupt_and_invalid_entries(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = ThresholdsStore(tmp_path, ("siren", "dog_bark"))
    store.path.write_text("[1, 2")
    with caplog.at_level(logging.WARNING):
        assert store.load() == {}
    assert "thresholds.json" in caplog.text
    store.path.write_text(json.dumps({"siren": 0.6, "dog_bark": 3, "gun_shot": 0.5, "x": "high"}))
    with caplog.at_level(logging.WARNING):
        assert store.load() == {"siren": 0.6}
    store.path.write_text("[0.5]")
    assert store.load() == {}


def test_a_threshold_set_for_a_label_ignored_for_now_is_kept_for_when_it_is_watched_again(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Found with a real Home Assistant: a siren threshold set from the phone, then ``siren`` added to
    ``detector.ignore``, was logged at every start as an "unknown label", and the next threshold set from Home
    Assistant (any label) rewrote the file without it: ``siren`` watched again came back at the bundle's value."""
    ThresholdsStore(tmp_path, ("siren", "dog_bark")).save({"siren": 0.5})
    ignoring_siren = ThresholdsStore(tmp_path, ("dog_bark",))
    with caplog.at_level(logging.WARNING):
        assert ignoring_siren.load() == {}  # not in force: no siren event is reported now
    assert "siren" not in caplog.text
    ignoring_siren.save({"dog_bark": 0.85})
    assert ThresholdsStore(tmp_path, ("siren", "dog_bark")).load() == {"siren": 0.5, "dog_bark": 0.85}


def test_a_reset_forgets_the_thresholds_of_labels_ignored_at_the_time_too(tmp_path: Path) -> None:
    """Found by a tinkering user with a real Home Assistant: a siren threshold set from the phone, ``siren`` then
    ignored, Reset thresholds pressed ("there were none"), ``siren`` watched again: back at the phone's value,
    hiding the config's, across restarts. A reset forgets every value set from Home Assistant."""
    ThresholdsStore(tmp_path, ("siren", "dog_bark")).save({"siren": 0.85, "dog_bark": 0.6})
    ignoring_siren = ThresholdsStore(tmp_path, ("dog_bark",))
    assert ignoring_siren.load() == {"dog_bark": 0.6}
    assert ignoring_siren.forget() == {"siren": 0.85}  # the watched ones are the caller's to name
    assert ThresholdsStore(tmp_path, ("siren", "dog_bark")).load() == {}

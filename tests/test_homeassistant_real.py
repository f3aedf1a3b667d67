"""Our discovery read by a real Home Assistant 2024.3.3 (marked ``homeassistant``; skipped without its venv).

The test publishes what the MQTT sink publishes (``discovery_messages`` retained at QoS 1, then
sample states as the daemon sends them) and asserts what Home Assistant makes of it.
"""

from __future__ import annotations

import json
import re
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import paho.mqtt.client as mqtt
import pytest
import yaml
from home_assistant import HASS, HomeAssistant
from mqtt_broker import HOST, Broker, Collector, wait_until
from paho.mqtt.enums import CallbackAPIVersion

from noisewatch.daemon.sinks.homeassistant import (
    Listener,
    default_device_name,
    discovery_messages,
    retained_state_topics,
    stale_clears,
)
from noisewatch.daemon.sinks.topics import Topics

pytestmark = [
    pytest.mark.homeassistant, pytest.mark.broker, pytest.mark.slow,
    pytest.mark.skipif(not HASS.exists(), reason=f"no Home Assistant venv at {HASS.parent.parent} "
                       "(make it with ../shared/tools/ha-check/setup.sh)"),
]

DEVICE = "hatest"
TOPICS = Topics(f"noisewatch/{DEVICE}")
LISTENER = Listener(DEVICE, default_device_name(DEVICE), ("dog_bark", "siren", "loud"), "urban11@test", "0.1.0",
                    configuration_url="http://127.0.0.1:8501")
ENTITY = "{}.noise_listener_hatest_{}"


@pytest.fixture
def publisher(broker: Broker) -> Iterator[mqtt.Client]:
    client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id="nw-ha-test")
    client.connect(HOST, broker.port)
    client.loop_start()
    yield client
    client.disconnect()
    client.loop_stop()


def publish(client: mqtt.Client, topic: str, payload: object, retain: bool = True) -> None:
    data = payload if isinstance(payload, (bytes, str)) else json.dumps(payload)
    client.publish(topic, data, qos=1, retain=retain).wait_for_publish(5)


def announce(client: mqtt.Client) -> None:
    publish(client, TOPICS.status, "online")
    for topic, config in discovery_messages(TOPICS, LISTENER):
        publish(client, topic, config)


def test_home_assistant_creates_our_entities(home_assistant: HomeAssistant, publisher: mqtt.Client,
                                             broker: Broker) -> None:
    ha = home_assistant
    announce(publisher)
    publish(publisher, TOPICS.audio, {"state": "listening", "source": "default", "device": DEVICE})
    publish(publisher, TOPICS.threshold("siren"), "0.5")
    publish(publisher, TOPICS.state("siren"), "OFF")
    publish(publisher, TOPICS.level, {"offset_s": 0.0, "period_s": 60, "leq_dbfs_a": -41.2, "lmax_dbfs_a": -30.5,
                                      "lmin_dbfs_a": -55.0})
    publish(publisher, TOPICS.stats, {"uptime_s": 61.0, "started": "2026-12-06T10:59:00.000Z", "dropped_frames": 0,
                                      "input_overflows": 2, "spool_depth": 0, "model": "urban11@test"})

    problem = ENTITY.format("binary_sensor", "audio_input")
    assert ha.wait_state(problem, "off", 30), [s["entity_id"] for s in ha.states()]
    assert ha.wait_state(ENTITY.format("number", "siren_threshold"), "0.5")
    assert ha.wait_state(ENTITY.format("sensor", "sound_level"), "-41.2")
    assert ha.wait_state(ENTITY.format("sensor", "sound_level_max"), "-30.5")
    assert ha.wait_state(ENTITY.format("sensor", "input_overflows"), "2")
    assert ha.wait_state(ENTITY.format("sensor", "model"), "urban11@test")
    assert ha.wait_state(ENTITY.format("sensor", "started"), "2026-12-06T10:59:00+00:00")  # shown as "x minutes ago"
    level = ha.state(ENTITY.format("sensor", "sound_level"))
    assert level is not None and level["attributes"]["unit_of_measurement"] == "dBFS"
    assert "device_class" not in level["attributes"]
    assert ha.state(ENTITY.format("binary_sensor", "siren"))["attributes"]["icon"] == "mdi:alarm-light"  # type: ignore[index]

    # the spool's disk refuses writes (a report from before the field read as no problem): a problem, and why
    spool_disk = ENTITY.format("binary_sensor", "spool_disk")
    assert ha.wait_state(spool_disk, "off")
    publish(publisher, TOPICS.stats, {"uptime_s": 121.0, "started": "2026-12-06T10:59:00.000Z", "spool_disk_error": "Read-only file system"})
    assert ha.wait_state(spool_disk, "on")
    assert (ha.state(spool_disk) or {})["attributes"].get("error") == "Read-only file system"
    publish(publisher, TOPICS.stats, {"uptime_s": 181.0, "started": "2026-12-06T10:59:00.000Z", "spool_disk_error": None})
    assert ha.wait_state(spool_disk, "off")

    # the microphone gives only zeros (muted): a problem too, until it listens again
    publish(publisher, TOPICS.audio, {"state": "silent", "source": "USB", "error": "gives only digital silence",
                                      "device": DEVICE})
    assert ha.wait_state(problem, "on")
    publish(publisher, TOPICS.audio, {"state": "listening", "source": "USB", "device": DEVICE})
    assert ha.wait_state(problem, "off")

    # the microphone is lost: the problem sensor turns on, with the reason as an attribute
    publish(publisher, TOPICS.audio, {"state": "audio_error", "error": "input device gone", "device": DEVICE})
    assert ha.wait_state(problem, "on")
    assert wait_until(lambda: (ha.state(problem) or {})["attributes"].get("error") == "input device gone", 10)
    attributes = ha.state(problem)["attributes"]  # type: ignore[index]
    assert attributes["audio_state"] == "audio_error"
    assert not {"type", "schema", "device"} & set(attributes), attributes  # the reason, not the envelope

    # the microphone back, an event starts: the started event entity fires before the event closes
    publish(publisher, TOPICS.audio, {"state": "listening", "source": "USB", "device": DEVICE})
    started = {"id": "e1", "label": "siren", "confidence": 0.91, "start": "2026-12-02T22:00:05.000Z",
               "offset_s": 5.0, "device": DEVICE, "model": "urban11@test"}
    publish(publisher, TOPICS.started, started, retain=False)
    publish(publisher, TOPICS.state("siren"), "ON")
    assert wait_until(lambda: (ha.state(ENTITY.format("event", "sound_started")) or {}).get(
        "attributes", {}).get("event_type") == "siren", 10)
    assert ha.wait_state(ENTITY.format("binary_sensor", "siren"), "on")

    # a threshold set from Home Assistant arrives on the command topic
    commands = Collector(broker.port, TOPICS.threshold_commands)
    try:
        ha.call("number", "set_value", {"entity_id": ENTITY.format("number", "siren_threshold"), "value": 0.73})
        assert commands.wait_for(lambda c: c.on(TOPICS.threshold_set("siren")) == [b"0.73"])
    finally:
        commands.close()

    # entities dropped from the config disappear once their retained discovery is cleared
    fewer = Listener(DEVICE, LISTENER.name, ("dog_bark", "loud"), LISTENER.model, LISTENER.version)
    before = retained_state_topics(discovery_messages(TOPICS, LISTENER))
    for topic, payload in stale_clears(before, retained_state_topics(discovery_messages(TOPICS, fewer))):
        publish(publisher, topic, payload)
    assert wait_until(lambda: ha.state(ENTITY.format("binary_sensor", "siren")) is None, 10)
    assert wait_until(lambda: ha.state(ENTITY.format("number", "siren_threshold")) is None, 10)
    assert ha.state(ENTITY.format("binary_sensor", "dog_bark")) is not None

    complaints = ha.complaints(r"mqtt|noisewatch|hatest")
    assert not complaints, "\n".join(complaints)


def test_the_docs_try_it_shows_the_sample_scene_s_sounds_in_home_assistant(home_assistant: HomeAssistant,
                                                                            broker: Broker, tmp_path: Path) -> None:
    """docs/homeassistant.md's "Try it before the microphone": the daemon itself (``noisewatch run``) on the bundled
    scene, its config as the docs give it but for the broker's address: each of the scene's sounds turns its label on
    and fires Sound started and Sound event in Home Assistant, and when the file ends every entity is unavailable."""
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[1]
    block = next(b for b in re.findall(r"```yaml\n(.*?)```", (repo / "docs" / "homeassistant.md").read_text(), re.S)
                 if b.startswith("# try.yaml"))
    config = yaml.safe_load(block)
    config["mqtt"].update({"host": HOST, "port": broker.port, "username": None,
                           "spool": {"directory": str(tmp_path / "spool")}})
    (tmp_path / "try.yaml").write_text(yaml.safe_dump(config))
    labels = [truth["label"] for truth in json.loads((repo / "samples" / "scene.json").read_text())]
    entity = "{}.noise_listener_try_{}".format
    watched = [entity("binary_sensor", label) for label in labels] + [entity("event", "sound_started"),
                                                                       entity("event", "sound_event")]
    seen: dict[str, list[tuple[str, str | None]]] = {name: [] for name in watched}
    ha = home_assistant
    run = subprocess.Popen([sys.executable, "-m", "noisewatch.cli", "run", "--config", str(tmp_path / "try.yaml"),
                            "--input", str(repo / "samples" / "scene.flac"), "--speed", "2"],  # the docs say 1
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        while run.poll() is None:  # Home Assistant here keeps no history: its states, watched as a user would
            for name in watched:
                state = ha.state(name) or {}
                now = (state.get("state"), (state.get("attributes") or {}).get("event_type"))
                if now[0] is not None and seen[name][-1:] != [now]:
                    seen[name].append(now)
            time.sleep(0.1)
    finally:
        if run.poll() is None:  # a failure ends, rather than hangs, the test
            run.kill()
        stderr = run.communicate()[1]
    assert run.returncode == 0, stderr
    for label in labels:
        assert ("on", None) in seen[entity("binary_sensor", label)], (label, seen)
    for kind in ("sound_started", "sound_event"):
        types = [event_type for _, event_type in seen[entity("event", kind)]]
        assert [t for t in dict.fromkeys(types) if t in labels] == labels, (kind, seen)
    assert ha.wait_state(entity("binary_sensor", labels[0]), "unavailable")


def test_the_daemons_mqtt_sink_and_home_assistant_together(home_assistant: HomeAssistant, broker: Broker,
                                                           tmp_path: Path) -> None:
    """The real sink (not hand-published discovery): a lost microphone shows as a problem in Home Assistant,
    and a threshold changed in Home Assistant reaches the sink, is kept and is shown back."""
    from noisewatch.config import Config
    from noisewatch.daemon.messages import AudioState, Status, stamped
    from noisewatch.daemon.sinks.mqtt import MqttSink

    ha = home_assistant
    config = Config.model_validate({"device_id": DEVICE, "mqtt": {
        "enabled": True, "host": HOST, "port": broker.port, "spool": {"directory": str(tmp_path / "spool")}}})
    sink = MqttSink.from_config(config, ["background", "dog_bark", "siren"], "urban11@test",
                                {"background": 0.5, "dog_bark": 0.6, "siren": 0.7})
    try:
        sink.send(stamped(Status(AudioState.LISTENING, source="default"), DEVICE))
        problem, number = ENTITY.format("binary_sensor", "audio_input"), ENTITY.format("number", "siren_threshold")
        assert ha.wait_state(problem, "off", 30), [s["entity_id"] for s in ha.states()]
        assert ha.wait_state(number, "0.7")
        dog_bark = ENTITY.format("binary_sensor", "dog_bark")
        assert ha.wait_state(dog_bark, "off")
        sink.send(stamped(Status(AudioState.AUDIO_ERROR, error="input device gone"), DEVICE))
        assert ha.wait_state(problem, "on")
        # deaf, a label's "Clear" is no news: unavailable while the input is lost or gives one value only
        assert ha.wait_state(dog_bark, "unavailable"), ha.state(dog_bark)
        sink.send(stamped(Status(AudioState.LISTENING, source="default"), DEVICE))
        assert ha.wait_state(dog_bark, "off"), ha.state(dog_bark)
        sink.send(stamped(Status(AudioState.SILENT, source="default"), DEVICE))
        assert ha.wait_state(dog_bark, "unavailable"), ha.state(dog_bark)
        sink.send(stamped(Status(AudioState.AUDIO_ERROR, error="input device gone"), DEVICE))
        ha.call("number", "set_value", {"entity_id": number, "value": 0.85})
        assert wait_until(lambda: sink.threshold_overrides() == {"siren": 0.85}, 10)
        assert ha.wait_state(number, "0.85")
    finally:
        sink.close()
    assert json.loads((tmp_path / "state" / "thresholds.json").read_text()) == {"siren": 0.85}


def test_a_first_install_s_spooled_events_and_a_renamed_device_reach_home_assistant_cleanly(
        home_assistant: HomeAssistant, broker: Broker, tmp_path: Path) -> None:
    """Found trying a first install against this Home Assistant. Events spooled before the first connection
    went out right after the discovery that creates their entities, before Home Assistant subscribed to them:
    they never showed. And a renamed device's retained states were cleared while Home Assistant still read
    them: template errors in its log."""
    from mqtt_broker import free_port

    from noisewatch.config import Config
    from noisewatch.daemon.messages import Event, Started
    from noisewatch.daemon.sinks.mqtt import MqttSink

    def sink(device: str, port: int) -> MqttSink:
        config = Config.model_validate({"device_id": device, "mqtt": {
            "enabled": True, "host": HOST, "port": port, "reconnect_min_s": 0.1, "reconnect_max_s": 0.4,
            "spool": {"directory": str(tmp_path / "spool")}}})
        return MqttSink.from_config(config, ["background", "dog_bark", "siren"], "urban11@test",
                                    {"background": 0.5, "dog_bark": 0.6, "siren": 0.7})

    siren = Event(id="e1", label="siren", confidence=0.9, mean_confidence=0.8, start="2026-12-04T12:00:00.000Z",
                  end="2026-12-04T12:00:04.000Z", offset_s=1.0, duration_s=4.0, peak_dbfs=-12.0, mean_dbfs=-20.0,
                  device=DEVICE, model="urban11@test")
    offline = sink(DEVICE, free_port())  # the broker's address mistyped at first: the events wait in the spool
    offline.send(Started(id=siren.id, label=siren.label, confidence=siren.confidence, start=siren.start,
                         offset_s=siren.offset_s, device=DEVICE, model=siren.model))
    offline.send(siren)
    offline.close()
    ha = home_assistant
    first = sink(DEVICE, broker.port)
    try:
        ended = ENTITY.format("event", "sound_event")
        assert wait_until(lambda: (ha.state(ended) or {}).get("attributes", {}).get("event_type") == "siren", 30), \
            ha.state(ended)
        assert wait_until(lambda: first.spool.depth == 0, 5)  # its acknowledgement may come after Home Assistant shows it
    finally:
        first.close()
    renamed = sink("hatest2", broker.port)
    try:
        assert wait_until(lambda: ha.state(ENTITY.format("binary_sensor", "siren")) is None, 20)
        assert wait_until(lambda: ha.state("binary_sensor.noise_listener_hatest2_siren") is not None, 20)
        time.sleep(3)  # the old device's retained states are cleared once Home Assistant has let go of them
    finally:
        renamed.close()
    complaints = ha.complaints(r"mqtt|noisewatch|hatest|value_json")
    assert not complaints, "\n".join(complaints)


def docs_yaml_block(containing: str) -> dict:
    """The YAML example of docs/homeassistant.md that holds ``containing``, parsed."""
    text = (Path(__file__).resolve().parents[1] / "docs" / "homeassistant.md").read_text()
    blocks = [b for b in re.findall(r"```yaml\n(.*?)```", text, re.S) if containing in b]
    assert len(blocks) == 1, f"{len(blocks)} YAML examples in docs/homeassistant.md hold {containing!r}"
    return yaml.safe_load(blocks[0].replace("noise_listener_garden_", f"noise_listener_{DEVICE}_"))


def test_the_reset_button_gives_the_config_s_thresholds_back(home_assistant: HomeAssistant, broker: Broker,
                                                              tmp_path: Path) -> None:
    """A threshold set from Home Assistant's number entity wins over the config for good; its Reset thresholds
    button is the way back, pressed as a user does."""
    from noisewatch.config import Config
    from noisewatch.daemon.sinks.mqtt import MqttSink

    config = Config.model_validate({"device_id": DEVICE, "mqtt": {
        "enabled": True, "host": HOST, "port": broker.port, "spool": {"directory": str(tmp_path / "spool")}}})
    listener = MqttSink.from_config(config, ["background", "siren"], "urban11@test", {"background": 0.5, "siren": 0.7})
    ha, number, button = home_assistant, ENTITY.format("number", "siren_threshold"), ENTITY.format("button",
                                                                                                  "reset_thresholds")
    try:
        assert ha.wait_state(number, "0.7", 30), ha.state(number)
        assert (ha.state(button) or {}).get("state") not in (None, "unavailable"), ha.state(button)
        ha.call("number", "set_value", {"entity_id": number, "value": 0.93})
        assert ha.wait_state(number, "0.93"), ha.state(number)
        assert listener.threshold_overrides() == {"siren": 0.93}
        ha.call("button", "press", {"entity_id": button})
        assert ha.wait_state(number, "0.7"), ha.state(number)
        assert listener.threshold_overrides() == {}
    finally:
        listener.close()


def test_a_short_run_that_renames_the_device_leaves_its_old_states_to_the_next_run(
        home_assistant: HomeAssistant, broker: Broker, tmp_path: Path) -> None:
    """Found by a helper's first hour with a real Home Assistant: a run given a new device_id that stopped within 2 s
    of connecting (a replayed file at --speed 0) emptied the old device's retained states in the same moment as its
    discovery, while Home Assistant still read them: 39 template errors in its log. A stop leaves them to the next
    run, which clears them once Home Assistant has let go."""
    from noisewatch.config import Config
    from noisewatch.daemon.sinks.mqtt import MqttSink

    def sink(device: str) -> MqttSink:
        config = Config.model_validate({"device_id": device, "mqtt": {
            "enabled": True, "host": HOST, "port": broker.port, "spool": {"directory": str(tmp_path / "spool")}}})
        return MqttSink.from_config(config, ["background", "siren"], "urban11@test", {"background": 0.5, "siren": 0.7})

    def retained_under(prefix: str) -> set[str]:
        late = Collector(broker.port, f"{prefix}/#")
        try:
            time.sleep(1.0)  # retained messages come at once after the subscription
            return {topic for topic, payload, retained in late.messages if retained and payload}
        finally:
            late.close()

    ha = home_assistant
    first = sink(DEVICE)
    try:
        assert wait_until(lambda: ha.state(ENTITY.format("binary_sensor", "siren")) is not None, 20)
    finally:
        first.close()
    old_states = retained_under(f"noisewatch/{DEVICE}")
    assert f"noisewatch/{DEVICE}/state/siren" in old_states, old_states
    watch = Collector(broker.port, "homeassistant/#")
    renamed = sink("hatest2")
    try:
        assert watch.wait_for(lambda c: any(topic.endswith("/config") and f"_{DEVICE}/" in topic and not payload
                                            for topic, payload, _ in c.messages), 20)
    finally:
        renamed.close()  # as soon as the old configs are emptied: well within the 2 s Home Assistant takes to let go
        watch.close()
    assert wait_until(lambda: ha.state(ENTITY.format("binary_sensor", "siren")) is None, 20)
    assert retained_under(f"noisewatch/{DEVICE}") == old_states - {f"noisewatch/{DEVICE}/status"}  # emptied at once
    again = sink("hatest2")  # the next run, long enough
    try:
        assert wait_until(lambda: not retained_under(f"noisewatch/{DEVICE}"), 15)
    finally:
        again.close()
    complaints = ha.complaints(r"mqtt|noisewatch|hatest|value_json")
    assert not complaints, "\n".join(complaints)


def test_the_docs_siren_started_automation_fires_once_per_siren_not_when_the_listener_returns(
        broker: Broker, tmp_path: Path) -> None:
    """The docs' "act on the start of a sound" example, as a user pastes it, in a real Home Assistant with the
    real sink: once per siren, not for a dog, and not when the listener comes back online (HA then restores
    the event entity's last event). Beside it the same example without the condition's first line, which did fire
    then: the restart below is the case the line is there for. Nor for a siren long over: found following the docs
    with a real Home Assistant, the spooled ``started`` notices of a broker outage arrive together when it is back
    (ten sirens of the last minutes at once, with the ``start`` each was heard at), and the example closed the
    window for each. And for every siren of a burst: found by a helper's first hour with a real Home Assistant, events
    that arrive within a millisecond change only the entity's attributes, which the example's ``not_from``/``not_to``
    trigger did not see, and its default mode dropped a trigger that came while it ran (6 of 8 sirens)."""
    from noisewatch.config import Config
    from noisewatch.daemon.messages import Started
    from noisewatch.daemon.sinks.mqtt import MqttSink

    example = docs_yaml_block("sound_started")
    template = example["condition"][0]["value_template"]
    first_line = re.compile(r"trigger\.from_state is not none and trigger\.to_state is not none\s+"
                            r"and 'unavailable' not in \[[^\]]*\]\s+and ")
    assert first_line.search(template), template
    careless = {**example, "condition": [{**example["condition"][0], "value_template": first_line.sub("", template)}]}
    automations = [{"id": name, "alias": name, **body,
                    "action": [{"service": "counter.increment", "target": {"entity_id": f"counter.{name}"}}]}
                   for name, body in (("as_documented", example), ("without_first_line", careless))]
    (tmp_path / "ha").mkdir()
    (tmp_path / "ha" / "automations.yaml").write_text(yaml.safe_dump(automations))
    ha = HomeAssistant(tmp_path / "ha", broker.port, "automation: !include automations.yaml\n"
                       "counter:\n  as_documented:\n  without_first_line:\n")

    def sink() -> MqttSink:
        config = Config.model_validate({"device_id": DEVICE, "mqtt": {
            "enabled": True, "host": HOST, "port": broker.port, "spool": {"directory": str(tmp_path / "spool")}}})
        return MqttSink.from_config(config, ["background", "dog_bark", "siren"], "urban11@test",
                                    {"background": 0.5, "dog_bark": 0.6, "siren": 0.7})

    def start(listener: MqttSink, n: int, label: str, continues: str | None = None, age_s: float = 0.0) -> None:
        heard = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(time.time() - age_s))
        listener.send(Started(id=f"s{n}", label=label, confidence=0.9, start=heard,
                              offset_s=float(n), device=DEVICE, model="urban11@test", continues=continues))

    def counts() -> tuple[str, str]:
        return tuple((ha.state(f"counter.{name}") or {}).get("state") for name in ("as_documented", "without_first_line"))

    started = ENTITY.format("event", "sound_started")
    try:
        ha.wait_ready()
        listener = sink()
        try:
            assert wait_until(lambda: (ha.state(started) or {}).get("state") not in (None, "unavailable"), 30)
            start(listener, 1, "siren")
            assert wait_until(lambda: counts() == ("1", "1"), 10), counts()
            start(listener, 2, "dog_bark")
            assert wait_until(lambda: ha.state(started)["attributes"].get("event_type") == "dog_bark", 10)
            start(listener, 3, "siren")
            assert wait_until(lambda: counts() == ("2", "2"), 10), counts()
            start(listener, 5, "siren", continues="s3")  # the same siren, past detector.max_duration_s
            assert wait_until(lambda: ha.state(started)["attributes"].get("continues") == "s3", 10)
            assert counts() == ("2", "2"), counts()
            start(listener, 6, "siren")
            assert wait_until(lambda: counts() == ("3", "3"), 10), counts()
        finally:
            listener.close()
        assert ha.wait_state(started, "unavailable")
        listener = sink()  # the listener back online (a restart, a reboot, the broker back)
        try:
            assert wait_until(lambda: ha.state(started)["state"] != "unavailable", 30)
            assert wait_until(lambda: counts()[1] == "4", 10), ("the restart did not replay the last event", counts())
            assert counts()[0] == "3"
            start(listener, 7, "siren")
            assert wait_until(lambda: counts() == ("4", "5"), 10), counts()
            start(listener, 8, "siren", age_s=600)  # held in the spool through a broker outage, delivered now
            start(listener, 9, "siren")  # and one heard now, after it
            assert wait_until(lambda: ha.state(started)["attributes"].get("id") == "s9", 10)
            assert wait_until(lambda: counts()[0] != "4", 10), counts()
            time.sleep(1)  # any action of the siren before it done too
            assert counts() == ("5", "6"), ("the docs' example acted on a siren heard 10 minutes ago", counts())
            for n in range(10, 26):  # a burst: 8 sirens and 8 dogs back to back, as held events go out together
                start(listener, n, "siren" if n % 2 else "dog_bark")
            assert wait_until(lambda: ha.state(started)["attributes"].get("id") == "s25", 10)
            assert wait_until(lambda: counts()[0] == "13", 10), ("the docs' example missed sirens of a burst", counts())
            time.sleep(1)
            assert counts() == ("13", "14"), counts()
        finally:
            listener.close()
    finally:
        ha.stop()


def test_events_heard_while_home_assistant_is_down_at_the_start_reach_it_when_it_retains_its_status(
        broker: Broker, tmp_path: Path) -> None:
    """Found by a helper's first hour with a real Home Assistant: a listener that starts while Home Assistant is down
    (a power cut the Pi comes back from first) cannot know it, published its events at once, and Home Assistant, back
    later, never had them. With its birth and will retained, as docs/homeassistant.md asks for that case, the
    listener reads its retained ``offline`` and holds them until it is back."""
    from noisewatch.config import Config
    from noisewatch.daemon.messages import Started
    from noisewatch.daemon.sinks.mqtt import MqttSink

    ha = HomeAssistant(tmp_path / "ha", broker.port, retained_status=True)
    started = ENTITY.format("event", "sound_started")
    try:
        ha.wait_ready()
        ha.stop()  # its will: a retained offline
        config = Config.model_validate({"device_id": DEVICE, "mqtt": {
            "enabled": True, "host": HOST, "port": broker.port, "spool": {"directory": str(tmp_path / "spool")}}})
        listener = MqttSink.from_config(config, ["background", "siren"], "urban11@test", {"background": 0.5, "siren": 0.7})
        try:
            heard = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())
            listener.send(Started(id="s1", label="siren", confidence=0.9, start=heard, offset_s=1.0, device=DEVICE,
                                  model="urban11@test"))
            assert wait_until(lambda: listener.spool.depth == 1, 5)
            time.sleep(3)  # it would have gone by now (DISCOVERY_SETTLE_S)
            ha.start_again()
            assert wait_until(lambda: ((ha.state(started) or {}).get("attributes") or {}).get("id") == "s1", 30), \
                ha.state(started)
        finally:
            listener.close()
    finally:
        ha.stop()


def test_an_event_spooled_through_a_broker_restart_reaches_home_assistant(home_assistant: HomeAssistant,
                                                                         broker: Broker, tmp_path: Path) -> None:
    """Found with a real Home Assistant: the listener reconnected first and published its spooled events;
    Home Assistant, back seconds later with a clean session, never saw them. Now they wait for its ``online``."""
    from noisewatch.config import Config
    from noisewatch.daemon.messages import Event
    from noisewatch.daemon.sinks.mqtt import MqttSink

    ha = home_assistant
    config = Config.model_validate({"device_id": DEVICE, "mqtt": {
        "enabled": True, "host": HOST, "port": broker.port, "reconnect_min_s": 0.5, "reconnect_max_s": 1.0,
        "spool": {"directory": str(tmp_path / "spool")}}})
    sink = MqttSink.from_config(config, ["background", "dog_bark", "siren"], "urban11@test",
                                {"background": 0.5, "dog_bark": 0.6, "siren": 0.7})
    entity = ENTITY.format("event", "sound_event")
    try:
        assert wait_until(lambda: (ha.state(entity) or {}).get("state") not in (None, "unavailable"), 30)
        broker.stop()
        sink.send(Event(id="during-outage", label="siren", confidence=0.9, mean_confidence=0.8,
                        start="2026-12-04T12:00:00.000Z", end="2026-12-04T12:00:03.000Z", offset_s=1.0,
                        duration_s=3.0, peak_dbfs=-10.0, mean_dbfs=-20.0, device=DEVICE, model="urban11@test"))
        time.sleep(1.0)
        broker.start()  # the listener reconnects within a second; Home Assistant some seconds later
        assert wait_until(lambda: (ha.state(entity) or {}).get("attributes", {}).get("id") == "during-outage", 45), \
            ha.state(entity)
    finally:
        sink.close()


def test_events_reach_home_assistant_soon_after_a_broker_restart_it_came_back_from_first(
        home_assistant: HomeAssistant, broker: Broker, tmp_path: Path, repo_root: Path) -> None:
    """Found following the README with a real Home Assistant: a broker that shuts down sends the Last Will of every
    client it drops, Home Assistant's ``offline`` among them, and the daemon took it for a restart of Home
    Assistant. Home Assistant reconnected first (its ``online`` unheard) and the daemon's events stayed held for
    the 5 minutes of a restart, not the 30 s the log and docs/mqtt.md say."""
    import soundfile as sf
    from fault_daemon import Daemon, write_config

    ha = home_assistant
    audio, rate = sf.read(str(repo_root / "samples" / "scene.flac"))
    scenes = tmp_path / "scenes.wav"
    sf.write(str(scenes), np.concatenate([audio] * 8), rate)  # 264 s: the daemon runs past every wait below
    config = write_config(tmp_path / "c.yaml", broker.port, mqtt={"keepalive_s": 30, "reconnect_min_s": 15.0,
                                                                      "reconnect_max_s": 15.0})
    daemon = Daemon(config, scenes, 1.0, tmp_path / "out.jsonl")
    entity = "event.noise_listener_faults_sound_event"

    def shown() -> str | None:
        return (ha.state(entity) or {}).get("attributes", {}).get("id")

    try:
        assert wait_until(lambda: shown() is not None, 90), (ha.state(entity), daemon.log_text())
        before_outage = shown()
        broker.restart()
        assert wait_until(lambda: ha.log_text.count("Connected to MQTT server") == 2, 15)
        assert daemon.log_text().count("MQTT: connected") == 1  # the daemon is still away: it comes back second
        assert wait_until(lambda: shown() not in (None, before_outage), 100), (shown(), daemon.log_text())
    finally:
        daemon.kill()


def refuse_home_assistant(port: int, attempts: int) -> None:
    """Stand in for a stopped broker on its port until Home Assistant has tried to connect ``attempts`` times (the
    listener's attempts, which name its client id, are let go): its paho waits 1 s, 2 s, 4 s, ... between them."""
    seen = 0
    with socket.create_server((HOST, port)) as server:
        server.settimeout(30)
        while seen < attempts:
            connection, _ = server.accept()
            with connection:
                connection.settimeout(5)
                hello = connection.recv(256)
            seen += bool(hello) and f"noisewatch-{DEVICE}".encode() not in hello


def test_a_broker_restarted_during_the_wait_for_its_last_return_holds_events_for_home_assistant(
        home_assistant: HomeAssistant, broker: Broker, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A review found the broker's shutdown will (Home Assistant's ``offline``) ending any wait, not only the one it
    started: a listener cut off alone (here another client took its session; Home Assistant stayed connected and
    said nothing) waited for Home Assistant, the broker restarted meanwhile, and at the listener's return, within
    the minute (no second wait), its event went out before Home Assistant had subscribed again: never shown. Without
    the fix it fails when the will reaches the listener before its link drops (mosquitto drops its clients in an
    order of its own: in 2 runs of 3)."""
    import logging

    from noisewatch.config import Config
    from noisewatch.daemon.messages import Event
    from noisewatch.daemon.sinks.mqtt import MqttSink

    def siren(event_id: str) -> Event:
        return Event(id=event_id, label="siren", confidence=0.9, mean_confidence=0.8, start="2026-12-04T12:00:00.000Z",
                     end="2026-12-04T12:00:03.000Z", offset_s=1.0, duration_s=3.0, peak_dbfs=-10.0, mean_dbfs=-20.0,
                     device=DEVICE, model="urban11@test")

    ha, entity = home_assistant, ENTITY.format("event", "sound_event")
    caplog.set_level(logging.INFO, logger="noisewatch")
    config = Config.model_validate({"device_id": DEVICE, "mqtt": {
        "enabled": True, "host": HOST, "port": broker.port, "reconnect_min_s": 0.1, "reconnect_max_s": 0.2,
        "spool": {"directory": str(tmp_path / "spool")}}})
    sink = MqttSink.from_config(config, ["background", "dog_bark", "siren"], "urban11@test",
                                {"background": 0.5, "dog_bark": 0.6, "siren": 0.7})

    def shown() -> str | None:
        return (ha.state(entity) or {}).get("attributes", {}).get("id")

    try:
        sink.send(siren("before"))
        assert wait_until(lambda: shown() == "before", 30), ha.state(entity)
        thief = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id=f"noisewatch-{DEVICE}",
                            clean_session=False)
        thief.connect(HOST, broker.port)
        thief.disconnect()
        assert wait_until(lambda: "the broker was unreachable" in caplog.text, 10), caplog.text
        broker.stop()  # its shutdown sends Home Assistant's last will, then drops the listener
        sink.send(siren("after"))  # out as the listener returns (it retries every 0.2 s)
        refuse_home_assistant(broker.port, attempts=2)  # its next one is 4 s later: the listener is back first
        broker.start()
        assert wait_until(lambda: shown() == "after", 40), (shown(), caplog.text)
    finally:
        sink.close()


def test_no_sound_level_shows_while_the_microphone_is_lost(home_assistant: HomeAssistant, broker: Broker,
                                                          tmp_path: Path) -> None:
    """Found following the README with a real Home Assistant: a listener started without its microphone showed the
    previous run's retained level as the current one (for 2.5 level periods: 25 minutes at a 10 minute Leq) beside
    an "Audio input" problem. Levels are heard, and nothing is heard now: they are unavailable until it listens."""
    from noisewatch.config import Config
    from noisewatch.daemon.messages import AudioState, Level, Status, stamped
    from noisewatch.daemon.sinks.mqtt import MqttSink

    def sink() -> MqttSink:
        config = Config.model_validate({"device_id": DEVICE, "mqtt": {
            "enabled": True, "host": HOST, "port": broker.port, "spool": {"directory": str(tmp_path / "spool")}}})
        return MqttSink.from_config(config, ["background", "dog_bark", "siren"], "urban11@test",
                                    {"background": 0.5, "dog_bark": 0.6, "siren": 0.7})

    ha = home_assistant
    level, problem = ENTITY.format("sensor", "sound_level"), ENTITY.format("binary_sensor", "audio_input")
    earlier = sink()  # a run that heard the street
    try:
        earlier.send(stamped(Status(AudioState.LISTENING, source="USB"), DEVICE))
        earlier.send(Level(start="2026-12-04T12:00:00.000Z", end="2026-12-04T12:01:00.000Z", offset_s=0.0,
                           period_s=60.0, leq_dbfs=-40.0, lmax_dbfs=-30.0, lmin_dbfs=-50.0, leq_dbfs_a=-41.2,
                           lmax_dbfs_a=-30.5, lmin_dbfs_a=-55.0, device=DEVICE))
        assert ha.wait_state(level, "-41.2", 30), ha.state(level)
    finally:
        earlier.close()
    deaf = sink()  # the next start: the USB microphone is gone
    try:
        deaf.send(stamped(Status(AudioState.AUDIO_ERROR, error="input device gone"), DEVICE))
        assert ha.wait_state(problem, "on", 30)
        assert ha.wait_state(level, "unavailable"), ha.state(level)
        deaf.send(stamped(Status(AudioState.LISTENING, source="USB"), DEVICE))  # plugged back in
        assert ha.wait_state(problem, "off")
        assert ha.wait_state(level, "-41.2"), ha.state(level)
    finally:
        deaf.close()


def test_events_lost_for_good_show_in_home_assistant(home_assistant: HomeAssistant, broker: Broker, tmp_path: Path,
                                                    repo_root: Path) -> None:
    """Found following the README with a real Home Assistant: events the spool dropped (here two spooled a week ago,
    past ``mqtt.spool.max_age_h``, while the broker was away) were logged and counted in ``stats``, and the
    dashboard showed them, but Home Assistant, the place a user looks, had no entity that said so. Two events, not
    the four messages they were spooled as (a started notice lost is not an event lost)."""
    from fault_daemon import PREFIX, Daemon, spooled_event, started_notice, write_config

    from noisewatch.daemon.sinks.spool import Spool

    week_ago = time.time() - 8 * 86400
    spool = Spool(tmp_path / "spool", max_mb=50.0, max_age_h=24 * 365, clock=lambda: week_ago, boot_id="earlier")
    for n in (1, 2):  # each event as the daemon spools it: its started notice, then itself
        spool.append(f"{PREFIX}/events/started", json.dumps(started_notice(n)).encode())
        spool.append(f"{PREFIX}/events", json.dumps(spooled_event(n)).encode())
    config = write_config(tmp_path / "c.yaml", broker.port, mqtt={"keepalive_s": 30}, stats={"interval_s": 1})
    ha, lost = home_assistant, "sensor.noise_listener_faults_events_lost"
    daemon = Daemon(config, repo_root / "samples" / "scene.flac", 1.0, tmp_path / "out.jsonl")
    try:
        assert ha.wait_state(lost, "2", 60), (ha.state(lost), daemon.log_text())
        assert ha.state(lost)["attributes"].get("state_class") == "total_increasing"  # type: ignore[index]
    finally:
        daemon.kill()


def test_a_microphone_calibrated_after_a_run_without_gives_no_template_warnings(home_assistant: HomeAssistant,
                                                                               broker: Broker, tmp_path: Path) -> None:
    """Found trying ``levels.calibration_db`` with a real Home Assistant: the new Sound pressure sensors read the
    level retained by the uncalibrated run before (no ``*_dba_spl`` keys), and Home Assistant logged a template
    warning for each of the three. They show nothing until a calibrated level comes, without a warning."""
    from noisewatch.config import Config
    from noisewatch.daemon.messages import AudioState, Level, Status, stamped
    from noisewatch.daemon.sinks.mqtt import MqttSink

    def sink(levels: dict[str, float]) -> MqttSink:
        config = Config.model_validate({"device_id": DEVICE, "levels": levels, "mqtt": {
            "enabled": True, "host": HOST, "port": broker.port, "spool": {"directory": str(tmp_path / "spool")}}})
        return MqttSink.from_config(config, ["background", "dog_bark", "siren"], "urban11@test",
                                    {"background": 0.5, "dog_bark": 0.6, "siren": 0.7})

    def level(spl: float | None) -> Level:
        return Level(start="2026-12-04T12:00:00.000Z", end="2026-12-04T12:01:00.000Z", offset_s=0.0, period_s=60.0,
                     leq_dbfs=-40.0, lmax_dbfs=-30.0, lmin_dbfs=-50.0, leq_dbfs_a=-41.2, lmax_dbfs_a=-30.5,
                     lmin_dbfs_a=-55.0, leq_dba_spl=spl, lmax_dba_spl=spl, lmin_dba_spl=spl, device=DEVICE)

    ha = home_assistant
    uncalibrated = sink({})
    try:
        uncalibrated.send(stamped(Status(AudioState.LISTENING, source="USB"), DEVICE))
        uncalibrated.send(level(None))
        assert ha.wait_state(ENTITY.format("sensor", "sound_level"), "-41.2", 30)
    finally:
        uncalibrated.close()
    pressure = ENTITY.format("sensor", "sound_pressure")
    calibrated = sink({"calibration_db": 94.0})
    try:
        assert wait_until(lambda: ha.state(pressure) is not None, 30), [s["entity_id"] for s in ha.states()]
        time.sleep(3)  # Home Assistant has read the retained uncalibrated level by now
        assert ha.state(pressure)["state"] == "unknown"  # type: ignore[index]
        calibrated.send(level(52.8))
        assert ha.wait_state(pressure, "52.8")
    finally:
        calibrated.close()
    complaints = ha.complaints(r"mqtt|noisewatch|hatest|value_json")
    assert not complaints, "\n".join(complaints)


def test_diagnostic_sensors_stay_available_across_an_upgrade(home_assistant: HomeAssistant, broker: Broker,
                                                            tmp_path: Path) -> None:
    """Found restarting the daemon with a changed discovery (a new model, version or device name) against a real
    Home Assistant: it reads the changed config of an entity that expires as starting expired, after the stats
    sent at start-up, and Model, Uptime and the other diagnostic sensors were unavailable until the next report
    (``stats.interval_s``, a minute by default). The latest stats go again once it has read the discovery, and so do
    the sound sensors' states, which expire as well."""
    from noisewatch.config import Config
    from noisewatch.daemon.messages import AudioState, Stats, Status, stamped
    from noisewatch.daemon.sinks.mqtt import MqttSink

    def sink(model: str) -> MqttSink:
        config = Config.model_validate({"device_id": DEVICE, "mqtt": {
            "enabled": True, "host": HOST, "port": broker.port, "spool": {"directory": str(tmp_path / "spool")}}})
        listener = MqttSink.from_config(config, ["background", "dog_bark", "siren"], model,
                                        {"background": 0.5, "dog_bark": 0.6, "siren": 0.7})
        listener.send(Stats(uptime_s=0.2, started="2026-12-06T11:00:00.000Z", audio_s=0.1, windows=0, gated_windows=0,
                            events=0, input_overflows=0, dropped_frames=0, nonfinite_samples=0, source="USB", model=model,
                            runtime="ai_edge_litert", version="0.1.0"))  # as the daemon does as audio starts
        listener.send(stamped(Status(AudioState.LISTENING, source="USB"), DEVICE))
        return listener

    ha, entity, siren = home_assistant, ENTITY.format("sensor", "model"), ENTITY.format("binary_sensor", "siren")
    before = sink("urban11@test")
    try:
        assert ha.wait_state(entity, "urban11@test", 30), ha.state(entity)
        assert ha.wait_state(siren, "off"), ha.state(siren)
    finally:
        before.close()
    upgraded = sink("urban11@test2")
    try:
        assert ha.wait_state(entity, "urban11@test2", 15), ha.state(entity)
        time.sleep(2)
        assert ha.state(entity)["state"] == "urban11@test2"  # type: ignore[index]
        assert ha.state(siren)["state"] == "off"  # type: ignore[index]  # it expires too: its state went again
    finally:
        upgraded.close()


def test_level_sensors_stay_available_across_a_reload_that_renames_the_device(home_assistant: HomeAssistant,
                                                                              broker: Broker, tmp_path: Path) -> None:
    """Found reloading a new ``mqtt.homeassistant.device_name`` with a real Home Assistant: the changed discovery
    had the level sensors start expired, and they were unavailable until the next report (``levels.interval_s``).
    The replaced sink hands its latest level to the new one, which sends it again once Home Assistant has read it."""
    from noisewatch.config import Config
    from noisewatch.daemon.messages import AudioState, Level, Status, stamped
    from noisewatch.daemon.sinks.mqtt import MqttSink

    def sink(name: str | None, running: MqttSink | None = None) -> MqttSink:
        config = Config.model_validate({"device_id": DEVICE, "mqtt": {
            "enabled": True, "host": HOST, "port": broker.port, "homeassistant": {"device_name": name},
            "spool": {"directory": str(tmp_path / "spool")}}})
        return MqttSink.from_config(config, ["background", "dog_bark", "siren"], "urban11@test",
                                    {"background": 0.5, "dog_bark": 0.6, "siren": 0.7}, running=running)

    ha, entity = home_assistant, ENTITY.format("sensor", "sound_level")
    before = sink(None)
    before.send(stamped(Status(AudioState.LISTENING, source="USB"), DEVICE))
    before.send(Level(start="2026-12-04T12:00:00.000Z", end="2026-12-04T12:01:00.000Z", offset_s=0.0, period_s=60.0,
                      leq_dbfs=-40.0, lmax_dbfs=-30.0, lmin_dbfs=-50.0, leq_dbfs_a=-41.2, lmax_dbfs_a=-30.5,
                      lmin_dbfs_a=-55.0, device=DEVICE))
    try:
        assert ha.wait_state(entity, "-41.2", 30), ha.state(entity)
        renamed = sink("Kitchen", running=before)  # a reload: the new sink is built, then the old one closed
    finally:
        before.close()
    try:
        time.sleep(1)  # Home Assistant has read the new discovery (the sensors start expired: a moment unavailable)
        assert ha.wait_state(entity, "-41.2", 5), ha.state(entity)
        time.sleep(2)
        assert ha.state(entity)["state"] == "-41.2"  # type: ignore[index]
        # docs/homeassistant.md: the ids stay as Home Assistant first saw them; the names shown follow the new name
        assert ha.state(entity)["attributes"]["friendly_name"] == "Kitchen Sound level"  # type: ignore[index]
        assert ha.state("sensor.kitchen_sound_level") is None
    finally:
        renamed.close()


def test_level_sensors_show_the_level_at_once_after_a_reload_that_renames_the_listener(
        home_assistant: HomeAssistant, broker: Broker, tmp_path: Path) -> None:
    """Found renaming a listener (``device_id``, as ``noisewatch setup --device-id`` then a reload) with a real Home
    Assistant: its new device's Sound level sensors were unavailable until the next report, a whole
    ``levels.interval_s`` (a minute by default; an hour at 3600), while every other entity showed at once. The
    latest level was handed to the new sink only under the same topic and device id; it goes under the new ones."""
    from noisewatch.config import Config
    from noisewatch.daemon.messages import AudioState, Level, Status, stamped
    from noisewatch.daemon.sinks.mqtt import MqttSink

    def sink(device: str, running: MqttSink | None = None) -> MqttSink:
        config = Config.model_validate({"device_id": device, "mqtt": {
            "enabled": True, "host": HOST, "port": broker.port, "spool": {"directory": str(tmp_path / "spool")}}})
        return MqttSink.from_config(config, ["background", "dog_bark", "siren"], "urban11@test",
                                    {"background": 0.5, "dog_bark": 0.6, "siren": 0.7}, running=running)

    ha, renamed_id = home_assistant, f"{DEVICE}2"
    entity = f"sensor.noise_listener_{renamed_id}_sound_level"
    before = sink(DEVICE)
    before.send(stamped(Status(AudioState.LISTENING, source="USB"), DEVICE))
    before.send(Level(start="2026-12-04T12:00:00.000Z", end="2026-12-04T12:01:00.000Z", offset_s=0.0, period_s=60.0,
                      leq_dbfs=-40.0, lmax_dbfs=-30.0, lmin_dbfs=-50.0, leq_dbfs_a=-41.2, lmax_dbfs_a=-30.5,
                      lmin_dbfs_a=-55.0, device=DEVICE))
    collector = Collector(broker.port, f"noisewatch/{renamed_id}/level")
    try:
        assert ha.wait_state(ENTITY.format("sensor", "sound_level"), "-41.2", 30)
        renamed = sink(renamed_id, running=before)  # a reload: the new sink is built, then the old one closed
    finally:
        before.close()
    try:
        renamed.send(stamped(Status(AudioState.LISTENING, source="USB"), renamed_id))  # as the service says it anew
        assert ha.wait_state(entity, "-41.2", 15), ha.state(entity)
        assert collector.wait_for(lambda c: bool(c.on(f"noisewatch/{renamed_id}/level")))
        assert json.loads(collector.on(f"noisewatch/{renamed_id}/level")[-1])["device"] == renamed_id
    finally:
        renamed.close()
        collector.close()


def test_entities_removed_while_home_assistant_was_down_go_when_it_is_back(broker: Broker, tmp_path: Path) -> None:
    """Found renaming a listener (``device_id``) while Home Assistant was stopped: the old discovery was emptied
    then, and Home Assistant, back, ignores an empty config for an entity it has not discovered since it started.
    The old device and its entities stayed, unavailable, for good. Emptied again once it says online, they go."""
    from noisewatch.config import Config
    from noisewatch.daemon.messages import AudioState, Status, stamped
    from noisewatch.daemon.sinks.mqtt import MqttSink

    def sink(device: str) -> MqttSink:
        config = Config.model_validate({"device_id": device, "mqtt": {
            "enabled": True, "host": HOST, "port": broker.port, "spool": {"directory": str(tmp_path / "spool")}}})
        return MqttSink.from_config(config, ["background", "dog_bark", "siren"], "urban11@test",
                                    {"background": 0.5, "dog_bark": 0.6, "siren": 0.7})

    old, new = ENTITY.format("binary_sensor", "siren"), "binary_sensor.noise_listener_hatest2_siren"
    ha = HomeAssistant(tmp_path / "ha", broker.port)
    try:
        ha.wait_ready()
        first = sink(DEVICE)
        try:
            first.send(stamped(Status(AudioState.LISTENING, source="USB"), DEVICE))  # as the service says it at start
            assert ha.wait_state(old, "off", 30), ha.state(old)
        finally:
            first.close()
        ha.stop()
        cleared = Collector(broker.port, f"homeassistant/binary_sensor/noisewatch_{DEVICE}/siren/config")
        renamed = sink("hatest2")
        try:
            assert cleared.wait_for(lambda c: c.on(cleared.messages[0][0])[-1:] == [b""] if c.messages else False, 20)
            ha.start_again()
            assert wait_until(lambda: ha.state(new) is not None, 30)
            assert wait_until(lambda: not [s for s in ha.states() if "_hatest_" in s["entity_id"]], 15), \
                [s["entity_id"] for s in ha.states() if "_hatest_" in s["entity_id"]]
        finally:
            renamed.close()
            cleared.close()
        complaints = ha.complaints(r"mqtt|noisewatch|hatest")
        assert not complaints, "\n".join(complaints)
    finally:
        ha.stop()
    registry = json.loads((tmp_path / "ha" / ".storage" / "core.device_registry").read_text())
    assert [d["name"] for d in registry["data"]["devices"] if "noisewatch" in json.dumps(d["identifiers"])] == [
        "Noise listener hatest2"]


def test_a_listener_gone_with_its_broker_in_one_power_cut_does_not_stay_clear(home_assistant: HomeAssistant,
                                                                             broker: Broker, tmp_path: Path) -> None:
    """Found asking what Home Assistant shows after a power cut that takes the broker and the Pi down together, and
    the Pi does not come back (a corrupted SD card): no connection ended at the broker, so no Last Will; the broker
    kept the retained ``online``, and the sound sensors said "Clear" and Audio input "OK" for good. They expire now,
    as the stats sensors do, and the listener sends their states again with every stats report."""
    from noisewatch.config import Config
    from noisewatch.daemon.messages import AudioState, Stats, Status, stamped
    from noisewatch.daemon.sinks.mqtt import MqttSink

    interval_s = 4.0  # the sensors expire 10 s after their last state
    config = Config.model_validate({"device_id": DEVICE, "stats": {"interval_s": interval_s}, "mqtt": {
        "enabled": True, "host": HOST, "port": broker.port, "spool": {"directory": str(tmp_path / "spool")}}})
    listener = MqttSink.from_config(config, ["background", "dog_bark", "siren"], "urban11@test",
                                    {"background": 0.5, "dog_bark": 0.6, "siren": 0.7})
    stats = Stats(uptime_s=0.2, started="2026-12-06T11:00:00.000Z", audio_s=0.1, windows=0, gated_windows=0, events=0,
                  input_overflows=0, dropped_frames=0, nonfinite_samples=0, source="USB", model="urban11@test",
                  runtime="ai_edge_litert", version="0.1.0")
    ha, siren, audio = home_assistant, ENTITY.format("binary_sensor", "siren"), ENTITY.format("binary_sensor", "audio_input")
    try:
        listener.send(stamped(Status(AudioState.LISTENING, source="USB"), DEVICE))
        listener.send(stats)
        assert ha.wait_state(siren, "off", 30), ha.state(siren)
        for _ in range(4):  # 16 s of reports, past the expiry: the states sent with them keep the sensors
            time.sleep(interval_s)
            listener.send(stats)
            assert ha.state(siren)["state"] == "off" and ha.state(audio)["state"] == "off"  # type: ignore[index]
        broker.stop(kill=True)  # the power cut: the broker goes, and the listener with it
    finally:
        listener.close()
    broker.start()
    status = Collector(broker.port, TOPICS.status)
    try:
        assert status.wait_for(lambda c: c.on(TOPICS.status) == [b"online"]), "the broker kept the listener's online"
    finally:
        status.close()
    assert ha.wait_state(siren, "off", 60), ha.state(siren)  # Home Assistant back on the broker, reading it
    assert ha.wait_state(siren, "unavailable", 15), ha.state(siren)
    assert ha.state(audio)["state"] == "unavailable"  # type: ignore[index]


def test_a_reload_with_a_new_model_does_not_turn_an_open_siren_on_twice(home_assistant: HomeAssistant,
                                                                       broker: Broker, tmp_path: Path) -> None:
    """docs/mqtt.md (status): a reload that reconnects to the same broker as the same client, what is announced
    changed, says online at once "and no entity turns unavailable" (MqttSink.serves: every entity went unavailable
    for a moment, "and an open event turned on twice in Home Assistant"). Found by a review: with ``expire_after`` on
    the sound sensors, Home Assistant takes a changed discovery as starting expired, and a reload with a new model
    turned the siren that was on unavailable until its state went again 2 s later, then on again (a "to on"
    automation fired a second time for one siren). Their config names the device only, so a new model changes none."""
    from noisewatch.config import Config
    from noisewatch.daemon.messages import AudioState, Started, Status, stamped
    from noisewatch.daemon.sinks.mqtt import MqttSink

    def sink(name: str | None, running: MqttSink | None = None) -> MqttSink:
        config = Config.model_validate({"device_id": DEVICE, "mqtt": {
            "enabled": True, "host": HOST, "port": broker.port,
            "spool": {"directory": str(tmp_path / "spool")}}})
        model = "urban11@2" if name else "urban11@test"
        return MqttSink.from_config(config, ["background", "dog_bark", "siren"], model,
                                    {"background": 0.5, "dog_bark": 0.6, "siren": 0.7}, running=running)

    ha, siren = home_assistant, ENTITY.format("binary_sensor", "siren")
    before = sink(None)
    before.send(stamped(Status(AudioState.LISTENING, source="USB"), DEVICE))
    before.send(Started(id=str(uuid.uuid4()), label="siren", confidence=0.9, start="2026-12-06T12:00:00.000Z",
                        offset_s=0.0, device=DEVICE, model="urban11@test"))  # a siren goes on through the reload
    try:
        assert ha.wait_state(siren, "on", 30), ha.state(siren)
        time.sleep(3)  # the connect's own sending again is over
        on_since = ha.state(siren)["last_changed"]  # type: ignore[index]
        renamed = sink("new model", running=before)  # a reload: the new sink is built, then the old one closed
    finally:
        before.close()
    seen: list[str] = []
    try:
        deadline = time.monotonic() + 6  # the new discovery, and the states sent again 2 s after it
        while time.monotonic() < deadline:
            seen.append((ha.state(siren) or {}).get("state", "?"))
            time.sleep(0.1)
        state = ha.state(siren)
        assert state is not None and state["state"] == "on", state
        assert "unavailable" not in seen and state["last_changed"] == on_since, (
            f"the siren left 'on' during the reload: {list(dict.fromkeys(seen))}, on again since "
            f"{state['last_changed']} (was on since {on_since})")
    finally:
        renamed.close()


def test_check_config_s_discovery_check_shows_nothing_in_home_assistant(home_assistant: HomeAssistant,
                                                                        broker: Broker, publisher: mqtt.Client,
                                                                        tmp_path: Path) -> None:
    """docs/mqtt.md: under MQTT 5, check-config publishes once under the listener's discovery node, on a topic Home
    Assistant ignores (it does not end in ``config``): no entity appears, and its log says nothing of it. (Ending in
    ``config``, the check's JSON would be an invalid discovery config, logged as an error.)"""
    from noisewatch.config import Config
    from noisewatch.daemon.sinks.mqtt_client import probe_listener

    ha = home_assistant
    publisher.publish("homeassistant/sensor/hacheck_ready/config", json.dumps(
        {"name": "hacheck ready", "state_topic": "hacheck/ready", "unique_id": "hacheck_ready"}), retain=True)
    assert wait_until(lambda: ha.state("sensor.hacheck_ready") is not None, 30)  # its discovery listens
    config = Config.model_validate({"device_id": "hacheck", "mqtt": {
        "enabled": True, "host": HOST, "port": broker.port, "protocol": "5",
        "spool": {"directory": str(tmp_path / "spool")}}})
    collector = Collector(broker.port, "homeassistant/+/noisewatch_hacheck/#")
    try:
        assert probe_listener(config, None, 10.0) is None
        assert collector.wait_for(lambda c: bool(c.messages))  # it went out, under the node, to Home Assistant too
    finally:
        collector.close()
    time.sleep(2.0)  # as long as Home Assistant took to show the entity above
    assert [s["entity_id"] for s in ha.states() if "hacheck" in s["entity_id"]] == ["sensor.hacheck_ready"]
    complaints = ha.complaints(r"hacheck|discovery")
    assert not complaints, "\n".join(complaints)

"""Review h5: the mends after the first review (``_events_topics``, ``RecentEvents``, ``_state_change``)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from mqtt_broker import Broker, Collector, wait_until
from test_mqtt_sink import LABELS, MODEL, PREFIX, a_level, event, ids_on, make_config, mqtt_settings, started

from noisewatch.config import Config
from noisewatch.daemon.sinks.homeassistant_wait import DISCOVERY_SETTLE_S
from noisewatch.daemon.sinks.mqtt import LIVE_QUEUE_MAX, MqttSink

pytestmark = pytest.mark.broker

OTHER = "noisewatch/refused"


def test_a_refused_reload_does_not_send_the_running_sinks_events_under_its_prefix(
        tmp_path: Path, broker: Broker, collector: Collector) -> None:
    """A reload whose JSON-lines file fails builds (and starts) the new MQTT sink, then closes it (``open_sinks``):
    the running sink serves on, under its own prefix. From ``from_config`` until that close has set ``_stopping``
    (after its pump's join: 0.75 s while the spool holds events, as it does while they wait for Home Assistant),
    the running sink's ``_events_topics()`` names the refused sink's topics, and what it feeds from its spool in
    that time goes out there, is acknowledged and removed: lost to every subscriber of the prefix the listener
    keeps (and under a prefix whose retained topics were emptied as a listener gone, if it was one before)."""
    config = make_config(tmp_path, broker.port)
    thresholds = {label: 0.6 for label in LABELS}
    running = MqttSink.from_config(config, LABELS, MODEL, thresholds)
    try:
        assert collector.wait_for(lambda c: c.on(f"{PREFIX}/status") == [b"online"])
        time.sleep(DISCOVERY_SETTLE_S + 0.5)  # the first connect's settle over
        collector.client.publish("homeassistant/status", "offline", qos=1).wait_for_publish(5)  # HA restarts
        events = [event(n) for n in range(3)]
        for ev in events:
            running.send(started(ev))
            running.send(ev)
        time.sleep(1.0)
        assert ids_on(collector) == []  # waiting for Home Assistant
        collector.client.publish("homeassistant/status", "online", qos=1).wait_for_publish(5)  # back: 2 s to settle
        time.sleep(DISCOVERY_SETTLE_S - 0.5)
        refused = MqttSink.from_config(make_config(tmp_path, broker.port, topic_prefix=OTHER), LABELS, MODEL,
                                       thresholds, running=running)
        refused.close()  # as open_sinks does when the JSON-lines file then fails: at once
        assert wait_until(lambda: running.spool.depth == 0, 10)
        time.sleep(0.5)
        assert ids_on(collector, f"{OTHER}/events") == []
        assert list(dict.fromkeys(ids_on(collector))) == [ev.id for ev in events]
    finally:
        running.close()


def test_events_a_prefix_changing_reload_finds_waiting_for_home_assistant_go_out_after_its_new_discovery(
        tmp_path: Path, broker: Broker, collector: Collector) -> None:
    """docs/mqtt.md: after a discovery that adds or removes entities, events wait 2 s for Home Assistant to read it
    (it subscribes to a new entity's topics). A reload that changes ``mqtt.topic_prefix`` while events wait for Home
    Assistant (30 s after a broker outage): the replaced sink's close flushes them under the new prefix
    (``_events_topics``), before the new sink has even connected, so before any discovery names ``<new>/events``.
    Home Assistant's event entities still listen on the old topics, it has no subscription on the new one, and
    events are not retained: Home Assistant never sees them, and the spool has let them go."""
    config = make_config(tmp_path, broker.port)
    thresholds = {label: 0.6 for label in LABELS}
    running = MqttSink.from_config(config, LABELS, MODEL, thresholds)
    successor = None
    try:
        assert collector.wait_for(lambda c: c.on(f"{PREFIX}/status") == [b"online"])
        broker.stop()
        assert wait_until(lambda: not running._connected, 10)
        events = [event(n) for n in range(3)]
        for ev in events:
            running.send(started(ev))
            running.send(ev)
        broker.start()
        assert wait_until(lambda: running._connected, 10)
        time.sleep(1.0)
        assert ids_on(collector) == []  # waiting for Home Assistant after the outage (30 s)
        successor = MqttSink.from_config(make_config(tmp_path, broker.port, topic_prefix=OTHER), LABELS, MODEL,
                                         thresholds, running=running)
        running.close()
        def discovery(c: Collector) -> list[int]:
            return [i for i, (topic, payload, _) in enumerate(c.messages) if topic.startswith("homeassistant/")
                    and payload and json.loads(payload).get("state_topic") == f"{OTHER}/events"]

        assert collector.wait_for(lambda c: len(set(ids_on(c, f"{OTHER}/events"))) == 3 and discovery(c), 40)
        first_event = next(i for i, (topic, _, _) in enumerate(collector.messages) if topic == f"{OTHER}/events")
        assert discovery(collector)[0] < first_event, "events under the new prefix before its discovery"
    finally:
        if successor is not None:
            successor.close()
        running.close()


def test_a_dropped_labels_off_from_an_outage_is_not_lost_behind_the_live_queue(
        tmp_path: Path, broker: Broker, collector: Collector, no_home_assistant: None) -> None:
    """``_state_change`` queues the OFF of a label a reload dropped while disconnected (the announcement names it no
    more), in the live queue, whose oldest go beyond LIVE_QUEUE_MAX: level (and scores) reports of an outage longer
    than LIVE_QUEUE_MAX of them push it out, and without discovery the retained ON stays on the broker for good
    (nothing names that label again: ``forget``)."""
    base = {"device_id": "test", "mqtt": mqtt_settings(tmp_path, broker.port, homeassistant={"discovery": False})}
    config = Config.model_validate(base)
    thresholds = {label: 0.6 for label in LABELS}
    running = MqttSink.from_config(config, LABELS, MODEL, thresholds)
    successor = None
    try:
        assert collector.wait_for(lambda c: c.on(f"{PREFIX}/status") == [b"online"])
        ev = event(0)
        running.send(started(ev))
        assert collector.wait_for(lambda c: c.on(f"{PREFIX}/state/siren")[-1:] == [b"ON"])
        dropped = Config.model_validate({**base, "detector": {"ignore": ["background", "siren"]}})
        successor = MqttSink.from_config(dropped, LABELS, MODEL, thresholds, running=running)
        running.close()
        assert wait_until(lambda: successor._connected, 10)
        broker.stop()
        assert wait_until(lambda: not successor._connected, 10)
        successor.send(ev)  # the siren that went on through the reload ends during the outage
        for _ in range(LIVE_QUEUE_MAX):  # 100 minutes of level and stats reports, or 200 s of scores
            successor.send(a_level(ev))
        broker.start()
        assert wait_until(lambda: successor._connected and successor.spool.depth == 0, 10)
        time.sleep(1.0)
        fresh = Collector(broker.port, topic=f"{PREFIX}/state/#")
        try:
            time.sleep(1.0)
            assert fresh.on(f"{PREFIX}/state/siren") == [b"OFF"]  # retained: what a dashboard starting now reads
        finally:
            fresh.close()
    finally:
        if successor is not None:
            successor.close()
        running.close()


def test_a_recent_list_json_cannot_carry_does_not_stop_the_announcement(
        tmp_path: Path, broker: Broker, collector: Collector) -> None:
    """``read_json`` takes NaN and Infinity (Python's json does), ``encode_json`` refuses them: a ``recent.json``
    holding one (edited by hand, or written by another tool) loads, and ``_announce`` now encodes ``latest()`` at
    every connect, before the states, discovery and ``online``: the ValueError ends the announcement there, and the
    listener never says online (the pump logs an unexpected error and carries on, at every reconnect)."""
    config = make_config(tmp_path, broker.port)
    config.mqtt.state_path.mkdir(parents=True, exist_ok=True)
    (config.mqtt.state_path / "recent.json").write_text('{"events": [{"id": "x", "peak_dbfs": NaN}]}')
    sink = MqttSink.from_config(config, LABELS, MODEL, {label: 0.6 for label in LABELS})
    try:
        assert collector.wait_for(lambda c: c.on(f"{PREFIX}/status") == [b"online"], timeout=10)
    finally:
        sink.close()


def test_a_reload_whose_new_sink_fails_to_start_leaves_the_running_sink_as_it_was(
        tmp_path: Path, broker: Broker) -> None:
    """``from_config`` undoes a refusal only around the constructor: ``start()`` runs after ``running._successor``,
    ``_handing_over`` and the folder locks are set, and now writes the recent list (``keep``), whose ValueError (a
    ``recent.json`` holding NaN, as above) propagates. ``_swap`` says "reload refused", and the running sink keeps a
    successor that never started and is never closed: its ``_events_topics()`` names that sink's topics for good,
    its spool move never happens (``_handing_over``), and the locks of the new folders stay held."""
    config = make_config(tmp_path, broker.port)
    config.mqtt.state_path.mkdir(parents=True, exist_ok=True)
    (config.mqtt.state_path / "recent.json").write_text('{"events": [{"id": "x", "peak_dbfs": NaN}]}')
    thresholds = {label: 0.6 for label in LABELS}
    running = MqttSink.from_config(config, LABELS, MODEL, thresholds)
    try:
        moved = make_config(tmp_path, broker.port, topic_prefix=OTHER, state_directory=str(tmp_path / "state2"))
        with pytest.raises(Exception):  # noqa: B017 - refused, one way or another
            MqttSink.from_config(moved, LABELS, MODEL, thresholds, running=running)
        assert running._successor is None and not running._handing_over
        assert running._events_topics().prefix == PREFIX
    finally:
        running.close()

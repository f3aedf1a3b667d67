"""A model with many labels (a folder-per-class dataset of 200 classes): the label and audio states sent again with
each stats report for Home Assistant must not push the report itself, or a lost input's state, out of the live
queue's bound. Found by a review, against a real mosquitto."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from mqtt_broker import HOST, Broker, Collector

from noisewatch.config import Config
from noisewatch.daemon.messages import AudioState, Stats, Status, stamped
from noisewatch.daemon.sinks.homeassistant_wait import DISCOVERY_SETTLE_S
from noisewatch.daemon.sinks.mqtt import LIVE_QUEUE_MAX, MqttSink

pytestmark = pytest.mark.broker

PREFIX = "noisewatch/test"
MODEL = "many@1"


def _stats(uptime_s: float) -> Stats:
    return Stats(uptime_s=uptime_s, started="2026-12-06T11:00:00.000Z", audio_s=uptime_s, windows=10, gated_windows=0,
                 events=0, input_overflows=0, dropped_frames=0, nonfinite_samples=0, source="test", model=MODEL,
                 runtime="ai_edge_litert", version="0.1.0")


def _connected_sink(tmp_path: Path, broker: Broker, collector: Collector, labels: list[str]) -> MqttSink:
    """A sink of a model with ``labels``, once it has said online."""
    config = Config.model_validate({"device_id": "test", "mqtt": {
        "enabled": True, "host": HOST, "port": broker.port, "keepalive_s": 5, "reconnect_min_s": 0.1,
        "reconnect_max_s": 0.4, "spool": {"directory": str(tmp_path / "spool")}}})
    sink = MqttSink.from_config(config, labels, MODEL, {label: 0.6 for label in labels})
    assert collector.wait_for(lambda c: c.on(f"{PREFIX}/status") == [b"online"], timeout=15)
    return sink


def test_a_model_with_many_labels_still_sends_its_stats_reports(tmp_path: Path, broker: Broker,
                                                                collector: Collector) -> None:
    """A model trained on a folder-per-class dataset of 200 classes (FSD50K has 200): the states sent again with a
    stats report are put on the live queue after it, and the queue keeps only its newest LIVE_QUEUE_MAX messages, so
    the report itself (and the audio state) was pushed out before it was sent, on a connected, idle link. Every
    report was lost: Home Assistant's diagnostic sensors (Model, Started, Spool disk, ...) and Audio input expired,
    and the listener looked dead while it ran."""
    labels = [f"class_{i:03d}" for i in range(LIVE_QUEUE_MAX)]
    sink = _connected_sink(tmp_path, broker, collector, labels)
    try:
        time.sleep(DISCOVERY_SETTLE_S + 1.0)  # past the connect's own sending again
        sink.send(stamped(Status(AudioState.LISTENING, source="USB"), "test"))
        assert collector.wait_for(lambda c: len(c.on(f"{PREFIX}/audio")) == 1)
        heard = len(collector.on(f"{PREFIX}/stats"))
        first, last = f"{PREFIX}/state/{labels[0]}", f"{PREFIX}/state/{labels[-1]}"
        before, last_before = len(collector.on(first)), len(collector.on(last))
        sink.send(stamped(_stats(60.0), "test"))
        # every label's state goes again with the report (the last label's arriving says the burst is out) ...
        assert collector.wait_for(lambda c: len(c.on(last)) == last_before + 1, timeout=10)
        time.sleep(0.5)
        # ... and so must the report itself, and the audio state sent again with it, and the first label's state
        stats = collector.on(f"{PREFIX}/stats")
        assert len(stats) == heard + 1, f"the stats report was never sent ({len(stats) - heard} arrived)"
        assert json.loads(stats[-1])["uptime_s"] == 60.0
        assert len(collector.on(f"{PREFIX}/audio")) == 2, "the audio state was not sent again"
        assert len(collector.on(first)) == before + 1, "the first label's state was not sent again"
    finally:
        sink.close()


def test_a_model_with_many_labels_still_says_a_lost_audio_input(tmp_path: Path, broker: Broker,
                                                               collector: Collector) -> None:
    """The same bound, at the moment that matters: the service says a lost input (``_audio_trouble``) and reports its
    health in the same breath, and the pump takes both before it sends: the new audio state, queued before the
    report, is pushed out with it by the 200 states sent again after it, and so is the copy of it among those. The
    broker never heard of the lost input (Audio input stayed "OK")."""
    labels = [f"class_{i:03d}" for i in range(LIVE_QUEUE_MAX)]
    sink = _connected_sink(tmp_path, broker, collector, labels)
    try:
        time.sleep(DISCOVERY_SETTLE_S + 1.0)
        sink.send(stamped(Status(AudioState.AUDIO_ERROR, source="USB", error="device lost"), "test"))
        sink.send(stamped(_stats(60.0), "test"))
        assert collector.wait_for(lambda c: any(b"audio_error" in p for p in c.on(f"{PREFIX}/audio")), timeout=5), \
            f"the lost input never reached the broker: {collector.on(f'{PREFIX}/audio')}"
    finally:
        sink.close()

"""A label's state after a broker outage, in a real Home Assistant 2024.3.3 (marked ``homeassistant``; skipped
without its venv)."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import pytest
from home_assistant import HASS
from mqtt_broker import Broker, Collector, wait_until
from test_homeassistant_audio_restart import COUNTER, _counting_turns_on, _sink
from test_homeassistant_real import DEVICE, ENTITY
from test_mqtt_sink import event, started

from noisewatch.daemon.messages import AudioState, Status, stamped
from noisewatch.daemon.sinks import homeassistant_wait

pytestmark = [
    pytest.mark.homeassistant, pytest.mark.broker, pytest.mark.slow,
    pytest.mark.skipif(not HASS.exists(), reason=f"no Home Assistant venv at {HASS.parent.parent} "
                       "(make it with ../shared/tools/ha-check/setup.sh)"),
]

HA_STATUS = "homeassistant/status"


def test_sirens_heard_while_the_broker_was_away_do_not_turn_the_siren_sensor_on_after_it(
        broker: Broker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Found by a subscriber's check of docs/mqtt.md (its wire test: test_mqtt_sink.py's
    ``test_after_an_outage_a_label_s_state_is_its_state_then_not_each_change_of_the_outage``): each ON/OFF change of
    the sounds heard while the broker was away was queued and sent after the reconnect's own states. Home Assistant,
    back on the broker before the listener (its backoff is shorter than a listener's after a long outage), turned
    the siren sensor on and off once per siren of the outage, and a "to on" automation fired for each, long after it
    was over. The reconnect's announcement says each label's state as it is then."""
    # Home Assistant's online comes before this listener is back: the outage's events wait this long for it, not 30 s
    monkeypatch.setattr(homeassistant_wait, "HA_RECONNECT_WAIT_S", 1.0)
    siren, dog_bark = ENTITY.format("binary_sensor", "siren"), ENTITY.format("binary_sensor", "dog_bark")
    ha = _counting_turns_on(tmp_path, broker, siren)

    def count() -> str | None:
        return (ha.state(f"counter.{COUNTER}") or {}).get("state")

    try:
        ha.wait_ready()
        # back 8-12 s after the loss (its backoff, jittered; as much again for a connection lost within 10 s of being
        # made): Home Assistant's backoff (1 s, then 2 s) has it back well before, as after a long outage, also on a
        # loaded machine
        sink = _sink(tmp_path, broker, ("background", "dog_bark", "siren"), reconnect_min_s=8, reconnect_max_s=8)
        try:
            sink.send(stamped(Status(AudioState.LISTENING, source="USB"), DEVICE))  # its sensors available
            assert ha.wait_state(siren, "off", 30), ha.state(siren)
            broker.stop(kill=True)
            assert wait_until(lambda: not sink._connected, 15)
            for ev in (replace(event(i), device=DEVICE) for i in range(3)):
                sink.send(started(ev))
                sink.send(ev)
            sink.send(started(replace(event(3, "dog_bark"), device=DEVICE)))  # still barking as the broker comes back
            broker.start()
            watcher = Collector(broker.port, HA_STATUS)
            try:  # its online (birth): subscribed again, reading what comes
                assert watcher.wait_for(lambda c: b"online" in c.on(HA_STATUS), 15), "Home Assistant is not back"
            finally:
                watcher.close()
            assert not sink._connected, "the listener came back before Home Assistant: it shows the outage no more"
            assert ha.wait_state(dog_bark, "on", 40), ha.state(dog_bark)
            sound_started = ENTITY.format("event", "sound_started")
            assert wait_until(lambda: (ha.state(sound_started) or {}).get("attributes", {}).get(
                "event_type") == "dog_bark", 15), ha.state(sound_started)  # the last of the outage: all came before it
            time.sleep(1)  # the automation has run, had it triggered
            assert count() == "0", "Home Assistant's siren sensor turned on again after the outage"
            assert (ha.state(siren) or {}).get("state") == "off", ha.state(siren)
        finally:
            sink.close()
    finally:
        ha.stop()

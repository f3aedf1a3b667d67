"""Review of commits 717e69f and 2f9f369 (the sound sensors and Audio input expire), against a real Home Assistant
2024.3.3."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from home_assistant import HASS, HomeAssistant
from mqtt_broker import HOST, Broker
from test_homeassistant_real import DEVICE, ENTITY

pytestmark = [pytest.mark.broker, pytest.mark.homeassistant, pytest.mark.slow,
              pytest.mark.skipif(not HASS.exists(), reason=f"no Home Assistant venv at {HASS.parent.parent}")]


@pytest.fixture
def home_assistant(broker: Broker, tmp_path: Path) -> Iterator[HomeAssistant]:
    ha = HomeAssistant(tmp_path / "ha", broker.port)
    try:
        ha.wait_ready()
        yield ha
    finally:
        ha.stop()


def test_a_reload_that_changes_the_discovery_does_not_turn_an_open_siren_on_twice(home_assistant: HomeAssistant,
                                                                                  broker: Broker, tmp_path: Path) -> None:
    """docs/mqtt.md (status): a reload that reconnects to the same broker as the same client, what is announced
    changed, says online at once "and no entity turns unavailable" (MqttSink.serves: every entity went unavailable
    for a moment, "and an open event turned on twice in Home Assistant"). With ``expire_after`` on the sound sensors,
    Home Assistant takes the changed discovery as starting expired: the siren that is on turns unavailable until its
    state goes again 2 s later, then on again, and a "to on" automation fires a second time for one siren."""
    from noisewatch.config import Config
    from noisewatch.daemon.messages import AudioState, Started, Status, stamped
    from noisewatch.daemon.sinks.mqtt import MqttSink

    def sink(name: str | None, running: MqttSink | None = None) -> MqttSink:
        config = Config.model_validate({"device_id": DEVICE, "mqtt": {
            "enabled": True, "host": HOST, "port": broker.port, "homeassistant": {"device_name": name},
            "spool": {"directory": str(tmp_path / "spool")}}})
        return MqttSink.from_config(config, ["background", "dog_bark", "siren"], "urban11@test",
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
        renamed = sink("Kitchen", running=before)  # a reload: the new sink is built, then the old one closed
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

"""The docs' "act on the start of a sound" example when its event entity goes away, in a real Home Assistant 2024.3.3
(marked ``homeassistant``; skipped without its venv)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml
from home_assistant import HASS, HomeAssistant
from mqtt_broker import HOST, Broker, wait_until
from test_homeassistant_real import DEVICE, ENTITY, docs_yaml_block

pytestmark = [
    pytest.mark.homeassistant, pytest.mark.broker, pytest.mark.slow,
    pytest.mark.skipif(not HASS.exists(), reason=f"no Home Assistant venv at {HASS.parent.parent} "
                       "(make it with ../shared/tools/ha-check/setup.sh)"),
]


def test_the_docs_siren_started_automation_logs_no_error_when_its_entity_is_removed(
        broker: Broker, tmp_path: Path) -> None:
    """Found by a helper's first hour with a real Home Assistant: a reload that turns discovery off (the listener stays
    online) removes the Sound started entity; its state trigger then fires with ``to_state`` None, and the docs'
    condition read ``trigger.to_state.attributes``: an ERROR "Template variable error: 'None' has no attribute
    'attributes'" and a WARNING "Error evaluating condition in ..." in Home Assistant's log for every such reload."""
    from noisewatch.config import Config
    from noisewatch.daemon.messages import Started
    from noisewatch.daemon.sinks.mqtt import MqttSink

    example = docs_yaml_block("sound_started")
    automation = {"id": "siren_started", "alias": "siren_started", **example,
                  "action": [{"service": "counter.increment", "target": {"entity_id": "counter.siren_started"}}]}
    (tmp_path / "ha").mkdir()
    (tmp_path / "ha" / "automations.yaml").write_text(yaml.safe_dump([automation]))
    ha = HomeAssistant(tmp_path / "ha", broker.port, "automation: !include automations.yaml\n"
                       "counter:\n  siren_started:\n")

    def sink(discovery: bool, running: MqttSink | None = None) -> MqttSink:
        config = Config.model_validate({"device_id": DEVICE, "mqtt": {
            "enabled": True, "host": HOST, "port": broker.port, "homeassistant": {"discovery": discovery},
            "spool": {"directory": str(tmp_path / "spool")}}})
        return MqttSink.from_config(config, ["background", "siren"], "urban11@test", {"background": 0.5, "siren": 0.7},
                                    running=running)

    started = ENTITY.format("event", "sound_started")
    try:
        ha.wait_ready()
        listener = sink(True)
        try:
            assert wait_until(lambda: (ha.state(started) or {}).get("state") not in (None, "unavailable"), 30)
            listener.send(Started(id="s1", label="siren", confidence=0.9,
                                  start=time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()), offset_s=1.0,
                                  device=DEVICE, model="urban11@test", continues=None))
            assert ha.wait_state("counter.siren_started", "1", 10), ha.state("counter.siren_started")
            reloaded = sink(False, running=listener)  # a reload: the new sink is built, then the old one closed
        finally:
            listener.close()
        try:
            assert wait_until(lambda: ha.state(started) is None, 15), ha.state(started)
            time.sleep(1)  # the automation has run its condition
            assert ha.state("counter.siren_started")["state"] == "1"  # type: ignore[index]
        finally:
            reloaded.close()
        complaints = ha.complaints(r"template|condition|siren")
        assert not complaints, "\n".join(complaints)
    finally:
        ha.stop()

"""A user tinkering in the first hour, watched by a real Home Assistant 2024.3.3 (marked ``homeassistant``; skipped
without its venv).

The daemon itself (``noisewatch run``) replays the bundled scene in real time, as docs/homeassistant.md's "Try it"
does, and each step edits its config and reloads it with SIGHUP (``systemctl reload noisewatch``) or acts from Home
Assistant, as a user does; the tests assert what Home Assistant then shows and what the log says.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
import yaml
from home_assistant import HASS, HomeAssistant
from mqtt_broker import HOST, Broker, wait_until

pytestmark = [
    pytest.mark.homeassistant, pytest.mark.broker, pytest.mark.slow,
    pytest.mark.skipif(not HASS.exists(), reason=f"no Home Assistant venv at {HASS.parent.parent} "
                       "(make it with ../shared/tools/ha-check/setup.sh)"),
]

REPO = Path(__file__).resolve().parents[1]
DEVICE = "tinker"
ENTITY = "{}.noise_listener_tinker_{}"


class Daemon:
    """``noisewatch run --config C --input F --speed 1`` on the sample scene looped; :meth:`reload` writes a new
    config and sends SIGHUP, as a user editing the file and running ``systemctl reload noisewatch``."""

    def __init__(self, tmp_path: Path, config: dict[str, Any], loops: int = 4) -> None:
        self.dir = tmp_path
        self.config_path = tmp_path / "config.yaml"
        self.audio = tmp_path / "loop.flac"
        if not self.audio.exists():
            audio, rate = sf.read(REPO / "samples" / "scene.flac")
            sf.write(self.audio, np.tile(audio, loops), rate)
        self.log_path = tmp_path / "daemon.log"
        self.config = config
        self.config_path.write_text(yaml.safe_dump(config))
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "noisewatch.cli", "run", "--config",
                                          str(self.config_path), "--input", str(self.audio), "--speed", "1"],
                                         stdout=subprocess.DEVNULL, stderr=log, env={**os.environ})

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def reload(self, config: dict[str, Any]) -> None:
        assert self.proc is not None and self.proc.poll() is None, self.log
        before = self.log.count("configuration reloaded") + self.log.count("reload refused")
        self.config = config
        self.config_path.write_text(yaml.safe_dump(config))
        self.proc.send_signal(signal.SIGHUP)
        assert wait_until(lambda: self.log.count("configuration reloaded") + self.log.count("reload refused")
                          > before, 10), self.log

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def base_config(broker: Broker, tmp_path: Path, **mqtt: Any) -> dict[str, Any]:
    return {"device_id": DEVICE, "mqtt": {"enabled": True, "host": HOST, "port": broker.port,
                                          "spool": {"directory": str(tmp_path / "spool")}, **mqtt}}


@pytest.fixture
def daemon_factory(tmp_path: Path) -> Iterator[Any]:
    started: list[Daemon] = []

    def make(config: dict[str, Any]) -> Daemon:
        started.append(Daemon(tmp_path, config))
        return started[-1]

    yield make
    for daemon in started:
        daemon.stop()


def test_reset_thresholds_forgets_a_threshold_of_a_label_ignored_at_the_time(
        home_assistant: HomeAssistant, broker: Broker, tmp_path: Path, daemon_factory: Any) -> None:
    """What a user saw: Siren threshold set to 0.85 from Home Assistant; then ``siren`` added to
    ``detector.ignore`` and reloaded; then Reset thresholds pressed (the log: "thresholds set from Home Assistant
    forgotten (there were none): the config's and the model's are in force again"); then ``siren`` taken out of
    ``detector.ignore`` and reloaded: the Siren threshold entity came back at 0.85, not the config's 0.7, with a
    WARNING at each reload that 0.85 "set from Home Assistant, wins", and it stayed so across restarts.
    Expected: Reset thresholds forgets every threshold set from Home Assistant (README, docs/homeassistant.md), so
    the config's 0.7 is in force and shown once the label is back."""
    ha = home_assistant
    config = base_config(broker, tmp_path)
    config["detector"] = {"thresholds": {"siren": 0.7}}
    daemon = daemon_factory(config)
    number, button = ENTITY.format("number", "siren_threshold"), ENTITY.format("button", "reset_thresholds")
    assert ha.wait_state(number, "0.7", 30), (ha.state(number), daemon.log)
    ha.call("number", "set_value", {"entity_id": number, "value": 0.85})
    assert ha.wait_state(number, "0.85"), ha.state(number)

    ignoring = json.loads(json.dumps(config))
    ignoring["detector"]["ignore"] = ["background", "siren"]
    daemon.reload(ignoring)
    assert wait_until(lambda: ha.state(number) is None, 10), ha.state(number)
    ha.call("button", "press", {"entity_id": button})
    assert wait_until(lambda: "thresholds set from Home Assistant forgotten" in daemon.log, 10), daemon.log

    daemon.reload(config)  # siren listened for again
    assert wait_until(lambda: ha.state(number) is not None, 10), daemon.log
    assert ha.wait_state(number, "0.7"), (ha.state(number), daemon.log)
    reloaded = daemon.log.split("thresholds set from Home Assistant forgotten")[-1]
    assert "is not in force" not in reloaded, reloaded
    assert json.loads((tmp_path / "state" / "thresholds.json").read_text()) == {}


@pytest.mark.skip(reason="known, not mended yet: the new device is announced at once, the old one's configs emptied only "
                  "once the 5 s look at its old status ends, so Home Assistant gives the new entities _2 ids")
def test_a_device_renamed_under_the_same_device_name_keeps_its_entity_ids(
        home_assistant: HomeAssistant, broker: Broker, tmp_path: Path, daemon_factory: Any) -> None:
    """What a user saw: ``mqtt.homeassistant.device_name: Kitchen Pi`` set from the first run (as
    docs/homeassistant.md advises, so ids follow the name), then ``device_id`` changed and reloaded: the old device went,
    but every entity of the new one came back as ``binary_sensor.kitchen_pi_siren_2``, ``number.kitchen_pi_siren_
    threshold_2``, ... (and, renamed again, back without ``_2``, then with it again): Home Assistant made the new
    entities while the old device's, under the same names, were still there. Expected: the old device's entities are
    gone and the new one's take the ids its name gives, ``binary_sensor.kitchen_pi_siren``, so automations and cards
    that name them go on working (the device name, and so the ids, did not change)."""
    ha = home_assistant
    config = base_config(broker, tmp_path, homeassistant={"device_name": "Kitchen Pi"})
    daemon = daemon_factory(config)
    siren, number = "binary_sensor.kitchen_pi_siren", "number.kitchen_pi_siren_threshold"
    assert wait_until(lambda: (ha.state(siren) or {}).get("state") in ("on", "off"), 30), (ha.state(siren), daemon.log)

    renamed = json.loads(json.dumps(config))
    renamed["device_id"] = "tinker2"
    daemon.reload(renamed)
    time.sleep(10)  # the new device announced, the old one's entities removed once the look at its old status ended
    shown = sorted(s["entity_id"] for s in ha.states() if "kitchen_pi" in s["entity_id"])
    assert siren in shown and number in shown, shown
    assert not [entity for entity in shown if entity.endswith("_2")], shown
    assert (ha.state(siren) or {}).get("state") in ("on", "off"), ha.state(siren)


@pytest.mark.skip(reason="known, not mended yet: discovery leaves configuration_url out when unset, and Home Assistant "
                  "2024.3 keeps the value it had; what clears it there is still to find")
def test_a_dashboard_link_taken_out_of_the_config_leaves_the_device_page(
        home_assistant: HomeAssistant, broker: Broker, tmp_path: Path, daemon_factory: Any) -> None:
    """What a user saw: ``mqtt.homeassistant.configuration_url: http://pi.local:8501`` set and reloaded (the device
    page got its "Visit" link to the dashboard), then the key taken out again (the dashboard turned off) and reloaded:
    the device page still linked to http://pi.local:8501, after the reload and after Home Assistant saved its device
    registry. Expected, as docs/homeassistant.md says, a link to the dashboard "where one is configured": none once
    it is not."""
    ha = home_assistant
    linked = base_config(broker, tmp_path, homeassistant={"configuration_url": "http://pi.local:8501"})
    daemon = daemon_factory(linked)
    assert ha.wait_state(ENTITY.format("binary_sensor", "audio_input"), "off", 30), daemon.log
    daemon.reload(base_config(broker, tmp_path))
    assert "configuration_url" in daemon.log.split("configuration reloaded")[-1], daemon.log
    time.sleep(3)  # Home Assistant has read the changed discovery
    assert ha.state(ENTITY.format("binary_sensor", "audio_input")) is not None
    daemon.stop()
    ha.stop()  # its device registry written out
    devices = json.loads((tmp_path / "ha" / ".storage" / "core.device_registry").read_text())["data"]["devices"]
    device = next(d for d in devices if ["mqtt", f"noisewatch_{DEVICE}"] in d["identifiers"])
    assert device["configuration_url"] is None, device



def test_a_listener_started_under_its_old_device_id_removes_what_it_left_under_the_old_prefix(
        home_assistant: HomeAssistant, broker: Broker, tmp_path: Path, daemon_factory: Any) -> None:
    """What a user saw, tinkering: device ``barn``; then ``device_id: shed`` with ``mqtt.topic_prefix:
    noisewatch/barn`` (the old topics kept) and reloaded; then the daemon stopped, and started as ``barn`` again
    under ``topic_prefix: home/noise``. The log said "MQTT: noisewatch/barn/status says online: another listener has
    taken this one's old topic prefix or device id, so the ... retained topics it left there (Home Assistant discovery
    included) are left to that listener, not cleared" though no other listener runs (that status is retained
    ``offline``), and Home Assistant kept the old device "Noise listener shed" beside the new one for good.
    Expected: the old device's entities and retained topics removed, no warning about another listener."""
    ha = home_assistant
    config = base_config(broker, tmp_path)
    config["device_id"] = "barn"
    daemon = daemon_factory(config)
    assert ha.wait_state("binary_sensor.noise_listener_barn_audio_input", "off", 30), daemon.log
    config = json.loads(json.dumps(config))
    config["device_id"], config["mqtt"]["topic_prefix"] = "shed", "noisewatch/barn"
    daemon.reload(config)
    assert ha.wait_state("binary_sensor.noise_listener_shed_audio_input", "off", 20), daemon.log
    time.sleep(6)  # the look at the old topics ends (5 s)
    daemon.stop()
    config["device_id"], config["mqtt"]["topic_prefix"] = "barn", "home/noise"
    daemon.config_path.write_text(yaml.safe_dump(config))
    started_at = len(daemon.log)
    daemon.start()
    assert ha.wait_state("binary_sensor.noise_listener_barn_audio_input", "off", 30), daemon.log[started_at:]
    time.sleep(8)  # the look at the old topics ends, the old device's entities removed
    assert "another listener has taken" not in daemon.log[started_at:], daemon.log[started_at:]
    left = sorted(s["entity_id"] for s in ha.states() if "noise_listener_shed" in s["entity_id"])
    assert not left, left

"""Test helper: a real Home Assistant 2024.3.3, headless, reading MQTT discovery from a test broker.

The venv is the one ``../shared/tools/ha-check/setup.sh`` makes (``$HA_CHECK_DIR/venv``, default
``~/.cache/ha-check/venv``); this follows that tool's ``run.sh``: a fresh config directory, the MQTT
config entry written to ``.storage``, HA on a free loopback port, a token through onboarding.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from mqtt_broker import HOST, free_port, wait_until

HA_VENV = Path(os.environ.get("HA_CHECK_DIR", Path.home() / ".cache" / "ha-check")) / "venv"
HASS = HA_VENV / "bin" / "hass"
START_TIMEOUT_S = 180.0
CLIENT_ID = "http://127.0.0.1/"

CONFIGURATION = """\
homeassistant:
  name: noisewatch-test
  latitude: 0
  longitude: 0
  elevation: 0
  unit_system: metric
  time_zone: UTC
  currency: EUR
  country: DE
http:
  server_host: 127.0.0.1
  server_port: {http_port}
logger:
  default: warning
  logs:
    homeassistant.components.mqtt: info
    homeassistant.bootstrap: info
"""


def config_entry(mqtt_port: int, retained_status: bool = False) -> dict[str, Any]:
    """The MQTT integration's config entry (YAML broker settings no longer exist in HA); ``retained_status``: its
    birth and will messages retained, as its MQTT options allow (docs/homeassistant.md asks for it in one case)."""
    data: dict[str, Any] = {"broker": HOST, "port": mqtt_port, "discovery": True}
    if retained_status:
        data.update({kind: {"topic": "homeassistant/status", "payload": payload, "qos": 0, "retain": True}
                     for kind, payload in (("birth_message", "online"), ("will_message", "offline"))})
    return {"version": 1, "minor_version": 1, "key": "core.config_entries", "data": {"entries": [{
        "entry_id": "0123456789abcdef0123456789abcdef", "version": 1, "minor_version": 1,
        "domain": "mqtt", "title": HOST, "data": data,
        "options": {}, "pref_disable_new_entities": False, "pref_disable_polling": False,
        "source": "user", "unique_id": None, "disabled_by": None}]}}


class HomeAssistant:
    """Home Assistant in ``directory`` against the broker on ``mqtt_port``; REST calls with a token."""

    def __init__(self, directory: Path, mqtt_port: int, extra_configuration: str = "",
                 retained_status: bool = False) -> None:
        self.dir = directory
        self.http_port = free_port()
        self.url = f"http://{HOST}:{self.http_port}"
        (directory / ".storage").mkdir(parents=True)
        (directory / "configuration.yaml").write_text(CONFIGURATION.format(http_port=self.http_port)
                                                      + extra_configuration)
        (directory / ".storage" / "core.config_entries").write_text(json.dumps(config_entry(mqtt_port, retained_status)))
        self.log_path = directory / "ha.log"
        self.proc = self._launch()
        self.token = ""

    def _launch(self) -> subprocess.Popen[bytes]:
        return subprocess.Popen([str(HASS), "-c", str(self.dir), "--skip-pip", "--log-no-color",
                                 "--log-file", str(self.log_path)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    @property
    def log_text(self) -> str:
        try:  # Home Assistant replaces the file as it starts: there a moment ago, gone as it is read
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def complaints(self, about: str) -> list[str]:
        """Its log's WARNING and ERROR lines that match ``about`` (a regular expression, any case)."""
        return [line for line in self.log_text.splitlines()
                if re.search(r"\b(WARNING|ERROR)\b", line) and re.search(about, line, re.I)]

    def wait_ready(self) -> None:
        """Until HA is initialised and a token is obtained; RuntimeError if it exits or takes too long."""
        up = wait_until(lambda: "Home Assistant initialized in" in self.log_text or self.proc.poll() is not None,
                        START_TIMEOUT_S)
        if not up or self.proc.poll() is not None:
            raise RuntimeError(f"Home Assistant did not start:\n{self.log_text[-3000:]}")
        wait_until(self._onboarding_open, 20.0)
        onboarded, self.token = bool(self.token), ""
        if onboarded:  # started again: a login
            flow = self._post("/auth/login_flow", {"client_id": CLIENT_ID, "handler": ["homeassistant", None],
                                                   "redirect_uri": CLIENT_ID})["flow_id"]
            code = self._post(f"/auth/login_flow/{flow}", {"client_id": CLIENT_ID, "username": "check",
                                                          "password": "check-pass-123"})["result"]
        else:
            code = self._post("/api/onboarding/users", {"client_id": CLIENT_ID, "name": "check", "username": "check",
                                                        "password": "check-pass-123", "language": "en"})["auth_code"]
        form = f"grant_type=authorization_code&code={code}&client_id={CLIENT_ID}".encode()
        request = urllib.request.Request(f"{self.url}/auth/token", data=form,
                                         headers={"Content-Type": "application/x-www-form-urlencoded"})
        with urllib.request.urlopen(request, timeout=10) as response:
            self.token = json.load(response)["access_token"]

    def state(self, entity_id: str) -> dict[str, Any] | None:
        """The entity's state object, or None when HA has no such entity."""
        try:
            return self._get(f"/api/states/{entity_id}")
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            raise

    def states(self) -> list[dict[str, Any]]:
        return self._get("/api/states")

    def call(self, domain: str, service: str, data: dict[str, Any]) -> None:
        self._post(f"/api/services/{domain}/{service}", data)

    def wait_state(self, entity_id: str, wanted: str, timeout: float = 10.0) -> bool:
        """Until the entity's state is ``wanted`` (``None``-safe)."""
        return wait_until(lambda: (self.state(entity_id) or {}).get("state") == wanted, timeout)

    def start_again(self) -> None:
        """After :meth:`stop`: started on the same config directory, and ready."""
        self.log_path.unlink(missing_ok=True)
        self.proc = self._launch()
        self.wait_ready()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def _onboarding_open(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/api/onboarding", timeout=2):
                return True
        except OSError:
            time.sleep(0.2)
            return False

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        return headers

    def _get(self, path: str) -> Any:
        request = urllib.request.Request(f"{self.url}{path}", headers=self._headers())
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.load(response)

    def _post(self, path: str, data: dict[str, Any]) -> Any:
        request = urllib.request.Request(f"{self.url}{path}", data=json.dumps(data).encode(), headers=self._headers())
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.load(response)

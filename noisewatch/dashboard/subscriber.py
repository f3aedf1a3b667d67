"""The dashboard's MQTT subscriber: one paho client feeding a :class:`LiveStore`.

Uses the daemon's own config keys (``mqtt.host``, ``port``, ``protocol``, ``username``, password,
``tls``, ``topic_prefix``) and subscribes one level above the configured prefix, so every listener
publishing beside it shows up (a one-level prefix: that listener alone). paho's thread (``loop_start``) connects, reconnects by itself and
runs the callbacks; retained status, state, level and stats arrive at once on (re)subscribe.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from noisewatch.config import Config, ConfigError, MqttSection
from noisewatch.daemon.sinks.mqtt_client import new_client, refusal_hint
from noisewatch.daemon.sinks.topics import listener_prefix
from noisewatch.dashboard.store import LiveStore, topic_filter

log = logging.getLogger(__name__)

QOS_AT_LEAST_ONCE = 1
CLIENT_ID_PREFIX = "noisewatch-dashboard-"
RECONNECT_MIN_S = 1
RECONNECT_MAX_S = 30


class LiveSubscriber:
    """Subscribes to a listener and its siblings (see ``topic_filter``) and keeps their latest state in ``store``."""

    def __init__(self, settings: MqttSection, prefix: str, password: str | None = None,
                 reread_password: Callable[[], str | None] | None = None) -> None:
        self.settings = settings
        self.store = LiveStore(prefix)
        self.filter = topic_filter(prefix)
        self._refusal: str | None = None
        """why the broker refused the last connection attempt (paho's thread only)"""
        self._reread_password = reread_password
        """reads the password again after a refusal, so that one corrected in its file is used at the next attempt"""
        self.client = self._make_client(password)

    @classmethod
    def from_config(cls, config: Config) -> "LiveSubscriber":
        """The subscriber for a daemon config; raises ConfigError for unusable TLS files or password."""
        prefix = listener_prefix(config)
        return cls(config.mqtt, prefix, config.mqtt_password(), reread_password=config.mqtt_password)

    def start(self) -> None:
        """Connect in the background (an absent broker is retried, never fatal)."""
        s = self.settings
        self.client.connect_async(s.host, s.port, keepalive=s.keepalive_s)
        self.client.loop_start()
        log.info("dashboard: subscribing to %s on %s:%d", self.filter, s.host, s.port)

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def _make_client(self, password: str | None) -> mqtt.Client:
        s = self.settings
        # a random client id: several dashboards may watch one broker
        client = new_client(s, CLIENT_ID_PREFIX + uuid.uuid4().hex[:8], password)
        client.reconnect_delay_set(min_delay=RECONNECT_MIN_S, max_delay=RECONNECT_MAX_S)
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        return client

    # --- paho's thread ----------------------------------------------------------------------------

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: mqtt.ConnectFlags,
                    reason_code: ReasonCode, properties: Properties | None) -> None:
        if reason_code.is_failure:
            self._refusal = f"refused the connection: {reason_code}; {refusal_hint(reason_code.value)}"
            self.store.broker = f"{self._refusal}; retrying"
            log.error("dashboard: broker %s:%d %s", self.settings.host, self.settings.port, self._refusal)
            self._use_current_password(client)
            return
        self._refusal = None
        self.store.broker = "connected, subscribing"
        client.subscribe(self.filter, qos=QOS_AT_LEAST_ONCE)

    def _use_current_password(self, client: mqtt.Client) -> None:
        """Take the password as its source holds it now: the page says "retrying", and a retry with the password
        read at start would be refused until the dashboard restarted, whatever the user corrected."""
        if self._reread_password is None or self.settings.username is None:
            return
        try:
            client.username_pw_set(self.settings.username, self._reread_password())
        except ConfigError as exc:  # the file went missing or unreadable: say so, keep trying with the old one
            self._refusal = f"{self._refusal}; {exc}"
            self.store.broker = f"{self._refusal}; retrying"

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, reason_codes: list[ReasonCode],
                      properties: Properties | None) -> None:
        refused = [code for code in reason_codes if code.is_failure]
        self.store.broker = f"subscription refused: {refused[0]}" if refused else "subscribed"
        self.store.connected = not refused

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        self.store.connected = False
        self.store.broker = f"cannot reach {self.settings.host}:{self.settings.port}; retrying"

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: mqtt.DisconnectFlags,
                       reason_code: ReasonCode, properties: Properties | None) -> None:
        self.store.connected = False
        if self._refusal is None:  # after a refusal paho reports a bare "Unspecified error": keep the reason
            self.store.broker = f"disconnected ({reason_code}); retrying"

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        self.store.receive(message.topic, bytes(message.payload), retained=bool(message.retain))

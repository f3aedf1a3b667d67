"""A paho-mqtt 2.x client from the ``mqtt`` config section (protocol, credentials, TLS), and how its
connection trouble is told: once per change, with a hint, and retried with jitter.

The client factory is shared by the daemon's MQTT sink and the dashboard's subscriber, so both connect
the same way.
"""

from __future__ import annotations

import logging
import os
import queue
import random
import ssl
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from noisewatch.config import CREDENTIAL_NAME, PASSWORD_ENV, ConfigError, MqttSection

log = logging.getLogger(__name__)
JITTER_FRACTION = 0.5
"""the reconnect jitter is up to this fraction of the current backoff delay"""
_CREDENTIALS_HINT = (f"check mqtt.username and the password (${PASSWORD_ENV}, the systemd credential {CREDENTIAL_NAME}"
                     " or mqtt.password_file)")
_REFUSAL_HINTS = {
    0x85: "check mqtt.client_id",
    0x86: _CREDENTIALS_HINT,
    0x87: _CREDENTIALS_HINT + " and the broker's ACL",  # mosquitto's answer to a wrong password under 3.1.1
}


def refusal_hint(reason_value: int) -> str:
    """What to check when the broker refuses the connection with this CONNACK reason code."""
    return _REFUSAL_HINTS.get(reason_value, "check the broker's log")


def backoff_s(failures: int, min_s: float, max_s: float) -> float:
    """paho's reconnect delay after ``failures`` failures in a row: doubling from ``min_s``, capped at ``max_s``."""
    return min(min_s * 2.0 ** min(failures, 32), max_s)


def reconnect_jitter_s(failures: int, min_s: float, max_s: float, rng: random.Random) -> float:
    """Random extra wait before a reconnect: up to JITTER_FRACTION of paho's current backoff."""
    return rng.uniform(0.0, JITTER_FRACTION * backoff_s(failures, min_s, max_s))


class ConnectionLog:
    """Logs the connection's condition when it changes, not on every retry."""

    def __init__(self) -> None:
        self._last: str | None = None

    def report(self, level: int, text: str) -> None:
        if text != self._last:
            self._last = text
            log.log(level, "%s", text)


def new_client(settings: MqttSection, client_id: str, password: str | None, **options: Any) -> mqtt.Client:
    """A paho 2.x client with the configured protocol, credentials and TLS (not yet connected)."""
    client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id=client_id,
                         protocol=mqtt.MQTTv5 if settings.protocol == "5" else mqtt.MQTTv311, **options)
    if settings.username is not None:
        client.username_pw_set(settings.username, password)
    if settings.tls.enabled:
        configure_tls(client, settings)
    return client


def probe(settings: MqttSection, password: str | None, timeout_s: float) -> str | None:
    """Connect once and leave: None when the broker takes the connection, else what went wrong, in the words
    the daemon logs (``check-config``: a wrong port or password showed only once the daemon ran). Its own
    client id, so that a running daemon is not pushed off the broker."""
    client = new_client(settings, f"nw-check-{os.getpid()}", password)  # within MQTT 3.1.1's 23 bytes
    answers: queue.SimpleQueue[str | None] = queue.SimpleQueue()
    client.on_connect = lambda _c, _u, _f, reason, _p: answers.put(
        f"refused the connection: {reason}; {refusal_hint(reason.value)}" if reason.is_failure else None)
    where = f"MQTT broker {settings.host}:{settings.port}"
    try:
        client.connect(settings.host, settings.port, keepalive=settings.keepalive_s)
    except (OSError, ValueError) as exc:  # refused, no such host, TLS handshake
        return f"cannot connect to {where} ({exc})"
    client.loop_start()
    try:
        answer = answers.get(timeout=timeout_s)
        return None if answer is None else f"{where} {answer}"
    except queue.Empty:
        return f"no answer from {where} within {timeout_s:g} s"
    finally:
        client.disconnect()
        client.loop_stop()


def configure_tls(client: mqtt.Client, settings: MqttSection) -> None:
    """CA, optional client certificate and key, optional insecure flag; ConfigError when they do not load."""
    tls = settings.tls
    try:
        client.tls_set(
            ca_certs=str(tls.ca_file) if tls.ca_file else None,
            certfile=str(tls.cert_file) if tls.cert_file else None,
            keyfile=str(tls.key_file) if tls.key_file else None,
            cert_reqs=ssl.CERT_REQUIRED,
        )
    except (OSError, ssl.SSLError, ValueError) as exc:
        raise ConfigError(f"mqtt.tls: cannot load the CA, certificate or key: {exc}") from None
    client.tls_insecure_set(tls.insecure)

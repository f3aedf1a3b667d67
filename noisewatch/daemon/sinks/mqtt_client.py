"""Making a paho-mqtt 2.x client from the ``mqtt`` config section: protocol, credentials, TLS.

Shared by the daemon's MQTT sink and the dashboard's subscriber, so both connect the same way.
"""

from __future__ import annotations

import ssl
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from noisewatch.config import ConfigError, MqttSection


def new_client(settings: MqttSection, client_id: str, password: str | None, **options: Any) -> mqtt.Client:
    """A paho 2.x client with the configured protocol, credentials and TLS (not yet connected)."""
    client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id=client_id,
                         protocol=mqtt.MQTTv5 if settings.protocol == "5" else mqtt.MQTTv311, **options)
    if settings.username is not None:
        client.username_pw_set(settings.username, password)
    if settings.tls.enabled:
        configure_tls(client, settings)
    return client


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

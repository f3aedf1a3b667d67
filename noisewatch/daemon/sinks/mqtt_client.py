"""A paho-mqtt 2.x client from the ``mqtt`` config section (protocol, credentials, TLS), and how its
connection trouble is told: once per change, with a hint, and retried with jitter (:class:`ConnectionWatch`).

The client factory is shared by the daemon's MQTT sink and the dashboard's subscriber, so both connect
the same way.
"""

from __future__ import annotations

import logging
import os
import queue
import random
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode

from noisewatch.config import CREDENTIAL_NAME, PASSWORD_ENV, Config, ConfigError, MqttSection
from noisewatch.daemon.sinks.homeassistant import node_id
from noisewatch.daemon.sinks.homeassistant_wait import HA_RECONNECT_WAIT_S
from noisewatch.daemon.sinks.topics import Topics, acl_advice, listener_topics

log = logging.getLogger(__name__)

QOS_AT_LEAST_ONCE = 1
JITTER_FRACTION = 0.5
"""the reconnect jitter is up to this fraction of the current backoff delay"""
TAKEN_OVER_S = 10.0
TAKEN_OVER_TIMES = 3
"""A connection lost within TAKEN_OVER_S of being accepted, this many times in a row: another client with our
client id (a second Pi left at the same device_id) takes the session, and we take it back, every few seconds."""
SESSION_TAKEN_OVER = 142
"""MQTT 5 reason code of a DISCONNECT sent because another client connected with this client id."""
KEEPALIVE_TIMEOUT = 141
"""The reason paho gives when it gives up on a connection that stays silent for the keepalive interval."""
UNSPECIFIED_ERROR = 128
"""The reason paho gives a connection whose socket closed."""
UNANSWERED_HINT = ("is it the broker's port, with TLS (mqtt.tls) as that port expects, and does the broker keep "
                   "retained messages (this listener's last will is one)?")
"""What to check when a broker closes the connection without a CONNACK (MQTT 3.1.1 gives no reason)."""
_CREDENTIALS_HINT = (f"check mqtt.username and the password (${PASSWORD_ENV}, the systemd credential {CREDENTIAL_NAME}"
                     " or mqtt.password_file)")
_REFUSAL_HINTS = {
    0x85: "check mqtt.client_id",
    0x86: _CREDENTIALS_HINT,
    0x87: _CREDENTIALS_HINT + " and the broker's ACL",  # mosquitto's answer to a wrong password under 3.1.1
}


THRESHOLDS_UNHEARD = ("thresholds set from Home Assistant (its threshold number entities and Reset thresholds button) "
                      "never reach this listener and are not applied")
CHECK_UNHEARD = "delivery cannot be confirmed"
"""What a refused ``<prefix>/check`` costs the probe (the other subscriptions' refusals are said each on its own)."""


def home_assistant_unheard(topic: str, discovery: bool) -> str:
    """What does not work while the broker refuses one of Home Assistant's status topics: its restarts announced there
    go unheard, which matters as much as the listener leans on them (with discovery off, only for the entities it
    removed; with it on, the re-announcement and the events' wait for Home Assistant too)."""
    removed = "entities this listener removed while Home Assistant was down are not removed again"
    if not discovery:
        return f"Home Assistant's restarts announced on {topic} are not heard: {removed}"
    return (f"Home Assistant's restarts announced on {topic} are not heard: its entities are announced again only at "
            f"this listener's next reconnect, events are not held back while it restarts (those sent meanwhile never "
            f"reach it) and after each broker outage wait {HA_RECONNECT_WAIT_S:g} s for an online that is not heard, "
            f"and {removed}")


class Subscription(NamedTuple):
    """Topics subscribed to in one SUBSCRIBE, and what does not work while the broker refuses them."""

    topics: tuple[str, ...]
    unheard: str


def standing_subscriptions(topics: Topics, discovery: bool) -> tuple[Subscription, ...]:
    """What the running listener subscribes to at every connect whatever its state, in this order: its threshold
    commands, and each of Home Assistant's status topics (with discovery off too: the configs it empties go again at
    Home Assistant's online, ``HomeAssistantDiscovery.empty_again``). ``MqttSink._announce`` subscribes to these and
    ``probe`` tries them, so that ``check-config`` names each refusal ``run`` would warn of (it tried
    ``<prefix>/check`` only)."""
    return (Subscription((topics.threshold_commands, topics.thresholds_reset), THRESHOLDS_UNHEARD),
            *(Subscription((topic,), home_assistant_unheard(topic, discovery)) for topic in topics.ha_status))


def subscription_refusal(topic: str, reason: ReasonCode, unheard: str) -> str:
    """A subscription the broker refused (its SUBACK: mosquitto's dynamic-security ACLs give 0x80 under MQTT 3.1.1,
    0x87 Not authorized under MQTT 5), with what then does not work, in one wording for the running sink's WARNING
    (after "the broker") and ``check-config``'s probe (after "MQTT broker host:port"): the two say the same."""
    return (f"refused this listener's subscription to {topic} ({reason}): {unheard}; let it subscribe to (read) "
            f"{topic} in the broker's ACL")


PACKET_TOO_LARGE = 0x95


def read_packet_too_large_in_puback() -> None:
    """mosquitto (2.0) answers an MQTT 5 publish over its ``message_size_limit`` with a PUBACK of reason code 0x95
    (Packet too large), which the standard gives CONNACK and DISCONNECT only: paho took that PUBACK for a malformed
    packet and closed the connection, then re-sent the message on every reconnect, and nothing got through again.
    Read as the refusal it is (an event goes to the dead letters, the rest flows)."""
    packets = ReasonCode.names.get(PACKET_TOO_LARGE, {}).get("Packet too large")
    if packets is not None and PacketTypes.PUBACK not in packets:  # a paho that names it otherwise: left as it is
        packets.append(PacketTypes.PUBACK)


read_packet_too_large_in_puback()


def refusal_hint(reason_value: int) -> str:
    """What to check when the broker refuses the connection with this CONNACK reason code."""
    return _REFUSAL_HINTS.get(reason_value, "check the broker's log")


def _why_lost(reason: ReasonCode) -> str:
    """A lost connection's reason in a user's words: paho says "Unspecified error" for a socket that closed (a broker
    stopped, a network gone), which read as a fault of the daemon's."""
    return "the broker or the network closed it" if reason.value == UNSPECIFIED_ERROR else str(reason)


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


class ConnectionWatch:
    """What paho's thread learns of the connection (attempts, answers, losses): how long to wait before the next
    attempt, whether a new connection follows an outage, and what the log says, once per change."""

    def __init__(self, settings: MqttSection, client_id: str, rng: random.Random | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._settings = settings
        self._client_id = client_id
        self._rng = rng or random.Random()
        self._clock = clock
        self._log = ConnectionLog()
        self._failures = 0
        """Attempts failed and connections lost since the last accepted connection."""
        self._outage = False
        """Since the last accepted connection the broker was out of reach, for Home Assistant too (:meth:`_unreachable`).
        Not for a first attempt the broker took and answered late (loaded): Home Assistant had not left, and the
        events of the start waited 30 s for it; after a connection, the loss that went before is the outage."""
        self._link_up = False
        self._answered = False
        """The broker answered the current connection attempt (accepted or refused it)."""
        self._up_since = 0.0
        self._short_lived = 0
        """Connections in a row lost within TAKEN_OVER_S of being accepted (an attempt that fails or is refused ends
        the run: the broker was down)."""
        self._taken_over_said = False
        self._attempted = False

    def delay_s(self) -> float:
        """Before an attempt: the random jitter on paho's backoff, so listeners that lost one broker do not return
        in lockstep. paho's own delay starts afresh after every accepted connection, so one the broker keeps closing
        at once (a message over its packet size limit, re-sent on every connect; a second client with our id) was
        retried in a loop, two log lines a second: those wait the backoff of their own count on top. None before a
        sink's first attempt: a reload's sink speaks for a predecessor that left without ``offline``, and a stop
        before its CONNECT (up to half of ``reconnect_min_s`` later) left ``online`` retained for good."""
        s = self._settings
        self._answered = False
        if not self._attempted:
            self._attempted = True
            return 0.0
        wait = reconnect_jitter_s(self._failures, s.reconnect_min_s, s.reconnect_max_s, self._rng)
        if self._short_lived:
            wait += backoff_s(self._short_lived, s.reconnect_min_s, s.reconnect_max_s)
        return wait

    def refused(self, reason_code: ReasonCode) -> None:
        """CONNACK with a failure: said with what to check."""
        s = self._settings
        self._answered = True
        self._unreachable()
        self._broker_was_down()
        self._log.report(logging.ERROR, "MQTT broker %s:%d refused the connection: %s; %s; retrying (backoff up to "
                         "%g s)" % (s.host, s.port, reason_code, refusal_hint(reason_code.value), s.reconnect_max_s))

    def accepted(self) -> bool:
        """CONNACK with success; True when the broker was unreachable before (for Home Assistant too)."""
        after_outage, self._outage = self._outage, False
        self._answered = True
        self._failures = 0
        self._link_up, self._up_since = True, self._clock()
        self._log.report(logging.INFO, "MQTT: connected to %s:%d" % (self._settings.host, self._settings.port))
        return after_outage

    def failed(self, cause: object) -> None:
        """The TCP/TLS connection failed."""
        s = self._settings
        self._unreachable()
        self._broker_was_down()
        self._log.report(logging.WARNING, "MQTT: cannot connect to %s:%d (%s)%s; events are kept until it is back, "
                         "retrying (backoff up to %g s)" % (s.host, s.port, cause, connect_hint(s, cause),
                                                            s.reconnect_max_s))

    def lost(self, reason_code: ReasonCode, stopping: bool) -> None:
        """The connection (or the attempt) ended; not a fault when we are ``stopping``."""
        was_up, self._link_up = self._link_up, False
        if stopping:
            return
        s = self._settings
        if was_up:
            self._unreachable()
            self._log.report(logging.WARNING, "MQTT: connection to %s:%d lost (%s); events are kept until it is back"
                             % (s.host, s.port, _why_lost(reason_code)))
            self._say_if_taken_over(reason_code)
        elif not self._answered and reason_code.value == KEEPALIVE_TIMEOUT:  # a hung or loaded broker
            self._failures += 1  # its host's kernel takes the connection, nothing answers: no outage by itself (_outage)
            self._log.report(logging.WARNING, "MQTT: %s:%d took the connection but did not answer it within %d s "
                             "(mqtt.keepalive_s): is the broker hung or overloaded? events are kept until it is back, retrying "
                             "(backoff up to %g s)" % (s.host, s.port, s.keepalive_s, s.reconnect_max_s))
        elif not self._answered:  # a TLS listener spoken to in plain MQTT: no word
            self._unreachable()
            self._log.report(logging.WARNING, "MQTT: %s:%d closed the connection without answering it as an MQTT "
                             "broker; %s events are kept until it is back, retrying (backoff up to %g s)"
                             % (s.host, s.port, UNANSWERED_HINT, s.reconnect_max_s))

    def _unreachable(self) -> None:
        """An attempt refused or failed, or a connection lost: paho backs off, and the return counts as an outage, in which
        Home Assistant may have been cut off too (not a first attempt answered late: see _outage)."""
        self._failures += 1
        self._outage = True

    def _broker_was_down(self) -> None:
        """An attempt after a short connection failed or was refused: the broker went down or restarted, and no other
        client took the session (a broker restarted three times within a minute was blamed on a second listener)."""
        self._short_lived, self._taken_over_said = 0, False

    def _say_if_taken_over(self, reason_code: ReasonCode) -> None:
        """Once per episode: two listeners at one device_id kick each other off every few seconds, and the log
        showed only "lost" and "connected" lines (MQTT 3.1.1 gives no reason; MQTT 5 says so at once)."""
        said = reason_code.value == SESSION_TAKEN_OVER
        taken = said or self._clock() - self._up_since < TAKEN_OVER_S
        self._short_lived = self._short_lived + 1 if taken else 0
        if not self._short_lived:
            self._taken_over_said = False
        elif said and not self._taken_over_said:
            self._taken_over_said = True
            log.error("MQTT: the broker handed this listener's session (client id %s) to another client: is a second "
                      "listener running with the same device_id? Give each its own device_id (or mqtt.client_id)",
                      self._client_id)
        elif self._short_lived >= TAKEN_OVER_TIMES and not self._taken_over_said:
            self._taken_over_said = True
            log.error("MQTT: this listener's connection keeps closing within seconds of being accepted: a second "
                      "listener with the same client id (%s; give each its own device_id or mqtt.client_id), a message "
                      "the broker will not take (its log says which), or the network cutting the link (a firewall, NAT "
                      "or proxy between)", self._client_id)


def new_client(settings: MqttSection, client_id: str, password: str | None, **options: Any) -> mqtt.Client:
    """A paho 2.x client with the configured protocol, credentials and TLS (not yet connected)."""
    client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id=client_id,
                         protocol=mqtt.MQTTv5 if settings.protocol == "5" else mqtt.MQTTv311, **options)
    if settings.username is not None:
        client.username_pw_set(settings.username, password)
    if settings.tls.enabled:
        configure_tls(client, settings)
    return client


CHECK_PAYLOAD = b'{"type":"check"}'
"""What ``probe`` publishes on ``<prefix>/check``: JSON, like every other message under the prefix (a flow on
``noisewatch/#`` that parses each payload choked on plain text)."""


def connect_hint(settings: MqttSection, cause: object) -> str:
    """What to check for a TCP/TLS connection that failed the way a TLS setting gets wrong ("" otherwise): a plain
    MQTT port spoken to in TLS resets the handshake, and an unknown certificate fails it; said only as the errno and
    OpenSSL's words, where plain MQTT to a TLS port was explained."""
    if isinstance(cause, ssl.SSLCertVerificationError):
        return ("; the broker's certificate is not one that mqtt.tls.ca_file (or, when it is null, this system's CAs) "
                "vouches for, or mqtt.host is not a name in it: set mqtt.tls.ca_file to the CA that signed it")
    if settings.tls.enabled and (isinstance(cause, (ConnectionResetError, ssl.SSLEOFError)) or (
            isinstance(cause, ssl.SSLError) and getattr(cause, "reason", None) == "WRONG_VERSION_NUMBER")):
        return ("; mqtt.tls is on: is it the broker's TLS port (often 8883)? A plain MQTT port (1883, as Home "
                "Assistant's Mosquitto add-on serves by default) ends a TLS handshake so")
    return ""


def probe(settings: MqttSection, password: str | None, timeout_s: float, topics: Topics,
          discovery_check: str | None = None) -> str | None:
    """Connect once and leave: None when the broker takes the connection, grants the subscriptions the running
    listener makes (``standing_subscriptions``) and delivers back a message published on ``topics.check``, else
    what went wrong, in the words the daemon logs (``check-config``: a wrong port or password showed only once the
    daemon ran; an ACL that drops the listener's messages or refuses its subscriptions, never). Its own client
    id, so that a running daemon is not pushed off the broker; a retained last will, as the daemon's (a broker
    without retained messages refuses it: check-config said ok, run never connected), but an empty one on the check
    topic: a probe killed mid-check (SIGTERM, an ssh session's SIGHUP) had the broker publish the daemon's own will,
    and the running listener's retained status read ``offline`` until its next reconnect; an empty retained message
    leaves nothing retained. ``discovery_check`` (:meth:`Topics.discovery_check`): under MQTT 5, where a
    broker refuses a publish its ACL denies in its acknowledgement, a message published there too, so that an ACL
    that lets the listener write its own topics and not Home Assistant's discovery is said (under MQTT 3.1.1 the
    broker drops such messages without a word, and the device never showed in Home Assistant)."""
    client = new_client(settings, f"nw-check-{os.getpid()}", password)  # within MQTT 3.1.1's 23 bytes
    client.will_set(topics.check, b"", qos=1, retain=True)
    answers: queue.SimpleQueue[str | None] = queue.SimpleQueue()
    client.on_connect = lambda _c, _u, _f, reason, _p: answers.put(
        f"refused the connection: {reason}; {refusal_hint(reason.value)}" if reason.is_failure else None)
    client.on_disconnect = lambda *_: answers.put(f"closed the connection without answering it; {UNANSWERED_HINT}")
    client.on_message = lambda _c, _u, message: answers.put(  # a retained one on the check topic is not ours
        None if (message.topic, message.retain, message.payload) == (topics.check, False, CHECK_PAYLOAD) else "")
    acks: dict[int, ReasonCode] = {}
    checking_discovery = threading.Event()

    def published(_c: mqtt.Client, _u: Any, mid: int, reason: ReasonCode, _p: Any) -> None:
        acks[mid] = reason
        if reason.is_failure and not checking_discovery.is_set():
            answers.put(f"refused a message published on {topics.check} ({reason}): its ACL does not let this listener "
                        f"publish there, and events it refuses so reach no one; {acl_advice(topics)}")

    client.on_publish = published
    where = f"MQTT broker {settings.host}:{settings.port}"
    try:
        client.connect(settings.host, settings.port, keepalive=settings.keepalive_s)
    except (OSError, ValueError) as exc:  # refused, no such host, TLS handshake
        return f"cannot connect to {where} ({exc}){connect_hint(settings, exc)}"
    client.loop_start()
    try:
        answer = answers.get(timeout=timeout_s)
        if answer is not None:
            return f"{where} {answer}"
        trouble = _echo(client, settings, topics, answers, timeout_s, where)
        if trouble is None and discovery_check is not None and settings.protocol == "5":
            checking_discovery.set()
            trouble = _discovery_refused(client, discovery_check, acks, timeout_s, where, topics)
        return trouble
    except queue.Empty:
        return f"no answer from {where} within {timeout_s:g} s"
    finally:
        client.disconnect()
        client.loop_stop()


def _echo(client: mqtt.Client, settings: MqttSection, topics: Topics, answers: queue.SimpleQueue[str | None],
          timeout_s: float, where: str) -> str | None:
    """None when a message published on ``topics.check`` comes back through a subscription to it: a broker drops
    what its ACL does not let a client publish, and under MQTT 3.1.1 acknowledges it all the same. Subscribed in one
    SUBSCRIBE with the running listener's standing subscriptions (one SUBACK to wait for), each refusal said: a
    refused ``topics.check`` leaves nothing to read back, the others are said beside the echo's answer."""
    asked = [(topic, subscription.unheard)
             for subscription in (Subscription((topics.check,), CHECK_UNHEARD),
                                  *standing_subscriptions(topics, settings.homeassistant.discovery))
             for topic in subscription.topics]
    subacks: queue.SimpleQueue[list[ReasonCode]] = queue.SimpleQueue()

    def subscribed(_c: mqtt.Client, _u: Any, _mid: int, reasons: list[ReasonCode], _p: Any) -> None:
        subacks.put(reasons)  # the codes, then the wake-up: the wait is on ``answers``, where a closed connection is
        answers.put(None)

    client.on_subscribe = subscribed
    client.subscribe([(topic, 1) for topic, _ in asked])
    closed = _next_answer(answers, timeout_s)  # the SUBACK: the subscriptions are in place before the message goes
    if closed is not None:
        return f"{where} {closed}"
    refused = [(topic, reason, unheard)
               for (topic, unheard), reason in zip(asked, subacks.get_nowait(), strict=False) if reason.is_failure]
    troubles = [f"{where} {subscription_refusal(*refusal)}" for refusal in refused]
    if topics.check not in (topic for topic, _, _ in refused):
        troubles += _echoed(client, settings, topics, answers, timeout_s, where)
    return "; ".join(troubles) or None


def _echoed(client: mqtt.Client, settings: MqttSection, topics: Topics, answers: queue.SimpleQueue[str | None],
            timeout_s: float, where: str) -> list[str]:
    """Publish on ``topics.check`` (subscribed to) and wait for it to come back: what went wrong, if anything."""
    client.publish(topics.check, CHECK_PAYLOAD, qos=1)
    try:
        answer = _next_answer(answers, timeout_s)
    except queue.Empty:
        return [f"{where} took the connection but did not deliver back a message published on {topics.check}, so "
                f"delivery cannot be confirmed: {echo_missing_causes(settings, topics)}; {acl_advice(topics)}"]
    return [] if answer is None else [f"{where} {answer}"]


def _discovery_refused(client: mqtt.Client, topic: str, acks: dict[int, ReasonCode], timeout_s: float, where: str,
                       topics: Topics) -> str | None:
    """Publish on ``topic`` (a discovery check) and read the broker's acknowledgement: what it refused, if anything."""
    info = client.publish(topic, CHECK_PAYLOAD, qos=1)
    try:
        info.wait_for_publish(timeout_s)
    except (RuntimeError, ValueError) as exc:  # the connection went meanwhile
        return f"{where} did not take a message published on {topic} ({exc})"
    reason = acks.get(info.mid)
    if reason is None:
        return f"{where} did not acknowledge a message published on {topic} within {timeout_s:g} s"
    if reason.is_failure:
        return (f"{where} refused a message published on {topic} ({reason}): its ACL does not let this listener "
                f"publish Home Assistant's discovery, so Home Assistant does not show it; {acl_advice(topics)}")
    return None


def _next_answer(answers: queue.SimpleQueue[str | None], timeout_s: float) -> str | None:
    """The next answer that is not a message on another topic (``""``: Home Assistant's retained ``online``, say,
    now that the probe subscribes to its status too); queue.Empty after ``timeout_s`` without one, however many
    other messages came meanwhile (each restarted the wait: Home Assistant's traffic kept a probe waiting 13 s
    for a 2 s timeout)."""
    deadline = time.monotonic() + timeout_s
    while (answer := answers.get(timeout=max(0.0, deadline - time.monotonic()))) == "":
        pass
    return answer


def echo_missing_causes(settings: MqttSection, topics: Topics) -> str:
    """Why a message the broker took did not come back through the listener's own subscription, in one wording for
    ``check-config`` and the running sink: a tight ACL that lets it publish but not read (its events still reach
    subscribers) and one that drops what it publishes look alike under MQTT 3.1.1; MQTT 5 refuses a denied publish
    in its acknowledgement, so there a message taken and not echoed means reading is what is denied."""
    user = f"user {settings.username!r}" if settings.username else "this client (no username)"
    if settings.protocol == "5":
        return (f"under MQTT 5 a broker such as mosquitto refuses a publish its ACL denies, so its ACL most likely lets "
                f"{user} publish but not read under {topics.prefix}/#: thresholds set from Home Assistant do not arrive")
    return (f"its ACL does not let {user} read under {topics.prefix}/# (thresholds set from Home Assistant then do "
            "not arrive) or publish there (MQTT 3.1.1 acknowledges a denied publish without a word: events then "
            "reach no one; protocol \"5\" tells the two apart)")


def probe_listener(config: Config, password: str | None, timeout_s: float) -> str | None:
    """:func:`probe` with the listener's own topics, as ``run`` connects: ``check-config`` and ``setup`` ask it."""
    topics = listener_topics(config)
    checked = topics.discovery_check(node_id(config.device_id)) if config.mqtt.homeassistant.discovery else None
    return probe(config.mqtt, password, timeout_s, topics, checked)


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

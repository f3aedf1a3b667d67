"""What the MQTT sink's connection watch tells the log and how long it waits, fed the answers paho gives (real
paho reason codes) on a clock the test moves. Against a real broker: test_mqtt_sink.py and test_faults.py; the
MQTT 5 "session taken over" answer is here only, as mosquitto 2.0.11 closes the old connection without it."""

from __future__ import annotations

import logging
import random

import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode

from noisewatch.config import MqttSection
from noisewatch.daemon.sinks.mqtt_client import (
    JITTER_FRACTION,
    KEEPALIVE_TIMEOUT,
    SESSION_TAKEN_OVER,
    TAKEN_OVER_S,
    TAKEN_OVER_TIMES,
    ConnectionWatch,
    backoff_s,
)

LOST = ReasonCode(PacketTypes.DISCONNECT, "Unspecified error")
TAKEN_OVER = ReasonCode(PacketTypes.DISCONNECT, identifier=SESSION_TAKEN_OVER)
NOT_AUTHORIZED = ReasonCode(PacketTypes.CONNACK, identifier=135)
UNANSWERED = ReasonCode(PacketTypes.DISCONNECT, identifier=KEEPALIVE_TIMEOUT)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def watch(clock: Clock) -> ConnectionWatch:
    return ConnectionWatch(MqttSection(), "noisewatch-pi", random.Random(0), clock)


def errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.levelno >= logging.ERROR]


def connect_and_lose(watch: ConnectionWatch, clock: Clock, after_s: float, reason: ReasonCode = LOST) -> None:
    watch.delay_s()
    watch.accepted()
    clock.now += after_s
    watch.lost(reason, stopping=False)


def test_a_sink_s_first_attempt_goes_at_once_and_later_ones_wait_their_jitter(watch: ConnectionWatch) -> None:
    """A reload's new client speaks for one that left without ``offline``: a stop before its CONNECT left ``online``
    retained for good (test_signal_faults.py shows it end to end)."""
    assert watch.delay_s() == 0.0
    waits = [watch.delay_s() for _ in range(20)]
    assert all(0.0 <= wait <= JITTER_FRACTION * backoff_s(0, 1.0, 60.0) for wait in waits) and max(waits) > 0.0


def test_mqtt5_session_taken_over_is_said_at_once_and_once_per_episode(
        watch: ConnectionWatch, clock: Clock, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="noisewatch")
    connect_and_lose(watch, clock, 30.0, TAKEN_OVER)
    assert len(errors(caplog)) == 1 and "noisewatch-pi" in errors(caplog)[0] and "device_id" in errors(caplog)[0]
    for _ in range(5):
        connect_and_lose(watch, clock, 1.0, TAKEN_OVER)
    assert len(errors(caplog)) == 1
    connect_and_lose(watch, clock, TAKEN_OVER_S + 60.0)  # the other listener is gone: the episode ends
    connect_and_lose(watch, clock, 1.0, TAKEN_OVER)  # and a new one is said again
    assert len(errors(caplog)) == 2


def test_mqtt311_short_lived_connections_are_named_after_a_few_and_back_off(
        watch: ConnectionWatch, clock: Clock, caplog: pytest.LogCaptureFixture) -> None:
    for lost in range(1, TAKEN_OVER_TIMES + 3):
        connect_and_lose(watch, clock, 1.0)
        said = errors(caplog)
        assert len(said) == (lost >= TAKEN_OVER_TIMES)
        floor = backoff_s(lost, 1.0, 60.0)  # on top of paho's own delay, which restarts at every accepted connection
        assert floor <= watch.delay_s() <= floor + JITTER_FRACTION * backoff_s(lost, 1.0, 60.0)
    assert "same client id" in said[0] and "will not take" in said[0] and "network cutting the link" in said[0]


def test_a_broker_that_restarts_is_not_taken_for_a_second_listener(
        watch: ConnectionWatch, clock: Clock, caplog: pytest.LogCaptureFixture) -> None:
    """Found by a fault hunt: a broker restarted within seconds of each connect had the log say at ERROR that a second
    listener shares the client id, though each loss was followed by "Connection refused": the broker was down."""
    for _ in range(TAKEN_OVER_TIMES + 2):
        connect_and_lose(watch, clock, 1.0)
        watch.delay_s()
        watch.failed("[Errno 111] Connection refused")  # the broker is down: no other client took the session
        clock.now += 1.0
    assert errors(caplog) == []
    assert watch.delay_s() <= JITTER_FRACTION * backoff_s(2, 1.0, 60.0)  # jitter on paho's backoff, none on top


def test_a_long_lived_connection_lost_is_an_outage_but_no_takeover(
        watch: ConnectionWatch, clock: Clock, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="noisewatch")
    assert watch.accepted() is False  # the first connection: Home Assistant had nothing to miss
    clock.now += TAKEN_OVER_S + 1.0
    watch.lost(LOST, stopping=False)
    assert errors(caplog) == []
    said = [record.getMessage() for record in caplog.records if "lost" in record.getMessage()]
    # in a user's words, not paho's "Unspecified error"; and not "spooled", which a full spool disk is not
    assert said == ["MQTT: connection to localhost:1883 lost (the broker or the network closed it); events are kept "
                    "until it is back"], said
    assert watch.delay_s() <= JITTER_FRACTION * backoff_s(1, 1.0, 60.0)
    assert watch.accepted() is True  # events wait for Home Assistant's return


def test_a_refusal_names_what_to_check_once_and_counts_as_an_outage(
        watch: ConnectionWatch, caplog: pytest.LogCaptureFixture) -> None:
    for _ in range(3):
        watch.delay_s()
        watch.refused(NOT_AUTHORIZED)
    assert len(errors(caplog)) == 1 and "password" in errors(caplog)[0]
    assert watch.accepted() is True


def test_a_stop_is_no_fault(watch: ConnectionWatch, clock: Clock, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="noisewatch")
    watch.accepted()
    clock.now += 1.0
    caplog.clear()
    watch.lost(LOST, stopping=True)
    assert caplog.records == []
    assert watch.accepted() is False


def test_a_port_that_closes_without_answering_is_said(watch: ConnectionWatch, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="noisewatch")
    watch.delay_s()
    watch.lost(LOST, stopping=False)  # no CONNACK: plain MQTT to a TLS port
    assert any("without answering" in record.getMessage() for record in caplog.records)
    assert watch.accepted() is True


def test_a_first_connection_the_broker_answers_late_is_no_outage(
        watch: ConnectionWatch, clock: Clock, caplog: pytest.LogCaptureFixture) -> None:
    """A review: a broker slow to answer the first connection (loaded; mqtt.keepalive_s passed before its CONNACK)
    counted as an outage, and the events of the start waited 30 s for a Home Assistant that had never left. After a
    connection lost, the loss is the outage, however the next attempts go."""
    caplog.set_level(logging.INFO, logger="noisewatch")
    watch.delay_s()
    watch.lost(UNANSWERED, stopping=False)
    assert any("did not answer" in record.getMessage() for record in caplog.records)
    assert watch.accepted() is False
    clock.now += TAKEN_OVER_S + 1.0
    watch.lost(LOST, stopping=False)
    watch.delay_s()
    watch.lost(UNANSWERED, stopping=False)
    assert watch.accepted() is True


def test_a_tls_handshake_a_plain_port_resets_is_said_with_what_to_check(
        clock: Clock, caplog: pytest.LogCaptureFixture) -> None:
    """The daemon's log names the setting as check-config does (tests/test_first_hour_setup.py): only "[Errno 104]
    Connection reset by peer" before."""
    watch = ConnectionWatch(MqttSection(tls={"enabled": True}), "noisewatch-pi", random.Random(0), clock)
    watch.delay_s()
    watch.failed(ConnectionResetError(104, "Connection reset by peer"))
    said = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    assert len(said) == 1 and "Connection reset by peer" in said[0] and "mqtt.tls is on" in said[0], said

"""The rules for how long events wait for Home Assistant, on a clock the test moves (the waits against a real
broker are in test_mqtt_sink.py, and with a real Home Assistant in test_homeassistant_real.py)."""

from __future__ import annotations

import logging

import pytest

from noisewatch.daemon.sinks.homeassistant_wait import (
    DISCOVERY_SETTLE_S,
    HA_RECONNECT_WAIT_S,
    HA_RESTART_WAIT_S,
    HomeAssistantWait,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_nothing_waits_until_something_happens() -> None:
    assert HomeAssistantWait(True, Clock()).remaining_s() == 0.0


def test_online_after_an_outage_ends_the_long_wait_after_the_settle() -> None:
    clock = Clock()
    wait = HomeAssistantWait(True, clock)
    wait.broker_returned()
    assert wait.remaining_s() == HA_RECONNECT_WAIT_S
    clock.now += 5.0
    wait.settle()  # Home Assistant said online: it subscribes as it reads discovery
    assert wait.remaining_s() == DISCOVERY_SETTLE_S
    clock.now += DISCOVERY_SETTLE_S
    assert wait.remaining_s() == 0.0


def test_a_wait_that_runs_out_says_so_once_and_one_ended_by_online_says_nothing(
        caplog: pytest.LogCaptureFixture) -> None:
    """The log said "events wait for Home Assistant to be back (up to 30 s)" and then nothing: a user could not tell
    whether the events ever went."""
    caplog.set_level(logging.INFO, logger="noisewatch")
    clock = Clock()
    wait = HomeAssistantWait(True, clock)
    wait.broker_returned()
    clock.now += HA_RECONNECT_WAIT_S - 0.1
    wait.run_out()
    clock.now += 0.1
    wait.run_out()
    wait.run_out()
    ran_out = [r.getMessage() for r in caplog.records if "did not say online" in r.getMessage()]
    assert ran_out == ["MQTT: Home Assistant did not say online within the wait; the events held for it go now"]
    assert wait.remaining_s() == 0.0
    caplog.clear()
    wait.went_offline()
    clock.now += 10.0
    wait.settle()
    clock.now += HA_RESTART_WAIT_S
    wait.run_out()
    assert not [r for r in caplog.records if "did not say online" in r.getMessage()]  # its online said it


def test_a_restart_waits_longer_than_an_outage_and_a_shorter_hold_does_not_cut_it() -> None:
    clock = Clock()
    wait = HomeAssistantWait(True, clock)
    wait.went_offline()
    clock.now += 10.0
    wait.broker_returned()
    assert wait.remaining_s() == HA_RESTART_WAIT_S - 10.0


def test_without_discovery_nothing_waits_for_home_assistant_but_a_changed_discovery_still_settles() -> None:
    wait = HomeAssistantWait(False, Clock())
    wait.broker_returned()
    wait.went_offline()
    assert wait.remaining_s() == 0.0
    wait.settle()  # discovery turned off removes the entities: Home Assistant lets go of them first
    assert wait.remaining_s() == DISCOVERY_SETTLE_S


def test_a_link_that_keeps_dropping_does_not_hold_events_for_ever() -> None:
    """Found in a fault run: a broker restarted every ~20 s re-armed the 30 s wait at every return, and no
    event went out for as long as it went on."""
    clock = Clock()
    wait = HomeAssistantWait(True, clock)
    wait.broker_returned()
    clock.now += 20.0
    wait.broker_returned()  # back again before the first wait ended: it is not lengthened
    assert wait.remaining_s() == HA_RECONNECT_WAIT_S - 20.0
    clock.now += 20.0
    wait.broker_returned()  # nor started afresh right after it ended
    assert wait.remaining_s() == 0.0
    clock.now += 2 * HA_RECONNECT_WAIT_S
    wait.broker_returned()  # a later outage waits afresh
    assert wait.remaining_s() == HA_RECONNECT_WAIT_S


def test_a_link_up_25_s_down_10_s_lets_events_out_half_the_time() -> None:
    """A review found the first fix short: each return after the last wait had run out started a new one, and
    connections shorter than the wait never let an event out."""
    clock = Clock()
    wait = HomeAssistantWait(True, clock)
    free_s = 0
    for _ in range(100):  # about an hour
        wait.broker_returned()
        for _ in range(25):
            free_s += wait.remaining_s() == 0.0
            clock.now += 1.0
        clock.now += 10.0
    assert free_s >= 0.4 * 100 * 25


def test_a_settle_on_connect_does_not_cut_the_wait_for_home_assistant_short() -> None:
    """On a reconnect the announcement's settle comes first (new entities), the wait for Home Assistant after."""
    clock = Clock()
    wait = HomeAssistantWait(True, clock)
    wait.settle()
    wait.broker_returned()
    assert wait.remaining_s() == HA_RECONNECT_WAIT_S


def test_an_offline_the_moment_the_link_breaks_is_the_broker_shutting_down_not_a_restart() -> None:
    """A broker that shuts down sends Home Assistant's Last Will, then drops us: only the wait for a broker's return
    applies. An ``offline`` heard well before the link broke is a restart, and keeps its wait."""
    clock = Clock()
    wait = HomeAssistantWait(True, clock)
    wait.went_offline()
    clock.now += 0.01
    wait.link_lost()
    assert wait.remaining_s() == 0.0
    wait.broker_returned()
    assert wait.remaining_s() == HA_RECONNECT_WAIT_S
    clock.now += 2 * HA_RECONNECT_WAIT_S
    wait.went_offline()
    clock.now += 10.0
    wait.link_lost()
    assert wait.remaining_s() == HA_RESTART_WAIT_S - 10.0


@pytest.mark.parametrize("will_after_s", [5.0, 28.0])
def test_after_the_broker_s_shutdown_will_its_return_waits_for_home_assistant_afresh(will_after_s: float) -> None:
    """A review found the will's ``offline`` ending any wait: a broker restarted during the wait for its last return
    (Home Assistant back first, its ``online`` unheard) let events out at the next return, before Home Assistant had
    subscribed again (no second wait within the minute); a second review, the earlier wait put back nearly spent
    (the will 28 s into it). Home Assistant was cut off too: its return is waited for in full."""
    clock = Clock()
    wait = HomeAssistantWait(True, clock)
    wait.broker_returned()
    clock.now += will_after_s
    wait.went_offline()  # the broker shutting down: Home Assistant's Last Will
    clock.now += 0.01
    wait.link_lost()
    assert wait.remaining_s() == 0.0  # the link is down: nothing goes out anyway
    clock.now += 1.0
    wait.broker_returned()  # back within the minute of the last return
    assert wait.remaining_s() == pytest.approx(HA_RECONNECT_WAIT_S)


def test_a_retained_offline_at_the_subscription_waits_as_a_restart_does_and_is_no_broker_shutdown() -> None:
    """Home Assistant down as the listener connects (its will retained): events wait for its ``online``, up to the
    restart's bound; a link that breaks just after is not the broker's shutdown will (that one is news of the moment),
    so the wait stays; without discovery nothing waits."""
    clock = Clock()
    wait = HomeAssistantWait(True, clock)
    wait.found_offline("homeassistant/status")
    assert wait.remaining_s() == HA_RESTART_WAIT_S
    clock.now += 0.01
    wait.link_lost()
    assert wait.remaining_s() == pytest.approx(HA_RESTART_WAIT_S - 0.01)
    wait.settle()
    assert wait.remaining_s() == DISCOVERY_SETTLE_S
    clock.now += HA_RESTART_WAIT_S
    assert wait.remaining_s() == 0.0
    without = HomeAssistantWait(False, clock)
    without.found_offline("homeassistant/status")
    assert without.remaining_s() == 0.0


def test_a_discovery_that_changed_the_entities_settles_but_does_not_end_a_wait_for_home_assistant() -> None:
    """Found in review: a renamed listener's old topics are cleared a moment after the connect, once their look ends,
    and that settle ended the wait for a retained offline read at the connect: events went to a Home Assistant that
    was down. Only its ``online`` ends that wait."""
    clock = Clock()
    wait = HomeAssistantWait(True, clock)
    wait.found_offline("homeassistant/status")
    clock.now += 0.5
    wait.discovery_sent()
    assert wait.remaining_s() == pytest.approx(HA_RESTART_WAIT_S - 0.5)
    wait.settle()  # its online
    assert wait.remaining_s() == DISCOVERY_SETTLE_S
    clock.now += 1.0
    wait.discovery_sent()
    assert wait.remaining_s() == DISCOVERY_SETTLE_S

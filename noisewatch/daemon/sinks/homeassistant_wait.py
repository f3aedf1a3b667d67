"""When events may go out to Home Assistant: it reads an event only once it has subscribed to the event's topic,
and it subscribes anew after each discovery message and after each of its own reconnects or restarts. Retained
states need no wait (it reads them when it subscribes); events and state clears do. A pure core on the monotonic
clock, driven by the MQTT sink's pump."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

DISCOVERY_SETTLE_S = 2.0
"""Home Assistant subscribes to a new entity's topics, and unsubscribes from a removed one's, a moment after
its discovery message: events sent sooner are lost to it (a first install's spooled events never showed), and
an empty retained state sent sooner is an error in its log. So after a discovery that adds, moves or removes
entities, or Home Assistant's own restart, events and those clears wait this long. A stop does not wait: events
go at once (a prompt stop wins), and the clears are left to the next run (the record of what was announced keeps
them): sent at once, a short run that renamed the device had Home Assistant log a template error for each."""
STATUS_READ_S = 0.5
"""At every connect, events wait this long for a retained ``offline`` on Home Assistant's status topic to come back
on the new subscription (milliseconds on a loopback broker): sent sooner, a start whose discovery had not changed
gave the events it held for a Home Assistant still down to no one."""
HA_RECONNECT_WAIT_S = 30.0
"""After the broker was unreachable, Home Assistant reconnects too (every 10 s or so), with a clean session: events
published before it has subscribed again never reach it. So they wait for its ``online`` (then
DISCOVERY_SETTLE_S), or this long when it never says so (it stayed connected: only this listener's link broke)."""
HA_RESTART_WAIT_S = 300.0
"""After Home Assistant says ``offline`` (it is restarting), events wait for its ``online``, at most this long."""
BROKER_SHUTDOWN_WILL_S = 1.0
"""A broker that shuts down sends the Last Will of each client it drops, Home Assistant's ``offline`` among them,
then drops this listener: an ``offline`` this shortly before the link broke is that, not a restart. Taken for one,
it held events for the 5 minutes of a restart after every broker restart Home Assistant came back from first."""


class HomeAssistantWait:
    """How long events still wait for Home Assistant. ``discovery``: whether it is announced to at all (without,
    nothing waits for its return; a discovery that removes entities still settles)."""

    def __init__(self, discovery: bool, clock: Callable[[], float] = time.monotonic) -> None:
        self._discovery = discovery
        self._clock = clock
        self._settle_until = 0.0
        self._hold_until = 0.0
        """A wait for Home Assistant's return (its ``online`` ends it)."""
        self._returned_at = -float("inf")
        """When the last wait after a broker return began."""
        self._offline_at = -float("inf")
        """When Home Assistant last said ``offline``."""
        self._said_offline = False
        """The wait in force is for a Home Assistant that said ``offline`` (retained or not)."""
        self._resumed = False
        """The wait in force is one a stop left (:meth:`resume`): whether Home Assistant came back meanwhile, only a
        retained ``online`` can say."""

    def remaining_s(self) -> float:
        """Seconds events must still wait (0: they may go)."""
        return max(0.0, max(self._settle_until, self._hold_until) - self._clock())

    def take_over(self, previous: "HomeAssistantWait") -> None:
        """A reload's wait goes on with the replaced sink's: a new connection knows nothing of Home Assistant's
        restart, and sent the events held for its return while it was still away."""
        self._hold_until, self._offline_at, self._returned_at, self._said_offline, self._resumed = (
            previous._hold_until if self._discovery else 0.0, previous._offline_at, previous._returned_at,
            previous._said_offline and self._discovery, previous._resumed and self._discovery)

    def hold_left_s(self) -> float:
        """Seconds left of a wait for Home Assistant after it said ``offline`` (0: none)."""
        return max(0.0, self._hold_until - self._clock()) if self.holding() else 0.0

    def resume(self, seconds: float) -> None:
        """Go on with the wait a stop left (its ``offline`` is not said again to a new connection): a restart of this
        listener while Home Assistant restarted sent the events the stop had kept to no one."""
        self._hold(seconds, "Home Assistant was away when this listener stopped", offline=True, resumed=True)

    def found_online(self) -> None:
        """Home Assistant's status topic held a retained ``online`` as this listener subscribed (one set to retain its
        birth and will): it is up, so a wait for its return ends; discovery, sent at the connect, reached it."""
        if self._hold_until and self._resumed:  # not the wait after a broker outage: a crashed broker replays a
            self._end_hold()  # birth from before it, and Home Assistant is not back
            log.info("MQTT: Home Assistant is online (its retained status); the events held for it go now")

    def holding(self) -> bool:
        """Whether events wait for Home Assistant's return after it said ``offline`` (not only for it to read a
        discovery, nor the guess after a broker outage, which it may well have come back from first): a stop leaves
        them in the spool then, for the next start (flushed at the stop, they reached the broker with no Home
        Assistant subscribed, and it never showed the sounds heard while it restarted)."""
        return self._hold_until > self._clock() and self._said_offline

    def settle(self) -> None:
        """Home Assistant said ``online``, which ends a wait for its return: events go once it has subscribed anew,
        DISCOVERY_SETTLE_S from now."""
        self.discovery_sent()
        self._end_hold()

    def discovery_sent(self) -> None:
        """Discovery that changed the entities went out (or cleared some): events and state clears go once Home
        Assistant has read it, DISCOVERY_SETTLE_S from now. Not its return: a wait for its ``online`` (a retained
        ``offline`` read at the connect, then a renamed listener's old topics cleared) goes on."""
        self._settle_until = max(self._settle_until, self._clock() + DISCOVERY_SETTLE_S)

    def connected(self) -> None:
        """A (re)connect: events wait STATUS_READ_S, for a retained ``offline`` to be read (:meth:`found_offline`)."""
        if self._discovery:
            self._settle_until = max(self._settle_until, self._clock() + STATUS_READ_S)

    def broker_returned(self) -> None:
        """This listener is back on the broker after an outage: Home Assistant may not be yet. At most one such wait
        in 2 x HA_RECONNECT_WAIT_S: a link that kept dropping within the wait held every event back for as long as
        it went on (a fault run: a broker restarted every 20 s; a review: up 25 s, down 10 s)."""
        now = self._clock()
        if now - self._returned_at >= 2 * HA_RECONNECT_WAIT_S:
            self._returned_at = now
            self._hold(HA_RECONNECT_WAIT_S, "the broker was unreachable")

    def went_offline(self) -> None:
        """Home Assistant said ``offline``: it is restarting."""
        self._offline_at = self._clock()
        self._hold(HA_RESTART_WAIT_S, "Home Assistant went offline", offline=True)

    def found_offline(self, topic: str) -> None:
        """Home Assistant's status topic held a retained ``offline`` as this listener subscribed: one set to retain its
        will is down (a power cut the Pi came back from first: events sent now were lost to it). Not a broker's
        shutdown (``link_lost``): it is not the news of a moment ago. One gone for good leaves it there, and every
        connect waits: the log says how to clear it."""
        self._hold(HA_RESTART_WAIT_S, f"{topic} holds a retained offline (Home Assistant is down; if it is gone for "
                   f"good, clear that with an empty retained message)", offline=True)

    def link_lost(self) -> None:
        """This listener's link broke: an ``offline`` just before was the broker's shutdown (BROKER_SHUTDOWN_WILL_S),
        so the wait for a restart ends, and Home Assistant was cut off as well: the next :meth:`broker_returned` waits
        for it afresh, even within the minute of an earlier return (skipped, or left a wait nearly spent, events went
        out before Home Assistant had subscribed again)."""
        if self._hold_until and self._clock() - self._offline_at <= BROKER_SHUTDOWN_WILL_S:
            self._end_hold()
            self._returned_at = -float("inf")
            log.info("MQTT: Home Assistant's offline was the broker shutting down, not Home Assistant restarting")

    def run_out(self) -> None:
        """End a wait for Home Assistant's return that ran out, and say so: the log said events wait (up to 5 minutes
        after a retained ``offline``), then nothing, and a user watching it could not tell whether they ever went."""
        if self._hold_until and self._clock() >= self._hold_until:
            self._end_hold()
            log.info("MQTT: Home Assistant did not say online within the wait; the events held for it go now")

    def _end_hold(self) -> None:
        self._hold_until, self._said_offline, self._resumed = 0.0, False, False

    def _hold(self, seconds: float, why: str, offline: bool = False, resumed: bool = False) -> None:
        """Until Home Assistant says ``online`` (:meth:`settle`), or ``seconds`` have passed. ``offline``: it said so
        (a wait a stop keeps, :meth:`holding`); ``resumed``: the wait a stop left (:meth:`resume`)."""
        if not self._discovery:
            return
        self._hold_until = max(self._hold_until, self._clock() + seconds)
        if offline:
            self._said_offline, self._resumed = True, resumed
        log.info("MQTT: %s; events wait for Home Assistant to be back (up to %g s)", why, seconds)

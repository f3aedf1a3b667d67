"""Home Assistant discovery over a running MQTT connection, and the clean-up of what earlier announcements left.

At each (re)connect, and each time Home Assistant says ``online``, the MQTT sink's pump has this publish the
discovery configs. It compares them with the record of the last announcement (``announced.py``) and empties what is
gone: a config at once (and again at Home Assistant's next ``online``, in case it was down), a retained state once
Home Assistant has let go of its entity, and what was left under an old topic prefix or device id only after a look
at whether another listener uses it now. It is kept apart from the sink so that the pump reads as the order of things
on a (re)connect; it publishes and subscribes through the sink, which says any refusal and any message too large.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTErrorCode

from noisewatch.config import MqttSection
from noisewatch.daemon.messages import encode_json
from noisewatch.daemon.sinks.announced import AnnouncedStore
from noisewatch.daemon.sinks.homeassistant import (
    ONLINE,
    Listener,
    discovery_messages,
    listener_retained_topics,
    node_id,
    retained_state_topics,
    stale_clears,
    stand_in,
)
from noisewatch.daemon.sinks.homeassistant_wait import HomeAssistantWait
from noisewatch.daemon.sinks.mqtt_client import QOS_AT_LEAST_ONCE
from noisewatch.daemon.sinks.topics import Topics, discovery_node, is_status

log = logging.getLogger("noisewatch.daemon.sinks.mqtt")  # the sink's: its lines name the logger they always named

OLD_STATUS_WAIT_S = 5.0
"""How long a listener moved to another topic prefix or device id waits for its old status topic's retained payload
before it takes it for absent (a broker sends a retained message at once after the subscription)."""
EMPTIED_UNWATCHED = ("this discovery config, which this listener emptied, is not watched: should another listener "
                     "announce it since (a new device given this one's old name), this one empties it again at Home "
                     "Assistant's next online and that listener's entity is removed")
OLD_TOPICS_UNSEEN = (f"what this listener left under its old topic prefix or device id is cleared after "
                     f"{OLD_STATUS_WAIT_S:g} s without a look at who uses it now: should another listener have taken "
                     "it, Home Assistant loses that listener's entities")


@dataclass(frozen=True)
class _OldTopicsCheck:
    """A look at the status topics of what this listener announced under another prefix or device id, before any
    of it is cleared: another listener may have taken them since (a new Pi given the old one's name)."""

    status_topics: tuple[str, ...]
    """The old status topics, and those the old discovery configs name."""
    config_topics: tuple[str, ...]
    """The old discovery configs under another device id: whoever announced them last names its status there (an
    explicit topic prefix kept, the old status topic is this listener's own)."""
    waiting: frozenset[str]
    """Those not yet seen saying anything."""
    deadline: float
    """Monotonic: no ``online`` by then, and what is left there is cleared (OLD_STATUS_WAIT_S)."""
    now: Mapping[str, Sequence[str]]
    """What this listener announces (the record without what it left)."""


class HomeAssistantDiscovery:
    """Announces the listener's entities and clears those an earlier announcement made and this one does not.
    Called on the MQTT sink's pump thread only (and by ``close`` for :meth:`emptied`, once the pump has stopped).

    ``publish``: the sink's QoS-tracked publish (topic, payload, qos, retain), which returns the message id awaited,
    or None; ``subscribe``: the sink's subscription (topics, what does not work while it is refused); ``claim``: the
    sink's hold on a message id paho just gave out (:meth:`mid_reused` is its part here)."""

    def __init__(self, settings: MqttSection, topics: Topics, listener: Listener, ha_wait: HomeAssistantWait,
                 client: mqtt.Client, publish: Callable[[str, bytes, int, bool], int | None],
                 subscribe: Callable[[Sequence[str], str], None], claim: Callable[[int], int]) -> None:
        self.settings = settings
        self.topics = topics
        self.listener = listener
        self._ha_wait = ha_wait
        self._client = client
        self._publish = publish
        self._subscribe = subscribe
        self._claim = claim
        self._announced = AnnouncedStore(settings.state_path)
        self._state_clears: list[str] = []  # state topics of removed entities, cleared once it has settled
        self._emptied_configs: set[str] = set()
        """Discovery configs this sink emptied, emptied again when Home Assistant next says online (``stand_in``),
        and subscribed to meanwhile: one another listener announces since (a new Pi given the old name) is its own."""
        self._record_after_clears: Mapping[str, Sequence[str]] | None = None
        self._clears_unconfirmed: dict[int, str] = {}  # paho mid -> state topic of each clear not yet acknowledged
        self._old_topics_check: _OldTopicsCheck | None = None

    def new_connection(self) -> None:
        """A (re)connect: a look at old topics whose answer was lost with the last connection is taken anew
        (:meth:`publish`)."""
        self._old_topics_check = None

    def watch_emptied(self) -> None:
        """At a connect: subscribe to the configs this listener emptied (the session may have lost them)."""
        if self._emptied_configs:
            self._subscribe(sorted(self._emptied_configs), EMPTIED_UNWATCHED)

    def emptied(self) -> frozenset[str]:
        """The configs emptied and not yet emptied again, for the sink that replaces this one at a reload."""
        return frozenset(self._emptied_configs)

    def publish(self) -> None:
        """Discovery (none when it is off), after clearing the entities of an earlier announcement that are gone;
        what this listener announced under another status topic (an old topic prefix or device id) only once that
        status is seen not ``online`` (``_end_old_topics_check``)."""
        messages = discovery_messages(self.topics, self.listener) if self.settings.homeassistant.discovery else []
        # with discovery off the entities go, but not the retained topics this sink still publishes (Node-RED)
        now = {**retained_state_topics(messages), **listener_retained_topics(self.topics, self.listener)}
        before = self._announced.load()
        # the removed entities stay in the record until their states are cleared: a run that ends before then
        # (a lost connection, a reload, a crash) leaves the next run to clear them
        removed = {topic: states for topic, states in before.items() if topic not in now}
        moved_from = tuple(sorted(filter(is_status, removed)))
        renamed_from = tuple(sorted(t for t in removed if discovery_node(t) not in (None, node_id(self.listener.device_id))))
        if not (moved_from or renamed_from):
            self._clear_stale(before, now)
        elif self._old_topics_check is None:  # else this connection looks already (Home Assistant's online)
            looked_at = (*moved_from, *renamed_from)
            self._subscribe(looked_at, OLD_TOPICS_UNSEEN)
            self._old_topics_check = _OldTopicsCheck(moved_from, renamed_from, frozenset(looked_at),
                                                     time.monotonic() + OLD_STATUS_WAIT_S, now)
        for topic, config in messages:
            self._publish(topic, encode_json(config), QOS_AT_LEAST_ONCE, True)
        if messages and now != before:  # entities added or removed, or moved to other topics (with discovery off,
            self._ha_wait.discovery_sent()  # none: a first start's new record held a noise map's events 2 s)
        self._record({**now, **removed})

    def _clear_stale(self, before: Mapping[str, Sequence[str]], now: Mapping[str, Sequence[str]]) -> None:
        """Empty what ``before`` recorded and ``now`` does not announce: a discovery config (or old status) at once,
        the entity goes; its state once Home Assistant let go. The record keeps it until those are confirmed."""
        clears = stale_clears(before, now)
        for topic, empty in clears:
            if topic in before:
                self._publish(topic, empty, QOS_AT_LEAST_ONCE, True)
                if discovery_node(topic) is not None:
                    self._emptied_configs.add(topic)
                    self._subscribe([topic], EMPTIED_UNWATCHED)
            else:
                self.clear_state_later(topic)
        if clears:  # after a look at an old status they follow discovery by up to OLD_STATUS_WAIT_S: the states wait
            self._ha_wait.discovery_sent()
        self._record_after_clears = now if clears else None

    def empty_again(self) -> None:
        """The configs this sink emptied, announced (not retained) and emptied again, once: Home Assistant may have
        been down when they were emptied, and keeps their entities until it reads them emptied (``stand_in``)."""
        for topic in sorted(self._emptied_configs):
            self._publish(topic, encode_json(stand_in(topic)), QOS_AT_LEAST_ONCE, False)
            self._publish(topic, b"", QOS_AT_LEAST_ONCE, False)
        if self._emptied_configs:
            self._client.unsubscribe(sorted(self._emptied_configs))
        self._emptied_configs.clear()

    def take_over_emptied(self, topics: frozenset[str], connected: bool) -> None:
        """The configs the replaced sink emptied, but those this one announces (a label watched again)."""
        own = ({topic for topic, _ in discovery_messages(self.topics, self.listener)}
               if self.settings.homeassistant.discovery else set())
        taken = sorted(topics - own - self._emptied_configs)
        self._emptied_configs.update(taken)
        if taken and connected:  # else subscribed to at the connect (``watch_emptied``)
            self._subscribe(taken, EMPTIED_UNWATCHED)

    def old_announcement(self, topic: str, payload: bytes, retained: bool) -> None:
        """An old status topic's retained payload: ``online`` is a live listener there; an old discovery config's:
        the status it names, when not this listener's, is looked at too. Once every one has said something (or
        OLD_STATUS_WAIT_S has passed: none retained), what is left there is this listener's own. The look reads
        what the topics hold (retained) only: an ``online`` the broker had kept for this client id's session, said
        there by this listener itself under another device id, was taken for another listener's, and the old
        device stayed in Home Assistant for good."""
        if payload and topic in self._emptied_configs:
            self._emptied_configs.discard(topic)  # another listener announced it since: its entity now
        check = self._old_topics_check
        if check is None or not retained or topic not in (*check.status_topics, *check.config_topics):
            return  # said after the look ended, or a session's message (a subscription kept by an earlier run's)
        if topic in check.config_topics:
            check = self._look_at_statuses_named(check, payload)
        waiting = check.waiting - {topic}
        if topic in check.status_topics and payload == ONLINE.encode():
            self._end_old_topics_check(check, live=topic)
        elif not waiting:
            self._end_old_topics_check(check, live=None)
        else:
            self._old_topics_check = replace(check, waiting=waiting)

    def check_deadline(self) -> float | None:
        """When the look at old topics ends unanswered (monotonic), or None while there is none."""
        return None if self._old_topics_check is None else self._old_topics_check.deadline

    def end_overdue_check(self) -> None:
        """Past its deadline (a connected pump asks), the look at old topics takes those still silent for absent."""
        check = self._old_topics_check
        if check is not None and time.monotonic() >= check.deadline:
            self._end_old_topics_check(check, live=None)

    def _look_at_statuses_named(self, check: _OldTopicsCheck, config: bytes) -> _OldTopicsCheck:
        """The check, also waiting for the status an old discovery config names, unless this listener's own or
        already looked at: a listener given the old device id under its own prefix re-announced it."""
        named = _statuses_named(config) - set(check.now) - set(check.status_topics) - set(self.topics.ha_status)
        if not named:
            return check
        self._subscribe(sorted(named), OLD_TOPICS_UNSEEN)
        return replace(check, status_topics=(*check.status_topics, *sorted(named)), waiting=check.waiting | named)

    def _end_old_topics_check(self, check: _OldTopicsCheck, live: str | None) -> None:
        """Clear what this listener left under its old topics, unless ``live`` (a status topic saying ``online``):
        another listener has taken them since, and they are its own now (its last will would say ``offline``
        had it died). Then they leave the record too: kept, a later start would clear them the first time that
        listener is offline for a moment (a reboot), and take its entities from Home Assistant."""
        self._old_topics_check = None
        self._client.unsubscribe([*check.status_topics, *check.config_topics])
        if live is None:
            self._clear_stale(self._announced.load(), check.now)
            return
        left = [topic for topic, _ in stale_clears(self._announced.load(), check.now)]
        log.warning("MQTT: %s says online: another listener has taken this one's old topic prefix or device id, so "
                    "the %d retained topics it left there (Home Assistant discovery included) are left to that "
                    "listener, not cleared", live, len(left))
        self._record(check.now)

    def clear_state_later(self, topic: str) -> None:
        """A removed entity's retained state, cleared once Home Assistant has let go of it."""
        if topic not in self._state_clears:
            self._state_clears.append(topic)

    def send_state_clears(self) -> None:
        """Clear the removed entities' retained states; one paho's full queue did not take is tried again (paho
        keeps a QoS 1 message it could not send for lack of a connection, and sends it on the next)."""
        pending, self._state_clears = self._state_clears, []
        for topic in pending:
            info = self._client.publish(topic, b"", qos=QOS_AT_LEAST_ONCE, retain=True)
            if info.rc == MQTTErrorCode.MQTT_ERR_QUEUE_SIZE:
                self.clear_state_later(topic)
            else:
                self._clears_unconfirmed[self._claim(info.mid)] = topic
        self._trim_record()

    def mid_reused(self, mid: int) -> None:
        """paho gave ``mid`` to a new message: a state clear still awaiting its answer under it is sent again."""
        unconfirmed = self._clears_unconfirmed.pop(mid, None)
        if unconfirmed is not None:
            self.clear_state_later(unconfirmed)

    def acknowledged(self, mid: int) -> bool:
        """The broker answered message ``mid``; True when it was a state clear (the record drops its entity once
        every clear is confirmed)."""
        if mid not in self._clears_unconfirmed:
            return False
        del self._clears_unconfirmed[mid]
        self._trim_record()
        return True

    def _trim_record(self) -> None:
        """The removed entities leave the record once the broker has confirmed their state clears (a run that
        ends before then leaves the next run to clear them again)."""
        if not self._clears_unconfirmed and not self._state_clears and self._record_after_clears is not None:
            self._record(self._record_after_clears)
            self._record_after_clears = None

    def _record(self, announced: Mapping[str, Sequence[str]]) -> None:
        try:
            self._announced.save(announced)
        except OSError as exc:
            log.error("MQTT: cannot record the announced entities in %s (%s)", self.settings.state_path, exc.strerror)


def _statuses_named(config: bytes) -> set[str]:
    """The status topics a retained discovery config has Home Assistant read availability from (none when it is
    empty, a clear, or not a config)."""
    try:
        data = json.loads(config)
    except ValueError:
        return set()
    if not isinstance(data, dict):
        return set()
    listed = data.get("availability")
    entries = listed if isinstance(listed, list) else []
    topics = [data.get("availability_topic"), *(entry.get("topic") for entry in entries if isinstance(entry, dict))]
    return {topic for topic in topics if isinstance(topic, str) and is_status(topic)}

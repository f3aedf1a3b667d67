"""The commands on the MQTT sink's pump queue: every hand-off to the pump thread (from ``send``, from paho's callbacks,
from ``close`` and from the sink a reload replaces) is one of these, taken in order by the one thread that owns the
sink's mutable state (:mod:`noisewatch.daemon.sinks.mqtt`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import NamedTuple, NoReturn

from paho.mqtt.reasoncodes import ReasonCode


class Outgoing(NamedTuple):
    """A message waiting in memory for the pump."""

    topic: str
    payload: bytes
    qos: int = 0
    retain: bool = False


@dataclass(frozen=True)
class Spooled:
    """``send`` spooled a started/event message (or an event that could not be, whose label ends all the same)."""

    label: str
    event_id: str
    opened: bool
    recent: bytes | None = None
    """For a closed event: the retained list of recent events, this one included."""


@dataclass(frozen=True)
class Unspooled:
    """``send`` could not write a started/event message to the spool's disk: the pump keeps it in memory."""

    topic: str
    payload: bytes
    spooled: Spooled


@dataclass(frozen=True)
class Ack:
    """paho: the broker acknowledged (or refused) message ``mid``."""

    mid: int
    reason: ReasonCode | None


@dataclass(frozen=True)
class SubAck:
    """paho: the broker's answer to subscription ``mid``, one reason code per topic, in the order subscribed."""

    mid: int
    reasons: tuple[ReasonCode, ...]


@dataclass(frozen=True)
class ThresholdCommand:
    """paho: a threshold set from Home Assistant (a ``number`` entity's command topic)."""

    topic: str
    payload: bytes
    retained: bool
    """Replayed by the broker at our subscription: a command of unknown age, not one sent now."""


@dataclass(frozen=True)
class AudioStatus:
    """``send``: the audio input's state, which the pump also keeps to publish again on every (re)connect."""

    outgoing: Outgoing


@dataclass(frozen=True)
class OldAnnouncement:
    """paho: a status topic or a discovery config this listener published under before, or a status such a config
    names, says ``payload`` (``HomeAssistantDiscovery.old_announcement``); ``retained``: what the topic holds, not
    a message the broker kept for this client's session while it was away."""

    topic: str
    payload: bytes
    retained: bool


@dataclass(frozen=True)
class Retune:
    """A reload's new thresholds from the bundle and the config; the connection stays."""

    thresholds: Mapping[str, float]


@dataclass(frozen=True)
class Connected:
    """paho: the broker accepted the connection."""

    after_outage: bool
    """The broker was unreachable before (a lost connection, or failed attempts): so was it for Home Assistant."""
    max_packet: int | None = None
    """MQTT 5: the largest packet the broker takes (its CONNACK's Maximum Packet Size); None: no limit said."""


@dataclass(frozen=True)
class Disconnected:
    """paho: the connection is gone."""


@dataclass(frozen=True)
class Echoed:
    """paho: this listener's own ``online`` came back from the broker (it may publish and read its topics)."""


@dataclass(frozen=True)
class HomeAssistantOnline:
    """Home Assistant (re)started and wants discovery again; ``retained``: its birth, retained, replayed by the broker
    at the subscription: it is up, and has been since before this connect's discovery."""

    retained: bool = False


@dataclass(frozen=True)
class HomeAssistantOffline:
    """Home Assistant is stopping (a restart), or is down as this listener subscribes: what it is sent now, it never
    sees."""

    topic: str
    retained: bool
    """Replayed by the broker at the subscription: the will of a Home Assistant set to retain its status."""


@dataclass(frozen=True)
class HandedOver:
    """``close`` of the sink this one replaces at a reload: the events it held in memory (the spool's disk refused
    them), oldest first, those it had sent and not seen acknowledged included (sent again: at least once)."""

    held: tuple[Unspooled, ...]


@dataclass(frozen=True)
class EmptiedConfigs:
    """``close`` of the sink this one replaces at a reload: the discovery configs it emptied and had not yet emptied
    again at Home Assistant's online (``HomeAssistantDiscovery.empty_again``); kept by it alone, they were lost with it."""

    topics: frozenset[str]


@dataclass(frozen=True)
class HandedLevel:
    """``close`` of the sink this one replaces at a reload: its latest level report, re-addressed. Sent only if this
    one has none of its own: a reload that changes the ``levels`` section reports the part period before it here
    first, and the older report, sent after it, became the retained level."""

    outgoing: Outgoing


@dataclass(frozen=True)
class DiskFreed:
    """A health report found the spool's disk full, read-only or gone no more: the pump tries it now, not at the next
    event (the held events had gone out from memory; the log said the disk took writes again only hours later)."""


@dataclass(frozen=True)
class Close:
    """``close``: flush until ``deadline`` (monotonic), waiting for a connection until ``connect_by``."""

    deadline: float
    connect_by: float


Command = (Spooled | Unspooled | HandedOver | EmptiedConfigs | HandedLevel | ThresholdCommand | OldAnnouncement
           | Ack | SubAck | AudioStatus | Retune | Connected | Disconnected | Echoed | HomeAssistantOnline
           | HomeAssistantOffline | DiskFreed | Close | Outgoing)


def unknown_command(command: NoReturn) -> NoReturn:
    """The end of a dispatch over :data:`Command`: mypy flags a type added to it and left out of the dispatch (its
    value reaches here, where only no value may), where a catch-all branch would handle it as another command."""
    raise TypeError(f"no handler for {command!r}")

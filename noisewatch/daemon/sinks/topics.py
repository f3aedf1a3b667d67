"""The one place that knows MQTT topic names.

Everything the listener publishes lives under one prefix (default ``noisewatch/<device_id>``);
Home Assistant discovery lives under its own prefix (default ``homeassistant``). Labels become
topic segments, so they are reduced to characters that are safe in a topic and an entity id.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from noisewatch.config import Config

DEFAULT_PREFIX_ROOT = "noisewatch"
STATUS = "status"
"""The last level of a listener's status topic."""
CONFIG = "config"
"""The last level of a Home Assistant discovery config topic."""
STARTED_TAIL = "/events/started"
"""The end of a started notice's topic, under any listener's prefix."""
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


def segment(name: str) -> str:
    """``name`` as a single topic level and entity id part: anything but ASCII letters, digits, '_' and '-' (a '/',
    '+', '#', space, dot or accent) becomes '_'."""
    return _UNSAFE.sub("_", name) or "_"


def default_prefix(device_id: str) -> str:
    """The prefix used when ``mqtt.topic_prefix`` is not configured."""
    return f"{DEFAULT_PREFIX_ROOT}/{segment(device_id)}"


def listener_prefix(config: Config) -> str:
    """The prefix of this config's listener: ``mqtt.topic_prefix``, else the default for its ``device_id``."""
    return config.mqtt.topic_prefix or default_prefix(config.device_id)


def is_status(topic: str) -> bool:
    """Whether ``topic`` is a listener's status topic (a discovery config topic ends in ``config``, a threshold
    command in ``set``)."""
    return topic.endswith(f"/{STATUS}")


def is_started_notice(topic: str) -> bool:
    """Whether a spooled message is a sound's started notice, not its event: one lost is logged, not counted among
    the events lost, since its event (the sound whole) still arrives; counted, one lost event read as two."""
    return topic.endswith(STARTED_TAIL)


def discovery_node(topic: str) -> str | None:
    """The node (``noisewatch_<device_id>``) of a discovery config topic, ``<prefix>/<component>/<node>/<object>/config``;
    None for any other topic."""
    levels = topic.split("/")
    return levels[-3] if len(levels) >= 4 and levels[-1] == CONFIG else None


@dataclass(frozen=True)
class Topics:
    """Topic names of one listener."""

    prefix: str
    """root of the listener's own topics, e.g. ``noisewatch/kitchen``"""
    discovery_prefix: str = "homeassistant"
    """Home Assistant's discovery root"""

    @property
    def events(self) -> str:
        """Closed events (QoS 1, not retained)."""
        return f"{self.prefix}/events"

    @property
    def started(self) -> str:
        """Event-opened notices (QoS 1, not retained)."""
        return self.prefix + STARTED_TAIL

    def for_spooled(self, topic: str) -> str:
        """Where a spooled event or started notice goes now: this listener's own topic of its kind, whatever prefix it
        was spooled under. A prefix changed since (at a reload, or before a restart) had the waiting events go out
        under the old one, whose retained topics had just been emptied as a listener gone, and a sound's started
        there and its event here."""
        if is_started_notice(topic):
            return self.started
        return self.events if topic.endswith("/events") else topic

    @property
    def recent_events(self) -> str:
        """The latest closed events as one JSON object (retained), so a dashboard that starts later has history."""
        return f"{self.prefix}/events/recent"

    @property
    def status(self) -> str:
        """``online`` / ``offline`` (retained; ``offline`` is the Last Will)."""
        return f"{self.prefix}/{STATUS}"

    @property
    def audio(self) -> str:
        """The audio input's state: ``listening``, or ``audio_error`` or ``silent`` with the reason (retained JSON)."""
        return f"{self.prefix}/audio"

    @property
    def level(self) -> str:
        """Periodic sound-level reports."""
        return f"{self.prefix}/level"

    @property
    def stats(self) -> str:
        """Periodic health reports."""
        return f"{self.prefix}/stats"

    @property
    def scores(self) -> str:
        """Top-3 scores of windows (tuning aid)."""
        return f"{self.prefix}/scores"

    @property
    def check(self) -> str:
        """``check-config`` and ``setup`` publish one message here and read it back (not retained; their last will
        here is an empty retained message, which leaves nothing retained)."""
        return f"{self.prefix}/check"

    def state(self, label: str) -> str:
        """``ON`` / ``OFF`` of one label (retained)."""
        return f"{self.prefix}/state/{segment(label)}"

    def threshold(self, label: str) -> str:
        """The threshold in effect for one label, e.g. ``0.73`` (retained; Home Assistant's number state)."""
        return f"{self.prefix}/threshold/{segment(label)}"

    def threshold_set(self, label: str) -> str:
        """Where Home Assistant sends a new threshold for one label (not retained)."""
        return f"{self.threshold(label)}/set"

    @property
    def thresholds_reset(self) -> str:
        """Where Home Assistant's button asks for the thresholds of the config and the model back: those set from it
        are forgotten (not retained)."""
        return f"{self.prefix}/thresholds/reset"

    @property
    def threshold_commands(self) -> str:
        """Subscription that receives every label's threshold commands."""
        return f"{self.prefix}/threshold/+/set"

    def threshold_label(self, topic: str, labels: Iterable[str]) -> str | None:
        """The label a threshold command topic is for, or None when it names no label of ``labels``."""
        return next((label for label in labels if self.threshold_set(label) == topic), None)

    @property
    def ha_status(self) -> tuple[str, ...]:
        """Where Home Assistant says ``online`` and ``offline``: its birth topic is ``homeassistant/status``
        whatever its discovery prefix (a user may have moved it there too)."""
        from noisewatch.config import HA_BIRTH_TOPIC  # not at load: the setup wizard imports this module without
        # the config's pydantic and yaml (an install without its dependencies runs it)
        return tuple(dict.fromkeys([HA_BIRTH_TOPIC, f"{self.discovery_prefix}/status"]))

    def discovery(self, component: str, node_id: str, object_id: str) -> str:
        """Home Assistant discovery config topic of one entity."""
        return f"{self.discovery_prefix}/{component}/{segment(node_id)}/{segment(object_id)}/{CONFIG}"

    def discovery_check(self, node_id: str) -> str:
        """A topic under the listener's discovery node that Home Assistant takes for no discovery (it does not end in
        ``config``: dropped without a word): ``check-config`` publishes there to see whether the broker's ACL takes
        discovery."""
        return f"{self.discovery_prefix}/binary_sensor/{segment(node_id)}/check"


def listener_topics(config: Config) -> Topics:
    """This config's listener's topics: the ones ``run`` publishes and ``check-config`` tries."""
    return Topics(listener_prefix(config), config.mqtt.homeassistant.prefix)


def acl_advice(topics: Topics) -> str:
    """What a broker's ACL must grant a listener: its own topics are read back (``online``, threshold commands)."""
    return f"give it readwrite on {topics.prefix}/# and write on {topics.discovery_prefix}/#"

"""The per-label thresholds behind Home Assistant's ``number`` entities, as the MQTT sink serves them.

Three sources meet here: the thresholds of the bundle and the config (a reload retunes them), those set from Home
Assistant (kept in the state directory across restarts, and winning over the others), and the retained topic each
entity shows. It is kept apart from the sink because none of it is about the connection: the sink's pump hands it
the commands and reloads, and it publishes through the sink.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping

from noisewatch.config import MqttSection
from noisewatch.daemon.sinks.homeassistant import RESET, Listener, tunable_labels
from noisewatch.daemon.sinks.mqtt_client import QOS_AT_LEAST_ONCE
from noisewatch.daemon.sinks.topics import Topics, segment
from noisewatch.daemon.thresholds_store import ThresholdError, ThresholdsStore, parse_threshold

log = logging.getLogger("noisewatch.daemon.sinks.mqtt")  # the sink's: its lines name the logger they always named


class ThresholdEntities:
    """Thresholds in force per label, and their ``number`` entities' state. :meth:`overrides` is read by the
    processing loop (under a lock); everything else runs on the MQTT sink's pump thread.

    ``base``: the thresholds of the bundle and the config; ``publish``: the sink's QoS-tracked publish (topic,
    payload, qos, retain)."""

    def __init__(self, settings: MqttSection, topics: Topics, listener: Listener, base: Mapping[str, float],
                 publish: Callable[[str, bytes, int, bool], int | None]) -> None:
        self.settings = settings
        self.topics = topics
        self.listener = listener
        self._publish = publish
        self.base = dict(base)
        """Thresholds from the bundle and the config, before any set from Home Assistant (pump thread: ``retune``)."""
        self._store = ThresholdsStore(settings.state_path, tunable_labels(listener))
        self._overrides = self._store.load()
        self._overrides_lock = threading.Lock()

    def overrides(self) -> dict[str, float]:
        """Thresholds set from Home Assistant (kept across restarts); they win over the config's."""
        with self._overrides_lock:
            return dict(self._overrides)

    def publish_all(self) -> None:
        """At a connect: every tunable label's threshold in force."""
        for label in tunable_labels(self.listener):
            self.publish(label)

    def publish(self, label: str) -> None:
        """The retained threshold in force for ``label`` (what the ``number`` entity shows)."""
        value = self.overrides().get(label, self.base.get(label))
        if value is not None:
            self._publish(self.topics.threshold(label), f"{value:g}".encode(), QOS_AT_LEAST_ONCE, True)

    def retune(self, thresholds: Mapping[str, float], connected: bool) -> None:
        """New thresholds from a reload: those that changed are published (on the next connect, with the rest,
        when there is no connection)."""
        changed = [label for label in tunable_labels(self.listener)
                   if thresholds.get(label) != self.base.get(label)]
        self.base = dict(thresholds)
        for label in changed if connected else []:
            self.publish(label)

    def set_from_command(self, topic: str, payload: bytes, retained: bool) -> None:
        """A threshold set from Home Assistant: checked, kept in the state directory, in force from the next
        window (the processing loop reads :meth:`overrides`), and echoed on its state topic; or its reset button
        pressed. ``retained``: replayed by the broker at the subscription, a command of unknown age."""
        if topic == self.topics.thresholds_reset:
            self._reset(topic, payload, retained)
            return
        labels = tunable_labels(self.listener)
        label = self.topics.threshold_label(topic, labels)
        if label is None:  # a typo in a Node-RED flow ("Siren") would otherwise change nothing without a word
            log.warning("MQTT: ignoring a threshold on %s: no label this listener reports has that topic "
                        "(thresholds can be set for: %s)", topic, ", ".join(map(segment, labels)))
            return
        if retained:  # replayed at every (re)connect: it undid any value set since, at each broker restart
            log.warning("MQTT: ignoring a retained threshold on %s: a retained command would be applied again at "
                        "every reconnect; publish thresholds without retain (clear this one with an empty retained "
                        "message)", topic)
            return
        try:
            value = parse_threshold(payload)
        except ThresholdError as exc:
            log.warning("MQTT: ignoring a threshold for %s: %s", label, exc)
            return
        # on top of those in force, not of the file's: a file damaged since it was read dropped every other one
        overrides = {**self.overrides(), label: value}
        try:
            self._store.save(overrides)
        except OSError as exc:
            log.error("MQTT: threshold for %s applied but not kept (%s: %s)", label, self.settings.state_path, exc.strerror)
        with self._overrides_lock:
            self._overrides = overrides
        log.info("threshold for %s set to %g from MQTT", label, value)  # as shown: %.2f said 0.95 of 0.955
        self.publish(label)

    def _reset(self, topic: str, payload: bytes, retained: bool) -> None:
        """Home Assistant's reset button: the thresholds set from it are forgotten (a number entity cannot say "the
        config's again": a value set once hid every later edit of the config for good)."""
        if retained or payload != RESET.encode():
            if payload:  # empty: a retained press cleared, as the warning below asks
                log.warning("MQTT: ignoring %s%r on %s: it takes %s, not retained (clear a retained one with an empty "
                            "retained message)", "a retained " if retained else "", payload[:40], topic, RESET)
            return
        forgotten = self.overrides()
        try:
            forgotten |= self._store.forget()
        except OSError as exc:
            log.error("MQTT: thresholds reset but not kept (%s: %s): a restart brings those set from Home Assistant "
                      "back", self.settings.state_path, exc.strerror)
        with self._overrides_lock:
            self._overrides = {}
        log.info("thresholds set from Home Assistant forgotten (%s): the config's and the model's are in force again",
                 ", ".join(f"{label} {value:g}" for label, value in sorted(forgotten.items())) or "there were none")
        self.publish_all()

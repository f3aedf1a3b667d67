"""The outbox: every message leaves the daemon through here, stamped with the device id, to every sink.

The pipeline and the service build messages; the outbox stamps them once and fans them out in order,
so that no sink sees a message another missed because it broke: a sink that raises is logged and the
others still get the message. Closed events are also logged at INFO, so `journalctl -u noisewatch`
shows what was heard even with every sink off.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence

from noisewatch.daemon.messages import Event, HealthFigures, Message, stamped
from noisewatch.daemon.sinks import Sink

log = logging.getLogger(__name__)


class Outbox:
    """Stamps and fans out messages; called from the processing loop only."""

    def __init__(self, device: str, sinks: Sequence[Sink]) -> None:
        self.device = device
        self.sinks = tuple(sinks)

    def publish(self, messages: Iterable[Message]) -> None:
        for message in messages:
            self._publish(stamped(message, self.device))

    def health(self) -> HealthFigures:
        """Every sink's figures for ``stats``."""
        figures: HealthFigures = {}
        for sink in self.sinks:
            figures.update(sink.health())
        return figures

    def report_wanted(self) -> bool:
        """A sink's figures are worth a ``stats`` report now (the report's ``health`` settles what it asked for)."""
        return any(sink.report_wanted() for sink in self.sinks)

    def threshold_overrides(self) -> dict[str, float]:
        """Thresholds set through the sinks (from Home Assistant), to apply over the config's."""
        overrides: dict[str, float] = {}
        for sink in self.sinks:
            overrides.update(sink.threshold_overrides())
        return overrides

    def close(self, keep: Sequence[Sink] = ()) -> None:
        """Close every sink but those in ``keep`` (handed on to the next set-up)."""
        for sink in self.sinks:
            if any(sink is kept for kept in keep):
                continue
            try:
                sink.close()
            except Exception:  # closing the others still matters
                log.exception("sink %s failed to close", type(sink).__name__)

    def _publish(self, message: Message) -> None:
        if isinstance(message, Event):
            log.info("heard %s from %s for %.1f s (confidence %s)", message.label, message.start,
                     message.duration_s, "n/a" if message.confidence is None else f"{message.confidence:.2f}")
        for sink in self.sinks:
            try:
                sink.send(message)
            except Exception:  # one broken sink must not silence the others or stop listening
                log.exception("sink %s failed on a %s message", type(sink).__name__, message.kind)

"""Timing proxies around the daemon's own Pipeline stages, and per-hop accounting.

A proxy forwards every attribute to the real object and adds the time spent in one method to a
named bucket, so :meth:`Pipeline.process` runs unchanged and the split comes from the real calls.
"""

from __future__ import annotations

import time
from collections import defaultdict
from typing import Any

STAGES = ("resampling", "features", "inference", "detector", "sinks", "other")
"""``other``: the rest of Pipeline.process (level meter, loudness, gate, noise floor)."""


PROXIED = ("features", "inference", "detector", "sinks")


class Clock:
    """Seconds spent per stage since the last closed hop."""

    def __init__(self) -> None:
        self.open: dict[str, float] = defaultdict(float)
        self.hops: list[dict[str, float]] = []

    def add(self, stage: str, seconds: float) -> None:
        self.open[stage] += seconds

    def staged(self) -> float:
        """Seconds in the proxied stages (features, inference, detector, sinks) since the last hop."""
        return sum(self.open[stage] for stage in PROXIED)

    def close_hops(self, windows: int) -> None:
        """Share what was spent since the last window among the ``windows`` just emitted."""
        if windows <= 0:
            return
        share = {stage: self.open[stage] / windows for stage in STAGES}
        self.hops.extend(dict(share) for _ in range(windows))
        self.open.clear()


class Timed:
    """Forwards to ``target``; calls of ``method`` are timed into ``clock[stage]``."""

    def __init__(self, target: Any, method: str, stage: str, clock: Clock) -> None:
        self._target, self._method, self._stage, self._clock = target, method, stage, clock

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._target, name)
        if name != self._method:
            return value

        def timed(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return value(*args, **kwargs)
            finally:
                self._clock.add(self._stage, time.perf_counter() - t0)

        return timed


def instrument(pipeline: Any, clock: Clock) -> None:
    """Wrap a Pipeline's stream, model and detector in timing proxies (in place); sinks are wrapped where the
    outbox is built."""
    pipeline.stream = Timed(pipeline.stream, "push", "features", clock)
    pipeline.model = Timed(pipeline.model, "predict", "inference", clock)
    pipeline.detector = Timed(pipeline.detector, "update", "detector", clock)

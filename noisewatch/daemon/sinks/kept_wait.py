"""The wait for Home Assistant that a stop leaves to the next start, in ``<state directory>/home_assistant_wait.json``.

A stop while events wait in the spool for Home Assistant's return (it said ``offline``: it is restarting) keeps when
that wait ends, in wall-clock time: a restart of this listener meanwhile had sent the events the stop kept to no one.
The next start goes on with what is left of it and deletes the file as it reads it: the wait lives in that run then,
and a kill -9 that ends it keeps none for the start after, where a file left behind held that start's events for a
Home Assistant long back.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

from noisewatch.daemon.sinks.homeassistant_wait import HA_RESTART_WAIT_S
from noisewatch.daemon.statefile import read_json, write_json

log = logging.getLogger(__name__)

FILE_NAME = "home_assistant_wait.json"


class KeptWait:
    """The file in ``directory``; ``clock``: wall-clock seconds (the file outlives the process and its monotonic
    clock)."""

    def __init__(self, directory: Path, clock: Callable[[], float] = time.time) -> None:
        self.path = Path(directory) / FILE_NAME
        self._clock = clock

    def keep(self, seconds: float) -> None:
        """Keep a wait of ``seconds`` from now for the next start; 0: none (an earlier one's file goes). A folder that
        refuses is said: the next start then sends the held events at once."""
        try:
            if seconds > 0:
                write_json(self.path, {"until": self._clock() + seconds})
            elif self.path.exists():  # asked first: a read-only folder refuses even the removal of no file
                self.path.unlink()
        except OSError as exc:
            log.warning("MQTT: cannot keep the wait for Home Assistant in %s (%s): the next start sends the events "
                        "held for it at once", self.path, exc.strerror or exc)

    def take(self) -> float:
        """Seconds left of the wait the last stop kept (0: none, or it is over), at most HA_RESTART_WAIT_S (a clock
        set back meanwhile cannot make it longer than a restart's); the file is deleted. One that cannot be read is
        said and ignored."""
        try:
            data = read_json(self.path)
            if data is None:
                return 0.0
            left = min(float(data["until"]) - self._clock(), HA_RESTART_WAIT_S)
            self.path.unlink()
        except (OSError, ValueError, TypeError, KeyError) as exc:
            log.warning("MQTT: ignoring %s: %s", self.path, exc)
            return 0.0
        return max(left, 0.0)

"""Per-label threshold overrides set from Home Assistant, kept across restarts in the state directory.

The config's ``detector.thresholds`` stay the user's file; these overrides come on top of them
(a value set from the phone wins until it is set again). Pure checks plus one JSON file.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from pathlib import Path

from noisewatch.bundle import threshold_value
from noisewatch.daemon.statefile import read_json, write_json

log = logging.getLogger(__name__)

FILE_NAME = "thresholds.json"


class ThresholdError(ValueError):
    """A threshold command or stored value that cannot be used."""


def parse_threshold(payload: bytes | str) -> float:
    """A command payload such as ``0.73`` as a threshold in 0..1, or ThresholdError saying why not."""
    text = payload.decode("utf-8", "replace") if isinstance(payload, bytes) else payload
    try:
        value = float(text.strip())
    except ValueError:
        raise ThresholdError(f"threshold {text.strip()[:40]!r} is not a number") from None
    return check_threshold(value)


def check_threshold(value: object) -> float:
    """``value`` if it is a usable threshold (:func:`~noisewatch.bundle.threshold_value`); ThresholdError otherwise."""
    try:
        return threshold_value(value)
    except ValueError as exc:
        raise ThresholdError(str(exc)) from None


class ThresholdsStore:
    """``<state directory>/thresholds.json``: ``{label: threshold}``, in force for the labels watched now (``labels``).

    A stored value of a label not watched now (added to ``detector.ignore`` for a while, or another model's) is kept
    in the file as it is: a label watched again has the threshold set for it from the phone, not the bundle's (the
    next value set for any label rewrote the file without it)."""

    def __init__(self, directory: Path, labels: Iterable[str]) -> None:
        self.path = Path(directory) / FILE_NAME
        self.labels = frozenset(labels)
        self._unwatched: dict[str, float] = {}
        """stored values of labels not watched now, written back by :meth:`save`"""

    def load(self) -> dict[str, float]:
        """The stored overrides of the labels watched now (those of other labels kept aside, for :meth:`save`); a
        corrupt file is logged and ignored, bad values dropped."""
        try:
            data = read_json(self.path)
        except (OSError, ValueError) as exc:
            log.warning("ignoring threshold overrides in %s: %s", self.path, exc)
            return {}
        if data is None:
            return {}
        if not isinstance(data, dict):
            log.warning("ignoring threshold overrides in %s: not a map of label -> threshold", self.path)
            return {}
        overrides: dict[str, float] = {}
        self._unwatched = {}
        for label, value in data.items():
            try:
                threshold = check_threshold(value)
            except ThresholdError as exc:
                log.warning("ignoring %s in %s: %s", label, self.path, exc)
                continue
            (overrides if label in self.labels else self._unwatched)[label] = threshold
        return overrides

    def save(self, overrides: Mapping[str, float]) -> None:
        """Replace the stored overrides (atomically) after checking every label and value; the values of labels not
        watched now, as :meth:`load` found them, stay."""
        checked = {self.check_label(label): check_threshold(v) for label, v in overrides.items()}
        write_json(self.path, {**self._unwatched, **checked})

    def forget(self) -> dict[str, float]:
        """Forget every stored override, of the labels not watched now too (a reset: a label ignored at the time
        came back later with the value set from the phone, hiding the config's); returns those it forgot."""
        forgotten = dict(self._unwatched)
        write_json(self.path, {})
        self._unwatched = {}
        return forgotten

    def check_label(self, label: str) -> str:
        """``label`` if the model knows it; ThresholdError otherwise."""
        if label not in self.labels:
            raise ThresholdError(f"unknown label {label!r}")
        return label

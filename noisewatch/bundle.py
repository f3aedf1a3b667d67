"""Model bundles: ``<name>.tflite`` plus a ``<name>.json`` sidecar.

The sidecar carries everything training and the daemon must agree on (labels in output order,
feature settings, default thresholds) and what a user should know about the model (metrics,
provenance, licence). The daemon takes these from the bundle, never from its own defaults.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from noisewatch.features import FeatureSettings
from noisewatch.runtime import TFLiteModel

FORMAT = "noisewatch-bundle/1"
DEFAULT_THRESHOLD = 0.5
DEFAULT_MODEL = "urban11.json"
MODEL_ENV = "NOISEWATCH_MODEL"
REQUIRED_KEYS = ("name", "version", "labels", "features", "tflite")
KEY_TYPES: dict[str, tuple[type, str]] = {
    "labels": (list, "array"), "features": (dict, "object"), "tflite": (str, "string"), "thresholds": (dict, "object"),
    "timing": (dict, "object"), "metrics": (dict, "object"), "provenance": (dict, "object")}
"""The JSON type a sidecar key must have: of another type it failed deep inside, in Python's words ("argument after
** must be a mapping") or with a traceback (thresholds given as an array)."""
JSON_TYPES = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", int: "a number",
              float: "a number", type(None): "null"}


class BundleError(ValueError):
    """A bundle is missing, unreadable or inconsistent; the message names the file."""


@dataclass(frozen=True)
class DetectorTiming:
    """The detector's smoothing and release that go with a bundle's thresholds (training picks them together
    on soundscapes; a bundle without any gets these defaults): the daemon uses them unless the config sets its
    own."""

    smoothing_windows: int = 2
    release_s: float = 1.0

    def __post_init__(self) -> None:
        if type(self.smoothing_windows) is not int or not 1 <= self.smoothing_windows <= 50:
            raise ValueError(f"timing.smoothing_windows must be a whole number of windows in 1..50, "
                             f"got {self.smoothing_windows!r}")
        if type(self.release_s) not in (int, float) or not 0.0 <= self.release_s <= 600.0:
            raise ValueError(f"timing.release_s must be seconds in 0..600, got {self.release_s!r}")


@dataclass(frozen=True)
class Bundle:
    """A validated model bundle; ``path`` is the sidecar JSON."""

    path: Path
    name: str
    version: str
    labels: tuple[str, ...]
    features: FeatureSettings
    thresholds: dict[str, float]
    tflite: Path
    variant: str = "float32"
    timing: DetectorTiming = DetectorTiming()
    metrics: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ident(self) -> str:
        """``name@version``, as events carry it."""
        return f"{self.name}@{self.version}"

    def threshold(self, label: str) -> float:
        return self.thresholds.get(label, DEFAULT_THRESHOLD)

    def thresholds_over(self, configured: Mapping[str, float]) -> dict[str, float]:
        """Each label's threshold, the config's (``detector.thresholds``) over the bundle's: the one rule of the
        detector and of what the MQTT sink offers Home Assistant (before any threshold set from there)."""
        return {label: configured.get(label, self.threshold(label)) for label in self.labels}

    def open_model(self, runtime: str | None = None, num_threads: int = 1) -> TFLiteModel:
        """Load the .tflite and check that its shapes match the sidecar."""
        model = TFLiteModel(self.tflite, runtime=runtime, num_threads=num_threads)
        if model.n_features != self.features.n_features or model.n_classes != len(self.labels):
            raise BundleError(
                f"{self.tflite}: model takes {model.n_features} features and gives {model.n_classes} scores, "
                f"but {self.path.name} says {self.features.n_features} features and {len(self.labels)} labels"
            )
        return model


def default_model_path() -> Path:
    """$NOISEWATCH_MODEL, else the shipped model: the repository's models/ or the installed share/."""
    if os.environ.get(MODEL_ENV):
        return Path(os.environ[MODEL_ENV])
    candidates = [
        Path(__file__).resolve().parent.parent / "models" / DEFAULT_MODEL,
        Path(sys.prefix) / "share" / "noisewatch" / "models" / DEFAULT_MODEL,
    ]
    return next((c for c in candidates if c.is_file()), candidates[0])


def sidecar_path(path: str | Path) -> Path:
    """The sidecar JSON for a bundle given as .json, .tflite, or a folder holding one bundle."""
    path = Path(path)
    if path.is_dir():
        found = sorted(path.glob("*.json"))
        if len(found) != 1:
            raise BundleError(f"{path}: expected exactly one bundle .json in the folder, found {len(found)}")
        return found[0]
    return path.with_suffix(".json")


def load_bundle(path: str | Path) -> Bundle:
    """Read and validate a bundle; every problem raises BundleError naming the file."""
    sidecar = sidecar_path(path)
    try:
        data = json.loads(sidecar.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BundleError(f"{sidecar}: model bundle not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"{sidecar}: not a readable bundle sidecar ({exc})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise BundleError(f"{sidecar}: not a noisewatch bundle (format must be {FORMAT!r})")
    try:
        return _from_dict(sidecar, data)
    except (KeyError, TypeError, ValueError) as exc:
        raise BundleError(f"{sidecar}: invalid bundle: {exc}") from None


def _check_keys(data: dict[str, Any]) -> None:
    """Every required key there and every known one of its JSON type, said in the sidecar's own terms."""
    missing = [key for key in REQUIRED_KEYS if key not in data]
    if missing:
        raise ValueError(f"missing key {', '.join(missing)}")
    for key, (kind, name) in KEY_TYPES.items():
        if key in data and not isinstance(data[key], kind):
            raise ValueError(f"{key} must be a JSON {name}, not {JSON_TYPES.get(type(data[key]), 'another type')}")


def _model_checksum(tflite: Path) -> str:
    """The model file's SHA-256; a file that cannot be read (a failing card, a mode the service user cannot read)
    is a bundle error naming it, not a traceback."""
    try:
        return _sha256(tflite.read_bytes())
    except OSError as exc:
        raise ValueError(f"model file {tflite} cannot be read ({exc.strerror or exc})") from None


def threshold_value(value: object) -> float:
    """``value`` as a label's threshold, or ValueError: a number, not a bool or text, in 0..1 (NaN and infinities
    fail). One rule for a bundle's sidecar, the thresholds kept in the state folder and those set from Home
    Assistant: ``float()`` took ``true`` as 1.0, the value that turns a label off, silently."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{value!r} is not a number")
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"threshold {value} is outside 0..1")
    return float(value)


def _thresholds(given: dict[str, Any], labels: tuple[str, ...]) -> dict[str, float]:
    """Each named label's threshold (:func:`threshold_value`)."""
    thresholds = {}
    for label, value in given.items():
        if label not in labels:
            raise ValueError(f"thresholds name {label!r}, not one of the model's labels")
        try:
            thresholds[label] = threshold_value(value)
        except ValueError:
            raise ValueError(f"thresholds.{label} must be a number in 0..1, not {value!r}") from None
    return thresholds


def _from_dict(sidecar: Path, data: dict[str, Any]) -> Bundle:
    _check_keys(data)
    labels = tuple(str(label) for label in data["labels"])
    if not labels or len(set(labels)) != len(labels):
        raise ValueError("labels must be a non-empty list of unique names")
    thresholds = _thresholds(data.get("thresholds", {}), labels)
    tflite = sidecar.parent / data["tflite"]
    if not tflite.is_file():
        raise ValueError(f"model file {tflite} is missing")
    expected = data.get("tflite_sha256")
    if expected is not None and _model_checksum(tflite) != expected:
        raise ValueError(f"model file {tflite} does not match the checksum its sidecar gives: damaged or replaced")
    known = {"format", "name", "version", "labels", "features", "thresholds", "tflite", "tflite_sha256", "variant",
             "timing", "metrics", "provenance"}
    return Bundle(
        path=sidecar,
        name=str(data["name"]),
        version=str(data["version"]),
        labels=labels,
        features=FeatureSettings.from_dict(data["features"]),
        thresholds=thresholds,
        tflite=tflite,
        variant=str(data.get("variant", "float32")),
        timing=DetectorTiming(**data.get("timing", {})),
        metrics=dict(data.get("metrics", {})),
        provenance=dict(data.get("provenance", {})),
        extra={k: v for k, v in data.items() if k not in known},
    )


def _sha256(tflite_bytes: bytes) -> str:
    """The model file's SHA-256: a bit flipped in its weights still loads and runs, and would go unnoticed."""
    return hashlib.sha256(tflite_bytes).hexdigest()


def write_bundle(
    directory: str | Path,
    name: str,
    tflite_bytes: bytes,
    *,
    version: str,
    labels: list[str],
    features: FeatureSettings,
    thresholds: dict[str, float],
    variant: str = "float32",
    timing: DetectorTiming = DetectorTiming(),
    metrics: dict[str, Any] | None = None,
    provenance: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> Bundle:
    """Write ``<name>.tflite`` and ``<name>.json`` into ``directory`` and read them back."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{name}.tflite").write_bytes(tflite_bytes)
    sidecar = {
        "format": FORMAT,
        "name": name,
        "version": version,
        "tflite": f"{name}.tflite",
        "tflite_sha256": _sha256(tflite_bytes),
        "variant": variant,
        "labels": list(labels),
        "features": features.to_dict(),
        "thresholds": {label: round(float(thresholds.get(label, DEFAULT_THRESHOLD)), 4) for label in labels},
        "timing": asdict(timing),
        "metrics": metrics or {},
        "provenance": provenance or {},
        **(extra or {}),
    }
    (directory / f"{name}.json").write_text(json.dumps(sidecar, indent=2) + "\n", encoding="utf-8")
    return load_bundle(directory / f"{name}.json")

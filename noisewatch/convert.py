"""``noisewatch convert``: the trained Keras MLP -> TFLite model bundles, checked against Keras.

Variants: ``float32``, and ``int8`` (dynamic-range quantization with per-tensor weights, which
tflite-runtime 2.14 can load; TF's default per-channel weights need a newer runtime). Each variant
is run through every installed TFLite runtime on the training features and compared with Keras
(argmax agreement, max abs score difference); a variant that disagrees is refused, never written.
The first variant asked for gets the plain bundle name, others get ``<name>-<variant>``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from noisewatch.bundle import DetectorTiming, write_bundle
from noisewatch.features import FeatureSettings
from noisewatch.runtime import TFLiteModel, available_runtimes
from noisewatch.train.export import to_tflite
from noisewatch.train.settings import FEATURES_NPZ, MODEL_FILE, TRAINING_JSON

log = logging.getLogger(__name__)

VARIANTS = ("int8", "float32")
MIN_AGREEMENT = {"float32": 0.999, "int8": 0.98}
"""Least fraction of training vectors whose TFLite argmax equals Keras's."""
MAX_ABS_DIFF = {"float32": 1e-3, "int8": 0.25}
"""Largest allowed |TFLite score - Keras score| over all vectors and classes."""
CHECKED_RUNTIMES = ("ai_edge_litert", "tflite_runtime")
"""The runtimes a daemon uses; tensorflow.lite is only a fallback on training machines."""


class ConversionError(RuntimeError):
    """A converted model disagrees with Keras, or the training output is incomplete."""


@dataclass(frozen=True)
class Parity:
    """How one runtime's scores compare with Keras's on the same vectors."""

    runtime: str
    agreement: float
    max_abs_diff: float

    def acceptable(self, variant: str) -> bool:
        return self.agreement >= MIN_AGREEMENT[variant] and self.max_abs_diff <= MAX_ABS_DIFF[variant]


def parity(tflite_bytes: bytes, x: np.ndarray, reference: np.ndarray) -> list[Parity]:
    """Compare the flatbuffer, in every installed runtime, with the Keras scores ``reference``."""
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.tflite"
        path.write_bytes(tflite_bytes)
        for runtime in [r for r in available_runtimes() if r in CHECKED_RUNTIMES]:
            scores = TFLiteModel(path, runtime=runtime).predict_batch(x)
            agreement = float(np.mean(scores.argmax(axis=1) == reference.argmax(axis=1)))
            results.append(Parity(runtime, agreement, float(np.max(np.abs(scores - reference)))))
    return results


def check(variant: str, results: list[Parity]) -> None:
    """Raise ConversionError naming the runtime and figures of any disagreement."""
    bad = [r for r in results if not r.acceptable(variant)]
    if bad:
        detail = "; ".join(
            f"{r.runtime}: argmax agreement {r.agreement:.4f}, max abs diff {r.max_abs_diff:.4g}" for r in bad
        )
        raise ConversionError(
            f"{variant} model disagrees with Keras ({detail}); limits: agreement >= {MIN_AGREEMENT[variant]}, "
            f"max abs diff <= {MAX_ABS_DIFF[variant]}; bundle not written"
        )


def load_training(train_dir: Path) -> tuple[Any, dict[str, Any], np.ndarray]:
    """The Keras model, training.json and the training feature matrix from ``noisewatch train``."""
    import keras

    missing = [n for n in (MODEL_FILE, TRAINING_JSON, FEATURES_NPZ) if not (train_dir / n).is_file()]
    if missing:
        raise ConversionError(
            f"{train_dir}: missing {', '.join(missing)}; run 'noisewatch train --out {train_dir}' first"
        )
    training = json.loads((train_dir / TRAINING_JSON).read_text(encoding="utf-8"))
    return keras.models.load_model(train_dir / MODEL_FILE), training, np.load(train_dir / FEATURES_NPZ)["x"]


def convert(train_dir: Path, out: Path, name: str, variants: tuple[str, ...], version: str | None = None) -> list[Path]:
    """Write one checked bundle per variant; returns the sidecar paths."""
    model, training, x = load_training(train_dir)
    version = version or training["provenance"]["date"][:10].replace("-", ".")
    reference = model.predict(x, verbose=0)
    written = []
    for index, variant in enumerate(variants):
        flatbuffer = to_tflite(model, variant)
        results = parity(flatbuffer, x, reference)
        check(variant, results)
        bundle_name = name if index == 0 else f"{name}-{variant}"
        bundle = write_bundle(
            out, bundle_name, flatbuffer,
            version=version,
            labels=training["labels"],
            features=FeatureSettings.from_dict(training["features"]),
            thresholds=training["thresholds"],
            timing=DetectorTiming(**training.get("timing", {})),
            variant=variant,
            metrics={**training["metrics"], "parity": [vars(r) for r in results]},
            provenance=training["provenance"],
            extra={"runtime": compatibility(variant, results), "model": training["model"]},
        )
        log.info("wrote %s (%s, %d bytes): %s", bundle.path, variant, len(flatbuffer), results)
        written.append(bundle.path)
    return written


def compatibility(variant: str, results: list[Parity]) -> dict[str, Any]:
    """Which runtimes load the bundle: the ones checked here, plus the known floor."""
    return {
        "checked": [r.runtime for r in results],
        "tflite_runtime_min": "2.14",
        "quantization": "dynamic-range int8, per-tensor weights" if variant == "int8" else "none",
    }


def main(args: argparse.Namespace) -> int:
    """Handler of ``noisewatch convert``."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    variants = tuple(args.variant) if args.variant else VARIANTS
    try:
        for path in convert(Path(args.train_dir), Path(args.out), args.name, variants, args.version):
            print(path)
    except ConversionError as exc:
        print(f"noisewatch convert: {exc}", file=sys.stderr)
        return 1
    return 0

"""``noisewatch evaluate``: score a converted bundle on a labelled dataset through the runtime path.

Uses exactly what the daemon uses (features.py, the bundle and a TFLite runtime) and no training
stack (no TensorFlow, scikit-learn or librosa), so it runs on the Pi itself. The dataset layout
(UrbanSound8K, ESC-50, folder-per-class) is detected from the folder.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from noisewatch.bundle import Bundle, BundleError, load_bundle
from noisewatch.runtime import RuntimeUnavailable
from noisewatch.train import datasets, metrics
from noisewatch.train.featurize import feature_matrix

PREDICTION_FIELDS = ("path", "true", "predicted", "score")


def predict(bundle: Bundle, clips: Sequence[datasets.Clip]) -> np.ndarray:
    """Scores (n, labels) of each clip: one fitted window, as in training."""
    model = bundle.open_model()
    return model.predict_batch(feature_matrix(clips, bundle.features))


def evaluate(bundle: Bundle, clips: Sequence[datasets.Clip]) -> tuple[dict[str, Any], np.ndarray]:
    """The metrics summary and the score matrix; every clip label must be one of the bundle's."""
    unknown = sorted({c.label for c in clips} - set(bundle.labels))
    if unknown:
        raise ValueError(f"dataset labels {unknown} are not among the model's labels {list(bundle.labels)}")
    y_true = np.array([bundle.labels.index(c.label) for c in clips], dtype=np.int64)
    scores = predict(bundle, clips)
    result = metrics.summary(y_true, scores.argmax(axis=1), bundle.labels, datasets.BACKGROUND)
    return result, scores


def write_predictions(path: Path, clips: Sequence[datasets.Clip], scores: np.ndarray, labels: Sequence[str]) -> None:
    """One CSV row per clip: file, true label, predicted label, its score."""
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(PREDICTION_FIELDS)
        for clip, row in zip(clips, scores):
            best = int(np.argmax(row))
            writer.writerow([str(clip.path or clip.key), clip.label, labels[best], f"{row[best]:.4f}"])


def format_table(result: dict[str, Any]) -> str:
    """A plain-text summary for people (``--json`` gives everything)."""
    lines = [f"n={result['n']}  accuracy={result['accuracy']:.3f}  macro_f1={result['macro_f1']:.3f}"]
    lines += [
        f"  {label:18s} P={row['precision']:.3f} R={row['recall']:.3f} F1={row['f1']:.3f} n={row['support']}"
        for label, row in result["per_class"].items()
        if row["support"]
    ]
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    """Handler of ``noisewatch evaluate``; exit 2 on a bad bundle or dataset."""
    folds = [int(part) for part in args.folds.split(",")] if args.folds else None
    try:
        bundle = load_bundle(args.model)
        clips = datasets.read_dataset(args.dataset, folds)
        if not clips:
            raise ValueError(f"{args.dataset}: no clips (folds {folds})")
        result, scores = evaluate(bundle, clips)
    except (BundleError, RuntimeUnavailable, FileNotFoundError, ValueError) as exc:
        print(f"noisewatch evaluate: {exc}", file=sys.stderr)
        return 2
    result = {"model": bundle.ident, "dataset": str(args.dataset), **result}
    if args.predictions:
        write_predictions(Path(args.predictions), clips, scores, bundle.labels)
    print(json.dumps(result, indent=2) if args.json else format_table(result))
    return 0

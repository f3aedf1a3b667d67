"""Classification metrics in plain numpy, so ``evaluate`` runs on a Pi without scikit-learn.

All functions take integer class indices (``y_true``, ``y_pred``) into a list of ``labels``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from noisewatch.daemon.detector import heard


def confusion(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """Counts, rows = true class, columns = predicted class."""
    matrix = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(matrix, (np.asarray(y_true, int), np.asarray(y_pred, int)), 1)
    return matrix


def accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    return float(np.mean(y_true == y_pred)) if len(y_true) else 0.0


def _safe_ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den, 0 where den is 0 (scikit-learn's zero_division=0)."""
    num, den = num.astype(np.float64), den.astype(np.float64)
    return np.divide(num, den, out=np.zeros_like(num), where=den > 0)


def precision_recall_f1(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per-class precision, recall, F1 and support from a confusion matrix."""
    tp = np.diag(matrix)
    precision = _safe_ratio(tp, matrix.sum(axis=0))
    recall = _safe_ratio(tp, matrix.sum(axis=1))
    f1 = _safe_ratio(2 * precision * recall, precision + recall)
    return precision, recall, f1, matrix.sum(axis=1)


def macro_f1(matrix: np.ndarray) -> float:
    """Mean F1 over the classes that occur (support > 0), as scikit-learn's labels=present."""
    _, _, f1, support = precision_recall_f1(matrix)
    present = support > 0
    return float(f1[present].mean()) if present.any() else 0.0


def false_positive_rate(y_true: np.ndarray, y_pred: np.ndarray, negative: int) -> float:
    """Fraction of ``negative``-class examples predicted as any other class."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    negatives = y_true == negative
    return float(np.mean(y_pred[negatives] != negative)) if negatives.any() else 0.0


def summary(
    y_true: np.ndarray, y_pred: np.ndarray, labels: Sequence[str], negative: str | None = None
) -> dict[str, Any]:
    """The metrics block shared by reports and ``evaluate --json``."""
    matrix = confusion(y_true, y_pred, len(labels))
    precision, recall, f1, support = precision_recall_f1(matrix)
    result: dict[str, Any] = {
        "n": int(len(y_true)),
        "accuracy": round(accuracy(y_true, y_pred), 4),
        "macro_f1": round(macro_f1(matrix), 4),
        "labels": list(labels),
        "per_class": {
            label: {
                "precision": round(float(precision[i]), 4),
                "recall": round(float(recall[i]), 4),
                "f1": round(float(f1[i]), 4),
                "support": int(support[i]),
            }
            for i, label in enumerate(labels)
        },
        "confusion": matrix.tolist(),
    }
    if negative is not None and negative in labels:
        rate = false_positive_rate(y_true, y_pred, list(labels).index(negative))
        result["background_false_positive_rate"] = round(rate, 4)
    return result


THRESHOLD_STEP = 0.05
THRESHOLD_MAX = 0.95
"""Highest per-class threshold considered; the grid runs from a floor to here in THRESHOLD_STEP steps."""


def count_f1(tp: float, fp: float, fn: float) -> float:
    """F1 from counts of hits, false alarms and misses (0 without a hit)."""
    return float(2 * tp / max(1, 2 * tp + fp + fn))


def threshold_grid(floor: float) -> np.ndarray:
    """Candidate per-class thresholds, ``floor`` to THRESHOLD_MAX."""
    return np.round(np.arange(floor, THRESHOLD_MAX + 1e-9, THRESHOLD_STEP), 2)


def best_thresholds(
    scores: np.ndarray, y_true: np.ndarray, labels: Sequence[str], grid: np.ndarray
) -> dict[str, float]:
    """Per label, the score threshold in ``grid`` with the best one-vs-rest F1 on held-out data."""
    thresholds = {}
    for i, label in enumerate(labels):
        positive = np.asarray(y_true) == i
        f1s = []
        for t in grid:
            hit = scores[:, i] >= t
            tp, fp, fn = np.sum(hit & positive), np.sum(hit & ~positive), np.sum(~hit & positive)
            f1s.append(count_f1(tp, fp, fn))
        thresholds[label] = float(grid[int(np.argmax(f1s))])
    return thresholds


def thresholded(scores: np.ndarray, thresholds: Sequence[float], fallback: int) -> np.ndarray:
    """The daemon's decision: the top class if its score reaches its threshold, else ``fallback``."""
    top = scores.argmax(axis=1)
    confident = heard(scores[np.arange(len(top)), top], np.asarray(thresholds)[top])
    return np.where(confident, top, fallback)

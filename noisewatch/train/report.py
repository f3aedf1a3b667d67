"""Training report: fold-wise metrics of the MLP and its baselines as JSON, Markdown and a PNG.

The numbers come from :mod:`noisewatch.train.metrics`; this module only arranges and draws them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from noisewatch.train.scene_eval import table

REPORT_JSON = "report.json"
REPORT_MD = "report.md"
CONFUSION_PNG = "confusion.png"


def plot_confusion(matrix: Sequence[Sequence[int]], labels: Sequence[str], path: Path, title: str) -> None:
    """Row-normalised confusion matrix with the raw counts written in each cell."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = np.asarray(matrix, dtype=np.float64)
    rates = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(8.5, 7.5))
    ax.imshow(rates, cmap="Blues", vmin=0.0, vmax=1.0)
    ax.set_xticks(range(len(labels)), labels, rotation=60, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    for (row, col), count in np.ndenumerate(counts):
        if count:
            colour = "white" if rates[row, col] > 0.5 else "black"
            ax.text(col, row, str(int(count)), ha="center", va="center", fontsize=7, color=colour)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def markdown(report: dict[str, Any]) -> str:
    """A short human-readable summary: one row per model and fold, then per-class figures."""
    lines = ["| model | test fold | accuracy | macro-F1 | background FP rate |", "|---|---|---|---|---|"]
    for model, block in report["models"].items():
        for fold, metrics in [*block["folds"].items(), ("pooled", block["pooled"])]:
            lines.append(
                f"| {model} | {fold} | {metrics['accuracy']:.3f} | {metrics['macro_f1']:.3f} | "
                f"{metrics.get('background_false_positive_rate', float('nan')):.3f} |"
            )
    lines += ["", "| class (MLP, pooled held-out) | precision | recall | F1 | support |", "|---|---|---|---|---|"]
    for label, row in report["models"]["mlp"]["pooled"]["per_class"].items():
        lines.append(f"| {label} | {row['precision']:.3f} | {row['recall']:.3f} | {row['f1']:.3f} | {row['support']} |")
    scenes = [*scene_lines(report.get("scenes", {}), "argmax of each window"), "",
              *scene_lines(report.get("scenes_thresholded", {}), "the daemon's per-class thresholds")]
    soundscapes = report.get("soundscapes")
    dcase = (["Soundscapes (scaper, daemon decision path, sed_eval; leave-one-fold-out):", "", "```",
              table(soundscapes, "held-out fold models"), "```"] if soundscapes else [])
    return "\n".join([*lines, "", *scenes, "", *dcase]) + "\n"


def scene_lines(scenes: dict[str, Any], decision: str) -> list[str]:
    """The MLP on held-out scenes (see :mod:`noisewatch.train.scenes`): one row per test fold and pooled."""
    lines = [f"| held-out scenes (MLP, {decision}; 4 s windows, hop 0.5 s) | events | event recall | "
             "quiet false-alarm windows |", "|---|---|---|---|"]
    for name, m in scenes.items():
        alarms = f"{m['quiet_false_alarm_windows']} of {m['n_quiet_windows']}"
        row = name if name == "pooled" else f"test fold {name}"
        lines.append(f"| {row} | {m['n_events']} | {m['event_recall']:.3f} | {alarms} |")
    if "pooled" in scenes:
        pooled = scenes["pooled"]
        per_class = ", ".join(f"{label} {recall:.2f}" for label, recall in pooled["recall_per_class"].items())
        alarms = ", ".join(f"{label} {count}" for label, count in pooled["quiet_false_alarms_per_class"].items())
        lines += ["", f"Scene event recall per class (pooled): {per_class}",
                  "", f"Quiet false-alarm windows by the class they gave (pooled): {alarms or 'none'}"]
    return lines if scenes else []


def write_report(out: Path, report: dict[str, Any]) -> None:
    """report.json, report.md and confusion.png (MLP, pooled over held-out folds) into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    (out / REPORT_JSON).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    (out / REPORT_MD).write_text(markdown(report), encoding="utf-8")
    pooled = report["models"]["mlp"]["pooled"]
    title = f"MLP, leave-one-fold-out (accuracy {pooled['accuracy']:.3f}, n={pooled['n']})"
    plot_confusion(pooled["confusion"], pooled["labels"], out / CONFUSION_PNG, title)

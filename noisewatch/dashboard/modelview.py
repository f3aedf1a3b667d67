"""Tables behind the Model page, read robustly from a bundle's ``metrics`` and ``provenance``.

Training writes per model (``mlp`` and the RandomForest/KNN baselines) per held-out fold and
pooled: accuracy, macro-F1, background false-positive rate and, where kept, the per-class
figures and confusion matrix. Any of these may be missing in a given bundle; every function
returns what is there and nothing for what is not.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

HEADLINE = ("accuracy", "macro_f1", "background_false_positive_rate", "n")
"""figures shown per model and fold, in this order"""
PREFERRED_SUMMARY = ("mlp", "pooled")
"""where the confusion matrix of the shipped model is looked for first"""
SOUNDSCAPES = "soundscapes"
"""the metrics block of the daemon's events on held-out soundscapes (``noisewatch train``)"""


def soundscape_rows(metrics: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Detection on held-out soundscapes, per fold and pooled, in words a user reads: how much of the sound
    is labelled right, how many events are found (short ones apart), how often it cries wolf."""
    block = metrics.get(SOUNDSCAPES)
    if not isinstance(block, Mapping):
        return []
    named = [*(block.get("folds") or {}).items(), ("all", block.get("pooled"))]
    return [{"fold": str(name), "time labelled right (segment F1)": _rounded(b.get("segment_f1")),
             "events (event F1)": _rounded(b.get("event_f1")),
             "events found": f"{b.get('found')} of {b.get('events')}",
             "events < 2 s found": f"{b.get('short_found')} of {b.get('short_events')}",
             "false events per hour of ambience": _rounded(b.get("false_events_per_hour"), 1)}
            for name, b in named if isinstance(b, Mapping)]


def _rounded(value: Any, digits: int = 2) -> Any:
    """Two decimals are all a 100-event evaluation can tell; anything else (None) as it is."""
    return round(value, digits) if isinstance(value, float) else value


def soundscape_caption(metrics: Mapping[str, Any]) -> str:
    """How the soundscapes were made, from the recipe the bundle carries."""
    block = metrics.get(SOUNDSCAPES)
    recipe = block.get("recipe") if isinstance(block, Mapping) else None
    made = "scenes of recordings the model never trained on, over real ambience (rain, wind, birds...)"
    if isinstance(recipe, Mapping) and isinstance(recipe.get("duration_s"), int | float) and \
            isinstance(recipe.get("snr_db"), list) and len(recipe["snr_db"]) == 2:
        low, high = recipe["snr_db"]
        made = f"{recipe['duration_s']:g} s {made} at {low:g}-{high:g} dB SNR"
    return f"{made}, run through the daemon and scored with sed_eval"


def soundscape_class_rows(metrics: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Pooled segment and event F1 per label on held-out soundscapes."""
    block = metrics.get(SOUNDSCAPES)
    pooled = block.get("pooled") if isinstance(block, Mapping) else None
    per_class = pooled.get("per_class", {}) if isinstance(pooled, Mapping) else {}
    return [{"label": label, "segment F1": _rounded(figures.get("segment_f1")),
             "event F1": _rounded(figures.get("event_f1"))}
            for label, figures in per_class.items() if isinstance(figures, Mapping)]


def headline_rows(metrics: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per model and fold (pooled last): the headline figures, for comparing baselines."""
    rows = []
    for model, block in metrics.items():
        if not isinstance(block, Mapping):
            continue
        if any(key in block for key in HEADLINE):
            rows.append(_headline(model, "all", block))
            continue
        for fold, figures in block.items():
            if isinstance(figures, Mapping) and any(key in figures for key in HEADLINE):
                rows.append(_headline(model, str(fold), figures))
    return rows


def _headline(model: str, fold: str, figures: Mapping[str, Any]) -> dict[str, Any]:
    return {"model": model, "fold": fold, **{key: figures.get(key) for key in HEADLINE}}


def find_summary(metrics: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The block holding a confusion matrix: the MLP's pooled one if present, else the first found."""
    preferred: Any = metrics
    for key in PREFERRED_SUMMARY:
        preferred = preferred.get(key, {}) if isinstance(preferred, Mapping) else {}
    if _is_summary(preferred):
        return preferred
    return next((block for block in _mappings(metrics) if _is_summary(block)), None)


def _is_summary(block: Any) -> bool:
    return isinstance(block, Mapping) and isinstance(block.get("confusion"), list) and isinstance(block.get("labels"), list)


def _mappings(node: Any) -> Iterator[Mapping[str, Any]]:
    """Every mapping in a JSON tree, depth first, parents before children."""
    if isinstance(node, Mapping):
        yield node
        for value in node.values():
            yield from _mappings(value)


def confusion_image(sidecar: Path) -> Path | None:
    """The model card's confusion-matrix picture beside the bundle (``<name>-confusion.png``), if there is one.

    Bundles keep only headline figures; the card's matrix is the one training drew for them.
    """
    path = sidecar.with_name(f"{sidecar.stem}-confusion.png")
    return path if path.is_file() else None


def confusion_cells(summary: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Confusion matrix as cells (true, predicted, count, share of the true class) for a heatmap."""
    labels = [str(label) for label in summary["labels"]]
    cells = []
    for true, row in zip(labels, summary["confusion"]):
        total = sum(row) or 1
        for predicted, count in zip(labels, row):
            cells.append({"true": true, "predicted": predicted, "count": int(count), "share": count / total})
    return cells


def per_class_rows(summary: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Precision, recall, F1 and support per label."""
    per_class = summary.get("per_class", {})
    return [{"label": label, **figures} for label, figures in per_class.items() if isinstance(figures, Mapping)]


def provenance_rows(provenance: Mapping[str, Any]) -> list[dict[str, str]]:
    """Where the model came from, one readable line per key (datasets as ``name: clips``)."""
    rows = []
    for key, value in provenance.items():
        if isinstance(value, Mapping):
            text = ", ".join(f"{name}: {count}" for name, count in value.items())
        elif isinstance(value, (list, tuple)):
            text = ", ".join(str(item) for item in value)
        else:
            text = str(value)
        rows.append({"item": key, "value": text})
    return rows

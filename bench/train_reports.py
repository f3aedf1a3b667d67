"""Side by side: the held-out figures of several ``noisewatch train`` runs (their ``report.json``), for
ablations: clip accuracy, and the soundscape figures (segment and event F1, events found, short events
found, false events per hour, per-class event F1).

    python bench/train_reports.py build/A1 build/B1 [--per-class] [--mean]

``--mean`` adds the runs' mean (seeds of one recipe: how the shipping rules in docs/scene-evaluation.md read).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def row(name: str, report: dict[str, Any]) -> str:
    mlp, thresholded = report["models"]["mlp"]["pooled"], report["models"]["mlp_thresholded"]["pooled"]
    scenes = report.get("soundscapes", {}).get("pooled")
    clip = f"{mlp['accuracy']:.3f} {thresholded['accuracy']:.3f}"
    if scenes is None:
        return f"{name:14} {clip}   (no soundscape figures)"
    return (f"{name:14} {clip}   {scenes['segment_f1']:.2f}   {scenes['event_f1']:.2f}  {scenes['found']:>3}/"
            f"{scenes['events']:<3} {scenes['short_found']:>3}/{scenes['short_events']:<3} "
            f"{scenes['background']['per_hour']:7.1f}")


def figures(report: dict[str, Any]) -> list[float]:
    """Clip accuracy (argmax, thresholds), segment F1, event F1, found, short found, false events per hour."""
    scenes = report["soundscapes"]["pooled"]
    return [report["models"]["mlp"]["pooled"]["accuracy"], report["models"]["mlp_thresholded"]["pooled"]["accuracy"],
            scenes["segment_f1"], scenes["event_f1"], scenes["found"], scenes["short_found"],
            scenes["background"]["per_hour"]]


def mean_row(reports: list[dict[str, Any]]) -> str:
    acc, thr, seg, evt, found, short, false = (sum(values) / len(values) for values in zip(*map(figures, reports)))
    return (f"{'mean of ' + str(len(reports)):14} {acc:.3f} {thr:.3f}   {seg:.3f}  {evt:.3f}  {found:5.1f}    "
            f"{short:4.1f}   {false:7.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("train_dirs", nargs="+", type=Path)
    parser.add_argument("--per-class", action="store_true", help="also pooled event F1 per class")
    parser.add_argument("--mean", action="store_true", help="also the mean of the runs")
    args = parser.parse_args()
    reports = {d.name: json.loads((d / "report.json").read_text()) for d in args.train_dirs}
    print(f"{'run':14} {'clip acc':>5} {'thr':>5}  seg F1  evt F1  found   <2 s  false/h")
    for name, report in reports.items():
        print(row(name, report))
    if args.mean:
        print(mean_row(list(reports.values())))
    if args.per_class:
        labels = next(iter(reports.values()))["soundscapes"]["pooled"]["per_class"]
        print(f"{'event F1':18}" + "".join(f"{name:>10}" for name in reports))
        for label in labels:
            values = [r["soundscapes"]["pooled"]["per_class"][label]["event_f1"] for r in reports.values()]
            print(f"  {label:16}" + "".join(f"{'-' if v is None else f'{v:.2f}':>10}" for v in values))


if __name__ == "__main__":
    main()

"""Detector settings for held-out event F1: a grid of threshold floors, smoothing and release, each run
through the daemon on the soundscapes of ``noisewatch evaluate-scenes``, with the held-out fold models that
``noisewatch train`` leaves in its output folder (``heldout-fold<N>``).

The choice is cross-fitted: each fold is scored with the setting that had the best event F1 on the other
folds, so the figure it prints for the choice is not fitted to the soundscapes it is measured on.

    python bench/scene_settings.py --train-dir build/train [--folds 1,2]
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DATA  # noqa: E402

from noisewatch.bundle import load_bundle  # noqa: E402
from noisewatch.config import Config, load_config  # noqa: E402
from noisewatch.train.scene_eval import build_scenes, run_fold, summarize  # noqa: E402
from noisewatch.train.soundscapes import Recipe  # noqa: E402

FLOORS = (0.0, 0.8, 0.9)
"""Lowest threshold of any label (0: the bundle's own thresholds)."""
SMOOTHING = (2, 4)
RELEASE_S = (1.0,)


def config_for(floor: float, smoothing: int, release_s: float, thresholds: dict[str, float]) -> Config:
    """The default config with these detector settings; thresholds raised to ``floor`` where lower."""
    raised = {label: max(value, floor) for label, value in thresholds.items()}
    detector = {"thresholds": raised, "smoothing_windows": smoothing, "release_s": release_s}
    return load_config(None).model_copy(update={"detector": load_config(None).detector.model_copy(update=detector)})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-dir", required=True, type=Path)
    parser.add_argument("--folds", default="1,2")
    parser.add_argument("--scenes", type=int, default=Recipe.scenes)
    parser.add_argument("--background-scenes", type=int, default=Recipe.background_scenes)
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args()
    folds = [int(f) for f in args.folds.split(",")]
    began = time.perf_counter()
    bundles = {fold: load_bundle(args.train_dir / f"heldout-fold{fold}") for fold in folds}
    models = {fold: bundle.open_model() for fold, bundle in bundles.items()}
    recipe = Recipe(scenes=args.scenes, sweep_scenes=0, background_scenes=args.background_scenes)
    scenes = build_scenes(DATA / "UrbanSound8K", DATA / "ESC-50", folds, recipe, bundles[folds[0]].features.sample_rate)
    results: dict[str, Any] = {}
    print(f"{'floor':>5} {'smooth':>6} {'release':>7} | {'seg F1':>6} {'evt F1':>6} {'<2 s':>6} {'false/h':>7}")
    for floor, smoothing, release in itertools.product(FLOORS, SMOOTHING, RELEASE_S):
        runs = {fold: run_fold(scenes[fold], config_for(floor, smoothing, release, bundles[fold].thresholds),
                               bundles[fold], models[fold]) for fold in folds}
        report = summarize(runs)
        results[f"{floor:g}/{smoothing}/{release:g}"] = report
        p = report["pooled"]
        print(f"{floor:5.1f} {smoothing:6d} {release:7.1f} | {p['segment_f1']:6.2f} {p['event_f1']:6.2f} "
              f"{p['short_found']:>2}/{p['short_events']:<3} {p['background']['per_hour']:7.1f}", flush=True)
    print(cross_fitted(results, folds))
    print(f"{time.perf_counter() - began:.0f} s in all")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return 0


def cross_fitted(results: dict[str, Any], folds: list[int]) -> str:
    """Each fold scored at the setting with the best mean event F1 on the other folds."""
    lines = []
    for fold in folds:
        others = [str(f) for f in folds if f != fold]
        best = max(results, key=lambda key: sum(results[key]["folds"][o]["event_f1"] or 0.0 for o in others))
        b = results[best]["folds"][str(fold)]
        lines.append(f"fold {fold} at {best} (floor/smoothing/release, chosen on folds {','.join(others)}): "
                     f"segment F1 {b['segment_f1']:.2f}, event F1 {b['event_f1']:.2f}, "
                     f"false events/h {b['background']['per_hour']:.1f}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())

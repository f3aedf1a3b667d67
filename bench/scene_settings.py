"""Detector timing for held-out event F1: each timing of ``scene_eval.TIMINGS`` (smoothing, release) with its
per-class thresholds picked on tuning soundscapes, then scored through the daemon on the evaluation
soundscapes of ``noisewatch evaluate-scenes``, with the held-out fold models that ``noisewatch train`` leaves
in its output folder (``heldout-fold<N>``).

Everything is cross-fitted the way ``noisewatch train`` picks its settings (the same functions): a fold is
scored with thresholds (and, in the last row, the timing) picked on the *other* folds' tuning soundscapes.

    python bench/scene_settings.py --train-dir build/train [--folds 1,2]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DATA  # noqa: E402

from noisewatch.bundle import load_bundle  # noqa: E402
from noisewatch.config import load_config  # noqa: E402
from noisewatch.train.scene_eval import (  # noqa: E402
    TIMINGS,
    cross_fitted,
    evaluate,
    train_recipe,
    tuned,
    tuning_recipe,
    tuning_sweeps,
)
from noisewatch.train.soundscapes import fold_scenes, fold_sources  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-dir", required=True, type=Path)
    parser.add_argument("--folds", default="1,2")
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args()
    folds = [int(f) for f in args.folds.split(",")]
    began = time.perf_counter()
    bundles = {fold: load_bundle(args.train_dir / f"heldout-fold{fold}") for fold in folds}
    models = {fold: (bundle, bundle.open_model()) for fold, bundle in bundles.items()}
    sources = fold_sources(DATA / "UrbanSound8K", DATA / "ESC-50", folds)
    recipe = train_recipe(min(len(events) for events, _ in sources.values()))
    config, rate = load_config(None), bundles[folds[0]].features.sample_rate
    sweeps = tuning_sweeps(sources, tuning_recipe(recipe), config, models)
    print(f"tuning sweeps: {time.perf_counter() - began:.0f} s", flush=True)
    scenes = {fold: fold_scenes(fold, events, beds, recipe, rate) for fold, (events, beds) in sources.items()}
    results: dict[str, Any] = {}
    print(f"{'smoothing':>9} {'release':>7} | {'seg F1':>6} {'evt F1':>6} {'found':>6} {'<2 s':>6} {'false/h':>7}")
    choices = [(f"{t.smoothing_windows} {t.release_s:g}", {f: {t: s[t]} for f, s in sweeps.items()}) for t in TIMINGS]
    for name, restricted in [*choices, ("picked", sweeps)]:
        chosen = cross_fitted(restricted)
        report = evaluate(scenes, tuned(config, models, chosen))
        results[name] = {"chosen": {str(f): [c[0].smoothing_windows, c[0].release_s, c[1]] for f, c in chosen.items()},
                         **report}
        p = report["pooled"]
        label = name if name != "picked" else "picked: " + ", ".join(
            f"fold {f} {c[0].smoothing_windows}/{c[0].release_s:g}" for f, c in chosen.items())
        print(f"{label:>17} | {p['segment_f1']:6.2f} {p['event_f1']:6.2f} {p['found']:>2}/{p['events']:<3} "
              f"{p['short_found']:>2}/{p['short_events']:<3} {p['background']['per_hour']:7.1f}", flush=True)
    print(f"{time.perf_counter() - began:.0f} s in all")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=str) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Detector settings for held-out event F1: each timing of ``scene_eval.TIMINGS`` (smoothing, release), with
per-class thresholds or one threshold for every class, picked on tuning soundscapes and scored on the
evaluation soundscapes of ``noisewatch evaluate-scenes``, with the held-out fold models that
``noisewatch train`` leaves in its output folder (``heldout-fold<N>``).

Everything is cross-fitted the way ``noisewatch train`` picks its settings (the same functions): a fold is
scored with thresholds (and, in the "picked" rows, the timing) picked on the *other* folds' tuning
soundscapes. The daemon runs once per soundscape; every row replays its detector on what it was fed
(``scene_eval.record``/``replay``: the same events as the daemon's, tests/test_scene_eval.py).

    python bench/scene_settings.py --train-dir build/train [--folds 1,2] [--require-contrast LABELS]
    python bench/scene_settings.py --train-dir build/train --false-weights 1,2,3,5,8
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DATA  # noqa: E402

from noisewatch.bundle import DetectorTiming, load_bundle  # noqa: E402
from noisewatch.config import Config, load_config  # noqa: E402
from noisewatch.train.scene_eval import (  # noqa: E402
    TIMINGS,
    FoldModels,
    FoldRun,
    Recording,
    ThresholdPicker,
    cross_fitted,
    held_out_path,
    pick_shared_threshold,
    pick_thresholds,
    record,
    replay,
    summarize,
    train_recipe,
    trial,
    tuning_recipe,
    tuning_sweeps,
)
from noisewatch.train.soundscapes import FoldScenes, Soundscape, fold_scenes, fold_sources  # noqa: E402

PICKERS: dict[str, ThresholdPicker] = {"per class": pick_thresholds, "shared": pick_shared_threshold}

Recorded = dict[str, list[tuple[Soundscape, Recording]]]
"""One fold's evaluation soundscapes by kind ("main", "background", "snr<dB>"), each with its recording."""


def recorded(scenes: FoldScenes, config: Config, models: FoldModels) -> Recorded:
    kinds = {"main": scenes.main, "background": scenes.background,
             **{f"snr{snr:g}": group for snr, group in scenes.sweep.items()}}
    return {kind: [(scene, record(scene.audio, config, *models[scenes.fold])) for scene in group]
            for kind, group in kinds.items()}


def fold_run(recordings: Recorded, timing: DetectorTiming, thresholds: dict[str, float]) -> FoldRun:
    """The fold's evaluation soundscapes with the events the detector reports with these settings."""
    def scored(kind: str) -> list[tuple[Soundscape, Any]]:
        return [(scene, replay(rec, trial(rec.settings, timing, thresholds))) for scene, rec in recordings[kind]]

    snrs = [float(kind[3:]) for kind in recordings if kind.startswith("snr")]
    return FoldRun(scored("main"), {snr: scored(f"snr{snr:g}") for snr in snrs}, scored("background"))


def with_contrast(config: Config, labels: str | None) -> Config:
    """``config`` with ``detector.require_contrast`` set from a comma-separated list (None: as it is)."""
    if labels is None:
        return config
    chosen = tuple(label for label in labels.split(",") if label)
    return config.model_copy(update={"detector": config.detector.model_copy(update={"require_contrast": chosen})})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-dir", required=True, type=Path)
    parser.add_argument("--folds", default="1,2")
    parser.add_argument("--require-contrast", metavar="LABELS",
                        help="detector.require_contrast, comma-separated ('' for none); default: the config's default")
    parser.add_argument("--false-weights", metavar="W,...",
                        help="instead of the table: per-class thresholds picked with false positives counted W times "
                             "(timing picked), one row per weight")
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args()
    folds = [int(f) for f in args.folds.split(",")]
    began = time.perf_counter()
    bundles = {fold: load_bundle(held_out_path(args.train_dir, fold)) for fold in folds}
    models: FoldModels = {fold: (bundle, bundle.open_model()) for fold, bundle in bundles.items()}
    sources = fold_sources(DATA / "UrbanSound8K", DATA / "ESC-50", folds)
    recipe = train_recipe(min(len(events) for events, _ in sources.values()))
    config, rate = with_contrast(load_config(None), args.require_contrast), bundles[folds[0]].features.sample_rate
    sweeps = tuning_sweeps(sources, tuning_recipe(recipe), config, models)
    recordings = {fold: recorded(fold_scenes(fold, events, beds, recipe, rate), config, models)
                  for fold, (events, beds) in sources.items()}
    print(f"tuning sweeps and evaluation runs: {time.perf_counter() - began:.0f} s", flush=True)
    results: dict[str, Any] = {}
    print(f"{'thresholds':>10} {'timing':>20} | {'seg F1':>6} {'evt F1':>6} {'found':>6} {'<2 s':>6} {'false/h':>7}")
    pickers = PICKERS if args.false_weights is None else {
        f"FP x {w}": functools.partial(pick_thresholds, false_weight=float(w)) for w in args.false_weights.split(",")}
    for picker_name, picker in pickers.items():
        rows = [] if args.false_weights else [
            (f"{t.smoothing_windows} / {t.release_s:g} s", {f: {t: s[t]} for f, s in sweeps.items()}) for t in TIMINGS]
        for timing_name, restricted in [*rows, ("picked", sweeps)]:
            chosen = cross_fitted(restricted, picker)
            report = summarize({fold: fold_run(recordings[fold], *chosen[fold]) for fold in folds})
            name = f"{picker_name}, {timing_name}"
            if timing_name == "picked":
                timing_name = "picked " + ", ".join(f"{c[0].smoothing_windows}/{c[0].release_s:g}"
                                                    for c in chosen.values())
            results[name] = {"chosen": {str(f): {"timing": vars(c[0]), "thresholds": c[1]} for f, c in chosen.items()},
                             **report}
            p = report["pooled"]
            print(f"{picker_name:>10} {timing_name:>20} | {p['segment_f1']:6.2f} {p['event_f1']:6.2f} "
                  f"{p['found']:>2}/{p['events']:<3} {p['short_found']:>2}/{p['short_events']:<3} "
                  f"{p['background']['per_hour']:7.1f}", flush=True)
    print(f"{time.perf_counter() - began:.0f} s in all")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())

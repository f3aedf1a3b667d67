"""Why events are missed: for every event of the evaluation soundscapes, how high its own label scores in
the windows that hold part of it, and whether the daemon reports it, with the held-out fold models that
``noisewatch train`` leaves in its output folder and the detector settings it picked for each fold
(cross-fitted, from its ``report.json``).

A miss with a high score is the detector's (thresholds, smoothing, the contrast rule, an onset placed more
than the collar away, or an event of the label already open); a miss whose label never scores is the
model's. Short events (< 2 s) and the rest are counted apart.

    python bench/short_events.py --train-dir build/train [--folds 1,2] [--list]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DATA  # noqa: E402

from noisewatch.bundle import DetectorTiming, load_bundle  # noqa: E402
from noisewatch.config import load_config  # noqa: E402
from noisewatch.train.report import REPORT_JSON  # noqa: E402
from noisewatch.train.scene_eval import (  # noqa: E402
    SHORT_EVENT_S,
    found,
    held_out_path,
    record,
    replay,
    train_recipe,
    trial,
)
from noisewatch.train.soundscapes import fold_scenes, fold_sources  # noqa: E402

SCORE_BANDS = (0.2, 0.5)
"""Best-score bands a miss is sorted into: below the first, between, above the second (and the threshold)."""


@dataclass(frozen=True)
class Outcome:
    """One reference event: its label and length, the best score of its label over the windows holding part
    of it, the threshold in force, whether the daemon found it, and what those windows were mostly called."""

    fold: int
    label: str
    length_s: float
    best: float
    threshold: float
    found: bool
    heard_as: str
    onset_error_s: float | None
    """Of the nearest reported event of its label that overlaps it, if any (found: within the onset collar)."""


def outcomes(train_dir: Path, folds: list[int]) -> list[Outcome]:
    """Every reference event of the folds' main evaluation soundscapes, through the daemon's own detector."""
    chosen = json.loads((train_dir / REPORT_JSON).read_text())["soundscapes"]
    sources = fold_sources(DATA / "UrbanSound8K", DATA / "ESC-50", folds)
    recipe = train_recipe(min(len(events) for events, _ in sources.values()))
    config = load_config(None)
    rows = []
    for fold, (events, beds) in sources.items():
        bundle = load_bundle(held_out_path(train_dir, fold))
        model, labels = bundle.open_model(), list(bundle.labels)
        timing = DetectorTiming(**chosen["timing"]["folds"][str(fold)])
        thresholds = chosen["thresholds"]["folds"][str(fold)]
        for scene in fold_scenes(fold, events, beds, recipe, bundle.features.sample_rate).main:
            recording = record(scene.audio, config, bundle, model)
            reported = replay(recording, trial(recording.settings, timing, thresholds))
            for onset, offset, label in scene.events:
                inside = [o.scores for o in recording.observations
                          if o.start_s < offset and o.end_s > onset and o.scores is not None]
                overlapping = [start - onset for start, end, name in reported
                               if name == label and start < offset and end > onset]
                rows.append(Outcome(fold, label, offset - onset, _best(inside, labels.index(label)),
                                    thresholds.get(label, bundle.threshold(label)),
                                    found((onset, offset, label), reported), _mostly(inside, labels),
                                    min(overlapping, key=abs) if overlapping else None))
    return rows


def _best(scores: list[np.ndarray], index: int) -> float:
    return max((float(row[index]) for row in scores), default=0.0)


def _mostly(scores: list[np.ndarray], labels: list[str]) -> str:
    tops = Counter(labels[int(np.argmax(row))] for row in scores)
    return tops.most_common(1)[0][0] if tops else "-"


def print_group(name: str, group: list[Outcome]) -> None:
    missed = [o for o in group if not o.found]
    low, high = SCORE_BANDS
    bands = (sum(o.best < low for o in missed), sum(low <= o.best < high for o in missed),
             sum(o.best >= high and o.best < o.threshold for o in missed), sum(o.best >= max(high, o.threshold) for o in missed))
    print(f"{name}: {len(group)} events, {len(group) - len(missed)} found; of the {len(missed)} missed, best score of "
          f"their label < {low}: {bands[0]}, {low}-{high}: {bands[1]}, >= {high} but under the threshold: {bands[2]}, "
          f">= {high} and the threshold: {bands[3]}")
    late = [o.onset_error_s for o in missed if o.onset_error_s is not None]
    if late:
        print(f"  {len(late)} missed ones overlap a reported event of their label that starts outside the onset "
              f"collar: {', '.join(f'{e:+.1f}' for e in sorted(late))} s")
    heard = Counter(o.heard_as for o in missed)
    print(f"  the missed ones' windows were mostly called: {', '.join(f'{k} {v}' for k, v in heard.most_common())}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-dir", required=True, type=Path)
    parser.add_argument("--folds", default="1,2")
    parser.add_argument("--list", action="store_true", help="one line per short event")
    args = parser.parse_args()
    rows = outcomes(args.train_dir, [int(f) for f in args.folds.split(",")])
    short = [o for o in rows if o.length_s < SHORT_EVENT_S]
    print_group(f"shorter than {SHORT_EVENT_S:g} s", short)
    print_group(f"{SHORT_EVENT_S:g} s or longer", [o for o in rows if o.length_s >= SHORT_EVENT_S])
    if args.list:
        for o in sorted(short, key=lambda o: (o.label, o.fold)):
            print(f"  fold {o.fold} {o.label:17s} {o.length_s:4.1f} s  best {o.best:.2f}  threshold {o.threshold:.2f}  "
                  f"{'found' if o.found else 'missed':6s} mostly heard as {o.heard_as}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

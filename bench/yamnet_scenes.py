"""YAMNet, the model Frigate's audio detection runs, on the soundscapes of ``noisewatch evaluate-scenes``.

Two detectors, scored by the same code and printed as the same table:

- ``frigate``: YAMNet run as Frigate runs it: non-overlapping 0.975 s windows of 16 kHz audio; a label is
  heard when the highest score of its AudioSet classes (mapping of ../shared/peers/yamnet/README.md) reaches
  the threshold; its event ends when it has not been heard for 2 windows. Frigate's default threshold 0.8
  and lower ones.
- ``embedding``: a logistic regression on YAMNet's 1024-value embeddings, trained per held-out fold on the
  other folds' clips (UrbanSound8K, ESC-50 as background) and the windows of the other folds' background-only
  soundscapes (as background: the beds the detector will hear), run as a sliding detector (0.4875 s hop,
  probabilities averaged over 2 windows): a label is heard when it is the top class and its probability
  reaches the threshold; the same 2-window end rule.

YAMNet is a yardstick here, never part of the product. Usage (about 10 minutes on 2 cores):

    python bench/yamnet_scenes.py [--folds 1,2] [--json OUT.json]
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import soxr

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DATA, REPO  # noqa: E402

from noisewatch.train.datasets import BACKGROUND, assign_folds, load_clip, read_esc50, read_urbansound  # noqa: E402
from noisewatch.train.scene_eval import Events, FoldRun, build_scenes, summarize, table  # noqa: E402
from noisewatch.train.soundscapes import Recipe, Soundscape  # noqa: E402

PEER = REPO.parent / "shared" / "peers" / "yamnet"
RATE = 16000
WINDOW = 15600
"""0.975 s: YAMNet's input."""
HOP = WINDOW // 2
"""Sliding detector's hop; every other window is Frigate's non-overlapping one."""
EMBEDDING = "global_average_pooling2d/Mean"
"""Named inside a scope: the tensor whose first name ends with this."""
END_AFTER = 2
"""Windows a label must go unheard before its event ends."""
FRIGATE_THRESHOLDS = (0.8, 0.5, 0.3, 0.2, 0.1)
EMBEDDING_THRESHOLDS = (0.5, 0.7, 0.9)
MAPPING = {
    "siren": ("Siren", "Ambulance (siren)", "Police car (siren)", "Fire engine, fire truck (siren)",
              "Civil defense siren"),
    "dog_bark": ("Dog", "Bark", "Yip", "Bow-wow"),
    "car_horn": ("Vehicle horn, car horn, honking", "Toot"),
    "jackhammer": ("Jackhammer",),
    "drilling": ("Drill",),
    "gun_shot": ("Gunshot, gunfire", "Machine gun", "Cap gun"),
    "engine_idling": ("Idling", "Engine", "Medium engine (mid frequency)", "Light engine (high frequency)"),
    "air_conditioner": ("Air conditioning", "Mechanical fan"),
    "children_playing": ("Children playing", "Child speech, kid speaking"),
}
MUSIC = range(132, 211)
"""The AudioSet Music subtree: street_music."""


class Yamnet:
    """The TFLite model: 521 scores and the 1024-value embedding of one window."""

    def __init__(self) -> None:
        from ai_edge_litert.interpreter import Interpreter

        self.interpreter = Interpreter(str(PEER / "yamnet.tflite"), experimental_preserve_all_tensors=True)
        self.interpreter.allocate_tensors()
        self.input = self.interpreter.get_input_details()[0]["index"]
        self.output = self.interpreter.get_output_details()[0]["index"]
        self.embedding = next(t["index"] for t in self.interpreter.get_tensor_details()
                              if t["name"].split(";")[0].endswith(EMBEDDING))  # names carry their scope

    def windows(self, audio16k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Scores (n, 521) and embeddings (n, 1024) of every window at :data:`HOP` (audio zero-padded to one)."""
        audio = np.pad(audio16k, (0, max(0, WINDOW - len(audio16k))))
        scores, embeddings = [], []
        for start in range(0, len(audio) - WINDOW + 1, HOP):
            self.interpreter.set_tensor(self.input, audio[start : start + WINDOW].astype(np.float32))
            self.interpreter.invoke()
            scores.append(self.interpreter.get_tensor(self.output).reshape(-1))
            embeddings.append(self.interpreter.get_tensor(self.embedding).reshape(-1))
        return np.array(scores), np.array(embeddings)


def label_columns() -> dict[str, list[int]]:
    """AudioSet class indices of each of the ten labels."""
    with (PEER / "yamnet_class_map.csv").open(newline="", encoding="utf-8") as handle:
        names = {row["display_name"]: int(row["index"]) for row in csv.DictReader(handle)}
    columns = {label: [names[n] for n in classes] for label, classes in MAPPING.items()}
    return {**columns, "street_music": list(MUSIC)}


def detect(label_scores: np.ndarray, labels: Sequence[str], threshold: float, hop_s: float,
           window_s: float, top_only: bool) -> Events:
    """Events from per-window label scores: heard at or over ``threshold`` (and the top label, if
    ``top_only``); an event ends after :data:`END_AFTER` windows unheard, at the end of its last heard window."""
    heard = label_scores >= threshold
    if top_only:
        heard &= label_scores == label_scores.max(axis=1, keepdims=True)
    events = []
    for column, label in enumerate(labels):
        start = last = None
        for index, on in enumerate([*heard[:, column], *[False] * END_AFTER]):
            if on:
                start, last = (index if start is None else start), index
            elif start is not None and last is not None and index - last >= END_AFTER:
                events.append((start * hop_s, last * hop_s + window_s, label))
                start = last = None
    return events


def soundscape_windows(yamnet: Yamnet, scenes: Sequence[Soundscape]) -> list[tuple[np.ndarray, np.ndarray]]:
    """YAMNet's scores and embeddings of every soundscape, resampled to 16 kHz."""
    return [yamnet.windows(soxr.resample(s.audio, s.sample_rate, RATE, quality="HQ")) for s in scenes]


def frigate_events(scores: np.ndarray, threshold: float) -> Events:
    """Frigate's detector: non-overlapping windows (every other window at :data:`HOP`)."""
    columns = label_columns()
    labels = list(columns)
    per_label = np.stack([scores[::2, columns[label]].max(axis=1) for label in labels], axis=1)
    return detect(per_label, labels, threshold, WINDOW / RATE, WINDOW / RATE, top_only=False)


def train_embedding_classifier(yamnet: Yamnet, fold: int, folds: Sequence[int], beds: Sequence[np.ndarray]) -> Any:
    """Logistic regression on window embeddings of every clip outside ``fold`` (ESC-50 as background) and on
    ``beds``, embeddings of background-only soundscapes outside ``fold``."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    clips = [c for c in read_urbansound(DATA / "UrbanSound8K") if c.fold in folds]
    clips += assign_folds(read_esc50(DATA / "ESC-50"), folds)
    xs, ys = [], []
    for clip in (c for c in clips if c.fold != fold):
        _, embeddings = yamnet.windows(load_clip(clip, RATE))
        xs.append(embeddings)
        ys += [clip.label] * len(embeddings)
    xs += beds
    ys += [BACKGROUND] * sum(len(bed) for bed in beds)
    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=0.1)).fit(np.concatenate(xs), ys)


def embedding_events(classifier: Any, embeddings: np.ndarray, threshold: float) -> Events:
    probabilities = classifier.predict_proba(embeddings)
    probabilities[1:] = (probabilities[1:] + probabilities[:-1]) / 2
    labels = [str(label) for label in classifier.classes_]
    events = detect(probabilities, labels, threshold, HOP / RATE, WINDOW / RATE, top_only=True)
    return [e for e in events if e[2] != BACKGROUND]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folds", default="1,2")
    parser.add_argument("--scenes", type=int, default=Recipe.scenes)
    parser.add_argument("--sweep-scenes", type=int, default=Recipe.sweep_scenes)
    parser.add_argument("--background-scenes", type=int, default=Recipe.background_scenes)
    parser.add_argument("--json", metavar="PATH", help="write every detector's report")
    args = parser.parse_args()
    folds = [int(f) for f in args.folds.split(",")]
    recipe = Recipe(scenes=args.scenes, sweep_scenes=args.sweep_scenes, background_scenes=args.background_scenes)
    began = time.perf_counter()
    scenes = build_scenes(DATA / "UrbanSound8K", DATA / "ESC-50", folds, recipe, 22050)
    yamnet = Yamnet()
    windows = {fold: {kind: soundscape_windows(yamnet, group) for kind, group in _kinds(s).items()}
               for fold, s in scenes.items()}
    classifiers = {fold: train_embedding_classifier(
        yamnet, fold, folds, [w[1] for other in folds if other != fold for w in windows[other]["background"]])
        for fold in folds}
    reports = {}
    runs = [(f"frigate@{t:g}", lambda fold, w, t=t: frigate_events(w[0], t)) for t in FRIGATE_THRESHOLDS]
    runs += [(f"embedding@{t:g}", lambda fold, w, t=t: embedding_events(classifiers[fold], w[1], t))
             for t in EMBEDDING_THRESHOLDS]
    for name, events_of in runs:
        fold_runs = {}
        for fold, s in scenes.items():
            scored = {kind: [(scene, events_of(fold, w)) for scene, w in zip(group, windows[fold][kind])]
                      for kind, group in _kinds(s).items()}
            fold_runs[fold] = FoldRun(scored["main"], {snr: scored[f"snr{snr:g}"] for snr in s.sweep},
                                      scored["background"])
        reports[name] = summarize(fold_runs)
        print(table(reports[name], f"YAMNet {name}, folds {args.folds}") + "\n")
    print(f"{time.perf_counter() - began:.0f} s in all")
    if args.json:
        Path(args.json).write_text(json.dumps(reports, indent=2) + "\n", encoding="utf-8")
    return 0


def _kinds(scenes: Any) -> dict[str, list[Soundscape]]:
    """A fold's soundscapes by kind: main, each SNR of the sweep, background."""
    return {"main": scenes.main, **{f"snr{snr:g}": group for snr, group in scenes.sweep.items()},
            "background": scenes.background}


if __name__ == "__main__":
    sys.exit(main())

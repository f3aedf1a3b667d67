"""``noisewatch train``: dataset -> features -> leave-one-fold-out evaluation -> final Keras MLP.

Steps: collect clips from the datasets given (UrbanSound8K folds define the evaluation folds;
ESC-50 and folder clips are spread over them by recording, quiet clips are synthesized), compute
features through :mod:`noisewatch.features` (cached), optionally add scene-mix windows
(:mod:`noisewatch.train.scenemix`), train and test the MLP and the RandomForest and KNN baselines
once per held-out fold (the MLP also on held-out scenes, :mod:`noisewatch.train.scenes`), pick
per-class thresholds on the held-out scores, then train the final model on all folds. Writes into ``--out``: ``model.keras``, ``training.json``
(everything ``noisewatch convert`` puts in the bundle), ``train_features.npz`` (for the
converter's parity check) and the report (``report.json``, ``report.md``, ``confusion.png``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import subprocess
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from noisewatch.bundle import DetectorTiming
from noisewatch.features import FeatureSettings
from noisewatch.train import datasets, metrics, report
from noisewatch.train.datasets import BACKGROUND, Clip
from noisewatch.train.featurize import Augment, feature_matrix
from noisewatch.train.scene_eval import held_out_report
from noisewatch.train.scenemix import SceneMix, scene_mix_matrix
from noisewatch.train.scenes import Scene, held_out_scenes, predict_scenes, scene_metrics
from noisewatch.train.scenewindows import scene_window_matrix
from noisewatch.train.settings import FEATURES_NPZ, MODEL_FILE, TRAINING_JSON, ModelSettings

log = logging.getLogger(__name__)

LICENCE = "CC BY-NC 3.0 (training data: UrbanSound8K, ESC-50); non-commercial use only"
HELDOUT_NPZ = "heldout_scores.npz"


@dataclass(frozen=True)
class Mixes:
    """Training-only rows (scene mixes, soundscape windows): never evaluated on."""

    x: np.ndarray
    y: np.ndarray
    folds: np.ndarray
    """Fold of the clip or soundscape each row came from, so held-out folds stay out of training."""
    weight: np.ndarray
    """Loss weight of each row relative to an original clip."""

    def plus(self, other: "Mixes") -> "Mixes":
        return Mixes(*(np.concatenate([mine, theirs]) for mine, theirs in
                       ((self.x, other.x), (self.y, other.y), (self.folds, other.folds), (self.weight, other.weight))))


@dataclass
class Data:
    """Clips with their labels, folds and feature matrices (plain and augmented copies, scene mixes)."""

    clips: list[Clip]
    labels: list[str]
    x: np.ndarray
    y: np.ndarray
    folds: np.ndarray
    augmented: list[np.ndarray] = field(default_factory=list)
    mixes: Mixes | None = None
    scenes: dict[int, list[Scene]] = field(default_factory=dict)
    """Held-out scenes of each fold, for the scene-level score."""


# --- data ---------------------------------------------------------------------------------------

def collect_clips(args: argparse.Namespace) -> list[Clip]:
    """All training clips; folds come from UrbanSound8K (or 1..5 without it)."""
    wanted = _parse_folds(args.folds)
    clips: list[Clip] = []
    if args.urbansound:
        clips += [c for c in datasets.read_urbansound(Path(args.urbansound)) if wanted is None or c.fold in wanted]
    folds = sorted({c.fold for c in clips}) or wanted or [1, 2, 3, 4, 5]
    others: list[Clip] = []
    if args.esc50:
        others += datasets.read_esc50(Path(args.esc50))
    for folder in args.folder:
        others += datasets.read_folder(Path(folder))
    if args.background:
        others += datasets.read_folder(Path(args.background), label=BACKGROUND)
    clips += datasets.assign_folds(others, folds)
    recordings = [c.path for c in clips if c.label == BACKGROUND and c.path is not None]
    clips += datasets.quiet_clips(args.quiet, folds, args.seed, recordings)
    if not clips or len({c.label for c in clips}) < 2:
        raise SystemExit("noisewatch train: need at least two labels of data (--urbansound, --esc50, --folder)")
    return clips


def _parse_folds(text: str | None) -> list[int] | None:
    return [int(part) for part in text.split(",")] if text else None


def build_data(clips: list[Clip], settings: FeatureSettings, model: ModelSettings, cache: Path, workers: int,
               soundscape_sources: tuple[Path, Path] | None = None) -> Data:
    """Feature matrices (cached) for every clip, every augmented copy and every speed-perturbed copy; scene
    mixes and soundscape windows (from UrbanSound8K and ESC-50 roots, ``soundscape_sources``) if asked for."""
    labels = datasets.label_order(clips)
    x = feature_matrix(clips, settings, cache_dir=cache, workers=workers)
    augmented = [
        feature_matrix(clips, settings, Augment(copy, model.seed), cache_dir=cache, workers=workers)
        for copy in range(model.augment_copies)
    ] + [feature_matrix(clips, settings, cache_dir=cache, workers=workers, speed=f) for f in model.speed_perturb]
    y = np.array([labels.index(c.label) for c in clips])
    data = Data(clips, labels, x, y, np.array([c.fold for c in clips]), augmented)
    data.scenes = {fold: held_out_scenes(clips, fold, settings) for fold in sorted(set(data.folds.tolist()))}
    if model.scene_mix:
        _add_scene_mixes(data, settings, model, cache)
    if model.scene_windows and soundscape_sources is not None:
        _add_scene_windows(data, settings, model, cache, *soundscape_sources)
    return data


def _add_scene_mixes(data: Data, settings: FeatureSettings, model: ModelSettings, cache: Path) -> None:
    """Scene-mix windows of every recorded clip (targets and background recordings alike: mixing
    background sounds into quiet too keeps the background false-alarm rate down); beds are the
    background recordings (ESC-50, ``--background``) of the clip's own fold."""
    events = [c for c in data.clips if c.path is not None]
    beds = [c for c in events if c.label == BACKGROUND]
    mix = SceneMix(copies=model.scene_mix, seed=model.seed)
    x, names, folds = scene_mix_matrix(events, beds, settings, mix, cache_dir=cache)
    _add_mixes(data, x, names, folds, model.scene_mix_weight)
    log.info("%d scene-mix windows (%d of them background)", len(x), names.count(BACKGROUND))


def _add_scene_windows(data: Data, settings: FeatureSettings, model: ModelSettings, cache: Path,
                       urbansound: Path, esc50: Path) -> None:
    """Windows of training soundscapes (:mod:`scenewindows`) of every fold, as mixes of that fold."""
    folds = sorted(set(data.folds.tolist()))
    x, names, fold_of = scene_window_matrix(urbansound, esc50, folds, model.scene_windows, model.seed, settings,
                                            cache_dir=cache)
    _add_mixes(data, x, names, fold_of, model.scene_window_weight)
    log.info("%d soundscape windows (%d of them background)", len(x), names.count(BACKGROUND))


def _add_mixes(data: Data, x: np.ndarray, names: list[str], folds: np.ndarray, weight: float) -> None:
    """Append training-only rows of the given folds with loss weight ``weight``."""
    y = np.array([data.labels.index(n) for n in names], dtype=int)
    added = Mixes(x, y, folds, np.full(len(y), weight))
    data.mixes = added if data.mixes is None else data.mixes.plus(added)


# --- models -------------------------------------------------------------------------------------

def build_mlp(train_x: np.ndarray, n_classes: int, model: ModelSettings) -> Any:
    """Normalization (adapted on ``train_x``, so the .tflite standardizes by itself) -> Dense stack -> softmax."""
    import keras

    normalize = keras.layers.Normalization(name="standardize")
    normalize.adapt(train_x)
    layers = [keras.Input(shape=(train_x.shape[1],), name="features"), normalize]
    regularizer = keras.regularizers.L2(model.l2) if model.l2 else None
    for units in model.hidden:
        layers += [
            keras.layers.Dense(units, activation="relu", kernel_regularizer=regularizer),
            keras.layers.Dropout(model.dropout),
        ]
    layers.append(keras.layers.Dense(n_classes, activation="softmax", name="scores"))
    mlp = keras.Sequential(layers)
    mlp.compile(
        optimizer=keras.optimizers.Adam(model.learning_rate),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=model.label_smoothing),
        metrics=["accuracy"],
    )
    return mlp


def fit_mlp(x: np.ndarray, y: np.ndarray, n_classes: int, model: ModelSettings, background: int,
            scale: np.ndarray | None = None) -> Any:
    """A trained MLP, or the softmax average of ``model.ensemble`` of them (seeded: reruns give the same model).

    ``scale`` is each row's loss weight relative to an original clip (NaN for original clips; mixes: their
    weight); all original if not given.
    """
    scale = np.full(len(y), np.nan) if scale is None else scale
    weights = sample_weights(y, scale, n_classes, model, background)
    members = [_fit_member(x, y, weights, n_classes, model, model.seed + i) for i in range(model.ensemble)]
    return members[0] if len(members) == 1 else average_members(members, x.shape[1])


def _fit_member(x: np.ndarray, y: np.ndarray, weights: np.ndarray, n_classes: int, model: ModelSettings,
                seed: int) -> Any:
    """One MLP trained from ``seed`` with per-row loss weights."""
    import keras

    keras.utils.set_random_seed(seed)
    mlp = build_mlp(x, n_classes, model)
    onehot = np.eye(n_classes, dtype=np.float32)[y]
    mlp.fit(x, onehot, sample_weight=weights, epochs=model.epochs, batch_size=model.batch_size, verbose=0,
            shuffle=True)
    return mlp


def sample_weights(y: np.ndarray, scale: np.ndarray, n_classes: int, model: ModelSettings,
                   background: int) -> np.ndarray:
    """Class weight of each row, from the original clips (``scale`` NaN) only: mixes must not dilute the
    background weight; times ``scale`` on mix rows."""
    original = np.isnan(scale)
    per_class = class_weights(y[original], n_classes, model, background)
    weights = np.array([per_class[int(label)] for label in y])
    return weights * np.where(original, 1.0, scale)


def average_members(members: list[Any], n_features: int) -> Any:
    """One Keras model whose output is the mean of the members' softmax scores (one .tflite)."""
    import keras

    inputs = keras.Input(shape=(n_features,), name="features")
    for index, member in enumerate(members):
        member.name = f"member_{index}"
    scores = keras.layers.Average(name="scores")([member(inputs) for member in members])
    return keras.Model(inputs, scores, name="ensemble")


def class_weights(y: np.ndarray, n_classes: int, model: ModelSettings, background: int) -> dict[int, float]:
    """Inverse class frequency (mean 1 over present classes) if enabled, background scaled by its factor."""
    counts = np.bincount(y, minlength=n_classes).astype(np.float64)
    present = counts > 0
    weights = np.where(present, counts.sum() / (present.sum() * np.maximum(counts, 1)), 0.0)
    if not model.class_weight:
        weights = present.astype(np.float64)
    weights[background] *= model.background_weight
    return {i: float(w) for i, w in enumerate(weights)}


def _training_set(data: Data, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows of ``mask``, their augmented copies and the mixes of their folds; and each row's loss scale
    (NaN: an original clip or its copy, else the mix's weight)."""
    xs = [data.x[mask], *(aug[mask] for aug in data.augmented)]
    ys = [np.tile(data.y[mask], len(xs))]
    scales = [np.full(len(ys[0]), np.nan)]
    if data.mixes is not None:
        same_folds = np.isin(data.mixes.folds, np.unique(data.folds[mask]))
        xs.append(data.mixes.x[same_folds])
        ys.append(data.mixes.y[same_folds])
        scales.append(data.mixes.weight[same_folds])
    return np.concatenate(xs), np.concatenate(ys), np.concatenate(scales)


def baseline_predictions(name: str, x: np.ndarray, y: np.ndarray, test_x: np.ndarray, seed: int) -> np.ndarray:
    """Predicted classes of the earlier project's baselines (standardized features)."""
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    estimator = {
        "random_forest": lambda: RandomForestClassifier(n_estimators=300, random_state=seed, n_jobs=-1),
        "knn": lambda: KNeighborsClassifier(n_neighbors=5),
    }[name]()
    return make_pipeline(StandardScaler(), estimator).fit(x, y).predict(test_x)


# --- evaluation ---------------------------------------------------------------------------------

def cross_validate(data: Data, model: ModelSettings, baselines: bool
                   ) -> tuple[dict[str, Any], np.ndarray, dict[str, Any], dict[int, tuple[Any, dict[str, float]]]]:
    """Leave-one-fold-out: per model, metrics per held-out fold and pooled; the MLP's held-out scores;
    the MLP's scene-level metrics per held-out fold and pooled, at argmax (``argmax``) and with the
    daemon's per-class thresholds (``thresholded``, picked on the other folds' clips); and per held-out fold
    that fold's MLP and thresholds (for the soundscape evaluation)."""
    folds = sorted(set(data.folds.tolist()))
    scores = np.zeros((len(data.y), len(data.labels)), dtype=np.float32)
    scored: dict[int, list[tuple[Scene, np.ndarray]]] = {}
    predicted: dict[str, np.ndarray] = {"mlp": np.zeros_like(data.y)}
    mlps: dict[int, Any] = {}
    if baselines:
        predicted |= {"random_forest": np.zeros_like(data.y), "knn": np.zeros_like(data.y)}
    for fold in folds:
        test = data.folds == fold
        train_x, train_y, scale = _training_set(data, ~test)
        log.info("fold %d: training on %d vectors, testing on %d clips", fold, len(train_x), test.sum())
        mlp = fit_mlp(train_x, train_y, len(data.labels), model, data.labels.index(BACKGROUND), scale)
        mlps[fold] = mlp
        scores[test] = mlp.predict(data.x[test], verbose=0)
        predicted["mlp"][test] = scores[test].argmax(axis=1)
        scored[fold] = predict_scenes(data.scenes.get(fold, []), partial(mlp.predict, verbose=0))
        for name in set(predicted) - {"mlp"}:
            predicted[name][test] = baseline_predictions(name, data.x[~test], data.y[~test], data.x[test], model.seed)
    chosen = cross_fitted_thresholds(data, scores, folds, metrics.threshold_grid(model.min_threshold))

    def as_daemon(fold: int, fold_scores: np.ndarray) -> np.ndarray:
        """The daemon's decision on a held-out fold's scores: top class if it passes its threshold."""
        return metrics.thresholded(fold_scores, chosen[fold], data.labels.index(BACKGROUND))

    predicted["mlp_thresholded"] = np.zeros_like(data.y)
    for fold in folds:
        predicted["mlp_thresholded"][data.folds == fold] = as_daemon(fold, scores[data.folds == fold])
    results = {name: _fold_metrics(data, pred, folds) for name, pred in predicted.items()}
    scenes = {
        "argmax": _scene_results(scored, data.labels, lambda fold, s: s.argmax(axis=1)),
        "thresholded": _scene_results(scored, data.labels, as_daemon),
    }
    held_out = {fold: (mlps[fold], dict(zip(data.labels, chosen[fold]))) for fold in folds}
    return results, scores, scenes, held_out


def cross_fitted_thresholds(data: Data, scores: np.ndarray, folds: list[int],
                            grid: np.ndarray) -> dict[int, list[float]]:
    """Per held-out fold, the per-class thresholds (in label order) picked on the other folds' clip scores."""
    chosen = {}
    for fold in folds:
        test = data.folds == fold
        best = metrics.best_thresholds(scores[~test], data.y[~test], data.labels, grid)
        chosen[fold] = [best[label] for label in data.labels]
    return chosen


def _scene_results(scored: dict[int, list[tuple[Scene, np.ndarray]]], labels: list[str],
                   decide: Callable[[int, np.ndarray], np.ndarray]) -> dict[str, Any]:
    """Scene metrics per held-out fold and pooled; each window's class is ``decide(fold, scores)``."""
    decided = {str(fold): [(scene, decide(fold, s)) for scene, s in pairs] for fold, pairs in scored.items()}
    decided["pooled"] = [pair for pairs in decided.values() for pair in pairs]
    return {name: scene_metrics(pairs, labels) for name, pairs in decided.items()}


def _fold_metrics(data: Data, predicted: np.ndarray, folds: list[int]) -> dict[str, Any]:
    """Metrics per held-out fold, pooled, and pooled accuracy per source dataset (quiet clips are easy)."""
    per_fold = {
        str(fold): metrics.summary(data.y[data.folds == fold], predicted[data.folds == fold], data.labels, BACKGROUND)
        for fold in folds
    }
    sources = np.array([clip.dataset for clip in data.clips])
    by_source = {name: metrics.accuracy(data.y[sources == name], predicted[sources == name])
                 for name in sorted(set(sources))}
    pooled = metrics.summary(data.y, predicted, data.labels, BACKGROUND)
    return {"folds": per_fold, "pooled": {**pooled, "accuracy_by_dataset": by_source}}


# --- shell --------------------------------------------------------------------------------------

def provenance(args: argparse.Namespace, data: Data) -> dict[str, Any]:
    """Where the model came from: datasets, folds, licence, command, commit and date."""
    counts: dict[str, int] = {}
    for clip in data.clips:
        counts[clip.dataset] = counts.get(clip.dataset, 0) + 1
    return {
        "datasets": counts,
        "folds": sorted(set(data.folds.tolist())),
        "licence": LICENCE,
        "command": " ".join(["noisewatch", *sys.argv[1:]]) if sys.argv else "",
        "git_commit": _git_commit(),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }


def _git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def settings_from_args(args: argparse.Namespace) -> tuple[FeatureSettings, ModelSettings]:
    """The command line's settings; ValueError names what does not fit together."""
    stats = tuple(args.stats.split(","))
    if args.peak_s is not None and "peak" not in stats:  # it would change nothing, and the bundle would not say
        raise ValueError(f"--peak-s sets the peak statistic's stretch, but --stats {args.stats} has no peak")
    peak = {} if args.peak_s is None else {"peak_s": args.peak_s}
    features = FeatureSettings(stats=stats, short_clip=args.short_clip, center=args.frames == "centred",
                               top_db=args.top_db, top_db_per=args.top_db_per, **peak)
    model = ModelSettings(
        hidden=tuple(int(units) for units in args.hidden.split(",")),
        dropout=args.dropout,
        epochs=args.epochs,
        class_weight=not args.no_class_weight,
        background_weight=args.background_weight,
        augment_copies=args.augment,
        speed_perturb=args.speed_perturb or (),
        min_threshold=args.min_threshold,
        l2=args.l2,
        label_smoothing=args.label_smoothing,
        ensemble=args.ensemble,
        scene_mix=args.scene_mix,
        scene_mix_weight=args.scene_mix_weight,
        scene_windows=args.scene_windows,
        scene_window_weight=args.scene_window_weight,
        seed=args.seed,
    )
    return features, model


def main(args: argparse.Namespace) -> int:
    """Handler of ``noisewatch train``."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    out = Path(args.out)
    try:
        features, model = settings_from_args(args)
    except ValueError as exc:
        print(f"noisewatch train: error: {exc}", file=sys.stderr)
        return 2
    sources = (Path(args.urbansound), Path(args.esc50)) if args.urbansound and args.esc50 else None
    data = build_data(collect_clips(args), features, model, out / "cache", args.workers, sources)
    log.info("%d clips, %d labels, folds %s", len(data.y), len(data.labels), sorted(set(data.folds.tolist())))
    results, scores, scenes, held_out = cross_validate(data, model, baselines=not args.no_baselines)
    thresholds = metrics.best_thresholds(scores, data.y, data.labels, metrics.threshold_grid(model.min_threshold))
    soundscapes = (held_out_report(Path(args.urbansound), Path(args.esc50), held_out, data.labels, features, out)
                   if args.urbansound and args.esc50 else None)
    timing = asdict(DetectorTiming())
    if soundscapes is not None:  # events on soundscapes are what a user lives with: their settings win
        thresholds |= soundscapes["thresholds"]["final"]
        timing = soundscapes["timing"]["final"]
    summary = {"models": results, "scenes": scenes["argmax"], "scenes_thresholded": scenes["thresholded"],
               "thresholds": thresholds, "timing": timing, "model_settings": asdict(model)}
    if soundscapes is not None:
        summary["soundscapes"] = soundscapes
    report.write_report(out, summary)
    np.savez_compressed(out / HELDOUT_NPZ, scores=scores, y=data.y, folds=data.folds)
    x, y, scale = _training_set(data, np.ones(len(data.y), bool))
    fit_mlp(x, y, len(data.labels), model, data.labels.index(BACKGROUND), scale).save(out / MODEL_FILE)
    np.savez_compressed(out / FEATURES_NPZ, x=data.x, y=data.y)
    training = {
        "labels": data.labels,
        "features": features.to_dict(),
        "thresholds": thresholds,
        "timing": timing,
        "metrics": {"evaluation": "leave-one-fold-out", **{name: _headline(block) for name, block in results.items()},
                    "scenes": scenes["argmax"], "scenes_thresholded": scenes["thresholded"],
                    **({"soundscapes": _soundscape_headline(soundscapes)} if soundscapes else {})},
        "provenance": provenance(args, data),
        "model": asdict(model),
    }
    (out / TRAINING_JSON).write_text(json.dumps(training, indent=2) + "\n", encoding="utf-8")
    pooled = results["mlp"]["pooled"]
    log.info("held-out accuracy %.3f, macro-F1 %.3f; wrote %s", pooled["accuracy"], pooled["macro_f1"], out)
    return 0


def _soundscape_headline(report: dict[str, Any]) -> dict[str, Any]:
    """The soundscape figures a bundle carries: per fold and pooled, without the per-class and sweep detail
    (pooled per-class F1 and the pooled sweep stay)."""
    keep = ("segment_f1", "segment_error_rate", "event_f1", "found", "events", "short_found", "short_events")
    folds = {name: {k: b[k] for k in keep} | {"false_events_per_hour": b["background"]["per_hour"]}
             for name, b in report["folds"].items()}
    pooled = report["pooled"]
    return {"evaluation": "leave-one-fold-out, scaper soundscapes, daemon decision path, sed_eval",
            "recipe": report["recipe"], "folds": folds,
            "pooled": {**{k: pooled[k] for k in keep}, "false_events_per_hour": pooled["background"]["per_hour"],
                       "per_class": pooled["per_class"], "snr_sweep": pooled["snr_sweep"]}}


def _headline(block: dict[str, Any]) -> dict[str, Any]:
    """Accuracy, macro-F1 and background FP rate, per held-out fold and pooled (+ accuracy per source dataset)."""
    keys = ("accuracy", "macro_f1", "background_false_positive_rate", "n", "accuracy_by_dataset")
    named = [*block["folds"].items(), ("pooled", block["pooled"])]
    return {name: {k: m[k] for k in keys if k in m} for name, m in named}

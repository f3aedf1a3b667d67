"""``noisewatch evaluate-scenes``: the daemon's events on soundscapes, scored the DCASE way with sed_eval.

Soundscapes (:mod:`noisewatch.train.soundscapes`) go through the daemon's own decision path, the
:class:`~noisewatch.daemon.pipeline.Pipeline` that ``noisewatch run`` drives (streaming features, model,
thresholds, smoothing, detector), and its ``event`` messages are scored against scaper's annotations:
segment-based F1 and error rate (1 s segments), event-based F1 (onset collar 1 s, offset within 50% of the
event's length), per class; recall of events shorter than 2 s; and false events per hour of
background-only soundscapes. Figures are given per held-out fold and pooled, and at fixed SNRs.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import sys
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from noisewatch.bundle import Bundle, BundleError, DetectorTiming, default_model_path, load_bundle, write_bundle
from noisewatch.config import Config, ConfigError, load_config
from noisewatch.daemon.detector import Detector, DetectorSettings, Observation, Transition
from noisewatch.daemon.messages import Event, Message
from noisewatch.daemon.pipeline import Pipeline
from noisewatch.features import FeatureSettings
from noisewatch.runtime import TFLiteModel
from noisewatch.train.datasets import URBANSOUND_CLASSES, Clip
from noisewatch.train.export import to_tflite
from noisewatch.train.metrics import count_f1
from noisewatch.train.soundscapes import FoldScenes, Recipe, Soundscape, fold_scenes, fold_sources

log = logging.getLogger(__name__)

SEGMENT_S = 1.0
ONSET_COLLAR_S = 1.0
OFFSET_SHARE = 0.5
SHORT_EVENT_S = 2.0
TRAIN_SCENES = 20
CLIPS_PER_SCENE = 20
TUNING_SEED = 17
"""Seed of the soundscapes thresholds are picked on (the evaluation set's is 13, training windows' 7)."""
TUNING_SCALE = 5
"""Tuning soundscapes with events per evaluation one: about 20 events of each class per fold."""
THRESHOLD_GRID = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)
"""Per-class thresholds tried on soundscapes."""
BLOCK = 8192
"""Samples per ``Pipeline.process`` call (any size gives the same windows: tests/test_stream.py)."""

Events = list[tuple[float, float, str]]
"""(onset s, offset s, label) of target-class events (``loud`` and the like are not scored)."""
Scored = list[tuple[Soundscape, Events]]
"""Soundscapes with the events the daemon reported on them."""


# --- the contact with the daemon ----------------------------------------------------------------

def _feed(pipeline: Pipeline, audio: np.ndarray) -> list[Message]:
    """Model-rate mono ``audio`` fed as ``noisewatch run`` feeds a replayed file: blocks, then end of stream."""
    messages = [m for start in range(0, len(audio), BLOCK) for m in pipeline.process(audio[start : start + BLOCK])]
    return messages + pipeline.finish()


def daemon_events(audio: np.ndarray, config: Config, bundle: Bundle, model: TFLiteModel) -> Events:
    """The target-class ``event`` messages the daemon sends for ``audio``, as (onset, offset, label), from
    their JSON form."""
    messages = [m.to_json() for m in _feed(Pipeline.from_config(config, bundle, model), audio) if isinstance(m, Event)]
    return [(e["offset_s"], e["offset_s"] + e["duration_s"], e["label"]) for e in messages
            if e["label"] in URBANSOUND_CLASSES]


class _RecordingDetector(Detector):
    """The pipeline's own detector, keeping every observation it is fed: its scores, times and loudness
    envelope, not its 4 s of audio (a sweep holds hundreds of soundscapes' recordings at once)."""

    def __init__(self, labels: tuple[str, ...], settings: DetectorSettings) -> None:
        super().__init__(labels, settings)
        self.fed: list[Observation] = []

    def update(self, obs: Observation) -> list[Transition]:
        transitions = super().update(obs)
        _ = obs.activity  # worked out now, while the audio is here (a cached property: kept) ...
        obs.samples = obs.samples[:0]  # ... so the audio can go: the pipeline is done with it
        self.fed.append(obs)
        return transitions


@dataclass(frozen=True)
class Recording:
    """What the daemon's detector was fed for one soundscape (windows, scores, activity), so other detector
    settings can be tried without computing features and scores again."""

    labels: tuple[str, ...]
    settings: DetectorSettings
    observations: tuple[Observation, ...]
    end_s: float


def record(audio: np.ndarray, config: Config, bundle: Bundle, model: TFLiteModel) -> Recording:
    """Run the daemon on ``audio``, keeping its detector's input."""
    pipeline = Pipeline.from_config(config, bundle, model)
    recorder = _RecordingDetector(pipeline.detector.labels, pipeline.detector.settings)
    pipeline.detector = recorder
    _feed(pipeline, audio)
    return Recording(recorder.labels, recorder.settings, tuple(recorder.fed), pipeline.position_s)


def replay(recording: Recording, settings: DetectorSettings) -> Events:
    """The target-class events a fresh :class:`Detector` with ``settings`` reports on the recording (what
    :func:`daemon_events` reports with them, to the millisecond its messages round to)."""
    detector = Detector(recording.labels, settings)
    transitions = [t for obs in recording.observations for t in detector.update(obs)]
    ended = [t.event for t in transitions + detector.close_all(recording.end_s) if t.kind == "ended"]
    return [(e.start_s, e.end_s, e.label) for e in ended if e.label in URBANSOUND_CLASSES]


# --- scoring ------------------------------------------------------------------------------------

def run_daemon(scenes: Sequence[Soundscape], config: Config, bundle: Bundle, model: TFLiteModel) -> Scored:
    """Each soundscape with the daemon's events on it."""
    return [(scene, daemon_events(scene.audio, config, bundle, model)) for scene in scenes]


def sed_scores(scored: Scored, labels: Sequence[str] = URBANSOUND_CLASSES) -> dict[str, Any]:
    """sed_eval's segment-based (F1, ER) and event-based (F1) figures, overall and per class."""
    import sed_eval

    segment = sed_eval.sound_event.SegmentBasedMetrics(list(labels), time_resolution=SEGMENT_S)
    event = sed_eval.sound_event.EventBasedMetrics(list(labels), t_collar=ONSET_COLLAR_S,
                                                   percentage_of_length=OFFSET_SHARE)

    for scene, events in scored:
        ref, est = _container(scene.name, scene.events), _container(scene.name, events)
        segment.evaluate(ref, est, evaluated_length_seconds=scene.duration_s)
        event.evaluate(ref, est)
    seg, evt = segment.results(), event.results()
    return {
        "segment_f1": _f1(seg["overall"]),
        "segment_error_rate": _number(seg["overall"]["error_rate"]["error_rate"]),
        "event_f1": _f1(evt["overall"]),
        "event_error_rate": _number(evt["overall"]["error_rate"]["error_rate"]),
        "per_class": {label: {"segment_f1": _f1(seg["class_wise"][label]), "event_f1": _f1(evt["class_wise"][label])}
                      for label in labels},
    }


def _container(name: str, events: Sequence[tuple[float, float, str]]) -> Any:
    """(onset, offset, label) events of one soundscape as sed_eval reads them."""
    import dcase_util

    return dcase_util.containers.MetaDataContainer(
        [{"filename": name, "event_label": label, "onset": on, "offset": off} for on, off, label in events])


def _f1(block: dict[str, Any]) -> float | None:
    """sed_eval's F1, 0 where nothing was reported (sed_eval's NaN), None for a class that was neither there
    nor reported."""
    count = block.get("count", {"Nref": 1})  # overall blocks have no count
    if count["Nref"] == 0 and count["Nsys"] == 0:
        return None
    return _number(block["f_measure"]["f_measure"]) or 0.0


def _number(value: float) -> float | None:
    """sed_eval's NaN as None, so the JSON stays JSON."""
    return None if np.isnan(value) else float(value)


def found(reference: tuple[float, float, str], events: Sequence[tuple[float, float, str]]) -> bool:
    """A reference event is found when an event of its label starts within the onset collar."""
    return any(label == reference[2] and abs(on - reference[0]) <= ONSET_COLLAR_S for on, _, label in events)


def event_counts(scored: Scored) -> dict[str, Any]:
    """Events found (onset rule) overall and of those shorter than :data:`SHORT_EVENT_S`; and onset/offset
    errors of the found ones (median, 90th percentile), to see late or long events."""
    hits, short, onsets, offsets = [], [], [], []
    for scene, events in scored:
        for ref in scene.events:
            hit = found(ref, events)
            hits.append(hit)
            if ref[1] - ref[0] < SHORT_EVENT_S:
                short.append(hit)
            if hit:
                match = min((e for e in events if e[2] == ref[2]), key=lambda e: abs(e[0] - ref[0]))
                onsets.append(match[0] - ref[0])
                offsets.append(match[1] - ref[1])
    return {"events": len(hits), "found": int(sum(hits)), "short_events": len(short),
            "short_found": int(sum(short)), "short_recall": float(np.mean(short)) if short else None,
            "onset_error_s": _spread(onsets), "offset_error_s": _spread(offsets)}


def _spread(values: list[float]) -> dict[str, float] | None:
    return {"median": float(np.median(values)), "p90": float(np.percentile(values, 90))} if values else None


def false_alarms(scored: Scored) -> dict[str, Any]:
    """Target-class events on background-only soundscapes, per hour of their audio, and by label."""
    hours = sum(scene.duration_s for scene, _ in scored) / 3600
    labels = Counter(label for _, events in scored for _, _, label in events)
    total = sum(labels.values())
    return {"hours": hours, "false_events": total, "per_hour": total / hours if hours else None,
            "by_label": dict(labels.most_common())}


# --- thresholds for events, not clips ------------------------------------------------------------

Counts = dict[str, np.ndarray]
"""Per label: event-based true positives, false positives (false events on background-only soundscapes
included) and misses."""


def class_counts(main: Scored, background: Scored, labels: Sequence[str] = URBANSOUND_CLASSES) -> Counts:
    """sed_eval's event-based counts per class on ``main``, plus each label's events on ``background`` as
    false positives: a threshold that cries wolf in the rain pays for it."""
    import sed_eval

    metric = sed_eval.sound_event.EventBasedMetrics(list(labels), t_collar=ONSET_COLLAR_S,
                                                    percentage_of_length=OFFSET_SHARE)
    for scene, events in main:
        metric.evaluate(_container(scene.name, scene.events), _container(scene.name, events))
    alarms = false_alarms(background)["by_label"]
    return {label: np.array([metric.class_wise[label]["Ntp"], metric.class_wise[label]["Nfp"] + alarms.get(label, 0),
                             metric.class_wise[label]["Nfn"]]) for label in labels}


TIMINGS = tuple(DetectorTiming(smoothing, release) for smoothing in (2, 1, 3) for release in (1.0, 0.5, 2.0))
"""Detector timings tried with the thresholds on soundscapes; the first is a bundle's default, which wins a tie."""

Sweep = dict[DetectorTiming, dict[float, Counts]]
"""Counts at every timing and threshold."""


def detector_sweep(scenes: FoldScenes, config: Config, bundle: Bundle, model: TFLiteModel,
                   timings: Sequence[DetectorTiming] = TIMINGS, grid: Sequence[float] = THRESHOLD_GRID) -> Sweep:
    """:func:`class_counts` of the daemon's detector at every timing, with every target class's threshold at
    each value of ``grid`` (it treats labels independently, so one run per value serves every class).
    Features and scores are computed once per soundscape (:func:`record`); each setting replays them."""
    main: dict[tuple[DetectorTiming, float], Scored] = defaultdict(list)
    background: dict[tuple[DetectorTiming, float], Scored] = defaultdict(list)
    for kind, into in ((scenes.main, main), (scenes.background, background)):
        for scene in kind:
            recording = record(scene.audio, config, bundle, model)
            for timing in timings:
                for threshold in grid:
                    tried = trial(recording.settings, timing, dict.fromkeys(URBANSOUND_CLASSES, threshold))
                    into[timing, threshold].append((scene, replay(recording, tried)))
    return {timing: {t: class_counts(main[timing, t], background[timing, t]) for t in grid} for timing in timings}


def trial(settings: DetectorSettings, timing: DetectorTiming, thresholds: dict[str, float]) -> DetectorSettings:
    """``settings`` with ``timing`` and these labels' ``thresholds``."""
    return replace(settings, smoothing_windows=timing.smoothing_windows, release_s=timing.release_s,
                   thresholds={**settings.thresholds, **thresholds})


def pick_thresholds(sweeps: Sequence[dict[float, Counts]], false_weight: float = 1.0) -> dict[str, float]:
    """Per class, the threshold with the best event F1 over the pooled counts of ``sweeps`` (the higher
    threshold on a tie: fewer false alarms for the same score), each false positive counted ``false_weight``
    times (bench/scene_settings.py: how far thresholds alone trade found events for fewer false ones)."""
    grid = sorted(sweeps[0])
    weights = np.array([1.0, false_weight, 1.0])  # hits, false positives, misses
    return {label: max(grid, key=lambda t: (
        count_f1(*weights * np.sum([sweep[t][label] for sweep in sweeps], axis=0)), t)) for label in URBANSOUND_CLASSES}


def pick_shared_threshold(sweeps: Sequence[dict[float, Counts]]) -> dict[str, float]:
    """One threshold for every class: the one with the best event F1 over every class's pooled counts (the
    higher on a tie). Fewer choices than :func:`pick_thresholds`, so less fitted to the tuning set."""
    shared = max(sorted(sweeps[0]), key=lambda t: (pooled_f1(sweeps, {label: t for label in URBANSOUND_CLASSES}), t))
    return dict.fromkeys(URBANSOUND_CLASSES, shared)


def pooled_f1(sweeps: Sequence[dict[float, Counts]], thresholds: dict[str, float]) -> float:
    """Event F1 over every class's counts at its threshold, pooled over ``sweeps``."""
    return count_f1(*np.sum([sweep[t][label] for sweep in sweeps for label, t in thresholds.items()], axis=0))


ThresholdPicker = Callable[[Sequence[dict[float, Counts]]], dict[str, float]]


def pick_detector(sweeps: Sequence[Sweep], picker: ThresholdPicker = pick_thresholds,
                  ) -> tuple[DetectorTiming, dict[str, float]]:
    """The timing, with the thresholds ``picker`` gives for it, whose event F1 over every class's pooled
    counts is best (the earlier of :data:`TIMINGS` on a tie)."""
    def f1(timing: DetectorTiming) -> float:
        at = [sweep[timing] for sweep in sweeps]
        return pooled_f1(at, picker(at))

    tried = sorted(sweeps[0], key=lambda timing: TIMINGS.index(timing) if timing in TIMINGS else len(TIMINGS))
    best = max(tried, key=f1)
    return best, picker([sweep[best] for sweep in sweeps])


# --- one report from every fold -----------------------------------------------------------------

@dataclass
class FoldRun:
    """The daemon's events on each kind of soundscape of one fold."""

    main: Scored
    sweep: dict[float, Scored]
    background: Scored


def run_fold(scenes: FoldScenes, config: Config, bundle: Bundle, model: TFLiteModel) -> FoldRun:
    return FoldRun(run_daemon(scenes.main, config, bundle, model),
                   {snr: run_daemon(s, config, bundle, model) for snr, s in scenes.sweep.items()},
                   run_daemon(scenes.background, config, bundle, model))


def summarize(runs: dict[int, FoldRun]) -> dict[str, Any]:
    """Figures per fold and pooled: sed_eval scores, event counts, false alarms, and the SNR sweep."""
    def block(fold_runs: list[FoldRun]) -> dict[str, Any]:
        main = [pair for run in fold_runs for pair in run.main]
        snrs = sorted({snr for run in fold_runs for snr in run.sweep})
        return {**sed_scores(main), **event_counts(main),
                "background": false_alarms([pair for run in fold_runs for pair in run.background]),
                "snr_sweep": {f"{snr:g}": {k: v for k, v in sed_scores(
                    [p for run in fold_runs for p in run.sweep.get(snr, [])]).items() if k != "per_class"}
                    for snr in snrs}}

    return {"folds": {str(fold): block([run]) for fold, run in sorted(runs.items())},
            "pooled": block(list(runs.values()))}


# --- output ---------------------------------------------------------------------------------------

def _f(value: float | None, width: int = 7) -> str:
    return f"{'-':>{width}}" if value is None else f"{value:{width}.2f}"


def table(report: dict[str, Any], title: str) -> str:
    """The figures as a plain-text table (per fold, pooled, per class, SNR sweep)."""
    rows = [title, f"{'':18} {'seg F1':>7} {'seg ER':>7} {'evt F1':>7} {'found':>7} {'<2 s':>7} {'false/h':>8}"]
    for name, b in [*((f"fold {f}", b) for f, b in report["folds"].items()), ("pooled", report["pooled"])]:
        per_hour = b["background"]["per_hour"]
        rows.append(f"{name:18} {_f(b['segment_f1'])} {_f(b['segment_error_rate'])} {_f(b['event_f1'])} "
                    f"{b['found']:>3}/{b['events']:<3} {b['short_found']:>3}/{b['short_events']:<3} "
                    f"{_f(per_hour, 8)}")
    pooled = report["pooled"]
    rows.append(f"{'per class (pooled)':18} {'seg F1':>7} {'evt F1':>7}")
    rows += [f"  {label:16} {_f(m['segment_f1'])} {_f(m['event_f1'])}" for label, m in pooled["per_class"].items()]
    rows.append("SNR sweep (pooled): " + ", ".join(
        f"{snr} dB seg{_f(m['segment_f1'], 5)} evt{_f(m['event_f1'], 5)}" for snr, m in pooled["snr_sweep"].items()))
    return "\n".join(rows)


def plot(report: dict[str, Any], path: Path, title: str) -> None:
    """PNG: pooled F1 against SNR, and per-class bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pooled = report["pooled"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5), gridspec_kw={"width_ratios": [1, 2]})
    snrs = [float(s) for s in pooled["snr_sweep"]]
    for key, name in (("segment_f1", "segment F1 (1 s)"), ("event_f1", "event F1 (1 s collar)")):
        left.plot(snrs, [m[key] or 0.0 for m in pooled["snr_sweep"].values()], marker="o", label=name)
    left.set(xlabel="event SNR over ambience (dB)", ylabel="F1", ylim=(0, 1), title="F1 against SNR")
    left.legend()
    labels = list(pooled["per_class"])
    at = np.arange(len(labels))
    for shift, key, name in ((-0.2, "segment_f1", "segment F1"), (0.2, "event_f1", "event F1")):
        right.bar(at + shift, [pooled["per_class"][label][key] or 0.0 for label in labels], 0.4, label=name)
    right.set_xticks(at, labels, rotation=30, ha="right")
    right.set(ylim=(0, 1), title="per class (SNR 6-24 dB)")
    right.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# --- command ------------------------------------------------------------------------------------

def build_scenes(dataset: Path, ambience: Path, folds: Sequence[int], recipe: Recipe,
                 sample_rate: int) -> dict[int, FoldScenes]:
    """Every fold's soundscapes (about 0.3 s of scaper per soundscape)."""
    sources = fold_sources(dataset, ambience, folds)
    return {fold: fold_scenes(fold, events, beds, recipe, sample_rate) for fold, (events, beds) in sources.items()}


def evaluate(scenes: dict[int, FoldScenes],
             run_with: Callable[[int], tuple[Config, Bundle, TFLiteModel]]) -> dict[str, Any]:
    """The report of every fold, each fold run with the config and bundle ``run_with(fold)`` gives."""
    return summarize({fold: run_fold(s, *run_with(fold)) for fold, s in scenes.items()})


def train_recipe(fold_clips: int) -> Recipe:
    """``noisewatch train``'s set: :data:`TRAIN_SCENES` soundscapes per fold, fewer for a small dataset (one
    per :data:`CLIPS_PER_SCENE` clips of its smallest fold), so a toy dataset is not drawn over and over."""
    scenes = min(TRAIN_SCENES, fold_clips // CLIPS_PER_SCENE)
    return Recipe(scenes=scenes, sweep_scenes=scenes // 2, background_scenes=2 * scenes)


def held_out_path(out: Path, fold: int) -> Path:
    """Where ``noisewatch train`` keeps the bundle of the model trained without ``fold``."""
    return out / f"heldout-fold{fold}"


def held_out_report(urbansound: Path, esc50: Path, held_out: dict[int, tuple[Any, dict[str, float]]],
                    labels: list[str], features: FeatureSettings, out: Path) -> dict[str, Any] | None:
    """Leave-one-fold-out soundscape figures of ``noisewatch train``, and the detector's settings for events.

    Each fold's held-out Keras MLP (written as a float32 bundle ``out/heldout-fold<N>``, kept so
    ``evaluate-scenes --model ... --folds N`` can try detector settings) runs through the daemon on that fold's
    tuning soundscapes (seed :data:`TUNING_SEED`), its detector at every timing of :data:`TIMINGS` and threshold
    of :data:`THRESHOLD_GRID`. A fold is then scored on its evaluation soundscapes with the timing and per-class
    thresholds that give the best event F1 on the *other* folds' tuning runs (cross-fitted); the final model's
    are picked on every fold's. None, with a warning, where scaper is missing or a fold has no ambience."""
    if importlib.util.find_spec("scaper") is None:
        log.warning("soundscape evaluation skipped: scaper is not installed (scripts/bootstrap.sh --test)")
        return None
    sources = fold_sources(urbansound, esc50, sorted(held_out))
    recipe = train_recipe(min(len(events) for events, _ in sources.values()))
    if recipe.scenes == 0 or any(not beds for _, beds in sources.values()):
        log.warning("soundscape evaluation skipped: a fold has too few clips or no ambience recordings")
        return None
    config, rate = load_config(None), features.sample_rate
    tuning = tuning_recipe(recipe)

    bundles = {}
    for fold, (mlp, thresholds) in held_out.items():
        bundle = write_bundle(held_out_path(out, fold), "heldout", to_tflite(mlp, "float32"),
                              version=f"fold{fold}", labels=labels, features=features, thresholds=thresholds)
        bundles[fold] = bundle, bundle.open_model()
    sweeps = tuning_sweeps(sources, tuning, config, bundles)
    chosen, final = cross_fitted(sweeps), pick_detector(list(sweeps.values()))
    scenes = {fold: fold_scenes(fold, events, beds, recipe, rate) for fold, (events, beds) in sources.items()}
    report = evaluate(scenes, tuned(config, bundles, chosen))
    return {"recipe": asdict(recipe), "tuning_recipe": asdict(tuning),
            "timing": {"folds": {str(fold): asdict(c[0]) for fold, c in chosen.items()}, "final": asdict(final[0])},
            "thresholds": {"folds": {str(fold): c[1] for fold, c in chosen.items()}, "final": final[1]}, **report}


def tuning_recipe(recipe: Recipe) -> Recipe:
    """The tuning set beside an evaluation ``recipe``: :data:`TUNING_SCALE` times its soundscapes with events,
    the same number of background-only ones (so false alarms weigh less than in the evaluation), another seed."""
    return replace(recipe, scenes=TUNING_SCALE * recipe.scenes, sweep_scenes=0, seed=TUNING_SEED)


FoldModels = dict[int, tuple[Bundle, TFLiteModel]]
"""Each fold's held-out model (trained without that fold)."""


def tuning_sweeps(sources: dict[int, tuple[list[Clip], list[Clip]]], tuning: Recipe, config: Config,
                  bundles: FoldModels) -> dict[int, Sweep]:
    """Each fold's :func:`detector_sweep` on its tuning soundscapes, with that fold's held-out model."""
    return {fold: detector_sweep(fold_scenes(fold, events, beds, tuning, bundles[fold][0].features.sample_rate),
                                 config, *bundles[fold])
            for fold, (events, beds) in sources.items()}


def cross_fitted(sweeps: dict[int, Sweep], picker: ThresholdPicker = pick_thresholds,
                 ) -> dict[int, tuple[DetectorTiming, dict[str, float]]]:
    """Per fold, the timing and thresholds picked on the *other* folds' sweeps (its own, with one fold)."""
    return {fold: pick_detector([sweep for other, sweep in sweeps.items() if other != fold] or [sweeps[fold]],
                                picker)
            for fold in sweeps}


def tuned(config: Config, bundles: FoldModels,
          chosen: dict[int, tuple[DetectorTiming, dict[str, float]]]) -> Callable[[int], tuple[Config, Bundle, TFLiteModel]]:
    """For :func:`evaluate`: each fold's model with the timing and thresholds chosen for it (the config's own
    timing, if it sets one, is dropped so the bundle's applies)."""
    detector = config.detector.model_copy(update={"smoothing_windows": None, "release_s": None})
    own = config.model_copy(update={"detector": detector})

    def run_with(fold: int) -> tuple[Config, Bundle, TFLiteModel]:
        (bundle, model), (timing, thresholds) = bundles[fold], chosen[fold]
        return own, replace(bundle, thresholds={**bundle.thresholds, **thresholds}, timing=timing), model

    return run_with


def main(args: argparse.Namespace) -> int:
    """Handler of ``noisewatch evaluate-scenes``."""
    logging.basicConfig(level=logging.WARNING)
    try:
        config = load_config(args.config)
        bundle = load_bundle(args.model or config.model.path or default_model_path())
        model = bundle.open_model(config.model.runtime_choice, config.model.num_threads)
    except (ConfigError, BundleError) as exc:
        print(f"noisewatch evaluate-scenes: {exc}", file=sys.stderr)
        return 1
    recipe = Recipe(scenes=args.scenes, sweep_scenes=args.sweep_scenes, background_scenes=args.background_scenes,
                    seed=args.seed)
    folds = [int(f) for f in args.folds.split(",")]
    try:
        scenes = build_scenes(Path(args.dataset), Path(args.ambience), folds, recipe, bundle.features.sample_rate)
    except FileNotFoundError as exc:
        print(f"noisewatch evaluate-scenes: {exc}", file=sys.stderr)
        return 1
    report = {"model": bundle.ident, "recipe": asdict(recipe),
              **evaluate(scenes, lambda fold: (config, bundle, model))}
    if args.png:
        plot(report, Path(args.png), f"{bundle.ident} on scaper soundscapes, folds {args.folds}")
    print(json.dumps(report, indent=2) if args.json else table(report, f"{bundle.ident}, folds {args.folds}"))
    return 0

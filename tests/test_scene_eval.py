"""evaluate-scenes: sed_eval's figures on a hand-made annotation, and that the figures come from the daemon's
own detector (a detector setting changes them) on real scaper soundscapes."""
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from noisewatch.bundle import DetectorTiming, default_model_path, load_bundle
from noisewatch.config import Config
from noisewatch.daemon.messages import Event
from noisewatch.daemon.pipeline import Pipeline
from noisewatch.train.datasets import URBANSOUND_CLASSES
from noisewatch.train.scene_eval import (
    build_scenes,
    daemon_events,
    evaluate,
    event_counts,
    false_alarms,
    record,
    replay,
    sed_scores,
    trial,
)
from noisewatch.train.scenewindows import training_recipe
from noisewatch.train.soundscapes import Recipe, Soundscape

RATE = 22050


def _scene(name: str, events: tuple[tuple[float, float, str], ...], seconds: float = 10.0) -> Soundscape:
    return Soundscape(name, np.zeros(int(seconds * RATE), np.float32), events, RATE)


HAND_MADE = [(
    _scene("a", ((1.0, 3.0, "dog_bark"), (5.0, 8.0, "siren"))),
    [(1.5, 3.5, "dog_bark"),   # onset 0.5 s late, offset 0.5 s late: a hit
     (7.0, 8.0, "siren"),      # onset 2 s late: a miss and a false event
     (9.0, 9.5, "car_horn")],  # nothing there
)]


def test_event_f1_on_a_hand_made_annotation():
    # 1 hit, 2 false, 1 missed: precision 1/3, recall 1/2, F1 0.4
    assert sed_scores(HAND_MADE)["event_f1"] == pytest.approx(0.4)


def test_segment_f1_and_error_rate_on_a_hand_made_annotation():
    # 1 s segments: hits dog 1,2 and siren 7; false dog 3, car_horn 9; missed siren 5,6 -> F1 6/10;
    # ER = (2 deletions + 2 insertions) / 5 active reference segments
    scores = sed_scores(HAND_MADE)
    assert scores["segment_f1"] == pytest.approx(0.6)
    assert scores["segment_error_rate"] == pytest.approx(0.8)
    assert scores["per_class"]["dog_bark"]["segment_f1"] == pytest.approx(0.8)
    assert scores["per_class"]["gun_shot"]["segment_f1"] is None  # neither reference nor estimate


def test_event_counts_short_events_and_timing():
    counts = event_counts(HAND_MADE)
    assert (counts["events"], counts["found"], counts["short_events"], counts["short_found"]) == (2, 1, 0, 0)
    assert counts["onset_error_s"]["median"] == pytest.approx(0.5)


def test_false_events_per_hour_of_background():
    scored = [(_scene("bg", (), seconds=1800.0), [(3.0, 4.0, "siren")])]
    alarms = false_alarms(scored)
    assert alarms["per_hour"] == pytest.approx(2.0) and alarms["by_label"] == {"siren": 1}


@pytest.fixture(scope="module")
def scenes(shared_data: Path):
    bundle = load_bundle(default_model_path())
    recipe = Recipe(scenes=3, sweep_scenes=0, background_scenes=1, seed=5)  # no SNR sweep: no test reads it
    built = build_scenes(shared_data / "UrbanSound8K", shared_data / "ESC-50", [1], recipe,
                         bundle.features.sample_rate)
    return built, bundle, bundle.open_model()


@pytest.mark.shared_data
def test_soundscapes_are_the_same_on_every_run(scenes, shared_data: Path):
    built, bundle, _ = scenes
    again = build_scenes(shared_data / "UrbanSound8K", shared_data / "ESC-50", [1],
                         Recipe(scenes=1, sweep_scenes=0, background_scenes=0, seed=5), bundle.features.sample_rate)
    first = built[1].main[0]
    assert again[1].main[0].events == first.events and len(first.events) >= 1
    np.testing.assert_array_equal(again[1].main[0].audio, first.audio)


@pytest.mark.shared_data
def test_training_soundscapes_of_any_seed_are_made(shared_data: Path):
    """`noisewatch train --seed 5` gives soundscape seeds over 2**32, which scaper's RandomState refused."""
    recipe = replace(training_recipe(1, 5), background_scenes=0)
    assert recipe.seed * 1_000_000 >= 2**32
    built = build_scenes(shared_data / "UrbanSound8K", shared_data / "ESC-50", [1], recipe, 22050)
    assert len(built[1].main) == 1 and built[1].main[0].events


@pytest.mark.shared_data
def test_the_score_is_the_daemons_detector_at_work(scenes):
    built, bundle, model = scenes
    def score(config: Config) -> dict:
        return evaluate(built, lambda fold: (config, bundle, model))["pooled"]

    default = score(Config())
    deaf = score(Config.model_validate({"detector": {"thresholds": {label: 1.0 for label in bundle.labels}}}))
    # events must last 4.5 s before they are reported: longer than any of these soundscapes' events (<= 4 s clips)
    patient = score(Config.model_validate({"detector": {"min_duration_s": 4.5}}))
    assert default["found"] > 0 and default["segment_f1"] > 0
    assert deaf["found"] == 0 and not deaf["segment_f1"]
    assert patient["found"] < default["found"]


@pytest.fixture(scope="module")
def recordings(scenes):
    """What the sweep records of each soundscape of fold 1, once for every setting replayed on it."""
    built, bundle, model = scenes
    return [(scene, record(scene.audio, Config(), bundle, model)) for scene in built[1].main + built[1].background]


@pytest.mark.shared_data
@pytest.mark.parametrize("timing,threshold", [(DetectorTiming(2, 1.0), 0.7), (DetectorTiming(1, 2.0), 0.5),
                                                    (DetectorTiming(3, 0.5), 0.3)])
def test_a_replayed_recording_gives_the_daemons_events(scenes, recordings, timing, threshold):
    """The threshold sweep replays the daemon's detector on what it was fed once: it must report what the
    daemon itself reports with those settings (to the millisecond its messages round to)."""
    _, bundle, model = scenes
    tried = replace(bundle, thresholds={**bundle.thresholds, **dict.fromkeys(URBANSOUND_CLASSES, threshold)},
                    timing=timing)
    reported = 0
    for scene, recording in recordings:
        replayed = replay(recording, trial(recording.settings, timing, dict.fromkeys(URBANSOUND_CLASSES, threshold)))
        daemon = daemon_events(scene.audio, Config(), tried, model)
        assert [label for *_, label in replayed] == [label for *_, label in daemon]
        np.testing.assert_allclose([span for *span, _ in replayed], [span for *span, _ in daemon], atol=1.5e-3)
        reported += len(daemon)
    assert reported > 0


@pytest.mark.shared_data
def test_only_target_class_events_are_scored(scenes):
    built, bundle, model = scenes
    config = Config.model_validate({"loudness": {"threshold_dbfs": -60.0, "min_duration_s": 1.0}})
    scene = built[1].main[0]
    pipeline = Pipeline.from_config(config, bundle, model)
    sent = [m for m in pipeline.process(scene.audio) + pipeline.finish() if isinstance(m, Event)]
    assert any(m.label == "loud" for m in sent)  # the daemon reports the loud stretch ...
    scored = daemon_events(scene.audio, config, bundle, model)
    assert [label for *_, label in scored] == [m.label for m in sent if m.label in URBANSOUND_CLASSES]  # ... unscored

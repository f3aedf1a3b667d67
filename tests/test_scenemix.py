"""Scene-mix augmentation (label rule, placement, determinism, fold isolation, loss weights) and the
held-out scene score; no TensorFlow, no data files."""
import numpy as np

from noisewatch.features import FeatureSettings
from noisewatch.train.datasets import BACKGROUND, LABELS, Clip
from noisewatch.train.pipeline import Data, Mixes, ModelSettings, _training_set, class_weights, sample_weights
from noisewatch.train.scenemix import SceneMix, mix_label, place, scene_mix_window
from noisewatch.train.scenes import Scene, _windowed, scene_metrics

RATE = 22050
SETTINGS = FeatureSettings(stats=("mean", "std"))


def _tone(seconds: float) -> np.ndarray:
    return np.sin(np.arange(int(seconds * RATE)) * 0.1)


def test_place_clips_an_event_that_starts_before_the_window():
    mixed, inside = place(np.zeros(100), np.ones(30), -10)
    assert len(inside) == 20 and mixed[:20].sum() == 20 and mixed[20:].sum() == 0


def test_place_clips_an_event_that_runs_past_the_window():
    mixed, inside = place(np.zeros(100), np.ones(30), 90)
    assert len(inside) == 10 and mixed[90:].sum() == 10


def test_label_is_the_event_when_enough_of_it_is_inside():
    event = _tone(3.0)
    _, inside = place(np.zeros(SETTINGS.window_samples), event, -int(1.0 * RATE))
    assert mix_label(inside, event, "siren", SceneMix(), RATE) == "siren"


def test_label_is_background_for_the_tail_of_an_event():
    event = _tone(3.0)
    _, inside = place(np.zeros(SETTINGS.window_samples), event, -int(2.5 * RATE))
    assert mix_label(inside, event, "siren", SceneMix(), RATE) == BACKGROUND


def test_a_short_event_fully_inside_keeps_its_label():
    event = _tone(0.3)
    _, inside = place(np.zeros(SETTINGS.window_samples), event, RATE)
    assert mix_label(inside, event, "gun_shot", SceneMix(), RATE) == "gun_shot"


def test_window_is_deterministic_and_one_window_long():
    clip = np.random.default_rng(1).standard_normal(3 * RATE) * 0.1
    draws = [scene_mix_window(clip, "dog_bark", None, np.random.default_rng(7), SceneMix(), SETTINGS) for _ in range(2)]
    (first, label), (second, _) = draws
    assert first.shape == (SETTINGS.window_samples,) and first.dtype == np.float32
    assert np.array_equal(first, second) and label in ("dog_bark", BACKGROUND)
    assert np.max(np.abs(first)) <= 1.0


def _data() -> Data:
    """Four clips in folds 1, 1, 2, 2 and three scene mixes from folds 1, 2, 2."""
    clips = [Clip(f"c{i}", label, fold, f"c{i}", "test") for i, (label, fold) in
             enumerate([("siren", 1), (BACKGROUND, 1), ("siren", 2), (BACKGROUND, 2)])]
    labels = list(LABELS)
    y = np.array([labels.index(c.label) for c in clips])
    return Data(clips, labels, np.arange(4.0)[:, None], y, np.array([1, 1, 2, 2]),
                mixes=Mixes(np.array([[10.0], [20.0], [21.0]]), y[[0, 2, 3]], np.array([1, 2, 2]),
                            np.array([0.25, 0.25, 0.5])))


def test_training_set_takes_mixes_only_from_the_training_folds():
    data = _data()
    x, y, scale = _training_set(data, data.folds == 1)
    assert x[:, 0].tolist() == [0.0, 1.0, 10.0] and np.isnan(scale[:2]).all() and scale[2] == 0.25
    assert y.tolist() == [*data.y[:2], data.y[0]]
    assert len(_training_set(data, np.ones(4, bool))[0]) == 7


def test_mixes_are_down_weighted_and_do_not_change_the_class_weights():
    data = _data()
    x, y, scale = _training_set(data, np.ones(4, bool))
    model = ModelSettings(scene_mix=1, background_weight=3.0)
    background = data.labels.index(BACKGROUND)
    weights = sample_weights(y, scale, len(data.labels), model, background)
    originals = class_weights(data.y, len(data.labels), model, background)
    assert weights[:4].tolist() == [originals[int(c)] for c in data.y]
    assert weights[4:].tolist() == [w * originals[int(c)] for w, c in zip([0.25, 0.25, 0.5], y[4:])]


def test_scene_metrics_need_two_consecutive_windows_and_count_quiet_alarms():
    labels = list(LABELS)
    siren, dog, quiet = labels.index("siren"), labels.index("dog_bark"), labels.index(BACKGROUND)
    # windows of 4 samples every 2 samples; a siren at samples 10-14 (windows 4-6), a dog bark at 30-32 (14-15)
    scene = Scene(np.zeros((20, 1)), np.arange(0, 40, 2), 4, ((10, 14, "siren"), (30, 32, "dog_bark")))
    top = np.full(20, quiet)
    top[[4, 5]] = siren  # two consecutive siren windows: found
    top[14] = dog  # one window only: missed
    top[0] = siren  # a window overlapping no event: a quiet false alarm
    result = scene_metrics([(scene, top)], labels)
    assert result["recall_per_class"] == {"dog_bark": 0.0, "siren": 1.0}
    assert result["event_recall"] == 0.5 and result["n_events"] == 2
    assert result["quiet_false_alarm_windows"] == 1 and result["n_quiet_windows"] == 20 - 5
    assert result["quiet_false_alarms_per_class"] == {"siren": 1}


def test_thresholds_for_a_fold_come_from_the_other_fold_and_decide_its_scene_windows():
    from noisewatch.train import metrics
    from noisewatch.train.pipeline import _scene_results, cross_fitted_thresholds

    labels = ["siren", BACKGROUND]
    # fold 1's sirens score 0.7, fold 2's 0.9; every background clip scores its siren at 0.65 (fold 1) or 0.85
    # (fold 2). The best-F1 siren threshold is 0.70 on fold 1's clips and 0.90 on fold 2's.
    siren = np.array([0.7, 0.7, 0.65, 0.65, 0.9, 0.9, 0.85, 0.85])
    scores = np.stack([siren, 1 - siren], axis=1)
    y = np.array([0, 0, 1, 1, 0, 0, 1, 1])
    folds = np.array([1, 1, 1, 1, 2, 2, 2, 2])
    data = Data([], labels, np.zeros((8, 1)), y, folds)
    chosen = cross_fitted_thresholds(data, scores, [1, 2], metrics.threshold_grid(0.6))
    assert chosen == {1: [0.9, 0.6], 2: [0.7, 0.6]}  # siren threshold of fold 1 picked on fold 2, and back

    # the same scene on each fold: a siren in windows 0-1 scoring 0.8, a quiet window 3 scoring siren 0.75
    scene = Scene(np.zeros((4, 1)), np.arange(0, 8, 2), 4, ((0, 4, "siren"),))
    window_scores = np.array([[0.8, 0.2], [0.8, 0.2], [0.3, 0.7], [0.75, 0.25]])
    scored = {1: [(scene, window_scores)], 2: [(scene, window_scores)]}
    result = _scene_results(scored, labels, lambda fold, s: metrics.thresholded(s, chosen[fold], 1))
    assert result["1"]["event_recall"] == 0.0 and result["2"]["event_recall"] == 1.0  # 0.8 < 0.9, 0.8 >= 0.7
    assert result["1"]["quiet_false_alarm_windows"] == 0 and result["2"]["quiet_false_alarm_windows"] == 1
    assert result["pooled"]["n_events"] == 2 and result["pooled"]["event_recall"] == 0.5


def test_held_out_scenes_are_windowed_as_the_daemon_hears_them_offset_removed() -> None:
    """A held-out scene riding on an offset gives the windows of the scene itself: the daemon removes it."""
    settings = FeatureSettings(stats=("mean", "std"))
    rate = settings.sample_rate
    audio = (0.05 * np.random.default_rng(3).standard_normal(10 * rate)).astype(np.float32)
    plain = _windowed(audio, (), settings)
    offset = _windowed(audio + np.float32(0.2), (), settings)
    assert len(plain.x) == len(offset.x) > 3
    np.testing.assert_allclose(offset.x, plain.x, rtol=0, atol=1e-5 * float(np.abs(plain.x).max()))

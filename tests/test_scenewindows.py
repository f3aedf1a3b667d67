"""Training windows from soundscapes, and event thresholds picked on soundscapes."""

from __future__ import annotations

import numpy as np
import pytest

from noisewatch.dc_offset import DcOffsetRemover
from noisewatch.features import FeatureSettings, extract
from noisewatch.train.datasets import BACKGROUND, URBANSOUND_CLASSES
from noisewatch.train.scene_eval import (
    TIMINGS,
    class_counts,
    cross_fitted,
    pick_detector,
    pick_shared_threshold,
    pick_thresholds,
)
from noisewatch.train.scenewindows import HOP_S, scene_windows, window_label
from noisewatch.train.soundscapes import Soundscape


@pytest.mark.parametrize(("events", "start", "expected"), [
    ([], 0.0, BACKGROUND),
    ([(1.0, 3.0, "siren")], 0.0, "siren"),  # wholly inside
    ([(3.5, 7.5, "siren")], 0.0, None),  # 0.5 s of a 4 s event: too little to say
    ([(3.0, 7.0, "siren")], 0.0, "siren"),  # 1 s of it
    ([(3.7, 4.3, "gun_shot")], 0.0, "gun_shot"),  # half of a 0.6 s event
    ([(3.8, 4.4, "gun_shot")], 0.0, None),  # a third of it
    ([(0.0, 1.5, "dog_bark"), (1.0, 4.0, "siren")], 0.0, "siren"),  # the one with more time inside
    ([(5.0, 6.0, "siren")], 0.0, BACKGROUND),  # after the window
])
def test_a_window_gets_the_label_of_the_event_it_holds_enough_of(events, start, expected) -> None:
    assert window_label(events, start, 4.0) == expected


def test_windows_are_the_daemon_stream_and_labelled_by_time() -> None:
    settings = FeatureSettings(stats=("mean", "std", "peak"))
    rate = settings.sample_rate
    audio = (0.01 * np.random.default_rng(0).standard_normal(12 * rate)).astype(np.float32)
    t = np.arange(2 * rate) / rate
    audio[6 * rate : 8 * rate] += (0.3 * np.sin(2 * np.pi * 700 * t)).astype(np.float32)
    scene = Soundscape("s", audio, ((6.0, 8.0, "car_horn"),), rate)
    rows, labels = scene_windows(scene, settings)
    hop = int(round(HOP_S * rate / settings.hop_length)) * settings.hop_length
    every = [(s, window_label(scene.events, s / rate, settings.window_s))
             for s in range(0, len(audio) - settings.window_samples + 1, hop)]
    starts = [s for s, label in every if label is not None]
    assert labels == [label for _, label in every if label is not None]
    assert labels[0] == BACKGROUND and "car_horn" in labels and len(starts) < len(every)  # edges left out
    heard = DcOffsetRemover(rate)(audio)  # as the daemon's pipeline hears the stream
    for row, start in zip(rows, starts):
        expected = extract(heard[start : start + settings.window_samples], settings)
        np.testing.assert_allclose(row, expected, rtol=0, atol=1e-5 * np.abs(expected).max())


def test_thresholds_are_picked_per_class_on_pooled_event_counts() -> None:
    zero = np.zeros(3)

    def counts(siren: tuple[int, int, int]) -> dict[str, np.ndarray]:
        return {label: np.array(siren, float) if label == "siren" else zero for label in URBANSOUND_CLASSES}

    # siren (tp, fp, fn): at 0.5 F1 = 8/14 on fold A; at 0.7 F1 = 6/9 pooled with B; 0.9 ties 0.7 on A alone.
    fold_a = {0.5: counts((4, 6, 0)), 0.7: counts((3, 1, 1)), 0.9: counts((3, 1, 1))}
    fold_b = {0.5: counts((2, 0, 0)), 0.7: counts((2, 0, 0)), 0.9: counts((0, 0, 2))}
    assert pick_thresholds([fold_a, fold_b])["siren"] == 0.7
    assert pick_thresholds([fold_a])["siren"] == 0.9  # a tie goes to the higher threshold
    assert pick_thresholds([fold_a])["dog_bark"] == 0.9  # never found: the highest


def test_false_positives_weighed_more_pick_a_stricter_threshold() -> None:
    """bench/scene_settings.py --false-weights: siren (tp, fp, fn) at 0.5 F1 20/21, at 0.9 F1 18/19; with each
    false positive counted 3 times, 0.5 falls to 20/23 and 0.9 wins."""
    zero = np.zeros(3)
    sweep = {t: {label: np.array(c, float) if label == "siren" else zero for label in URBANSOUND_CLASSES}
             for t, c in ((0.5, (10, 1, 0)), (0.9, (9, 0, 1)))}
    assert pick_thresholds([sweep])["siren"] == 0.5
    assert pick_thresholds([sweep], false_weight=3.0)["siren"] == 0.9


def test_one_shared_threshold_is_picked_on_every_class_pooled() -> None:
    def counts(siren: tuple[int, int, int], dog: tuple[int, int, int]) -> dict[str, np.ndarray]:
        known = {"siren": siren, "dog_bark": dog}
        return {label: np.array(known.get(label, (0, 0, 0)), float) for label in URBANSOUND_CLASSES}

    # pooled over siren and dog (tp, fp, fn): 0.5 -> (5, 6, 1) F1 10/17; 0.7 -> (5, 2, 1) F1 10/13;
    # 0.9 -> (2, 0, 4) F1 4/8. Per class, dog alone would take 0.5 (F1 4/5 against 2/4).
    sweep = {0.5: counts((3, 6, 0), (2, 0, 1)), 0.7: counts((4, 1, 0), (1, 1, 1)), 0.9: counts((2, 0, 2), (0, 0, 2))}
    assert pick_shared_threshold([sweep]) == dict.fromkeys(URBANSOUND_CLASSES, 0.7)
    assert pick_thresholds([sweep])["dog_bark"] == 0.5


def test_the_timing_is_picked_with_its_thresholds_and_cross_fitted_on_the_other_fold() -> None:
    def counts(siren: tuple[int, int, int]) -> dict[str, np.ndarray]:
        return {label: np.array(siren if label == "siren" else (0, 0, 0), float) for label in URBANSOUND_CLASSES}

    default, slow = TIMINGS[0], TIMINGS[-1]
    # fold 1 finds sirens best with the slow timing (F1 1 at 0.9); fold 2 with the default (F1 1 at 0.5)
    fold_1 = {default: {0.5: counts((1, 1, 1)), 0.9: counts((0, 0, 2))}, slow: {0.5: counts((1, 3, 1)), 0.9: counts((2, 0, 0))}}
    fold_2 = {default: {0.5: counts((2, 0, 0)), 0.9: counts((1, 0, 1))}, slow: {0.5: counts((0, 0, 2)), 0.9: counts((0, 0, 2))}}
    chosen = cross_fitted({1: fold_1, 2: fold_2})
    assert chosen[1] == (default, pick_thresholds([fold_2[default]]))  # picked on fold 2 only
    assert chosen[2] == (slow, pick_thresholds([fold_1[slow]]))
    assert chosen[2][1]["siren"] == 0.9
    tie = {timing: {0.5: counts((1, 0, 0))} for timing in TIMINGS[::-1]}
    assert pick_detector([tie])[0] == default  # a tie goes to the first timing, the bundle default


def test_class_counts_add_false_events_on_background_to_the_false_positives() -> None:
    scene = Soundscape("s", np.zeros(22050 * 10, np.float32), ((1.0, 3.0, "siren"), (5.0, 6.0, "dog_bark")))
    quiet = Soundscape("q", np.zeros(22050 * 10, np.float32), ())

    main = [(scene, [(1.3, 3.2, "siren"), (8.0, 9.0, "siren")])]
    background = [(quiet, [(2.0, 3.0, "siren"), (4.0, 4.5, "gun_shot")])]
    result = class_counts(main, background)
    assert result["siren"].tolist() == [1, 2, 0]  # found; one false event in the scene, one in the quiet
    assert result["dog_bark"].tolist() == [0, 0, 1]
    assert result["gun_shot"].tolist() == [0, 1, 0]

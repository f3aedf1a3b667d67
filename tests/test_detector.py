"""The detector on hand-made score sequences: thresholds, smoothing, release, durations, cooldown."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from noisewatch.daemon.detector import (
    Detector,
    DetectorSettings,
    LoudnessDetector,
    Observation,
    sound_activity,
)
from noisewatch.train.metrics import thresholded

LABELS = ("siren", "dog_bark", "background")
RATE = 1000  # a low rate keeps the synthetic windows small; the detector only sees levels
HOP = 0.5
WINDOW = 4.0


def settings(**overrides: object) -> DetectorSettings:
    values = dict(
        thresholds={"siren": 0.5, "dog_bark": 0.6, "background": 0.5},
        ignore=frozenset({"background"}),
        smoothing_windows=1,
        hop_s=HOP,
        release_s=1.0,
        min_duration_s=0.0,
        cooldown_s=0.0,
        max_duration_s=600.0,
    )
    values.update(overrides)
    return DetectorSettings(**values)


def flat_window() -> np.ndarray:
    """No loudness contrast: onsets fall back to the newest hop."""
    return np.full(int(WINDOW * RATE), 0.1, dtype=np.float32)


def run(detector: Detector, score_rows: list[list[float] | None]) -> list[tuple[str, str, float, float]]:
    """Feed one window per hop; returns (kind, label, start_s, end_s) of each transition."""
    out = []
    for i, row in enumerate(score_rows):
        start = i * HOP
        obs = Observation(start, start + WINDOW, None if row is None else np.array(row), flat_window(), RATE)
        out += [(t.kind, t.event.label, t.event.start_s, t.event.end_s) for t in detector.update(obs)]
    return out


def test_event_starts_above_threshold_and_ends_after_release() -> None:
    detector = Detector(LABELS, settings())
    rows = [[0.1, 0, 0.9]] * 2 + [[0.9, 0, 0.1]] * 4 + [[0.1, 0, 0.9]] * 4
    transitions = run(detector, rows)
    assert [(k, label) for k, label, *_ in transitions] == [("started", "siren"), ("ended", "siren")]
    started, ended = transitions
    assert started[2] == 2 * HOP + WINDOW - HOP  # newest hop of the first confident window
    assert ended[3] == 5 * HOP + WINDOW  # end of the last window that heard it


def test_ignored_labels_and_gated_windows_never_make_events() -> None:
    detector = Detector(LABELS, settings())
    assert run(detector, [[0, 0, 1.0]] * 5 + [None] * 5) == []


def test_a_threshold_of_1_turns_a_label_off_even_for_scores_of_exactly_1() -> None:
    """Home Assistant's threshold slider at its maximum, to quiet a false alarm: an int8 model's scores reach
    exactly 1.0, and the siren kept sounding. An open event ends as it would on its own."""
    detector = Detector(LABELS, settings(thresholds={"siren": 1.0, "dog_bark": 0.6, "background": 0.5}))
    assert run(detector, [[1.0, 0, 0]] * 6) == []
    detector = Detector(LABELS, settings())
    assert [k for k, *_ in run(detector, [[1.0, 0, 0]] * 2)] == ["started"]
    detector.set_thresholds({"siren": 1.0})
    assert [k for k, *_ in run(detector, [[1.0, 0, 0]] * 4)] == ["ended"]
    detector.set_thresholds({})  # forgotten (Home Assistant's reset button): the detector's own again
    assert [k for k, *_ in run(detector, [[1.0, 0, 0]] * 2)] == ["started"]


def test_training_s_clip_decisions_follow_the_detector_s_rule() -> None:
    """Training picks and reports thresholds with clip decisions: they must say "heard" exactly where the
    detector would, a threshold of 1 included (the rule lives once, in ``detector.heard``)."""
    scores = np.array([[1.0, 0.0, 0.0], [0.7, 0.2, 0.1], [0.1, 0.65, 0.25], [0.2, 0.3, 0.5]])
    thresholds = [1.0, 0.6, 0.5]  # siren off; dog_bark and background as the detector's defaults here
    assert thresholded(scores, thresholds, fallback=-1).tolist() == [-1, -1, 1, 2]  # -1: nothing heard
    watching_all = settings(thresholds=dict(zip(LABELS, thresholds)), ignore=frozenset())
    started = [[label for kind, label, *_ in run(Detector(LABELS, watching_all), [list(row)]) if kind == "started"]
               for row in scores]
    assert started == [[], [], ["dog_bark"], ["background"]]


def test_smoothing_needs_several_confident_windows() -> None:
    detector = Detector(LABELS, settings(smoothing_windows=3))
    assert run(detector, [[0.9, 0, 0]] + [[0.0, 0, 1]] * 3) == []
    later = run(detector, [[0.9, 0, 0]] * 3)
    assert [k for k, *_ in later] == ["started"]


def test_several_labels_can_be_active_at_once() -> None:
    detector = Detector(LABELS, settings())
    transitions = run(detector, [[0.9, 0.9, 0]] * 3 + [[0, 0, 1]] * 4)
    assert sorted((k, label) for k, label, *_ in transitions) == [
        ("ended", "dog_bark"), ("ended", "siren"), ("started", "dog_bark"), ("started", "siren")
    ]


def test_short_events_are_dropped_without_a_started_notice() -> None:
    detector = Detector(LABELS, settings(min_duration_s=3.0))
    assert run(detector, [[0.9, 0, 0]] * 2 + [[0, 0, 1]] * 4) == []


def test_long_events_are_reported_and_continued() -> None:
    detector = Detector(LABELS, settings(max_duration_s=2.0))
    transitions = run(detector, [[0.9, 0, 0]] * 12)
    kinds = [k for k, *_ in transitions]
    assert kinds[:3] == ["started", "started", "ended"]  # the continuation is announced first
    assert transitions[2][3] == transitions[1][2]  # the first part ends where the second starts


def test_a_split_event_keeps_the_sound_s_own_end_and_leaves_no_empty_piece(repo_root: Path) -> None:
    """Found checking the README black-box: with max_duration_s 2 the sample scene's siren (5.0-9.0 s) came
    out as 4.97-7.58, 7.58-9.62 and a 0 s piece at 9.62: each piece ended with its window, seconds after the
    sound, and the continuation began after the sound was over."""
    from noisewatch.bundle import default_model_path, load_bundle
    from noisewatch.config import Config
    from noisewatch.daemon.messages import Event
    from noisewatch.daemon.pipeline import Pipeline

    bundle = load_bundle(default_model_path())
    audio, rate = sf.read(str(repo_root / "samples" / "scene.flac"), dtype="float32")
    assert rate == bundle.features.sample_rate

    def events(max_duration_s: float) -> list[tuple[str, float, float]]:
        config = Config.model_validate({"detector": {"max_duration_s": max_duration_s}})
        pipeline = Pipeline.from_config(config, bundle, bundle.open_model())
        messages = pipeline.process(audio) + pipeline.finish()
        return [(m.label, m.offset_s, m.offset_s + m.duration_s) for m in messages if isinstance(m, Event)]

    whole = {label: (start, end) for label, start, end in events(600.0)}
    pieces = events(2.0)
    assert {"siren", "dog_bark", "jackhammer"} <= set(whole), whole  # the scene's sounds, each heard
    assert len([piece for piece in pieces if piece[0] == "siren"]) >= 2, pieces  # the 4 s siren is split
    for label, (start, end) in whole.items():
        mine = sorted((a, b) for name, a, b in pieces if name == label)
        assert mine[0][0] == start and abs(mine[-1][1] - end) < 1e-3, (label, mine, (start, end))
        assert all(abs(b1 - a2) < 1e-3 for (_, b1), (a2, _) in zip(mine, mine[1:])), mine  # back to back
        assert all(0.0 < b - a <= 2.0 + 1e-3 for a, b in mine), mine


def test_each_later_piece_of_a_split_sound_names_the_piece_before_it(repo_root: Path) -> None:
    """Found with a real Home Assistant: a long sound fired "Sound started" again every max_duration_s, with
    nothing in the payload to tell a new sound from the same one going on."""
    from noisewatch.bundle import default_model_path, load_bundle
    from noisewatch.config import Config
    from noisewatch.daemon.messages import Event, Started
    from noisewatch.daemon.pipeline import Pipeline

    bundle = load_bundle(default_model_path())
    audio, _ = sf.read(str(repo_root / "samples" / "scene.flac"), dtype="float32")
    pipeline = Pipeline.from_config(Config.model_validate({"detector": {"max_duration_s": 2.0}}), bundle,
                                    bundle.open_model())
    messages = pipeline.process(audio) + pipeline.finish()
    sirens = [m for m in messages if isinstance(m, Event) and m.label == "siren"]
    assert len(sirens) >= 2 and sirens[0].continues is None
    assert [m.continues for m in sirens[1:]] == [m.id for m in sirens[:-1]]
    started = {m.id: m.continues for m in messages if isinstance(m, Started)}
    assert all(started[m.id] == m.continues for m in sirens)
    events = {m.id: m for m in messages if isinstance(m, Event)}
    for piece in [m for m in events.values() if m.continues is not None]:  # every label's: same sound, back to back
        before = events[piece.continues]
        assert before.label == piece.label and abs(before.offset_s + before.duration_s - piece.offset_s) < 1e-3


def test_a_continuation_that_ends_soon_after_a_split_still_sends_its_end() -> None:
    """A split at max_duration_s announces the continuation at once; when the sound stops before
    min_duration_s, its end was dropped and subscribers stayed ON for good."""
    detector = Detector(LABELS, settings(max_duration_s=2.0, min_duration_s=1.0))
    transitions = run(detector, [[0.9, 0, 0]] * 5 + [[0, 0, 1]] * 4)
    assert [k for k, *_ in transitions] == ["started", "started", "ended", "ended"]
    started = sorted(start for kind, _, start, _ in transitions if kind == "started")
    assert started == sorted(start for kind, _, start, _ in transitions if kind == "ended")  # each one ended


def test_cooldown_blocks_an_immediate_restart() -> None:
    detector = Detector(LABELS, settings(cooldown_s=3.0))
    rows = [[0.9, 0, 0]] * 2 + [[0, 0, 1]] * 3 + [[0.9, 0, 0]] * 3 + [[0, 0, 1]] * 3 + [[0.9, 0, 0]] * 3
    kinds = [k for k, *_ in run(detector, rows)]
    assert kinds == ["started", "ended", "started"]


def test_close_all_ends_open_events() -> None:
    detector = Detector(LABELS, settings())
    run(detector, [[0.9, 0, 0]] * 3)
    (transition,) = detector.close_all(10.0)
    assert transition.kind == "ended" and transition.event.label == "siren"
    assert transition.event.confidence == 0.9 and transition.event.mean_confidence == 0.9


def test_sound_activity_finds_the_onset_of_the_last_loud_stretch() -> None:
    rate = 8000
    audio = np.full(4 * rate, 1e-3, dtype=np.float32)
    audio[int(0.5 * rate) : int(0.7 * rate)] = 0.5  # an earlier click, 2 s before
    audio[int(2.5 * rate) : int(3.6 * rate)] = 0.5
    onset, end = sound_activity(audio, rate)
    assert abs(onset - 2.5) <= 0.05 and abs(end - 3.6) <= 0.05
    assert sound_activity(np.full(4 * rate, 0.2, dtype=np.float32), rate) is None


def test_onset_comes_from_the_audio_when_it_has_contrast() -> None:
    detector = Detector(LABELS, settings())
    audio = np.full(int(WINDOW * RATE), 1e-3, dtype=np.float32)
    audio[int(2.2 * RATE) :] = 0.3
    obs = Observation(10.0, 10.0 + WINDOW, np.array([0.9, 0, 0]), audio, RATE)
    (started,) = detector.update(obs)
    assert abs(started.event.start_s - 12.2) <= 0.05


def test_loudness_events_need_the_minimum_duration() -> None:
    loud = LoudnessDetector(threshold_dbfs=-20.0, min_duration_s=2.0)
    levels = [-40, -10, -15, -12, -30, -10, -40]
    seen = []
    for second, level in enumerate(levels):
        for t in loud.update(float(second), float(level)):
            seen.append((t.kind, t.event.label, t.event.start_s, t.event.end_s, t.event.confidence))
    assert seen == [("started", "loud", 1.0, 3.0, None), ("ended", "loud", 1.0, 4.0, None)]


def test_require_contrast_starts_events_only_where_the_sound_stands_out() -> None:
    detector = Detector(LABELS, settings(require_contrast=frozenset({"siren"})))
    steady = run(detector, [[0.9, 0.9, 0]] * 6)  # a steady bed scored as a siren and as a dog ...
    assert [(kind, label) for kind, label, *_ in steady] == [("started", "dog_bark")]  # ... only the dog starts
    detector = Detector(LABELS, settings(require_contrast=frozenset({"siren"})))
    burst = np.full(int(WINDOW * RATE), 1e-3, dtype=np.float32)
    burst[int(2.2 * RATE) :] = 0.3  # 50 dB over the quiet part
    (started,) = detector.update(Observation(10.0, 10.0 + WINDOW, np.array([0.9, 0, 0]), burst, RATE))
    assert started.kind == "started" and abs(started.event.start_s - 12.2) <= 0.05
    flat = Observation(10.5, 10.5 + WINDOW, np.array([0.9, 0, 0]), flat_window(), RATE)
    assert detector.update(flat) == []  # a started event goes on through steady windows ...
    (ended,) = detector.close_all(20.0)
    assert ended.kind == "ended" and ended.event.end_s == 10.5 + WINDOW  # ... to the last one that heard it


def test_the_pieces_of_a_sound_meet_across_a_wall_clock_step(repo_root: Path) -> None:
    """A review found it: with each piece's end through its own start's anchor, after a wall clock stepped back
    2 h the next piece began 2 h before the one it continues ended. All pieces of a sound now go through the
    anchor of where it began."""
    from datetime import timedelta

    from noisewatch.bundle import default_model_path, load_bundle
    from noisewatch.config import Config
    from noisewatch.daemon.messages import Event
    from noisewatch.daemon.pipeline import Pipeline

    bundle = load_bundle(default_model_path())
    audio, rate = sf.read(str(repo_root / "samples" / "scene.flac"), dtype="float32")
    pipeline = Pipeline.from_config(Config.model_validate({"detector": {"max_duration_s": 2.0}}), bundle,
                                    bundle.open_model())
    cut = int(7.5 * rate)  # the siren (4.96-9.04 s) is open, in its second piece
    messages = pipeline.process(audio[:cut])
    pipeline.heard_at(pipeline.clock.anchor + timedelta(seconds=pipeline.position_s) - timedelta(hours=2))
    messages += pipeline.process(audio[cut:]) + pipeline.finish()
    events = {m.id: m for m in messages if isinstance(m, Event)}
    pieces = [m for m in events.values() if m.continues is not None and m.label == "siren"]
    assert len(pieces) >= 2, [(m.label, m.offset_s) for m in events.values()]
    for piece in pieces:
        assert events[piece.continues].end == piece.start and piece.end >= piece.start, (events[piece.continues], piece)


def test_an_event_ends_once_its_label_has_been_absent_release_s_and_not_sooner() -> None:
    """README: the detector "closes it after `detector.release_s` without it": a dip shorter than the release
    keeps one event, and the end comes with the window that makes the absence release_s long."""
    present, absent = [0.9, 0, 0.1], [0.1, 0, 0.9]
    for release_s in (1.0, 2.0):
        windows = int(release_s / HOP)  # absent windows that make release_s of absence
        rows = [present] * 3 + [absent] * (windows - 1) + [present] * 3 + [absent] * windows
        before = run(Detector(LABELS, settings(release_s=release_s)), rows[:-1])
        assert [k for k, *_ in before] == ["started"], release_s  # one event through the dip, still open
        transitions = run(Detector(LABELS, settings(release_s=release_s)), rows)
        assert [(k, label) for k, label, *_ in transitions] == [("started", "siren"), ("ended", "siren")], release_s
        last_heard = (3 + windows - 1 + 3 - 1) * HOP + WINDOW
        assert transitions[1][3] == last_heard, (release_s, transitions)  # it ends where it was last heard


def test_contrast_means_10_db_over_the_quiet_part_of_the_window() -> None:
    """README: labels in `detector.require_contrast` "start an event only where the sound stands 10 dB above the
    recent quiet level (the quietest tenth ... of the window)": 8 dB over it starts nothing, 12 dB starts one."""
    quiet = 0.01
    for over_db, starts in ((8.0, False), (12.0, True)):
        detector = Detector(LABELS, settings(require_contrast=frozenset({"siren"})))
        audio = np.full(int(WINDOW * RATE), quiet, dtype=np.float32)
        audio[int(2.2 * RATE) :] = quiet * 10 ** (over_db / 20)
        got = detector.update(Observation(10.0, 10.0 + WINDOW, np.array([0.9, 0, 0]), audio, RATE))
        assert [t.kind for t in got] == (["started"] if starts else []), over_db


def test_contrast_is_also_measured_against_the_quiet_of_the_last_10_s() -> None:
    """README: the recent quiet level is "the quietest 50 ms of the last 10 s, or the quietest tenth of the
    window": a sound that fills the whole window still starts an event when the stream was 10 dB quieter within
    the last 10 s, and a bed that has been there longer than that (rain heard as a horn) does not."""
    from noisewatch.daemon.detector import NoiseFloor

    def first_start_after(loud_before_s: float) -> list[str]:
        """Quiet, then a loud bed; the model says siren only from ``loud_before_s`` into the bed."""
        hop, quiet_s = int(HOP * RATE), 4.0
        total_s = quiet_s + loud_before_s + WINDOW + 1.0
        audio = np.full(int(total_s * RATE), 1e-3, dtype=np.float32)
        audio[int(quiet_s * RATE) :] = 0.3
        detector = Detector(LABELS, settings(require_contrast=frozenset({"siren"})))
        floor = NoiseFloor(RATE, HOP)
        kinds = []
        for start in range(0, len(audio) - int(WINDOW * RATE) + 1, hop):
            window = audio[start : start + int(WINDOW * RATE)]
            start_s = start / RATE
            scores = np.array([0.9, 0, 0]) if start_s >= quiet_s + loud_before_s else np.array([0, 0, 0.9])
            obs = Observation(start_s, start_s + WINDOW, scores, window, RATE, floor.update(window[-hop:]))
            kinds += [t.kind for t in detector.update(obs)]
        return kinds

    assert first_start_after(2.0) == ["started"]  # its window all loud, the quiet 2 s before it counts
    assert first_start_after(12.0) == []  # the quiet was more than 10 s ago: a steady bed, no onset


def test_the_recent_quiet_level_is_the_quietest_50_ms_of_the_last_10_s() -> None:
    """README: "the quietest 50 ms of the last 10 s": one quiet 50 ms frame in 10 s of a steady bed sets the
    floor (the quietest tenth of the 10 s would be the bed's), and it leaves the floor once 10 s have passed."""
    from noisewatch.daemon.detector import NoiseFloor, frame_levels

    hop = int(HOP * RATE)
    bed = (0.01 * np.random.default_rng(2).standard_normal(int(12 * RATE))).astype(np.float32)  # about -40 dBFS
    frame = int(0.05 * RATE)
    bed[3 * hop : 3 * hop + frame] *= np.float32(0.01)  # one frame 40 dB quieter, in the 4th hop
    floor = NoiseFloor(RATE, HOP)
    floors = [floor.update(bed[start : start + hop]) for start in range(0, len(bed) - hop + 1, hop)]
    dip = float(frame_levels(bed[3 * hop : 3 * hop + frame], RATE)[0])
    assert floors[3] == pytest.approx(dip) and floors[3] < -75  # the dip's own level
    assert floors[2] > -45 and floors[-1] > -45  # before it, and once it is more than 10 s old


def test_loud_events_come_from_the_1_s_level_through_the_daemon_s_pipeline() -> None:
    """README: `loud` events are "the 1 s level above `loudness.threshold_dbfs` for `loudness.min_duration_s`,
    same schema as other events, confidence null" (defaults -10 dBFS and 2 s): a 3 s tone at -6 dBFS is one,
    from its first to its last loud second; a 1.2 s one is not; a tone at -14 dBFS never is. Fed in one piece:
    the loud event's levels were the -120 dBFS floor when it ended inside a piece longer than a window."""
    from noisewatch.bundle import default_model_path, load_bundle
    from noisewatch.config import Config
    from noisewatch.daemon.messages import Event, Started
    from noisewatch.daemon.pipeline import Pipeline

    bundle = load_bundle(default_model_path())
    rate = bundle.features.sample_rate
    config = Config()
    assert (config.loudness.threshold_dbfs, config.loudness.min_duration_s) == (-10.0, 2.0)

    def loud(tone_s: float, level_dbfs: float) -> list:
        t = np.arange(int(tone_s * rate)) / rate
        tone = np.sqrt(2.0) * 10 ** (level_dbfs / 20) * np.sin(2 * np.pi * 1000 * t)
        hiss = 10 ** (-50 / 20) * np.random.default_rng(0).standard_normal(9 * rate)
        audio = hiss.copy()
        audio[2 * rate : 2 * rate + len(tone)] += tone
        pipeline = Pipeline.from_config(config, bundle, bundle.open_model())
        messages = pipeline.process(audio.astype(np.float32)) + pipeline.finish()
        return [m for m in messages if isinstance(m, (Started, Event)) and m.label == "loud"]

    started, event = loud(3.0, -6.0)
    assert isinstance(started, Started) and isinstance(event, Event) and started.id == event.id
    assert started.confidence is None and event.confidence is None and event.mean_confidence is None
    assert (event.offset_s, event.duration_s) == (2.0, 3.0)
    assert event.peak_dbfs == pytest.approx(-3.0, abs=0.2)
    assert event.mean_dbfs == pytest.approx(-6.0, abs=0.2)  # the tone's: not the floor, nor the first window's hiss
    assert loud(1.2, -6.0) == [] and loud(3.0, -14.0) == []


def test_a_loud_event_before_the_first_window_or_after_a_gap_has_its_own_levels() -> None:
    """Found by fault injection through a virtual microphone that stalled: a `loud` event that ends before a window
    has been classified (the first 4 s of a stream, or of the audio after a gap) reported -120 dBFS peak and mean,
    the floor: its audio was recorded for levels only as windows were classified."""
    from noisewatch.bundle import default_model_path, load_bundle
    from noisewatch.config import Config
    from noisewatch.daemon.messages import Event
    from noisewatch.daemon.pipeline import Pipeline

    bundle = load_bundle(default_model_path())
    rate = bundle.features.sample_rate
    t = np.arange(2 * rate) / rate
    tone = (np.sqrt(2.0) * 10 ** (-6 / 20) * np.sin(2 * np.pi * 1000 * t)).astype(np.float32)
    hiss = (10 ** (-50 / 20) * np.random.default_rng(1).standard_normal(rate)).astype(np.float32)
    pipeline = Pipeline.from_config(Config(), bundle, bundle.open_model())
    scene = np.concatenate([hiss, tone, hiss, hiss])  # the loud seconds 1-3 s: said at 4 s, as the first window ends
    heard = pipeline.process(scene) + pipeline.gap()
    heard += pipeline.process(scene) + pipeline.finish()
    loud = [m for m in heard if isinstance(m, Event) and m.label == "loud"]
    assert len(loud) == 2, loud
    for event in loud:
        assert event.peak_dbfs == pytest.approx(-3.0, abs=0.2) and event.mean_dbfs == pytest.approx(-6.0, abs=0.2), event


def test_a_loud_event_s_levels_are_those_of_its_own_seconds_however_long_it_lasts() -> None:
    """A `loud` event is whole seconds of the stream, which the level meter measures exactly. Measured from the
    level history instead: a click 2 ms before its first second, in the history's stretch across that second's
    start, was the peak of a 3 s event (-0.9 dBFS against its own -3.0); and a 20 s event, longer than the history
    (sized by detector.max_duration_s, which splits model events but not loud ones), read only its last part
    (mean -12.0 against -10.0 over its own seconds, peak -9.0 against -3.0)."""
    from noisewatch.bundle import default_model_path, load_bundle
    from noisewatch.config import Config
    from noisewatch.daemon.levels import dbfs, peak_dbfs
    from noisewatch.daemon.messages import Event
    from noisewatch.daemon.pipeline import Pipeline
    from noisewatch.dc_offset import DcOffsetRemover

    bundle = load_bundle(default_model_path())
    rate, hop = bundle.features.sample_rate, bundle.features.hop_length
    assert (2 * rate) % hop > 2 * rate // 1000  # the click falls in the stretch across the loud second's start
    config = Config.model_validate({"detector": {"max_duration_s": 5}, "loudness": {"threshold_dbfs": -20.0}})
    for seconds in (3, 20):
        t = np.arange(seconds * rate) / rate
        tone = np.sqrt(2.0) * np.sin(2 * np.pi * 1000 * t) * np.where(t < 4, 10 ** (-6 / 20), 10 ** (-12 / 20))
        audio = 10 ** (-50 / 20) * np.random.default_rng(2).standard_normal((seconds + 4) * rate)
        audio[2 * rate - 2 * rate // 1000] = 0.9
        audio[2 * rate : (seconds + 2) * rate] += tone
        audio = audio.astype(np.float32)
        pipeline = Pipeline.from_config(config, bundle, bundle.open_model())
        heard = pipeline.process(audio) + pipeline.finish()
        (loud,) = [m for m in heard if isinstance(m, Event) and m.label == "loud"]
        own = DcOffsetRemover(rate)(audio)[2 * rate : (seconds + 2) * rate]  # as the daemon hears it
        assert (loud.offset_s, loud.duration_s) == (2.0, seconds)
        assert loud.mean_dbfs == pytest.approx(dbfs(own), abs=0.05), (seconds, loud)
        assert loud.peak_dbfs == pytest.approx(peak_dbfs(own), abs=0.05), (seconds, loud)

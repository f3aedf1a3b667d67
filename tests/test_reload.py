"""A reload (SIGHUP) hands the running pipeline's state to the new one (``Pipeline.take_over``) where the new
settings allow, and leaves the rest to be closed with the old one: driven here on the shipped model and the
sample scene, as the service does it (take over, then finish the old pipeline)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr

from noisewatch.bundle import default_model_path, load_bundle
from noisewatch.config import Config
from noisewatch.daemon.messages import Event, Level, Message, Started
from noisewatch.daemon.pipeline import Pipeline

SCENE = Path(__file__).resolve().parent.parent / "samples" / "scene.flac"
"""33 s: siren at 5-9 s (peaks near -4 dBFS), dog bark at 14-17 s, jackhammer at 22-25 s."""
RELOAD_S = 7.5
"""Mid-siren, after the siren's ``started`` (at about 7.1 s of audio, smoothing 2)."""
BLOCK = 4096


def scene_audio(rate: int) -> np.ndarray:
    audio, source_rate = sf.read(str(SCENE), dtype="float32", always_2d=True)
    return soxr.resample(audio.mean(axis=1), source_rate, rate).astype(np.float32)


def run_with_reload(before: dict, after: dict) -> tuple[list[Message], list[Message], list[Message]]:
    """Messages before the reload, from closing the old pipeline, and after it (to the end of the scene)."""
    bundle = load_bundle(default_model_path())
    model = bundle.open_model()
    audio = scene_audio(bundle.features.sample_rate)
    cut = int(RELOAD_S * bundle.features.sample_rate)
    old = Pipeline.from_config(Config.model_validate(before), bundle, model)
    first = [m for i in range(0, cut, BLOCK) for m in old.process(audio[i : min(i + BLOCK, cut)])]
    new = Pipeline.from_config(Config.model_validate(after), bundle, model)
    new.take_over(old)
    closing = old.finish()
    rest = [m for i in range(cut, len(audio), BLOCK) for m in new.process(audio[i : i + BLOCK])] + new.finish()
    return first, closing, rest


def events(messages: list[Message], label: str) -> list[Event]:
    return [m for m in messages if isinstance(m, Event) and m.label == label]


def test_an_unchanged_reload_keeps_the_siren_one_event_to_its_end() -> None:
    first, closing, rest = run_with_reload({}, {})
    assert [m.label for m in first if isinstance(m, Started)] == ["siren"]
    assert not events(closing, "siren")
    (siren,) = events(rest, "siren")
    assert abs(siren.offset_s + siren.duration_s - 9.0) < 1.0, siren


def test_level_periods_go_on_across_a_reload_with_the_same_level_settings() -> None:
    """One report a second, on whole seconds of the stream, before and after the reload (a new meter would
    start its period at the reload, 7.5 s, and report on half seconds)."""
    every_second = {"levels": {"interval_s": 1.0}}
    first, _, rest = run_with_reload(every_second, every_second)
    offsets = [m.offset_s for m in first + rest if isinstance(m, Level)]
    assert offsets[-1] > RELOAD_S + 5
    assert offsets == [float(k) for k in range(round(offsets[0]), round(offsets[0]) + len(offsets))], offsets


def test_the_level_period_being_filled_is_reported_where_a_reload_ends_it_and_nowhere_else() -> None:
    """Same level settings: the period goes on, and the old pipeline's close reports none of it (its meter went on
    in the new one); other settings end it at the reload, reported over its whole seconds (it was lost)."""
    def periods(messages: list[Message]) -> list[tuple[float, float]]:
        return [(m.offset_s, m.offset_s + m.period_s) for m in messages if isinstance(m, Level)]

    first, closing, rest = run_with_reload({}, {})
    assert periods(first) == [(0, 5)] and periods(closing) == []
    assert periods(rest)[0][0] == 5 and len(periods(rest)) == 1
    first, closing, rest = run_with_reload({}, {"levels": {"interval_s": 10.0}})
    assert periods(first) == [(0, 5)] and periods(closing) == [(5, int(RELOAD_S))]
    assert periods(rest)[0][0] == RELOAD_S


def test_the_level_period_a_gap_cuts_short_is_reported_and_the_next_starts_after_it() -> None:
    """README: "the period cut short by a stop, a gap or a file's end is reported over its whole seconds": a gap
    (audio lost) reports the part period before it, and the meter starts a first 5 s period where audio comes back."""
    bundle = load_bundle(default_model_path())
    audio = scene_audio(bundle.features.sample_rate)
    rate = bundle.features.sample_rate
    pipeline = Pipeline.from_config(Config(), bundle, bundle.open_model())
    before = pipeline.process(audio[: int(7.5 * rate)])
    at_gap = pipeline.gap()
    after = pipeline.process(audio[int(7.5 * rate) : int(13.5 * rate)])
    periods = [[(m.offset_s, m.period_s) for m in part if isinstance(m, Level)] for part in (before, at_gap, after)]
    assert periods == [[(0, 5)], [(5, 2)], [(7.5, 5)]], periods


def test_more_smoothing_at_a_reload_does_not_cut_the_open_event() -> None:
    """The carried scores are fewer than the new smoothing asks for: they must not count as absent."""
    first, closing, rest = run_with_reload({"detector": {"smoothing_windows": 2}},
                                           {"detector": {"smoothing_windows": 6}})
    assert [m.label for m in first if isinstance(m, Started)] == ["siren"]
    assert not events(closing, "siren")
    (siren,) = events(rest, "siren")
    assert abs(siren.offset_s + siren.duration_s - 9.0) < 1.0, siren


def test_loudness_turned_off_at_a_reload_ends_the_open_loud_event_there() -> None:
    loud = {"loudness": {"enabled": True, "threshold_dbfs": -30.0, "min_duration_s": 1.0}}
    first, closing, rest = run_with_reload(loud, {"loudness": {**loud["loudness"], "enabled": False}})
    assert [m.label for m in first if isinstance(m, Started) and m.label == "loud"] == ["loud"]
    (ended,) = events(closing, "loud")
    assert ended.offset_s + ended.duration_s <= RELOAD_S + 1e-6, ended
    assert not events(rest, "loud")


def test_a_longer_event_bound_after_a_reload_keeps_the_level_history_it_needs() -> None:
    """The history is the new pipeline's own, sized by its settings, holding what the old one recorded."""
    bundle = load_bundle(default_model_path())
    model = bundle.open_model()
    old = Pipeline.from_config(Config.model_validate({"detector": {"max_duration_s": 60}}), bundle, model)
    old.process(scene_audio(bundle.features.sample_rate)[: int(RELOAD_S * bundle.features.sample_rate)])
    new = Pipeline.from_config(Config.model_validate({"detector": {"max_duration_s": 3600}}), bundle, model)
    new.take_over(old)
    assert new.history is not old.history and len(new.history._begin) > len(old.history._begin)
    assert new.history.over(0.0, RELOAD_S) == old.history.over(0.0, RELOAD_S)


def test_a_new_hop_at_a_reload_starts_the_windows_afresh_and_the_open_event_goes_on() -> None:
    """README: "A reload that does not reopen the microphone is not a gap: the windows, the level period and open
    events go on under the new settings (a sound heard at that moment stays one event; a change of model features
    or hop starts the windows afresh)"."""
    bundle = load_bundle(default_model_path())
    model = bundle.open_model()
    rate = bundle.features.sample_rate
    audio = scene_audio(rate)
    cut = int(RELOAD_S * rate)
    old = Pipeline.from_config(Config(), bundle, model)
    first = [m for i in range(0, cut, BLOCK) for m in old.process(audio[i : min(i + BLOCK, cut)])]
    new = Pipeline.from_config(Config.model_validate({"audio": {"hop_s": 1.0}}), bundle, model)
    new.take_over(old)
    assert new.samples_to_window == bundle.features.window_samples  # the next window is all audio after the reload
    closing = old.finish()
    rest = [m for i in range(cut, len(audio), BLOCK) for m in new.process(audio[i : i + BLOCK])] + new.finish()
    assert new.counters.windows == 1 + (len(audio) - cut - bundle.features.window_samples) // new.stream.hop_samples
    assert [m.label for m in first if isinstance(m, Started)] == ["siren"]
    assert not events(closing, "siren")
    (siren,) = events(rest, "siren")  # one event, the one announced before the reload
    assert siren.id == [m.id for m in first if isinstance(m, Started)][0]
    assert {m.label for m in rest if isinstance(m, Event)} >= {"dog_bark", "jackhammer"}


def test_a_shorter_event_bound_at_a_reload_measures_the_pieces_it_splits_from_the_open_event(repo_root: Path) -> None:
    """detector.max_duration_s lowered at a reload while a sound goes on: the open event goes on under the new bound,
    which at once splits off the pieces that the sound has already outlasted. The new history, kept to the new
    bound's length, no longer held their audio: they read -120 dBFS, the floor, for mean and peak. The sound: the
    sample scene's siren, looped for a minute (the real model hears one siren all along)."""
    from noisewatch.daemon.levels import dbfs

    bundle = load_bundle(default_model_path())
    rate = bundle.features.sample_rate
    scene, scene_rate = sf.read(str(repo_root / "samples" / "scene.flac"), dtype="float32")
    assert scene_rate == rate
    siren = np.tile(scene[5 * rate : 9 * rate], 15)[: 60 * rate]
    old = Pipeline.from_config(Config.model_validate({"detector": {"max_duration_s": 600}}), bundle, bundle.open_model())
    first = old.process(siren[: 50 * rate])
    new = Pipeline.from_config(Config.model_validate({"detector": {"max_duration_s": 10}}), bundle, bundle.open_model())
    new.take_over(old)
    closing = old.finish()
    pieces = events(first + closing + new.process(siren[50 * rate :]) + new.finish(), "siren")
    assert len(pieces) >= 5 and pieces[0].offset_s < 10, pieces
    for piece in pieces:
        heard = siren[int(piece.offset_s * rate) : int((piece.offset_s + piece.duration_s) * rate)]
        assert piece.mean_dbfs == pytest.approx(dbfs(heard), abs=0.1), piece  # its own audio's level, not the floor
        assert -60 < piece.mean_dbfs <= piece.peak_dbfs, piece


def test_a_loud_event_across_a_reload_that_restarts_the_level_meter_keeps_its_level() -> None:
    """New level settings at a reload start a new meter at the reload, mid-second: the part second before it is
    measured by neither meter. The loud event going on across it divided its seconds' energy by its whole duration,
    that half second included, and read low (the siren -14.33 dBFS against -13.67)."""
    loud = {"enabled": True, "threshold_dbfs": -30.0, "min_duration_s": 1.0}
    _, _, plain = run_with_reload({"loudness": loud}, {"loudness": loud})
    _, _, restarted = run_with_reload({"loudness": loud}, {"loudness": loud, "levels": {"interval_s": 1.0}})
    one, other = events(plain, "loud")[0], events(restarted, "loud")[0]
    assert (other.offset_s, other.duration_s) == (one.offset_s, one.duration_s + 0.5)  # ends on the new meter's second
    assert other.mean_dbfs == pytest.approx(one.mean_dbfs, abs=0.2) and other.peak_dbfs == one.peak_dbfs

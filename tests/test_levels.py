"""Sound levels: known sine levels, A-weighting, block-size invariance, period reports."""

from __future__ import annotations

import numpy as np
import pytest

from noisewatch.daemon.levels import (
    FLOOR_DBFS,
    DigitalSilence,
    LevelMeter,
    PeriodLevels,
    SecondLevel,
    SilenceChange,
    a_weighting_db,
    dbfs,
    peak_dbfs,
)

RATE = 22050


def sine(freq_hz: float, level_dbfs: float, seconds: float, rate: int = RATE) -> np.ndarray:
    """A sine whose RMS is ``level_dbfs`` (amplitude = sqrt(2) * RMS)."""
    t = np.arange(int(seconds * rate)) / rate
    return (np.sqrt(2.0) * 10 ** (level_dbfs / 20) * np.sin(2 * np.pi * freq_hz * t)).astype(np.float32)


def push_in_blocks(meter: LevelMeter, audio: np.ndarray, block: int) -> tuple[list[SecondLevel], list[PeriodLevels]]:
    seconds, reports = [], []
    for start in range(0, len(audio), block):
        s, r = meter.push(audio[start : start + block])
        seconds += s
        reports += r
    return seconds, reports


def test_full_scale_sine_reads_minus_3_dbfs() -> None:
    t = np.arange(RATE) / RATE
    assert dbfs(np.sin(2 * np.pi * 1000 * t)) == pytest.approx(-3.01, abs=0.01)
    assert peak_dbfs(np.sin(2 * np.pi * 1000 * t)) == pytest.approx(0.0, abs=0.01)


def test_silence_and_empty_read_the_floor() -> None:
    assert dbfs(np.zeros(100, dtype=np.float32)) == FLOOR_DBFS
    assert dbfs(np.zeros(0, dtype=np.float32)) == FLOOR_DBFS
    seconds, _ = LevelMeter(RATE, 60, None).push(np.zeros(RATE, dtype=np.float32))
    assert (seconds[0].dbfs, seconds[0].dbfs_a, seconds[0].peak_dbfs) == (FLOOR_DBFS, FLOOR_DBFS, FLOOR_DBFS)


def test_1khz_sine_at_minus_20_dbfs() -> None:
    seconds, _ = LevelMeter(RATE, 60, None).push(sine(1000, -20, 3))
    assert len(seconds) == 3
    for level in seconds:
        assert level.dbfs == pytest.approx(-20.0, abs=0.1)
        assert level.dbfs_a == pytest.approx(-20.0, abs=0.1)
        assert level.peak_dbfs == pytest.approx(-20.0 + 3.01, abs=0.05)


def test_100hz_sine_is_19_1_db_lower_a_weighted() -> None:
    seconds, _ = LevelMeter(RATE, 60, None).push(sine(100, -20, 2))
    for level in seconds:
        assert level.dbfs == pytest.approx(-20.0, abs=0.1)
        assert level.dbfs - level.dbfs_a == pytest.approx(19.1, abs=0.1)


def test_a_curve_matches_iec_61672_table() -> None:
    """IEC 61672-1 Table 3 values (0.1 dB) at the exact base-10 frequencies of the octave bands 31.5 Hz-8 kHz."""
    table = [-39.4, -26.2, -16.1, -8.6, -3.2, 0.0, 1.2, 1.0, -1.1]
    exact_hz = 1000 * 10 ** (np.arange(-15, 10, 3) / 10)
    np.testing.assert_allclose(a_weighting_db(exact_hz), table, atol=0.06)


def test_offsets_follow_the_sample_clock() -> None:
    meter = LevelMeter(RATE, 60, None)
    seconds, _ = meter.push(np.zeros(RATE * 2 + 100, dtype=np.float32))
    more, _ = meter.push(np.zeros(RATE, dtype=np.float32))
    assert [s.offset_s for s in seconds + more] == [0.0, 1.0, 2.0]


@pytest.mark.parametrize("block", [256, 1024, 4000])
def test_block_size_does_not_change_the_output(block: int) -> None:
    rng = np.random.default_rng(0)
    audio = (rng.standard_normal(RATE * 7 + 333) * 0.05).astype(np.float32)
    audio[RATE * 3 : RATE * 4] += sine(440, -6, 1)
    expected = LevelMeter(RATE, 2, 94.0).push(audio)
    got = push_in_blocks(LevelMeter(RATE, 2, 94.0), audio, block)
    assert got == expected
    assert len(got[0]) == 7 and len(got[1]) == 3


def test_period_report_is_the_energy_mean_of_its_seconds() -> None:
    levels = [-20.0, -40.0, -30.0]
    audio = np.concatenate([sine(1000, level, 1) for level in levels])
    seconds, reports = LevelMeter(RATE, 3, None).push(audio)
    assert len(reports) == 1
    report = reports[0]
    energy_mean = 10 * np.log10(np.mean([10 ** (level / 10) for level in levels]))  # -24.5, not the -30 average
    assert report.offset_s == 0.0 and report.period_s == 3
    assert report.dbfs.leq == pytest.approx(energy_mean, abs=0.05)
    assert report.dbfs.lmax == pytest.approx(-20.0, abs=0.05)
    assert report.dbfs.lmin == pytest.approx(-40.0, abs=0.05)
    assert report.dbfs_a.leq == pytest.approx(energy_mean, abs=0.1)
    assert report.dba_spl is None
    assert [s.dbfs for s in seconds] == pytest.approx(levels, abs=0.05)


def test_periods_follow_each_other_on_the_sample_clock() -> None:
    _, reports = LevelMeter(RATE, 2, None).push(sine(1000, -30, 6.5))
    assert [r.offset_s for r in reports] == [0.0, 2.0, 4.0]


def test_calibration_offset_gives_spl() -> None:
    _, reports = LevelMeter(RATE, 1, 100.0).push(sine(1000, -30, 1))
    report = reports[0]
    assert report.dba_spl is not None
    for name in ("leq", "lmax", "lmin"):
        assert getattr(report.dba_spl, name) == pytest.approx(getattr(report.dbfs_a, name) + 100.0, abs=0.011)
    assert report.dba_spl.leq == pytest.approx(70.0, abs=0.1)


def test_reset_drops_partial_second_and_period_but_keeps_the_clock() -> None:
    meter = LevelMeter(RATE, 2, None)
    seconds, _ = meter.push(sine(1000, -10, 1.5))
    meter.reset()
    more, reports = meter.push(sine(1000, -40, 2))
    assert [s.offset_s for s in seconds + more] == [0.0, 1.5, 2.5]
    assert len(reports) == 1
    assert reports[0].offset_s == 1.5 and reports[0].dbfs.lmax == pytest.approx(-40.0, abs=0.05)


def test_level_history_measures_exactly_the_requested_stretch() -> None:
    from noisewatch.daemon.levels import LevelHistory

    rate = 1000
    history = LevelHistory(keep=200, sample_rate=rate, span=50)
    audio = np.full(5000, 0.01, np.float32)
    audio[4000:] = 0.5  # loud from 4.0 s on
    history.add(0, audio[:4000])
    history.add(4000, audio[4000:])
    mean, peak = history.over(4.0, 5.0)
    assert abs(mean - dbfs(np.full(10, 0.5))) < 0.01 and abs(peak - dbfs(np.full(10, 0.5))) < 0.01
    mean_all, _ = history.over(0.0, 5.0)
    assert mean_all < mean - 5  # the quiet first seconds pull the energy mean down
    assert history.over(10.0, 11.0) == (FLOOR_DBFS, FLOOR_DBFS)


def test_level_history_records_the_same_stretches_whatever_the_read_sizes() -> None:
    """The daemon reads a hop at a time and Classify hands over a whole recording: the same stretches, so an
    event's level is the same to float32 rounding (a record cut from each read's start gave -6.09 and -6.04 dBFS)."""
    from noisewatch.daemon.levels import LevelHistory

    rate = 1000
    audio = (0.1 * np.random.default_rng(0).standard_normal(5000)).astype(np.float32)
    whole = LevelHistory(keep=200, sample_rate=rate, span=50)
    whole.add(0, audio)
    pieces = LevelHistory(keep=200, sample_rate=rate, span=50)
    for start in range(0, 5000, 333):
        pieces.add(start, audio[start : start + 333])
    for span in ((0.2, 1.3), (0.0, 5.0), (1.7, 4.9), (4.9, 5.0)):
        assert pieces.over(*span) == pytest.approx(whole.over(*span), abs=1e-4)  # float32 sums in another order


def test_level_history_measures_a_sound_inside_the_first_window_over_its_own_audio() -> None:
    """The first window after a start (or a gap) is all new audio: a sound that begins 2 s into it is measured
    over its own 2 s, not over the 4 s with the quiet before it (which read it 3 dB low)."""
    from noisewatch.daemon.levels import LevelHistory

    rate = 1000
    history = LevelHistory(keep=200, sample_rate=rate, span=50)
    first = np.full(4000, 0.01, np.float32)
    first[2000:] = 0.5
    history.add(0, first)
    mean, peak = history.over(2.0, 4.0)
    assert abs(mean - dbfs(np.full(10, 0.5))) < 0.01 and abs(peak - dbfs(np.full(10, 0.5))) < 0.01
    assert history.over(0.0, 2.0)[1] == pytest.approx(dbfs(np.full(10, 0.01)), abs=0.01)


def test_the_first_report_comes_within_seconds_of_the_start_then_every_period() -> None:
    from noisewatch.daemon.levels import FIRST_REPORT_S

    meter = LevelMeter(RATE, 60, None)
    _, reports = meter.push(np.zeros(RATE * (FIRST_REPORT_S + 60), dtype=np.float32))
    assert [(r.offset_s, r.period_s) for r in reports] == [(0.0, FIRST_REPORT_S), (float(FIRST_REPORT_S), 60)]
    meter.reset()  # a gap: the next report comes soon again
    _, reports = meter.push(np.zeros(RATE * FIRST_REPORT_S, dtype=np.float32))
    assert [r.period_s for r in reports] == [FIRST_REPORT_S]


@pytest.mark.parametrize("rate", [22050, 16000, 11025])
def test_levels_are_the_weighted_power_spectrum_of_each_second(rate: int) -> None:
    """The definition in the module docstring, computed directly: one rfft of the second, every bin's power
    weighted by A(f)^2 and summed (Parseval). Even rates take a cheaper route to it; odd ones this one."""
    rng = np.random.default_rng(rate)
    t = np.arange(rate) / rate
    audio = (0.5 * np.sin(2 * np.pi * 20 * t) + 1e-3 * rng.standard_normal(rate)).astype(np.float32)  # rumble
    second = LevelMeter(rate, 60, None).push(audio)[0][0]
    spectrum = np.fft.rfft(audio.astype(np.float64))
    twice = np.full(len(spectrum), 2.0)  # each bin stands for itself and its mirror in the full spectrum ...
    twice[0] = 1.0
    if rate % 2 == 0:
        twice[-1] = 1.0  # ... but DC and the Nyquist bin
    power = twice * (spectrum.real**2 + spectrum.imag**2) / rate**2
    a = 10 ** (a_weighting_db(np.fft.rfftfreq(rate, 1 / rate)) / 10)
    assert second.dbfs == pytest.approx(10 * np.log10(power.sum()), abs=1e-9)
    assert second.dbfs_a == pytest.approx(10 * np.log10((a * power).sum()), abs=1e-9)


def test_digital_silence_is_said_once_after_its_length_and_taken_back_by_any_sound() -> None:
    rate, watch = 48000, DigitalSilence(alarm_s=2.0)
    zeros = np.zeros((rate // 2, 2), np.float32)  # half a second, two channels
    assert [watch.heard(zeros, rate) for _ in range(4)] == [None, None, None, SilenceChange.BEGAN]
    assert watch.heard(zeros, rate) is None  # still silent: not said again
    hiss = zeros.copy()
    hiss[100, 1] = 2.0 ** -15  # one low bit on one channel is sound: a quiet room moves them all the time
    assert watch.heard(hiss, rate) is SilenceChange.ENDED
    assert [watch.heard(zeros, rate) for _ in range(4)] == [None, None, None, SilenceChange.BEGAN]  # counted afresh


def test_a_minute_of_exact_zeros_is_digital_silence_and_sound_ends_it() -> None:
    """README: `silent` "when an open microphone has given nothing but exact zeros for 60 s"."""
    from noisewatch.daemon.levels import DigitalSilence

    silence, rate = DigitalSilence(), 48000
    zeros = np.zeros(rate, dtype=np.float32)
    assert [silence.heard(zeros, rate) for _ in range(59)] == [None] * 59
    assert silence.heard(zeros, rate) is SilenceChange.BEGAN
    assert silence.heard(zeros, rate) is None  # said once
    assert silence.heard(np.full(rate, 1e-4, dtype=np.float32), rate) is SilenceChange.ENDED


def test_level_history_keeps_its_last_stretches_when_the_ring_wraps() -> None:
    from noisewatch.daemon.levels import LevelHistory

    rate = 1000
    audio = (0.1 * np.random.default_rng(1).standard_normal(5000)).astype(np.float32)
    audio[4200:4700] *= 5
    small, large = LevelHistory(keep=30, sample_rate=rate, span=50), LevelHistory(keep=200, sample_rate=rate, span=50)
    for start in range(0, 5000, 333):  # reads across the wrap, in pieces off the grid
        small.add(start, audio[start : start + 333])
        large.add(start, audio[start : start + 333])
    assert small.over(3.6, 5.0) == pytest.approx(large.over(3.6, 5.0), abs=1e-6)  # within the last 30 stretches
    assert small.over(0.0, 1.0) == (FLOOR_DBFS, FLOOR_DBFS)  # long gone from the ring


def test_level_history_leaves_out_the_stretch_that_ends_where_an_event_begins() -> None:
    """An event that begins where a stretch ends: that stretch is none of its audio. Its end, worked out in float
    seconds (begin + count / rate), came out a rounding above the event's start (22 hops of 512 at 22050 Hz in,
    and one stretch in 16): it counted as overlapping, and a click in it became the event's peak (-0.92 dBFS
    against the event's own -40)."""
    from noisewatch.daemon.levels import LevelHistory

    rate, span = 22050, 512
    audio = np.full(span * 100, 0.01, np.float32)
    audio[22 * span + 5] = 0.9  # a click in the stretch just before the event
    history = LevelHistory(keep=200, sample_rate=rate, span=span)
    history.add(0, audio)
    start_s = 23 * span / rate
    mean, peak = history.over(start_s, start_s + 1.0)
    assert (mean, peak) == pytest.approx((dbfs(np.full(10, 0.01)),) * 2, abs=0.01)


def test_the_daemon_s_level_history_holds_the_longest_event_allowed_in_bounded_memory() -> None:
    """detector.max_duration_s may be a day: an event piece that long is measured over all of its audio. The
    history was capped at 400000 hops (2.6 h), and a day-long event loud in its first seconds read -120 dBFS,
    the floor, for its mean and peak (over its last 2.6 h, silence)."""
    from noisewatch.bundle import default_model_path, load_bundle
    from noisewatch.config import Config
    from noisewatch.daemon.pipeline import Pipeline

    bundle = load_bundle(default_model_path())
    rate = bundle.features.sample_rate
    config = Config.model_validate({"detector": {"max_duration_s": 86400}})
    history = Pipeline.from_config(config, bundle, bundle.open_model()).history
    arrays = (history._begin, history._count, history._square, history._peak)
    assert sum(a.nbytes for a in arrays) <= 10_000_000
    block = 10 * rate
    history.add(0, np.full(block, 0.1, np.float32))  # loud for 10 s, then silent
    silence = np.zeros(block, np.float32)
    for start in range(block, 86400 * rate, block):
        history.add(start, silence)
    mean, peak = history.over(0.0, 86400.0)
    assert mean == pytest.approx(dbfs(np.full(10, 0.1)) + 10 * np.log10(10 / 86400), abs=0.01)
    assert peak == pytest.approx(dbfs(np.full(10, 0.1)), abs=0.01)

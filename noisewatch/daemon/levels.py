"""Sound levels from the sample stream: 1 s levels, and periodic Leq/Lmax/Lmin reports.

Conventions (pure numpy, no devices, no clocks):

- **dBFS** is ``20 log10(RMS)`` with full scale = 1.0, i.e. re a full-scale *square* wave: a
  full-scale sine reads -3.01 dBFS and a sine of RMS 0.1 reads -20 dBFS. Silence is floored at
  :data:`FLOOR_DBFS`.
- **A-weighting** is the IEC 61672-1 A curve applied in the frequency domain: each 1 s block is
  transformed with ``rfft``, every bin's power ``|X|^2`` is weighted by ``A(f)^2`` and summed
  (Parseval), giving the A-weighted mean square of that second. 1 kHz passes at 0 dB, 100 Hz
  at -19.1 dB. Exact for stationary tones on whole-Hz frequencies; no filter state to carry.
- **Lmax / Lmin** of a period are the highest and lowest of its 1 s Leq values (LAeq,1s max/min),
  not 125 ms "fast" levels: the 1 s values are what the loudness detector and the dashboard see.
- **Leq** of a period is the energy mean of its seconds (mean of the mean squares, then dB).

The pipeline hands the meter audio whose DC offset is removed (:mod:`noisewatch.dc_offset`): a
microphone's constant offset is not a level.

Time is the sample clock: ``offset_s`` counts samples pushed since construction, divided by the
rate. A partial second is kept between pushes, so the block size never changes the output.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import numpy as np

FLOOR_DBFS = -120.0
"""Level reported for silence (and anything quieter)."""
_FLOOR_POWER = 10.0 ** (FLOOR_DBFS / 10.0)
_A_1KHZ_DB = 2.0
"""Normalisation of the A curve so that A(1 kHz) = 0 dB (IEC 61672-1, rounded constant 2.00)."""
_A_POLES_HZ = (20.598997, 107.65265, 737.86223, 12194.217)
REPORT_DECIMALS = 2
"""Period reports carry levels rounded to 0.01 dB (the payload is for people and dashboards)."""


@dataclass(frozen=True)
class SecondLevel:
    """The levels of one full second of audio."""

    offset_s: float
    """Start of that second, in seconds since the stream began (sample clock)."""
    dbfs: float
    """RMS level, dBFS (full-scale square wave = 0 dBFS)."""
    dbfs_a: float
    """A-weighted RMS level, dBFS(A)."""
    peak_dbfs: float
    """Largest absolute sample, dBFS."""


def power_to_db(power: float) -> float:
    """Mean square -> dB re full scale, floored at :data:`FLOOR_DBFS`."""
    return 10.0 * float(np.log10(max(power, _FLOOR_POWER)))


def dbfs(samples: np.ndarray) -> float:
    """RMS level of ``samples`` in dBFS (see the module docstring); empty input reads the floor."""
    x = np.asarray(samples).reshape(-1)
    return power_to_db(float(np.dot(x, x)) / len(x)) if len(x) else FLOOR_DBFS  # no temporary: called per window


def peak_dbfs(samples: np.ndarray) -> float:
    """Largest absolute sample in dBFS (a full-scale sample reads 0)."""
    x = np.asarray(samples).reshape(-1)
    return power_to_db(max(float(x.max()), -float(x.min())) ** 2) if len(x) else FLOOR_DBFS


class LevelHistory:
    """Mean square and peak of each ``span`` samples of the recent stream, so that an event's level is measured over
    its own audio [start, end], onset included, whenever it is reported. Recorded as the audio streams in, on a
    fixed grid (any read size records the same stretches), in preallocated arrays (a ring of ``keep`` stretches).
    The daemon's span is the STFT hop (23 ms at 22050 Hz; some hops for a detector.max_duration_s over 2.6 h), and
    an event's edges are measured to within it."""

    def __init__(self, keep: int, sample_rate: int, span: int) -> None:
        self.sample_rate = sample_rate
        self._step = span
        self._allocate(keep)

    def _allocate(self, keep: int) -> None:
        self._begin = np.zeros(keep, dtype=np.int64)  # first sample of each stretch
        self._count = np.zeros(keep, dtype=np.int64)  # samples in it (fewer in one still filling, or cut by a gap)
        self._square = np.zeros(keep, dtype=np.float32)  # sum of squares (float32: a stretch is short)
        self._peak = np.zeros(keep, dtype=np.float32)  # largest square
        self._written = 0  # stretches recorded since the start; the ring holds the last ``keep``

    def take_over(self, previous: "LevelHistory", since_s: float | None = None) -> None:
        """Continue ``previous``'s record (a reload), kept to this history's own length, or back to ``since_s`` (an
        open event's start) and as much again when that is half of it or more: a shorter event bound splits pieces
        off the event at its next window, whose audio must not have overwritten theirs."""
        held = previous._order()
        if since_s is not None:
            ends = previous._begin[held] + previous._count[held]
            back = int(np.count_nonzero(ends > round(since_s * self.sample_rate)))
            if 2 * back > len(self._begin):
                self._allocate(back + len(self._begin))
        order = held[-len(self._begin):]
        for mine, theirs in ((self._begin, previous._begin), (self._count, previous._count),
                             (self._square, previous._square), (self._peak, previous._peak)):
            mine[: len(order)] = theirs[order]
        self._written = len(order)

    def add(self, start_sample: int, samples: np.ndarray) -> None:
        """Record audio that starts at stream sample ``start_sample``."""
        samples = np.asarray(samples, dtype=np.float32).reshape(-1)
        head = min(len(samples), -start_sample % self._step)  # up to the grid: the stretch still filling
        if head:
            self._fill(start_sample, samples[:head])
        whole = (len(samples) - head) // self._step * self._step
        if whole:
            spans = samples[head : head + whole].reshape(-1, self._step)
            squares = spans * spans
            first = np.arange(start_sample + head, start_sample + head + whole, self._step)
            self._append(first, self._step, squares.sum(axis=1), squares.max(axis=1))
        if head + whole < len(samples):
            self._fill(start_sample + head + whole, samples[head + whole :])

    def _fill(self, at: int, part: np.ndarray) -> None:
        """``part`` within one grid stretch: added to the last stretch when it ends right there, else a new one."""
        last = (self._written - 1) % len(self._begin)
        squares = part * part  # as ``add`` takes whole stretches
        square, peak = float(squares.sum()), float(squares.max())
        if self._written and self._begin[last] + self._count[last] == at and at % self._step:
            self._count[last] += len(part)
            self._square[last] += square
            self._peak[last] = max(self._peak[last], peak)
        else:
            self._append(np.array([at]), np.array([len(part)]), np.array([square]), np.array([peak]))

    def _append(self, begin: np.ndarray, count: np.ndarray | int, square: np.ndarray, peak: np.ndarray) -> None:
        at = self._written % len(self._begin)
        where: slice | np.ndarray = slice(at, at + len(begin))  # a slice unless the ring wraps: a hop's cost
        if at + len(begin) > len(self._begin):
            where = (at + np.arange(len(begin))) % len(self._begin)
        self._begin[where], self._count[where], self._square[where], self._peak[where] = begin, count, square, peak
        self._written += len(begin)

    def _order(self) -> np.ndarray:
        """Indices of the recorded stretches, oldest first."""
        keep = len(self._begin)
        return (np.arange(max(0, self._written - keep), self._written)) % keep

    def over(self, start_s: float, end_s: float) -> tuple[float, float]:
        """(mean dBFS, peak dBFS) of the recorded stretches overlapping [start_s, end_s]; a stretch partly inside
        counts with its own mean square for the part inside (the span is the resolution)."""
        held = self._order()
        begin, count = self._begin[held], self._count[held]
        # in whole samples: in float seconds a stretch ending where the event begins overlapped it by a rounding
        start, end = round(start_s * self.sample_rate), round(end_s * self.sample_rate)
        overlap = np.minimum(begin + count, end) - np.maximum(begin, start)
        inside = overlap > 0
        samples = int(overlap[inside].sum())
        if samples <= 0:
            return FLOOR_DBFS, FLOOR_DBFS
        energy = float((overlap[inside] * self._square[held][inside] / count[inside]).sum())
        return power_to_db(energy / samples), power_to_db(float(self._peak[held][inside].max()))


def a_weighting_db(freqs_hz: np.ndarray) -> np.ndarray:
    """IEC 61672-1 A-weighting in dB at ``freqs_hz`` (-inf at 0 Hz)."""
    f2 = np.asarray(freqs_hz, dtype=np.float64) ** 2
    p1, p2, p3, p4 = (p * p for p in _A_POLES_HZ)
    with np.errstate(divide="ignore"):
        ra = (p4 * f2 * f2) / ((f2 + p1) * np.sqrt((f2 + p2) * (f2 + p3)) * (f2 + p4))
        return 20.0 * np.log10(ra) + _A_1KHZ_DB


def parseval_weights(n: int) -> np.ndarray:
    """Per-rfft-bin factors so that ``sum(w * |rfft(x)|^2) == mean(x^2)`` for ``len(x) == n``."""
    w = np.full(n // 2 + 1, 2.0)
    w[0] = 1.0
    if n % 2 == 0:
        w[-1] = 1.0  # the Nyquist bin appears once in the full spectrum
    return w / float(n * n)


class _BlockPowers:
    """Plain and A-weighted mean square of one block of a fixed length.

    Both are weighted sums of the block's power spectrum. For an even length n the spectrum comes from one
    batched rfft of the even and the odd samples (length n/2 each): numpy builds an FFT plan, twiddles
    included, on every call, and for a single 22050-point row that plan cost more than the transform (3.3M
    against 1.7M instructions per block with the power and weights, callgrind). Bin k of the block is
    E_k + t_k O_k (t_k = e^(-2 pi i k/n)) and bin n/2 - j is the conjugate of E_j - t_j O_j, so each
    half-length bin j yields the power of two bins: |E_j|^2 + |t_j O_j|^2 +/- 2 Re(E_j conj(t_j O_j)).
    Equal to the direct rfft within float64 rounding.
    """

    def __init__(self, n: int, sample_rate: int) -> None:
        plain = parseval_weights(n)
        gain_db = a_weighting_db(np.fft.rfftfreq(n, d=1.0 / sample_rate))
        weights = np.stack((plain, plain * 10.0 ** (gain_db / 10.0)))  # (plain, A) per rfft bin
        self._weights = weights if n % 2 else None
        half = n // 2
        j = np.arange(half // 2 + 1)  # bins of the half-length rfft
        self._twiddle = np.exp(-2j * np.pi * j / n)
        mirrored = half - j > half // 2  # bin half - j is not also a bin j
        upper = np.where(mirrored, weights[:, np.minimum(half - j, half)], 0.0)
        self._sum_weights = weights[:, j] + upper
        self._difference_weights = 2.0 * (weights[:, j] - upper)

    def __call__(self, block: np.ndarray) -> tuple[float, float]:
        if self._weights is not None:  # odd length: no halves
            spectrum = np.fft.rfft(block)
            plain, a = self._weights @ (spectrum.real**2 + spectrum.imag**2)
            return float(plain), float(a)
        even, odd = np.fft.rfft(block.reshape(-1, 2).T)
        turned = self._twiddle * odd
        both = even.real**2 + even.imag**2 + turned.real**2 + turned.imag**2
        cross = even.real * turned.real + even.imag * turned.imag
        plain, a = self._sum_weights @ both + self._difference_weights @ cross
        return float(plain), float(a)


class _Period:
    """Accumulates the mean squares of the seconds of one report period."""

    def __init__(self) -> None:
        self.clear()

    def clear(self) -> None:
        self.offset_s = 0.0
        self.plain: list[float] = []
        self.a: list[float] = []

    def add(self, offset_s: float, plain: float, a: float) -> None:
        if not self.plain:
            self.offset_s = offset_s
        self.plain.append(plain)
        self.a.append(a)

    def __len__(self) -> int:
        return len(self.plain)


@dataclass(frozen=True)
class Triple:
    """A period's energy mean, loudest and quietest 1 s level, in one unit (rounded for people and dashboards)."""

    leq: float
    lmax: float
    lmin: float

    @classmethod
    def of(cls, powers: list[float], offset_db: float = 0.0) -> "Triple":
        """From the period's 1 s mean squares, plus an offset (a calibration)."""
        leq, lmax, lmin = (round(power_to_db(p) + offset_db, REPORT_DECIMALS)
                           for p in (float(np.mean(powers)), max(powers), min(powers)))
        return cls(leq, lmax, lmin)


@dataclass(frozen=True)
class PeriodLevels:
    """The levels of one report period, on the sample clock."""

    offset_s: float
    period_s: int
    dbfs: Triple
    dbfs_a: Triple
    dba_spl: Triple | None
    """A-weighted SPL, only when a calibration is set."""


def period_levels(period_s: int, offset_s: float, plain: list[float], a: list[float],
                  calibration_db: float | None) -> PeriodLevels:
    """One period's levels, from its seconds' plain and A-weighted mean squares."""
    return PeriodLevels(round(offset_s, 3), period_s, Triple.of(plain), Triple.of(a),
                        None if calibration_db is None else Triple.of(a, calibration_db))


FIRST_REPORT_S = 5
"""The first period after a start (or a gap) is at most this long, so a subscriber replaces the previous run's
retained level within seconds instead of showing it as current for a whole period."""


class LevelMeter:
    """Turns model-rate mono audio of any block size into 1 s levels and period reports.

    A period lasts ``interval_s`` whole seconds; the first one after a start or a
    reset at most FIRST_REPORT_S. Called from the processing loop only; not thread-safe.
    """

    def __init__(self, sample_rate: int, interval_s: int, calibration_db: float | None) -> None:
        self.sample_rate = int(sample_rate)
        self.period_s = interval_s
        self.calibration_db = calibration_db
        self._powers = _BlockPowers(self.sample_rate, self.sample_rate)
        self._block = np.zeros(self.sample_rate, dtype=np.float64)
        self._period = _Period()
        self._samples = 0  # samples pushed since construction: the sample clock
        self._filled = 0
        self._length_s = min(self.period_s, FIRST_REPORT_S)
        """Seconds in the period being filled."""

    def reset(self, at_sample: int | None = None) -> None:
        """Drop the partial second and partial period (after a stream gap); the clock continues, or goes on
        from ``at_sample`` (a new meter taking over a running stream)."""
        if at_sample is not None:
            self._samples = at_sample
        self._filled = 0
        self._period.clear()
        self._length_s = min(self.period_s, FIRST_REPORT_S)

    def push(self, samples: np.ndarray) -> tuple[list[SecondLevel], list[PeriodLevels]]:
        """Append audio; return the seconds and period reports it completes, oldest first."""
        samples = np.asarray(samples).reshape(-1)  # float32 from the stream: cast once, into the block
        seconds: list[SecondLevel] = []
        reports: list[PeriodLevels] = []
        while len(samples):
            take = min(len(samples), self.sample_rate - self._filled)
            self._block[self._filled : self._filled + take] = samples[:take]
            self._filled += take
            self._samples += take
            samples = samples[take:]
            if self._filled == self.sample_rate:
                self._filled = 0
                seconds.append(self._close_second(reports))
        return seconds, reports

    def flush(self) -> list[PeriodLevels]:
        """The period being filled, reported over the whole seconds it holds (its ``period_s``), or nothing: at a stop,
        a gap or a file's end, up to a period of levels was lost, and a stop at every reload-free restart."""
        return [self._report_period()] if len(self._period) else []

    def _report_period(self) -> PeriodLevels:
        """The report of the seconds in the period (as many as it holds), which starts afresh."""
        period = self._period
        report = period_levels(len(period), period.offset_s, period.plain, period.a, self.calibration_db)
        period.clear()
        return report

    def _close_second(self, reports: list[PeriodLevels]) -> SecondLevel:
        """Level of the full block; appends a report to ``reports`` when it ends a period."""
        offset_s = (self._samples - self.sample_rate) / self.sample_rate
        plain, a = self._powers(self._block)
        self._period.add(offset_s, plain, a)
        if len(self._period) == self._length_s:
            reports.append(self._report_period())
            self._length_s = self.period_s
        return SecondLevel(offset_s, power_to_db(plain), power_to_db(a), peak_dbfs(self._block))


DIGITAL_SILENCE_S = 60.0
"""Exact zeros for this long from a live input is reported: a muted capture, a gain at 0 or a dead converter.
Not a quiet street: even a quiet room's noise moves a microphone's low bits."""


class SilenceChange(enum.Enum):
    """What a block changed about an input's digital silence (:meth:`DigitalSilence.heard`)."""

    BEGAN = "began"
    """The input has given one value for ``alarm_s``: said once."""
    ENDED = "ended"
    """Sound again after a silence that was said."""


class DigitalSilence:
    """Counts how long an input has delivered one value over and over (in seconds of its audio): exact zeros, or a
    converter stuck at one code (-1, 0xFFFF, where many idle or dead ones sit), which "exact zeros" took for sound."""

    def __init__(self, alarm_s: float = DIGITAL_SILENCE_S) -> None:
        self.alarm_s = alarm_s
        self.same_value_s = 0.0
        self.silent = False
        self._value: np.ndarray | None = None
        """The frame the input has repeated since the silence began (one value per channel)."""

    def heard(self, samples: np.ndarray, sample_rate: int) -> SilenceChange | None:
        """The change this block makes to what is said (a silence of ``alarm_s``, or sound after it), else None."""
        first = samples[0]
        if not (samples == first).all() or (self._value is not None and not np.array_equal(first, self._value)):
            self.same_value_s, self._value = 0.0, None
            if self.silent:
                self.silent = False
                return SilenceChange.ENDED
            return None
        self._value = first
        self.same_value_s += len(samples) / sample_rate
        if not self.silent and self.same_value_s >= self.alarm_s:
            self.silent = True
            return SilenceChange.BEGAN
        return None

"""MFCC front-end shared by training, evaluation and the daemon.

numpy only (no librosa at run time). With default settings it reproduces
``librosa.feature.mfcc(y, sr=22050, n_mfcc=50)`` averaged over time, which is what
the earlier notebook project trained on. The computation is split into per-frame
steps (:func:`frame_mel_db`, then :func:`frame_values` of the clamped frames) and a
per-window step (:func:`summarize`) so that the streaming front-end in the daemon can
reuse frames between overlapping windows and still call exactly this code.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

SHORT_CLIP_MODES = ("pad", "tile")
TOP_DB_SCOPES = ("window", "frame")
MFCC_STATS = ("mean", "std", "delta_std", "max", "min", "p10", "p90", "skew")
"""Summaries over time of each MFCC (n_mfcc values each); ``delta_std`` is the std of the frame-to-frame
differences (how fast the timbre changes), ``p10``/``p90`` are percentiles, ``skew`` is the third
standardized moment."""
MEL_STATS = ("mel_mean", "mel_std")
"""Summaries over time of each clamped log-mel band (n_mels values each)."""
TEMPORAL_STATS = ("modulation", "periodicity")
"""How the first MFCC trajectories change over time, which per-coefficient summaries cannot see:
``modulation`` is the log energy in each modulation band (a jackhammer's blows, an engine's throb, an air
conditioner's none), ``periodicity`` the strongest autocorrelation in each lag range (barks, toots, blows
that repeat)."""
SHAPE_STATS = ("spectral_shape",)
"""How peaky or flat the spectrum is within each group of adjacent mel bands, frame by frame: a siren, a horn
or a tune is peaky, an air conditioner, an engine or a drill flat. Per group: flatness (geometric over
arithmetic mean power), peak-to-mean and contrast (loudest fifth of bands over quietest fifth), all in dB,
each as mean and std over time."""
PEAK_STATS = ("peak",)
"""The mean of every per-frame value (MFCCs, and shape measures when asked for) over the window's loudest
``peak_s``: a 1 s bark in 4 s of rain is a quarter of the window's mean, but all of this."""
STATS = MFCC_STATS + MEL_STATS + TEMPORAL_STATS + SHAPE_STATS + PEAK_STATS
TEMPORAL_FIELDS = ("temporal_mfccs", "modulation_bands_hz", "periodicity_lags_s")
SHAPE_FIELDS = ("shape_groups",)
PEAK_FIELDS = ("peak_s",)
STAT_FIELDS = {"modulation": TEMPORAL_FIELDS, "periodicity": TEMPORAL_FIELDS, "spectral_shape": SHAPE_FIELDS,
               "peak": PEAK_FIELDS}
"""The settings only some statistics read: checked and written only when one of those is used."""
SHAPE_MEASURES = 3  # flatness, peak-to-mean, contrast
DB_TO_LN = np.float32(np.log(10.0) / 10.0)  # dB -> natural log of power: exp(db * DB_TO_LN) == 10 ** (db / 10)
SKEW_FLOOR = 1e-6  # std below which a coefficient counts as constant (skew 0)
AMIN = 1e-10  # floor of the power spectrum before log, as librosa.power_to_db
TRACK_FLOOR = 1e-3
"""Std (dB units) below which an MFCC trajectory counts as constant and has no periodicity: float32 rounding of
MFCCs of size ~1e2 leaves ~1e-5, which must not read as a perfectly periodic track (silence)."""
MODULATION_FLOOR = 1e-3  # added to modulation band energies before log10 (a constant window: -3)


@dataclass(frozen=True)
class FeatureSettings:
    """Everything that defines a feature vector; stored in every model bundle."""

    sample_rate: int = 22050
    """Model sample rate in Hz; all audio is resampled to it."""
    window_s: float = 4.0
    """Length of one classification window in seconds."""
    n_fft: int = 2048
    """FFT size and STFT window length in samples."""
    hop_length: int = 512
    """STFT hop in samples."""
    center: bool = True
    """Frames centred on multiples of hop_length over the zero-padded window (librosa's ``center=True``), or
    (False) only the frames wholly inside the window: each of those is a frame of the stream, so the daemon
    computes it once, where a centred window's two frames at each end see its padding and cost an FFT each per
    window."""
    n_mels: int = 128
    """Number of Slaney-normalised mel bands."""
    fmin: float = 0.0
    """Lowest mel band edge in Hz."""
    fmax: float | None = None
    """Highest mel band edge in Hz (None: Nyquist)."""
    top_db: float | None = 80.0
    """Dynamic range kept below the loudest mel bin, in dB (None: unclipped)."""
    top_db_per: Literal["window", "frame"] = "window"
    """Whose loudest bin ``top_db`` counts from: the window's (librosa's ``power_to_db`` of the window's
    spectrogram) or each frame's own (a frame's clamped values then do not depend on the window it is in, so the
    daemon forms them once)."""
    n_mfcc: int = 50
    """Number of DCT-II (ortho) coefficients kept."""
    stats: tuple[str, ...] = ("mean",)
    """Summaries over time of each coefficient, concatenated in this order."""
    short_clip: Literal["pad", "tile"] = "tile"
    """How a clip shorter than the window is made one window long."""
    temporal_mfccs: int = 8
    """MFCC trajectories (c0 first) that ``modulation`` and ``periodicity`` describe."""
    modulation_bands_hz: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0)
    """Lower edges of the modulation bands in Hz; each band ends at the next edge, the last at the
    frame rate's Nyquist frequency (21.5 Hz for hop 512 at 22050 Hz)."""
    periodicity_lags_s: tuple[float, ...] = (0.02, 0.1, 0.23, 0.5, 1.0, 2.0)
    """Edges of the lag ranges (seconds, rounded to frames) in which ``periodicity`` is taken."""
    shape_groups: int = 6
    """Groups of adjacent mel bands (as equal as n_mels allows) that ``spectral_shape`` describes."""
    peak_s: float = 1.0
    """Length of the loudest stretch ``peak`` describes, in seconds (rounded to frames)."""

    def __post_init__(self) -> None:
        for name in ("stats", *TEMPORAL_FIELDS):
            value = getattr(self, name)
            if isinstance(value, list):  # from JSON or a caller: a list would not hash (caches key on settings)
                object.__setattr__(self, name, tuple(value))
        if self.top_db_per not in TOP_DB_SCOPES:
            raise ValueError(f"top_db_per must be one of {TOP_DB_SCOPES}, not {self.top_db_per!r}")
        if self.short_clip not in SHORT_CLIP_MODES:
            raise ValueError(f"short_clip must be one of {SHORT_CLIP_MODES}, not {self.short_clip!r}")
        unknown = set(self.stats) - set(STATS)
        if unknown or not self.stats:
            raise ValueError(f"stats must be a non-empty subset of {STATS}, not {self.stats!r}")
        if self.n_mfcc > self.n_mels:
            raise ValueError("n_mfcc cannot exceed n_mels")
        self._check_frames()
        used = self.used_fields
        if used & set(TEMPORAL_FIELDS):
            self._check_temporal()
        if "shape_groups" in used and (type(self.shape_groups) is not int
                                       or not 1 <= self.shape_groups <= self.n_mels // 5):
            raise ValueError(f"shape_groups must be a whole number from 1 to n_mels/5 ({self.n_mels // 5}: five "
                             f"bands a group at least), not {self.shape_groups!r}")
        if "peak_s" in used and not 1 <= self.peak_frames() <= self.frames_per_window():
            raise ValueError(f"peak_s must be from one frame to the window's {self.frames_per_window()} frames "
                             f"({self.frames_per_window() / self.frame_rate:.2f} s), not {self.peak_s!r}")

    def _check_frames(self) -> None:
        """What the stream needs to number a window's frames on one grid with the stream's (each frame centred
        on a multiple of hop_length)."""
        if type(self.center) is not bool:
            raise ValueError(f"center must be true or false, not {self.center!r}")
        if self.n_fft % 2 or not 0 < self.n_fft <= self.window_samples:
            raise ValueError(f"n_fft must be even and at most the window ({self.window_samples} samples), "
                             f"not {self.n_fft!r}")
        if not self.center and (self.n_fft // 2) % self.hop_length:
            raise ValueError(f"without center, n_fft / 2 ({self.n_fft // 2}) must be a whole number of hops "
                             f"({self.hop_length}): a window's first frame is then centred on a multiple of the hop")
        if self.top_db_per == "frame" and self.top_db is None:
            raise ValueError("top_db_per 'frame' needs a top_db (without one there is no clamp to count)")

    def _check_temporal(self) -> None:
        if not 1 <= self.temporal_mfccs <= self.n_mfcc:
            raise ValueError(f"temporal_mfccs must be 1..n_mfcc ({self.n_mfcc}), not {self.temporal_mfccs}")
        bands = self.modulation_bands_hz
        if not bands or bands[0] <= 0 or list(bands) != sorted(set(bands)) or bands[-1] >= self.frame_rate / 2:
            raise ValueError(f"modulation_bands_hz must rise from above 0 Hz to below {self.frame_rate / 2:.2f} Hz,"
                             f" not {bands!r}")
        lags = self.periodicity_frames()
        if len(lags) < 2 or lags[0] < 1 or list(lags) != sorted(set(lags)) or lags[-1] >= self.frames_per_window():
            raise ValueError(f"periodicity_lags_s must rise, at least a frame apart, from one frame to less than "
                             f"the window, not {self.periodicity_lags_s!r}")

    @property
    def used_fields(self) -> set[str]:
        """The fields of :data:`STAT_FIELDS` that the asked-for statistics read (the others mean nothing)."""
        return {name for stat in self.stats for name in STAT_FIELDS.get(stat, ())}

    @property
    def window_samples(self) -> int:
        return int(round(self.window_s * self.sample_rate))

    @property
    def frame_rate(self) -> float:
        """STFT frames per second."""
        return self.sample_rate / self.hop_length

    @property
    def n_features(self) -> int:
        return sum(self._width(name) for name in self.stats)

    def _width(self, stat: str) -> int:
        if stat == "modulation":
            return self.temporal_mfccs * len(self.modulation_bands_hz)
        if stat == "periodicity":
            return self.temporal_mfccs * (len(self.periodicity_lags_s) - 1)
        if stat == "spectral_shape":
            return self.shape_groups * SHAPE_MEASURES * 2
        if stat == "peak":
            return self.n_mfcc + (self.shape_groups * SHAPE_MEASURES if "spectral_shape" in self.stats else 0)
        return self.n_mels if stat in MEL_STATS else self.n_mfcc

    def frames_per_window(self) -> int:
        """STFT frames of one window, as librosa counts them."""
        return 1 + (self.window_samples - (0 if self.center else self.n_fft)) // self.hop_length

    def peak_frames(self) -> int:
        """``peak_s`` in frames."""
        return int(round(self.peak_s * self.frame_rate))

    def periodicity_frames(self) -> tuple[int, ...]:
        """The lag edges of ``periodicity`` in frames."""
        return tuple(int(round(lag * self.frame_rate)) for lag in self.periodicity_lags_s)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready; without the fields of statistics not used (:data:`STAT_FIELDS`), and without ``center``
        when it is True, so such bundles (and feature-cache keys) stay exactly what earlier versions wrote and
        read; so is ``top_db_per`` when it is "window" (an earlier daemon refuses a bundle with either set
        otherwise: it would compute other values)."""
        unused = {name for names in STAT_FIELDS.values() for name in names} - self.used_fields
        if self.center:
            unused.add("center")
        if self.top_db_per == "window":
            unused.add("top_db_per")
        data = {key: value for key, value in dataclasses.asdict(self).items() if key not in unused}
        return {key: list(value) if isinstance(value, tuple) else value for key, value in data.items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "FeatureSettings":
        """Settings from a bundle's or a training run's JSON, a number of the wrong kind refused naming its key (a
        sample rate given as "22050" failed with "can't multiply sequence by non-int of type 'float'")."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown feature settings: {sorted(unknown)}")
        for setting in dataclasses.fields(cls):
            if setting.name in data:
                _check_number(setting, data[setting.name])
        return cls(**data)


def _check_number(setting: dataclasses.Field[Any], value: Any) -> None:
    """A numeric setting's JSON value is a number, a whole one where the type is ``int``, or null where the type
    takes None (``fmax``: "8000" was taken as it was, ``true`` made the top mel band edge 1 Hz, and a word ended the
    first window in a traceback); ``center`` and the settings of words and lists are checked by ``__post_init__``."""
    kinds = _setting_types()[setting.name]
    kind = next((number for number in (int, float) if number in kinds), None)
    optional = type(None) in kinds
    if kind is None or (optional and value is None):
        return
    whole = kind is int
    if not (type(value) is int or (type(value) is float and not whole)):
        raise ValueError(f"features.{setting.name} must be {'a whole number' if whole else 'a number'}"
                         f"{' or null' if optional else ''}, not {value!r}")


@functools.lru_cache(maxsize=1)
def _setting_types() -> dict[str, tuple[Any, ...]]:
    """Each setting's types, read from its annotation (the members of a union, None among them where it takes null),
    not from its text: ``Optional[float]`` reads as ``float | None`` does."""
    def members(hint: Any) -> tuple[Any, ...]:
        return typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)

    return {name: members(hint) for name, hint in typing.get_type_hints(FeatureSettings).items()}


# --- filters -----------------------------------------------------------------------------------

def _hz_to_mel(hz: np.ndarray | float) -> np.ndarray:
    """Slaney's mel scale: linear below 1 kHz, logarithmic above."""
    hz = np.asarray(hz, dtype=np.float64)
    f_sp = 200.0 / 3
    min_log_hz, min_log_mel, logstep = 1000.0, 1000.0 / f_sp, np.log(6.4) / 27.0
    linear = hz / f_sp
    log = min_log_mel + np.log(np.maximum(hz, min_log_hz) / min_log_hz) / logstep
    return np.where(hz >= min_log_hz, log, linear)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    mel = np.asarray(mel, dtype=np.float64)
    f_sp = 200.0 / 3
    min_log_hz, min_log_mel, logstep = 1000.0, 1000.0 / f_sp, np.log(6.4) / 27.0
    linear = f_sp * mel
    log = min_log_hz * np.exp(logstep * (np.maximum(mel, min_log_mel) - min_log_mel))
    return np.where(mel >= min_log_mel, log, linear)


@functools.lru_cache(maxsize=8)
def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, fmin: float, fmax: float | None) -> np.ndarray:
    """Slaney-normalised triangular filters, shape (n_mels, 1 + n_fft // 2); as librosa.filters.mel."""
    fmax = sample_rate / 2 if fmax is None else fmax
    fft_hz = np.linspace(0.0, sample_rate / 2, 1 + n_fft // 2)
    edges_hz = _mel_to_hz(np.linspace(_hz_to_mel(np.asarray(fmin)), _hz_to_mel(np.asarray(fmax)), n_mels + 2))
    widths = np.diff(edges_hz)
    ramps = edges_hz[:, None] - fft_hz[None, :]
    lower = -ramps[:-2] / widths[:-1, None]
    upper = ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    weights *= (2.0 / (edges_hz[2:] - edges_hz[:-2]))[:, None]
    weights.setflags(write=False)
    return weights


@functools.lru_cache(maxsize=8)
def dct_matrix(n_mfcc: int, n_mels: int) -> np.ndarray:
    """Orthonormal DCT-II basis, shape (n_mfcc, n_mels)."""
    k = np.arange(n_mfcc)[:, None]
    n = np.arange(n_mels)[None, :]
    basis = np.cos(np.pi * k * (2 * n + 1) / (2 * n_mels)) * np.sqrt(2.0 / n_mels)
    basis[0] /= np.sqrt(2.0)
    basis.setflags(write=False)
    return basis


@functools.lru_cache(maxsize=8)
def hann_window(n_fft: int) -> np.ndarray:
    """Periodic Hann window (scipy's ``get_window('hann', n, fftbins=True)``)."""
    window = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n_fft) / n_fft)
    window.setflags(write=False)
    return window


# --- per-frame and per-window steps --------------------------------------------------------------

def frame_mel_db(frames: np.ndarray, settings: FeatureSettings) -> np.ndarray:
    """Mel power in dB (before the top_db clamp) of raw frames, shape (n, n_fft) -> (n, n_mels), float32."""
    return windowed_mel_db(np.asarray(frames) * hann_window(settings.n_fft), settings)


def windowed_mel_db(windowed: np.ndarray, settings: FeatureSettings) -> np.ndarray:
    """:func:`frame_mel_db` of frames already multiplied by the Hann window (the stream windows them in place).

    The FFT runs in float64: numpy's float32 FFT is about 4x slower (numpy 2.4; scipy's is faster but
    importing scipy.fft costs ~30 MiB of RSS). The mel projection and log run in float32, as librosa
    computes them; the projection skips the filterbank's zeros (:func:`_mel_blocks`).
    """
    spectrum = np.fft.rfft(windowed, axis=-1)
    mel = mel_power((spectrum.real**2 + spectrum.imag**2).astype(np.float32), settings)
    np.log10(np.maximum(mel, np.float32(AMIN), out=mel), out=mel)
    mel *= np.float32(10.0)
    return mel


def mel_power(power: np.ndarray, settings: FeatureSettings) -> np.ndarray:
    """Power spectra through the mel filterbank: (..., 1 + n_fft // 2) float32 -> (..., n_mels) float32."""
    given = power.shape[-1] if power.ndim else 0
    if given != 1 + settings.n_fft // 2:  # the blocks alone would not notice: they stop at the last weighted bin
        raise ValueError(f"power spectra of {given} bins, not the {1 + settings.n_fft // 2} of n_fft {settings.n_fft}")
    mel = np.empty(power.shape[:-1] + (settings.n_mels,), dtype=np.float32)
    for filters, bins, weights in _mel_blocks(settings.sample_rate, settings.n_fft, settings.n_mels, settings.fmin,
                                              settings.fmax):
        np.matmul(power[..., bins], weights, out=mel[..., filters])
    return mel


MEL_BLOCK = 16
"""Filters per block of the mel projection: fewer blocks read more zeros, more blocks cost more calls."""


@functools.lru_cache(maxsize=8)
def _mel_blocks(sample_rate: int, n_fft: int, n_mels: int, fmin: float,
                fmax: float | None) -> tuple[tuple[slice, slice, np.ndarray], ...]:
    """The filterbank as blocks of neighbouring filters, each with the FFT bins it reads: (filters, bins,
    weights (bins, filters) float32).

    A triangular filter reads only the bins between its neighbours' centres: 98.5% of the dense matrix is zeros
    (128 filters over 1025 bins). Blocks of MEL_BLOCK filters over their own bins do 13% of its products,
    the same nonzero ones, so the mel values move by float32 rounding only."""
    bank = mel_filterbank(sample_rate, n_fft, n_mels, fmin, fmax)
    blocks = []
    for first in range(0, n_mels, MEL_BLOCK):
        filters = slice(first, min(first + MEL_BLOCK, n_mels))
        read = np.flatnonzero(bank[filters].any(axis=0))
        bins = slice(int(read[0]), int(read[-1]) + 1) if len(read) else slice(0, 0)
        weights = np.ascontiguousarray(bank[filters, bins].T, dtype=np.float32)
        weights.setflags(write=False)
        blocks.append((filters, bins, weights))
    return tuple(blocks)


def signal_frames(y: np.ndarray, settings: FeatureSettings) -> np.ndarray:
    """STFT frames of a signal one hop_length apart: centred on multiples of it over the zero-padded signal
    (librosa's center=True), or those wholly inside the signal (``settings.center`` False)."""
    y = np.asarray(y, dtype=np.float64)
    if settings.center:
        half = settings.n_fft // 2
        y = np.pad(y, (half, half))
    view = np.lib.stride_tricks.sliding_window_view(y, settings.n_fft)
    return view[:: settings.hop_length]


def clamp_db(mel_db: np.ndarray, settings: FeatureSettings) -> np.ndarray:
    """Keep top_db of dynamic range below the loudest bin of the window, as librosa.power_to_db does, or of
    each frame (``top_db_per``)."""
    if settings.top_db is None:
        return mel_db
    if settings.top_db_per == "frame":
        return np.maximum(mel_db, mel_db.max(axis=1, keepdims=True) - settings.top_db)
    return np.maximum(mel_db, mel_db.max() - settings.top_db)


def mfcc_frames(mel_db: np.ndarray, settings: FeatureSettings) -> np.ndarray:
    """Clamp, then DCT: (n, n_mels) mel dB -> (n, n_mfcc)."""
    return mfcc_rows(clamp_db(mel_db, settings), settings)


def mfcc_rows(clamped: np.ndarray, settings: FeatureSettings) -> np.ndarray:
    """DCT of clamped mel-dB frames: (n, n_mels) -> (n, n_mfcc) MFCCs, float64."""
    return clamped @ dct_matrix(settings.n_mfcc, settings.n_mels).T


def shape_measures(clamped: np.ndarray, settings: FeatureSettings) -> np.ndarray:
    """Flatness, peak-to-mean and contrast (dB) of each mel-band group of each clamped frame, (n, groups x 3).

    Frame by frame, so the stream computes each frame once. Each group's bands are sorted in place (adjacent
    groups of one width are one sort call), so a group's loudest band, loudest fifth and quietest fifth sit at
    fixed places; each group's mean dB, loudest band and contrast are then one product with the plan's weights,
    already in the measures' order, less the group's mean power in dB where it counts. A constant frame is flat
    everywhere: exact zeros, not rounding noise (its mean power is a sum of ones over their count, exactly 1).
    """
    plan = _shape_plan(settings.n_mels, settings.shape_groups)
    db = clamped - clamped.max(axis=1, keepdims=True)  # each measure is shift-invariant per frame
    mean_power = np.exp(db * DB_TO_LN) @ plan.members
    mean_power /= plan.sizes
    log_mean_power = np.log10(mean_power, out=mean_power)
    for first, count, width in plan.runs:  # a view (db is C-ordered, the split axis contiguous): sorted in place
        db[:, first : first + count * width].reshape(len(db), count, width).sort(axis=2)
    measures = db @ plan.weights
    measures -= log_mean_power @ plan.spread  # 10 x each: the group's mean power in dB, where it counts
    return measures


class _WindowStats:
    """The statistics of one window's clamped mel-dB frames.

    The per-frame values they summarise (:func:`frame_values`: MFCCs, then spectral shape measures) are
    formed once, on demand, unless the caller already has them: the stream keeps them frame by frame
    (:func:`summarize_frames`) and then builds the window's clamped frames only if a statistic reads them.
    """

    def __init__(self, clamped: Callable[[], np.ndarray], settings: FeatureSettings,
                 values: np.ndarray | None = None) -> None:
        self.settings = settings
        self._clamped = clamped
        if values is not None:
            self.__dict__["values"] = values  # the cached_property's value, already known

    @functools.cached_property
    def clamped(self) -> np.ndarray:
        return self._clamped()

    @functools.cached_property
    def values(self) -> np.ndarray:
        return frame_values(self.clamped, self.settings)

    @property
    def frames(self) -> np.ndarray:
        """Per-frame MFCCs, (frames, n_mfcc)."""
        return self.values[:, : self.settings.n_mfcc]

    @functools.cached_property
    def moments(self) -> tuple[np.ndarray, np.ndarray]:
        """Mean and std over time of every per-frame value, in one pass: two products with a row of 1/n, the
        variance as the mean square less the squared mean (the few calls cost about 60% of centring all the values
        first). In float64 the variance's rounding is about 1e-16 of the mean square: nothing beside the std of any real
        track, but a constant one's std reads up to ~2e-5 rather than 0 (for MFCC-0, about 580: a third of its float32
        step)."""
        weights = np.full(len(self.values), 1.0 / len(self.values))
        mean = weights @ self.values
        variance = weights @ np.square(self.values)
        variance -= mean * mean
        return mean, np.sqrt(np.maximum(variance, 0.0, out=variance), out=variance)

    @functools.cached_property
    def percentiles(self) -> np.ndarray:
        return np.percentile(self.frames, (10, 90), axis=0)

    def skew(self) -> np.ndarray:
        n_mfcc = self.settings.n_mfcc
        mean, std = self.moments
        third = np.mean((self.frames - mean[:n_mfcc]) ** 3, axis=0)
        std = std[:n_mfcc]
        return np.divide(third, std**3, out=np.zeros_like(std), where=std > SKEW_FLOOR)

    @functools.cached_property
    def tracks(self) -> np.ndarray:
        """The first ``temporal_mfccs`` MFCC trajectories less their means, (coefficients, frames), float32.

        ``modulation`` and ``periodicity`` take them in float32 (their products then cost about half): they are
        centred in float64 first, so a constant track is still exact zeros, not rounding noise. C-ordered: a
        transposed (Fortran-ordered) left operand costs the products ~10% more instructions."""
        count = self.settings.temporal_mfccs
        return (self.values[:, :count] - self.moments[0][:count]).T.astype(np.float32, order="C")

    def modulation(self) -> np.ndarray:
        """Log10 energy of each track's Hann-windowed spectrum in each modulation band, band-major."""
        settings = self.settings
        dft, bands = _modulation_plan(len(self.values), settings.frame_rate, settings.modulation_bands_hz)
        parts = self.tracks @ dft
        return np.log10((parts * parts) @ bands + MODULATION_FLOOR).T.ravel()

    def periodicity(self) -> np.ndarray:
        """Each track's highest autocorrelation (1 at lag 0) in each lag range, range-major; 0 for a constant track.

        The highest correlation of a range over the lag-0 one is the highest of their quotients, exactly (a
        division by a positive number keeps the order, and so does its rounding): a few divisions, not one a lag."""
        tracks = self.tracks
        dft, cosines, starts = _periodicity_plan(self.settings, tracks.shape[1])
        parts = tracks @ dft
        np.square(parts, out=parts)
        power = parts[:, : len(cosines)]
        power += parts[:, len(cosines) :]
        correlation = power @ cosines  # lag 0, then the lags of the ranges
        energy = correlation[:, :1]  # n x the track's variance
        highest = np.maximum.reduceat(correlation[:, 1:], starts, axis=1)
        return (highest / np.where(energy <= tracks.shape[1] * TRACK_FLOOR**2, np.inf, energy)).T.ravel()

    def spectral_shape(self) -> np.ndarray:
        """The per-frame measures of :func:`shape_measures`: mean and std over time, group-major."""
        mean, std = self.moments
        n_mfcc = self.settings.n_mfcc  # values: the MFCCs, then the shape measures (asked for: we are here)
        return np.concatenate([mean[n_mfcc:, None], std[n_mfcc:, None]], axis=1).ravel()

    def peak(self) -> np.ndarray:
        """Every per-frame value's mean over the loudest ``peak_s`` stretch (loudness: c0, the frame's mean
        clamped level; the first of equally loud stretches)."""
        span = self.settings.peak_frames()
        running = np.concatenate([[0.0], np.cumsum(self.values[:, 0])])
        first = int(np.argmax(running[span:] - running[:-span]))
        return self.values[first : first + span].mean(axis=0)

    def get(self, name: str) -> np.ndarray:
        """One named statistic (see :data:`STATS`)."""
        return _STAT_PARTS[name](self)


_STAT_PARTS: dict[str, Callable[[_WindowStats], np.ndarray]] = {
    "mean": lambda window: window.moments[0][: window.settings.n_mfcc],
    "std": lambda window: window.moments[1][: window.settings.n_mfcc],
    "delta_std": lambda window: np.diff(window.frames, axis=0).std(axis=0),
    "max": lambda window: window.frames.max(axis=0),
    "min": lambda window: window.frames.min(axis=0),
    "p10": lambda window: window.percentiles[0],
    "p90": lambda window: window.percentiles[1],
    "skew": _WindowStats.skew,
    "mel_mean": lambda window: window.clamped.mean(axis=0),
    "mel_std": lambda window: window.clamped.std(axis=0),
    "modulation": _WindowStats.modulation,
    "periodicity": _WindowStats.periodicity,
    "spectral_shape": _WindowStats.spectral_shape,
    "peak": _WindowStats.peak,
}
"""How each statistic is read from a window's :class:`_WindowStats` (built once, not per window)."""


@functools.lru_cache(maxsize=8)
def _periodicity_plan(settings: FeatureSettings, n_frames: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For ``periodicity``: the real DFT of a track zero-padded to a size no circular wrap reaches the lags kept
    from, as one (n_frames, 2 x bins) product, cosines then sines (numpy's FFT of a few short rows costs more in
    its Python wrapper and the power's four calls than this product); the inverse real DFT of the power spectrum
    (the sum of both parts' squares, bins long: half the product of the squares themselves) at lag 0 and at the
    lags of the ranges, (bins, lags); where each range starts among those lags."""
    edges = settings.periodicity_frames()
    size = n_frames + edges[-1]
    lags = np.concatenate([[0], np.arange(edges[0], edges[-1])])
    bins = np.arange(size // 2 + 1)
    dft = _real_dft(n_frames, size).astype(np.float32)
    weight = np.where((bins == 0) | (2 * bins == size), 1.0, 2.0) / size  # the other half of the spectrum
    cosines = (weight[:, None] * np.cos(2.0 * np.pi * np.outer(bins, lags) / size)).astype(np.float32)
    starts = np.array(edges[:-1]) - edges[0]
    for array in (dft, cosines, starts):
        array.setflags(write=False)
    return dft, cosines, starts


@functools.lru_cache(maxsize=8)
def _modulation_plan(n_frames: int, frame_rate: float, edges_hz: tuple[float, ...]) -> tuple[np.ndarray, np.ndarray]:
    """The real DFT of a symmetric-Hann-tapered track as one product, (n_frames, 2 x bins): cosines then
    sines (a 173-point FFT is a prime-length one, slower than this product); and the 0/1 matrix
    (2 x bins, bands) summing both parts' squares into bands."""
    band = np.searchsorted(edges_hz, np.fft.rfftfreq(n_frames, 1 / frame_rate), side="right") - 1
    bands = (band[:, None] == np.arange(len(edges_hz))[None, :]).astype(np.float32)
    dft = (np.hanning(n_frames)[:, None] * _real_dft(n_frames, n_frames)).astype(np.float32)
    bands = np.concatenate([bands, bands])
    dft.setflags(write=False)
    bands.setflags(write=False)
    return dft, bands


def _real_dft(n_frames: int, size: int) -> np.ndarray:
    """The real DFT of ``n_frames`` values zero-padded to ``size`` as a (n_frames, 2 x bins) matrix, cosines then
    sines: a product with it costs a few short rows less than numpy's FFT wrapper and the power's calls."""
    angle = 2.0 * np.pi * np.outer(np.arange(n_frames), np.arange(size // 2 + 1)) / size
    return np.concatenate([np.cos(angle), np.sin(angle)], axis=1)


@dataclass(frozen=True)
class _ShapePlan:
    """How ``spectral_shape`` turns (frames, n_mels) dB values into per-group figures."""

    runs: tuple[tuple[int, int, int], ...]
    """(first band, groups, width) of each run of adjacent groups of one width (np.array_split makes at most
    two): each run is sorted group by group in one call."""
    members: np.ndarray
    """(n_mels, groups) float32: 1 on each group's bands (a product with it sums each group's powers)."""
    sizes: np.ndarray
    """(groups,) float32: each group's number of bands."""
    weights: np.ndarray
    """(n_mels, groups x 3) float32, on bands sorted within their group, for each group in turn: 1/size on its
    bands (its mean dB, order-free), 1 on its last band (its loudest), and +1/fifth on its loudest fifth and
    -1/fifth on its quietest fifth (its contrast)."""
    spread: np.ndarray
    """(groups, groups x 3) float32: 10 where a group's measure is less its mean power in dB (flatness and
    peak-to-mean), else 0: a product with it is ten times each group's log10 mean power in the measures' places,
    exactly (one nonzero term a column)."""


@functools.lru_cache(maxsize=8)
def _shape_plan(n_mels: int, groups: int) -> _ShapePlan:
    """The plan for ``groups`` groups of adjacent bands, sized as ``np.array_split`` sizes them."""
    parts = np.array_split(np.arange(n_mels), groups)
    members = np.zeros((n_mels, groups), dtype=np.float32)
    weights = np.zeros((n_mels, groups, SHAPE_MEASURES), dtype=np.float32)
    runs: list[tuple[int, int, int]] = []
    for index, bands in enumerate(parts):
        fifth = len(bands) // 5
        members[bands, index] = 1.0
        weights[bands, index, 0] = 1.0 / len(bands)
        weights[bands[-1], index, 1] = 1.0
        weights[bands[:fifth], index, 2] = -1.0 / fifth
        weights[bands[-fifth:], index, 2] = 1.0 / fifth
        if runs and runs[-1][2] == len(bands):
            runs[-1] = (runs[-1][0], runs[-1][1] + 1, len(bands))
        else:
            runs.append((int(bands[0]), 1, len(bands)))
    spread = np.zeros((groups, groups, SHAPE_MEASURES), dtype=np.float32)
    spread[np.arange(groups), np.arange(groups), :2] = 10.0
    plan = _ShapePlan(tuple(runs), members, members.sum(axis=0), weights.reshape(n_mels, -1),
                      spread.reshape(groups, -1))
    for array in (plan.members, plan.sizes, plan.weights, plan.spread):
        array.setflags(write=False)
    return plan


def summarize(mel_db: np.ndarray, settings: FeatureSettings) -> np.ndarray:
    """Feature vector of one window from its mel-dB frames, float32 of length n_features."""
    return _vector(_WindowStats(lambda: clamp_db(mel_db, settings), settings), settings)


def summarize_frames(settings: FeatureSettings, clamped: Callable[[], np.ndarray], values: np.ndarray) -> np.ndarray:
    """:func:`summarize` of a window whose per-frame values (:func:`frame_values`) are already known;
    ``clamped`` gives its clamped mel-dB frames, for statistics that read them directly."""
    return _vector(_WindowStats(clamped, settings, values), settings)


def frame_values(clamped: np.ndarray, settings: FeatureSettings, out: np.ndarray | None = None) -> np.ndarray:
    """What the statistics summarise over time, per clamped frame: (n, n_mfcc) MFCCs, then, when
    ``spectral_shape`` is asked for, (n, groups x 3) shape measures. float64; written into ``out`` if given (the
    stream's frame cache: no copy of a new array)."""
    parts = [mfcc_rows(clamped, settings)]
    if "spectral_shape" in settings.stats:
        parts.append(shape_measures(clamped, settings))
    return np.concatenate(parts, axis=1, out=out)


def _vector(window: _WindowStats, settings: FeatureSettings) -> np.ndarray:
    return np.concatenate([window.get(name) for name in settings.stats], dtype=np.float32)


def mfcc(y: np.ndarray, settings: FeatureSettings = FeatureSettings()) -> np.ndarray:
    """MFCC matrix (n_mfcc, frames), as ``librosa.feature.mfcc`` lays it out."""
    return mfcc_frames(frame_mel_db(signal_frames(y, settings), settings), settings).T


def extract(window: np.ndarray, settings: FeatureSettings) -> np.ndarray:
    """The feature vector of one window of audio at the model rate: the batch reference."""
    return summarize(frame_mel_db(signal_frames(window, settings), settings), settings)


# --- clips and windows ----------------------------------------------------------------------------

def fit_to_window(y: np.ndarray, settings: FeatureSettings) -> np.ndarray:
    """Make a clip exactly one window long.

    Longer clips keep their first window. Shorter ones are tiled (repeated) by default, so a
    1 s gunshot keeps its own statistics instead of being diluted by digital silence; ``pad``
    appends zeros instead. Training, evaluation and ``classify`` all go through here.
    """
    n = settings.window_samples
    y = np.asarray(y, dtype=np.float32)
    if len(y) >= n:
        return y[:n]
    if len(y) == 0:
        return np.zeros(n, dtype=np.float32)
    if settings.short_clip == "pad":
        return np.pad(y, (0, n - len(y)))
    return np.tile(y, -(-n // len(y)))[:n]


def hop_samples(settings: FeatureSettings, hop_s: float) -> int:
    """Window hop in samples, rounded to whole STFT hops so windows share frames exactly: the daemon's stream and
    :func:`clip_windows` cut windows at the same places."""
    frames = max(1, int(round(hop_s * settings.sample_rate / settings.hop_length)))
    return frames * settings.hop_length


def clip_windows(y: np.ndarray, settings: FeatureSettings, hop_s: float) -> list[tuple[float, np.ndarray]]:
    """Split a recording into (start_s, window) pairs where the daemon's stream cuts them, and one more that ends
    with the recording where that leaves half a hop or more unheard; a short clip is one fitted window."""
    n = settings.window_samples
    if len(y) <= n:
        return [(0.0, fit_to_window(y, settings))]
    hop = hop_samples(settings, hop_s)
    starts = list(range(0, len(y) - n + 1, hop))
    if len(y) - n - starts[-1] >= hop // 2:  # a tail of half a hop or more: not a window a few ms from the last
        starts.append(len(y) - n)
    return [(start / settings.sample_rate, np.asarray(y[start : start + n], dtype=np.float32)) for start in starts]


def clip_features(y: np.ndarray, settings: FeatureSettings) -> np.ndarray:
    """Feature vector of a whole clip: one fitted window, as training forms it (``train.featurize.clip_vector`` adds
    its speed changes and augmentation between the two steps)."""
    return extract(fit_to_window(y, settings), settings)

"""What the Classify page shows about one recording: per-window scores and pictures of the audio.

Windows and scores come from :mod:`noisewatch.classify` (``features.clip_windows`` ->
``features.extract`` -> the bundle's TFLite model), so the dashboard predicts exactly what
``noisewatch classify`` predicts; the events come from the daemon's own pipeline and detector
(:func:`detect_events`), so they are the events ``noisewatch run --input`` would report.
Pure numpy; the page only draws the results.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import NamedTuple

import numpy as np
import soundfile

from noisewatch import features
from noisewatch.audio_file import load_audio
from noisewatch.bundle import Bundle
from noisewatch.classify import WindowResult, classify_audio, summarize
from noisewatch.config import GATE_DBFS, Config
from noisewatch.daemon.events import SampleClock
from noisewatch.daemon.messages import Event, stamped
from noisewatch.daemon.pipeline import Pipeline
from noisewatch.recording_checks import cut_short_bytes

DEFAULT_HOP_S = 1.0
"""seconds between classified windows of an uploaded recording"""
MAX_SECONDS = 300.0
"""longer uploads are cut to this many seconds (the page says so)"""
DECODE_MARGIN_S = 1.0
"""decoded past MAX_SECONDS, so that the kept audio ends as it does in the whole file (and a longer one is told)"""
IMAGE_COLUMNS = 600
"""spectrogram images are reduced (or widened) to about this many time columns"""
IMAGE_MIN_ROWS = 120
"""matrices with fewer rows (MFCC) are drawn with repeated rows, so they are not a thin strip"""
WAVEFORM_POINTS = 1000
"""the waveform is drawn as a min/max envelope of this many points"""
# A perceptually ordered dark-to-bright palette (viridis anchors), interpolated per pixel.
PALETTE = np.array([[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]], dtype=np.float64)


class CutShort(NamedTuple):
    """How much audio a file cut short holds, and how much its header promises."""

    held_s: float
    promised_s: float


@dataclass(frozen=True)
class Recording:
    """Mono audio at the model's sample rate."""

    samples: np.ndarray
    sample_rate: int
    truncated: bool
    """True if the upload was longer than MAX_SECONDS and was cut"""
    cut_short: CutShort | None = None
    """set when the file holds less than its header promises (a copy or download broken off)"""

    @property
    def duration_s(self) -> float:
        return len(self.samples) / self.sample_rate


@dataclass(frozen=True)
class WindowScores:
    """The model's scores for each window of a recording, as ``noisewatch classify`` computes them."""

    labels: tuple[str, ...]
    results: tuple[WindowResult, ...]

    @property
    def starts(self) -> np.ndarray:
        """Window start times in seconds, shape (n,)."""
        return np.array([result.start_s for result in self.results])

    @property
    def scores(self) -> np.ndarray:
        """Shape (n, len(labels))."""
        return np.stack([result.scores for result in self.results])

    def summary(self) -> tuple[str, float]:
        """The recording's label and score, by the rule of ``noisewatch classify``."""
        verdict = summarize(list(self.results), self.labels)
        return verdict["label"], verdict["score"]

    def top_labels(self, count: int) -> list[str]:
        """The labels with the highest peak score, best first (the ones worth plotting)."""
        order = np.argsort(-self.scores.max(axis=0))[:count]
        return [self.labels[i] for i in order]


def decode(data: bytes, sample_rate: int) -> Recording:
    """WAV/FLAC/OGG bytes -> mono float32 at ``sample_rate`` (raises soundfile.LibsndfileError), decoded no further
    than MAX_SECONDS and a little more (the resampler's filter sees past the cut, as in a whole file)."""
    mono = load_audio(io.BytesIO(data), sample_rate, seconds=MAX_SECONDS + DECODE_MARGIN_S)
    keep = int(MAX_SECONDS * sample_rate)
    return Recording(mono[:keep], sample_rate, len(mono) > keep, cut_short(data))


def cut_short(data: bytes) -> CutShort | None:
    """What a WAV (or AIFF) file cut short holds and promises, None for a whole one: libsndfile reads such a file
    to where it ends without a word, and the page showed a damaged upload's scraps as a recording."""
    info = soundfile.info(io.BytesIO(data))
    cut = cut_short_bytes(info.extra_info)
    if cut is None:
        return None
    promised, held = cut
    return CutShort(info.duration, info.duration * promised / held)


def classify(recording: Recording, bundle: Bundle, hop_s: float = DEFAULT_HOP_S,
             gate_dbfs: float = GATE_DBFS) -> WindowScores:
    """Scores of every window (a clip shorter than the window is one window, as in training); below ``gate_dbfs``
    (the config's, as :func:`detect_events` gates) background."""
    model = bundle.open_model()  # per call: a TFLite interpreter is not shared between sessions
    return WindowScores(bundle.labels, tuple(classify_audio(recording.samples, bundle, model, hop_s, gate_dbfs)))


def detect_events(recording: Recording, bundle: Bundle, config: Config) -> list[Event]:
    """The events the daemon reports for this recording with this config (its pipeline, detector and
    thresholds), oldest first; their offsets in the recording are what the page shows (stamps count from the Unix
    epoch: a recording's wall time is not known)."""
    clock = SampleClock(datetime.fromtimestamp(0, timezone.utc))
    pipeline = Pipeline.from_config(config, bundle, bundle.open_model(config.model.runtime_choice), clock)
    messages = pipeline.process(recording.samples) + pipeline.finish()
    events = [stamped(m, config.device_id) for m in messages if isinstance(m, Event)]
    return sorted(events, key=lambda event: event.offset_s)


def no_event_reason(recording: Recording, settings: features.FeatureSettings) -> str:
    """Why :func:`detect_events` found nothing, in a user's words: the daemon decides on whole windows, so a
    recording shorter than one never reaches the model (the page blamed the thresholds)."""
    if recording.duration_s < settings.window_s:
        return (f"No event: the recording ({recording.duration_s:.1f} s) is shorter than one {settings.window_s:g} s "
                "window, and the listener decides on whole windows. Record a few seconds more, with the sound in it.")
    return "No event: every window stayed below its label's threshold (or was background)."


def mel_db(y: np.ndarray, settings: features.FeatureSettings) -> np.ndarray:
    """Mel spectrogram in dB, (n_mels, frames), clamped to top_db as the model sees it."""
    frames = features.signal_frames(y, settings)
    return features.clamp_db(features.frame_mel_db(frames, settings), settings).T


def colorize(matrix: np.ndarray, columns: int = IMAGE_COLUMNS) -> np.ndarray:
    """An (rows, frames) matrix as an RGB image, low rows at the bottom, about ``columns`` wide.

    Long recordings keep every n-th frame; short ones repeat frames, so a 4 s clip is drawn wide
    rather than as a tall square.
    """
    frames = matrix.shape[1]
    step = max(1, -(-frames // columns))
    reduced = np.repeat(matrix[:, ::step], max(1, columns // frames), axis=1)
    reduced = np.repeat(reduced, max(1, IMAGE_MIN_ROWS // len(reduced)), axis=0)[::-1]
    low, high = float(reduced.min()), float(reduced.max())
    unit = (reduced - low) / (high - low) if high > low else np.zeros_like(reduced)
    position = unit * (len(PALETTE) - 1)
    index = np.minimum(position.astype(int), len(PALETTE) - 2)
    frac = (position - index)[..., None]
    rgb = PALETTE[index] * (1.0 - frac) + PALETTE[index + 1] * frac
    return rgb.astype(np.uint8)


def envelope(y: np.ndarray, sample_rate: int, points: int = WAVEFORM_POINTS) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(time_s, min, max) of ``points`` equal chunks: a waveform small enough to draw."""
    chunk = max(1, -(-len(y) // points))
    padded = np.pad(y, (0, (-len(y)) % chunk))
    blocks = padded.reshape(-1, chunk)
    times = np.arange(len(blocks)) * chunk / sample_rate
    return times, blocks.min(axis=1), blocks.max(axis=1)

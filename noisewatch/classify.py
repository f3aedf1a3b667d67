"""Offline classification of recordings: ``noisewatch classify FILE...``.

The same path as training and evaluation: audio resampled with soxr to the model rate, cut into
windows by :func:`features.clip_windows` (a clip shorter than the window is one window, fitted
exactly as in training), features from :mod:`noisewatch.features`, scores from the TFLite bundle.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import stat
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from noisewatch.audio_file import load_audio
from noisewatch.bundle import Bundle, BundleError, default_model_path, load_bundle
from noisewatch.config import GATE_DBFS
from noisewatch.daemon.levels import dbfs
from noisewatch.features import clip_windows, extract
from noisewatch.recording_checks import below_model_rate, warn_if_cut_short
from noisewatch.runtime import RuntimeUnavailable, TFLiteModel
from noisewatch.stdout_report import report

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WindowResult:
    start_s: float
    scores: np.ndarray
    quiet: bool = False
    """Below the gate (config.GATE_DBFS): not classified, counted as background, as the daemon counts it."""

    def top(self, labels: tuple[str, ...]) -> tuple[str, float]:
        """(label, score) of the window: background for a quiet one (a bundle need not have that label: its all-zero
        scores named the bundle's first label)."""
        if self.quiet:
            return "background", 1.0
        best = int(np.argmax(self.scores))
        return labels[best], float(self.scores[best])


def classify_audio(audio: np.ndarray, bundle: Bundle, model: TFLiteModel, hop_s: float,
                   gate_dbfs: float = GATE_DBFS) -> list[WindowResult]:
    """Scores of every window of a model-rate recording; a window below the daemon's gate (``audio.gate_dbfs``, where
    a config is at hand) counts as background, as the daemon counts it (classified, a file of digital silence was
    car_horn 0.99)."""
    background = (np.asarray(bundle.labels) == "background").astype(np.float32)
    return [
        WindowResult(start, background, quiet=True) if dbfs(window) < gate_dbfs
        else WindowResult(start, model.predict(extract(window, bundle.features)))
        for start, window in clip_windows(audio, bundle.features, hop_s)
    ]


def summarize(results: list[WindowResult], labels: tuple[str, ...]) -> dict[str, Any]:
    """A file's verdict: the label with the highest mean score over its windows; background when every window was
    below the gate (a bundle need not have that label: its all-zero scores named its first label, 0.00)."""
    if all(r.quiet for r in results):
        return {"label": "background", "score": 1.0}
    mean = np.mean([r.scores for r in results], axis=0)
    best = int(np.argmax(mean))
    return {"label": labels[best], "score": round(float(mean[best]), 4)}


class NoAudio(ValueError):
    """A file that holds not one sample: a short clip is one window, tiled, but nothing tiled is a window of
    silence, and it was given a label (the daemon says such a file "holds no audio")."""


def _file_report(path: str, bundle: Bundle, model: TFLiteModel, hop_s: float) -> dict[str, Any]:
    if Path(path).is_file():  # not a pipe: its header would be read and gone
        info = sf.info(path)
        warn_if_cut_short(Path(path), info, "classifying")  # or it read as if that were the whole recording
        low = below_model_rate(path, info.samplerate, bundle.features.sample_rate)
        if low is not None:  # a phone call's 8 kHz got a confident label without a word, where the daemon warns
            log.warning("%s", low)
    audio = load_audio(path, bundle.features.sample_rate)
    if not len(audio):
        raise NoAudio("holds no audio, nothing to classify")
    results = classify_audio(audio, bundle, model, hop_s)
    windows = [{"start_s": round(r.start_s, 3), "label": label, "score": round(score, 4), "quiet": r.quiet}
               for r in results for label, score in [r.top(bundle.labels)]]
    return {"file": path, **summarize(results, bundle.labels), "windows": windows}


def _print_table(file_report: dict[str, Any]) -> None:
    print(f"{file_report['file']}: {file_report['label']} ({file_report['score']:.2f})")
    for window in file_report["windows"]:
        quiet = f"  (quiet: below {GATE_DBFS:g} dBFS, not classified)" if window["quiet"] else ""
        print(f"  {window['start_s']:8.2f} s  {window['label']:<18} {window['score']:.2f}{quiet}")


def main(args: argparse.Namespace) -> int:
    """``noisewatch classify``: exit 0, or 1 if a file could not be read or holds no audio, 78 for a bad bundle."""
    try:
        bundle = load_bundle(args.model or default_model_path())
        model = bundle.open_model()
    except (BundleError, RuntimeUnavailable) as exc:
        print(f"noisewatch: {exc}", file=sys.stderr)
        return 78
    reports, status = [], 0
    for path in args.files:
        try:
            reports.append(_file_report(path, bundle, model, args.hop))
        except (OSError, RuntimeError, sf.LibsndfileError) as exc:
            print(f"noisewatch: {path}: cannot read audio ({_reason(path, exc)})", file=sys.stderr)
            status = 1
        except NoAudio as exc:
            print(f"noisewatch: {path}: {exc}", file=sys.stderr)
            status = 1
    return report(lambda: _print_reports(reports, bundle, args.json)) or status


def _print_reports(reports: list[dict[str, Any]], bundle: Bundle, as_json: bool) -> None:
    if as_json:
        print(json.dumps({"model": bundle.ident, "files": reports}, indent=2))
    else:
        for file_report in reports:
            _print_table(file_report)


def _reason(path: str, exc: Exception) -> str:
    """Why a file could not be read: libsndfile's words, but the system's where the file is not there or is a folder
    (libsndfile says "System error." and "Format not recognised." for those). Only stat is asked: opening a named pipe
    again would wait for a writer."""
    try:
        mode = os.stat(path).st_mode
    except OSError as missing:
        return missing.strerror or str(missing)
    return "a folder, not a file" if stat.S_ISDIR(mode) else str(exc)


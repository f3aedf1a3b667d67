"""Test helpers: build scenes from real clips, run the real daemon on them, read its JSON lines."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from noisewatch.audio_file import load_audio
from noisewatch.bundle import default_model_path, load_bundle
from noisewatch.features import clip_features

QUIET_DBFS = -50.0


@dataclass(frozen=True)
class Truth:
    label: str
    start_s: float
    end_s: float


def run_daemon(audio_path: Path, out: Path, *args: str, config: Path | None = None, timeout: float = 120) -> list[dict]:
    """``noisewatch run --input AUDIO --jsonl OUT`` in a subprocess; returns its messages."""
    return run_daemon_logged(audio_path, out, *args, config=config, timeout=timeout)[0]


def run_daemon_logged(audio_path: Path, out: Path, *args: str, config: Path | None = None,
                      timeout: float = 120) -> tuple[list[dict], str]:
    """:func:`run_daemon`, and what it logged (stderr)."""
    cmd = [sys.executable, "-m", "noisewatch.cli", "run", "--input", str(audio_path), "--jsonl", str(out), *args]
    if config is not None:
        cmd += ["--config", str(config)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stderr
    return read_jsonl(out), result.stderr


def _reject_constant(name: str) -> Any:
    raise ValueError(f"not strict JSON: {name}")


def strict_json(text: str | bytes) -> Any:
    """Parse as RFC 8259 JSON: NaN, Infinity and -Infinity are errors, as in every other JSON parser."""
    return json.loads(text, parse_constant=_reject_constant)


def json_lines(text: str | bytes) -> list[dict]:
    """The messages of a JSON-lines text (the daemon's stdout or log), strict JSON each: a subscriber's parser
    refuses NaN, so a test reading one must too."""
    return [strict_json(line) for line in text.splitlines() if line.strip()]


def read_jsonl(path: Path) -> list[dict]:
    """:func:`json_lines` of a regular file (none while it does not exist yet; none from a named pipe, which a read
    would wait on for a writer)."""
    return json_lines(path.read_text()) if path.is_file() else []


def events(messages: list[dict]) -> list[dict]:
    return [m for m in messages if m["type"] == "event" and m["label"] != "loud"]


def recognised_clips(shared_data: Path, label: str, count: int, fold: int = 2, min_s: float = 3.0) -> list[Path]:
    """The first clips of a class (sorted by name) that the shipped model labels correctly on their own.

    The scene tests check the streaming daemon (windows, onsets, release), not the model's accuracy
    (models/README.md reports that fold by fold), so they use clips the model recognises in isolation.
    """
    bundle = load_bundle(default_model_path())
    model = bundle.open_model()
    root = shared_data / "UrbanSound8K"
    rows = [line.split(",") for line in (root / "metadata" / "UrbanSound8K.csv").read_text().splitlines()[1:]]
    names = sorted(r[0] for r in rows if r[7] == label and int(r[5]) == fold and float(r[3]) - float(r[2]) >= min_s)
    found = []
    for name in names:
        path = root / "audio" / f"fold{fold}" / Path(name).with_suffix(".flac").name
        scores = model.predict(clip_features(load_audio(path, bundle.features.sample_rate), bundle.features))
        if bundle.labels[int(np.argmax(scores))] == label:
            found.append(path)
            if len(found) == count:
                break
    return found


def build_scene(clips: list[tuple[str, Path]], quiet_s: float, rate: int, seed: int = 0) -> tuple[np.ndarray, list[Truth]]:
    """Quiet, clip, quiet, clip, ... quiet: each clip peak-normalised to -6 dBFS over a -50 dBFS hiss."""
    rng = np.random.default_rng(seed)
    quiet_rms = 10 ** (QUIET_DBFS / 20)
    parts, truth, t = [], [], 0.0

    def quiet() -> None:
        nonlocal t
        n = int(quiet_s * rate)
        parts.append((quiet_rms * rng.standard_normal(n)).astype(np.float32))
        t += n / rate

    quiet()
    for label, path in clips:
        clip = load_audio(path, rate)
        clip = 0.5 * clip / max(1e-6, float(np.abs(clip).max()))
        truth.append(Truth(label, t, t + len(clip) / rate))
        parts.append(clip.astype(np.float32) + (quiet_rms * rng.standard_normal(len(clip))).astype(np.float32))
        t += len(clip) / rate
        quiet()
    return np.concatenate(parts), truth


def write_scene(path: Path, audio: np.ndarray, rate: int) -> Path:
    sf.write(str(path), audio, rate, subtype="PCM_16")
    return path

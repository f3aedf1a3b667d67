"""Build the demo scene: real UrbanSound8K clips laid over a quiet ESC-50 rain bed.

    .venv/bin/python samples/make_scene.py [--data ../shared/data] [--out samples]

Writes ``scene.flac`` (22050 Hz mono, 16-bit), ``scene.json`` (the truth: label, start_s,
end_s and source file of every clip) and ``CREDITS.md``. The clips are fixed below, chosen
because the shipped model (models/urban11) scores each of them >= 0.99 for its label and the
4 s windows overlapping their edges name no other class (every car horn clip did, as
street_music, so jackhammer takes its place). The output is the same on every run. It needs
the shared data set; the outputs are committed so fresh clones have the scene without it.
"""

from __future__ import annotations

import argparse
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

SAMPLE_RATE = 22050
BED_GAIN_DB = -30.0
"""The rain bed sits 30 dB under its original level: about -53 dBFS, audibly 'quiet'."""
FADE_S = 0.01
"""Fade in/out on each clip, so no click marks its edges."""
CROSSFADE_S = 0.25
"""Overlap between successive bed clips."""
TAIL_S = 8.0
"""Quiet after the last clip, so the last event closes before the file ends."""
LICENCE = "CC BY-NC 3.0"

BED_CLIPS = ("4-164206-A-10.flac", "4-180380-A-10.flac", "4-181286-A-10.flac")
"""ESC-50 'rain' recordings, looped as the ambient bed: the model calls each of them background, and
their level is steady (99th-1st percentile of 50 ms levels under 6 dB), so no gust looks like an onset."""


@dataclass(frozen=True)
class Placement:
    """One foreground clip: which file, where it starts in the scene, how much of it is used."""

    label: str
    file: str
    fold: int
    start_s: float
    length_s: float


PLACEMENTS = (
    Placement("siren", "157867-8-0-1.flac", 1, 5.0, 4.0),
    Placement("dog_bark", "197073-3-7-0.flac", 1, 14.0, 3.0),
    Placement("jackhammer", "180937-7-0-0.flac", 1, 22.0, 3.0),
)


def read_clip(path: Path) -> np.ndarray:
    """A mono float32 clip at the scene's rate (the shared data is already 22050 Hz mono)."""
    audio, rate = sf.read(str(path), dtype="float32")
    if rate != SAMPLE_RATE or audio.ndim != 1:
        raise ValueError(f"{path}: expected {SAMPLE_RATE} Hz mono, got {rate} Hz, shape {audio.shape}")
    return audio


def faded(audio: np.ndarray, fade: int) -> np.ndarray:
    """A copy with linear fades of ``fade`` samples at both ends."""
    out = audio.copy()
    ramp = np.linspace(0.0, 1.0, fade, dtype=np.float32)
    out[:fade] *= ramp
    out[-fade:] *= ramp[::-1]
    return out


def ambient_bed(esc50: Path, total: int) -> np.ndarray:
    """``total`` samples of the bed clips, crossfaded in turn and attenuated by BED_GAIN_DB."""
    overlap = int(CROSSFADE_S * SAMPLE_RATE)
    bed = np.zeros(total + overlap, dtype=np.float32)
    position, turn = 0, 0
    while position < total:
        clip = faded(read_clip(esc50 / "audio" / BED_CLIPS[turn % len(BED_CLIPS)]), overlap)
        clip = clip[: len(bed) - position]
        bed[position : position + len(clip)] += clip
        position += len(clip) - overlap
        turn += 1
    return bed[:total] * np.float32(10 ** (BED_GAIN_DB / 20))


def build_scene(data: Path) -> tuple[np.ndarray, list[dict[str, object]]]:
    """The mixed scene and its truth list, clips in order of time."""
    end_s = max(p.start_s + p.length_s for p in PLACEMENTS) + TAIL_S
    scene = ambient_bed(data / "ESC-50", int(end_s * SAMPLE_RATE))
    truth = []
    for p in PLACEMENTS:
        clip = read_clip(data / "UrbanSound8K" / "audio" / f"fold{p.fold}" / p.file)
        clip = faded(clip[: int(p.length_s * SAMPLE_RATE)], int(FADE_S * SAMPLE_RATE))
        start = int(p.start_s * SAMPLE_RATE)
        scene[start : start + len(clip)] += clip
        truth.append({"label": p.label, "start_s": p.start_s, "end_s": p.start_s + p.length_s,
                      "source": f"UrbanSound8K/audio/fold{p.fold}/{p.file}"})
    return np.clip(scene, -1.0, 1.0), truth


def urbansound_credit(data: Path, file: str) -> str:
    """'Freesound <id> by <author>' from the data set's credits file (fsID is the file's first field)."""
    fsid = file.split("-")[0]
    credits = (data / "UrbanSound8K" / "FREESOUNDCREDITS.txt").read_text(encoding="utf-8")
    match = re.search(rf"^{fsid} by (\S+)", credits, flags=re.MULTILINE)
    author = match.group(1) if match else "unknown"
    return f"Freesound {fsid} by {author} (https://freesound.org/people/{author}/sounds/{fsid}/)"


def esc50_credit(data: Path, file: str) -> str:
    """The ESC-50 LICENSE line that credits this clip (named there without the class suffix)."""
    stem = Path(file).stem.rsplit("-", 1)[0]
    for line in (data / "ESC-50" / "LICENSE").read_text(encoding="utf-8").splitlines():
        if f"[{stem}.ogg]" in line:
            return line.split("]:", 1)[1].strip()
    return "credit line not found in ESC-50/LICENSE"


def credits_markdown(data: Path) -> str:
    """CREDITS.md: every clip used, its author and licence, and the data set citations."""
    lines = ["# Credits for samples/scene.flac", "",
             f"The UrbanSound8K clips are {LICENCE} (non-commercial, attribution), so scene.flac is too. The rain",
             "clips belong to ESC-50's ESC-10 subset, CC BY 3.0; each line gives the Freesound original.", "",
             "## Foreground (UrbanSound8K)", ""]
    lines += [f"- {p.label}: `{p.file}` (fold {p.fold}), {urbansound_credit(data, p.file)}" for p in PLACEMENTS]
    lines += ["", f"## Ambient bed (ESC-50, 'rain', attenuated {BED_GAIN_DB:.0f} dB)", ""]
    lines += [f"- `{name}`: {esc50_credit(data, name)}" for name in BED_CLIPS]
    lines += ["", "## Citations", "",
              "- J. Salamon, C. Jacoby and J. P. Bello, \"A Dataset and Taxonomy for Urban Sound Research\", "
              "22nd ACM International Conference on Multimedia, Orlando, USA, Nov. 2014.",
              "- K. J. Piczak, \"ESC: Dataset for Environmental Sound Classification\", "
              "23rd ACM International Conference on Multimedia, Brisbane, Australia, Oct. 2015.", ""]
    return "\n".join(lines)


def main() -> None:
    repo = Path(__file__).resolve().parent.parent
    data = Path(os.environ.get("NOISEWATCH_SHARED_DATA", repo.parent / "shared" / "data"))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=data, help="the shared data set (UrbanSound8K, ESC-50)")
    parser.add_argument("--out", type=Path, default=repo / "samples")
    args = parser.parse_args()
    scene, truth = build_scene(args.data)
    args.out.mkdir(parents=True, exist_ok=True)
    sf.write(str(args.out / "scene.flac"), scene, SAMPLE_RATE, subtype="PCM_16")
    (args.out / "scene.json").write_text(json.dumps(truth, indent=2) + "\n", encoding="utf-8")
    (args.out / "CREDITS.md").write_text(credits_markdown(args.data), encoding="utf-8")
    print(f"scene.flac: {len(scene) / SAMPLE_RATE:.1f} s, {len(truth)} events -> {args.out}")


if __name__ == "__main__":
    main()

"""What a stereo microphone costs: the channel mix alone, and the whole daemon on a stereo recording.

    .venv/bin/python bench/channel_mix.py [--minutes 10] [--repeats 3] [--against PATH]

A Pi's I2S MEMS microphone commonly arrives as two channels, one of them an empty slot, so the mix runs on every
block the daemon reads. Prints ``ChannelMix.mix`` per 0.5 s block at 48 kHz (stereo with both channels live,
stereo with an empty slot, six live channels), then CPU time per second of audio of ``noisewatch run --speed 0``
(MQTT off) on the bench recording as it is (mono) and with an empty second channel, alternately in one run.
``--against PATH``: the same stereo runs of another checkout (``PYTHONPATH=PATH``) alternately with this one, and
their ratio (the before and after of a change to the mix).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import timeit
from pathlib import Path

import numpy as np
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import BENCH_DIR, MIC_RATE, REPO, bench_recording, mqtt_config, run_measured  # noqa: E402

from noisewatch.downmix import DECIDE_S, ChannelMix  # noqa: E402

BLOCK = int(DECIDE_S * MIC_RATE)
CALLS = 400


def mix_us(channels: int, empty: int = 0) -> float:
    """Microseconds per ``ChannelMix.mix`` call on a 0.5 s block of ``channels`` channels, ``empty`` of them zeros,
    once the mix is chosen."""
    block = (0.1 * np.random.default_rng(channels).standard_normal((BLOCK, channels))).astype(np.float32)
    block[:, channels - empty :] = 0.0
    mix = ChannelMix(channels, MIC_RATE)
    for _ in range(4):
        mix.mix(block)
    return timeit.timeit(lambda: mix.mix(block), number=CALLS) / CALLS * 1e6


def stereo_copy(recording: Path) -> Path:
    """The recording with a second channel of zeros (an I2S microphone's empty slot)."""
    path = BENCH_DIR / f"{recording.stem}-stereo.wav"
    if not path.exists():
        mono, rate = sf.read(str(recording), dtype="int16")
        sf.write(str(path), np.stack([mono, np.zeros_like(mono)], axis=1), rate, subtype="PCM_16")
    return path


def python_of(code: Path) -> list[str]:
    """The interpreter, told to import noisewatch from checkout ``code`` (on PYTHONPATH): ``-P``, or ``-m`` puts the
    working folder first on the path, and a bench run from this checkout measured it twice, not the other one."""
    command = [sys.executable, "-P"]
    found = subprocess.run([*command, "-c", "import noisewatch; print(noisewatch.__file__)"], capture_output=True,
                           text=True, check=True, env={**os.environ, "PYTHONPATH": str(code)}).stdout.strip()
    if not Path(found).is_relative_to(code):
        raise SystemExit(f"PYTHONPATH={code} imports noisewatch from {found}")
    return command


def cpu_ms_per_audio_s(recording: Path, config: Path, seconds: float, code: Path, python: list[str]) -> float:
    """CPU time of ``noisewatch run --speed 0`` on ``recording`` with the package of checkout ``code``
    (``python``: :func:`python_of` it)."""
    run = run_measured(["env", f"PYTHONPATH={code}", *python, "-m", "noisewatch.cli", "run", "--config",
                        str(config), "--input", str(recording), "--speed", "0", "--jsonl", os.devnull],
                       sample_every_s=0.05)
    if run.returncode != 0:
        raise SystemExit(f"{code}: run failed ({run.returncode}): {run.stderr[-2000:]}")
    return run.cpu_s / seconds * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--against", type=Path, help="another checkout whose stereo runs alternate with this one's")
    args = parser.parse_args()
    seconds = args.minutes * 60
    recording = bench_recording("channel-mix", seconds)
    print(f"ChannelMix.mix per 0.5 s block at 48 kHz, {CALLS} calls: stereo {mix_us(2):.0f} us, stereo with an empty "
          f"slot {mix_us(2, empty=1):.0f} us, 6 channels {mix_us(6):.0f} us")
    config = mqtt_config(BENCH_DIR / "channel-mix", None)
    runs = {"mono": (recording, REPO), "stereo": (stereo_copy(recording), REPO)}
    if args.against is not None:
        runs["stereo, --against"] = (runs["stereo"][0], args.against.resolve())
    pythons = {code: python_of(code) for _, code in runs.values()}
    cpu: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.repeats):
        for name, (path, code) in runs.items():
            cpu[name].append(cpu_ms_per_audio_s(path, config, seconds, code, pythons[code]))
    medians = {name: statistics.median(values) for name, values in cpu.items()}
    for name, values in cpu.items():
        print(f"{name:18s} CPU per second of audio, ms: median {medians[name]:.2f} ({', '.join(f'{v:.2f}' for v in values)})")
    print(f"stereo / mono: {medians['stereo'] / medians['mono']:.2f}x")
    if args.against is not None:
        print(f"stereo, this checkout / {args.against}: {medians['stereo'] / medians['stereo, --against']:.2f}x")


if __name__ == "__main__":
    main()

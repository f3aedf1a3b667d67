"""Where the processing loop's CPU goes, stage by stage: thread CPU time per second of audio.

    .venv/bin/python bench/loop_parts.py [--seconds 300] [--repeats 3]

The daemon's own objects, built as ``noisewatch run`` builds them with the default config (``MonoResampler``,
``Pipeline.from_config``), take the bench's 48 kHz recording (``bench/common.write_long_recording``) in the
8192-frame blocks a replay at ``--speed 0`` reads, in this process; each stage's call on those objects is timed
with ``time.thread_time`` (the timing itself adds about a microsecond a call). "features" and "inference" are
bench/floor.py's "features + inference"; the other lines are what the whole-process figure of bench/floor.py
holds beyond them (with start-up, the file reader and MQTT, which run outside this loop). Ratios within one run
hold; absolute figures move with the machine's load. To compare with other code, run it with ``PYTHONPATH`` set
to a checkout of that code (see bench/live_path.py).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from statistics import median
from typing import Any

for _blas_threads in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_blas_threads, "1")  # before numpy loads, as the daemon does (service.py)

import soundfile as sf  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import MIC_RATE, bench_recording  # noqa: E402

from noisewatch.bundle import default_model_path, load_bundle  # noqa: E402
from noisewatch.config import Config  # noqa: E402
from noisewatch.daemon.events import SampleClock  # noqa: E402
from noisewatch.daemon.pipeline import Pipeline  # noqa: E402
from noisewatch.daemon.resample import MonoResampler  # noqa: E402

BLOCK_FRAMES = 8192
"""What a replay at speed 0 reads at a time (sources.UNPACED_BLOCK_FRAMES)."""


def timed(call: Callable[..., Any], spent: Counter[str], name: str) -> Callable[..., Any]:
    """``call``, adding the thread CPU time of each call to ``spent[name]``."""
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start = time.thread_time()
        try:
            return call(*args, **kwargs)
        finally:
            spent[name] += time.thread_time() - start
    return wrapper


def one_run(path: Path, seconds: float) -> Counter[str]:
    """Seconds of thread CPU by stage, and ``loop`` for the whole, for ``seconds`` of the recording."""
    audio, rate = sf.read(str(path), dtype="float32", frames=int(seconds * MIC_RATE), always_2d=True)
    bundle = load_bundle(default_model_path())
    pipeline = Pipeline.from_config(Config(), bundle, bundle.open_model(), SampleClock.starting_now())
    resampler = MonoResampler(rate, pipeline.sample_rate, audio.shape[1])
    spent: Counter[str] = Counter()
    stages = {"resample (soxr)": (resampler, "process"), "DC offset": (pipeline, "dc_offset"),
              "level history": (pipeline.history, "add"), "level meter": (pipeline.levels, "push"),
              "features": (pipeline.stream, "push"), "inference": (pipeline.model, "predict"),
              "quiet floor": (pipeline.floor, "update"), "detector": (pipeline.detector, "update")}
    for name, (owner, attribute) in stages.items():
        setattr(owner, attribute, timed(getattr(owner, attribute), spent, name))
    start = time.thread_time()
    for at in range(0, len(audio), BLOCK_FRAMES):
        pipeline.process(resampler.process(audio[at : at + BLOCK_FRAMES]))
    spent["loop"] = time.thread_time() - start
    return spent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=300.0)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    path = bench_recording("replay", args.seconds)
    runs = [one_run(path, args.seconds) for _ in range(args.repeats)]
    per_s = 1000.0 / args.seconds
    loop = median(run["loop"] for run in runs)
    print(f"\n{args.seconds:g} s of 48 kHz audio, {args.repeats} runs: thread CPU, ms per second of audio "
          "(median), and share of the loop")
    for name in [name for name in runs[0] if name != "loop"] + ["loop"]:
        value = median(run[name] for run in runs)
        print(f"  {name:18s} {value * per_s:6.3f}  {value / loop:6.1%}")
    rest = loop - sum(median(run[name] for run in runs) for name in runs[0] if name != "loop")
    print(f"  {'(the rest)':18s} {rest * per_s:6.3f}  {rest / loop:6.1%}")
    print(f"load average at the end {', '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()

"""Throughput, per-hop cost, memory and start-up of the daemon, against the earlier ways, in one run.

    .venv/bin/python bench/pipeline.py [--minutes 10] [--baseline-every 10] [--repeats 3]

1. In process: the 48 kHz recording is read in READ_FRAMES blocks (what the service's loop takes
   from the ring at --speed 0), resampled by MonoResampler and fed to a real Pipeline whose
   stream, model, detector and sinks (a JsonlSink to /dev/null) are wrapped in timing proxies.
2. The earlier project's per-window pipeline and librosa+TFLite on every Nth window of the same audio.
3. Subprocess: ``noisewatch run --input FILE --speed 0 --jsonl /dev/null``: wall time, peak RSS.
4. Start-up: process start until the first window's ``scores`` line on stdout (a 4.5 s file).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

sys.path.insert(0, str(Path(__file__).resolve().parent))
from baselines import earlier_step, librosa_tflite_step, time_per_window  # noqa: E402
from common import MIC_RATE, first_window_s, machine, percentiles, run_daemon, write_long_recording  # noqa: E402
from timing import STAGES, Clock, Timed, instrument  # noqa: E402

from noisewatch.bundle import default_model_path, load_bundle  # noqa: E402
from noisewatch.config import Config  # noqa: E402
from noisewatch.daemon.events import SampleClock  # noqa: E402
from noisewatch.daemon.outbox import Outbox  # noqa: E402
from noisewatch.daemon.pipeline import Pipeline  # noqa: E402
from noisewatch.daemon.resample import MonoResampler  # noqa: E402
from noisewatch.daemon.service import READ_FRAMES  # noqa: E402
from noisewatch.daemon.sinks.jsonl import JsonlSink  # noqa: E402

BENCH_DIR = Path(tempfile.gettempdir()) / "noisewatch-bench"
STARTUP_AUDIO_S = 4.5
STARTUP_OFFSET_S = 5
STARTUP_CONFIG = "scores:\n  enabled: true\n  interval_s: 0\n"
MS = 1e3


def replay_in_process(path: Path, bundle, model) -> tuple[Clock, float, int]:  # noqa: ANN001
    """(per-hop clock, seconds of processing, windows) for the whole recording."""
    pipeline = Pipeline.from_config(Config(), bundle, model, SampleClock.starting_now())
    clock = Clock()
    instrument(pipeline, clock)
    outbox = Outbox("bench", [Timed(JsonlSink("/dev/null"), "send", "sinks", clock)])
    resampler = MonoResampler(MIC_RATE, pipeline.sample_rate, 1)
    busy = 0.0
    with sf.SoundFile(str(path)) as audio:
        for block in audio.blocks(READ_FRAMES, dtype="float32", always_2d=True):
            before, staged = pipeline.counters.windows, clock.staged()
            t0 = time.perf_counter()
            mono = resampler.process(block)
            t1 = time.perf_counter()
            outbox.publish(pipeline.process(mono))
            t2 = time.perf_counter()
            clock.add("resampling", t1 - t0)
            clock.add("other", (t2 - t1) - (clock.staged() - staged))
            busy += t2 - t0
            clock.close_hops(pipeline.counters.windows - before)
    outbox.publish(pipeline.finish())
    outbox.close()
    return clock, busy, pipeline.counters.windows


def report_split(clock: Clock) -> dict[str, float]:
    """Print median and p99 per stage; return the medians (ms)."""
    print(f"\nper-hop time, ms ({len(clock.hops)} hops)       median      p99")
    medians = {}
    for stage in (*STAGES, "features+inference", "total"):
        values = [_stage_value(hop, stage) * MS for hop in clock.hops]
        med, p99 = percentiles(values)
        medians[stage] = med
        print(f"  {stage:<24} {med:10.3f} {p99:9.3f}")
    return medians


def _stage_value(hop: dict[str, float], stage: str) -> float:
    if stage == "total":
        return sum(hop.values())
    if stage == "features+inference":
        return hop["features"] + hop["inference"]
    return hop[stage]


def baseline_windows(path: Path, bundle, hop_samples: int, every: int) -> tuple[list, list]:  # noqa: ANN001
    """Every ``every``-th window of the recording: 48 kHz cuts and model-rate cuts at the same times."""
    audio48, _ = sf.read(str(path), dtype="float32")
    rate = bundle.features.sample_rate
    audio = soxr.resample(audio48, MIC_RATE, rate, quality="HQ").astype(np.float32)
    n = bundle.features.window_samples
    starts = range(0, len(audio) - n, hop_samples * every)
    win48 = [audio48[int(s * MIC_RATE / rate) : int(s * MIC_RATE / rate) + int(n * MIC_RATE / rate)] for s in starts]
    return win48, [audio[s : s + n] for s in starts]


def run_baselines(path: Path, bundle, model, hop_samples: int, every: int, ours: dict[str, float]) -> None:  # noqa: ANN001
    win48, win = baseline_windows(path, bundle, hop_samples, every)
    earlier = percentiles(time_per_window(earlier_step(bundle.features.sample_rate, MIC_RATE, len(bundle.labels)), win48))
    rewrite = percentiles(time_per_window(librosa_tflite_step(model, bundle.features), win))
    print(f"\nper window, ms ({len(win)} windows, every {every}th)      median      p99")
    print(f"  earlier (librosa resample + mfcc + Keras 750x3) {earlier[0] * MS:9.2f} {earlier[1] * MS:9.2f}")
    print(f"  librosa mel + same statistics + TFLite              {rewrite[0] * MS:9.2f} {rewrite[1] * MS:9.2f}")
    print(f"  noisewatch (per-hop total, incl. resampling)        {ours['total']:9.3f}")
    print(f"ratio earlier / noisewatch total: {earlier[0] * MS / ours['total']:.1f}x (target >= 30x)")
    print(f"ratio librosa+TFLite / noisewatch total: {rewrite[0] * MS / ours['total']:.1f}x (target >= 5x); "
          f"on features+inference alone: {rewrite[0] * MS / ours['features+inference']:.1f}x")


def daemon_runs(path: Path, seconds: float, repeats: int) -> None:
    walls, rss = [], []
    for _ in range(repeats):
        run = run_daemon(["--input", str(path), "--speed", "0", "--jsonl", "/dev/null"], sample_every_s=0.05)
        if run.returncode != 0:
            raise SystemExit(f"daemon failed ({run.returncode}): {run.stderr[-2000:]}")
        walls.append(run.wall_s)
        rss.append(run.maxrss_mb)
    wall = float(np.median(walls))
    print(f"\ndaemon subprocess, {repeats} runs: wall {', '.join(f'{w:.1f}' for w in walls)} s; "
          f"real-time factor (incl. start-up) {seconds / wall:.0f}x (median)")
    print(f"peak RSS (VmHWM): {', '.join(f'{r:.1f}' for r in rss)} MiB (target <= 80)")



def startup(long_path: Path, repeats: int) -> None:
    short = BENCH_DIR / "startup-48k.wav"
    audio, _ = sf.read(str(long_path), frames=int(STARTUP_AUDIO_S * MIC_RATE), start=STARTUP_OFFSET_S * MIC_RATE, dtype="int16")
    sf.write(str(short), audio, MIC_RATE, subtype="PCM_16")
    config = BENCH_DIR / "startup.yaml"
    config.write_text(STARTUP_CONFIG)
    times = [first_window_s(short, config) for _ in range(repeats)]
    print(f"\nstart-up to first window: {', '.join(f'{t:.2f}' for t in times)} s; median {np.median(times):.2f} s "
          f"(target <= 1.5)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--baseline-every", type=int, default=10, help="time the baselines on every Nth window")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--model", default=str(default_model_path()))
    args = parser.parse_args()
    print(machine())
    BENCH_DIR.mkdir(exist_ok=True)
    seconds = args.minutes * 60
    path = write_long_recording(BENCH_DIR / f"replay-{args.minutes:g}min-48k.wav", seconds)
    bundle = load_bundle(args.model)
    model = bundle.open_model()
    print(f"{seconds:.0f} s of 48 kHz audio ({path}); model {bundle.ident} {bundle.variant} on {model.runtime}")
    clock, busy, windows = replay_in_process(path, bundle, model)
    print(f"in process: {windows} windows in {busy:.2f} s busy: {windows / busy:.0f} windows/s, "
          f"real-time factor {seconds / busy:.0f}x")
    ours = report_split(clock)
    daemon_runs(path, seconds, args.repeats)
    startup(path, max(5, args.repeats))
    hop = Pipeline.from_config(Config(), bundle, model).stream.hop_samples
    run_baselines(path, bundle, model, hop, args.baseline_every, ours)


if __name__ == "__main__":
    main()

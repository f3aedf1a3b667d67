"""Soak: hours of real clips at --speed 0 through the daemon, its RSS sampled all along.

    .venv/bin/python bench/soak.py --hours 6 [--sample-every 5]

The recording (48 kHz 16-bit WAV, clips looped in a fixed order) is written once to a temp dir
and reused. VmRSS comes from /proc/PID/status; the verdict compares the median RSS of the first
and the last sixth of the run (= first and last hour of a 6 h run, in audio time); medians, so
the few samples of the start-up ramp do not count.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import MIC_RATE, machine, run_daemon, write_long_recording  # noqa: E402
from pipeline import BENCH_DIR  # noqa: E402

ROWS = 12
FLAT_TOLERANCE_MB = 2.0
"""Growth between the first and last sixth below this counts as flat (allocator noise)."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hours", type=float, default=6.0)
    parser.add_argument("--sample-every", type=float, default=5.0, help="seconds between RSS samples")
    args = parser.parse_args()
    print(machine())
    BENCH_DIR.mkdir(exist_ok=True)
    t0 = time.monotonic()
    path = write_long_recording(BENCH_DIR / f"soak-{args.hours:g}h-48k.wav", args.hours * 3600, MIC_RATE)
    print(f"recording {path} ready in {time.monotonic() - t0:.0f} s")
    run = run_daemon(["--input", str(path), "--speed", "0", "--jsonl", "/dev/null"], args.sample_every)
    if run.returncode != 0:
        raise SystemExit(f"daemon failed ({run.returncode}): {run.stderr[-2000:]}")
    audio_s = args.hours * 3600
    print(f"{args.hours:g} h of audio in {run.wall_s:.0f} s (real-time factor {audio_s / run.wall_s:.0f}x), "
          f"peak RSS {run.maxrss_mb:.1f} MiB")
    table(run.rss_samples, audio_s / run.wall_s)


def table(samples: list[tuple[float, float]], rtf: float) -> None:
    """RSS at ROWS evenly spaced moments, then first vs last sixth."""
    t = np.array([s[0] for s in samples])
    rss = np.array([s[1] for s in samples])
    print("wall s   audio h   VmRSS MiB")
    for i in np.linspace(0, len(t) - 1, ROWS).astype(int):
        print(f"{t[i]:7.0f} {t[i] * rtf / 3600:8.2f} {rss[i]:10.1f}")
    sixth = max(1, len(rss) // 6)
    first, last = float(np.median(rss[:sixth])), float(np.median(rss[-sixth:]))
    verdict = "flat" if last - first < FLAT_TOLERANCE_MB else "GROWING"
    print(f"first sixth median {first:.1f} MiB, last sixth median {last:.1f} MiB, "
          f"growth {last - first:+.1f} MiB: {verdict} (tolerance {FLAT_TOLERANCE_MB} MiB)")


if __name__ == "__main__":
    main()

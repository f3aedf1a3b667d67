"""StreamingFeatures.push per hop with and without OPENBLAS_NUM_THREADS=1, interleaved runs.

    .venv/bin/python bench/blas_threads.py [--rounds 3]

OpenBLAS reads its thread count at import, so each measurement is a fresh subprocess
(``--child``) on the same 2 minutes of real clips at the model rate.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import clips_at  # noqa: E402

HOPS = 200
ENVS = {"OPENBLAS_NUM_THREADS=1": {"OPENBLAS_NUM_THREADS": "1"}, "default": {}}


def child() -> None:
    """Print the median ms of one push per hop, shipped bundle settings."""
    from noisewatch.bundle import default_model_path, load_bundle
    from noisewatch.daemon.stream import StreamingFeatures

    settings = load_bundle(default_model_path()).features
    stream = StreamingFeatures(settings, 0.5)
    clips = clips_at(settings.sample_rate)
    audio = np.concatenate([next(clips) for _ in range(40)])
    hop, pos = stream.hop_samples, settings.window_samples
    stream.push(audio[:pos])
    times = []
    for _ in range(HOPS):
        t0 = time.perf_counter()
        stream.push(audio[pos : pos + hop])
        times.append(time.perf_counter() - t0)
        pos += hop
    print(f"{np.median(times) * 1e3:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child()
    results: dict[str, list[str]] = {name: [] for name in ENVS}
    for _ in range(args.rounds):
        for name, extra in ENVS.items():
            env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"} | extra
            out = subprocess.run([sys.executable, __file__, "--child"], env=env, capture_output=True, text=True,
                                 check=True)
            results[name].append(out.stdout.strip())
    for name, values in results.items():
        print(f"features per hop, median ms, {name:<24} {' / '.join(values)}  (load {os.getloadavg()[0]:.1f})")


if __name__ == "__main__":
    main()

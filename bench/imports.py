"""Where the daemon's resident memory and start-up time go: RSS and wall time added by each import, in the
order ``noisewatch run`` with MQTT on meets them, then the model.

    .venv/bin/python bench/imports.py

One fresh process; each step imports a module (and whatever it pulls in that is not loaded yet), so a
figure is what that step adds on top of the steps above it. Pair with ``python -X importtime -c 'import
noisewatch.daemon.service'`` for the per-module tree.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

for _blas_threads in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_blas_threads, "1")  # as the daemon sets them before numpy loads
os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")  # as `noisewatch run` sets it (noisewatch/cli.py)

STEPS = (
    "numpy", "soundfile", "soxr", "yaml", "pydantic", "noisewatch.config", "noisewatch.features", "noisewatch.bundle",
    "noisewatch.daemon.pipeline", "sounddevice", "noisewatch.daemon.sources", "noisewatch.daemon.service",
    "paho.mqtt.client", "noisewatch.daemon.sinks.mqtt", "ai_edge_litert.interpreter",
)


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def main() -> None:
    start, before = time.perf_counter(), rss_mb()
    print(f"{'python':34s} {before:6.1f} MiB")
    for module in STEPS:
        t0 = time.perf_counter()
        __import__(module)
        now = rss_mb()
        print(f"{module:34s} +{now - before:5.1f} MiB {1e3 * (time.perf_counter() - t0):6.0f} ms")
        before = now
    from noisewatch.bundle import default_model_path, load_bundle

    t0 = time.perf_counter()
    load_bundle(default_model_path()).open_model()
    now = rss_mb()
    print(f"{'model (load_bundle + open_model)':34s} +{now - before:5.1f} MiB {1e3 * (time.perf_counter() - t0):6.0f} ms")
    print(f"{'total':34s} {now:6.1f} MiB {1e3 * (time.perf_counter() - start):6.0f} ms")


if __name__ == "__main__":
    main()

"""Where the daemon's resident memory and start-up time go: RSS and wall time added by each import, in the
order ``noisewatch run`` with MQTT on meets them, then the model.

    .venv/bin/python bench/imports.py

One fresh process; each step imports a module (and whatever it pulls in that is not loaded yet), so a
figure is what that step adds on top of the steps above it. Pydantic builds most of its machinery on the first
model class, whatever the class, so a one-field model is a step of its own: what follows it under
``noisewatch.config`` is the config's own cost. The last lines split the total into Python itself, the
runtime dependencies (README: numpy, soundfile, soxr, pyyaml, pydantic, sounddevice, paho-mqtt, a TFLite
runtime) and noisewatch's own modules and model. Pair with ``python -X importtime -c 'import
noisewatch.daemon.service'`` for the per-module tree.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

for _blas_threads in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_blas_threads, "1")  # as the daemon sets them before numpy loads
os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")  # as `noisewatch run` sets it (noisewatch/cli.py)


def _import(module: str) -> Callable[[], object]:
    return lambda: __import__(module)


def _first_pydantic_model() -> object:
    from pydantic import BaseModel, Field

    class Probe(BaseModel):
        value: int = Field(1, ge=0)

    return Probe


def _model() -> object:
    from noisewatch.bundle import default_model_path, load_bundle

    return load_bundle(default_model_path()).open_model()


DEPENDENCY = "dependency"
OWN = "noisewatch"
STEPS: tuple[tuple[str, str, Callable[[], object]], ...] = (
    *((name, DEPENDENCY, _import(name)) for name in ("numpy", "soundfile", "soxr", "yaml", "pydantic")),
    ("pydantic's first model (one field)", DEPENDENCY, _first_pydantic_model),
    *((name, OWN, _import(name)) for name in ("noisewatch.config", "noisewatch.features", "noisewatch.bundle",
                                              "noisewatch.daemon.pipeline")),
    ("sounddevice", DEPENDENCY, _import("sounddevice")),
    *((name, OWN, _import(name)) for name in ("noisewatch.daemon.sources", "noisewatch.daemon.service")),
    ("paho.mqtt.client", DEPENDENCY, _import("paho.mqtt.client")),
    ("noisewatch.daemon.sinks.mqtt", OWN, _import("noisewatch.daemon.sinks.mqtt")),
    ("ai_edge_litert.interpreter", DEPENDENCY, _import("ai_edge_litert.interpreter")),
    ("model (load_bundle + open_model)", OWN, _model),
)


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def main() -> None:
    start, before = time.perf_counter(), rss_mb()
    python = before
    totals = {DEPENDENCY: [0.0, 0.0], OWN: [0.0, 0.0]}
    print(f"{'python':36s} {before:6.1f} MiB")
    for name, kind, step in STEPS:
        t0 = time.perf_counter()
        step()
        now, ms = rss_mb(), 1e3 * (time.perf_counter() - t0)
        print(f"{name:36s} +{now - before:5.1f} MiB {ms:6.0f} ms")
        totals[kind][0] += now - before
        totals[kind][1] += ms
        before = now
    print(f"{'total':36s} {before:6.1f} MiB {1e3 * (time.perf_counter() - start):6.0f} ms")
    print(f"  python itself {python:.1f} MiB; runtime dependencies {totals[DEPENDENCY][0]:.1f} MiB "
          f"{totals[DEPENDENCY][1]:.0f} ms; noisewatch's modules and model {totals[OWN][0]:.1f} MiB {totals[OWN][1]:.0f} ms")
    print(f"  python + dependencies: {python + totals[DEPENDENCY][0]:.1f} MiB before noisewatch's own code")


if __name__ == "__main__":
    main()

"""Shared bench helpers: deterministic long recordings from real clips, daemon runs, memory probes.

The long recordings imitate a USB microphone: real UrbanSound8K and ESC-50 clips (22050 Hz mono)
in a fixed shuffled order, resampled to 48 kHz with soxr and written as 16-bit WAV.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("NOISEWATCH_DATA", REPO.parent / "shared" / "data"))
NOISEWATCH = str(Path(sys.executable).with_name("noisewatch"))
MIC_RATE = 48000
"""What a USB microphone delivers."""
BENCH_DIR = Path(tempfile.gettempdir()) / "noisewatch-bench"
"""Where the benches keep their recordings between runs."""
ORDER_SEED = 0
WRITE_BLOCK_S = 60.0


def clip_paths() -> list[Path]:
    """Every clip of the shared data, in a fixed shuffled order (same on every machine)."""
    paths = sorted((DATA / "UrbanSound8K" / "audio").glob("fold*/*.flac")) + sorted((DATA / "ESC-50" / "audio").glob("*.flac"))
    if not paths:
        raise SystemExit(f"no clips under {DATA}: set NOISEWATCH_DATA")
    order = np.random.default_rng(ORDER_SEED).permutation(len(paths))
    return [paths[i] for i in order]


def clips_at(rate: int) -> Iterator[np.ndarray]:
    """Mono float32 clips resampled to ``rate``, looping over the collection forever."""
    while True:
        for path in clip_paths():
            audio, sr = sf.read(str(path), dtype="float32", always_2d=True)
            mono = audio.mean(axis=1)
            yield mono if sr == rate else soxr.resample(mono, sr, rate, quality="HQ").astype(np.float32)


def write_long_recording(path: Path, seconds: float, rate: int = MIC_RATE) -> Path:
    """Concatenate clips until ``seconds`` of audio; reuse ``path`` if it already has that length."""
    want = int(seconds * rate)
    if path.is_file() and sf.info(str(path)).frames == want:
        return path
    written = 0
    partial = path.with_name(f".{path.name}.{os.getpid()}")  # other runs may read ``path`` meanwhile
    with sf.SoundFile(str(partial), "w", samplerate=rate, channels=1, subtype="PCM_16", format="WAV") as out:
        for clip in clips_at(rate):
            take = clip[: want - written]
            out.write(np.clip(take, -1.0, 1.0))
            written += len(take)
            if written >= want:
                break
    partial.replace(path)
    return path


@dataclass
class DaemonRun:
    """Outcome of one measured subprocess (the daemon or a peer)."""

    wall_s: float
    returncode: int
    maxrss_mb: float
    """Peak resident set: the child's VmHWM, read every ``sample_every_s`` until it exits. Not ru_maxrss:
    a child spawned by a big process (a bench that loaded a model and audio) inherits that process's peak
    in ru_maxrss (Linux folds the mm it replaced at exec into it)."""
    rss_samples: list[tuple[float, float]]
    """(seconds since start, VmRSS MiB) pairs."""
    stderr: str
    cpu_s: float = 0.0
    """User + system CPU time of the child, all its threads (rusage)."""


def vm_rss_mb(pid: int, field: str = "VmRSS") -> float | None:
    """A /proc/PID/status memory field in MiB, or None once the process is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None


def run_daemon(args: list[str], sample_every_s: float = 1.0, stdout: int | None = subprocess.DEVNULL) -> DaemonRun:
    """Run ``noisewatch run ARGS`` to the end, sampling VmRSS every ``sample_every_s``."""
    return run_measured([NOISEWATCH, "run", *args], sample_every_s, stdout)


def run_measured(command: list[str], sample_every_s: float = 1.0, stdout: int | None = subprocess.DEVNULL) -> DaemonRun:
    """Run ``command`` to the end: wall time, CPU time and peak RSS from its rusage, VmRSS samples."""
    with tempfile.TemporaryFile("w+") as err:
        t0 = time.monotonic()
        proc = subprocess.Popen(command, stdout=stdout, stderr=err, text=True)
        samples: list[tuple[float, float]] = []
        peak = 0.0
        while True:  # os.wait4, not Popen.poll: only wait4 returns the child's rusage
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            rss, hwm = vm_rss_mb(proc.pid), vm_rss_mb(proc.pid, "VmHWM")
            if rss is not None:
                samples.append((time.monotonic() - t0, rss))
            peak = max(peak, hwm or 0.0)
            time.sleep(sample_every_s)
        wall = time.monotonic() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        return DaemonRun(wall, proc.returncode, peak, samples, err.read(), usage.ru_utime + usage.ru_stime)


def percentiles(values: list[float] | np.ndarray) -> tuple[float, float]:
    """(median, p99)."""
    arr = np.asarray(values, dtype=float)
    return float(np.median(arr)), float(np.percentile(arr, 99))


def machine() -> str:
    """One line describing where the figures came from."""
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return (f"{os.cpu_count()} cores, {cpu}, Python {platform.python_version()}, numpy {np.__version__}, "
            f"soxr {soxr.__version__}; load average at start {load}")


def bench_recording(name: str, seconds: float) -> Path:
    """Says where the figures come from (the machine, and which noisewatch: a bench run with ``PYTHONPATH`` set to
    another checkout measures that one), and gives the bench's recording ``<name>-<seconds>s-48k.wav``."""
    import noisewatch

    print(machine())
    print(f"noisewatch from {Path(noisewatch.__file__).parent}")
    BENCH_DIR.mkdir(exist_ok=True)
    return write_long_recording(BENCH_DIR / f"{name}-{seconds:g}s-48k.wav", seconds)


def first_window_s(recording: Path, config: Path) -> float:
    """Seconds from process start to the first ``scores`` line (the first classified window)."""
    t0 = time.monotonic()
    proc = subprocess.Popen([NOISEWATCH, "run", "--config", str(config), "--input", str(recording), "--speed", "0",
                             "--jsonl", "-"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith('{"type":"scores"'):
            elapsed = time.monotonic() - t0
            break
    else:
        raise SystemExit("no window was classified")
    proc.wait()
    return elapsed


def mqtt_config(directory: Path, port: int | None, scores: bool = False, device_id: str | None = None) -> Path:
    """The default config with MQTT on (a private broker; None: MQTT off) and, for start-up, every window's
    scores; a ``device_id`` of its own for a daemon that runs beside another (its own client id and topics)."""
    text = ("mqtt:\n  enabled: false\n" if port is None else
            f"mqtt:\n  enabled: true\n  host: 127.0.0.1\n  port: {port}\n  spool:\n    directory: {directory / 'spool'}\n")
    if device_id is not None:
        text = f"device_id: {device_id}\n" + text
    if scores:
        text += "scores:\n  enabled: true\n  interval_s: 0\n"
    path = directory / f"{'no-' if port is None else ''}mqtt{'-scores' if scores else ''}.yaml"
    directory.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path

"""Memory stays flat: 40 minutes of audio replayed at --speed 0 through `noisewatch run`.

RSS is sampled from /proc while the daemon runs; the median of the last fifth of the run must
not exceed the median of the second fifth (after start-up allocations) by more than
:data:`MAX_GROWTH_MB`. The six-hour version of this run belongs in bench/.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

MINUTES = 40
RATE = 22050
MAX_GROWTH_MB = 8.0
SAMPLE_EVERY_S = 0.02  # the run takes only a few seconds on an idle machine

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc"),
]


def write_scene(path: Path) -> None:
    """Quiet noise with a loud 1 kHz burst every 30 s, written a minute at a time."""
    rng = np.random.default_rng(0)
    t = np.arange(RATE * 60) / RATE
    with sf.SoundFile(path, "w", samplerate=RATE, channels=1, format="FLAC") as out:
        for _ in range(MINUTES):
            minute = 0.003 * rng.standard_normal(len(t))
            for start in (0, 30):
                burst = slice(start * RATE, (start + 3) * RATE)
                minute[burst] += 0.3 * np.sin(2 * np.pi * 1000 * t[burst])
            out.write(minute.astype(np.float32))


def rss_mb(pid: int) -> float | None:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    line = next((line for line in status.splitlines() if line.startswith("VmRSS:")), None)
    return int(line.split()[1]) / 1024 if line else None


def test_rss_is_flat_over_a_long_replay(tmp_path: Path) -> None:
    scene = tmp_path / "scene.flac"
    write_scene(scene)
    command = [sys.executable, "-m", "noisewatch.cli", "run", "--input", str(scene), "--speed", "0", "--jsonl", str(tmp_path / "out.jsonl")]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    samples = []
    deadline = time.monotonic() + 120
    out, running = tmp_path / "out.jsonl", False
    while process.poll() is None and time.monotonic() < deadline:
        running = running or (out.exists() and b'"type":"level"' in out.read_bytes())  # the first minute's levels:
        if running and (value := rss_mb(process.pid)) is not None:  # start-up's allocations are behind, on any machine
            samples.append(value)
        time.sleep(SAMPLE_EVERY_S)
    if process.poll() is None:
        process.kill()
    _, stderr = process.communicate(timeout=10)
    assert process.returncode == 0, stderr
    assert len(samples) >= 25, f"run too short to judge ({len(samples)} samples)"
    fifth = len(samples) // 5
    early, late = statistics.median(samples[fifth : 2 * fifth]), statistics.median(samples[-fifth:])
    print(f"RSS early {early:.1f} MB, late {late:.1f} MB over {MINUTES} min of audio")
    assert late - early <= MAX_GROWTH_MB
    assert (tmp_path / "out.jsonl").stat().st_size > 0

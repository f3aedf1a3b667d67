"""What the processing loop costs on the microphone's path: a paced replay in the microphone's blocks.

    .venv/bin/python bench/live_path.py [--seconds 60] [--speed 1] [--repeats 3]

``bench/floor.py`` measures ``--speed 0``, where the file source hands over 8192-frame blocks as fast as the
loop takes them. A microphone hands over ``audio.block_size`` frames (1024) ~47 times a second, paced by the
sound card; a replay at ``--speed 1`` takes the same path with the same blocks at the same pace (``--speed N``:
N times faster, and then the loop's 0.1 s read timeout comes into play less often than with a microphone). Per run (MQTT
off, the default config otherwise, ``--seconds`` of the bench's 48 kHz recording of real clips) this prints, per
second of audio: the CPU time of the processing loop (the process's main thread) and of the other threads
(here the file's pacing thread; on a Pi, PortAudio's), and the loop's voluntary context switches (its
wake-ups, and its waits for the GIL). Each thread's CPU is read from /proc every 20 ms until the process
exits (so up to 20 ms of it may be missed).

To compare with other code, run this with ``PYTHONPATH`` set to a checkout of it (e.g. ``git archive
REV noisewatch models | tar -x -C BASE``) from outside this folder: the bench's ``noisewatch`` then imports
that tree.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from statistics import median

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import NOISEWATCH, bench_recording, mqtt_config  # noqa: E402

POLL_S = 0.02


@dataclass(frozen=True)
class ThreadTimes:
    """One run: CPU seconds of the main thread and of all others, and the main thread's voluntary switches."""

    main_cpu_s: float
    other_cpu_s: float
    main_switches: int


def thread_times(command: list[str]) -> ThreadTimes:
    """Run ``command`` to its end, polling each thread's utime + stime and switches until it exits."""
    tick = os.sysconf("SC_CLK_TCK")
    with tempfile.TemporaryFile("w+") as err:  # a file, not a pipe: nothing reads it until the end
        proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=err, text=True)
        last = _poll_threads(proc, tick)
        err.seek(0)
        if proc.returncode != 0:
            raise SystemExit(f"run failed ({proc.returncode}): {err.read()[-2000:]}")
    main = last.get(proc.pid, (0.0, 0))
    return ThreadTimes(main[0], sum(cpu for tid, (cpu, _) in last.items() if tid != proc.pid), main[1])


def _poll_threads(proc: subprocess.Popen, tick: int) -> dict[int, tuple[float, int]]:
    """Each thread's last seen (CPU s, voluntary switches), read every POLL_S until ``proc`` exits."""
    last: dict[int, tuple[float, int]] = {}
    while proc.poll() is None:
        for tid in _tids(proc.pid):
            try:
                stat = Path(f"/proc/{proc.pid}/task/{tid}/stat").read_text()
                status = Path(f"/proc/{proc.pid}/task/{tid}/status").read_text()
            except (FileNotFoundError, ProcessLookupError):
                continue
            fields = stat[stat.rindex(")") + 2 :].split()
            switches = next(int(line.split()[1]) for line in status.splitlines()
                            if line.startswith("voluntary_ctxt_switches"))
            last[tid] = ((int(fields[11]) + int(fields[12])) / tick, switches)
        time.sleep(POLL_S)
    return last


def _tids(pid: int) -> list[int]:
    try:
        return [int(tid) for tid in os.listdir(f"/proc/{pid}/task")]
    except FileNotFoundError:
        return []


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--speed", type=float, default=1.0)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    path = bench_recording("live", args.seconds)
    with tempfile.TemporaryDirectory() as tmp:
        config = mqtt_config(Path(tmp), None)
        command = [NOISEWATCH, "run", "--input", str(path), "--speed", f"{args.speed:g}", "--config", str(config)]
        runs = [thread_times(command) for _ in range(args.repeats)]
    per_s = 1000.0 / args.seconds
    print(f"{args.seconds:g} s of 48 kHz audio at --speed {args.speed:g} in 1024-frame blocks, MQTT off, "
          f"{args.repeats} runs; per second of audio:")
    print(f"  processing loop CPU, ms    {', '.join(f'{r.main_cpu_s * per_s:.2f}' for r in runs)}"
          f"  (median {median(r.main_cpu_s for r in runs) * per_s:.2f})")
    print(f"  other threads CPU, ms      {', '.join(f'{r.other_cpu_s * per_s:.2f}' for r in runs)}")
    print(f"  loop's voluntary switches  {', '.join(f'{r.main_switches / args.seconds:.1f}' for r in runs)}")
    print(f"load average at the end {', '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()

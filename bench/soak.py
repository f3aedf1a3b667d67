"""Soak: hours of real clips at --speed 0 through the daemon, its RSS sampled all along.

    .venv/bin/python bench/soak.py --hours 6 [--sample-every 5]

The recording (48 kHz 16-bit WAV, clips looped in a fixed order) is written once to a temp dir
and reused. VmRSS comes from /proc/PID/status; the verdict compares the median RSS of the first
and the last sixth of the run (= first and last hour of a 6 h run, in audio time); medians, so
the few samples of the start-up ramp do not count.

    .venv/bin/python bench/soak.py --faults [--minutes 60] [--seed 0]

Fault soak (issue 15): the same kind of recording replayed in real time through ``noisewatch run``
with MQTT on, for ``--minutes`` of wall time, while a private mosquitto (tests/mqtt_broker.py) is
killed with SIGKILL and restarted at random 10-60 s intervals and the daemon gets a SIGHUP every
minute. A subscriber with a persistent session collects ``<prefix>/events``; the daemon's JSON-lines
log is the truth. Prints events logged vs received (lost ids, duplicates counted), and the daemon's
VmRSS, open descriptors and sockets shortly after start and just before it is stopped (SIGTERM).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from common import MIC_RATE, NOISEWATCH, machine, run_daemon, vm_rss_mb, write_long_recording  # noqa: E402
from mqtt_broker import HOST, Broker, Collector  # noqa: E402
from pipeline import BENCH_DIR  # noqa: E402

ROWS = 12
FLAT_TOLERANCE_MB = 2.0
"""Growth between the first and last sixth below this counts as flat (allocator noise)."""
PREFIX = "bench/soak"
KILL_EVERY_S = (10.0, 60.0)
"""The broker is killed after a random wait in this range, then restarted at once."""
RELOAD_EVERY_S = 60.0
SETTLE_S = 10.0
"""Start figures are taken this long after the daemon starts (model loaded, broker connected)."""
DELIVERY_WAIT_S = 60.0
"""How long the subscriber may take to receive what the daemon logged, after it stopped."""
EXTRA_AUDIO_S = 120.0
"""The recording outlasts the run, so the daemon is stopped by SIGTERM, not by the file's end."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hours", type=float, default=6.0)
    parser.add_argument("--sample-every", type=float, default=5.0, help="seconds between RSS samples")
    parser.add_argument("--faults", action="store_true", help="real-time replay with broker kills and reloads")
    parser.add_argument("--minutes", type=float, default=60.0, help="--faults: wall-clock length of the run")
    parser.add_argument("--seed", type=int, default=0, help="--faults: seed of the kill intervals")
    args = parser.parse_args()
    print(machine())
    if args.faults:
        fault_soak(args.minutes, random.Random(args.seed))
        return
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


@dataclass
class Probe:
    """What a user can see of the daemon process at one moment."""

    rss_mb: float
    fds: int
    sockets: int

    @classmethod
    def of(cls, pid: int) -> "Probe":
        links = []
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                links.append(os.readlink(fd))
            except FileNotFoundError:
                continue  # closed while we looked
        return cls(vm_rss_mb(pid) or float("nan"), len(links), sum(link.startswith("socket:") for link in links))


def fault_soak(minutes: float, rng: random.Random) -> None:
    """Run the daemon for ``minutes`` under broker kills and reloads; print delivery and resource figures."""
    wall_s = minutes * 60
    recording = write_long_recording(BENCH_DIR / f"soak-faults-{minutes:g}m-48k.wav", wall_s + EXTRA_AUDIO_S, MIC_RATE)
    broker = Broker().start()
    collector = Collector(broker.port, f"{PREFIX}/events", client_id=f"soak-{uuid.uuid4().hex[:8]}")
    with tempfile.TemporaryDirectory(prefix="nw-soak-") as tmp:
        work = Path(tmp)
        config = work / "config.yaml"
        config.write_text(f"device_id: soak\nmqtt:\n  enabled: true\n  host: {HOST}\n  port: {broker.port}\n"
                          f"  topic_prefix: {PREFIX}\n  reconnect_min_s: 0.5\n  reconnect_max_s: 5\n"
                          f"  spool:\n    directory: {work / 'spool'}\n")
        jsonl, stderr = work / "events.jsonl", work / "stderr.log"
        with open(stderr, "wb") as err:
            daemon = subprocess.Popen([NOISEWATCH, "run", "--config", str(config), "--input", str(recording),
                                       "--speed", "1", "--jsonl", str(jsonl)], stdout=subprocess.DEVNULL, stderr=err)
        try:
            kills, reloads, first, last = drive(daemon, broker, wall_s, rng)
            daemon.send_signal(signal.SIGTERM)
            code = daemon.wait(timeout=30)
        finally:
            if daemon.poll() is None:
                daemon.kill()
        logged = [m for m in map(json.loads, jsonl.read_text().splitlines()) if m.get("type") == "event"]
        collector.wait_for(lambda c: {e["id"] for e in logged} <= received_ids(c), timeout=DELIVERY_WAIT_S)
        report(minutes, kills, reloads, code, logged, [json.loads(p)["id"] for p in collector.on(f"{PREFIX}/events")],
               first, last, stderr.read_text(errors="replace"))
    collector.close()
    broker.cleanup()


def drive(daemon: subprocess.Popen[bytes], broker: Broker, wall_s: float,
          rng: random.Random) -> tuple[int, int, Probe, Probe]:
    """The fault schedule: kill -9 and restart the broker, SIGHUP the daemon; returns counts and probes."""
    t0 = time.monotonic()
    next_kill, next_reload = t0 + rng.uniform(*KILL_EVERY_S), t0 + RELOAD_EVERY_S
    kills = reloads = 0
    time.sleep(SETTLE_S)
    first = Probe.of(daemon.pid)
    while time.monotonic() - t0 < wall_s:
        if daemon.poll() is not None:
            raise SystemExit(f"daemon exited early with {daemon.returncode}")
        now = time.monotonic()
        if now >= next_kill:
            broker.stop(kill=True)
            broker.start()
            kills += 1
            next_kill = now + rng.uniform(*KILL_EVERY_S)
        if now >= next_reload:
            daemon.send_signal(signal.SIGHUP)
            reloads += 1
            next_reload = now + RELOAD_EVERY_S
        time.sleep(0.2)
    return kills, reloads, first, Probe.of(daemon.pid)


def received_ids(collector: Collector) -> set[str]:
    return {json.loads(p)["id"] for p in collector.on(f"{PREFIX}/events")}


def report(minutes: float, kills: int, reloads: int, code: int, logged: list[dict], received: list[str],
           first: Probe, last: Probe, stderr: str) -> None:
    """``logged`` events are the truth; a (label, offset_s) logged twice is audio replayed again (a phantom)."""
    lost = [e["id"] for e in logged if e["id"] not in set(received)]
    places = [(e["label"], e["offset_s"]) for e in logged]
    print(f"soak --faults: {minutes:g} min of real-time replay, broker killed (SIGKILL) and restarted {kills} times, "
          f"{reloads} SIGHUP reloads; daemon exit code after SIGTERM {code}")
    print(f"events logged {len(logged)} ({len(places) - len(set(places))} at a (label, offset_s) logged before), "
          f"received {len(set(received))} distinct ({len(received)} messages), lost {len(lost)}, "
          f"duplicates {len(received) - len(set(received))}")
    if lost:
        print(f"lost ids (first 10): {lost[:10]}")
    print(f"{'':12}{'VmRSS MiB':>10}{'open fds':>10}{'sockets':>9}")
    for name, probe in (("start", first), ("end", last)):
        print(f"{name:12}{probe.rss_mb:10.1f}{probe.fds:10d}{probe.sockets:9d}")
    print(f"stderr: {len(stderr.splitlines())} lines, {stderr.count('Traceback')} tracebacks")


if __name__ == "__main__":
    main()

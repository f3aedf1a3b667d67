"""Long-run memory: does the daemon's RSS level off over days of audio, and if not, whose memory grows?

    # a varied recording: quiet (gated) stretches, ambient noise, real clips at random levels, long loud events
    .venv/bin/python bench/long_memory.py make --hours 12 --seed 0 --out /tmp/v12h-s0.wav   # 4.1 GB, ~30 s
    # `noisewatch run --input FILE --speed 0` (default config, JSON lines) with the files replayed in turn, --passes
    # in all, sampled every --every wall seconds: audio hours, VmRSS, VmHWM, RssAnon, glibc mallinfo2, the brk heap's
    # RSS, pymalloc's allocated blocks (sys.getallocatedblocks), gc generation 2 and its full collections
    .venv/bin/python bench/long_memory.py run --input /tmp/v12h-s{0,1,2,3}.wav --passes 8 --every 10 \
        [--collect 1 30 58] [--trim none|sample|pass] [--trace 10 18 26] [-- --config FILE]
    .venv/bin/python bench/long_memory.py show SAMPLES.jsonl

The run starts the daemon through this file (``child``), in its own process: the daemon's ``main`` unchanged, but
for a reader thread that opens the next recording at each one's end (days of audio without days of files on disk)
and a sampler thread reading /proc/self and mallinfo2 in the process itself. ``--collect``: at those audio hours a
full ``gc.collect()`` (which also empties CPython's free lists), then ``malloc_trim(0)``, their effect printed.
``--trim sample`` calls malloc_trim(0) before every sample (``pass``: at each pass's end, its effect printed).
``--trace``: tracemalloc from the first hour on, a snapshot (and the growth since the one before) at the others
(slow: 1/5 of the speed). mallinfo2's ``uordblks`` (bytes in use by malloc, all arenas) would grow with a native
leak of malloc'd memory; Python's small objects live in pymalloc's 1 MiB mmap'd arenas, not in it.

Found with it (h2, Dec 2026; 4 different 12 h recordings of 48 kHz, 34 events an hour): the growth levels off.
RSS rose 14-20 KB per audio hour up to ~70 h, then stayed within 4 KB (83,000 kB at 72-96 h); with MQTT on it was
flat from 31 h (87,724 -> 87,728 kB at 31-65 h). What grew: CPython's free lists of tuples (up to 2000 per size,
allocated in ``dataclasses.replace`` under ``messages.stamped``), never emptied because the daemon never reaches a
full (generation 2) collection: a full gc.collect() at 30 h found 0 unreachable objects and freed 3,879 of the
3,900 blocks gained since 1.4 h; and free memory held in glibc's heap (malloc_trim(0) gave back ~1 MB each time,
in-use bytes flat). No native per-call leak: see bench/native_loops.py.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

RATE = 48000
SEGMENT_S = (30, 180)


def make(hours: float, out: Path, seed: int) -> None:
    import numpy as np
    import soundfile as sf

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import soxr
    from common import clip_paths

    rng = np.random.default_rng(seed)
    clips = clip_paths()
    cache: dict[int, np.ndarray] = {}

    def clip(i: int) -> np.ndarray:
        if i not in cache:
            audio, sr = sf.read(str(clips[i]), dtype="float32", always_2d=True)
            mono = audio.mean(axis=1)
            cache[i] = mono if sr == RATE else soxr.resample(mono, sr, RATE, quality="HQ").astype(np.float32)
            if len(cache) > 400:
                cache.pop(next(iter(cache)))
        return cache[i]

    bed_white = rng.standard_normal(RATE * 97).astype(np.float32)  # 97 s of noise beds, taken at random offsets
    brown = np.cumsum(bed_white[::-1], dtype=np.float64)
    brown -= np.interp(np.arange(len(brown)), np.arange(0, len(brown), 4800), brown[::4800])  # no drift
    bed = bed_white + (brown * 0.05).astype(np.float32)
    bed /= np.sqrt(np.mean(bed**2))

    def noise(n: int, dbfs: float) -> np.ndarray:
        reps = -(-n // len(bed)) + 1
        start = int(rng.integers(len(bed)))
        return (np.tile(bed, reps)[start:start + n] * np.float32(10 ** (dbfs / 20))).astype(np.float32)

    want, written, kinds = int(hours * 3600 * RATE), 0, {}
    with sf.SoundFile(str(out), "w", samplerate=RATE, channels=1, subtype="PCM_16", format="WAV") as f:
        while written < want:
            kind = rng.choice(["quiet", "ambient", "events", "loud"], p=[0.25, 0.3, 0.38, 0.07])
            seconds = rng.uniform(*SEGMENT_S) if kind != "loud" else rng.uniform(60, 720)  # some beyond max_duration
            n = min(int(seconds * RATE), want - written)
            if kind == "quiet":
                seg = noise(n, rng.uniform(-100, -80))  # under the -75 dBFS gate
            else:
                seg = noise(n, rng.uniform(-60, -40))
            if kind == "events":
                for _ in range(rng.integers(1, 8)):
                    c = clip(int(rng.integers(len(clips)))) * 10 ** (rng.uniform(-30, 0) / 20)
                    at = int(rng.integers(0, max(1, n - len(c))))
                    seg[at:at + len(c)] += c[: n - at]
            elif kind == "loud":
                c = clip(int(rng.integers(len(clips)))) * 10 ** (rng.uniform(-15, 0) / 20)
                seg += np.resize(c, n)
            f.write(np.clip(seg, -1, 1))
            written += n
            kinds[str(kind)] = kinds.get(str(kind), 0) + n / RATE
    print(f"{out}: {hours:g} h at {RATE} Hz; seconds per kind: " + json.dumps({k: round(v) for k, v in kinds.items()}))


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]


def _status() -> dict[str, int]:
    wanted = {"VmRSS", "VmHWM", "RssAnon", "RssFile", "Threads"}
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in wanted:
            out[key] = int(value.split()[0])
    return out


def _mappings() -> dict[str, int]:
    """RSS (kB) of the brk heap, of 1 MiB anonymous mappings (pymalloc's arenas, Python 3.10+; a malloc'd 1 MiB
    block would count too) and their number, and of all other anonymous mappings."""
    heap = arenas = count = other = 0
    size = rss = 0
    name = ""
    with open("/proc/self/smaps") as smaps:
        for line in smaps:
            first = line.split(None, 1)[0]
            if "-" in first and not first.endswith(":"):
                parts = line.split()
                name = parts[5] if len(parts) > 5 else ""
            elif first == "Size:":
                size = int(line.split()[1])
            elif first == "Rss:":
                rss = int(line.split()[1])
                if name == "[heap]":
                    heap += rss
                elif name == "" and size == 1024:
                    arenas, count = arenas + rss, count + 1
                elif name == "":
                    other += rss
    return {"heap": heap, "arenas1M": arenas, "n1M": count, "anon_other": other}


def child(argv: list[str]) -> int:
    """The daemon's own main, its file source looping ``NW_PASSES`` times, sampled to ``NW_SAMPLES``."""
    from noisewatch.audio_file import open_audio
    from noisewatch.daemon import sources

    passes, every, trim = int(os.environ["NW_PASSES"]), float(os.environ["NW_EVERY"]), os.environ.get("NW_TRIM", "none")
    delivered = [0]
    inputs = os.environ["NW_INPUTS"].split(os.pathsep)
    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = _MallInfo2
    rate = [RATE]

    def replay(self: sources.FileSource) -> None:
        rate[0] = self.sample_rate
        try:
            for n in range(passes):
                with open_audio(inputs[n % len(inputs)]) as audio:
                    original_deliver(self, audio)
                if trim == "pass":
                    before = {**_status(), **_mappings()}
                    libc.malloc_trim(0)
                    after = {**_status(), **_mappings()}
                    log.write(json.dumps({"trim": True, "audio_h": round(delivered[0] / rate[0] / 3600, 3),
                                          "before": before, "after": after}) + "\n")
                if self._halt.is_set():
                    return
        except (RuntimeError, OSError) as exc:
            self._failed = f"reading {self.path} failed: {exc}"
            return
        self._finished = True
        self.ring.close()

    original_deliver = sources.FileSource._deliver
    original_callback = sources.AudioSource.callback

    def callback(self, indata, frames, time_info, status):  # type: ignore[no-untyped-def]
        delivered[0] += frames
        original_callback(self, indata, frames, time_info, status)

    sources.FileSource._replay = replay  # type: ignore[method-assign]
    sources.FileSource.callback = callback  # type: ignore[method-assign]
    t0 = time.monotonic()
    log = open(os.environ["NW_SAMPLES"], "w", buffering=1)

    trace = [float(h) for h in os.environ.get("NW_TRACE", "").split(",") if h]
    snapshots: list = []

    def traced(audio_h: float) -> None:
        """tracemalloc from the first of NW_TRACE's audio hours on; at each later one, what was allocated since it
        and is still alive, and what grew since the hour before, by where it was allocated."""
        import tracemalloc

        if not trace or audio_h < trace[0]:
            return
        if not tracemalloc.is_tracing():
            tracemalloc.start(int(os.environ.get("NW_FRAMES", "8")))
            trace.pop(0)
            return
        snapshot = tracemalloc.take_snapshot().filter_traces([tracemalloc.Filter(False, tracemalloc.__file__)])
        trace.pop(0)
        with open(os.environ["NW_SAMPLES"] + f".trace-{audio_h:.0f}h.txt", "w") as out:
            stats = snapshot.statistics("traceback")
            out.write(f"at {audio_h:.2f} h: {sum(s.size for s in stats)} bytes in {sum(s.count for s in stats)} "
                      f"blocks allocated since tracing began and alive\n")
            for stat in stats[:25]:
                out.write(f"{stat.size:>9} B {stat.count:>6} blocks\n    " + "\n    ".join(stat.traceback.format()) + "\n")
            if snapshots:
                out.write("\n=== grown since the previous snapshot, by line ===\n")
                for diff in snapshot.compare_to(snapshots[-1], "lineno")[:25]:
                    out.write(f"{diff.size_diff:>+9} B {diff.count_diff:>+6} blocks  {diff.traceback[0]}\n")
                out.write("\n=== grown since the previous snapshot ===\n")
                for diff in snapshot.compare_to(snapshots[-1], "traceback")[:25]:
                    out.write(f"{diff.size_diff:>+9} B {diff.count_diff:>+6} blocks\n    "
                              + "\n    ".join(diff.traceback.format()) + "\n")
        snapshots[:] = [snapshot]

    collect = [float(h) for h in os.environ.get("NW_COLLECT", "").split(",") if h]

    def collected(audio_h: float) -> None:
        """At each of NW_COLLECT's audio hours: figures before, after a full gc.collect() (which also empties
        CPython's free lists of tuples, lists, dicts, floats), and after malloc_trim(0) on top."""
        if not collect or audio_h < collect[0]:
            return
        collect.pop(0)
        before = {**_status(), **_mappings(), "blocks": sys.getallocatedblocks()}
        found = gc.collect()
        after_gc = {**_status(), **_mappings(), "blocks": sys.getallocatedblocks(), "found": found}
        libc.malloc_trim(0)
        after_trim = {**_status(), **_mappings(), "blocks": sys.getallocatedblocks()}
        log.write(json.dumps({"collect": True, "audio_h": audio_h, "before": before, "after_gc": after_gc,
                              "after_trim": after_trim}) + "\n")

    def sample() -> None:
        while True:
            if trim == "sample":
                libc.malloc_trim(0)
            m = libc.mallinfo2()
            row = {"wall_s": round(time.monotonic() - t0, 1), "audio_h": round(delivered[0] / rate[0] / 3600, 3),
                   **_status(), **_mappings(), "blocks": sys.getallocatedblocks(),
                   "gc_count": gc.get_count(), "gc_full": gc.get_stats()[2]["collections"],
                   "gen2": len(gc.get_objects(generation=2)), "arena": m.arena, "hblkhd": m.hblkhd,
                   "uordblks": m.uordblks, "fordblks": m.fordblks}
            log.write(json.dumps(row) + "\n")
            traced(row["audio_h"])
            collected(row["audio_h"])
            time.sleep(every)

    threading.Thread(target=sample, daemon=True).start()
    from noisewatch import cli

    return cli.main(argv)


def run(args: argparse.Namespace) -> None:
    env = dict(os.environ, NW_PASSES=str(args.passes), NW_EVERY=str(args.every), NW_SAMPLES=str(args.samples),
               NW_TRIM=args.trim)
    env["NW_COLLECT"] = ",".join(str(h) for h in args.collect)
    env["NW_TRACE"] = ",".join(str(h) for h in args.trace)
    env["NW_INPUTS"] = os.pathsep.join(str(path) for path in args.input)
    command = [sys.executable, __file__, "child", "run", "--input", str(args.input[0]), "--speed", "0",
               "--jsonl", str(args.jsonl), *args.extra]
    t0 = time.monotonic()
    done = subprocess.run(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    print(f"exit {done.returncode} after {time.monotonic() - t0:.0f} s; {done.stderr[-1500:]}")
    summarize(args.samples)


def summarize(samples: Path) -> None:
    rows = [json.loads(line) for line in Path(samples).read_text().splitlines() if line.strip()]
    for row in [row for row in rows if row.get("trim")]:
        b, a = row["before"], row["after"]
        print(f"malloc_trim at {row['audio_h']:.2f} h: VmRSS {b['VmRSS']} -> {a['VmRSS']} kB, heap {b['heap']} -> "
              f"{a['heap']} kB, 1 MiB mappings {b['arenas1M']} -> {a['arenas1M']} kB")
    for row in [row for row in rows if row.get("collect")]:
        b, g, t = row["before"], row["after_gc"], row["after_trim"]
        print(f"full gc.collect() at {row['audio_h']:.2f} h ({g['found']} unreachable found): pymalloc blocks "
              f"{b['blocks']} -> {g['blocks']}, VmRSS {b['VmRSS']} -> {g['VmRSS']} kB, RssAnon {b['RssAnon']} -> "
              f"{g['RssAnon']} kB; then malloc_trim(0): VmRSS {t['VmRSS']} kB, RssAnon {t['RssAnon']} kB, "
              f"heap {b['heap']} -> {g['heap']} -> {t['heap']} kB")
    rows = [row for row in rows if not row.get("trim") and not row.get("collect")]
    print(f"{'wall s':>7} {'audio h':>8} {'VmRSS kB':>9} {'VmHWM kB':>9} {'RssAnon':>8} {'malloc in use':>13} "
          f"{'malloc free':>11} {'arena':>10} {'mmapped':>9} {'heap kB':>8} {'1MiB kB':>8} {'n1M':>4} "
          f"{'anon kB':>8} {'pyblocks':>9} {'gen2':>7} {'full gc':>7}")
    step = max(1, len(rows) // 40)
    for row in rows[::step] + ([rows[-1]] if (len(rows) - 1) % step else []):
        print(f"{row['wall_s']:>7.0f} {row['audio_h']:>8.2f} {row['VmRSS']:>9} {row['VmHWM']:>9} {row['RssAnon']:>8} "
              f"{row['uordblks']:>13} {row['fordblks']:>11} {row['arena']:>10} {row['hblkhd']:>9} {row.get('heap', -1):>8} "
              f"{row.get('arenas1M', -1):>8} {row.get('n1M', -1):>4} {row.get('anon_other', -1):>8} "
              f"{row.get('blocks', -1):>9} {row.get('gen2', -1):>7} {row.get('gc_full', -1):>7}")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "child":
        sys.path.remove(str(Path(__file__).resolve().parent))  # bench/pipeline.py and the like shadow nothing then
        for variable in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):  # as cli.main, before numpy
            os.environ.setdefault(variable, "1")
        os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
        raise SystemExit(child(sys.argv[2:]))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("make")
    p.add_argument("--hours", type=float, default=6.0)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--seed", type=int, default=0)
    p = sub.add_parser("run")
    p.add_argument("--input", type=Path, required=True, nargs="+",
                   help="recordings (same rate and channels), replayed in turn, --passes in all")
    p.add_argument("--passes", type=int, default=8)
    p.add_argument("--every", type=float, default=20.0)
    p.add_argument("--trim", choices=("none", "sample", "pass"), default="none",
                   help="malloc_trim(0) before every sample, or at the end of every pass (its effect a row of its own)")
    p.add_argument("--collect", type=float, nargs="*", default=[],
                   help="audio hours at which a full gc.collect(), then malloc_trim(0), are made, their effect printed")
    p.add_argument("--trace", type=float, nargs="*", default=[],
                   help="audio hours: tracemalloc starts at the first, snapshots (file beside --samples) at the others")
    p.add_argument("--samples", type=Path, default=Path("/tmp/long_memory.jsonl"))
    p.add_argument("--jsonl", type=Path, default=Path("/dev/null"))
    p.add_argument("extra", nargs="*", help="more `noisewatch run` arguments, after --")
    p = sub.add_parser("show")
    p.add_argument("samples", type=Path)
    args = parser.parse_args()
    if args.cmd == "make":
        make(args.hours, args.out, args.seed)
    elif args.cmd == "run":
        run(args)
    else:
        summarize(args.samples)


if __name__ == "__main__":
    main()

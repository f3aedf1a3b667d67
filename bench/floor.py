"""Cost at the floor: the daemon's per-hop work against what a hop cannot avoid, and against the peer, in one run.

    .venv/bin/python bench/floor.py [--minutes 10] [--repeats 3] [--callgrind-hops 40] [--no-callgrind]

1. In process, on the recording (48 kHz, resampled with MonoResampler as the daemon does): per hop, the
   thread CPU time of ``StreamingFeatures.push`` + ``TFLiteModel.predict`` ("features + inference"), and
   right after, on the same window, of the floor: what a hop cannot avoid, the STFT of the hop's new
   frames (Hann window, rfft, power, mel projection, log: ``features.frame_mel_db``, the daemon's own
   code for those steps) and the MLP. Both interleaved hop by hop, so machine load hits both alike.
2. Instructions per hop (valgrind --tool=callgrind) of the same two, and instructions per second of audio
   of the whole ``noisewatch run --speed 0`` process (MQTT off, the default config, and on) and of the peer:
   differences between a short and a longer run, so start-up cancels out. Instruction counts do not move with machine load; they are not
   time either (the peer's vector kernels retire more instructions per cycle than the daemon's Python).
3. Whole process: ``noisewatch run --input FILE --speed 0`` with the default config (MQTT off), the same
   with MQTT on (a private mosquitto on 127.0.0.1: what MQTT costs), and the peer, YAMNet run Frigate-style in a process of its own
   (bench/yamnet_peer.py), alternately on the same file: CPU time (user + system, rusage) per second of
   audio, and peak RSS (VmHWM). The package's bytecode is written first, as an install writes it.
4. Start-up: process start until the first window's ``scores`` line (MQTT on).
5. Real-time factor on a Raspberry Pi Zero 2 W and a Pi 4, estimated from the instruction count (see
   :func:`pi_estimates`).
"""

from __future__ import annotations

import argparse
import compileall
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

for _blas_threads in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_blas_threads, "1")  # before numpy loads, as the daemon does (service.py)

import numpy as np  # noqa: E402
import soundfile as sf  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from common import (  # noqa: E402
    BENCH_DIR,
    MIC_RATE,
    NOISEWATCH,
    DaemonRun,
    first_window_s,
    machine,
    mqtt_config,
    run_measured,
    write_long_recording,
)
from mqtt_broker import Broker  # noqa: E402

from noisewatch.bundle import default_model_path, load_bundle  # noqa: E402
from noisewatch.daemon.resample import MonoResampler  # noqa: E402
from noisewatch.daemon.service import READ_FRAMES  # noqa: E402
from noisewatch.daemon.stream import StreamingFeatures, Window  # noqa: E402
from noisewatch.features import FeatureSettings, frame_mel_db  # noqa: E402

PACKAGE = Path(__file__).resolve().parents[1] / "noisewatch"
PEER = Path(__file__).resolve().parent / "yamnet_peer.py"
HOP_S = 0.5
"""The daemon's default hop."""
SETTLE_HOPS = 4
"""Hops before the first counted one under callgrind (the first window computes all its frames)."""
CALLGRIND_AUDIO_S = (30.0, 90.0)
"""Recording lengths of the two whole-process callgrind runs."""
STARTUP_AUDIO_S = 4.5
US = 1e6

PI_BOARDS = {
    # name: (cores and clock from the Raspberry Pi product briefs, instructions per cycle assumed)
    "Pi Zero 2 W (Cortex-A53, 1.0 GHz)": (1.0e9, 0.5),
    "Pi 4 B (Cortex-A72, 1.5 GHz)": (1.5e9, 1.0),
}
ARM_INSTRUCTION_FACTOR = 1.5
"""aarch64 instructions per x86-64 instruction assumed for this code: NEON vectors are 128 bits, the AVX2
that numpy, OpenBLAS and XNNPACK use here 256, so vector loops take up to twice the instructions; scalar
code about the same number."""


@dataclass
class HopCosts:
    """Per-hop thread CPU seconds of the daemon's features + inference and of the floor."""

    ours: np.ndarray
    floor: np.ndarray


def new_frames(window: Window, settings: FeatureSettings, hop_samples: int) -> np.ndarray:
    """The hop's new STFT frames: the window's last ``hop / hop_length`` interior frames (a view)."""
    count = hop_samples // settings.hop_length
    last_inner = (settings.window_samples - settings.n_fft // 2) // settings.hop_length
    start = (last_inner - count + 1) * settings.hop_length - settings.n_fft // 2
    step = window.samples.strides[0]
    return np.lib.stride_tricks.as_strided(window.samples[start:], (count, settings.n_fft),
                                           (settings.hop_length * step, step), writeable=False)


def floor_hop(window: Window, settings: FeatureSettings, hop_samples: int, model) -> None:  # noqa: ANN001
    """What a hop cannot avoid: the STFT to mel dB of its new frames, and the MLP on a feature vector."""
    mel_db = frame_mel_db(new_frames(window, settings, hop_samples), settings)
    model.predict(np.resize(mel_db[0], model.n_features))


def model_rate_audio(path: Path, seconds: float | None, rate: int) -> np.ndarray:
    """The recording's first ``seconds`` (all: None), resampled block by block as the daemon does."""
    frames = -1 if seconds is None else int(seconds * MIC_RATE)
    audio, _ = sf.read(str(path), frames=frames, dtype="float32", always_2d=True)
    resampler = MonoResampler(MIC_RATE, rate, audio.shape[1])
    parts = [resampler.process(audio[i : i + READ_FRAMES]) for i in range(0, len(audio), READ_FRAMES)]
    return np.concatenate(parts + [resampler.flush()])


def hop_costs(mono: np.ndarray, settings: FeatureSettings, model) -> HopCosts:  # noqa: ANN001
    """Replay ``mono`` hop by hop: each push feeds one hop of audio, then the floor runs on that window."""
    stream = StreamingFeatures(settings, HOP_S)
    ours, floor = [], []
    for start in range(0, len(mono), stream.hop_samples):
        t0 = time.thread_time()
        windows = stream.push(mono[start : start + stream.hop_samples])
        for window in windows:
            model.predict(window.features)
        t1 = time.thread_time()
        if not windows or windows[0].index < SETTLE_HOPS:
            continue
        floor_hop(windows[-1], settings, stream.hop_samples, model)
        ours.append(t1 - t0)
        floor.append(time.thread_time() - t1)
    return HopCosts(np.array(ours), np.array(floor))


# --- callgrind ------------------------------------------------------------------------------------

def child(mode: str, hops: int, total: int, recording: Path) -> None:
    """Under callgrind: set up (the same whatever ``hops``), then SETTLE_HOPS + ``hops`` hops of ``mode``:
    ``features`` (push + predict) or ``floor``."""
    bundle = load_bundle(default_model_path())
    model, settings = bundle.open_model(), bundle.features
    mono = model_rate_audio(recording, settings.window_s + (SETTLE_HOPS + total + 2) * HOP_S, settings.sample_rate)
    stream = StreamingFeatures(settings, HOP_S)
    blocks = [mono[start : start + stream.hop_samples] for start in range(0, len(mono), stream.hop_samples)]
    windows = [window for block in blocks for window in stream.push(block)]  # for the floor
    stream = StreamingFeatures(settings, HOP_S)
    counted = SETTLE_HOPS + hops
    if mode == "floor":
        for window in windows[:counted]:
            floor_hop(window, settings, stream.hop_samples, model)
        return
    done = 0
    for block in blocks:
        for window in stream.push(block):
            model.predict(window.features)
            done += 1
        if done >= counted:
            return


def callgrind(command: list[str]) -> int:
    """Instructions executed by ``command`` (all threads), counted by valgrind --tool=callgrind."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "callgrind.out"
        run = subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", *command],
                             capture_output=True, text=True)
        if run.returncode != 0:
            raise SystemExit(f"callgrind failed: {run.stderr[-2000:]}")
        for line in out.read_text().splitlines():
            if line.startswith("summary:") or line.startswith("totals:"):
                return int(line.split()[1])
    raise SystemExit("callgrind wrote no totals")


def instruction_counts(recording: Path, hops: int, work: Path, port: int) -> dict[str, float]:
    """Instructions per hop (features, floor) and per second of audio (whole daemon with MQTT off and on, to the
    broker on ``port``; whole peer), as differences. The two MQTT runs may overlap: each has its own device id
    and spool (in ``work``)."""
    me = [sys.executable, str(Path(__file__).resolve()), "--child"]
    total = str(hops)
    short, long_ = (BENCH_DIR / f"callgrind-{s:g}s-48k.wav" for s in CALLGRIND_AUDIO_S)
    for path, seconds in zip((short, long_), CALLGRIND_AUDIO_S):
        excerpt(recording, path, seconds)
    daemon = [NOISEWATCH, "run", "--speed", "0", "--jsonl", "/dev/null"]
    jobs = {
        **{f"{mode}_{end}": me + [mode, count, total, str(recording)]
           for mode in ("features", "floor") for end, count in (("lo", "0"), ("hi", total))},
        "daemon_lo": daemon + ["--input", str(short)], "daemon_hi": daemon + ["--input", str(long_)],
        **{f"daemon_mqtt_{end}": daemon + ["--config", str(mqtt_config(work / end, port, device_id=f"callgrind-{end}")),
                                          "--input", str(path)]
           for end, path in (("lo", short), ("hi", long_))},
        "peer_lo": [sys.executable, str(PEER), str(short)], "peer_hi": [sys.executable, str(PEER), str(long_)],
    }
    with ThreadPoolExecutor(max_workers=2) as pool:
        counts = dict(zip(jobs, pool.map(callgrind, jobs.values())))
    return {
        "features": (counts["features_hi"] - counts["features_lo"]) / hops,
        "floor": (counts["floor_hi"] - counts["floor_lo"]) / hops,
        **{f"{name}_per_audio_s": (counts[f"{name}_hi"] - counts[f"{name}_lo"]) / (CALLGRIND_AUDIO_S[1] - CALLGRIND_AUDIO_S[0])
           for name in ("daemon", "daemon_mqtt", "peer")},
    }


def excerpt(recording: Path, path: Path, seconds: float, offset_s: float = 0.0) -> None:
    """The first ``seconds`` of the recording (from ``offset_s``) as its own 16-bit WAV file."""
    audio, _ = sf.read(str(recording), frames=int(seconds * MIC_RATE), start=int(offset_s * MIC_RATE), dtype="int16")
    sf.write(str(path), audio, MIC_RATE, subtype="PCM_16")


def pi_estimates(instructions_per_audio_s: float) -> list[tuple[str, float]]:
    """(board, real-time factor): the board's instructions per second (clock x assumed instructions per cycle)
    over the daemon's instructions per second of audio, scaled by :data:`ARM_INSTRUCTION_FACTOR`.

    One core: the daemon's work is one processing loop. The instructions-per-cycle figures are assumptions
    below the cores' issue widths (A53: in-order, dual-issue; A72: out-of-order, 3-wide), for code that
    spends its time in numpy calls on small arrays; the estimate is as good as they are."""
    arm = instructions_per_audio_s * ARM_INSTRUCTION_FACTOR
    return [(board, clock * ipc / arm) for board, (clock, ipc) in PI_BOARDS.items()]


# --- whole processes --------------------------------------------------------------------------------

def whole_processes(recording: Path, configs: dict[str, Path], repeats: int) -> dict[str, list[DaemonRun]]:
    """Alternate runs of the daemon under each config and of the peer on the same file: runs by name
    (the configs' names, and ``peer``)."""
    daemon = [NOISEWATCH, "run", "--input", str(recording), "--speed", "0", "--config"]
    commands = {**{name: daemon + [str(config)] for name, config in configs.items()},
                "peer": [sys.executable, str(PEER), str(recording)]}
    runs: dict[str, list[DaemonRun]] = {name: [] for name in commands}
    for _ in range(repeats):
        for name, command in commands.items():
            run = run_measured(command, sample_every_s=0.05)
            if run.returncode != 0:
                raise SystemExit(f"{name} run failed ({run.returncode}): {run.stderr[-2000:]}")
            runs[name].append(run)
    return runs


def installed_bytecode() -> None:
    """Write the package's bytecode, as pip does when it installs noisewatch: the daemon measured here must not
    compile its own sources at every start, which it does from an editable install under
    PYTHONDONTWRITEBYTECODE (~0.3G instructions, a fifth of a start-up)."""
    if not compileall.compile_dir(str(PACKAGE), quiet=1):
        raise SystemExit(f"cannot compile {PACKAGE}")


# --- report -----------------------------------------------------------------------------------------

def row(figure: str, value: str, target: str, met: bool | None) -> None:
    verdict = "" if met is None else ("yes" if met else "NO")
    print(f"| {figure} | {value} | {target} | {verdict} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--callgrind-hops", type=int, default=40)
    parser.add_argument("--no-callgrind", action="store_true")
    parser.add_argument("--child", nargs=4, metavar=("MODE", "HOPS", "TOTAL", "RECORDING"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], int(args.child[1]), int(args.child[2]), Path(args.child[3]))
        return
    if not args.no_callgrind and args.minutes * 60 < CALLGRIND_AUDIO_S[1]:
        parser.error(f"the callgrind runs cut {CALLGRIND_AUDIO_S[1]:g} s from the recording: --minutes "
                     f"{CALLGRIND_AUDIO_S[1] / 60:g} at least, or --no-callgrind")
    print(machine())
    installed_bytecode()
    BENCH_DIR.mkdir(exist_ok=True)
    seconds = args.minutes * 60
    recording = write_long_recording(BENCH_DIR / f"replay-{args.minutes:g}min-48k.wav", seconds)
    bundle = load_bundle(default_model_path())
    model = bundle.open_model()
    print(f"{seconds:.0f} s of 48 kHz audio ({recording.name}); model {bundle.ident} {bundle.variant} on {model.runtime}")

    costs = hop_costs(model_rate_audio(recording, None, bundle.features.sample_rate), bundle.features, model)
    ours_med, floor_med = float(np.median(costs.ours)), float(np.median(costs.floor))
    print(f"\nin process, {len(costs.ours)} hops, thread CPU time per hop, us: median (mean)")
    print(f"  features + inference  {ours_med * US:8.1f} ({costs.ours.mean() * US:.1f})")
    print(f"  floor                 {floor_med * US:8.1f} ({costs.floor.mean() * US:.1f})")

    work = Path(tempfile.mkdtemp(prefix="nw-floor-"))
    broker = Broker().start()
    try:
        counts = None if args.no_callgrind else instruction_counts(recording, args.callgrind_hops, work, broker.port)
        if counts:
            print(f"\ncallgrind, instructions per hop ({args.callgrind_hops} hops): features + inference "
                  f"{counts['features']:,.0f}, floor {counts['floor']:,.0f}; whole daemon per second of audio "
                  f"(runs of {CALLGRIND_AUDIO_S[0]:g} and {CALLGRIND_AUDIO_S[1]:g} s): MQTT off "
                  f"{counts['daemon_per_audio_s']:,.0f}, on {counts['daemon_mqtt_per_audio_s']:,.0f}; YAMNet peer "
                  f"per second of audio (the same runs): {counts['peer_per_audio_s']:,.0f}")
        runs = whole_processes(recording, {"no_mqtt": mqtt_config(work, None),
                                           "mqtt": mqtt_config(work, broker.port)}, args.repeats)
        startup_path = BENCH_DIR / "startup-48k.wav"
        excerpt(recording, startup_path, STARTUP_AUDIO_S, offset_s=5.0)
        startup_config = mqtt_config(work, broker.port, scores=True)
        starts = [first_window_s(startup_path, startup_config) for _ in range(max(5, args.repeats))]
    finally:
        broker.stop()
        broker.cleanup()
    cpu = {name: float(np.median([run.cpu_s for run in named])) / seconds for name, named in runs.items()}
    print(f"\nwhole process, {args.repeats} runs each, alternately: CPU s / peak RSS MiB")
    for name, named in runs.items():
        print(f"  {name:8s} {', '.join(f'{r.cpu_s:.2f}' for r in named)} / {', '.join(f'{r.maxrss_mb:.1f}' for r in named)}")
    print(f"start-up to first window, s: {', '.join(f'{s:.3f}' for s in starts)}")

    print(f"load average at the end {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    rss = max(run.maxrss_mb for run in runs["mqtt"])
    start = float(np.median(starts))
    print("\n| figure | this run | target | met? |\n|---|---|---|---|")
    row("features + inference per hop / floor, CPU time, median (mean)",
        f"{ours_med / floor_med:.2f}x ({costs.ours.mean() / costs.floor.mean():.2f}x): "
        f"{ours_med * US:.0f} / {floor_med * US:.0f} us", "<= 1.5x", ours_med / floor_med <= 1.5)
    if counts:
        row("features + inference per hop / floor, instructions", f"{counts['features'] / counts['floor']:.2f}x: "
            f"{counts['features'] / 1e6:.2f}M / {counts['floor'] / 1e6:.2f}M", "(<= 1.5x)",
            counts["features"] / counts["floor"] <= 1.5)
    row("CPU per second of audio, noisewatch run --speed 0 (default config: MQTT off) / YAMNet peer, median",
        f"{cpu['no_mqtt'] / cpu['peer']:.2f}x: {cpu['no_mqtt'] * 1e3:.2f} / {cpu['peer'] * 1e3:.2f} ms", "<= 0.6x",
        cpu["no_mqtt"] / cpu["peer"] <= 0.6)
    row("the same with MQTT on (what MQTT costs)", f"{cpu['mqtt'] / cpu['peer']:.2f}x: {cpu['mqtt'] * 1e3:.2f} ms",
        "-", None)
    row("peak RSS, noisewatch run with MQTT on (max of runs)",
        f"{rss:.1f} MiB (MQTT off {max(r.maxrss_mb for r in runs['no_mqtt']):.1f}, peer "
        f"{max(r.maxrss_mb for r in runs['peer']):.1f})", "<= 60 MiB", rss <= 60)
    row("start-up to first window, median", f"{start:.3f} s", "<= 0.3 s", start <= 0.3)
    if counts:
        row("instructions per second of audio, whole daemon (MQTT off) / YAMNet peer",
            f"{counts['daemon_per_audio_s'] / counts['peer_per_audio_s']:.2f}x: {counts['daemon_per_audio_s'] / 1e6:.1f}M / "
            f"{counts['peer_per_audio_s'] / 1e6:.1f}M", "-", None)
        row("the same with MQTT on", f"{counts['daemon_mqtt_per_audio_s'] / counts['peer_per_audio_s']:.2f}x: "
            f"{counts['daemon_mqtt_per_audio_s'] / 1e6:.1f}M", "-", None)
        for board, factor in pi_estimates(counts["daemon_per_audio_s"]):
            row(f"estimated real-time factor, {board}", f"{factor:.0f}x", "-", None)


if __name__ == "__main__":
    main()

"""Where a hop's instructions go: each part of the daemon's features + inference counted alone by callgrind.

    .venv/bin/python bench/hop_parts.py [--calls 100]

Each part runs ``calls`` times on a real window of the bench recording (``bench/common.write_long_recording``,
resampled as the daemon does) in a child process under valgrind --tool=callgrind, and 0 times in another: the
difference over ``calls`` is its instructions per call, whatever the machine's load. The parts, in the order
``StreamingFeatures`` meets them per hop: the STFT to mel dB of the rows a hop transforms (its 22 new frames,
and with centred frames the window's 4 zero-padded edge frames; the floor's share is the new frames' line),
the clamp when it is each frame's own, the per-frame values (MFCCs and spectral shape) of the rows a hop forms
(new frames and edges; with a clamp counted from the window's loudest bin, also about the mean number formed
when that floor moves and cached rows are formed again), the window statistics, and the MLP. The stream's own
count of rows formed per hop on the recording comes first. Read with bench/floor.py, whose "features +
inference" line is the whole of these. The recording is streamed once, in this process; each child loads the
window saved from it, so the children do only set-up and the part under count (streaming 60 s in each of 20
children under callgrind took more than 15 minutes beside a training run).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from unittest import mock

for _blas_threads in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_blas_threads, "1")  # before numpy loads, as the daemon does (service.py): two BLAS
    # threads put exec_blas and its thread server in every part's instructions (found by review)

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import BENCH_DIR, write_long_recording  # noqa: E402
from floor import HOP_S, SETTLE_HOPS, callgrind, model_rate_audio  # noqa: E402

from noisewatch import features  # noqa: E402
from noisewatch.bundle import Bundle, default_model_path, load_bundle  # noqa: E402
from noisewatch.daemon import stream as stream_module  # noqa: E402
from noisewatch.daemon.stream import StreamingFeatures  # noqa: E402
from noisewatch.features import FeatureSettings  # noqa: E402

RECORDING_S = 60.0
WINDOW = 20
"""Which window of the recording the parts run on."""


def formed_rows(recording: Path, settings: FeatureSettings) -> tuple[np.ndarray, list[int]]:
    """Window ``WINDOW`` of the recording as the stream hands it out, and the rows whose per-frame values each
    hop formed: the recording is streamed once, here, not in every callgrind child."""
    mono = model_rate_audio(recording, None, settings.sample_rate)
    stream = StreamingFeatures(settings, HOP_S)
    rows: list[int] = []

    def counted(clamped: np.ndarray, settings: FeatureSettings, **kwargs: np.ndarray) -> np.ndarray:
        rows.append(len(clamped))  # the bench counts; the daemon need not
        return features.frame_values(clamped, settings, **kwargs)

    formed: list[int] = []
    windows = []
    with mock.patch.object(stream_module, "frame_values", counted):
        for start in range(0, len(mono), stream.hop_samples):
            rows.clear()
            pushed = stream.push(mono[start : start + stream.hop_samples])
            windows += pushed
            formed += [sum(rows)] if pushed else []
    return windows[WINDOW].samples, formed[SETTLE_HOPS:]


def parts(samples: np.ndarray, bundle: Bundle, mean_formed: int) -> dict[str, Callable[[], object]]:
    """The parts as calls on one window's samples."""
    model, settings = bundle.open_model(), bundle.features
    frames = np.ascontiguousarray(features.signal_frames(samples, settings)) * features.hann_window(settings.n_fft)
    mel_db = features.windowed_mel_db(frames, settings)
    clamped = features.clamp_db(mel_db, settings)
    values = features.frame_values(clamped, settings)
    vector = features.extract(samples, settings)
    new = StreamingFeatures(settings, HOP_S).hop_samples // settings.hop_length
    edges = settings.frames_per_window() - dataclasses.replace(settings, center=False).frames_per_window()

    def stats(*names: str) -> Callable[[], object]:
        def run() -> object:
            window = features._WindowStats(lambda: clamped, settings, values)
            return [window.get(name) for name in names] if names else window.moments
        return run

    table: dict[str, Callable[[], object]] = {
        f"STFT to mel dB, {new} rows (the floor's)": lambda: features.windowed_mel_db(frames[:new], settings)}
    if edges:
        table[f"STFT to mel dB, {new + edges} rows"] = lambda: features.windowed_mel_db(frames[: new + edges], settings)
    if settings.top_db is not None and settings.top_db_per == "frame":
        table[f"clamp of each frame, {new + edges} rows"] = lambda: features.clamp_db(mel_db[: new + edges], settings)
    for rows in sorted({new + edges, max(mean_formed, new + edges)}):
        table[f"per-frame values, {rows} rows"] = lambda rows=rows: features.frame_values(clamped[:rows], settings)
    table.update({
        "window statistics, all": lambda: features.summarize_frames(settings, lambda: clamped, values),
        "  of which moments": stats(),
        "  moments + modulation": stats("modulation"),
        "  moments + periodicity": stats("periodicity"),
        "MLP (predict)": lambda: model.predict(vector),
    })
    return table


def child(part: str, calls: int, window: Path, mean_formed: int) -> None:
    run = parts(np.load(window), load_bundle(default_model_path()), mean_formed)[part]
    run()  # plans, caches and first-call allocations are set-up, in both runs alike
    for _ in range(calls):
        run()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=100)
    parser.add_argument("--child", nargs=4, metavar=("PART", "CALLS", "WINDOW", "FORMED"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], int(args.child[1]), Path(args.child[2]), int(args.child[3]))
        return
    BENCH_DIR.mkdir(exist_ok=True)
    recording = write_long_recording(BENCH_DIR / f"replay-{RECORDING_S:g}s-48k.wav", RECORDING_S)
    bundle = load_bundle(default_model_path())
    samples, formed = formed_rows(recording, bundle.features)
    window = BENCH_DIR / "hop-parts-window.npy"
    np.save(window, samples)
    mean_formed = int(round(np.mean(formed)))
    table = parts(samples, bundle, mean_formed)
    print(f"rows formed per hop on {recording.name} ({len(formed)} hops, new frames included): "
          f"mean {np.mean(formed):.1f}, median {np.median(formed):.0f}, max {max(formed)}")
    me = [sys.executable, str(Path(__file__).resolve()), "--child"]
    jobs = [me + [part, str(calls), str(window), str(mean_formed)] for part in table for calls in (0, args.calls)]
    with ThreadPoolExecutor(max_workers=2) as pool:
        counts = list(pool.map(callgrind, jobs))
    print(f"\ninstructions per call (callgrind, {args.calls} calls less 0)")
    for index, part in enumerate(table):
        print(f"  {part:40s} {(counts[2 * index + 1] - counts[2 * index]) / args.calls:12,.0f}")


if __name__ == "__main__":
    main()

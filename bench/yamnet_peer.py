"""The peer: YAMNet run the way Frigate runs it, as a process of its own, on a recording.

    .venv/bin/python bench/yamnet_peer.py FILE [--model ../shared/peers/yamnet/yamnet.tflite]

Frigate feeds YAMNet non-overlapping 0.975 s windows (15600 samples) of 16 kHz mono audio, one
LiteRT interpreter with one thread, and counts a label as heard when its score reaches 0.8. Here the
recording is read in blocks, downmixed and resampled to 16 kHz with soxr (Frigate has ffmpeg do that
in another process: its cost is counted here, in the same process), and every full window is
classified. Prints one line: windows classified and how many had a label at or above the threshold.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import soundfile as sf  # noqa: E402
import soxr  # noqa: E402
from ai_edge_litert.interpreter import Interpreter  # noqa: E402

PEER = Path(__file__).resolve().parents[2] / "shared" / "peers" / "yamnet" / "yamnet.tflite"
RATE = 16000
WINDOW = 15600
"""0.975 s at 16 kHz: YAMNet's input."""
THRESHOLD = 0.8
"""Frigate's default minimum score."""
READ_FRAMES = 8192


def run(path: Path, model: Path) -> tuple[int, int]:
    """(windows classified, windows with a label at or above THRESHOLD)."""
    interpreter = Interpreter(model_path=str(model), num_threads=1)
    interpreter.allocate_tensors()
    inp = interpreter.get_input_details()[0]["index"]
    out = interpreter.get_output_details()[0]["index"]
    pending = np.zeros(0, dtype=np.float32)
    windows = heard = 0
    with sf.SoundFile(str(path)) as audio:
        resampler = soxr.ResampleStream(audio.samplerate, RATE, 1, dtype="float32")
        for block in audio.blocks(READ_FRAMES, dtype="float32", always_2d=True):
            last = audio.tell() == audio.frames
            mono = np.ascontiguousarray(block.mean(axis=1, dtype=np.float32))
            pending = np.concatenate([pending, resampler.resample_chunk(mono, last=last)])
            while len(pending) >= WINDOW:
                interpreter.set_tensor(inp, pending[:WINDOW])
                interpreter.invoke()
                heard += bool(interpreter.get_tensor(out).max() >= THRESHOLD)
                windows += 1
                pending = pending[WINDOW:]
    return windows, heard


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("file", type=Path)
    parser.add_argument("--model", type=Path, default=PEER)
    args = parser.parse_args()
    windows, heard = run(args.file, args.model)
    print(f"yamnet: {windows} windows, {heard} with a label >= {THRESHOLD}")


if __name__ == "__main__":
    main()

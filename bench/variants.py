"""float32 vs int8 bundles: accuracy (``noisewatch evaluate``) and per-inference time, side by side.

    noisewatch train --urbansound DATA/UrbanSound8K --esc50 DATA/ESC-50 --folds 1 --epochs 40 \\
        --hidden 256,256 --dropout 0.3 --background-weight 3 --no-baselines --out /tmp/bench-train
    noisewatch convert --train-dir /tmp/bench-train --out /tmp/bench-variants --name fold1
    .venv/bin/python bench/variants.py /tmp/bench-variants/fold1.json /tmp/bench-variants/fold1-float32.json

Trained on UrbanSound8K fold 1 (+ ESC-50 and quiet clips), evaluated on fold 2: held-out clips.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DATA, NOISEWATCH, percentiles  # noqa: E402

from noisewatch.bundle import load_bundle  # noqa: E402

CALLS = 2000
EVAL_FOLD = "2"


def predict_times(bundle_path: str) -> tuple[float, float]:
    """(median, p99) seconds of TFLiteModel.predict on random feature vectors."""
    model = load_bundle(bundle_path).open_model()
    x = np.random.default_rng(0).normal(size=(CALLS, model.n_features)).astype(np.float32)
    model.predict(x[0])
    times = []
    for row in x:
        t0 = time.perf_counter()
        model.predict(row)
        times.append(time.perf_counter() - t0)
    return percentiles(times)


def evaluate(bundle_path: str) -> dict:
    out = subprocess.run([NOISEWATCH, "evaluate", "--model", bundle_path, "--dataset", str(DATA / "UrbanSound8K"),
                          "--folds", EVAL_FOLD, "--json"], check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundles", nargs="+")
    args = parser.parse_args()
    print(f"bundle                      variant   bytes    fold-{EVAL_FOLD} acc  macro-F1  predict median/p99 us")
    for path in args.bundles:
        bundle = load_bundle(path)
        metrics = evaluate(path)
        med, p99 = predict_times(path)
        print(f"{Path(path).name:<27} {bundle.variant:<8} {bundle.tflite.stat().st_size:7d} "
              f"{_get(metrics, 'accuracy'):11.4f} {_get(metrics, 'macro_f1'):9.4f} {med * 1e6:10.1f} / {p99 * 1e6:.1f}")


def _get(metrics: dict, key: str) -> float:
    """A metric from evaluate's JSON, wherever it nests it."""
    if key in metrics:
        return float(metrics[key])
    for value in metrics.values():
        if isinstance(value, dict) and key in value:
            return float(value[key])
    return float("nan")


if __name__ == "__main__":
    main()

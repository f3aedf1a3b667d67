"""The runtime path never pulls in the training stack (checked in a fresh interpreter)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

FORBIDDEN = ("tensorflow", "keras", "librosa", "sklearn", "numba")
PROBE = """
import json, sys
import numpy as np
import noisewatch.features, noisewatch.bundle, noisewatch.runtime, noisewatch.config, noisewatch.cli
import noisewatch.train.evaluate
from noisewatch.bundle import default_model_path, load_bundle
from noisewatch.features import clip_features
bundle = load_bundle(default_model_path())
model = bundle.open_model()
t = np.arange(22050) / 22050
scores = model.predict(clip_features(0.3 * np.sin(2 * np.pi * 440 * t), bundle.features))
print(json.dumps({
    "loaded": sorted({name.split(".")[0] for name in sys.modules}),
    "runtime": model.runtime,
    "n_scores": len(scores),
    "labels": len(bundle.labels),
}))
"""


def test_runtime_path_does_not_import_training_stack(repo_root: Path) -> None:
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, cwd=repo_root, timeout=120)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["n_scores"] == result["labels"] == 11
    assert result["runtime"] != "tensorflow"
    assert not set(FORBIDDEN) & set(result["loaded"])


RUN_PROBE = """
import json, sys
from noisewatch.cli import main
code = main(["run", "--input", sys.argv[1], "--speed", "0", "--jsonl", "/dev/null"])
print(json.dumps({"code": code, "loaded": sorted(sys.modules)}))
"""
NOT_ON_THE_RUN_PATH = ("noisewatch.train", "noisewatch.setup_wizard", "noisewatch.dashboard", "sounddevice", "paho",
                       "ssl")
"""Modules a file replay with the default config (MQTT off) has no use for: importing them only delays the first
window (issue 17), and ssl maps libssl and libcrypto (1.4 MiB more peak RSS)."""


def test_replaying_a_file_imports_only_the_run_path(repo_root: Path, tmp_path: Path) -> None:
    import numpy as np
    import soundfile as sf

    audio = tmp_path / "silence.wav"
    sf.write(str(audio), np.zeros(4800, dtype=np.float32), 48000)
    done = subprocess.run([sys.executable, "-c", RUN_PROBE, str(audio)], capture_output=True, text=True, cwd=repo_root,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["code"] == 0
    assert not [name for name in result["loaded"] if name.startswith(NOT_ON_THE_RUN_PATH)]

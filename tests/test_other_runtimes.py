"""README: "`tflite-runtime` 2.14 also works (it needs numpy<2 ...)" and "Set `NOISEWATCH_TFLITE_RUNTIME` or
`model.runtime` to force one": the quick start run on each runtime gives the same scores and events.

The 2.14 run uses a venv of its own with numpy<2 and tflite-runtime 2.14 and no ai-edge-litert
(``scripts/bootstrap.sh --test`` makes ``.venv-tflite214``), and this checkout's code."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from daemon_run import json_lines

TFLITE_214_VENV = ".venv-tflite214"
SCORE_TOLERANCE = 1e-3
"""Scores are sent to 4 decimals, and the 2.14 run computes its features on numpy 1, whose float32 results may
differ from numpy 2's in the last bits: the int8 model quantizes its inputs per window (dynamic range, 127
steps up to the largest), so such a difference can move an input by one step, and a score by a few 1e-4 (3e-4
seen on the sample with urban11@2026.12.05.1, over 171 scores). The events must be the same to the millisecond."""


def quick_start(python: str, repo_root: Path, tmp_path: Path, config: str = "", **env: str) -> tuple[list[dict], str]:
    """The README's quick start with every window's scores on: its messages and its log."""
    path = tmp_path / f"config{len(list(tmp_path.iterdir()))}.yaml"
    path.write_text("scores:\n  enabled: true\n  interval_s: 0\n" + config)
    done = subprocess.run([python, "-m", "noisewatch.cli", "run", "--config", str(path), "--input",
                           str(repo_root / "samples" / "scene.flac"), "--speed", "0", "--jsonl", "-"],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": str(repo_root), **env})
    assert done.returncode == 0, done.stderr
    return json_lines(done.stdout), done.stderr


def assert_same_detections(got: list[dict], expected: list[dict]) -> None:
    scores = [[(s["label"], s["score"]) for s in m["top"]] for m in got if m["type"] == "scores"]
    wanted = [[(s["label"], s["score"]) for s in m["top"]] for m in expected if m["type"] == "scores"]
    assert len(scores) == len(wanted) > 0
    for window, (top, top_wanted) in enumerate(zip(scores, wanted)):
        want = dict(top_wanted)
        assert top[0][0] == top_wanted[0][0] or abs(top[0][1] - top_wanted[0][1]) <= SCORE_TOLERANCE, (window, top)
        for label, score in top:  # a tie at the third place may name another label
            assert label not in want or abs(score - want[label]) <= SCORE_TOLERANCE, (window, top, top_wanted)
    events = [(m["label"], m["offset_s"], m["duration_s"]) for m in got if m["type"] == "event"]
    assert events == [(m["label"], m["offset_s"], m["duration_s"]) for m in expected if m["type"] == "event"]
    assert len(events) == 3  # the scene's siren, dog bark and jackhammer


def tflite_214_python(repo_root: Path) -> Path:
    """The 2.14 venv's interpreter; a skip where no Python 3.10 or 3.11 is installed (its wheels stop at 3.11, and
    bootstrap then makes no venv), a failure where one is and the venv is missing."""
    python = repo_root / TFLITE_214_VENV / "bin" / "python"
    if python.exists():
        return python
    versions = [subprocess.run([found, "-c", "import sys; print(sys.version_info[:2] <= (3, 11))"], capture_output=True,
                               text=True).stdout.strip() for name in ("python3", "python3.11", "python3.10")
                if (found := shutil.which(name))]
    if "True" not in versions:
        pytest.skip("tflite-runtime 2.14 has wheels up to Python 3.11 only, and none is installed here")
    pytest.fail(f"{python} is missing: scripts/bootstrap.sh --test makes it")


@pytest.fixture(scope="module")
def reference(repo_root: Path, tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    messages, log = quick_start(sys.executable, repo_root, tmp_path_factory.mktemp("litert"))
    assert "(int8, ai_edge_litert)" in log
    return messages


def test_tflite_runtime_2_14_with_numpy_1_gives_the_same_detections(
        repo_root: Path, tmp_path: Path, reference: list[dict]) -> None:
    python = tflite_214_python(repo_root)
    versions = subprocess.run([str(python), "-c", "import numpy, tflite_runtime; print(numpy.__version__, "
                               "tflite_runtime.__version__)"], capture_output=True, text=True, check=True).stdout.split()
    assert versions[0].startswith("1.") and versions[1].startswith("2.14"), versions
    messages, log = quick_start(str(python), repo_root, tmp_path)
    assert "(int8, tflite_runtime)" in log, log
    assert_same_detections(messages, reference)


def test_the_environment_or_the_config_forces_a_runtime(repo_root: Path, tmp_path: Path, reference: list[dict]) -> None:
    messages, log = quick_start(sys.executable, repo_root, tmp_path, NOISEWATCH_TFLITE_RUNTIME="tensorflow")
    assert "(int8, tensorflow)" in log, log
    assert_same_detections(messages, reference)
    _, log = quick_start(sys.executable, repo_root, tmp_path, "model:\n  runtime: tensorflow\n")
    assert "(int8, tensorflow)" in log, log

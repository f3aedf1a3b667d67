"""The runtime's "Created TensorFlow Lite XNNPACK delegate" chatter is gone; real stderr output is not."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from noisewatch.runtime import CHATTER, stderr_without

CHATTER_LINE = "INFO: Created TensorFlow Lite XNNPACK delegate for CPU."


def test_check_config_and_classify_print_no_delegate_chatter(repo_root: Path) -> None:
    for args in (["check-config", "config/noisewatch.yaml"], ["classify", "samples/scene.flac"]):
        done = subprocess.run([sys.executable, "-m", "noisewatch.cli", *args], capture_output=True, text=True,
                              cwd=repo_root, timeout=300)
        assert done.returncode == 0, done.stderr
        assert "XNNPACK" not in done.stderr


def test_other_output_of_the_block_reaches_stderr(capfd: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(RuntimeError, match="cannot load"):
        with stderr_without(CHATTER):
            os.write(2, f"before\n{CHATTER_LINE}\nERROR: real trouble\n".encode())  # as C++ code writes
            print("from python", file=sys.stderr)
            raise RuntimeError("cannot load")
    err = capfd.readouterr().err
    assert sorted(err.splitlines()) == ["ERROR: real trouble", "before", "from python"]
    print("after", file=sys.stderr)
    assert capfd.readouterr().err == "after\n"  # stderr is stderr again

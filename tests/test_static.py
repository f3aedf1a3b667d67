"""Static checks run with the tests, so CI (which runs the README's test command) fails on them too:
ruff's lint rules and mypy's types over the package, with the settings in pyproject.toml and setup.cfg."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("command", [["ruff", "check", "noisewatch"], ["mypy", "noisewatch"]], ids=["ruff", "mypy"])
def test_the_package_passes(command: list[str]) -> None:
    result = subprocess.run([sys.executable, "-m", *command], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr

"""The wait for Home Assistant a stop keeps for the next start (``home_assistant_wait.json``): kept, taken once, never
longer than a restart's wait, and a file that cannot be read or written is said, not fatal."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from noisewatch.daemon.sinks.homeassistant_wait import HA_RESTART_WAIT_S
from noisewatch.daemon.sinks.kept_wait import FILE_NAME, KeptWait


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def test_a_kept_wait_is_taken_once_for_what_is_left_of_it(tmp_path: Path) -> None:
    clock = Clock()
    KeptWait(tmp_path, clock).keep(120.0)
    assert json.loads((tmp_path / FILE_NAME).read_text()) == {"until": clock.now + 120.0}
    clock.now += 45.0  # the listener was down this long
    store = KeptWait(tmp_path, clock)
    assert store.take() == 75.0
    assert not (tmp_path / FILE_NAME).exists()  # a kill -9 of this start keeps no wait for the next
    assert store.take() == 0.0


def test_no_wait_to_keep_removes_an_earlier_one(tmp_path: Path) -> None:
    clock = Clock()
    KeptWait(tmp_path, clock).keep(60.0)
    KeptWait(tmp_path, clock).keep(0.0)
    assert not (tmp_path / FILE_NAME).exists()
    assert KeptWait(tmp_path, clock).take() == 0.0


def test_a_wait_that_ran_out_while_the_listener_was_down_is_none(tmp_path: Path) -> None:
    clock = Clock()
    KeptWait(tmp_path, clock).keep(60.0)
    clock.now += 3600.0
    assert KeptWait(tmp_path, clock).take() == 0.0
    assert not (tmp_path / FILE_NAME).exists()


def test_a_clock_set_back_makes_no_wait_longer_than_a_restart_s(tmp_path: Path) -> None:
    clock = Clock()
    KeptWait(tmp_path, clock).keep(HA_RESTART_WAIT_S)
    clock.now -= 86400.0  # the Pi came up without its network time, a day behind
    assert KeptWait(tmp_path, clock).take() == HA_RESTART_WAIT_S


@pytest.mark.parametrize("text", ["{not json", "[]", '{"until": "soon"}', "{}", "[" * 100_000])
def test_a_file_that_cannot_be_read_is_said_and_ignored(tmp_path: Path, text: str,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / FILE_NAME).write_text(text)
    with caplog.at_level(logging.WARNING, logger="noisewatch"):
        assert KeptWait(tmp_path, Clock()).take() == 0.0
    assert f"ignoring {tmp_path / FILE_NAME}" in caplog.text


def test_a_folder_that_refuses_the_file_is_said(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    folder = tmp_path / "state"
    folder.write_text("a file where the state folder should be")
    with caplog.at_level(logging.WARNING, logger="noisewatch"):
        KeptWait(folder, Clock()).keep(60.0)
    assert "cannot keep the wait for Home Assistant" in caplog.text
    assert "the next start sends the events held for it at once" in caplog.text

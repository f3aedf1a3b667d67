"""A live input for service tests where no microphone exists: a real recording replayed in real time by the daemon's
own FileSource, reporting itself live, under the device name a config gives (``open_source`` and ``check_device``
are replaced, nothing after them: the ring buffer, the resampler, the pipeline and the sinks are the daemon's)."""

from __future__ import annotations

import time
from pathlib import Path

from daemon_run import read_jsonl

from noisewatch.daemon.setup import Overrides, prepare
from noisewatch.daemon.sources import FileSource


class LiveReplay(FileSource):
    """A real file source that reports itself live (a microphone): the checks only live inputs get apply."""

    live = True


class Named(LiveReplay):
    """A microphone named by the config's ``audio.device``, playing ``path`` in real time."""

    def __init__(self, path: Path, audio) -> None:  # noqa: ANN001 - an AudioSection
        super().__init__(str(path), 1, audio.block_size, audio.buffer_s)
        self.name = audio.device


def service_on_mic_a(tmp_path: Path, monkeypatch, open_named, config_text: str = "audio:\n  device: MicA\n"):  # noqa: ANN001, ANN201
    """A service on ``config_text`` (``audio.device: MicA``; JSON lines out): its config, output, signals and the
    service. Every device a config names is there, and opens as ``open_named(audio)``."""
    from noisewatch.daemon import service as service_module
    from noisewatch.daemon import setup as setup_module

    monkeypatch.setattr(service_module, "open_source", lambda audio, input_path, speed: open_named(audio))
    monkeypatch.setattr(setup_module, "check_device", lambda audio: None)
    config, out = tmp_path / "c.yaml", tmp_path / "out.jsonl"
    config.write_text(config_text)
    signals = service_module.Signals()
    return config, out, signals, service_module.Service(prepare(str(config), Overrides(jsonl=str(out))), signals)


def wait_for(path: Path, predicate, timeout: float) -> list[dict]:  # noqa: ANN001
    """The JSON lines in ``path`` once ``predicate`` holds of them; AssertionError after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        messages = read_jsonl(path) if path.exists() else []
        if predicate(messages):
            return messages
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting in {path}")

"""Faults around a SIGHUP reload that reopens a live microphone (``Service._hear_the_rest``, ``AudioSection.opens_as``,
``Backoff.take``). Each test drives a real Service on a fake-named live input that replays a real recording in real
time, through tests/live_input.py (no microphone exists here)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
from daemon_run import read_jsonl
from live_input import Named, service_on_mic_a, wait_for

from noisewatch.daemon.sources import SourceError


def _run_in_thread(service, signals, scenario) -> None:
    """``scenario()`` beside ``service.run()``; the service is stopped at its end whatever happens."""
    errors: list[BaseException] = []

    def guarded() -> None:
        try:
            scenario()
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            errors.append(exc)
        finally:
            signals.stop.set()

    thread = threading.Thread(target=guarded, daemon=True)
    thread.start()
    assert service.run() == 0
    thread.join(5)
    if errors:
        raise errors[0]


SCENE = "samples/scene.flac"
"""The sample scene (22050 Hz mono): quiet, a siren 5-9 s, a dog 14-17 s, a jackhammer 22-25 s."""


def test_an_event_open_when_a_reload_s_new_microphone_cannot_be_opened_is_closed_at_the_loss(
        repo_root: Path, tmp_path: Path, monkeypatch) -> None:
    """Found by a fault hunt: a reload names another microphone (MicB) while a siren event is open on MicA; MicB cannot
    be opened, so the service goes to AUDIO_LOST and retries. When a live input fails while listening, the pipeline's
    gap() closes the open events before the 'audio_error' status (nobody hears the siren end any more). On this path
    nothing did (a reopen makes a gap now): the siren stayed open (Home Assistant's siren sensor ON) for the whole
    outage and its 'event' came only at the stop (or, if a device came back, the event went on across the outage
    with windows that straddle it).

    Showed as: no siren 'event' message before the 'audio_error' status; the event only appeared after it."""
    scene = repo_root / SCENE

    def open_named(audio):
        if audio.device == "MicB":
            raise SourceError("audio input device 'MicB' not found")
        return Named(scene, audio)

    config, out, signals, service = service_on_mic_a(tmp_path, monkeypatch, open_named)

    def scenario() -> None:
        wait_for(out, lambda ms: any(m["type"] == "started" and m["label"] == "siren" for m in ms), 20)
        config.write_text("audio:\n  device: MicB\n  reopen_max_s: 1\n")
        signals.reload.set()
        wait_for(out, lambda ms: any(m["type"] == "status" and m["state"] == "audio_error" for m in ms), 10)
        time.sleep(3)  # MicB still missing: retried a few times

    _run_in_thread(service, signals, scenario)
    kinds = [(m["type"], m.get("label") or m.get("state")) for m in read_jsonl(out)]
    lost = kinds.index(("status", "audio_error"))
    assert ("event", "siren") in kinds[:lost], kinds  # closed where MicA's audio stopped, as a failed device's are


def test_an_input_healthy_a_long_while_retries_a_reload_s_unopenable_device_from_the_first_wait(
        repo_root: Path, tmp_path: Path, monkeypatch) -> None:
    """Found by a fault hunt. STABLE_S says: a source that delivered audio this long counts as healthy, the next failure starts the backoff
    afresh. But Backoff.healthy() was only called when a pump ended FAILED/STALLED; a reload's reopen (Ending.REOPEN)
    skipped it, so the waits grown while MicA was missing at boot (1, 2, 4 s: next 8 s) are still there after MicA
    listened far longer than STABLE_S. A reload naming MicB, which cannot be opened, then waits 8 s (up to
    reopen_max_s, 30 s by default) before its first retry instead of 1 s.

    Showed as: the first two attempts to open MicB ~8 s apart, not ~1 s (STABLE_S lowered to 2 s here)."""
    from noisewatch.daemon import service as service_module

    monkeypatch.setattr(service_module, "STABLE_S", 2.0)
    scene = repo_root / SCENE
    attempts: list[tuple[float, str]] = []
    refusals = {"MicA": 3}

    def open_named(audio):
        attempts.append((time.monotonic(), audio.device))
        if audio.device == "MicA" and refusals["MicA"]:
            refusals["MicA"] -= 1
            raise SourceError("audio input device 'MicA' not found")
        if audio.device == "MicB":
            raise SourceError("audio input device 'MicB' not found")
        return Named(scene, audio)

    config, out, signals, service = service_on_mic_a(tmp_path, monkeypatch, open_named,
                                                      "audio:\n  device: MicA\n  reopen_max_s: 30\n")

    def scenario() -> None:
        wait_for(out, lambda ms: any(m["type"] == "status" and m["state"] == "listening" for m in ms), 30)
        time.sleep(4.0)  # MicA heard twice STABLE_S: healthy
        config.write_text("audio:\n  device: MicB\n  reopen_max_s: 30\n")
        signals.reload.set()
        deadline = time.monotonic() + 12
        while sum(1 for _, device in attempts if device == "MicB") < 2 and time.monotonic() < deadline:
            time.sleep(0.05)

    _run_in_thread(service, signals, scenario)
    mic_b = [at for at, device in attempts if device == "MicB"]
    assert len(mic_b) >= 2 and mic_b[1] - mic_b[0] < 2.5, (np.diff(mic_b), attempts)


def test_a_second_reload_during_a_reopen_is_checked_as_one_while_listening(
        repo_root: Path, tmp_path: Path, monkeypatch, caplog) -> None:
    """Found by a fault hunt. Two SIGHUPs close together: the first changes block_size (a reopen), the second, arriving while the first
    is prepared (a model loading), asks for a rate MicA cannot capture. A reload while listening with such an audio
    section is refused (check_device: a problem of the key) and MicA goes on. Here _keep_listening found the second
    reload pending after Ending.REOPEN and ran _swap(None), the path for an input that is LOST: the device is not
    checked, the log says "reload applied while the audio input is lost" (it was not), the config is applied, and
    the listener goes deaf (AUDIO_LOST, retrying an impossible format for ever).

    Showed as: audio.sample_rate ending as 96000 and an 'audio_error' status, where the same reload a moment later
    (or earlier) is refused and MicA keeps listening."""
    import logging

    from noisewatch.daemon import service as service_module
    from noisewatch.daemon import setup as setup_module

    caplog.set_level(logging.INFO, logger="noisewatch")
    scene = repo_root / SCENE

    def open_named(audio):
        if audio.sample_rate == 96000:
            raise SourceError("audio input 1: MicA cannot capture 96000 Hz")
        return Named(scene, audio)

    config, out, signals, service = service_on_mic_a(tmp_path, monkeypatch, open_named)

    def check_device(audio) -> None:
        if audio.sample_rate == 96000:
            raise SourceError("audio input 1: MicA cannot capture 96000 Hz x 1 channel(s): Invalid sample rate")

    monkeypatch.setattr(setup_module, "check_device", check_device)
    prepare_now, calls = service_module.prepare, []

    def prepare_then_a_second_sighup(*args, **kwargs):
        prepared = prepare_now(*args, **kwargs)
        calls.append(kwargs.get("check_audio"))
        if len(calls) == 1:  # the second SIGHUP comes while the first is being prepared
            config.write_text("audio:\n  device: MicA\n  block_size: 512\n  sample_rate: 96000\n")
            signals.reload.set()
        return prepared

    def scenario() -> None:
        wait_for(out, lambda ms: any(m["type"] == "status" for m in ms), 15)
        monkeypatch.setattr(service_module, "prepare", prepare_then_a_second_sighup)
        config.write_text("audio:\n  device: MicA\n  block_size: 512\n")
        signals.reload.set()
        deadline = time.monotonic() + 10
        while len(calls) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(2)

    _run_in_thread(service, signals, scenario)
    said = [m["state"] for m in read_jsonl(out) if m["type"] == "status"]
    assert "while the audio input is lost" not in caplog.text, caplog.text
    assert service.setup.config.audio.sample_rate is None and "audio_error" not in said, (
        service.setup.config.audio, said, calls)


def test_an_event_across_a_reopen_with_a_hole_in_the_audio_ends_when_its_sound_ended(
        repo_root: Path, tmp_path: Path, monkeypatch) -> None:
    """Found by a fault hunt: a reload names MicB while a siren is open on MicA; MicB takes 3 s to give audio (a USB microphone settling),
    then hears the siren for 4 s. Nothing was heard for those 3 s (more than a hop): Pipeline.lost() makes a hole of a
    hop or more a gap (open events end where the audio stopped), and a failed device gets a gap too, but a reopen
    got none (it makes one now): the first block of MicB only re-anchors the clock (accept(first=True) -> heard_at), the windows
    straddle the hole and both microphones, and the siren is one event whose end is its start plus the audio heard,
    so it is reported ending ~3 s before the siren actually stopped.

    Showed as: the siren event's end ~3 s earlier than the wall time MicB's siren audio ended."""
    from datetime import datetime, timedelta, timezone

    import soundfile as sf

    audio, rate = sf.read(repo_root / SCENE, dtype="float32")
    siren_first = tmp_path / "siren_first.flac"
    sf.write(siren_first, audio[5 * rate:], rate)  # the siren from its start (4 s), then the rest of the scene
    began: dict[str, datetime] = {}

    class _Settling(Named):
        def _replay(self) -> None:
            if self.name == "MicB" and self._halt.wait(3.0):
                return
            began[self.name] = datetime.now(timezone.utc)
            super()._replay()

    def open_named(audio_section):
        return _Settling(repo_root / SCENE if audio_section.device == "MicA" else siren_first, audio_section)

    config, out, signals, service = service_on_mic_a(tmp_path, monkeypatch, open_named)

    def scenario() -> None:
        wait_for(out, lambda ms: any(m["type"] == "started" and m["label"] == "siren" for m in ms), 20)
        config.write_text("audio:\n  device: MicB\n")
        signals.reload.set()
        wait_for(out, lambda ms: "MicB" in began and any(
            m["type"] == "event" and m["label"] == "siren" and _utc(m["end"]) > began["MicB"] for m in ms), 30)

    _run_in_thread(service, signals, scenario)
    siren_ended = began["MicB"] + timedelta(seconds=4.0)
    last = [m for m in read_jsonl(out) if m["type"] == "event" and m["label"] == "siren"][-1]
    assert abs((_utc(last["end"]) - siren_ended).total_seconds()) < 1.5, (last, siren_ended.isoformat())


def _utc(iso: str):
    from datetime import datetime

    return datetime.fromisoformat(iso.replace("Z", "+00:00"))

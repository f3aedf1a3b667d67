"""The daemon end to end: real audio replayed through `noisewatch run`, events checked against the scene."""

from __future__ import annotations

import gc
import json
import os
import re
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr
from daemon_run import build_scene, events, json_lines, read_jsonl, recognised_clips, run_daemon, write_scene
from live_input import LiveReplay, Named, service_on_mic_a, wait_for

from noisewatch.bundle import default_model_path, load_bundle
from noisewatch.config import Config, ConfigError
from noisewatch.daemon.events import SampleClock
from noisewatch.daemon.levels import dbfs, peak_dbfs
from noisewatch.daemon.pipeline import Pipeline
from noisewatch.daemon.service import READ_FRAMES
from noisewatch.daemon.setup import Overrides, prepare
from noisewatch.daemon.sources import FILE_STATUS, FileSource
from noisewatch.features import FeatureSettings, hop_samples

HOP_S = hop_samples(FeatureSettings(), 0.5) / 22050
SCENE_LABELS = ("siren", "dog_bark", "car_horn", "jackhammer")


@pytest.fixture(scope="module")
def real_scene(shared_data: Path, tmp_path_factory: pytest.TempPathFactory):
    clips = [(label, recognised_clips(shared_data, label, 1)[0]) for label in SCENE_LABELS]
    audio, truth = build_scene(clips, quiet_s=6.0, rate=22050)
    return write_scene(tmp_path_factory.mktemp("scene") / "scene.flac", audio, 22050), truth


def assert_matches_truth(found: list[dict], truth) -> None:
    """Right labels, in order, the first event of each sound within one hop of its onset, nothing else (so
    nothing in the quiet). A sound whose score dips below its threshold for longer than the release (the
    barks of one dog) may come as back-to-back events of its label: they never overlap and start inside it."""
    runs: list[list[dict]] = []
    for event in found:
        if runs and runs[-1][0]["label"] == event["label"]:
            runs[-1].append(event)
        else:
            runs.append([event])
    assert [run[0]["label"] for run in runs] == [t.label for t in truth], found
    for run, expected in zip(runs, truth):
        assert abs(run[0]["offset_s"] - expected.start_s) <= HOP_S, (run, expected)
        for before, after in zip(run, run[1:]):
            assert before["offset_s"] + before["duration_s"] <= after["offset_s"] + 1e-3 < expected.end_s, run


@pytest.mark.shared_data
def test_scene_from_real_clips_gives_the_right_events(real_scene, tmp_path: Path) -> None:
    path, truth = real_scene
    messages = run_daemon(path, tmp_path / "out.jsonl", "--speed", "0")
    assert_matches_truth(events(messages), truth)
    started = [m for m in messages if m["type"] == "started"]
    assert [m["id"] for m in started] == [e["id"] for e in events(messages)]


def test_bundled_sample_scene(repo_root: Path, tmp_path: Path) -> None:
    """The README's demo: the bundled scene gives the events its truth file lists."""
    import json

    sample = repo_root / "samples" / "scene.flac"
    truth_file = repo_root / "samples" / "scene.json"
    if not sample.is_file():
        pytest.fail("samples/scene.flac is missing")
    from daemon_run import Truth

    truth = [Truth(t["label"], t["start_s"], t["end_s"]) for t in json.loads(truth_file.read_text())]
    result = subprocess.run([sys.executable, "-m", "noisewatch.cli", "run", "--input", str(sample), "--speed", "0",
                             "--jsonl", "-"], capture_output=True, text=True, timeout=120)  # the README's command
    assert result.returncode == 0, result.stderr
    found = events(json_lines(result.stdout))  # JSON lines on stdout, nothing else
    assert_matches_truth(found, truth)
    heard = [line for line in result.stderr.splitlines() if " heard " in line]  # "each closed event is also logged"
    assert [line.split(" heard ")[1].split()[0] for line in heard] == [event["label"] for event in found], heard
    assert all(" INFO " in line for line in heard), heard
    audio, rate = sf.read(str(sample), dtype="float32")
    for event in found:  # levels of the event's own audio, onset included, at hop resolution (0.51 s)
        stretch = audio[int(event["offset_s"] * rate) : int((event["offset_s"] + event["duration_s"]) * rate)]
        assert abs(event["mean_dbfs"] - dbfs(stretch)) <= 1.0, event
        assert abs(event["peak_dbfs"] - peak_dbfs(stretch)) <= 1.0, event


@pytest.mark.shared_data
@pytest.mark.slow
def test_real_time_replay_gives_the_same_events(shared_data: Path, tmp_path: Path) -> None:
    clips = [(label, recognised_clips(shared_data, label, 1)[0]) for label in ("siren", "dog_bark")]
    audio, truth = build_scene(clips, quiet_s=4.0, rate=22050, seed=3)
    path = write_scene(tmp_path / "short.flac", audio, 22050)
    fast = events(run_daemon(path, tmp_path / "fast.jsonl", "--speed", "0"))
    started = time.monotonic()
    live = events(run_daemon(path, tmp_path / "live.jsonl", "--speed", "1"))
    assert time.monotonic() - started >= len(audio) / 22050 * 0.95  # it really was paced
    keys = ("label", "offset_s", "duration_s", "confidence", "mean_confidence")
    assert [[e[k] for k in keys] for e in live] == [[e[k] for k in keys] for e in fast]
    for paced, unpaced in zip(live, fast):  # float32 sums of stretches read in other pieces, rounded to 0.01 dB: a
        for key in ("peak_dbfs", "mean_dbfs"):  # value at a rounding edge may land one step away
            assert paced[key] == pytest.approx(unpaced[key], abs=0.011), (key, paced, unpaced)
    assert_matches_truth(fast, truth)


def test_with_a_microphone_s_blocks_the_loop_reads_once_a_window_or_timeout_not_once_a_block(
        repo_root: Path, tmp_path: Path, monkeypatch) -> None:
    """The README's promise: ~10 reads a second (the 0.1 s timeout), or when a window's audio is complete, not
    one per 1024-frame block (~47 a second at 48 kHz). A 48 kHz replay at --speed 4 takes the microphone's path."""
    import soxr

    from noisewatch.daemon import service as service_module

    seconds, speed, rate = 8, 4, 48000
    audio, scene_rate = sf.read(str(repo_root / "samples" / "scene.flac"), dtype="float32", frames=seconds * 22050)
    recording = tmp_path / "mic.wav"
    sf.write(str(recording), soxr.resample(audio, scene_rate, rate), rate, subtype="FLOAT")
    reads: list[int] = []
    accept = Pipeline.accept

    def counted(pipeline: Pipeline, block, mono, first):  # noqa: ANN001
        reads.append(len(block.samples))
        return accept(pipeline, block, mono, first)

    monkeypatch.setattr(Pipeline, "accept", counted)
    setup = prepare(None, Overrides(jsonl=str(tmp_path / "out.jsonl")), input_path=str(recording), speed=speed)
    started = time.monotonic()
    assert service_module.Service(setup).run() == 0
    wall = time.monotonic() - started
    assert wall >= seconds / speed * 0.95  # it really was paced
    assert sum(reads) == seconds * rate  # every frame, once
    blocks = seconds * rate // 1024
    assert len(reads) < blocks / 4, f"{len(reads)} reads of {blocks} blocks in {wall:.1f} s"  # ~30 of 375 here


def as_pairs(messages: list) -> list[tuple[str, dict]]:
    """(kind, wire form without type and schema) of each message."""
    return [(m.kind, {k: v for k, v in m.to_json().items() if k not in ("type", "schema")}) for m in messages]


@pytest.mark.shared_data
def test_block_size_does_not_change_windows_or_events(real_scene) -> None:
    """Streaming invariance: 256-, 1024- and 4000-sample blocks give identical windows and events."""
    import soundfile as sf

    path, _ = real_scene
    audio, rate = sf.read(str(path), dtype="float32")
    bundle = load_bundle(default_model_path())
    runs = []
    for block in (256, 1024, 4000):
        messages = []
        pipeline = Pipeline.from_config(Config(), bundle, bundle.open_model())
        for start in range(0, len(audio), block):
            messages += pipeline.process(audio[start : start + block])
        messages += pipeline.finish()
        runs.append([(k, {f: v for f, v in p.items() if f not in ("id", "start", "end")}) for k, p in as_pairs(messages)])
        assert pipeline.counters.windows == 1 + (len(audio) - bundle.features.window_samples) // pipeline.stream.hop_samples
    assert runs[0] == runs[1] == runs[2]
    assert any(kind == "event" for kind, _ in runs[0])


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_sigterm_closes_open_events_and_exits_promptly(repo_root: Path, tmp_path: Path, stop: signal.Signals) -> None:
    """A long siren-like tone is open when SIGTERM (or SIGINT: Ctrl-C) arrives: its event is closed and written,
    exit 0 < 2 s."""
    out = tmp_path / "out.jsonl"
    sample = repo_root / "samples" / "scene.flac"
    proc = subprocess.Popen(
        [sys.executable, "-m", "noisewatch.cli", "run", "--input", str(sample), "--speed", "1", "--jsonl", str(out)],
        stderr=subprocess.PIPE, text=True,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not (out.exists() and any(m["type"] == "started" for m in read_jsonl(out))):
        time.sleep(0.1)
    assert out.exists(), "the daemon never started an event"
    sent = time.monotonic()
    proc.send_signal(stop)
    assert proc.wait(timeout=5) == 0, proc.stderr.read()
    assert time.monotonic() - sent < 2.0
    messages = read_jsonl(out)
    started = {m["id"] for m in messages if m["type"] == "started"}
    closed = {m["id"] for m in messages if m["type"] == "event"}
    assert started and started <= closed
    # the level period being filled is reported too, up to the last whole second heard (it was lost with the stop)
    heard_s = max(m["offset_s"] + m["duration_s"] for m in messages if m["type"] == "event")
    assert _level_periods(messages)[-1][1] == int(heard_s), (_level_periods(messages), heard_s)


def _level_periods(messages: list[dict]) -> list[tuple[float, float]]:
    """(start, end) in stream seconds of each level report, checked to follow one another from the stream's start."""
    periods = [(m["offset_s"], m["offset_s"] + m["period_s"]) for m in messages if m["type"] == "level"]
    assert periods and periods[0][0] == 0 and all(a[1] == b[0] for a, b in zip(periods, periods[1:])), periods
    return periods


def test_the_level_period_being_filled_is_reported_at_a_file_s_end(repo_root: Path, tmp_path: Path) -> None:
    """Found by fault injection: the levels of the last period were lost at a file's end (and at every stop): with the
    default minute, the scene's last 28 s had no level at all."""
    sample = repo_root / "samples" / "scene.flac"
    messages = run_daemon(sample, tmp_path / "out.jsonl", "--speed", "0")
    assert _level_periods(messages) == [(0, 5), (5, int(sf.info(str(sample)).duration))]


def test_a_reload_applies_the_logging_section(repo_root: Path, tmp_path: Path) -> None:
    """Found by fault injection: the reload line said ``logging.level: info -> warning``, and INFO lines went on (the
    section was read at start-up only)."""
    config, out = tmp_path / "config.yaml", tmp_path / "out.jsonl"
    config.write_text("stats:\n  interval_s: 60\n")
    proc = subprocess.Popen([sys.executable, "-m", "noisewatch.cli", "run", "--config", str(config), "--input",
                             str(repo_root / "samples" / "scene.flac"), "--speed", "2", "--jsonl", str(out)],
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not (out.exists() and any(m["type"] == "event" for m in read_jsonl(out))):
        time.sleep(0.1)
    config.write_text("stats:\n  interval_s: 60\nlogging:\n  level: warning\n")
    proc.send_signal(signal.SIGHUP)  # the first sound is over; two more to come
    assert proc.wait(timeout=60) == 0
    log = proc.stderr.read() if proc.stderr else ""
    after = log[log.index("configuration reloaded"):]
    assert after.splitlines()[0].endswith('logging.level: "info" -> "warning"'), log
    assert len([m for m in read_jsonl(out) if m["type"] == "event"]) == 3
    assert " INFO " not in "\n".join(after.splitlines()[1:]), log  # the later sounds' "heard" lines are INFO


def test_the_command_lines_model_wins_over_the_config_at_start_and_after_a_reload(repo_root: Path, tmp_path: Path) -> None:
    """README: at a reload "command-line `--model`/`--jsonl` still win" (and at start they win over the config)."""
    shipped = default_model_path()
    sidecar = json.loads(shipped.read_text())
    (tmp_path / sidecar["tflite"]).write_bytes((shipped.parent / sidecar["tflite"]).read_bytes())
    sidecar["version"] += ".cli"  # the same weights, another model to the daemon
    other = tmp_path / "other.json"
    other.write_text(json.dumps(sidecar))
    config = tmp_path / "config.yaml"
    config.write_text(f"model:\n  path: {shipped}\n")
    out = tmp_path / "out.jsonl"
    proc = subprocess.Popen([sys.executable, "-m", "noisewatch.cli", "run", "--config", str(config), "--model", str(other),
                             "--input", str(repo_root / "samples" / "scene.flac"), "--speed", "2", "--jsonl", str(out)],
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not (out.exists() and any(m["type"] == "event" for m in read_jsonl(out))):
        time.sleep(0.1)
    proc.send_signal(signal.SIGHUP)  # the first sound is over; two more to come
    assert proc.wait(timeout=60) == 0
    log = proc.stderr.read() if proc.stderr else ""
    assert f"configuration reloaded from {config}: no setting changed" in log, log  # --model is no config change
    scene = repo_root / "samples" / "scene.flac"
    assert f"replaying {scene}: 33.0 s, 22050 Hz, 1 channel(s), at 2x real time" in log, log  # what, and how fast
    models = [m["model"] for m in read_jsonl(out) if m["type"] == "event"]
    assert models == [f"{sidecar['name']}@{sidecar['version']}"] * 3, models


def test_windows_under_the_gate_skip_the_model_and_count_as_background(repo_root: Path) -> None:
    """README: "Windows quieter than `audio.gate_dbfs` skip inference and count as background"."""
    from noisewatch.daemon.messages import Event, Scores

    bundle = load_bundle(default_model_path())
    audio, rate = sf.read(str(repo_root / "samples" / "scene.flac"), dtype="float32")
    assert rate == bundle.features.sample_rate
    config = Config.model_validate({"scores": {"enabled": True, "interval_s": 0}})

    def heard(samples: np.ndarray) -> tuple[Pipeline, list]:
        pipeline = Pipeline.from_config(config, bundle, bundle.open_model())
        return pipeline, pipeline.process(samples) + pipeline.finish()

    loud, messages = heard(audio)
    assert loud.counters.gated == 0 and sum(isinstance(m, Event) for m in messages) >= 3
    quiet_audio = audio * np.float32(10 ** ((config.audio.gate_dbfs - 10 - peak_dbfs(audio)) / 20))  # peaks 10 dB under
    quiet, messages = heard(quiet_audio)
    assert quiet.counters.gated == quiet.counters.windows == loud.counters.windows > 0
    assert not [m for m in messages if isinstance(m, (Event, Scores))], messages  # no model, no scores, no event


@pytest.mark.parametrize("lost_s", [0.2, 2.0])
def test_a_hop_or_more_of_lost_audio_ends_the_open_event_where_the_audio_stopped(repo_root: Path, lost_s: float) -> None:
    """README: "A hop or more of dropped audio is a gap: open events end where the audio stopped and the windows
    start afresh"; less than a hop is not (the event goes on)."""
    from noisewatch.daemon.messages import Event

    bundle = load_bundle(default_model_path())
    audio, rate = sf.read(str(repo_root / "samples" / "scene.flac"), dtype="float32")
    pipeline = Pipeline.from_config(Config(), bundle, bundle.open_model())
    cut = int(8.5 * rate)  # the siren (4.96-9.04 s) is open here
    messages = pipeline.process(audio[:cut])
    assert not [m for m in messages if isinstance(m, Event)]
    at_gap = pipeline.lost(lost_s)
    to_window = pipeline.stream.samples_to_window
    messages = at_gap + pipeline.process(audio[cut:]) + pipeline.finish()
    sirens = [m for m in messages if isinstance(m, Event) and m.label == "siren"]
    assert sirens, messages
    if lost_s >= HOP_S:
        assert sirens[0] in at_gap and sirens[0].offset_s + sirens[0].duration_s <= 8.5 + 1e-3, sirens[0]
        assert to_window == bundle.features.window_samples  # the next window is all new audio
    else:
        assert not at_gap and sirens[0].offset_s + sirens[0].duration_s > 8.6, sirens[0]
        assert to_window < bundle.features.window_samples
    # docs/mqtt.md: offset_s counts the audio heard, so after a loss it falls behind the times, which keep to the clock
    (bark,) = [m for m in messages if isinstance(m, Event) and m.label == "dog_bark"]
    behind = [datetime.fromisoformat(m.start).timestamp() - m.offset_s for m in (sirens[0], bark)]
    assert behind[1] - behind[0] == pytest.approx(lost_s, abs=0.002), behind  # times and offsets to the millisecond


@pytest.mark.parametrize("case", ["no audio", "8 kHz", "3 s"])
def test_an_input_that_cannot_be_heard_as_the_model_hears_is_said_so(tmp_path: Path, case: str) -> None:
    """Found by fault injection: an empty file ended with exit 0 and not a word, and a 1 kHz recording ran
    without a warning (and found nothing); so did a file shorter than one window (a 3 s clip of a siren: no window,
    no event, nothing classified), while one of 5 s found the siren."""
    path = tmp_path / "input.wav"
    rate = 8000 if case == "8 kHz" else 22050
    seconds = {"no audio": 0, "8 kHz": 5, "3 s": 3}[case]
    sf.write(str(path), np.zeros(seconds * rate, dtype=np.float32), rate)
    result = subprocess.run([sys.executable, "-m", "noisewatch.cli", "run", "--input", str(path), "--speed", "0"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    if case == "no audio":
        assert f"{path.name} holds no audio" in result.stderr
    elif case == "3 s":
        assert f"{path.name} holds 3.0 s of audio, less than one 4 s window of the model: nothing was classified" in (
            result.stderr)
    else:
        assert "delivers 8000 Hz, less than the model's 22050 Hz: it hears nothing above 4000 Hz" in result.stderr
        assert "nothing was classified" not in result.stderr


def test_bad_config_is_one_line_and_exit_78(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("audio:\n  hop_s: 4.5\ndetector:\n  thresholds:\n    sirene: 0.5\n")
    result = subprocess.run([sys.executable, "-m", "noisewatch.cli", "check-config", str(config)], capture_output=True, text=True)
    assert result.returncode == 78
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 2 and "Traceback" not in result.stderr
    assert "audio.hop_s = 4.5" in lines[0] and "detector.thresholds.sirene" in lines[1]


def test_missing_model_bundle_is_a_config_error(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(f"model:\n  path: {tmp_path / 'nope.json'}\n")
    result = subprocess.run([sys.executable, "-m", "noisewatch.cli", "check-config", str(config)], capture_output=True, text=True)
    assert result.returncode == 78 and "model bundle not found" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert f"{config}:2: model.path: " in result.stderr, "the file and line of the key, as for every config error"


class _UnpluggedMidway(FileSource):
    """A real file source that stops after a few seconds and reports a lost device, as PortAudio would."""

    live = True  # a device: reopened when it fails (a plain file is not)

    def _deliver(self, audio) -> None:
        for block in audio.blocks(self.block_size, dtype="float32", always_2d=True, frames=3 * self.sample_rate):
            self.callback(block, len(block), None, FILE_STATUS)
        self._failed = "device unplugged"
        self._halt.set()


def _run_with_a_faulty_first_source(faulty: type[FileSource], repo_root: Path, tmp_path: Path, monkeypatch,
                                    recording: Path | None = None) -> tuple[int, list[dict]]:
    """Run the service in-process on ``recording`` (the demo scene); the first source opened is ``faulty``, later
    ones work."""
    from noisewatch.daemon import service as service_module

    opened: list[FileSource] = []

    def open_source(audio, input_path, speed):
        source = (faulty if not opened else FileSource)(input_path, 0, audio.block_size, audio.buffer_s)
        opened.append(source)
        return source

    monkeypatch.setattr(service_module, "open_source", open_source)
    out = tmp_path / "out.jsonl"
    recording = recording or repo_root / "samples" / "scene.flac"
    setup = prepare(None, Overrides(jsonl=str(out)), input_path=str(recording), speed=0)
    assert service_module.Service(setup).run() == 0
    return len(opened), read_jsonl(out)


class _Overrunning(FileSource):
    """A real file source whose first three blocks come with PortAudio's own input_overflow flag set, as a sound card
    overrun reports it (no sound card here overruns: the fault enters where PortAudio would report it)."""

    def _deliver(self, audio) -> None:
        sd = pytest.importorskip("sounddevice", reason="PortAudio is not installed here")
        for index, block in enumerate(audio.blocks(self.block_size, dtype="float32", always_2d=True)):
            status = sd.CallbackFlags()
            status.input_overflow = index < 3
            self.callback(block, len(block), None, status)


def test_a_sound_card_overrun_is_said_once_a_minute_with_how_many(
        repo_root: Path, tmp_path: Path, monkeypatch, caplog: pytest.LogCaptureFixture) -> None:
    """Overruns were counted in stats (input_overflows) and said nowhere, where the events in the lost audio were
    not heard: said as they are read (here the three at once), and then no more within the minute. The count is
    the service's, which each report gives (a replay's only report may come before its first block: CI saw 0)."""
    from noisewatch.daemon import service as service_module

    monkeypatch.setattr(service_module, "open_source", lambda audio, input_path, speed: _Overrunning(
        input_path, 0, audio.block_size, audio.buffer_s))
    setup = prepare(None, Overrides(jsonl=str(tmp_path / "out.jsonl")), str(repo_root / "samples" / "scene.flac"), 0)
    service = service_module.Service(setup)
    with caplog.at_level("WARNING", logger="noisewatch.daemon.service"):
        assert service.run() == 0
    said = [r.getMessage() for r in caplog.records if "overran" in r.getMessage()]
    assert len(said) == 1 and "overran 3 time(s):" in said[0] and "scene.flac" in said[0], said
    assert service.counters.input_overflows == 3


def test_losses_kept_within_the_minute_are_said_once_it_is_over_without_waiting_for_another_loss(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """Found in review: "at once, then at most once a minute with the total since": the losses after the first, kept
    within the minute, were said only with the next loss of their kind, hours later ("in the last 3 h") or never (a
    burst of overruns, then none), while the log read "listening" and events in them went unheard. Said at the first
    read after the minute, loss or not."""
    from types import SimpleNamespace

    from noisewatch.daemon import service

    clock = [1000.0]  # the period is the real one, on a clock the test moves: no race with a stalled machine
    monkeypatch.setattr(service, "time", SimpleNamespace(monotonic=lambda: clock[0]))
    listener = SimpleNamespace(_dropped=service._Tally(), _overruns=service._Tally(), _unreadable=service._Tally())
    source = SimpleNamespace(name="USB")

    def read(overflows: int = 0, lost_frames: int = 0, nonfinite: int = 0, final: bool = False) -> None:
        service.Service._say_losses(listener, source, lost_frames / 48000, overflows, nonfinite,  # type: ignore[arg-type]
                                    final=final)

    with caplog.at_level("WARNING", logger="noisewatch.daemon.service"):
        read(overflows=1, lost_frames=4800, nonfinite=5)  # said at once
        read(overflows=2, lost_frames=9600, nonfinite=7)  # kept: within the period
        read()
        clock[0] += service.LOSS_SAY_S + 5
        read()  # no loss in this read: the ones kept are said now
        read()
        read(overflows=4)  # kept: within the period
        read(final=True)  # the input closes (a stop, a file's end): what is kept is said now, not lost with it
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 7, said
    assert "overran 2 time(s) in the last" in said[4] and "7 sample(s) were NaN" in said[5], said
    assert "0.2 s of audio was dropped in the last" in said[3], said
    assert "overran 4 time(s) since the last such warning" in said[6], said  # not "in the last 0 s"


def test_a_lost_device_is_reopened_and_listening_resumes(repo_root: Path, tmp_path: Path, monkeypatch) -> None:
    started = time.monotonic()
    opened, messages = _run_with_a_faulty_first_source(_UnpluggedMidway, repo_root, tmp_path, monkeypatch)
    assert time.monotonic() - started < 15  # one backoff of about a second, not a spin or a hang
    kinds = [m["type"] for m in messages]
    assert opened == 2
    trouble = kinds.index("status", kinds.index("status") + 1)  # after the first "listening"
    assert messages[trouble]["state"] == "audio_error" and "device unplugged" in messages[trouble]["error"]
    assert messages[trouble]["source"] == "scene.flac"  # which input was lost (Home Assistant showed null)
    assert "event" in kinds[trouble:], "no events after the device came back"
    offsets = [m["offset_s"] for m in messages if m["type"] == "event"]
    assert offsets == sorted(offsets) and offsets[-1] > 3.0  # the sample clock kept counting across the gap


def test_a_low_rate_microphone_is_warned_of_once_not_at_every_reopen(repo_root: Path, tmp_path: Path, monkeypatch,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    """A USB microphone at 8 kHz that keeps dropping out would otherwise repeat the warning at every return."""
    audio, rate = sf.read(str(repo_root / "samples" / "scene.flac"), dtype="float32")
    low = tmp_path / "scene-8k.wav"
    sf.write(str(low), soxr.resample(audio, rate, 8000), 8000)
    opened, messages = _run_with_a_faulty_first_source(_UnpluggedMidway, repo_root, tmp_path, monkeypatch, low)
    warnings = [r for r in caplog.records if "less than the model's" in r.getMessage()]
    assert opened == 2 and any(m["type"] == "status" and m["state"] == "audio_error" for m in messages)
    assert len(warnings) == 1 and "delivers 8000 Hz" in warnings[0].getMessage()


def test_a_channel_left_out_of_the_mix_is_warned_of_once_not_at_every_reopen(
        repo_root: Path, tmp_path: Path, monkeypatch, caplog: pytest.LogCaptureFixture) -> None:
    """Found by fault injection: every reopen starts a new channel mix, and its note (a channel of zeros left out)
    was logged again at each one: a Pi's I2S microphone on a device that keeps dropping out repeated it for months.
    Said once per input and note, as the low rate is."""
    audio, rate = sf.read(str(repo_root / "samples" / "scene.flac"), dtype="float32")
    stereo = tmp_path / "scene-stereo.wav"
    sf.write(str(stereo), np.stack([audio, np.zeros_like(audio)], axis=1), rate, subtype="FLOAT")
    opened, messages = _run_with_a_faulty_first_source(_UnpluggedMidway, repo_root, tmp_path, monkeypatch, stereo)
    warnings = [r for r in caplog.records if "carry no sound" in r.getMessage()]
    assert opened == 2 and any(m["type"] == "status" and m["state"] == "audio_error" for m in messages)
    assert len(warnings) == 1, [r.getMessage() for r in warnings]


def test_a_reload_while_the_device_is_lost_opens_the_device_it_names(repo_root: Path, tmp_path: Path, monkeypatch) -> None:
    """A USB microphone replaced by another: the user names the new one and reloads. The reload waited for a
    device that never came back, retrying the old name for ever."""
    import threading

    from noisewatch.daemon import service as service_module
    from noisewatch.daemon import setup as setup_module
    from noisewatch.daemon.service import Service, Signals
    from noisewatch.daemon.sources import SourceError

    tried: list[str | None] = []

    def open_source(audio, input_path, speed):
        tried.append(audio.device)
        if audio.device != "NewMic":
            raise SourceError(f"{audio.device!r} not found")
        return FileSource(str(repo_root / "samples" / "scene.flac"), 0, audio.block_size, audio.buffer_s)

    monkeypatch.setattr(service_module, "open_source", open_source)
    monkeypatch.setattr(setup_module, "check_device", lambda audio: None)  # NewMic "exists" for the reload
    config, out = tmp_path / "c.yaml", tmp_path / "out.jsonl"
    config.write_text("audio:\n  device: OldMic\n  reopen_max_s: 60\n")
    signals = Signals()
    service = Service(prepare(str(config), Overrides(jsonl=str(out))), signals)

    def replace_the_microphone() -> None:
        deadline = time.monotonic() + 30
        while len(tried) < 3 and time.monotonic() < deadline:  # ~1 s, 2 s, 4 s apart
            time.sleep(0.05)
        config.write_text("audio:\n  device: NewMic\n  reopen_max_s: 60\n")
        signals.reload.set()
        time.sleep(15)
        signals.stop.set()  # a failure ends, rather than hangs, the test

    threading.Thread(target=replace_the_microphone, daemon=True).start()
    started = time.monotonic()
    assert service.run() == 0  # NewMic (the scene, replayed) opened and played to its end
    assert tried[-1] == "NewMic" and set(tried[:-1]) == {"OldMic"}, tried
    assert time.monotonic() - started < 20  # the reload did not wait out the 8 s backoff before trying
    assert any(m["type"] == "event" for m in read_jsonl(out))


def test_health_reports_name_the_microphone_a_reload_named_while_none_is_found(tmp_path: Path, monkeypatch) -> None:
    """Found by a docs audit: a reload that named another microphone while the first was lost had the stats reports
    go on naming the old one (the audio state named the new one): a user could not tell which the listener looks
    for."""
    import threading

    from mqtt_broker import wait_until

    from noisewatch.daemon import service as service_module
    from noisewatch.daemon import setup as setup_module
    from noisewatch.daemon.service import Service, Signals
    from noisewatch.daemon.sources import SourceError

    def open_source(audio, input_path, speed):
        raise SourceError(f"{audio.device!r} not found")

    monkeypatch.setattr(service_module, "open_source", open_source)
    monkeypatch.setattr(setup_module, "check_device", lambda audio: None)
    config, out = tmp_path / "c.yaml", tmp_path / "out.jsonl"
    config.write_text("audio:\n  device: OldMic\n  reopen_max_s: 1\nstats:\n  interval_s: 1\n")
    signals = Signals()
    service = Service(prepare(str(config), Overrides(jsonl=str(out))), signals)

    def sources() -> list[str]:
        return [m["source"] for m in read_jsonl(out) if m["type"] == "stats"]

    def name_another_microphone() -> None:
        wait_until(lambda: len(sources()) >= 2, 30)
        config.write_text("audio:\n  device: OtherMic\n  reopen_max_s: 1\nstats:\n  interval_s: 1\n")
        signals.reload.set()
        wait_until(lambda: sources()[-2:] == ["OtherMic", "OtherMic"], 30)
        signals.stop.set()

    threading.Thread(target=name_another_microphone, daemon=True).start()
    assert service.run() == 0
    assert sources()[0] == "OldMic" and sources()[-2:] == ["OtherMic", "OtherMic"], sources()


@pytest.mark.parametrize("reloads", [1, 2], ids=["one_reload", "a_second_while_it_opens"])
def test_a_reload_that_names_another_microphone_says_it_listens_on_that_one(repo_root: Path, tmp_path: Path,
                                                                           monkeypatch, reloads: int) -> None:
    """Found reading the reload path: a reload that named another microphone reopened the input, but the service
    was still "listening", so nothing said the new device: the retained audio topic and Home Assistant's Audio
    input kept the old one's name for good; and the old one's status went to the new sinks first. A review found
    the same with a second reload (logrotate's) while MicB was open but not yet giving audio (settling): MicA's
    "listening" said to the new sinks, with MicA closed."""
    import threading

    class _Settling(Named):
        def _replay(self) -> None:
            if self.name == "MicB" and self._halt.wait(2.0):
                return
            super()._replay()

    config, out, signals, service = service_on_mic_a(tmp_path, monkeypatch, lambda audio: _Settling(
        repo_root / "samples" / "scene.flac", audio))

    def name_another_microphone() -> None:
        try:
            wait_for(out, lambda ms: any(m["type"] == "status" for m in ms), 15)
            config.write_text("audio:\n  device: MicB\n")
            signals.reload.set()
            if reloads == 2:
                time.sleep(1.0)  # MicB open, no audio yet
                signals.reload.set()
            wait_for(out, lambda ms: any(m["type"] == "status" and m["source"] == "MicB" for m in ms), 10)
        finally:
            signals.stop.set()  # a failure ends, rather than hangs, the test

    threading.Thread(target=name_another_microphone, daemon=True).start()
    assert service.run() == 0
    said = [(m["state"], m["source"]) for m in read_jsonl(out) if m["type"] == "status"]
    assert said == [("listening", "MicA"), ("listening", "MicB")], said


def test_a_reload_that_reopens_a_muted_microphone_does_not_say_it_listens(tmp_path: Path, monkeypatch) -> None:
    """A review found it: a reload that changed how the same input is opened (its gate did, then) reopened it, and
    the reopening reset the silence watch and said "listening" for a muted microphone: Home Assistant's Audio input
    problem turned off for a minute."""
    import threading

    from noisewatch.daemon import service as service_module
    from noisewatch.daemon.levels import DigitalSilence

    rate = 16000
    recording = tmp_path / "muted.flac"
    sf.write(recording, np.zeros(60 * rate, np.float32), rate)
    monkeypatch.setattr(service_module, "DigitalSilence", lambda: DigitalSilence(1.0))  # silent after 1 s, not 60
    opened: list[Named] = []

    def open_named(audio):
        opened.append(Named(recording, audio))
        return opened[-1]

    config, out, signals, service = service_on_mic_a(tmp_path, monkeypatch, open_named)

    def reopen_it() -> None:
        try:
            wait_for(out, lambda ms: any(m["type"] == "status" and m["state"] == "silent" for m in ms), 15)
            config.write_text("audio:\n  device: MicA\n  block_size: 512\n")
            signals.reload.set()
            time.sleep(3)  # the reopened input, still muted
        finally:
            signals.stop.set()

    threading.Thread(target=reopen_it, daemon=True).start()
    assert service.run() == 0
    assert len(opened) == 2, "the reload did not reopen the input"
    said = [m["state"] for m in read_jsonl(out) if m["type"] == "status"]
    assert said[:2] == ["listening", "silent"] and "listening" not in said[2:], said


@pytest.mark.parametrize(("change", "opens"), [("gate_dbfs: -60\n  hop_s: 1.0\n  reopen_max_s: 5\n", 1),
                                               ("block_size: 512\n", 2)], ids=["gate_hop_and_cap", "block_size"])
def test_a_reload_reopens_the_microphone_only_for_what_it_is_opened_with(repo_root: Path, tmp_path: Path,
                                                                        monkeypatch, change: str, opens: int) -> None:
    """Found by a code review: a reload that changed only the gate or the hop (the windows' settings, not the
    device's) closed and reopened the microphone, a gap in what it heard, as a change of its block size does."""
    import threading

    opened: list[int] = []

    def open_named(audio):
        opened.append(audio.block_size)
        return Named(repo_root / "samples" / "scene.flac", audio)

    config, out, signals, service = service_on_mic_a(tmp_path, monkeypatch, open_named)

    def reload_with_the_change() -> None:
        try:
            wait_for(out, lambda ms: any(m["type"] == "status" for m in ms), 15)
            config.write_text("audio:\n  device: MicA\n  " + change)
            signals.reload.set()
            deadline = time.monotonic() + 10
            while _applied() is None and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(1.5)  # a reopen, if any, has happened (the loop reopens right after the swap)
        finally:
            signals.stop.set()

    def _applied() -> str | None:
        audio = service.setup.config.audio
        return "gate" if audio.gate_dbfs == -60 else "block_size" if audio.block_size == 512 else None

    threading.Thread(target=reload_with_the_change, daemon=True).start()
    assert service.run() == 0
    assert _applied() == ("gate" if opens == 1 else "block_size"), "the reload was not applied"
    assert len(opened) == opens, opened


def test_audio_heard_while_a_reload_prepares_is_classified_before_the_microphone_reopens(
        repo_root: Path, tmp_path: Path, monkeypatch) -> None:
    """Found by a code review: a reload that reopens the microphone closed it with the audio it had heard while the
    reload prepared (a model loading: 0.8 s here) still unread, and dropped it uncounted: an event in it was never
    reported. Now the input stops, what it heard goes through the pipeline, then it reopens."""
    import threading

    from noisewatch.daemon import service as service_module

    opened: list[Named] = []
    at_reopen: list[tuple[float, float]] = []

    def open_named(audio):
        if opened:  # the reopen: what the first input delivered, and what the pipeline has taken
            heard = opened[0]
            at_reopen.append((heard.ring._written / heard.sample_rate, service.active.pipeline.position_s))
        opened.append(Named(repo_root / "samples" / "scene.flac", audio))
        return opened[-1]

    config, out, signals, service = service_on_mic_a(tmp_path, monkeypatch, open_named)
    prepare_now = service_module.prepare

    def slow_prepare(*args, **kwargs):
        time.sleep(0.8)
        return prepare_now(*args, **kwargs)

    monkeypatch.setattr(service_module, "prepare", slow_prepare)
    taken: list[int] = []

    def reopen_it() -> None:
        try:
            wait_for(out, lambda ms: any(m["type"] == "status" for m in ms), 15)
            config.write_text("audio:\n  device: MicA\n  block_size: 512\n")
            signals.reload.set()
            deadline = time.monotonic() + 10
            while len(opened) < 2 and time.monotonic() < deadline:
                time.sleep(0.02)
            taken.append(opened[0].ring.available)
        finally:
            signals.stop.set()

    threading.Thread(target=reopen_it, daemon=True).start()
    assert service.run() == 0
    assert len(opened) == 2 and taken == [0], (len(opened), taken)  # 0.8 s of audio left unread before
    (delivered_s, processed_s), = at_reopen
    assert delivered_s > 0.8 and processed_s == pytest.approx(delivered_s, abs=0.01), at_reopen  # all of it classified


def test_a_reload_s_reopen_cap_applies_to_the_next_wait_for_a_lost_microphone(tmp_path: Path, monkeypatch) -> None:
    """Found by a code review: the waits between attempts to open a missing microphone kept doubling up to the cap
    the daemon started with (60 s here) after a reload set `audio.reopen_max_s: 1`, until a restart."""
    import threading

    from noisewatch.daemon.sources import SourceError

    tried: list[float] = []

    def missing(audio):
        tried.append(time.monotonic())
        raise SourceError(f"{audio.device!r} not found")

    config, _, signals, service = service_on_mic_a(tmp_path, monkeypatch, missing,
                                                   "audio:\n  device: UsbMic\n  reopen_max_s: 60\n")
    after: list[int] = []

    def lower_the_cap() -> None:
        try:
            deadline = time.monotonic() + 30
            while len(tried) < 3 and time.monotonic() < deadline:  # 1 s, then 2 s apart; 4 s, 8 s, 16 s next
                time.sleep(0.05)
            config.write_text("audio:\n  device: UsbMic\n  reopen_max_s: 1\n")
            signals.reload.set()
            after.append(len(tried))
            while len(tried) < after[0] + 4 and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            signals.stop.set()

    threading.Thread(target=lower_the_cap, daemon=True).start()
    assert service.run() == 0
    later = tried[after[0]:]
    assert len(later) >= 4, tried
    gaps = np.diff(later)
    assert gaps.max() < 2.5, gaps  # 1 s apart (and the time an attempt takes), not 4, 8, 16 s


MIC_CONFIG = "audio:\n  device: UsbMic\n  reopen_max_s: 2\n"


class _Microphone:
    """A named USB microphone that can be unplugged: while it is, it is neither found nor opened (both of the
    daemon's ways of looking for it fail), as with a real device."""

    def __init__(self, audio_path: Path) -> None:
        import threading

        self.audio_path = audio_path
        self.plugged = threading.Event()
        self.plugged.set()
        self.opens_refused = 0

    def check_device(self, audio) -> None:
        from noisewatch.daemon.sources import SourceError

        if not self.plugged.is_set():
            raise SourceError(f"no input device matching {audio.device!r}")

    def wait_for_refusals(self, count: int, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while self.opens_refused < count:
            assert time.monotonic() < deadline, f"{self.opens_refused} opens refused, not {count}"
            time.sleep(0.05)

    def open_source(self, audio, input_path, speed):
        if not self.plugged.is_set():
            self.opens_refused += 1
        self.check_device(audio)
        return FileSource(str(self.audio_path), 0, audio.block_size, audio.buffer_s)

    def install(self, monkeypatch) -> None:
        from noisewatch.daemon import service as service_module
        from noisewatch.daemon import setup as setup_module

        monkeypatch.setattr(service_module, "open_source", self.open_source)
        monkeypatch.setattr(setup_module, "check_device", self.check_device)

    def service_set_up_then_unplugged(self, tmp_path: Path):
        """A service naming this microphone (JSON lines out), set up while it is plugged in; unplugged before it runs."""
        from noisewatch.daemon.service import Service, Signals

        config, out = tmp_path / "c.yaml", tmp_path / "out.jsonl"
        config.write_text(MIC_CONFIG)
        signals = Signals()
        service = Service(prepare(str(config), Overrides(jsonl=str(out))), signals)
        self.plugged.clear()
        return config, out, signals, service


def test_health_reports_go_on_while_the_microphone_is_lost(repo_root: Path, tmp_path: Path, monkeypatch) -> None:
    """Found by a docs check: ``stats`` came only from the processing loop, so with the microphone gone none was
    sent: Home Assistant's uptime and diagnostics froze, then went unavailable, and ``audio_state`` could never
    say ``audio_error``."""
    import threading

    mic = _Microphone(repo_root / "samples" / "scene.flac")
    mic.install(monkeypatch)
    config, out, signals, service = mic.service_set_up_then_unplugged(tmp_path)
    config.write_text(MIC_CONFIG + "stats:\n  interval_s: 1\n")
    signals.reload.set()  # the 1 s interval, applied while the microphone is away
    threading.Timer(4.5, signals.stop.set).start()
    assert service.run() == 0
    stats = [m for m in read_jsonl(out) if m["type"] == "stats"]
    assert len(stats) >= 2, stats  # every second or two (the wait loop ticks each second)
    assert {m["audio_state"] for m in stats} == {"audio_error"} and stats[-1]["source"] == "UsbMic"
    lost = [m for m in read_jsonl(out) if m["type"] == "status" and m["state"] == "audio_error"]
    assert lost and {m["source"] for m in lost} == {"UsbMic"}, lost  # the input asked for, as the stats name it
    assert stats[-1]["uptime_s"] > stats[0]["uptime_s"]


def test_a_lost_microphone_is_said_once_not_at_every_attempt_and_its_return_is_said(
        repo_root: Path, tmp_path: Path, monkeypatch, caplog) -> None:
    """Found reading a lamp post's journal: an unplugged microphone was a WARNING and an identical ``audio_error``
    status at every attempt to reopen it (every 30 s: 2,880 lines a day for as long as it stayed away); it is said
    once, then once an hour with the count, and its return is said too."""
    import logging
    import threading

    from noisewatch.daemon import service as service_module

    caplog.set_level(logging.INFO, logger="noisewatch")
    mic = _Microphone(repo_root / "samples" / "scene.flac")
    mic.install(monkeypatch)
    config, out, signals, service = mic.service_set_up_then_unplugged(tmp_path)

    def unplugged_a_while_then_back() -> None:
        try:
            mic.wait_for_refusals(4)
            monkeypatch.setattr(service_module, "TROUBLE_REMIND_S", 0.0, raising=False)  # the hour is up
            mic.wait_for_refusals(5)
            mic.plugged.set()
            wait_for(out, lambda ms: any(m["type"] == "event" for m in ms), 30)
        finally:
            signals.stop.set()  # a failure ends, rather than hangs, the test

    threading.Thread(target=unplugged_a_while_then_back, daemon=True).start()
    assert service.run() == 0
    lost = "cannot open audio input: no input device matching 'UsbMic'"
    said = [r for r in caplog.records if lost in r.getMessage()]
    assert [r.levelno for r in said] == [logging.WARNING, logging.WARNING], [r.getMessage() for r in said]
    assert "(still: 5 attempts in" in said[1].getMessage(), said[1].getMessage()
    assert re.search(r"audio input \S+ is back, after \d+ s lost", caplog.text), caplog.text
    statuses = [(m["state"], m.get("error")) for m in read_jsonl(out) if m["type"] == "status"]
    assert statuses[-2:] == [("audio_error", lost), ("listening", None)], statuses
    assert statuses.count(("audio_error", lost)) == 1, statuses  # a change of state, not each attempt


def test_a_reload_while_the_named_device_is_unplugged_is_applied(repo_root: Path, tmp_path: Path, monkeypatch,
                                                                 caplog) -> None:
    """The config edited and reloaded while the microphone is unplugged: the reload looked for the unplugged
    device, was refused and lost, and the old config ran once the device was back."""
    import logging
    import threading

    caplog.set_level(logging.INFO, logger="noisewatch")

    mic = _Microphone(repo_root / "samples" / "scene.flac")
    mic.install(monkeypatch)
    config, out, signals, service = mic.service_set_up_then_unplugged(tmp_path)

    lost_said: list[dict] = []
    """What the JSON lines say of the input after the reload, before it is back."""

    def edit_and_replug() -> None:
        mic.wait_for_refusals(2)
        out.rename(out.with_name("out.jsonl.1"))  # logrotate, whose reload reopens the file
        config.write_text(MIC_CONFIG + "stats:\n  interval_s: 7\n")
        signals.reload.set()
        tried = mic.opens_refused
        mic.wait_for_refusals(tried + 2)  # tried after the reload
        lost_said.extend(m for m in read_jsonl(out) if m["type"] == "status")
        mic.plugged.set()
        time.sleep(20)
        signals.stop.set()  # a failure ends, rather than hangs, the test

    threading.Thread(target=edit_and_replug, daemon=True).start()
    assert service.run() == 0  # the scene, replayed once the device was back
    assert service.setup.config.stats.interval_s == 7  # the edit is in force
    said = caplog.text
    assert "configuration reloaded" in said and "reload applied while the audio input is lost, but audio.device" in said
    assert any(m["type"] == "event" for m in read_jsonl(out))
    # the input is still lost, and the reopened file (and a replaced MQTT sink's retained topic) says so
    assert [(m["state"], m["source"]) for m in lost_said] == [("audio_error", "UsbMic")], lost_said


def test_a_reload_while_waiting_for_the_first_microphone_is_a_reload_to_systemd(tmp_path: Path, monkeypatch,
                                                                             caplog) -> None:
    """READY=1 ends systemd's start job. It once came only when audio first flowed: a start without a microphone
    held the job open for good (the installer's `systemctl restart`, and boot). It now comes once the input was tried
    (STATUS says why it hears nothing), and a SIGHUP while it waits is a reload as any other: RELOADING=1, then
    READY=1 again."""
    import logging
    import socket
    import threading

    caplog.set_level(logging.INFO, logger="noisewatch")
    mic = _Microphone(tmp_path / "never opened.flac")
    mic.install(monkeypatch)
    address = str(tmp_path / "notify.sock")
    monkeypatch.setenv("NOTIFY_SOCKET", address)
    config, out, signals, service = mic.service_set_up_then_unplugged(tmp_path)

    def reload_then_stop() -> None:
        wait_for(out, lambda ms: any(m["type"] == "status" for m in ms), 30)
        signals.reload.set()
        time.sleep(3)
        signals.stop.set()

    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind(address)
        threading.Thread(target=reload_then_stop, daemon=True).start()
        assert service.run() == 0
        listener.setblocking(False)
        said = []
        while True:
            try:
                said += listener.recv(4096).decode().splitlines()
            except BlockingIOError:
                break
    assert any(line.startswith("STATUS=cannot open audio input") for line in said), said  # it was listened to
    kinds = [line for line in said if line in ("READY=1", "RELOADING=1")]
    assert kinds == ["READY=1", "RELOADING=1", "READY=1"], said  # up, then one reload
    assert said.index("READY=1") > next(i for i, line in enumerate(said) if line.startswith("STATUS=cannot open"))
    assert "configuration reloaded" in caplog.text  # the reload happened, before the stop


def test_a_muted_microphone_is_reported_and_its_return_too(repo_root: Path, tmp_path: Path, monkeypatch) -> None:
    """Exact zeros from an open input (capture muted, gain 0): every window gated, no event, no error. It said
    "listening" all along; now it says "silent" after DIGITAL_SILENCE_S, and "listening" once sound is back."""
    from noisewatch.daemon import service as service_module
    from noisewatch.daemon.levels import DIGITAL_SILENCE_S

    scene, rate = sf.read(repo_root / "samples" / "scene.flac", dtype="float32")
    muted = np.zeros(int((DIGITAL_SILENCE_S + 5) * rate), np.float32)
    recording = tmp_path / "muted.flac"
    sf.write(recording, np.concatenate([scene[: 2 * rate], muted, scene]), rate)
    monkeypatch.setattr(service_module, "open_source", lambda audio, input_path, speed: LiveReplay(
        str(recording), 0, audio.block_size, audio.buffer_s))
    out = tmp_path / "out.jsonl"
    setup = prepare(None, Overrides(jsonl=str(out)), input_path=str(recording), speed=0)
    assert service_module.Service(setup).run() == 0
    messages = read_jsonl(out)
    said = [m["state"] for m in messages if m["type"] == "status"]
    assert said == ["listening", "silent", "listening"], said
    silent = next(m for m in messages if m["type"] == "status" and m["state"] == "silent")
    assert "digital silence" in silent["error"] and silent["source"]
    kinds = [m["type"] for m in messages]
    back = len(kinds) - 1 - kinds[::-1].index("status")
    assert "event" in kinds[back:], "no events once the sound was back"


def test_a_converter_stuck_at_one_code_is_reported_silent_as_a_muted_one(repo_root: Path, tmp_path: Path,
                                                                         monkeypatch) -> None:
    """Fault injection: a 16-bit converter stuck at -1 (0xFFFF, where many idle or dead ones sit) is as deaf as a
    muted one, but not exact zeros: the daemon said "listening" all along. A run of one value is digital silence."""
    from noisewatch.daemon import service as service_module
    from noisewatch.daemon.levels import DIGITAL_SILENCE_S

    scene, rate = sf.read(repo_root / "samples" / "scene.flac", dtype="int16")
    stuck = np.full(int((DIGITAL_SILENCE_S + 5) * rate), -1, np.int16)
    recording = tmp_path / "stuck.wav"
    sf.write(recording, np.concatenate([scene[: 2 * rate], stuck, scene]), rate, subtype="PCM_16")
    monkeypatch.setattr(service_module, "open_source", lambda audio, input_path, speed: LiveReplay(
        str(recording), 0, audio.block_size, audio.buffer_s))
    out = tmp_path / "out.jsonl"
    setup = prepare(None, Overrides(jsonl=str(out)), input_path=str(recording), speed=0)
    assert service_module.Service(setup).run() == 0
    said = [m["state"] for m in read_jsonl(out) if m["type"] == "status"]
    assert said == ["listening", "silent", "listening"], said


class _LosesTwoSeconds(FileSource):
    """A real file source whose ring buffer loses 10-12 s of the scene, as an overflow would lose it."""

    def _deliver(self, audio) -> None:
        rate = self.sample_rate
        for block in audio.blocks(self.block_size, dtype="float32", always_2d=True, frames=10 * rate):
            self.callback(block, len(block), None, FILE_STATUS)
        while self.ring.available:  # an overflow loses unread audio: the frames before it were all read
            time.sleep(0.01)
        audio.seek(12 * rate)
        with self.ring._cond:
            self.ring.dropped += 2 * rate
        for block in audio.blocks(self.block_size, dtype="float32", always_2d=True):
            self.callback(block, len(block), None, FILE_STATUS)


def test_audio_lost_in_the_ring_buffer_moves_later_timestamps_not_earlier(repo_root: Path, tmp_path: Path,
                                                                         monkeypatch) -> None:
    from datetime import datetime

    _, messages = _run_with_a_faulty_first_source(_LosesTwoSeconds, repo_root, tmp_path, monkeypatch)
    found = {m["label"]: m for m in events(messages)}
    assert {"siren", "dog_bark"} <= set(found), f"scene events missing: {sorted(found)}"

    def anchor_s(event: dict) -> float:  # wall time of stream sample 0 that this event's timestamps imply
        return datetime.fromisoformat(event["start"].replace("Z", "+00:00")).timestamp() - event["offset_s"]

    # the siren (5-9 s) started before the loss, the dog (14-17 s) after it
    assert abs(anchor_s(found["dog_bark"]) - anchor_s(found["siren"]) - 2.0) < 0.01
    # 2 s lost is a gap: the siren's event ends where the audio stopped (10 s), not in audio nobody heard
    end_s = datetime.fromisoformat(found["siren"]["end"].replace("Z", "+00:00")).timestamp() - anchor_s(found["siren"])
    assert end_s <= 10.0 + 0.01


def _replay_scene(repo_root: Path, config: Path, out: Path) -> subprocess.Popen:
    """``noisewatch run`` on the sample scene in real time with ``config``, JSON lines to ``out``."""
    return subprocess.Popen(
        [sys.executable, "-m", "noisewatch.cli", "run", "--config", str(config), "--input",
         str(repo_root / "samples" / "scene.flac"), "--speed", "1", "--jsonl", str(out)],
        stderr=subprocess.PIPE, text=True,
    )


def test_sighup_reloads_the_config_without_exiting(repo_root: Path, tmp_path: Path) -> None:
    config, out = tmp_path / "c.yaml", tmp_path / "out.jsonl"
    config.write_text("scores:\n  enabled: false\n")
    proc = _replay_scene(repo_root, config, out)
    try:
        wait_for(out, lambda ms: any(m["type"] == "status" for m in ms), 15)
        time.sleep(4.5)  # past the first window: with scores off, none may have been sent
        assert not any(m["type"] == "scores" for m in read_jsonl(out))
        config.write_text("scores:\n  enabled: true\n  interval_s: 0.5\n")
        proc.send_signal(signal.SIGHUP)
        messages = wait_for(out, lambda ms: any(m["type"] == "scores" for m in ms), 10)
        (scores,) = [m for m in messages if m["type"] == "scores"][:1]
        assert len(scores["top"]) == 3 and proc.poll() is None
        config.write_text("audio:\n  hop_s: -1\n")  # an invalid config is refused, the old one kept
        proc.send_signal(signal.SIGHUP)
        time.sleep(1.0)
        assert proc.poll() is None
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=5) == 0
    assert "reload refused" in proc.stderr.read()


def test_a_reload_sends_a_health_report_at_once(repo_root: Path, tmp_path: Path) -> None:
    """Found renaming a listener (``device_id``) with a reload, against a real Home Assistant: the new device's
    Model, Uptime and other stats sensors were unavailable until the next report, a minute later by default (and a
    reloaded model showed as the old one as long). A reload reports at once, as a start does."""
    config, out = tmp_path / "c.yaml", tmp_path / "out.jsonl"
    config.write_text("device_id: kitchen\n")
    proc = _replay_scene(repo_root, config, out)
    try:
        wait_for(out, lambda ms: any(m["type"] == "stats" for m in ms), 15)
        config.write_text("device_id: pantry\n")
        proc.send_signal(signal.SIGHUP)
        messages = wait_for(out, lambda ms: any(m["type"] == "stats" and m["device"] == "pantry" for m in ms), 10)
        assert [m["device"] for m in messages if m["type"] == "stats"] == ["kitchen", "pantry"]
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=5) == 0


def test_a_reload_that_drops_jsonl_path_from_the_config_turns_the_log_off(repo_root: Path, tmp_path: Path) -> None:
    """Found by fault injection: the running log went on after ``jsonl.path`` was removed and reloaded (only a
    command-line ``--jsonl`` is meant to outlive a reload; test_sighup_reloads_the_config_without_exiting keeps it)."""
    config, out = tmp_path / "c.yaml", tmp_path / "out.jsonl"
    scores = "scores:\n  enabled: true\n  interval_s: 0.5\n"
    config.write_text(f"jsonl:\n  path: {out}\n{scores}")
    proc = subprocess.Popen([sys.executable, "-m", "noisewatch.cli", "run", "--config", str(config), "--input",
                             str(repo_root / "samples" / "scene.flac"), "--speed", "1"], stderr=subprocess.PIPE, text=True)
    try:
        wait_for(out, lambda ms: any(m["type"] == "scores" for m in ms), 15)
        config.write_text(scores)
        proc.send_signal(signal.SIGHUP)
        deadline, quiet = time.monotonic() + 20, False  # the reload (a model load) may take a while on a busy machine
        while not quiet and time.monotonic() < deadline:
            lines = len(out.read_text().splitlines())
            time.sleep(2.0)  # four windows' scores, had the log stayed on
            quiet = len(out.read_text().splitlines()) == lines
        assert quiet and proc.poll() is None
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=5) == 0
    assert "configuration reloaded" in proc.stderr.read()


def test_a_reload_to_a_model_of_another_sample_rate_is_refused_until_a_restart(repo_root: Path, tmp_path: Path) -> None:
    """The running stream, resampler and level meter are at the old rate: swapping in place would feed the
    new model audio at the wrong rate and misdate events, without a word."""
    shipped = default_model_path()
    sidecar = json.loads(shipped.read_text())
    (tmp_path / sidecar["tflite"]).write_bytes((shipped.parent / sidecar["tflite"]).read_bytes())
    (tmp_path / "at22k.json").write_text(json.dumps(sidecar))
    sidecar["features"]["sample_rate"] = 44100
    (tmp_path / "at44k.json").write_text(json.dumps(sidecar))
    config, out = tmp_path / "c.yaml", tmp_path / "out.jsonl"
    scores = "scores:\n  enabled: true\n  interval_s: 0.5\n"
    config.write_text(f"model:\n  path: {tmp_path / 'at22k.json'}\n{scores}")
    proc = _replay_scene(repo_root, config, out)
    try:
        wait_for(out, lambda ms: any(m["type"] == "scores" for m in ms), 15)
        config.write_text(f"model:\n  path: {tmp_path / 'at44k.json'}\n{scores}")
        proc.send_signal(signal.SIGHUP)
        time.sleep(1.0)
        windows = len([m for m in read_jsonl(out) if m["type"] == "scores"])
        wait_for(out, lambda ms: len([m for m in ms if m["type"] == "scores"]) > windows + 1, 5)  # still listening
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=5) == 0
    refused = [line for line in proc.stderr.read().splitlines() if "reload refused" in line]
    assert len(refused) == 1 and "44100 Hz" in refused[0] and "22050 Hz" in refused[0], refused


class _GoesSilent(FileSource):
    """A real file source whose device stops delivering without reporting anything (a stalled stream)."""

    live = True

    def _deliver(self, audio) -> None:
        for block in audio.blocks(self.block_size, dtype="float32", always_2d=True, frames=2 * self.sample_rate):
            self.callback(block, len(block), None, FILE_STATUS)
        self._halt.wait()


def test_a_stalled_input_is_reopened(repo_root: Path, tmp_path: Path, monkeypatch) -> None:
    opened, messages = _run_with_a_faulty_first_source(_GoesSilent, repo_root, tmp_path, monkeypatch)
    trouble = [m for m in messages if m["type"] == "status" and m["state"] == "audio_error"]
    assert opened == 2 and len(trouble) == 1 and "no audio for" in trouble[0]["error"]


def test_check_config_catches_what_the_mqtt_sink_would_fail_on(tmp_path: Path) -> None:
    """Found before start-up (and before a reload commits to it), not when the sink starts."""
    config = tmp_path / "c.yaml"
    config.write_text(f"mqtt:\n  enabled: true\n  password_file: {tmp_path / 'missing'}\n"
                      f"  tls:\n    enabled: true\n    ca_file: {tmp_path / 'ca.crt'}\n")
    result = subprocess.run([sys.executable, "-m", "noisewatch.cli", "check-config", str(config)], capture_output=True, text=True)
    assert result.returncode == 78, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 2 and "mqtt.password_file" in lines[0] and "mqtt.tls.ca_file" in lines[1]


def test_systemd_hears_ready_again_after_a_reload(repo_root: Path, tmp_path: Path) -> None:
    """READY=1 once audio flows, RELOADING=1 on SIGHUP, READY=1 again: systemctl reload completes."""
    import socket

    address = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind(address)
        listener.settimeout(15)
        proc = subprocess.Popen(
            [sys.executable, "-m", "noisewatch.cli", "run", "--input", str(repo_root / "samples" / "scene.flac"), "--speed", "1"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "NOTIFY_SOCKET": address},
        )
        try:
            states = []

            def wait_for(field: str) -> None:
                while field not in states:
                    states.extend(listener.recv(4096).decode().splitlines())

            wait_for("READY=1")
            states.clear()
            proc.send_signal(signal.SIGHUP)
            wait_for("RELOADING=1")
            states.clear()
            wait_for("READY=1")
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=5) == 0


def test_a_moved_clock_keeps_earlier_offsets_on_their_old_anchor() -> None:
    from datetime import datetime, timedelta, timezone

    from noisewatch.daemon.events import MAX_ANCHORS

    t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
    clock = SampleClock(t0).moved(t0 + timedelta(seconds=2), at_s=10.0, keep_from_s=0.0)  # 2 s lost at 10 s
    assert clock.iso(9.5) == "2026-01-01T00:00:09.500Z"  # before the loss: as it was announced
    assert clock.iso(10.0) == "2026-01-01T00:00:12.000Z"  # after it: 2 s later in wall time
    for k in range(1, 100):  # a move every 0.1 s (overload); offsets before 15 s can no longer be named
        clock = clock.moved(t0 + timedelta(seconds=2 + k), at_s=10.0 + k / 10, keep_from_s=15.0)
    assert clock.iso(15.05) == (t0 + timedelta(seconds=2 + 50 + 15.05)).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    assert len(clock.earlier) == 49  # anchors from 15.0 s on, none older
    for k in range(3 * MAX_ANCHORS):  # and never more than MAX_ANCHORS, however long the memory
        clock = clock.moved(t0, at_s=30.0 + k, keep_from_s=0.0)
    assert len(clock.earlier) == MAX_ANCHORS - 1


@pytest.mark.parametrize("step_h", [-2.0, 3.0])
def test_an_event_open_across_a_clock_step_ends_its_length_after_its_start(step_h: float) -> None:
    """Found by a fault run under libfaketime: the wall clock stepped back 2 h while an event was open, and its
    end came 2 h before its start (a level period's too; a step forward made a 60 s period 3 h long)."""
    from datetime import datetime, timedelta, timezone

    from noisewatch.daemon.events import OpenEvent, event_message

    t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
    clock = SampleClock(t0).moved(t0 + timedelta(hours=step_h), at_s=50.0, keep_from_s=0.0)
    message = event_message(OpenEvent("air_conditioner", 4.0, 94.5), clock, "urban11@test", (-30.0, -20.0))
    start, end = (datetime.fromisoformat(message.start.replace("Z", "+00:00")),
                  datetime.fromisoformat(message.end.replace("Z", "+00:00")))
    assert start == t0 + timedelta(seconds=4.0)  # as it was announced
    assert (end - start).total_seconds() == message.duration_s == 90.5
    assert clock.span(40.0, 100.0) == ("2026-01-01T00:00:40.000Z", "2026-01-01T00:01:40.000Z")  # a level period


def test_the_start_a_health_report_gives_is_steady_and_follows_a_stepped_wall_clock() -> None:
    """A Pi without a real-time clock starts at its last shutdown's time until NTP answers: the start the reports
    gave then is days off, and the next report puts it right; between steps, every report gives the same one."""
    from noisewatch.daemon.events import started_iso

    day = 86400.0
    assert started_iso(1_000_000.2, 60.0) == started_iso(1_000_060.3, 120.1) == "1970-01-12T13:45:40.000Z"
    assert started_iso(1_000_120.4 + 3 * day, 180.2) == "1970-01-15T13:45:40.000Z"  # NTP stepped it 3 days on


def test_a_drifting_sample_clock_is_re_anchored_to_wall_time() -> None:
    """README: the sample clock is "re-tied when it drifts from wall time by more than 0.5 s (checked every
    minute)"."""
    from datetime import timedelta

    from noisewatch.daemon.service import CLOCK_CHECK_S, keep_clock_honest

    assert CLOCK_CHECK_S == 60.0

    bundle = load_bundle(default_model_path())
    pipeline = Pipeline.from_config(Config(), bundle, bundle.open_model())
    pipeline.process(np.zeros(10 * bundle.features.sample_rate, dtype=np.float32))  # 10 s heard "instantly"
    now = SampleClock.starting_now().anchor
    keep_clock_honest(pipeline, now)  # the sample clock ran 10 s ahead of the wall clock: re-anchored
    assert abs(pipeline.clock_error_s(now)) < 0.1
    anchor = pipeline.clock.anchor
    keep_clock_honest(pipeline, now + timedelta(seconds=0.45))  # within the limit: left alone
    assert pipeline.clock.anchor == anchor
    keep_clock_honest(pipeline, now + timedelta(seconds=0.55))
    assert abs(pipeline.clock_error_s(now + timedelta(seconds=0.55))) < 0.1


def test_reopening_a_lost_input_backs_off_up_to_its_cap_and_afresh_once_healthy() -> None:
    """README: "A lost audio device is reopened with capped backoff (`audio.reopen_max_s`)"."""
    from noisewatch.daemon.service import Backoff

    backoff = Backoff()
    assert [backoff.take(4.0) for _ in range(5)] == [1.0, 2.0, 4.0, 4.0, 4.0]
    backoff.healthy()
    assert backoff.take(4.0) == 1.0
    assert [backoff.take(60.0) for _ in range(4)] == [2.0, 4.0, 8.0, 16.0]
    assert [backoff.take(1.0) for _ in range(2)] == [1.0, 1.0]  # a cap lowered by a reload: the next wait keeps it


def test_audio_still_in_the_ring_buffer_is_not_taken_for_drift() -> None:
    from noisewatch.daemon.service import keep_clock_honest
    from noisewatch.daemon.sources import AudioSource

    backlogged = AudioSource("backlogged", 48000, 1, buffer_s=10.0, block_frames=1024, block_interval_s=0.02)  # 3 s waiting
    backlogged.ring.write(np.zeros((3 * 48000, 1), dtype=np.float32))
    bundle = load_bundle(default_model_path())
    pipeline = Pipeline.from_config(Config(), bundle, bundle.open_model())
    pipeline.heard_at(backlogged.read(0, 0).captured)  # the position was captured 3 s ago
    anchor = pipeline.clock.anchor
    assert abs((SampleClock.starting_now().anchor - anchor).total_seconds() - 3.0) < 0.1
    keep_clock_honest(pipeline, backlogged.read(0, 0).captured)
    assert pipeline.clock.anchor == anchor


def test_stats_reach_the_json_lines_sink_at_the_configured_interval(repo_root: Path, tmp_path: Path) -> None:
    config = tmp_path / "noisewatch.yaml"
    config.write_text("stats:\n  interval_s: 1.0\n")
    started = time.monotonic()
    messages = run_daemon(repo_root / "samples" / "scene.flac", tmp_path / "out.jsonl", "--speed", "10", config=config)
    elapsed = time.monotonic() - started
    stats = [m for m in messages if m["type"] == "stats"]
    assert 3 <= len(stats) <= elapsed + 2, f"{len(stats)} stats messages in {elapsed:.1f} s"  # and one at the stop
    gaps = np.diff([m["uptime_s"] for m in stats[:-1]])  # the stop's comes whenever the file ends
    assert gaps.min() >= 0.9, gaps  # at the interval (the default 60 s gave only the start's and the stop's)
    assert {"uptime_s", "windows", "input_overflows", "dropped_frames"} <= set(stats[0])
    assert len({m["started"] for m in stats}) == 1, stats  # the same at every report: no change in each minute's history


def test_a_health_report_goes_out_as_audio_starts_not_a_whole_interval_later(repo_root: Path, tmp_path: Path) -> None:
    """With the default 60 s interval Home Assistant showed the previous run's uptime for a minute after a
    restart, and its diagnostic sensors stayed unavailable that long (the 33 s sample never filled them). The report
    says when the run started (Home Assistant's Started: "a few seconds ago")."""
    before = datetime.now(timezone.utc)
    messages = run_daemon(repo_root / "samples" / "scene.flac", tmp_path / "out.jsonl", "--speed", "0")
    stats = [m for m in messages if m["type"] == "stats"]
    assert len(stats) == 2 and stats[0]["uptime_s"] < 5 and stats[0]["windows"] == 0, stats  # and one at the stop
    started = datetime.fromisoformat(stats[0]["started"])
    assert abs(started - before) < timedelta(seconds=5) and started.microsecond == 0, stats


def test_an_event_is_in_the_mqtt_spool_before_it_reaches_the_json_lines_log(tmp_path: Path) -> None:
    """A kill between the two sinks must not leave a logged event that MQTT never delivers: the durable spool
    is written first (seen once as a lost event in test_daemon_killed_while_broker_down_delivers_spool)."""
    from mqtt_broker import free_port

    from noisewatch.daemon.messages import Event
    from noisewatch.daemon.outbox import Outbox
    from noisewatch.daemon.setup import open_sinks, prepare
    from noisewatch.daemon.sinks.jsonl import JsonlSink
    from noisewatch.daemon.sinks.mqtt import MqttSink

    config = tmp_path / "c.yaml"
    config.write_text(f"jsonl:\n  path: {tmp_path / 'out.jsonl'}\n"
                      f"mqtt:\n  enabled: true\n  port: {free_port()}\n  spool:\n    directory: {tmp_path / 'spool'}\n")
    setup = prepare(str(config))
    sinks = open_sinks(setup)
    (spool,) = [sink.spool for sink in sinks if isinstance(sink, MqttSink)]
    (logged,) = [sink for sink in sinks if isinstance(sink, JsonlSink)]
    depth_when_logged = []
    write_line = logged.send
    logged.send = lambda message: (depth_when_logged.append(spool.depth), write_line(message))
    outbox = Outbox(setup.config.device_id, sinks)
    try:
        outbox.publish([Event(id="e1", label="siren", confidence=0.9, mean_confidence=0.8,
                              start="2026-11-24T00:00:00.000Z", end="2026-11-24T00:00:01.000Z", offset_s=0.0,
                              duration_s=1.0, peak_dbfs=-3.0, mean_dbfs=-10.0, model="m@1")])
    finally:
        outbox.close()
    assert depth_when_logged == [1]
    assert read_jsonl(tmp_path / "out.jsonl")[0]["id"] == "e1"


def test_thresholds_kept_from_home_assistant_win_over_the_config_from_the_first_window(repo_root: Path,
                                                                                       tmp_path: Path) -> None:
    """A threshold set from the phone (kept in the MQTT state folder) is in force after a restart."""
    from mqtt_broker import free_port

    config = tmp_path / "c.yaml"
    config.write_text(f"mqtt:\n  enabled: true\n  port: {free_port()}\n  spool:\n    directory: {tmp_path / 'spool'}\n")
    scene = repo_root / "samples" / "scene.flac"
    plain = {e["label"] for e in events(run_daemon(scene, tmp_path / "plain.jsonl", "--speed", "0", config=config))}
    (tmp_path / "state").mkdir(exist_ok=True)  # the first run made it (its lock)
    (tmp_path / "state" / "thresholds.json").write_text('{"street_music": 0.0}')  # any score passes
    tuned = {e["label"] for e in events(run_daemon(scene, tmp_path / "tuned.jsonl", "--speed", "0", config=config))}
    assert "street_music" not in plain and tuned == plain | {"street_music"}


def test_a_config_threshold_a_home_assistant_one_overrides_is_named_in_the_log(tmp_path: Path, caplog) -> None:
    """Otherwise an edit of detector.thresholds after a change from the phone looks ignored."""
    from mqtt_broker import free_port

    from noisewatch.daemon.pipeline import Counters
    from noisewatch.daemon.service import Active

    config = tmp_path / "c.yaml"
    config.write_text(f"mqtt:\n  enabled: true\n  port: {free_port()}\n  spool:\n    directory: {tmp_path / 'spool'}\n"
                      "detector:\n  thresholds:\n    siren: 0.9\n    dog_bark: 0.5\n")
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "thresholds.json").write_text('{"siren": 0.3, "dog_bark": 0.5, "car_horn": 0.7}')
    caplog.set_level("WARNING", logger="noisewatch")
    active = Active.open(prepare(str(config)), Counters())
    active.close()
    said = [r.getMessage() for r in caplog.records if "not in force" in r.getMessage()]
    assert len(said) == 1 and "detector.thresholds.siren = 0.9" in said[0] and "0.3" in said[0], said


def test_check_config_says_a_config_threshold_a_home_assistant_one_overrides(tmp_path: Path) -> None:
    """Found by a first-hour walk: ``run`` said a config threshold hidden by one set from the phone, but
    ``check-config``, the step before a reload, said "ok" alone: the edit looked applied, then did nothing."""
    from mqtt_broker import free_port

    config = tmp_path / "c.yaml"
    config.write_text(f"mqtt:\n  enabled: true\n  port: {free_port()}\n  spool:\n    directory: {tmp_path / 'spool'}\n"
                      "detector:\n  thresholds:\n    siren: 0.9\n    dog_bark: 0.5\n    gun_shot: 0.8\n  ignore: [background, gun_shot]\n")
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "thresholds.json").write_text('{"siren": 0.3, "dog_bark": 0.5, "car_horn": 0.7, "gun_shot": 0.2}')
    result = subprocess.run([sys.executable, "-m", "noisewatch.cli", "check-config", str(config)], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    said = [line for line in result.stderr.splitlines() if "not in force" in line]
    assert said == [f"noisewatch: warning: detector.thresholds.siren = 0.9 is not in force: 0.3, set from Home Assistant, "
                    f"wins (kept in {tmp_path / 'state'}; set it again there, or press its Reset thresholds button for "
                    "the config's)"], result.stderr  # not dog_bark (the same), nor gun_shot (ignored: not watched)


def test_a_reload_that_replaces_the_mqtt_sink_hands_it_the_running_spool(tmp_path: Path) -> None:
    """Two spools on one folder would hand out the same sequence numbers and overwrite each other's events."""
    from mqtt_broker import free_port

    from noisewatch.daemon.setup import open_sinks
    from noisewatch.daemon.sinks.mqtt import MqttSink

    config = tmp_path / "c.yaml"
    mqtt = f"mqtt:\n  enabled: true\n  port: {free_port()}\n  spool:\n    directory: {tmp_path / 'spool'}\n"
    config.write_text(mqtt)
    running = open_sinks(prepare(str(config)))
    config.write_text(mqtt + "loudness:\n  enabled: false\n")  # another set of entities: the sink is rebuilt
    replaced = open_sinks(prepare(str(config)), running)
    try:
        (old,), (new,) = running, replaced
        assert isinstance(new, MqttSink) and new is not old and new.spool is old.spool
    finally:
        for sink in (*running, *replaced):
            sink.close()


def test_a_refused_reload_keeps_the_running_spool_bounds_and_what_they_keep(tmp_path: Path) -> None:
    """A reload puts its spool bounds on the running spool (test_faults_files.py, f21) only once it cannot be refused:
    messages a lowered bound drops are gone for good, and a refused reload keeps the running set-up untouched."""
    from mqtt_broker import free_port

    from noisewatch.daemon.setup import open_sinks

    config = tmp_path / "c.yaml"
    mqtt = f"mqtt:\n  enabled: true\n  port: {free_port()}\n  spool:\n    directory: {tmp_path / 'spool'}\n"
    config.write_text(mqtt)
    running = open_sinks(prepare(str(config)))
    try:
        (sink,) = running
        for n in range(5):
            sink.spool.append("noisewatch/test/events", f"spooled-{n}".encode() * 100)
        config.write_text(mqtt + f"    max_mb: 0.001\njsonl:\n  path: {tmp_path / 'x.jsonl'}\n")
        lowered = prepare(str(config))
        (tmp_path / "x.jsonl").mkdir()  # the JSON-lines file cannot open: the last sink, after the MQTT one
        with pytest.raises(ConfigError, match="jsonl.path"):
            open_sinks(lowered, running)
        assert sink.spool.depth == 5 and sink.spool.dropped == 0
    finally:
        for opened in running:
            opened.close()


def test_a_refused_reload_leaves_no_closed_sink_alive(tmp_path: Path) -> None:
    """A reload that built a new MQTT sink and was then refused (its JSON-lines file would not open) closes that sink;
    the running one kept a link to it, and with it the closed client and its queues, until the next reload."""
    from mqtt_broker import free_port

    from noisewatch.daemon.setup import open_sinks
    from noisewatch.daemon.sinks.mqtt import MqttSink

    config = tmp_path / "c.yaml"
    mqtt = f"mqtt:\n  enabled: true\n  port: {free_port()}\n  spool:\n    directory: {tmp_path / 'spool'}\n"
    config.write_text(mqtt)
    running = open_sinks(prepare(str(config)))
    try:
        config.write_text(mqtt + f"loudness:\n  enabled: false\njsonl:\n  path: {tmp_path / 'x.jsonl'}\n")
        rebuilt = prepare(str(config))  # other entities: a new MQTT sink
        (tmp_path / "x.jsonl").mkdir()  # the JSON-lines file cannot open, after that sink was built
        with pytest.raises(ConfigError, match="jsonl.path"):
            open_sinks(rebuilt, running)
        gc.collect()
        (sink,) = running
        alive = [o for o in gc.get_objects() if isinstance(o, MqttSink) and o.spool is sink.spool]  # this test's
        assert alive == [sink]
    finally:
        for opened in running:
            opened.close()


def test_a_loud_sound_longer_than_max_duration_is_one_event_not_pieces(tmp_path: Path) -> None:
    """docs/mqtt.md: a sound longer than ``detector.max_duration_s`` is reported in pieces, but "a ``loud`` event is
    not split: its ``event`` comes when the level falls back, however long that is"."""
    rate = 22050
    tone = 0.5 * np.sin(2 * np.pi * 440.0 * np.arange(20 * rate) / rate)  # -9 dBFS for 20 s
    audio = np.concatenate([np.zeros(2 * rate), tone, np.zeros(3 * rate)]).astype(np.float32)
    sf.write(tmp_path / "tone.flac", audio, rate)
    config = tmp_path / "c.yaml"
    config.write_text("detector:\n  max_duration_s: 5\nloudness:\n  threshold_dbfs: -30\n")
    messages = run_daemon(tmp_path / "tone.flac", tmp_path / "out.jsonl", "--speed", "0", config=config)
    loud = [m for m in messages if m["type"] in ("started", "event") and m["label"] == "loud"]
    assert [m["type"] for m in loud] == ["started", "event"], loud
    assert loud[1]["continues"] is None and abs(loud[1]["duration_s"] - 20.0) <= 1.0, loud


def test_a_negative_replay_speed_is_refused_before_anything_runs(repo_root: Path) -> None:
    """--speed -1 logged "listening", then failed the file as unreadable (exit 66, "not retried")."""
    result = subprocess.run([sys.executable, "-m", "noisewatch.cli", "run", "--input",
                             str(repo_root / "samples" / "scene.flac"), "--speed", "-1"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "argument --speed: must be 0 (as fast as possible) or more" in result.stderr
    assert "listening" not in result.stderr


def test_the_quick_start_s_json_lines_are_the_readme_s_messages(repo_root: Path, tmp_path: Path) -> None:
    """README's quick start (`run --input samples/scene.flac --speed 0 --jsonl -`) and its messages: every line
    one typed payload with `type` and `schema`; the audio input's `status`, `stats` with the MQTT fields null
    without MQTT, a `level` (Leq/Lmax/Lmin in dBFS and dBFS(A), no SPL while uncalibrated; docs/mqtt.md: the
    first after at most 5 s), `started` and `event` of each sound, times ISO 8601 UTC with milliseconds from
    the sample clock, "tied to wall time when audio starts flowing";
    `scores` off by default, and with `scores.enabled` the top 3 of a window, highest first."""
    import re
    from datetime import datetime

    from noisewatch.daemon.messages import SCHEMA_VERSION, decode

    def quick_start(*args: str) -> list[dict]:
        result = subprocess.run([sys.executable, "-m", "noisewatch.cli", "run", "--input",
                                 str(repo_root / "samples" / "scene.flac"), "--speed", "0", "--jsonl", "-", *args],
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        return json_lines(result.stdout)

    first_read_s = READ_FRAMES / sf.info(str(repo_root / "samples" / "scene.flac")).samplerate
    began = time.time()
    messages = quick_start()
    ended = time.time()
    for message in messages:
        assert decode(message).to_json() == message and message["schema"] == SCHEMA_VERSION, message
    kinds = {m["type"] for m in messages}
    assert {"status", "stats", "level", "started", "event"} <= kinds and "scores" not in kinds, kinds
    assert [m["state"] for m in messages if m["type"] == "status"][0] == "listening"
    stats = [m for m in messages if m["type"] == "stats"][0]
    assert all(stats[k] is None for k in stats if k.startswith(("spool_", "mqtt_"))), stats
    assert stats["jsonl_failed_writes"] == 0
    level = [m for m in messages if m["type"] == "level"][0]
    assert level["offset_s"] == 0.0 and 0 < level["period_s"] <= 5, level
    assert {f"{n}_dbfs{a}" for n in ("leq", "lmax", "lmin") for a in ("", "_a")} <= set(level)
    assert not [k for k in level if k.endswith("_spl")], level
    assert level["lmin_dbfs"] <= level["leq_dbfs"] <= level["lmax_dbfs"], level
    iso_ms = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z\Z")
    started = {m["id"]: m for m in messages if m["type"] == "started"}
    assert [m["id"] for m in messages if m["type"] == "event"] == list(started)
    for event in events(messages):
        assert iso_ms.match(event["start"]) and iso_ms.match(event["end"]), event
        assert started[event["id"]]["start"] == event["start"] and started[event["id"]]["label"] == event["label"]
        anchor = datetime.fromisoformat(event["start"].replace("Z", "+00:00")).timestamp() - event["offset_s"]
        # the sample clock: tied to wall time when audio starts flowing, as the first read's capture time (the read's
        # time less the audio it hands over: at --speed 0 up to READ_FRAMES, which the replay had ready at once)
        assert began - first_read_s - 0.01 <= anchor <= ended, (began, anchor, ended)

    config = tmp_path / "scores.yaml"
    config.write_text("scores:\n  enabled: true\n  interval_s: 0\n")
    scores = [m for m in quick_start("--config", str(config)) if m["type"] == "scores"]
    assert scores
    for report in scores:
        values = [s["score"] for s in report["top"]]
        assert len(values) == 3 and values == sorted(values, reverse=True), report
        assert iso_ms.match(report["time"]), report


def test_thresholds_come_from_the_bundle_then_the_config_then_home_assistant(tmp_path: Path) -> None:
    """README: thresholds are the "bundle defaults, `detector.thresholds` overrides, and one set from Home
    Assistant wins over both": the detector's own thresholds, per label, from the first window."""
    from mqtt_broker import free_port

    from noisewatch.daemon.pipeline import Counters
    from noisewatch.daemon.service import Active

    config = tmp_path / "c.yaml"
    config.write_text(f"mqtt:\n  enabled: true\n  port: {free_port()}\n  spool:\n    directory: {tmp_path / 'spool'}\n"
                      "detector:\n  thresholds:\n    siren: 0.9\n    dog_bark: 0.45\n")

    def in_force() -> tuple[dict[str, float], dict[str, float]]:
        active = Active.open(prepare(str(config)), Counters())
        try:
            return dict(active.pipeline.detector.settings.thresholds), active.setup.bundle.thresholds
        finally:
            active.close()

    thresholds, bundle = in_force()
    assert (thresholds["siren"], thresholds["dog_bark"]) == (0.9, 0.45)  # the config's, over the bundle's
    assert bundle["siren"] != 0.9 and bundle["dog_bark"] != 0.45  # (so the config did change them)
    others = [label for label in thresholds if label not in ("siren", "dog_bark")]
    assert others and all(thresholds[label] == bundle[label] for label in others)  # the bundle's elsewhere
    (tmp_path / "state").mkdir(exist_ok=True)
    (tmp_path / "state" / "thresholds.json").write_text('{"siren": 0.3, "car_horn": 0.8}')
    thresholds, _ = in_force()
    assert (thresholds["siren"], thresholds["dog_bark"], thresholds["car_horn"]) == (0.3, 0.45, 0.8)


def test_dropped_audio_is_said_at_once_then_at_most_once_a_period_with_the_total_since(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """README: dropped audio is a WARNING "at once, then at most once a minute with the total since"."""
    from types import SimpleNamespace

    from noisewatch.daemon import service

    clock = [1000.0]  # the real period, on a clock the test moves
    monkeypatch.setattr(service, "time", SimpleNamespace(monotonic=lambda: clock[0]))
    dropped = service._Tally()
    assert dropped.add(1.0) == (1.0, "")  # at once
    clock[0] += service.LOSS_SAY_S - 1
    assert dropped.add(0.5) is None and dropped.add(0.25) is None  # within the period: kept
    clock[0] += 2
    said = dropped.add(0.25)
    assert said is not None and said[0] == 1.0 and said[1].startswith(" in the last ")  # the total since said
    closing = dropped.add(0.5, final=True)  # a file replayed at --speed 0 ends at once: no "in the last 0 s"
    assert closing == (0.5, " since the last such warning"), closing


def test_the_last_health_report_comes_at_the_stop_and_counts_every_event(repo_root: Path, tmp_path: Path) -> None:
    """Found by a fault hunt: no stats report went out at a stop, so the retained one (what Home Assistant and the
    dashboard show of a stopped listener) counted the events up to the report before: 58 where 60 were heard."""
    out = tmp_path / "out.jsonl"
    config = tmp_path / "c.yaml"
    config.write_text("stats:\n  interval_s: 3600\n")
    messages = run_daemon(repo_root / "samples" / "scene.flac", out, "--speed", "0", config=config)
    stats = [m for m in messages if m["type"] == "stats"]
    heard = [m for m in messages if m["type"] == "event"]
    assert len(stats) == 2 and stats[0]["events"] == 0, stats  # one as audio starts, one at the stop
    assert messages[-1]["type"] == "stats" and stats[-1]["events"] == len(heard) >= 3, (stats, len(heard))

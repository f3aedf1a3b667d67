"""README promises that no other test would catch if they broke, each tested against real parts: the real daemon
(``noisewatch run`` / ``check-config`` as subprocesses, or its Pipeline with the real TFLite model on the bundled
real-audio scene), a real mosquitto (tests/mqtt_broker.py, a private port) and the real logrotate.

Each test's docstring quotes the README sentence it guards."""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr
import yaml
from daemon_run import read_jsonl
from mqtt_broker import Broker, Collector, free_port

from noisewatch.bundle import default_model_path, load_bundle
from noisewatch.config import Config
from noisewatch.daemon.messages import Event, Level, Message, Scores, Started
from noisewatch.daemon.pipeline import Pipeline

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
BENCHMARKS = ROOT / "BENCHMARKS.md"
SCENE = ROOT / "samples" / "scene.flac"
"""33 s of real audio: a siren at 5-9 s, a dog bark at 14-17 s, a jackhammer at 22-25 s."""
CLI = [sys.executable, "-m", "noisewatch.cli"]
BLOCK = 4096


def readme_text() -> str:
    return " ".join(README.read_text().split())


def scene_audio(rate: int) -> np.ndarray:
    audio, source_rate = sf.read(str(SCENE), dtype="float32", always_2d=True)
    return soxr.resample(audio.mean(axis=1), source_rate, rate).astype(np.float32)


def replayed(audio: np.ndarray, rate: int, folder: Path) -> tuple[subprocess.CompletedProcess[str], Path]:
    """``noisewatch run`` with the default config on ``audio`` (as a WAV file), as fast as it goes: the finished
    process (exit 0) and its JSON-lines file."""
    path, out = folder / "audio.wav", folder / "out.jsonl"
    sf.write(str(path), audio, rate, subtype="FLOAT")
    ran = subprocess.run([*CLI, "run", "--input", str(path), "--speed", "0", "--jsonl", str(out)],
                         capture_output=True, text=True, timeout=90)
    assert ran.returncode == 0, ran.stderr[-3000:]
    return ran, out


def run_reloaded(config: Path, audio: Path, speed: str, out: Path, ready: Callable[[list[dict]], bool],
                 new_config: str | None) -> str:
    """``noisewatch run`` replaying ``audio`` at ``speed`` into ``out``; once ``ready`` holds of its messages, the
    config rewritten as ``new_config`` (None: left as it is) and reloaded. Its stderr, once it ended with exit 0."""
    proc = subprocess.Popen([*CLI, "run", "--config", str(config), "--input", str(audio), "--speed", speed,
                             "--jsonl", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while not ready(read_jsonl(out)):
            assert time.monotonic() < deadline, "never ready for the reload"
            time.sleep(0.05)
        if new_config is not None:
            config.write_text(new_config)
        proc.send_signal(signal.SIGHUP)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err[-3000:]
    return err


def env_without_password(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("NOISEWATCH_MQTT_PASSWORD", "CREDENTIALS_DIRECTORY")}
    return {**env, **extra}


# --- README l.153-156: the MQTT password from the systemd credential ----------------------------------------------


@pytest.mark.broker
def test_the_systemd_credential_is_the_password_check_config_and_run_give_the_broker(tmp_path: Path) -> None:
    """README: "The MQTT password never sits in the YAML: `$NOISEWATCH_MQTT_PASSWORD`, the systemd credential
    `noisewatch_mqtt_password` (only the service gets it ...), or `mqtt.password_file`; `check-config` and `run`
    warn about a user without a password, and `check-config` connects once, as `run` would, and says whether the
    broker took the connection".

    The installed service's only source of the password is the credential ($CREDENTIALS_DIRECTORY, as systemd's
    LoadCredential= gives it): a real mosquitto that takes the user with that password alone. check-config must
    say the broker took it (and warn of no missing password), ``run`` must deliver the scene's events with it, and a
    wrong credential must be refused (the control: the credential is what is sent)."""
    broker = Broker(users={"kitchen": "cred-pw-1"}).start()
    collector = None
    try:
        config = tmp_path / "c.yaml"
        config.write_text(yaml.safe_dump({
            "device_id": "credtest",
            "mqtt": {"enabled": True, "host": "127.0.0.1", "port": broker.port, "username": "kitchen",
                     "client_id": f"cred-{uuid.uuid4().hex[:6]}", "state_directory": str(tmp_path / "state"),
                     "spool": {"directory": str(tmp_path / "spool")}, "homeassistant": {"discovery": False}}}))
        credentials = tmp_path / "credentials"
        credentials.mkdir(mode=0o700)
        (credentials / "noisewatch_mqtt_password").write_text("cred-pw-1\n")
        env = env_without_password(CREDENTIALS_DIRECTORY=str(credentials))

        checked = subprocess.run([*CLI, "check-config", str(config)], capture_output=True, text=True, timeout=60,
                                 env=env)
        assert checked.returncode == 0 and "took the connection" in checked.stdout, (checked.stdout, checked.stderr)
        assert "has no password" not in checked.stderr, checked.stderr

        collector = Collector(broker.port, username="kitchen", password="cred-pw-1")
        ran = subprocess.run([*CLI, "run", "--config", str(config), "--input", str(SCENE), "--speed", "0",
                              "--jsonl", str(tmp_path / "out.jsonl")], capture_output=True, text=True, timeout=90,
                             env=env)
        assert ran.returncode == 0, ran.stderr[-3000:]
        assert "has no password" not in ran.stderr, ran.stderr[-3000:]
        logged = [m["id"] for m in read_jsonl(tmp_path / "out.jsonl") if m["type"] == "event"]
        assert len(logged) == 3, logged

        def delivered(c: Collector) -> set[str]:
            found = set()
            for topic, payload, _ in list(c.messages):
                if topic.startswith("noisewatch/credtest/"):
                    try:
                        message = json.loads(payload)
                    except ValueError:
                        continue
                    if isinstance(message, dict) and message.get("type") == "event":
                        found.add(message["id"])
            return found

        assert collector.wait_for(lambda c: delivered(c) >= set(logged), timeout=20), (delivered(collector), logged)

        (credentials / "noisewatch_mqtt_password").write_text("wrong-pw\n")
        refused = subprocess.run([*CLI, "check-config", str(config)], capture_output=True, text=True, timeout=60,
                                 env=env)
        assert refused.returncode == 0 and "took the connection" not in refused.stdout, refused.stdout
        assert f"broker 127.0.0.1:{broker.port} refused the connection: Not authorized" in refused.stderr, refused.stderr
    finally:
        if collector is not None:
            collector.close()
        broker.cleanup()


# --- README l.88: each closed event logged at INFO ---------------------------------------------------------------


def test_each_closed_event_is_also_logged_at_info(tmp_path: Path) -> None:
    """README: "Each closed event is also logged at INFO (`journalctl -u noisewatch`)."

    The scene's three sounds and a `loud` tone (an event too, confidence null): one INFO line for each event the
    JSON lines hold, naming its label and its start, and none for an event that is not there."""
    rate = 22050
    scene = sf.read(str(SCENE), dtype="float32")[0]
    t = np.arange(4 * rate) / rate
    tone = (0.7 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32)  # -6 dBFS for 4 s: a `loud` event
    audio = np.concatenate([scene, tone, np.zeros(3 * rate, dtype=np.float32)])
    ran, out = replayed(audio, rate, tmp_path)
    closed = [m for m in read_jsonl(out) if m["type"] == "event"]
    assert {m["label"] for m in closed} >= {"siren", "dog_bark", "jackhammer", "loud"}, closed
    heard = [line for line in ran.stderr.splitlines() if re.search(r"\bheard \S+ from ", line)]
    assert all(" INFO " in line for line in heard), heard
    said = sorted(re.search(r"heard (\S+) from (\S+) ", line).groups() for line in heard)  # type: ignore[union-attr]
    assert said == sorted((m["label"], m["start"]) for m in closed), (said, closed)


# --- README l.94: scores at most every scores.interval_s, 1 s by default, 0 for every window ----------------------


def scores_of(config: dict) -> tuple[list[Scores], Pipeline]:
    bundle = load_bundle(default_model_path())
    pipeline = Pipeline.from_config(Config.model_validate(config), bundle, bundle.open_model())
    audio = scene_audio(bundle.features.sample_rate)
    messages: list[Message] = [m for i in range(0, len(audio), BLOCK) for m in pipeline.process(audio[i : i + BLOCK])]
    messages += pipeline.finish()
    return [m for m in messages if isinstance(m, Scores)], pipeline


def test_scores_come_at_most_every_interval_1_s_by_default_and_for_every_window_at_0() -> None:
    """README: "`scores` (a window's top-3 scores at most every `scores.interval_s`, 1 s by default, 0 for every
    window; off by default, for tuning thresholds)".

    The real model over the scene (no window gated): at 0 a report for every window, a hop apart; by default
    (1 s) never two within a second, and none skipped beyond that (the next window that is due); at 2.5 s, never
    two within 2.5 s."""
    assert Config().audio.hop_s == 0.5 and not Config().scores.enabled
    every, pipeline = scores_of({"scores": {"enabled": True, "interval_s": 0}})
    windows = pipeline.counters.windows - pipeline.counters.gated
    assert windows > 50 and len(every) == windows, (len(every), windows)
    offsets = [s.offset_s for s in every]
    step = np.diff(offsets)
    assert np.allclose(step, step[0], atol=0.002) and 0.5 <= step[0] <= 0.52, step  # 0.511 s: whole STFT hops

    assert Config().scores.interval_s == 1.0
    default, _ = scores_of({"scores": {"enabled": True}})
    gaps = np.diff([s.offset_s for s in default])
    assert len(default) >= 25 and gaps.min() >= 1.0 - 1e-6, gaps
    assert gaps.max() <= 1.0 + step[0] + 0.002, gaps  # the first window at or past the second: none skipped

    sparse, _ = scores_of({"scores": {"enabled": True, "interval_s": 2.5}})
    sparse_gaps = np.diff([s.offset_s for s in sparse])
    assert len(sparse) >= 10 and sparse_gaps.min() >= 2.5 - 1e-6, sparse_gaps


# --- README l.104-106: the installed logrotate rule ---------------------------------------------------------------


def logrotate_rule(tmp_path: Path) -> tuple[Path, Path, Path, Path]:
    """The shipped rule, pointed at a folder of ours; its reload is replaced by a marker (one line a rotation)."""
    folder = tmp_path / "log"
    folder.mkdir()
    rule = (ROOT / "systemd" / "noisewatch.logrotate").read_text()
    assert rule.count("/var/log/noisewatch/*.jsonl") == 1 and rule.count("systemctl reload noisewatch") == 1, rule
    post = tmp_path / "postrotate.log"
    rule = rule.replace("/var/log/noisewatch/", f"{folder}/").replace("    su noisewatch noisewatch\n", "")
    rule = rule.replace("systemctl reload noisewatch.service", f"(echo reload >> {post})")
    (tmp_path / "rule").write_text(rule)
    return tmp_path / "rule", tmp_path / "state", folder / "messages.jsonl", post


def logrotate(rule: Path, state: Path, *flags: str) -> None:
    done = subprocess.run(["logrotate", *flags, "--state", str(state), str(rule)], capture_output=True, text=True,
                          timeout=30)
    assert done.returncode == 0, done.stderr


@pytest.mark.skipif(shutil.which("logrotate") is None, reason="logrotate not installed (scripts/bootstrap.sh --test installs it)")
def test_the_installed_logrotate_rule_rotates_daily_or_at_50_mb_keeping_14_compressed(tmp_path: Path) -> None:
    """README: "the installer puts such a rule in `/etc/logrotate.d/noisewatch` for `/var/log/noisewatch/*.jsonl`,
    daily or at 50 MB, 14 kept, compressed" (rotated "with `postrotate systemctl reload noisewatch`").

    The shipped rule run by the real logrotate: a file under 50 MB is left alone the day it was first seen, one
    over 50 MB is rotated at once (not a day later), each rotation reloads the listener, and after 16 rotations 14
    are kept, all but the newest gzip-compressed (delaycompress: the newest stays readable while the listener may
    still write to it)."""
    rule, state, path, post = logrotate_rule(tmp_path)
    path.write_text('{"type":"status"}\n')
    logrotate(rule, state)  # the first look at the file: noted, not rotated
    os.truncate(path, 49 * 1024 * 1024)  # sparse: no disk used
    logrotate(rule, state)
    assert not path.with_name("messages.jsonl.1").exists(), "rotated under 50 MB on the same day"
    os.truncate(path, 51 * 1024 * 1024)
    logrotate(rule, state)
    assert path.with_name("messages.jsonl.1").stat().st_size == 51 * 1024 * 1024, "not rotated at 51 MB"
    assert post.read_text().splitlines() == ["reload"]

    path.with_name("messages.jsonl.1").unlink()  # 51 MB of zeros would take a while to compress: not the point
    for n in range(16):
        path.write_text(f'{{"rotation":{n}}}\n')
        logrotate(rule, state, "--force")
    kept = sorted(p.name for p in path.parent.iterdir())
    assert kept == sorted(["messages.jsonl.1"] + [f"messages.jsonl.{k}.gz" for k in range(2, 15)]), kept
    assert path.with_name("messages.jsonl.1").read_text() == '{"rotation":15}\n'
    for k in range(2, 15):
        with gzip.open(path.with_name(f"messages.jsonl.{k}.gz"), "rt") as rotated:
            assert rotated.read() == f'{{"rotation":{16 - k}}}\n', k
    assert len(post.read_text().splitlines()) == 1 + 16


# --- README l.106: "a file left alone grows about 1 MB a day" ----------------------------------------------------


def test_a_json_lines_file_left_alone_grows_about_1_mb_a_day(tmp_path: Path) -> None:
    """README: "a file left alone grows about 1 MB a day".

    Left alone (no sound): the default config writes a `level` report every `levels.interval_s` and a `stats`
    report every `stats.interval_s`, and nothing else (`scores` off). The real daemon's lines for a quiet room,
    times the reports a day: about 1 MB (0.6-1.6 MB)."""
    rate = 22050
    quiet = (10 ** (-60 / 20) * np.random.default_rng(1).standard_normal(70 * rate)).astype(np.float32)
    ran, out = replayed(quiet, rate, tmp_path)
    lines = out.read_text().splitlines(keepends=True)
    kinds = [json.loads(line)["type"] for line in lines]
    assert "event" not in kinds and "scores" not in kinds, kinds
    level = max(len(line.encode()) for line, kind in zip(lines, kinds) if kind == "level")
    stats = max(len(line.encode()) for line, kind in zip(lines, kinds) if kind == "stats")
    config = Config()
    per_day = 86400 / config.levels.interval_s * level + 86400 / config.stats.interval_s * stats
    assert 0.6e6 <= per_day <= 1.6e6, f"{per_day / 1e6:.2f} MB a day ({level} B a level, {stats} B a report)"


# --- README l.112-113: a reload that changes the levels section starts a first 5 s period -------------------------


def test_a_reload_that_changes_the_levels_section_starts_a_first_5_s_period() -> None:
    """README: "A reload that does not reopen the microphone is not a gap: ... a change of the `levels` section a first 5 s level period:
    the part period before the reload is reported over its whole seconds".

    Driven as the service drives a reload (the new pipeline takes over, the old one finishes), on the real model
    and the scene, the reload at 12.5 s: the part period before it is 5-12 s (7 whole seconds, reported as the old
    pipeline closes), the new settings' first period is 12.5-17.5 s (5 s), and the next ones are of the new
    interval (10 s)."""
    bundle = load_bundle(default_model_path())
    model = bundle.open_model()
    rate = bundle.features.sample_rate
    audio = scene_audio(rate)
    reload_s = 12.5
    cut = int(reload_s * rate)
    old = Pipeline.from_config(Config(), bundle, model)
    first = [m for i in range(0, cut, BLOCK) for m in old.process(audio[i : min(i + BLOCK, cut)])]
    new = Pipeline.from_config(Config.model_validate({"levels": {"interval_s": 10.0}}), bundle, model)
    new.take_over(old)
    closing = old.finish()
    rest = [m for i in range(cut, len(audio), BLOCK) for m in new.process(audio[i : i + BLOCK])]

    def periods(messages: list[Message]) -> list[tuple[float, float]]:
        return [(m.offset_s, m.period_s) for m in messages if isinstance(m, Level)]

    assert periods(first) == [(0.0, 5)], periods(first)
    assert periods(closing) == [(5.0, 7)], periods(closing)
    assert periods(rest)[:2] == [(reload_s, 5), (reload_s + 5, 10)], periods(rest)


# --- README l.216-239: the model section describes the shipped bundle and the command that made it ----------------


def test_the_readme_s_model_description_and_training_command_are_the_shipped_bundle_s() -> None:
    """README: "The shipped model ... is one small MLP over 50 MFCCs (mean and standard deviation over a 4 s window,
    plus how the first 8 of them fluctuate and repeat over the window: modulation energy in 7 bands up to 21.5 Hz
    and autocorrelation peaks at lags of 0.02-2 s) and the spectral shape of 6 mel-band groups ..., int8, ...
    trained on UrbanSound8K folds 1-2", then the `noisewatch train` and `noisewatch convert` commands that make it.

    Each figure against the shipped sidecar's own feature settings, and the README's train command against the one
    the bundle records in its provenance (same options, same values, in any order), the convert command's variant
    and version against the bundle's: a retrained model, docs left as they were, fails here."""
    text = readme_text()
    sidecar = json.loads(default_model_path().read_text())
    features = sidecar["features"]
    frame_rate = features["sample_rate"] / features["hop_length"]
    assert f"one small MLP over {features['n_mfcc']} MFCCs" in text
    assert features["stats"][:2] == ["mean", "std"] and f"over a {features['window_s']:g} s window" in text
    assert f"how the first {features['temporal_mfccs']} of them fluctuate" in text
    bands = len(features["modulation_bands_hz"])  # edges from the first; the last band runs to half the frame rate
    assert f"modulation energy in {bands} bands up to {frame_rate / 2:.1f} Hz" in text
    lags = features["periodicity_lags_s"]
    assert f"lags of {min(lags):g}-{max(lags):g} s" in text
    assert f"spectral shape of {features['shape_groups']} mel-band groups" in text
    assert {"modulation", "periodicity", "spectral_shape"} <= set(features["stats"])
    folds = sidecar["provenance"]["folds"]
    assert f"trained on UrbanSound8K folds {min(folds)}-{max(folds)}" in text and folds == list(range(1, 3))
    assert f"int8, {(default_model_path().parent / sidecar['tflite']).stat().st_size / 1e6:.2f} MB" in text
    assert sidecar["variant"] == "int8"

    def options(command: str) -> dict[str, str]:
        words = command.split()
        found: dict[str, str] = {}
        for i, word in enumerate(words):
            if word.startswith("--"):
                value = words[i + 1] if i + 1 < len(words) and not words[i + 1].startswith("--") else ""
                assert word not in found, word
                found[word] = value
        return found

    train = re.search(r"noisewatch train (.*?) noisewatch convert", text)
    assert train, "no train command in the README"
    readme_train = options(train.group(1).replace("\\", " "))
    shipped_train = options(sidecar["provenance"]["command"].split("noisewatch train", 1)[1])
    assert readme_train == shipped_train, {k: (readme_train.get(k), shipped_train.get(k))
                                           for k in set(readme_train) | set(shipped_train)
                                           if readme_train.get(k) != shipped_train.get(k)}
    convert = re.search(r"noisewatch convert (.*?) noisewatch evaluate", text)
    assert convert, "no convert command in the README"
    readme_convert = options(convert.group(1))
    assert readme_convert["--variant"] == sidecar["variant"] and readme_convert["--version"] == sidecar["version"]
    assert f"{sidecar['name']}@{sidecar['version']}" in text  # the README's example messages name this model


# --- README l.146-147: a threshold set from Home Assistant quiets a label from the next window ---------------------


def quiet_then_dog(path: Path, lead_s: float) -> Path:
    """``lead_s`` of a quiet room (-60 dBFS hiss), then the scene's dog bark (its 12-19 s: the bark at 14-17 s)."""
    rate = 22050
    scene = sf.read(str(SCENE), dtype="float32")[0]
    hiss = (10 ** (-60 / 20) * np.random.default_rng(7).standard_normal(int(lead_s * rate))).astype(np.float32)
    tail = (10 ** (-60 / 20) * np.random.default_rng(8).standard_normal(3 * rate)).astype(np.float32)
    sf.write(str(path), np.concatenate([hiss, scene[12 * rate : 19 * rate], tail]), rate, subtype="FLOAT")
    return path


@pytest.mark.broker
def test_a_threshold_set_over_mqtt_quiets_its_label_in_the_running_listener(tmp_path: Path, broker: Broker) -> None:
    """README: "a threshold `number` per label: change it from the phone to quiet a false alarm; it applies from the
    next window and is kept across restarts (`mqtt.state_directory`)".

    The real daemon and a real mosquitto. The same recording (a quiet room, then a dog bark) gives a `dog_bark`
    event as it is; replayed again (4x real time), with the dog_bark threshold set to 1 (off) on its command topic,
    as Home Assistant's number entity sends it, while the room is still quiet, it gives none: the running
    detector takes the value, not only the retained topic that shows it. The value is in the state folder."""
    lead_s = 40.0  # 10 s at 4x for the start, the connection, the command and its echo (20 s left a slow machine 5)
    audio = quiet_then_dog(tmp_path / "quiet-then-dog.wav", lead_s=lead_s)
    prefix = "noisewatch/h1thr"
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({
        "device_id": "h1thr",
        "scores": {"enabled": True, "interval_s": 0},
        "mqtt": {"enabled": True, "host": "127.0.0.1", "port": broker.port,
                 "client_id": f"h1thr-{uuid.uuid4().hex[:6]}", "state_directory": str(tmp_path / "state"),
                 "spool": {"directory": str(tmp_path / "spool")}}}))
    as_it_is = subprocess.run([*CLI, "run", "--config", str(config), "--input", str(audio), "--speed", "0",
                               "--jsonl", str(tmp_path / "before.jsonl")], capture_output=True, text=True, timeout=90)
    assert as_it_is.returncode == 0, as_it_is.stderr[-3000:]
    heard = [m for m in read_jsonl(tmp_path / "before.jsonl") if m["type"] == "event" and m["label"] == "dog_bark"]
    assert len(heard) == 1 and heard[0]["offset_s"] > lead_s, heard  # the control: the bark is heard as it is
    bark_s = heard[0]["offset_s"]

    collector = Collector(broker.port, client_id=f"h1c-{uuid.uuid4().hex[:6]}")
    out = tmp_path / "after.jsonl"
    proc = subprocess.Popen([*CLI, "run", "--config", str(config), "--input", str(audio), "--speed", "4",
                             "--jsonl", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        online = len(collector.on(f"{prefix}/status"))  # the first run's retained status may be replayed
        assert collector.wait_for(lambda c: c.on(f"{prefix}/status")[online:][-1:] == [b"online"], timeout=30)
        collector.client.publish(f"{prefix}/threshold/dog_bark/set", "1", qos=1)
        assert collector.wait_for(lambda c: c.on(f"{prefix}/threshold/dog_bark")[-1:] == [b"1"], timeout=10), (
            collector.on(f"{prefix}/threshold/dog_bark"))
        windows = [m["offset_s"] for m in read_jsonl(out) if m["type"] == "scores"]
        # set while the room was still quiet: no window holding the bark had been classified yet
        assert not windows or windows[-1] < bark_s, f"set too late (window at {windows[-1]} s, bark at {bark_s} s)"
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        collector.close()
    assert proc.returncode == 0, err[-3000:]
    messages = read_jsonl(out)
    assert [m["offset_s"] for m in messages if m["type"] == "scores"][-1] > bark_s + 3, "the replay went to its end"
    assert not [m for m in messages if m["type"] in ("started", "event") and m["label"] == "dog_bark"], messages
    assert json.loads((tmp_path / "state" / "thresholds.json").read_text()) == {"dog_bark": 1.0}


# --- README l.172-175: a full disk at check-config -----------------------------------------------------------------


def mount_tmpfs(mount_point: Path, options: str) -> None:
    mount_point.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mount_point)], capture_output=True,
                          text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root or CAP_SYS_ADMIN): {done.stderr.strip()}")


def test_check_config_passes_a_full_disk_warning_only_where_no_empty_file_can_be_made(tmp_path: Path) -> None:
    """README: "A JSON-lines file, spool folder or state folder on a read-only file system ... or a full one is a
    disk fault, not a config error: `check-config` passes with a warning (a full disk that can still make an empty
    file: without one)".

    Two real full disks (tmpfs) holding the three: one out of blocks (an empty file can still be made: no warning),
    one out of inodes (nothing can be made: a warning for each of the three). check-config exits 0 for both."""
    disks = {"blocks": tmp_path / "no_blocks", "inodes": tmp_path / "no_inodes"}
    mount_tmpfs(disks["blocks"], "size=64k,mode=0700")
    try:
        mount_tmpfs(disks["inodes"], "size=1m,nr_inodes=8,mode=0700")
    except BaseException:
        subprocess.run(["umount", "-l", str(disks["blocks"])], check=True)
        raise
    try:
        results = {}
        for kind, disk in disks.items():
            for folder in ("log", "spool", "state"):
                (disk / folder).mkdir()
            if kind == "blocks":
                with contextlib.suppress(OSError), open(disk / "filler", "wb") as filler:
                    while True:
                        filler.write(b"\0" * 4096)
                        filler.flush()
            else:
                for n in range(16):
                    with contextlib.suppress(OSError):
                        (disk / f"f{n}").touch()
            for probe in ("log/probe", "spool/probe"):  # the disk is what it is said to be
                if kind == "blocks":
                    (disk / probe).touch()
                    (disk / probe).unlink()
                else:
                    with pytest.raises(OSError):
                        (disk / probe).touch()
            config = tmp_path / f"{kind}.yaml"
            config.write_text(yaml.safe_dump({
                "jsonl": {"path": str(disk / "log" / "out.jsonl")},
                "mqtt": {"enabled": True, "host": "127.0.0.1", "port": free_port(),
                         "state_directory": str(disk / "state"), "spool": {"directory": str(disk / "spool")}}}))
            results[kind] = subprocess.run([*CLI, "check-config", str(config)], capture_output=True, text=True,
                                           timeout=60)
    finally:
        for disk in disks.values():
            subprocess.run(["umount", "-l", str(disk)], check=True)
    for kind, done in results.items():
        assert done.returncode == 0 and ": ok" in done.stdout, (kind, done.stderr)
    disk_lines = lambda done: [line for line in done.stderr.splitlines() if "full disk" in line]  # noqa: E731
    assert disk_lines(results["blocks"]) == [], results["blocks"].stderr
    said = disk_lines(results["inodes"])
    assert len(said) == 3 and all(line.startswith("noisewatch: warning: ") for line in said), results["inodes"].stderr
    for key in ("jsonl.path", "mqtt.spool.directory", "mqtt.state_directory"):
        assert sum(f" {key} = " in line for line in said) == 1, (key, said)


# --- README l.114-116: a reload of `{}` takes every default --------------------------------------------------------


def test_a_reload_of_an_empty_mapping_takes_every_default(tmp_path: Path) -> None:
    """README: "A new config ... with no settings in it (empty or comments only, as a file being written in place is
    for a moment: write `{}` for every default), is logged and the running set-up kept untouched".

    The real daemon replaying a quiet room with `scores` on for every window; the file rewritten as `{}` and
    reloaded: the reload is applied (scores back to their default, off: no scores report after the point the reload
    came, which its health report gives), where an empty
    file in its place is refused and the set-up kept (scores go on)."""
    rate = 22050
    quiet = (10 ** (-60 / 20) * np.random.default_rng(3).standard_normal(30 * rate)).astype(np.float32)
    audio = tmp_path / "quiet.wav"
    sf.write(str(audio), quiet, rate, subtype="FLOAT")

    def reload_to(text: str, name: str) -> tuple[list[dict], str]:
        config, out = tmp_path / f"{name}.yaml", tmp_path / f"{name}.jsonl"
        config.write_text("scores:\n  enabled: true\n  interval_s: 0\n")
        err = run_reloaded(config, audio, "6", out, lambda ms: any(m["type"] == "scores" for m in ms), text)
        return read_jsonl(out), err

    messages, err = reload_to("{}\n", "mapping")
    reloaded = [line for line in err.splitlines() if "configuration reloaded" in line]
    assert len(reloaded) == 1 and "scores.enabled: true -> false" in reloaded[0], err[-3000:]
    # a health report at the start, one at the reload (where the audio was then), one at the stop
    start, at_reload, stop = [m["audio_s"] for m in messages if m["type"] == "stats"]
    assert at_reload < stop - 1.5 and stop > 29, (start, at_reload, stop)
    scores = [m["offset_s"] for m in messages if m["type"] == "scores"]
    assert scores and scores[-1] <= at_reload + 1.0, (scores[-3:], at_reload)  # none once the defaults are in force

    messages, err = reload_to("", "emptied")
    assert "configuration reloaded" not in err and "reload refused" in err, err[-3000:]
    assert [m["offset_s"] for m in messages if m["type"] == "scores"][-1] > 28, "the running set-up was kept"


# --- README l.253-260: the performance figures are BENCHMARKS.md's --------------------------------------------------


def test_the_readme_s_performance_figures_are_those_of_the_current_benchmark_run() -> None:
    """README: "On this 2-core x86 machine (figures and commands in [BENCHMARKS.md](BENCHMARKS.md)), idle: ... peak
    RSS 74-84 MiB ...; 0.24-0.6 s from start to the first window ... Against YAMNet run as Frigate runs it, on the
    same file: about half its instructions per second of audio, but 1.3-1.8x its CPU time with MQTT off and 1.5-2.4x
    with MQTT on, in the last runs".

    The benchmark cannot be rerun in a test (the YAMNet peer, an idle machine): the README's ranges must at least
    hold the figures of BENCHMARKS.md's current run (its first table, "the last run of `bench/floor.py`"), or the
    README quotes figures no run gave any more."""
    text = readme_text()
    bench = BENCHMARKS.read_text()
    current = bench[bench.index("## Current"):]
    current = current[: current.index("\n## ", 1)]
    rows = {line.split("|")[1].strip(): line.split("|")[2].strip() for line in current.splitlines()
            if line.startswith("| ") and not line.startswith("| figure") and line.count("|") >= 4}

    def figure(row_start: str, unit: str) -> float:
        (cell,) = [cell for name, cell in rows.items() if name.startswith(row_start)]
        found = re.search(rf"([0-9.]+) ?{re.escape(unit)}", cell.replace("*", ""))
        assert found, (row_start, cell)
        return float(found.group(1))

    def readme_range(pattern: str) -> tuple[float, float]:
        found = re.search(pattern, text)
        assert found, pattern
        return float(found.group(1)), float(found.group(2))

    measured = {
        "CPU time, MQTT off": (figure("CPU per second of audio", "x"),
                               readme_range(r"([0-9.]+)-([0-9.]+)x its CPU time with MQTT off")),
        "CPU time, MQTT on": (figure("the same with MQTT on", "x"),
                              readme_range(r"and ([0-9.]+)-([0-9.]+)x with MQTT on")),
        "peak RSS": (figure("peak RSS", "MiB"), readme_range(r"peak RSS ([0-9.]+)-([0-9.]+) MiB")),
        "start-up": (figure("start-up to first window", "s"),
                     readme_range(r"([0-9.]+)-([0-9.]+) s from start to the first window")),
    }
    instructions = figure("instructions per second of audio", "x")
    assert "about half its instructions per second of audio" in text and 0.35 <= instructions <= 0.65, instructions
    outside = {name: (value, bounds) for name, (value, bounds) in measured.items()
               if not bounds[0] <= value <= bounds[1]}
    assert not outside, f"BENCHMARKS.md's current run outside the README's ranges: {outside}"


# --- README l.105-106: where the service may write ----------------------------------------------------------------


def test_the_service_may_write_in_its_log_and_state_folders_only_and_its_config_keeps_to_them() -> None:
    """README: "the service may write there [/var/log/noisewatch] and in `/var/lib/noisewatch` only".

    The unit as installed (systemd/noisewatch.service): the whole file system read-only (ProtectSystem=strict, home
    folders hidden, a private /tmp), no folder opened for writing but its StateDirectory= and LogsDirectory= (both
    `noisewatch`: /var/lib/noisewatch and /var/log/noisewatch); and the installed config's folders the service
    writes (the spool, the state beside it) are in them, so the hardening does not turn them into a disk fault."""
    settings: dict[str, list[str]] = {}
    for line in (ROOT / "systemd" / "noisewatch.service").read_text().splitlines():
        if "=" in line and not line.lstrip().startswith(("#", "[")):
            key, value = line.split("=", 1)
            settings.setdefault(key.strip(), []).append(value.strip())
    assert settings["ProtectSystem"] == ["strict"] and settings["ProtectHome"] == ["yes"], settings
    assert settings["PrivateTmp"] == ["yes"]
    assert not {"ReadWritePaths", "ReadWriteDirectories", "BindPaths", "CacheDirectory", "RuntimeDirectory"} & set(
        settings), sorted(settings)
    assert settings["StateDirectory"] == ["noisewatch"] and settings["LogsDirectory"] == ["noisewatch"], settings
    assert settings.get("ConfigurationDirectory", ["noisewatch"]) == ["noisewatch"]  # kept read-only by systemd
    installed = yaml.safe_load((ROOT / "config" / "noisewatch.yaml").read_text())
    config = Config.model_validate(installed)
    writable = (Path("/var/lib/noisewatch"), Path("/var/log/noisewatch"))
    for path in (config.mqtt.spool.directory, config.mqtt.state_path):
        assert any(path == root or root in path.parents for root in writable), path
    rule = (ROOT / "systemd" / "noisewatch.logrotate").read_text()
    assert "/var/log/noisewatch/*.jsonl" in rule  # the JSON-lines file the README gives the service goes there


def test_scores_keep_their_interval_across_a_reload_that_changes_nothing(tmp_path: Path) -> None:
    """README: "`scores` (a window's top-3 scores at most every `scores.interval_s` ...)", and "A reload that does not
    reopen the microphone is not a gap: the windows, the level period and open events go on under the new settings".

    The real daemon replaying a quiet room (30 s, 6x real time) with a scores report at most every 20 s, reloaded
    (`systemctl reload`, as logrotate does every night) with the same file just after its first report: the next
    report may come 20 s after that one at the earliest, as without the reload."""
    rate = 22050
    quiet = (10 ** (-60 / 20) * np.random.default_rng(5).standard_normal(30 * rate)).astype(np.float32)
    audio = tmp_path / "quiet.wav"
    sf.write(str(audio), quiet, rate, subtype="FLOAT")
    config, out = tmp_path / "c.yaml", tmp_path / "out.jsonl"
    config.write_text("scores:\n  enabled: true\n  interval_s: 20\n")
    err = run_reloaded(config, audio, "6", out, lambda ms: any(m["type"] == "scores" for m in ms), None)
    assert len([line for line in err.splitlines() if "configuration reloaded" in line]) == 1, err[-3000:]
    messages = read_jsonl(out)
    start, at_reload, stop = [m["audio_s"] for m in messages if m["type"] == "stats"]
    assert at_reload < 23 and stop > 29, (start, at_reload, stop)  # reloaded before a second report was due
    offsets = [m["offset_s"] for m in messages if m["type"] == "scores"]
    assert len(offsets) == 2 and offsets[1] - offsets[0] >= 20.0 - 1e-6, f"scores at {offsets} s (every 20 s at most;" \
        " the first window's, then one 20 s on: the reload neither stopped them nor sent one sooner)"


# --- README l.111-112: a loud sound heard at a reload stays one event ------------------------------------------------


def test_a_loud_sound_going_on_at_a_reload_that_retunes_loudness_stays_one_event(tmp_path: Path) -> None:
    """README: "A reload that does not reopen the microphone is not a gap: the windows, the level period and open
    events go on under the new settings (a sound heard at that moment stays one event ...)"; `loud` events are "the 1 s level above
    `loudness.threshold_dbfs` for `loudness.min_duration_s`, same schema as other events".

    The real daemon replaying (4x real time) a 1 kHz tone at -3 dBFS from 2 s to 20 s over a quiet room. Once its
    `loud` event has started, the config is reloaded with a lower `loudness.threshold_dbfs` (-12 instead of -10):
    the tone is loud under both, so it stays one `loud` event (one `started`, one `event` from 2 s to 20 s), as a
    siren stays one event across a reload that changes its threshold."""
    rate = 22050
    t = np.arange(24 * rate) / rate
    audio = (10 ** (-60 / 20) * np.random.default_rng(9).standard_normal(len(t))).astype(np.float32)
    audio[2 * rate : 20 * rate] += (0.7 * np.sin(2 * np.pi * 1000 * t[2 * rate : 20 * rate])).astype(np.float32)
    path = tmp_path / "tone.wav"
    sf.write(str(path), audio, rate, subtype="FLOAT")
    config, out = tmp_path / "c.yaml", tmp_path / "out.jsonl"
    config.write_text("loudness:\n  threshold_dbfs: -10\n")
    err = run_reloaded(config, path, "4", out, lambda ms: any(m["type"] == "started" and m["label"] == "loud" for m in ms),
                       "loudness:\n  threshold_dbfs: -12\n")
    (reloaded,) = [line for line in err.splitlines() if "configuration reloaded" in line]
    assert "loudness.threshold_dbfs: -10.0 -> -12.0" in reloaded, reloaded
    messages = read_jsonl(out)
    start, at_reload, stop = [m["audio_s"] for m in messages if m["type"] == "stats"]
    assert 4 <= at_reload < 19, (start, at_reload, stop)  # reloaded while the tone went on
    loud = [(m["type"], m["offset_s"], m.get("duration_s")) for m in messages
            if m["type"] in ("started", "event") and m["label"] == "loud"]
    assert len(loud) == 2 and loud[0][:2] == ("started", 2.0) and loud[1][:2] == ("event", 2.0), loud
    assert abs(loud[1][2] - 18.0) <= 1.0, loud


def test_a_siren_going_on_at_a_reload_that_brings_a_new_model_ends_and_the_new_model_goes_on_after_it(
        tmp_path: Path) -> None:
    """README: "a sound heard at that moment stays one event; but a new model, whose scores are its own, ends the open
    events where they were last heard and reports what it hears after as events of its own, none starting before
    those ended".

    Driven as the service drives a reload (the new pipeline takes over, the old one finishes) on the real scene, the
    siren (5-9 s) open at 7.5 s, when a new model bundle comes in: the shipped weights under another version (the
    same features, so even the windows go on). The old model's siren ends where it was last heard; the new model's
    starts there, not inside it (its onset, placed back in its window, started it at 4.98 s: two sirens at once), and
    goes on to the siren's end. (Carried over, an event of one model went on under the other's name with the first
    one's confidence, and the old model's scores, carried into the new one's smoothing, started an event neither
    heard: tests/test_h4_review.py.)"""
    shipped = default_model_path()
    sidecar = json.loads(shipped.read_text())
    shutil.copy(shipped.parent / sidecar["tflite"], tmp_path / sidecar["tflite"])
    sidecar["version"] += ".h1"
    (tmp_path / shipped.name).write_text(json.dumps(sidecar))
    old_bundle, new_bundle = load_bundle(shipped), load_bundle(tmp_path / shipped.name)
    assert old_bundle.ident != new_bundle.ident and old_bundle.features == new_bundle.features
    rate = old_bundle.features.sample_rate
    audio = scene_audio(rate)
    cut = int(7.5 * rate)
    old = Pipeline.from_config(Config(), old_bundle, old_bundle.open_model())
    first = [m for i in range(0, cut, BLOCK) for m in old.process(audio[i : min(i + BLOCK, cut)])]
    assert [m.label for m in first if isinstance(m, Started)] == ["siren"], first  # open at the reload
    new = Pipeline.from_config(Config(), new_bundle, new_bundle.open_model())
    new.take_over(old)
    closing = old.finish()
    rest = [m for i in range(cut, len(audio), BLOCK) for m in new.process(audio[i : i + BLOCK])] + new.finish()
    siren = [(type(m).__name__, m.model, round(m.offset_s, 3), getattr(m, "duration_s", None))
             for m in first + closing + rest if isinstance(m, (Started, Event)) and m.label == "siren"]
    assert [(kind, model) for kind, model, _, _ in siren] == [
        ("Started", old_bundle.ident), ("Event", old_bundle.ident),
        ("Started", new_bundle.ident), ("Event", new_bundle.ident)], siren
    (_, _, start, _), (_, _, _, length), (_, _, again, _), (_, _, _, rest_s) = siren
    assert start + length <= 7.5 and again >= start + length, siren  # ended at the reload; the new one after it
    assert abs(again + rest_s - 9.0) < 1.0, siren  # to the siren's end

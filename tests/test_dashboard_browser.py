"""The dashboard in a real browser: mosquitto + ``noisewatch dashboard`` + headless Chromium.

While the Live page is open, the real daemon (``noisewatch run --speed 0``) replays
``samples/scene.flac`` into a private broker, and a second listener's messages are published as
the daemon's own message types (:mod:`noisewatch.daemon.messages`); the test asserts that every event the daemon reported (its
JSON-lines log is the truth) and the scene's labels appear on the page. Each page is screenshotted into
``$NOISEWATCH_ARTIFACTS/dashboard`` (default ``build/artifacts/dashboard``).

Needs Debian's ``chromium`` and ``chromium-driver`` (installed here with apt-get when missing and
running as root; otherwise the test fails with the command to run) and the ``selenium`` and
``streamlit`` packages. It is never skipped.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import paho.mqtt.client as mqtt
import pytest
import soundfile
from daemon_run import read_jsonl
from mqtt_broker import HOST, Broker, free_port
from paho.mqtt.enums import CallbackAPIVersion

from noisewatch.bundle import default_model_path, load_bundle
from noisewatch.daemon.messages import AudioState, Event, Level, Score, Scores, Started, Stats, Status
from noisewatch.dashboard import views
from noisewatch.dashboard.analysis import DEFAULT_HOP_S
from noisewatch.features import clip_windows

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
APT_PACKAGES = ("chromium", "chromium-driver")
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--no-first-run", "--window-size=1400,2400")
START_TIMEOUT_S = 45.0
PAGE_TIMEOUT_S = 30.0
DAEMON_TIMEOUT_S = 60.0
DEVICE = "kitchen"
"""the daemon's device id"""
OTHER_DEVICE = "garden"
"""a second listener, published by the test"""
OTHER_EVENTS = (("siren", 3.0, 4.5), ("dog_bark", 12.0, 1.5))
"""(label, offset_s, duration_s) of the second listener's events"""
OTHER_START = dt.datetime.now(dt.timezone.utc).replace(microsecond=0) - dt.timedelta(seconds=30)
"""the second listener's events sit beside the daemon's on the timeline"""
TABLE_TIME = "%Y-%m-%d %H:%M:%S"
"""how the Live page's event table shows a start time"""
DAEMON_CONFIG = """device_id: {device}
levels:
  interval_s: 2
scores:
  enabled: true
  interval_s: 0
mqtt:
  enabled: true
  host: {host}
  port: {port}
  spool:
    directory: {spool}
"""

pytestmark = [pytest.mark.broker, pytest.mark.slow]


def ensure_chromium() -> None:
    """Install Chromium and its driver with apt-get when missing (as root), else fail clearly."""
    if CHROMIUM.exists() and CHROMEDRIVER.exists():
        return
    install = f"apt-get install -y {' '.join(APT_PACKAGES)}"
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        pytest.fail(f"{CHROMIUM} or {CHROMEDRIVER} is missing and this is not root with apt-get: run '{install}'")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update"], ["apt-get", "install", "-y", *APT_PACKAGES]):
        done = subprocess.run(command, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            pytest.fail(f"'{' '.join(command)}' failed: {done.stderr[-2000:]}")


def artifacts_dir(repo_root: Path) -> Path:
    base = Path(os.environ.get("NOISEWATCH_ARTIFACTS", repo_root / "build" / "artifacts"))
    folder = base / "dashboard"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


# --- fixtures: broker, dashboard, browser -----------------------------------------------------------

@pytest.fixture(scope="module")
def broker() -> Iterator[Broker]:
    started = Broker().start()
    yield started
    started.cleanup()


@pytest.fixture(scope="module")
def artifacts(repo_root: Path) -> Path:
    return artifacts_dir(repo_root)


@pytest.fixture(scope="module")
def dashboard(broker: Broker, artifacts: Path) -> Iterator[str]:
    """``noisewatch dashboard`` on a free port, subscribed to the private broker; yields its URL.

    Started as a user would (the console script) from a folder that holds a broken ``noisewatch/``
    directory, as ``~`` does with a clone in it: the app must import the installed package.
    """
    folder = Path(tempfile.mkdtemp(prefix="nw-dashboard-"))
    (folder / "noisewatch").mkdir()
    (folder / "noisewatch" / "__init__.py").write_text("raise ImportError('the folder the dashboard started in')\n")
    config = folder / "noisewatch.yaml"
    config.write_text(f"device_id: {DEVICE}\nmqtt:\n  enabled: true\n  host: {HOST}\n  port: {broker.port}\n")
    port = free_port()
    log = (artifacts / "streamlit.log").open("w")
    proc = subprocess.Popen(
        [str(Path(sys.executable).with_name("noisewatch")), "dashboard", "--config", str(config), "--port", str(port)],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=folder,
    )
    url = f"http://{HOST}:{port}"
    try:
        _wait_for_health(url, proc)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the launcher and its Streamlit child
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()
        shutil.rmtree(folder, ignore_errors=True)


def _wait_for_health(url: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"noisewatch dashboard exited with {proc.returncode}; see streamlit.log in the artifacts")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=1) as answer:
                if answer.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    pytest.fail(f"the dashboard did not answer on {url} within {START_TIMEOUT_S:g} s")


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    ensure_chromium()
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.fail("selenium is missing: pip install selenium")
    profile = tempfile.mkdtemp(prefix="nw-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def page_text(driver: object) -> str:
    return driver.find_element("tag name", "body").text


def wait_for_text(driver: object, texts: tuple[str, ...], timeout: float = PAGE_TIMEOUT_S) -> str:
    """Wait until the page shows every text; returns the page text."""
    deadline = time.monotonic() + timeout
    while True:
        text = page_text(driver)
        if all(t in text for t in texts):
            return text
        if time.monotonic() > deadline:
            missing = [t for t in texts if t not in text]
            pytest.fail(f"page never showed {missing}; it shows:\n{text[:3000]}")
        time.sleep(0.3)


def wait_for_elements(driver: object, css: str, count: int = 1, timeout: float = PAGE_TIMEOUT_S) -> list:
    """The elements matching ``css``, once the page has rendered at least ``count`` of them."""
    deadline = time.monotonic() + timeout
    while len(found := driver.find_elements("css selector", css)) < count:
        if time.monotonic() > deadline:
            pytest.fail(f"page showed {len(found)} of {count} elements {css!r}")
        time.sleep(0.3)
    return found


# --- the scene -----------------------------------------------------------------------------------

def _stamp(offset_s: float) -> str:
    return (OTHER_START + dt.timedelta(seconds=offset_s)).isoformat(timespec="milliseconds").replace("+00:00", "Z")


Published = tuple[str, str | bytes, bool]
"""(topic, payload, retain)"""


def other_listener(prefix: str) -> list[Published]:
    """(topic, payload, retain) of a second listener: status and states as text, the rest the daemon's messages."""
    model, device = "urban11@test", OTHER_DEVICE
    messages: list[Published] = [(f"{prefix}/status", "online", True)]
    for label, offset, duration in OTHER_EVENTS:
        event_id, start = str(uuid.uuid4()), _stamp(offset)
        started = Started(event_id, label, 0.8, start, offset, model, device)
        event = Event(event_id, label, 0.93, 0.85, start, _stamp(offset + duration), offset, duration, -14.0, -22.0,
                      model, device)
        messages += [(f"{prefix}/events/started", started.encode(), False), (f"{prefix}/state/{label}", "ON", True),
                     (f"{prefix}/events", event.encode(), False), (f"{prefix}/state/{label}", "OFF", True)]
    for k in range(8):
        level = Level(start=_stamp(2 * k), end=_stamp(2 * k + 2), offset_s=2.0 * k, period_s=2.0,
                      leq_dbfs=-45.0 + 3 * (k % 4), lmax_dbfs=-30.0 + 2 * (k % 3), lmin_dbfs=-60.0, leq_dbfs_a=-47.0,
                      lmax_dbfs_a=-32.0, lmin_dbfs_a=-62.0, device=device)
        messages.append((f"{prefix}/level", level.encode(), True))
    top = (Score("dog_bark", 0.88), Score("background", 0.07), Score("siren", 0.02))
    messages.append((f"{prefix}/scores", Scores(_stamp(13.0), 13.0, top, device).encode(), False))
    stats = Stats(uptime_s=16.0, started="2026-12-06T11:00:00.000Z", audio_s=16.0, windows=25, gated_windows=0, events=2, input_overflows=0,
                  dropped_frames=0, nonfinite_samples=0, source="USB microphone", model=model, runtime="ai_edge_litert",
                  version="0.1.0", spool_depth=0, device=device)
    messages.append((f"{prefix}/stats", stats.encode(), True))
    audio = Status(AudioState.AUDIO_ERROR, error="USB microphone unplugged", device=device)
    messages.append((f"{prefix}/audio", audio.encode(), True))
    return messages


def publish(port: int, messages: list[Published]) -> None:
    client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2)
    client.connect(HOST, port)
    client.loop_start()
    try:
        for topic, payload, retain in messages:
            client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(5)
    finally:
        client.disconnect()
        client.loop_stop()


# --- the pages -------------------------------------------------------------------------------------

def replay_scene(repo_root: Path, broker: Broker, folder: Path) -> list[dict]:
    """Run the real daemon over samples/scene.flac into the broker; returns the events it logged."""
    config = folder / "daemon.yaml"
    config.write_text(DAEMON_CONFIG.format(device=DEVICE, host=HOST, port=broker.port, spool=folder / "spool"))
    log = folder / "daemon.jsonl"
    done = subprocess.run(
        [sys.executable, "-m", "noisewatch.cli", "run", "--config", str(config),
         "--input", str(repo_root / "samples" / "scene.flac"), "--speed", "0", "--jsonl", str(log)],
        capture_output=True, text=True, timeout=DAEMON_TIMEOUT_S,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return [m for m in read_jsonl(log) if m.get("type") == "event"]


TABLE_ROWS_JS = ("return Array.from(document.querySelectorAll('table tr'), "
                 "row => Array.from(row.querySelectorAll('td'), cell => cell.innerText.trim()));")
"""read in one call: the live view redraws every few seconds, so element handles go stale"""


def table_rows(driver: object) -> list[tuple[str, ...]]:
    """The cell texts of every row of every st.table on the page."""
    return [tuple(row) for row in driver.execute_script(TABLE_ROWS_JS)]


def wait_for_rows(driver: object, rows: set[tuple[str, ...]], timeout: float = PAGE_TIMEOUT_S) -> None:
    """Wait until every row (a prefix of cell texts) is in a table on the page."""
    deadline = time.monotonic() + timeout
    while True:
        shown = {row[:3] for row in table_rows(driver)}
        if rows <= shown:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"page never showed rows {sorted(rows - shown)}; it shows {sorted(shown)}")
        time.sleep(0.3)


def test_live_page_shows_the_events_of_the_scene(dashboard: str, browser: object, broker: Broker,
                                                 artifacts: Path, repo_root: Path, tmp_path: Path) -> None:
    browser.get(f"{dashboard}/")
    text = wait_for_text(browser, ("Live", "Broker connection: subscribed", "Waiting for listeners"))
    scene_labels = {item["label"] for item in json.loads((repo_root / "samples" / "scene.json").read_text())}
    assert not any(label in text for label in scene_labels)
    events = replay_scene(repo_root, broker, tmp_path)  # ends with a clean shutdown: status offline
    assert scene_labels & {event["label"] for event in events}, f"the daemon recognised nothing of {scene_labels}"
    publish(broker.port, other_listener(f"noisewatch/{OTHER_DEVICE}"))
    expected = {(views.parse_time(event["start"]).strftime(TABLE_TIME), DEVICE, event["label"]) for event in events}
    expected |= {(views.parse_time(_stamp(offset)).strftime(TABLE_TIME), OTHER_DEVICE, label)
                 for label, offset, _ in OTHER_EVENTS}
    wait_for_rows(browser, expected)
    text = wait_for_text(browser, (f"{DEVICE} offline", f"{OTHER_DEVICE} online", "Sound level", "offline since",
                                   "No audio: USB microphone unplugged"))
    assert "0.88" in text, "the second listener's top-3 scores are shown"
    kitchen = text.split(f"{DEVICE} offline", 1)[1].split(f"{OTHER_DEVICE} online", 1)[0]
    assert "not shown: not current" in kitchen and "listening for" not in kitchen, "an offline listener's health is not shown as current"
    wait_for_elements(browser, ".vega-embed svg.marks", count=2)  # the event timeline and sound level
    browser.save_screenshot(str(artifacts / "live.png"))


LEGEND_JS = ("return Array.from(document.querySelectorAll('.vega-embed svg g.role-legend'), legend => ["
             "(legend.querySelector('.role-legend-title text') || {}).textContent, "
             "Array.from(legend.querySelectorAll('.role-legend-label text'), label => label.textContent), "
             "Array.from(legend.querySelectorAll('.role-legend-symbol path'), "
             "symbol => [symbol.getAttribute('stroke'), symbol.getAttribute('stroke-dasharray')])]);")
"""(title, labels, [(stroke, dash pattern) of each symbol]) of every chart legend on the page"""


def test_the_sound_level_legend_tells_leq_lmax_and_lmin_apart(dashboard: str, browser: object, broker: Broker,
                                                              artifacts: Path) -> None:
    """The level chart draws Leq, Lmax and Lmin in one colour per device, told apart only by their dashes: the
    legend must show those dashes (it showed three identical black dots, the dashes on an invisible outline)."""
    publish(broker.port, [m for m in other_listener(f"noisewatch/{OTHER_DEVICE}") if m[0].endswith("/level")])
    browser.get(f"{dashboard}/")
    wait_for_text(browser, ("Sound level", OTHER_DEVICE))
    deadline = time.monotonic() + PAGE_TIMEOUT_S
    while not (legends := {title: (labels, symbols) for title, labels, symbols in browser.execute_script(LEGEND_JS)
                           if title == "measure"}) and time.monotonic() < deadline:
        time.sleep(0.3)
    assert legends, "the sound level chart has no legend of its measures"
    labels, symbols = legends["measure"]
    assert labels == ["Leq", "Lmax", "Lmin"], labels
    assert all(stroke not in (None, "transparent", "none") for stroke, _ in symbols), f"dashes drawn unseen: {symbols}"
    assert len({dash for _, dash in symbols}) == 3, f"two measures share a dash pattern: {symbols}"
    browser.save_screenshot(str(artifacts / "live-levels.png"))


def test_the_health_report_says_when_it_was_made(dashboard: str, browser: object, broker: Broker) -> None:
    """A listener reports its health every stats.interval_s (60 s by default): the panel showed "listening for: 0 s"
    and "events waiting for the broker: 8" a minute on, as if current; it must say when the report was made."""
    device = "attic"
    browser.get(f"{dashboard}/")
    wait_for_text(browser, ("Broker connection: subscribed",))
    stats = Stats(uptime_s=0.1, started="2026-12-06T11:00:00.000Z", audio_s=0.1, windows=0, gated_windows=0, events=0, input_overflows=0,
                  dropped_frames=0, nonfinite_samples=0, source="USB microphone", model="urban11@test",
                  runtime="ai_edge_litert", version="0.1.0", spool_depth=8, device=device)
    sent = dt.datetime.now(dt.timezone.utc)
    publish(broker.port, [(f"noisewatch/{device}/status", "online", True),
                          (f"noisewatch/{device}/stats", stats.encode(), True)])
    text = wait_for_text(browser, (f"{device} online", "listening for: 0 s"))
    panel = text.split(f"{device} online", 1)[1]
    shown = {f"report of {(sent + dt.timedelta(seconds=s)).strftime('%H:%M:%S')} UTC" for s in range(3)}
    assert any(words in panel for words in shown), f"the health panel does not date its report: {panel[:800]}"


def test_classify_page_predicts_an_uploaded_recording(dashboard: str, browser: object, artifacts: Path,
                                                      repo_root: Path) -> None:
    bundle = load_bundle(default_model_path())
    scene = repo_root / "samples" / "scene.flac"
    browser.get(f"{dashboard}/classify")
    wait_for_text(browser, ("Upload a WAV, FLAC or OGG recording", bundle.ident))
    wait_for_elements(browser, "input[type=file]")[0].send_keys(str(scene))
    text = wait_for_text(browser, ("Events: 3", "Most like (mean over its windows)", "Scores per window", "Waveform", "Mel spectrogram",
                                   "MFCC"))
    events = [row for row in table_rows(browser) if len(row) == 6]  # the events table (the windows table has 3)
    assert [row[0] for row in events] == ["siren", "dog_bark", "jackhammer"], events  # as the daemon reports them
    prediction = text.split("Most like (mean over its windows)", 1)[1].split()[0]
    assert prediction in bundle.labels
    duration = soundfile.info(str(scene)).duration
    windows = len(clip_windows(np.zeros(int(duration * bundle.features.sample_rate)), bundle.features, DEFAULT_HOP_S))
    assert f"{windows} over {duration:.1f} s" in text
    wait_for_elements(browser, "[data-testid='stImage'] img", count=2)  # mel spectrogram and MFCC
    browser.save_screenshot(str(artifacts / "classify.png"))


def test_classify_page_says_an_upload_is_cut_short(dashboard: str, browser: object, repo_root: Path,
                                                  tmp_path: Path) -> None:
    """A WAV file broken off halfway (a copy or download cut short) was classified without a word, its scraps
    shown as the recording (0.1 s of garbage read "car_horn, mean score 1.00"); the page must say so."""
    audio, rate = soundfile.read(str(repo_root / "samples" / "scene.flac"))
    whole = tmp_path / "whole.wav"
    soundfile.write(str(whole), audio, rate, subtype="PCM_16")
    cut = tmp_path / "cut.wav"
    data = whole.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    browser.get(f"{dashboard}/classify")
    wait_for_elements(browser, "input[type=file]")[0].send_keys(str(cut))
    promised = len(audio) / rate
    wait_for_text(browser, (f"This file is cut short: its header promises {promised:.1f} s of audio", "Waveform"))


def test_classify_page_says_an_upload_holds_no_audio(dashboard: str, browser: object, tmp_path: Path) -> None:
    """Found by fault injection: a WAV with a header and not one sample showed "Most like: car_horn 0.99", a window of
    silence made up for it (``noisewatch classify`` says such a file "holds no audio")."""
    empty = tmp_path / "empty.wav"
    soundfile.write(str(empty), np.zeros(0, np.float32), 22050)
    browser.get(f"{dashboard}/classify")
    wait_for_elements(browser, "input[type=file]")[0].send_keys(str(empty))
    text = wait_for_text(browser, ("This recording holds no audio: nothing to classify.",))
    assert "Most like" not in text


def test_model_page_shows_the_bundles_metrics(dashboard: str, browser: object, artifacts: Path) -> None:
    bundle = load_bundle(default_model_path())
    browser.get(f"{dashboard}/model")
    compared = [name for name, block in bundle.metrics.items() if isinstance(block, dict)
                and "accuracy" in block.get("pooled", {})]
    assert "mlp" in compared
    licence = str(bundle.provenance.get("licence", ""))
    assert licence
    # Streamlit draws the page section by section: wait for the content of every one, the last (licence) included.
    scenes = bundle.metrics["soundscapes"]["pooled"]
    timing = f"smoothed over {views.count(bundle.timing.smoothing_windows, 'window')} and a {bundle.timing.release_s:g} s release"
    wait_for_text(browser, (bundle.ident, timing, "Detection on held-out soundscapes", f"{scenes['found']} of {scenes['events']}",
                            "Held-out accuracy", *bundle.labels, *compared,  # every model it was compared with
                            f"from the model card ({bundle.path.stem}-confusion.png)", "Data and licence", licence))
    wait_for_elements(browser, "[data-testid='stImage'] img")
    browser.save_screenshot(str(artifacts / "model.png"))

"""The dashboard in a real browser: mosquitto + ``noisewatch dashboard`` + headless Chromium.

A listener's scene (status, states, started and closed events, levels, scores, stats, in the
documented payload shapes) is published to a private broker while the Live page is open; the
test asserts that the scene's events appear on the page. Each page is screenshotted into
``$NOISEWATCH_ARTIFACTS/dashboard`` (default ``build/artifacts/dashboard``).

Needs Debian's ``chromium`` and ``chromium-driver`` (installed here with apt-get when missing and
running as root; otherwise the test fails with the command to run) and the ``selenium`` and
``streamlit`` packages. It is never skipped.
"""

from __future__ import annotations

import datetime as dt
import io
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
from paho.mqtt.enums import CallbackAPIVersion

from mqtt_broker import HOST, Broker, free_port
from noisewatch.bundle import default_model_path, load_bundle

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
APT_PACKAGES = ("chromium", "chromium-driver")
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--no-first-run", "--window-size=1400,2400")
START_TIMEOUT_S = 45.0
PAGE_TIMEOUT_S = 30.0
DEVICE = "kitchen"
SCENE = (("siren", 3.0, 4.5), ("dog_bark", 12.0, 1.5))
"""(label, offset_s, duration_s) of the scene's events"""
SCENE_START = dt.datetime(2026, 1, 1, 12, 0, tzinfo=dt.timezone.utc)

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
    """``noisewatch dashboard`` on a free port, subscribed to the private broker; yields its URL."""
    folder = Path(tempfile.mkdtemp(prefix="nw-dashboard-"))
    config = folder / "noisewatch.yaml"
    config.write_text(f"device_id: {DEVICE}\nmqtt:\n  enabled: true\n  host: {HOST}\n  port: {broker.port}\n")
    port = free_port()
    log = (artifacts / "streamlit.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "noisewatch.cli", "dashboard", "--config", str(config), "--port", str(port)],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        env={**os.environ, "STREAMLIT_SERVER_ADDRESS": HOST},
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


# --- the scene -----------------------------------------------------------------------------------

def _stamp(offset_s: float) -> str:
    return (SCENE_START + dt.timedelta(seconds=offset_s)).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def scene_messages(prefix: str) -> list[tuple[str, str, bool]]:
    """(topic, payload, retain) of one listener hearing the scene, in the daemon's documented shapes."""
    messages = [(f"{prefix}/status", "online", True)]
    for label, offset, duration in SCENE:
        event_id = str(uuid.uuid4())
        common = {"id": event_id, "label": label, "start": _stamp(offset), "offset_s": offset,
                  "device": DEVICE, "model": "urban11@test"}
        messages += [
            (f"{prefix}/events/started", json.dumps({**common, "confidence": 0.8}), False),
            (f"{prefix}/state/{label}", "ON", True),
            (f"{prefix}/events", json.dumps({**common, "confidence": 0.93, "mean_confidence": 0.85,
                                             "end": _stamp(offset + duration), "duration_s": duration,
                                             "peak_dbfs": -14.0, "mean_dbfs": -22.0}), False),
            (f"{prefix}/state/{label}", "OFF", True),
        ]
    for k in range(8):
        level = {"start": _stamp(2 * k), "end": _stamp(2 * k + 2), "period_s": 2.0, "leq_dbfs": -45.0 + 3 * (k % 4),
                 "lmax_dbfs": -30.0 + 2 * (k % 3), "lmin_dbfs": -60.0, "leq_dbfs_a": -47.0, "lmax_dbfs_a": -32.0,
                 "lmin_dbfs_a": -62.0}
        messages.append((f"{prefix}/level", json.dumps(level), True))
    top = [{"label": "dog_bark", "score": 0.88}, {"label": "background", "score": 0.07}, {"label": "siren", "score": 0.02}]
    messages.append((f"{prefix}/scores", json.dumps({"offset_s": 13.0, "time": _stamp(13.0), "top": top}), False))
    messages.append((f"{prefix}/stats", json.dumps({"uptime_s": 16, "windows": 25, "overflows": 0,
                                                    "spool_depth": 0, "model": "urban11@test"}), True))
    return messages


def publish(port: int, messages: list[tuple[str, str, bool]]) -> None:
    client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2)
    client.connect(HOST, port)
    client.loop_start()
    try:
        for topic, payload, retain in messages:
            client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(5)
    finally:
        client.disconnect()
        client.loop_stop()


def tone_clip(sample_rate: int, seconds: float = 6.0) -> bytes:
    """A 6 s FLAC: a rising tone over noise, enough for several windows."""
    t = np.arange(int(sample_rate * seconds)) / sample_rate
    tone = 0.3 * np.sin(2 * np.pi * (600 + 150 * t) * t)
    noise = np.random.default_rng(0).normal(0, 0.02, len(t))
    buffer = io.BytesIO()
    soundfile.write(buffer, (tone + noise).astype(np.float32), sample_rate, format="FLAC")
    return buffer.getvalue()


# --- the pages -------------------------------------------------------------------------------------

def test_live_page_shows_the_events_of_the_scene(dashboard: str, browser: object, broker: Broker,
                                                 artifacts: Path) -> None:
    browser.get(f"{dashboard}/")
    text = wait_for_text(browser, ("Live", "Broker connection: connected", "Waiting for listeners"))
    assert "dog_bark" not in text and "siren" not in text
    publish(broker.port, scene_messages(f"noisewatch/{DEVICE}"))
    text = wait_for_text(browser, (DEVICE, "online", "Events", "siren", "dog_bark", "4.5 s", "1.5 s",
                                   "2026-01-01 12:00:03", "2026-01-01 12:00:12", "Sound level"))
    assert text.index("2026-01-01 12:00:12") < text.index("2026-01-01 12:00:03"), "newest event first"
    assert "0.88" in text, "the top-3 scores are shown"
    browser.save_screenshot(str(artifacts / "live.png"))


def test_classify_page_predicts_an_uploaded_recording(dashboard: str, browser: object, artifacts: Path,
                                                      tmp_path: Path) -> None:
    bundle = load_bundle(default_model_path())
    clip = tmp_path / "tone.flac"
    clip.write_bytes(tone_clip(bundle.features.sample_rate))
    browser.get(f"{dashboard}/classify")
    wait_for_text(browser, ("Classify", bundle.ident))
    browser.find_element("css selector", "input[type=file]").send_keys(str(clip))
    text = wait_for_text(browser, ("Prediction", "Scores per window", "Waveform", "Mel spectrogram", "MFCC"))
    prediction = text.split("Prediction", 1)[1].split()[0]
    assert prediction in bundle.labels
    assert "3 over 6.0 s" in text, "three 4 s windows, 1 s apart"
    browser.save_screenshot(str(artifacts / "classify.png"))


def test_model_page_shows_the_bundles_metrics(dashboard: str, browser: object, artifacts: Path) -> None:
    bundle = load_bundle(default_model_path())
    browser.get(f"{dashboard}/model")
    text = wait_for_text(browser, (bundle.ident, "Held-out accuracy", "Data and licence", *bundle.labels))
    for baseline in ("random_forest", "knn"):
        assert baseline in text
    assert str(bundle.provenance.get("licence", "")) in text
    browser.save_screenshot(str(artifacts / "model.png"))

"""The daemon's shell: start-up validation, the audio source, signals, sinks, systemd.

States: STARTING -> RUNNING -> (audio lost -> REOPENING -> RUNNING)* -> STOPPED. A lost device is
reopened with capped backoff, forever; SIGHUP rebuilds the pipeline from a re-read config (an
invalid new config is logged and the old one kept); SIGTERM/SIGINT close events, flush sinks and
exit 0. Everything after the ring buffer lives in :mod:`noisewatch.daemon.pipeline`.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

# Before numpy loads: the daemon's matrices are tiny (one window per hop), and BLAS worker threads
# only fight the audio thread and other processes for cores. Measured on 2 busy cores: features
# per hop 16 ms median with OpenBLAS threads, 1.4 ms with one. An explicit setting still wins.
for _blas_threads in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_blas_threads, "1")

from noisewatch import __version__, logs
from noisewatch.bundle import Bundle, BundleError, default_model_path, load_bundle
from noisewatch.config import EX_CONFIG, Config, ConfigError, load_config
from noisewatch.daemon import notify
from noisewatch.daemon.events import SampleClock
from noisewatch.daemon.pipeline import Pipeline
from noisewatch.daemon.resample import MonoResampler
from noisewatch.daemon.sinks import Sink
from noisewatch.daemon.sinks.jsonl import JsonlSink
from noisewatch.daemon.sources import AudioSource, MicrophoneSource, SourceError, check_device, open_source
from noisewatch.runtime import RuntimeUnavailable, TFLiteModel

log = logging.getLogger(__name__)
READ_TIMEOUT_S = 0.1
"""Longest the loop waits for audio before checking signals, the watchdog and the source."""
READ_FRAMES = 8192
FIRST_BACKOFF_S = 1.0
EXTEND_MARGIN_S = 10.0
CLOCK_CHECK_S = 60.0
MAX_CLOCK_DRIFT_S = 0.5
"""Live input only: event timestamps may lag wall time by the audio still in the ring, well under this."""
AUDIO_STALL_S = 5.0
"""A live input that delivers nothing for this long is treated as failed and reopened."""


@dataclass(frozen=True)
class Setup:
    """A validated start-up: config, bundle and how audio arrives."""

    config: Config
    bundle: Bundle
    model: TFLiteModel
    """Loaded once here: checking that it loads is part of validation, and the pipeline reuses it."""
    config_path: str | None
    input_path: str | None = None
    speed: float = 1.0


def prepare(config_path: str | None, model: str | None = None, jsonl: str | None = None,
            input_path: str | None = None, speed: float = 1.0) -> Setup:
    """Load and cross-check everything; raises ConfigError/BundleError with one line per problem."""
    config = load_config(config_path)
    if model:
        config = config.model_copy(update={"model": config.model.model_copy(update={"path": Path(model)})})
    if jsonl:
        config = config.model_copy(update={"jsonl": config.jsonl.model_copy(update={"path": jsonl})})
    bundle = load_bundle(config.model.path or default_model_path())
    problems = bundle_problems(config, bundle) + mqtt_problems(config)
    if input_path is None and config.audio.device is not None:  # the default input may appear later
        try:
            check_device(config.audio)
        except SourceError as exc:
            problems.append(f"audio.device = {config.audio.device!r}: {exc}")
    elif input_path is not None and not Path(input_path).is_file():
        problems.append(f"--input {input_path}: no such file")
    model = None if problems else load_model(config, bundle, problems)  # last: its runtime talks on stderr
    if model is None:
        where = f"{config_path}: " if config_path else ""
        raise ConfigError("\n".join(where + p for p in problems))
    return Setup(config, bundle, model, config_path, input_path, speed)


def bundle_problems(config: Config, bundle: Bundle) -> list[str]:
    """Settings that only make sense against the model: window length and label names."""
    problems = []
    if config.audio.hop_s >= bundle.features.window_s:
        problems.append(f"audio.hop_s = {config.audio.hop_s}: must be shorter than the model's {bundle.features.window_s} s window")
    known = ", ".join(bundle.labels)
    for label in config.detector.thresholds:
        if label not in bundle.labels:
            problems.append(f"detector.thresholds.{label}: unknown label (the model knows: {known})")
    for label in config.detector.ignore:
        if label not in bundle.labels:
            problems.append(f"detector.ignore: {label!r} is not a label of the model ({known})")
    return problems


def load_model(config: Config, bundle: Bundle, problems: list[str]) -> TFLiteModel | None:
    """The model in the chosen runtime, or None with the reason appended to ``problems``
    (shape mismatches and missing runtimes show here)."""
    try:
        return bundle.open_model(config.model.runtime_choice, config.model.num_threads)
    except (BundleError, RuntimeUnavailable) as exc:
        problems.append(f"model.runtime = {config.model.runtime!r}: {exc}")
        return None


def mqtt_problems(config: Config) -> list[str]:
    """Files the MQTT sink needs, checked before start-up or a reload commits to them."""
    if not config.mqtt.enabled:
        return []
    problems = []
    try:
        config.mqtt_password()
    except ConfigError as exc:
        problems.append(str(exc))
    tls = config.mqtt.tls
    for key in ("ca_file", "cert_file", "key_file"):
        path = getattr(tls, key)
        if tls.enabled and path is not None and not path.is_file():
            problems.append(f"mqtt.tls.{key} = '{path}': no such file")
    spool = config.mqtt.spool.directory
    existing = next((p for p in (spool, *spool.parents) if p.exists()), Path("/"))
    if not os.access(existing, os.W_OK):
        problems.append(f"mqtt.spool.directory = '{spool}': {existing} is not writable")
    return problems


def open_sinks(setup: Setup) -> list[Sink]:
    """MQTT first: it spools each event to disk before returning, so an event already in the JSON-lines log
    is also on its way to the broker even if the process is killed between the two sinks."""
    sinks: list[Sink] = []
    if setup.config.mqtt.enabled:
        from noisewatch.daemon.sinks.mqtt import MqttSink  # paho only when MQTT is configured

        sinks.append(MqttSink.from_config(setup.config, setup.bundle.labels, setup.bundle.ident))
    if setup.config.jsonl.path:
        sinks.append(JsonlSink(setup.config.jsonl.path))
    return sinks


class Service:
    """Runs the pipeline on a live or replayed source until stopped."""

    def __init__(self, setup: Setup) -> None:
        self.setup = setup
        self._stop = threading.Event()
        self._reload = threading.Event()
        self._started = time.monotonic()
        self._ready = False
        self._lost = {"input_overflows": 0, "dropped_frames": 0}
        """Totals of sources already closed; the open source's counts are added in stats."""

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, lambda *_: self._stop.set())
        signal.signal(signal.SIGINT, lambda *_: self._stop.set())
        signal.signal(signal.SIGHUP, lambda *_: self._reload.set())

    def stop(self) -> None:
        self._stop.set()

    def run(self) -> int:
        while True:
            outcome = self._run_setup()
            if outcome != "reload":
                notify.stopping()
                return 0
            self._reload.clear()
            notify.reloading()
            self.setup = self._reloaded_setup()
            self._ready = False  # READY=1 again once the rebuilt pipeline hears audio

    def _reloaded_setup(self) -> Setup:
        old = self.setup
        try:
            new = prepare(old.config_path, input_path=old.input_path, speed=old.speed)
        except (ConfigError, BundleError) as exc:
            log.error("reload refused, keeping the running configuration: %s", exc)
            return old
        jsonl = old.config.jsonl if new.config.jsonl.path is None else new.config.jsonl
        log.info("configuration reloaded from %s", old.config_path)
        return replace(new, config=new.config.model_copy(update={"jsonl": jsonl}))

    def _run_setup(self) -> str:
        """One configuration's life: model, sinks, sources; returns stop, reload or finished."""
        setup = self.setup
        sinks = open_sinks(setup)
        pipeline = Pipeline(setup.config, setup.bundle, setup.model, sinks, SampleClock.starting_now())
        log.info("listening with %s (%s, %s), hop %.3f s", setup.bundle.ident, setup.bundle.variant, setup.model.runtime,
                 pipeline.hop_s)
        try:
            return self._keep_listening(pipeline)
        finally:
            pipeline.finish()
            for sink in sinks:
                sink.close()

    def _keep_listening(self, pipeline: Pipeline) -> str:
        """Open the source, pump it, and reopen it with backoff whenever it fails."""
        backoff = FIRST_BACKOFF_S
        while not self._stop.is_set() and not self._reload.is_set():
            try:
                source = open_source(self.setup.config.audio, self.setup.input_path, self.setup.speed)
                source.start()
            except SourceError as exc:
                self._audio_trouble(pipeline, f"cannot open audio input: {exc}", backoff)
                backoff = min(2 * backoff, self.setup.config.audio.reopen_max_s)
                continue
            with source:
                outcome = self._pump(source, pipeline)
            self._lost = self._losses(source)
            if outcome not in ("failed", "stalled"):
                return outcome
            why = source.failed or f"no audio for {AUDIO_STALL_S:.0f} s"
            pipeline.gap()
            self._audio_trouble(pipeline, f"audio input {source.name} failed: {why}", backoff)
            backoff = FIRST_BACKOFF_S
        return "stop" if self._stop.is_set() else "reload"

    def _audio_trouble(self, pipeline: Pipeline, text: str, wait_s: float) -> None:
        log.warning("%s; retrying in %.0f s", text, wait_s)
        pipeline.send("status", {"state": "audio_error", "error": text, "device": self.setup.config.device_id})
        notify.status(text)
        deadline = time.monotonic() + wait_s
        while not self._stop.wait(min(1.0, max(0.0, deadline - time.monotonic()))) and time.monotonic() < deadline:
            notify.watchdog()  # waiting for a device is not a hang
            if not self._ready:
                notify.extend_timeout(wait_s + EXTEND_MARGIN_S)  # nor is a start-up without a microphone yet

    def _pump(self, source: AudioSource, pipeline: Pipeline) -> str:
        """The processing loop: ring buffer -> resampler -> pipeline, until something ends it."""
        resampler = MonoResampler(source.sample_rate, pipeline.sample_rate, source.channels)
        ticks = _Ticks(self.setup.config.stats.interval_s)
        last_audio, first_block, lost = time.monotonic(), True, 0
        while not self._stop.is_set() and not self._reload.is_set():
            block = source.ring.read(READ_FRAMES, READ_TIMEOUT_S)
            if len(block):
                if first_block:  # timestamps count from when this source's audio began, not from its opening
                    pipeline.heard_at(captured_at(source, len(block)))
                    first_block, lost = False, source.ring.dropped_before_read
                elif source.ring.dropped_before_read > lost:  # audio lost in front of this block: it is later
                    pipeline.lost((source.ring.dropped_before_read - lost) / source.sample_rate)
                    lost = source.ring.dropped_before_read
                pipeline.process(resampler.process(block))
                self._mark_ready(source, pipeline)
                last_audio = time.monotonic()
            elif source.finished and source.ring.available == 0:
                pipeline.process(resampler.flush())
                return "finished"
            elif source.failed:
                return "failed"
            elif time.monotonic() - last_audio > AUDIO_STALL_S:
                return "stalled"
            ticks.watchdog()
            if isinstance(source, MicrophoneSource) and ticks.clock_check_due():
                keep_clock_honest(pipeline, captured_at(source, 0))
            if ticks.stats_due():
                pipeline.send("stats", self._stats(source, pipeline))
        return "stop" if self._stop.is_set() else "reload"

    def _losses(self, source: AudioSource) -> dict[str, int]:
        """Lifetime counts: PortAudio overflow reports, and frames the ring buffer had to drop."""
        return {"input_overflows": self._lost["input_overflows"] + source.overflows,
                "dropped_frames": self._lost["dropped_frames"] + source.ring.dropped}

    def _mark_ready(self, source: AudioSource, pipeline: Pipeline) -> None:
        if self._ready:
            return
        self._ready = True
        notify.ready()
        notify.status(f"listening on {source.name}")
        pipeline.send("status", {"state": "listening", "source": source.name, "device": self.setup.config.device_id})

    def _stats(self, source: AudioSource, pipeline: Pipeline) -> dict[str, Any]:
        counters = pipeline.counters
        return {
            "uptime_s": round(time.monotonic() - self._started, 1),
            "audio_s": round(pipeline.position_s, 1),
            "windows": counters.windows,
            "gated_windows": counters.gated,
            "events": counters.events,
            **self._losses(source),
            "source": source.name,
            "model": self.setup.bundle.ident,
            "runtime": pipeline.model.runtime,
            "version": __version__,
            "device": self.setup.config.device_id,
        }


class _Ticks:
    """Wall-clock cadence for the watchdog, health reports and clock checks (edges, not the pipeline)."""

    def __init__(self, stats_interval_s: float) -> None:
        interval = notify.watchdog_interval()
        self._watchdog_every = interval / 3 if interval else None
        self._stats_every = stats_interval_s
        now = time.monotonic()
        self._next_watchdog, self._next_stats, self._next_clock = now, now + stats_interval_s, now + CLOCK_CHECK_S

    def watchdog(self) -> None:
        now = time.monotonic()
        if self._watchdog_every is not None and now >= self._next_watchdog:
            notify.watchdog()
            self._next_watchdog = now + self._watchdog_every

    def stats_due(self) -> bool:
        now = time.monotonic()
        if now < self._next_stats:
            return False
        self._next_stats = now + self._stats_every
        return True

    def clock_check_due(self) -> bool:
        now = time.monotonic()
        if now < self._next_clock:
            return False
        self._next_clock = now + CLOCK_CHECK_S
        return True


def captured_at(source: AudioSource, frames_read: int) -> datetime:
    """When the first of the latest read's ``frames_read`` frames was captured: now, less what is still
    unread in the ring buffer, less those frames."""
    behind = source.ring.available + frames_read
    return datetime.now(timezone.utc) - timedelta(seconds=behind / source.sample_rate)


def keep_clock_honest(pipeline: Pipeline, captured: datetime) -> None:
    """A sound card's sample clock drifts from wall time (100 ppm is 4 min a month), and NTP may step
    the wall clock after boot: re-anchor when they disagree by more than MAX_CLOCK_DRIFT_S.
    ``captured`` is when the audio at the pipeline's position was captured."""
    drift_s = pipeline.clock_error_s(captured)
    if abs(drift_s) > MAX_CLOCK_DRIFT_S:
        log.info("sample clock and wall clock differ by %.2f s; timestamps re-anchored", drift_s)
        pipeline.heard_at(captured)


def _fail(exc: Exception) -> int:
    for line in str(exc).splitlines():
        print(f"noisewatch: {line}", file=sys.stderr)
    return EX_CONFIG


def main(args: argparse.Namespace) -> int:
    """``noisewatch run``."""
    try:
        setup = prepare(args.config, args.model, args.jsonl, args.input, args.speed)
    except (ConfigError, BundleError) as exc:
        return _fail(exc)
    logs.setup(setup.config.logging)
    service = Service(setup)
    service.install_signal_handlers()
    try:
        return service.run()
    except ConfigError as exc:  # what prepare() cannot check without starting: e.g. an unusable spool
        return _fail(exc)


def check_config_main(args: argparse.Namespace) -> int:
    """``noisewatch check-config FILE``: validate config, bundle and device without starting."""
    try:
        setup = prepare(args.config)
    except (ConfigError, BundleError) as exc:
        return _fail(exc)
    print(f"{args.config}: ok (model {setup.bundle.ident}, {len(setup.bundle.labels)} labels)")
    return 0

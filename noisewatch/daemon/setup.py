"""A validated set-up: the config (with command-line overrides), the model bundle and its interpreter, and
everything the sinks will need, checked before start-up or a reload commits to it.

``check-config`` and ``run`` decide with the same function, :func:`prepare`: what it accepts, ``run`` can
open; what it refuses comes back as one line per problem naming the key.
"""

from __future__ import annotations

import errno
import math
import os
import tempfile
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from noisewatch.bundle import Bundle, BundleError, default_model_path, load_bundle
from noisewatch.config import (
    CREDENTIAL_NAME,
    PASSWORD_ENV,
    STORED_PASSWORD,
    Config,
    ConfigError,
    DetectorSection,
    MqttSection,
    TlsSection,
    load_config,
    locate,
)
from noisewatch.daemon.sinks import Sink
from noisewatch.daemon.sinks.jsonl import APPEND_FLAGS, JsonlSink
from noisewatch.daemon.sources import DeviceMissing, SourceError, check_device
from noisewatch.daemon.statefile import DISK_FAULTS
from noisewatch.daemon.thresholds_store import ThresholdsStore
from noisewatch.runtime import ModelUnloadable, RuntimeUnavailable, TFLiteModel

if TYPE_CHECKING:
    from noisewatch.daemon.sinks.mqtt import MqttSink

READ_ONLY = "on a read-only file system (a disk the kernel remounted read-only after errors?)"
DISK_FAULT_NAMES = {**DISK_FAULTS, errno.EROFS: READ_ONLY,
                    errno.ENOSPC: f"{DISK_FAULTS[errno.ENOSPC]} (no space or no inode left)"}
"""How a disk fault is said to whoever checks the config: with what may have caused it."""
HELD_LOST = " (those still held at a stop are lost)"
NOT_KEPT = "; thresholds set from Home Assistant are applied but not kept"


@dataclass(frozen=True)
class Overrides:
    """Command-line settings that win over the config file, at start-up and at every reload."""

    model: str | None = None
    jsonl: str | None = None

    def apply(self, config: Config) -> Config:
        if self.model:
            config = config.model_copy(update={"model": config.model.model_copy(update={"path": Path(self.model)})})
        if self.jsonl:
            config = config.model_copy(update={"jsonl": config.jsonl.model_copy(update={"path": self.jsonl})})
        return config


@dataclass(frozen=True)
class Setup:
    """A validated start-up: config, bundle and how audio arrives."""

    config: Config
    bundle: Bundle
    model: TFLiteModel
    """Loaded once here: checking that it loads is part of validation, and the pipeline reuses it."""
    config_path: str | None
    overrides: Overrides = Overrides()
    input_path: str | None = None
    speed: float = 1.0
    audio_warnings: tuple[str, ...] = ()
    """What :func:`audio_findings` found wrong but not refused: ``check-config`` prints it, ``run`` logs it."""


def prepare(config_path: str | None, overrides: Overrides = Overrides(), input_path: str | None = None,
            speed: float = 1.0, check_audio: bool = True, reload: bool = False) -> Setup:
    """Load and cross-check everything; raises ConfigError/BundleError with one line per problem.

    ``check_audio`` False: the named device is not looked for (a reload while the input is lost: the device
    is what is missing, and reopening it retries it anyway). ``reload``: a config file with no settings in it is
    refused (:func:`load_config`'s ``blank_ok``): it is one caught being written."""
    config = overrides.apply(load_config(config_path, blank_ok=not reload))
    try:
        bundle = load_bundle(config.model.path or default_model_path())
    except BundleError as exc:
        if config.model.path is None:
            raise  # the shipped model: nothing in the config to point at
        raise ConfigError("\n".join(_located(config_path, overrides, [f"model.path: {exc}"]))) from None
    problems = bundle_problems(config, bundle) + sink_problems(config)
    audio_warnings: list[str] = []
    if check_audio:
        audio_problems, audio_warnings = audio_findings(config, input_path)
        problems += audio_problems
    model = None if problems else load_model(config, bundle, problems)  # last: its runtime talks on stderr
    if model is None:
        raise ConfigError("\n".join(_located(config_path, overrides, problems)))
    return Setup(config, bundle, model, config_path, overrides, input_path, speed, tuple(audio_warnings))


def audio_findings(config: Config, input_path: str | None) -> tuple[list[str], list[str]]:
    """The audio input's problems (refused) and warnings (said), looked up as ``run`` opens it
    (:func:`check_device`).

    A file to replay that is not there is a problem. A device, named or the default, that is not there now is a
    warning: a USB microphone may enumerate after the service starts at boot, or be unplugged across a reboot, and
    refused (exit 78, which systemd does not restart on) the listener stayed deaf for good; ``run`` waits for it
    as for a lost one, and ``check-config`` says it, or its "ok" reads as "the microphone is there". A named device
    that is there but cannot capture the configured format, or no PortAudio, stays a problem of the key."""
    if input_path is not None:
        path = Path(input_path)
        if path.is_file():
            return [], []
        return [f"--input {input_path}: {'not a regular file' if path.exists() else 'no such file'}"], []
    device = config.audio.device
    try:
        check_device(config.audio)
    except SourceError as exc:
        if device is not None and not isinstance(exc, DeviceMissing):
            return [f"audio.device = {device!r}: {exc}"], []
        what, waits = ("null (the default input)", "one") if device is None else (repr(device), "it")
        return [], [f"audio.device = {what}: {exc}; run waits for {waits} and retries"]
    return [], []


def _located(config_path: str | None, overrides: Overrides, problems: list[str]) -> list[str]:
    """Each problem (it starts with its dotted key) after the file and line of that key; a key the command
    line set has no line in the file."""
    if config_path is None:
        return problems
    keys = [problem.split(" ", 1)[0].rstrip(":") for problem in problems]
    keys_in_file = [None if (overrides.model and key.startswith("model."))
                    or (overrides.jsonl and key.startswith("jsonl.")) else key for key in keys]
    return [problem if problem.startswith("--") else f"{where}: {problem}"  # an option's own (--input): not the file's
            for where, problem in zip(locate(config_path, keys_in_file), problems)]


def bundle_problems(config: Config, bundle: Bundle) -> list[str]:
    """Settings that only make sense against the model: window length and label names (the default ignored and
    contrast labels are not checked, written out or not: a model without them simply has none; the default
    ``ignore: [background]`` refused every bundle without a background label, under the installed config too, a copy
    of the shipped one that writes every default out)."""
    problems = []
    if config.audio.hop_s >= bundle.features.window_s:
        problems.append(f"audio.hop_s = {config.audio.hop_s}: must be shorter than the model's {bundle.features.window_s} s window")
    known = ", ".join(bundle.labels)
    for label in config.detector.thresholds:
        if label not in bundle.labels:
            problems.append(f"detector.thresholds.{label}: unknown label (the model knows: {known})")
    for key in ("ignore", "require_contrast"):
        labels = getattr(config.detector, key)
        if set(labels) == set(DetectorSection.model_fields[key].default):
            continue
        for label in labels:
            if label not in bundle.labels:
                problems.append(f"detector.{key}: {label!r} is not a label of the model ({known})")
    return problems


def load_model(config: Config, bundle: Bundle, problems: list[str]) -> TFLiteModel | None:
    """The model in the chosen runtime, or None with the reason appended to ``problems``, under the key at fault:
    a runtime that is missing is ``model.runtime``'s; a model file it cannot load, or whose shapes are not the
    sidecar's, is the bundle's (both were said under ``model.runtime = 'auto'``, a key the user never set): under
    ``model.path`` where the config sets it, else raised as a BundleError, as :func:`prepare` raises one."""
    try:
        return bundle.open_model(config.model.runtime_choice, config.model.num_threads)
    except (BundleError, ModelUnloadable) as exc:
        if config.model.path is None:  # the shipped model or $NOISEWATCH_MODEL's: no key to point at, as in prepare
            raise BundleError(str(exc)) from None
        problems.append(f"model.path: {exc}")  # the file's path is in what the exception says
    except RuntimeUnavailable as exc:
        problems.append(f"model.runtime = {config.model.runtime!r}: {exc}")
    return None


def sink_problems(config: Config) -> list[str]:
    """What would keep a sink from opening (files, folders, certificates), found before start-up or a reload
    commits to it: ``check-config`` and ``run`` decide with this same function. A read-only disk is none of them
    (:func:`read_only_warnings`)."""
    problems = []
    if config.jsonl.path not in (None, "-"):
        problems += _unwritable("jsonl.path", Path(config.jsonl.path), folder=False)
    if config.mqtt.enabled:
        problems += mqtt_problems(config)
    return problems


def setup_warnings(config: Config) -> list[str]:
    """What is allowed but most likely a mistake, or a disk fault: said by ``check-config``, logged by ``run`` at
    start-up and reload, never refused."""
    return read_only_warnings(config) + mqtt_off_warnings(config.mqtt) + password_warnings(config)


def password_warnings(config: Config) -> list[str]:
    """A user without a password, or a password without a user (MQTT sends none without one: the broker was asked
    to take an anonymous client, and refused it as "Not authorized", the password found and unused)."""
    if not config.mqtt.enabled:
        return []
    try:
        password = config.mqtt_password()
    except ConfigError:
        return []  # an unreadable password file is a problem of its own (mqtt_problems)
    if config.mqtt.username and password is None:
        return [f"mqtt.username = {config.mqtt.username!r} has no password: none in ${PASSWORD_ENV}, in the systemd "
                f"credential {CREDENTIAL_NAME} or the {STORED_PASSWORD} beside the config that `noisewatch setup` "
                "stores (readable by root only: check with sudo), or in mqtt.password_file, so the broker will be "
                "asked to take the user without one"]
    if not config.mqtt.username and password is not None:
        return ["a password is given but mqtt.username is not set: MQTT sends no password without a user, so the "
                "broker will be asked to take the listener anonymously; set mqtt.username"]
    return []


def mqtt_off_warnings(section: MqttSection) -> list[str]:
    """A broker set up in a section that is off: the address copied in, ``enabled`` forgotten. ``check-config`` said
    "ok" and ``run`` not a word of MQTT, and no device ever came to Home Assistant."""
    if section.enabled:
        return []
    defaults = MqttSection()
    changed = [name for name in MqttSection.model_fields if getattr(section, name) != getattr(defaults, name)]
    if not changed:
        return []
    return [f"mqtt.enabled is false, so nothing is published to a broker and the mqtt section's {', '.join(changed)} "
            "go unused; set mqtt.enabled: true to publish"]


def read_only_warnings(config: Config) -> list[str]:
    """The JSON-lines file, spool and state folders on a read-only file system (an SD card the kernel remounted
    read-only after errors) or a full one: a disk fault, not a config error. Refused, it kept a restarted unit
    failed for good (systemd does not restart on exit 78), deaf and publishing nothing to a broker that was there;
    ``run`` rides it out as it does a disk that turns read-only or fills under it."""
    warnings = []
    jsonl = None if config.jsonl.path in (None, "-") else _disk_fault("jsonl.path", Path(config.jsonl.path), False)
    if jsonl is not None:
        warnings.append(f"jsonl.path = '{config.jsonl.path}': {jsonl}: messages are not logged there (counted "
                        "as jsonl_failed_writes) until it takes writes again")
    if not config.mqtt.enabled:
        return warnings
    spool, state = config.mqtt.spool.directory, config.mqtt.state_path
    spool_fault = _disk_fault("mqtt.spool.directory", spool, folder=True)
    state_fault = _disk_fault("mqtt.state_directory", state, folder=True)
    said_once = spool_fault is not None and state_fault is not None and config.mqtt.state_directory is None
    if spool_fault is not None:  # and the state folder beside it, said once
        warnings.append(f"mqtt.spool.directory = '{spool}': {spool_fault}: events are held in memory and published "
                        f"from there until it takes writes again{HELD_LOST}{NOT_KEPT if said_once else ''}")
    if state_fault is not None and not said_once:
        warnings.append(f"mqtt.state_directory = '{state}': {state_fault}{NOT_KEPT}")
    return warnings


def mqtt_problems(config: Config) -> list[str]:
    """The password, the TLS files (present and loadable), the spool and state folders (a state folder that is a
    file passed check-config and failed ``run``)."""
    problems = []
    try:
        config.mqtt_password()
    except ConfigError as exc:
        problems.append(str(exc))
    tls = config.mqtt.tls
    if tls.enabled:
        problems += _tls_problems(tls)
    spool = _unwritable("mqtt.spool.directory", config.mqtt.spool.directory, folder=True)
    if spool and config.mqtt.state_directory is None:  # beside the spool folder: the same problem, said once
        return problems + spool
    return problems + spool + _unwritable("mqtt.state_directory", config.mqtt.state_path, folder=True)


SAME_THRESHOLD = 1e-9
"""Thresholds closer than this are one: a slider's 7 x 0.05 is 0.35000000000000003, and no score tells them apart."""


def hidden_thresholds(config: Config, overrides: Mapping[str, float]) -> list[str]:
    """A threshold edited in the config does nothing while one set from Home Assistant wins: said by ``run`` (at start
    and reload, from the thresholds in force) and ``check-config`` (from the stored ones), or the edit looks ignored."""
    return [f"detector.thresholds.{label} = {configured!r} is not in force: {value!r}, set from Home Assistant, wins "
            f"(kept in {config.mqtt.state_path}; set it again there, or press its Reset thresholds button for the "
            "config's)" for label, value in sorted(overrides.items())
            if (configured := config.detector.thresholds.get(label)) is not None
            and not math.isclose(configured, value, rel_tol=0.0, abs_tol=SAME_THRESHOLD)]


def stored_threshold_warnings(config: Config, labels: Sequence[str]) -> list[str]:
    """``check-config``: :func:`hidden_thresholds` of the thresholds a listener with this config keeps for the model's
    ``labels`` it watches (only the MQTT sink takes them from Home Assistant)."""
    if not config.mqtt.enabled or not config.detector.thresholds:
        return []
    watched = [label for label in labels if label not in config.detector.ignore]
    return hidden_thresholds(config, ThresholdsStore(config.mqtt.state_path, watched).load())


def running_listener_warnings(config: Config) -> list[str]:
    """The spool and state folders a running listener holds, for ``check-config``: checking the service's own config
    while it runs is the usual step before a reload, so not refused; but ``run`` with it is refused (exit 78) while
    that listener runs, and check-config said only "ok"."""
    if not config.mqtt.enabled:
        return []
    from noisewatch.daemon.sinks.mqtt import folders_in_use  # paho: only where MQTT is on, as open_sinks imports it

    return [f"{key} = '{folder}' is held by a running noisewatch listener: `noisewatch run` with this config is "
            "refused while it runs (two listeners on one folder rewrite each other's files); `systemctl reload "
            "noisewatch` hands the config to the service, if that is the one" for key, folder in folders_in_use(config.mqtt)]


def _tls_problems(tls: TlsSection) -> list[str]:
    problems = []
    for key in ("ca_file", "cert_file", "key_file"):
        path = getattr(tls, key)
        if path is not None and not path.is_file():
            problems.append(f"mqtt.tls.{key} = '{path}': no such file")
    if problems:
        return problems
    import ssl  # here, not at the top: ssl maps libssl and libcrypto (1.4 MiB of peak RSS), unused without TLS

    context = ssl.create_default_context()
    try:
        if tls.ca_file is not None:
            context.load_verify_locations(cafile=str(tls.ca_file))
    except (ssl.SSLError, OSError, ValueError) as exc:
        return [f"mqtt.tls.ca_file = '{tls.ca_file}': not a CA certificate that loads ({exc})"]
    try:
        if tls.cert_file is not None:
            context.load_cert_chain(str(tls.cert_file), str(tls.key_file) if tls.key_file else None)
    except (ssl.SSLError, OSError, ValueError) as exc:
        return [f"mqtt.tls.cert_file = '{tls.cert_file}': the certificate and mqtt.tls.key_file do not load ({exc})"]
    return []


def _unwritable(key: str, path: Path, folder: bool) -> list[str]:
    """Why ``path`` (a file to append to, or a folder to keep files in) cannot be written, or nothing; a read-only
    or full disk is not said here (:func:`_disk_fault`)."""
    trouble = _write_trouble(key, path, folder)
    return [] if trouble is None or trouble[1] is not None else [trouble[0]]


def _disk_fault(key: str, path: Path, folder: bool) -> str | None:
    """How ``path``'s disk is said when it cannot be written only because that disk is read-only or full."""
    trouble = _write_trouble(key, path, folder)
    return None if trouble is None else trouble[1]


def _write_trouble(key: str, path: Path, folder: bool) -> tuple[str, str | None] | None:
    """Why ``path`` cannot be written, and the disk fault it is (``DISK_FAULT_NAMES``), if only that; None: it can.

    Tried, not asked: ``os.access`` says yes to root anywhere but on a read-only mount, /proc and /sys
    included, where ``run`` then fails. The tries leave nothing behind."""
    if path.exists():
        if folder != path.is_dir():
            return f"{key} = '{path}': not a {'folder' if folder else 'file'}", None
        if path.is_socket() or path.is_block_device():
            return f"{key} = '{path}': a {'socket' if path.is_socket() else 'disk'}, not a file or a named pipe", None
        if path.is_fifo():  # opened to try, it would wait for a reader, and closed, end that reader's input
            return None if os.access(path, os.W_OK) else (f"{key} = '{path}': not writable", None)
        error = _create_in(path) if folder else _append_to(path)
        return None if error is None else (f"{key} = '{path}': not writable", DISK_FAULT_NAMES.get(error))
    existing = next(p for p in path.parents if p.exists())
    if not existing.is_dir():
        return f"{key} = '{path}': {existing} is a file, not a folder", None
    error = _create_in(existing)
    return None if error is None else (f"{key} = '{path}': nothing can be created in {existing}",
                                       DISK_FAULT_NAMES.get(error))


def _create_in(folder: Path) -> int | None:
    """The errno of making a file in ``folder``; None: it can be done."""
    try:
        with tempfile.TemporaryFile(dir=folder):  # nameless where the file system allows, else unlinked at once
            return None
    except OSError as exc:
        return exc.errno


def _append_to(path: Path) -> int | None:
    """The errno of opening ``path`` to append (without waiting, as the sink opens it); None: it can be done."""
    try:
        os.close(os.open(path, APPEND_FLAGS))
    except OSError as exc:
        return exc.errno
    return None


def open_sinks(setup: Setup, running: Sequence[Sink] = (), stopping: threading.Event | None = None) -> list[Sink]:
    """MQTT first: it spools each event to disk before returning, so an event already in the JSON-lines log
    is also on its way to the broker even if the process is killed between the two sinks. A running MQTT
    sink that the new set-up would build the same but for its thresholds and spool bounds is kept, and told them
    (the JSON-lines file is always reopened, so that logrotate can move it); a sink that replaces the running one
    takes over its spool. Either puts the new bounds on the running spool once nothing more can fail: a refused
    reload keeps the running thresholds and bounds, and the messages they keep."""
    sinks: list[Sink] = []
    retuned: MqttSink | None = None
    bounded: MqttSink | None = None  # the sink on the running spool: the one kept (retuned), or one replacing it
    if setup.config.mqtt.enabled:
        from noisewatch.daemon.sinks.mqtt import MqttSink  # paho only when MQTT is configured

        labels, ident = setup.bundle.labels, setup.bundle.ident
        thresholds = setup.bundle.thresholds_over(setup.config.detector.thresholds)
        mqtt_sinks = [s for s in running if isinstance(s, MqttSink)]
        same = [s for s in mqtt_sinks if s.serves(setup.config, labels, ident)]
        replaced = mqtt_sinks[0] if mqtt_sinks else None
        if same:
            retuned = bounded = same[0]
            sinks.append(retuned)
        else:
            built = MqttSink.from_config(setup.config, labels, ident, thresholds, running=replaced, stopping=stopping)
            sinks.append(built)
            bounded = built if replaced is not None else None
    if setup.config.jsonl.path:
        try:
            lost = sum(s.failed_writes for s in running if isinstance(s, JsonlSink))  # lines lost before the reload
            batch = setup.input_path is not None and setup.speed == 0
            sinks.append(JsonlSink(setup.config.jsonl.path, lost, batch, stopping))
        except OSError as exc:
            for sink in sinks:
                if not any(sink is kept for kept in running):
                    sink.close()
            raise ConfigError(f"jsonl.path = '{setup.config.jsonl.path}': {exc.strerror or exc}") from None
    if retuned is not None:
        retuned.retune(thresholds)  # once nothing more can fail: a refused reload keeps the running ones
    if bounded is not None:
        bounded.hold_spool_bounds(setup.config.mqtt.spool)
    return sinks


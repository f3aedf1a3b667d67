"""The daemon's configuration: YAML validated once, at start-up, into typed models.

Every model forbids unknown keys (a typo is an error, not a silently ignored setting), every
number has a range and a unit, and every error names the key path, the value and the problem.
No stage reads the YAML itself; each receives its section.

Unlike the package's other modules, this one does without ``from __future__ import annotations``: the models'
annotations are then objects when pydantic builds them at import, not strings it must compile and evaluate one by one
(68 fields, ~2 ms of every start-up, which issue 17 bounds).
"""

import json
import math
import os
import re
import socket
import stat
import types
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

EX_CONFIG = 78  # sysexits.h: configuration error
PASSWORD_ENV = "NOISEWATCH_MQTT_PASSWORD"
CREDENTIAL_NAME = "noisewatch_mqtt_password"  # in $CREDENTIALS_DIRECTORY, see systemd/noisewatch.service
STORED_PASSWORD = Path("credentials", "mqtt_password")
"""Where ``noisewatch setup`` stores the password, beside the config (root only); the unit loads it as CREDENTIAL_NAME."""


def _a_number(value: Any) -> Any:
    """``value`` unless YAML gave what pydantic would take for a number without it being one: a boolean
    (``siren: yes`` was threshold 1, the siren off), text (``hop_s: "0.5"`` is a string to every other YAML
    reader) or NaN (it fails every range check, so the error named a bound, not the NaN)."""
    if isinstance(value, bool):
        raise ValueError("a boolean (YAML reads true/false, yes/no and on/off as booleans), which this key does not take")
    if isinstance(value, str):
        raise PydanticCustomError(TEXT_FOR_A_NUMBER, "text, not a number")  # worded by _describe, which sees quotes
    if isinstance(value, float) and math.isnan(value):
        raise ValueError("not a number (NaN), which this key does not take")
    return value


def _a_path(value: Any) -> Any:
    """``value`` unless it is blank or starts with ``~``: relative to this file's folder, an empty path was that
    folder (taken for a spool folder, "not a file" for a JSON-lines log) and ``~/x`` a folder named ``~`` in it."""
    if isinstance(value, str) and not value.strip():
        raise ValueError("an empty path: write one, or leave the key out for its default")
    if isinstance(value, str) and value.startswith("~"):
        raise ValueError("'~' is not expanded (the path would be relative to this file's folder): write the whole path")
    return value


def _an_index_or_a_name(value: Any) -> Any:
    """``value`` if it can name an input device: anything else failed both halves of ``int | str``, two lines
    naming keys the file cannot have (``audio.device.int``, ``audio.device.str``)."""
    if isinstance(value, int) and not isinstance(value, bool) and value < 0:  # PortAudio's "no device"
        raise PydanticCustomError(NO_DEVICE, "a device index is 0 or more (see `noisewatch devices`); leave "
                                  "the key out, or write null, for the system's default input")
    if isinstance(value, str) and not value.strip():
        raise PydanticCustomError(INDEX_OR_NAME, "an empty name is part of every device's name: write a device's "
                                  "index or part of its name (see `noisewatch devices`), or null for the default")
    if isinstance(value, (int, str)) and not isinstance(value, bool):
        return value
    raise PydanticCustomError(INDEX_OR_NAME, "must be one input device, by index or by part of its name (see "
                              "`noisewatch devices`)")


def _types_taken(annotation: Any) -> set[Any]:
    """The types a field of this annotation takes (containers are not looked into)."""
    if get_origin(annotation) in (Union, types.UnionType, Annotated):
        return set().union(*(_types_taken(arg) for arg in get_args(annotation)))
    return {annotation} if isinstance(annotation, type) else set()


Seconds = Annotated[float, Field(gt=0, description="seconds")]
Probability = Annotated[float, BeforeValidator(_a_number), Field(ge=0.0, le=1.0)]
FilePath = Annotated[Path, BeforeValidator(_a_path)]
Dbfs = Annotated[float, Field(ge=-200.0, le=0.0, description="dB relative to full scale")]
MAX_PREFIX_BYTES = 1024
"""Topic prefixes longer than this are refused (MQTT allows 65535 bytes for a whole topic)."""
MAX_SHOWN = 80
"""Characters of a wrong value that an error shows."""
MAX_YAML_NODES = 20000
"""A config file expanding to more YAML nodes than this (aliases counted each time they are used) is refused:
a real config has a few hundred, an alias bomb has billions."""
TEXT_FOR_A_NUMBER = "text_for_a_number"
"""The pydantic error type of a YAML string given for a number."""
NOT_A_BOOLEAN = "not_a_boolean"
"""The pydantic error type of anything but a YAML boolean given for a boolean."""
INDEX_OR_NAME = "index_or_name"
"""The pydantic error type of an input device given as neither an index nor a name."""
NO_DEVICE = "no_device"
"""The pydantic error type of device index -1 (and below): not a text type, whose hint "in quotes it is text" made
it the name "-1", which no device has."""
TEXT_TYPES = ("string_type", "literal_error", "path_type", INDEX_OR_NAME)
"""The pydantic error types of a key that takes text given something else."""
YAML_WORDS = {
    "model_type": "must be a section, its keys indented under it (left out, it keeps its defaults)",
    "dict_type": "must be a mapping, its key: value pairs indented under it or in braces ({a: 1})",
    "tuple_type": "must be a list, in brackets ([a, b]) or one '- item' line each",
    "path_type": "must be a path",
}
"""What the YAML must be, by the pydantic error types whose words are Python's ("a valid tuple", "a valid path for
<class 'pathlib.Path'>")."""
CONTRAST_LABELS = ("car_horn", "dog_bark", "gun_shot")
"""Short, sharp sounds: they always stand out from the background, and steady beds (rain, wind) were heard as
them (docs/scene-evaluation.md). Steady sounds are left out: one that outlasts a dip in its scores must be able
to go on without a fresh onset."""


class ConfigError(ValueError):
    """Invalid configuration; ``str()`` is one line per problem, ready for stderr."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _empty_keeps_its_defaults(cls, value: Any) -> Any:
        """A section with every key commented out reads as null in YAML: it keeps its defaults, as if left out."""
        return {} if value is None else value

    @classmethod
    def _taken(cls, info: ValidationInfo) -> set[Any]:
        """The types the field being validated takes."""
        return _types_taken(cls.model_fields[info.field_name].annotation) if info.field_name else set()

    @field_validator("*", mode="before")
    @classmethod
    def _typed_as_written(cls, value: Any, info: ValidationInfo) -> Any:
        """Only a number for a number, only a boolean for a boolean: pydantic took ``"true"``, ``'no'`` and ``1`` for
        booleans, YAML types as written. One validator for both, not one each: pydantic builds and inspects every
        ``"*"`` validator once per field of every section, at import (issue 17: start-up)."""
        taken = cls._taken(info)
        if taken == {bool} and not isinstance(value, bool):
            raise PydanticCustomError(NOT_A_BOOLEAN, "not a boolean")  # worded by _problem, which sees quotes
        if taken & {int, float} and bool not in taken and not (str in taken and isinstance(value, str)):
            return _a_number(value)
        return value


class ModelSection(_Section):
    path: FilePath | None = Field(None, description="model bundle (.json sidecar, .tflite or folder); null: the bundled default")
    runtime: Literal["auto", "ai_edge_litert", "tflite_runtime", "tensorflow"] = "auto"
    num_threads: int = Field(1, ge=1, le=8, description="interpreter threads")

    @property
    def runtime_choice(self) -> str | None:
        """The runtime to force, or None to take the best installed one."""
        return None if self.runtime == "auto" else self.runtime


GATE_DBFS = -75.0
"""Windows quieter than this are not classified: they count as background (the model, never trained on digital
silence, gives it a confident label). The daemon's default, and what ``classify`` and the dashboard apply."""


class AudioSection(_Section):
    device: Annotated[int | str, BeforeValidator(_an_index_or_a_name)] | None = Field(
        None, description="input device index or name substring; null: system default")
    sample_rate: int | None = Field(None, ge=8000, le=384000, description="capture rate in Hz; null: device default")
    channels: int | None = Field(None, ge=1, le=32, description="captured channels, downmixed to mono; null: device default")
    block_size: int = Field(1024, ge=64, le=65536, description="frames per audio callback")
    buffer_s: float = Field(10.0, ge=1.0, le=120.0, description="ring buffer capacity in seconds")
    hop_s: float = Field(0.5, gt=0.0, le=60.0, description="seconds between window starts (rounded to STFT hops)")
    gate_dbfs: Dbfs = Field(GATE_DBFS, description="windows quieter than this skip inference and count as background")
    reopen_max_s: Seconds = Field(30.0, le=3600, description="longest wait between attempts to reopen the device")

    def opens_as(self, other: "AudioSection") -> bool:
        """Whether the input is opened as ``other`` opens it: the hop and the gate are the windows', the reopen cap
        the waits', so a reload that changes only them keeps the input open (a gate retuned from the couch closed
        and reopened the microphone: a gap in what it heard)."""
        not_the_device = {"hop_s", "gate_dbfs", "reopen_max_s"}
        return self.model_dump(exclude=not_the_device) == other.model_dump(exclude=not_the_device)


class DetectorSection(_Section):
    thresholds: dict[str, Probability] = Field(default_factory=dict,
                                               description="per-label overrides of the bundle's thresholds (1: the label is off)")
    ignore: tuple[str, ...] = Field(("background",), description="labels that never become events")
    smoothing_windows: int | None = Field(None, ge=1, le=50, description="scores are averaged over this many windows; "
                                          "null: the model's, which its thresholds were tuned with")
    release_s: float | None = Field(None, ge=0.0, le=600, description="an event ends after the label has been absent "
                                    "this long; null: the model's, which its thresholds were tuned with")
    min_duration_s: float = Field(0.0, ge=0.0, le=600, description="shorter events are dropped")
    cooldown_s: float = Field(0.0, ge=0.0, le=3600, description="after an event ends, the label cannot restart for this long")
    max_duration_s: float = Field(600.0, ge=1.0, le=86400, description="a longer event is reported and continued "
                                  "(at least 1 s: 0.001 split a siren into a piece every hop, 10,079 events)")
    require_contrast: tuple[str, ...] = Field(CONTRAST_LABELS, description="labels whose events start only where the "
                                              "sound stands 10 dB above the recent quiet level, so a steady bed "
                                              "that resembles them (rain, wind) does not start one")


class LoudnessSection(_Section):
    enabled: bool = True
    threshold_dbfs: Dbfs = Field(-10.0, description="1 s level that counts as loud")
    min_duration_s: float = Field(2.0, ge=0.0, le=3600, description="loud for at least this long to raise an event")


class LevelsSection(_Section):
    interval_s: int = Field(60, ge=1, le=86400, description="period of level reports, whole seconds (a report is made "
                            "of 1 s levels: 2.5 was read as 2, unsaid)")
    calibration_db: float | None = Field(None, ge=0.0, le=200.0, description="dB SPL that 0 dBFS corresponds to; null: uncalibrated")


class ScoresSection(_Section):
    enabled: bool = Field(False, description="send the top-3 scores of windows, for tuning thresholds")
    interval_s: float = Field(1.0, ge=0.0, le=3600, description="at most one report per this many seconds")


class StatsSection(_Section):
    interval_s: float = Field(60.0, ge=1.0, le=86400, description="period of `stats` health messages (every sink)")


class JsonlSection(_Section):
    path: Annotated[str, BeforeValidator(_a_path)] | None = Field(None, description="JSON-lines log of everything "
                                                                  "sent to sinks; '-' for stdout")


class TlsSection(_Section):
    enabled: bool = False
    ca_file: FilePath | None = None
    cert_file: FilePath | None = None
    key_file: FilePath | None = None
    insecure: bool = Field(False, description="skip host name verification (self-signed setups only)")


class SpoolSection(_Section):
    directory: FilePath = Field(Path("/var/lib/noisewatch/spool"), description="events wait here while the broker is away")
    max_mb: float = Field(100.0, gt=0.0, le=100000, description="spool size bound in MiB of disk; oldest dropped first")
    max_age_h: float = Field(168.0, gt=0.0, le=87600, description="spooled events older than this are dropped")


MAX_CLIENT_ID_BYTES = 65535
"""MQTT's limit on a UTF-8 string (a two-byte length)."""
HA_BIRTH_TOPIC = "homeassistant/status"
"""Home Assistant's birth and will topic, whatever its discovery prefix."""


def _not_home_assistants_status(prefix: str) -> str:
    """A listener's ``<prefix>/status`` must not be Home Assistant's: its retained ``offline`` (at every stop, and as
    its last will) told every listener on the broker that Home Assistant was down, and they held their events."""
    if f"{prefix}/status" == HA_BIRTH_TOPIC:
        raise ValueError(f"the listener's status topic would be {prefix}/status, Home Assistant's own: its 'offline' "
                         "would tell every listener that Home Assistant is down (use e.g. noisewatch/<device_id>)")
    return prefix


def checked_topic_prefix(value: str) -> str:
    """``value`` if the broker will take it as the start of every topic we publish; ValueError otherwise.

    Wildcards make paho raise on publish, a leading ``$`` is the broker's own namespace ($SYS: silently
    dropped), and NUL or over-long topics make mosquitto drop the connection before accepting it."""
    if not value or value.endswith("/") or value.startswith("/"):
        raise ValueError("must be a non-empty topic without a leading or trailing '/'")
    if any(c in value for c in "#+\0"):
        raise ValueError("must not contain the MQTT wildcards '+' or '#', or a NUL character")
    if value.startswith("$"):
        raise ValueError("must not start with '$' (the broker's own topics, e.g. $SYS, are not ours to publish to)")
    if len(value.encode()) > MAX_PREFIX_BYTES:
        raise ValueError(f"must be at most {MAX_PREFIX_BYTES} bytes")
    return value


class HomeAssistantSection(_Section):
    discovery: bool = True
    prefix: str = "homeassistant"
    device_name: str | None = Field(None, description="name shown in Home Assistant; null: Noise listener <device_id>")
    configuration_url: str | None = Field(None, description="the dashboard's URL, linked from the device page")

    @field_validator("prefix")
    @classmethod
    def _prefix_is_a_topic(cls, value: str) -> str:
        return checked_topic_prefix(value)

    @field_validator("configuration_url")
    @classmethod
    def _url_home_assistant_takes(cls, value: str | None) -> str | None:
        """Home Assistant refuses every discovery message of a device whose URL has no scheme: the listener
        vanished from it without a word."""
        if value is not None and not re.match(r"(https?|homeassistant)://[^/\s]", value):
            raise ValueError("a URL starting with http:// or https:// (e.g. http://noisepi.local:8501); Home "
                             "Assistant rejects the whole device otherwise")
        return value


class MqttSection(_Section):
    enabled: bool = False
    host: str = "localhost"
    port: int = Field(1883, ge=1, le=65535)
    protocol: Literal["3.1.1", "5"] = "3.1.1"
    client_id: str | None = Field(None, description="null: noisewatch-<device_id>")
    keepalive_s: int = Field(60, ge=5, le=3600)
    username: str | None = None
    password_file: FilePath | None = Field(None, description="file holding the password (e.g. a systemd credential)")
    topic_prefix: str | None = Field(None, description="null: noisewatch/<device_id>")
    reconnect_max_s: float = Field(60.0, gt=0.0, le=3600)
    reconnect_min_s: float = Field(1.0, gt=0.0, le=3600, validate_default=True)  # after max: checked against it
    state_directory: FilePath | None = Field(None, description="thresholds set from Home Assistant and what discovery "
                                         "announced, kept across restarts; null: 'state' beside the spool folder")
    tls: TlsSection = TlsSection()
    spool: SpoolSection = SpoolSection()
    homeassistant: HomeAssistantSection = HomeAssistantSection()

    @property
    def state_path(self) -> Path:
        """Where the MQTT sink keeps its state files."""
        return self.state_directory or self.spool.directory.parent / "state"

    @field_validator("host")
    @classmethod
    def _host_alone(cls, value: str) -> str:
        """``broker:1883`` or ``mqtt://broker`` was taken as a host name and failed only at connect time; an empty
        one passed check-config and ended ``run`` in a traceback."""
        if not value.strip():
            raise ValueError("a host name or address is needed")
        if "://" in value:
            raise ValueError("a host name or address without a scheme (the port goes in mqtt.port, TLS in mqtt.tls)")
        if value.startswith("["):
            raise ValueError("an IPv6 address goes without brackets (::1), the port in mqtt.port")
        if re.fullmatch(r"[^:\[\]]+:[0-9]+", value):
            host, port = value.rsplit(":", 1)
            raise ValueError(f"the port goes in mqtt.port: host {host!r}, port {port}")
        try:  # as the resolver encodes it: a part over 63 characters ended paho's thread at the first attempt
            value.encode("idna")
        except UnicodeError:
            raise ValueError("not a host name: each part between dots must be 1 to 63 characters") from None
        return value

    @field_validator("client_id")
    @classmethod
    def _client_id_a_broker_takes(cls, value: str | None) -> str | None:
        """check-config's probe connects under an id of its own, so one the broker or paho will not take was found
        only at run: a NUL (mosquitto closed every connection), a lone surrogate (a traceback), over 64 KiB (paho's
        thread died at each attempt)."""
        if value is None:
            return None
        if not value or any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in value):
            raise ValueError("must be non-empty, without control characters (null: noisewatch-<device_id>)")
        try:
            size = len(value.encode("utf-8"))
        except UnicodeEncodeError:
            raise ValueError("is not valid text (a lone \\ud800-\\udfff escape)") from None
        if size > MAX_CLIENT_ID_BYTES:
            raise ValueError(f"must be at most {MAX_CLIENT_ID_BYTES} bytes")
        return value

    @field_validator("reconnect_min_s")
    @classmethod
    def _backoff_order(cls, value: float, info: ValidationInfo) -> float:
        """Checked whichever of the two is left at its default (61 with the default 60 was taken)."""
        high = info.data.get("reconnect_max_s")
        if high is not None and value > high:
            raise ValueError(f"must not exceed mqtt.reconnect_max_s ({high:g} s)")
        return value

    @field_validator("topic_prefix")
    @classmethod
    def _prefix_is_a_topic(cls, value: str | None) -> str | None:
        return None if value is None else _not_home_assistants_status(checked_topic_prefix(value))

    @field_validator("homeassistant")
    @classmethod
    def _apart_from_the_listener(cls, value: HomeAssistantSection, info: ValidationInfo) -> HomeAssistantSection:
        """Checked here, where the topic prefix is known (it comes first): Home Assistant's status under its own
        discovery prefix must not be the listener's."""
        prefix = info.data.get("topic_prefix")
        if prefix is not None and prefix == value.prefix:
            raise ValueError(f"prefix {value.prefix!r} is mqtt.topic_prefix too: Home Assistant's status topic would be "
                             "the listener's")
        return value


class LoggingSection(_Section):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "journal", "plain"] = Field("auto", description="auto: journal when run by systemd")


def default_device_id() -> str:
    """This machine's host name, made topic-safe: on a fleet each Pi is told apart without configuring it."""
    name = re.sub(r"[^A-Za-z0-9_-]", "-", socket.gethostname().split(".")[0])[:64].strip("-")
    return name or "noisewatch"


def stored_password(path: Path) -> str | None:
    """The password a credential file holds; None where it is missing, empty, unreadable to this user (the stored
    one is root's: the service gets it as its systemd credential) or not to be trusted: not a regular file of this
    user or root that only its owner may change, in such a folder. A config in a shared folder (/tmp) had another
    user's planted file win over ``mqtt.password_file``, a planted link send a root-only file to the broker as the
    password, and a planted pipe hang the listener."""
    try:
        if not _owned_and_private(path.parent.lstat()):
            return None
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as file:
        status = os.fstat(fd)
        if not (stat.S_ISREG(status.st_mode) and _owned_and_private(status)):
            return None
        try:
            return file.read().decode("utf-8").strip() or None
        except (OSError, UnicodeDecodeError):
            return None


def _owned_and_private(status: os.stat_result) -> bool:
    """Owned by this user or root, and writable by no one else; not a link (``lstat``)."""
    return (not stat.S_ISLNK(status.st_mode) and status.st_uid in (0, os.geteuid())
            and not status.st_mode & (stat.S_IWGRP | stat.S_IWOTH))


class Config(_Section):
    device_id: str = Field(default_factory=default_device_id,
                           description="names this listener in events and MQTT topics; null: the host name")
    model: ModelSection = ModelSection()
    audio: AudioSection = AudioSection()
    detector: DetectorSection = DetectorSection()
    loudness: LoudnessSection = LoudnessSection()
    levels: LevelsSection = LevelsSection()
    scores: ScoresSection = ScoresSection()
    stats: StatsSection = StatsSection()
    jsonl: JsonlSection = JsonlSection()
    mqtt: MqttSection = MqttSection()
    logging: LoggingSection = LoggingSection()
    _folder: Path | None = PrivateAttr(None)
    """The folder of the file it was read from (:func:`load_config`), where a stored password lies."""
    _no_settings: bool = PrivateAttr(False)

    @property
    def read_no_settings(self) -> bool:
        """Its file held no settings at all (empty, or comments only): ``check-config`` says that a reload refuses
        it, from this reading (a second one read nothing from a pipe, and warned of a file that held settings)."""
        return self._no_settings

    @field_validator("device_id", mode="before")
    @classmethod
    def _host_name_for_null(cls, value: Any) -> Any:
        return default_device_id() if value is None else value

    @field_validator("device_id")
    @classmethod
    def _device_id_is_topic_safe(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", value):
            raise ValueError("must be 1-64 letters, digits, '_' or '-' (it becomes part of MQTT topics)")
        return value

    def mqtt_password(self) -> str | None:
        """$NOISEWATCH_MQTT_PASSWORD, else the systemd credential, else the one ``noisewatch setup`` stored beside
        the config file (:data:`STORED_PASSWORD`) where this user may read it, else ``mqtt.password_file``. Without
        the stored one, ``check-config`` or ``run`` by hand (root) right after setup said the user had no password
        and the broker refused it: a wrong password hunted for where the right one was stored.

        Never from the YAML itself, so the config file can be world-readable.
        """
        if os.environ.get(PASSWORD_ENV):
            return os.environ[PASSWORD_ENV]
        credential = Path(os.environ.get("CREDENTIALS_DIRECTORY", "/nonexistent"), CREDENTIAL_NAME)
        if (text := stored_password(credential)) is not None:
            return text
        if self._folder is not None and (text := stored_password(self._folder / STORED_PASSWORD)) is not None:
            return text
        if self.mqtt.password_file is None:
            return None
        try:
            return self.mqtt.password_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"mqtt.password_file: {self.mqtt.password_file}: {exc.strerror}") from None
        except UnicodeDecodeError:
            raise ConfigError(f"mqtt.password_file: {self.mqtt.password_file}: not UTF-8 text") from None


# --- loading -------------------------------------------------------------------------------------

CHANGES_SHOWN = 8
"""A reload's log line names at most this many changed settings, then says how many more."""
_UNSET = object()


def config_changes(old: Config, new: Config) -> str:
    """What a reload changed, ``key: old -> new`` by key path, or ``no setting changed``: an admin's ``systemctl
    reload`` was answered "configuration reloaded" whatever it applied, an edit saved to another file included. The
    contents of files the config names (a password file, TLS keys) are no setting: a reload reads them anew all the
    same."""
    before, after = _flat(old.model_dump(mode="json")), _flat(new.model_dump(mode="json"))
    keys = [*after, *(key for key in before if key not in after)]
    changed = [f"{key}: {_setting(before, key)} -> {_setting(after, key)}" for key in keys
               if before.get(key, _UNSET) != after.get(key, _UNSET)]
    if not changed:
        return "no setting changed"
    more = len(changed) - CHANGES_SHOWN
    return "; ".join(changed[:CHANGES_SHOWN]) + (f"; and {more} more" if more > 0 else "")


def _flat(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested settings by dotted key path (an empty mapping has none); a list is one value."""
    flat: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _setting(values: dict[str, Any], key: str) -> str:
    """As JSON (which YAML reads) says it: ``true``, ``null``, ``["background"]``, a text in quotes (``"null"`` is
    no null, and a device name may hold a semicolon)."""
    return "(not set)" if key not in values else json.dumps(values[key])


NO_SETTINGS = "holds no settings (empty, or comments only), as a file being written does for a moment"


def load_config(path: str | Path | None, blank_ok: bool = True) -> Config:
    """Read, validate and resolve a config file (None: all defaults). Raises ConfigError.

    ``blank_ok`` False (a reload): a file with no settings at all, empty or comments only, is refused. A config
    written in place (``>``, ``cp``, an editor that truncates first) looks like that for a moment, and a reload
    at that moment applied every default: MQTT off, the device id and thresholds gone, logged as "configuration
    reloaded". A file meant to hold only the defaults says so with ``{}``."""
    if path is None:
        return Config()
    path = Path(path)
    try:
        node = _compose(path)
        _check_shape(path, node)
    except RecursionError:  # brackets nested thousands deep: no config looks like that
        raise ConfigError(f"{path}: nested too deeply to be a noisewatch config") from None
    if node is None and not blank_ok:
        raise ConfigError(f"{path}: {NO_SETTINGS}; not applied (write {{}} for every default)")
    data = _construct(path, node) if node is not None else None
    if node is not None and data is not None and not isinstance(data, dict):
        raise ConfigError(f"{path}:{node.start_mark.line + 1}: (top level) = {_shown(data, node)}: must be a mapping of "
                          f"sections (audio:, detector:, mqtt:, ...){_joined_to_its_value(node)}")
    try:
        config = Config.model_validate(data)  # an empty file (None) keeps every default, as an empty section does
    except ValidationError as exc:
        raise ConfigError("\n".join(_describe(path, dict(error), node) for error in exc.errors())) from None
    config = _resolve_paths(config, path.parent)
    config._folder, config._no_settings = path.absolute().parent, node is None
    return config


def _compose(path: Path) -> yaml.Node | None:
    """The file's YAML node graph (aliases not yet expanded); ConfigError for unreadable, non-UTF-8 or bad YAML."""
    try:
        text = path.read_bytes().decode("utf-8")
        return yaml.compose(text, Loader=yaml.SafeLoader)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(_not_utf8(path, exc)) from None
    except yaml.YAMLError as exc:
        raise ConfigError(_yaml_problem(path, exc)) from None


def _not_utf8(path: Path, exc: UnicodeDecodeError) -> str:
    """The line, key and column of the first byte that is not UTF-8 (a Latin-1 'ü' in a device name, say)."""
    before = exc.object[:exc.start]
    line = before.count(b"\n") + 1
    column = len(before[before.rfind(b"\n") + 1:].decode()) + 1
    key = _key_at(exc.object.decode("utf-8", "replace"), line)
    return f"{path}:{line}: {key}not UTF-8 text (byte {exc.object[exc.start]:#04x}, column {column})"


def _key_at(text: str, line: int) -> str:
    """``key.path: `` of the last key at or above 1-based ``line``, or nothing where the YAML does not parse."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except (yaml.YAMLError, RecursionError):  # nested past Python's stack: the caller's own error says so
        return ""
    keys = []
    while isinstance(node, yaml.MappingNode) and (above := [kv for kv in node.value if kv[0].start_mark.line < line]):
        key, node = above[-1]
        keys.append(str(key.value))
    return ".".join(keys) + ": " if keys else ""


def _yaml_problem(path: Path, exc: yaml.YAMLError) -> str:
    """One line naming the file, the line and column PyYAML stopped at, and what it found wrong there."""
    if not isinstance(exc, yaml.MarkedYAMLError):
        return f"{path}: not valid YAML: {str(exc).splitlines()[0]}"
    mark = exc.problem_mark or exc.context_mark
    problem = exc.problem or exc.context or "not valid YAML"
    context = f", {exc.context}" if exc.problem and exc.context else ""
    if exc.problem == "found character '\\t' that cannot start any token":  # a tab, in PyYAML's words
        problem, context = "a tab, which YAML does not take here: indent and separate with spaces", ""
    if exc.context_mark and exc.problem_mark and _at_the_end(exc.problem_mark):
        # a quote or bracket never closed: the end of the file is no help, where it was opened is
        mark, context = exc.context_mark, f", {exc.context} that starts here" if exc.context else ""
    where = f"{path}:{mark.line + 1}" if mark else str(path)
    column = f" (column {mark.column + 1})" if mark else ""
    return f"{where}: not valid YAML: {problem}{context}{column}"


def _at_the_end(mark: yaml.Mark) -> bool:
    """Whether PyYAML stopped at the end of the file (only blank space after it)."""
    return mark.buffer is not None and not mark.buffer[mark.index:].strip(" \t\r\n\0")


def _construct(path: Path, node: yaml.Node) -> Any:
    """Python values of a checked node graph, as yaml.safe_load would give them."""
    loader = yaml.SafeLoader("")
    try:
        return loader.construct_document(node)
    except yaml.YAMLError as exc:
        raise ConfigError(_yaml_problem(path, exc)) from None
    finally:
        loader.dispose()


def _check_shape(path: Path, node: yaml.Node | None) -> None:
    """Refuse what YAML allows but a config never needs: a key that is not a name, a key given twice (the later
    one silently wins), and aliases expanding to an enormous document (an alias bomb)."""
    sizes: dict[int, int] = {}

    def size(n: yaml.Node, keys: str) -> int:
        if id(n) not in sizes:
            sizes[id(n)] = 0  # a recursive alias counts once
            children: list[tuple[yaml.Node, str]] = []
            if isinstance(n, yaml.MappingNode):
                _check_keys(path, n, keys)
                children = [(part, f"{keys}{k.value}.") for k, v in n.value for part in (k, v)]
            elif isinstance(n, yaml.SequenceNode):
                children = [(child, keys) for child in n.value]
            elif isinstance(n, yaml.ScalarNode):
                _check_base_60(path, n, keys)
            sizes[id(n)] = min(1 + sum(size(child, where) for child, where in children), MAX_YAML_NODES + 1)
        return sizes[id(n)]

    if node is not None and size(node, "") > MAX_YAML_NODES:
        raise ConfigError(f"{path}: expands to more than {MAX_YAML_NODES} YAML nodes (aliases used over and over); "
                          "write the settings out")


def _dotted(keys: str) -> str:
    """A key path as messages name it (``audio.hop_s``), from the ``audio.hop_s.`` the shape checks build."""
    return keys.rstrip(".") or "(top level)"


def _check_base_60(path: Path, node: yaml.ScalarNode, keys: str) -> None:
    """Refuse a plain ``1:30``: YAML 1.1 reads it as 90 (base 60, like a clock), so ``reopen_max_s: 1:30`` was
    silently 90 s and ``device_id: 12:30`` was told it gave the number 750."""
    if node.style is None and ":" in node.value and _read_as(node) == "a number":
        raise ConfigError(f"{path}:{node.start_mark.line + 1}: {_dotted(keys)} = {node.value}: "
                          f"YAML 1.1 reads this as {yaml.safe_load(node.value)} (base 60, like a clock): write that "
                          "number, or put it in quotes for text")


KEY_TAGS = {"tag:yaml.org,2002:str", "tag:yaml.org,2002:merge"}
"""What YAML may read a key as: a name, or ``<<`` (merge an anchored mapping in)."""
YAML_KINDS = {"null": "null", "bool": "a boolean", "int": "a number", "float": "a number", "timestamp": "a date"}
"""How an error names what YAML read an unquoted scalar as, by the last part of its tag."""
SHOWN_AS_WRITTEN = ("null", "a boolean", "a date")
"""What YAML read a scalar as when an error shows it as written: Python would show None, True, datetime.date(...)."""


def _read_as(node: yaml.ScalarNode) -> str:
    """What YAML read a scalar as (``1234``: a number, ``yes``: a boolean, ``2024-01-01``: a date)."""
    kind = node.tag.rsplit(":", 1)[-1]
    return YAML_KINDS.get(kind, kind)


def _check_keys(path: Path, node: yaml.MappingNode, keys: str) -> None:
    """Each key of a mapping (at dotted ``keys``) is a name, given once."""
    seen: dict[str, int] = {}
    for key, _ in node.value:
        line = key.start_mark.line + 1
        if not isinstance(key, yaml.ScalarNode):  # "? [a, b]": a traceback (exit 1, restarted by systemd) before
            raise ConfigError(f"{path}:{line}: {_dotted(keys)}: a key must be a plain name, "
                              f"not a {key.id}")
        if key.tag not in KEY_TAGS:  # "~:" or "1:" was "None = None: Keys should be strings", with no line
            raise ConfigError(f"{path}:{line}: {keys}{key.value}: YAML reads this key as {_read_as(key)}, "
                              "not a name (in quotes it is one)")
        if key.value in seen:
            raise ConfigError(f"{path}:{line}: {keys}{key.value}: given twice (lines {seen[key.value]} and {line})")
        seen[str(key.value)] = line


def _resolve_paths(config: Config, base: Path) -> Config:
    """Relative file paths in the config are relative to the config file, not the working dir."""

    def resolve(p: Path | None) -> Path | None:
        return p if p is None or p.is_absolute() else (base / p).resolve()

    mqtt = config.mqtt
    jsonl = config.jsonl.path
    if jsonl not in (None, "-"):
        jsonl = str(resolve(Path(jsonl)))
    tls = mqtt.tls.model_copy(update={k: resolve(getattr(mqtt.tls, k)) for k in ("ca_file", "cert_file", "key_file")})
    return config.model_copy(
        update={
            "model": config.model.model_copy(update={"path": resolve(config.model.path)}),
            "jsonl": config.jsonl.model_copy(update={"path": jsonl}),
            "mqtt": mqtt.model_copy(
                update={
                    "tls": tls,
                    "password_file": resolve(mqtt.password_file),
                    "state_directory": resolve(mqtt.state_directory),
                    "spool": mqtt.spool.model_copy(update={"directory": resolve(mqtt.spool.directory)}),
                }
            ),
        }
    )


def _describe(path: Path, error: dict[str, Any], node: yaml.Node | None) -> str:
    """One line: file:line: key.path = value: problem."""
    keys = [str(part) for part in error["loc"]]
    line = _line_of(node, error["loc"])
    where = f"{path}:{line}" if line else str(path)
    key = ".".join(keys) or "(top level)"
    if error["type"] == "extra_forbidden":
        return f"{where}: {key}: {_unknown(keys[-1])}"
    if error["type"] == "missing":
        return f"{where}: {key}: required key is missing"
    value = _value_node(node, error["loc"])
    return f"{where}: {key} = {_shown(error.get('input'), value)}: {_problem(error, value)}"


def _unknown(name: str) -> str:
    """Why a key is refused: a key spelt right but in the wrong section, or indented wrong, was told to check
    its spelling."""
    if name == "password":
        return (f"the MQTT password never goes in the YAML: put it in a file named by mqtt.password_file, in "
                f"${PASSWORD_ENV}, or in the systemd credential {CREDENTIAL_NAME} (`noisewatch setup` writes one)")
    owners = _sections_with(name, Config, "")
    if not owners:
        return ("unknown key (check the spelling; the shipped config lists every key with its range: "
                "/etc/noisewatch/config.yaml as installed, config/noisewatch.yaml in the source)")
    listed = owners[0] if len(owners) == 1 else f"{', '.join(owners[:-1])} and {owners[-1]}"
    return f"unknown key here; it is a key of {listed} (check the section it is under and its indentation)"


def _sections_with(name: str, section: type[BaseModel], at: str) -> list[str]:
    """The dotted paths of the sections (``section`` at ``at`` and those in it) that have a key ``name``."""
    found = [at.rstrip(".") or "the top level"] if name in section.model_fields else []
    for key, field in section.model_fields.items():
        if isinstance(field.annotation, type) and issubclass(field.annotation, _Section):
            found += _sections_with(name, field.annotation, f"{at}{key}.")
    return found


def _problem(error: dict[str, Any], value: yaml.Node | None) -> str:
    """pydantic's words, or ours where they speak of Python rather than of the YAML the user wrote."""
    problem = YAML_WORDS.get(error["type"]) or str(error["msg"]).removeprefix("Value error, ")
    scalar = value if isinstance(value, yaml.ScalarNode) else None
    if error["type"] in ("model_type", "dict_type"):
        return problem + _joined_to_its_value(scalar)
    if error["type"] == TEXT_FOR_A_NUMBER:
        return ("a string in quotes, not a number: write the number without them" if _quoted(scalar)
                else "not a number (YAML reads it as text; write a number in digits, e.g. 0.001 rather than 1e-3)")
    if error["type"] == NOT_A_BOOLEAN:
        return ("a string in quotes, not a boolean: write true or false without quotes" if _quoted(scalar)
                else "not a boolean: write true or false")
    if error["type"] in TEXT_TYPES and scalar and _read_as(scalar) not in ("str", "null"):
        return f"{problem}; YAML reads it as {_read_as(scalar)}: in quotes it is text"
    return problem


def _joined_to_its_value(node: yaml.Node | None) -> str:
    """Why a plain ``hop_s:0.5`` given for a section is not one: YAML takes a key only with a space after its colon
    (``http://...`` is no key)."""
    if isinstance(node, yaml.ScalarNode) and node.style is None and re.match(r"[\w-]+:[^\s/]", node.value):
        return "; YAML reads it as text, not a key and its value: put a space after the colon"
    return ""


def _quoted(scalar: yaml.ScalarNode | None) -> bool:
    """Whether the user wrote the value in quotes (text to YAML, whatever it looks like)."""
    return scalar is not None and scalar.style in ("'", '"')


def _shown(value: Any, node: yaml.Node | None) -> str:
    """``value`` for a one-line message: as written where Python's repr is not YAML (``2024-01-01``, not
    ``datetime.date(2024, 1, 1)``; ``on``, not ``True``); a whole section given where one value goes is cut short."""
    if isinstance(node, yaml.ScalarNode) and _read_as(node) in SHOWN_AS_WRITTEN:
        return node.value or "null"  # nothing after the colon is null too
    text = repr(value)
    return text if len(text) <= MAX_SHOWN else text[:MAX_SHOWN - 3] + "..."


def locate(path: str | Path, keys: Sequence[str | None]) -> list[str]:
    """``file:line`` of each dotted key (the deepest part of it the file has) for problems found after
    validation, against the model or the disk; the file alone where a key is not in it, or is None. The file
    is read once for all of them."""
    try:
        node = _compose(Path(path))
    except ConfigError:
        node = None
    lines = [_line_of(node, tuple(key.split("."))) if key else None for key in keys]
    return [f"{path}:{line}" if line else str(path) for line in lines]


def _line_of(node: yaml.Node | None, loc: tuple[Any, ...]) -> int | None:
    """1-based YAML line of the deepest key in ``loc`` that exists in the document."""
    found = _entries(node, loc)
    return found[-1][0].start_mark.line + 1 if found else None


def _value_node(node: yaml.Node | None, loc: tuple[Any, ...]) -> yaml.Node | None:
    """The node of the value at ``loc``, if the document has it (a merged-in ``<<`` value it has elsewhere)."""
    found = _entries(node, loc)
    return found[-1][1] if found and len(found) == len(loc) else None


def _entries(node: yaml.Node | None, loc: tuple[Any, ...]) -> list[tuple[yaml.Node, yaml.Node]]:
    """The (key, value) nodes along ``loc``, as deep as the document has them; a list item is its own key."""
    found = []
    for part in loc:
        match = None
        if isinstance(node, yaml.MappingNode):
            match = next(((k, v) for k, v in node.value if k.value == str(part)), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            match = (node.value[part], node.value[part])
        if match is None:
            break
        found.append(match)
        node = match[1]
    return found

"""``noisewatch setup``: the first configuration (input device, device id, MQTT broker, password).

Asks on a terminal, takes flags for scripted installs, and edits the config in place: the
commented default file stays readable (only the values of the keys it sets change), the result
is validated with the daemon's own loader before it replaces the file, and the password goes to
the systemd credential directory the unit reads (``credentials/mqtt_password`` becomes
``$CREDENTIALS_DIRECTORY/noisewatch_mqtt_password``), never into the YAML.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import re
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from noisewatch.daemon.statefile import write_text

if TYPE_CHECKING:
    from pydantic import BaseModel

    from noisewatch.config import Config

DEFAULT_CONFIG = Path("/etc/noisewatch/config.yaml")
PASSWORD_FILE = "mqtt_password"  # config.STORED_PASSWORD's name (config loads pydantic: not on --help's path)
DEFAULT_DEVICE_ID = "noisewatch"
CLEAR = "-"
"""The answer that empties a setting a question shows as its current value (Enter keeps that value)."""
BROKER_PROBE_S = 3.0
"""How long setup waits for the broker's answer: plenty for one on the network, short for a wrong address."""
EX_CANTCREAT = 73
"""sysexits.h: the config (or its credential) cannot be written."""
_KEY = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z_][A-Za-z0-9_]*):(?P<value>[^#\n]*?)(?P<comment> +#.*)?$")

Ask = Callable[[str, str], str]


@dataclass
class Answers:
    """What setup writes; None leaves a setting as it is."""

    device: str | None = None
    device_id: str | None = None
    mqtt_host: str | None = None
    mqtt_port: int | None = None
    mqtt_user: str | None = None
    mqtt_password: str | None = None


def yaml_scalar(value: str | int | bool | None) -> str:
    """``value`` as a YAML scalar (JSON strings are valid YAML and quote whatever needs it)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    return json.dumps(value)


def set_key(text: str, path: tuple[str, ...], value: str | int | bool | None) -> str:
    """``text`` with the YAML key at ``path`` (block mappings, 2-space indent) set to ``value``.

    Comments and every other line stay as they are; a missing key (or section) is added at the
    end of its section (or file).
    """
    lines = text.splitlines()
    start, end, depth = 0, len(lines), 0
    for depth, key in enumerate(path):
        found = _find_key(lines, start, end, depth * 2, key)
        if found is None:
            block = [f"{'  ' * (depth + i)}{k}:" for i, k in enumerate(path[depth:-1])]
            block.append(f"{'  ' * (len(path) - 1)}{path[-1]}: {yaml_scalar(value)}")
            insert_at = _section_end(lines, start, end, depth * 2)
            return "\n".join(lines[:insert_at] + block + lines[insert_at:]) + "\n"
        if depth == len(path) - 1:
            match = _KEY.match(lines[found])
            assert match is not None  # _find_key matched this line
            lines[found] = f"{match['indent']}{key}: {yaml_scalar(value)}{match['comment'] or ''}"
            return "\n".join(lines) + "\n"
        start, end = found + 1, _section_end(lines, found + 1, end, depth * 2 + 2)
    return text


def _find_key(lines: list[str], start: int, end: int, indent: int, key: str) -> int | None:
    for i in range(start, end):
        match = _KEY.match(lines[i])
        if match and len(match["indent"]) == indent and match["key"] == key:
            return i
    return None


def _section_end(lines: list[str], start: int, end: int, indent: int) -> int:
    """Index after the last line of the block that starts at ``start`` with at least ``indent`` spaces."""
    last = start
    for i in range(start, end):
        stripped = lines[i].strip()
        if not stripped or stripped.startswith("#"):
            continue
        if len(lines[i]) - len(lines[i].lstrip(" ")) < indent:
            break
        last = i + 1
    return last


def apply(text: str, answers: Answers) -> str:
    """The config text with the answers set (MQTT turned on when a broker host is given, off when it is "")."""
    if answers.device is not None:
        index = answers.device.removeprefix("-").isdigit()  # -1 too: an index the config refuses, saying why
        device: str | int | None = int(answers.device) if index else answers.device or None
        text = set_key(text, ("audio", "device"), device)
    if answers.device_id is not None:
        text = set_key(text, ("device_id",), answers.device_id)
    if answers.mqtt_host:
        text = set_key(text, ("mqtt", "enabled"), True)
        text = set_key(text, ("mqtt", "host"), answers.mqtt_host)
    elif answers.mqtt_host == "":  # "no MQTT" answered: a listener set up with a broker is turned off
        text = set_key(text, ("mqtt", "enabled"), False)
    if answers.mqtt_port is not None:
        text = set_key(text, ("mqtt", "port"), answers.mqtt_port)
    if answers.mqtt_user is not None:
        text = set_key(text, ("mqtt", "username"), answers.mqtt_user or None)
    return text


def ask_terminal(question: str, default: str) -> str:
    """One answer from the terminal; Enter keeps ``default``, CLEAR gives "" (else a setting shown with a value,
    a device or a user, could never be emptied again)."""
    answer = input(f"{question} [{default}]: " if default else f"{question}: ").strip()
    return "" if answer == CLEAR else answer or default


def interview(current: dict[str, object], ask: Ask = ask_terminal,
              ask_secret: Callable[[str], str] = getpass.getpass, password_stored: bool = False) -> Answers:
    """Ask for each setting, showing the current value as the default; an answer the config would refuse is
    asked again at once, with the config's own words (all answers were lost at the end before)."""
    from noisewatch.config import Config, MqttSection, default_device_id  # pydantic: not on ``--help``'s path

    mqtt, audio = _section(current, "mqtt"), _section(current, "audio")
    _show_devices()
    answers = Answers()
    answers.device = ask(f"Input device (index or part of its name; {CLEAR} for the system default)",
                         str(audio.get("device") or ""))
    device_id = str(current.get("device_id") or DEFAULT_DEVICE_ID)
    answers.device_id = _ask_valid(ask, "Device id (names this listener in MQTT and Home Assistant)",
                                   default_device_id() if device_id == DEFAULT_DEVICE_ID else device_id,
                                   lambda answer: _refusal(Config, "device_id", answer))
    enabled = bool(mqtt.get("enabled"))
    answers.mqtt_host = _ask_valid(ask, f"MQTT broker host ({CLEAR} for no MQTT)",
                                   str(mqtt.get("host") or "") if enabled else "",
                                   lambda answer: _refusal(MqttSection, "host", answer) if answer else None)
    if answers.mqtt_host:
        answers.mqtt_port = _ask_port(ask, str(mqtt.get("port") or MqttSection.model_fields["port"].default))
        answers.mqtt_user = ask(f"MQTT user ({CLEAR} for anonymous)", str(mqtt.get("username") or ""))
        if answers.mqtt_user:
            keep = "keep the stored one" if password_stored else "none"
            answers.mqtt_password = ask_secret(f"MQTT password (empty: {keep}): ") or None
    return answers


def _ask_valid(ask: Ask, question: str, default: str, problem: Callable[[str], str | None]) -> str:
    """``question`` until ``problem`` finds none in the answer."""
    while (trouble := problem(answer := ask(question, default))) is not None:
        print(f"{answer!r}: {trouble}")
    return answer


def _refusal(model: type[BaseModel], key: str, value: str) -> str | None:
    """What the config's own validation says of ``key: value`` in ``model`` (None: it takes it)."""
    from pydantic import ValidationError

    try:
        model.model_validate({key: value})
    except ValidationError as exc:
        return "; ".join(str(error["msg"]).removeprefix("Value error, ") for error in exc.errors())
    return None


def _ask_port(ask: Ask, default: str) -> int:
    """The broker's port, asked until it is a number (without this question a port went into the host, or
    into the next answer, the user name)."""
    while not ((answer := ask("MQTT broker port", default)).isascii() and answer.isdigit() and 0 < int(answer) < 65536):
        print(f"{answer!r} is not a port number (1-65535)")
    return int(answer)


def _section(current: dict[str, object], name: str) -> dict[str, object]:
    section = current.get(name)
    return section if isinstance(section, dict) else {}


def _show_devices() -> None:
    from noisewatch.daemon.sources import list_devices_main

    print("Audio input devices:")
    if list_devices_main(argparse.Namespace()) != 0:
        print("(none found: the system default is used; check `noisewatch devices` later)")


def save(config_path: Path, credentials: Path, answers: Answers) -> Config:
    """Write the edited config (validated first) and the password credential; ConfigError if invalid. The config
    as validated, for the checks that follow (each read the file again)."""
    from noisewatch.config import ConfigError, load_config  # pydantic: not on the path of ``noisewatch --help``

    text = apply(config_path.read_text(encoding="utf-8") if config_path.exists() else "", answers)
    fd, tmp = tempfile.mkstemp(suffix=".yaml", dir=config_path.parent)
    os.close(fd)
    try:
        Path(tmp).write_text(text, encoding="utf-8")
        config = load_config(tmp)  # beside the config: the same folder resolves its relative paths
    except ConfigError as exc:  # named by the file the user knows: the temporary one is gone as they read it
        raise ConfigError(str(exc).replace(tmp, f"{config_path} (as it would be written)")) from None
    finally:
        Path(tmp).unlink(missing_ok=True)
    mode = config_path.stat().st_mode & 0o777 if config_path.exists() else 0o644
    write_text(config_path, text, mode)
    if answers.mqtt_password:
        credentials.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_text(credentials / PASSWORD_FILE, answers.mqtt_password, 0o600)
    return config


def try_the_broker(config: Config, credentials: Path, answers: Answers) -> None:
    """Connect once, as the service will, so that a wrong host, port, user or password is said now rather than in
    the service's log; a warning only (the broker may not be up yet): the config is written all the same."""
    from noisewatch.config import ConfigError
    from noisewatch.daemon.sinks.mqtt_client import probe_listener  # paho: only where MQTT is on

    if not config.mqtt.enabled:
        return
    try:
        trouble = probe_listener(config, _service_password(config, credentials, answers), BROKER_PROBE_S)
    except ConfigError as exc:  # a password file or TLS file that cannot be read
        trouble = str(exc)
    if trouble is None:
        print(f"noisewatch setup: MQTT broker {config.mqtt.host}:{config.mqtt.port} took the connection")
    else:
        print(f"noisewatch setup: warning: {trouble} (saved all the same; the service keeps retrying)",
              file=sys.stderr)


def try_the_input(config: Config) -> None:
    """The audio input just given, looked up as ``run`` and ``check-config`` look it up: one that is not there now
    (a typo, a USB microphone not plugged in) was written without a word; a warning only (``run`` waits for it)."""
    from noisewatch.daemon.setup import audio_findings

    problems, warnings = audio_findings(config, None)
    for text in problems + warnings:
        print(f"noisewatch setup: warning: {text} (saved all the same)", file=sys.stderr)


def _service_password(config: Config, credentials: Path, answers: Answers) -> str | None:
    """The password the service will offer: the one just given, else the stored credential (the unit loads it),
    else the config's own (``mqtt.password_file``)."""
    from noisewatch.config import stored_password

    if answers.mqtt_password:
        return answers.mqtt_password
    return stored_password(credentials / PASSWORD_FILE) or config.mqtt_password()


def _current(config_path: Path) -> dict[str, object]:
    import yaml

    data = yaml.safe_load(config_path.read_text(encoding="utf-8")) if config_path.exists() else None
    return data if isinstance(data, dict) else {}


def main(args: argparse.Namespace) -> int:
    """Handler of ``noisewatch setup``: flags first, then questions for the rest when on a terminal."""
    from noisewatch.config import EX_CONFIG, PASSWORD_ENV, ConfigError

    config_path = Path(args.config)
    credentials = Path(args.credentials) if args.credentials else config_path.parent / "credentials"
    answers = Answers(args.device, args.device_id, args.mqtt_host, args.mqtt_port, args.mqtt_user,
                      os.environ.get(PASSWORD_ENV) if args.mqtt_password_env else None)
    flags_given = any(v is not None for v in vars(answers).values())
    asking = not flags_given and not args.non_interactive
    if (problem := _unwritable(config_path, credentials if asking or args.mqtt_password_env else None)) is not None:
        print(f"noisewatch setup: cannot write {config_path}: {problem}, or give --config a file in a folder you can "
              "write", file=sys.stderr)
        return EX_CANTCREAT
    if asking:
        if not sys.stdin.isatty():
            print("noisewatch setup: not a terminal; give --device/--mqtt-host/... or --non-interactive",
                  file=sys.stderr)
            return 2
        answers = interview(_current(config_path), password_stored=(credentials / PASSWORD_FILE).exists())
    if args.default_device_id and answers.device_id is None and _current(config_path).get(
            "device_id", DEFAULT_DEVICE_ID) == DEFAULT_DEVICE_ID:
        from noisewatch.config import default_device_id  # the id a config without one gets: one rule for both

        answers.device_id = default_device_id()
    try:
        config = save(config_path, credentials, answers)
    except ConfigError as exc:
        print(f"noisewatch setup: not saved: {exc}", file=sys.stderr)
        return EX_CONFIG
    except OSError as exc:  # a disk that filled or turned read-only since the check above
        print(f"noisewatch setup: not saved: {exc}", file=sys.stderr)
        return EX_CANTCREAT
    print(f"noisewatch setup: wrote {config_path}"
          + (f" and {credentials / PASSWORD_FILE}" if answers.mqtt_password else ""), flush=True)
    try_the_broker(config, credentials, answers)
    if answers.device is not None:
        try_the_input(config)
    print(f"noisewatch setup: a running service takes it with: {_take_it(answers)}")
    return 0


def _unwritable(config_path: Path, credentials: Path | None) -> str | None:
    """Why the config, or the password's folder ``credentials`` (None: no password to store), cannot be written here
    (a folder missing, or not writable: no sudo, a read-only disk), asked before the questions and before any write:
    found at the end, it was a traceback and every answer lost, or the config written and the password not."""
    folder = config_path.parent
    if not folder.is_dir():
        return f"the folder {folder} does not exist: make it (sudo mkdir -p {folder}; scripts/install.sh does)"
    if not os.access(folder, os.W_OK):
        return f"the folder {folder} is not writable by this user, or is on a read-only disk: run it with sudo"
    if credentials is not None:
        made_in = next(path for path in (credentials, *credentials.parents) if path.exists())
        if not (made_in.is_dir() and os.access(made_in, os.W_OK)):
            return (f"the password's folder {credentials} cannot be made or written ({made_in} is not a folder this "
                    "user may write): give --credentials a folder you can write, or run it with sudo")
    return None


def _take_it(answers: Answers) -> str:
    """The README's reload (it re-reads the config), but a restart for a new password: the unit loads its
    credentials only when it starts."""
    if answers.mqtt_password:
        return "sudo systemctl restart noisewatch (the service reads a new password only when it starts)"
    return "sudo systemctl reload noisewatch"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The ``noisewatch setup`` options (install.sh passes its own flags through)."""
    p.add_argument("--config", "-c", default=str(DEFAULT_CONFIG), help="config file to edit (default: %(default)s)")
    p.add_argument("--credentials", metavar="DIR", help="systemd credential directory (default: credentials/ beside the config)")
    p.add_argument("--device", help="audio input: index or part of its name ('' for the system default)")
    p.add_argument("--device-id", help="names this listener in MQTT topics and Home Assistant")
    p.add_argument("--default-device-id", action="store_true", help="set device_id to the host name if it is still the default")
    p.add_argument("--mqtt-host", help="broker host; turns MQTT on ('' turns it off)")
    p.add_argument("--mqtt-port", type=int)
    p.add_argument("--mqtt-user", help="broker user ('' for anonymous)")
    p.add_argument("--mqtt-password-env", action="store_true",
                   help="store $NOISEWATCH_MQTT_PASSWORD as the password credential (never a command-line argument)")
    p.add_argument("--non-interactive", action="store_true", help="never ask; only the flags given change anything")

"""Configuration errors are one line naming the file, line, key path and value; the shipped file is the default."""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
import yaml
from daemon_run import read_jsonl
from pydantic import BaseModel

from noisewatch.bundle import load_bundle, write_bundle
from noisewatch.config import EX_CONFIG, Config, ConfigError, load_config
from noisewatch.daemon.pipeline import Pipeline
from noisewatch.daemon.setup import bundle_problems

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "config" / "noisewatch.yaml"
MODEL = ROOT / "models" / "urban11.json"


def config_error(tmp_path: Path, text: str) -> str:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return str(info.value)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("audio:\n  block_size: 1024\n  hop_ss: 0.5\n", ":3: audio.hop_ss: unknown key"),
        ("audio:\nhop_s: 0.5\n", ":2: hop_s: unknown key here; it is a key of audio (check the section it is under and "
         "its indentation)"),  # was "unknown key (check the spelling; ...)", spelt right
        ("audio:\n  threshold_dbfs: -20\n", ":2: audio.threshold_dbfs: unknown key here; it is a key of loudness"),
        # "unknown key (check the spelling ...)", spelt right: a first hour's user wrote it beside the user name
        ("mqtt:\n  username: noisewatch\n  password: s3cret\n", ":3: mqtt.password: the MQTT password never goes in "
         "the YAML: put it in a file named by mqtt.password_file, in $NOISEWATCH_MQTT_PASSWORD, or in the systemd "
         "credential noisewatch_mqtt_password"),
        ("mqtt:\n  tls:\n    host: broker\n", ":3: mqtt.tls.host: unknown key here; it is a key of mqtt ("),
        ("audio:\n  interval_s: 5\n", ":2: audio.interval_s: unknown key here; it is a key of levels, scores and stats"),
        ("audio:\n  block_size: lots\n", ":2: audio.block_size = 'lots': "),
        ("detector:\n  thresholds:\n    siren: 1.5\n", ":3: detector.thresholds.siren = 1.5: "),
        ("detector:\n  release_s: -1\n", ":2: detector.release_s = -1: "),
        ("loudness:\n  min_duration_s: -0.5\n", ":2: loudness.min_duration_s = -0.5: "),
        ("audio:\n  hop_s: 0\n", ":2: audio.hop_s = 0: "),
        ("detector:\n  max_duration_s: 0.001\n", ":2: detector.max_duration_s = 0.001: "),  # a piece every hop
        ("audio:\n  hop_s: 61\n", ":2: audio.hop_s = 61: "),
        ("mqtt:\n  reconnect_min_s: 90\n  reconnect_max_s: 10\n", ":2: mqtt.reconnect_min_s = 90: must not exceed mqtt.reconnect_max_s (10 s)"),
        ("mqtt:\n  reconnect_min_s: 61\n", ":2: mqtt.reconnect_min_s = 61: must not exceed mqtt.reconnect_max_s (60 s)"),
        ("mqtt:\n  reconnect_max_s: 0.5\n", "mqtt.reconnect_min_s = 1.0: must not exceed mqtt.reconnect_max_s (0.5 s)"),
        ("? [a, b]\n: 1\n", ":1: (top level): a key must be a plain name, not a sequence"),
        ("mqtt:\n  host: ''\n", ":2: mqtt.host = '': a host name or address is needed"),
        ("mqtt:\n  homeassistant:\n    configuration_url: noisepi.local:8501\n",
         ":3: mqtt.homeassistant.configuration_url = 'noisepi.local:8501': a URL starting with http:// or https://"),
        ("device_id: 'my/room'\n", ":1: device_id = 'my/room': "),
        ("mqtt:\n  host: 127.0.0.1:18830\n", ":2: mqtt.host = '127.0.0.1:18830': the port goes in mqtt.port"),
        ("mqtt:\n  host: mqtt://broker.lan\n", ":2: mqtt.host = 'mqtt://broker.lan': a host name or address without"),
        ("mqtt:\n  host: '[::1]:1883'\n", ":2: mqtt.host = '[::1]:1883': an IPv6 address goes without brackets"),
        ("audio:\n  hop_s: {a: 1}\n", ":2: audio.hop_s = {'a': 1}: "),  # a mapping where a number goes: no value before
        ("audio:\n  hop_s: .nan\n", ":2: audio.hop_s = nan: not a number (NaN)"),  # was "less than or equal to 60"
        ("detector:\n  thresholds:\n    siren: .NaN\n", ":3: detector.thresholds.siren = nan: not a number (NaN)"),
        ("mqtt:\n  protocol: 5\n", ":2: mqtt.protocol = 5: Input should be '3.1.1' or '5'; YAML reads it as a number: "
         "in quotes it is text"),  # the error named the very value given
        ("device_id: 1234\n", ":1: device_id = 1234: Input should be a valid string; YAML reads it as a number"),
        ("device_id: 2024-01-01\n", ":1: device_id = 2024-01-01: Input should be a valid string; YAML reads it as a "
         "date"),  # was "= datetime.date(2024, 1, 1)", a Python repr, not what was written
        ("mqtt:\n  username: 2024-01-01 10:00:00\n", ":2: mqtt.username = 2024-01-01 10:00:00: Input should be a valid "
         "string; YAML reads it as a date"),
        ("mqtt:\n  host: on\n", ":2: mqtt.host = on: Input should be a valid string; YAML reads it as a boolean: in "
         "quotes it is text"),  # was "= True"
        ("audio:\n  hop_s:\n", ":2: audio.hop_s = null: Input should be a valid number"),  # was "= None"
        ("mqtt:\n  topic_prefix: homeassistant\n", ":2: mqtt.topic_prefix = 'homeassistant': the listener's status "
         "topic would be homeassistant/status, Home Assistant's own"),  # a fault hunt: its retained offline held
        # every other listener's events for 5 minutes at each connect
        ("mqtt:\n  topic_prefix: ha2\n  homeassistant:\n    prefix: ha2\n", ":3: mqtt.homeassistant = {'prefix': "
         "'ha2'}: prefix 'ha2' is mqtt.topic_prefix too"),
        ('mqtt:\n  client_id: "bad\\0id"\n', ":2: mqtt.client_id = 'bad\\x00id': must be non-empty, without control "
         "characters"),  # a fault hunt: check-config's probe has its own id, and mosquitto closed run's every connection
        ('mqtt:\n  client_id: "a\\ud800b"\n', ":2: mqtt.client_id = 'a\\ud800b': is not valid text"),  # run: a traceback
        ("levels:\n  interval_s: 2.5\n", ":2: levels.interval_s = 2.5: Input should be a valid integer, got a number "
         "with a fractional part"),  # a docs audit: reports of 1 s levels came every 2 s, the config said 2.5, unsaid
        ("2024-01-01\n", ":1: (top level) = 2024-01-01: must be a mapping of sections"),
        ("model:\n  path: 5\n", ":2: model.path = 5: must be a path; YAML reads it as a number"),  # was "Input is not a "
        # valid path for <class 'pathlib.Path'>": Python's words, as were "a valid tuple" and "a valid dictionary"
        ("detector:\n  ignore: background\n", ":2: detector.ignore = 'background': must be a list, in brackets ([a, b]) "
         "or one '- item' line each"),
        ("detector:\n  thresholds:\n    - siren: 0.5\n", ":2: detector.thresholds = [{'siren': 0.5}]: must be a mapping, "
         "its key: value pairs indented under it or in braces ({a: 1})"),
        ("detector:\n  ignore:\n    - background\n    - no\n", ":4: detector.ignore.1 = no: Input should be a valid "
         "string; YAML reads it as a boolean: in quotes it is text"),  # was ":2: detector.ignore.1 = False: ...string"
        ("audio: 5\n", ":1: audio = 5: must be a section, its keys indented under it (left out, it keeps its defaults)"),
        ("mqtt:\n  host:broker\n", ":1: mqtt = 'host:broker': must be a section, its keys indented under it (left out, it "
         "keeps its defaults); YAML reads it as text, not a key and its value: put a space after the colon"),
        ("detector:\n  thresholds:\n    siren:0.7\n", ":2: detector.thresholds = 'siren:0.7': must be a mapping, its key: "
         "value pairs indented under it or in braces ({a: 1}); YAML reads it as text, not a key and its value"),
        ("device_id:kitchen\n", ":1: (top level) = 'device_id:kitchen': must be a mapping of sections (audio:, detector:, "
         "mqtt:, ...); YAML reads it as text, not a key and its value: put a space after the colon"),
    ],
)
def test_each_problem_is_one_line_with_file_line_key_and_value(tmp_path: Path, text: str, expected: str) -> None:
    message = config_error(tmp_path, text)
    assert "\n" not in message
    assert message.startswith(str(tmp_path / "config.yaml") + ":")
    assert expected in message


def test_a_long_value_is_cut_short(tmp_path: Path) -> None:
    message = config_error(tmp_path, "audio:\n  hop_s: {" + ", ".join(f"k{i}: {i}" for i in range(100)) + "}\n")
    assert ":2: audio.hop_s = {'k0': 0, 'k1': 1, " in message and "...: Input should be a valid number" in message
    assert len(message.split("config.yaml", 1)[1]) < 150, message


def test_several_problems_give_one_line_each(tmp_path: Path) -> None:
    lines = config_error(tmp_path, "audio:\n  hop_s: -1\n  gate_dbfs: 3\ncolour: red\n").splitlines()
    assert len(lines) == 3
    assert any("audio.hop_s = -1" in line for line in lines) and any("audio.gate_dbfs = 3" in line for line in lines)
    assert any(":4: colour: unknown key" in line for line in lines)


def test_bad_yaml_is_one_line(tmp_path: Path) -> None:
    message = config_error(tmp_path, "audio:\n  hop_s: [0.5\n")
    assert "\n" not in message and "not valid YAML" in message


@pytest.mark.parametrize("text, line, column", [
    ("audio:\n  hop_s: 0.5\nmqtt: enabled: true\n", 3, 14),  # a mapping where a value should be
    ("audio:\n  hop_s: 1\n    gate_dbfs: -70\n", 3, 14),  # indented too far
    ("audio:\n  device: !!python/name:os.system x\n", 2, 11),  # a tag safe YAML does not construct
])
def test_bad_yaml_names_the_line_and_column_it_stopped_at(tmp_path: Path, text: str, line: int, column: int) -> None:
    message = config_error(tmp_path, text)
    assert f"config.yaml:{line}: not valid YAML: " in message and message.endswith(f"(column {column})"), message


@pytest.mark.parametrize(("text", "column"), [("audio:\n\thop_s: 0.5\n", 1), ("audio:\n  hop_s:\t0.5\n", 9)])
def test_a_tab_is_said_to_be_one(tmp_path: Path, text: str, column: int) -> None:
    """Was PyYAML's "found character '\\t' that cannot start any token, while scanning for the next token"."""
    message = config_error(tmp_path, text)
    assert message.endswith(f"config.yaml:2: not valid YAML: a tab, which YAML does not take here: indent and "
                            f"separate with spaces (column {column})"), message


@pytest.mark.parametrize("text, key, value, read", [
    ("audio:\n  reopen_max_s: 1:30\n", "audio.reopen_max_s", "1:30", "90"),  # was silently 90 s
    ("device_id: 12:30\n", "device_id", "12:30", "750"),  # was "= 750: Input should be a valid string"
    ("audio:\n  hop_s: 1:30.5\n", "audio.hop_s", "1:30.5", "90.5"),
])
def test_a_clock_like_value_is_said_to_be_read_in_base_60(tmp_path: Path, text: str, key: str, value: str,
                                                          read: str) -> None:
    message = config_error(tmp_path, text)
    line = text.count("\n")
    assert message.endswith(f"config.yaml:{line}: {key} = {value}: YAML 1.1 reads this as {read} (base 60, like a "
                            "clock): write that number, or put it in quotes for text"), message


def test_a_clock_like_value_in_quotes_is_text(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text('audio:\n  device: "hw:1,0"\nmqtt:\n  username: "12:30"\n')
    config = load_config(tmp_path / "config.yaml")
    assert (config.audio.device, config.mqtt.username) == ("hw:1,0", "12:30")


@pytest.mark.parametrize("text, line, column", [
    ('device_id: "balcony\naudio:\n  hop_s: 1\n', 1, 12),  # a quote never closed: not where the file ends
    ("mqtt:\n  host: 'broker\n  port: 1884\nlogging:\n  level: info\n", 2, 9),
    ("audio:\n  hop_s: 1\ndetector:\n  ignore: [background\n", 4, 11),  # a bracket never closed
])
def test_something_never_closed_names_the_line_it_was_opened_on(tmp_path: Path, text: str, line: int,
                                                                column: int) -> None:
    message = config_error(tmp_path, text)
    assert "\n" not in message
    assert f"config.yaml:{line}: not valid YAML: " in message and message.endswith(f"(column {column})"), message


@pytest.mark.parametrize(("text", "key"), [
    ("detector:\n  thresholds:\n    siren: yes\n", ":3: detector.thresholds.siren = yes: "),  # was 1.0: siren off
    ("detector:\n  thresholds:\n    dog_bark: false\n", ":3: detector.thresholds.dog_bark = false: "),  # was 0: always on
    ("audio:\n  hop_s: true\n", ":2: audio.hop_s = true: "),
    ("detector:\n  smoothing_windows: on\n", ":2: detector.smoothing_windows = on: "),
    ("audio:\n  device: true\n", ":2: audio.device"),  # was input device 1
    ("mqtt:\n  port: no\n", ":2: mqtt.port = no: "),
])
def test_a_yaml_boolean_is_not_taken_for_a_number(tmp_path: Path, text: str, key: str) -> None:
    message = config_error(tmp_path, text).split("config.yaml", 1)[1]  # the test's name is in tmp_path
    assert key in message and "a boolean" in message, message


@pytest.mark.parametrize(("text", "expected"), [
    ("~: 1\n", ":1: ~: YAML reads this key as null, not a name"),  # was the file alone: "None = None"
    ("1: 2\n", ":1: 1: YAML reads this key as a number, not a name"),
    ("detector:\n  thresholds:\n    yes: 0.5\n", ":3: detector.thresholds.yes: YAML reads this key as a boolean"),
    ("mqtt:\n  tls:\n    enabled: true\n    enabled: false\n", ":4: mqtt.tls.enabled: given twice (lines 3 and 4)"),
])
def test_a_key_that_is_not_a_name_or_given_twice_names_its_path(tmp_path: Path, text: str, expected: str) -> None:
    """Found by fault injection: ``yes:`` under thresholds was reported on the line above as
    ``detector.thresholds.1.[key] = True``; ``~:`` at the top had no line; a duplicate had no key path."""
    message = config_error(tmp_path, text)
    assert expected in message and "\n" not in message, message


def test_merge_keys_still_merge(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("scores: {<<: {interval_s: 2}}\n")
    assert load_config(path).scores.interval_s == 2


def test_booleans_still_switch_what_they_switch(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("loudness:\n  enabled: no\nmqtt:\n  tls:\n    insecure: yes\n")
    config = load_config(path)
    assert config.loudness.enabled is False and config.mqtt.tls.insecure is True


@pytest.mark.parametrize(("text", "expected"), [
    ('loudness:\n  enabled: "true"\n', ":2: loudness.enabled = 'true': a string in quotes, not a boolean: write true or "
     "false without quotes"),  # was taken as true, while "0.5" for a number is refused
    ("mqtt:\n  tls:\n    insecure: 'no'\n", ":3: mqtt.tls.insecure = 'no': a string in quotes, not a boolean"),
    ("scores:\n  enabled: 1\n", ":2: scores.enabled = 1: not a boolean: write true or false"),  # was true
    ("mqtt:\n  homeassistant:\n    discovery: maybe\n", ":3: mqtt.homeassistant.discovery = 'maybe': not a boolean"),
])
def test_a_boolean_key_takes_a_yaml_boolean_only(tmp_path: Path, text: str, expected: str) -> None:
    message = config_error(tmp_path, text)
    assert expected in message and "\n" not in message, message


@pytest.mark.parametrize("text", ["# sections:\n\n- audio\n- mqtt\n", "# sections:\n\naudio\n"])
def test_top_level_must_be_a_mapping(tmp_path: Path, text: str) -> None:
    """Found by fault injection: the file alone, with no line."""
    value = repr(yaml.safe_load(text))
    assert f"config.yaml:3: (top level) = {value}: must be a mapping of sections" in config_error(tmp_path, text)


def test_a_file_that_is_not_utf8_names_the_line(tmp_path: Path) -> None:
    """Found by fault injection: the file and the byte's offset, with no line."""
    path = tmp_path / "config.yaml"
    path.write_bytes(b"audio:\n  hop_s: 0.5\n  device: '\xc3\xa9 f\xfcr'\n")  # é in UTF-8, then ü in Latin-1
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == f"{path}:3: audio.device: not UTF-8 text (byte 0xfc, column 15)"


def test_a_section_with_every_key_commented_out_keeps_its_defaults(tmp_path: Path) -> None:
    """Found by review: YAML reads such a section as null, and it was refused ("must be a section"), though the
    same section left out keeps its defaults: a user who comments out what they do not need got exit 78."""
    path = tmp_path / "config.yaml"
    path.write_text("audio:\n  # hop_s: 0.5\nmqtt:\n  enabled: false\n  spool:\n    # max_mb: 50\n")
    config = load_config(path)
    assert config.audio == Config().audio and config.mqtt.spool == Config().mqtt.spool


def test_a_file_not_utf8_and_nested_too_deeply_names_the_bad_byte(tmp_path: Path) -> None:
    """Found by review: the key path of the bad byte was looked up by composing the whole file, which ran out of
    stack on the nesting further down, and the error said only that the file was nested too deeply."""
    path = tmp_path / "config.yaml"
    path.write_bytes(b"audio:\n  device: '\xff'\nx: " + b"[" * 5000 + b"\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == f"{path}:2: not UTF-8 text (byte 0xff, column 12)"


def test_missing_file_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "absent.yaml")
    assert str(info.value) == f"{tmp_path / 'absent.yaml'}: cannot read config: No such file or directory"


def test_relative_paths_are_relative_to_the_config_file(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text("model:\n  path: models/mine.json\n")
    assert load_config(tmp_path / "config.yaml").model.path == tmp_path / "models" / "mine.json"


# --- the shipped default ----------------------------------------------------------------------------


def leaf_fields(model: type[BaseModel], prefix: str = "") -> list[tuple[str, Any]]:
    """Every key of the config schema that holds a value, as (dotted path, annotation) (sections recursed into)."""
    leaves = []
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            leaves += leaf_fields(annotation, f"{prefix}{name}.")
        else:
            leaves.append((prefix + name, annotation))
    return leaves


def key_paths(model: type[BaseModel]) -> list[str]:
    """Every key of the config schema, as dotted paths."""
    return [path for path, _ in leaf_fields(model)]


def lookup(data: dict[str, Any], dotted: str) -> bool:
    node: Any = data
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def test_shipped_config_lists_every_key() -> None:
    data = yaml.safe_load(SHIPPED.read_text())
    missing = [path for path in key_paths(Config) if not lookup(data, path)]
    assert missing == []


def test_every_shipped_key_is_commented() -> None:
    """Each ``key: value`` line (section headers aside) follows a comment line."""
    lines = SHIPPED.read_text().splitlines()
    uncommented = [
        line
        for previous, line in zip([""] + lines, lines)
        if re.match(r"^\s*\w+: \S", line) and not previous.lstrip().startswith("#")
    ]
    assert uncommented == []


def test_shipped_config_equals_the_defaults() -> None:
    """The file documents the defaults; it must not change them (paths in it are absolute or null)."""
    assert load_config(SHIPPED).model_dump() == Config().model_dump()


# --- noisewatch check-config ------------------------------------------------------------------------


def check_config(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "noisewatch.cli", "check-config", str(path)], capture_output=True, text=True, timeout=120
    )


def refused(path: Path, text: str) -> list[str]:
    """``check-config`` of a file holding ``text``: it must exit 78; its stderr lines."""
    path.write_text(text)
    result = check_config(path)
    assert result.returncode == EX_CONFIG, result.stderr
    return result.stderr.strip().splitlines()


def test_check_config_to_a_full_stdout_ends_in_one_line_not_a_traceback(tmp_path: Path) -> None:
    """Found in earlier work: ``noisewatch check-config FILE > /dev/full`` ended in an OSError traceback. It ends as
    ``classify`` does on a stdout that cannot take its report: one line on stderr and exit 1."""
    config = tmp_path / "fine.yaml"
    config.write_text("device_id: here\n")
    with open("/dev/full", "w") as full:
        done = subprocess.run([sys.executable, "-m", "noisewatch.cli", "check-config", str(config)], stdout=full,
                              stderr=subprocess.PIPE, text=True, timeout=120)
    said = [line for line in done.stderr.splitlines() if not line.startswith("noisewatch: warning: audio.device")]
    assert done.returncode == 1, done.stderr
    assert said == ["noisewatch: cannot write the report to stdout (No space left on device)"], done.stderr


@pytest.mark.parametrize("text", ["audio:\n  hop_s: -1\n", "audio: [\n", "detector:\n  thresholds: {siren: 1.5}\n",
                                  "audio:\n  hop_s: '0.5'\n"])
def test_check_config_exits_78_with_one_line(tmp_path: Path, text: str) -> None:
    (line,) = refused(tmp_path / "bad.yaml", text)
    assert "Traceback" not in line and "bad.yaml" in line


def test_check_config_rejects_a_hop_longer_than_the_window(tmp_path: Path) -> None:
    (line,) = refused(tmp_path / "hop.yaml", "audio:\n  hop_s: 5\n")
    assert "hop" in line


def test_check_config_rejects_a_contrast_label_the_model_lacks(tmp_path: Path) -> None:
    assert refused(tmp_path / "contrast.yaml", "detector:\n  require_contrast: [car_horn, thunder]\n") == [
        f"noisewatch: {tmp_path / 'contrast.yaml'}:2: detector.require_contrast: 'thunder' is not a label of the model "
        f"({', '.join(load_bundle(MODEL).labels)})"]


def test_the_default_contrast_labels_bind_only_a_model_that_has_them() -> None:
    other = replace(load_bundle(MODEL), labels=("thunder", "background"))
    assert bundle_problems(Config(), other) == []
    explicit = Config.model_validate({"detector": {"require_contrast": ["car_horn"]}})
    assert bundle_problems(explicit, other) == [
        "detector.require_contrast: 'car_horn' is not a label of the model (thunder, background)"]


def test_a_model_without_a_background_label_runs_under_the_default_ignore(tmp_path: Path) -> None:
    """Found in earlier work: the default ``detector.ignore: [background]`` refused every bundle without a background
    label (check-config and run: exit 78), unset or written out as the installed config (the shipped file) writes it.
    Such a bundle now runs under both; a label list of the user's own is still held to the model's labels."""
    shipped = load_bundle(MODEL)
    labels = ["quiet" if label == "background" else label for label in shipped.labels]
    thresholds = {("quiet" if label == "background" else label): t for label, t in shipped.thresholds.items()}
    bundle = write_bundle(tmp_path / "bundle", "nobackground", shipped.tflite.read_bytes(), version="test",
                          labels=labels, features=shipped.features, thresholds=thresholds, variant=shipped.variant,
                          timing=shipped.timing)
    unset, installed = tmp_path / "c.yaml", tmp_path / "installed.yaml"
    unset.write_text(f"model:\n  path: {bundle.path}\n")
    installed.write_text(SHIPPED.read_text().replace("model:\n", "model:\n  path: " + str(bundle.path) + "\n", 1)
                         .replace("  path: null\n", "", 1))
    assert load_config(installed).detector.ignore == ("background",)
    for config in (unset, installed):
        check = check_config(config)
        assert check.returncode == 0 and "ok (model nobackground@test, 11 labels" in check.stdout, check.stderr
    out = tmp_path / "out.jsonl"
    run = subprocess.run([sys.executable, "-m", "noisewatch.cli", "run", "--config", str(unset), "--input",
                          str(ROOT / "samples" / "scene.flac"), "--speed", "0", "--jsonl", str(out)],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    heard = {m["label"] for m in read_jsonl(out) if m["type"] == "event"}
    assert "siren" in heard, heard
    own = tmp_path / "own.yaml"
    assert refused(own, f"model:\n  path: {bundle.path}\ndetector:\n  ignore: [background, street_music]\n") == [
        f"noisewatch: {own}:4: detector.ignore: 'background' is not a label of the model ({', '.join(labels)})"]


def test_the_daemons_detector_holds_the_configured_labels_to_the_contrast_rule() -> None:
    bundle = load_bundle(MODEL)
    model = bundle.open_model()
    default = Pipeline.from_config(Config(), bundle, model).detector.settings.require_contrast
    assert default == frozenset({"car_horn", "dog_bark", "gun_shot"})
    none = Config.model_validate({"detector": {"require_contrast": []}})
    assert Pipeline.from_config(none, bundle, model).detector.settings.require_contrast == frozenset()


def test_check_config_accepts_the_shipped_file() -> None:
    result = check_config(SHIPPED)
    assert result.returncode == 0, result.stderr


def test_a_config_nested_thousands_deep_is_one_line_not_a_traceback(tmp_path) -> None:
    path = tmp_path / "deep.yaml"
    path.write_text("a: " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(ConfigError, match="nested too deeply"):
        load_config(path)


def test_a_user_without_a_password_is_a_warning_from_check_config(tmp_path: Path, monkeypatch) -> None:
    """`noisewatch setup` stores the password as a systemd credential, which only the service gets: run by
    hand, check-config said ok and the broker then refused the user. Allowed (a broker may take a user
    without a password), so a warning, not a refusal; `run` logs the same line."""
    from mqtt_broker import free_port

    monkeypatch.delenv("NOISEWATCH_MQTT_PASSWORD", raising=False)
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    config = tmp_path / "config.yaml"
    config.write_text(f"mqtt:\n  enabled: true\n  port: {free_port()}\n  username: nw\n"  # no broker: warned about too
                      f"  spool:\n    directory: {tmp_path / 'spool'}\n")
    done = subprocess.run([sys.executable, "-m", "noisewatch.cli", "check-config", str(config)], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0 and ": ok" in done.stdout, done.stderr
    assert "warning: mqtt.username = 'nw' has no password" in done.stderr and "noisewatch_mqtt_password" in done.stderr
    silence = tmp_path / "silence.wav"
    sf.write(str(silence), np.zeros(22050 * 5, dtype=np.float32), 22050)
    ran = subprocess.run([sys.executable, "-m", "noisewatch.cli", "run", "--config", str(config), "--input",
                          str(silence), "--speed", "0"], capture_output=True, text=True, timeout=60)
    assert ran.returncode == 0 and "mqtt.username = 'nw' has no password" in ran.stderr, ran.stderr
    (tmp_path / "pw").write_text("s3cret\n")
    config.write_text(config.read_text() + f"  password_file: {tmp_path / 'pw'}\n")
    done = subprocess.run([sys.executable, "-m", "noisewatch.cli", "check-config", str(config)], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0 and "has no password" not in done.stderr, done.stderr
    config.write_text(config.read_text().replace("  username: nw\n", ""))  # the password, and no user to send it with
    done = subprocess.run([sys.executable, "-m", "noisewatch.cli", "check-config", str(config)], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0 and "warning: a password is given but mqtt.username is not set" in done.stderr, \
        done.stderr


def test_check_config_reads_its_file_once(tmp_path: Path) -> None:
    """Found by a first-hour walk: check-config read the file a second time to tell whether it held no settings;
    handed a pipe (``check-config <(...)``, a config made by a script) the second reading found it empty and warned
    that a file holding settings held none. A comments-only file is still said."""
    from mqtt_broker import free_port

    settings = f"mqtt:\n  enabled: true\n  port: {free_port()}\n  spool:\n    directory: {tmp_path / 'spool'}\n"
    for text, blank in ((settings, False), ("# nothing yet\n", True)):
        done = subprocess.run(["bash", "-c", f'{sys.executable} -m noisewatch.cli check-config <(printf %s "$0")', text],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0 and ": ok" in done.stdout, done.stderr
        assert ("holds no settings" in done.stderr) is blank, done.stderr


@pytest.mark.parametrize("command", ["check-config", "run"])
def test_a_password_file_that_is_not_text_is_one_line_not_a_traceback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                     command: str) -> None:
    """Found by fault injection: a UnicodeDecodeError traceback and exit 1 (systemd restarts on that) instead of
    the config's exit 78 and one line naming the key."""
    monkeypatch.delenv("NOISEWATCH_MQTT_PASSWORD", raising=False)
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    (tmp_path / "pw").write_bytes(b"\xff\xfe\xfa")
    config = tmp_path / "config.yaml"
    config.write_text(f"mqtt:\n  enabled: true\n  port: 1\n  password_file: {tmp_path / 'pw'}\n"
                      f"  spool:\n    directory: {tmp_path / 'spool'}\n")
    args = [str(config)] if command == "check-config" else ["--config", str(config)]
    done = subprocess.run([sys.executable, "-m", "noisewatch.cli", command, *args], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == EX_CONFIG and "Traceback" not in done.stderr, done.stderr
    assert "mqtt.password_file" in done.stderr and "not UTF-8 text" in done.stderr


def test_check_config_refuses_a_state_folder_run_cannot_use(tmp_path: Path) -> None:
    """Found by fault injection: a state folder that is a file passed check-config and failed ``run`` without a
    file or line."""
    from mqtt_broker import free_port

    (tmp_path / "afile").write_text("")
    config = tmp_path / "config.yaml"
    config.write_text(f"mqtt:\n  enabled: true\n  port: {free_port()}\n  state_directory: {tmp_path / 'afile'}\n"
                      f"  spool:\n    directory: {tmp_path / 'spool'}\n")
    expected = ":4: mqtt.state_directory = "
    for command in (["check-config", str(config)], ["run", "--config", str(config), "--input", "none.flac"]):
        done = subprocess.run([sys.executable, "-m", "noisewatch.cli", *command], capture_output=True, text=True,
                              timeout=30)
        assert done.returncode == EX_CONFIG and expected in done.stderr, (command, done.stderr)


def number_keys(model: type[BaseModel]) -> list[str]:
    """Every key of the schema that takes a number, as dotted paths (a threshold override stands for its dict)."""
    return [path + (".siren" if "dict" in str(annotation) else "") for path, annotation in leaf_fields(model)
            if re.search(r"\b(int|float)\b", str(annotation))]


def nested(dotted: str, value: Any) -> dict[str, Any]:
    for part in reversed(dotted.split(".")):
        value = {part: value}
    return value


def test_every_kind_of_number_key_is_checked_here() -> None:
    assert {"audio.hop_s", "detector.thresholds.siren", "mqtt.port", "audio.sample_rate"} <= set(number_keys(Config))


@pytest.mark.parametrize("key", [key for key in number_keys(Config) if key != "audio.device"])  # "1" is a name there
def test_a_number_in_quotes_is_refused(tmp_path: Path, key: str) -> None:
    """Found by fault injection: ``hop_s: "0.5"`` was taken as 0.5, so a value that is text to every other YAML
    reader was a number to the daemon alone; refused like a YAML boolean."""
    text = yaml.safe_dump(nested(key, "1"))
    line = len(text.splitlines())
    assert text.endswith(": '1'\n")
    message = config_error(tmp_path, text)
    assert f"config.yaml:{line}: {key} = '1': a string in quotes, not a number" in message, message


def test_text_for_a_number_is_not_said_to_be_in_quotes(tmp_path: Path) -> None:
    """YAML reads ``1e-3`` as text (pydantic then took it for 0.001); ``nan`` as text too (it became NaN)."""
    for value in ("1e-3", "nan", "lots"):
        message = config_error(tmp_path, f"audio:\n  hop_s: {value}\n")
        assert f":2: audio.hop_s = '{value}': not a number (YAML reads it as text" in message, message


def test_text_still_goes_where_text_is_taken(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("audio:\n  device: '2'\nmqtt:\n  protocol: '5'\n")
    config = load_config(path)
    assert config.audio.device == "2" and config.mqtt.protocol == "5"


def test_the_readme_s_example_error_is_what_check_config_says(tmp_path: Path) -> None:
    """README: a config error gives one line naming the file, line and key, and exit 78, e.g.
    `noisewatch: /etc/noisewatch/config.yaml:14: detector.thresholds.siren = 1.5: Input should be less than or
    equal to 1`: the same file contents (the threshold on line 14) give that line, word for word."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    example = re.search(r"^    (noisewatch: /etc/noisewatch/config\.yaml:14: .*)$", readme, re.M)
    assert example, "the README's example line is gone"
    path = tmp_path / "config.yaml"
    assert refused(path, "#\n" * 11 + "detector:\n  thresholds:\n    siren: 1.5\n") == [
        example.group(1).replace("/etc/noisewatch/config.yaml", str(path))]


PATH_KEYS = ["jsonl.path", "model.path", "mqtt.password_file", "mqtt.spool.directory", "mqtt.state_directory",
             "mqtt.tls.ca_file"]


@pytest.mark.parametrize("key", PATH_KEYS)
@pytest.mark.parametrize("value", ["", " "])
def test_an_empty_path_is_said_to_be_empty(tmp_path: Path, key: str, value: str) -> None:
    """Found by hand: ``jsonl.path: ''`` was this file's folder, refused as "not a file"; an empty spool folder
    was taken, the config's own folder."""
    text = yaml.safe_dump(nested(key, value))
    line = len(text.splitlines())
    message = config_error(tmp_path, text)
    assert f"config.yaml:{line}: {key} = {value!r}: an empty path: write one, or leave the key out" in message, message


@pytest.mark.parametrize("key", PATH_KEYS)
def test_a_path_from_home_says_that_tilde_is_not_expanded(tmp_path: Path, key: str) -> None:
    """Found by hand: ``jsonl.path: ~/noise.jsonl`` passed check-config as a file in a folder named ``~`` beside
    this file; ``model.path: ~/m.json`` was ".../~/m.json: model bundle not found"."""
    text = yaml.safe_dump(nested(key, "~/noise"))
    line = len(text.splitlines())
    message = config_error(tmp_path, text)
    assert (f"config.yaml:{line}: {key} = '~/noise': '~' is not expanded (the path would be relative to this file's "
            "folder): write the whole path") in message, message


@pytest.mark.parametrize(("value", "expected"), [
    ("1.5", ":2: audio.device = 1.5: must be one input device, by index or by part of its name"),
    ("[1, 2]", ":2: audio.device = [1, 2]: must be one input device"),
    ("2024-01-01", ":2: audio.device = 2024-01-01: must be one input device, by index or by part of its name (see "
     "`noisewatch devices`); YAML reads it as a date: in quotes it is text"),
])
def test_a_device_that_is_neither_index_nor_name_is_one_line_naming_the_key(tmp_path: Path, value: str,
                                                                            expected: str) -> None:
    """Found by hand: two lines, ``audio.device.int = ...: Input should be a valid integer`` and
    ``audio.device.str = ...: Input should be a valid string``, named keys the file cannot have."""
    message = config_error(tmp_path, f"audio:\n  device: {value}\n")
    assert expected in message and "\n" not in message, message


@pytest.mark.parametrize(("value", "expected"), [
    ("-1", ":2: audio.device = -1: a device index is 0 or more (see `noisewatch devices`)"),
    ("''", ":2: audio.device = '': an empty name is part of every device's name"),
    ("'  '", ":2: audio.device = '  ': an empty name is part of every device's name"),
])
def test_a_device_index_below_0_or_an_empty_name_is_refused(tmp_path: Path, value: str, expected: str) -> None:
    """Found by hand: ``device: -1`` (PortAudio's "no device") and ``device: ''`` (a part of every name, so the
    first device listed, which may not be the microphone) passed check-config."""
    message = config_error(tmp_path, f"audio:\n  device: {value}\n")
    assert expected in message and "\n" not in message, message
    # found by fault injection: -1 was told "in quotes it is text", and "-1" in quotes is a name no device has
    # (check-config: not found; run waited for it for good)
    assert "in quotes" not in message, message


def test_a_device_is_still_an_index_or_a_name(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    for value, device in (("2", 2), ("'2'", "2"), ("USB", "USB"), ("null", None)):
        path.write_text(f"audio:\n  device: {value}\n")
        assert load_config(path).audio.device == device


def test_a_reload_names_what_it_changed_by_key_path(tmp_path: Path) -> None:
    """``systemctl reload`` was answered "configuration reloaded" whatever it applied: an admin could not tell an
    edit taken from one saved to another file. The line names each changed key, old and new, and a few at most."""
    from noisewatch.config import CHANGES_SHOWN, config_changes

    def config(text: str) -> Config:
        path = tmp_path / "c.yaml"
        path.write_text(text)
        return load_config(path)

    before = config("detector:\n  thresholds:\n    dog_bark: 0.6\nstats:\n  interval_s: 60\n")
    after = config("detector:\n  thresholds:\n    siren: 0.7\nstats:\n  interval_s: 7\nmqtt:\n  enabled: true\n")
    assert config_changes(before, after) == ("detector.thresholds.siren: (not set) -> 0.7; stats.interval_s: 60.0 -> 7.0; "
                                             "mqtt.enabled: false -> true; detector.thresholds.dog_bark: 0.6 -> (not set)")
    assert config_changes(after, after) == "no setting changed"
    many = config("".join(f"{section}:\n  interval_s: 9\n" for section in ("levels", "scores", "stats")) +
                  "audio:\n  hop_s: 1\n  buffer_s: 9\n  block_size: 512\n  reopen_max_s: 9\n"
                  "detector:\n  cooldown_s: 1\n  min_duration_s: 1\n  max_duration_s: 9\n")
    said = config_changes(before, many)
    assert said.count(" -> ") == CHANGES_SHOWN and said.endswith("; and 3 more"), said


@pytest.mark.parametrize("text", ["", "# every default, for now\n"])
def test_check_config_says_a_reload_refuses_a_file_with_no_settings(tmp_path: Path, text: str) -> None:
    """Found by a docs audit: an empty or comments-only config passed check-config without a word, and the reload it
    was checked for refused it (README: a file with no settings is one caught being written). Both decide alike now:
    check-config passes it (a start takes every default) and says so."""
    path = tmp_path / "config.yaml"
    path.write_text(text)
    done = check_config(path)
    assert done.returncode == 0 and ": ok" in done.stdout, done.stderr
    assert "holds no settings" in done.stderr and "a reload refuses it; write {} for every default" in done.stderr
    path.write_text("{}\n")
    assert "holds no settings" not in check_config(path).stderr

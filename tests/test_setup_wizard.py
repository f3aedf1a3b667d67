"""``noisewatch setup``: edits the commented config in place, validates it, stores the password credential."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from mqtt_broker import Broker, free_port

from noisewatch.config import EX_CONFIG, default_device_id, load_config
from noisewatch.setup_wizard import Answers, apply, interview, set_key

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = ROOT / "config" / "noisewatch.yaml"


def setup(config: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "noisewatch.cli", "setup", "--config", str(config), *args],
                          capture_output=True, text=True, timeout=120, env=env, stdin=subprocess.DEVNULL)


def test_answers_change_only_their_values_and_keep_the_comments(tmp_path: Path) -> None:
    text = TEMPLATE.read_text()
    edited = apply(text, Answers(device="2", device_id="kitchen", mqtt_host="broker.lan", mqtt_user="nw"))
    changed = [(a, b) for a, b in zip(text.splitlines(), edited.splitlines()) if a != b]
    assert len(edited.splitlines()) == len(text.splitlines())
    assert [b.strip() for _, b in changed] == ["device_id: \"kitchen\"", "device: 2", "enabled: true",
                                               "host: \"broker.lan\"", "username: \"nw\""]
    path = tmp_path / "config.yaml"
    path.write_text(edited)
    config = load_config(path)
    assert (config.device_id, config.audio.device, config.mqtt.enabled) == ("kitchen", 2, True)
    assert (config.mqtt.host, config.mqtt.username) == ("broker.lan", "nw")
    assert config.jsonl.path is None and config.scores.enabled is False  # the same-named keys elsewhere are untouched


def test_missing_keys_and_sections_are_added(tmp_path: Path) -> None:
    text = set_key("device_id: kitchen\n", ("mqtt", "host"), "b: 1")
    text = set_key(text, ("mqtt", "enabled"), True)
    text = set_key(text, ("audio", "device"), "USB mic")
    path = tmp_path / "config.yaml"
    path.write_text(text)
    config = load_config(path)
    assert (config.mqtt.host, config.mqtt.enabled, config.audio.device) == ("b: 1", True, "USB mic")


def test_device_minus_one_is_refused_as_the_config_refuses_it(tmp_path: Path) -> None:
    """Found by fault injection: ``setup --device -1`` (PortAudio's "no device", taken for "the default") wrote
    the name ``"-1"``, past the config's refusal of index -1: check-config said the device was not found and
    ``run`` waited for it for good. A signed number is an index, and the config's own message says what to write."""
    config = tmp_path / "config.yaml"
    shutil.copy(TEMPLATE, config)
    done = setup(config, "--non-interactive", "--device", "-1")
    assert done.returncode == 78, (done.stdout, done.stderr)
    assert "a device index is 0 or more" in done.stderr and "leave the key out" in done.stderr
    assert load_config(config).audio.device is None  # not saved


def test_a_device_that_is_not_there_is_saved_and_said(tmp_path: Path) -> None:
    """Found by a first-hour walk: ``setup --device USB`` with no such device wrote it without a word (only
    check-config said it later). It is saved (a USB microphone may come later: run waits for it) and said, in
    check-config's words."""
    config = tmp_path / "config.yaml"
    shutil.copy(TEMPLATE, config)
    done = setup(config, "--non-interactive", "--device", "no such microphone")
    assert done.returncode == 0, (done.stdout, done.stderr)
    assert "warning: audio.device = 'no such microphone'" in done.stderr and "not found" in done.stderr, done.stderr
    assert load_config(config).audio.device == "no such microphone"


def test_flags_write_the_config_and_the_password_credential(tmp_path: Path) -> None:
    config = tmp_path / "etc" / "config.yaml"
    config.parent.mkdir()
    shutil.copy(TEMPLATE, config)
    env = {"PATH": "/usr/bin:/bin", "NOISEWATCH_MQTT_PASSWORD": "s3cret"}
    done = setup(config, "--mqtt-host", "broker.lan", "--mqtt-user", "nw", "--mqtt-password-env",
                 "--default-device-id", env=env)
    assert done.returncode == 0, done.stderr
    loaded = load_config(config)
    assert (loaded.mqtt.enabled, loaded.mqtt.host, loaded.mqtt.username) == (True, "broker.lan", "nw")
    assert loaded.device_id == default_device_id() != ""
    credential = tmp_path / "etc" / "credentials" / "mqtt_password"
    assert credential.read_text() == "s3cret" and credential.stat().st_mode & 0o777 == 0o600
    assert "s3cret" not in config.read_text()


def test_an_invalid_answer_leaves_the_config_alone(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    shutil.copy(TEMPLATE, config)
    done = setup(config, "--mqtt-host", "broker.lan", "--mqtt-port", "0")
    assert done.returncode == EX_CONFIG and "not saved" in done.stderr and "port" in done.stderr
    assert f"{config} (as it would be written):" in done.stderr and "tmp" not in done.stderr.replace(str(tmp_path), ""), \
        done.stderr  # the line is the edited file's; a temporary file's name, gone as the user reads it, was given
    assert config.read_text() == TEMPLATE.read_text()
    assert [p.name for p in tmp_path.iterdir()] == ["config.yaml"]  # no temporary file left


def test_without_a_terminal_or_flags_it_says_what_to_do(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    shutil.copy(TEMPLATE, config)
    done = setup(config)
    assert done.returncode == 2 and "not a terminal" in done.stderr


def test_interview_offers_the_host_name_and_current_values(capsys: pytest.CaptureFixture[str]) -> None:
    questions: list[tuple[str, str]] = []
    replies = {"Input device": "", "Device id": "", "MQTT broker host": "broker.lan", "MQTT broker port": "",
               "MQTT user": "nw"}

    def ask(question: str, default: str) -> str:
        questions.append((question, default))
        return next(reply for start, reply in replies.items() if question.startswith(start)) or default

    answers = interview({"device_id": "noisewatch", "audio": {"device": 3}}, ask, lambda prompt: "pw")
    assert answers == Answers(device="3", device_id=default_device_id(), mqtt_host="broker.lan", mqtt_port=1883,
                              mqtt_user="nw", mqtt_password="pw")
    assert ("MQTT broker port", "1883") in questions  # asked, so that it goes neither into the host nor the user
    assert ("Device id (names this listener in MQTT and Home Assistant)", default_device_id()) in questions


@pytest.mark.parametrize("host", ["noise pi.lan", "-pi-", "balcony_pi"])
def test_the_host_name_offered_is_the_id_a_config_without_one_gets(monkeypatch, capsys, host: str) -> None:
    """Found by a code review: the wizard had its own copy of the host-name rule, which disagreed with the config's
    on names with other characters ("noise pi": noise_pi offered, noise-pi for a config without ``device_id``):
    two ids, two devices in Home Assistant, for one listener."""
    from noisewatch.config import Config

    monkeypatch.setattr("socket.gethostname", lambda: host)
    answers = interview({}, lambda question, default: default, lambda prompt: "")
    assert answers.device_id == Config().device_id == default_device_id() != "", (answers.device_id, host)


def test_an_answer_the_config_refuses_is_asked_again_at_once(capsys: pytest.CaptureFixture[str]) -> None:
    """A device id with a space was taken, every later question was asked, and only then was nothing saved
    (naming a temporary file already gone): all answers lost. Now the config's own check runs at the prompt.
    Without a stored password, an empty one is "none", not "keep the stored one"."""
    replies = {"Input device": [""], "Device id": ["my balcony", "balcony"],
               "MQTT broker host": ["broker.lan:1883", "broker.lan"], "MQTT broker port": [""], "MQTT user": ["nw"]}
    secret_prompts: list[str] = []

    def ask(question: str, default: str) -> str:
        return next(replies[start].pop(0) for start in replies if question.startswith(start)) or default

    answers = interview({}, ask, lambda prompt: secret_prompts.append(prompt) or "")
    assert (answers.device_id, answers.mqtt_host, answers.mqtt_password) == ("balcony", "broker.lan", None)
    out = capsys.readouterr().out
    assert "'my balcony': must be 1-64 letters, digits, '_' or '-'" in out
    assert "'broker.lan:1883': the port goes in mqtt.port" in out
    assert secret_prompts == ["MQTT password (empty: none): "]


@pytest.fixture
def broker_with_user() -> Iterator[Broker]:
    """A private mosquitto that takes user nw with password s3cret, and no one else."""
    started = Broker(users={"nw": "s3cret"}).start()
    yield started
    started.cleanup()


@pytest.mark.broker
@pytest.mark.parametrize("case", ["answering", "wrong password", "not listening"])
def test_the_broker_given_is_tried_at_once_and_the_readmes_reload_is_offered(
        tmp_path: Path, broker_with_user: Broker, case: str) -> None:
    """First hour with Home Assistant: setup wrote a wrong port or password without a word (it showed only in the
    service's log), and told the user to restart where the README reloads. A broker that does not take the
    connection is a warning: the config is written all the same."""
    config = tmp_path / "etc" / "config.yaml"
    config.parent.mkdir()
    shutil.copy(TEMPLATE, config)
    port = free_port() if case == "not listening" else broker_with_user.port
    env = {"PATH": "/usr/bin:/bin", "NOISEWATCH_MQTT_PASSWORD": "wrong" if case == "wrong password" else "s3cret"}
    done = setup(config, "--mqtt-host", "127.0.0.1", "--mqtt-port", str(port), "--mqtt-user", "nw",
                 "--mqtt-password-env", env=env)
    assert done.returncode == 0 and load_config(config).mqtt.port == port, done.stderr
    warned = [line for line in done.stderr.splitlines() if "warning" in line and f"127.0.0.1:{port}" in line]
    if case == "answering":
        assert not warned and f"127.0.0.1:{port} took the connection" in done.stdout, (done.stdout, done.stderr)
    else:
        assert len(warned) == 1 and "took the connection" not in done.stdout, (done.stdout, done.stderr)
    assert "systemctl restart noisewatch" in done.stdout  # a new password: the unit loads it only at start
    again = setup(config, "--device", "USB", env={"PATH": "/usr/bin:/bin"})  # the stored password is offered
    assert again.returncode == 0 and "systemctl reload noisewatch" in again.stdout, again.stdout
    assert (f"127.0.0.1:{port} took the connection" in again.stdout) == (case == "answering"), again.stdout


def setup_on_a_terminal(config: Path, answers: list[str]) -> str:
    """``noisewatch setup`` asking on a terminal (a pty), each of ``answers`` typed once its question shows (typed
    ahead, a password question's terminal flush would drop them); what the terminal showed."""
    import os
    import pty
    import select

    master, slave = pty.openpty()
    # a session of its own: no controlling terminal, so a password question reads the pty too (getpass's fallback)
    with subprocess.Popen([sys.executable, "-m", "noisewatch.cli", "setup", "--config", str(config)],
                          stdin=slave, stdout=slave, stderr=slave, start_new_session=True) as proc:
        os.close(slave)
        typed, shown, deadline = [*answers, "", ""], b"", time.monotonic() + 60
        while time.monotonic() < deadline:
            if not select.select([master], [], [], 1)[0]:
                continue
            try:
                chunk = os.read(master, 4096)
            except OSError:  # the terminal's other end closed: setup is done
                break
            shown += chunk
            if shown.endswith(b": ") and typed:
                os.write(master, f"{typed.pop(0)}\n".encode())
        assert proc.wait(10) == 0, shown.decode(errors="replace")
    os.close(master)
    return shown.decode(errors="replace")


def test_setup_run_again_can_empty_a_setting_it_shows(tmp_path: Path) -> None:
    """Found running setup again as the README says ("at any time"): with an input device, a broker and a user set,
    each question showed it as the default, and the prompts' "empty: system default", "empty: no MQTT" and "empty:
    anonymous" were untrue: Enter keeps the default, so no answer went back to the default input, turned MQTT off or
    made the listener anonymous. ``-`` empties a setting now, as the prompts say."""
    config = tmp_path / "config.yaml"
    config.write_text(apply(TEMPLATE.read_text(), Answers(device="USB mic", device_id="kitchen",
                                                          mqtt_host="127.0.0.1", mqtt_port=free_port(),
                                                          mqtt_user="nw")))
    shown = setup_on_a_terminal(config, ["-", "", "", "", "-"])  # device, id, host, port, user
    loaded = load_config(config)
    assert (loaded.audio.device, loaded.device_id, loaded.mqtt.enabled, loaded.mqtt.username) == (
        None, "kitchen", True, None), shown
    assert "- for the system default" in shown and "- for anonymous" in shown, shown
    setup_on_a_terminal(config, ["", "", "-"])  # device, id, host
    assert load_config(config).mqtt.enabled is False


def test_setup_stores_the_password_where_run_and_check_config_look_for_it() -> None:
    """``noisewatch setup`` writes credentials/mqtt_password beside the config; ``Config.mqtt_password`` reads it
    there (tests/test_first_hour_setup.py shows check-config by hand using it)."""
    from noisewatch.config import STORED_PASSWORD
    from noisewatch.setup_wizard import PASSWORD_FILE

    assert STORED_PASSWORD == Path("credentials", PASSWORD_FILE)

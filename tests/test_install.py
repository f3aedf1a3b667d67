"""scripts/install.sh and uninstall.sh in a throwaway root (apt and systemctl skipped).

To stay fast the package is built once as a wheel and installed with ``--no-deps`` (the runtime
dependencies are PyPI's business; the check here is that the installed command runs). The
service user is created for real inside the root's own /etc/passwd when the tests run as root.
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
INSTALL = ROOT / "scripts" / "install.sh"
UNINSTALL = ROOT / "scripts" / "uninstall.sh"
AS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--disable-pip-version-check", str(ROOT), "-w", str(out)],
        check=True,
        timeout=300,
    )
    return next(out.glob("noisewatch-*.whl"))


@pytest.fixture()
def target(tmp_path: Path) -> Path:
    """A root with just enough /etc for useradd --prefix."""
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "passwd").write_text("root:x:0:0:root:/root:/bin/bash\n")
    (etc / "group").write_text("root:x:0:\naudio:x:29:\n")
    for name, text in (("shadow", "root:*:19000:0:99999:7:::\n"), ("gshadow", "root:*::\naudio:*::\n")):
        (etc / name).write_text(text)
        (etc / name).chmod(0o600)
    return tmp_path


def run(script: Path, root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(script), "--root", str(root), "--no-systemctl", *args], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    return result


def install(root: Path, wheel: Path) -> subprocess.CompletedProcess[str]:
    return run(INSTALL, root, "--no-apt", "--no-deps", "--package", str(wheel), "--python", sys.executable)


def test_install_twice_is_idempotent_and_keeps_the_users_config(target: Path, wheel: Path) -> None:
    install(target, wheel)
    config = target / "etc/noisewatch/config.yaml"
    assert config.read_text() == (ROOT / "config/noisewatch.yaml").read_text()
    assert (target / "etc/systemd/system/noisewatch.service").read_text() == (ROOT / "systemd/noisewatch.service").read_text()
    assert (target / "etc/logrotate.d/noisewatch").read_text() == (ROOT / "systemd/noisewatch.logrotate").read_text()
    assert (target / "opt/noisewatch/share/noisewatch/config/noisewatch.yaml").is_file()
    assert (target / "etc/noisewatch/credentials").stat().st_mode & 0o777 == 0o700
    version = subprocess.run([str(target / "opt/noisewatch/bin/noisewatch"), "--version"], capture_output=True, text=True)
    assert version.returncode == 0 and version.stdout.startswith("noisewatch ")
    before = {p: p.stat().st_mode for p in target.rglob("*") if "opt" not in p.parts}

    config.write_text("device_id: kitchen\n")
    second = install(target, wheel)
    assert config.read_text() == "device_id: kitchen\n"
    assert "keeping existing /etc/noisewatch/config.yaml" in second.stderr
    after = {p: p.stat().st_mode for p in target.rglob("*") if "opt" not in p.parts}
    assert after.keys() == before.keys()


@pytest.mark.skipif(not AS_ROOT, reason="useradd --prefix needs root")
def test_service_user_is_created_once_in_the_audio_group(target: Path, wheel: Path) -> None:
    install(target, wheel)
    install(target, wheel)
    passwd = (target / "etc/passwd").read_text().splitlines()
    users = [line for line in passwd if line.startswith("noisewatch:")]
    assert len(users) == 1 and users[0].endswith(":/var/lib/noisewatch:/usr/sbin/nologin")
    assert "audio:x:29:noisewatch" in (target / "etc/group").read_text().splitlines()
    uid = int(users[0].split(":")[2])
    assert (target / "var/lib/noisewatch").stat().st_uid == uid


def test_uninstall_keeps_config_and_state_unless_purged(target: Path, wheel: Path) -> None:
    install(target, wheel)
    (target / "etc/noisewatch/config.yaml").write_text("device_id: kitchen\n")
    run(UNINSTALL, target)
    assert not (target / "opt/noisewatch").exists()
    assert not (target / "etc/systemd/system/noisewatch.service").exists()
    assert not (target / "etc/logrotate.d/noisewatch").exists()
    assert (target / "etc/noisewatch/config.yaml").read_text() == "device_id: kitchen\n"
    assert (target / "var/lib/noisewatch").is_dir()

    run(UNINSTALL, target, "--purge")
    assert not (target / "etc/noisewatch").exists() and not (target / "var/lib/noisewatch").exists()
    assert "noisewatch:" not in (target / "etc/passwd").read_text()


@pytest.mark.parametrize(("args", "message"), [(["--bogus"], "unknown option: --bogus"), ([], "--root needs --no-systemctl")])
def test_installer_rejects_bad_options_before_touching_anything(target: Path, args: list[str], message: str) -> None:
    result = subprocess.run([str(INSTALL), "--root", str(target), "--no-apt", *args], capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and message in result.stderr
    assert not (target / "opt").exists()


def with_dependencies(root: Path) -> None:
    """The target venv made beforehand, seeing this interpreter's packages: check-config can run without PyPI."""
    venv = root / "opt/noisewatch"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    (site,) = venv.glob("lib/python*/site-packages")
    (site / "test-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")


def install_checked(root: Path, wheel: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(INSTALL), "--root", str(root), "--no-systemctl", "--no-apt", "--no-deps", "--check",
                           "--package", str(wheel), "--python", sys.executable, *args],
                          capture_output=True, text=True, timeout=300, env=env, stdin=subprocess.DEVNULL)


def test_failed_check_config_fails_the_install(target: Path, wheel: Path) -> None:
    with_dependencies(target)
    (target / "etc/noisewatch").mkdir(parents=True)
    (target / "etc/noisewatch/config.yaml").write_text("audio:\n  hop_s: 9\n")
    result = install_checked(target, wheel, "--non-interactive")
    assert result.returncode == 1, result.stderr
    assert "check-config failed for /etc/noisewatch/config.yaml" in result.stderr
    assert "FAILED: the service is installed but not started" in result.stderr
    assert "install: done" not in result.stderr


def test_flags_configure_a_fresh_install(target: Path, wheel: Path) -> None:
    with_dependencies(target)
    env = {**os.environ, "NOISEWATCH_MQTT_PASSWORD": "pw-123"}
    result = install_checked(target, wheel, "--mqtt-host", "broker.lan", "--mqtt-user", "nw", "--device", "",
                             env=env)
    assert result.returncode == 0, result.stderr
    assert result.stderr.rstrip().endswith("install: done")
    config = (target / "etc/noisewatch/config.yaml").read_text()
    for line in ('  enabled: true', '  host: "broker.lan"', '  username: "nw"', '  device: null'):
        assert line in config.splitlines()
    assert "device_id: noisewatch\n" not in config  # the host name instead
    credential = target / "etc/noisewatch/credentials/mqtt_password"
    assert credential.read_text() == "pw-123" and credential.stat().st_mode & 0o777 == 0o600
    assert "pw-123" not in result.stderr + result.stdout + config


def test_the_installer_checks_the_config_with_the_stored_password_as_the_service_gets_it(target: Path,
                                                                                         wheel: Path) -> None:
    """setup stores the password as the systemd credential, which only the service gets: the installer's
    check-config ran without it and warned that the user had no password (and the broker refused it)."""
    with_dependencies(target)
    stored = install_checked(target, wheel, "--mqtt-host", "broker.lan", "--mqtt-user", "nw", "--device", "",
                             env={**os.environ, "NOISEWATCH_MQTT_PASSWORD": "pw-123"})
    assert stored.returncode == 0, stored.stderr
    again = install_checked(target, wheel, env={k: v for k, v in os.environ.items() if k != "NOISEWATCH_MQTT_PASSWORD"})
    assert again.returncode == 0 and "has no password" not in again.stderr, again.stderr


def test_a_second_install_asks_nothing_and_keeps_the_device_id(target: Path, wheel: Path) -> None:
    with_dependencies(target)
    config = target / "etc/noisewatch/config.yaml"
    assert install_checked(target, wheel).returncode == 0
    config.write_text(config.read_text().replace("device_id: ", "device_id: noisewatch\n# was: ", 1))
    before = config.read_text()
    second = install_checked(target, wheel)
    assert second.returncode == 0, second.stderr
    assert config.read_text() == before

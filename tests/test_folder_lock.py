"""The folder lock a listener takes on its spool and state folders, and ``check-config``'s look at it."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from noisewatch.daemon.statefile import FolderInUse, FolderLock

CHECKER = """
import sys, time
from pathlib import Path
from noisewatch.daemon.statefile import FolderLock
folder, until = Path(sys.argv[1]), time.monotonic() + float(sys.argv[2])
print("probing", flush=True)
while time.monotonic() < until:
    FolderLock.held_elsewhere(folder)
"""


def test_a_listener_starting_while_check_config_looks_at_its_folder_is_not_refused(tmp_path: Path) -> None:
    """check-config looks whether a running listener holds the folders by taking their lock for an instant: a
    listener (re)starting in that instant (systemd's restart after a failure, a reload moving the spool) was refused
    its own folder as "in use by another noisewatch listener", exit 78, which systemd does not restart
    (RestartPreventExitStatus=78): the listener stayed down. Here a checker looks again and again while this process
    takes and lets go of the lock as starting listeners do; no take is refused, and a lock really held still is."""
    folder = tmp_path / "spool"
    folder.mkdir()
    checker = subprocess.Popen([sys.executable, "-c", CHECKER, str(folder), "3"], stdout=subprocess.PIPE, text=True)
    try:
        assert checker.stdout is not None and checker.stdout.readline() == "probing\n"
        refused, takes, until = 0, 0, time.monotonic() + 2.0
        while time.monotonic() < until:
            try:
                FolderLock.take(folder).release()
            except FolderInUse:
                refused += 1
            takes += 1
        assert refused == 0, f"{refused} of {takes} starting listeners refused their own folder"
    finally:
        checker.wait(timeout=30)
    held = FolderLock.take(folder)
    try:
        assert subprocess.run([sys.executable, "-c", "import sys; from pathlib import Path; from noisewatch.daemon."
                               "statefile import FolderLock, FolderInUse\ntry:\n FolderLock.take(Path(sys.argv[1]))\n"
                               "except FolderInUse:\n sys.exit(3)", str(folder)], timeout=30).returncode == 3
    finally:
        held.release()


def test_check_config_says_a_held_folder_once_under_two_spellings(tmp_path: Path) -> None:
    """State and spool in one folder, spelled two ways (through a symlink, with ``..``): the listener takes one lock
    (``same_folder``), so check-config says one folder held, not two, and not one under each spelling."""
    folder = tmp_path / "noisewatch"
    folder.mkdir()
    (tmp_path / "link").symlink_to(folder)
    held = FolderLock.take(folder)
    try:
        for state, spool in ((tmp_path / "link", folder), (folder, tmp_path / "link" / ".." / "noisewatch")):
            said = subprocess.run([sys.executable, "-c", "import sys\nfrom noisewatch.config import MqttSection\n"
                                   "from noisewatch.daemon.sinks.mqtt import folders_in_use\n"
                                   "section = MqttSection(state_directory=sys.argv[1], spool={'directory': sys.argv[2]})\n"
                                   "print(folders_in_use(section))", str(state), str(spool)],
                                  capture_output=True, text=True, timeout=60)
            assert said.stdout.strip() == f"[('mqtt.state_directory', PosixPath('{state}'))]", said.stderr
    finally:
        held.release()

"""``noisewatch dashboard``: validate the config, then run ``streamlit run`` on the app module.

Streamlit owns its process (its server, its script threads), so the dashboard runs as a child
process; the config path reaches the app as a script argument (``-- --config FILE``), the same way
a user running ``streamlit run`` by hand would pass it. The child runs with ``python -P``: a plain
``python -m`` puts the current folder first on ``sys.path``, and started from a folder holding a
``noisewatch/`` directory (a clone in ``~``) the app would import that instead of the installed
package. It listens on localhost unless told otherwise: the dashboard has no login.
"""

from __future__ import annotations

import argparse
import importlib.util
import signal
import subprocess
import sys
from pathlib import Path

from noisewatch.config import EX_CONFIG, Config, ConfigError, load_config

EX_UNAVAILABLE = 69  # sysexits.h: a required service (here: the extra) is missing
APP = Path(__file__).with_name("app.py")
LOCALHOST = "127.0.0.1"
STREAMLIT_OPTIONS = ("--server.headless", "true", "--browser.gatherUsageStats", "false", "--client.toolbarMode", "viewer",
                     "--server.fileWatcherType", "none")
"""No file watcher: a running dashboard reloaded modules changed under it (an upgrade, a ``git pull``) beside its
live MQTT subscriber's old objects, and showed a listener online as "audio input lost" and closed events as open."""


def streamlit_command(config: str | None, port: int, address: str = LOCALHOST) -> list[str]:
    """The ``streamlit run`` command line for the app (pure, so it can be tested)."""
    command = [sys.executable, "-P", "-m", "streamlit", "run", str(APP), "--server.port", str(port),
               "--server.address", address, *STREAMLIT_OPTIONS, "--"]
    if config is not None:
        command += ["--config", str(Path(config).resolve())]
    return command


def app_arguments(argv: list[str]) -> argparse.Namespace:
    """The app's own arguments, as ``streamlit run app.py -- --config FILE`` passes them."""
    parser = argparse.ArgumentParser(prog="noisewatch dashboard app")
    parser.add_argument("--config")
    return parser.parse_known_args(argv)[0]


def config_warnings(config: Config, path: str | None) -> list[str]:
    """What in a valid config most likely means the Live page will stay empty (the shipped config has MQTT off,
    and the dashboard went quietly to localhost)."""
    if config.mqtt.enabled:
        return []
    return [f"MQTT is off in {path or 'the built-in config'}; watching {config.mqtt.host}:{config.mqtt.port} all "
            "the same (a listener run with this config publishes nothing there: its Live page stays empty)"]


def main(args: argparse.Namespace) -> int:
    """Handler of ``noisewatch dashboard``; returns Streamlit's exit code."""
    if importlib.util.find_spec("streamlit") is None:
        print("noisewatch dashboard needs Streamlit: pip install 'noisewatch[dashboard]'", file=sys.stderr)
        return EX_UNAVAILABLE
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"noisewatch dashboard: {exc}", file=sys.stderr)
        return EX_CONFIG
    for warning in config_warnings(config, args.config):
        print(f"noisewatch dashboard: {warning}", file=sys.stderr)
    address = args.address or LOCALHOST
    if address != LOCALHOST:
        print(f"noisewatch dashboard: listening on {address}:{args.port} without a login; anyone who can "
              "reach it sees every listener (see the README's Dashboard section)", file=sys.stderr)
    child = subprocess.Popen(streamlit_command(args.config, args.port, address))
    signal.signal(signal.SIGTERM, lambda signum, frame: child.terminate())  # systemd/test stop reaches Streamlit
    try:
        return child.wait()
    except KeyboardInterrupt:  # Ctrl+C reached Streamlit too (same process group): let it finish
        return child.wait()

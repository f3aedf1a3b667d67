"""Test helpers: a real mosquitto on a free loopback port, a collecting subscriber, a mute server, a proxy that
swallows acknowledgements.

``Broker`` writes its own config into a private directory (persistence, log, optional password
file made with ``mosquitto_passwd``, optional TLS listener with a CA generated with ``openssl``,
optional ACL file, optional subscriptions refused by mosquitto's dynamic-security plugin),
starts mosquitto, and stops it by PID (gracefully or with SIGKILL). Started as root, mosquitto
drops to the ``mosquitto`` user, so that directory is handed to that user.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
HOST = "127.0.0.1"
START_TIMEOUT_S = 5.0
IN_USE = "Address already in use"
BROKER_USER = "mosquitto"
DYNSEC_PLUGIN = next(iter(sorted(glob.glob("/usr/lib/*/mosquitto_dynamic_security.so"))), "mosquitto_dynamic_security.so")
"""mosquitto's dynamic-security plugin: its ACLs refuse a SUBSCRIBE in the SUBACK (an ``acl_file`` never does:
mosquitto 2.0 grants every subscription and drops at delivery what the file denies)."""
RUNNING = " running\n"
"""The end of mosquitto's log line once every listener is open (it exits instead when a port is taken)."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=0.2):
            return True
    except OSError:
        return False


def _run(*args: str, cwd: Path) -> None:
    subprocess.run(args, cwd=cwd, check=True, capture_output=True)


def make_test_ca(directory: Path) -> None:
    """ca.crt, server.crt/key (for 127.0.0.1 and localhost), client.crt/key, signed by a fresh CA."""
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    _run("openssl", "req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
         "-subj", "/CN=noisewatch test CA", cwd=directory)
    (directory / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for name in ("server", "client"):
        _run("openssl", "req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}",
             cwd=directory)
        _run("openssl", "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
             "-CAcreateserial", "-out", f"{name}.crt", "-days", "2", "-extfile", "san.ext", cwd=directory)


@dataclass
class Broker:
    """A private mosquitto. ``users`` turns on password auth; ``tls`` adds a TLS listener; ``acl`` is the
    text of an ACL file (mosquitto's format: rules before any ``user`` line apply to anonymous clients);
    ``settings``: more lines of mosquitto.conf (limits a broker may set, such as ``retain_available false``);
    ``refused_subscriptions``: topic filters whose SUBSCRIBE anonymous clients are refused (dynamic-security
    plugin: 0x80 under MQTT 3.1.1, 0x87 Not authorized under MQTT 5), everything else allowed."""

    users: dict[str, str] | None = None
    tls: bool = False
    acl: str | None = None
    settings: tuple[str, ...] = ()
    refused_subscriptions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="nw-mosquitto-"))
        self.port = free_port()
        self.tls_port = free_port() if self.tls else None
        self.proc: subprocess.Popen[bytes] | None = None
        if self.tls:
            make_test_ca(self.dir)
        if self.users:
            for user, password in self.users.items():
                flag = ["-c"] if user == next(iter(self.users)) else []
                _run("mosquitto_passwd", "-b", *flag, "passwords", user, password, cwd=self.dir)
        if self.acl is not None:
            (self.dir / "acl").write_text(self.acl)
        if self.refused_subscriptions:
            self._write_dynsec()
        self._write_config()
        self._give_to_broker_user()

    @property
    def ca_file(self) -> Path:
        return self.dir / "ca.crt"

    @property
    def log_text(self) -> str:
        path = self.dir / "mosquitto.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def _write_dynsec(self) -> None:
        """The dynamic-security plugin's file: anonymous clients may do anything but subscribe to the refused filters."""
        acls = [{"acltype": "subscribePattern", "topic": topic, "priority": 0, "allow": False}
                for topic in self.refused_subscriptions]
        allowed = {"publishClientSend": True, "publishClientReceive": True, "subscribe": True, "unsubscribe": True}
        (self.dir / "dynsec.json").write_text(json.dumps({
            "defaultACLAccess": allowed, "clients": [], "anonymousGroup": "anonymous",
            "groups": [{"groupname": "anonymous", "roles": [{"rolename": "refused"}]}],
            "roles": [{"rolename": "refused", "acls": acls}]}))

    def _write_config(self) -> None:
        lines = [
            "per_listener_settings false",
            "persistence true", f"persistence_location {self.dir}/",
            # saved after every change: a subscriber's session survives even a SIGKILL of the broker
            "autosave_on_changes true", "autosave_interval 1",
            f"log_dest file {self.dir}/mosquitto.log", "log_type all",
            f"allow_anonymous {'false' if self.users else 'true'}",
            *self.settings,
            f"listener {self.port} {HOST}",
        ]
        if self.users:
            lines.append(f"password_file {self.dir}/passwords")
        if self.acl is not None:
            lines.append(f"acl_file {self.dir}/acl")
        if self.refused_subscriptions:
            lines += [f"plugin {DYNSEC_PLUGIN}", f"plugin_opt_config_file {self.dir}/dynsec.json"]
        if self.tls:
            lines += [f"listener {self.tls_port} {HOST}", f"cafile {self.dir}/ca.crt",
                      f"certfile {self.dir}/server.crt", f"keyfile {self.dir}/server.key"]
        (self.dir / "mosquitto.conf").write_text("\n".join(lines) + "\n")

    def _give_to_broker_user(self) -> None:
        if os.geteuid() != 0:
            return
        try:
            entry = pwd.getpwnam(BROKER_USER)
        except KeyError:
            return
        for path in [self.dir, *self.dir.iterdir()]:
            os.chown(path, entry.pw_uid, entry.pw_gid)

    def set_password(self, user: str, password: str) -> None:
        """Change a password and make the running broker reload its password file (SIGHUP)."""
        _run("mosquitto_passwd", "-b", "passwords", user, password, cwd=self.dir)
        self._give_to_broker_user()
        if self.proc is not None:
            os.kill(self.proc.pid, signal.SIGHUP)

    def start(self) -> "Broker":
        """Start, and return once this broker (not another's on the same port) listens. The tests' two workers
        pick free ports apart: a port freed by a stop can be taken by the other before a restart; at a first start,
        another port is taken instead."""
        started = self.log_text.count(RUNNING)
        in_use = self.log_text.count(IN_USE)
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.dir / "mosquitto.conf")],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + START_TIMEOUT_S
        while self.log_text.count(RUNNING) == started or not _port_open(self.port):
            if self.proc.poll() is not None and self.log_text.count(IN_USE) > in_use and not started:
                self.port, self.tls_port = free_port(), free_port() if self.tls else None
                self._write_config()
                self._give_to_broker_user()
                return self.start()
            if self.proc.poll() is not None and self.log_text.count(IN_USE) > in_use and time.monotonic() < deadline:
                # a restart must keep its port (the daemon reconnects to it): taken meanwhile, as the local end of
                # another connection of the other worker's tests, it is free again once that one closes
                time.sleep(0.2)
                in_use = self.log_text.count(IN_USE)
                self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.dir / "mosquitto.conf")],
                                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                continue
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop(kill=True)
                raise RuntimeError(f"mosquitto did not start on port {self.port}: {self.log_text[-2000:]}")
            time.sleep(0.05)
        return self

    def stop(self, kill: bool = False) -> None:
        """Stop by PID: SIGTERM (mosquitto saves its sessions) or SIGKILL (a crash)."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL if kill else signal.SIGTERM)
        self.proc.wait(timeout=10)
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def restart_refusing(self, filters: tuple[str, ...]) -> None:
        """Restart with other subscriptions refused (a broker started with some: the plugin is loaded)."""
        self.stop()
        self.refused_subscriptions = filters
        self._write_dynsec()
        self._give_to_broker_user()
        self.start()

    def cleanup(self) -> None:
        self.stop(kill=True)
        shutil.rmtree(self.dir, ignore_errors=True)


class Collector:
    """A real subscriber that records every (topic, payload, retain) it receives."""

    def __init__(self, port: int, topic: str = "#", client_id: str = "", **auth: str) -> None:
        """With a ``client_id`` the session persists: messages wait in the broker while we are away."""
        self.messages: list[tuple[str, bytes, bool]] = []
        self.arrived: list[float] = []
        """When each of ``messages`` arrived (monotonic)."""
        self._cond = threading.Condition(threading.RLock())
        self._subscribed = threading.Event()
        self.client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id=client_id,
                                  clean_session=not client_id)
        if auth:
            self.client.username_pw_set(auth["username"], auth["password"])
        self.client.reconnect_delay_set(0.1, 0.5)
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, qos=1)
        self.client.on_subscribe = lambda c, u, mid, rcs, p: self._subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect(HOST, port)
        self.client.loop_start()
        if not self._subscribed.wait(START_TIMEOUT_S):
            raise RuntimeError("subscriber could not subscribe")

    def _on_message(self, client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        with self._cond:
            self.messages.append((message.topic, message.payload, bool(message.retain)))
            self.arrived.append(time.monotonic())
            self._cond.notify_all()

    def on(self, topic: str) -> list[bytes]:
        with self._cond:
            return [payload for t, payload, _ in self.messages if t == topic]

    def wait_for(self, predicate: Callable[["Collector"], bool], timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate(self):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.2))  # predicate reads under the (re-entrant) lock
        return True

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class MuteServer:
    """Accepts TCP connections and reads forever, never answering: a broker that hangs."""

    def __init__(self) -> None:
        self.sock = socket.create_server((HOST, 0))
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self._stop = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        self.sock.settimeout(0.2)
        held = []
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.connections += 1
            held.append(conn)  # kept open, never read back to: the client waits for a CONNACK
        for conn in held:
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self.sock.close()


CONNACK = 2
PUBACK = 4
"""MQTT control packet type of a publish acknowledgement."""


def _read_packet(sock: socket.socket) -> bytes | None:
    """One whole MQTT packet (fixed header, remaining length, body), or None once the connection has ended."""
    header = sock.recv(1)
    if not header:
        return None
    length, shift = 0, 0
    while True:
        byte = sock.recv(1)
        if not byte:
            return None
        header += byte
        length |= (byte[0] & 0x7F) << shift
        shift += 7
        if not byte[0] & 0x80:
            break
    body = b""
    while len(body) < length:
        chunk = sock.recv(length - len(body))
        if not chunk:
            return None
        body += chunk
    return header + body


class _Proxy:
    """A proxy in front of a broker that passes on, each way, the packets :meth:`passes` lets through."""

    def __init__(self, broker_port: int) -> None:
        self.sock = socket.create_server((HOST, 0))
        self.port = self.sock.getsockname()[1]
        self.broker_port = broker_port
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return  # closed
            upstream = socket.create_connection((HOST, self.broker_port))
            threading.Thread(target=self._pass, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pass, args=(upstream, client, False), daemon=True).start()

    def _pass(self, source: socket.socket, target: socket.socket, to_broker: bool) -> None:
        passed = 0
        try:
            while (packet := _read_packet(source)) is not None:
                if self.passes(packet, to_broker, passed):
                    target.sendall(packet)
                    passed += 1
        except OSError:
            pass
        for end in (source, target):  # the other way's reader is woken too: the broker sees the client gone at once
            with contextlib.suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)
            end.close()

    def passes(self, packet: bytes, to_broker: bool, passed: int) -> bool:
        """Whether ``packet`` goes on; ``passed``: how many went on before it that way."""
        return True

    def close(self) -> None:
        self.sock.close()


class AckSwallower(_Proxy):
    """Passes everything on but the broker's PUBACKs to the client: a broker that takes the connection, answers
    pings and forwards what it is sent, and never acknowledges a QoS 1 publish."""

    def passes(self, packet: bytes, to_broker: bool, passed: int) -> bool:
        return to_broker or packet[0] >> 4 != PUBACK


class LinkStall(_Proxy):
    """Passes the connection's CONNECT and the broker's answers, then holds all the client sends: a link that
    stalls right after a (re)connect (Wi-Fi gone again, the broker's host swapping), until the client's keepalive
    gives up on it."""

    def passes(self, packet: bytes, to_broker: bool, passed: int) -> bool:
        return not to_broker or passed < 1


class AnswerStall(_Proxy):
    """Passes all the client sends and the broker's CONNACK, then holds the broker's answers: a loaded broker or a
    slow link, where a client that connected waits for its SUBACK."""

    def passes(self, packet: bytes, to_broker: bool, passed: int) -> bool:
        return to_broker or passed < 1


class LateConnack(_Proxy):
    """Passes everything on, but holds the broker's CONNACK of each connection after the first for ``delay_s``: a slow
    link when a reload connects a new client."""

    def __init__(self, broker_port: int, delay_s: float) -> None:
        super().__init__(broker_port)
        self.delay_s = delay_s
        self.connacks = 0

    def passes(self, packet: bytes, to_broker: bool, passed: int) -> bool:
        if not to_broker and packet[0] >> 4 == CONNACK:
            self.connacks += 1
            if self.connacks > 1:
                time.sleep(self.delay_s)
        return True


def wait_until(predicate: Callable[[], bool], timeout: float) -> bool:
    """Poll instead of sleeping a fixed time: retries and deliveries take longer on a busy machine."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True

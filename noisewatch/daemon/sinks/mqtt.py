"""The MQTT sink: events published at least once, through a durable spool, never blocking audio.

Threads and hand-offs:

- ``send`` (processing loop) appends ``started``/``event`` messages to the on-disk spool, then puts a
  command on the pump's queue; other messages go on the queue as they are. It never calls paho and
  never waits for the network.
- The pump thread (``mqtt-pump``) owns the connection's state (connection flag, label states, in-flight
  messages, the in-memory queue) and takes commands from one queue, in order: from ``send``,
  from paho's callbacks (connected, disconnected, acknowledged, subscribed) and from ``close``. It feeds spooled
  messages to paho, at most ``INFLIGHT_WINDOW`` unacknowledged at a time and only while connected,
  removes a message from the spool when its acknowledgement arrives, and on every (re)connect publishes
  the latest audio state, the retained ``ON``/``OFF`` states, the Home Assistant discovery and then ``online``.
- Shared with other threads: what the spool's disk refuses (``_disk_trouble``, an Event, set by
  ``send`` when a write fails; ``_disk_refusal`` and ``_disk_probe``, replaced whole by ``send``, the health
  report's look at the disk and the pump), the spool move's outcome that the health report reads
  (``_move_error``), the events held in memory that it counts (``_unspooled``, ``_inflight_held``), and a reload's
  hand-over (``_handing_over``, set by the sink that replaces this one; ``_move_to``, read by it under ``_disk_lock``).
- paho's own thread (``loop_start``) connects, reconnects with capped exponential backoff (plus a
  random jitter, so listeners that lost the same broker do not return in lockstep) and re-sends its
  unacknowledged messages after a reconnect. Its callbacks only put commands on the queue.

Because ``close`` is a command too, everything ``send`` handed over before it is seen by the pump
before it starts closing. Connection trouble is logged once per change, not once per retry.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import queue
import sys
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from noisewatch import __version__
from noisewatch.config import Config, ConfigError, MqttSection, SpoolSection, TlsSection
from noisewatch.daemon.events import LOUD
from noisewatch.daemon.messages import Event, HealthFigures, Level, Message, Scores, Started, Stats, Status, encode_json
from noisewatch.daemon.sinks.echo_watch import EchoWatch
from noisewatch.daemon.sinks.homeassistant import (
    OFFLINE,
    ONLINE,
    STATE_OFF,
    Listener,
    default_device_name,
)
from noisewatch.daemon.sinks.homeassistant_discovery import HomeAssistantDiscovery
from noisewatch.daemon.sinks.homeassistant_wait import DISCOVERY_SETTLE_S, HomeAssistantWait
from noisewatch.daemon.sinks.kept_wait import KeptWait
from noisewatch.daemon.sinks.label_states import LabelStates
from noisewatch.daemon.sinks.mqtt_client import (
    PACKET_TOO_LARGE,
    QOS_AT_LEAST_ONCE,
    ConnectionWatch,
    Subscription,
    backoff_s,
    echo_missing_causes,
    new_client,
    standing_subscriptions,
    subscription_refusal,
)
from noisewatch.daemon.sinks.pump_commands import (
    Ack,
    AudioStatus,
    Close,
    Command,
    Connected,
    Disconnected,
    DiskFreed,
    Echoed,
    EmptiedConfigs,
    HandedLevel,
    HandedOver,
    HomeAssistantOffline,
    HomeAssistantOnline,
    OldAnnouncement,
    Outgoing,
    Retune,
    Spooled,
    SubAck,
    ThresholdCommand,
    Unspooled,
    unknown_command,
)
from noisewatch.daemon.sinks.recent import RecentEvents
from noisewatch.daemon.sinks.spool import DEAD_LETTER, Spool
from noisewatch.daemon.sinks.threshold_entities import ThresholdEntities
from noisewatch.daemon.sinks.topics import (
    Topics,
    acl_advice,
    discovery_node,
    is_status,
    listener_prefix,
    listener_topics,
)
from noisewatch.daemon.statefile import FolderInUse, FolderLock, same_folder

log = logging.getLogger(__name__)

INFLIGHT_WINDOW = 20
"""spooled messages handed to paho and not yet acknowledged (paho's own in-flight default)"""
MAX_QUEUED = 1000
"""bound on paho's in-memory queue (the spool is the real queue)"""
MAX_AWAITED = 1000
"""QoS 1 messages outside the spool whose answer is awaited, to name one the broker refuses"""
MAX_INFLIGHT = 100
"""paho's unacknowledged QoS 1 messages: above the spool's window plus a full announcement (discovery,
states, thresholds), so that a (re)connect does not hold back state changes behind its own burst"""
LIVE_QUEUE_MAX = 200
"""level/stats/scores messages kept in memory while disconnected, oldest dropped (a label's state and the recent
events are sent as they are at the reconnect instead: ``_announce``)"""
MEMORY_SPOOL_MAX = 1000
"""messages kept in memory while the spool's disk refuses writes (full, read-only): 500 events, each with its
started notice; oldest dropped, and each event counted"""
PROBED_REFUSALS = frozenset({errno.ENOSPC, errno.EROFS, errno.ENOENT})
"""Refusals :meth:`Spool.disk_problem` sees without a write."""
CLOSE_FLUSH_S = 1.5
"""``close`` returns within about this long, whatever the broker does (the daemon exits within 2 s)"""
MIN_STOP_WAIT_S = 0.2
PUMP_TICK_S = 1.0
MOVE_RETRY_S = 5.0
"""How often a spool move the new folder refused is tried again: each try reads every unsent message (and, when
the disk had room, wrote them and took them back), under the lock ``send`` waits for."""
PREDECESSOR_WAIT_S = 5.0
"""At most this long a replacing sink waits for the replaced one's close (a flush of CLOSE_FLUSH_S, which begins
after the new set-up is built): beside it, one client id, each would take the other's session."""
CLOSING_TICK_S = 0.02
PRUNE_INTERVAL_S = 60.0
SESSION_EXPIRY_S = 86400
"""MQTT 5: how long the broker keeps our session after a disconnect"""
UNACKED_WARN_S = 60.0
"""Event messages in flight this long on a live connection without one acknowledgement are said (a broker that takes
publishes and never acknowledges them filled the in-flight window, and every later event waited, in silence)."""
SPOOL_BOUNDS = {"spool": {"max_mb", "max_age_h"}}
"""The ``mqtt`` settings a running sink takes from a reload (``hold_spool_bounds``) without a new connection"""
CONNECTION = {"host", "port", "protocol", "username", "password_file", "tls"}
"""What says which broker a sink reaches, and as whom (with its credentials and client id)."""
ECHO_UNHEARD = ("this listener's own online is not read back, so it cannot confirm that the broker delivers its "
                "messages")


class _Undeliverable(Exception):
    """An event message no broker would take as it is (too large, or a topic paho refuses): never retried."""


class LifetimeCounts:
    """Losses counted for the daemon's life: a sink and those that replace it at reloads share one (the replaced
    sink's pump goes on counting as it closes, beside the new one's: a copy taken when the new sink was built
    missed those)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.memory_dropped = 0
        """Events lost because the disk refused them for longer than MEMORY_SPOOL_MAX messages, or that the broker
        refused while held in memory (a started notice lost is not counted: its event still comes)."""
        self.network_restarts = 0
        """Restarts of paho's network thread: a thread that dies now and then was said only in an ERROR line, and
        the listener's stats looked healthy."""

    def add(self, memory_dropped: int = 0, network_restarts: int = 0) -> None:
        with self._lock:
            self.memory_dropped += memory_dropped
            self.network_restarts += network_restarts


class MqttSink:
    """Publishes every message under one topic prefix; events go through the spool."""

    def __init__(self, settings: MqttSection, topics: Topics, listener: Listener, spool: Spool,
                 client_id: str, password: str | None = None, thresholds: Mapping[str, float] | None = None,
                 open_events: Mapping[str, str] | None = None, recent: RecentEvents | None = None) -> None:
        self.settings = settings
        self.topics = topics
        self.listener = listener
        self.spool = spool
        self._credentials = _credentials(password, settings.tls)
        """What the client was given beside the settings: a reload that finds them changed in their files connects anew."""
        self._client_id = client_id
        self._thresholds = ThresholdEntities(settings, topics, listener, thresholds or {}, self._publish)
        """The thresholds in force and their ``number`` entities (the processing loop reads ``threshold_overrides``)."""
        # processing-loop thread (send), taken over by a sink that replaces this one at a reload
        self._open_events = dict(open_events or {})
        """id -> label of each event started and not yet closed"""
        self._recent = recent or RecentEvents(settings.state_path)
        self._commands: queue.SimpleQueue[Command] = queue.SimpleQueue()
        # pump thread only, from here on
        self._states = LabelStates(listener.labels)
        for event_id, label in self._open_events.items():  # still ON: announced so, not as OFF; a label this
            self._states.started(label, event_id)          # sink does not announce still hears its event's end
        self._audio_status: Outgoing | None = None
        """The latest audio state, published again on every (re)connect: the live queue may have dropped it."""
        self._ha_wait = HomeAssistantWait(settings.homeassistant.discovery)
        self._kept_wait = KeptWait(settings.state_path)
        self._periodic: dict[str, Outgoing] = {}
        """The latest level and stats report, by topic (``_send_periodic_again``)."""
        self._periodic_again_at: float | None = None
        self._waiting_said = 0
        """Messages the last ``stats`` report said were waiting (spooled or held in memory): ``report_wanted``."""
        self._live: deque[Outgoing] = deque(maxlen=LIVE_QUEUE_MAX)
        self._dropped_offs: set[str] = set()
        """State topics of labels a reload dropped whose last event ended while disconnected: OFF at the reconnect."""
        self._inflight: dict[int, tuple[int, str]] = {}  # paho mid -> (spool seq, event id)
        self._awaited: dict[int, str] = {}  # paho mid -> topic of a QoS 1 message outside the spool
        self._unspooled: deque[Unspooled] = deque()
        self._inflight_held: dict[int, Unspooled] = {}  # paho mid -> held event published from memory
        self._acked_at = time.monotonic()
        """When the broker last acknowledged an event message, or had none of them to acknowledge."""
        self._unacked_said = False
        self._echo = EchoWatch()
        """Whether the broker delivers what this listener publishes (``_watch_echo``)."""
        self._subscribing: dict[int, Subscription] = {}
        """paho mid -> the subscription awaiting its SUBACK (this connection's: cleared at each connect)."""
        self._refusals_said: set[str] = set()
        """Topics whose refused subscription was said: not again at every reconnect, until the broker grants one."""
        self.counts = LifetimeCounts()
        """``memory_dropped`` and ``network_restarts``, shared with the sinks that replace this one at reloads."""
        self._last_handed = 0  # highest spool seq handed to paho
        self._move_to: tuple[MqttSink, Spool] | None = None
        """After a reload that changed the spool's folder: the replaced sink and the new folder's spool. Until
        that sink has stopped both spool into its folder (one spool: one order); then everything there moves,
        in order, to the new folder, which nothing would read otherwise (``_move_spool``)."""
        self._move_error: OSError | None = None
        """Why the last move to the new folder failed (its disk full, say), until one completes: said as the
        spool's disk error, as that is the folder configured now."""
        self._move_again_at = 0.0
        self._handing_over = False
        """A reload's sink is being built to replace this one: its waiting move is that sink's now (``_hand_over``)."""
        self._locks: list[FolderLock] = []
        """The state and spool folders this sink uses, locked against a second listener (``from_config``)."""
        self._connected = False
        self._max_packet: int | None = None
        """The broker's packet size limit (MQTT 5) while connected: a larger message, re-sent on every reconnect,
        had the broker close each connection, and not one event more went out (the recent list outgrew 2,000)."""
        self._oversize_said: set[str] = set()
        self._closing: Close | None = None
        self._watch = ConnectionWatch(settings, client_id)  # paho's thread only
        self._stopping = threading.Event()
        """Set by ``close``: paho's jitter wait ends at once."""
        self._closed = threading.Event()
        """Set when ``close`` has disconnected: a sink replacing this one at a reload may connect."""
        self._successor: MqttSink | None = None
        """The sink that replaces this one at a reload (``from_config``): ``close`` hands it the events held in memory."""
        self._service_stopping: threading.Event | None = None
        """The service's stop (``from_config``). Closing once it is set, a sink that has no connection waits the least
        for paho's thread, and one replaced by a reload that the stop came during waits for no connection either (its
        successor, which takes its spool, waits at the stop's close): the waits in a row outlasted the stop's 2 s."""
        self._predecessor: MqttSink | None = None
        """The sink this one replaces (``from_config``), until it has closed: the first connect waits for that (side
        by side, the two clients, one client id, took the session from each other, and each return looked like an
        outage), and the pump writes and sends nothing of its own before what it handed over. The pump forgets it."""
        self._disk_lock = threading.RLock()  # _respool holds it while it handles commands, a hand-over among them
        self._disk_trouble = threading.Event()
        """Set while the pump holds events the spool's disk refused: ``send`` queues behind them, in order."""
        self._disk_refusal: OSError | None = None
        """The spool disk's last refusal of a write (``_disk_problem``)."""
        self._disk_freed = False
        """A health report found the disk would take writes again (``DiskFreed``; pump thread)."""
        self._disk_probe: str | None = None
        """What the spool's disk would say to a write, as of the last report (``_check_disk``): a disk that filled or
        turned read-only while no event came was said nowhere until an outage's events had nowhere to go."""
        self._pump = threading.Thread(target=self._run_pump, name="mqtt-pump", daemon=True)
        self._network: threading.Thread | None = None
        """paho's network thread (``loop_start``), watched by the pump (``_watch_network``)."""
        self._restarts_unconnected = 0
        """Restarts of paho's thread since the last accepted connection: the next waits their backoff."""
        self._next_network_restart = 0.0
        self.client = self._make_client(client_id, password)
        self._ha_discovery = HomeAssistantDiscovery(settings, topics, listener, self._ha_wait, self.client,
                                                    self._publish, self._subscribe, self._claim)
        """Discovery, and the clearing of what earlier announcements left (pump thread)."""

    @classmethod
    def from_config(cls, config: Config, labels: Sequence[str], model_ident: str,
                    thresholds: Mapping[str, float] | None = None,
                    running: "MqttSink | None" = None, stopping: threading.Event | None = None) -> "MqttSink":
        """Build and start the sink; raises ConfigError for unusable TLS files, password or spool. ``running``:
        the sink this one replaces at a reload. Its spool, when on the same folder (two Spool objects on one
        folder would hand out the same sequence numbers), its open events (Home Assistant's state stays ON
        through the reload: the pipeline's events go on) and its recent events are taken over. ``stopping``: set when
        the service is asked to stop."""
        section = config.mqtt
        listener = listener_of(config, labels, model_ident)
        topics = listener_topics(config)
        carried, waiting = (None, None) if running is None else running._hand_over()
        moving = carried is not None and not same_folder(carried.directory, section.spool.directory)
        folders = listener_folders(section)
        if carried is not None and moving:
            folders.append(("mqtt.spool.directory", carried.directory))  # spooled into until the move
        locks: list[FolderLock] = []
        try:
            locks = _folder_locks(running, folders)
            spool = (carried if carried is not None and not moving
                     else waiting if waiting is not None and same_folder(waiting.directory, section.spool.directory)
                     else Spool(section.spool.directory, section.spool.max_mb, section.spool.max_age_h))
            sink = cls(section, topics, listener, carried if carried is not None else spool,
                       section.client_id or f"noisewatch-{config.device_id}", config.mqtt_password(), thresholds,
                       None if running is None else running._open_events, None if running is None else running._recent)
        except BaseException as exc:
            for lock in locks:
                lock.release()
            if running is not None:
                running._handing_over = False  # refused: it serves on, and moves its spool as it would have
            if isinstance(exc, OSError):
                raise ConfigError(f"mqtt.spool.directory: {section.spool.directory}: {exc.strerror}") from None
            raise
        sink._locks = locks
        sink._service_stopping = stopping
        if running is not None and moving:
            sink._move_to = (running, spool)
        sink._predecessor = running
        if running is not None:
            running._successor = sink
            sink.counts = running.counts  # what the replaced sink still counts as it closes is counted too
            sink._ha_wait.take_over(running._ha_wait)  # events held for Home Assistant's return wait on
            if running._disk_trouble.is_set():  # its held events come first: this sink's queue behind them
                sink._disk_trouble.set()
            sink._disk_refusal = running._disk_refusal  # what stats say goes on across the reload, said once
            if not moving:
                sink._disk_probe = running._disk_probe
        sink.start()
        return sink

    def _hand_over(self) -> tuple[Spool, Spool | None]:
        """This sink's spool and the one its waiting move goes to, for the sink a reload builds to replace it, whose
        move that is from now on: this pump moves nothing more. A reload while a move waited (a full disk) had both
        pumps move, into two Spools on one folder, and the messages of the one nothing read stayed there."""
        with self._disk_lock:
            self._handing_over = True
            return self.spool, None if self._move_to is None else self._move_to[1]

    def serves(self, config: Config, labels: Sequence[str], model_ident: str) -> bool:
        """True when a sink built from this config would be this one, but for its thresholds (``retune``) and its
        spool's bounds (``hold_spool_bounds``): a reload then keeps the connection instead of replacing it. A new
        client said offline, then online: every entity went unavailable for a moment, and an open event turned
        "on" twice in Home Assistant."""
        return (self.settings.model_dump(exclude=SPOOL_BOUNDS) == config.mqtt.model_dump(exclude=SPOOL_BOUNDS)
                and self._credentials == _credentials(config.mqtt_password(), config.mqtt.tls)
                and self.listener == listener_of(config, labels, model_ident)
                and self.topics.prefix == listener_prefix(config))

    def retune(self, thresholds: Mapping[str, float]) -> None:
        """A reload's thresholds from the bundle and the config: the threshold entities show them at once."""
        self._commands.put(Retune(dict(thresholds)))

    def hold_spool_bounds(self, bounds: SpoolSection) -> None:
        """A reload's ``mqtt.spool`` bounds on the running spool (this sink's, or the one taken over from the
        replaced sink): in force at once (a max_mb lowered because the SD card fills up), not from the next restart."""
        self.spool.bound(bounds.max_mb, bounds.max_age_h)

    def threshold_overrides(self) -> dict[str, float]:
        """Thresholds set from Home Assistant (kept across restarts); they win over the config's."""
        return self._thresholds.overrides()

    # --- the Sink interface (processing loop) -------------------------------------------------------

    def start(self) -> None:
        """Begin connecting (in the background: a missing broker is normal) and pumping."""
        before, probe = self._disk_probe, self.spool.disk_problem()
        said = probe is not None and probe == before  # by the sink this one replaces: not again at every reload
        if self.spool.read_only():  # at start-up, not at the first event: a quiet lamp post may have none for hours
            if not said:
                log.error("MQTT spool: %s is on a read-only file system; events are kept in memory (up to %d) until "
                          "it takes writes again, and what it holds is sent but cannot be deleted (sent again at the "
                          "next start)", self.spool.directory, MEMORY_SPOOL_MAX)
            self._disk_trouble.set()
            self._disk_probe = probe
        elif not self.spool.directory.is_dir():  # a full disk could not make it (Spool): said now, not at an event
            if not said:
                log.error("MQTT spool: %s cannot be made (%s); events are kept in memory (up to %d) until it can",
                          self.spool.directory, probe or "no space left on its disk?", MEMORY_SPOOL_MAX)
            self._disk_probe = probe
        else:
            self._check_disk()
        self._recent.keep(self.settings.state_path)  # what a reload hands over, in a state folder it moved
        if self._predecessor is None:  # a reload's sink took the running one's wait over
            self._resume_wait()
        self._pump.start()
        self.client.loop_start()
        self._network = getattr(self.client, "_thread", None)  # paho has no public handle on it
        log.info("MQTT: publishing to %s:%d under %s (spool %s, %d waiting)", self.settings.host,
                 self.settings.port, self.topics.prefix, self.spool.directory, self.spool.depth)

    def send(self, message: Message) -> None:
        """Hand one message over without blocking on the network."""
        topics = self.topics
        if isinstance(message, Started):
            self._open_events[message.id] = message.label
            self._spool_event(topics.started, message.encode(), Spooled(message.label, message.id, opened=True))
        elif isinstance(message, Event):
            self._open_events.pop(message.id, None)
            try:  # before the recent list: an event JSON cannot carry there makes every later list fail to encode
                payload = message.encode()
            except ValueError:
                self._commands.put(Spooled(message.label, message.id, opened=False))  # the sound ended all the same
                raise
            recent = self._recent.add(message.to_json())
            self._spool_event(topics.events, payload, Spooled(message.label, message.id, False, recent))
        elif isinstance(message, Level):
            self._commands.put(Outgoing(topics.level, message.encode(), retain=True))
        elif isinstance(message, Stats):
            self._commands.put(Outgoing(topics.stats, message.encode(), retain=True))
        elif isinstance(message, Scores):
            self._commands.put(Outgoing(topics.scores, message.encode()))
        elif isinstance(message, Status):
            self._commands.put(AudioStatus(Outgoing(topics.audio, message.encode(), QOS_AT_LEAST_ONCE, retain=True)))
        else:
            raise TypeError(f"MQTT sink: no topic for a {type(message).__name__} message")

    def health(self) -> HealthFigures:
        """The spool's and the connection's figures; the spool's disk is asked (no write) at each report."""
        self._check_disk()
        spool, held = self.spool, self._held()
        depth = spool.depth
        self._waiting_said = depth + held
        return {"spool_depth": depth, "spool_bytes": spool.size_bytes, "spool_dropped": spool.dropped,
                "spool_quarantined": spool.quarantined, "spool_dead_letters": spool.dead_letters,
                "spool_memory_queued": held, "spool_memory_dropped": self.counts.memory_dropped,
                "mqtt_network_restarts": self.counts.network_restarts,
                "spool_disk_error": self._disk_problem()}

    def report_wanted(self) -> bool:
        """The spool sent empty since a report said it held messages: one who had just mended the broker settings
        read Home Assistant's "Spooled messages: 6" as still stuck for a whole ``stats.interval_s``."""
        return self._waiting_said > 0 and self.spool.depth == 0 and not self._held()

    def _disk_problem(self) -> str | None:
        """Why the spool's disk refuses writes, or None: full, read-only or gone as asked at this report (a disk freed
        says so at once, not at the next event); another refusal, which asking cannot see (no permission, an I/O
        error), as the last write said it, until a write is taken; the new folder's refusal while a move to it waits."""
        if self._disk_probe is None and self._move_error is not None:
            return self._move_error.strerror or str(self._move_error)
        refusal = self._disk_refusal
        if self._disk_probe is not None or not self._disk_trouble.is_set() or refusal is None:
            return self._disk_probe
        return None if refusal.errno in PROBED_REFUSALS else refusal.strerror or str(refusal)

    def _held(self) -> int:
        """Events held in memory, not yet acknowledged (waiting, or handed to paho)."""
        return len(self._unspooled) + len(self._inflight_held)

    def _spool_event(self, topic: str, payload: bytes, spooled: Spooled) -> None:
        """To disk before anything else learns of it; to the pump's memory when the disk refuses. Under the
        disk lock, so that an event queued behind held ones is never overtaken by one written directly."""
        with self._disk_lock:
            if not self._disk_trouble.is_set():
                try:
                    self.spool.append(topic, payload)
                    self._commands.put(spooled)
                    return
                except OSError as exc:
                    self._disk_refusal = exc
                    log.error("MQTT spool: cannot write to %s (%s); events are kept in memory (up to %d) until it "
                              "takes them again", self.spool.directory, exc.strerror or exc, MEMORY_SPOOL_MAX)
                    self._disk_trouble.set()
            self._commands.put(Unspooled(topic, payload, spooled))

    def close(self) -> None:
        """Flush what the broker acknowledges within CLOSE_FLUSH_S, publish ``offline`` (not for a reload's successor
        that says ``online`` there at once), stop."""
        if self._stopping.is_set():
            return
        now = time.monotonic()
        deadline = now + CLOSE_FLUSH_S
        self._commands.put(Close(deadline, connect_by=now + CLOSE_FLUSH_S / 2))
        self._pump.join(_remaining(deadline))
        self._stopping.set()
        refused = False
        predecessor = self._predecessor
        if predecessor is not None and not predecessor._stopping.is_set():  # a refused reload closes this one unused:
            refused = True
            predecessor._handing_over = False  # the spool move the running sink waits for is its own again,
            predecessor._successor = None  # and it keeps no closed sink (its client, its queues) alive
        if self._connected and not self._successor_says_online_here():  # the pump has stopped: its flag is final
            info = self.client.publish(self.topics.status, OFFLINE, qos=QOS_AT_LEAST_ONCE, retain=True)
            try:
                info.wait_for_publish(_remaining(deadline))
            except (RuntimeError, ValueError):
                pass  # connection lost meanwhile: the Last Will says offline instead
        self._hand_over_held()
        unsent, unconfirmed = len(self._unspooled), len(self._inflight_held)  # the pump has stopped
        if unsent or unconfirmed:
            log.error("MQTT: %d message(s) held in memory (events and started notices the spool's disk refused) were not "
                      "delivered and are lost; %d more were sent but not acknowledged, and may be lost", unsent, unconfirmed)
        if self._connected or not self._at_a_stop():
            self.client.disconnect()
        # else no DISCONNECT: a broker that read this client's CONNECT (its CONNACK late on a slow link) holds its Will,
        # which a clean end discards, and a reload's predecessor skipped its own offline for this client's online: the
        # socket's close (below, or at exit) has the broker publish the Will (offline), or online stayed retained for
        # good. A CONNECT not yet sent (a slow TCP or TLS handshake) leaves no Will: that online stays
        # loop_stop joins without a timeout and a connect attempt may hang for connect_timeout:
        # stop from a helper thread and wait a bounded time (paho's thread is a daemon thread).
        stopper = threading.Thread(target=self.client.loop_stop, name="mqtt-stop", daemon=True)
        stopper.start()
        # paho's reconnect wait sleeps in steps of up to 1 s. At a stop the process exits next (paho's is a daemon
        # thread): with no connection to end cleanly (a socket still open closes at exit), or a successor's close to
        # come, it is waited for the least
        quick = self._at_a_stop() and (not self._connected or self._replaced_at_a_stop())
        stopper.join(MIN_STOP_WAIT_S if quick else max(_remaining(deadline), MIN_STOP_WAIT_S))
        if not stopper.is_alive():
            # paho 2.x closes its wake-up socket pair only when the client is garbage-collected, and the
            # callbacks bound to this sink keep it alive: close them here, or every reload leaks two sockets.
            self.client._reset_sockets()
        waiting = self.spool.depth and self._ha_wait.holding()
        held = " (held for Home Assistant, which is away: the next start sends them)" if waiting else ""
        if not refused:
            self._keep_wait()
        self.spool.delete_delivered()
        if (kept := self.spool.kept_delivered) and self._successor is None:
            held += (f"; {kept} message(s) no longer waiting (sent, dropped or moved) could not be deleted from it (a "
                     "read-only disk): the next start sends them again")
        log.info("MQTT: closed; %d message(s) left in the spool%s", self.spool.depth, held)
        for lock in self._locks:
            lock.release()
        self._closed.set()

    def _keep_wait(self) -> None:
        """At a stop that leaves events held for Home Assistant in the spool, when that wait ends, for the next start
        (:class:`KeptWait`); else none. Not at a reload: its successor took the wait over."""
        left = self._ha_wait.hold_left_s() if self.spool.depth and self._successor is None else 0.0
        self._kept_wait.keep(left)

    def _resume_wait(self) -> None:
        """A start goes on with the wait for Home Assistant its last stop left, for what is left of it: the events
        it kept went to no one when the listener came back while Home Assistant still restarted."""
        if (left := self._kept_wait.take()) > 0:
            self._ha_wait.resume(left)

    def _successor_says_online_here(self) -> bool:
        """Whether a reload's successor reaches the same broker as the same client, and says ``online`` on this sink's
        status topic as it connects: an ``offline`` before it turned every entity unavailable for a moment at a reload
        that changed what is announced (found by an admin's bad day: ``levels.interval_s`` changed; alerts on an
        unavailable listener fired). A clean disconnect sends no Last Will; a successor that then cannot connect
        (refused, as a changed password would be) is no case of this: its credentials differ."""
        successor = self._successor
        return (successor is not None and not successor._stopping.is_set()
                and successor.topics.status == self.topics.status and successor._client_id == self._client_id
                and successor._credentials == self._credentials
                and successor.settings.model_dump(include=CONNECTION) == self.settings.model_dump(include=CONNECTION))

    def _hand_over_held(self) -> None:
        """At a reload, the events held in memory go on with the sink replacing this one (a reload while the
        spool's disk was full lost them), and the latest level report of its topic (a reload that changed the
        discovery left the level sensors unavailable until the next report), under the successor's topic and device id
        (a renamed listener's new level sensors were unavailable as long); not when it is closed too (a refused
        reload), nor while the pump runs."""
        successor = self._successor
        if successor is None or successor._stopping.is_set() or self._pump.is_alive():
            return
        held = (*self._inflight_held.values(), *self._unspooled)  # in the order they were handed over and held
        if held:
            successor._commands.put(HandedOver(held))
            log.info("MQTT: %d message(s) held in memory go on with the new connection", len(held))
        self._inflight_held.clear()
        self._unspooled.clear()
        if emptied := self._ha_discovery.emptied():
            successor._commands.put(EmptiedConfigs(emptied))
        level = self._periodic.get(self.topics.level)
        if level is not None:  # its latest, sent again once Home Assistant read the new discovery
            successor._commands.put(HandedLevel(_readdressed(level, successor.topics.level,
                                                             successor.listener.device_id)))

    # --- paho client and its callbacks (paho's thread) ---------------------------------------------

    def _make_client(self, client_id: str, password: str | None) -> mqtt.Client:
        s = self.settings
        v5 = s.protocol == "5"
        # clean_session False: keep the session, so QoS 1 survives a reconnect (MQTT 5: clean_start below)
        client = new_client(s, client_id, password, clean_session=None if v5 else False)
        client.will_set(self.topics.status, OFFLINE, qos=QOS_AT_LEAST_ONCE, retain=True)
        client.reconnect_delay_set(min_delay=s.reconnect_min_s, max_delay=s.reconnect_max_s)  # type: ignore[arg-type]
        client.max_queued_messages_set(MAX_QUEUED)
        client.max_inflight_messages_set(MAX_INFLIGHT)
        client.on_pre_connect = self._on_pre_connect
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        self._connect_async(client)
        return client

    def _connect_async(self, client: mqtt.Client) -> None:
        """Connect (or connect afresh) from paho's thread, with our session kept."""
        s = self.settings
        properties = None
        if s.protocol == "5":
            properties = Properties(PacketTypes.CONNECT)
            properties.SessionExpiryInterval = SESSION_EXPIRY_S
        client.connect_async(s.host, s.port, keepalive=s.keepalive_s, clean_start=False, properties=properties)

    def _on_pre_connect(self, client: mqtt.Client, userdata: Any) -> None:
        """Wait for the sink this one replaces to close, then the watch's delay (both cut short by ``close``)."""
        predecessor = self._predecessor
        if predecessor is not None:
            deadline = time.monotonic() + PREDECESSOR_WAIT_S
            while not (predecessor._closed.wait(0.05) or self._stopping.is_set() or time.monotonic() > deadline):
                pass
        self._stopping.wait(self._watch.delay_s())
        if self._stopping.is_set():  # closed meanwhile (a refused reload's sink): paho would connect all the same,
            raise OSError("closed")  # and take the session of the sink still running; it skips this attempt

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: mqtt.ConnectFlags,
                    reason_code: ReasonCode, properties: Properties | None) -> None:
        if reason_code.is_failure:
            self._watch.refused(reason_code)
        else:
            self._commands.put(Connected(self._watch.accepted(), getattr(properties, "MaximumPacketSize", None)))

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        """The TCP/TLS connection failed; paho calls this inside its ``except OSError`` block."""
        if not self._stopping.is_set():  # else the attempt ``_on_pre_connect`` called off
            self._watch.failed(sys.exc_info()[1] or "unknown error")

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: mqtt.DisconnectFlags,
                       reason_code: ReasonCode, properties: Properties | None) -> None:
        self._watch.lost(reason_code, stopping=self._stopping.is_set())
        self._commands.put(Disconnected())

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason_code: ReasonCode,
                    properties: Properties | None) -> None:
        """PUBACK. Called with paho's message lock held: only hand it to the pump."""
        self._commands.put(Ack(mid, reason_code))

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, reason_code_list: list[ReasonCode],
                      properties: Properties | None) -> None:
        """SUBACK: handed to the pump, which knows what ``mid`` subscribed to (``_subscribe``)."""
        self._commands.put(SubAck(mid, tuple(reason_code_list)))

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        if message.topic == self.topics.status:  # a retained one is an earlier run's (or its will): not an echo
            if not message.retain and message.payload == ONLINE.encode():
                self._commands.put(Echoed())
        elif message.topic in self.topics.ha_status:
            if message.payload == ONLINE.encode():
                self._commands.put(HomeAssistantOnline(bool(message.retain)))
            elif message.payload == OFFLINE.encode():
                self._commands.put(HomeAssistantOffline(message.topic, bool(message.retain)))
        elif is_status(message.topic) or discovery_node(message.topic) is not None:  # subscribed to: its old ones
            self._commands.put(OldAnnouncement(message.topic, bytes(message.payload), bool(message.retain)))
        elif message.topic.startswith(self.topics.prefix + "/"):
            self._commands.put(ThresholdCommand(message.topic, bytes(message.payload), bool(message.retain)))

    # --- the pump (its own thread) -------------------------------------------------------------------

    def _run_pump(self) -> None:
        next_prune = time.monotonic() + PRUNE_INTERVAL_S
        while not self._done_closing():
            try:
                self._pump_once()
                if time.monotonic() >= next_prune:
                    self.spool.prune()
                    next_prune = time.monotonic() + PRUNE_INTERVAL_S
            except Exception:  # the pump must outlive any one bad message or disk error, or nothing is sent again
                log.exception("MQTT: unexpected error in the pump; carrying on")
                self._stopping.wait(PUMP_TICK_S)

    def _check_disk(self) -> None:
        """Ask the spool's disk whether it would take a write (a syscall, no write: an SD card's wear); say a change
        the events have not said already (a refused write says it at ERROR, the pump that it takes them again).
        Under the disk lock: the pump's word that the disk took the held events is not said twice."""
        with self._disk_lock:
            before, self._disk_probe = self._disk_probe, self.spool.disk_problem()
            if self._disk_trouble.is_set():
                refusal = self._disk_refusal
                if self._disk_probe is None and (refusal is None or refusal.errno in PROBED_REFUSALS):
                    self._commands.put(DiskFreed())
            elif self._disk_probe != before and self._disk_probe is not None:
                self._say_disk_problem()
            elif self._disk_probe != before:
                log.info("MQTT spool: %s takes writes again", self.spool.directory)

    def _say_disk_problem(self) -> None:
        log.warning("MQTT spool: %s cannot take events (%s); the next ones will be kept in memory (up to %d) until "
                    "it can", self.spool.directory, self._disk_probe, MEMORY_SPOOL_MAX)

    def _pump_once(self) -> None:
        predecessor = self._predecessor
        handed_over = predecessor is None or predecessor._closed.is_set()  # before the drain: its hand-over is in it
        try:
            self._handle(self._commands.get(timeout=self._wait_s()))
            while True:  # take everything waiting before publishing, so acks free in-flight slots first
                self._handle(self._commands.get_nowait())
        except queue.Empty:
            pass
        self._watch_network()
        if (self._move_to is not None and not self._move_to[0]._pump.is_alive()
                and time.monotonic() >= self._move_again_at):
            self._move_spool(self._move_to[1])
        if handed_over:
            self._predecessor = None  # forgotten: each reload's sink would keep the ones before it alive
        if (self._unspooled or self._disk_freed) and handed_over:  # the replaced sink's held events are older: none
            self._disk_freed = False  # of ours before them
            self._respool()
        if self._connected:
            self._ha_discovery.end_overdue_check()
            self._watch_acknowledgements()
            self._watch_echo()
        if self._connected:  # while not, the events cannot go, and the reconnect waits for Home Assistant afresh
            self._ha_wait.run_out()
        if self._connected and handed_over and not self._ha_wait.remaining_s():  # not sooner at a stop either: the
            self._ha_discovery.send_state_clears()  # record keeps them for the next run (DISCOVERY_SETTLE_S)
        if self._connected and handed_over and not self._leaving_events():
            if not self._settling():
                self._feed_spool()
                self._feed_held()
            elif self._closing is not None:  # a stop while events wait for Home Assistant's return: the spooled ones
                self._feed_held(after_spool=False)  # stay for the next start; those in memory cannot, so they go
        if self._connected:
            self._send_periodic_again()
            self._drain_live()

    def _send_periodic_again(self) -> None:
        """The latest level and stats report again, once Home Assistant has read the discovery of a (re)connect:
        it takes a changed config (a new model, version, device name or interval) of a sensor that expires as
        starting expired, and the report sent with the announcement came before it. Model, Started and the other
        stats sensors were unavailable until the next report (``stats.interval_s``), the levels likewise."""
        due = self._periodic_again_at
        if due is None or time.monotonic() < due:
            return
        self._periodic_again_at = None
        self._live.extend(message for message in self._periodic.values() if message not in self._live)
        self._send_current_states()

    def _send_current_states(self) -> None:
        """Each label's state and the audio state again, for Home Assistant, whose sensors of them expire as the
        stats sensors do (``_go_live``), after what waits in the live queue (older); published, not queued: with
        many labels they pushed the stats report and a lost input's state out of its bound. None while
        disconnected: the reconnect's announcement sends them."""
        if not (self._connected and self.settings.homeassistant.discovery):
            return
        self._drain_live()
        states = self._states.snapshot()
        current = [self._audio_status] if self._audio_status is not None else []
        current += [Outgoing(self.topics.state(label), states[label].encode(), QOS_AT_LEAST_ONCE, True)
                    for label in self.listener.labels if label in states]
        for message in current:
            self._publish(message.topic, message.payload, message.qos, message.retain)

    def _watch_network(self) -> None:
        """paho ends its network thread on any exception raised in a callback or in its own code, and says so only
        in a bare traceback on stderr: then no acknowledgement was read and nothing reconnected, and events stayed in
        the spool for good while the daemon ran on. Said as an error, and started again on a fresh connection
        (whose ``on_connect`` announces anew). What was in flight stays in flight: paho keeps the messages it had
        no acknowledgement for and sends them again, under their own ids, as after any reconnect (publishing them
        anew as well delivered each one a third time)."""
        network, s = self._network, self.settings
        if network is None or network.is_alive() or self._closing is not None or self._stopping.is_set():
            return
        now = time.monotonic()
        if now < self._next_network_restart:  # one that dies at every attempt: a traceback a second, for months
            return
        self._next_network_restart = now + backoff_s(self._restarts_unconnected, s.reconnect_min_s, s.reconnect_max_s)
        self._restarts_unconnected += 1
        self.counts.add(network_restarts=1)
        log.error("MQTT: paho's network thread ended unexpectedly (the traceback above says why); reconnecting to "
                  "%s:%d, and the %d event message(s) in flight are sent again", self.settings.host,
                  self.settings.port, len(self._inflight) + len(self._inflight_held))
        self._connected = False
        self.client._reset_sockets(sockpair_only=True)  # loop_start makes a new pair: the old one would leak
        self._connect_async(self.client)
        self.client.loop_start()
        self._network = getattr(self.client, "_thread", None)
        if self._stopping.is_set():  # close() ran meanwhile (its join gave up on a pump slowed by a failing disk)
            self.client.loop_stop()

    def _watch_acknowledgements(self) -> None:
        """Say once when the event messages handed to a connected broker go unacknowledged for UNACKED_WARN_S."""
        waiting = len(self._inflight) + len(self._inflight_held)
        if not waiting:
            self._acked_at = time.monotonic()
        elif not self._unacked_said and time.monotonic() - self._acked_at > UNACKED_WARN_S:
            self._unacked_said = True
            log.warning("MQTT: %s:%d has acknowledged none of the %d event message(s) sent to it for %.0f s; later "
                        "events wait until it does (%d in the spool)", self.settings.host, self.settings.port, waiting,
                        UNACKED_WARN_S, self.spool.depth)

    def _watch_echo(self) -> None:
        """Say once, as a warning, when the own ``online`` the broker took has not come back ECHO_WAIT_S after: it
        cannot confirm delivery. An ACL that lets it publish but not read its own topics (tight, and its events still
        delivered) gives the same silence as one that drops what it publishes, and was an ERROR that events may be
        reaching no one. MQTT 5 refuses a denied publish in its acknowledgement: took, the online was not denied."""
        if not self._echo.overdue():
            return
        log.warning("MQTT: %s:%d took this listener's online on %s but did not deliver it back within %.0f s, so it "
                    "cannot confirm that the broker delivers its messages: %s; %s", self.settings.host,
                    self.settings.port, self.topics.status, self._echo.wait_s, echo_missing_causes(self.settings, self.topics),
                    acl_advice(self.topics))

    def _echoed(self) -> None:
        if self._echo.came_back():
            log.info("MQTT: this listener's online came back from the broker: it may publish and read its topics")

    def _move_spool(self, new: Spool) -> None:
        """Move every message of the old folder's spool (the replaced sink's unsent ones, then this sink's) to
        the new folder's, oldest first, and spool there from now on. Under the disk lock, so ``send`` appends to
        one or the other, never to the old one after the move. What was handed to paho goes again from the new
        folder (at least once). A disk that refuses: logged once, the old folder serves on, tried again in MOVE_RETRY_S.
        Not once a reload's sink replaces this one: the move is that sink's."""
        old = self.spool
        try:
            with self._disk_lock:
                if self._handing_over:
                    return
                new.take_all(old)
                self.spool, self._last_handed, self._move_to, self._move_error = new, 0, None, None
                self._inflight.clear()
        except OSError as exc:
            if self._move_error is None:
                log.error("MQTT spool: cannot move the unsent messages of %s to %s (%s); %s serves until it can",
                          old.directory, new.directory, exc.strerror or exc, old.directory)
            self._move_error = exc
            self._move_again_at = time.monotonic() + MOVE_RETRY_S
            return
        log.warning("MQTT spool: now in %s (mqtt.spool.directory changed); the unsent messages of %s moved there",
                    new.directory, old.directory)

    def _wait_s(self) -> float:
        """How long the pump may wait for a command: until the next thing it must do unasked."""
        if self._closing:
            return CLOSING_TICK_S
        due = [self._ha_wait.remaining_s()]
        if self._periodic_again_at is not None:
            due.append(_remaining(self._periodic_again_at))
        if (check_deadline := self._ha_discovery.check_deadline()) is not None:
            due.append(_remaining(check_deadline))
        if (echo_s := self._echo.remaining_s()) is not None:
            due.append(echo_s)
        return min([PUMP_TICK_S, *(seconds for seconds in due if seconds > 0)])

    def _settling(self) -> bool:
        """True while events wait for Home Assistant (:class:`HomeAssistantWait`). A close does not wait for it to
        read a discovery, but events held for its return stay in the spool for the next start."""
        return self._ha_wait.remaining_s() > 0 if self._closing is None else self._ha_wait.holding()

    def _claim(self, mid: int) -> int:
        """``mid``, just given to a new message, answers for it alone. paho hands out ids in turn (1-65535, then
        again) whatever is still awaited, and an id left waiting by a message never answered (an answer lost with a
        connection) took, after the wrap, the answer of the event given that id: the event stayed in flight for good
        (the window is 20 events) and was sent again at the next start. A state clear left waiting so is sent again:
        dropped, its entity left the record with its retained state still on the broker."""
        self._ha_discovery.mid_reused(mid)
        self._awaited.pop(mid, None)
        return mid

    def _handle(self, command: Command) -> None:
        """One command from the processing loop, a reload or paho's thread, on the pump's thread."""
        if isinstance(command, Outgoing):
            self._go_live(command)
        elif isinstance(command, AudioStatus):
            self._live.append(command.outgoing)
            self._audio_status = command.outgoing
        elif isinstance(command, Unspooled):
            self._unspooled.append(command)
            self._drop_oldest_held()
            self._handle(command.spooled)
        elif isinstance(command, HandedOver):
            self._take_over_held(command.held)
        elif isinstance(command, EmptiedConfigs):
            self._ha_discovery.take_over_emptied(command.topics, self._connected)
        elif isinstance(command, DiskFreed):
            self._disk_freed = self._disk_trouble.is_set()  # not when an event's write has ended the trouble meanwhile
        elif isinstance(command, HandedLevel):
            if self.topics.level not in self._periodic:  # one of its own (the part period a reload reported) is newer
                self._go_live(command.outgoing)
        elif isinstance(command, Spooled):
            self._spooled(command)
        elif isinstance(command, ThresholdCommand):
            self._thresholds.set_from_command(command.topic, command.payload, command.retained)
        elif isinstance(command, OldAnnouncement):
            self._ha_discovery.old_announcement(command.topic, command.payload, command.retained)
        elif isinstance(command, Ack):
            self._acknowledged(command)
        elif isinstance(command, SubAck):
            self._subscription_answered(command)
        elif isinstance(command, Retune):
            self._thresholds.retune(command.thresholds, self._connected)
        elif isinstance(command, Connected):
            self._connection_made(command)
        elif isinstance(command, Disconnected):
            self._connected = False
            self._echo.link_lost()
            self._ha_wait.link_lost()
        elif isinstance(command, HomeAssistantOnline):
            if command.retained:  # up, as it was at the connect, when discovery went out: none again, but a wait for
                self._ha_wait.found_online()  # its return that a stop left (``_resume_wait``) is over
            else:
                self._home_assistant_online()
        elif isinstance(command, HomeAssistantOffline):
            if command.retained:
                self._ha_wait.found_offline(command.topic)
            else:
                self._ha_wait.went_offline()
        elif isinstance(command, Echoed):
            self._echoed()
        elif isinstance(command, Close):
            self._closing = command
        else:
            unknown_command(command)

    def _go_live(self, outgoing: Outgoing) -> None:
        """Queue a message that is not spooled; the latest level and stats report are kept to send again. With each
        stats report, the label and audio states go again: retained, they outlived a listener whose broker went down
        with it (a power cut), and Home Assistant showed "Clear" for good; its sensors now expire without them."""
        self._live.append(outgoing)
        if outgoing.topic in (self.topics.level, self.topics.stats):
            self._periodic[outgoing.topic] = outgoing
        if outgoing.topic == self.topics.stats:
            self._send_current_states()

    def _spooled(self, spooled: Spooled) -> None:
        """An event written to the spool (the spool feeder sends it): its label's state, and the recent list."""
        self._state_change(spooled)
        if spooled.recent is not None:  # the list holds the ones before: an outage queued one per event, to 20 KB each
            self._recent.keep(self.settings.state_path)
            self._drop_queued({self.topics.recent_events})
            self._live.append(Outgoing(self.topics.recent_events, spooled.recent, QOS_AT_LEAST_ONCE, True))

    def _connection_made(self, connected: Connected) -> None:
        """A (re)connect: what the last connection awaited starts afresh, then the announcement."""
        self._connected, self._max_packet = True, connected.max_packet
        self._acked_at = time.monotonic()  # what was in flight is sent again now: a fresh wait
        self._restarts_unconnected = 0
        self._ha_discovery.new_connection()
        self._subscribing.clear()  # SUBACKs lost with the last connection: never coming
        self._announce()
        self._ha_wait.connected()
        if connected.after_outage:
            self._ha_wait.broker_returned()

    def _home_assistant_online(self) -> None:
        """Home Assistant (re)started (its birth message): discovery again, as its MQTT integration asks of devices,
        and the configs this listener emptied while it was down emptied again."""
        if not self.settings.homeassistant.discovery:
            self._ha_discovery.empty_again()  # only the entities it removed, when Home Assistant was down then
            return
        log.info("MQTT: Home Assistant came online; re-sending discovery")
        self._ha_discovery.publish()
        self._ha_discovery.empty_again()
        self._ha_wait.settle()  # it subscribes anew as it reads discovery

    def _state_change(self, spooled: Spooled) -> None:
        """The label's retained ON/OFF, when the event changes it: sent now while connected; else the next connect's
        announcement says it as it is then (queued, each change of an outage went out after that, and Home Assistant
        saw every siren start and end anew); a label a reload dropped, which the snapshot names no more, is told OFF
        there too (``_dropped_offs``: queued, 200 level reports of a long outage pushed it out for good)."""
        change = (self._states.started if spooled.opened else self._states.ended)(spooled.label, spooled.event_id)
        if change is None:
            return
        topic = self.topics.state(spooled.label)
        if change == STATE_OFF and spooled.label not in self.listener.labels:
            # the last event of a label a reload dropped: ended, then forgotten; under discovery its entity is
            # gone, and a retained OFF would outlive it on a topic nothing reads: cleared with its other states
            self._states.forget(spooled.label)
            if self.settings.homeassistant.discovery:
                self._ha_discovery.clear_state_later(topic)
                return
        if self._connected:
            self._live.append(Outgoing(topic, change.encode(), QOS_AT_LEAST_ONCE, True))
        elif spooled.label not in self.listener.labels:
            self._dropped_offs.add(topic)

    def _done_closing(self) -> bool:
        closing = self._closing
        if closing is None:
            return False
        now = time.monotonic()
        left = self._leaving_events() or ((self._ha_wait.holding() or self.spool.depth == 0) and not self._held())
        idle = not self._inflight and not self._live and left
        return (idle or now >= closing.deadline
                or (not self._connected and (now >= closing.connect_by or self._replaced_at_a_stop())))

    def _replaced_at_a_stop(self) -> bool:
        """Closing for a reload that the service's stop came during: the successor takes this sink's spool, and its
        own close at the stop gives the broker its time (waiting here too, a stop took 2.0-2.8 s)."""
        successor = self._successor
        return successor is not None and not successor._stopping.is_set() and self._at_a_stop()

    def _at_a_stop(self) -> bool:
        """The service has been asked to stop: the process exits once its sinks have closed."""
        return self._service_stopping is not None and self._service_stopping.is_set()

    def _leaving_events(self) -> bool:
        """Closing at a reload that moves the listener to another topic prefix: the events it has not sent are its
        successor's to send, under that prefix once Home Assistant has read its discovery there (flushed by this
        close, those that waited for Home Assistant went out under the prefix the listener was leaving). Not at a
        reload that is refused after its sink was built: that sink is closed (``_stopping``) before this one closes."""
        successor = self._successor
        return (self._closing is not None and successor is not None and not successor._stopping.is_set()
                and successor.topics.prefix != self.topics.prefix)

    def _announce(self) -> None:
        """On every (re)connect: the audio state, every label's retained state and threshold, discovery (clearing
        what an earlier run announced and this one does not), then online: the states first, or Home Assistant
        shows a label ON from before a crash as available and ON until its OFF arrives (a false "on")."""
        # the audio state (a mute or lost input said during a long outage is not lost with it) and the latest stats
        # report now, not from the live queue after the online (where a start's first ones still wait): the last
        # run's retained ones were shown as current, and Audio input (a lost input) or Spool disk (a refusing disk)
        # went on for a moment, with that run's uptime
        latest = [m for m in (self._audio_status, self._periodic.get(self.topics.stats)) if m is not None]
        recent = self._recent.latest()  # a broker restarted without its retained messages left dashboards none
        if recent is not None:
            latest.append(Outgoing(self.topics.recent_events, recent, QOS_AT_LEAST_ONCE, True))
        states = {**dict.fromkeys(self._dropped_offs, STATE_OFF),
                  **{self.topics.state(label): state for label, state in self._states.snapshot().items()}}
        self._dropped_offs.clear()
        self._drop_queued({*states, *(m.topic for m in latest)})  # older: what goes now supersedes them
        for message in latest:
            self._publish(message.topic, message.payload, message.qos, message.retain)
        for topic, state in states.items():
            self._publish(topic, state.encode(), QOS_AT_LEAST_ONCE, True)
        self._thresholds.publish_all()
        for subscription in standing_subscriptions(self.topics, self.settings.homeassistant.discovery):  # check-config's probe too
            self._subscribe(subscription.topics, subscription.unheard)
        self._ha_discovery.watch_emptied()
        self._ha_discovery.publish()
        self._subscribe([self.topics.status], ECHO_UNHEARD)  # before the online: it comes back live
        self._echo.sent(self._publish(self.topics.status, ONLINE.encode(), QOS_AT_LEAST_ONCE, True))
        if self.settings.homeassistant.discovery:
            self._periodic_again_at = time.monotonic() + DISCOVERY_SETTLE_S

    def _subscribe(self, topics: Sequence[str], unheard: str) -> None:
        """Subscribe to ``topics`` (not empty), kept by message id until the SUBACK: a broker whose ACL refuses one
        answers so there, and the listener went on as if subscribed (thresholds from Home Assistant never applied).
        ``unheard``: what does not work while it is refused."""
        _, mid = self.client.subscribe([(topic, QOS_AT_LEAST_ONCE) for topic in topics])
        if mid is not None:  # None: no connection (the next connect subscribes anew)
            self._subscribing[mid] = Subscription(tuple(topics), unheard)

    def _subscription_answered(self, answer: SubAck) -> None:
        """Say each topic the broker refused, with what does not work because of it; once, until it is granted."""
        subscription = self._subscribing.pop(answer.mid, None)
        if subscription is None:
            return
        for topic, reason in zip(subscription.topics, answer.reasons, strict=False):
            if not reason.is_failure:
                self._refusals_said.discard(topic)
            else:
                if topic == self.topics.status:  # its online cannot come back: the refusal says so, not an ACL guess
                    self._echo.cannot_read()
                if topic not in self._refusals_said:
                    self._refusals_said.add(topic)
                    log.warning("MQTT: the broker %s", subscription_refusal(topic, reason, subscription.unheard))

    def _take_over_held(self, held: tuple[Unspooled, ...]) -> None:
        """The replaced sink's held events, before this one's (they are older); new events queue behind them until
        they are on disk (``_respool``: at once when this sink's spool takes them)."""
        with self._disk_lock:
            self._unspooled.extendleft(reversed(held))
            self._disk_trouble.set()
        self._drop_oldest_held()

    def _drop_oldest_held(self) -> None:
        """Beyond MEMORY_SPOOL_MAX held events the oldest go, each logged (the log's limiter keeps a flood short)
        and counted: stats alone said so, and 476 events went without a line."""
        while len(self._unspooled) > MEMORY_SPOOL_MAX:
            self._lose_held(self._unspooled.popleft(), "the spool's disk has refused events for longer than the %d "
                            "held in memory" % MEMORY_SPOOL_MAX)

    def _lose_held(self, held: Unspooled, why: str) -> None:
        """A message held in memory that will never be delivered: said, and counted when it is an event (a sound's
        started notice is not: its event still comes)."""
        self.counts.add(memory_dropped=int(not held.spooled.opened))
        kind = "the started notice of event" if held.spooled.opened else "event"
        log.error("MQTT: %s %s is lost: %s", kind, held.spooled.event_id, why)

    def _respool(self) -> None:
        """Move events held in memory to the spool, oldest first, as soon as its disk takes them again; the
        trouble ends only once every held event, those still on the queue included, is on disk."""
        written = self._write_held()
        if written is None:
            return
        with self._disk_lock:
            try:
                while True:
                    self._handle(self._commands.get_nowait())
            except queue.Empty:
                pass
            more = self._write_held()
            if more is None:
                return
            self._disk_trouble.clear()
            self._disk_probe = None  # said here, not again by _check_disk at the next report
        spooled = "; the events held in memory are spooled" if written + more else ""
        log.info("MQTT spool: %s takes writes again%s", self.spool.directory, spooled)  # none lost

    def _write_held(self) -> int | None:
        """Spool the held events in order: how many, or None when the disk still refuses."""
        written = 0
        while self._unspooled:
            held = self._unspooled[0]
            try:
                self.spool.append(held.topic, held.payload)
            except OSError as exc:
                self._disk_refusal = exc
                return None
            self._unspooled.popleft()
            written += 1
        return written

    def _acknowledged(self, ack: Ack) -> None:
        if self._ha_discovery.acknowledged(ack.mid):
            return
        topic = self._awaited.pop(ack.mid, None)
        refused = ack.reason if ack.reason is not None and ack.reason.is_failure else None
        self._echo.acknowledged(ack.mid, refused is not None)
        if topic is not None:
            if refused is not None:  # an ACL that lets events through but not discovery
                hint = ("it is larger than the broker's message_size_limit" if refused.value == PACKET_TOO_LARGE
                        else f"its ACL: {acl_advice(self.topics)}")
                log.error("MQTT: the broker refused %s (%s): Home Assistant and other subscribers do not get it; %s",
                          topic, refused, hint)
            return
        if ack.mid in self._inflight or ack.mid in self._inflight_held:
            self._acked_at, self._unacked_said = time.monotonic(), False
        held = self._inflight_held.pop(ack.mid, None)
        if held is not None:
            if ack.reason is not None and ack.reason.is_failure:
                self._lose_held(held, f"the broker refused it (held in memory, so not kept): {ack.reason}")
            return
        handed = self._inflight.pop(ack.mid, None)
        if handed is None:
            return
        seq, event_id = handed
        if ack.reason is not None and ack.reason.is_failure:  # MQTT 5 only: 3.1.1 has no reason codes
            self.spool.set_aside(seq, DEAD_LETTER, f"the broker refused event {event_id}: {ack.reason}")
        else:
            self.spool.remove(seq)

    def _feed_spool(self) -> None:
        """Hand the next spooled messages to paho, in order, keeping the in-flight window full."""
        for entry in self.spool.after(self._last_handed, self._free_slots()):
            try:
                mid = self._hand_event(self.topics.for_spooled(entry.topic), entry.payload)
            except _Undeliverable as exc:
                self.spool.set_aside(entry.seq, DEAD_LETTER, str(exc))
                continue
            if mid is None:
                return
            self._inflight[mid] = (entry.seq, _event_id(entry.payload))
            self._last_handed = entry.seq

    def _feed_held(self, after_spool: bool = True) -> None:
        """Publish events the spool's disk refused from memory, once everything spooled before them is handed
        over (they are newer; ``after_spool`` False: now, at a stop that leaves those in the spool): a full or
        missing spool disk must not keep events from a broker that is there."""
        if after_spool and self.spool.has_after(self._last_handed):
            return
        while self._unspooled and self._free_slots() > 0:
            held = self._unspooled[0]
            try:  # one a reload's predecessor held: under its prefix
                mid = self._hand_event(self.topics.for_spooled(held.topic), held.payload)
            except _Undeliverable as exc:
                self._lose_held(self._unspooled.popleft(), str(exc))
                continue
            if mid is None:
                return
            self._unspooled.popleft()
            self._inflight_held[mid] = held

    def _hand_event(self, topic: str, payload: bytes) -> int | None:
        """One event message to paho at QoS 1, from the spool or from memory: its message id, or None when paho's
        queue is full (tried again at the next wake-up). Raises _Undeliverable for one no broker would take."""
        if self._too_large(topic, payload):
            raise _Undeliverable(f"larger than the broker takes ({self._max_packet} bytes)")
        try:
            info = self.client.publish(topic, payload, qos=QOS_AT_LEAST_ONCE)
        except ValueError as exc:  # a topic paho will not publish to
            raise _Undeliverable(str(exc)) from exc
        if info.rc == MQTTErrorCode.MQTT_ERR_QUEUE_SIZE:
            return None
        return self._claim(info.mid)

    def _publish(self, topic: str, payload: bytes, qos: int, retain: bool) -> int | None:
        """A message outside the spool (states, discovery, levels, ...); at QoS 1 its topic is kept until the
        broker answers, so that a refusal (MQTT 5) names it, and its message id returned. One larger than the
        broker takes is not sent (said once per topic); the recent-events list is cut to its newest events that
        fit."""
        if self._too_large(topic, payload) and topic == self.topics.recent_events and self._max_packet is not None:
            payload = _newest_that_fit(topic, payload, self._max_packet)
            if topic not in self._oversize_said:
                self._oversize_said.add(topic)
                log.warning("MQTT: %s holds only the newest events that fit the broker's maximum packet size (%d "
                            "bytes)", topic, self._max_packet)
        if self._too_large(topic, payload):
            if topic not in self._oversize_said:
                self._oversize_said.add(topic)
                log.error("MQTT: not sending %s: %d bytes, more than the broker takes (%d bytes, its maximum packet "
                          "size)", topic, len(payload), self._max_packet)
            return None
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        if not qos or info.rc == MQTTErrorCode.MQTT_ERR_QUEUE_SIZE:  # one paho did not queue is never answered
            return None
        if len(self._awaited) >= MAX_AWAITED:  # answers lost with a connection are not waited for for ever
            self._awaited.clear()
        self._awaited[self._claim(info.mid)] = topic
        return info.mid

    def _too_large(self, topic: str, payload: bytes) -> bool:
        """Whether the PUBLISH packet exceeds the broker's limit (MQTT 5 says it; 3.1.1 cannot, see docs/mqtt.md)."""
        return self._max_packet is not None and _publish_size(topic, payload) > self._max_packet

    def _free_slots(self) -> int:
        return INFLIGHT_WINDOW - len(self._inflight) - len(self._inflight_held)

    def _drop_queued(self, topics: set[str]) -> None:
        """Forget the messages waiting for ``topics``: a newer one of each is sent instead."""
        if any(waiting.topic in topics for waiting in self._live):
            kept = [waiting for waiting in self._live if waiting.topic not in topics]
            self._live.clear()
            self._live.extend(kept)

    def _drain_live(self) -> None:
        while self._live and self._connected:
            message = self._live.popleft()
            self._publish(message.topic, message.payload, message.qos, message.retain)


def _folder_locks(running: MqttSink | None, folders: Sequence[tuple[str, Path]]) -> list[FolderLock]:
    """A lock on each folder, shared with ``running`` where it holds one (a reload), else taken; a ConfigError
    naming the key of a folder another process holds: two listeners on one folder rewrite each other's files
    (one removed the other's Home Assistant entities, and two spools hand out the same sequence numbers)."""
    held = running._locks if running is not None else []
    locks: list[FolderLock] = []
    try:
        for key, folder in folders:
            if any(same_folder(lock.folder, folder) for lock in locks):
                continue
            shared = next((lock for lock in held if same_folder(lock.folder, folder)), None)
            try:
                locks.append(shared.share() if shared is not None else FolderLock.take(folder))
            except FolderInUse:
                raise ConfigError(f"{key}: {folder} is in use by another noisewatch listener (a second one on this "
                                  "machine?); give each its own mqtt.spool.directory and mqtt.state_directory") from None
            except OSError as exc:
                raise ConfigError(f"{key}: {folder}: {exc.strerror or exc}") from None
    except ConfigError:
        for lock in locks:
            lock.release()
        raise
    return locks


def listener_folders(section: MqttSection) -> list[tuple[str, Path]]:
    """The folders a listener locks (``_folder_locks``), each with its key: its state folder, then its spool's."""
    return [("mqtt.state_directory", section.state_path), ("mqtt.spool.directory", section.spool.directory)]


def folders_in_use(section: MqttSection) -> list[tuple[str, Path]]:
    """(key, folder) of each of ``section``'s folders another process holds, which ``_folder_locks`` would refuse.
    Only looked at: the listener holding them keeps them."""
    folders: list[tuple[str, Path]] = []
    for key, folder in listener_folders(section):  # one folder under both keys: said once, as ``_folder_locks`` takes it
        if not any(same_folder(folder, seen) for _, seen in folders):
            folders.append((key, folder))
    return [(key, folder) for key, folder in folders if FolderLock.held_elsewhere(folder)]


def _credentials(password: str | None, tls: TlsSection) -> tuple[str | None, tuple[bytes | None, ...]]:
    """The password and the TLS files' digests: a password file corrected after the broker refused it, a CA file
    replaced or a client certificate renewed at the same path changes no setting, and a reload kept the connection
    that still failed with what it had read at start-up. Digests: the sink lives for months, its key need not."""
    files = (tls.ca_file, tls.cert_file, tls.key_file) if tls.enabled else ()
    return password, tuple(_digest(path) for path in files)


def _digest(path: Path | None) -> bytes | None:
    try:
        return None if path is None else hashlib.sha256(path.read_bytes()).digest()
    except OSError:
        return None


def listener_of(config: Config, labels: Sequence[str], model_ident: str) -> Listener:
    """What discovery announces for this config and model: the labels that can become events, and more."""
    event_labels = [label for label in labels if label not in config.detector.ignore]
    if config.loudness.enabled and LOUD not in event_labels:
        event_labels.append(LOUD)
    homeassistant = config.mqtt.homeassistant
    return Listener(
        device_id=config.device_id,
        name=homeassistant.device_name or default_device_name(config.device_id),
        labels=tuple(event_labels), model=model_ident, version=__version__,
        calibrated=config.levels.calibration_db is not None,
        configuration_url=homeassistant.configuration_url,
        level_interval_s=config.levels.interval_s,
        stats_interval_s=config.stats.interval_s,
    )


def _event_id(payload: bytes) -> str:
    """The id of a spooled event, for log lines about it."""
    try:
        return str(json.loads(payload).get("id", "?"))
    except (ValueError, AttributeError):
        return "?"


def _publish_size(topic: str, payload: bytes) -> int:
    """Bytes of an MQTT 5 PUBLISH of ``payload`` at QoS 1 without properties: the type byte, the remaining length
    (a varint of 1-4 bytes), then the topic (two bytes of length), the packet id and the property length."""
    remaining = 2 + len(topic.encode()) + 2 + 1 + len(payload)
    length_bytes = 1
    while remaining >= 128**length_bytes:  # seven bits a byte
        length_bytes += 1
    return 1 + length_bytes + remaining


def _newest_that_fit(topic: str, payload: bytes, limit: int) -> bytes:
    """A recent-events list cut to its newest events whose PUBLISH fits in ``limit`` bytes (maybe none)."""
    events = json.loads(payload)["events"]
    while events and _publish_size(topic, encode_json({"events": events})) > limit:
        events = events[1:]
    return encode_json({"events": events})


def _readdressed(report: Outgoing, topic: str, device_id: str) -> Outgoing:
    """A level report as the listener renamed at a reload (``device_id``, ``mqtt.topic_prefix``) sends it:
    on its topic, naming it (the dashboard files a report under its ``device``)."""
    data = json.loads(report.payload)
    data["device"] = device_id
    return report._replace(topic=topic, payload=encode_json(data))


def _remaining(deadline: float) -> float:
    return max(0.0, deadline - time.monotonic())

# ruff: noqa: F811
"""Events held for a restarting Home Assistant stay in the spool at a stop, for the next start: the ways a stop, a
reload or the next start during such a wait lost them, found by a review. Real mosquitto, real sinks, no mocks."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from conftest import remount
from mqtt_broker import Broker, Collector, wait_until
from test_mqtt_sink import LABELS, MODEL, PREFIX, OpenSink, event, ids_on, make_config, open_sink, started  # noqa: F401

from noisewatch.daemon.messages import Event
from noisewatch.daemon.sinks.kept_wait import FILE_NAME as HA_WAIT_FILE
from noisewatch.daemon.sinks.mqtt import MqttSink

pytestmark = pytest.mark.broker
TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent


def held_at_a_stop(sink: MqttSink, collector: Collector, caplog: pytest.LogCaptureFixture, n: int = 0) -> Event:
    """Home Assistant goes offline (restarting), a sound is heard, the listener stops: the sound's event."""
    assert collector.wait_for(lambda c: c.on(f"{PREFIX}/status")[-1:] == [b"online"])
    said = caplog.text.count("Home Assistant went offline")
    collector.client.publish("homeassistant/status", "offline")
    assert wait_until(lambda: caplog.text.count("Home Assistant went offline") > said, 10)
    during = event(n)
    sink.send(started(during))
    sink.send(during)
    sink.close()
    return during


def test_events_held_for_a_restarting_home_assistant_stay_in_the_spool_at_a_stop(
        open_sink: OpenSink, tmp_path: Path, broker: Broker, collector: Collector,
        caplog: pytest.LogCaptureFixture) -> None:
    """Found by a helper's first hour with a real Home Assistant (tests/test_homeassistant_first_hour.py): a listener
    stopped while it held events for a restarting Home Assistant flushed them to the broker, where no Home Assistant
    was subscribed, and logged "0 message(s) left in the spool": the sounds heard during the restart never showed.
    They stay in the spool now, and the next start sends them."""
    caplog.set_level(logging.INFO, logger="noisewatch")
    sink = open_sink(make_config(tmp_path, broker.port))
    during = held_at_a_stop(sink, collector, caplog)
    assert sink.spool.depth == 2 and ids_on(collector) == []
    assert "2 message(s) left in the spool (held for Home Assistant, which is away: the next start sends them)" in caplog.text
    assert (tmp_path / "state" / "home_assistant_wait.json").exists()  # the wait, for the next start
    open_sink(make_config(tmp_path, broker.port))  # the next start: it goes on waiting
    assert wait_until(lambda: "Home Assistant was away when this listener stopped" in caplog.text, 10)
    time.sleep(1.5)
    assert ids_on(collector) == []
    collector.client.publish("homeassistant/status", "online")  # back
    assert collector.wait_for(lambda c: ids_on(c) == [during.id])


def test_events_the_disk_refused_are_not_lost_at_a_stop_while_home_assistant_restarts(
        open_sink: OpenSink, tmp_path: Path, broker: Broker, collector: Collector,
        caplog: pytest.LogCaptureFixture) -> None:
    """The spool's disk refuses writes (unplugged), so an event is held in memory; Home Assistant restarts (its
    offline), and the listener stops. Once the close left held
    events in the spool, it ended at once (``_done_closing``: holding) and the event, which cannot stay in a spool that refuses it, is logged as
    lost: "1 message(s) held in memory ... were not delivered and are lost"."""
    caplog.set_level(logging.INFO, logger="noisewatch")
    settings = {"spool": {"directory": str(tmp_path / "disk" / "spool")}, "state_directory": str(tmp_path / "state")}
    sink = open_sink(make_config(tmp_path, broker.port, **settings))
    assert collector.wait_for(lambda c: c.on(f"{PREFIX}/status") == [b"online"])
    shutil.rmtree(tmp_path / "disk")  # unplugged: the spool refuses every event
    collector.client.publish("homeassistant/status", "offline")  # Home Assistant restarting
    assert wait_until(lambda: "Home Assistant went offline" in caplog.text, 10)
    during = event(0)
    sink.send(during)
    assert wait_until(lambda: sink.health()["spool_memory_queued"] == 1, 10), sink.health()
    sink.close()
    collector.wait_for(lambda c: during.id in ids_on(c), timeout=5)  # broker to collector: not in a fixed 0.5 s
    lost = "were not delivered and are lost" in caplog.text
    assert during.id in ids_on(collector) and not lost, (ids_on(collector), [
        r.getMessage() for r in caplog.records if r.name.startswith("noisewatch") and r.levelno >= logging.INFO][-4:])


def test_events_held_for_a_restarting_home_assistant_are_not_sent_by_a_reload_s_new_sink_while_it_is_away(
        tmp_path: Path, broker: Broker, collector: Collector, caplog: pytest.LogCaptureFixture) -> None:
    """Home Assistant restarts (its offline; not retained, as Home Assistant sends it), an event is held for its
    return, and a reload that builds a new sink (a label added: what is announced changes) comes meanwhile. The old
    sink leaves the event in the spool (f169a6e), but the new sink knows nothing of the wait: it sends the event
    2 s after its discovery, with Home Assistant still away, and it never shows there."""
    caplog.set_level(logging.INFO, logger="noisewatch")
    thresholds = {label: 0.6 for label in LABELS}
    config = make_config(tmp_path, broker.port)
    running = MqttSink.from_config(config, LABELS, MODEL, thresholds)
    replacing = None
    try:
        assert collector.wait_for(lambda c: c.on(f"{PREFIX}/status") == [b"online"])
        collector.client.publish("homeassistant/status", "offline")
        assert wait_until(lambda: "Home Assistant went offline" in caplog.text, 10)
        during = event(0)
        running.send(started(during))
        running.send(during)
        time.sleep(0.5)
        labels = LABELS + ["car_horn"]
        replacing = MqttSink.from_config(config, labels, MODEL, {label: 0.6 for label in labels}, running=running)
        running.close()
        time.sleep(6)  # Home Assistant still restarting (up to 5 minutes are waited for it)
        assert ids_on(collector) == [], "sent by the reload's new sink while Home Assistant was still away"
        collector.client.publish("homeassistant/status", "online")
        assert collector.wait_for(lambda c: ids_on(c) == [during.id])
    finally:
        running.close()
        if replacing is not None:
            replacing.close()


def test_events_held_at_a_stop_are_not_sent_by_a_start_right_after_while_home_assistant_is_still_away(
        open_sink: OpenSink, tmp_path: Path, broker: Broker, collector: Collector,
        caplog: pytest.LogCaptureFixture) -> None:
    """``systemctl restart noisewatch`` (or a reboot of the Pi) while Home Assistant restarts: the stop leaves the held
    event in the spool, but the next start knew nothing of Home Assistant being away (its offline is not retained, as
    Home Assistant sends it), and sent it before Home Assistant was back: it never showed there. The stop keeps the
    wait in the state folder, and the next start goes on with it."""
    caplog.set_level(logging.INFO, logger="noisewatch")
    sink = open_sink(make_config(tmp_path, broker.port))
    during = held_at_a_stop(sink, collector, caplog)  # Home Assistant restarting (an update: minutes)
    assert sink.spool.depth == 2 and ids_on(collector) == []
    open_sink(make_config(tmp_path, broker.port))  # the restart: started again at once
    time.sleep(6)  # Home Assistant still restarting
    assert ids_on(collector) == [], "the next start sent the held event while Home Assistant was still away"
    collector.client.publish("homeassistant/status", "online")
    assert collector.wait_for(lambda c: ids_on(c) == [during.id])


def test_events_held_for_a_retained_offline_are_not_sent_by_the_next_start_before_it_reads_that_offline(
        open_sink: OpenSink, tmp_path: Path, broker: Broker, collector: Collector,
        caplog: pytest.LogCaptureFixture) -> None:
    """Home Assistant is down and has left a retained ``offline`` (one set to retain its will): a run holds its
    events for it and, stopped, leaves them in the spool "for the next start" (f169a6e). The next start must hold
    them too (the same retained offline is there), but it feeds its spool as it connects, before the retained
    offline comes back on its subscription, whenever its discovery is unchanged (no settle): sent to no Home
    Assistant."""
    caplog.set_level(logging.INFO, logger="noisewatch")
    collector.client.publish("homeassistant/status", "offline", qos=1, retain=True).wait_for_publish(5)
    held = []
    for run in range(4):
        sink = open_sink(make_config(tmp_path, broker.port))
        assert wait_until(lambda n=run + 1: caplog.text.count("holds a retained offline") == n, 10)
        held.append(event(run))
        sink.send(started(held[-1]))
        sink.send(held[-1])
        time.sleep(1)
        sink.close()
        assert ids_on(collector) == [], f"run {run + 1} sent events held for a Home Assistant still down"


def test_a_start_after_a_kill_does_not_hold_events_for_a_home_assistant_that_came_back_long_before(
        open_sink: OpenSink, tmp_path: Path, broker: Broker, collector: Collector,
        caplog: pytest.LogCaptureFixture) -> None:
    """docs/mqtt.md: "a ``kill -9`` keeps no wait: that start sends them at once". A stop during Home Assistant's
    restart keeps the wait (home_assistant_wait.json); the next start resumes it, Home Assistant says online and the
    held event goes. The file is not removed when that wait ends, so when this run is then killed (a power cut, the
    OOM killer) the start after it waits again for an online Home Assistant already said: its events are held for
    what is left of the first stop's 5 minutes."""
    caplog.set_level(logging.INFO, logger="noisewatch")
    state = tmp_path / "state"
    config = make_config(tmp_path, broker.port, state_directory=str(state))
    sink = open_sink(config)
    first = held_at_a_stop(sink, collector, caplog)
    assert (state / HA_WAIT_FILE).exists()

    script = textwrap.dedent(f"""
        import logging, sys, time
        from pathlib import Path
        sys.path.insert(0, {str(TESTS)!r})
        logging.basicConfig(level=logging.INFO, stream=sys.stderr)
        from test_mqtt_sink import LABELS, MODEL, make_config
        from noisewatch.daemon.sinks.mqtt import MqttSink
        config = make_config(Path({str(tmp_path)!r}), {broker.port}, state_directory={str(state)!r})
        MqttSink.from_config(config, LABELS, MODEL, {{label: 0.6 for label in LABELS}})
        print("up", flush=True)
        time.sleep(600)
    """)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    run = subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True)
    try:
        assert run.stdout is not None and run.stdout.readline().strip() == "up"
        assert collector.wait_for(lambda c: c.on(f"{PREFIX}/status")[-1:] == [b"online"], 10)
        time.sleep(1)
        collector.client.publish("homeassistant/status", "online")  # Home Assistant is back: the held event goes
        assert collector.wait_for(lambda c: first.id in ids_on(c), 15)
    finally:
        os.kill(run.pid, signal.SIGKILL)  # a power cut, minutes before the first stop's 5 minutes are over
        _, err = run.communicate(timeout=10)
    resumed = "Home Assistant was away when this listener stopped" in err

    later = event(1)
    sink = open_sink(config)  # Home Assistant has been online all along since
    assert wait_until(lambda: sink._connected, 10)
    sink.send(started(later))
    sink.send(later)
    arrived = collector.wait_for(lambda c: later.id in ids_on(c), 10)
    assert arrived, (f"held for a Home Assistant online for a while (run 2 resumed the wait: {resumed}; file left: "
                     f"{(state / HA_WAIT_FILE).exists()}):",
                     [r.getMessage() for r in caplog.records if "Home Assistant" in r.getMessage()][-2:])


def test_delivered_messages_a_read_only_disk_kept_are_deleted_after_a_reload_moved_the_spool_off_it(
        tmp_path: Path, small_disk: Path, broker: Broker, collector: Collector, caplog: pytest.LogCaptureFixture) -> None:
    """docs/mqtt.md: a spooled message acknowledged while the disk is read-only "is deleted once the disk takes writes
    again (within a minute, or at the stop); one still there at a stop is sent again at the next start, and the stop's
    log line says how many". The SD card turns read-only, so the admin moves the spool off it (a reload with a new
    mqtt.spool.directory). The delivered messages kept on the old disk are remembered by the old folder's Spool only,
    which nothing prunes or closes once the move is done: the disk takes writes again, the listener stops, and they
    stay there for good, said nowhere (the stop's line counts the new folder's), to be sent again whenever the spool
    goes back to that folder."""
    caplog.set_level(logging.INFO, logger="noisewatch")
    thresholds = {label: 0.6 for label in LABELS}
    state = str(tmp_path / "state")
    old_spool = small_disk / "spool"
    config = make_config(tmp_path, broker.port, state_directory=state, spool={"directory": str(old_spool)})
    running = MqttSink.from_config(config, LABELS, MODEL, thresholds)
    replacing = None
    try:
        assert collector.wait_for(lambda c: c.on(f"{PREFIX}/status") == [b"online"])
        collector.client.publish("homeassistant/status", "offline")  # held in the spool meanwhile
        assert wait_until(lambda: "Home Assistant went offline" in caplog.text, 10)
        held = event(0)
        running.send(started(held))
        running.send(held)
        assert wait_until(lambda: running.spool.depth == 2, 10)
        remount(small_disk, "ro")  # the SD card fails
        collector.client.publish("homeassistant/status", "online")
        assert collector.wait_for(lambda c: held.id in ids_on(c), 15)
        assert wait_until(lambda: running.spool.kept_delivered == 2, 10), running.spool.kept_delivered
        moved = make_config(tmp_path, broker.port, state_directory=state, spool={"directory": str(tmp_path / "new")})
        replacing = MqttSink.from_config(moved, LABELS, MODEL, thresholds, running=running)
        running.close()
        assert wait_until(lambda: replacing.spool.directory == tmp_path / "new", 10)
        remount(small_disk, "rw")  # the disk takes writes again
        time.sleep(1)
        replacing.close()
    finally:
        running.close()
        if replacing is not None:
            replacing.close()
    left = sorted(p.name for p in old_spool.glob("*.msg"))
    closed = [r.getMessage() for r in caplog.records if r.getMessage().startswith("MQTT: closed")]
    assert left == [], left  # the new folder's spool took them over, and deleted them at the stop
    assert "could not be deleted" not in closed[-1], closed


def test_a_start_whose_wait_a_stop_left_ends_it_on_home_assistant_s_retained_online(
        open_sink: OpenSink, tmp_path: Path, broker: Broker, collector: Collector,
        caplog: pytest.LogCaptureFixture) -> None:
    """A Home Assistant set to retain its birth and will (docs/homeassistant.md) came back while the listener was down:
    its birth, retained, says so to the next start, which sends the events its stop kept at once, not after the rest
    of the 5 minutes it would wait for an ``online`` already said."""
    caplog.set_level(logging.INFO, logger="noisewatch")
    sink = open_sink(make_config(tmp_path, broker.port))
    assert collector.wait_for(lambda c: c.on(f"{PREFIX}/status")[-1:] == [b"online"])
    collector.client.publish("homeassistant/status", "offline", qos=1, retain=True).wait_for_publish(5)  # its will
    assert wait_until(lambda: "Home Assistant went offline" in caplog.text, 10)
    during = event(0)
    sink.send(started(during))
    sink.send(during)
    sink.close()
    assert sink.spool.depth == 2 and ids_on(collector) == []
    # its birth, at QoS 0 as Home Assistant sends it (at QoS 1 the listener's session would have queued it)
    collector.client.publish("homeassistant/status", "online", qos=0, retain=True).wait_for_publish(5)
    time.sleep(0.5)  # stored by the broker before the start subscribes
    open_sink(make_config(tmp_path, broker.port))
    assert collector.wait_for(lambda c: ids_on(c) == [during.id], timeout=5)
    assert "Home Assistant is online (its retained status)" in caplog.text


def test_with_discovery_off_a_first_start_sends_events_without_waiting_for_home_assistant(tmp_path: Path) -> None:
    """docs/mqtt.md: "A Node-RED flow or a noise map needs no such wait: set `mqtt.homeassistant.discovery: false`".
    Found by a docs audit: at a first start (a fresh state folder, or a new prefix or device id) with discovery off,
    the record of the listener's retained topics changed, and that held events and started notices 2 s "for Home
    Assistant": a label's retained ON reached a noise map before the `started` it belongs to."""
    broker = Broker().start()
    try:
        collector = Collector(broker.port, topic="noisewatch/nomap/#")
        config = tmp_path / "c.yaml"
        config.write_text(textwrap.dedent(f"""\
            device_id: nomap
            mqtt:
              enabled: true
              port: {broker.port}
              spool: {{directory: {tmp_path / "spool"}}}
              homeassistant: {{discovery: false}}
            """))
        done = subprocess.run([sys.executable, "-m", "noisewatch.cli", "run", "--config", str(config), "--input",
                               str(ROOT / "samples" / "scene.flac"), "--speed", "8"],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        assert collector.wait_for(lambda c: bool(c.on("noisewatch/nomap/events")), 10)
        collector.close()
    finally:
        broker.cleanup()
    arrivals = list(zip(collector.messages, collector.arrived))
    on = min(at for (topic, payload, _), at in arrivals if (topic, payload) == ("noisewatch/nomap/state/siren", b"ON"))
    started = min(at for (topic, payload, _), at in arrivals
                  if topic == "noisewatch/nomap/events/started" and b'"siren"' in payload)
    assert started - on < 0.5, f"the siren's started came {started - on:.2f} s after its state ON"

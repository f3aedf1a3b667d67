"""Dashboard cores without a browser: topic parsing, the live store, tables, analysis, launcher.

The subscriber test uses a real mosquitto; the analysis tests use the shipped TFLite bundle and
real audio.
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import logging
import time
import tracemalloc
import uuid
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import paho.mqtt.client as mqtt
import pytest
import soundfile
from daemon_run import run_daemon
from mqtt_broker import HOST, Broker
from paho.mqtt.enums import CallbackAPIVersion

from noisewatch.bundle import default_model_path, load_bundle
from noisewatch.config import EX_CONFIG, Config, load_config
from noisewatch.daemon.messages import AudioState, Event, Level, Score, Scores, Started, Stats, Status
from noisewatch.daemon.messages import decode as decode_message
from noisewatch.daemon.sinks.recent import RecentEvents
from noisewatch.dashboard import analysis, launch, modelview, views
from noisewatch.dashboard.store import LiveStore, Received, decode, parse_topic, root_of, topic_filter
from noisewatch.dashboard.subscriber import LiveSubscriber
from noisewatch.train.metrics import summary

DAEMON_CONFIG = """device_id: kitchen
levels:
  interval_s: 2
scores:
  enabled: true
  interval_s: 0
stats:
  interval_s: 1
mqtt:
  enabled: true
  host: {host}
  port: {port}
  spool:
    directory: {spool}
"""
"""every kind of message, often: levels every 2 s, scores every window, stats every second"""
SIREN_CLIP = "UrbanSound8K/audio/fold1/106905-8-0-0.flac"
DOG_CLIP = "UrbanSound8K/audio/fold1/101415-3-0-2.flac"


def closed_event(label: str, start: str, event_id: str | None = None, device: str = "kitchen") -> Event:
    return Event(id=event_id or str(uuid.uuid4()), label=label, confidence=0.9, mean_confidence=0.8, start=start,
                 end=start.replace(":00.000Z", ":03.000Z"), offset_s=1.0, duration_s=3.0, peak_dbfs=-12.0,
                 mean_dbfs=-20.0, model="urban11@1", device=device)


def started(event_id: str, label: str, start: str = "2026-01-01T12:00:00.000Z") -> Started:
    return Started(id=event_id, label=label, confidence=0.8, start=start, offset_s=1.0, model="urban11@1",
                   device="kitchen")


def level(start: str, end: str, leq: float) -> Level:
    return Level(start=start, end=end, offset_s=0.0, period_s=60.0, leq_dbfs=leq, lmax_dbfs=leq + 10,
                 lmin_dbfs=leq - 10, leq_dbfs_a=leq - 2, lmax_dbfs_a=leq + 8, lmin_dbfs_a=leq - 12, device="kitchen")


def top_scores(label: str, score: float) -> Scores:
    return Scores(time="2026-01-01T12:00:04.000Z", offset_s=4.0, top=(Score(label, score),), device="kitchen")


def stats(uptime_s: float) -> Stats:
    """Health of a listener without an MQTT spool (its spool figures are None)."""
    return Stats(uptime_s=uptime_s, started="2026-12-06T11:00:00.000Z", audio_s=uptime_s, windows=9, gated_windows=2,
                 events=1, input_overflows=0, dropped_frames=0, nonfinite_samples=0, source="USB", model="urban11@1", runtime="litert",
                 version="0.1.0", device="kitchen")


STATS_ITEMS = [("listening for", "5 s"), ("windows classified", "9"), ("input overflows", "0"),
               ("audio frames dropped", "0"), ("model", "urban11@1"), ("version", "0.1.0")]
"""what stats_items shows of ``stats(5.0)``: the fields of STATS_SHOWN that are not None"""


def listening_store() -> LiveStore:
    """A store whose subscriber holds its subscription (what arrives is current)."""
    store = LiveStore("noisewatch/kitchen")
    store.connected = True
    return store


# --- topics -------------------------------------------------------------------------------------

@pytest.mark.parametrize("topic, expected", [
    ("noisewatch/kitchen/events", ("kitchen", "event", None)),
    ("noisewatch/kitchen/events/started", ("kitchen", "started", None)),
    ("noisewatch/kitchen/status", ("kitchen", "status", None)),
    ("noisewatch/garden/level", ("garden", "level", None)),
    ("noisewatch/garden/stats", ("garden", "stats", None)),
    ("noisewatch/garden/scores", ("garden", "scores", None)),
    ("noisewatch/garden/state/dog_bark", ("garden", "state", "dog_bark")),
    ("noisewatch/garden/events/recent", ("garden", "recent", None)),
    ("noisewatch/garden/audio", ("garden", "audio", None)),
    ("noisewatch/garden/state/a/b", None),
    ("noisewatch/garden", None),
    ("homeassistant/binary_sensor/x/config", None),
    ("noisewatch/garden/unknown", None),
])
def test_parse_topic_inverts_the_daemons_topic_names(topic: str, expected: tuple | None) -> None:
    assert parse_topic(topic, "noisewatch") == expected


def test_subscription_covers_the_siblings_of_the_configured_prefix() -> None:
    assert root_of("noisewatch/kitchen") == "noisewatch"
    assert topic_filter("noisewatch/kitchen") == "noisewatch/+/#"
    assert root_of("home/noise/kitchen") == "home/noise"
    assert root_of("kitchen") == "" and parse_topic("kitchen/status", "") == ("kitchen", "status", None)


def test_a_one_level_prefix_watches_that_listener_alone() -> None:
    """``topic_prefix: noise`` subscribed to every topic on the broker, and Home Assistant's own
    ``homeassistant/status`` showed as a listener called "homeassistant"."""
    assert topic_filter("noise") == "noise/#"
    store = LiveStore("noise")
    assert store.receive("noise/status", b"online")
    assert not store.receive("homeassistant/status", b"online")
    assert list(store.snapshot()) == ["noise"]


def test_malformed_payloads_are_ignored() -> None:
    assert decode("noisewatch/k/events", b"{not json", "noisewatch") is None
    assert decode("noisewatch/k/level", b"[1, 2]", "noisewatch") is None
    assert decode("noisewatch/k/status", b"\xff\xfe", "noisewatch") is None
    assert decode("noisewatch/k/status", b"online", "noisewatch") == Received("k", "status", None, "online")


def test_payloads_decode_into_the_daemons_message_types() -> None:
    event = closed_event("siren", "2026-01-01T12:00:00.000Z")
    assert decode("noisewatch/k/events", event.encode(), "noisewatch") == Received("k", "event", None, event)
    audio = Status(AudioState.AUDIO_ERROR, error="device gone")
    assert decode("noisewatch/k/audio", audio.encode(), "noisewatch") == Received("k", "audio", None, audio)
    untyped = {key: value for key, value in event.to_json().items() if key not in ("type", "schema")}
    assert decode("noisewatch/k/events", json.dumps(untyped).encode(), "noisewatch") == Received("k", "event", None, event)


def test_a_payload_missing_a_required_field_is_ignored_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    store = LiveStore("noisewatch/kitchen")
    event = closed_event("siren", "2026-01-01T12:00:00.000Z")
    incomplete = {key: value for key, value in event.to_json().items() if key != "end"}
    with caplog.at_level(logging.WARNING, logger="noisewatch.dashboard.store"):
        assert not store.receive("noisewatch/kitchen/events", json.dumps(incomplete).encode())
    assert store.snapshot() == {}
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "noisewatch/kitchen/events" in warnings[0].getMessage()


@pytest.mark.parametrize("name, value", [("start", 5), ("id", ["x"]), ("peak_dbfs", "loud"), ("confidence", True)])
def test_a_field_of_the_wrong_type_is_ignored_with_a_warning(name: str, value: object,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    """The store sorts events by start and keys them by id: a foreign type is refused, not raised in paho's thread."""
    store = LiveStore("noisewatch/kitchen")
    event = closed_event("siren", "2026-01-01T12:00:00.000Z")
    assert store.receive("noisewatch/kitchen/events", event.encode())
    wrong = {**closed_event("dog_bark", "2026-01-01T12:01:00.000Z").to_json(), name: value}
    with caplog.at_level(logging.WARNING, logger="noisewatch.dashboard.store"):
        assert not store.receive("noisewatch/kitchen/events", json.dumps(wrong).encode())
    assert list(store.snapshot()["kitchen"].events) == [event]
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING][0].endswith(f"{name} of the wrong type")


def test_a_message_of_another_kind_than_its_topic_is_ignored(caplog: pytest.LogCaptureFixture) -> None:
    """An event's fields include a started notice's: only its ``type`` tells it does not belong there."""
    store = LiveStore("noisewatch/kitchen")
    event = closed_event("siren", "2026-01-01T12:00:00.000Z")
    with caplog.at_level(logging.WARNING, logger="noisewatch.dashboard.store"):
        assert not store.receive("noisewatch/kitchen/events/started", event.encode())
        assert not store.receive("noisewatch/kitchen/audio", json.dumps({"state": "asleep"}).encode())
    assert store.snapshot() == {}
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 2


# --- the store ----------------------------------------------------------------------------------

def test_store_follows_an_event_from_start_to_end_and_drops_redeliveries() -> None:
    store = LiveStore("noisewatch/kitchen")
    event = closed_event("siren", "2026-01-01T12:00:00.000Z")
    assert store.receive("noisewatch/kitchen/events/started", started(event.id, event.label, event.start).encode())
    assert list(store.snapshot()["kitchen"].open_events) == [event.id]
    for _ in range(2):  # at-least-once delivery: the same id twice
        store.receive("noisewatch/kitchen/events", event.encode())
    device = store.snapshot()["kitchen"]
    assert device.open_events == {}
    assert list(device.events) == [event]
    assert device.prefix == "noisewatch/kitchen"


def test_store_keeps_status_states_levels_scores_and_stats_per_device() -> None:
    store = listening_store()
    store.receive("noisewatch/kitchen/status", b"online")
    store.receive("noisewatch/garden/status", b"offline")
    store.receive("noisewatch/kitchen/state/siren", b"ON")
    store.receive("noisewatch/kitchen/level", level("2026-01-01T12:00:00Z", "2026-01-01T12:01:00Z", -40.0).encode())
    store.receive("noisewatch/kitchen/scores", top_scores("siren", 0.7).encode())
    store.receive("noisewatch/kitchen/stats", stats(5.0).encode())
    assert not store.receive("other/kitchen/status", b"online")
    devices = store.snapshot()
    assert list(devices) == ["garden", "kitchen"]
    kitchen = devices["kitchen"]
    assert (kitchen.status, devices["garden"].status) == ("online", "offline")
    assert kitchen.states == {"siren": "ON"}
    assert views.latest_scores(kitchen) == [{"label": "siren", "score": 0.7}]
    assert views.stats_items(kitchen) == STATS_ITEMS
    assert views.active_labels(kitchen) == ["siren"]
    assert [report.leq_dbfs for report in kitchen.levels] == [-40.0]


def test_a_level_report_received_again_is_kept_once() -> None:
    """The listener sends its latest level again after a reconnect (for Home Assistant), and the broker replays it
    retained when the dashboard resubscribes: one period, one report."""
    store = listening_store()
    first, second = (level("2026-01-01T12:00:00Z", "2026-01-01T12:01:00Z", -40.0),
                     level("2026-01-01T12:01:00Z", "2026-01-01T12:02:00Z", -42.0))
    for report in (first, first, second, second):
        store.receive("noisewatch/kitchen/level", report.encode())
    assert [report.leq_dbfs for report in store.snapshot()["kitchen"].levels] == [-40.0, -42.0]


def test_offline_hides_what_was_current_and_keeps_history() -> None:
    store = listening_store()
    event = closed_event("siren", "2026-01-01T12:00:00.000Z")
    for topic, payload in (("status", b"online"), ("state/siren", b"ON"), ("events", event.encode()),
                           ("scores", top_scores("siren", 0.7).encode()),
                           ("events/started", started("o", "drilling").encode()),
                           ("stats", stats(5.0).encode()), ("status", b"offline"),
                           ("stats", stats(5.0).encode())):  # a retained one after the Will
        store.receive(f"noisewatch/kitchen/{topic}", payload)
    kitchen = store.snapshot()["kitchen"]
    assert views.presence(kitchen) is views.Presence.OFFLINE
    assert views.stats_items(kitchen) == [] and views.latest_scores(kitchen) == [] and views.active_labels(kitchen) == []
    assert kitchen.open_events == {}
    assert [e.id for e in kitchen.events] == [event.id]  # history stays
    store.receive("noisewatch/kitchen/status", b"online")
    assert views.stats_items(store.snapshot()["kitchen"]) == STATS_ITEMS


def test_a_health_report_is_dated_when_it_arrives_live() -> None:
    """Health comes every stats.interval_s: the page dates it; a retained one (made before the dashboard
    subscribed) has no date, and replayed unchanged at a resubscribe it keeps the one it had."""
    store = listening_store()
    store.apply(Received("kitchen", "stats", None, stats(5.0)), retained=True)
    assert store.snapshot()["kitchen"].stats_at is None
    store.apply(Received("kitchen", "stats", None, stats(65.0)), now=1000.0)
    assert store.snapshot()["kitchen"].stats_at == 1000.0
    store.apply(Received("kitchen", "stats", None, stats(65.0)), retained=True)
    assert store.snapshot()["kitchen"].stats_at == 1000.0


def test_a_lost_microphone_is_shown_while_online() -> None:
    store = listening_store()
    store.receive("noisewatch/kitchen/status", b"online")
    store.receive("noisewatch/kitchen/audio", Status(AudioState.LISTENING, source="USB").encode())
    assert views.audio_problem(store.snapshot()["kitchen"]) is None
    store.receive("noisewatch/kitchen/audio", Status(AudioState.AUDIO_ERROR, error="device gone").encode())
    assert views.audio_problem(store.snapshot()["kitchen"]) == "device gone"
    store.receive("noisewatch/kitchen/audio", Status(AudioState.SILENT, source="USB", error="only zeros").encode())
    assert views.audio_problem(store.snapshot()["kitchen"]) == "only zeros"
    store.receive("noisewatch/kitchen/status", b"offline")
    assert views.audio_problem(store.snapshot()["kitchen"]) is None  # offline says it already


def test_recent_events_give_history_from_before_the_dashboard_started(tmp_path: Path) -> None:
    store = LiveStore("noisewatch/kitchen")
    recent = RecentEvents(tmp_path, keep=3)
    events = [closed_event("siren", f"2026-01-01T12:0{i}:00.000Z") for i in range(5)]
    for event in events[:4]:
        payload = recent.add(event.to_json())
    redelivered = json.loads(recent.add(events[3].to_json()))
    assert [e["id"] for e in redelivered["events"]] == [e.id for e in events[1:4]]  # redelivery
    store.receive("noisewatch/kitchen/events", events[4].encode())  # live, before the retained one
    store.receive("noisewatch/kitchen/events/recent", payload)
    store.receive("noisewatch/kitchen/events/recent", payload)
    assert list(store.snapshot()["kitchen"].events) == events[1:]
    assert not store.receive("noisewatch/kitchen/events/recent", b"[1, 2]")
    broken = {"events": [*json.loads(payload)["events"], {"id": "no-fields"}]}
    assert not store.receive("noisewatch/kitchen/events/recent", json.dumps(broken).encode())


def test_a_dashboard_cut_off_from_the_broker_does_not_call_a_listener_online() -> None:
    """With the broker gone (or unreachable from the dashboard) the listener's Last Will cannot arrive either:
    the badge said "online" over frozen scores and health for as long as the outage lasted."""
    store = listening_store()
    for topic, payload in (("status", b"online"), ("scores", top_scores("siren", 0.7).encode()),
                           ("stats", stats(5.0).encode()), ("state/siren", b"ON")):
        store.receive(f"noisewatch/kitchen/{topic}", payload)
    assert views.presence(store.snapshot()["kitchen"]) is views.Presence.ONLINE
    store.connected = False
    kitchen = store.snapshot()["kitchen"]
    assert views.presence(kitchen) is views.Presence.UNKNOWN and not views.is_current(kitchen)
    assert views.stats_items(kitchen) == [] and views.latest_scores(kitchen) == [] and views.active_labels(kitchen) == []
    store.connected = True
    assert views.stats_items(store.snapshot()["kitchen"]) == STATS_ITEMS


def test_only_a_live_message_dates_a_listener() -> None:
    """The broker replays retained messages on subscribing: "offline since" showed when the dashboard started,
    not when the listener stopped."""
    store = listening_store()
    store.receive("noisewatch/kitchen/status", b"offline", retained=True)
    store.receive("noisewatch/kitchen/stats", stats(5.0).encode(), retained=True)
    kitchen = store.snapshot()["kitchen"]
    assert views.presence(kitchen) is views.Presence.OFFLINE
    assert kitchen.status_since is None and kitchen.last_seen is None
    store.apply(Received("kitchen", "status", None, "online"), now=1000.0)
    store.apply(Received("kitchen", "stats", None, stats(6.0)), now=1060.0)
    kitchen = store.snapshot()["kitchen"]
    assert (kitchen.status_since, kitchen.last_seen) == (1000.0, 1060.0)
    store.receive("noisewatch/kitchen/status", b"online", retained=True)  # the dashboard resubscribed
    assert store.snapshot()["kitchen"].status_since == 1000.0
    store.receive("noisewatch/kitchen/status", b"offline", retained=True)  # it went while the dashboard was away
    assert store.snapshot()["kitchen"].status_since is None


def test_events_lost_for_good_are_shown_in_words_online_or_not() -> None:
    """Health showed neither the spool's dropped events nor those the broker refused: a listener could lose
    events with the dashboard showing nothing wrong."""
    store = listening_store()
    store.receive("noisewatch/attic/status", b"online")
    lossy = replace(stats(86400.5), spool_depth=3, spool_dropped=40, spool_dead_letters=5, spool_quarantined=0,
                    spool_memory_dropped=0, spool_disk_error="Read-only file system")
    store.receive("noisewatch/attic/stats", lossy.encode())
    attic = store.snapshot()["attic"]
    assert ("listening for", "1 d 0 h") in views.stats_items(attic)
    assert ("events waiting for the broker", "3") in views.stats_items(attic)
    assert ("spool disk refuses writes", "Read-only file system") in views.stats_items(attic)
    expected = [("events dropped (spool full or too old)", 40), ("events the broker refused", 5)]
    assert views.losses(attic) == expected
    store.receive("noisewatch/attic/status", b"offline")
    attic = store.snapshot()["attic"]
    assert views.stats_items(attic) == [] and views.losses(attic) == expected  # stale health hidden, losses kept
    assert [views.duration_text(s) for s in (42, 180, 5 * 3600 + 12 * 60, 2 * 86400 + 3 * 3600)] == \
        ["42 s", "3 min", "5 h 12 min", "2 d 3 h"]


def test_numbers_read_alike_on_every_page_and_a_peak_just_under_full_scale_is_not_minus_zero() -> None:
    """A peak of -0.04 dBFS showed as "-0.0 dBFS" in the Live page's event table."""
    assert views.number_text(-0.04, "{:.1f} dBFS") == "0.0 dBFS"
    assert views.number_text(-0.06, "{:.1f} dBFS") == "-0.1 dBFS"
    assert views.number_text(0.456, "{:.2f}") == "0.46"
    assert views.number_text(None, "{:.2f}") == views.number_text("x", "{:.2f}") == views.MISSING


def test_the_thresholds_in_force_are_those_the_listener_publishes() -> None:
    """A threshold set from Home Assistant (1: the label off) showed nowhere on the dashboard; the Model page
    lists the model's defaults."""
    store = listening_store()
    assert store.receive("noisewatch/kitchen/threshold/siren", b"1")
    assert store.receive("noisewatch/kitchen/threshold/dog_bark", b"0.7")
    assert not store.receive("noisewatch/kitchen/threshold/siren/set", b"0.5")  # a command, not the value
    assert not store.receive("noisewatch/kitchen/threshold/drilling", b"loud")
    assert views.threshold_items(store.snapshot()["kitchen"]) == [("dog_bark", "0.70"), ("siren", "off")]
    assert store.receive("noisewatch/kitchen/threshold/siren", b"")  # the label dropped: its topics cleared
    assert store.receive("noisewatch/kitchen/state/siren", b"ON") and store.receive("noisewatch/kitchen/state/siren", b"")
    kitchen = store.snapshot()["kitchen"]
    assert views.threshold_items(kitchen) == [("dog_bark", "0.70")] and "siren" not in kitchen.states


def test_label_colours_do_not_depend_on_what_arrived_first() -> None:
    known = ("siren", "dog_bark", "loud")
    first = views.label_colors(known, ["dog_bark", "other_model_label"])
    later = views.label_colors(known, ["other_model_label", "siren", "zzz"])
    assert first["dog_bark"] == later["dog_bark"] and first["other_model_label"] == later["other_model_label"]
    assert len({first[label] for label in known}) == len(known)


def test_snapshot_is_a_copy_the_page_may_keep() -> None:
    store = LiveStore("noisewatch/kitchen")
    store.receive("noisewatch/kitchen/state/siren", b"ON")
    snapshot = store.snapshot()
    store.receive("noisewatch/kitchen/state/siren", b"OFF")
    assert snapshot["kitchen"].states["siren"] == "ON"


# --- tables ---------------------------------------------------------------------------------------

def test_event_rows_are_newest_first_and_include_open_events() -> None:
    store = LiveStore("noisewatch/kitchen")
    first = closed_event("siren", "2026-01-01T12:00:00.000Z")
    second = closed_event("dog_bark", "2026-01-01T12:05:00.000Z", device="garden")
    store.receive("noisewatch/kitchen/events", first.encode())
    store.receive("noisewatch/garden/events", second.encode())
    store.receive("noisewatch/kitchen/events/started", started("x", "drilling", "2026-01-01T12:09:00.000Z").encode())
    rows = views.event_rows(store.snapshot())
    assert [(r["label"], r["state"], r["device"]) for r in rows] == [
        ("drilling", "open", "kitchen"), ("dog_bark", "closed", "garden"), ("siren", "closed", "kitchen")]
    assert rows[2]["end"] - rows[2]["start"] == dt.timedelta(seconds=3)


def test_level_rows_give_leq_lmax_and_lmin_over_time_and_break_at_gaps() -> None:
    """Lmin was never drawn, a line bridged hours without data (the listener or the broker away), and a
    calibrated listener's dB(A) SPL was never shown."""
    store = LiveStore("noisewatch/kitchen")
    for minute, leq in ((2, -30.0), (1, -40.0), (5, -35.0)):
        report = level(f"2026-01-01T12:0{minute - 1}:00Z", f"2026-01-01T12:0{minute}:00Z", leq)
        store.receive("noisewatch/kitchen/level", report.encode())
    devices = store.snapshot()
    assert views.level_unit(devices) == "dBFS"
    rows = views.level_rows(devices, "dBFS")
    assert [(r["measure"], r["level"]) for r in rows[:6]] == [
        ("Leq", -40.0), ("Lmax", -30.0), ("Lmin", -50.0), ("Leq", -30.0), ("Lmax", -20.0), ("Lmin", -40.0)]
    assert [r["run"] for r in rows[::3]] == ["kitchen 0", "kitchen 0", "kitchen 1"]  # 12:02-12:04: nothing
    calibrated = replace(level("2026-01-01T12:05:00Z", "2026-01-01T12:06:00Z", -35.0), leq_dba_spl=55.0,
                         lmax_dba_spl=65.0, lmin_dba_spl=45.0)
    store.receive("noisewatch/garden/level", calibrated.encode())
    assert views.level_unit(store.snapshot()) == "dBFS"  # one axis, one unit: kitchen is not calibrated
    garden = {"garden": store.snapshot()["garden"]}
    assert views.level_unit(garden) == "dB(A) SPL"
    assert [r["level"] for r in views.level_rows(garden, "dB(A) SPL")] == [55.0, 65.0, 45.0]


def test_the_part_period_reported_at_a_stop_goes_on_the_line_of_the_periods_before_it() -> None:
    """Found in review: a stop (a gap, a file's end, a reload that changes the levels) reports the period being
    filled over its whole seconds, and the line broke before it: a report starting more than 1.5 of its own periods
    after the one before was a gap, and a 7 s part period starts 60 s after the full minute before it. Alone in its
    run, it was one point with no line, where the first report after a start (5 s, then a minute) never was."""
    store = LiveStore("noisewatch/kitchen")
    for start, end, period_s, leq in (("12:00:00", "12:01:00", 60.0, -40.0), ("12:01:00", "12:01:07", 7.0, -30.0),
                                      ("12:05:00", "12:05:05", 5.0, -35.0), ("12:05:05", "12:06:05", 60.0, -36.0)):
        report = replace(level(f"2026-01-01T{start}Z", f"2026-01-01T{end}Z", leq), period_s=period_s)
        store.receive("noisewatch/kitchen/level", report.encode())
    rows = views.level_rows(store.snapshot(), "dBFS")
    assert [(r["level"], r["run"]) for r in rows[::3]] == [
        (-40.0, "kitchen 0"), (-30.0, "kitchen 0"), (-35.0, "kitchen 1"), (-36.0, "kitchen 1")]


def test_parse_time_accepts_z_and_offsets_and_rejects_garbage() -> None:
    assert views.parse_time("2026-01-01T12:00:00.250Z") == views.parse_time("2026-01-01T12:00:00.250+00:00")
    assert views.parse_time("yesterday") is None and views.parse_time(None) is None


# --- model metrics --------------------------------------------------------------------------------

def test_model_tables_from_the_shipped_bundle() -> None:
    bundle = load_bundle(default_model_path())
    rows = modelview.headline_rows(bundle.metrics)
    models = {row["model"] for row in rows}
    compared = {name for name, block in bundle.metrics.items() if isinstance(block, dict) and "pooled" in block
                and "accuracy" in block["pooled"]}
    assert "mlp" in models and compared <= models  # every clip-level model the bundle was compared with
    assert all(0.0 <= row["accuracy"] <= 1.0 for row in rows)
    assert {row["item"] for row in modelview.provenance_rows(bundle.provenance)} >= {"datasets", "licence"}


def test_soundscape_tables_from_the_shipped_bundle() -> None:
    bundle = load_bundle(default_model_path())
    pooled = bundle.metrics["soundscapes"]["pooled"]
    rows = modelview.soundscape_rows(bundle.metrics)
    assert [row["fold"] for row in rows] == [*bundle.metrics["soundscapes"]["folds"], "all"]
    assert rows[-1]["events found"] == f"{pooled['found']} of {pooled['events']}"
    assert rows[-1]["false events per hour of ambience"] == pytest.approx(pooled["false_events_per_hour"], abs=0.05)
    per_class = {row["label"]: row for row in modelview.soundscape_class_rows(bundle.metrics)}
    assert set(per_class) == set(pooled["per_class"])
    assert per_class["siren"]["event F1"] == pytest.approx(pooled["per_class"]["siren"]["event_f1"], abs=0.005)
    assert modelview.soundscape_rows({"mlp": {}}) == [] and modelview.soundscape_class_rows({}) == []


def test_confusion_and_per_class_tables_from_a_training_summary() -> None:
    labels = ["siren", "dog_bark", "background"]
    block = summary(np.array([0, 0, 1, 2]), np.array([0, 1, 1, 2]), labels, "background")
    metrics = {"mlp": {"1": {"accuracy": 0.5}, "pooled": block}, "knn": {"pooled": {"accuracy": 0.4}}}
    found = modelview.find_summary(metrics)
    assert found is block
    cells = {(c["true"], c["predicted"]): c for c in modelview.confusion_cells(found)}
    assert cells[("siren", "dog_bark")]["count"] == 1 and cells[("siren", "dog_bark")]["share"] == 0.5
    per_class = {row["label"]: row for row in modelview.per_class_rows(found)}
    assert per_class["dog_bark"]["precision"] == 0.5 and per_class["dog_bark"]["recall"] == 1.0
    assert modelview.find_summary({"mlp": {"pooled": {"accuracy": 1.0}}}) is None


def test_the_model_cards_confusion_matrix_is_found_beside_the_bundle(tmp_path: Path) -> None:
    bundle = load_bundle(default_model_path())
    assert modelview.find_summary(bundle.metrics) is None  # the bundle keeps headline figures only
    image = modelview.confusion_image(bundle.path)
    assert image is not None and image.read_bytes().startswith(b"\x89PNG")
    assert modelview.confusion_image(tmp_path / "other.json") is None


# --- classification -------------------------------------------------------------------------------

def test_classify_lists_the_events_the_daemon_reports(repo_root: Path, tmp_path: Path) -> None:
    """The sample scene through the page's analysis and through ``noisewatch run --input``: the same events."""
    bundle = load_bundle(default_model_path())
    scene = repo_root / "samples" / "scene.flac"
    found = analysis.detect_events(analysis.decode(scene.read_bytes(), bundle.features.sample_rate), bundle,
                                   load_config(None))
    daemon = [m for m in run_daemon(scene, tmp_path / "out.jsonl", "--speed", "0") if m["type"] == "event"]
    assert [e.label for e in found] == [e["label"] for e in daemon] == ["siren", "dog_bark", "jackhammer"]
    for ours, theirs in zip(found, daemon):
        assert abs(ours.offset_s - theirs["offset_s"]) < 0.05
        assert abs(ours.duration_s - theirs["duration_s"]) < 0.05

def test_classify_reports_a_loud_event_as_the_daemon_does(tmp_path: Path) -> None:
    """README: Classify gives "the events the daemon would report". A 3 s tone at -6 dBFS, a `loud` event to the
    daemon, came out of the page at -120 dBFS (peak and mean): the page hands the pipeline the whole recording,
    and the loud event was measured before the windows had recorded its audio."""
    bundle = load_bundle(default_model_path())
    rate = bundle.features.sample_rate
    audio = 10 ** (-50 / 20) * np.random.default_rng(0).standard_normal(9 * rate)
    audio[2 * rate : 5 * rate] += np.sqrt(2.0) * 10 ** (-6 / 20) * np.sin(2 * np.pi * 1000 * np.arange(3 * rate) / rate)
    path = tmp_path / "tone.wav"
    soundfile.write(str(path), audio.astype(np.float32), rate, subtype="FLOAT")
    found = analysis.detect_events(analysis.decode(path.read_bytes(), rate), bundle, load_config(None))
    daemon = [m for m in run_daemon(path, tmp_path / "out.jsonl", "--speed", "0") if m["type"] == "event"]
    keys = ("label", "offset_s", "duration_s", "confidence", "peak_dbfs", "mean_dbfs")
    assert "loud" in [e["label"] for e in daemon]
    assert sorted(tuple(e.to_json()[k] for k in keys) for e in found) == sorted(tuple(e[k] for k in keys) for e in daemon)


def test_a_recording_shorter_than_a_window_is_told_why_it_has_no_event(repo_root: Path) -> None:
    """A 1.3 s gunshot on the Classify page read "every window stayed below its label's threshold", where there
    is no window at all: the listener decides on whole 4 s windows."""
    bundle = load_bundle(default_model_path())
    rate = bundle.features.sample_rate
    scene = analysis.decode((repo_root / "samples" / "scene.flac").read_bytes(), rate)
    short = analysis.Recording(scene.samples[int(5.5 * rate): int(6.8 * rate)], rate, False)
    assert analysis.detect_events(short, bundle, load_config(None)) == []
    assert analysis.no_event_reason(short, bundle.features).startswith(
        "No event: the recording (1.3 s) is shorter than one 4 s window")
    assert "threshold" in analysis.no_event_reason(analysis.Recording(np.zeros(10 * rate, np.float32), rate, False),
                                                  bundle.features)


def test_a_wav_file_cut_short_is_told_from_a_whole_one() -> None:
    rate = 22050
    buffer = io.BytesIO()
    soundfile.write(buffer, np.zeros(10 * rate, dtype=np.float32), rate, format="WAV", subtype="PCM_16")
    whole = buffer.getvalue()
    assert analysis.decode(whole, rate).cut_short is None
    cut = analysis.decode(whole[: 44 + 2 * 4 * rate], rate).cut_short  # the header and 4 s of its 10
    assert cut is not None and cut.held_s == pytest.approx(4.0) and cut.promised_s == pytest.approx(10.0)


def test_decode_downmixes_and_resamples_to_the_model_rate() -> None:
    rate, seconds = 44100, 1.5
    t = np.arange(int(rate * seconds)) / rate
    stereo = np.stack([np.sin(2 * np.pi * 440 * t), np.zeros_like(t)], axis=1) * 0.5
    buffer = io.BytesIO()
    soundfile.write(buffer, stereo, rate, format="WAV")
    recording = analysis.decode(buffer.getvalue(), 22050)
    assert recording.sample_rate == 22050 and not recording.truncated
    assert abs(recording.duration_s - seconds) < 0.01
    half = int(0.5 * 22050)  # the mix of a tone and a channel of zeros: the tone alone, in the first half second
    assert abs(np.abs(recording.samples[50:half]).max() - 0.5) < 0.01  # too (a channel of one value is no sound)
    assert abs(np.abs(recording.samples[half:-50]).max() - 0.5) < 0.01


@pytest.mark.shared_data
def test_classify_a_real_recording_window_by_window(shared_data: Path) -> None:
    bundle = load_bundle(default_model_path())
    rate = bundle.features.sample_rate
    siren, _ = soundfile.read(shared_data / SIREN_CLIP, dtype="float32")
    bark, _ = soundfile.read(shared_data / DOG_CLIP, dtype="float32")
    buffer = io.BytesIO()
    soundfile.write(buffer, np.concatenate([siren, np.zeros(3 * rate, np.float32), bark]), rate, format="FLAC")
    recording = analysis.decode(buffer.getvalue(), rate)
    scores = analysis.classify(recording, bundle, hop_s=1.0)
    assert scores.scores.shape == (len(scores.starts), len(bundle.labels))
    assert scores.starts[0] == 0.0 and np.all(np.diff(scores.starts) > 0)
    top = [bundle.labels[i] for i in scores.scores.argmax(axis=1)]
    assert top[0] == "siren" and top[-1] == "dog_bark"
    single = analysis.classify(analysis.decode(_flac(siren, rate), rate), bundle)
    assert single.summary()[0] == "siren" and len(single.starts) == 1


def _flac(y: np.ndarray, rate: int) -> bytes:
    buffer = io.BytesIO()
    soundfile.write(buffer, y, rate, format="FLAC")
    return buffer.getvalue()


def test_pictures_of_the_audio() -> None:
    matrix = np.linspace(-80, 0, 128 * 40).reshape(128, 40)
    image = analysis.colorize(matrix, columns=200)
    assert image.dtype == np.uint8 and image.shape == (128, 200, 3)
    assert tuple(image[-1, 0]) == tuple(analysis.PALETTE[0].astype(np.uint8))  # lowest value, bottom left
    times, low, high = analysis.envelope(np.sin(np.arange(22050) / 10.0), 22050, points=100)
    assert len(times) == len(low) == len(high) == 100 and np.all(low <= high)


# --- launcher -------------------------------------------------------------------------------------

def test_launch_command_runs_the_app_with_the_config(tmp_path: Path) -> None:
    command = launch.streamlit_command("conf.yaml", 8600)
    assert command[1:6] == ["-P", "-m", "streamlit", "run", str(launch.APP)]  # -P: the cwd is not on sys.path
    assert command[command.index("--server.port") + 1] == "8600"
    assert command[command.index("--server.address") + 1] == "127.0.0.1"
    opened = launch.streamlit_command(None, 8600, "0.0.0.0")
    assert opened[opened.index("--server.address") + 1] == "0.0.0.0"
    assert command[-3:] == ["--", "--config", str(Path("conf.yaml").resolve())]
    assert launch.app_arguments(command[command.index("--") + 1:]).config == str(Path("conf.yaml").resolve())
    assert command[command.index("--server.fileWatcherType") + 1] == "none"  # an upgrade is not hot-loaded under it


def test_launch_refuses_an_invalid_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("mqtt:\n  prot: 1883\n")
    assert launch.main(argparse.Namespace(config=str(bad), port=8600, address=None)) == EX_CONFIG
    assert "mqtt.prot" in capsys.readouterr().err


def test_launch_warns_that_a_config_with_mqtt_off_has_nothing_to_watch(repo_root: Path) -> None:
    shipped = repo_root / "config" / "noisewatch.yaml"
    assert not load_config(shipped).mqtt.enabled  # the shipped config, which a first try starts from
    warnings = launch.config_warnings(load_config(shipped), str(shipped))
    assert len(warnings) == 1 and warnings[0].startswith(f"MQTT is off in {shipped}; watching localhost:1883")
    on = load_config(shipped).model_copy(update={"mqtt": load_config(shipped).mqtt.model_copy(update={"enabled": True})})
    assert launch.config_warnings(on, str(shipped)) == []


# --- the subscriber against a real broker -------------------------------------------------------

@pytest.mark.broker
def test_subscriber_sees_every_listener_under_the_prefix_root() -> None:
    broker = Broker().start()
    try:
        config = Config.model_validate({"device_id": "kitchen", "mqtt": {"host": HOST, "port": broker.port}})
        publisher = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2)
        publisher.connect(HOST, broker.port)
        publisher.loop_start()
        publisher.publish("noisewatch/garden/status", "online", qos=1, retain=True).wait_for_publish(5)
        subscriber = LiveSubscriber.from_config(config)
        subscriber.start()
        try:
            assert _wait(lambda: "garden" in subscriber.store.snapshot()), "retained status did not arrive"
            event = closed_event("siren", "2026-01-01T12:00:00.000Z")
            publisher.publish("noisewatch/kitchen/events", event.encode(), qos=1).wait_for_publish(5)
            assert _wait(lambda: "kitchen" in subscriber.store.snapshot())
            assert list(subscriber.store.snapshot()["kitchen"].events) == [event]
            assert subscriber.store.broker == "subscribed"
        finally:
            subscriber.stop()
            publisher.loop_stop()
    finally:
        broker.cleanup()



@pytest.mark.broker
def test_the_subscriber_tells_retained_from_live_and_keeps_a_refusal_s_reason(tmp_path: Path) -> None:
    """Against a real mosquitto: a status retained before the dashboard subscribed dates nothing, a live one
    does; a wrong password reads "Not authorized" with what to check, not paho's later "Unspecified error"."""
    broker = Broker(users={"nw": "right-password"}).start()
    try:
        publisher = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2)
        publisher.username_pw_set("nw", "right-password")
        publisher.connect(HOST, broker.port)
        publisher.loop_start()
        publisher.publish("noisewatch/garden/status", "offline", qos=1, retain=True).wait_for_publish(5)
        settings = {"host": HOST, "port": broker.port, "username": "nw"}
        config = Config.model_validate({"device_id": "kitchen", "mqtt": settings})
        good = LiveSubscriber(config.mqtt, "noisewatch/kitchen", "right-password")
        bad = LiveSubscriber(config.mqtt, "noisewatch/kitchen", "wrong")
        good.start()
        bad.start()
        try:
            assert _wait(lambda: "garden" in good.store.snapshot())
            assert good.store.connected and good.store.snapshot()["garden"].status_since is None
            before = time.time()
            publisher.publish("noisewatch/garden/status", "online", qos=1, retain=True).wait_for_publish(5)
            assert _wait(lambda: good.store.snapshot()["garden"].status == "online")
            assert (good.store.snapshot()["garden"].status_since or 0) >= before
            assert _wait(lambda: "refused" in bad.store.broker)
            time.sleep(1.0)  # paho's disconnect callback follows the refusal
            assert bad.store.broker.startswith("refused the connection: Not authorized; check mqtt.username"), \
                bad.store.broker
            assert not bad.store.connected
        finally:
            good.stop()
            bad.stop()
            publisher.loop_stop()
    finally:
        broker.cleanup()


@pytest.mark.broker
def test_a_password_corrected_in_its_file_is_used_at_the_next_attempt(tmp_path: Path) -> None:
    """Against a real mosquitto: the page says "retrying" after a refusal, so a retry must read mqtt.password_file
    again; it kept sending the password read at start, refused forever until the dashboard was restarted."""
    broker = Broker(users={"nw": "right-password"}).start()
    password_file = tmp_path / "mqtt_password"
    password_file.write_text("wrong\n")
    password_file.chmod(0o600)
    settings = {"host": HOST, "port": broker.port, "username": "nw", "password_file": str(password_file)}
    subscriber = LiveSubscriber.from_config(Config.model_validate({"device_id": "kitchen", "mqtt": settings}))
    subscriber.start()
    try:
        assert _wait(lambda: "refused" in subscriber.store.broker), subscriber.store.broker
        password_file.write_text("right-password\n")
        assert _wait(lambda: subscriber.store.broker == "subscribed", timeout=15.0), subscriber.store.broker
        assert subscriber.store.connected
    finally:
        subscriber.stop()
        broker.cleanup()


@pytest.mark.broker
def test_the_store_decodes_everything_the_daemon_publishes(repo_root: Path, tmp_path: Path,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    """The real daemon over the sample scene into a real broker: every message it publishes (its JSON-lines log
    holds the same ones) lands in the store as the daemon's own message, and none is refused."""
    broker = Broker().start()
    try:
        config = tmp_path / "daemon.yaml"
        config.write_text(DAEMON_CONFIG.format(host=HOST, port=broker.port, spool=tmp_path / "spool"))
        subscriber = LiveSubscriber.from_config(load_config(config))
        subscriber.start()
        try:
            assert _wait(lambda: subscriber.store.broker == "subscribed")
            with caplog.at_level(logging.WARNING, logger="noisewatch.dashboard.store"):
                logged = run_daemon(repo_root / "samples" / "scene.flac", tmp_path / "run.jsonl", "--speed", "10",
                                    config=config)
                assert _wait(lambda: subscriber.store.snapshot()["kitchen"].status == "offline"), "no clean shutdown"
            kitchen = subscriber.store.snapshot()["kitchen"]
        finally:
            subscriber.stop()
    finally:
        broker.cleanup()
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    of_kind = {kind: [decode_message(m) for m in logged if m["type"] == kind] for kind in ("event", "level", "status")}
    assert {"stats", "scores", "started"} <= {m["type"] for m in logged}, "the scene exercises every kind"
    assert of_kind["event"] and list(kitchen.events) == of_kind["event"]
    assert of_kind["level"] and list(kitchen.levels) == of_kind["level"]
    assert kitchen.audio == of_kind["status"][-1]


def _wait(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_the_readme_s_dashboard_command_serves_port_8501_on_this_machine_only() -> None:
    """README: `noisewatch dashboard --config ...` serves http://localhost:8501 and "listens on 127.0.0.1 only"
    unless `--address 0.0.0.0` is given."""
    from noisewatch.cli import build_parser

    args = build_parser("dashboard").parse_args(["dashboard", "--config", "/etc/noisewatch/config.yaml"])
    assert args.port == 8501 and args.address is None
    command = launch.streamlit_command(args.config, args.port)
    assert command[command.index("--server.port") + 1] == "8501"
    assert command[command.index("--server.address") + 1] == "127.0.0.1"


def test_classify_charts_give_a_label_the_same_colour() -> None:
    """The scores chart took Altair's own colours while the events timeline used the model's: red was dog_bark in
    one and drilling in the other, on the same page."""
    from noisewatch.classify import WindowResult
    from noisewatch.daemon.events import LOUD
    from noisewatch.dashboard.ui.classify import _score_chart

    labels = load_bundle(default_model_path()).labels
    rng = np.random.default_rng(0)
    scores = analysis.WindowScores(labels, tuple(WindowResult(float(i), rng.random(len(labels))) for i in range(4)))
    scale = _score_chart(scores).to_dict()["encoding"]["color"]["scale"]
    timeline = views.label_colors((*labels, LOUD))  # what the events timeline draws each label in
    assert len(scale["domain"]) > 1 and scale["range"] == [timeline[label] for label in scale["domain"]]


def test_counts_read_as_words() -> None:
    assert [views.count(n, "window") for n in (0, 1, 2)] == ["0 windows", "1 window", "2 windows"]


def test_a_long_upload_is_decoded_only_as_far_as_it_is_analysed(tmp_path: Path) -> None:
    """Found by fault injection: an hour of silence is a FLAC of a few hundred KB, and the Classify page decoded all of
    it (20 minutes of 48 kHz stereo: 1.2 GB resident, 5.5 s) before keeping its first MAX_SECONDS: an upload of a long
    recording could take the memory of the Pi the dashboard runs on."""
    rate, minutes = 22050, 60
    path = tmp_path / "hour.flac"
    with soundfile.SoundFile(path, "w", rate, 1, "PCM_16") as file:
        for _ in range(minutes):
            file.write(np.zeros(60 * rate, dtype=np.int16))
    data = path.read_bytes()
    assert len(data) < 2_000_000
    tracemalloc.start()
    try:
        recording = analysis.decode(data, rate)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert recording.truncated and recording.duration_s == analysis.MAX_SECONDS
    kept = analysis.MAX_SECONDS * rate * 4  # the float32 samples analysed; the mix and the filter take copies
    assert peak < 6 * kept, f"{peak / 1e6:.0f} MB at the peak to keep {kept / 1e6:.0f} MB"


def test_the_classify_page_gates_windows_at_the_config_s_gate_as_its_events_do() -> None:
    """Found in review: the Classify page's window scores and verdict counted a window as background below -75 dBFS
    (config.GATE_DBFS) while its events, from the same page's config, gated at ``audio.gate_dbfs``: with -60 there,
    a -70 dBFS recording had no event (not classified) and a label for every window on the chart and verdict."""
    bundle = load_bundle(default_model_path())
    rate = bundle.features.sample_rate
    tone = (10 ** (-67 / 20) * np.sin(2 * np.pi * 900 * np.arange(6 * rate) / rate)).astype(np.float32)  # -70 dBFS
    recording = analysis.Recording(tone, rate, False, None)
    config = Config.model_validate({"audio": {"gate_dbfs": -60.0}})
    scores = analysis.classify(recording, bundle, 1.0, config.audio.gate_dbfs)
    assert all(result.quiet for result in scores.results) and scores.summary() == ("background", 1.0)
    assert all(not result.quiet for result in analysis.classify(recording, bundle, 1.0).results)  # the default -75


def test_the_classify_page_s_window_table_reads_a_quiet_window_as_background_without_such_a_label() -> None:
    """Found in review: with a bundle that has no "background" label a window below the gate scores all zeros, and the
    Classify page's Windows table gave it the bundle's first label at 0.000 (``classify`` says background)."""
    from noisewatch.classify import WindowResult
    from noisewatch.dashboard.ui.classify import _window_table

    labels = ("siren", "dog_bark")
    scores = analysis.WindowScores(labels, (WindowResult(0.0, np.zeros(2, np.float32), quiet=True),
                                            WindowResult(1.0, np.array([0.2, 0.7], np.float32))))
    table = _window_table(scores)
    assert list(table["top label"]) == ["background", "dog_bark"]
    assert list(table["score"]) == pytest.approx([1.0, 0.7])


def test_stats_from_a_listener_before_the_started_field_are_still_read() -> None:
    """docs/mqtt.md: "new fields do not raise" the schema, so a schema-1 reader takes a schema-1 payload without
    them. ``Stats.started`` had no default: the stats of a listener not yet upgraded (or the retained report its
    last run left) did not decode, and the dashboard dropped them as malformed."""
    old = {key: value for key, value in stats(3600.0).to_json().items() if key != "started"}
    received = decode("noisewatch/kitchen/stats", json.dumps(old).encode(), "noisewatch")
    assert received is not None and isinstance(received.payload, Stats) and received.payload.started is None

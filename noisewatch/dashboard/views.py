"""Tables behind the Live page, built from store snapshots: pure functions, no Streamlit.

Rows are plain dicts (Streamlit and pandas take them as they are); times are parsed from the
events' ISO 8601 stamps (the daemon's audio clock), never taken from the dashboard's clock.
"""

from __future__ import annotations

import datetime as dt
import zlib
from collections.abc import Iterable, Mapping, Sequence
from enum import Enum
from typing import Any

from noisewatch.daemon.detector import THRESHOLD_OFF
from noisewatch.daemon.messages import AudioState, Event, Started
from noisewatch.dashboard.store import DeviceState

STATS_SHOWN = (("uptime_s", "listening for"), ("windows", "windows classified"), ("input_overflows", "input overflows"),
               ("dropped_frames", "audio frames dropped"), ("spool_depth", "events waiting for the broker"),
               ("spool_disk_error", "spool disk refuses writes"),
               ("model", "model"), ("version", "version"))
"""fields of the daemon's ``Stats`` shown per device, in this order and words, when it reports them (not None)"""
LOSSES = (("spool_dropped", "events dropped (spool full or too old)"),
          ("spool_memory_dropped", "events dropped (spool disk refused them)"),
          ("spool_dead_letters", "events the broker refused"), ("spool_quarantined", "damaged spool files set aside"),
          ("jsonl_failed_writes", "JSON lines not written"))
"""fields of ``Stats`` that count messages that will never arrive: shown (and warned of) once not zero"""
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
           "#17becf", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94", "#f7b6d2", "#dbdb8d")
"""label colours (Tableau 20 without its greys' pair)"""


def label_colors(known: Sequence[str], seen: Iterable[str] = ()) -> dict[str, str]:
    """A colour per label that never changes between refreshes: the model's labels by their order,
    others (a label of another model) by a hash of their name."""
    colors = {label: PALETTE[i % len(PALETTE)] for i, label in enumerate(known)}
    for label in sorted(set(seen) - set(colors)):
        colors[label] = PALETTE[zlib.crc32(label.encode()) % len(PALETTE)]
    return colors


class Presence(Enum):
    """Whether a listener is there, as far as the dashboard can tell."""

    ONLINE = "online"
    OFFLINE = "offline"
    """It said so, or its Last Will did."""
    UNKNOWN = "unknown"
    """No status yet, or the dashboard itself cannot reach the broker (nor the Last Will it)."""


def presence(device: DeviceState) -> Presence:
    if not device.live or device.status not in (Presence.ONLINE.value, Presence.OFFLINE.value):
        return Presence.UNKNOWN
    return Presence(device.status)


def is_current(device: DeviceState) -> bool:
    """Its scores, states, health and audio state are current: it is online and the dashboard is listening."""
    return presence(device) is Presence.ONLINE


def parse_time(stamp: Any) -> dt.datetime | None:
    """An ISO 8601 stamp (``...Z`` or ``+00:00``) as an aware datetime; None if absent or invalid."""
    if not isinstance(stamp, str):
        return None
    try:
        parsed = dt.datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.timezone.utc)


def event_rows(devices: Mapping[str, DeviceState]) -> list[dict[str, Any]]:
    """Closed and still-open events of every device, newest first."""
    rows = []
    for name, device in devices.items():
        rows += [_event_row(name, event) for event in device.events]
        rows += [_event_row(name, notice) for notice in device.open_events.values()]
    epoch = dt.datetime.min.replace(tzinfo=dt.timezone.utc)
    return sorted(rows, key=lambda row: row["start"] or epoch, reverse=True)


def _event_row(device: str, event: Event | Started) -> dict[str, Any]:
    """A closed event, or an open one (its ``started`` notice: no end, duration or peak yet)."""
    closed = event if isinstance(event, Event) else None
    return {
        "device": device,
        "label": event.label,
        "state": "open" if closed is None else "closed",
        "start": parse_time(event.start),
        "end": None if closed is None else parse_time(closed.end),
        "duration_s": None if closed is None else closed.duration_s,
        "confidence": event.confidence,
        "peak_dbfs": None if closed is None else closed.peak_dbfs,
    }


LEVEL_MEASURES = {
    "dB(A) SPL": (("Leq", "leq_dba_spl"), ("Lmax", "lmax_dba_spl"), ("Lmin", "lmin_dba_spl")),
    "dBFS": (("Leq", "leq_dbfs"), ("Lmax", "lmax_dbfs"), ("Lmin", "lmin_dbfs")),
}
"""unit -> (measure, ``Level`` field): sound pressure when every listener is calibrated, else relative to its
microphone's full scale"""
GAP_PERIODS = 1.5
"""a report starting more than this many of the previous report's periods after the previous one started leaves a
gap: the line breaks there (the previous one's: a stop's part period is shorter than the minute before it)"""
MISSING = "–"
"""shown for a missing number (a plain '-' would render as a Markdown bullet in st.table)"""


def level_unit(devices: Mapping[str, DeviceState]) -> str:
    """dB(A) SPL when every level report has it (``levels.calibration_db`` set), else dBFS: one axis, one unit."""
    reports = [report for device in devices.values() for report in device.levels]
    return "dB(A) SPL" if reports and all(r.leq_dba_spl is not None for r in reports) else "dBFS"


def level_rows(devices: Mapping[str, DeviceState], unit: str) -> list[dict[str, Any]]:
    """Leq, Lmax and Lmin of every level report in ``unit``, one row per device, period and measure, oldest
    first; ``run`` numbers the stretches without a gap, so that a line does not bridge hours without data."""
    rows = []
    for name, device in devices.items():
        run, last_start, last_period_s = 0, None, 0.0
        for report in sorted(device.levels, key=lambda r: r.start):
            start, end = parse_time(report.start), parse_time(report.end)
            if start is None or end is None:
                continue
            if last_start is not None and (start - last_start).total_seconds() > GAP_PERIODS * last_period_s:
                run += 1
            last_start, last_period_s = start, report.period_s
            for measure, field in LEVEL_MEASURES[unit]:
                rows.append({"device": name, "time": end, "measure": measure, "level": getattr(report, field),
                             "run": f"{name} {run}"})
    return sorted(rows, key=lambda row: row["time"])


def latest_scores(device: DeviceState) -> list[dict[str, Any]]:
    """The newest top-3 report as rows of label and score; empty when not published or not current."""
    if not device.scores or not is_current(device):
        return []
    return [{"label": item.label, "score": item.score} for item in device.scores[-1].top]


def active_labels(device: DeviceState) -> list[str]:
    """Labels currently ON (retained state) or with an open event; none unless current."""
    if not is_current(device):
        return []
    on = {label for label, state in device.states.items() if state == "ON"}
    on.update(notice.label for notice in device.open_events.values())
    return sorted(on)


def threshold_items(device: DeviceState) -> list[tuple[str, str]]:
    """(label, threshold in force) by label, ``off`` at the top of the range (the daemon's rule): what the
    listener decides with, which the model page's defaults are not once one is set from Home Assistant."""
    return [(label, "off" if value >= THRESHOLD_OFF else f"{value:.2f}")
            for label, value in sorted(device.thresholds.items())]


def stats_items(device: DeviceState) -> list[tuple[str, str]]:
    """The health fields worth a glance, as (words, value) in a fixed order; none unless current (they would
    be stale)."""
    if device.stats is None or not is_current(device):
        return []
    values = [(key, words, getattr(device.stats, key)) for key, words in STATS_SHOWN]
    return [(words, duration_text(value) if key == "uptime_s" else str(value))
            for key, words, value in values if value is not None]


def losses(device: DeviceState) -> list[tuple[str, int]]:
    """What the listener reports lost for good since it started, as (words, count), only the counts above
    zero: the last health report's, offline or not (a loss stays a loss)."""
    if device.stats is None:
        return []
    counts = [(words, getattr(device.stats, key)) for key, words in LOSSES]
    return [(words, count) for words, count in counts if count]


def count(n: int, noun: str) -> str:
    """``n`` of ``noun`` in words a reader expects: "1 window", "2 windows" (the Model page said "1 windows")."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def number_text(value: Any, template: str) -> str:
    """``value`` by ``template`` (``"{:.2f}"``), or MISSING when it is not a number: one look on every page.
    A value that rounds to zero reads as zero, not "-0.0"."""
    if not isinstance(value, (int, float)):
        return MISSING
    text = template.format(value)
    return template.format(0.0) if text == template.format(-0.0) else text


def duration_text(seconds: float) -> str:
    """``42 s``, ``3 min``, ``5 h 12 min``, ``2 d 3 h``: an uptime at a glance."""
    minutes, hours, days = int(seconds // 60), int(seconds // 3600), int(seconds // 86400)
    if days:
        return f"{days} d {hours - 24 * days} h"
    if hours:
        return f"{hours} h {minutes - 60 * hours} min"
    return f"{minutes} min" if minutes else f"{int(seconds)} s"


def audio_problem(device: DeviceState) -> str | None:
    """Why the listener hears nothing (its microphone is lost or gives only zeros), or None while it listens
    (or is not current)."""
    if device.audio is None or device.audio.state is AudioState.LISTENING or not is_current(device):
        return None
    return device.audio.error or "audio input lost"


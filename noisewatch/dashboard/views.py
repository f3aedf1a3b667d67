"""Tables behind the Live page, built from store snapshots: pure functions, no Streamlit.

Rows are plain dicts (Streamlit and pandas take them as they are); times are parsed from the
events' ISO 8601 stamps (the daemon's audio clock), never taken from the dashboard's clock.
"""

from __future__ import annotations

import datetime as dt
import zlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from noisewatch.daemon.messages import AudioState, Event, Started
from noisewatch.dashboard.store import OFFLINE, DeviceState

STATS_SHOWN = ("uptime_s", "windows", "input_overflows", "dropped_frames", "spool_depth", "model", "version")
"""fields of the daemon's ``Stats`` shown per device, in this order, when it reports them (not None)"""
UNKNOWN_STATUS = "unknown"
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


def is_offline(device: DeviceState) -> bool:
    """The listener said offline (or its Last Will did): its scores, states and health are not current."""
    return device.status == OFFLINE


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


def level_rows(devices: Mapping[str, DeviceState]) -> list[dict[str, Any]]:
    """Leq and Lmax (dBFS) of every level report, one row per device and period, oldest first."""
    rows = []
    for name, device in devices.items():
        for report in device.levels:
            time = parse_time(report.end) or parse_time(report.start)
            if time is None:
                continue
            for measure, dbfs in (("Leq", report.leq_dbfs), ("Lmax", report.lmax_dbfs)):
                rows.append({"device": name, "time": time, "measure": measure, "dbfs": dbfs})
    return sorted(rows, key=lambda row: row["time"])


def latest_scores(device: DeviceState) -> list[dict[str, Any]]:
    """The newest top-3 report as rows of label and score; empty when not published or offline."""
    if not device.scores or is_offline(device):
        return []
    return [{"label": item.label, "score": item.score} for item in device.scores[-1].top]


def active_labels(device: DeviceState) -> list[str]:
    """Labels currently ON (retained state) or with an open event; none while offline."""
    if is_offline(device):
        return []
    on = {label for label, state in device.states.items() if state == "ON"}
    on.update(notice.label for notice in device.open_events.values())
    return sorted(on)


def stats_items(device: DeviceState) -> list[tuple[str, Any]]:
    """The health fields worth a glance, in a fixed order; none while offline (they would be stale)."""
    if device.stats is None or is_offline(device):
        return []
    values = [(key, getattr(device.stats, key)) for key in STATS_SHOWN]
    return [(key, value) for key, value in values if value is not None]


def audio_problem(device: DeviceState) -> str | None:
    """Why the listener hears nothing (its microphone is lost or gives only zeros), or None while it listens
    (or is offline)."""
    if device.audio is None or device.audio.state is AudioState.LISTENING or is_offline(device):
        return None
    return device.audio.error or "audio input lost"


def status_text(device: DeviceState) -> str:
    return device.status or UNKNOWN_STATUS

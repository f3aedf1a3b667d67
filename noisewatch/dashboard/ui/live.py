"""Live page: every listener on the broker, refreshed every few seconds.

Per device: online/offline (the retained status and Last Will), the state of each label, the
newest top-3 scores and health; across devices: the event timeline and table, and the sound
level over time. Data comes from the process-wide subscriber's store; this module only draws.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

import altair as alt
import pandas as pd
import streamlit as st

from noisewatch.bundle import BundleError
from noisewatch.config import ConfigError
from noisewatch.daemon.events import LOUD
from noisewatch.dashboard import resources, views
from noisewatch.dashboard.store import DeviceState, LiveStore

REFRESH_S = 2.0
"""seconds between redraws of the live view"""
EVENTS_SHOWN = 25
"""newest events listed in the table"""
MIN_MARK_S = 1.0
"""events (and open events, until they close) are drawn at least this long on the timeline"""
ROW_HEIGHT_PX = 32
"""height of one device-and-label row on the event timeline"""
TIME_FORMAT = "%H:%M:%S"
"""24-hour clock, UTC (the daemon's stamps), on axes, tooltips and captions (seconds: minutes repeat at a close zoom)"""
STATUS_BADGES = {views.Presence.ONLINE: ":green-badge[online]", views.Presence.OFFLINE: ":red-badge[offline]",
                 views.Presence.UNKNOWN: ":gray-badge[unknown]"}


def render() -> None:
    st.title("Live")
    try:
        subscriber = resources.live_subscriber()
    except ConfigError as exc:
        st.error(f"Configuration problem: {exc}")
        return
    settings = subscriber.settings
    st.caption(f"Broker {settings.host}:{settings.port}, topics `{subscriber.filter}`")
    _live_view(subscriber.store, _known_labels())


def _known_labels() -> tuple[str, ...]:
    """The model's labels (and ``loud``): the order that fixes each label's colour."""
    try:
        return (*resources.bundle(resources.bundle_path()).labels, LOUD)
    except (BundleError, ConfigError):
        return (LOUD,)


@st.fragment(run_every=REFRESH_S)
def _live_view(store: LiveStore, known_labels: Sequence[str]) -> None:
    devices = store.snapshot()
    st.caption(f"Broker connection: {store.broker}")
    if not devices:
        st.info("Waiting for listeners to publish...")
        return
    for name, device in devices.items():
        _device_panel(name, device)
    _timeline(views.event_rows(devices), known_labels)
    unit = views.level_unit(devices)
    _levels(views.level_rows(devices, unit), unit)


def _device_panel(name: str, device: DeviceState) -> None:
    with st.container(border=True):
        presence = views.presence(device)
        st.markdown(f"#### {name} {STATUS_BADGES[presence]}")
        st.caption(_presence_text(device, presence))
        problem = views.audio_problem(device)
        if problem is not None:
            st.error(f"No audio: {problem}", icon=":material/mic_off:")
        lost = views.losses(device)
        if lost:
            st.warning("Lost for good since it started: " + ", ".join(f"{count} {words}" for words, count in lost),
                       icon=":material/warning:")
        current = views.is_current(device)
        states, scores, health = st.columns(3)
        with states:
            st.markdown("**Labels**")
            st.markdown(_state_badges(device) or ("no states yet" if current else "not shown: not current"))
            thresholds = views.threshold_items(device)
            if thresholds:
                st.caption("thresholds in force: " + ", ".join(f"{label} {value}" for label, value in thresholds))
        with scores:
            st.markdown("**Top-3 scores**")
            top = views.latest_scores(device)
            if top:
                st.table(pd.DataFrame([{"label": r["label"], "score": views.number_text(r["score"], "{:.2f}")} for r in top]), hide_index=True)
            else:
                st.caption("not published (scores.enabled in the daemon's config)" if current else "not shown: not current")
        with health:
            st.markdown("**Health**")
            items = views.stats_items(device)
            if items:
                st.caption(_report_time(device))
            st.markdown("  \n".join(f"{words}: {value}" for words, value in items)
                        or ("no stats yet" if current else "not shown: not current"))


def _presence_text(device: DeviceState, presence: views.Presence) -> str:
    """What the badge rests on, and since when (only a message that arrived live dates anything)."""
    heard = f"; last message {_clock(device.last_seen)} UTC" if device.last_seen is not None else ""
    if not device.live:
        return ("the dashboard cannot reach the broker, so it cannot tell whether the listener is there "
                f"(below: as last heard){heard}")
    if presence is views.Presence.OFFLINE:
        since = (f"since {_clock(device.status_since)} UTC" if device.status_since is not None
                 else "since before the dashboard started")
        return f"offline {since}: scores, states and health are not shown until it is back"
    if presence is views.Presence.UNKNOWN:
        return "no status published yet"
    return f"online{heard}" if heard else "online (its status was published before the dashboard started)"


def _report_time(device: DeviceState) -> str:
    """When the health report was made: a listener reports only every ``stats.interval_s`` (60 s by default), so
    its figures can be a minute old ("listening for 0 s" well after it started) and must not read as current."""
    if device.stats_at is None:
        return "report made before the dashboard subscribed (every stats.interval_s)"
    return f"report of {_clock(device.stats_at)} UTC (every stats.interval_s)"


def _state_badges(device: DeviceState) -> str:
    active = set(views.active_labels(device))
    labels = sorted(set(device.states) | active)
    return " ".join(f":red-badge[{label} ON]" if label in active else f":gray-badge[{label}]" for label in labels)


def _clock(epoch_s: float | None) -> str:
    if epoch_s is None:
        return "?"
    return dt.datetime.fromtimestamp(epoch_s, dt.timezone.utc).strftime(TIME_FORMAT)


def _timeline(rows: list[dict[str, Any]], known_labels: Sequence[str]) -> None:
    st.subheader("Events")
    if not rows:
        st.caption("no events yet")
        return
    frame = pd.DataFrame(rows)
    frame["start"], end = pd.to_datetime(frame["start"], utc=True), pd.to_datetime(frame["end"], utc=True)
    shortest = frame["start"] + pd.Timedelta(seconds=MIN_MARK_S)
    frame["end"] = end.where(end > shortest, shortest)
    frame["track"] = frame["device"] + " · " + frame["label"]
    colors = views.label_colors(known_labels, frame["label"].astype(str))
    chart = alt.Chart(frame.dropna(subset=["start"])).mark_bar().encode(
        x=_utc_axis("start"), x2="end:T",
        y=alt.Y("track:N", title=None, axis=alt.Axis(labelLimit=0)),  # whole "device · label" names
        color=alt.Color("label:N", legend=None, scale=alt.Scale(domain=list(colors), range=list(colors.values()))),
        tooltip=["device", "label", "state", "confidence", "duration_s", _utc_tooltip("start")],
    )
    st.altair_chart(chart.properties(height=alt.Step(ROW_HEIGHT_PX)), width="stretch")
    st.table(_event_table(rows[:EVENTS_SHOWN]), hide_index=True)


def _utc_axis(field: str) -> alt.X:
    """A time axis in UTC (the daemon's stamps) on a 24-hour clock, whatever the browser's time zone."""
    return alt.X(f"{field}:T", title="time (UTC)", scale=alt.Scale(type="utc", nice=True),
                 axis=alt.Axis(format=TIME_FORMAT))  # a utc scale formats with utcFormat


def _utc_tooltip(field: str) -> alt.Tooltip:
    """A time on the 24-hour clock in UTC (a utc time unit: tooltips have no scale to say so)."""
    return alt.Tooltip(f"utcyearmonthdatehoursminutesseconds({field}):T", title=f"{field} (UTC)", format=TIME_FORMAT)


def _event_table(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """The newest events as display text (st.table renders plain HTML, readable and searchable)."""
    return pd.DataFrame([{
        "start (UTC)": row["start"].strftime("%Y-%m-%d %H:%M:%S") if row["start"] else "?",
        "device": row["device"],
        "label": row["label"],
        "confidence": views.number_text(row["confidence"], "{:.2f}"),
        "duration": views.number_text(row["duration_s"], "{:.1f} s") if row["state"] == "closed" else "open",
        "peak": views.number_text(row["peak_dbfs"], "{:.1f} dBFS"),
    } for row in rows])


def _levels(rows: list[dict[str, Any]], unit: str) -> None:
    st.subheader("Sound level")
    if not rows:
        st.caption("no level reports yet (levels.interval_s in the daemon's config)")
        return
    st.caption(("A-weighted sound pressure level" if unit == "dB(A) SPL" else
                "relative to the microphone's full scale (0 dBFS: the loudest it can take; set levels.calibration_db "
                "for dB(A) SPL)") + "; per report period: Leq the energy mean, Lmax and Lmin the loudest and quietest "
               "second")
    base = alt.Chart(pd.DataFrame(rows)).encode(
        x=_utc_axis("time"), y=alt.Y("level:Q", title=unit, scale=alt.Scale(zero=False)), color="device:N",
        tooltip=["device", "measure", alt.Tooltip("level:Q", format=".1f"), _utc_tooltip("time")],
    )
    # The dashes go on the lines alone: on a line drawn with its points, the legend shows each measure as a point,
    # filled black, its dash on an invisible outline, and Leq, Lmax and Lmin look the same.
    lines = base.mark_line().encode(strokeDash=alt.StrokeDash("measure:N", legend=alt.Legend(symbolType="stroke")),
                                    detail="run:N")
    st.altair_chart(lines + base.mark_circle(), width="stretch")

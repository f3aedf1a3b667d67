"""Classify page: upload (or record) a sound and see the events the daemon would report, and what
the model hears window by window.

The recording goes through :mod:`noisewatch.dashboard.analysis` (the daemon's pipeline and detector
with the dashboard's config, and the runtime feature code with the bundle's TFLite model); this
module only collects the audio and draws the results.
"""

from __future__ import annotations

from pathlib import Path

import altair as alt
import numpy as np
import pandas as pd
import soundfile
import streamlit as st

from noisewatch import features
from noisewatch.bundle import Bundle, BundleError
from noisewatch.config import ConfigError
from noisewatch.daemon.events import LOUD
from noisewatch.daemon.messages import Event
from noisewatch.dashboard import analysis, resources, views

UPLOAD_TYPES = ["wav", "flac", "ogg"]
LABELS_PLOTTED = 5
"""labels with the highest peak score drawn over time"""


def render() -> None:
    st.title("Classify")
    try:
        bundle = resources.bundle(resources.bundle_path())
    except (BundleError, ConfigError) as exc:
        st.error(f"No usable model: {exc}")
        return
    st.caption(f"Model {bundle.ident} ({bundle.variant}), {bundle.features.window_s:g} s windows, "
               f"{bundle.features.sample_rate} Hz")
    data = _audio_input()
    if data is None:
        st.info("Upload a WAV, FLAC or OGG recording, or record one with the microphone.")
        return
    hop_s = st.slider("Seconds between windows (the charts below the events)", 0.25, 4.0, analysis.DEFAULT_HOP_S, 0.25)
    try:
        recording, scores = _analyse(data, str(bundle.path), hop_s, resources.config().audio.gate_dbfs)
        events = _events(data, str(bundle.path))
    except soundfile.LibsndfileError as exc:
        st.error(f"Cannot read this recording as WAV, FLAC or OGG audio: {exc.error_string}")
        return
    except ConfigError as exc:
        st.error(f"Configuration problem: {exc}")
        return
    if not len(recording.samples):  # a window of silence would be made up for it, and given a label
        st.warning("This recording holds no audio: nothing to classify.")
        return
    _show_events(events, recording, bundle)
    _show(bundle, recording, scores)


def _audio_input() -> bytes | None:
    """The uploaded file, else the browser recording (where this Streamlit has st.audio_input)."""
    upload, record = st.columns(2)
    with upload:
        uploaded = st.file_uploader("Recording", type=UPLOAD_TYPES)
    recorded = None
    if hasattr(st, "audio_input"):
        with record:
            recorded = st.audio_input("Record from the microphone")
    chosen = uploaded or recorded
    return chosen.getvalue() if chosen is not None else None


@st.cache_data(show_spinner="Classifying...", max_entries=8)
def _analyse(data: bytes, bundle_path: str, hop_s: float,
             gate_dbfs: float) -> tuple[analysis.Recording, analysis.WindowScores]:
    """Decoded audio and window scores, cached per recording, bundle, hop and the config's gate (its events' gate)."""
    bundle = resources.bundle(Path(bundle_path))
    recording = analysis.decode(data, bundle.features.sample_rate)
    return recording, analysis.classify(recording, bundle, hop_s, gate_dbfs)


@st.cache_data(show_spinner="Detecting events...", max_entries=8)
def _events(data: bytes, bundle_path: str) -> list[Event]:
    """The daemon's events for the recording (its pipeline, detector and this config's thresholds)."""
    bundle = resources.bundle(Path(bundle_path))
    return analysis.detect_events(analysis.decode(data, bundle.features.sample_rate), bundle, resources.config())


def _show_events(events: list[Event], recording: analysis.Recording, bundle: Bundle) -> None:
    st.subheader(f"Events: {len(events)}")
    if recording.cut_short is not None:
        st.warning(f"This file is cut short: its header promises {recording.cut_short.promised_s:.1f} s of audio, "
                   f"it holds {recording.cut_short.held_s:.1f} s (a copy or download broken off?). What follows is "
                   "of what it holds.")
    if recording.truncated:
        st.warning(f"Only the first {analysis.MAX_SECONDS:g} s were analysed.")
    st.caption("as `noisewatch run --input` reports them with this config (the daemon's detector, thresholds "
               "and smoothing); thresholds set from Home Assistant are not applied here (the Live page shows "
               "each listener's)")
    if not events:
        st.info(analysis.no_event_reason(recording, bundle.features))
        return
    frame = pd.DataFrame([{"label": e.label, "start (s)": round(e.offset_s, 2),
                           "end (s)": round(e.offset_s + e.duration_s, 2),
                           "duration (s)": round(e.duration_s, 2), "confidence": views.number_text(e.confidence, "{:.2f}"),
                           "peak (dBFS)": round(e.peak_dbfs, 1) + 0.0}
                          for e in events])  # + 0.0: no "-0.0" for a peak at full scale
    colors = views.label_colors((*bundle.labels, LOUD), frame["label"])
    chart = alt.Chart(frame).mark_bar(height=18).encode(
        x=alt.X("start (s):Q", title="time in the recording (s)", scale=alt.Scale(domain=[0, recording.duration_s])),
        x2="end (s):Q", y=alt.Y("label:N", title=None, axis=alt.Axis(labelLimit=0)),
        color=alt.Color("label:N", legend=None, scale=alt.Scale(domain=list(colors), range=list(colors.values()))),
        tooltip=list(frame.columns),
    )
    st.altair_chart(chart, width="stretch")
    st.table(frame.astype(str), hide_index=True)  # plain HTML: readable, searchable, copyable


def _show(bundle: Bundle, recording: analysis.Recording, scores: analysis.WindowScores) -> None:
    label, score = scores.summary()
    first, second, third = st.columns(3)
    first.metric("Most like (mean over its windows)", label)
    second.metric("Mean score", f"{score:.2f}")
    third.metric("Windows", f"{len(scores.starts)} over {recording.duration_s:.1f} s")
    st.subheader("Scores per window")
    chart = _score_chart(scores) if len(scores.starts) > 1 else _label_chart(scores)
    st.altair_chart(chart, width="stretch")
    st.subheader("Waveform")
    st.altair_chart(_waveform_chart(recording), width="stretch")
    settings = bundle.features
    st.subheader("Mel spectrogram (dB)")
    st.image(analysis.colorize(analysis.mel_db(recording.samples, settings)), width="stretch")
    st.subheader(f"MFCC 1-{settings.n_mfcc - 1}")
    st.caption("coefficient 0 (overall loudness) is left out so the others keep their contrast")
    st.image(analysis.colorize(features.mfcc(recording.samples, settings)[1:]), width="stretch")
    st.subheader("Windows")
    st.dataframe(_window_table(scores), hide_index=True)


def _score_chart(scores: analysis.WindowScores) -> alt.Chart:
    labels = scores.top_labels(LABELS_PLOTTED)
    index = [scores.labels.index(label) for label in labels]
    frame = pd.DataFrame(scores.scores[:, index], columns=labels).assign(start_s=scores.starts)
    long = frame.melt(id_vars="start_s", var_name="label", value_name="score")
    colors = views.label_colors((*scores.labels, LOUD))  # the events chart's: red was dog_bark there, drilling here
    return alt.Chart(long).mark_line(point=True).encode(
        x=alt.X("start_s:Q", title="window start (s)"), y=alt.Y("score:Q", scale=alt.Scale(domain=[0, 1])),
        color=alt.Color("label:N", scale=alt.Scale(domain=labels, range=[colors[label] for label in labels])),
        tooltip=["label", "start_s", alt.Tooltip("score:Q", format=".2f")],
    )


def _label_chart(scores: analysis.WindowScores) -> alt.Chart:
    """Every label's score of a single window, best first."""
    frame = pd.DataFrame({"label": scores.labels, "score": scores.scores[0]})
    return alt.Chart(frame).mark_bar().encode(
        x=alt.X("score:Q", scale=alt.Scale(domain=[0, 1])), y=alt.Y("label:N", sort="-x", title=None),
        tooltip=["label", alt.Tooltip("score:Q", format=".2f")],
    )


def _waveform_chart(recording: analysis.Recording) -> alt.Chart:
    times, low, high = analysis.envelope(recording.samples, recording.sample_rate)
    frame = pd.DataFrame({"time_s": times, "min": low, "max": high})
    return alt.Chart(frame).mark_area(opacity=0.8).encode(
        x=alt.X("time_s:Q", title="time (s)"), y=alt.Y("min:Q", title="amplitude"), y2="max:Q",
    ).properties(height=160)


def _window_table(scores: analysis.WindowScores) -> pd.DataFrame:
    top = [result.top(scores.labels) for result in scores.results]  # a quiet window: background, as classify says it
    return pd.DataFrame({
        "start (s)": scores.starts.round(2),
        "top label": [label for label, _ in top],
        "score": np.round([score for _, score in top], 3),
    })

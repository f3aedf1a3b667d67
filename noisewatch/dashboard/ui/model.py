"""Model page: what the bundle knows about itself: labels, thresholds, metrics, data and licence.

Tables come from :mod:`noisewatch.dashboard.modelview`, which reads whatever the bundle holds;
a section without data says so instead of failing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import altair as alt
import pandas as pd
import streamlit as st

from noisewatch.bundle import Bundle, BundleError
from noisewatch.config import ConfigError
from noisewatch.dashboard import modelview, resources, views

CELL_SIZE_PX = 34
"""side of one confusion-matrix cell"""


def render() -> None:
    st.title("Model")
    try:
        bundle = resources.bundle(resources.bundle_path())
    except (BundleError, ConfigError) as exc:
        st.error(f"No usable model: {exc}")
        return
    _overview(bundle)
    _soundscapes(bundle.metrics)
    _headline(bundle.metrics)
    summary = modelview.find_summary(bundle.metrics)
    _confusion(summary, modelview.confusion_image(bundle.path))
    _per_class(summary)
    _provenance(bundle.provenance)
    with st.expander("Raw metrics and provenance (JSON)"):
        st.json({"metrics": bundle.metrics, "provenance": bundle.provenance, **bundle.extra})


def _overview(bundle: Bundle) -> None:
    st.markdown(f"**{bundle.ident}** ({bundle.variant}) from `{bundle.path}`")
    s = bundle.features
    st.caption(f"{s.sample_rate} Hz, {s.window_s:g} s windows, {s.n_mels} mel bands, {s.n_mfcc} MFCC "
               f"({', '.join(s.stats)}), {len(bundle.labels)} labels; its thresholds go with scores smoothed over "
               f"{views.count(bundle.timing.smoothing_windows, 'window')} and a {bundle.timing.release_s:g} s release "
               f"(detector.smoothing_windows / release_s override them)")
    st.table(pd.DataFrame({"label": list(bundle.labels),
                           "threshold": [f"{bundle.threshold(label):.2f}" for label in bundle.labels]}), hide_index=True)


def _table(title: str, rows: list[dict[str, Any]], missing: str, caption: str | None = None) -> bool:
    """A section: its title, then ``caption`` and the rows as a table, or a line saying the bundle carries no
    ``missing``. Whether there were rows."""
    st.subheader(title)
    if not rows:
        st.caption(f"this bundle carries no {missing}")
        return False
    if caption:
        st.caption(caption)
    st.table(_display(rows), hide_index=True)
    return True


def _display(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Rows as text, numbers as the view rounded them (st.table pads every float to four decimals)."""
    return pd.DataFrame(rows).fillna(views.MISSING).astype(str)


def _soundscapes(metrics: dict[str, Any]) -> None:
    if _table("Detection on held-out soundscapes", modelview.soundscape_rows(metrics), "soundscape figures",
              modelview.soundscape_caption(metrics)):
        st.table(_display(modelview.soundscape_class_rows(metrics)), hide_index=True)


def _headline(metrics: dict[str, Any]) -> None:
    caption = f"evaluation: {metrics['evaluation']}" if "evaluation" in metrics else None
    _table("Held-out accuracy on clips: the MLP and any baselines", modelview.headline_rows(metrics),
           "evaluation figures", caption)


def _confusion(summary: Any, image: Path | None) -> None:
    st.subheader("Confusion matrix")
    if summary is None and image is not None:
        st.caption(f"from the model card ({image.name}): rows are true classes, columns predictions")
        st.image(str(image))
        return
    if summary is None:
        st.caption("this bundle carries no confusion matrix, and there is no picture of one beside it")
        return
    frame = pd.DataFrame(modelview.confusion_cells(summary))
    labels = list(summary["labels"])
    base = alt.Chart(frame).encode(
        x=alt.X("predicted:N", sort=labels), y=alt.Y("true:N", sort=labels),
    )
    cells = base.mark_rect().encode(color=alt.Color("share:Q", title="share of true class",
                                                    scale=alt.Scale(scheme="blues")),
                                    tooltip=["true", "predicted", "count"])
    counts = base.mark_text(fontSize=10).encode(
        text="count:Q", color=alt.condition("datum.share > 0.5", alt.value("white"), alt.value("black")))
    side = CELL_SIZE_PX * len(labels)
    st.altair_chart((cells + counts).properties(width=side, height=side))


def _per_class(summary: Any) -> None:
    _table("Per class", modelview.per_class_rows(summary) if summary is not None else [], "per-class figures")


def _provenance(provenance: dict[str, Any]) -> None:
    _table("Data and licence", modelview.provenance_rows(provenance), "provenance")

"""The Streamlit app: ``streamlit run noisewatch/dashboard/app.py -- --config FILE``.

Three pages: Live (MQTT), Classify (upload or record, run the bundle) and Model (the bundle's
metrics and provenance). ``noisewatch dashboard`` runs this script.
"""

from __future__ import annotations

import streamlit as st

from noisewatch.dashboard.ui import classify, live, model

st.set_page_config(page_title="noisewatch", page_icon=":ear:", layout="wide")
navigation = st.navigation([
    st.Page(live.render, title="Live", icon=":material/sensors:", url_path="live", default=True),
    st.Page(classify.render, title="Classify", icon=":material/graphic_eq:", url_path="classify"),
    st.Page(model.render, title="Model", icon=":material/analytics:", url_path="model"),
])
navigation.run()

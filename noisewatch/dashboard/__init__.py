"""The Streamlit dashboard: live view of listeners over MQTT, offline classification, model metrics.

Optional (the ``dashboard`` extra); runs on any machine that reaches the broker. The daemon never
imports this package; this package reuses the runtime modules (features, bundle, runtime, config).
"""

"""Objects shared by every browser session of one dashboard process, created once.

Streamlit reruns page scripts on every interaction; ``st.cache_resource`` keeps one config, one
MQTT subscriber and one bundle per process. The config path comes from the script arguments
(``streamlit run app.py -- --config FILE``), as ``noisewatch dashboard`` passes it.
"""

from __future__ import annotations

import sys
from pathlib import Path

import streamlit as st

from noisewatch.bundle import Bundle, default_model_path, load_bundle
from noisewatch.config import Config, load_config
from noisewatch.dashboard.launch import app_arguments
from noisewatch.dashboard.subscriber import LiveSubscriber


def config_path() -> str | None:
    return app_arguments(sys.argv[1:]).config


@st.cache_resource(show_spinner=False)
def config() -> Config:
    """The daemon config the dashboard was started with (raises ConfigError)."""
    return load_config(config_path())


@st.cache_resource(show_spinner="Connecting to the broker...")
def live_subscriber() -> LiveSubscriber:
    """The one MQTT subscriber of this process, started on first use."""
    subscriber = LiveSubscriber.from_config(config())
    subscriber.start()
    return subscriber


def bundle_path() -> Path:
    """``model.path`` of the config, else the shipped model."""
    return config().model.path or default_model_path()


@st.cache_resource(show_spinner=False)
def bundle(path: Path) -> Bundle:
    """The validated bundle (raises BundleError); the TFLite model is opened per use (not thread-safe)."""
    return load_bundle(path)

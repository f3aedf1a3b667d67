"""noisewatch: hear urban noise events on the edge and publish them over MQTT."""

__version__ = "0.1.0"

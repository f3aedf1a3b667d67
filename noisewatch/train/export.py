"""A trained Keras model as a TFLite flatbuffer: what ``noisewatch convert`` ships and what the soundscape
evaluation runs its held-out models as, so both go through the same converter settings."""

from __future__ import annotations

from typing import Any


def to_tflite(model: Any, variant: str) -> bytes:
    """Serialized TFLite flatbuffer of a Keras model (``variant``: ``float32`` or ``int8`` weights)."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if variant == "int8":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter._experimental_disable_per_channel = True  # per-tensor weights: loadable by tflite-runtime 2.14
    return converter.convert()

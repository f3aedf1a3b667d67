"""The TFLite interpreter, whichever runtime this machine has.

Preference: ``ai_edge_litert`` (LiteRT, works with numpy 2), then ``tflite_runtime`` (2.14,
numpy<2 only, cannot load per-channel dynamic-range models), then ``tensorflow.lite`` as a last
resort on training machines. The daemon never imports TensorFlow unless nothing else exists.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
import re
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

RUNTIMES = ("ai_edge_litert", "tflite_runtime", "tensorflow")
_MODULES = {
    "ai_edge_litert": "ai_edge_litert.interpreter",
    "tflite_runtime": "tflite_runtime.interpreter",
    "tensorflow": "tensorflow",
}


CHATTER = re.compile(rb"^INFO: Created TensorFlow Lite XNNPACK delegate for CPU\.\r?\n", re.MULTILINE)
"""what the runtime's C++ code prints on stderr for every model it loads: noise in every command's output"""


class RuntimeUnavailable(RuntimeError):
    """No TFLite runtime can be imported (or the one asked for is missing)."""


class ModelUnloadable(RuntimeUnavailable):
    """The runtime is there, but cannot load this model file (damaged, or not a TFLite model): the file's fault."""


def available_runtimes() -> list[str]:
    """Runtimes whose top-level package is installed, in order of preference."""
    return [name for name in RUNTIMES if importlib.util.find_spec(name) is not None]


def interpreter_class(runtime: str | None = None) -> tuple[str, Any]:
    """(runtime name, Interpreter class); ``runtime`` or $NOISEWATCH_TFLITE_RUNTIME forces one."""
    wanted = runtime or os.environ.get("NOISEWATCH_TFLITE_RUNTIME") or None
    candidates = [wanted] if wanted else available_runtimes()
    errors = []
    for name in candidates:
        if name not in _MODULES:
            raise RuntimeUnavailable(f"unknown TFLite runtime {name!r}; choose one of {', '.join(RUNTIMES)}")
        try:
            module = importlib.import_module(_MODULES[name])
        except ImportError as exc:  # a wheel that is present but broken (e.g. numpy ABI mismatch)
            errors.append(f"{name}: {exc}")
            continue
        return name, module.lite.Interpreter if name == "tensorflow" else module.Interpreter
    detail = "; ".join(errors) or "none installed"
    raise RuntimeUnavailable(f"no TFLite runtime could be loaded ({detail}); pip install ai-edge-litert")


class TFLiteModel:
    """A loaded .tflite classifier: feature vectors in, class scores out.

    Tensors are allocated once here; :meth:`predict` only copies the input and invokes.
    Not thread-safe: one instance per processing loop.
    """

    def __init__(self, path: str | Path, runtime: str | None = None, num_threads: int = 1) -> None:
        self.path = Path(path)
        self.runtime, interpreter = interpreter_class(runtime)
        try:
            with stderr_without(CHATTER):
                self._interpreter = interpreter(model_path=str(self.path), num_threads=num_threads)
                self._interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise ModelUnloadable(f"{self.path}: {self.runtime} cannot load this model: {exc}") from exc
        (inp,) = self._interpreter.get_input_details()
        (out,) = self._interpreter.get_output_details()
        self._input_index, self._output_index = inp["index"], out["index"]
        self.input_dtype = np.dtype(inp["dtype"])
        self._input_quant = inp.get("quantization", (0.0, 0))
        self._output_quant = out.get("quantization", (0.0, 0))
        self.n_features = int(inp["shape"][-1])
        self.n_classes = int(out["shape"][-1])

    def predict(self, features: np.ndarray) -> np.ndarray:
        """Scores (float32, n_classes) for one feature vector."""
        x = np.asarray(features, dtype=np.float32).reshape(1, self.n_features)
        self._interpreter.set_tensor(self._input_index, self._quantize_input(x))
        self._interpreter.invoke()
        return self._dequantize_output(self._interpreter.get_tensor(self._output_index))[0]

    def predict_batch(self, features: np.ndarray) -> np.ndarray:
        """Scores (n, n_classes) for a batch of feature vectors, one invoke each."""
        return np.stack([self.predict(row) for row in np.asarray(features)]) if len(features) else np.zeros(
            (0, self.n_classes), dtype=np.float32
        )

    def _quantize_input(self, x: np.ndarray) -> np.ndarray:
        if self.input_dtype == np.float32:
            return x
        scale, zero_point = self._input_quant
        info = np.iinfo(self.input_dtype)
        return np.clip(np.round(x / scale + zero_point), info.min, info.max).astype(self.input_dtype)

    def _dequantize_output(self, y: np.ndarray) -> np.ndarray:
        if y.dtype == np.float32:
            return y
        scale, zero_point = self._output_quant
        return ((y.astype(np.float32) - zero_point) * scale).astype(np.float32)


@contextlib.contextmanager
def stderr_without(pattern: re.Pattern[bytes]) -> Iterator[None]:
    """Hold back what is written to file descriptor 2 (C++ code included) and pass it on without ``pattern``.

    Everything else, real errors included, reaches stderr when the block ends, however it ends.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            held.seek(0)
            kept = pattern.sub(b"", held.read())
            if kept:
                os.write(2, kept)

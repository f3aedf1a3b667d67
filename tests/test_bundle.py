"""The bundle's detector timing: written and read back, refused when out of range, and used by the daemon
unless the config sets its own (the thresholds were tuned with it); its model file's checksum."""
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from noisewatch.bundle import Bundle, BundleError, DetectorTiming, default_model_path, load_bundle, write_bundle
from noisewatch.config import Config
from noisewatch.daemon.pipeline import Pipeline


def _copy(shipped: Bundle, folder: Path, timing: DetectorTiming) -> Bundle:
    return write_bundle(folder, "copy", shipped.tflite.read_bytes(), version="test", labels=list(shipped.labels),
                        features=shipped.features, thresholds=shipped.thresholds, variant=shipped.variant,
                        timing=timing)


def test_the_timing_is_written_and_read_back(tmp_path: Path) -> None:
    shipped = load_bundle(default_model_path())
    copy = _copy(shipped, tmp_path, DetectorTiming(smoothing_windows=3, release_s=2.5))
    assert copy.timing == DetectorTiming(3, 2.5)
    assert json.loads(copy.path.read_text())["timing"] == {"smoothing_windows": 3, "release_s": 2.5}


def test_the_daemon_uses_the_bundles_timing_unless_the_config_sets_one(tmp_path: Path) -> None:
    copy = _copy(load_bundle(default_model_path()), tmp_path, DetectorTiming(smoothing_windows=3, release_s=2.5))
    model = copy.open_model()
    own = Pipeline.from_config(Config(), copy, model).detector.settings
    assert (own.smoothing_windows, own.release_s) == (3, 2.5)
    config = Config.model_validate({"detector": {"smoothing_windows": 1, "release_s": 0.5}})
    overridden = Pipeline.from_config(config, copy, model).detector.settings
    assert (overridden.smoothing_windows, overridden.release_s) == (1, 0.5)


@pytest.mark.parametrize("timing,problem", [({"smoothing_windows": 0, "release_s": 1.0}, "smoothing_windows"),
                                            ({"smoothing_windows": 2.5, "release_s": 1.0}, "smoothing_windows"),
                                            ({"smoothing_windows": 2, "release_s": -1}, "release_s"),
                                            ({"smoothing_windows": 2, "hold_s": 1}, "hold_s")])
def test_a_bundle_with_a_timing_out_of_range_is_refused_naming_the_file(tmp_path: Path, timing: dict,
                                                                        problem: str) -> None:
    copy = _copy(load_bundle(default_model_path()), tmp_path, DetectorTiming())
    sidecar = json.loads(copy.path.read_text())
    copy.path.write_text(json.dumps({**sidecar, "timing": timing}))
    with pytest.raises(BundleError, match=problem) as caught:
        load_bundle(copy.path)
    assert str(copy.path) in str(caught.value)


def test_damaged_weights_are_refused_by_their_checksum_and_check_config_says_so(tmp_path: Path) -> None:
    """A flipped byte inside the weights still loads and scores: only the sidecar's checksum catches it."""
    copy = _copy(load_bundle(default_model_path()), tmp_path, DetectorTiming())
    data = bytearray(copy.tflite.read_bytes())
    middle = len(data) // 2  # in the weights: the flatbuffer's tables are at its ends
    data[middle : middle + 64] = bytes(b ^ 0xFF for b in data[middle : middle + 64])
    copy.tflite.write_bytes(bytes(data))
    copy.open_model().predict(np.zeros(copy.features.n_features, dtype=np.float32))  # it still runs
    with pytest.raises(BundleError, match="does not match the checksum"):
        load_bundle(copy.path)
    config = tmp_path / "c.yaml"
    config.write_text(f"model:\n  path: {copy.path}\n")
    result = subprocess.run([sys.executable, "-m", "noisewatch.cli", "check-config", str(config)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 78 and "does not match the checksum" in result.stderr, result.stderr


@pytest.mark.parametrize("fault", ["not_a_model", "a_label_more"])
def test_a_model_file_the_runtime_cannot_take_is_said_under_model_path_not_model_runtime(
        tmp_path: Path, fault: str) -> None:
    """Found by fault injection: a model file that is not a TFLite model (its checksum updated with it, as a
    rebuilt bundle has it), or a sidecar with a label more than the model's scores, was said under
    ``model.runtime = 'auto'``, a key the user never set, where the fault is the bundle's."""
    copy = _copy(load_bundle(default_model_path()), tmp_path / "bundle", DetectorTiming())
    sidecar = json.loads(copy.path.read_text())
    if fault == "not_a_model":
        copy.tflite.write_bytes(b"not a flatbuffer" * 64)
        sidecar["tflite_sha256"] = hashlib.sha256(copy.tflite.read_bytes()).hexdigest()
    else:
        sidecar["labels"].append("hail")
        sidecar["thresholds"]["hail"] = 0.5
    copy.path.write_text(json.dumps(sidecar))
    config = tmp_path / "c.yaml"
    config.write_text(f"model:\n  path: {copy.path}\n")
    result = subprocess.run([sys.executable, "-m", "noisewatch.cli", "check-config", str(config)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 78, result.stderr
    words = "cannot load this model" if fault == "not_a_model" else "gives 11 scores, but copy.json says 232 features and 12 labels"
    assert f"{config}:2: model.path: " in result.stderr and words in result.stderr, result.stderr
    assert "model.runtime" not in result.stderr, result.stderr


def test_a_model_file_the_runtime_cannot_take_is_not_said_under_a_model_path_the_config_does_not_set(
        tmp_path: Path) -> None:
    """Found in review: the bundle named by $NOISEWATCH_MODEL (or the shipped one), its model file one the runtime
    cannot load, was said as ``c.yaml: model.path: ...``, a key that config never set: the fault moved from one
    unset key (``model.runtime``) to another. A bundle that cannot be read there is said without a key (``prepare``),
    and so is this now."""
    copy = _copy(load_bundle(default_model_path()), tmp_path / "bundle", DetectorTiming())
    sidecar = json.loads(copy.path.read_text())
    copy.tflite.write_bytes(b"not a flatbuffer" * 64)
    sidecar["tflite_sha256"] = hashlib.sha256(copy.tflite.read_bytes()).hexdigest()
    copy.path.write_text(json.dumps(sidecar))
    config = tmp_path / "c.yaml"
    config.write_text("device_id: kitchen\n")
    result = subprocess.run([sys.executable, "-m", "noisewatch.cli", "check-config", str(config)],
                            capture_output=True, text=True, timeout=60,
                            env={**os.environ, "NOISEWATCH_MODEL": str(copy.path)})
    assert result.returncode == 78, result.stderr
    assert result.stderr.startswith(f"noisewatch: {copy.tflite}: ") and "cannot load this model" in result.stderr, \
        result.stderr
    assert "model.path" not in result.stderr and "model.runtime" not in result.stderr, result.stderr


def test_the_shipped_sidecar_carries_its_models_checksum() -> None:
    sidecar = json.loads(default_model_path().read_text())
    assert len(sidecar["tflite_sha256"]) == 64  # and load_bundle checks it: every test that loads it


def _damaged_sidecar(tmp_path: Path, damage: str) -> Path:
    """A copy of the shipped bundle with one fault a hand edit, a broken copy or a failing card leaves in it."""
    copy = _copy(load_bundle(default_model_path()), tmp_path / "bundle", DetectorTiming())
    sidecar = json.loads(copy.path.read_text())
    if damage == "name_missing":
        del sidecar["name"]
    elif damage == "labels_null":
        sidecar["labels"] = None
    elif damage == "tflite_null":
        sidecar["tflite"] = None
    elif damage == "sample_rate_a_string":
        sidecar["features"]["sample_rate"] = "22050"
    elif damage.startswith("fmax_a_"):  # a setting whose default is null: from_dict once looked at none of them
        sidecar["features"]["fmax"] = {"fmax_a_string": "8000", "fmax_a_boolean": True, "fmax_a_word": "nyquist"}[damage]
    elif damage.startswith("threshold_"):  # float() took true as 1.0: the label silently off
        sidecar["thresholds"]["siren"] = {"threshold_true": True, "threshold_a_string": "0.5",
                                          "threshold_above_one": 1.5, "threshold_of_no_label": 0.5}[damage]
        if damage == "threshold_of_no_label":
            sidecar["thresholds"]["hail"] = sidecar["thresholds"].pop("siren")
    elif damage == "model_file_unreadable":  # root reads a file of mode 000: an I/O error stands in for it
        sidecar["tflite"] = "/proc/self/mem"  # a regular file whose read fails (EIO)
    else:  # thresholds, timing or metrics given as a JSON array
        sidecar[damage.removesuffix("_a_list")] = [0.5]
    copy.path.write_text(json.dumps(sidecar))
    return copy.path


@pytest.mark.parametrize("damage,words", [
    ("name_missing", "missing key name"), ("labels_null", "labels must be a JSON array, not null"),
    ("tflite_null", "tflite must be a JSON string, not null"),
    ("thresholds_a_list", "thresholds must be a JSON object, not an array"),
    ("timing_a_list", "timing must be a JSON object, not an array"),
    ("metrics_a_list", "metrics must be a JSON object, not an array"),
    ("sample_rate_a_string", "features.sample_rate must be a whole number, not '22050'"),
    ("fmax_a_string", "features.fmax must be a number or null, not '8000'"),
    ("fmax_a_boolean", "features.fmax must be a number or null, not True"),
    ("fmax_a_word", "features.fmax must be a number or null, not 'nyquist'"),
    ("threshold_true", "thresholds.siren must be a number in 0..1, not True"),
    ("threshold_a_string", "thresholds.siren must be a number in 0..1, not '0.5'"),
    ("threshold_above_one", "thresholds.siren must be a number in 0..1, not 1.5"),
    ("threshold_of_no_label", "thresholds name 'hail', not one of the model's labels"),
    ("model_file_unreadable", "model file /proc/self/mem cannot be read (Input/output error)")])
def test_check_config_and_run_refuse_a_damaged_sidecar_with_the_same_line_naming_the_key(
        tmp_path: Path, damage: str, words: str) -> None:
    """Found by fault injection: thresholds given as a JSON array, or a model file that cannot be read, gave a
    traceback and exit 1 (systemd restarts that, where 78 tells it not to); a missing key said only "invalid
    bundle: 'name'", and keys of the wrong JSON type Python's own words ("argument after ** must be a mapping",
    "can't multiply sequence by non-int of type 'float'"). An ``fmax`` (default null) of the wrong type was taken
    as it was: a word failed at the first window with a traceback, ``true`` made the top mel band edge 1 Hz."""
    sidecar = _damaged_sidecar(tmp_path, damage)
    config = tmp_path / "c.yaml"
    config.write_text(f"model:\n  path: {sidecar}\n")
    audio = tmp_path / "quiet.wav"
    sf.write(str(audio), np.zeros(22050, np.float32), 22050)
    said = []
    for command in (["check-config", str(config)], ["run", "--config", str(config), "--input", str(audio)]):
        result = subprocess.run([sys.executable, "-m", "noisewatch.cli", *command], capture_output=True, text=True,
                                timeout=60)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 78 and len(lines) == 1, result.stderr
        said.append(lines[0])
    assert said[0] == said[1] and f"{sidecar}: invalid bundle: {words}" in said[0], said

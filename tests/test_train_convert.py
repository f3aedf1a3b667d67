"""End to end in seconds: tiny generated datasets -> train -> convert float32 + int8 -> load -> evaluate."""

from __future__ import annotations

import json
import subprocess
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
from test_datasets import make_esc50, make_folder, make_urbansound, tone

from noisewatch import cli, convert
from noisewatch.bundle import DetectorTiming, load_bundle
from noisewatch.features import clip_features
from noisewatch.runtime import available_runtimes
from noisewatch.train.datasets import BACKGROUND, LABELS
from noisewatch.train.scene_eval import THRESHOLD_GRID, TIMINGS

# the module's training fixture takes 1.5-3 minutes, more beside the suite's other worker on a loaded machine
pytestmark = pytest.mark.timeout(900)
EXTRA_LABEL = "doorbell"
RUNTIMES = available_runtimes()


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Train a small MLP on all three layouts and convert it to both variants."""
    root = tmp_path_factory.mktemp("e2e")
    paths = {
        "us8k": make_urbansound(root / "us8k"),
        "esc50": make_esc50(root / "esc50"),
        "folder": make_folder(root / "mine", {EXTRA_LABEL: 12, BACKGROUND: 13}),
        "train": root / "train",
        "models": root / "models",
    }
    assert cli.main([
        "train", "--urbansound", str(paths["us8k"]), "--esc50", str(paths["esc50"]), "--folder", str(paths["folder"]),
        "--out", str(paths["train"]), "--epochs", "40", "--hidden", "64,64", "--dropout", "0.1",
        "--quiet", "6", "--workers", "1", "--augment", "1", "--ensemble", "2", "--stats", "mean,std,max,peak",
        "--peak-s", "0.5", "--frames", "inner", "--top-db", "none",
        "--scene-mix", "1", "--speed-perturb", "0.9,1.1", "--min-threshold", "0.5",
    ]) == 0
    assert cli.main(["convert", "--train-dir", str(paths["train"]), "--out", str(paths["models"]), "--name", "tiny",
                     "--version", "0.1-test"]) == 0
    return paths


def test_training_writes_fold_wise_report(trained: dict[str, Path]) -> None:
    report = json.loads((trained["train"] / "report.json").read_text())
    assert set(report["models"]) == {"mlp", "mlp_thresholded", "random_forest", "knn"}
    for block in report["models"].values():
        assert set(block["folds"]) == {"1", "2"}
        assert sum(fold["n"] for fold in block["folds"].values()) == block["pooled"]["n"]
    assert (trained["train"] / "confusion.png").stat().st_size > 10_000
    assert report["models"]["mlp"]["pooled"]["accuracy"] > 0.8
    assert report["model_settings"]["scene_mix"] == 1
    features = json.loads((trained["models"] / "tiny.json").read_text())["features"]
    assert features["stats"] == ["mean", "std", "max", "peak"] and features["peak_s"] == 0.5
    assert features["center"] is False and features["top_db"] is None
    assert report["model_settings"]["speed_perturb"] == [0.9, 1.1]
    # clip-picked thresholds keep the floor; those picked on soundscapes (events) come from their own grid
    picked_on_events = report.get("soundscapes", {}).get("thresholds", {}).get("final", {})
    assert report["model_settings"]["min_threshold"] == 0.5
    assert all(value >= 0.5 for label, value in report["thresholds"].items() if label not in picked_on_events)
    assert all(report["thresholds"][label] == value and value in THRESHOLD_GRID
               for label, value in picked_on_events.items())
    assert len(list((trained["train"] / "cache").glob("features-*.npz"))) == 4  # plain, 1 augmented, 2 speeds
    assert len(list((trained["train"] / "cache").glob("scenemix-*.npz"))) == 1
    scenes = report["scenes"]
    assert set(scenes) == {"1", "2", "pooled"}
    assert scenes["pooled"]["n_events"] == scenes["1"]["n_events"] + scenes["2"]["n_events"] > 0
    assert 0.0 <= scenes["pooled"]["event_recall"] <= 1.0
    thresholded = report["scenes_thresholded"]
    assert set(thresholded) == {"1", "2", "pooled"} and thresholded["pooled"]["n_events"] == scenes["pooled"]["n_events"]
    # a window's class passes its threshold or becomes background: never more alarms than at argmax
    assert thresholded["pooled"]["quiet_false_alarm_windows"] <= scenes["pooled"]["quiet_false_alarm_windows"]
    assert "held-out scenes" in (trained["train"] / "report.md").read_text()
    assert "the daemon's per-class thresholds" in (trained["train"] / "report.md").read_text()


@pytest.mark.parametrize("runtime", RUNTIMES)
@pytest.mark.parametrize("name,variant", [("tiny", "int8"), ("tiny-float32", "float32")])
def test_bundles_load_and_classify_with_every_runtime(trained: dict[str, Path], name: str, variant: str,
                                                       runtime: str) -> None:
    bundle = load_bundle(trained["models"] / f"{name}.json")
    assert bundle.variant == variant and bundle.ident == f"{name}@0.1-test"
    assert list(bundle.labels) == [*LABELS, EXTRA_LABEL]
    assert bundle.provenance["folds"] == [1, 2] and "CC BY-NC 3.0" in bundle.provenance["licence"]
    dog = clip_features(tone(LABELS.index("dog_bark"), 1.3, seed=77), bundle.features)
    doorbell = clip_features(tone(12, 1.3, seed=78), bundle.features)
    model = bundle.open_model(runtime=runtime)
    assert bundle.labels[int(np.argmax(model.predict(dog)))] == "dog_bark"
    assert bundle.labels[int(np.argmax(model.predict(doorbell)))] == EXTRA_LABEL


def test_int8_bundles_load_in_tflite_runtime_2_14(trained: dict[str, Path], repo_root: Path) -> None:
    """README: "the shipped int8 model is quantised per tensor so that 2.14 can load it": so is every converted
    one (per channel, 2.14 refuses the file: "Registration failed"). In the venv tests/test_other_runtimes.py
    runs the daemon in."""
    from test_other_runtimes import tflite_214_python

    bundle = load_bundle(trained["models"] / "tiny.json")
    dog = clip_features(tone(LABELS.index("dog_bark"), 1.3, seed=77), bundle.features)
    probe = ("import sys, numpy as np, tflite_runtime.interpreter as t\n"
             "it = t.Interpreter(model_path=sys.argv[1]); it.allocate_tensors()\n"
             "it.set_tensor(it.get_input_details()[0]['index'], np.array([sys.argv[2:]], dtype=np.float32)); it.invoke()\n"
             "print(int(np.argmax(it.get_tensor(it.get_output_details()[0]['index']))))")
    done = subprocess.run([str(tflite_214_python(repo_root)), "-c", probe,
                           str(trained["models"] / "tiny.tflite"), *map(repr, dog.tolist())],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert bundle.labels[int(done.stdout)] == "dog_bark"


def test_bundle_metrics_are_fold_wise_with_accuracy_per_source(trained: dict[str, Path]) -> None:
    metrics = load_bundle(trained["models"] / "tiny.json").metrics
    assert metrics["evaluation"] == "leave-one-fold-out"
    assert set(metrics["scenes"]) == set(metrics["scenes_thresholded"]) == {"1", "2", "pooled"}
    assert set(metrics["mlp"]) == {"1", "2", "pooled"}
    by_source = metrics["mlp"]["pooled"]["accuracy_by_dataset"]
    assert set(by_source) == {"urbansound8k", "esc50", "folder", "quiet"}
    assert all(0.0 <= value <= 1.0 for value in by_source.values())


def test_the_bundle_carries_the_timing_its_thresholds_were_picked_with(trained: dict[str, Path]) -> None:
    report = json.loads((trained["train"] / "report.json").read_text())
    picked = report.get("soundscapes", {}).get("timing", {}).get("final")
    assert report["timing"] == (picked or asdict(DetectorTiming()))
    assert DetectorTiming(**report["timing"]) in TIMINGS
    assert load_bundle(trained["models"] / "tiny.json").timing == DetectorTiming(**report["timing"])


def test_int8_bundle_is_smaller(trained: dict[str, Path]) -> None:
    int8 = (trained["models"] / "tiny.tflite").stat().st_size
    assert int8 < 0.5 * (trained["models"] / "tiny-float32.tflite").stat().st_size


def test_evaluate_json_on_urbansound_layout(trained: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    csv_path = trained["train"] / "predictions.csv"
    argv = ["evaluate", "--model", str(trained["models"] / "tiny.json"), "--dataset", str(trained["us8k"]),
            "--folds", "2", "--json", "--predictions", str(csv_path)]
    assert cli.main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["n"] == 20 and result["labels"][-1] == EXTRA_LABEL
    assert result["accuracy"] > 0.8
    assert len(csv_path.read_text().splitlines()) == 21


def test_convert_refuses_a_disagreeing_model(trained: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(convert.MIN_AGREEMENT, "int8", 1.01)
    out = trained["train"] / "refused"
    argv = ["convert", "--train-dir", str(trained["train"]), "--out", str(out), "--variant", "int8"]
    assert cli.main(argv) == 1
    assert not out.exists() or not list(out.iterdir())


@pytest.mark.parametrize("option,value", [("--speed-perturb", "0.9,1.0"), ("--speed-perturb", "0,1.1"),
                                          ("--speed-perturb", "0.9,,1.1"), ("--min-threshold", "0.99"),
                                          ("--peak-s", "0"), ("--peak-s", "inf"), ("--peak-s", "nan"),
                                          ("--top-db", "0"), ("--top-db", "loud"), ("--frames", "edge"),
                                          ("--top-db-per", "bin")])
def test_bad_training_options_are_refused_by_name(option: str, value: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stop:
        cli.build_parser().parse_args(["train", option, value])
    assert stop.value.code == 2 and option in capsys.readouterr().err


@pytest.mark.parametrize("stats,peak_s,named", [("mean,std", "0.5", "--peak-s"), ("mean,peak", "9", "peak_s"),
                                               ("mean,loudest", "0.5", "loudest")])
def test_training_settings_that_do_not_fit_together_are_refused_before_any_work(
        stats: str, peak_s: str, named: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "train"
    assert cli.main(["train", "--stats", stats, "--peak-s", peak_s, "--out", str(out)]) == 2
    assert named in capsys.readouterr().err and not out.exists()


def test_a_per_frame_clamp_without_a_clamp_is_refused_before_any_work(tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "train"
    assert cli.main(["train", "--top-db", "none", "--top-db-per", "frame", "--out", str(out)]) == 2
    assert "needs a top_db" in capsys.readouterr().err and not out.exists()


def test_ensemble_scores_are_the_mean_of_its_members() -> None:
    from noisewatch.train.pipeline import ModelSettings, average_members, build_mlp

    rng = np.random.default_rng(3)
    x = rng.standard_normal((40, 6)).astype(np.float32)
    members = [build_mlp(x, 3, ModelSettings(hidden=(8,))) for _ in range(3)]
    expected = np.mean([member.predict(x, verbose=0) for member in members], axis=0)
    scores = average_members(members, 6).predict(x, verbose=0)
    np.testing.assert_allclose(scores, expected, atol=1e-6)
    np.testing.assert_allclose(scores.sum(axis=1), 1.0, atol=1e-5)

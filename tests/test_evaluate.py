"""``noisewatch evaluate`` on the shipped bundle and real clips; metrics agree with scikit-learn."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support

from noisewatch import cli
from noisewatch.audio_file import load_audio
from noisewatch.bundle import default_model_path, load_bundle
from noisewatch.features import clip_features
from noisewatch.train import metrics
from noisewatch.train.datasets import US8K_CSV

PER_CLASS = 3
KNOWN_DOG_BARK = "UrbanSound8K/audio/fold2/100652-3-0-0.flac"


def urbansound_subset(shared: Path, out: Path) -> Path:
    """An UrbanSound8K-layout folder listing PER_CLASS clips per class and fold, linked to the real files."""
    source = shared / "UrbanSound8K"
    with (source / US8K_CSV).open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    kept, seen = [], {}
    for row in rows:
        key = (row["class"], row["fold"])
        if seen.get(key, 0) < PER_CLASS:
            seen[key] = seen.get(key, 0) + 1
            kept.append(row)
            link = out / "audio" / f"fold{row['fold']}" / row["slice_file_name"]
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(source / "audio" / f"fold{row['fold']}" / row["slice_file_name"])
    (out / US8K_CSV).parent.mkdir(parents=True)
    with (out / US8K_CSV).open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(kept)
    return out


@pytest.mark.shared_data
def test_evaluate_shipped_bundle_json_is_consistent(shared_data: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    dataset = urbansound_subset(shared_data, tmp_path / "subset")
    predictions = tmp_path / "predictions.csv"
    argv = ["evaluate", "--model", str(default_model_path()), "--dataset", str(dataset), "--json",
            "--folds", "1,2", "--predictions", str(predictions)]
    assert cli.main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    assert {"accuracy", "macro_f1", "per_class", "confusion", "labels", "n"} <= set(result)
    n = result["n"]
    assert n == 10 * 2 * PER_CLASS
    assert np.asarray(result["confusion"]).sum() == n
    assert sum(row["support"] for row in result["per_class"].values()) == n
    with predictions.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == n
    assert result["accuracy"] == pytest.approx(np.mean([r["true"] == r["predicted"] for r in rows]), abs=1e-4)
    present = [row["f1"] for row in result["per_class"].values() if row["support"]]
    assert result["macro_f1"] == pytest.approx(np.mean(present), abs=1e-3)


@pytest.mark.shared_data
def test_known_clip_maps_to_its_label(shared_data: Path) -> None:
    """Guards the label order: output index i of the model is bundle.labels[i]."""
    bundle = load_bundle(default_model_path())
    scores = bundle.open_model().predict(clip_features(load_audio(shared_data / KNOWN_DOG_BARK, 22050), bundle.features))
    assert bundle.labels[int(np.argmax(scores))] == "dog_bark"


def test_metrics_match_scikit_learn() -> None:
    rng = np.random.default_rng(5)
    labels = [f"c{i}" for i in range(6)]
    y_true = rng.integers(0, 5, 300)  # class c5 never occurs
    y_pred = np.where(rng.random(300) < 0.6, y_true, rng.integers(0, 6, 300))
    result = metrics.summary(y_true, y_pred, labels, negative="c0")
    assert result["accuracy"] == pytest.approx(accuracy_score(y_true, y_pred), abs=1e-4)
    assert result["macro_f1"] == pytest.approx(f1_score(y_true, y_pred, average="macro", labels=range(5)), abs=1e-4)
    np.testing.assert_array_equal(result["confusion"], confusion_matrix(y_true, y_pred, labels=range(6)))
    precision, recall, f1, support = precision_recall_fscore_support(y_true, y_pred, labels=range(6), zero_division=0)
    for i, label in enumerate(labels):
        row = result["per_class"][label]
        assert (row["precision"], row["recall"], row["f1"]) == pytest.approx((precision[i], recall[i], f1[i]), abs=1e-4)
        assert row["support"] == support[i]
    negatives = y_true == 0
    assert result["background_false_positive_rate"] == pytest.approx(np.mean(y_pred[negatives] != 0), abs=1e-4)

"""Held-out accuracy of one MLP per seed for sets of feature statistics (docs/model-experiments.md, "Spectral shape").

    .venv/bin/python bench/feature_ablation.py --data ../shared/data \
        --stats mean,std,modulation,periodicity --stats mean,std,modulation,periodicity,spectral_shape

Leave-one-fold-out on the training clips of ``noisewatch train`` (UrbanSound8K folds, ESC-50 and the
synthetic quiet clips as background) with the shipped model's speed copies and network, but one MLP
instead of five, no scene-mix and background weight 3 (the statistics were chosen with it; the shipped model
then took 5, see the model card), so each seed takes about a minute. Prints per seed, then the
mean over seeds and the accuracy of the seeds' averaged scores (what an ensemble of them would get):
pooled clip accuracy at argmax, on UrbanSound8K clips only, and the background false-positive rate.

The mel-dB frames of every clip and speed copy are computed once (about 2 minutes) and cached (``--cache``,
1.8 GB): every statistic is then ``features.summarize`` of the same frames, as in training and the daemon.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing
import os
from pathlib import Path

import numpy as np

from noisewatch.features import FeatureSettings, fit_to_window, frame_mel_db, signal_frames, summarize
from noisewatch.train.datasets import BACKGROUND, Clip, label_order, load_clip
from noisewatch.train.featurize import change_speed
from noisewatch.train.pipeline import ModelSettings, collect_clips, fit_mlp

SPEEDS = (1.0, 0.71, 0.77, 0.84, 0.92, 1.09, 1.19, 1.3, 1.41)
"""The clip itself, then the shipped model's --speed-perturb factors."""
NETWORK = ModelSettings(hidden=(256, 256), dropout=0.3, epochs=40, background_weight=3.0)
MEL = FeatureSettings()


def mel_frames(clip: Clip) -> np.ndarray:
    """(speeds, frames, n_mels) pre-clamp mel dB of one clip's fitted window and its speed copies."""
    audio = load_clip(clip, MEL.sample_rate)
    windows = (fit_to_window(change_speed(audio, factor, MEL.sample_rate), MEL) for factor in SPEEDS)
    return np.stack([frame_mel_db(signal_frames(window, MEL), MEL) for window in windows])


def cached_mel(clips: list[Clip], cache: Path, workers: int) -> np.ndarray:
    """(clips, speeds, frames, n_mels) float32, memory-mapped; rebuilt unless the cache was made for exactly
    these clips and speeds (its ``.json`` beside it says), written to a temporary file and renamed."""
    made_for = {"clips": [clip.key for clip in clips], "speeds": list(SPEEDS), "settings": MEL.to_dict()}
    stamp = cache.with_suffix(".json")
    if not (cache.is_file() and stamp.is_file() and json.loads(stamp.read_text()) == made_for):
        cache.parent.mkdir(parents=True, exist_ok=True)
        partial = cache.with_name(cache.name + ".partial.npy")
        shape = (len(clips), len(SPEEDS), MEL.frames_per_window(), MEL.n_mels)
        out = np.lib.format.open_memmap(partial, mode="w+", dtype=np.float32, shape=shape)
        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            for row, frames in enumerate(pool.imap(mel_frames, clips, chunksize=16)):
                out[row] = frames
        out.flush()
        del out
        partial.replace(cache)
        stamp.write_text(json.dumps(made_for))
    return np.load(cache, mmap_mode="r")


def held_out_scores(x: np.ndarray, y: np.ndarray, folds: np.ndarray, n_classes: int, background: int,
                    seed: int) -> np.ndarray:
    """Scores of each clip (its unsped window) from the MLP trained on the other folds' clips and copies."""
    scores = np.zeros((len(y), n_classes), np.float32)
    model = dataclasses.replace(NETWORK, seed=seed)
    for fold in np.unique(folds):
        test = folds == fold
        train_x = x[~test].reshape(-1, x.shape[2])
        mlp = fit_mlp(train_x, np.repeat(y[~test], x.shape[1]), n_classes, model, background)
        scores[test] = mlp.predict(x[test, 0], verbose=0)
    return scores


def figures(scores: np.ndarray, y: np.ndarray, us8k: np.ndarray, background: int) -> dict[str, float]:
    """The model card's three columns, at argmax."""
    predicted = scores.argmax(axis=1)
    return {
        "accuracy": round(float(np.mean(predicted == y)), 4),
        "us8k_accuracy": round(float(np.mean(predicted[us8k] == y[us8k])), 4),
        "background_fp": round(float(np.mean(predicted[y == background] != background)), 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="../shared/data", help="folder holding UrbanSound8K/ and ESC-50/")
    parser.add_argument("--stats", action="append", required=True, help="comma-separated statistics (repeatable)")
    parser.add_argument("--seeds", default="0,1,2,3")
    parser.add_argument("--cache", default="build/ablation/mel.npy")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    data = Path(args.data)
    clips = collect_clips(argparse.Namespace(urbansound=str(data / "UrbanSound8K"), esc50=str(data / "ESC-50"),
                                             folder=[], background=None, folds=None, quiet=240, seed=0))
    labels = label_order(clips)
    y = np.array([labels.index(clip.label) for clip in clips])
    folds = np.array([clip.fold for clip in clips])
    us8k = np.array([clip.dataset == "urbansound8k" for clip in clips])
    background = labels.index(BACKGROUND)
    mel = cached_mel(clips, Path(args.cache), args.workers)
    for stats in args.stats:
        settings = FeatureSettings(stats=tuple(stats.split(",")))
        x = np.stack([[summarize(np.asarray(per_speed), settings) for per_speed in per_clip] for per_clip in mel])
        runs = []
        for seed in (int(s) for s in args.seeds.split(",")):
            runs.append(held_out_scores(x, y, folds, len(labels), background, seed))
            print(json.dumps({"stats": stats, "seed": seed, **figures(runs[-1], y, us8k, background)}), flush=True)
        each = [figures(scores, y, us8k, background) for scores in runs]
        mean = {key: round(float(np.mean([f[key] for f in each])), 4) for key in each[0]}
        print(json.dumps({"stats": stats, "seeds": args.seeds, "mean": mean,
                          "averaged_scores": figures(np.mean(runs, axis=0), y, us8k, background)}), flush=True)


if __name__ == "__main__":
    main()

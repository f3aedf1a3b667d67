"""`noisewatch classify`: per-window labels and a per-file verdict, through the same path as training."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr
from daemon_run import recognised_clips

from noisewatch.audio_file import load_audio
from noisewatch.bundle import default_model_path, load_bundle
from noisewatch.classify import WindowResult, _file_report, classify_audio, summarize
from noisewatch.cli import main as cli_main
from noisewatch.dc_offset import remove_offset
from noisewatch.features import clip_features, clip_windows

HOP_S = 2.0


@pytest.fixture(scope="module")
def bundle_and_model():
    bundle = load_bundle(default_model_path())
    return bundle, bundle.open_model()


def run_json(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict]:
    code = cli_main(["classify", "--json", *args])
    out = capsys.readouterr().out
    return code, json.loads(out) if out.strip() else {}


def test_bundled_scene_is_cut_into_windows_with_a_verdict(repo_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    scene = repo_root / "samples" / "scene.flac"
    code, report = run_json(capsys, str(scene))
    assert code == 0
    (result,) = report["files"]
    bundle = load_bundle(default_model_path())
    assert report["model"] == bundle.ident
    duration_s = sf.info(str(scene)).duration
    expected = clip_windows(np.zeros(int(duration_s * 22050), np.float32), bundle.features, HOP_S)
    assert [w["start_s"] for w in result["windows"]] == [round(start, 3) for start, _ in expected]
    assert all(w["label"] in bundle.labels and 0.0 <= w["score"] <= 1.0 for w in result["windows"])
    assert result["label"] in bundle.labels and 0.0 <= result["score"] <= 1.0


@pytest.mark.parametrize("hop_s", [0.5, HOP_S])
def test_classify_cuts_the_windows_the_daemon_cuts(repo_root: Path, hop_s: float) -> None:
    """Found by a code review: classify cut a window every round(hop_s x rate) samples (11025 at 0.5 s), the daemon
    every whole number of STFT hops (11264): 1.3 s apart after a minute, so the dashboard's window scores and its
    events (the daemon's own pipeline) were of other windows. Now the same windows, and one more that ends with
    the recording."""
    from noisewatch.daemon.stream import StreamingFeatures

    settings = load_bundle(default_model_path()).features
    audio, rate = sf.read(repo_root / "samples" / "scene.flac", dtype="float32")
    audio = soxr.resample(audio, rate, settings.sample_rate).astype(np.float32)
    daemon = StreamingFeatures(settings, hop_s).push(audio)
    ours = clip_windows(audio, settings, hop_s)
    assert len(daemon) > 3 and len(ours) in (len(daemon), len(daemon) + 1), (len(ours), len(daemon))
    for window, (start_s, samples) in zip(daemon, ours):
        assert start_s == window.start_sample / settings.sample_rate and np.array_equal(samples, window.samples)


def test_a_clip_shorter_than_the_window_is_one_window_as_in_training(tmp_path: Path, bundle_and_model) -> None:
    bundle, model = bundle_and_model
    rng = np.random.default_rng(1)
    short = (0.2 * np.sin(2 * np.pi * 700 * np.arange(15000) / 22050) + 0.01 * rng.standard_normal(15000)).astype(np.float32)
    path = tmp_path / "short.wav"
    sf.write(path, short, 22050, subtype="FLOAT")
    results = classify_audio(load_audio(path, bundle.features.sample_rate), bundle, model, HOP_S)
    assert len(results) == 1 and results[0].start_s == 0.0
    np.testing.assert_allclose(results[0].scores, model.predict(clip_features(remove_offset(short, 22050), bundle.features)),
                               atol=1e-6)


def test_other_rates_and_stereo_are_resampled_to_the_model_rate(tmp_path: Path, bundle_and_model) -> None:
    bundle, _ = bundle_and_model
    t = np.arange(48000 * 3) / 48000
    tone = 0.3 * np.sin(2 * np.pi * 440 * t)
    path = tmp_path / "stereo48k.wav"
    sf.write(path, np.stack([tone, tone], axis=1).astype(np.float32), 48000, subtype="FLOAT")
    audio = load_audio(path, bundle.features.sample_rate)
    assert abs(len(audio) - 3 * 22050) <= 1
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert np.sqrt(np.mean(audio[22050:44100] ** 2)) == pytest.approx(0.3 / np.sqrt(2), rel=0.01)


def test_summary_is_the_label_with_the_highest_mean_score(bundle_and_model) -> None:
    bundle, _ = bundle_and_model
    n = len(bundle.labels)
    a, b = np.zeros(n, np.float32), np.zeros(n, np.float32)
    a[0], a[1], b[1] = 0.6, 0.4, 0.9  # label 0 wins one window, label 1 wins on average
    assert summarize([WindowResult(0.0, a), WindowResult(2.0, b)], bundle.labels) == {"label": bundle.labels[1], "score": 0.65}


@pytest.mark.shared_data
def test_real_clips_get_their_labels(shared_data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Clips the model places correctly on their own keep that label through the command line."""
    clips = {label: recognised_clips(shared_data, label, 1)[0] for label in ("siren", "dog_bark")}
    code, report = run_json(capsys, *map(str, clips.values()))
    assert code == 0
    assert [r["label"] for r in report["files"]] == list(clips)


def test_unreadable_file_is_reported_and_the_rest_still_classified(repo_root: Path, tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "not-audio.wav"
    bad.write_text("hello")
    code = cli_main(["classify", str(bad), str(repo_root / "samples" / "scene.flac")])
    captured = capsys.readouterr()
    assert code == 1
    assert f"{bad}: cannot read audio" in captured.err
    assert "scene.flac:" in captured.out


def test_missing_bundle_exits_78(tmp_path: Path, repo_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = cli_main(["classify", "--model", str(tmp_path / "nope.json"), str(repo_root / "samples" / "scene.flac")])
    assert code == 78
    assert "model bundle not found" in capsys.readouterr().err


def test_nan_infinite_and_absurd_samples_are_read_as_silence_and_said(
        repo_root: Path, tmp_path: Path, bundle_and_model, caplog: pytest.LogCaptureFixture) -> None:
    """Found by fault injection: a float recording with NaN or infinite samples (a broken file) gave every window
    holding one a fixed "children_playing 0.87", whatever it held (the siren at 2 s of the scene was lost), with
    numpy's RuntimeWarnings, in classify and on the dashboard's Classify page; the daemon reads such samples, and
    finite ones beyond 1000 times full scale, as silence and counts them."""
    bundle, model = bundle_and_model
    audio, rate = sf.read(str(repo_root / "samples" / "scene.flac"), dtype="float32")
    broken, silenced = audio[: 8 * rate].copy(), audio[: 8 * rate].copy()
    for part, value in ((slice(1000, 5000), np.nan), (slice(30000, 30100), np.inf), (slice(50000, 50010), 1e20)):
        broken[part], silenced[part] = value, 0.0
    sf.write(tmp_path / "broken.wav", broken, rate, subtype="FLOAT")
    sf.write(tmp_path / "silenced.wav", silenced, rate, subtype="FLOAT")
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        got = classify_audio(load_audio(tmp_path / "broken.wav", rate), bundle, model, HOP_S)
    want = classify_audio(load_audio(tmp_path / "silenced.wav", rate), bundle, model, HOP_S)
    np.testing.assert_allclose([r.scores for r in got], [r.scores for r in want], atol=1e-6)
    said = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(said) == 1 and "broken.wav" in said[0] and "4110 " in said[0], said


def test_a_file_that_holds_no_audio_is_said_and_given_no_label(repo_root: Path, tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    """Found by fault injection: a WAV with a header and not one sample (a recording stopped at once) was classified
    as "car_horn (0.99)", one window of silence made up for it; the daemon says such a file "holds no audio"."""
    empty = tmp_path / "empty.wav"
    sf.write(empty, np.zeros(0, np.float32), 22050)
    code = cli_main(["classify", str(empty), str(repo_root / "samples" / "scene.flac")])
    captured = capsys.readouterr()
    assert code == 1
    assert captured.err.strip().splitlines() == [f"noisewatch: {empty}: holds no audio, nothing to classify"]
    assert "empty.wav" not in captured.out and "scene.flac:" in captured.out


def test_windows_below_the_daemon_s_gate_are_background_not_classified(tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """Found by fault injection: a file of digital silence was classified as "car_horn (0.99)" (the model never heard
    silence in training), by ``classify`` and the dashboard, where the daemon does not classify a window quieter than
    its gate and counts it as background. Silence, and hiss below the gate, now come out as the daemon hears them;
    one loud second makes its windows classified again."""
    rate = 22050
    hiss = np.random.default_rng(3).standard_normal(6 * rate).astype(np.float32) * 10 ** (-85 / 20)
    loud = hiss.copy()
    loud[4 * rate : 5 * rate] = 0.3 * np.sin(2 * np.pi * 900 * np.arange(rate) / rate)
    for name, audio in (("zeros", np.zeros(6 * rate, np.float32)), ("hiss", hiss), ("loud", loud)):
        sf.write(tmp_path / f"{name}.wav", audio, rate, subtype="FLOAT")
    code = cli_main(["classify", "--json", *(str(tmp_path / f"{name}.wav") for name in ("zeros", "hiss", "loud"))])
    assert code == 0
    zeros, hiss_report, loud_report = json.loads(capsys.readouterr().out)["files"]
    for report in (zeros, hiss_report):
        assert (report["label"], report["score"]) == ("background", 1.0), report
        assert all(w["quiet"] and w["label"] == "background" for w in report["windows"]), report
    assert [w["quiet"] for w in loud_report["windows"]] == [True, False], loud_report["windows"]  # 0 and 1.997 s (not
    # 2.0 s as well: a window 3 ms after the last, its 4 s counted twice in the verdict)


def test_a_file_below_the_model_s_rate_is_said_as_the_daemon_says_it(
        repo_root: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Found by fault injection: an 8 kHz recording (a phone's) was given a confident label without a word, where
    the daemon warns that such an input hears nothing above 4 kHz."""
    audio, rate = sf.read(str(repo_root / "samples" / "scene.flac"), dtype="float32")
    phone = tmp_path / "phone.wav"
    sf.write(phone, soxr.resample(audio, rate, 8000), 8000)
    with caplog.at_level("WARNING"):
        assert cli_main(["classify", str(phone), str(repo_root / "samples" / "scene.flac")]) == 0
    said = [r.getMessage() for r in caplog.records if "less than the model's" in r.getMessage()]
    assert said == [f"{phone} delivers 8000 Hz, less than the model's 22050 Hz: it hears nothing above 4000 Hz, "
                    "and detection suffers"], said


@pytest.mark.parametrize("hop", ["nan", "inf", "0", "-1"])
def test_a_hop_that_is_not_a_length_of_time_is_refused_by_the_option(repo_root: Path, hop: str,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """Found by fault injection: ``--hop nan`` or ``inf`` ended in a traceback (exit 1), and ``--hop 0`` or a negative
    one classified a window at every sample (the 33 s scene: 640 000 windows, a command that seemed to hang)."""
    with pytest.raises(SystemExit) as stopped:
        cli_main(["classify", f"--hop={hop}", str(repo_root / "samples" / "scene.flac")])
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert "argument --hop: must be a finite number of seconds above 0" in err and "Traceback" not in err, err


@pytest.mark.parametrize("reader", ["full_disk", "gone", "closed"])
def test_a_report_stdout_cannot_take_ends_in_one_line_or_quietly(repo_root: Path, reader: str) -> None:
    """Found by fault injection: a report to a full disk (here /dev/full) ended in an OSError traceback, and one to a
    reader gone (``| head -1``) in a BrokenPipeError traceback or "Exception ignored ... BrokenPipeError" (exit 120).
    A full disk is one line and exit 1; a reader that took what it wanted ends it as SIGPIPE ends a filter (141)."""
    command = [sys.executable, "-m", "noisewatch.cli", "classify", str(repo_root / "samples" / "scene.flac")]
    if reader == "full_disk":
        with open("/dev/full", "w") as full:
            done = subprocess.run(command, stdout=full, stderr=subprocess.PIPE, text=True, timeout=60)
        assert done.returncode == 1, done.stderr
        assert done.stderr.splitlines() == ["noisewatch: cannot write the report to stdout (No space left on device)"]
    elif reader == "closed":  # started with stdout closed (``>&-``): print() wrote nowhere, and exit 0 said it had
        done = subprocess.run(command, stderr=subprocess.PIPE, text=True, timeout=60, preexec_fn=lambda: os.close(1))
        assert done.returncode == 1, done.stderr
        assert done.stderr.splitlines() == ["noisewatch: cannot write the report to stdout (stdout is closed)"]
    else:
        read, write = os.pipe()
        os.close(read)  # the reader is gone before a line is written
        try:
            done = subprocess.run(command, stdout=write, stderr=subprocess.PIPE, text=True, timeout=60)
        finally:
            os.close(write)
        assert (done.returncode, done.stderr) == (128 + signal.SIGPIPE, ""), done.stderr


def test_a_file_that_is_not_there_or_a_folder_is_said_in_the_systems_words(tmp_path: Path,
                                                                           capsys: pytest.CaptureFixture[str]) -> None:
    """Found by fault injection: a misspelt file name gave "cannot read audio (Error opening 'x.wav': System error.)"
    and a folder "Format not recognised.", libsndfile's words for both, where ``run --input`` says "no such file"."""
    missing, folder = tmp_path / "misspelt.wav", tmp_path / "recordings"
    folder.mkdir()
    assert cli_main(["classify", str(missing), str(folder)]) == 1
    assert capsys.readouterr().err.splitlines() == [
        f"noisewatch: {missing}: cannot read audio (No such file or directory)",
        f"noisewatch: {folder}: cannot read audio (a folder, not a file)"]


@pytest.mark.parametrize("kind", ["wav", "ogg"])
def test_a_file_cut_short_is_said_to_be_as_the_daemon_and_the_dashboard_say_it(
        repo_root: Path, tmp_path: Path, kind: str, capsys: pytest.CaptureFixture[str],
        caplog: pytest.LogCaptureFixture) -> None:
    """Found by fault injection: a WAV or Ogg file cut short (a copy or download broken off) was classified as far as
    it went without a word, as if that were the whole recording; ``run --input`` and the dashboard say it."""
    audio, rate = sf.read(str(repo_root / "samples" / "scene.flac"), dtype="float32")
    whole = tmp_path / f"whole.{kind}"
    sf.write(str(whole), audio, rate, **({"subtype": "PCM_16"} if kind == "wav" else {"format": "OGG",
                                                                                      "subtype": "VORBIS"}))
    cut = tmp_path / f"cut.{kind}"
    cut.write_bytes(whole.read_bytes()[: len(whole.read_bytes()) * 6 // 10])
    caplog.set_level(logging.WARNING)
    assert cli_main(["classify", str(whole), str(cut)]) == 0
    said = [r.getMessage() for r in caplog.records if "cut short" in r.getMessage()]
    assert len(said) == 1 and str(cut) in said[0] and "classifying" in said[0], said
    assert "cut." in capsys.readouterr().out


def test_quiet_windows_are_background_with_a_bundle_that_has_no_such_label(tmp_path: Path, bundle_and_model) -> None:
    """Found in review: a window below the gate counts as background by a one-hot on the label "background", and a
    bundle need not have one: its quiet windows scored all zeros, and a file of silence was labelled with the
    bundle's first label (0.00), every window too, where the daemon hears background."""
    bundle, model = bundle_and_model
    plain = dataclasses.replace(bundle, labels=tuple("quiet_room" if label == "background" else label
                                                     for label in bundle.labels))
    path = tmp_path / "silence.wav"
    sf.write(path, np.zeros(6 * 22050, np.float32), 22050)
    report = _file_report(str(path), plain, model, HOP_S)
    assert (report["label"], report["score"]) == ("background", 1.0), report
    assert report["windows"] and all((w["label"], w["score"], w["quiet"]) == ("background", 1.0, True)
                                     for w in report["windows"]), report["windows"]

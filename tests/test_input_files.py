"""Input files as recorders and pipes leave them: a FLAC whose length its header does not know, a WAV whose header
declares less than it holds. Each is read alike by the replay (``run --input``) and the loader of ``classify``,
training and the dashboard (:func:`noisewatch.audio_file.load_audio`)."""

from __future__ import annotations

import io
import json
import logging
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from daemon_run import read_jsonl

from noisewatch.audio_file import load_audio, open_audio
from noisewatch.cli import main as cli_main
from noisewatch.daemon.sources import FileSource

SCENE = Path(__file__).resolve().parent.parent / "samples" / "scene.flac"
RATE = 22050
SF_COUNT_MAX = 2**63 - 1
"""libsndfile's frame count of a file whose length is unknown."""
SECONDS = 5


def scene_pcm16(seconds: float = SECONDS) -> np.ndarray:
    """The scene's first ``seconds`` as 16-bit samples (what a recorder writes)."""
    audio, rate = sf.read(str(SCENE), dtype="int16", frames=int(seconds * RATE))
    assert rate == RATE
    return audio


def run_input(path: Path, tmp_path: Path) -> tuple[subprocess.CompletedProcess[str], list[dict]]:
    """``noisewatch run --input PATH --speed 0`` in a subprocess: its exit, and its JSON lines."""
    out = tmp_path / "out.jsonl"
    done = subprocess.run([sys.executable, "-m", "noisewatch.cli", "run", "--input", str(path), "--speed", "0",
                           "--jsonl", str(out)], capture_output=True, text=True, timeout=120)
    return done, read_jsonl(out)


def heard_s(messages: list[dict]) -> float:
    """Seconds of audio the daemon heard, from its last stats message (the one at the stop)."""
    return [m for m in messages if m["type"] == "stats"][-1]["audio_s"]


@pytest.fixture(scope="module")
def piped_flac(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A FLAC written by sox to a pipe, as ``sox ... -t flac - | ...`` does: the encoder cannot go back to fill in
    STREAMINFO's sample count, which stays 0 (unknown)."""
    sox = shutil.which("sox")
    if sox is None:
        pytest.skip("sox is not installed (scripts/bootstrap.sh installs it)")
    encoded = subprocess.run([sox, "-t", "raw", "-r", str(RATE), "-e", "signed", "-b", "16", "-c", "1", "-",
                              "-t", "flac", "-"], input=scene_pcm16().tobytes(), capture_output=True, check=True)
    path = tmp_path_factory.mktemp("piped") / "piped.flac"
    path.write_bytes(encoded.stdout)
    assert sf.info(str(path)).frames == SF_COUNT_MAX  # what libsndfile makes of a length of 0
    return path


def test_a_flac_of_unknown_length_replays_whole_and_ends_as_any_finished_file(piped_flac: Path,
                                                                               tmp_path: Path) -> None:
    """Found in review: ``run --input`` of a FLAC written through a pipe exited 66 (EX_NOINPUT, "reading ... failed:
    Internal psf_fseek() failed.") at its end, its last block unheard, and the log gave its length as 418293516410647.4 s."""
    done, messages = run_input(piped_flac, tmp_path)
    assert done.returncode == 0, done.stderr
    assert heard_s(messages) == SECONDS
    assert "length unknown" in done.stderr and "failed" not in done.stderr


def test_a_flac_of_unknown_length_is_classified_and_loaded_whole(piped_flac: Path, tmp_path: Path) -> None:
    """Found in review: ``classify`` of a FLAC written through a pipe crashed with "array is too big" (its length,
    SF_COUNT_MAX frames, was allocated), and the dashboard's first minutes of it failed at its end."""
    done = subprocess.run([sys.executable, "-m", "noisewatch.cli", "classify", "--json", str(piped_flac)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    [report] = json.loads(done.stdout)["files"]
    assert report["file"] == str(piped_flac) and report["label"] and len(report["windows"]) >= SECONDS // 2
    whole = load_audio(SCENE, RATE)[: SECONDS * RATE]
    assert len(load_audio(piped_flac, RATE)) == SECONDS * RATE
    np.testing.assert_allclose(load_audio(piped_flac, RATE), load_audio(piped_flac, RATE, seconds=60), atol=0)
    np.testing.assert_allclose(load_audio(piped_flac, RATE)[RATE:-RATE], whole[RATE:-RATE], atol=1e-3)
    assert len(load_audio(piped_flac, RATE, seconds=2)) == 2 * RATE


RECORDER = """
import os, signal, sys, wave
import numpy as np
samples = np.fromfile(sys.argv[2], dtype="<i2")
with open(sys.argv[1], "wb") as out:
    recording = wave.open(out, "wb")
    recording.setnchannels(1)
    recording.setsampwidth(2)
    recording.setframerate(int(sys.argv[3]))
    recording.writeframes(samples[: int(sys.argv[3])].tobytes())  # the header is rewritten: 1 s
    recording.writeframesraw(samples[int(sys.argv[3]) :].tobytes())  # the rest, the header not yet rewritten
    out.flush()
    os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.fixture(scope="module")
def killed_recording(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A WAV whose recorder (Python's wave module, in a process of its own) was killed after the header declared its
    first second and before the header was rewritten for the four after it."""
    folder = tmp_path_factory.mktemp("killed")
    samples = folder / "samples.raw"
    scene_pcm16().astype("<i2").tofile(samples)
    path = folder / "killed.wav"
    done = subprocess.run([sys.executable, "-c", RECORDER, str(path), str(samples), str(RATE)], timeout=60)
    assert done.returncode == -9
    assert sf.info(str(path)).frames == RATE and path.stat().st_size > 44 + 2 * SECONDS * RATE - 100
    return path


def whole_wav(folder: Path) -> Path:
    """The same five seconds, as a whole WAV."""
    path = folder / "whole.wav"
    sf.write(str(path), scene_pcm16(), RATE, subtype="PCM_16")
    return path


def test_a_wav_whose_header_declares_less_than_it_holds_is_replayed_whole_and_said(killed_recording: Path,
                                                                                   tmp_path: Path) -> None:
    """Found in review: ``run --input`` of a WAV whose recorder was killed before it rewrote its header replayed the
    second the header declared, of five, exit 0 and no word: libsndfile reads what the header declares."""
    done, messages = run_input(killed_recording, tmp_path)
    assert done.returncode == 0, done.stderr
    assert heard_s(messages) == SECONDS
    said = [line for line in done.stderr.splitlines() if "WARNING" in line and "header declares" in line]
    beyond = 2 * (SECONDS - 1) * RATE
    assert len(said) == 1 and str(killed_recording) in said[0] and f"{beyond} bytes" in said[0], done.stderr
    # the start's line said the header's 1.0 s before the warning that all 5 are heard (found in review)
    assert f"replaying {killed_recording}: {SECONDS:.1f} s," in done.stderr, done.stderr


def test_a_wav_whose_header_declares_less_than_it_holds_loads_whole(
        killed_recording: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """``classify``, training and the dashboard (a file object) hear the whole of it too, sample for sample as the
    same audio in a whole WAV, and say it."""
    caplog.set_level(logging.WARNING)
    whole = load_audio(whole_wav(tmp_path), RATE)
    assert not caplog.records
    np.testing.assert_array_equal(load_audio(killed_recording, RATE), whole)
    np.testing.assert_array_equal(load_audio(io.BytesIO(killed_recording.read_bytes()), RATE), whole)
    said = [r.getMessage() for r in caplog.records if "header declares" in r.getMessage()]
    assert len(said) == 2 and str(killed_recording) in said[0], said


def test_a_chunk_after_a_wavs_audio_is_not_heard_as_audio(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Bytes after the audio that are a chunk (a LIST INFO tag, which some taggers put at the end) are the file's own,
    not audio beyond its header: nothing more is read and nothing said."""
    whole = whole_wav(tmp_path)
    text = b"tagged at the end\0"
    info = b"INFO" + b"INAM" + struct.pack("<I", len(text)) + text
    tagged = tmp_path / "tagged.wav"
    data = bytearray(whole.read_bytes() + b"LIST" + struct.pack("<I", len(info)) + info)
    data[4:8] = struct.pack("<I", len(data) - 8)  # the RIFF chunk holds the tag
    tagged.write_bytes(bytes(data))
    caplog.set_level(logging.WARNING)
    np.testing.assert_array_equal(load_audio(tagged, RATE), load_audio(whole, RATE))
    assert not caplog.records


def _chunk(tag: bytes, body: bytes, pad: bool = True) -> bytes:
    return tag + struct.pack("<I", len(body)) + body + (b"\0" if pad and len(body) % 2 else b"")


def _riff(*chunks: bytes) -> bytes:
    body = b"WAVE" + b"".join(chunks)
    return b"RIFF" + struct.pack("<I", len(body)) + body


def test_an_odd_data_chunk_without_its_pad_byte_then_a_list_chunk_is_not_heard_as_audio(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Found by review: a writer that leaves out the pad byte after an odd-length data chunk has libsndfile resync to
    the LIST chunk after it ("Unknown chunk marker ... Resynching."), and the chunk's 38 bytes were heard as 38
    frames of audio beyond the header."""
    fmt = _chunk(b"fmt ", struct.pack("<HHIIHH", 1, 1, 8000, 8000, 1, 8))  # 8-bit mono
    listing = _chunk(b"LIST", b"INFO" + _chunk(b"ISFT", b"some recorder v1\0"))
    path = tmp_path / "odd.wav"
    path.write_bytes(_riff(fmt, _chunk(b"data", bytes(range(1, 102)), pad=False), listing))
    caplog.set_level(logging.WARNING)
    assert len(load_audio(path, 8000)) == sf.info(str(path)).frames == 101
    assert not caplog.records


@pytest.mark.parametrize("tag", [b"ID3\x03\x00\x00\x00\x00\x00\x0a" + b"\0" * 10, b"TAG" + b"title".ljust(125, b"\0")],
                         ids=["id3v2", "id3v1"])
def test_a_tag_appended_to_a_wav_is_not_heard_as_audio(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                                        tag: bytes) -> None:
    """Found by review: an ID3v2 (or v1) tag a tagger appends after the RIFF chunk was heard as audio beyond the
    header, and said to be a recording whose header was not rewritten."""
    whole = whole_wav(tmp_path)
    tagged = tmp_path / "tagged.wav"
    tagged.write_bytes(whole.read_bytes() + tag)
    caplog.set_level(logging.WARNING)
    np.testing.assert_array_equal(load_audio(tagged, RATE), load_audio(whole, RATE))
    assert not caplog.records


def test_a_killed_recording_whose_next_samples_read_as_a_chunk_name_is_heard_whole(tmp_path: Path) -> None:
    """Found by review: where the first four bytes after the declared audio are printable (a loud sound's samples
    16961, 17475 read "ABCD") libsndfile logs them as a chunk of unknown name, not as an unknown marker, and the
    recording was read only as far as its header declares, without a word."""
    samples = scene_pcm16(2.0).astype("<i2")
    samples[RATE], samples[RATE + 1] = 0x4241, 0x4443  # bytes "ABCD"
    path = tmp_path / "killed.wav"
    sf.write(str(path), samples[:RATE], RATE, subtype="PCM_16")
    path.write_bytes(path.read_bytes() + samples[RATE:].tobytes())
    heard, _ = sf.read(str(path), dtype="int16")
    assert len(heard) == RATE  # what libsndfile reads of it
    with open_audio(path) as audio:
        np.testing.assert_array_equal(audio.read(dtype="int16"), samples)


def test_a_gsm610_wav_with_bytes_after_its_audio_replays_as_far_as_its_header_declares(tmp_path: Path) -> None:
    """Found by review: libsndfile reads GSM 6.10 neither headerless nor with a seek to its first frame, which the
    reader of audio beyond the header began with: the replay of such a file failed (exit 66). It is replayed as far
    as its header declares, as before."""
    audio = (np.random.default_rng(2).uniform(-0.5, 0.5, 5 * 8000)).astype(np.float32)
    path = tmp_path / "gsm.wav"
    sf.write(str(path), audio, 8000, subtype="GSM610")
    data = path.read_bytes()
    path.write_bytes(data + data[-1300:])  # bytes after the audio that are no chunk
    done, messages = run_input(path, tmp_path)
    assert done.returncode == 0, done.stderr
    assert heard_s(messages) == pytest.approx(sf.info(str(path)).duration, abs=0.05)


def test_a_wav_written_through_a_pipe_is_not_said_to_be_cut_short(tmp_path: Path,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    """Found in review: a WAV sox writes to a pipe keeps the placeholder size it cannot go back to fix (0x7FFFF000
    bytes); libsndfile reads it whole, and the replay and ``classify`` said it was cut short ("its header promises
    2147479552 bytes of audio")."""
    sox = shutil.which("sox")
    if sox is None:
        pytest.skip("sox is not installed (scripts/bootstrap.sh installs it)")
    encoded = subprocess.run([sox, "-t", "raw", "-r", str(RATE), "-e", "signed", "-b", "16", "-c", "1", "-",
                              "-t", "wav", "-"], input=scene_pcm16().tobytes(), capture_output=True, check=True)
    path = tmp_path / "piped.wav"
    path.write_bytes(encoded.stdout)
    assert "(should be" in sf.info(str(path)).extra_info  # the header's size is more than the file holds
    caplog.set_level(logging.WARNING)
    source = FileSource(path, 0, 1024, 10.0)
    assert cli_main(["classify", str(path)]) == 0
    assert not [r.getMessage() for r in caplog.records if "cut short" in r.getMessage()]
    np.testing.assert_array_equal(load_audio(path, RATE), load_audio(whole_wav(tmp_path), RATE))
    assert source.sample_rate == RATE


def test_an_adpcm_recording_killed_before_its_header_was_rewritten_is_said_not_heard_whole(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Block-coded audio (IMA ADPCM) cannot be read headerless: what follows the declared second is said, not heard."""
    audio = (np.random.default_rng(2).uniform(-0.5, 0.5, 2 * 8000)).astype(np.float32)
    first, both = tmp_path / "first.wav", tmp_path / "both.wav"
    sf.write(str(first), audio[:8000], 8000, subtype="IMA_ADPCM")
    sf.write(str(both), audio, 8000, subtype="IMA_ADPCM")
    killed = tmp_path / "killed.wav"
    killed.write_bytes(first.read_bytes() + both.read_bytes()[first.stat().st_size:])  # its header says 1 s
    caplog.set_level(logging.WARNING)
    with open_audio(killed) as opened:
        assert opened.frames == sf.info(str(first)).frames
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 1 and str(killed) in said[0] and "not heard" in said[0], said

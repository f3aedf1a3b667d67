"""Many channels to one: a channel of zeros (a Pi's I2S microphone in a stereo frame) is left out of the mean, so
levels do not read 6 dB low; a pair in opposite phase is heard through one channel, not as near silence; channels
that carry sound alike are averaged as before."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from daemon_run import read_jsonl, run_daemon, run_daemon_logged

from noisewatch.audio_file import load_audio
from noisewatch.daemon.levels import dbfs
from noisewatch.daemon.setup import Overrides, prepare
from noisewatch.daemon.sources import FILE_STATUS, FileSource
from noisewatch.downmix import DECIDE_S, SAY_AGAIN_S, ChannelMix, MixChoice, MixNews

RATE = 48000
SPAN = int(DECIDE_S * RATE)


def noise(seconds: float, seed: int, amplitude: float = 0.1) -> np.ndarray:
    return (amplitude * np.random.default_rng(seed).standard_normal(int(seconds * RATE))).astype(np.float32)


def stereo(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    return np.stack([left, right], axis=1)


def mixed_in_blocks(block: np.ndarray, sizes: list[int]) -> tuple[np.ndarray, ChannelMix]:
    """``block`` through one ChannelMix in pieces of ``sizes``, then the rest in one: its output, and the mix."""
    mix, parts, at = ChannelMix(block.shape[1], RATE), [], 0
    for size in sizes:
        parts.append(mix.mix(block[at : at + size]))
        at += size
    parts.append(mix.mix(block[at:]))
    return np.concatenate(parts), mix


def test_a_channel_of_zeros_is_left_out_from_the_first_sample_and_said_after_the_first_half_second() -> None:
    """Until the choice, a channel that has carried one value only is no sound: left out from the first sample that
    tells it from the others (the stream's first is the plain mean), where the mean read the first half second
    6 dB low."""
    sound = noise(3, 0)
    mix = ChannelMix(2, RATE)
    out = mix.mix(stereo(sound, np.zeros_like(sound)))
    assert out[0] == sound[0] / 2
    np.testing.assert_array_equal(out[1:], sound[1:])
    assert mix.choice is not None and mix.choice.channels == (0,)
    assert mix.choice.note == ("channel(s) 2 of 2 carry no sound; averaging channel(s) 1 alone, so levels are not "
                               "read 6.0 dB low")


def test_a_pair_in_opposite_phase_is_heard_through_its_louder_channel() -> None:
    sound = noise(3, 1)
    hiss = noise(3, 2, amplitude=1e-4)  # -80 dBFS: the two do not cancel to exact zeros
    mix = ChannelMix(2, RATE)
    out = mix.mix(stereo(-sound + hiss, sound))
    assert mix.choice is not None and mix.choice.channels in ((0,), (1,))
    np.testing.assert_array_equal(out[SPAN:], stereo(-sound + hiss, sound)[SPAN:, mix.choice.channels[0]])
    assert mix.choice.note is not None and "cancel when averaged" in mix.choice.note


def test_a_dc_offset_does_not_hide_a_pair_in_opposite_phase() -> None:
    """A quiet room (-60 dBFS) through an interface with an ADC offset of 0.002 in each channel: the offsets add
    up in the mean where the sound cancels, so the raw products read as no cancellation, the plain mean went on,
    and the high-pass left silence. An offset is not sound (``dc_offset``): the choice sees the channels
    without theirs."""
    sound = noise(3, 10, amplitude=1e-3)
    hiss = noise(3, 11, amplitude=1e-5)
    block = stereo(sound + 0.002, -sound + hiss + 0.0025)
    mix = ChannelMix(2, RATE)
    mix.mix(block)
    assert mix.choice is not None and len(mix.choice.channels) == 1
    assert mix.choice.note is not None and "cancel when averaged" in mix.choice.note


def test_a_channel_of_only_an_offset_carries_no_sound() -> None:
    """An unconnected input that reads a constant (its ADC's offset) is left out like a channel of zeros."""
    sound = noise(2, 12, amplitude=1e-3)
    mix = ChannelMix(2, RATE)
    mix.mix(stereo(sound, np.full_like(sound, 0.01)))
    assert mix.choice is not None and mix.choice.channels == (0,)


@pytest.mark.parametrize("channels", [2, 8, 32])
def test_channels_that_carry_sound_alike_are_averaged(channels: int) -> None:
    """Independent noise in every channel (the mean's power is 1/N of a channel's: not a cancellation), and one
    sound in all of them at different gains."""
    rng = np.random.default_rng(channels)
    independent = (0.05 * rng.standard_normal((RATE, channels))).astype(np.float32)
    common = noise(1, 3)[:, None] * np.linspace(1.0, 0.05, channels, dtype=np.float32)
    for block in (independent, common):
        mix = ChannelMix(channels, RATE)
        # float32 sums of ``channels`` terms, in whatever order: within that many roundings of the largest sample
        np.testing.assert_allclose(mix.mix(block), block.mean(axis=1, dtype=np.float64), rtol=0,
                                   atol=channels * np.finfo(np.float32).eps * float(np.abs(block).max()))
        assert mix.choice is not None and mix.choice.channels == tuple(range(channels)) and mix.choice.note is None


def test_block_sizes_do_not_change_the_output() -> None:
    block = stereo(noise(2, 4), np.zeros(2 * RATE, dtype=np.float32))
    whole = ChannelMix(2, RATE).mix(block)
    for sizes in ([1, 0, SPAN - 2, 3, 4096], [SPAN, 7], [SPAN + 1], [17] * 3000):
        np.testing.assert_array_equal(mixed_in_blocks(block, sizes)[0], whole)


def test_digital_silence_first_puts_off_the_choice() -> None:
    """A device that starts with zeros in every channel gives nothing to tell them apart by: the choice waits for
    half a second of sound."""
    sound = noise(2, 5)
    block = np.concatenate([np.zeros((RATE, 2), dtype=np.float32), stereo(sound, np.zeros_like(sound))])
    mix = ChannelMix(2, RATE)
    out = mix.mix(block)
    np.testing.assert_array_equal(out[RATE + SPAN :], sound[SPAN:])
    assert mix.choice is not None and mix.choice.channels == (0,)


def test_one_channel_passes_as_it_is() -> None:
    sound = noise(1, 6)
    out = ChannelMix(1, RATE).mix(sound[:, None])
    np.testing.assert_array_equal(out, sound)


def test_the_daemon_hears_a_stereo_microphone_with_a_dead_or_inverted_channel_as_the_mono_one(
        repo_root: Path, tmp_path: Path) -> None:
    """The bundled scene replayed as it is, as stereo with a channel of zeros (its events' levels read 6 dB low
    before) and as a pair in opposite phase over -80 dBFS hiss (it reported no event before): the same events,
    at the same levels."""
    audio, rate = sf.read(str(repo_root / "samples" / "scene.flac"), dtype="float32")
    hiss = (1e-4 * np.random.default_rng(7).standard_normal(len(audio))).astype(np.float32)
    recordings = {"mono": audio[:, None], "zero": stereo(audio, np.zeros_like(audio)),
                  "inverted": stereo(audio, -audio + hiss)}
    heard = {}
    for name, samples in recordings.items():
        sf.write(str(tmp_path / f"{name}.wav"), samples, rate, subtype="FLOAT")
        found = run_daemon(tmp_path / f"{name}.wav", tmp_path / f"{name}.jsonl", "--speed", "0")
        heard[name] = [(m["label"], m["offset_s"], m["duration_s"], m["peak_dbfs"], m["mean_dbfs"])
                       for m in found if m["type"] == "event"]
    assert len(heard["mono"]) >= 3
    for name in ("zero", "inverted"):
        assert [e[0] for e in heard[name]] == [e[0] for e in heard["mono"]], heard
        for got, want in zip(heard[name], heard["mono"]):
            assert abs(got[1] - want[1]) < 0.1 and abs(got[2] - want[2]) < 0.1, heard
            assert abs(got[3] - want[3]) < 0.05 and abs(got[4] - want[4]) < 0.05, heard  # dB


def test_classify_mixes_as_the_daemon_mixes(repo_root: Path, tmp_path: Path) -> None:
    audio, rate = sf.read(str(repo_root / "samples" / "scene.flac"), dtype="float32")
    sf.write(str(tmp_path / "mono.wav"), audio, rate, subtype="FLOAT")
    sf.write(str(tmp_path / "zero.wav"), stereo(audio, np.zeros_like(audio)), rate, subtype="FLOAT")
    mono, zero = load_audio(tmp_path / "mono.wav", rate), load_audio(tmp_path / "zero.wav", rate)
    span = int(DECIDE_S * rate)
    np.testing.assert_allclose(zero[2 * span :], mono[2 * span :], rtol=0, atol=1e-6)


def test_a_channel_left_out_as_dead_is_taken_back_once_it_carries_sound() -> None:
    """Found by fault injection: the choice was for good. A stereo recording whose first half second has sound on
    the left only (a hard-panned intro, a right input muted in the mixer and unmuted later) lost everything the
    right channel carried afterwards: a siren on the right, seconds later, reached neither classify nor the
    daemon. A channel left out as dead is looked at every half second and taken back once it is live."""
    left = noise(3, 13)
    right = np.concatenate([np.zeros(RATE, dtype=np.float32), noise(2, 14)])
    block = stereo(left, right)
    for sizes in ([len(block)], [1000] * (len(block) // 1000 + 1)):
        out, mix = mixed_in_blocks(block, sizes)
        assert len(out) == len(block)
        late = out[RATE + 2 * SPAN :]  # from the first whole span after the right channel woke
        np.testing.assert_array_equal(late, block[RATE + 2 * SPAN :].mean(axis=1, dtype=np.float32))
        assert mix.choice is not None and mix.choice.channels == (0, 1)



def test_a_channel_taken_back_is_left_out_again_once_it_carries_no_sound_again() -> None:
    """Found by fault injection: one glitch in an I2S microphone's empty slot (a data line left floating reads a
    stray word now and then) woke the channel, and a channel taken back was never looked at again: the mean of the
    microphone and the zeros went on for good, every level 6 dB low until a restart, and nothing said so."""
    sound = noise(10, 16, amplitude=0.003)  # a quiet room
    empty = np.zeros_like(sound)
    empty[2 * RATE] = 0.5
    mix = ChannelMix(2, RATE)
    out = mix.mix(stereo(sound, empty))
    np.testing.assert_array_equal(out[3 * RATE :], sound[3 * RATE :])
    assert mix.choice is not None and mix.choice.channels == (0,)


@pytest.mark.parametrize("failure", ["dies", "sticks"])
def test_a_channel_that_fails_while_averaged_is_left_out_within_a_span(failure: str) -> None:
    """Found by fault injection: a mix chosen with every channel live was never looked at again. A stereo
    microphone whose second capsule, cable or I2S slot dies while the listener runs (zeros, or a converter stuck at
    one code) was averaged in for good: every level and every event's peak read 6 dB low, and nothing said so."""
    left, right = noise(4, 21), noise(4, 22)
    right[2 * RATE :] = 0.0 if failure == "dies" else -0.25
    block = stereo(left, right)
    for sizes in ([len(block)], [1000] * (len(block) // 1000 + 1)):
        out, mix = mixed_in_blocks(block, sizes)
        np.testing.assert_array_equal(out[: 2 * RATE], block[: 2 * RATE].mean(axis=1, dtype=np.float32))
        np.testing.assert_array_equal(out[2 * RATE + SPAN :], left[2 * RATE + SPAN :])  # from the span after
        assert mix.choice is not None and (mix.choice.channels, mix.choice.dead) == ((0,), (1,))
        assert mix.choice.note is not None and "channel(s) 2 of 2 carry no sound" in mix.choice.note


def test_the_daemon_says_a_channel_that_dies_while_it_runs_and_reads_levels_as_the_mono_one(
        repo_root: Path, tmp_path: Path) -> None:
    """Found by fault injection (a stereo recording of the bundled scene whose second channel goes to zeros 2 s in):
    every level after it read 6.02 dB low, every event's peak and mean too, with no WARNING and no counter."""
    audio, rate = sf.read(str(repo_root / "samples" / "scene.flac"), dtype="float32")
    dying = audio.copy()
    dying[2 * rate :] = 0.0
    heard, said = {}, {}
    for name, samples in {"mono": audio[:, None], "dies": stereo(audio, dying)}.items():
        heard[name], said[name] = _replay(tmp_path, name, samples, rate, "levels: {interval_s: 10.0}\n")
    levels = {name: {m["offset_s"]: m["leq_dbfs"] for m in found if m["type"] == "level"} for name, found in heard.items()}
    assert sorted(levels["dies"]) == sorted(levels["mono"]) and len(levels["mono"]) >= 3
    for offset in (o for o in levels["mono"] if o >= 10.0):  # periods after the channel died
        assert abs(levels["dies"][offset] - levels["mono"][offset]) < 0.05, levels
    peaks = {name: [(m["label"], m["peak_dbfs"]) for m in found if m["type"] == "event"] for name, found in heard.items()}
    assert len(peaks["mono"]) >= 3 and [label for label, _ in peaks["dies"]] == [label for label, _ in peaks["mono"]]
    assert all(abs(got - want) < 0.05 for (_, got), (_, want) in zip(peaks["dies"], peaks["mono"])), peaks
    assert "channel(s) 2 of 2 carry no sound" in said["dies"], said["dies"][-2000:]


def test_a_channel_stuck_at_one_value_from_the_start_is_never_averaged_in() -> None:
    """Found by fault injection: a dead converter stuck at one code (full scale here) was averaged in until the
    choice left it out, and that stepped the mix's offset: a click read as a loud sound that nothing made."""
    left = noise(2, 23)
    block = stereo(left, np.full_like(left, -1.0))
    for sizes in ([len(block)], [1, 999] * (len(block) // 1000 + 1)):
        out, mix = mixed_in_blocks(block, sizes)
        np.testing.assert_array_equal(out[1:], left[1:])
        assert mix.choice is not None and (mix.choice.channels, mix.choice.dead) == ((0,), (1,))


def test_the_daemon_hears_a_stereo_input_with_a_stuck_channel_as_the_mono_one(repo_root: Path, tmp_path: Path) -> None:
    """Found by fault injection: the bundled scene on one channel, the other stuck at full scale from the start. The
    first level report read Lmax -14 dBFS in a room at -52, and a loudness rule (-20 dBFS for 0.5 s) reported a
    `loud` event at 0 s, before any sound; the README says a constant offset starts no `loud` event. (The stream's
    first sample is still the two channels' mean, which nothing tells apart yet: the first period's Lmax reads
    -35 dBFS, from that one sample through the offset filter's start.)"""
    audio, rate = sf.read(str(repo_root / "samples" / "scene.flac"), dtype="float32")
    config = "levels: {interval_s: 10.0}\nloudness: {threshold_dbfs: -20.0, min_duration_s: 0.5}\n"
    heard = {name: _replay(tmp_path, name, samples, rate, config)[0]
             for name, samples in {"mono": audio[:, None], "stuck": stereo(audio, np.full_like(audio, -1.0))}.items()}
    summary = {name: ([(m["offset_s"], m["lmax_dbfs"], m["leq_dbfs"]) for m in found if m["type"] == "level"],
                      [(m["label"], m["offset_s"]) for m in found if m["type"] == "event"]) for name, found in heard.items()}
    (levels, found), (mono_levels, mono_found) = summary["stuck"], summary["mono"]
    assert len(levels) == len(mono_levels) >= 3 and found == mono_found, summary  # `loud` events too: none made up
    assert levels[0][1] < -30.0, summary
    for got, want in zip(levels[1:], mono_levels[1:]):
        assert abs(got[1] - want[1]) < 0.05 and abs(got[2] - want[2]) < 0.05, summary


def test_a_mix_of_two_live_microphones_stays_when_one_hears_a_sound_far_louder_than_the_other() -> None:
    """Found by review: watched all the time, a channel averaged was left out as soon as it fell 60 dB below the
    loudest. A near microphone (-80 dBFS floor) and a far one (-85 dBFS) that hears a -13 dBFS tone 75 dB down: the
    tone's level stepped 6 dB in its middle, where the mix left the far one out."""
    rng = np.random.default_rng(3)
    n = 12 * RATE
    tone = np.zeros(n, np.float32)
    tone[4 * RATE : 7 * RATE] = 0.3 * np.sin(2 * np.pi * 440 * np.arange(3 * RATE) / RATE)
    near = rng.standard_normal(n).astype(np.float32) * 10 ** (-80 / 20) + tone
    far = rng.standard_normal(n).astype(np.float32) * 10 ** (-85 / 20) + tone * 10 ** (-75 / 20)
    mix = ChannelMix(2, RATE)
    out = np.concatenate([mix.mix(stereo(near, far)[i : i + 1024]) for i in range(0, n, 1024)])
    levels = [dbfs(out[i : i + SPAN]) for i in range(8 * SPAN, 14 * SPAN, SPAN)]  # the tone's six spans
    assert max(levels) - min(levels) < 0.5, [round(v, 1) for v in levels]
    assert mix.choice is not None and mix.choice.channels == (0, 1)


def test_two_quiet_microphones_60_db_apart_keep_one_mix() -> None:
    """Found by review: the second at 60 dB less gain, its level wandering +-4 dB with the room, flipped the mix to
    and fro every few seconds, each flip a 6 dB step that nothing in the room made."""
    rng = np.random.default_rng(1)
    n = 20 * RATE
    room = rng.standard_normal(n).astype(np.float32) * 0.01
    wander = np.repeat(10 ** ((-60 + 4 * np.sin(np.arange(40) / 2.0)) / 20), SPAN).astype(np.float32)
    other = rng.standard_normal(n).astype(np.float32) * 0.01 * wander
    mix, choices = ChannelMix(2, RATE), []
    for i in range(0, n, SPAN):
        mix.mix(stereo(room, other)[i : i + SPAN])
        choices.append(mix.choice.channels if mix.choice else None)
    assert sum(x != y for x, y in zip(choices, choices[1:])) <= 1, choices


def test_a_channel_taken_back_leaves_a_quiet_one_averaged() -> None:
    """The mix chosen anew as a dead channel comes to life keeps the channels it averaged that still carry sound,
    however quiet: the far microphone of the test above, during the near one's tone, when an unmuted third input
    makes the mix be chosen anew."""
    rng = np.random.default_rng(4)
    n = 4 * RATE
    tone = (0.3 * np.sin(2 * np.pi * 440 * np.arange(n) / RATE)).astype(np.float32)
    tone[: 2 * RATE] = 0.0
    near = rng.standard_normal(n).astype(np.float32) * 10 ** (-80 / 20) + tone
    far = rng.standard_normal(n).astype(np.float32) * 10 ** (-85 / 20) + tone * 10 ** (-75 / 20)
    third = np.zeros(n, np.float32)
    third[3 * RATE :] = tone[3 * RATE :] * 0.5  # unmuted in the mixer during the tone
    mix = ChannelMix(3, RATE)
    mix.mix(np.stack([near, far, third], axis=1))
    assert mix.choice is not None and mix.choice.channels == (0, 1, 2), mix.choice


def test_block_sizes_give_the_same_samples_for_16_bit_audio_that_returns_to_the_span_s_first_code() -> None:
    """A channel that has moved stays in the mean of the first span though a later block starts on the span's first
    code (16-bit audio in a quiet room has a few codes only)."""
    rng = np.random.default_rng(7)
    quiet = (np.round(rng.standard_normal(2 * RATE) * 1.5) / 32768).astype(np.float32)  # a few LSB
    block = stereo(quiet, np.full_like(quiet, -1.0))
    whole = ChannelMix(2, RATE).mix(block)
    np.testing.assert_array_equal(mixed_in_blocks(block, list(rng.integers(1, 40, size=len(block) // 20)))[0], whole)
    moved = int(np.flatnonzero(quiet != quiet[0])[0])
    np.testing.assert_array_equal(whole[moved:], quiet[moved:])


def test_a_reopened_pair_in_opposite_phase_is_heard_through_its_channel_from_the_first_sample() -> None:
    """The mix ``before`` (the input's last, at a reopen) is in force until the choice: the mean of the pair's two
    moving channels cancels."""
    left = (0.1 * np.random.default_rng(8).standard_normal(RATE)).astype(np.float32)
    mix = ChannelMix(2, RATE, MixChoice((0,), "cancel"))
    np.testing.assert_array_equal(mix.mix(stereo(left, -left)), left)
    assert mix.choice is not None and mix.choice.channels in ((0,), (1,)) and mix.choice.note is not None


def test_each_change_of_an_input_s_mix_is_said_once_an_hour() -> None:
    """A mix that leaves channels out at WARNING, the return to every channel at INFO, each (input, channels) once
    per SAY_AGAIN_S: an empty slot's stray words (taken back, left out again) are not said twice a minute, but a
    channel that carried sound again and then really died later is said (found by review: said once for good,
    it went unsaid)."""
    news = MixNews()
    full, left_only = MixChoice((0, 1), None), MixChoice((0,), "channel(s) 2 of 2 carry no sound ...", (1,))
    assert news.of("hw:1", None, 0.0) is None
    assert news.of("hw:1", full, 0.0) is None  # the first mix, of every channel
    assert news.of("hw:1", left_only, 1.0) == (logging.WARNING, "audio input hw:1: channel(s) 2 of 2 carry no sound ...")
    assert news.of("hw:1", left_only, 1.5) is None  # unchanged
    assert news.of("hw:1", full, 2.0) == (logging.INFO, "audio input hw:1: every channel carries sound again "
                                                         "(averaging channels 1, 2)")
    assert [news.of("hw:1", choice, 3.0 + t) for t, choice in enumerate([left_only, full] * 5)] == [None] * 10
    assert news.of("hw:1", left_only, 1.0 + SAY_AGAIN_S)[0] == logging.WARNING  # type: ignore[index]
    assert news.of("hw:2", left_only, 0.0)[0] == logging.WARNING  # type: ignore[index]  # another input's own


def _replay(tmp_path: Path, name: str, samples: np.ndarray, rate: int, config: str) -> tuple[list[dict], str]:
    """``samples`` written as a WAV file and replayed by ``noisewatch run --speed 0`` with ``config``: its messages
    and its log."""
    path, config_path = tmp_path / f"{name}.wav", tmp_path / f"{name}.yaml"
    sf.write(str(path), samples, rate, subtype="FLOAT")
    config_path.write_text(config)
    return run_daemon_logged(path, tmp_path / f"{name}.jsonl", "--speed", "0", config=config_path)


def test_a_long_silent_stereo_recording_mixes_in_one_call(tmp_path: Path) -> None:
    """``audio_file.load_audio`` mixes a whole recording at once: ten minutes of digital silence (a night a stereo
    interface recorded nothing) put the choice off 1200 times, each time one call deeper (a RecursionError)."""
    rate = 8000
    silence = np.zeros((600 * rate, 2), dtype=np.float32)
    sf.write(str(tmp_path / "night.wav"), silence, rate, subtype="PCM_16")
    out = load_audio(tmp_path / "night.wav", rate)
    assert len(out) == len(silence) and not out.any()


def test_an_infinite_sample_does_not_stop_the_mix() -> None:
    """A float recording may hold inf (a broken encoder, a clipped float path): the choice fell on no live
    channel at all and divided by zero, which ended ``classify`` and the daemon's audio loop alike."""
    block = stereo(noise(1, 8), noise(1, 9))
    block[100, 0] = np.inf
    mix = ChannelMix(2, RATE)
    out = mix.mix(block)
    assert len(out) == len(block)
    assert mix.choice is not None and mix.choice.channels == (0, 1)


class _UnpluggedAfter3s(FileSource):
    """A real file source that a microphone's name stands for, and that stops after 3 s as a lost device."""

    live = True

    def _deliver(self, audio) -> None:
        for block in audio.blocks(self.block_size, dtype="float32", always_2d=True, frames=3 * self.sample_rate):
            self.callback(block, len(block), None, FILE_STATUS)
        self._failed = "device unplugged"
        self._halt.set()


def test_each_choice_for_a_pair_in_opposite_phase_is_said_once_though_the_louder_channel_changes_at_reopens(
        repo_root: Path, tmp_path: Path, monkeypatch, caplog: pytest.LogCaptureFixture) -> None:
    """Found by fault injection through an ALSA virtual microphone (a pair in opposite phase, equal gains, the
    device stalling every few seconds): which of two equal channels is louder over the first half second is a coin
    toss at each reopen, and only the last choice said was remembered, so channel 1, channel 2, channel 1 again
    repeated the WARNING at about every other reopen, for as long as the device kept dropping out."""
    from noisewatch.daemon import service as service_module

    audio, rate = sf.read(str(repo_root / "samples" / "scene.flac"), dtype="float32")
    hiss = (1e-4 * np.random.default_rng(15).standard_normal(len(audio))).astype(np.float32)
    louder = {1: stereo(audio, -0.9 * audio + hiss), 2: stereo(0.9 * audio + hiss, -audio)}
    for channel, samples in louder.items():
        sf.write(str(tmp_path / f"louder{channel}.wav"), samples, rate, subtype="FLOAT")
    order = [1, 2, 1, 2]
    opened: list[FileSource] = []

    def open_source(audio_section, input_path, speed):
        n = len(opened)
        kind = _UnpluggedAfter3s if n < len(order) - 1 else FileSource
        source = kind(str(tmp_path / f"louder{order[n]}.wav"), 0, audio_section.block_size, audio_section.buffer_s)
        source.name = "0: vmic"  # one device throughout
        opened.append(source)
        return source

    monkeypatch.setattr(service_module, "open_source", open_source)
    monkeypatch.setattr(service_module, "FIRST_BACKOFF_S", 0.01)
    setup = prepare(None, Overrides(jsonl=str(tmp_path / "out.jsonl")), input_path=str(tmp_path / "louder1.wav"),
                    speed=0)
    assert service_module.Service(setup).run() == 0
    warnings = [r.getMessage() for r in caplog.records if "cancel when averaged" in r.getMessage()]
    assert len(opened) == len(order)
    assert len(warnings) <= 2 and len(set(warnings)) == len(warnings), warnings


def test_a_reopened_microphone_is_mixed_as_before_from_its_first_sample(repo_root: Path, tmp_path: Path,
                                                                       monkeypatch) -> None:
    """Found by fault injection through an ALSA virtual microphone that stalled now and then: each reopen started
    a new mix from the plain mean, so the first half second after every return of an I2S microphone (a channel of
    zeros) read 6 dB low, and a pair in opposite phase as near silence, which set the quiet floor behind the
    contrast that dog_bark, car_horn and gun_shot need for 10 s. The same device, reopened, is mixed as it was
    until its mix is chosen anew: its levels are those of the mono microphone from the first second on."""
    from noisewatch.daemon import service as service_module

    audio, rate = sf.read(str(repo_root / "samples" / "scene.flac"), dtype="float32")
    (tmp_path / "config.yaml").write_text("levels: {interval_s: 1.0}\n")
    heard = {}
    for name, samples in {"mono": audio[:, None], "zero": stereo(audio, np.zeros_like(audio))}.items():
        path = tmp_path / f"{name}.wav"
        sf.write(str(path), samples, rate, subtype="FLOAT")
        opened: list[FileSource] = []

        def open_source(audio_section, input_path, speed, opened=opened):
            kind = _UnpluggedAfter3s if len(opened) < 3 else FileSource
            source = kind(input_path, 0, audio_section.block_size, audio_section.buffer_s)
            source.name = "0: vmic"
            opened.append(source)
            return source

        monkeypatch.setattr(service_module, "open_source", open_source)
        monkeypatch.setattr(service_module, "FIRST_BACKOFF_S", 0.01)
        out = tmp_path / f"{name}.jsonl"
        setup = prepare(str(tmp_path / "config.yaml"), Overrides(jsonl=str(out)), input_path=str(path), speed=0)
        assert service_module.Service(setup).run() == 0
        heard[name] = [(m["offset_s"], m["leq_dbfs"]) for m in read_jsonl(out) if m["type"] == "level"]
    assert len(heard["zero"]) == len(heard["mono"]) > 40
    for got, want in zip(heard["zero"][1:], heard["mono"][1:]):  # the first: before any mix was chosen
        assert got[0] == want[0] and abs(got[1] - want[1]) < 0.05, (got, want)

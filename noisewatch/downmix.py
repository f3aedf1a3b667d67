"""Many channels to one: the mean of the channels that carry sound, or one channel where the mean cancels.

A Pi's I2S MEMS microphone commonly arrives as a stereo stream with one channel of zeros (the frame's other
slot): averaged, every level read 6 dB low. A pair wired in opposite phase cancels when averaged, and the
listener heard near silence. So for the first DECIDE_S of audio that is not digital silence the mix is the mean
of the channels that have carried more than one value (a constant is not sound), and then, for the rest of the
stream, the mean of the channels within DEAD_DB of the loudest, or the loudest channel alone when even their mean
cancels. Every channel is looked at every DECIDE_S, and the mix chosen anew once a channel left out as dead
carries sound, or one averaged carries one value only: a capsule, cable or I2S slot that dies (or a converter that
sticks at one code) while the listener runs is left out and said, as one dead from the start is (averaged in for
good, it read every level 6 dB low, with nothing said); and one stray word in an empty slot does not take it back
for good. A channel averaged is not left out for being quiet (see ``_choose``). Choices fall at fixed sample
counts, so any block size gives the same samples as one call on the whole recording. Pure numpy: the daemon (per
opened input) and ``audio_file.load_audio`` (per recording) mix with it alike.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np

DECIDE_S = 0.5
"""Audio (not digital silence) seen before the mix is chosen; averaged until then."""
DEAD_DB = -60.0
"""A channel this far below the loudest carries no sound (a zero slot, an unconnected input)."""
CANCEL_RATIO = 0.1
"""The live channels cancel when their mean's power is below this fraction of what the mean of as many
uncorrelated channels would have (the average channel power over their count): opposite phase, not noise."""


@dataclass(frozen=True)
class MixChoice:
    """The channels (0-based) averaged from the choice on, and why, when not all of them."""

    channels: tuple[int, ...]
    note: str | None
    dead: tuple[int, ...] = ()
    """Channels left out as carrying no sound (the mix is chosen anew once one does)."""


class ChannelMix:
    """(frames, channels) float32 blocks of one continuous stream to mono."""

    def __init__(self, channels: int, sample_rate: int, before: MixChoice | None = None) -> None:
        self.channels = int(channels)
        self._before = before if before is not None and max(before.channels) < self.channels else None
        """The mix of the same input when it was last open (a device reopened): used until the choice, not the plain
        mean, whose first half second read an I2S microphone 6 dB low and a pair in opposite phase as silence."""
        self._span = max(1, int(round(DECIDE_S * sample_rate)))
        self._seen = 0
        self._products = np.zeros((self.channels, self.channels))
        self._sums = np.zeros(self.channels)
        self._origin: np.ndarray | None = None
        """The span's first frame, taken from every frame before summing: a constant channel sums to exact zeros."""
        self._moved = np.zeros(self.channels, dtype=bool)
        """Which channels have carried another value than the span's first frame (:meth:`_first_mix`)."""
        self.choice: MixChoice | None = None
        """None until DECIDE_S of sound has been seen (until then the mix ``before``, or :meth:`_first_mix`)."""

    def mix(self, block: np.ndarray) -> np.ndarray:
        """Mono float32 samples for the next block."""
        if block.ndim != 2 or block.shape[1] != self.channels:
            raise ValueError(f"block shape {block.shape} does not match (frames, {self.channels})")
        if self.channels == 1:
            return np.ascontiguousarray(block[:, 0], dtype=np.float32)
        parts: list[np.ndarray] = []
        while len(block):  # span by span: a choice changes the mix from the next span on
            take = self._span - self._seen
            parts.append(self._watch(block[:take]))
            block = block[take:]
        if len(parts) == 1:
            return parts[0]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)

    def _averaged(self) -> tuple[int, ...]:
        if self.choice is not None:
            return self.choice.channels
        return tuple(range(self.channels)) if self._before is None else self._before.channels

    def _watch(self, head: np.ndarray) -> np.ndarray:
        """The mix in force of ``head`` (at most what is left of the span), its products counted; the choice once
        the span is full."""
        if self._origin is None:
            self._origin = head[0].astype(np.float64)
            self._moved[:] = False
        mixed = self._first_mix(head) if self.choice is None and self._before is None else _mean(head, self._averaged())
        # channel-major, so that the products and sums run along contiguous rows (numpy's sum down the frames of
        # a frame-major block took 30 times as long: 0.7 ms of each second of stereo audio, now every span is watched)
        wide = np.subtract(head.T, self._origin[:, None], dtype=np.float64, order="C")
        self._products += wide @ wide.T
        self._sums += wide.sum(axis=1)
        self._seen += len(head)
        if self._seen >= self._span:
            self._choose()
        return mixed

    def _first_mix(self, head: np.ndarray) -> np.ndarray:
        """Before the first choice: the mean of the channels that have carried more than one value since the span
        began (of all of them while none has). A constant is not sound: a channel stuck at one code from the start
        (a dead converter), averaged in until the choice left it out, stepped the mix's offset there, a click that
        the levels and the loudness rule heard as a loud sound that nothing made; an empty slot read the first
        half second 6 dB low."""
        changed = head != self._origin
        first = np.where(changed.any(axis=0), changed.argmax(axis=0), len(head))
        first[self._moved] = 0
        self._moved |= first < len(head)
        cuts = sorted({0, *(int(f) for f in first if f < len(head))})
        parts = [_mean(head[start:stop], tuple(int(c) for c in np.flatnonzero(first <= start)) or self._averaged())
                 for start, stop in zip(cuts, [*cuts[1:], len(head)])]
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def _choose(self) -> None:
        """At a span's end: the first choice, or a new one when a channel left out as dead carries sound (a
        hard-panned intro, an input unmuted in the mixer later: left out for good, all it carried was lost), or a
        channel averaged carries one value over the whole span (it died, or stuck at one code). An averaged channel
        that is only quiet stays (``keep``): left out whenever it fell 60 dB below the loudest, a far microphone
        that heard a near sound 75 dB down stepped the level 6 dB in the middle of the sound, and two quiet
        microphones 60 dB apart flipped the mix to and fro."""
        centred = self._centred()
        self._seen, self._products[:], self._sums[:], self._origin = 0, 0.0, 0.0, None
        if centred is None:
            return
        if self.choice is None:
            self.choice = choose(centred)
        elif _live(centred, self.choice.dead).any() or not _moving(centred, self.choice.channels).all():
            self.choice = choose(centred, keep=self.choice.channels)

    def _centred(self) -> np.ndarray | None:
        """The span's products less the channels' offsets (a DC offset is not sound: in the raw products two offsets
        that add up hid a pair that cancels, and an unconnected input's constant read as a live channel). None when
        they tell channels by nothing: digital silence or a constant (a device warming up), or an inf or NaN sample
        (beside an infinite channel no channel is live, not even that one)."""
        if not (np.isfinite(self._products).all() and np.isfinite(self._sums).all()):
            return None
        centred = self._products - np.outer(self._sums, self._sums) / self._seen
        return centred if np.diag(centred).max() > 0 else None


SAY_AGAIN_S = 3600.0
"""A mix said once is said again only this long after (:class:`MixNews`)."""


class MixNews:
    """What the log says of each input's mix as it changes: a mix that leaves channels out at WARNING (its note),
    the return to every channel at INFO. Each (input, channels) once per SAY_AGAIN_S: a reopen comes to the same
    mix again (and which of a pair in opposite phase is louder may change from one reopen to the next), and an empty
    I2S slot whose stray words take it back now and then would say so twice a minute; said only once for good, a
    channel that carried sound again and then really died an hour later went unsaid."""

    def __init__(self) -> None:
        self._current: dict[str, tuple[int, ...]] = {}
        self._said: dict[tuple[str, tuple[int, ...]], float] = {}

    def of(self, source: str, choice: MixChoice | None, now: float) -> tuple[int, str] | None:
        """(log level, message) for ``source``'s mix ``choice`` at monotonic time ``now``, or None: nothing new."""
        before = self._current.get(source)
        if choice is None or choice.channels == before:
            return None
        self._current[source] = choice.channels
        if choice.note is None and before is None:  # the first mix, of every channel: nothing to say
            return None
        if now - self._said.get((source, choice.channels), -math.inf) < SAY_AGAIN_S:
            return None
        self._said[(source, choice.channels)] = now
        if choice.note is None:
            return logging.INFO, (f"audio input {source}: every channel carries sound again (averaging channels "
                                  f"{_names(choice.channels)})")
        return logging.WARNING, f"audio input {source}: {choice.note}"


def choose(products: np.ndarray, keep: tuple[int, ...] = ()) -> MixChoice:
    """The mix for channels whose sums of products (``x.T @ x`` over the same samples, offsets taken out) are
    ``products``; channels of ``keep`` count as live unless they carried one value only."""
    power = np.diag(products)
    loudest = int(np.argmax(power))
    n = len(power)
    heard = _live(products, tuple(range(n)))
    heard[list(keep)] |= _moving(products, keep)
    live = tuple(int(c) for c in np.flatnonzero(heard))
    weights = np.zeros(n)
    weights[list(live)] = 1 / len(live)
    mean_power = float(weights @ products @ weights)
    uncorrelated = float(power[list(live)].mean()) / len(live)
    dead = tuple(c for c in range(n) if c not in live)
    if len(live) > 1 and mean_power < CANCEL_RATIO * uncorrelated:
        below = 10 * np.log10(power[loudest] / max(mean_power, 1e-300))
        which = f"the {n} channels" if len(live) == n else f"channels {_names(live)} of {n}"
        return MixChoice((loudest,), f"{which} cancel when averaged (their mean is "
                                     f"{below:.0f} dB below channel {loudest + 1}: wired in opposite phase?); "
                                     f"taking channel {loudest + 1} alone", dead)
    if dead:
        return MixChoice(live, f"channel(s) {_names(dead)} of {n} carry no sound; averaging channel(s) "
                               f"{_names(live)} alone, so levels are not read {20 * np.log10(n / len(live)):.1f} dB low",
                         dead)
    return MixChoice(live, None)


def _live(products: np.ndarray, channels: tuple[int, ...]) -> np.ndarray:
    """Which of ``channels`` carry sound over the span of ``products`` (within DEAD_DB of the loudest)."""
    power = np.diag(products)
    return power[list(channels)] > power.max() * 10 ** (DEAD_DB / 10)


def _moving(products: np.ndarray, channels: tuple[int, ...]) -> np.ndarray:
    """Which of ``channels`` carried more than one value over the span of ``products`` (offsets taken out: a constant
    channel's is exactly zero)."""
    return np.diag(products)[list(channels)] > 0


def _mean(block: np.ndarray, channels: tuple[int, ...]) -> np.ndarray:
    """The mean of ``channels``, float32, summed column by column: numpy's mean across a frame's few channels took
    20 times as long."""
    total = np.array(block[:, channels[0]], dtype=np.float32)
    for channel in channels[1:]:
        total += block[:, channel]
    if len(channels) > 1:
        total /= np.float32(len(channels))
    return total


def _names(channels: tuple[int, ...]) -> str:
    """1-based, as a user counts channels."""
    return ", ".join(str(c + 1) for c in channels)

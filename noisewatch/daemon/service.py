"""The daemon's shell: start-up validation, the audio source, reloads, signals, systemd.

The service is a small state machine (:class:`State`), driven by one thread, the processing loop:

    STARTING -> LISTENING <-> AUDIO_LOST (reopening with capped backoff) -> STOPPING -> STOPPED
    STARTING -> AUDIO_LOST (no input at start: waited for) or STOPPING
                LISTENING -> REOPENING -> LISTENING, AUDIO_LOST, REOPENING (another such reload) or STOPPING

SIGHUP leaves LISTENING only to reopen a changed input: the new configuration is validated and its pipeline and sinks
opened beside the running ones, then swapped in between two reads (the source keeps running, so a
replayed file goes on where it was); anything that fails leaves the running set-up untouched. Only
a change to what a live input is opened with (:meth:`AudioSection.opens_as`) reopens the device (REOPENING), once
what it heard has gone through the pipeline, with a gap (open events end where its audio did); a reload asked for
meanwhile waits for the reopened input. In AUDIO_LOST a reload is applied at
once (an audio section that cannot be opened now is warned about, not refused: the device is what is
missing), so the next reopening tries the new one. SIGTERM/SIGINT close open events, flush the sinks
and exit 0. Everything after the ring buffer lives in :mod:`.pipeline`, every message leaves through
:mod:`.outbox`.
"""

from __future__ import annotations

import argparse
import enum
import logging
import math
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from noisewatch import __version__, logs
from noisewatch.bundle import BundleError
from noisewatch.config import EX_CONFIG, NO_SETTINGS, Config, ConfigError, config_changes
from noisewatch.daemon import notify
from noisewatch.daemon.events import SampleClock, started_iso
from noisewatch.daemon.levels import DIGITAL_SILENCE_S, DigitalSilence, SilenceChange
from noisewatch.daemon.messages import AudioState, Message, Stats, Status
from noisewatch.daemon.outbox import Outbox
from noisewatch.daemon.pipeline import Counters, Pipeline
from noisewatch.daemon.resample import MonoResampler
from noisewatch.daemon.ringbuffer import AudioBlock
from noisewatch.daemon.setup import (
    Overrides,
    Setup,
    audio_findings,
    hidden_thresholds,
    open_sinks,
    prepare,
    running_listener_warnings,
    setup_warnings,
    stored_threshold_warnings,
)
from noisewatch.daemon.signals import Signals, installed
from noisewatch.daemon.sinks import Sink
from noisewatch.daemon.sinks.jsonl import JsonlSink
from noisewatch.daemon.sources import AudioSource, SourceError, open_source
from noisewatch.downmix import MixChoice, MixNews
from noisewatch.recording_checks import below_model_rate
from noisewatch.stdout_report import report

log = logging.getLogger(__name__)
READ_TIMEOUT_S = 0.1
"""Longest the loop waits for audio before checking signals, the watchdog and the source."""
READ_FRAMES = 32768
"""Most input frames one read takes: more than a 0.5 s hop at 48 kHz, so that a replay at full speed hands
over once a window, not once per 8192-frame block.

Each read waits (up to READ_TIMEOUT_S) for the input the next window still needs
(:meth:`MonoResampler.input_for` of :attr:`Pipeline.samples_to_window`): a microphone delivers ~47 blocks a
second, and a read of each costs a wake-up, a resampler call and the pipeline's bookkeeping. So the loop reads
~10 times a second, and the read that completes a window ends with the block that completes it, as a read per
block did (tests/test_resample.py)."""
FIRST_BACKOFF_S = 1.0
STABLE_S = 60.0
"""A source that delivered audio this long counts as healthy again: the next failure starts the backoff afresh."""
CLOCK_CHECK_S = 60.0
MAX_CLOCK_DRIFT_S = 0.5
"""Live input only: event timestamps may lag wall time by the audio still in the ring, well under this."""
TROUBLE_REMIND_S = 3600.0
"""A lost input that keeps failing the same way is said once, then again this often with the count: at every
attempt (every 30 s), an unplugged microphone filled the journal with one line, 2,880 a day."""
AUDIO_STALL_S = 5.0
"""A live input that delivers nothing for this long is treated as failed and reopened."""
BROKER_PROBE_S = 5.0
"""``check-config``: how long it waits for the broker's answer."""
LOSS_SAY_S = 60.0
"""Audio lost on the way in (dropped by the ring, overrun in the sound card, unreadable samples) is said at most
this often per kind (with the total since)."""
EX_NOINPUT = 66
"""sysexits.h: a replayed file that cannot be opened or read to its end (never retried: it would replay
the same audio again and report its events twice)."""


class State(enum.Enum):
    """Where the service is; see the module docstring for the transitions."""

    STARTING = "starting"
    LISTENING = "listening"
    REOPENING = "reopening"
    """A reload changed what the live input is opened with (``AudioSection.opens_as``): what opens next is said, as at start-up (the device it
    named stayed unsaid: Home Assistant's Audio input kept the old one's name)."""
    AUDIO_LOST = "audio lost"
    STOPPING = "stopping"
    STOPPED = "stopped"


class Ending(enum.Enum):
    """Why one source's processing loop returned."""

    STOP = "stop"
    """SIGTERM/SIGINT."""
    FINISHED = "finished"
    """A replayed file was delivered to its end."""
    FAILED = "failed"
    """The source reported a failure."""
    STALLED = "stalled"
    """A live source delivered nothing for AUDIO_STALL_S."""
    REOPEN = "reopen"
    """A reload changed what a live input is opened with (``AudioSection.opens_as``)."""


@dataclass
class Active:
    """The running configuration's pipeline and outbox."""

    setup: Setup
    pipeline: Pipeline
    outbox: Outbox
    thresholds_applied: dict[str, float] = field(default_factory=dict)
    """The overrides from the sinks (Home Assistant) the detector runs with."""

    @classmethod
    def open(cls, setup: Setup, counters: Counters, running: Sequence[Sink] = (),
             stopping: threading.Event | None = None) -> "Active":
        """Pipeline built, sinks opened (or kept from ``running``): the sinks last, so that nothing after them can
        fail and leave a new MQTT client running beside the one it was to replace; raises ConfigError when a
        sink cannot open. ``stopping``: set when the service is asked to stop (a sink that waits gives up then)."""
        pipeline = Pipeline.from_config(setup.config, setup.bundle, setup.model, SampleClock.starting_now(), counters)
        outbox = Outbox(setup.config.device_id, open_sinks(setup, running, stopping))
        log.info("model %s (%s, %s), hop %.3f s", setup.bundle.ident, setup.bundle.variant,
                 setup.model.runtime, pipeline.hop_s)
        active = cls(setup, pipeline, outbox)
        for warning in setup_warnings(setup.config) + list(setup.audio_warnings):
            log.warning("%s", warning)
        active.follow_thresholds()  # kept from an earlier run: they win over the config's from the first window
        for hidden in hidden_thresholds(setup.config, active.thresholds_applied):
            log.warning("%s", hidden)
        return active

    def follow_thresholds(self) -> None:
        """Thresholds set from Home Assistant since the last call, in force from the next window."""
        overrides = self.outbox.threshold_overrides()
        if overrides != self.thresholds_applied:
            self.pipeline.detector.set_thresholds(overrides)
            self.thresholds_applied = overrides

    def close(self, keep: Sequence[Sink] = (), report: Callable[[], Message] | None = None) -> None:
        """Open events closed and sent, then ``report`` (the last health report, at a stop), sinks flushed and closed
        (but those in ``keep``)."""
        self.outbox.publish(self.pipeline.finish())
        if report is not None:
            self.outbox.publish([report()])
        self.outbox.close(keep)


def _mix_key(source: AudioSource) -> tuple[str, int, int]:
    """An input as its channel mix is remembered across reopens: its name, rate and channels."""
    return source.name, source.sample_rate, source.channels


class Backoff:
    """Capped exponential waits between reopening attempts; reset once a source has been healthy a while. The cap is
    the one configured at each wait: a reload's new ``audio.reopen_max_s`` applies from the next (it waited out the
    start's cap until a restart)."""

    def __init__(self) -> None:
        self.next_s = FIRST_BACKOFF_S

    def take(self, max_s: float) -> float:
        wait = min(self.next_s, max_s)
        self.next_s = min(2 * wait, max_s)
        return wait

    def healthy(self) -> None:
        self.next_s = FIRST_BACKOFF_S


class Service:
    """Runs the pipeline on a live or replayed source until stopped."""

    def __init__(self, setup: Setup, signals: Signals | None = None) -> None:
        self.state = State.STARTING
        self.signals = signals or Signals()
        self._stop, self._reload, self._noted = self.signals.stop, self.signals.reload, self.signals.noted
        self._started = time.monotonic()
        self._ready = False
        self.counters = Counters()
        """Lifetime health counters, carried across reloads and reopened sources."""
        self.active = Active.open(setup, self.counters, stopping=self._stop)
        self._status = Status(AudioState.LISTENING)
        """The audio input's state as last said (a reload says it again, to sinks it may have replaced)."""
        self._silence = DigitalSilence()
        """Goes on across a reload's reopen of the same input (still silent: not said to listen again); starts afresh
        for another input and after a lost one."""
        self._rate_said: tuple[str, int] | None = None
        """The input and rate last warned of as below the model's: said once, not at every reopen."""
        self._mix_news = MixNews()
        """What the log last said of each input's channel mix: each change said, each mix once an hour."""
        self._mixes: dict[tuple[str, int, int], MixChoice] = {}  # by _mix_key
        """Each input's (name, rate, channels) last channel mix: a reopen mixes as before until it chooses anew (from
        the plain mean, the first half second after each return of an I2S microphone read 6 dB low)."""
        self._ticks = _Ticks()
        """Health reports go on while the input is lost: Home Assistant's diagnostics froze, then went unavailable."""
        self._dropped, self._overruns, self._unreadable = _Tally(), _Tally(), _Tally()
        """Audio lost on the way in, by kind: said at once, then at most every LOSS_SAY_S (``_say_losses``)."""
        self._source_name = _wanted_input(setup)
        """The input last opened or being tried (before any: the one asked for), named in health reports."""
        self._trouble: _Trouble | None = None
        """The input's failures since it last listened, while they say the same thing."""

    @property
    def setup(self) -> Setup:
        return self.active.setup

    def stop(self) -> None:
        self._stop.set()

    def run(self) -> int:
        """Listen until stopped (0), a replayed file ends (0) or cannot be read (EX_NOINPUT)."""
        try:
            return self._keep_listening()
        finally:
            self.state = State.STOPPING
            notify.stopping()
            self.active.close(report=self._stats)  # the retained stats counted the last events short of a stop
            self.state = State.STOPPED

    def _keep_listening(self) -> int:
        """Open the source, pump it, and reopen a live one with backoff whenever it fails."""
        backoff = Backoff()
        while not self._stop.is_set():
            if self._reload.is_set() and self.state is not State.REOPENING:  # asked for while the input was lost:
                self._swap(None)  # what is opened next is the new audio (one asked for during a reopen waits for the
                # reopened input, which checks it as one while listening)
            try:
                source = open_source(self.setup.config.audio, self.setup.input_path, self.setup.speed)
                source.start()
            except SourceError as exc:
                if self.setup.input_path is not None:
                    return self._replay_failed(str(exc))
                self._audio_trouble(_wanted_input(self.setup), f"cannot open audio input: {exc}",
                                    backoff.take(self.setup.config.audio.reopen_max_s))
                continue
            with source:
                opened = time.monotonic()
                ending = self._pump(source)
                self._say_losses(source, 0.0, 0, 0, final=True)  # what the last minute kept: said before it is gone
            if ending in (Ending.STOP, Ending.FINISHED):
                return 0
            if time.monotonic() - opened >= STABLE_S:  # the next failure, a reopen's too, waits from the start
                backoff.healthy()
            if ending is Ending.REOPEN:
                self.state = State.REOPENING
                continue
            if not source.live:
                return self._replay_failed(source.failed or f"{source.name}: no audio for {_stall_s(source):.0f} s")
            why = source.failed or f"no audio for {_stall_s(source):.0f} s"
            self.active.outbox.publish(self.active.pipeline.gap())
            self._audio_trouble(source.name, f"audio input {source.name} failed: {why}",
                                backoff.take(self.setup.config.audio.reopen_max_s))
        return 0

    def _audio_trouble(self, source: str, text: str, wait_s: float) -> None:
        """``source`` is lost (or cannot be opened): said, with its name (Home Assistant's Audio input showed a source
        of null, where the health reports named the input), and waited for ``wait_s``."""
        self.state = State.AUDIO_LOST
        self._source_name = source  # the one tried now: after a reload that named another, health named the old one
        self._say_trouble(text, wait_s)
        status = Status(AudioState.AUDIO_ERROR, source=source, error=text)
        if status != self._status:  # a state change, not each attempt: the retained topic holds it
            self._publish_status(status)
        notify.status(text)
        self._started_up()  # waiting for a device: up, and saying why it hears nothing
        deadline = time.monotonic() + wait_s
        while True:  # before each second of the wait, not after it: waits of 1 s or less (audio.reopen_max_s) made none
            notify.watchdog()  # waiting for a device is not a hang
            self._report_health()
            remaining = deadline - time.monotonic()
            self._noted.clear()  # before the look at both: one set after it ends the wait at once
            if remaining <= 0 or self._stop.is_set() or self._reload.is_set():
                return  # a reload may name the device to try: at once, not after the wait (it looked once a second)
            self._noted.wait(min(1.0, remaining))

    def _say_trouble(self, text: str, wait_s: float) -> None:
        """A failure said at once; the same failure again only every TROUBLE_REMIND_S, with how long and how often."""
        now, trouble = time.monotonic(), self._trouble
        if trouble is None or trouble.text != text:  # since it was lost, not since this way of failing
            since, attempts = (now, 0) if trouble is None else (trouble.since, trouble.attempts)
            self._trouble = _Trouble(text, since, now, attempts + 1)
            log.warning("%s; retrying in %.0f s", text, wait_s)
            return
        trouble.attempts += 1
        if now - trouble.said_at >= TROUBLE_REMIND_S:
            trouble.said_at = now
            log.warning("%s (still: %d attempts in %s); retrying in %.0f s", text, trouble.attempts,
                        _minutes(now - trouble.since), wait_s)

    def _replay_failed(self, why: str) -> int:
        """A replayed file that cannot be opened or read to its end is also the last audio state said: the retained
        audio topic kept the 'listening' of its first blocks after the listener stopped hearing."""
        log.error("%s; stopping (a replayed file is not retried)", why)
        self._publish_status(Status(AudioState.AUDIO_ERROR, source=self._source_name, error=why))
        return EX_NOINPUT

    def _pump(self, source: AudioSource) -> Ending:
        """The processing loop: ring buffer -> resampler -> pipeline -> outbox, until something ends it."""
        resampler = MonoResampler(source.sample_rate, self.active.pipeline.sample_rate, source.channels,
                                  self._mixes.get(_mix_key(source)))
        low = below_model_rate(f"audio input {source.name}", source.sample_rate, self.active.pipeline.sample_rate)
        if low is not None and self._rate_said != (source.name, source.sample_rate):
            self._rate_said = (source.name, source.sample_rate)
            log.warning("%s", low)
        self._source_name = source.name
        last_audio, first, stall_s = time.monotonic(), True, _stall_s(source)
        while not self._stop.is_set():
            if self._reload.is_set() and self._swap(source):
                self._hear_the_rest(source, resampler, first)
                return Ending.REOPEN
            block = source.read(READ_FRAMES, READ_TIMEOUT_S, resampler.input_for(self.active.pipeline.samples_to_window))
            self.active.follow_thresholds()
            pipeline = self.active.pipeline
            if len(block.samples):
                self._take(source, block, resampler, first)
                first = False
                last_audio = time.monotonic()
            elif source.finished and source.ring.available == 0:
                if first:
                    log.warning("%s holds no audio", source.name)
                self.active.outbox.publish(pipeline.process(resampler.flush()))
                if not first and self.counters.windows == 0:  # no window, no event: exit 0 said nothing of it
                    log.warning("%s holds %.1f s of audio, less than one %g s window of the model: nothing was "
                                "classified", source.name, pipeline.position_s, pipeline.bundle.features.window_s)
                return Ending.FINISHED
            elif source.failed:
                return Ending.FAILED
            elif time.monotonic() - last_audio > stall_s:
                return Ending.STALLED
            self._ticks.watchdog()
            if source.live and self._ticks.clock_check_due():
                keep_clock_honest(pipeline, source.read(0, 0).captured)
            self._report_health()
        return Ending.STOP

    def _take(self, source: AudioSource, block: AudioBlock, resampler: MonoResampler, first: bool) -> None:
        """One read's audio through the pipeline, and what it says of the input (its mix, losses, silence)."""
        self.active.outbox.publish(self.active.pipeline.accept(block, resampler.process(block.samples), first))
        self._say_mix(source, resampler)
        self._say_losses(source, block.lost_frames / block.sample_rate, block.overflows, block.nonfinite)
        if resampler.mix.choice is not None:
            self._mixes[_mix_key(source)] = resampler.mix.choice
        self._mark_listening(source)
        if source.live:
            self._watch_silence(source, self._silence.heard(block.samples, source.sample_rate))

    def _hear_the_rest(self, source: AudioSource, resampler: MonoResampler, first: bool) -> None:
        """Before a reload's reopen: the input stopped, what it heard goes through the pipeline, the resampler's
        tail too (the audio that came while the reload prepared, a model loading, was dropped at the close
        uncounted); then a gap, as for a lost input: the reopened one, another device maybe, may be a while
        coming (an open siren stayed ON through a reopen that failed, or ran on into another microphone's audio)."""
        source.stop()
        while len((block := source.read(READ_FRAMES, 0.0)).samples):
            self._take(source, block, resampler, first)
            first = False
        self.active.outbox.publish(self.active.pipeline.process(resampler.flush()) + self.active.pipeline.gap())

    def _say_mix(self, source: AudioSource, resampler: MonoResampler) -> None:
        """The channel mix as it changes (:class:`MixNews`)."""
        if (news := self._mix_news.of(source.name, resampler.mix.choice, time.monotonic())) is not None:
            log.log(*news)

    def _swap(self, source: AudioSource | None) -> bool:
        """SIGHUP: open the new set-up beside the running one and swap it in; True when the live input must
        be reopened for a change to what it is opened with (``source`` None: no input is open). On any failure the
        running set-up stays as it was."""
        self._reload.clear()
        self._notify(notify.reloading)
        old = self.active
        try:
            setup = prepare(old.setup.config_path, old.setup.overrides, old.setup.input_path, old.setup.speed,
                            check_audio=source is not None,  # the input is lost: its device is what is missing
                            reload=True)
            if source is None:
                _say_audio_problems(setup)
            _check_sample_rate(setup, old.pipeline)
            new = Active.open(setup, self.counters, running=old.outbox.sinks, stopping=self._stop)
        except (ConfigError, BundleError) as exc:
            # the reason in the message itself: the repeat limiter tells kinds apart by their text before the
            # arguments, and took every refusal for one, so that after five a new mistake went unsaid for a minute
            log.error(f"reload refused, keeping the running configuration: {exc}")
            return self._refused(old)
        except Exception as exc:  # nothing a new config file holds may end a daemon that is listening
            log.exception(f"reload refused, keeping the running configuration: {type(exc).__name__}: {exc}")
            return self._refused(old)
        new.pipeline.take_over(old.pipeline)  # offsets, windows and open events go on: the stream did not break
        new.outbox.publish(old.pipeline.finish())  # the events it could not take over end in the sinks going on
        old.outbox.close(keep=new.outbox.sinks)
        self.active = new
        self._ticks.report_now()
        model = (f"; model {old.setup.bundle.ident} -> {setup.bundle.ident}"
                 if setup.bundle.ident != old.setup.bundle.ident else "")
        log.info("configuration reloaded from %s: %s%s", setup.config_path,
                 config_changes(old.setup.config, setup.config), model)
        if setup.config.logging != old.setup.config.logging:  # after that line: a level raised would hide it
            logs.setup(setup.config.logging)
        reopen = source is not None and source.live and not setup.config.audio.opens_as(old.setup.config.audio)
        if not reopen and self.state in (State.LISTENING, State.AUDIO_LOST):  # said once per change: the new sinks
            new.outbox.publish([self._status])  # are told it; what a reopening opens is said when it gives audio
        self._notify(notify.ready)
        return reopen

    def _refused(self, running: Active) -> bool:
        """A refused reload still reopens the JSON-lines file: logrotate's reload is what follows its move."""
        for sink in running.outbox.sinks:
            if isinstance(sink, JsonlSink):
                sink.reopen()
        self._notify(notify.ready)
        return False

    def _notify(self, say: Callable[[], bool]) -> None:
        """RELOADING=1 and READY=1 of a reload, once start-up is over: before, READY=1 would end systemd's start
        job before the input was first tried (a SIGHUP during start-up)."""
        if self._ready:
            say()

    def _mark_listening(self, source: AudioSource) -> None:
        if self.state is State.LISTENING:
            return
        same_input = self.state is State.REOPENING and source.name == self._status.source
        self.state = State.LISTENING
        if same_input:  # reopened under new settings: its state goes on (a muted one is still silent), said to the
            self._publish_status(self._status)  # sinks the reload may have replaced
            return
        self._silence = DigitalSilence()
        self._started_up()
        self._publish_listening(source)
        if self._trouble is not None:
            log.info("audio input %s is back, after %s lost", source.name, _minutes(time.monotonic() - self._trouble.since))
            self._trouble = None

    def _started_up(self) -> None:
        """READY=1 to systemd once the input was tried: audio flows, or it waits for a device and says so (STATUS,
        the audio state). Held until audio flowed, a start without a microphone kept systemd's start job open for
        good: `systemctl restart` (the installer's) never returned, and boot never reached multi-user.target."""
        if not self._ready:
            self._ready = True
            notify.ready()

    def _say_losses(self, source: AudioSource, dropped_s: float, overruns: int, nonfinite: int,
                    final: bool = False) -> None:
        """Audio the input lost, by kind: each was counted in stats alone, and the log read "listening". Asked at every
        read, loss or not: what was kept within LOSS_SAY_S is said once it is over, not with the next loss (or never);
        ``final`` as the input closes (a stop, a file's end, a lost device): what is kept is said now."""
        if said := self._dropped.add(dropped_s, final):
            dropped, over = said
            log.warning("audio input %s: processing fell behind and %s of audio was dropped%s; events in it "
                        "were not heard (a CPU too busy for the model, or an input that delivers faster than its "
                        "rate; stats count dropped_frames)", source.name, _length(dropped), over)
        if said := self._overruns.add(overruns, final):
            log.warning("audio input %s: the sound card's buffer overran %d time(s)%s: audio was lost before it was "
                        "read, and events in it were not heard (a CPU or USB bus too busy; stats count "
                        "input_overflows)", source.name, *said)
        if said := self._unreadable.add(nonfinite, final):
            log.warning("audio input %s: %d sample(s) were NaN, infinite or beyond 1000 times full scale%s, and were "
                        "read as silence (a driver or file giving another sample format than it says; stats count "
                        "nonfinite_samples)", source.name, *said)

    def _watch_silence(self, source: AudioSource, change: SilenceChange | None) -> None:
        """An input that is open but gives only one value (zeros, a stuck converter's code) is as deaf as a lost one:
        said as loudly (status, log, Home Assistant's problem sensor), and taken back when sound returns."""
        if change is SilenceChange.BEGAN:
            text = (f"{source.name} gives only digital silence (one value, such as exact zeros, for "
                    f"{DIGITAL_SILENCE_S:.0f} s): is the capture muted, its gain at 0, or its converter dead?")
            log.warning("%s", text)
            self._publish_status(Status(AudioState.SILENT, source=source.name, error=text))
            notify.status(text)
        elif change is SilenceChange.ENDED:
            log.info("%s gives sound again", source.name)
            self._publish_listening(source)

    def _publish_listening(self, source: AudioSource) -> None:
        """The input is heard: said to the sinks (the retained audio topic, Home Assistant's Audio input) and to
        systemd's status line."""
        self._publish_status(Status(AudioState.LISTENING, source=source.name))
        notify.status(f"listening on {source.name}")

    def _publish_status(self, status: Status) -> None:
        """The audio state to every sink, and kept: a reload's new sinks are told it, and a trouble said once."""
        self._status = status
        self.active.outbox.publish([status])

    def _report_health(self) -> None:
        """A ``stats`` message when one is due (every ``stats.interval_s``: a reload may change it), and at once when
        a sink's figures changed in a way a user waits on (:meth:`Outbox.report_wanted`)."""
        if self._ticks.stats_due(self.active.setup.config.stats.interval_s) or self.active.outbox.report_wanted():
            self.active.outbox.publish([self._stats()])

    def _stats(self) -> Stats:
        counters, active = self.counters, self.active
        uptime_s = time.monotonic() - self._started
        stats = Stats(
            uptime_s=round(uptime_s, 1),
            started=started_iso(time.time(), uptime_s),
            audio_s=round(active.pipeline.position_s, 1),
            windows=counters.windows,
            gated_windows=counters.gated,
            events=counters.events,
            input_overflows=counters.input_overflows,
            dropped_frames=counters.dropped_frames,
            nonfinite_samples=counters.nonfinite_samples,
            source=self._source_name,
            model=active.setup.bundle.ident,
            runtime=active.pipeline.model.runtime,
            version=__version__,
            audio_state=self._status.state,
        )
        return stats.with_figures(active.outbox.health())


def _stall_s(source: AudioSource) -> float:
    """How long without a block an input is taken for stalled: AUDIO_STALL_S, or two blocks' time where blocks come
    further apart (a large block at a low rate: every 8 s, and such an input was reopened every 5 s, never heard)."""
    return max(AUDIO_STALL_S, 2 * source.block_interval_s)


def _wanted_input(setup: Setup) -> str:
    """The input a set-up asks for, as health reports name it before one is open."""
    if setup.input_path is not None:
        return setup.input_path
    device = setup.config.audio.device
    return "default input" if device is None else str(device)


def _say_audio_problems(setup: Setup) -> None:
    """A reload while the input is lost is applied even when its audio section cannot be opened now (the
    device may come back): what is wrong with it is said, as the reopening will keep saying."""
    problems, warnings = audio_findings(setup.config, setup.input_path)
    for problem in problems + warnings:
        log.warning("reload applied while the audio input is lost, but %s; retrying it", problem)


def _check_sample_rate(setup: Setup, running: Pipeline) -> None:
    """The sample clock, the resampler and the level meter run at the model's rate; switching it mid-stream
    would misdate every event and feed the model audio at the wrong rate, so it takes a restart."""
    rate = setup.bundle.features.sample_rate
    if rate != running.sample_rate:
        raise ConfigError(f"model.path: the new model hears at {rate} Hz, the running one at {running.sample_rate} Hz;"
                          " restart the service to switch to it")


@dataclass
class _Trouble:
    """How the input keeps failing (its latest way), since when it is lost, how often, when last said."""

    text: str
    since: float
    said_at: float
    attempts: int = 1


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 60 else f"{seconds:.0f} s"


def _over(seconds: float) -> str:
    """How long a tally covers, in words: a file replayed at --speed 0 closes within a second of the last say, and
    "in the last 0 s" read as no time at all."""
    if seconds < 0.05:
        return " since the last such warning"
    return f" in the last {seconds:.1f} s" if seconds < 10 else f" in the last {_minutes(seconds)}"


def _length(seconds: float) -> str:
    """A length of lost audio, in ms under 0.1 s: a first loss of a few ms read "0.0 s of audio was dropped"."""
    return f"{seconds:.1f} s" if seconds >= 0.1 else f"{seconds * 1000:.3g} ms"


class _Tally:
    """A kind of lost audio, said at once and then at most every LOSS_SAY_S with the total since: on an overloaded
    Pi the events had holes, counted in stats and said nowhere; said at every read, a log would fill."""

    def __init__(self) -> None:
        self._unsaid: float = 0
        self._since = time.monotonic()
        self._next = -math.inf

    def add(self, amount: float, final: bool = False) -> tuple[float, str] | None:
        """(the total to say, over what time), or None while within LOSS_SAY_S of the last time said (unless ``final``:
        the input closes) or with nothing unsaid (``amount`` 0: a read that lost nothing, when what was kept may be
        due)."""
        self._unsaid += amount
        if not self._unsaid:
            return None
        now = time.monotonic()
        if now < self._next and not final:
            return None
        said = (self._unsaid, _over(now - self._since) if self._next > -math.inf else "")
        self._unsaid, self._since, self._next = 0, now, now + LOSS_SAY_S
        return said


class _Ticks:
    """Wall-clock cadence for the watchdog, health reports and clock checks (edges, not the pipeline)."""

    def __init__(self) -> None:
        interval = notify.watchdog_interval()
        self._watchdog_every = interval / 3 if interval else None
        now = time.monotonic()
        self._next_watchdog, self._next_clock = now, now + CLOCK_CHECK_S
        # one health report as audio starts: Home Assistant showed the last run's uptime for a whole interval,
        # and its diagnostic sensors stayed unavailable that long
        self._last_stats = -math.inf

    def watchdog(self) -> None:
        now = time.monotonic()
        if self._watchdog_every is not None and now >= self._next_watchdog:
            notify.watchdog()
            self._next_watchdog = now + self._watchdog_every

    def report_now(self) -> None:
        """A reload: the next health report goes at once. Under a new device id, topic prefix or broker Home
        Assistant's stats sensors were unavailable until it, and a new model showed as the old one as long."""
        self._last_stats = -math.inf

    def stats_due(self, every_s: float) -> bool:
        now = time.monotonic()
        if now - self._last_stats < every_s:
            return False
        self._last_stats = now
        return True

    def clock_check_due(self) -> bool:
        now = time.monotonic()
        if now < self._next_clock:
            return False
        self._next_clock = now + CLOCK_CHECK_S
        return True


def keep_clock_honest(pipeline: Pipeline, captured: datetime) -> None:
    """A sound card's sample clock drifts from wall time (100 ppm is 4 min a month), and NTP may step
    the wall clock after boot: re-anchor when they disagree by more than MAX_CLOCK_DRIFT_S.
    ``captured`` is when the audio at the pipeline's position was captured."""
    drift_s = pipeline.clock_error_s(captured)
    if abs(drift_s) > MAX_CLOCK_DRIFT_S:
        log.info("sample clock and wall clock differ by %.2f s; timestamps re-anchored", drift_s)
        pipeline.heard_at(captured)


def _fail(exc: Exception) -> int:
    for line in str(exc).splitlines():
        print(f"noisewatch: {line}", file=sys.stderr)
    return EX_CONFIG


def main(args: argparse.Namespace) -> int:
    """``noisewatch run``."""
    signals = installed()  # as a rule already, by the command line before it imported this module
    try:
        try:
            setup = prepare(args.config, Overrides(args.model, args.jsonl), args.input, args.speed)
            logs.setup(setup.config.logging)
            service = Service(setup, signals)
        except (ConfigError, BundleError) as exc:
            return _fail(exc)
        return service.run()
    finally:  # as Python finalizes it gives each handled signal its default action back: a reload asked for now
        # ended the process (exit 129), and a stop asked for again (systemd's and a kill, Ctrl-C twice) killed it
        # (-15, -2) instead of letting it exit 0; the sinks are flushed by now, and the no-op handlers did no more
        for signum in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, signal.SIG_IGN)


def _try_the_broker(config: Config) -> str:
    """``check-config``: connect once, as ``run`` would. A broker that is down, or refuses, is a warning, not an
    error: ``run`` keeps retrying and spools events meanwhile (and the broker may not be up yet at install)."""
    from noisewatch.daemon.sinks.mqtt_client import probe_listener  # paho: only where MQTT is on

    trouble = probe_listener(config, config.mqtt_password(), BROKER_PROBE_S)
    if trouble is None:
        return f"; MQTT broker {config.mqtt.host}:{config.mqtt.port} took the connection"
    print(f"noisewatch: warning: {trouble} (run keeps retrying and spools events meanwhile)", file=sys.stderr)
    return ""


def check_config_main(args: argparse.Namespace) -> int:
    """``noisewatch check-config FILE``: validate config, bundle and device without starting."""
    try:
        setup = prepare(args.config)
    except (ConfigError, BundleError) as exc:
        return _fail(exc)
    blank = [f"{args.config}: {NO_SETTINGS}: a start takes every default, but a reload refuses it; write {{}} "
             "for every default"] if setup.config.read_no_settings else []
    for warning in (blank + setup_warnings(setup.config) + running_listener_warnings(setup.config)
                    + stored_threshold_warnings(setup.config, setup.bundle.labels) + list(setup.audio_warnings)):
        print(f"noisewatch: warning: {warning}", file=sys.stderr)
    broker = ""
    if setup.config.mqtt.enabled:
        broker = _try_the_broker(setup.config)
    ok = f"{args.config}: ok (model {setup.bundle.ident}, {len(setup.bundle.labels)} labels{broker})"
    return report(lambda: print(ok))  # a stdout that cannot take it (> /dev/full) ended in a traceback

"""The on-disk spool: durable, ordered, bounded by size and age, tolerant of crash leftovers."""

from __future__ import annotations

import logging
import resource
import shutil
import signal
import threading
from pathlib import Path
from typing import Any

import pytest

from noisewatch.daemon.sinks.spool import DEAD_LETTER, MIB, QUARANTINE, Spool


class FakeClock:
    """A settable wall clock (time is an input of the pure spool logic, not a stand-in for a part)."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_messages_survive_reopen_in_order_and_numbers_keep_growing(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_mb=1, max_age_h=1)
    seqs = [spool.append("t/events", b'{"n":%d}' % i) for i in range(5)]
    spool.remove(seqs[1])
    reopened = Spool(tmp_path, max_mb=1, max_age_h=1)
    entries = reopened.after(0, 100)
    assert [e.payload for e in entries] == [b'{"n":0}', b'{"n":2}', b'{"n":3}', b'{"n":4}']
    assert all(e.topic == "t/events" for e in entries)
    assert reopened.append("t/events", b"x") > seqs[-1]
    assert reopened.depth == 5


def test_after_pages_through_the_spool(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_mb=1, max_age_h=1)
    seqs = [spool.append("t", b"%d" % i) for i in range(10)]
    first = spool.after(0, 4)
    assert [e.seq for e in first] == seqs[:4]
    assert [e.seq for e in spool.after(first[-1].seq, 100)] == seqs[4:]


def test_size_bound_drops_oldest_first_and_counts(tmp_path: Path) -> None:
    probe = Spool(tmp_path / "probe", max_mb=1, max_age_h=1)
    probe.append("t", b"A" * 1000)
    room = 4 * probe.size_bytes + 100  # four messages fit (headers vary by a few bytes), five do not
    spool = Spool(tmp_path / "spool", max_mb=room / MIB, max_age_h=1)
    for i in range(10):
        spool.append("t", bytes([65 + i]) * 1000)
    assert spool.size_bytes <= room
    kept = [e.payload[:1] for e in spool.after(0, 100)]
    assert kept == [b"G", b"H", b"I", b"J"]
    assert spool.dropped == 6
    assert len(list((tmp_path / "spool").glob("*.msg"))) == 4


class PumpPausedInItsDrop(Spool):
    """The real spool, whose pump thread is held after it picked the messages it drops and before it removes them,
    until ``go``: where the processing loop's own drop can pick the same ones."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.picked, self.go = threading.Event(), threading.Event()
        super().__init__(*args, **kwargs)

    def _remove(self, seq: int) -> Any:
        if threading.current_thread().name == "mqtt-pump" and not self.picked.is_set():
            self.picked.set()
            self.go.wait(5)
        return super()._remove(seq)


def test_a_message_the_age_and_the_size_bound_both_drop_is_counted_once(tmp_path: Path) -> None:
    """Found by review: the pump's age drop (every 60 s) and the processing loop's size drop (at each append) can
    pick the same message; it was removed once and counted twice in ``spool_dropped``."""
    clock = FakeClock()
    probe = Spool(tmp_path / "probe", max_mb=1, max_age_h=1)
    probe.append("t", b"A" * 1000)
    room = 3 * probe.size_bytes + 100  # three messages fit, four do not
    spool = PumpPausedInItsDrop(tmp_path / "spool", max_mb=room / MIB, max_age_h=1, clock=clock, boot_clock=clock)
    for old in b"ABC":
        spool.append("t", bytes([old]) * 1000)
    clock.now += 2 * 3600  # all three are over the age bound
    pump = threading.Thread(target=spool.prune, name="mqtt-pump")
    pump.start()
    assert spool.picked.wait(5)
    spool.append("t", b"D" * 1000)  # over the size bound: the oldest, which the pump picked too, goes now
    spool.go.set()
    pump.join(5)
    assert [e.payload[:1] for e in spool.after(0, 10)] == [b"D"]
    assert spool.dropped == 3 == 4 - len(list((tmp_path / "spool").glob("*.msg")))


def test_a_message_dropped_by_a_bound_then_refused_by_the_broker_is_not_a_dead_letter_too(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Found by review: a message handed to the broker, then dropped by a bound (the processing loop's size drop, a
    reload's lowered bound), then refused by the broker (an ACL) was counted in ``spool_dropped`` and again in
    ``spool_dead_letters`` (Home Assistant's "Events lost" sums both), with an ERROR about a file it could not move."""
    clock = FakeClock()
    spool = Spool(tmp_path / "spool", max_mb=1, max_age_h=24, clock=clock, boot_clock=clock)
    seq = spool.append("t", b"A" * 1000)
    clock.now += 2 * 3600
    spool.bound(max_mb=1, max_age_h=1)  # the broker has it; a reload's lower bound drops it
    assert spool.dropped == 1
    spool.set_aside(seq, DEAD_LETTER, "the broker refused it")
    assert spool.dead_letters == 0 and not list(tmp_path.rglob("*.msg")), caplog.text
    assert "cannot move" not in caplog.text and Spool(tmp_path / "spool", 1, 1).dead_letters == 0


def test_age_bound_drops_old_messages_also_after_restart(tmp_path: Path) -> None:
    clock = FakeClock()
    spool = Spool(tmp_path, max_mb=1, max_age_h=1, clock=clock, boot_clock=clock)
    spool.append("t", b"old")
    clock.now += 1800
    spool.append("t", b"new")
    clock.now += 2000  # "old" is now 3800 s old
    reopened = Spool(tmp_path, max_mb=1, max_age_h=1, clock=clock, boot_clock=clock)
    assert [e.payload for e in reopened.after(0, 10)] == [b"new"]
    assert reopened.dropped == 1


def test_crash_leftovers_are_cleaned(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_mb=1, max_age_h=1)
    spool.append("t", b"good")
    (tmp_path / "0000000000000007.tmp").write_bytes(b'{"topic": "t", "crea')  # interrupted write
    (tmp_path / "0000000000000009.msg").write_bytes(b"not json\n")  # damaged by hand
    reopened = Spool(tmp_path, max_mb=1, max_age_h=1)
    assert [e.payload for e in reopened.after(0, 10)] == [b"good"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["0000000000000001.msg", "quarantine"]
    assert [p.name for p in (tmp_path / "quarantine").iterdir()] == ["0000000000000009.msg"]  # kept to look at
    assert reopened.quarantined == 1 and reopened.dropped == 0


def test_a_damaged_payload_is_quarantined_not_published(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_mb=1, max_age_h=1)
    cut, garbled, good = (spool.append("t", b'{"id":"%d","label":"siren"}' % n) for n in range(3))
    for seq, damage in ((cut, lambda data: data[:-5]), (garbled, lambda data: data.replace(b"siren", b"sirEn"))):
        path = tmp_path / f"{seq:016d}.msg"
        path.write_bytes(damage(path.read_bytes()))
    assert [e.seq for e in spool.after(0, 10)] == [good]
    assert spool.quarantined == 2 and spool.depth == 1
    assert sorted(p.name for p in (tmp_path / "quarantine").iterdir()) == [f"{cut:016d}.msg", f"{garbled:016d}.msg"]


def test_a_topic_no_broker_takes_and_a_directory_named_like_a_message_do_not_block_the_queue(tmp_path: Path) -> None:
    (tmp_path / "0000000000000001.msg").mkdir(parents=True)
    spool = Spool(tmp_path, max_mb=1, max_age_h=1)
    bad, good = spool.append("a/+/b", b"x"), spool.append("t", b"y")
    assert [e.seq for e in spool.after(0, 10)] == [good] and spool.dead_letters == 1 and bad < good


def test_a_failed_write_leaves_no_temporary_behind(tmp_path: Path) -> None:
    """A file-size limit makes the write fail as a full disk does (EFBIG instead of ENOSPC)."""
    spool = Spool(tmp_path, max_mb=1, max_age_h=1)
    limits = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (64, limits[1]))
    try:
        with pytest.raises(OSError):
            spool.append("t", b"x" * 1000)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, limits)
        signal.signal(signal.SIGXFSZ, previous)
    assert not list(tmp_path.glob("*.tmp")) and spool.depth == 0
    assert spool.append("t", b"y") and spool.depth == 1  # and it works again once the disk takes it


def test_remove_is_idempotent(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_mb=1, max_age_h=1)
    seq = spool.append("t", b"x")
    spool.remove(seq)
    spool.remove(seq)
    assert spool.depth == 0 and spool.size_bytes == 0


def test_a_message_whose_file_went_away_is_forgotten_and_said_lost(tmp_path: Path,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    """Found by fault injection: spooled events whose files were deleted (or whose disk went) were dropped without a
    line or a count; the log said "0 message(s) left in the spool"."""
    spool = Spool(tmp_path, max_mb=1, max_age_h=1)
    gone, kept = spool.append("t", b"x"), spool.append("t", b"y")
    (tmp_path / f"{gone:016d}.msg").unlink()  # removed behind its back
    assert [e.seq for e in spool.after(0, 10)] == [kept] and spool.depth == 1
    assert spool.dropped == 1
    assert [r.levelno for r in caplog.records if f"{gone:016d}.msg is gone" in r.getMessage()] == [logging.ERROR]
    spool.remove(kept)  # acknowledged: no loss
    assert spool.after(0, 10) == [] and spool.dropped == 1


def test_a_deleted_folder_is_made_again_but_not_under_a_parent_that_is_gone_too(tmp_path: Path) -> None:
    """An unplugged disk takes the mount point's contents with it: the spool must not fill the root file
    system by making the whole path again (the events wait in the sink's memory instead)."""
    spool = Spool(tmp_path / "disk" / "spool", max_mb=1, max_age_h=1)
    shutil.rmtree(tmp_path / "disk" / "spool")
    assert spool.append("t", b"x") and spool.directory.is_dir()
    shutil.rmtree(tmp_path / "disk")
    with pytest.raises(FileNotFoundError):
        spool.append("t", b"y")
    assert not (tmp_path / "disk").exists()


def test_the_size_bound_is_what_the_messages_take_on_disk(tmp_path: Path) -> None:
    """Found in a fault run: the bound counted message bytes, and a spool at its 50 MiB held 122,001 event-sized
    files that took 482 MB of ext4 (a 400-byte file takes a 4 KiB block), 40 MB of memory for their index and
    18 s to open."""
    spool = Spool(tmp_path / "spool", max_mb=0.1, max_age_h=1)
    for _ in range(200):
        spool.append("noisewatch/test/events", b"x" * 400)
    on_disk = sum(path.stat().st_blocks * 512 for path in (tmp_path / "spool").glob("*.msg"))
    assert on_disk <= 0.1 * MIB, on_disk
    assert on_disk <= spool.size_bytes <= 0.1 * MIB  # what stats reports as spool_bytes (small files may be inlined)
    assert spool.dropped > 0 and spool.depth >= 20  # still room for the newest


def test_a_wall_clock_step_does_not_age_messages(tmp_path: Path) -> None:
    """Found in a fault run: a Pi without a real-time clock starts at the time it was switched off, and NTP then
    steps it forward: six messages spooled a minute before a step of 8 days were dropped as "older than 168 h".
    Within a boot, age is counted on the boot's clock; a message of an earlier boot has only the wall clock."""
    wall, boot = FakeClock(), FakeClock(100.0)
    spool = Spool(tmp_path, max_mb=1, max_age_h=168, clock=wall, boot_clock=boot, boot_id="this-boot")
    spool.append("t", b"spooled before the step")
    wall.now += 8 * 86400  # NTP sets the clock right
    boot.now += 60
    assert spool.prune() == 0
    reopened = Spool(tmp_path, max_mb=1, max_age_h=168, clock=wall, boot_clock=boot, boot_id="this-boot")
    assert reopened.depth == 1 and reopened.dropped == 0  # a restart of the daemon, same boot
    boot.now += 168 * 3600
    assert reopened.prune() == 1  # the bound still holds, on the boot's clock
    spool.append("t", b"from the last boot")
    after_reboot = Spool(tmp_path, max_mb=1, max_age_h=168, clock=wall, boot_clock=FakeClock(5.0), boot_id="next-boot")
    assert after_reboot.depth == 1  # aged by the wall clock: 0 s
    wall.now += 169 * 3600
    assert after_reboot.prune() == 1


@pytest.mark.parametrize("header", [b"[1]", b"null", b"42", b'"text"'])
def test_a_header_that_is_json_but_not_an_object_is_quarantined(tmp_path: Path, header: bytes) -> None:
    """A review found it: such a header made the spool's opening raise, and the daemon exit 1 with a traceback
    (a restart loop under systemd), where it used to be set aside."""
    (tmp_path / "0000000000000001.msg").write_bytes(header + b"\npayload")
    spool = Spool(tmp_path, max_mb=1, max_age_h=1, boot_id="this-boot")
    assert spool.depth == 0 and spool.quarantined == 1


def test_a_moved_message_keeps_its_age_on_the_boot_clock(tmp_path: Path) -> None:
    """A review found it: a message moved to a new spool folder (a reload) was aged anew by the wall clock, so
    after a forward step a minute-old one was dropped there."""
    wall, boot = FakeClock(), FakeClock(1000.0)
    old, new = (Spool(tmp_path / name, max_mb=1, max_age_h=168, clock=wall, boot_clock=boot, boot_id="b")
                for name in ("old", "new"))
    old.append("t/events", b'{"id":"e1"}')
    wall.now += 8 * 86400
    boot.now += 60
    new.take_all(old)  # as the MQTT sink moves a spool
    assert new.prune() == 0 and new.depth == 1 and old.depth == 0
    boot.now += 168 * 3600
    assert new.prune() == 1


def test_a_spool_move_is_all_or_none_and_its_bound_drops_count_once(tmp_path: Path) -> None:
    """A review found the all-or-none move's first form counting drops that did not happen: the new folder's size
    bound dropped the oldest copies as they were written, the move failed and was taken back with all eight still
    in the old folder, and every attempt added its drops to ``spool_dropped`` (Home Assistant's "Events lost")."""
    old = Spool(tmp_path / "old", max_mb=1, max_age_h=1)
    for n in range(8):
        old.append("t/events", f'{{"id":"e{n}"}}'.encode())
    block = old.size_bytes // old.depth
    new = Spool(tmp_path / "usb" / "spool", max_mb=2 * block / MIB, max_age_h=1)  # room for the newest two
    shutil.rmtree(tmp_path / "usb")  # its disk unplugged: the move fails at its first write
    for _ in range(3):
        with pytest.raises(FileNotFoundError):
            new.take_all(old)
    assert (old.depth, new.depth, new.dropped) == (8, 0, 0)
    (tmp_path / "usb" / "spool").mkdir(parents=True)
    new.take_all(old)
    assert (old.depth, new.depth, new.dropped) == (0, 2, 6)
    assert [e.payload for e in new.after(0, 8)] == [b'{"id":"e6"}', b'{"id":"e7"}']


def _disk_of(folder: Path) -> int:
    """Bytes the files of ``folder`` take on disk (whole blocks), as the spool counts them."""
    return sum(p.stat().st_blocks * 512 for p in folder.glob("*.msg"))


def test_dead_letters_keep_to_the_spools_size_bound_newest_first(tmp_path: Path) -> None:
    """A broker whose ACL refuses every event (MQTT 5) sent each one to ``dead-letter/`` for good: 2,806 files in 2 h
    of a busy street, about 130 MiB a day, past ``max_mb`` and on until the SD card was full."""
    probe = Spool(tmp_path / "probe", max_mb=1, max_age_h=1)
    probe.append("t", b"A" * 1000)
    room = 4 * probe.size_bytes + 100  # four messages fit, five do not
    spool = Spool(tmp_path / "spool", max_mb=room / MIB, max_age_h=1)
    for i in range(30):
        spool.set_aside(spool.append("t", bytes([65 + i]) * 1000), DEAD_LETTER, "refused")
    dead = tmp_path / "spool" / DEAD_LETTER
    assert _disk_of(dead) <= room
    kept = [int(p.stem) for p in sorted(dead.glob("*.msg"))]
    assert kept == list(range(31 - len(kept), 31)) and len(kept) >= 3, kept  # the newest, down to 90 % of the bound
    assert spool.dead_letters == 30  # every refusal counted, kept or not


def test_a_set_aside_folder_over_a_lowered_bound_keeps_its_newest_at_the_next_start(tmp_path: Path) -> None:
    """A bound lowered to free an SD card holds for the set-aside folders from the start, as for the queue."""
    spool = Spool(tmp_path, max_mb=1, max_age_h=1)
    for i in range(10):
        spool.set_aside(spool.append("t", b"%d" % i), "quarantine", "damaged")
    block = spool._block
    reopened = Spool(tmp_path, max_mb=3 * block / MIB, max_age_h=1)
    kept = sorted(int(p.stem) for p in (tmp_path / "quarantine").glob("*.msg"))
    assert kept == [9, 10]  # the newest, down to 90 % of the bound
    assert reopened.quarantined == 2


def test_a_message_that_cannot_be_moved_aside_is_not_said_to_be_set_aside(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Found by review: when the move failed (here a file stands where the dead-letter folder goes), the log said
    the ERROR, then a WARNING that the message was "set aside in dead-letter/" all the same. Now the ERROR alone
    says it, with why it was to be set aside."""
    spool = Spool(tmp_path / "spool", max_mb=1, max_age_h=24)
    (tmp_path / "spool" / DEAD_LETTER).write_text("not a folder")
    seq = spool.append("t", b"A" * 100)
    caplog.set_level(logging.WARNING, logger="noisewatch")
    spool.set_aside(seq, DEAD_LETTER, "the broker refused it")
    said = [r.getMessage() for r in caplog.records]
    assert any("cannot move" in line and "the broker refused it" in line for line in said), said
    assert not any("set aside in" in line for line in said), said


def test_a_started_notice_set_aside_is_not_an_event_lost_now_nor_when_the_spool_is_opened_again(tmp_path: Path) -> None:
    """Found by a fault hunt: a broker that refuses a listener's events refuses each one's started notice too, and
    ``spool_dead_letters`` (in Home Assistant's "Events lost") counted two for every event."""
    spool = Spool(tmp_path, max_mb=1, max_age_h=1)
    notice = spool.append("nw/x/events/started", b'{"id": "a"}')
    event = spool.append("nw/x/events", b'{"id": "a"}')
    spool.set_aside(notice, DEAD_LETTER, "refused")
    spool.set_aside(event, DEAD_LETTER, "refused")
    assert spool.dead_letters == 1
    names = sorted(p.name for p in (tmp_path / DEAD_LETTER).iterdir())
    assert names == [f"{notice:016d}.started.msg", f"{event:016d}.msg"]
    reopened = Spool(tmp_path, max_mb=1, max_age_h=1)
    assert reopened.dead_letters == 1
    assert reopened.append("nw/x/events", b"{}") == event + 1, "numbers go on after both set-aside files"


def test_a_damaged_file_that_cannot_say_what_it_held_counts_as_an_event_lost(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_mb=1, max_age_h=1)
    seq = spool.append("nw/x/events/started", b"{}")
    (tmp_path / f"{seq:016d}.msg").write_bytes(b"\xff garbled header\n{}")
    reopened = Spool(tmp_path, max_mb=1, max_age_h=1)
    assert reopened.quarantined == 1 and reopened.depth == 0


def test_the_oldest_dropped_by_the_age_bound_count_their_events_not_their_started_notices(tmp_path: Path) -> None:
    clock = FakeClock()
    spool = Spool(tmp_path, max_mb=1, max_age_h=1, clock=clock, boot_clock=clock)
    for topic in ("nw/x/events/started", "nw/x/events", "nw/x/events/started"):  # the last event is still open
        spool.append(topic, b"{}")
    clock.now += 2 * 3600
    assert spool.prune() == 3
    assert spool.dropped == 1


def test_a_new_spool_folder_keeps_the_dead_letter_and_quarantine_counts(tmp_path: Path) -> None:
    """Found by review: ``take_all`` (a reload that changes ``mqtt.spool.directory``) carried ``dropped`` over but not
    the events set aside, and Home Assistant's "Events lost" (total_increasing) fell, which it reads as a reset."""
    old = Spool(tmp_path / "old", max_mb=1, max_age_h=1)
    old.set_aside(old.append("nw/x/events", b'{"id": "a"}'), DEAD_LETTER, "refused")
    old.set_aside(old.append("nw/x/events", b'{"id": "b"}'), QUARANTINE, "damaged")
    old.append("nw/x/events", b'{"id": "c"}')
    new = Spool(tmp_path / "new", max_mb=1, max_age_h=1)
    new.take_all(old)
    assert (new.dead_letters, new.quarantined, new.depth) == (1, 1, 1)

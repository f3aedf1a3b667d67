"""Review of ae4a693..8ddf655 (signal handling, MQTT closes at a stop, refused reloads said).

62aee27 put a refused reload's reason into the log message's text, because the repeat limiter (``logs.RepeatLimiter``)
tells kinds apart by that text only: after five refusals in a minute a new mistake went unsaid. Only the
ConfigError/BundleError branch of ``Service._swap`` was changed; the ``except Exception`` branch beside it still logs
one fixed text (``log.exception("reload refused, keeping the running configuration")``), its reason only in the
traceback, which the limiter does not look at: after five unexpected refusals in a minute, the sixth and later ones,
whatever their reason, are not said at all (neither line nor traceback) until a minute has passed or the process exits.
"""

from __future__ import annotations

import logging
from pathlib import Path

from noisewatch.daemon.setup import Overrides, prepare
from noisewatch.logs import REPEAT_BURST, RepeatLimiter


class _Kept(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_each_unexpected_reason_a_reload_is_refused_for_is_said(repo_root: Path, tmp_path: Path, monkeypatch) -> None:
    from noisewatch.daemon import service as service_module

    config = tmp_path / "config.yaml"
    config.write_text("detector:\n  cooldown_s: 1.0\n")
    setup = prepare(str(config), Overrides(jsonl=str(tmp_path / "out.jsonl")),
                    str(repo_root / "samples" / "scene.flac"), 0.0)
    service = service_module.Service(setup)
    kept = _Kept()
    kept.addFilter(RepeatLimiter())  # as logs.setup puts it on the daemon's handler
    logger = logging.getLogger(service_module.__name__)
    logger.addHandler(kept)
    reasons = [f"unexpected failure number {n}" for n in range(REPEAT_BURST + 2)]
    try:
        for reason in reasons:
            def fail(setup, running, reason=reason):
                raise RuntimeError(reason)

            monkeypatch.setattr(service_module, "_check_sample_rate", fail)
            assert service._swap(None) is False  # refused, the running set-up kept
    finally:
        logger.removeHandler(kept)
        service.active.close()
    said = [record for record in kept.records if "reload refused" in record.getMessage()]
    told = [reason for reason in reasons
            if any(reason in record.getMessage() or (record.exc_info and reason in str(record.exc_info[1]))
                   for record in said)]
    assert told == reasons, f"{len(said)} of {len(reasons)} refusals said; unsaid: {sorted(set(reasons) - set(told))}"

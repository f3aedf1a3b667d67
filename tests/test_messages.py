"""Message types: wire form, strict JSON, round trips, and docs/mqtt.md's examples checked against them."""

from __future__ import annotations

import dataclasses
import json
import math
import re
from pathlib import Path

import pytest

from noisewatch.daemon.messages import (
    KINDS,
    SCHEMA_VERSION,
    AudioState,
    DecodeError,
    Event,
    HealthFigures,
    Score,
    Scores,
    Stats,
    Status,
    decode,
    stamped,
)

DOCS = Path(__file__).resolve().parents[1] / "docs" / "mqtt.md"


def doc_examples() -> list[dict]:
    """Every JSON block of docs/mqtt.md that is one of our messages (it has a ``type``)."""
    blocks = [json.loads(block) for block in re.findall(r"```json\n(.*?)```", DOCS.read_text(), re.S)]
    return [block for block in blocks if "type" in block]


def test_every_kind_has_an_example_in_the_docs_and_each_is_exactly_its_type() -> None:
    examples = doc_examples()
    assert {example["type"] for example in examples} == set(KINDS)
    for example in examples:
        assert decode(example).to_json() == example  # no field missing, none extra, values of the right form


def test_a_message_round_trips_through_its_bytes_and_carries_type_schema_and_device() -> None:
    scores = stamped(Scores(time="2024-05-01T12:00:07.500Z", offset_s=7.5, top=(Score("siren", 0.9),)), "balcony")
    wire = json.loads(scores.encode())
    assert wire["type"] == "scores" and wire["schema"] == SCHEMA_VERSION and wire["device"] == "balcony"
    assert wire["top"] == [{"label": "siren", "score": 0.9}]
    assert decode(scores.encode()) == scores
    status = Status(AudioState.AUDIO_ERROR, error="unplugged")
    assert decode(status.encode()) == status and json.loads(status.encode())["state"] == "audio_error"


def test_non_finite_values_never_reach_the_wire() -> None:
    event = Event(id="e", label="loud", confidence=None, mean_confidence=None, start="s", end="e", offset_s=0.0,
                  duration_s=1.0, peak_dbfs=math.nan, mean_dbfs=-20.0, model="m")
    with pytest.raises(ValueError):
        event.encode()


def test_what_is_not_a_message_is_a_decode_error() -> None:
    for payload in (b"not json", b'{"type": "nope"}', b'{"type": "status"}', b"[1, 2]"):
        with pytest.raises(DecodeError):
            decode(payload)


def test_decode_holds_a_payload_to_the_kind_its_topic_carries_and_to_its_field_types() -> None:
    event = Event(id="e", label="siren", confidence=0.9, mean_confidence=0.8, start="s", end="e", offset_s=1.0,
                  duration_s=2.0, peak_dbfs=-3.0, mean_dbfs=-10.0, model="m", device="d")
    wire = event.to_json()
    assert decode({k: v for k, v in wire.items() if k != "type"}, kind="event") == event  # no type: the topic's
    for bad, kind in (({**wire, "start": 5}, "event"), ({**wire, "confidence": True}, "event"), (wire, "started"),
                      ([1, 2], "event")):
        with pytest.raises(DecodeError):
            decode(bad, kind=kind)  # type: ignore[arg-type]


def test_the_readme_s_json_lines_are_exactly_their_types() -> None:
    """README: "Each message is also a JSON line" with a `started` and an `event` line as examples: they are the
    daemon's types, no field missing or extra."""
    readme = DOCS.parents[1] / "README.md"
    lines = [json.loads(line) for line in readme.read_text().split("\n") if line.strip().startswith('{"type":')]
    assert [line["type"] for line in lines] == ["started", "event"]
    for line in lines:
        assert decode(line).to_json() == line


def test_every_sink_figure_is_a_stats_field() -> None:
    """``Stats.with_figures`` puts a sink's figures into the report by name: a figure with no field of its own would
    fail the health report at run time."""
    fields = {field.name for field in dataclasses.fields(Stats)}
    assert set(HealthFigures.__annotations__) <= fields, set(HealthFigures.__annotations__) - fields

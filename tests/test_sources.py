"""engine/receive/sources.py: where type and delivery id come from, per preset."""

from __future__ import annotations

import hashlib

import pytest

from engine.receive.sources import PRESET_LOCATORS, UNKNOWN, Reader
from engine.rules.config import PRESETS, Source

HOVER = {"event": "job-state-changed", "job_id": 1}


@pytest.mark.parametrize(
    ("source", "body", "headers", "type_", "delivery"),
    [
        (Source(preset="hover", verify="none"), HOVER, {}, "job-state-changed", None),
        (
            Source(preset="github", secret=["s"]), {"zen": "x"}, {"x-github-event": "ping", "x-github-delivery": "d-1"},
            "ping", "d-1"
        ),
        (
            Source(preset="stripe", secret=["s"]), {"id": "evt_1", "type": "charge.succeeded"}, {}, "charge.succeeded",
            "evt_1"
        ),
        (
            Source(preset="standard", secret=["s"]), {"type": "user.created"}, {"webhook-id": "msg_1"}, "user.created",
            "msg_1"
        ),
        (
            Source(preset="slack", secret=["s"]), {"type": "event_callback", "event_id": "Ev1"}, {}, "event_callback",
            "Ev1"
        ),
        (Source(preset="slack", secret=["s"]), {"command": "/deploy", "text": "x"}, {}, "command", None),
        (
            Source(type="body:kind", id="header:X-Delivery", verify="none"), {"kind": "a.b"}, {"x-delivery": "7"},
            "a.b", "7"
        ),
        (
            Source(type="body:meta.kind", id="body:meta.id", verify="none"), {"meta": {"kind": "k", "id": 12}}, {}, "k",
            "12"
        ),
        (Source(type="header:X-Event-Type", verify="none"), {}, {"x-event-type": "t"}, "t", None),
        (Source(type="fixed-type", verify="none"), {}, {}, "fixed-type", None),
        (None, {"type": "t"}, {}, "t", None),
    ],
)
def test_type_and_delivery_id(
    source: Source | None, body: object, headers: dict[str, str], type_: str, delivery: str | None
) -> None:
    reader = Reader.for_source(source)
    raw = b'{"raw": true}'
    assert reader.event_type(body, headers) == type_
    expected = delivery or "sha256:" + hashlib.sha256(raw).hexdigest()[:32]
    assert reader.delivery_id(raw, body, headers) == expected


@pytest.mark.parametrize(
    "body",
    [[1, 2], {"event": None}, {"event": {"nested": 1}}, {"event": ""}, {"event": True}, "text", None],
)
def test_an_unreadable_type_is_unknown(body: object) -> None:
    assert Reader.for_source(Source(preset="hover", verify="none")).event_type(body, {}) == UNKNOWN


def test_identical_bodies_share_a_delivery_id_others_do_not() -> None:
    reader = Reader.for_source(Source(preset="hover", verify="none"))
    one = reader.delivery_id(b'{"a":1}', {"a": 1}, {})
    assert one == reader.delivery_id(b'{"a":1}', {"a": 1}, {})
    assert one != reader.delivery_id(b'{"a":2}', {"a": 2}, {})


def test_every_preset_says_where_its_type_and_delivery_id_come_from() -> None:
    assert set(PRESET_LOCATORS) == set(PRESETS)

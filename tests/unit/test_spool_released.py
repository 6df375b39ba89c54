"""A released state change keeps its flag through the spool's encoding (and older records still read)."""

from __future__ import annotations

import pytest

from agent.spool import decode_payloads, encode_point
from slawatch.model import ComponentRef, StateChange

REF = ComponentRef("lb-1", "load_balancer", "gold", "acme")


@pytest.mark.parametrize(("degraded", "released"), [(False, False), (True, False), (False, True), (True, True)])
def test_round_trip(degraded: bool, released: bool) -> None:
    change = StateChange(REF, "a1", 1_000, True, "handed over to another agent", degraded, released)
    points, bad = decode_payloads([encode_point(change)])
    assert (points, bad) == ([change], 0)


def test_records_of_older_versions_read_as_not_released() -> None:
    nine = b'[1,"lb-1","load_balancer","gold","acme","a1",1000,false,"refused"]'
    ten = b'[1,"lb-1","load_balancer","gold","acme","a1",1000,true,"",true]'
    points, bad = decode_payloads([nine, ten])
    assert bad == 0
    assert [(p.degraded, p.released) for p in points if isinstance(p, StateChange)] == [(False, False), (True, False)]

"""Placeholder until the snmp probe lands."""

from __future__ import annotations

from typing import Any

from agent.model import Outcome, Result


async def probe(target: Any) -> Result:
    return Result(Outcome.AGENT_ERROR, "snmp probe not implemented yet")

"""A caught-up drain gathers a second of samples into one store write; a state change is written at once."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import sqlite3
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from agent.daemon import DRAIN_GATHER_S, Agent, _Confirmed, consumer_name
from slawatch.cli.agent import build_agent
from slawatch.config.loader import bundled_contract, load
from slawatch.model import Outcome, Sample, StateChange
from slawatch.store import Sink

FLUSH_EVERY_S = 0.05  # four times as often as the agent's flush loop: the gathering, not the flushes, sets the pace


def _agent(tmp_path: Path) -> Agent:
    cfg = tmp_path / "agent.yaml"
    cfg.write_text(f"""agent: {{id: gather, listen: "127.0.0.1:9"}}
storage: {{sqlite: {{path: store.db}}, spool: {{path: spool}}}}
contract: {bundled_contract()}
defaults: {{interval_s: 10, timeout_s: 1}}
console: {{enabled: false}}
components:
  - {{name: c0, class: san, tier: gold, probes: [{{kind: tcp, target: "127.0.0.1:9"}}]}}
""")
    return build_agent(load(cfg))


def _count_writes(sink: Sink) -> list[float]:
    """The instants of the sink's writes, whichever form the drain writes in."""
    writes: list[float] = []
    for name in ("write", "write_rows", "write_encoded", "write_gzip"):
        method = getattr(sink, name, None)
        if method is None:
            continue

        def counted(*args: Any, _method: Callable[..., Coroutine[Any, Any, None]] = method) -> Any:
            writes.append(time.monotonic())
            return _method(*args)

        setattr(sink, name, counted)
    return writes


def _stored(tmp_path: Path, table: str) -> int:
    with contextlib.closing(sqlite3.connect(tmp_path / "store.db")) as db:
        return int(db.execute(f"SELECT count(*) FROM {table}").fetchone()[0])


async def _spool_samples(agent: Agent, seconds: float) -> int:
    ref = agent.states["c0"].ref
    n = 0
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        for _ in range(20):
            n += 1
            agent._outbox.append(Sample(ref, "tcp", "tcp", agent.agent_id, 1_700_000_000_000 + n, Outcome.UP, "",
                                        0.2))
        assert await agent._flush()
        await asyncio.sleep(FLUSH_EVERY_S)
    return n


async def test_samples_spooled_many_times_a_second_reach_the_store_in_a_write_a_second_and_none_is_lost(
        tmp_path: Path) -> None:
    agent = _agent(tmp_path)
    sink = agent.sinks[0]
    writes = _count_writes(sink)
    drain = asyncio.create_task(agent._drain(consumer_name(sink), sink))
    watch = asyncio.create_task(agent._watch_loop())  # looks at the backlog as /healthz does, once a second
    try:
        t0 = time.monotonic()
        spooled = await _spool_samples(agent, 2.5)  # ~40 flushes
        stop0 = time.monotonic()
        # Its lowest look (the first: nothing spooled yet) was under every later one, but the drain read all there
        # was at each write: the backlog is not growing.
        assert agent._backlog[consumer_name(sink)].growing_for(stop0) < DRAIN_GATHER_S + 0.3
        assert agent.health() == []
        await agent._drain_until_empty([drain], grace_s=5.0)
        stopped_in = time.monotonic() - stop0
    finally:
        drain.cancel()
        watch.cancel()
        await sink.close()
        agent.spool.close()
    assert _stored(tmp_path, "slawatch_probe") == spooled  # every one, the last ones by the stop
    during = [w for w in writes if w < stop0]
    # One write as the first flush comes, then at most one a second (a write per flush would be ~40).
    assert 2 <= len(during) <= 1 + (stop0 - t0) / DRAIN_GATHER_S + 1, len(during)
    assert all(b - a >= DRAIN_GATHER_S * 0.9 for a, b in itertools.pairwise(during)), during
    assert stopped_in < 0.5  # the stop does not wait for the gathering to end


async def test_a_state_change_is_written_at_once_while_samples_gather(tmp_path: Path) -> None:
    agent = _agent(tmp_path)
    sink = agent.sinks[0]
    writes = _count_writes(sink)
    drain = asyncio.create_task(agent._drain(consumer_name(sink), sink))
    state = agent.states["c0"]
    try:
        await _spool_samples(agent, 0.2)  # the first write, then gathering
        await asyncio.sleep(0.05)
        assert len(writes) == 1
        change = StateChange(state.ref, agent.agent_id, 1_700_000_100_000, False, "connection refused", False)
        agent._outbox.append(change)
        agent._to_act.append(_Confirmed(change, None, None, state.save()))
        committed = time.monotonic()
        await agent._commit()
        while _stored(tmp_path, "slawatch_state") == 0 and time.monotonic() - committed < 2 * DRAIN_GATHER_S:
            await asyncio.sleep(0.01)
        in_store = time.monotonic() - committed
    finally:
        drain.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await drain
        await sink.close()
        agent.spool.close()
    assert _stored(tmp_path, "slawatch_state") == 1
    assert in_store < DRAIN_GATHER_S / 2, in_store  # not at the end of the second the samples gather for


async def test_after_a_backlog_what_is_stored_is_acknowledged_while_samples_gather(tmp_path: Path) -> None:
    """A backlog's last batches are read with one still in flight: it is acknowledged before the gathering wait, not
    a second later (the spool would count it as waiting, and a catch-up would never show an empty spool)."""
    agent = _agent(tmp_path)
    sink = agent.sinks[0]
    consumer = consumer_name(sink)
    ref = agent.states["c0"].ref
    backlog = 12_000  # more than two drain batches
    agent._outbox.extend(Sample(ref, "tcp", "tcp", agent.agent_id, 1_600_000_000_000 + i, Outcome.UP, "", 0.2)
                         for i in range(backlog))
    assert await agent._flush()
    drain = asyncio.create_task(agent._drain(consumer, sink))
    try:
        spooled = backlog + await _spool_samples(agent, 0.6)  # the backlog is stored, then samples gather
        assert agent.spool.pending(consumer) == spooled - _stored(tmp_path, "slawatch_probe")
        await agent._drain_until_empty([drain], grace_s=5.0)
    finally:
        drain.cancel()
        await sink.close()
        agent.spool.close()
    assert _stored(tmp_path, "slawatch_probe") == spooled

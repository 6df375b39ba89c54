"""What an apply and the first round of probes after it make is frozen out of the cyclic collector (gc.freeze)."""

from __future__ import annotations

import asyncio
import gc
from pathlib import Path

from slawatch.cli.agent import build_agent
from slawatch.config.loader import bundled_contract, load


def _config(tmp_path: Path, components: int) -> Path:
    rows = "\n".join(f'  - {{name: c{i}, class: san, tier: gold, probes: [{{kind: tcp, target: "127.0.0.1:9"}}]}}'
                     for i in range(components))
    cfg = tmp_path / "agent.yaml"
    cfg.write_text(f"""agent: {{id: freeze, listen: "127.0.0.1:9"}}
storage: {{sqlite: {{path: store.db}}, spool: {{path: spool}}}}
contract: {bundled_contract()}
defaults: {{interval_s: 1, timeout_s: 0.5}}
console: {{enabled: false}}
components:
{rows}
""")
    return cfg


def _collected(obj: object) -> bool:
    """Whether the collector's passes still walk `obj` (a frozen object is in none of its generations)."""
    return any(o is obj for o in gc.get_objects())


async def test_an_apply_and_the_round_after_it_are_frozen_and_a_new_apply_waits_a_round_again(
        tmp_path: Path) -> None:
    gc.unfreeze()
    agent = build_agent(load(_config(tmp_path, 3)))
    settle = asyncio.create_task(agent._settle_loop())
    try:
        assert not _collected(agent.states["c0"])  # frozen by the apply
        first_round = [agent.states["c0"].ref]  # made after the apply, as a first round's gauges are
        assert _collected(first_round)
        await asyncio.sleep(1.2)  # the round is the longest interval (1 s) and a second
        assert _collected(first_round)
        await agent._apply_gradually(load(_config(tmp_path, 4)))  # a reload: frozen, and the wait starts again
        assert not _collected(first_round)
        second_round = [agent.states["c3"].ref]
        await asyncio.sleep(1.5)  # 2.7 s after the first apply, 1.5 s after the second: not yet
        assert _collected(second_round)
        await asyncio.sleep(1.0)
        assert not _collected(second_round)
    finally:
        settle.cancel()
        agent.spool.close()
        gc.unfreeze()

"""A reload of many components is applied a slice at a time: the event loop keeps turning, the switch is atomic."""

from __future__ import annotations

import asyncio
from pathlib import Path

from agent.daemon import APPLY_SLICE
from slawatch.cli.agent import build_agent
from slawatch.config.loader import bundled_contract, load

COMPONENTS = 10 * APPLY_SLICE


def _config(tmp_path: Path, tier: str) -> Path:
    rows = "\n".join(f'  - {{name: c{i}, class: san, {"tier: " + tier if i % 2 else "customer: acme"}, '
                     f'probes: [{{kind: tcp, target: "127.0.0.1:9"}}]}}' for i in range(COMPONENTS))
    cfg = tmp_path / "agent.yaml"
    cfg.write_text(f"""agent: {{id: slices, listen: "127.0.0.1:9"}}
storage: {{sqlite: {{path: store.db}}, spool: {{path: spool}}}}
contract: {bundled_contract()}
defaults: {{interval_s: 3600, timeout_s: 5}}
customers: [{{name: acme, tier: gold}}]
console: {{enabled: false}}
components:
{rows}
""")
    return cfg


async def test_a_large_reload_yields_to_the_loop_and_switches_at_once(tmp_path: Path) -> None:
    agent = build_agent(load(_config(tmp_path, "gold")))
    try:
        old_states, old_jobs = agent.states, agent.scheduler.jobs
        kept, replaced = old_states["c0"], old_states["c1"]
        reloaded = load(_config(tmp_path, "silver"))  # every odd component changes tier: a new state
        seen: list[tuple[bool, bool]] = []
        applying = True

        async def ticker() -> None:
            while applying:
                seen.append((agent.states is old_states, agent.scheduler.jobs is old_jobs))
                await asyncio.sleep(0)

        task = asyncio.create_task(ticker())
        await asyncio.sleep(0)
        await agent._apply_gradually(reloaded)
        applying = False
        await task
        # The loop turned at least once a slice; until the last one, probes saw only the old states and jobs.
        assert len(seen) >= COMPONENTS // APPLY_SLICE
        assert all(states and jobs for states, jobs in seen[:-1])
        assert agent.states is not old_states and agent.scheduler.jobs is not old_jobs
        assert agent.states["c0"] is kept and agent.states["c1"] is not replaced
        assert agent.states["c1"].ref.tier == "silver" and len(agent.states) == COMPONENTS
        assert agent.scheduler.jobs["c0/tcp"] is old_jobs["c0/tcp"]  # unchanged: it goes on on its grid

        # The same config again changes nothing: every state and job is the running one.
        states, jobs = agent.states, agent.scheduler.jobs
        agent._ckpt_dirty.clear()
        await agent._apply_gradually(load(_config(tmp_path, "silver")))
        assert all(agent.states[name] is state for name, state in states.items())
        assert all(agent.scheduler.jobs[key] is job for key, job in jobs.items())
        assert not agent._ckpt_dirty  # no checkpoint entry to encode again
    finally:
        agent.spool.close()

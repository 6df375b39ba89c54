"""The one-component agent config the agent and reload tests write: a TCP probe, SQLite beside the config."""

from __future__ import annotations

from pathlib import Path

from slawatch.config.loader import bundled_contract
from slawatch.testing import free_port


def write_config(tmp: Path, port: int, *, interval: float = 0.5, extra_components: str = "",
                 listen_port: int | None = None) -> Path:
    cfg = tmp / "agent.yaml"
    cfg.write_text(f"""
agent: {{id: test-agent, listen: "127.0.0.1:{listen_port or free_port()}", heartbeat_s: 1}}
storage: {{sqlite: {{path: store.db}}, spool: {{path: spool}}}}
contract: {bundled_contract()}
defaults: {{interval_s: {interval}, timeout_s: {interval * 0.8:g}, confirm: {{down: 2, up: 1}}}}
customers: [{{name: acme, tier: gold}}]
console: {{enabled: false}}  # the bare status page at /: the console has its own tests (tests/console)
components:
  - name: san-1
    class: san
    customer: acme
    probes: [{{kind: tcp, target: "127.0.0.1:{port}"}}]
{extra_components}""")
    return cfg

"""`slawatch agents`: the agents' leases in the shared store, live or stale, and each live agent's share."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from agent.assign import Assigner, auto_members, is_live, live_ms, watches_zone
from slawatch.cli.usage import EXIT_FAILURE, EXIT_OK, EXIT_UNKNOWN, guarded, load_config
from slawatch.config.loader import Loaded
from slawatch.model import AgentLease
from slawatch.store import SourceError, open_member_store


def expected_shares(loaded: Loaded, leases: list[AgentLease], now_ms: int) -> dict[str, int]:
    """How many components each live agent should watch: its rendezvous share (auto), or its zone's (static)."""
    components = loaded.config.components
    replicas = loaded.config.agent.replicas
    shares = Assigner({c.name: c.zone for c in components}).shares(auto_members(leases, now_ms), replicas)
    out: dict[str, int] = {}
    for lease in leases:
        if not is_live(lease, now_ms):
            continue
        if lease.assign == "auto":
            out[lease.agent] = len(shares.get(lease.agent, ()))
        else:
            out[lease.agent] = sum(1 for c in components if watches_zone(lease.zone or None, c.zone, "static"))
    return out


def _ago(ms: int) -> str:
    s = max(0, ms) / 1000
    if s < 120:
        return f"{s:.1f}s"
    if s < 7200:
        return f"{s / 60:.0f}m"
    return f"{s / 3600:.0f}h" if s < 172800 else f"{s / 86400:.0f}d"


def rows(loaded: Loaded, leases: list[AgentLease], now_ms: int) -> list[dict[str, object]]:
    expected = expected_shares(loaded, leases, now_ms)
    return [{"agent": x.agent, "live": is_live(x, now_ms), "zone": x.zone, "assign": x.assign,
             "replicas": x.replicas, "watching": x.watching, "expected": expected.get(x.agent),
             "seen_ago_s": round((now_ms - x.seen_ms) / 1000, 3), "stale_after_s": live_ms(x.heartbeat_s) / 1000,
             "heartbeat_s": x.heartbeat_s, "host": x.host, "version": x.version} for x in leases]


def text(table: list[dict[str, object]]) -> str:
    if not table:
        return "no agent has a lease in the store"
    head = ("AGENT", "STATE", "ZONE", "ASSIGN", "REPLICAS", "WATCHING", "SHARE", "SEEN", "HOST", "VERSION")
    lines = [head]
    for r in table:
        seen = r["seen_ago_s"]
        assert isinstance(seen, float | int)
        lines.append((str(r["agent"]), "live" if r["live"] else "STALE", str(r["zone"] or "-"), str(r["assign"]),
                      str(r["replicas"]), str(r["watching"]), "-" if r["expected"] is None else str(r["expected"]),
                      f"{_ago(round(seen * 1000))} ago", str(r["host"]), str(r["version"])))
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)).rstrip() for line in lines)


def _agents(args: argparse.Namespace) -> int:
    loaded = load_config(args.config)

    async def read() -> tuple[int, list[AgentLease]]:
        store = open_member_store(loaded.config.storage)
        try:
            return await store.members()
        finally:
            await store.close()

    try:
        now_ms, leases = asyncio.run(read())
    except (SourceError, OSError) as exc:
        print(f"slawatch agents: UNKNOWN: cannot read the agents' leases: {exc}", file=sys.stderr)
        return EXIT_UNKNOWN
    table = rows(loaded, leases, now_ms)
    if args.format == "json":
        print(json.dumps({"now_ms": now_ms, "agents": table}, indent=2))
    else:
        print(text(table))
    return EXIT_OK if all(r["live"] for r in table) else EXIT_FAILURE


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("agents", help="list the agents' leases (live or stale) and their shares",
                       description="List every agent lease in the shared store: live or stale, zone, assignment, "
                                   "replicas, how many components it watches and how many its share is. Exit 0 when "
                                   "all listed agents are live, 1 (WARNING) when some are stale, 2 for a usage or "
                                   "config problem, 3 (UNKNOWN) when the store cannot be read.")
    p.add_argument("--config", "-c", required=True, metavar="FILE")
    p.add_argument("--format", choices=("text", "json"), default="text")
    p.set_defaults(func=guarded("agents", _agents))


__all__ = ["expected_shares", "register", "rows", "text"]

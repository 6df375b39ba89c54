"""Console incidents time: the incidents list, one incident and an acknowledgement, by the real console over HTTP.

    python bench/incidents.py [--active 2000] [--resolved 5000] [--renders 20] [--workdir DIR]

Stores --active open incidents and --resolved ones resolved this month (each with its events and a notification per
event to the NOC and the customer) in the desk's SQLite store, starts the console (console.app.make_console) on a
loopback port, signs in as an operator and times

    GET /incidents        (every active incident with its response clock, and the month's resolved)
    GET /incidents/ID     (one incident: clock, event log, notifications with recipients redacted)
    POST /incidents/ID/ack  (through the desk: the incident, its event and notifications in one transaction)

Prints per request the server time (p50/p95, measured around the handler inside the server), the round trip and
the bytes of the page.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from aiohttp import ClientSession, CookieJar, web  # noqa: E402

from console.app import make_console  # noqa: E402
from console.passwords import hash_password  # noqa: E402
from slawatch.config.loader import bundled_contract, load  # noqa: E402
from slawatch.model import (  # noqa: E402
    ComponentRef,
    Incident,
    IncidentEvent,
    IncidentState,
    Notification,
    User,
)
from slawatch.store.sqlite import SqliteSource  # noqa: E402
from slawatch.store.sqlite_desk import SqliteDeskStore  # noqa: E402
from slawatch.store.sqlite_users import SqliteUserStore  # noqa: E402
from slawatch.testing import free_port  # noqa: E402

CUSTOMERS = 50


def write_config(work: Path, components: int) -> Path:
    lines = [f"agent: {{id: a1, listen: '127.0.0.1:{free_port()}', heartbeat_s: 60}}",
             f"storage: {{sqlite: {{path: {work / 'store.db'}}}, spool: {{path: {work / 'spool'}}}}}",
             f"contract: {bundled_contract()}", "customers:"]
    lines += [f"  - {{name: cust-{c:03d}, tier: gold, notify: ['ops@cust-{c:03d}.example', "
              f"'json://hook:s3cret-{c:03d}@127.0.0.1:9/in']}}" for c in range(CUSTOMERS)]
    lines.append("notify: {noc: [noc@provider.example]}")
    lines.append("components:")
    lines += [f"  - {{name: comp-{i:05d}, class: sip, customer: cust-{i % CUSTOMERS:03d}, "
              f"probes: [{{kind: tcp, target: '127.0.0.1:{1024 + i}'}}]}}" for i in range(components)]
    cfg = work / "bench.yaml"
    cfg.write_text("\n".join(lines) + "\n")
    return cfg


def notes(inc: Incident, seq: int, kind: str, at_ms: int) -> list[Notification]:
    to = ["noc@provider.example", f"ops@{inc.ref.customer}.example"]
    return [Notification(f"{inc.id}.{seq}.{k}", inc.id, kind, r, f"[{inc.priority}] {inc.ref.component}", "text",
                         "", "{}", at_ms, at_ms) for k, r in enumerate(to)]


async def fill(store: SqliteDeskStore, active: int, resolved: int, now_ms: int) -> None:
    for n in range(active + resolved):
        comp = f"comp-{n:05d}"
        ref = ComponentRef(comp, "sip", "gold", f"cust-{n % CUSTOMERS:03d}")
        raised = now_ms - (n % 600 + 1) * 60_000
        inc = Incident(f"INC-2026-{n + 1:06d}", ref, "down", raised - 60_000, raised, "urgent", IncidentState.OPEN,
                       "connection refused", ("a1",), updated_ms=raised, version=1)
        opened = IncidentEvent(inc.id, 1, raised, "opened", "slawatch", "", "")
        await store.open(inc, [opened], notes(inc, 1, "open", raised))
        if n >= active:
            done = Incident(inc.id, ref, "down", inc.start_ms, raised, "urgent", IncidentState.RESOLVED,
                            inc.reason, ("a1",), resolved_ms=raised + 30_000, updated_ms=raised + 30_000, version=2)
            event = IncidentEvent(inc.id, 2, raised + 30_000, "resolved", "slawatch", "", "")
            await store.update(1, done, [event], notes(done, 2, "resolve", raised + 30_000))


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def run(args: argparse.Namespace, work: Path) -> int:
    now = time.time_ns() // 1_000_000
    cfg = write_config(work, args.active + args.resolved)
    loaded = load(cfg)
    storage = loaded.config.storage
    source = SqliteSource(storage.sqlite)  # type: ignore[arg-type]
    desk_store = SqliteDeskStore(storage.records_path)
    users = SqliteUserStore(storage.records_path)
    t0 = time.perf_counter()
    await fill(desk_store, args.active, args.resolved, now)
    print(f"store: {args.active} active and {args.resolved} resolved incidents written in "
          f"{time.perf_counter() - t0:.1f} s")
    await users.add(User("ops", "operator", hash_password("bench password"), (), now, now))
    app = make_console(loaded, source, desk_store, users)
    server_ms: dict[str, list[float]] = {}

    @web.middleware
    async def timed(request: web.Request,
                    handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
        t0 = time.perf_counter()
        try:
            return await handler(request)
        finally:
            resource = request.match_info.route.resource
            key = f"{request.method} {resource.canonical if resource is not None else request.path}"
            server_ms.setdefault(key, []).append((time.perf_counter() - t0) * 1000)

    app.middlewares.insert(0, timed)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    base = f"http://127.0.0.1:{port}"
    one = "INC-2026-000001"
    try:
        async with ClientSession(cookie_jar=CookieJar(unsafe=True)) as http:
            form = await (await http.get(base + "/login")).text()
            token = form.split('name="csrf" value="')[1].split('"')[0]
            resp = await http.post(base + "/login", data={"name": "ops", "password": "bench password",
                                                          "csrf": token}, allow_redirects=False)
            assert resp.status == 303, resp.status
            server_ms.clear()
            rows: list[tuple[str, str, list[float], int]] = []
            for path in ("/incidents", f"/incidents/{one}"):
                rtts: list[float] = []
                for _ in range(args.renders):
                    t0 = time.perf_counter()
                    r = await http.get(base + path)
                    body = await r.read()
                    rtts.append((time.perf_counter() - t0) * 1000)
                    assert r.status == 200, (path, r.status)
                rows.append((f"GET {path}", "GET " + ("/incidents" if path == "/incidents" else "/incidents/{id}"),
                             rtts, len(body)))
            rtts = []
            for n in range(2, 2 + args.renders):
                page = await (await http.get(f"{base}/incidents/INC-2026-{n:06d}")).text()
                token = page.split('name="csrf" value="')[1].split('"')[0]
                t0 = time.perf_counter()
                r = await http.post(f"{base}/incidents/INC-2026-{n:06d}/ack",
                                    data={"csrf": token, "comment": "bench"}, allow_redirects=False)
                rtts.append((time.perf_counter() - t0) * 1000)
                assert r.status == 303, r.status
            rows.append(("POST /incidents/ID/ack", "POST /incidents/{id}/{action}", rtts, 0))
        acked = sum(1 for i in await desk_store.active() if i.acknowledged_by == "ops")
        assert acked == args.renders, acked
        print(f"{'request':<28} {'server p50':>10} {'p95':>8} {'round trip p50':>15} {'page bytes':>11}")
        for label, key, rtts, size in rows:
            server = server_ms[key]
            print(f"{label:<28} {pct(server, 0.5):>8.1f}ms {pct(server, 0.95):>6.1f}ms "
                  f"{pct(rtts, 0.5):>13.1f}ms {size:>11,}")
        return 0
    finally:
        await runner.cleanup()
        await source.close()
        await desk_store.close()
        await users.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--active", type=int, default=2000)
    parser.add_argument("--resolved", type=int, default=5000)
    parser.add_argument("--renders", type=int, default=20)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)
        sys.exit(asyncio.run(run(args, args.workdir)))
    with tempfile.TemporaryDirectory(prefix="slawatch-bench-incidents-") as tmp:
        sys.exit(asyncio.run(run(args, Path(tmp))))


if __name__ == "__main__":
    main()

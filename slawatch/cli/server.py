"""`slawatch server`: the console, /metrics and /healthz on every server; the incident desk, its notifications and the
monthly reports only on the one that leads (several servers over one shared store).

Exactly once across a change of leader: the outbox's marks and the report ledger are in the shared store, so a new
leader sends what is due and not marked, and nothing marked. What the old leader was delivering at the moment it died
(handed to the mail server or webhook, not yet marked sent) is sent again by the new one: at most that batch."""

from __future__ import annotations

import argparse
import asyncio
import logging
import re
import signal
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from agent.logthrottle import throttle_repeats
from agent.supervisor import Supervisor
from slawatch import __version__
from slawatch.cli.agent import MonthlyReports, setup_logging
from slawatch.cli.desk import IncidentDesk
from slawatch.cli.usage import EXIT_OK, EXIT_USAGE
from slawatch.config.loader import ConfigError, Loaded, load
from slawatch.config.units import NAME_PATTERN, split_host_port
from slawatch.store import open_member_store
from slawatch.store.leader import Leader, campaign, open_leader
from slawatch.store.pgconnect import PasswordError, connect_kwargs

if TYPE_CHECKING:
    from slawatch.cli.console import OperatorConsole

log = logging.getLogger(__name__)

STOP_GRACE_S = 5.0
"""At a clean stop the leader's desk and sender get this long to finish what they are doing (a batch being sent)."""


class Server:
    """One server process: leads or follows. Leading, it runs an IncidentDesk fed from the store and the monthly
    job; stepping down (leadership lost, or a stop) ends them before anything more is delivered."""

    def __init__(self, loaded: Loaded, server_id: str, leader: Leader) -> None:
        self.loaded = loaded
        self.id = server_id
        self.leader = leader
        self.supervisor = Supervisor()
        # Built once, following or leading: a server that takes over sends without first loading Apprise's plugins.
        self.channels = IncidentDesk.channels_of(loaded)
        self.desk: IncidentDesk | None = None
        self.reports: MonthlyReports | None = None
        self.terms = 0
        self.started = time.time()
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(_Metrics(self))

    @property
    def leading(self) -> bool:
        return self.desk is not None

    async def lead(self) -> None:
        """Leadership gained: the desk starts from the store (its active incidents, every component's latest state,
        the outbox as the last leader left it) and the monthly job catches up what is due and not in the ledger."""
        config = self.loaded.config
        desk = IncidentDesk(self.loaded, channels=self.channels)
        await desk.take_over()
        stop = asyncio.Event()
        tick = config.desk.tick_s
        self._stop, self.desk = stop, desk
        self._tasks = [*desk.start(self.supervisor, stop, tick),
                       self.supervisor.start("follow", lambda: desk.follow_changes(stop, tick)),
                       self.supervisor.start("outbox", lambda: desk.follow_outbox(stop, tick))]
        self.reports = MonthlyReports()
        self.reports.start(self.loaded)
        self.terms += 1
        log.info("server %s leads: incident desk, notifications and monthly reports started", self.id)

    async def step_down(self) -> None:
        """Leadership lost, or a stop: end the desk, the sender and the monthly job. When leadership is lost they are
        cancelled at once (another server may be sending already); at a clean stop they get STOP_GRACE_S."""
        desk, self.desk = self.desk, None
        if desk is None:
            return
        self._stop.set()
        if self.reports is not None:
            self.reports.stop()
            self.reports = None
        tasks, self._tasks = self._tasks, []
        running: Iterable[asyncio.Task[None]] = tasks
        if self.leader.held:
            _, running = await asyncio.wait(tasks, timeout=STOP_GRACE_S)
        for task in running:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        try:
            await desk.close()
        except Exception as exc:  # a store already gone (the reason leadership was lost): nothing left to close
            log.warning("closing the incident desk's stores: %s", exc)
        log.info("server %s no longer leads: incident desk, notifications and monthly reports stopped", self.id)

    def wake_sender(self) -> None:
        """An operator's action in this server's console queued notifications: sent now when this server leads
        (otherwise the leader's look at the outbox finds them within `desk.tick_s`)."""
        if self.desk is not None:
            self.desk.sender.wake()

    def health(self) -> list[str]:
        now = time.monotonic()
        return [f"task {t.name} failing: {t.last_error}" for t in self.supervisor.tasks.values()
                if t.failing(now, self.supervisor.stable_s)]


class _Metrics(Collector):
    def __init__(self, server: Server) -> None:
        self.server = server

    def collect(self) -> Iterable[GaugeMetricFamily | CounterMetricFamily]:
        server = self.server
        leader = GaugeMetricFamily("slawatch_server_leader", "1 while this server leads (runs the incident desk, "
                                   "notifications and monthly reports), 0 while it follows", labels=["server"])
        leader.add_metric([server.id], 1 if server.leading else 0)
        yield leader
        terms = CounterMetricFamily("slawatch_server_leader_terms", "Times this server became the leader",
                                    labels=["server"])
        terms.add_metric([server.id], server.terms)
        yield terms
        restarts = CounterMetricFamily("slawatch_task_restarts", "Supervised tasks restarted after an error",
                                       labels=["task"])
        for task in server.supervisor.tasks.values():
            restarts.add_metric([task.name], task.restarts)
        yield restarts
        desk = server.desk
        if desk is not None:
            yield from desk.metrics()


def make_app(server: Server, console: OperatorConsole | None) -> web.Application:
    """/metrics, /healthz, and the console (or a line saying who this is at / when the console is off)."""
    app = web.Application()

    async def metrics(_request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(server.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(_request: web.Request) -> web.Response:
        reasons = server.health()
        return web.json_response({
            "status": "unhealthy" if reasons else "ok", "reasons": reasons, "server": server.id,
            "leader": server.leading, "uptime_s": round(time.time() - server.started, 3), "version": __version__,
        }, status=503 if reasons else 200)

    async def home(_request: web.Request) -> web.Response:
        role = "leads" if server.leading else "follows"
        return web.Response(text=f"slawatch server {server.id} ({role}); the console is off\n")

    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    if console is None:
        app.router.add_get("/", home)
    else:
        console.mount(app)
    return app


async def run_server(loaded: Loaded, server_id: str, listen: str, stop: asyncio.Event | None = None) -> int:
    """Serve the console, /metrics and /healthz on `listen`, and lead when this server can, until SIGTERM/SIGINT."""
    assert loaded.config.server is not None
    stop = stop or asyncio.Event()
    storage = loaded.config.storage
    if storage.postgres is not None:
        try:  # said at start rather than at every try for leadership
            connect_kwargs(storage.postgres)
        except PasswordError as exc:
            log.error("%s", exc)
            return EXIT_USAGE
    server = Server(loaded, server_id, open_leader(storage, server_id))
    console: OperatorConsole | None = None
    if loaded.config.console.enabled:
        # Loaded only when the console is on (Jinja2, Argon2, sessions): lazy, for start-up.
        from console.pages.incidents import SENDER_WAKE
        from slawatch.cli.console import OperatorConsole  # lazy, as above

        console = OperatorConsole(loaded, members=open_member_store(storage))
        console.console.extra[SENDER_WAKE] = server.wake_sender
    host, port = split_host_port(listen)
    runner = web.AppRunner(make_app(server, console), access_log=None)
    loop = asyncio.get_running_loop()
    try:
        await runner.setup()
        site = web.TCPSite(runner, host, port, backlog=128)
        await site.start()
        log.info("server %s serving /metrics, /healthz and the %s on http://%s:%d/; leadership by %s", server_id,
                 "console" if console is not None else "status line", f"[{host}]" if ":" in host else host, port,
                 server.leader.name)
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await campaign(server.leader, stop, loaded.config.server.leader_check_s, on_gain=server.lead,
                       on_loss=server.step_down)
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        await runner.cleanup()
        if console is not None:
            await console.close()
        await server.channels.close()
    return EXIT_OK


def _server_cmd(args: argparse.Namespace) -> int:
    setup_logging(args.log_format, args.log_level)
    flush_log_counts = throttle_repeats(logging.getLogger())
    try:
        loaded = load(args.config)
    except ConfigError as exc:
        for problem in exc.problems:
            log.error("%s", problem)
        return EXIT_USAGE
    settings = loaded.config.server
    if settings is None:
        log.error("%s: no `server` section: `slawatch server` needs one (server: {listen: HOST:PORT}); one host "
                  "runs `slawatch agent` alone", loaded.path)
        return EXIT_USAGE
    server_id = args.id or settings.id
    if not re.fullmatch(NAME_PATTERN, server_id):
        log.error("--id %r: letters, digits and _ . : - only", server_id)
        return EXIT_USAGE
    listen = args.listen or settings.listen
    try:
        split_host_port(listen)
    except ValueError as exc:
        log.error("--listen %s: %s", listen, exc)
        return EXIT_USAGE
    try:
        return asyncio.run(run_server(loaded, server_id, listen))
    finally:
        flush_log_counts()


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    server = sub.add_parser("server", help="run a central server: console, incident desk, notifications, reports",
                            description="Serve the console, /metrics and /healthz on server.listen over the shared "
                                        "store. Of several servers on one store one leads and runs the incident "
                                        "desk, notifications and the monthly reports; another takes over within "
                                        "seconds when it stops. SIGTERM/SIGINT stop it cleanly.")
    server.add_argument("--config", "-c", required=True, metavar="FILE")
    server.add_argument("--id", metavar="ID", help="this server's name (default: server.id, the host name)")
    server.add_argument("--listen", metavar="HOST:PORT", help="where to serve (default: server.listen)")
    server.add_argument("--log-format", choices=("text", "json"), default="text")
    server.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    server.set_defaults(func=_server_cmd)

"""`slawatch agent`: run the daemon in the foreground with signals and logging."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import resource
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import ValidationError

from agent.clock import Clock
from agent.daemon import Agent, open_spool
from agent.logthrottle import throttle_repeats
from agent.metrics import Metrics
from agent.spool import SpoolError
from agent.web import serve
from reporter.monthly import MonthlyJob
from slawatch.cli.desk import IncidentDesk
from slawatch.cli.usage import EXIT_OK, EXIT_USAGE, UsageError, loop_factory, run_on
from slawatch.config.loader import ConfigError, Loaded, load
from slawatch.config.settings import AgentSettings, split_host_port
from slawatch.model import Sample, StateChange
from slawatch.store import open_member_store, open_sinks, open_source

if TYPE_CHECKING:
    from slawatch.cli.console import OperatorConsole

log = logging.getLogger(__name__)


# Fields a log call may attach with `extra=` (state changes: component, state, reason), kept as JSON fields.
JSON_FIELDS = ("component", "state", "reason", "offset_s")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc = {"ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
               "level": record.levelname.lower(), "logger": record.name, "msg": record.getMessage()}
        for name in JSON_FIELDS:
            if name in record.__dict__:
                doc[name] = record.__dict__[name]
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, ensure_ascii=False)


def setup_logging(fmt: str, level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("aiohttp.access", "pysnmp", "asyncio", "apscheduler", "apprise"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


async def run_agent(agent: Agent, stop: asyncio.Event | None = None) -> None:
    """Serve /metrics and run the agent until SIGTERM/SIGINT (or `stop`); SIGHUP reloads the config."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, agent.request_reload)
    host, port = split_host_port(agent.loaded.config.agent.listen)
    # With a `server` section, `slawatch server` runs the desk, the console and the monthly reports: this only probes.
    alone = agent.loaded.config.server is None
    desk = IncidentDesk(agent.loaded) if agent.loaded.config.desk.enabled and alone else None
    console: OperatorConsole | None = None
    if agent.loaded.config.console.enabled and alone:
        # The console's libraries (Jinja2, Argon2, sessions) load only when it is enabled: lazy, for start-up.
        from slawatch.cli.console import OperatorConsole, agent_health

        try:
            console = OperatorConsole(agent.loaded, desk.store if desk is not None else None,
                                      local_health=agent_health(agent))
        except BaseException:
            if desk is not None:
                await desk.close()
            raise
    if console is not None:
        agent.on_reload.append(console.apply)
    if console is not None and desk is not None:
        from console.pages.incidents import SENDER_WAKE  # lazy, only when the console is: loaded with it above

        # What operators do in the console is sent at once, not at the sender's next look at the outbox.
        console.console.extra[SENDER_WAKE] = desk.sender.wake
    try:
        listener = await serve(agent, host, port, console.mount if console is not None else None)
    except BaseException:
        if console is not None:
            await console.close()
        if desk is not None:
            await desk.close()
        raise
    log.info("serving /metrics, /healthz and the %s on http://%s:%d/",
             "console" if console is not None else "status page", f"[{host}]" if ":" in host else host, port)
    reports = MonthlyReports()
    if alone:
        reports.start(agent.loaded)
        agent.on_reload.append(reports.start)
    tasks: list[asyncio.Task[None]] = []
    if desk is not None:
        desk.attach(agent)
        tasks = desk.start(agent.supervisor, stop, agent.loaded.config.desk.tick_s)
    try:
        await agent.run(stop)
    finally:
        reports.stop()
        if tasks:  # they end with `stop`; what the sender had not sent stays in the outbox for the next start
            _, running = await asyncio.wait(tasks, timeout=5.0)
            for task in running:
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)
        if desk is not None:
            await desk.close()
        await listener.close()
        if console is not None:
            await console.close()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)


class MonthlyReports:
    """The monthly report job (the reporter's): started once, and reconfigured, not restarted, by a reload."""

    def __init__(self) -> None:
        self.job: MonthlyJob | None = None

    def start(self, loaded: Loaded) -> None:
        if self.job is None:
            self.job = MonthlyJob(open_source)
        self.job.configure(loaded)

    def stop(self) -> None:
        if self.job is not None:
            self.job.stop()


def _agent_cmd(args: argparse.Namespace) -> int:
    setup_logging(args.log_format, args.log_level)
    flush_log_counts = throttle_repeats(logging.getLogger())
    try:
        loaded = load(args.config)
        adjust = overrides(args.id, args.listen, args.spool)
        adjust(loaded)
    except ConfigError as exc:
        for problem in exc.problems:
            log.error("%s", problem)
        return EXIT_USAGE
    except ValueError as exc:
        log.error("%s", exc)
        return EXIT_USAGE
    try:
        loop_factory(loaded.config.agent.loop)
    except UsageError as exc:
        log.error("%s: %s", loaded.path, exc)
        return EXIT_USAGE
    raise_open_file_limit()
    try:
        return run_on(loaded.config.agent.loop, lambda: _main(loaded, adjust))
    finally:
        flush_log_counts()


def overrides(agent_id: str | None, listen: str | None, spool: str | None) -> Callable[[Loaded], None]:
    """What `--id`, `--listen` and `--spool` change in a loaded config (and in each reload of it), so several agents
    run from one config on one host; ValueError when a value is not valid."""
    update: dict[str, str] = {}
    if agent_id is not None:
        update["id"] = agent_id
    if listen is not None:
        update["listen"] = listen

    def adjust(loaded: Loaded) -> None:
        config = loaded.config
        if update:
            try:
                config.agent = AgentSettings.model_validate({**config.agent.model_dump(), **update})
            except ValidationError as exc:
                problems = "; ".join(f"--{e['loc'][0]}: {e['msg']}" if e["loc"] else e["msg"] for e in exc.errors())
                raise ValueError(problems) from None
        if spool is not None:
            config.storage.spool.path = Path(spool)
    return adjust


def build_agent(loaded: Loaded, *, metrics: Metrics | None = None, clock: Clock | None = None,
                on_change: Callable[[StateChange], None] | None = None,
                on_sample: Callable[[Sample], None] | None = None) -> Agent:
    """The agent of a config with its stores and spool opened; SpoolError when the spool is in use or unreadable."""
    storage = loaded.config.storage
    sinks = open_sinks(storage, retention_s=loaded.contract.retention_s)  # connected on their first write
    spool = open_spool(storage.spool, sinks)
    auto = loaded.config.agent.assign == "auto"
    # Every agent announces itself (`slawatch agents`); with assign: auto the leases share the components, and the
    # new owners' changes, read back, end a hand-over.
    return Agent(loaded, spool, sinks, metrics or Metrics(), clock or Clock(), on_change=on_change,
                 on_sample=on_sample, members=open_member_store(storage),
                 source=open_source(storage, retention_s=loaded.contract.retention_s) if auto else None)


async def _main(loaded: Loaded, adjust: Callable[[Loaded], None] | None = None) -> int:
    try:
        agent = build_agent(loaded)
    except SpoolError as exc:  # in use by another agent, or unreadable: a start-up error, not a crash
        log.error("%s", exc)
        return EXIT_USAGE
    agent.adjust = adjust
    await run_agent(agent)
    return EXIT_OK


def raise_open_file_limit() -> None:
    """Raise the soft open-file limit to the hard one: probes, the spool and the listener share it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft == hard:
        log.info("open-file limit: %s", "unlimited" if soft == resource.RLIM_INFINITY else soft)
        return
    target = hard
    if hard == resource.RLIM_INFINITY:
        try:  # Linux refuses more than fs.nr_open
            target = int(Path("/proc/sys/fs/nr_open").read_text())
        except (OSError, ValueError):
            target = 1 << 20
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (OSError, ValueError) as exc:
        log.warning("open-file limit stays at %d: cannot raise it to %d: %s", soft, target, exc)
        return
    log.info("open-file limit raised from %d to %d", soft, target)


def print_change(out: Callable[[str], None] = print) -> Callable[[StateChange], None]:
    def show(change: StateChange) -> None:
        at = time.strftime("%H:%M:%S", time.gmtime(change.ts_ms / 1000))
        state = "UP  " if change.up else "DOWN"
        reason = f"  {change.reason}" if change.reason else ""
        out(f"{at} {state} {change.ref.component:<14} ({change.ref.klass}){reason}")
    return show


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    agent = sub.add_parser("agent", help="run the monitoring agent (until SIGTERM; SIGHUP reloads)",
                           description="Run the agent in the foreground: probe, keep state, spool and store. "
                                       "SIGTERM/SIGINT stop it cleanly, SIGHUP reloads the config.")
    agent.add_argument("--config", "-c", required=True, metavar="FILE")
    agent.add_argument("--id", metavar="ID", help="this agent's id instead of agent.id (several agents, one config)")
    agent.add_argument("--listen", metavar="HOST:PORT", help="where /metrics and the status page are served instead "
                                                             "of agent.listen")
    agent.add_argument("--spool", metavar="DIR", help="its spool directory instead of storage.spool.path (one per "
                                                      "agent)")
    agent.add_argument("--log-format", choices=("text", "json"), default="text")
    agent.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    agent.set_defaults(func=_agent_cmd)


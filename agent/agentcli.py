"""`slawatch agent` and `slawatch demo`: run the daemon in the foreground with signals and logging."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from agent.configfile import ConfigError, Loaded, load
from agent.model import StateChange
from agent.settings import split_host_port

if TYPE_CHECKING:
    from apscheduler.schedulers.asyncio import AsyncIOScheduler

    from agent.daemon import Agent

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
    for noisy in ("aiohttp.access", "pysnmp", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


async def run_agent(agent: Agent, stop: asyncio.Event | None = None) -> None:
    """Serve /metrics and run the agent until SIGTERM/SIGINT (or `stop`); SIGHUP reloads the config."""
    from agent.web import serve

    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, agent.request_reload)
    host, port = split_host_port(agent.loaded.config.agent.listen)
    runner = await serve(agent, host, port)
    log.info("serving /metrics, /healthz and the status page on http://%s:%d/",
             f"[{host}]" if ":" in host else host, port)
    reports = MonthlyReports()
    reports.start(agent.loaded)
    agent.on_reload.append(reports.start)
    try:
        await agent.run(stop)
    finally:
        reports.stop()
        await runner.cleanup()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)


class MonthlyReports:
    """The monthly report job (the reporter's), restarted when a reload changes the config."""

    def __init__(self) -> None:
        self.scheduler: AsyncIOScheduler | None = None

    def start(self, loaded: Loaded) -> None:
        from reporter.schedule import start_report_scheduler
        from reporter.source import open_source

        self.stop()
        report = loaded.config.report
        if report.smtp is None and report.archive is None:
            log.info("neither report.smtp nor report.archive is set: no monthly report job")
            return
        self.scheduler = start_report_scheduler(loaded, open_source)
        log.info("monthly reports scheduled: %r in %s", report.schedule, report.timezone)

    def stop(self) -> None:
        if self.scheduler is not None:
            self.scheduler.shutdown(wait=False)
            self.scheduler = None


def _agent_cmd(args: argparse.Namespace) -> int:
    setup_logging(args.log_format, args.log_level)
    try:
        loaded = load(args.config)
    except ConfigError as exc:
        for problem in exc.problems:
            log.error("%s", problem)
        return 2
    asyncio.run(_main(loaded))
    return 0


async def _main(loaded: Loaded) -> None:
    from agent.daemon import Agent

    await run_agent(Agent(loaded))


def print_change(out: Callable[[str], None] = print) -> Callable[[StateChange], None]:
    def show(change: StateChange) -> None:
        at = time.strftime("%H:%M:%S", time.gmtime(change.ts_ms / 1000))
        state = "UP  " if change.up else "DOWN"
        reason = f"  {change.reason}" if change.reason else ""
        out(f"{at} {state} {change.ref.component:<14} ({change.ref.klass}){reason}")
    return show


def _demo_cmd(args: argparse.Namespace) -> int:
    from agent.demo import run_demo

    setup_logging("text", args.log_level)
    return asyncio.run(run_demo(Path(args.dir), duration_s=args.duration, interval_s=args.interval))


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    agent = sub.add_parser("agent", help="run the monitoring agent (until SIGTERM; SIGHUP reloads)",
                           description="Run the agent in the foreground: probe, keep state, spool and store. "
                                       "SIGTERM/SIGINT stop it cleanly, SIGHUP reloads the config.")
    agent.add_argument("--config", "-c", required=True, metavar="FILE")
    agent.add_argument("--log-format", choices=("text", "json"), default="text")
    agent.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    agent.set_defaults(func=_agent_cmd)

    demo = sub.add_parser("demo", help="run the agent against built-in loopback demo targets",
                          description="Start loopback demo targets (SIP, TCP, HTTP, a UPS over SNMP, a flapping "
                                      "service) and the real agent watching them with the embedded SQLite "
                                      "store; print state changes as they happen. Ctrl-C stops it; "
                                      "`slawatch report` then reads the same store.")
    demo.add_argument("--dir", default="slawatch-demo", help="where the demo writes its config, store and spool "
                                                            "(default: ./slawatch-demo)")
    demo.add_argument("--duration", type=float, default=None, metavar="S", help="stop after S seconds")
    demo.add_argument("--interval", type=float, default=5.0, metavar="S", help="probe interval (default 5)")
    demo.add_argument("--log-level", default="warning", choices=("debug", "info", "warning", "error"))
    demo.set_defaults(func=_demo_cmd)

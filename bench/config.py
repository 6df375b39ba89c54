"""One config of many components: `slawatch check-config` time and peak RSS; the agent's start and a SIGHUP reload.

    python bench/config.py [--components 100000] [--customers 1000] [--interval 600] [--agent-seconds 20]
                           [--skip-agent] [--runs 1] [--workdir DIR] [--tree DIR]

Writes one config of N components (1 000 customers; the agent/bench mix of 60 % tcp, 20 % sip, 10 % http and
10 % icmp probes, icmp as http without root) and times

    python -m slawatch.cli check-config FILE

as a subprocess: wall time and its peak RSS (`os.wait4`). Then the agent: `python -m slawatch.cli agent --config
FILE` as a subprocess (SQLite, desk and console off) probing a loopback target farm (4 TCP listeners, a SIP
OPTIONS responder, an aiohttp /health in their own process) at a long interval (default 600 s: N / 600 probes/s),
so the figures are the start and the reload, not probing load. Printed: the start (spawn → /metrics answers),
schedule lateness over the first `--agent-seconds` (from the agent's `slawatch_schedule_lateness_seconds`
histogram: its count, runs later than 1 s, the highest bucket reached), then a SIGHUP: the reload (signal → its
"config reloaded" log line) and the lateness from the signal to `--agent-seconds` after it; for each phase the
agent's CPU (utime + stime) and the longest round trip of a GET /healthz every 0.1 s (the loop's longest stall).
Peak RSS of the agent is its VmHWM. `--tree` runs check-config and the agent from another checkout.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.agent import FARM, free_port, probe_plan, proc_cpu_s, proc_hwm_mb  # noqa: E402
from slawatch.config.loader import bundled_contract  # noqa: E402

CLASSES = ("network", "power", "sip", "load_balancer", "vlan", "san")
TIERS = ("base", "silver", "gold", "platinum")
GOAL_S, GOAL_MB, GOAL_LATE_S = 5.0, 300.0, 1.0
POLL_S = 0.1  # /healthz poll period while the agent is measured
_BUCKET = re.compile(r'^slawatch_schedule_lateness_seconds_bucket\{le="([^"]+)"\} (\S+)$', re.M)


def config_text(n: int, customers: int, interval_s: float, listen: str,
                farm: tuple[list[int], int, int], icmp: bool) -> str:
    tcp_ports, sip, http = farm
    cust = "\n".join(f"  - {{name: cust-{c:04d}, tier: {TIERS[c % len(TIERS)]}}}" for c in range(customers))
    comps = []
    for i, (_, _, kind, target) in enumerate(probe_plan(n, tcp_ports, sip, http, icmp)):
        extra = ", count: 1" if kind == "icmp" else ""
        comps.append(f"  - {{name: comp-{i:06d}, class: {CLASSES[i % len(CLASSES)]}, "
                     f"customer: cust-{i % customers:04d}, "
                     f'probes: [{{kind: {kind}, target: "{target}"{extra}}}]}}')
    components = "\n".join(comps)
    return f"""agent: {{id: bench-config, listen: "{listen}", heartbeat_s: 60}}
storage:
  sqlite: {{path: bench.db}}
  spool: {{path: spool}}
contract: {bundled_contract()}
defaults: {{interval_s: {interval_s:g}, timeout_s: 5}}
desk: {{enabled: false}}
console: {{enabled: false}}
customers:
{cust}
components:
{components}
"""


def check_config(cfg: Path, tree: Path = ROOT, timeout_s: float = 600.0) -> tuple[float, float, float, int, str]:
    """(wall s, CPU s, peak RSS MiB, exit code, first line of output) of `slawatch check-config`."""
    cmd = [sys.executable, "-m", "slawatch.cli", "check-config", str(cfg)]
    out_path = cfg.with_suffix(".out")
    with out_path.open("wb") as out:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=tree, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
        timer = threading.Timer(timeout_s, proc.kill)
        timer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            timer.cancel()
        wall = time.perf_counter() - t0
    text = out_path.read_text(errors="replace")
    cpu = usage.ru_utime + usage.ru_stime
    return wall, cpu, usage.ru_maxrss / 1024, os.waitstatus_to_exitcode(status), (text.splitlines() or [""])[0][:160]


def lateness(url: str) -> dict[float, float]:
    """The agent's lateness histogram: cumulative count per upper bound (inf included)."""
    with urllib.request.urlopen(url, timeout=10) as resp:
        text = resp.read().decode()
    return {float(le): float(v) for le, v in _BUCKET.findall(text)}


def late_summary(before: dict[float, float], after: dict[float, float]) -> tuple[int, int, str]:
    """(runs, runs later than 1 s, the highest bucket reached) between two scrapes."""
    diff = {le: after.get(le, 0.0) - before.get(le, 0.0) for le in after}
    total = int(diff.get(float("inf"), 0.0))
    over = int(total - diff.get(GOAL_LATE_S, 0.0))
    top = next((le for le in sorted(diff) if diff[le] >= total), float("inf"))
    return total, over, ("≤ " + f"{top:g} s" if top != float("inf") else "> 10 s")


def wait_for(predicate: object, timeout_s: float, what: str) -> float:
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout_s:
        if predicate():  # type: ignore[operator]
            return time.perf_counter() - t0
        time.sleep(0.05)
    raise SystemExit(f"{what}: not within {timeout_s:g} s")


class StallWatch(threading.Thread):
    """GETs /healthz every POLL_S and keeps the longest round trip per phase: a stalled event loop answers late, so
    this is the loop's longest stall as a client sees it (the lateness histogram only gives its bucket)."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.phase = "start"
        self.longest: dict[str, float] = {}
        self.polls: dict[str, int] = {}
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            phase = self.phase
            t0 = time.perf_counter()
            with contextlib.suppress(OSError), urllib.request.urlopen(self.url, timeout=30) as resp:
                resp.read()
            took = time.perf_counter() - t0
            self.longest[phase] = max(self.longest.get(phase, 0.0), took)
            self.polls[phase] = self.polls.get(phase, 0) + 1
            self.done.wait(max(0.0, POLL_S - took))


def run_agent(cfg: Path, work: Path, listen: str, seconds: float, tree: Path = ROOT) -> dict[str, object]:
    log_path = work / "agent.log"
    metrics = f"http://{listen}/metrics"
    watch = StallWatch(f"http://{listen}/healthz")
    with log_path.open("wb") as log:
        t0 = time.perf_counter()
        env = {**os.environ, "PYTHONPATH": str(tree)}  # the agent of that tree (run from the work directory)
        proc = subprocess.Popen([sys.executable, "-m", "slawatch.cli", "agent", "--config", str(cfg)], cwd=work,
                                env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        try:
            def ready() -> bool:
                if proc.poll() is not None:
                    raise SystemExit(f"agent exited {proc.returncode}: {log_path.read_text()[-2000:]}")
                with contextlib.suppress(OSError), urllib.request.urlopen(metrics, timeout=2) as resp:
                    return bool(resp.status == 200)
                return False
            wait_for(ready, 300, "agent start")
            start_s = time.perf_counter() - t0
            start_cpu = proc_cpu_s(proc.pid)
            watch.start()
            first = lateness(metrics)
            time.sleep(seconds)
            settled = lateness(metrics)
            window_cpu = proc_cpu_s(proc.pid) - start_cpu
            rss_started = proc_hwm_mb(proc.pid)
            reloads = log_path.read_text().count("config reloaded")
            watch.phase = "reload"
            cpu0 = proc_cpu_s(proc.pid)
            t1 = time.perf_counter()
            proc.send_signal(signal.SIGHUP)
            wait_for(lambda: log_path.read_text().count("config reloaded") > reloads, 300, "reload")
            reload_s = time.perf_counter() - t1
            reload_cpu = proc_cpu_s(proc.pid) - cpu0
            time.sleep(max(0.0, seconds - reload_s))
            after = lateness(metrics)
            rss = proc_hwm_mb(proc.pid)
        finally:
            watch.done.set()
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    return {"start_s": start_s, "start": late_summary({}, settled), "first_scrape": late_summary({}, first),
            "reload_s": reload_s, "reload": late_summary(settled, after), "rss_started": rss_started, "rss": rss,
            "start_cpu": start_cpu, "window_cpu": window_cpu, "reload_cpu": reload_cpu,
            "stall": dict(watch.longest), "polls": dict(watch.polls)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--components", type=int, default=100_000)
    parser.add_argument("--customers", type=int, default=1000)
    parser.add_argument("--interval", type=float, default=600.0, help="every probe's interval (s)")
    parser.add_argument("--agent-seconds", type=float, default=20.0, help="lateness window after start and reload")
    parser.add_argument("--skip-agent", action="store_true", help="time check-config only")
    parser.add_argument("--runs", type=int, default=1, choices=range(1, 6), help="check-config runs")
    parser.add_argument("--workdir", type=Path, help="keep the config and the agent's files here (must not exist)")
    parser.add_argument("--tree", type=Path, default=ROOT, help="run check-config and the agent from this source tree "
                        "(a checkout of another commit, for a before/after pair; default: this one)")
    args = parser.parse_args()
    with contextlib.ExitStack() as stack:
        if args.workdir is not None:
            args.workdir.mkdir(parents=True)
            work = args.workdir.resolve()
        else:
            work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="slawatch-bench-config-")))
        farm_proc = subprocess.Popen([sys.executable, "-c", FARM], stdout=subprocess.PIPE)
        stack.callback(farm_proc.wait)
        stack.callback(farm_proc.terminate)
        assert farm_proc.stdout is not None
        words = farm_proc.stdout.readline().split()
        farm = ([int(p) for p in words[:4]], int(words[4]), int(words[5]))
        listen = f"127.0.0.1:{free_port()}"
        cfg = work / "slawatch.yaml"
        cfg.write_text(config_text(args.components, args.customers, args.interval, listen, farm, os.geteuid() == 0))
        print(f"config: {args.components:,} components, {cfg.stat().st_size / (1 << 20):.1f} MiB; "
              f"load average {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f}", flush=True)
        # CPU (user + sys) beside the wall time: on a shared machine the wall time is mostly waiting for a core.
        print("\n| run | check-config wall | CPU | peak RSS | exit | goal (< 5 s, < 300 MiB) | load 1m |")
        print("|---:|---:|---:|---:|---:|---|---:|")
        for run in range(1, args.runs + 1):
            wall, cpu, rss, code, first = check_config(cfg, args.tree)
            verdict = "met" if wall < GOAL_S and rss < GOAL_MB else "MISSED"
            print(f"| {run} | {wall:.2f} s | {cpu:.2f} s | {rss:.0f} MiB | {code} | {verdict} | "
                  f"{os.getloadavg()[0]:.2f} |", flush=True)
            if code != 0:
                print(first)
        if args.skip_agent:
            return
        r = run_agent(cfg, work, listen, args.agent_seconds, args.tree)
        print(f"\nagent, {args.components:,} components every {args.interval:g} s "
              f"({args.components / args.interval:.0f} probes/s), load average {os.getloadavg()[0]:.2f}")
        print("\n| phase | time | CPU | probe runs in the window | later than 1 s | worst lateness bucket "
              "| longest /healthz round trip (polls) |")
        print("|---|---:|---:|---:|---:|---|---:|")
        stall: dict[str, float] = r["stall"]  # type: ignore[assignment]
        polls: dict[str, int] = r["polls"]  # type: ignore[assignment]
        for phase, key, secs, cpu in (("start", "start", r["start_s"], r["start_cpu"]),
                                      ("SIGHUP reload", "reload", r["reload_s"], r["reload_cpu"])):
            runs, over, top = r[key]  # type: ignore[misc]
            print(f"| {phase} | {secs:.2f} s | {cpu:.2f} s | {runs:,} | {over:,} | {top} | "
                  f"{stall.get(key, float('nan')) * 1000:.0f} ms ({polls.get(key, 0)}) |")
        print(f"\nCPU: start = spawn to /metrics answering; reload = SIGHUP to its log line; the "
              f"{args.agent_seconds:g} s after the start {r['window_cpu']:.2f} s. load average "
              f"{os.getloadavg()[0]:.2f}")
        print(f"\nagent peak RSS {r['rss_started']:.0f} MiB after start, {r['rss']:.0f} MiB after the reload")


if __name__ == "__main__":
    main()

"""/healthz of a busy agent whose store keeps up: how often it answers 503, and why.

    python bench/healthz.py [--tree DIR] [--seconds 150] [--components 2000] [--interval 2] [--backlog-s 15]

Runs `slawatch agent` (SQLite, console off) from this checkout or `--tree` with `--components` tcp probes every
`--interval` s against a loopback listener that accepts and closes (1 000 probes/s by default) and
`storage.spool.unhealthy_backlog_s` set to `--backlog-s`, then polls `/healthz` every 2 s from 10 s after the start
for `--seconds`. Prints the polls, the 503 answers and the first few reasons: a store that keeps up must never be
reported as a growing backlog.
"""

from __future__ import annotations

import argparse
import contextlib
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def accept_and_close(srv: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while True:
            conn, _ = srv.accept()
            conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tree", type=Path, default=ROOT, help="run the agent from this checkout")
    parser.add_argument("--seconds", type=float, default=150.0)
    parser.add_argument("--components", type=int, default=2000)
    parser.add_argument("--interval", type=float, default=2.0)
    parser.add_argument("--backlog-s", type=float, default=15.0)
    args = parser.parse_args()
    if not 0 < args.seconds <= 3600:
        parser.error("--seconds must be in (0, 3600]")
    sys.path.insert(0, str(args.tree))
    from slawatch.config.loader import bundled_contract  # from the tree being measured
    from slawatch.testing import free_port

    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(4096)
    target = srv.getsockname()[1]
    threading.Thread(target=accept_and_close, args=(srv,), daemon=True).start()
    listen = free_port()
    with tempfile.TemporaryDirectory() as work:
        rows = "\n".join(f'  - {{name: c{i}, class: san, tier: gold, probes: [{{kind: tcp, target: '
                         f'"127.0.0.1:{target}"}}]}}' for i in range(args.components))
        cfg = Path(work) / "agent.yaml"
        cfg.write_text(f"""agent: {{id: healthz, listen: "127.0.0.1:{listen}"}}
storage: {{sqlite: {{path: store.db}}, spool: {{path: spool, unhealthy_backlog_s: {args.backlog_s}}}}}
contract: {bundled_contract()}
defaults: {{interval_s: {args.interval}, timeout_s: 1}}
console: {{enabled: false}}
components:
{rows}
""")
        with (Path(work) / "agent.log").open("w") as log:
            agent = subprocess.Popen([sys.executable, "-m", "slawatch.cli", "agent", "--config", str(cfg)],
                                     cwd=args.tree, stdout=subprocess.DEVNULL, stderr=log)
        polls, unhealthy = 0, []
        try:
            time.sleep(10)
            t0 = time.monotonic()
            while time.monotonic() - t0 < args.seconds:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{listen}/healthz", timeout=5) as r:
                        r.read()
                    polls += 1
                except urllib.error.HTTPError as exc:
                    polls += 1
                    unhealthy.append((round(time.monotonic() - t0), exc.read().decode(errors="replace")[:160]))
                except OSError:
                    pass
                time.sleep(2)
        finally:
            agent.terminate()
            agent.wait(60)
            srv.close()
    print(f"{args.tree}: {args.components} components every {args.interval:g} s, unhealthy_backlog_s "
          f"{args.backlog_s:g}: {polls} polls of /healthz, {len(unhealthy)} answered 503")
    for at, body in unhealthy[:5]:
        print(f"  at {at} s: {body}")


if __name__ == "__main__":
    main()

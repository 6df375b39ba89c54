"""SIGKILL a process that appends to and drains the spool at a random moment: nothing it was told is durable is lost."""

from __future__ import annotations

import os
import random
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agent.spool import Spool
from slawatch.model import ComponentRef, Outcome, Point, Sample, StateChange

ROOT = Path(__file__).resolve().parents[2]
BATCH = 100

CHILD = r"""
import sys
from pathlib import Path
from slawatch.model import ComponentRef, Outcome, Sample, StateChange
from agent.spool import Spool

ref = ComponentRef("pbx-01", "sip", "gold", "acme")
batch = int(sys.argv[3])
sp = Spool(Path(sys.argv[1]), 1 << 30, consumers=("store", "audit"), segment_bytes=int(sys.argv[2]))
acked = sp.pending("audit") - sp.pending("store")
n = -(-sp.pending("audit") // batch)  # after a batch the kill cut short, start a new number
out = sys.stdout
while True:
    pts = [Sample(ref, "options", "sip", "agent-é", n * batch + j, Outcome.UP, f"batch {n} point {j} ✓", j / 7)
           for j in range(batch - 1)]
    pts.append(StateChange(ref, "agent-é", n * batch + batch - 1, n % 2 == 0, f"flip {n}"))
    sp.append(pts)
    out.write(f"A {n}\n")
    out.flush()
    if n % 3 == 0:
        b = sp.read("store", 250)
        sp.ack("store", b)
        acked += len(b.points)
        out.write(f"K {acked}\n")
        out.flush()
    n += 1
"""


def expected(i: int) -> Sample | StateChange:
    ref = ComponentRef("pbx-01", "sip", "gold", "acme")
    n, j = divmod(i, BATCH)
    if j == BATCH - 1:
        return StateChange(ref, "agent-é", i, n % 2 == 0, f"flip {n}")
    return Sample(ref, "options", "sip", "agent-é", i, Outcome.UP, f"batch {n} point {j} ✓", j / 7)


def run_and_kill(path: Path, segment_bytes: int, rng: random.Random) -> tuple[list[int], int]:
    """Run the child until a random moment, SIGKILL it; return the batches it appended and the points it acked."""
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(path), str(segment_bytes), str(BATCH)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    lines: list[str] = []
    buf = b""
    deadline = time.monotonic() + 30
    kill_at: float | None = None
    while True:
        ready, _, _ = select.select([proc.stdout], [], [], 0.05)
        if ready:
            chunk = os.read(proc.stdout.fileno(), 65536)
            if not chunk:
                break
            buf += chunk
        if kill_at is None and b"\n" in buf:
            kill_at = time.monotonic() + rng.uniform(0.02, 0.6)  # the child is running: pick the moment
        if kill_at is not None and time.monotonic() >= kill_at:
            os.kill(proc.pid, signal.SIGKILL)
            kill_at = float("inf")
        assert time.monotonic() < deadline, proc.stderr.read().decode()
        if proc.poll() is not None and not ready:
            break
    buf += proc.stdout.read()
    proc.wait()
    err = proc.stderr.read().decode()
    proc.stdout.close()
    proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL, err
    lines = buf.decode().splitlines()
    appended = [int(x.split()[1]) for x in lines if x.startswith("A ")]
    acked = [int(x.split()[1]) for x in lines if x.startswith("K ")]
    assert appended, err
    return appended, acked[-1] if acked else 0


@pytest.mark.timeout(120)
@pytest.mark.parametrize("segment_bytes", [16 << 10, 8 << 20])
def test_sigkill_loses_nothing_that_was_acknowledged(tmp_path: Path, segment_bytes: int) -> None:
    rng = random.Random(segment_bytes)
    path = tmp_path / "spool"
    returned: set[int] = set()
    for round_ in range(4):  # each round restarts on what the previous crash left
        appended, acked = run_and_kill(path, segment_bytes, rng)
        returned.update(appended)
        with Spool(path, 1 << 30, consumers=("store", "audit"), segment_bytes=segment_bytes) as sp:
            assert sp.corrupt_records == 0
            audit = list(sp.read("audit", 10**9).points)  # audit never acks: everything ever appended
            store = sp.read("store", 10**9).points
        # Every batch whose append returned is there, in order, exactly as written; an append cut by a kill
        # may have left a prefix of its records (complete and valid), never anything else.
        groups: dict[int, list[Point]] = {}
        for point in audit:
            groups.setdefault(point.ts_ms // BATCH, []).append(point)
        assert list(groups) == list(range(len(groups)))
        assert returned <= set(groups)
        for n, group in groups.items():
            assert group == [expected(n * BATCH + j) for j in range(len(group))], n
            assert n not in returned or len(group) == BATCH, n
        # The store resumes at or after its last acknowledgement the child saw return and sees everything after.
        first = audit.index(store[0]) if store else len(audit)
        assert first >= acked
        assert list(store) == audit[first:]
        assert sum(1 for g in groups.values() if len(g) != BATCH) <= round_ + 1  # one cut batch per kill at most

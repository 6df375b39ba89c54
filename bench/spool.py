"""Spool throughput: append points/s (1 000-point batches, fdatasync each), replay samples/s, bytes per sample.

Run: .venv/bin/python -m bench.spool [--samples 1000000] [--dir DIR] [--max-seconds 120]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

from agent.spool import Spool
from slawatch.model import ComponentRef, Outcome, Point, Sample


def make_batch(start: int, size: int, refs: list[ComponentRef]) -> list[Point]:
    """Realistic samples: 2 000 components, mostly UP with a latency, some failures with a reason."""
    out: list[Point] = []
    for i in range(start, start + size):
        ref = refs[i % len(refs)]
        if i % 50 == 0:
            out.append(Sample(ref, "options", "sip", "agent-par-1", 1_718_000_000_000 + i, Outcome.TIMEOUT,
                              "no answer to OPTIONS within 5s", None))
        else:
            out.append(Sample(ref, "options", "sip", "agent-par-1", 1_718_000_000_000 + i, Outcome.UP, "",
                              3.0 + (i % 997) / 7))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--samples", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--read-batch", type=int, default=5000)
    parser.add_argument("--dir", type=Path, default=None, help="where to put the spool (default: a temp dir)")
    parser.add_argument("--max-seconds", type=float, default=120.0, help="stop appending after this long")
    args = parser.parse_args(argv)

    root = Path(tempfile.mkdtemp(prefix="slawatch-bench-", dir=args.dir))
    refs = [ComponentRef(f"sip-trunk-{i:04d}", "sip", ("base", "silver", "gold", "platinum")[i % 4], f"cust-{i % 97}")
            for i in range(2000)]
    try:
        sp = Spool(root / "spool", 4 << 30)
        batches = [make_batch(i, args.batch, refs) for i in range(0, min(args.samples, 100 * args.batch), args.batch)]
        appended = 0
        t0 = time.perf_counter()
        while appended < args.samples and time.perf_counter() - t0 < args.max_seconds:
            sp.append(batches[(appended // args.batch) % len(batches)])
            appended += args.batch
        append_s = time.perf_counter() - t0
        size = sp.bytes
        sp.close()

        t0 = time.perf_counter()
        sp = Spool(root / "spool", 4 << 30)  # includes the open scan (CRC check of every record)
        open_s = time.perf_counter() - t0
        replayed = 0
        t0 = time.perf_counter()
        while True:
            batch = sp.read("store", args.read_batch)
            if not batch.points:
                break
            replayed += len(batch.points)
            sp.ack("store", batch)
        replay_s = time.perf_counter() - t0
        sp.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)

    print(f"append: {appended:,} samples in {args.batch}-point batches, fdatasync each: "
          f"{append_s:.2f} s = {appended / append_s:,.0f} points/s")
    print(f"open scan of {size / 1e6:.1f} MB: {open_s:.2f} s")
    print(f"replay (read {args.read_batch} + decode + ack): {replayed:,} samples in {replay_s:.2f} s = "
          f"{replayed / replay_s:,.0f} samples/s")
    print(f"size: {size / appended:.1f} bytes/sample")
    return 0 if replayed == appended else 1


if __name__ == "__main__":
    sys.exit(main())

"""The agent's state checkpoint: the cost of one confirmed change with N components, whole file against journal.

    python bench/checkpoint.py [--components 10000] [--changes 300] [--per-write 1] [--dir DIR]

Writes a checkpoint of N components (each with one open streak, as after a start), then `--changes` writes of
`--per-write` changed components each, as `Agent._save_checkpoint` does: first by replacing the whole file each
time (what the agent did before the journal: every entry joined, fsync, rename, directory fsync), then through
`Checkpoint.update` (an appended, fdatasync'ed journal record; a new base when the journal outgrows the old one).
Prints per write: wall and CPU milliseconds and bytes written, the compactions after the first base, and the time
to load the result (which must hold every change).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agent import checkpoint  # noqa: E402
from agent.checkpoint import Checkpoint, encode_row, encode_rows  # noqa: E402
from agent.state import Saved, SavedStreak  # noqa: E402
from slawatch.model import ComponentRef  # noqa: E402


def saved(i: int, version: int) -> Saved:
    streaks = {"tcp": SavedStreak(False, 1, 1_700_000_000_000 + version, 1_700_000_000_000 + version,
                                  "connect to 127.0.0.1:3260 timed out after 4.5s")}
    return Saved(ComponentRef(f"component-{i:06d}", "san", "gold", f"customer-{i % 100}"), version % 2 == 0,
                 1_700_000_000_000 + version, streaks)


def run(args: argparse.Namespace, work: Path) -> None:
    n, k = args.components, args.per_write
    rows = {s.ref.component: encode_row(s) for s in (saved(i, 0) for i in range(n))}
    print(f"{n} components, {args.changes} writes of {k} changed component(s) each, in {work}")
    print(f"{'how':<12} {'writes':>7} {'wall ms/write':>14} {'CPU ms/write':>13} {'bytes/write':>12} "
          f"{'compactions':>12} {'load ms':>8}")
    for how in ("whole file", "journal"):
        d = work / how.replace(" ", "-")
        d.mkdir()
        ckpt = Checkpoint(d, "bench")
        ckpt.update(dict(rows))  # the first write: a base with every component
        current = dict(rows)
        WRITTEN[0] = 0
        t0, c0 = time.perf_counter(), time.process_time()
        for w in range(args.changes):
            changes: dict[str, bytes | None] = {}
            for j in range(k):
                i = (w * k + j) * 7919 % n
                changes[f"component-{i:06d}"] = encode_row(saved(i, w + 1))
            current.update(changes)  # type: ignore[arg-type]
            if how == "whole file":
                ckpt._replace(encode_rows("bench", current.values()))  # type: ignore[arg-type]
            else:
                ckpt.update(changes)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        l0 = time.perf_counter()
        loaded = Checkpoint(d, "bench").load()
        load_ms = 1000 * (time.perf_counter() - l0)
        assert {name: encode_row(s) for name, s in loaded.items()} == current, "the checkpoint lost a change"
        print(f"{how:<12} {args.changes:>7} {1000 * wall / args.changes:>14.2f} {1000 * cpu / args.changes:>13.3f} "
              f"{WRITTEN[0] / args.changes:>12,.0f} {ckpt.compactions - 1 if how == 'journal' else 0:>12} "
              f"{load_ms:>8.1f}", flush=True)


WRITTEN = [0]
_write_all = checkpoint._write_all


def _counted(fd: int, data: bytes) -> None:
    WRITTEN[0] += len(data)
    _write_all(fd, data)


checkpoint._write_all = _counted  # every byte either way writes goes through it


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--components", type=int, default=10000)
    parser.add_argument("--changes", type=int, default=300, help="writes per way (bounded: at most 10 000)")
    parser.add_argument("--per-write", type=int, default=1, help="components changed per write")
    parser.add_argument("--dir", type=Path, default=None, help="where to write (default: a temporary directory)")
    args = parser.parse_args()
    args.changes = min(args.changes, 10000)
    if args.dir is not None:
        args.dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        run(args, Path(tmp))


if __name__ == "__main__":
    main()

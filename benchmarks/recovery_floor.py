"""What Bytewax's recovery store costs on its own: resume per key, and each epoch's write.

    python -m benchmarks.recovery_floor --keys 1000000 --files 16 128
    python -m benchmarks.recovery_floor --keys 20000 --files 1 4 --json

No segstream code runs here: a ``stateful_batch`` step whose logic only keeps
its snapshot bytes (700 B per key, about a settled user's) stands in for the
user step, fed by a ``TestingSource``. For each number of recovery files
(Bytewax's recovery partitions, segstream's ``recovery_partitions``):

- **resume**: the flow takes one item per key and ends (its snapshots land
  when the input ends), then runs again on the same recovery directory. Resume
  time is from that start to the last key's logic being built: Bytewax reading
  every key's latest snapshot from SQLite and handing it to the builder. This
  is the floor under ``benchmarks/resume.py``'s figure: the time segstream
  cannot win back in its own code.
- **epoch write**: 200 batches of 1,000 items over 1,000 keys with an epoch per
  batch, against the same with recovery off; the difference per epoch is what
  closing an epoch costs (every touched key's snapshot written, and a commit
  per recovery file). A tailing worker stalls that long every
  ``snapshot_interval_s``.

The figures on this machine: ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from datetime import timedelta
from typing import Any

import bytewax.operators as op
from bytewax.dataflow import Dataflow
from bytewax.operators import StatefulBatchLogic
from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.testing import TestingSource, run_main

SNAPSHOT_BYTES = 700
EPOCH_BATCHES = 200
EPOCH_BATCH = 1000
EPOCH_KEYS = 1000


class _Built:
    """Counts the logics built, and when the ``expected``-th one was."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.count = 0
        self.all_built_at: float | None = None

    def one(self) -> None:
        self.count += 1
        if self.count == self.expected:
            self.all_built_at = time.perf_counter()


class _KeepBytes(StatefulBatchLogic[bytes, None, bytes]):
    __slots__ = ("data",)

    def __init__(self, resume: bytes | None, built: _Built) -> None:
        self.data = resume
        built.one()

    def on_batch(self, values: list[bytes]) -> tuple[list[None], bool]:
        self.data = values[-1]
        return [], StatefulBatchLogic.RETAIN

    def snapshot(self) -> bytes | None:
        return self.data


def _flow(items: list[tuple[str, bytes]], built: _Built, batch_size: int) -> Dataflow:
    flow = Dataflow("recovery_floor")
    keyed = op.input("in", flow, TestingSource(items, batch_size=batch_size))
    state = op.stateful_batch("state", keyed, lambda resume: _KeepBytes(resume, built))
    op.inspect("discard", state, lambda *_: None)
    return flow


def _items(count: int, keys: int) -> list[tuple[str, bytes]]:
    payload = b"x" * SNAPSHOT_BYTES
    return [(f"user-{i % keys:07d}", payload) for i in range(count)]


def measure_resume(keys: int, files: int) -> dict[str, Any]:
    """Write ``keys`` snapshots into ``files`` recovery files, then time their resume."""
    directory = tempfile.mkdtemp(prefix="segstream-floor-")
    try:
        init_db_dir(directory, files)
        recovery = RecoveryConfig(directory)
        items = _items(keys, keys)
        start = time.perf_counter()
        run_main(_flow(items, _Built(keys), 1000), epoch_interval=timedelta(seconds=10),
                 recovery_config=recovery)
        write_s = time.perf_counter() - start
        built = _Built(keys)
        start = time.perf_counter()
        run_main(_flow(items, built, 1000), epoch_interval=timedelta(seconds=10),
                 recovery_config=recovery)
        if built.all_built_at is None:
            msg = f"resume built {built.count} of {keys} keys"
            raise RuntimeError(msg)
        return {"keys": keys, "files": files, "first_run_s": round(write_s, 2),
                "resume_s": round(built.all_built_at - start, 2),
                "resume_us_per_key": round((built.all_built_at - start) / keys * 1e6, 1)}
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def measure_epoch_write(files: int) -> dict[str, Any]:
    """Time an epoch per batch with ``files`` recovery files, against recovery off."""
    items = _items(EPOCH_BATCHES * EPOCH_BATCH, EPOCH_KEYS)

    def run(recovery: RecoveryConfig | None) -> float:
        start = time.perf_counter()
        run_main(_flow(items, _Built(-1), EPOCH_BATCH), epoch_interval=timedelta(0),
                 recovery_config=recovery)
        return time.perf_counter() - start

    off = run(None)
    directory = tempfile.mkdtemp(prefix="segstream-floor-")
    try:
        init_db_dir(directory, files)
        on = run(RecoveryConfig(directory))
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    return {"files": files, "epochs": EPOCH_BATCHES, "keys_per_epoch": EPOCH_KEYS,
            "ms_per_epoch": round((on - off) / EPOCH_BATCHES * 1000, 2)}


def report(rows: list[dict[str, Any]]) -> str:
    """The table printed (and copied into RESULTS.md)."""
    lines = ["| keys | recovery files | resume (all keys built) | per key | epoch write "
             f"({EPOCH_KEYS:,} keys) |", "| ---: | ---: | ---: | ---: | ---: |"]
    lines.extend(
        f"| {row['keys']:,} | {row['files']} | {row['resume_s']:.1f} s | "
        f"{row['resume_us_per_key']:.1f} µs | {row['ms_per_epoch']:.1f} ms |"
        for row in rows
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Entry point: ``python -m benchmarks.recovery_floor``."""
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--keys", type=int, default=1_000_000)
    ap.add_argument("--files", type=int, nargs="+", default=[16, 64, 128])
    ap.add_argument("--json", action="store_true", help="print JSON instead of the table")
    args = ap.parse_args(argv)
    rows = [measure_resume(args.keys, files) | measure_epoch_write(files) for files in args.files]
    print(json.dumps(rows, indent=2) if args.json else report(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""What reading a run's authorizations costs `registry add` (migration 0002's intake).

Builds the synthetic run docs/registry.md measures (N ledger records of 30 s each, a sealed
dossier: tests/registry_runs.py's write_run), then, --repeat times each, the median of

  add:   Registry(sqlite file).add(run) in process, a fresh registry each time (verify, points, rows);
  scan:  auditor.registry.approvals.HoldingScan over the same records (the per-record work the
         intake added: which authorization each record names, the covered phases' running sums).

    python benchmarks/registry_authorizations.py [--records 200000] [--repeat 3]

Target: the scan is at most 5 % of the add (a ratio, so that the machine's speed drops out).
Exit 1 when it is over.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET = 0.05


def stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT / "tests"))
    from registry_runs import write_run

    from auditor.record.ledger import read_ledger
    from auditor.registry.approvals import HoldingScan
    from auditor.registry.store import Registry

    with tempfile.TemporaryDirectory() as tmp:
        start = datetime(2026, 2, 1, tzinfo=timezone.utc)
        intervals = [(stamp(start + timedelta(seconds=30 * (i + 1))), 5 * 10 ** 20) for i in range(args.records)]
        run = write_run(Path(tmp) / "big", stamp(start), intervals, name="big",
                        close=stamp(start + timedelta(seconds=30 * (args.records + 1))))
        adds, scans = [], []
        for i in range(args.repeat):
            with Registry(f"sqlite:///{tmp}/registry-{i}.db") as registry:
                began = time.perf_counter()
                registry.add(run, model="big", stage="pretraining")
                adds.append(time.perf_counter() - began)
        records = read_ledger(run).records
        for _ in range(args.repeat):
            began = time.perf_counter()
            scan = HoldingScan()
            for rec in records:
                scan(rec)
            scan.finish()
            scans.append(time.perf_counter() - began)
    add, held = statistics.median(adds), statistics.median(scans)
    ratio = held / add
    print(f"{len(records):,} records: add {add:.2f} s, authorization scan {held:.3f} s, ratio {ratio:.1%} "
          f"(target at most {TARGET:.0%}; medians of {args.repeat})")
    return 0 if ratio <= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())

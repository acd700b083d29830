"""Synthetic tracked runs for the registry's tests: a valid hash-chained ledger whose records carry
chosen times (the writer's clock cannot be set), and the sealed dossier the tracker would write
over it. Any int FLOPs: a 9e25 pre-training run is a few lines. Verified before it is returned."""
from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from auditor.record import dossier
from auditor.record.ledger import (
    FILENAME,
    ZERO,
    canonical,
    read_ledger,
    record_hash,
    verify_ledger,
)

E = 10 ** 24          # 1e24 FLOP


def at(day: str, hour: int = 0) -> str:
    """'2026-04-07', 3 -> '2026-04-07T03:00:00.000000Z' (the ledger's time format)."""
    return f"{day}T{hour:02d}:00:00.000000Z"


def write_run(run_dir: Path, start: str, intervals: list[tuple], *, name: str = "run", close: str | None = None,
              plan: dict | None = None, with_dossier: bool = True) -> Path:
    """A run folder: a start record at ``start``, then one interval record per (time, flops) or
    (time, flops, eval_flops), then a close record at ``close`` (None: left open, no dossier)."""
    records, prev, total, step = [], ZERO, 0, 0
    rows = [("start", start, 0, 0)] + [("interval", t, f, (rest or [0])[0]) for t, f, *rest in intervals]
    if close is not None:
        rows.append(("close", close, 0, 0))
    for seq, (kind, time, flops, eval_flops) in enumerate(rows):
        step += kind == "interval"
        total += flops
        rec = {"seq": seq, "time": time, "step": step, "flops": flops, "total": total, "kind": kind, "prev": prev}
        if kind == "start":
            rec["meta"] = {"run": name}
        if eval_flops:
            rec["eval_flops"] = eval_flops
        rec["hash"] = prev = record_hash(rec)
        records.append(rec)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / FILENAME).write_bytes(b"".join(canonical(r) + b"\n" for r in records))
    assert verify_ledger(run_dir).ok
    if close is not None and with_dossier:
        write_dossier(run_dir, name, plan)
    return run_dir


def write_dossier(run_dir: Path, name: str, plan: dict | None = None) -> None:
    """The sealed dossier ComputeAudit writes at the end (auditor/tracking/run_dossier.py), over this ledger."""
    state = read_ledger(run_dir)
    total = state.total
    tracked = {"total_flops": total, "low": total, "high": total, "estimates": [], "verdicts": [],
               "uncovered_ops": [], "as_of": None, "eval_flops": sum(r.get("eval_flops", 0) for r in state.records),
               "recompute_flops": 0, "steps": state.step, "series": [[r["step"], r["total"]] for r in state.records],
               "ledger": {"path": FILENAME, "head": state.head, "records": state.count}}
    dossier.write(dossier.build(plan, run=name, tracked=tracked), run_dir / dossier.DOSSIER_NAME)


def daily(first_day: int, count: int, flops: int, month: str = "2026-04", eval_flops: int = 0) -> list[tuple]:
    """``count`` intervals of ``flops`` each, one a day at midnight from ``month``-``first_day``."""
    return [(at(f"{month}-{first_day + i:02d}"), flops, eval_flops) for i in range(count)]


def three_stages(root: Path) -> dict[str, Path]:
    """Pre-training 9e25 (nine days of 1e25 in February 2026), SFT 5e24 (five days of 1e24 in March),
    RL 6e24 in April: six days, each 0.4e24 of training and 0.6e24 of rollouts (no-grad forward
    passes, the tracker's eval_flops). The cumulative sum after RL day k is 9.5e25 + k x 1e24."""
    return {
        "pretraining": write_run(root / "pretrain", at("2026-02-01"), daily(2, 9, 10 * E, "2026-02"),
                                 name="m-pretrain", close=at("2026-02-10", 12)),
        "sft": write_run(root / "sft", at("2026-03-01"), daily(2, 5, E, "2026-03"), name="m-sft",
                         close=at("2026-03-06", 12)),
        "rl": write_run(root / "rl", at("2026-04-01"), daily(2, 6, 4 * E // 10, "2026-04", 6 * E // 10),
                        name="m-rl", close=at("2026-04-07", 12)),
    }


# ---------------------------------------------------------------------- registries to test against

POSTGRES = os.environ.get("AUDITOR_TEST_POSTGRES_URL")   # .ci/run starts a server and sets it


def _postgres_database():
    """A fresh, empty database on the test server; dropped afterwards."""
    import sqlalchemy as sa

    if not POSTGRES:
        if os.environ.get("CI"):
            pytest.fail("CI: AUDITOR_TEST_POSTGRES_URL is not set (.ci/run starts PostgreSQL and sets it)")
        pytest.skip("no PostgreSQL server: set AUDITOR_TEST_POSTGRES_URL (.ci/run does)")
    admin = sa.create_engine(POSTGRES, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    name = f"auditor_test_{uuid.uuid4().hex[:12]}"
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {name}")
    try:
        yield sa.engine.make_url(POSTGRES).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def registry_url(request, tmp_path):
    """A fresh registry on each backend: a SQLite file, and a new database on the PostgreSQL server."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'registry.db'}"
        return
    yield from _postgres_database()

"""What goes into the registry, read and verified: a tracked run (its ledger, and its sealed
dossier where there is one), or a plan (``auditor preflight --format json`` output, or a
preflight dossier).

A tracked run is verified by ``auditor.record.verify.check`` (the chain, the seal, that their figures
agree and, with trusted keys, that a trusted key signed every record), and its points are taken
in that same pass, so what is recorded is what was verified. Points go to a temporary file, not
memory: a ledger of millions of records costs a few bytes of memory each, none. Only records
where the counted compute changes are kept (and the first and last), which is all that finding a
crossing needs.
"""
from __future__ import annotations

import hashlib
import json
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from auditor.files import FileRefused, describe, kind_of, read_regular
from auditor.registry.approvals import HoldingScan, run_approvals
from auditor.registry.engine import RegistryError
from auditor.text import printable, short

PLAN_LIMIT = 10_000_000   # bytes of a plan's JSON
ROLLOUT_STAGES = ("rl",)  # stages whose no-grad forward passes are rollouts by default


def parse_time(text: str) -> datetime:
    return utc(datetime.fromisoformat(text.replace("Z", "+00:00")))


def utc(moment: datetime) -> datetime:
    """Aware UTC (SQLite gives naive datetimes back: they were written as UTC)."""
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment.astimezone(timezone.utc)


def plan_key(figures: dict[str, Any]) -> str:
    """A plan's fingerprint: its central figure, range and estimates. A tracked dossier made with
    ComputeAudit(preflight=plan) carries the same under ``planned``, so the two are linked."""
    body = {k: figures.get(k) for k in ("total_flops", "low", "high", "estimates")}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


class PointSpool:
    """(seq, time, step, counted) rows, on disk until they are inserted."""

    def __init__(self):
        self._file = tempfile.TemporaryFile(mode="w+", encoding="ascii")  # noqa: SIM115  (kept for the spool's life)
        self.count = 0

    def add(self, seq: int, time: str, step: int, counted: int) -> None:
        self._file.write(f"{seq} {time} {step} {counted}\n")
        self.count += 1

    def rows(self) -> Iterator[dict[str, Any]]:
        self._file.seek(0)
        for line in self._file:
            seq, time, step, counted = line.split()
            yield {"seq": int(seq), "time": parse_time(time), "step": int(step), "counted": int(counted)}

    def close(self) -> None:
        self._file.close()


@dataclass
class RunFacts:
    """A run as the registry records it."""
    identity: str
    kind: str                       # tracked | planned
    name: str
    source: str
    total: int
    counted: int
    rollouts: int
    low: int
    high: int
    verified: str
    dossier_digest: str | None = None
    ledger_head: str | None = None
    ledger_seq: int | None = None
    closed: bool = False
    started_at: datetime | None = None
    ended_at: datetime | None = None
    plan_key: str | None = None
    points: PointSpool | None = None
    notes: list[str] = field(default_factory=list)
    checked_head: tuple[int, str] | None = None   # the head the registry held when this was read
    held_head: bool = False                       # and whether this ledger holds it
    authorizations: list = field(default_factory=list)   # (ApprovalFacts, Held): what the run held (approvals.py)


class _Collector:
    """Takes each verified ledger record: the identity, the figures, the points that matter."""

    def __init__(self, count_rollouts: bool, known_head=None):
        self.count_rollouts, self.spool, self.known_head = count_rollouts, PointSpool(), known_head
        self.want, self.held = None, False
        self.first = self.last = None
        self.rollouts, self.kept_counted, self.pending = 0, None, None
        self.holdings = HoldingScan()

    def __call__(self, rec: dict) -> None:
        self.holdings(rec)
        if self.first is None:
            self.first = rec
            self.want = self.known_head(rec["hash"]) if self.known_head else None
        if self.want == (rec["seq"], rec["hash"]):
            self.held = True
        self.rollouts += rec.get("eval_flops", 0) if self.count_rollouts else 0
        point = (rec["seq"], rec["time"], rec["step"], rec["total"] + self.rollouts)
        if rec["seq"] == 0 or point[3] != self.kept_counted:
            if self.pending is not None:   # the record before a change: where that interval began
                self.spool.add(*self.pending)
            self.spool.add(*point)
            self.kept_counted, self.pending = point[3], None
        else:
            self.pending = point
        self.last = rec

    def finish(self) -> None:
        if self.pending is not None:
            self.spool.add(*self.pending)


def read_target(path: Path, *, stage: str, trusted_keys=(), rollouts: bool | None = None,
                known_head=None) -> RunFacts:
    """A RUN_DIR, a dossier.json, a ledger.jsonl or a plan's JSON, read and verified.
    ``known_head(identity)``: the (seq, hash) the registry holds for a run, checked in the same pass.
    RegistryError: code 2 unreadable or not a run; code 1 it does not verify (tampered, unsigned)."""
    path = Path(path)
    if not path.exists():
        raise RegistryError(f"{printable(path)}: does not exist")
    if not path.is_dir():
        if kind_of(path):
            raise RegistryError(f"{printable(path)}: {kind_of(path)}")
        if path.suffix == ".json":
            data = _read_json(path)
            if "seal" not in data:
                return read_plan(path, data)
    count_rollouts = stage in ROLLOUT_STAGES if rollouts is None else rollouts
    return _read_verified(path, trusted_keys, count_rollouts, known_head)


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(read_regular(path, PLAN_LIMIT))
    except (OSError, FileRefused) as exc:
        raise RegistryError(f"{printable(path)}: cannot read it: {describe(exc)}") from None
    except (ValueError, RecursionError) as exc:
        raise RegistryError(f"{printable(path)}: not JSON ({printable(str(exc))[:120]}); expected a run's dossier "
                            f"or a plan (auditor preflight CONFIG --format json)") from None
    if not isinstance(data, dict):
        raise RegistryError(f"{printable(path)}: got {type(data).__name__} at the top level; expected a dossier or "
                            f"a plan (a JSON object)")
    return data


def _read_verified(path: Path, trusted_keys, count_rollouts: bool, known_head) -> RunFacts:
    from auditor.record.verify import check

    collector = _Collector(count_rollouts, known_head)
    try:
        found = check(path, list(trusted_keys), visit=collector)
        if found.code:
            first = found.problems[0].removeprefix("error: ") if found.problems else "it does not verify"
            raise RegistryError(f"{printable(path)}: refused: {first}" if found.code == 1 else first,
                                code=found.code)
        collector.finish()
    except BaseException:
        collector.spool.close()
        raise
    data, how = found.dossier, _how_verified(trusted_keys)
    if collector.first is None:                       # a preflight dossier: a plan, sealed
        collector.spool.close()
        return _plan_facts(data, str(path), identity=data["seal"]["digest"], verified=f"sealed plan; {how}",
                           digest=data["seal"]["digest"])
    first, last = collector.first, collector.last
    try:
        held = run_approvals(path if path.is_dir() else path.parent, collector.holdings, list(trusted_keys))
    except BaseException:
        collector.spool.close()
        raise
    name = (data or {}).get("run") or (first.get("meta") or {}).get("run") or path.resolve().name
    counted = last["total"] + collector.rollouts
    planned = (data or {}).get("planned")
    return RunFacts(
        identity=first["hash"], kind="tracked", name=str(name)[:200], source=printable(path)[:1000],
        total=last["total"], counted=counted, rollouts=collector.rollouts, low=counted, high=counted, verified=how,
        dossier_digest=data["seal"]["digest"] if data else None, ledger_head=last["hash"], ledger_seq=last["seq"],
        closed=last["kind"] == "close", started_at=parse_time(first["time"]), ended_at=parse_time(last["time"]),
        plan_key=plan_key(planned) if isinstance(planned, dict) else None, points=collector.spool,
        checked_head=collector.want, held_head=collector.held, authorizations=held)


def _how_verified(trusted_keys) -> str:
    keys = list(trusted_keys)
    if keys:
        return "verified, every record signed by a trusted key (" + ", ".join(printable(k.name) for k in keys) + ")"
    return "verified for integrity only (no trusted key: whoever can edit the files can recompute every hash)"


def read_plan(path: Path, data: dict) -> RunFacts:
    """A plan: ``auditor preflight CONFIG --format json`` output, checked field by field."""
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":")).encode()
    return _plan_facts(data, str(path), identity=hashlib.sha256(canonical).hexdigest(),
                       verified="a plan accepted by a reviewer (not a record of compute used; unsigned)")


def _plan_facts(data: dict, source: str, *, identity: str, verified: str, digest: str | None = None) -> RunFacts:
    where = printable(source)
    figures = {}
    for key in ("total_flops", "low", "high"):
        value = data.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise RegistryError(f"{where}: {key}: got {short(value)}; expected a whole number of FLOPs (the plan's "
                                f"JSON from auditor preflight CONFIG --format json)")
        figures[key] = value
    if not figures["low"] <= figures["total_flops"] <= figures["high"]:
        raise RegistryError(f"{where}: low, total_flops, high: got {figures['low']}, {figures['total_flops']}, "
                            f"{figures['high']}; expected low <= total_flops <= high")
    if not isinstance(data.get("estimates"), list):
        raise RegistryError(f"{where}: estimates: got {short(data.get('estimates'))}; expected the plan's list of "
                            f"estimates (auditor preflight CONFIG --format json)")
    name = data.get("run")
    if not isinstance(name, str) or not name.strip():
        raise RegistryError(f"{where}: run: got {short(name)}; expected the run's name")
    return RunFacts(identity=identity, kind="planned", name=name[:200], source=where[:1000],
                    total=figures["total_flops"], counted=figures["total_flops"], rollouts=0, low=figures["low"],
                    high=figures["high"], verified=verified, dossier_digest=digest, plan_key=plan_key(data))

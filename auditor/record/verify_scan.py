"""What verify's layers share: the Findings they report into, and the LedgerScan one streaming
pass over the ledger fills with the figures at the points verify compares (verify.py)."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from auditor.record.authorization import named_by
from auditor.record.ledger import Sums, canonical
from auditor.record.run_facts import resume_entry


@dataclass
class Findings:
    """What verify says: lines for stdout or stderr, the problems among them, and the exit code."""
    code: int = 0
    lines: list[tuple[str, str]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    dossier: dict | None = None          # the dossier verify read (None where there is none or it failed)
    ledger: Any = None                   # the ledger's VerifyResult, where there is a ledger

    def say(self, line: str) -> None:
        self.lines.append(("out", line))

    def bad(self, line: str) -> None:
        self.lines.append(("out", line))
        self.problems.append(line)
        self.code = max(self.code, 1)

    def error(self, line: str) -> "Findings":
        """Unreadable, or nothing to verify: exit 2 with this one line."""
        self.code, self.lines, self.problems = 2, [("err", line)], [line]
        return self


@dataclass
class LedgerScan:
    """What one streaming pass over the ledger keeps: the figures at the points verify compares."""
    want_head: str | None = None          # the dossier's sealed head
    want_signed: tuple[int, str] | None = None   # (seq, hash) the signature file names
    series: list[tuple[int, int]] = field(default_factory=list)
    cuts: list[int] = field(default_factory=list)  # indices in ``series`` of the resume records
    sums: Sums = field(default_factory=Sums)  # evaluation, recomputation, hardware work, phases: running sums
    at_head: dict | None = None           # count, step, total and sums at the sealed head
    signed_digest: str | None = None      # SHA-256 of the ledger's bytes through the signed record
    signed_found: bool = False
    signers: set = field(default_factory=set)   # key ids the start/resume records name
    authorization: dict | None = None     # what the latest start/resume record says of the run's authorization
    resumes: list[dict] = field(default_factory=list)
    last: dict | None = None
    first: dict | None = None
    _digest: Any = field(default_factory=hashlib.sha256)

    def visit(self, rec: dict) -> None:
        index = len(self.series)
        if rec["kind"] == "resume":      # a cut: the figures just before it, and what it set aside
            self.resumes.append({"index": index, "cut": self.last, "sums": self.sums.copy(),
                                 "file": (rec.get("meta") or {}).get("rolled_back_file"), "entry": resume_entry(rec)})
            self.cuts.append(index)
        signer = (rec.get("meta") or {}).get("signer") if rec["kind"] in ("start", "resume") else None
        if isinstance(signer, str):
            self.signers.add(signer)
        if (named := named_by(rec)) is not None:
            self.authorization = named
        self.sums.add(rec)
        self.series.append((rec["step"], rec["total"]))
        self._digest.update(canonical(rec) + b"\n")
        if rec["hash"] == self.want_head:
            self.at_head = {"count": index + 1, "step": rec["step"], "total": rec["total"],
                            "sums": self.sums.copy(), "time": rec["time"], "first": self.first or rec,
                            "resumes": [r["entry"] for r in self.resumes]}
        if self.want_signed == (rec["seq"], rec["hash"]):
            self.signed_found, self.signed_digest = True, self._digest.hexdigest()
        self.last, self.first = rec, self.first or rec

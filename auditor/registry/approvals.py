"""A model's authorizations in the registry: read from a run (what its ledger names, and the
signed copy kept beside it) or from the document itself when it is issued, and recorded once
each, by the SHA-256 of the document (what a ledger names), with the run that held it.

A ledger names every authorization its run held (the start record, and each resume record that
moved to one that supersedes it); the run folder keeps only the latest one's bytes
(``authorization.json``). So the latest is recorded from its document, signature checked with the
trusted keys given, and the earlier ones from the ledger's record of them (hash, budget, approver
key id, config hash) until their documents are given (``auditor registry authorize``), which
fills them in. A superseding authorization whose predecessor is not in the registry is recorded
with the gap stated rather than refused: a run's compute must not be kept out of the registry
because an older document was never handed in, and the gap closes when it is (links are by
SHA-256, resolved when read, so the order things are recorded in does not matter). A chain that
would cross models, or come back on itself, is refused.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from auditor.files import FileRefused, describe, read_regular
from auditor.record.authorization import (
    MAX_BYTES,
    RUN_COPY,
    Authorization,
    AuthorizationError,
    named_by,
    opened_statement,
    unverified,
    used_flops,
    verified,
)
from auditor.record.ledger import Sums
from auditor.registry.engine import RegistryError
from auditor.registry.exact import DIGITS
from auditor.registry.schema import NAME_LIMIT, Approval, Holding, Model
from auditor.text import printable

SHA256 = re.compile(r"[0-9a-f]{64}")
NOT_CHECKED = "signature not checked (no trusted key given)"


@dataclass
class ApprovalFacts:
    """One authorization as the registry records it (``Approval``'s columns)."""
    sha256: str
    source: str                          # signed: from its document; ledger: from a ledger's record of it
    approver_keyid: str
    budget_flops: int
    config_sha256: str
    verified: str
    approver_name: str | None = None
    config_name: str | None = None
    run_name: str | None = None
    valid_from: date | None = None
    expires: date | None = None
    supersedes: str | None = None
    preflight: tuple[int | None, int | None, int | None] = (None, None, None)
    signed_bytes: bytes | None = None

    def values(self) -> dict[str, Any]:
        low, central, high = self.preflight
        return {"sha256": self.sha256, "source": self.source, "approver_keyid": self.approver_keyid[:NAME_LIMIT],
                "approver_name": _cut(self.approver_name), "budget_flops": self.budget_flops,
                "preflight_low": low, "preflight_flops": central, "preflight_high": high,
                "config_name": _cut(self.config_name), "config_sha256": self.config_sha256,
                "run_name": _cut(self.run_name), "valid_from": self.valid_from, "expires": self.expires,
                "supersedes": self.supersedes, "signed_bytes": self.signed_bytes, "verified": self.verified[:300]}


def _cut(text: str | None) -> str | None:
    return None if text is None else text[:NAME_LIMIT]


def _count(value: Any) -> int | None:
    """A preflight figure as the registry keeps it: an exact int, or None where it is not one."""
    ok = isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 10 ** DIGITS
    return value if ok else None


def from_document(auth: Authorization, how: str) -> ApprovalFacts:
    """What a verified (or, without keys, read) authorization document says."""
    if auth.supersedes is not None and not (isinstance(auth.supersedes, str) and SHA256.fullmatch(auth.supersedes)):
        raise RegistryError(f"{printable(auth.path)}: supersedes: got {printable(auth.supersedes)[:80]!r}; expected "
                            f"the SHA-256 of the authorization it replaces")
    if not 0 < auth.budget_flops < 10 ** DIGITS:
        raise RegistryError(f"{printable(auth.path)}: budget_flops: got {auth.budget_flops}; expected a positive "
                            f"whole number of FLOPs below 10^{DIGITS}")
    pre = auth.preflight
    return ApprovalFacts(
        sha256=auth.digest, source="signed", approver_keyid=auth.approver.keyid, budget_flops=auth.budget_flops,
        config_sha256=auth.config_sha256[:64], verified=how, approver_name=auth.approver.name,
        config_name=printable(auth.config_name), run_name=printable(auth.run), valid_from=auth.valid_from,
        expires=auth.expires, supersedes=auth.supersedes, signed_bytes=auth.raw,
        preflight=(_count(pre.get("low")), _count(pre.get("total_flops")), _count(pre.get("high"))))


def _signed_by(auth: Authorization) -> str:
    return f"signature verified with the trusted key {printable(auth.approver.name)}"


def read_document(path: Path, trusted) -> ApprovalFacts:
    """An authorization given on its own (``registry authorize``): RegistryError code 2 when it
    cannot be read or is not an authorization, code 1 when no trusted key's signature verifies."""
    if not trusted:
        raise RegistryError("--trusted-key: expected the approver's public key (NAME.pub; repeat for more, or "
                            "$AUDITOR_TRUSTED_KEYS): an authorization is recorded only with its signature checked")
    try:
        raw = read_regular(path, MAX_BYTES)
    except (OSError, FileRefused) as exc:
        raise RegistryError(f"{printable(path)}: cannot read the authorization: {describe(exc)}") from None
    try:
        opened_statement(raw, path, [])           # what it is first (exit 2), then who signed it (exit 1)
    except AuthorizationError as exc:
        raise RegistryError(str(exc)) from None
    try:
        auth = verified(raw, path, trusted)
    except AuthorizationError as exc:   # a signature that does not verify is refused (1); a malformed one is bad input
        forged = ": does not verify: " in str(exc)
        raise RegistryError(f"refused: {exc}" if forged else str(exc), code=1 if forged else 2) from None
    return from_document(auth, _signed_by(auth))


# ---------------------------------------------------------------- a run's side


@dataclass
class Held:
    """One authorization a run held: the ledger's record of it, from which record, what it used."""
    meta: dict[str, Any]
    first_seq: int
    held_from: str
    used: int = 0


@dataclass
class HoldingScan:
    """Called on each verified ledger record (with the registry's collector): the authorizations
    the run held, in order, and what it used of each: the covered phases through the last record
    before the next one was named (the compute before a resume counts against the newer one too,
    whose budget covers the whole run), as verify and the dossier count it."""
    held: dict[str, Held] = field(default_factory=dict)
    current: Held | None = None
    sums: Sums = field(default_factory=Sums)
    train: int = 0

    def __call__(self, rec: dict) -> None:
        said = named_by(rec)
        if said is not None:
            meta = _ledger_fields(said, rec["seq"])
            self.finish()
            self.current = self.held.setdefault(meta["sha256"], Held(meta, rec["seq"], rec["time"]))
        self.sums.add(rec)
        self.train = rec["total"]

    def finish(self) -> None:
        if self.current is not None:
            self.current.used = used_flops(self.sums.by_phase(self.train), self.current.meta["phases"])


def _ledger_fields(said: Any, seq: int) -> dict[str, Any]:
    """A ledger record's ``meta.authorization`` (authorization.ledger_meta), checked field by field."""
    ok = isinstance(said, dict) and all(isinstance(said.get(k), str) for k in ("sha256", "approver", "config_sha256"))
    budget = said.get("budget_flops") if ok else None
    ok = ok and SHA256.fullmatch(said["sha256"]) is not None and len(said["config_sha256"]) <= 64 \
        and _count(budget) is not None and budget > 0 and isinstance(said.get("phases"), list) \
        and all(isinstance(p, str) for p in said["phases"])
    if not ok:
        raise RegistryError(f"ledger record seq {seq}: refused: its record of the run's authorization is malformed "
                            f"(expected sha256, budget_flops, phases, approver and config_sha256)", code=1)
    return said


def run_approvals(run_dir: Path, scan: HoldingScan, trusted) -> list[tuple[ApprovalFacts, Held]]:
    """Every authorization a verified run held, with what it used of each. The latest is read from
    its copy beside the ledger, which must be the bytes the ledger names (code 1 otherwise) and,
    with trusted keys, signed by one of them (code 1); the earlier ones, from the ledger."""
    scan.finish()
    out = [(_from_ledger(h.meta, trusted), h) for h in scan.held.values()]
    latest = scan.current
    copy = run_dir / RUN_COPY
    if latest is None or not copy.is_file():
        return out
    try:
        raw = read_regular(copy, MAX_BYTES)
    except (OSError, FileRefused) as exc:
        raise RegistryError(f"{printable(copy)}: cannot read the run's authorization: {describe(exc)}") from None
    if hashlib.sha256(raw).hexdigest() != latest.meta["sha256"]:
        raise RegistryError(f"{printable(copy)}: refused: not the authorization the ledger names (sha256 "
                            f"{latest.meta['sha256'][:16]}...): replaced or edited", code=1)
    try:
        auth = verified(raw, copy, trusted) if trusted else unverified(raw, copy)
    except AuthorizationError as exc:
        raise RegistryError(f"refused: the run's authorization cannot be trusted: {exc}", code=1) from None
    if auth.budget_flops != latest.meta["budget_flops"]:
        raise RegistryError(f"{printable(copy)}: refused: approves {auth.budget_flops:,} FLOPs but the ledger records "
                            f"a budget of {latest.meta['budget_flops']:,}", code=1)
    facts = from_document(auth, _signed_by(auth) if trusted else NOT_CHECKED)
    return [(facts, h) if h is latest else (f, h) for f, h in out]


def _from_ledger(meta: dict[str, Any], trusted) -> ApprovalFacts:
    how = "known from a run's ledger only (its signed document was not given)"
    if trusted:
        how += "; the ledger's records are signed by a trusted key"
    return ApprovalFacts(sha256=meta["sha256"], source="ledger", approver_keyid=meta["approver"],
                         budget_flops=meta["budget_flops"], config_sha256=meta["config_sha256"], verified=how)


# ---------------------------------------------------------------- recording


def record(conn: sa.Connection, model_id: int, facts: ApprovalFacts, notes: list[str]) -> tuple[int, str]:
    """(the row's id, what happened: added | already recorded | filled in) for one authorization,
    under the model: refused when it is recorded under another, or its chain would cross models or
    come back on itself. A ledger's record of it is filled in when its document comes."""
    row = conn.execute(sa.select(Approval).where(Approval.sha256 == facts.sha256)).mappings().first()
    short = facts.sha256[:16]
    if row is not None and row["model_id"] != model_id:
        other = conn.execute(sa.select(Model.name).where(Model.id == row["model_id"])).scalar_one()
        raise RegistryError(f"authorization {short}... is recorded for model {printable(other)!r}; an authorization "
                            f"approves runs of one model")
    if row is not None and (facts.source == "ledger" or row["source"] == "signed"):
        if facts.source == "signed" and row["verified"] == NOT_CHECKED and facts.verified != NOT_CHECKED:
            conn.execute(sa.update(Approval).where(Approval.id == row["id"]).values(verified=facts.verified))
        return row["id"], "already recorded"
    _check_chain(conn, model_id, facts)
    if row is not None:       # known from a ledger; now its document: the two must say the same
        said = (row["budget_flops"], row["approver_keyid"], row["config_sha256"])
        if said != (facts.budget_flops, facts.approver_keyid, facts.config_sha256):
            raise RegistryError(f"authorization {short}...: refused: a ledger recorded it as budget {said[0]:,} by "
                                f"{printable(said[1])}, and the document says {facts.budget_flops:,} by "
                                f"{printable(facts.approver_keyid)}", code=1)
        conn.execute(sa.update(Approval).where(Approval.id == row["id"]).values(**facts.values()))
        notes.append(f"authorization {short}: its signed document recorded")
        return row["id"], "filled in"
    from auditor.registry.store import now

    new_id = conn.execute(sa.insert(Approval).values(**facts.values(), model_id=model_id, added_at=now())
                          .returning(Approval.id)).scalar_one()
    notes.append(f"authorization {short} recorded")
    if facts.supersedes and conn.execute(sa.select(Approval.id).where(Approval.sha256 == facts.supersedes)
                                         ).scalar() is None:
        notes.append(f"it supersedes {facts.supersedes[:16]}, not in the registry (a gap in the history until "
                     f"that authorization is recorded)")
    return new_id, "added"


def _check_chain(conn: sa.Connection, model_id: int, facts: ApprovalFacts) -> None:
    """The authorization it supersedes and those that supersede it are the same model's, and
    following the links back from it never comes back to it. SHA-256 links between real
    documents cannot make a cycle; a registry edited by hand can."""
    linked = conn.execute(sa.select(Approval.sha256, Approval.model_id).where(
        sa.or_(Approval.sha256 == facts.supersedes, Approval.supersedes == facts.sha256))).all()
    for sha, owner in linked:
        if owner != model_id:
            name = conn.execute(sa.select(Model.name).where(Model.id == owner)).scalar_one()
            raise RegistryError(f"authorization {facts.sha256[:16]}...: linked by supersedes to {sha[:16]}..., which is "
                                f"recorded for model {printable(name)!r}; a chain of authorizations is one model's")
    seen, step = {facts.sha256}, facts.supersedes
    while step is not None:
        if step in seen:
            raise RegistryError(f"authorization {facts.sha256[:16]}...: refused: its chain of supersedes comes back to "
                                f"{step[:16]}... (a cycle)")
        seen.add(step)
        step = conn.execute(sa.select(Approval.supersedes).where(Approval.sha256 == step)).scalar()


def record_holdings(conn: sa.Connection, run_id: int, model_id: int, held: list[tuple[ApprovalFacts, Held]],
                    notes: list[str]) -> None:
    """The authorizations a run held, each recorded, and the run's link to each (replacing what was
    recorded of the run before: a ledger that grew used more)."""
    from auditor.registry.intake import parse_time

    conn.execute(sa.delete(Holding).where(Holding.run_id == run_id))
    for facts, h in held:
        approval_id, _ = record(conn, model_id, facts, notes)
        conn.execute(sa.insert(Holding).values(run_id=run_id, authorization_id=approval_id, first_seq=h.first_seq,
                                               held_from=parse_time(h.held_from), used_flops=h.used))

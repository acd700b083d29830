"""Authorizations: a reviewer's signed approval of one run's compute budget (docs/authorization.md).

An authorization is a DSSE envelope (signing.py) over an in-toto Statement whose subject is the
training config it approves (its file name and SHA-256) and whose predicate holds what was
approved: the run's name, the budget in FLOPs, the preflight range the budget was set against,
the rules and as-of date it was judged by, the validity dates, conditions, who approved (the key
id; the name is the key file's, a label), and, for a request for more, the authorization it
supersedes. The config's hash ties the approval to the run that happens: another config, or the
same with ten times the tokens, is not authorized by it.

A run holds its authorization and enforces it (auditor/tracking/): refused at start when it does not
verify with a trusted key, has expired or is not yet valid, or was made for another config; the
budget is a blocking limit during the run; the ledger's first record names the authorization's
hash, and the dossier shows authorized against used.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any

from auditor.files import FileRefused, describe, read_regular
from auditor.record.signing import (
    SigningKey,
    TrustedKey,
    open_envelope,
    short_id,
    statement,
    subject_digest,
)
from auditor.text import printable, sci

PREDICATE = "https://github.com/auditor/auditor/attestations/authorization/v1"
MAX_BYTES = 1_000_000


class AuthorizationError(Exception):
    """A run refused at start, or an authorization that cannot be used: one line saying why."""


@dataclass(frozen=True)
class Authorization:
    """A verified authorization: what it approves, and who approved it."""
    path: Path
    digest: str                    # SHA-256 of the file's bytes: what a ledger names
    config_name: str
    config_sha256: str
    run: str
    budget_flops: int
    valid_from: date
    expires: date | None
    conditions: tuple[str, ...]
    rules: tuple[str, ...]
    as_of: str | None
    preflight: dict[str, Any]
    supersedes: str | None
    approver: TrustedKey
    raw: bytes = field(default=b"", repr=False)   # the file's bytes, as verified

    def describe(self) -> str:
        until = f" until {self.expires}" if self.expires else ""
        return (f"{self.run}: {sci(self.budget_flops)} FLOP approved by {self.approver.name} "
                f"({short_id(self.approver.keyid)}) from {self.valid_from}{until}, for config {self.config_name} "
                f"(sha256 {self.config_sha256[:16]}...)")


def config_digest(path: str | Path) -> str:
    from auditor.inputs.yaml_reader import MAX_FILE_BYTES

    return hashlib.sha256(read_regular(path, MAX_FILE_BYTES)).hexdigest()


def make(config_path: str | Path, key: SigningKey, *, budget: int, preflight: dict[str, Any],
         expires: date | None = None, valid_from: date | None = None, conditions: list[str] = (),
         supersedes: str | Path | None = None) -> dict[str, Any]:
    """The signed envelope approving ``budget`` FLOPs for the config at ``config_path``."""
    if not isinstance(budget, int) or isinstance(budget, bool) or budget <= 0:
        raise AuthorizationError(f"--budget: got {budget!r}; expected a positive whole number of FLOPs")
    valid_from = valid_from or datetime.now(timezone.utc).date()
    if expires is not None and expires < valid_from:
        raise AuthorizationError(f"--expires: got {expires}; expected a date on or after {valid_from}")
    previous = None
    if supersedes is not None:
        previous = hashlib.sha256(_read(Path(supersedes))).hexdigest()
    predicate = {
        "run": preflight["run"], "budget_flops": budget,
        "preflight": {k: preflight.get(k) for k in ("total_flops", "low", "high", "central_method")},
        "rules": [v["rule"] for v in preflight.get("verdicts", [])], "as_of": preflight.get("as_of"),
        "valid_from": valid_from.isoformat(), "expires": expires.isoformat() if expires else None,
        "conditions": [printable(c) for c in conditions], "approver": {"keyid": key.keyid, "name": key.name},
        "supersedes": previous,
    }
    return key.sign(statement(Path(config_path).name, config_digest(config_path), PREDICATE, predicate))


def _read(path: Path) -> bytes:
    try:
        return read_regular(path, MAX_BYTES)
    except (OSError, FileRefused) as exc:
        raise AuthorizationError(f"{printable(path)}: cannot read the authorization: {describe(exc)}") from None


def verified(raw: bytes, path: Path, trusted: list[TrustedKey]) -> Authorization:
    """The authorization in ``raw`` (the bytes of the file at ``path``), its signature checked
    against ``trusted`` keys; whether it is valid on a day, or for a config, is load's to say."""
    if not trusted:
        raise AuthorizationError(f"{printable(path)}: no trusted key to check the authorization with "
                                 f"(trusted_keys=[...] or --trusted-key NAME.pub)")
    opened = opened_statement(raw, path, trusted)
    if opened.problem:
        raise AuthorizationError(f"{printable(path)}: does not verify: {opened.problem}")
    return _authorization(opened.statement, raw, path, opened.signers[0])


def unverified(raw: bytes, path: Path) -> Authorization:
    """What the authorization in ``raw`` says, its signature not checked (nothing to check it
    with): the approver is the one its predicate names, a claim. For records that say so."""
    body = opened_statement(raw, path, []).statement
    said = body.get("predicate", {}).get("approver")
    if not isinstance(said, dict):
        raise AuthorizationError(f"{printable(path)}: a malformed authorization (no approver)")
    return _authorization(body, raw, path, TrustedKey(None, str(said.get("keyid")), str(said.get("name"))))


def opened_statement(raw: bytes, path: Path, trusted: list[TrustedKey]):
    """The envelope in ``raw`` opened (signing.Opened), refused unless it holds an authorization's
    statement: what it is is checked here, who signed it (``problem``) is the caller's to judge."""
    try:
        envelope = json.loads(raw)
    except (ValueError, RecursionError):
        raise AuthorizationError(f"{printable(path)}: not an authorization (not JSON)") from None
    opened = open_envelope(envelope, trusted)
    if opened.statement is None:
        raise AuthorizationError(f"{printable(path)}: not an authorization: {opened.problem}")
    body = opened.statement
    if body.get("predicateType") != PREDICATE or not isinstance(body.get("predicate"), dict):
        raise AuthorizationError(f"{printable(path)}: a signed statement, but not an authorization")
    return opened


def _authorization(body: dict[str, Any], raw: bytes, path: Path, approver: TrustedKey) -> Authorization:
    pred = body["predicate"]
    try:
        auth = Authorization(
            path=path, digest=hashlib.sha256(raw).hexdigest(), config_name=str(body["subject"][0]["name"]),
            config_sha256=str(subject_digest(body)), run=str(pred["run"]), budget_flops=int(pred["budget_flops"]),
            valid_from=date.fromisoformat(pred["valid_from"]),
            expires=date.fromisoformat(pred["expires"]) if pred.get("expires") else None,
            conditions=tuple(map(str, pred.get("conditions") or ())), rules=tuple(map(str, pred.get("rules") or ())),
            as_of=pred.get("as_of"), preflight=dict(pred.get("preflight") or {}), supersedes=pred.get("supersedes"),
            approver=approver, raw=raw)
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        raise AuthorizationError(f"{printable(path)}: a malformed authorization ({type(exc).__name__})") from None
    return auth


def load(path: str | Path, trusted: list[TrustedKey], *, config: str | Path | None = None,
         today: date | None = None) -> Authorization:
    """Verify an authorization; AuthorizationError says why it cannot be used (one line).

    With ``config``, it must be that config's (its bytes' SHA-256); with ``today`` (default: the
    current UTC day), it must be valid on that day."""
    path = Path(path)
    auth = verified(_read(path), path, trusted)
    day = today or datetime.now(timezone.utc).date()
    if day < auth.valid_from:
        raise AuthorizationError(f"{printable(path)}: not valid before {auth.valid_from} (today is {day})")
    if auth.expires is not None and day > auth.expires:
        raise AuthorizationError(f"{printable(path)}: expired on {auth.expires} (today is {day})")
    if config is not None:
        actual = config_digest(config)
        if actual != auth.config_sha256:
            raise AuthorizationError(f"{printable(path)}: made for another config: it approves {auth.config_name} "
                                     f"with sha256 {auth.config_sha256[:16]}..., and {printable(Path(config).name)} "
                                     f"has sha256 {actual[:16]}... (a config changed since it was approved needs a "
                                     f"new authorization)")
    return auth


def beside(config: str | Path) -> Path:
    """Where the gate looks for a config's authorization: X.yaml -> X.authorization.json."""
    config = Path(config)
    return config.with_name(config.stem + ".authorization.json")


# ---------------------------------------------------------------- the run's side

RUN_COPY = "authorization.json"   # RUN_DIR/authorization.json: the bytes of the authorization the run holds


def for_run(authorization: str | Path | None, trusted_keys, config: str | Path | None, *,
            required: bool = False, today: date | None = None) -> Authorization | None:
    """The authorization a run starts under, verified; AuthorizationError (one line) where it must
    not start: none where one is required, one that does not verify with a trusted key, expired or
    not yet valid, or made for another config than ``config``."""
    if authorization is None:
        if required:
            raise AuthorizationError("this run needs an authorization (require_authorization=True) and holds none: "
                                     "a reviewer makes one with `auditor authorize CONFIG --key NAME.key --budget "
                                     "FLOPS -o FILE`; start with ComputeAudit(config=CONFIG, authorization=FILE, "
                                     "trusted_keys=[NAME.pub])")
        return None
    if config is None:
        raise AuthorizationError(f"{printable(authorization)}: an authorization approves one config; pass "
                                 f"config=CONFIG (the training config this run uses) so that it can be checked")
    from auditor.record.signing import SigningError

    trusted = []
    for key in trusted_keys or ():
        try:
            trusted.append(key if isinstance(key, TrustedKey) else TrustedKey.load(key))
        except SigningError as exc:
            raise AuthorizationError(f"trusted_keys: {exc}") from None
    return load(authorization, trusted, config=config, today=today)


def counted_phases(auth: Authorization) -> tuple[str, ...]:
    """The phases the budget covers: training, and every phase a rule it was judged against counts
    (the EU's and SB 53's count rollouts and synthetic data; none counts evaluation)."""
    from auditor.inputs.schema import InputError
    from auditor.rules.rule_file import PHASES
    from auditor.rules.selection import load_rules

    phases = {"train"}
    for rule_id in auth.rules:
        try:
            phases.update(p for rule in load_rules([rule_id]) for p in rule.counts_phases)
        except (InputError, OSError):
            continue  # a rule of the reviewer's own, not on this machine: its phases are not known here
    return tuple(sorted(phases, key=lambda p: (PHASES.index(p) if p in PHASES else len(PHASES), p)))


def used_flops(by_phase: dict[str, int], phases) -> int:
    """What a run used of its budget: its FLOPs in the phases the budget covers (ledger_meta's
    ``phases``). The one sum for the dossier, verify and the registry."""
    return sum(by_phase.get(p, 0) for p in phases)


def named_by(record: dict[str, Any]) -> Any:
    """What a ledger's start or resume record says of the authorization the run held (``meta.
    authorization``, as ledger_meta wrote it), or None: the one reading of it, for the run, its
    resume and verify."""
    if record["kind"] not in ("start", "resume"):
        return None
    return (record.get("meta") or {}).get("authorization")


def ledger_meta(auth: Authorization, phases: tuple[str, ...]) -> dict[str, Any]:
    """What the ledger's first record (and a resume record) says of the authorization the run holds."""
    return {"sha256": auth.digest, "budget_flops": auth.budget_flops, "phases": list(phases),
            "approver": auth.approver.keyid, "config_sha256": auth.config_sha256}


def dossier_block(auth_meta: dict[str, Any], envelope: dict[str, Any] | None, used: int) -> dict[str, Any]:
    """A tracked dossier's ``authorization``: what was approved (from the ledger's record of it and
    the signed statement), what the run used of it, and the envelope, for verify to check."""
    pred = {}
    if envelope is not None:
        with_statement = _statement_of(envelope)
        pred = (with_statement or {}).get("predicate") or {}
    budget = auth_meta["budget_flops"]
    return {"sha256": auth_meta["sha256"], "budget_flops": budget, "used_flops": used,
            "phases": list(auth_meta["phases"]), "within_budget": used <= budget,
            "approver": {"keyid": auth_meta["approver"], "name": (pred.get("approver") or {}).get("name")},
            "config_sha256": auth_meta["config_sha256"], "run": pred.get("run"),
            "valid_from": pred.get("valid_from"), "expires": pred.get("expires"),
            "conditions": list(pred.get("conditions") or ()), "supersedes": pred.get("supersedes"),
            "envelope": envelope}


def _statement_of(envelope: dict[str, Any]) -> dict[str, Any] | None:
    """The statement inside an envelope, unverified (what it says; verify checks who signed it)."""
    from auditor.record.signing import open_envelope

    return open_envelope(envelope, []).statement


def check_resumed(run_dir: str | Path, held: Authorization | None) -> None:
    """A run resumed in a folder whose ledger names an authorization must hold that one, or one
    that supersedes it (a request for more names the first): else it could leave its budget by
    restarting without it. AuthorizationError says which it needs."""
    from auditor.record.ledger import FILENAME, LedgerError, _read

    path = Path(run_dir) / FILENAME
    named: list[str] = []

    def visit(rec: dict) -> None:
        said = named_by(rec)
        if said is not None:
            named.append(str(said.get("sha256") if isinstance(said, dict) else said))
    try:
        _read(path, keep=False, visit=visit)
    except (OSError, LedgerError):
        return  # no ledger, or a damaged one: the resume itself says so
    if not named:
        return
    if held is None:
        raise AuthorizationError(f"{printable(run_dir)}: its ledger names an authorization (sha256 "
                                 f"{named[-1][:16]}...); a resumed run must hold it, or one that supersedes it")
    if held.digest != named[-1] and held.supersedes != named[-1]:
        raise AuthorizationError(f"{printable(held.path)}: neither the authorization this run's ledger names "
                                 f"(sha256 {named[-1][:16]}...) nor one that supersedes it")

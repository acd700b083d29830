"""A model's authorizations as `registry show` and the HTML page give them: in order, each with its
approver, budget, what its runs used of it, its state, and which run held it.

States, as of the day judged: ``superseded`` (a recorded authorization of the model names it as
the one it replaces; ``superseded_by`` says which), else ``expired`` (its last valid day has
passed), else ``unused`` (no recorded run held it: an approval whose run has not started), else
``current``. Links are by SHA-256, resolved here, so a predecessor recorded after its successor
is linked all the same; one not recorded at all is a gap (``supersedes_recorded`` false).
"""
from __future__ import annotations

from datetime import date
from typing import Any

import sqlalchemy as sa

from auditor.registry.history import Graph, _rows
from auditor.registry.intake import utc
from auditor.registry.status import iso
from auditor.report.formatting import percent, table
from auditor.text import printable, sci

STATES = ("current", "superseded", "expired", "unused")


def authorizations_of(graph: Graph, model_id: int, as_of: date) -> list[dict[str, Any]]:
    """The model's authorizations as of ``as_of`` (issued by then, and the runs of the graph's
    cutoff that held them), oldest first."""
    from auditor.registry.schema import Approval, Holding

    source = graph.engine_or_conn
    rows = list(_rows(source, sa.select(Approval.__table__).where(Approval.model_id == model_id).order_by(Approval.id)))
    held: dict[int, list] = {}
    query = sa.select(Holding.__table__).join(Approval, Approval.id == Holding.authorization_id).where(
        Approval.model_id == model_id).order_by(Holding.held_from, Holding.run_id)
    for h in _rows(source, query):
        if h.run_id in graph.runs:           # a run started after the cutoff did not hold it yet
            held.setdefault(h.authorization_id, []).append(h)
    shown = [a for a in rows if a.id in held or (a.valid_from is not None and a.valid_from <= as_of)]
    by_sha = {a.sha256: a for a in shown}
    out = [_entry(graph, a, held.get(a.id, []), by_sha, shown, as_of) for a in shown]
    # oldest first: by the day it was issued (one known only from a ledger: the day a run first held
    # it), then after the ones it supersedes (a request for more on the day of the first), then as recorded
    out.sort(key=lambda e: (e["valid_from"] or e["runs"][0]["held_from"][:10], _depth(e["sha256"], by_sha),
                            e.pop("_order")))
    return out


def _depth(sha: str, by_sha: dict) -> int:
    """How many recorded authorizations it supersedes, one after another."""
    depth, seen = 0, {sha}
    while (step := by_sha[sha].supersedes) in by_sha and step not in seen:
        depth, sha = depth + 1, step
        seen.add(step)
    return depth


def _entry(graph: Graph, a, holdings: list, by_sha: dict, shown: list, as_of: date) -> dict[str, Any]:
    successors = [b.sha256 for b in shown if b.supersedes == a.sha256]
    if successors:
        state = "superseded"
    elif a.expires is not None and a.expires < as_of:
        state = "expired"
    else:
        state = "current" if holdings else "unused"
    runs = [{"run": graph.runs[h.run_id].identity, "name": graph.runs[h.run_id].name, "first_seq": h.first_seq,
             "held_from": iso(utc(h.held_from)), "used_flops": h.used_flops} for h in holdings]
    return {"sha256": a.sha256, "approver": {"keyid": a.approver_keyid, "name": a.approver_name},
            "budget_flops": a.budget_flops, "used_flops": sum(r["used_flops"] for r in runs), "state": state,
            "superseded_by": successors, "supersedes": a.supersedes,
            "supersedes_recorded": a.supersedes in by_sha if a.supersedes else None,
            "valid_from": a.valid_from.isoformat() if a.valid_from else None,
            "expires": a.expires.isoformat() if a.expires else None, "run_name": a.run_name,
            "config_name": a.config_name, "config_sha256": a.config_sha256,
            "preflight": {"low": a.preflight_low, "total_flops": a.preflight_flops, "high": a.preflight_high},
            "source": a.source, "verified": a.verified, "runs": runs, "_order": a.id}


# ---------------------------------------------------------------------- text


def state_words(entry: dict[str, Any]) -> str:
    if entry["state"] == "superseded":
        return "superseded by " + ", ".join(s[:12] for s in entry["superseded_by"])
    return entry["state"]


def approver_words(entry: dict[str, Any]) -> str:
    who = entry["approver"]
    return printable(who["name"]) if who["name"] else printable(who["keyid"])[:24]


def authorizations_text(entries: list[dict[str, Any]]) -> str:
    """The table `registry show` prints under "authorizations:"."""
    if not entries:
        return "  none recorded"
    rows = []
    for e in entries:
        until = f" to {e['expires']}" if e["expires"] else ""
        came = e["supersedes"][:12] + ("" if e["supersedes_recorded"] else " (not recorded)") if e["supersedes"] else "-"
        held = "; ".join(f"{printable(r['name'])} ({r['run'][:12]}) from seq {r['first_seq']}" for r in e["runs"])
        rows.append([e["sha256"][:12], approver_words(e), sci(e["budget_flops"]),
                     f"{sci(e['used_flops'])} ({percent(e['used_flops'], e['budget_flops'])})", state_words(e),
                     f"{e['valid_from'] or 'not known'}{until}", came, held or "-"])
    return table(["authorization", "approver", "budget", "used", "state", "valid", "supersedes", "held by"], rows)


def authorized_text(data: dict[str, Any]) -> str:
    """What `registry authorize` did, in one line."""
    extra = "".join(f"; {n}" for n in data["notes"])
    who = printable(data["approver"]["name"] or data["approver"]["keyid"])
    return (f"{data['outcome']}: authorization {data['sha256'][:16]} of model {printable(data['model'])}, "
            f"{data['budget_flops']:,} FLOPs ({sci(data['budget_flops'])}) approved by {who}{extra}")

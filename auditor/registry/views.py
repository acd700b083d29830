"""What comes out: the registry's models, runs, one model's history and the status of all, as
JSON-ready dicts (ints for every count) and as text; the HTML page renders the same dicts."""
from __future__ import annotations

from datetime import date
from typing import Any

from auditor.registry.approval_views import authorizations_of, authorizations_text
from auditor.registry.history import Graph, RunNode
from auditor.registry.status import iso, judge, status
from auditor.report.formatting import table
from auditor.text import printable, sci


def run_dict(graph: Graph, run: RunNode) -> dict[str, Any]:
    realizer = graph.runs.get(run.realized_by) if run.realized_by else None
    return {"run": run.identity, "name": run.name, "model": graph.names[run.model_id], "stage": run.stage,
            "kind": run.kind, "counted_flops": run.counted, "training_flops": run.total, "rollout_flops": run.rollouts,
            "low": run.low, "high": run.high, "started_at": iso(run.started_at), "ended_at": iso(run.ended_at),
            "accepted_at": iso(run.accepted_at), "closed": run.closed, "partial": run.partial,
            "verified": run.verified, "dossier_digest": run.dossier_digest, "ledger_head": run.ledger_head,
            "realized_by": realizer.identity if realizer else None, "source": run.source}


def runs_dict(graph: Graph, model: str | None = None) -> dict[str, Any]:
    chosen = [r for r in graph.runs.values() if model is None or graph.names[r.model_id] == model]
    chosen.sort(key=lambda r: (graph.names[r.model_id], r.started_at or r.accepted_at or r.ended_at, r.id))
    return {"runs": [run_dict(graph, r) for r in chosen]}


def parent_dicts(graph: Graph, model_id: int) -> list[dict[str, Any]]:
    return [{"model": graph.names[e.parent_id], "relation": e.relation, "developer": e.developer, "weight": e.weight,
             "teacher_flops": e.teacher_flops} for e in graph.parents.get(model_id, [])]


def models_dict(graph: Graph) -> dict[str, Any]:
    out = []
    for model_id, name in sorted(graph.names.items(), key=lambda item: item[1]):
        runs = graph.runs_of.get(model_id, [])
        cumulative = graph.cumulative(model_id)
        out.append({"model": name, "runs": sum(r.kind == "tracked" for r in runs),
                    "plans": sum(r.kind == "planned" for r in runs), "own_flops": graph.own(model_id)[1],
                    "cumulative_flops": cumulative or 0, "compute_known": cumulative is not None,
                    "parents": parent_dicts(graph, model_id)})
    return {"models": out}


def lineage_tree(graph: Graph, model_id: int, seen: set[int] | None = None) -> dict[str, Any]:
    """The model and its ancestors as a nested tree; one met again (a shared ancestor) is not expanded twice."""
    seen = set() if seen is None else seen
    node = {"model": graph.names[model_id], "own_flops": graph.own(model_id)[1],
            "cumulative_flops": graph.cumulative(model_id), "parents": []}
    if model_id in seen:
        node["repeated"] = True
        return node
    seen.add(model_id)
    for edge in graph.parents.get(model_id, []):
        child = lineage_tree(graph, edge.parent_id, seen)
        child.update(relation=edge.relation, developer=edge.developer, weight=edge.weight,
                     teacher_flops=edge.teacher_flops)
        node["parents"].append(child)
    return node


def show_dict(graph: Graph, model_id: int, rules, as_of: date) -> dict[str, Any]:
    stages: dict[str, dict[str, int]] = {}
    for run in graph.runs_of.get(model_id, []):
        row = stages.setdefault(run.stage, {"runs": 0, "plans": 0, "counted_flops": 0, "training_flops": 0,
                                            "rollout_flops": 0, "planned_flops": 0})
        if run.kind == "tracked":
            row["runs"] += 1
            row["counted_flops"] += run.counted
            row["training_flops"] += run.total
            row["rollout_flops"] += run.rollouts
        elif run in graph.open_plans(model_id):
            row["plans"] += 1
            row["planned_flops"] += run.counted
        else:
            row["plans"] += 1
    mods, bases = graph.modification(model_id)
    known = [b for b in bases if graph.known(b.parent_id)]
    figures = {"training": graph.own(model_id)[1], "cumulative": graph.cumulative(model_id),
               "cumulative_with_teacher": graph.cumulative(model_id, teacher=True),
               "modification": graph.sum_of(mods)[1] if bases else None,
               "base": sum(graph.cumulative(b.parent_id) for b in known) if known else None,
               "base_models": [graph.names[b.parent_id] for b in bases]}
    return {"model": graph.names[model_id], "as_of": as_of.isoformat(), "cumulative_flops": figures["cumulative"] or 0,
            "lineage": lineage_tree(graph, model_id), "stages": [{"stage": s, **v} for s, v in stages.items()],
            "bases": figures, "runs": runs_dict(graph, graph.names[model_id])["runs"],
            "authorizations": authorizations_of(graph, model_id, as_of),
            "verdicts": [judge(graph, model_id, rule, as_of) for rule in rules]}


def registry_dict(graph: Graph, rules, as_of: date) -> dict[str, Any]:
    """The whole registry: what the HTML page shows."""
    document = status(graph, rules, as_of)
    by_name = {m["model"]: m for m in document["models"]}
    for entry in models_dict(graph)["models"]:
        by_name[entry["model"]].update(parents=entry["parents"], runs_count=entry["runs"], plans=entry["plans"],
                                       authorizations=authorizations_of(graph, graph.id_of(entry["model"]), as_of))
    return {"as_of": as_of.isoformat(), "models": document["models"], "runs": runs_dict(graph)["runs"]}


# ---------------------------------------------------------------------- text

def _flops(value: int | None) -> str:
    return "unknown" if value is None else sci(value)


def _edge_words(e: dict[str, Any]) -> str:
    words = {"fine_tuned": "fine-tuned from", "merged": "merged from", "distilled": "distilled from"}[e["relation"]]
    who = {"same": "same developer", "other": "another developer", None: "developer not stated"}[e["developer"]]
    extra = f", weight {e['weight']}" if e.get("weight") else ""
    extra += f", teacher {sci(e['teacher_flops'])} FLOP" if e.get("teacher_flops") is not None else ""
    return f"{words} {printable(e['model'])} ({who}{extra})"


def added_text(data: dict[str, Any]) -> str:
    """What `registry add` did, in one line."""
    what = "plan" if data["kind"] == "planned" else "run"
    extra = "".join(f"; {n}" for n in data["notes"])
    return (f"{data['outcome']}: {what} {data['run'][:16]} of model {printable(data['model'])}, "
            f"{data['counted_flops']:,} FLOPs ({sci(data['counted_flops'])}){extra}")


def models_text(data: dict[str, Any]) -> str:
    if not data["models"]:
        return "no models recorded"
    return table(["model", "runs", "plans", "own FLOPs", "cumulative", "comes from"], [
        [printable(m["model"]), str(m["runs"]), str(m["plans"]), sci(m["own_flops"]),
         sci(m["cumulative_flops"]) if m["compute_known"] else "unknown",
         "; ".join(_edge_words(p) for p in m["parents"]) or "-"] for m in data["models"]])


def runs_text(data: dict[str, Any]) -> str:
    if not data["runs"]:
        return "no runs recorded"
    return table(["run", "model", "stage", "kind", "counted", "rollouts", "started", "ended", "how it came in"], [
        [r["run"][:12], printable(r["model"]), r["stage"], r["kind"] + (" (open)" if r["kind"] == "tracked" and
                                                                         not r["closed"] else ""),
         sci(r["counted_flops"]), sci(r["rollout_flops"]), (r["started_at"] or r["accepted_at"] or "-")[:19],
         (r["ended_at"] or "-")[:19], r["verified"].split(" (")[0]] for r in data["runs"]])


def _tree_lines(node: dict[str, Any], prefix: str = "", last: bool = True, top: bool = True) -> list[str]:
    label = printable(node["model"]) if top else _edge_words(node)
    figures = f"own {sci(node['own_flops'])}, cumulative {_flops(node['cumulative_flops'])}"
    lines = [f"{prefix}{'' if top else ('└─ ' if last else '├─ ')}{label}: {figures}"
             + (" (shown above)" if node.get("repeated") else "")]
    below = prefix + ("" if top else ("   " if last else "│  "))
    for i, parent in enumerate(node["parents"]):
        lines += _tree_lines(parent, below, i == len(node["parents"]) - 1, False)
    return lines


def status_words(v: dict[str, Any]) -> str:
    """'crossed', 'at risk', 'clear', 'not in force', or 'out of scope' (a rule that does not cover the model)."""
    return "out of scope" if v["inactive"] == "out_of_scope" else v["status"].replace("_", " ")


def verdicts_text(verdicts: list[dict[str, Any]]) -> str:
    def figures(v):
        if v["inactive"] == "out_of_scope":   # the figures say nothing about a rule that does not cover it
            return ["-", "-"]
        return [sci(v["basis_flops"]), f"{v['comparison']} {sci(v['threshold_flops'])}"]

    return table(["rule", "status", "basis", "compared", "threshold", "crossed at", "foreseen", "notify by",
                  "days left"], [
        [v["rule"], status_words(v), v["basis"], *figures(v), (v["crossed_at"] or "-")[:19],
         (v["foreseen_at"] or "-")[:19],
         v["notify_by"] or "-", "-" if v["days_left"] is None else str(v["days_left"])] for v in verdicts])


def show_text(data: dict[str, Any]) -> str:
    b = data["bases"]
    lines = [f"model {printable(data['model'])} (as of {data['as_of']})", "", "lineage:"]
    lines += ["  " + line for line in _tree_lines(data["lineage"])]
    lines += ["", "stages:", table(["stage", "runs", "counted", "training", "rollouts", "plans", "planned"], [
        [s["stage"], str(s["runs"]), sci(s["counted_flops"]), sci(s["training_flops"]), sci(s["rollout_flops"]),
         str(s["plans"]), sci(s["planned_flops"])] for s in data["stages"]]) if data["stages"] else "  none"]
    lines += ["", "compute under each basis:", f"  training (its own runs): {sci(b['training'])}",
              f"  cumulative (with the same developer's ancestors): {_flops(b['cumulative'])}"]
    if b["cumulative_with_teacher"] != b["cumulative"]:
        lines.append(f"  cumulative with a distillation teacher: {_flops(b['cumulative_with_teacher'])}")
    if b["base_models"]:
        lines.append(f"  ratio_to_base: the modification {_flops(b['modification'])} against the base "
                     f"{', '.join(map(printable, b['base_models']))} ({_flops(b['base'])})")
    lines += ["", "authorizations (oldest first):", authorizations_text(data["authorizations"])]
    lines += ["", "rules:", verdicts_text(data["verdicts"])]
    return "\n".join(lines)


def status_text(data: dict[str, Any]) -> str:
    if not data["models"]:
        return f"no models recorded (as of {data['as_of']})"
    parts = []
    for m in data["models"]:
        head = f"{printable(m['model'])}: cumulative {sci(m['cumulative_flops']) if m['compute_known'] else 'unknown'}"
        if m["planned_flops"]:
            head += f", planned {sci(m['planned_flops'])} more"
        notes = [f"  {v['rule']}: {v['basis_note']}" for v in m["verdicts"] if v["basis_note"]]
        parts.append("\n".join([head, verdicts_text(m["verdicts"]), *notes]))
    return f"as of {data['as_of']}\n\n" + "\n\n".join(parts)

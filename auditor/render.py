"""Text and Markdown views of a preflight, rendered from its dict (the JSON contract)."""
from __future__ import annotations

import functools
import re

from typing import Any

from .estimate import two_significant
from .numbers import visible
from .resources import resource_dir
from .textfmt import sci, table


@functools.lru_cache(maxsize=1)
def _templates():
    """One environment a process: jinja2 compiles a template once per environment, and compiling
    the dossier's took most of a report's time (verify renders every view of what it accepts)."""
    import jinja2

    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(resource_dir("templates")),
        # HTML templates escape every value; Markdown ones escape through the ``cell`` filter.
        autoescape=jinja2.select_autoescape(enabled_extensions=("html", "html.j2"), default=False),
        trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True,
    )


def md_cell(value: Any) -> str:
    """A Markdown table cell shown as plain text: pipes and newlines would break the row, HTML
    would render, and link, emphasis and code syntax would turn a run name into markup."""
    text = " ".join(str(value).split())
    text = re.sub(r"([\\`*_\[\]|~])", r"\\\1", text)
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def preflight_markdown(data: dict[str, Any]) -> str:
    env = _templates()
    preflight_markdown_filters(env)
    main_rules, other_rules = ordered_verdicts(data.get("verdicts", []))
    return env.get_template("preflight.md.j2").render(p=data, summary=headline(data.get("verdicts", [])),
                                                       main_rules=main_rules, other_rules=other_rules)


def next_deadline(verdict: dict[str, Any]) -> str:
    due = sorted((d["due"], d["what"]) for d in verdict.get("deadlines", []) if d.get("due"))
    return f"{due[0][1]} by {due[0][0]}" if due else "-"


def verdict_table(verdicts: list[dict[str, Any]], *, deadlines: bool) -> str:
    """The plain-text rules table of preflight and dossier text output."""
    headers = ["rule", "status", "threshold", "margin", "blocking"] + (["next deadline"] if deadlines else [])
    return table(headers, [
        [v["rule"], v["status"].replace("_", " "), f"{v['comparison']} {sci(v['threshold_flops'])}",
         f"{v['margin']:.2f}", "yes" if v["blocking"] else "no"] + ([next_deadline(v)] if deadlines else [])
        for v in verdicts])


def preflight_markdown_filters(env) -> None:
    env.filters.update(sci=sci, cell=md_cell, two=two_significant)
    env.globals.update(next_deadline=next_deadline, sci=sci, margin=margin)


def preflight_text(data: dict[str, Any]) -> str:
    lines = [f"run: {data['run']}" + (f"  ({data['source']})" if data.get("source") else "")]
    model = data.get("model") or {}
    if model.get("parameters"):
        active = model.get("active_parameters")
        extra = f", {active:,} active per token" if active and active != model["parameters"] else ""
        lines.append(f"model: {model['parameters']:,} parameters{extra}")
    if data.get("tokens"):
        lines.append(f"tokens: {data['tokens']:,}")
    lines.append("")
    rows = []
    for e in data["estimates"]:
        mark = "*" if e["method"] == data["central_method"] else ""
        rows.append([e["method"] + mark, sci(e["flops"]), sci(e["low"]), sci(e["high"]),
                     sci(e["flops_per_token"]) if e.get("flops_per_token") else "-"])
    lines.append(table(["method", "FLOPs", "low", "high", "per token"], rows))
    lines.append("")
    lines.append(f"total: {data['total_flops']:,} FLOPs ({data['central_method']}, *), "
                 f"range {sci(data['low'])} to {sci(data['high'])}")
    lines.append(f"EU notification form: {data['notification']['text']}")
    lines.extend(f"methods disagree: {d['text']}" for d in data.get("disagreements", []))
    counted = next((e for e in data["estimates"] if e["method"] == "counted"), None)
    if counted and model.get("active_parameters"):
        six_n = 6 * model["active_parameters"]
        lines.append(f"counted per token {counted['flops_per_token']:,} vs 6 x active parameters {six_n:,} "
                     f"({counted['flops_per_token'] / six_n:.3f}x; attention and the context make the difference)")
    if data.get("verdicts"):
        summary = headline(data["verdicts"])
        lines.append("")
        lines.extend(headline_lines(summary))
        main_rules, other_rules = ordered_verdicts(data["verdicts"])
        lines.append(f"\nrules, as of {data.get('as_of')} (blocking rules in force first):")
        lines.append(verdict_table(main_rules + other_rules, deadlines=True))
        for v in main_rules + other_rules:
            if v["status"] in ("crossed", "at_risk"):
                lines.append(f"  {v['rule']}: {v['reason']}")
        lines.append(MARGIN_NOTE)
    from .documentation import documentation_form, notification_summary

    lines.append(f"\nfor the EU notification: {notification_summary(data)}")
    lines.append("Model Documentation Form, compute and energy:")
    lines.extend(f"  {entry}: {value}" for entry, value in documentation_form(data))
    for method, why in data.get("skipped_methods", {}).items():
        lines.append(f"{method} {'estimate' if method == 'energy' else 'method'} not used: {why}")
    lines.append("uncovered ops: " + (", ".join(data["uncovered_ops"]) or "none"))
    for e in data["estimates"]:
        lines.append(f"\nassumptions ({e['method']}):")
        lines.extend(f"  - {a}" for a in e["assumptions"])
    return "\n".join(lines)


# ---------------------------------------------------------------- dossiers

def plural(n: int, word: str, many: str | None = None) -> str:
    """'1 rule', '2 rules', '1 config', '3 configs'."""
    return f"{n:,} {word if n == 1 else (many or word + 's')}"


def headline(verdicts: list[dict[str, Any]]) -> dict[str, Any]:
    """What a reviewer reads first, for any view: the blocking rules crossed, then those at risk,
    with the first deadline and what follows; the non-blocking ones after, as an aside.

    ``status`` (the banner's colour and the gate's word) comes from the blocking rules alone: a
    run that crosses only an indicative line is clear of what stops it."""
    live = [v for v in verdicts if v["status"] != "not_in_force"]
    blocking = [v for v in live if v["blocking"]]
    crossed = [v for v in blocking if v["status"] == "crossed"]
    at_risk = [v for v in blocking if v["status"] == "at_risk"]
    acting = crossed + at_risk
    parts = []
    if crossed:
        parts.append(f"Crosses {', '.join(v['rule'] for v in crossed)}")
    if at_risk:
        parts.append(f"{'at' if crossed else 'At'} risk of crossing {', '.join(v['rule'] for v in at_risk)}")
    if acting:
        status, text = ("crossed" if crossed else "at_risk"), "; ".join(parts) + "."
    elif blocking:
        status, text = "clear", f"Clear of every blocking rule in force ({plural(len(blocking), 'rule')})."
    elif live:
        status, text = "clear", "No blocking rule in force covers this run."
    else:
        status, text = "not_in_force", "No rule checked is in force for this run."
    due = sorted((d["due"], d["what"], v["rule"]) for v in acting for d in v.get("deadlines", []) if d.get("due"))
    others = [v for v in live if not v["blocking"] and v["status"] in ("crossed", "at_risk")]
    return {
        "status": status, "text": text, "blocking": acting,
        "deadline": f"{due[0][1]} by {due[0][0]} ({due[0][2]})" if due else None,
        "follows": list(dict.fromkeys(o for v in acting for o in v.get("obligations", []))),
        "also": (f"Not blocking: {', '.join(v['rule'] + ' ' + v['status'].replace('_', ' ') for v in others)}."
                 if others else None),
        "passes": not acting,
    }


def dossier_summary(d: dict[str, Any]) -> dict[str, Any]:
    """The headline of a dossier (see headline)."""
    return headline(d.get("verdicts", []))


def ordered_verdicts(verdicts: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(blocking rules in force, the rest): a table shows the first, and folds the second."""
    first = [v for v in verdicts if v["blocking"] and v["status"] != "not_in_force"]
    return first, [v for v in verdicts if v not in first]


def natural_key(name: str) -> list:
    """'layers.2' before 'layers.10': digit runs compared as numbers."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def _fold_repeats(rows: list[tuple[str, int, int]]) -> list[tuple[str, int, int, int]]:
    """Rows that differ only in a block index and count the same, folded into one:
    ('model.layers.{0..125}', forward, backward, 126). Each keeps its own figures; the count says
    how many there are."""
    groups: dict[tuple, list[tuple[str, int]]] = {}
    for name, fwd, bwd in rows:
        indices = re.findall(r"(?<=\.)\d+(?=\.|$)", name)
        pattern = re.sub(r"(?<=\.)\d+(?=\.|$)", "#", name)
        groups.setdefault((pattern, fwd, bwd, len(indices)), []).append((name, int(indices[-1]) if indices else -1))
    out = []
    for (pattern, fwd, bwd, _), members in groups.items():
        if len(members) == 1:
            out.append((members[0][0], fwd, bwd, 1))
            continue
        idx = sorted(i for _, i in members)
        span = f"{{{idx[0]}..{idx[-1]}}}" if idx == list(range(idx[0], idx[-1] + 1)) else \
            "{" + ",".join(map(str, idx[:6])) + (",..." if len(idx) > 6 else "") + "}"
        head, _, tail = pattern.rpartition("#")
        name = (head + span + tail).replace("#", "*")
        out.append((name, fwd, bwd, len(members)))
    return out


def breakdown_rows(d: dict[str, Any], key: str, limit: int = 25) -> list[dict[str, Any]]:
    """The counted step's breakdown as rows, with shares. Operators: largest first. Modules: in
    the model's order (natural: layers.2 before layers.10), identical repeated blocks folded into
    one row with their count (46 identical rows said once)."""
    counted = next((e for e in d.get("estimates", []) if e.get("breakdown", {}).get(key)), None)
    if counted is None:
        return []
    table = counted["breakdown"][key]
    rows = [(name, int(v.get("forward", 0)), int(v.get("backward", 0))) for name, v in table.items()]
    whole = sum(f + b for _, f, b in rows) or 1
    if key == "by_module":
        folded = sorted(_fold_repeats(rows), key=lambda r: natural_key(r[0]))
    else:
        folded = sorted(((n, f, b, 1) for n, f, b in rows), key=lambda r: -(r[1] + r[2]))
    return [{"name": name or "(root)", "forward": fwd, "backward": bwd, "count": n,
             "share": f"{100 * n * (fwd + bwd) / whole:.1f}%"} for name, fwd, bwd, n in folded[:limit]]


def dossier_context(d: dict[str, Any]) -> dict[str, Any]:
    from .charts import ranges_svg, series_svg

    from .documentation import documentation_form, notification_summary

    main_rules, other_rules = ordered_verdicts(d.get("verdicts", []))
    return {"d": d, "summary": dossier_summary(d), "eu_summary": notification_summary(d),
            "mdf_rows": documentation_form(d),
            "notification": d.get("notification") or (d.get("preflight") or {}).get("notification"),
            "main_rules": main_rules, "other_rules": other_rules,
            "ranges_chart": ranges_svg(d.get("estimates", []) + [{**e, "method": f"planned {e['method']}"}
                                                                for e in (d.get("planned") or {}).get("estimates", [])],
                                       d.get("verdicts", [])),
            "series_chart": series_svg((d.get("tracked") or {}).get("series", [])),
            "breakdown_ops": breakdown_rows(d, "by_op"), "breakdown_modules": breakdown_rows(d, "by_module")}


MARGIN_NOTE = ("margin: the high end of the figure a rule compares, over its threshold (1.00 is at the line; a "
               "rule on cumulative or base-relative compute compares other figures than the run's own)")


def margin(value: float) -> str:
    """High end over threshold: 2 decimals near 1, scientific far below (a small run's 2e-14)."""
    return f"{value:.2f}" if value >= 0.01 else f"{value:.1e}"


def dossier_html(d: dict[str, Any]) -> str:
    env = _templates()
    env.globals.update(sci=sci, two=two_significant, margin=margin)
    env.filters.update(visible=visible)
    return env.get_template("dossier.html.j2").render(**dossier_context(d))


def dossier_markdown(d: dict[str, Any]) -> str:
    env = _templates()
    preflight_markdown_filters(env)
    env.globals.update(sci=sci, two=two_significant, margin=margin)
    context = dossier_context(d)
    return env.get_template("dossier.md.j2").render(**{k: context[k] for k in (
        "d", "summary", "notification", "main_rules", "other_rules", "eu_summary", "mdf_rows")})


def headline_lines(summary: dict[str, Any]) -> list[str]:
    """The headline as text lines: the verdict, the first deadline, what follows, the aside."""
    lines = [("FAIL: " if not summary["passes"] else "PASS: ") + summary["text"]]
    if summary["deadline"]:
        lines.append(f"first deadline: {summary['deadline']}")
    lines.extend(f"follows: {o}" for o in summary["follows"][:5])
    if summary["also"]:
        lines.append(summary["also"])
    return lines


def dossier_text(d: dict[str, Any]) -> str:
    summary = dossier_summary(d)
    lines = [f"{d['run']}: {two_significant(d['total_flops'])} FLOP (range {two_significant(d['low'])} to "
             f"{two_significant(d['high'])})", *headline_lines(summary), ""]
    phases = (d.get("tracked") or {}).get("flops_by_phase") or {}
    if len(phases) > 2:  # a tracked run with tagged phases besides train and eval
        lines.insert(-1, "by phase: " + "; ".join(f"{name} {two_significant(v)} FLOP" for name, v in phases.items()))
    main_rules, other_rules = ordered_verdicts(d.get("verdicts", []))
    lines.append(verdict_table(main_rules + other_rules, deadlines=False))
    lines.append(f"seal {d['seal']['digest']}")
    return "\n".join(lines)

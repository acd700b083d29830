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
    return env.get_template("preflight.md.j2").render(p=data)


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
    env.globals.update(next_deadline=next_deadline)


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
    counted = next((e for e in data["estimates"] if e["method"] == "counted"), None)
    if counted and model.get("active_parameters"):
        six_n = 6 * model["active_parameters"]
        lines.append(f"counted per token {counted['flops_per_token']:,} vs 6 x active parameters {six_n:,} "
                     f"({counted['flops_per_token'] / six_n:.3f}x; attention and the context make the difference)")
    if data.get("verdicts"):
        lines.append(f"\nrules, as of {data.get('as_of')}:")
        lines.append(verdict_table(data["verdicts"], deadlines=True))
        for v in data["verdicts"]:
            if v["status"] in ("crossed", "at_risk"):
                lines.append(f"  {v['rule']}: {v['reason']}")
    for method, why in data.get("skipped_methods", {}).items():
        lines.append(f"{method} method not used: {why}")
    lines.append("uncovered ops: " + (", ".join(data["uncovered_ops"]) or "none"))
    for e in data["estimates"]:
        lines.append(f"\nassumptions ({e['method']}):")
        lines.extend(f"  - {a}" for a in e["assumptions"])
    return "\n".join(lines)


# ---------------------------------------------------------------- dossiers

def dossier_summary(d: dict[str, Any]) -> dict[str, str]:
    """The sentence at the top: the worst status among the rules in force."""
    order = ["crossed", "at_risk", "clear"]
    live = [v for v in d.get("verdicts", []) if v["status"] in order]
    if not live:
        return {"status": "not_in_force", "text": "No rule checked is in force for this run."}
    worst = min(live, key=lambda v: (order.index(v["status"]), not v["blocking"]))
    if worst["status"] == "clear":
        return {"status": "clear", "text": f"Clear of all {len(live)} rules in force."}
    named = [v["rule"] for v in live if v["status"] == worst["status"]]
    verb = "Crosses" if worst["status"] == "crossed" else "At risk of crossing"
    return {"status": worst["status"], "text": f"{verb} {', '.join(named)}."}


def breakdown_rows(d: dict[str, Any], key: str, limit: int = 25) -> list[dict[str, Any]]:
    """The counted step's breakdown as rows, largest first, with shares (pandas)."""
    import pandas as pd

    counted = next((e for e in d.get("estimates", []) if e.get("breakdown", {}).get(key)), None)
    if counted is None:
        return []
    frame = pd.DataFrame.from_dict(counted["breakdown"][key], orient="index").fillna(0).astype("int64")
    frame["total"] = frame.sum(axis=1)
    whole = int(frame["total"].sum()) or 1
    frame = frame.sort_values("total", ascending=False).head(limit)
    return [{"name": name or "(root)", "forward": int(row.get("forward", 0)), "backward": int(row.get("backward", 0)),
             "share": f"{100 * int(row['total']) / whole:.1f}%"} for name, row in frame.iterrows()]


def dossier_context(d: dict[str, Any]) -> dict[str, Any]:
    from .charts import ranges_svg, series_svg

    return {"d": d, "summary": dossier_summary(d), "notification": (d.get("preflight") or {}).get("notification"),
            "ranges_chart": ranges_svg(d.get("estimates", []) + [{**e, "method": f"planned {e['method']}"}
                                                                for e in (d.get("planned") or {}).get("estimates", [])],
                                       d.get("verdicts", [])),
            "series_chart": series_svg((d.get("tracked") or {}).get("series", [])),
            "breakdown_ops": breakdown_rows(d, "by_op"), "breakdown_modules": breakdown_rows(d, "by_module")}


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
    return env.get_template("dossier.md.j2").render(d=d, summary=context["summary"],
                                                     notification=context["notification"])


def dossier_text(d: dict[str, Any]) -> str:
    summary = dossier_summary(d)
    lines = [f"{d['run']}: {two_significant(d['total_flops'])} FLOP (range {two_significant(d['low'])} to "
             f"{two_significant(d['high'])}); {summary['text']}"]
    lines.append(verdict_table(d.get("verdicts", []), deadlines=False))
    lines.append(f"seal {d['seal']['digest']}")
    return "\n".join(lines)

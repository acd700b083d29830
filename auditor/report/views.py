"""The views of a preflight and of a dossier: text, Markdown and HTML, rendered from their dicts.
"""
from __future__ import annotations

import functools
import re
from typing import Any

from auditor.report.breakdown import breakdown_label, breakdown_rows
from auditor.report.formatting import table
from auditor.text import sci
from auditor.report.headline import (
    MARGIN_NOTE,
    dossier_summary,
    headline,
    headline_lines,
    margin,
    next_deadline,
    ordered_verdicts,
    verdict_table,
)
from auditor.resources import resource_dir
from auditor.text import visible


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


def preflight_markdown_filters(env) -> None:
    env.filters.update(sci=sci, cell=md_cell)
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
    from auditor.report.documentation import documentation_form, notification_summary

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


def dossier_context(d: dict[str, Any]) -> dict[str, Any]:
    from auditor.report.charts import ranges_svg, series_svg
    from auditor.report.documentation import documentation_form, notification_summary

    from auditor.report.run_view import run_rows

    main_rules, other_rules = ordered_verdicts(d.get("verdicts", []))
    return {"d": d, "summary": dossier_summary(d), "eu_summary": notification_summary(d),
            "mdf_rows": documentation_form(d), "run_rows": run_rows(d), "breakdown_of": breakdown_label(d),
            "notification": d.get("notification") or (d.get("preflight") or {}).get("notification"),
            "main_rules": main_rules, "other_rules": other_rules,
            "ranges_chart": ranges_svg(d.get("estimates", []) + [{**e, "method": f"planned {e['method']}"}
                                                                for e in (d.get("planned") or {}).get("estimates", [])],
                                       d.get("verdicts", [])),
            "series_chart": series_svg((d.get("tracked") or {}).get("series", [])),
            "breakdown_ops": breakdown_rows(d, "by_op"), "breakdown_modules": breakdown_rows(d, "by_module")}


def dossier_html(d: dict[str, Any]) -> str:
    env = _templates()
    env.globals.update(sci=sci, margin=margin)
    env.filters.update(visible=visible)
    return env.get_template("dossier.html.j2").render(**dossier_context(d))


def dossier_markdown(d: dict[str, Any]) -> str:
    env = _templates()
    preflight_markdown_filters(env)
    env.globals.update(sci=sci, margin=margin, authorization_line=authorization_line)
    context = dossier_context(d)
    return env.get_template("dossier.md.j2").render(**{k: context[k] for k in (
        "d", "summary", "notification", "main_rules", "other_rules", "eu_summary", "mdf_rows", "run_rows")})


def authorization_line(auth: dict[str, Any]) -> str:
    """Authorized against used, in one line (text and Markdown views)."""
    verdict = "within it" if auth["within_budget"] else "OVER it"
    return (f"authorized {sci(auth['budget_flops'])} FLOP by {auth['approver'].get('name') or 'a key'} "
            f"({auth['approver']['keyid'][:16]}); used {sci(auth['used_flops'])} "
            f"({auth['used_flops'] / auth['budget_flops']:.1%}, {' + '.join(auth['phases'])}): {verdict}")


def dossier_text(d: dict[str, Any]) -> str:
    summary = dossier_summary(d)
    lines = [f"{d['run']}: {sci(d['total_flops'])} FLOP (range {sci(d['low'])} to {sci(d['high'])})",
             *headline_lines(summary), ""]
    phases = (d.get("tracked") or {}).get("flops_by_phase") or {}
    if len(phases) > 2:  # a tracked run with tagged phases besides train and eval
        lines.insert(-1, "by phase: " + "; ".join(f"{name} {sci(v)} FLOP" for name, v in phases.items()))
    auth = (d.get("tracked") or {}).get("authorization")
    if auth:
        lines.insert(-1, authorization_line(auth))
    from auditor.report.run_view import run_rows

    lines[-1:-1] = [f"{entry.lower()}: {value}" for entry, value in run_rows(d)]
    main_rules, other_rules = ordered_verdicts(d.get("verdicts", []))
    lines.append(verdict_table(main_rules + other_rules, deadlines=False))
    lines.append(f"seal {d['seal']['digest']}")
    return "\n".join(lines)

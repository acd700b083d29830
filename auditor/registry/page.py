"""The registry as one self-contained HTML page (templates/registry.html.j2): inline CSS, no
script, nothing from the network; every name escaped by jinja2 and shown with its control and
bidi characters as escapes, so none can reorder what a reviewer reads."""
from __future__ import annotations

from typing import Any

from auditor.report.formatting import percent
from auditor.text import printable, sci

ORDER = ("crossed", "at_risk", "clear")


def summary(data: dict[str, Any]) -> dict[str, str]:
    live = [(m["model"], v) for m in data["models"] for v in m["verdicts"] if v["status"] in ORDER]
    if not live:
        return {"status": "not_in_force", "text": "No rule checked is in force for any model."}
    worst = min(ORDER.index(v["status"]) for _, v in live)
    if ORDER[worst] == "clear":
        return {"status": "clear", "text": f"Every model is clear of the {len({v['rule'] for _, v in live})} rules "
                                           f"in force."}
    models = sorted({printable(name) for name, v in live if v["status"] == ORDER[worst]})
    verb = "Crossed" if ORDER[worst] == "crossed" else "At risk"
    return {"status": ORDER[worst], "text": f"{verb}: {', '.join(models)}."}


def registry_html(data: dict[str, Any]) -> str:
    from auditor import __version__
    from auditor.report.views import _templates

    env = _templates()
    env.filters.update(shown=printable)
    template = env.get_template("registry.html.j2")
    return template.render(
        r=data, summary=summary(data), version=__version__, sci=sci, percent=percent,
        relation_words={"fine_tuned": "fine-tuned from", "merged": "merged from", "distilled": "distilled from"},
        developer_words={"same": "same developer", "other": "another developer", None: "developer not stated"},
    )

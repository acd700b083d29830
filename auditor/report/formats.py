"""The one registry of output formats: for each view a command prints, the formats it has and the
function that writes each, from the value the command holds to the text it prints.

Commands take their ``--format`` choices from here (``format_option(view)``) and print
``render(view, fmt, value)``; nothing else dispatches on a format's name. The index below is
data a reader can scan; its functions are imported only when used, so that ``auditor --help``
imports no renderer (jinja2, the rules). ``register`` adds one at run time and refuses a
format a view already has unless told it replaces it, as torch's flop registry does.
"""
from __future__ import annotations

import importlib
import json
from collections.abc import Callable
from typing import Any

Renderer = Callable[..., str]   # (value, **options) -> text

# view -> format -> "module:function". Each function takes the view's value (and the command's
# options for that view, which a format may ignore) and returns the text.
_INDEX: dict[str, dict[str, str]] = {
    # `auditor count`: a StepCount
    "count": {"text": "auditor.report.step_view:step_text", "json": "auditor.report.step_view:step_json"},
    # `auditor preflight`: a plan's sealed record (the preflight's fields at its top)
    "plan": {"text": "auditor.report.views:preflight_text", "md": "auditor.report.views:preflight_markdown",
             "json": "auditor.report.formats:canonical_text"},
    # `auditor report`: a sealed dossier, a plan's or a tracked run's
    "dossier": {"text": "auditor.report.views:dossier_text", "md": "auditor.report.views:dossier_markdown",
                "html": "auditor.report.views:dossier_html", "json": "auditor.report.formats:canonical_text"},
    # `auditor registry ...`: each listing's dict
    "registry.add": {"text": "auditor.registry.views:added_text", "json": "auditor.report.formats:json_text"},
    "registry.authorize": {"text": "auditor.registry.approval_views:authorized_text",
                           "json": "auditor.report.formats:json_text"},
    "registry.models": {"text": "auditor.registry.views:models_text", "json": "auditor.report.formats:json_text"},
    "registry.runs": {"text": "auditor.registry.views:runs_text", "json": "auditor.report.formats:json_text"},
    "registry.show": {"text": "auditor.registry.views:show_text", "json": "auditor.report.formats:json_text"},
    "registry.status": {"text": "auditor.registry.views:status_text", "json": "auditor.report.formats:json_text"},
}
_LOADED: dict[tuple[str, str], Renderer] = {}


def json_text(value: dict[str, Any], **_options: Any) -> str:
    """A listing as JSON: sorted keys, two-space indent, ints exact."""
    return json.dumps(value, indent=2, sort_keys=True)


def canonical_text(record: dict[str, Any], **_options: Any) -> str:
    """A sealed record as its canonical bytes say it (what `auditor verify` checks), less the last newline."""
    from auditor.record.dossier import canonical

    return canonical(record).decode().rstrip("\n")


def formats(view: str) -> list[str]:
    """The formats ``view`` has, text first."""
    return list(_INDEX[view])


def register(view: str, fmt: str, target: str | Renderer, *, replaces: bool = False) -> None:
    """Give ``view`` the format ``fmt``, written by ``target`` (a function or 'module:function').
    A format the view has already is refused unless ``replaces`` says so on purpose."""
    known = _INDEX.setdefault(view, {})
    if fmt in known and not replaces:
        raise ValueError(f"view {view!r} has a {fmt!r} format already ({known[fmt]}); pass replaces=True to replace it")
    if callable(target):
        known[fmt] = f"{target.__module__}:{target.__qualname__}"
        _LOADED[(view, fmt)] = target
    else:
        known[fmt] = target
        _LOADED.pop((view, fmt), None)


def renderer(view: str, fmt: str) -> Renderer:
    if (view, fmt) not in _LOADED:
        try:
            module, name = _INDEX[view][fmt].split(":")
        except KeyError:
            raise ValueError(f"view {view!r} has no {fmt!r} format; it has {', '.join(_INDEX.get(view, {}))}") from None
        _LOADED[(view, fmt)] = getattr(importlib.import_module(module), name)
    return _LOADED[(view, fmt)]


def render(view: str, fmt: str, value: Any, **options: Any) -> str:
    return renderer(view, fmt)(value, **options)


def format_option(view: str, *, help: str | None = None):
    """The ``--format`` option of a command printing ``view``: its choices from the index, text by default."""
    import click

    return click.option("--format", "fmt", type=click.Choice(formats(view)), default="text", show_default=True,
                        help=help or f"How to print it: {', '.join(formats(view))}.")

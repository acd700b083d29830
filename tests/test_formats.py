"""The format registry: every view's formats resolve and render, duplicates are refused, and
`--format` choices come from it."""
from __future__ import annotations

import json

import pytest

from auditor.report import formats


def test_every_indexed_renderer_resolves():
    for view, by_format in formats._INDEX.items():
        assert formats.formats(view)[0] == "text", view
        for fmt in by_format:
            assert callable(formats.renderer(view, fmt)), (view, fmt)


def test_duplicate_registration_is_refused_and_replacement_is_explicit(monkeypatch):
    monkeypatch.setattr(formats, "_INDEX", {k: dict(v) for k, v in formats._INDEX.items()})
    monkeypatch.setattr(formats, "_LOADED", {})
    with pytest.raises(ValueError, match="has a 'json' format already"):
        formats.register("plan", "json", lambda value: "x")
    formats.register("plan", "json", lambda value, **_: "replaced", replaces=True)
    assert formats.render("plan", "json", {}) == "replaced"
    formats.register("plan", "csv", lambda value, **_: f"total,{value['total']}")
    assert formats.formats("plan")[-1] == "csv"
    assert formats.render("plan", "csv", {"total": 7}) == "total,7"


def test_unknown_format_names_what_the_view_has():
    with pytest.raises(ValueError, match="view 'count' has no 'html' format; it has text, json"):
        formats.render("count", "html", None)


def test_json_text_keeps_integers_exact():
    value = {"flops": 3 * 10**25 + 1, "a": [1, 2]}
    text = formats.json_text(value)
    assert json.loads(text)["flops"] == 30000000000000000000000001
    assert text.index('"a"') < text.index('"flops"')


def test_format_option_takes_its_choices_from_the_index():
    import click

    @click.command()
    @formats.format_option("dossier")
    def cmd(fmt):
        click.echo(fmt)

    from click.testing import CliRunner

    result = CliRunner().invoke(cmd, ["--format", "pdf"])
    assert result.exit_code == 2
    for fmt in ("text", "md", "html", "json"):
        assert fmt in result.output
    assert CliRunner().invoke(cmd, ["--format", "md"]).output == "md\n"

"""``auditor registry``: the thin command line over auditor.registry (imports nothing heavy until
a command runs). Exit codes: 0 fine, 1 a run refused (it does not verify) or, for ``status``, a
blocking rule crossed or at risk, 2 bad input or a registry that cannot be reached."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from auditor.report.formats import format_option

REGISTRY_OPTION = click.option(
    "--registry", "registry_url", metavar="URL", envvar="AUDITOR_REGISTRY", show_envvar=True,
    help="The registry: a database URL (sqlite:///FILE, postgresql+psycopg://USER@HOST/DB) or a SQLite file path. "
         "Default: registry.db in $AUDITOR_DATA_DIR, else $XDG_DATA_HOME/auditor, else ~/.local/share/auditor.")

RULES_OPTION = click.option("--rules", "rules", multiple=True, metavar="ID-or-PATH",
                            help="A bundled rule or rule-set id, or a rule file; repeat for more (default: every "
                                 "bundled rule).")
AS_OF_OPTION = click.option("--as-of", "as_of", type=click.DateTime(formats=["%Y-%m-%d"]),
                            help="The day to judge on (YYYY-MM-DD; default today): rules as they stand then, and "
                                 "only what was recorded by the end of that day (UTC).")


def _stop(exc) -> None:
    from auditor.text import printable

    click.echo("error: " + printable(" ".join(str(exc).split())), err=True)
    sys.exit(getattr(exc, "code", 2))


def _open(url: str | None):
    from auditor.registry.engine import RegistryError
    from auditor.registry.store import Registry

    try:
        return Registry(url)
    except RegistryError as exc:
        _stop(exc)


def _echo(view: str, data: dict, fmt: str) -> None:
    from auditor.report.formats import render

    click.echo(render(f"registry.{view}", fmt, data))


def _day(as_of):
    from datetime import date

    return as_of.date() if as_of else date.today()


def _graph(registry, as_of):
    from auditor.registry.status import end_of

    return registry.graph(end_of(as_of.date()) if as_of else None)


def _rules(rules):
    from auditor.rules.rule_file import RuleError
    from auditor.rules.selection import load_rules

    try:
        return load_rules(list(rules) or None)
    except RuleError as exc:
        _stop(RuntimeError(f"--rules: {exc}"))


def trusted_keys_from(paths) -> list:
    """--trusted-key files, else $AUDITOR_TRUSTED_KEYS (paths separated by the OS's path separator)."""
    from auditor.record.signing import SigningError, TrustedKey

    given = list(paths) or [p for p in os.environ.get("AUDITOR_TRUSTED_KEYS", "").split(os.pathsep) if p]
    try:
        return [TrustedKey.load(p) for p in given]
    except SigningError as exc:
        _stop(RuntimeError(f"--trusted-key: {exc}"))


def _guarded(fn):
    """Registry and database errors end the command with one line, never a traceback."""
    import functools

    @functools.wraps(fn)
    def run(*args, **kwargs):
        import sqlalchemy as sa

        from auditor.registry.engine import RegistryError
        from auditor.registry.location import resolve_url, shown

        try:
            return fn(*args, **kwargs)
        except RegistryError as exc:
            _stop(exc)
        except sa.exc.SQLAlchemyError as exc:
            detail = " ".join(str(getattr(exc, "orig", None) or exc).split())[:300]
            _stop(RuntimeError(f"the registry {shown(resolve_url(kwargs.get('registry_url')))} failed: {detail}"))
    return run


@click.group()
def registry() -> None:
    """A registry of runs and models: lineage, cumulative compute, crossings and deadlines (docs/registry.md)."""


@registry.command("add")
@click.argument("target", type=click.Path(path_type=Path))
@click.option("--model", required=True, metavar="NAME", help="The model the run trains or modifies.")
@click.option("--stage", required=True, type=click.Choice(["pretraining", "sft", "rl", "distillation", "merge", "other"]),
              help="The stage of the model's training this run is.")
@click.option("--from", "parents", multiple=True, metavar="MODEL",
              help="The model it comes from (fine-tuned from; with --stage merge, merged from: repeat for each; "
                   "with --stage distillation, the teacher). Made a model of its own if new.")
@click.option("--developer", type=click.Choice(["same", "other"]),
              help="Whether this model's developer is the --from model's (same) or another (other).")
@click.option("--weight", "weights", multiple=True, metavar="W",
              help="A merge's weight for each --from, in order (0.5 or 1/2); recorded, the compute is counted whole.")
@click.option("--trusted-key", "trusted_keys", multiple=True, metavar="NAME.pub",
              type=click.Path(dir_okay=False, path_type=Path),
              help="Refuse a run not signed by one of these keys (every ledger record and the dossier); repeat for "
                   "more. Default: $AUDITOR_TRUSTED_KEYS.")
@click.option("--rollouts/--no-rollouts", default=None,
              help="Count the run's no-grad forward passes (the tracker's evaluation FLOPs) as rollouts that "
                   "generate training data. Default: yes for --stage rl, no otherwise.")
@click.option("--accepted", "accepted", type=click.DateTime(formats=["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S"]),
              help="A plan: when the reviewer accepted it (UTC; default now). Its compute is foreseen from then.")
@format_option("registry.add")
@REGISTRY_OPTION
@_guarded
def add(target: Path, model: str, stage: str, parents, developer, weights, trusted_keys, rollouts, accepted, fmt,
        registry_url) -> None:
    """Verify a run and record it: a RUN_DIR (its ledger.jsonl and dossier.json), a dossier or ledger
    file, or a plan (auditor preflight CONFIG --format json > plan.json). Recorded once, however often
    it is added; a run whose ledger grew since is brought up to date.

    Exit 0 recorded, 1 refused (it does not verify, is not signed by a trusted key, or its ledger no
    longer holds what the registry recorded), 2 bad input."""
    from datetime import timezone

    keys = trusted_keys_from(trusted_keys)
    reg = _open(registry_url)
    when = accepted.replace(tzinfo=timezone.utc) if accepted else None
    done = reg.add(target, model=model, stage=stage, parent=list(parents), developer=developer, weight=list(weights),
                   trusted_keys=keys, rollouts=rollouts, accepted_at=when)
    _echo("add", done.to_dict(), fmt)


@registry.command("authorize")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--model", required=True, metavar="NAME", help="The model whose run it approves.")
@click.option("--trusted-key", "trusted_keys", multiple=True, metavar="NAME.pub",
              type=click.Path(dir_okay=False, path_type=Path),
              help="The approver's public key (repeat for more); required. Default: $AUDITOR_TRUSTED_KEYS.")
@format_option("registry.authorize")
@REGISTRY_OPTION
@_guarded
def authorize(file: Path, model: str, trusted_keys, fmt, registry_url) -> None:
    """Record an authorization (auditor authorize ... -o FILE) when it is issued, before any run
    holds it, so that the model's history shows approvals whose runs have not started. One that
    supersedes another is linked to it (docs/authorization.md).

    Exit 0 recorded, 1 refused (no trusted key's signature verifies), 2 bad input."""
    keys = trusted_keys_from(trusted_keys)
    _echo("authorize", _open(registry_url).authorize(file, model=model, trusted_keys=keys), fmt)


@registry.command("link")
@click.argument("model", metavar="MODEL")
@click.option("--from", "parent", required=True, metavar="MODEL", help="The model it comes from.")
@click.option("--relation", type=click.Choice(["fine_tuned", "merged", "distilled"]), default="fine_tuned",
              show_default=True)
@click.option("--developer", type=click.Choice(["same", "other"]), help="same or other developer than --from's.")
@click.option("--weight", metavar="W", help="A merge's weight for this parent (recorded).")
@REGISTRY_OPTION
@_guarded
def link(model: str, parent: str, relation: str, developer, weight, registry_url) -> None:
    """Record a lineage edge without a run (a merge needs no training; a model from outside)."""
    reg = _open(registry_url)
    notes = reg.link(model, parent, relation=relation, developer=developer, weight=weight)
    click.echo(f"{model} <- {parent} ({relation})" + "".join(f"; {n}" for n in notes))


@registry.command("models")
@format_option("registry.models")
@AS_OF_OPTION
@REGISTRY_OPTION
@_guarded
def models(fmt, as_of, registry_url) -> None:
    """Every model: its runs, its own and cumulative compute, and where it comes from."""
    from auditor.registry.views import models_dict

    _echo("models", models_dict(_graph(_open(registry_url), as_of)), fmt)


@registry.command("runs")
@click.option("--model", metavar="NAME", help="Only this model's runs.")
@format_option("registry.runs")
@AS_OF_OPTION
@REGISTRY_OPTION
@_guarded
def runs(model, fmt, as_of, registry_url) -> None:
    """Every run and plan: model, stage, compute, times, and how it was verified."""
    from auditor.registry.views import runs_dict

    _echo("runs", runs_dict(_graph(_open(registry_url), as_of), model), fmt)


@registry.command("show")
@click.argument("model", metavar="MODEL")
@RULES_OPTION
@AS_OF_OPTION
@format_option("registry.show")
@REGISTRY_OPTION
@_guarded
def show(model, rules, as_of, fmt, registry_url) -> None:
    """One model: its lineage as a tree, each stage's compute, its compute under each basis, its verdicts."""
    from auditor.registry.engine import RegistryError
    from auditor.registry.views import show_dict
    from auditor.text import printable

    graph = _graph(_open(registry_url), as_of)
    model_id = graph.id_of(model)
    if model_id is None:
        raise RegistryError(f"MODEL: got {printable(model)!r}; expected a model in the registry "
                            f"(auditor registry models lists them)")
    _echo("show", show_dict(graph, model_id, _rules(rules), _day(as_of)), fmt)


@registry.command("status")
@RULES_OPTION
@AS_OF_OPTION
@click.option("--model", "only", multiple=True, metavar="NAME", help="Only these models (default: every one).")
@format_option("registry.status")
@REGISTRY_OPTION
@_guarded
def status_command(rules, as_of, only, fmt, registry_url) -> None:
    """For every model, every rule's verdict on its cumulative compute (each rule's own basis), when the
    threshold was crossed (from the ledgers' timestamps) or foreseen (from accepted plans), and the
    deadline that follows with the days left.

    Exit 0 when every blocking rule is clear, 1 when one is crossed or at risk for some model."""
    from auditor.registry.status import fails, status

    document = status(_graph(_open(registry_url), as_of), _rules(rules), _day(as_of), list(only) or None)
    _echo("status", document, fmt)
    sys.exit(1 if fails(document) else 0)


@registry.command("html")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Write the page here.")
@RULES_OPTION
@AS_OF_OPTION
@REGISTRY_OPTION
@_guarded
def html(output: Path, rules, as_of, registry_url) -> None:
    """The whole registry as one self-contained HTML page (no script, nothing from the network)."""
    from auditor.cli.common import write_output
    from auditor.registry.page import registry_html
    from auditor.registry.views import registry_dict

    page = registry_html(registry_dict(_graph(_open(registry_url), as_of), _rules(rules), _day(as_of)))
    write_output(output, page.encode(), "-o")
    click.echo(str(output))

"""Commands on authorizations: approve a budget, show or verify one (docs/authorization.md).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from auditor.cli.common import (
    AS_OF_OPTION,
    RULES_OPTION,
    TRUSTED_KEY_OPTION,
    load_trusted_keys,
    fail,
    main,
    preflight_dict,
    write_output,
)
from auditor.report.formats import render
from auditor.text import sci


@main.command()
@click.argument("config", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--key", "key_path", required=True, type=click.Path(dir_okay=False, path_type=Path), metavar="NAME.key",
              help="The approver's signing key (auditor keys new).")
@click.option("--budget", required=True, metavar="FLOPS", help="The approved budget in FLOPs, e.g. 3e25.")
@click.option("--expires", type=click.DateTime(formats=["%Y-%m-%d"]), help="Last day the authorization is valid.")
@click.option("--condition", "conditions", multiple=True, metavar="TEXT",
              help="A condition of the approval, e.g. 'report at 50 %' (repeat for more).")
@click.option("--supersedes", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE",
              help="The earlier authorization this one replaces (a run that needs more).")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Write the signed authorization here.")
@RULES_OPTION
@AS_OF_OPTION
def authorize(config: Path, key_path: Path, budget: str, expires, conditions, supersedes, output, rules, as_of) -> None:
    """Approve CONFIG's run for a compute budget: show its preflight, then write a signed
    authorization that the run must hold (docs/authorization.md)."""
    from auditor.inputs.values import positive_count
    from auditor.record.authorization import AuthorizationError, make
    from auditor.record.signing import SigningError, SigningKey, canonical

    try:
        flops = positive_count(budget, "number of FLOPs")
    except ValueError as exc:
        fail(f"--budget: {exc}")
    try:
        key = SigningKey.load(key_path)
    except SigningError as exc:
        fail(f"--key: {exc}")
    data = preflight_dict(config, rules, as_of)
    click.echo(render("plan", "text", data))
    if flops < data["high"]:
        click.echo(f"warning: the budget {sci(flops)} is below the plan's high end {sci(data['high'])}: the run may "
                   f"stop before it ends", err=True)
    try:
        envelope = make(config, key, budget=flops, preflight=data, expires=expires.date() if expires else None,
                        conditions=list(conditions), supersedes=supersedes)
    except AuthorizationError as exc:
        fail(str(exc))
    write_output(output, canonical(envelope) + b"\n", "-o")
    click.echo(f"authorization: {output} ({flops:,} FLOPs for {data['run']}, signed by {key.name})")


@main.group()
def authorization() -> None:
    """Authorizations of compute budgets: show or verify one (docs/authorization.md)."""


@authorization.command("verify")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@TRUSTED_KEY_OPTION
@click.option("--config", type=click.Path(dir_okay=False, path_type=Path), help="The config it must be for.")
def authorization_verify(file: Path, trusted_keys, config) -> None:
    """Exit 0 when FILE is an authorization signed by a trusted key, valid today (and for --config);
    1 when it is not, saying why; 2 when it cannot be read."""
    from auditor.record.authorization import AuthorizationError, load

    keys = load_trusted_keys(trusted_keys)
    if not file.is_file():
        fail(f"{file}: no such file")
    try:
        auth = load(file, keys, config=config)
    except AuthorizationError as exc:
        click.echo(f"{exc}")
        sys.exit(1)
    click.echo(f"{file}: valid: {auth.describe()}")


@authorization.command("show")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
def authorization_show(file: Path) -> None:
    """Print what FILE approves (unverified: use `authorization verify` to check its signature)."""
    from auditor.files import FileRefused, describe, read_regular
    from auditor.record.authorization import MAX_BYTES
    from auditor.record.signing import open_envelope

    try:
        opened = open_envelope(json.loads(read_regular(file, MAX_BYTES)), [])
    except (OSError, FileRefused, ValueError) as exc:
        fail(f"{file}: cannot read the authorization: {describe(exc)}")
    if opened.statement is None:
        fail(f"{file}: not an authorization: {opened.problem}")
    click.echo(json.dumps({"config": opened.statement.get("subject"), "signed_by": opened.keyids,
                           **(opened.statement.get("predicate") or {})}, indent=2, sort_keys=True))
    click.echo("(not verified: auditor authorization verify FILE --trusted-key NAME.pub)", err=True)

"""Commands on records: report a dossier, verify a run or a record, make signing keys.
"""
from __future__ import annotations

import sys
from pathlib import Path

import click

from auditor.cli.common import fail, main, write_output
from auditor.report.formats import format_option, render


@main.command()
@click.argument("target", type=click.Path(path_type=Path))
@format_option("dossier")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), help="Write here instead of stdout.")
def report(target: Path, fmt: str, output: Path | None) -> None:
    """Render a sealed dossier (a RUN_DIR holding dossier.json, or the file) as text, JSON, Markdown or HTML.

    The dossier is verified first, as `auditor verify` does without keys (its seal, and its figures
    against its ledger): one that does not verify is refused (exit 2). Exit 0 when every blocking
    rule is clear, 1 when one is crossed or at risk, as for every command that shows verdicts."""
    from auditor.record import dossier
    from auditor.record.verify import check

    try:
        data = dossier.load(target)
    except dossier.DossierError as exc:
        fail(str(exc))
    found = check(target)
    if found.code:
        fail(f"{found.problems[0].removeprefix('error: ')} (the dossier does not verify: see auditor verify)")
    text = render("dossier", fmt, data)
    if output is None:
        click.echo(text, nl=not text.endswith("\n"))
    else:
        write_output(output, text.encode(), "-o")
        click.echo(str(output))
    from auditor.rules.verdicts import fails_gate

    sys.exit(1 if any(fails_gate(v) for v in data.get("verdicts", [])) else 0)


@main.command()
@click.argument("target", type=click.Path(path_type=Path))
@click.option("--trusted-key", "trusted_keys", multiple=True, metavar="NAME.pub",
              type=click.Path(dir_okay=False, path_type=Path),
              help="A public key whose signatures are trusted (auditor keys new); repeat for more. With one, a "
                   "ledger head or dossier not signed by a trusted key fails (exit 1).")
def verify(target: Path, trusted_keys) -> None:
    """Check a RUN_DIR (its ledger's hash chain, its sealed dossier, that their figures agree, and
    their signatures) or a dossier or ledger file.

    Without --trusted-key this proves integrity against accident only: whoever can edit the files
    can recompute every hash. Exit 0 intact, 1 tampered (saying what differs: the first bad record,
    the seal, a figure, a signature), 2 unreadable."""
    from auditor.record.signing import SigningError, TrustedKey
    from auditor.record.verify import verify_target

    try:
        keys = [TrustedKey.load(path) for path in trusted_keys]
    except SigningError as exc:
        fail(f"--trusted-key: {exc}")
    code, lines = verify_target(target, keys)
    for stream, line in lines:
        click.echo(line, err=stream == "err")
    sys.exit(code)


@main.group()
def keys() -> None:
    """Signing keys (Ed25519) for ledgers and dossiers: see docs/security.md."""


@keys.command("new")
@click.argument("name", type=click.Path(dir_okay=False, path_type=Path))
def keys_new(name: Path) -> None:
    """Write NAME.key (the private key, mode 0600; keep it out of run folders and repositories) and
    NAME.pub (give it to reviewers: auditor verify --trusted-key NAME.pub). Never overwrites a key."""
    from auditor.record.signing import SigningError, TrustedKey, new_keypair

    try:
        key_path, pub_path = new_keypair(name)
    except SigningError as exc:
        fail(str(exc))
    click.echo(f"private key: {key_path} (mode 0600; use it with ComputeAudit(signing_key=...) or "
               f"AUDITOR_SIGNING_KEY)")
    click.echo(f"public key:  {pub_path} (key id {TrustedKey.load(pub_path).keyid})")

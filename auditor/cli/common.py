"""What the commands share: the group, one-line failures (exit 2), the options several commands
take, and the preflight each of them may run.
"""
from __future__ import annotations

import sys
from pathlib import Path

import click

from auditor import __version__
from auditor.files import write_atomic


def fail(message: str) -> None:
    """Bad input: one line on stderr naming what is wrong, exit 2, no traceback.

    Libraries' messages may span lines (transformers' validation errors do): folded here; control
    and bidi characters (from a file name, say) are shown as escapes."""
    from auditor.text import printable

    click.echo("error: " + printable(" ".join(message.split())), err=True)
    sys.exit(2)


def quiet_libraries() -> None:
    """transformers warns about config details that do not change a FLOP count; keep stderr for ours.

    Set through the environment so that a run answered from the count cache never imports it."""
    import os

    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


ALLOW_PATH_OPTION = click.option("--allow-path", "allow_paths", multiple=True, metavar="DIR",
                                 type=click.Path(file_okay=False, path_type=Path),
                                 help="A folder configs may name files in (hf_config, rules) besides their own "
                                      "repository; repeat for more.")


REGISTRY_OPTION = click.option(
    "--registry", "registry_url", metavar="URL", envvar="AUDITOR_REGISTRY", show_envvar=True,
    help="Judge a fine-tune on its base model's recorded history: a config's lineage.base_model that names a "
         "model in this registry (a database URL or SQLite file; auditor registry --help) gets that model's "
         "cumulative compute as its base compute.")


MAX_MODULES_OPTION = click.option("--max-modules", type=click.IntRange(min=1), metavar="N",
                                  help="Refuse to count a model with more than N modules and parameter tensors "
                                       "(default 500,000: beyond any real model, so a config cannot make counting "
                                       "run without bound).")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="auditor")
def main() -> None:
    """Measure the training compute of PyTorch runs and check it against AI compute thresholds."""


RULES_OPTION = click.option("--rules", "rules", multiple=True, metavar="ID-or-PATH",
                            help="A bundled rule or rule-set id, or a rule file; repeat for more "
                                 "(default: the config's rules:, else every bundled rule).")


AS_OF_OPTION = click.option("--as-of", "as_of", type=click.DateTime(formats=["%Y-%m-%d"]),
                            help="Read rule statuses and dates as of this day (YYYY-MM-DD; default today).")


def write_output(path: Path, data: bytes, option: str) -> None:
    """An output file the user named, written whole; one that cannot be written is exit 2, one line."""
    from auditor.text import printable

    try:
        write_atomic(path, data)
    except OSError as exc:
        fail(f"{option}: cannot write {printable(path)}: {exc.strerror or exc}")


def base_compute(registry_url: str | None):
    """The registry's figures for configs' base models (--registry), or None; one that cannot be opened is exit 2."""
    if not registry_url:
        return None
    import sqlalchemy as sa

    from auditor.registry.engine import RegistryError
    from auditor.registry.lineage import BaseCompute

    try:
        found = BaseCompute(registry_url)
        _ = found.graph                   # read once, up front: a registry that fails is the command's error
        return found
    except RegistryError as exc:
        fail(str(exc))
    except sa.exc.SQLAlchemyError as exc:
        fail(f"--registry: cannot read the registry: {' '.join(str(getattr(exc, 'orig', None) or exc).split())[:300]}")


def preflight_dict(config: Path, rules=(), as_of=None, *, quiet: bool = False, trust=None, lineage_from=None) -> dict:
    """Load, validate, estimate and judge; bad input ends the command with exit 2 and one line."""
    try:
        return assess_or_error(config, rules, as_of, quiet=quiet, trust=trust, lineage_from=lineage_from).to_dict()
    except BadInput as exc:
        fail(str(exc))


class BadInput(Exception):
    pass


def assess_or_error(config: Path, rules=(), as_of=None, *, quiet: bool = False, trust=None, lineage_from=None):
    from auditor.inputs.run_config import ConfigError
    from auditor.preflight import NeedsTrustedRun, PreflightError, assess
    from auditor.rules.rule_file import RuleError

    quiet_libraries()
    progress = None if quiet else (lambda m: click.echo(f"... {m}", err=True))
    try:
        return assess(config, rules=list(rules or ()) or None, as_of=as_of.date() if as_of else None,
                      progress=progress, trust=trust, lineage_from=lineage_from)
    except NeedsTrustedRun:
        raise
    except (ConfigError, PreflightError, RuleError) as exc:
        raise BadInput(str(exc)) from None


def load_trusted_keys(paths) -> list:
    from auditor.record.signing import SigningError, TrustedKey

    try:
        return [TrustedKey.load(p) for p in paths]
    except SigningError as exc:
        fail(f"--trusted-key: {exc}")


TRUSTED_KEY_OPTION = click.option("--trusted-key", "trusted_keys", multiple=True, metavar="NAME.pub",
                                  type=click.Path(dir_okay=False, path_type=Path),
                                  help="A public key whose signatures are trusted; repeat for more.")

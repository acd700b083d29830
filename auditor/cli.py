"""The ``auditor`` command. Exit codes: 0 clear, 1 a blocking rule crossed or at risk, 2 bad input."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from . import __version__
from .atomic import write_atomic
from .textfmt import percent, sci, table

DEMO_RUN = Path(__file__).parent / "data" / "demo-run.yaml"


def fail(message: str) -> None:
    """Bad input: one line on stderr naming what is wrong, exit 2, no traceback.

    Libraries' messages may span lines (transformers' validation errors do): folded here; control
    and bidi characters (from a file name, say) are shown as escapes."""
    from .numbers import printable

    click.echo("error: " + printable(" ".join(message.split())), err=True)
    sys.exit(2)


def quiet_libraries() -> None:
    """transformers warns about config details that do not change a FLOP count; keep stderr for ours.

    Set through the environment so that a run answered from the count cache never imports it."""
    import os

    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


def render_count(result, title: str, depth: int) -> str:
    total = result.total
    lines = [title, ""]
    lines.append(table(["phase", "FLOPs", "share"], [
        ["forward", f"{result.forward:,}", percent(result.forward, total)],
        ["backward", f"{result.backward:,}", percent(result.backward, total)],
        ["training step", f"{total:,}", "100.0%"],
    ]))
    if result.tokens:
        lines.append(f"\nper token: {result.flops_per_token:,} FLOPs ({sci(result.flops_per_token)}) over {result.tokens:,} tokens")
    if result.hardware_total != total:
        lines.append(f"executed by the hardware (recomputation, dense-masked experts): {result.hardware_total:,}")
    lines.append("\nby operator")
    lines.append(table(["operator", "forward", "backward", "share"], [
        [op, f"{v['forward']:,}", f"{v['backward']:,}", percent(sum(v.values()), total)]
        for op, v in result.by_op().items()]))
    lines.append(f"\nby module (depth {depth})")
    lines.append(table(["module", "forward", "backward", "share"], [
        [mod or "(root)", f"{v['forward']:,}", f"{v['backward']:,}", percent(sum(v.values()), total)]
        for mod, v in result.by_module(depth).items()]))
    lines.append("\nuncovered ops: " + (", ".join(f"{k} x{v}" for k, v in sorted(result.uncovered.items()))
                                       if result.uncovered else "none (the count is complete)"))
    lines.append("assumptions:")
    lines.extend(f"  - {a}" for a in result.assumptions)
    return "\n".join(lines)


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


@main.command()
@click.argument("model_config", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--seq-len", type=click.IntRange(min=1), help="Tokens per sequence (default: the model's context length).")
@click.option("--decoder-len", type=click.IntRange(min=1),
              help="An encoder-decoder's decoder tokens per sequence (default: the sequence length).")
@click.option("--batch", type=click.IntRange(min=1), default=1, show_default=True, help="Sequences per step.")
@click.option("--device", type=click.Choice(["meta", "cpu"]), default="meta", show_default=True,
              help="meta: shapes only, any size; cpu: real random weights.")
@click.option("--depth", type=click.IntRange(min=0), default=2, show_default=True, help="Module depth of the breakdown.")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.option("--no-repeat", is_flag=True, help="Count every block instead of counting repeated blocks once.")
@MAX_MODULES_OPTION
def count(model_config: Path, seq_len, decoder_len, batch, device, depth, fmt, no_repeat, max_modules) -> None:
    """Count one training step of a Hugging Face model from its config.json.

    An encoder-decoder (T5, BART, Whisper) is counted whole: encoder and decoder."""
    from .counting import CountingError
    from .counting.hf import count_hf

    quiet_libraries()
    try:
        result = count_hf(model_config, batch=batch, seq_len=seq_len, decoder_len=decoder_len, device=device,
                          repeated_blocks=not no_repeat, max_modules=max_modules)
    except CountingError as exc:
        fail(str(exc))
    if fmt == "json":
        click.echo(json.dumps(result.to_dict(), indent=2, sort_keys=True))
    else:
        click.echo(render_count(result, f"{model_config}: one training step", depth))


RULES_OPTION = click.option("--rules", "rules", multiple=True, metavar="ID-or-PATH",
                            help="A bundled rule or rule-set id, or a rule file; repeat for more "
                                 "(default: the config's rules:, else every bundled rule).")
AS_OF_OPTION = click.option("--as-of", "as_of", type=click.DateTime(formats=["%Y-%m-%d"]),
                            help="Read rule statuses and dates as of this day (YYYY-MM-DD; default today).")


@main.command()
@click.argument("config", type=click.Path(dir_okay=True, path_type=Path))
@click.option("--format", "fmt", type=click.Choice(["text", "json", "md"]), default="text", show_default=True,
              help="text: a readable table; json: a sealed record of the plan (the JSON contract of "
                   "docs/preflight.md, ints for every count; auditor verify checks it); md: Markdown.")
@click.option("--html", "html_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write the audit dossier as one self-contained HTML file here.")
@RULES_OPTION
@AS_OF_OPTION
@ALLOW_PATH_OPTION
@MAX_MODULES_OPTION
@click.option("--signing-key", type=click.Path(dir_okay=False, path_type=Path), metavar="NAME.key",
              help="Sign the plan's record (--format json, --html) with this key (auditor keys new).")
@REGISTRY_OPTION
def preflight(config: Path, fmt: str, html_path: Path | None, rules: tuple[str, ...], as_of, allow_paths,
              max_modules, signing_key, registry_url) -> None:
    """Estimate a training run's compute from its YAML config and judge it against the rules.

    The config is taken as your own: its model factory is imported and run, and its rules: are
    its judge (the gate trusts a config less: see `auditor gate --help`).

    Exit 0 when every blocking rule is clear, 1 when one is crossed or at risk, 2 on bad input."""
    from .policy import Trust

    from . import dossier
    from .signing import SigningError, SigningKey

    try:
        signer = SigningKey.load(signing_key) if signing_key else None
    except SigningError as exc:
        fail(f"--signing-key: {exc}")
    trust = Trust(allow_paths=tuple(p.resolve() for p in allow_paths), max_modules=max_modules)
    data = preflight_dict(config, rules, as_of, trust=trust, lineage_from=base_compute(registry_url))
    record = dossier.build(data, run=data["run"], config_path=config, signer=signer) \
        if fmt == "json" or html_path else None
    # JSON: the plan as a sealed record (`auditor verify plan.json` checks it), the contract's fields at its top
    text = dossier.canonical(record).decode().rstrip("\n") if fmt == "json" else render_preflight(data, fmt)
    html = None
    if html_path is not None:
        from .render import dossier_html

        html = dossier_html(record).encode()
    click.echo(text)
    if html is not None:
        write_output(html_path, html, "--html")
        click.echo(f"dossier: {html_path}", err=True)
    from .rules import fails_gate

    sys.exit(1 if any(fails_gate(v) for v in data["verdicts"]) else 0)


def write_output(path: Path, data: bytes, option: str) -> None:
    """An output file the user named, written whole; one that cannot be written is exit 2, one line."""
    from .numbers import printable

    try:
        write_atomic(path, data)
    except OSError as exc:
        fail(f"{option}: cannot write {printable(path)}: {exc.strerror or exc}")


def base_compute(registry_url: str | None):
    """The registry's figures for configs' base models (--registry), or None; one that cannot be opened is exit 2."""
    if not registry_url:
        return None
    from .registry.engine import RegistryError
    from .registry.lineage import BaseCompute

    import sqlalchemy as sa

    try:
        found = BaseCompute(registry_url)
        found.graph                       # read once, up front: a registry that fails is the command's error
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
    from .config import ConfigError
    from .preflight import NeedsTrustedRun, PreflightError, assess
    from .rulefile import RuleError

    quiet_libraries()
    progress = None if quiet else (lambda m: click.echo(f"... {m}", err=True))
    try:
        return assess(config, rules=list(rules or ()) or None, as_of=as_of.date() if as_of else None,
                      progress=progress, trust=trust, lineage_from=lineage_from)
    except NeedsTrustedRun:
        raise
    except (ConfigError, PreflightError, RuleError) as exc:
        raise BadInput(str(exc)) from None


def render_preflight(data: dict, fmt: str) -> str:
    from .render import preflight_markdown, preflight_text

    if fmt == "json":
        return json.dumps(data, indent=2, sort_keys=True)
    return preflight_markdown(data) if fmt == "md" else preflight_text(data)


@main.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--rules", "rules", multiple=True, metavar="ID-or-PATH",
              help="The gate's rules: a bundled rule or rule-set id, or a rule file; repeat for more (default: the "
                   "policy file's, else every bundled rule). A config's own rules: add to these, never replace one.")
@AS_OF_OPTION
@click.option("--junit", type=click.Path(dir_okay=False, path_type=Path), help="Write JUnit XML here.")
@click.option("--github", is_flag=True, help="Print GitHub Actions annotations on each config's file and line.")
@click.option("--policy", type=click.Path(dir_okay=False, path_type=Path),
              help="A gate policy file (rules, allow_factory, allow_paths, max_modules; docs/security.md). Read it "
                   "from a trusted branch, never from the pull request under review.")
@click.option("--allow-factory", "allow_factory", multiple=True, metavar="PATTERN",
              help="Import and run model factories whose 'module:function' matches PATTERN (fnmatch, e.g. "
                   "'ourlab.models:*'); repeat for more. Default: none, since a config's factory is code.")
@ALLOW_PATH_OPTION
@MAX_MODULES_OPTION
@click.option("--require-authorization-above", "authorization_above", metavar="FLOPS",
              help="Configs whose plan reaches this many FLOPs (high end) need a valid authorization beside them "
                   "(X.yaml -> X.authorization.json, signed by a --trusted-key): docs/authorization.md.")
@click.option("--trusted-key", "trusted_keys", multiple=True, metavar="NAME.pub",
              type=click.Path(dir_okay=False, path_type=Path), help="An approver's public key; repeat for more.")
@REGISTRY_OPTION
def gate(paths, rules, as_of, junit, github, policy, allow_factory, allow_paths, max_modules, authorization_above,
         trusted_keys, registry_url) -> None:
    """Check every training config in PATHS (files or folders) against the rules, for CI.

    The gate runs no code a config names (a model factory) unless --allow-factory or the policy
    allows it: such a config is judged by its other methods, or fails as needing a trusted run.

    Exit 0 when every blocking rule is clear for every config, 1 when one is crossed or at risk
    (or a config needs a trusted run), 2 when a config is bad input (the others are still checked
    and reported, and the JUnit file is written)."""
    from .config import ConfigError
    from .gate import Gate, GateResult, check_authorization, collect_configs, github_annotations, junit_xml
    from .numbers import error_text, printable
    from .policy import gate_trust, load_policy
    from .preflight import NeedsTrustedRun
    from .rulefile import RuleError
    from .rules import load_rules

    try:  # checked once, up front: a bad --rules or policy is the command's error, not each config's
        chosen = load_rules(list(rules)) if rules else None
    except RuleError as exc:
        fail(f"--rules: {exc}")
    if policy is not None:
        try:
            loaded = load_policy(policy)
        except (ConfigError, RuleError) as exc:
            fail(f"--policy: {exc}")
        chosen = chosen if chosen is not None else loaded.rules
        allow_factory = (*loaded.allow_factory, *allow_factory)
        allow_paths = (*loaded.allow_paths, *allow_paths)
        max_modules = max_modules or loaded.max_modules
    trust = gate_trust(allow_factory, allow_paths, max_modules)
    lineage_from = base_compute(registry_url)
    above = None
    if authorization_above is not None:
        from .numbers import positive_count

        try:
            above = positive_count(authorization_above, "number of FLOPs")
        except ValueError as exc:
            fail(f"--require-authorization-above: {exc}")
        if not trusted_keys:
            fail("--require-authorization-above: give the approvers' public keys with --trusted-key NAME.pub")
    keys = _trusted(trusted_keys)
    configs, missing = collect_configs(list(paths))
    if not configs and not missing:
        fail(f"no training configs (*.yaml, *.yml) found in {', '.join(printable(p) for p in paths)}")
    result = Gate(results=list(missing))
    quiet_libraries()
    for n, path in enumerate(configs, 1):
        click.echo(f"[{n}/{len(configs)}] {printable(path)}", err=True)
        # Nothing a config does ends the gate: every failure is that config's row, and the loop goes on.
        try:
            result.results.append(GateResult(path, assess_or_error(path, chosen, as_of, quiet=True, trust=trust,
                                                                   lineage_from=lineage_from).to_dict()))
            if above is not None:
                check_authorization(result.results[-1], above, keys, as_of.date() if as_of else None)
        except NeedsTrustedRun as exc:
            result.results.append(GateResult(path, untrusted=" ".join(str(exc).split())))
        except BadInput as exc:
            result.results.append(GateResult(path, error=" ".join(str(exc).split())))
        except MemoryError:
            result.results.append(GateResult(path, error=f"{printable(path)}: ran out of memory while checking it"))
        except (Exception, SystemExit) as exc:   # a bug of ours: reported, not a traceback, not an exit
            result.results.append(GateResult(path, error=f"{printable(path)}: internal error while checking it "
                                                         f"(please report): {error_text(exc)}"))
    click.echo(render_gate(result))
    if junit:
        try:
            write_atomic(junit, junit_xml(result))
        except OSError as exc:
            result.output_error = f"--junit: cannot write {printable(junit)}: {exc.strerror or exc}"
            click.echo(f"error: {result.output_error}", err=True)
    if github:
        for line in github_annotations(result):
            click.echo(line)
    sys.exit(result.exit_code)


def render_gate(result) -> str:
    from .numbers import printable

    rows = []
    for r in result.results:
        if r.error or r.untrusted:
            rows.append([printable(r.path), "-", "bad input" if r.error else "FAIL",
                         printable(r.error or f"needs a trusted run: {r.untrusted}")])
            continue
        worst = ", ".join([f"{v['rule']} {v['status']}" for v in r.failing] +
                          ([f"needs an authorization: {printable(r.unauthorized)}"] if r.unauthorized else [])) or "clear"
        rows.append([printable(r.path), sci(r.preflight["total_flops"]), "FAIL" if r.fails else "ok", worst])
    from .render import plural

    summary = f"\n{plural(len(result.results), 'config')}: {sum(1 for r in result.results if r.fails)} failing, " \
              f"{sum(1 for r in result.results if r.error)} bad input"
    return table(["config", "FLOPs", "gate", "blocking rules crossed or at risk"], rows) + summary


@main.command()
@click.argument("target", type=click.Path(path_type=Path))
@click.option("--format", "fmt", type=click.Choice(["text", "json", "md", "html"]), default="text", show_default=True)
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), help="Write here instead of stdout.")
def report(target: Path, fmt: str, output: Path | None) -> None:
    """Render a sealed dossier (a RUN_DIR holding dossier.json, or the file) as text, JSON, Markdown or HTML.

    The dossier is verified first, as `auditor verify` does without keys (its seal, and its figures
    against its ledger): one that does not verify is refused (exit 2). Exit 0 when every blocking
    rule is clear, 1 when one is crossed or at risk, as for every command that shows verdicts."""
    from . import dossier
    from .render import dossier_html, dossier_markdown, dossier_text
    from .verify import check

    try:
        data = dossier.load(target)
    except dossier.DossierError as exc:
        fail(str(exc))
    found = check(target)
    if found.code:
        fail(f"{found.problems[0].removeprefix('error: ')} (the dossier does not verify: see auditor verify)")
    text = {"json": lambda: dossier.canonical(data).decode(), "md": lambda: dossier_markdown(data),
            "html": lambda: dossier_html(data), "text": lambda: dossier_text(data)}[fmt]()
    if output is None:
        click.echo(text, nl=not text.endswith("\n"))
    else:
        write_output(output, text.encode(), "-o")
        click.echo(str(output))
    from .rules import fails_gate

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
    from .signing import SigningError, TrustedKey
    from .verify import verify_target

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
    from .signing import SigningError, TrustedKey, new_keypair

    try:
        key_path, pub_path = new_keypair(name)
    except SigningError as exc:
        fail(str(exc))
    click.echo(f"private key: {key_path} (mode 0600; use it with ComputeAudit(signing_key=...) or "
               f"AUDITOR_SIGNING_KEY)")
    click.echo(f"public key:  {pub_path} (key id {TrustedKey.load(pub_path).keyid})")


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
    from .authorization import AuthorizationError, make
    from .numbers import positive_count
    from .signing import SigningError, SigningKey, canonical

    try:
        flops = positive_count(budget, "number of FLOPs")
    except ValueError as exc:
        fail(f"--budget: {exc}")
    try:
        key = SigningKey.load(key_path)
    except SigningError as exc:
        fail(f"--key: {exc}")
    data = preflight_dict(config, rules, as_of)
    click.echo(render_preflight(data, "text"))
    if flops < data["high"]:
        click.echo(f"warning: the budget {flops:.2e} is below the plan's high end {data['high']:.2e}: the run may "
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


def _trusted(paths) -> list:
    from .signing import SigningError, TrustedKey

    try:
        return [TrustedKey.load(p) for p in paths]
    except SigningError as exc:
        fail(f"--trusted-key: {exc}")


TRUSTED_KEY_OPTION = click.option("--trusted-key", "trusted_keys", multiple=True, metavar="NAME.pub",
                                  type=click.Path(dir_okay=False, path_type=Path),
                                  help="A public key whose signatures are trusted; repeat for more.")


@authorization.command("verify")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@TRUSTED_KEY_OPTION
@click.option("--config", type=click.Path(dir_okay=False, path_type=Path), help="The config it must be for.")
def authorization_verify(file: Path, trusted_keys, config) -> None:
    """Exit 0 when FILE is an authorization signed by a trusted key, valid today (and for --config);
    1 when it is not, saying why; 2 when it cannot be read."""
    from .authorization import AuthorizationError, load

    keys = _trusted(trusted_keys)
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
    from .authorization import MAX_BYTES
    from .safefiles import FileRefused, describe, read_regular
    from .signing import open_envelope

    try:
        opened = open_envelope(json.loads(read_regular(file, MAX_BYTES)), [])
    except (OSError, FileRefused, ValueError) as exc:
        fail(f"{file}: cannot read the authorization: {describe(exc)}")
    if opened.statement is None:
        fail(f"{file}: not an authorization: {opened.problem}")
    click.echo(json.dumps({"config": opened.statement.get("subject"), "signed_by": opened.keyids,
                           **(opened.statement.get("predicate") or {})}, indent=2, sort_keys=True))
    click.echo("(not verified: auditor authorization verify FILE --trusted-key NAME.pub)", err=True)


@main.group()
def thresholds() -> None:
    """The compute-threshold rules: list them, show one, validate a rule file."""


@thresholds.command("list")
@AS_OF_OPTION
def thresholds_list(as_of) -> None:
    """Every bundled rule with its threshold, comparison, basis and status, and whether runs are
    judged by it by default (examples, such as the example lab policy, only when named)."""
    from .rules import rule_activity, as_of_day, bundled_rules

    day = as_of_day(as_of.date() if as_of else None)

    def status_on(rule, when) -> str:
        inactive, _ = rule_activity(rule, when)
        return f"not in force ({inactive})" if inactive else "in force"

    rows = []
    for rule in bundled_rules():
        d = rule.to_dict()
        threshold = (f"{d['comparison']} {sci(int(d['threshold_flops']))}" if d.get("threshold_flops") is not None
                     else f"{d['comparison']} {d['ratio']} of base")
        rows.append([d["id"], d["jurisdiction"], threshold, d["basis"], status_on(rule, day), "yes" if d["blocking"] else "no",
                     "when named (an example)" if rule.is_example else "by default"])
    click.echo(table(["rule", "jurisdiction", "threshold", "basis", "status", "blocking", "judged"], rows))


@thresholds.command("show")
@click.argument("rule_id")
def thresholds_show(rule_id: str) -> None:
    """One rule (or rule set) by id, as YAML-like JSON with its citation, obligations and deadlines."""
    from .rulefile import RuleError
    from .rules import load_rules

    try:
        chosen = load_rules([rule_id])
    except RuleError as exc:
        fail(str(exc))
    click.echo(json.dumps([r.to_dict() for r in chosen], indent=2, sort_keys=True, default=str))


@thresholds.command("validate")
@click.argument("path", type=click.Path(path_type=Path))
def thresholds_validate(path: Path) -> None:
    """Check a rule file of your own: exit 0 when valid, 2 with the file and field when not."""
    from .rulefile import RuleError, validate_rule_file

    try:
        rules = validate_rule_file(path)
    except RuleError as exc:
        fail(str(exc))
    click.echo(f"{path}: valid, {len(rules)} rule(s): {', '.join(r.id for r in rules)}")


@main.command()
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("auditor-demo"),
              show_default=True, help="Folder for the demo's outputs.")
@click.option("--steps", type=click.IntRange(min=1), default=6, show_default=True, help="Steps of the tracked run.")
def demo(out: Path, steps: int) -> None:
    """Preflight a bundled sample run, train its model for a few tracked steps on the CPU, and
    write both dossiers; the last line is the HTML dossier's path."""
    from .demo import run_demo

    quiet_libraries()
    plan = preflight_dict(DEMO_RUN)
    click.echo(render_preflight(plan, "text") + "\n")
    run_demo(plan, DEMO_RUN, out, steps, echo=click.echo)


from .registry.commands import registry as _registry  # noqa: E402  (click only until a command runs)

main.add_command(_registry)


def run() -> None:
    """The console script: the command line with its process settings (auditor/startup.py)."""
    from .startup import tune_for_command_line

    tune_for_command_line()
    main()


if __name__ == "__main__":
    run()

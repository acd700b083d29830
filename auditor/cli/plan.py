"""Commands on plans: count one model, preflight one config, gate many.
"""
from __future__ import annotations

import sys
from pathlib import Path

import click

from auditor.cli.common import (
    ALLOW_PATH_OPTION,
    AS_OF_OPTION,
    MAX_MODULES_OPTION,
    REGISTRY_OPTION,
    RULES_OPTION,
    BadInput,
    load_trusted_keys,
    assess_or_error,
    base_compute,
    fail,
    main,
    preflight_dict,
    quiet_libraries,
    write_output,
)
from auditor.files import write_atomic
from auditor.report.formats import format_option, render
from auditor.report.formatting import table
from auditor.text import sci


@main.command()
@click.argument("model_config", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--seq-len", type=click.IntRange(min=1), help="Tokens per sequence (default: the model's context length).")
@click.option("--decoder-len", type=click.IntRange(min=1),
              help="An encoder-decoder's decoder tokens per sequence (default: the sequence length).")
@click.option("--batch", type=click.IntRange(min=1), default=1, show_default=True, help="Sequences per step.")
@click.option("--device", type=click.Choice(["meta", "cpu"]), default="meta", show_default=True,
              help="meta: shapes only, any size; cpu: real random weights.")
@click.option("--depth", type=click.IntRange(min=0), default=2, show_default=True, help="Module depth of the breakdown.")
@format_option("count")
@click.option("--no-repeat", is_flag=True, help="Count every block instead of counting repeated blocks once.")
@MAX_MODULES_OPTION
def count(model_config: Path, seq_len, decoder_len, batch, device, depth, fmt, no_repeat, max_modules) -> None:
    """Count one training step of a Hugging Face model from its config.json.

    An encoder-decoder (T5, BART, Whisper) is counted whole: encoder and decoder."""
    from auditor.counting import CountingError
    from auditor.counting.hf import count_hf

    quiet_libraries()
    try:
        result = count_hf(model_config, batch=batch, seq_len=seq_len, decoder_len=decoder_len, device=device,
                          repeated_blocks=not no_repeat, max_modules=max_modules)
    except CountingError as exc:
        fail(str(exc))
    click.echo(render("count", fmt, result, title=f"{model_config}: one training step", depth=depth))


@main.command()
@click.argument("config", type=click.Path(dir_okay=True, path_type=Path))
@format_option("plan", help="text: a readable table; json: a sealed record of the plan (the JSON contract of "
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
    from auditor.inputs.policy import Trust
    from auditor.record import dossier
    from auditor.record.signing import SigningError, SigningKey

    try:
        signer = SigningKey.load(signing_key) if signing_key else None
    except SigningError as exc:
        fail(f"--signing-key: {exc}")
    trust = Trust(allow_paths=tuple(p.resolve() for p in allow_paths), max_modules=max_modules)
    data = preflight_dict(config, rules, as_of, trust=trust, lineage_from=base_compute(registry_url))
    # the plan as a sealed record (`auditor verify plan.json` checks it), the contract's fields at its top
    record = dossier.build(data, run=data["run"], config_path=config, signer=signer)
    click.echo(render("plan", fmt, record))
    if html_path is not None:
        write_output(html_path, render("dossier", "html", record).encode(), "--html")
        click.echo(f"dossier: {html_path}", err=True)
    from auditor.rules.verdicts import fails_gate

    sys.exit(1 if any(fails_gate(v) for v in data["verdicts"]) else 0)


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
    from auditor.report.gate import Gate, collect_configs
    from auditor.text import printable

    chosen, trust, above, keys = _gate_settings(rules, policy, allow_factory, allow_paths, max_modules,
                                                authorization_above, trusted_keys)
    lineage_from = base_compute(registry_url)
    configs, missing = collect_configs(list(paths))
    if not configs and not missing:
        fail(f"no training configs (*.yaml, *.yml) found in {', '.join(printable(p) for p in paths)}")
    result = Gate(results=list(missing))
    quiet_libraries()
    for n, path in enumerate(configs, 1):
        click.echo(f"[{n}/{len(configs)}] {printable(path)}", err=True)
        result.results.append(_gate_one(path, chosen, as_of, trust, lineage_from, above, keys))
    _gate_outputs(result, junit, github)
    sys.exit(result.exit_code)


def _gate_settings(rules, policy, allow_factory, allow_paths, max_modules, authorization_above, trusted_keys):
    """(the gate's rules, its trust, the authorization line, the approvers' keys), checked once, up
    front: a bad --rules, policy or key is the command's error, not each config's."""
    from auditor.inputs.policy import gate_trust, load_policy
    from auditor.inputs.run_config import ConfigError
    from auditor.inputs.values import positive_count
    from auditor.rules.rule_file import RuleError
    from auditor.rules.selection import load_rules

    try:
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
    above = None
    if authorization_above is not None:
        try:
            above = positive_count(authorization_above, "number of FLOPs")
        except ValueError as exc:
            fail(f"--require-authorization-above: {exc}")
        if not trusted_keys:
            fail("--require-authorization-above: give the approvers' public keys with --trusted-key NAME.pub")
    return chosen, gate_trust(allow_factory, allow_paths, max_modules), above, load_trusted_keys(trusted_keys)


def _gate_one(path, chosen, as_of, trust, lineage_from, above, keys):
    """One config's GateResult. Nothing a config does ends the gate: every failure is its row."""
    from auditor.preflight import NeedsTrustedRun
    from auditor.report.gate import GateResult, check_authorization
    from auditor.text import error_text, printable

    try:
        result = GateResult(path, assess_or_error(path, chosen, as_of, quiet=True, trust=trust,
                                                  lineage_from=lineage_from).to_dict())
        if above is not None:
            check_authorization(result, above, keys, as_of.date() if as_of else None)
        return result
    except NeedsTrustedRun as exc:
        return GateResult(path, untrusted=" ".join(str(exc).split()))
    except BadInput as exc:
        return GateResult(path, error=" ".join(str(exc).split()))
    except MemoryError:
        return GateResult(path, error=f"{printable(path)}: ran out of memory while checking it")
    except (Exception, SystemExit) as exc:   # a bug of ours: reported, not a traceback, not an exit
        return GateResult(path, error=f"{printable(path)}: internal error while checking it (please report): "
                                      f"{error_text(exc)}")


def _gate_outputs(result, junit, github) -> None:
    """The table, always; the JUnit file (one that cannot be written makes the exit 2); annotations."""
    from auditor.report.gate import github_annotations, junit_xml
    from auditor.text import printable

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


def render_gate(result) -> str:
    from auditor.text import printable

    rows = []
    for r in result.results:
        if r.error or r.untrusted:
            rows.append([printable(r.path), "-", "bad input" if r.error else "FAIL",
                         printable(r.error or f"needs a trusted run: {r.untrusted}")])
            continue
        worst = ", ".join([f"{v['rule']} {v['status']}" for v in r.failing] +
                          ([f"needs an authorization: {printable(r.unauthorized)}"] if r.unauthorized else [])) or "clear"
        rows.append([printable(r.path), sci(r.preflight["total_flops"]), "FAIL" if r.fails else "ok", worst])
    from auditor.report.headline import plural

    summary = f"\n{plural(len(result.results), 'config')}: {sum(1 for r in result.results if r.fails)} failing, " \
              f"{sum(1 for r in result.results if r.error)} bad input"
    return table(["config", "FLOPs", "gate", "blocking rules crossed or at risk"], rows) + summary

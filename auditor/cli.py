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

    Libraries' messages may span lines (transformers' validation errors do): folded here."""
    click.echo("error: " + " ".join(message.split()), err=True)
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


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="auditor")
def main() -> None:
    """Measure the training compute of PyTorch runs and check it against AI compute thresholds."""


@main.command()
@click.argument("model_config", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--seq-len", type=click.IntRange(min=1), help="Tokens per sequence (default: the model's context length).")
@click.option("--batch", type=click.IntRange(min=1), default=1, show_default=True, help="Sequences per step.")
@click.option("--device", type=click.Choice(["meta", "cpu"]), default="meta", show_default=True,
              help="meta: shapes only, any size; cpu: real random weights.")
@click.option("--depth", type=click.IntRange(min=0), default=2, show_default=True, help="Module depth of the breakdown.")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.option("--no-repeat", is_flag=True, help="Count every block instead of counting repeated blocks once.")
def count(model_config: Path, seq_len, batch, device, depth, fmt, no_repeat) -> None:
    """Count one training step of a Hugging Face model from its config.json."""
    from .counting import CountingError
    from .counting.hf import count_hf

    quiet_libraries()
    try:
        result = count_hf(model_config, batch=batch, seq_len=seq_len, device=device, repeated_blocks=not no_repeat)
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
              help="text: a readable table; json: the contract in DESIGN.md (ints for every count); md: Markdown.")
@click.option("--html", "html_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write the audit dossier as one self-contained HTML file here.")
@RULES_OPTION
@AS_OF_OPTION
def preflight(config: Path, fmt: str, html_path: Path | None, rules: tuple[str, ...], as_of) -> None:
    """Estimate a training run's compute from its YAML config and judge it against the rules.

    Exit 0 when every blocking rule is clear, 1 when one is crossed or at risk, 2 on bad input."""
    data = preflight_dict(config, rules, as_of)
    click.echo(render_preflight(data, fmt))
    if html_path is not None:
        from . import dossier
        from .render import dossier_html

        write_atomic(html_path, dossier_html(dossier.build(data, run=data["run"], config_path=config)).encode())
        click.echo(f"dossier: {html_path}", err=True)
    from .rules import fails_gate

    sys.exit(1 if any(fails_gate(v) for v in data["verdicts"]) else 0)


def preflight_dict(config: Path, rules=(), as_of=None, *, quiet: bool = False) -> dict:
    """Load, validate, estimate and judge; bad input ends the command with exit 2 and one line."""
    try:
        return assess_or_error(config, rules, as_of, quiet=quiet).to_dict()
    except BadInput as exc:
        fail(str(exc))


class BadInput(Exception):
    pass


def assess_or_error(config: Path, rules=(), as_of=None, *, quiet: bool = False):
    from .config import ConfigError
    from .preflight import PreflightError, assess
    from .rulefile import RuleError

    quiet_libraries()
    progress = None if quiet else (lambda m: click.echo(f"... {m}", err=True))
    try:
        return assess(config, rules=list(rules or ()) or None, as_of=as_of.date() if as_of else None,
                      progress=progress)
    except (ConfigError, PreflightError, RuleError) as exc:
        raise BadInput(str(exc)) from None


def render_preflight(data: dict, fmt: str) -> str:
    from .render import preflight_markdown, preflight_text

    if fmt == "json":
        return json.dumps(data, indent=2, sort_keys=True)
    return preflight_markdown(data) if fmt == "md" else preflight_text(data)


@main.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@RULES_OPTION
@AS_OF_OPTION
@click.option("--junit", type=click.Path(dir_okay=False, path_type=Path), help="Write JUnit XML here.")
@click.option("--github", is_flag=True, help="Print GitHub Actions annotations on each config's file and line.")
def gate(paths, rules, as_of, junit, github) -> None:
    """Check every training config in PATHS (files or folders) against the rules, for CI.

    Exit 0 when every blocking rule is clear for every config, 1 when one is crossed or at risk,
    2 when a config is bad input (the others are still checked and reported)."""
    from .gate import Gate, GateResult, collect_configs, github_annotations, junit_xml, printable
    from .rulefile import RuleError
    from .rules import load_rules

    try:  # checked once, up front: a bad --rules is the command's error, not each config's
        chosen = load_rules(list(rules)) if rules else None
    except RuleError as exc:
        fail(f"--rules: {exc}")
    configs, missing = collect_configs(list(paths))
    if not configs and not missing:
        fail(f"no training configs (*.yaml, *.yml) found in {', '.join(printable(p) for p in paths)}")
    result = Gate(results=list(missing))
    for n, path in enumerate(configs, 1):
        click.echo(f"[{n}/{len(configs)}] {printable(path)}", err=True)
        try:
            result.results.append(GateResult(path, assess_or_error(path, chosen, as_of, quiet=True).to_dict()))
        except BadInput as exc:
            result.results.append(GateResult(path, error=" ".join(str(exc).split())))
    click.echo(render_gate(result))
    if junit:
        write_atomic(junit, junit_xml(result))
    if github:
        for line in github_annotations(result):
            click.echo(line)
    sys.exit(result.exit_code)


def render_gate(result) -> str:
    from .gate import printable

    rows = []
    for r in result.results:
        if r.error:
            rows.append([printable(r.path), "-", "bad input", r.error])
            continue
        worst = ", ".join(f"{v['rule']} {v['status']}" for v in r.failing) or "clear"
        rows.append([printable(r.path), sci(r.preflight["total_flops"]), "FAIL" if r.failing else "ok", worst])
    summary = f"\n{len(result.results)} configs: {sum(1 for r in result.results if r.failing)} failing, " \
              f"{sum(1 for r in result.results if r.error)} bad input"
    return table(["config", "FLOPs", "gate", "blocking rules crossed or at risk"], rows) + summary


@main.command()
@click.argument("target", type=click.Path(path_type=Path))
@click.option("--format", "fmt", type=click.Choice(["text", "json", "md", "html"]), default="text", show_default=True)
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), help="Write here instead of stdout.")
def report(target: Path, fmt: str, output: Path | None) -> None:
    """Render a sealed dossier (a RUN_DIR holding dossier.json, or the file) as text, JSON, Markdown or HTML.

    The dossier is verified first: one that does not verify is refused (exit 2; see `auditor verify`)."""
    from . import dossier
    from .render import dossier_html, dossier_markdown, dossier_text

    try:
        data = dossier.load(target)
    except dossier.DossierError as exc:
        fail(str(exc))
    text = {"json": lambda: dossier.canonical(data).decode(), "md": lambda: dossier_markdown(data),
            "html": lambda: dossier_html(data), "text": lambda: dossier_text(data)}[fmt]()
    if output is None:
        click.echo(text, nl=not text.endswith("\n"))
    else:
        write_atomic(output, text.encode())
        click.echo(str(output))


@main.command()
@click.argument("target", type=click.Path(path_type=Path))
def verify(target: Path) -> None:
    """Check a RUN_DIR (its ledger's hash chain and its sealed dossier) or a dossier file.

    Exit 0 intact, 1 tampered (saying what differs: the first bad record, or the seal), 2 unreadable."""
    from .verify import verify_target

    code, lines = verify_target(target)
    for stream, line in lines:
        click.echo(line, err=stream == "err")
    sys.exit(code)


@main.group()
def thresholds() -> None:
    """The compute-threshold rules: list them, show one, validate a rule file."""


@thresholds.command("list")
@AS_OF_OPTION
def thresholds_list(as_of) -> None:
    """Every bundled rule with its threshold, comparison, basis and status."""
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
        rows.append([d["id"], d["jurisdiction"], threshold, d["basis"], status_on(rule, day), "yes" if d["blocking"] else "no"])
    click.echo(table(["rule", "jurisdiction", "threshold", "basis", "status", "blocking"], rows))


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


def run() -> None:
    """The console script: the command line with its process settings (auditor/startup.py)."""
    from .startup import tune_for_command_line

    tune_for_command_line()
    main()


if __name__ == "__main__":
    run()

"""The ``auditor`` command. Exit codes: 0 clear, 1 a blocking rule crossed or at risk, 2 bad input."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from . import __version__
from .textfmt import percent, sci, table

DEMO_CONFIG = Path(__file__).parent / "data" / "demo-gpt2.json"
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


@main.command()
@click.argument("config", type=click.Path(dir_okay=True, path_type=Path))
@click.option("--format", "fmt", type=click.Choice(["text", "json", "md"]), default="text", show_default=True,
              help="text: a readable table; json: the contract in DESIGN.md (ints for every count); md: Markdown.")
def preflight(config: Path, fmt: str) -> None:
    """Estimate a training run's compute from its YAML config, before any GPU is rented."""
    data = preflight_dict(config)
    click.echo(render_preflight(data, fmt))


def preflight_dict(config: Path) -> dict:
    """Load, validate and estimate; bad input ends the command with exit 2 and one line."""
    from .config import ConfigError, load_run_config
    from .preflight import PreflightError, run_preflight

    quiet_libraries()
    try:
        return run_preflight(load_run_config(config), progress=lambda m: click.echo(f"... {m}", err=True)).to_dict()
    except (ConfigError, PreflightError) as exc:
        fail(str(exc))


def render_preflight(data: dict, fmt: str) -> str:
    from .render import preflight_markdown, preflight_text

    if fmt == "json":
        return json.dumps(data, indent=2, sort_keys=True)
    return preflight_markdown(data) if fmt == "md" else preflight_text(data)


@main.command()
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("auditor-demo"),
              show_default=True, help="Folder for the demo's outputs.")
def demo(out: Path) -> None:
    """Preflight a bundled sample run, then count its model on meta and on real CPU weights."""
    from .counting.hf import count_hf

    quiet_libraries()
    click.echo(f"preflight of the bundled sample run {DEMO_RUN.name} ...", err=True)
    plan = preflight_dict(DEMO_RUN)
    click.echo(render_preflight(plan, "text") + "\n")
    click.echo(f"counting {DEMO_CONFIG.name} on the meta device (no weights) ...", err=True)
    meta = count_hf(DEMO_CONFIG, batch=4, seq_len=256, device="meta")
    click.echo(render_count(meta, "demo GPT-2 (4 layers, width 256): one training step, batch 4 x 256 tokens", depth=3))
    click.echo("\nthe same step on real weights on the CPU ...", err=True)
    real = count_hf(DEMO_CONFIG, batch=4, seq_len=256, device="cpu")
    agree = "equal" if real.total == meta.total else "DIFFERENT"
    click.echo(f"\nmeta count {meta.total:,} and CPU count {real.total:,} are {agree}")
    out.mkdir(parents=True, exist_ok=True)
    (out / "preflight.json").write_text(render_preflight(plan, "json") + "\n")
    path = out / "demo-count.json"
    path.write_text(json.dumps(meta.to_dict(), indent=2, sort_keys=True) + "\n")
    click.echo(f"preflight written to {out / 'preflight.json'}; breakdown written to {path}")


if __name__ == "__main__":
    main()
